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
//! 1. *Multi-point COT over regular noise*: the receiver picks one secret position `αⱼ` in
//!    each of the `t` bins of `2^h` ([`ggm`]). Per bin the sender expands a fresh GGM tree
//!    with leaves `vⱼ` and level sums `K₀ⁱ, K₁ⁱ`; per level the receiver obtains the sum off
//!    its path by one COT: it sends `d = x ⊕ ᾱᵢ` ([`ChoiceMsg`], `t·h` bits), the sender
//!    replies `cᵦ = K_bⁱ ⊕ H(K ⊕ d·Δ ⊕ b·Δ)` and `ψⱼ = Δ ⊕ ⊕ vⱼ` ([`TreeMsg`], `(2h+1)·t`
//!    blocks). The receiver rebuilds `wⱼ` with `wⱼ ⊕ vⱼ = Δ·e_{αⱼ}`.
//! 2. *LPN encoding* with a public local code `A` of 10 ones per row ([`lpn`]): sender
//!    `K' = A·K_base ⊕ v`, receiver `M' = A·M_base ⊕ w`, so `M' ⊕ K' = (A·x_base ⊕ e)·Δ`: the
//!    new choice bits `A·x ⊕ e` are pseudorandom under regular LPN.
//!
//! The first `k + t·h` outputs are kept as the next round's base; the rest go to a pool that
//! the OT traits draw from. A round is one flight each way (receiver first).
//!
//! **Parameters** ([`FerretParams::B13`]): main `n = 10,485,760`, `k = 452,000`, `t = 1,280`,
//! `h = 13`; bootstrap `n = 470,016`, `k = 32,768`, `t = 918`, `h = 9`. This is emp-ot's
//! `ferret_b13` set, which replaced the original Ferret sets after the attacks on sparse and
//! regular LPN (Briaud–Øygarden, Eurocrypt 2023, algebraic attacks on regular syndrome
//! decoding; Liu–Wang–Yang–Yu, Eurocrypt 2024, "The hardness of LPN over any integer ring and
//! field for PCG applications", whose estimator emp-ot's revised sets target): 128-bit security
//! against ISD, Pooled Gauss, statistical decoding and the algebraic attacks as those authors
//! estimate it. moat did not re-run the estimator; the set is taken as published by emp-ot.
//!
//! **Cost.** Setup: `32,768 + 918·9 = 41,030` bootstrap OTs (16 B each over IKNP plus a 16 B
//! correction = 1.3 MB) and one bootstrap round (≈ 0.3 MB). Main round: 2,080 B receiver →
//! sender and 552,960 B sender → receiver for 10,017,120 usable COTs, **≈ 0.055 B per COT**.
//! A random OT with a chosen choice bit adds 1 bit receiver → sender (derandomisation).
//! CPU per round and party: `t·2^{h+1}` AES for the trees, `2.5n` AES and `10n` random reads for
//! the encoding; both are split across threads with rayon.
//!
//! **Security.** Semi-honest, like the rest of moat's OT: a malicious receiver could send
//! inconsistent level choices and learn about `Δ` (Ferret's consistency check is not
//! implemented). Malformed or wrongly sized messages are rejected as
//! [`MpcError::PeerMisbehaved`] or a transport length error; every wait is bounded by the
//! channel's timeout.

pub mod ggm;
pub mod lpn;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use self::ggm::TreePrg;
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
    /// emp-ot's `ferret_b13`: 128-bit security (see the module doc for the source).
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

/// Receiver → sender in a round: per tree and level, `d = x ⊕ ᾱᵢ` (`t·h` bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChoiceMsg {
    bits: BitVec,
}

impl ChoiceMsg {
    /// Wire form: `⌈t·h/8⌉` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bits.to_bytes()
    }

    /// Parses and checks the length for `params`.
    pub fn from_bytes(bytes: &[u8], params: &LpnParams) -> Result<Self> {
        let n = params.t * params.log_bin as usize;
        if bytes.len() != n.div_ceil(8) {
            return Err(MpcError::peer("ferret choices", format!("{} bytes, expected {}", bytes.len(), n.div_ceil(8))));
        }
        let bits =
            BitVec::from_bytes(bytes, n).ok_or_else(|| MpcError::peer("ferret choices", "nonzero padding bits"))?;
        Ok(Self { bits })
    }
}

/// Sender → receiver in a round: per tree and level the two encrypted level sums, then per
/// tree `ψ = Δ ⊕ ⊕ leaves`.
#[derive(Clone, PartialEq, Eq)]
pub struct TreeMsg {
    levels: Vec<[Block; 2]>,
    psi: Vec<Block>,
}

impl std::fmt::Debug for TreeMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeMsg").field("levels", &self.levels.len()).field("trees", &self.psi.len()).finish()
    }
}

impl TreeMsg {
    /// Wire form: `16·(2·t·h + t)` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * (2 * self.levels.len() + self.psi.len()));
        for b in self.levels.iter().flatten().chain(&self.psi) {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }

    /// Parses and checks the length for `params`.
    pub fn from_bytes(bytes: &[u8], params: &LpnParams) -> Result<Self> {
        let nl = params.t * params.log_bin as usize;
        let expected = 16 * (2 * nl + params.t);
        if bytes.len() != expected {
            return Err(MpcError::peer("ferret trees", format!("{} bytes, expected {expected}", bytes.len())));
        }
        let blocks = blocks_from_bytes(bytes);
        let (lv, psi) = blocks.split_at(2 * nl);
        Ok(Self { levels: lv.chunks_exact(2).map(|c| [c[0], c[1]]).collect(), psi: psi.to_vec() })
    }
}

/// Shared machinery of both roles.
#[derive(Clone, Debug, Default)]
struct Engine {
    prg: TreePrg,
    hash: CrHash,
}

impl Engine {
    fn code(params: &FerretParams, main: bool) -> LpnCode {
        if main { LpnCode::new(params.main.k, CODE_KEYS[1]) } else { LpnCode::new(params.pre.k, CODE_KEYS[0]) }
    }
}

/// The sender's side of one round (sans-IO): answer a [`ChoiceMsg`] with a [`TreeMsg`] and
/// get the round's `n` blocks `K'`.
#[derive(Debug)]
pub struct SenderRound<'a> {
    params: LpnParams,
    delta: Block,
    base: &'a [Block],
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

    /// The reply and the round's tree blocks `v` (lowest bits cleared), written over `out`
    /// (any contents; a buffer of `n` blocks from an earlier round is reused without touching
    /// fresh pages). The reply does not depend on the LPN term: send it, then [`Self::encode`].
    fn respond(
        &self,
        msg: &ChoiceMsg,
        eng: &Engine,
        rng: &mut ChaCha20Rng,
        mut out: Vec<Block>,
    ) -> (TreeMsg, Vec<Block>) {
        let p = self.params;
        let h = p.log_bin as usize;
        let seeds: Vec<Block> = (0..p.t).map(|_| random_block(rng)).collect();
        out.resize(p.n, 0);
        let sums: Vec<Vec<[Block; 2]>> = out
            .par_chunks_mut(p.bin())
            .zip(seeds.par_iter())
            .map_init(Vec::new, |scratch, (leaves, &seed)| eng.prg.expand_full(seed, leaves, scratch))
            .collect();
        let psi: Vec<Block> =
            out.par_chunks(p.bin()).map(|leaves| leaves.iter().fold(self.delta, |a, &b| a ^ b)).collect();
        let base_tree = &self.base[p.k..];
        let mut k0: Vec<Block> =
            base_tree.iter().enumerate().map(|(i, &k)| k ^ (msg.bits.bit(i) as u128 * self.delta)).collect();
        let mut k1: Vec<Block> = k0.iter().map(|&k| k ^ self.delta).collect();
        eng.hash.hash_in_place(&mut k0);
        eng.hash.hash_in_place(&mut k1);
        let levels =
            sums.iter().flatten().zip(k0.iter().zip(&k1)).map(|(s, (&h0, &h1))| [s[0] ^ h0, s[1] ^ h1]).collect();
        debug_assert_eq!(sums.len() * h, k0.len());
        out.par_iter_mut().for_each(|v| *v &= !1);
        (TreeMsg { levels, psi }, out)
    }

    /// `K' = A·K_base ⊕ v`: the round's sender blocks.
    fn encode(&self, code: &LpnCode, out: &mut [Block]) {
        code.encode(&self.base[..self.params.k], out);
    }
}

/// The receiver's side of one round (sans-IO): [`ReceiverRound::start`] gives the
/// [`ChoiceMsg`], [`ReceiverRound::finish`] takes the sender's [`TreeMsg`].
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
    /// Picks the noise positions; `base` holds `params.consumed()` receiver blocks (lowest
    /// bit = choice bit).
    pub fn start(params: LpnParams, base: Vec<Block>, rng: &mut ChaCha20Rng) -> Result<(Self, ChoiceMsg)> {
        params.validate()?;
        if base.len() != params.consumed() {
            return Err(MpcError::invalid(
                "ferret round",
                format!("{} base COTs, need {}", base.len(), params.consumed()),
            ));
        }
        let h = params.log_bin as usize;
        let alphas: Vec<usize> = (0..params.t).map(|_| (rng.next_u64() as usize) & (params.bin() - 1)).collect();
        let tree_base = &base[params.k..];
        let bits = BitVec::from_fn(params.t * h, |i| {
            let (j, level) = (i / h, i % h);
            let off_path = 1 ^ ((alphas[j] >> (h - 1 - level)) & 1) as u128;
            (tree_base[i] & 1) ^ off_path == 1
        });
        Ok((Self { params, alphas, base }, ChoiceMsg { bits }))
    }

    /// The round's blocks, written over `out` (as in [`SenderRound`]'s reply).
    fn finish_with(self, msg: &TreeMsg, code: &LpnCode, eng: &Engine, mut out: Vec<Block>) -> Vec<Block> {
        let p = self.params;
        let h = p.log_bin as usize;
        let (base_lpn, base_tree) = self.base.split_at(p.k);
        let mut hm = base_tree.to_vec();
        eng.hash.hash_in_place(&mut hm);
        let sib: Vec<Block> = hm
            .iter()
            .enumerate()
            .map(|(i, &hk)| {
                let (j, level) = (i / h, i % h);
                let off_path = 1 ^ ((self.alphas[j] >> (h - 1 - level)) & 1);
                msg.levels[i][off_path] ^ hk
            })
            .collect();
        out.resize(p.n, 0);
        out.par_chunks_mut(p.bin())
            .zip(self.alphas.par_iter())
            .zip(sib.par_chunks(h).zip(msg.psi.par_iter()))
            .for_each_init(Vec::new, |scratch, ((leaves, &alpha), (sums, &psi))| {
                eng.prg.expand_punctured(alpha, sums, leaves, scratch);
                leaves[alpha] = leaves.iter().fold(psi, |a, &b| a ^ b);
                for v in leaves.iter_mut() {
                    *v &= !1;
                }
                leaves[alpha] |= 1;
            });
        code.encode(base_lpn, &mut out);
        out
    }

    /// The round's `n` receiver blocks `M'` (lowest bit = the new choice bit).
    pub fn finish(self, msg: &TreeMsg, params: &FerretParams, main: bool) -> Vec<Block> {
        let eng = Engine::default();
        self.finish_with(msg, &Engine::code(params, main), &eng, Vec::new())
    }
}

impl SenderRound<'_> {
    /// The reply to `msg` and the round's `n` sender blocks.
    pub fn finish(
        self,
        msg: &ChoiceMsg,
        params: &FerretParams,
        main: bool,
        rng: &mut ChaCha20Rng,
    ) -> (TreeMsg, Vec<Block>) {
        let eng = Engine::default();
        let code = Engine::code(params, main);
        let (reply, mut out) = self.respond(msg, &eng, rng, Vec::new());
        self.encode(&code, &mut out);
        (reply, out)
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

/// The Ferret COT sender: holds `Δ` and a pool of `K` blocks.
pub struct FerretSender {
    params: FerretParams,
    delta: Block,
    base: Vec<Block>,
    pool: Pool,
    rng: ChaCha20Rng,
    eng: Engine,
    code: LpnCode,
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
    rng: ChaCha20Rng,
    eng: Engine,
    code: LpnCode,
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
        let pairs = ot.send_random(ch, nb)?;
        let mut corr = Vec::with_capacity(16 * nb);
        for [m0, m1] in &pairs {
            corr.extend_from_slice(&(m0 ^ m1 ^ delta).to_le_bytes());
        }
        ch.send(&corr)?;
        let base: Vec<Block> = pairs.iter().map(|[m0, _]| m0 & !1).collect();
        let eng = Engine::default();
        let pre_code = Engine::code(&params, false);
        let msg = ChoiceMsg::from_bytes(&ch.recv()?, &params.pre)?;
        let round = SenderRound::new(params.pre, delta, &base)?;
        let (reply, mut out) = round.respond(&msg, &eng, &mut rng, Vec::new());
        ch.send(&reply.to_bytes())?;
        ch.flush()?;
        round.encode(&pre_code, &mut out);
        Ok(Self {
            params,
            delta,
            base: out[..params.main.consumed()].to_vec(),
            pool: Pool::default(),
            rng,
            eng,
            code: Engine::code(&params, true),
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

    /// Runs one main round (the peer calls [`FerretReceiver::extend`]); the unused rest of the
    /// pool is kept in front of the new COTs. Its traffic is counted in the phase
    /// [`EXTENSION_PHASE`], whatever protocol ran the pool dry.
    pub fn extend(&mut self, ch: &mut dyn Channel) -> Result<()> {
        in_phase(ch, EXTENSION_PHASE, |ch| self.extend_round(ch))
    }

    fn extend_round(&mut self, ch: &mut dyn Channel) -> Result<()> {
        let p = self.params.main;
        let msg = ChoiceMsg::from_bytes(&ch.recv()?, &p)?;
        let round = SenderRound::new(p, self.delta, &self.base)?;
        let (buffer, rest) = self.pool.take_for_round();
        let (reply, mut out) = round.respond(&msg, &self.eng, &mut self.rng, buffer);
        // The receiver's encoding runs while the sender's does.
        let sent = ch.send(&reply.to_bytes()).and_then(|()| ch.flush());
        round.encode(&self.code, &mut out);
        self.base.copy_from_slice(&out[..p.consumed()]);
        self.pool.refill(out, p.consumed(), &rest);
        sent?;
        Ok(())
    }

    /// `n` COTs: hands the sender blocks `Kᵢ` to `sink` in chunks (the receiver holds
    /// `Kᵢ ⊕ xᵢ·Δ` with random `xᵢ`). No communication except the rounds that refill the pool.
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
        let (round, msg) = ReceiverRound::start(params.pre, base, &mut rng)?;
        ch.send(&msg.to_bytes())?;
        ch.flush()?;
        let reply = TreeMsg::from_bytes(&ch.recv()?, &params.pre)?;
        let out = round.finish_with(&reply, &Engine::code(&params, false), &eng, Vec::new());
        Ok(Self {
            params,
            base: out[..params.main.consumed()].to_vec(),
            pool: Pool::default(),
            rng,
            eng,
            code: Engine::code(&params, true),
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
        let base = std::mem::take(&mut self.base);
        let (round, msg) = ReceiverRound::start(p, base, &mut self.rng)?;
        ch.send(&msg.to_bytes())?;
        ch.flush()?;
        let reply = TreeMsg::from_bytes(&ch.recv()?, &p)?;
        let (buffer, rest) = self.pool.take_for_round();
        let out = round.finish_with(&reply, &self.code, &self.eng, buffer);
        self.base = out[..p.consumed()].to_vec();
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
/// [`super::iknp::setup_both`].
pub fn setup_both(
    ch: &mut dyn Channel,
    party: Party,
    base_sender: &mut dyn OtSender,
    base_receiver: &mut dyn OtReceiver,
    params: FerretParams,
    rng: &mut ChaCha20Rng,
) -> Result<(FerretSender, FerretReceiver)> {
    match party {
        Party::P0 => {
            let s = FerretSender::setup(ch, base_sender, params, rng)?;
            let r = FerretReceiver::setup(ch, base_receiver, params, rng)?;
            Ok((s, r))
        }
        Party::P1 => {
            let r = FerretReceiver::setup(ch, base_receiver, params, rng)?;
            let s = FerretSender::setup(ch, base_sender, params, rng)?;
            Ok((s, r))
        }
    }
}

impl OtSender for FerretSender {
    /// Random OT with the receiver's chosen bits: per chunk the receiver sends `d = c ⊕ x`
    /// (1 bit per OT) and the sender outputs `(H(K ⊕ d·Δ), H(K ⊕ d·Δ ⊕ Δ))`.
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
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
            pairs.clear();
            pairs.extend(ks.iter().enumerate().map(|(i, &k)| {
                let k0 = k ^ (d.bit(i) as u128 * delta);
                [k0, k0 ^ delta]
            }));
            self.eng.hash.hash_in_place(pairs.as_flattened_mut());
            self.pool.used += m;
            sink(done, &pairs)?;
            done += m;
        }
        Ok(())
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
            let d = BitVec::from_fn(m, |i| (ms[i] as u64 ^ choices.bit(done + i)) & 1 == 1);
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
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests;
