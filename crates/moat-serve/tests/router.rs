//! Every endpoint and every error of the HTTP API, driven through the router with `oneshot`
//! (no sockets): a repository of small MLPs with declared profiles, so task selection is exact.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use moat_nn::{FloatExecutor, zoo};
use moat_serve::keys::KeyStore;
use moat_serve::{Limits, LoadOptions, Repository, ServerState, TaskDefaults, TaskTable, app};
use serde_json::{Value, json};
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

/// name, architecture, declared accuracy %, declared latency ms.
const ZOO: [(&str, &str, f64, f64); 4] = [
    ("fast", "mlp:8", 90.0, 1.0),
    ("mid", "mlp:32", 95.0, 3.0),
    ("slow", "mlp:128", 98.0, 8.0),
    ("dominated", "mlp:8", 92.0, 9.0),
];

fn write_repo(root: &Path) -> TestResult {
    for (i, (name, arch, acc, lat)) in ZOO.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("1"))?;
        let graph = zoo::build(&arch.parse()?, &[1, 8, 8], 10, i as u64 + 1)?;
        moat_nn::onnx::save_onnx(&graph, &dir.join("1/model.onnx"))?;
        let config = json!({"task": "digits", "max_batch_size": 64,
                            "declared": {"accuracy": acc, "latency_ms": lat}, "latency": {"warmup": 1, "runs": 3}});
        std::fs::write(dir.join("config.json"), config.to_string())?;
    }
    // A second version of "mid".
    let graph = zoo::build(&"mlp:32".parse()?, &[1, 8, 8], 10, 77)?;
    std::fs::create_dir_all(root.join("mid/2"))?;
    moat_nn::onnx::save_onnx(&graph, &root.join("mid/2/model.onnx"))?;
    let tasks = json!({
        "digits-open": {"policy": "fastest", "disclose_model": true, "models": ["fast", "mid", "slow", "dominated"]},
    });
    std::fs::write(root.join("tasks.json"), tasks.to_string())?;
    Ok(())
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    app: Router,
    state: Arc<ServerState>,
}

fn fixture(limits: Limits, keys: Option<Value>, audit: bool) -> Result<Fixture, BoxError> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("repo");
    std::fs::create_dir_all(&root)?;
    write_repo(&root)?;
    let repo = Repository::open(&root, LoadOptions { warmup: 1, runs: 3, ..LoadOptions::default() })?;
    for (name, result) in repo.load_all()? {
        result.map_err(|e| format!("{name}: {e}"))?;
    }
    let tasks = TaskTable::load(&root, TaskDefaults::default())?;
    let keys = match keys {
        Some(k) => {
            let path = dir.path().join("keys.json");
            std::fs::write(&path, k.to_string())?;
            Some(KeyStore::load(&path)?)
        }
        None => None,
    };
    let audit = if audit { Some(moat_serve::audit::AuditLog::open(&dir.path().join("audit.jsonl"))?) } else { None };
    let state = Arc::new(ServerState::from_parts(repo, tasks, keys, audit, limits, Some(7)));
    Ok(Fixture { app: app(state.clone()), state, root, _dir: dir })
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Result<Value, BoxError> {
        serde_json::from_slice(&self.body).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&self.body)).into())
    }

    /// Asserts an error status with a JSON `error` containing `needle`.
    fn assert_error(&self, status: StatusCode, needle: &str) -> TestResult {
        let shown: String = String::from_utf8_lossy(&self.body).chars().take(300).collect();
        assert_eq!(self.status, status, "{shown}");
        let v = self.json()?;
        let msg = v["error"].as_str().ok_or("no error field")?;
        assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
        Ok(())
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Result<Reply, BoxError> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app.clone().oneshot(req.body(body.into())?).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 64 << 20).await?;
    Ok(Reply { status, headers, body })
}

async fn get(app: &Router, uri: &str) -> Result<Reply, BoxError> {
    call(app, "GET", uri, &[], Body::empty()).await
}

async fn post(app: &Router, uri: &str, body: &Value) -> Result<Reply, BoxError> {
    call(app, "POST", uri, &[("content-type", "application/json")], body.to_string()).await
}

fn digits(n: usize) -> Result<Vec<Vec<f32>>, BoxError> {
    let test = moat_nn::data::load("digits", None, 0)?.test;
    Ok((0..n).map(|i| test.sample(i).to_vec()).collect())
}

fn infer_body(samples: &[Vec<f32>]) -> Value {
    json!({"id": "req-1", "inputs": [{"name": "input", "shape": [samples.len(), 1, 8, 8], "datatype": "FP32",
            "data": samples.iter().flatten().collect::<Vec<_>>()}]})
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect()).unwrap_or_default()
}

fn open() -> Result<Fixture, BoxError> {
    fixture(Limits { inference_threads: 2, ..Limits::default() }, None, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_server_metadata() -> TestResult {
    let f = open()?;
    assert_eq!(get(&f.app, "/v2/health/live").await?.json()?, json!({"live": true}));
    assert_eq!(get(&f.app, "/v2/health/ready").await?.json()?, json!({"ready": true}));
    let meta = get(&f.app, "/v2").await?.json()?;
    assert_eq!(meta["name"], "moat");
    assert_eq!(meta["parameters"]["selection_seed"], 7);
    for ext in ["binary_tensor_data", "classification", "model_repository", "statistics", "moat_tasks"] {
        assert!(meta["extensions"].as_array().is_some_and(|a| a.contains(&json!(ext))), "{ext}");
    }
    assert_eq!(meta["parameters"]["tasks"], json!(["digits", "digits-open"]));
    f.state.set_ready(false);
    let draining = get(&f.app, "/v2/health/ready").await?;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_ready_and_versions() -> TestResult {
    let f = open()?;
    let meta = get(&f.app, "/v2/models/mid").await?.json()?;
    assert_eq!(meta["name"], "mid");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]));
    // The graph's own tensors (moat's exporter names them `input` and `output`) and moat's extras.
    assert_eq!(meta["outputs"], json!([{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]));
    assert_eq!(
        meta["parameters"]["extra_outputs"][0],
        json!({"name": "logits", "datatype": "FP32", "shape": [-1, 10]})
    );
    assert_eq!(meta["parameters"]["extra_outputs"][2], json!({"name": "label", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(meta["parameters"]["version"], "2");
    assert_eq!(meta["parameters"]["profile"]["accuracy"], 95.0);
    assert_eq!(meta["parameters"]["profile"]["latency_ms"], 3.0);
    assert_eq!(get(&f.app, "/v2/models/mid/versions/1").await?.json()?["parameters"]["version"], "1");
    get(&f.app, "/v2/models/mid/versions/9").await?.assert_error(StatusCode::NOT_FOUND, "no version '9'")?;
    get(&f.app, "/v2/models/nope").await?.assert_error(StatusCode::NOT_FOUND, "unknown model 'nope'")?;
    assert_eq!(get(&f.app, "/v2/models/mid/ready").await?.json()?, json!({"name": "mid", "ready": true}));
    assert_eq!(get(&f.app, "/v2/models/mid/versions/1/ready").await?.status, StatusCode::OK);
    assert_eq!(get(&f.app, "/v2/models/nope/ready").await?.status, StatusCode::NOT_FOUND);
    // A task answers as a model.
    let task = get(&f.app, "/v2/models/digits").await?.json()?;
    assert_eq!(
        (task["platform"].as_str(), task["parameters"]["policy"].as_str()),
        (Some("moat_task"), Some("fastest"))
    );
    assert!(task["parameters"].get("models").is_none(), "non-disclosing task lists its models");
    let open_task = get(&f.app, "/v2/tasks/digits-open").await?.json()?;
    assert_eq!(open_task["parameters"]["models"], json!(["dominated", "fast", "mid", "slow"]));
    let list = get(&f.app, "/v2/tasks").await?.json()?;
    assert_eq!(list["tasks"][0], json!({"name": "digits", "policy": "fastest", "ready": true}));
    get(&f.app, "/v2/tasks/nope").await?.assert_error(StatusCode::NOT_FOUND, "unknown task")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_inference_equals_the_float_executor() -> TestResult {
    let f = open()?;
    let samples = digits(3)?;
    let mut body = infer_body(&samples);
    body["outputs"] = json!([{"name": "output"}, {"name": "probabilities"}, {"name": "label"}]);
    let reply = post(&f.app, "/v2/models/mid/versions/1/infer", &body).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let r = reply.json()?;
    assert_eq!(
        (r["model_name"].as_str(), r["model_version"].as_str(), r["id"].as_str()),
        (Some("mid"), Some("1"), Some("req-1"))
    );
    let model = f.state.repository.get("mid", Some("1")).map_err(|e| e.to_string())?;
    let outputs = r["outputs"].as_array().ok_or("outputs")?;
    assert_eq!(outputs.len(), 3);
    assert_eq!((outputs[0]["name"].as_str(), &outputs[0]["shape"]), (Some("output"), &json!([3, 10])));
    let logits = floats(&outputs[0]["data"]);
    let probabilities = floats(&outputs[1]["data"]);
    let labels: Vec<i64> = outputs[2]["data"].as_array().ok_or("labels")?.iter().filter_map(Value::as_i64).collect();
    for (i, s) in samples.iter().enumerate() {
        let want = FloatExecutor::logits(&model.graph, s)?;
        assert_eq!(&logits[i * 10..(i + 1) * 10], want.as_slice(), "sample {i}: bit-exact logits");
        assert_eq!(labels[i] as usize, FloatExecutor::predict(&model.graph, s)?);
        let p = moat_nn::exec::softmax(&want);
        assert_eq!(&probabilities[i * 10..(i + 1) * 10], p.as_slice());
    }
    // Nested data and the [N, 64] flat shape give the same answer; default version is 2.
    let nested = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64",
                                     "data": [samples[0].chunks(8).map(|r| r.to_vec()).collect::<Vec<_>>()]}],
                        "outputs": [{"name": "logits"}]});
    let r2 = post(&f.app, "/v2/models/mid/infer", &nested).await?.json()?;
    assert_eq!(r2["model_version"], "2");
    assert_eq!(r2["outputs"].as_array().map(Vec::len), Some(1));
    let v2 = f.state.repository.get("mid", None).map_err(|e| e.to_string())?;
    assert_eq!(floats(&r2["outputs"][0]["data"]), FloatExecutor::logits(&v2.graph, &samples[0])?);
    // Without `outputs`, the declared outputs only (as Triton); unknown names list the valid ones.
    let plain = post(&f.app, "/v2/models/mid/infer", &infer_body(&samples[..1])).await?.json()?;
    assert_eq!(
        plain["outputs"].as_array().map(|o| o.iter().map(|t| t["name"].clone()).collect()),
        Some(vec![json!("output")])
    );
    assert_eq!(floats(&plain["outputs"][0]["data"]), FloatExecutor::run(&v2.graph, &samples[0])?);
    let mut unknown = infer_body(&samples[..1]);
    unknown["outputs"] = json!([{"name": "scores"}]);
    post(&f.app, "/v2/models/mid/infer", &unknown).await?.assert_error(
        StatusCode::BAD_REQUEST,
        r#"unknown output 'scores': the model's outputs are ["output", "logits", "probabilities", "label"]"#,
    )?;
    let mut renamed = infer_body(&samples[..1]);
    renamed["inputs"][0]["name"] = json!("x");
    post(&f.app, "/v2/models/mid/infer", &renamed)
        .await?
        .assert_error(StatusCode::BAD_REQUEST, r#"unknown input 'x': the model's inputs are ["input"]"#)?;
    // Classification extension.
    let mut cls = infer_body(&samples[..1]);
    cls["outputs"] = json!([{"name": "probabilities", "parameters": {"classification": 3}}]);
    let r3 = post(&f.app, "/v2/models/mid/versions/1/infer", &cls).await?.json()?;
    assert_eq!((r3["outputs"][0]["datatype"].as_str(), &r3["outputs"][0]["shape"]), (Some("BYTES"), &json!([1, 3])));
    let top = r3["outputs"][0]["data"][0].as_str().ok_or("string")?;
    assert_eq!(top.split(':').nth(1), Some(labels[0].to_string().as_str()), "{top}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensor_extension_round_trips() -> TestResult {
    let f = open()?;
    let samples = digits(2)?;
    let header = json!({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 2 * 64 * 4}}],
                        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}, {"name": "label"}]})
    .to_string();
    let mut body = header.as_bytes().to_vec();
    body.extend(samples.iter().flatten().flat_map(|x| x.to_le_bytes()));
    let len = header.len().to_string();
    let reply = call(
        &f.app,
        "POST",
        "/v2/models/fast/infer",
        &[("content-type", "application/octet-stream"), ("inference-header-content-length", &len)],
        body,
    )
    .await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["content-type"], "application/octet-stream");
    let n: usize = reply.headers["inference-header-content-length"].to_str()?.parse()?;
    let json: Value = serde_json::from_slice(&reply.body[..n])?;
    assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 2 * 10 * 4);
    assert!(json["outputs"][0].get("data").is_none());
    let logits: Vec<f32> =
        reply.body[n..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let model = f.state.repository.get("fast", None).map_err(|e| e.to_string())?;
    let want: Vec<f32> =
        samples.iter().map(|s| FloatExecutor::logits(&model.graph, s)).collect::<Result<Vec<_>, _>>()?.concat();
    assert_eq!(logits, want);
    assert_eq!(json["outputs"][1]["data"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_the_server_keeps_serving() -> TestResult {
    let f = fixture(Limits { max_body_bytes: 4096, inference_threads: 2, ..Limits::default() }, None, false)?;
    let app = &f.app;
    let s = digits(1)?;
    let ok = |r: Reply| -> TestResult {
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        Ok(())
    };
    let malformed = call(app, "POST", "/v2/models/fast/infer", &[], "{\"inputs\": [").await?;
    malformed.assert_error(StatusCode::BAD_REQUEST, "malformed inference request JSON")?;
    ok(post(app, "/v2/models/fast/infer", &infer_body(&s)).await?)?;
    let mut wrong_type = infer_body(&s);
    wrong_type["inputs"][0]["datatype"] = json!("BYTES");
    post(app, "/v2/models/fast/infer", &wrong_type).await?.assert_error(StatusCode::BAD_REQUEST, "not supported")?;
    let mut wrong_shape = infer_body(&s);
    wrong_shape["inputs"][0]["shape"] = json!([1, 3, 8, 8]);
    post(app, "/v2/models/fast/infer", &wrong_shape)
        .await?
        .assert_error(StatusCode::BAD_REQUEST, "has shape [1, 3, 8, 8]")?;
    let mut wrong_name = infer_body(&s);
    wrong_name["inputs"][0]["name"] = json!("x");
    post(app, "/v2/models/fast/infer", &wrong_name)
        .await?
        .assert_error(StatusCode::BAD_REQUEST, r#"the model's inputs are ["input"]"#)?;
    post(app, "/v2/models/ghost/infer", &infer_body(&s))
        .await?
        .assert_error(StatusCode::NOT_FOUND, "unknown model 'ghost'")?;
    post(app, "/v2/models/fast/versions/5/infer", &infer_body(&s))
        .await?
        .assert_error(StatusCode::NOT_FOUND, "no version")?;
    let big = vec![b' '; 5000];
    call(app, "POST", "/v2/models/fast/infer", &[], big)
        .await?
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "exceeds the limit of 4096")?;
    // Chunked (no Content-Length) oversized bodies too.
    let stream = Body::from_stream(futures_stream(6000));
    call(app, "POST", "/v2/models/fast/infer", &[], stream)
        .await?
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "exceeds")?;
    call(app, "POST", "/v2/models/fast/infer", &[("content-encoding", "gzip")], infer_body(&s).to_string())
        .await?
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "gzip")?;
    let mut batch = infer_body(&s);
    batch["inputs"][0]["shape"] = json!([65, 1, 8, 8]);
    post(app, "/v2/models/fast/infer", &batch).await?.assert_error(StatusCode::BAD_REQUEST, "max_batch_size 64")?;
    get(app, "/v2/nowhere").await?.assert_error(StatusCode::NOT_FOUND, "no route for GET /v2/nowhere")?;
    get(app, "/v2/models/fast/infer").await?.assert_error(StatusCode::METHOD_NOT_ALLOWED, "GET is not allowed")?;
    let mut task_spec = infer_body(&s);
    task_spec["parameters"] = json!({"min_accuracy": 140});
    post(app, "/v2/tasks/digits/infer", &task_spec).await?.assert_error(StatusCode::BAD_REQUEST, "min_accuracy")?;
    task_spec["parameters"] = json!({"max_latency_ms": "fast"});
    post(app, "/v2/tasks/digits/infer", &task_spec).await?.assert_error(StatusCode::BAD_REQUEST, "max_latency_ms")?;
    // Still serving.
    ok(post(app, "/v2/models/fast/infer", &infer_body(&s)).await?)?;
    Ok(())
}

/// A body stream of `n` bytes in 1000-byte chunks, without a Content-Length.
fn futures_stream(n: usize) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    struct Chunks(usize);
    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(None);
            }
            let k = self.0.min(1000);
            self.0 -= k;
            std::task::Poll::Ready(Some(Ok(Bytes::from(vec![b' '; k]))))
        }
    }
    Chunks(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_requests_route_by_spec_and_hide_the_model() -> TestResult {
    let f = open()?;
    let s = digits(1)?;
    let with_spec = |a: f64, l: f64| {
        let mut b = infer_body(&s);
        b["parameters"] = json!({"min_accuracy": a, "max_latency_ms": l});
        b
    };
    // Disclosing task, fastest policy: 94 % within 5 ms → "mid" (95 %, 3 ms).
    let r = post(&f.app, "/v2/tasks/digits-open/infer", &with_spec(94.0, 5.0)).await?.json()?;
    assert_eq!((r["model_name"].as_str(), r["model_version"].as_str()), (Some("mid"), Some("2")));
    let commitment = r["parameters"]["model_commitment"].as_str().unwrap_or_default().to_string();
    assert!(commitment.len() == 64 && commitment.bytes().all(|b| b.is_ascii_hexdigit()), "{commitment:?}");
    assert_eq!(r["parameters"], json!({"task": "digits-open", "spec_met": true, "model_commitment": commitment}));
    // The same version answers with the same commitment on its own route.
    let direct = post(&f.app, "/v2/models/mid/versions/2/infer", &infer_body(&s)).await?.json()?;
    assert_eq!(direct["parameters"]["model_commitment"].as_str(), Some(commitment.as_str()));
    // Infeasible (99 %): the most accurate, "slow", and no goodput.
    let r = post(&f.app, "/v2/tasks/digits-open/infer", &with_spec(99.0, 5.0)).await?.json()?;
    assert_eq!((r["model_name"].as_str(), &r["parameters"]["spec_met"]), (Some("slow"), &json!(false)));
    // Non-disclosing task: the task's name, no version, no hint of the model; the logits are
    // still those of the fastest feasible model ("fast": 90 %, 1 ms).
    let r = post(&f.app, "/v2/tasks/digits/infer", &with_spec(85.0, 2.0)).await?.json()?;
    assert_eq!(r["model_name"], "digits");
    assert!(r.get("model_version").is_none());
    assert_eq!(r["parameters"], json!({"task": "digits"}));
    let fast = f.state.repository.get("fast", None).map_err(|e| e.to_string())?;
    assert_eq!(floats(&r["outputs"][0]["data"]), FloatExecutor::logits(&fast.graph, &s[0])?);
    // The model route falls back to the task when no model has the name.
    let r = post(&f.app, "/v2/models/digits/infer", &with_spec(85.0, 2.0)).await?.json()?;
    assert_eq!(r["model_name"], "digits");
    // Stats: goodput 3 of 4 requests on "digits-open"+"digits" together, per task.
    let stats = get(&f.app, "/v2/tasks/digits-open/stats").await?.json()?;
    assert_eq!((stats["requests"].as_u64(), stats["goodput"].as_u64()), (Some(2), Some(1)));
    assert_eq!(stats["selections"]["mid"], 1);
    assert_eq!(stats["selections"]["slow"], 1);
    assert_eq!(stats["goodput_ratio"], 0.5);
    let digits_stats = get(&f.app, "/v2/tasks/digits/stats").await?.json()?;
    assert_eq!((digits_stats["requests"].as_u64(), digits_stats["goodput"].as_u64()), (Some(2), Some(2)));
    assert_eq!(digits_stats["selections"]["fast"], 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_budgets_rate_limits_and_audit() -> TestResult {
    let keys = json!({
        "alice-key": {"name": "alice", "budget": 5},
        "bob-key": {"name": "bob", "rate_per_s": 0.01, "burst": 2},
        "ops-key": {"name": "ops", "admin": true},
    });
    let f = fixture(Limits { inference_threads: 2, ..Limits::default() }, Some(keys), true)?;
    let app = &f.app;
    let body = infer_body(&digits(2)?).to_string();
    let infer = |key: Option<&'static str>| {
        let body = body.clone();
        async move {
            let mut headers = vec![("content-type", "application/json")];
            let auth;
            if let Some(k) = key {
                auth = format!("Bearer {k}");
                headers.push(("authorization", auth.as_str()));
                return call(app, "POST", "/v2/models/fast/infer", &headers, body).await;
            }
            call(app, "POST", "/v2/models/fast/infer", &headers, body).await
        }
    };
    infer(None).await?.assert_error(StatusCode::UNAUTHORIZED, "missing API key")?;
    infer(Some("mallory")).await?.assert_error(StatusCode::UNAUTHORIZED, "unknown API key")?;
    // Probes stay open; metadata needs a key; metrics an admin key.
    assert_eq!(get(app, "/v2/health/ready").await?.status, StatusCode::OK);
    assert_eq!(get(app, "/v2").await?.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(app, "GET", "/v2", &[("x-api-key", "alice-key")], Body::empty()).await?.status, StatusCode::OK);
    call(app, "GET", "/metrics", &[("x-api-key", "alice-key")], Body::empty())
        .await?
        .assert_error(StatusCode::FORBIDDEN, "admin")?;
    assert_eq!(call(app, "GET", "/metrics", &[("x-api-key", "ops-key")], Body::empty()).await?.status, StatusCode::OK);
    // Budget of 5 samples: two batches of 2 pass, the third would make 6.
    assert_eq!(infer(Some("alice-key")).await?.status, StatusCode::OK);
    assert_eq!(infer(Some("alice-key")).await?.status, StatusCode::OK);
    let refused = infer(Some("alice-key")).await?;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "budget exhausted for key 'alice': 4 of 5 samples used")?;
    assert!(refused.headers.get("retry-after").is_none(), "an exhausted budget does not recover");
    // Rate: burst of 2, then 429 with Retry-After.
    assert_eq!(infer(Some("bob-key")).await?.status, StatusCode::OK);
    assert_eq!(infer(Some("bob-key")).await?.status, StatusCode::OK);
    let limited = infer(Some("bob-key")).await?;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded for key 'bob'")?;
    let retry: u64 = limited.headers.get("retry-after").ok_or("retry-after")?.to_str()?.parse()?;
    assert!((1..=100).contains(&retry), "{retry}");
    // One audit line per query, refused ones included.
    let audit = std::fs::read_to_string(f.root.parent().ok_or("dir")?.join("audit.jsonl"))?;
    let lines: Vec<Value> = audit.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let summary: Vec<(Option<&str>, u64)> =
        lines.iter().map(|l| (l["key"].as_str(), l["status"].as_u64().unwrap_or(0))).collect();
    assert_eq!(
        summary,
        vec![
            (None, 401),
            (None, 401),
            (Some("alice"), 200),
            (Some("alice"), 200),
            (Some("alice"), 429),
            (Some("bob"), 200),
            (Some("bob"), 200),
            (Some("bob"), 429),
        ]
    );
    assert_eq!((lines[2]["model"].as_str(), lines[2]["batch"].as_u64()), (Some("fast"), Some(2)));
    let metrics = String::from_utf8(
        call(app, "GET", "/metrics", &[("x-api-key", "ops-key")], Body::empty()).await?.body.to_vec(),
    )?;
    assert!(metrics.contains("moat_rejections_total{reason=\"budget_exhausted\"} 1\n"), "{metrics}");
    assert!(metrics.contains("moat_rejections_total{reason=\"rate_limited\"} 1\n"));
    assert!(metrics.contains("moat_rejections_total{reason=\"unauthorized\"} 3\n"));
    // Spend alice's last sample; then her requests are refused before their body is read (this
    // body fails the request with a 400 as soon as anyone polls it).
    let headers = [("content-type", "application/json"), ("authorization", "Bearer alice-key")];
    let one = infer_body(&digits(1)?).to_string();
    assert_eq!(call(app, "POST", "/v2/models/fast/infer", &headers, one).await?.status, StatusCode::OK);
    call(app, "POST", "/v2/models/fast/infer", &headers, Body::from_stream(Unreadable))
        .await?
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "5 of 5 samples used")?;
    Ok(())
}

/// A request body that fails when read.
struct Unreadable;

impl futures_core::Stream for Unreadable {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(Some(Err(std::io::Error::other("the body was read"))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_index_unload_and_load() -> TestResult {
    let f = open()?;
    let index = post(&f.app, "/v2/repository/index", &json!({})).await?.json()?;
    assert_eq!(index.as_array().map(Vec::len), Some(5), "{index}");
    assert_eq!(index[0], json!({"name": "dominated", "version": "1", "state": "READY", "reason": ""}));
    assert_eq!(post(&f.app, "/v2/repository/models/slow/unload", &json!({})).await?.json()?, json!({}));
    let ready = get(&f.app, "/v2/models/slow/ready").await?;
    assert_eq!((ready.status, ready.json()?["ready"].clone()), (StatusCode::BAD_REQUEST, json!(false)));
    post(&f.app, "/v2/models/slow/infer", &infer_body(&digits(1)?))
        .await?
        .assert_error(StatusCode::BAD_REQUEST, "not ready")?;
    let only_ready = post(&f.app, "/v2/repository/index", &json!({"ready": true})).await?.json()?;
    assert!(only_ready.as_array().is_some_and(|a| a.iter().all(|e| e["name"] != "slow")));
    // The task loses the member.
    let task = get(&f.app, "/v2/tasks/digits").await?.json()?;
    assert_eq!(task["parameters"]["ready_models"], 3);
    assert_eq!(
        call(&f.app, "POST", "/v2/repository/models/slow/load", &[], Body::empty()).await?.status,
        StatusCode::OK
    );
    assert_eq!(get(&f.app, "/v2/models/slow/ready").await?.status, StatusCode::OK);
    post(&f.app, "/v2/repository/models/ghost/load", &json!({}))
        .await?
        .assert_error(StatusCode::NOT_FOUND, "unknown model")?;
    post(&f.app, "/v2/repository/models/slow/load", &json!({"parameters": {"config": "{}"}}))
        .await?
        .assert_error(StatusCode::BAD_REQUEST, "not supported")?;
    call(&f.app, "POST", "/v2/repository/index", &[], "{nope")
        .await?
        .assert_error(StatusCode::BAD_REQUEST, "malformed")?;
    // A broken new version makes the reload fail but keeps the loaded versions serving.
    std::fs::create_dir_all(f.root.join("fast/2"))?;
    std::fs::write(f.root.join("fast/2/model.onnx"), b"garbage")?;
    post(&f.app, "/v2/repository/models/fast/load", &json!({}))
        .await?
        .assert_error(StatusCode::BAD_REQUEST, "failed to load")?;
    assert_eq!(get(&f.app, "/v2/models/fast/ready").await?.status, StatusCode::OK);
    // Stats of every version, with profiles.
    let stats = get(&f.app, "/v2/models/mid/stats").await?.json()?;
    assert_eq!(stats["model_stats"].as_array().map(Vec::len), Some(2));
    assert_eq!(stats["model_stats"][0]["profile"]["accuracy_source"], "declared");
    assert_eq!(get(&f.app, "/v2/models/stats").await?.json()?["model_stats"].as_array().map(Vec::len), Some(5));
    assert_eq!(get(&f.app, "/v2/models/mid/versions/2/stats").await?.json()?["model_stats"][0]["version"], "2");
    Ok(())
}

/// One Prometheus text-format line: comment, or `name{labels} value`.
fn valid_prometheus_line(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("# ") {
        let mut parts = rest.splitn(3, ' ');
        let kind = parts.next().unwrap_or("");
        let name = parts.next().unwrap_or("");
        let value = parts.next().unwrap_or("");
        let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        return match kind {
            "HELP" => name_ok && !value.is_empty(),
            "TYPE" => name_ok && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&value),
            _ => false,
        };
    }
    let (series, value) = match line.rsplit_once(' ') {
        Some(p) => p,
        None => return false,
    };
    let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    let (name, labels) = match series.find('{') {
        Some(i) => (&series[..i], Some(&series[i..])),
        None => (series, None),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let labels_ok = labels.is_none_or(|l| {
        l.ends_with('}')
            && l[1..l.len() - 1].split("\",").all(|pair| {
                let mut kv = pair.splitn(2, "=\"");
                kv.next().is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    && kv.next().is_some()
            })
    });
    name_ok && value_ok && labels_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() -> TestResult {
    let f = open()?;
    let s = digits(1)?;
    post(&f.app, "/v2/models/fast/infer", &infer_body(&s)).await?;
    post(&f.app, "/v2/models/ghost/infer", &infer_body(&s)).await?;
    post(&f.app, "/v2/tasks/digits/infer", &infer_body(&s)).await?;
    let reply = get(&f.app, "/metrics").await?;
    assert!(reply.headers["content-type"].to_str()?.starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(reply.body.to_vec())?;
    for line in text.lines() {
        assert!(valid_prometheus_line(line), "bad line: {line}");
    }
    assert!(
        text.contains("moat_http_requests_total{route=\"/v2/models/{model}/infer\",method=\"POST\",code=\"200\"} 1\n")
    );
    assert!(
        text.contains("moat_http_requests_total{route=\"/v2/models/{model}/infer\",method=\"POST\",code=\"404\"} 1\n")
    );
    assert!(
        text.contains("moat_inference_requests_total{model=\"fast\",version=\"1\",outcome=\"success\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("moat_task_selections_total{task=\"digits\",model=\"fast\"} 1\n"));
    assert!(text.contains("moat_task_goodput_total{task=\"digits\"} 1\n"));
    assert!(text.contains("moat_task_goodput_ratio{task=\"digits\"} 1\n"));
    assert!(text.contains("moat_models_ready 5\n"));
    assert!(text.contains("# TYPE moat_secure_session_duration_seconds histogram\n"));
    assert!(text.contains("moat_inference_duration_seconds_count{model=\"fast\",version=\"1\"} 2\n"));
    Ok(())
}

/// Adds a model slow enough (~1M multiply-adds per sample) that requests overlap.
fn add_huge_model(f: &Fixture) -> TestResult {
    let graph = zoo::build(&"mlp:1024,1024".parse()?, &[1, 8, 8], 10, 5)?;
    std::fs::create_dir_all(f.root.join("huge/1"))?;
    moat_nn::onnx::save_onnx(&graph, &f.root.join("huge/1/model.onnx"))?;
    f.state.repository.load_model("huge")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_retry_after_and_slow_runs_time_out() -> TestResult {
    // One inference thread, no queue: concurrent requests beyond the first are refused.
    let limits = Limits { inference_threads: 1, max_queue: 0, ..Limits::default() };
    let f = fixture(limits, None, false)?;
    add_huge_model(&f)?;
    let batch = infer_body(&vec![digits(1)?[0].clone(); 64]);
    let mut handles = Vec::new();
    for _ in 0..12 {
        let app = f.app.clone();
        let body = batch.clone();
        handles.push(tokio::spawn(async move {
            post(&app, "/v2/models/huge/infer", &body).await.map(|r| (r.status, r.headers))
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        let (status, headers) = h.await?.map_err(|e| e.to_string())?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE), "{statuses:?}");

    // A run deadline (1 ms) far shorter than a big batch (64 × 1M multiply-adds): 504.
    let limits = Limits { inference_threads: 1, infer_timeout: Duration::from_millis(1), ..Limits::default() };
    let f = fixture(limits, None, false)?;
    add_huge_model(&f)?;
    post(&f.app, "/v2/models/huge/infer", &batch).await?.assert_error(StatusCode::GATEWAY_TIMEOUT, "did not finish")?;
    Ok(())
}

/// The commitment a plaintext answer carries is opened to an admin (the nonce): the served
/// model file recomputes it, any other file — another version, one flipped byte — does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commitment_opens_to_an_auditor_with_the_served_file_only() -> TestResult {
    let keys = json!({"alice-key": {"name": "alice"}, "ops-key": {"name": "ops", "admin": true}});
    let f = fixture(Limits { inference_threads: 2, ..Limits::default() }, Some(keys), false)?;
    let app = &f.app;
    let body = infer_body(&digits(2)?).to_string();
    let answer = call(
        app,
        "POST",
        "/v2/models/mid/versions/1/infer",
        &[("content-type", "application/json"), ("x-api-key", "alice-key")],
        body,
    )
    .await?
    .json()?;
    let seen = answer["parameters"]["model_commitment"].as_str().ok_or("no commitment")?.to_string();
    let uri = "/v2/models/mid/versions/1/commitment/opening";
    call(app, "GET", uri, &[("x-api-key", "alice-key")], Body::empty())
        .await?
        .assert_error(StatusCode::FORBIDDEN, "admin")?;
    let opening: moat_wire::CommitmentOpening =
        serde_json::from_value(call(app, "GET", uri, &[("x-api-key", "ops-key")], Body::empty()).await?.json()?)?;
    assert_eq!((opening.model_name.as_str(), opening.model_version.as_str()), ("mid", "1"));
    let served = std::fs::read(f.root.join("mid/1/model.onnx"))?;
    opening.verify_seen(&seen, &served)?;
    let other_version = std::fs::read(f.root.join("mid/2/model.onnx"))?;
    assert!(matches!(opening.verify_seen(&seen, &other_version), Err(moat_wire::OpeningError::Mismatch { .. })));
    let mut flipped = served.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(opening.verify(&flipped), Err(moat_wire::OpeningError::Mismatch { .. })));
    // The default version's opening is version 2's, a different commitment.
    let default: moat_wire::CommitmentOpening = serde_json::from_value(
        call(app, "GET", "/v2/models/mid/commitment/opening", &[("x-api-key", "ops-key")], Body::empty())
            .await?
            .json()?,
    )?;
    assert_eq!(default.model_version, "2");
    default.verify(&other_version)?;
    assert!(matches!(default.verify_seen(&seen, &other_version), Err(moat_wire::OpeningError::OtherCommitment { .. })));
    call(app, "GET", "/v2/models/nope/commitment/opening", &[("x-api-key", "ops-key")], Body::empty())
        .await?
        .assert_error(StatusCode::NOT_FOUND, "unknown model")?;
    Ok(())
}
