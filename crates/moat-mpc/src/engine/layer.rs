//! Non-linear layers of the real backend with the client's tamper points: engine code that
//! calls the protocols of [`crate::protocols`].
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
//!
//! A ReLU whose input sits at `2f` fractional bits (its linear layer deferred the truncation,
//! [`crate::engine::plan`]) truncates its output between the protocol and the
//! post-activation point: the client then sees its pre-activation share at `2f` and its
//! post-activation share at `f`, as [`LayerSite::input_frac_bits`] and
//! [`LayerSite::output_frac_bits`] say.

use moat_nn::OpKind;

use crate::engine::hook::{ClientBehaviour, ShareSite, TamperPoint};
use crate::error::{MpcError, Result};
use crate::protocols::argmax::argmax;
use crate::protocols::maxpool::max_pool;
use crate::protocols::relu::relu;
use crate::protocols::session::Session;
use crate::protocols::truncate::truncate_nonnegative;
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
    /// Fractional bits of the layer input (`f`, or `2f` behind a deferred truncation).
    pub input_frac_bits: u32,
    /// Fractional bits of the layer output.
    pub output_frac_bits: u32,
}

impl<'a> LayerSite<'a> {
    fn share_site(&self, point: TamperPoint, op: OpKind) -> ShareSite<'a> {
        let (shape, frac_bits) = if point == TamperPoint::PreActivation {
            (self.input_shape, self.input_frac_bits)
        } else {
            (self.output_shape, self.output_frac_bits)
        };
        ShareSite { point, node: self.node, name: self.name, op, shape, frac_bits }
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

/// A ReLU layer: pre-activation tamper point, the exact ReLU protocol, then — when the input
/// carries more fractional bits than the output (`2f` behind a deferred truncation, see
/// [`crate::engine::plan`]) — [`truncate_nonnegative`] of the ReLU's output by the
/// difference, and the post-activation tamper point (at the output's scale).
///
/// The truncation runs on the ReLU's output, which is in `[0, 2^(ℓ−1))` whatever the client
/// did to its input share, so its precondition always holds.
pub fn relu_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    let shift = site.input_frac_bits.checked_sub(site.output_frac_bits).ok_or_else(|| {
        MpcError::invalid(
            "relu_layer",
            format!(
                "node '{}': output at {} fractional bits, input at {} (a ReLU only rescales down)",
                site.name, site.output_frac_bits, site.input_frac_bits
            ),
        )
    })?;
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::Relu), behaviour);
    let y = relu(s, ch, &x)?;
    let y = truncate_nonnegative(s, ch, &y, shift)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::Relu), behaviour))
}

/// A clip layer `clip(x, a, b)` with public bounds `a < b` (`bounds`: ring elements at the
/// output's scale, `f` bits): pre-activation tamper point, then
/// `a + ⌊ReLU(x − A)/2^s⌋ − ⌊ReLU(x − B)/2^s⌋` with `A = a·2^s`, `B = b·2^s` and `s` the
/// difference of the input and output scales (0, or `f` behind a deferred truncation), then
/// the post-activation tamper point. The identity is exact for any `x` in the signed range
/// (floor is monotone), so the result is bit for bit `clip(⌊x/2^s⌋, a, b)`, the fixed-point
/// executor's. `P0` subtracts and adds the public bounds; the two ReLUs run as one [`relu`]
/// call on `2n` elements and the truncations as one [`truncate_nonnegative`] call.
///
/// **Learns:** nothing beyond the uniformly random output shares (as [`relu`]).
/// **Cost:** twice a ReLU layer's bytes for the same `n` (`2n` comparisons, multiplexers and,
/// with `s > 0`, non-negative truncations); the rounds of one ReLU layer.
pub fn clip_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    bounds: (u64, u64),
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    let shift = site.input_frac_bits.checked_sub(site.output_frac_bits).ok_or_else(|| {
        MpcError::invalid(
            "clip_layer",
            format!(
                "node '{}': output at {} fractional bits, input at {} (a clip only rescales down)",
                site.name, site.output_frac_bits, site.input_frac_bits
            ),
        )
    })?;
    let (fp, n, party) = (x.fixed_point(), x.len(), s.party());
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::Clip), behaviour);
    let lift = |v: u64| fp.reduce(v << shift);
    let below = x.sub_public(party, &vec![lift(bounds.0); n])?;
    let above = x.sub_public(party, &vec![lift(bounds.1); n])?;
    let both = AShare::from_wrapping(fp, [below.values(), above.values()].concat());
    let y = relu(s, ch, &both)?;
    let y = truncate_nonnegative(s, ch, &y, shift)?;
    let (low, high) = y.values().split_at(n);
    let y = AShare::from_wrapping(fp, low.to_vec())
        .try_sub(&AShare::from_wrapping(fp, high.to_vec()))?
        .add_public(party, &vec![bounds.0; n])?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::Clip), behaviour))
}

/// A leaky ReLU layer with public slope `alpha` (a ring element at `f` bits) on an input at
/// `f` bits: pre-activation tamper point, `ReLU(x)` by [`relu`], the local
/// `z = alpha·x + (2^f − alpha)·ReLU(x)` (`x` below zero, `2^f·x` above), the exact signed
/// truncation of `z` by `f` bits ([`super::truncate::truncate`]), then the post-activation
/// tamper point. Exact: bit for bit the fixed-point executor's `⌊z / 2^f⌋`.
///
/// **Learns:** nothing beyond the uniformly random output shares.
/// **Cost:** one ReLU and one signed truncation per element (`cost::relu` +
/// `cost::truncate`); their rounds one after the other.
pub fn leaky_relu_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    alpha: u64,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    if site.input_frac_bits != site.output_frac_bits {
        return Err(MpcError::invalid(
            "leaky_relu_layer",
            format!("node '{}': input at {} fractional bits, a leaky ReLU reads f", site.name, site.input_frac_bits),
        ));
    }
    let fp = x.fixed_point();
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::LeakyRelu), behaviour);
    let r = relu(s, ch, &x)?;
    let above = fp.sub(1u64 << site.output_frac_bits, alpha);
    let z = x.mul_public(alpha).try_add(&r.mul_public(above))?;
    let y = crate::protocols::truncate::truncate(s, ch, &z)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::LeakyRelu), behaviour))
}

/// A max-pool layer (`windows` from [`moat_nn::kernels::pool_windows`]), with both tamper
/// points; input and output must be at the same scale.
pub fn max_pool_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    windows: &[Vec<usize>],
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    if site.input_frac_bits != site.output_frac_bits {
        return Err(MpcError::invalid(
            "max_pool_layer",
            format!(
                "node '{}': input at {} fractional bits, output at {} (a max pool does not rescale)",
                site.name, site.input_frac_bits, site.output_frac_bits
            ),
        ));
    }
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::MaxPool), behaviour);
    let y = max_pool(s, ch, &x, windows)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::MaxPool), behaviour))
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
