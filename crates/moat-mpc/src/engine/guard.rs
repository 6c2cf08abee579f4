//! Server guards: what the server does with the shares it holds.
//!
//! The mirror of [`crate::engine::ClientBehaviour`] on the server's side. A [`ServerGuard`] is
//! called with the **server's** additive share of a value at every [`TamperPoint`] — the same
//! points, in the same order and with the same [`ShareSite`] as the client's behaviour — and
//! once more at the **reveal point**, where the output is opened to the client
//! ([`ServerGuard::reveal`]). It may alter the share in place; shares are ring elements mod
//! 2^ℓ and the engine reduces them again after the call.
//!
//! * The honest server ([`HonestServer`]) changes nothing: the plain semi-honest protocol.
//! * [`HardeningGuard`] adds fresh uniform noise to every ReLU / max-pool input and to the
//!   logits (the anti-SEEK hardening of [`Hardening`]).
//! * [`SiGuard`] acts only at the reveal point, interactively: through
//!   [`ServerGuard::reveal_protocol`] both parties run its optimisation on the shared logits
//!   in place of the secure softmax (the client its half, from the hello).
//! * Further guards (a cheating server that offsets its logit shares to test Fusion's
//!   mix-and-check) implement the same trait.
//!
//! What each party learns does not change: [`ServerGuard::guard`] and [`ServerGuard::reveal`]
//! act on the server's own share, locally, before that share enters the next protocol step,
//! so they cost no bytes and no rounds; a reveal protocol costs what its
//! [`crate::ring_ops::RingOps`] primitives cost. The client learns only what the guard's change
//! does to its output.
//!
//! Both backends call a guard identically: the real backend on the server's share (the server's
//! walk), the simulated backend on the server's half of the value it splits at the same point
//! (or, for an [additive](ServerGuard::is_additive) guard, on the value itself — the same
//! result, `(r + δ) + (x − r) = x + δ`). A guard whose changes depend only on its own
//! randomness therefore gives bit-identical outputs in both backends when seeded alike.
//!
//! The trait is object safe and `Send`, so a serving layer can build one
//! `Box<dyn ServerGuard + Send>` per session.

use moat_nn::FixedPoint;
use rand_chacha::ChaCha20Rng;

use super::Reveal;
use super::hardening::Hardening;
use super::hook::{ShareSite, TamperPoint};
use crate::ring_ops::SiGuard;

/// What a server does at each point where it holds a share (see the module documentation).
pub trait ServerGuard: Send {
    /// Called with the server's share at `site` (a ReLU / max-pool input or output, or the
    /// logits before the output step); may alter it in place.
    fn guard(&mut self, site: &ShareSite<'_>, share: &mut [u64]);

    /// The reveal point: called with the server's share of the logits (`site`, at
    /// [`TamperPoint::Logits`]) after [`Self::guard`] and immediately before the output step
    /// opens `output` to the client — the logits themselves for [`Reveal::Logits`], the
    /// in-protocol argmax for [`Reveal::Label`]. May alter the share. The default does nothing.
    fn reveal(&mut self, output: Reveal, site: &ShareSite<'_>, share: &mut [u64]) {
        let _ = (output, site, share);
    }

    /// Whether [`Self::guard`] and [`Self::reveal`] only add offsets that do not depend on the
    /// share's value. The simulated engine may then apply them to the reconstructed value
    /// instead of a share (the same result without drawing share randomness).
    fn is_additive(&self) -> bool {
        false
    }

    /// Whether the guard never changes anything (lets a backend skip the calls' copies).
    fn is_noop(&self) -> bool {
        false
    }

    /// An interactive computation at the reveal point: when `Some`, both backends compute
    /// [`Reveal::Probabilities`] by this [`SiGuard`] on the (guarded) shared logits instead of
    /// the plain secure softmax; the real server announces its public part
    /// ([`SiGuard::spec`]) in the hello, and the client runs its half of the protocol. A
    /// session with such a guard reveals at most probabilities. The default: none.
    fn reveal_protocol(&self) -> Option<&SiGuard> {
        None
    }
}

impl ServerGuard for SiGuard {
    fn guard(&mut self, _site: &ShareSite<'_>, _share: &mut [u64]) {}

    fn is_additive(&self) -> bool {
        true
    }

    fn is_noop(&self) -> bool {
        true
    }

    fn reveal_protocol(&self) -> Option<&SiGuard> {
        Some(self)
    }
}

/// Builds one guard per session (a serving layer holds one per model or task).
pub type GuardFactory = std::sync::Arc<dyn Fn() -> Box<dyn ServerGuard + Send> + Send + Sync>;

/// The honest server: leaves every share as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct HonestServer;

impl ServerGuard for HonestServer {
    fn guard(&mut self, _site: &ShareSite<'_>, _share: &mut [u64]) {}

    fn is_additive(&self) -> bool {
        true
    }

    fn is_noop(&self) -> bool {
        true
    }
}

impl<T: ServerGuard + ?Sized> ServerGuard for Box<T> {
    fn guard(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        (**self).guard(site, share)
    }

    fn reveal(&mut self, output: Reveal, site: &ShareSite<'_>, share: &mut [u64]) {
        (**self).reveal(output, site, share)
    }

    fn is_additive(&self) -> bool {
        (**self).is_additive()
    }

    fn is_noop(&self) -> bool {
        (**self).is_noop()
    }

    fn reveal_protocol(&self) -> Option<&SiGuard> {
        (**self).reveal_protocol()
    }
}

/// The anti-SEEK hardening as a guard: fresh uniform noise of half-width
/// [`Hardening::activation_noise`] on the server's share of every ReLU / max-pool input (at
/// that input's scale, `2f` behind a deferred truncation) and of half-width
/// [`Hardening::logit_noise`] on its share of the logits, drawn from `rng` — one stream per
/// session, so every query draws new values. Nothing at post-activation points or at the
/// reveal point. The client never sees the noise and cannot subtract it.
pub struct HardeningGuard {
    hardening: Hardening,
    fixed: FixedPoint,
    rng: ChaCha20Rng,
}

impl HardeningGuard {
    /// A guard adding `hardening`'s noise to shares of ring `fixed`, drawing from `rng`.
    pub fn new(hardening: Hardening, fixed: FixedPoint, rng: ChaCha20Rng) -> Self {
        Self { hardening, fixed, rng }
    }

    /// The amplitudes.
    pub fn hardening(&self) -> Hardening {
        self.hardening
    }
}

impl std::fmt::Debug for HardeningGuard {
    // The noise stream is the server's secret: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HardeningGuard").field("hardening", &self.hardening).finish_non_exhaustive()
    }
}

impl ServerGuard for HardeningGuard {
    fn guard(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        let amplitude = match site.point {
            TamperPoint::PreActivation => self.hardening.activation_noise,
            TamperPoint::Logits => self.hardening.logit_noise,
            TamperPoint::PostActivation => 0.0,
        };
        if amplitude > 0.0 {
            Hardening::perturb(self.fixed, share, amplitude, site.frac_bits, &mut self.rng);
        }
    }

    fn is_additive(&self) -> bool {
        true
    }

    fn is_noop(&self) -> bool {
        !self.hardening.is_active()
    }
}
