//! Correlated GGM trees (Half-Tree): the punctured PRF behind single-point COT.
//!
//! Half-Tree (Guo, Yang, Wang, Zhang, Xie, Liu, Zhao, Eurocrypt 2023, "Half-Tree: Halving the
//! Cost of Tree Expansion in COT and DPF", ePrint 2022/1431, Fig. 3 and 4). A tree of depth
//! `h` over the COT key `Δ` and a fresh seed `s`:
//!
//! - level 1 holds `(s, s ⊕ Δ)`;
//! - every node `x` above the leaves has the children `(H(x), x ⊕ H(x))`, with `H` the
//!   circular-correlation-robust hash `π(σ(x)) ⊕ σ(x)` of [`CrHash`] under its own fixed key
//!   (the hash the paper's proof asks for).
//!
//! The two children of a node XOR to it, so every level XORs to `Δ`: the sum of the left
//! children `K₀ⁱ` and of the right children `K₁ⁱ` satisfy `K₀ⁱ ⊕ K₁ⁱ = Δ` at every level `i`.
//! The sender therefore needs to hand over one block per level: a receiver holding the COT
//! `K ⊕ b·Δ` of the sender's `K` gets `K₀ⁱ ⊕ b·Δ = K_bⁱ` from the correction `K₀ⁱ ⊕ K`. A
//! receiver that knows the leaf index `α` and, per level, the sum on the side off its path
//! (`K_{ᾱᵢ}ⁱ`) rebuilds every leaf except leaf `α`, and leaf `α` up to `Δ`: the XOR of the
//! others is `Δ ⊕ leaf α`.
//!
//! **Cost** of a tree of `2^h` leaves: `2^h − 2` hashes (one AES call per inner node below
//! level 1) on either side, against two PRP calls per node for the GGM tree with a
//! length-doubling PRG; `h` blocks on the wire, against `2h` encrypted level sums.

use crate::Block;
use crate::ot::prim::CrHash;

/// Nodes hashed per AES call (fills the AES-NI pipeline).
const BATCH: usize = 32;
/// The fixed key of the trees' hash (digits of e, nothing up the sleeve), apart from the key
/// of the OT hash.
const TREE_KEY: u128 = 0x2B7E_1516_28AE_D2A6_ABF7_1588_09CF_4F3C;

/// The expansion of Half-Tree's correlated GGM trees.
#[derive(Clone, Debug)]
pub struct HalfTree {
    hash: CrHash,
}

impl Default for HalfTree {
    fn default() -> Self {
        Self { hash: CrHash::with_key(TREE_KEY) }
    }
}

impl HalfTree {
    /// `next[2j] = H(cur[j])`, `next[2j + 1] = cur[j] ⊕ H(cur[j])` for every node `j` of `cur`;
    /// returns the XOR of the left children and of the right children.
    pub fn expand_level(&self, cur: &[Block], next: &mut [Block]) -> [Block; 2] {
        let mut buf = [0u128; BATCH];
        let mut sums = [0u128; 2];
        for (c, chunk) in cur.chunks(BATCH).enumerate() {
            let buf = &mut buf[..chunk.len()];
            buf.copy_from_slice(chunk);
            self.hash.hash_in_place(buf);
            let children = &mut next[2 * c * BATCH..2 * (c * BATCH + chunk.len())];
            for ((pair, &left), &x) in children.chunks_exact_mut(2).zip(buf.iter()).zip(chunk) {
                pair[0] = left;
                pair[1] = x ^ left;
                sums[0] ^= pair[0];
                sums[1] ^= pair[1];
            }
        }
        sums
    }

    /// The sender's tree of `delta` and `seed`: writes the `2^h` leaves to `leaves` (`h` = its
    /// log₂ length, ≥ 1; they XOR to `delta`) and returns the left sums `K₀ⁱ` for
    /// `i = 1..=h` (the right sums are `K₀ⁱ ⊕ delta`).
    pub fn expand_full(&self, delta: Block, seed: Block, leaves: &mut [Block], scratch: &mut Vec<Block>) -> Vec<Block> {
        let h = leaves.len().trailing_zeros() as usize;
        let mut left_sums = Vec::with_capacity(h);
        scratch.clear();
        scratch.resize(leaves.len(), 0);
        // Levels alternate between `scratch` and `leaves` so that level h lands in `leaves`.
        let mut in_leaves = h % 2 == 1;
        let first = if in_leaves { &mut leaves[..2] } else { &mut scratch[..2] };
        first.copy_from_slice(&[seed, seed ^ delta]);
        left_sums.push(seed);
        for level in 2..=h {
            let width = 1usize << (level - 1);
            let (cur, next): (&[Block], &mut [Block]) = if in_leaves {
                (&leaves[..width], &mut scratch[..2 * width])
            } else {
                (&scratch[..width], &mut leaves[..2 * width])
            };
            left_sums.push(self.expand_level(cur, next)[0]);
            in_leaves = !in_leaves;
        }
        left_sums
    }

    /// The receiver's tree: rebuilds every leaf but `alpha` from `off_path_sums[i]` = the sum on
    /// the side off the path at level `i + 1` (`K_{1−αᵢ}`, `αᵢ` = bit `h−1−i` of `alpha`).
    /// Leaf `alpha` is left 0.
    pub fn expand_punctured(
        &self,
        alpha: usize,
        off_path_sums: &[Block],
        leaves: &mut [Block],
        scratch: &mut Vec<Block>,
    ) {
        let h = leaves.len().trailing_zeros() as usize;
        scratch.clear();
        scratch.resize(leaves.len(), 0);
        let mut in_leaves = h % 2 == 1;
        let bit = (alpha >> (h - 1)) & 1;
        let first = if in_leaves { &mut leaves[..2] } else { &mut scratch[..2] };
        first[bit] = 0;
        first[1 - bit] = off_path_sums[0];
        let mut path = bit;
        for (level, &sum) in off_path_sums.iter().enumerate().take(h).skip(1) {
            let width = 1usize << level;
            let (cur, next): (&[Block], &mut [Block]) = if in_leaves {
                (&leaves[..width], &mut scratch[..2 * width])
            } else {
                (&scratch[..width], &mut leaves[..2 * width])
            };
            let sides = self.expand_level(cur, next);
            let bit = (alpha >> (h - 1 - level)) & 1;
            let (on, off) = (2 * path + bit, 2 * path + (1 - bit));
            // The path node is unknown (0 here): its children are garbage. The off-path one is
            // the level's sum on its side minus the other nodes there, whose XOR is that side's
            // sum without the garbage child.
            next[off] ^= sides[1 - bit] ^ sum;
            next[on] = 0;
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
    fn punctured_tree_matches_full_tree_off_the_point_and_every_level_sums_to_delta() {
        let tree = HalfTree::default();
        let mut scratch = Vec::new();
        let delta = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3211;
        for h in 1..=7 {
            let n = 1usize << h;
            let mut full = vec![0u128; n];
            let left = tree.expand_full(delta, 0xDEAD_BEEF + h as u128, &mut full, &mut scratch);
            assert_eq!(left.len(), h);
            assert_eq!(full.iter().fold(0, |a, &x| a ^ x), delta, "h {h}: the leaves XOR to Δ");
            for alpha in [0, n - 1, n / 3] {
                let off: Vec<Block> =
                    (0..h).map(|i| left[i] ^ ((1 - ((alpha >> (h - 1 - i)) & 1)) as u128 * delta)).collect();
                let mut punct = vec![0u128; n];
                tree.expand_punctured(alpha, &off, &mut punct, &mut scratch);
                for j in 0..n {
                    if j == alpha {
                        assert_eq!(punct[j], 0);
                    } else {
                        assert_eq!(punct[j], full[j], "h {h} alpha {alpha} leaf {j}");
                    }
                }
                // The punctured leaf is Δ away from the XOR of the others.
                assert_eq!(punct.iter().fold(0, |a, &x| a ^ x) ^ full[alpha], delta);
            }
            // Leaves are distinct (the hash is not degenerate).
            let mut sorted = full.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), n);
        }
    }

    #[test]
    fn children_xor_to_their_parent_and_left_children_are_hashes() {
        let tree = HalfTree::default();
        let cur: Vec<Block> = (0..70u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834)).collect();
        let mut next = vec![0u128; 140];
        tree.expand_level(&cur, &mut next);
        let hash = CrHash::with_key(TREE_KEY);
        for (j, &x) in cur.iter().enumerate() {
            assert_eq!(next[2 * j], hash.hash(x));
            assert_eq!(next[2 * j] ^ next[2 * j + 1], x);
        }
    }
}
