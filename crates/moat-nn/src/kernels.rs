//! Loop kernels shared by the float executor, the fixed-point executor and the two-party
//! engine (which runs the ring versions on secret shares: they are linear in the input).
//!
//! All kernels work on one sample in row-major `[C, H, W]` or `[N]` layout and are generic over
//! [`Mac`], which is `f32` arithmetic or wrapping `u64` ring arithmetic (reduce mod 2^ℓ after).
//!
//! # Float summation order
//!
//! The float kernels sum in the order of onnxruntime's CPU provider (its MLAS library) on x86-64,
//! so that moat's float execution gives onnxruntime's values bit for bit where the order is known
//! (measured against onnxruntime 1.32 on an x86-64 machine with AVX-512F and FMA; MLAS's
//! AVX2/FMA3 SGEMM kernel, read but not measured, keeps the same per-element order):
//!
//! * every multiply-accumulate is one fused multiply-add (`f32::mul_add`: one rounding), as the
//!   FMA3 and AVX-512F SGEMM kernels compute it;
//! * each output element is one chain over the reduction index in order (MLAS keeps one
//!   accumulator lane per output element and walks K in order);
//! * [`dense`] cuts K into blocks of [`GEMM_STRIDE_K`] (MLAS's packed-B SGEMM, which onnxruntime
//!   uses for a constant `Gemm`/`MatMul` weight): each block's chain starts at zero and is added
//!   to the output, which starts at the bias (`Gemm` with `beta` = 1 adds `C` first);
//! * [`conv2d`] sums each input channel's `kh · kw` products as one chain from zero and adds the
//!   channels' sums in channel order. That is MLAS's NCHWc direct convolution of an NCHW input
//!   (`MLAS_NCHWC_CONV_NCHW_ALGORITHM`: one kernel call per input channel, each accumulating
//!   into the output), which onnxruntime's default graph optimisation (its NCHWc layout
//!   transformer, block 16 with AVX-512F, 8 with AVX2) picks for a convolution of `group` = 1
//!   with fewer input channels than the block. With more input channels onnxruntime sums in
//!   other orders (a multiple of 16: per block of 16 channels one chain over `(i, j, c)`, the
//!   blocks added in order, as measured; otherwise im2col + SGEMM with K blocks), so such
//!   convolutions, and grouped ones, agree with onnxruntime to rounding, not bit for bit.
//!   Padded positions are skipped (MLAS skips them too, or multiplies a zero: the same value).
//!
//! The ring (`u64`) results are unchanged by any of this: wrapping addition is associative.
//! The float kernels run under [`pulp`]'s runtime dispatch, compiled for x86-64-v3 (FMA, AVX2)
//! when the CPU has it: `f32::mul_add` is correctly rounded either way (a hardware FMA, else the C
//! library's `fmaf`), so the dispatch changes speed, never a result.

/// A number that can be multiply-accumulated: `f32`, or `u64` with wrapping (ring) semantics.
pub trait Mac: Copy + Default + Send + Sync {
    /// `self + a · b`.
    fn mac(self, a: Self, b: Self) -> Self;
    /// `self + a`.
    fn plus(self, a: Self) -> Self;
}

impl Mac for f32 {
    /// One fused multiply-add, `a · b + self` rounded once (MLAS's FMA SGEMM kernels).
    #[inline(always)]
    fn mac(self, a: f32, b: f32) -> f32 {
        a.mul_add(b, self)
    }
    #[inline(always)]
    fn plus(self, a: f32) -> f32 {
        self + a
    }
}

impl Mac for u64 {
    #[inline(always)]
    fn mac(self, a: u64, b: u64) -> u64 {
        self.wrapping_add(a.wrapping_mul(b))
    }
    #[inline(always)]
    fn plus(self, a: u64) -> u64 {
        self.wrapping_add(a)
    }
}

/// Geometry of a 2-D window operation (convolution or pooling) on one `[C, H, W]` sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Input height and width.
    pub in_hw: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

impl Window {
    /// Output height and width (the caller has shape-checked the graph).
    pub fn out_hw(&self) -> [usize; 2] {
        let [h, w] = self.in_hw;
        let [pt, pl, pb, pr] = self.padding;
        [(h + pt + pb - self.kernel[0]) / self.stride[0] + 1, (w + pl + pr - self.kernel[1]) / self.stride[1] + 1]
    }
}

/// A kernel run under [`pulp`]'s dispatch: compiled for the CPU's x86-64-v3 features (FMA, AVX2)
/// when it has them, else as it is. Only speed differs (see the module doc): without FMA in the
/// compiled code, every `f32::mul_add` is a call. `with_simd` and the loops it calls are
/// `#[inline(always)]` so that they are compiled inside pulp's target-feature function (a
/// closure would not be inlined there).
enum Kernel<'a, T> {
    Conv { input: &'a [T], channels: usize, weight: &'a [T], out_channels: usize, win: Window },
    Dense { input: &'a [T], weight: &'a [T], start: Vec<T> },
}

impl<T: Mac> pulp::WithSimd for Kernel<'_, T> {
    type Output = Vec<T>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<T> {
        match self {
            Kernel::Conv { input, channels, weight, out_channels, win } => {
                conv2d_loops(input, channels, weight, out_channels, win)
            }
            Kernel::Dense { input, weight, start } => dense_loops(input, weight, start),
        }
    }
}

/// Convolution without bias: `out[o, y, x] = Σ_{c, i, j} w[o, c, i, j] · in[c, y·s + i − p, x·s + j − p]`
/// with zero padding. `weight` is `[O, C, kh, kw]`; the result is `[O, oh, ow]`.
///
/// In float, in onnxruntime's order for a convolution of fewer than 16 input channels (see the
/// module doc): per input channel `c`, one fused multiply-add chain over `(i, j)` from zero;
/// the channels' sums added in channel order, `((p₀ + p₁) + p₂) + …`.
pub fn conv2d<T: Mac>(input: &[T], channels: usize, weight: &[T], out_channels: usize, win: Window) -> Vec<T> {
    pulp::Arch::new().dispatch(Kernel::Conv { input, channels, weight, out_channels, win })
}

#[inline(always)]
fn conv2d_loops<T: Mac>(input: &[T], channels: usize, weight: &[T], out_channels: usize, win: Window) -> Vec<T> {
    let [h, w] = win.in_hw;
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let [pt, pl, _, _] = win.padding;
    let [oh, ow] = win.out_hw();
    let mut out = vec![T::default(); out_channels * oh * ow];
    // One input channel's contribution (a chain over (i, j) from zero), added to the plane after.
    let mut part = vec![T::default(); oh * ow];
    for (o, plane) in out.chunks_mut(oh * ow).enumerate() {
        for c in 0..channels {
            let chan = &input[c * h * w..(c + 1) * h * w];
            part.fill(T::default());
            for i in 0..kh {
                for j in 0..kw {
                    let wt = weight[((o * channels + c) * kh + i) * kw + j];
                    for y in 0..oh {
                        let iy = (y * sh + i) as isize - pt as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let row = &chan[iy as usize * w..(iy as usize + 1) * w];
                        let out_row = &mut part[y * ow..(y + 1) * ow];
                        // Columns x whose input column x·sw + j − pl lies inside the row.
                        let x_hi = ((w + pl).saturating_sub(j)).div_ceil(sw).min(ow);
                        let x_lo = pl.saturating_sub(j).div_ceil(sw);
                        if x_lo >= x_hi {
                            continue;
                        }
                        if sw == 1 {
                            let base = x_lo + j - pl;
                            let src = &row[base..base + (x_hi - x_lo)];
                            for (acc, &v) in out_row[x_lo..x_hi].iter_mut().zip(src) {
                                *acc = acc.mac(wt, v);
                            }
                        } else {
                            for (x, acc) in out_row.iter_mut().enumerate().take(x_hi).skip(x_lo) {
                                *acc = acc.mac(wt, row[x * sw + j - pl]);
                            }
                        }
                    }
                }
            }
            for (acc, &v) in plane.iter_mut().zip(&part) {
                *acc = v.plus(*acc);
            }
        }
    }
    out
}

/// Grouped convolution without bias: the `channels` input channels and `out_channels` output
/// channels are cut into `groups` equal parts and part `g` of the output is [`conv2d`] of part
/// `g` of the input with its `[O / groups, C / groups, kh, kw]` weights (`weight` is
/// `[O, C / groups, kh, kw]`, ONNX's layout). `groups = 1` is [`conv2d`].
pub fn conv2d_grouped<T: Mac>(
    input: &[T],
    channels: usize,
    weight: &[T],
    out_channels: usize,
    groups: usize,
    win: Window,
) -> Vec<T> {
    if groups <= 1 {
        return conv2d(input, channels, weight, out_channels, win);
    }
    let (ci, co) = (channels / groups, out_channels / groups);
    let per_in = ci * win.in_hw[0] * win.in_hw[1];
    let per_weight = co * ci * win.kernel[0] * win.kernel[1];
    (0..groups)
        .flat_map(|g| {
            conv2d(&input[g * per_in..(g + 1) * per_in], ci, &weight[g * per_weight..(g + 1) * per_weight], co, win)
        })
        .collect()
}

/// The input index of each output element of a transpose of a row-major value of `shape` by
/// `perm` (output axis `i` is input axis `perm[i]`): `out[k] = in[indices[k]]`. `perm` must be
/// a permutation of the axes (the graph checks it).
pub fn permutation(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    let rank = shape.len();
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * shape[a + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let strides: Vec<usize> = perm.iter().map(|&a| in_strides[a]).collect();
    let total: usize = shape.iter().product();
    let mut indices = Vec::with_capacity(total);
    let mut counter = vec![0usize; rank];
    for _ in 0..total {
        indices.push(counter.iter().zip(&strides).map(|(c, s)| c * s).sum());
        for a in (0..rank).rev() {
            counter[a] += 1;
            if counter[a] < out_shape[a] {
                break;
            }
            counter[a] = 0;
        }
    }
    indices
}

/// Adds to `out` (a `[O, oh, ow]` convolution output) the contribution of the listed input
/// elements `(index into [C, H, W], value)`: [`conv2d`] for an input that is zero elsewhere, in
/// `O(nonzeros · O · kh · kw)` instead of `O(O · C · kh · kw · oh · ow)`.
pub fn conv2d_scatter<T: Mac>(
    nonzeros: &[(usize, T)],
    channels: usize,
    weight: &[T],
    out_channels: usize,
    win: Window,
    out: &mut [T],
) {
    let [h, w] = win.in_hw;
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let [pt, pl, _, _] = win.padding;
    let [oh, ow] = win.out_hw();
    // Output coordinate `o` along one axis that reads input coordinate `i` through kernel tap `k`.
    let tap = |i: usize, k: usize, pad: usize, stride: usize, n: usize| {
        let pos = (i + pad).checked_sub(k)?;
        (pos % stride == 0 && pos / stride < n).then_some(pos / stride)
    };
    for &(index, v) in nonzeros {
        let c = index / (h * w);
        let (iy, ix) = ((index / w) % h, index % w);
        if c >= channels {
            continue;
        }
        for i in 0..kh {
            let Some(y) = tap(iy, i, pt, sh, oh) else { continue };
            for j in 0..kw {
                let Some(x) = tap(ix, j, pl, sw, ow) else { continue };
                for o in 0..out_channels {
                    let at = (o * oh + y) * ow + x;
                    out[at] = out[at].mac(weight[((o * channels + c) * kh + i) * kw + j], v);
                }
            }
        }
    }
}

/// Adds to `out` the contribution of the listed inputs `(index, value)` to `W x` (`W` of
/// shape `[out, in]` with `inputs` columns): [`dense`] for an input that is zero elsewhere.
pub fn dense_scatter<T: Mac>(nonzeros: &[(usize, T)], weight: &[T], inputs: usize, out: &mut [T]) {
    for &(k, v) in nonzeros {
        for (o, acc) in out.iter_mut().enumerate() {
            *acc = acc.mac(weight[o * inputs + k], v);
        }
    }
}

/// The reduction length of one pass of MLAS's packed-B SGEMM (`MLAS_SGEMM_PACKED_STRIDEK`):
/// onnxruntime sums a `Gemm`/`MatMul` with a constant weight in blocks of this many inputs.
pub const GEMM_STRIDE_K: usize = 256;

/// Matrix–vector product `W x` with `W` of shape `[out, in]`: [`dense_onto`] from zero.
pub fn dense<T: Mac>(input: &[T], weight: &[T], outputs: usize) -> Vec<T> {
    dense_onto(input, weight, vec![T::default(); outputs])
}

/// `start + W x` with `W` of shape `[start.len(), in]` (a dense layer with bias `start`).
///
/// In float, in onnxruntime's order (MLAS's packed-B SGEMM, `Gemm` with `beta` = 1): the inputs
/// are cut into blocks of [`GEMM_STRIDE_K`]; each block's products are one fused multiply-add
/// chain from zero, in input order, and the blocks' sums are added to `start` one after the
/// other: `out[o] = ((start[o] + s₀) + s₁) + …`.
pub fn dense_onto<T: Mac>(input: &[T], weight: &[T], start: Vec<T>) -> Vec<T> {
    pulp::Arch::new().dispatch(Kernel::Dense { input, weight, start })
}

/// Rows of `W` whose chains [`dense_loops`] runs side by side (independent chains, for the
/// CPU's pipelines; each row's own order is unchanged).
const DENSE_ROWS: usize = 8;

#[inline(always)]
fn dense_loops<T: Mac>(input: &[T], weight: &[T], mut start: Vec<T>) -> Vec<T> {
    let n = input.len();
    if n == 0 {
        return start;
    }
    let outputs = start.len().min(weight.len() / n);
    let mut o = 0;
    while o < outputs {
        let rows = DENSE_ROWS.min(outputs - o);
        let block = &weight[o * n..(o + rows) * n];
        for k0 in (0..n).step_by(GEMM_STRIDE_K) {
            let k1 = (k0 + GEMM_STRIDE_K).min(n);
            let mut sums = [T::default(); DENSE_ROWS];
            if rows == DENSE_ROWS {
                for (k, &x) in input.iter().enumerate().take(k1).skip(k0) {
                    for (r, sum) in sums.iter_mut().enumerate() {
                        *sum = sum.mac(block[r * n + k], x);
                    }
                }
            } else {
                for (r, sum) in sums.iter_mut().enumerate().take(rows) {
                    let row = &block[r * n..(r + 1) * n];
                    *sum = row[k0..k1].iter().zip(&input[k0..k1]).fold(T::default(), |s, (&w, &x)| s.mac(w, x));
                }
            }
            for (acc, sum) in start[o..o + rows].iter_mut().zip(sums) {
                *acc = acc.plus(sum);
            }
        }
        o += rows;
    }
    start
}

/// Sum over each pooling window (padding counts as zero): `[C, oh, ow]`.
pub fn sum_pool<T: Mac>(input: &[T], channels: usize, win: Window) -> Vec<T> {
    reduce_pool(input, channels, win, T::default(), |acc, v| acc.plus(v))
}

/// Maximum over each pooling window under `greater` (padded positions are skipped).
pub fn max_pool<T: Copy + Default>(
    input: &[T],
    channels: usize,
    win: Window,
    greater: impl Fn(T, T) -> bool,
) -> Vec<T> {
    let [h, w] = win.in_hw;
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let [pt, pl, _, _] = win.padding;
    let [oh, ow] = win.out_hw();
    let mut out = Vec::with_capacity(channels * oh * ow);
    for c in 0..channels {
        for y in 0..oh {
            for x in 0..ow {
                let mut best: Option<T> = None;
                for i in 0..kh {
                    for j in 0..kw {
                        let (iy, ix) = ((y * sh + i) as isize - pt as isize, (x * sw + j) as isize - pl as isize);
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = input[(c * h + iy as usize) * w + ix as usize];
                        best = Some(match best {
                            Some(b) if !greater(v, b) => b,
                            _ => v,
                        });
                    }
                }
                out.push(best.unwrap_or_default());
            }
        }
    }
    out
}

/// The elements of each pooling window in a fixed order (row-major within the window), padded
/// positions omitted: `windows[k]` lists the input indices of output `k`. The two-party engine
/// uses this to run one comparison tree per window.
pub fn pool_windows(channels: usize, win: Window) -> Vec<Vec<usize>> {
    let [h, w] = win.in_hw;
    let [kh, kw] = win.kernel;
    let [sh, sw] = win.stride;
    let [pt, pl, _, _] = win.padding;
    let [oh, ow] = win.out_hw();
    let mut windows = Vec::with_capacity(channels * oh * ow);
    for c in 0..channels {
        for y in 0..oh {
            for x in 0..ow {
                let mut members = Vec::with_capacity(kh * kw);
                for i in 0..kh {
                    for j in 0..kw {
                        let (iy, ix) = ((y * sh + i) as isize - pt as isize, (x * sw + j) as isize - pl as isize);
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            members.push((c * h + iy as usize) * w + ix as usize);
                        }
                    }
                }
                windows.push(members);
            }
        }
    }
    windows
}

fn reduce_pool<T: Copy>(input: &[T], channels: usize, win: Window, zero: T, f: impl Fn(T, T) -> T) -> Vec<T> {
    pool_windows(channels, win)
        .into_iter()
        .map(|members| members.into_iter().fold(zero, |acc, k| f(acc, input[k])))
        .collect()
}

/// Per-channel sum over the spatial dimensions: `[C, H, W] → [C]`.
pub fn channel_sums<T: Mac>(input: &[T], channels: usize) -> Vec<T> {
    let per = input.len() / channels.max(1);
    input.chunks(per.max(1)).map(|c| c.iter().fold(T::default(), |acc, &v| acc.plus(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of a convolution, for checking the optimised loop.
    fn conv_reference(input: &[f32], c: usize, weight: &[f32], o: usize, win: Window) -> Vec<f32> {
        let [h, w] = win.in_hw;
        let [kh, kw] = win.kernel;
        let [oh, ow] = win.out_hw();
        let mut out = vec![0.0; o * oh * ow];
        for oc in 0..o {
            for y in 0..oh {
                for x in 0..ow {
                    let mut acc = 0.0;
                    for ic in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * win.stride[0] + i) as isize - win.padding[0] as isize;
                                let ix = (x * win.stride[1] + j) as isize - win.padding[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += weight[((oc * c + ic) * kh + i) * kw + j]
                                        * input[(ic * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                    out[(oc * oh + y) * ow + x] = acc;
                }
            }
        }
        out
    }

    #[test]
    fn conv_matches_reference_for_strides_and_paddings() {
        let (c, o, h, w) = (3, 4, 7, 6);
        let input: Vec<f32> = (0..c * h * w).map(|v| ((v * 37 % 11) as f32) - 5.0).collect();
        for (k, s, p) in
            [(3, 1, [1, 1, 1, 1]), (3, 2, [1, 1, 1, 1]), (1, 1, [0; 4]), (5, 2, [2, 1, 0, 2]), (2, 3, [0, 1, 1, 0])]
        {
            let weight: Vec<f32> = (0..o * c * k * k).map(|v| ((v * 13 % 7) as f32) - 3.0).collect();
            let win = Window { in_hw: [h, w], kernel: [k, k], stride: [s, s], padding: p };
            assert_eq!(
                conv2d(&input, c, &weight, o, win),
                conv_reference(&input, c, &weight, o, win),
                "k{k} s{s} p{p:?}"
            );
        }
    }

    #[test]
    fn scatter_kernels_equal_the_dense_ones_on_sparse_inputs() {
        let (c, o, h, w) = (3, 4, 7, 6);
        let mut input = vec![0.0f32; c * h * w];
        let nonzeros: Vec<(usize, f32)> = [(0, 1.5), (17, -2.0), (c * h * w - 1, 3.0), (50, 0.25)].to_vec();
        for &(k, v) in &nonzeros {
            input[k] = v;
        }
        for (k, s, p) in [(3, 1, [1, 1, 1, 1]), (3, 2, [1, 1, 1, 1]), (1, 1, [0; 4]), (5, 2, [2, 1, 0, 2])] {
            let weight: Vec<f32> = (0..o * c * k * k).map(|v| ((v * 13 % 7) as f32) - 3.0).collect();
            let win = Window { in_hw: [h, w], kernel: [k, k], stride: [s, s], padding: p };
            let mut out = vec![0.0; o * win.out_hw()[0] * win.out_hw()[1]];
            conv2d_scatter(&nonzeros, c, &weight, o, win, &mut out);
            assert_eq!(out, conv2d(&input, c, &weight, o, win), "k{k} s{s} p{p:?}");
        }
        let weight: Vec<f32> = (0..5 * input.len()).map(|v| ((v * 7 % 5) as f32) - 2.0).collect();
        let mut out = vec![0.0; 5];
        dense_scatter(&nonzeros, &weight, input.len(), &mut out);
        assert_eq!(out, dense(&input, &weight, 5));
    }

    #[test]
    fn grouped_conv_is_one_conv_per_group() {
        let (c, o, g, h, w) = (6, 4, 2, 5, 5);
        let input: Vec<f32> = (0..c * h * w).map(|v| ((v * 37 % 11) as f32) - 5.0).collect();
        let weight: Vec<f32> = (0..o * (c / g) * 9).map(|v| ((v * 13 % 7) as f32) - 3.0).collect();
        let win = Window { in_hw: [h, w], kernel: [3, 3], stride: [2, 1], padding: [1, 0, 1, 2] };
        // The same map as an ordinary convolution with block-diagonal weights.
        let mut full = vec![0.0f32; o * c * 9];
        for oc in 0..o {
            let group = oc / (o / g);
            for k in 0..(c / g) * 9 {
                full[(oc * c + group * (c / g)) * 9 + k] = weight[oc * (c / g) * 9 + k];
            }
        }
        assert_eq!(conv2d_grouped(&input, c, &weight, o, g, win), conv2d(&input, c, &full, o, win));
    }

    #[test]
    fn permutation_moves_axes() {
        // [2, 3] transposed: out[j, i] = in[i, j].
        assert_eq!(permutation(&[2, 3], &[1, 0]), [0, 3, 1, 4, 2, 5]);
        assert_eq!(permutation(&[2, 3, 4], &[0, 1, 2]), (0..24).collect::<Vec<_>>());
        // Channel shuffle: [g = 2, c = 3, hw = 1] → [3, 2, 1].
        assert_eq!(permutation(&[2, 3, 1], &[1, 0, 2]), [0, 3, 1, 4, 2, 5]);
        let p = permutation(&[2, 3, 4, 5], &[2, 0, 3, 1]);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..120).collect::<Vec<_>>());
        // out[a, b, c, d] = in[b, d, a, c]: input element (1, 0, 2, 3) is output (2, 1, 3, 0).
        assert_eq!(p[((2 * 2 + 1) * 5 + 3) * 3], (3 * 4 + 2) * 5 + 3);
    }

    #[test]
    fn pools_respect_padding() {
        let input: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let win = Window { in_hw: [4, 4], kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 1] };
        assert_eq!(max_pool(&input, 1, win, |a, b| a > b), vec![5.0, 7.0, 13.0, 15.0]);
        assert_eq!(sum_pool(&input, 1, win)[0], 0.0 + 1.0 + 4.0 + 5.0);
    }

    #[test]
    fn ring_conv_is_linear_in_shares() {
        let mask = (1u64 << 37) - 1;
        let x: Vec<u64> = (0..2 * 5 * 5).map(|v| (v as u64 * 0x9E37_79B9) & mask).collect();
        let share: Vec<u64> = (0..x.len()).map(|v| (v as u64).wrapping_mul(0xDEAD_BEEF_1234) & mask).collect();
        let other: Vec<u64> = x.iter().zip(&share).map(|(a, b)| a.wrapping_sub(*b) & mask).collect();
        let w: Vec<u64> = (0..3 * 2 * 9).map(|v| (v as u64 * 31) & mask).collect();
        let win = Window { in_hw: [5, 5], kernel: [3, 3], stride: [1, 1], padding: [1; 4] };
        let whole = conv2d(&x, 2, &w, 3, win);
        let a = conv2d(&share, 2, &w, 3, win);
        let b = conv2d(&other, 2, &w, 3, win);
        for ((z, a), b) in whole.iter().zip(a).zip(b) {
            assert_eq!(z & mask, a.wrapping_add(b) & mask);
        }
    }

    /// A float that is not a sum of the next `n` numbers' unfused products: the order is a test.
    fn noisy(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32).map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> 8) as f32 / 16_777_216.0 - 0.5).collect()
    }

    #[test]
    fn dense_multiply_adds_are_fused() {
        // a² − (1 + 2⁻¹¹) with a = 1 + 2⁻¹²: 2⁻²⁴ exactly when a² is not rounded first.
        let a = 1.0 + 2f32.powi(-12);
        assert_eq!(dense(&[1.0, a], &[-(1.0 + 2f32.powi(-11)), a], 1), [2f32.powi(-24)]);
        assert_eq!(-(1.0 + 2f32.powi(-11)) + a * a, 0.0, "unfused, the test would not see it");
    }

    #[test]
    fn dense_is_one_fma_chain_per_block_of_gemm_stride_k_added_to_the_bias() {
        for n in [1, 7, 255, 256, 257, 600] {
            let (x, w, bias) = (noisy(n, 1), noisy(3 * n, 2), noisy(3, 3));
            let got = dense_onto(&x, &w, bias.clone());
            for o in 0..3 {
                let row = &w[o * n..(o + 1) * n];
                let mut want = bias[o];
                for start in (0..n).step_by(GEMM_STRIDE_K) {
                    let end = (start + GEMM_STRIDE_K).min(n);
                    want += (start..end).fold(0f32, |s, k| row[k].mul_add(x[k], s));
                }
                assert_eq!(got[o].to_bits(), want.to_bits(), "n {n} output {o}");
            }
            let zero = dense(&x, &w, 3);
            let chained: Vec<f32> = (0..3).map(|o| dense_onto(&x, &w[o * n..(o + 1) * n], vec![0.0])[0]).collect();
            assert_eq!(zero, chained);
        }
    }

    #[test]
    fn conv_sums_each_channel_as_a_chain_then_the_channels_in_order() {
        let (c, o, h, w) = (3, 2, 6, 5);
        let input = noisy(c * h * w, 4);
        let weight = noisy(o * c * 9, 5);
        let win = Window { in_hw: [h, w], kernel: [3, 3], stride: [1, 2], padding: [1, 1, 0, 1] };
        let [oh, ow] = win.out_hw();
        let got = conv2d(&input, c, &weight, o, win);
        for (oc, y, x) in (0..o).flat_map(|oc| (0..oh).flat_map(move |y| (0..ow).map(move |x| (oc, y, x)))) {
            let mut want = 0f32;
            for ic in 0..c {
                let mut part = 0f32;
                for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                    let (iy, ix) = ((y + i) as isize - 1, (x * 2 + j) as isize - 1);
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        let v = input[(ic * h + iy as usize) * w + ix as usize];
                        part = weight[((oc * c + ic) * 3 + i) * 3 + j].mul_add(v, part);
                    }
                }
                want += part;
            }
            assert_eq!(got[(oc * oh + y) * ow + x].to_bits(), want.to_bits(), "({oc}, {y}, {x})");
        }
    }
}
