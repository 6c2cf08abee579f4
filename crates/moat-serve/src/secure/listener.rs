//! The session port: a std-thread acceptor, the token handshake, and one thread per session.
//!
//! Every connection gets a thread bounded by [`SecureConfig::max_handshakes`] to present its
//! token within [`SecureConfig::handshake_timeout`] (however slowly it sends); an accepted
//! session keeps its thread, bounded by [`SecureConfig::max_sessions`], while
//! [`ServerModel::serve_with`] runs with the granted query limit and the channel's idle timeout
//! [`SecureConfig::session_timeout`]. None of it runs on the async runtime, so a session never
//! delays a plaintext HTTP request. A refused connection gets its [`HandshakeReply`] and is
//! closed; the acceptor keeps going.
//!
//! [`SecureConfig::max_handshakes`]: super::SecureConfig::max_handshakes
//! [`SecureConfig::handshake_timeout`]: super::SecureConfig::handshake_timeout
//! [`SecureConfig::max_sessions`]: super::SecureConfig::max_sessions
//! [`SecureConfig::session_timeout`]: super::SecureConfig::session_timeout

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moat_mpc::MpcError;
use moat_mpc::engine::{ServeOptions, ServerModel};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};

use super::{Grant, Lookup, Preparation, SecureService, Slot};
use crate::SharedState;
use crate::audit::{AuditRecord, SessionAudit};
use crate::error::ServeError;
use crate::state::ServerState;
use moat_wire::session::{self as wire, HandshakeReply, MAX_TOKEN_FRAME, Refusal};

/// How often the acceptor checks for a stop request while idle.
const POLL: Duration = Duration::from_millis(10);
/// How often unused expired tokens are swept (and refunded).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The running session port. Dropping it stops the acceptor without waiting; prefer
/// [`SecureListener::shutdown`].
#[derive(Debug)]
pub struct SecureListener {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    service: Arc<SecureService>,
}

impl SecureListener {
    /// Starts accepting sessions on `listener` (already bound) for `state`, whose
    /// [`ServerState::secure`] must be `service`.
    pub fn spawn(listener: TcpListener, state: SharedState, service: Arc<SecureService>) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr().map_err(|e| ServeError::Server(format!("session port: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| ServeError::Server(format!("session port {local_addr}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, service) = (Arc::clone(&stop), Arc::clone(&service));
            std::thread::Builder::new()
                .name("moat-secure-accept".into())
                .spawn(move || accept_loop(&listener, &state, &service, &stop))
                .map_err(|e| ServeError::Server(format!("cannot start the session acceptor: {e}")))?
        };
        tracing::info!(addr = %local_addr, "accepting secure sessions");
        Ok(Self { local_addr, stop, thread: Some(thread), service })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, then waits up to `grace` for the running sessions to end (those still
    /// running afterwards are left to the process's exit).
    pub fn shutdown(mut self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the session acceptor panicked");
        }
        let deadline = Instant::now() + grace;
        while self.service.running_sessions() > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        match self.service.running_sessions() {
            0 => tracing::info!("secure sessions drained"),
            n => tracing::warn!(sessions = n, "grace period over: leaving secure sessions to the exit"),
        }
    }
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, state: &SharedState, service: &Arc<SecureService>, stop: &AtomicBool) {
    let mut last_sweep = Instant::now();
    let silent = Arc::new(crate::idle::SilentSockets::default());
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => admit_connection(stream, peer, state, service, &silent),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "session port: accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            sweep_expired(state, service);
            last_sweep = Instant::now();
        }
    }
    tracing::info!("session port closed");
}

/// Hands a new connection to a handshake thread. When every handshake slot is taken, the
/// connection silent longest is closed to make room ([`crate::idle::SilentSockets`]); only if
/// none can be is the newcomer refused (`busy`, with when to retry).
fn admit_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &SharedState,
    service: &Arc<SecureService>,
    silent: &Arc<crate::idle::SilentSockets>,
) {
    let mut slot = service.try_handshake_slot();
    if slot.is_none() && silent.evict_oldest() {
        state.metrics.rejections.inc(&["secure_idle_evicted"]);
        // The evicted handshake thread wakes at once; give it a moment to free its slot.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(2));
            slot = service.try_handshake_slot();
            if slot.is_some() {
                break;
            }
        }
    }
    let Some(slot) = slot else {
        state.metrics.rejections.inc(&["secure_handshakes_full"]);
        tracing::warn!(%peer, "session port: too many connections waiting to present a token; refusing");
        let retry = service.config().handshake_timeout.as_secs().max(1);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(20)));
        refuse(&mut stream, peer, Refusal::Busy, &format!("server busy: retry after {retry} s"));
        return;
    };
    let (state, service, silent) = (Arc::clone(state), Arc::clone(service), Arc::clone(silent));
    let spawned = std::thread::Builder::new().name("moat-secure-session".into()).spawn(move || {
        let id = silent.register(&stream);
        handle_connection(stream, peer, &state, &service, slot, &silent, id);
        // Every way out of the handshake leaves the registry (the call is idempotent).
        silent.remove(id);
    });
    if let Err(e) = spawned {
        tracing::error!(%peer, error = %e, "cannot start a session thread; closing the connection");
    }
}

fn refuse(stream: &mut TcpStream, peer: SocketAddr, reason: Refusal, message: &str) {
    tracing::info!(%peer, %reason, "secure session refused");
    if let Err(e) = wire::write_reply(stream, &HandshakeReply::refused(reason, message)) {
        tracing::debug!(%peer, error = %e, "could not send the refusal");
    }
}

fn handle_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: &SharedState,
    service: &Arc<SecureService>,
    handshake: Slot,
    silent: &crate::idle::SilentSockets,
    silent_id: Option<u64>,
) {
    let config = service.config();
    if let Some(tls) = &config.tls {
        let Some(plain) = crate::tls::accept_session(stream, tls, peer, config) else {
            state.metrics.rejections.inc(&["secure_tls"]);
            return;
        };
        stream = plain;
    }
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| stream.set_write_timeout(Some(config.handshake_timeout)));
    if let Err(e) = setup {
        tracing::debug!(%peer, error = %e, "cannot configure the session socket");
        return;
    }
    let deadline = Instant::now() + config.handshake_timeout;
    let token = wire::read_frame(&mut stream, MAX_TOKEN_FRAME, deadline);
    // It spoke (or failed): no longer evictable.
    silent.remove(silent_id);
    let token = match token {
        Ok(bytes) => String::from_utf8(bytes).unwrap_or_default(),
        Err(e) => {
            state.metrics.rejections.inc(&["secure_bad_handshake"]);
            tracing::debug!(%peer, error = %e, "no token presented");
            if e.kind() == io::ErrorKind::InvalidData {
                refuse(&mut stream, peer, Refusal::BadHandshake, &format!("{e}: send the session token as one frame"));
            }
            return;
        }
    };
    if !state.is_ready() {
        refuse(&mut stream, peer, Refusal::ShuttingDown, "the server is shutting down");
        return;
    }
    let now = Instant::now();
    let Some(slot) = service.try_session_slot() else {
        if service.tokens().is_live(&token, now) {
            state.metrics.rejections.inc(&["secure_busy"]);
            let message = format!(
                "all {} secure-session slots are in use: server busy, retry after {} s (idle sessions are ended \
                 then) and before the token expires",
                config.max_sessions,
                config.idle_timeout.as_secs().max(1)
            );
            refuse(&mut stream, peer, Refusal::Busy, &message);
        } else {
            state.metrics.rejections.inc(&["secure_unknown_token"]);
            refuse(&mut stream, peer, Refusal::UnknownToken, "unknown or already used session token");
        }
        return;
    };
    let lookup = match crate::store::tokens::redeem(state, &token, service.tokens().take(&token, now)) {
        Ok(lookup) => lookup,
        Err(e) => {
            refuse(&mut stream, peer, Refusal::StoreUnavailable, &format!("{e}: retry shortly"));
            return;
        }
    };
    let grant = match lookup {
        Lookup::Valid(grant) => grant,
        Lookup::Expired(grant) => {
            expired(state, &grant);
            let message = format!("the session token expired (tokens live {:?})", service.tokens().ttl());
            refuse(&mut stream, peer, Refusal::Expired, &message);
            return;
        }
        Lookup::Unknown => {
            state.metrics.rejections.inc(&["secure_unknown_token"]);
            refuse(&mut stream, peer, Refusal::UnknownToken, "unknown or already used session token");
            return;
        }
    };
    drop(handshake);
    run_session(stream, peer, state, service, &grant);
    drop(slot);
}

/// What the session runs: on a task that does not disclose its model, the member padded to the
/// task's common architecture (its members as they are now). A task that is gone leaves a
/// preparation that fails its check — never the member's own architecture.
fn preparation(state: &ServerState, grant: &Grant) -> Preparation {
    if grant.route != "task" {
        return Preparation::Model(Arc::clone(&grant.model));
    }
    match state.tasks.resolve(&grant.target, &state.repository) {
        Some(task) => Preparation::of(Some(&task), &grant.model),
        None => {
            Preparation::Hidden { task: grant.target.clone(), members: Vec::new(), member: Arc::clone(&grant.model) }
        }
    }
}

/// How a session ended, for metrics and the audit log.
struct Ending {
    outcome: &'static str,
    status: u16,
    answered: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
}

fn run_session(mut stream: TcpStream, peer: SocketAddr, state: &ServerState, service: &SecureService, grant: &Grant) {
    let started = Instant::now();
    let config = service.config();
    let ending = match service.models().get(&preparation(state, grant)) {
        Err(reason) => {
            tracing::error!(%peer, %reason, "secure session: model preparation failed");
            refuse(
                &mut stream,
                peer,
                Refusal::Unavailable,
                "this model cannot be served securely (see the server log)",
            );
            Ending { outcome: "unavailable", status: 503, answered: Some(0), bytes_in: 0, bytes_out: 0 }
        }
        Ok(model) => match wire::write_reply(&mut stream, &HandshakeReply::accepted()) {
            Err(e) => {
                tracing::debug!(%peer, error = %e, "client left before the session started");
                Ending { outcome: "aborted", status: 400, answered: Some(0), bytes_in: 0, bytes_out: 0 }
            }
            Ok(()) => serve(stream, &model, service, grant, config),
        },
    };
    let duration = started.elapsed();
    let m = &state.metrics;
    if ending.outcome != "unavailable" {
        m.record_secure_session(ending.bytes_in, ending.bytes_out, duration, ending.outcome == "completed");
    }
    if ending.outcome == "limit" {
        m.rejections.inc(&["secure_query_limit"]);
    }
    let version = grant.model.version_string();
    if let Some(answered) = ending.answered {
        m.inference_samples.add(&[&grant.model.name, &version], answered as f64);
        // What was granted but not used goes back to the key; a failed session is charged fully.
        refund(state, grant, grant.queries.saturating_sub(answered));
    }
    tracing::info!(
        %peer,
        key = %grant.caller.name,
        model = %grant.model.name,
        version = %version,
        outcome = ending.outcome,
        granted = grant.queries,
        answered = ?ending.answered,
        bytes_in = ending.bytes_in,
        bytes_out = ending.bytes_out,
        seconds = duration.as_secs_f64(),
        "secure session ended"
    );
    audit(state, grant, &ending, duration);
}

fn serve(
    stream: TcpStream,
    model: &ServerModel,
    service: &SecureService,
    grant: &Grant,
    config: &super::SecureConfig,
) -> Ending {
    let channel_config =
        ChannelConfig::default().with_timeout(config.session_timeout).with_connect_timeout(config.session_timeout);
    let mut ch = match TcpChannel::from_stream(stream, channel_config) {
        Ok(ch) => ch,
        Err(e) => {
            tracing::debug!(error = %e, "cannot set up the session channel");
            return Ending { outcome: "aborted", status: 400, answered: Some(0), bytes_in: 0, bytes_out: 0 };
        }
    };
    let options = ServeOptions {
        max_queries: Some(grant.queries),
        output: grant.output,
        hardening: config.hardening,
        idle_timeout: Some(config.idle_timeout),
        ..Default::default()
    };
    let result = model.serve_with(&mut ch, service.session_seed(), &options);
    let totals = ch.stats().total();
    let (bytes_in, bytes_out) = (totals.bytes_received, totals.bytes_sent);
    match result {
        Ok(answered) => Ending { outcome: "completed", status: 200, answered: Some(answered), bytes_in, bytes_out },
        Err(MpcError::Limit { queries }) => {
            Ending { outcome: "limit", status: 429, answered: Some(queries), bytes_in, bytes_out }
        }
        Err(MpcError::Idle { after, queries }) => {
            tracing::info!(?after, queries, "idle secure session evicted");
            Ending { outcome: "idle", status: 408, answered: Some(queries), bytes_in, bytes_out }
        }
        Err(e) => {
            tracing::warn!(error = %e, "secure session failed");
            Ending { outcome: "aborted", status: 400, answered: None, bytes_in, bytes_out }
        }
    }
}

fn refund(state: &ServerState, grant: &Grant, queries: u64) {
    if queries > 0
        && let Some(keys) = &state.keys
    {
        keys.refund(&grant.caller, queries);
    }
}

fn audit(state: &ServerState, grant: &Grant, ending: &Ending, duration: Duration) {
    let Some(log) = &state.audit else { return };
    log.record(&AuditRecord {
        time_ms: AuditRecord::now_ms(),
        key: Some(grant.caller.name.clone()),
        route: grant.route,
        target: grant.target.clone(),
        model: Some(grant.model.name.clone()),
        version: Some(grant.model.version_string()),
        batch: ending.answered.unwrap_or(0) as usize,
        status: ending.status,
        latency_ms: duration.as_secs_f64() * 1e3,
        secure: Some(SessionAudit {
            event: "session",
            granted: grant.queries,
            answered: ending.answered,
            outcome: Some(ending.outcome),
            bytes_in: ending.bytes_in,
            bytes_out: ending.bytes_out,
        }),
    });
}

/// A token that expired unused: refund its queries and audit it.
fn expired(state: &ServerState, grant: &Grant) {
    state.metrics.rejections.inc(&["secure_token_expired"]);
    let ending = Ending { outcome: "expired", status: 410, answered: Some(0), bytes_in: 0, bytes_out: 0 };
    refund(state, grant, grant.queries);
    audit(state, grant, &ending, Duration::ZERO);
}

/// Refunds and audits every token that expired unused.
pub(crate) fn sweep_expired(state: &ServerState, service: &SecureService) {
    for (token, grant) in service.tokens().sweep_tokens(Instant::now()) {
        if crate::store::tokens::owns_expired(state, token.as_str()) {
            expired(state, &grant);
        }
    }
}
