//! Fixed-point arithmetic over the ring Z_2^ℓ — the number system of secure inference.
//!
//! A real `x` is encoded as the ring element `round(x · 2^f) mod 2^ℓ`; the upper half of the
//! ring holds negative numbers (two's complement in ℓ bits). Ring elements are stored in `u64`
//! and kept reduced (`< 2^ℓ`). Because 2^ℓ divides 2^64, sums and products can be computed with
//! wrapping `u64` arithmetic and reduced once at the end: this is exactly what additive secret
//! shares of the same values add and multiply to.
//!
//! **Scales.** Activations carry scale 2^f. A linear layer multiplies them by weights at scale
//! 2^f, adds a bias encoded at scale 2^(2f) and then *truncates* by f bits to return to scale
//! 2^f. The truncation rule of the plaintext fixed-point executor is the exact arithmetic shift
//! of the signed value, `floor(v / 2^f)`; the two-party protocol's truncation agrees with it up
//! to the ±1 ulp documented there.
//!
//! **Range.** A value is representable while |v| < 2^(ℓ−1) at the scale it has: with the default
//! ℓ = 37, f = 12 that is |x| < 2^24 for activations and |x| < 2^12 = 4096 for the unreduced
//! products of a layer before truncation.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// Ring bit-width ℓ and fractional bits f of moat's fixed-point encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedPoint {
    ring_bits: u32,
    frac_bits: u32,
}

impl Default for FixedPoint {
    /// ℓ = 37, f = 12: the setting of Cheetah and CrypTFlow2.
    fn default() -> Self {
        Self { ring_bits: 37, frac_bits: 12 }
    }
}

impl FixedPoint {
    /// A fixed-point setting; requires `2 ≤ ℓ ≤ 64` and `2f + 2 ≤ ℓ` (room for one product).
    pub fn new(ring_bits: u32, frac_bits: u32) -> Result<Self> {
        if !(2..=64).contains(&ring_bits) {
            return Err(NnError::FixedPoint(format!("ring bits ℓ = {ring_bits} not in 2..=64")));
        }
        if 2 * frac_bits + 2 > ring_bits {
            return Err(NnError::FixedPoint(format!(
                "f = {frac_bits} fractional bits leave no room in a {ring_bits}-bit ring (need 2f + 2 ≤ ℓ)"
            )));
        }
        Ok(Self { ring_bits, frac_bits })
    }

    /// ℓ.
    pub fn ring_bits(&self) -> u32 {
        self.ring_bits
    }

    /// f.
    pub fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// 2^ℓ − 1.
    pub fn mask(&self) -> u64 {
        if self.ring_bits == 64 { u64::MAX } else { (1u64 << self.ring_bits) - 1 }
    }

    /// Reduces a wrapping `u64` result mod 2^ℓ.
    #[inline]
    pub fn reduce(&self, v: u64) -> u64 {
        v & self.mask()
    }

    /// The signed integer a ring element stands for, in [−2^(ℓ−1), 2^(ℓ−1)).
    #[inline]
    pub fn to_signed(&self, v: u64) -> i64 {
        let shift = 64 - self.ring_bits;
        ((v << shift) as i64) >> shift
    }

    /// The ring element of a signed integer (reduced mod 2^ℓ).
    #[inline]
    pub fn from_signed(&self, v: i64) -> u64 {
        self.reduce(v as u64)
    }

    /// Encodes a real at scale 2^`scale_bits` (rounding to nearest, saturating at the ring's range).
    pub fn encode_at(&self, x: f64, scale_bits: u32) -> u64 {
        let limit = 2f64.powi(self.ring_bits as i32 - 1) - 1.0;
        let v = (x * 2f64.powi(scale_bits as i32)).round().clamp(-limit, limit);
        self.from_signed(v as i64)
    }

    /// The largest magnitude an activation can have: `2^(ℓ−1−f)` (2^24 for ℓ = 37, f = 12).
    pub fn max_real(&self) -> f64 {
        2f64.powi(self.ring_bits as i32 - 1 - self.frac_bits as i32)
    }

    /// [`Self::encode`] for values from outside (model inputs): refuses a non-finite value or
    /// one outside `(−max_real, max_real)` instead of saturating it, which would silently
    /// change the answer.
    pub fn try_encode(&self, x: f64) -> Result<u64> {
        let limit = self.max_real();
        if !x.is_finite() || x.abs() >= limit {
            return Err(NnError::FixedPoint(format!(
                "{x} is outside the fixed-point range (|x| < 2^{} = {limit}) of ℓ = {}, f = {}",
                self.ring_bits - 1 - self.frac_bits,
                self.ring_bits,
                self.frac_bits
            )));
        }
        Ok(self.encode(x))
    }

    /// Encodes a real at scale 2^f.
    pub fn encode(&self, x: f64) -> u64 {
        self.encode_at(x, self.frac_bits)
    }

    /// Decodes a ring element at scale 2^f.
    pub fn decode(&self, v: u64) -> f64 {
        self.to_signed(v) as f64 / 2f64.powi(self.frac_bits as i32)
    }

    /// Exact truncation by `bits`: `floor(signed(v) / 2^bits)` mod 2^ℓ.
    #[inline]
    pub fn truncate_by(&self, v: u64, bits: u32) -> u64 {
        self.from_signed(self.to_signed(v) >> bits)
    }

    /// Exact truncation by f bits (the rescale after a multiplication).
    #[inline]
    pub fn truncate(&self, v: u64) -> u64 {
        self.truncate_by(v, self.frac_bits)
    }

    /// `a + b` in the ring.
    #[inline]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        self.reduce(a.wrapping_add(b))
    }

    /// `a − b` in the ring.
    #[inline]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        self.reduce(a.wrapping_sub(b))
    }

    /// `a · b` in the ring (no truncation).
    #[inline]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce(a.wrapping_mul(b))
    }

    /// `−a` in the ring.
    #[inline]
    pub fn neg(&self, a: u64) -> u64 {
        self.reduce(a.wrapping_neg())
    }

    /// True when the element is negative (its top bit, bit ℓ−1, is set).
    #[inline]
    pub fn is_negative(&self, v: u64) -> bool {
        (v >> (self.ring_bits - 1)) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_settings() {
        assert!(FixedPoint::new(65, 12).is_err());
        assert!(FixedPoint::new(20, 12).is_err());
        assert!(FixedPoint::new(64, 12).is_ok());
    }

    #[test]
    fn encodes_and_decodes_reals() {
        let fp = FixedPoint::default();
        assert_eq!(fp.encode(1.0), 4096);
        assert_eq!(fp.decode(fp.encode(-2.5)), -2.5);
        assert_eq!(fp.to_signed(fp.mask()), -1);
        assert!(fp.is_negative(fp.encode(-0.001)));
    }

    #[test]
    fn truncation_is_floor_at_edges() {
        let fp = FixedPoint::default();
        let min = 1u64 << 36; // −2^36
        assert_eq!(fp.to_signed(fp.truncate(min)), -(1 << 24));
        assert_eq!(fp.to_signed(fp.truncate(fp.from_signed(-1))), -1);
        assert_eq!(fp.truncate(4095), 0);
    }

    proptest! {
        #[test]
        fn ring_ops_match_signed_integers(a in -(1i64 << 30)..(1i64 << 30), b in -(1i64 << 30)..(1i64 << 30), bits in 40u32..=64) {
            let fp = FixedPoint::new(bits, 12).unwrap_or_default();
            let (ra, rb) = (fp.from_signed(a), fp.from_signed(b));
            prop_assert_eq!(fp.to_signed(fp.add(ra, rb)), a + b);
            prop_assert_eq!(fp.to_signed(fp.sub(ra, rb)), a - b);
            prop_assert_eq!(fp.add(ra, fp.neg(ra)), 0);
            prop_assert_eq!(fp.to_signed(fp.truncate(ra)), a >> 12);
        }

        #[test]
        fn ring_is_closed_under_wrapping(a in any::<u64>(), b in any::<u64>(), bits in 2u32..=64) {
            let fp = FixedPoint::new(bits, 0).unwrap_or_default();
            let (ra, rb) = (fp.reduce(a), fp.reduce(b));
            prop_assert!(fp.mul(ra, rb) <= fp.mask());
            prop_assert_eq!(fp.mul(ra, rb), fp.reduce(a.wrapping_mul(b)));
            prop_assert_eq!(fp.from_signed(fp.to_signed(ra)), ra);
        }

        #[test]
        fn encode_decode_round_trip(x in -1.0e6f64..1.0e6) {
            let fp = FixedPoint::default();
            prop_assert!((fp.decode(fp.encode(x)) - x).abs() <= 0.5 / 4096.0 + 1e-9);
        }
    }
}
