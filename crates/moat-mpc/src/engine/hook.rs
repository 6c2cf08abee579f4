//! Client behaviours: what a client does with the shares it holds.
//!
//! In hybrid HE + MPC inference the client holds an additive share of every intermediate value
//! and could alter it before using it. A [`ClientBehaviour`] is called at each such point — a
//! [`TamperPoint`] — with the client's share, and may change it. The honest client ([`Honest`])
//! changes nothing; an attack (SEEK) is another implementation. Both backends of the engine
//! call the behaviour at the same points with shares of the same shape, so one behaviour runs
//! unchanged against the simulated and the real protocol.

use serde::{Deserialize, Serialize};

/// Where in the protocol the client holds a share it could alter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TamperPoint {
    /// The client's share of the input of a ReLU or max pool, before the non-linear protocol
    /// consumes it. Its scale is [`ShareSite::frac_bits`]: `2f` behind a linear layer whose
    /// truncation the walk defers past the ReLU ([`crate::engine::plan`]), `f` otherwise.
    PreActivation,
    /// The client's share of the output of a ReLU or max pool, before it enters the next layer.
    PostActivation,
    /// The client's share of the logits, before the argmax (or before they are revealed).
    Logits,
}

/// The place a share belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ShareSite<'a> {
    /// Which kind of point.
    pub point: TamperPoint,
    /// Index of the node in the (batch-norm folded) graph whose input (pre-activation) or
    /// output (post-activation, logits) this share is.
    pub node: usize,
    /// The node's name.
    pub name: &'a str,
    /// The node's op kind (`Relu`, `MaxPool`, or the op producing the logits).
    pub op: &'static str,
    /// Per-sample shape of the shared value.
    pub shape: &'a [usize],
    /// Fractional bits of the shared value (`f`, or `2f` for a pre-activation behind a
    /// deferred truncation): an offset `δ` on the share moves the value by `δ / 2^frac_bits`.
    pub frac_bits: u32,
}

/// What a client does at each tamper point. Shares are ring elements mod 2^ℓ; the engine
/// reduces them again after the call, so a behaviour may use wrapping arithmetic freely.
pub trait ClientBehaviour {
    /// Called with the client's share at `site`; may alter it in place.
    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]);

    /// Whether [`Self::tamper`] only adds offsets that do not depend on the share's value.
    /// The simulated engine may then apply it to the reconstructed value instead of a share —
    /// the same result, `r + ((x − r) + δ) = x + δ`, without drawing the share randomness.
    fn is_additive(&self) -> bool {
        false
    }
}

/// The honest client: leaves every share as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl ClientBehaviour for Honest {
    fn tamper(&mut self, _site: &ShareSite<'_>, _share: &mut [u64]) {}

    fn is_additive(&self) -> bool {
        true
    }
}

impl<T: ClientBehaviour + ?Sized> ClientBehaviour for &mut T {
    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        (**self).tamper(site, share)
    }

    fn is_additive(&self) -> bool {
        (**self).is_additive()
    }
}

/// A behaviour from a closure (handy in tests and quick experiments).
pub struct FnBehaviour<F>(pub F);

impl<F: FnMut(&ShareSite<'_>, &mut [u64])> ClientBehaviour for FnBehaviour<F> {
    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        (self.0)(site, share)
    }
}
