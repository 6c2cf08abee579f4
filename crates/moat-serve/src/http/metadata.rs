//! Health, server, model and task metadata endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::SharedState;
use crate::error::AppError;
use crate::oip::{extra_metadata, io_metadata};
use crate::repository::{LookupError, ModelVersion};
use crate::tasks::ResolvedTask;

/// Extensions reported in the server metadata (plus `moat_secure_sessions` when secure sessions
/// are enabled).
pub const EXTENSIONS: [&str; 5] =
    ["binary_tensor_data", "classification", "model_repository", "statistics", "moat_tasks"];

impl From<LookupError> for AppError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::UnknownModel(_) | LookupError::UnknownVersion { .. } => AppError::NotFound(e.to_string()),
            LookupError::NotReady { .. } => AppError::BadRequest(e.to_string()),
        }
    }
}

/// `GET /v2/health/live`.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: 200 while serving, 503 while starting or draining.
pub(crate) async fn ready(State(state): State<SharedState>) -> Response {
    if state.is_ready() {
        Json(json!({ "ready": true })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "error": "server is not ready" })))
            .into_response()
    }
}

/// `GET /v2`.
pub(crate) async fn server_metadata(State(state): State<SharedState>) -> Json<Value> {
    let seed = match state.fixed_seed() {
        Some(s) => json!(s),
        None => json!("os-entropy (not disclosed)"),
    };
    let mut extensions: Vec<&str> = EXTENSIONS.to_vec();
    let mut parameters = json!({
        "selection_seed": seed,
        "tasks": state.tasks.names(&state.repository),
    });
    if let Some(secure) = state.secure() {
        extensions.push(crate::secure::EXTENSION);
        let c = secure.config();
        parameters["secure_sessions"] = json!({
            "protocol": crate::secure::PROTOCOL,
            "handshake": crate::secure::HANDSHAKE,
            "max_queries": c.max_queries,
            "token_ttl_ms": u64::try_from(c.token_ttl.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Json(json!({
        "name": "moat",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": extensions,
        "parameters": parameters,
    }))
}

/// The metadata of a loaded model version.
pub(crate) fn model_json(model: &ModelVersion, versions: &[u64]) -> Value {
    let io = model.io();
    let (inputs, outputs) = io_metadata(&io);
    let input_spec = model.card.as_ref().map(|c| {
        json!({
            "dataset": c.input.dataset,
            "class_names": c.input.class_names,
            "raw_scale": c.input.raw_scale,
            "normalization": c.input.normalization,
        })
    });
    json!({
        "name": model.name,
        "versions": versions.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        "platform": "moat_onnx",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "version": model.version_string(),
            "task": model.task(),
            "max_batch_size": model.max_batch_size,
            "profile": model.profile,
            "input_spec": input_spec,
            "extra_outputs": extra_metadata(&io),
        }
    })
}

/// The metadata of a task, in the model-metadata format.
pub(crate) fn task_json(task: &ResolvedTask) -> Result<Value, AppError> {
    let io = task.signature().map_err(|message| AppError::Unavailable { message, retry_after: None })?;
    let (inputs, outputs) = io_metadata(&io);
    let policy = &task.settings.policy;
    let mut parameters = json!({
        "task": task.name,
        "policy": policy.kind().as_str(),
        "epsilon": policy.epsilon(),
        "disclose_model": task.settings.disclose_model,
        "ready_models": task.members.len(),
        // The most samples one request may carry: what every member accepts.
        "max_batch_size": task.members.iter().map(|m| m.max_batch_size).min().unwrap_or(1),
        "spec_parameters": moat_wire::params::SPEC,
        "extra_outputs": extra_metadata(&io),
    });
    if task.settings.disclose_model {
        parameters["models"] = json!(task.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>());
    }
    parameters["pareto_front"] = pareto_front(task);
    Ok(
        json!({ "name": task.name, "platform": "moat_task", "inputs": inputs, "outputs": outputs, "parameters": parameters }),
    )
}

/// The (accuracy, latency) points a spec can choose between: the members no other member
/// beats on both, fastest first, named only when the task discloses its model.
fn pareto_front(task: &ResolvedTask) -> Value {
    let profiled: Vec<(&str, crate::policy::Candidate)> =
        task.members.iter().filter_map(|m| Some((m.name.as_str(), m.candidate()?))).collect();
    let candidates: Vec<crate::policy::Candidate> = profiled.iter().map(|(_, c)| *c).collect();
    let mut front: Vec<usize> = crate::policy::pareto_front(&candidates);
    front.sort_by(|&a, &b| candidates[a].latency_ms.total_cmp(&candidates[b].latency_ms));
    Value::Array(
        front
            .into_iter()
            .map(|i| {
                let (name, c) = &profiled[i];
                let mut point = json!({ "accuracy": c.accuracy, "latency_ms": c.latency_ms });
                if task.settings.disclose_model {
                    point["model"] = json!(name);
                }
                point
            })
            .collect(),
    )
}

fn resolve_task(state: &SharedState, name: &str) -> Result<ResolvedTask, AppError> {
    state.tasks.resolve(name, &state.repository).ok_or_else(|| AppError::NotFound(format!("unknown task '{name}'")))
}

fn metadata(state: &SharedState, name: &str, version: Option<&str>) -> Result<Value, AppError> {
    match state.repository.get(name, version) {
        Ok(model) => Ok(model_json(&model, &state.repository.versions(name)?)),
        // A task is addressable as a model when no model has its name.
        Err(LookupError::UnknownModel(_)) if version.is_none() => match state.tasks.resolve(name, &state.repository) {
            Some(task) => task_json(&task),
            None => Err(AppError::NotFound(format!("unknown model '{name}'"))),
        },
        Err(e) => Err(e.into()),
    }
}

/// `GET /v2/models/{model}`.
pub(crate) async fn model_metadata(
    State(state): State<SharedState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, AppError> {
    metadata(&state, &model, None).map(Json)
}

/// `GET /v2/models/{model}/versions/{version}`.
pub(crate) async fn model_version_metadata(
    State(state): State<SharedState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    metadata(&state, &model, Some(&version)).map(Json)
}

fn readiness(state: &SharedState, name: &str, version: Option<&str>) -> Result<Response, AppError> {
    match state.repository.get(name, version) {
        Ok(_) => Ok(Json(json!({ "name": name, "ready": true })).into_response()),
        Err(LookupError::UnknownModel(_)) if version.is_none() => {
            let task = resolve_task(state, name).map_err(|_| AppError::NotFound(format!("unknown model '{name}'")))?;
            if task.signature().is_ok() {
                Ok(Json(json!({ "name": name, "ready": true })).into_response())
            } else {
                let error = format!("no model of task '{name}' is ready");
                Ok((StatusCode::BAD_REQUEST, Json(json!({ "name": name, "ready": false, "error": error })))
                    .into_response())
            }
        }
        Err(e @ LookupError::NotReady { .. }) => {
            Ok((StatusCode::BAD_REQUEST, Json(json!({ "name": name, "ready": false, "error": e.to_string() })))
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v2/models/{model}/ready`: 200 ready, 400 not ready, 404 unknown.
pub(crate) async fn model_ready(
    State(state): State<SharedState>,
    Path(model): Path<String>,
) -> Result<Response, AppError> {
    readiness(&state, &model, None)
}

/// `GET /v2/models/{model}/versions/{version}/ready`.
pub(crate) async fn model_version_ready(
    State(state): State<SharedState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, AppError> {
    readiness(&state, &model, Some(&version))
}

/// `GET /v2/tasks`: every task with its policy and readiness.
pub(crate) async fn list_tasks(State(state): State<SharedState>) -> Json<Value> {
    let tasks: Vec<Value> = state
        .tasks
        .names(&state.repository)
        .iter()
        .filter_map(|name| state.tasks.resolve(name, &state.repository))
        .map(|t| json!({ "name": t.name, "policy": t.settings.policy.kind().as_str(), "ready": t.signature().is_ok() }))
        .collect();
    Json(json!({ "tasks": tasks }))
}

/// `GET /v2/tasks/{task}`.
pub(crate) async fn task_metadata(
    State(state): State<SharedState>,
    Path(task): Path<String>,
) -> Result<Json<Value>, AppError> {
    task_json(&resolve_task(&state, &task)?).map(Json)
}
