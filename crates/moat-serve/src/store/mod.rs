//! Where per-key counters live: sample budgets and rate-limit buckets, behind [`CounterStore`].
//!
//! * [`memory::MemoryStore`] (the default): this replica's memory. N replicas behind a load
//!   balancer give a key N× its budget; a restart resets the counters.
//! * [`redis::RedisStore`] (`--store redis://HOST:PORT[/DB]`): one Redis shared by every
//!   replica. A charge is one Lua script (check the budget, then `INCRBY`), so two replicas
//!   charging the same key at once can never both pass the last sample; a refund is one
//!   `DECRBY` clamped at zero; the rate bucket is one script timed by Redis's own clock
//!   (`TIME`), so replicas need no synchronised clocks. Keys are stored as SHA-256 digests,
//!   never in clear. When Redis cannot be reached within its timeout the request is refused
//!   with `503` and **nothing is charged** (a charge either ran as one script or not at all).
//!
//! The key file (settings: names, budgets, rates) stays a file every replica reads; only the
//! running counters are shared.

pub mod memory;
pub mod redis;
pub mod tokens;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The counter store cannot answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shared budget store is unavailable: {0}")]
pub struct StoreError(pub String);

/// The outcome of a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Charged; the samples used now.
    Charged(u64),
    /// Over budget, nothing charged; the samples used before.
    Refused(u64),
}

/// Per-key running counters, shared by whatever replicas use the same store.
pub trait CounterStore: Send + Sync + Debug {
    /// Samples `key` has used.
    fn used(&self, key: &KeyId) -> Result<u64, StoreError>;

    /// Atomically charges `samples` unless that would pass `budget` (`None`: unlimited).
    fn charge(&self, key: &KeyId, samples: u64, budget: Option<u64>) -> Result<Charge, StoreError>;

    /// Gives back `samples` (never below zero).
    fn refund(&self, key: &KeyId, samples: u64) -> Result<(), StoreError>;

    /// Takes one request from `key`'s token bucket (refilling at `rate` per second up to
    /// `burst`) at `now`; `Ok(None)` when taken, `Ok(Some(wait))` when empty. A shared store
    /// keeps time by its own clock and ignores `now`.
    fn take_request(&self, key: &KeyId, rate: f64, burst: f64, now: Instant) -> Result<Option<Duration>, StoreError>;

    /// What the store is, for logs (no secrets).
    fn describe(&self) -> String;

    /// The one-use records of session tokens, when this store is shared by replicas.
    fn shared_tokens(&self) -> Option<&dyn tokens::SharedTokens> {
        None
    }
}

/// A key as the store knows it: the SHA-256 of the API key, hex (the key itself never leaves
/// the replica).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The store's identifier of API key `key`.
    pub fn of(key: &str) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// The store `spec` names: `memory`, or `redis://[:PASSWORD@]HOST:PORT[/DB]`.
pub fn open(spec: &str) -> Result<Box<dyn CounterStore>, StoreError> {
    match spec.trim() {
        "" | "memory" => Ok(Box::new(memory::MemoryStore::default())),
        s if s.starts_with("redis://") => Ok(Box::new(redis::RedisStore::open(s)?)),
        s => Err(StoreError(format!("unknown store '{s}': use 'memory' or 'redis://HOST:PORT[/DB]'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_digests_and_hide_the_key() {
        let id = KeyId::of("k-secret");
        assert_eq!(id.as_str().len(), 64);
        assert!(!id.as_str().contains("secret"));
        assert_ne!(id, KeyId::of("k-other"));
        assert!(!format!("{id:?}").contains(id.as_str()));
    }

    #[test]
    fn unknown_store_specs_are_refused() {
        assert!(open("memory").is_ok());
        assert!(open("postgres://x").is_err());
        assert!(open("redis://").is_err());
    }
}
