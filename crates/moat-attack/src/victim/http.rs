//! An Open Inference Protocol service as a victim: `POST …/infer` asking for moat's
//! `probabilities` (or `logits`) output, or only its `label`, in requests of at most the
//! service's `max_batch_size` samples ([`HttpClient::infer_in_batches`]). Every sample sent is
//! charged to the API key: a service that refuses (401, 403, 429 — a budget, a rate limit, an
//! output its policy does not allow) is [`VictimError::Refused`]; a timeout, a broken
//! connection or an answer off the protocol is [`VictimError::Service`].

use moat_client::{HttpClient, InferResponse, OipTarget};
use moat_mpc::engine::Reveal;
use moat_wire::params::{OUTPUT_LABEL, OUTPUT_LOGITS, OUTPUT_PROBABILITIES};
use serde_json::Value;

use super::{Result, Victim, VictimError, check_class_vector, softmax};

/// What the victim is called in reports.
const NAME: &str = "http";

/// Largest deviation from 1 of a served probability vector's sum (the service computes in
/// `f32`); within it the vector is renormalised in `f64`.
const SUM_TOLERANCE: f64 = 1e-4;

/// A model (or task) of an OIP service, queried as a key holder.
#[derive(Debug)]
pub struct HttpVictim {
    client: HttpClient,
    target: OipTarget,
    input_name: String,
    sample_shape: Vec<usize>,
    max_batch: usize,
    classes: usize,
    reveals: Reveal,
    parameters: Vec<(String, Value)>,
    queries: u64,
}

impl HttpVictim {
    /// The model `name` (`version`: the server's default when `None`) of the service `client`
    /// talks to, asked for `reveals` — [`Reveal::Probabilities`], [`Reveal::Logits`] (the
    /// softmax then applied here in `f64`) or [`Reveal::Label`]. Its input name, sample shape
    /// and batch bound come from the model's metadata; its output is checked to have `classes`
    /// values before any query.
    pub fn for_model(
        client: HttpClient,
        name: &str,
        version: Option<&str>,
        reveals: Reveal,
        classes: usize,
    ) -> Result<Self> {
        let meta = client.model_metadata(name, version)?;
        let target = OipTarget::Model { name: name.to_string(), version: version.map(str::to_string) };
        let mut victim = Self::new(client, target, meta.input_name()?, meta.sample_shape()?, reveals, classes)?;
        if let Some(max) = meta.max_batch_size() {
            victim.max_batch = max.max(1);
        }
        let declared: Vec<usize> =
            meta.outputs.iter().filter_map(|o| o.shape.last().and_then(|&k| usize::try_from(k).ok())).collect();
        if declared.first().is_some_and(|&k| k != classes) {
            return Err(VictimError::NotClassVector {
                victim: NAME.into(),
                detail: format!("the served model outputs {declared:?} values, the dataset has {classes} classes"),
            });
        }
        Ok(victim)
    }

    /// A victim at `target` (a model or a task), whose input is called `input_name` and has
    /// `sample_shape` per sample; batches of at most 64 samples until
    /// [`HttpVictim::with_max_batch`].
    pub fn new(
        client: HttpClient,
        target: OipTarget,
        input_name: &str,
        sample_shape: Vec<usize>,
        reveals: Reveal,
        classes: usize,
    ) -> Result<Self> {
        if let Reveal::TopK(_) = reveals {
            return Err(VictimError::NotClassVector {
                victim: NAME.into(),
                detail: "top-k answers are not class vectors: ask for probabilities, logits or the label".into(),
            });
        }
        Ok(Self {
            client,
            target,
            input_name: input_name.to_string(),
            sample_shape,
            max_batch: 64,
            classes,
            reveals,
            parameters: Vec::new(),
            queries: 0,
        })
    }

    /// At most `max_batch` samples per request.
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Sets a request parameter sent with every later request (e.g. a task's spec:
    /// [`moat_wire::params::MIN_ACCURACY`]); `Value::Null` removes it.
    pub fn set_parameter(&mut self, key: &str, value: Value) {
        self.parameters.retain(|(k, _)| k != key);
        if !value.is_null() {
            self.parameters.push((key.to_string(), value));
        }
    }

    /// Samples answered so far (each charged to the key). A call that fails counts nothing,
    /// though the requests of it answered before the failing one were charged.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// The batch bound.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The `output` of `inputs`, one response per request of at most `max_batch` samples.
    fn ask(&mut self, inputs: &[&[f32]], output: &str) -> Result<Vec<(usize, InferResponse)>> {
        let owned: Vec<Vec<f32>> = inputs.iter().map(|x| x.to_vec()).collect();
        let (input_name, parameters) = (&self.input_name, &self.parameters);
        let answers = self.client.infer_in_batches(&self.target, &owned, &self.sample_shape, self.max_batch, |r| {
            let r = r.with_input_name(input_name.clone()).with_binary_input(true).with_output(output, false, None);
            parameters.iter().fold(r, |r, (k, v)| r.with_parameter(k.clone(), v.clone()))
        })?;
        self.queries += inputs.len() as u64;
        Ok(answers)
    }
}

/// Checks `n` answers arrived for `n` inputs.
fn count(n: usize, got: usize, what: &str) -> Result<()> {
    if n == got {
        Ok(())
    } else {
        Err(VictimError::Service(format!("the service answered {got} {what} for {n} inputs")))
    }
}

impl Victim for HttpVictim {
    fn name(&self) -> String {
        NAME.into()
    }

    fn reveals(&self) -> Reveal {
        self.reveals
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let output = match self.reveals {
            Reveal::Probabilities => OUTPUT_PROBABILITIES,
            Reveal::Logits => OUTPUT_LOGITS,
            Reveal::Label | Reveal::TopK(_) => {
                return Err(VictimError::NotRevealed {
                    victim: NAME.into(),
                    reveals: self.reveals,
                    asked: Reveal::Probabilities,
                });
            }
        };
        let mut answers = Vec::with_capacity(inputs.len());
        for (n, response) in self.ask(inputs, output)? {
            let rows = response.rows_of(output)?;
            count(n, rows.len(), "score vectors")?;
            for row in rows {
                let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let p = if output == OUTPUT_LOGITS { softmax(&row) } else { renormalised(row) };
                check_class_vector(NAME, &p, self.classes)?;
                answers.push(p);
            }
        }
        Ok(answers)
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        let mut labels = Vec::with_capacity(inputs.len());
        for (n, response) in self.ask(inputs, OUTPUT_LABEL)? {
            let got = response.labels()?;
            count(n, got.len(), "labels")?;
            if let Some(bad) = got.iter().find(|&&l| l >= self.classes) {
                return Err(VictimError::NotClassVector {
                    victim: NAME.into(),
                    detail: format!("answered label {bad}, the dataset has {} classes", self.classes),
                });
            }
            labels.extend(got);
        }
        Ok(labels)
    }
}

/// A served probability vector divided by its sum, if that sum is 1 within [`SUM_TOLERANCE`]
/// (else the vector is returned as is, for [`check_class_vector`] to reject).
fn renormalised(p: Vec<f64>) -> Vec<f64> {
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() <= SUM_TOLERANCE { p.into_iter().map(|v| v / sum).collect() } else { p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_vector_is_renormalised_only_near_one() {
        let p = renormalised(vec![0.25, 0.750_01]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(renormalised(vec![0.5, 0.6]), vec![0.5, 0.6]);
    }

    #[test]
    fn a_timeout_is_a_service_failure_not_a_refusal() -> std::result::Result<(), Box<dyn std::error::Error>> {
        // A port that takes connections (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", silent.local_addr()?);
        let client = HttpClient::new(&url)?.with_timeout(std::time::Duration::from_millis(300));
        let target = OipTarget::Model { name: "m".into(), version: None };
        let mut victim = HttpVictim::new(client, target, "x", vec![2], Reveal::Probabilities, 2)?;
        let x = [0.0f32, 1.0];
        assert!(matches!(victim.probabilities(&[&x]), Err(VictimError::Service(_))));
        assert!(matches!(victim.labels(&[&x]), Err(VictimError::Service(_))));
        victim.reveals = Reveal::Label;
        assert!(matches!(victim.probabilities(&[&x]), Err(VictimError::NotRevealed { .. })));
        assert_eq!(victim.queries(), 0);
        Ok(())
    }
}
