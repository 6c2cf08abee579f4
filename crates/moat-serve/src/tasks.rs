//! Tasks: the model-less endpoints (INFaaS-style). A request names a task and its spec; the
//! task's selection policy picks the model.
//!
//! A task's members are the ready models whose [`ModelVersion::task`] is the task's name, or the
//! models listed in its `tasks.json` entry. `<repo>/tasks.json` (optional) sets the policy per
//! task; tasks without an entry use the server's defaults (`--policy`, `--epsilon`,
//! `--disclose-model`):
//!
//! ```json
//! {
//!   "digits":        { "policy": "exponential", "epsilon": 1.0 },
//!   "digits-open":   { "policy": "fastest", "disclose_model": true, "models": ["mlp-16", "mlp-64"] },
//!   "digits-noisy":  { "policy": "noisy-spec", "epsilon": 0.5, "accuracy_sensitivity": 1.0,
//!                      "latency_sensitivity_ms": 0.1 }
//! }
//! ```
//!
//! `disclose_model` (default `false`) decides whether responses name the serving model: when off,
//! `model_name` is the task and no version is given, so a client cannot tell the zoo's models
//! apart by asking. Error messages never name the chosen model either.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::ServeError;
use crate::oip::ModelIo;
use crate::policy::{Candidate, NoiseSensitivity, Policy, PolicyKind};
use crate::repository::{ModelVersion, Repository, valid_model_name};

/// File name of the task table at the repository root.
pub const TASKS_FILE: &str = "tasks.json";

/// One entry of `tasks.json`; unset fields take the server defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Selection policy.
    #[serde(default)]
    pub policy: Option<PolicyKind>,
    /// Privacy parameter ε.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Whether responses name the serving model.
    #[serde(default)]
    pub disclose_model: Option<bool>,
    /// Explicit member models (default: the models declaring this task).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Noisy-spec sensitivity of the accuracy, percentage points.
    #[serde(default)]
    pub accuracy_sensitivity: Option<f64>,
    /// Noisy-spec sensitivity of the latency, milliseconds.
    #[serde(default)]
    pub latency_sensitivity_ms: Option<f64>,
}

/// Server-wide task defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskDefaults {
    /// Policy.
    pub policy: PolicyKind,
    /// ε.
    pub epsilon: f64,
    /// Disclosure.
    pub disclose_model: bool,
    /// Noisy-spec sensitivities.
    pub sensitivity: NoiseSensitivity,
}

impl Default for TaskDefaults {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Fastest,
            epsilon: 1.0,
            disclose_model: false,
            sensitivity: NoiseSensitivity::default(),
        }
    }
}

/// A task's settings after defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSettings {
    /// The validated policy.
    pub policy: Policy,
    /// Whether responses name the serving model.
    pub disclose_model: bool,
    /// Explicit members, if any.
    pub models: Option<Vec<String>>,
}

/// A task resolved against the repository's ready models.
#[derive(Clone, Debug)]
pub struct ResolvedTask {
    /// Task name.
    pub name: String,
    /// Settings.
    pub settings: TaskSettings,
    /// Ready members with a known accuracy, in name order.
    pub members: Vec<Arc<ModelVersion>>,
}

impl ResolvedTask {
    /// The members' profiles, in member order.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.members.iter().filter_map(|m| m.candidate()).collect()
    }

    /// The tensors every member serves (names, shapes and classes), or why they differ.
    pub fn signature(&self) -> Result<ModelIo, String> {
        let first = self.members.first().ok_or_else(|| format!("no model of task '{}' is ready", self.name))?;
        let io = first.io();
        if let Some(other) = self.members.iter().find(|m| m.io() != io) {
            return Err(format!(
                "the models of task '{}' disagree on their tensors: '{}' serves {io:?}, '{}' serves {:?}",
                self.name,
                first.name,
                other.name,
                other.io()
            ));
        }
        Ok(io)
    }
}

/// The task table: `tasks.json` plus defaults.
#[derive(Clone, Debug)]
pub struct TaskTable {
    configured: BTreeMap<String, TaskSettings>,
    defaults: TaskSettings,
}

impl TaskTable {
    /// Builds the table from parsed entries and the defaults, validating every policy.
    pub fn new(entries: BTreeMap<String, TaskConfig>, defaults: TaskDefaults) -> Result<Self, String> {
        let settings = |c: &TaskConfig| -> Result<TaskSettings, String> {
            let sensitivity = NoiseSensitivity {
                accuracy: c.accuracy_sensitivity.unwrap_or(defaults.sensitivity.accuracy),
                latency_ms: c.latency_sensitivity_ms.unwrap_or(defaults.sensitivity.latency_ms),
            };
            let policy =
                Policy::new(c.policy.unwrap_or(defaults.policy), c.epsilon.unwrap_or(defaults.epsilon), sensitivity)
                    .map_err(|e| e.to_string())?;
            Ok(TaskSettings {
                policy,
                disclose_model: c.disclose_model.unwrap_or(defaults.disclose_model),
                models: c.models.clone(),
            })
        };
        let mut configured = BTreeMap::new();
        for (name, config) in &entries {
            if !valid_model_name(name) {
                return Err(format!("task name '{name}' must be 1-128 characters of [A-Za-z0-9_.-]"));
            }
            configured.insert(name.clone(), settings(config).map_err(|e| format!("task '{name}': {e}"))?);
        }
        Ok(Self { configured, defaults: settings(&TaskConfig::default())? })
    }

    /// Reads `<repo>/tasks.json` when present.
    pub fn load(repo_root: &Path, defaults: TaskDefaults) -> Result<Self, ServeError> {
        let path = repo_root.join(TASKS_FILE);
        let entries = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| ServeError::io(&path, e))?;
            serde_json::from_str(&text).map_err(|e| ServeError::config(&path, e.to_string()))?
        } else {
            BTreeMap::new()
        };
        Self::new(entries, defaults).map_err(|e| ServeError::config(&path, e))
    }

    /// Every task name: configured ones and those declared by ready models, sorted.
    pub fn names(&self, repo: &Repository) -> Vec<String> {
        let mut names: BTreeSet<String> = self.configured.keys().cloned().collect();
        names.extend(repo.ready_defaults().iter().filter_map(|m| m.task().map(str::to_string)));
        names.into_iter().collect()
    }

    /// The task `name` with its ready members, or `None` when no such task exists.
    pub fn resolve(&self, name: &str, repo: &Repository) -> Option<ResolvedTask> {
        let ready = repo.ready_defaults();
        let configured = self.configured.get(name);
        let members: Vec<Arc<ModelVersion>> = match configured.and_then(|s| s.models.as_ref()) {
            Some(list) => ready.into_iter().filter(|m| list.contains(&m.name)).collect(),
            None => ready.into_iter().filter(|m| m.task() == Some(name)).collect(),
        };
        if configured.is_none() && members.is_empty() {
            return None;
        }
        let members = members.into_iter().filter(|m| m.candidate().is_some()).collect();
        let settings = configured.cloned().unwrap_or_else(|| self.defaults.clone());
        Some(ResolvedTask { name: name.to_string(), settings, members })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::LoadOptions;
    use crate::repository::tests::write_model;

    #[test]
    fn resolves_members_by_declared_task_or_explicit_list() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let declared =
            |a: f64, l: f64| serde_json::json!({"task": "digits", "declared": {"accuracy": a, "latency_ms": l}});
        write_model(root.path(), "a", 1, "mlp:4", &declared(90.0, 1.0))?;
        write_model(root.path(), "b", 1, "mlp:8", &declared(95.0, 2.0))?;
        write_model(root.path(), "c", 1, "mlp:4", &serde_json::json!({"task": "other"}))?;
        let entries: BTreeMap<String, TaskConfig> = serde_json::from_value(serde_json::json!({
            "pick": {"policy": "permute-and-flip", "epsilon": 2.0, "disclose_model": true, "models": ["b", "zzz"]},
        }))?;
        let repo = Repository::open(root.path(), LoadOptions { warmup: 0, runs: 2, ..Default::default() })?;
        repo.load_all()?;
        let table = TaskTable::new(entries, TaskDefaults::default())?;
        assert_eq!(table.names(&repo), vec!["digits", "other", "pick"]);

        let digits = table.resolve("digits", &repo).ok_or("digits")?;
        assert_eq!(digits.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(digits.settings.policy, Policy::Fastest);
        assert!(!digits.settings.disclose_model);
        assert_eq!(digits.candidates()[1], Candidate { accuracy: 95.0, latency_ms: 2.0 });
        let io = digits.signature()?;
        assert_eq!((io.sample_shape, io.classes, io.input.as_str()), (vec![1, 8, 8], 10, "input"));

        let pick = table.resolve("pick", &repo).ok_or("pick")?;
        assert_eq!(pick.members.len(), 1);
        assert_eq!(pick.settings.policy, Policy::PermuteAndFlip { epsilon: 2.0 });
        assert!(pick.settings.disclose_model);
        // "other" has a member but no accuracy (no card, nothing declared): not a candidate.
        let other = table.resolve("other", &repo).ok_or("other")?;
        assert!(other.members.is_empty() && other.signature().is_err());
        assert!(table.resolve("nothing", &repo).is_none());
        Ok(())
    }

    #[test]
    fn rejects_invalid_task_entries() {
        let table = |json: serde_json::Value| -> Result<TaskTable, String> {
            let entries: BTreeMap<String, TaskConfig> = serde_json::from_value(json).map_err(|e| e.to_string())?;
            TaskTable::new(entries, TaskDefaults::default())
        };
        assert!(table(serde_json::json!({"t": {"policy": "exponential", "epsilon": -1}})).is_err());
        assert!(table(serde_json::json!({"t": {"policy": "noisy-spec", "epsilon": 0}})).is_err());
        assert!(table(serde_json::json!({"t": {"policy": "best"}})).is_err());
        assert!(table(serde_json::json!({"t": {"epsilonn": 1}})).is_err());
        assert!(table(serde_json::json!({"a/b": {}})).is_err());
        assert!(table(serde_json::json!({"t": {"policy": "uniform"}})).is_ok());
    }
}
