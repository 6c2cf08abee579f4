//! Secure (two-party) inference against a moat server: the server never sees the input, the
//! client learns the label.
//!
//! A session is asked for over HTTP with the API key ([`SecureClient::admit_model`],
//! [`SecureClient::admit_task`]), which charges the key's budget for the queries up front and
//! answers with a one-use token and the session port's address ([`Admission`]). The client then
//! connects there, presents the token (`moat-session/1`, see [`moat_wire::session`]) and
//! runs moat-mpc's `moat-2pc/3` protocol on the same connection ([`SecureSession`]). Queries
//! beyond the grant are refused locally; a server cuts off a client that tries anyway.
//!
//! This is the one route to a secure session: [`SecureSession`] also opens on a tokenless
//! `moat secure server` ([`SecureSession::connect_direct`], whose only frame other than the
//! hello is a `busy` refusal) and on any [`Channel`] ([`SecureSession::start`], e.g. in-process
//! tests); [`RenewingSession`] admits a new session whenever a grant is used up.
//!
//! The [`Seed`] of [`SecureClient::connect`] (256 bits) drives the client's keys, shares and OT
//! choices: **whoever knows it can decrypt the client's input**, so draw it with
//! [`Seed::from_os`] (fixed seeds, [`Seed::insecure_from_u64`], are for reproducible experiments).
//!
//! ```no_run
//! use moat_client::{HttpClient, Seed, SecureClient, SessionRequest};
//!
//! let http = HttpClient::new("http://127.0.0.1:8000")?.with_api_key("k-123");
//! let client = SecureClient::new(http);
//! let admission = client.admit_model("lenet5", None, &SessionRequest::queries(2))?;
//! let mut session = client.connect(&admission, Seed::from_os()?)?;
//! let image = vec![0.0f32; 28 * 28];
//! println!("label {}", session.infer(&image)?);
//! let stats = session.close()?;
//! println!("{} bytes sent, {} received", stats.bytes_sent, stats.bytes_received);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use moat_mpc::engine::{ClientBehaviour, ClientSession, Honest, Reveal, Revealed};
use moat_mpc::transport::first::FirstRecv;
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig, Stats, TransportError};
use moat_mpc::{MpcError, Seed};
use moat_nn::QuantizedGraph;
use moat_wire::AdmissionRequest;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ClientError;
use crate::http::{HttpClient, OipTarget, safe_segment};

/// The two-party protocol this client speaks.
pub const PROTOCOL: &str = moat_mpc::engine::real::PROTOCOL;

pub use moat_wire::{Admission, AdmissionDetails, HandshakeReply, Refusal, SessionToken};

/// What to ask the server for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionRequest {
    /// Queries to be granted (the server's default is 1).
    pub queries: Option<u64>,
    /// Request parameters, e.g. a task's `min_accuracy` and `max_latency_ms`.
    pub parameters: Map<String, Value>,
    /// Request id, echoed back.
    pub id: Option<String>,
    /// What each query may reveal (the server's default: the label). A server whose policy
    /// allows less refuses the admission (403) without charging.
    pub output: Option<Reveal>,
}

impl SessionRequest {
    /// A session of `n` queries.
    pub fn queries(n: u64) -> Self {
        Self { queries: Some(n), ..Self::default() }
    }

    /// Sets a task's spec (each bound optional).
    pub fn with_spec(mut self, min_accuracy: Option<f64>, max_latency_ms: Option<f64>) -> Self {
        crate::oip::insert_spec(&mut self.parameters, min_accuracy, max_latency_ms);
        self
    }

    /// Asks for sessions whose queries may reveal `output`.
    pub fn with_output(mut self, output: Reveal) -> Self {
        self.output = Some(output);
        self
    }

    /// Sets one request parameter.
    pub fn with_parameter(mut self, key: impl Into<String>, value: Value) -> Self {
        self.parameters.insert(key.into(), value);
        self
    }

    fn body(&self) -> AdmissionRequest {
        AdmissionRequest {
            id: self.id.clone(),
            queries: self.queries,
            output: self.output.map(|o| o.to_string()),
            parameters: (!self.parameters.is_empty()).then(|| self.parameters.clone()),
        }
    }
}

/// Traffic and time of a session, from the client's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SessionStats {
    /// Queries answered.
    pub queries: u64,
    /// Bytes sent (frame headers included; the token handshake included).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes both ways of connecting, the handshake and the protocol setup.
    pub setup_bytes: u64,
    /// Connecting, handshake and protocol setup (base OTs, HE keys), seconds.
    pub setup_seconds: f64,
    /// Time in queries, seconds.
    pub query_seconds: f64,
}

/// Secure inference against one server.
#[derive(Debug, Clone)]
pub struct SecureClient {
    http: HttpClient,
    timeout: Duration,
}

/// The protocol's errors as client errors.
fn from_mpc(e: MpcError) -> ClientError {
    match e {
        MpcError::Transport(t) => ClientError::Transport(format!("secure session: {t}")),
        MpcError::InvalidArgument { .. } => ClientError::Invalid(e.to_string()),
        other => ClientError::Protocol(other.to_string()),
    }
}

fn from_transport(e: TransportError) -> ClientError {
    ClientError::Transport(format!("secure session: {e}"))
}

/// The address to dial: `address`, except that an unspecified IP (a server bound to `0.0.0.0`
/// without an advertised address) is replaced by the HTTP URL's host.
fn dial_address(base_url: &str, address: &str) -> String {
    match address.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or(rest);
            let host = match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
                None => authority.split(':').next().map(str::to_string),
            };
            match host.filter(|h| !h.is_empty()) {
                Some(h) => format!("{h}:{}", a.port()),
                None => address.to_string(),
            }
        }
        _ => address.to_string(),
    }
}

impl SecureClient {
    /// A client using `http` (its URL and API key) for admission; 60 s bound on every wait.
    pub fn new(http: HttpClient) -> Self {
        Self { http, timeout: Duration::from_secs(60) }
    }

    /// Bounds connecting and every wait for the server during a session by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The HTTP client used for admission.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    fn admit_at(&self, path: &str, request: &SessionRequest) -> Result<Admission, ClientError> {
        let body =
            serde_json::to_value(request.body()).map_err(|e| ClientError::Invalid(format!("session request: {e}")))?;
        let answer = self.http.post_json(path, &body)?;
        let admission: Admission = serde_json::from_value(answer)
            .map_err(|e| ClientError::Protocol(format!("bad secure-session admission: {e}")))?;
        if admission.protocol != PROTOCOL {
            return Err(ClientError::Protocol(format!(
                "the server offers protocol '{}', this client speaks '{PROTOCOL}'",
                admission.protocol
            )));
        }
        Ok(admission)
    }

    /// `POST /v2/models/{model}[/versions/{version}]/secure` (a task's, when no model has the
    /// name).
    pub fn admit_model(
        &self,
        model: &str,
        version: Option<&str>,
        request: &SessionRequest,
    ) -> Result<Admission, ClientError> {
        self.admit_at(&format!("{}/secure", HttpClient::model_path(model, version)?), request)
    }

    /// `POST /v2/tasks/{task}/secure` (set the spec with [`SessionRequest::with_spec`]).
    pub fn admit_task(&self, task: &str, request: &SessionRequest) -> Result<Admission, ClientError> {
        if !safe_segment(task) {
            return Err(ClientError::Invalid(format!("'{task}' is not a valid task name")));
        }
        self.admit_at(&format!("/v2/tasks/{task}/secure"), request)
    }

    /// Connects to the session port and presents the token; returns the channel, ready for the
    /// protocol (for callers driving [`ClientSession`] themselves, e.g. with a tamper hook).
    pub fn open_channel(&self, admission: &Admission) -> Result<TcpChannel, ClientError> {
        let address = dial_address(self.http.base_url(), &admission.address);
        let config = ChannelConfig::default().with_timeout(self.timeout).with_connect_timeout(self.timeout);
        let mut ch = match (self.http.tls(), crate::tls::url_host(self.http.base_url())) {
            (Some(tls), Some(host)) => crate::tls::connect_channel(&address, &host, tls, config)?,
            _ => TcpChannel::connect(address.as_str(), config)
                .map_err(|e| ClientError::Transport(format!("connecting to the session port {address}: {e}")))?,
        };
        ch.send(admission.session.as_str().as_bytes()).map_err(from_transport)?;
        let bytes = ch.recv().map_err(from_transport)?;
        let reply = HandshakeReply::from_frame(&bytes)
            .map_err(|e| ClientError::Protocol(format!("bad handshake reply: {e}")))?;
        reply.into_result().map_err(|(reason, message)| ClientError::Refused { reason, message })?;
        Ok(ch)
    }

    /// Opens the admitted session: connect, token, protocol setup. `seed` drives the client's
    /// keys and randomness ([`Seed::from_os`]; see the module docs).
    pub fn connect(&self, admission: &Admission, seed: Seed) -> Result<SecureSession, ClientError> {
        let started = Instant::now();
        let ch = self.open_channel(admission)?;
        SecureSession::start_at(Box::new(ch), seed, Some(admission.queries), started)
    }
}

/// Where each session's [`Seed`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionSeeds {
    /// 256 bits from the operating system per session (private).
    Os,
    /// Session `i`, opened after `q` queries, uses `Seed::insecure_from_u64(n + q)`: **not
    /// private**, for reproducible experiments.
    InsecureFrom(u64),
}

impl SessionSeeds {
    fn seed(self, queries_so_far: u64) -> Result<Seed, ClientError> {
        match self {
            SessionSeeds::Os => Seed::from_os().map_err(|e| ClientError::Invalid(format!("session seed: {e}"))),
            SessionSeeds::InsecureFrom(n) => Ok(Seed::insecure_from_u64(n.wrapping_add(queries_so_far))),
        }
    }
}

/// Secure sessions with a service, one after the other: a new session (charged to the key) is
/// admitted whenever the last one's grant is used up, until the service refuses. What an
/// attack or a long experiment that outlives one grant uses.
#[derive(Debug)]
pub struct RenewingSession {
    client: SecureClient,
    target: OipTarget,
    request: SessionRequest,
    seeds: SessionSeeds,
    session: Option<SecureSession>,
    queries: u64,
    sessions: u64,
}

impl RenewingSession {
    /// Admits and opens the first session of `request` (its `queries` per session) at
    /// `target`.
    pub fn open(
        client: SecureClient,
        target: OipTarget,
        request: SessionRequest,
        seeds: SessionSeeds,
    ) -> Result<Self, ClientError> {
        let mut renewing = Self { client, target, request, seeds, session: None, queries: 0, sessions: 0 };
        renewing.current()?;
        Ok(renewing)
    }

    /// The open session, renewed first when its grant is used up.
    pub fn current(&mut self) -> Result<&mut SecureSession, ClientError> {
        if self.session.as_ref().is_none_or(|s| s.remaining() == 0) {
            self.close_current();
            let admission = match &self.target {
                OipTarget::Model { name, version } => {
                    self.client.admit_model(name, version.as_deref(), &self.request)?
                }
                OipTarget::Task { name } => self.client.admit_task(name, &self.request)?,
            };
            let seed = self.seeds.seed(self.queries)?;
            self.session = Some(self.client.connect(&admission, seed)?);
            self.sessions += 1;
        }
        self.session.as_mut().ok_or_else(|| ClientError::Protocol("no session".into()))
    }

    /// One query of an encoded input on the current session (see
    /// [`SecureSession::infer_encoded_with`]).
    pub fn infer_encoded_with(
        &mut self,
        input: Vec<u64>,
        reveal: Reveal,
        behaviour: &mut dyn ClientBehaviour,
    ) -> Result<Revealed, ClientError> {
        let answer = self.current()?.infer_encoded_with(input, reveal, behaviour)?;
        self.queries += 1;
        Ok(answer)
    }

    /// The served model's public architecture (from the first session's hello).
    pub fn architecture(&self) -> Option<&QuantizedGraph> {
        self.session.as_ref().map(|s| s.protocol().architecture())
    }

    /// Queries answered over all sessions.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// Sessions opened.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    fn close_current(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = session.close()
        {
            // The grant was used up: the session's end only decides a refund.
            tracing::warn!(error = %e, "closing a used-up secure session");
        }
    }

    /// Ends the open session (its unused queries go back to the key).
    pub fn close(mut self) -> Result<(), ClientError> {
        match self.session.take() {
            Some(session) => session.close().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// An open secure session: the client half of `moat-2pc/3` on one connection, admitted by a
/// service ([`SecureClient::connect`]), opened on a tokenless `moat secure server`
/// ([`SecureSession::connect_direct`]) or on any channel ([`SecureSession::start`]).
pub struct SecureSession {
    ch: Box<dyn Channel + Send>,
    session: ClientSession,
    granted: u64,
    used: u64,
    setup: Duration,
    setup_bytes: u64,
    queries_time: Duration,
}
impl fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureSession")
            .field("granted", &self.granted)
            .field("used", &self.used)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SecureSession {
    /// Runs the protocol's setup on `channel` (past any handshake); `granted` bounds the
    /// queries (`None`: as many as the server answers).
    pub fn start(channel: Box<dyn Channel + Send>, seed: Seed, granted: Option<u64>) -> Result<Self, ClientError> {
        Self::start_at(channel, seed, granted, Instant::now())
    }

    fn start_at(
        mut ch: Box<dyn Channel + Send>,
        seed: Seed,
        granted: Option<u64>,
        started: Instant,
    ) -> Result<Self, ClientError> {
        let session = ClientSession::connect(&mut *ch, seed).map_err(from_mpc)?;
        let setup_bytes = ch.stats().total().bytes_total();
        Ok(SecureSession {
            ch,
            session,
            granted: granted.unwrap_or(u64::MAX),
            used: 0,
            setup: started.elapsed(),
            setup_bytes,
            queries_time: Duration::ZERO,
        })
    }

    /// Connects to a tokenless `moat secure server` at `address` and runs the setup. A full
    /// server sends a `busy` [`HandshakeReply`] instead of its hello: that is
    /// [`ClientError::Refused`] with [`Refusal::Busy`].
    pub fn connect_direct(address: &str, config: ChannelConfig, seed: Seed) -> Result<Self, ClientError> {
        let started = Instant::now();
        let mut ch = TcpChannel::connect(address, config)
            .map_err(|e| ClientError::Transport(format!("connecting to {address}: {e}")))?;
        // A full server sends a refusal instead of its hello: keep it, end the setup.
        let mut refusal = None;
        let connected = {
            let mut first = FirstRecv::new(&mut ch, |received: Result<Vec<u8>, TransportError>| {
                let bytes = received?;
                match HandshakeReply::from_frame(&bytes) {
                    Ok(reply) if !reply.accepted => {
                        refusal = Some(reply);
                        Err(TransportError::Io {
                            context: "the server refused the session",
                            kind: std::io::ErrorKind::ConnectionRefused,
                            message: "refused instead of the hello".into(),
                        })
                    }
                    _ => Ok(bytes),
                }
            });
            ClientSession::connect(&mut first, seed)
        };
        if let Some(reply) = refusal {
            let (reason, message) = reply.into_result().err().unwrap_or((Refusal::Unrecognised, String::new()));
            return Err(ClientError::Refused { reason, message });
        }
        let session = connected.map_err(from_mpc)?;
        let setup_bytes = ch.stats().total().bytes_total();
        Ok(SecureSession {
            ch: Box::new(ch),
            session,
            granted: u64::MAX,
            used: 0,
            setup: started.elapsed(),
            setup_bytes,
            queries_time: Duration::ZERO,
        })
    }

    /// One private inference: the predicted label.
    pub fn infer(&mut self, input: &[f32]) -> Result<usize, ClientError> {
        match self.infer_with(input, Reveal::Label, &mut Honest)? {
            Revealed::Label(label) => Ok(label),
            Revealed::Logits(_) | Revealed::Probabilities(_) => {
                Err(ClientError::Protocol("asked for a label, got a class vector".into()))
            }
        }
    }

    /// One private inference revealing `reveal`, with the client's `behaviour` at the
    /// protocol's tamper points ([`Honest`] for an honest client).
    pub fn infer_with(
        &mut self,
        input: &[f32],
        reveal: Reveal,
        behaviour: &mut dyn ClientBehaviour,
    ) -> Result<Revealed, ClientError> {
        self.check_input(input.len())?;
        let encoded =
            self.session.architecture().encode_input(input).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.infer_encoded_with(encoded, reveal, behaviour)
    }

    /// [`Self::infer_with`] on an input already encoded in the ring (scale 2^f): what an
    /// attack that sets exact ring values needs.
    pub fn infer_encoded_with(
        &mut self,
        input: Vec<u64>,
        reveal: Reveal,
        behaviour: &mut dyn ClientBehaviour,
    ) -> Result<Revealed, ClientError> {
        if self.used >= self.granted {
            return Err(ClientError::Invalid(format!(
                "the session was granted {} queries and has used them: open another session",
                self.granted
            )));
        }
        self.check_input(input.len())?;
        let started = Instant::now();
        let answer = self.session.infer_encoded(&mut *self.ch, input, reveal, behaviour).map_err(from_mpc);
        let took = started.elapsed();
        self.queries_time += took;
        tracing::debug!(query = self.used, seconds = took.as_secs_f64(), "secure query");
        let answer = answer?;
        self.used += 1;
        Ok(answer)
    }

    fn check_input(&self, len: usize) -> Result<(), ClientError> {
        if len != self.input_len() {
            return Err(ClientError::Invalid(format!(
                "the input has {len} values, the model takes {} (shape {:?})",
                self.input_len(),
                self.input_shape()
            )));
        }
        Ok(())
    }

    /// The per-sample input shape of the served model (from the protocol's hello).
    pub fn input_shape(&self) -> &[usize] {
        self.session.architecture().graph().input_shape()
    }

    /// Values per sample.
    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// The server's commitment to the served model's weights, from the protocol's hello
    /// (`None` from a server that gives none). One session is one committed model.
    pub fn model_commitment(&self) -> Option<&str> {
        self.session.hello().model_commitment.as_deref()
    }

    /// Queries granted.
    pub fn granted(&self) -> u64 {
        self.granted
    }

    /// Queries left (`u64::MAX`-bounded for a session without a grant).
    pub fn remaining(&self) -> u64 {
        self.granted - self.used
    }

    /// The channel's traffic counters, per phase.
    pub fn traffic(&self) -> &Stats {
        self.ch.stats()
    }

    /// The underlying protocol session (architecture, per-node timings of the last query).
    pub fn protocol(&self) -> &ClientSession {
        &self.session
    }

    /// Traffic and time so far.
    pub fn stats(&self) -> SessionStats {
        let total = self.ch.stats().total();
        SessionStats {
            queries: self.used,
            bytes_sent: total.bytes_sent,
            bytes_received: total.bytes_received,
            setup_bytes: self.setup_bytes,
            setup_seconds: self.setup.as_secs_f64(),
            query_seconds: self.queries_time.as_secs_f64(),
        }
    }

    /// Ends the session (unused queries go back to the key's budget).
    pub fn close(self) -> Result<SessionStats, ClientError> {
        let mut stats = self.stats();
        let SecureSession { mut ch, session, .. } = self;
        session.close(&mut *ch).map_err(from_mpc)?;
        let total = ch.stats().total();
        (stats.bytes_sent, stats.bytes_received) = (total.bytes_sent, total.bytes_received);
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dials_the_advertised_address_or_the_url_host_for_an_unspecified_ip() {
        assert_eq!(dial_address("http://moat.example:8000", "10.0.0.7:8001"), "10.0.0.7:8001");
        assert_eq!(dial_address("http://moat.example:8000", "moat-serve:8001"), "moat-serve:8001");
        assert_eq!(dial_address("http://moat.example:8000/", "0.0.0.0:8001"), "moat.example:8001");
        assert_eq!(dial_address("https://[::1]:8000", "[::]:8001"), "[::1]:8001");
        assert_eq!(dial_address("http://10.1.2.3", "0.0.0.0:9"), "10.1.2.3:9");
    }

    #[test]
    fn requests_carry_queries_spec_and_id_and_admissions_hide_the_token() -> Result<(), serde_json::Error> {
        let mut request = SessionRequest::queries(3).with_spec(Some(90.0), None);
        request.id = Some("s-1".into());
        let body = serde_json::to_value(request.body())?;
        assert_eq!(body, json!({"queries": 3, "parameters": {"min_accuracy": 90.0}, "id": "s-1"}));
        assert_eq!(serde_json::to_value(SessionRequest::default().body())?, json!({}));
        let admission: Admission = serde_json::from_value(json!({
            "session": "00112233445566778899aabbccddeeff", "address": "127.0.0.1:8001", "queries": 3,
            "expires_in_ms": 30000, "protocol": PROTOCOL, "model_name": "lenet5", "model_version": "1",
        }))?;
        assert!(!format!("{admission:?}").contains("0011"), "the token must not be printed");
        assert_eq!(admission.served_by().as_deref(), Some("lenet5/1"));
        Ok(())
    }

    #[test]
    fn a_closed_port_is_a_transport_error() -> Result<(), Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let client = SecureClient::new(HttpClient::new("http://127.0.0.1:1")?).with_timeout(Duration::from_millis(300));
        let admission: Admission = serde_json::from_value(json!({
            "session": "00112233445566778899aabbccddeeff", "address": format!("127.0.0.1:{port}"), "queries": 1,
            "expires_in_ms": 30000, "protocol": PROTOCOL,
        }))?;
        assert!(matches!(client.connect(&admission, Seed::insecure_from_u64(1)), Err(ClientError::Transport(_))));
        Ok(())
    }
}
