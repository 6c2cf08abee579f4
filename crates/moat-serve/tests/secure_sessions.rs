//! Secure sessions at the library level: admission through the router (`oneshot`), sessions
//! over a real loopback session port with moat-mpc's client, on a repository of small MLPs.
//! Labels are checked against the plaintext fixed-point executor; tokens, budgets, query limits,
//! slots and expiry against what the server records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use moat_mpc::Seed;
use moat_mpc::engine::{ClientSession, Honest, Reveal, Revealed};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};
use moat_nn::{FixedPoint, QuantizedGraph, zoo};
use moat_serve::keys::KeyStore;
use moat_serve::secure::{HandshakeReply, Refusal, SecureListener, SecureService};
use moat_serve::{Limits, LoadOptions, Repository, SecureConfig, ServerState, TaskDefaults, TaskTable};
use serde_json::{Value, json};
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

struct Fixture {
    dir: tempfile::TempDir,
    state: Arc<ServerState>,
    app: Router,
    runtime: tokio::runtime::Runtime,
    listener: Option<SecureListener>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            l.shutdown(Duration::from_secs(5));
        }
    }
}

fn model_path(root: &Path, name: &str) -> PathBuf {
    root.join(name).join("1/model.onnx")
}

/// Models `small` (task digits, not disclosed) and `wide` (task digits-open, disclosed).
fn fixture(secure: SecureConfig) -> Result<Fixture, BoxError> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    for (i, (name, arch, task)) in [("small", "mlp:8", "digits"), ("wide", "mlp:32", "digits-open")].iter().enumerate()
    {
        std::fs::create_dir_all(root.join(name).join("1"))?;
        let graph = zoo::build(&arch.parse()?, &[1, 8, 8], 10, i as u64 + 3)?;
        moat_nn::onnx::save_onnx(&graph, &model_path(&root, name))?;
        let config = json!({"task": task, "declared": {"accuracy": 90.0 + i as f64, "latency_ms": 1.0},
                            "latency": {"warmup": 1, "runs": 2}});
        std::fs::write(root.join(name).join("config.json"), config.to_string())?;
    }
    std::fs::write(root.join("tasks.json"), json!({"digits-open": {"disclose_model": true}}).to_string())?;
    let repo = Repository::open(&root, LoadOptions { warmup: 1, runs: 2, ..LoadOptions::default() })?;
    for (name, result) in repo.load_all()? {
        result.map_err(|e| format!("{name}: {e}"))?;
    }
    let tasks = TaskTable::load(&root, TaskDefaults::default())?;
    let keys_path = dir.path().join("keys.json");
    std::fs::write(
        &keys_path,
        json!({"alice-key": {"name": "alice", "budget": 6}, "ops-key": {"name": "ops", "admin": true}}).to_string(),
    )?;
    let keys = Some(KeyStore::load(&keys_path)?);
    let audit = Some(moat_serve::audit::AuditLog::open(&dir.path().join("audit.jsonl"))?);
    let limits = Limits { inference_threads: 1, ..Limits::default() };
    let state = Arc::new(ServerState::from_parts(repo, tasks, keys, audit, limits, Some(7)));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?;
    let service = Arc::new(SecureService::new(secure, port.local_addr()?)?);
    state.enable_secure(service.clone())?;
    let listener = SecureListener::spawn(port, state.clone(), service)?;
    let app = moat_serve::app_with_extensions(state.clone(), moat_serve::http::secure_routes());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    Ok(Fixture { dir, state, app, runtime, listener: Some(listener) })
}

fn config() -> SecureConfig {
    SecureConfig {
        max_sessions: 1,
        insecure_seed: Some(11),
        session_timeout: Duration::from_secs(20),
        ..SecureConfig::default()
    }
}

impl Fixture {
    fn post(&self, uri: &str, key: &str, body: &Value) -> Result<(StatusCode, Value), BoxError> {
        let request = Request::builder()
            .method("POST")
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))?;
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
            Ok((status, serde_json::from_slice(&bytes)?))
        })
    }

    fn admit(&self, uri: &str, body: &Value) -> Result<Value, BoxError> {
        let (status, answer) = self.post(uri, "alice-key", body)?;
        if status != StatusCode::OK {
            return Err(format!("admission {uri}: {status} {answer}").into());
        }
        Ok(answer)
    }

    fn used(&self) -> u64 {
        let keys = self.state.keys.as_ref().map(|k| k.usage()).unwrap_or_default();
        keys.iter().find(|u| u.name == "alice").map_or(0, |u| u.used)
    }

    fn audit(&self) -> Result<Vec<Value>, BoxError> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl"))?;
        Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
    }

    /// Sessions that ended with `outcome` and have released their slot (the slot goes last,
    /// after the metrics and the audit line).
    fn sessions(&self, outcome: &str) -> f64 {
        let running = self.state.secure().map_or(0, |s| s.running_sessions());
        if running > 0 { -1.0 } else { self.state.metrics.secure_sessions.get(&[outcome]) }
    }

    /// Waits until `ready` holds (sessions end on their own threads).
    fn wait_for(&self, what: &str, ready: impl Fn(&Self) -> bool) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready(self) {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// Connects, presents the token, returns the reply and the channel.
fn handshake(answer: &Value) -> Result<(HandshakeReply, TcpChannel), BoxError> {
    let address = answer["address"].as_str().ok_or("address")?;
    let token = answer["session"].as_str().ok_or("session")?;
    handshake_raw(address, token.as_bytes())
}

fn handshake_raw(address: &str, token: &[u8]) -> Result<(HandshakeReply, TcpChannel), BoxError> {
    let config = ChannelConfig::default().with_timeout(Duration::from_secs(20));
    let mut ch = TcpChannel::connect(address, config)?;
    ch.send(token)?;
    let reply: HandshakeReply = serde_json::from_slice(&ch.recv()?)?;
    Ok((reply, ch))
}

fn digits(n: usize) -> Result<Vec<Vec<f32>>, BoxError> {
    let test = moat_nn::data::load("digits", None, 0)?.test;
    Ok((0..n).map(|i| test.sample(i).to_vec()).collect())
}

fn fixed_point_label(model: &Path, sample: &[f32]) -> Result<usize, BoxError> {
    let fixed = FixedPoint::default();
    let q = QuantizedGraph::new(&moat_nn::onnx::load_onnx(model)?, fixed)?;
    moat_nn::exec::argmax_ring(fixed, &q.logits_encoded(sample)?).ok_or_else(|| "no label".into())
}

#[test]
fn a_session_answers_what_the_fixed_point_model_answers_and_refunds_unused_queries() -> TestResult {
    let f = fixture(config())?;
    let samples = digits(3)?;
    let answer = f.admit("/v2/models/small/secure", &json!({"id": "s-1", "queries": 4}))?;
    assert_eq!((answer["queries"].as_u64(), answer["protocol"].as_str()), (Some(4), Some("moat-2pc/3")));
    assert_eq!((answer["model_name"].as_str(), answer["model_version"].as_str()), (Some("small"), Some("1")));
    assert_eq!((answer["id"].as_str(), answer["expires_in_ms"].as_u64()), (Some("s-1"), Some(30_000)));
    assert_eq!(answer["session"].as_str().map(str::len), Some(32));
    assert_eq!(f.used(), 4, "charged up front");

    let (reply, mut ch) = handshake(&answer)?;
    assert!(reply.accepted, "{reply:?}");
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(5))?;
    for sample in &samples {
        let Revealed::Label(label) = session.infer(&mut ch, sample, Reveal::Label, &mut Honest)? else {
            return Err("expected a label".into());
        };
        assert_eq!(label, fixed_point_label(&model_path(&f.dir.path().join("repo"), "small"), sample)?);
    }
    session.close(&mut ch)?;
    f.wait_for("the session to end", |f| f.sessions("completed") == 1.0)?;
    assert_eq!(f.used(), 3, "the unused query is refunded");
    assert_eq!(f.state.metrics.inference_samples.get(&["small", "1"]), 3.0);
    assert!(f.state.metrics.secure_session_bytes.get(&["in"]) > 10_000.0);
    assert!(f.state.metrics.secure_session_bytes.get(&["out"]) > 10_000.0);

    // The token was good for one connection.
    let (reply, _) = handshake(&answer)?;
    assert_eq!((reply.accepted, reply.reason.map(Refusal::as_str)), (false, Some("unknown_token")));

    let audit = f.audit()?;
    let admission = &audit[0];
    assert_eq!((admission["status"].as_u64(), admission["secure"]["event"].as_str()), (Some(200), Some("admission")));
    let end = &audit[1];
    assert_eq!(end["key"], "alice");
    assert_eq!(end["secure"]["event"], "session");
    assert_eq!(end["secure"]["outcome"], "completed");
    assert_eq!((end["secure"]["granted"].as_u64(), end["secure"]["answered"].as_u64()), (Some(4), Some(3)));
    assert_eq!((end["batch"].as_u64(), end["status"].as_u64()), (Some(3), Some(200)));
    Ok(())
}

#[test]
fn tasks_select_and_disclose_like_inference_and_bad_requests_are_refused() -> TestResult {
    let f = fixture(config())?;
    let hidden = f.admit("/v2/tasks/digits/secure", &json!({"parameters": {"min_accuracy": 80}}))?;
    assert!(hidden.get("model_name").is_none() && hidden.get("model_version").is_none(), "{hidden}");
    assert_eq!(hidden["parameters"], json!({"task": "digits"}));
    assert_eq!(hidden["queries"], 1, "one query by default");
    let open = f.admit("/v2/models/digits-open/secure", &json!({"parameters": {"max_latency_ms": 5}}))?;
    assert_eq!((open["model_name"].as_str(), open["parameters"]["spec_met"].as_bool()), (Some("wide"), Some(true)));
    assert_eq!(f.state.metrics.selections.get(&["digits", "small"]), 1.0);

    let refused = |uri: &str, body: Value, status: StatusCode, needle: &str| -> TestResult {
        let (got, answer) = f.post(uri, "alice-key", &body)?;
        assert_eq!(got, status, "{uri}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{uri}: '{message}' lacks '{needle}'");
        Ok(())
    };
    refused("/v2/models/small/secure", json!({"queries": 0}), StatusCode::BAD_REQUEST, "between 1 and 1000")?;
    refused("/v2/models/small/secure", json!({"queries": 1001}), StatusCode::BAD_REQUEST, "between 1 and 1000")?;
    refused("/v2/models/small/secure", json!({"querys": 1}), StatusCode::BAD_REQUEST, "unknown field")?;
    refused("/v2/models/nope/secure", json!({}), StatusCode::NOT_FOUND, "unknown model")?;
    refused("/v2/models/small/versions/9/secure", json!({}), StatusCode::NOT_FOUND, "no version '9'")?;
    refused(
        "/v2/tasks/digits/secure",
        json!({"parameters": {"min_accuracy": "x"}}),
        StatusCode::BAD_REQUEST,
        "number",
    )?;
    // Budget 6: two granted so far; 5 more would exceed it.
    refused("/v2/models/small/secure", json!({"queries": 5}), StatusCode::TOO_MANY_REQUESTS, "budget exhausted")?;
    assert_eq!(f.used(), 2);
    let (status, _) = f.post("/v2/models/small/secure", "mallory", &json!({}))?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[test]
fn limits_slots_expiry_and_garbage_are_enforced_and_the_port_keeps_serving() -> TestResult {
    let f = fixture(SecureConfig { token_ttl: Duration::from_secs(3), ..config() })?;
    let samples = digits(2)?;

    // Garbage: an oversized frame, then a well-formed but unknown token.
    let address = f.state.secure().ok_or("secure")?.local_addr().to_string();
    let (reply, _) = handshake_raw(&address, &[b'x'; 1000])?;
    assert_eq!(reply.reason.map(Refusal::as_str), Some("bad_handshake"));
    let (reply, _) = handshake_raw(&address, b"00112233445566778899aabbccddeeff")?;
    assert_eq!(reply.reason.map(Refusal::as_str), Some("unknown_token"));

    // One query granted; the second is cut off by the server.
    let one = f.admit("/v2/models/small/secure", &json!({"queries": 1}))?;
    let (reply, mut ch) = handshake(&one)?;
    assert!(reply.accepted);
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(9))?;
    session.infer(&mut ch, &samples[0], Reveal::Label, &mut Honest)?;
    // While this session holds the only slot, another client is told to retry.
    let waiting = f.admit("/v2/models/small/secure", &json!({"queries": 1}))?;
    let (busy, _) = handshake(&waiting)?;
    assert_eq!(busy.reason.map(Refusal::as_str), Some("busy"), "{busy:?}");
    assert!(session.infer(&mut ch, &samples[1], Reveal::Label, &mut Honest).is_err(), "a query beyond the grant");
    f.wait_for("the cut-off session to end", |f| f.sessions("aborted") == 1.0)?;
    assert_eq!(f.state.metrics.rejections.get(&["secure_query_limit"]), 1.0);
    assert_eq!(f.state.metrics.rejections.get(&["secure_busy"]), 1.0);
    assert_eq!(f.used(), 2, "the cut-off session used its grant; the waiting one is charged");

    // The busy client's token survived: it now gets the slot.
    let (reply, mut ch) = handshake(&waiting)?;
    assert!(reply.accepted, "{reply:?}");
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(10))?;
    session.infer(&mut ch, &samples[1], Reveal::Label, &mut Honest)?;
    session.close(&mut ch)?;
    f.wait_for("the second session to end", |f| f.sessions("completed") == 1.0)?;

    // A token left unused expires and is refunded (swept by the acceptor, or refused on use).
    let late = f.admit("/v2/models/small/secure", &json!({"queries": 3}))?;
    assert_eq!(f.used(), 5);
    std::thread::sleep(Duration::from_millis(3200));
    let (reply, _) = handshake(&late)?;
    assert!(
        !reply.accepted && matches!(reply.reason.map(Refusal::as_str), Some("expired" | "unknown_token")),
        "{reply:?}"
    );
    f.wait_for("the refund of the expired token", |f| f.used() == 2)?;
    let audit = f.audit()?;
    let outcomes: Vec<(&str, Option<&str>, u64)> = audit
        .iter()
        .map(|l| {
            (
                l["secure"]["event"].as_str().unwrap_or(""),
                l["secure"]["outcome"].as_str(),
                l["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(outcomes.contains(&("session", Some("limit"), 429)), "{outcomes:?}");
    assert!(outcomes.contains(&("session", Some("expired"), 410)), "{outcomes:?}");
    Ok(())
}

#[test]
fn outputs_beyond_the_policy_are_refused_at_admission_and_in_the_session_and_nothing_is_charged() -> TestResult {
    let f = fixture(SecureConfig { output: Reveal::Label, ..config() })?;
    let samples = digits(1)?;
    let refused = |body: Value, status: StatusCode, needle: &str| -> TestResult {
        let (got, answer) = f.post("/v2/models/small/secure", "alice-key", &body)?;
        assert_eq!(got, status, "{answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "'{message}' lacks '{needle}'");
        Ok(())
    };
    refused(json!({"queries": 2, "output": "logits"}), StatusCode::FORBIDDEN, "reveals at most 'label'")?;
    refused(json!({"output": "top-3"}), StatusCode::BAD_REQUEST, "not supported yet")?;
    refused(json!({"output": "probabilities"}), StatusCode::FORBIDDEN, "reveals at most 'label'")?;
    refused(json!({"output": "softmax"}), StatusCode::BAD_REQUEST, "unknown output")?;
    assert_eq!(f.used(), 0, "nothing charged");
    assert_eq!(f.state.metrics.rejections.get(&["output_refused"]), 2.0);

    // A label session: the hello says so, and the client refuses logits before sending.
    let answer = f.admit("/v2/models/small/secure", &json!({"queries": 2}))?;
    assert_eq!(answer["output"], "label");
    let (reply, mut ch) = handshake(&answer)?;
    assert!(reply.accepted, "{reply:?}");
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(5))?;
    assert_eq!(session.hello().output, Reveal::Label);
    let err = session.infer(&mut ch, &samples[0], Reveal::Logits, &mut Honest).err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("output 'logits' refused: the server reveals at most 'label'"));
    session.infer(&mut ch, &samples[0], Reveal::Label, &mut Honest)?;
    session.close(&mut ch)?;
    f.wait_for("the session to end", |f| f.sessions("completed") == 1.0)?;
    assert_eq!(f.used(), 1, "the refused query is not charged");

    // Where the policy allows logits, a session granted logits reveals them.
    let g = fixture(config())?;
    let answer = g.admit("/v2/models/small/secure", &json!({"output": "logits"}))?;
    assert_eq!(answer["output"], "logits");
    let (_, mut ch) = handshake(&answer)?;
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(5))?;
    let got = session.infer(&mut ch, &samples[0], Reveal::Logits, &mut Honest)?;
    assert!(matches!(got, Revealed::Logits(ref v) if v.len() == 10), "{got:?}");
    session.close(&mut ch)?;
    Ok(())
}

#[test]
fn an_idle_session_is_ended_its_queries_refunded_and_its_slot_serves_the_next_client() -> TestResult {
    let f = fixture(SecureConfig { idle_timeout: Duration::from_millis(800), ..config() })?;
    let samples = digits(2)?;
    // A client takes the only slot, asks one query and goes quiet.
    let quiet = f.admit("/v2/models/small/secure", &json!({"queries": 3}))?;
    let (reply, mut quiet_ch) = handshake(&quiet)?;
    assert!(reply.accepted, "{reply:?}");
    let mut quiet_session = ClientSession::connect(&mut quiet_ch, Seed::insecure_from_u64(21))?;
    quiet_session.infer(&mut quiet_ch, &samples[0], Reveal::Label, &mut Honest)?;
    // While it holds the slot, a newcomer is refused with when to retry; its token stays valid.
    let next = f.admit("/v2/models/small/secure", &json!({"queries": 1}))?;
    let (reply, _) = handshake(&next)?;
    assert_eq!(reply.reason, Some(Refusal::Busy), "{reply:?}");
    assert!(reply.error.as_deref().is_some_and(|e| e.contains("retry after 1 s")), "{reply:?}");
    // The server ends the quiet session after its idle timeout and refunds its two unused
    // queries (4 charged at admission, 2 kept: one answered, one for the newcomer).
    f.wait_for("the idle session's refund", |f| f.used() == 2)?;
    let (reply, mut ch) = handshake(&next)?;
    assert!(reply.accepted, "{reply:?}");
    let mut session = ClientSession::connect(&mut ch, Seed::insecure_from_u64(22))?;
    session.infer(&mut ch, &samples[1], Reveal::Label, &mut Honest)?;
    session.close(&mut ch)?;
    assert!(quiet_session.infer(&mut quiet_ch, &samples[0], Reveal::Label, &mut Honest).is_err());
    f.wait_for("the second session to end", |f| f.sessions("completed") >= 1.0)?;
    let audit = f.audit()?;
    assert!(
        audit.iter().any(|l| l["secure"]["outcome"] == "idle" && l["status"] == 408),
        "no idle session in the audit: {audit:?}"
    );
    assert_eq!(f.used(), 2);
    Ok(())
}
