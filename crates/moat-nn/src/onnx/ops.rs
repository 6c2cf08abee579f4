//! One importer handler per supported ONNX op type (see [`super::import`] for the state they
//! share). Each handler reads its inputs, checks the attributes moat cannot honour (naming the
//! node), appends moat nodes and binds the node's outputs.

use std::rc::Rc;

use super::constant::{Const, Dim, LIMIT, checked_numel, decode_tensor, show_dims};
use super::fold;
use super::import::{Ctx, Importer, Val, axis, batched, size};
use crate::error::Result;
use crate::graph::{BatchNorm, Conv2d, Dense, Op, Pool, ValueId};
use crate::tensor::{Tensor, numel};

/// The float elements of a constant input, or an error naming the node.
fn floats<'c>(ctx: &Ctx<'_>, c: &'c Const, what: &str) -> Result<&'c [f32]> {
    c.floats().map_err(|m| ctx.err(format!("{what}: {m}")))
}

/// The integer elements of a constant input, or an error naming the node.
fn ints<'c>(ctx: &Ctx<'_>, c: &'c Const, what: &str) -> Result<&'c [i64]> {
    c.ints().map_err(|m| ctx.err(format!("{what}: {m}")))
}

/// `[C, H, W]` of an ONNX per-sample shape, or an error.
fn chw(ctx: &Ctx<'_>, shape: &[usize]) -> Result<[usize; 3]> {
    match shape {
        &[c, h, w] => Ok([c, h, w]),
        _ => Err(ctx.err(format!("input of shape {}: {} needs [N, C, H, W]", batched(shape), ctx.node.op_type))),
    }
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The elements of `c` broadcast to one value per channel of an ONNX value of rank `rank`
/// (channel = axis 1), or a description of why `c` is not per-channel.
pub(super) fn per_channel(c: &Const, rank: usize, channels: usize) -> std::result::Result<Vec<f32>, String> {
    let values = c.floats()?;
    let bad = || format!("a constant of shape {:?} does not broadcast per channel over [N, {channels}, …]", c.dims);
    if c.dims.len() > rank {
        return Err(bad());
    }
    let lead = rank - c.dims.len();
    let dim = |axis: usize| if axis < lead { 1 } else { c.dims[axis - lead] };
    for a in 0..rank {
        let ok = if a == 1 { dim(a) == 1 || dim(a) == channels } else { dim(a) == 1 };
        if !ok {
            return Err(bad());
        }
    }
    match values {
        [v] => Ok(vec![*v; channels]),
        v if v.len() == channels => Ok(v.to_vec()),
        _ => Err(bad()),
    }
}

/// Adds padding arrays element-wise.
fn add_pads(a: [usize; 4], b: [usize; 4]) -> [usize; 4] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

/// `strides` attribute of a 2-D window op (default 1).
fn strides(ctx: &Ctx<'_>) -> Result<[usize; 2]> {
    match ctx.ints("strides") {
        None => Ok([1, 1]),
        Some(&[sh, sw]) => Ok([size(ctx, "stride", sh, 1)?, size(ctx, "stride", sw, 1)?]),
        Some(other) => Err(ctx.err(format!("strides {other:?}: moat supports 2-D windows only"))),
    }
}

/// Fails unless the `dilations` attribute is absent or all ones.
fn no_dilation(ctx: &Ctx<'_>) -> Result<()> {
    match ctx.ints("dilations") {
        Some(d) if d.iter().any(|&v| v != 1) => Err(ctx.err(format!("dilations {d:?}: moat supports dilation 1 only"))),
        _ => Ok(()),
    }
}

/// Padding `[top, left, bottom, right]` of a 2-D window op from `pads` / `auto_pad`, for an
/// input of spatial size `in_hw`.
fn window_pads(ctx: &Ctx<'_>, in_hw: [usize; 2], kernel: [usize; 2], stride: [usize; 2]) -> Result<[usize; 4]> {
    let auto_pad = ctx.string("auto_pad")?.unwrap_or_default();
    match auto_pad.as_str() {
        "" | "NOTSET" => match ctx.ints("pads") {
            None => Ok([0; 4]),
            Some(&[t, l, b, r]) => {
                Ok([size(ctx, "pad", t, 0)?, size(ctx, "pad", l, 0)?, size(ctx, "pad", b, 0)?, size(ctx, "pad", r, 0)?])
            }
            Some(other) => Err(ctx.err(format!("pads {other:?}: moat supports 2-D windows only"))),
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" | "SAME_LOWER" => {
            // Output size ceil(in / stride); the extra padding goes at the end (UPPER) or at
            // the beginning (LOWER).
            let mut lo = [0; 2];
            let mut hi = [0; 2];
            for a in 0..2 {
                let out = in_hw[a].div_ceil(stride[a]);
                let total = ((out.max(1) - 1) * stride[a] + kernel[a]).saturating_sub(in_hw[a]);
                let small = total / 2;
                (lo[a], hi[a]) = if auto_pad == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
            }
            Ok([lo[0], lo[1], hi[0], hi[1]])
        }
        other => Err(ctx.err(format!("auto_pad '{other}' is not an ONNX padding mode"))),
    }
}

impl<'m> Importer<'m> {
    /// `Conv`: 2-D, dilation 1, any `group` dividing the channels (depthwise included); a
    /// preceding `Pad` is folded into its padding.
    pub(super) fn conv(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let w = self.constant(ctx, 1)?;
        let b = self.optional_constant(ctx, 2)?;
        let (id, shape, pre) = self.runtime_padded(ctx, 0)?;
        let group = ctx.int("group")?.unwrap_or(1);
        let &[o, ci, kh, kw] = w.dims.as_slice() else {
            return Err(ctx.err(format!(
                "weights of shape {:?}: moat supports 2-D convolutions only (weights [O, C, kH, kW])",
                w.dims
            )));
        };
        no_dilation(ctx)?;
        if let Some(ks) = ctx.ints("kernel_shape")
            && ks != [kh as i64, kw as i64]
        {
            return Err(ctx.err(format!("kernel_shape {ks:?} disagrees with weights of shape {:?}", w.dims)));
        }
        let [c, h, wd] = chw(ctx, &shape)?;
        let group = usize::try_from(group)
            .ok()
            .filter(|&g| g >= 1 && o.is_multiple_of(g) && ci.checked_mul(g) == Some(c))
            .ok_or_else(|| {
                ctx.err(format!(
                    "group = {group} does not fit {c} input channels, weights of shape {:?} (need C = group × {ci} and \
                     group dividing {o})",
                    w.dims
                ))
            })?;
        let stride = strides(ctx)?;
        let own = window_pads(ctx, [h + pre[0] + pre[2], wd + pre[1] + pre[3]], [kh, kw], stride)?;
        let mut bias = match b {
            Some(b) => {
                let v = floats(ctx, &b, "bias")?;
                if v.len() != o {
                    return Err(ctx.err(format!("{} biases for {o} output channels", v.len())));
                }
                v.to_vec()
            }
            None => vec![0.0; o],
        };
        let mut data = floats(ctx, &w, "weights")?.to_vec();
        let padding = add_pads(pre, own);
        // A preceding affine map folds into an ungrouped convolution's rows only.
        let id = if padding == [0; 4] && self.shapes[id.0] == shape && group == 1 {
            self.absorb_affines(id, &mut data, &mut bias)
        } else {
            id
        };
        let weight = Tensor::new(vec![o, ci, kh, kw], data)?;
        let x = self.materialize(ctx, id, &shape)?;
        let conv = Conv2d { weight, bias, stride, padding, group };
        let out = self.push(ctx, None, Op::Conv2d(conv), vec![x])?;
        let out_shape = self.shapes[out.0].clone();
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// `MaxPool` / `AveragePool` (a preceding `Pad` folds into an average pool only: zeros in a
    /// max pool are not moat's ignore-the-padding semantics).
    pub(super) fn pool(&mut self, ctx: &Ctx<'m>, max: bool) -> Result<()> {
        let (id, shape, pre) = if max {
            let (id, shape) = self.runtime(ctx, 0)?;
            (id, shape, [0; 4])
        } else {
            self.runtime_padded(ctx, 0)?
        };
        let kernel = match ctx.ints("kernel_shape") {
            Some(&[kh, kw]) => [size(ctx, "kernel", kh, 1)?, size(ctx, "kernel", kw, 1)?],
            Some(other) => return Err(ctx.err(format!("kernel_shape {other:?}: moat supports 2-D pooling only"))),
            None => return Err(ctx.err("has no kernel_shape")),
        };
        no_dilation(ctx)?;
        let [_, h, w] = chw(ctx, &shape)?;
        let stride = strides(ctx)?;
        let in_hw = [h + pre[0] + pre[2], w + pre[1] + pre[3]];
        let own = window_pads(ctx, in_hw, kernel, stride)?;
        if !max && own != [0; 4] && ctx.int("count_include_pad")?.unwrap_or(0) == 0 {
            return Err(ctx.err(format!(
                "count_include_pad = 0 with padding {own:?}: moat's average pool counts padded zeros \
                 (count_include_pad = 1); re-export with count_include_pad = 1 or without padding"
            )));
        }
        if ctx.int("ceil_mode")?.unwrap_or(0) != 0 {
            for a in 0..2 {
                let padded = in_hw[a] + own[a] + own[a + 2];
                if padded >= kernel[a] && !(padded - kernel[a]).is_multiple_of(stride[a]) {
                    return Err(ctx.err(
                        "ceil_mode = 1 changes the output size here; moat pools with floor rounding (ceil_mode = 0)",
                    ));
                }
            }
        }
        if max {
            self.check_unused_outputs(ctx, 1)?;
        }
        let pool = Pool { kernel, stride, padding: add_pads(pre, own) };
        let x = self.materialize(ctx, id, &shape)?;
        let op = if max { Op::MaxPool(pool) } else { Op::AvgPool(pool) };
        let out = self.push(ctx, None, op, vec![x])?;
        let out_shape = self.shapes[out.0].clone();
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// `GlobalAveragePool`: `[N, C, H, W] → [N, C, 1, 1]` (moat: `[C]`).
    pub(super) fn global_avg_pool(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (id, shape) = self.runtime(ctx, 0)?;
        let [c, _, _] = chw(ctx, &shape)?;
        let x = self.materialize(ctx, id, &shape)?;
        let out = self.push(ctx, None, Op::GlobalAvgPool, vec![x])?;
        self.bind_output(ctx, 0, out, vec![c, 1, 1])
    }

    /// `Gemm`: `alpha · A · op(B) + beta · C` with `A` computed and `B`, `C` constant.
    pub(super) fn gemm(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        if ctx.int("transA")?.unwrap_or(0) != 0 {
            return Err(
                ctx.err("transA = 1 is not supported: the batch dimension of the input would not be the first axis")
            );
        }
        let trans_b = ctx.int("transB")?.unwrap_or(0) != 0;
        let alpha = ctx.float("alpha")?.unwrap_or(1.0);
        let beta = ctx.float("beta")?.unwrap_or(1.0);
        let b = self.constant(ctx, 1)?;
        let c = self.optional_constant(ctx, 2)?;
        let (id, shape) = self.runtime(ctx, 0)?;
        if shape.len() != 1 {
            return Err(ctx.err(format!("input of shape {}: Gemm needs a 2-D input [N, K]", batched(&shape))));
        }
        let &[r, k] = b.dims.as_slice() else {
            return Err(ctx.err(format!("B of shape {:?} is not a matrix", b.dims)));
        };
        let data = floats(ctx, &b, "B")?;
        let (m, mut weight) = if trans_b { (r, data.to_vec()) } else { (k, transpose(data, r, k)) };
        if alpha != 1.0 {
            weight.iter_mut().for_each(|w| *w *= alpha);
        }
        let mut bias = match c {
            Some(c) => per_channel(&c, 2, m).map_err(|msg| ctx.err(format!("C: {msg}")))?,
            None => vec![0.0; m],
        };
        if beta != 1.0 {
            bias.iter_mut().for_each(|v| *v *= beta);
        }
        let id = if self.shapes[id.0] == shape { self.absorb_affines(id, &mut weight, &mut bias) } else { id };
        let weight = Tensor::new(vec![m, weight.len() / m.max(1)], weight)?;
        let x = self.materialize(ctx, id, &shape)?;
        let out = self.push(ctx, None, Op::Dense(Dense { weight, bias }), vec![x])?;
        let out_shape = self.shapes[out.0].clone();
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// `MatMul` of a computed `[N, K]` by a constant `[K, M]`: a Dense layer with zero bias (a
    /// following `Add` of a constant becomes its bias).
    pub(super) fn matmul(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let b = self.constant(ctx, 1)?;
        let (id, shape) = self.runtime(ctx, 0)?;
        if shape.len() != 1 {
            return Err(ctx.err(format!(
                "input of shape {}: moat supports MatMul of a 2-D input [N, K] by a constant matrix",
                batched(&shape)
            )));
        }
        let &[k, m] = b.dims.as_slice() else {
            return Err(ctx.err(format!("B of shape {:?} is not a matrix", b.dims)));
        };
        let mut weight = transpose(floats(ctx, &b, "B")?, k, m);
        let mut bias = vec![0.0; m];
        let id = if self.shapes[id.0] == shape { self.absorb_affines(id, &mut weight, &mut bias) } else { id };
        let weight = Tensor::new(vec![m, k], weight)?;
        let x = self.materialize(ctx, id, &shape)?;
        let out = self.push(ctx, None, Op::Dense(Dense { weight, bias }), vec![x])?;
        let out_shape = self.shapes[out.0].clone();
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// `BatchNormalization` in inference mode.
    pub(super) fn batch_norm(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        if ctx.int("training_mode")?.unwrap_or(0) != 0 {
            return Err(ctx.err("training_mode = 1: moat imports inference graphs only"));
        }
        // Opsets 7–8: `spatial = 0` normalises every element with its own statistics.
        if self.opset < 9 && ctx.int("spatial")?.unwrap_or(1) != 1 {
            return Err(ctx.err("spatial = 0: moat normalises per channel (spatial = 1)"));
        }
        self.check_unused_outputs(ctx, 1)?;
        let mut params = Vec::with_capacity(4);
        for (i, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
            let c = self.constant(ctx, i)?;
            params.push(floats(ctx, &c, what)?.to_vec());
        }
        let eps = ctx.float("epsilon")?.unwrap_or(1e-5);
        let (id, shape) = self.runtime(ctx, 0)?;
        let x = if self.shapes[id.0].first() == shape.first() { id } else { self.materialize(ctx, id, &shape)? };
        let [gamma, beta, mean, var] =
            <[Vec<f32>; 4]>::try_from(params).map_err(|_| ctx.err("expects scale, B, mean and var"))?;
        let out = self.push(ctx, None, Op::BatchNorm(BatchNorm { gamma, beta, mean, var, eps }), vec![x])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `Relu`.
    pub(super) fn relu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (id, shape) = self.runtime(ctx, 0)?;
        let out = self.push(ctx, None, Op::Relu, vec![id])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `LeakyRelu` (`alpha`, default 0.01).
    pub(super) fn leaky_relu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let alpha = ctx.float("alpha")?.unwrap_or(0.01);
        if !alpha.is_finite() {
            return Err(ctx.err(format!("alpha = {alpha} is not finite")));
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let out = self.push(ctx, None, Op::LeakyRelu { alpha }, vec![id])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `PRelu`: with one slope (a constant of one element, or all elements equal) a moat
    /// `LeakyRelu`; with one slope per channel (`[C, 1, 1]`, `[C]`, …, broadcasting over the
    /// channel axis 1 only) a moat `PRelu`. Other slope shapes are refused. In two-party
    /// inference the slopes are public, as a LeakyRelu's α.
    pub(super) fn prelu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let slope = self.constant(ctx, 1)?;
        let slopes = floats(ctx, &slope, "slope")?;
        let Some(&alpha) = slopes.first() else {
            return Err(ctx.err("slope is empty"));
        };
        if let Some(bad) = slopes.iter().find(|s| !s.is_finite()) {
            return Err(ctx.err(format!("slope {bad} is not finite")));
        }
        if slopes.iter().all(|s| *s == alpha) {
            return self.activation(ctx, Op::LeakyRelu { alpha });
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let channels = shape.first().copied().unwrap_or(1);
        let slope = per_channel(&slope, shape.len() + 1, channels).map_err(|m| {
            ctx.err(format!("slope: {m}; moat supports one slope, or one per channel (e.g. [C, 1, 1])"))
        })?;
        let x = self.materialize(ctx, id, &shape)?;
        let out = self.push(ctx, None, Op::PRelu { slope }, vec![x])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `ReduceMean` over the spatial axes of `[N, C, H, W]` (axes {2, 3}, or {−2, −1}; an
    /// attribute before opset 18, an input from 18): a moat `GlobalAvgPool`, `[N, C, 1, 1]`
    /// with `keepdims` = 1 (the default), `[N, C]` with 0.
    pub(super) fn reduce_mean(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let axes: Vec<i64> = if self.opset < 18 {
            ctx.ints("axes").map(<[i64]>::to_vec).unwrap_or_default()
        } else {
            match self.optional_constant(ctx, 1)? {
                Some(c) => ints(ctx, &c, "axes")?.to_vec(),
                None => Vec::new(),
            }
        };
        let (id, shape) = self.runtime(ctx, 0)?;
        let [c, _, _] = chw(ctx, &shape)?;
        let mut normalized: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
        normalized.sort_unstable();
        if normalized != [2, 3] {
            return Err(ctx.err(format!(
                "axes {axes:?}: moat supports the mean over the spatial axes [2, 3] of [N, C, H, W] (global average pooling)"
            )));
        }
        let keep = ctx.int("keepdims")?.unwrap_or(1) != 0;
        let x = self.materialize(ctx, id, &shape)?;
        let out = self.push(ctx, None, Op::GlobalAvgPool, vec![x])?;
        self.bind_output(ctx, 0, out, if keep { vec![c, 1, 1] } else { vec![c] })
    }

    /// `HardSigmoid` (`alpha` default 0.2, `beta` default 0.5).
    pub(super) fn hard_sigmoid(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let alpha = ctx.float("alpha")?.unwrap_or(0.2);
        let beta = ctx.float("beta")?.unwrap_or(0.5);
        for (what, v) in [("alpha", alpha), ("beta", beta)] {
            if !v.is_finite() {
                return Err(ctx.err(format!("{what} = {v} is not finite")));
            }
        }
        self.activation(ctx, Op::HardSigmoid { alpha, beta })
    }

    /// `Elu` (`alpha` default 1, at most [`crate::approx::ELU_MAX_ALPHA`] in magnitude).
    pub(super) fn elu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let alpha = ctx.float("alpha")?.unwrap_or(1.0);
        if !alpha.is_finite() || alpha.abs() > crate::approx::ELU_MAX_ALPHA {
            return Err(ctx.err(format!(
                "alpha = {alpha}: moat supports a finite alpha with |alpha| ≤ {} (its fixed-point spline must fit the ring)",
                crate::approx::ELU_MAX_ALPHA
            )));
        }
        self.activation(ctx, Op::Elu { alpha })
    }

    /// `Selu` (`alpha` default 1.6733, `gamma` default 1.0507): `0 < gamma ≤`
    /// [`crate::approx::SELU_MAX_GAMMA`] and `|gamma·alpha| ≤` [`crate::approx::ELU_MAX_ALPHA`].
    pub(super) fn selu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let alpha = ctx.float("alpha")?.unwrap_or(crate::approx::SELU_ALPHA);
        let gamma = ctx.float("gamma")?.unwrap_or(crate::approx::SELU_GAMMA);
        if let Some(why) = crate::approx::selu_unsupported(alpha, gamma) {
            return Err(ctx.err(why));
        }
        self.activation(ctx, Op::Selu { alpha, gamma })
    }

    /// `Gelu` (opset 20): `approximate` = "none" (the default, the erf form) or "tanh".
    pub(super) fn gelu(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let approximate = ctx.string("approximate")?.unwrap_or_else(|| "none".into());
        let op = match approximate.as_str() {
            "none" => Op::Gelu,
            "tanh" => Op::GeluTanh,
            other => {
                return Err(ctx.err(format!(
                    "approximate = '{other}': moat supports Gelu with approximate = 'none' (the erf form) or 'tanh'"
                )));
            }
        };
        self.activation(ctx, op)
    }

    /// `Swish` (opset 24) with `alpha` = 1: SiLU.
    pub(super) fn swish(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let alpha = ctx.float("alpha")?.unwrap_or(1.0);
        if alpha != 1.0 {
            return Err(ctx.err(format!("alpha = {alpha}: moat supports Swish with alpha = 1 (SiLU) only")));
        }
        self.activation(ctx, Op::Silu)
    }

    /// An element-wise activation without attributes (`HardSwish`, `Sigmoid`, `Softplus`,
    /// `Softsign`, `Tanh`), or one
    /// whose attributes were read.
    pub(super) fn activation(&mut self, ctx: &Ctx<'m>, op: Op) -> Result<()> {
        let (id, shape) = self.runtime(ctx, 0)?;
        let out = self.push(ctx, None, op, vec![id])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `Clip` (bounds are attributes before opset 11, inputs from 11): min 0 and no upper bound
    /// is a ReLU; both bounds finite (ReLU6: 0 and 6) a moat `Clip`.
    pub(super) fn clip(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (min, max) = if self.opset < 11 {
            (ctx.float("min")?, ctx.float("max")?)
        } else {
            let bound = |i: usize| -> Result<Option<f32>> {
                match self.optional_constant(ctx, i)? {
                    None => Ok(None),
                    Some(c) => c.float_scalar().map(Some).map_err(|m| ctx.err(format!("bound {i}: {m}"))),
                }
            };
            (bound(1)?, bound(2)?)
        };
        let unbounded = max.is_none_or(|m| m >= f32::MAX);
        if min == Some(0.0) && unbounded {
            return self.relu(ctx);
        }
        match (min, max) {
            (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && lo < hi => {
                let (id, shape) = self.runtime(ctx, 0)?;
                let out = self.push(ctx, None, Op::Clip { min: lo, max: hi }, vec![id])?;
                self.bind_output(ctx, 0, out, shape)
            }
            _ => Err(ctx.err(format!(
                "Clip(min = {min:?}, max = {max:?}) is not supported: moat supports Clip with both bounds \
                 finite (min < max) or with min = 0 and no upper bound (= Relu)"
            ))),
        }
    }

    /// `Constant`.
    pub(super) fn constant_node(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let value = if let Some(t) = ctx.attr("value").and_then(|a| a.t.as_ref()) {
            decode_tensor(t)?
        } else if let Some(f) = ctx.float("value_float")? {
            Const::f32(vec![], vec![f])
        } else if let Some(v) = ctx.attr("value_floats") {
            Const::f32(vec![v.floats.len()], v.floats.clone())
        } else if let Some(i) = ctx.int("value_int")? {
            Const::i64(vec![], vec![i])
        } else if let Some(v) = ctx.ints("value_ints") {
            Const::i64(vec![v.len()], v.to_vec())
        } else {
            return Err(ctx.err("has no value, value_float(s) or value_int(s) attribute (sparse and string constants are not supported)"));
        };
        let out = ctx.output(0).ok_or_else(|| ctx.err("has no output"))?;
        self.bind(out, Val::Const(Rc::new(value)));
        Ok(())
    }

    /// `Dropout` at inference: the identity (its mask output must be unused).
    pub(super) fn dropout(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        self.check_unused_outputs(ctx, 1)?;
        if self.opset >= 12
            && let Some(mode) = self.optional_constant(ctx, 2)?
            && ints(ctx, &mode, "training_mode")?.iter().any(|&v| v != 0)
        {
            return Err(ctx.err("training_mode = true: moat imports inference graphs only"));
        }
        self.alias(ctx)
    }

    /// `Flatten` with axis 1 (per sample).
    pub(super) fn flatten(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (id, shape) = self.runtime(ctx, 0)?;
        let a = ctx.int("axis")?.unwrap_or(1);
        let rank = shape.len() as i64 + 1;
        if (if a < 0 { a + rank } else { a }) != 1 {
            return Err(ctx.err(format!("axis = {a}: moat flattens per sample (axis = 1)")));
        }
        let n = numel(&shape);
        self.reshape_to(ctx, id, &shape, vec![n], true)
    }

    /// Binds output 0 to `id` (of ONNX per-sample shape `shape`) viewed as the per-sample shape
    /// `target`. When moat's layout of `id` already is `target` while ONNX's is not (after a
    /// `GlobalAveragePool`), no node is needed; otherwise a moat `Flatten`/`Reshape` node keeps
    /// the ONNX node.
    fn reshape_to(
        &mut self,
        ctx: &Ctx<'m>,
        id: ValueId,
        shape: &[usize],
        target: Vec<usize>,
        flatten: bool,
    ) -> Result<()> {
        let out = if self.shapes[id.0] == target && shape != target {
            id
        } else if flatten {
            self.push(ctx, None, Op::Flatten, vec![id])?
        } else {
            self.push(ctx, None, Op::Reshape(target.clone()), vec![id])?
        };
        self.bind_output(ctx, 0, out, target)
    }

    /// `Reshape` by a constant shape whose first entry is the batch (`0`, `-1`, `1` or the
    /// batch size `N` from a folded `Shape`); constants are reshaped at import time.
    pub(super) fn reshape(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let spec = self.constant(ctx, 1)?;
        let allow_zero = ctx.int("allowzero")?.unwrap_or(0) != 0;
        if self.is_constant(ctx, 0)? {
            let data = self.constant(ctx, 0)?;
            let dims = fold::reshape_dims(&data.dims, ints(ctx, &spec, "shape")?, allow_zero)
                .map_err(|m| ctx.err(format!("Reshape of a constant of shape {:?}: {m}", data.dims)))?;
            return self.bind_folded(ctx, fold::with_dims(&data, dims));
        }
        let spec = spec.dims_data().map_err(|m| ctx.err(format!("shape: {m}")))?;
        let (id, shape) = self.runtime(ctx, 0)?;
        let target = reshape_target(ctx, &shape, &spec, allow_zero)?;
        self.reshape_to(ctx, id, &shape, target, false)
    }

    /// `Squeeze` of size-1 per-sample axes (never the batch axis).
    pub(super) fn squeeze(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let axes = self.axes(ctx)?;
        if self.is_constant(ctx, 0)? {
            let c = self.constant(ctx, 0)?;
            return self.bind_folded(ctx, fold::squeeze(&c, axes.as_deref()));
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let rank = shape.len() + 1;
        let target: Vec<usize> = match axes {
            None => shape.iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let axes = axes.iter().map(|&a| axis(ctx, a, rank)).collect::<Result<Vec<_>>>()?;
                if axes.contains(&0) {
                    return Err(ctx.err("squeezes the batch axis; moat keeps the batch dimension"));
                }
                if let Some(&a) = axes.iter().find(|&&a| shape[a - 1] != 1) {
                    return Err(ctx.err(format!("cannot squeeze axis {a} of size {}", shape[a - 1])));
                }
                shape.iter().enumerate().filter(|(i, _)| !axes.contains(&(i + 1))).map(|(_, &d)| d).collect()
            }
        };
        if target.is_empty() {
            return Err(ctx.err("would leave a scalar per sample; moat values have at least one dimension"));
        }
        self.reshape_to(ctx, id, &shape, target, false)
    }

    /// `Unsqueeze`: inserts size-1 per-sample axes (never before the batch axis).
    pub(super) fn unsqueeze(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let axes = self.axes(ctx)?.ok_or_else(|| ctx.err("has no axes"))?;
        if self.is_constant(ctx, 0)? {
            let c = self.constant(ctx, 0)?;
            return self.bind_folded(ctx, fold::unsqueeze(&c, &axes));
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let rank = shape.len() + 1 + axes.len();
        let axes = axes.iter().map(|&a| axis(ctx, a, rank)).collect::<Result<Vec<_>>>()?;
        if axes.contains(&0) {
            return Err(ctx.err("inserts an axis before the batch axis; moat keeps the batch dimension first"));
        }
        let mut dims = shape.iter();
        let mut target = Vec::with_capacity(rank - 1);
        for a in 1..rank {
            if axes.contains(&a) {
                target.push(1);
            } else {
                target.push(dims.next().copied().ok_or_else(|| ctx.err("repeats an axis"))?);
            }
        }
        self.reshape_to(ctx, id, &shape, target, false)
    }

    /// The axes of `Squeeze`/`Unsqueeze`: an attribute before opset 13, input 1 from 13.
    pub(super) fn axes(&self, ctx: &Ctx<'m>) -> Result<Option<Vec<i64>>> {
        if self.opset < 13 {
            Ok(ctx.ints("axes").map(<[i64]>::to_vec))
        } else {
            match self.optional_constant(ctx, 1)? {
                Some(c) => Ok(Some(ints(ctx, &c, "axes")?.to_vec())),
                None => Ok(None),
            }
        }
    }

    /// `Pad` (constant mode, zero value, spatial axes only), kept pending until the next
    /// `Conv`/`AveragePool` absorbs it.
    pub(super) fn pad(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let mode = ctx.string("mode")?.unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(ctx.err(format!("mode '{mode}': moat folds only constant (zero) padding")));
        }
        let (pads, value, axes) = if self.opset < 11 {
            let pads = ctx.ints("pads").or_else(|| ctx.ints("paddings")).ok_or_else(|| ctx.err("has no pads"))?;
            (pads.to_vec(), ctx.float("value")?.unwrap_or(0.0), None)
        } else {
            let pads = self.constant(ctx, 1)?;
            let pads = ints(ctx, &pads, "pads")?.to_vec();
            let value = match self.optional_constant(ctx, 2)? {
                Some(c) => c.float_scalar().map_err(|m| ctx.err(format!("constant_value: {m}")))?,
                None => 0.0,
            };
            let axes = match self.optional_constant(ctx, 3)? {
                Some(c) => Some(ints(ctx, &c, "axes")?.to_vec()),
                None => None,
            };
            (pads, value, axes)
        };
        if value != 0.0 {
            return Err(ctx.err(format!("pads with {value}; moat folds only zero padding")));
        }
        let (id, shape, pre) = self.runtime_padded(ctx, 0)?;
        let rank = shape.len() + 1;
        if rank != 4 {
            return Err(ctx.err(format!(
                "pads a value of shape {}; moat folds only spatial padding of [N, C, H, W] values",
                batched(&shape)
            )));
        }
        let axes = match axes {
            Some(a) => a.iter().map(|&a| axis(ctx, a, rank)).collect::<Result<Vec<_>>>()?,
            None => (0..rank).collect(),
        };
        if pads.len() != 2 * axes.len() {
            return Err(ctx.err(format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        let mut begin = [0i64; 4];
        let mut end = [0i64; 4];
        for (k, &a) in axes.iter().enumerate() {
            begin[a] = pads[k];
            end[a] = pads[k + axes.len()];
        }
        if begin[..2].iter().chain(&end[..2]).any(|&p| p != 0) {
            return Err(
                ctx.err(format!("pads {pads:?} pad the batch or channel axis; moat folds only spatial padding"))
            );
        }
        if begin.iter().chain(&end).any(|&p| p < 0) {
            return Err(ctx.err(format!("negative pads {pads:?} (cropping) are not supported")));
        }
        let own = [
            size(ctx, "pad", begin[2], 0)?,
            size(ctx, "pad", begin[3], 0)?,
            size(ctx, "pad", end[2], 0)?,
            size(ctx, "pad", end[3], 0)?,
        ];
        let out = ctx.output(0).ok_or_else(|| ctx.err("has no output"))?;
        let pads = add_pads(pre, own);
        self.bind(out, Val::Padded { id, shape, pads, pad_node: ctx.label.clone() });
        Ok(())
    }

    /// `Softmax` over the features of a per-sample 1-D value (before opset 13 `axis = 1` means
    /// over all per-sample elements, which moat computes on the flattened value).
    pub(super) fn softmax(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (id, shape) = self.runtime(ctx, 0)?;
        let rank = shape.len() + 1;
        let default = if self.opset < 13 { 1 } else { -1 };
        let a = axis(ctx, ctx.int("axis")?.unwrap_or(default), rank)?;
        let per_sample = a == 1 && (self.opset < 13 || rank == 2);
        if !per_sample {
            return Err(ctx.err(format!(
                "softmax over axis {a} of {}: moat applies softmax per sample over a 1-D value (axis 1 of [N, F])",
                batched(&shape)
            )));
        }
        let x = if self.shapes[id.0].len() == 1 { id } else { self.push(ctx, Some("flatten"), Op::Flatten, vec![id])? };
        let out = self.push(ctx, None, Op::Softmax, vec![x])?;
        self.bind_output(ctx, 0, out, shape)
    }

    /// `Concat`: computed values along the channel axis (ONNX axis 1, per-sample axis 0), or
    /// constants along any axis (folded).
    pub(super) fn concat(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let n = ctx.node.input.len();
        let a = ctx.int("axis")?.ok_or_else(|| ctx.err("has no axis attribute"))?;
        let mut constants = 0;
        for i in 0..n {
            constants += usize::from(self.is_constant(ctx, i)?);
        }
        if n == 0 {
            return Err(ctx.err("has no inputs"));
        }
        if constants == n {
            let parts = (0..n).map(|i| self.constant(ctx, i)).collect::<Result<Vec<_>>>()?;
            let parts: Vec<&Const> = parts.iter().map(|p| p.as_ref()).collect();
            return self.bind_folded(ctx, fold::concat(&parts, a));
        }
        if constants > 0 {
            return Err(ctx.err(
                "concatenates constants with computed values; moat concatenates computed values only (along channels)",
            ));
        }
        let parts = (0..n).map(|i| self.runtime(ctx, i)).collect::<Result<Vec<_>>>()?;
        let first = parts[0].1.clone();
        let a = axis(ctx, a, first.len() + 1)?;
        if a != 1 {
            return Err(ctx.err(format!(
                "concatenates along axis {a} of {}; moat concatenates computed values along the channel axis (axis 1) only",
                batched(&first)
            )));
        }
        let mut out_shape = first.clone();
        for (_, s) in &parts[1..] {
            if s.len() != first.len() || s.get(1..) != first.get(1..) {
                return Err(ctx.err(format!(
                    "concatenates {} and {}: all axes but the channel axis must agree",
                    batched(&first),
                    batched(s)
                )));
            }
            out_shape[0] = out_shape[0].saturating_add(s[0]);
        }
        if n == 1 {
            return self.bind_output(ctx, 0, parts[0].0, first);
        }
        let inputs = parts.iter().map(|(id, s)| self.materialize(ctx, *id, s)).collect::<Result<Vec<_>>>()?;
        let out = self.push(ctx, None, Op::Concat, inputs)?;
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// `Transpose`: of a constant (folded), or of a computed value keeping the batch axis first:
    /// a reshape when only size-1 axes move, else a moat `Transpose` of the per-sample axes.
    pub(super) fn transpose(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let perm = ctx.ints("perm");
        if self.is_constant(ctx, 0)? {
            let c = self.constant(ctx, 0)?;
            return self.bind_folded(ctx, fold::transpose(&c, perm));
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let rank = shape.len() + 1;
        let p = fold::permutation(perm, rank).map_err(|m| ctx.err(m))?;
        // The batch axis counts as longer than 1: it must stay in place.
        let len = |axis: usize| if axis == 0 { usize::MAX } else { shape[axis - 1] };
        let moved: Vec<usize> = p.iter().copied().filter(|&axis| len(axis) != 1).collect();
        if p[0] != 0 {
            return Err(ctx.err(format!(
                "Transpose with perm {p:?} of {} moves the batch axis; moat keeps the batch axis first",
                batched(&shape)
            )));
        }
        let target: Vec<usize> = p[1..].iter().map(|&axis| shape[axis - 1]).collect();
        if target == shape {
            return self.bind_output(ctx, 0, id, shape);
        }
        if moved.is_sorted() {
            return self.reshape_to(ctx, id, &shape, target, false);
        }
        let x = self.materialize(ctx, id, &shape)?;
        let perm = p[1..].iter().map(|&axis| axis - 1).collect();
        let out = self.push(ctx, None, Op::Transpose(perm), vec![x])?;
        self.bind_output(ctx, 0, out, target)
    }
}

/// The per-sample target of `Reshape(shape = spec)` applied to `[N] ++ shape`.
///
/// `spec[0]` must keep the batch: `N` (the batch size from a folded `Shape`), `0` (copy), `-1`
/// (inferred, which must come out as `N`) or `1` (a batch-1 model). The other entries follow
/// ONNX: `0` copies the input dimension (unless `allowzero`), one `-1` is inferred.
fn reshape_target(ctx: &Ctx<'_>, shape: &[usize], spec: &[Dim], allow_zero: bool) -> Result<Vec<usize>> {
    let bad = |why: &str| ctx.err(format!("Reshape of {} to {}: {why}", batched(shape), show_dims(spec)));
    match spec.first() {
        None => return Err(bad("moat keeps a batch dimension, so the target needs at least one axis")),
        Some(Dim::Batch) => {}
        Some(Dim::Int(0)) if !allow_zero => {}
        Some(Dim::Int(-1 | 1)) => {}
        Some(_) => return Err(bad("the first axis must stay the batch (N, 0, -1 or 1)")),
    }
    let first_inferred = spec[0] == Dim::Int(-1);
    let per_sample = numel(shape);
    let mut target = Vec::with_capacity(spec.len().saturating_sub(1));
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate().skip(1) {
        let Dim::Int(d) = d else {
            return Err(bad("the batch size N is used for a per-sample axis (it would move elements between samples)"));
        };
        match d {
            0 if !allow_zero => {
                target.push(*shape.get(i - 1).ok_or_else(|| bad("0 copies an axis the input does not have"))?)
            }
            -1 if inferred.is_none() && !first_inferred => {
                inferred = Some(target.len());
                target.push(1);
            }
            -1 => return Err(bad("more than one -1")),
            d if d > 0 && d as u64 <= LIMIT as u64 => target.push(d as usize),
            _ => return Err(bad("invalid dimension")),
        }
    }
    let known = checked_numel(&target).ok_or_else(|| bad("too large"))?;
    match inferred {
        Some(k) if known > 0 && per_sample.is_multiple_of(known) => target[k] = per_sample / known,
        Some(_) => return Err(bad("the elements of a sample cannot be divided that way")),
        None if known != per_sample => {
            return Err(bad("it would move elements between samples (the batch dimension must stay first)"));
        }
        None => {}
    }
    if target.is_empty() {
        return Err(bad("would leave a scalar per sample; moat values have at least one dimension"));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::super::proto::{AttributeProto, NodeProto, attribute_type};
    use super::*;

    fn ctx_with(attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto { op_type: "Conv".into(), name: "n".into(), attribute: attrs, ..Default::default() }
    }

    fn auto_pad(mode: &str) -> AttributeProto {
        AttributeProto {
            name: "auto_pad".into(),
            r#type: Some(attribute_type::STRING),
            s: Some(mode.as_bytes().to_vec()),
            ..Default::default()
        }
    }

    #[test]
    fn same_padding_puts_the_odd_pad_at_the_right_end() -> Result<()> {
        for (mode, want) in [("SAME_UPPER", [1, 0, 2, 1]), ("SAME_LOWER", [2, 1, 1, 0])] {
            let node = ctx_with(vec![auto_pad(mode)]);
            let ctx = Ctx { node: &node, index: 0, label: "n".into() };
            // Height 5, kernel 4, stride 1: out 5, total 3. Width 6, kernel 3, stride 2: out 3, total 1.
            assert_eq!(window_pads(&ctx, [5, 6], [4, 3], [1, 2])?, want, "{mode}");
        }
        let node = ctx_with(vec![auto_pad("VALID")]);
        let ctx = Ctx { node: &node, index: 0, label: "n".into() };
        assert_eq!(window_pads(&ctx, [5, 6], [4, 3], [1, 2])?, [0; 4]);
        Ok(())
    }

    #[test]
    fn per_channel_accepts_bias_shapes_only() {
        let c = |dims: Vec<usize>, v: Vec<f32>| Const::f32(dims, v);
        assert_eq!(per_channel(&c(vec![3], vec![1.0, 2.0, 3.0]), 2, 3), Ok(vec![1.0, 2.0, 3.0]));
        assert_eq!(per_channel(&c(vec![3, 1, 1], vec![1.0, 2.0, 3.0]), 4, 3), Ok(vec![1.0, 2.0, 3.0]));
        assert_eq!(per_channel(&c(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]), 4, 3), Ok(vec![1.0, 2.0, 3.0]));
        assert_eq!(per_channel(&c(vec![], vec![0.5]), 4, 2), Ok(vec![0.5, 0.5]));
        // [3] on a 4-D value broadcasts over the width, not the channels.
        assert!(per_channel(&c(vec![3], vec![1.0, 2.0, 3.0]), 4, 3).is_err());
        assert!(per_channel(&c(vec![2, 3], vec![0.0; 6]), 2, 3).is_err());
        assert!(per_channel(&Const::i64(vec![3], vec![1, 2, 3]), 2, 3).is_err());
    }

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
