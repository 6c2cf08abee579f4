//! API keys with per-key query budgets and rate limits: the service's first line of defense
//! against model extraction, which needs many queries.
//!
//! The key file (`--api-keys FILE`) maps each key to its limits:
//!
//! ```json
//! {
//!   "k-3f9a…": { "name": "alice", "budget": 10000, "rate_per_s": 20, "burst": 40 },
//!   "k-admin…": { "name": "ops", "admin": true }
//! }
//! ```
//!
//! * `budget` — total **samples** the key may have inferred over the server's lifetime (a batch
//!   of N samples costs N). Unset: unlimited. Exhausted: `429`, permanently (no `Retry-After`:
//!   waiting does not help).
//! * `rate_per_s`, `burst` — a token bucket over **requests** (a request costs one token
//!   whatever its batch size): refills at `rate_per_s`, holds at most `burst` (default:
//!   `max(1, rate_per_s)`). Empty: `429` with `Retry-After`. Unset: unlimited.
//! * `admin` — may use the repository (load/unload), statistics and `/metrics` endpoints.
//! * `name` — how the key appears in the audit log and in logs (default: its first 4
//!   characters and `…`); the key itself is never logged.
//!
//! Clients send the key as `Authorization: Bearer KEY` or `X-API-Key: KEY`. Without a key file
//! the server is open: every request is anonymous and unlimited.
//!
//! Budgets and buckets live in a [`CounterStore`]: by default the replica's memory (N replicas
//! behind a load balancer then give a key up to N times its budget, and a restart resets them),
//! or a Redis every replica shares (`--store redis://…`, see [`crate::store`]). When the shared
//! store cannot be reached, requests are refused (`503`, [`KeyRefusal::StoreUnavailable`]) and
//! nothing is charged.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{AppError, ServeError};
use crate::store::{self, CounterStore, KeyId};

/// One key's settings, as written in the key file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Name for the audit log.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime budget in samples.
    #[serde(default)]
    pub budget: Option<u64>,
    /// Sustained requests per second.
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// Bucket size in requests.
    #[serde(default)]
    pub burst: Option<f64>,
    /// Operator key.
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug)]
struct KeyState {
    settings: KeySettings,
    name: String,
    id: KeyId,
    /// `(rate, burst)` of the key's bucket, if it has one.
    bucket: Option<(f64, f64)>,
}

/// Who is calling: a configured key, or anyone when no keys are configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (`anonymous` in open mode).
    pub name: String,
    /// Whether the caller may use operator endpoints.
    pub admin: bool,
    /// The key, to charge budgets against (`None` in open mode).
    key: Option<String>,
}

impl Caller {
    /// The caller of an open server.
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), admin: true, key: None }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRefusal {
    /// No key was sent.
    #[error("missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")]
    MissingKey,
    /// The key is not configured.
    #[error("unknown API key")]
    UnknownKey,
    /// The key is not an admin key.
    #[error("this endpoint needs an admin API key")]
    NotAdmin,
    /// The token bucket is empty.
    #[error("rate limit exceeded for key '{name}': {rate_per_s} requests/s, burst {burst}")]
    RateLimited {
        /// Key name.
        name: String,
        /// Configured rate.
        rate_per_s: f64,
        /// Configured burst.
        burst: f64,
        /// When a token will be available.
        retry_after: Duration,
    },
    /// The sample budget would be exceeded.
    #[error("query budget exhausted for key '{name}': {used} of {budget} samples used, this request needs {requested}")]
    BudgetExhausted {
        /// Key name.
        name: String,
        /// Samples used so far.
        used: u64,
        /// The budget.
        budget: u64,
        /// Samples this request asked for.
        requested: u64,
    },
    /// The shared counter store cannot be reached: nothing was charged.
    #[error("{0}; nothing was charged, retry shortly")]
    StoreUnavailable(String),
}

impl From<KeyRefusal> for AppError {
    fn from(r: KeyRefusal) -> Self {
        match &r {
            KeyRefusal::MissingKey | KeyRefusal::UnknownKey => AppError::Unauthorized(r.to_string()),
            KeyRefusal::NotAdmin => AppError::Forbidden(r.to_string()),
            KeyRefusal::RateLimited { retry_after, .. } => {
                AppError::TooManyRequests { message: r.to_string(), retry_after: Some(*retry_after) }
            }
            KeyRefusal::BudgetExhausted { .. } => {
                AppError::TooManyRequests { message: r.to_string(), retry_after: None }
            }
            KeyRefusal::StoreUnavailable(_) => {
                AppError::Unavailable { message: r.to_string(), retry_after: Some(Duration::from_secs(1)) }
            }
        }
    }
}

/// The configured keys and their running budgets and buckets.
#[derive(Debug)]
pub struct KeyStore {
    keys: HashMap<String, KeyState>,
    counters: Box<dyn CounterStore>,
}

/// A key's usage, for statistics.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KeyUsage {
    /// Key name.
    pub name: String,
    /// Samples used.
    pub used: u64,
    /// Budget, if any.
    pub budget: Option<u64>,
}

fn unavailable(e: &store::StoreError) -> KeyRefusal {
    tracing::warn!(error = %e, "counter store unavailable");
    KeyRefusal::StoreUnavailable(e.to_string())
}

fn default_name(key: &str) -> String {
    let prefix: String = key.chars().take(4).collect();
    format!("{prefix}…")
}

impl KeyStore {
    /// Keys from settings.
    pub fn new(settings: HashMap<String, KeySettings>) -> Result<Self, String> {
        let mut keys = HashMap::with_capacity(settings.len());
        for (key, s) in settings {
            if key.trim().is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err("an API key is empty or contains whitespace".into());
            }
            let name = s.name.clone().unwrap_or_else(|| default_name(&key));
            let bucket = match s.rate_per_s {
                None => None,
                Some(rate) => {
                    let burst = s.burst.unwrap_or(rate.max(1.0));
                    if !rate.is_finite() || rate <= 0.0 || !burst.is_finite() || burst < 1.0 {
                        return Err(format!(
                            "key '{name}': rate_per_s must be > 0 and burst >= 1 (got {rate}, {burst})"
                        ));
                    }
                    Some((rate, burst))
                }
            };
            let id = KeyId::of(&key);
            keys.insert(key, KeyState { settings: s, name, id, bucket });
        }
        Ok(Self { keys, counters: Box::new(store::memory::MemoryStore::default()) })
    }

    /// Keeps the running counters in `counters` instead of this process's memory.
    pub fn with_counters(mut self, counters: Box<dyn CounterStore>) -> Self {
        self.counters = counters;
        self
    }

    /// Where the running counters are, for logs.
    pub fn counters(&self) -> String {
        self.counters.describe()
    }

    /// The shared one-use token records, when the counters are shared by replicas.
    pub fn shared_tokens(&self) -> Option<&dyn store::tokens::SharedTokens> {
        self.counters.shared_tokens()
    }

    /// The store's identifier of `caller`'s key (`None` in open mode).
    pub fn caller_id(&self, caller: &Caller) -> Option<KeyId> {
        caller.key.as_deref().and_then(|k| self.keys.get(k)).map(|s| s.id.clone())
    }

    /// The caller whose key has the store identifier `id` (hex).
    pub fn caller_by_id(&self, id: &str) -> Option<Caller> {
        self.keys.iter().find(|(_, s)| s.id.as_str() == id).map(|(key, s)| Caller {
            name: s.name.clone(),
            admin: s.settings.admin,
            key: Some(key.clone()),
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::io(path, source))?;
        let settings: HashMap<String, KeySettings> =
            serde_json::from_str(&text).map_err(|e| ServeError::config(path, e.to_string()))?;
        Self::new(settings).map_err(|e| ServeError::config(path, e))
    }

    fn state(&self, caller: &Caller) -> Result<Option<&KeyState>, KeyRefusal> {
        match &caller.key {
            None => Ok(None),
            Some(key) => self.keys.get(key).map(Some).ok_or(KeyRefusal::UnknownKey),
        }
    }

    /// The caller presenting `key`.
    pub fn authenticate(&self, key: Option<&str>) -> Result<Caller, KeyRefusal> {
        let key = key.ok_or(KeyRefusal::MissingKey)?;
        let state = self.keys.get(key).ok_or(KeyRefusal::UnknownKey)?;
        Ok(Caller { name: state.name.clone(), admin: state.settings.admin, key: Some(key.to_string()) })
    }

    /// Takes one token from the caller's bucket at `now` (a shared store uses its own clock).
    pub fn check_rate(&self, caller: &Caller, now: Instant) -> Result<(), KeyRefusal> {
        let Some(state) = self.state(caller)? else { return Ok(()) };
        let Some((rate, burst)) = state.bucket else { return Ok(()) };
        match self.counters.take_request(&state.id, rate, burst, now) {
            Ok(None) => Ok(()),
            Ok(Some(retry_after)) => {
                Err(KeyRefusal::RateLimited { name: state.name.clone(), rate_per_s: rate, burst, retry_after })
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Refuses a caller whose budget is spent (not even one sample left), so a request from it
    /// is turned away before its body is read or parsed. Charges nothing.
    pub fn check_budget_left(&self, caller: &Caller) -> Result<(), KeyRefusal> {
        let Some(state) = self.state(caller)? else { return Ok(()) };
        let Some(budget) = state.settings.budget else { return Ok(()) };
        let used = self.counters.used(&state.id).map_err(|e| unavailable(&e))?;
        if used >= budget {
            return Err(KeyRefusal::BudgetExhausted { name: state.name.clone(), used, budget, requested: 1 });
        }
        Ok(())
    }

    /// Charges `samples` against the caller's budget, all or nothing (one atomic operation of
    /// the store).
    pub fn charge(&self, caller: &Caller, samples: u64) -> Result<(), KeyRefusal> {
        let Some(state) = self.state(caller)? else { return Ok(()) };
        match self.counters.charge(&state.id, samples, state.settings.budget) {
            Ok(store::Charge::Charged(_)) => Ok(()),
            Ok(store::Charge::Refused(used)) => Err(KeyRefusal::BudgetExhausted {
                name: state.name.clone(),
                used,
                budget: state.settings.budget.unwrap_or(u64::MAX),
                requested: samples,
            }),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Gives back samples charged for a request the server failed to serve. A refund the
    /// store cannot take is logged (the key keeps the charge: never charged twice, at worst
    /// charged for a failure).
    pub fn refund(&self, caller: &Caller, samples: u64) {
        let Ok(Some(state)) = self.state(caller) else { return };
        if let Err(e) = self.counters.refund(&state.id, samples) {
            tracing::error!(key = %state.name, samples, error = %e, "refund lost");
        }
    }

    /// Usage of every key, sorted by name.
    pub fn usage(&self) -> Vec<KeyUsage> {
        let mut out: Vec<KeyUsage> = self
            .keys
            .values()
            .map(|s| {
                let used = self.counters.used(&s.id).unwrap_or_else(|e| {
                    tracing::warn!(key = %s.name, error = %e, "usage unknown");
                    0
                });
                KeyUsage { name: s.name.clone(), used, budget: s.settings.budget }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Result<KeyStore, String> {
        let mut m = HashMap::new();
        m.insert(
            "alice-key".to_string(),
            KeySettings {
                name: Some("alice".into()),
                budget: Some(10),
                rate_per_s: Some(2.0),
                burst: Some(3.0),
                admin: false,
            },
        );
        m.insert("ops-key-123".to_string(), KeySettings { admin: true, ..Default::default() });
        KeyStore::new(m)
    }

    #[test]
    fn authenticates_known_keys_only() -> Result<(), String> {
        let s = store()?;
        assert_eq!(s.authenticate(None), Err(KeyRefusal::MissingKey));
        assert_eq!(s.authenticate(Some("nope")), Err(KeyRefusal::UnknownKey));
        let alice = s.authenticate(Some("alice-key")).map_err(|e| e.to_string())?;
        assert_eq!((alice.name.as_str(), alice.admin), ("alice", false));
        let ops = s.authenticate(Some("ops-key-123")).map_err(|e| e.to_string())?;
        assert_eq!((ops.name.as_str(), ops.admin), ("ops-…", true));
        Ok(())
    }

    #[test]
    fn budget_counts_samples_all_or_nothing() -> Result<(), String> {
        let s = store()?;
        let alice = s.authenticate(Some("alice-key")).map_err(|e| e.to_string())?;
        s.charge(&alice, 8).map_err(|e| e.to_string())?;
        let refused = s.charge(&alice, 3);
        assert!(
            matches!(refused, Err(KeyRefusal::BudgetExhausted { used: 8, budget: 10, requested: 3, .. })),
            "{refused:?}"
        );
        s.charge(&alice, 2).map_err(|e| e.to_string())?;
        assert!(s.charge(&alice, 1).is_err());
        s.refund(&alice, 1);
        s.charge(&alice, 1).map_err(|e| e.to_string())?;
        assert_eq!(s.usage()[0], KeyUsage { name: "alice".into(), used: 10, budget: Some(10) });
        Ok(())
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() -> Result<(), String> {
        let s = store()?;
        let alice = s.authenticate(Some("alice-key")).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        for _ in 0..3 {
            s.check_rate(&alice, t0).map_err(|e| e.to_string())?;
        }
        match s.check_rate(&alice, t0) {
            Err(KeyRefusal::RateLimited { retry_after, .. }) => {
                assert!((retry_after.as_secs_f64() - 0.5).abs() < 1e-6, "{retry_after:?}")
            }
            other => return Err(format!("expected a rate limit, got {other:?}")),
        }
        // 0.5 s later (2/s) one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        s.check_rate(&alice, t1).map_err(|e| e.to_string())?;
        assert!(s.check_rate(&alice, t1).is_err());
        // The bucket never holds more than the burst.
        let t2 = t1 + Duration::from_secs(100);
        for _ in 0..3 {
            s.check_rate(&alice, t2).map_err(|e| e.to_string())?;
        }
        assert!(s.check_rate(&alice, t2).is_err());
        // Keys without a rate are unlimited; the anonymous caller too.
        let ops = s.authenticate(Some("ops-key-123")).map_err(|e| e.to_string())?;
        for _ in 0..100 {
            s.check_rate(&ops, t0).map_err(|e| e.to_string())?;
        }
        s.check_rate(&Caller::anonymous(), t0).map_err(|e| e.to_string())?;
        Ok(())
    }

    #[test]
    fn rejects_bad_key_files() {
        let bad = |json: &str| {
            let m: HashMap<String, KeySettings> = serde_json::from_str(json).map_err(|e| e.to_string())?;
            KeyStore::new(m).map(|_| ())
        };
        assert!(bad(r#"{"k": {"rate_per_s": 0}}"#).is_err());
        assert!(bad(r#"{"k": {"rate_per_s": 5, "burst": 0.5}}"#).is_err());
        assert!(bad(r#"{"has space": {}}"#).is_err());
        assert!(bad(r#"{"k": {"budgett": 3}}"#).is_err());
        assert!(bad(r#"{"k": {"budget": 3}}"#).is_ok());
    }
}
