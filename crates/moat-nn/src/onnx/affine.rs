//! Element-wise `Add`, `Sub`, `Mul` and `Div`.
//!
//! * two constants: folded ([`fold::binary`]);
//! * two computed values: `Add` of equal shapes is a residual [`Op::Add`]; `Mul` as SiLU's or
//!   HardSwish's gate, or as the square that starts GELU's tanh form ([`super::gelu`]); the
//!   others are not supported;
//! * a computed value and a scalar or per-channel constant (input normalisation
//!   `(x − mean) / std`, scaling, biases): the per-channel affine map `y = s·x + t`. moat writes
//!   it as a [`BatchNorm`] with `γ = s`, `β = t`, `μ = 0`, `σ² = 1`, `ε = 0`, which the
//!   executors evaluate as `x·s + t` — exactly `x + c`, `x − c`, `c − x` and `x·c` in f32.
//!   `x / c` becomes `x·(1/c)`, within one rounding of the quotient (exact when `c` is a power
//!   of two). `c / x` is not affine and is refused.
//!
//! Two foldings keep the graph small without changing what it computes:
//!
//! * an `Add`/`Sub` of a constant directly after a Conv/Dense that nothing else reads moves
//!   into that layer's bias;
//! * affine maps that only feed a Conv without padding, or a Dense, are absorbed into its
//!   weights and bias ([`Importer::absorb_affines`]): `W·(s⊙x + t) + b = (W·diag s)·x + (b + W·t)`.
//!   Zero padding would break this (a padded zero is `t`, not `0`, in the normalised space), so
//!   a padded Conv keeps the `BatchNorm` before it.

use super::fold::{self, Arith};
use super::import::{Ctx, Importer, batched};
use super::ops::per_channel;
use crate::error::Result;
use crate::graph::{BatchNorm, Op, ValueId};

impl<'m> Importer<'m> {
    /// `Add`, `Sub`, `Mul`, `Div` (see the module documentation).
    pub(super) fn arith(&mut self, ctx: &Ctx<'m>, op: Arith) -> Result<()> {
        match (self.is_constant(ctx, 0)?, self.is_constant(ctx, 1)?) {
            (true, true) => {
                let (a, b) = (self.constant(ctx, 0)?, self.constant(ctx, 1)?);
                self.bind_folded(ctx, fold::binary(op, &a, &b))
            }
            (false, false) if op == Arith::Add => self.residual_add(ctx),
            (false, false) if op == Arith::Mul && self.square_of_gelu_tanh(ctx)? => Ok(()),
            (false, false) if op == Arith::Mul && self.gated_product(ctx)? => Ok(()),
            (false, false) => Err(ctx.err(format!(
                "{} of two computed values is not supported: moat supports {} with a constant operand only",
                op.op_type(),
                op.op_type()
            ))),
            (false, true) => self.affine(ctx, op, 0, 1),
            (true, false) => self.affine(ctx, op, 1, 0),
        }
    }

    /// `Sum` of computed values of equal shapes: one input passes through, more are added one
    /// after the other (residual `Add`s); a constant operand is refused.
    pub(super) fn sum(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let Some((inputs, shape)) = self.equal_shape_operands(ctx, "sums")? else { return Ok(()) };
        let n = inputs.len();
        let mut inputs = inputs.into_iter();
        let mut sum = inputs.next().ok_or_else(|| ctx.err("has no input"))?;
        for (i, y) in inputs.enumerate() {
            let suffix = (i + 2 < n).then(|| format!("sum{}", i + 1));
            sum = self.push(ctx, suffix.as_deref(), Op::Add, vec![sum, y])?;
        }
        self.bind_output(ctx, 0, sum, shape)
    }

    /// `Max` of computed values of equal shapes (no broadcasting): one input passes through, more
    /// are one moat `Max`; a constant operand is refused.
    pub(super) fn max(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let Some((inputs, shape)) = self.equal_shape_operands(ctx, "takes the maximum of")? else { return Ok(()) };
        let out = self.push(ctx, None, Op::Max, inputs)?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// The operands of a variadic element-wise node (`Sum`, `Max`; `what` names the operation
    /// in errors): every input computed (a constant is refused) and of one shape (no
    /// broadcasting), materialised, with that shape. A single input is aliased to the output
    /// instead (`None`: nothing left to do).
    fn equal_shape_operands(&mut self, ctx: &Ctx<'m>, what: &str) -> Result<Option<(Vec<ValueId>, Vec<usize>)>> {
        let n = ctx.node.input.len();
        if n == 0 {
            return Err(ctx.err("has no input"));
        }
        for i in 0..n {
            if self.is_constant(ctx, i)? {
                return Err(ctx.err(format!("input {i} is a constant: moat {what} computed values only")));
            }
        }
        if n == 1 {
            self.alias(ctx)?;
            return Ok(None);
        }
        let (first, shape) = self.runtime(ctx, 0)?;
        let mut inputs = vec![self.materialize(ctx, first, &shape)?];
        for i in 1..n {
            let (y, ys) = self.runtime(ctx, i)?;
            if ys != shape {
                return Err(ctx.err(format!(
                    "{what} values of shapes {} and {}; moat {what} values of equal shapes (no broadcasting)",
                    batched(&shape),
                    batched(&ys)
                )));
            }
            inputs.push(self.materialize(ctx, y, &ys)?);
        }
        Ok(Some((inputs, shape)))
    }

    /// `x · HardSigmoid(x; α = 1/6, β = 1/2)`, how HardSwish is written before opset 14 (moat's
    /// own export, PyTorch's): a moat `HardSwish` of `x`; `x · Sigmoid(x)`, how SiLU is written
    /// (PyTorch's export, moat's): a moat `Silu` of `x`. The gate stays only if something else
    /// reads it. `false` when the product is of neither form.
    fn gated_product(&mut self, ctx: &Ctx<'m>) -> Result<bool> {
        let (a, shape) = self.runtime(ctx, 0)?;
        let (b, _) = self.runtime(ctx, 1)?;
        let gate = |gate: ValueId, x: ValueId| {
            let node = gate.node().and_then(|n| self.nodes.get(n)).filter(|node| node.inputs.first() == Some(&x))?;
            match node.op {
                Op::HardSigmoid { alpha, beta } if (alpha - 1.0 / 6.0).abs() < 1e-6 && beta == 0.5 => {
                    Some(Op::HardSwish)
                }
                Op::Sigmoid => Some(Op::Silu),
                _ => None,
            }
        };
        let (x, op) = match (gate(b, a), gate(a, b)) {
            (Some(op), _) => (a, op),
            (_, Some(op)) => (b, op),
            _ => return Ok(false),
        };
        let out = self.push(ctx, None, op, vec![x])?;
        self.bind_output(ctx, 0, out, shape)?;
        Ok(true)
    }

    /// Residual sum of two computed values of equal shapes.
    fn residual_add(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (x, xs) = self.runtime(ctx, 0)?;
        let (y, ys) = self.runtime(ctx, 1)?;
        if xs != ys {
            return Err(ctx.err(format!(
                "adds values of shapes {} and {}; moat adds values of equal shapes (no broadcasting)",
                batched(&xs),
                batched(&ys)
            )));
        }
        let x = self.materialize(ctx, x, &xs)?;
        let y = self.materialize(ctx, y, &ys)?;
        let out = self.push(ctx, None, Op::Add, vec![x, y])?;
        self.bind_output(ctx, 0, out, xs)
    }

    /// A computed value (input `run`) and a per-channel constant (input `konst`).
    fn affine(&mut self, ctx: &Ctx<'m>, op: Arith, run: usize, konst: usize) -> Result<()> {
        let constant_first = konst == 0;
        if op == Arith::Div && constant_first {
            return Err(ctx
                .err("divides a constant by a computed value: c / x is not an affine map, which moat cannot express"));
        }
        let c = self.constant(ctx, konst)?;
        let (id, shape) = self.runtime(ctx, run)?;
        let channels = shape.first().copied().unwrap_or(1);
        let values = per_channel(&c, shape.len() + 1, channels).map_err(|m| {
            ctx.err(format!("{m}; moat supports {} with a scalar or per-channel constant only", op.op_type()))
        })?;
        let (ones, zeros) = (vec![1.0; channels], vec![0.0; channels]);
        let (scale, shift): (Vec<f32>, Vec<f32>) = match (op, constant_first) {
            (Arith::Add, _) => (ones, values),
            (Arith::Sub, false) => (ones, values.iter().map(|v| -v).collect()),
            (Arith::Sub, true) => (vec![-1.0; channels], values),
            (Arith::Mul, _) => (values, zeros),
            (Arith::Div, _) => (values.iter().map(|v| 1.0 / v).collect(), zeros),
        };
        let unit_scale = scale.iter().all(|&s| s == 1.0);
        if unit_scale && shift.iter().all(|&t| t == 0.0) {
            return self.bind_output(ctx, 0, id, shape);
        }
        // A bias: fold into the producing layer when this node is its only reader.
        if unit_scale
            && self.sole_reader(id)
            && self.shapes[id.0] == shape
            && let Some(index) = id.node()
        {
            let bias = match &mut self.nodes[index].op {
                Op::Dense(d) => Some(&mut d.bias),
                Op::Conv2d(c) => Some(&mut c.bias),
                _ => None,
            };
            if let Some(bias) = bias {
                for (b, t) in bias.iter_mut().zip(&shift) {
                    *b += t;
                }
                return self.bind_output(ctx, 0, id, shape);
            }
        }
        let x = if self.shapes[id.0].first() == Some(&channels) { id } else { self.materialize(ctx, id, &shape)? };
        let bn = BatchNorm { gamma: scale, beta: shift, mean: vec![0.0; channels], var: vec![1.0; channels], eps: 0.0 };
        let out = self.push(ctx, None, Op::BatchNorm(bn), vec![x])?;
        if let Some(index) = out.node() {
            self.affine.insert(index);
        }
        self.bind_output(ctx, 0, out, shape)
    }

    /// Absorbs the importer-made affine maps feeding `id` into the linear layer about to read
    /// it, whose row-major weights are `[out, in_channels, k…]` (`weight.len() / bias.len()`
    /// elements per output). Only maps read by nothing else are absorbed; the caller ensures the
    /// layer has no zero padding. Returns the value the layer reads instead.
    pub(super) fn absorb_affines(&mut self, mut id: ValueId, weight: &mut [f32], bias: &mut [f32]) -> ValueId {
        let row = weight.len() / bias.len().max(1);
        while let Some(index) = id.node()
            && self.affine.contains(&index)
            && self.sole_reader(id)
            && let Op::BatchNorm(bn) = &self.nodes[index].op
        {
            let (scale, shift) = bn.scale_shift();
            let channels = scale.len();
            if channels == 0 || row == 0 || !row.is_multiple_of(channels) || weight.len() != row * bias.len() {
                break;
            }
            let per_channel = row / channels;
            for (w, b) in weight.chunks_mut(row).zip(bias.iter_mut()) {
                let mut extra = 0.0f64;
                for (j, v) in w.iter_mut().enumerate() {
                    let c = j / per_channel;
                    extra += f64::from(*v) * f64::from(shift[c]);
                    *v *= scale[c];
                }
                *b = (f64::from(*b) + extra) as f32;
            }
            let input = self.nodes[index].inputs[0];
            self.unread(input);
            tracing::debug!(node = %self.nodes[index].name, "absorbed an element-wise affine map into the next layer");
            id = input;
        }
        id
    }
}
