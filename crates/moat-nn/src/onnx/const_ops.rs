//! Importer handlers of the ops that only compute constants: `Shape`, `Gather`, `Slice`,
//! `Cast`, `ConstantOfShape` (the evaluation itself is in [`super::fold`]). `Shape` is the
//! bridge from computed values: their shapes are static in moat except for the batch size,
//! which becomes the symbol `N`.

use std::rc::Rc;

use super::constant::{Const, Dim, decode_tensor};
use super::fold;
use super::import::{Ctx, Importer, Val};
use super::proto::data_type;
use crate::error::Result;

/// The integer elements of a constant input, or an error naming the node.
fn ints<'c>(ctx: &Ctx<'_>, c: &'c Const, what: &str) -> Result<&'c [i64]> {
    c.ints().map_err(|m| ctx.err(format!("{what}: {m}")))
}

impl<'m> Importer<'m> {
    /// Input `i` as a constant, with an error saying that moat evaluates this op on constants
    /// only.
    fn folded_input(&self, ctx: &Ctx<'m>, i: usize) -> Result<Rc<Const>> {
        if self.is_constant(ctx, i)? {
            self.constant(ctx, i)
        } else {
            Err(ctx.err(format!(
                "input {i} is computed from the graph input; moat evaluates {} on constants and shapes only",
                ctx.node.op_type
            )))
        }
    }

    /// `Shape`: `[N, d1, …]` of a computed value (`N` the symbolic batch size), or the shape of
    /// a constant; `start`/`end` (opset 15) select axes.
    pub(super) fn shape(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let dims: Vec<Dim> = match self.get(ctx, 0)?.1 {
            Val::Run { id, shape } => {
                self.read(id);
                std::iter::once(Dim::Batch).chain(shape.iter().map(|&d| Dim::Int(d as i64))).collect()
            }
            Val::Padded { id, shape, pads, .. } => {
                self.read(id);
                let mut padded = shape.clone();
                if let [_, h, w] = padded.as_mut_slice() {
                    *h += pads[0] + pads[2];
                    *w += pads[1] + pads[3];
                }
                std::iter::once(Dim::Batch).chain(padded.iter().map(|&d| Dim::Int(d as i64))).collect()
            }
            Val::Init(_) | Val::Const(_) => self.constant(ctx, 0)?.dims.iter().map(|&d| Dim::Int(d as i64)).collect(),
        };
        let (start, end) = if self.opset >= 15 { (ctx.int("start")?, ctx.int("end")?) } else { (None, None) };
        self.bind_folded(ctx, Ok(fold::shape_of(&dims, start, end)))
    }

    /// `Gather` of constants (any axis, indices of any shape).
    pub(super) fn gather(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let data = self.folded_input(ctx, 0)?;
        let indices = self.folded_input(ctx, 1)?;
        let axis = ctx.int("axis")?.unwrap_or(0);
        self.bind_folded(ctx, fold::gather(&data, &indices, axis))
    }

    /// `Slice` of a constant: `starts`/`ends`/`axes` attributes before opset 10, inputs
    /// `starts, ends[, axes[, steps]]` from 10.
    pub(super) fn slice(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let data = self.folded_input(ctx, 0)?;
        let folded = if self.opset < 10 {
            let starts = ctx.ints("starts").ok_or_else(|| ctx.err("has no starts"))?;
            let ends = ctx.ints("ends").ok_or_else(|| ctx.err("has no ends"))?;
            fold::slice(&data, starts, ends, ctx.ints("axes"), None)
        } else {
            let starts = self.folded_input(ctx, 1)?;
            let ends = self.folded_input(ctx, 2)?;
            let axes = self.optional_constant(ctx, 3)?;
            let steps = self.optional_constant(ctx, 4)?;
            let axes = axes.as_deref().map(|c| ints(ctx, c, "axes")).transpose()?;
            let steps = steps.as_deref().map(|c| ints(ctx, c, "steps")).transpose()?;
            fold::slice(&data, ints(ctx, &starts, "starts")?, ints(ctx, &ends, "ends")?, axes, steps)
        };
        self.bind_folded(ctx, folded)
    }

    /// `Cast` of a constant; of a computed value only to `FLOAT` (the identity).
    pub(super) fn cast(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let to = ctx.int("to")?.ok_or_else(|| ctx.err("has no 'to' attribute"))?;
        let to = i32::try_from(to).map_err(|_| ctx.err(format!("to = {to} is not an element type")))?;
        if self.is_constant(ctx, 0)? {
            let c = self.constant(ctx, 0)?;
            return self.bind_folded(ctx, fold::cast(&c, to));
        }
        if to != data_type::FLOAT {
            return Err(
                ctx.err(format!("casts a computed value to element type {to}; moat computes in FLOAT (1) only"))
            );
        }
        self.alias(ctx)
    }

    /// `ConstantOfShape` with a constant shape.
    pub(super) fn constant_of_shape(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let shape = self.folded_input(ctx, 0)?;
        let value = ctx.attr("value").and_then(|a| a.t.as_ref()).map(decode_tensor).transpose()?;
        self.bind_folded(ctx, fold::constant_of_shape(&shape, value.as_ref()))
    }
}
