//! `moat bench` as two real processes on loopback: exact results under `--verify`, traffic
//! equal to the cost model, and clean, bounded failures when either process dies.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn moat(args: &[&str]) -> std::io::Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_moat")).args(args).output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a verified benchmark and returns its JSON report.
fn bench_json(args: &[&str]) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--verify", "--json", "--timeout-ms", "60000"]);
    let out = moat(&all)?;
    assert!(out.status.success(), "moat {all:?} failed: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(report)
}

fn check_report(report: &serde_json::Value, elements: u64) {
    assert_eq!(report["elements"], elements, "{report}");
    assert_eq!(report["verify"]["mismatches"], 0, "{report}");
    assert_eq!(report["verify"]["checked"], elements, "{report}");
    let total = report["bytes_total"].as_u64().unwrap_or(0);
    assert!(total > 0);
    // The cost model describes IKNP sessions; on Ferret it predicts nothing.
    match report["ot"].as_str() {
        Some("iknp") => assert_eq!(report["predicted_bytes_total"].as_u64(), Some(total), "measured = predicted"),
        _ => assert!(report["predicted_bytes_total"].is_null(), "{report}"),
    }
    assert_eq!(report["bytes_p0_to_p1"].as_u64().unwrap_or(0) + report["bytes_p1_to_p0"].as_u64().unwrap_or(0), total);
    // Both processes saw the same traffic, mirrored.
    assert_eq!(report["server"]["run"]["bytes_sent"], report["client"]["run"]["bytes_received"]);
    assert_eq!(report["server"]["run"]["bytes_received"], report["client"]["run"]["bytes_sent"]);
    assert!(report["run_ms"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(report["rounds_p0"].as_u64().unwrap_or(0) > 0 && report["rounds_p1"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn relu_is_exact_between_two_processes() -> TestResult {
    let r = bench_json(&["relu", "--n", "5000", "--ot", "iknp"])?;
    check_report(&r, 5000);
    // On IKNP: ≈ 876 bytes per exact ReLU at ℓ = 37 (plus frame headers at this size); 4 + 6
    // flights.
    let per = r["bytes_per_element"].as_f64().unwrap_or(0.0);
    assert!((870.0..900.0).contains(&per), "{per}");
    assert_eq!((r["rounds_p0"].as_u64(), r["rounds_p1"].as_u64()), (Some(4), Some(6)));
    for ring in [["--ring-bits", "64", "--frac-bits", "16"], ["--ring-bits", "20", "--frac-bits", "8"]] {
        let mut args = vec!["relu", "--n", "3001", "--chunk-bits", "5"];
        args.extend_from_slice(&ring);
        check_report(&bench_json(&args)?, 3001);
    }
    Ok(())
}

/// `--against-iknp`: Ferret and IKNP runs alternating in one invocation, each verified, with
/// the seeds, OTs, medians and ratios a reader can recompute from the runs themselves.
#[test]
fn ferret_against_iknp_in_one_invocation() -> TestResult {
    let c = bench_json(&["relu", "--n", "3000", "--against-iknp", "2", "--seed", "7"])?;
    assert_eq!(c["rounds"], 2, "{c}");
    let runs = |ot: &str| c[ot].as_array().cloned().unwrap_or_default();
    let (ferret, iknp) = (runs("ferret"), runs("iknp"));
    for (list, ot) in [(&ferret, "ferret"), (&iknp, "iknp")] {
        assert_eq!(list.len(), 2);
        for (round, r) in list.iter().enumerate() {
            check_report(r, 3000);
            assert_eq!((r["ot"].as_str(), r["seed"].as_u64()), (Some(ot), Some(7 + round as u64)));
        }
    }
    // (To the last bits: serde_json's default float parsing is not always correctly rounded.)
    let close = |key: &str, want: f64| {
        let got = c[key].as_f64().unwrap_or(f64::NAN);
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{key}: {got} against {want}");
    };
    let us = |r: &serde_json::Value| r["us_per_element"].as_f64().unwrap_or(f64::NAN);
    let median = |l: &[serde_json::Value]| (us(&l[0]) + us(&l[1])) / 2.0;
    close("ferret_us_per_element", median(&ferret));
    close("iknp_us_per_element", median(&iknp));
    close("time_ratio", median(&ferret) / median(&iknp));
    let bytes = |r: &serde_json::Value| r["bytes_per_element"].as_f64().unwrap_or(f64::NAN);
    close("bytes_ratio", bytes(&ferret[0]) / bytes(&iknp[0]));
    assert!(bytes(&ferret[0]) <= 60.0 && bytes(&iknp[0]) > 800.0, "{c}");
    // It compares Ferret with IKNP, nothing else.
    let out = moat(&["bench", "relu", "--n", "10", "--against-iknp", "1", "--ot", "iknp"])?;
    assert!(!out.status.success() && text(&out.stderr).contains("--against-iknp"), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn relu_on_silent_ot_is_exact_and_under_sixty_bytes() -> TestResult {
    // Ferret is the default: the leaves of the comparison come from silent OT (4-bit leaves).
    let r = bench_json(&["relu", "--n", "5000"])?;
    check_report(&r, 5000);
    assert_eq!(r["ot"], "ferret", "{r}");
    let per = r["bytes_per_element"].as_f64().unwrap_or(f64::MAX);
    assert!(per <= 60.0, "{per} bytes per exact ReLU on Ferret");
    let nonnegative = bench_json(&["trunc", "--nonnegative", "--n", "5000"])?;
    check_report(&nonnegative, 5000);
    let per = nonnegative["bytes_per_element"].as_f64().unwrap_or(f64::MAX);
    assert!(per <= 30.0, "{per} bytes per non-negative truncation on Ferret");
    Ok(())
}

#[test]
fn trunc_maxpool_argmax_are_exact_between_two_processes() -> TestResult {
    check_report(&bench_json(&["trunc", "--n", "5000"])?, 5000);
    check_report(&bench_json(&["trunc", "--n", "777", "--ring-bits", "64", "--frac-bits", "20"])?, 777);
    // 4×8×8 input, 2×2 windows: 64 outputs; 3×3 stride 2 too.
    check_report(&bench_json(&["maxpool", "--channels", "4", "--height", "8", "--width", "8"])?, 64);
    check_report(
        &bench_json(&[
            "maxpool",
            "--channels",
            "3",
            "--height",
            "9",
            "--width",
            "7",
            "--window",
            "3",
            "--stride",
            "2",
        ])?,
        3 * 4 * 3,
    );
    check_report(&bench_json(&["argmax", "--n", "300"])?, 300);
    check_report(&bench_json(&["argmax", "--n", "50", "--classes", "3"])?, 50);
    Ok(())
}

#[test]
fn nonnegative_trunc_is_exact_and_a_third_of_the_signed_one() -> TestResult {
    let r = bench_json(&["trunc", "--nonnegative", "--n", "5000", "--ot", "iknp"])?;
    check_report(&r, 5000);
    // On IKNP: ≈ 295 bytes per element (plus frame headers at this size) and 2 + 3 flights.
    let per = r["bytes_per_element"].as_f64().unwrap_or(0.0);
    assert!((290.0..310.0).contains(&per), "{per}");
    assert_eq!((r["rounds_p0"].as_u64(), r["rounds_p1"].as_u64()), (Some(2), Some(3)));
    let signed = bench_json(&["trunc", "--n", "5000", "--ot", "iknp"])?["bytes_per_element"].as_f64().unwrap_or(0.0);
    assert!(per < 0.35 * signed, "{per} vs {signed}");
    check_report(
        &bench_json(&["trunc", "--nonnegative", "--n", "777", "--ring-bits", "64", "--frac-bits", "20"])?,
        777,
    );
    let out = moat(&["bench", "relu", "--nonnegative", "--n", "10"])?;
    assert!(!out.status.success() && text(&out.stderr).contains("--nonnegative"), "{}", text(&out.stderr));
    Ok(())
}

#[test]
fn human_output_reports_both_parties() -> TestResult {
    let out = moat(&["bench", "relu", "--n", "1000", "--verify"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "setup:",
        "run:",
        "µs/ReLU",
        "B/ReLU",
        "P0→P1",
        "server (P0)",
        "client (P1)",
        "verify: ok, 1,000 outputs exact",
    ] {
        assert!(stdout.contains(needle), "missing '{needle}' in:\n{stdout}");
    }
    Ok(())
}

#[test]
fn a_wrong_output_is_reported_and_fails() -> TestResult {
    for protocol in [&["relu", "--n", "300"][..], &["argmax", "--n", "40"][..]] {
        let mut args = vec!["bench"];
        args.extend_from_slice(protocol);
        args.extend_from_slice(&["--verify", "--corrupt-output", "--timeout-ms", "30000"]);
        let out = moat(&args)?;
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "a corrupted output must fail: {stderr}");
        assert!(stderr.contains("differ from the plaintext function"), "{stderr}");
        assert!(text(&out.stdout).contains("1 of"), "{}", text(&out.stdout));
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    Ok(())
}

#[test]
fn the_server_fails_cleanly_when_the_client_dies_mid_protocol() -> TestResult {
    let start = Instant::now();
    // The network timeout is long (60 s): the server must notice the death itself, well before
    // it, and not be rescued by the timeout. (A 5 s timeout was too close to what the whole run
    // takes on a loaded two-core machine.)
    let out = moat(&["bench", "relu", "--n", "600000", "--timeout-ms", "60000", "--die-after-ms", "50"])?;
    let elapsed = start.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains("server (P0): the client process died or failed"), "{stderr}");
    assert!(line.contains("peer") || line.contains("closed") || line.contains("disconnected"), "{stderr}");
    Ok(())
}

/// Starts the client role against a fake server; returns the child and the accepted socket.
fn client_against_fake_server(
    timeout_ms: &str,
) -> Result<(std::process::Child, std::net::TcpStream), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["bench", "relu", "--n", "1000", "--role", "client", "--connect", &addr, "--timeout-ms", timeout_ms])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (stream, _) = listener.accept()?;
    Ok((child, stream))
}

fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<(std::process::ExitStatus, String), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut stderr)?;
            }
            return Ok((status, stderr));
        }
        if Instant::now() > deadline {
            child.kill()?;
            return Err(format!("the client did not exit within {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_client_fails_cleanly_when_the_server_dies_or_stalls() -> TestResult {
    // The server dies: the client sees the connection close and exits at once.
    let (mut child, stream) = client_against_fake_server("30000")?;
    drop(stream);
    let start = Instant::now();
    let (status, stderr) = wait_bounded(&mut child, Duration::from_secs(10))?;
    assert!(!status.success());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(stderr.contains("error: client (P1): the server process died or failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The server stalls (connected, silent): the client gives up after its timeout.
    let (mut child, stream) = client_against_fake_server("1500")?;
    let start = Instant::now();
    let (status, stderr) = wait_bounded(&mut child, Duration::from_secs(15))?;
    drop(stream);
    assert!(!status.success());
    assert!(start.elapsed() >= Duration::from_millis(1400), "{:?}", start.elapsed());
    assert!(stderr.contains("timed out"), "{stderr}");
    Ok(())
}

#[test]
fn every_approximated_activation_benches_exactly_with_its_predicted_bytes() -> TestResult {
    // IKNP, where the cost model predicts the traffic: odd splines (sign, ReLUs, muxes) and
    // rectified ones (ReLU plus a spline) each measured = predicted, and equal to fixed point.
    let names = ["sigmoid", "tanh", "softsign", "silu", "gelu", "gelu-tanh", "softplus", "elu"];
    let expected = ["Sigmoid", "Tanh", "Softsign", "Silu", "Gelu", "GeluTanh", "Softplus", "Elu"];
    for (name, element) in names.iter().zip(expected) {
        let r = bench_json(&["gelu", "--activation", name, "--n", "300", "--ot", "iknp"])?;
        check_report(&r, 300);
        assert_eq!(r["element"], element, "{r}");
    }
    let out = moat(&["bench", "relu", "--activation", "elu", "--n", "10"])?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--activation applies to sigmoid and gelu only"));
    Ok(())
}
