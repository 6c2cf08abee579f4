//! Acceptance suites on the real datasets (`MOAT_DATA_DIR`, e.g. `../shared/data`). Without
//! the variable they print a notice and pass; CI always sets it (`.ci/run`). Every test name
//! starts with `shared_data_`, the filter `.ci/run` selects them by.

use std::path::{Path, PathBuf};
use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("MOAT_DATA_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("MOAT_DATA_DIR is not set: skipping the data-backed suite (CI sets it)");
            None
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn moat_json(args: &[&str], data: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_moat")).args(args).env("MOAT_DATA_DIR", data).output()?;
    if !out.status.success() {
        return Err(format!("moat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn number(value: &serde_json::Value, path: &[&str]) -> f64 {
    path.iter().fold(value, |v, key| &v[*key]).as_f64().unwrap_or(f64::NAN)
}

/// Issue acceptance: LeNet-5 on MNIST reaches ≥ 98.5 % test accuracy, and fixed point
/// (ℓ = 37, f = 12) agrees with float on ≥ 99.5 % of the test set.
#[test]
fn shared_data_lenet5_mnist_trains_to_target_and_fixed_point_agrees() -> TestResult {
    let Some(data) = data_dir() else { return Ok(()) };
    let dir = std::env::temp_dir().join(format!("moat-shared-lenet-{}", std::process::id()));
    let model = dir.join("lenet5-mnist.onnx");
    let model_arg = model.to_str().ok_or("path")?;
    let started = std::time::Instant::now();
    let trained = moat_json(
        &["train", "--arch", "lenet5", "--dataset", "mnist", "--epochs", "4", "--seed", "1", "--json", "-o", model_arg],
        &data,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = number(&trained, &["card", "test_accuracy"]);
    eprintln!("lenet5/mnist: test accuracy {:.2} % in {seconds:.1} s", 100.0 * accuracy);
    assert!(accuracy >= 0.985, "test accuracy {accuracy}");
    assert_eq!(trained["card"]["members"]["count"], 60_000);

    let report = moat_json(&["inspect", model_arg, "--dataset", "mnist", "--samples", "10000", "--json"], &data)?;
    let agreement = number(&report, &["fixed_vs_float", "label_agreement"]);
    eprintln!("lenet5/mnist: fixed vs float label agreement {:.3} % over 10,000", 100.0 * agreement);
    assert_eq!(report["fixed_vs_float"]["samples"], 10_000);
    assert!(agreement >= 0.995, "agreement {agreement}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

/// The committed zoo models still load, and reproduce their cards' accuracy and the fixed-point
/// agreement on the real test sets.
#[test]
fn shared_data_committed_models_reproduce_their_cards() -> TestResult {
    let Some(data) = data_dir() else { return Ok(()) };
    for (name, dataset, samples) in [("lenet5-mnist", "mnist", "10000"), ("resnet20-cifar10", "cifar10", "2000")] {
        let model = repo_root().join("models").join(format!("{name}.onnx"));
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(model.with_extension("card.json"))?)?;
        let report = moat_json(
            &["inspect", model.to_str().ok_or("path")?, "--dataset", dataset, "--samples", samples, "--json"],
            &data,
        )?;
        let comparison = &report["fixed_vs_float"];
        let (float, agreement) = (number(comparison, &["float_accuracy"]), number(comparison, &["label_agreement"]));
        eprintln!(
            "{name}: float accuracy {:.2} %, fixed/float agreement {:.3} % on {samples}",
            100.0 * float,
            100.0 * agreement
        );
        assert!(agreement >= 0.995, "{name}: agreement {agreement}");
        if samples == "10000" {
            assert!((float - number(&card, &["test_accuracy"])).abs() < 1e-9, "{name}: card says {card}");
        } else {
            // A prefix of the test set: within a few points of the card's full-set figure.
            assert!((float - number(&card, &["test_accuracy"])).abs() < 0.03, "{name}: {float} vs card {card}");
        }
    }
    Ok(())
}

/// Issue acceptance (secure inference): the real two-party protocol between two processes gives
/// the fixed-point executor's answers — hence the simulated backend's, which equals it bit for
/// bit — on real test images.
#[test]
fn shared_data_secure_two_process_inference_matches_fixed_point() -> TestResult {
    let Some(data) = data_dir() else { return Ok(()) };
    for (name, dataset, count) in [("lenet5-mnist", "mnist", "200"), ("resnet20-cifar10", "cifar10", "40")] {
        let model = repo_root().join("models").join(format!("{name}.onnx"));
        let mut server = Command::new(env!("CARGO_BIN_EXE_moat"))
            .args(["secure", "server"])
            .arg(&model)
            .args(["--listen", "127.0.0.1:0", "--sessions", "1", "--timeout-ms", "120000"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = server.stdout.take().ok_or("server stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let addr = line.trim().strip_prefix("listening on ").ok_or("no address")?.to_string();
        let model_arg = model.to_str().ok_or("path")?;
        let report = moat_json(
            &[
                "secure",
                "client",
                "--connect",
                &addr,
                "--dataset",
                dataset,
                "--count",
                count,
                "--compare-with",
                model_arg,
                "--json",
            ],
            &data,
        );
        let status = server.wait()?;
        let report = report?;
        assert!(status.success(), "{name}: server {status}");
        let n: u64 = count.parse()?;
        eprintln!(
            "{name}: {n} private inferences, {:.3} s and {:.1} MiB each, accuracy {:.1} %, equal to fixed point: {}",
            number(&report, &["seconds_per_query"]),
            number(&report, &["bytes_per_query"]) / (1024.0 * 1024.0),
            100.0 * number(&report, &["accuracy"]),
            report["agree_with_fixed_point"]
        );
        assert_eq!(report["agree_with_fixed_point"], n, "{name}: {report}");
    }
    Ok(())
}

/// Issue 17: the scorecard's data preset attacks the committed LeNet-5 that BENCHMARKS.md
/// measures (found from the repository's root, its SHA-256 in the report's notes), so its
/// Fusion cell is that model's: the substitution caught in ≥ 99 % of the batches.
#[test]
fn shared_data_eval_loads_the_committed_victim() -> TestResult {
    let Some(data) = data_dir() else { return Ok(()) };
    let out_dir = std::env::temp_dir().join(format!("moat-eval-victim-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .current_dir(repo_root())
        .args(["eval", "--quick", "--only", "fusion", "--seed", "1", "--json", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&out_dir)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let notes = report["notes"].to_string();
    assert!(notes.contains("models/lenet5-mnist.onnx (loaded, SHA-256 "), "{notes}");
    let steps = report["steps"].as_array().ok_or("steps")?;
    assert_eq!(steps.len(), 1, "no training step: {steps:?}");
    assert!(steps[0]["command"].as_str().is_some_and(|c| c.contains("models/lenet5-mnist.onnx")), "{}", steps[0]);
    let rows = report["scorecard"]["rows"].as_array().ok_or("rows")?;
    let row = rows.iter().find(|r| r["id"] == "cheating-server").ok_or("cheating-server row")?;
    let fusion =
        row["cells"].as_array().ok_or("cells")?.iter().find(|c| c["defense"] == "fusion").ok_or("fusion cell")?;
    let detected = fusion["value"].as_f64().ok_or("value")?;
    assert!(detected >= 0.99, "{fusion}");
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}
