//! Bit-sliced helpers: a *plane* is `n` bits packed in `⌈n/64⌉` words (bit `i` in word
//! `i / 64`, position `i % 64`, padding bits zero), one bit per element of a batch, so a gate
//! over a whole layer is a handful of word operations. Also a streaming bit writer and the
//! framing of large packed messages.

use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::transport::{Channel, TransportError};

/// Largest frame the protocols send; longer messages go out as several frames of one flight.
pub(crate) const MAX_FRAME_BYTES: usize = 16 << 20;

/// Words of a plane of `n` bits.
#[inline]
pub(crate) fn words_for(n: usize) -> usize {
    n.div_ceil(64)
}

/// Mask of the valid bits of the last word of an `n`-bit plane.
#[inline]
fn last_mask(n: usize) -> u64 {
    match n % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

/// Clears the padding bits of an `n`-bit plane.
pub(crate) fn clear_padding(plane: &mut [u64], n: usize) {
    if let Some(last) = plane.last_mut() {
        *last &= last_mask(n);
    }
}

/// True when the bits of `words` beyond the first `bits` are zero (a well-formed message).
pub(crate) fn padding_is_clear(words: &[u64], bits: usize) -> bool {
    bits.is_multiple_of(64) || words.get(bits / 64).is_none_or(|&w| w >> (bits % 64) == 0)
}

/// [`padding_is_clear`] as the error a peer's message gets.
fn require_clear_padding(words: &[u64], bits: usize) -> Result<()> {
    if padding_is_clear(words, bits) {
        Ok(())
    } else {
        Err(MpcError::Transport(TransportError::Malformed { detail: format!("nonzero padding after {bits} bits") }))
    }
}

/// Words from little-endian bytes (a partial last word is zero-extended).
fn le_words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

/// Writes bytes `range` of the little-endian form of `words` over `buf`.
fn put_le_bytes(buf: &mut Vec<u8>, words: &[u64], range: std::ops::Range<usize>) {
    buf.clear();
    for w in words.get(range.start / 8..range.end.div_ceil(8)).unwrap_or_default() {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    buf.drain(..range.start % 8);
    buf.truncate(range.len());
}

/// Bit `pos` of a packed word stream (0 beyond its end).
#[inline]
pub(crate) fn bit_at(words: &[u64], pos: usize) -> u64 {
    words.get(pos / 64).map_or(0, |w| (w >> (pos % 64)) & 1)
}

/// The `n ≤ 64` bits of a packed word stream starting at bit `pos` (0 beyond its end).
#[inline]
pub(crate) fn bits_at(words: &[u64], pos: usize, n: u32) -> u64 {
    let (w, shift) = (pos / 64, (pos % 64) as u32);
    let lo = words.get(w).copied().unwrap_or(0) >> shift;
    let v = if shift + n > 64 { lo | (words.get(w + 1).copied().unwrap_or(0) << (64 - shift)) } else { lo };
    if n >= 64 { v } else { v & ((1u64 << n) - 1) }
}

/// `a ⊕ b`, word-wise (the shorter length wins; callers pass equal lengths).
pub(crate) fn xor(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// `a ⊕= b`.
pub(crate) fn xor_assign(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// The bits `start..start + len` of a packed stream, as a plane.
pub(crate) fn extract(words: &[u64], start: usize, len: usize) -> Vec<u64> {
    let (w0, shift) = (start / 64, start % 64);
    let mut out: Vec<u64> = (0..words_for(len))
        .map(|k| {
            let lo = words.get(w0 + k).copied().unwrap_or(0);
            if shift == 0 {
                lo
            } else {
                let hi = words.get(w0 + k + 1).copied().unwrap_or(0);
                (lo >> shift) | (hi << (64 - shift))
            }
        })
        .collect();
    clear_padding(&mut out, len);
    out
}

/// A plane as a [`BitVec`].
pub(crate) fn to_bitvec(plane: Vec<u64>, n: usize) -> Result<BitVec> {
    BitVec::from_words(plane, n).ok_or_else(|| MpcError::invalid("planes", format!("plane too short for {n} bits")))
}

/// Appends the `⌈n/8⌉` wire bytes of an `n`-bit plane.
pub(crate) fn append_bytes(out: &mut Vec<u8>, plane: &[u64], n: usize) {
    let bytes = n.div_ceil(8);
    let start = out.len();
    for w in plane {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.truncate(start + bytes);
}

/// Reads an `n`-bit plane from `bytes` at `*offset` (advanced); padding bits must be zero.
pub(crate) fn read_plane(bytes: &[u8], offset: &mut usize, n: usize) -> Result<Vec<u64>> {
    let len = n.div_ceil(8);
    let chunk = bytes.get(*offset..*offset + len).ok_or_else(|| {
        MpcError::Transport(TransportError::LengthMismatch { expected: *offset + len, got: bytes.len() })
    })?;
    *offset += len;
    let mut plane = vec![0u64; words_for(n)];
    for (w, x) in plane.iter_mut().zip(le_words(chunk)) {
        *w = x;
    }
    require_clear_padding(&plane, n)?;
    Ok(plane)
}

/// Streams bits into packed words, least significant first.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    words: Vec<u64>,
    acc: u128,
    filled: u32,
}

impl BitWriter {
    /// A writer with room for `bits` bits.
    pub(crate) fn with_capacity(bits: usize) -> Self {
        Self { words: Vec::with_capacity(words_for(bits) + 1), acc: 0, filled: 0 }
    }

    /// Appends the low `n ≤ 64` bits of `value` (higher bits must be zero).
    #[inline]
    pub(crate) fn push(&mut self, value: u64, n: u32) {
        debug_assert!(n == 64 || value >> n == 0);
        self.acc |= (value as u128) << self.filled;
        self.filled += n;
        if self.filled >= 64 {
            self.words.push(self.acc as u64);
            self.acc >>= 64;
            self.filled -= 64;
        }
    }

    /// Appends the low `n ≤ 128` bits of `value` (higher bits must be zero).
    #[inline]
    pub(crate) fn push_wide(&mut self, value: u128, n: u32) {
        if n > 64 {
            self.push(value as u64, 64);
            self.push((value >> 64) as u64, n - 64);
        } else {
            self.push(value as u64, n);
        }
    }

    /// The whole words written so far (the partial word is not among them).
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// Forgets the whole words written so far, keeping the partial one and the buffer.
    pub(crate) fn clear_words(&mut self) {
        self.words.clear();
    }

    /// Room for `bits` more bits without reallocating.
    pub(crate) fn reserve(&mut self, bits: usize) {
        self.words.reserve(bits / 64 + 1);
    }

    /// The packed words (padding zero).
    pub(crate) fn finish(mut self) -> Vec<u64> {
        if self.filled > 0 {
            self.words.push(self.acc as u64);
        }
        self.words
    }
}

/// Sends the first `bits` bits of `words` as `⌈bits/8⌉` little-endian bytes, in frames of at
/// most [`MAX_FRAME_BYTES`] (one flight; no copy of the whole message is made).
pub(crate) fn send_words(ch: &mut dyn Channel, words: &[u64], bits: usize) -> Result<()> {
    let total = bits.div_ceil(8);
    if total == 0 {
        ch.send(&[])?;
        return Ok(());
    }
    let mut buf = Vec::with_capacity(MAX_FRAME_BYTES.min(total));
    for start in (0..total).step_by(MAX_FRAME_BYTES) {
        put_le_bytes(&mut buf, words, start..(start + MAX_FRAME_BYTES).min(total));
        ch.send(&buf)?;
    }
    Ok(())
}

/// Receives what [`send_words`] sent for `bits` bits; the padding bits must be zero.
pub(crate) fn recv_words(ch: &mut dyn Channel, bits: usize) -> Result<Vec<u64>> {
    let total = bits.div_ceil(8);
    if total == 0 {
        ch.recv_exact(0)?;
        return Ok(Vec::new());
    }
    let mut words = Vec::with_capacity(words_for(bits));
    let mut got = 0;
    while got < total {
        let frame = ch.recv_exact(MAX_FRAME_BYTES.min(total - got))?;
        got += frame.len();
        words.extend(le_words(&frame));
    }
    require_clear_padding(&words, bits)?;
    Ok(words)
}

/// Both parties at once, piece after piece of a long message: each call sends the first
/// `bits` bits of `words` as [`send_words`] does and receives the peer's `their_bits` bits as
/// [`recv_words`] does, frame pair by frame pair with [`Channel::exchange`] (safe for any
/// size, where a plain send then receive on both sides could fill the socket buffers and wait
/// until the timeout). The buffers are kept from call to call: pieces of megabytes would
/// otherwise touch fresh pages every time, which costs more than the exchange on the
/// benchmark machine.
#[derive(Debug, Default)]
pub(crate) struct WordExchange {
    bytes: Vec<u8>,
    words: Vec<u64>,
}

impl WordExchange {
    /// One piece each way; the peer's words (padding zero), valid until the next call.
    pub(crate) fn exchange(
        &mut self,
        ch: &mut dyn Channel,
        words: &[u64],
        bits: usize,
        their_bits: usize,
    ) -> Result<&[u64]> {
        let (mine, theirs) = (bits.div_ceil(8), their_bits.div_ceil(8));
        let frames = mine.div_ceil(MAX_FRAME_BYTES).max(theirs.div_ceil(MAX_FRAME_BYTES)).max(1);
        let part = |f: usize, len: usize| (f * MAX_FRAME_BYTES).min(len)..((f + 1) * MAX_FRAME_BYTES).min(len);
        self.words.clear();
        // Whole pieces at once: growing by doubling would touch fresh pages on the way.
        self.words.reserve(words_for(their_bits));
        self.bytes.reserve(MAX_FRAME_BYTES.min(mine));
        for f in 0..frames {
            let (send, want) = (part(f, mine), part(f, theirs).len());
            put_le_bytes(&mut self.bytes, words, send);
            let frame = ch.exchange(&self.bytes)?;
            if frame.len() != want {
                return Err(MpcError::Transport(TransportError::LengthMismatch { expected: want, got: frame.len() }));
            }
            self.words.extend(le_words(&frame));
        }
        require_clear_padding(&self.words, their_bits)?;
        Ok(&self.words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_extract_agree_with_bit_positions() {
        let mut w = BitWriter::with_capacity(0);
        let mut expect = Vec::new();
        for i in 0..300u64 {
            let n = (i % 7 + 1) as u32;
            let v = (i * 0x9E37) & ((1 << n) - 1);
            w.push(v, n);
            for b in 0..n {
                expect.push((v >> b) & 1);
            }
        }
        w.push_wide((3u128 << 100) | 5, 128);
        for b in 0..128 {
            expect.push((((3u128 << 100) | 5) >> b) as u64 & 1);
        }
        let words = w.finish();
        assert_eq!(words.len(), words_for(expect.len()));
        for (pos, &e) in expect.iter().enumerate() {
            assert_eq!(bit_at(&words, pos), e, "bit {pos}");
        }
        for (start, len) in [(0, 0), (0, 64), (3, 61), (5, 130), (63, 1), (100, 200)] {
            let plane = extract(&words, start, len);
            assert_eq!(plane.len(), words_for(len));
            for i in 0..len {
                assert_eq!(bit_at(&plane, i), expect[start + i]);
            }
            if len % 64 != 0 {
                assert_eq!(plane.last().map(|l| l >> (len % 64)), Some(0));
            }
        }
    }

    #[test]
    fn long_packed_messages_go_out_in_bounded_frames() -> Result<()> {
        use crate::transport::memory;
        let (mut a, mut b) = memory::pair(Default::default());
        // 2.5 frames of words, and a bit count that ends inside the last word.
        let words: Vec<u64> = (0..(5 * MAX_FRAME_BYTES / 16) as u64).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
        let bits = 64 * words.len() - 3;
        let mut sent = words.clone();
        clear_padding(&mut sent, bits);
        send_words(&mut a, &sent, bits)?;
        assert_eq!(a.stats().total().frames_sent, 3);
        assert_eq!(recv_words(&mut b, bits)?, sent);
        // Nonzero padding is refused; so is a short message.
        send_words(&mut a, &[u64::MAX], 60)?;
        assert!(recv_words(&mut b, 60).is_err());
        send_words(&mut a, &[1], 8)?;
        assert!(recv_words(&mut b, 16).is_err());
        Ok(())
    }

    /// Both directions of [`WordExchange::exchange`] at their own lengths (here 1.5 frames against
    /// 67 bits), the same frames as [`send_words`] / [`recv_words`]; a peer's short frame or
    /// nonzero padding is an error.
    #[test]
    fn exchanged_words_are_framed_and_checked_like_sent_ones() -> Result<()> {
        use crate::transport::memory;
        let (mut a, mut b) = memory::pair(Default::default());
        let mine: Vec<u64> = (0..(3 * MAX_FRAME_BYTES / 16) as u64).map(|i| i.wrapping_mul(0x9E37_79B9)).collect();
        let theirs = vec![0xabcd_u64, 0b111];
        // The peer's frames, queued ahead (a memory channel buffers): 9 bytes, then none.
        let mut bytes: Vec<u8> = theirs.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(9);
        b.send(&bytes)?;
        b.send(&[])?;
        let mut x = WordExchange::default();
        assert_eq!(x.exchange(&mut a, &mine, 64 * mine.len(), 67)?, theirs);
        assert_eq!(recv_words(&mut b, 64 * mine.len())?, mine);
        b.send(&[1; 8])?;
        assert!(matches!(
            x.exchange(&mut a, &[], 0, 67),
            Err(MpcError::Transport(TransportError::LengthMismatch { expected: 9, got: 8 }))
        ));
        b.send(&[0xff; 9])?;
        assert!(matches!(x.exchange(&mut a, &[], 0, 67), Err(MpcError::Transport(TransportError::Malformed { .. }))));
        Ok(())
    }

    #[test]
    fn planes_round_trip_through_bytes() -> Result<()> {
        let plane = extract(&[u64::MAX, 0x1234], 0, 70);
        let mut bytes = Vec::new();
        append_bytes(&mut bytes, &plane, 70);
        append_bytes(&mut bytes, &plane, 70);
        assert_eq!(bytes.len(), 18);
        let mut off = 0;
        assert_eq!(read_plane(&bytes, &mut off, 70)?, plane);
        assert_eq!(read_plane(&bytes, &mut off, 70)?, plane);
        assert!(read_plane(&bytes, &mut off, 1).is_err());
        let dirty = [0xffu8];
        assert!(read_plane(&dirty, &mut 0, 3).is_err());
        Ok(())
    }
}
