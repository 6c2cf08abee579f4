//! `moat attack fusion` and `moat infer --fusion` as real processes on MNIST (`MOAT_DATA_DIR`
//! or `../shared/data` beside the checkout; without it the tests print a notice and pass).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod secure_util;
mod serve_util;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MOAT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    dir.join("mnist").is_dir().then_some(dir)
}

fn lenet() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx").display().to_string()
}

fn moat(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_moat")).args(args).output()
}

#[test]
fn the_sweep_writes_a_report_and_a_plot_and_catches_the_cheaper_model() -> TestResult {
    let Some(dir) = data_dir() else {
        eprintln!("no MNIST data: skipping");
        return Ok(());
    };
    let out_dir = std::env::temp_dir().join(format!("moat-fusion-{}", std::process::id()));
    let (model, data, out) = (lenet(), dir.display().to_string(), out_dir.display().to_string());
    let args = ["attack", "fusion", &model, "--dataset", "mnist", "--data-dir", &data, "--samples", "600"];
    let run = moat(
        &[&args[..], &["--n", "20", "--batches", "60", "--worse-frac-bits", "3", "--out", &out, "--json"]].concat(),
    )?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out_dir.join("report.json"))?)?;
    assert!(std::fs::read_to_string(out_dir.join("detection_vs_rate.svg"))?.contains("<svg"));
    let point = |name: &str| report["points"].as_array().and_then(|p| p.iter().find(|x| x["name"] == name).cloned());
    let honest = point("honest").ok_or("no honest point")?;
    assert_eq!(honest["detected"], 0, "an honest server with honest-model labels is never accused");
    let switch = point("switch-model").ok_or("no switch point")?;
    assert_eq!(switch["measured"], 1.0, "two models in one batch are always evidence");
    assert_eq!(report["shape"]["m"], 90, "the helper's m for a 5-point-worse model at 99 %");
    // A pool of the 30 public samples (of 300) the committed model finds hardest: the substitute
    // disagrees on far more of it, so the helper needs far fewer known answers.
    let hard = moat(
        &[&args[..], &["--n", "20", "--batches", "60", "--worse-frac-bits", "3", "--pool", "hardest:30"]].concat(),
    )?;
    assert!(hard.status.success(), "{}", String::from_utf8_lossy(&hard.stderr));
    let out = String::from_utf8_lossy(&hard.stdout);
    let line = out.lines().find(|l| l.starts_with("pool hardest:30")).ok_or("no pool line")?;
    assert!(line.contains("overhead"), "{line}");
    assert!(out.contains("cascade server"), "{out}");
    let hard_json = moat(
        &[&args[..], &["--n", "20", "--batches", "60", "--worse-frac-bits", "3", "--pool", "hardest:30", "--json"]]
            .concat(),
    )?;
    let hard_report: serde_json::Value = serde_json::from_slice(&hard_json.stdout)?;
    let m = hard_report["shape"]["m"].as_u64().ok_or("no m")?;
    assert!((1..30).contains(&m), "m = {m} for a hard pool");
    let (d_hard, d_random) = (
        hard_report["pool_disagreement"].as_f64().ok_or("no pool_disagreement")?,
        hard_report["random_pool_disagreement"].as_f64().ok_or("no random_pool_disagreement")?,
    );
    assert!(d_hard > 3.0 * d_random, "hard pool {d_hard} vs random {d_random}");
    std::fs::remove_dir_all(&out_dir)?;
    Ok(())
}

#[test]
fn infer_with_fusion_releases_verified_labels_and_refuses_bad_shapes_before_sending() -> TestResult {
    let Some(dir) = data_dir() else {
        eprintln!("no MNIST data: skipping");
        return Ok(());
    };
    let (model, data) = (lenet(), dir.display().to_string());
    let base = ["infer", &model, "--dataset", "mnist", "--data-dir", &data, "--index", "0", "--count", "4"];
    let pool = ["--fusion-reference", &model, "--fusion-pool", "40"];
    let ok = moat(&[&base[..], &["--fusion", "6,3"], &pool[..], &["--json"]].concat())?;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(answer["execution"], "fusion-simulated");
    assert_eq!(answer["labels"], answer["true_labels"], "LeNet-5 gets the first four test digits right");
    assert_eq!((answer["check"]["known_total"].as_u64(), answer["check"]["duplicates"].as_u64()), (Some(6), Some(3)));
    // Known answers from the 40 hardest of the 400 pool samples.
    let hard_pool = ["--fusion-reference", &model, "--fusion-pool", "400", "--fusion-hardest", "40", "--json"];
    let hard = moat(&[&base[..], &["--fusion", "6,0"], &hard_pool[..]].concat())?;
    assert!(hard.status.success(), "{}", String::from_utf8_lossy(&hard.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&hard.stdout)?;
    assert_eq!(answer["labels"], answer["true_labels"]);
    assert_eq!(answer["check"]["known_total"].as_u64(), Some(6));
    for (spec, needle) in [("0,0", "m = k = 0"), ("2,9", "k = 9 duplicates of only n = 4"), ("41,1", "pool of only 40")]
    {
        let bad = moat(&[&base[..], &["--fusion", spec], &pool[..]].concat())?;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && stderr.contains(needle) && !stderr.contains("panicked"), "{spec}: {stderr}");
    }
    Ok(())
}

/// Directly against a `moat secure server` (two processes, the real protocol): the batch runs
/// in one session, and the report gives that session's setup and per-query protocol time (as
/// `moat secure client` times its queries), its bytes, and the pool's labelling time apart.
#[test]
fn a_direct_secure_batch_reports_its_session_time_and_bytes() -> TestResult {
    let Some(dir) = data_dir() else {
        eprintln!("no MNIST data: skipping");
        return Ok(());
    };
    let (model, data) = (lenet(), dir.display().to_string());
    let (_server, addr) = secure_util::start_server(Path::new(&model), "1", "60000")?;
    let out = moat(&[
        "infer",
        "--dataset",
        "mnist",
        "--data-dir",
        &data,
        "--index",
        "0",
        "--count",
        "2",
        "--fusion",
        "3,0",
        "--fusion-connect",
        &addr,
        "--fusion-reference",
        &model,
        "--fusion-pool",
        "200",
        "--fusion-hardest",
        "20",
        "--json",
    ])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(answer["execution"], "fusion-direct");
    assert_eq!(answer["labels"], answer["true_labels"]);
    assert_eq!(answer["check"]["known_total"].as_u64(), Some(3));
    let session = &answer["session"];
    assert_eq!(session["queries"].as_u64(), Some(5), "n + m = 5 queries in one session");
    let bytes = session["bytes_sent"].as_u64().unwrap_or(0) + session["bytes_received"].as_u64().unwrap_or(0);
    assert_eq!(answer["bytes"].as_u64(), Some(bytes));
    assert!(bytes > session["setup_bytes"].as_u64().unwrap_or(u64::MAX));
    let (seconds, queries) =
        (answer["seconds"].as_f64().unwrap_or(0.0), session["query_seconds"].as_f64().unwrap_or(0.0));
    assert!(queries > 0.0 && queries <= seconds, "query time {queries} within the batch's {seconds} s");
    assert!(answer["pool_seconds"].as_f64().is_some_and(|p| p > 0.0));
    Ok(())
}

/// Against a real `moat serve` whose LeNet-5 takes at most 16 samples a request: a Fusion batch
/// of N = 19 to the named model goes as two requests, each answer carrying the same commitment,
/// and is verified; the same batch to a non-disclosing task (each part would be routed on its
/// own, with no commitment to tie the parts together) is refused before any query reaches the
/// server.
#[test]
fn a_batch_over_max_batch_size_splits_only_where_commitments_tie_the_parts() -> TestResult {
    let Some(dir) = data_dir() else {
        eprintln!("no MNIST data: skipping");
        return Ok(());
    };
    let scratch = serve_util::scratch("fusion-max-batch")?;
    let tasks = serde_json::json!({"hidden": {"policy": "fastest", "models": ["lenet5"]}});
    let repo = serve_util::build_lenet_repo(&scratch, Some(&tasks))?;
    let config = serde_json::json!({ "latency": { "warmup": 2, "runs": 20 }, "max_batch_size": 16 });
    std::fs::write(repo.join("lenet5").join("config.json"), config.to_string())?;
    let server = serve_util::ServerProcess::start(&repo, &[])?;
    let (model, data) = (lenet(), dir.display().to_string());
    let base = ["infer", "--url", &server.url, "--dataset", "mnist", "--data-dir", &data, "--index", "0", "--count"];
    let fusion = ["10", "--fusion", "6,3", "--fusion-reference", &model, "--fusion-pool", "40"];
    let served = || -> Result<u64, Box<dyn std::error::Error>> {
        let (status, body) = serve_util::raw_http(&server.addr, "GET", "/v2/models/lenet5/stats", &[], b"")?;
        assert_eq!(status, 200, "{}", serve_util::text(&body));
        let stats: serde_json::Value = serde_json::from_slice(&body)?;
        stats["model_stats"][0]["inference_count"].as_u64().ok_or_else(|| "no inference_count".into())
    };
    let split = moat(&[&base[..], &fusion[..], &["--model", "lenet5", "--json"]].concat())?;
    assert!(split.status.success(), "{}", String::from_utf8_lossy(&split.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&split.stdout)?;
    assert_eq!(answer["check"]["model"]["commitment"].as_str().map(str::len), Some(64), "{answer}");
    assert_eq!(served()?, 19, "n + m + k = 19 samples in two requests");
    let refused = moat(&[&base[..], &fusion[..], &["--model", "hidden"]].concat())?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("max_batch_size") && !stderr.contains("panicked"), "{stderr}");
    assert_eq!(served()?, 19, "nothing was sent for the refused batch");
    // An auditor: the commitment the batch saw opens to the served file, not to another one.
    let seen = answer["check"]["model"]["commitment"].as_str().ok_or("no commitment")?;
    let audit = ["audit", "--url", &server.url, "--model", "lenet5", "--version", "1", "--commitment", seen, "--file"];
    let opens = moat(&[&audit[..], &[model.as_str()]].concat())?;
    assert!(opens.status.success(), "{}", String::from_utf8_lossy(&opens.stderr));
    let card = model.replace(".onnx", ".card.json");
    let wrong = moat(&[&audit[..], &[card.as_str()]].concat())?;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && stderr.contains("does not open"), "{stderr}");
    drop(server);
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
