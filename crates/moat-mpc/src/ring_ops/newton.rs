//! Reciprocal and inverse square root of shared fixed-point values by Newton's iteration, each
//! from a start read off comparisons with public thresholds.
//!
//! Newton's iteration needs as many steps as its start is far from the answer. From one
//! public start (the function at one point of the range) a wide range costs many steps:
//! `1/√x` over `[2^−8, 2^12]` from `1/√hi` needed 20, each three sequential products and
//! four truncations — 460 of SIGuard's 649 flights per inner step. Every step is a chain of
//! round trips; a comparison batch is one.
//!
//! So both parties first compare `x` with the public thresholds `tⱼ = lo·2^(j/m)`,
//! `j = 1..=k`, `k = ⌈m·log₂(hi/lo)⌉` (`m` pieces per octave): **one** [`RingOps::sign`]
//! batch of `k` tests per value. The thermometer bits `bⱼ = [x ≥ tⱼ]` give the start, the
//! step function `y₀ = f(lo·2^((i+½)/m))` on the piece `[tᵢ, tᵢ₊₁)`, locally:
//!
//! ```text
//! y₀ = v₀ + Σⱼ bⱼ·(vⱼ − vⱼ₋₁)      vᵢ = encode(f(lo·2^((i+½)/m)))
//! ```
//!
//! (the sum telescopes to `vᵢ` on piece `i`; piece 0 extends below `lo`, piece `k` above
//! `t_k ≥ hi`). On a piece the start is within a factor `2^(1/2m)` of `f`, so few steps
//! remain; their number is found by running the iteration in floating point over the range
//! ([`Start::steps`]), with the fixed-point rounding left to the tests.
//!
//! **Learns:** nothing beyond its share of the result — sign tests, products and truncations on
//! shares. **Cost** for `n` values: one batch of `n·k` sign tests against the `k` public
//! thresholds ([`RingOps::sign_against`]: each value's `k` tests share their leaf OTs), then
//! per step the products and truncations of `n` values of [`Inverse`]'s step. Flights from `P0`
//! with the products' triples made ahead (as SIGuard makes them): [`reciprocal`] over `[1, 10]`
//! at `f = 12` (`m = 4`, `k = 14`) takes 2 steps, 29 flights (6 steps from `2/(lo + hi)`: 70);
//! [`inv_sqrt`] over `[2^−8, 2^12]` (`m = 4`, `k = 80`) 2 steps, 41 flights (20 steps from
//! `1/√hi`: 460) — both with the general truncation; the steps' products are small on the
//! range, so [`Newton::apply`] truncates them with [`RingOps::truncate_bounded`] (SIGuard's
//! inner step: 143 → 110 flights with this and the softmax's and the update's bounded
//! truncations).

use super::{RingOps, bounded_product_limit, truncate_known};
use crate::error::{MpcError, Result};

/// Pieces per octave of both starts.
pub const PIECES_PER_OCTAVE: u32 = 4;

/// A piecewise-constant start for a positive decreasing `f` on `[lo, hi]` (module
/// documentation): `m` pieces per octave.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    lo: f64,
    hi: f64,
    per_octave: u32,
    /// `tⱼ`, `j = 1..=k`.
    thresholds: Vec<f64>,
    /// `f` at the geometric middle of each of the `k + 1` pieces.
    values: Vec<f64>,
}

impl Start {
    /// The start for `f` on `[lo, hi]` with `per_octave` pieces per octave; refuses a range that
    /// is not positive or a zero piece count.
    pub fn new(lo: f64, hi: f64, per_octave: u32, f: impl Fn(f64) -> f64) -> Result<Self> {
        if !(lo > 0.0 && hi >= lo && hi.is_finite()) || per_octave == 0 {
            return Err(MpcError::invalid("newton", format!("range [{lo}, {hi}] with {per_octave} pieces per octave")));
        }
        let m = f64::from(per_octave);
        let k = ((hi / lo).log2() * m).ceil().max(0.0) as usize;
        let at = |j: f64| lo * (j / m).exp2();
        let thresholds = (1..=k).map(|j| at(j as f64)).collect();
        let values = (0..=k).map(|i| f(at(i as f64 + 0.5))).collect();
        Ok(Self { lo, hi, per_octave, thresholds, values })
    }

    /// The number of comparisons per value.
    pub fn comparisons(&self) -> usize {
        self.thresholds.len()
    }

    /// The start for `x` in floating point (what [`Self::shared`] computes, before rounding).
    pub fn at(&self, x: f64) -> f64 {
        self.values[self.thresholds.partition_point(|t| x >= *t)]
    }

    /// Newton steps from this start until `error(x, y) ≤ target` for every `x` of `[lo, hi]`
    /// (a geometric grid of 64 points per piece and both ends of each piece), in floating point.
    pub fn steps(&self, target: f64, step: impl Fn(f64, f64) -> f64, error: impl Fn(f64, f64) -> f64) -> u32 {
        let hi = self.hi;
        let ratio = (1.0 / (64.0 * f64::from(self.per_octave))).exp2();
        let mut xs: Vec<f64> =
            std::iter::successors(Some(self.lo), |x| Some(x * ratio)).take_while(|x| *x <= hi).collect();
        xs.extend(self.thresholds.iter().filter(|t| **t <= hi).flat_map(|t| [*t, t * (1.0 - 1e-12)]));
        xs.push(hi);
        let mut worst = 0;
        for x in xs {
            let (mut y, mut steps) = (self.at(x), 0);
            while error(x, y) > target && steps < 64 {
                y = step(x, y);
                steps += 1;
            }
            worst = worst.max(steps);
        }
        worst
    }

    /// This party's share of the start for each shared `x` (at 2^f): one batch of
    /// `x.len() · k` sign tests against the thresholds ([`RingOps::sign_against`]), the rest
    /// local.
    pub fn shared<O: RingOps + ?Sized>(&self, ops: &mut O, x: &[u64]) -> Result<Vec<u64>> {
        let fp = ops.fixed();
        let k = self.comparisons();
        let encoded: Vec<u64> = self.values.iter().map(|v| fp.encode(*v)).collect();
        if k == 0 {
            return Ok(ops.public(x.len(), encoded[0]));
        }
        let thresholds: Vec<u64> = self.thresholds.iter().map(|t| fp.encode(*t)).collect();
        let differences: Vec<u64> = encoded.windows(2).map(|w| fp.sub(w[1], w[0])).collect();
        let bits = ops.sign_against(x, &thresholds, fp.ring_bits())?;
        let base = ops.public(x.len(), encoded[0]);
        Ok(bits
            .chunks(k)
            .zip(base)
            .map(|(row, y)| row.iter().zip(&differences).fold(y, |y, (b, d)| fp.add(y, fp.mul(*b, *d))))
            .collect())
    }
}

/// The function a [`Newton`] iteration computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inverse {
    /// `1/s`: `y ← y(2 − s·y)`, to a relative error below `2^−(f+1)`.
    Reciprocal,
    /// `1/√x`: `y ← y(3 − x·y²)/2`, to a relative error below `2^−f`. Outside the range the
    /// start is that of the nearest piece; the iteration still converges for `x` up to three
    /// times the last threshold (`x·y₀² < 3`).
    InvSqrt,
}

impl Inverse {
    fn value(self, x: f64) -> f64 {
        match self {
            Inverse::Reciprocal => 1.0 / x,
            Inverse::InvSqrt => 1.0 / x.sqrt(),
        }
    }

    fn step(self, x: f64, y: f64) -> f64 {
        match self {
            Inverse::Reciprocal => y * (2.0 - x * y),
            Inverse::InvSqrt => y * (3.0 - x * y * y) / 2.0,
        }
    }

    fn target(self, frac_bits: u32) -> f64 {
        match self {
            Inverse::Reciprocal => (-(frac_bits as f64) - 1.0).exp2(),
            Inverse::InvSqrt => (-(frac_bits as f64)).exp2(),
        }
    }
}

/// One planned iteration: the start for a function on `[lo, hi]` and the steps it needs at
/// `f` fractional bits (made once, applied to any number of batches).
#[derive(Clone, Debug, PartialEq)]
pub struct Newton {
    inverse: Inverse,
    start: Start,
    steps: u32,
}

impl Newton {
    /// The plan for `inverse` on `[lo, hi]` at `frac_bits`; refuses a range that is not positive.
    pub fn new(inverse: Inverse, lo: f64, hi: f64, frac_bits: u32) -> Result<Self> {
        let start = Start::new(lo, hi, PIECES_PER_OCTAVE, |x| inverse.value(x))?;
        let steps = start.steps(
            inverse.target(frac_bits),
            |x, y| inverse.step(x, y),
            |x, y| (y / inverse.value(x) - 1.0).abs(),
        );
        Ok(Self { inverse, start, steps })
    }

    /// Newton steps after the start.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The largest magnitude of a product in a step, for `x` in the plan's `[lo, hi]` and
    /// every iterate within a factor 2 of the answer (the start is within `2^(1/2m)`, and
    /// the steps converge): `s·y ≤ 2` and `y·u ≤ 2·(2/lo)` for the reciprocal; `x·y ≤ 2√hi`,
    /// `x·y·y ≤ 4` and `y·u ≤ 3·(2/√lo)` for the inverse square root.
    fn largest_product(&self) -> f64 {
        let (lo, hi) = (self.start.lo, self.start.hi);
        match self.inverse {
            Inverse::Reciprocal => 2f64.max(4.0 / lo),
            Inverse::InvSqrt => (2.0 * hi.sqrt()).max(4.0).max(6.0 / lo.sqrt()),
        }
    }

    /// This party's share of the function of each shared `x` (at 2^f), for `x ∈ [lo, hi]`.
    ///
    /// Its truncations are [`RingOps::truncate_bounded`] (a third of the bytes of the
    /// general one, and fewer flights) when the plan's products stay below half of that
    /// truncation's bound (`2^(ℓ−2−2f)`: 2048 at ℓ = 37, f = 12), and [`RingOps::truncate`]
    /// otherwise. Both are exact, so the result does not depend on which; for `x` outside
    /// `[lo, hi]` the iteration itself is off (and the plaintext reference may refuse a
    /// product that leaves the bound).
    pub fn apply<O: RingOps + ?Sized>(&self, ops: &mut O, x: &[u64]) -> Result<Vec<u64>> {
        let fp = ops.fixed();
        let f = fp.frac_bits();
        let bounded = 2.0 * self.largest_product() < bounded_product_limit(fp);
        // `floor(a·b / 2^shift)`, exact either way.
        let product = |ops: &mut O, a: &[u64], b: &[u64], shift: u32| -> Result<Vec<u64>> {
            let ab = ops.mul(a, b)?;
            truncate_known(ops, &ab, shift, bounded)
        };
        let mut y = self.start.shared(ops, x)?;
        for _ in 0..self.steps {
            y = match self.inverse {
                Inverse::Reciprocal => {
                    let sy = product(ops, x, &y, f)?;
                    let u = ops.sub(&ops.public(x.len(), fp.encode(2.0)), &sy);
                    product(ops, &y, &u, f)?
                }
                Inverse::InvSqrt => {
                    // x·y first: y² alone would lose its bits at 2^f when y is small.
                    let xy = product(ops, x, &y, f)?;
                    let xyy = product(ops, &xy, &y, f)?;
                    let u = ops.sub(&ops.public(x.len(), fp.encode(3.0)), &xyy);
                    // floor(floor(a/2^f)/2) = floor(a/2^(f+1)): the halving in the same truncation.
                    product(ops, &y, &u, f + 1)?
                }
            };
        }
        Ok(y)
    }
}

/// `1/s` (at 2^f) for every `s ∈ [lo, hi]` (at 2^f) ([`Inverse::Reciprocal`]).
pub fn reciprocal<O: RingOps + ?Sized>(ops: &mut O, s: &[u64], lo: f64, hi: f64) -> Result<Vec<u64>> {
    Newton::new(Inverse::Reciprocal, lo, hi, ops.fixed().frac_bits())?.apply(ops, s)
}

/// `1/√x` (at 2^f) for every `x ∈ [lo, hi]` (at 2^f) ([`Inverse::InvSqrt`]).
pub fn inv_sqrt<O: RingOps + ?Sized>(ops: &mut O, x: &[u64], lo: f64, hi: f64) -> Result<Vec<u64>> {
    Newton::new(Inverse::InvSqrt, lo, hi, ops.fixed().frac_bits())?.apply(ops, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring_ops::PlainOps;
    use crate::ring_ops::tests::both;
    use moat_nn::FixedPoint;

    /// The worst error of `y` as `g(x)` over `xs` (decoded from the ring), in units of `2^−f`.
    fn worst_ulps(fp: FixedPoint, xs: &[u64], ys: &[u64], g: impl Fn(f64) -> f64) -> f64 {
        let ulp = fp.decode(1);
        xs.iter().zip(ys).map(|(x, y)| (fp.decode(*y) - g(fp.decode(*x))).abs() / ulp).fold(0.0, f64::max)
    }

    fn grid(fp: FixedPoint, lo: f64, hi: f64, ratio: f64) -> Vec<u64> {
        std::iter::successors(Some(lo), |x| Some(x * ratio)).take_while(|x| *x <= hi).map(|x| fp.encode(x)).collect()
    }

    #[test]
    fn the_start_is_the_step_function_and_its_pieces_cover_the_range() -> Result<()> {
        let start = Start::new(1.0, 10.0, PIECES_PER_OCTAVE, |s| 1.0 / s)?;
        assert_eq!(start.comparisons(), 14);
        assert!((start.at(0.5) - 2f64.powf(-0.125)).abs() < 1e-12);
        assert_eq!(start.at(1.0), start.at(1.18));
        assert_eq!(start.at(11.4), start.at(100.0));
        assert_ne!(start.at(9.99), start.at(11.4));
        // Within 2^(1/8) of 1/s everywhere on the range.
        for s in [1.0, 1.19, 2.0, 3.3, 9.99] {
            let r: f64 = start.at(s) * s;
            assert!(r.log2().abs() <= 0.125 + 1e-12, "{s}: {r}");
        }
        assert!(Start::new(0.0, 1.0, 4, |x| x).is_err() && Start::new(1.0, 2.0, 0, |x| x).is_err());
        assert_eq!(Start::new(3.0, 3.0, 4, |x| 1.0 / x)?.comparisons(), 0);
        Ok(())
    }

    #[test]
    fn few_steps_remain() -> Result<()> {
        assert_eq!(Newton::new(Inverse::Reciprocal, 1.0, 10.0, 12)?.steps(), 2);
        assert_eq!(Newton::new(Inverse::InvSqrt, 1.0 / 256.0, 4096.0, 12)?.steps(), 2);
        assert!(Newton::new(Inverse::InvSqrt, 0.0, 1.0, 12).is_err());
        Ok(())
    }

    #[test]
    fn reciprocal_is_accurate_over_its_range_and_equal_in_both_backends() -> Result<()> {
        let fp = FixedPoint::default();
        let s = grid(fp, 1.0, 10.0, 1.013);
        let y = reciprocal(&mut PlainOps::new(fp), &s, 1.0, 10.0)?;
        let err = worst_ulps(fp, &s, &y, |s| 1.0 / s);
        assert!(err <= 2.0, "{err} ulps");
        let (plain, real) = both(fp, &s[..24], |ops, s| reciprocal(ops, s, 1.0, 10.0))?;
        assert_eq!(plain, real);
        Ok(())
    }

    #[test]
    fn inverse_square_root_is_accurate_over_its_range_and_equal_in_both_backends() -> Result<()> {
        let fp = FixedPoint::default();
        let x = grid(fp, 1.0 / 256.0, 4096.0, 1.09);
        let y = inv_sqrt(&mut PlainOps::new(fp), &x, 1.0 / 256.0, 4096.0)?;
        // At f = 12 the relative precision is bounded by x·y (256 units at x = 2^−8) and by y
        // itself (64 units at x = 2^12): within 2 ulps or 0.5 %.
        for (x, y) in x.iter().zip(&y) {
            let (x, y) = (fp.decode(*x), fp.decode(*y));
            let want = x.sqrt().recip();
            let err = (y - want).abs();
            assert!(err <= 2.0 * fp.decode(1) || err <= 0.005 * want, "1/√{x}: {y}, not {want}");
        }
        // Beyond the range: still positive and converging (x·y₀² < 3).
        let outside = [fp.encode(0.001), fp.encode(8000.0)];
        let y = inv_sqrt(&mut PlainOps::new(fp), &outside, 1.0 / 256.0, 4096.0)?;
        assert!(y.iter().all(|v| fp.decode(*v) > 0.0), "{y:?}");
        let (plain, real) = both(fp, &x[..20], |ops, x| inv_sqrt(ops, x, 1.0 / 256.0, 4096.0))?;
        assert_eq!(plain, real);
        Ok(())
    }
}
