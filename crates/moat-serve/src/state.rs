//! Server configuration and the state every handler shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::TryRngCore;
use rand_chacha::ChaCha20Rng;

use crate::audit::AuditLog;
use crate::error::ServeError;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::policy::{Candidate, Policy, Spec};
use crate::pool::InferencePool;
use crate::repository::{LoadOptions, Repository};
use crate::secure::{SecureConfig, SecureService};
use crate::tasks::{TaskDefaults, TaskTable};

/// Every bound the server enforces.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Deadline of a whole request, body included (504 past it).
    pub request_timeout: Duration,
    /// Deadline of one inference run (504 past it).
    pub infer_timeout: Duration,
    /// Longest wait for an inference thread (503 past it).
    pub queue_timeout: Duration,
    /// Requests that may wait for an inference thread (503 beyond).
    pub max_queue: usize,
    /// Inferences running at once.
    pub inference_threads: usize,
    /// Open connections at once (further connections wait in the listen backlog).
    pub max_connections: usize,
    /// Deadline for a client to send a request's headers, also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Deadline of a repository load (profiling included).
    pub load_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            request_timeout: Duration::from_secs(60),
            infer_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(10),
            max_queue: 256,
            inference_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Everything `moat serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The model repository.
    pub repository: PathBuf,
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Async runtime worker threads (request handling; inference runs on separate threads).
    pub runtime_workers: usize,
    /// Bounds.
    pub limits: Limits,
    /// Seed of the selection RNG; `None` draws one from the OS and keeps it secret.
    pub seed: Option<u64>,
    /// Policy defaults for tasks without a `tasks.json` entry.
    pub task_defaults: TaskDefaults,
    /// API key file (`None`: open access).
    pub api_keys: Option<PathBuf>,
    /// Audit log file (`None`: no audit log).
    pub audit_log: Option<PathBuf>,
    /// Loading and profiling defaults.
    pub load: LoadOptions,
    /// Refuse to start when a model fails to load (Triton's `--exit-on-error`).
    pub exit_on_error: bool,
    /// Secure-inference sessions (`None`: off, no session port, no `/secure` routes).
    pub secure: Option<SecureConfig>,
    /// TLS on the HTTP API and the session port (`None`: plain TCP, logged at start).
    pub tls: Option<crate::tls::TlsSettings>,
    /// Where keys' running budgets and rate buckets live: `memory` (this replica) or
    /// `redis://HOST:PORT[/DB]` (shared by replicas, see [`crate::store`]).
    pub store: String,
}

impl ServerConfig {
    /// Defaults for serving `repository` on `listen`.
    pub fn new(repository: PathBuf, listen: SocketAddr) -> Self {
        Self {
            repository,
            listen,
            runtime_workers: 2,
            limits: Limits::default(),
            seed: None,
            task_defaults: TaskDefaults::default(),
            api_keys: None,
            audit_log: None,
            load: LoadOptions::default(),
            exit_on_error: true,
            secure: Some(SecureConfig::default()),
            tls: None,
            store: "memory".into(),
        }
    }
}

/// State shared by every request.
#[derive(Debug)]
pub struct ServerState {
    /// The models.
    pub repository: Repository,
    /// The tasks.
    pub tasks: TaskTable,
    /// API keys (`None`: open access).
    pub keys: Option<KeyStore>,
    /// Audit log.
    pub audit: Option<AuditLog>,
    /// Metrics.
    pub metrics: Metrics,
    /// Inference threads.
    pub pool: InferencePool,
    /// Bounds.
    pub limits: Limits,
    rng: Mutex<ChaCha20Rng>,
    fixed_seed: Option<u64>,
    ready: AtomicBool,
    secure: OnceLock<Arc<SecureService>>,
}

impl ServerState {
    /// Opens the repository, loads and profiles every model (blocking), reads the task table,
    /// keys and audit log. The server starts ready.
    pub fn load(config: &ServerConfig) -> Result<Self, ServeError> {
        let repository = Repository::open(&config.repository, config.load.clone())?;
        let results = repository.load_all()?;
        if config.exit_on_error
            && let Some((_, Err(e))) = results.iter().find(|(_, r)| r.is_err())
        {
            return Err(ServeError::Server(format!(
                "a model failed to load (use --keep-going to serve the others): {e}"
            )));
        }
        let tasks = TaskTable::load(&config.repository, config.task_defaults)?;
        let keys = match config.api_keys.as_deref() {
            None => None,
            Some(path) => {
                let counters = crate::store::open(&config.store)
                    .map_err(|e| ServeError::Server(format!("the counter store: {e}")))?;
                let keys = KeyStore::load(path)?.with_counters(counters);
                tracing::info!(counters = %keys.counters(), "key budgets and rate limits");
                Some(keys)
            }
        };
        let audit = config.audit_log.as_deref().map(AuditLog::open).transpose()?;
        Ok(Self::from_parts(repository, tasks, keys, audit, config.limits.clone(), config.seed))
    }

    /// Assembles a state from loaded parts (tests build repositories directly).
    pub fn from_parts(
        repository: Repository,
        tasks: TaskTable,
        keys: Option<KeyStore>,
        audit: Option<AuditLog>,
        limits: Limits,
        seed: Option<u64>,
    ) -> Self {
        let seed_value = seed.unwrap_or_else(|| {
            rand::rngs::OsRng.try_next_u64().unwrap_or_else(|_| {
                // No OS entropy: fall back to the clock, which is still not visible to clients.
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            })
        });
        let pool =
            InferencePool::new(limits.inference_threads, limits.max_queue, limits.queue_timeout, limits.infer_timeout);
        Self {
            repository,
            tasks,
            keys,
            audit,
            metrics: Metrics::new(),
            pool,
            limits,
            rng: Mutex::new(ChaCha20Rng::seed_from_u64(seed_value)),
            fixed_seed: seed,
            ready: AtomicBool::new(true),
            secure: OnceLock::new(),
        }
    }

    /// The selection seed, when it was fixed by configuration (then it is public in the server
    /// metadata: fixing it is for reproducible experiments, and makes selections predictable).
    pub fn fixed_seed(&self) -> Option<u64> {
        self.fixed_seed
    }

    /// Draws a model with the server's RNG.
    pub fn select(&self, policy: &Policy, candidates: &[Candidate], spec: &Spec) -> Option<usize> {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        policy.select(candidates, spec, &mut *rng)
    }

    /// Whether the server accepts traffic (false while shutting down).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Marks the server ready or draining.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The secure-session service, once enabled.
    pub fn secure(&self) -> Option<&Arc<SecureService>> {
        self.secure.get()
    }

    /// Enables secure sessions (once; a second call is an error).
    pub fn enable_secure(&self, service: Arc<SecureService>) -> Result<(), ServeError> {
        self.secure.set(service).map_err(|_| ServeError::Server("secure sessions are already enabled".into()))
    }
}
