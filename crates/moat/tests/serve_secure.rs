//! End-to-end tests of secure (two-party) sessions in `moat serve`: the real binary on loopback
//! serving the trained LeNet-5 (`models/lenet5-mnist.onnx`), admission over HTTP with API keys,
//! sessions on the session port through moat-client and through `moat infer --url --secure`.
//!
//! Inputs are MNIST-like images made from the embedded digits set (no dataset files needed);
//! only inputs whose plaintext logits have a clear winner are used, so the fixed-point secure
//! answer must equal the plaintext float answer.

mod serve_util;

use std::time::{Duration, Instant};

use moat_client::{Admission, ClientError, HttpClient, InferRequest, SecureClient, SessionRequest};
use moat_mpc::engine::{ClientSession, Honest, Reveal};
use moat_nn::data::digits::{DIGITS_MEAN, DIGITS_STD};
use serde_json::{Value, json};
use serve_util::*;

/// MNIST's normalisation (the LeNet-5 card's).
const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;

/// MNIST-like inputs: digits test images (8×8) upscaled bilinearly to 20×20, centred in 28×28
/// as MNIST digits are, normalised like MNIST.
fn mnist_like(n: usize) -> Result<Vec<Vec<f32>>, Error> {
    let test = digits_test()?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n.min(test.len()) {
        let src: Vec<f32> = test.sample(i).iter().map(|x| (x * DIGITS_STD + DIGITS_MEAN).clamp(0.0, 1.0)).collect();
        let at = |y: usize, x: usize| src[y * 8 + x];
        let mut image = vec![(0.0 - MNIST_MEAN) / MNIST_STD; 28 * 28];
        for y in 0..20 {
            for x in 0..20 {
                let sy = ((y as f32 + 0.5) * 0.4 - 0.5).clamp(0.0, 7.0);
                let sx = ((x as f32 + 0.5) * 0.4 - 0.5).clamp(0.0, 7.0);
                let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
                let (y1, x1) = ((y0 + 1).min(7), (x0 + 1).min(7));
                let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
                let v = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x1))
                    + fy * ((1.0 - fx) * at(y1, x0) + fx * at(y1, x1));
                image[(y + 4) * 28 + x + 4] = (v - MNIST_MEAN) / MNIST_STD;
            }
        }
        out.push(image);
    }
    Ok(out)
}

/// Inputs whose plaintext logits (asked of the server) have a margin of at least 1 between
/// the two best classes, with their plaintext labels; at most `want`.
fn clear_inputs(http: &HttpClient, target: &str, want: usize) -> Result<(Vec<Vec<f32>>, Vec<usize>), Error> {
    let candidates = mnist_like(40)?;
    let answer =
        http.infer(target, None, &InferRequest::batch(&candidates, &[1, 28, 28])?.with_output("logits", false, None))?;
    let (mut inputs, mut labels) = (Vec::new(), Vec::new());
    for (input, logits) in candidates.into_iter().zip(answer.logits()?) {
        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] >= 1.0 && inputs.len() < want {
            let label = logits.iter().position(|&l| l == sorted[0]).ok_or("argmax")?;
            inputs.push(input);
            labels.push(label);
        }
    }
    if inputs.len() < want {
        return Err(format!("only {} of the MNIST-like inputs have a clear plaintext label", inputs.len()).into());
    }
    Ok((inputs, labels))
}

fn keys_file(dir: &std::path::Path, keys: &Value) -> Result<String, Error> {
    let path = dir.join("keys.json");
    std::fs::write(&path, keys.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}

/// `moat infer --url URL --secure …` with JSON output.
fn secure_cli(server: &ServerProcess, key: &str, extra: &[&str]) -> Result<std::process::Output, Error> {
    Ok(moat()
        .args(["infer", "--url", &server.url, "--secure", "--api-key", key, "--json", "--timeout", "60s"])
        .args(extra)
        .output()?)
}

fn metrics(server: &ServerProcess) -> Result<String, Error> {
    Ok(HttpClient::new(&server.url)?.with_api_key("ops-key").metrics()?)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn secure_labels_equal_plaintext_labels_via_the_library_and_the_cli_while_http_keeps_serving() -> TestResult {
    let dir = scratch("secure-labels")?;
    let repo = build_lenet_repo(&dir, None)?;
    let keys = keys_file(&dir, &json!({"alice-key": {"name": "alice"}, "ops-key": {"admin": true}}))?;
    let audit = dir.join("audit.jsonl");
    let server = ServerProcess::start(&repo, &["--api-keys", &keys, "--audit-log", &audit.to_string_lossy()])?;
    let http = HttpClient::new(&server.url)?.with_api_key("alice-key");
    let meta = http.server_metadata()?;
    assert!(meta["extensions"].as_array().is_some_and(|e| e.contains(&json!("moat_secure_sessions"))), "{meta}");
    assert_eq!(meta["parameters"]["secure_sessions"]["protocol"], "moat-2pc/3");

    let (inputs, plaintext) = clear_inputs(&http, "lenet5", 4)?;
    let mut distinct = plaintext.clone();
    distinct.dedup();
    assert!(distinct.len() > 1, "the inputs should not all have one label: {plaintext:?}");

    // The library: one session of four queries, run on a thread while this one keeps asking
    // for plaintext inferences.
    let client = SecureClient::new(http.clone());
    let admission = client.admit_model("lenet5", None, &SessionRequest::queries(4))?;
    assert_eq!((admission.queries, admission.served_by().as_deref()), (4, Some("lenet5/1")));
    let mut session = client.connect(&admission, moat_client::Seed::from_os()?)?;
    assert_eq!(session.input_shape(), &[1, 28, 28]);
    // The protocol's hello commits to the model the admission named; the admin opening ties
    // that commitment to the served file.
    let seen = session.model_commitment().ok_or("no commitment in the hello")?.to_string();
    assert_eq!(admission.model_commitment(), Some(seen.as_str()));
    let opening = HttpClient::new(&server.url)?.with_api_key("ops-key").commitment_opening("lenet5", Some("1"))?;
    opening.verify_seen(&seen, &std::fs::read(repo.join("lenet5").join("1").join("model.onnx"))?)?;
    // A plaintext request while the session is open.
    let one = InferRequest::batch(&inputs[..1], &[1, 28, 28])?.with_output("label", false, None);
    assert_eq!(http.infer("lenet5", None, &one)?.labels()?, vec![plaintext[0]]);
    let queries = std::thread::spawn({
        let inputs = inputs.clone();
        move || -> Result<(Vec<usize>, moat_client::SessionStats), ClientError> {
            let labels = inputs.iter().map(|x| session.infer(x)).collect::<Result<Vec<_>, _>>()?;
            Ok((labels, session.close()?))
        }
    });
    let (mut answered_meanwhile, mut plaintext_requests, mut slowest) = (0, 2.0, Duration::ZERO);
    while !queries.is_finished() {
        plaintext_requests += 1.0;
        let started = Instant::now();
        let labels = http.infer("lenet5", None, &one)?.labels()?;
        slowest = slowest.max(started.elapsed());
        assert_eq!(labels, vec![plaintext[0]]);
        if !queries.is_finished() {
            answered_meanwhile += 1;
        }
    }
    let (secure, stats) = queries.join().map_err(|_| "secure thread panicked")??;
    eprintln!(
        "secure labels {secure:?}; {answered_meanwhile} plaintext requests answered meanwhile (slowest {slowest:?})"
    );
    assert_eq!(secure, plaintext, "secure labels must equal the plaintext labels");
    assert!(answered_meanwhile >= 1, "no plaintext request was answered during the secure queries");
    assert!(slowest < Duration::from_secs(5), "a plaintext request waited {slowest:?} behind a secure session");
    assert_eq!(stats.queries, 4);
    assert!(stats.bytes_sent > 1_000_000 && stats.bytes_received > 100_000, "{stats:?}");

    // The real command line: the four inputs from one file are four queries of one session.
    let file = dir.join("inputs.json");
    std::fs::write(&file, serde_json::to_string(&inputs)?)?;
    let out = secure_cli(
        &server,
        "alice-key",
        &["--model", "lenet5", "--insecure-seed", "3", "--input", &file.to_string_lossy()],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["labels"], json!(plaintext), "{report}");
    assert_eq!((report["execution"].as_str(), report["queries"].as_u64()), (Some("secure"), Some(4)));
    assert_eq!((report["insecure_seed"].as_u64(), report["served_by"].as_str()), (Some(3), Some("lenet5/1")));
    assert_eq!(report["private"], false, "{report}");
    assert!(report["bytes_sent"].as_u64().is_some_and(|b| b > 1_000_000), "{report}");
    assert!(report["seconds_per_query"].as_f64().is_some_and(|s| s > 0.0), "{report}");
    // The human-readable form prints the labels and the session's traffic.
    let out = moat()
        .args(["infer", "--url", &server.url, "--secure", "--api-key", "alice-key", "--model", "lenet5"])
        .args(["--input", &file.to_string_lossy()])
        .output()?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let expected: Vec<String> = plaintext.iter().map(usize::to_string).collect();
    assert!(printed.contains(&format!("labels {} (secure execution)", expected.join(" "))), "{printed}");
    // A default run draws its seed from the OS and never prints one.
    assert!(printed.contains("MiB sent") && !printed.contains("seed"), "{printed}");

    // Metrics: three completed sessions, bytes both ways, their durations.
    let text_metrics = metrics(&server)?;
    assert!(text_metrics.lines().all(valid_prometheus_line), "{text_metrics}");
    assert_eq!(metric(&text_metrics, "moat_secure_sessions_total{outcome=\"completed\"}"), 3.0, "{text_metrics}");
    assert!(metric(&text_metrics, "moat_secure_session_bytes_total{direction=\"in\"}") > 3e6);
    assert!(metric(&text_metrics, "moat_secure_session_bytes_total{direction=\"out\"}") > 3e5);
    assert_eq!(metric(&text_metrics, "moat_secure_session_duration_seconds_count"), 3.0);
    assert!(metric(&text_metrics, "moat_secure_session_duration_seconds_sum") > 0.0);
    // Samples: 40 candidates and the plaintext requests, 3 × 4 secure queries.
    let samples = 40.0 + (plaintext_requests - 1.0) + 12.0;
    assert_eq!(metric(&text_metrics, "moat_inference_samples_total{model=\"lenet5\",version=\"1\"}"), samples);

    // The audit log: an admission and a session line per session, for alice.
    let lines: Vec<Value> =
        std::fs::read_to_string(&audit)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let sessions: Vec<&Value> = lines.iter().filter(|l| l["secure"]["event"] == "session").collect();
    assert_eq!(sessions.len(), 3, "{lines:?}");
    assert!(sessions.iter().all(|l| l["key"] == "alice" && l["secure"]["answered"] == 4 && l["status"] == 200));
    assert_eq!(lines.iter().filter(|l| l["secure"]["event"] == "admission").count(), 3);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn secure_sessions_follow_task_policies_budgets_limits_and_token_rules() -> TestResult {
    let dir = scratch("secure-rules")?;
    let tasks = json!({"mnist-open": {"disclose_model": true, "models": ["lenet5"]}});
    let repo = build_lenet_repo(&dir, Some(&tasks))?;
    let keys = keys_file(
        &dir,
        &json!({"bob-key": {"name": "bob", "budget": 5}, "carol-key": {"name": "carol"}, "ops-key": {"admin": true}}),
    )?;
    let server = ServerProcess::start(&repo, &["--api-keys", &keys, "--max-secure-sessions", "2"])?;
    let carol = HttpClient::new(&server.url)?.with_api_key("carol-key");
    let (inputs, _) = clear_inputs(&carol, "lenet5", 2)?;
    let bob = SecureClient::new(HttpClient::new(&server.url)?.with_api_key("bob-key"));

    // A task with a spec: routed by its policy; this task does not name its model.
    let request = InferRequest::batch(&inputs[..1], &[1, 28, 28])?
        .with_output("label", false, None)
        .with_spec(Some(90.0), Some(1000.0));
    let plaintext = carol.infer_task("mnist", &request)?.labels()?;
    let admission = bob.admit_task("mnist", &SessionRequest::queries(1).with_spec(Some(90.0), Some(1000.0)))?;
    assert_eq!(admission.model_name, None, "{admission:?}");
    assert_eq!(admission.parameters.task.as_deref(), Some("mnist"));
    let mut session = bob.connect(&admission, moat_client::Seed::from_os()?)?;
    assert_eq!(vec![session.infer(&inputs[0])?], plaintext);
    // The grant is enforced locally too.
    assert!(matches!(session.infer(&inputs[0]), Err(ClientError::Invalid(_))));
    session.close()?;
    // A disclosing task names it.
    let open = bob.admit_task("mnist-open", &SessionRequest::queries(1).with_spec(Some(90.0), None))?;
    assert_eq!((open.served_by().as_deref(), open.parameters.spec_met), (Some("lenet5/1"), Some(true)));

    // A client that tries more queries than granted is cut off by the server.
    let cut = bob.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let mut ch = bob.open_channel(&cut)?;
    let mut raw = ClientSession::connect(&mut ch, moat_client::Seed::insecure_from_u64(22))?;
    raw.infer(&mut ch, &inputs[0], Reveal::Label, &mut Honest)?;
    assert!(raw.infer(&mut ch, &inputs[1], Reveal::Label, &mut Honest).is_err(), "a second query on a grant of one");
    drop(ch);

    // Budget 5: 3 charged so far (the unused disclosing session's token is still out), so 3
    // more are refused with 429, by the library and by the command line.
    match bob.admit_model("lenet5", None, &SessionRequest::queries(3)) {
        Err(ClientError::Status { status: 429, message, .. }) => assert!(message.contains("budget"), "{message}"),
        other => return Err(format!("expected 429, got {other:?}").into()),
    }
    let file = dir.join("three.json");
    std::fs::write(&file, serde_json::to_string(&vec![inputs[0].clone(); 3])?)?;
    let out = secure_cli(&server, "bob-key", &["--model", "lenet5", "--input", &file.to_string_lossy()])?;
    assert!(!out.status.success() && text(&out.stderr).contains("429"), "{}", text(&out.stderr));

    // Tokens: a made-up one and a used one are refused; the port keeps serving.
    let mut fake: Admission = serde_json::from_value(json!({
        "session": "00112233445566778899aabbccddeeff", "address": cut.address, "queries": 1,
        "expires_in_ms": 1000, "protocol": "moat-2pc/3",
    }))?;
    for _ in 0..2 {
        match bob.connect(&fake, moat_client::Seed::from_os()?) {
            Err(ClientError::Refused { reason, .. }) => assert_eq!(reason, moat_client::Refusal::UnknownToken),
            other => return Err(format!("expected a refusal, got {other:?}").into()),
        }
        fake.session = admission.session.clone();
    }
    let last = bob.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let mut session = bob.connect(&last, moat_client::Seed::from_os()?)?;
    session.infer(&inputs[1])?;
    session.close()?;
    // Plaintext still fine.
    assert_eq!(carol.infer_task("mnist", &request)?.labels()?, plaintext);

    let deadline = Instant::now() + Duration::from_secs(20);
    let text_metrics = loop {
        let m = metrics(&server)?;
        if metric(&m, "moat_secure_sessions_total{outcome=\"completed\"}") == 2.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(metric(&text_metrics, "moat_secure_sessions_total{outcome=\"completed\"}"), 2.0, "{text_metrics}");
    assert_eq!(metric(&text_metrics, "moat_secure_sessions_total{outcome=\"aborted\"}"), 1.0);
    assert_eq!(metric(&text_metrics, "moat_rejections_total{reason=\"secure_query_limit\"}"), 1.0);
    assert_eq!(metric(&text_metrics, "moat_rejections_total{reason=\"secure_unknown_token\"}"), 2.0);
    assert_eq!(metric(&text_metrics, "moat_rejections_total{reason=\"budget_exhausted\"}"), 2.0);
    // Selections: the secure session's and the two plaintext task requests'.
    assert_eq!(metric(&text_metrics, "moat_task_selections_total{task=\"mnist\",model=\"lenet5\"}"), 3.0);
    assert!(server.log().contains("secure session ended"), "{}", server.log());
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
