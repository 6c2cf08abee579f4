//! Conversions between sharings that need a protocol.
//!
//! **B2A** (boolean to arithmetic) of shared bits `b = b₀ ⊕ b₁`, with one correlated OT per
//! bit ([`crate::ot::OtSender::send_correlated`]): the OT sender (holding `b₀`) inputs
//! `Δ = 1 − 2b₀` and gets `x`; the receiver chooses with `b₁` and gets `x + b₁(1 − 2b₀)`.
//! The sender's share is `b₀ − x`, the receiver's `x + b₁ − 2b₀b₁`, summing to
//! `b₀ + b₁ − 2b₀b₁ = b₀ ⊕ b₁`. Neither party learns anything (its output share is masked by
//! the OT's random `x`). **Cost:** `n` ROTs plus `n·ℓ` bits sender → receiver, ROT flights + 1.

use moat_nn::FixedPoint;

use crate::error::Result;
use crate::ot::{OtReceiver, OtSender};
use crate::shares::{AShare, BShare};
use crate::transport::Channel;

/// B2A, the party acting as OT sender.
pub fn b2a_sender(ot: &mut dyn OtSender, ch: &mut dyn Channel, bits: &BShare, fp: FixedPoint) -> Result<AShare> {
    let b0 = bits.bits();
    let deltas: Vec<u64> = (0..b0.len()).map(|i| fp.sub(1, 2 * b0.bit(i))).collect();
    let x = ot.send_correlated(ch, &deltas, fp.ring_bits())?;
    let values = x.iter().enumerate().map(|(i, &x)| fp.sub(b0.bit(i), x)).collect();
    AShare::new(fp, values)
}

/// B2A, the party acting as OT receiver.
pub fn b2a_receiver(ot: &mut dyn OtReceiver, ch: &mut dyn Channel, bits: &BShare, fp: FixedPoint) -> Result<AShare> {
    let y = ot.receive_correlated(ch, bits.bits(), fp.ring_bits())?;
    AShare::new(fp, y.into_iter().map(|v| fp.reduce(v)).collect())
}
