//! Max pooling: fresh shares of the maximum (signed) over each window of a shared tensor.
//!
//! **Computes** `out[w] = max_{k ∈ windows[w]} x[k]` for windows as produced by
//! [`moat_nn::kernels::pool_windows`] — equal to [`moat_nn::kernels::max_pool`] with signed
//! comparison (an empty window gives 0, like the plaintext kernel).
//!
//! **How.** A tournament, all windows of the layer at once: each level pairs the surviving
//! candidates of every window and replaces each pair by `max(a, b) = b + ReLU(a − b)`
//! ([`super::relu`](mod@super::relu), exact), an odd one out passing through; `⌈log₂ K⌉` levels for windows of
//! up to `K` elements (2 for 2×2 pools), each one batched ReLU.
//!
//! **Precondition:** `|x| < 2^(ℓ−2)` for every input, so `a − b` does not leave the signed range
//! (true for any activation a network produces at ℓ = 37, f = 12, where |x| < 2^24 represents
//! ±4096 in real terms). Outside it the maxima are still computed on wrapped differences and may
//! be wrong — as would any ring-based comparison of differences.
//!
//! **Learns:** nothing beyond its uniformly random output shares.
//! **Cost:** `Σ_w (|w| − 1)` ReLUs (3 per 2×2 window: 2.63 KB per output at ℓ = 37), in
//! `⌈log₂ K⌉` ReLU levels (2×2: 8 flights from `P0`, 11 from `P1`).

use super::mux::check_ring;
use super::relu::relu_values;
use super::session::Session;
use crate::error::{MpcError, Result};
use crate::shares::AShare;
use crate::transport::Channel;

/// Shares of the window maxima of `x`; `windows[w]` lists the input indices of output `w`.
pub fn max_pool(s: &mut Session, ch: &mut dyn Channel, x: &AShare, windows: &[Vec<usize>]) -> Result<AShare> {
    check_ring(s, x, "max_pool")?;
    let fp = x.fixed_point();
    // Candidates of every window, flattened: window w owns cur[start[w]..start[w + 1]].
    let mut cur = Vec::with_capacity(windows.iter().map(Vec::len).sum());
    let mut start = Vec::with_capacity(windows.len() + 1);
    start.push(0);
    for (w, members) in windows.iter().enumerate() {
        for &k in members {
            let v = x.values().get(k).ok_or_else(|| {
                MpcError::invalid("max_pool", format!("window {w}: index {k} out of range for {} values", x.len()))
            })?;
            cur.push(*v);
        }
        start.push(cur.len());
    }
    while start.windows(2).any(|r| r[1] - r[0] > 1) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in start.windows(2) {
            for pair in cur[r[0]..r[1]].chunks_exact(2) {
                a.push(pair[0]);
                b.push(pair[1]);
            }
        }
        let diff: Vec<u64> = a.iter().zip(&b).map(|(&a, &b)| fp.sub(a, b)).collect();
        let pos = relu_values(s, ch, &diff)?;
        let mut maxima = pos.iter().zip(&b).map(|(&p, &b)| fp.add(p, b));
        let mut next = Vec::with_capacity(cur.len().div_ceil(2));
        let mut next_start = Vec::with_capacity(start.len());
        next_start.push(0);
        for r in start.windows(2) {
            let members = &cur[r[0]..r[1]];
            for _ in 0..members.len() / 2 {
                next.push(maxima.next().unwrap_or_default());
            }
            if members.len() % 2 == 1 {
                next.push(members[members.len() - 1]);
            }
            next_start.push(next.len());
        }
        cur = next;
        start = next_start;
    }
    let out = start.windows(2).map(|r| if r[1] > r[0] { cur[r[0]] } else { 0 }).collect();
    Ok(AShare::from_wrapping(fp, out))
}
