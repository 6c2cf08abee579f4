//! Defenses against membership inference on what a service reveals, and their measurement.
//!
//! * [`defender`]: the server's defender `h` — an MLP that tells its own members from held-out
//!   data by their probability vectors — trained and stored as a file marked secret.
//! * [`memguard`]: MemGuard (Jia et al., CCS 2019) in plaintext: noise on the revealed
//!   probabilities that fools `h` while keeping the label (the guard of the plaintext OIP path).
//! * [`guarded`]: membership-inference [`crate::mia::Victim`]s answering through a guard —
//!   MemGuard over any victim, SIGuard (`moat_mpc::ring_ops::siguard`) over the plaintext
//!   fixed-point ring operations the two-party protocol is tested bit-identical against — with
//!   the guard's label agreement and distortion counted.
//!
//! The defenses live here, beside the attacks, rather than in `moat-serve`: what defines them is
//! the attack they answer (the defender is trained as a membership attacker on the server's own
//! data), their unit tests and the measurement need the attacks' [`crate::mia::Victim`] and
//! metrics, and SIGuard's protocol half already lives in `moat-mpc`. A server that serves
//! MemGuard calls [`memguard::MemGuard::guard`], a pure function of the revealed vector.
//!
//! ## What a label-keeping guard cannot hide
//!
//! MemGuard and SIGuard keep the predicted label, so the gap attack (member ⇔ the label is
//! right) sees the same answers with and without them, and every attacker who knows the true
//! label can compute it from any guarded answer. Its AUC is exactly
//! [`label_keeping_floor`]`(a_m, a_n) = 0.5 + (a_m − a_n)/2` for accuracies `a_m` on the
//! members and `a_n` on the non-members: no label-keeping guard brings the best label-aware
//! attack below it. The victim class (train ≥ 95 %, test ≤ 70 %) has a floor ≥ 0.625,
//! so "every score-based attack at AUC ≤ 0.55" cannot hold there against an attacker who
//! uses the label well (loss, modified entropy, RMIA or LiRA, each read together with the
//! label's correctness); one fixed score can be pushed lower, but the attacker then falls
//! back on the gap attack. Label-free scores (entropy) can reach 0.5. The overfit
//! CIFAR-10 LeNet-5 of BENCHMARKS.md: `a_m` = 0.997, `a_n` = 0.407 on its unseen training
//! images → 0.795, the measured gap AUC (0.806 with its test accuracy 0.385).
//!
//! The floor is reachable for the threshold attacks: an answer that depends on the label only
//! ([`flattened`]: `c` on the label, the rest spread evenly) makes `p_y` and the modified
//! entropy functions of correctness, so those attacks score the gap attack's AUC and the
//! label-free ones 0.5 (the test below). A guard may push one threshold attack below the
//! floor (answers that give some misclassified queries' true class more weight than some
//! correct answers' label), but that buys nothing: the attacker runs the gap attack instead.
//! Measured on that victim (BENCHMARKS.md, SIGuard sections; 1,000 + 1,000 targets, labels
//! kept on every answer), loss / modified entropy / entropy AUC: unguarded 0.856 / 0.857 /
//! 0.740; SIGuard as in the paper (c₃ = 0.1, lr 0.2) 0.822 / 0.821 / 0.641 (L1 0.18);
//! c₃ = 0, lr 0.5: 0.804 / 0.802 / 0.587 (L1 0.22); c₃ = 0, lr 1: 0.779 / 0.778 / 0.490
//! (L1 0.31) — and gap 0.795 throughout.

pub mod defender;
pub mod guarded;
pub mod memguard;

pub use defender::{DefenderFile, DefenderInput, DefenderMeta};
pub use guarded::{GuardStats, GuardSummary, MemGuardVictim, ServedGuardVictim, SiGuardVictim};
pub use memguard::{Guarded, MemGuard, MemGuardConfig};

use thiserror::Error;

/// What can stop a defense.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DefenseError {
    /// Inconsistent inputs (sizes, a defender of the wrong width or kind, empty sets).
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a defender file failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A defender file is not valid JSON of the expected format.
    #[error("{path}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The ring operations (SIGuard, the defender's encoding) failed.
    #[error("ring: {0}")]
    Ring(#[from] moat_mpc::MpcError),
}

/// Result with [`DefenseError`].
pub type Result<T> = std::result::Result<T, DefenseError>;

/// The AUC of the gap attack (member ⇔ the revealed label is right) against members answered
/// with accuracy `member_accuracy` and non-members with `non_member_accuracy`: `0.5 + (a_m −
/// a_n)/2` (its ROC has one corner, at `(a_n, a_m)`). A guard that keeps the label leaves it
/// unchanged; see the module documentation.
pub fn label_keeping_floor(member_accuracy: f64, non_member_accuracy: f64) -> f64 {
    0.5 + (member_accuracy - non_member_accuracy) / 2.0
}

/// The most a label-keeping guard can flatten an answer to: `top` on `label`, `(1 − top)/(C −
/// 1)` on each of the other `classes − 1` classes (`top` above `1/C` keeps the label). Every
/// answer with the same label is the same vector, so it reveals the label and nothing more.
pub fn flattened(label: usize, classes: usize, top: f64) -> Vec<f64> {
    let rest = if classes > 1 { (1.0 - top) / (classes - 1) as f64 } else { 0.0 };
    (0..classes).map(|j| if j == label { top } else { rest }).collect()
}

pub(crate) fn invalid(message: impl Into<String>) -> DefenseError {
    DefenseError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mia::Metrics;
    use crate::mia::signals::{confidence, entropy, modified_entropy};

    /// On answers flattened to the label, the label-aware threshold attacks score exactly the
    /// gap attack's AUC, `label_keeping_floor`, and the label-free entropy 0.5.
    #[test]
    fn flattened_answers_bring_the_threshold_attacks_down_to_the_gap_floor()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let classes = 10;
        // 20 members, 19 answered right; 20 non-members, 8 right (wrong answers: label y + 1).
        let mut truth = Vec::new();
        let mut answers = Vec::new();
        for i in 0..40 {
            let member = i < 20;
            let right = if member { i != 0 } else { i < 28 };
            let y = i % classes;
            let label = if right { y } else { (y + 1) % classes };
            truth.push(member);
            answers.push((flattened(label, classes, 0.6), y, right));
        }
        let floor = label_keeping_floor(19.0 / 20.0, 8.0 / 20.0);
        // Scores rounded to 10⁻⁹: the signals sum in class order, so equal answers up to a
        // permutation differ in the last bits, which would break the ties at random.
        let auc = |scores: Vec<f64>| {
            let rounded: Vec<f64> = scores.iter().map(|s| (s * 1e9).round()).collect();
            Metrics::compute(&rounded, &truth).map(|m| m.auc)
        };
        let gap = auc(answers.iter().map(|(_, _, right)| f64::from(u8::from(*right))).collect())?;
        let conf = auc(answers.iter().map(|(p, y, _)| confidence(p, *y)).collect())?;
        let mentr = auc(answers.iter().map(|(p, y, _)| -modified_entropy(p, *y)).collect())?;
        let ent = auc(answers.iter().map(|(p, _, _)| -entropy(p)).collect())?;
        assert!((gap - floor).abs() < 1e-12 && (floor - 0.775).abs() < 1e-12, "gap {gap}, floor {floor}");
        assert!((conf - floor).abs() < 1e-12, "confidence {conf}");
        assert!((mentr - floor).abs() < 1e-12, "modified entropy {mentr}");
        assert!((ent - 0.5).abs() < 1e-12, "entropy {ent}");
        assert!(answers.iter().all(|(p, _, _)| (p.iter().sum::<f64>() - 1.0).abs() < 1e-12));
        Ok(())
    }
}
