//! One budget across replicas: a real `redis-server` (the Debian package; `.ci/run` installs it
//! when missing) and two `moat serve` processes on it (`--store redis://…`). One key's budget
//! holds across both, also when both are hammered at once; a session token admitted by one is
//! redeemed at the other's session port, exactly once; with Redis stopped, requests get a clear
//! 503 and nothing is charged (checked after Redis comes back with its data).

mod serve_util;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moat_client::{ClientError, HttpClient, InferRequest, SecureClient, SessionRequest};
use serve_util::{Error, ServerProcess, TestResult, build_lenet_repo, scratch};

/// A `redis-server` on loopback, append-only file on every write so a restart keeps the
/// counters; killed on drop.
struct Redis {
    child: Child,
}

impl Redis {
    fn start(port: u16, dir: &Path) -> Result<Self, Error> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server is needed (apt-get install redis-server): {e}"))?;
        let redis = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    fn stop(mut self) -> Result<(), Error> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One sample's inference with `key` on `server`: the HTTP status.
fn infer(server: &ServerProcess, key: &str) -> Result<u16, Error> {
    let http = HttpClient::new(&server.url)?.with_api_key(key);
    let request = InferRequest::batch(&[vec![0.1f32; 28 * 28]], &[1, 28, 28])?;
    match http.infer("lenet5", None, &request) {
        Ok(_) => Ok(200),
        Err(ClientError::Status { status, .. }) => Ok(status),
        Err(e) => Err(e.into()),
    }
}

fn infer_message(server: &ServerProcess, key: &str) -> Result<(u16, String), Error> {
    let http = HttpClient::new(&server.url)?.with_api_key(key);
    let request = InferRequest::batch(&[vec![0.1f32; 28 * 28]], &[1, 28, 28])?;
    match http.infer("lenet5", None, &request) {
        Ok(_) => Ok((200, String::new())),
        Err(ClientError::Status { status, message, .. }) => Ok((status, message)),
        Err(e) => Err(e.into()),
    }
}

#[test]
fn one_budget_holds_across_two_replicas_sharing_redis() -> TestResult {
    let dir = scratch("redis")?;
    let repo = build_lenet_repo(&dir, None)?;
    let keys = dir.join("keys.json");
    let settings = serde_json::json!({
        "alice-key": { "name": "alice", "budget": 6 },
        "carol-key": { "name": "carol", "budget": 40 },
        "bob-key": { "name": "bob", "budget": 3 },
        "dave-key": { "name": "dave", "budget": 4 },
    });
    std::fs::write(&keys, settings.to_string())?;
    let port = free_port()?;
    let data = dir.join("redis-data");
    std::fs::create_dir_all(&data)?;
    let redis = Redis::start(port, &data)?;
    let store = format!("redis://127.0.0.1:{port}");
    let args = ["--api-keys", keys.to_str().ok_or("path")?, "--store", &store];
    let a = ServerProcess::start(&repo, &args)?;
    let b = ServerProcess::start(&repo, &args)?;
    assert!(a.log().contains("shared by every replica"), "{}", a.log());

    // Alternating replicas: six samples in all, then 429 on both.
    for i in 0..6 {
        assert_eq!(infer(if i % 2 == 0 { &a } else { &b }, "alice-key")?, 200, "request {i}");
    }
    assert_eq!(infer(&a, "alice-key")?, 429);
    assert_eq!(infer(&b, "alice-key")?, 429);

    // Both replicas at once, 30 requests each for a budget of 40: exactly 40 served.
    let served = std::thread::scope(|scope| {
        let workers: Vec<_> = [&a, &b]
            .into_iter()
            .flat_map(|s| (0..3).map(move |_| s))
            .map(|s| scope.spawn(move || (0..10).filter(|_| infer(s, "carol-key").is_ok_and(|st| st == 200)).count()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum::<usize>()
    });
    assert_eq!(served, 40, "one budget of 40 across two replicas");

    // A session token admitted by A is redeemed at B's session port, once.
    let at_a = SecureClient::new(HttpClient::new(&a.url)?.with_api_key("dave-key"));
    let at_b = SecureClient::new(HttpClient::new(&b.url)?.with_api_key("dave-key"));
    let image = vec![0.2f32; 28 * 28];
    let from_b = at_b.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let mut from_a = at_a.admit_model("lenet5", None, &SessionRequest::queries(1))?;
    let a_session_port = from_a.address.clone();
    assert_ne!(a_session_port, from_b.address, "two replicas, two session ports");
    from_a.address = from_b.address.clone();
    let mut session = at_b.connect(&from_a, moat_client::Seed::from_os()?)?;
    session.infer(&image)?;
    session.close()?;
    // The same token at A, which issued it: already used.
    from_a.address = a_session_port;
    match at_a.connect(&from_a, moat_client::Seed::from_os()?) {
        Err(ClientError::Refused { reason, .. }) => assert_eq!(reason.as_str(), "unknown_token"),
        Err(e) => return Err(format!("expected unknown_token, got {e}").into()),
        Ok(_) => return Err("a token was redeemed twice".into()),
    }
    // B's own token at B, as usual.
    let mut session = at_b.connect(&from_b, moat_client::Seed::from_os()?)?;
    session.infer(&image)?;
    session.close()?;
    // Two sessions of one query each, both used: two of dave's four samples are left.
    assert_eq!(infer(&a, "dave-key")?, 200);
    assert_eq!(infer(&b, "dave-key")?, 200);
    assert_eq!(infer(&a, "dave-key")?, 429);

    // Bob uses one sample; with Redis stopped both replicas answer 503, saying why.
    assert_eq!(infer(&a, "bob-key")?, 200);
    redis.stop()?;
    for server in [&a, &b] {
        let (status, message) = infer_message(server, "bob-key")?;
        assert_eq!(status, 503, "{message}");
        assert!(
            message.contains("budget store is unavailable") && message.contains("nothing was charged"),
            "{message}"
        );
    }
    // Health does not depend on the store.
    assert!(HttpClient::new(&a.url)?.is_ready()?);
    // Redis back with its data: bob has exactly two samples left (the 503s charged nothing).
    let redis = Redis::start(port, &data)?;
    assert_eq!(infer(&b, "bob-key")?, 200);
    assert_eq!(infer(&a, "bob-key")?, 200);
    assert_eq!(infer(&b, "bob-key")?, 429);
    drop(redis);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
