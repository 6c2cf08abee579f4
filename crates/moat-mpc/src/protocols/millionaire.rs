//! Millionaires' comparison (CrypTFlow2, Rathee et al. CCS 2020, §4.1), batched.
//!
//! **Computes** XOR shares of `1{x > y}` for `P0`'s private `x` and `P1`'s private `y`,
//! both `m`-bit unsigned integers (*convention: strict "greater than", `P0`'s input on the
//! left*). [`greater_than_split`] also returns shares of `1{x mod 2^s > y mod 2^s}` for a
//! split point `s` at no extra cost (the truncation protocol needs both). With a *fan-out*
//! (`compare_planes_fanout`), `P0` compares several inputs against each of `P1`'s and the
//! comparisons of one `y` share their leaf OTs (one secret against many public thresholds).
//!
//! **Learns:** each party only its uniformly random output share; `P0` (OT sender) learns
//! nothing about `y` (it only sees IKNP messages), `P1` sees one entry per table, masked.
//!
//! **How.** Split `x` and `y` into chunks of `k` bits (`k` = [`super::Config::chunk_bits`]),
//! least significant first (with a split `s`, the chunks of the low `s` bits and of the high
//! `m − s` bits are cut separately).
//!
//! 1. *Leaves.* For chunk `j`, `P0` draws its shares `gt₀, eq₀` and builds the table over all
//!    `v ∈ [0, 2^k)`: `(1{x_j > v} ⊕ gt₀, 1{x_j = v} ⊕ eq₀)`; `P1` gets the entry at
//!    `v = y_j` by a 1-out-of-2^k OT made of `k` random OTs whose choice bits are the bits of
//!    `y_j`. The pads come straight from the 128-bit random-OT outputs: entry `v`'s bit is
//!    masked by bit `v` (resp. `2^k + v`) of key `(t, v_t)` for every bit `t`, so every key bit
//!    masks exactly one entry and the entries other than `y_j` stay hidden (the Naor–Pinkas
//!    argument of [`crate::ot::one_of_n`], without its PRG: `2^(k+1) ≤ 128` bits suffice).
//! 2. *Tree.* Chunks combine pairwise, `(gt, eq) = (gt_hi ⊕ eq_hi∧gt_lo, eq_hi∧eq_lo)`
//!    (the two terms of `gt` are exclusive, so XOR is OR), in `⌈log₂ C⌉` levels for `C` chunks,
//!    with one correlated Beaver triple (two random OTs) per combination and one
//!    exchange per level; `eq` is only computed where a later combination needs it.
//!
//! **Cost** for `n` comparisons of `m` bits with `C = ⌈m/k⌉` chunks (`C − 1` combinations),
//! IKNP random OT = 16 bytes (plus frame headers; see [`super::cost`] for the exact count):
//!
//! | | bytes per comparison |
//! |---|---|
//! | leaves: `m` random OTs `P1 → P0` | `16·m` |
//! | leaf tables `P0 → P1` | `C·2^(k+1) / 8` |
//! | triples: `C − 1` × 2 random OTs, one each way | `32·(C − 1)` |
//! | AND tree: 2–3 bits per combination, each way | `≤ 6·(C − 1) / 8` |
//!
//! For the DReLU of ℓ = 37 (`m = 36`), `k = 6`: 576 + 96 + 160 + 3 ≈ 835 bytes (`k = 4`:
//! 576 + 36 + 256 + 5 ≈ 873). Chunk widths are balanced (25 bits with `k = 6` are five
//! chunks of 5), which keeps the tables small at the same number of OTs.
//! **Rounds:** `P1` sends its OT messages, `P0` its tables, OT messages and first AND
//! openings, then both exchange openings once per remaining tree level: `⌈log₂ C⌉` levels
//! (3 for `C = 6`), i.e. 3 flights from `P0` and 4 from `P1`; constant in `n` up to
//! [`super::Config::max_batch`] elements per pass. With a silent OT the triples' random OTs
//! send nothing ([`crate::ot::OtSender::random_choice_is_silent`]): `P0` sends its tables
//! before it works on the triples, and `P1` unmasks its leaves meanwhile.

use super::planes::{self, BitWriter};
use super::session::Session;
use super::triples::{self, Gate};
use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::ot::prim::CrHash;
use crate::shares::{BShare, Party};
use crate::transport::Channel;

/// XOR shares of `1{x > y}` where `P0` holds `x` and `P1` holds `y` (`input`, one per
/// comparison, `bits`-bit unsigned: values are reduced mod 2^bits). `bits ≤ 64`.
pub fn greater_than(s: &mut Session, ch: &mut dyn Channel, input: &[u64], bits: u32) -> Result<BShare> {
    let (gt, _) = greater_than_split(s, ch, input, bits, 0)?;
    Ok(gt)
}

/// [`greater_than`] plus shares of `1{x mod 2^low_bits > y mod 2^low_bits}` (the comparison
/// of the low `low_bits` bits, which the full comparison computes on the way).
pub fn greater_than_split(
    s: &mut Session,
    ch: &mut dyn Channel,
    input: &[u64],
    bits: u32,
    low_bits: u32,
) -> Result<(BShare, BShare)> {
    let n = input.len();
    let (gt, low) = compare_planes(s, ch, input, bits, low_bits)?;
    Ok((BShare::new(planes::to_bitvec(gt, n)?), BShare::new(planes::to_bitvec(low, n)?)))
}

/// The comparison on planes, in passes of at most `max_batch` elements.
pub(crate) fn compare_planes(
    s: &mut Session,
    ch: &mut dyn Channel,
    input: &[u64],
    bits: u32,
    low_bits: u32,
) -> Result<(Vec<u64>, Vec<u64>)> {
    compare_planes_fanout(s, ch, input, 1, bits, low_bits)
}

/// [`compare_planes`] of `P0`'s `fanout` inputs against each of `P1`'s: `P1` holds `n`
/// values, `P0` holds `n·fanout` (its `fanout` values for `P1`'s `i`-th at
/// `i·fanout ..`), and the planes hold the `n·fanout` comparisons in `P0`'s order.
///
/// The leaf OTs are `P1`'s choices, so comparisons that share `P1`'s input share them: one
/// 1-out-of-2^k OT per chunk carries the `fanout` tables of that chunk, its pads stretched
/// by a correlation-robust hash (`H(key ⊕ e)` for the pad's 128-bit blocks `e ≥ 1`, the key
/// itself for block 0) — `n·m` random OTs instead of `n·fanout·m`. The tables' bytes and
/// the AND tree (`n·fanout` comparisons) are unchanged; so are the rounds. `P1`'s choices
/// are the same for all `fanout` tables, so it still learns one entry per table, and the
/// other entries stay masked by hash outputs of keys it lacks.
pub(crate) fn compare_planes_fanout(
    s: &mut Session,
    ch: &mut dyn Channel,
    input: &[u64],
    fanout: usize,
    bits: u32,
    low_bits: u32,
) -> Result<(Vec<u64>, Vec<u64>)> {
    if bits > 64 || low_bits > bits || fanout == 0 {
        return Err(MpcError::invalid(
            "millionaire",
            format!(
                "need low_bits ≤ bits ≤ 64 and a fan-out, got low_bits = {low_bits}, bits = {bits}, fan-out {fanout}"
            ),
        ));
    }
    // Inputs per element of P1: `fanout` for P0, one for P1.
    let per = if s.party() == Party::P0 { fanout } else { 1 };
    if !input.len().is_multiple_of(per) {
        return Err(MpcError::invalid(
            "millionaire",
            format!("{} inputs are not {fanout} per comparison group", input.len()),
        ));
    }
    let elements = (s.config().max_batch / fanout).max(1);
    if input.len() <= elements * per {
        return compare_batch(s, ch, input, fanout, bits, low_bits);
    }
    let mut gt = BitWriter::with_capacity(input.len() / per * fanout);
    let mut low = BitWriter::with_capacity(input.len() / per * fanout);
    for part in input.chunks(elements * per) {
        let (g, l) = compare_batch(s, ch, part, fanout, bits, low_bits)?;
        let n = part.len() / per * fanout;
        append_plane(&mut gt, &g, n);
        append_plane(&mut low, &l, n);
    }
    Ok((gt.finish(), low.finish()))
}

fn append_plane(w: &mut BitWriter, plane: &[u64], n: usize) {
    for (k, &word) in plane.iter().enumerate() {
        w.push(word, (n - 64 * k).min(64) as u32);
    }
}

/// The public key of the hash that stretches leaf pads (domain separation from moat's other
/// uses of [`CrHash`]).
const LEAF_PAD_KEY: Block = 0x6d6f_6174_2d6c_6561_662d_7061_6473_0001;

#[inline]
fn mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// One combination of the tree: `out = combine(hi, lo)`, evaluated at `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Op {
    hi: usize,
    lo: usize,
    out: usize,
    level: usize,
    need_eq: bool,
}

/// Chunks and combining tree of one comparison shape.
#[derive(Clone, Debug)]
struct ChunkTree {
    /// Chunk widths, least significant first (leaf `j` is node `j`).
    widths: Vec<u32>,
    offsets: Vec<u32>,
    ops: Vec<Op>,
    levels: usize,
    root: Option<usize>,
    low_root: Option<usize>,
    nodes: usize,
}

impl ChunkTree {
    /// Random OTs of the leaf layer for `n` comparisons: one per input bit of every chunk.
    fn leaf_ot_bits(&self, n: usize) -> usize {
        self.widths.iter().map(|&w| n * (w as usize)).sum()
    }

    /// The most table bits one leaf OT adds, with `fanout` tables per leaf (a bound for
    /// buffers holding the tables of a given number of OTs).
    fn table_bits_per_ot(&self, fanout: usize) -> usize {
        self.widths.iter().map(|&w| (fanout << (w + 1)).div_ceil(w as usize)).max().unwrap_or(0)
    }

    fn new(bits: u32, low_bits: u32, k: u32) -> Self {
        // Each part in ⌈bits/k⌉ chunks of balanced widths (at most k): the leaf OTs cost one
        // random OT per bit whatever the split, but a table costs 2^(w+1) bits, so 25 bits in
        // five chunks of 5 beat 6 + 6 + 6 + 6 + 1.
        let mut widths = Vec::new();
        for part in [low_bits, bits - low_bits] {
            let chunks = part.div_ceil(k);
            for c in 0..chunks {
                widths.push(part / chunks + u32::from(c < part % chunks));
            }
        }
        let low_chunks = low_bits.div_ceil(k) as usize;
        let offsets = widths.iter().scan(0, |acc, &w| Some(std::mem::replace(acc, *acc + w))).collect();
        let mut nodes = widths.len();
        let mut ops = Vec::new();
        let (low_root, low_depth) = subtree(&mut ops, &mut nodes, (0..low_chunks).collect());
        let (high_root, high_depth) = subtree(&mut ops, &mut nodes, (low_chunks..widths.len()).collect());
        let root = match (high_root, low_root) {
            (Some(hi), Some(lo)) => {
                let out = nodes;
                nodes += 1;
                ops.push(Op { hi, lo, out, level: low_depth.max(high_depth), need_eq: false });
                Some(out)
            }
            (hi, lo) => hi.or(lo),
        };
        let mut need = vec![false; nodes];
        for op in ops.iter_mut().rev() {
            op.need_eq = need[op.out];
            need[op.hi] = true;
            need[op.lo] |= op.need_eq;
        }
        let levels = ops.iter().map(|o| o.level + 1).max().unwrap_or(0);
        Self { widths, offsets, ops, levels, root, low_root, nodes }
    }
}

/// Pairs `list` (least significant first) level by level; returns the root and the depth.
fn subtree(ops: &mut Vec<Op>, nodes: &mut usize, mut list: Vec<usize>) -> (Option<usize>, usize) {
    let mut level = 0;
    while list.len() > 1 {
        let mut next = Vec::with_capacity(list.len().div_ceil(2));
        for pair in list.chunks(2) {
            if let [lo, hi] = *pair {
                ops.push(Op { hi, lo, out: *nodes, level, need_eq: false });
                next.push(*nodes);
                *nodes += 1;
            } else {
                next.extend_from_slice(pair);
            }
        }
        list = next;
        level += 1;
    }
    (list.first().copied(), level)
}

/// Number of chunks, combinations and tree levels of a comparison (for cost predictions).
pub(crate) fn shape(bits: u32, low_bits: u32, k: u32) -> (usize, usize, usize) {
    let plan = ChunkTree::new(bits, low_bits, k);
    (plan.widths.len(), plan.ops.len(), plan.levels)
}

/// Planes each party opens per tree level (2 per combination, 3 where `eq` is needed).
pub(crate) fn opened_planes_per_level(bits: u32, low_bits: u32, k: u32) -> Vec<usize> {
    let plan = ChunkTree::new(bits, low_bits, k);
    let mut per_level = vec![0; plan.levels];
    for op in &plan.ops {
        per_level[op.level] += 2 + op.need_eq as usize;
    }
    per_level
}

/// Leaf table bits per comparison: `Σ_j 2^(w_j + 1)`.
pub(crate) fn table_bits(bits: u32, low_bits: u32, k: u32) -> usize {
    ChunkTree::new(bits, low_bits, k).widths.iter().map(|&w| 2usize << w).sum()
}

/// Positions `p < 128` whose index `p mod 2^w` has bit `t` clear (taken from key 0): the
/// pattern of one table's `2^(w+1)` positions, repeated over the block.
fn key_masks(w: u32) -> [u128; 6] {
    let mut m = [0u128; 6];
    for (t, mt) in m.iter_mut().enumerate().take(w as usize) {
        for p in 0..128u32 {
            if (p % (1 << w)) >> t & 1 == 0 {
                *mt |= 1u128 << p;
            }
        }
    }
    m
}

/// How the leaf OTs' keys are stretched into pads for leaves carrying `fanout` tables (both
/// parties alike): the hash, and the 128-bit blocks each chunk's pad takes.
struct Stretch {
    hash: CrHash,
    blocks: Vec<usize>,
}

impl Stretch {
    fn new(plan: &ChunkTree, fanout: usize) -> Self {
        let blocks = plan.widths.iter().map(|&w| (fanout << (w + 1)).div_ceil(128)).collect();
        Self { hash: CrHash::with_key(LEAF_PAD_KEY), blocks }
    }

    /// A zeroed buffer for the largest pad.
    fn buffer(&self) -> Vec<Block> {
        vec![0; self.blocks.iter().copied().max().unwrap_or(1)]
    }

    /// Chunk `j`'s pad blocks of one random-OT key in `out`: the key, then `H(key ⊕ e)` for
    /// `e ≥ 1`. Returns how many.
    #[inline]
    fn key(&self, j: usize, key: Block, out: &mut [Block]) -> usize {
        let blocks = self.blocks[j];
        for (e, b) in out[..blocks].iter_mut().enumerate() {
            *b = key ^ e as u128;
        }
        if blocks > 1 {
            self.hash.hash_in_place(&mut out[1..blocks]);
        }
        blocks
    }
}

/// Bit `pos` of a pad of several 128-bit blocks (table `θ`'s entry `q` is at
/// `θ·2^(w+1) + q`).
#[inline]
fn pad_bit(pad: &[Block], pos: usize) -> u64 {
    (pad[pos / 128] >> (pos % 128)) as u64 & 1
}

#[inline]
fn low_mask128(bits: u32) -> u128 {
    if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 }
}

/// One plane per tree node (leaves first), filled as the tree is evaluated.
type NodePlanes = Vec<Option<Vec<u64>>>;

fn compare_batch(
    s: &mut Session,
    ch: &mut dyn Channel,
    input: &[u64],
    fanout: usize,
    bits: u32,
    low_bits: u32,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let party = s.party();
    // P1's elements, and the comparisons.
    let n = if party == Party::P0 { input.len() / fanout } else { input.len() };
    let total = n * fanout;
    let zeros = || vec![0u64; planes::words_for(total)];
    if n == 0 || bits == 0 {
        return Ok((zeros(), zeros()));
    }
    let plan = ChunkTree::new(bits, low_bits, s.config().chunk_bits);
    let chunks = plan.widths.len();
    let triple_count = plan.ops.len() * total;
    let (sender, receiver, rng) = s.parts();
    // The leaf table and the triples are independent. With a silent OT the triples' random
    // OTs exchange no message (only the sender's refill rounds), so P0 sends its table first
    // and P1 unmasks its leaves while P0 works on the triples: P1's share of a leaf OT costs
    // less than P0's, and it would otherwise wait for the table (6–8 % faster ReLUs measured,
    // `moat bench relu --ot ferret`). With IKNP, P0's sender half reads the matrix of P1's
    // receiver half, so that half goes first and the table follows P0's sender half.
    let table_first = sender.random_choice_is_silent() && receiver.random_choice_is_silent();

    // Leaf shares of every chunk, as planes.
    let (mut gt, mut eq): (NodePlanes, NodePlanes) = (vec![None; plan.nodes], vec![None; plan.nodes]);
    let (send_half, recv_half) = match party {
        Party::P0 => {
            let leaves: Pads = (0..chunks)
                .map(|_| (BitVec::random(total, rng).words().to_vec(), BitVec::random(total, rng).words().to_vec()))
                .collect();
            let (table, table_bits) = if fanout == 1 {
                leaf_tables::<true>(sender, ch, input, 1, &plan, &leaves)?
            } else {
                leaf_tables::<false>(sender, ch, input, fanout, &plan, &leaves)?
            };
            for (j, (g, e)) in leaves.into_iter().enumerate() {
                gt[j] = Some(g);
                eq[j] = Some(e);
            }
            if table_first {
                planes::send_words(ch, &table, table_bits)?;
            }
            let send_half = triples::sender_half(sender, ch, triple_count)?;
            if !table_first {
                planes::send_words(ch, &table, table_bits)?;
            }
            drop(table);
            let recv_half = triples::receiver_half(receiver, ch, triple_count, rng)?;
            (send_half, recv_half)
        }
        Party::P1 => {
            let mut leaves = if fanout == 1 {
                leaf_pads::<true>(receiver, ch, input, 1, &plan)?
            } else {
                leaf_pads::<false>(receiver, ch, input, fanout, &plan)?
            };
            // With IKNP, P1's receiver half goes before the table (P0's sender half reads its
            // matrix). With a silent OT, P1's sender half goes first: its refill rounds are
            // what P0's receiver half waits for, and P1 works on it while P0 finishes the table.
            let (early_send, early_recv) = if table_first {
                (Some(triples::sender_half(sender, ch, triple_count)?), None)
            } else {
                (None, Some(triples::receiver_half(receiver, ch, triple_count, rng)?))
            };
            leaves.unmask(planes::recv_words(ch, leaves.unreceived_bits())?);
            for (j, (g, e)) in leaves.finish()?.into_iter().enumerate() {
                gt[j] = Some(g);
                eq[j] = Some(e);
            }
            let recv_half = match early_recv {
                Some(half) => half,
                None => triples::receiver_half(receiver, ch, triple_count, rng)?,
            };
            let send_half = match early_send {
                Some(half) => half,
                None => triples::sender_half(sender, ch, triple_count)?,
            };
            (send_half, recv_half)
        }
    };
    let triples = triples::combine(&send_half, &recv_half, plan.ops.len(), total);
    drop((send_half, recv_half));

    let missing = || MpcError::invalid("millionaire", "combining tree out of order (bug)");
    for level in 0..plan.levels {
        let ops: Vec<(usize, Op)> = plan.ops.iter().copied().enumerate().filter(|(_, o)| o.level == level).collect();
        let mut gates = Vec::with_capacity(ops.len());
        for &(o, op) in &ops {
            gates.push(Gate {
                x: eq[op.hi].as_deref().ok_or_else(missing)?,
                y: gt[op.lo].as_deref().ok_or_else(missing)?,
                y2: if op.need_eq { Some(eq[op.lo].as_deref().ok_or_else(missing)?) } else { None },
                triple: &triples[o],
            });
        }
        let results = triples::and_gates(party, ch, &gates, total)?;
        for (&(_, op), (z, z2)) in ops.iter().zip(results) {
            let hi = gt[op.hi].as_deref().ok_or_else(missing)?;
            gt[op.out] = Some(planes::xor(hi, &z));
            eq[op.out] = z2;
        }
    }
    let take = |v: &mut NodePlanes, node: Option<usize>| node.and_then(|i| v[i].take()).unwrap_or_else(zeros);
    let low = take(&mut gt, plan.low_root);
    let full = match (plan.root, plan.low_root) {
        (Some(r), Some(l)) if r == l => low.clone(),
        _ => take(&mut gt, plan.root),
    };
    Ok((full, low))
}

/// `P0`: runs the leaf OTs as sender and builds the tables (packed bits) masking its leaf
/// shares `shares[j] = (gt plane, eq plane)`, `fanout` tables per leaf OT.
///
/// With an OT whose sender has messages of its own (a silent OT's refill rounds,
/// [`crate::ot::OtSender::ready`]), the leaf OTs run pool by pool and the whole words of
/// table written by the end of each pool go out before the next refill: `P1` unmasks them
/// while `P0` works on the next pool, and neither party holds the whole table (tens of MB
/// of fresh pages per pass, which cost more than the tables' computation on the benchmark
/// machine). Returns the part not sent yet and its length in bits, for the caller to send
/// ([`planes::send_words`]) — with IKNP, the whole table.
fn leaf_tables<const SINGLE: bool>(
    ot: &mut dyn crate::ot::OtSender,
    ch: &mut dyn Channel,
    input: &[u64],
    fanout: usize,
    plan: &ChunkTree,
    shares: &Pads,
) -> Result<(Vec<u64>, usize)> {
    let n = input.len() / fanout;
    let masks: Vec<[u128; 6]> = (0..=super::session::MAX_CHUNK_BITS).map(key_masks).collect();
    let table_bits = n * fanout * plan.widths.iter().map(|&w| 2usize << w).sum::<usize>();
    let total = plan.leaf_ot_bits(n);
    let mut ready = ot.ready(ch)?;
    let mut table = BitWriter::with_capacity(match ready {
        Some(pool) => table_bits.min(pool.saturating_mul(plan.table_bits_per_ot(fanout))),
        None => table_bits,
    });
    let stretch = Stretch::new(plan, fanout);
    // Without a fan-out (`SINGLE`: a ReLU's, a truncation's comparisons) the pad is one block,
    // folded in a register, and the loops over the fan-out are gone at compile time.
    let fanout = if SINGLE { 1 } else { fanout };
    let (mut pad0, mut pad, mut keys) = (0u128, stretch.buffer(), [stretch.buffer(), stretch.buffer()]);
    let mut cursor = LeafCursor::new(n);
    let (mut done, mut sent) = (0, 0);
    loop {
        let run = segment(ready, total - done)?;
        ot.send_random_chunks(ch, run, &mut |_, pairs| {
            for p in pairs {
                let (j, bit) = (cursor.chunk, cursor.bit);
                let w = plan.widths[j];
                let m = masks[w as usize][bit as usize];
                if SINGLE {
                    pad0 ^= (p[0] & m) | (p[1] & !m);
                } else {
                    stretch.key(j, p[0], &mut keys[0]);
                    let blocks = stretch.key(j, p[1], &mut keys[1]);
                    for ((d, k0), k1) in pad.iter_mut().zip(&keys[0]).zip(&keys[1]).take(blocks) {
                        *d ^= (k0 & m) | (k1 & !m);
                    }
                }
                let Some(element) = cursor.advance(w) else { continue };
                let half = 1u32 << w;
                let (all, entry) = (low_mask128(half), low_mask128(2 * half));
                let (offset, (gt, eq)) = (plan.offsets[j], &shares[j]);
                let first = element * fanout;
                for (f, &x) in input[first..first + fanout].iter().enumerate() {
                    let i = first + f;
                    let x = (x >> offset) & mask(w);
                    let gt_word = ((1u128 << x) - 1) ^ (all * planes::bit_at(gt, i) as u128);
                    let eq_word = (1u128 << x) ^ (all * planes::bit_at(eq, i) as u128);
                    let pos = f << (w + 1);
                    let pad_bits = if SINGLE { pad0 } else { pad[pos / 128] >> (pos % 128) };
                    table.push_wide(((gt_word | (eq_word << half)) ^ pad_bits) & entry, 2 * half);
                }
                if SINGLE {
                    pad0 = 0;
                } else {
                    pad.fill(0);
                }
            }
            Ok(())
        })?;
        done += run;
        if done == total {
            return Ok((table.finish(), table_bits - sent));
        }
        let words = table.words().len();
        planes::send_words(ch, table.words(), 64 * words)?;
        sent += 64 * words;
        table.clear_words();
        ready = ot.ready(ch)?;
    }
}

/// The leaf OTs of the next run: those the OT can give before its next message of its own
/// (`ready`, see [`crate::ot::OtSender::ready`]), or all that are `left`.
fn segment(ready: Option<usize>, left: usize) -> Result<usize> {
    match ready {
        None => Ok(left),
        Some(0) => Err(MpcError::invalid("millionaire", "the OT has no random OTs after a refill round")),
        Some(pool) => Ok(pool.min(left)),
    }
}

/// Walks the leaf OTs in the order both parties run them — chunk-major, then element, then
/// one random OT per bit of the chunk. The sender and the receiver drive the same cursor,
/// so their leaves line up. `chunk` and `bit` are the next OT's.
struct LeafCursor {
    elements: usize,
    chunk: usize,
    element: usize,
    bit: u32,
}

impl LeafCursor {
    fn new(elements: usize) -> Self {
        Self { elements, chunk: 0, element: 0, bit: 0 }
    }

    /// Moves past one OT of the current chunk (of `width` bits); returns the element whose
    /// leaf it completes, if it does.
    #[inline(always)]
    fn advance(&mut self, width: u32) -> Option<usize> {
        self.bit += 1;
        if self.bit < width {
            return None;
        }
        let element = self.element;
        self.bit = 0;
        self.element += 1;
        if self.element == self.elements {
            self.element = 0;
            self.chunk += 1;
        }
        Some(element)
    }
}

/// A pair of planes per chunk: `(gt, eq)` — `P0`'s leaf shares, or `P1`'s pads.
type Pads = Vec<(Vec<u64>, Vec<u64>)>;

/// `P1`: runs the leaf OTs as receiver with the bits of `y` as choices; its pads for the
/// `fanout` tables of each leaf, in the comparisons' order, and with a silent OT the tables
/// `P0` sent between pools already unmasked (see [`leaf_tables`]). The rest of the tables
/// goes to [`Leaves::unmask`].
fn leaf_pads<'a, const SINGLE: bool>(
    ot: &mut dyn crate::ot::OtReceiver,
    ch: &mut dyn Channel,
    input: &'a [u64],
    fanout: usize,
    plan: &'a ChunkTree,
) -> Result<Leaves<'a>> {
    let n = input.len();
    let total = plan.leaf_ot_bits(n);
    let mut choices = BitWriter::with_capacity(total);
    for (&w, &off) in plan.widths.iter().zip(&plan.offsets) {
        for &y in input {
            choices.push((y >> off) & mask(w), w);
        }
    }
    let choices = planes::to_bitvec(choices.finish(), total)?;
    let mut leaves = Leaves::new(input, fanout, plan);
    let stretch = Stretch::new(plan, fanout);
    // As the sender's: without a fan-out, one block in a register.
    let fanout = if SINGLE { 1 } else { fanout };
    let (mut pad0, mut pad, mut key) = (0u128, stretch.buffer(), stretch.buffer());
    let mut cursor = LeafCursor::new(n);
    let mut ready = ot.ready(ch)?;
    let mut done = 0;
    loop {
        let run = segment(ready, total - done)?;
        let part;
        let run_choices = if run == total {
            &choices
        } else {
            part = choices.slice(done, run).ok_or_else(|| MpcError::invalid("millionaire", "leaf OTs out of range"))?;
            &part
        };
        let (gt, eq, written) = (&mut leaves.gt, &mut leaves.eq, &mut leaves.written);
        ot.receive_random_chunks(ch, run_choices, &mut |_, keys| {
            for &k in keys {
                let j = cursor.chunk;
                let w = plan.widths[j];
                if SINGLE {
                    pad0 ^= k;
                } else {
                    let blocks = stretch.key(j, k, &mut key);
                    for (d, k) in pad.iter_mut().zip(&key).take(blocks) {
                        *d ^= k;
                    }
                }
                let Some(element) = cursor.advance(w) else { continue };
                let c = ((input[element] >> plan.offsets[j]) & mask(w)) as usize;
                let (g, e) = (&mut gt[j], &mut eq[j]);
                for f in 0..fanout {
                    let pos = (f << (w + 1)) + c;
                    let bit = |pos: usize| if SINGLE { (pad0 >> pos) as u64 & 1 } else { pad_bit(&pad, pos) };
                    let k = element * fanout + f;
                    g[k / 64] |= bit(pos) << (k % 64);
                    e[k / 64] |= bit(pos + (1 << w)) << (k % 64);
                }
                *written += fanout << (w + 1);
                if SINGLE {
                    pad0 = 0;
                } else {
                    pad.fill(0);
                }
            }
            Ok(())
        })?;
        done += run;
        if done == total {
            return Ok(leaves);
        }
        // The whole words P0 has written by now (see `leaf_tables`).
        let words = leaves.written / 64 - leaves.received_words();
        leaves.unmask(planes::recv_words(ch, 64 * words)?);
        ready = ot.ready(ch)?;
    }
}

/// `P1`'s leaf shares as they form: its pads, with the table entry it chose (the same entry
/// of each of a leaf's `fanout` tables) XORed in as the tables arrive, in pieces of whole
/// words.
struct Leaves<'a> {
    input: &'a [u64],
    fanout: usize,
    plan: &'a ChunkTree,
    /// Per chunk, the `gt` and `eq` planes.
    gt: Vec<Vec<u64>>,
    eq: Vec<Vec<u64>>,
    /// Table bits of the leaves whose pads are in: what `P0` has written by then.
    written: usize,
    /// Received table words not used up yet; the first is word `first` of the tables.
    window: Vec<u64>,
    first: usize,
    /// The next leaf to unmask (chunk, element) and the table bit its entries start at.
    chunk: usize,
    element: usize,
    at: usize,
}

impl<'a> Leaves<'a> {
    fn new(input: &'a [u64], fanout: usize, plan: &'a ChunkTree) -> Self {
        let planes = || plan.widths.iter().map(|_| vec![0u64; planes::words_for(input.len() * fanout)]).collect();
        Self {
            input,
            fanout,
            plan,
            gt: planes(),
            eq: planes(),
            written: 0,
            window: Vec::new(),
            first: 0,
            chunk: 0,
            element: 0,
            at: 0,
        }
    }

    fn received_words(&self) -> usize {
        self.first + self.window.len()
    }

    /// Table bits written (or to be written) by `P0` and not received yet.
    fn unreceived_bits(&self) -> usize {
        self.written.saturating_sub(64 * self.received_words())
    }

    /// Takes the next words of the tables and unmasks every leaf whose entries they complete.
    fn unmask(&mut self, words: Vec<u64>) {
        if self.window.is_empty() {
            self.window = words;
        } else {
            self.window.extend_from_slice(&words);
        }
        let end = 64 * self.received_words();
        let (n, fanout) = (self.input.len(), self.fanout);
        while self.chunk < self.plan.widths.len() {
            let w = self.plan.widths[self.chunk];
            let span = fanout << (w + 1);
            if self.at + span > end {
                break;
            }
            let c = ((self.input[self.element] >> self.plan.offsets[self.chunk]) & mask(w)) as usize;
            let start = self.at - 64 * self.first + c;
            let (g, e) = (&mut self.gt[self.chunk], &mut self.eq[self.chunk]);
            for f in 0..fanout {
                let (k, pos) = (self.element * fanout + f, start + (f << (w + 1)));
                g[k / 64] ^= planes::bit_at(&self.window, pos) << (k % 64);
                e[k / 64] ^= planes::bit_at(&self.window, pos + (1 << w)) << (k % 64);
            }
            self.at += span;
            self.element += 1;
            if self.element == n {
                self.element = 0;
                self.chunk += 1;
            }
        }
        let used = self.at / 64 - self.first;
        self.window.drain(..used);
        self.first += used;
    }

    /// The leaf shares, `(gt, eq)` per chunk, once every leaf is unmasked.
    fn finish(self) -> Result<Pads> {
        if self.chunk < self.plan.widths.len() {
            return Err(MpcError::invalid("millionaire", "the leaf tables ended before the leaves"));
        }
        Ok(self.gt.into_iter().zip(self.eq).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_the_bits_and_need_eq_only_where_used() {
        let p = ChunkTree::new(36, 0, 4);
        assert_eq!(p.widths, vec![4; 9]);
        assert_eq!(p.ops.len(), 8);
        assert_eq!(p.levels, 4);
        // The root's eq is never needed; the most significant leaf's is.
        assert!(!p.ops.last().is_some_and(|o| o.need_eq));
        let p = ChunkTree::new(37, 12, 4);
        assert_eq!(p.widths, vec![4, 4, 4, 4, 4, 4, 4, 3, 3, 3]);
        assert_eq!(p.offsets[3], 12);
        assert_eq!(p.ops.len(), 9);
        let p = ChunkTree::new(37, 12, 6);
        assert_eq!(p.widths, vec![6, 6, 5, 5, 5, 5, 5]);
        assert_eq!(p.offsets.last(), Some(&32));
        // Low subtree (3 leaves) depth 2, high (7 leaves) depth 3, then the join.
        assert_eq!(p.levels, 4);
        assert!(p.low_root.is_some() && p.root != p.low_root);
        let p = ChunkTree::new(5, 5, 4);
        assert_eq!((p.widths.clone(), p.root, p.low_root), (vec![3, 2], Some(2), Some(2)));
        let p = ChunkTree::new(1, 0, 6);
        assert_eq!((p.ops.len(), p.levels, p.root), (0, 0, Some(0)));
    }

    /// With a silent OT whose pools are much smaller than a pass's leaf OTs (a small,
    /// **insecure** Ferret set), the tables go out pool by pool and the comparisons stay
    /// exact — single ones with a split, and with a fan-out — over TCP.
    #[test]
    fn tables_streamed_between_pools_give_exact_comparisons() -> Result<()> {
        use crate::ot::ferret::{FerretParams, LpnParams};
        use crate::testing::{Net, run_pair};
        use moat_nn::FixedPoint;
        use rand::{Rng, SeedableRng};
        use rand_chacha::ChaCha20Rng;

        const SMALL: FerretParams = FerretParams {
            pre: LpnParams { n: 8192, k: 2000, t: 32, log_bin: 8 },
            main: LpnParams { n: 16_384, k: 4000, t: 64, log_bin: 8 },
        };
        let (n, fanout, bits, low) = (2_001usize, 3usize, 37u32, 12u32);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut x: Vec<u64> = (0..n * fanout).map(|_| rng.random::<u64>() >> (64 - bits)).collect();
        let y: Vec<u64> = (0..n).map(|_| rng.random::<u64>() >> (64 - bits)).collect();
        // Ties, in the low part and in the whole value.
        x[0] = y[0];
        x[fanout] = y[1] ^ 1 << 20;
        x[2 * fanout] = y[2] ^ 0xfff;
        let run = |party: Party, seed: u64, input: Vec<u64>| {
            move |ch: &mut dyn Channel| -> Result<_> {
                let rng = ChaCha20Rng::seed_from_u64(seed);
                let mut s = Session::setup_silent_with_params(ch, party, FixedPoint::default(), rng, SMALL)?;
                let single = compare_planes(&mut s, ch, &input[..n], bits, low)?;
                let fanned = compare_planes_fanout(&mut s, ch, &input, fanout, bits, low)?;
                Ok((single, fanned))
            }
        };
        let ((s0, f0), (s1, f1)) = run_pair(Net::Tcp, run(Party::P0, 1, x.clone()), run(Party::P1, 2, y.clone()))?;
        let bit = |a: &[u64], b: &[u64], i: usize| planes::bit_at(a, i) ^ planes::bit_at(b, i);
        let lm = (1u64 << low) - 1;
        for i in 0..n {
            assert_eq!(bit(&s0.0, &s1.0, i), u64::from(x[i] > y[i]), "single {i}");
            assert_eq!(bit(&s0.1, &s1.1, i), u64::from(x[i] & lm > y[i] & lm), "single low {i}");
            for f in 0..fanout {
                let k = i * fanout + f;
                assert_eq!(bit(&f0.0, &f1.0, k), u64::from(x[k] > y[i]), "fan-out {k}");
                assert_eq!(bit(&f0.1, &f1.1, k), u64::from(x[k] & lm > y[i] & lm), "fan-out low {k}");
            }
        }
        Ok(())
    }

    #[test]
    fn key_masks_select_bit_t_clear() {
        let m = key_masks(2);
        // positions 0..8, index p mod 4; bit 0 clear at 0, 2, 4, 6 (and so on, every 8).
        assert_eq!(m[0] & 0xff, 0b0101_0101);
        assert_eq!(m[1] & 0xff, 0b0011_0011);
        assert_eq!(m[0], u128::MAX / 3);
    }
}
