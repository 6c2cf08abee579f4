//! Ferret silent OT (Yang, Weng, Lan, Zhang, Wang, CCS 2020): correlated OT from regular
//! primal LPN, semi-honest, bootstrapped by any [`OtSender`]/[`OtReceiver`] (moat uses IKNP).
//!
//! **What is computed.** A *correlated OT* (COT) with a global key: the sender holds a secret
//! `Δ ∈ {0,1}^128` (lowest bit 1) and for each COT a block `Kᵢ` (lowest bit 0); the receiver
//! holds a random bit `xᵢ` and `Mᵢ = Kᵢ ⊕ xᵢ·Δ` — its lowest bit *is* `xᵢ`. The sender learns
//! nothing about the `xᵢ`; the receiver nothing about `Δ` (beyond the LPN assumption).
//!
//! **One extension round** with parameters `(n, k, t, h)`, `n = t·2^h`, consumes `k + t·h`
//! COTs and produces `n`:
//!
//! 1. *Multi-point COT over regular noise*: one secret position `αⱼ` in each of the `t` bins
//!    of `2^h`, spelled by the receiver's choice bits of the round's `t·h` tree COTs (bit
//!    `i` of `αⱼ`, from the top, is the complement of the choice bit of tree `j`'s COT `i`):
//!    random and hidden from the sender by the COTs themselves, so the receiver sends
//!    nothing. Per bin the sender expands a fresh Half-Tree ([`ggm`]) over `Δ`, with leaves
//!    `vⱼ` and left sums `K₀ⁱ` (`K₁ⁱ = K₀ⁱ ⊕ Δ`), and sends `cᵢ = K₀ⁱ ⊕ Kᵢ` per level
//!    ([`TreeMsg`], `t·h` blocks). The receiver's `Mᵢ ⊕ cᵢ = K₀ⁱ ⊕ xᵢ·Δ` is the sum off its path;
//!    it rebuilds `wⱼ` with `wⱼ ⊕ vⱼ = Δ·e_{αⱼ}` (the leaves XOR to `Δ`).
//! 2. *LPN encoding* with a public local code `A` of 10 ones per row ([`lpn`]): sender
//!    `K' = A·K_base ⊕ v`, receiver `M' = A·M_base ⊕ w`, so `M' ⊕ K' = (A·x_base ⊕ e)·Δ`: the
//!    new choice bits `A·x ⊕ e` are pseudorandom under regular LPN.
//!
//! The first `k + t·h` outputs are kept as the next round's base; the rest go to a pool that
//! the OT traits draw from. A round is one flight, sender to receiver. The receiver computes
//! its LPN term `A·M_base`, which needs no message, as soon as its pool runs dry — usually
//! while the sender, whose share of each random OT costs two hashes to the receiver's one, is
//! still consuming its own — and adds its trees when the message comes (ReLUs measured
//! 7–8 % faster than with the receiver's encoding after the message). (emp-ot's current
//! Ferret builds its rounds the same way, `emp-ot/common/cggm.h` and `mp_gadget.h`; moat's
//! first version sent two hashed sums per level of a plain GGM tree and took the positions
//! from a receiver message: twice the bytes and AES calls, and a flight each way.)
//!
//! **Parameters** ([`FerretParams::DEFAULT`] = [`FerretParams::B12`]): main `n = 6,225,920`,
//! `k = 2^18 = 262,144`, `t = 1,520`, `h = 12`; bootstrap `n = 870,400`, `k = 2^16`, `t = 850`,
//! `h = 10`. These are emp-ot's current `ferret_b12` and `ferret_b10` sets (emp-toolkit/emp-ot
//! commit `dcbafff`, May 2026, `emp-ot/tuning.h`): `k` a power of two, and `t` the largest
//! value that clears 128 bits against all eleven attacks of the regular-LPN-over-F₂
//! estimator (Gauss, ISD variants, BJMM, the hybrid attack — the binding one — and the
//! algebraic attacks of Briaud–Øygarden, Eurocrypt 2023). The estimator follows Liu, Wang,
//! Yang, Yu (Eurocrypt 2024, "The hardness of LPN over any integer ring and field for PCG
//! applications"). The same commit records that emp-ot's earlier `b12`/`b11` sets had `t`
//! above that boundary. moat did not re-run the estimator; the sets are emp-ot's as published.
//!
//! [`FerretParams::B13`] is emp-ot's earlier `ferret_b13` set (`n = 10,485,760`,
//! `k = 452,000`, `t = 1,280`, `h = 13`, bootstrap `n = 470,016`, `k = 32,768`, `t = 918`,
//! `h = 9`). It sends half the bytes per COT, but its 7.2 MB code table makes the encoding
//! slower than B12's 4 MB one, and it was set before the current estimator (at `k = 2^19`
//! the estimator gives `t = 1,280` 138.5 bits, emp-ot commit `7a7e8c7`; no figure for
//! `k = 452,000`). It is kept for comparison (`moat bench … --lpn b13`).
//!
//! **Cost** (B12). Setup: `65,536 + 850·10 = 74,036` bootstrap OTs (16 B each over IKNP plus
//! a 16 B correction = 2.4 MB) and one bootstrap round (136,000 B). Main round: 291,840 B
//! sender → receiver for 5,945,536 usable COTs, **≈ 0.049 B per COT** (B13: 266,240 B for
//! 10,017,120, 0.027 B). A random OT with a chosen choice bit adds 1 bit receiver → sender
//! (derandomisation); with the receiver's random choice (the COT's own bit,
//! [`OtReceiver::receive_random_choice`]) nothing. CPU per round and party: `n` AES for the
//! trees (1 per COT) and `10n` random reads into the `16·k`-byte input for the encoding, its
//! column indices streamed from a table computed once per process (`2.5n` AES at setup;
//! 149 MB of memory per process for B12, see [`lpn`]); both are split across threads with
//! rayon.
//!
//! **Security.** Semi-honest, like the rest of moat's OT: a malicious sender could send
//! inconsistent corrections and learn about the noise positions (Ferret's consistency check is
//! not implemented). Malformed or wrongly sized messages are rejected as
//! [`MpcError::PeerMisbehaved`] or a transport length error; every wait is bounded by the
//! channel's timeout.

pub mod ggm;
pub mod lpn;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use self::ggm::HalfTree;
use self::lpn::LpnCode;
use super::prim::CrHash;
use super::{OtReceiver, OtSender, ReceiverSink, SenderSink};
use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::shares::Party;
use crate::transport::{Channel, blocks_from_bytes, in_phase};

/// The traffic phase of a main round run when a pool runs dry (see [`FerretSender::extend`]):
/// silent OT's own cost, kept apart from the protocol that consumed the COTs.
pub const EXTENSION_PHASE: &str = "ot-extension";

/// Random OTs handed out per derandomisation frame.
pub const CHUNK_OTS: usize = 1 << 16;

/// Public keys of the LPN codes (bootstrap and main stage).
const CODE_KEYS: [u128; 2] = [0x6A09_E667_F3BC_C908_B2FB_1366_EA95_7D3E, 0xBB67_AE85_84CA_A73B_3C6E_F372_FE94_F82B];

/// One regular-LPN parameter set: `n = t·2^log_bin` outputs from `k + t·log_bin` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpnParams {
    /// Outputs of a round.
    pub n: usize,
    /// LPN secret length (columns of the code).
    pub k: usize,
    /// Noise weight = number of GGM trees.
    pub t: usize,
    /// log₂ of the bin (tree) size.
    pub log_bin: u32,
}

impl LpnParams {
    /// COTs a round consumes: `k + t·log_bin`.
    pub const fn consumed(&self) -> usize {
        self.k + self.t * self.log_bin as usize
    }

    fn bin(&self) -> usize {
        1 << self.log_bin
    }

    fn validate(&self) -> Result<()> {
        if !(1..=24).contains(&self.log_bin) || self.t == 0 || self.k == 0 || self.n != self.t << self.log_bin {
            return Err(MpcError::invalid("ferret params", format!("{self:?}: need n = t·2^h, h in 1..=24")));
        }
        if self.consumed() >= self.n {
            return Err(MpcError::invalid("ferret params", format!("{self:?} consumes more than it produces")));
        }
        Ok(())
    }
}

/// Bootstrap and steady-state parameter sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FerretParams {
    /// The bootstrap round (fed by the base OT).
    pub pre: LpnParams,
    /// Every later round (fed by the previous round).
    pub main: LpnParams,
}

impl FerretParams {
    /// emp-ot's current `ferret_b12` with its `ferret_b10` as the bootstrap: 128-bit security
    /// by the regular-LPN estimator (see the module doc for the source).
    pub const B12: FerretParams = FerretParams {
        pre: LpnParams { n: 870_400, k: 1 << 16, t: 850, log_bin: 10 },
        main: LpnParams { n: 6_225_920, k: 1 << 18, t: 1_520, log_bin: 12 },
    };

    /// The set moat runs.
    pub const DEFAULT: FerretParams = Self::B12;

    /// emp-ot's earlier `ferret_b13` (kept for comparison; see the module doc).
    pub const B13: FerretParams = FerretParams {
        pre: LpnParams { n: 470_016, k: 32_768, t: 918, log_bin: 9 },
        main: LpnParams { n: 10_485_760, k: 452_000, t: 1_280, log_bin: 13 },
    };

    /// Base OTs the bootstrap needs.
    pub const fn bootstrap_ots(&self) -> usize {
        self.pre.consumed()
    }

    /// Usable COTs per main round.
    pub const fn per_round(&self) -> usize {
        self.main.n - self.main.consumed()
    }

    fn validate(&self) -> Result<()> {
        self.pre.validate()?;
        self.main.validate()?;
        if self.pre.n < self.main.consumed() {
            return Err(MpcError::invalid("ferret params", "the bootstrap round cannot feed the first main round"));
        }
        Ok(())
    }
}

/// Sender → receiver in a round: per tree and level `i` (from the top), the correction
/// `K₀ⁱ ⊕ K` of the level's left sum by the sender's tree COT `K`.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeMsg {
    corrections: Vec<Block>,
}

impl std::fmt::Debug for TreeMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeMsg").field("corrections", &self.corrections.len()).finish()
    }
}

impl TreeMsg {
    /// Wire form: `16·t·h` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.corrections.iter().flat_map(|b| b.to_le_bytes()).collect()
    }

    /// Parses and checks the length for `params`.
    pub fn from_bytes(bytes: &[u8], params: &LpnParams) -> Result<Self> {
        let expected = 16 * params.t * params.log_bin as usize;
        if bytes.len() != expected {
            return Err(MpcError::peer("ferret trees", format!("{} bytes, expected {expected}", bytes.len())));
        }
        Ok(Self { corrections: blocks_from_bytes(bytes) })
    }
}

/// Shared machinery of both roles.
#[derive(Clone, Debug, Default)]
struct Engine {
    tree: HalfTree,
    hash: CrHash,
}

impl Engine {
    fn code(params: &FerretParams, main: bool) -> LpnCode {
        if main {
            LpnCode::with_table(params.main.k, CODE_KEYS[1], params.main.n)
        } else {
            LpnCode::new(params.pre.k, CODE_KEYS[0])
        }
    }
}

/// The sender's side of one round (sans-IO): the [`TreeMsg`] and the round's `n` blocks `K'`.
pub struct SenderRound<'a> {
    params: LpnParams,
    delta: Block,
    base: &'a [Block],
}

/// Shows the parameters only: `Δ` and the base COTs are secret.
impl std::fmt::Debug for SenderRound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderRound").field("params", &self.params).finish_non_exhaustive()
    }
}

impl<'a> SenderRound<'a> {
    /// `base` holds `params.consumed()` sender blocks (lowest bit 0).
    pub fn new(params: LpnParams, delta: Block, base: &'a [Block]) -> Result<Self> {
        params.validate()?;
        if base.len() != params.consumed() {
            return Err(MpcError::invalid(
                "ferret round",
                format!("{} base COTs, need {}", base.len(), params.consumed()),
            ));
        }
        Ok(Self { params, delta, base })
    }

    /// The message and the round's tree blocks `v` (lowest bits cleared), written over `out`
    /// (any contents; a buffer of `n` blocks from an earlier round is reused without touching
    /// fresh pages). The message does not depend on the LPN term: send it, then
    /// [`Self::encode`].
    fn trees(&self, eng: &Engine, rng: &mut ChaCha20Rng, mut out: Vec<Block>) -> (TreeMsg, Vec<Block>) {
        let p = self.params;
        let seeds: Vec<Block> = (0..p.t).map(|_| random_block(rng)).collect();
        out.resize(p.n, 0);
        let left_sums: Vec<Vec<Block>> = out
            .par_chunks_mut(p.bin())
            .zip(seeds.par_iter())
            .map_init(Vec::new, |scratch, (leaves, &seed)| {
                let sums = eng.tree.expand_full(self.delta, seed, leaves, scratch);
                for v in leaves.iter_mut() {
                    *v &= !1;
                }
                sums
            })
            .collect();
        let corrections = left_sums.iter().flatten().zip(&self.base[p.k..]).map(|(&sum, &k)| sum ^ k).collect();
        (TreeMsg { corrections }, out)
    }

    /// `K' = A·K_base ⊕ v`: the round's sender blocks.
    fn encode(&self, code: &LpnCode, out: &mut [Block]) {
        code.encode(&self.base[..self.params.k], out);
    }

    /// The message and the round's `n` sender blocks.
    pub fn finish(self, params: &FerretParams, main: bool, rng: &mut ChaCha20Rng) -> (TreeMsg, Vec<Block>) {
        let eng = Engine::default();
        let (msg, mut out) = self.trees(&eng, rng, Vec::new());
        self.encode(&Engine::code(params, main), &mut out);
        (msg, out)
    }
}

/// The receiver's side of one round (sans-IO): [`ReceiverRound::new`] reads the noise
/// positions off its base, [`ReceiverRound::finish`] takes the sender's [`TreeMsg`].
pub struct ReceiverRound {
    params: LpnParams,
    alphas: Vec<usize>,
    base: Vec<Block>,
}

impl std::fmt::Debug for ReceiverRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverRound").field("params", &self.params).finish_non_exhaustive()
    }
}

impl ReceiverRound {
    /// `base` holds `params.consumed()` receiver blocks (lowest bit = choice bit); tree `j`'s
    /// noise position has bit `i` from the top = 1 ⊕ the choice bit of its tree COT `i`.
    pub fn new(params: LpnParams, base: Vec<Block>) -> Result<Self> {
        params.validate()?;
        if base.len() != params.consumed() {
            return Err(MpcError::invalid(
                "ferret round",
                format!("{} base COTs, need {}", base.len(), params.consumed()),
            ));
        }
        let alphas = base[params.k..]
            .chunks_exact(params.log_bin as usize)
            .map(|tree| tree.iter().fold(0usize, |alpha, &m| (alpha << 1) | (1 ^ (m & 1)) as usize))
            .collect();
        Ok(Self { params, alphas, base })
    }

    /// The part of the round that needs no message: `out = A·M_base`, written over `out`
    /// (resized to `n` blocks; a buffer from an earlier round is reused as in [`SenderRound`]).
    /// The receiver runs it as soon as it needs a round — typically while the sender, whose
    /// share of each OT costs more, is still consuming the old pool — and
    /// [`Self::add_trees`] once the message is in.
    fn encode(&self, code: &LpnCode, out: &mut Vec<Block>) {
        out.resize(self.params.n, 0);
        code.encode_over(&self.base[..self.params.k], out);
    }

    /// Completes the round from the sender's message: `out ⊕= w`, bin by bin, so that
    /// `out = A·M_base ⊕ w = M'`.
    fn add_trees(&self, msg: &TreeMsg, eng: &Engine, out: &mut [Block]) {
        let p = self.params;
        let h = p.log_bin as usize;
        // Mᵢ ⊕ cᵢ = K₀ⁱ ⊕ xᵢ·Δ = K_{ᾱᵢ}ⁱ: the sum on the side off the path.
        let off_path: Vec<Block> = self.base[p.k..].iter().zip(&msg.corrections).map(|(&m, &c)| m ^ c).collect();
        out.par_chunks_mut(p.bin()).zip(self.alphas.par_iter()).zip(off_path.par_chunks(h)).for_each_init(
            || (Vec::new(), vec![0; p.bin()]),
            |(scratch, leaves), ((bin, &alpha), sums)| {
                eng.tree.expand_punctured(alpha, sums, leaves, scratch);
                // The leaves XOR to Δ: the missing one (0 so far) is Δ ⊕ vα, whose lowest bit
                // is 1 (the choice bit of the noise position).
                let mut others = 0;
                for (o, v) in bin.iter_mut().zip(leaves.iter()) {
                    others ^= *v;
                    *o ^= *v & !1;
                }
                bin[alpha] ^= others | 1;
            },
        );
    }

    /// The round's `n` receiver blocks `M'` (lowest bit = the new choice bit).
    pub fn finish(self, msg: &TreeMsg, params: &FerretParams, main: bool) -> Vec<Block> {
        let mut out = Vec::new();
        self.encode(&Engine::code(params, main), &mut out);
        self.add_trees(msg, &Engine::default(), &mut out);
        out
    }
}

fn random_block(rng: &mut ChaCha20Rng) -> Block {
    ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128
}

/// Pool bookkeeping common to both roles.
///
/// A main round writes 160 MB; the pool's buffer, once drawn dry, is the next round's output
/// buffer, so a round touches no fresh pages (a fresh 160 MB buffer costs ≈ 0.24 s of page
/// faults per round and party on the benchmark machine, more than the LPN encoding's gather).
#[derive(Default)]
struct Pool {
    blocks: Vec<Block>,
    used: usize,
    rounds: u64,
}

impl Pool {
    fn available(&self) -> usize {
        self.blocks.len() - self.used
    }

    /// Hands over the buffer for the next round and the pool's unused rest (usually empty:
    /// rounds run when the pool is dry).
    fn take_for_round(&mut self) -> (Vec<Block>, Vec<Block>) {
        let rest = self.blocks[self.used..].to_vec();
        self.used = 0;
        (std::mem::take(&mut self.blocks), rest)
    }

    /// The pool becomes `rest` followed by `out[reserved..]` (`out[..reserved]` went to the
    /// next base): the rest takes the place of the front of `out`, without moving the round.
    fn refill(&mut self, mut out: Vec<Block>, reserved: usize, rest: &[Block]) {
        if rest.len() <= reserved {
            let start = reserved - rest.len();
            out[start..reserved].copy_from_slice(rest);
            self.used = start;
        } else {
            let mut blocks = Vec::with_capacity(rest.len() + out.len() - reserved);
            blocks.extend_from_slice(rest);
            blocks.extend_from_slice(&out[reserved..]);
            out = blocks;
            self.used = 0;
        }
        self.blocks = out;
        self.rounds += 1;
    }
}

/// A sender round whose LPN encoding waits for the party's receiver round (see [`Twin`]):
/// its trees are in `out` and its message is sent; `out ⊕= A·input[..k]` is left.
struct Pending {
    out: Vec<Block>,
    /// The round's base (`consumed()` blocks), whose first `k` the encoding reads.
    input: Vec<Block>,
    /// The pool's unused rest, to keep in front of the new COTs.
    rest: Vec<Block>,
    encoded: bool,
}

/// What one party's sender and receiver share ([`setup_both`]): a sender round run by
/// [`OtSender::ready`] leaves its LPN encoding here, and the receiver's next round encodes
/// both in one pass over the column table ([`LpnCode::encode_pair`]: one stream of the table
/// and one unpacking of each row for two outputs, 10.5 against 15.2 ns per pair of rows on
/// one core, `examples/lpn_pair.rs`). Any other use of the sender first finishes its round,
/// alone if the receiver has not come.
#[derive(Default)]
struct Twin {
    pending: Option<Pending>,
}

type SharedTwin = std::sync::Arc<std::sync::Mutex<Twin>>;

fn lock(twin: &SharedTwin) -> std::sync::MutexGuard<'_, Twin> {
    // A panic elsewhere cannot leave a half-written `Twin` (its one field is replaced whole).
    twin.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The Ferret COT sender: holds `Δ` and a pool of `K` blocks.
pub struct FerretSender {
    params: FerretParams,
    delta: Block,
    base: Vec<Block>,
    pool: Pool,
    rng: ChaCha20Rng,
    eng: Engine,
    code: LpnCode,
    twin: Option<SharedTwin>,
}

impl std::fmt::Debug for FerretSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FerretSender")
            .field("rounds", &self.pool.rounds)
            .field("available", &self.pool.available())
            .finish_non_exhaustive()
    }
}

/// The Ferret COT receiver: holds a pool of `M` blocks whose lowest bits are the choices.
pub struct FerretReceiver {
    params: FerretParams,
    base: Vec<Block>,
    pool: Pool,
    eng: Engine,
    code: LpnCode,
    twin: Option<SharedTwin>,
}

impl std::fmt::Debug for FerretReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FerretReceiver")
            .field("rounds", &self.pool.rounds)
            .field("available", &self.pool.available())
            .finish_non_exhaustive()
    }
}

impl FerretSender {
    /// Bootstraps from `ot` (the peer runs [`FerretReceiver::setup`] with the matching
    /// receiver) and runs the bootstrap round. Cost: see the module doc.
    pub fn setup(
        ch: &mut dyn Channel,
        ot: &mut dyn OtSender,
        params: FerretParams,
        rng: &mut ChaCha20Rng,
    ) -> Result<Self> {
        params.validate()?;
        let mut rng = ChaCha20Rng::from_rng(rng);
        let delta = random_block(&mut rng) | 1;
        let nb = params.bootstrap_ots();
        let mut pairs = Vec::with_capacity(nb);
        ot.send_random_choice_chunks(ch, nb, &mut |_, chunk| {
            pairs.extend_from_slice(chunk);
            Ok(())
        })?;
        let mut corr = Vec::with_capacity(16 * nb);
        for [m0, m1] in &pairs {
            corr.extend_from_slice(&(m0 ^ m1 ^ delta).to_le_bytes());
        }
        ch.send(&corr)?;
        let base: Vec<Block> = pairs.iter().map(|[m0, _]| m0 & !1).collect();
        let eng = Engine::default();
        let round = SenderRound::new(params.pre, delta, &base)?;
        let (msg, mut out) = round.trees(&eng, &mut rng, Vec::new());
        ch.send(&msg.to_bytes())?;
        ch.flush()?;
        round.encode(&Engine::code(&params, false), &mut out);
        Ok(Self {
            params,
            delta,
            base: out[..params.main.consumed()].to_vec(),
            pool: Pool::default(),
            rng,
            eng,
            code: Engine::code(&params, true),
            twin: None,
        })
    }

    /// COTs left in the pool (with a round whose encoding waits for the receiver's, what it will hold).
    pub fn available(&self) -> usize {
        let pending = self.twin.as_ref().and_then(|twin| {
            lock(twin).pending.as_ref().map(|job| job.rest.len() + job.out.len() - self.params.main.consumed())
        });
        pending.unwrap_or_else(|| self.pool.available())
    }

    /// Main rounds run so far.
    pub fn rounds(&self) -> u64 {
        let pending = self.twin.as_ref().is_some_and(|twin| lock(twin).pending.is_some());
        self.pool.rounds + u64::from(pending)
    }

    /// Runs one main round (the peer calls [`FerretReceiver::extend`]); the unused rest of the
    /// pool is kept in front of the new COTs. Its traffic is counted in the phase
    /// [`EXTENSION_PHASE`], whatever protocol ran the pool dry.
    pub fn extend(&mut self, ch: &mut dyn Channel) -> Result<()> {
        self.settle();
        in_phase(ch, EXTENSION_PHASE, |ch| self.extend_round(ch, false))
    }

    /// One main round; with `defer` (and a [`Twin`]) its encoding is left for the receiver's.
    fn extend_round(&mut self, ch: &mut dyn Channel, defer: bool) -> Result<()> {
        let p = self.params.main;
        let round = SenderRound::new(p, self.delta, &self.base)?;
        let (buffer, rest) = self.pool.take_for_round();
        let (msg, mut out) = round.trees(&self.eng, &mut self.rng, buffer);
        // The receiver's encoding runs while the sender's does.
        let sent = ch.send(&msg.to_bytes()).and_then(|()| ch.flush());
        match self.twin.as_ref().filter(|_| defer) {
            Some(twin) => {
                let input = std::mem::take(&mut self.base);
                lock(twin).pending = Some(Pending { out, input, rest, encoded: false });
            }
            None => {
                round.encode(&self.code, &mut out);
                self.base.copy_from_slice(&out[..p.consumed()]);
                self.pool.refill(out, p.consumed(), &rest);
            }
        }
        sent?;
        Ok(())
    }

    /// Finishes a round left to the [`Twin`]: encodes it if the receiver has not, takes the
    /// next base and refills the pool.
    fn settle(&mut self) {
        let Some(job) = self.twin.as_ref().and_then(|twin| lock(twin).pending.take()) else { return };
        let p = self.params.main;
        let Pending { mut out, input, rest, encoded } = job;
        if !encoded {
            self.code.encode(&input[..p.k], &mut out);
        }
        self.base = input;
        self.base.copy_from_slice(&out[..p.consumed()]);
        self.pool.refill(out, p.consumed(), &rest);
    }

    /// `n` COTs: hands the sender blocks `Kᵢ` to `sink` in chunks (the receiver holds
    /// `Kᵢ ⊕ xᵢ·Δ` with random `xᵢ`). No communication except the rounds that refill the pool.
    pub fn take_cots(
        &mut self,
        ch: &mut dyn Channel,
        n: usize,
        sink: &mut dyn FnMut(usize, &[Block]) -> Result<()>,
    ) -> Result<()> {
        self.settle();
        let mut done = 0;
        while done < n {
            if self.pool.available() == 0 {
                self.extend(ch)?;
            }
            let m = (n - done).min(self.pool.available());
            sink(done, &self.pool.blocks[self.pool.used..self.pool.used + m])?;
            self.pool.used += m;
            done += m;
        }
        Ok(())
    }

    /// The correlation key `Δ` (secret: never send it). For protocols built directly on COT.
    pub fn delta(&self) -> Block {
        self.delta
    }
}

impl FerretReceiver {
    /// The receiver side of [`FerretSender::setup`].
    pub fn setup(
        ch: &mut dyn Channel,
        ot: &mut dyn OtReceiver,
        params: FerretParams,
        rng: &mut ChaCha20Rng,
    ) -> Result<Self> {
        params.validate()?;
        let mut rng = ChaCha20Rng::from_rng(rng);
        let nb = params.bootstrap_ots();
        let (choices, keys) = ot.receive_random_choice(ch, nb, &mut rng)?;
        let corr = ch.recv_blocks(nb)?;
        let base: Vec<Block> = keys
            .iter()
            .zip(&corr)
            .enumerate()
            .map(|(i, (&m, &c))| {
                let b = choices.bit(i) as u128;
                ((m ^ (b * c)) & !1) | b
            })
            .collect();
        let eng = Engine::default();
        let round = ReceiverRound::new(params.pre, base)?;
        let mut out = Vec::new();
        round.encode(&Engine::code(&params, false), &mut out);
        round.add_trees(&TreeMsg::from_bytes(&ch.recv()?, &params.pre)?, &eng, &mut out);
        Ok(Self {
            params,
            base: out[..params.main.consumed()].to_vec(),
            pool: Pool::default(),
            eng,
            code: Engine::code(&params, true),
            twin: None,
        })
    }

    /// COTs left in the pool.
    pub fn available(&self) -> usize {
        self.pool.available()
    }

    /// Main rounds run so far.
    pub fn rounds(&self) -> u64 {
        self.pool.rounds
    }

    /// The receiver side of [`FerretSender::extend`] (also counted in [`EXTENSION_PHASE`]).
    pub fn extend(&mut self, ch: &mut dyn Channel) -> Result<()> {
        in_phase(ch, EXTENSION_PHASE, |ch| self.extend_round(ch))
    }

    fn extend_round(&mut self, ch: &mut dyn Channel) -> Result<()> {
        let p = self.params.main;
        let round = ReceiverRound::new(p, std::mem::take(&mut self.base))?;
        let (mut out, rest) = self.pool.take_for_round();
        // With the party's sender round waiting (`Twin`), both encodings in one pass.
        let mut twin = self.twin.as_ref().map(lock);
        match twin.as_mut().and_then(|t| t.pending.as_mut()).filter(|job| !job.encoded) {
            Some(job) => {
                out.resize(p.n, 0);
                self.code.encode_pair(&job.input[..p.k], &mut job.out, &round.base[..p.k], &mut out);
                job.encoded = true;
            }
            None => round.encode(&self.code, &mut out),
        }
        drop(twin);
        round.add_trees(&TreeMsg::from_bytes(&ch.recv()?, &p)?, &self.eng, &mut out);
        // The next base in the old one's buffer (no fresh pages).
        self.base = round.base;
        self.base.copy_from_slice(&out[..p.consumed()]);
        self.pool.refill(out, p.consumed(), &rest);
        Ok(())
    }

    /// The receiver side of [`FerretSender::take_cots`]: blocks `Mᵢ` whose lowest bit is the
    /// random choice `xᵢ`.
    pub fn take_cots(
        &mut self,
        ch: &mut dyn Channel,
        n: usize,
        sink: &mut dyn FnMut(usize, &[Block]) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0;
        while done < n {
            if self.pool.available() == 0 {
                self.extend(ch)?;
            }
            let m = (n - done).min(self.pool.available());
            sink(done, &self.pool.blocks[self.pool.used..self.pool.used + m])?;
            self.pool.used += m;
            done += m;
        }
        Ok(())
    }
}

/// Sets up Ferret in both directions over a bootstrap OT pair (`P0`'s sender first), like
/// [`super::iknp::setup_both`]. The party's sender and receiver share their main rounds' LPN
/// encoding: a sender round that [`OtSender::ready`] runs is encoded in one pass with the
/// receiver's next round (one stream of the column table for both), or alone if the sender
/// is used first.
pub fn setup_both(
    ch: &mut dyn Channel,
    party: Party,
    base_sender: &mut dyn OtSender,
    base_receiver: &mut dyn OtReceiver,
    params: FerretParams,
    rng: &mut ChaCha20Rng,
) -> Result<(FerretSender, FerretReceiver)> {
    let (mut s, mut r) = match party {
        Party::P0 => {
            let s = FerretSender::setup(ch, base_sender, params, rng)?;
            (s, FerretReceiver::setup(ch, base_receiver, params, rng)?)
        }
        Party::P1 => {
            let r = FerretReceiver::setup(ch, base_receiver, params, rng)?;
            (FerretSender::setup(ch, base_sender, params, rng)?, r)
        }
    };
    let twin = SharedTwin::default();
    (s.twin, r.twin) = (Some(twin.clone()), Some(twin));
    Ok((s, r))
}

impl OtSender for FerretSender {
    /// Random OT with the receiver's chosen bits: per chunk the receiver sends `d = c ⊕ x`
    /// (1 bit per OT) and the sender outputs `(H(K ⊕ d·Δ), H(K ⊕ d·Δ ⊕ Δ))`.
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        self.settle();
        let delta = self.delta;
        let mut done = 0;
        let mut pairs: Vec<[Block; 2]> = Vec::new();
        while done < n {
            if self.pool.available() == 0 {
                self.extend(ch)?;
            }
            let m = (n - done).min(self.pool.available()).min(CHUNK_OTS);
            let d = ch.recv_bits(m)?;
            let ks = &self.pool.blocks[self.pool.used..self.pool.used + m];
            hash_pairs(&self.eng.hash, delta, ks, Some(d.words()), done, &mut pairs, sink)?;
            self.pool.used += m;
            done += m;
        }
        Ok(())
    }

    fn random_choice_is_silent(&self) -> bool {
        true
    }

    /// The COTs left in the pool, after a refill round if it is dry — a round whose LPN
    /// encoding waits for the party's receiver's next one (see `setup_both`): call the receiver's
    /// `ready` next to have them run in one pass.
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        self.settle();
        if self.pool.available() == 0 {
            in_phase(ch, EXTENSION_PHASE, |ch| self.extend_round(ch, true))?;
        }
        Ok(Some(self.available()))
    }

    /// Random OT with the receiver's random choices `xᵢ` (the COTs' own): `(H(K), H(K ⊕ Δ))`,
    /// nothing sent or received besides the rounds that refill the pool.
    fn send_random_choice_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        let delta = self.delta;
        let mut pairs: Vec<[Block; 2]> = Vec::new();
        let hash = self.eng.hash.clone();
        self.take_cots(ch, n, &mut |done, ks| hash_pairs(&hash, delta, ks, None, done, &mut pairs, sink))
    }
}

impl OtReceiver for FerretReceiver {
    fn receive_random_chunks(
        &mut self,
        ch: &mut dyn Channel,
        choices: &BitVec,
        sink: &mut ReceiverSink<'_>,
    ) -> Result<()> {
        let n = choices.len();
        let mut done = 0;
        let mut keys = Vec::new();
        while done < n {
            if self.pool.available() == 0 {
                self.extend(ch)?;
            }
            let m = (n - done).min(self.pool.available()).min(CHUNK_OTS);
            let ms = &self.pool.blocks[self.pool.used..self.pool.used + m];
            let d = corrections(ms, choices, done)?;
            ch.send_bits(&d)?;
            keys.clear();
            keys.extend_from_slice(ms);
            self.eng.hash.hash_in_place(&mut keys);
            self.pool.used += m;
            sink(done, &keys)?;
            done += m;
        }
        ch.flush()?;
        Ok(())
    }

    fn random_choice_is_silent(&self) -> bool {
        true
    }

    /// The COTs left in the pool (after a refill round if it is dry).
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        if self.pool.available() == 0 {
            self.extend(ch)?;
        }
        Ok(Some(self.pool.available()))
    }

    /// The COTs' own random choices `xᵢ` (the blocks' lowest bits) and `H(Mᵢ)`: nothing sent
    /// or received besides the rounds that refill the pool.
    fn receive_random_choice(
        &mut self,
        ch: &mut dyn Channel,
        n: usize,
        _rng: &mut ChaCha20Rng,
    ) -> Result<(BitVec, Vec<Block>)> {
        let mut keys = Vec::with_capacity(n);
        self.take_cots(ch, n, &mut |_, ms| {
            keys.extend_from_slice(ms);
            Ok(())
        })?;
        let choices = BitVec::from_words(choice_bits(&keys).collect(), n)
            .ok_or_else(|| MpcError::invalid("ferret random choices", "too few words"))?;
        self.eng.hash.hash_in_place(&mut keys);
        Ok((choices, keys))
    }
}

/// Hands the random OTs of the sender blocks `ks` to `sink`, [`CHUNK_OTS`] at a time (the
/// first is OT `first`): `(H(K ⊕ dᵢ·Δ), H(K ⊕ dᵢ·Δ ⊕ Δ))` with `dᵢ` bit `i` of `d`, the
/// receiver's derandomisation (none: 0). Smaller pieces (4,096 OTs, to stay in cache)
/// measured 3 % slower ReLUs.
fn hash_pairs(
    hash: &CrHash,
    delta: Block,
    ks: &[Block],
    d: Option<&[u64]>,
    first: usize,
    pairs: &mut Vec<[Block; 2]>,
    sink: &mut SenderSink<'_>,
) -> Result<()> {
    for (p, piece) in ks.chunks(CHUNK_OTS).enumerate() {
        pairs.clear();
        for (g, ks) in piece.chunks(64).enumerate() {
            let word = d.and_then(|d| d.get(p * CHUNK_OTS / 64 + g)).copied().unwrap_or(0);
            // `dᵢ·Δ` as a mask.
            pairs.extend(ks.iter().enumerate().map(|(j, &k)| {
                let k0 = k ^ (delta & 0u128.wrapping_sub(u128::from((word >> j) & 1)));
                [k0, k0 ^ delta]
            }));
        }
        hash.hash_in_place(pairs.as_flattened_mut());
        sink(first + p * CHUNK_OTS, pairs)?;
    }
    Ok(())
}

/// The receiver's derandomisation `d = x ⊕ c` for the COTs `ms` (`x` their lowest bits) and the
/// choices from bit `offset` of `choices` on (any alignment), 64 at a time.
fn corrections(ms: &[Block], choices: &BitVec, offset: usize) -> Result<BitVec> {
    let words = choices.words();
    let word = |w: usize| words.get(w).copied().unwrap_or(0);
    // The 64 choice bits from bit `i` on.
    let choices_at = |i: usize| match i % 64 {
        0 => word(i / 64),
        s => word(i / 64) >> s | word(i / 64 + 1) << (64 - s),
    };
    let d = choice_bits(ms).enumerate().map(|(g, x)| x ^ choices_at(offset + 64 * g)).collect();
    BitVec::from_words(d, ms.len()).ok_or_else(|| MpcError::invalid("ferret derandomisation", "too few words"))
}

/// The receiver's random choices `xᵢ` of the COTs `ms` (their lowest bits), 64 to a word.
fn choice_bits(ms: &[Block]) -> impl Iterator<Item = u64> + '_ {
    ms.chunks(64).map(|ms| ms.iter().enumerate().fold(0u64, |acc, (j, &m)| acc | (m as u64 & 1) << j))
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
pub(crate) mod tests;
