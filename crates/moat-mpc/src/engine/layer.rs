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
use moat_nn::approx::{RingHard, RingSpline, RingSwish, SplineForm};

use crate::engine::hook::{ClientBehaviour, ShareSite, TamperPoint};
use crate::error::{MpcError, Result};
use crate::protocols::argmax::argmax;
use crate::protocols::beaver::mul_values;
use crate::protocols::drelu::drelu;
use crate::protocols::maxpool::{MaxTree, max_pool_tree};
use crate::protocols::mux::select;
use crate::protocols::relu::relu;
use crate::protocols::session::Session;
use crate::protocols::truncate::{truncate_by, truncate_nonnegative};
use crate::shares::{AShare, Party};
use crate::transport::{Channel, in_subphase};

/// The sub-phase (suffix of the node's traffic phase) of a layer's truncation, so that reports
/// can split a `ReLU + trunc` node into its comparison and its truncation.
pub const TRUNCATION_SUBPHASE: &str = "/trunc";

/// The sub-phase of the ReLU a max pool applies to its output under the pool-first plan
/// ([`moat_nn::plan::RescalePlan::pool_first`]), so that reports can split the pool's node into
/// its comparisons and the ReLU (whose truncation is then `"{node}/relu/trunc"`).
pub const RELU_SUBPHASE: &str = "/relu";

/// [`in_subphase`] under [`TRUNCATION_SUBPHASE`].
pub(crate) fn truncating<T>(ch: &mut dyn Channel, f: impl FnOnce(&mut dyn Channel) -> T) -> T {
    in_subphase(ch, TRUNCATION_SUBPHASE, f)
}

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
    let y = truncating(ch, |ch| truncate_nonnegative(s, ch, &y, shift))?;
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
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::Clip), behaviour);
    let y = clip_shares(s, ch, &x, bounds, shift)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::Clip), behaviour))
}

/// `a + ⌊ReLU(x − A)/2^shift⌋ − ⌊ReLU(x − B)/2^shift⌋`, `A`, `B` the bounds lifted by
/// `2^shift` ([`clip_layer`] without its tamper points).
fn clip_shares(s: &mut Session, ch: &mut dyn Channel, x: &AShare, bounds: (u64, u64), shift: u32) -> Result<AShare> {
    let (fp, n, party) = (x.fixed_point(), x.len(), s.party());
    let lift = |v: u64| fp.reduce(v << shift);
    let below = x.sub_public(party, &vec![lift(bounds.0); n])?;
    let above = x.sub_public(party, &vec![lift(bounds.1); n])?;
    let both = AShare::from_wrapping(fp, [below.values(), above.values()].concat());
    let y = relu(s, ch, &both)?;
    let y = truncating(ch, |ch| truncate_nonnegative(s, ch, &y, shift))?;
    let (low, high) = y.values().split_at(n);
    AShare::from_wrapping(fp, low.to_vec())
        .try_sub(&AShare::from_wrapping(fp, high.to_vec()))?
        .add_public(party, &vec![bounds.0; n])
}

/// Refuses an input whose scale differs from the output's (the approximated activations read
/// and write values at `f` bits).
fn same_scale(what: &'static str, site: &LayerSite<'_>) -> Result<()> {
    if site.input_frac_bits != site.output_frac_bits {
        return Err(MpcError::invalid(
            what,
            format!(
                "node '{}': input at {} fractional bits, output at {} (this activation reads f)",
                site.name, site.input_frac_bits, site.output_frac_bits
            ),
        ));
    }
    Ok(())
}

/// A hard sigmoid layer `clip(α·x + β, 0, 1)` ([`RingHard`]): pre-activation tamper point,
/// the local `z = α·x + β` at `2f` bits (`P0` adds `β` and the rounding half), the clip of
/// [`clip_layer`] to `[0, 1]` with truncation by `f` (two ReLUs, two non-negative
/// truncations), then the post-activation tamper point. Bit for bit [`RingHard::eval`]; its
/// error against the real function is stated in [`moat_nn::approx`] (≤ 2.5·10⁻⁴ at α = 0.2).
///
/// **Learns:** nothing beyond the uniformly random output shares.
/// **Cost:** a clip's: two ReLUs and two non-negative truncations per element
/// (2 × (876 + 295) = 2342 bytes at ℓ = 37, IKNP; measured 2413 per element over 144
/// elements, 8 rounds); the rounds of one ReLU and one truncation.
pub fn hard_sigmoid_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    hard: &RingHard,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    same_scale("hard_sigmoid_layer", site)?;
    let (n, party, f) = (x.len(), s.party(), site.output_frac_bits);
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::HardSigmoid), behaviour);
    let z = x.mul_public(hard.alpha).add_public(party, &vec![hard.beta; n])?;
    let y = clip_shares(s, ch, &z, (0, 1 << f), f)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::HardSigmoid), behaviour))
}

/// A hard swish layer ([`RingSwish`]): pre-activation tamper point; `ReLU(x + 3)` and
/// `ReLU(x − 3)` (one [`relu`] call on `2n` elements); `c = clip(x, −3, 3)` locally; `c²` by a
/// Beaver product ([`mul_values`]), rounded to `f` bits by [`truncate_nonnegative`];
/// `C/6 + c/2` at `f + shift` bits locally, [`truncate_by`] `shift` (signed), plus
/// `ReLU(x − 3)`; the post-activation tamper point. Bit for bit [`RingSwish::eval`]; its error
/// against the real function is stated in [`moat_nn::approx`] (≤ 1.5·10⁻⁴).
///
/// **Learns:** nothing beyond the uniformly random output shares (the Beaver product opens
/// only values masked by a fresh triple).
/// **Cost** per element at ℓ = 37, IKNP: two ReLUs (1752 bytes), one Beaver product
/// (≈ 1380), one non-negative truncation (295) and one signed truncation (898): ≈ 4.3 KB
/// (measured 4444 per element over 144 elements, 15 rounds); the rounds of those four one
/// after the other.
pub fn hard_swish_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    swish: &RingSwish,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    same_scale("hard_swish_layer", site)?;
    let (fp, n, party, f) = (x.fixed_point(), x.len(), s.party(), site.output_frac_bits);
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, OpKind::HardSwish), behaviour);
    let low = x.add_public(party, &vec![swish.three; n])?;
    let high = x.sub_public(party, &vec![swish.three; n])?;
    let r = relu(s, ch, &AShare::from_wrapping(fp, [low.values(), high.values()].concat()))?;
    let (low, high) = r.values().split_at(n);
    let high = AShare::from_wrapping(fp, high.to_vec());
    let c = AShare::from_wrapping(fp, low.to_vec()).try_sub(&high)?.sub_public(party, &vec![swish.three; n])?;
    let square = AShare::from_wrapping(fp, mul_values(s, ch, c.values(), c.values())?);
    let square = truncate_nonnegative(s, ch, &square.add_public(party, &vec![1 << (f - 1); n])?, f)?;
    let half = 1u64 << (swish.shift - 1);
    let z = square.mul_public(swish.sixth).try_add(&c.mul_public(half))?.add_public(party, &vec![half; n])?;
    let y = truncate_by(s, ch, &z, swish.shift)?.try_add(&high)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, OpKind::HardSwish), behaviour))
}

/// A sigmoid, tanh, SiLU, GELU or ELU layer by its spline ([`RingSpline`], `op` names it at
/// the tamper points): pre-activation tamper point, [`spline`], the post-activation tamper
/// point.
///
/// The odd form (sigmoid, tanh): the sign bit `b = 1{x ≥ 0}` ([`drelu`]);
/// `|x| = b ? x : −x` ([`select`]); `ReLU(|x| − t_k)` for the `K` knots (one [`relu`] call on
/// `K·n` elements); `g = s·|x| + Σ w_k·ReLU(|x| − t_k)` locally; `b ? g : −g` ([`select`]);
/// `P0` adds the centre and the rounding half; [`truncate_by`] `shift` (signed); the
/// post-activation tamper point. Bit for bit [`RingSpline::eval`]; the error of the spline
/// against the real function is measured and stated in [`moat_nn::approx`] (sigmoid
/// ≤ 9.3·10⁻⁴, tanh ≤ 1.8·10⁻³).
///
/// **Learns:** nothing beyond the uniformly random output shares.
/// **Cost** per element at ℓ = 37, IKNP, `K = 16`: one sign comparison (835 bytes), two
/// multiplexers (2 × 41.3), `K` ReLUs (16 × 876) and one signed truncation (898): ≈ 15.8 KB
/// (measured 15 928 per element over 144 elements, 16 rounds); rounds: comparison,
/// multiplexer, ReLU, multiplexer, truncation one after the other (independent of `K` and
/// `n`).
///
/// The rectified forms (SiLU, GELU, ELU): `r = ReLU(x)` ([`relu`]); `a = 2r − x = |x|` or
/// `a = r − x = ReLU(−x)` locally; `ReLU(a − t_k)` for the `K` knots (one [`relu`] call on
/// `K·n` elements); `g` locally; `P0` adds the offset; [`truncate_by`] `shift` (signed); plus
/// `r` — for SELU `⌊(γ·r + 2^(f−1)) / 2^f⌋` instead ([`RingSpline::gain`]; one more
/// truncation, of a non-negative value, by [`truncate_nonnegative`]). Bit for bit
/// [`RingSpline::eval`] (errors in [`moat_nn::approx`]: SiLU ≤ 1.9·10⁻³, GELU ≤ 1.3·10⁻³, ELU
/// ≤ 2.2·10⁻³ at α = 1; GELU's tanh form, SELU and softplus there too).
/// **Cost** per element at ℓ = 37, IKNP, `K = 16`: `K + 1` ReLUs (17 × 876) and one signed
/// truncation (898): ≈ 15.8 KB ([`crate::protocols::cost::rectified_spline`]); rounds: ReLU,
/// ReLU, truncation (no multiplexer of its own).
pub fn spline_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    spline_ring: &RingSpline,
    op: OpKind,
    site: &LayerSite<'_>,
    behaviour: &mut dyn ClientBehaviour,
) -> Result<AShare> {
    same_scale("spline_layer", site)?;
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, op), behaviour);
    let y = spline(s, ch, &x, spline_ring)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, op), behaviour))
}

/// A leaky ReLU (or PRelu, `op`) layer with public slopes `alpha` (ring elements at `f` bits:
/// one for all elements, or one per channel, [`moat_nn::exec::leaky_slopes`]) on an input at
/// `f` bits: pre-activation tamper point, `ReLU(x)` by [`relu`], the local
/// `z = alpha·x + (2^f − alpha)·ReLU(x)` (`x` below zero, `2^f·x` above), the exact signed
/// truncation of `z` by `f` bits ([`crate::protocols::truncate::truncate`]), then the post-activation
/// tamper point. Exact: bit for bit the fixed-point executor's `⌊z / 2^f⌋`.
///
/// **Learns:** nothing beyond the uniformly random output shares.
/// **Cost:** one ReLU and one signed truncation per element (`cost::relu` +
/// `cost::truncate`); their rounds one after the other.
pub fn leaky_relu_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    alpha: &[u64],
    op: OpKind,
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
    let x = tamper_share(s, x, &site.share_site(TamperPoint::PreActivation, op), behaviour);
    let r = relu(s, ch, &x)?;
    let alpha = moat_nn::exec::leaky_slopes(alpha, x.len());
    let above: Vec<u64> = alpha.iter().map(|&a| fp.sub(1u64 << site.output_frac_bits, a)).collect();
    let z = x.mul_public_vec(&alpha)?.try_add(&r.mul_public_vec(&above)?)?;
    let y = crate::protocols::truncate::truncate(s, ch, &z)?;
    Ok(tamper_share(s, &y, &site.share_site(TamperPoint::PostActivation, op), behaviour))
}

/// A max-pool layer (`tree`: its [`MaxTree`], from the windows of
/// [`moat_nn::kernels::pool_windows`]), with both tamper points; input and output must be at
/// the same scale.
pub fn max_pool_layer(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &AShare,
    tree: &MaxTree,
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
    let y = max_pool_tree(s, ch, &x, tree)?;
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

/// The protocol of [`spline_layer`] without its tamper points: shares of
/// [`RingSpline::eval`] of each element of `x` (at `f` bits). Costs as [`spline_layer`]
/// (predicted exactly by [`crate::protocols::cost::spline`]); `moat bench sigmoid` runs it
/// between two processes.
pub fn spline(s: &mut Session, ch: &mut dyn Channel, x: &AShare, spline: &RingSpline) -> Result<AShare> {
    let (n, party) = (x.len(), s.party());
    if spline.form != SplineForm::Odd {
        let r = relu(s, ch, x)?;
        let a = match spline.form {
            SplineForm::Even => r.mul_public(2).try_sub(x)?,
            _ => r.try_sub(x)?,
        };
        let g = knot_sum(s, ch, &a, spline)?;
        let z = g.add_public(party, &vec![spline.offset; n])?;
        let y = truncate_by(s, ch, &z, spline.shift)?;
        let r = match spline.gain {
            // SELU's γ·ReLU(x), rounded: non-negative below 2^(ℓ−1) on the documented range.
            Some(gain) => {
                let scaled = r.mul_public(gain).add_public(party, &vec![spline.gain_half(x.fixed_point()); n])?;
                truncate_nonnegative(s, ch, &scaled, x.fixed_point().frac_bits())?
            }
            None => r,
        };
        return y.try_add(&r);
    }
    let b = drelu(s, ch, x)?;
    let a = select(s, ch, &b, x, &x.neg())?;
    let g = knot_sum(s, ch, &a, spline)?;
    let signed = select(s, ch, &b, &g, &g.neg())?;
    let z = signed.add_public(party, &vec![spline.offset; n])?;
    truncate_by(s, ch, &z, spline.shift)
}

/// `g(a) = slope·a + Σ_k weights[k]·ReLU(a − knots[k])` on shares of `a` (at `f` bits): the
/// `K` ReLUs as one [`relu`] call on `K·n` elements, the weighted sum locally.
fn knot_sum(s: &mut Session, ch: &mut dyn Channel, a: &AShare, spline: &RingSpline) -> Result<AShare> {
    let (fp, n, party) = (a.fixed_point(), a.len(), s.party());
    let mut shifted = Vec::with_capacity(spline.knots.len() * n);
    for t in &spline.knots {
        shifted.extend_from_slice(a.sub_public(party, &vec![*t; n])?.values());
    }
    let r = relu(s, ch, &AShare::from_wrapping(fp, shifted))?;
    let mut g = a.mul_public(spline.slope);
    for (w, part) in spline.weights.iter().zip(r.values().chunks(n.max(1))) {
        g = g.try_add(&AShare::from_wrapping(fp, part.to_vec()).mul_public(*w))?;
    }
    Ok(g)
}

/// The element-wise maximum of shared values of equal length (ONNX `Max`): `acc ← b +
/// ReLU(acc − b)` for each `b` after the first, one [`relu`] call each. Bit for bit the
/// fixed-point executor's; no tamper points and no server guard (neither backend has them
/// for a `Max`).
///
/// **Learns:** nothing beyond the uniformly random output shares (as [`relu`]).
/// **Cost:** `k − 1` ReLU layers of `n` elements for `k` inputs, one after the other.
pub fn max_shares(s: &mut Session, ch: &mut dyn Channel, parts: &[&AShare]) -> Result<AShare> {
    let (first, rest) = parts.split_first().ok_or_else(|| MpcError::invalid("max_shares", "no inputs"))?;
    let mut acc = (*first).clone();
    for b in rest {
        acc = relu(s, ch, &acc.try_sub(b)?)?.try_add(b)?;
    }
    Ok(acc)
}
