//! Correlated Beaver bit triples from random OT, and the AND gates they pay for.
//!
//! **What it computes.** XOR shares of `count` *correlated* triples `(a; b, b'; c, c')` with
//! `c = a ∧ b`, `c' = a ∧ b'` (one `a` serving two ANDs: the millionaires' tree multiplies
//! `eq_hi` by both `gt_lo` and `eq_lo`). Each party learns only its own uniformly random
//! shares.
//!
//! **How.** Two random OTs per triple, one in each direction, with *random* choice bits (the
//! natural output of a silent OT, hence [`crate::ot::OtReceiver::receive_random_choice`]):
//!
//! * `P0` sends, `P1` chooses `a₁`: `P0` sets `b₀ = m₀⊕m₁`, `u₀ = m₀` (bit 0; bit 1 for the
//!   primed triple) and `P1` gets `v₁ = m_{a₁} = u₀ ⊕ a₁·b₀`, so `a₁b₀ = u₀ ⊕ v₁`;
//! * the same with the roles swapped gives `a₀b₁ = u₁ ⊕ v₀`;
//! * `cᵢ = aᵢbᵢ ⊕ uᵢ ⊕ vᵢ`, and `c₀ ⊕ c₁ = a₀b₀ ⊕ a₁b₁ ⊕ a₁b₀ ⊕ a₀b₁ = ab`.
//!
//! No message besides the OTs' own: with IKNP **32 bytes per triple** (16 each direction),
//! and the random OTs of both directions travel in flights the caller already has; with a
//! silent OT none at all (the COTs' own random choices, no derandomisation bit; only the
//! refill rounds of the pools).
//!
//! **AND gates** ([`and_gates`]) open `d = x ⊕ a`, `e = y ⊕ b` (and `e' = y' ⊕ b'`):
//! 2–3 bits per gate each way in one exchange, then `z = c ⊕ d·b ⊕ e·a ⊕ [P0]·d·e`.
//! The opened values are masked by the uniformly random `a, b`: nothing is learned.

use rand_chacha::ChaCha20Rng;

use super::planes::{self, BitWriter};
use crate::error::Result;
use crate::ot::{OtReceiver, OtSender};
use crate::shares::Party;
use crate::transport::Channel;

/// Random OTs per call of the random-choice receiver (bounds the memory of its outputs;
/// consecutive calls go out in the same flight). A multiple of 128, so IKNP pads only the last.
pub(crate) const PIECE: usize = 1 << 16;

/// The OT sender's half of `count` triples: `b, b', u, u'` (packed, `count` bits each).
pub(crate) struct SenderHalf {
    b: Vec<u64>,
    b2: Vec<u64>,
    u: Vec<u64>,
    u2: Vec<u64>,
}

/// The OT receiver's half: `a` (the random choices) and `v, v'`.
pub(crate) struct ReceiverHalf {
    a: Vec<u64>,
    v: Vec<u64>,
    v2: Vec<u64>,
}

/// Runs the sender side of `count` random OTs (in pieces of [`PIECE`]).
pub(crate) fn sender_half(ot: &mut dyn OtSender, ch: &mut dyn Channel, count: usize) -> Result<SenderHalf> {
    let mut w = [(); 4].map(|_| BitWriter::with_capacity(count));
    let mut done = 0;
    while done < count {
        let piece = PIECE.min(count - done);
        ot.send_random_choice_chunks(ch, piece, &mut |_, pairs| {
            for group in pairs.chunks(64) {
                let mut words = [0u64; 4];
                for (j, p) in group.iter().enumerate() {
                    let (m0, m1) = (p[0] as u64, p[1] as u64);
                    let diff = m0 ^ m1;
                    words[0] |= (diff & 1) << j;
                    words[1] |= ((diff >> 1) & 1) << j;
                    words[2] |= (m0 & 1) << j;
                    words[3] |= ((m0 >> 1) & 1) << j;
                }
                for (writer, word) in w.iter_mut().zip(words) {
                    writer.push(word, group.len() as u32);
                }
            }
            Ok(())
        })?;
        done += piece;
    }
    let [b, b2, u, u2] = w.map(BitWriter::finish);
    Ok(SenderHalf { b, b2, u, u2 })
}

/// Runs the receiver side of `count` random OTs with random choices (in pieces).
pub(crate) fn receiver_half(
    ot: &mut dyn OtReceiver,
    ch: &mut dyn Channel,
    count: usize,
    rng: &mut ChaCha20Rng,
) -> Result<ReceiverHalf> {
    let mut a = BitWriter::with_capacity(count);
    let mut v = BitWriter::with_capacity(count);
    let mut v2 = BitWriter::with_capacity(count);
    let mut done = 0;
    while done < count {
        let piece = PIECE.min(count - done);
        let (choices, keys) = ot.receive_random_choice(ch, piece, rng)?;
        for (word, keys) in choices.words().iter().zip(keys.chunks(64)) {
            a.push(*word & mask_low(keys.len()), keys.len() as u32);
            let (mut lo, mut hi) = (0u64, 0u64);
            for (j, &k) in keys.iter().enumerate() {
                lo |= (k as u64 & 1) << j;
                hi |= ((k as u64 >> 1) & 1) << j;
            }
            v.push(lo, keys.len() as u32);
            v2.push(hi, keys.len() as u32);
        }
        done += piece;
    }
    Ok(ReceiverHalf { a: a.finish(), v: v.finish(), v2: v2.finish() })
}

fn mask_low(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// One party's shares of `n` correlated triples, as planes.
pub(crate) struct Triples {
    pub(crate) a: Vec<u64>,
    pub(crate) b: Vec<u64>,
    pub(crate) b2: Vec<u64>,
    pub(crate) c: Vec<u64>,
    pub(crate) c2: Vec<u64>,
}

/// Combines a party's two halves into its triple shares; `groups` consecutive groups of `n`
/// triples (group `g` = bits `g·n .. (g+1)·n`) come back as separate planes.
pub(crate) fn combine(s: &SenderHalf, r: &ReceiverHalf, groups: usize, n: usize) -> Vec<Triples> {
    (0..groups)
        .map(|g| {
            let cut = |v: &[u64]| planes::extract(v, g * n, n);
            let (a, b, b2) = (cut(&r.a), cut(&s.b), cut(&s.b2));
            let (u, u2, v, v2) = (cut(&s.u), cut(&s.u2), cut(&r.v), cut(&r.v2));
            let c = (0..a.len()).map(|k| (a[k] & b[k]) ^ u[k] ^ v[k]).collect();
            let c2 = (0..a.len()).map(|k| (a[k] & b2[k]) ^ u2[k] ^ v2[k]).collect();
            Triples { a, b, b2, c, c2 }
        })
        .collect()
}

/// One AND gate pair over planes: `x ∧ y` and, if `y2` is given, `x ∧ y2`.
pub(crate) struct Gate<'a> {
    pub(crate) x: &'a [u64],
    pub(crate) y: &'a [u64],
    pub(crate) y2: Option<&'a [u64]>,
    pub(crate) triple: &'a Triples,
}

/// Shares of `x ∧ y` and (when asked for) `x ∧ y2`.
pub(crate) type GateOutput = (Vec<u64>, Option<Vec<u64>>);

/// Evaluates all `gates` (planes of `n` bits) in **one exchange**: each party sends
/// `⌈n/8⌉` bytes per opened plane (2 or 3 per gate). Returns `(x∧y, x∧y2)` shares per gate.
pub(crate) fn and_gates(party: Party, ch: &mut dyn Channel, gates: &[Gate<'_>], n: usize) -> Result<Vec<GateOutput>> {
    let mut msg = Vec::new();
    let mut mine = Vec::with_capacity(gates.len());
    for g in gates {
        let d = planes::xor(g.x, &g.triple.a);
        let e = planes::xor(g.y, &g.triple.b);
        let e2 = g.y2.map(|y2| planes::xor(y2, &g.triple.b2));
        planes::append_bytes(&mut msg, &d, n);
        planes::append_bytes(&mut msg, &e, n);
        if let Some(e2) = &e2 {
            planes::append_bytes(&mut msg, e2, n);
        }
        mine.push((d, e, e2));
    }
    let peer = ch.exchange(&msg)?;
    let mut offset = 0;
    let mut out = Vec::with_capacity(gates.len());
    let own_constant = party == Party::P0;
    for (g, (mut d, mut e, e2)) in gates.iter().zip(mine) {
        planes::xor_assign(&mut d, &planes::read_plane(&peer, &mut offset, n)?);
        planes::xor_assign(&mut e, &planes::read_plane(&peer, &mut offset, n)?);
        let t = g.triple;
        let z: Vec<u64> = (0..d.len())
            .map(|k| t.c[k] ^ (d[k] & t.b[k]) ^ (e[k] & t.a[k]) ^ if own_constant { d[k] & e[k] } else { 0 })
            .collect();
        let z2 = match e2 {
            Some(mut e2) => {
                planes::xor_assign(&mut e2, &planes::read_plane(&peer, &mut offset, n)?);
                Some(
                    (0..d.len())
                        .map(|k| {
                            t.c2[k] ^ (d[k] & t.b2[k]) ^ (e2[k] & t.a[k]) ^ if own_constant { d[k] & e2[k] } else { 0 }
                        })
                        .collect(),
                )
            }
            None => None,
        };
        out.push((z, z2));
    }
    if offset != peer.len() {
        return Err(crate::error::MpcError::Transport(crate::transport::TransportError::LengthMismatch {
            expected: offset,
            got: peer.len(),
        }));
    }
    Ok(out)
}
