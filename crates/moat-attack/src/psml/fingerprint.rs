//! Fingerprints: the inputs whose labels tell a zoo's models apart, and the matching of answer
//! signatures.
//!
//! Offline, the attacker has the labels its own surrogate models give a public pool
//! (`preds[model][input]`). [`select_fingerprints`] picks `k` inputs greedily: each step takes
//! the input that separates the most *still-close* pairs of surrogates, weighting a pair by
//! `1 / (1 + d)` where `d` is how many chosen inputs already separate it — so the set first
//! separates every pair once, then widens the smallest Hamming distance between signatures
//! (robustness to the victim models disagreeing with the surrogates on some inputs).
//!
//! Online, every answer to the fingerprint batch is a *signature* (one label per fingerprint).
//! The served models are deterministic, so one member always gives the same signature;
//! [`SignatureClusters`] groups signatures within a Hamming tolerance, one cluster per member
//! the router served. Under a likelihood model in which each label of a member's signature is
//! flipped independently with probability `p < ½`, the log-likelihood of a cluster is
//! `d·ln p + (k − d)·ln(1 − p)`, decreasing in the Hamming distance `d`: the nearest centroid is
//! the maximum-likelihood member.

use super::PsmlError;

/// Number of positions where `a` and `b` differ (over the shorter length, plus the length
/// difference).
pub fn hamming(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// Picks up to `k` pool inputs that tell the `preds.len()` models apart (see the module
/// documentation); returns pool indices in the order chosen. Stops early when no input
/// separates any pair. Fails when there are fewer than two models (nothing to fingerprint),
/// when the models' prediction vectors differ in length, or when `k` is 0.
pub fn select_fingerprints(preds: &[Vec<usize>], k: usize) -> Result<Vec<usize>, PsmlError> {
    let m = preds.len();
    if m < 2 {
        return Err(PsmlError::NothingToFingerprint(format!("{m} candidate model(s): need at least two")));
    }
    let n = preds[0].len();
    if preds.iter().any(|p| p.len() != n) {
        return Err(PsmlError::Invalid("surrogate predictions differ in length".into()));
    }
    if k == 0 {
        return Err(PsmlError::Invalid("the fingerprint set must hold at least one input".into()));
    }
    let pairs: Vec<(usize, usize)> = (0..m).flat_map(|i| (i + 1..m).map(move |j| (i, j))).collect();
    let mut distance = vec![0usize; pairs.len()];
    let mut chosen = Vec::with_capacity(k);
    let mut used = vec![false; n];
    while chosen.len() < k {
        let mut best: Option<(f64, usize)> = None;
        for x in (0..n).filter(|&x| !used[x]) {
            let score: f64 = pairs
                .iter()
                .zip(&distance)
                .filter(|((i, j), _)| preds[*i][x] != preds[*j][x])
                .map(|(_, &d)| 1.0 / (1.0 + d as f64))
                .sum();
            if score > 0.0 && best.is_none_or(|(s, _)| score > s) {
                best = Some((score, x));
            }
        }
        let Some((_, x)) = best else { break };
        used[x] = true;
        chosen.push(x);
        for ((i, j), d) in pairs.iter().zip(distance.iter_mut()) {
            if preds[*i][x] != preds[*j][x] {
                *d += 1;
            }
        }
    }
    if chosen.is_empty() {
        return Err(PsmlError::NothingToFingerprint(
            "the candidate models agree on every pool input: no input tells them apart".into(),
        ));
    }
    Ok(chosen)
}

/// The smallest pairwise Hamming distance between the models' signatures on `inputs`.
pub fn min_separation(preds: &[Vec<usize>], inputs: &[usize]) -> usize {
    let sig = |p: &Vec<usize>| inputs.iter().map(|&x| p[x]).collect::<Vec<_>>();
    let sigs: Vec<Vec<usize>> = preds.iter().map(sig).collect();
    let mut min = usize::MAX;
    for i in 0..sigs.len() {
        for j in i + 1..sigs.len() {
            min = min.min(hamming(&sigs[i], &sigs[j]));
        }
    }
    min
}

/// The index and distance of the reference nearest to `signature` (ties: the lower index);
/// `None` when there are no references.
pub fn nearest(signature: &[usize], references: &[Vec<usize>]) -> Option<(usize, usize)> {
    references.iter().enumerate().map(|(i, r)| (i, hamming(signature, r))).min_by_key(|&(i, d)| (d, i))
}

/// Online clusters of answer signatures: one per member the router was seen to serve.
#[derive(Clone, Debug, Default)]
pub struct SignatureClusters {
    /// The first signature of each cluster.
    pub centroids: Vec<Vec<usize>>,
    /// Signatures assigned to each cluster.
    pub counts: Vec<usize>,
    /// Largest Hamming distance at which a signature joins an existing cluster.
    pub tolerance: usize,
}

impl SignatureClusters {
    /// Empty clusters with a join `tolerance`.
    pub fn new(tolerance: usize) -> Self {
        Self { tolerance, ..Self::default() }
    }

    /// Assigns `signature` to the nearest cluster within the tolerance, or opens a new one;
    /// returns the cluster index.
    pub fn assign(&mut self, signature: &[usize]) -> usize {
        match nearest(signature, &self.centroids) {
            Some((i, d)) if d <= self.tolerance => {
                self.counts[i] += 1;
                i
            }
            _ => {
                self.centroids.push(signature.to_vec());
                self.counts.push(1);
                self.centroids.len() - 1
            }
        }
    }

    /// The cluster `signature` belongs to, without changing the clusters.
    pub fn classify(&self, signature: &[usize]) -> Option<usize> {
        nearest(signature, &self.centroids).filter(|&(_, d)| d <= self.tolerance).map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_set_separates_every_pair() -> Result<(), PsmlError> {
        // Four models over six inputs; inputs 0 and 5 are useless (all agree).
        let preds =
            vec![vec![1, 0, 0, 0, 2, 3], vec![1, 1, 0, 0, 2, 3], vec![1, 0, 1, 0, 2, 3], vec![1, 0, 0, 1, 5, 3]];
        let chosen = select_fingerprints(&preds, 3)?;
        assert_eq!(chosen.len(), 3);
        assert!(!chosen.contains(&0) && !chosen.contains(&5));
        assert!(min_separation(&preds, &chosen) >= 1, "chosen {chosen:?}");
        // Asking for more than the useful inputs stops early.
        let all = select_fingerprints(&preds, 10)?;
        assert_eq!(all.len(), 4);
        assert!(all.contains(&4), "input 4 separates model 3 from the rest a second time");
        Ok(())
    }

    #[test]
    fn nothing_to_fingerprint_is_an_error() {
        assert!(matches!(select_fingerprints(&[vec![1, 2]], 2), Err(PsmlError::NothingToFingerprint(_))));
        assert!(matches!(select_fingerprints(&[vec![1, 2], vec![1, 2]], 2), Err(PsmlError::NothingToFingerprint(_))));
        assert!(select_fingerprints(&[vec![1], vec![2]], 0).is_err());
    }

    #[test]
    fn clusters_group_signatures_within_tolerance() {
        let mut c = SignatureClusters::new(1);
        assert_eq!(c.assign(&[1, 2, 3, 4]), 0);
        assert_eq!(c.assign(&[1, 2, 3, 5]), 0);
        assert_eq!(c.assign(&[0, 0, 3, 4]), 1);
        assert_eq!(c.classify(&[0, 0, 3, 5]), Some(1));
        assert_eq!(c.classify(&[9, 9, 9, 9]), None);
        assert_eq!(c.counts, vec![2, 1]);
        assert_eq!(nearest(&[0, 0], &[vec![1, 1], vec![0, 1]]), Some((1, 1)));
        assert_eq!(hamming(&[1, 2], &[1, 2, 3]), 1);
    }
}
