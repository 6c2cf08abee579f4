//! `moat attack seek` as a user runs it: against the simulated engine, and against a real
//! `moat secure server` in another process — the same parameters with the same queries.

mod secure_util;
mod serve_util;

use std::path::{Path, PathBuf};

use secure_util::{moat, start_server};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn lenet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx")
}

fn seek(extra: &[&str]) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = moat()
        .args(["attack", "seek"])
        .arg(lenet())
        .args(["--layers", "conv1,fc1", "--sample", "1,20", "--seed", "4", "--json"])
        .args(extra)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn estimates(report: &serde_json::Value) -> Vec<(String, u64, i64, u64)> {
    let mut out = Vec::new();
    for layer in report["extraction"]["layers"].as_array().into_iter().flatten() {
        let name = layer["name"].as_str().unwrap_or_default().to_string();
        for e in
            layer["weights"].as_array().into_iter().flatten().chain(layer["biases"].as_array().into_iter().flatten())
        {
            out.push((
                name.clone(),
                e["index"].as_u64().unwrap_or(u64::MAX),
                e["raw"].as_i64().unwrap_or(i64::MIN),
                e["queries"].as_u64().unwrap_or(u64::MAX),
            ));
        }
    }
    out
}

#[test]
fn seek_reads_the_same_parameters_from_a_real_server_as_from_the_simulated_engine() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-attack-e2e-{}", std::process::id()));
    let simulated = seek(&["--out", dir.to_str().ok_or("path")?])?;
    assert!(dir.join("extracted.onnx").exists() && dir.join("report.json").exists());
    let total = &simulated["scores"]["total"];
    assert!(total["parameters"].as_u64().unwrap_or(0) >= 40, "{total}");
    assert_eq!(total["failed"], 0);
    assert_eq!(total["mean_relative_error_deployed"], 0.0, "{total}");
    assert!(total["queries_per_parameter"].as_f64().unwrap_or(f64::MAX) < 50.0, "{total}");

    let (_server, addr) = start_server(&lenet(), "1", "60000")?;
    let real = seek(&["--connect", &addr])?;

    assert_eq!(real["backend"], addr.as_str());
    assert_eq!(estimates(&real), estimates(&simulated));
    assert_eq!(real["extraction"]["queries"], simulated["extraction"]["queries"]);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn seek_rejects_a_bad_victim_with_one_clear_line() -> TestResult {
    let out = moat().args(["attack", "seek", "zoo:nonsense:1,2,3"]).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error:") && stderr.lines().count() == 1, "{stderr}");
    Ok(())
}

#[test]
fn seek_through_moat_serve_is_stopped_by_the_key_budget() -> TestResult {
    let dir = serve_util::scratch("attack-budget")?;
    let repo = serve_util::build_lenet_repo(&dir, None)?;
    let keys = dir.join("keys.json");
    std::fs::write(&keys, r#"{"mallory-key": {"name": "mallory", "budget": 350}}"#)?;
    let server = serve_util::ServerProcess::start(&repo, &["--api-keys", keys.to_str().ok_or("path")?])?;
    let out = moat()
        .args(["attack", "seek"])
        .arg(lenet())
        .args(["--url", &server.url, "--api-key", "mallory-key", "--name", "lenet5", "--session-queries", "100"])
        .args(["--layers", "conv1", "--sample", "1,20", "--seed", "4", "--json"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let stopped = &report["stopped_by_service"];
    // Three sessions of 100 fit in the budget of 350, the fourth admission is refused.
    assert_eq!(stopped["queries"], 300, "{report}");
    assert!(stopped["reason"].as_str().unwrap_or_default().contains("429"), "{report}");
    assert!(stopped["parameters_extracted"].as_u64() < stopped["parameters_planned"].as_u64(), "{report}");
    Ok(())
}
