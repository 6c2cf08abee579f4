//! **Cheating servers, for testing Fusion only** (feature `danger-cheating-servers`; never in
//! the default build).
//!
//! A [`CheatingServer`] wraps the honest model's [`BatchOracle`] and a worse model's, on any
//! path, and deviates as its [`Cheat`] says. The client sees only labels and model identities,
//! so a server that deviates *before* answering (wrong weights, tampered outputs) is, to the
//! client, exactly this wrapper. [`Cheat::analytic_detection`] gives the probability Fusion
//! catches each cheat, from [`super::analysis`], for honest-model pool labels.
//!
//! [`LogitShareOffset`] deviates inside the two-party protocol instead: a [`ServerGuard`] that
//! offsets the server's own share of the logits at the reveal point, so the client's protocol
//! runs unchanged and the label it opens is wrong.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use moat_mpc::engine::{Reveal, ServerGuard, ShareSite};

use super::analysis::{self, Shape};
use super::{BatchAnswers, BatchOracle};
use crate::error::ClientError;

/// How a server deviates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "cheat")]
pub enum Cheat {
    /// Answers `t` positions of every batch, chosen uniformly, with a uniformly drawn wrong label.
    CorruptExactly {
        /// Positions corrupted per batch.
        t: usize,
    },
    /// Replaces each answer, with probability `rate`, by a uniformly drawn wrong label.
    Flip {
        /// Fraction of answers flipped.
        rate: f64,
    },
    /// Follows the protocol with the committed model.
    Honest,
    /// Answers every query with the worse model, under the committed model's identity.
    Substitute,
    /// Answers each query with the worse model with probability `rate`, under the committed
    /// model's identity.
    SubstituteFraction {
        /// Fraction of queries.
        rate: f64,
    },
    /// Switches to the worse model (and its identity) at a uniformly drawn position 1..N.
    SwitchModel,
    /// Answers `to` whenever the honest answer is `from`.
    TargetClass {
        /// The class attacked.
        from: usize,
        /// The label given instead.
        to: usize,
    },
}

/// What the analytic detection needs to know about the pool and the models.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PoolFacts {
    /// Pool size P.
    pub pool: usize,
    /// Pool samples on which the worse model's label differs from the honest one's.
    pub pool_disagreeing: usize,
    /// Fraction of query samples on which the worse model differs from the honest one.
    pub query_disagreement: f64,
    /// Pool samples whose honest label is the target class's `from`.
    pub pool_in_target_class: usize,
    /// Number of classes L.
    pub classes: usize,
}

impl Cheat {
    /// Short name for reports.
    pub fn name(&self) -> String {
        match self {
            Cheat::CorruptExactly { t } => format!("corrupt-{t}"),
            Cheat::Flip { rate } => format!("flip-{rate}"),
            Cheat::Honest => "honest".into(),
            Cheat::Substitute => "substitute".into(),
            Cheat::SubstituteFraction { rate } => format!("substitute-{rate}"),
            Cheat::SwitchModel => "switch-model".into(),
            Cheat::TargetClass { from, to } => format!("target-{from}-to-{to}"),
        }
    }

    /// Probability that Fusion with honest-model pool labels flags this cheat, and whether the
    /// value is exact (`false`: an approximation, see the variant).
    ///
    /// - `CorruptExactly`: 1 − Σ_j C(k, j) C(n − k, t − 2j) (1/(L−1))^j / C(N, t), exact.
    /// - `Flip`: 1 − (1 − p)^m ((1 − p)² + p²/(L − 1))^k, exact.
    /// - `Honest`: 0.
    /// - `Substitute`: 1 − C(P − D, m)/C(P, m) (D pool samples where the models differ), exact.
    /// - `SubstituteFraction`: 1 − (1 − f·D/P)^m (1 − 2f(1 − f)·d)^k, approximate (the pool
    ///   draw is without replacement; d is averaged over queries).
    /// - `SwitchModel`: 1 (two identities in one batch).
    /// - `TargetClass`: 1 − C(P − F, m)/C(P, m) (F pool samples of class `from`), exact.
    pub fn analytic_detection(&self, shape: Shape, facts: &PoolFacts) -> (f64, bool) {
        let q = 1.0 / (facts.classes.max(2) - 1) as f64;
        let (pool, m) = (facts.pool as u64, shape.m as u64);
        let known_miss = |differing: usize| {
            let threshold = m.checked_sub(1);
            analysis::miss_known_answers(pool, pool.saturating_sub(differing as u64), m, threshold)
        };
        match *self {
            Cheat::CorruptExactly { t } => (1.0 - shape.miss_exactly(t, q), true),
            Cheat::Flip { rate } => (1.0 - shape.miss_independent(rate, q), true),
            Cheat::Honest => (0.0, true),
            Cheat::Substitute => (1.0 - known_miss(facts.pool_disagreeing), true),
            Cheat::SubstituteFraction { rate } => {
                let d_pool = facts.pool_disagreeing as f64 / facts.pool.max(1) as f64;
                let known = (1.0 - rate * d_pool).powf(shape.m as f64);
                let pairs = (1.0 - 2.0 * rate * (1.0 - rate) * facts.query_disagreement).powf(shape.k as f64);
                (1.0 - known * pairs, false)
            }
            Cheat::SwitchModel => (1.0, true),
            Cheat::TargetClass { .. } => (1.0 - known_miss(facts.pool_in_target_class), true),
        }
    }
}

/// A server that cheats as `cheat` says, answering with `honest` or `worse`.
#[derive(Debug)]
pub struct CheatingServer<H, W> {
    honest: H,
    worse: W,
    cheat: Cheat,
    classes: usize,
    rng: StdRng,
}

impl<H, W> CheatingServer<H, W> {
    /// A cheating server over `classes` classes; `seed` drives its own choices (it is the
    /// server's randomness, not the client's).
    pub fn new(honest: H, worse: W, cheat: Cheat, classes: usize, seed: u64) -> Self {
        Self { honest, worse, cheat, classes: classes.max(2), rng: StdRng::seed_from_u64(seed) }
    }

    fn wrong_label(&mut self, right: usize) -> usize {
        let other = self.rng.random_range(0..self.classes - 1);
        if other >= right { other + 1 } else { other }
    }
}

impl<Q, H: BatchOracle<Q>, W: BatchOracle<Q>> BatchOracle<Q> for CheatingServer<H, W> {
    fn validate(&self, query: &Q) -> Result<(), ClientError> {
        self.honest.validate(query)
    }

    fn capacity(&self) -> Option<usize> {
        self.honest.capacity()
    }

    fn answer_batch(&mut self, inputs: &[Q]) -> Result<BatchAnswers, ClientError> {
        let mut answers = self.honest.answer_batch(inputs)?;
        let total = inputs.len();
        match self.cheat {
            Cheat::Honest => {}
            Cheat::CorruptExactly { t } => {
                for p in rand::seq::index::sample(&mut self.rng, total, t.min(total)) {
                    answers.labels[p] = self.wrong_label(answers.labels[p]);
                }
            }
            Cheat::Flip { rate } => {
                for p in 0..total {
                    if self.rng.random_bool(rate.clamp(0.0, 1.0)) {
                        answers.labels[p] = self.wrong_label(answers.labels[p]);
                    }
                }
            }
            Cheat::TargetClass { from, to } => {
                answers.labels.iter_mut().filter(|l| **l == from).for_each(|l| *l = to);
            }
            Cheat::Substitute => answers.labels = self.worse.answer_batch(inputs)?.labels,
            Cheat::SubstituteFraction { rate } => {
                let worse = self.worse.answer_batch(inputs)?;
                for p in 0..total {
                    if self.rng.random_bool(rate.clamp(0.0, 1.0)) {
                        answers.labels[p] = worse.labels[p];
                    }
                }
            }
            Cheat::SwitchModel => {
                if total > 1 {
                    let from = self.rng.random_range(1..total);
                    let worse = self.worse.answer_batch(&inputs[from..])?;
                    answers.labels.truncate(from);
                    answers.labels.extend(worse.labels);
                    answers.models.truncate(from);
                    answers.models.extend(worse.models);
                }
            }
        }
        Ok(answers)
    }
}

/// A server that deviates **inside the two-party protocol**: at the reveal point it adds
/// `offset` (a ring element at the logits' scale) to its own share of class `class`'s logit,
/// on each query with probability `rate`. The client's protocol runs unchanged and cannot see
/// the deviation; the revealed label moves to `class` wherever the offset outweighs the logit
/// margin. A [`ServerGuard`] for [`moat_mpc::engine::ServerModel::serve_guarded`].
pub struct LogitShareOffset {
    class: usize,
    offset: u64,
    rate: f64,
    rng: StdRng,
    deviated: u64,
}

impl LogitShareOffset {
    /// Offsets class `class` by `offset` on a fraction `rate` of queries, drawing which from a
    /// generator seeded with `seed` (a test knob: the cheating server's own choice).
    /// A `rate` outside [0, 1] is clamped to it (NaN: never).
    pub fn new(class: usize, offset: u64, rate: f64, seed: u64) -> Self {
        let rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        Self { class, offset, rate, rng: StdRng::seed_from_u64(seed), deviated: 0 }
    }

    /// Queries on which the server deviated so far.
    pub fn deviated(&self) -> u64 {
        self.deviated
    }
}

impl std::fmt::Debug for LogitShareOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogitShareOffset")
            .field("class", &self.class)
            .field("rate", &self.rate)
            .field("deviated", &self.deviated)
            .finish_non_exhaustive()
    }
}

impl ServerGuard for LogitShareOffset {
    fn guard(&mut self, _site: &ShareSite<'_>, _share: &mut [u64]) {}

    fn reveal(&mut self, _output: Reveal, _site: &ShareSite<'_>, share: &mut [u64]) {
        if self.rng.random_bool(self.rate)
            && let Some(x) = share.get_mut(self.class)
        {
            *x = x.wrapping_add(self.offset);
            self.deviated += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fusion::{FusionConfig, FusionError, KnownAnswerPool, LabelOracle, ModelIdentity, Randomness, run};

    /// Measured detection over 400 batches sits near the analytic value (loose bound: the CLI
    /// runs the ≥ 1,000-batch sweeps).
    #[test]
    fn measured_detection_tracks_the_analytic_value() -> Result<(), FusionError> {
        let classes = 10;
        let honest: Vec<usize> = (0..2000).map(|i| (i * 31 + i / 7) % classes).collect();
        let worse: Vec<usize> =
            honest.iter().enumerate().map(|(i, &l)| if i % 9 == 0 { (l + 1) % classes } else { l }).collect();
        let (honest, worse) = (Arc::new(honest), Arc::new(worse));
        let pool_range = 1000..2000;
        let pool = KnownAnswerPool::honest_labels(pool_range.clone().collect(), honest[pool_range.clone()].to_vec())?;
        let facts = PoolFacts {
            pool: pool.len(),
            pool_disagreeing: pool_range.clone().filter(|&i| honest[i] != worse[i]).count(),
            query_disagreement: (0..1000).filter(|&i| honest[i] != worse[i]).count() as f64 / 1000.0,
            pool_in_target_class: pool_range.clone().filter(|&i| honest[i] == 3).count(),
            classes,
        };
        let config = FusionConfig::new(12, 10, 0.01)?;
        let shape = Shape { n: 40, m: 12, k: 10 };
        for cheat in [
            Cheat::Honest,
            Cheat::Substitute,
            Cheat::Flip { rate: 0.03 },
            Cheat::CorruptExactly { t: 2 },
            Cheat::TargetClass { from: 3, to: 4 },
            Cheat::SwitchModel,
        ] {
            let mut server = CheatingServer::new(
                LabelOracle::new(Arc::clone(&honest), ModelIdentity::named("good", Some("1"))),
                LabelOracle::new(Arc::clone(&worse), ModelIdentity::named("cheap", Some("1"))),
                cheat,
                classes,
                7,
            );
            let mut rng = Randomness::insecure_seed(11);
            let batches = 400;
            let mut caught = 0;
            for b in 0..batches {
                let queries: Vec<usize> = (0..40).map(|i| (b * 40 + i) % 1000).collect();
                match run(&config, &pool, queries, &mut server, &mut rng) {
                    Ok(_) => {}
                    Err(FusionError::ServerCheated(_)) => caught += 1,
                    Err(e) => return Err(e),
                }
            }
            let measured = caught as f64 / batches as f64;
            let (analytic, _) = cheat.analytic_detection(shape, &facts);
            assert!((measured - analytic).abs() < 0.08, "{}: measured {measured}, analytic {analytic}", cheat.name());
        }
        Ok(())
    }
}
