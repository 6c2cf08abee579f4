//! Millionaires' comparison (CrypTFlow2, Rathee et al. CCS 2020, §4.1), batched.
//!
//! **Computes** XOR shares of `1{x > y}` for `P0`'s private `x` and `P1`'s private `y`,
//! both `m`-bit unsigned integers (*convention: strict "greater than", `P0`'s input on the
//! left*). [`greater_than_split`] also returns shares of `1{x mod 2^s > y mod 2^s}` for a
//! split point `s` at no extra cost (the truncation protocol needs both). With a *fan-out*
//! (`compare_planes_fanout`), `P0` compares several inputs against each of `P1`'s and the
//! comparisons of one `y` share their leaf OTs (one secret against many public thresholds).
//!
//! **Learns:** each party only its uniformly random output share; the table holder (OT
//! sender) learns nothing about the chooser's value (it only sees OT messages), the chooser
//! sees one entry per table, masked by the holder's random shares. `P0` holds every table,
//! except in the balanced layer (silent OT, no fan-out; below), where each party holds half.
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
//! [`super::Config::max_batch`] elements per pass.
//!
//! **With a silent OT** (Ferret: a random OT costs one derandomisation bit, and the triples'
//! random-choice OTs nothing, [`crate::ot::OtSender::random_choice_is_silent`]) the leaf OTs
//! run pool by pool ([`crate::ot::OtSender::ready`]) and the tables go out between pools, so
//! that no party holds a whole table (tens of MB of fresh pages per pass). Without a fan-out
//! the layer is *balanced* (`balanced_leaves`): the holder's share of a leaf OT (two
//! hashes and the table) costs about twice the chooser's (one hash and the pads), so `P0`
//! holds the tables of the first half of the elements and `P1` those of the second, as
//! `(1{v > y_j} ⊕ gt₁, 1{v = y_j} ⊕ eq₁)` with `P0` choosing `v = x_j` — the same leaves and
//! bytes, half of the tables in each direction. Per pool, each way: the derandomisation bits,
//! then the table words (both exchanges): two flights per pool boundary of either direction
//! besides the refill rounds (a ReLU of 2^20 elements on B12: 17 flights from `P0` and 15
//! from `P1`, against 12 and 13 with `P0` holding every table).
//! The ReLU benchmark measured the balanced layer 1.17 → 1.04–1.10 µs per ReLU and the
//! streamed tables 1.35 → 1.13 µs (`moat bench relu --ot ferret`, BENCHMARKS.md).

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
    // The leaf tables and the triples are independent. With a silent OT the triples' random
    // OTs exchange no message (only the refill rounds): without a fan-out the leaf layer is
    // balanced (each party holds half of the tables); with one, P0 sends the rest of its
    // table before it works on the triples and P1 unmasks meanwhile (6–8 % faster ReLUs when
    // P0 held every table). With IKNP, P0's sender half reads the matrix of P1's receiver
    // half, so that half goes first and the table follows P0's sender half.
    let silent = sender.random_choice_is_silent() && receiver.random_choice_is_silent();

    // Leaf shares of every chunk, as planes.
    let (mut gt, mut eq): (NodePlanes, NodePlanes) = (vec![None; plan.nodes], vec![None; plan.nodes]);
    let mut set_leaves = |leaves: Pads| {
        for (j, (g, e)) in leaves.into_iter().enumerate() {
            gt[j] = Some(g);
            eq[j] = Some(e);
        }
    };
    let (send_half, recv_half) = match party {
        // With a silent OT and no fan-out, each party holds half of the tables.
        _ if silent && fanout == 1 => {
            set_leaves(balanced_leaves(party, sender, receiver, ch, input, &plan, rng)?);
            let send_half = triples::sender_half(sender, ch, triple_count)?;
            (send_half, triples::receiver_half(receiver, ch, triple_count, rng)?)
        }
        Party::P0 => {
            let shares: Pads = (0..chunks)
                .map(|_| (BitVec::random(total, rng).words().to_vec(), BitVec::random(total, rng).words().to_vec()))
                .collect();
            let ready = sender.ready(ch)?;
            let mut tables = Tables::new(input, fanout, &plan, &shares, true, ready);
            if fanout == 1 {
                leaf_tables::<true>(sender, ch, &mut tables, ready)?;
            } else {
                leaf_tables::<false>(sender, ch, &mut tables, ready)?;
            }
            let (table, table_bits) = tables.rest();
            set_leaves(shares);
            if silent {
                planes::send_words(ch, &table, table_bits)?;
            }
            let send_half = triples::sender_half(sender, ch, triple_count)?;
            if !silent {
                planes::send_words(ch, &table, table_bits)?;
            }
            drop(table);
            let recv_half = triples::receiver_half(receiver, ch, triple_count, rng)?;
            (send_half, recv_half)
        }
        Party::P1 => {
            let mut leaves = Leaves::new(input, fanout, &plan);
            if fanout == 1 {
                leaf_pads::<true>(receiver, ch, &mut leaves)?;
            } else {
                leaf_pads::<false>(receiver, ch, &mut leaves)?;
            }
            // With IKNP, P1's receiver half goes before the table (P0's sender half reads its
            // matrix). With a silent OT, P1's sender half goes first: its refill rounds are
            // what P0's receiver half waits for, and P1 works on it while P0 finishes the table.
            let (early_send, early_recv) = if silent {
                (Some(triples::sender_half(sender, ch, triple_count)?), None)
            } else {
                (None, Some(triples::receiver_half(receiver, ch, triple_count, rng)?))
            };
            leaves.unmask(planes::recv_words(ch, leaves.next_piece_bits(true))?);
            set_leaves(leaves.finish()?);
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

/// The leaf tables a party holds and masks with its random shares — `P0`'s, or in the
/// balanced layer ([`balanced_leaves`]) each party's for its half of the elements — built as
/// the leaf OTs, with this party as sender, hand over their pairs.
struct Tables<'a> {
    input: &'a [u64],
    fanout: usize,
    plan: &'a ChunkTree,
    /// The holder's leaf shares `(gt, eq)` per chunk: what the tables mask.
    shares: &'a Pads,
    /// `P0` holds its value on the left of `>` (`1{x > v}`), `P1` on the right (`1{v > y}`).
    left: bool,
    masks: Vec<[u128; 6]>,
    stretch: Stretch,
    pad0: u128,
    pad: Vec<Block>,
    keys: [Vec<Block>; 2],
    cursor: LeafCursor,
    table: BitWriter,
    /// Table bits of all the leaves, and those sent so far.
    bits: usize,
    sent: usize,
}

impl<'a> Tables<'a> {
    /// `input` holds `fanout` values per leaf OT; room for the tables of `ots` leaf OTs
    /// (all of them if `None`).
    fn new(
        input: &'a [u64],
        fanout: usize,
        plan: &'a ChunkTree,
        shares: &'a Pads,
        left: bool,
        ots: Option<usize>,
    ) -> Self {
        let n = input.len() / fanout;
        let bits = n * fanout * plan.widths.iter().map(|&w| 2usize << w).sum::<usize>();
        let stretch = Stretch::new(plan, fanout);
        Self {
            input,
            fanout,
            plan,
            shares,
            left,
            masks: (0..=super::session::MAX_CHUNK_BITS).map(key_masks).collect(),
            pad0: 0,
            pad: stretch.buffer(),
            keys: [stretch.buffer(), stretch.buffer()],
            stretch,
            cursor: LeafCursor::new(n),
            table: BitWriter::with_capacity(
                ots.map_or(bits, |ots| bits.min(ots.saturating_mul(plan.table_bits_per_ot(fanout)))),
            ),
            bits,
            sent: 0,
        }
    }

    /// Takes the next random-OT pairs of the leaf layer (in [`LeafCursor`] order) and writes
    /// the tables of every leaf they complete. Without a fan-out (`SINGLE`: a ReLU's, a
    /// truncation's comparisons) the pad is one block folded in a register, and the loops over
    /// the fan-out are gone at compile time.
    ///
    /// With `flips = Some((d, first))`, pair `i` is swapped where bit `first + i` of `d` is set:
    /// the chooser's derandomisation of random-choice OTs (`d = r ⊕ c`).
    #[inline]
    fn absorb<const SINGLE: bool>(&mut self, pairs: &[[Block; 2]], flips: Option<(&[u64], usize)>) {
        let (plan, fanout) = (self.plan, if SINGLE { 1 } else { self.fanout });
        for (i, p) in pairs.iter().enumerate() {
            let (j, bit) = (self.cursor.chunk, self.cursor.bit);
            let w = plan.widths[j];
            let flip = flips.is_some_and(|(d, first)| planes::bit_at(d, first + i) == 1);
            let p = if flip { [p[1], p[0]] } else { *p };
            let m = self.masks[w as usize][bit as usize];
            if SINGLE {
                self.pad0 ^= (p[0] & m) | (p[1] & !m);
            } else {
                self.stretch.key(j, p[0], &mut self.keys[0]);
                let blocks = self.stretch.key(j, p[1], &mut self.keys[1]);
                for ((d, k0), k1) in self.pad.iter_mut().zip(&self.keys[0]).zip(&self.keys[1]).take(blocks) {
                    *d ^= (k0 & m) | (k1 & !m);
                }
            }
            let Some(element) = self.cursor.advance(w) else { continue };
            let half = 1u32 << w;
            let (all, entry) = (low_mask128(half), low_mask128(2 * half));
            let (offset, (gt, eq)) = (plan.offsets[j], &self.shares[j]);
            let first = element * fanout;
            for (f, &x) in self.input[first..first + fanout].iter().enumerate() {
                let i = first + f;
                let eq_word = 1u128 << ((x >> offset) & mask(w));
                let gt_word = if self.left { eq_word - 1 } else { all & !((eq_word << 1) - 1) };
                let gt_word = gt_word ^ (all * planes::bit_at(gt, i) as u128);
                let eq_word = eq_word ^ (all * planes::bit_at(eq, i) as u128);
                let pos = f << (w + 1);
                let pad_bits = if SINGLE { self.pad0 } else { self.pad[pos / 128] >> (pos % 128) };
                self.table.push_wide(((gt_word | (eq_word << half)) ^ pad_bits) & entry, 2 * half);
            }
            if SINGLE {
                self.pad0 = 0;
            } else {
                self.pad.fill(0);
            }
        }
    }

    /// Room for the tables of `ots` more leaf OTs (kept from pool to pool).
    fn reserve(&mut self, ots: usize) {
        self.table.reserve(ots.saturating_mul(self.plan.table_bits_per_ot(self.fanout)));
    }

    /// The whole table words written and not sent yet.
    fn whole_words(&self) -> &[u64] {
        self.table.words()
    }

    /// Marks [`Self::whole_words`] sent.
    fn sent_whole_words(&mut self) {
        self.sent += 64 * self.table.words().len();
        self.table.clear_words();
    }

    /// Everything not sent yet (the partial word included, padding zero) and its length in
    /// bits, once every leaf OT is in.
    fn rest(&mut self) -> (Vec<u64>, usize) {
        (std::mem::take(&mut self.table).finish(), self.bits - self.sent)
    }
}

/// A party's leaf shares for the tables the other holds (`P1`'s, or in the balanced layer each
/// party's for the other's half): its pads from the leaf OTs, with this party as receiver and
/// the bits of its value as choices, then the table entry it chose (the same entry of each of
/// a leaf's `fanout` tables) XORed in as the tables arrive in pieces of whole words.
struct Leaves<'a> {
    input: &'a [u64],
    fanout: usize,
    plan: &'a ChunkTree,
    /// Per chunk, the `gt` and `eq` planes.
    gt: Vec<Vec<u64>>,
    eq: Vec<Vec<u64>>,
    stretch: Stretch,
    pad0: u128,
    pad: Vec<Block>,
    key: Vec<Block>,
    cursor: LeafCursor,
    /// Table bits of the leaves whose pads are in: what the holder has written by then.
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
        let stretch = Stretch::new(plan, fanout);
        Self {
            input,
            fanout,
            plan,
            gt: planes(),
            eq: planes(),
            pad0: 0,
            pad: stretch.buffer(),
            key: stretch.buffer(),
            stretch,
            cursor: LeafCursor::new(input.len()),
            written: 0,
            window: Vec::new(),
            first: 0,
            // No elements, no leaves to unmask.
            chunk: if input.is_empty() { plan.widths.len() } else { 0 },
            element: 0,
            at: 0,
        }
    }

    /// The choice bits of the leaf OTs, in [`LeafCursor`] order: the bits of each chunk of
    /// this party's values.
    fn choices(&self) -> Result<BitVec> {
        let total = self.plan.leaf_ot_bits(self.input.len());
        let mut choices = BitWriter::with_capacity(total);
        for (&w, &off) in self.plan.widths.iter().zip(&self.plan.offsets) {
            for &y in self.input {
                choices.push((y >> off) & mask(w), w);
            }
        }
        planes::to_bitvec(choices.finish(), total)
    }

    /// Takes the next random-OT outputs of the leaf layer and writes the pads of every leaf
    /// they complete (`SINGLE` as in [`Tables::absorb`]).
    #[inline]
    fn absorb<const SINGLE: bool>(&mut self, keys: &[Block]) {
        let (plan, fanout) = (self.plan, if SINGLE { 1 } else { self.fanout });
        for &k in keys {
            let j = self.cursor.chunk;
            let w = plan.widths[j];
            if SINGLE {
                self.pad0 ^= k;
            } else {
                let blocks = self.stretch.key(j, k, &mut self.key);
                for (d, k) in self.pad.iter_mut().zip(&self.key).take(blocks) {
                    *d ^= k;
                }
            }
            let Some(element) = self.cursor.advance(w) else { continue };
            let c = ((self.input[element] >> plan.offsets[j]) & mask(w)) as usize;
            let (g, e) = (&mut self.gt[j], &mut self.eq[j]);
            for f in 0..fanout {
                let pos = (f << (w + 1)) + c;
                let (pad0, pad) = (self.pad0, &self.pad);
                let bit = |pos: usize| if SINGLE { (pad0 >> pos) as u64 & 1 } else { pad_bit(pad, pos) };
                let k = element * fanout + f;
                g[k / 64] |= bit(pos) << (k % 64);
                e[k / 64] |= bit(pos + (1 << w)) << (k % 64);
            }
            self.written += fanout << (w + 1);
            if SINGLE {
                self.pad0 = 0;
            } else {
                self.pad.fill(0);
            }
        }
    }

    fn received_words(&self) -> usize {
        self.first + self.window.len()
    }

    /// The table bits of the next piece: the whole words the holder has written and not sent
    /// (`last`: everything left).
    fn next_piece_bits(&self, last: bool) -> usize {
        let written = if last { self.written } else { self.written / 64 * 64 };
        written.saturating_sub(64 * self.received_words())
    }

    /// Takes the next words of the tables and unmasks every leaf whose entries they complete.
    fn unmask(&mut self, words: Vec<u64>) {
        if self.window.is_empty() {
            self.window = words;
            self.unmask_window();
        } else {
            self.unmask_from(&words);
        }
    }

    /// [`Self::unmask`] from borrowed words (copied into the window, whose buffer is kept).
    fn unmask_from(&mut self, words: &[u64]) {
        self.window.extend_from_slice(words);
        self.unmask_window();
    }

    /// Unmasks every leaf whose entries the window completes, then drops the words used up.
    fn unmask_window(&mut self) {
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

/// `P0`: runs the leaf OTs as sender into `tables`. With an OT whose sender has messages of
/// its own (a silent OT's refill rounds, [`crate::ot::OtSender::ready`]), they run pool by
/// pool and the whole words of table written by the end of each pool go out before the next
/// refill: `P1` unmasks them while `P0` works on the next pool, and neither party holds the
/// whole table (tens of MB of fresh pages per pass, which cost more than the tables'
/// computation on the benchmark machine). The rest ([`Tables::rest`]; with IKNP, the whole
/// table) is the caller's to send.
fn leaf_tables<const SINGLE: bool>(
    ot: &mut dyn crate::ot::OtSender,
    ch: &mut dyn Channel,
    tables: &mut Tables<'_>,
    mut ready: Option<usize>,
) -> Result<()> {
    let total = tables.plan.leaf_ot_bits(tables.input.len() / tables.fanout);
    let mut done = 0;
    loop {
        let run = segment(ready, total - done)?;
        ot.send_random_chunks(ch, run, &mut |_, pairs| {
            tables.absorb::<SINGLE>(pairs, None);
            Ok(())
        })?;
        done += run;
        if done == total {
            return Ok(());
        }
        planes::send_words(ch, tables.whole_words(), 64 * tables.whole_words().len())?;
        tables.sent_whole_words();
        ready = ot.ready(ch)?;
    }
}

/// `P1`: the receiver's side of [`leaf_tables`] into `leaves`, unmasking the pieces sent
/// between pools; the rest goes to [`Leaves::unmask`].
fn leaf_pads<const SINGLE: bool>(
    ot: &mut dyn crate::ot::OtReceiver,
    ch: &mut dyn Channel,
    leaves: &mut Leaves<'_>,
) -> Result<()> {
    let choices = leaves.choices()?;
    let total = choices.len();
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
        ot.receive_random_chunks(ch, run_choices, &mut |_, keys| {
            leaves.absorb::<SINGLE>(keys);
            Ok(())
        })?;
        done += run;
        if done == total {
            return Ok(());
        }
        leaves.unmask(planes::recv_words(ch, leaves.next_piece_bits(false))?);
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

/// Random-choice OTs per call in the balanced layer (bounds the memory of their outputs).
const STEP: usize = crate::ot::ferret::CHUNK_OTS;
// Each call's derandomisation bits are whole words (but a run's last call's).
const _: () = assert!(STEP.is_multiple_of(64));

/// Both parties, with a silent OT and no fan-out: the leaf layer with the work split evenly.
///
/// The sender's share of a leaf OT (two hashes and the table) costs about twice the
/// receiver's (one hash and the pads), so with `P0` holding every table `P1` idles a third of
/// the layer. Here `P0` holds the tables of the first half of the elements (`1{x_j > v}`,
/// `P1` choosing `v = y_j`) and `P1` those of the second half (`1{v > y_j}`, `P0` choosing
/// `v = x_j`): the same leaves, the same bytes, the same security (each table is one party's
/// shares under pads only the other's choices open; each party learns one masked entry per
/// table it does not hold).
///
/// Pool by pool (a run ends where either direction's pool does, so no refill falls inside):
/// both parties take their random-choice OTs as chooser (silent: the COTs' own choices `r`),
/// exchange the derandomisations `d = r ⊕ c` in one message each way, then take their
/// random-choice OTs as holder, swapping the pairs where the peer's `d` is set, and exchange
/// the whole words of table written so far; then the refill rounds, each party's sender first.
/// Two flights each way per pool (the bits and the tables), both of them exchanges, so the
/// layer's latency is a few round trips per pool, not one per chunk. Returns this party's
/// `(gt, eq)` planes per chunk over all `n` elements.
fn balanced_leaves(
    party: Party,
    sender: &mut dyn crate::ot::OtSender,
    receiver: &mut dyn crate::ot::OtReceiver,
    ch: &mut dyn Channel,
    input: &[u64],
    plan: &ChunkTree,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Pads> {
    let n = input.len();
    // P0 holds [0, half), P1 [half, n); whole words keep the planes' halves apart.
    let half = n / 2 / 64 * 64;
    let (held, chosen) = match party {
        Party::P0 => (0..half, half..n),
        Party::P1 => (half..n, 0..half),
    };
    let shares: Pads = plan
        .widths
        .iter()
        .map(|_| (BitVec::random(held.len(), rng).words().to_vec(), BitVec::random(held.len(), rng).words().to_vec()))
        .collect();
    let mut tables = Tables::new(&input[held.clone()], 1, plan, &shares, party == Party::P0, Some(STEP));
    let mut leaves = Leaves::new(&input[chosen], 1, plan);
    let choices = leaves.choices()?;
    let (send_total, recv_total) = (plan.leaf_ot_bits(held.len()), choices.len());
    let (mut sent, mut received) = (0, 0);
    // Buffers kept across pools (fresh pages per pool would cost more than their contents).
    let (mut flips, mut flip_link, mut piece_link) =
        (Vec::new(), planes::WordExchange::default(), planes::WordExchange::default());
    loop {
        // Refill rounds where a pool is dry, each party's sender first: its round's message
        // goes out before either party waits for the other's, and a silent OT runs the LPN
        // encodings of the two rounds in one pass (`ready`).
        let send_ready = if sent < send_total { sender.ready(ch)? } else { None };
        let recv_ready = if received < recv_total { receiver.ready(ch)? } else { None };
        // One run length for both directions (those not done), so that the peer agrees.
        let run = [(send_ready, send_total - sent), (recv_ready, recv_total - received)]
            .into_iter()
            .filter(|&(_, left)| left > 0)
            .map(|(ready, left)| segment(ready, left))
            .try_fold(usize::MAX, |m, r| r.map(|r| m.min(r)))?;
        let (send_run, recv_run) = ((send_total - sent).min(run), (recv_total - received).min(run));
        // Choosing: the pads, and the derandomisation bits.
        flips.clear();
        for start in (0..recv_run).step_by(STEP) {
            let len = STEP.min(recv_run - start);
            let (random, keys) = receiver.receive_random_choice(ch, len, rng)?;
            let wanted = planes::extract(choices.words(), received + start, len);
            flips.extend(random.words().iter().zip(&wanted).map(|(r, c)| r ^ c));
            leaves.absorb::<true>(&keys);
        }
        let theirs = flip_link.exchange(ch, &flips, recv_run, send_run)?;
        // Holding: the peer's choices are its random ones flipped by its bits.
        tables.reserve(send_run);
        sender.send_random_choice_chunks(ch, send_run, &mut |first, pairs| {
            tables.absorb::<true>(pairs, Some((theirs, first)));
            Ok(())
        })?;
        sent += send_run;
        received += recv_run;
        let last = sent == send_total && received == recv_total;
        let want = leaves.next_piece_bits(last);
        if last {
            let (rest, rest_bits) = tables.rest();
            leaves.unmask_from(piece_link.exchange(ch, &rest, rest_bits, want)?);
            break;
        }
        let whole = tables.whole_words();
        leaves.unmask_from(piece_link.exchange(ch, whole, 64 * whole.len(), want)?);
        tables.sent_whole_words();
    }
    let theirs = leaves.finish()?;
    // This party's planes over all n elements: the first half's, then the second's.
    Ok(shares
        .into_iter()
        .zip(theirs)
        .map(|((hg, he), (cg, ce))| match party {
            Party::P0 => ([hg, cg].concat(), [he, ce].concat()),
            Party::P1 => ([cg, hg].concat(), [ce, he].concat()),
        })
        .collect())
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

/// A pair of planes per chunk: `(gt, eq)` — a holder's leaf shares, or the chooser's.
type Pads = Vec<(Vec<u64>, Vec<u64>)>;

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
    /// exact over TCP: single ones (the balanced layer, each party holding the tables of half
    /// the elements — none for `P0` below 128), with a split, and with a fan-out (`P0` holding
    /// every table).
    #[test]
    fn tables_streamed_between_pools_give_exact_comparisons() -> Result<()> {
        use moat_nn::FixedPoint;
        use rand::{Rng, SeedableRng};
        use rand_chacha::ChaCha20Rng;

        use crate::ot::ferret::{FerretParams, LpnParams};
        use crate::testing::{Net, run_pair};

        const SMALL: FerretParams = FerretParams {
            pre: LpnParams { n: 8192, k: 2000, t: 32, log_bin: 8 },
            main: LpnParams { n: 16_384, k: 4000, t: 64, log_bin: 8 },
        };
        let (fanout, bits, low) = (3usize, 37u32, 12u32);
        for n in [1usize, 127, 2_001] {
            let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
            let mut x: Vec<u64> = (0..n * fanout).map(|_| rng.random::<u64>() >> (64 - bits)).collect();
            let y: Vec<u64> = (0..n).map(|_| rng.random::<u64>() >> (64 - bits)).collect();
            // Ties in the whole value, in the low part, in the high part.
            for (i, tie) in [0, 1 << 20, 0xfff].into_iter().enumerate().take(n) {
                x[i] = y[i] ^ tie;
                x[i * fanout] = y[i] ^ tie;
            }
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
                assert_eq!(bit(&s0.0, &s1.0, i), u64::from(x[i] > y[i]), "n {n}: single {i}");
                assert_eq!(bit(&s0.1, &s1.1, i), u64::from(x[i] & lm > y[i] & lm), "n {n}: single low {i}");
                for f in 0..fanout {
                    let k = i * fanout + f;
                    assert_eq!(bit(&f0.0, &f1.0, k), u64::from(x[k] > y[i]), "n {n}: fan-out {k}");
                    assert_eq!(bit(&f0.1, &f1.1, k), u64::from(x[k] & lm > y[i] & lm), "n {n}: fan-out low {k}");
                }
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
