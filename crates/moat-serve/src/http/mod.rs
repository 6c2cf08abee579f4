//! The HTTP API: the Open Inference Protocol v2 routes, moat's task extension, operator routes,
//! and the middleware around them.
//!
//! | route | access | what |
//! |---|---|---|
//! | `GET /v2/health/live`, `GET /v2/health/ready` | open | probes |
//! | `GET /v2` | key | server metadata |
//! | `GET /v2/models/{m}[/versions/{v}]` | key | model metadata (a task's, when `m` names a task and no model) |
//! | `GET /v2/models/{m}[/versions/{v}]/ready` | key | 200 ready, 400 not ready, 404 unknown |
//! | `POST /v2/models/{m}[/versions/{v}]/infer` | key | inference (a task's, when `m` names a task and no model) |
//! | `GET /v2/tasks`, `GET /v2/tasks/{t}` | key | task list and metadata |
//! | `POST /v2/tasks/{t}/infer` | key | model-less inference with `parameters.min_accuracy` / `max_latency_ms` |
//! | `POST /v2/models/{m}[/versions/{v}]/secure`, `POST /v2/tasks/{t}/secure` | key | secure-session admission (mounted with [`secure_routes`] when sessions are enabled; see [`crate::secure`]) |
//! | `GET /v2/models/stats`, `GET /v2/models/{m}[/versions/{v}]/stats`, `GET /v2/tasks/{t}/stats` | admin | statistics, profiles, goodput |
//! | `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load` / `unload` | admin | model repository |
//! | `GET /metrics` | admin | Prometheus |
//!
//! "key" routes need a configured API key when keys are configured; "admin" routes an admin key
//! (see [`crate::keys`]). Without keys everything is open.

mod admin;
mod infer;
mod metadata;
mod middleware;
mod secure;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::SharedState;

pub use metadata::EXTENSIONS;

/// The router of the whole API over `state` (without the secure-session routes).
pub fn app(state: SharedState) -> Router {
    app_with_extensions(state, Router::new())
}

/// The secure-session admission routes (`POST …/secure`), for [`app_with_extensions`].
pub fn secure_routes() -> Router<SharedState> {
    secure::routes()
}

/// The router with extra key-protected routes merged in.
///
/// **Extension point.** Routes passed here sit behind the same API-key check as inference (the
/// [`crate::keys::Caller`] is in the request extensions), and the same deadline, metrics and
/// JSON-error layers; they should charge the key's budget with
/// [`crate::keys::KeyStore::charge`] and write the audit log. The secure-session admission
/// routes ([`secure_routes`]) are mounted this way by [`crate::server::serve`] when the state has
/// a [`crate::secure::SecureService`].
pub fn app_with_extensions(state: SharedState, extensions: Router<SharedState>) -> Router {
    let public =
        Router::new().route("/v2/health/live", get(metadata::live)).route("/v2/health/ready", get(metadata::ready));
    let user = Router::new()
        .route("/v2", get(metadata::server_metadata))
        .route("/v2/models/{model}", get(metadata::model_metadata))
        .route("/v2/models/{model}/ready", get(metadata::model_ready))
        .route("/v2/models/{model}/infer", post(infer::model_or_task_infer))
        .route("/v2/models/{model}/versions/{version}", get(metadata::model_version_metadata))
        .route("/v2/models/{model}/versions/{version}/ready", get(metadata::model_version_ready))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer::model_or_task_infer))
        .route("/v2/tasks", get(metadata::list_tasks))
        .route("/v2/tasks/{task}", get(metadata::task_metadata))
        .route("/v2/tasks/{task}/infer", post(infer::model_or_task_infer))
        .merge(extensions)
        .route_layer(from_fn_with_state(state.clone(), middleware::require_key));
    let admin = Router::new()
        .route("/v2/models/stats", get(admin::all_stats))
        .route("/v2/models/{model}/stats", get(admin::model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(admin::model_version_stats))
        .route("/v2/models/{model}/commitment/opening", get(admin::model_commitment_opening))
        .route("/v2/models/{model}/versions/{version}/commitment/opening", get(admin::model_version_commitment_opening))
        .route("/v2/tasks/{task}/stats", get(admin::task_stats))
        .route("/v2/repository/index", post(admin::repository_index))
        .route("/v2/repository/models/{model}/load", post(admin::repository_load))
        .route("/v2/repository/models/{model}/unload", post(admin::repository_unload))
        .route("/metrics", get(admin::metrics))
        .route_layer(from_fn_with_state(state.clone(), middleware::require_admin));
    let limit = state.limits.max_body_bytes;
    Router::new()
        .merge(public)
        .merge(user)
        .merge(admin)
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}
