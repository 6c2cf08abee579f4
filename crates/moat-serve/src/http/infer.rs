//! The inference endpoints: explicit models (`/v2/models/{m}[/versions/{v}]/infer`) and tasks
//! (`/v2/tasks/{t}/infer`, also `/v2/models/{t}/infer` when no model is named `t`).
//!
//! Order of checks, cheapest first: rate limit → body size → parse → shape/datatype → spec →
//! budget (charged per sample) → model selection → bounded inference. Budget charged for a
//! request the server then fails to serve (overload, timeout, internal error) is refunded.
//! Every request, refused or served, leaves one audit line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_nn::exec::softmax;
use moat_nn::tensor::argmax_f32;
use moat_nn::{FloatExecutor, NnError};
use serde_json::{Map, json};

use crate::SharedState;
use crate::audit::{AuditRecord, SessionAudit};
use crate::error::AppError;
use crate::keys::Caller;
use crate::oip::{
    HEADER_LENGTH, ModelIo, OutputKind, OutputSpec, OutputTensor, RawRequest, TensorValues, classification,
    encode_response, number_parameter,
};
use crate::policy::{Spec, feasible};
use crate::pool::PoolError;
use crate::repository::{LookupError, ModelVersion};
use crate::tasks::ResolvedTask;

/// What the URL names.
#[derive(Clone, Debug)]
pub(super) enum Target {
    Model { name: String, version: Option<String> },
    Task(String),
}

/// What the audit log learns about a request as it proceeds (the model that served it and
/// how many samples or queries it covered).
#[derive(Default)]
pub(super) struct Served {
    pub(super) model: Option<String>,
    pub(super) version: Option<String>,
    pub(super) batch: usize,
}

/// Runs `handle` for a request to `target` and writes its audit line (when an audit log is
/// configured), with `secure` describing a secure-session admission.
pub(super) async fn audited<F>(
    state: &SharedState,
    caller: &Caller,
    target: &Target,
    secure: impl FnOnce(&Served) -> Option<SessionAudit>,
    handle: F,
) -> Response
where
    F: AsyncFnOnce(&mut Served) -> Result<Response, AppError>,
{
    let start = Instant::now();
    let mut served = Served::default();
    let response = match handle(&mut served).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(audit) = &state.audit {
        let (route, name) = match target {
            Target::Model { name, .. } => ("model", name.clone()),
            Target::Task(name) => ("task", name.clone()),
        };
        let secure = secure(&served);
        audit.record(&AuditRecord {
            time_ms: AuditRecord::now_ms(),
            key: Some(caller.name.clone()),
            route,
            target: name,
            model: served.model,
            version: served.version,
            batch: served.batch,
            status: response.status().as_u16(),
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
            secure,
        });
    }
    response
}

/// `POST /v2/models/{model}[/versions/{version}]/infer` and `POST /v2/tasks/{task}/infer`.
pub(crate) async fn model_or_task_infer(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer(state, caller, target, headers, body).await
}

/// The target is read from the route's path parameters: `model` (with an optional `version`)
/// or `task`.
impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match (params.get("model"), params.get("version"), params.get("task")) {
            (Some(model), version, None) => Ok(Target::Model { name: model.clone(), version: version.cloned() }),
            (None, None, Some(task)) => Ok(Target::Task(task.clone())),
            _ => Err(AppError::NotFound("no model or task in the path".into()).into_response()),
        }
    }
}

async fn infer(state: SharedState, caller: Caller, target: Target, headers: HeaderMap, body: Body) -> Response {
    audited(
        &state,
        &caller,
        &target,
        |_| None,
        async |served: &mut Served| infer_inner(&state, &caller, &target, &headers, body, served).await,
    )
    .await
}

/// What a request's target resolved to: a model version, or a task whose selection policy
/// picks one ([`charge_and_select`]).
pub(super) enum Resolved {
    Model(Arc<ModelVersion>),
    Task(ResolvedTask),
}

/// The model a request or session goes to, and the budget it was charged.
pub(super) struct Selection<'p> {
    pub(super) model: Arc<ModelVersion>,
    /// The task, when the request named one.
    pub(super) task: Option<&'p ResolvedTask>,
    /// Whether the chosen model meets the spec (task requests only).
    pub(super) spec_met: Option<bool>,
    pub(super) charge: Charge<'p>,
}

/// Counts a task's selection of `model` and whether it met the spec (goodput).
pub(super) fn record_selection(state: &SharedState, task: &str, model: &str, met: bool) {
    let m = &state.metrics;
    m.task_requests.inc(&[task]);
    m.selections.inc(&[task, model]);
    if met {
        m.task_goodput.inc(&[task]);
    }
}

/// Queries charged to a key, to give back if the server then fails to serve them.
pub(super) struct Charge<'a> {
    state: &'a SharedState,
    caller: &'a Caller,
    amount: u64,
}

impl Charge<'_> {
    /// Gives the charged queries back to the key.
    pub(super) fn refund(&self) {
        if let Some(keys) = &self.state.keys {
            keys.refund(self.caller, self.amount);
        }
    }
}

/// Charges the caller's key `amount` queries (429 when its budget does not cover them), then
/// picks the model: the one named, or the task policy's choice for `spec` (refunded when no
/// member is ready).
pub(super) fn charge_and_select<'p>(
    state: &'p SharedState,
    caller: &'p Caller,
    resolved: &'p Resolved,
    spec: Option<Spec>,
    amount: u64,
) -> Result<Selection<'p>, AppError> {
    if let Some(keys) = &state.keys {
        keys.charge(caller, amount).map_err(|r| {
            state.metrics.rejections.inc(&["budget_exhausted"]);
            AppError::from(r)
        })?;
    }
    let charge = Charge { state, caller, amount };
    let (model, task, spec_met) = match (resolved, spec) {
        (Resolved::Model(m), _) => (Arc::clone(m), None, None),
        (Resolved::Task(t), Some(spec)) => {
            let candidates = t.candidates();
            let Some(i) = state.select(&t.settings.policy, &candidates, &spec) else {
                charge.refund();
                return Err(AppError::Unavailable {
                    message: format!("no model of task '{}' is ready", t.name),
                    retry_after: None,
                });
            };
            (Arc::clone(&t.members[i]), Some(t), Some(feasible(&candidates[i], &spec)))
        }
        (Resolved::Task(_), None) => {
            charge.refund();
            return Err(AppError::internal("task request without a spec"));
        }
    };
    Ok(Selection { model, task, spec_met, charge })
}

pub(super) fn resolve(state: &SharedState, target: &Target) -> Result<Resolved, AppError> {
    let task = |name: &str| {
        state.tasks.resolve(name, &state.repository).ok_or_else(|| AppError::NotFound(format!("unknown task '{name}'")))
    };
    match target {
        Target::Task(name) => Ok(Resolved::Task(task(name)?)),
        Target::Model { name, version } => match state.repository.get(name, version.as_deref()) {
            Ok(model) => Ok(Resolved::Model(model)),
            Err(LookupError::UnknownModel(_)) if version.is_none() => {
                match state.tasks.resolve(name, &state.repository) {
                    Some(t) => Ok(Resolved::Task(t)),
                    None => Err(AppError::NotFound(format!("unknown model '{name}'"))),
                }
            }
            Err(e) => Err(e.into()),
        },
    }
}

pub(super) async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, AppError> {
    let too_large = || AppError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(too_large());
                }
                source = s.source();
            }
            Err(AppError::BadRequest(format!("could not read the request body: {e}")))
        }
    }
}

/// What a batch computed: each declared output requested (`declared[k]`, one row per sample)
/// and, when an extra output is requested, the logits.
struct Computed {
    declared: Vec<Option<Vec<Vec<f32>>>>,
    logits: Vec<Vec<f32>>,
}

/// Runs the graphs the requested outputs need on `n` samples: the main graph once per sample
/// for its output and the logits, another declared output's graph only when it is requested.
fn run_batch(model: &ModelVersion, values: &[f32], n: usize, specs: &[OutputSpec]) -> Result<Computed, NnError> {
    let per = values.len() / n;
    let wants = |k: usize| specs.iter().any(|s| s.kind == OutputKind::Declared(k));
    let need_logits = specs.iter().any(|s| !matches!(s.kind, OutputKind::Declared(_)));
    let mut declared = vec![None; 1 + model.output_graphs.len()];
    let mut logits = Vec::new();
    if wants(0) || need_logits {
        let graph = &model.graph;
        let mut rows = Vec::new();
        for sample in values.chunks_exact(per) {
            let mut all = FloatExecutor::run_all(graph, sample)?;
            if need_logits {
                logits.push(all[graph.logits().0].clone());
            }
            if wants(0) {
                rows.push(std::mem::take(&mut all[graph.output().0]));
            }
        }
        if wants(0) {
            declared[0] = Some(rows);
        }
    }
    for (k, slot) in declared.iter_mut().enumerate().skip(1) {
        if let Some(graph) = model.output_graph(k).filter(|_| wants(k)) {
            *slot = Some(values.chunks_exact(per).map(|x| FloatExecutor::run(graph, x)).collect::<Result<_, _>>()?);
        }
    }
    Ok(Computed { declared, logits })
}

async fn infer_inner(
    state: &SharedState,
    caller: &Caller,
    target: &Target,
    headers: &HeaderMap,
    body: Body,
    served: &mut Served,
) -> Result<Response, AppError> {
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
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc.as_bytes() != b"identity"
    {
        return Err(AppError::UnsupportedMedia(format!(
            "Content-Encoding {} is not supported: send an uncompressed body",
            String::from_utf8_lossy(enc.as_bytes())
        )));
    }
    let bytes = read_body(body, headers, state.limits.max_body_bytes).await?;
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => {
            Some(v.to_str().map_err(|_| AppError::BadRequest("Inference-Header-Content-Length is not text".into()))?)
        }
    };
    let raw = RawRequest::parse(&bytes, header_length)?;

    let resolved = resolve(state, target)?;
    let (io, max_batch) = match &resolved {
        Resolved::Model(m) => (m.io(), m.max_batch_size),
        Resolved::Task(t) => {
            let io = t.signature().map_err(|message| AppError::Unavailable { message, retry_after: None })?;
            let max_batch = t.members.iter().map(|m| m.max_batch_size).min().unwrap_or(1);
            (io, max_batch)
        }
    };
    let (n, values) = raw.decode_input(&io, max_batch)?;
    served.batch = n;
    let outputs = raw.outputs(&io)?;
    let params = raw.request.parameters.as_ref();
    let spec = match &resolved {
        Resolved::Task(_) => Some(
            Spec::new(
                number_parameter(params, moat_wire::params::MIN_ACCURACY)?,
                number_parameter(params, moat_wire::params::MAX_LATENCY_MS)?,
            )
            .map_err(|e| AppError::BadRequest(e.to_string()))?,
        ),
        Resolved::Model(_) => None,
    };

    let Selection { model, task, spec_met, charge } = charge_and_select(state, caller, &resolved, spec, n as u64)?;
    let refund = || charge.refund();
    served.model = Some(model.name.clone());
    served.version = Some(model.version_string());
    let version = model.version_string();

    let job_model = model.clone();
    let job_outputs = outputs.clone();
    let result = state.pool.run(move || run_batch(&job_model, &values, n, &job_outputs)).await;
    let labels_model = [model.name.as_str(), version.as_str()];
    let (computed, times) = match result {
        Ok((Ok(computed), times)) => (computed, times),
        Ok((Err(e), _)) => {
            refund();
            model.stats.record_failure();
            state.metrics.inference_requests.inc(&[&model.name, &version, "failure"]);
            return Err(AppError::internal(format!("model {}/{version}: {e}", model.name)));
        }
        Err(e) => {
            refund();
            model.stats.record_failure();
            state.metrics.inference_requests.inc(&[&model.name, &version, "failure"]);
            return Err(match e {
                PoolError::Saturated { .. } | PoolError::QueueTimeout(_) => {
                    state.metrics.rejections.inc(&["saturated"]);
                    AppError::Unavailable {
                        message: e.to_string(),
                        retry_after: Some(std::time::Duration::from_secs(1)),
                    }
                }
                PoolError::Timeout(_) => {
                    state.metrics.rejections.inc(&["timeout"]);
                    AppError::Timeout(e.to_string())
                }
                PoolError::Failed(_) => AppError::internal(e),
            });
        }
    };

    model.stats.record_success(n, times.queue, times.compute);
    let m = &state.metrics;
    m.inference_requests.inc(&[&model.name, &version, "success"]);
    m.inference_samples.add(&labels_model, n as f64);
    m.inference_duration.observe_duration(&labels_model, times.compute);
    m.queue_duration.observe_duration(&labels_model, times.queue);

    // Name the serving model only when allowed; class names come from the task, not the model,
    // so they cannot tell the members apart either.
    let (model_name, model_version, parameters, class_names) = match task {
        None => {
            let mut p = Map::new();
            p.insert(moat_wire::params::MODEL_COMMITMENT.into(), json!(model.commitment));
            (model.name.clone(), Some(version.clone()), Some(p), model.class_names().map(<[String]>::to_vec))
        }
        Some(t) => {
            let met = spec_met.unwrap_or(false);
            record_selection(state, &t.name, &model.name, met);
            let mut p = Map::new();
            p.insert(moat_wire::params::TASK.into(), json!(t.name));
            let names = t.members.iter().find_map(|m| m.class_names()).map(<[String]>::to_vec);
            if t.settings.disclose_model {
                p.insert(moat_wire::params::SPEC_MET.into(), json!(met));
                p.insert(moat_wire::params::MODEL_COMMITMENT.into(), json!(model.commitment));
                (model.name.clone(), Some(version.clone()), Some(p), names)
            } else {
                (t.name.clone(), None, Some(p), names)
            }
        }
    };
    let tensors = build_outputs(&io, &outputs, computed, n, class_names.as_deref())?;
    let encoded = encode_response(
        &model_name,
        model_version.as_deref(),
        raw.request.id.as_deref(),
        parameters.as_ref(),
        &tensors,
    )?;
    let mut response = (StatusCode::OK, encoded.body).into_response();
    let h = response.headers_mut();
    match encoded.header_length {
        Some(len) => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(HEADER_LENGTH, HeaderValue::from(len));
        }
        None => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

fn build_outputs(
    io: &ModelIo,
    specs: &[OutputSpec],
    computed: Computed,
    n: usize,
    labels: Option<&[String]>,
) -> Result<Vec<OutputTensor>, AppError> {
    let Computed { mut declared, logits } = computed;
    let mut probabilities: Option<Vec<Vec<f32>>> = None;
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = io.name_of(spec.kind).to_string();
        let rows: &[Vec<f32>] = match spec.kind {
            OutputKind::Declared(k) => declared
                .get_mut(k)
                .and_then(Option::as_mut)
                .map(|r| r.as_slice())
                .ok_or_else(|| AppError::internal(format!("output '{name}' was not computed")))?,
            OutputKind::Logits | OutputKind::Label => &logits,
            OutputKind::Probabilities => {
                probabilities.get_or_insert_with(|| logits.iter().map(|l| softmax(l)).collect())
            }
        };
        let tensor = match (spec.kind, spec.classification) {
            (OutputKind::Label, _) => OutputTensor {
                name,
                datatype: "INT64",
                shape: vec![n],
                data: TensorValues::I64(rows.iter().map(|r| argmax_f32(r).map_or(-1, |i| i as i64)).collect()),
                binary: spec.binary,
            },
            (_, Some(k)) => OutputTensor {
                name,
                datatype: "BYTES",
                shape: vec![n, k],
                data: TensorValues::Bytes(classification(rows, k, labels)),
                binary: spec.binary,
            },
            (kind, None) => OutputTensor {
                name,
                datatype: "FP32",
                shape: std::iter::once(n).chain(io.sample_shape_of(kind)).collect(),
                data: TensorValues::F32(rows.iter().flatten().copied().collect()),
                binary: spec.binary,
            },
        };
        out.push(tensor);
    }
    Ok(out)
}
