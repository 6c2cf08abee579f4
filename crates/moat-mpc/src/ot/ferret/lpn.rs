//! The local linear code of primal LPN: `y = A·u` with `A` an `n × k` matrix over GF(2) with
//! [`ROW_WEIGHT`] ones per row at public pseudorandom columns.
//!
//! Column indices come from AES-128 in counter mode under a fixed public key (the code is
//! public; only the secret `u` and the noise are private): blocks `5p, …, 5p+4` give 20
//! 32-bit words, the first ten index row `2p`, the next ten row `2p+1`, each scaled to
//! `[0, k)` by a multiply-shift (for a power-of-two `k`, the top `log₂ k` bits). Encoding is
//! a gather: each output block is the XOR of ten input blocks, so the cost is ten random reads
//! into a `16·k`-byte table (4 MB for the main B12 set, 7.2 MB for B13) and 2.5 AES calls per
//! output; rows are split across threads with rayon.
//!
//! The largest CPU cost of a Ferret round. On one core of the benchmark machine (AMD EPYC,
//! 512 KB L2 per core), alone: 19.8 ns per output with B12's table, 27.1 ns with B13's; the
//! indices alone take ≈ 14 ns. With both parties running, the reads (larger than a core's
//! L2, bound by memory latency) compete for the shared L3 and dominate. Software prefetching
//! a few rows ahead measured slower, and so did sorting a batch's reads by table segment to
//! keep them in L2 (the scatter into the outputs costs more than the misses it saves);
//! computing a batch's indices before its reads lets the core keep more reads in flight.

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use rayon::prelude::*;

use crate::Block;

/// Ones per row of `A` (emp-ot and Ferret use 10).
pub const ROW_WEIGHT: usize = 10;
/// Rows per AES batch (even: rows are indexed in pairs).
const ROWS: usize = 32;
/// AES blocks per pair of rows: 20 words for 2 × [`ROW_WEIGHT`] indices.
const BLOCKS_PER_PAIR: usize = 5;
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

    /// `out[i] ^= ⊕_{j} input[col(i, j)]` for rows `first_row ..` (`input.len()` = `k`,
    /// `first_row` even).
    fn encode_rows(&self, first_row: usize, input: &[Block], out: &mut [Block]) {
        debug_assert_eq!(first_row % 2, 0);
        let k = self.k as u64;
        let col = |word: u128| ((word as u32 as u64 * k) >> 32) as u32;
        let mut buf = [aes::Block::default(); BLOCKS_PER_PAIR * ROWS / 2];
        // The batch's column indices, row after row: the 32-bit words of the AES blocks in order.
        let mut cols = [0u32; ROW_WEIGHT * ROWS];
        for (c, rows) in out.chunks_mut(ROWS).enumerate() {
            let pair0 = ((first_row + c * ROWS) / 2) as u128;
            let buf = &mut buf[..BLOCKS_PER_PAIR * rows.len().div_ceil(2)];
            for (t, b) in buf.iter_mut().enumerate() {
                *b = (BLOCKS_PER_PAIR as u128 * pair0 + t as u128).to_le_bytes().into();
            }
            self.prp.encrypt_blocks(buf);
            for (w, b) in cols.chunks_exact_mut(4).zip(buf.iter()) {
                let x = u128::from_le_bytes((*b).into());
                w.copy_from_slice(&[col(x), col(x >> 32), col(x >> 64), col(x >> 96)]);
            }
            for (o, row_cols) in rows.iter_mut().zip(cols.chunks_exact(ROW_WEIGHT)) {
                *o = row_cols.iter().fold(*o, |acc, &col| acc ^ input[col as usize]);
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

    /// The code is the module doc's: row `r`'s columns are the ten 32-bit little-endian words
    /// `10·(r mod 2) ..` of AES blocks `5⌊r/2⌋ .. 5⌊r/2⌋ + 4`, each scaled by `k/2^32`.
    #[test]
    fn encode_follows_the_documented_code() {
        let (k, n) = (1000usize, 777usize);
        let code = LpnCode::new(k, 11);
        let input: Vec<Block> =
            (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834) ^ i).collect();
        let mut out = vec![0u128; n];
        code.encode(&input, &mut out);
        for r in 0..n {
            let mut want = 0u128;
            for j in 0..ROW_WEIGHT {
                let w = ROW_WEIGHT * (r % 2) + j;
                let mut block = aes::Block::from(((BLOCKS_PER_PAIR * (r / 2) + w / 4) as u128).to_le_bytes());
                code.prp.encrypt_block(&mut block);
                let word = u32::from_le_bytes([
                    block[4 * (w % 4)],
                    block[4 * (w % 4) + 1],
                    block[4 * (w % 4) + 2],
                    block[4 * (w % 4) + 3],
                ]);
                want ^= input[((word as u64 * k as u64) >> 32) as usize];
            }
            assert_eq!(out[r], want, "row {r}");
        }
    }

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
