//! Session tokens across replicas: with a shared store, every admitted token is also recorded
//! there (`moat:token:{sha256(token)}`, the grant as JSON, expiring a minute after the token),
//! so any replica's session port can redeem it, and exactly one can: redeeming takes the record
//! with `GETDEL`, which Redis runs atomically.
//!
//! The admitting replica keeps its local copy too (it redeems without a network step only
//! after the shared record is taken). Who refunds a token that expired unused: whoever takes
//! its record — the replica it is presented to, or the admitting replica's sweep; a record
//! already taken elsewhere means "redeemed elsewhere": nothing is refunded twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{KeyId, StoreError};
use crate::secure::Grant;
use crate::secure::tokens::Lookup;
use crate::state::ServerState;

/// How long a token's shared record outlives the token (for the refund of an expired one).
const GRACE: Duration = Duration::from_secs(60);

/// A store that can hand one-use records to exactly one taker.
pub trait SharedTokens: Send + Sync {
    /// Records `value` under `id` for `ttl`.
    fn put_token(&self, id: &KeyId, value: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Removes and returns the record of `id` (at most one caller ever gets it).
    fn take_token(&self, id: &KeyId) -> Result<Option<String>, StoreError>;
}

/// A grant as recorded in the shared store (no secrets: the key by its digest).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    key: Option<String>,
    model: String,
    version: u64,
    queries: u64,
    route: String,
    target: String,
    output: String,
    expires_unix_ms: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn shared(state: &ServerState) -> Option<&dyn SharedTokens> {
    state.keys.as_ref().and_then(|k| k.shared_tokens())
}

/// Records a token just issued for `grant` (no-op without a shared store).
pub(crate) fn share(state: &ServerState, token: &str, grant: &Grant, ttl: Duration) -> Result<(), StoreError> {
    let Some(store) = shared(state) else { return Ok(()) };
    let record = Record {
        key: state.keys.as_ref().and_then(|k| k.caller_id(&grant.caller)).map(|id| id.as_str().to_string()),
        model: grant.model.name.clone(),
        version: grant.model.version,
        queries: grant.queries,
        route: grant.route.to_string(),
        target: grant.target.clone(),
        output: grant.output.to_string(),
        expires_unix_ms: unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    };
    let json = serde_json::to_string(&record).map_err(|e| StoreError(e.to_string()))?;
    store.put_token(&KeyId::of(token), &json, ttl + GRACE)
}

/// What presenting `token` finds across replicas, given what this replica found locally.
pub(crate) fn redeem(state: &ServerState, token: &str, local: Lookup<Grant>) -> Result<Lookup<Grant>, StoreError> {
    let Some(store) = shared(state) else { return Ok(local) };
    if crate::secure::tokens::Token::parse(token).is_none() {
        return Ok(Lookup::Unknown);
    }
    let record = store.take_token(&KeyId::of(token))?;
    Ok(match (local, record) {
        // Issued here and still unredeemed everywhere.
        (Lookup::Valid(g), Some(_)) => Lookup::Valid(g),
        (Lookup::Expired(g), Some(_)) => Lookup::Expired(g),
        // Issued here but redeemed at another replica (or its record lapsed): not again.
        (Lookup::Valid(_) | Lookup::Expired(_), None) | (Lookup::Unknown, None) => Lookup::Unknown,
        // Issued by another replica.
        (Lookup::Unknown, Some(json)) => match rebuild(state, &json) {
            Some((grant, expired)) if expired => Lookup::Expired(grant),
            Some((grant, _)) => Lookup::Valid(grant),
            None => Lookup::Unknown,
        },
    })
}

/// Whether this replica should refund `token`'s expired grant: it takes the shared record
/// (always true without a shared store). An unreachable store keeps the charge (logged).
pub(crate) fn owns_expired(state: &ServerState, token: &str) -> bool {
    let Some(store) = shared(state) else { return true };
    match store.take_token(&KeyId::of(token)) {
        Ok(record) => record.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot settle an expired session token: its queries stay charged");
            false
        }
    }
}

fn rebuild(state: &ServerState, json: &str) -> Option<(Grant, bool)> {
    let record: Record =
        serde_json::from_str(json).map_err(|e| tracing::warn!(error = %e, "unreadable shared session token")).ok()?;
    let caller = match (&record.key, &state.keys) {
        (Some(id), Some(keys)) => keys.caller_by_id(id)?,
        (None, _) => crate::keys::Caller::anonymous(),
        (Some(_), None) => return None,
    };
    let model = state
        .repository
        .get(&record.model, Some(&record.version.to_string()))
        .map_err(|e| tracing::warn!(model = %record.model, error = %e, "shared token for a model not served here"))
        .ok()?;
    let route = if record.route == "task" { "task" } else { "model" };
    let output = record.output.parse().ok()?;
    let grant = Grant { caller, model, queries: record.queries, route, target: record.target, output };
    Some((grant, unix_ms() >= record.expires_unix_ms))
}
