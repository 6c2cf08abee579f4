//! `moat loadtest --url URL --model NAME`: a closed-loop HTTP load generator for a server on
//! this machine.
//!
//! `--connections` threads each keep one connection and send inference requests back to back
//! (one warm-up request each, then timed) until `--duration` passes or `--max-requests` have
//! been sent; the report gives throughput, latency percentiles and errors. With
//! `--compare-onnx MODEL.onnx` it also times the same batch in-process, so the server's
//! overhead can be read off. Loopback addresses only: this is a benchmark, not a stress tool
//! for other people's servers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use moat_client::{ClientError, HttpClient};
use moat_nn::FloatExecutor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::load_model;
use super::serve::parse_duration;
use crate::report::print_json;

/// Arguments of `moat loadtest`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server base URL on a loopback address, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub url: String,
    /// Model (or, with --task, task) to query.
    #[arg(long)]
    pub model: String,
    /// Query the task endpoint /v2/tasks/MODEL/infer.
    #[arg(long)]
    pub task: bool,
    /// Concurrent connections (one thread each).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to send requests (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests in total.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,
    /// Samples per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Send inputs with the binary tensor extension.
    #[arg(long)]
    pub binary: bool,
    /// API key.
    #[arg(long, env = "MOAT_API_KEY")]
    pub api_key: Option<String>,
    /// Request parameter KEY=VALUE (e.g. min_accuracy=90).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Also time the same batch in-process with this ONNX model.
    #[arg(long)]
    pub compare_onnx: Option<PathBuf>,
    /// Seed of the random inputs; default: drawn from the OS and recorded in the report.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Some(Self {
            p50_ms: pick(0.5),
            p90_ms: pick(0.9),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }
}

/// The load test's result.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Endpoint path.
    pub endpoint: String,
    /// Connections.
    pub connections: usize,
    /// Samples per request.
    pub batch: usize,
    /// Seed of the random inputs (`--seed` repeats them).
    pub seed: u64,
    /// Binary inputs.
    pub binary: bool,
    /// Timed seconds.
    pub seconds: f64,
    /// Requests completed (successes and errors).
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failures by kind (`HTTP 503`, `transport`, …).
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Samples per second.
    pub samples_per_s: f64,
    /// Latency of successful requests.
    pub latency: Option<Latency>,
    /// In-process time of one request's batch with `--compare-onnx`.
    pub in_process: Option<Latency>,
    /// Median HTTP latency minus median in-process time.
    pub overhead_p50_ms: Option<f64>,
}

/// True when `url`'s host is a loopback address or `localhost`.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses `KEY=VALUE` request parameters (numbers where they parse, else strings).
pub fn parse_params(params: &[String]) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    params
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("--param '{p}': expected KEY=VALUE"))?;
            let value = v.parse::<f64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::from(v));
            Ok((k.to_string(), value))
        })
        .collect()
}

/// `moat loadtest`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    if !is_loopback_url(&args.url) {
        bail!("--url must point to a loopback address (127.0.0.0/8, ::1 or localhost): {}", args.url);
    }
    if args.connections == 0 || args.connections > 1024 || args.batch == 0 {
        bail!("--connections must be in 1..=1024 and --batch positive");
    }
    let mut client = HttpClient::new(&args.url)?.with_timeout(args.timeout);
    if let Some(k) = &args.api_key {
        client = client.with_api_key(k.clone());
    }
    let meta = client.model_metadata(&args.model, None).with_context(|| format!("metadata of '{}'", args.model))?;
    let sample_shape = meta.sample_shape()?;
    let per: usize = sample_shape.iter().product();
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let samples: Vec<Vec<f32>> =
        (0..args.batch).map(|_| (0..per).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect();
    let mut request = meta.request(&samples)?.with_binary_input(args.binary);
    for (k, v) in parse_params(&args.params)? {
        request = request.with_parameter(k, v);
    }
    let endpoint =
        if args.task { format!("/v2/tasks/{}/infer", args.model) } else { format!("/v2/models/{}/infer", args.model) };

    let sent = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(args.connections + 1));
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (client, request, sent, barrier) = (client.clone(), request.clone(), sent.clone(), barrier.clone());
        let (model, task, duration, max) = (args.model.clone(), args.task, args.duration, args.max_requests);
        workers.push(std::thread::spawn(move || {
            let call = || if task { client.infer_task(&model, &request) } else { client.infer(&model, None, &request) };
            // Warm-up: open the connection.
            let _ = call();
            barrier.wait();
            let deadline = Instant::now() + duration;
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                let start = Instant::now();
                match call() {
                    Ok(_) => latencies.push(start.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        let kind = match &e {
                            ClientError::Status { status, .. } => format!("HTTP {status}"),
                            ClientError::Transport(_) => "transport".into(),
                            ClientError::Protocol(_) => "protocol".into(),
                            _ => "other".into(),
                        };
                        *errors.entry(kind).or_default() += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for w in workers {
        let (l, e) = w.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        latencies.extend(l);
        for (k, n) in e {
            *error_kinds.entry(k).or_default() += n;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let ok = latencies.len() as u64;
    let errors: u64 = error_kinds.values().sum();

    let in_process = match &args.compare_onnx {
        None => None,
        Some(path) => {
            let graph = load_model(path)?;
            let mut times = Vec::new();
            let until = Instant::now() + Duration::from_secs(2);
            while times.len() < 20 || (Instant::now() < until && times.len() < 5000) {
                let t = Instant::now();
                for s in &samples {
                    std::hint::black_box(FloatExecutor::logits(&graph, s)?);
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Latency::of(times)
        }
    };
    let latency = Latency::of(latencies);
    let overhead_p50_ms = match (&latency, &in_process) {
        (Some(l), Some(p)) => Some(l.p50_ms - p.p50_ms),
        _ => None,
    };
    let report = LoadReport {
        endpoint,
        connections: args.connections,
        batch: args.batch,
        seed: args.seed,
        binary: args.binary,
        seconds,
        requests: ok + errors,
        errors,
        error_kinds,
        throughput_rps: ok as f64 / seconds,
        samples_per_s: (ok * args.batch as u64) as f64 / seconds,
        latency,
        in_process,
        overhead_p50_ms,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "{} x{} connections, batch {}, {:.1} s (inputs of seed {})",
        report.endpoint, report.connections, report.batch, report.seconds, report.seed
    );
    println!("requests {}  errors {} {:?}", report.requests, report.errors, report.error_kinds);
    println!("throughput {:.0} req/s ({:.0} samples/s)", report.throughput_rps, report.samples_per_s);
    if let Some(l) = &report.latency {
        println!("latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}", l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms);
    }
    if let (Some(p), Some(o)) = (&report.in_process, report.overhead_p50_ms) {
        println!("in-process ms: p50 {:.4}  p99 {:.4}; HTTP overhead at p50 {:.3} ms", p.p50_ms, p.p99_ms, o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        for ok in ["http://127.0.0.1:8000", "http://localhost:1/x", "http://[::1]:80/v2", "http://127.3.2.1"] {
            assert!(is_loopback_url(ok), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8000",
            "http://example.com",
            "ftp://127.0.0.1",
            "http://127.0.0.1@evil.com",
            "http://[::2]:1",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }

    #[test]
    fn params_are_numbers_or_strings() -> anyhow::Result<()> {
        let p = parse_params(&["min_accuracy=90".into(), "mode=x".into()])?;
        assert_eq!(p[0], ("min_accuracy".into(), serde_json::json!(90.0)));
        assert_eq!(p[1], ("mode".into(), serde_json::json!("x")));
        assert!(parse_params(&["oops".into()]).is_err());
        Ok(())
    }
}
