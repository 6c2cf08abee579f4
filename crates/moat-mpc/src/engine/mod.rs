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
//!   is opened to the client; with [`Reveal::Probabilities`] a secure softmax
//!   ([`crate::ring_ops::softmax()`], the variant the server announces) runs on the shared
//!   logits and only its result is opened; with [`Reveal::Logits`] the server sends its share
//!   of the logits.
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
pub mod layer;
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

use crate::error::{MpcError, Result};

/// What the client learns at the end of an inference: the one type for outputs, in the
/// protocol's requests, in a server's policy (the most it reveals, [`Reveal::permits`]) and in
/// session admission.
///
/// From least to most revealing: the label; the `k` most likely labels; the probabilities
/// (the logits up to a shift, through a secure softmax); the logits. Both backends compute
/// [`Reveal::Label`], [`Reveal::Probabilities`] and [`Reveal::Logits`]; [`Reveal::TopK`] is
/// a negotiable type that every backend still refuses ([`MpcError::OutputUnsupported`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reveal {
    /// Only the predicted label (argmax inside the protocol): the label-only setting.
    #[default]
    Label,
    /// The `k` most likely labels, most likely first.
    TopK(u32),
    /// The softmax of the logits.
    Probabilities,
    /// The logits (ring elements at scale 2^f).
    Logits,
}

impl Reveal {
    /// Whether a policy revealing at most `self` allows a request for `requested`: the label
    /// is always allowed; top-k within top-k' for `k ≤ k'`; top-k and probabilities within
    /// probabilities; everything within logits (the logits determine the rest).
    pub fn permits(self, requested: Reveal) -> bool {
        match (self, requested) {
            (_, Reveal::Label) | (Reveal::Logits, _) => true,
            (Reveal::Label, Reveal::TopK(k)) => k <= 1,
            (Reveal::TopK(most), Reveal::TopK(k)) => k <= most,
            (Reveal::Probabilities, Reveal::TopK(_) | Reveal::Probabilities) => true,
            (Reveal::Label | Reveal::TopK(_), Reveal::Probabilities | Reveal::Logits)
            | (Reveal::Probabilities, Reveal::Logits) => false,
        }
    }

    /// Whether the two-party backends compute this output today.
    pub fn is_supported(self) -> bool {
        matches!(self, Reveal::Label | Reveal::Probabilities | Reveal::Logits)
    }

    /// [`MpcError::OutputUnsupported`] unless [`Self::is_supported`].
    pub fn check_supported(self) -> Result<()> {
        if self.is_supported() { Ok(()) } else { Err(MpcError::OutputUnsupported { requested: self }) }
    }

    /// [`MpcError::OutputRefused`] unless a policy of at most `allowed` permits `self`.
    pub fn check_allowed(self, allowed: Reveal) -> Result<()> {
        if allowed.permits(self) { Ok(()) } else { Err(MpcError::OutputRefused { requested: self, allowed }) }
    }
}

impl std::fmt::Display for Reveal {
    /// `label`, `top-K`, `probabilities`, `logits` (what [`std::str::FromStr`] reads).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reveal::Label => f.write_str("label"),
            Reveal::TopK(k) => write!(f, "top-{k}"),
            Reveal::Probabilities => f.write_str("probabilities"),
            Reveal::Logits => f.write_str("logits"),
        }
    }
}

impl std::str::FromStr for Reveal {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "label" => Ok(Reveal::Label),
            "probabilities" => Ok(Reveal::Probabilities),
            "logits" => Ok(Reveal::Logits),
            other => other
                .strip_prefix("top-")
                .and_then(|k| k.parse::<u32>().ok())
                .filter(|k| *k >= 1)
                .map(Reveal::TopK)
                .ok_or_else(|| format!("unknown output '{other}' (label, top-K with K ≥ 1, probabilities, logits)")),
        }
    }
}

/// What an inference revealed to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revealed {
    /// The predicted label.
    Label(usize),
    /// The logits as ring elements at scale 2^f.
    Logits(Vec<u64>),
    /// The probabilities (a secure softmax of the logits) as ring elements at scale 2^f.
    Probabilities(Vec<u64>),
}

impl Revealed {
    /// The label: revealed directly, or the argmax of the revealed logits or probabilities
    /// under `fixed` (two probabilities may round to the same value where the logits differ:
    /// the first is taken).
    pub fn label(&self, fixed: moat_nn::FixedPoint) -> Option<usize> {
        match self {
            Revealed::Label(l) => Some(*l),
            Revealed::Logits(v) | Revealed::Probabilities(v) => moat_nn::exec::argmax_ring(fixed, v),
        }
    }

    /// The revealed class vector (logits or probabilities) decoded under `fixed`; `None` for a
    /// label.
    pub fn scores(&self, fixed: moat_nn::FixedPoint) -> Option<Vec<f64>> {
        match self {
            Revealed::Label(_) => None,
            Revealed::Logits(v) | Revealed::Probabilities(v) => Some(v.iter().map(|x| fixed.decode(*x)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_ordered_by_what_they_reveal_and_round_trip_as_text() {
        use Reveal::*;
        let all = [Label, TopK(1), TopK(3), TopK(5), Probabilities, Logits];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                // TopK(1) is the label.
                let expected = j <= i || (*a == Label && *b == TopK(1));
                assert_eq!(a.permits(*b), expected, "{a} permits {b}");
            }
            assert_eq!(a.to_string().parse::<Reveal>(), Ok(*a));
        }
        assert!("top-0".parse::<Reveal>().is_err() && "softmax".parse::<Reveal>().is_err());
        assert_eq!(Label.check_allowed(Label), Ok(()));
        assert_eq!(Logits.check_allowed(Label), Err(MpcError::OutputRefused { requested: Logits, allowed: Label }));
        assert!(TopK(2).check_supported().is_err() && Probabilities.check_supported().is_ok());
    }
}
