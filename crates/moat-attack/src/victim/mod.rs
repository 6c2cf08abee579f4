//! What a black-box attack queries: a model's answer per input, as a client of it sees it.
//!
//! A [`Victim`] answers a batch of inputs with one probability vector over the classes each, or
//! only the label, and says which of the two it reveals ([`Victim::reveals`]). The attacks
//! never see weights. Implementations:
//!
//! * [`FloatVictim`] — a local ONNX model in float (the plaintext reference);
//! * [`FixedVictim`] — the same model in plaintext fixed point (what the protocol computes);
//! * [`SimulatedVictim`] — the simulated two-party engine revealing the logits to the client,
//!   which applies the softmax itself (the revealed output of a secure session);
//! * [`SessionVictim`] — the same over a real secure session (moat-client's
//!   [`moat_client::SecureSession`]), or that session revealing the probabilities of its
//!   secure softmax instead of the logits;
//! * [`HttpVictim`] — an Open Inference Protocol service (`moat serve` or any other), asked
//!   for its `probabilities` or `label` output.
//!
//! Every implementation checks that an answer is a probability vector over
//! [`Victim::classes`] classes and fails with [`VictimError::NotClassVector`] otherwise.
//! Errors keep their cause: the service saying no (a budget, a rate limit, a policy) is
//! [`VictimError::Refused`], a timeout or a broken connection [`VictimError::Service`].
//!
//! SEEK's oracle ([`crate::oracle::Oracle`]) is a different interface on purpose: it tampers
//! with the client's shares inside the protocol, which no black-box victim can.

pub mod http;
pub mod session;

use std::sync::Arc;

use moat_mpc::engine::{Honest, Reveal, Revealed, SimulatedEngine};
use moat_nn::exec::par_map;
use moat_nn::{FloatExecutor, Graph, QuantizedGraph};
use thiserror::Error;

pub use http::HttpVictim;
pub use session::SessionVictim;

/// What can fail when a victim is queried.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VictimError {
    /// The victim's answer is not a probability vector over the dataset's classes. Raised by
    /// the first query (or before any, when the victim's declared output size is wrong).
    #[error("victim '{victim}': {detail}")]
    NotClassVector {
        /// The victim.
        victim: String,
        /// What is wrong with its output.
        detail: String,
    },
    /// The attack asked for more than the victim reveals (probabilities of a label-only one).
    #[error("victim '{victim}' reveals {reveals:?} only, {asked:?} was asked")]
    NotRevealed {
        /// The victim.
        victim: String,
        /// What it reveals.
        reveals: Reveal,
        /// What was asked.
        asked: Reveal,
    },
    /// The model executor failed.
    #[error("model: {0}")]
    Model(#[from] moat_nn::NnError),
    /// The two-party engine failed.
    #[error("engine: {0}")]
    Engine(#[from] moat_mpc::MpcError),
    /// The service refused the queries (a budget, a rate limit, a policy, the session port).
    #[error("the service refused: {0}")]
    Refused(String),
    /// The service failed for another reason (a timeout, a broken connection, an answer off
    /// the protocol).
    #[error("the service failed: {0}")]
    Service(String),
    /// A guard on the victim's answers (MemGuard, SIGuard) failed.
    #[error("the guard failed: {0}")]
    Guard(String),
}

impl From<moat_client::ClientError> for VictimError {
    /// Sorted as [`crate::AttackError`]'s: a refusal is not a failure.
    fn from(e: moat_client::ClientError) -> Self {
        match crate::AttackError::from(e) {
            crate::AttackError::Refused(m) => VictimError::Refused(m),
            crate::AttackError::Service(m) => VictimError::Service(m),
            other => VictimError::Service(other.to_string()),
        }
    }
}

/// Result with [`VictimError`].
pub type Result<T> = std::result::Result<T, VictimError>;

/// A model queried as a black box.
pub trait Victim {
    /// A short name of the victim (`float`, `fixed`, `simulated-2pc`, `http`, …).
    fn name(&self) -> String;
    /// The number of classes each answer covers.
    fn classes(&self) -> usize;
    /// The most one answer reveals: [`Reveal::Label`] for a label-only victim (whose
    /// [`Victim::probabilities`] fails with [`VictimError::NotRevealed`]), else a class-score
    /// vector ([`Reveal::Probabilities`], the default, or [`Reveal::Logits`] when the client
    /// applies the softmax itself).
    fn reveals(&self) -> Reveal {
        Reveal::Probabilities
    }
    /// One probability vector (non-negative, summing to 1 within 10⁻⁶) per input.
    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>>;
    /// The predicted label per input. The default takes the argmax of the probabilities;
    /// label-only victims override it.
    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        Ok(self.probabilities(inputs)?.iter().map(|p| argmax(p)).collect())
    }
}

/// Index of the largest entry (the first on ties).
pub fn argmax(p: &[f64]) -> usize {
    p.iter().enumerate().fold(0, |best, (i, &v)| if v > p[best] { i } else { best })
}

/// Softmax in f64 of float logits (max-subtracted).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|&z| (z - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The client's reading of probabilities revealed as ring elements (a secure softmax's, with or
/// without a guard): decoded under `fixed`, negatives clamped to 0, divided by their sum (the
/// fixed-point softmax sums to 1 only within its precision; the division keeps the label).
/// All zeros (not produced by the secure softmax, whose row maximum stays positive) read as
/// uniform.
pub fn read_ring_probabilities(fixed: moat_nn::FixedPoint, ring: &[u64]) -> Vec<f64> {
    let v: Vec<f64> = ring.iter().map(|&x| fixed.decode(x).max(0.0)).collect();
    let sum: f64 = v.iter().sum();
    if sum > 0.0 { v.into_iter().map(|x| x / sum).collect() } else { vec![1.0 / ring.len() as f64; ring.len()] }
}

/// Checks that `p` is a probability vector over `classes` classes.
pub fn check_class_vector(victim: &str, p: &[f64], classes: usize) -> Result<()> {
    let fail = |detail: String| Err(VictimError::NotClassVector { victim: victim.to_string(), detail });
    if p.len() != classes {
        return fail(format!("answered {} values, the dataset has {classes} classes", p.len()));
    }
    if p.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return fail("answered a negative or non-finite score".into());
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return fail(format!("scores sum to {sum}, not 1"));
    }
    Ok(())
}

fn checked(victim: &str, classes: usize, answers: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>> {
    answers.iter().try_for_each(|p| check_class_vector(victim, p, classes))?;
    Ok(answers)
}

fn output_size(graph: &Graph) -> usize {
    moat_nn::tensor::numel(graph.output_shape())
}

fn expect_classes(name: &str, graph: &Graph, classes: usize) -> Result<()> {
    let out = output_size(graph);
    if out != classes {
        return Err(VictimError::NotClassVector {
            victim: name.to_string(),
            detail: format!("the model outputs {out} values, the dataset has {classes} classes"),
        });
    }
    Ok(())
}

/// A local model executed in float; the softmax is applied to its logits in f64.
pub struct FloatVictim {
    graph: Arc<Graph>,
    classes: usize,
}

impl FloatVictim {
    /// A victim over `graph`, checked to output `classes` values before any query.
    pub fn new(graph: Arc<Graph>, classes: usize) -> Result<Self> {
        expect_classes("float", &graph, classes)?;
        Ok(Self { graph, classes })
    }
}

impl Victim for FloatVictim {
    fn name(&self) -> String {
        "float".into()
    }

    fn reveals(&self) -> Reveal {
        Reveal::Logits
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let graph = &self.graph;
        let answers = par_map(inputs.len(), |i| {
            FloatExecutor::logits(graph, inputs[i])
                .map(|z| softmax(&z.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()))
        });
        checked("float", self.classes, answers.into_iter().collect::<moat_nn::Result<Vec<_>>>()?)
    }
}

/// A local model executed in plaintext fixed point (bit-exact with the protocol's logits up
/// to truncation); the softmax is applied to the decoded logits in f64.
pub struct FixedVictim {
    model: Arc<QuantizedGraph>,
    classes: usize,
}

impl FixedVictim {
    /// A victim over `model`, checked to output `classes` values before any query.
    pub fn new(model: Arc<QuantizedGraph>, classes: usize) -> Result<Self> {
        expect_classes("fixed", model.graph(), classes)?;
        Ok(Self { model, classes })
    }
}

impl Victim for FixedVictim {
    fn name(&self) -> String {
        "fixed".into()
    }

    fn reveals(&self) -> Reveal {
        Reveal::Logits
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let model = &self.model;
        let answers = par_map(inputs.len(), |i| {
            model.logits(inputs[i]).map(|z| softmax(&z.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()))
        });
        checked("fixed", self.classes, answers.into_iter().collect::<moat_nn::Result<Vec<_>>>()?)
    }
}

/// The simulated two-party engine asked to reveal the logits ([`Reveal::Logits`]) to an
/// honest client, which decodes them from the ring and applies the softmax in f64: the
/// probabilities a client of a secure session sees when the service reveals logits. Labels
/// ([`Victim::labels`]) are asked with [`Reveal::Label`] (argmax inside the protocol).
pub struct SimulatedVictim {
    engine: SimulatedEngine,
    classes: usize,
}

impl SimulatedVictim {
    /// A victim serving `model` through the simulated engine; `seed` drives its share
    /// randomness (not secret: the simulation holds both parties).
    pub fn new(model: Arc<QuantizedGraph>, classes: usize, seed: u64) -> Result<Self> {
        expect_classes("simulated-2pc", model.graph(), classes)?;
        Ok(Self { engine: SimulatedEngine::new(model, seed), classes })
    }

    /// Queries made so far.
    pub fn queries(&self) -> u64 {
        self.engine.queries()
    }
}

impl Victim for SimulatedVictim {
    fn name(&self) -> String {
        "simulated-2pc".into()
    }

    fn reveals(&self) -> Reveal {
        Reveal::Logits
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let fixed = self.engine.model().fixed();
        let mut answers = Vec::with_capacity(inputs.len());
        for input in inputs {
            match self.engine.infer(input, Reveal::Logits, &mut Honest)? {
                Revealed::Logits(ring) => {
                    let z: Vec<f64> = ring.iter().map(|&v| fixed.decode(v)).collect();
                    answers.push(softmax(&z));
                }
                Revealed::Label(_) | Revealed::Probabilities(_) => {
                    return Err(VictimError::NotClassVector {
                        victim: self.name(),
                        detail: "revealed a label where logits were asked".into(),
                    });
                }
            }
        }
        checked("simulated-2pc", self.classes, answers)
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        let fixed = self.engine.model().fixed();
        let mut labels = Vec::with_capacity(inputs.len());
        for input in inputs {
            let revealed = self.engine.infer(input, Reveal::Label, &mut Honest)?;
            labels.push(revealed.label(fixed).ok_or_else(|| VictimError::NotClassVector {
                victim: "simulated-2pc".into(),
                detail: "revealed no label".into(),
            })?);
        }
        Ok(labels)
    }
}
