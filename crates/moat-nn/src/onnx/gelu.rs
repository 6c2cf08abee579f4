//! GELU as exporters write it before opset 20: `0.5 · x · (1 + Erf(x / √2))`.
//!
//! PyTorch writes `Div(x, √2) → Erf → Add(·, 1) → Mul(x, ·) → Mul(·, 0.5)`; others scale by
//! `1/√2` with a `Mul`, or form `0.5 · x` first and multiply it by `1 + Erf(…)`. The importer
//! meets the `Erf` node after its `Div`/`Mul` input was imported (as an affine map, which then
//! has no reader and is dropped), recognises the nodes after it, imports the whole as one moat
//! [`Op::Gelu`] of `x` and skips those nodes. Every intermediate value must be read by the next
//! step only (nothing else may see the parts); any other use of `Erf` is refused, naming the
//! node and why.

use super::import::{Ctx, Importer, Val};
use crate::error::Result;
use crate::graph::Op;

/// How close the pattern's constants must be to `√2` (or `1/√2`), `1` and `1/2` (f32 rounding).
const CLOSE: f32 = 1e-6;

impl<'m> Importer<'m> {
    /// `Erf`: only as part of GELU's pattern (see the module documentation).
    pub(super) fn erf(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (x, fused, out) = self.gelu_pattern(ctx).map_err(|why| {
            ctx.err(format!(
                "moat supports Erf only inside GELU's pattern 0.5·x·(1 + Erf(x/√2)), imported as a Gelu; here {why}"
            ))
        })?;
        let Some(Val::Run { id, shape }) = self.lookup(x) else {
            return Err(ctx.err(format!("GELU's input '{x}' is not computed from the graph input")));
        };
        // The skipped `Mul(x, …)` of the PyTorch form read `x` once more.
        if fused.len() == 3 {
            self.read(id);
        }
        self.fused.extend(fused);
        let gelu = self.push(ctx, Some("gelu"), Op::Gelu, vec![id])?;
        self.bind(out, Val::Run { id: gelu, shape });
        Ok(())
    }

    /// Matches GELU's pattern around the `Erf` node: the name of `x`, the indices of the nodes
    /// after the `Erf` that the pattern covers, and the name of its output; or why it does not
    /// match.
    fn gelu_pattern(&self, ctx: &Ctx<'m>) -> std::result::Result<(&'m str, Vec<usize>, &'m str), String> {
        let nodes = &self.graph.node;
        let near = |name: &str, want: f32| self.scalar(name).is_some_and(|v| (v - want).abs() <= CLOSE * want.abs());
        // The other input of a two-input node when `known` is one of them.
        let other = |index: usize, known: &str| -> Option<&'m str> {
            match nodes[index].input.as_slice() {
                [a, b] if a == known => Some(b.as_str()),
                [a, b] if b == known => Some(a.as_str()),
                _ => None,
            }
        };
        let producer = |name: &str| nodes.iter().position(|n| n.output.iter().any(|o| o == name));
        // The one node reading `name`, when exactly one read exists.
        let sole_reader = |name: &str, what: &str| -> std::result::Result<usize, String> {
            let readers: Vec<usize> =
                (0..nodes.len()).filter(|&i| nodes[i].input.iter().any(|input| input == name)).collect();
            match readers.as_slice() {
                [only] if self.consumers(name) == 1 => Ok(*only),
                _ => Err(format!("{what} '{name}' is read {} times (the pattern reads it once)", self.consumers(name))),
            }
        };
        let is = |index: usize, op: &str| nodes[index].op_type == op && nodes[index].output.len() == 1;

        let scaled = ctx.input(0).ok_or("it has no input")?;
        let p = producer(scaled).ok_or_else(|| format!("its input '{scaled}' is not computed by a node"))?;
        let x = match nodes[p].op_type.as_str() {
            "Div" => match nodes[p].input.as_slice() {
                [x, c] if near(c, std::f32::consts::SQRT_2) => x.as_str(),
                _ => return Err(format!("its input comes from Div node '{}', not a division by √2", nodes[p].name)),
            },
            "Mul" => match nodes[p].input.as_slice() {
                [x, c] | [c, x] if near(c, std::f32::consts::FRAC_1_SQRT_2) => x.as_str(),
                _ => return Err(format!("its input comes from Mul node '{}', not a product with 1/√2", nodes[p].name)),
            },
            other => return Err(format!("its input comes from a {other} node, not x/√2")),
        };
        let erf = ctx.output(0).ok_or("it has no output")?;
        let add = sole_reader(erf, "its output")?;
        let sum = match other(add, erf) {
            Some(one) if is(add, "Add") && near(one, 1.0) => nodes[add].output[0].as_str(),
            _ => {
                return Err(format!(
                    "its output is read by {} node '{}', not by Add(·, 1)",
                    nodes[add].op_type, nodes[add].name
                ));
            }
        };
        let mul = sole_reader(sum, "1 + Erf")?;
        let factor = other(mul, sum).filter(|_| is(mul, "Mul")).ok_or_else(|| {
            format!("1 + Erf is read by {} node '{}', not by a Mul", nodes[mul].op_type, nodes[mul].name)
        })?;
        let product = nodes[mul].output[0].as_str();
        if factor == x {
            // PyTorch: (x · (1 + Erf)) · 0.5.
            let half = sole_reader(product, "x·(1 + Erf)")?;
            return match other(half, product) {
                Some(c) if is(half, "Mul") && near(c, 0.5) => {
                    Ok((x, vec![add, mul, half], nodes[half].output[0].as_str()))
                }
                _ => Err(format!(
                    "x·(1 + Erf) is read by {} node '{}', not by Mul(·, 0.5)",
                    nodes[half].op_type, nodes[half].name
                )),
            };
        }
        // (0.5 · x) · (1 + Erf).
        let h = producer(factor).ok_or_else(|| format!("1 + Erf is multiplied by '{factor}', neither x nor 0.5·x"))?;
        match other(h, x) {
            Some(c) if is(h, "Mul") && near(c, 0.5) && h != mul => Ok((x, vec![add, mul], product)),
            _ => Err(format!("1 + Erf is multiplied by '{factor}', neither x nor 0.5·x")),
        }
    }
}
