//! The float and fixed-point executors over one [`Graph`].
//!
//! * [`FloatExecutor`] is the reference the model was trained as.
//! * [`QuantizedGraph`] is the plaintext fixed-point execution: the weights quantised to f bits,
//!   every value a ring element, and a truncation after each multiplication — exactly what the
//!   secure protocol computes (its linear steps are exposed in [`QuantizedGraph::linear`] so the
//!   two-party engine applies the same map to secret shares).
//!
//! Both take one sample in the graph's per-sample input shape.

use rayon::prelude::*;

use crate::approx::{self, RingHard, RingSpline, RingSwish};
use crate::error::{NnError, Result};
use crate::fixed::FixedPoint;
use crate::graph::{Graph, Op, ValueId};
use crate::kernels::{self, Window};
use crate::plan::RescalePlan;
use crate::tensor::{argmax_f32, numel};
use crate::walk::{self, Keep, Kernel, Site};

fn check_input(graph: &Graph, len: usize) -> Result<()> {
    let expected = numel(graph.input_shape());
    if len != expected {
        return Err(NnError::Shape(format!(
            "model '{}' takes input of shape {:?} ({expected} values), got {len} values",
            graph.name(),
            graph.input_shape()
        )));
    }
    Ok(())
}

fn window(graph: &Graph, input: ValueId, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4]) -> Window {
    let s = graph.shape(input);
    Window { in_hw: [s[1], s[2]], kernel, stride, padding }
}

/// Float (f32) execution of a graph.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloatExecutor;

impl FloatExecutor {
    /// Every value of the graph for one sample (`values[0]` is the input).
    pub fn run_all(graph: &Graph, input: &[f32]) -> Result<Vec<Vec<f32>>> {
        check_input(graph, input.len())?;
        let plan = RescalePlan::unfused(graph);
        let values = walk::run(graph, &plan, input.to_vec(), &mut FloatKernel { graph }, Keep::All)?;
        Ok(values.into_slots().into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The graph output for one sample.
    pub fn run(graph: &Graph, input: &[f32]) -> Result<Vec<f32>> {
        let mut values = Self::run_all(graph, input)?;
        Ok(std::mem::take(&mut values[graph.output().0]))
    }

    /// The logits (the input of a softmax head, else the output) for one sample.
    pub fn logits(graph: &Graph, input: &[f32]) -> Result<Vec<f32>> {
        let mut values = Self::run_all(graph, input)?;
        Ok(std::mem::take(&mut values[graph.logits().0]))
    }

    /// The predicted label for one sample.
    pub fn predict(graph: &Graph, input: &[f32]) -> Result<usize> {
        let logits = Self::logits(graph, input)?;
        argmax_f32(&logits).ok_or_else(|| NnError::Graph("empty logits".into()))
    }
}

/// The float execution of each step (scales do not apply: truncation flags are ignored).
struct FloatKernel<'a> {
    graph: &'a Graph,
}

impl Kernel for FloatKernel<'_> {
    type Value = Vec<f32>;
    type Error = NnError;

    fn linear(&mut self, site: &Site<'_>, x: &Vec<f32>, _truncate: bool) -> Result<Vec<f32>> {
        let (graph, node) = (self.graph, site.node);
        let shape = site.input_shape;
        Ok(match &node.op {
            Op::AvgPool(p) => {
                let win = window(graph, node.inputs[0], p.kernel, p.stride, p.padding);
                let div = (p.kernel[0] * p.kernel[1]) as f32;
                kernels::sum_pool(x, shape[0], win).into_iter().map(|v| v / div).collect()
            }
            Op::BatchNorm(bn) => {
                let (scale, shift) = bn.scale_shift();
                let per = x.len() / bn.channels();
                x.iter().enumerate().map(|(i, v)| v * scale[i / per] + shift[i / per]).collect()
            }
            Op::Conv2d(c) => {
                let win = window(graph, node.inputs[0], c.kernel(), c.stride, c.padding);
                let mut y = kernels::conv2d_grouped(x, shape[0], c.weight.data(), c.out_channels(), c.group, win);
                let per = y.len() / c.out_channels();
                for (i, v) in y.iter_mut().enumerate() {
                    *v += c.bias[i / per];
                }
                y
            }
            Op::Dense(d) => {
                // The bias first, as onnxruntime's Gemm (beta = 1) adds its C.
                kernels::dense_onto(x, d.weight.data(), d.bias.clone())
            }
            Op::GlobalAvgPool => {
                let hw = (shape[1] * shape[2]) as f32;
                kernels::channel_sums(x, shape[0]).into_iter().map(|v| v / hw).collect()
            }
            other => return Err(NnError::node(&node.name, other.kind(), "not a linear op")),
        })
    }

    fn relu(&mut self, _site: &Site<'_>, x: &Vec<f32>, _truncate: bool) -> Result<Vec<f32>> {
        Ok(x.iter().map(|v| v.max(0.0)).collect())
    }

    fn clip(&mut self, site: &Site<'_>, x: &Vec<f32>, _truncate: bool) -> Result<Vec<f32>> {
        let Op::Clip { min, max } = site.node.op else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "not a clip"));
        };
        Ok(x.iter().map(|v| v.clamp(min, max)).collect())
    }

    fn leaky_relu(&mut self, site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        let slopes = match &site.node.op {
            Op::LeakyRelu { alpha } => std::slice::from_ref(alpha),
            Op::PRelu { slope } => slope.as_slice(),
            other => return Err(NnError::node(&site.node.name, other.kind(), "not a leaky ReLU")),
        };
        let per = x.len() / slopes.len().max(1);
        Ok(x.iter()
            .enumerate()
            .map(|(i, &v)| if v >= 0.0 { v } else { slopes[(i / per.max(1)).min(slopes.len() - 1)] * v })
            .collect())
    }

    fn hard_sigmoid(&mut self, site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        let Op::HardSigmoid { alpha, beta } = site.node.op else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "not a hard sigmoid"));
        };
        Ok(x.iter().map(|&v| approx::hard_sigmoid(v, alpha, beta)).collect())
    }

    fn hard_swish(&mut self, _site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(x.iter().map(|&v| approx::hard_swish(v)).collect())
    }

    fn spline(&mut self, site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        match site.node.op {
            Op::Sigmoid => Ok(x.iter().map(|&v| approx::sigmoid(v)).collect()),
            Op::Tanh => Ok(x.iter().map(|&v| v.tanh()).collect()),
            Op::Silu => Ok(x.iter().map(|&v| approx::SILU.exact(v.into()) as f32).collect()),
            Op::Gelu => Ok(x.iter().map(|&v| approx::GELU.exact(v.into()) as f32).collect()),
            Op::GeluTanh => Ok(x.iter().map(|&v| approx::GELU_TANH.exact(v.into()) as f32).collect()),
            Op::Softplus => Ok(x.iter().map(|&v| approx::SOFTPLUS.exact(v.into()) as f32).collect()),
            Op::Softsign => Ok(x.iter().map(|&v| v / (1.0 + v.abs())).collect()),
            Op::Elu { alpha } => {
                Ok(x.iter().map(|&v| approx::ELU.exact_scaled(v.into(), alpha.into()) as f32).collect())
            }
            Op::Selu { alpha, gamma } => {
                Ok(x.iter().map(|&v| approx::selu_exact(v.into(), alpha.into(), gamma.into()) as f32).collect())
            }
            ref other => Err(NnError::node(&site.node.name, other.kind(), "not a spline activation")),
        }
    }

    fn transpose(&mut self, _site: &Site<'_>, x: &Vec<f32>, indices: &[usize]) -> Result<Vec<f32>> {
        Ok(indices.iter().map(|&i| x[i]).collect())
    }

    fn max_pool(&mut self, site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        let Op::MaxPool(p) = &site.node.op else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "not a max pool"));
        };
        let win = window(self.graph, site.node.inputs[0], p.kernel, p.stride, p.padding);
        Ok(kernels::max_pool(x, site.input_shape[0], win, |a, b| a > b))
    }

    fn add(&mut self, _site: &Site<'_>, terms: &[(&Vec<f32>, bool)]) -> Result<Vec<f32>> {
        let mut sum = vec![0f32; terms.first().map_or(0, |(v, _)| v.len())];
        for (v, _) in terms {
            sum.iter_mut().zip(v.iter()).for_each(|(s, v)| *s += v);
        }
        Ok(sum)
    }

    fn concat(&mut self, _site: &Site<'_>, parts: &[&Vec<f32>]) -> Result<Vec<f32>> {
        Ok(concat(parts.iter().map(|p| p.as_slice())))
    }

    fn max(&mut self, _site: &Site<'_>, parts: &[&Vec<f32>]) -> Result<Vec<f32>> {
        let mut acc = parts.first().map(|p| p.to_vec()).unwrap_or_default();
        for p in &parts[1.min(parts.len())..] {
            acc.iter_mut().zip(p.iter()).for_each(|(a, b)| *a = a.max(*b));
        }
        Ok(acc)
    }

    fn softmax(&mut self, _site: &Site<'_>, x: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(softmax(x))
    }
}

/// Concatenation along axis 0 of row-major values: their elements one after the other.
pub fn concat<'a, T: Copy + 'a>(parts: impl Iterator<Item = &'a [T]>) -> Vec<T> {
    parts.flat_map(|p| p.iter().copied()).collect()
}

/// Softmax of one row, computed as onnxruntime's CPU provider computes it on x86-64 with
/// AVX-512F (MLAS's `MlasComputeSoftmax`), bit for bit:
///
/// 1. `m = max(lowest f32, x₀, x₁, …)`;
/// 2. `eᵢ = mlas_exp(xᵢ + (−m))` ([`mlas_exp`], MLAS's polynomial, not `f32::exp`: they differ
///    by an ulp here and there);
/// 3. the sum of the `eᵢ` as the AVX-512F kernel forms it: 16 lanes, lane `l` the sum of
///    `e_l, e_{16+l}, …` in order, then lanes `l` and `l + 8` added, then pairwise
///    `((s₀ + s₁) + (s₂ + s₃)) + ((s₄ + s₅) + (s₆ + s₇))`;
/// 4. `yᵢ = eᵢ · (1 / sum)` (a multiply by the rounded reciprocal, not a division).
///
/// Step 3's order is that of the AVX-512F kernel; onnxruntime on a CPU without AVX-512F (the
/// AVX2/FMA3 kernel: 8 lanes) sums in another order, so there the last bit of an output may
/// differ.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    const LANES: usize = 16;
    let max = x.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = x.iter().map(|&v| mlas_exp(v + -max)).collect();
    let mut lanes = [0f32; LANES];
    for (i, &e) in exps.iter().enumerate() {
        lanes[i % LANES] += e;
    }
    let s: Vec<f32> = (0..8).map(|l| lanes[l + 8] + lanes[l]).collect();
    let sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    let scale = 1.0 / sum;
    exps.into_iter().map(|e| e * scale).collect()
}

/// `exp(x)` for `x ≤ 0` as MLAS's softmax kernel computes it (`MlasComputeSumExpF32Kernel*`,
/// constants from its `MlasExpConstants`): clamp below at −103.972; `m = round(x · log₂e)` (by
/// adding and subtracting 1.5 · 2²³); `r = x − m · ln2_hi − m · ln2_lo` (two fused
/// multiply-adds); a degree-6 polynomial in `r` by Horner's rule with fused multiply-adds (its
/// last two coefficients 1); the result scaled by `2^m` with one rounding (`vscalefps`). Within
/// an ulp or two of `exp`, and what onnxruntime's Softmax uses.
pub fn mlas_exp(x: f32) -> f32 {
    const LOWER_RANGE: f32 = f32::from_bits(0xc2cf_f1b5); // -103.9720840454
    const ROUNDING_BIAS: f32 = 12_582_912.0; // 1.5 · 2^23
    const LOG2_RECIPROCAL: f32 = std::f32::consts::LOG2_E;
    const LN2_HIGH: f32 = f32::from_bits(0xbf31_7200); // -6.93145752e-1
    const LN2_LOW: f32 = f32::from_bits(0xb5bf_be8e); // -1.42860677e-6
    // 0x1.694000p-10, 0x1.125edcp-7, 0x1.555b5ap-5, 0x1.555450p-3, 0x1.fffff6p-2, 1, 1.
    const POLY: [f32; 5] = [
        f32::from_bits(0x3ab4_a000),
        f32::from_bits(0x3c09_2f6e),
        f32::from_bits(0x3d2a_adad),
        f32::from_bits(0x3e2a_aa28),
        f32::from_bits(0x3eff_fffb),
    ];
    // vmaxps returns its second operand when either is NaN: NaN stays NaN.
    let x = if x.is_nan() { x } else { LOWER_RANGE.max(x) };
    let m = x.mul_add(LOG2_RECIPROCAL, ROUNDING_BIAS) - ROUNDING_BIAS;
    let r = m.mul_add(LN2_LOW, m.mul_add(LN2_HIGH, x));
    let p = POLY[1..].iter().fold(POLY[0], |p, &c| p.mul_add(r, c));
    let p = p.mul_add(r, 1.0).mul_add(r, 1.0);
    // p · 2^m is exact in f64 (m is an integer in [−150, 128]); one rounding to f32.
    (f64::from(p) * 2f64.powi(m as i32)) as f32
}

/// An input with at most one non-zero in this many elements takes the scatter kernels.
const SPARSE_RATIO: usize = 16;

/// The slope of each of `n` elements: one slope for all, or one per channel (channel-major
/// values: `n / slopes.len()` consecutive elements per channel).
pub fn leaky_slopes(slopes: &[u64], n: usize) -> Vec<u64> {
    let per = (n / slopes.len().max(1)).max(1);
    (0..n).map(|i| slopes.get((i / per).min(slopes.len().saturating_sub(1))).copied().unwrap_or(0)).collect()
}

/// The quantised form of one node's parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedLayer {
    /// A node without parameters (ReLU, max pool, add, reshape, transpose, softmax).
    None,
    /// Clip bounds at scale 2^f.
    Clip {
        /// Lower bound.
        min: u64,
        /// Upper bound.
        max: u64,
    },
    /// Leaky ReLU (or PRelu) slopes at scale 2^f: one for every element, or one per channel.
    LeakyRelu {
        /// The slopes below zero ([`leaky_slopes`] spreads them over the elements).
        alpha: Vec<u64>,
    },
    /// A hard sigmoid's slope and offset ([`approx::RingHard`]).
    HardSigmoid(RingHard),
    /// A hard swish ([`approx::RingSwish`]).
    HardSwish(RingSwish),
    /// A sigmoid, tanh, softsign, SiLU, GELU (either form), ELU, SELU or softplus spline
    /// ([`approx::RingSpline`]).
    Spline(RingSpline),
    /// Convolution: weights at scale 2^f, bias at scale 2^(2f).
    Conv2d {
        /// `[O, C / groups, kh, kw]` ring weights.
        weight: Vec<u64>,
        /// Ring biases at scale 2^(2f).
        bias: Vec<u64>,
        /// Window geometry.
        window: Window,
        /// Input channels (of all groups).
        in_channels: usize,
        /// Groups ([`crate::graph::Conv2d::group`]).
        groups: usize,
    },
    /// Dense: weights at scale 2^f, bias at scale 2^(2f).
    Dense {
        /// `[out, in]` ring weights.
        weight: Vec<u64>,
        /// Ring biases at scale 2^(2f).
        bias: Vec<u64>,
    },
    /// Per-channel affine map (an unfolded batch norm): scale at 2^f, shift at 2^(2f).
    Affine {
        /// Per-channel scale.
        scale: Vec<u64>,
        /// Per-channel shift.
        shift: Vec<u64>,
    },
    /// Window sum times `round(2^f / (kh·kw))` (average pool).
    AvgPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
        /// `round(2^f / (kh·kw))`.
        reciprocal: u64,
    },
    /// Spatial sum times `round(2^f / (H·W))` (global average pool).
    GlobalAvgPool {
        /// Channels.
        channels: usize,
        /// `round(2^f / (H·W))`.
        reciprocal: u64,
    },
    /// Max pool: the windows, in comparison order.
    MaxPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
    },
}

/// A graph with batch norms folded and every parameter quantised: the fixed-point model.
#[derive(Clone, Debug)]
pub struct QuantizedGraph {
    graph: Graph,
    fixed: FixedPoint,
    layers: Vec<QuantizedLayer>,
}

impl QuantizedGraph {
    /// Folds batch norms into their linear layers and quantises every parameter.
    pub fn new(graph: &Graph, fixed: FixedPoint) -> Result<Self> {
        let graph = graph.fold_batch_norms()?.drop_identity_reshapes()?;
        let f = fixed.frac_bits();
        let q = |v: &[f32], bits: u32| v.iter().map(|&x| fixed.encode_at(x as f64, bits)).collect::<Vec<u64>>();
        let reciprocal = |n: usize| fixed.encode(1.0 / n as f64);
        let layers = graph
            .nodes()
            .iter()
            .map(|node| {
                let input = node.inputs[0];
                let shape = graph.shape(input);
                match &node.op {
                    Op::Conv2d(c) => QuantizedLayer::Conv2d {
                        weight: q(c.weight.data(), f),
                        bias: q(&c.bias, 2 * f),
                        window: window(&graph, input, c.kernel(), c.stride, c.padding),
                        in_channels: c.in_channels(),
                        groups: c.group,
                    },
                    Op::Clip { min, max } => QuantizedLayer::Clip { min: q(&[*min], f)[0], max: q(&[*max], f)[0] },
                    Op::LeakyRelu { alpha } => QuantizedLayer::LeakyRelu { alpha: q(&[*alpha], f) },
                    Op::PRelu { slope } => QuantizedLayer::LeakyRelu { alpha: q(slope, f) },
                    Op::HardSigmoid { alpha, beta } => {
                        QuantizedLayer::HardSigmoid(RingHard::quantize(fixed, *alpha, *beta))
                    }
                    Op::HardSwish => QuantizedLayer::HardSwish(RingSwish::new(fixed)),
                    Op::Sigmoid => QuantizedLayer::Spline(approx::SIGMOID.quantize(fixed)),
                    Op::Tanh => QuantizedLayer::Spline(approx::TANH.quantize(fixed)),
                    Op::Silu => QuantizedLayer::Spline(approx::SILU.quantize(fixed)),
                    Op::Gelu => QuantizedLayer::Spline(approx::GELU.quantize(fixed)),
                    Op::Elu { alpha } => QuantizedLayer::Spline(approx::ELU.quantize_scaled(fixed, (*alpha).into())),
                    Op::Selu { alpha, gamma } => {
                        QuantizedLayer::Spline(approx::selu(fixed, (*alpha).into(), (*gamma).into()))
                    }
                    Op::GeluTanh => QuantizedLayer::Spline(approx::GELU_TANH.quantize(fixed)),
                    Op::Softplus => QuantizedLayer::Spline(approx::SOFTPLUS.quantize(fixed)),
                    Op::Softsign => QuantizedLayer::Spline(approx::SOFTSIGN.quantize(fixed)),
                    Op::Dense(d) => QuantizedLayer::Dense { weight: q(d.weight.data(), f), bias: q(&d.bias, 2 * f) },
                    Op::BatchNorm(bn) => {
                        let (scale, shift) = bn.scale_shift();
                        QuantizedLayer::Affine { scale: q(&scale, f), shift: q(&shift, 2 * f) }
                    }
                    Op::AvgPool(p) => QuantizedLayer::AvgPool {
                        window: window(&graph, input, p.kernel, p.stride, p.padding),
                        channels: shape[0],
                        reciprocal: reciprocal(p.kernel[0] * p.kernel[1]),
                    },
                    Op::GlobalAvgPool => QuantizedLayer::GlobalAvgPool {
                        channels: shape[0],
                        reciprocal: reciprocal(shape[1] * shape[2]),
                    },
                    Op::MaxPool(p) => QuantizedLayer::MaxPool {
                        window: window(&graph, input, p.kernel, p.stride, p.padding),
                        channels: shape[0],
                    },
                    Op::Add
                    | Op::Max
                    | Op::Concat
                    | Op::Flatten
                    | Op::Reshape(_)
                    | Op::Relu
                    | Op::Softmax
                    | Op::Transpose(_) => QuantizedLayer::None,
                }
            })
            .collect();
        Ok(Self { graph, fixed, layers })
    }

    /// The folded graph the layers belong to (node `i` ↔ `layers()[i]`).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The fixed-point setting.
    pub fn fixed(&self) -> FixedPoint {
        self.fixed
    }

    /// The quantised layers, one per node of [`Self::graph`].
    pub fn layers(&self) -> &[QuantizedLayer] {
        &self.layers
    }

    /// Encodes a float sample at scale 2^f; a non-finite value or one outside the fixed-point
    /// range is refused (never saturated or wrapped), naming its index.
    pub fn encode_input(&self, input: &[f32]) -> Result<Vec<u64>> {
        check_input(&self.graph, input.len())?;
        let encode = |(i, &x): (usize, &f32)| {
            self.fixed.try_encode(f64::from(x)).map_err(|e| match e {
                NnError::FixedPoint(m) => NnError::FixedPoint(format!("input value {i}: {m}")),
                other => other,
            })
        };
        input.iter().enumerate().map(encode).collect()
    }

    /// For a linear node whose map is public — fixed by the architecture alone: the average
    /// pools (window or spatial sums times a public reciprocal, no bias) — `L(input)`; `None`
    /// for every other node. On additive shares each party applies it to its own share
    /// (`L(x₀) + L(x₁) = L(x) mod 2^ℓ`): no homomorphic encryption, no traffic, the same ring
    /// value as [`Self::linear`] on the whole input.
    pub fn public_linear(&self, index: usize, input: &[u64]) -> Option<Vec<u64>> {
        match self.layers.get(index)? {
            QuantizedLayer::AvgPool { .. } | QuantizedLayer::GlobalAvgPool { .. } => self.linear(index, input, false),
            _ => None,
        }
    }

    /// The linear map of node `index` applied to `input` (a value or an additive share of one),
    /// *before* truncation, i.e. at scale 2^(2f). The bias or shift is added only when
    /// `add_bias` is set — in the two-party engine, by exactly one party. `None` when the node
    /// is not linear.
    pub fn linear(&self, index: usize, input: &[u64], add_bias: bool) -> Option<Vec<u64>> {
        let fp = self.fixed;
        // A mostly-zero input (as in a query whose activations were switched off) is
        // scattered instead of convolved: same result, cost proportional to its non-zeros.
        let sparse = || {
            let nonzeros: Vec<(usize, u64)> =
                input.iter().enumerate().filter(|(_, v)| **v != 0).map(|(i, v)| (i, *v)).collect();
            (nonzeros.len() * SPARSE_RATIO <= input.len()).then_some(nonzeros)
        };
        let mut y = match &self.layers[index] {
            QuantizedLayer::Conv2d { weight, bias, window, in_channels, groups } => {
                let mut y = match sparse().filter(|_| *groups == 1) {
                    Some(nonzeros) => {
                        let [oh, ow] = window.out_hw();
                        let mut y = vec![0u64; bias.len() * oh * ow];
                        kernels::conv2d_scatter(&nonzeros, *in_channels, weight, bias.len(), *window, &mut y);
                        y
                    }
                    None => kernels::conv2d_grouped(input, *in_channels, weight, bias.len(), *groups, *window),
                };
                if add_bias {
                    let per = y.len() / bias.len();
                    y.iter_mut().enumerate().for_each(|(i, v)| *v = v.wrapping_add(bias[i / per]));
                }
                y
            }
            QuantizedLayer::Dense { weight, bias } => {
                let mut y = match sparse() {
                    Some(nonzeros) => {
                        let mut y = vec![0u64; bias.len()];
                        kernels::dense_scatter(&nonzeros, weight, input.len(), &mut y);
                        y
                    }
                    None => kernels::dense(input, weight, bias.len()),
                };
                if add_bias {
                    y.iter_mut().zip(bias).for_each(|(v, b)| *v = v.wrapping_add(*b));
                }
                y
            }
            QuantizedLayer::Affine { scale, shift } => {
                let per = input.len() / scale.len();
                input
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let c = i / per;
                        let y = v.wrapping_mul(scale[c]);
                        if add_bias { y.wrapping_add(shift[c]) } else { y }
                    })
                    .collect()
            }
            QuantizedLayer::AvgPool { window, channels, reciprocal } => {
                kernels::sum_pool(input, *channels, *window).into_iter().map(|v| v.wrapping_mul(*reciprocal)).collect()
            }
            QuantizedLayer::GlobalAvgPool { channels, reciprocal } => {
                kernels::channel_sums(input, *channels).into_iter().map(|v| v.wrapping_mul(*reciprocal)).collect()
            }
            QuantizedLayer::MaxPool { .. }
            | QuantizedLayer::Clip { .. }
            | QuantizedLayer::LeakyRelu { .. }
            | QuantizedLayer::HardSigmoid(_)
            | QuantizedLayer::HardSwish(_)
            | QuantizedLayer::Spline(_)
            | QuantizedLayer::None => return None,
        };
        y.iter_mut().for_each(|v| *v = fp.reduce(*v));
        Some(y)
    }

    /// Every value for one encoded sample (`values[0]` is the input).
    pub fn run_all_encoded(&self, input: Vec<u64>) -> Result<Vec<Vec<u64>>> {
        check_input(&self.graph, input.len())?;
        let plan = RescalePlan::unfused(&self.graph);
        let values = walk::run(&self.graph, &plan, input, &mut FixedKernel::new(self), Keep::All)?;
        Ok(values.into_slots().into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The ring logits for one float sample.
    pub fn logits_encoded(&self, input: &[f32]) -> Result<Vec<u64>> {
        self.logits_under(&RescalePlan::unfused(&self.graph), self.encode_input(input)?)
    }

    /// The ring logits of an encoded input, rescaled as `plan` says (every plan gives the same
    /// honest logits: [`crate::plan`]).
    pub(crate) fn logits_under(&self, plan: &RescalePlan, input: Vec<u64>) -> Result<Vec<u64>> {
        let mut values = walk::run(&self.graph, plan, input, &mut FixedKernel::new(self), Keep::Outputs)?;
        values.take(self.graph.logits()).ok_or_else(|| NnError::Graph("the walk lost the logits".into()))
    }

    /// The decoded logits for one float sample.
    pub fn logits(&self, input: &[f32]) -> Result<Vec<f32>> {
        Ok(self.logits_encoded(input)?.into_iter().map(|v| self.fixed.decode(v) as f32).collect())
    }

    /// The predicted label (argmax of the signed ring logits) for one float sample.
    pub fn predict(&self, input: &[f32]) -> Result<usize> {
        let logits = self.logits_encoded(input)?;
        argmax_ring(self.fixed, &logits).ok_or_else(|| NnError::Graph("empty logits".into()))
    }
}

/// The fixed-point execution of each step: ring values at scale `2^f` (or `2^2f` where the
/// plan defers a truncation). The simulated two-party engine runs these same kernels on the
/// values it reconstructs.
#[derive(Clone, Copy, Debug)]
pub struct FixedKernel<'a> {
    model: &'a QuantizedGraph,
}

impl<'a> FixedKernel<'a> {
    /// The kernels of `model`.
    pub fn new(model: &'a QuantizedGraph) -> Self {
        Self { model }
    }
}

impl Kernel for FixedKernel<'_> {
    type Value = Vec<u64>;
    type Error = NnError;

    fn linear(&mut self, site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let y = self
            .model
            .linear(site.index, x, true)
            .ok_or_else(|| NnError::node(&site.node.name, site.node.op.kind(), "no fixed-point semantics"))?;
        Ok(if truncate { y.into_iter().map(|v| fp.truncate(v)).collect() } else { y })
    }

    fn relu(&mut self, _site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        Ok(if truncate {
            x.iter().map(|&v| if fp.is_negative(v) { 0 } else { fp.truncate(v) }).collect()
        } else {
            x.iter().map(|&v| if fp.is_negative(v) { 0 } else { v }).collect()
        })
    }

    /// `clip(t, a, b)` of the (truncated) input `t` with the bounds at `f` bits: what
    /// `a + ⌊ReLU(x − A)/2^s⌋ − ⌊ReLU(x − B)/2^s⌋` gives, `A`, `B` the bounds lifted to the
    /// input's scale and `s` the truncation ([`crate::plan`]).
    fn clip(&mut self, site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::Clip { min, max } = self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no clip layer"));
        };
        let (lo, hi) = (fp.to_signed(min), fp.to_signed(max));
        Ok(x.iter()
            .map(|&v| {
                let t = fp.to_signed(if truncate { fp.truncate(v) } else { v });
                fp.from_signed(t.clamp(lo, hi))
            })
            .collect())
    }

    /// `⌊(a·x + (2^f − a)·ReLU(x)) / 2^f⌋`: `x` below zero scaled by the slope `a`, `x` itself
    /// above (`a·x + 2^f·x − a·x`), rounded down once.
    fn leaky_relu(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::LeakyRelu { alpha } = &self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no leaky ReLU layer"));
        };
        Ok(x.iter()
            .zip(leaky_slopes(alpha, x.len()))
            .map(|(&v, alpha)| {
                let above = fp.sub(1u64 << fp.frac_bits(), alpha);
                let relu = if fp.is_negative(v) { 0 } else { v };
                fp.truncate(fp.add(fp.mul(v, alpha), fp.mul(relu, above)))
            })
            .collect())
    }

    /// [`RingHard::eval`] on each element (input at `f`).
    fn hard_sigmoid(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::HardSigmoid(hard) = &self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no hard sigmoid layer"));
        };
        Ok(x.iter().map(|&v| hard.eval(fp, v)).collect())
    }

    /// [`RingSwish::eval`] on each element (input at `f`).
    fn hard_swish(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::HardSwish(swish) = &self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no hard swish layer"));
        };
        Ok(x.iter().map(|&v| swish.eval(fp, v)).collect())
    }

    /// [`RingSpline::eval`] on each element (input at `f`).
    fn spline(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::Spline(spline) = &self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no spline layer"));
        };
        Ok(x.iter().map(|&v| spline.eval(fp, v)).collect())
    }

    fn transpose(&mut self, _site: &Site<'_>, x: &Vec<u64>, indices: &[usize]) -> Result<Vec<u64>> {
        Ok(indices.iter().map(|&i| x[i]).collect())
    }

    fn max_pool(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let QuantizedLayer::MaxPool { window, channels } = &self.model.layers[site.index] else {
            return Err(NnError::node(&site.node.name, site.node.op.kind(), "no max-pool layer"));
        };
        Ok(kernels::max_pool(x, *channels, *window, |a, b| fp.to_signed(a) > fp.to_signed(b)))
    }

    fn add(&mut self, _site: &Site<'_>, terms: &[(&Vec<u64>, bool)]) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let mut sum = vec![0u64; terms.first().map_or(0, |(v, _)| v.len())];
        for (v, lift) in terms {
            let factor = if *lift { 1u64 << fp.frac_bits() } else { 1 };
            sum.iter_mut().zip(v.iter()).for_each(|(s, v)| *s = fp.add(*s, fp.mul(*v, factor)));
        }
        Ok(sum)
    }

    fn concat(&mut self, _site: &Site<'_>, parts: &[&Vec<u64>]) -> Result<Vec<u64>> {
        Ok(concat(parts.iter().map(|p| p.as_slice())))
    }

    fn max(&mut self, _site: &Site<'_>, parts: &[&Vec<u64>]) -> Result<Vec<u64>> {
        let fp = self.model.fixed;
        let mut acc = parts.first().map(|p| p.to_vec()).unwrap_or_default();
        for p in &parts[1.min(parts.len())..] {
            acc.iter_mut().zip(p.iter()).for_each(|(a, &b)| {
                let d = fp.sub(*a, b);
                *a = fp.add(b, if fp.is_negative(d) { 0 } else { d });
            });
        }
        Ok(acc)
    }
}

/// Argmax of ring values under their signed order (first index on ties).
pub fn argmax_ring(fixed: FixedPoint, values: &[u64]) -> Option<usize> {
    let mut best: Option<(usize, i64)> = None;
    for (i, &v) in values.iter().enumerate() {
        let s = fixed.to_signed(v);
        match best {
            Some((_, b)) if s <= b => {}
            _ => best = Some((i, s)),
        }
    }
    best.map(|(i, _)| i)
}

/// Runs `f` over samples in parallel and returns the results in order.
pub fn par_map<T: Send, F>(samples: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> T + Sync + Send,
{
    (0..samples).into_par_iter().map(f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo::{Architecture, build};

    #[test]
    fn fixed_point_tracks_float_on_a_random_cnn() -> Result<()> {
        let graph = build(&Architecture::LeNet5 { width: 1.0 }, &[1, 28, 28], 10, 7)?;
        let q = QuantizedGraph::new(&graph, FixedPoint::default())?;
        for s in 0..4 {
            let input: Vec<f32> = (0..784).map(|i| (((i * 7 + s * 13) % 17) as f32) / 17.0).collect();
            let float = FloatExecutor::logits(&graph, &input)?;
            let fixed = q.logits(&input)?;
            for (a, b) in float.iter().zip(&fixed) {
                assert!((a - b).abs() < 0.05, "float {a} vs fixed {b}");
            }
        }
        Ok(())
    }

    /// A SqueezeNet fire module on a small input: exercises Concat in both executions.
    pub(crate) fn fire_net() -> Result<Graph> {
        let mut b = crate::zoo::GraphBuilder::new(&[3, 8, 8], 5);
        let x = b.conv("stem", ValueId::INPUT, 8, 3, 1, 1)?;
        let x = b.relu(x)?;
        let x = b.fire("fire", x, 4, 6)?;
        let x = b.global_avg_pool(x)?;
        let out = b.dense("fc", x, 5)?;
        b.finish("fire-net", out)
    }

    #[test]
    fn concat_runs_in_float_and_fixed_point() -> Result<()> {
        let graph = fire_net()?;
        assert_eq!(graph.shape(ValueId(9)), &[12, 8, 8]);
        let q = QuantizedGraph::new(&graph, FixedPoint::default())?;
        let input: Vec<f32> = (0..192).map(|i| ((i * 29 % 31) as f32) / 31.0 - 0.5).collect();
        let float = FloatExecutor::logits(&graph, &input)?;
        for (a, b) in float.iter().zip(q.logits(&input)?) {
            assert!((a - b).abs() < 0.01, "float {a} vs fixed {b}");
        }
        Ok(())
    }

    #[test]
    fn sparse_inputs_take_the_scatter_path_with_the_same_result() -> Result<()> {
        let graph = build(&Architecture::LeNet5 { width: 1.0 }, &[1, 28, 28], 10, 3)?;
        let q = QuantizedGraph::new(&graph, FixedPoint::default())?;
        let fp = q.fixed();
        for (index, layer) in q.layers().iter().enumerate() {
            let n = crate::tensor::numel(q.graph().shape(q.graph().nodes()[index].inputs[0]));
            let mut x = vec![0u64; n];
            x[n / 3] = fp.encode(1.25);
            x[n - 1] = fp.encode(-0.5);
            let dense = match layer {
                QuantizedLayer::Conv2d { weight, window, in_channels, bias, groups } => {
                    kernels::conv2d_grouped(&x, *in_channels, weight, bias.len(), *groups, *window)
                }
                QuantizedLayer::Dense { weight, bias } => kernels::dense(&x, weight, bias.len()),
                _ => continue,
            };
            let dense: Vec<u64> = dense.into_iter().map(|v| fp.reduce(v)).collect();
            assert_eq!(q.linear(index, &x, false), Some(dense), "node {index}");
        }
        Ok(())
    }

    #[test]
    fn wrong_input_size_is_an_error() -> Result<()> {
        let graph = build(&Architecture::Mlp { hidden: vec![8] }, &[4], 3, 1)?;
        assert!(FloatExecutor::run(&graph, &[0.0; 5]).is_err());
        assert!(QuantizedGraph::new(&graph, FixedPoint::default())?.predict(&[0.0; 3]).is_err());
        Ok(())
    }

    /// onnxruntime 1.32's Softmax (CPU provider, x86-64 with AVX-512F) of
    /// `xᵢ = ((37 i mod 23) − 11) · 0.37` in f32, for rows of 7, 20 and 50 (one masked vector,
    /// two vectors, the 48-element loop and a tail): the bits it returned. A softmax by
    /// `f32::exp` and a division differs from it in 3, 9 and 28 of these elements.
    #[test]
    fn softmax_is_onnxruntimes_bit_for_bit() {
        let rows: [&[u32]; 3] = [
            &[0x3a2265ea, 0x3de16eb6, 0x3b811a52, 0x3f3336b7, 0x3ccd4489, 0x3a6b1c03, 0x3e232ee6],
            &[
                0x38cc2892, 0x3c8db377, 0x3a224d2c, 0x3de14c59, 0x3b8106a7, 0x3913c89d, 0x3ccd253e, 0x3a6af82b,
                0x3e231604, 0x3bbacb9d, 0x3955f399, 0x3d147f83, 0x3aaa162f, 0x3e6c1af5, 0x3c07370d, 0x399adf5e,
                0x3d56fc60, 0x3af63d85, 0x3eaae8af, 0x3c43c16a,
            ],
            &[
                0x383297f5, 0x3bf7ea0a, 0x398dfa59, 0x3d451610, 0x3ae1bd0d, 0x3881472e, 0x3c3374fd, 0x39cd8bdc,
                0x3d8eaa0b, 0x3b23679a, 0x38bb290d, 0x3c81e72c, 0x3a14c9cb, 0x3dce8a3c, 0x3b6c910b, 0x39077ab0,
                0x3cbc10ac, 0x3a5767e8, 0x3e1581ef, 0x3bab3e2b, 0x39442353, 0x3d08225c, 0x3a9becdd, 0x383297f5,
                0x3bf7ea0a, 0x398dfa59, 0x3d451610, 0x3ae1bd0d, 0x3881472e, 0x3c3374fd, 0x39cd8bdc, 0x3d8eaa0b,
                0x3b23679a, 0x38bb290d, 0x3c81e72c, 0x3a14c9cb, 0x3dce8a3c, 0x3b6c910b, 0x39077ab0, 0x3cbc10ac,
                0x3a5767e8, 0x3e1581ef, 0x3bab3e2b, 0x39442353, 0x3d08225c, 0x3a9becdd, 0x383297f5, 0x3bf7ea0a,
                0x398dfa59, 0x3d451610,
            ],
        ];
        for want in rows {
            let x: Vec<f32> = (0..want.len()).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect();
            let got: Vec<u32> = softmax(&x).iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "row of {}", want.len());
        }
    }

    #[test]
    fn mlas_exp_is_within_two_ulps_of_exp_and_softmax_sums_to_one() {
        for i in 0..=17_000 {
            let x = -(i as f32) * 0.005; // [−85, 0]: normal results
            let (got, want) = (mlas_exp(x), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * want;
            assert!((f64::from(got) - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, not {want}");
        }
        assert_eq!(mlas_exp(0.0), 1.0);
        assert!(mlas_exp(-200.0) < 1e-44);
        assert!(mlas_exp(f32::NAN).is_nan());
        let x: Vec<f32> = (0..1000).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 37.0).collect();
        let total: f64 = softmax(&x).iter().map(|&v| f64::from(v)).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}
