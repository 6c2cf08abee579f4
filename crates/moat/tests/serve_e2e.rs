//! End-to-end tests of `moat serve`: the real binary on loopback, a zoo trained on the spot,
//! driven over HTTP by moat-client, raw sockets, `moat infer --url` and `moat loadtest`.

mod serve_util;

use std::time::{Duration, Instant};

use moat_client::{ClientError, HttpClient, InferRequest};
use moat_nn::FloatExecutor;
use serde_json::{Value, json};
use serve_util::*;

#[test]
fn metadata_and_plaintext_inference_match_the_float_executor() -> TestResult {
    let dir = scratch("plain")?;
    let repo = build_repo(&dir, 10)?;
    let server = ServerProcess::start(&repo, &["--seed", "5"])?;
    let client = HttpClient::new(&server.url)?;
    assert!(client.is_live()? && client.is_ready()?);
    let meta = client.server_metadata()?;
    assert_eq!(meta["name"], "moat");
    assert_eq!(meta["parameters"]["selection_seed"], 5);
    assert_eq!(meta["parameters"]["tasks"], json!(["digits"]));

    let model = client.model_metadata("mlp-64", None)?;
    assert_eq!(
        (model.name.as_str(), model.platform.as_str(), model.versions.clone()),
        ("mlp-64", "moat_onnx", vec!["1".to_string()])
    );
    assert_eq!(model.sample_shape()?, vec![1, 8, 8]);
    assert_eq!((model.input_name()?, model.output_names()), ("input", vec!["output"]));
    let extras: Vec<&str> = model.parameters["extra_outputs"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(extras, vec!["logits", "probabilities", "label"]);
    // The profile: held-out accuracy equals the card's test accuracy (same split), latency measured.
    let profile = &model.parameters["profile"];
    assert_eq!(
        (profile["accuracy_source"].as_str(), profile["accuracy_samples"].as_u64()),
        (Some("held-out"), Some(360))
    );
    let card: Value = serde_json::from_str(&std::fs::read_to_string(repo.join("mlp-64/1/model.card.json"))?)?;
    let card_accuracy = card["test_accuracy"].as_f64().ok_or("card")? * 100.0;
    assert!(
        (profile["accuracy"].as_f64().ok_or("accuracy")? - card_accuracy).abs() < 1e-9,
        "{profile} vs {card_accuracy}"
    );
    assert!(profile["latency_p50_ms"].as_f64().is_some_and(|l| l > 0.0) && profile["latency_runs"] == 200);

    let graph = moat_nn::onnx::load_onnx(&repo.join("mlp-64/1/model.onnx"))?;
    let test = digits_test()?;
    let samples: Vec<Vec<f32>> = (0..5).map(|i| test.sample(i).to_vec()).collect();
    for binary in [false, true] {
        let request = model
            .request(&samples)?
            .with_id(format!("b{binary}"))
            .with_binary_input(binary)
            .with_output("logits", binary, None)
            .with_output("label", false, None);
        let answer = client.infer("mlp-64", None, &request)?;
        assert_eq!((answer.model_name.as_str(), answer.model_version.as_deref()), ("mlp-64", Some("1")));
        assert_eq!(answer.id.as_deref(), Some(format!("b{binary}").as_str()));
        let logits = answer.logits()?;
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(logits[i], FloatExecutor::logits(&graph, s)?, "sample {i}, binary {binary}: bit-exact");
            assert_eq!(answer.labels()?[i], FloatExecutor::predict(&graph, s)?);
        }
    }
    // Version-pinned route and readiness.
    assert!(client.is_model_ready("mlp-64", Some("1"))?);
    assert!(!client.is_model_ready("mlp-64", Some("2"))?);
    let answer = client.infer("mlp-256", Some("1"), &InferRequest::batch(&samples[..1], &[1, 8, 8])?)?;
    assert_eq!(answer.model_name, "mlp-256");
    // Without `outputs`: the declared output, the graph's own value.
    let graph256 = moat_nn::onnx::load_onnx(&repo.join("mlp-256/1/model.onnx"))?;
    assert_eq!(answer.rows_of("output")?[0], FloatExecutor::run(&graph256, &samples[0])?);

    // Repository extension over HTTP.
    client.unload_model("mlp-16")?;
    assert!(!client.is_model_ready("mlp-16", None)?);
    assert_eq!(client.repository_index(true)?.as_array().map(Vec::len), Some(2));
    client.load_model("mlp-16")?;
    assert!(client.is_model_ready("mlp-16", None)?);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn task_requests_are_served_by_a_feasible_model_and_count_goodput() -> TestResult {
    let dir = scratch("task")?;
    let repo = build_repo(&dir, 10)?;
    let server = ServerProcess::start(&repo, &["--disclose-model", "--seed", "1"])?;
    let client = HttpClient::new(&server.url)?;
    let profiles: Vec<(String, f64, f64)> = ZOO
        .iter()
        .map(|(name, _)| {
            let p = client.model_metadata(name, None)?.parameters["profile"].clone();
            Ok((name.to_string(), p["accuracy"].as_f64().unwrap_or(-1.0), p["latency_ms"].as_f64().unwrap_or(-1.0)))
        })
        .collect::<Result<_, ClientError>>()?;
    let test = digits_test()?;
    let sample = vec![test.sample(0).to_vec()];
    // Ask for the middle model's accuracy: the fastest feasible one must serve, and meet the spec.
    let min_accuracy = profiles[1].1 - 0.5;
    let request = InferRequest::batch(&sample, &[1, 8, 8])?.with_spec(Some(min_accuracy), Some(10.0));
    let fastest = profiles
        .iter()
        .filter(|p| p.1 >= min_accuracy && p.2 <= 10.0)
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .ok_or("no feasible model")?;
    for _ in 0..5 {
        let answer = client.infer_task("digits", &request)?;
        let (_, acc, lat) = profiles.iter().find(|p| p.0 == answer.model_name).ok_or("served by an unknown model")?;
        assert!(*acc >= min_accuracy && *lat <= 10.0, "served by {} ({acc} %, {lat} ms)", answer.model_name);
        assert_eq!(answer.parameters["spec_met"], true);
        assert_eq!(answer.model_name, fastest.0);
    }
    // An impossible spec is still answered (by the most accurate model) but is not goodput.
    let impossible = InferRequest::batch(&sample, &[1, 8, 8])?.with_spec(Some(100.0), None);
    let answer = client.infer_task("digits", &impossible)?;
    assert_eq!(answer.parameters["spec_met"], false);
    let stats = client.get_json("/v2/tasks/digits/stats")?;
    assert_eq!((stats["requests"].as_u64(), stats["goodput"].as_u64()), (Some(6), Some(5)));
    // `moat infer --url` against a task: the same model-less request from the command line.
    let out = moat()
        .args(["infer", "--url", &server.url, "--model", "digits", "--index", "0", "--seed", "1", "--json"])
        .args(["--param", &format!("min_accuracy={min_accuracy}"), "--param", "max_latency_ms=10"])
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(p["execution"], "remote");
    assert_eq!(p["served_by"], format!("{}/1", fastest.0), "{p}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn infer_url_gives_the_local_answer() -> TestResult {
    let dir = scratch("infer-url")?;
    let repo = build_repo(&dir, 10)?;
    let server = ServerProcess::start(&repo, &[])?;
    let model = repo.join("mlp-256/1/model.onnx");
    let local = moat().arg("infer").arg(&model).args(["--index", "3", "--seed", "1", "--json"]).output()?;
    let remote = moat()
        .args(["infer", "--url", &server.url, "--model", "mlp-256", "--index", "3", "--seed", "1", "--json"])
        .output()?;
    assert!(local.status.success() && remote.status.success(), "{} {}", text(&local.stderr), text(&remote.stderr));
    let (l, r): (Value, Value) = (serde_json::from_slice(&local.stdout)?, serde_json::from_slice(&remote.stdout)?);
    assert_eq!(l["logits"], r["logits"]);
    assert_eq!((l["label"].clone(), r["served_by"].as_str()), (r["label"].clone(), Some("mlp-256/1")));
    // Errors are one clean line.
    let missing = moat().args(["infer", "--url", &server.url, "--model", "ghost", "--index", "0"]).output()?;
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).starts_with("error: ") && text(&missing.stderr).contains("unknown model 'ghost'"),
        "{}",
        text(&missing.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn bad_requests_get_4xx_with_an_error_and_the_server_keeps_serving() -> TestResult {
    let dir = scratch("bad")?;
    let repo = build_repo(&dir, 2)?;
    let server = ServerProcess::start(&repo, &["--max-body-bytes", "8192"])?;
    let addr = server.addr.as_str();
    let json = [("content-type", "application/json")];
    let valid = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]});
    let check = |status: u16, body: &[u8], want: u16, needle: &str| -> TestResult {
        assert_eq!(status, want, "{}", text(body));
        let v: Value = serde_json::from_slice(body)?;
        let msg = v["error"].as_str().ok_or("no error field")?;
        assert!(msg.contains(needle), "'{needle}' not in '{msg}'");
        Ok(())
    };
    let (s, b) = raw_http(addr, "POST", "/v2/models/mlp-16/infer", &json, b"{\"inputs\": [{\"name\": ")?;
    check(s, &b, 400, "malformed inference request JSON")?;
    let mut wrong = valid.clone();
    wrong["inputs"][0]["datatype"] = json!("BOOL");
    let (s, b) = raw_http(addr, "POST", "/v2/models/mlp-16/infer", &json, wrong.to_string().as_bytes())?;
    check(s, &b, 400, "BOOL is not supported")?;
    let mut wrong = valid.clone();
    wrong["inputs"][0]["shape"] = json!([1, 63]);
    let (s, b) = raw_http(addr, "POST", "/v2/models/mlp-16/infer", &json, wrong.to_string().as_bytes())?;
    check(s, &b, 400, "has shape [1, 63]")?;
    let (s, b) = raw_http(addr, "POST", "/v2/models/ghost/infer", &json, valid.to_string().as_bytes())?;
    check(s, &b, 404, "unknown model 'ghost'")?;
    // Declared too large: refused before the body is read (it is never sent).
    let (s, b) = raw_http_headers_only(addr, "POST", "/v2/models/mlp-16/infer", 20_000)?;
    check(s, &b, 413, "exceeds the limit of 8192 bytes")?;
    let (s, b) = raw_http(addr, "GET", "/v2/models/mlp-16/versions/7", &[], b"")?;
    check(s, &b, 404, "no version '7'")?;
    let (s, b) = raw_http(addr, "DELETE", "/v2/models/mlp-16", &[], b"")?;
    check(s, &b, 405, "DELETE is not allowed")?;
    // Still serving, over a keep-alive client too.
    let (s, b) = raw_http(addr, "POST", "/v2/models/mlp-16/infer", &json, valid.to_string().as_bytes())?;
    assert_eq!(s, 200, "{}", text(&b));
    assert!(HttpClient::new(&server.url)?.is_ready()?);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn budgets_and_rate_limits_return_429_and_every_query_is_audited() -> TestResult {
    let dir = scratch("keys")?;
    let repo = build_repo(&dir, 2)?;
    let keys = dir.join("keys.json");
    std::fs::write(
        &keys,
        json!({
            "key-alice": {"name": "alice", "budget": 3},
            "key-bob": {"name": "bob", "rate_per_s": 0.5, "burst": 1},
            "key-ops": {"name": "ops", "admin": true},
        })
        .to_string(),
    )?;
    let audit = dir.join("audit.jsonl");
    let server = ServerProcess::start(
        &repo,
        &["--api-keys", keys.to_str().ok_or("path")?, "--audit-log", audit.to_str().ok_or("path")?],
    )?;
    let sample = vec![digits_test()?.sample(0).to_vec()];
    let request = InferRequest::batch(&sample, &[1, 8, 8])?;
    let anonymous = HttpClient::new(&server.url)?;
    assert!(anonymous.is_ready()?, "probes need no key");
    assert_eq!(anonymous.infer("mlp-16", None, &request).err().and_then(|e| e.status()), Some(401));
    let alice = HttpClient::new(&server.url)?.with_api_key("key-alice");
    for _ in 0..3 {
        alice.infer("mlp-16", None, &request)?;
    }
    match alice.infer("mlp-16", None, &request) {
        Err(ClientError::Status { status: 429, message, retry_after: None }) => {
            assert!(message.contains("budget exhausted"), "{message}")
        }
        other => return Err(format!("expected 429 budget, got {other:?}").into()),
    }
    let bob = HttpClient::new(&server.url)?.with_api_key("key-bob");
    bob.infer("mlp-16", None, &request)?;
    match bob.infer("mlp-16", None, &request) {
        Err(ClientError::Status { status: 429, message, retry_after: Some(wait) }) => {
            assert!(message.contains("rate limit"), "{message}");
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2), "{wait:?}");
        }
        other => return Err(format!("expected 429 rate, got {other:?}").into()),
    }
    assert_eq!(alice.metrics().err().and_then(|e| e.status()), Some(403));
    let metrics = HttpClient::new(&server.url)?.with_api_key("key-ops").metrics()?;
    assert!(metrics.contains("moat_rejections_total{reason=\"budget_exhausted\"} 1"), "{metrics}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&audit)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let who: Vec<(Option<&str>, u64)> =
        lines.iter().map(|l| (l["key"].as_str(), l["status"].as_u64().unwrap_or(0))).collect();
    assert_eq!(
        who,
        vec![
            (None, 401),
            (Some("alice"), 200),
            (Some("alice"), 200),
            (Some("alice"), 200),
            (Some("alice"), 429),
            (Some("bob"), 200),
            (Some("bob"), 429)
        ]
    );
    assert!(lines.iter().all(|l| l["time_ms"].as_u64().is_some() && l["route"] == "model"));
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn metrics_parse_as_prometheus_text() -> TestResult {
    let dir = scratch("metrics")?;
    let repo = build_repo(&dir, 2)?;
    let server = ServerProcess::start(&repo, &["--policy", "uniform"])?;
    let client = HttpClient::new(&server.url)?;
    let request = InferRequest::batch(&vec![digits_test()?.sample(0).to_vec(); 4], &[1, 8, 8])?;
    for _ in 0..3 {
        client.infer("mlp-64", None, &request)?;
        client.infer_task("digits", &request)?;
    }
    let _ = client.infer("ghost", None, &request);
    let text = client.metrics()?;
    let mut samples = 0;
    for line in text.lines() {
        assert!(valid_prometheus_line(line), "not Prometheus text: {line}");
        samples += usize::from(!line.starts_with('#'));
    }
    assert!(samples > 20, "{text}");
    for needle in [
        "moat_inference_requests_total{model=\"mlp-64\",version=\"1\",outcome=\"success\"} ",
        "moat_inference_samples_total{model=\"mlp-64\",version=\"1\"} ",
        "moat_http_requests_total{route=\"/v2/models/{model}/infer\",method=\"POST\",code=\"404\"} 1",
        "moat_task_requests_total{task=\"digits\"} 3",
        "moat_task_goodput_total{task=\"digits\"} 3",
        "moat_task_goodput_ratio{task=\"digits\"} 1",
        "moat_inference_duration_seconds_bucket{model=\"mlp-64\",version=\"1\",le=\"+Inf\"} ",
        "# TYPE moat_secure_session_bytes_total counter",
        "moat_models_ready 3",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    let selections: f64 = text
        .lines()
        .filter(|l| l.starts_with("moat_task_selections_total{task=\"digits\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(selections, 3.0);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn sigterm_drains_and_exits_cleanly() -> TestResult {
    let dir = scratch("sigterm")?;
    let repo = build_repo(&dir, 2)?;
    let mut server = ServerProcess::start(&repo, &["--shutdown-grace", "5s"])?;
    assert!(HttpClient::new(&server.url)?.is_ready()?);
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
    assert!(status.success());
    let start = Instant::now();
    let exit = loop {
        if let Some(s) = server.child.try_wait()? {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("server did not exit within 10 s of SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}: {}", server.log());
    assert!(server.log().contains("draining"), "{}", server.log());
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn loadtest_runs_against_the_server_without_errors() -> TestResult {
    let dir = scratch("load")?;
    let repo = build_repo(&dir, 2)?;
    let server = ServerProcess::start(&repo, &[])?;
    let out = moat()
        .args([
            "loadtest",
            "--url",
            &server.url,
            "--model",
            "mlp-64",
            "--connections",
            "8",
            "--duration",
            "1s",
            "--json",
        ])
        .arg("--compare-onnx")
        .arg(repo.join("mlp-64/1/model.onnx"))
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64().is_some_and(|n| n > 50), "{report}");
    assert!(
        report["latency"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0)
            && report["in_process"]["p50_ms"].as_f64().is_some()
    );
    let task = moat()
        .args([
            "loadtest",
            "--url",
            &server.url,
            "--model",
            "digits",
            "--task",
            "--connections",
            "2",
            "--duration",
            "300ms",
        ])
        .args(["--binary", "--param", "min_accuracy=50", "--json"])
        .output()?;
    assert!(task.status.success(), "{}", text(&task.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&task.stdout)?["errors"], 0);
    let remote = moat().args(["loadtest", "--url", "http://192.0.2.1:8000", "--model", "m"]).output()?;
    assert!(!remote.status.success() && text(&remote.stderr).contains("loopback"), "{}", text(&remote.stderr));
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
