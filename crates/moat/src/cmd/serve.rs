//! `moat serve --repository DIR`: the model server (Open Inference Protocol v2 over HTTP, with
//! model-less task routing, keys, budgets, audit log and metrics).
//!
//! The first line on stdout is `listening on http://ADDR` (`https://` with `--tls-cert`) once
//! every model is loaded and profiled and the socket is bound (with `--listen 127.0.0.1:0` the
//! OS picks the port).
//!
//! Secure (two-party) inference sessions are on by default, on a session port of their own:
//! `--secure-addr HOST:PORT`, by default the `--listen` address with the next port (any free port
//! when `--listen`'s port is 0); `--secure-addr off` turns them off. The port is logged at start
//! and returned to clients by the admission endpoints (`POST …/secure`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use moat_serve::policy::NoiseSensitivity;
use moat_serve::{Limits, LoadOptions, PolicyKind, SecureConfig, Server, ServerConfig, TaskDefaults};

/// Arguments of `moat serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model repository: <repo>/<model>/<version>/model.onnx (+ model.card.json), optional
    /// <repo>/<model>/config.json and <repo>/tasks.json.
    #[arg(long, visible_alias = "model-repository")]
    pub repository: PathBuf,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Async runtime worker threads (HTTP handling).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Inferences run at once (default: the number of CPUs).
    #[arg(long)]
    pub inference_threads: Option<usize>,
    /// Requests that may wait for an inference thread; more get 503 + Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Open connections at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Deadline of a whole request (e.g. 60s, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Deadline of one inference run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub infer_timeout: Duration,
    /// Longest wait for an inference thread.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Deadline for a client's request headers; also closes idle keep-alive connections.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// How long shutdown (SIGTERM, Ctrl-C) waits for in-flight requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Seed of the model-selection RNG. Fixing it makes runs reproducible and is shown in the
    /// server metadata, so selections become predictable: omit it in production.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Selection policy of tasks without a tasks.json entry: fastest, uniform, exponential,
    /// permute-and-flip, noisy-spec.
    #[arg(long, default_value = "fastest")]
    pub policy: PolicyKind,
    /// Privacy parameter ε of the randomised policies.
    #[arg(long, default_value_t = 1.0)]
    pub epsilon: f64,
    /// Name the serving model in task responses (default: the task's name only).
    #[arg(long)]
    pub disclose_model: bool,
    /// API key file (JSON: key → {name, budget, rate_per_s, burst, admin}); none: open access.
    #[arg(long, env = "MOAT_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// Audit log: one JSON line per query.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Dataset directory for held-out profiling sets (a parent with one folder per dataset).
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Untimed runs before the latency profile.
    #[arg(long, default_value_t = 20)]
    pub profile_warmup: usize,
    /// Timed runs of the latency profile.
    #[arg(long, default_value_t = 200)]
    pub profile_runs: usize,
    /// Held-out samples for the accuracy profile.
    #[arg(long, default_value_t = 1000)]
    pub held_out_samples: usize,
    /// Largest batch, for models whose config does not say.
    #[arg(long, default_value_t = 64)]
    pub max_batch_size: usize,
    /// Serve the other models when one fails to load (default: refuse to start).
    #[arg(long)]
    pub keep_going: bool,
    /// Secure-session port (two-party inference): HOST:PORT, or `off`. Default: the --listen
    /// address with the next port (any free port when --listen's port is 0).
    #[arg(long, env = "MOAT_SECURE_ADDR")]
    pub secure_addr: Option<String>,
    /// HOST:PORT secure clients are told to connect to. Default: the bound address, or the
    /// host the client used for HTTP when bound to 0.0.0.0. In Kubernetes: the pod's address.
    #[arg(long, env = "MOAT_SECURE_ADVERTISE")]
    pub secure_advertise: Option<String>,
    /// Secure sessions running at once; more clients are told to retry (default: the CPUs).
    #[arg(long)]
    pub max_secure_sessions: Option<usize>,
    /// Most queries one secure session may be granted.
    #[arg(long, default_value_t = 1000)]
    pub secure_max_queries: u64,
    /// Lifetime of an unused secure-session token.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub secure_token_ttl: Duration,
    /// Bound on every wait for a secure-session client.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub secure_timeout: Duration,
    /// An admitted secure session that sends no query for this long is ended (its unused
    /// queries refunded), so idle clients do not hold the session slots.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub secure_idle_timeout: Duration,
    /// Hardening against share-tampering clients (SEEK): fresh uniform noise of this half-width
    /// (real units) on the server's share of every activation input and logit. 0.1 costs the
    /// MNIST LeNet-5 0.04 accuracy points (BENCHMARKS.md, "Attacks").
    #[arg(long, default_value_t = 0.0)]
    pub secure_harden: f64,
    /// The most a secure session may reveal to its client: `label`, `top-K`, `probabilities`
    /// or `logits`. An admission asking for more is refused (403) before anything is charged.
    #[arg(long, default_value = "logits")]
    pub secure_output: moat_mpc::engine::Reveal,
    /// Serve TLS on the HTTP port and the session port with this certificate chain (PEM);
    /// needs --tls-key. Without it both ports speak plain TCP (logged at start).
    #[arg(long, requires = "tls_key", env = "MOAT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert", env = "MOAT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by this CA (PEM).
    #[arg(long, requires = "tls_cert", env = "MOAT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Where keys' running budgets and rate buckets live: `memory` (this replica only) or
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, shared by every replica using it (one budget
    /// across replicas; requests get 503 and are not charged while it is unreachable).
    #[arg(long, default_value = "memory", env = "MOAT_STORE", hide_env_values = true)]
    pub store: String,
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("'{s}' is not a duration (e.g. 500ms, 10s, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("'{s}' is not a duration"));
    }
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("'{s}': {e}"))
}

impl Args {
    /// The server configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        if self.workers == 0 || self.max_connections == 0 || self.max_body_bytes == 0 || self.max_batch_size == 0 {
            bail!("--workers, --max-connections, --max-body-bytes and --max-batch-size must be positive");
        }
        let mut config = ServerConfig::new(self.repository.clone(), self.listen);
        config.runtime_workers = self.workers;
        config.limits = Limits {
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            infer_timeout: self.infer_timeout,
            queue_timeout: self.queue_timeout,
            max_queue: self.max_queue,
            inference_threads: self.inference_threads.unwrap_or(Limits::default().inference_threads).max(1),
            max_connections: self.max_connections,
            header_read_timeout: self.header_timeout,
            shutdown_grace: self.shutdown_grace,
            ..Limits::default()
        };
        config.seed = self.seed;
        config.task_defaults = TaskDefaults {
            policy: self.policy,
            epsilon: self.epsilon,
            disclose_model: self.disclose_model,
            sensitivity: NoiseSensitivity::default(),
        };
        config.api_keys = self.api_keys.clone();
        config.audit_log = self.audit_log.clone();
        config.load = LoadOptions {
            data_dir: self.data_dir.clone(),
            warmup: self.profile_warmup,
            runs: self.profile_runs.max(1),
            held_out_samples: self.held_out_samples,
            max_batch_size: self.max_batch_size,
        };
        config.exit_on_error = !self.keep_going;
        config.secure = self.secure_config()?;
        config.store = self.store.clone();
        config.tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(moat_serve::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        Ok(config)
    }

    /// The secure-session settings (`None` with `--secure-addr off`).
    fn secure_config(&self) -> anyhow::Result<Option<SecureConfig>> {
        let listen = match self.secure_addr.as_deref().map(str::trim) {
            Some("off") => return Ok(None),
            None | Some("") => None,
            Some(a) => Some(a.parse().with_context(|| format!("--secure-addr '{a}': expected HOST:PORT or off"))?),
        };
        if !(self.secure_harden.is_finite() && self.secure_harden >= 0.0) {
            anyhow::bail!("--secure-harden must be a non-negative amplitude, got {}", self.secure_harden);
        }
        let defaults = SecureConfig::default();
        let config = SecureConfig {
            listen,
            advertise: self.secure_advertise.clone().filter(|a| !a.trim().is_empty()),
            max_sessions: self.max_secure_sessions.unwrap_or(defaults.max_sessions),
            max_queries: self.secure_max_queries,
            token_ttl: self.secure_token_ttl,
            session_timeout: self.secure_timeout,
            idle_timeout: self.secure_idle_timeout,
            hardening: moat_mpc::engine::Hardening::uniform(self.secure_harden),
            output: self.secure_output,
            ..defaults
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

/// `moat serve`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let server = Server::bind(&config).with_context(|| format!("serving {}", args.repository.display()))?;
    let mut stdout = std::io::stdout().lock();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    writeln!(stdout, "listening on {scheme}://{}", server.local_addr())?;
    stdout.flush()?;
    drop(stdout);
    tracing::info!(addr = %server.local_addr(), models = server.state().repository.ready_versions().len(), "serving");
    match server.secure_addr() {
        Some(addr) => tracing::info!(%addr, "secure sessions on"),
        None => tracing::info!("secure sessions off"),
    }
    server.run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
