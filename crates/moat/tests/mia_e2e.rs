//! `moat attack mia` as a user runs it, on the embedded digits: a leaky victim trained on a
//! member subset by `moat train`, every attack against its float and simulated two-party
//! outputs, the report, the exported scores and the ROC plots — and scikit-learn recomputing
//! the AUC and TPR@FPR from the exported scores to 1e-9. The same victim served by the real
//! `moat serve` is attacked through HTTP, on its probabilities and on its labels only.
//!
//! The scikit-learn check needs `python3` with numpy and scikit-learn. In CI (`CI=true`, where
//! `.ci/run` installs them) it fails without them; elsewhere it prints a notice and skips that
//! part.

mod secure_util;
mod serve_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use secure_util::moat;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn scratch(name: &str) -> Result<PathBuf, std::io::Error> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mia_e2e").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Trains the leaky digits victim: 200 members, no augmentation, 150 epochs (train 100 %,
/// test ≈ 96 %).
fn leaky_victim(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let model = dir.join("victim.onnx");
    let out = moat()
        .args(["train", "--arch", "mlp:256", "--dataset", "digits", "--train-limit", "200", "--epochs", "150"])
        .args(["--augment", "none", "--seed", "3", "--quiet", "-o"])
        .arg(&model)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(model)
}

fn python_ready() -> bool {
    let probe = Command::new("python3").args(["-c", "import sklearn, numpy"]).output();
    if matches!(&probe, Ok(out) if out.status.success()) {
        return true;
    }
    let why = match probe {
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("cannot run python3: {e}"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "the scikit-learn cross-check needs python3 with scikit-learn and numpy (pip install scikit-learn numpy): {why}"
        );
    }
    let notice = format!("NOTICE: skipping the scikit-learn cross-check (pip install scikit-learn numpy): {why}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), notice.as_bytes());
    false
}

#[test]
fn mia_on_a_leaky_digits_victim_with_a_scikit_learn_cross_check() -> TestResult {
    let dir = scratch("digits")?;
    let model = leaky_victim(&dir)?;
    let out_dir = dir.join("mia");
    let out = moat()
        .args(["attack", "mia"])
        .arg(&model)
        .args(["--dataset", "digits", "--attacks", "all", "--outputs", "float,simulated"])
        .args(["--members", "150", "--non-members", "150", "--references", "8", "--robustness-copies", "4"])
        .args(["--seed", "2", "--quiet", "--json", "--out"])
        .arg(&out_dir)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!((report["members"].as_u64(), report["non_members"].as_u64()), (Some(150), Some(150)));
    assert_eq!(report["references"]["models"], 8);
    let outputs = report["outputs"].as_array().ok_or("no outputs")?;
    assert_eq!(outputs.len(), 2);
    let auc = |output: usize, attack: &str| -> f64 {
        outputs[output]["attacks"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["attack"] == attack))
            .and_then(|r| r["auc"].as_f64())
            .unwrap_or(f64::NAN)
    };
    for (k, o) in outputs.iter().enumerate() {
        assert_eq!(o["attacks"].as_array().map(Vec::len), Some(15), "{o}");
        // An overfit victim leaks, and the per-sample reference attacks see more than the
        // global loss threshold (measured: loss 0.59, LiRA offline 0.70, RMIA 0.73).
        let (loss, rmia, lira) = (auc(k, "loss"), auc(k, "rmia"), auc(k, "lira-offline"));
        assert!(loss > 0.55 && rmia > loss + 0.05 && lira > loss + 0.05, "{}: {loss} {rmia} {lira}", o["output"]);
    }
    // The simulated engine's revealed logits leak as much as float ones.
    for attack in ["loss", "lira-online", "rmia"] {
        assert!((auc(0, attack) - auc(1, attack)).abs() < 0.01, "{attack}: {report}");
    }
    for file in
        ["report.json", "roc-float.svg", "roc-float.png", "roc-simulated-2pc-log.svg", "roc-simulated-2pc-log.png"]
    {
        assert!(out_dir.join(file).metadata()?.len() > 100, "{file}");
    }
    assert!(out_dir.join("scores/float-rmia.json").exists());

    if !python_ready() {
        return Ok(());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mia_sklearn_check.py");
    let py = Command::new("python3").arg(&script).arg(&out_dir).output()?;
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let sklearn: serde_json::Value = serde_json::from_slice(&py.stdout)?;
    let mut checked = 0;
    for o in outputs {
        for a in o["attacks"].as_array().into_iter().flatten() {
            let stem = format!("{}-{}", o["output"].as_str().unwrap_or(""), a["attack"].as_str().unwrap_or(""));
            let theirs = &sklearn[&stem];
            for key in ["auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "tpr_at_0_fpr"] {
                let (ours, want) = (a[key].as_f64().unwrap_or(f64::NAN), theirs[key].as_f64().unwrap_or(f64::NAN));
                assert!((ours - want).abs() <= 1e-9, "{stem} {key}: moat {ours}, scikit-learn {want}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 30);
    Ok(())
}

#[test]
fn mia_rejects_a_victim_that_is_not_a_class_vector_before_querying() -> TestResult {
    let dir = scratch("bad")?;
    let model = leaky_victim(&dir)?;
    // The card says digits (10 classes); asking for another dataset is refused up front, and so
    // is a model whose output does not match the dataset's classes.
    let out = moat().args(["attack", "mia"]).arg(&model).args(["--dataset", "adult", "--quiet"]).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digits"));
    let card = moat_nn::card::ModelCard::load(&moat_nn::card::ModelCard::path_for(&model))?;
    let graph = moat_nn::zoo::build(&"mlp:8".parse()?, &card.input.sample_shape, 3, 1)?;
    let three = dir.join("three.onnx");
    moat_nn::onnx::save_onnx(&graph, &three)?;
    card.save(&moat_nn::card::ModelCard::path_for(&three))?;
    let out = moat().args(["attack", "mia"]).arg(&three).args(["--dataset", "digits", "--quiet"]).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("outputs 3 values") && stderr.contains("10 classes"), "{stderr}");
    Ok(())
}

/// Runs `moat attack mia VICTIM --dataset digits --url URL --name victim ARGS…`.
fn attack_service(victim: &Path, url: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    moat()
        .args(["attack", "mia"])
        .arg(victim)
        .args(["--dataset", "digits", "--url", url, "--name", "victim", "--members", "100", "--non-members", "100"])
        .args(["--seed", "4", "--quiet", "--json"])
        .args(args)
        .output()
}

#[test]
fn mia_through_the_http_service_matches_the_local_model() -> TestResult {
    let dir = scratch("http")?;
    let trained = leaky_victim(&dir)?;
    let version = dir.join("repo").join("victim").join("1");
    std::fs::create_dir_all(&version)?;
    let victim = version.join("model.onnx");
    std::fs::copy(&trained, &victim)?;
    let card = moat_nn::card::ModelCard::path_for(&trained);
    std::fs::copy(&card, moat_nn::card::ModelCard::path_for(&victim))?;
    let server = serve_util::ServerProcess::start(&dir.join("repo"), &[])?;

    // The service's probabilities leak as much as the local float model's (the same weights;
    // the service computes the softmax in f32).
    let out = attack_service(&victim, &server.url, &["--outputs", "float,http", "--attacks", "loss,confidence,gap"])?;
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let outputs = report["outputs"].as_array().ok_or("no outputs")?;
    assert_eq!(outputs.iter().map(|o| o["output"].as_str()).collect::<Vec<_>>(), [Some("float"), Some("http")]);
    // loss and confidence ask the 200 targets' probabilities, gap their labels.
    assert_eq!(outputs[1]["queries"], 400, "{report}");
    let auc = |o: &serde_json::Value, attack: &str| {
        o["attacks"].as_array().and_then(|a| a.iter().find(|r| r["attack"] == attack)).and_then(|r| r["auc"].as_f64())
    };
    for attack in ["loss", "confidence", "gap"] {
        let (local, served) = (auc(&outputs[0], attack).ok_or(attack)?, auc(&outputs[1], attack).ok_or(attack)?);
        assert!((local - served).abs() < 0.01, "{attack}: local {local}, served {served}");
    }
    assert!(auc(&outputs[1], "loss").is_some_and(|a| a > 0.55), "{report}");

    // Labels only: the label-only attack runs; one that needs probabilities is refused before
    // any query, naming what the victim reveals.
    let out = attack_service(&victim, &server.url, &["--outputs", "http-label", "--attacks", "gap"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let labels: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(auc(&labels["outputs"][0], "gap"), auc(&outputs[1], "gap"), "{labels}");
    let out = attack_service(&victim, &server.url, &["--outputs", "http-label", "--attacks", "loss"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reveals Label only"), "{stderr}");

    // A service that cannot be reached is a service failure, not a refusal.
    drop(server);
    let out = attack_service(&victim, "http://127.0.0.1:9", &["--outputs", "http", "--attacks", "loss"])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the service failed") && !stderr.contains("the service refused"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// `moat train-defender` for `model`, reading `input` (probabilities or sorted), with a fixed
/// seed (a test).
fn defender(model: &Path, input: &str, out: &Path) -> TestResult {
    let run = moat()
        .arg("train-defender")
        .arg(model)
        .args(["--input", input, "--epochs", "200", "--insecure-seed", "1", "--json", "--out"])
        .arg(out)
        .output()?;
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let written: serde_json::Value = serde_json::from_slice(&run.stdout)?;
    assert_eq!(written["meta"]["members"], 200);
    assert_eq!(written["meta"]["input"], input);
    // Only the public metadata is printed.
    assert!(written.get("weights").is_none() && !String::from_utf8_lossy(&run.stdout).contains("biases"));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(out)?)?;
    assert_eq!(file["secret"], true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(out.metadata()?.permissions().mode() & 0o777, 0o600);
    }
    Ok(())
}

#[test]
fn memguard_and_siguard_keep_every_label_and_lower_the_threshold_attacks() -> TestResult {
    let dir = scratch("guards")?;
    let model = leaky_victim(&dir)?;
    let (raw, sorted) = (dir.join("defender-raw.json"), dir.join("defender-sorted.json"));
    defender(&model, "probabilities", &raw)?;
    defender(&model, "sorted", &sorted)?;

    // A guard without a defender, or with a defender SIGuard cannot use, fails before any query.
    let base = |guard: &str| {
        let mut c = moat();
        c.args(["attack", "mia"]).arg(&model).args(["--dataset", "digits", "--attacks", "loss", "--guard", guard]);
        c.args(["--members", "100", "--non-members", "100", "--seed", "2", "--quiet"]);
        c
    };
    let out = base("siguard").arg("--out").arg(dir.join("refused")).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the server's trained defender"));
    assert!(!dir.join("refused").exists());
    let out = base("siguard").arg("--defender").arg(&sorted).output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("raw probabilities"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGuard with the spline softmax (the CrypTen one runs in the secure-server test below).
    for (guard, file, guarded_name, baseline, extra) in [
        ("memguard", &sorted, "float-memguard", "float", &[][..]),
        ("siguard", &raw, "siguard-2pc", "fixed", &["--siguard-softmax", "spline"][..]),
    ] {
        let out_dir = dir.join(guard);
        let out = base(guard)
            .args(["--attacks", "loss,confidence,entropy,mentr,gap", "--json", "--defender"])
            .arg(file)
            .args(extra)
            .arg("--out")
            .arg(&out_dir)
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(report["guard"]["guard"], guard);
        if guard == "siguard" {
            assert_eq!(report["guard"]["siguard"]["softmax"], "spline", "{}", report["guard"]);
        }
        let cmp = &report["guards"][0];
        assert_eq!((cmp["output"].as_str(), cmp["baseline"].as_str()), (Some(guarded_name), Some(baseline)));
        assert_eq!(cmp["queries"], 200, "{cmp}");
        // The label is the unguarded one on every answer; the answers moved.
        assert_eq!(cmp["label_agreement"], 1.0, "{cmp}");
        let l1 = cmp["mean_l1_distortion"].as_f64().unwrap_or(0.0);
        assert!(l1 > 0.01 && l1 < 0.5, "{guard}: L1 {l1}");
        assert!(cmp["changed"].as_f64().unwrap_or(0.0) > 0.5, "{cmp}");
        let attack = |name: &str| cmp["attacks"].as_array().and_then(|a| a.iter().find(|r| r["attack"] == name));
        // Measured (seed 2): loss AUC 0.59 → 0.57 with MemGuard; 0.61 → 0.53 with SIGuard (spline).
        let loss = attack("loss").ok_or("no loss attack")?;
        let (before, after) = (loss["auc"].as_f64().unwrap_or(0.0), loss["guarded_auc"].as_f64().unwrap_or(1.0));
        assert!(before > 0.55 && after < before, "{guard}: loss AUC {before} → {after}");
        // Label-only: unchanged by a guard that keeps the label.
        let gap = attack("gap").ok_or("no gap attack")?;
        assert_eq!(gap["auc"], gap["guarded_auc"]);

        if python_ready() {
            // scikit-learn recomputes the guarded output's metrics from its exported scores.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mia_sklearn_check.py");
            let py = Command::new("python3").arg(&script).arg(&out_dir).output()?;
            assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
            let sklearn: serde_json::Value = serde_json::from_slice(&py.stdout)?;
            let guarded = report["outputs"]
                .as_array()
                .and_then(|o| o.iter().find(|o| o["output"] == guarded_name))
                .ok_or("no guarded output")?;
            for a in guarded["attacks"].as_array().into_iter().flatten() {
                let stem = format!("{guarded_name}-{}", a["attack"].as_str().unwrap_or(""));
                for key in ["auc", "tpr_at_1pct_fpr", "tpr_at_0_fpr"] {
                    let (ours, want) =
                        (a[key].as_f64().unwrap_or(f64::NAN), sklearn[&stem][key].as_f64().unwrap_or(f64::NAN));
                    assert!((ours - want).abs() <= 1e-9, "{stem} {key}: moat {ours}, scikit-learn {want}");
                }
            }
        }
    }
    Ok(())
}

/// The attacks on what the real two-party protocol reveals: two `moat secure server`
/// processes, one per secure softmax, each attacked over TCP through its revealed
/// probabilities; the AUCs land close to the plaintext fixed-point model's (SIGuard's first
/// finding: the MPC softmax's approximation does not hide membership).
#[test]
fn mia_through_real_secure_sessions_matches_the_local_model() -> TestResult {
    let dir = scratch("secure")?;
    let model = leaky_victim(&dir)?;
    let (_exp, exp_addr) = secure_util::start_server_with(&model, "0", "60000", &["--softmax", "exp"])?;
    let (_relu, relu_addr) = secure_util::start_server_with(&model, "0", "60000", &["--softmax", "relu"])?;
    let out = moat()
        .args(["attack", "mia"])
        .arg(&model)
        .args(["--dataset", "digits", "--outputs", "fixed", "--secure", &format!("{exp_addr},{relu_addr}")])
        .args(["--attacks", "loss,entropy,mentr,gap", "--members", "100", "--non-members", "100"])
        .args(["--seed", "4", "--quiet", "--json"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let outputs = report["outputs"].as_array().ok_or("no outputs")?;
    let names: Vec<_> = outputs.iter().map(|o| o["output"].as_str()).collect();
    assert_eq!(names, [Some("fixed"), Some("secure-2pc-exp"), Some("secure-2pc-relu")]);
    let auc = |o: &serde_json::Value, attack: &str| {
        o["attacks"].as_array().and_then(|a| a.iter().find(|r| r["attack"] == attack)).and_then(|r| r["auc"].as_f64())
    };
    // The score attacks ask the 200 targets' probabilities, gap their labels, each in the
    // server's session. Measured (seed 4): loss AUC 0.657 fixed, 0.660 exp, 0.670 relu; the
    // issue's bound is 0.03.
    for (o, tolerance) in [(&outputs[1], 0.01), (&outputs[2], 0.03)] {
        assert_eq!(o["queries"], 400, "{report}");
        for attack in ["loss", "entropy", "mentr", "gap"] {
            let (local, secure) = (auc(&outputs[0], attack).ok_or(attack)?, auc(o, attack).ok_or(attack)?);
            assert!((local - secure).abs() < tolerance, "{}, {attack}: fixed {local}, secure {secure}", o["output"]);
        }
    }
    assert!(auc(&outputs[1], "loss").is_some_and(|a| a > 0.55), "{report}");

    // A server that does not answer is a service failure before any query.
    let out = moat()
        .args(["attack", "mia"])
        .arg(&model)
        .args(["--dataset", "digits", "--outputs", "fixed", "--secure", "127.0.0.1:9", "--attacks", "loss"])
        .args(["--members", "10", "--seed", "4", "--quiet", "--secure-timeout-ms", "2000"])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secure server 127.0.0.1:9"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// SIGuard inside the real protocol, end to end: `moat secure server --defender` guards every
/// session's probabilities (few steps, to keep the test short); `moat attack mia --secure`
/// reads them over TCP as `secure-2pc-siguard`, and every answer keeps the label (the gap
/// attack equals the local model's); `moat bench secure --guard siguard` times the guarded
/// queries against the unguarded ones of the same session.
#[test]
fn siguard_in_a_real_secure_server_keeps_the_labels_and_is_benchmarked() -> TestResult {
    let dir = scratch("siguard-secure")?;
    let model = leaky_victim(&dir)?;
    let raw = dir.join("defender-raw.json");
    defender(&model, "probabilities", &raw)?;
    let raw_arg = raw.to_string_lossy().into_owned();
    // Steps longer than the paper's, so that the guard changes the answers visibly.
    let params = ["--siguard-steps", "1,2", "--siguard-c3", "0", "--siguard-lr", "1"];
    let server_args: Vec<&str> = ["--defender", raw_arg.as_str()].into_iter().chain(params).collect();
    let (_server, addr) = secure_util::start_server_with(&model, "0", "60000", &server_args)?;
    let out = moat()
        .args(["attack", "mia"])
        .arg(&model)
        .args(["--dataset", "digits", "--outputs", "fixed", "--secure", &addr, "--attacks", "loss,gap"])
        .args(["--members", "8", "--non-members", "8", "--seed", "4", "--quiet", "--json"])
        .args(["--guard", "siguard", "--defender", &raw_arg])
        .args(params)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let guarded = &report["outputs"][1];
    assert_eq!(guarded["output"], "secure-2pc-siguard", "{report}");
    assert_eq!(guarded["queries"], 32, "{report}");
    let gap = |o: &serde_json::Value| o["attacks"][1]["auc"].as_f64();
    assert_eq!(report["outputs"][0]["attacks"][1]["attack"], "gap");
    assert_eq!(gap(guarded), gap(&report["outputs"][0]), "{report}");
    // The served guard's answers are counted against the same model's unguarded ones.
    let counted = &report["guards"][0];
    assert_eq!((counted["output"].as_str(), counted["baseline"].as_str()), (Some("secure-2pc-siguard"), Some("fixed")));
    assert_eq!((counted["queries"].as_u64(), counted["label_agreement"].as_f64()), (Some(16), Some(1.0)), "{report}");
    assert!(counted["mean_l1_distortion"].as_f64().is_some_and(|d| d > 0.0 && d < 2.0), "{report}");
    // The same guard by the plaintext ring operations (`--guard siguard`) answers the same:
    // the same scores, the same distortion.
    let local = &report["outputs"][2];
    assert_eq!(local["output"], "siguard-2pc", "{report}");
    assert_eq!(local["attacks"][0]["auc"], guarded["attacks"][0]["auc"], "{report}");
    let local_counts = &report["guards"][1];
    for key in ["queries", "label_agreement", "changed", "mean_l1_distortion"] {
        assert_eq!(local_counts[key], counted[key], "{key}: {report}");
    }

    // SIGuard's parameters without a defender: refused before listening.
    let out = moat().args(["secure", "server"]).arg(&model).args(["--siguard-lr", "1"]).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --defender"));

    // A defender on sorted scores cannot run inside the protocol: refused before listening.
    let sorted = dir.join("defender-sorted.json");
    defender(&model, "sorted", &sorted)?;
    let out = moat().args(["secure", "server"]).arg(&model).arg("--defender").arg(&sorted).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("raw probabilities"));

    let out = moat()
        .args(["bench", "secure", "--model"])
        .arg(&model)
        .args(["--queries", "1", "--ot", "iknp", "--guard", "siguard", "--siguard-steps", "1,1", "--json"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bench: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let g = &bench["siguard"];
    assert_eq!((g["steps"][0].as_u64(), g["defender"].as_str()), (Some(1), Some("stand-in")), "{bench}");
    let (guarded, plain) =
        (g["bytes_per_query"].as_f64().unwrap_or(0.0), bench["bytes_per_query"].as_f64().unwrap_or(0.0));
    assert!(guarded > plain && g["rounds_per_query"].as_f64() > g["unguarded_rounds_per_query"].as_f64(), "{bench}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
