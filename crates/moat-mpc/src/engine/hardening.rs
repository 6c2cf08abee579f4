//! Server-side randomisation a malicious client cannot cancel (RobPI-style hardening).
//!
//! A semi-honest protocol lets a client that alters its shares read intermediate values
//! through label flips (SEEK): every reconstructed value is a deterministic function of the
//! input and of the client's offsets, so a binary search over an offset pins a pre-activation
//! down to one unit. The server breaks that determinism by adding fresh noise to *its own*
//! share of each pre-activation (the input of every ReLU and max pool) and of the logits,
//! drawn from its private randomness anew for every query. The client never sees the noise
//! and cannot subtract it; an honest client's answer moves by at most the noise amplitude at
//! each activation, which costs accuracy (measured by `moat attack seek --harden …`).
//!
//! The noise is uniform on `[−a, a]` in real units, applied at the full resolution of the
//! value's scale (`2^-f` or `2^-2f`). Cost: none in bytes or rounds — the server adds it
//! locally before the non-linear protocol.

use moat_nn::FixedPoint;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Domain separation of a session's hardening-noise stream from its other randomness of the
/// same seed (both backends derive the stream as `seed ^ NOISE_DOMAIN`).
pub(crate) const NOISE_DOMAIN: u64 = 0x6e6f_6973_6521;

/// Noise amplitudes, in real units (0 disables a kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardening {
    /// Half-width `a` of the uniform noise on every ReLU / max-pool input.
    pub activation_noise: f64,
    /// Half-width of the uniform noise on every logit.
    pub logit_noise: f64,
}

impl Hardening {
    /// No noise: the plain semi-honest protocol.
    pub const NONE: Hardening = Hardening { activation_noise: 0.0, logit_noise: 0.0 };

    /// The same amplitude `a` on activations and logits.
    pub fn uniform(a: f64) -> Self {
        Self { activation_noise: a, logit_noise: a }
    }

    /// Whether any noise is added.
    pub fn is_active(&self) -> bool {
        self.activation_noise > 0.0 || self.logit_noise > 0.0
    }

    /// Adds fresh noise of half-width `amplitude` (real units) to the ring values `share`
    /// held at `frac_bits` fractional bits.
    pub fn perturb(fixed: FixedPoint, share: &mut [u64], amplitude: f64, frac_bits: u32, rng: &mut impl Rng) {
        let half_width = (amplitude * (frac_bits as f64).exp2()).round();
        if half_width.is_nan() || half_width < 1.0 {
            return;
        }
        let half_width = half_width.min((1u64 << 40) as f64) as i64;
        for v in share.iter_mut() {
            let e = rng.random_range(-half_width..=half_width);
            *v = fixed.add(*v, fixed.from_signed(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn noise_stays_within_its_amplitude_and_is_fresh() {
        let fp = FixedPoint::default();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut a = vec![fp.encode(1.0); 1000];
        Hardening::perturb(fp, &mut a, 0.01, fp.frac_bits(), &mut rng);
        let bound = (0.01 * 4096.0f64).round() as i64;
        let deltas: Vec<i64> = a.iter().map(|v| fp.to_signed(fp.sub(*v, fp.encode(1.0)))).collect();
        assert!(deltas.iter().all(|d| d.abs() <= bound));
        assert!(deltas.iter().any(|d| *d > bound / 2) && deltas.iter().any(|d| *d < -bound / 2));
        let mut b = vec![fp.encode(1.0); 1000];
        Hardening::perturb(fp, &mut b, 0.01, fp.frac_bits(), &mut rng);
        assert_ne!(a, b);
        let mut c = vec![7u64; 4];
        Hardening::perturb(fp, &mut c, 0.0, 12, &mut rng);
        assert_eq!(c, vec![7; 4]);
    }
}
