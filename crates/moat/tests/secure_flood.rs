//! `moat secure server` under an idle-connection flood: 2,000 connections that never speak,
//! against a server limited to 256 file descriptors. The server refuses the excess with a
//! `busy` frame, frees the slots the idle ones took after the handshake timeout, stays alive,
//! and serves a real `moat secure client` while all 2,000 connections are still open.
//!
//! The test process itself holds 2,000 sockets: it needs a file-descriptor limit above that.

mod secure_util;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secure_util::{Server, moat};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const IDLE: usize = 2_000;
const SERVER_FD_LIMIT: &str = "256";

fn train_digits_model(dir: &Path) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let model = dir.join("mlp.onnx");
    let out = moat()
        .args(["train", "--arch", "mlp:16", "--dataset", "digits", "--epochs", "5", "--seed", "3", "--quiet", "-o"])
        .arg(&model)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(model)
}

/// The server under `ulimit -n 256`, at most 2 sessions, 1.5 s to start talking.
fn start_limited_server(model: &Path) -> Result<(Server, String), Box<dyn std::error::Error>> {
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit -n {SERVER_FD_LIMIT} && exec \"$0\" \"$@\"")])
        .arg(env!("CARGO_BIN_EXE_moat"))
        .args(["secure", "server"])
        .arg(model)
        .args(["--listen", "127.0.0.1:0", "--sessions", "0", "--timeout-ms", "20000"])
        .args(["--max-sessions", "2", "--handshake-timeout-ms", "1500"])
        .env_remove("MOAT_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("server stdout")?;
    let server = Server::new(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").ok_or("no address")?.to_string();
    Ok((server, addr))
}

/// The first frame the server sent on `stream`, if any within a second.
fn first_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).ok()?;
    let mut payload = vec![0u8; u32::from_le_bytes(header) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

fn open_descriptors(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

fn secure_client(addr: &str, model: &Path) -> std::io::Result<std::process::Output> {
    moat()
        .args(["secure", "client", "--connect", addr, "--dataset", "digits", "--count", "3", "--json"])
        .args(["--timeout-ms", "20000", "--compare-with"])
        .arg(model)
        .output()
}

#[test]
fn an_idle_flood_is_refused_as_busy_and_a_real_client_is_still_served() -> TestResult {
    let dir = std::env::temp_dir().join(format!("moat-secure-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = train_digits_model(&dir)?;
    let (mut server, addr) = start_limited_server(&model)?;
    let socket: SocketAddr = addr.parse()?;

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect_timeout(&socket, Duration::from_secs(10))?);
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    assert!(server.alive()?, "the server died under {IDLE} idle connections");
    let fds = open_descriptors(server.id());

    // During the flood a client is served or told plainly that the server is busy.
    let during = secure_client(&addr, &model)?;
    let during_err = String::from_utf8_lossy(&during.stderr).to_string();
    assert!(during.status.success() || during_err.contains("busy"), "{during_err}");

    // The excess connections got the refusal frame (the first two got the protocol's hello).
    let mut busy = 0;
    for stream in idle.iter_mut().skip(IDLE - 200) {
        if let Some(frame) = first_frame(stream) {
            let reply: serde_json::Value = serde_json::from_slice(&frame).unwrap_or_default();
            busy += usize::from(reply["accepted"] == false && reply["reason"] == "busy");
        }
    }
    assert!(busy >= 190, "only {busy} of the last 200 idle connections were refused as busy");

    // Once the idle sessions' handshake timeout passed, a real client is served while all the
    // idle connections are still open on the client side.
    std::thread::sleep(Duration::from_millis(1_600));
    let out = secure_client(&addr, &model)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["agree_with_fixed_point"], 3, "{report}");
    assert!(server.alive()?, "the server exited");
    eprintln!(
        "{IDLE} idle connections in {flood_seconds:.2} s; server descriptors during the flood: {fds:?}; \
         client during the flood: {}; busy frames on the last 200: {busy}",
        if during.status.success() { "served" } else { "refused busy" }
    );
    if let Some(n) = fds {
        assert!(n < 64, "the server held {n} descriptors under the flood");
    }
    drop(idle);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
