//! Non-linear layers of the real protocol with the client's tamper points.
//!
//! The real backend calls these where the simulated backend
//! ([`crate::engine::SimulatedEngine`]) reconstructs, computes and re-shares: the client `P1`
//! hands its share of the layer input to its [`ClientBehaviour`] at
//! [`TamperPoint::PreActivation`] *before* the protocol consumes it, and its share of the
//! output at [`TamperPoint::PostActivation`] before it enters the next layer — the same
//! points, with the same [`ShareSite`] fields, as the simulated backend. A behaviour that adds
//! `δ` to its pre-activation share therefore shifts the ReLU input reconstructed inside the
//! protocol by exactly `δ` in both backends (`x₀ + (x₁ + δ) = x + δ`). The server `P0` has no
//! behaviour: its argument is ignored, pass [`crate::engine::Honest`].

use super::argmax::argmax;
use super::maxpool::max_pool;
use super::relu::relu;
use super::session::Session;
use crate::engine::hook::{ClientBehaviour, ShareSite, TamperPoint};
use crate::error::Result;
use crate::shares::{AShare, Party};
use crate::transport::Channel;

/// Where a non-linear layer sits in the graph (what [`ShareSite`] reports to the behaviour).
#[derive(Clone, Copy, Debug)]
pub struct LayerSite<'a> {
    /// Index of the node in the (batch-norm folded) graph.
    pub node: usize,
    /// The node's name.
    pub name: &'a str,
    /// Per-sample shape of the layer input.
    pub input_shape: &'a [usize],
    /// Per-sample shape of the layer output.
    pub output_shape: &'a [usize],
}

impl<'a> LayerSite<'a> {
    fn share_site(&self, point: TamperPoint, op: &'static str) -> ShareSite<'a> {
        let shape = if point == TamperPoint::PreActivation { self.input_shape } else { self.output_shape };
        ShareSite { point, node: self.node, name: self.name, op, shape }
    }
}

/// Lets the client's behaviour alter its share at `site` (a no-op for the server).
pub fn tamper_share(s: &Session, share: &AShare, site: &ShareSite<'_>, behaviour: &mut dyn ClientBehaviour) -> AShare {
    if s.party() != Party::P1 {
        return share.clone();
    }
    let mut values = share.values().to_vec();
    behaviour.tamper(site, &mut values);
    AShare::from_wrapping(share.fixed_point(), values)
}

/// A ReLU layer: pre-activation tamper point, the exact ReLU protocol, post-activation tamper
/// point.
pub fn relu_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, "Relu"), behaviour);
    let y = relu(s, ch, &x)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, "Relu"), behaviour))
}

/// A max-pool layer (`windows` from [`moat_nn::kernels::pool_windows`]), with both tamper
/// points.
pub fn max_pool_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    windows: &[Vec<usize>],
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, "MaxPool"), behaviour);
    let y = max_pool(s, ch, &x, windows)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, "MaxPool"), behaviour))
}

/// The label-only output: the logits tamper point (`site.point` must describe the logits),
/// then [`argmax`] revealing the label to the client only.
pub fn label_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    logits: &AShare,
    site: &ShareSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<Option<usize>> {
    let logits = tamper_share(s, logits, site, behaviour);
    let labels = argmax(s, ch, &logits, logits.len().max(1))?;
    Ok(labels.and_then(|l| l.first().copied()))
}
