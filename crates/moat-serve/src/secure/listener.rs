//! The session port: a std-thread acceptor, the token handshake, and one thread per session.
//!
//! Two fronts share the acceptor (accept errors backed off, never fatal; a stop flag; bounded
//! sessions): `moat serve`'s, where a connection presents a token admitted over HTTP
//! ([`SecureListener::spawn`], below), and the tokenless one of `moat secure server`, one
//! model and no admission ([`SecureListener::spawn_direct`], [`DirectConfig`]).
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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use moat_mpc::MpcError;
use moat_mpc::engine::{GuardFactory, ServeOptions, ServerModel};
use moat_mpc::transport::first::FirstRecv;
use moat_mpc::transport::shaped::{NetworkModel, Shaped};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig, TransportError};

use super::{Grant, Lookup, Preparation, SecureService, SeedStream, Slot};
use crate::SharedState;
use crate::audit::{AuditRecord, SessionAudit};
use crate::error::ServeError;
use crate::state::ServerState;
use moat_wire::session::{self as wire, HandshakeReply, MAX_TOKEN_FRAME, Refusal};

/// How often the acceptor checks for a stop request while idle.
const POLL: Duration = Duration::from_millis(10);
/// How often unused expired tokens are swept (and refunded).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (e.g. `EMFILE`) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The running session port. Dropping it stops the acceptor without waiting; prefer
/// [`SecureListener::shutdown`] (or [`SecureListener::wait`] for a port that ends by itself).
#[derive(Debug)]
pub struct SecureListener {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    front: Arc<dyn Front>,
}

/// Who a session port admits and how: what the acceptor does with a new connection.
trait Front: std::fmt::Debug + Send + Sync + 'static {
    /// Refuses `stream` or hands it to a thread of its own (never blocks the acceptor).
    fn admit(self: Arc<Self>, stream: TcpStream, peer: SocketAddr);
    /// Periodic housekeeping between accepts.
    fn tick(&self) {}
    /// Sessions running now.
    fn running_sessions(&self) -> usize;
    /// Whether the port has admitted all the sessions it will (then the acceptor ends).
    fn exhausted(&self) -> bool {
        false
    }
}

impl SecureListener {
    /// Starts accepting sessions on `listener` (already bound) for `state`, whose
    /// [`ServerState::secure`] must be `service`: a connection presents a token admitted over
    /// HTTP.
    pub fn spawn(listener: TcpListener, state: SharedState, service: Arc<SecureService>) -> Result<Self, ServeError> {
        let silent = Arc::new(crate::idle::SilentSockets::default());
        Self::start(listener, Arc::new(TokenFront { state, service, silent }))
    }

    /// Starts a tokenless session port on `listener` (already bound) for one prepared
    /// `model`, without a repository, keys or token store — what `moat secure server` runs.
    /// Every connection is a session: the server sends the protocol's hello at once, the
    /// client has [`DirectConfig::handshake_timeout`] for its first message, and beyond
    /// [`DirectConfig::max_sessions`] running sessions a connection gets one `busy`
    /// [`HandshakeReply`] and is closed by the acceptor (no thread is started for it).
    pub fn spawn_direct(
        listener: TcpListener,
        model: Arc<ServerModel>,
        config: DirectConfig,
    ) -> Result<Self, ServeError> {
        Self::spawn_direct_guarded(listener, model, config, None)
    }

    /// [`Self::spawn_direct`] with a server guard built by `guard` for every session
    /// ([`ServerModel::serve_guarded`]; e.g. SIGuard at the reveal point, which makes the
    /// sessions reveal at most probabilities). With a guard, [`ServeOptions::hardening`] is not
    /// applied (the guard replaces it).
    pub fn spawn_direct_guarded(
        listener: TcpListener,
        model: Arc<ServerModel>,
        config: DirectConfig,
        guard: Option<GuardFactory>,
    ) -> Result<Self, ServeError> {
        if config.max_sessions == 0 || config.handshake_timeout.is_zero() || config.session_timeout.is_zero() {
            return Err(ServeError::Server(
                "secure sessions: the session bound and the timeouts must be positive".into(),
            ));
        }
        let seeds = SeedStream::new(config.insecure_seed)?;
        let front = DirectFront {
            model,
            seeds,
            running: Arc::new(AtomicUsize::new(0)),
            accepted: AtomicU64::new(0),
            config,
            guard,
        };
        Self::start(listener, Arc::new(front))
    }

    fn start(listener: TcpListener, front: Arc<dyn Front>) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr().map_err(|e| ServeError::Server(format!("session port: {e}")))?;
        listener.set_nonblocking(true).map_err(|e| ServeError::Server(format!("session port {local_addr}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, front) = (Arc::clone(&stop), Arc::clone(&front));
            std::thread::Builder::new()
                .name("moat-secure-accept".into())
                .spawn(move || accept_loop(&listener, &front, &stop))
                .map_err(|e| ServeError::Server(format!("cannot start the session acceptor: {e}")))?
        };
        tracing::info!(addr = %local_addr, "accepting secure sessions");
        Ok(Self { local_addr, stop, thread: Some(thread), front })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, then waits up to `grace` for the running sessions to end (those still
    /// running afterwards are left to the process's exit).
    pub fn shutdown(mut self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.join_acceptor();
        let deadline = Instant::now() + grace;
        while self.front.running_sessions() > 0 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        match self.front.running_sessions() {
            0 => tracing::info!("secure sessions drained"),
            n => tracing::warn!(sessions = n, "grace period over: leaving secure sessions to the exit"),
        }
    }

    /// Waits until the acceptor ends by itself (a direct port that admitted its
    /// [`DirectConfig::sessions`]; otherwise forever) and every session has ended.
    pub fn wait(mut self) {
        self.join_acceptor();
        while self.front.running_sessions() > 0 {
            std::thread::sleep(POLL);
        }
    }

    fn join_acceptor(&mut self) {
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the session acceptor panicked");
        }
    }
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, front: &Arc<dyn Front>, stop: &AtomicBool) {
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::SeqCst) && !front.exhausted() {
        match listener.accept() {
            Ok((stream, peer)) => Arc::clone(front).admit(stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "session port: accept failed; backing off");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
        if last_tick.elapsed() >= SWEEP_EVERY {
            front.tick();
            last_tick = Instant::now();
        }
    }
    tracing::info!("session port closed");
}

/// Settings of a tokenless session port ([`SecureListener::spawn_direct`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DirectConfig {
    /// Sessions running at once; a connection beyond gets a `busy` refusal and is closed.
    pub max_sessions: usize,
    /// Deadline for a new client's first protocol message after the hello (each read of it,
    /// however slowly it trickles); an idle connection is closed then and frees its slot.
    pub handshake_timeout: Duration,
    /// Bound on every later wait for the client.
    pub session_timeout: Duration,
    /// Admit this many sessions, then stop accepting (`None`: until shut down).
    pub sessions: Option<u64>,
    /// The sessions' options (query limit, revealed output, hardening, silent OT).
    pub options: ServeOptions,
    /// An emulated link the server's side of every session is shaped to (`None`: none).
    pub link: Option<NetworkModel>,
    /// A public number fixing every session's randomness (**not private**); `None` keys the
    /// session seeds with 256 bits from the OS.
    pub insecure_seed: Option<u64>,
}

/// The tokenless front: one model, a bound on running sessions, no admission.
struct DirectFront {
    model: Arc<ServerModel>,
    config: DirectConfig,
    seeds: SeedStream,
    running: Arc<AtomicUsize>,
    accepted: AtomicU64,
    /// Builds each session's server guard, if any.
    guard: Option<GuardFactory>,
}

impl std::fmt::Debug for DirectFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectFront")
            .field("config", &self.config)
            .field("guarded", &self.guard.is_some())
            .field("running", &self.running_sessions())
            .field("accepted", &self.accepted.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Front for DirectFront {
    fn admit(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let max = self.config.max_sessions;
        let Some(slot) = Slot::try_acquire(&self.running, max) else {
            tracing::info!(%peer, "all session slots in use: refusing a connection");
            let reply = HandshakeReply::refused(
                Refusal::Busy,
                format!("server busy: all {max} secure-session slots are in use; retry later"),
            );
            // Without blocking the acceptor: the frame fits the fresh socket's buffer, or is dropped.
            if let Err(e) = stream.set_nonblocking(true).and_then(|()| wire::write_reply(&mut stream, &reply)) {
                tracing::debug!(%peer, error = %e, "could not send the busy refusal");
            }
            return;
        };
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let seed = self.seeds.next();
        let front = Arc::clone(&self);
        let spawned = std::thread::Builder::new().name("moat-secure-session".into()).spawn(move || {
            let started = Instant::now();
            match front.serve(stream, seed) {
                Ok((queries, traffic)) => tracing::info!(
                    %peer,
                    queries,
                    bytes = traffic.bytes_total(),
                    seconds = started.elapsed().as_secs_f64(),
                    "session done"
                ),
                Err(e) => tracing::warn!(%peer, error = %e, "session failed"),
            }
            drop(slot);
        });
        if let Err(e) = spawned {
            tracing::error!(%peer, error = %e, "cannot start a session thread; connection closed");
        }
    }

    fn running_sessions(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn exhausted(&self) -> bool {
        self.config.sessions.is_some_and(|n| self.accepted.load(Ordering::SeqCst) >= n)
    }
}

impl DirectFront {
    /// One session on an accepted connection: the protocol with the first wait for the client
    /// bounded by the handshake timeout, the later ones by the session timeout.
    fn serve(&self, stream: TcpStream, seed: moat_mpc::Seed) -> moat_mpc::Result<(u64, moat_mpc::transport::Counters)> {
        let DirectConfig { handshake_timeout, session_timeout, .. } = self.config;
        let config = ChannelConfig::default().with_timeout(session_timeout).with_connect_timeout(session_timeout);
        let control =
            stream.try_clone().map_err(|e| TransportError::from_io("cloning the socket", &e, session_timeout))?;
        let tcp = TcpChannel::from_stream(stream, config)?;
        let mut inner: Box<dyn Channel> = match self.config.link {
            Some(m) => Box::new(Shaped::new(tcp, m)),
            None => Box::new(tcp),
        };
        control
            .set_read_timeout(Some(handshake_timeout))
            .map_err(|e| TransportError::from_io("setting the handshake timeout", &e, handshake_timeout))?;
        // `control` (a handle on the same socket) restores the session timeout after the
        // first message.
        let mut ch = FirstRecv::new(&mut *inner, move |received: Result<Vec<u8>, TransportError>| {
            control
                .set_read_timeout(Some(session_timeout))
                .map_err(|e| TransportError::from_io("restoring the session timeout", &e, session_timeout))?;
            received
        });
        let queries = match &self.guard {
            Some(build) => self.model.serve_guarded(&mut ch, seed, &self.config.options, &mut *build())?,
            None => self.model.serve_with(&mut ch, seed, &self.config.options)?,
        };
        Ok((queries, ch.stats().total()))
    }
}

/// The front of `moat serve`'s session port: token holders admitted over HTTP.
#[derive(Debug)]
struct TokenFront {
    state: SharedState,
    service: Arc<SecureService>,
    silent: Arc<crate::idle::SilentSockets>,
}

impl Front for TokenFront {
    fn admit(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        admit_connection(stream, peer, &self.state, &self.service, &self.silent);
    }

    fn tick(&self) {
        sweep_expired(&self.state, &self.service);
    }

    fn running_sessions(&self) -> usize {
        self.service.running_sessions()
    }
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
