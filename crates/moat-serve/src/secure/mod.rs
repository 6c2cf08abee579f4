//! Secure-inference sessions: two-party inference (moat-mpc's `moat-2pc/3`) offered by the
//! model server beside plaintext inference. The server holds the model and never sees the
//! input; the client holds the input and learns the label.
//!
//! ## Flow
//!
//! 1. **Admission**, over HTTP behind the API-key layer ([`crate::http`]):
//!    `POST /v2/models/{m}[/versions/{v}]/secure` or `POST /v2/tasks/{t}/secure` with
//!    `{"queries": n, "parameters": {"min_accuracy": …, "max_latency_ms": …}}`. The checks are
//!    those of inference — rate limit, body, target, spec, then the key's budget, charged `n`
//!    queries up front (429 when it does not cover them) — and a task's selection policy picks
//!    the model, which is named in the answer only if the task's disclosure policy says so.
//!    The answer carries a one-use [`tokens::Token`] (128 bits of OS entropy, a bearer secret),
//!    the session port's `address`, `queries`, `expires_in_ms` and `protocol`.
//! 2. **Session**, on the session port ([`listener`]): the client connects, presents the token
//!    ([`moat_wire::session`]), and on acceptance runs the two-party protocol on the same connection, on a
//!    thread of its own — sessions never touch the async runtime that serves HTTP. The server
//!    answers at most `n` queries: one more ends the session (and is audited as such).
//!    At most [`SecureConfig::max_sessions`] sessions run at once; beyond, a client is told
//!    `busy` and its token stays valid until it expires.
//! 3. **End**: metrics (bytes each way, duration, outcome), one audit line for the key with the
//!    queries answered, and a refund of the queries a cleanly closed session did not use (a
//!    session that fails midway is charged in full; a token that expires unused is refunded).
//!
//! ## What a session reveals
//!
//! The protocol's hello carries the served model's public architecture (layer types and shapes,
//! no weights): a task that does not disclose its model still tells a secure client which
//! *architecture* serves it, so a zoo whose members differ in architecture is distinguishable
//! by secure clients. The client may ask the protocol for the logits instead of the label (the
//! plaintext API offers logits too). Each session's randomness is a 256-bit [`Seed`] drawn from
//! a ChaCha20 generator keyed by 256 bits of OS entropy, unless [`SecureConfig::insecure_seed`]
//! fixes it, which makes the server's masks predictable and is for reproducible experiments
//! only.

pub mod listener;
pub mod models;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_mpc::Seed;
use moat_mpc::engine::{Hardening, Reveal};
use moat_nn::FixedPoint;
use rand_chacha::ChaCha20Rng;

use crate::error::ServeError;
use crate::keys::Caller;
use crate::repository::ModelVersion;

pub use listener::{DirectConfig, SecureListener};
pub use moat_wire::{HANDSHAKE, HandshakeReply, Refusal};
pub use models::{ModelCache, Preparation};
pub use tokens::{Lookup, Token, TokenError, TokenStore};

/// The two-party protocol sessions speak (the engine's).
pub const PROTOCOL: &str = moat_mpc::engine::real::PROTOCOL;

/// The name of this extension in the server metadata.
pub const EXTENSION: &str = "moat_secure_sessions";

/// Secure-session settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SecureConfig {
    /// Address of the session port; `None`: the HTTP address with the port after the HTTP
    /// port (any free port when the HTTP port is 0).
    pub listen: Option<SocketAddr>,
    /// `host:port` clients are told to connect to; `None`: the bound address, or, when bound
    /// to an unspecified IP (`0.0.0.0`), the host the client used for HTTP with the session
    /// port.
    pub advertise: Option<String>,
    /// Sessions running at once.
    pub max_sessions: usize,
    /// Connections waiting to present a token at once (more are closed on arrival).
    pub max_handshakes: usize,
    /// Most queries one session may be granted.
    pub max_queries: u64,
    /// Lifetime of an unused token.
    pub token_ttl: Duration,
    /// Tokens outstanding at once (503 beyond).
    pub max_pending: usize,
    /// Deadline for a connection to present its token.
    pub handshake_timeout: Duration,
    /// Bound on every wait for the client during a session.
    pub session_timeout: Duration,
    /// How long an admitted session may sit between queries before the server ends it (its
    /// unused queries refunded) so it does not hold a slot others wait for.
    pub idle_timeout: Duration,
    /// BFV ring degree (4096 or 8192).
    pub he_degree: usize,
    /// Fixed-point setting models run at.
    pub fixed: FixedPoint,
    /// Server-side noise against share-tampering clients (none by default).
    pub hardening: Hardening,
    /// The most a session may reveal to its client (default: logits). An admission asking
    /// for more is refused (403) before anything is charged; the session's hello announces
    /// the granted output and the server ends a session whose client asks for more.
    pub output: Reveal,
    /// A public number fixing every session's randomness (**not private**: whoever knows it
    /// predicts the server's masks); `None`, the default, keys the session seeds with 256 bits
    /// from the OS. For reproducible experiments and tests only.
    pub insecure_seed: Option<u64>,
    /// TLS on the session port (`None`: plain TCP); set by [`crate::Server`] from the HTTP
    /// port's TLS settings.
    pub tls: Option<crate::tls::ServerTls>,
}

impl Default for SecureConfig {
    fn default() -> Self {
        Self {
            listen: None,
            advertise: None,
            max_sessions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_handshakes: 64,
            max_queries: 1000,
            token_ttl: Duration::from_secs(30),
            max_pending: 1024,
            handshake_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10),
            he_degree: 4096,
            fixed: FixedPoint::default(),
            hardening: Hardening::NONE,
            output: Reveal::Logits,
            insecure_seed: None,
            tls: None,
        }
    }
}

impl SecureConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_sessions == 0 || self.max_handshakes == 0 || self.max_queries == 0 || self.max_pending == 0 {
            return Err("secure sessions: max sessions, handshakes, queries and pending tokens must be positive".into());
        }
        if self.token_ttl.is_zero()
            || self.handshake_timeout.is_zero()
            || self.session_timeout.is_zero()
            || self.idle_timeout.is_zero()
        {
            return Err("secure sessions: the token lifetime and the timeouts must be positive".into());
        }
        if !matches!(self.he_degree, 4096 | 8192) {
            return Err(format!("secure sessions: BFV ring degree {} (4096 or 8192)", self.he_degree));
        }
        Ok(())
    }
}

/// What a token grants: who, which model version, how many queries.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The key the session is charged to.
    pub caller: Caller,
    /// The model version that serves the session.
    pub model: Arc<ModelVersion>,
    /// Queries granted (and charged).
    pub queries: u64,
    /// `model` or `task`: how the session was asked for.
    pub route: &'static str,
    /// The model or task named in the admission URL.
    pub target: String,
    /// The output the session was granted: each query reveals at most this.
    pub output: Reveal,
}

/// A counted slot, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn try_acquire(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Self(Arc::clone(counter)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where a session port's per-session [`Seed`]s come from: a ChaCha20 generator keyed by 256
/// bits of OS entropy, or — for reproducible experiments only, **not private** — by a public
/// number. Its `Debug` shows nothing: the generator's state is the next sessions' seeds.
pub(crate) struct SeedStream(Mutex<ChaCha20Rng>);

impl SeedStream {
    /// Keyed by the OS, or by `insecure_seed` when given.
    pub(crate) fn new(insecure_seed: Option<u64>) -> Result<Self, ServeError> {
        let root = match insecure_seed {
            Some(n) => Seed::insecure_from_u64(n),
            None => Seed::from_os().map_err(|e| ServeError::Server(format!("{e}: {}", e.0)))?,
        };
        Ok(Self(Mutex::new(root.rng())))
    }

    /// The next session's seed.
    pub(crate) fn next(&self) -> Seed {
        Seed::derive(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for SeedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedStream(..)")
    }
}

/// The running secure-session service: settings, bound address, tokens, prepared models and
/// session slots. Shared by the HTTP admission routes and the session listener.
pub struct SecureService {
    config: SecureConfig,
    local_addr: SocketAddr,
    tokens: TokenStore<Grant>,
    models: Arc<ModelCache>,
    running: Arc<AtomicUsize>,
    handshaking: Arc<AtomicUsize>,
    seeds: SeedStream,
}

impl std::fmt::Debug for SecureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the seed generator: its buffered output is the next sessions' seeds.
        f.debug_struct("SecureService")
            .field("config", &self.config)
            .field("local_addr", &self.local_addr)
            .field("tokens", &self.tokens.len())
            .field("models", &self.models)
            .field("running", &self.running_sessions())
            .finish_non_exhaustive()
    }
}

impl SecureService {
    /// The service for a session port bound at `local_addr`.
    pub fn new(config: SecureConfig, local_addr: SocketAddr) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Server)?;
        Ok(Self {
            tokens: TokenStore::new(config.token_ttl, config.max_pending),
            models: Arc::new(ModelCache::new(config.fixed, config.he_degree)),
            running: Arc::new(AtomicUsize::new(0)),
            handshaking: Arc::new(AtomicUsize::new(0)),
            seeds: SeedStream::new(config.insecure_seed)?,
            config,
            local_addr,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SecureConfig {
        &self.config
    }

    /// The bound session port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The outstanding tokens.
    pub fn tokens(&self) -> &TokenStore<Grant> {
        &self.tokens
    }

    /// The prepared models.
    pub fn models(&self) -> &Arc<ModelCache> {
        &self.models
    }

    /// Sessions running now.
    pub fn running_sessions(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn try_session_slot(&self) -> Option<Slot> {
        Slot::try_acquire(&self.running, self.config.max_sessions)
    }

    pub(crate) fn try_handshake_slot(&self) -> Option<Slot> {
        Slot::try_acquire(&self.handshaking, self.config.max_handshakes)
    }

    /// A fresh seed for one session's randomness.
    pub(crate) fn session_seed(&self) -> Seed {
        self.seeds.next()
    }

    /// The `host:port` a client asking over HTTP with this `Host` header should connect to.
    pub fn advertised_address(&self, host_header: Option<&str>) -> String {
        if let Some(a) = &self.config.advertise {
            return a.clone();
        }
        if !self.local_addr.ip().is_unspecified() {
            return self.local_addr.to_string();
        }
        match host_header.and_then(host_of) {
            Some(host) => format!("{host}:{}", self.local_addr.port()),
            None => self.local_addr.to_string(),
        }
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]` or `[v6]:port`), if it looks
/// like a host name or address.
fn host_of(header: &str) -> Option<&str> {
    let header = header.trim();
    let host = if header.starts_with('[') {
        &header[..=header.find(']')?]
    } else {
        match header.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => header,
        }
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'));
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn service(listen: &str, advertise: Option<&str>) -> Result<SecureService, Box<dyn std::error::Error>> {
        let config = SecureConfig {
            advertise: advertise.map(str::to_string),
            insecure_seed: Some(1),
            ..SecureConfig::default()
        };
        Ok(SecureService::new(config, listen.parse()?)?)
    }

    #[test]
    fn advertises_the_bound_address_the_configured_one_or_the_http_host() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!(service("127.0.0.1:8001", None)?.advertised_address(Some("example.org")), "127.0.0.1:8001");
        assert_eq!(service("127.0.0.1:8001", Some("10.0.0.7:8001"))?.advertised_address(None), "10.0.0.7:8001");
        let any = service("0.0.0.0:8001", None)?;
        assert_eq!(any.advertised_address(Some("moat.example.org:8000")), "moat.example.org:8001");
        assert_eq!(any.advertised_address(Some("moat-serve")), "moat-serve:8001");
        assert_eq!(any.advertised_address(Some("[::1]:8000")), "[::1]:8001");
        assert_eq!(any.advertised_address(Some("bad host\r\n:80")), "0.0.0.0:8001");
        assert_eq!(any.advertised_address(None), "0.0.0.0:8001");
        Ok(())
    }

    #[test]
    fn slots_are_bounded_and_given_back() -> Result<(), Box<dyn std::error::Error>> {
        let s = SecureService::new(
            SecureConfig { max_sessions: 2, insecure_seed: Some(3), ..Default::default() },
            "127.0.0.1:1".parse()?,
        )?;
        let a = s.try_session_slot().ok_or("first slot")?;
        let _b = s.try_session_slot().ok_or("second slot")?;
        assert!(s.try_session_slot().is_none());
        assert_eq!(s.running_sessions(), 2);
        drop(a);
        assert!(s.try_session_slot().is_some());
        Ok(())
    }

    #[test]
    fn session_seeds_follow_the_configured_seed() -> Result<(), Box<dyn std::error::Error>> {
        let a = service("127.0.0.1:1", None)?;
        let b = service("127.0.0.1:1", None)?;
        let (x, y) = (a.session_seed(), a.session_seed());
        let first = |s: &Seed| s.rng().next_u64();
        assert_ne!(first(&x), first(&y));
        assert_eq!(first(&x), first(&b.session_seed()));
        Ok(())
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = |c: SecureConfig| c.validate().is_err();
        assert!(bad(SecureConfig { max_sessions: 0, ..Default::default() }));
        assert!(bad(SecureConfig { max_queries: 0, ..Default::default() }));
        assert!(bad(SecureConfig { token_ttl: Duration::ZERO, ..Default::default() }));
        assert!(bad(SecureConfig { he_degree: 2048, ..Default::default() }));
        assert!(SecureConfig::default().validate().is_ok());
    }
}
