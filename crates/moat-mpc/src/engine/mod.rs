//! The two-party inference engine: runs a [`moat_nn::QuantizedGraph`] between a server `P0` (holds the
//! weights) and a client `P1` (holds the input) and reveals to the client what it asked for.
//!
//! ## Protocol shape (what each party holds and learns)
//!
//! Every value is additively shared, `x = x₀ + x₁ mod 2^ℓ`. The client starts with the whole
//! input (`x₁ = x`, `x₀ = 0`). Node by node:
//!
//! * **linear** (conv, dense, folded batch norm, average pools): the parties obtain shares of
//!   `L(x) + b` — in the real backend by homomorphic encryption, the server masking its result
//!   with fresh randomness — then shares of its truncation by f bits, at once or after the
//!   ReLU that reads it ([`plan`]). Neither party learns anything: each new share is uniformly
//!   random on its own.
//! * **ReLU / max pool**: comparison protocols on the shares give fresh shares of the result.
//! * **add, reshape, flatten**: local.
//! * **output**: with [`Reveal::Label`] the argmax runs inside the protocol and only the label
//!   is opened to the client; with [`Reveal::Logits`] the server sends its share of the logits.
//!
//! The client may alter its shares at [`TamperPoint`]s through a [`ClientBehaviour`], the
//! server its own shares at the same points and at the reveal point through a
//! [`ServerGuard`]; the engine calls both identically in both backends.
//!
//! ## Backends
//!
//! * [`SimulatedEngine`]: both parties' shares in one process, no cryptography; every
//!   non-linear step is its ideal functionality (reconstruct, compute, re-share with fresh
//!   randomness). Exactly the fixed-point semantics of `moat-nn`, with every tamper point of
//!   the real protocol: the attack oracle.
//! * the real backend: two processes over the transport (linear layers by BFV).

pub mod guard;
pub mod hardening;
pub mod hook;
pub mod plan;
pub mod real;
pub mod simulated;

pub use guard::{GuardFactory, HardeningGuard, HonestServer, ServerGuard};
pub use hardening::Hardening;
pub use hook::{ClientBehaviour, FnBehaviour, Honest, ShareSite, TamperPoint};
pub use plan::RescalePlan;
pub use real::{ClientSession, NodeTiming, ServeOptions, ServerModel};
pub use simulated::SimulatedEngine;

use serde::{Deserialize, Serialize};

/// What the client learns at the end of an inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reveal {
    /// Only the predicted label (argmax inside the protocol): the label-only setting.
    #[default]
    Label,
    /// The logits (ring elements at scale 2^f).
    Logits,
}

/// What an inference revealed to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revealed {
    /// The predicted label.
    Label(usize),
    /// The logits as ring elements at scale 2^f.
    Logits(Vec<u64>),
}

impl Revealed {
    /// The label: revealed directly, or the argmax of the revealed logits under `fixed`.
    pub fn label(&self, fixed: moat_nn::FixedPoint) -> Option<usize> {
        match self {
            Revealed::Label(l) => Some(*l),
            Revealed::Logits(v) => moat_nn::exec::argmax_ring(fixed, v),
        }
    }
}
