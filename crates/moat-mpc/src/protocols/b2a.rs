//! Bit to arithmetic conversion (B2A): arithmetic shares over Z_2^ℓ of XOR-shared bits.
//!
//! **Computes** `⟨b⟩ᴬ` with `b = b₀ ⊕ b₁ = b₀ + b₁ − 2b₀b₁`, exactly. The cross term comes
//! from one correlated OT: `P0` (sender) inputs `Δ = 1 − 2b₀` and keeps `b₀ − x`; `P1`
//! chooses `b₁` and keeps `x + b₁Δ` (as [`crate::convert`], which this generalises to
//! several bit vectors of different ring widths in one run of OTs).
//!
//! **Learns:** nothing (the received value is masked by the uniform `x`).
//! **Cost** per bit: 1 random OT `P1 → P0` (16 bytes with IKNP) + ℓ bits `P0 → P1`
//! (20.6 bytes at ℓ = 37); one flight each way.

use super::cot;
use super::session::Session;
use crate::bits::BitVec;
use crate::error::Result;
use crate::shares::{AShare, BShare, Party};
use crate::transport::Channel;

/// Arithmetic shares in the session's ring of the XOR-shared `bits`.
pub fn b2a(s: &mut Session, ch: &mut dyn Channel, bits: &BShare) -> Result<AShare> {
    let fp = s.fixed_point();
    let mut out = b2a_segments(s, ch, &[(bits.bits(), fp.ring_bits())])?;
    Ok(AShare::from_wrapping(fp, out.pop().unwrap_or_default()))
}

/// B2A of several bit vectors, each into `Z_2^width` (one run of OTs, 2 flights in all).
pub(crate) fn b2a_segments(
    s: &mut Session,
    ch: &mut dyn Channel,
    segments: &[(&BitVec, u32)],
) -> Result<Vec<Vec<u64>>> {
    let party = s.party();
    let (sender, receiver, _) = s.parts();
    match party {
        Party::P0 => {
            let deltas: Vec<Vec<u64>> =
                segments.iter().map(|(b, _)| (0..b.len()).map(|i| 1u64.wrapping_sub(2 * b.bit(i))).collect()).collect();
            let seg: Vec<(&[u64], u32)> = deltas.iter().zip(segments).map(|(d, (_, w))| (&d[..], *w)).collect();
            let xs = cot::send(sender, ch, &seg)?;
            Ok(xs
                .into_iter()
                .zip(segments)
                .map(|(x, (b, w))| {
                    let m = if *w >= 64 { u64::MAX } else { (1u64 << w) - 1 };
                    x.iter().enumerate().map(|(i, &x)| b.bit(i).wrapping_sub(x) & m).collect()
                })
                .collect())
        }
        Party::P1 => cot::receive(receiver, ch, segments),
    }
}
