//! Defenses against membership inference on what a service reveals, and their measurement.
//!
//! * [`defender`]: the server's defender `h` — an MLP that tells its own members from held-out
//!   data by their probability vectors — trained and stored as a file marked secret.
//! * [`memguard`]: MemGuard (Jia et al., CCS 2019) in plaintext: noise on the revealed
//!   probabilities that fools `h` while keeping the label (the guard of the plaintext OIP path).
//! * [`guarded`]: membership-inference [`crate::mia::Victim`]s answering through a guard —
//!   MemGuard over any victim, SIGuard (`moat_mpc::ring_ops::siguard`) over the plaintext
//!   fixed-point ring operations the two-party protocol is tested bit-identical against — with
//!   the guard's label agreement and distortion counted.
//!
//! The defenses live here, beside the attacks, rather than in `moat-serve`: what defines them is
//! the attack they answer (the defender is trained as a membership attacker on the server's own
//! data), their unit tests and the measurement need the attacks' [`crate::mia::Victim`] and
//! metrics, and SIGuard's protocol half already lives in `moat-mpc`. A server that serves
//! MemGuard calls [`memguard::MemGuard::guard`], a pure function of the revealed vector.

pub mod defender;
pub mod guarded;
pub mod memguard;

pub use defender::{DefenderFile, DefenderInput, DefenderMeta};
pub use guarded::{GuardStats, GuardSummary, MemGuardVictim, SiGuardVictim};
pub use memguard::{Guarded, MemGuard, MemGuardConfig};

use thiserror::Error;

/// What can stop a defense.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DefenseError {
    /// Inconsistent inputs (sizes, a defender of the wrong width or kind, empty sets).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a defender file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A defender file is not valid JSON of the expected format.
    #[error("{path}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The ring operations (SIGuard, the defender's encoding) failed.
    #[error("ring: {0}")]
    Ring(#[from] moat_mpc::MpcError),
}

/// Result with [`DefenseError`].
pub type Result<T> = std::result::Result<T, DefenseError>;

pub(crate) fn invalid(message: impl Into<String>) -> DefenseError {
    DefenseError::Invalid(message.into())
}
