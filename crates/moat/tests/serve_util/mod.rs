//! Shared helpers of the `serve_*` end-to-end tests: a model repository trained on the spot with
//! the real `moat train`, the real `moat serve` started on loopback, and raw HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Error = Box<dyn std::error::Error>;

/// The zoo: directory name and architecture. Different sizes give different accuracy and
/// latency profiles, so the task's Pareto front is real.
pub const ZOO: [(&str, &str); 3] = [("mlp-16", "mlp:16"), ("mlp-64", "mlp:64"), ("mlp-256", "mlp:256,128")];

pub fn moat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moat"));
    c.env_remove("MOAT_DATA_DIR").env_remove("MOAT_API_KEYS").env_remove("MOAT_API_KEY");
    c
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("moat-serve-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Trains `models` (`(name, arch, seed)`) on the digits training split into
/// `<dir>/repo/<name>/1/model.onnx` (+ card) with the real `moat train`; returns the
/// repository path.
pub fn train_digits_repo(dir: &Path, models: &[(&str, &str, u64)], epochs: u32) -> Result<PathBuf, Error> {
    let repo = dir.join("repo");
    for (name, arch, seed) in models {
        let model = repo.join(name).join("1").join("model.onnx");
        std::fs::create_dir_all(model.parent().ok_or("parent")?)?;
        let out = moat()
            .args(["train", "--dataset", "digits", "--arch", arch, "--epochs", &epochs.to_string()])
            .args(["--seed", &seed.to_string(), "--quiet", "--out"])
            .arg(&model)
            .output()?;
        assert!(out.status.success(), "train {arch}: {}", text(&out.stderr));
    }
    Ok(repo)
}

/// Trains the zoo on digits into `<dir>/repo/<name>/1/model.onnx` (+ card), each model's
/// accuracy profiled on the held-out digits test split; returns the repository path.
pub fn build_repo(dir: &Path, epochs: u32) -> Result<PathBuf, Error> {
    let models: Vec<(&str, &str, u64)> = ZOO.iter().map(|(name, arch)| (*name, *arch, 1)).collect();
    let repo = train_digits_repo(dir, &models, epochs)?;
    for (name, _) in ZOO {
        let config =
            serde_json::json!({ "held_out": { "dataset": "digits" }, "latency": { "warmup": 20, "runs": 200 } });
        std::fs::write(repo.join(name).join("config.json"), config.to_string())?;
    }
    Ok(repo)
}

/// A running `moat serve`, killed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub addr: String,
    pub stderr: PathBuf,
}

impl ServerProcess {
    /// Starts `moat serve --repository REPO --listen 127.0.0.1:0 EXTRA…` and waits for the
    /// `listening on` line.
    pub fn start(repo: &Path, extra: &[&str]) -> Result<Self, Error> {
        let stderr = repo.with_extension(format!(
            "stderr-{}.log",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        ));
        let mut child = moat()
            .arg("serve")
            .arg("--repository")
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                return Err(format!("no 'listening on' line; stderr: {}", std::fs::read_to_string(&stderr)?).into());
            }
        };
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line '{line}'; stderr: {}", std::fs::read_to_string(&stderr)?).into());
        };
        let addr = url.split_once("://").map_or(url, |(_, a)| a).to_string();
        Ok(Self { child, url: url.to_string(), addr, stderr })
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 exchange (`Connection: close`): status and body.
pub fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (413) before reading a large body; a failed write is fine then.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no header end")?;
    let head = text(&response[..split]);
    let status: u16 = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

/// Sends only the headers of a request declaring a `declared`-byte body; status and body of
/// the answer (for limits enforced before the body is read).
pub fn raw_http_headers_only(addr: &str, method: &str, path: &str, declared: usize) -> Result<(u16, Vec<u8>), Error> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no header end")?;
    let status: u16 = text(&response[..split]).split_whitespace().nth(1).ok_or("no status")?.parse()?;
    let mut body = response[split + 4..].to_vec();
    if text(&response[..split]).to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("chunk size")?;
        let size = usize::from_str_radix(text(&data[..line_end]).trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("chunk end")?;
    }
}

/// The digits test split (seed 1, the seed the zoo was trained with).
pub fn digits_test() -> Result<moat_nn::data::Dataset, Error> {
    Ok(moat_nn::data::load("digits", None, 1)?.test)
}

/// One Prometheus text-format line: `# HELP name text`, `# TYPE name kind` or
/// `name{label="value",…} number`.
pub fn valid_prometheus_line(line: &str) -> bool {
    let name_ok = |n: &str| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if let Some(rest) = line.strip_prefix("# ") {
        let mut parts = rest.splitn(3, ' ');
        let (kind, name, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        return match kind {
            "HELP" => name_ok(name) && !value.is_empty(),
            "TYPE" => name_ok(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&value),
            _ => false,
        };
    }
    let Some((series, value)) = line.rsplit_once(' ') else { return false };
    if !(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value)) {
        return false;
    }
    let Some(open) = series.find('{') else { return name_ok(series) };
    let (name, labels) = (&series[..open], &series[open..]);
    if !name_ok(name) || !labels.ends_with('}') {
        return false;
    }
    // label="value" pairs; values may contain escaped quotes.
    let mut rest = &labels[1..labels.len() - 1];
    while !rest.is_empty() {
        let Some(eq) = rest.find("=\"") else { return false };
        if !name_ok(&rest[..eq]) {
            return false;
        }
        let mut i = eq + 2;
        let bytes = rest.as_bytes();
        loop {
            match bytes.get(i) {
                None => return false,
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        rest = &rest[i + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    true
}

/// The workspace's `models/` directory (trained reference models and their cards).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// A repository serving the trained LeNet-5 (`models/lenet5-mnist.onnx` with its card) as
/// `<dir>/repo/lenet5/1`: task `mnist` and accuracy from the card, so no MNIST files are needed;
/// a short latency profile. `tasks` is written as `tasks.json` when given. Returns the path.
pub fn build_lenet_repo(dir: &Path, tasks: Option<&serde_json::Value>) -> Result<PathBuf, Error> {
    let repo = dir.join("repo");
    let version = repo.join("lenet5").join("1");
    std::fs::create_dir_all(&version)?;
    std::fs::copy(models_dir().join("lenet5-mnist.onnx"), version.join("model.onnx"))?;
    std::fs::copy(models_dir().join("lenet5-mnist.card.json"), version.join("model.card.json"))?;
    let config = serde_json::json!({ "latency": { "warmup": 2, "runs": 20 } });
    std::fs::write(repo.join("lenet5").join("config.json"), config.to_string())?;
    if let Some(tasks) = tasks {
        std::fs::write(repo.join("tasks.json"), tasks.to_string())?;
    }
    Ok(repo)
}
