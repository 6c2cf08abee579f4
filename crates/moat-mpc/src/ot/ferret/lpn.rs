//! The local linear code of primal LPN: `y = A·u` with `A` an `n × k` matrix over GF(2) with
//! [`ROW_WEIGHT`] ones per row at public pseudorandom columns.
//!
//! Column indices come from AES-128 in counter mode under a fixed public key (the code is
//! public; only the secret `u` and the noise are private): blocks `5p, …, 5p+4` give 20
//! 32-bit words, the first ten index row `2p`, the next ten row `2p+1`, each scaled to
//! `[0, k)` by a multiply-shift (for a power-of-two `k`, the top `log₂ k` bits). Encoding is
//! a gather: each output block is the XOR of ten input blocks, ten random reads into a
//! `16·k`-byte table (4 MB for the main B12 set, 7.2 MB for B13); rows are split across
//! threads with rayon.
//!
//! The code is the same every round, so a code that encodes many rounds
//! ([`LpnCode::with_table`], Ferret's main code) computes its indices once per process and
//! streams them from a packed table (24 bytes a row, 149 MB for B12, shared by every sender,
//! receiver and session of the process). The bootstrap code, used once per session, computes
//! them as it goes. Both give the same code (test `a_column_table_encodes_the_same_code`).
//!
//! The largest CPU cost of a Ferret round. On one core of the benchmark machine (AMD EPYC,
//! 1 MB L2 per core, 32 MB L3), two processes encoding B12 rounds at once
//! (`examples/lpn_speed.rs`, session 19): 13.7–14.7 ns per output with computed indices (the
//! 2.5 AES calls ≈ 5.5 ns, the index arithmetic and its stores most of the rest), 7.4–8.6 ns
//! with the table, and 6.1–6.9 ns with the table over a 1 MB input that fits L2 — the ten
//! random reads cost little more from L3; the row loop's instructions and the table's stream
//! are most of the time (earlier sessions, with more load on the machine: 27–37 and 14–20 ns).
//! Rows of 24 bytes (19-bit indices) encode as fast as the 28-byte layout they replaced, and
//! in the two-party ReLU benchmark, where both parties stream their tables while other jobs
//! use the memory too, measured 3–15 % faster ReLUs (`moat bench relu --ot ferret`,
//! interleaved runs); rows of ten `u32` (40 bytes) measured slower. The table takes
//! 0.11–0.28 s to build on one thread, at session setup. Huge pages for the 4 MB input,
//! software prefetching a few rows ahead, and sorting a batch's reads by table segment to keep
//! them in L2 (the scatter into the outputs costs more than the misses it saves) measured no
//! faster. What did help: a party's two rounds (its sender's and its receiver's, same code)
//! in one pass, each row read and unpacked once for two outputs ([`LpnCode::encode_pair`]:
//! 10.5 against 15.2 ns per pair of rows on one core, session 20).

use std::convert::Infallible;
use std::sync::Arc;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use rayon::prelude::*;

use crate::Block;
use crate::memo::Memo;

/// Ones per row of `A` (emp-ot and Ferret use 10).
pub const ROW_WEIGHT: usize = 10;
/// Rows per AES batch (even: rows are indexed in pairs).
const ROWS: usize = 32;
/// AES blocks per pair of rows: 20 words for 2 × [`ROW_WEIGHT`] indices.
const BLOCKS_PER_PAIR: usize = 5;
/// Rows per parallel task.
const TASK_ROWS: usize = 1 << 14;
/// Bits per column index in a [`ColumnTable`] (ten of them fill 190 of a row's 192 bits).
const INDEX_BITS: u32 = 19;
/// The largest `k` a column table can index (`2^19`; every set moat ships is at most that).
pub const MAX_TABLE_K: usize = 1 << INDEX_BITS;
/// Bits of a table word left above its three whole indices, holding a part of the tenth.
const SPARE_BITS: u32 = 64 - 3 * INDEX_BITS;

/// The public code of one LPN instance.
#[derive(Clone)]
pub struct LpnCode {
    prp: Aes128,
    k: usize,
    table: Option<Arc<ColumnTable>>,
}

impl std::fmt::Debug for LpnCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LpnCode")
            .field("k", &self.k)
            .field("table_rows", &self.table.as_ref().map(|t| t.rows()))
            .finish_non_exhaustive()
    }
}

/// The column indices of a code's first rows, computed once: 19 bits per index, ten to a
/// row in three 64-bit words (24 bytes a row; 149 MB for B12's 6,225,920 rows). Word `w`
/// holds indices `3w, 3w+1, 3w+2` in its low 57 bits and 7 bits of index 9 (bits `7w ..`)
/// in its top 7. Reading them back is a stream, where computing them is 2.5 AES calls and
/// ten multiplications per row (the module doc has the measured speeds).
struct ColumnTable {
    rows: Vec<[u64; 3]>,
}

impl ColumnTable {
    fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Packs one row's ten columns (each `< MAX_TABLE_K`).
    fn pack(cols: &[u32]) -> [u64; 3] {
        let tenth = u64::from(cols[ROW_WEIGHT - 1]);
        std::array::from_fn(|w| {
            let whole = (0..3).fold(0u64, |acc, i| acc | u64::from(cols[3 * w + i]) << (INDEX_BITS * i as u32));
            let part = (tenth >> (SPARE_BITS * w as u32)) & ((1 << SPARE_BITS) - 1);
            whole | part << (3 * INDEX_BITS)
        })
    }

    /// The ten columns of a packed row, in order.
    #[inline(always)]
    fn unpack(words: &[u64; 3]) -> [usize; ROW_WEIGHT] {
        const MASK: u64 = (1 << INDEX_BITS) - 1;
        let whole = |w: usize, i: u32| ((words[w] >> (INDEX_BITS * i)) & MASK) as usize;
        let tenth = (words[0] >> (3 * INDEX_BITS))
            | (words[1] >> (3 * INDEX_BITS)) << SPARE_BITS
            | (words[2] >> (3 * INDEX_BITS)) << (2 * SPARE_BITS);
        [
            whole(0, 0),
            whole(0, 1),
            whole(0, 2),
            whole(1, 0),
            whole(1, 1),
            whole(1, 2),
            whole(2, 0),
            whole(2, 1),
            whole(2, 2),
            tenth as usize,
        ]
    }

    /// The table of `code`'s first `rows` rows (`code.k ≤ MAX_TABLE_K`), in parallel.
    fn build(code: &LpnCode, rows: usize) -> Self {
        debug_assert!(code.k <= MAX_TABLE_K);
        let mut packed = vec![[0u64; 3]; rows];
        packed.par_chunks_mut(TASK_ROWS).enumerate().for_each(|(t, chunk)| {
            code.for_each_row(t * TASK_ROWS, chunk.len(), |i, cols| chunk[i] = Self::pack(cols));
        });
        Self { rows: packed }
    }

    /// `out[i] ^= ⊕_{j} input[col(first_row + i, j)]` (`XOR`), or `=` (written over `out`).
    fn encode_rows<const XOR: bool>(&self, first_row: usize, input: &[Block], out: &mut [Block]) {
        if input.len().is_power_of_two() {
            // Every column is below `k = 2^b`, so the mask changes no index; it lets the
            // compiler drop the bounds check of each of the ten reads.
            let mask = input.len() - 1;
            let input = &input[..=mask];
            self.gather::<XOR>(first_row, out, |col| input[col & mask]);
        } else {
            self.gather::<XOR>(first_row, out, |col| input[col]);
        }
    }

    /// The row loop of [`Self::encode_rows`], reading the input through `read`.
    #[inline(always)]
    fn gather<const XOR: bool>(&self, first_row: usize, out: &mut [Block], read: impl Fn(usize) -> Block) {
        for (o, words) in out.iter_mut().zip(&self.rows[first_row..]) {
            let start = if XOR { *o } else { 0 };
            *o = Self::unpack(words).iter().fold(start, |acc, &col| acc ^ read(col));
        }
    }
}

impl ColumnTable {
    /// [`Self::encode_rows`] of two inputs in one pass over the rows (each row unpacked once):
    /// `a_out[i] ^= ⊕_j a_in[col]`, `b_out[i] = ⊕_j b_in[col]`.
    fn encode_rows_pair(
        &self,
        first_row: usize,
        a_in: &[Block],
        a_out: &mut [Block],
        b_in: &[Block],
        b_out: &mut [Block],
    ) {
        let rows = self.rows[first_row..].iter().zip(a_out.iter_mut().zip(b_out.iter_mut()));
        if a_in.len().is_power_of_two() && a_in.len() == b_in.len() {
            // As in `encode_rows`: the mask drops the bounds checks.
            let mask = a_in.len() - 1;
            let (a_in, b_in) = (&a_in[..=mask], &b_in[..=mask]);
            for (words, (a, b)) in rows {
                let (mut x, mut y) = (*a, 0);
                for col in Self::unpack(words) {
                    x ^= a_in[col & mask];
                    y ^= b_in[col & mask];
                }
                (*a, *b) = (x, y);
            }
        } else {
            for (words, (a, b)) in rows {
                let (mut x, mut y) = (*a, 0);
                for col in Self::unpack(words) {
                    x ^= a_in[col];
                    y ^= b_in[col];
                }
                (*a, *b) = (x, y);
            }
        }
    }
}

/// Column tables shared by every code of the process with the same `(k, key, rows)`: a party
/// holds a sender and a receiver over the same main code, and a server many sessions.
/// Tables are kept for the life of the process (one per parameter set in use).
fn shared_table(code: &LpnCode, key: u128, rows: usize) -> Arc<ColumnTable> {
    /// `(k, key, rows)` → the table.
    static TABLES: Memo<(usize, u128, usize), Arc<ColumnTable>> = Memo::new();
    let Ok(table) =
        TABLES.get_or_build((code.k, key, rows), || Ok::<_, Infallible>(Arc::new(ColumnTable::build(code, rows))));
    table
}

impl LpnCode {
    /// The code with `k` columns and public key `key` (one key per parameter stage); its
    /// indices are computed as the encoding goes.
    pub fn new(k: usize, key: u128) -> Self {
        Self { prp: Aes128::new(&key.to_le_bytes().into()), k, table: None }
    }

    /// The same code with the indices of its first `rows` rows read from a table computed
    /// once per process (24 bytes a row, see the module doc), for a code that encodes many
    /// rounds. Falls back to [`Self::new`] above [`MAX_TABLE_K`] columns.
    pub fn with_table(k: usize, key: u128, rows: usize) -> Self {
        let mut code = Self::new(k, key);
        if k <= MAX_TABLE_K {
            code.table = Some(shared_table(&code, key, rows));
        }
        code
    }

    /// Calls `f(i, columns of row first_row + i)` for `i < rows` (`first_row` even).
    fn for_each_row(&self, first_row: usize, rows: usize, mut f: impl FnMut(usize, &[u32])) {
        debug_assert_eq!(first_row % 2, 0);
        let k = self.k as u64;
        let col = |word: u128| ((word as u32 as u64 * k) >> 32) as u32;
        let mut buf = [aes::Block::default(); BLOCKS_PER_PAIR * ROWS / 2];
        // The batch's column indices, row after row: the 32-bit words of the AES blocks in order.
        let mut cols = [0u32; ROW_WEIGHT * ROWS];
        for start in (0..rows).step_by(ROWS) {
            let batch = (rows - start).min(ROWS);
            let pair0 = ((first_row + start) / 2) as u128;
            let buf = &mut buf[..BLOCKS_PER_PAIR * batch.div_ceil(2)];
            for (t, b) in buf.iter_mut().enumerate() {
                *b = (BLOCKS_PER_PAIR as u128 * pair0 + t as u128).to_le_bytes().into();
            }
            self.prp.encrypt_blocks(buf);
            for (w, b) in cols.chunks_exact_mut(4).zip(buf.iter()) {
                let x = u128::from_le_bytes((*b).into());
                w.copy_from_slice(&[col(x), col(x >> 32), col(x >> 64), col(x >> 96)]);
            }
            for (i, row_cols) in cols.chunks_exact(ROW_WEIGHT).take(batch).enumerate() {
                f(start + i, row_cols);
            }
        }
    }

    /// `out[i] ^= ⊕_{j} input[col(first_row + i, j)]` (`input.len()` = `k`, `first_row` even):
    /// rows `first_row ..` of [`Self::encode`], on the calling thread. Without `XOR` the rows
    /// are written over `out` ([`Self::encode_over`]).
    fn encode_rows<const XOR: bool>(&self, first_row: usize, input: &[Block], out: &mut [Block]) {
        match &self.table {
            Some(table) if first_row + out.len() <= table.rows() => table.encode_rows::<XOR>(first_row, input, out),
            _ => self.for_each_row(first_row, out.len(), |i, cols| {
                let start = if XOR { out[i] } else { 0 };
                out[i] = cols.iter().fold(start, |acc, &col| acc ^ input[col as usize]);
            }),
        }
    }

    /// `a_out ^= A·a_in` and `b_out = A·b_in` (whatever `b_out` held; both the same length):
    /// [`Self::encode`] and [`Self::encode_over`] at once. With a column table, one pass over
    /// it: each row's indices are read and unpacked once for both outputs (a party's sender
    /// and receiver rounds, see `Twin` in the parent module; 10.5 against 15.2 ns per pair of
    /// rows on one core, `examples/lpn_pair.rs`).
    pub fn encode_pair(&self, a_in: &[Block], a_out: &mut [Block], b_in: &[Block], b_out: &mut [Block]) {
        match &self.table {
            Some(table) if a_out.len() == b_out.len() && a_out.len() <= table.rows() => {
                debug_assert_eq!((a_in.len(), b_in.len()), (self.k, self.k));
                a_out
                    .par_chunks_mut(TASK_ROWS)
                    .zip(b_out.par_chunks_mut(TASK_ROWS))
                    .enumerate()
                    .for_each(|(t, (a, b))| table.encode_rows_pair(t * TASK_ROWS, a_in, a, b_in, b));
            }
            _ => {
                self.encode(a_in, a_out);
                self.encode_over(b_in, b_out);
            }
        }
    }

    /// `out ^= A·input` over all rows of `out`, in parallel.
    pub fn encode(&self, input: &[Block], out: &mut [Block]) {
        self.encode_all::<true>(input, out);
    }

    /// `out = A·input` over all rows of `out` (whatever it held), in parallel.
    pub fn encode_over(&self, input: &[Block], out: &mut [Block]) {
        self.encode_all::<false>(input, out);
    }

    /// [`Self::encode_rows`] over all rows of `out`, split across threads.
    fn encode_all<const XOR: bool>(&self, input: &[Block], out: &mut [Block]) {
        debug_assert_eq!(input.len(), self.k);
        out.par_chunks_mut(TASK_ROWS)
            .enumerate()
            .for_each(|(t, chunk)| self.encode_rows::<XOR>(t * TASK_ROWS, input, chunk));
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

    /// The table holds the same code: equal outputs over its rows, past its end (computed
    /// indices) and for a `k` using every high bit.
    #[test]
    fn a_column_table_encodes_the_same_code() {
        for (k, rows, n) in
            [(1000usize, 40_000usize, 50_000usize), (MAX_TABLE_K, 3_000, 3_000), (MAX_TABLE_K - 3, 2_000, 2_000)]
        {
            let computed = LpnCode::new(k, 5);
            let tabled = LpnCode::with_table(k, 5, rows);
            assert!(tabled.table.is_some());
            let input: Vec<Block> =
                (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834) ^ i).collect();
            let start: Vec<Block> = (0..n as u128).map(|i| i << 64 | 3).collect();
            let (mut a, mut b) = (start.clone(), start);
            computed.encode(&input, &mut a);
            tabled.encode(&input, &mut b);
            assert_eq!(a, b, "k = {k}");
        }
        assert!(LpnCode::with_table(MAX_TABLE_K + 1, 5, 10).table.is_none());
    }

    /// Both encodings in one pass equal the two passes: a power-of-two `k` and another, with
    /// a table and without, and outputs longer than the table (the two-pass fallback).
    #[test]
    fn a_pair_encodes_as_the_two() {
        for (k, rows, n) in [(1usize << 12, 9_000usize, 9_000usize), (1000, 5_000, 5_000), (1000, 2_000, 3_000)] {
            for code in [LpnCode::with_table(k, 9, rows), LpnCode::new(k, 9)] {
                let a: Vec<Block> =
                    (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834)).collect();
                let b: Vec<Block> = (0..k as u128).map(|i| i.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 7).collect();
                let start: Vec<Block> = (0..n as u128).map(|i| i << 70 | 1).collect();
                let (mut a2, mut b2) = (start.clone(), start.clone());
                code.encode(&a, &mut a2);
                code.encode_over(&b, &mut b2);
                let (mut a1, mut b1) = (start.clone(), start);
                code.encode_pair(&a, &mut a1, &b, &mut b1);
                assert!(a1 == a2 && b1 == b2, "k = {k}, {n} rows, table {}", code.table.is_some());
            }
        }
    }

    /// A packed row gives back its ten columns, at the extremes of every bit position.
    #[test]
    fn packed_rows_unpack_to_their_columns() {
        let max = (MAX_TABLE_K - 1) as u32;
        let rows: [[u32; ROW_WEIGHT]; 4] = [
            [0; ROW_WEIGHT],
            [max; ROW_WEIGHT],
            [max, 0, max, 0, max, 0, max, 0, max, 0],
            [1, 2, 4, 1 << 17, 1 << 18, 3, 5, max - 1, 77, 0b101_0101_0101_0101_0101],
        ];
        for cols in rows {
            let want: Vec<usize> = cols.iter().map(|&c| c as usize).collect();
            assert_eq!(ColumnTable::unpack(&ColumnTable::pack(&cols)).to_vec(), want);
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
