//! A standard Open Inference Protocol v2 client works unchanged against `moat serve`:
//! NVIDIA's `tritonclient[http]` (Python) reads metadata, infers with binary and JSON tensors,
//! asks for classifications and statistics, and sends a model-less task request
//! (`tests/serve_tritonclient.py`).
//!
//! Needs `python3` with `tritonclient[http]` and numpy (`pip install "tritonclient[http]" numpy`);
//! in CI (`CI=true`, where `.ci/run` installs them) the test fails without them; elsewhere it
//! prints a notice and skips, as with `MOAT_SKIP_PYCLIENTS=1`.

mod serve_util;

use std::process::Command;

use moat_nn::FloatExecutor;
use serde_json::Value;
use serve_util::*;

/// True when python3 can import tritonclient.http and numpy. Otherwise panics with install
/// instructions in CI (`CI=true`), else prints a notice and returns false (also whenever
/// `MOAT_SKIP_PYCLIENTS=1`).
fn python_ready() -> bool {
    let probe = Command::new("python3").args(["-c", "import tritonclient.http, numpy"]).output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => text(&out.stderr).lines().last().unwrap_or("import failed").to_string(),
        Err(e) => format!("cannot run python3: {e}"),
    };
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if std::env::var("MOAT_SKIP_PYCLIENTS").is_ok_and(|v| v == "1") || !in_ci {
        eprintln!(
            "NOTICE: skipping the tritonclient check (pip install \"tritonclient[http]\" numpy to run it): {why}"
        );
        return false;
    }
    panic!(
        "the standard-client check needs python3 with tritonclient[http] and numpy: run \
         `pip install \"tritonclient[http]\" numpy` (or set MOAT_SKIP_PYCLIENTS=1 to skip). Cause: {why}"
    );
}

#[test]
fn tritonclient_works_unchanged() -> TestResult {
    if !python_ready() {
        return Ok(());
    }
    let dir = scratch("pyclient")?;
    let repo = build_repo(&dir, 10)?;
    let server = ServerProcess::start(&repo, &["--seed", "3"])?;
    let test = digits_test()?;
    let samples: Vec<Vec<f32>> = (0..4).map(|i| test.sample(i).to_vec()).collect();
    let input = dir.join("input.f32");
    std::fs::write(&input, samples.iter().flatten().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/serve_tritonclient.py");
    let out = Command::new("python3").arg(script).arg(&server.addr).arg(&input).output()?;
    assert!(out.status.success(), "tritonclient script failed: {}\nserver log: {}", text(&out.stderr), server.log());
    let seen: Value = serde_json::from_slice(&out.stdout)?;

    assert_eq!(
        (seen["live"].as_bool(), seen["ready"].as_bool(), seen["model_ready"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(seen["server"]["name"], "moat");
    // The graph's own tensors: moat's exporter calls them `input` and `output`.
    assert_eq!(
        seen["metadata"]["inputs"][0],
        serde_json::json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]})
    );
    assert_eq!(
        seen["metadata"]["outputs"],
        serde_json::json!([{"name": "output", "datatype": "FP32", "shape": [-1, 10]}])
    );
    assert_eq!(seen["default_outputs"], serde_json::json!(["output"]));
    assert_eq!(seen["response"]["id"], "tc-1");
    assert_eq!(seen["response"]["outputs"][0]["parameters"]["binary_data_size"], 4 * 10 * 4);

    let graph = moat_nn::onnx::load_onnx(&repo.join("mlp-64/1/model.onnx"))?;
    for (i, s) in samples.iter().enumerate() {
        let want = FloatExecutor::logits(&graph, s)?;
        for key in ["logits", "logits_json"] {
            let got: Vec<f32> =
                seen[key][i].as_array().ok_or("row")?.iter().filter_map(Value::as_f64).map(|v| v as f32).collect();
            assert_eq!(got, want, "{key} sample {i}");
        }
        let label = FloatExecutor::predict(&graph, s)?;
        assert_eq!(seen["labels"][i].as_u64(), Some(label as u64));
        // Classification strings "value:index:label", best first.
        let top = seen["top3"][i][0].as_str().ok_or("top3")?;
        assert_eq!(top.split(':').nth(1), Some(label.to_string().as_str()), "{top}");
    }
    assert_eq!(seen["task_model_name"], "digits", "the task does not disclose the model");
    assert_eq!(seen["unknown_model_error"]["status"], "404");
    assert!(seen["unknown_model_error"]["message"].as_str().is_some_and(|m| m.contains("unknown model")));
    assert_eq!(seen["stats"]["model_stats"][0]["inference_count"], 8);
    assert_eq!(seen["index"].as_array().map(Vec::len), Some(3));
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
