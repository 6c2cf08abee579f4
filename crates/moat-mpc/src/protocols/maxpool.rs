//! Max pooling: fresh shares of the maximum (signed) over each window of a shared tensor.
//!
//! **Computes** `out[w] = max_{k ∈ windows[w]} x[k]` for windows as produced by
//! [`moat_nn::kernels::pool_windows`] — equal to [`moat_nn::kernels::max_pool`] with signed
//! comparison (an empty window gives 0, like the plaintext kernel).
//!
//! **How.** A max over shared values is `max(a, b) = b + ReLU(a − b)`
//! ([`super::relu`](mod@super::relu), exact). The layer's windows are first turned into a
//! [`MaxTree`] of pairwise maxima that overlapping windows *share*:
//!
//! 1. each window is split into runs of consecutive input indices (the rows of a 2-D window,
//!    row-major); each run is reduced by a balanced tournament;
//! 2. the run maxima of a window are reduced by a second tournament;
//! 3. every pairwise max `(a, b)` is computed once per layer, whoever needs it (a hash map
//!    over the operand pair), so the row maxima of a 3×3 stride-2 pool serve the two windows
//!    that overlap on that row.
//!
//! Every max of one depth runs as one batched ReLU. A 3×3 stride-2 pool needs ≈ 6 comparisons
//! per output (8 without sharing), a 2×2 stride-2 pool 3 (nothing to share), in
//! `⌈log₂ width⌉ + ⌈log₂ height⌉` ReLU levels (4 for 3×3, 2 for 2×2).
//!
//! **Precondition:** `|x| < 2^(ℓ−2)` for every input, so `a − b` does not leave the signed range
//! (true for any activation a network produces at ℓ = 37, f = 12, where |x| < 2^24 represents
//! ±4096 in real terms). Outside it the maxima are still computed on wrapped differences and may
//! be wrong — as would any ring-based comparison of differences.
//!
//! **Learns:** nothing beyond its uniformly random output shares (the plan depends only on
//! the public window shapes).
//! **Cost:** [`MaxTree::comparisons`] ReLUs; [`super::cost::max_pool`] predicts the bytes.

use std::collections::HashMap;

use super::mux::check_ring;
use super::relu::relu_values;
use super::session::Session;
use crate::error::{MpcError, Result};
use crate::shares::AShare;
use crate::transport::Channel;

/// The pairwise maxima of a pooling layer, by depth (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaxTree {
    /// `levels[d]` = the maxima of depth `d + 1`: operand node pairs; node `i < inputs` is
    /// input `i`, node `inputs + j` is the `j`-th max in level order.
    pub levels: Vec<Vec<(usize, usize)>>,
    /// The node holding each window's maximum (`None` for an empty window).
    pub outputs: Vec<Option<usize>>,
    /// Number of input values.
    pub inputs: usize,
}

impl MaxTree {
    /// The plan of `windows` over `inputs` values; indices must be `< inputs`.
    pub fn new(windows: &[Vec<usize>], inputs: usize) -> Result<Self> {
        // Nodes get provisional ids while building (depth is known only per operand pair).
        let mut depth: Vec<usize> = vec![0; inputs];
        let mut ops: Vec<(usize, usize)> = Vec::new();
        let mut memo: HashMap<(usize, usize), usize> = HashMap::new();
        let mut max_of = |a: usize, b: usize, depth: &mut Vec<usize>| -> usize {
            let key = (a.min(b), a.max(b));
            *memo.entry(key).or_insert_with(|| {
                ops.push(key);
                depth.push(depth[key.0].max(depth[key.1]) + 1);
                depth.len() - 1
            })
        };
        let mut outputs = Vec::with_capacity(windows.len());
        for (w, members) in windows.iter().enumerate() {
            if let Some(&k) = members.iter().find(|&&k| k >= inputs) {
                return Err(MpcError::invalid(
                    "max_pool",
                    format!("window {w}: index {k} out of range for {inputs} values"),
                ));
            }
            let mut runs = Vec::new();
            let mut run_start = 0;
            for i in 1..=members.len() {
                if i == members.len() || members[i] != members[i - 1] + 1 {
                    runs.push(tournament(members[run_start..i].to_vec(), &mut |a, b| max_of(a, b, &mut depth)));
                    run_start = i;
                }
            }
            let runs: Vec<usize> = runs.into_iter().flatten().collect();
            outputs.push(tournament(runs, &mut |a, b| max_of(a, b, &mut depth)));
        }
        // Renumber the maxima in level order.
        let levels_n = depth.iter().copied().max().unwrap_or(0);
        let mut levels: Vec<Vec<(usize, usize)>> = vec![Vec::new(); levels_n];
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&j| depth[inputs + j]);
        let mut renumber = vec![0usize; ops.len()];
        for (new, &old) in order.iter().enumerate() {
            renumber[old] = inputs + new;
        }
        let id = |n: usize| if n < inputs { n } else { renumber[n - inputs] };
        for &old in &order {
            let (a, b) = ops[old];
            levels[depth[inputs + old] - 1].push((id(a), id(b)));
        }
        let outputs = outputs.into_iter().map(|o| o.map(id)).collect();
        Ok(Self { levels, outputs, inputs })
    }

    /// Comparisons (ReLUs) of the layer.
    pub fn comparisons(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }
}

/// Balanced pairwise reduction of `list` with `max`; `None` if empty.
fn tournament(mut list: Vec<usize>, max: &mut dyn FnMut(usize, usize) -> usize) -> Option<usize> {
    while list.len() > 1 {
        let mut next = Vec::with_capacity(list.len().div_ceil(2));
        for pair in list.chunks(2) {
            next.push(if let [a, b] = *pair { max(a, b) } else { pair[0] });
        }
        list = next;
    }
    list.first().copied()
}

/// Shares of the window maxima of `x`; `windows[w]` lists the input indices of output `w`.
pub fn max_pool(s: &mut Session, ch: &mut dyn Channel, x: &AShare, windows: &[Vec<usize>]) -> Result<AShare> {
    let plan = MaxTree::new(windows, x.len())?;
    max_pool_tree(s, ch, x, &plan)
}

/// [`max_pool`] by a [`MaxTree`] built ahead: an engine builds each layer's tree once per
/// model (for SqueezeNet's first pool, ≈ 1.2 million shared pairs through a hash map) instead
/// of once per query and party. `x` must hold `plan.inputs` values.
pub fn max_pool_tree(s: &mut Session, ch: &mut dyn Channel, x: &AShare, plan: &MaxTree) -> Result<AShare> {
    check_ring(s, x, "max_pool")?;
    if x.len() != plan.inputs {
        return Err(MpcError::invalid(
            "max_pool",
            format!("{} values for a pooling plan over {}", x.len(), plan.inputs),
        ));
    }
    let fp = x.fixed_point();
    let mut nodes: Vec<u64> = Vec::with_capacity(x.len() + plan.comparisons());
    nodes.extend_from_slice(x.values());
    for level in &plan.levels {
        let diff: Vec<u64> = level.iter().map(|&(a, b)| fp.sub(nodes[a], nodes[b])).collect();
        let pos = relu_values(s, ch, &diff)?;
        let maxima: Vec<u64> = pos.iter().zip(level).map(|(&p, &(_, b))| fp.add(p, nodes[b])).collect();
        nodes.extend_from_slice(&maxima);
    }
    let out = plan.outputs.iter().map(|o| o.map_or(0, |i| nodes[i])).collect();
    Ok(AShare::from_wrapping(fp, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_nn::kernels::{Window, pool_windows};

    #[test]
    fn overlapping_windows_share_maxima() -> Result<()> {
        // 3×3 stride 2 on 1×16×16.
        let win = Window { in_hw: [16, 16], kernel: [3, 3], stride: [2, 2], padding: [0; 4] };
        let windows = pool_windows(1, win);
        let plan = MaxTree::new(&windows, 256)?;
        assert_eq!(plan.levels.len(), 4);
        let per_output = plan.comparisons() as f64 / windows.len() as f64;
        assert!(per_output < 6.5, "{per_output} comparisons per output");
        // Evaluating the plan in the clear gives the window maxima.
        let x: Vec<i64> = (0..256).map(|i| (i * 7919 % 257) as i64 - 128).collect();
        let mut nodes = x.clone();
        for level in &plan.levels {
            let m: Vec<i64> = level.iter().map(|&(a, b)| nodes[a].max(nodes[b])).collect();
            nodes.extend(m);
        }
        for (w, o) in windows.iter().zip(&plan.outputs) {
            let want = w.iter().map(|&i| x[i]).max();
            assert_eq!(o.map(|i| nodes[i]), want);
        }
        // Disjoint 2×2 windows: 3 per output.
        let win = Window { in_hw: [8, 8], kernel: [2, 2], stride: [2, 2], padding: [0; 4] };
        let windows = pool_windows(2, win);
        assert_eq!(MaxTree::new(&windows, 128)?.comparisons(), 3 * windows.len());
        assert!(MaxTree::new(&[vec![0, 5]], 5).is_err());
        Ok(())
    }
}
