//! Operator endpoints: statistics (Triton's statistics extension plus profiles and goodput),
//! the model-repository extension (index, load, unload), Prometheus `/metrics` and the opening
//! of a model version's commitment to an auditor.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use moat_wire::CommitmentOpening;
use serde_json::{Value, json};

use crate::SharedState;
use crate::error::{AppError, ServeError};
use crate::metrics::GaugeSample;
use crate::oip::bool_parameter;
use crate::repository::ModelVersion;

fn version_stats(m: &ModelVersion) -> Value {
    let s = m.stats.snapshot();
    json!({
        "name": m.name,
        "version": m.version_string(),
        "last_inference": s.last_inference,
        "inference_count": s.inference_count,
        "execution_count": s.success_count,
        "inference_stats": {
            "success": { "count": s.success_count, "ns": s.compute_ns + s.queue_ns },
            "fail": { "count": s.failure_count, "ns": 0 },
            "queue": { "count": s.success_count, "ns": s.queue_ns },
            "compute_infer": { "count": s.success_count, "ns": s.compute_ns },
        },
        "profile": m.profile,
    })
}

/// `GET /v2/models/stats`: every ready version.
pub(crate) async fn all_stats(State(state): State<SharedState>) -> Json<Value> {
    let stats: Vec<Value> = state.repository.ready_versions().iter().map(|m| version_stats(m)).collect();
    Json(json!({ "model_stats": stats }))
}

fn stats_of(state: &SharedState, name: &str, version: Option<&str>) -> Result<Json<Value>, AppError> {
    let versions: Vec<Arc<ModelVersion>> = match version {
        Some(_) => vec![state.repository.get(name, version)?],
        None => state
            .repository
            .versions(name)?
            .iter()
            .map(|v| state.repository.get(name, Some(&v.to_string())))
            .collect::<Result<_, _>>()?,
    };
    Ok(Json(json!({ "model_stats": versions.iter().map(|m| version_stats(m)).collect::<Vec<_>>() })))
}

/// `GET /v2/models/{model}/stats`.
pub(crate) async fn model_stats(
    State(state): State<SharedState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, AppError> {
    stats_of(&state, &model, None)
}

/// `GET /v2/models/{model}/versions/{version}/stats`.
pub(crate) async fn model_version_stats(
    State(state): State<SharedState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    stats_of(&state, &model, Some(&version))
}

fn opening_of(state: &SharedState, name: &str, version: Option<&str>) -> Result<Json<CommitmentOpening>, AppError> {
    let m = state.repository.get(name, version)?;
    Ok(Json(CommitmentOpening {
        model_name: m.name.clone(),
        model_version: m.version_string(),
        commitment: m.commitment.clone(),
        nonce: moat_wire::commitment::to_hex(&m.commitment_nonce),
    }))
}

/// `GET /v2/models/{model}/commitment/opening`: the opening of the default version's
/// commitment ([`CommitmentOpening`]: the nonce), for an auditor who holds the model file to
/// recompute the commitment the server published ([`CommitmentOpening::verify`]). Admin only:
/// before the opening the nonce hides which of a few candidate files is being served.
pub(crate) async fn model_commitment_opening(
    State(state): State<SharedState>,
    Path(model): Path<String>,
) -> Result<Json<CommitmentOpening>, AppError> {
    opening_of(&state, &model, None)
}

/// `GET /v2/models/{model}/versions/{version}/commitment/opening`: as
/// [`model_commitment_opening`], for one version.
pub(crate) async fn model_version_commitment_opening(
    State(state): State<SharedState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<CommitmentOpening>, AppError> {
    opening_of(&state, &model, Some(&version))
}

/// `GET /v2/tasks/{task}/stats`: requests, goodput and the selection histogram.
pub(crate) async fn task_stats(
    State(state): State<SharedState>,
    Path(task): Path<String>,
) -> Result<Json<Value>, AppError> {
    let t = state
        .tasks
        .resolve(&task, &state.repository)
        .ok_or_else(|| AppError::NotFound(format!("unknown task '{task}'")))?;
    let m = &state.metrics;
    let requests = m.task_requests.get(&[&task]);
    let goodput = m.task_goodput.get(&[&task]);
    let selections: serde_json::Map<String, Value> = t
        .members
        .iter()
        .map(|member| (member.name.clone(), json!(m.selections.get(&[&task, &member.name]) as u64)))
        .collect();
    let candidates: Vec<Value> =
        t.members.iter().map(|member| json!({ "name": member.name, "profile": member.profile })).collect();
    Ok(Json(json!({
        "name": task,
        "policy": t.settings.policy.kind().as_str(),
        "epsilon": t.settings.policy.epsilon(),
        "disclose_model": t.settings.disclose_model,
        "requests": requests as u64,
        "goodput": goodput as u64,
        "goodput_ratio": if requests > 0.0 { goodput / requests } else { 0.0 },
        "selections": selections,
        "candidates": candidates,
        "key_usage": state.keys.as_ref().map(|k| k.usage()),
    })))
}

fn body_json(body: &Bytes) -> Result<Option<Value>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| AppError::BadRequest(format!("malformed JSON body: {e}")))
}

/// `POST /v2/repository/index` with optional `{"ready": bool}`.
pub(crate) async fn repository_index(State(state): State<SharedState>, body: Bytes) -> Result<Json<Value>, AppError> {
    let request = body_json(&body)?;
    let ready_only = bool_parameter(request.as_ref().and_then(Value::as_object), "ready")?.unwrap_or(false);
    let index = state.repository.index(ready_only).map_err(AppError::internal)?;
    Ok(Json(json!(index)))
}

fn repository_error(e: ServeError) -> AppError {
    match e {
        ServeError::UnknownModel(_) => AppError::NotFound(e.to_string()),
        other => AppError::BadRequest(format!("failed to load: {other}")),
    }
}

/// `POST /v2/repository/models/{model}/load`: (re)loads and profiles every version.
pub(crate) async fn repository_load(
    State(state): State<SharedState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let request = body_json(&body)?;
    if request.as_ref().and_then(|r| r.get("parameters")).and_then(|p| p.get("config")).is_some() {
        return Err(AppError::BadRequest(
            "the 'config' load parameter is not supported: edit <repo>/<model>/config.json instead".into(),
        ));
    }
    let worker = state.clone();
    let name = model.clone();
    let job = tokio::task::spawn_blocking(move || worker.repository.load_model(&name));
    match tokio::time::timeout(state.limits.load_timeout, job).await {
        Err(_) => {
            Err(AppError::Timeout(format!("loading '{model}' did not finish within {:?}", state.limits.load_timeout)))
        }
        Ok(Err(join)) => Err(AppError::internal(join)),
        Ok(Ok(result)) => result.map(|_| Json(json!({}))).map_err(repository_error),
    }
}

/// `POST /v2/repository/models/{model}/unload`.
pub(crate) async fn repository_unload(
    State(state): State<SharedState>,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    body_json(&body)?;
    state.repository.unload_model(&model).map(|()| Json(json!({}))).map_err(repository_error)
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<SharedState>) -> Response {
    let ready_versions = state.repository.ready_versions().len();
    let goodput: Vec<GaugeSample> = state
        .tasks
        .names(&state.repository)
        .into_iter()
        .map(|task| {
            let requests = state.metrics.task_requests.get(&[&task]);
            let good = state.metrics.task_goodput.get(&[&task]);
            GaugeSample { value: if requests > 0.0 { good / requests } else { 0.0 }, labels: vec![task] }
        })
        .collect();
    let gauges = [
        (
            "moat_models_ready",
            "Model versions ready to serve.",
            &[][..],
            vec![GaugeSample { labels: vec![], value: ready_versions as f64 }],
        ),
        (
            "moat_server_ready",
            "1 while the server accepts traffic, 0 while draining.",
            &[][..],
            vec![GaugeSample { labels: vec![], value: if state.is_ready() { 1.0 } else { 0.0 } }],
        ),
        (
            "moat_task_goodput_ratio",
            "Fraction of a task's requests served by a model meeting the spec.",
            &["task"][..],
            goodput,
        ),
    ];
    let mut response = state.metrics.render(&gauges).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
