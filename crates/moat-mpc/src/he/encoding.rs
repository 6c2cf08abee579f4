//! Cheetah-style coefficient encoding of linear layers: which share values go into which
//! polynomial coefficients, which weight polynomials multiply them, and where the outputs land.
//!
//! Everything here is plaintext, integer-exact and independent of the encryption: a [`Packing`]
//! is a pure function of the layer's public [`LinearShape`] and the ring degree N (both parties
//! build the same plan), and [`Packing::evaluate_plain`] runs the plan with plain negacyclic
//! products over Z_2^ℓ, which the tests hold bit for bit to [`LinearShape::apply`] — the
//! `moat_nn::kernels` semantics that `QuantizedGraph::linear` uses.
//!
//! ## Convolution (Cheetah, Huang et al. 2022, §4.1)
//!
//! A block of the input of `Cb` channels × `Hb` rows × `Wb` columns becomes the polynomial
//! `x̂ = Σ x[c,i,j]·X^(c·Hb·Wb + i·Wb + j)` and the kernel of output channel `o` restricted to
//! those channels becomes `ŵ = Σ w[o,c,i,j]·X^(O − c·Hb·Wb − i·Wb − j)` with
//! `O = (Cb−1)·Hb·Wb + (h−1)·Wb + (w−1)`. The coefficient `O + y·Wb + x` of `x̂·ŵ mod X^N + 1`
//! is then exactly the correlation output at `(y, x)` for `y ≤ Hb − h`, `x ≤ Wb − w` (no other
//! pair of exponents sums to it, and the wrapped terms land below `O` since `Cb·Hb·Wb ≤ N`).
//! Products over the channel chunks are summed; spatial blocks overlap by `h − 1` rows and
//! `w − 1` columns; zero padding is part of the client's block (public zeros).
//!
//! **Stride.** A stride-`s` convolution is a stride-1 convolution of the space-to-depth
//! rearrangement of the padded input: the `s²` phases `x⁽ᵖ'ᵠ⁾[c,a,b] = x[c, s·a+p, s·b+q]` become
//! `C·s²` channels and the kernel splits the same way into `⌈h/s⌉ × ⌈w/s⌉` kernels. Only the
//! strided outputs are computed, so stride 2 costs no more response than stride 1. Phases
//! that no kernel tap reads (`p ≥ h` when the kernel is smaller than the stride) are left
//! out: a 1×1 stride-2 convolution (ResNet's downsampling) encrypts and multiplies one phase
//! of four, a quarter of the input.
//!
//! **Output-channel batching** (Cheetah's `M_w`). With `S = Cb·Hb·Wb`, the kernels of `Mw`
//! output channels go into one weight polynomial at offsets `0, S, 2S, …`: the product's
//! coefficient `m·S + O + y·Wb + x` is output channel `m`'s, as long as `Mw·S ≤ N` (a product
//! term `a + b` with `a < S` from another channel's kernel falls below `m·S + O` or above
//! `m·S + S + O`, and nothing wraps past `N`). Small feature maps (4×4 in ResNet-18's last stage)
//! thus fill a response polynomial instead of sending 16 values in it.
//!
//! **Depthwise** maps (average pooling, unfolded batch norm) keep the channel structure: the
//! kernel of channel `c` only has taps on `c`'s slots, and the channels batched in one weight
//! polynomial come from one chunk.
//!
//! The block shape `(Hb, Wb, Cb, Mw)` is chosen to minimise the predicted bytes (query
//! ciphertexts × their size + response ciphertexts × theirs), then the number of products.
//!
//! ## Dense (Cheetah's matrix–vector packing)
//!
//! The input is cut into blocks of `ni` values, `x̂ = Σ x_j X^j`, and the matrix into `no × ni`
//! tiles, `ŵ = Σ W[r,j]·X^(r·ni + ni − 1 − j)`; the coefficient `r·ni + ni − 1` of `x̂·ŵ` is
//! `Σ_j W[r,j]·x_j`. Products are summed over the input blocks; `ni·no ≤ N`. A global average
//! pool is the same map with a block-diagonal matrix ([`LinearShape::ChannelSum`]); tiles that
//! are zero by structure are skipped.

use moat_nn::FixedPoint;
use moat_nn::kernels::{self, Window};

use crate::error::{MpcError, Result};

/// The public geometry of a linear layer (without its weights), known to both parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearShape {
    /// Convolution without bias: input `[C, H, W]`, weights `[O, C, kh, kw]`.
    Conv2d {
        /// Input channels `C`.
        in_channels: usize,
        /// Output channels `O`.
        out_channels: usize,
        /// Window geometry (input size, kernel, stride, padding).
        window: Window,
    },
    /// Per-channel convolution: input `[C, H, W]`, weights `[C, kh, kw]` (average pool with
    /// every tap equal to the reciprocal, an unfolded batch norm as a 1×1 kernel).
    Depthwise {
        /// Channels `C`.
        channels: usize,
        /// Window geometry.
        window: Window,
    },
    /// Matrix–vector product: weights `[outputs, inputs]`.
    Dense {
        /// Input length.
        inputs: usize,
        /// Output length.
        outputs: usize,
    },
    /// Per-channel sums times one scalar (global average pool): input `[C, per_channel]`,
    /// weights `[1]`.
    ChannelSum {
        /// Channels.
        channels: usize,
        /// Elements per channel.
        per_channel: usize,
    },
}

impl LinearShape {
    /// Length of the input vector.
    pub fn input_len(&self) -> usize {
        match *self {
            LinearShape::Conv2d { in_channels: c, window, .. } | LinearShape::Depthwise { channels: c, window } => {
                c * window.in_hw[0] * window.in_hw[1]
            }
            LinearShape::Dense { inputs, .. } => inputs,
            LinearShape::ChannelSum { channels, per_channel } => channels * per_channel,
        }
    }

    /// Length of the output vector.
    pub fn output_len(&self) -> usize {
        match *self {
            LinearShape::Conv2d { out_channels: c, window, .. } | LinearShape::Depthwise { channels: c, window } => {
                let [oh, ow] = window.out_hw();
                c * oh * ow
            }
            LinearShape::Dense { outputs, .. } => outputs,
            LinearShape::ChannelSum { channels, .. } => channels,
        }
    }

    /// Number of ring weights the shape takes.
    pub fn weight_len(&self) -> usize {
        match *self {
            LinearShape::Conv2d { in_channels, out_channels, window } => {
                out_channels * in_channels * window.kernel[0] * window.kernel[1]
            }
            LinearShape::Depthwise { channels, window } => channels * window.kernel[0] * window.kernel[1],
            LinearShape::Dense { inputs, outputs } => inputs * outputs,
            LinearShape::ChannelSum { .. } => 1,
        }
    }

    /// The map itself on ring elements (the `moat_nn::kernels` semantics), reduced mod 2^ℓ.
    pub fn apply(&self, input: &[u64], weights: &[u64], fp: FixedPoint) -> Result<Vec<u64>> {
        self.check(input.len(), weights.len())?;
        let y = match *self {
            LinearShape::Conv2d { in_channels, out_channels, window } => {
                kernels::conv2d(input, in_channels, weights, out_channels, window)
            }
            LinearShape::Depthwise { channels, window } => {
                let per_in = window.in_hw[0] * window.in_hw[1];
                let taps = window.kernel[0] * window.kernel[1];
                (0..channels)
                    .flat_map(|c| {
                        kernels::conv2d(
                            &input[c * per_in..(c + 1) * per_in],
                            1,
                            &weights[c * taps..(c + 1) * taps],
                            1,
                            window,
                        )
                    })
                    .collect()
            }
            LinearShape::Dense { outputs, .. } => kernels::dense(input, weights, outputs),
            LinearShape::ChannelSum { channels, .. } => {
                kernels::channel_sums(input, channels).into_iter().map(|v| v.wrapping_mul(weights[0])).collect()
            }
        };
        Ok(y.into_iter().map(|v| fp.reduce(v)).collect())
    }

    /// Checks input and weight lengths against the shape.
    pub fn check(&self, input_len: usize, weight_len: usize) -> Result<()> {
        if input_len != self.input_len() {
            return Err(MpcError::invalid(
                "LinearShape",
                format!("input of {input_len} values, the layer takes {}", self.input_len()),
            ));
        }
        if weight_len != self.weight_len() {
            return Err(MpcError::invalid(
                "LinearShape",
                format!("{weight_len} weights, the layer takes {}", self.weight_len()),
            ));
        }
        Ok(())
    }
}

/// Sizes the plan search weighs: ring degree and the bytes of one query and one response
/// ciphertext (without its per-output coefficients, which every plan sends equally).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackingCosts {
    /// Ring degree N.
    pub degree: usize,
    /// Bytes of one query ciphertext.
    pub query_bytes: usize,
    /// Bytes of one response ciphertext apart from its output coefficients.
    pub response_bytes: usize,
}

/// Identifies one weight polynomial of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightKey {
    /// Output channels `first..first + count` (one per `S`-coefficient slot) over the channel
    /// chunk `chunk`; for depthwise maps each output channel only has taps on its own channel.
    Conv { first: usize, count: usize, chunk: usize },
    /// Tile (input block, output block).
    Dense { ib: usize, ob: usize },
}

/// One response polynomial: the products summed into it and the coefficients it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OutputPoly {
    /// `(input polynomial, index into the group's weights)`.
    pub terms: Vec<(usize, usize)>,
    /// `(coefficient, output index)`.
    pub coefficients: Vec<(u32, u32)>,
}

/// Output polynomials sharing one set of weight polynomials (computed once per group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub weights: Vec<WeightKey>,
    pub outputs: Vec<OutputPoly>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConvLayout {
    channels: usize,
    in_hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    /// Kernel size after space-to-depth.
    ks: [usize; 2],
    /// Transformed channels `C·ph·pw` ([`ConvLayout::phases`]).
    ct: usize,
    /// Block: channels, rows, columns; output channels per response polynomial.
    cb: usize,
    hb: usize,
    wb: usize,
    mw: usize,
    /// Output rows / columns per block.
    ob: [usize; 2],
    /// Spatial blocks.
    nb: [usize; 2],
    out_hw: [usize; 2],
    out_channels: usize,
    depthwise: bool,
}

impl ConvLayout {
    fn chunks(&self) -> usize {
        self.ct.div_ceil(self.cb)
    }

    fn input_poly(&self, chunk: usize, bi: usize, bj: usize) -> usize {
        (chunk * self.nb[0] + bi) * self.nb[1] + bj
    }

    /// `S = Cb·Hb·Wb`, the coefficients of an input block and the stride between the output
    /// channels batched in one polynomial.
    fn span(&self) -> usize {
        self.cb * self.hb * self.wb
    }

    /// Output-channel blocks `(first, count, chunk)`, one weight polynomial per chunk each
    /// (depthwise: per the chunk holding the channels).
    fn channel_blocks(&self) -> Vec<(usize, usize, usize)> {
        if self.depthwise {
            let [ph, pw] = self.phases();
            let per_chunk = self.cb / (ph * pw);
            (0..self.chunks())
                .flat_map(|chunk| {
                    let (lo, hi) = (chunk * per_chunk, ((chunk + 1) * per_chunk).min(self.channels));
                    (lo..hi).step_by(self.mw).map(move |first| (first, self.mw.min(hi - first), chunk))
                })
                .collect()
        } else {
            (0..self.out_channels)
                .step_by(self.mw)
                .map(|first| (first, self.mw.min(self.out_channels - first), 0))
                .collect()
        }
    }

    /// `O`, the exponent of the first output.
    fn offset(&self) -> usize {
        (self.cb - 1) * self.hb * self.wb + (self.ks[0] - 1) * self.wb + (self.ks[1] - 1)
    }

    /// The space-to-depth phases that hold a kernel tap, per dimension: `min(stride, kernel)`
    /// (a 1×1 kernel of stride 2 reads phase (0, 0) only).
    fn phases(&self) -> [usize; 2] {
        phases(self.stride, self.kernel)
    }

    /// `(input channel, phase row, phase column)` of transformed channel `ct`.
    fn phase_of(&self, ct: usize) -> (usize, usize, usize) {
        let [ph, pw] = self.phases();
        let (c, phase) = (ct / (ph * pw), ct % (ph * pw));
        (c, phase / pw, phase % pw)
    }

    /// Input index of transformed channel `ct`, block-relative row `r` and column `col` of
    /// block `(bi, bj)`, or `None` for padding.
    fn source(&self, ct: usize, bi: usize, bj: usize, r: usize, col: usize) -> Option<usize> {
        let [sh, sw] = self.stride;
        let (c, pi, pj) = self.phase_of(ct);
        let yp = (bi * self.ob[0] + r) * sh + pi;
        let xp = (bj * self.ob[1] + col) * sw + pj;
        let y = yp.checked_sub(self.pad[0]).filter(|&y| y < self.in_hw[0])?;
        let x = xp.checked_sub(self.pad[1]).filter(|&x| x < self.in_hw[1])?;
        Some((c * self.in_hw[0] + y) * self.in_hw[1] + x)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DenseLayout {
    inputs: usize,
    outputs: usize,
    /// Input and output block sizes.
    ni: usize,
    no: usize,
    /// `Some(per_channel)` for a channel sum.
    channel_sum: Option<usize>,
}

impl DenseLayout {
    /// Whether tile `(ib, ob)` can be nonzero.
    fn tile_used(&self, ib: usize, ob: usize) -> bool {
        match self.channel_sum {
            None => true,
            Some(per) => {
                let (in_lo, in_hi) = (ib * self.ni, ((ib + 1) * self.ni).min(self.inputs));
                let (out_lo, out_hi) = (ob * self.no, ((ob + 1) * self.no).min(self.outputs));
                in_lo < out_hi * per && out_lo * per < in_hi
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Conv(ConvLayout),
    Dense(DenseLayout),
}

/// How one linear layer maps onto polynomial products (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    shape: LinearShape,
    degree: usize,
    layout: Layout,
    /// Per input polynomial: `(coefficient, input index)`; other coefficients are zero.
    inputs: Vec<Vec<(u32, u32)>>,
    groups: Vec<Group>,
}

impl Packing {
    /// The cheapest plan for `shape` under `costs` (deterministic: both parties get the same).
    pub fn new(shape: LinearShape, costs: &PackingCosts) -> Result<Self> {
        let n = costs.degree;
        if !n.is_power_of_two() || n < 8 || n > u32::MAX as usize {
            return Err(MpcError::invalid("Packing::new", format!("degree {n} is not a power of two ≥ 8")));
        }
        let layout = match shape {
            LinearShape::Conv2d { in_channels, out_channels, window } => {
                Layout::Conv(conv_layout(in_channels, out_channels, window, false, costs)?)
            }
            LinearShape::Depthwise { channels, window } => {
                Layout::Conv(conv_layout(channels, channels, window, true, costs)?)
            }
            LinearShape::Dense { inputs, outputs } => Layout::Dense(dense_layout(inputs, outputs, None, costs)?),
            LinearShape::ChannelSum { channels, per_channel } => {
                Layout::Dense(dense_layout(channels * per_channel, channels, Some(per_channel), costs)?)
            }
        };
        let (inputs, groups) = match layout {
            Layout::Conv(l) => conv_polys(&l),
            Layout::Dense(l) => dense_polys(&l),
        };
        Ok(Self { shape, degree: n, layout, inputs, groups })
    }

    /// The layer geometry.
    pub fn shape(&self) -> LinearShape {
        self.shape
    }

    /// Ring degree N.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Ciphertexts the client sends.
    pub fn input_polys(&self) -> usize {
        self.inputs.len()
    }

    /// Ciphertexts the server returns.
    pub fn output_polys(&self) -> usize {
        self.groups.iter().map(|g| g.outputs.len()).sum()
    }

    /// Weight polynomials the server encodes (once per layer evaluation).
    pub fn weight_polys(&self) -> usize {
        self.groups.iter().map(|g| g.weights.len()).sum()
    }

    /// Ciphertext × plaintext products the server computes.
    pub fn products(&self) -> usize {
        self.groups.iter().flat_map(|g| &g.outputs).map(|o| o.terms.len()).sum()
    }

    /// For convolutions, the block `(channels, rows, columns)` after space-to-depth and the
    /// output channels batched per response polynomial.
    pub fn conv_block(&self) -> Option<[usize; 4]> {
        match self.layout {
            Layout::Conv(l) => Some([l.cb, l.hb, l.wb, l.mw]),
            Layout::Dense(_) => None,
        }
    }

    /// For dense maps, the tile `(inputs, outputs)`.
    pub fn dense_tile(&self) -> Option<[usize; 2]> {
        match self.layout {
            Layout::Dense(l) => Some([l.ni, l.no]),
            Layout::Conv(_) => None,
        }
    }

    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The input polynomials' coefficients (mod 2^ℓ) for an input (share) vector.
    pub fn encode_input(&self, input: &[u64], fp: FixedPoint) -> Result<Vec<Vec<u64>>> {
        if input.len() != self.shape.input_len() {
            return Err(MpcError::invalid(
                "Packing::encode_input",
                format!("{} values, the layer takes {}", input.len(), self.shape.input_len()),
            ));
        }
        Ok(self
            .inputs
            .iter()
            .map(|sources| {
                let mut poly = vec![0u64; self.degree];
                for &(coef, idx) in sources {
                    poly[coef as usize] = fp.reduce(input[idx as usize]);
                }
                poly
            })
            .collect())
    }

    /// The coefficients of one weight polynomial, centred (`|w| < 2^(ℓ−1)`).
    pub(crate) fn weight_poly(&self, key: WeightKey, weights: &[u64], fp: FixedPoint) -> Vec<i64> {
        let mut poly = vec![0i64; self.degree];
        match (self.layout, key) {
            (Layout::Conv(l), WeightKey::Conv { first, count, chunk }) => {
                for m in 0..count {
                    let o = first + m;
                    conv_weight(&l, chunk, m * l.span(), weights, fp, &mut poly, |c, i, j| {
                        if l.depthwise {
                            (c == o).then(|| (c * l.kernel[0] + i) * l.kernel[1] + j)
                        } else {
                            Some(((o * l.channels + c) * l.kernel[0] + i) * l.kernel[1] + j)
                        }
                    });
                }
            }
            (Layout::Dense(l), WeightKey::Dense { ib, ob }) => {
                for r in 0..l.no {
                    let row = ob * l.no + r;
                    if row >= l.outputs {
                        break;
                    }
                    for j in 0..l.ni {
                        let col = ib * l.ni + j;
                        if col >= l.inputs {
                            break;
                        }
                        let w = match l.channel_sum {
                            None => weights[row * l.inputs + col],
                            Some(per) if col / per == row => weights[0],
                            Some(_) => 0,
                        };
                        poly[r * l.ni + l.ni - 1 - j] = fp.to_signed(w);
                    }
                }
            }
            // Keys are only ever built by the plan for its own layout.
            _ => {}
        }
        poly
    }

    /// Runs the plan in the clear: plain negacyclic products over Z_2^ℓ, summed and decoded.
    /// Equal to [`LinearShape::apply`] bit for bit (the tests check it); O(N · nonzero weights)
    /// per product.
    pub fn evaluate_plain(&self, input: &[u64], weights: &[u64], fp: FixedPoint) -> Result<Vec<u64>> {
        self.shape.check(input.len(), weights.len())?;
        let polys = self.encode_input(input, fp)?;
        let mut out = vec![0u64; self.shape.output_len()];
        for group in &self.groups {
            let wpolys: Vec<Vec<i64>> = group.weights.iter().map(|&k| self.weight_poly(k, weights, fp)).collect();
            for output in &group.outputs {
                let mut acc = vec![0u64; self.degree];
                for &(input, w) in &output.terms {
                    negacyclic_mac(&mut acc, &polys[input], &wpolys[w]);
                }
                for &(coef, idx) in &output.coefficients {
                    out[idx as usize] = fp.reduce(acc[coef as usize]);
                }
            }
        }
        Ok(out)
    }
}

/// `acc += a · w mod (X^N + 1)` with wrapping `u64` coefficients.
fn negacyclic_mac(acc: &mut [u64], a: &[u64], w: &[i64]) {
    let n = acc.len();
    for (j, &wj) in w.iter().enumerate() {
        if wj == 0 {
            continue;
        }
        let wj = wj as u64;
        for (i, &ai) in a.iter().enumerate() {
            let p = ai.wrapping_mul(wj);
            let k = i + j;
            if k < n {
                acc[k] = acc[k].wrapping_add(p);
            } else {
                acc[k - n] = acc[k - n].wrapping_sub(p);
            }
        }
    }
}

/// Fills the kernel of one output channel over channel chunk `chunk`, shifted by `shift`
/// coefficients; `index(c, i, j)` locates the weight of input channel `c` at kernel tap
/// `(i, j)` (`None`: a structural zero).
fn conv_weight(
    l: &ConvLayout,
    chunk: usize,
    shift: usize,
    weights: &[u64],
    fp: FixedPoint,
    poly: &mut [i64],
    index: impl Fn(usize, usize, usize) -> Option<usize>,
) {
    let [sh, sw] = l.stride;
    let offset = l.offset() + shift;
    for cl in 0..l.cb {
        let ct = chunk * l.cb + cl;
        if ct >= l.ct {
            break;
        }
        let (c, pi, pj) = l.phase_of(ct);
        for i2 in 0..l.ks[0] {
            let i = i2 * sh + pi;
            if i >= l.kernel[0] {
                continue;
            }
            for j2 in 0..l.ks[1] {
                let j = j2 * sw + pj;
                if j >= l.kernel[1] {
                    continue;
                }
                if let Some(&w) = index(c, i, j).and_then(|at| weights.get(at)) {
                    poly[offset - ((cl * l.hb + i2) * l.wb + j2)] = fp.to_signed(w);
                }
            }
        }
    }
}

/// `min(stride, kernel)` per dimension: see [`ConvLayout::phases`].
fn phases(stride: [usize; 2], kernel: [usize; 2]) -> [usize; 2] {
    [stride[0].min(kernel[0]), stride[1].min(kernel[1])]
}

fn conv_layout(
    channels: usize,
    out_channels: usize,
    window: Window,
    depthwise: bool,
    costs: &PackingCosts,
) -> Result<ConvLayout> {
    const CTX: &str = "Packing (convolution)";
    let n = costs.degree;
    let [h, w] = window.in_hw;
    let [kh, kw] = window.kernel;
    let [sh, sw] = window.stride;
    let [pt, pl, pb, pr] = window.padding;
    let (hp, wp) = (h + pt + pb, w + pl + pr);
    if channels == 0 || out_channels == 0 || kh == 0 || kw == 0 || sh == 0 || sw == 0 || kh > hp || kw > wp {
        return Err(MpcError::invalid(CTX, format!("degenerate geometry {window:?} with {channels} channels")));
    }
    let out_hw = window.out_hw();
    let ks = [kh.div_ceil(sh), kw.div_ceil(sw)];
    let [ph, pw] = phases(window.stride, window.kernel);
    let u = ph * pw;
    let ct = channels * u;
    // (bytes, products, Hb, Wb, Mw): the search's order.
    type Key = (usize, usize, usize, usize, usize);
    let mut best: Option<(Key, ConvLayout)> = None;
    for hb in ks[0]..=out_hw[0] + ks[0] - 1 {
        for wb in ks[1]..=out_hw[1] + ks[1] - 1 {
            let area = hb * wb;
            if area > n {
                break;
            }
            let ob = [hb - ks[0] + 1, wb - ks[1] + 1];
            let nb = [out_hw[0].div_ceil(ob[0]), out_hw[1].div_ceil(ob[1])];
            let spatial = nb[0] * nb[1];
            // Output channels batched per polynomial: Mw·Cb·Hb·Wb ≤ N.
            for mw in 1..=out_channels.min(n / area) {
                let cap = n / (area * mw);
                let cb = if depthwise { (cap / u) * u } else { cap }.min(ct);
                if cb == 0 || (depthwise && mw > cb / u) {
                    break;
                }
                let chunks = ct.div_ceil(cb);
                let blocks = if depthwise {
                    let per_chunk = cb / u;
                    (0..chunks).map(|k| (((k + 1) * per_chunk).min(channels) - k * per_chunk).div_ceil(mw)).sum()
                } else {
                    out_channels.div_ceil(mw)
                };
                let (n_in, n_out) = (chunks * spatial, blocks * spatial);
                let products = if depthwise { n_out } else { n_out * chunks };
                let bytes = n_in * costs.query_bytes + n_out * costs.response_bytes;
                let key = (bytes, products, hb, wb, mw);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    let layout = ConvLayout {
                        channels,
                        in_hw: window.in_hw,
                        kernel: window.kernel,
                        stride: window.stride,
                        pad: [pt, pl],
                        ks,
                        ct,
                        cb,
                        hb,
                        wb,
                        mw,
                        ob,
                        nb,
                        out_hw,
                        out_channels,
                        depthwise,
                    };
                    best = Some((key, layout));
                }
            }
        }
    }
    best.map(|(_, l)| l).ok_or_else(|| MpcError::invalid(CTX, format!("kernel {ks:?} does not fit N = {n}")))
}

fn conv_polys(l: &ConvLayout) -> (Vec<Vec<(u32, u32)>>, Vec<Group>) {
    let chunks = l.chunks();
    let mut inputs = Vec::with_capacity(chunks * l.nb[0] * l.nb[1]);
    for chunk in 0..chunks {
        for bi in 0..l.nb[0] {
            for bj in 0..l.nb[1] {
                let mut sources = Vec::new();
                for cl in 0..l.cb {
                    let ct = chunk * l.cb + cl;
                    if ct >= l.ct {
                        break;
                    }
                    for r in 0..l.hb {
                        for col in 0..l.wb {
                            if let Some(idx) = l.source(ct, bi, bj, r, col) {
                                sources.push((((cl * l.hb + r) * l.wb + col) as u32, idx as u32));
                            }
                        }
                    }
                }
                inputs.push(sources);
            }
        }
    }
    let groups =
        l.channel_blocks().into_iter().map(|(first, count, chunk)| conv_group(l, first, count, chunk)).collect();
    (inputs, groups)
}

/// The weight polynomials and output polynomials of output channels `first..first + count`.
fn conv_group(l: &ConvLayout, first: usize, count: usize, depthwise_chunk: usize) -> Group {
    let chunks: Vec<usize> = if l.depthwise { vec![depthwise_chunk] } else { (0..l.chunks()).collect() };
    let weights = chunks.iter().map(|&chunk| WeightKey::Conv { first, count, chunk }).collect();
    let (offset, span) = (l.offset(), l.span());
    let [oh, ow] = l.out_hw;
    let mut outputs = Vec::with_capacity(l.nb[0] * l.nb[1]);
    for bi in 0..l.nb[0] {
        for bj in 0..l.nb[1] {
            let terms = chunks.iter().enumerate().map(|(w, &chunk)| (l.input_poly(chunk, bi, bj), w)).collect();
            let mut coefficients = Vec::with_capacity(count * l.ob[0] * l.ob[1]);
            for m in 0..count {
                let o = first + m;
                for yl in 0..l.ob[0] {
                    let y = bi * l.ob[0] + yl;
                    if y >= oh {
                        break;
                    }
                    for xl in 0..l.ob[1] {
                        let x = bj * l.ob[1] + xl;
                        if x >= ow {
                            break;
                        }
                        let coef = m * span + offset + yl * l.wb + xl;
                        coefficients.push((coef as u32, ((o * oh + y) * ow + x) as u32));
                    }
                }
            }
            outputs.push(OutputPoly { terms, coefficients });
        }
    }
    Group { weights, outputs }
}

fn dense_layout(
    inputs: usize,
    outputs: usize,
    channel_sum: Option<usize>,
    costs: &PackingCosts,
) -> Result<DenseLayout> {
    let n = costs.degree;
    if inputs == 0 || outputs == 0 {
        return Err(MpcError::invalid("Packing (dense)", format!("degenerate shape {outputs}×{inputs}")));
    }
    let mut best: Option<((usize, usize, usize), DenseLayout)> = None;
    for ni in 1..=inputs.min(n) {
        let no = outputs.min(n / ni);
        let layout = DenseLayout { inputs, outputs, ni, no, channel_sum };
        let (n_in, n_out) = (inputs.div_ceil(ni), outputs.div_ceil(no));
        let products = if channel_sum.is_some() {
            (0..n_out).map(|ob| (0..n_in).filter(|&ib| layout.tile_used(ib, ob)).count()).sum()
        } else {
            n_in * n_out
        };
        let key = (n_in * costs.query_bytes + n_out * costs.response_bytes, products, ni);
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, layout));
        }
    }
    best.map(|(_, l)| l).ok_or_else(|| MpcError::invalid("Packing (dense)", "no tiling"))
}

fn dense_polys(l: &DenseLayout) -> (Vec<Vec<(u32, u32)>>, Vec<Group>) {
    let n_in = l.inputs.div_ceil(l.ni);
    let inputs = (0..n_in)
        .map(|ib| (0..l.ni).filter(|j| ib * l.ni + j < l.inputs).map(|j| (j as u32, (ib * l.ni + j) as u32)).collect())
        .collect();
    let groups = (0..l.outputs.div_ceil(l.no))
        .map(|ob| {
            let tiles: Vec<usize> = (0..n_in).filter(|&ib| l.tile_used(ib, ob)).collect();
            let coefficients = (0..l.no)
                .filter(|r| ob * l.no + r < l.outputs)
                .map(|r| ((r * l.ni + l.ni - 1) as u32, (ob * l.no + r) as u32))
                .collect();
            Group {
                weights: tiles.iter().map(|&ib| WeightKey::Dense { ib, ob }).collect(),
                outputs: vec![OutputPoly {
                    terms: tiles.iter().enumerate().map(|(w, &ib)| (ib, w)).collect(),
                    coefficients,
                }],
            }
        })
        .collect();
    (inputs, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn costs(degree: usize) -> PackingCosts {
        // The ratio of the default parameters (55.8 KB query, 25 KB response at N = 4096).
        PackingCosts { degree, query_bytes: degree * 109 / 8 + 32, response_bytes: degree * 49 / 8 }
    }

    /// Random ring values with the extremes (0, 1, 2^ℓ − 1, ±2^(f+4)) mixed in.
    fn ring_values(fp: FixedPoint, n: usize, rng: &mut ChaCha20Rng) -> Vec<u64> {
        let extremes = [0, 1, fp.mask(), fp.from_signed(1 << 16), fp.from_signed(-(1 << 16)), 1 << 36];
        (0..n).map(|i| if i % 7 == 0 { extremes[(i / 7) % extremes.len()] } else { fp.reduce(rng.random()) }).collect()
    }

    fn check(shape: LinearShape, degree: usize, seed: u64) -> Result<Packing> {
        let fp = FixedPoint::default();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let plan = Packing::new(shape, &costs(degree))?;
        let x = ring_values(fp, shape.input_len(), &mut rng);
        let w = ring_values(fp, shape.weight_len(), &mut rng);
        assert_eq!(plan.evaluate_plain(&x, &w, fp)?, shape.apply(&x, &w, fp)?, "{shape:?} N={degree}");
        // Every output lands in exactly one coefficient of one output polynomial.
        let mut seen = vec![0u32; shape.output_len()];
        for o in plan.groups().iter().flat_map(|g| &g.outputs) {
            for &(coef, idx) in &o.coefficients {
                assert!((coef as usize) < degree);
                seen[idx as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{shape:?}: outputs not covered exactly once");
        Ok(plan)
    }

    fn window(hw: [usize; 2], k: [usize; 2], s: [usize; 2], p: [usize; 4]) -> Window {
        Window { in_hw: hw, kernel: k, stride: s, padding: p }
    }

    #[test]
    fn conv_plans_match_the_kernel() -> Result<()> {
        let cases = [
            // (C, O, H, W, kernel, stride, padding)
            (3, 4, 8, 8, [3, 3], [1, 1], [1, 1, 1, 1]),
            (3, 4, 9, 7, [3, 3], [2, 2], [1, 1, 1, 1]),
            (5, 2, 6, 6, [1, 1], [1, 1], [0, 0, 0, 0]),
            (2, 3, 9, 9, [5, 5], [1, 1], [2, 2, 2, 2]),
            (2, 3, 9, 8, [5, 5], [2, 2], [2, 1, 0, 2]),
            (3, 2, 11, 11, [7, 7], [2, 2], [3, 3, 3, 3]),
            (2, 2, 7, 10, [2, 3], [3, 2], [0, 1, 1, 0]),
            (4, 3, 6, 6, [1, 1], [2, 2], [0, 0, 0, 0]),
        ];
        for (i, &(c, o, h, w, k, s, p)) in cases.iter().enumerate() {
            let shape = LinearShape::Conv2d { in_channels: c, out_channels: o, window: window([h, w], k, s, p) };
            for degree in [64, 256, 1024] {
                if Packing::new(shape, &costs(degree)).is_ok() {
                    check(shape, degree, i as u64)?;
                }
            }
        }
        Ok(())
    }

    /// A 1×1 stride-2 convolution costs what the 1×1 stride-1 one on the even pixels costs:
    /// the three phases without a kernel tap are not encrypted.
    #[test]
    fn phases_without_taps_are_left_out() -> Result<()> {
        let strided =
            LinearShape::Conv2d { in_channels: 16, out_channels: 8, window: window([16, 16], [1, 1], [2, 2], [0; 4]) };
        let even =
            LinearShape::Conv2d { in_channels: 16, out_channels: 8, window: window([8, 8], [1, 1], [1, 1], [0; 4]) };
        let (a, b) = (check(strided, 1024, 3)?, check(even, 1024, 4)?);
        assert_eq!((a.input_polys(), a.products()), (b.input_polys(), b.products()));
        Ok(())
    }

    #[test]
    fn conv_blocks_split_channels_and_space() -> Result<()> {
        // 12×12 with 6 channels in N = 128: both channel chunks and spatial blocks are needed.
        let shape =
            LinearShape::Conv2d { in_channels: 6, out_channels: 3, window: window([12, 12], [3, 3], [1, 1], [1; 4]) };
        let plan = check(shape, 128, 5)?;
        let [cb, hb, wb, _] = plan.conv_block().ok_or_else(|| MpcError::invalid("test", "not a conv plan"))?;
        assert!(cb * hb * wb <= 128);
        assert!(plan.input_polys() > 6usize.div_ceil(cb), "expected several spatial blocks");
        Ok(())
    }

    #[test]
    fn small_images_batch_output_channels() -> Result<()> {
        // 4×4 images: a response per output channel would carry 16 values; batching Mw output
        // channels per polynomial (Mw·Cb·Hb·Wb ≤ N) cuts the responses.
        let shape =
            LinearShape::Conv2d { in_channels: 8, out_channels: 8, window: window([4, 4], [3, 3], [1, 1], [1; 4]) };
        let plan = check(shape, 256, 6)?;
        let [cb, hb, wb, mw] = plan.conv_block().ok_or_else(|| MpcError::invalid("test", "not a conv plan"))?;
        assert!(mw > 1 && mw * cb * hb * wb <= 256, "{:?}", plan.conv_block());
        assert!(plan.output_polys() < 8);
        let shape = LinearShape::Depthwise { channels: 12, window: window([4, 4], [2, 2], [2, 2], [0; 4]) };
        let plan = check(shape, 256, 7)?;
        assert!(plan.conv_block().is_some_and(|b| b[3] > 1), "{:?}", plan.conv_block());
        Ok(())
    }

    #[test]
    fn depthwise_plans_match_pooling_and_affine() -> Result<()> {
        let cases = [
            LinearShape::Depthwise { channels: 5, window: window([8, 8], [2, 2], [2, 2], [0; 4]) },
            LinearShape::Depthwise { channels: 3, window: window([9, 9], [3, 3], [2, 2], [1; 4]) },
            LinearShape::Depthwise { channels: 4, window: window([1, 50], [1, 1], [1, 1], [0; 4]) },
            LinearShape::Depthwise { channels: 2, window: window([7, 7], [3, 3], [1, 1], [1, 0, 1, 0]) },
        ];
        for (i, shape) in cases.into_iter().enumerate() {
            for degree in [64, 256] {
                check(shape, degree, 10 + i as u64)?;
            }
        }
        Ok(())
    }

    #[test]
    fn dense_and_channel_sum_plans_match() -> Result<()> {
        for (i, (inputs, outputs)) in [(10, 3), (100, 7), (300, 40), (5, 200), (1, 1)].into_iter().enumerate() {
            check(LinearShape::Dense { inputs, outputs }, 64, 20 + i as u64)?;
            check(LinearShape::Dense { inputs, outputs }, 256, 30 + i as u64)?;
        }
        for (i, (channels, per)) in [(8, 16), (3, 1), (16, 49)].into_iter().enumerate() {
            let plan = check(LinearShape::ChannelSum { channels, per_channel: per }, 128, 40 + i as u64)?;
            // Structural zeros are skipped: fewer products than a dense tiling.
            let [ni, no] = plan.dense_tile().ok_or_else(|| MpcError::invalid("test", "not dense"))?;
            assert!(plan.products() <= (channels * per).div_ceil(ni) * channels.div_ceil(no));
        }
        Ok(())
    }

    #[test]
    fn plans_for_the_benchmark_layers_are_cheetah_like() -> Result<()> {
        // 3×3 conv 32×32×64 → 64, N = 4096: whole-image blocks of 3 channels.
        let shape =
            LinearShape::Conv2d { in_channels: 64, out_channels: 64, window: window([32, 32], [3, 3], [1, 1], [1; 4]) };
        let plan = Packing::new(shape, &costs(4096))?;
        assert_eq!(plan.conv_block(), Some([3, 34, 34, 1]));
        assert_eq!((plan.input_polys(), plan.output_polys()), (22, 64));
        // FC 2048 → 1000.
        let plan = Packing::new(LinearShape::Dense { inputs: 2048, outputs: 1000 }, &costs(4096))?;
        assert!(plan.input_polys() + plan.output_polys() <= 50, "{:?}", plan.dense_tile());
        Ok(())
    }

    #[test]
    fn degenerate_shapes_are_errors() {
        let c = costs(64);
        assert!(Packing::new(LinearShape::Dense { inputs: 0, outputs: 3 }, &c).is_err());
        let big =
            LinearShape::Conv2d { in_channels: 1, out_channels: 1, window: window([20, 20], [9, 9], [1, 1], [0; 4]) };
        assert!(Packing::new(big, &c).is_err(), "a 9×9 kernel does not fit N = 64");
        assert!(
            Packing::new(LinearShape::Dense { inputs: 3, outputs: 3 }, &PackingCosts { degree: 100, ..c }).is_err()
        );
        let shape = LinearShape::Dense { inputs: 3, outputs: 2 };
        assert!(shape.apply(&[1, 2], &[0; 6], FixedPoint::default()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_conv_geometries_match(
            c in 1usize..4, o in 1usize..4, h in 1usize..10, w in 1usize..10,
            kh in 1usize..5, kw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
            p in proptest::array::uniform4(0usize..3), depthwise in any::<bool>(),
            log_n in 6u32..9, seed in any::<u64>(),
        ) {
            let win = window([h, w], [kh, kw], [sh, sw], p);
            prop_assume!(kh <= h + p[0] + p[2] && kw <= w + p[1] + p[3]);
            let shape = if depthwise {
                LinearShape::Depthwise { channels: c, window: win }
            } else {
                LinearShape::Conv2d { in_channels: c, out_channels: o, window: win }
            };
            let degree = 1usize << log_n;
            prop_assume!(Packing::new(shape, &costs(degree)).is_ok());
            prop_assert!(check(shape, degree, seed).is_ok());
        }
    }
}
