//! Two-party secure inference between two real `moat` processes on loopback.

mod secure_util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secure_util::{moat, start_server};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn train_digits_model(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let model = dir.join("cnn.onnx");
    let out = moat()
        .args(["train", "--arch", "mlp:32,16", "--dataset", "digits", "--epochs", "15", "--seed", "2", "--quiet", "-o"])
        .arg(&model)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(model)
}

#[test]
fn secure_client_gets_the_fixed_point_labels_and_a_dead_client_does_not_stop_the_server() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-secure-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = train_digits_model(&dir)?;
    let (_server, addr) = start_server(&model, "0", "20000")?;

    // A client that reads the hello and vanishes: its session fails, the server goes on.
    {
        let mut stream = TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut header = [0u8; 4];
        stream.read_exact(&mut header)?;
        stream.write_all(&[0xff; 3])?;
    }

    for logits in [false, true] {
        let mut client = moat();
        client.args(["secure", "client", "--connect", &addr, "--dataset", "digits", "--count", "12", "--json"]);
        client.arg("--compare-with").arg(&model);
        if logits {
            client.arg("--logits");
        }
        let out = client.output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(report["queries"], 12);
        assert_eq!(report["agree_with_fixed_point"], 12, "{report}");
        assert!(report["accuracy"].as_f64().unwrap_or(0.0) > 0.7, "{report}");
        assert!(report["bytes_per_query"].as_f64().unwrap_or(0.0) > 1000.0, "{report}");
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn bench_secure_reports_the_fused_rescale_per_layer() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-secure-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = train_digits_model(&dir)?;
    let out = moat().args(["bench", "secure", "--queries", "2", "--json", "--model"]).arg(&model).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    // mlp:32,16: three dense layers; the two hidden ones truncate after their ReLU.
    assert_eq!((report["deferred_truncations"].as_u64(), report["linear_layers"].as_u64()), (Some(2), Some(3)));
    let layers = report["layers"].as_array().ok_or("layers")?;
    let truncated = |op: &str| layers.iter().filter(|l| l["op"] == op && l["truncated"] == true).count();
    assert_eq!((truncated("Relu"), truncated("Dense")), (2, 1), "{report}");
    // The per-layer bytes add up to the total.
    let sum: f64 =
        layers.iter().map(|l| l["bytes_up"].as_f64().unwrap_or(0.0) + l["bytes_down"].as_f64().unwrap_or(0.0)).sum();
    let total = report["bytes_per_query"].as_f64().unwrap_or(0.0);
    assert!((sum - total).abs() <= 0.01 * total, "{sum} vs {total}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn a_client_without_a_server_fails_within_its_timeout() -> TestResult {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    // Accept the connection but never say hello.
    let _hold = std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            std::thread::sleep(Duration::from_secs(5));
            drop(stream);
        }
    });
    let started = std::time::Instant::now();
    let out = moat()
        .args(["secure", "client", "--connect", &addr, "--dataset", "digits", "--count", "1", "--timeout-ms", "500"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("timed out") || stderr.contains("timeout"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    Ok(())
}

/// The proxy's address and the thread that returns the client's bytes.
type Capture = (String, std::thread::JoinHandle<Vec<u8>>);

/// A one-connection TCP proxy in front of `upstream` that records what the client sends.
fn capturing_proxy(upstream: String) -> Result<Capture, Box<dyn std::error::Error>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let handle = std::thread::spawn(move || {
        let mut captured = Vec::new();
        let Ok((mut client, _)) = listener.accept() else { return captured };
        let Ok(mut server) = TcpStream::connect(&upstream) else { return captured };
        let limit = Some(Duration::from_secs(30));
        for s in [&client, &server] {
            s.set_read_timeout(limit).ok();
        }
        let (Ok(mut client_back), Ok(mut server_back)) = (client.try_clone(), server.try_clone()) else {
            return captured;
        };
        let down = std::thread::spawn(move || {
            std::io::copy(&mut server_back, &mut client_back).ok();
            client_back.shutdown(std::net::Shutdown::Write).ok();
        });
        let mut buf = [0u8; 1 << 16];
        while let Ok(n @ 1..) = client.read(&mut buf) {
            captured.extend_from_slice(&buf[..n]);
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        server.shutdown(std::net::Shutdown::Write).ok();
        down.join().ok();
        captured
    });
    Ok((addr, handle))
}

#[test]
fn default_clients_send_different_traffic_and_only_an_insecure_seed_repeats_it() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-secure-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = train_digits_model(&dir)?;
    // Each client against a fresh server whose randomness is fixed: any difference between two
    // runs comes from the client.
    let run = |client_args: &[&str]| -> Result<(Vec<u8>, serde_json::Value), Box<dyn std::error::Error>> {
        let (_server, addr) = secure_util::start_server_with(&model, "1", "20000", &["--insecure-seed", "7"])?;
        let (proxy, captured) = capturing_proxy(addr)?;
        let out = moat()
            .args(["secure", "client", "--connect", &proxy, "--dataset", "digits", "--count", "1", "--json"])
            .args(client_args)
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let bytes = captured.join().map_err(|_| "proxy thread panicked")?;
        assert!(bytes.len() > 10_000, "captured only {} bytes", bytes.len());
        Ok((bytes, serde_json::from_slice(&out.stdout)?))
    };
    let (a, report) = run(&[])?;
    let (b, _) = run(&[])?;
    assert_ne!(a, b, "two default clients sent identical traffic");
    assert_eq!((report["private"].as_bool(), report.get("insecure_seed")), (Some(true), None), "{report}");
    // The control: the same explicit seed reproduces the traffic byte for byte.
    let (c, report) = run(&["--insecure-seed", "5"])?;
    let (d, _) = run(&["--insecure-seed", "5"])?;
    assert!(c == d, "a fixed seed should reproduce the client's traffic");
    assert_eq!((report["private"].as_bool(), report["insecure_seed"].as_u64()), (Some(false), Some(5)), "{report}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn a_direct_server_commits_to_its_model_and_the_opening_names_the_file() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-secure-commit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = train_digits_model(&dir)?;
    let opening_file = dir.join("opening.json");
    let (_server, addr) = secure_util::start_server_with(
        &model,
        "2",
        "20000",
        &["--commitment-opening", &opening_file.to_string_lossy()],
    )?;
    let config = moat_mpc::transport::ChannelConfig::default().with_timeout(Duration::from_secs(20));
    let seen = |addr: &str| -> Result<Option<String>, Box<dyn std::error::Error>> {
        let session = moat_client::secure::SecureSession::connect_direct(addr, config, moat_client::Seed::from_os()?)?;
        let c = session.model_commitment().map(str::to_string);
        session.close()?;
        Ok(c)
    };
    let (first, second) = (seen(&addr)?, seen(&addr)?);
    let commitment = first.ok_or("the hello carries no commitment")?;
    assert_eq!(Some(&commitment), second.as_ref(), "one commitment for every session of the model");

    // The opening is the operator's secret until an audit: owner-only, and it opens to the file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(opening_file.metadata()?.permissions().mode() & 0o777, 0o600);
    }
    let opening: moat_wire::commitment::CommitmentOpening = serde_json::from_slice(&std::fs::read(&opening_file)?)?;
    opening.verify_seen(&commitment, &std::fs::read(&model)?)?;
    let mut other = std::fs::read(&model)?;
    let last = other.len() - 1;
    other[last] ^= 1;
    assert!(opening.verify_seen(&commitment, &other).is_err(), "a changed file must not open the commitment");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
