//! Discriminative known-answer pools: keep the public samples on which a cheaper model is most
//! likely to answer differently from the committed one.
//!
//! A substitute that is a few points less accurate disagrees with the committed model on a
//! few per cent of *random* inputs, so a random pool needs many known answers per batch
//! (m ≈ ln(1 − target)/ln(1 − d): 90 for d = 5 % and 99 %). It disagrees far more often on the
//! inputs the committed model itself finds hard — those whose two best logits are close. The
//! client ranks the public pool by the committed model's top-1 − top-2 logit gap
//! ([`margin`]; it has the model's published reference copy, or the labels and gaps published
//! with it) and keeps the `keep` smallest ([`hardest`]); the (m, k) helper then uses the
//! disagreement measured on the selected pool ([`super::analysis::choose_for_pool`]).
//!
//! **Threat model.** Known answers work only while the server cannot tell them from real
//! queries. On the two-party path the server sees no input, so a pool of hard samples is as
//! hidden as a random one. On the plaintext path the server sees every input and hard samples
//! are recognisable: a server running its cheap model first can send the inputs on which *its*
//! margin is small to the committed model (a cascade) and answer the rest cheaply. Such a
//! server still answers every real query the cheap model gets confidently wrong; `moat attack
//! fusion --pool hardest:SIZE` measures how often the known answers catch it and what it
//! corrupts (the `cascade` point), which is the price of the smaller m there.
//!
//! **Cost:** one plaintext inference of the reference model per pool sample, once.

/// The label and the top-1 − top-2 gap of `logits` (`None` for fewer than two classes or a
/// NaN).
pub fn margin(logits: &[f32]) -> Option<(usize, f32)> {
    if logits.len() < 2 || logits.iter().any(|v| v.is_nan()) {
        return None;
    }
    let (mut best, mut second) = (0usize, usize::MAX);
    for i in 1..logits.len() {
        if logits[i] > logits[best] {
            second = best;
            best = i;
        } else if second == usize::MAX || logits[i] > logits[second] {
            second = i;
        }
    }
    Some((best, logits[best] - logits[second]))
}

/// The indices of the `keep` smallest margins (ties by index), in increasing index order;
/// samples without a margin (`None`) are never kept.
pub fn hardest(margins: &[Option<f32>], keep: usize) -> Vec<usize> {
    let mut ranked: Vec<(usize, f32)> = margins.iter().enumerate().filter_map(|(i, m)| m.map(|m| (i, m))).collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut kept: Vec<usize> = ranked.into_iter().take(keep).map(|(i, _)| i).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_the_gap_between_the_two_best_logits() {
        assert_eq!(margin(&[0.1, 2.0, 1.5, -3.0]), Some((1, 0.5)));
        assert_eq!(margin(&[5.0, 1.0, 4.0]), Some((0, 1.0)));
        assert_eq!(margin(&[1.0, 1.0]), Some((0, 0.0)));
        assert_eq!(margin(&[1.0]), None);
        assert_eq!(margin(&[1.0, f32::NAN]), None);
    }

    #[test]
    fn hardest_keeps_the_smallest_margins_in_index_order() {
        let margins = [Some(3.0), Some(0.1), None, Some(0.1), Some(2.0), Some(0.05)];
        assert_eq!(hardest(&margins, 3), vec![1, 3, 5]);
        assert_eq!(hardest(&margins, 10), vec![0, 1, 3, 4, 5], "a sample without a margin is never kept");
        assert!(hardest(&margins, 0).is_empty());
    }
}
