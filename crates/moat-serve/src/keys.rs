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
//! Budgets and buckets live in the replica's memory: N replicas behind a load balancer give a
//! key up to N times its budget, and a restart resets them (see `deploy/README.md`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{AppError, ServeError};

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
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
struct KeyState {
    settings: KeySettings,
    name: String,
    used: u64,
    bucket: Option<Bucket>,
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
        }
    }
}

/// The configured keys and their running budgets and buckets.
#[derive(Debug)]
pub struct KeyStore {
    keys: Mutex<HashMap<String, KeyState>>,
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

fn default_name(key: &str) -> String {
    let prefix: String = key.chars().take(4).collect();
    format!("{prefix}…")
}

impl KeyStore {
    /// Keys from settings.
    pub fn new(settings: HashMap<String, KeySettings>) -> Result<Self, String> {
        let mut keys = HashMap::with_capacity(settings.len());
        let now = Instant::now();
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
                    Some(Bucket { tokens: burst, updated: now })
                }
            };
            keys.insert(key, KeyState { settings: s, name, used: 0, bucket });
        }
        Ok(Self { keys: Mutex::new(keys) })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::io(path, source))?;
        let settings: HashMap<String, KeySettings> =
            serde_json::from_str(&text).map_err(|e| ServeError::config(path, e.to_string()))?;
        Self::new(settings).map_err(|e| ServeError::config(path, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller presenting `key`.
    pub fn authenticate(&self, key: Option<&str>) -> Result<Caller, KeyRefusal> {
        let key = key.ok_or(KeyRefusal::MissingKey)?;
        let keys = self.lock();
        let state = keys.get(key).ok_or(KeyRefusal::UnknownKey)?;
        Ok(Caller { name: state.name.clone(), admin: state.settings.admin, key: Some(key.to_string()) })
    }

    /// Takes one token from the caller's bucket.
    pub fn check_rate(&self, caller: &Caller, now: Instant) -> Result<(), KeyRefusal> {
        let Some(key) = &caller.key else { return Ok(()) };
        let mut keys = self.lock();
        let Some(state) = keys.get_mut(key) else { return Err(KeyRefusal::UnknownKey) };
        let (Some(rate), Some(bucket)) = (state.settings.rate_per_s, state.bucket.as_mut()) else { return Ok(()) };
        let burst = state.settings.burst.unwrap_or(rate.max(1.0));
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Err(KeyRefusal::RateLimited {
                name: state.name.clone(),
                rate_per_s: rate,
                burst,
                retry_after: Duration::from_secs_f64(wait),
            })
        }
    }

    /// Refuses a caller whose budget is spent (not even one sample left), so a request from it
    /// is turned away before its body is read or parsed. Charges nothing.
    pub fn check_budget_left(&self, caller: &Caller) -> Result<(), KeyRefusal> {
        let Some(key) = &caller.key else { return Ok(()) };
        let keys = self.lock();
        let Some(state) = keys.get(key) else { return Err(KeyRefusal::UnknownKey) };
        match state.settings.budget {
            Some(budget) if state.used >= budget => {
                Err(KeyRefusal::BudgetExhausted { name: state.name.clone(), used: state.used, budget, requested: 1 })
            }
            _ => Ok(()),
        }
    }

    /// Charges `samples` against the caller's budget, all or nothing.
    pub fn charge(&self, caller: &Caller, samples: u64) -> Result<(), KeyRefusal> {
        let Some(key) = &caller.key else { return Ok(()) };
        let mut keys = self.lock();
        let Some(state) = keys.get_mut(key) else { return Err(KeyRefusal::UnknownKey) };
        if let Some(budget) = state.settings.budget
            && state.used.saturating_add(samples) > budget
        {
            return Err(KeyRefusal::BudgetExhausted {
                name: state.name.clone(),
                used: state.used,
                budget,
                requested: samples,
            });
        }
        state.used = state.used.saturating_add(samples);
        Ok(())
    }

    /// Gives back samples charged for a request the server failed to serve.
    pub fn refund(&self, caller: &Caller, samples: u64) {
        let Some(key) = &caller.key else { return };
        if let Some(state) = self.lock().get_mut(key) {
            state.used = state.used.saturating_sub(samples);
        }
    }

    /// Usage of every key, sorted by name.
    pub fn usage(&self) -> Vec<KeyUsage> {
        let mut out: Vec<KeyUsage> = self
            .lock()
            .values()
            .map(|s| KeyUsage { name: s.name.clone(), used: s.used, budget: s.settings.budget })
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
