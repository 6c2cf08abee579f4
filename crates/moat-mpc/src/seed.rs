//! Session seeds: 32 bytes (256 bits) that drive one party's randomness in a two-party session
//! — the client's BFV secret key, its masks and OT choices; the server's masks, base OTs and
//! flooding noise.
//!
//! By default a seed comes from the operating system ([`Seed::from_os`]). A fixed seed makes a
//! party's whole transcript predictable (an observer who knows it can re-encrypt candidate
//! inputs and match the client's traffic), so it exists only as [`Seed::insecure_from_u64`],
//! for reproducible experiments and tests. A [`Seed`] is zeroed when dropped and never shown by
//! `Debug`.

use rand::rand_core::OsError;
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore, SeedableRng, TryRngCore};
use rand_chacha::ChaCha20Rng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The operating system could not provide entropy.
#[derive(Debug, thiserror::Error)]
#[error("no entropy from the operating system for a session seed")]
pub struct EntropyError(#[source] pub OsError);

/// A 256-bit seed for one party's session randomness (zeroed on drop, opaque in `Debug`).
#[derive(Clone)]
pub struct Seed([u8; Seed::LEN]);

impl Zeroize for Seed {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Seed {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for Seed {}

impl Seed {
    /// Seed length in bytes.
    pub const LEN: usize = 32;

    /// A fresh seed from the operating system's generator (the default everywhere).
    pub fn from_os() -> Result<Self, EntropyError> {
        let mut bytes = [0u8; Self::LEN];
        let filled = OsRng.try_fill_bytes(&mut bytes).map_err(EntropyError);
        let seed = Self(bytes);
        bytes.zeroize();
        filled.map(|()| seed)
    }

    /// A seed fixed by a public number: reproducible, and **not private** — whoever knows `n`
    /// can recompute every secret of the session. For experiments and tests only; outputs of a
    /// run using it must say so.
    pub fn insecure_from_u64(n: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(n);
        let mut bytes = [0u8; Self::LEN];
        rng.fill_bytes(&mut bytes);
        let seed = Self(bytes);
        bytes.zeroize();
        seed
    }

    /// A seed drawn from another cryptographic generator (e.g. a server's per-session seeds).
    pub fn derive<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; Self::LEN];
        rng.fill_bytes(&mut bytes);
        let seed = Self(bytes);
        bytes.zeroize();
        seed
    }

    /// The generator this seed drives (ChaCha20 keyed by the 32 bytes).
    pub fn rng(&self) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(self.0)
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_seeds_differ_and_fixed_seeds_repeat() -> Result<(), EntropyError> {
        let (a, b) = (Seed::from_os()?, Seed::from_os()?);
        assert_ne!(a.0, b.0);
        assert_eq!(Seed::insecure_from_u64(3).0, Seed::insecure_from_u64(3).0);
        assert_ne!(Seed::insecure_from_u64(3).0, Seed::insecure_from_u64(4).0);
        assert_eq!(a.rng().next_u64(), a.clone().rng().next_u64());
        Ok(())
    }

    #[test]
    fn debug_hides_the_bytes_and_zeroize_clears_them() -> Result<(), EntropyError> {
        let mut seed = Seed::from_os()?;
        assert_eq!(format!("{seed:?}"), "Seed(..)");
        assert_ne!(seed.0, [0; Seed::LEN]);
        seed.zeroize();
        assert_eq!(seed.0, [0; Seed::LEN]);
        fn drops_zeroized<T: ZeroizeOnDrop>() {}
        drops_zeroized::<Seed>();
        Ok(())
    }
}
