//! Models prepared for the two-party protocol, built once per loaded model version.
//!
//! Preparing a model ([`ServerModel::new`]: fixed-point quantisation, then every linear layer's
//! weights encoded for homomorphic evaluation) takes seconds and up to gigabytes, so it happens
//! lazily — started in the background when a session is admitted, waited for when it connects —
//! once per model version, and the result is shared by every session of that version. An entry
//! lives as long as its [`ModelVersion`] is loaded: unloading or reloading a model frees it
//! (checked on every lookup). A failed preparation is remembered, so later admissions are
//! refused at once with its reason.
//!
//! A session on a task that does not disclose its model is served by the member **padded to
//! the task's common architecture** ([`moat_nn::pad`]): the session hello carries the
//! architecture, so serving each member as it is would name it before the first query. The
//! padded member computes the same outputs (bit for bit in fixed point) at the cost of the
//! largest member; members of one architecture are only renamed; members that cannot share
//! one architecture are refused for such sessions, with the reason, instead of being served
//! revealingly. [`Preparation`] says which of the two
//! a session needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use moat_mpc::engine::ServerModel;
use moat_nn::{FixedPoint, Graph, QuantizedGraph};

use crate::repository::ModelVersion;
use crate::tasks::ResolvedTask;

type Prepared = Result<Arc<ServerModel>, String>;

/// What a secure session runs: a model as it is, or a member of a task that hides its model,
/// padded to the architecture all the task's members share.
#[derive(Clone, Debug)]
pub enum Preparation {
    /// The model version as loaded (its own architecture is shown to the client).
    Model(Arc<ModelVersion>),
    /// `member` padded to the common architecture of `members` (which include it), named
    /// after `task`.
    Hidden {
        /// The task's name: the padded graph's name, the only name the hello shows.
        task: String,
        /// The task's members when the session was admitted, in task order.
        members: Vec<Arc<ModelVersion>>,
        /// The member that serves the session.
        member: Arc<ModelVersion>,
    },
}

impl Preparation {
    /// What a session of `model` needs, chosen by `task` when the request named one: a task
    /// that does not disclose its model hides the member's architecture.
    pub fn of(task: Option<&ResolvedTask>, model: &Arc<ModelVersion>) -> Self {
        match task {
            Some(t) if !t.settings.disclose_model => {
                Preparation::Hidden { task: t.name.clone(), members: t.members.clone(), member: Arc::clone(model) }
            }
            _ => Preparation::Model(Arc::clone(model)),
        }
    }

    /// The model version that serves the session.
    pub fn model(&self) -> &Arc<ModelVersion> {
        match self {
            Preparation::Model(m) | Preparation::Hidden { member: m, .. } => m,
        }
    }

    /// Every version the preparation is built from (its entry dies with any of them).
    fn sources(&self) -> Vec<&Arc<ModelVersion>> {
        match self {
            Preparation::Model(m) => vec![m],
            Preparation::Hidden { members, member, .. } => std::iter::once(member).chain(members).collect(),
        }
    }

    /// The cache key: the model version, or the task, the member and every member's version.
    fn key(&self) -> String {
        let id = |m: &ModelVersion| format!("{}/{}", m.name, m.version);
        match self {
            Preparation::Model(m) => format!("model:{}", id(m)),
            Preparation::Hidden { task, members, member } => {
                let all: Vec<String> = members.iter().map(|m| id(m)).collect();
                format!("task:{task}:{}:[{}]", id(member), all.join(","))
            }
        }
    }

    /// Why this preparation cannot succeed, found without preparing anything: the members of a
    /// hiding task that share no architecture, or a member no longer in its task.
    pub fn check(&self) -> Result<(), String> {
        let Preparation::Hidden { task, members, member } = self else { return Ok(()) };
        if !members.iter().any(|m| Arc::ptr_eq(m, member)) {
            return Err(format!("model {}/{} is no longer a member of task '{task}'", member.name, member.version));
        }
        let graphs: Vec<&Graph> = members.iter().map(|m| &m.graph).collect();
        moat_nn::pad::check_common(&graphs).map_err(|e| {
            format!(
                "task '{task}' does not disclose its model, and its members cannot be padded to one architecture, \
                 which a secure session would show the client: {e}"
            )
        })
    }

    /// The graph the session runs.
    fn graph(&self) -> Result<Graph, String> {
        match self {
            Preparation::Model(m) => Ok(m.graph.clone()),
            Preparation::Hidden { task, members, member } => {
                self.check()?;
                let graphs: Vec<&Graph> = members.iter().map(|m| &m.graph).collect();
                let index = members.iter().position(|m| Arc::ptr_eq(m, member)).unwrap_or(0);
                let mut padded = moat_nn::pad::pad_to_common(&graphs, task)
                    .map_err(|e| format!("task '{task}': cannot pad its members: {e}"))?;
                if index < padded.len() {
                    Ok(padded.swap_remove(index))
                } else {
                    Err(format!("task '{task}': the member was not padded"))
                }
            }
        }
    }
}

struct Entry {
    sources: Vec<Weak<ModelVersion>>,
    cell: Arc<OnceLock<Prepared>>,
}

impl Entry {
    fn alive(&self) -> bool {
        self.sources.iter().all(|s| s.strong_count() > 0)
    }

    fn built_from(&self, preparation: &Preparation) -> bool {
        let sources = preparation.sources();
        sources.len() == self.sources.len()
            && sources.iter().zip(&self.sources).all(|(m, w)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(m)))
    }
}

/// The prepared models, keyed by [`Preparation`].
pub struct ModelCache {
    fixed: FixedPoint,
    he_degree: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelCache")
            .field("fixed", &self.fixed)
            .field("he_degree", &self.he_degree)
            .field("entries", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl ModelCache {
    /// An empty cache preparing models at `fixed` with BFV ring degree `he_degree`.
    pub fn new(fixed: FixedPoint, he_degree: usize) -> Self {
        Self { fixed, he_degree, entries: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of a preparation, creating it if needed; drops entries built from model
    /// versions that are no longer loaded.
    fn cell(&self, preparation: &Preparation) -> Arc<OnceLock<Prepared>> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.alive());
        let key = preparation.key();
        match entries.get(&key) {
            Some(e) if e.built_from(preparation) => e.cell.clone(),
            _ => {
                let cell = Arc::new(OnceLock::new());
                let sources = preparation.sources().into_iter().map(Arc::downgrade).collect();
                entries.insert(key, Entry { sources, cell: cell.clone() });
                cell
            }
        }
    }

    /// The prepared model, preparing it now if nobody has (blocking: call it off the async
    /// runtime). Concurrent callers for one preparation wait for a single one.
    pub fn get(&self, preparation: &Preparation) -> Prepared {
        let cell = self.cell(preparation);
        cell.get_or_init(|| prepare(preparation, self.fixed, self.he_degree)).clone()
    }

    /// Why the preparation cannot succeed: the cheap [`Preparation::check`], or the reason an
    /// earlier attempt failed.
    pub fn failure(&self, preparation: &Preparation) -> Option<String> {
        if let Err(reason) = preparation.check() {
            return Some(reason);
        }
        self.cell(preparation).get().and_then(|p| p.as_ref().err().cloned())
    }

    /// Starts a preparation on a background thread unless it is done or under way.
    pub fn warm(self: &Arc<Self>, preparation: &Preparation) {
        let cell = self.cell(preparation);
        if cell.get().is_some() {
            return;
        }
        let (cache, model) = (Arc::clone(self), preparation.clone());
        let spawned = std::thread::Builder::new().name("moat-secure-prepare".into()).spawn(move || {
            // Several warm-ups of one version block on the same cell: one preparation runs.
            let _ = cache.get(&model);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start preparing a model in the background: the session will");
        }
    }
}

fn prepare(preparation: &Preparation, fixed: FixedPoint, he_degree: usize) -> Prepared {
    let model = preparation.model();
    let id = match preparation {
        Preparation::Model(_) => format!("{}/{}", model.name, model.version),
        Preparation::Hidden { task, .. } => format!("{}/{} (padded for task '{task}')", model.name, model.version),
    };
    let started = Instant::now();
    let graph = preparation.graph()?;
    let quantized =
        QuantizedGraph::new(&graph, fixed).map_err(|e| format!("model {id} cannot run in fixed point: {e}"))?;
    let prepared = ServerModel::new(Arc::new(quantized), he_degree)
        .map_err(|e| format!("model {id} cannot run under the two-party protocol: {e}"))?;
    // A model's sessions carry its version's commitment in their hello (the one its plaintext
    // answers and admissions carry). A hidden member's carry none: a commitment is the same
    // for every session of a version, so it would tell the sessions of one member apart from
    // another's, which the padding is there to prevent — and its admissions carry none either.
    let prepared = match preparation {
        Preparation::Model(_) => prepared.with_commitment(model.commitment.clone()),
        Preparation::Hidden { .. } => prepared,
    };
    tracing::info!(
        model = %id,
        seconds = started.elapsed().as_secs_f64(),
        prepared_bytes = prepared.prepared_bytes(),
        "model prepared for secure sessions"
    );
    Ok(Arc::new(prepared))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::repository::tests::write_model;
    use crate::repository::{LoadOptions, Repository};
    use crate::tasks::{TaskConfig, TaskDefaults, TaskTable};

    #[test]
    fn a_hiding_task_serves_its_members_under_one_architecture_or_refuses() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let declared = serde_json::json!({"task": "digits", "declared": {"accuracy": 90.0, "latency_ms": 1.0}});
        write_model(root.path(), "small", 1, "mlp:4", &declared)?;
        write_model(root.path(), "deep", 1, "mlp:8,8", &declared)?;
        write_model(
            root.path(),
            "conv",
            1,
            "resnet20:x0.25",
            &serde_json::json!({"declared": {"accuracy": 90.0, "latency_ms": 1.0}}),
        )?;
        let entries: BTreeMap<String, TaskConfig> = serde_json::from_value(serde_json::json!({
            "mixed": {"models": ["small", "conv"]},
            "mixed-open": {"disclose_model": true, "models": ["small", "conv"]},
        }))?;
        let repo = Repository::open(root.path(), LoadOptions { warmup: 0, runs: 2, ..Default::default() })?;
        repo.load_all()?;
        let table = TaskTable::new(entries, TaskDefaults::default())?;

        let digits = table.resolve("digits", &repo).ok_or("digits")?;
        let graphs: Vec<Graph> =
            digits.members.iter().map(|m| Preparation::of(Some(&digits), m).graph()).collect::<Result<_, String>>()?;
        assert_eq!(graphs.len(), 2);
        assert_eq!(graphs[0].skeleton(), graphs[1].skeleton(), "one architecture for the hello");
        assert_eq!(graphs[0].name(), "digits");

        let mixed = table.resolve("mixed", &repo).ok_or("mixed")?;
        let preparation = Preparation::of(Some(&mixed), &mixed.members[0]);
        let reason = preparation.check().err().unwrap_or_default();
        assert!(reason.contains("does not disclose its model") && reason.contains("cannot be padded"), "{reason}");
        let cache = ModelCache::new(FixedPoint::default(), 4096);
        assert_eq!(cache.failure(&preparation), Some(reason), "refused before anything is prepared");

        // Disclosing the model: each member as it is.
        let open = table.resolve("mixed-open", &repo).ok_or("mixed-open")?;
        let preparation = Preparation::of(Some(&open), &open.members[0]);
        assert!(matches!(preparation, Preparation::Model(_)) && preparation.check().is_ok());
        Ok(())
    }
}
