//! Model selection for model-less (task) requests: the deterministic SLO policy, uniform
//! selection and the PSML defenses.
//!
//! A client asks a *task* for a prediction with a spec — a minimum accuracy `a_req` (percent)
//! and a maximum latency `l_req` (milliseconds) — and the server picks one model of the task's
//! zoo to answer. An attacker who can steer the choice (always triggering the same victim model)
//! can fingerprint and extract it (PSML, arXiv 2307.01292). The defenses randomise the choice:
//!
//! | policy | chooses | privacy |
//! |---|---|---|
//! | [`Policy::Fastest`] | the fastest feasible model, else the most accurate | none (deterministic) |
//! | [`Policy::Uniform`] | uniformly among feasible models, else the most accurate | none |
//! | [`Policy::Exponential`] | the exponential mechanism over the Pareto front: `Pr[r] ∝ exp(ε·u(r) / (2Δu))` | ε-DP in the spec |
//! | [`Policy::PermuteAndFlip`] | permute-and-flip over the Pareto front (McKenna & Sheldon 2020) | ε-DP in the spec |
//! | [`Policy::NoisySpec`] | the fastest feasible model under a spec with Laplace noise added | ε-DP in the spec |
//!
//! The utility of a model `r` with accuracy `a_r` and latency `l_r` is PSML's
//! `u(r) = [(1 − max(a_req − a_r, 0)/100) + (1 − max(l_r − l_req, 0)/100)] / 2`, of sensitivity
//! [`UTILITY_SENSITIVITY`] `= 0.01`. A model is *feasible* when `a_r ≥ a_req` and
//! `l_r ≤ l_req`; serving a request with a feasible model counts towards goodput.
//!
//! Every policy also has an exact [`Policy::distribution`], so tests (and operators choosing ε)
//! can compare what the sampler does with what it should do.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Sensitivity `Δu` of the PSML utility: how much one unit of change in the spec can move it.
pub const UTILITY_SENSITIVITY: f64 = 0.01;

/// Errors of policy and spec construction.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// ε is negative or not finite (or zero where the policy needs a positive ε).
    #[error("invalid privacy parameter epsilon = {epsilon} for policy '{policy}': {why}")]
    InvalidEpsilon {
        /// The policy.
        policy: PolicyKind,
        /// The value given.
        epsilon: f64,
        /// What was wrong.
        why: &'static str,
    },
    /// A noise sensitivity is not positive and finite.
    #[error("invalid noise sensitivity {name} = {value}: must be positive and finite")]
    InvalidSensitivity {
        /// Which sensitivity.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A spec value is out of range.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An unknown policy name.
    #[error("unknown selection policy '{0}' (expected fastest, uniform, exponential, permute-and-flip or noisy-spec)")]
    UnknownPolicy(String),
}

/// What the selector knows about one model: its profile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Top-1 accuracy in percent (0–100).
    pub accuracy: f64,
    /// Latency in milliseconds.
    pub latency_ms: f64,
}

/// A request's service-level spec. Unset fields place no constraint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// Minimum accuracy in percent (`0` when unset).
    pub min_accuracy: f64,
    /// Maximum latency in milliseconds (`+∞` when unset).
    pub max_latency_ms: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Self { min_accuracy: 0.0, max_latency_ms: f64::INFINITY }
    }
}

impl Spec {
    /// A validated spec: `min_accuracy` in `[0, 100]`, `max_latency_ms` positive; both finite.
    pub fn new(min_accuracy: Option<f64>, max_latency_ms: Option<f64>) -> Result<Self, PolicyError> {
        let mut spec = Spec::default();
        if let Some(a) = min_accuracy {
            if !a.is_finite() || !(0.0..=100.0).contains(&a) {
                return Err(PolicyError::InvalidSpec(format!("min_accuracy {a} is not a percentage in [0, 100]")));
            }
            spec.min_accuracy = a;
        }
        if let Some(l) = max_latency_ms {
            if !l.is_finite() || l <= 0.0 {
                return Err(PolicyError::InvalidSpec(format!("max_latency_ms {l} is not a positive number")));
            }
            spec.max_latency_ms = l;
        }
        Ok(spec)
    }
}

/// PSML's utility `u(r)` of a candidate under a spec (1 for every feasible candidate).
pub fn utility(candidate: &Candidate, spec: &Spec) -> f64 {
    let accuracy_shortfall = (spec.min_accuracy - candidate.accuracy).max(0.0);
    let latency_excess =
        if spec.max_latency_ms.is_finite() { (candidate.latency_ms - spec.max_latency_ms).max(0.0) } else { 0.0 };
    ((1.0 - accuracy_shortfall / 100.0) + (1.0 - latency_excess / 100.0)) / 2.0
}

/// True when the candidate meets the spec (it counts towards goodput).
pub fn feasible(candidate: &Candidate, spec: &Spec) -> bool {
    candidate.accuracy >= spec.min_accuracy && candidate.latency_ms <= spec.max_latency_ms
}

/// Indices of the Pareto-optimal candidates (no other candidate is at least as accurate and
/// at least as fast, and strictly better in one of the two), in input order. Candidates with
/// identical profiles are all kept.
pub fn pareto_front(candidates: &[Candidate]) -> Vec<usize> {
    let dominated = |i: usize| {
        let c = &candidates[i];
        candidates.iter().any(|d| {
            d.accuracy >= c.accuracy
                && d.latency_ms <= c.latency_ms
                && (d.accuracy > c.accuracy || d.latency_ms < c.latency_ms)
        })
    };
    (0..candidates.len()).filter(|&i| !dominated(i)).collect()
}

/// The fastest feasible candidate (ties: more accurate, then lower index); when none is
/// feasible, the most accurate one (ties: faster, then lower index). `None` only when empty.
pub fn fastest_feasible(candidates: &[Candidate], spec: &Spec) -> Option<usize> {
    let fastest = (0..candidates.len()).filter(|&i| feasible(&candidates[i], spec)).min_by(|&i, &j| {
        let (a, b) = (&candidates[i], &candidates[j]);
        a.latency_ms.total_cmp(&b.latency_ms).then(b.accuracy.total_cmp(&a.accuracy)).then(i.cmp(&j))
    });
    fastest.or_else(|| most_accurate(candidates))
}

/// The most accurate candidate (ties: faster, then lower index).
pub fn most_accurate(candidates: &[Candidate]) -> Option<usize> {
    (0..candidates.len()).min_by(|&i, &j| {
        let (a, b) = (&candidates[i], &candidates[j]);
        b.accuracy.total_cmp(&a.accuracy).then(a.latency_ms.total_cmp(&b.latency_ms)).then(i.cmp(&j))
    })
}

/// The name of a selection policy, as written in `tasks.json` and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// [`Policy::Exponential`].
    Exponential,
    /// [`Policy::Fastest`].
    Fastest,
    /// [`Policy::NoisySpec`].
    NoisySpec,
    /// [`Policy::PermuteAndFlip`].
    PermuteAndFlip,
    /// [`Policy::Uniform`].
    Uniform,
}

impl PolicyKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Exponential => "exponential",
            PolicyKind::Fastest => "fastest",
            PolicyKind::NoisySpec => "noisy-spec",
            PolicyKind::PermuteAndFlip => "permute-and-flip",
            PolicyKind::Uniform => "uniform",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        [
            PolicyKind::Exponential,
            PolicyKind::Fastest,
            PolicyKind::NoisySpec,
            PolicyKind::PermuteAndFlip,
            PolicyKind::Uniform,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| PolicyError::UnknownPolicy(s.to_string()))
    }
}

/// Scale of the Laplace noise [`Policy::NoisySpec`] adds to each spec dimension: the noise on
/// the accuracy is `Lap(accuracy / ε)` percentage points, on the latency `Lap(latency_ms / ε)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSensitivity {
    /// Sensitivity of the accuracy requirement, in percentage points.
    pub accuracy: f64,
    /// Sensitivity of the latency requirement, in milliseconds.
    pub latency_ms: f64,
}

impl Default for NoiseSensitivity {
    fn default() -> Self {
        Self { accuracy: 1.0, latency_ms: 1.0 }
    }
}

/// A validated selection policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// Exponential mechanism over the Pareto front: `Pr[r] ∝ exp(ε·u(r) / (2Δu))`.
    Exponential {
        /// Privacy parameter ε ≥ 0 (0: uniform over the front).
        epsilon: f64,
    },
    /// The fastest feasible model, else the most accurate.
    Fastest,
    /// Laplace noise on both spec dimensions, then [`Policy::Fastest`] under the noisy spec.
    NoisySpec {
        /// Privacy parameter ε > 0.
        epsilon: f64,
        /// Noise scale per unit of ε.
        sensitivity: NoiseSensitivity,
    },
    /// Permute-and-flip over the Pareto front: visit the front in a uniformly random order and
    /// stop at `r` with probability `exp(ε·(u(r) − u*) / (2Δu))`, `u*` the best utility.
    PermuteAndFlip {
        /// Privacy parameter ε ≥ 0 (0: uniform over the front).
        epsilon: f64,
    },
    /// Uniform over the feasible models, else the most accurate.
    Uniform,
}

impl Policy {
    /// Builds a policy of `kind`; `epsilon` is ignored by the deterministic and uniform ones.
    pub fn new(kind: PolicyKind, epsilon: f64, sensitivity: NoiseSensitivity) -> Result<Self, PolicyError> {
        let check = |positive: bool| {
            if !epsilon.is_finite() || epsilon < 0.0 {
                return Err(PolicyError::InvalidEpsilon { policy: kind, epsilon, why: "must be finite and >= 0" });
            }
            if positive && epsilon == 0.0 {
                return Err(PolicyError::InvalidEpsilon { policy: kind, epsilon, why: "must be > 0" });
            }
            Ok(epsilon)
        };
        Ok(match kind {
            PolicyKind::Exponential => Policy::Exponential { epsilon: check(false)? },
            PolicyKind::Fastest => Policy::Fastest,
            PolicyKind::NoisySpec => {
                for (name, value) in [("accuracy", sensitivity.accuracy), ("latency_ms", sensitivity.latency_ms)] {
                    if !value.is_finite() || value <= 0.0 {
                        return Err(PolicyError::InvalidSensitivity { name, value });
                    }
                }
                Policy::NoisySpec { epsilon: check(true)?, sensitivity }
            }
            PolicyKind::PermuteAndFlip => Policy::PermuteAndFlip { epsilon: check(false)? },
            PolicyKind::Uniform => Policy::Uniform,
        })
    }

    /// The policy's name.
    pub fn kind(&self) -> PolicyKind {
        match self {
            Policy::Exponential { .. } => PolicyKind::Exponential,
            Policy::Fastest => PolicyKind::Fastest,
            Policy::NoisySpec { .. } => PolicyKind::NoisySpec,
            Policy::PermuteAndFlip { .. } => PolicyKind::PermuteAndFlip,
            Policy::Uniform => PolicyKind::Uniform,
        }
    }

    /// ε, for the randomised-response policies.
    pub fn epsilon(&self) -> Option<f64> {
        match self {
            Policy::Exponential { epsilon }
            | Policy::NoisySpec { epsilon, .. }
            | Policy::PermuteAndFlip { epsilon } => Some(*epsilon),
            Policy::Fastest | Policy::Uniform => None,
        }
    }

    /// Draws one candidate index; `None` only when `candidates` is empty.
    pub fn select<R: Rng + ?Sized>(&self, candidates: &[Candidate], spec: &Spec, rng: &mut R) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        match *self {
            Policy::Fastest => fastest_feasible(candidates, spec),
            Policy::Uniform => {
                let feasible: Vec<usize> = (0..candidates.len()).filter(|&i| feasible(&candidates[i], spec)).collect();
                if feasible.is_empty() {
                    most_accurate(candidates)
                } else {
                    Some(feasible[rng.random_range(0..feasible.len())])
                }
            }
            Policy::Exponential { epsilon } => {
                let front = pareto_front(candidates);
                let weights = exponential_weights(candidates, &front, spec, epsilon);
                let total: f64 = weights.iter().sum();
                let mut x = rng.random::<f64>() * total;
                for (&i, w) in front.iter().zip(&weights) {
                    if x < *w {
                        return Some(i);
                    }
                    x -= w;
                }
                // Rounding left x just above the last weight: the last candidate.
                front.last().copied()
            }
            Policy::PermuteAndFlip { epsilon } => {
                let mut front = pareto_front(candidates);
                let best = front.iter().map(|&i| utility(&candidates[i], spec)).fold(f64::NEG_INFINITY, f64::max);
                front.shuffle(rng);
                // The best candidate accepts with probability exp(0) = 1 > random() ∈ [0, 1), so
                // one pass over the permutation always returns.
                front
                    .iter()
                    .copied()
                    .find(|&i| rng.random::<f64>() < flip_probability(candidates[i], spec, best, epsilon))
            }
            Policy::NoisySpec { epsilon, sensitivity } => {
                let noisy = Spec {
                    min_accuracy: spec.min_accuracy + laplace(rng, sensitivity.accuracy / epsilon),
                    max_latency_ms: spec.max_latency_ms + laplace(rng, sensitivity.latency_ms / epsilon),
                };
                fastest_feasible(candidates, &noisy)
            }
        }
    }

    /// The exact probability of selecting each candidate (sums to 1; empty when `candidates` is).
    pub fn distribution(&self, candidates: &[Candidate], spec: &Spec) -> Vec<f64> {
        let n = candidates.len();
        let mut p = vec![0.0; n];
        if n == 0 {
            return p;
        }
        let one_hot = |i: Option<usize>, p: &mut Vec<f64>| {
            if let Some(i) = i {
                p[i] = 1.0;
            }
        };
        match *self {
            Policy::Fastest => one_hot(fastest_feasible(candidates, spec), &mut p),
            Policy::Uniform => {
                let feasible: Vec<usize> = (0..n).filter(|&i| feasible(&candidates[i], spec)).collect();
                if feasible.is_empty() {
                    one_hot(most_accurate(candidates), &mut p);
                } else {
                    feasible.iter().for_each(|&i| p[i] = 1.0 / feasible.len() as f64);
                }
            }
            Policy::Exponential { epsilon } => {
                let front = pareto_front(candidates);
                let weights = exponential_weights(candidates, &front, spec, epsilon);
                let total: f64 = weights.iter().sum();
                front.iter().zip(&weights).for_each(|(&i, w)| p[i] = w / total);
            }
            Policy::PermuteAndFlip { epsilon } => {
                let front = pareto_front(candidates);
                let best = front.iter().map(|&i| utility(&candidates[i], spec)).fold(f64::NEG_INFINITY, f64::max);
                let flips: Vec<f64> =
                    front.iter().map(|&i| flip_probability(candidates[i], spec, best, epsilon)).collect();
                for (k, &i) in front.iter().enumerate() {
                    p[i] = permute_and_flip_probability(&flips, k);
                }
            }
            Policy::NoisySpec { epsilon, sensitivity } => {
                let accuracy_cells = accuracy_cells(candidates, spec.min_accuracy, sensitivity.accuracy / epsilon);
                let latency_cells = latency_cells(candidates, spec.max_latency_ms, sensitivity.latency_ms / epsilon);
                for &(min_accuracy, pa) in &accuracy_cells {
                    for &(max_latency_ms, pl) in &latency_cells {
                        if let Some(i) = fastest_feasible(candidates, &Spec { min_accuracy, max_latency_ms }) {
                            p[i] += pa * pl;
                        }
                    }
                }
            }
        }
        p
    }
}

/// Unnormalised exponential-mechanism weights of the `front` candidates, shifted by the best
/// utility so the largest weight is 1 (no overflow at large ε).
fn exponential_weights(candidates: &[Candidate], front: &[usize], spec: &Spec, epsilon: f64) -> Vec<f64> {
    let utilities: Vec<f64> = front.iter().map(|&i| utility(&candidates[i], spec)).collect();
    let best = utilities.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    utilities.iter().map(|u| (epsilon * (u - best) / (2.0 * UTILITY_SENSITIVITY)).exp()).collect()
}

/// Permute-and-flip's acceptance probability `exp(ε·(u(r) − u*) / (2Δu))`.
fn flip_probability(candidate: Candidate, spec: &Spec, best: f64, epsilon: f64) -> f64 {
    (epsilon * (utility(&candidate, spec) - best) / (2.0 * UTILITY_SENSITIVITY)).exp()
}

/// Probability that permute-and-flip returns candidate `r` given every candidate's acceptance
/// probability `p`: `r` sits at position `k + 1` of the random permutation with probability
/// `1/n`, its `k` predecessors are then a uniform `k`-subset `S` of the others, all of which
/// must reject: `Pr[r] = p_r / n · Σ_k e_k(q_{−r}) / C(n−1, k)`, with `q = 1 − p` and `e_k`
/// the elementary symmetric polynomials. O(n²).
fn permute_and_flip_probability(p: &[f64], r: usize) -> f64 {
    let n = p.len();
    // e[k] = e_k(q of the candidates other than r), by the usual product expansion.
    let mut e = vec![0.0; n];
    e[0] = 1.0;
    let mut m = 0;
    for (j, &pj) in p.iter().enumerate() {
        if j == r {
            continue;
        }
        m += 1;
        let q = 1.0 - pj;
        for k in (1..=m).rev() {
            e[k] += e[k - 1] * q;
        }
    }
    let mut binomial = 1.0; // C(n − 1, k)
    let mut sum = 0.0;
    for (k, ek) in e.iter().enumerate() {
        sum += ek / binomial;
        binomial = binomial * (n - 1 - k) as f64 / (k + 1) as f64;
    }
    p[r] / n as f64 * sum
}

/// One Laplace(0, `scale`) draw by inversion.
fn laplace<R: Rng + ?Sized>(rng: &mut R, scale: f64) -> f64 {
    let u = rng.random::<f64>() - 0.5; // [−0.5, 0.5)
    let tail = (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE);
    -scale * u.signum() * tail.ln()
}

/// CDF of Laplace(`mean`, `scale`).
fn laplace_cdf(x: f64, mean: f64, scale: f64) -> f64 {
    if x == f64::INFINITY {
        1.0
    } else if x == f64::NEG_INFINITY {
        0.0
    } else if x < mean {
        0.5 * ((x - mean) / scale).exp()
    } else {
        1.0 - 0.5 * (-(x - mean) / scale).exp()
    }
}

/// The noisy minimum accuracy only matters through which candidates it admits, which changes
/// only at the candidates' accuracies: one representative value per interval
/// `(a_(k−1), a_(k)]` (plus the one above the best) with the interval's probability.
fn accuracy_cells(candidates: &[Candidate], mean: f64, scale: f64) -> Vec<(f64, f64)> {
    let mut cuts: Vec<f64> = candidates.iter().map(|c| c.accuracy).collect();
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let mut cells = Vec::with_capacity(cuts.len() + 1);
    let mut lower = f64::NEG_INFINITY;
    for &cut in &cuts {
        cells.push((cut, laplace_cdf(cut, mean, scale) - laplace_cdf(lower, mean, scale)));
        lower = cut;
    }
    let above = cuts.last().map_or(0.0, |c| c + 1.0);
    cells.push((above, 1.0 - laplace_cdf(lower, mean, scale)));
    cells
}

/// As [`accuracy_cells`] for the noisy maximum latency: intervals `[l_(k), l_(k+1))` (plus the
/// one below the fastest). An unset (infinite) latency stays unset.
fn latency_cells(candidates: &[Candidate], mean: f64, scale: f64) -> Vec<(f64, f64)> {
    if mean == f64::INFINITY {
        return vec![(f64::INFINITY, 1.0)];
    }
    let mut cuts: Vec<f64> = candidates.iter().map(|c| c.latency_ms).collect();
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let below = cuts.first().map_or(0.0, |c| c - 1.0);
    let mut cells = Vec::with_capacity(cuts.len() + 1);
    let mut lower = f64::NEG_INFINITY;
    let mut representative = below;
    for &cut in &cuts {
        cells.push((representative, laplace_cdf(cut, mean, scale) - laplace_cdf(lower, mean, scale)));
        lower = cut;
        representative = cut;
    }
    cells.push((representative, 1.0 - laplace_cdf(lower, mean, scale)));
    cells
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn c(accuracy: f64, latency_ms: f64) -> Candidate {
        Candidate { accuracy, latency_ms }
    }

    /// A zoo with a real front: fast-and-weak to slow-and-strong, plus one dominated model.
    fn zoo() -> Vec<Candidate> {
        vec![c(90.0, 1.0), c(94.0, 3.0), c(97.0, 8.0), c(93.0, 9.0)]
    }

    fn spec(a: f64, l: f64) -> Result<Spec, PolicyError> {
        Spec::new(Some(a), Some(l))
    }

    #[test]
    fn utility_matches_the_psml_formula() -> Result<(), PolicyError> {
        let s = spec(95.0, 5.0)?;
        assert_eq!(utility(&c(97.0, 4.0), &s), 1.0);
        // 5 points short, 3 ms over: ((1 - 0.05) + (1 - 0.03)) / 2.
        assert!((utility(&c(90.0, 8.0), &s) - 0.96).abs() < 1e-12);
        assert!((utility(&c(95.0, 25.0), &s) - 0.9).abs() < 1e-12);
        // An unset latency never costs anything.
        assert_eq!(utility(&c(95.0, 1e9), &Spec::new(Some(95.0), None)?), 1.0);
        assert!(feasible(&c(95.0, 5.0), &s) && !feasible(&c(94.9, 1.0), &s) && !feasible(&c(99.0, 5.1), &s));
        Ok(())
    }

    #[test]
    fn spec_rejects_nonsense() {
        assert!(Spec::new(Some(101.0), None).is_err());
        assert!(Spec::new(Some(f64::NAN), None).is_err());
        assert!(Spec::new(None, Some(0.0)).is_err());
        assert!(Spec::new(None, Some(-3.0)).is_err());
        assert!(Policy::new(PolicyKind::Exponential, -1.0, NoiseSensitivity::default()).is_err());
        assert!(Policy::new(PolicyKind::NoisySpec, 0.0, NoiseSensitivity::default()).is_err());
        let bad = NoiseSensitivity { accuracy: 0.0, latency_ms: 1.0 };
        assert!(Policy::new(PolicyKind::NoisySpec, 1.0, bad).is_err());
        assert_eq!("permute-and-flip".parse::<PolicyKind>(), Ok(PolicyKind::PermuteAndFlip));
        assert!("fastest-ish".parse::<PolicyKind>().is_err());
    }

    #[test]
    fn pareto_front_drops_dominated_models() {
        assert_eq!(pareto_front(&zoo()), vec![0, 1, 2]);
        // Identical profiles are both kept; a strictly better one removes both.
        assert_eq!(pareto_front(&[c(90.0, 1.0), c(90.0, 1.0)]), vec![0, 1]);
        assert_eq!(pareto_front(&[c(90.0, 1.0), c(90.0, 1.0), c(91.0, 1.0)]), vec![2]);
    }

    #[test]
    fn fastest_picks_the_fastest_feasible_else_the_most_accurate() -> Result<(), PolicyError> {
        let zoo = zoo();
        let p = Policy::Fastest;
        assert_eq!(p.distribution(&zoo, &spec(93.0, 10.0)?), vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(p.distribution(&zoo, &spec(99.0, 10.0)?), vec![0.0, 0.0, 1.0, 0.0]);
        assert_eq!(p.distribution(&zoo, &Spec::default()), vec![1.0, 0.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn uniform_spreads_over_feasible_models() -> Result<(), PolicyError> {
        let zoo = zoo();
        let p = Policy::Uniform.distribution(&zoo, &spec(93.0, 10.0)?);
        assert_eq!(p, vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
        assert_eq!(Policy::Uniform.distribution(&zoo, &spec(99.0, 0.5)?), vec![0.0, 0.0, 1.0, 0.0]);
        Ok(())
    }

    #[test]
    fn exponential_probabilities_are_exact() -> Result<(), PolicyError> {
        let zoo = zoo();
        let s = spec(96.0, 2.0)?;
        // Utilities on the front: 90/1ms: ((1-.06)+1)/2 = .97; 94/3ms: ((1-.02)+(1-.01))/2 = .985;
        // 97/8ms: (1 + (1-.06))/2 = .97. Weights exp(ε u / 0.02) with ε = 0.1.
        let eps = 0.1;
        let p = Policy::new(PolicyKind::Exponential, eps, NoiseSensitivity::default())?.distribution(&zoo, &s);
        let w: Vec<f64> = [0.97, 0.985, 0.97].iter().map(|u| (eps * u / 0.02f64).exp()).collect();
        let total: f64 = w.iter().sum();
        for (got, want) in p.iter().zip([w[0] / total, w[1] / total, w[2] / total, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{p:?}");
        }
        // ε = 0 is uniform over the front; the dominated model is never chosen.
        let p0 = Policy::new(PolicyKind::Exponential, 0.0, NoiseSensitivity::default())?.distribution(&zoo, &s);
        assert_eq!(p0, vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]);
        Ok(())
    }

    /// Brute force over all permutations, independent of the subset formula.
    fn permute_and_flip_brute_force(flips: &[f64]) -> Vec<f64> {
        fn permutations(items: Vec<usize>) -> Vec<Vec<usize>> {
            if items.len() <= 1 {
                return vec![items];
            }
            let mut out = Vec::new();
            for i in 0..items.len() {
                let mut rest = items.clone();
                let first = rest.remove(i);
                for mut tail in permutations(rest) {
                    tail.insert(0, first);
                    out.push(tail);
                }
            }
            out
        }
        let perms = permutations((0..flips.len()).collect());
        let mut p = vec![0.0; flips.len()];
        for perm in &perms {
            let mut reach = 1.0;
            for &r in perm {
                p[r] += reach * flips[r] / perms.len() as f64;
                reach *= 1.0 - flips[r];
            }
        }
        p
    }

    #[test]
    fn permute_and_flip_probabilities_are_exact() -> Result<(), PolicyError> {
        // Two candidates: the best always accepts, so Pr[other] = p/2.
        assert!((permute_and_flip_probability(&[1.0, 0.3], 1) - 0.15).abs() < 1e-15);
        assert!((permute_and_flip_probability(&[1.0, 0.3], 0) - 0.85).abs() < 1e-15);
        for flips in [vec![1.0, 0.2, 0.7, 0.05], vec![0.5, 1.0, 0.5, 0.25, 0.9]] {
            let brute = permute_and_flip_brute_force(&flips);
            for (r, want) in brute.iter().enumerate() {
                assert!((permute_and_flip_probability(&flips, r) - want).abs() < 1e-12, "{r}: {brute:?}");
            }
        }
        let zoo = zoo();
        let s = spec(96.0, 2.0)?;
        let p = Policy::new(PolicyKind::PermuteAndFlip, 0.1, NoiseSensitivity::default())?.distribution(&zoo, &s);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(p[3], 0.0);
        // The best (94 %, 3 ms) is more likely than under the exponential mechanism (PF
        // dominates EM in expected utility).
        let em = Policy::new(PolicyKind::Exponential, 0.1, NoiseSensitivity::default())?.distribution(&zoo, &s);
        assert!(p[1] > em[1], "pf {p:?} em {em:?}");
        Ok(())
    }

    #[test]
    fn noisy_spec_distribution_limits() -> Result<(), PolicyError> {
        let zoo = zoo();
        let s = spec(93.5, 5.0)?;
        let sens = NoiseSensitivity::default();
        // Huge ε: no noise, the fastest feasible model.
        let sharp = Policy::new(PolicyKind::NoisySpec, 1e6, sens)?.distribution(&zoo, &s);
        assert!((sharp[1] - 1.0).abs() < 1e-9, "{sharp:?}");
        let p = Policy::new(PolicyKind::NoisySpec, 0.5, sens)?.distribution(&zoo, &s);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{p:?}");
        // Noise sometimes admits the fast weak model or demands the strong one; the dominated
        // model (93 %, 9 ms) is never the fastest feasible one: 94 %/3 ms beats it whenever it is
        // feasible, and the fallback is the most accurate.
        assert!(p[0] > 0.01 && p[2] > 0.01 && p[1] < 0.99 && p[3] == 0.0, "{p:?}");
        Ok(())
    }

    /// Each candidate's empirical frequency is within 5 standard errors of its exact probability.
    fn assert_frequencies(policy: Policy, candidates: &[Candidate], s: &Spec, seed: u64) {
        let draws = 20_000;
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut counts = vec![0usize; candidates.len()];
        for _ in 0..draws {
            let i = policy.select(candidates, s, &mut rng).unwrap_or(usize::MAX);
            assert!(i < candidates.len());
            counts[i] += 1;
        }
        let exact = policy.distribution(candidates, s);
        for (i, (&count, &p)) in counts.iter().zip(&exact).enumerate() {
            let freq = count as f64 / draws as f64;
            let sigma = (p * (1.0 - p) / draws as f64).sqrt();
            assert!((freq - p).abs() <= 5.0 * sigma + 1e-9, "{policy:?} candidate {i}: freq {freq} vs p {p}");
        }
    }

    #[test]
    fn samplers_match_their_distributions() -> Result<(), PolicyError> {
        let zoo = zoo();
        let sens = NoiseSensitivity { accuracy: 2.0, latency_ms: 3.0 };
        for (k, s) in [spec(96.0, 2.0)?, spec(93.0, 10.0)?, Spec::new(Some(92.0), None)?].iter().enumerate() {
            let seed = k as u64 * 10;
            assert_frequencies(Policy::Fastest, &zoo, s, seed);
            assert_frequencies(Policy::Uniform, &zoo, s, seed + 1);
            for eps in [0.05, 0.5] {
                assert_frequencies(Policy::new(PolicyKind::Exponential, eps, sens)?, &zoo, s, seed + 2);
                assert_frequencies(Policy::new(PolicyKind::PermuteAndFlip, eps, sens)?, &zoo, s, seed + 3);
                assert_frequencies(Policy::new(PolicyKind::NoisySpec, eps, sens)?, &zoo, s, seed + 4);
            }
        }
        Ok(())
    }

    #[test]
    fn selection_is_reproducible_from_the_seed() -> Result<(), PolicyError> {
        let zoo = zoo();
        let s = spec(96.0, 2.0)?;
        let p = Policy::new(PolicyKind::PermuteAndFlip, 0.2, NoiseSensitivity::default())?;
        let draw = |seed| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            (0..50).map(|_| p.select(&zoo, &s, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert_eq!(Policy::Fastest.select(&[], &s, &mut ChaCha20Rng::seed_from_u64(0)), None);
        Ok(())
    }
}
