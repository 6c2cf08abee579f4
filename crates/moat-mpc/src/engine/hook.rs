//! Client behaviours: what a client does with the shares it holds.
//!
//! In hybrid HE + MPC inference the client holds an additive share of every intermediate value
//! and could alter it before using it. A [`ClientBehaviour`] is called at each such point — a
//! [`TamperPoint`] — with the client's share, and may change it. The honest client ([`Honest`])
//! changes nothing; an attack (SEEK) is another implementation. Both backends of the engine
//! call the behaviour at the same points with shares of the same shape, so one behaviour runs
//! unchanged against the simulated and the real protocol.

use moat_nn::plan::RescalePlan;
use moat_nn::walk::Site;
use moat_nn::{Graph, OpKind};
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
    pub op: OpKind,
    /// Per-sample shape of the shared value.
    pub shape: &'a [usize],
    /// Fractional bits of the shared value (`f`, or `2f` for a pre-activation behind a
    /// deferred truncation): an offset `δ` on the share moves the value by `δ / 2^frac_bits`.
    pub frac_bits: u32,
}

impl<'a> ShareSite<'a> {
    /// The pre-activation point of the walk's node `site` (a ReLU or max pool), when a factor
    /// has `frac_bits` fractional bits.
    pub fn input_of(site: &Site<'a>, frac_bits: u32) -> Self {
        ShareSite {
            point: TamperPoint::PreActivation,
            node: site.index,
            name: &site.node.name,
            op: site.node.op.op_kind(),
            shape: site.input_shape,
            frac_bits: site.input_frac_bits(frac_bits),
        }
    }

    /// The post-activation point of the walk's node `site`.
    pub fn output_of(site: &Site<'a>, frac_bits: u32) -> Self {
        ShareSite {
            point: TamperPoint::PostActivation,
            node: site.index,
            name: &site.node.name,
            op: site.node.op.op_kind(),
            shape: site.output_shape,
            frac_bits: site.output_frac_bits(frac_bits),
        }
    }

    /// The logits point of `graph` under `plan`: the value [`Graph::logits`], named after the
    /// node producing it (or `input` / [`OpKind::Input`] when the logits are the input).
    pub fn logits_of(graph: &'a Graph, plan: &RescalePlan, frac_bits: u32) -> Self {
        let logits = graph.logits();
        let (node, name, op) = match logits.node().and_then(|n| graph.nodes().get(n).map(|node| (n, node))) {
            Some((n, node)) => (n, node.name.as_str(), node.op.op_kind()),
            None => (0, "input", OpKind::Input),
        };
        ShareSite {
            point: TamperPoint::Logits,
            node,
            name,
            op,
            shape: graph.shape(logits),
            frac_bits: plan.frac_bits(logits, frac_bits),
        }
    }
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

    /// Whether [`Self::tamper`] may change a share (the default, conservatively). A client that
    /// does not tamper runs its real sessions under `RescalePlan::pool_first` when the server
    /// offers it: the same result, without the tamper points between a ReLU and its max pool.
    fn tampers(&self) -> bool {
        true
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

    fn tampers(&self) -> bool {
        false
    }
}

impl<T: ClientBehaviour + ?Sized> ClientBehaviour for &mut T {
    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        (**self).tamper(site, share)
    }

    fn is_additive(&self) -> bool {
        (**self).is_additive()
    }

    fn tampers(&self) -> bool {
        (**self).tampers()
    }
}

/// A behaviour from a closure (handy in tests and quick experiments).
pub struct FnBehaviour<F>(pub F);

impl<F: FnMut(&ShareSite<'_>, &mut [u64])> ClientBehaviour for FnBehaviour<F> {
    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        (self.0)(site, share)
    }
}
