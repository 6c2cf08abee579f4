//! Secure softmax over [`RingOps`]: the probabilities a client may be shown instead of the
//! logits, computed on shared logits.
//!
//! Three approximations (the ones SIGuard's paper studies that are cheap in two-party
//! computation), all starting from the row maximum `m` (a tree of ReLUs) so that every
//! exponent is `d = z − m ≤ 0`:
//!
//! * [`Softmax::Exp`] (CrypTen): `exp(d) ≈ (1 + d/2^9)^(2^9)` — `d/2^9` by an exact
//!   truncation, a ReLU that clamps `1 + d/2^9` at 0 (so `d < −512` gives 0 instead of an
//!   oscillating power), then 9 squarings, at the working scale `2^w`, `w = ⌊(ℓ−2)/2⌋`
//!   (17 at ℓ = 37) rather than `2^f`: at `f = 12` the base `1 + d/512` would keep only
//!   `d` in steps of 1/8, a relative error of up to 13 % after the 9 squarings; at `w = 17`
//!   the step is 1/256. Squares of values in `[0, 1]` at `2^w` stay below `2^(ℓ−2)`. The
//!   result is truncated to `2^f`. The row maximum maps to exactly 1, so the row sum
//!   `s ∈ [1, C]`.
//! * [`Softmax::Spline`] (piecewise-linear): `exp(d) = 1 + y(d)` for `d ≤ 0`, with the
//!   32-knot linear spline of `e^−a − 1` ([`moat_nn::approx::EXP_NEG`]) in `a = −d`, its
//!   `ReLU(a − t_k)` evaluated from the knots' comparisons in an 11-bit ring on the input
//!   clamped at the last knot (`spline_exp`), a local weighted sum, one product and one
//!   truncation — where the CrypTen variant needs nine sequential products and truncations
//!   after its own truncation and ReLU. The spline reaches `−1` exactly at its last knot
//!   (7.5625), so `exp(d) = 0` below it (`e^−7.5625 = 5.2·10⁻⁴`), and `exp(0) = 1` exactly:
//!   `s ∈ [1, C]`. Error of `1 + y` against `e^d`: 6.8·10⁻⁴ at most.
//! * [`Softmax::Relu`] (ReLU-normalised `x⁺/Σx⁺`): `t = ReLU(d + T)` with the public shift
//!   `T =` [`RELU_SHIFT`], so that the row maximum maps to `T` and `s ∈ [T, C·T]` (on raw
//!   logits `Σx⁺` may be 0 or unbounded, and no division protocol can take that range).
//!
//! The spline is the default ([`Softmax::default`]): the most exact of the three here and the
//! fewest flights.
//!
//! Then `p = t · 1/s`, the reciprocal by Newton's iteration `y ← y(2 − s·y)` for
//! `s ∈ [lo, hi]` from a start read off one batch of comparisons with public thresholds
//! ([`super::newton::reciprocal`]): the relative error `1 − s·y` squares every step, to
//! below `2^−(f+1)`.
//!
//! Every primitive is exact, so the plaintext and the two-party results are identical.
//! **Error against float softmax** (f = 12, measured by `examples/softmax_error.rs` on every
//! embedded digit through an MLP; figures in BENCHMARKS.md): at most 3.8·10⁻³ per entry for
//! the CrypTen variant (mean 5.6·10⁻⁴), 2.7·10⁻³ for the spline (mean 2.2·10⁻⁴); the ReLU
//! variant is a different function (it is not an approximation of softmax's values, only of
//! its ordering).
//!
//! **Cost** for `R` rows of `C` classes: `⌈log₂ C⌉` ReLU batches for the maximum; exponential:
//! one truncation and one ReLU batch of `RC`, 9 products + non-negative truncations of `RC`;
//! spline: one ReLU batch and two truncations of `RC`, one batch of `32·RC` sign tests in an
//! 11-bit ring (`RC` values against 32 knots), one product of `RC`; ReLU variant: one ReLU
//! batch of `RC`; reciprocal: one batch of `14R` sign tests against thresholds (C = 10) and
//! `2·steps` products + truncations of `R` (2 steps at f = 12); the final product + truncation
//! of `RC`. No data-dependent control flow. Flights from `P0` for one row of 10 with IKNP
//! (`examples/siguard_cost.rs`): 96 (exp), 53 (spline).

use serde::{Deserialize, Serialize};

use super::newton::reciprocal;
use super::{RingOps, broadcast, check_rows};
use crate::error::{MpcError, Result};

/// Squarings of the CrypTen exponential: `(1 + x/2^9)^(2^9)`.
pub const EXP_SQUARINGS: u32 = 9;

/// The public shift `T` of the ReLU-normalised variant: the row maximum maps to `T`.
pub const RELU_SHIFT: f64 = 4.0;

/// Which softmax approximation (see the module documentation). The default is the spline:
/// the most exact of the three and the cheapest in flights. Serialised by the names the
/// command line takes (`exp`, `relu`, `spline`); the capitalised names earlier reports and
/// hellos used are read too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Softmax {
    /// `(1 + d/2^9)^(2^9)` after max-subtraction (CrypTen), Newton reciprocal.
    #[serde(alias = "Exp")]
    Exp,
    /// `ReLU(d + T) / Σ ReLU(d + T)` after max-subtraction, Newton reciprocal.
    #[serde(alias = "Relu")]
    Relu,
    /// `exp(d)` by a 32-knot linear spline after max-subtraction, Newton reciprocal.
    #[default]
    #[serde(alias = "Spline")]
    Spline,
}

/// What a hello or a SIGuard announcement without a `softmax` field means: it was written
/// before the field, when CrypTen's [`Softmax::Exp`] was the default.
pub(crate) fn absent_softmax() -> Softmax {
    Softmax::Exp
}

impl std::fmt::Display for Softmax {
    /// `exp`, `relu` or `spline` (what [`std::str::FromStr`] reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Softmax::Exp => "exp",
            Softmax::Relu => "relu",
            Softmax::Spline => "spline",
        })
    }
}

impl std::str::FromStr for Softmax {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "exp" => Ok(Softmax::Exp),
            "relu" => Ok(Softmax::Relu),
            "spline" => Ok(Softmax::Spline),
            other => Err(format!("unknown softmax '{other}' (exp, relu, spline)")),
        }
    }
}

impl Softmax {
    /// Every variant.
    pub const ALL: [Softmax; 3] = [Softmax::Exp, Softmax::Relu, Softmax::Spline];

    /// The float function this variant computes (for error measurements): row-wise on
    /// `cols` values per row.
    pub fn reference(self, z: &[f64], cols: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(z.len());
        for row in z.chunks(cols.max(1)) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let t: Vec<f64> = match self {
                Softmax::Exp | Softmax::Spline => row.iter().map(|v| (v - m).exp()).collect(),
                Softmax::Relu => row.iter().map(|v| (v - m + RELU_SHIFT).max(0.0)).collect(),
            };
            let s: f64 = t.iter().sum();
            out.extend(t.iter().map(|v| v / s));
        }
        out
    }
}

/// Probabilities (at scale 2^f) of each row of `cols` logits `z` (at scale 2^f), by the
/// approximation `kind`. Rows are independent; all are computed in the same batches.
pub fn softmax<O: RingOps + ?Sized>(ops: &mut O, z: &[u64], cols: usize, kind: Softmax) -> Result<Vec<u64>> {
    let m = ops.row_max(z, cols)?;
    softmax_from_max(ops, z, &m, cols, kind)
}

/// [`softmax`] from the row maxima `m` of `z`, computed by the caller (e.g. in one
/// [`RingOps::row_max`] batch with other maxima it needs).
pub fn softmax_from_max<O: RingOps + ?Sized>(
    ops: &mut O,
    z: &[u64],
    m: &[u64],
    cols: usize,
    kind: Softmax,
) -> Result<Vec<u64>> {
    let rows = check_rows(z, cols, "softmax")?;
    if m.len() != rows {
        return Err(MpcError::invalid("softmax", format!("{} maxima for {rows} rows", m.len())));
    }
    let fp = ops.fixed();
    let f = fp.frac_bits();
    let d = ops.sub(z, &broadcast(m, cols));
    let (t, lo, hi) = match kind {
        Softmax::Exp => {
            // Working scale 2^w with w = ⌊(ℓ − 2)/2⌋ ≥ f: values in [0, 1] square without
            // leaving the positive half of the ring, and d/2^9 keeps w − 9 fractional bits.
            let w = ((fp.ring_bits() - 2) / 2).max(f);
            let up = w - f;
            let scaled = if up >= EXP_SQUARINGS {
                ops.scale(&d, 1 << (up - EXP_SQUARINGS))
            } else {
                ops.truncate(&d, EXP_SQUARINGS - up)?
            };
            // t ∈ [0, 2^w] (a ReLU's output with d ≤ 0), so t² ≤ 2^(2w) < 2^(ℓ−1) and its
            // truncation is again in [0, 2^w]: every truncation here is of a non-negative value.
            let mut t = ops.relu(&ops.add_public(&scaled, 1 << w))?;
            for _ in 0..EXP_SQUARINGS {
                let sq = ops.mul(&t, &t)?;
                t = ops.truncate_nonnegative(&sq, w)?;
            }
            (ops.truncate_nonnegative(&t, up)?, 1.0, cols as f64)
        }
        Softmax::Relu => {
            let t = ops.relu(&ops.add_public(&d, fp.encode(RELU_SHIFT)))?;
            (t, RELU_SHIFT, RELU_SHIFT * cols as f64)
        }
        Softmax::Spline => (spline_exp(ops, &d)?, 1.0, cols as f64),
    };
    let s = ops.row_sum(&t, cols);
    let r = reciprocal(ops, &s, lo, hi)?;
    // t ∈ [0, hi/cols] and r ≤ 1/lo: the product is at most 1.
    ops.mul_fixed_bounded(&t, &broadcast(&r, cols))
}

/// `1 + y(d)` (≈ `e^d`) for `d ≤ 0` at 2^f: the ring spline of [`moat_nn::approx::EXP_NEG`]
/// (its negative form, with `ReLU(d) = 0`) in `a = −d`, `g(a) = slope·a + Σₖ wₖ·ReLU(a − tₖ)`.
///
/// Evaluated from the knots' *comparisons* rather than their ReLUs, on a clamped, coarsened
/// input — the same ring value, for a fraction of the comparisons' cost:
/// * the weights sum to `−slope`, so `g` is flat from the last knot on: `g(a) = g(a_c)` with
///   `a_c = min(a, t_last) = a − ReLU(a − t_last)` (one full-width ReLU per value), and
///   `[a ≥ tₖ] = [a_c ≥ tₖ]` for every knot;
/// * every knot is a multiple of `2^z` (their common trailing zeros; 2^5 at f = 12, the knots
///   being 128ths), so `[a_c ≥ tₖ] = [⌊a_c/2^z⌋ ≥ tₖ/2^z]`, and those differences lie within
///   `±t_last/2^z` (±968): 32 sign tests in an 11-bit ring sharing their leaf OTs
///   ([`RingOps::sign_against`]) instead of 32 ReLUs in the 37-bit one;
/// * with the tests' bits `sₖ`, `g = a_c·(slope + Σ wₖsₖ) − Σ wₖtₖsₖ` (`ReLU(a_c − tₖ) =
///   sₖ·(a_c − tₖ)`): local sums and one product per value.
fn spline_exp<O: RingOps + ?Sized>(ops: &mut O, d: &[u64]) -> Result<Vec<u64>> {
    let fp = ops.fixed();
    let spline = moat_nn::approx::EXP_NEG.quantize(fp);
    let a = ops.scale(d, fp.neg(1));
    let k = spline.knots.len();
    let last = spline.knots.last().copied().unwrap_or(0);
    let over = ops.relu(&ops.add_public(&a, fp.neg(last)))?;
    let clamped = ops.sub(&a, &over);
    let z = spline.knots.iter().map(|t| t.trailing_zeros()).min().unwrap_or(0).min(fp.frac_bits());
    let coarse = if z > 0 { ops.truncate_nonnegative(&clamped, z)? } else { clamped.clone() };
    let thresholds: Vec<u64> = spline.knots.iter().map(|t| t >> z).collect();
    // |⌊a_c/2^z⌋ − tₖ/2^z| ≤ t_last/2^z < 2^(bits−1).
    let bits = (u64::BITS - (last >> z).leading_zeros() + 1).clamp(2, fp.ring_bits());
    let above = ops.sign_against(&coarse, &thresholds, bits)?;
    // Σₖ cₖ·sₖ per value, for public coefficients c (local).
    let weighted = |c: &[u64]| -> Vec<u64> {
        above.chunks(k.max(1)).map(|row| row.iter().zip(c).fold(0, |sum, (s, c)| fp.add(sum, fp.mul(*c, *s)))).collect()
    };
    let knot_terms: Vec<u64> = spline.weights.iter().zip(&spline.knots).map(|(w, t)| fp.mul(*w, *t)).collect();
    let slopes = ops.add_public(&weighted(&spline.weights), spline.slope);
    let intercepts = weighted(&knot_terms);
    let products = ops.mul(&clamped, &slopes)?;
    let sums = ops.sub(&products, &intercepts);
    // The spline's sum is at most 2^(ℓ−3) in magnitude by construction (its scale leaves
    // the ring 4 bits of headroom): inside the bounded truncation's range.
    let g = ops.truncate_bounded(&ops.add_public(&sums, spline.offset), spline.shift)?;
    Ok(ops.add_public(&g, fp.encode(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring_ops::PlainOps;
    use crate::ring_ops::tests::both;
    use moat_nn::FixedPoint;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// JSON carries the command line's names; the earlier capitalised ones still parse.
    #[test]
    fn variants_serialise_by_their_command_line_names() -> std::result::Result<(), serde_json::Error> {
        for kind in Softmax::ALL {
            assert_eq!(serde_json::to_string(&kind)?, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<Softmax>(&format!("\"{kind}\""))?, kind);
            assert_eq!(serde_json::from_str::<Softmax>(&format!("\"{kind:?}\""))?, kind);
        }
        assert!(serde_json::from_str::<Softmax>("\"EXP\"").is_err());
        Ok(())
    }

    fn logits(fp: FixedPoint, rows: usize, cols: usize, spread: f64, seed: u64) -> (Vec<f64>, Vec<u64>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let z: Vec<f64> = (0..rows * cols).map(|_| rng.random_range(-spread..spread)).collect();
        let encoded = z.iter().map(|v| fp.encode(*v)).collect();
        (z.iter().map(|v| fp.decode(fp.encode(*v))).collect(), encoded)
    }

    #[test]
    fn plaintext_softmax_is_close_to_float_softmax() -> Result<()> {
        let fp = FixedPoint::default();
        for (kind, bound) in [(Softmax::Exp, 0.005), (Softmax::Relu, 0.002), (Softmax::Spline, 0.002)] {
            for spread in [1.0, 8.0, 40.0] {
                let (z, enc) = logits(fp, 50, 10, spread, 3);
                let p = softmax(&mut PlainOps::new(fp), &enc, 10, kind)?;
                let want = kind.reference(&z, 10);
                let worst = p.iter().zip(&want).map(|(a, b)| (fp.decode(*a) - b).abs()).fold(0.0, f64::max);
                eprintln!("{kind} spread {spread}: max abs error {worst:.2e}");
                assert!(worst < bound, "{kind} spread {spread}: max error {worst}");
                for row in p.chunks(10) {
                    let total: f64 = row.iter().map(|v| fp.decode(*v)).sum();
                    assert!((total - 1.0).abs() < 0.01, "{kind}: row sums to {total}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn two_party_softmax_equals_the_plaintext_one_bit_for_bit() -> Result<()> {
        let fp = FixedPoint::default();
        let (_, enc) = logits(fp, 3, 10, 12.0, 8);
        for kind in Softmax::ALL {
            let (plain, real) = match kind {
                Softmax::Exp => both(fp, &enc, |ops, z| softmax(ops, z, 10, Softmax::Exp))?,
                Softmax::Relu => both(fp, &enc, |ops, z| softmax(ops, z, 10, Softmax::Relu))?,
                Softmax::Spline => both(fp, &enc, |ops, z| softmax(ops, z, 10, Softmax::Spline))?,
            };
            assert_eq!(plain, real, "{kind}");
        }
        Ok(())
    }

    /// The comparisons-and-one-product evaluation is the ring spline's own (`RingSpline::eval`,
    /// the ReLU-per-knot form) bit for bit, below, at and beyond the knots.
    #[test]
    fn the_spline_exponential_is_the_ring_splines_value() -> Result<()> {
        let fp = FixedPoint::default();
        let spline = moat_nn::approx::EXP_NEG.quantize(fp);
        let mut d: Vec<u64> = spline.knots.iter().flat_map(|t| [*t, t - 1, t + 1]).map(|t| fp.neg(t)).collect();
        d.extend([0, fp.neg(1), fp.encode(-7.6), fp.encode(-100.0), fp.encode(-3000.0)]);
        let ops = &mut PlainOps::new(fp);
        let got = spline_exp(ops, &d)?;
        let want: Vec<u64> = d.iter().map(|v| fp.add(spline.eval(fp, *v), fp.encode(1.0))).collect();
        assert_eq!(got, want);
        let (plain, real) = both(fp, &d, |ops, d| spline_exp(ops, d))?;
        assert_eq!(plain, real);
        Ok(())
    }

    /// The spline is the default; a hello or a SIGuard announcement without the field
    /// (written when CrypTen's was the default) still means `exp`.
    #[test]
    fn the_spline_is_the_default_and_an_absent_field_means_exp() -> Result<(), serde_json::Error> {
        use crate::ring_ops::SiGuardConfig;
        assert_eq!(Softmax::default(), Softmax::Spline);
        assert_eq!(SiGuardConfig::default().softmax, Softmax::Spline);
        let mut announced = serde_json::to_value(SiGuardConfig::default())?;
        assert_eq!(serde_json::from_value::<SiGuardConfig>(announced.clone())?.softmax, Softmax::Spline);
        if let Some(fields) = announced.as_object_mut() {
            fields.remove("softmax");
        }
        assert_eq!(serde_json::from_value::<SiGuardConfig>(announced)?.softmax, Softmax::Exp);
        Ok(())
    }

    #[test]
    fn names_parse() {
        assert!("exp".parse::<Softmax>() == Ok(Softmax::Exp) && "x".parse::<Softmax>().is_err());
        for kind in Softmax::ALL {
            assert_eq!(kind.to_string().parse::<Softmax>(), Ok(kind));
        }
    }
}
