//! # moat-serve — the model owner's service
//!
//! A model repository laid out like Triton's, profiled at load (accuracy on a held-out set,
//! latency on this machine), served over the **Open Inference Protocol v2** (KServe / Triton
//! HTTP/REST, with Triton's binary-tensor, classification, model-repository and statistics
//! extensions) and moat's **model-less task** extension: a request names a task and a spec
//! (`min_accuracy`, `max_latency_ms`) and a selection policy picks a model of the zoo —
//! deterministically, uniformly, or with the PSML defenses (exponential mechanism,
//! permute-and-flip, noisy spec) that keep an attacker from steering every query to one victim.
//!
//! **Secure sessions** ([`secure`]): the same keys, budgets, tasks and selection policies admit
//! two-party inference sessions (`POST …/secure` → a one-use token), which then run moat-mpc's
//! protocol on a session port of their own, off the async runtime: the server never sees the
//! input, the client learns the label.
//!
//! Operations: API keys with per-key sample budgets and rate limits (429), a JSON-lines audit
//! log of every query, Prometheus `/metrics`, body-size limits, bounded queues and deadlines on
//! every wait, graceful shutdown, TLS on both ports ([`tls`]). Budgets, rate buckets and session
//! tokens live in this replica's memory or in a Redis shared by replicas ([`store`]; see
//! `deploy/README.md`).
//!
//! ```text
//! ServerConfig ──► ServerState::load ──► Repository (models, profiles)
//!                                    ├─► TaskTable  (policy per task)
//!                                    ├─► KeyStore, AuditLog, Metrics
//!                                    ├─► InferencePool (bounded blocking threads)
//!                                    └─► SecureService (tokens, prepared models, session slots)
//! http::app(state) : axum Router ──► server::serve (hyper, connection limits, drain)
//! secure::SecureListener : session port ──► one thread per session (ServerModel::serve_with)
//! ```
//!
//! Modules: [`policy`] (selection math, pure), [`repository`] and [`profile`], [`tasks`],
//! [`oip`] (wire format), [`keys`], [`audit`], [`metrics`], [`pool`], [`http`] (routes and
//! the extension point the secure-session admission is mounted through), [`secure`], [`server`].
//!
//! ```no_run
//! use moat_serve::{Server, ServerConfig};
//!
//! let config = ServerConfig::new("models".into(), "127.0.0.1:8000".parse()?);
//! let server = Server::bind(&config)?;
//! println!("listening on http://{}", server.local_addr());
//! server.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
pub mod error;
pub mod http;
pub mod idle;
pub mod keys;
pub mod metrics;
pub mod oip;
pub mod policy;
pub mod pool;
pub mod profile;
pub mod repository;
pub mod secure;
pub mod server;
pub mod state;
pub mod store;
pub mod tasks;
pub mod tls;

use std::sync::Arc;

pub use error::{AppError, ServeError};
pub use http::{app, app_with_extensions};
pub use policy::{Candidate, Policy, PolicyKind, Spec};
pub use repository::{LoadOptions, Repository};
pub use secure::SecureConfig;
pub use server::Server;
pub use state::{Limits, ServerConfig, ServerState};
pub use tasks::{TaskDefaults, TaskTable};
pub use tls::{ServerTls, TlsSettings};

/// The state handlers share.
pub type SharedState = Arc<ServerState>;
