//! `moat serve` under abuse: 2,000 idle connections to the HTTP port and 2,000 to the session
//! port. Health still answers within a second (the server closes the connections silent
//! longest to make room), a real secure client is served at once (on the session port too, a
//! newcomer closes the socket that has been silent longest), and the process stays alive with
//! bounded descriptors. Then a key whose budget is spent sends eight 16 MB bodies at once: refused before
//! the bodies are read, with the server's resident memory growing by less than 50 MB.
//!
//! The test process itself holds 4,000 sockets: it needs a file-descriptor limit above that.

mod serve_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moat_client::{HttpClient, SecureClient, SessionRequest};
use serve_util::{Error, ServerProcess, TestResult, build_lenet_repo, raw_http, scratch};

const IDLE: usize = 2_000;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_descriptors(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count())
}

/// Sends a request declaring and (as far as the server lets it) sending a `len`-byte JSON body;
/// returns the status.
fn big_body(addr: &str, key: &str, len: usize) -> Result<u16, Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "POST /v2/models/lenet5/infer HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    // A JSON array of numbers, sent in 1 MB pieces until done or the server stops reading.
    let mut body = vec![b'1'; 1 << 20];
    for (i, b) in body.iter_mut().enumerate() {
        if i % 2 == 1 {
            *b = b',';
        }
    }
    let mut sent = 0;
    while sent < len {
        let n = (len - sent).min(body.len());
        if stream.write_all(&body[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    Ok(text.split_whitespace().nth(1).ok_or("no status line")?.parse()?)
}

#[test]
fn health_and_a_real_client_survive_thousands_of_idle_connections_and_spent_keys_cost_no_memory() -> TestResult {
    let dir = scratch("flood")?;
    let repo = build_lenet_repo(&dir, None)?;
    let keys = dir.join("keys.json");
    let settings = serde_json::json!({
        "alice-key": { "name": "alice", "budget": 100 },
        "spent-key": { "name": "spent", "budget": 0 },
    });
    std::fs::write(&keys, settings.to_string())?;
    let server =
        ServerProcess::start(&repo, &["--api-keys", keys.to_str().ok_or("path")?, "--max-connections", "256"])?;
    let pid = server.child.id();
    let http = HttpClient::new(&server.url)?.with_api_key("alice-key");
    let client = SecureClient::new(http.clone()).with_timeout(Duration::from_secs(30));
    let image = vec![0.3f32; 28 * 28];
    let plaintext = http.infer(
        "lenet5",
        None,
        &http.model_metadata("lenet5", None)?.request(std::slice::from_ref(&image))?.with_output("label", false, None),
    )?;
    let label = plaintext.labels()?[0];
    let session_addr: SocketAddr = client.admit_model("lenet5", None, &SessionRequest::queries(1))?.address.parse()?;
    let http_addr: SocketAddr = server.addr.parse()?;

    // The flood: idle sockets that never send a byte.
    let started = Instant::now();
    let mut idle = Vec::with_capacity(2 * IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect_timeout(&http_addr, Duration::from_secs(10))?);
        idle.push(TcpStream::connect_timeout(&session_addr, Duration::from_secs(10))?);
    }
    let flood = started.elapsed();

    // Health within a second, five times over, while every idle socket is open.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _) = raw_http(&server.addr, "GET", "/v2/health/ready", &[], &[])?;
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, 200);
    }
    assert!(slowest < Duration::from_secs(1), "health took {slowest:?} under the flood");

    // A real secure client is served (it may have to retry while the handshake slots are held).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut attempts = 0;
    let served = loop {
        attempts += 1;
        let seed = moat_client::Seed::from_os()?;
        let outcome = client
            .admit_model("lenet5", None, &SessionRequest::queries(1))
            .and_then(|a| client.connect(&a, seed))
            .and_then(|mut s| {
                let l = s.infer(&image)?;
                s.close()?;
                Ok(l)
            });
        match outcome {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("secure client attempt {attempts}: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("no secure session within 40 s: {e}").into()),
        }
    };
    assert_eq!(served, label);
    // The newcomer evicts a silent socket instead of waiting for the handshake timeout.
    assert!(attempts <= 3, "the secure client needed {attempts} attempts");
    let mut server = server;
    assert!(server.child.try_wait()?.is_none(), "the server exited");
    let fds = open_descriptors(pid).ok_or("descriptors")?;
    assert!(fds < 600, "the server held {fds} descriptors under {} idle connections", 2 * IDLE);
    drop(idle);

    // Eight 16 MB bodies from a spent key at once: 429 before the bodies are read.
    let before = rss_kib(pid).ok_or("rss")?;
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let statuses = std::thread::scope(|scope| {
        let senders: Vec<_> =
            (0..8).map(|_| scope.spawn(|| big_body(&server.addr, "spent-key", 16 << 20).ok())).collect();
        senders.into_iter().map(|s| s.join().ok().flatten()).collect::<Vec<_>>()
    });
    done.store(true, Ordering::SeqCst);
    sampler.join().map_err(|_| "sampler panicked")?;
    assert!(statuses.iter().all(|s| *s == Some(429)), "{statuses:?}");
    let growth_mb = (peak.load(Ordering::SeqCst).saturating_sub(before)) as f64 / 1024.0;
    assert!(growth_mb < 50.0, "resident memory grew by {growth_mb:.1} MB for spent-key bodies");
    eprintln!(
        "{} idle connections in {:.2} s; health slowest {slowest:?}; secure client served after {attempts} \
         attempt(s); server descriptors {fds}; spent-key 8 × 16 MB: RSS +{growth_mb:.1} MB",
        2 * IDLE,
        flood.as_secs_f64()
    );
    assert!(server.child.try_wait()?.is_none(), "the server exited");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
