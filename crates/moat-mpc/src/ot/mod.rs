//! Oblivious transfer behind two traits, [`OtSender`] and [`OtReceiver`].
//!
//! The one required primitive is **random OT with chosen choice bits** (ROT): the sender gets
//! `n` pairs of random blocks `(m₀ⁱ, m₁ⁱ)`, the receiver with choice bits `cᵢ` gets `m_{cᵢ}ⁱ`
//! and nothing about `m_{1−cᵢ}ⁱ`; the sender learns nothing about `c`. Every other flavour is a
//! provided method built on it by derandomisation, so a new OT source (e.g. a silent OT such as
//! Ferret/SoftSpoken producing correlated blocks) only implements the ROT methods — and may
//! override a derived flavour when it can do better natively (correlated OT straight from
//! VOLE, KK13-style 1-of-N):
//!
//! | flavour | sender gets / inputs | receiver gets | extra bytes over the ROTs | flights |
//! |---|---|---|---|---|
//! | [`OtSender::send_random`] | `(m₀, m₁)` random blocks | `m_c` | – | as the ROT |
//! | [`OtSender::send_correlated`] | inputs `Δᵢ`, gets random `xᵢ` | `xᵢ + cᵢ·Δᵢ mod 2^ℓ` | `n·ℓ` bits S→R | ROT + 1 |
//! | [`OtSender::send_chosen`] | inputs `(x₀ⁱ, x₁ⁱ)` of ℓ bits | `x_{cᵢ}ⁱ` | `2n·ℓ` bits S→R | ROT + 1 |
//! | [`OtSender::send_one_of_n`] | inputs `N = 2^k` messages of ℓ bits | the `cᵢ`-th | `k·n` ROTs, `n·N·ℓ` bits S→R | ROT + 1 |
//!
//! With the IKNP extension ([`iknp`]) a ROT costs 16 bytes receiver→sender (plus a 4-byte
//! frame header per 8192 OTs) in one flight, after a one-time base-OT setup ([`base`]).
//! With Ferret silent OT ([`ferret`], bootstrapped by IKNP) a ROT costs 1 bit receiver→sender
//! (the choice derandomisation) plus ≈ 0.05 bytes of the LPN round that produced it.
//!
//! Messages derived from ROT keys use the key's low ℓ bits: ROT outputs are hash outputs
//! (pseudorandom), and each key is used exactly once.
//!
//! **Security.** Semi-honest (passively secure) for both roles. A malformed or wrongly sized
//! message is rejected with an error, never a panic, but a malicious receiver in IKNP can
//! learn sender key bits by sending inconsistent columns (a KOS-style check would be needed).

pub mod base;
pub mod ferret;
pub mod iknp;
pub mod one_of_n;
pub mod prim;

use rand_chacha::ChaCha20Rng;

use crate::Block;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::transport::Channel;
use crate::transport::frame::RingPacker;

/// Receives ROT outputs chunk by chunk: `(offset of the first OT, outputs)`.
pub type SenderSink<'a> = dyn FnMut(usize, &[[Block; 2]]) -> Result<()> + 'a;
/// Receives ROT outputs chunk by chunk: `(offset of the first OT, outputs)`.
pub type ReceiverSink<'a> = dyn FnMut(usize, &[Block]) -> Result<()> + 'a;

fn ring_mask(bits: u32, context: &'static str) -> Result<u64> {
    match bits {
        1..=63 => Ok((1u64 << bits) - 1),
        64 => Ok(u64::MAX),
        _ => Err(MpcError::invalid(context, format!("message width {bits} not in 1..=64"))),
    }
}

/// The sender role of oblivious transfer.
pub trait OtSender {
    /// `n` random OTs, delivered to `sink` in chunks in order (bounded memory for huge `n`).
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()>;

    /// The sender's side of [`OtReceiver::receive_random_choice`] (random OTs whose choice
    /// bits are the receiver's random ones), in chunks as [`Self::send_random_chunks`]. A
    /// silent OT overrides both to skip the choice derandomisation: no message either way.
    fn send_random_choice_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        self.send_random_chunks(ch, n, sink)
    }

    /// Whether [`Self::send_random_choice_chunks`] exchanges no message with the receiver
    /// (a silent OT: only the sender's own refill rounds), so that protocols may order it
    /// freely against other traffic. The receiver's side says the same
    /// ([`OtReceiver::random_choice_is_silent`]).
    fn random_choice_is_silent(&self) -> bool {
        false
    }

    /// How many random OTs this sender can deliver before it next sends a message of its own,
    /// running that message's round first if none are left. A silent OT's sender sends only
    /// its pool's refill rounds; between two of them a protocol may put its own sender →
    /// receiver messages, in the same order on both sides, because the receiver's
    /// [`OtReceiver::ready`] returns the same count (the pools run in step). `None`: the
    /// sender never sends during random OTs (IKNP's receiver does all the talking).
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        let _ = ch;
        Ok(None)
    }

    /// `n` random OTs: the sender's pairs `(m₀, m₁)`.
    fn send_random(&mut self, ch: &mut dyn Channel, n: usize) -> Result<Vec<[Block; 2]>> {
        let mut out = Vec::with_capacity(n);
        self.send_random_chunks(ch, n, &mut |_, chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Correlated OT over Z_2^ℓ: for each `Δᵢ` the sender gets a uniformly random `xᵢ` and
    /// the receiver `xᵢ + cᵢ·Δᵢ`. Sender → receiver: `n·ℓ` bits (`xᵢ = m₀ⁱ`,
    /// `dᵢ = m₁ⁱ − xᵢ − Δᵢ`; the receiver outputs `m_c − c·d`). The receiver learns nothing
    /// about `Δᵢ` beyond `xᵢ + cᵢΔᵢ`; the sender nothing about `cᵢ`.
    fn send_correlated(&mut self, ch: &mut dyn Channel, deltas: &[u64], bits: u32) -> Result<Vec<u64>> {
        let mask = ring_mask(bits, "send_correlated")?;
        let mut x = Vec::with_capacity(deltas.len());
        let mut corrections = RingPacker::new(bits, deltas.len())?;
        self.send_random_chunks(ch, deltas.len(), &mut |offset, chunk| {
            for (k, &d) in chunk.iter().zip(deltas.get(offset..).unwrap_or_default()) {
                let (m0, m1) = (k[0] as u64 & mask, k[1] as u64 & mask);
                x.push(m0);
                corrections.push(m1.wrapping_sub(m0).wrapping_sub(d));
            }
            Ok(())
        })?;
        if !deltas.is_empty() {
            ch.send(&corrections.finish())?;
            ch.flush()?;
        }
        Ok(x)
    }

    /// Chosen-message OT of ℓ-bit messages: the receiver gets `messages[i][cᵢ]` and nothing
    /// about the other; the sender learns nothing. Sender → receiver: `2n·ℓ` bits.
    fn send_chosen(&mut self, ch: &mut dyn Channel, messages: &[[u64; 2]], bits: u32) -> Result<()> {
        ring_mask(bits, "send_chosen")?;
        let mut masked = RingPacker::new(bits, 2 * messages.len())?;
        self.send_random_chunks(ch, messages.len(), &mut |offset, chunk| {
            for (k, m) in chunk.iter().zip(messages.get(offset..).unwrap_or_default()) {
                masked.push(m[0] ^ k[0] as u64);
                masked.push(m[1] ^ k[1] as u64);
            }
            Ok(())
        })?;
        if !messages.is_empty() {
            ch.send(&masked.finish())?;
            ch.flush()?;
        }
        Ok(())
    }

    /// 1-out-of-N OT, `N = 2^log_n` (`log_n` in 1..=8): `messages` holds `n·N` ℓ-bit values,
    /// row `i` = the `N` messages of OT `i`; the receiver gets the one it chose. Built from
    /// `n·log_n` ROTs and `n·N·ℓ` bits sender → receiver; see [`one_of_n`].
    fn send_one_of_n(&mut self, ch: &mut dyn Channel, messages: &[u64], log_n: u32, bits: u32) -> Result<()> {
        one_of_n::send(self, ch, messages, log_n, bits)
    }
}

/// The receiver role of oblivious transfer.
pub trait OtReceiver {
    /// Random OTs with choice bits `choices`, delivered to `sink` in chunks in order.
    fn receive_random_chunks(
        &mut self,
        ch: &mut dyn Channel,
        choices: &BitVec,
        sink: &mut ReceiverSink<'_>,
    ) -> Result<()>;

    /// Random OTs with choice bits `choices`: the receiver's `m_{cᵢ}ⁱ`.
    fn receive_random(&mut self, ch: &mut dyn Channel, choices: &BitVec) -> Result<Vec<Block>> {
        let mut out = Vec::with_capacity(choices.len());
        self.receive_random_chunks(ch, choices, &mut |_, chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Random OTs with random choice bits (drawn from `rng`): `(choices, m_c)`; the sender
    /// runs [`OtSender::send_random_choice_chunks`]. This is the natural output of a silent
    /// OT, which overrides both to skip the choice derandomisation.
    fn receive_random_choice(
        &mut self,
        ch: &mut dyn Channel,
        n: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<(BitVec, Vec<Block>)> {
        let choices = BitVec::random(n, rng);
        let keys = self.receive_random(ch, &choices)?;
        Ok((choices, keys))
    }

    /// Whether [`Self::receive_random_choice`] exchanges no message with the sender (see
    /// [`OtSender::random_choice_is_silent`]).
    fn random_choice_is_silent(&self) -> bool {
        false
    }

    /// How many random OTs this receiver can take before it next reads a message from the
    /// sender, reading that message's round first if none are left: the count of the
    /// sender's [`OtSender::ready`]. `None`: the receiver never reads during random OTs.
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        let _ = ch;
        Ok(None)
    }

    /// The receiver side of [`OtSender::send_correlated`]: `xᵢ + cᵢ·Δᵢ mod 2^ℓ`.
    fn receive_correlated(&mut self, ch: &mut dyn Channel, choices: &BitVec, bits: u32) -> Result<Vec<u64>> {
        let mask = ring_mask(bits, "receive_correlated")?;
        let keys = self.receive_random(ch, choices)?;
        if choices.is_empty() {
            return Ok(Vec::new());
        }
        let corrections = ch.recv_ring(choices.len(), bits)?;
        Ok(keys
            .iter()
            .zip(&corrections)
            .enumerate()
            .map(|(i, (&k, &d))| (k as u64).wrapping_sub(choices.bit(i) * d) & mask)
            .collect())
    }

    /// The receiver side of [`OtSender::send_chosen`]: `messages[i][cᵢ]`.
    fn receive_chosen(&mut self, ch: &mut dyn Channel, choices: &BitVec, bits: u32) -> Result<Vec<u64>> {
        let mask = ring_mask(bits, "receive_chosen")?;
        let keys = self.receive_random(ch, choices)?;
        if choices.is_empty() {
            return Ok(Vec::new());
        }
        let masked = ch.recv_ring(2 * choices.len(), bits)?;
        Ok(keys.iter().enumerate().map(|(i, &k)| (masked[2 * i + choices.bit(i) as usize] ^ k as u64) & mask).collect())
    }

    /// The receiver side of [`OtSender::send_one_of_n`]: `choices[i] < 2^log_n` picks
    /// message `choices[i]` of row `i`.
    fn receive_one_of_n(&mut self, ch: &mut dyn Channel, choices: &[u8], log_n: u32, bits: u32) -> Result<Vec<u64>> {
        one_of_n::receive(self, ch, choices, log_n, bits)
    }
}

impl<T: OtSender + ?Sized> OtSender for &mut T {
    fn send_random_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        (**self).send_random_chunks(ch, n, sink)
    }
    fn send_random_choice_chunks(&mut self, ch: &mut dyn Channel, n: usize, sink: &mut SenderSink<'_>) -> Result<()> {
        (**self).send_random_choice_chunks(ch, n, sink)
    }
    fn random_choice_is_silent(&self) -> bool {
        (**self).random_choice_is_silent()
    }
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        (**self).ready(ch)
    }
    fn send_random(&mut self, ch: &mut dyn Channel, n: usize) -> Result<Vec<[Block; 2]>> {
        (**self).send_random(ch, n)
    }
    fn send_correlated(&mut self, ch: &mut dyn Channel, deltas: &[u64], bits: u32) -> Result<Vec<u64>> {
        (**self).send_correlated(ch, deltas, bits)
    }
    fn send_chosen(&mut self, ch: &mut dyn Channel, messages: &[[u64; 2]], bits: u32) -> Result<()> {
        (**self).send_chosen(ch, messages, bits)
    }
    fn send_one_of_n(&mut self, ch: &mut dyn Channel, messages: &[u64], log_n: u32, bits: u32) -> Result<()> {
        (**self).send_one_of_n(ch, messages, log_n, bits)
    }
}

impl<T: OtReceiver + ?Sized> OtReceiver for &mut T {
    fn receive_random_chunks(
        &mut self,
        ch: &mut dyn Channel,
        choices: &BitVec,
        sink: &mut ReceiverSink<'_>,
    ) -> Result<()> {
        (**self).receive_random_chunks(ch, choices, sink)
    }
    fn receive_random(&mut self, ch: &mut dyn Channel, choices: &BitVec) -> Result<Vec<Block>> {
        (**self).receive_random(ch, choices)
    }
    fn receive_random_choice(
        &mut self,
        ch: &mut dyn Channel,
        n: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<(BitVec, Vec<Block>)> {
        (**self).receive_random_choice(ch, n, rng)
    }
    fn random_choice_is_silent(&self) -> bool {
        (**self).random_choice_is_silent()
    }
    fn ready(&mut self, ch: &mut dyn Channel) -> Result<Option<usize>> {
        (**self).ready(ch)
    }
    fn receive_correlated(&mut self, ch: &mut dyn Channel, choices: &BitVec, bits: u32) -> Result<Vec<u64>> {
        (**self).receive_correlated(ch, choices, bits)
    }
    fn receive_chosen(&mut self, ch: &mut dyn Channel, choices: &BitVec, bits: u32) -> Result<Vec<u64>> {
        (**self).receive_chosen(ch, choices, bits)
    }
    fn receive_one_of_n(&mut self, ch: &mut dyn Channel, choices: &[u8], log_n: u32, bits: u32) -> Result<Vec<u64>> {
        (**self).receive_one_of_n(ch, choices, log_n, bits)
    }
}
