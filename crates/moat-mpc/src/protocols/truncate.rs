//! Truncation by `s` bits of a shared *signed* value: fresh shares of
//! `floor(signed(x) / 2^s) mod 2^ℓ`, bit for bit [`moat_nn::FixedPoint::truncate_by`] — exact
//! (faithful) truncation, no ±1 error, for every ring element.
//!
//! **Derivation.** Let `B = 2^(ℓ−1)` and `x = x₀ + x₁ mod 2^ℓ` with signed value
//! `X ∈ [−B, B)`.
//!
//! 1. *Bias.* `Y = X + B ∈ [0, 2^ℓ)` is non-negative; `P0` sets `y₀ = x₀ + B mod 2^ℓ`,
//!    `P1` keeps `y₁ = x₁`, so `y₀ + y₁ ≡ Y`. As integers, `y₀ + y₁ = Y + w·2^ℓ` with the
//!    *wrap* bit `w = 1{y₀ + y₁ ≥ 2^ℓ} = 1{y₀ > 2^ℓ − 1 − y₁}`.
//! 2. *Shift the shares.* Write `yᵢ = hᵢ·2^s + lᵢ` with `lᵢ < 2^s`. Then
//!    `y₀ + y₁ = (h₀ + h₁ + c)·2^s + (l₀ + l₁ − c·2^s)` with the *carry*
//!    `c = 1{l₀ + l₁ ≥ 2^s} = 1{l₀ > 2^s − 1 − l₁}`, and the second term is in `[0, 2^s)`, so
//!    `floor((y₀ + y₁)/2^s) = h₀ + h₁ + c` and, since `2^s` divides `2^ℓ`,
//!    `floor(Y / 2^s) = h₀ + h₁ + c − w·2^(ℓ−s)`.
//! 3. *Remove the bias.* `2^s` divides `B` (s < ℓ), so
//!    `floor(X / 2^s) = floor(Y / 2^s) − 2^(ℓ−1−s)`.
//!
//! Both bits come from **one** millionaires' comparison on ℓ bits between `P0`'s `y₀` and
//! `P1`'s `2^ℓ − 1 − y₁` (bitwise NOT): `w` is its result and `c` the comparison of the low `s`
//! bits, which the tree computes on the way when the chunks are cut at bit `s`
//! ([`super::millionaire::greater_than_split`]). Then B2A turns `c` into shares over Z_2^ℓ and
//! `w` into shares over Z_2^s (only `w·2^(ℓ−s) mod 2^ℓ` is needed), and
//!
//! ```text
//! P0: z₀ = h₀ − 2^(ℓ−1−s) + ⟨c⟩₀ − ⟨w⟩₀·2^(ℓ−s)        P1: z₁ = h₁ + ⟨c⟩₁ − ⟨w⟩₁·2^(ℓ−s)
//! ```
//!
//! (A one-bit-error "local" truncation would skip `c`; here `c` costs only its B2A, so the exact
//! protocol is the only one offered.)
//!
//! **Learns:** nothing beyond its uniformly random output share.
//! **Cost** per element at ℓ = 37, s = 12, 6-bit chunks, IKNP: the comparison (37 leaf random
//! OTs; chunks 6 + 6 | 5 × 5, so 72 bytes of tables; 6 triples = 12 random OTs) + B2A (2 random
//! OTs, 37 + 12 bits): 898 bytes ([`super::cost::truncate`] is exact).
//! **Rounds:** 5 flights from `P0`, 6 from `P1`.

use super::b2a::b2a_segments;
use super::millionaire;
use super::mux::check_ring;
use super::planes;
use super::session::Session;
use crate::error::{MpcError, Result};
use crate::shares::{AShare, Party};
use crate::transport::Channel;

/// Shares of `floor(signed(x) / 2^f)` with the session's `f` fractional bits (the rescale
/// after a fixed-point multiplication).
pub fn truncate(s: &mut Session, ch: &mut dyn Channel, x: &AShare) -> Result<AShare> {
    let f = s.fixed_point().frac_bits();
    truncate_by(s, ch, x, f)
}

/// Shares of `floor(signed(x) / 2^shift)` for `shift < ℓ` (`shift = 0` is the identity and
/// costs nothing).
pub fn truncate_by(s: &mut Session, ch: &mut dyn Channel, x: &AShare, shift: u32) -> Result<AShare> {
    check_ring(s, x, "truncate")?;
    let fp = s.fixed_point();
    let ell = fp.ring_bits();
    if shift >= ell {
        return Err(MpcError::invalid("truncate", format!("shift {shift} ≥ ring width {ell}")));
    }
    if shift == 0 || x.is_empty() {
        return Ok(x.clone());
    }
    let mut out = Vec::with_capacity(x.len());
    for part in x.values().chunks(s.config().max_batch) {
        out.extend(truncate_pass(s, ch, part, shift)?);
    }
    Ok(AShare::from_wrapping(fp, out))
}

fn truncate_pass(s: &mut Session, ch: &mut dyn Channel, x: &[u64], shift: u32) -> Result<Vec<u64>> {
    let fp = s.fixed_point();
    let ell = fp.ring_bits();
    let party = s.party();
    let bias = 1u64 << (ell - 1);
    // Step 1: biased shares and the comparison inputs.
    let y: Vec<u64> = match party {
        Party::P0 => x.iter().map(|&v| fp.add(v, bias)).collect(),
        Party::P1 => x.iter().map(|&v| fp.reduce(v)).collect(),
    };
    let input: Vec<u64> = match party {
        Party::P0 => y.clone(),
        Party::P1 => y.iter().map(|&v| fp.reduce(!v)).collect(),
    };
    let (wrap, carry) = millionaire::compare_planes(s, ch, &input, ell, shift)?;
    let n = x.len();
    let (wrap, carry) = (planes::to_bitvec(wrap, n)?, planes::to_bitvec(carry, n)?);
    let mut arith = b2a_segments(s, ch, &[(&carry, ell), (&wrap, shift)])?;
    let w = arith.pop().unwrap_or_default();
    let c = arith.pop().unwrap_or_default();
    // Steps 2 and 3.
    let high_unit = 1u64 << (ell - shift);
    let unbias = if party == Party::P0 { 1u64 << (ell - 1 - shift) } else { 0 };
    Ok(y.iter()
        .zip(c.iter().zip(&w))
        .map(|(&y, (&c, &w))| fp.sub(fp.add((y >> shift).wrapping_sub(unbias), c), fp.mul(w, high_unit)))
        .collect())
}
