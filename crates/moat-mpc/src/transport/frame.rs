//! Wire format: frames and the bit-packed encoding of ring elements.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload. Ring elements of
//! ℓ bits are packed back to back, least significant bit first, into `⌈n·ℓ/8⌉` bytes (37-bit
//! elements take 42 % less room than `u64`s); the padding bits of the last byte must be zero.

use super::TransportError;

/// Bytes of the frame header (the `u32` payload length).
pub const HEADER_LEN: usize = 4;

/// Encodes a frame header for a payload of `len` bytes, checking it against `max`.
pub fn encode_header(len: usize, max: usize) -> Result<[u8; HEADER_LEN], TransportError> {
    if len > max {
        return Err(TransportError::FrameTooLarge { len: len as u64, max });
    }
    let len32 = u32::try_from(len).map_err(|_| TransportError::FrameTooLarge { len: len as u64, max })?;
    Ok(len32.to_le_bytes())
}

/// Decodes a frame header, rejecting lengths above `max` before anything is allocated.
pub fn decode_header(header: [u8; HEADER_LEN], max: usize) -> Result<usize, TransportError> {
    let len = u32::from_le_bytes(header) as u64;
    if len > max as u64 {
        return Err(TransportError::FrameTooLarge { len, max });
    }
    Ok(len as usize)
}

/// Bytes taken by `n` packed elements of `bits` bits, or `None` on overflow.
pub fn packed_len(n: usize, bits: u32) -> Option<usize> {
    n.checked_mul(bits as usize).map(|b| b.div_ceil(8))
}

fn check_bits(bits: u32) -> Result<(), TransportError> {
    if (1..=64).contains(&bits) {
        Ok(())
    } else {
        Err(TransportError::InvalidArgument { detail: format!("ring bit width {bits} not in 1..=64") })
    }
}

fn mask(bits: u32) -> u64 {
    if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// Packs `values` reduced mod 2^`bits` into `⌈n·bits/8⌉` bytes (`bits` in 1..=64).
pub fn pack_ring(values: &[u64], bits: u32) -> Result<Vec<u8>, TransportError> {
    check_bits(bits)?;
    if bits == 64 {
        let mut out = Vec::with_capacity(8 * values.len());
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        return Ok(out);
    }
    let mut packer = RingPacker::new(bits, values.len())?;
    for &v in values {
        packer.push(v);
    }
    Ok(packer.finish())
}

/// An incremental [`pack_ring`]: push elements one by one, then take the bytes.
#[derive(Debug)]
pub struct RingPacker {
    bits: u32,
    mask: u64,
    acc: u128,
    filled: u32,
    out: Vec<u8>,
}

impl RingPacker {
    /// A packer of `bits`-bit elements (`bits` in 1..=64), with room reserved for `capacity`.
    pub fn new(bits: u32, capacity: usize) -> Result<Self, TransportError> {
        check_bits(bits)?;
        let bytes = packed_len(capacity, bits).unwrap_or(0);
        Ok(Self { bits, mask: mask(bits), acc: 0, filled: 0, out: Vec::with_capacity(bytes + 8) })
    }

    /// Appends `value mod 2^bits`.
    #[inline]
    pub fn push(&mut self, value: u64) {
        self.acc |= ((value & self.mask) as u128) << self.filled;
        self.filled += self.bits;
        if self.filled >= 64 {
            self.out.extend_from_slice(&(self.acc as u64).to_le_bytes());
            self.acc >>= 64;
            self.filled -= 64;
        }
    }

    /// The packed bytes (`⌈pushed·bits/8⌉`).
    pub fn finish(mut self) -> Vec<u8> {
        let tail = self.filled.div_ceil(8) as usize;
        self.out.extend_from_slice(&(self.acc as u64).to_le_bytes()[..tail]);
        self.out
    }
}

/// Unpacks exactly `n` elements of `bits` bits; the byte count must be exact and the padding
/// bits zero, else [`TransportError::Malformed`].
pub fn unpack_ring(bytes: &[u8], n: usize, bits: u32) -> Result<Vec<u64>, TransportError> {
    check_bits(bits)?;
    let expected = packed_len(n, bits)
        .ok_or_else(|| TransportError::InvalidArgument { detail: "packed length overflows".into() })?;
    if bytes.len() != expected {
        return Err(TransportError::LengthMismatch { expected, got: bytes.len() });
    }
    let mut out = Vec::with_capacity(n);
    if bits == 64 {
        out.extend(bytes.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        }));
        return Ok(out);
    }
    let m = mask(bits);
    let mut acc: u128 = 0;
    let mut filled = 0u32;
    let mut chunks = bytes.chunks(8);
    for _ in 0..n {
        if filled < bits {
            let chunk = chunks.next().unwrap_or(&[]);
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            acc |= (u64::from_le_bytes(b) as u128) << filled;
            filled += 8 * chunk.len() as u32;
        }
        out.push(acc as u64 & m);
        acc >>= bits;
        filled = filled
            .checked_sub(bits)
            .ok_or_else(|| TransportError::Malformed { detail: "packed ring data ends early".into() })?;
    }
    if acc != 0 || chunks.next().is_some() {
        return Err(TransportError::Malformed {
            detail: format!("nonzero padding after {n} packed {bits}-bit elements"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_rejects_oversized_lengths() {
        assert_eq!(decode_header(10u32.to_le_bytes(), 10), Ok(10));
        assert_eq!(
            decode_header(u32::MAX.to_le_bytes(), 1 << 20),
            Err(TransportError::FrameTooLarge { len: u32::MAX as u64, max: 1 << 20 })
        );
        assert!(encode_header(11, 10).is_err());
    }

    #[test]
    fn thirty_seven_bit_packing_saves_bytes() -> Result<(), TransportError> {
        let v: Vec<u64> = (0..1000).map(|i| (i * 0x1_2345_6789) & ((1 << 37) - 1)).collect();
        let bytes = pack_ring(&v, 37)?;
        assert_eq!(bytes.len(), 4625); // ⌈37000/8⌉ vs 8000 for u64s
        assert_eq!(unpack_ring(&bytes, 1000, 37)?, v);
        Ok(())
    }

    #[test]
    fn rejects_bad_lengths_and_padding() -> Result<(), TransportError> {
        let bytes = pack_ring(&[5, 6, 7], 3)?; // 9 bits -> 2 bytes
        assert_eq!(bytes.len(), 2);
        assert!(matches!(unpack_ring(&bytes, 6, 3), Err(TransportError::LengthMismatch { expected: 3, got: 2 })));
        assert!(matches!(unpack_ring(&[0xff, 0xff], 3, 3), Err(TransportError::Malformed { .. })));
        assert!(matches!(pack_ring(&[1], 0), Err(TransportError::InvalidArgument { .. })));
        assert!(matches!(unpack_ring(&[], 1, 65), Err(TransportError::InvalidArgument { .. })));
        Ok(())
    }

    proptest! {
        #[test]
        fn pack_round_trips(values in proptest::collection::vec(any::<u64>(), 0..200), bits in 1u32..=64) {
            let bytes = pack_ring(&values, bits).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(Some(bytes.len()), packed_len(values.len(), bits));
            let back = unpack_ring(&bytes, values.len(), bits).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let reduced: Vec<u64> = values.iter().map(|v| v & mask(bits)).collect();
            prop_assert_eq!(back, reduced);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100), n in 0usize..40, bits in 0u32..=70) {
            if let Ok(v) = unpack_ring(&bytes, n, bits) {
                prop_assert_eq!(v.len(), n);
                prop_assert_eq!(pack_ring(&v, bits).ok(), Some(bytes));
            }
        }
    }
}
