//! IKNP OT extension (Ishai, Kilian, Nissim, Petrank, CRYPTO 2003), semi-honest.
//!
//! **Setup** (once per session and direction): κ = 128 Chou–Orlandi base OTs with roles
//! reversed — the extension *receiver* is the base-OT sender and gets seed pairs `(k⁰ⱼ, k¹ⱼ)`,
//! the extension *sender* picks secret bits `s ∈ {0,1}^κ` and gets `k^{sⱼ}ⱼ`. Cost ≈ 4 KiB and
//! two flights. [`setup_both`] runs it in both directions, so either party can later be sender
//! or receiver.
//!
//! **Extension** of `n` random OTs with choice bits `r`:
//!
//! 1. receiver: column `j` of `T` is `G(k⁰ⱼ)`, and it sends `uⱼ = G(k⁰ⱼ) ⊕ G(k¹ⱼ) ⊕ r`
//!    (κ·n bits = **16 bytes per OT**, one flight, in frames of [`CHUNK_OTS`] OTs so both sides
//!    work while bytes are in flight);
//! 2. sender: column `j` of `Q` is `G(k^{sⱼ}ⱼ) ⊕ sⱼ·uⱼ`, so row `i` is `qᵢ = tᵢ ⊕ rᵢ·s`;
//! 3. outputs after the 128×128 bit transposes: sender `(H(qᵢ), H(qᵢ ⊕ s))`, receiver `H(tᵢ)`.
//!
//! `G` is AES-CTR keyed by the base-OT seeds with a session counter (successive calls use
//! fresh PRG output); `H` is the fixed-key correlation-robust hash of [`super::prim`]. The
//! sender sees `uⱼ`, masked by `G(k^{1−sⱼ}ⱼ)`: nothing about `r`. The receiver knows `tᵢ` but
//! `H(tᵢ ⊕ s)` hides the other message while `s` stays secret. A receiver that deviates (sends
//! inconsistent columns) can learn bits of `s`: this is the semi-honest protocol, without the
//! KOS consistency check.
//!
//! **Cost per OT:** 16 bytes receiver → sender; receiver 3 AES calls, sender 3 AES calls, plus
//! 1/128 of a 128×128 transpose each.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroize;

use super::base::{ChouOrlandiReceiver, ChouOrlandiSender};
use super::prim::{AesPrg, CrHash, transpose128};
use super::{OtReceiver, OtSender, ReceiverSink, SenderSink};
use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::shares::Party;
use crate::transport::{Channel, blocks_from_bytes};

/// Security parameter: base OTs and matrix width.
pub const KAPPA: usize = 128;
/// OTs per frame of the receiver's message (128 KiB frames).
pub const CHUNK_OTS: usize = 8192;
const CHUNK_BLOCKS: usize = CHUNK_OTS / 128;

/// Choice bits `128·b .. 128·b + 127` as one block.
#[inline]
fn choice_block(words: &[u64], b: usize) -> Block {
    let lo = words.get(2 * b).copied().unwrap_or(0) as u128;
    let hi = words.get(2 * b + 1).copied().unwrap_or(0) as u128;
    lo | (hi << 64)
}

/// Transposes κ columns of `nb` blocks (`cols[j·nb + b]`) into `128·nb` rows.
fn transpose_columns(cols: &[Block], nb: usize, rows: &mut [Block]) {
    let mut m = [0u128; 128];
    for (b, out) in rows.chunks_exact_mut(128).take(nb).enumerate() {
        for (j, v) in m.iter_mut().enumerate() {
            *v = cols[j * nb + b];
        }
        transpose128(&mut m);
        out.copy_from_slice(&m);
    }
}

/// The IKNP extension sender (holds the secret `s` and one PRG per column).
pub struct IknpSender {
    delta: Block,
    prgs: Vec<AesPrg>,
    counter: u64,
    hash: CrHash,
    cols: Vec<Block>,
    rows: Vec<Block>,
}

impl std::fmt::Debug for IknpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IknpSender").field("counter", &self.counter).finish_non_exhaustive()
    }
}

/// The IKNP extension receiver (holds both seeds of every column).
pub struct IknpReceiver {
    prgs: Vec<[AesPrg; 2]>,
    counter: u64,
    hash: CrHash,
    cols: Vec<Block>,
    rows: Vec<Block>,
}

impl std::fmt::Debug for IknpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IknpReceiver").field("counter", &self.counter).finish_non_exhaustive()
    }
}

impl IknpSender {
    /// Runs the base OTs as their receiver (the peer runs [`IknpReceiver::setup`]).
    pub fn setup(ch: &mut dyn Channel, rng: &mut ChaCha20Rng) -> Result<Self> {
        let s = BitVec::random(KAPPA, rng);
        let mut seeds = ChouOrlandiReceiver::from_rng(ChaCha20Rng::from_rng(rng)).receive_random(ch, &s)?;
        if seeds.len() != KAPPA {
            seeds.zeroize();
            return Err(MpcError::peer("iknp setup", format!("{} base OTs instead of {KAPPA}", seeds.len())));
        }
        let prgs = seeds.iter().map(|&k| AesPrg::new(k)).collect();
        // The base-OT seeds live on only in the PRGs' key schedules (wiped on drop, aes/zeroize).
        seeds.zeroize();
        Ok(Self {
            delta: choice_block(s.words(), 0),
            prgs,
            counter: 0,
            hash: CrHash::new(),
            cols: Vec::new(),
            rows: Vec::new(),
        })
    }

    /// OTs extended so far (rounded up to multiples of 128 per call).
    pub fn extended(&self) -> u64 {
        self.counter * 128
    }
}

impl IknpReceiver {
    /// Runs the base OTs as their sender (the peer runs [`IknpSender::setup`]).
    pub fn setup(ch: &mut dyn Channel, rng: &mut ChaCha20Rng) -> Result<Self> {
        let mut seeds = ChouOrlandiSender::from_rng(ChaCha20Rng::from_rng(rng)).send_random(ch, KAPPA)?;
        let prgs = seeds.iter().map(|&[k0, k1]| [AesPrg::new(k0), AesPrg::new(k1)]).collect();
        seeds.zeroize();
        Ok(Self { prgs, counter: 0, hash: CrHash::new(), cols: Vec::new(), rows: Vec::new() })
    }

    /// OTs extended so far (rounded up to multiples of 128 per call).
    pub fn extended(&self) -> u64 {
        self.counter * 128
    }
}

/// Sets up IKNP in both directions: `P0`'s sender pairs with `P1`'s receiver, then `P1`'s
/// sender with `P0`'s receiver. Both parties call it with their own [`Party`]. Cost: 2 × 128
/// base OTs, ≈ 8.3 KB and four flights in total.
pub fn setup_both(ch: &mut dyn Channel, party: Party, rng: &mut ChaCha20Rng) -> Result<(IknpSender, IknpReceiver)> {
    match party {
        Party::P0 => {
            let sender = IknpSender::setup(ch, rng)?;
            let receiver = IknpReceiver::setup(ch, rng)?;
            Ok((sender, receiver))
        }
        Party::P1 => {
            let receiver = IknpReceiver::setup(ch, rng)?;
            let sender = IknpSender::setup(ch, rng)?;
            Ok((sender, receiver))
        }
    }
}

impl OtSender for IknpSender {
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        let total_blocks = n.div_ceil(128);
        self.cols.resize(KAPPA * CHUNK_BLOCKS, 0);
        self.rows.resize(KAPPA * CHUNK_BLOCKS, 0);
        let mut hashed = vec![[0u128; 2]; n.min(CHUNK_OTS)];
        let mut flipped = vec![0u128; n.min(CHUNK_OTS)];
        let mut block0 = 0;
        while block0 < total_blocks {
            let nb = CHUNK_BLOCKS.min(total_blocks - block0);
            let u = blocks_from_bytes(&ch.recv_exact(16 * KAPPA * nb)?);
            let cols = &mut self.cols[..KAPPA * nb];
            for (j, (col, prg)) in cols.chunks_exact_mut(nb).zip(&self.prgs).enumerate() {
                prg.fill(self.counter, col);
                if (self.delta >> j) & 1 == 1 {
                    for (q, &uj) in col.iter_mut().zip(&u[j * nb..(j + 1) * nb]) {
                        *q ^= uj;
                    }
                }
            }
            self.counter += nb as u64;
            let rows = &mut self.rows[..KAPPA * nb];
            transpose_columns(cols, nb, rows);
            let valid = (128 * nb).min(n - 128 * block0);
            let rows = &mut rows[..valid];
            let flipped = &mut flipped[..valid];
            for (f, &q) in flipped.iter_mut().zip(rows.iter()) {
                *f = q ^ self.delta;
            }
            self.hash.hash_in_place(rows);
            self.hash.hash_in_place(flipped);
            let out = &mut hashed[..valid];
            for ((o, &h0), &h1) in out.iter_mut().zip(rows.iter()).zip(flipped.iter()) {
                *o = [h0, h1];
            }
            sink(128 * block0, out)?;
            block0 += nb;
        }
        Ok(())
    }
}

impl OtReceiver for IknpReceiver {
    fn receive_random_chunks(
        &mut self,
        ch: &mut dyn Channel,
        choices: &BitVec,
        sink: &mut ReceiverSink<'_>,
    ) -> Result<()> {
        let n = choices.len();
        let total_blocks = n.div_ceil(128);
        self.cols.resize(KAPPA * CHUNK_BLOCKS, 0);
        self.rows.resize(KAPPA * CHUNK_BLOCKS, 0);
        let mut other = vec![0u128; CHUNK_BLOCKS];
        let mut msg = Vec::with_capacity(16 * KAPPA * CHUNK_BLOCKS);
        let words = choices.words();
        let mut block0 = 0;
        while block0 < total_blocks {
            let nb = CHUNK_BLOCKS.min(total_blocks - block0);
            let cols = &mut self.cols[..KAPPA * nb];
            msg.clear();
            for (col, [prg0, prg1]) in cols.chunks_exact_mut(nb).zip(&self.prgs) {
                prg0.fill(self.counter, col);
                prg1.fill(self.counter, &mut other[..nb]);
                for (b, (&t, &g1)) in col.iter().zip(&other[..nb]).enumerate() {
                    msg.extend_from_slice(&(t ^ g1 ^ choice_block(words, block0 + b)).to_le_bytes());
                }
            }
            self.counter += nb as u64;
            ch.send(&msg)?;
            let rows = &mut self.rows[..KAPPA * nb];
            transpose_columns(cols, nb, rows);
            let valid = (128 * nb).min(n - 128 * block0);
            let rows = &mut rows[..valid];
            self.hash.hash_in_place(rows);
            sink(128 * block0, rows)?;
            block0 += nb;
        }
        ch.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::testing::{Net, run_pair};
    use crate::transport::TransportError;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    fn check_random(pairs: &[[Block; 2]], choices: &BitVec, got: &[Block]) {
        assert_eq!((pairs.len(), got.len()), (choices.len(), choices.len()));
        for (i, (p, k)) in pairs.iter().zip(got).enumerate() {
            assert_eq!(*k, p[choices.bit(i) as usize], "OT {i}");
            assert_ne!(*k, p[1 - choices.bit(i) as usize], "OT {i}");
        }
    }

    fn random_ot_both_directions(net: Net) -> Result<()> {
        let n = 2 * CHUNK_OTS + 77; // three frames, a partial block
        let choices = BitVec::random(n, &mut rng(5));
        let back_choices = BitVec::random(300, &mut rng(6));
        let (c1, bc0) = (choices.clone(), back_choices.clone());
        let ((pairs, back), (got, back_pairs, bytes)) = run_pair(
            net,
            move |ch| {
                let (mut s, mut r) = setup_both(ch, Party::P0, &mut rng(1))?;
                let pairs = s.send_random(ch, n)?;
                let back = r.receive_random(ch, &bc0)?;
                Ok((pairs, back))
            },
            move |ch| {
                let (mut s, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                let before = ch.stats().total().bytes_sent;
                let got = r.receive_random(ch, &c1)?;
                let bytes = ch.stats().total().bytes_sent - before;
                let back_pairs = s.send_random(ch, 300)?;
                Ok((got, back_pairs, bytes))
            },
        )?;
        check_random(&pairs, &choices, &got);
        check_random(&back_pairs, &back_choices, &back);
        // 16 bytes per OT (rounded up to blocks of 128) + one header per frame.
        assert_eq!(bytes, (16 * n.div_ceil(128) * 128 + 4 * 3) as u64);
        Ok(())
    }

    #[test]
    fn random_ot_memory() -> Result<()> {
        random_ot_both_directions(Net::Memory)
    }

    #[test]
    fn random_ot_tcp() -> Result<()> {
        random_ot_both_directions(Net::Tcp)
    }

    fn derived_flavours(net: Net) -> Result<()> {
        const N: usize = 1000;
        let choices = BitVec::random(N, &mut rng(7));
        let deltas: Vec<u64> = (0..N as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let messages: Vec<[u64; 2]> = (0..N as u64).map(|i| [3 * i, u64::MAX - i]).collect();
        let one_of_n_shapes: Vec<(u32, u32)> = vec![(1, 1), (2, 2), (4, 2), (4, 37), (3, 64), (8, 5)];
        let one_of_n_choices: Vec<Vec<u8>> = one_of_n_shapes
            .iter()
            .enumerate()
            .map(|(s, &(k, _))| (0..N).map(|i| ((i * 7 + s * 13) % (1 << k)) as u8).collect())
            .collect();
        let table = |k: u32, bits: u32| -> Vec<u64> {
            let mask = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
            (0..N << k).map(|t| (t as u64).wrapping_mul(0xD1B5_4A32_D192_ED03) & mask).collect()
        };
        let (c1, shapes1, oc1) = (choices.clone(), one_of_n_shapes.clone(), one_of_n_choices.clone());
        let (d0, m0, shapes0) = (deltas.clone(), messages.clone(), one_of_n_shapes.clone());
        let (sender_x, received) = run_pair(
            net,
            move |ch| {
                let (mut s, _r) = setup_both(ch, Party::P0, &mut rng(1))?;
                let mut xs = Vec::new();
                for bits in [1, 37, 64] {
                    xs.push(s.send_correlated(ch, &d0, bits)?);
                }
                s.send_chosen(ch, &m0, 64)?;
                s.send_chosen(ch, &m0, 20)?;
                for &(k, bits) in &shapes0 {
                    s.send_one_of_n(ch, &table(k, bits), k, bits)?;
                }
                Ok(xs)
            },
            move |ch| {
                let (_s, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                let mut out = Vec::new();
                for bits in [1, 37, 64] {
                    out.push(r.receive_correlated(ch, &c1, bits)?);
                }
                out.push(r.receive_chosen(ch, &c1, 64)?);
                out.push(r.receive_chosen(ch, &c1, 20)?);
                for (&(k, bits), c) in shapes1.iter().zip(&oc1) {
                    out.push(r.receive_one_of_n(ch, c, k, bits)?);
                }
                Ok(out)
            },
        )?;
        for (t, bits) in [1u32, 37, 64].into_iter().enumerate() {
            let mask = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
            for i in 0..N {
                let expect = sender_x[t][i].wrapping_add(choices.bit(i) * deltas[i]) & mask;
                assert_eq!(received[t][i], expect, "COT bits {bits} i {i}");
            }
        }
        // The sender's x is not constant (it is the OT's randomness).
        assert!(sender_x[1].iter().any(|&x| x != sender_x[1][0]));
        for i in 0..N {
            let m = messages[i][choices.bit(i) as usize];
            assert_eq!(received[3][i], m);
            assert_eq!(received[4][i], m & ((1 << 20) - 1));
        }
        for (s, &(k, bits)) in one_of_n_shapes.iter().enumerate() {
            let tab = table(k, bits);
            for i in 0..N {
                let c = one_of_n_choices[s][i] as usize;
                assert_eq!(received[5 + s][i], tab[(i << k) + c], "1-of-{} ℓ={bits} i {i}", 1 << k);
            }
        }
        Ok(())
    }

    #[test]
    fn derived_flavours_memory() -> Result<()> {
        derived_flavours(Net::Memory)
    }

    #[test]
    fn derived_flavours_tcp() -> Result<()> {
        derived_flavours(Net::Tcp)
    }

    #[test]
    fn base_ot_serves_the_derived_flavours_too() -> Result<()> {
        let choices = BitVec::random(20, &mut rng(3));
        let c1 = choices.clone();
        let deltas: Vec<u64> = (1..=20).collect();
        let d0 = deltas.clone();
        let (x, (y, z)) = run_pair(
            Net::Memory,
            move |ch| {
                let mut s = ChouOrlandiSender::new(1);
                let x = s.send_correlated(ch, &d0, 37)?;
                s.send_one_of_n(ch, &(0..80).collect::<Vec<u64>>(), 2, 8)?;
                Ok(x)
            },
            move |ch| {
                let mut r = ChouOrlandiReceiver::new(2);
                let y = r.receive_correlated(ch, &c1, 37)?;
                let z = r.receive_one_of_n(ch, &(0..20).map(|i| (i % 4) as u8).collect::<Vec<_>>(), 2, 8)?;
                Ok((y, z))
            },
        )?;
        for i in 0..20 {
            assert_eq!(y[i], (x[i] + choices.bit(i) * deltas[i]) & ((1 << 37) - 1));
            assert_eq!(z[i], (4 * i + i % 4) as u64);
        }
        Ok(())
    }

    #[test]
    fn b2a_converts_xor_shares() -> Result<()> {
        use crate::convert::{b2a_receiver, b2a_sender};
        use crate::shares::{BShare, reconstruct, share_bits};
        let fp = moat_nn::FixedPoint::default();
        let bits = BitVec::random(500, &mut rng(11));
        let (s0, s1) = share_bits(&bits, &mut rng(12));
        let (a0, a1) = run_pair(
            Net::Memory,
            move |ch| {
                let (mut s, _) = setup_both(ch, Party::P0, &mut rng(1))?;
                b2a_sender(&mut s, ch, &s0, fp)
            },
            move |ch| {
                let (_, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                b2a_receiver(&mut r, ch, &s1, fp)
            },
        )?;
        let opened = reconstruct(&a0, &a1)?;
        assert_eq!(opened, (0..500).map(|i| bits.bit(i)).collect::<Vec<_>>());
        // Neither arithmetic share is the bit itself.
        assert!(a0.values().iter().any(|&v| v > 1) && a1.values().iter().any(|&v| v > 1));
        let _ = BShare::new(bits);
        Ok(())
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() -> Result<()> {
        // A receiver that extends 128 OTs while the sender expects 300: the sender sees a
        // frame of the wrong length.
        let (sender_result, receiver_result) = run_pair(
            Net::Memory,
            |ch| {
                let (mut s, _r) = setup_both(ch, Party::P0, &mut rng(1))?;
                Ok(s.send_random(ch, 300))
            },
            |ch| {
                let (_s, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                r.receive_random(ch, &BitVec::zeros(128))
            },
        )?;
        assert_eq!(
            sender_result.err(),
            Some(MpcError::Transport(TransportError::LengthMismatch { expected: 16 * 128 * 3, got: 16 * 128 }))
        );
        assert_eq!(receiver_result.len(), 128);

        // A sender whose COT correction has the wrong size: the receiver errs.
        let (_, receiver_result) = run_pair(
            Net::Memory,
            |ch| {
                let (mut s, _r) = setup_both(ch, Party::P0, &mut rng(1))?;
                s.send_random(ch, 100)?;
                ch.send(&[0u8; 7])?;
                Ok(())
            },
            |ch| {
                let (_s, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                Ok(r.receive_correlated(ch, &BitVec::zeros(100), 37))
            },
        )?;
        assert!(matches!(receiver_result, Err(MpcError::Transport(TransportError::LengthMismatch { .. }))));

        // Local misuse is refused before anything is sent.
        let (mut a, _b) = crate::transport::memory::pair(Default::default());
        let mut base = ChouOrlandiSender::new(1);
        assert!(matches!(base.send_one_of_n(&mut a, &[1, 2, 3], 1, 8), Err(MpcError::InvalidArgument { .. })));
        assert!(matches!(base.send_correlated(&mut a, &[1], 65), Err(MpcError::InvalidArgument { .. })));
        let mut r = ChouOrlandiReceiver::new(1);
        assert!(matches!(r.receive_one_of_n(&mut a, &[4], 2, 8), Err(MpcError::InvalidArgument { .. })));
        assert_eq!(a.stats().total().bytes_sent, 0);
        Ok(())
    }

    #[test]
    fn peer_dying_mid_extension_is_a_clean_error() -> Result<()> {
        let n = 4 * CHUNK_OTS;
        let (sender_result, ()) = run_pair(
            Net::Tcp,
            move |ch| {
                let (mut s, _r) = setup_both(ch, Party::P0, &mut rng(1))?;
                Ok(s.send_random(ch, n))
            },
            move |ch| {
                let (_s, _r) = setup_both(ch, Party::P1, &mut rng(2))?;
                // One frame of the four, then the process "dies" (the socket is dropped).
                ch.send(&vec![0u8; 16 * CHUNK_OTS])?;
                ch.flush()?;
                Ok(())
            },
        )?;
        assert_eq!(sender_result.err(), Some(MpcError::Transport(TransportError::PeerClosed)));
        Ok(())
    }

    /// Prints the throughput of random OT and of the derived flavours the non-linear layers
    /// use (both parties in one process, one thread each; timing is printed, not asserted).
    #[test]
    fn throughput() -> Result<()> {
        const N: usize = 1 << 22;
        const M: usize = 1 << 20;
        let choices = BitVec::random(N, &mut rng(8));
        let digits: Vec<u8> = (0..M).map(|i| (i * 7 % 16) as u8).collect();
        let table: Vec<u64> = (0..16 * M as u64).map(|t| t & 3).collect();
        let deltas: Vec<u64> = (0..M as u64).collect();
        let c1 = choices.clone();
        let (times0, times1) = run_pair(
            Net::Memory,
            move |ch| {
                let (mut s, _r) = setup_both(ch, Party::P0, &mut rng(1))?;
                let start = Instant::now();
                let mut acc = 0u128;
                s.send_random_chunks(ch, N, &mut |_, c| {
                    acc ^= c.iter().fold(0, |a, p| a ^ p[0] ^ p[1]);
                    Ok(())
                })?;
                let t_rot = start.elapsed();
                assert_ne!(acc, 0);
                let start = Instant::now();
                s.send_correlated(ch, &deltas, 37)?;
                let t_cot = start.elapsed();
                let start = Instant::now();
                s.send_one_of_n(ch, &table, 4, 2)?;
                Ok([t_rot, t_cot, start.elapsed()])
            },
            move |ch| {
                let (_s, mut r) = setup_both(ch, Party::P1, &mut rng(2))?;
                let start = Instant::now();
                r.receive_random_chunks(ch, &c1, &mut |_, _| Ok(()))?;
                let t_rot = start.elapsed();
                let start = Instant::now();
                r.receive_correlated(ch, &c1.slice(0, M).unwrap_or_default(), 37)?;
                let t_cot = start.elapsed();
                let start = Instant::now();
                let got = r.receive_one_of_n(ch, &digits, 4, 2)?;
                assert!(got.iter().zip(&digits).all(|(&g, &d)| g == d as u64 & 3));
                Ok([t_rot, t_cot, start.elapsed()])
            },
        )?;
        for (name, k, count) in [("random OT", 0, N), ("COT ℓ=37", 1, M), ("1-of-16 OT ℓ=2", 2, M)] {
            let t = times0[k].max(times1[k]);
            println!(
                "IKNP {name}: {count} in {:.1} ms (sender {:.1}, receiver {:.1}): {:.2} M/s",
                t.as_secs_f64() * 1e3,
                times0[k].as_secs_f64() * 1e3,
                times1[k].as_secs_f64() * 1e3,
                count as f64 / t.as_secs_f64() / 1e6
            );
        }
        Ok(())
    }
}
