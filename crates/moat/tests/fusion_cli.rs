//! `moat attack fusion` and `moat infer --fusion` as real processes on MNIST (`MOAT_DATA_DIR`
//! or `../shared/data` beside the checkout; without it the tests print a notice and pass).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    for (spec, needle) in [("0,0", "m = k = 0"), ("2,9", "k = 9 duplicates of only n = 4"), ("41,1", "pool of only 40")]
    {
        let bad = moat(&[&base[..], &["--fusion", spec], &pool[..]].concat())?;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && stderr.contains(needle) && !stderr.contains("panicked"), "{spec}: {stderr}");
    }
    Ok(())
}
