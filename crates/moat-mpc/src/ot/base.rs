//! Base OT: Chou–Orlandi "simplest OT" (LATINCRYPT 2015) over Ristretto255.
//!
//! Random OT, `n` at once:
//!
//! 1. sender: `a ← Z_q`, sends `A = a·G` (32 bytes);
//! 2. receiver, for each `i`: `bᵢ ← Z_q`, sends `Bᵢ = bᵢ·G + cᵢ·A` (32 bytes each) and outputs
//!    `k_{cᵢ} = KDF(i, A, Bᵢ, bᵢ·A)`;
//! 3. sender outputs `k₀ = KDF(i, A, Bᵢ, a·Bᵢ)` and `k₁ = KDF(i, A, Bᵢ, a·Bᵢ − a·A)`.
//!
//! `Bᵢ` is uniform whatever `cᵢ` (the sender learns nothing); computing the other key needs
//! `a·bᵢ·G ± a²G`, a CDH instance (the receiver learns nothing about it). **Cost:** 32 + 32n
//! bytes, two flights (sender → receiver → sender); sender 2 + n scalar multiplications,
//! receiver 2n. **Deviations:** the KDF (SHA-256, truncated to 128 bits) hashes the transcript
//! `(i, A, Bᵢ)` with the shared point, the fix recommended after the flaws found in the
//! original proof (Genç, Iovino, Rial 2018; Hauck, Loss 2017); Ristretto removes the cofactor
//! checks of the Curve25519 original; the sender rejects invalid encodings and the receiver
//! rejects `A = identity`. Semi-honest security is what the IKNP setup needs.
//!
//! This is the setup of [`super::iknp`]; it also implements the OT traits directly (slow: about
//! 0.1 ms per OT) for tests and tiny batches.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use super::{OtReceiver, OtSender, ReceiverSink, SenderSink};
use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::transport::Channel;

const POINT_BYTES: usize = 32;

fn random_scalar(rng: &mut ChaCha20Rng) -> Scalar {
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn kdf(index: u64, a: &CompressedRistretto, b: &[u8], shared: &RistrettoPoint) -> Block {
    let digest = Sha256::new()
        .chain_update(b"moat-mpc/chou-orlandi/v1")
        .chain_update(index.to_le_bytes())
        .chain_update(a.as_bytes())
        .chain_update(b)
        .chain_update(shared.compress().as_bytes())
        .finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(out)
}

fn decompress(bytes: &[u8], context: &'static str) -> Result<(CompressedRistretto, RistrettoPoint)> {
    let compressed = CompressedRistretto::from_slice(bytes)
        .map_err(|_| MpcError::peer(context, format!("point of {} bytes", bytes.len())))?;
    let point = compressed.decompress().ok_or_else(|| MpcError::peer(context, "invalid Ristretto encoding"))?;
    Ok((compressed, point))
}

/// The sender of Chou–Orlandi random OT.
#[derive(Debug)]
pub struct ChouOrlandiSender {
    rng: ChaCha20Rng,
    /// OTs done so far: the KDF index, so keys of successive calls never collide.
    counter: u64,
}

impl ChouOrlandiSender {
    /// A sender drawing its randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        Self::from_rng(ChaCha20Rng::seed_from_u64(seed))
    }

    /// A sender drawing its randomness from `rng`.
    pub fn from_rng(rng: ChaCha20Rng) -> Self {
        Self { rng, counter: 0 }
    }
}

impl OtSender for ChouOrlandiSender {
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let a = random_scalar(&mut self.rng);
        let big_a = RistrettoPoint::mul_base(&a);
        let a_compressed = big_a.compress();
        ch.send(a_compressed.as_bytes())?;
        let expected = n
            .checked_mul(POINT_BYTES)
            .ok_or_else(|| MpcError::invalid("chou-orlandi send", format!("{n} OTs overflow a frame")))?;
        let bs = ch.recv_exact(expected)?;
        let a_a = a * big_a;
        let mut out = Vec::with_capacity(n);
        for (i, b_bytes) in bs.chunks_exact(POINT_BYTES).enumerate() {
            let (_, b) = decompress(b_bytes, "chou-orlandi send: receiver's B")?;
            let k0_point = a * b;
            let index = self.counter + i as u64;
            out.push([
                kdf(index, &a_compressed, b_bytes, &k0_point),
                kdf(index, &a_compressed, b_bytes, &(k0_point - a_a)),
            ]);
        }
        self.counter += n as u64;
        sink(0, &out)
    }
}

/// The receiver of Chou–Orlandi random OT.
#[derive(Debug)]
pub struct ChouOrlandiReceiver {
    rng: ChaCha20Rng,
    counter: u64,
}

impl ChouOrlandiReceiver {
    /// A receiver drawing its randomness from `seed`.
    pub fn new(seed: u64) -> Self {
        Self::from_rng(ChaCha20Rng::seed_from_u64(seed))
    }

    /// A receiver drawing its randomness from `rng`.
    pub fn from_rng(rng: ChaCha20Rng) -> Self {
        Self { rng, counter: 0 }
    }
}

impl OtReceiver for ChouOrlandiReceiver {
    fn receive_random_chunks(
        &mut self,
        ch: &mut dyn Channel,
        choices: &BitVec,
        sink: &mut ReceiverSink<'_>,
    ) -> Result<()> {
        let n = choices.len();
        if n == 0 {
            return Ok(());
        }
        let a_bytes = ch.recv_exact(POINT_BYTES)?;
        let (a_compressed, big_a) = decompress(&a_bytes, "chou-orlandi receive: sender's A")?;
        if big_a.is_identity() {
            return Err(MpcError::peer("chou-orlandi receive: sender's A", "identity point"));
        }
        let mut msg = Vec::with_capacity(n * POINT_BYTES);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let b = random_scalar(&mut self.rng);
            let b_g = RistrettoPoint::mul_base(&b);
            // Both candidates are computed whatever the choice.
            let candidates = [b_g, b_g + big_a];
            let b_point = candidates[choices.bit(i) as usize].compress();
            msg.extend_from_slice(b_point.as_bytes());
            out.push(kdf(self.counter + i as u64, &a_compressed, b_point.as_bytes(), &(b * big_a)));
        }
        ch.send(&msg)?;
        ch.flush()?;
        self.counter += n as u64;
        sink(0, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ChannelConfig, TransportError, memory};

    #[test]
    fn random_ot_is_correct_and_other_key_differs() -> Result<()> {
        let (mut a, mut b) = memory::pair(ChannelConfig::default());
        let choices = BitVec::random(64, &mut ChaCha20Rng::seed_from_u64(9));
        let c2 = choices.clone();
        let t = std::thread::spawn(move || ChouOrlandiReceiver::new(2).receive_random(&mut b, &c2));
        let pairs = ChouOrlandiSender::new(1).send_random(&mut a, 64)?;
        let got = t.join().map_err(|_| MpcError::invalid("test", "thread panicked"))??;
        for (i, (p, k)) in pairs.iter().zip(&got).enumerate() {
            assert_eq!(*k, p[choices.bit(i) as usize]);
            assert_ne!(*k, p[1 - choices.bit(i) as usize]);
        }
        // 32-byte A, 64·32-byte Bs, one 4-byte header each.
        assert_eq!(a.stats().total().bytes_sent, 36);
        assert_eq!(a.stats().total().bytes_received, 4 + 64 * 32);
        Ok(())
    }

    #[test]
    fn rejects_bad_points_and_lengths() {
        let (mut a, mut b) = memory::pair(ChannelConfig::default());
        let t = std::thread::spawn(move || {
            b.recv()?;
            b.send(&[0xff; 64])?; // two undecodable points
            b.recv()?;
            b.send(&[0; 10])?; // not 3 points
            Ok::<_, TransportError>(())
        });
        let err = ChouOrlandiSender::new(1).send_random(&mut a, 2);
        assert!(matches!(err, Err(MpcError::PeerMisbehaved { .. })), "{err:?}");
        let err = ChouOrlandiSender::new(1).send_random(&mut a, 3);
        assert_eq!(err, Err(MpcError::Transport(TransportError::LengthMismatch { expected: 96, got: 10 })));
        assert!(matches!(t.join(), Ok(Ok(()))));

        let (mut a, mut b) = memory::pair(ChannelConfig::default());
        let _ = a.send(&[0u8; 32]); // the identity
        let err = ChouOrlandiReceiver::new(1).receive_random(&mut b, &BitVec::zeros(4));
        assert!(matches!(err, Err(MpcError::PeerMisbehaved { .. })), "{err:?}");
        let _ = a.send(&[1u8; 31]); // short
        let err = ChouOrlandiReceiver::new(1).receive_random(&mut b, &BitVec::zeros(4));
        assert!(matches!(err, Err(MpcError::Transport(TransportError::LengthMismatch { .. }))), "{err:?}");
    }
}
