//! Models prepared for the two-party protocol, built once per loaded model version.
//!
//! Preparing a model ([`ServerModel::new`]: fixed-point quantisation, then every linear layer's
//! weights encoded for homomorphic evaluation) takes seconds and up to gigabytes, so it happens
//! lazily — started in the background when a session is admitted, waited for when it connects —
//! once per model version, and the result is shared by every session of that version. An entry
//! lives as long as its [`ModelVersion`] is loaded: unloading or reloading a model frees it
//! (checked on every lookup). A failed preparation is remembered, so later admissions are
//! refused at once with its reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use moat_mpc::engine::ServerModel;
use moat_nn::{FixedPoint, QuantizedGraph};

use crate::repository::ModelVersion;

type Prepared = Result<Arc<ServerModel>, String>;

struct Entry {
    version: Weak<ModelVersion>,
    cell: Arc<OnceLock<Prepared>>,
}

/// The prepared models, keyed by model version.
pub struct ModelCache {
    fixed: FixedPoint,
    he_degree: usize,
    entries: Mutex<HashMap<(String, u64), Entry>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of `model`'s preparation, creating it if needed; drops entries of model
    /// versions that are no longer loaded.
    fn cell(&self, model: &Arc<ModelVersion>) -> Arc<OnceLock<Prepared>> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.version.strong_count() > 0);
        let key = (model.name.clone(), model.version);
        match entries.get(&key) {
            Some(e) if std::ptr::eq(e.version.as_ptr(), Arc::as_ptr(model)) => e.cell.clone(),
            _ => {
                let cell = Arc::new(OnceLock::new());
                entries.insert(key, Entry { version: Arc::downgrade(model), cell: cell.clone() });
                cell
            }
        }
    }

    /// The prepared model, preparing it now if nobody has (blocking: call it off the async
    /// runtime). Concurrent callers for one version wait for a single preparation.
    pub fn get(&self, model: &Arc<ModelVersion>) -> Prepared {
        let cell = self.cell(model);
        cell.get_or_init(|| prepare(model, self.fixed, self.he_degree)).clone()
    }

    /// Why `model` could not be prepared, if an earlier attempt failed.
    pub fn failure(&self, model: &Arc<ModelVersion>) -> Option<String> {
        self.cell(model).get().and_then(|p| p.as_ref().err().cloned())
    }

    /// Starts preparing `model` on a background thread unless it is prepared or being prepared.
    pub fn warm(self: &Arc<Self>, model: &Arc<ModelVersion>) {
        let cell = self.cell(model);
        if cell.get().is_some() {
            return;
        }
        let (cache, model) = (Arc::clone(self), Arc::clone(model));
        let spawned = std::thread::Builder::new().name("moat-secure-prepare".into()).spawn(move || {
            // Several warm-ups of one version block on the same cell: one preparation runs.
            let _ = cache.get(&model);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start preparing a model in the background: the session will");
        }
    }
}

fn prepare(model: &ModelVersion, fixed: FixedPoint, he_degree: usize) -> Prepared {
    let id = format!("{}/{}", model.name, model.version);
    let started = Instant::now();
    let quantized =
        QuantizedGraph::new(&model.graph, fixed).map_err(|e| format!("model {id} cannot run in fixed point: {e}"))?;
    // Every session's hello carries the version's commitment (the one its plaintext answers
    // and its admissions carry).
    let prepared = ServerModel::new(Arc::new(quantized), he_degree)
        .map_err(|e| format!("model {id} cannot run under the two-party protocol: {e}"))?
        .with_commitment(model.commitment.clone());
    tracing::info!(
        model = %id,
        seconds = started.elapsed().as_secs_f64(),
        prepared_bytes = prepared.prepared_bytes(),
        "model prepared for secure sessions"
    );
    Ok(Arc::new(prepared))
}
