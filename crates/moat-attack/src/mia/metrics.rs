//! Metrics of a membership-inference attack: member = positive, a higher score = "member".
//!
//! [`roc`] is the full ROC curve at every distinct score (the points scikit-learn's
//! `roc_curve(y, s, drop_intermediate=False)` returns, including the leading `(0, 0)`);
//! [`Metrics`] summarises it as ML Privacy Meter and TF-Privacy do:
//!
//! * **AUC** — the trapezoidal area under that curve (= the Mann–Whitney statistic with ties
//!   counted one half; what `roc_auc_score` computes);
//! * **advantage** — `max(TPR − FPR)` over thresholds (Yeom et al.);
//! * **balanced accuracy** — the best threshold's `(TPR + TNR) / 2 = (1 + advantage) / 2`;
//! * **TPR at 1 %, 0.1 % and 0 % FPR** — the largest TPR among the curve's points with
//!   `FPR ≤` the bound (no interpolation), so TPR@0 % counts the members scored above every
//!   non-member.
//!
//! ```
//! use moat_attack::mia::metrics::Metrics;
//!
//! let m = Metrics::compute(&[0.9, 0.8, 0.3, 0.1], &[true, false, true, false])?;
//! assert_eq!(m.auc, 0.75);
//! assert_eq!(m.tpr_at_0_fpr, 0.5);
//! # Ok::<(), moat_attack::mia::MiaError>(())
//! ```

use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};

/// One point of a ROC curve: the rates when every score `>= threshold` is called a member.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// False-positive rate (non-members called members).
    pub fpr: f64,
    /// True-positive rate (members called members).
    pub tpr: f64,
    /// The decision threshold (`+∞` for the first point; serialised as `null` in JSON).
    pub threshold: f64,
}

/// The full ROC curve of `scores` against the ground truth `is_member`, one point per distinct
/// score in decreasing order after a leading `(0, 0)`. Fails on NaN or infinite scores, on
/// length mismatch, and when either class is empty.
pub fn roc(scores: &[f64], is_member: &[bool]) -> Result<Vec<RocPoint>> {
    if scores.len() != is_member.len() {
        return Err(invalid(format!("{} scores for {} ground-truth labels", scores.len(), is_member.len())));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(invalid(format!("score {i} is not finite ({})", scores[i])));
    }
    let positives = is_member.iter().filter(|&&m| m).count();
    let negatives = is_member.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(invalid(format!("need members and non-members, got {positives} and {negatives}")));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![RocPoint { fpr: 0.0, tpr: 0.0, threshold: f64::INFINITY }];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if is_member[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_value = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_value {
            points.push(RocPoint {
                fpr: fp as f64 / negatives as f64,
                tpr: tp as f64 / positives as f64,
                threshold: scores[i],
            });
        }
    }
    Ok(points)
}

/// The largest TPR among the points of `curve` with FPR at most `fpr`.
pub fn tpr_at_fpr(curve: &[RocPoint], fpr: f64) -> f64 {
    curve.iter().filter(|p| p.fpr <= fpr).map(|p| p.tpr).fold(0.0, f64::max)
}

/// The trapezoidal area under `curve`.
pub fn auc(curve: &[RocPoint]) -> f64 {
    curve.windows(2).map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0).sum()
}

/// The summary of one attack's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Area under the ROC curve.
    pub auc: f64,
    /// Best-threshold balanced accuracy, `(1 + advantage) / 2`.
    pub balanced_accuracy: f64,
    /// Membership advantage `max(TPR − FPR)`.
    pub advantage: f64,
    /// TPR at FPR ≤ 1 %.
    pub tpr_at_1pct_fpr: f64,
    /// TPR at FPR ≤ 0.1 %.
    pub tpr_at_0_1pct_fpr: f64,
    /// TPR at FPR = 0.
    pub tpr_at_0_fpr: f64,
    /// Members scored.
    pub members: usize,
    /// Non-members scored.
    pub non_members: usize,
}

impl Metrics {
    /// The metrics of `scores` (higher = member) against `is_member`.
    pub fn compute(scores: &[f64], is_member: &[bool]) -> Result<Self> {
        Ok(Self::from_curve(&roc(scores, is_member)?, is_member))
    }

    /// The metrics of an already computed curve.
    pub fn from_curve(curve: &[RocPoint], is_member: &[bool]) -> Self {
        let members = is_member.iter().filter(|&&m| m).count();
        let advantage = curve.iter().map(|p| p.tpr - p.fpr).fold(0.0, f64::max);
        Self {
            auc: auc(curve),
            balanced_accuracy: (1.0 + advantage) / 2.0,
            advantage,
            tpr_at_1pct_fpr: tpr_at_fpr(curve, 0.01),
            tpr_at_0_1pct_fpr: tpr_at_fpr(curve, 0.001),
            tpr_at_0_fpr: tpr_at_fpr(curve, 0.0),
            members,
            non_members: is_member.len() - members,
        }
    }
}

/// One attack's per-sample scores on one output kind, exportable so anyone can recompute the
/// metrics (`index` is the sample's position in the dataset it was drawn from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreTable {
    /// The attack.
    pub attack: String,
    /// The output kind it read (e.g. `float`, `simulated-2pc`).
    pub output: String,
    /// Dataset index of each sample.
    pub index: Vec<usize>,
    /// Ground truth: member of the victim's training set.
    pub member: Vec<bool>,
    /// The attack's score (higher = member).
    pub score: Vec<f64>,
}

impl ScoreTable {
    /// The table as CSV: `index,member,score` with `member` 0/1 and scores printed with the
    /// shortest representation that reads back to the same `f64`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("index,member,score\n");
        for ((i, m), s) in self.index.iter().zip(&self.member).zip(&self.score) {
            out.push_str(&format!("{i},{},{s:?}\n", u8::from(*m)));
        }
        out
    }

    /// Writes `<stem>.csv` and `<stem>.json` into `dir`.
    pub fn write(&self, dir: &std::path::Path, stem: &str) -> Result<()> {
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| super::MiaError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let csv = dir.join(format!("{stem}.csv"));
        std::fs::write(&csv, self.to_csv()).map_err(io(&csv))?;
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string(self).map_err(|e| invalid(format!("serialising scores: {e}")))?;
        std::fs::write(&json, text).map_err(io(&json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_inverted_separation() -> Result<()> {
        let member = [true, true, false, false];
        let m = Metrics::compute(&[4.0, 3.0, 2.0, 1.0], &member)?;
        assert_eq!((m.auc, m.advantage, m.balanced_accuracy), (1.0, 1.0, 1.0));
        assert_eq!((m.tpr_at_1pct_fpr, m.tpr_at_0_1pct_fpr, m.tpr_at_0_fpr), (1.0, 1.0, 1.0));
        let m = Metrics::compute(&[1.0, 2.0, 3.0, 4.0], &member)?;
        assert_eq!((m.auc, m.advantage, m.balanced_accuracy, m.tpr_at_0_fpr), (0.0, 0.0, 0.5, 0.0));
        Ok(())
    }

    #[test]
    fn constant_scores_are_chance_and_ties_count_half() -> Result<()> {
        let m = Metrics::compute(&[0.5; 6], &[true, false, true, false, true, false])?;
        assert_eq!((m.auc, m.tpr_at_1pct_fpr, m.tpr_at_0_fpr), (0.5, 0.0, 0.0));
        let curve = roc(&[0.5; 6], &[true, false, true, false, true, false])?;
        assert_eq!(curve.len(), 2);
        // One member tied with one non-member at the top: the tie is worth ½.
        let m = Metrics::compute(&[1.0, 1.0, 0.0], &[true, false, false])?;
        assert_eq!(m.auc, 0.75);
        Ok(())
    }

    #[test]
    fn known_curve() -> Result<()> {
        // scikit-learn: roc_curve([1,0,1,0,1], [.9,.8,.7,.6,.2], drop_intermediate=False)
        // fpr = [0, 0, .5, .5, 1, 1], tpr = [0, 1/3, 1/3, 2/3, 2/3, 1]; roc_auc_score = 0.5.
        let member = [true, false, true, false, true];
        let curve = roc(&[0.9, 0.8, 0.7, 0.6, 0.2], &member)?;
        let fpr: Vec<f64> = curve.iter().map(|p| p.fpr).collect();
        let tpr: Vec<f64> = curve.iter().map(|p| p.tpr).collect();
        assert_eq!(fpr, [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]);
        assert_eq!(tpr, [0.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0]);
        let m = Metrics::from_curve(&curve, &member);
        assert!((m.auc - 0.5).abs() < 1e-15);
        assert!((m.advantage - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(m.tpr_at_0_fpr, 1.0 / 3.0);
        Ok(())
    }

    #[test]
    fn low_fpr_needs_many_non_members() -> Result<()> {
        // 1,000 non-members scored 0..999, members at 998.5 and 10,000: at FPR ≤ 0.1 % one
        // non-member (999) may be above the threshold, so both members count.
        let mut scores: Vec<f64> = (0..1000).map(f64::from).collect();
        let mut member = vec![false; 1000];
        scores.extend([998.5, 10_000.0]);
        member.extend([true, true]);
        let m = Metrics::compute(&scores, &member)?;
        assert_eq!((m.tpr_at_0_fpr, m.tpr_at_0_1pct_fpr, m.tpr_at_1pct_fpr), (0.5, 1.0, 1.0));
        Ok(())
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Metrics::compute(&[1.0], &[true, false]).is_err());
        assert!(Metrics::compute(&[1.0, f64::NAN], &[true, false]).is_err());
        assert!(Metrics::compute(&[1.0, f64::INFINITY], &[true, false]).is_err());
        assert!(Metrics::compute(&[1.0, 2.0], &[true, true]).is_err());
    }

    #[test]
    fn csv_round_trips_scores_exactly() {
        let table = ScoreTable {
            attack: "loss".into(),
            output: "float".into(),
            index: vec![3, 9],
            member: vec![true, false],
            score: vec![0.1 + 0.2, -1e-300],
        };
        let csv = table.to_csv();
        let parsed: Vec<f64> =
            csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap_or("").parse().unwrap_or(0.0)).collect();
        assert_eq!(parsed, table.score);
        assert!(csv.starts_with("index,member,score\n3,1,"));
    }
}
