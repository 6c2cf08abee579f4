//! GGM trees: the punctured PRF behind single-point COT.
//!
//! A tree of depth `h` expands a 128-bit root seed into `2^h` leaves with the length-doubling
//! PRG `G(s) = (π₀(s) ⊕ s, π₁(s) ⊕ s)`, `π_b` = AES-128 under two fixed public keys (a
//! Davies–Meyer-style construction; pseudorandom in the ideal-cipher model). The sender also
//! outputs, per level `i`, the XOR of all left children `K₀ⁱ` and of all right children `K₁ⁱ`.
//! A receiver who knows the leaf index `α` and, per level, the sum on the side *off* its path
//! rebuilds every leaf except leaf `α` (Boyle et al., CCS 2019; Ferret, CCS 2020, Fig. 4).

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};

use crate::Block;

/// Blocks per AES call (fills the AES-NI pipeline).
const BATCH: usize = 32;
/// The two fixed PRP keys of `G` (digits of e, nothing up the sleeve).
const KEYS: [u128; 2] = [0x2B7E_1516_28AE_D2A6_ABF7_1588_09CF_4F3C, 0xB7E1_5162_8AED_2A6A_BF71_5880_9CF4_F3C7];

/// The length-doubling PRG of the trees.
#[derive(Clone)]
pub struct TreePrg {
    prp: [Aes128; 2],
}

impl std::fmt::Debug for TreePrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TreePrg")
    }
}

impl Default for TreePrg {
    fn default() -> Self {
        Self { prp: KEYS.map(|k| Aes128::new(&k.to_le_bytes().into())) }
    }
}

impl TreePrg {
    /// `next[2j + b] = π_b(cur[j]) ⊕ cur[j]` for every node `j` of `cur`.
    pub fn expand_level(&self, cur: &[Block], next: &mut [Block]) {
        let mut buf = [aes::Block::default(); BATCH];
        for (b, prp) in self.prp.iter().enumerate() {
            for (c, chunk) in cur.chunks(BATCH).enumerate() {
                let buf = &mut buf[..chunk.len()];
                for (x, &s) in buf.iter_mut().zip(chunk) {
                    *x = s.to_le_bytes().into();
                }
                prp.encrypt_blocks(buf);
                for (j, (x, &s)) in buf.iter().zip(chunk).enumerate() {
                    next[2 * (c * BATCH + j) + b] = u128::from_le_bytes((*x).into()) ^ s;
                }
            }
        }
    }

    /// The sender's tree: writes the `2^h` leaves of `seed` to `leaves` (`h` = its log₂
    /// length) and returns the level sums `[K₀ⁱ, K₁ⁱ]` for `i = 1..=h`.
    pub fn expand_full(&self, seed: Block, leaves: &mut [Block], scratch: &mut Vec<Block>) -> Vec<[Block; 2]> {
        let h = leaves.len().trailing_zeros() as usize;
        let mut sums = Vec::with_capacity(h);
        scratch.clear();
        scratch.resize(leaves.len(), 0);
        // Levels alternate between `scratch` and `leaves` so that the last one lands in `leaves`.
        let mut in_leaves = h % 2 == 1;
        if in_leaves {
            scratch[0] = seed;
        } else {
            leaves[0] = seed;
        }
        for level in 0..h {
            let width = 1usize << level;
            let (cur, next): (&[Block], &mut [Block]) = if in_leaves {
                (&scratch[..width], &mut leaves[..2 * width])
            } else {
                (&leaves[..width], &mut scratch[..2 * width])
            };
            self.expand_level(cur, next);
            let mut s = [0u128; 2];
            for pair in next.chunks_exact(2) {
                s[0] ^= pair[0];
                s[1] ^= pair[1];
            }
            sums.push(s);
            in_leaves = !in_leaves;
        }
        sums
    }

    /// The receiver's tree: rebuilds every leaf but `alpha` from `sibling_sums[i]` = the sum
    /// on the side off the path at level `i + 1` (`K_{1−αᵢ}`, `αᵢ` = bit `h−1−i` of `alpha`).
    /// Leaf `alpha` is left 0.
    pub fn expand_punctured(
        &self,
        alpha: usize,
        sibling_sums: &[Block],
        leaves: &mut [Block],
        scratch: &mut Vec<Block>,
    ) {
        let h = leaves.len().trailing_zeros() as usize;
        scratch.clear();
        scratch.resize(leaves.len(), 0);
        let mut in_leaves = h % 2 == 1;
        if in_leaves {
            scratch[0] = 0;
        } else {
            leaves[0] = 0;
        }
        let mut path = 0usize;
        for (level, &sum) in sibling_sums.iter().enumerate().take(h) {
            let width = 1usize << level;
            let (cur, next): (&[Block], &mut [Block]) = if in_leaves {
                (&scratch[..width], &mut leaves[..2 * width])
            } else {
                (&leaves[..width], &mut scratch[..2 * width])
            };
            self.expand_level(cur, next);
            let bit = (alpha >> (h - 1 - level)) & 1;
            let (on, off) = (2 * path + bit, 2 * path + (1 - bit));
            // The path node is unknown: its children are garbage; rebuild the off-path one.
            next[on] = 0;
            next[off] = 0;
            let mut acc = sum;
            for x in next.iter().skip(1 - bit).step_by(2) {
                acc ^= x;
            }
            next[off] = acc;
            path = on;
            in_leaves = !in_leaves;
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;

    #[test]
    fn punctured_tree_matches_full_tree_off_the_point() {
        let prg = TreePrg::default();
        let mut scratch = Vec::new();
        for h in 1..=7 {
            let n = 1usize << h;
            let mut full = vec![0u128; n];
            let sums = prg.expand_full(0xDEAD_BEEF + h as u128, &mut full, &mut scratch);
            assert_eq!(sums.len(), h);
            for alpha in [0, n - 1, n / 3] {
                let sib: Vec<Block> = (0..h).map(|i| sums[i][1 - ((alpha >> (h - 1 - i)) & 1)]).collect();
                let mut punct = vec![0u128; n];
                prg.expand_punctured(alpha, &sib, &mut punct, &mut scratch);
                for j in 0..n {
                    if j == alpha {
                        assert_eq!(punct[j], 0);
                    } else {
                        assert_eq!(punct[j], full[j], "h {h} alpha {alpha} leaf {j}");
                    }
                }
            }
            // Leaves are distinct (the PRG is not degenerate).
            let mut sorted = full.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), n);
        }
    }
}
