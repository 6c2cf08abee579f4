//! Secure-session admission: `POST /v2/models/{m}[/versions/{v}]/secure` and
//! `POST /v2/tasks/{t}/secure` (also `/v2/models/{t}/secure` when no model is named `t`).
//!
//! Body (optional; every field optional, unknown fields are an error):
//!
//! ```json
//! {"id": "s-1", "queries": 5, "output": "label", "parameters": {"min_accuracy": 97, "max_latency_ms": 5}}
//! ```
//!
//! `output` (default `label`) is what each query may reveal; one the backends do not compute
//! yet (`top-K`, `probabilities`) is a 400, one beyond [`crate::secure::SecureConfig::output`]
//! a 403 — both before anything is charged.
//!
//! Order of checks, as for inference: rate limit → body → output → target → spec → budget (`queries`
//! charged up front, 429 when the key's budget does not cover them) → model selection → token.
//! A token that cannot be issued gives the queries back. Answer:
//!
//! ```json
//! {"id": "s-1", "session": "<32 hex digits>", "address": "10.0.0.7:8001", "queries": 5,
//!  "expires_in_ms": 30000, "protocol": "moat-2pc/3", "handshake": "moat-session/1",
//!  "output": "label", "model_name": "lenet5", "model_version": "1"}
//! ```
//!
//! `model_name`/`model_version` (and `parameters.model_commitment`, the hash of the weights with a
//! server nonce) appear for model routes, and for task routes only when the task
//! discloses its model; task answers carry `parameters.task` (and `parameters.spec_met` when
//! disclosed). See [`crate::secure`] for the session itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};

use super::infer::{
    Resolved, Selection, Served, Target, audited, charge_and_select, read_body, record_selection, resolve,
};
use crate::SharedState;
use crate::audit::SessionAudit;
use crate::error::AppError;
use crate::keys::Caller;
use crate::oip::number_parameter;
use crate::policy::Spec;
use crate::secure::{Grant, HANDSHAKE, PROTOCOL, Preparation, SecureService, TokenError, listener};
use moat_mpc::engine::Reveal;
use moat_wire::{Admission, AdmissionDetails, AdmissionRequest, SessionToken, params};

/// The admission routes, to mount with [`super::app_with_extensions`].
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/v2/models/{model}/secure", post(model_or_task_secure))
        .route("/v2/models/{model}/versions/{version}/secure", post(model_or_task_secure))
        .route("/v2/tasks/{task}/secure", post(model_or_task_secure))
}

/// `POST /v2/models/{model}[/versions/{version}]/secure` and `POST /v2/tasks/{task}/secure`.
pub(crate) async fn model_or_task_secure(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    admit(state, caller, target, headers, body).await
}

async fn admit(state: SharedState, caller: Caller, target: Target, headers: HeaderMap, body: Body) -> Response {
    let secure = |served: &Served| {
        Some(SessionAudit {
            event: "admission",
            granted: served.batch as u64,
            answered: None,
            outcome: None,
            bytes_in: 0,
            bytes_out: 0,
        })
    };
    audited(&state, &caller, &target, secure, async |served: &mut Served| {
        admit_inner(&state, &caller, &target, &headers, body, served).await
    })
    .await
}

fn service(state: &SharedState) -> Result<Arc<SecureService>, AppError> {
    state.secure().cloned().ok_or_else(|| AppError::NotFound("secure sessions are not enabled on this server".into()))
}

async fn admit_inner(
    state: &SharedState,
    caller: &Caller,
    target: &Target,
    headers: &HeaderMap,
    body: Body,
    served: &mut Served,
) -> Result<Response, AppError> {
    let service = service(state)?;
    if let Some(keys) = &state.keys {
        keys.check_rate(caller, Instant::now()).map_err(|r| {
            state.metrics.rejections.inc(&["rate_limited"]);
            AppError::from(r)
        })?;
        // A spent key is refused before its body is read.
        keys.check_budget_left(caller).map_err(|r| {
            state.metrics.rejections.inc(&["budget_exhausted"]);
            AppError::from(r)
        })?;
    }
    let bytes = read_body(body, headers, state.limits.max_body_bytes).await?;
    let request: AdmissionRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        AdmissionRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(format!("session request: {e}")))?
    };
    let max = service.config().max_queries;
    let queries = request.queries.unwrap_or(1);
    if queries == 0 || queries > max {
        return Err(AppError::BadRequest(format!("'queries' must be between 1 and {max}, got {queries}")));
    }
    served.batch = queries as usize;
    // The output is checked before anything is charged: what no backend computes, then what
    // the server's policy does not allow.
    let output = match &request.output {
        None => Reveal::Label,
        Some(text) => text.parse::<Reveal>().map_err(|e| AppError::BadRequest(format!("'output': {e}")))?,
    };
    output.check_supported().map_err(|e| AppError::BadRequest(e.to_string()))?;
    output.check_allowed(service.config().output).map_err(|e| {
        state.metrics.rejections.inc(&["output_refused"]);
        AppError::Forbidden(e.to_string())
    })?;

    let resolved = resolve(state, target)?;
    let spec_params = request.parameters.as_ref();
    let spec = match &resolved {
        Resolved::Task(t) => {
            t.signature().map_err(|message| AppError::Unavailable { message, retry_after: None })?;
            Some(
                Spec::new(
                    number_parameter(spec_params, params::MIN_ACCURACY)?,
                    number_parameter(spec_params, params::MAX_LATENCY_MS)?,
                )
                .map_err(|e| AppError::BadRequest(e.to_string()))?,
            )
        }
        Resolved::Model(_) => None,
    };

    let Selection { model, task, spec_met, charge } = charge_and_select(state, caller, &resolved, spec, queries)?;
    let refund = || charge.refund();
    served.model = Some(model.name.clone());
    served.version = Some(model.version_string());
    let preparation = Preparation::of(task, &model);
    if let Some(reason) = service.models().failure(&preparation) {
        refund();
        // The reason names the model: only operators see it.
        tracing::warn!(%reason, "secure session refused");
        let message = match (task, &preparation) {
            (Some(t), Preparation::Hidden { .. }) if preparation.check().is_err() => format!(
                "task '{}' does not disclose its model, and its models cannot share one architecture: a secure \
                 session would show which one serves (the operator can disclose the model, or serve models of \
                 one architecture)",
                t.name
            ),
            (Some(t), _) => format!("task '{}' cannot be served securely", t.name),
            (None, _) => format!("model '{}' cannot be served securely (see the server log)", model.name),
        };
        return Err(AppError::Unavailable { message, retry_after: None });
    }

    let now = Instant::now();
    listener::sweep_expired(state, &service);
    let grant = Grant {
        caller: caller.clone(),
        model: model.clone(),
        queries,
        // A model name that resolved to a task is a task session: its member stays hidden.
        route: if task.is_some() { "task" } else { "model" },
        target: match (task, target) {
            (Some(t), _) => t.name.clone(),
            (None, Target::Model { name, .. } | Target::Task(name)) => name.clone(),
        },
        output,
    };
    let shared_grant = grant.clone();
    let token = match service.tokens().issue(grant, now) {
        Ok(t) => t,
        Err((e, _)) => {
            refund();
            return Err(match e {
                TokenError::Full { .. } => {
                    state.metrics.rejections.inc(&["saturated"]);
                    AppError::Unavailable { message: e.to_string(), retry_after: Some(Duration::from_secs(1)) }
                }
                other => AppError::internal(other),
            });
        }
    };
    // With replicas sharing a store, any replica's session port may redeem the token.
    if let Err(e) = crate::store::tokens::share(state, token.as_str(), &shared_grant, service.tokens().ttl()) {
        let _ = service.tokens().take(token.as_str(), now);
        refund();
        return Err(AppError::Unavailable { message: e.to_string(), retry_after: Some(Duration::from_secs(1)) });
    }
    // Prepare the model while the client connects.
    service.models().warm(&preparation);

    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let disclosed = match task {
        None => true,
        Some(t) => {
            record_selection(state, &t.name, &model.name, spec_met.unwrap_or(false));
            t.settings.disclose_model
        }
    };
    let answer = Admission {
        id: request.id,
        session: SessionToken::new(token.as_str()),
        address: service.advertised_address(host),
        queries,
        expires_in_ms: u64::try_from(service.tokens().ttl().as_millis()).unwrap_or(u64::MAX),
        protocol: PROTOCOL.into(),
        handshake: Some(HANDSHAKE.into()),
        output: Some(output.to_string()),
        model_name: disclosed.then(|| model.name.clone()),
        model_version: disclosed.then(|| model.version_string()),
        parameters: AdmissionDetails {
            task: task.map(|t| t.name.clone()),
            spec_met: task.filter(|_| disclosed).map(|_| spec_met.unwrap_or(false)),
            model_commitment: disclosed.then(|| model.commitment.clone()),
        },
    };
    Ok((StatusCode::OK, Json(answer)).into_response())
}
