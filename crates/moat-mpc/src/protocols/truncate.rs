//! Truncation by `s` bits of shared values, exact (faithful: no ±1 error):
//!
//! * [`truncate_by`] (and [`truncate`], `s = f`): any *signed* value, fresh shares of
//!   `floor(signed(x) / 2^s) mod 2^ℓ`, bit for bit [`moat_nn::FixedPoint::truncate_by`] for
//!   every ring element;
//! * [`truncate_nonnegative`]: a value known to lie in `[0, 2^(ℓ−1))` (a ReLU output), the
//!   same result at about a third of the cost.
//!
//! # Signed truncation
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
//!
//! # Truncation of a non-negative value
//!
//! **Precondition:** `x ∈ [0, 2^(ℓ−1))` (the MSB of `x` is 0), as for the output of a ReLU
//! (whatever its input was, even a tampered one). Outside it the result is off by a multiple
//! of `2^(ℓ−s)`; nothing is checked (the value is secret).
//!
//! **Derivation.** As integers `x₀ + x₁ = x + w·2^ℓ`, and now the wrap bit is simply
//! `w = msb(x₀) ∨ msb(x₁)`: both MSBs 1 ⇒ the sum is ≥ 2^ℓ, a wrap; both 0 ⇒ the sum is
//! < 2^ℓ, no wrap; exactly one ⇒ the sum is ≥ 2^(ℓ−1), which `x < 2^(ℓ−1)` cannot be, so it
//! wrapped. Writing `xᵢ = hᵢ·2^s + lᵢ` as in step 2 above,
//!
//! ```text
//! floor(x / 2^s) = h₀ + h₁ + c − w·2^(ℓ−s),   c = 1{l₀ + l₁ ≥ 2^s} = 1{l₀ > 2^s − 1 − l₁}.
//! ```
//!
//! * `c` needs a millionaires' comparison on the low `s` bits only (`P0`'s `l₀` against
//!   `P1`'s `2^s − 1 − l₁`), then B2A over Z_2^ℓ;
//! * `w = m₀ + m₁ − m₀·m₁` for the private MSBs `mᵢ = msb(xᵢ)`, and only `w mod 2^s` matters
//!   (it is multiplied by `2^(ℓ−s)`): one correlated OT over Z_2^s — `P0` sends with `Δ = m₀`
//!   and keeps `r`, `P1` chooses `m₁` and gets `r + m₁·m₀` — gives
//!   `⟨w⟩₀ = m₀ + r`, `⟨w⟩₁ = m₁ − (r + m₀m₁)`.
//!
//! The carry's B2A and the AND share one run of correlated OTs (`P0` sends in both), and
//!
//! ```text
//! P0: z₀ = h₀ + ⟨c⟩₀ − ⟨w⟩₀·2^(ℓ−s)        P1: z₁ = h₁ + ⟨c⟩₁ − ⟨w⟩₁·2^(ℓ−s)
//! ```
//!
//! **Learns:** nothing beyond its uniformly random output share: the comparison's outputs
//! are XOR shares, and every value received in the correlated OTs is masked by the sender's
//! uniform `r` (the sender sees only IKNP messages).
//! **Cost** per element at ℓ = 37, s = 12, 6-bit chunks, IKNP: the comparison on 12 bits
//! (12 leaf random OTs = 192 bytes; two 6-bit chunks, 32 bytes of tables; 1 triple = 2 random
//! OTs; 4 opened bits) + the correlated OTs (2 random OTs, 37 + 12 bits): ≈ 295 bytes, a third
//! of the signed truncation ([`super::cost::truncate_nonnegative`] is exact).
//! **Rounds:** 2 flights from `P0` (tables, triple OTs and AND openings; corrections), 3 from
//! `P1` (leaf and triple OTs; AND openings; correlated OTs), independent of `n` up to
//! [`super::Config::max_batch`].

use super::b2a::b2a_segments;
use super::cot;
use super::millionaire;
use super::mux::check_ring;
use super::planes;
use super::session::Session;
use crate::bits::BitVec;
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

/// Shares of `floor(x / 2^shift)` for a shared `x` known to lie in `[0, 2^(ℓ−1))` (a ReLU
/// output), `shift < ℓ` (`shift = 0` is the identity and costs nothing). Equal to
/// [`moat_nn::FixedPoint::truncate_by`] under the precondition; see the module documentation
/// for the protocol and what it costs.
pub fn truncate_nonnegative(s: &mut Session, ch: &mut dyn Channel, x: &AShare, shift: u32) -> Result<AShare> {
    check_ring(s, x, "truncate_nonnegative")?;
    let fp = s.fixed_point();
    let ell = fp.ring_bits();
    if shift >= ell {
        return Err(MpcError::invalid("truncate_nonnegative", format!("shift {shift} ≥ ring width {ell}")));
    }
    if shift == 0 || x.is_empty() {
        return Ok(x.clone());
    }
    let mut out = Vec::with_capacity(x.len());
    for part in x.values().chunks(s.config().max_batch) {
        out.extend(nonnegative_pass(s, ch, part, shift)?);
    }
    Ok(AShare::from_wrapping(fp, out))
}

fn nonnegative_pass(s: &mut Session, ch: &mut dyn Channel, x: &[u64], shift: u32) -> Result<Vec<u64>> {
    let fp = s.fixed_point();
    let ell = fp.ring_bits();
    let party = s.party();
    let n = x.len();
    let x: Vec<u64> = x.iter().map(|&v| fp.reduce(v)).collect();
    let low = (1u64 << shift) - 1;
    // The carry of the low parts: P0's l₀ against P1's 2^s − 1 − l₁.
    let input: Vec<u64> = match party {
        Party::P0 => x.iter().map(|&v| v & low).collect(),
        Party::P1 => x.iter().map(|&v| !v & low).collect(),
    };
    let (carry, _) = millionaire::compare_planes(s, ch, &input, shift, 0)?;
    let carry = planes::to_bitvec(carry, n)?;
    let msb = BitVec::from_fn(n, |i| (x[i] >> (ell - 1)) & 1 == 1);
    // One run of correlated OTs, P0 sending: the carry's B2A over Z_2^ℓ (Δ = 1 − 2c₀) and the
    // AND m₀·m₁ over Z_2^shift (Δ = m₀).
    let (sender, receiver, _) = s.parts();
    let (c, w) = match party {
        Party::P0 => {
            let b2a_deltas: Vec<u64> = (0..n).map(|i| 1u64.wrapping_sub(2 * carry.bit(i))).collect();
            let and_deltas: Vec<u64> = (0..n).map(|i| msb.bit(i)).collect();
            let mut r = cot::send(sender, ch, &[(&b2a_deltas, ell), (&and_deltas, shift)])?.into_iter();
            let (r_c, r_w) = (r.next().unwrap_or_default(), r.next().unwrap_or_default());
            let c: Vec<u64> = (0..n).map(|i| fp.sub(carry.bit(i), r_c[i])).collect();
            let w: Vec<u64> = (0..n).map(|i| msb.bit(i).wrapping_add(r_w[i])).collect();
            (c, w)
        }
        Party::P1 => {
            let mut got = cot::receive(receiver, ch, &[(&carry, ell), (&msb, shift)])?.into_iter();
            let (c, got_w) = (got.next().unwrap_or_default(), got.next().unwrap_or_default());
            let w: Vec<u64> = (0..n).map(|i| msb.bit(i).wrapping_sub(got_w[i])).collect();
            (c, w)
        }
    };
    if c.len() != n || w.len() != n {
        return Err(MpcError::invalid("truncate_nonnegative", "correlated OT output of the wrong length (bug)"));
    }
    let high_unit = 1u64 << (ell - shift);
    Ok((0..n).map(|i| fp.sub(fp.add(x[i] >> shift, c[i]), fp.mul(w[i], high_unit))).collect())
}

#[cfg(test)]
mod tests {
    use moat_nn::FixedPoint;

    /// The identity behind [`super::truncate_nonnegative`], checked exhaustively on a small
    /// ring with the ideal carry and wrap bits: for every `x < 2^(ℓ−1)` and every share `x₀`,
    /// `h₀ + h₁ + c − (msb(x₀) ∨ msb(x₁))·2^(ℓ−s) ≡ floor(x / 2^s)`.
    #[test]
    fn the_wrap_bit_of_a_nonnegative_value_is_the_or_of_the_share_msbs() {
        let ell = 7u32;
        let fp = FixedPoint::new(ell, 2).unwrap_or_else(|e| panic!("{e}"));
        for shift in 1..ell {
            for x in 0..(1u64 << (ell - 1)) {
                for x0 in 0..(1u64 << ell) {
                    let x1 = fp.sub(x, x0);
                    let wrap = (x0 + x1) >> ell;
                    let or = ((x0 | x1) >> (ell - 1)) & 1;
                    assert_eq!(wrap, or, "x = {x}, x0 = {x0}");
                    let low = (1u64 << shift) - 1;
                    let carry = ((x0 & low) + (x1 & low)) >> shift;
                    let z = fp.sub(fp.add((x0 >> shift) + (x1 >> shift), carry), fp.mul(or, 1 << (ell - shift)));
                    assert_eq!(z, fp.truncate_by(x, shift), "x = {x}, x0 = {x0}, shift = {shift}");
                }
            }
        }
    }
}
