//! [`BatchOracle`] for every path a client has: a plaintext Open Inference Protocol service
//! (one request for the whole batch, so a task routes it once), an open secure session (one
//! session for the whole batch), the simulated two-party engine, and a table of labels (what
//! the statistical sweeps run on: the model's answers computed once per sample).

use std::sync::Arc;

use moat_mpc::engine::{Honest, Reveal, SimulatedEngine};
use serde_json::{Map, Value};

use super::{BatchAnswers, BatchOracle, ModelIdentity};
use crate::error::ClientError;
use crate::http::HttpClient;
use crate::oip::InferResponse;
use crate::secure::SecureSession;

/// The response parameter holding the server's model commitment, when it gives one.
pub const COMMITMENT_PARAMETER: &str = moat_wire::params::MODEL_COMMITMENT;

fn size_check(len: usize, expected: usize) -> Result<(), ClientError> {
    if len == expected {
        Ok(())
    } else {
        Err(ClientError::Invalid(format!("the input has {len} values, the model takes {expected}")))
    }
}

pub use crate::http::OipTarget;

/// A plaintext OIP v2 service: the batch is one request, routed once under a task; the model
/// identity of each input is its response's `model_name`/`model_version` and
/// `model_commitment` parameter.
///
/// A batch larger than the server's `max_batch_size` ([`Self::with_max_batch`]) is refused
/// before any query ([`BatchOracle::capacity`]) unless splitting is allowed
/// ([`Self::allowing_split`]); a split batch is consecutive requests, each routed on its own,
/// and is accepted only if every response carries a model commitment, so that a model change
/// between requests is evidence rather than silent (a non-disclosing task gives none: its
/// split batch is an error).
#[derive(Debug)]
pub struct OipOracle<'c> {
    client: &'c HttpClient,
    target: OipTarget,
    input_name: String,
    sample_shape: Vec<usize>,
    parameters: Map<String, Value>,
    max_batch: usize,
    split: bool,
}

impl<'c> OipOracle<'c> {
    /// Batches for `target`, whose input is called `input_name` and whose samples have
    /// `sample_shape` (both from its metadata).
    pub fn new(client: &'c HttpClient, target: OipTarget, input_name: String, sample_shape: Vec<usize>) -> Self {
        Self { client, target, input_name, sample_shape, parameters: Map::new(), max_batch: usize::MAX, split: false }
    }

    /// The most inputs one request may carry (the model's or task's `max_batch_size`): a
    /// larger batch is refused before any query, or split with [`Self::allowing_split`].
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Lets a batch larger than `max_batch` go as consecutive requests. Each is routed on its
    /// own; the batch is answered only if every response carries a model commitment (the
    /// check then rejects a batch naming two models). For a named model whose server
    /// commits; never needed for a single request.
    pub fn allowing_split(mut self) -> Self {
        self.split = true;
        self
    }

    /// Adds a request parameter (e.g. a task's spec).
    pub fn with_parameter(mut self, key: impl Into<String>, value: Value) -> Self {
        self.parameters.insert(key.into(), value);
        self
    }

    fn identity(response: &InferResponse) -> ModelIdentity {
        ModelIdentity {
            name: Some(response.model_name.clone()),
            version: response.model_version.clone(),
            commitment: response.parameters.get(COMMITMENT_PARAMETER).and_then(Value::as_str).map(str::to_string),
        }
    }
}

/// Labels from the `label` output, or the argmax of `logits`.
fn response_labels(response: &InferResponse) -> Result<Vec<usize>, ClientError> {
    if let Ok(labels) = response.labels() {
        return Ok(labels);
    }
    response
        .logits()?
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
                    Some((_, b)) if b >= v => best,
                    _ => Some((i, v)),
                })
                .map(|(i, _)| i)
                .ok_or_else(|| ClientError::Protocol("empty logits".into()))
        })
        .collect()
}

impl BatchOracle<Vec<f32>> for OipOracle<'_> {
    fn validate(&self, query: &Vec<f32>) -> Result<(), ClientError> {
        size_check(query.len(), self.sample_shape.iter().product())
    }

    /// `max_batch_size`, unless splitting is allowed.
    fn capacity(&self) -> Option<usize> {
        (!self.split && self.max_batch != usize::MAX).then_some(self.max_batch)
    }

    fn answer_batch(&mut self, inputs: &[Vec<f32>]) -> Result<BatchAnswers, ClientError> {
        if inputs.len() > self.max_batch && !self.split {
            return Err(ClientError::Invalid(format!(
                "a batch of {} inputs exceeds the max_batch_size of {}: splitting it would route each part on its own",
                inputs.len(),
                self.max_batch
            )));
        }
        let mut answers = BatchAnswers { labels: Vec::with_capacity(inputs.len()), models: Vec::new() };
        let parameters = &self.parameters;
        let input_name = &self.input_name;
        let responses =
            self.client.infer_in_batches(&self.target, inputs, &self.sample_shape, self.max_batch, |r| {
                let r = r.with_input_name(input_name.clone()).with_output("label", false, None);
                parameters.iter().fold(r, |r, (k, v)| r.with_parameter(k.clone(), v.clone()))
            })?;
        let split = responses.len() > 1;
        for (n, response) in responses {
            if split && response.parameters.get(COMMITMENT_PARAMETER).and_then(Value::as_str).is_none() {
                return Err(ClientError::Protocol(format!(
                    "the batch went as several requests and the answer of model '{}' carries no model commitment: \
                     the parts cannot be shown to come from one model (ask for a batch of at most {})",
                    response.model_name, self.max_batch
                )));
            }
            let labels = response_labels(&response)?;
            if labels.len() != n {
                return Err(ClientError::Protocol(format!("{} labels for {n} inputs", labels.len())));
            }
            answers.labels.extend(labels);
            answers.models.extend(std::iter::repeat_n(Self::identity(&response), n));
        }
        Ok(answers)
    }
}

impl From<&crate::secure::Admission> for ModelIdentity {
    /// The model an admission names, with its commitment.
    fn from(admission: &crate::secure::Admission) -> Self {
        ModelIdentity {
            name: admission.model_name.clone(),
            version: admission.model_version.clone(),
            commitment: admission.model_commitment().map(str::to_string),
        }
    }
}

/// An open secure session (admitted by a service, or opened on a tokenless `moat secure
/// server`): the whole batch runs in it (a grant bounds the batch), each input a label-only
/// two-party inference. The identity of every answer is the stated model (e.g. from the
/// admission) with the commitment of the session's hello, which one session cannot change; a
/// hello whose commitment differs from the one the admission stated is itself evidence (the
/// batch then names both, and [`super::Batch::check`] rejects it).
#[derive(Debug)]
pub struct SessionOracle<'s> {
    session: &'s mut SecureSession,
    model: ModelIdentity,
}

impl<'s> SessionOracle<'s> {
    /// Batches in `session`, served by `model` (e.g. from the admission's name, version and
    /// commitment).
    pub fn new(session: &'s mut SecureSession, model: ModelIdentity) -> Self {
        Self { session, model }
    }

    /// The identities of a batch of `n`: the stated model under the hello's commitment; where
    /// the admission stated another commitment, the first answer carries the stated identity.
    fn identities(&self, n: usize) -> Vec<ModelIdentity> {
        let hello = self.session.model_commitment().map(str::to_string);
        let served =
            ModelIdentity { commitment: hello.clone().or_else(|| self.model.commitment.clone()), ..self.model.clone() };
        let mut models = vec![served; n];
        if let (Some(stated), Some(hello), Some(first)) = (&self.model.commitment, &hello, models.first_mut())
            && stated != hello
        {
            *first = self.model.clone();
        }
        models
    }
}

impl BatchOracle<Vec<f32>> for SessionOracle<'_> {
    fn validate(&self, query: &Vec<f32>) -> Result<(), ClientError> {
        size_check(query.len(), self.session.input_len())
    }

    /// The grant's remaining queries (none for a tokenless server without a limit).
    fn capacity(&self) -> Option<usize> {
        (self.session.granted() != u64::MAX).then(|| usize::try_from(self.session.remaining()).unwrap_or(usize::MAX))
    }

    fn answer_batch(&mut self, inputs: &[Vec<f32>]) -> Result<BatchAnswers, ClientError> {
        let labels = inputs.iter().map(|x| self.session.infer(x)).collect::<Result<Vec<_>, _>>()?;
        let models = self.identities(labels.len());
        Ok(BatchAnswers { labels, models })
    }
}

/// The simulated two-party engine (both parties in this process), label-only reveal.
pub struct SimulatedOracle {
    engine: SimulatedEngine,
    model: ModelIdentity,
}

impl std::fmt::Debug for SimulatedOracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedOracle").field("model", &self.model).finish_non_exhaustive()
    }
}

impl SimulatedOracle {
    /// Batches answered by `engine`, which serves `model`.
    pub fn new(engine: SimulatedEngine, model: ModelIdentity) -> Self {
        Self { engine, model }
    }
}

impl BatchOracle<Vec<f32>> for SimulatedOracle {
    fn validate(&self, query: &Vec<f32>) -> Result<(), ClientError> {
        size_check(query.len(), self.engine.model().graph().input_shape().iter().product())
    }

    fn answer_batch(&mut self, inputs: &[Vec<f32>]) -> Result<BatchAnswers, ClientError> {
        let fixed = self.engine.model().fixed();
        let labels = inputs
            .iter()
            .map(|x| {
                let revealed = self
                    .engine
                    .infer(x, Reveal::Label, &mut Honest)
                    .map_err(|e| ClientError::Invalid(e.to_string()))?;
                revealed.label(fixed).ok_or_else(|| ClientError::Protocol("no label revealed".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchAnswers::one_model(labels, self.model.clone()))
    }
}

/// A model's answers computed once per sample: queries are sample indices. What the
/// thousand-batch sweeps run the Fusion checks against.
#[derive(Clone, Debug)]
pub struct LabelOracle {
    labels: Arc<Vec<usize>>,
    model: ModelIdentity,
}

impl LabelOracle {
    /// Sample i is answered `labels[i]` by `model`.
    pub fn new(labels: Arc<Vec<usize>>, model: ModelIdentity) -> Self {
        Self { labels, model }
    }

    /// The label table.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The identity it answers as.
    pub fn model(&self) -> &ModelIdentity {
        &self.model
    }
}

impl BatchOracle<usize> for LabelOracle {
    fn validate(&self, query: &usize) -> Result<(), ClientError> {
        if *query < self.labels.len() {
            Ok(())
        } else {
            Err(ClientError::Invalid(format!("no sample {query} (the table has {})", self.labels.len())))
        }
    }

    fn answer_batch(&mut self, inputs: &[usize]) -> Result<BatchAnswers, ClientError> {
        inputs.iter().try_for_each(|q| self.validate(q))?;
        Ok(BatchAnswers::one_model(inputs.iter().map(|&i| self.labels[i]).collect(), self.model.clone()))
    }
}
