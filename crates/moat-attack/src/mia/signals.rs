//! Per-sample signals computed from one probability vector `p` and the true label `y`.
//!
//! Every function takes probabilities (what a service reveals), clamps them away from zero at
//! [`FLOOR`] so that the results stay finite, and sums the non-true classes directly rather than
//! as `1 − p_y` (which rounds to 0 for a confidently overfit model).

/// The smallest probability the signals take a logarithm of.
pub const FLOOR: f64 = 1e-300;

fn others(p: &[f64], y: usize) -> f64 {
    p.iter().enumerate().filter(|&(j, _)| j != y).map(|(_, v)| v).sum()
}

/// Cross-entropy loss `−ln p_y`.
pub fn loss(p: &[f64], y: usize) -> f64 {
    -p[y].max(FLOOR).ln()
}

/// Confidence in the true label, `p_y`.
pub fn confidence(p: &[f64], y: usize) -> f64 {
    p[y]
}

/// The largest probability `max_j p_j` (label-free).
pub fn top1(p: &[f64]) -> f64 {
    p.iter().copied().fold(0.0, f64::max)
}

/// Shannon entropy `−Σ p_j ln p_j` (label-free).
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>()
}

/// Song & Mittal's modified entropy `−(1 − p_y) ln p_y − Σ_{j≠y} p_j ln(1 − p_j)`: small for
/// confident correct answers, large for confident wrong ones.
pub fn modified_entropy(p: &[f64], y: usize) -> f64 {
    let rest = others(p, y);
    let mut m = -rest * p[y].max(FLOOR).ln();
    for (j, &v) in p.iter().enumerate() {
        if j != y {
            let complement = if v > 0.5 { others(p, j) } else { 1.0 - v };
            m -= v * complement.max(FLOOR).ln();
        }
    }
    m
}

/// LiRA's logit-scaled confidence `ln p_y − ln Σ_{j≠y} p_j` (Carlini et al. 2022, eq. 4),
/// approximately Gaussian across models.
pub fn logit_confidence(p: &[f64], y: usize) -> f64 {
    p[y].max(FLOOR).ln() - others(p, y).max(FLOOR).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_on_a_known_vector() {
        let p = [0.7, 0.2, 0.1];
        assert!((loss(&p, 0) - 0.356_674_943_938_732_4).abs() < 1e-12);
        assert!((entropy(&p) - 0.801_818_552_543_337_2).abs() < 1e-12);
        assert_eq!((top1(&p), top1(&[0.1, 0.3, 0.6])), (0.7, 0.6));
        assert!((logit_confidence(&p, 0) - (0.7f64 / 0.3).ln()).abs() < 1e-12);
        let want = -0.3 * 0.7f64.ln() - 0.2 * 0.8f64.ln() - 0.1 * 0.9f64.ln();
        assert!((modified_entropy(&p, 0) - want).abs() < 1e-12);
    }

    #[test]
    fn extreme_vectors_stay_finite_and_ordered() {
        let sure = [1.0, 1e-20, 0.0];
        assert_eq!(loss(&sure, 0), 0.0);
        assert!((logit_confidence(&sure, 0) - 46.051_701_859_880_914).abs() < 1e-9);
        assert!(logit_confidence(&sure, 2).is_finite() && logit_confidence(&sure, 2) < -600.0);
        assert!(modified_entropy(&sure, 0) < modified_entropy(&sure, 1));
        assert!(modified_entropy(&sure, 1).is_finite());
    }
}
