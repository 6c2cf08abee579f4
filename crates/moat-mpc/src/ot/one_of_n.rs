//! 1-out-of-N OT from `log N` random 1-of-2 OTs (Naor–Pinkas style, with a PRG per key).
//!
//! For OT `i` with choice `c ∈ [0, N)`, `N = 2^k`, the parties run `k` random OTs, the `j`-th
//! with choice bit `c_j` (bit `j` of `c`), so the receiver holds `m^j_{c_j}` for every `j`.
//! Every key `m^j_b` is stretched by a PRG into `N/2` slots of ℓ bits, slot `s` for the index
//! `x` with `x_j = b` and `x` without bit `j` equal to `s`. The pad of index `x` is
//!
//! ```text
//!     pad_x = ⊕_j  G(m^j_{x_j})[x without bit j]
//! ```
//!
//! and the sender sends `yₓ = msgₓ ⊕ padₓ` for all `N` indices; the receiver unmasks `y_c`.
//! Every (key, slot) pair enters exactly one pad, and for `x ≠ c` at least one key of
//! `pad_x` (a bit where `x` and `c` differ) is unknown to the receiver, so the other pads are
//! jointly pseudorandom to it. The PRG is `G(m)[t] = H(m ⊕ t)` with the fixed-key hash of
//! [`super::prim`] (an Even–Mansour PRF keyed by `m`), 128 bits per AES call: with `N = 16`
//! and ℓ ≤ 16 one AES call per key.
//!
//! **Cost** per 1-of-N OT: `k` ROTs (16·k bytes receiver → sender with IKNP) and `N·ℓ` bits
//! sender → receiver; two flights; sender `2k⌈Nℓ/256⌉` AES calls, receiver half that.
//! (KK13 would cost 32 bytes instead of 16·k for k ≥ 3; an OT source can override
//! [`super::OtSender::send_one_of_n`] with it.)

use super::prim::CrHash;
use super::{OtReceiver, OtSender, ring_mask};
use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::transport::Channel;
use crate::transport::frame::RingPacker;

/// Largest supported `log N` (N = 256).
pub const MAX_LOG_N: u32 = 8;

/// Parameters shared by both sides.
#[derive(Clone, Copy, Debug)]
struct Shape {
    k: usize,
    n_msgs: usize,
    bits: u32,
    mask: u64,
    /// PRG blocks per key.
    blocks: usize,
}

impl Shape {
    fn new(log_n: u32, bits: u32, context: &'static str) -> Result<Self> {
        if !(1..=MAX_LOG_N).contains(&log_n) {
            return Err(MpcError::invalid(context, format!("log N = {log_n} not in 1..={MAX_LOG_N}")));
        }
        let mask = ring_mask(bits, context)?;
        let n_msgs = 1usize << log_n;
        let blocks = (n_msgs / 2 * bits as usize).div_ceil(128);
        Ok(Self { k: log_n as usize, n_msgs, bits, mask, blocks })
    }

    /// Slot `slot` (ℓ bits) of a key's PRG output.
    #[inline]
    fn slot(&self, stream: &[Block], slot: usize) -> u64 {
        let offset = slot * self.bits as usize;
        let (block, shift) = (offset / 128, offset % 128);
        let mut v = stream[block] >> shift;
        if shift + self.bits as usize > 128 {
            v |= stream[block + 1] << (128 - shift);
        }
        v as u64 & self.mask
    }

    /// XORs every slot of key `(j, b)`'s stream into the pad of its index.
    #[inline]
    fn add_slots(&self, stream: &[Block], j: usize, b: usize, pads: &mut [u64]) {
        let half = self.n_msgs / 2;
        if self.blocks == 1 {
            // Common case (N·ℓ ≤ 256): all slots in one block, peeled off by shifts.
            let mut v = stream[0];
            for s in 0..half {
                pads[with_bit(s, j, b)] ^= v as u64 & self.mask;
                v >>= self.bits;
            }
        } else {
            for s in 0..half {
                pads[with_bit(s, j, b)] ^= self.slot(stream, s);
            }
        }
    }
}

/// `s` with bit `b` inserted at position `j` (the index whose slot under key `(j, b)` is `s`).
#[inline]
fn with_bit(s: usize, j: usize, b: usize) -> usize {
    ((s >> j) << (j + 1)) | (b << j) | (s & ((1 << j) - 1))
}

/// `x` with bit `j` removed (the slot of `x` under key `j`).
#[inline]
fn without_bit(x: usize, j: usize) -> usize {
    ((x >> (j + 1)) << j) | (x & ((1 << j) - 1))
}

/// Expands keys into `blocks` PRG blocks each: `out[key·blocks + t] = H(key ⊕ t)`.
fn expand(hash: &CrHash, keys: impl Iterator<Item = Block>, blocks: usize, out: &mut Vec<Block>) {
    out.clear();
    for key in keys {
        out.extend((0..blocks as u128).map(|t| key ^ t));
    }
    hash.hash_in_place(out);
}

/// Regroups chunked ROT outputs into whole groups of `k` (one 1-of-N OT each).
struct Regroup<T> {
    pending: Vec<T>,
    k: usize,
}

impl<T: Copy> Regroup<T> {
    fn feed(&mut self, chunk: &[T], mut f: impl FnMut(&[T]) -> Result<()>) -> Result<()> {
        self.pending.extend_from_slice(chunk);
        let whole = self.pending.len() / self.k * self.k;
        f(&self.pending[..whole])?;
        self.pending.drain(..whole);
        Ok(())
    }
}

/// Sender side; see [`OtSender::send_one_of_n`].
pub fn send<S: OtSender + ?Sized>(
    ot: &mut S,
    ch: &mut dyn Channel,
    messages: &[u64],
    log_n: u32,
    bits: u32,
) -> Result<()> {
    let shape = Shape::new(log_n, bits, "send_one_of_n")?;
    if !messages.len().is_multiple_of(shape.n_msgs) {
        return Err(MpcError::invalid(
            "send_one_of_n",
            format!("{} messages is not a multiple of N = {}", messages.len(), shape.n_msgs),
        ));
    }
    let n = messages.len() / shape.n_msgs;
    if n == 0 {
        return Ok(());
    }
    let hash = CrHash::new();
    let mut packer = RingPacker::new(bits, messages.len())?;
    let mut regroup = Regroup { pending: Vec::new(), k: shape.k };
    let mut done = 0usize;
    let mut streams = Vec::new();
    ot.send_random_chunks(ch, n * shape.k, &mut |_, chunk| {
        regroup.feed(chunk, |groups| {
            // Stream of (ot, j, b) at ((ot·k + j)·2 + b)·blocks.
            expand(&hash, groups.iter().flat_map(|pair| pair.iter().copied()), shape.blocks, &mut streams);
            let mut pads = [0u64; 1 << MAX_LOG_N];
            for (g, row) in
                messages[done * shape.n_msgs..].chunks(shape.n_msgs).take(groups.len() / shape.k).enumerate()
            {
                let pads = &mut pads[..shape.n_msgs];
                pads.fill(0);
                for j in 0..shape.k {
                    for b in 0..2 {
                        let start = ((g * shape.k + j) * 2 + b) * shape.blocks;
                        shape.add_slots(&streams[start..start + shape.blocks], j, b, pads);
                    }
                }
                for (&msg, &pad) in row.iter().zip(pads.iter()) {
                    packer.push(msg ^ pad);
                }
            }
            done += groups.len() / shape.k;
            Ok(())
        })
    })?;
    ch.send(&packer.finish())?;
    ch.flush()?;
    Ok(())
}

/// Receiver side; see [`OtReceiver::receive_one_of_n`].
pub fn receive<R: OtReceiver + ?Sized>(
    ot: &mut R,
    ch: &mut dyn Channel,
    choices: &[u8],
    log_n: u32,
    bits: u32,
) -> Result<Vec<u64>> {
    let shape = Shape::new(log_n, bits, "receive_one_of_n")?;
    if let Some((i, &c)) = choices.iter().enumerate().find(|&(_, &c)| c as usize >= shape.n_msgs) {
        return Err(MpcError::invalid("receive_one_of_n", format!("choice {c} at index {i} ≥ N = {}", shape.n_msgs)));
    }
    let n = choices.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let bit_choices = BitVec::from_fn(n * shape.k, |t| (choices[t / shape.k] >> (t % shape.k)) & 1 == 1);
    let hash = CrHash::new();
    let mut pads = Vec::with_capacity(n);
    let mut regroup = Regroup { pending: Vec::new(), k: shape.k };
    let mut streams = Vec::new();
    ot.receive_random_chunks(ch, &bit_choices, &mut |_, chunk| {
        regroup.feed(chunk, |groups| {
            expand(&hash, groups.iter().copied(), shape.blocks, &mut streams);
            for g in 0..groups.len() / shape.k {
                let c = choices[pads.len()] as usize;
                let mut pad = 0u64;
                for j in 0..shape.k {
                    let start = (g * shape.k + j) * shape.blocks;
                    pad ^= shape.slot(&streams[start..start + shape.blocks], without_bit(c, j));
                }
                pads.push(pad);
            }
            Ok(())
        })
    })?;
    let masked = ch.recv_ring(n * shape.n_msgs, bits)?;
    Ok(pads
        .iter()
        .zip(choices)
        .enumerate()
        .map(|(i, (&pad, &c))| masked[i * shape.n_msgs + c as usize] ^ pad)
        .collect())
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;

    #[test]
    fn slots_partition_indices() {
        // Every (j, x_j, slot) is hit by exactly one x.
        for k in 1..=4usize {
            let n = 1 << k;
            let mut seen = std::collections::HashSet::new();
            for x in 0..n {
                for j in 0..k {
                    let s = without_bit(x, j);
                    assert!(s < n / 2);
                    assert!(seen.insert((j, (x >> j) & 1, s)));
                }
            }
            assert_eq!(seen.len(), n * k);
            for s in 0..n / 2 {
                for j in 0..k {
                    for b in 0..2 {
                        let x = with_bit(s, j, b);
                        assert_eq!((without_bit(x, j), (x >> j) & 1), (s, b));
                    }
                }
            }
        }
    }

    #[test]
    fn slot_extraction_straddles_blocks() -> Result<()> {
        let shape = Shape::new(8, 37, "test")?;
        assert_eq!(shape.blocks, (128 * 37usize).div_ceil(128));
        let stream: Vec<Block> =
            (0..shape.blocks as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        for s in 0..128 {
            let mut expect = 0u64;
            for b in 0..37 {
                let bit = s * 37 + b;
                expect |= (((stream[bit / 128] >> (bit % 128)) & 1) as u64) << b;
            }
            assert_eq!(shape.slot(&stream, s), expect, "slot {s}");
        }
        Ok(())
    }
}
