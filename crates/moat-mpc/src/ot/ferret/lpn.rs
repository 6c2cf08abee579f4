//! The local linear code of primal LPN: `y = A·u` with `A` an `n × k` matrix over GF(2) with
//! [`ROW_WEIGHT`] ones per row at public pseudorandom columns.
//!
//! Column indices of row `i` come from AES-128 in counter mode under a fixed public key
//! (the code is public; only the secret `u` and the noise are private): blocks
//! `3i, 3i+1, 3i+2` give 12 32-bit words, the first ten are scaled to `[0, k)` by a
//! multiply-shift. Encoding is a gather: each output block is the XOR of ten input blocks,
//! so the cost is ten random reads into a `16·k`-byte table (7 MB for the main set) and
//! 3 AES calls per output; rows are split across threads with rayon.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use rayon::prelude::*;

use crate::Block;

/// Ones per row of `A` (emp-ot and Ferret use 10).
pub const ROW_WEIGHT: usize = 10;
/// Rows per AES batch.
const ROWS: usize = 32;
/// Rows per parallel task.
const TASK_ROWS: usize = 1 << 14;

/// The public code of one LPN instance.
#[derive(Clone)]
pub struct LpnCode {
    prp: Aes128,
    k: usize,
}

impl std::fmt::Debug for LpnCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LpnCode").field("k", &self.k).finish_non_exhaustive()
    }
}

impl LpnCode {
    /// The code with `k` columns and public key `key` (one key per parameter stage).
    pub fn new(k: usize, key: u128) -> Self {
        Self { prp: Aes128::new(&key.to_le_bytes().into()), k }
    }

    /// `out[i] ^= ⊕_{j} input[col(i, j)]` for rows `first_row ..` (`input.len()` = `k`).
    fn encode_rows(&self, first_row: usize, input: &[Block], out: &mut [Block]) {
        let k = self.k as u64;
        let mut buf = [aes::Block::default(); 3 * ROWS];
        for (c, rows) in out.chunks_mut(ROWS).enumerate() {
            let row0 = (first_row + c * ROWS) as u128;
            let buf = &mut buf[..3 * rows.len()];
            for (t, b) in buf.iter_mut().enumerate() {
                *b = (3 * row0 + t as u128).to_le_bytes().into();
            }
            self.prp.encrypt_blocks(buf);
            for (r, o) in rows.iter_mut().enumerate() {
                let mut words = [0u32; 12];
                for (w3, b) in words.chunks_exact_mut(4).zip(&buf[3 * r..3 * r + 3]) {
                    for (w, bytes) in w3.iter_mut().zip(b.chunks_exact(4)) {
                        *w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    }
                }
                let mut acc = *o;
                for &w in &words[..ROW_WEIGHT] {
                    let col = ((w as u64 * k) >> 32) as usize;
                    acc ^= input[col];
                }
                *o = acc;
            }
        }
    }

    /// `out ^= A·input` over all rows of `out`, in parallel.
    pub fn encode(&self, input: &[Block], out: &mut [Block]) {
        debug_assert_eq!(input.len(), self.k);
        out.par_chunks_mut(TASK_ROWS).enumerate().for_each(|(t, chunk)| self.encode_rows(t * TASK_ROWS, input, chunk));
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;

    #[test]
    fn encode_is_linear_and_uses_the_whole_input() {
        let k = 1000;
        let code = LpnCode::new(k, 7);
        let a: Vec<Block> = (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834)).collect();
        let b: Vec<Block> = (0..k as u128).map(|i| i.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 5).collect();
        let ab: Vec<Block> = a.iter().zip(&b).map(|(x, y)| x ^ y).collect();
        let n = 50_000;
        let (mut ya, mut yb, mut yab) = (vec![0u128; n], vec![0u128; n], vec![0u128; n]);
        code.encode(&a, &mut ya);
        code.encode(&b, &mut yb);
        code.encode(&ab, &mut yab);
        for i in 0..n {
            assert_eq!(ya[i] ^ yb[i], yab[i]);
        }
        // One-hot inputs: every column is used by some row, each row has ≤ 10 ones.
        let mut used = vec![false; k];
        let mut unit = vec![0u128; k];
        for col in 0..k {
            unit[col] = 1;
            let mut y = vec![0u128; 5000];
            code.encode(&unit, &mut y);
            used[col] = y.iter().any(|&v| v != 0);
            unit[col] = 0;
        }
        assert!(used.iter().all(|&u| u));
    }
}
