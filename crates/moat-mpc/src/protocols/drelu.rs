//! DReLU: XOR shares of `1{x ≥ 0}` (the sign test, `MSB(x) = 0`) of an arithmetically shared
//! `x ∈ Z_2^ℓ`, exact for every ring element.
//!
//! **How.** With `x = x₀ + x₁ mod 2^ℓ` and `x'ᵢ = xᵢ mod 2^(ℓ−1)`:
//! `MSB(x) = MSB(x₀) ⊕ MSB(x₁) ⊕ carry`, where `carry = 1{x'₀ + x'₁ ≥ 2^(ℓ−1)}
//! = 1{x'₀ > 2^(ℓ−1) − 1 − x'₁}` is a millionaires' comparison on `ℓ − 1` bits between
//! `P0`'s `x'₀` and `P1`'s `2^(ℓ−1) − 1 − x'₁` ([`super::millionaire`](mod@super::millionaire)). Then
//! `DReLU = 1 ⊕ MSB(x)`: `P0` holds `1 ⊕ MSB(x₀) ⊕ carry₀`, `P1` holds `MSB(x₁) ⊕ carry₁`.
//!
//! **Learns:** nothing beyond its uniformly random output share.
//! **Cost:** one millionaires' comparison on `ℓ − 1` bits (835 bytes; 3 flights from `P0`,
//! 4 from `P1` at ℓ = 37 with 6-bit chunks).

use std::borrow::Cow;

use super::millionaire;
use super::mux::check_ring;
use super::planes;
use super::session::Session;
use crate::error::Result;
use crate::shares::{AShare, BShare, Party};
use crate::transport::Channel;

/// XOR shares of `1{x ≥ 0}` (signed), one bit per element of `x`.
pub fn drelu(s: &mut Session, ch: &mut dyn Channel, x: &AShare) -> Result<BShare> {
    check_ring(s, x, "drelu")?;
    let plane = drelu_plane(s, ch, x.values())?;
    Ok(BShare::new(planes::to_bitvec(plane, x.len())?))
}

/// [`drelu`] on raw share values (reduced mod 2^ℓ), as a plane.
pub(crate) fn drelu_plane(s: &mut Session, ch: &mut dyn Channel, x: &[u64]) -> Result<Vec<u64>> {
    let ell = s.fixed_point().ring_bits();
    drelu_against_plane_in(s, ch, x, &[0], ell)
}

/// [`drelu_plane`] of `x − t` in the ring `Z_2^bits` (`2 ≤ bits ≤ ℓ`), for each `x` and each
/// public `t` of `thresholds` (the plane's bit `i·T + k` is `1{xᵢ − t_k ≥ 0}`, `T`
/// thresholds; `[0]` for the signs themselves).
///
/// *Narrow ring:* the sign of each difference's lowest `bits` bits read as a signed
/// `bits`-bit integer. The shares' low `bits` bits are shares of the value mod `2^bits`
/// (reduction mod a power of two is a ring map), so for differences known to lie in
/// `[−2^(bits−1), 2^(bits−1))` this is `1{x − t ≥ 0}` — for a millionaires' comparison on
/// `bits − 1` bits instead of `ℓ − 1`.
///
/// *Thresholds:* `P0` subtracts each threshold from its share, so `P1`'s comparison input is
/// the same for all `T`, and the `T` comparisons of one `x` share their leaf OTs
/// ([`millionaire::compare_planes_fanout`]): `(bits − 1)` random OTs per value instead of
/// `T·(bits − 1)`; the tables, AND trees and rounds are those of `n·T` comparisons.
/// **Learns:** nothing beyond its random output shares (as [`drelu`]).
pub(crate) fn drelu_against_plane_in(
    s: &mut Session,
    ch: &mut dyn Channel,
    x: &[u64],
    thresholds: &[u64],
    bits: u32,
) -> Result<Vec<u64>> {
    let ell = s.fixed_point().ring_bits();
    if !(2..=ell).contains(&bits) {
        return Err(crate::error::MpcError::invalid("drelu", format!("a ring of {bits} bits inside one of {ell}")));
    }
    let fanout = thresholds.len();
    let m = bits - 1;
    let low = if m == 64 { u64::MAX } else { (1u64 << m) - 1 };
    let party = s.party();
    // P0's shares of x − t (mod 2^bits: a u64 difference reduces correctly), P1's of x.
    let shares: Cow<'_, [u64]> = match party {
        _ if thresholds == [0] => Cow::Borrowed(x),
        Party::P0 => x.iter().flat_map(|&v| thresholds.iter().map(move |&t| v.wrapping_sub(t))).collect(),
        Party::P1 => x.iter().flat_map(|&v| std::iter::repeat_n(v, fanout)).collect(),
    };
    let input: Vec<u64> = match party {
        Party::P0 => shares.iter().map(|&v| v & low).collect(),
        Party::P1 => x.iter().map(|&v| !v & low).collect(),
    };
    let (mut carry, _) = millionaire::compare_planes_fanout(s, ch, &input, fanout, m, 0)?;
    for (k, word) in carry.iter_mut().enumerate() {
        let mut msb = 0u64;
        for (j, &v) in shares.iter().skip(64 * k).take(64).enumerate() {
            msb |= ((v >> m) & 1) << j;
        }
        *word ^= msb;
        if party == Party::P0 {
            *word = !*word;
        }
    }
    planes::clear_padding(&mut carry, shares.len());
    Ok(carry)
}
