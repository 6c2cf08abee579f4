//! MobileNetV2- and ShuffleNet-class ONNX graphs (depthwise and grouped convolutions, ReLU6 as
//! `Clip`, the 5-D channel-shuffle `Transpose`), written with `onnx.helper` by
//! `moat-nn/tests/python/make_mobile_models.py`, served by a `moat secure server` process and
//! queried privately by a `moat secure client` process on CIFAR-10 test images: every revealed
//! logit vector equals the plaintext fixed-point executor's, bit for bit.
//!
//! A second network exercises the approximated and per-channel activations of issue 12 (GELU,
//! SiLU, ELU, PRelu with one slope per channel), written by moat's own exporter (GELU as the
//! `Erf` pattern, SiLU as `x · Sigmoid(x)`) and imported back by the server; a third SELU, GELU's
//! tanh form, Softplus and Softsign (exported at opset 20).
//!
//! Needs python3 with onnx and numpy, and the CIFAR-10 binary files in `MOAT_DATA_DIR` or
//! `../shared/data`; without them it prints a notice and passes, except in CI (`CI=true`).

mod secure_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use secure_util::{moat, start_server};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn skip_or_fail(why: &str) -> TestResult {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return Err(format!("secure_mobile needs {why}").into());
    }
    let notice = format!("NOTICE: skipping the two-process MobileNetV2/ShuffleNet test: no {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
    Ok(())
}

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MOAT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    dir.join("cifar10").join("test_batch.bin").is_file().then_some(dir)
}

#[test]
fn mobile_networks_run_privately_between_two_processes_bit_for_bit() -> TestResult {
    let Some(data) = data_dir() else { return skip_or_fail("CIFAR-10 data (MOAT_DATA_DIR or ../shared/data)") };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("secure_mobile");
    std::fs::create_dir_all(&dir)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../moat-nn/tests/python/make_mobile_models.py");
    let out = match Command::new("python3").arg(&script).arg(&dir).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            return skip_or_fail(&format!("python3 with onnx and numpy: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Err(e) => return skip_or_fail(&format!("python3: {e}")),
    };
    let listing = String::from_utf8(out.stdout)?;
    for file in ["mobilenetv2_cifar_opset13.onnx", "shufflenet_cifar_opset11.onnx"] {
        assert!(listing.contains(file), "{listing}");
        two_cifar_queries_agree_with_fixed_point(&dir.join(file), &data)?;
    }
    Ok(())
}

/// Serves `model` from a `moat secure server` child and sends it two CIFAR-10 images from
/// `data` through `moat secure client --compare-with`: both logit vectors must equal the
/// fixed-point executor's bit for bit.
fn two_cifar_queries_agree_with_fixed_point(model: &Path, data: &Path) -> TestResult {
    let (_server, addr) = start_server(model, "1", "120000")?;
    let out = moat()
        .args(["secure", "client", "--connect", &addr, "--dataset", "cifar10", "--data-dir"])
        .arg(data)
        .args(["--count", "2", "--logits", "--json", "--timeout-ms", "120000", "--compare-with"])
        .arg(model)
        .output()?;
    let name = model.display();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["queries"], 2, "{name}: {report}");
    assert_eq!(report["agree_with_fixed_point"], 2, "{name}: {report}");
    eprintln!(
        "{name}: {:.2} s and {:.2} MiB per private inference",
        report["seconds_per_query"].as_f64().unwrap_or(0.0),
        report["bytes_per_query"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    );
    Ok(())
}

#[test]
fn gelu_silu_elu_prelu_network_runs_privately_between_two_processes_bit_for_bit() -> TestResult {
    use moat_nn::{Op, ValueId, zoo::GraphBuilder};
    let Some(data) = data_dir() else { return skip_or_fail("CIFAR-10 data (MOAT_DATA_DIR or ../shared/data)") };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("secure_activations");
    std::fs::create_dir_all(&dir)?;
    let mut b = GraphBuilder::new(&[3, 32, 32], 12);
    let x = b.conv("stem", ValueId::INPUT, 8, 3, 2, 1)?;
    let x = b.push("gelu", Op::Gelu, vec![x])?;
    let x = b.conv("mid", x, 8, 3, 2, 1)?;
    let x = b.push("silu", Op::Silu, vec![x])?;
    let x = b.push("prelu", Op::PRelu { slope: vec![0.25, -0.5, 0.0, 1.5, 0.1, 0.75, 2.0, -0.125] }, vec![x])?;
    let x = b.conv("last", x, 8, 3, 2, 1)?;
    let x = b.push("elu", Op::Elu { alpha: 0.8 }, vec![x])?;
    let x = b.push("pool", Op::GlobalAvgPool, vec![x])?;
    let out = b.dense("fc", x, 10)?;
    let model = dir.join("activations.onnx");
    moat_nn::onnx::save_onnx(&b.finish("activations", out)?, &model)?;
    two_cifar_queries_agree_with_fixed_point(&model, &data)
}

#[test]
fn selu_gelu_tanh_softplus_softsign_network_runs_privately_between_two_processes_bit_for_bit() -> TestResult {
    use moat_nn::{Op, ValueId, approx, zoo::GraphBuilder};
    let Some(data) = data_dir() else { return skip_or_fail("CIFAR-10 data (MOAT_DATA_DIR or ../shared/data)") };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("secure_activations_selu");
    std::fs::create_dir_all(&dir)?;
    let mut b = GraphBuilder::new(&[3, 32, 32], 14);
    let x = b.conv("stem", ValueId::INPUT, 8, 3, 2, 1)?;
    let x = b.push("selu", Op::Selu { alpha: approx::SELU_ALPHA, gamma: approx::SELU_GAMMA }, vec![x])?;
    let x = b.conv("mid", x, 8, 3, 2, 1)?;
    let x = b.push("gelu_tanh", Op::GeluTanh, vec![x])?;
    let x = b.conv("last", x, 8, 3, 2, 1)?;
    let x = b.push("softplus", Op::Softplus, vec![x])?;
    let x = b.push("softsign", Op::Softsign, vec![x])?;
    let x = b.push("pool", Op::GlobalAvgPool, vec![x])?;
    let out = b.dense("fc", x, 10)?;
    // Exported at opset 20 (the tanh Gelu's), imported back by the server.
    let model = dir.join("activations_selu.onnx");
    moat_nn::onnx::save_onnx(&b.finish("activations_selu", out)?, &model)?;
    two_cifar_queries_agree_with_fixed_point(&model, &data)
}
