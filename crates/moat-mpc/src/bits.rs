//! A packed vector of bits: boolean shares, OT choice bits, comparison results.
//!
//! Bit `i` lives in word `i / 64` at position `i % 64` (least significant first); on the wire a
//! `BitVec` of `n` bits is `⌈n/8⌉` bytes, little-endian, with zero padding in the last byte.

use rand::RngCore;

/// A fixed-length vector of bits packed into `u64` words.
///
/// Invariant: the bits of the last word beyond `len` are zero, so equality, `count_ones` and
/// the wire encoding never see garbage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BitVec {
    words: Vec<u64>,
    len: usize,
}

impl BitVec {
    /// `len` zero bits.
    pub fn zeros(len: usize) -> Self {
        Self { words: vec![0; len.div_ceil(64)], len }
    }

    /// `len` uniformly random bits.
    pub fn random(len: usize, rng: &mut impl RngCore) -> Self {
        let mut words = vec![0u64; len.div_ceil(64)];
        for w in &mut words {
            *w = rng.next_u64();
        }
        let mut v = Self { words, len };
        v.clear_padding();
        v
    }

    /// The bits of a slice of booleans.
    pub fn from_bools(bits: &[bool]) -> Self {
        let mut v = Self::zeros(bits.len());
        for (i, &b) in bits.iter().enumerate() {
            v.words[i / 64] |= (b as u64) << (i % 64);
        }
        v
    }

    /// The low bits of `values` (bit `i` = `values[i] & 1`).
    pub fn from_lsbs(values: &[u64]) -> Self {
        Self::from_fn(values.len(), |i| values[i] & 1 == 1)
    }

    /// Bit `i` = `f(i)`.
    pub fn from_fn(len: usize, mut f: impl FnMut(usize) -> bool) -> Self {
        // A word at a time: the hot callers (OT choice corrections) build millions of bits.
        let words = (0..len.div_ceil(64))
            .map(|w| {
                let base = 64 * w;
                (base..len.min(base + 64)).fold(0u64, |acc, i| acc | (f(i) as u64) << (i - base))
            })
            .collect();
        Self { words, len }
    }

    /// Words and a length; bits beyond `len` are cleared. `None` if `words` is too short.
    pub fn from_words(mut words: Vec<u64>, len: usize) -> Option<Self> {
        if words.len() < len.div_ceil(64) {
            return None;
        }
        words.truncate(len.div_ceil(64));
        let mut v = Self { words, len };
        v.clear_padding();
        Some(v)
    }

    /// Decodes the wire form: exactly `⌈len/8⌉` bytes with zero padding bits, else `None`.
    pub fn from_bytes(bytes: &[u8], len: usize) -> Option<Self> {
        if bytes.len() != len.div_ceil(8) {
            return None;
        }
        let mut words = vec![0u64; len.div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(buf);
        }
        let v = Self { words, len };
        let padding_clear = match (len % 64, v.words.last()) {
            (0, _) | (_, None) => true,
            (r, Some(&last)) => last >> r == 0,
        };
        padding_clear.then_some(v)
    }

    /// The wire form: `⌈len/8⌉` little-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len.div_ceil(8));
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(self.len.div_ceil(8));
        out
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed words (bit `i` in word `i / 64`, position `i % 64`).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bit `i`; `None` when out of range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<bool> {
        (i < self.len).then(|| (self.words[i / 64] >> (i % 64)) & 1 == 1)
    }

    /// Bit `i` as 0/1; `i` must be in range (checked by the slice index).
    #[inline]
    pub fn bit(&self, i: usize) -> u64 {
        debug_assert!(i < self.len);
        (self.words[i / 64] >> (i % 64)) & 1
    }

    /// Sets bit `i` (ignored when out of range, like writing past a fixed-size register).
    pub fn set(&mut self, i: usize, value: bool) {
        if i < self.len {
            let mask = 1u64 << (i % 64);
            if value {
                self.words[i / 64] |= mask;
            } else {
                self.words[i / 64] &= !mask;
            }
        }
    }

    /// Appends one bit.
    pub fn push(&mut self, value: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        self.words[self.len / 64] |= (value as u64) << (self.len % 64);
        self.len += 1;
    }

    /// The bits as booleans.
    pub fn to_bools(&self) -> Vec<bool> {
        self.iter().collect()
    }

    /// Iterates over the bits.
    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.len).map(move |i| (self.words[i / 64] >> (i % 64)) & 1 == 1)
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `self ⊕ other`; `None` when the lengths differ.
    pub fn xor(&self, other: &Self) -> Option<Self> {
        self.zip_words(other, |a, b| a ^ b)
    }

    /// `self ∧ other`; `None` when the lengths differ.
    pub fn and(&self, other: &Self) -> Option<Self> {
        self.zip_words(other, |a, b| a & b)
    }

    /// `¬self`.
    pub fn not(&self) -> Self {
        let mut v = Self { words: self.words.iter().map(|w| !w).collect(), len: self.len };
        v.clear_padding();
        v
    }

    /// The bits `start..start + len`; `None` when out of range.
    pub fn slice(&self, start: usize, len: usize) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= self.len).then(|| Self::from_fn(len, |i| self.bit(start + i) == 1))
    }

    fn zip_words(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Option<Self> {
        (self.len == other.len).then(|| Self {
            words: self.words.iter().zip(&other.words).map(|(&a, &b)| f(a, b)).collect(),
            len: self.len,
        })
    }

    fn clear_padding(&mut self) {
        let r = self.len % 64;
        if r != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << r) - 1;
        }
    }
}

impl FromIterator<bool> for BitVec {
    fn from_iter<I: IntoIterator<Item = bool>>(iter: I) -> Self {
        let mut v = Self::default();
        for b in iter {
            v.push(b);
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn random_bits_are_balanced_and_padded() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let v = BitVec::random(10_001, &mut rng);
        let ones = v.count_ones();
        assert!((4_700..5_300).contains(&ones), "{ones}");
        assert_eq!(v.words().last().map(|w| w >> (10_001 % 64)), Some(0));
    }

    #[test]
    fn rejects_dirty_padding_and_wrong_length() {
        assert!(BitVec::from_bytes(&[0b0000_0111], 3).is_some());
        assert!(BitVec::from_bytes(&[0b0000_1111], 3).is_none());
        assert!(BitVec::from_bytes(&[0, 0], 3).is_none());
        assert!(BitVec::from_bytes(&[], 0).is_some());
    }

    proptest! {
        #[test]
        fn bytes_round_trip(bits in proptest::collection::vec(any::<bool>(), 0..300)) {
            let v = BitVec::from_bools(&bits);
            let bytes = v.to_bytes();
            prop_assert_eq!(bytes.len(), bits.len().div_ceil(8));
            let back = BitVec::from_bytes(&bytes, bits.len());
            prop_assert_eq!(back.as_ref(), Some(&v));
            prop_assert_eq!(v.to_bools(), bits.clone());
            let pushed: BitVec = bits.iter().copied().collect();
            prop_assert_eq!(pushed, v);
        }

        #[test]
        fn xor_and_not_match_bools(a in proptest::collection::vec(any::<bool>(), 0..200), seed in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let b = BitVec::random(a.len(), &mut rng);
            let va = BitVec::from_bools(&a);
            let x = va.xor(&b).unwrap_or_default();
            let y = va.and(&b).unwrap_or_default();
            for i in 0..a.len() {
                prop_assert_eq!(x.get(i), Some(a[i] ^ (b.bit(i) == 1)));
                prop_assert_eq!(y.get(i), Some(a[i] && (b.bit(i) == 1)));
                prop_assert_eq!(va.not().get(i), Some(!a[i]));
            }
            prop_assert_eq!(va.not().count_ones(), a.len() - va.count_ones());
        }
    }
}
