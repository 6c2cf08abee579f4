//! Activations that fixed point and the two-party backends compute approximately: what each
//! computes on ring elements, and its measured maximum error.
//!
//! The float executor computes every activation exactly (in `f32`). The fixed-point executor
//! and both two-party backends compute the ring functions below, bit for bit the same; the
//! two-party protocols are in `moat-mpc` (`engine::layer`), built from exact comparisons, ReLUs,
//! multiplexers, truncations and Beaver products, so they add no error of their own.
//!
//! | op | ring function | max \|error\| (ℓ = 37, f = 12) |
//! |---|---|---|
//! | `HardSigmoid(α, β)` | [`RingHard`]: `clip(round((α_q·x + β)·2^f), 0, 1)`, `α_q` = α at `f` bits | 2.5·10⁻⁴ (α = 0.2, β = 0.5: one unit of `2^−f`) |
//! | `HardSwish` | [`RingSwish`]: `c²/6 + c/2 + ReLU(x − 3)`, `c = clip(x, −3, 3)` | 1.5·10⁻⁴ (1.42·10⁻⁴) |
//! | `Sigmoid` | [`SIGMOID`]: an odd linear spline with 16 knots per side | 9.3·10⁻⁴ |
//! | `Tanh` | [`TANH`]: an odd linear spline with 16 knots per side | 1.8·10⁻³ |
//! | `Silu` (`x·σ(x)`) | [`SILU`]: `ReLU(x)` plus a 16-knot spline of the bounded, even `Silu(x) − ReLU(x)` in `\|x\|` | 1.9·10⁻³ (1.82·10⁻³) |
//! | `Gelu` (`x·Φ(x)`, erf form) | [`GELU`]: `ReLU(x)` plus a 16-knot spline of the even `Gelu(x) − ReLU(x)` in `\|x\|` | 1.3·10⁻³ (1.29·10⁻³) |
//! | `Elu(α)` | [`ELU`]: `ReLU(x)` plus a 16-knot spline of `α·(e^x − 1)` in `ReLU(−x)` | 2.2·10⁻³·\|α\| + 2^−12 (α = 1: 2.2·10⁻³, measured 2.14·10⁻³) |
//! | `Selu(α, γ)` | [`selu`]: [`ELU`]'s spline scaled by `γ·α`, plus `⌊γ_q·ReLU(x)⌉` (`γ_q` = γ at `f` bits) | defaults: 3.7·10⁻³ (3.69·10⁻³) on `[−16, 16]`; in general `\|γα\|·`2.2·10⁻³ + 2^−12 plus `\|γ − γ_q\|·ReLU(x)` (8.0·10⁻⁵·x at the default γ) |
//! | `Gelu` (tanh form) | [`GELU_TANH`]: as [`GELU`], its own knots | 1.1·10⁻³ (1.02·10⁻³) |
//! | `Softsign` (`x/(1 + \|x\|)`) | [`SOFTSIGN`]: an odd linear spline with 16 knots per side, the last at 288 | 3.8·10⁻³ (3.76·10⁻³) |
//! | `Softplus` | [`SOFTPLUS`]: `ReLU(x)` plus a 16-knot spline of the even `ln(1 + e^−\|x\|)` | 1.4·10⁻³ (1.33·10⁻³) |
//!
//! The errors are measured against `f64` on every fixed-point value in `[−16, 16]` plus
//! geometrically spaced tails out to `±2^20` (the hard sigmoid to `±4000`, inside its input
//! range); the tests below recompute them and fail above the stated bounds.
//!
//! **Input range.** The hard functions form `α·x + β` at `2f` fractional bits, which must stay in
//! the ring's signed range: `|α·x| < 2^(ℓ−1−2f)` (4096 at ℓ = 37, f = 12; `|x| < 20480` for
//! α = 0.2), the bound a linear layer's untruncated output already has. The hard swish and the
//! splines read any activation (`|x| < 2^(ℓ−1−f) − 64`), except SELU, whose `γ·ReLU(x)` is
//! formed at `2f` bits as the hard functions' `α·x`: `γ·|x| < 2^(ℓ−1−2f)`.

use crate::fixed::FixedPoint;

/// How a [`Spline`] reads its input and where its spline goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SplineForm {
    /// `y(x) = c + sign(x)·g(|x|)`: odd about `c = y(0)` (sigmoid, tanh).
    Odd,
    /// `y(x) = ReLU(x) + g(|x|)`: the difference to the ReLU is even and bounded, and `g(a)` is
    /// `y(−a)` (SiLU, GELU: `−|x|·σ(−|x|)`, `−|x|·Φ(−|x|)`).
    Even,
    /// `y(x) = ReLU(x) + g(ReLU(−x))`: the difference to the ReLU lives on the negative side,
    /// `g(a) = y(−a)` (ELU).
    Negative,
}

/// An activation `y(x)` odd about its value at zero (`y(x) − c = −(y(−x) − c)`, `c = y(0)`),
/// approximated by a continuous piecewise-linear function of `|x|` that is constant beyond its
/// last knot: `y(x) ≈ c + sign(x)·g(|x|)`,
/// `g(a) = s·a + Σ_k w_k·ReLU(a − t_k)`. The spline interpolates `y` at `0` and at the knots
/// `t_k` (up to the slope quantisation below), so its error is the interpolation error inside
/// and `|y(∞) − y(t_last)|` in the tails.
///
/// Evaluated on ring elements by [`RingSpline::eval`]; the two-party protocol computes the
/// same: the sign bit of `x` (one comparison), `|x|` (a multiplexer), one ReLU per knot (one
/// batch), the local weighted sum, the sign applied (a multiplexer) and one signed truncation.
#[derive(Clone, Copy, Debug)]
pub struct Spline {
    name: &'static str,
    form: SplineForm,
    center: f64,
    knots: &'static [f64],
    exact: fn(f64) -> f64,
    bound: f64,
}

/// Knots of [`SIGMOID`]: denser where `|σ''|` is larger (spacing ∝ `|σ''|^(−1/2)`, rounded to
/// sixteenths), the last at 8 where `1 − σ(8) = 3.4·10⁻⁴`.
const SIGMOID_KNOTS: [f64; 16] =
    [0.4375, 0.75, 1.0, 1.25, 1.4375, 1.6875, 1.9375, 2.1875, 2.5, 2.8125, 3.1875, 3.625, 4.125, 4.8125, 5.8125, 8.0];

/// Knots of [`TANH`]: [`SIGMOID_KNOTS`] halved (`tanh(x) = 2σ(2x) − 1`).
const TANH_KNOTS: [f64; 16] = [
    0.21875, 0.375, 0.5, 0.625, 0.71875, 0.84375, 0.96875, 1.09375, 1.25, 1.40625, 1.59375, 1.8125, 2.0625, 2.40625,
    2.90625, 4.0,
];

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `σ(x) = 1 / (1 + e^−x)` by a 16-knot odd spline about `1/2`.
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **9.3·10⁻⁴** (9.24·10⁻⁴ at x ≈ −0.6), about 3.8 units of `2^−12`. Two-party
/// cost per element: 17 comparisons (sign + 16 ReLUs), 2 multiplexers, 1 signed truncation.
pub const SIGMOID: Spline = Spline {
    name: "Sigmoid",
    form: SplineForm::Odd,
    center: 0.5,
    knots: &SIGMOID_KNOTS,
    exact: sigmoid_f64,
    bound: 9.3e-4,
};

/// `tanh(x)` by a 16-knot odd spline about 0 (the knots of [`SIGMOID`] halved).
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **1.8·10⁻³** (1.73·10⁻³). Two-party cost per element as [`SIGMOID`].
pub const TANH: Spline =
    Spline { name: "Tanh", form: SplineForm::Odd, center: 0.0, knots: &TANH_KNOTS, exact: f64::tanh, bound: 1.8e-3 };

/// Knots of [`SILU`]: spacing ∝ `|g''|^(−1/2)` for `g(a) = −a·σ(−a)` (segment errors equalised
/// numerically, rounded to 64ths; `g''` vanishes near 2.4, hence the long segment there), the
/// last at 10.5 where `|g| = 2.9·10⁻⁴`.
const SILU_KNOTS: [f64; 16] = [
    0.15625, 0.3125, 0.484375, 0.65625, 0.828125, 1.03125, 1.25, 1.5, 1.828125, 3.0625, 3.640625, 4.25, 4.96875, 5.875,
    7.25, 10.5,
];

/// Knots of [`GELU`], chosen as [`SILU_KNOTS`] for `g(a) = −a·Φ(−a)`; the last at 4.25 where
/// `|g| = 4.5·10⁻⁵`.
const GELU_KNOTS: [f64; 16] = [
    0.09375, 0.203125, 0.296875, 0.40625, 0.515625, 0.640625, 0.78125, 0.921875, 1.109375, 1.453125, 1.796875, 2.0625,
    2.359375, 2.6875, 3.140625, 4.25,
];

/// Knots of [`ELU`], chosen as [`SILU_KNOTS`] for `g(a) = e^−a − 1`; the last at 8 where
/// `|g(∞) − g(8)| = e^−8 = 3.4·10⁻⁴`.
const ELU_KNOTS: [f64; 16] = [
    0.125, 0.265625, 0.40625, 0.5625, 0.734375, 0.921875, 1.125, 1.359375, 1.609375, 1.90625, 2.25, 2.671875, 3.203125,
    3.9375, 5.09375, 8.0,
];

/// Knots of [`EXP_NEG`]: 32 knots for `g(a) = e^−a − 1` placed so that every segment's
/// linear-interpolation error (`h²/8·e^−t` on a segment of length `h` starting at `t`) and the
/// tail `e^−t_last` are equal, then rounded to 128ths; the last at 7.5625
/// (`e^−7.5625 = 5.2·10⁻⁴`).
const EXP_NEG_KNOTS: [f64; 32] = [
    0.0625, 0.1328125, 0.203125, 0.2734375, 0.34375, 0.421875, 0.5, 0.5859375, 0.671875, 0.765625, 0.859375, 0.953125,
    1.0625, 1.171875, 1.28125, 1.40625, 1.5390625, 1.6796875, 1.828125, 1.984375, 2.1640625, 2.3515625, 2.5625,
    2.796875, 3.0546875, 3.3515625, 3.6953125, 4.109375, 4.609375, 5.2578125, 6.15625, 7.5625,
];

/// Knots of [`GELU_TANH`], chosen as [`SILU_KNOTS`] for `g(a) = Gelu_tanh(−a)` and refined on
/// the grid of 64ths to the smallest maximum of the segments' interpolation errors and the tail
/// `|g(t_last)|` (8.3·10⁻⁴ at 3.42).
const GELU_TANH_KNOTS: [f64; 16] = [
    0.09375, 0.1875, 0.28125, 0.375, 0.46875, 0.578125, 0.6875, 0.8125, 0.953125, 1.125, 1.765625, 2.015625, 2.265625,
    2.546875, 2.890625, 3.421875,
];

/// Knots of [`SOFTPLUS`], chosen as [`GELU_TANH_KNOTS`] for `g(a) = ln(1 + e^−a)`; the last at
/// 6.8125 where `g = 1.1·10⁻³`.
const SOFTPLUS_KNOTS: [f64; 16] = [
    0.1875, 0.375, 0.578125, 0.78125, 0.984375, 1.1875, 1.421875, 1.671875, 1.9375, 2.25, 2.59375, 2.984375, 3.484375,
    4.125, 5.046875, 6.8125,
];

/// Knots of [`SOFTSIGN`], chosen as [`GELU_TANH_KNOTS`] for `g(a) = a/(1 + a)`, whose slow
/// approach to 1 puts the last at 288 (`1 − g(288) = 3.5·10⁻³`, as large as the segments' errors).
const SOFTSIGN_KNOTS: [f64; 16] = [
    0.125, 0.28125, 0.46875, 0.703125, 1.0, 1.390625, 1.890625, 2.5625, 3.515625, 4.890625, 7.03125, 10.5625, 17.0625,
    31.109375, 71.25, 288.0,
];

fn softsign_f64(x: f64) -> f64 {
    x / (1.0 + x.abs())
}

fn silu_f64(x: f64) -> f64 {
    x * sigmoid_f64(x)
}

fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

fn elu_f64(x: f64) -> f64 {
    if x > 0.0 { x } else { x.exp_m1() }
}

fn gelu_tanh_f64(x: f64) -> f64 {
    let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + inner.tanh())
}

fn softplus_f64(x: f64) -> f64 {
    // ReLU(x) + ln(1 + e^−|x|): no overflow of e^x.
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `Silu(x) = x·σ(x)` (ONNX `Swish` with α = 1, PyTorch's `Mul(x, Sigmoid(x))`) as `ReLU(x)`
/// plus a 16-knot spline of the even difference `−|x|·σ(−|x|)` (in `[−0.28, 0]`, zero at 0 and
/// beyond the last knot).
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **1.9·10⁻³** (1.82·10⁻³ at x ≈ −0.40). Two-party cost per element: 17 ReLUs (`ReLU(x)`, then one per
/// knot on `|x| = 2·ReLU(x) − x`) and 1 signed truncation; no multiplexer beyond the ReLUs'.
pub const SILU: Spline =
    Spline { name: "Silu", form: SplineForm::Even, center: 0.0, knots: &SILU_KNOTS, exact: silu_f64, bound: 1.9e-3 };

/// `Gelu(x) = x·Φ(x) = x·(1 + erf(x/√2))/2` (ONNX `Gelu`, `approximate = "none"`, and the
/// `Erf` pattern exporters write before opset 20) as `ReLU(x)` plus a 16-knot spline of the even
/// difference `−|x|·Φ(−|x|)` (in `[−0.17, 0]`).
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **1.3·10⁻³** (1.29·10⁻³ at x ≈ −0.15). Two-party cost per element as [`SILU`].
pub const GELU: Spline =
    Spline { name: "Gelu", form: SplineForm::Even, center: 0.0, knots: &GELU_KNOTS, exact: gelu_f64, bound: 1.3e-3 };

/// `Elu(x) = x` for `x > 0`, `α·(e^x − 1)` elsewhere (ONNX `Elu`) as `ReLU(x)` plus a 16-knot
/// spline of `α·(e^−a − 1)` in `a = ReLU(−x)` (in `[−α, 0]`); [`Spline::quantize_scaled`] takes α.
///
/// **Measured maximum error** at α = 1 (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]`
/// and tails to `±2^20`): **2.2·10⁻³** (2.14·10⁻³ at x ≈ −0.19); the spline's part scales with α
/// (measured 1.14·10⁻³ at α = 0.5, 4.19·10⁻³ at α = 2; the unit test holds α = 0.5, 2 and −1 to
/// `|α|·`2.2·10⁻³ plus a unit of `2^−12`). Two-party cost per element as
/// [`SILU`].
pub const ELU: Spline =
    Spline { name: "Elu", form: SplineForm::Negative, center: 0.0, knots: &ELU_KNOTS, exact: elu_f64, bound: 2.2e-3 };

/// `e^x − 1` for `x ≤ 0` (`x` itself above: [`ELU`]'s function at α = 1) as `ReLU(x)` plus a
/// 32-knot spline of `e^−a − 1` in `a = ReLU(−x)`: the exponential of the secure softmax's
/// piecewise-linear variant (`moat_mpc::ring_ops::Softmax::Spline`: `e^d = 1 + y(d)` for
/// `d ≤ 0`), four times as exact as [`ELU`]'s 16 knots for twice the ReLUs (32 per value).
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **6.8·10⁻⁴** (6.75·10⁻⁴ at x ≈ −0.10).
pub const EXP_NEG: Spline = Spline {
    name: "ExpNeg",
    form: SplineForm::Negative,
    center: 0.0,
    knots: &EXP_NEG_KNOTS,
    exact: elu_f64,
    bound: 6.8e-4,
};

/// `Gelu(x) = x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2` (ONNX `Gelu` with `approximate =
/// "tanh"`, opset 20) as `ReLU(x)` plus a 16-knot spline of the even difference (in
/// `[−0.17, 0]`), with its own knots.
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **1.1·10⁻³** (1.02·10⁻³ at x ≈ −0.52). Two-party cost per element as [`SILU`].
pub const GELU_TANH: Spline = Spline {
    name: "GeluTanh",
    form: SplineForm::Even,
    center: 0.0,
    knots: &GELU_TANH_KNOTS,
    exact: gelu_tanh_f64,
    bound: 1.1e-3,
};

/// `Softsign(x) = x / (1 + |x|)` (ONNX `Softsign`) by a 16-knot odd spline about 0, as
/// [`TANH`]; its tails approach ±1 slowly, so the knots reach out to 288.
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **3.8·10⁻³** (3.76·10⁻³ at x ≈ −1.18; the tail beyond 288 errs by at most
/// 3.5·10⁻³). Two-party cost per element as [`SIGMOID`].
pub const SOFTSIGN: Spline = Spline {
    name: "Softsign",
    form: SplineForm::Odd,
    center: 0.0,
    knots: &SOFTSIGN_KNOTS,
    exact: softsign_f64,
    bound: 3.8e-3,
};

/// `Softplus(x) = ln(1 + e^x)` (ONNX `Softplus`) as `ReLU(x)` plus a 16-knot spline of the even
/// difference `ln(1 + e^−|x|)` (in `(0, ln 2]`, its centre `ln 2` at zero, reaching 0 at the
/// last knot).
///
/// **Measured maximum error** (ℓ = 37, f = 12, every fixed-point value in `[−16, 16]` and tails
/// to `±2^20`): **1.4·10⁻³** (1.33·10⁻³ at x ≈ −0.48). Two-party cost per element as [`SILU`].
pub const SOFTPLUS: Spline = Spline {
    name: "Softplus",
    form: SplineForm::Even,
    center: std::f64::consts::LN_2,
    knots: &SOFTPLUS_KNOTS,
    exact: softplus_f64,
    bound: 1.4e-3,
};

/// `Selu(x) = γ·x` for `x > 0`, `γ·α·(e^x − 1)` elsewhere (ONNX `Selu`): `γ·Elu_α(x)`, on ring
/// elements [`ELU`]'s spline scaled by `γ·α` ([`Spline::quantize_scaled`]) plus the ReLU times
/// `γ` at `f` bits, rounded ([`RingSpline::gain`]): `⌊(γ_q·ReLU(x) + 2^(f−1)) / 2^f⌋`.
///
/// **Measured maximum error** at the defaults (α = 1.6733, γ = 1.0507; ℓ = 37, f = 12, every
/// fixed-point value in `[−16, 16]`): **3.7·10⁻³** (3.69·10⁻³ at x ≈ −0.20); it is
/// `γ·|α|`·[`ELU`]'s bound plus `2^−12` (the two roundings) plus `|γ − γ_q|·ReLU(x)` (γ's
/// rounding to `f` bits, as a linear layer's weights: 8.0·10⁻⁵·x at the default γ); the unit
/// test holds the first two parts at (α, γ) = the defaults, (0.5, 1.05), (1.67, 2) and
/// (−1, 0.75) out to `γ·|x| = 4000` (measured 3.69·10⁻³, 1.18·10⁻³, 6.91·10⁻³, 1.65·10⁻³).
/// Input range: `γ·|x| < 2^(ℓ−1−2f)` (4096 at ℓ = 37, f = 12), the bound a linear layer's
/// untruncated output already has; beyond it the two-party truncation of `γ_q·ReLU(x)` no
/// longer matches the fixed-point executor. Two-party cost per element
/// as [`SILU`] plus one truncation of a non-negative value (`γ_q·ReLU(x)` by `f`).
pub fn selu(fp: FixedPoint, alpha: f64, gamma: f64) -> RingSpline {
    let mut ring = ELU.quantize_scaled(fp, gamma * alpha);
    ring.gain = Some(fp.encode(gamma));
    ring
}

/// The exact `Selu(x)` in `f64`.
pub fn selu_exact(x: f64, alpha: f64, gamma: f64) -> f64 {
    gamma * ELU.exact_scaled(x, alpha)
}

/// The measured maximum error of [`selu`] at the ONNX defaults on `[−16, 16]` (ℓ = 37, f = 12).
pub const SELU_MAX_ERROR: f64 = 3.7e-3;

/// ONNX `Selu`'s default α.
pub const SELU_ALPHA: f32 = 1.673_263_2;

/// ONNX `Selu`'s default γ.
pub const SELU_GAMMA: f32 = 1.050_701;

/// The largest γ of a SELU the ring functions take (`0 < γ ≤ 16`, and `|γ·α| ≤`
/// [`ELU_MAX_ALPHA`]).
pub const SELU_MAX_GAMMA: f32 = 16.0;

/// Why the ring functions cannot compute a SELU with these parameters (`None`: they can):
/// `0 < γ ≤` [`SELU_MAX_GAMMA`] and a finite `α` with `|γ·α| ≤` [`ELU_MAX_ALPHA`], so that its
/// spline fits the ring. The importer and the graph's own check both ask it.
pub fn selu_unsupported(alpha: f32, gamma: f32) -> Option<String> {
    let ok = alpha.is_finite() && gamma > 0.0 && gamma <= SELU_MAX_GAMMA && (gamma * alpha).abs() <= ELU_MAX_ALPHA;
    (!ok).then(|| {
        format!(
            "alpha = {alpha}, gamma = {gamma}: moat computes Selu with 0 < gamma ≤ {SELU_MAX_GAMMA} and a finite alpha with |gamma·alpha| ≤ {ELU_MAX_ALPHA} (its fixed-point spline must fit the ring)"
        )
    })
}

/// The largest |α| of an ELU the ring functions take: its spline's sum (`α` at `2f + e` bits)
/// must stay inside the ring (ONNX's default is 1).
pub const ELU_MAX_ALPHA: f32 = 16.0;

/// The measured maximum error of [`RingHard`] at α = 0.2, β = 0.5 (ℓ = 37, f = 12): one unit
/// of `2^−12` (the rounding of `α·x + β`, with α's own rounding, at x = −2.5).
pub const HARD_SIGMOID_MAX_ERROR: f64 = 2.5e-4;

/// The measured maximum error of [`RingSwish`] (ℓ = 37, f = 12): 1.42·10⁻⁴ at x ≈ 2.29.
pub const HARD_SWISH_MAX_ERROR: f64 = 1.5e-4;

/// Fractional bits the spline's slopes carry beyond `f`: as many as the ring leaves while the
/// sum (an output in `[−1, 2]` at `2f + e` bits) stays below `2^(ℓ−4)`, at most `f`.
fn extra_bits(fp: FixedPoint) -> u32 {
    extra_bits_for(fp, 2.0)
}

/// [`extra_bits`] for a sum of magnitude up to `magnitude` (at least 2, as the sigmoid's): one
/// bit fewer for each doubling beyond 2.
fn extra_bits_for(fp: FixedPoint, magnitude: f64) -> u32 {
    let lost = (magnitude / 2.0).log2().ceil().clamp(0.0, 64.0) as u32;
    (fp.ring_bits().saturating_sub(4 + 2 * fp.frac_bits() + lost)).min(fp.frac_bits())
}

impl Spline {
    /// The activation's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The positive knots (a ReLU each in the two-party protocol).
    pub fn knots(&self) -> &'static [f64] {
        self.knots
    }

    /// The documented maximum error at ℓ = 37, f = 12 (the unit tests measure it).
    pub fn max_error(&self) -> f64 {
        self.bound
    }

    /// How the spline reads its input.
    pub fn form(&self) -> SplineForm {
        self.form
    }

    /// The exact function, in `f64`.
    pub fn exact(&self, x: f64) -> f64 {
        (self.exact)(x)
    }

    /// The exact function with its difference to the ReLU scaled by `scale` (ELU's α; an odd
    /// spline ignores `scale`).
    pub fn exact_scaled(&self, x: f64, scale: f64) -> f64 {
        match self.form {
            SplineForm::Odd => self.exact(x),
            SplineForm::Even | SplineForm::Negative => x.max(0.0) + scale * (self.exact(x) - x.max(0.0)),
        }
    }

    /// The spline on ring elements of `fp`. The slopes are rounded one segment after the
    /// other, each aiming at the exact value at its segment's end from where the rounded
    /// spline got to (so rounding errors do not accumulate), and the last weight cancels the
    /// slope exactly (the tails are constant whatever `|x|`).
    pub fn quantize(&self, fp: FixedPoint) -> RingSpline {
        self.quantize_scaled(fp, 1.0)
    }

    /// [`Spline::quantize`] of [`Spline::exact_scaled`]: the rectified forms' spline part
    /// times `scale` (ELU's α, at most [`ELU_MAX_ALPHA`] in magnitude; an odd spline ignores it).
    pub fn quantize_scaled(&self, fp: FixedPoint, scale: f64) -> RingSpline {
        let f = fp.frac_bits();
        let (scale, magnitude) = match self.form {
            SplineForm::Odd => (1.0, 2.0),
            SplineForm::Even | SplineForm::Negative => (scale, scale.abs().max(2.0)),
        };
        let shift = f + extra_bits_for(fp, magnitude);
        let sum_bits = f + shift;
        let points: Vec<i64> =
            std::iter::once(0).chain(self.knots.iter().map(|k| (k * 2f64.powi(f as i32)).round() as i64)).collect();
        // The odd form splines `y(a) − c`; the rectified forms `y(−a) − ReLU(−a) − c = y(−a) − c`
        // (times the scale), and reach its limit (0, or −α for ELU) exactly at the last knot, so
        // that beyond it they are the ReLU itself plus that limit, without error.
        let last = points.last().copied().unwrap_or(0);
        let part = |p: i64| {
            let a = p as f64 / 2f64.powi(f as i32);
            match self.form {
                SplineForm::Odd => self.exact(a) - self.center,
                SplineForm::Even if p == last => -scale * self.center,
                SplineForm::Negative if p == last => -scale * (1.0 + self.center),
                SplineForm::Even | SplineForm::Negative => scale * (self.exact(-a) - self.center),
            }
        };
        let target = |p: i64| (part(p) * 2f64.powi(sum_bits as i32)).round();
        let mut reached = 0f64;
        let mut slopes = Vec::with_capacity(self.knots.len());
        for pair in points.windows(2) {
            let run = (pair[1] - pair[0]) as f64;
            let slope = ((target(pair[1]) - reached) / run).round();
            reached += slope * run;
            slopes.push(slope as i64);
        }
        let mut weights: Vec<i64> = slopes.windows(2).map(|s| s[1] - s[0]).collect();
        weights.push(-slopes.last().copied().unwrap_or(0));
        let offset = (scale * self.center * 2f64.powi(sum_bits as i32)).round() as i64 + (1i64 << (shift - 1));
        RingSpline {
            form: self.form,
            gain: None,
            knots: points[1..].iter().map(|&t| fp.from_signed(t)).collect(),
            slope: fp.from_signed(slopes.first().copied().unwrap_or(0)),
            weights: weights.into_iter().map(|w| fp.from_signed(w)).collect(),
            offset: fp.from_signed(offset),
            shift,
        }
    }
}

/// A [`Spline`] on ring elements: `y = ⌊(offset + sign(x)·g(|x|)) / 2^shift⌋` (odd form), or
/// `y = ReLU(x) + ⌊(offset + g(a)) / 2^shift⌋` with `a = |x| = 2·ReLU(x) − x` (even form) or
/// `a = ReLU(−x) = ReLU(x) − x` (negative form), where
/// `g(a) = slope·a + Σ_k weights[k]·ReLU(a − knots[k])`; `x`, `a`, the knots and `y` at `f`
/// bits, the slope and weights at `shift` bits, `offset` (the centre plus `2^(shift−1)`, so
/// the truncation rounds to nearest) at `f + shift`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSpline {
    /// How the input is read ([`SplineForm`]).
    pub form: SplineForm,
    /// A rectified form's ReLU times `gain` (at `f` bits, positive) and rounded,
    /// `⌊(gain·ReLU(x) + 2^(f−1)) / 2^f⌋`, in place of `ReLU(x)` ([`selu`]'s γ); `None`: the
    /// ReLU itself.
    pub gain: Option<u64>,
    /// The positive knots at `f` bits.
    pub knots: Vec<u64>,
    /// The slope on `[0, knots[0]]`, at `shift` bits.
    pub slope: u64,
    /// The change of slope at each knot, at `shift` bits (they sum to `−slope`).
    pub weights: Vec<u64>,
    /// The centre at `f + shift` bits plus the rounding half `2^(shift−1)`.
    pub offset: u64,
    /// The final truncation.
    pub shift: u32,
}

impl RingSpline {
    /// `g(a) = slope·a + Σ_k weights[k]·relus[k]` given `relus[k] = ReLU(a − knots[k])` (mod
    /// 2^ℓ; the two-party protocol evaluates the same on shares).
    pub fn magnitude(&self, fp: FixedPoint, a: u64, relus: impl IntoIterator<Item = u64>) -> u64 {
        relus.into_iter().zip(&self.weights).fold(fp.mul(self.slope, a), |g, (r, w)| fp.add(g, fp.mul(*w, r)))
    }

    /// `r = ReLU(x)` times [`RingSpline::gain`], rounded to `f` bits (`r` itself without one).
    pub fn scaled_relu(&self, fp: FixedPoint, r: u64) -> u64 {
        match self.gain {
            Some(gain) => fp.truncate(fp.add(fp.mul(gain, r), self.gain_half(fp))),
            None => r,
        }
    }

    /// The rounding half `2^(f−1)` added to `gain·ReLU(x)` before its truncation.
    pub fn gain_half(&self, fp: FixedPoint) -> u64 {
        1 << (fp.frac_bits() - 1)
    }

    /// The spline at `x` (a ring element at `f` bits), as the two-party protocol computes it.
    pub fn eval(&self, fp: FixedPoint, x: u64) -> u64 {
        let relu = |v: u64| if fp.is_negative(v) { 0 } else { v };
        if self.form != SplineForm::Odd {
            let r = relu(x);
            let a = if self.form == SplineForm::Even { fp.sub(fp.add(r, r), x) } else { fp.sub(r, x) };
            let g = self.magnitude(fp, a, self.knots.iter().map(|t| relu(fp.sub(a, *t))));
            return fp.add(self.scaled_relu(fp, r), fp.truncate_by(fp.add(g, self.offset), self.shift));
        }
        let negative = fp.is_negative(x);
        let a = if negative { fp.sub(0, x) } else { x };
        let relus = self.knots.iter().map(|t| {
            let d = fp.sub(a, *t);
            if fp.is_negative(d) { 0 } else { d }
        });
        let g = self.magnitude(fp, a, relus);
        let signed = if negative { fp.sub(0, g) } else { g };
        fp.truncate_by(fp.add(signed, self.offset), self.shift)
    }
}

/// A hard sigmoid `max(0, min(1, α·x + β))` on ring elements: `alpha` at `f` bits, `beta` at
/// `2f` bits plus the rounding half `2^(f−1)`. The clip is exact (0 and 1 are reached exactly);
/// inside, the error is at most `2^−(f+1)·(1 + |x|)` (the rounding, and α's own rounding times
/// `x`, with `|x| ≤ (1 + |β|)/|α|` there): measured 2.44·10⁻⁴ at α = 0.2
/// ([`HARD_SIGMOID_MAX_ERROR`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHard {
    /// α at `f` bits.
    pub alpha: u64,
    /// β at `2f` bits, plus `2^(f−1)`.
    pub beta: u64,
}

impl RingHard {
    /// `α`, `β` on ring elements of `fp`.
    pub fn quantize(fp: FixedPoint, alpha: f32, beta: f32) -> Self {
        let f = fp.frac_bits();
        Self { alpha: fp.encode(alpha.into()), beta: fp.add(fp.encode_at(beta.into(), 2 * f), 1 << (f - 1)) }
    }

    /// `z = α·x + β` at `2f` bits (local on shares).
    pub fn pre(&self, fp: FixedPoint, x: u64) -> u64 {
        fp.add(fp.mul(self.alpha, x), self.beta)
    }

    /// `clip(⌊z / 2^f⌋, 0, 1)`: the hard sigmoid of `x` at `f` bits, rounded to nearest.
    pub fn eval(&self, fp: FixedPoint, x: u64) -> u64 {
        let one = 1u64 << fp.frac_bits();
        let y = fp.truncate(self.pre(fp, x));
        if fp.is_negative(y) {
            0
        } else if fp.to_signed(y) > one as i64 {
            one
        } else {
            y
        }
    }
}

/// A hard swish `x·clip(x/6 + 1/2, 0, 1)` on ring elements, written so that no step
/// multiplies `x` itself: with `c = clip(x, −3, 3) = −3 + ReLU(x + 3) − ReLU(x − 3)`,
/// `HardSwish(x) = c²/6 + c/2 + ReLU(x − 3)` (the last term is `x − 3` above 3, where
/// `c²/6 + c/2 = 3`). The ring function:
///
/// `y = ⌊(C·sixth + c·2^(shift−1) + 2^(shift−1)) / 2^shift⌋ + ReLU(x − 3)` with
/// `C = ⌊(c² + 2^(f−1)) / 2^f⌋` (`c²` at `2f`, rounded to `f`) and `sixth` = 1/6 at `shift`
/// bits: only the two roundings to nearest and the 1/6's last bit err (< 0.6 unit of `2^−f`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSwish {
    /// 3 at `f` bits.
    pub three: u64,
    /// 1/6 at `shift` bits.
    pub sixth: u64,
    /// The final truncation (`f` plus the extra bits of [`Spline::quantize`]).
    pub shift: u32,
}

impl RingSwish {
    /// The hard swish on ring elements of `fp`.
    pub fn new(fp: FixedPoint) -> Self {
        let shift = fp.frac_bits() + extra_bits(fp);
        Self { three: fp.encode(3.0), sixth: fp.encode_at(1.0 / 6.0, shift), shift }
    }

    /// `c = ReLU(x + 3) − ReLU(x − 3) − 3` from the two ReLUs.
    pub fn clipped(&self, fp: FixedPoint, low: u64, high: u64) -> u64 {
        fp.sub(fp.sub(low, high), self.three)
    }

    /// `C·sixth + c·2^(shift−1) + 2^(shift−1)`, the sum truncated by `shift` bits.
    pub fn sum(&self, fp: FixedPoint, square: u64, c: u64) -> u64 {
        let half = 1u64 << (self.shift - 1);
        fp.add(fp.add(fp.mul(square, self.sixth), fp.mul(c, half)), half)
    }

    /// The hard swish of `x` (at `f` bits), as the two-party protocol computes it.
    pub fn eval(&self, fp: FixedPoint, x: u64) -> u64 {
        let relu = |v: u64| if fp.is_negative(v) { 0 } else { v };
        let (low, high) = (relu(fp.add(x, self.three)), relu(fp.sub(x, self.three)));
        let c = self.clipped(fp, low, high);
        let square = fp.truncate(fp.add(fp.mul(c, c), 1 << (fp.frac_bits() - 1)));
        fp.add(fp.truncate_by(self.sum(fp, square, c), self.shift), high)
    }
}

/// The exact hard sigmoid.
pub fn hard_sigmoid(x: f32, alpha: f32, beta: f32) -> f32 {
    (alpha * x + beta).clamp(0.0, 1.0)
}

/// The exact hard swish.
pub fn hard_swish(x: f32) -> f32 {
    x * hard_sigmoid(x, 1.0 / 6.0, 0.5)
}

/// The exact sigmoid in `f32`.
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_f64(x.into()) as f32
}

/// The maximum of `|ring(x) − exact(x)|` over every fixed-point value of `fp` in
/// `[−16, 16]` and geometric tails (ratio 1.01) out to `±limit`, with the `x` where it occurs.
pub fn max_error(fp: FixedPoint, limit: f64, ring: impl Fn(u64) -> u64, exact: impl Fn(f64) -> f64) -> (f64, f64) {
    let f = fp.frac_bits() as i32;
    let dense = (-16i64 << f)..=(16i64 << f);
    let mut tails = Vec::new();
    let mut t = 16.0f64;
    while t <= limit {
        tails.push((t * 2f64.powi(f)).round() as i64);
        tails.push(-(t * 2f64.powi(f)).round() as i64);
        t *= 1.01;
    }
    dense.chain(tails).fold((0.0, 0.0), |(worst, at), v| {
        let x = v as f64 / 2f64.powi(f);
        let e = (fp.decode(ring(fp.from_signed(v))) - exact(x)).abs();
        if e > worst { (e, x) } else { (worst, at) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds stated in the module table and the docs of [`SIGMOID`] and [`TANH`]; a
    /// change that makes an approximation worse fails here.
    #[test]
    fn measured_errors_stay_within_the_documented_bounds() {
        let fp = FixedPoint::default();
        for spline in [SIGMOID, TANH, SOFTSIGN] {
            let bound = spline.max_error();
            let q = spline.quantize(fp);
            let (err, at) = max_error(fp, 2f64.powi(20), |x| q.eval(fp, x), |x| spline.exact(x));
            eprintln!("{}: max error {err:e} at {at}", spline.name());
            assert!(err <= bound, "{}: max error {err:e} at {at} above {bound:e}", spline.name());
            // Not a loose bound: within 15% of the measurement.
            assert!(err > 0.85 * bound, "{}: max error {err:e} far below {bound:e}", spline.name());
        }
        let measured: Vec<(Spline, f64, f64)> = [SILU, GELU, ELU, EXP_NEG, GELU_TANH, SOFTPLUS]
            .into_iter()
            .map(|spline| {
                let q = spline.quantize(fp);
                let (err, at) = max_error(fp, 2f64.powi(20), |x| q.eval(fp, x), |x| spline.exact(x));
                eprintln!("{}: max error {err:e} at {at}", spline.name());
                (spline, err, at)
            })
            .collect();
        // ELU's spline part scales with α.
        for alpha in [0.5, 2.0, -1.0] {
            let q = ELU.quantize_scaled(fp, alpha);
            let (err, at) = max_error(fp, 2f64.powi(20), |x| q.eval(fp, x), |x| ELU.exact_scaled(x, alpha));
            eprintln!("Elu(α = {alpha}): max error {err:e} at {at}");
            let bound = alpha.abs() * ELU.max_error() + 2f64.powi(-12);
            assert!(err <= bound, "Elu(α = {alpha}): max error {err:e} at {at} above {bound:e}");
        }
        // SELU at ONNX's defaults on [−16, 16] (its input range ends at γ·|x| < 4096).
        let (alpha, gamma) = (f64::from(SELU_ALPHA), f64::from(SELU_GAMMA));
        let q = selu(fp, alpha, gamma);
        let (err, at) = max_error(fp, 16.0, |x| q.eval(fp, x), |x| selu_exact(x, alpha, gamma));
        eprintln!("Selu: max error {err:e} at {at} on [-16, 16]");
        assert!(err <= SELU_MAX_ERROR, "Selu: max error {err:e} at {at} above {SELU_MAX_ERROR:e}");
        assert!(err > 0.85 * SELU_MAX_ERROR, "Selu: max error {err:e} far below {SELU_MAX_ERROR:e}");
        for (spline, err, at) in measured {
            let bound = spline.max_error();
            assert!(err <= bound, "{}: max error {err:e} at {at} above {bound:e}", spline.name());
            assert!(err > 0.85 * bound, "{}: max error {err:e} far below {bound:e}", spline.name());
        }
        let hard = RingHard::quantize(fp, 0.2, 0.5);
        let (err, at) = max_error(fp, 4000.0, |x| hard.eval(fp, x), |x| f64::from(hard_sigmoid(x as f32, 0.2, 0.5)));
        assert!(err <= HARD_SIGMOID_MAX_ERROR, "HardSigmoid: {err:e} at {at}");
        let swish = RingSwish::new(fp);
        let exact = |x: f64| x * (x / 6.0 + 0.5).clamp(0.0, 1.0);
        let (err, at) = max_error(fp, 2f64.powi(20), |x| swish.eval(fp, x), exact);
        assert!(err <= HARD_SWISH_MAX_ERROR, "HardSwish: {err:e} at {at}");
        assert!(err > 0.85 * HARD_SWISH_MAX_ERROR, "HardSwish: {err:e} far below the bound");
    }

    #[test]
    fn splines_are_odd_saturate_exactly_and_pass_zero() {
        let fp = FixedPoint::default();
        for spline in [SIGMOID, TANH, SOFTSIGN] {
            let q = spline.quantize(fp);
            let center = fp.encode(spline.center);
            assert_eq!(q.eval(fp, 0), center, "{}", spline.name());
            // The slopes cancel: the same value far out as just past the last knot.
            let last = spline.knots().last().copied().unwrap_or(0.0);
            let (near, far) = (fp.encode(last + 1.0), fp.encode(1e6));
            assert_eq!(q.eval(fp, near), q.eval(fp, far), "{}", spline.name());
            assert_eq!(q.eval(fp, fp.sub(0, near)), q.eval(fp, fp.sub(0, far)), "{}", spline.name());
            for v in [1i64, 77, 4096, 9000, 30_000] {
                let (p, n) = (q.eval(fp, fp.from_signed(v)), q.eval(fp, fp.from_signed(-v)));
                // y(x) + y(−x) = 2c up to one unit of rounding.
                let sum = fp.to_signed(p) + fp.to_signed(n) - 2 * fp.to_signed(center);
                assert!(sum.abs() <= 1, "{} at ±{v}: {sum}", spline.name());
            }
        }
    }

    #[test]
    fn rectified_splines_are_relus_far_out_and_exact_at_zero() {
        let fp = FixedPoint::default();
        for spline in [SILU, GELU, ELU, EXP_NEG, GELU_TANH, SOFTPLUS] {
            let q = spline.quantize(fp);
            assert_eq!(q.eval(fp, 0), fp.encode(spline.center), "{}", spline.name());
            // Beyond the last knot on the positive side: x itself, exactly.
            for v in [20.0, 1e3, 1e6] {
                assert_eq!(q.eval(fp, fp.encode(v)), fp.encode(v), "{} at {v}", spline.name());
            }
            // Far on the negative side: constant (0 for SiLU, GELU and Softplus, −α for ELU).
            let limit = if spline.form() == SplineForm::Negative { -1.0 } else { 0.0 };
            for v in [-11.0, -1e3, -1e6] {
                assert_eq!(q.eval(fp, fp.encode(v)), fp.encode(limit), "{} at {v}", spline.name());
            }
        }
    }

    /// SELU's error against its documented parts: the scaled ELU spline, two roundings and γ's
    /// rounding times `x`, out to `γ·|x| = 4000` (its input range ends at 4096), at several α,
    /// γ.
    #[test]
    fn selu_stays_within_its_error_parts_over_its_input_range() {
        let fp = FixedPoint::default();
        for (alpha, gamma) in [(f64::from(SELU_ALPHA), f64::from(SELU_GAMMA)), (0.5, 1.05), (1.6733, 2.0), (-1.0, 0.75)]
        {
            let q = selu(fp, alpha, gamma);
            let gamma_error = (fp.decode(fp.encode(gamma)) - gamma).abs();
            let spline = (gamma * alpha).abs() * ELU.max_error() + 2f64.powi(-12);
            // Against SELU with γ's positive side at γ_q: what remains is the spline and the
            // roundings; γ_q − γ adds (γ_q − γ)·ReLU(x) on top.
            let gamma_q = fp.decode(fp.encode(gamma));
            let with_gamma_q = |x: f64| selu_exact(x, alpha, gamma) + (gamma_q - gamma) * x.max(0.0);
            // The input range: γ·|x| < 2^(ℓ−1−2f) = 4096.
            let limit = 4000.0 / gamma;
            let (err, at) = max_error(fp, limit, |x| q.eval(fp, x), with_gamma_q);
            eprintln!(
                "Selu(α = {alpha}, γ = {gamma}): max error {err:e} at {at} beside γ's rounding {gamma_error:e}·x"
            );
            assert!(err <= spline, "Selu(α = {alpha}, γ = {gamma}): {err:e} at {at} above {spline:e}");
            // Far out: γ_q·x, and −γ·α.
            let far = fp.encode(limit.floor());
            let want = fp.encode(limit.floor() * gamma_q);
            assert!(fp.to_signed(fp.sub(q.eval(fp, far), want)).abs() <= 1, "α = {alpha}, γ = {gamma}");
            let low = fp.decode(q.eval(fp, fp.encode(-1e3)));
            assert!((low + gamma * alpha).abs() <= 2f64.powi(-12), "α = {alpha}, γ = {gamma}: {low}");
        }
    }

    #[test]
    fn hard_functions_saturate_exactly() {
        let fp = FixedPoint::default();
        let h = RingHard::quantize(fp, 0.2, 0.5);
        assert_eq!(h.eval(fp, fp.encode(3.0)), fp.encode(1.0));
        assert_eq!(h.eval(fp, fp.encode(-2.6)), 0);
        assert_eq!(h.eval(fp, fp.encode(0.0)), fp.encode(0.5));
        let s = RingSwish::new(fp);
        assert_eq!(s.eval(fp, fp.encode(100.0)), fp.encode(100.0));
        assert_eq!(s.eval(fp, fp.encode(3.0)), fp.encode(3.0));
        assert_eq!(s.eval(fp, fp.encode(-3.5)), 0);
    }
}
