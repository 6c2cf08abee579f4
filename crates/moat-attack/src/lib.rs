//! Attacks on (secure) inference services, and their measurement.
//!
//! * [`seek`]: SEEK (Chen & Fan, ePrint 2022/1200) — a malicious client of hybrid HE + MPC
//!   inference alters its own shares of intermediate features and extracts the model layer by
//!   layer from label-only answers.
//! * [`defense`]: the server's defender, MemGuard in plaintext and guarded victims (MemGuard,
//!   SIGuard) for measuring the defenses against the membership attacks.
//! * [`mia`]: membership inference — threshold, shadow-model, LiRA, RMIA and label-only
//!   attacks against any victim that answers class-score vectors, and their metrics.
//! * [`victim`]: what a black-box attack queries — one interface over a local ONNX model
//!   (float or fixed point), the simulated two-party engine, a real secure session and an
//!   OIP service over HTTP.
//! * [`oracle`]: what SEEK queries (it tampers with the client's shares inside the protocol)
//!   — the simulated two-party engine (fast, the same semantics) or a real session with a
//!   server over a channel.
//! * [`psml`]: PSML (Sanyal et al., arXiv 2307.01292) — fingerprinting a served model zoo,
//!   steering its router to one victim, and extracting it.

pub mod defense;
pub mod error;
pub mod mia;
pub mod oracle;
pub mod psml;
pub mod seek;
pub mod victim;

pub use error::{AttackError, Result};
pub use oracle::{Oracle, ServiceTamperOracle, SessionTamperOracle, SimulatedTamperOracle};
