//! Fusion's mix-and-check (Dong et al., NDSS 2023, arXiv 2205.03040): a client-side compiler
//! that turns any semi-honest inference service into one that catches a server which deviates —
//! swaps in a worse model, tampers with answers, or breaks the protocol — without extra
//! cryptography.
//!
//! The client mixes its n real queries with m known-answer samples (from a public labelled
//! pool) and k duplicates of its own queries, shuffles the N = n + m + k inputs under a secret
//! permutation and sends them as **one batch to one committed model** ([`BatchOracle`]). The
//! answers are released only after the check ([`Batch::check`] → [`Verified`]): every
//! duplicate pair agrees, the known answers pass a binomial test against the claimed accuracy
//! at confidence 1 − β, and every answer names the same model (name, version, commitment).
//! Otherwise the caller gets [`FusionError::ServerCheated`] with the [`Evidence`].
//!
//! **What each party learns.** The server learns what the underlying protocol shows it (on the
//! secure path: nothing about any input, known answers included) plus N. The client learns its
//! n labels and, for the checks, the m + k extra labels. **Cost:** (m + k)/n more queries —
//! time and bytes of the underlying protocol scale with it; no extra rounds, since the batch
//! is one session (secure path) or one request (plaintext path).
//!
//! **Guarantee** ([`analysis`]): a server that corrupts t of the N positions escapes with
//! probability Σ_j C(k, j) C(n − k, t − 2j) q^j / C(N, t) ≤ C(N − m, t)/C(N, t) (q: the chance
//! that the two wrong answers of a duplicate pair hit on both copies agree); a model differing
//! from the honest one on a fraction d of inputs escapes the known answers with probability
//! ≈ (1 − d)^m. Duplicates catch only inconsistent cheating (a deterministic wrong model
//! answers both copies alike); known answers catch any cheating the server cannot aim away
//! from them, which holds as long as pool samples look like queries.
//!
//! The permutation, the choice of duplicated queries and the pool draw come from the OS by
//! default ([`Randomness::Os`]); [`Randomness::insecure_seed`] makes experiments repeatable and
//! lets whoever knows the seed cheat undetected.
//!
//! ```
//! use moat_client::fusion::{Batch, BatchAnswers, FusionConfig, KnownAnswerPool, ModelIdentity, Randomness};
//!
//! // Queries and pool are sample indices here; on the network paths they are input tensors.
//! let pool = KnownAnswerPool::honest_labels((100..200).collect(), (100..200).map(|i| i % 10).collect())?;
//! let config = FusionConfig::new(8, 4, 0.01)?;
//! let batch = Batch::compile(&config, &pool, (0..20).collect(), &mut Randomness::Os)?;
//! // The server answers every input of the shuffled batch with one model.
//! let labels = batch.inputs().iter().map(|i| i % 10).collect();
//! let answers = BatchAnswers::one_model(labels, ModelIdentity::named("digits-mlp", Some("1")));
//! let verified = batch.check(answers)?;
//! assert_eq!(verified.labels(), (0..20).map(|i| i % 10).collect::<Vec<_>>());
//! # Ok::<(), moat_client::fusion::FusionError>(())
//! ```

pub mod analysis;
#[cfg(feature = "danger-cheating-servers")]
pub mod danger;
pub mod oracles;
pub mod selection;

use std::fmt;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;

use crate::error::ClientError;

pub use oracles::{LabelOracle, OipOracle, OipTarget, SessionOracle, SimulatedOracle};

/// Errors of a Fusion batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FusionError {
    /// The batch cannot be built as asked (checked before any query is sent).
    #[error("fusion: {0}")]
    Invalid(String),
    /// Talking to the server failed, or its answer does not follow the protocol.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The checks failed: the server deviated. No answer is released.
    #[error("the server cheated: {0}")]
    ServerCheated(Box<Evidence>),
}

/// Where the randomness of a batch (permutation, duplicated queries, pool draw) comes from.
pub enum Randomness {
    /// A fresh generator seeded from the OS for each batch (the default).
    Os,
    /// A ChaCha generator from a fixed seed: for repeatable experiments only — whoever knows the
    /// seed knows the permutation and can cheat undetected.
    InsecureSeeded(Box<StdRng>),
}

impl fmt::Debug for Randomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Randomness::Os => "Randomness::Os",
            Randomness::InsecureSeeded(_) => "Randomness::InsecureSeeded(…)",
        })
    }
}

impl Randomness {
    /// [`Randomness::InsecureSeeded`] from `seed`.
    pub fn insecure_seed(seed: u64) -> Self {
        Randomness::InsecureSeeded(Box::new(StdRng::seed_from_u64(seed)))
    }

    fn generator(&mut self) -> Result<StdRng, FusionError> {
        match self {
            Randomness::Os => StdRng::try_from_os_rng()
                .map_err(|e| FusionError::Invalid(format!("no OS randomness for the permutation: {e}"))),
            Randomness::InsecureSeeded(rng) => Ok(StdRng::from_rng(rng.as_mut())),
        }
    }
}

/// How the pool's labels were obtained, which decides the test on the known answers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolLabels {
    /// The labels the honest (committed) model gives: any disagreement is evidence.
    HonestModel,
    /// Ground truth, with the accuracy the server claims for its model: the known answers must
    /// pass a one-sided binomial test at level β.
    GroundTruth {
        /// Claimed accuracy in (0, 1].
        claimed_accuracy: f64,
    },
}

/// Public labelled samples the client draws known answers from.
#[derive(Clone, Debug)]
pub struct KnownAnswerPool<Q> {
    samples: Vec<Q>,
    labels: Vec<usize>,
    kind: PoolLabels,
}

impl<Q> KnownAnswerPool<Q> {
    /// A pool labelled by the honest model.
    pub fn honest_labels(samples: Vec<Q>, labels: Vec<usize>) -> Result<Self, FusionError> {
        Self::new(samples, labels, PoolLabels::HonestModel)
    }

    /// A pool with ground-truth labels and the accuracy the server claims.
    pub fn ground_truth(samples: Vec<Q>, labels: Vec<usize>, claimed_accuracy: f64) -> Result<Self, FusionError> {
        if !(claimed_accuracy > 0.0 && claimed_accuracy <= 1.0) {
            return Err(FusionError::Invalid(format!("claimed accuracy {claimed_accuracy} is not in (0, 1]")));
        }
        Self::new(samples, labels, PoolLabels::GroundTruth { claimed_accuracy })
    }

    fn new(samples: Vec<Q>, labels: Vec<usize>, kind: PoolLabels) -> Result<Self, FusionError> {
        if samples.len() != labels.len() {
            return Err(FusionError::Invalid(format!(
                "the known-answer pool has {} samples and {} labels",
                samples.len(),
                labels.len()
            )));
        }
        Ok(Self { samples, labels, kind })
    }

    /// Samples in the pool.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True for an empty pool.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// How the labels were obtained.
    pub fn kind(&self) -> PoolLabels {
        self.kind
    }

    /// The samples.
    pub fn samples(&self) -> &[Q] {
        &self.samples
    }

    /// The labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The pool of the samples at `indices` (e.g. [`selection::hardest`]), same label kind.
    pub fn select(&self, indices: &[usize]) -> Result<Self, FusionError>
    where
        Q: Clone,
    {
        let pick = |i: usize| {
            self.samples.get(i).cloned().zip(self.labels.get(i).copied()).ok_or_else(|| {
                FusionError::Invalid(format!("no pool sample {i} (the pool has {})", self.samples.len()))
            })
        };
        let (samples, labels) = indices.iter().map(|&i| pick(i)).collect::<Result<(Vec<_>, Vec<_>), _>>()?;
        Ok(Self { samples, labels, kind: self.kind })
    }

    fn claimed_accuracy(&self) -> f64 {
        match self.kind {
            PoolLabels::HonestModel => 1.0,
            PoolLabels::GroundTruth { claimed_accuracy } => claimed_accuracy,
        }
    }
}

/// m, k and β of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FusionConfig {
    /// Known-answer samples per batch.
    pub known: usize,
    /// Duplicated queries per batch (at most n).
    pub duplicates: usize,
    /// The test's level: an honest server is accused with probability at most β.
    pub beta: f64,
}

impl FusionConfig {
    /// m known answers, k duplicates, level β ∈ (0, 0.5].
    pub fn new(known: usize, duplicates: usize, beta: f64) -> Result<Self, FusionError> {
        if !(beta > 0.0 && beta <= 0.5) {
            return Err(FusionError::Invalid(format!("β = {beta} is not in (0, 0.5]")));
        }
        if known == 0 && duplicates == 0 {
            return Err(FusionError::Invalid("m = k = 0 checks nothing: ask for known answers or duplicates".into()));
        }
        Ok(Self { known, duplicates, beta })
    }

    /// Parses `m,k[,beta]` (β defaults to 0.01).
    pub fn parse(spec: &str) -> Result<Self, FusionError> {
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        let bad = || FusionError::Invalid(format!("'{spec}' is not m,k[,beta]"));
        let int = |s: &str| s.parse::<usize>().map_err(|_| bad());
        match parts.as_slice() {
            [m, k] => Self::new(int(m)?, int(k)?, 0.01),
            [m, k, b] => Self::new(int(m)?, int(k)?, b.parse::<f64>().map_err(|_| bad())?),
            _ => Err(bad()),
        }
    }
}

/// The model that answered, as the server states it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ModelIdentity {
    /// Model name.
    pub name: Option<String>,
    /// Model version.
    pub version: Option<String>,
    /// Commitment to the weights (hash of weights and server nonce), when the server gives one.
    pub commitment: Option<String>,
}

impl ModelIdentity {
    /// A name and version without commitment.
    pub fn named(name: &str, version: Option<&str>) -> Self {
        Self { name: Some(name.into()), version: version.map(Into::into), commitment: None }
    }
}

impl fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name.as_deref().unwrap_or("?"))?;
        if let Some(v) = &self.version {
            write!(f, "/{v}")?;
        }
        if let Some(c) = &self.commitment {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// A server's answers to a whole batch, in the order sent: one label per input and, per input,
/// the model it says answered.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchAnswers {
    /// One label per input.
    pub labels: Vec<usize>,
    /// One identity per input.
    pub models: Vec<ModelIdentity>,
}

impl BatchAnswers {
    /// Answers all given by one model.
    pub fn one_model(labels: Vec<usize>, model: ModelIdentity) -> Self {
        let models = vec![model; labels.len()];
        Self { labels, models }
    }
}

/// A service answering a batch of queries with one model: every path a client has (plaintext
/// OIP, the simulated engine, secure sessions) implements it, so the same Fusion code runs on
/// each.
pub trait BatchOracle<Q> {
    /// Rejects a query (or known-answer sample) the service cannot take — e.g. a tensor of the
    /// wrong size — before anything is sent.
    fn validate(&self, query: &Q) -> Result<(), ClientError>;

    /// The most inputs one batch may hold (a secure session's remaining grant, a plaintext
    /// service's `max_batch_size`), if bounded: a larger batch is refused before any query.
    fn capacity(&self) -> Option<usize> {
        None
    }

    /// Answers every input, in order.
    fn answer_batch(&mut self, inputs: &[Q]) -> Result<BatchAnswers, ClientError>;
}

impl<Q, O: BatchOracle<Q> + ?Sized> BatchOracle<Q> for &mut O {
    fn validate(&self, query: &Q) -> Result<(), ClientError> {
        (**self).validate(query)
    }
    fn capacity(&self) -> Option<usize> {
        (**self).capacity()
    }
    fn answer_batch(&mut self, inputs: &[Q]) -> Result<BatchAnswers, ClientError> {
        (**self).answer_batch(inputs)
    }
}

/// What a position of the shuffled batch secretly holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Real query i (its first copy).
    Real(usize),
    /// The second copy of real query i.
    Duplicate(usize),
    /// Pool sample j.
    Known(usize),
}

/// A compiled batch: the shuffled inputs to send and, hidden, what each position holds. The
/// real answers come out only through [`Batch::check`].
pub struct Batch<Q> {
    inputs: Vec<Q>,
    slots: Vec<Slot>,
    expected: Vec<usize>,
    n: usize,
    claimed_accuracy: f64,
    beta: f64,
}

impl<Q> fmt::Debug for Batch<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The permutation is the client's secret.
        f.debug_struct("Batch").field("inputs", &self.inputs.len()).field("n", &self.n).finish_non_exhaustive()
    }
}

impl<Q: Clone> Batch<Q> {
    /// Mixes `queries` with `config.known` samples drawn from `pool` without replacement and
    /// `config.duplicates` copies of distinct queries, under a secret uniform permutation.
    pub fn compile(
        config: &FusionConfig,
        pool: &KnownAnswerPool<Q>,
        queries: Vec<Q>,
        randomness: &mut Randomness,
    ) -> Result<Self, FusionError> {
        let (n, m, k) = (queries.len(), config.known, config.duplicates);
        if n == 0 {
            return Err(FusionError::Invalid("a batch needs at least one query".into()));
        }
        if k > n {
            return Err(FusionError::Invalid(format!("k = {k} duplicates of only n = {n} queries")));
        }
        if m > pool.len() {
            return Err(FusionError::Invalid(format!(
                "m = {m} known answers from a pool of only {} samples",
                pool.len()
            )));
        }
        let claimed_accuracy = pool.claimed_accuracy();
        if m == 0 && claimed_accuracy < 1.0 {
            return Err(FusionError::Invalid("an accuracy test needs known answers: m must be positive".into()));
        }
        if m > 0
            && claimed_accuracy < 1.0
            && analysis::rejection_threshold(m as u64, claimed_accuracy, config.beta).is_none()
        {
            return Err(FusionError::Invalid(format!(
                "m = {m} known answers cannot reject anything at claimed accuracy {claimed_accuracy} and β = {}: raise m",
                config.beta
            )));
        }
        let mut rng = randomness.generator()?;
        let mut slots: Vec<Slot> = (0..n).map(Slot::Real).collect();
        let duplicated: Vec<usize> = (0..n).collect::<Vec<_>>().choose_multiple(&mut rng, k).copied().collect();
        slots.extend(duplicated.iter().map(|&i| Slot::Duplicate(i)));
        let known: Vec<usize> = rand::seq::index::sample(&mut rng, pool.len(), m).into_vec();
        slots.extend(known.iter().map(|&j| Slot::Known(j)));
        slots.shuffle(&mut rng);
        let inputs = slots
            .iter()
            .map(|s| match *s {
                Slot::Real(i) | Slot::Duplicate(i) => queries[i].clone(),
                Slot::Known(j) => pool.samples[j].clone(),
            })
            .collect();
        let expected = slots.iter().map(|s| if let Slot::Known(j) = *s { pool.labels[j] } else { 0 }).collect();
        Ok(Self { inputs, slots, expected, n, claimed_accuracy, beta: config.beta })
    }
}

impl<Q> Batch<Q> {
    /// The shuffled inputs to send, in order.
    pub fn inputs(&self) -> &[Q] {
        &self.inputs
    }

    /// N = n + m + k.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Never true: a batch holds at least one query.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Real queries n.
    pub fn queries(&self) -> usize {
        self.n
    }

    /// Checks the server's answers (in the order of [`Batch::inputs`]) and releases the real
    /// labels only if every check passes.
    pub fn check(self, answers: BatchAnswers) -> Result<Verified, FusionError> {
        let total = self.inputs.len();
        if answers.labels.len() != total || answers.models.len() != total {
            return Err(ClientError::Protocol(format!(
                "{} labels and {} model identities for a batch of {total}",
                answers.labels.len(),
                answers.models.len()
            ))
            .into());
        }
        let mut first = vec![None; self.n];
        let mut second = vec![None; self.n];
        let mut known_failures = Vec::new();
        let mut known_total = 0usize;
        for (position, (slot, &label)) in self.slots.iter().zip(&answers.labels).enumerate() {
            match *slot {
                Slot::Real(i) => first[i] = Some((position, label)),
                Slot::Duplicate(i) => second[i] = Some((position, label)),
                Slot::Known(pool_index) => {
                    known_total += 1;
                    let expected = self.expected[position];
                    if label != expected {
                        known_failures.push(KnownFailure { position, pool_index, expected, answered: label });
                    }
                }
            }
        }
        let mut disagreeing = Vec::new();
        for (query, (a, b)) in first.iter().zip(&second).enumerate() {
            if let (Some((pa, la)), Some((pb, lb))) = (a, b)
                && la != lb
            {
                disagreeing.push(DuplicateDisagreement { query, positions: [*pa, *pb], labels: [*la, *lb] });
            }
        }
        let mut models: Vec<ModelIdentity> = Vec::new();
        for model in &answers.models {
            if !models.contains(model) {
                models.push(model.clone());
            }
        }
        let known_correct = known_total - known_failures.len();
        let p_value = if known_total == 0 {
            1.0
        } else {
            analysis::binomial_cdf(known_correct as u64, known_total as u64, self.claimed_accuracy)
        };
        let accuracy_rejected = known_total > 0 && p_value < self.beta;
        let report = CheckReport {
            known_correct,
            known_total,
            claimed_accuracy: self.claimed_accuracy,
            p_value,
            beta: self.beta,
            duplicates: second.iter().filter(|s| s.is_some()).count(),
            model: models.first().cloned().unwrap_or_default(),
        };
        if accuracy_rejected || !disagreeing.is_empty() || models.len() > 1 {
            return Err(FusionError::ServerCheated(Box::new(Evidence {
                known_failures,
                disagreeing_duplicates: disagreeing,
                models,
                report,
            })));
        }
        let labels = first
            .iter()
            .map(|a| a.map(|(_, l)| l))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| FusionError::Client(ClientError::Protocol("a real query has no answer".into())))?;
        Ok(Verified { labels, report })
    }
}

/// A known answer the server got wrong.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KnownFailure {
    /// Position in the batch as sent.
    pub position: usize,
    /// Index in the pool.
    pub pool_index: usize,
    /// The pool's label.
    pub expected: usize,
    /// The server's.
    pub answered: usize,
}

/// A duplicated query answered two ways.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DuplicateDisagreement {
    /// The real query (index among the caller's queries).
    pub query: usize,
    /// Its two positions in the batch as sent.
    pub positions: [usize; 2],
    /// The two answers.
    pub labels: [usize; 2],
}

/// The figures of a check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckReport {
    /// Known answers the server got right.
    pub known_correct: usize,
    /// Known answers in the batch (m).
    pub known_total: usize,
    /// The accuracy tested against (1 for honest-model labels).
    pub claimed_accuracy: f64,
    /// P(≤ known_correct right | claimed accuracy): the accuracy test's p-value.
    pub p_value: f64,
    /// The test's level.
    pub beta: f64,
    /// Duplicate pairs compared (k).
    pub duplicates: usize,
    /// The model that answered (the first identity seen).
    pub model: ModelIdentity,
}

/// Why a batch was rejected: every failed check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    /// Known answers that differ from the pool's label.
    pub known_failures: Vec<KnownFailure>,
    /// Duplicate pairs that disagree.
    pub disagreeing_duplicates: Vec<DuplicateDisagreement>,
    /// Every distinct model identity in the batch (more than one is itself evidence).
    pub models: Vec<ModelIdentity>,
    /// The check's figures.
    pub report: CheckReport,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.report.known_total > 0 && self.report.p_value < self.report.beta {
            parts.push(format!(
                "{}/{} known answers right (p = {:.3e} < β = {} against claimed accuracy {})",
                self.report.known_correct,
                self.report.known_total,
                self.report.p_value,
                self.report.beta,
                self.report.claimed_accuracy
            ));
        }
        if !self.disagreeing_duplicates.is_empty() {
            parts.push(format!(
                "{} of {} duplicate pairs disagree",
                self.disagreeing_duplicates.len(),
                self.report.duplicates
            ));
        }
        if self.models.len() > 1 {
            let names: Vec<String> = self.models.iter().map(ToString::to_string).collect();
            parts.push(format!("{} models answered one batch: {}", self.models.len(), names.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The real answers of a batch that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    labels: Vec<usize>,
    report: CheckReport,
}

impl Verified {
    /// The labels of the real queries, in the caller's order.
    pub fn labels(&self) -> Vec<usize> {
        self.labels.clone()
    }

    /// The labels, consuming the verdict.
    pub fn into_labels(self) -> Vec<usize> {
        self.labels
    }

    /// The check's figures.
    pub fn report(&self) -> &CheckReport {
        &self.report
    }
}

/// Compiles, validates every input with `oracle` before anything is sent, sends the batch as
/// one call and checks the answers.
pub fn run<Q: Clone, O: BatchOracle<Q>>(
    config: &FusionConfig,
    pool: &KnownAnswerPool<Q>,
    queries: Vec<Q>,
    oracle: &mut O,
    randomness: &mut Randomness,
) -> Result<Verified, FusionError> {
    for (i, q) in queries.iter().enumerate() {
        oracle.validate(q).map_err(|e| FusionError::Invalid(format!("query {i}: {e}")))?;
    }
    for (j, q) in pool.samples().iter().enumerate() {
        oracle.validate(q).map_err(|e| FusionError::Invalid(format!("known-answer pool sample {j}: {e}")))?;
    }
    let total = queries.len() + config.known + config.duplicates;
    if let Some(cap) = oracle.capacity()
        && total > cap
    {
        return Err(FusionError::Invalid(format!(
            "a batch of n + m + k = {total} inputs exceeds the {cap} the server takes in one batch (the session's granted queries, or the model's max_batch_size): ask for fewer queries or a larger grant"
        )));
    }
    let batch = Batch::compile(config, pool, queries, randomness)?;
    let answers = oracle.answer_batch(batch.inputs())?;
    batch.check(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext "server": the label of sample i is `truth[i]`, except where `lie` says.
    struct Table<F: FnMut(usize, usize) -> usize> {
        truth: Vec<usize>,
        lie: F,
    }

    impl<F: FnMut(usize, usize) -> usize> BatchOracle<usize> for Table<F> {
        fn validate(&self, q: &usize) -> Result<(), ClientError> {
            if *q < self.truth.len() { Ok(()) } else { Err(ClientError::Invalid(format!("no sample {q}"))) }
        }
        fn answer_batch(&mut self, inputs: &[usize]) -> Result<BatchAnswers, ClientError> {
            let labels = inputs.iter().enumerate().map(|(p, &i)| (self.lie)(p, self.truth[i])).collect();
            Ok(BatchAnswers::one_model(labels, ModelIdentity::named("m", Some("1"))))
        }
    }

    fn setup() -> Result<(Vec<usize>, KnownAnswerPool<usize>), FusionError> {
        let truth: Vec<usize> = (0..300).map(|i| (i * 7) % 10).collect();
        let pool = KnownAnswerPool::honest_labels((200..300).collect(), truth[200..].to_vec())?;
        Ok((truth, pool))
    }

    #[test]
    fn an_honest_server_is_verified_and_labels_come_back_in_order() -> Result<(), FusionError> {
        let (truth, pool) = setup()?;
        let config = FusionConfig::new(20, 10, 0.01)?;
        let mut server = Table { truth: truth.clone(), lie: |_, l| l };
        for seed in 0..20 {
            let verified = run(&config, &pool, (0..50).collect(), &mut server, &mut Randomness::insecure_seed(seed))?;
            assert_eq!(verified.labels(), truth[..50].to_vec());
            assert_eq!((verified.report().known_total, verified.report().duplicates), (20, 10));
        }
        Ok(())
    }

    #[test]
    fn a_server_that_lies_everywhere_is_caught_with_evidence() -> Result<(), FusionError> {
        let (truth, pool) = setup()?;
        let config = FusionConfig::new(5, 5, 0.01)?;
        let mut server = Table { truth, lie: |_, l| (l + 1) % 10 };
        match run(&config, &pool, (0..30).collect(), &mut server, &mut Randomness::Os) {
            Err(FusionError::ServerCheated(e)) => {
                assert_eq!(e.known_failures.len(), 5);
                assert!(e.disagreeing_duplicates.is_empty(), "a consistent liar answers both copies alike");
                assert!(e.report.p_value < 0.01);
                assert!(e.to_string().contains("0/5 known answers right"));
            }
            other => panic!("expected ServerCheated, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn an_inconsistent_server_fails_the_duplicates_and_a_model_switch_is_evidence() -> Result<(), FusionError> {
        let (truth, pool) = setup()?;
        // m = 0: only duplicates. Lie on every odd position.
        let config = FusionConfig::new(0, 30, 0.01)?;
        let mut server = Table { truth: truth.clone(), lie: |p, l| if p % 2 == 1 { (l + 3) % 10 } else { l } };
        let Err(FusionError::ServerCheated(e)) =
            run(&config, &pool, (0..30).collect(), &mut server, &mut Randomness::Os)
        else {
            panic!("expected ServerCheated")
        };
        assert!(!e.disagreeing_duplicates.is_empty());
        let batch = Batch::compile(&FusionConfig::new(3, 0, 0.01)?, &pool, (0..4).collect(), &mut Randomness::Os)?;
        let labels: Vec<usize> = batch.inputs().iter().map(|&i| truth[i]).collect();
        let mut answers = BatchAnswers::one_model(labels, ModelIdentity::named("m", Some("1")));
        answers.models[2].version = Some("2".into());
        let Err(FusionError::ServerCheated(e)) = batch.check(answers) else { panic!("expected ServerCheated") };
        assert_eq!(e.models.len(), 2);
        Ok(())
    }

    #[test]
    fn ground_truth_pool_runs_a_binomial_test() -> Result<(), FusionError> {
        let truth: Vec<usize> = (0..400).map(|i| i % 10).collect();
        // The pool's ground truth differs from the model on every tenth sample (90 % accurate).
        let model: Vec<usize> =
            truth.iter().enumerate().map(|(i, &l)| if i % 10 == 0 { (l + 1) % 10 } else { l }).collect();
        let pool = KnownAnswerPool::ground_truth((200..400).collect(), truth[200..].to_vec(), 0.9)?;
        let config = FusionConfig::new(60, 0, 0.05)?;
        let mut honest = Table { truth: model, lie: |_, l| l };
        let mut alarms = 0;
        for seed in 0..200 {
            match run(&config, &pool, (0..40).collect(), &mut honest, &mut Randomness::insecure_seed(seed)) {
                Ok(v) => assert!(v.report().p_value >= 0.05),
                Err(FusionError::ServerCheated(_)) => alarms += 1,
                Err(e) => return Err(e),
            }
        }
        assert!(alarms <= 20, "{alarms} false alarms in 200 at β = 0.05");
        // A 50 % accurate server fails.
        let mut bad = Table { truth: truth.clone(), lie: |p, l| if p % 2 == 0 { (l + 1) % 10 } else { l } };
        assert!(matches!(
            run(&config, &pool, (0..40).collect(), &mut bad, &mut Randomness::Os),
            Err(FusionError::ServerCheated(_))
        ));
        Ok(())
    }

    #[test]
    fn bad_input_is_refused_before_anything_is_sent() -> Result<(), FusionError> {
        let (truth, pool) = setup()?;
        struct Never;
        impl BatchOracle<usize> for Never {
            fn validate(&self, q: &usize) -> Result<(), ClientError> {
                if *q < 300 { Ok(()) } else { Err(ClientError::Invalid("wrong shape".into())) }
            }
            fn capacity(&self) -> Option<usize> {
                Some(40)
            }
            fn answer_batch(&mut self, _: &[usize]) -> Result<BatchAnswers, ClientError> {
                panic!("nothing may be sent")
            }
        }
        assert!(matches!(FusionConfig::new(0, 0, 0.01), Err(FusionError::Invalid(_))));
        assert!(matches!(FusionConfig::parse("4,x"), Err(FusionError::Invalid(_))));
        assert_eq!(FusionConfig::parse("4, 2,0.05")?, FusionConfig::new(4, 2, 0.05)?);
        let run_with = |config: FusionConfig, pool: &KnownAnswerPool<usize>, n: usize| {
            run(&config, pool, (0..n).collect(), &mut Never, &mut Randomness::Os)
        };
        let too_many_dups = run_with(FusionConfig::new(1, 9, 0.01)?, &pool, 8);
        assert!(matches!(too_many_dups, Err(FusionError::Invalid(ref s)) if s.contains("k = 9")), "{too_many_dups:?}");
        let over_grant = run_with(FusionConfig::new(10, 5, 0.01)?, &pool, 30);
        assert!(matches!(over_grant, Err(FusionError::Invalid(ref s)) if s.contains("granted")), "{over_grant:?}");
        let wrong_shape = KnownAnswerPool::honest_labels(vec![5, 999], vec![0, 1])?;
        assert!(
            matches!(run_with(FusionConfig::new(1, 1, 0.01)?, &wrong_shape, 4), Err(FusionError::Invalid(ref s)) if s.contains("pool"))
        );
        assert!(matches!(KnownAnswerPool::honest_labels(vec![1, 2], vec![0]), Err(FusionError::Invalid(_))));
        let small = KnownAnswerPool::ground_truth(truth[..3].to_vec(), truth[..3].to_vec(), 0.5)?;
        assert!(
            matches!(run_with(FusionConfig::new(3, 1, 0.01)?, &small, 4), Err(FusionError::Invalid(ref s)) if s.contains("raise m"))
        );
        let no_known = KnownAnswerPool::ground_truth(truth.clone(), truth.clone(), 0.9)?;
        assert!(
            matches!(run_with(FusionConfig::new(0, 2, 0.01)?, &no_known, 4), Err(FusionError::Invalid(ref s)) if s.contains("m must be positive"))
        );
        Ok(())
    }

    #[test]
    fn the_permutation_is_uniform_enough_and_secret_per_batch() -> Result<(), FusionError> {
        let (_, pool) = setup()?;
        let config = FusionConfig::new(3, 2, 0.01)?;
        // Where does real query 0 land? Over many OS-seeded batches, every position of N = 10.
        let mut seen = [0u32; 10];
        for _ in 0..2000 {
            let batch = Batch::compile(&config, &pool, (0..5).collect(), &mut Randomness::Os)?;
            let p = batch.slots.iter().position(|s| *s == Slot::Real(0)).unwrap_or(usize::MAX);
            seen[p.min(9)] += 1;
        }
        assert!(seen.iter().all(|&c| (120..=290).contains(&c)), "{seen:?}");
        assert!(
            !format!("{:?}", Batch::compile(&config, &pool, (0..5).collect(), &mut Randomness::Os)?).contains("Real")
        );
        Ok(())
    }
}
