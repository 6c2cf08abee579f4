//! PSML (Sanyal et al., arXiv 2307.01292): fingerprinting a served model zoo through its
//! model-less endpoint, steering the router to one victim, and extracting it.
//!
//! A task endpoint picks one member of a zoo per request by the request's spec (minimum
//! accuracy, maximum latency) and hides which one answered. The attack, as a key holder of the
//! HTTP API (a [`Router`]):
//!
//! 1. **Offline** — the attacker trains surrogates of the public candidate architectures on its
//!    own pool and picks [`fingerprint::select_fingerprints`]: pool inputs on which the
//!    surrogates disagree.
//! 2. **Spec search** ([`search_specs`]) — sends the fingerprint set as one batch (one request:
//!    the router picks one member for the whole batch) under every spec of a grid, `repeats`
//!    times; each answer is a signature, grouped into one cluster per member served
//!    ([`fingerprint::SignatureClusters`]). Cost: `specs × repeats × k` samples of the key's
//!    budget. It yields the members reachable, which spec served which, and the *trigger
//!    rate* of a chosen victim per spec; the best spec is the one that triggers it most often.
//! 3. **Extraction** ([`collect_transfer`]) — Knockoff-style: the victim's labels on a public
//!    transfer set, gathered in one of three arms: guided (the best spec; when its trigger rate
//!    is below 1 every batch carries the fingerprints and batches another member answered are
//!    thrown away), naive (a random spec of the grid per batch: whatever the router serves),
//!    and baseline (the victim named explicitly). A student is then trained on what was
//!    collected (in the binary, with moat's training).
//!
//! Nothing here reads the repository: everything the attack learns comes from the labels the
//! [`Router`] returns. Budgets stay on: a refusal ([`PsmlError::Refused`]) ends a phase with
//! what it has, and every phase reports the samples it spent.

pub mod fingerprint;

use rand::Rng;
use serde::Serialize;

use fingerprint::SignatureClusters;

/// Errors of the PSML attack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsmlError {
    /// The zoo (or the surrogates) cannot be fingerprinted: fewer than two models, or no input
    /// tells them apart.
    #[error("nothing to fingerprint: {0}")]
    NothingToFingerprint(String),
    /// The service refused the request for good (budget) or for now (rate limit).
    #[error("the service refused the query: {0}")]
    Refused(String),
    /// The service or the transport failed.
    #[error("service: {0}")]
    Service(String),
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
}

/// A task request's spec, as sent (unset: no constraint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SpecPoint {
    /// Minimum accuracy, percent.
    pub min_accuracy: Option<f64>,
    /// Maximum latency, milliseconds.
    pub max_latency_ms: Option<f64>,
}

/// The spec grid: every minimum accuracy with every maximum latency.
pub fn spec_grid(accuracies: &[f64], latencies_ms: &[Option<f64>]) -> Vec<SpecPoint> {
    accuracies
        .iter()
        .flat_map(|&a| latencies_ms.iter().map(move |&l| SpecPoint { min_accuracy: Some(a), max_latency_ms: l }))
        .collect()
}

/// What a key holder can do with a zoo's service: label-only inference on a task (one model
/// chosen per request) or on a named model. Implementations count the samples charged.
pub trait Router {
    /// Largest batch one request may carry.
    fn max_batch(&self) -> usize;
    /// One request to the task under `spec`: the router picks one member for the whole batch.
    fn task_labels(&mut self, spec: SpecPoint, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError>;
    /// One request to the model `name`.
    fn model_labels(&mut self, name: &str, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError>;
    /// Samples charged to the key so far.
    fn spent(&self) -> u64;
}

/// One probe of the spec search.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Index into the spec grid.
    pub spec: usize,
    /// The cluster (member) the signature was assigned to.
    pub cluster: usize,
    /// The signature (labels of the fingerprint set).
    pub signature: Vec<usize>,
}

/// What the spec search found.
#[derive(Clone, Debug)]
pub struct SpecSearch {
    /// The grid searched.
    pub specs: Vec<SpecPoint>,
    /// Every probe, in order.
    pub probes: Vec<Probe>,
    /// One cluster per member seen.
    pub clusters: SignatureClusters,
    /// Samples the search spent.
    pub spent: u64,
    /// Whether the key's budget or rate limit cut the search short.
    pub refused: Option<String>,
}

impl SpecSearch {
    /// Per spec, the fraction of its probes that `cluster` answered (`None`: never probed).
    pub fn trigger_rates(&self, cluster: usize) -> Vec<Option<f64>> {
        (0..self.specs.len())
            .map(|s| {
                let probes: Vec<&Probe> = self.probes.iter().filter(|p| p.spec == s).collect();
                (!probes.is_empty())
                    .then(|| probes.iter().filter(|p| p.cluster == cluster).count() as f64 / probes.len() as f64)
            })
            .collect()
    }

    /// The spec that triggers `cluster` most often (ties: the first in the grid) and its rate.
    pub fn best_spec(&self, cluster: usize) -> Option<(usize, f64)> {
        self.trigger_rates(cluster).into_iter().enumerate().filter_map(|(i, r)| r.map(|r| (i, r))).fold(
            None,
            |best: Option<(usize, f64)>, (i, r)| match best {
                Some((_, b)) if b >= r => best,
                _ => Some((i, r)),
            },
        )
    }

    /// The cluster whose signature agrees most with `truth` (the fingerprints' true labels,
    /// known to the attacker for its public pool): the most accurate member seen.
    pub fn most_accurate_cluster(&self, truth: &[usize]) -> Option<usize> {
        let centroids = &self.clusters.centroids;
        (0..centroids.len()).min_by_key(|&c| (fingerprint::hamming(&centroids[c], truth), c))
    }
}

/// Sends the fingerprint batch under every spec of `specs`, `repeats` times (spec-major, so a
/// budget cut leaves whole sweeps), clustering the signatures with `tolerance`. A refusal ends
/// the search with the probes made; other errors are returned. Errors before spending anything
/// when there is nothing to send or the batch does not fit one request.
pub fn search_specs<R: Router + ?Sized>(
    router: &mut R,
    fingerprints: &[&[f32]],
    specs: &[SpecPoint],
    repeats: usize,
    tolerance: usize,
) -> Result<SpecSearch, PsmlError> {
    if fingerprints.is_empty() || specs.is_empty() || repeats == 0 {
        return Err(PsmlError::Invalid("the spec search needs fingerprints, specs and at least one repeat".into()));
    }
    if fingerprints.len() > router.max_batch() {
        return Err(PsmlError::Invalid(format!(
            "{} fingerprints do not fit one request (the task takes batches of at most {})",
            fingerprints.len(),
            router.max_batch()
        )));
    }
    let start = router.spent();
    let mut search = SpecSearch {
        specs: specs.to_vec(),
        probes: Vec::new(),
        clusters: SignatureClusters::new(tolerance),
        spent: 0,
        refused: None,
    };
    'outer: for _ in 0..repeats {
        for (s, &spec) in specs.iter().enumerate() {
            match router.task_labels(spec, fingerprints) {
                Ok(signature) => {
                    let cluster = search.clusters.assign(&signature);
                    search.probes.push(Probe { spec: s, cluster, signature });
                }
                Err(PsmlError::Refused(why)) => {
                    search.refused = Some(why);
                    break 'outer;
                }
                Err(e) => return Err(e),
            }
        }
    }
    search.spent = router.spent() - start;
    Ok(search)
}

/// How an extraction arm gets its labels.
#[derive(Clone, Debug)]
pub enum Arm {
    /// Fingerprint-guided: the best spec; with `verify`, each batch carries the fingerprints
    /// and is kept only when its signature falls in `target`'s cluster.
    Guided {
        /// The spec that triggers the victim most consistently.
        spec: SpecPoint,
        /// Check every batch's signature.
        verify: bool,
        /// The victim's cluster.
        target: usize,
        /// The clusters from the search.
        clusters: SignatureClusters,
    },
    /// Naive: a uniformly random spec of the grid per batch.
    Naive {
        /// The grid.
        specs: Vec<SpecPoint>,
    },
    /// Single-model baseline: the victim named.
    Baseline {
        /// The victim's model name.
        model: String,
    },
}

/// The transfer set an arm collected.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Transfer {
    /// Pool indices labelled, in order.
    pub indices: Vec<usize>,
    /// The labels the service gave them.
    pub labels: Vec<usize>,
    /// For each labelled sample, the key budget the arm had spent when it came back.
    pub spent_at: Vec<u64>,
    /// Samples the arm spent in all.
    pub spent: u64,
    /// Batches thrown away because another member answered (guided arm with verification).
    pub rejected_batches: usize,
    /// Batches kept.
    pub kept_batches: usize,
    /// Why the service stopped the arm early, if it did.
    pub refused: Option<String>,
}

impl Transfer {
    /// The labelled samples obtained within `budget` samples of spending.
    pub fn within(&self, budget: u64) -> usize {
        self.spent_at.iter().take_while(|&&s| s <= budget).count()
    }
}

/// Labels pool inputs (`pool`, in order) through `arm` until `budget` samples are spent or the
/// pool runs out, in batches of at most `batch` samples (fingerprints included).
pub fn collect_transfer<R: Router + ?Sized>(
    router: &mut R,
    arm: &Arm,
    pool: &[&[f32]],
    fingerprints: &[&[f32]],
    budget: u64,
    batch: usize,
    rng: &mut impl Rng,
) -> Result<Transfer, PsmlError> {
    let batch = batch.min(router.max_batch());
    let overhead = match arm {
        Arm::Guided { verify: true, .. } => fingerprints.len(),
        _ => 0,
    };
    if batch <= overhead {
        return Err(PsmlError::Invalid(format!(
            "batches of {batch} leave no room for transfer samples next to {overhead} fingerprints"
        )));
    }
    let start = router.spent();
    let mut out = Transfer::default();
    let mut next = 0usize;
    while next < pool.len() {
        let spent = router.spent() - start;
        let room = budget.saturating_sub(spent) as usize;
        if room <= overhead {
            break;
        }
        let take = (batch - overhead).min(room - overhead).min(pool.len() - next);
        let mut inputs: Vec<&[f32]> = pool[next..next + take].to_vec();
        inputs.extend_from_slice(if overhead > 0 { fingerprints } else { &[] });
        let answer = match arm {
            Arm::Guided { spec, .. } => router.task_labels(*spec, &inputs),
            Arm::Naive { specs } => {
                let spec = specs.get(rng.random_range(0..specs.len().max(1))).copied().unwrap_or_default();
                router.task_labels(spec, &inputs)
            }
            Arm::Baseline { model } => router.model_labels(model, &inputs),
        };
        let labels = match answer {
            Ok(l) => l,
            Err(PsmlError::Refused(why)) => {
                out.refused = Some(why);
                break;
            }
            Err(e) => return Err(e),
        };
        if labels.len() != inputs.len() {
            return Err(PsmlError::Service(format!("{} labels for {} inputs", labels.len(), inputs.len())));
        }
        if let Arm::Guided { verify: true, target, clusters, .. } = arm
            && clusters.classify(&labels[take..]) != Some(*target)
        {
            out.rejected_batches += 1;
            continue;
        }
        out.kept_batches += 1;
        let now = router.spent() - start;
        out.indices.extend(next..next + take);
        out.labels.extend_from_slice(&labels[..take]);
        out.spent_at.extend(std::iter::repeat_n(now, take));
        next += take;
    }
    out.spent = router.spent() - start;
    Ok(out)
}

/// Fraction of positions where `a` and `b` agree (0 when empty).
pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A zoo of "models" that label an input by a per-model function of its first value, with
    /// a fastest-feasible router over (accuracy, latency) profiles; counts samples.
    struct ToyRouter {
        profiles: Vec<(f64, f64)>,
        spent: u64,
        budget: u64,
    }

    fn toy_label(model: usize, x: &[f32]) -> usize {
        ((x[0] * (model + 1) as f32) as usize) % 3
    }

    impl ToyRouter {
        fn charge(&mut self, n: usize) -> Result<(), PsmlError> {
            if self.spent + n as u64 > self.budget {
                return Err(PsmlError::Refused("budget".into()));
            }
            self.spent += n as u64;
            Ok(())
        }
    }

    impl Router for ToyRouter {
        fn max_batch(&self) -> usize {
            16
        }
        fn task_labels(&mut self, spec: SpecPoint, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError> {
            self.charge(inputs.len())?;
            let a = spec.min_accuracy.unwrap_or(0.0);
            let l = spec.max_latency_ms.unwrap_or(f64::INFINITY);
            let feasible = (0..self.profiles.len()).filter(|&i| self.profiles[i].0 >= a && self.profiles[i].1 <= l);
            let m = feasible
                .min_by(|&i, &j| self.profiles[i].1.total_cmp(&self.profiles[j].1))
                .unwrap_or(self.profiles.len() - 1);
            Ok(inputs.iter().map(|x| toy_label(m, x)).collect())
        }
        fn model_labels(&mut self, name: &str, inputs: &[&[f32]]) -> Result<Vec<usize>, PsmlError> {
            self.charge(inputs.len())?;
            let m: usize = name.parse().map_err(|_| PsmlError::Invalid(name.into()))?;
            Ok(inputs.iter().map(|x| toy_label(m, x)).collect())
        }
        fn spent(&self) -> u64 {
            self.spent
        }
    }

    #[test]
    fn search_finds_the_members_and_a_spec_that_triggers_the_most_accurate() -> Result<(), Box<dyn std::error::Error>> {
        let mut router = ToyRouter { profiles: vec![(80.0, 1.0), (90.0, 2.0), (95.0, 4.0)], spent: 0, budget: 10_000 };
        let pool: Vec<Vec<f32>> = (0..40).map(|i| vec![i as f32 * 0.37]).collect();
        let preds: Vec<Vec<usize>> = (0..3).map(|m| pool.iter().map(|x| toy_label(m, x)).collect()).collect();
        let fp_idx = fingerprint::select_fingerprints(&preds, 6)?;
        let fps: Vec<&[f32]> = fp_idx.iter().map(|&i| pool[i].as_slice()).collect();
        let specs = spec_grid(&[0.0, 85.0, 92.0], &[None]);
        let search = search_specs(&mut router, &fps, &specs, 2, 0)?;
        assert_eq!(search.clusters.centroids.len(), 3);
        assert_eq!(search.spent, 3 * 2 * fps.len() as u64);
        let truth: Vec<usize> = fp_idx.iter().map(|&i| preds[2][i]).collect();
        let target = search.most_accurate_cluster(&truth).ok_or("no cluster")?;
        assert_eq!(search.best_spec(target), Some((2, 1.0)));

        // Guided with verification, naive and baseline under the same budget.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let refs: Vec<&[f32]> = pool.iter().map(Vec::as_slice).collect();
        let arm = Arm::Guided { spec: specs[2], verify: true, target, clusters: search.clusters.clone() };
        let guided = collect_transfer(&mut router, &arm, &refs, &fps, 60, 10, &mut rng)?;
        assert!(guided.spent <= 60 && guided.rejected_batches == 0);
        assert_eq!(guided.indices.len(), 6 * 4);
        assert!(guided.indices.iter().zip(&guided.labels).all(|(&i, &l)| l == preds[2][i]));
        let base = collect_transfer(&mut router, &Arm::Baseline { model: "2".into() }, &refs, &fps, 60, 10, &mut rng)?;
        assert_eq!(base.indices.len(), 40);
        assert_eq!(base.within(20), 20);
        let naive = collect_transfer(&mut router, &Arm::Naive { specs }, &refs, &fps, 40, 10, &mut rng)?;
        assert_eq!(naive.indices.len(), 40);
        Ok(())
    }

    #[test]
    fn a_budget_refusal_ends_the_search_with_what_it_has() -> Result<(), PsmlError> {
        let mut router = ToyRouter { profiles: vec![(80.0, 1.0), (95.0, 4.0)], spent: 0, budget: 10 };
        let pool: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32]).collect();
        let fps: Vec<&[f32]> = pool.iter().take(4).map(Vec::as_slice).collect();
        let specs = spec_grid(&[0.0, 90.0], &[None, Some(2.0)]);
        let search = search_specs(&mut router, &fps, &specs, 3, 0)?;
        assert_eq!(search.probes.len(), 2);
        assert!(search.refused.is_some());
        assert_eq!(search.spent, 8);
        assert!(search_specs(&mut router, &[], &specs, 1, 0).is_err());
        Ok(())
    }
}
