//! Multiplexer: arithmetic shares of `b·x` from XOR-shared bits `b` and arithmetic shares of
//! `x` (CrypTFlow2's `F_MUX`), and [`select`] = `b ? a : c` built on it.
//!
//! **Computes** fresh shares of `(b₀ ⊕ b₁)·(x₀ + x₁) mod 2^ℓ`, exactly.
//!
//! **How.** Two correlated OTs, one each way. Since `(b₀ ⊕ b₁)·x₀ = b₀x₀ + b₁·(1 − 2b₀)x₀`,
//! `P0` is COT sender with `Δ₀ = (1 − 2b₀)·x₀` and gets `r₀`, `P1` chooses `b₁` and gets
//! `r₀ + b₁Δ₀`; symmetrically for `x₁`. Outputs: `Pᵢ` holds `bᵢxᵢ − rᵢ + (r_{1−i} + bᵢΔ_{1−i})`.
//!
//! **Learns:** nothing — each received value is masked by the sender's uniform `r`.
//!
//! **Cost** per element: 2 random OTs (16 bytes each with IKNP, one each way) and `2ℓ` bits of
//! corrections (`P0 → P1` and `P1 → P0`): 32 + 2ℓ/8 bytes, 41.25 bytes at ℓ = 37.
//! **Rounds:** 3 flights (`P1`: OT; `P0`: correction and OT; `P1`: correction).

use moat_nn::FixedPoint;

use super::cot;
use super::planes;
use super::session::Session;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::shares::{AShare, BShare, Party};
use crate::transport::Channel;

/// Checks that `x` lives in the session's ring.
pub(crate) fn check_ring(s: &Session, x: &AShare, context: &'static str) -> Result<()> {
    if x.ring_bits() != s.fixed_point().ring_bits() {
        return Err(MpcError::invalid(
            context,
            format!("shares are in Z_2^{}, the session's ring is Z_2^{}", x.ring_bits(), s.fixed_point().ring_bits()),
        ));
    }
    Ok(())
}

/// Shares of `b·x`; `b` and `x` of equal length.
pub fn mux(s: &mut Session, ch: &mut dyn Channel, b: &BShare, x: &AShare) -> Result<AShare> {
    check_ring(s, x, "mux")?;
    if b.len() != x.len() {
        return Err(MpcError::invalid("mux", format!("{} bits for {} values", b.len(), x.len())));
    }
    let values = mux_values(s, ch, b.bits(), x.values())?;
    Ok(AShare::from_wrapping(x.fixed_point(), values))
}

/// Shares of `b ? a : c` (element-wise): `c + b·(a − c)`. For a maximum, `b = 1{a ≥ c}`.
pub fn select(s: &mut Session, ch: &mut dyn Channel, b: &BShare, a: &AShare, c: &AShare) -> Result<AShare> {
    let diff = a.try_sub(c)?;
    mux(s, ch, b, &diff)?.try_add(c)
}

/// [`mux`] on raw values of the session's ring.
pub(crate) fn mux_values(s: &mut Session, ch: &mut dyn Channel, b: &BitVec, x: &[u64]) -> Result<Vec<u64>> {
    let fp: FixedPoint = s.fixed_point();
    let bits = fp.ring_bits();
    if x.is_empty() {
        return Ok(Vec::new());
    }
    let party = s.party();
    let (sender, receiver, _) = s.parts();
    let deltas: Vec<u64> =
        x.iter().enumerate().map(|(i, &v)| if b.bit(i) == 1 { fp.neg(v) } else { fp.reduce(v) }).collect();
    let (r, got) = match party {
        Party::P0 => {
            let r = take_one(cot::send(sender, ch, &[(&deltas, bits)])?);
            let got = take_one(cot::receive(receiver, ch, &[(b, bits)])?);
            (r, got)
        }
        Party::P1 => {
            let got = take_one(cot::receive(receiver, ch, &[(b, bits)])?);
            let r = take_one(cot::send(sender, ch, &[(&deltas, bits)])?);
            (r, got)
        }
    };
    Ok(x.iter().enumerate().map(|(i, &v)| fp.add(fp.sub(fp.mul(b.bit(i), v), r[i]), got[i])).collect())
}

/// [`mux_values`] with the bits given as a plane.
pub(crate) fn mux_plane(s: &mut Session, ch: &mut dyn Channel, plane: Vec<u64>, x: &[u64]) -> Result<Vec<u64>> {
    let b = planes::to_bitvec(plane, x.len())?;
    mux_values(s, ch, &b, x)
}

fn take_one(mut v: Vec<Vec<u64>>) -> Vec<u64> {
    v.pop().unwrap_or_default()
}
