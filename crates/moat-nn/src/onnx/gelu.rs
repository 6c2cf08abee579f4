//! GELU as exporters write it before opset 20: `0.5 · x · (1 + Erf(x / √2))`, and its tanh
//! approximation `0.5 · x · (1 + Tanh(√(2/π) · (x + 0.044715 · x³)))`.
//!
//! PyTorch writes `Div(x, √2) → Erf → Add(·, 1) → Mul(x, ·) → Mul(·, 0.5)`; others scale by
//! `1/√2` with a `Mul`, or form `0.5 · x` first and multiply it by `1 + Erf(…)`. The importer
//! meets the `Erf` node after its `Div`/`Mul` input was imported (as an affine map, which then
//! has no reader and is dropped), recognises the nodes after it, imports the whole as one moat
//! [`Op::Gelu`] of `x` and skips those nodes. Every intermediate value must be read by the next
//! step only (nothing else may see the parts); any other use of `Erf` is refused, naming the
//! node and why.
//!
//! The tanh form (`torch.nn.functional.gelu(x, approximate="tanh")` at opsets below 20, and
//! the "gelu_new" of transformer code) starts with the cube, a product of computed values that
//! moat has no op for, so it is recognised there: `Pow(x, 3)` or `Mul(x, Mul(x, x))` (PyTorch's
//! symbolic), then `Mul(·, 0.044715)`, `Add(x, ·)`, `Mul(·, √(2/π))`, `Tanh`, `Add(·, 1)` and
//! the same two tails as the `Erf` form. The whole becomes one [`Op::GeluTanh`] of `x`; a `Pow`
//! or a product of computed values outside the pattern is refused, naming the node and why.

use super::import::{Ctx, Importer, Val};
use super::proto::NodeProto;
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
        let p = Pattern { im: self, nodes: &self.graph.node };
        let scaled = ctx.input(0).ok_or("it has no input")?;
        let q = p.producer(scaled).ok_or_else(|| format!("its input '{scaled}' is not computed by a node"))?;
        let x = match p.nodes[q].op_type.as_str() {
            "Div" => match p.nodes[q].input.as_slice() {
                [x, c] if p.near(c, std::f32::consts::SQRT_2) => x.as_str(),
                _ => return Err(format!("its input comes from Div node '{}', not a division by √2", p.nodes[q].name)),
            },
            "Mul" => match p.nodes[q].input.as_slice() {
                [x, c] | [c, x] if p.near(c, std::f32::consts::FRAC_1_SQRT_2) => x.as_str(),
                _ => {
                    return Err(format!(
                        "its input comes from Mul node '{}', not a product with 1/√2",
                        p.nodes[q].name
                    ));
                }
            },
            other => return Err(format!("its input comes from a {other} node, not x/√2")),
        };
        let erf = ctx.output(0).ok_or("it has no output")?;
        let (add, sum) = p.step(erf, "Add", 1.0, "its output", "Add(·, 1)")?;
        let (mut fused, out) = p.tail(x, sum, "1 + Erf")?;
        fused.insert(0, add);
        Ok((x, fused, out))
    }

    /// `Pow`: only as the cube of GELU's tanh form (see the module documentation).
    pub(super) fn pow(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        self.gelu_tanh(ctx).map_err(|why| {
            ctx.err(format!(
                "moat supports Pow only as the cube in GELU's tanh form 0.5·x·(1 + Tanh(√(2/π)·(x + 0.044715·x³))), \
                 imported as a GeluTanh; here {why}"
            ))
        })
    }

    /// A product of two computed values that starts GELU's tanh form (`Mul(x, x)`): imported
    /// as its [`Op::GeluTanh`]. `Ok(false)`, with nothing imported, for any other product.
    pub(super) fn square_of_gelu_tanh(&mut self, ctx: &Ctx<'m>) -> Result<bool> {
        match ctx.node.input.as_slice() {
            [a, b] if a == b && self.tanh_pattern(ctx).is_ok() => {
                self.gelu_tanh(ctx).map(|()| true).map_err(|why| ctx.err(why))
            }
            _ => Ok(false),
        }
    }

    /// Imports GELU's tanh form starting at this node (`Pow` or the square's `Mul`).
    fn gelu_tanh(&mut self, ctx: &Ctx<'m>) -> std::result::Result<(), String> {
        let (x, fused, out) = self.tanh_pattern(ctx)?;
        let Some(Val::Run { id, shape }) = self.lookup(x) else {
            return Err(format!("GELU's input '{x}' is not computed from the graph input"));
        };
        // Every read of `x` the pattern covers (this node's and the skipped nodes').
        let nodes = &self.graph.node;
        let reads = std::iter::once(ctx.index).chain(fused.iter().copied());
        let reads = reads.map(|i| nodes[i].input.iter().filter(|input| *input == x).count()).sum::<usize>();
        for _ in 0..reads {
            self.read(id);
        }
        self.fused.extend(fused);
        let gelu = self.push(ctx, Some("gelu_tanh"), Op::GeluTanh, vec![id]).map_err(|e| e.to_string())?;
        self.bind(out, Val::Run { id: gelu, shape });
        Ok(())
    }

    /// Matches GELU's tanh form from its first node: the name of `x`, the indices of the later
    /// nodes the pattern covers, and the name of its output; or why it does not match.
    fn tanh_pattern(&self, ctx: &Ctx<'m>) -> std::result::Result<(&'m str, Vec<usize>, &'m str), String> {
        let p = Pattern { im: self, nodes: &self.graph.node };
        let out = ctx.output(0).ok_or("it has no output")?;
        let mut fused = Vec::new();
        let (x, cube) = match (ctx.node.op_type.as_str(), ctx.node.input.as_slice()) {
            ("Pow", [x, e]) if p.near(e, 3.0) => (x.as_str(), out),
            ("Pow", _) => return Err("its exponent is not the constant 3".into()),
            ("Mul", [x, y]) if x == y => {
                let cube = p.sole_reader(out, "x·x")?;
                match p.other(cube, out) {
                    Some(z) if z == x && p.is(cube, "Mul") => {
                        fused.push(cube);
                        (x.as_str(), p.nodes[cube].output[0].as_str())
                    }
                    _ => {
                        return Err(format!(
                            "x·x is read by {} node '{}', not by Mul(x, ·)",
                            p.nodes[cube].op_type, p.nodes[cube].name
                        ));
                    }
                }
            }
            _ => return Err("it is not x³ (Pow(x, 3) or Mul(x, Mul(x, x)))".into()),
        };
        let (k, kc) = p.step(cube, "Mul", 0.044715, "x³", "Mul(·, 0.044715)")?;
        let add = p.sole_reader(kc, "0.044715·x³")?;
        let inner = match p.other(add, kc) {
            Some(z) if z == x && p.is(add, "Add") => p.nodes[add].output[0].as_str(),
            _ => {
                return Err(format!(
                    "0.044715·x³ is read by {} node '{}', not by Add(x, ·)",
                    p.nodes[add].op_type, p.nodes[add].name
                ));
            }
        };
        let beta = (2.0 / std::f32::consts::PI).sqrt();
        let (b, scaled) = p.step(inner, "Mul", beta, "x + 0.044715·x³", "Mul(·, √(2/π))")?;
        let tanh = p.sole_reader(scaled, "the Tanh's argument")?;
        if !p.is(tanh, "Tanh") {
            return Err(format!(
                "√(2/π)·(…) is read by {} node '{}', not by Tanh",
                p.nodes[tanh].op_type, p.nodes[tanh].name
            ));
        }
        let (one, sum) = p.step(p.nodes[tanh].output[0].as_str(), "Add", 1.0, "Tanh", "Add(·, 1)")?;
        let (tail, out) = p.tail(x, sum, "1 + Tanh")?;
        fused.extend([k, add, b, tanh, one]);
        fused.extend(tail);
        Ok((x, fused, out))
    }
}

/// Node lookups shared by the GELU matchers.
struct Pattern<'a, 'm> {
    im: &'a Importer<'m>,
    nodes: &'m [NodeProto],
}

impl<'m> Pattern<'_, 'm> {
    /// Whether `name` is a scalar constant within [`CLOSE`] of `want`.
    fn near(&self, name: &str, want: f32) -> bool {
        self.im.scalar(name).is_some_and(|v| (v - want).abs() <= CLOSE * want.abs())
    }

    /// The other input of a two-input node when `known` is one of them.
    fn other(&self, index: usize, known: &str) -> Option<&'m str> {
        match self.nodes[index].input.as_slice() {
            [a, b] if a == known => Some(b.as_str()),
            [a, b] if b == known => Some(a.as_str()),
            _ => None,
        }
    }

    /// The node computing `name`.
    fn producer(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.output.iter().any(|o| o == name))
    }

    /// The one node reading `name` (`what` names it in the error), when exactly one read exists.
    fn sole_reader(&self, name: &str, what: &str) -> std::result::Result<usize, String> {
        let readers: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.nodes[i].input.iter().any(|input| input == name)).collect();
        match readers.as_slice() {
            [only] if self.im.consumers(name) == 1 => Ok(*only),
            _ => Err(format!("{what} '{name}' is read {} times (the pattern reads it once)", self.im.consumers(name))),
        }
    }

    /// Whether node `index` is an `op` with one output.
    fn is(&self, index: usize, op: &str) -> bool {
        self.nodes[index].op_type == op && self.nodes[index].output.len() == 1
    }

    /// The sole reader of `name` as `op(name, c)` with the constant `c` near `want`: its index
    /// and output (`what`/`expected` name the value and the node in the error).
    fn step(
        &self,
        name: &str,
        op: &str,
        want: f32,
        what: &str,
        expected: &str,
    ) -> std::result::Result<(usize, &'m str), String> {
        let i = self.sole_reader(name, what)?;
        match self.other(i, name) {
            Some(c) if self.is(i, op) && self.near(c, want) => Ok((i, self.nodes[i].output[0].as_str())),
            _ => Err(format!(
                "{what} is read by {} node '{}', not by {expected}",
                self.nodes[i].op_type, self.nodes[i].name
            )),
        }
    }

    /// GELU's two tails on `s = 1 + f(…)` (`what` names it): `(x · s) · 0.5`, as PyTorch writes
    /// it, or `(0.5 · x) · s`. The nodes covered after `s` and the pattern's output.
    fn tail(&self, x: &str, s: &'m str, what: &str) -> std::result::Result<(Vec<usize>, &'m str), String> {
        let mul = self.sole_reader(s, what)?;
        let factor = self.other(mul, s).filter(|_| self.is(mul, "Mul")).ok_or_else(|| {
            format!("{what} is read by {} node '{}', not by a Mul", self.nodes[mul].op_type, self.nodes[mul].name)
        })?;
        let product = self.nodes[mul].output[0].as_str();
        if factor == x {
            let (half, out) = self.step(product, "Mul", 0.5, &format!("x·({what})"), "Mul(·, 0.5)")?;
            return Ok((vec![mul, half], out));
        }
        let h =
            self.producer(factor).ok_or_else(|| format!("{what} is multiplied by '{factor}', neither x nor 0.5·x"))?;
        match self.other(h, x) {
            Some(c) if self.is(h, "Mul") && self.near(c, 0.5) && h != mul => Ok((vec![mul], product)),
            _ => Err(format!("{what} is multiplied by '{factor}', neither x nor 0.5·x")),
        }
    }
}
