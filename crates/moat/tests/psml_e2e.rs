//! End-to-end test of `moat attack psml`: a zoo of five digits models trained on the spot with
//! the real `moat train`, served by a real `moat serve` on loopback (started by the attack's
//! `--local` mode), attacked over HTTP as a key holder; and the secure path's handshake, which
//! must not name the member of a task that hides it.

mod serve_util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use moat_client::{HttpClient, InferRequest, SecureClient, SessionRequest};
use moat_mpc::engine::{ClientSession, Honest, Reveal, Revealed};
use serde_json::{Value, json};
use serve_util::*;

const ZOO: [(&str, &str, u64); 5] = [
    ("mlp-8", "mlp:8", 1),
    ("mlp-16", "mlp:16", 2),
    ("mlp-32", "mlp:32", 3),
    ("mlp-64", "mlp:64", 4),
    ("mlp-128_64", "mlp:128,64", 5),
];

fn psml(repo: &std::path::Path, extra: &[&str]) -> Result<std::process::Output, Error> {
    Ok(moat()
        .args([
            "attack",
            "psml",
            "--dataset",
            "digits",
            "--task",
            "digits",
            "--budget",
            "600",
            "--epochs",
            "10",
            "--seed",
            "0",
            "--json",
        ])
        .arg("--local")
        .arg(repo)
        .args(extra)
        .output()?)
}

#[test]
fn fastest_policy_zoo_is_fingerprinted_and_its_victim_extracted() -> TestResult {
    let dir = scratch("psml")?;
    let repo = train_digits_repo(&dir, &ZOO, 30)?;
    let out = psml(&repo, &["--out"])?;
    // `--out` without a value is a usage error: nothing is spent.
    assert!(!out.status.success());
    let report_dir = dir.join("report");
    let out = psml(&repo, &["--out", report_dir.to_str().ok_or("path")?])?;
    assert!(out.status.success(), "psml: {}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let search = &report["search"];
    let id = search["identification_accuracy"].as_f64().ok_or("identification")?;
    assert!(id >= 0.95, "identification accuracy {id}");
    // Which members the Fastest router serves depends on the latency profiles `moat serve`
    // measures at load, which are noisy on a busy machine (a CI run measured one member on the
    // front): the test asks for at least one, and the identification above is over them.
    assert!(search["members_found"].as_u64().ok_or("members")? >= 1);
    assert_eq!(search["best_trigger_rate"].as_f64(), Some(1.0), "Fastest is deterministic");
    assert!(search["spent"].as_u64().ok_or("spent")? > 0);
    let arms = report["arms"].as_array().ok_or("arms")?;
    assert_eq!(arms.len(), 3);
    for arm in arms {
        assert!(arm["spent"].as_u64().ok_or("spent")? <= 600);
    }
    let last = |i: usize, f: &str| arms[i]["curve"][2][f].as_f64().unwrap_or(0.0);
    // Guided on a deterministic router sees exactly the victim's labels: as good as naming it.
    assert!((last(0, "fidelity") - last(2, "fidelity")).abs() < 0.05, "{arms:?}");
    assert!(last(0, "accuracy") > 0.5);
    assert!(report_dir.join("report.json").exists() && report_dir.join("extraction.svg").exists());
    // The zoo plot: every member the harness saw is a marker, named.
    let zoo = std::fs::read_to_string(report_dir.join("zoo.svg"))?;
    for (name, _, _) in ZOO {
        assert!(zoo.contains(&format!(">{name}</text>")), "{name} missing from zoo.svg");
    }
    assert!(zoo.contains("Pareto front"));

    // A grid of specs no member meets (no model answers in a nanosecond) is refused before the
    // attacker spends a sample.
    let out = psml(&repo, &["--accuracy-grid", "0:0:1", "--latency-grid", "0.000001"])?;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no member of task 'digits' meets any spec") && err.contains("nothing was queried"), "{err}");
    Ok(())
}

#[test]
fn a_zoo_of_one_model_and_an_unknown_task_are_refused_before_any_query() -> TestResult {
    let dir = scratch("psml-one")?;
    let repo = train_digits_repo(&dir, &ZOO[..1], 30)?;
    let out = psml(&repo, &[])?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nothing to fingerprint"), "{}", text(&out.stderr));
    let server = ServerProcess::start(&repo, &["--secure-addr", "off"])?;
    let out = moat()
        .args(["attack", "psml", "--dataset", "digits", "--task", "no-such-task", "--url", &server.url])
        .output()?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown task 'no-such-task'"), "{}", text(&out.stderr));
    Ok(())
}

/// Sessions on `task`, one query each: per session, the server's hello (as JSON) and the
/// revealed label of `inputs[i % len]`; then the served member of each, from the audit log.
fn sessions_on(
    client: &SecureClient,
    task: &str,
    inputs: &[Vec<f32>],
    count: usize,
    audit: &std::path::Path,
) -> Result<Vec<(String, usize, String)>, Error> {
    let before = audited_sessions(audit, task)?.len();
    let mut seen = Vec::new();
    for i in 0..count {
        let admission = client.admit_task(task, &SessionRequest::queries(1))?;
        let mut ch = client.open_channel(&admission)?;
        let mut session = ClientSession::connect(&mut ch, moat_client::Seed::from_os()?)?;
        // The whole first message: the architecture and every other field.
        let hello = serde_json::to_string(session.hello())?;
        let label = match session.infer(&mut ch, &inputs[i % inputs.len()], Reveal::Label, &mut Honest)? {
            Revealed::Label(l) => l,
            other => return Err(format!("asked for a label, got {other:?}").into()),
        };
        seen.push((hello, label));
    }
    // The audit line of a session is written when it ends: wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let members = loop {
        let members = audited_sessions(audit, task)?;
        if members.len() >= before + count || Instant::now() > deadline {
            break members;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let members = members.get(before..).ok_or("no audit lines")?;
    assert_eq!(members.len(), count, "one audit line per session");
    Ok(seen.into_iter().zip(members).map(|((hello, label), m)| (hello, label, m.clone())).collect())
}

/// The member that served each secure session on `task`, in the audit log's order.
fn audited_sessions(audit: &std::path::Path, task: &str) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let mut members = Vec::new();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line)?;
        if record["secure"]["event"] == "session" && record["target"] == task {
            members.push(record["model"].as_str().ok_or("audit line without a model")?.to_string());
        }
    }
    Ok(members)
}

/// The accuracy of the best guess of the member from the hello alone (the majority member per
/// distinct hello), and chance (the majority member overall).
fn identification_from_hello(sessions: &[(String, usize, String)]) -> (f64, f64) {
    let mut by_hello: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut overall: BTreeMap<&str, usize> = BTreeMap::new();
    for (hello, _, member) in sessions {
        *by_hello.entry(hello).or_default().entry(member).or_default() += 1;
        *overall.entry(member).or_default() += 1;
    }
    let best: usize = by_hello.values().map(|m| m.values().copied().max().unwrap_or(0)).sum();
    let chance = overall.values().copied().max().unwrap_or(0);
    (best as f64 / sessions.len() as f64, chance as f64 / sessions.len() as f64)
}

#[test]
fn a_secure_handshake_on_a_task_that_hides_its_model_identifies_the_member_at_chance() -> TestResult {
    let dir = scratch("psml-hello")?;
    // mlp-16, mlp-64 and mlp-256 (two hidden layers): three architectures, one task.
    let repo = build_repo(&dir, 3)?;
    let tasks = json!({
        "hidden": {"policy": "uniform", "epsilon": 1.0, "models": ["mlp-16", "mlp-64", "mlp-256"]},
        "open": {"policy": "uniform", "epsilon": 1.0, "disclose_model": true, "models": ["mlp-16", "mlp-64", "mlp-256"]},
    });
    std::fs::write(repo.join("tasks.json"), tasks.to_string())?;
    let audit = dir.join("audit.jsonl");
    let server = ServerProcess::start(&repo, &["--audit-log", &audit.to_string_lossy()])?;
    let http = HttpClient::new(&server.url)?;
    let client = SecureClient::new(HttpClient::new(&server.url)?);
    let test = digits_test()?;
    let inputs: Vec<Vec<f32>> = (0..6).map(|i| test.sample(i).to_vec()).collect();
    // Each member's own plaintext labels, to check what the padded members compute.
    let mut plaintext = BTreeMap::new();
    for name in ["mlp-16", "mlp-64", "mlp-256"] {
        let request = InferRequest::batch(&inputs, &[1, 8, 8])?.with_output("label", false, None);
        plaintext.insert(name.to_string(), http.infer(name, None, &request)?.labels()?);
    }

    // The spec space a user chooses in: the Pareto front's points, named only when disclosed.
    let front = |task: &str| -> Result<Vec<Value>, Error> {
        let meta = http.get_json(&format!("/v2/tasks/{task}"))?;
        Ok(meta["parameters"]["pareto_front"].as_array().cloned().ok_or("no pareto_front")?)
    };
    let (hidden_front, open_front) = (front("hidden")?, front("open")?);
    assert!(!hidden_front.is_empty() && hidden_front.len() == open_front.len(), "{hidden_front:?} {open_front:?}");
    assert!(hidden_front.iter().all(|p| p["accuracy"].is_number() && p["model"].is_null()), "{hidden_front:?}");
    assert!(open_front.iter().all(|p| p["model"].is_string()), "{open_front:?}");
    let latencies: Vec<f64> = hidden_front.iter().filter_map(|p| p["latency_ms"].as_f64()).collect();
    assert!(latencies.windows(2).all(|w| w[0] <= w[1]), "fastest first: {latencies:?}");

    let hidden = sessions_on(&client, "hidden", &inputs, 24, &audit)?;
    let served: BTreeSet<&str> = hidden.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(served.len() >= 2, "the uniform policy served {served:?}: nothing to hide");
    let hellos: BTreeSet<&str> = hidden.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(hellos.len(), 1, "every member must show the client one architecture");
    let hello: Value = serde_json::from_str(hellos.iter().next().ok_or("no hello")?)?;
    assert_eq!(hello["skeleton"]["name"], "hidden", "the hello names the task, not the member");
    let (guess, chance) = identification_from_hello(&hidden);
    assert_eq!(guess, chance, "identification from the handshake alone must be at chance");
    for (i, (_, label, member)) in hidden.iter().enumerate() {
        // The padded member computes what the member computes.
        assert_eq!(*label, plaintext[member][i % inputs.len()], "session {i}, served by {member}");
    }

    // The same members on a task that names them: the hello tells them apart (what the
    // padding closes), which shows the measurement can fail.
    let open = sessions_on(&client, "open", &inputs, 12, &audit)?;
    let (guess, chance) = identification_from_hello(&open);
    let distinct: BTreeSet<&str> = open.iter().map(|(_, _, m)| m.as_str()).collect();
    // Uniform over three: one member twelve times has probability 3⁻¹¹.
    assert!(distinct.len() >= 2, "the uniform policy served {distinct:?}");
    assert!(guess > chance && guess == 1.0, "a disclosing task shows each member's own architecture");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
