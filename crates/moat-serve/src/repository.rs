//! The model repository: a directory laid out like Triton's, loaded and profiled at start, with
//! index / load / unload at run time.
//!
//! ```text
//! <repo>/
//!   tasks.json                  optional: selection policy per task (see crate::tasks)
//!   <model>/
//!     config.json               optional: task, batch limit, held-out set, declared profile
//!     <version>/                a positive integer; the highest loaded version is the default
//!       model.onnx
//!       model.card.json         optional: the model card `moat train` writes beside the model
//! ```
//!
//! `config.json` (every field optional; unknown fields are an error):
//!
//! ```json
//! {
//!   "task": "digits",
//!   "max_batch_size": 64,
//!   "held_out": { "dataset": "digits", "data_dir": null, "samples": 360, "seed": 0 },
//!   "latency": { "warmup": 20, "runs": 200 },
//!   "declared": { "accuracy": 97.5, "latency_ms": 2.0 }
//! }
//! ```
//!
//! * `task` — the task (model-less endpoint) the model serves; default: the dataset of its card.
//! * `held_out` — the set its accuracy is measured on: the *test* split of `dataset` (loaded by
//!   [`moat_nn::data::load`]; `data_dir` relative to the model directory, default the server's
//!   `--data-dir`; `seed` default the card's split seed, so seed-split sets stay disjoint from the
//!   training members; `samples` default the server's limit).
//! * `declared` — values that replace the measured accuracy / selection latency.
//!
//! A model whose versions fail to load is `UNAVAILABLE` with the reason in the index; the
//! others keep serving.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_nn::Graph;
use moat_nn::card::ModelCard;
use moat_nn::data::Dataset;
use moat_nn::onnx::{MultiOutput, Signature};
use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::oip::ModelIo;
use crate::policy::Candidate;
use crate::profile::{Profile, held_out_accuracy, measure_latency};

/// File name of a version's model.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of a model's configuration.
pub const CONFIG_FILE: &str = "config.json";

/// Where a model's held-out accuracy is measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOut {
    /// Dataset name (its test split is used).
    pub dataset: String,
    /// Dataset directory, relative to the model directory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// At most this many samples.
    #[serde(default)]
    pub samples: Option<usize>,
    /// Split seed for sets without an official split.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// How latency is measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRuns {
    /// Untimed warm-up runs.
    #[serde(default)]
    pub warmup: Option<usize>,
    /// Timed runs.
    #[serde(default)]
    pub runs: Option<usize>,
}

/// Profile values that replace measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    /// Accuracy in percent.
    #[serde(default)]
    pub accuracy: Option<f64>,
    /// Selection latency in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

/// A model's `config.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Task served.
    #[serde(default)]
    pub task: Option<String>,
    /// Largest batch accepted.
    #[serde(default)]
    pub max_batch_size: Option<usize>,
    /// Held-out set for the accuracy profile.
    #[serde(default)]
    pub held_out: Option<HeldOut>,
    /// Latency measurement.
    #[serde(default)]
    pub latency: LatencyRuns,
    /// Declared profile values.
    #[serde(default)]
    pub declared: Declared,
}

/// Server-wide defaults for loading and profiling.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Default dataset directory for held-out sets.
    pub data_dir: Option<PathBuf>,
    /// Default warm-up runs.
    pub warmup: usize,
    /// Default timed runs.
    pub runs: usize,
    /// Default held-out sample limit.
    pub held_out_samples: usize,
    /// Default largest batch.
    pub max_batch_size: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { data_dir: None, warmup: 20, runs: 200, held_out_samples: 1000, max_batch_size: 64 }
    }
}

/// Running counters of one model version (Triton's statistics extension, simplified).
#[derive(Debug, Default)]
pub struct VersionStats {
    success: AtomicU64,
    failure: AtomicU64,
    samples: AtomicU64,
    compute_ns: AtomicU64,
    queue_ns: AtomicU64,
    last_inference_ms: AtomicU64,
}

/// A snapshot of [`VersionStats`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Successful requests.
    pub success_count: u64,
    /// Failed requests (after admission).
    pub failure_count: u64,
    /// Samples inferred (Triton's `inference_count`).
    pub inference_count: u64,
    /// Total compute time, nanoseconds.
    pub compute_ns: u64,
    /// Total queue time, nanoseconds.
    pub queue_ns: u64,
    /// Unix time of the last inference, milliseconds (0: never).
    pub last_inference: u64,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl VersionStats {
    /// Records a served request.
    pub fn record_success(&self, samples: usize, queue: Duration, compute: Duration) {
        self.success.fetch_add(1, Ordering::Relaxed);
        self.samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.queue_ns.fetch_add(queue.as_nanos() as u64, Ordering::Relaxed);
        self.compute_ns.fetch_add(compute.as_nanos() as u64, Ordering::Relaxed);
        self.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records a request that failed after admission.
    pub fn record_failure(&self) {
        self.failure.fetch_add(1, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            success_count: self.success.load(Ordering::Relaxed),
            failure_count: self.failure.load(Ordering::Relaxed),
            inference_count: self.samples.load(Ordering::Relaxed),
            compute_ns: self.compute_ns.load(Ordering::Relaxed),
            queue_ns: self.queue_ns.load(Ordering::Relaxed),
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
        }
    }
}

/// One loaded, profiled model version.
#[derive(Debug)]
pub struct ModelVersion {
    /// Model name (its directory).
    pub name: String,
    /// Version number (its subdirectory).
    pub version: u64,
    /// The layer graph (computing the ONNX graph's first output).
    pub graph: Graph,
    /// The ONNX graph's own input and output names, served as they are.
    pub signature: Signature,
    /// Graphs computing the ONNX graph's further outputs (`signature.outputs[1..]`).
    pub output_graphs: Vec<Graph>,
    /// The model card, when one lies beside the model.
    pub card: Option<ModelCard>,
    /// The model's configuration.
    pub config: ModelConfig,
    /// Accuracy and latency.
    pub profile: Profile,
    /// Largest batch accepted.
    pub max_batch_size: usize,
    /// Running counters.
    pub stats: VersionStats,
    /// Commitment to the weights ([`moat_wire::commitment`]): hex SHA-256 of `moat-commit/1`,
    /// [`Self::commitment_nonce`] and the model file. Sent with every answer naming this
    /// version and in the two-party hello, so a client mixing known answers into a batch
    /// (Fusion) sees one committed model per batch; opened to an auditor by handing over the
    /// nonce (`GET /v2/models/{model}/versions/{version}/commitment/opening`, admin).
    pub commitment: String,
    /// The nonce of the commitment, drawn from the OS when the version is loaded.
    pub commitment_nonce: [u8; 16],
}

/// [`ModelVersion::commitment`] of a model file's bytes under `nonce`.
pub fn commit_to_model(nonce: &[u8; 16], model_file: &[u8]) -> String {
    moat_wire::commitment::commit(nonce, model_file)
}

impl ModelVersion {
    /// The tensors this version serves.
    pub fn io(&self) -> ModelIo {
        // The ONNX file's own output shapes (`[C, 1, 1]` after a global pooling), else the graph's.
        let graphs = std::iter::once(&self.graph).chain(&self.output_graphs);
        let shapes = graphs
            .enumerate()
            .map(|(k, g)| self.signature.output_shapes.get(k).cloned().unwrap_or_else(|| g.output_shape().to_vec()));
        ModelIo {
            input: self.signature.input.clone(),
            sample_shape: self.graph.input_shape().to_vec(),
            outputs: self.signature.outputs.iter().cloned().zip(shapes).collect(),
            classes: self.classes(),
        }
    }

    /// The graph computing declared output `k`.
    pub fn output_graph(&self, k: usize) -> Option<&Graph> {
        if k == 0 { Some(&self.graph) } else { self.output_graphs.get(k - 1) }
    }

    /// Per-sample input shape.
    pub fn sample_shape(&self) -> &[usize] {
        self.graph.input_shape()
    }

    /// Number of classes (logits per sample).
    pub fn classes(&self) -> usize {
        self.graph.num_classes()
    }

    /// The task this model serves: its config's, else its card's dataset.
    pub fn task(&self) -> Option<&str> {
        self.config.task.as_deref().or(self.card.as_ref().map(|c| c.input.dataset.as_str()))
    }

    /// Class names from the card, when they match the number of classes.
    pub fn class_names(&self) -> Option<&[String]> {
        self.card.as_ref().map(|c| c.input.class_names.as_slice()).filter(|n| n.len() == self.classes())
    }

    /// The profile as a selection candidate (`None` without a known accuracy).
    pub fn candidate(&self) -> Option<Candidate> {
        self.profile.accuracy.map(|accuracy| Candidate { accuracy, latency_ms: self.profile.latency_ms })
    }

    /// The version as a string, as the protocol carries it.
    pub fn version_string(&self) -> String {
        self.version.to_string()
    }
}

/// Why a lookup failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// No such model.
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// No such version of a ready model.
    #[error("model '{model}' has no version '{version}' (loaded: {loaded})")]
    UnknownVersion {
        /// Model.
        model: String,
        /// Requested version.
        version: String,
        /// Loaded versions, comma-separated.
        loaded: String,
    },
    /// The model exists but is not loaded.
    #[error("model '{model}' is not ready: {reason}")]
    NotReady {
        /// Model.
        model: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum Slot {
    Ready(BTreeMap<u64, Arc<ModelVersion>>),
    Unavailable(String),
    Unloaded,
}

/// One row of the repository index (Triton's model-repository extension).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IndexEntry {
    /// Model name.
    pub name: String,
    /// Version, for ready models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    pub state: String,
    /// Why it is not ready (empty when ready).
    pub reason: String,
}

type DataCache = HashMap<(String, Option<PathBuf>, u64), Arc<Dataset>>;

/// The outcome of loading each model: its name and its version count, or why it failed.
pub type LoadReport = Vec<(String, Result<usize, ServeError>)>;

/// True for names usable as a model directory and URL segment: 1–128 characters of
/// `[A-Za-z0-9_.-]` starting with a letter or digit, and not `stats` (a route of its own).
pub fn valid_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 128
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name != "stats"
}

/// The model repository.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    options: LoadOptions,
    slots: RwLock<BTreeMap<String, Slot>>,
    /// Serialises load and unload (profiling takes a while; two loads of one model must not race).
    changes: Mutex<()>,
}

impl Repository {
    /// Opens the repository at `root` without loading anything.
    pub fn open(root: &Path, options: LoadOptions) -> Result<Self, ServeError> {
        if !root.is_dir() {
            return Err(ServeError::config(root, "model repository is not a directory"));
        }
        Ok(Self { root: root.to_path_buf(), options, slots: RwLock::new(BTreeMap::new()), changes: Mutex::new(()) })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the model directories on disk, sorted.
    pub fn names_on_disk(&self) -> Result<Vec<String>, ServeError> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| ServeError::io(&self.root, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ServeError::io(&self.root, e))?;
            if !entry.path().is_dir() {
                continue;
            }
            match entry.file_name().to_str() {
                Some(name) if valid_model_name(name) => names.push(name.to_string()),
                _ => tracing::warn!(path = %entry.path().display(), "skipping directory: not a valid model name"),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Loads (and profiles) every model on disk; one result per model. Blocking.
    pub fn load_all(&self) -> Result<LoadReport, ServeError> {
        let mut cache = DataCache::new();
        let names = self.names_on_disk()?;
        Ok(names
            .into_iter()
            .map(|name| {
                let result = self.load_with_cache(&name, &mut cache);
                (name, result)
            })
            .collect())
    }

    /// Loads or reloads one model (every version), replacing the served versions only on success;
    /// returns the number of versions. Blocking: profiling runs the model.
    pub fn load_model(&self, name: &str) -> Result<usize, ServeError> {
        self.load_with_cache(name, &mut DataCache::new())
    }

    fn load_with_cache(&self, name: &str, cache: &mut DataCache) -> Result<usize, ServeError> {
        if !valid_model_name(name) {
            return Err(ServeError::UnknownModel(name.to_string()));
        }
        let _guard = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(ServeError::UnknownModel(name.to_string()));
        }
        match self.load_versions(name, &dir, cache) {
            Ok(versions) => {
                let count = versions.len();
                for v in versions.values() {
                    tracing::info!(
                        model = name,
                        version = v.version,
                        accuracy = ?v.profile.accuracy,
                        latency_ms = v.profile.latency_ms,
                        "model ready"
                    );
                }
                self.write().insert(name.to_string(), Slot::Ready(versions));
                Ok(count)
            }
            Err(e) => {
                tracing::warn!(model = name, error = %e, "model failed to load");
                let mut slots = self.write();
                // A failed reload keeps serving the versions already loaded.
                if !matches!(slots.get(name), Some(Slot::Ready(_))) {
                    slots.insert(name.to_string(), Slot::Unavailable(e.to_string()));
                }
                Err(e)
            }
        }
    }

    fn load_versions(
        &self,
        name: &str,
        dir: &Path,
        cache: &mut DataCache,
    ) -> Result<BTreeMap<u64, Arc<ModelVersion>>, ServeError> {
        let config_path = dir.join(CONFIG_FILE);
        let config: ModelConfig = if config_path.exists() {
            let text = std::fs::read_to_string(&config_path).map_err(|e| ServeError::io(&config_path, e))?;
            serde_json::from_str(&text).map_err(|e| ServeError::config(&config_path, e.to_string()))?
        } else {
            ModelConfig::default()
        };
        validate_config(&config).map_err(|m| ServeError::config(&config_path, m))?;
        let entries = std::fs::read_dir(dir).map_err(|e| ServeError::io(dir, e))?;
        let mut numbers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ServeError::io(dir, e))?;
            let parsed = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()).filter(|v| *v > 0);
            if let Some(v) = parsed
                && entry.path().join(MODEL_FILE).is_file()
            {
                numbers.push(v);
            }
        }
        if numbers.is_empty() {
            return Err(ServeError::Model {
                model: name.to_string(),
                message: format!("no version directory <n>/{MODEL_FILE} under {}", dir.display()),
            });
        }
        let mut versions = BTreeMap::new();
        for v in numbers {
            let loaded = self.load_version(name, v, dir, &config, cache)?;
            versions.insert(v, Arc::new(loaded));
        }
        Ok(versions)
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        dir: &Path,
        config: &ModelConfig,
        cache: &mut DataCache,
    ) -> Result<ModelVersion, ServeError> {
        let id = format!("{name}/{version}");
        let path = dir.join(version.to_string()).join(MODEL_FILE);
        let MultiOutput { signature, graphs } =
            moat_nn::onnx::load_onnx_outputs(&path).map_err(|source| ServeError::Nn { model: id.clone(), source })?;
        let mut graphs = graphs.into_iter();
        let graph =
            graphs.next().ok_or_else(|| ServeError::Model { model: id.clone(), message: "no output".into() })?;
        let output_graphs: Vec<Graph> = graphs.collect();
        let model_file = std::fs::read(&path)
            .map_err(|e| ServeError::Model { model: id.clone(), message: format!("reading the model file: {e}") })?;
        let mut commitment_nonce = [0u8; 16];
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut commitment_nonce).map_err(|e| {
            ServeError::Model { model: id.clone(), message: format!("no OS randomness for the commitment nonce: {e}") }
        })?;
        let commitment = commit_to_model(&commitment_nonce, &model_file);
        let card_path = ModelCard::path_for(&path);
        let card = if card_path.exists() {
            Some(ModelCard::load(&card_path).map_err(|source| ServeError::Nn { model: id.clone(), source })?)
        } else {
            None
        };
        if let Some(card) = &card
            && card.input.sample_shape != graph.input_shape()
        {
            return Err(ServeError::Model {
                model: id,
                message: format!(
                    "card says inputs of shape {:?}, the model takes {:?}",
                    card.input.sample_shape,
                    graph.input_shape()
                ),
            });
        }
        let mut held_out_set = None;
        if let Some(h) = &config.held_out {
            let data_dir = h.data_dir.as_ref().map(|d| dir.join(d)).or_else(|| self.options.data_dir.clone());
            let seed = h.seed.or(card.as_ref().map(|c| c.members.split_seed)).unwrap_or(0);
            let key = (h.dataset.clone(), data_dir.clone(), seed);
            let full = match cache.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let tt = moat_nn::data::load(&h.dataset, data_dir.as_deref(), seed)
                        .map_err(|source| ServeError::Nn { model: id.clone(), source })?;
                    let d = Arc::new(tt.test);
                    cache.insert(key, d.clone());
                    d
                }
            };
            held_out_set = Some(full.take(h.samples.unwrap_or(self.options.held_out_samples)));
        }
        // Latency: one held-out sample when there is one, else zeros.
        let zeros;
        let sample: &[f32] = match &held_out_set {
            Some(d) if !d.is_empty() => d.sample(0),
            _ => {
                zeros = vec![0.0f32; moat_nn::tensor::numel(graph.input_shape())];
                &zeros
            }
        };
        let warmup = config.latency.warmup.unwrap_or(self.options.warmup);
        let runs = config.latency.runs.unwrap_or(self.options.runs).max(1);
        let latency = measure_latency(&graph, sample, warmup, runs)?;
        let (accuracy, accuracy_source, accuracy_samples) = match (&config.declared.accuracy, &held_out_set, &card) {
            (Some(a), _, _) => (Some(*a), "declared", 0),
            (None, Some(d), _) => (Some(held_out_accuracy(&graph, d)?), "held-out", d.len()),
            (None, None, Some(c)) => (Some(c.test_accuracy * 100.0), "card", 0),
            (None, None, None) => (None, "unknown", 0),
        };
        let (latency_ms, latency_source) = match config.declared.latency_ms {
            Some(l) => (l, "declared"),
            None => (latency.p99_ms, "measured"),
        };
        let profile = Profile {
            accuracy,
            accuracy_source: accuracy_source.into(),
            accuracy_samples,
            latency_ms,
            latency_p50_ms: latency.p50_ms,
            latency_p99_ms: latency.p99_ms,
            latency_mean_ms: latency.mean_ms,
            latency_runs: latency.runs,
            latency_source: latency_source.into(),
        };
        Ok(ModelVersion {
            name: name.to_string(),
            version,
            graph,
            signature,
            output_graphs,
            card,
            config: config.clone(),
            profile,
            max_batch_size: config.max_batch_size.unwrap_or(self.options.max_batch_size),
            stats: VersionStats::default(),
            commitment,
            commitment_nonce,
        })
    }

    /// Stops serving a model. Unknown models are an error.
    pub fn unload_model(&self, name: &str) -> Result<(), ServeError> {
        let _guard = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let on_disk = valid_model_name(name) && self.root.join(name).is_dir();
        let mut slots = self.write();
        if !on_disk && !slots.contains_key(name) {
            return Err(ServeError::UnknownModel(name.to_string()));
        }
        slots.insert(name.to_string(), Slot::Unloaded);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// A ready model version: the given one, or the highest.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<ModelVersion>, LookupError> {
        let slots = self.read();
        let versions = match slots.get(name) {
            None => return Err(LookupError::UnknownModel(name.to_string())),
            Some(Slot::Unavailable(reason)) => {
                return Err(LookupError::NotReady { model: name.to_string(), reason: reason.clone() });
            }
            Some(Slot::Unloaded) => {
                return Err(LookupError::NotReady { model: name.to_string(), reason: "unloaded".into() });
            }
            Some(Slot::Ready(v)) => v,
        };
        let found = match version {
            None => versions.values().next_back(),
            Some(s) => s.parse::<u64>().ok().and_then(|v| versions.get(&v)),
        };
        found.cloned().ok_or_else(|| LookupError::UnknownVersion {
            model: name.to_string(),
            version: version.unwrap_or_default().to_string(),
            loaded: versions.keys().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    /// Loaded version numbers of a ready model.
    pub fn versions(&self, name: &str) -> Result<Vec<u64>, LookupError> {
        let slots = self.read();
        match slots.get(name) {
            Some(Slot::Ready(v)) => Ok(v.keys().copied().collect()),
            Some(_) => Err(LookupError::NotReady { model: name.to_string(), reason: "not loaded".into() }),
            None => Err(LookupError::UnknownModel(name.to_string())),
        }
    }

    /// True when a model of this name is known (loaded, failed or unloaded).
    pub fn knows(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The default (highest) version of every ready model, by name.
    pub fn ready_defaults(&self) -> Vec<Arc<ModelVersion>> {
        self.read()
            .values()
            .filter_map(|s| match s {
                Slot::Ready(v) => v.values().next_back().cloned(),
                _ => None,
            })
            .collect()
    }

    /// Every ready version.
    pub fn ready_versions(&self) -> Vec<Arc<ModelVersion>> {
        self.read()
            .values()
            .flat_map(|s| match s {
                Slot::Ready(v) => v.values().cloned().collect::<Vec<_>>(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The index: every model on disk or known, with its state.
    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexEntry>, ServeError> {
        let mut names = self.names_on_disk()?;
        let slots = self.read();
        names.extend(slots.keys().cloned());
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            let unavailable = |reason: &str| IndexEntry {
                name: name.clone(),
                version: None,
                state: "UNAVAILABLE".into(),
                reason: reason.to_string(),
            };
            match slots.get(&name) {
                Some(Slot::Ready(versions)) => out.extend(versions.keys().map(|v| IndexEntry {
                    name: name.clone(),
                    version: Some(v.to_string()),
                    state: "READY".into(),
                    reason: String::new(),
                })),
                Some(Slot::Unavailable(reason)) if !ready_only => out.push(unavailable(reason)),
                Some(Slot::Unloaded) if !ready_only => out.push(unavailable("unloaded")),
                None if !ready_only => out.push(unavailable("not loaded")),
                _ => {}
            }
        }
        Ok(out)
    }
}

fn validate_config(config: &ModelConfig) -> Result<(), String> {
    if let Some(a) = config.declared.accuracy
        && !(a.is_finite() && (0.0..=100.0).contains(&a))
    {
        return Err(format!("declared.accuracy {a} is not a percentage in [0, 100]"));
    }
    if let Some(l) = config.declared.latency_ms
        && !(l.is_finite() && l > 0.0)
    {
        return Err(format!("declared.latency_ms {l} must be positive"));
    }
    if config.max_batch_size == Some(0) {
        return Err("max_batch_size must be at least 1".into());
    }
    if let Some(task) = &config.task
        && !valid_model_name(task)
    {
        return Err(format!("task name '{task}' must be 1-128 characters of [A-Za-z0-9_.-]"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use moat_nn::zoo;

    use super::*;

    /// Writes `<root>/<name>/<version>/model.onnx` for an untrained MLP and the given config.
    pub(crate) fn write_model(
        root: &Path,
        name: &str,
        version: u64,
        arch: &str,
        config: &serde_json::Value,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join(version.to_string()))?;
        let graph = zoo::build(&arch.parse()?, &[1, 8, 8], 10, version)?;
        moat_nn::onnx::save_onnx(&graph, &dir.join(version.to_string()).join(MODEL_FILE))?;
        std::fs::write(dir.join(CONFIG_FILE), serde_json::to_string(config)?)?;
        Ok(())
    }

    fn fast() -> LoadOptions {
        LoadOptions { warmup: 1, runs: 5, ..LoadOptions::default() }
    }

    #[test]
    fn loads_versions_profiles_and_unloads() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let cfg = serde_json::json!({"task": "digits", "declared": {"accuracy": 91.5},
                                     "held_out": {"dataset": "digits", "samples": 50}});
        write_model(root.path(), "small", 1, "mlp:8", &cfg)?;
        write_model(root.path(), "small", 3, "mlp:8", &cfg)?;
        write_model(
            root.path(),
            "held",
            1,
            "mlp:8",
            &serde_json::json!({"held_out": {"dataset": "digits", "samples": 40}}),
        )?;
        std::fs::create_dir_all(root.path().join("broken/1"))?;
        std::fs::write(root.path().join("broken/1/model.onnx"), b"not onnx")?;
        std::fs::create_dir_all(root.path().join("empty"))?;
        let repo = Repository::open(root.path(), fast())?;
        let results = repo.load_all()?;
        let ok: Vec<&str> = results.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| n.as_str()).collect();
        assert_eq!(ok, vec!["held", "small"]);

        let small = repo.get("small", None).map_err(|e| e.to_string())?;
        assert_eq!(small.version, 3);
        assert_eq!(small.profile.accuracy, Some(91.5));
        assert_eq!(small.profile.accuracy_source, "declared");
        assert_eq!(small.profile.latency_source, "measured");
        assert_eq!(small.profile.latency_runs, 5);
        assert_eq!(small.task(), Some("digits"));
        assert_eq!(repo.get("small", Some("1")).map_err(|e| e.to_string())?.version, 1);
        assert!(matches!(repo.get("small", Some("2")), Err(LookupError::UnknownVersion { .. })));
        assert!(matches!(repo.get("small", Some("x")), Err(LookupError::UnknownVersion { .. })));
        let held = repo.get("held", None).map_err(|e| e.to_string())?;
        assert_eq!((held.profile.accuracy_source.as_str(), held.profile.accuracy_samples), ("held-out", 40));
        // An untrained 10-class model is near chance on digits.
        assert!(held.profile.accuracy.is_some_and(|a| a < 50.0), "{:?}", held.profile);

        assert!(matches!(repo.get("broken", None), Err(LookupError::NotReady { .. })));
        assert!(matches!(repo.get("nope", None), Err(LookupError::UnknownModel(_))));
        let index = repo.index(false)?;
        let states: Vec<(String, Option<String>, String)> =
            index.iter().map(|e| (e.name.clone(), e.version.clone(), e.state.clone())).collect();
        assert_eq!(
            states,
            vec![
                ("broken".into(), None, "UNAVAILABLE".into()),
                ("empty".into(), None, "UNAVAILABLE".into()),
                ("held".into(), Some("1".into()), "READY".into()),
                ("small".into(), Some("1".into()), "READY".into()),
                ("small".into(), Some("3".into()), "READY".into()),
            ]
        );
        assert!(index[0].reason.contains("broken"), "{:?}", index[0]);
        assert_eq!(repo.index(true)?.len(), 3);

        repo.unload_model("small")?;
        assert!(matches!(repo.get("small", None), Err(LookupError::NotReady { .. })));
        assert!(repo.unload_model("ghost").is_err());
        assert!(repo.load_model("../etc").is_err());
        assert_eq!(repo.load_model("small")?, 2);
        assert_eq!(repo.ready_defaults().len(), 2);
        assert_eq!(repo.ready_versions().len(), 3);
        Ok(())
    }

    #[test]
    fn rejects_bad_configs() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        for (name, cfg) in [
            ("typo", serde_json::json!({"taks": "digits"})),
            ("acc", serde_json::json!({"declared": {"accuracy": 120.0}})),
            ("batch", serde_json::json!({"max_batch_size": 0})),
            ("data", serde_json::json!({"held_out": {"dataset": "no-such-set"}})),
        ] {
            write_model(root.path(), name, 1, "mlp:4", &cfg)?;
        }
        let repo = Repository::open(root.path(), fast())?;
        for (name, result) in repo.load_all()? {
            assert!(result.is_err(), "{name} should fail");
        }
        assert!(Repository::open(&root.path().join("missing"), fast()).is_err());
        Ok(())
    }

    #[test]
    fn model_names_are_safe_path_segments() {
        for ok in ["mlp", "mlp-16", "a.b_c", "7"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", "stats", "-x", &"x".repeat(129)] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
