//! End-to-end tests of the `moat` binary: real processes, real files, real exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moat_nn::onnx::proto::ModelProto;
use prost::Message;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn moat(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_moat")).args(args).env_remove("MOAT_DATA_DIR").output()
}

fn scratch(name: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("moat-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The failure contract: non-zero exit, one `error:` line on stderr that mentions `needle`, no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

/// Trains a tiny model on the embedded digits set and returns its path.
fn trained_model(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let model = dir.join("mlp.onnx");
    let out = moat(&[
        "train",
        "--arch",
        "mlp:32",
        "--dataset",
        "digits",
        "--epochs",
        "20",
        "--seed",
        "5",
        "--quiet",
        "--out",
        model.to_str().ok_or("path")?,
    ])?;
    assert!(out.status.success(), "train failed: {}", text(&out.stderr));
    Ok(model)
}

#[test]
fn every_subcommand_has_help() -> TestResult {
    for sub in
        [&["--help"][..], &["demo", "--help"], &["train", "--help"], &["inspect", "--help"], &["infer", "--help"]]
    {
        let out = moat(sub)?;
        assert!(out.status.success(), "{sub:?}");
        assert!(text(&out.stdout).contains("Usage"), "{sub:?}");
    }
    Ok(())
}

#[test]
fn demo_runs_on_the_embedded_default() -> TestResult {
    let dir = scratch("demo")?;
    let out = moat(&["demo", "--seed", "3", "--json", "--out", dir.to_str().ok_or("path")?])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(summary["seed"], 3);
    assert_eq!(summary["onnx_round_trip_exact"], true);
    assert!(summary["test"]["float_accuracy"].as_f64().unwrap_or(0.0) > 0.9, "{summary}");
    assert!(summary["test"]["label_agreement"].as_f64().unwrap_or(0.0) >= 0.99, "{summary}");
    // The scorecard: secure inference equals fixed point, SEEK copies the model exactly, and
    // the hardened server keeps its accuracy while the copy falls apart.
    let secure = &summary["secure"];
    assert!(secure["samples"].as_u64().unwrap_or(0) > 0);
    assert_eq!(secure["agree_with_fixed_point"], secure["samples"], "{summary}");
    let seek = &summary["seek"];
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    assert_eq!(seek["parameters"], 64 * 128 + 128 + 128 * 64 + 64 + 9 * 64 + 9);
    assert!(number(&seek["queries_per_parameter"]) < 50.0, "{summary}");
    assert!(number(&seek["mean_relative_error"]) < 3e-4, "{summary}");
    assert!(number(&seek["fidelity"]) >= 0.99, "{summary}");
    let accuracy_cost = number(&summary["test"]["fixed_accuracy"]) - number(&seek["hardened_accuracy"]);
    assert!(accuracy_cost <= 0.005, "{summary}");
    assert!(number(&seek["hardened_fidelity"]) < 0.5, "{summary}");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn train_inspect_infer_work_together() -> TestResult {
    let dir = scratch("tii")?;
    let model = trained_model(&dir)?;
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("mlp.card.json"))?)?;
    assert_eq!(card["architecture"], "mlp:32");
    assert_eq!(card["seed"], 5);
    assert_eq!(card["input"]["dataset"], "digits");
    assert!(card["test_accuracy"].as_f64().unwrap_or(0.0) > 0.8, "{card}");

    let model_arg = model.to_str().ok_or("path")?;
    let out = moat(&["inspect", model_arg, "--json", "--samples", "20"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["parameters"], 64 * 32 + 32 + 32 * 10 + 10);
    assert_eq!(report["relus"], 32);
    assert_eq!(report["fixed_vs_float"]["samples"], 20);

    let out = moat(&["inspect", model_arg, "--dataset", "digits"])?;
    assert!(text(&out.stdout).contains("label agreement"), "{}", text(&out.stderr));

    for fixed in [false, true] {
        let mut args = vec!["infer", model_arg, "--dataset", "digits", "--index", "0", "--json"];
        if fixed {
            args.push("--fixed");
        }
        let out = moat(&args)?;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(p["logits"].as_array().map(Vec::len), Some(10));
        assert!(p["label"].as_u64().is_some_and(|l| l < 10));
    }

    // A JSON input of the wrong size is a shape error.
    let input = dir.join("x.json");
    std::fs::write(&input, "[1, 2, 3]")?;
    let out = moat(&["infer", model_arg, "--input", input.to_str().ok_or("path")?])?;
    assert_clean_failure(&out, "64 input values");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn bad_models_fail_cleanly() -> TestResult {
    let dir = scratch("bad")?;
    let model = trained_model(&dir)?;
    let bytes = std::fs::read(&model)?;

    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf \xff\xff\xff\xff")?;
    assert_clean_failure(&moat(&["inspect", garbage.to_str().ok_or("path")?])?, "onnx");

    let truncated = dir.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    assert_clean_failure(&moat(&["inspect", truncated.to_str().ok_or("path")?])?, "onnx");

    let missing = dir.join("missing.onnx");
    assert_clean_failure(&moat(&["inspect", missing.to_str().ok_or("path")?])?, "missing.onnx");

    // An operator moat does not implement: the error names the op and the node.
    let mut proto = ModelProto::decode(bytes.as_slice())?;
    let graph = proto.graph.as_mut().ok_or("graph")?;
    let node = graph.node.iter_mut().find(|n| n.op_type == "Relu").ok_or("relu")?;
    node.op_type = "LSTM".into();
    let node_name = node.name.clone();
    let unsupported = dir.join("lstm.onnx");
    std::fs::write(&unsupported, proto.encode_to_vec())?;
    let out = moat(&["inspect", unsupported.to_str().ok_or("path")?])?;
    assert_clean_failure(&out, "LSTM");
    assert!(text(&out.stderr).contains(&node_name), "{}", text(&out.stderr));

    // A weight matrix of the wrong shape: the error names the node.
    let mut proto = ModelProto::decode(bytes.as_slice())?;
    let graph = proto.graph.as_mut().ok_or("graph")?;
    let gemm = graph.node.iter().rfind(|n| n.op_type == "Gemm").ok_or("gemm")?.clone();
    let weight_name = gemm.input.get(1).ok_or("gemm weight")?.clone();
    let init = graph.initializer.iter_mut().find(|t| t.name == weight_name).ok_or("init")?;
    init.dims = vec![init.dims[0] * 2, init.dims[1] / 2];
    let mismatched = dir.join("mismatch.onnx");
    std::fs::write(&mismatched, proto.encode_to_vec())?;
    assert_clean_failure(&moat(&["inspect", mismatched.to_str().ok_or("path")?])?, &gemm.name);

    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[test]
fn bad_arguments_fail_cleanly() -> TestResult {
    assert_clean_failure(&moat(&["train", "--arch", "vgg16", "--epochs", "1"])?, "vgg16");
    assert_clean_failure(&moat(&["train", "--dataset", "mnist", "--epochs", "1"])?, "mnist");
    assert_clean_failure(&moat(&["train", "--dataset", "imagenet"])?, "imagenet");
    assert_clean_failure(&moat(&["train", "--ring-bits", "80"])?, "ring");
    Ok(())
}

/// The options of `help` (an option's header line and its description) that mention a seed.
fn seed_options(help: &str) -> Vec<String> {
    let mut options: Vec<String> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') {
            options.push(t.to_string());
        } else if let Some(last) = options.last_mut() {
            last.push(' ');
            last.push_str(t);
        }
    }
    options.into_iter().filter(|o| o.split_whitespace().next().is_some_and(|flag| flag.contains("seed"))).collect()
}

#[test]
fn no_command_holding_session_secrets_has_a_fixed_default_seed() -> TestResult {
    for command in [&["secure", "server"][..], &["secure", "client"], &["infer"], &["serve"], &["bench", "secure"]] {
        let out = moat(&[command, &["--help"]].concat())?;
        assert!(out.status.success(), "{command:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        for option in seed_options(&help) {
            // Public seeds (dataset splits, model selection, benchmark weights) may have one.
            let public = ["--split-seed", "--seed"].iter().any(|p| option.starts_with(&format!("{p} ")));
            assert!(public || !option.contains("[default:"), "{command:?}: {option}");
            if option.starts_with("--insecure-seed") {
                assert!(option.contains("INSECURE") && !option.contains("[default:"), "{command:?}: {option}");
            }
        }
        if command[0] == "secure" {
            let seeds = seed_options(&help);
            assert!(seeds.iter().any(|o| o.starts_with("--insecure-seed")), "{command:?}: {seeds:?}");
            assert!(!seeds.iter().any(|o| o.starts_with("--seed ")), "{command:?}: {seeds:?}");
        }
    }
    Ok(())
}

#[test]
fn experiments_draw_their_seed_from_the_os_unless_given() -> TestResult {
    let commands = [
        &["attack", "seek"][..],
        &["attack", "mia"],
        &["attack", "psml"],
        &["attack", "fusion"],
        &["bench", "secure"],
        &["bench", "relu"],
        &["demo"],
        &["eval"],
        &["train"],
        &["inspect"],
        &["loadtest"],
    ];
    for command in commands {
        let out = moat(&[command, &["--help"]].concat())?;
        assert!(out.status.success(), "{command:?}: {}", text(&out.stderr));
        let seeds = seed_options(&text(&out.stdout));
        let seed = seeds.iter().find(|o| o.starts_with("--seed ")).ok_or(format!("{command:?}: no --seed"))?;
        assert!(!seed.contains("[default:"), "{command:?}: {seed}");
    }
    Ok(())
}

#[test]
fn infer_reads_and_writes_numpy_batches() -> TestResult {
    use moat_nn::data::npy::{Array, read_npy, read_npz, write_npy, write_npz};
    let dir = scratch("npy")?;
    let model = trained_model(&dir)?;
    let graph = moat_nn::onnx::load_onnx(&model)?;
    let test = moat_nn::data::load("digits", None, 0)?.test;
    let samples: Vec<f32> = (0..5).flat_map(|i| test.sample(i).to_vec()).collect();
    let path = |name: &str| dir.join(name).to_str().map(str::to_string).ok_or("path");
    let (batch, out) = (path("batch.npy")?, path("out.npy")?);
    std::fs::write(&batch, write_npy(&Array::new(vec![5, 1, 8, 8], samples.clone())?))?;
    let model_arg = model.to_str().ok_or("path")?;
    for fixed in [false, true] {
        let mut args = vec!["infer", model_arg, "--input", &batch, "--output-npy", &out, "--json"];
        if fixed {
            args.push("--fixed");
        }
        let run = moat(&args)?;
        assert!(run.status.success(), "{}", text(&run.stderr));
        let report: serde_json::Value = serde_json::from_slice(&run.stdout)?;
        assert_eq!(report["samples"], 5);
        let written = read_npy(&std::fs::read(&out)?)?;
        assert_eq!(written.shape(), &[5, 10]);
        for (i, row) in written.data().chunks(10).enumerate() {
            let x = &samples[i * 64..(i + 1) * 64];
            if fixed {
                let q = moat_nn::QuantizedGraph::new(&graph, moat_nn::FixedPoint::default())?;
                assert_eq!(row, q.logits(x)?.as_slice(), "fixed sample {i}");
            } else {
                assert_eq!(row, moat_nn::FloatExecutor::run(&graph, x)?.as_slice(), "float sample {i}");
            }
            assert_eq!(report["predictions"][i]["outputs"]["output"].as_array().map(Vec::len), Some(10));
        }
    }
    // .npz: the array named by --input-name (else the model's input name); every output by name.
    let (archive, outz) = (path("batch.npz")?, path("out.npz")?);
    let first = Array::new(vec![1, 64], samples[..64].to_vec())?;
    let whole = Array::new(vec![5, 64], samples.clone())?;
    std::fs::write(&archive, write_npz(&[("input", &first), ("other", &whole)])?)?;
    let run = moat(&["infer", model_arg, "--input", &archive, "--output-npy", &outz])?;
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(read_npz(&std::fs::read(&outz)?, Some("output"))?.shape(), &[1, 10]);
    let run = moat(&["infer", model_arg, "--input", &archive, "--input-name", "other", "--output-npy", &outz])?;
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(read_npz(&std::fs::read(&outz)?, Some("output"))?.shape(), &[5, 10]);
    assert_clean_failure(&moat(&["infer", model_arg, "--input", &archive, "--input-name", "x"])?, "no array 'x'");

    // Hostile files: clear one-line errors.
    let good = std::fs::read(&batch)?;
    let bad = |name: &str, bytes: &[u8]| -> Result<Output, Box<dyn std::error::Error>> {
        let p = path(name)?;
        std::fs::write(&p, bytes)?;
        Ok(moat(&["infer", model_arg, "--input", &p])?)
    };
    let npy = |descr: &str, shape: &str, data: &[u8]| {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    };
    assert_clean_failure(&bad("c8.npy", &npy("<c8", "(1, 64)", &[0; 512]))?, "unsupported dtype '<c8'");
    assert_clean_failure(&bad("short.npy", &good[..good.len() - 3])?, "needs 1280 bytes");
    assert_clean_failure(&bad("huge.npy", &npy("<f4", "(99999999999, 99999)", &[0; 256]))?, "more than the");
    assert_clean_failure(&bad("garbage.npy", b"\x93NUMPY garbage")?, "not a valid .npy");
    std::fs::write(path("wrong.npy")?, write_npy(&Array::new(vec![5, 64, 1], samples)?))?;
    assert_clean_failure(&moat(&["infer", model_arg, "--input", &path("wrong.npy")?])?, "does not hold samples");
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
