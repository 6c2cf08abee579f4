//! Vetted BFV parameter sets and the noise budget they imply.
//!
//! A parameter set is a ring degree `N`, a chain of NTT-friendly primes `q = q₀·q₁⋯` (the
//! response keeps only `q₀`, the first) and the plaintext modulus `t = 2^ℓ` of moat's ring.
//! [`HeParams::new`] validates a set and derives everything the protocol needs from it:
//!
//! * **Security.** The secret key is uniform ternary and the errors are centred binomial with
//!   η = 20 (σ ≈ 3.16, |e| ≤ 20). The homomorphic-encryption standard (Albrecht et al., 2018,
//!   ternary secrets, 128-bit classical security) bounds `log₂ q` by 54, 109, 218, 438 and 881
//!   for `N` = 2048 … 32768; sets above the bound are refused.
//! * **Noise budget.** A response is decrypted at `q₀` and is correct while its noise stays
//!   below `q₀ / 2t`. A quarter of that budget each goes to (a) the flooding noise
//!   `F ∈ [−2^flood, 2^flood)` added at `q` (it shrinks by `q/q₀` in the modulus switch),
//!   (b) the low bits of `c₀` dropped from the response, (c) the low bits of `c₁` dropped
//!   (their error is multiplied by the secret key; bounded by Hoeffding at failure probability
//!   2^−64 per coefficient), and (d) the modulus-switch rounding and the computation noise.
//! * **Circuit privacy.** The flooding noise hides the noise of the product (which depends on
//!   the weights) up to a statistical distance of `E / 2^(flood+1)` per coefficient the client
//!   receives, `E` being the bound of [`HeParams::product_noise_bound`]; layers whose bound would
//!   give less than [`MIN_FLOOD_SECURITY`] bits are refused by the server.
//!
//! | set | N | log₂ q | security | flooding | response bits (c₁, c₀) |
//! |---|---|---|---|---|---|
//! | [`HeParams::n4096`] | 4096 | 109 (60 + 49) | 128 | 2^68 | 49, 40 (ℓ = 37) |
//! | [`HeParams::n8192`] | 8192 | 180 (3 × 60) | 128 | 2^139 | 49, 40 (ℓ = 37) |

use std::sync::Arc;

use fhe::bfv::{BfvParameters, BfvParametersBuilder};
use fhe_math::rq::Context;
use fhe_math::zq::Modulus;
use moat_nn::FixedPoint;

use crate::error::{MpcError, Result};
use crate::memo::Memo;

/// Bits of the CBD error parameter: errors are `Σ₂₀ b − Σ₂₀ b'` (variance 10), |e| ≤ 20.
pub const ERROR_BOUND: u64 = 20;

/// Variance handed to fhe-math's centred binomial sampler (η = 2 · variance = 20).
pub(crate) const ERROR_VARIANCE: usize = 10;

/// Minimum statistical circuit-privacy level (bits) a server accepts for a layer.
pub const MIN_FLOOD_SECURITY: f64 = 40.0;

/// `ln(2 / p)` for the Hoeffding bounds, `p = 2^−64` (failure probability per coefficient).
const LN_TWO_OVER_P: f64 = 65.0 * std::f64::consts::LN_2;

/// Largest `log₂ q` for 128-bit security with ternary secrets (HE standard), by degree.
fn max_modulus_bits(degree: usize) -> Option<f64> {
    match degree {
        2048 => Some(54.0),
        4096 => Some(109.0),
        8192 => Some(218.0),
        16384 => Some(438.0),
        32768 => Some(881.0),
        _ => None,
    }
}

/// A validated BFV parameter set for moat's linear layers (see the module documentation).
#[derive(Clone, Debug)]
pub struct HeParams {
    bfv: Arc<BfvParameters>,
    fixed: FixedPoint,
    full: Arc<Context>,
    response: Arc<Context>,
    /// `⌊q/t⌋ mod qᵢ`.
    delta: Vec<u64>,
    /// `q mod t`.
    q_mod_t: u64,
    modulus_bits: f64,
    flood_bits: u32,
    drop_c0: u32,
    drop_c1: u32,
    width_c0: u32,
    width_c1: u32,
}

impl HeParams {
    /// Validates and derives a parameter set: ring degree `degree`, ciphertext primes `moduli`
    /// (the first is the response modulus `q₀`; each prime ≡ 1 mod 2N, at most 62 bits,
    /// at least two of them) and the plaintext ring of `fixed` (`t = 2^ℓ`).
    pub fn new(degree: usize, moduli: &[u64], fixed: FixedPoint) -> Result<Self> {
        const CTX: &str = "HeParams::new";
        let max_bits = max_modulus_bits(degree).ok_or_else(|| {
            MpcError::invalid(CTX, format!("degree {degree} is not one of 2048, 4096, 8192, 16384, 32768"))
        })?;
        if moduli.len() < 2 {
            return Err(MpcError::invalid(CTX, "need at least two primes (one is dropped before the response)"));
        }
        let ring_bits = fixed.ring_bits();
        if ring_bits > 60 {
            return Err(MpcError::invalid(CTX, format!("ring of {ring_bits} bits: t = 2^ℓ must stay below 2^60")));
        }
        let t = 1u64 << ring_bits;
        let modulus_bits: f64 = moduli.iter().map(|&q| (q as f64).log2()).sum();
        if modulus_bits > max_bits {
            return Err(MpcError::invalid(
                CTX,
                format!("log2 q = {modulus_bits:.1} exceeds {max_bits} bits, the 128-bit bound for N = {degree}"),
            ));
        }
        let bfv = BfvParametersBuilder::new()
            .set_degree(degree)
            .set_plaintext_modulus(t)
            .set_moduli(moduli)
            .build_arc()
            .map_err(|e| MpcError::invalid(CTX, format!("fhe.rs rejects the set: {e}")))?;
        let full = bfv.context_at_level(0).map_err(|e| MpcError::invalid(CTX, e.to_string()))?.clone();
        let response =
            bfv.context_at_level(bfv.max_level()).map_err(|e| MpcError::invalid(CTX, e.to_string()))?.clone();
        let q0 = moduli[0];
        if q0 <= t {
            return Err(MpcError::invalid(CTX, format!("first prime {q0} must exceed t = 2^{ring_bits}")));
        }

        // q mod t (t a power of two: wrapping products), and ⌊q/t⌋ ≡ −(q mod t)·t⁻¹ mod qᵢ.
        let q_mod_t = moduli.iter().fold(1u64, |acc, &q| acc.wrapping_mul(q)) & (t - 1);
        let mut delta = Vec::with_capacity(moduli.len());
        for &q in moduli {
            let m = Modulus::new(q).map_err(|e| MpcError::invalid(CTX, e.to_string()))?;
            let t_inv =
                m.inv(m.reduce(t)).ok_or_else(|| MpcError::invalid(CTX, format!("t not invertible mod {q}")))?;
            delta.push(m.neg(m.mul(m.reduce(q_mod_t), t_inv)));
        }

        // Noise budget at q₀: |noise| < q₀ / 2t, split in quarters (module documentation).
        let budget = q0 as f64 / (2.0 * t as f64);
        let quarter = budget / 4.0;
        let log_drop_modulus = modulus_bits - (q0 as f64).log2();
        let flood_bits = (quarter.log2() + log_drop_modulus).floor();
        let hoeffding_unit = (2.0 * degree as f64 * LN_TWO_OVER_P).sqrt(); // Σ of N terms in [−1, 1]·s
        let drop_c0 = quarter.log2().floor() + 1.0;
        let drop_c1 = (quarter / hoeffding_unit).log2().floor() + 1.0;
        if drop_c1 < 0.0 || flood_bits < 1.0 {
            return Err(MpcError::invalid(CTX, format!("no noise budget left: q0/2t = 2^{:.1}", budget.log2())));
        }
        let rest = 0.5 + 0.5 * hoeffding_unit + 1.0;
        if rest > quarter {
            return Err(MpcError::invalid(CTX, "modulus-switch noise exceeds the budget"));
        }
        let (flood_bits, drop_c0, drop_c1) = (flood_bits as u32, drop_c0 as u32, drop_c1 as u32);
        // `round(c / 2^k)` is sent mod 2^(⌈log₂ q₀⌉ − k): the one value that wraps (c within
        // 2^(k−1) below 2^⌈log₂ q₀⌉, i.e. just below q₀) comes back as 0 ≡ q₀, still within 2^(k−1).
        let width = |k: u32| modulus_width(q0) - k;
        let params = Self {
            bfv,
            fixed,
            full,
            response,
            delta,
            q_mod_t,
            modulus_bits,
            flood_bits,
            drop_c0,
            drop_c1,
            width_c0: width(drop_c0),
            width_c1: width(drop_c1),
        };
        // The public-key noise alone must leave the required privacy margin.
        let bits = params.flood_security(params.public_key_noise_bound());
        if bits < MIN_FLOOD_SECURITY + 8.0 {
            return Err(MpcError::invalid(CTX, format!("flooding of 2^{flood_bits} leaves only {bits:.1} bits")));
        }
        Ok(params)
    }

    /// The default set: N = 4096, q ≈ 2^109 (a 60-bit and a 49-bit prime), 128-bit security —
    /// the shape of Cheetah's parameters. Flooding 2^68: ≥ 40 bits of statistical circuit
    /// privacy per received coefficient for layers whose product-noise bound is ≤ 2^28.
    pub fn n4096(fixed: FixedPoint) -> Result<Self> {
        Self::vetted(4096, &[60, 49], fixed)
    }

    /// A stronger set: N = 8192, q ≈ 2^180 (three 60-bit primes), 128-bit security; flooding
    /// 2^139 (≥ 100 bits of circuit privacy per coefficient for product-noise bounds up to
    /// 2^40), for ≈ 1.65× the query bytes per value of [`HeParams::n4096`] and about three
    /// times the work per value.
    pub fn n8192(fixed: FixedPoint) -> Result<Self> {
        Self::vetted(8192, &[60, 60, 60], fixed)
    }

    /// A vetted set (primes of `sizes` bits ≡ 1 mod 2N), built once per process and fixed
    /// point: the prime search and fhe.rs's tables take milliseconds (≈ 6 ms for N = 4096),
    /// and a server needs the set for every session, SIGuard's preparation for every query.
    /// The set is public and immutable; clones share it.
    fn vetted(degree: usize, sizes: &[usize], fixed: FixedPoint) -> Result<Self> {
        /// `(N, ℓ, f)` → the set.
        static SETS: Memo<(usize, u32, u32), HeParams> = Memo::new();
        SETS.get_or_build((degree, fixed.ring_bits(), fixed.frac_bits()), || {
            Self::new(degree, &generate_primes(degree, sizes)?, fixed)
        })
    }

    /// The fhe.rs parameters (contexts for every level, plaintext modulus `t = 2^ℓ`).
    pub fn bfv(&self) -> &Arc<BfvParameters> {
        &self.bfv
    }

    /// The plaintext ring.
    pub fn fixed_point(&self) -> FixedPoint {
        self.fixed
    }

    /// ℓ (`t = 2^ℓ`).
    pub fn ring_bits(&self) -> u32 {
        self.fixed.ring_bits()
    }

    /// The ring degree N (coefficients per ciphertext).
    pub fn degree(&self) -> usize {
        self.bfv.degree()
    }

    /// The ciphertext primes, response prime first.
    pub fn moduli(&self) -> &[u64] {
        self.bfv.moduli()
    }

    /// `log₂ q`.
    pub fn modulus_bits(&self) -> f64 {
        self.modulus_bits
    }

    /// Classical security level of the set (bits), per the HE standard's ternary table.
    pub fn security_bits(&self) -> u32 {
        128
    }

    /// Flooding noise is uniform in `[−2^b, 2^b)` with `b` this.
    pub fn flood_bits(&self) -> u32 {
        self.flood_bits
    }

    /// Low bits dropped from the response's `(c₀, c₁)` coefficients.
    pub fn dropped_bits(&self) -> (u32, u32) {
        (self.drop_c0, self.drop_c1)
    }

    /// Bits sent per response coefficient of `(c₀, c₁)`.
    pub fn response_widths(&self) -> (u32, u32) {
        (self.width_c0, self.width_c1)
    }

    /// Bytes of one query ciphertext on the wire (a 32-byte seed and `c₀` in NTT form).
    pub fn query_bytes(&self) -> usize {
        32 + self.moduli().iter().map(|&q| modulus_width(q) as usize * self.degree()).sum::<usize>().div_ceil(8)
    }

    /// Bytes of one response ciphertext carrying `used` output coefficients.
    pub fn response_bytes(&self, used: usize) -> usize {
        (self.degree() * self.width_c1 as usize).div_ceil(8) + (used * self.width_c0 as usize).div_ceil(8)
    }

    /// The noise of the public-key re-randomisation, `e_pk·u + e₁·s + e₀` (worst case).
    pub fn public_key_noise_bound(&self) -> f64 {
        2.0 * ERROR_BOUND as f64 * self.degree() as f64 + ERROR_BOUND as f64
    }

    /// Bound (failing with probability ≤ 2^−64) on the noise of a response before flooding,
    /// for weight polynomials whose squared 2-norms sum to `weight_norm_sq` over the terms of
    /// one output: the client's encryption noise and rounding and the rounding of the server's
    /// share added to the query (42 independent terms of range 1 per coefficient, Hoeffding),
    /// the mask rounding and the re-randomisation.
    pub fn product_noise_bound(&self, weight_norm_sq: f64) -> f64 {
        let hoeffding = (42.0 * weight_norm_sq * LN_TWO_OVER_P / 2.0).sqrt();
        hoeffding + 1.0 + self.public_key_noise_bound()
    }

    /// Bits of statistical circuit privacy per received coefficient when the pre-flooding
    /// noise is bounded by `noise`: `−log₂(noise / 2^(flood+1))`.
    pub fn flood_security(&self, noise: f64) -> f64 {
        self.flood_bits as f64 + 1.0 - (noise + 1.0).log2()
    }

    pub(crate) fn full_context(&self) -> &Arc<Context> {
        &self.full
    }

    pub(crate) fn response_context(&self) -> &Arc<Context> {
        &self.response
    }

    pub(crate) fn delta(&self) -> &[u64] {
        &self.delta
    }

    pub(crate) fn q_mod_t(&self) -> u64 {
        self.q_mod_t
    }
}

/// Bits needed to send residues mod `q`.
pub(crate) fn modulus_width(q: u64) -> u32 {
    64 - (q - 1).leading_zeros()
}

/// The largest distinct NTT-friendly primes (≡ 1 mod 2N) of the given sizes, in order.
fn generate_primes(degree: usize, sizes: &[usize]) -> Result<Vec<u64>> {
    let mut out: Vec<u64> = Vec::with_capacity(sizes.len());
    for &bits in sizes {
        let mut upper = 1u64 << bits;
        loop {
            let p = fhe_math::zq::primes::generate_prime(bits, 2 * degree as u64, upper)
                .ok_or_else(|| MpcError::invalid("HeParams", format!("no {bits}-bit prime ≡ 1 mod {}", 2 * degree)))?;
            if out.contains(&p) {
                upper = p;
            } else {
                out.push(p);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vetted sets are built once per process and fixed point: the same fhe.rs parameters
    /// again, equal to a fresh build from the same primes; another ring gets its own.
    #[test]
    fn vetted_sets_are_built_once_per_fixed_point() -> Result<()> {
        let fp = FixedPoint::default();
        let (a, b) = (HeParams::n4096(fp)?, HeParams::n4096(fp)?);
        assert!(Arc::ptr_eq(a.bfv(), b.bfv()));
        let fresh = HeParams::new(4096, a.moduli(), fp)?;
        assert_eq!(
            (fresh.moduli(), fresh.dropped_bits(), fresh.flood_bits()),
            (a.moduli(), a.dropped_bits(), a.flood_bits())
        );
        let other = HeParams::n4096(FixedPoint::new(30, 10)?)?;
        assert!(!Arc::ptr_eq(a.bfv(), other.bfv()));
        assert_eq!(other.ring_bits(), 30);
        Ok(())
    }

    #[test]
    fn default_set_matches_the_documented_budget() -> Result<()> {
        let p = HeParams::n4096(FixedPoint::default())?;
        assert_eq!(p.degree(), 4096);
        assert_eq!(p.moduli().len(), 2);
        assert!(p.modulus_bits() <= 109.0 && p.modulus_bits() > 108.9);
        assert_eq!(p.flood_bits(), 68);
        assert_eq!(p.response_widths(), (40, 49));
        assert_eq!(p.query_bytes(), 32 + 4096 * 109 / 8);
        // 40 bits of circuit privacy hold up to a product-noise bound of 2^28.
        assert!(p.flood_security(2f64.powi(28)) >= 40.0);
        Ok(())
    }

    #[test]
    fn delta_is_floor_q_over_t() -> Result<()> {
        let p = HeParams::n4096(FixedPoint::default())?;
        let t = 1u128 << 37;
        let (q0, q1) = (p.moduli()[0] as u128, p.moduli()[1] as u128);
        // q < 2^109 fits in u128.
        let q = q0 * q1;
        let delta = q / t;
        assert_eq!(p.delta()[0] as u128, delta % q0);
        assert_eq!(p.delta()[1] as u128, delta % q1);
        assert_eq!(p.q_mod_t() as u128, q % t);
        Ok(())
    }

    #[test]
    fn insecure_or_broken_sets_are_refused() -> Result<()> {
        let fp = FixedPoint::default();
        // Too large a modulus for N = 4096 (128-bit bound is 109 bits).
        let big = generate_primes(4096, &[60, 55])?;
        assert!(HeParams::new(4096, &big, fp).is_err());
        // A single prime leaves nothing to drop.
        assert!(HeParams::new(4096, &big[..1], fp).is_err());
        // Not NTT-friendly for this degree.
        assert!(HeParams::new(4096, &[(1 << 59) - 55, 1 << 40], fp).is_err());
        // Unsupported degree.
        assert!(HeParams::new(1000, &big, fp).is_err());
        // t too large for the first prime's budget.
        let small = generate_primes(4096, &[40, 60])?;
        assert!(HeParams::new(4096, &small, fp).is_err());
        Ok(())
    }

    #[test]
    fn stronger_set_validates() -> Result<()> {
        let p = HeParams::n8192(FixedPoint::default())?;
        assert_eq!((p.flood_bits(), p.response_widths()), (139, (40, 49)));
        assert_eq!(p.degree(), 8192);
        assert!(p.flood_security(2f64.powi(30)) > 100.0);
        Ok(())
    }
}
