//! Symmetric primitives of OT extension: a fixed-key AES correlation-robust hash, an AES-CTR
//! PRG, and the 128×128 bit-matrix transpose.
//!
//! **Hash.** `H(x) = π(σ(x)) ⊕ σ(x)` with `π` = AES-128 under a fixed public key and
//! `σ(x_L ‖ x_R) = (x_L ⊕ x_R) ‖ x_L` (a linear orthomorphism). Guo, Katz, Wang, Yu (S&P 2020,
//! "Efficient and Secure Multiparty Computation from Fixed-Key Block Ciphers") prove this
//! *circular* correlation robust in the ideal-permutation model, which is more than the
//! correlation robustness semi-honest IKNP needs (`H(tᵢ ⊕ s)` pseudorandom for a secret `s`).
//! One AES call per hash; batches go through AES-NI's pipelined multi-block path.
//!
//! **PRG.** `G(k)[i] = AES_k(i)` (CTR mode, counter = block index). Keys are the base-OT
//! outputs, so each column of the IKNP matrix has its own key schedule.
//!
//! AES comes from RustCrypto's `aes` 0.8 (run-time AES-NI detection, constant-time software
//! fallback); 0.8 is the stable line and already in this workspace's lock file.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};

use crate::Block;

/// Blocks encrypted per AES call (fills the AES-NI pipeline, stays on the stack).
const BATCH: usize = 32;

/// The fixed AES key of the hash: the first 128 bits of π's fraction (nothing up the sleeve).
const FIXED_KEY: u128 = 0x243F_6A88_85A3_08D3_1319_8A2E_0370_7344;

fn cipher(key: Block) -> Aes128 {
    Aes128::new(&key.to_le_bytes().into())
}

/// `σ(x_L ‖ x_R) = (x_L ⊕ x_R) ‖ x_L`.
#[inline(always)]
fn sigma(x: Block) -> Block {
    let hi = (x >> 64) as u64;
    let lo = x as u64;
    (((hi ^ lo) as u128) << 64) | hi as u128
}

fn encrypt_in_place(cipher: &Aes128, xs: &mut [Block]) {
    let mut buf = [aes::Block::default(); BATCH];
    for chunk in xs.chunks_mut(BATCH) {
        let buf = &mut buf[..chunk.len()];
        for (b, x) in buf.iter_mut().zip(chunk.iter()) {
            *b = x.to_le_bytes().into();
        }
        cipher.encrypt_blocks(buf);
        for (b, x) in buf.iter().zip(chunk.iter_mut()) {
            *x = u128::from_le_bytes((*b).into());
        }
    }
}

/// The circular-correlation-robust hash `H(x) = π(σ(x)) ⊕ σ(x)` under a fixed AES key.
#[derive(Clone)]
pub struct CrHash {
    cipher: Aes128,
}

impl Default for CrHash {
    fn default() -> Self {
        Self { cipher: cipher(FIXED_KEY) }
    }
}

impl std::fmt::Debug for CrHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrHash")
    }
}

impl CrHash {
    /// The hash with moat's fixed key.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same construction under another fixed public key (domain separation between uses).
    pub fn with_key(key: Block) -> Self {
        Self { cipher: cipher(key) }
    }

    /// `H(x)`.
    pub fn hash(&self, x: Block) -> Block {
        let mut v = [x];
        self.hash_in_place(&mut v);
        v[0]
    }

    /// `xs[i] ← H(xs[i])`, batched.
    pub fn hash_in_place(&self, xs: &mut [Block]) {
        let mut buf = [aes::Block::default(); BATCH];
        let mut sig = [0u128; BATCH];
        for chunk in xs.chunks_mut(BATCH) {
            let n = chunk.len();
            for ((b, s), x) in buf.iter_mut().zip(sig.iter_mut()).zip(chunk.iter()) {
                *s = sigma(*x);
                *b = s.to_le_bytes().into();
            }
            self.cipher.encrypt_blocks(&mut buf[..n]);
            for ((b, s), x) in buf.iter().zip(sig.iter()).zip(chunk.iter_mut()) {
                *x = u128::from_le_bytes((*b).into()) ^ s;
            }
        }
    }
}

/// AES-CTR expansion of a 128-bit seed.
#[derive(Clone)]
pub struct AesPrg {
    cipher: Aes128,
}

impl std::fmt::Debug for AesPrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesPrg")
    }
}

impl AesPrg {
    /// The PRG of `seed`.
    pub fn new(seed: Block) -> Self {
        Self { cipher: cipher(seed) }
    }

    /// `out[i] = AES_seed(counter + i)`.
    pub fn fill(&self, counter: u64, out: &mut [Block]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = counter as u128 + i as u128;
        }
        encrypt_in_place(&self.cipher, out);
    }
}

/// Swap levels of the recursive transpose within one 64-bit half: bits whose index has bit
/// `s` clear.
const TRANSPOSE_MASKS: [(usize, u64); 6] = [
    (32, 0x0000_0000_FFFF_FFFF),
    (16, 0x0000_FFFF_0000_FFFF),
    (8, 0x00FF_00FF_00FF_00FF),
    (4, 0x0F0F_0F0F_0F0F_0F0F),
    (2, 0x3333_3333_3333_3333),
    (1, 0x5555_5555_5555_5555),
];

/// One level `s` of the swap network on a plane of 128 words.
#[inline(always)]
fn transpose_level(plane: &mut [u64; 128], s: usize, mask: u64) {
    for pair in plane.chunks_exact_mut(2 * s) {
        let (upper, lower) = pair.split_at_mut(s);
        for (a, b) in upper.iter_mut().zip(lower.iter_mut()) {
            let t = ((*a >> s) ^ *b) & mask;
            *b ^= t;
            *a ^= t << s;
        }
    }
}

/// Transposes a 128×128 bit matrix in place: afterwards bit `j` of `m[i]` is the old bit `i`
/// of `m[j]`.
///
/// Eklundh's recursive block swap: at level `s` the bits `(i, j)` with bit `s` of `i` clear
/// and of `j` set trade places with `(i + s, j − s)`; after the seven levels every position
/// `(i, j)` has exchanged all differing index bits, i.e. moved to `(j, i)`. Level 64 swaps
/// the high half of row `i` with the low half of row `i + 64`; the six lower levels act on
/// the two 64-bit halves independently, so they run on two planes of `u64` in loops the
/// compiler vectorises. No tables, no `unsafe`.
pub fn transpose128(m: &mut [Block; 128]) {
    let mut lo = [0u64; 128];
    let mut hi = [0u64; 128];
    for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(m.iter()) {
        *l = x as u64;
        *h = (x >> 64) as u64;
    }
    let (hi_top, _) = hi.split_at_mut(64);
    let (_, lo_bottom) = lo.split_at_mut(64);
    hi_top.swap_with_slice(lo_bottom);
    for &(s, mask) in &TRANSPOSE_MASKS {
        transpose_level(&mut lo, s, mask);
        transpose_level(&mut hi, s, mask);
    }
    for ((x, &l), &h) in m.iter_mut().zip(lo.iter()).zip(hi.iter()) {
        *x = l as u128 | ((h as u128) << 64);
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn random_blocks(n: usize, seed: u64) -> Vec<Block> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128).collect()
    }

    #[test]
    fn transpose_matches_naive() {
        let input = random_blocks(128, 3);
        let mut m = [0u128; 128];
        m.copy_from_slice(&input);
        transpose128(&mut m);
        for i in 0..128 {
            for j in 0..128 {
                assert_eq!((m[i] >> j) & 1, (input[j] >> i) & 1, "({i}, {j})");
            }
        }
        transpose128(&mut m);
        assert_eq!(&m[..], &input[..]);
    }

    #[test]
    fn hash_is_deterministic_batched_and_not_linear() {
        let h = CrHash::new();
        let xs = random_blocks(100, 4);
        let mut batch = xs.clone();
        h.hash_in_place(&mut batch);
        for (x, y) in xs.iter().zip(&batch) {
            assert_eq!(h.hash(*x), *y);
            assert_ne!(*x, *y);
        }
        // A correlated pair does not keep its correlation.
        let d = xs[0];
        assert_ne!(h.hash(xs[1]) ^ h.hash(xs[1] ^ d), h.hash(xs[2]) ^ h.hash(xs[2] ^ d));
        // σ is an orthomorphism: σ and σ(x) ⊕ x are both permutations (spot check: no fixed points).
        assert!(xs.iter().all(|&x| sigma(x) != x));
    }

    #[test]
    fn prg_is_counter_mode() {
        let g = AesPrg::new(42);
        let mut a = vec![0u128; 40];
        g.fill(7, &mut a);
        let mut b = vec![0u128; 10];
        g.fill(37, &mut b);
        assert_eq!(&a[30..40], &b[..]);
        let mut c = vec![0u128; 40];
        AesPrg::new(43).fill(7, &mut c);
        assert_ne!(a, c);
    }
}
