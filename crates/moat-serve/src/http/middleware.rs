//! Request middleware: the request deadline, metrics and logs, JSON error bodies, and API key
//! checks.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::SharedState;
use crate::audit::AuditRecord;
use crate::error::{AppError, error_body};
use crate::keys::{Caller, KeyRefusal};

/// Outermost layer: bounds the request by its deadline, turns every error response into the
/// protocol's `{"error": …}`, and records the request in metrics and the debug log.
pub(crate) async fn observe(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let start = Instant::now();
    let deadline = state.limits.request_timeout;
    let response = match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.rejections.inc(&["timeout"]);
            AppError::Timeout(format!("request did not complete within {deadline:?}")).into_response()
        }
    };
    let response = json_errors(response).await;
    let elapsed = start.elapsed();
    let code = response.status().as_u16().to_string();
    state.metrics.http_requests.inc(&[&route, method.as_str(), &code]);
    state.metrics.http_duration.observe_duration(&[&route], elapsed);
    tracing::debug!(%method, %route, status = %code, ms = elapsed.as_secs_f64() * 1e3, "request");
    response
}

/// Error responses produced outside the handlers (unknown routes, wrong methods, path
/// extraction failures) come as plain text: wrap their text as `{"error": …}`, keeping the status
/// and headers (`Allow`, `Retry-After`).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let body = serde_json::to_vec(&error_body(&text)).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The key sent with a request: `Authorization: Bearer KEY` or `X-API-Key: KEY`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(key) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(key.trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

fn authenticate(state: &SharedState, headers: &HeaderMap, admin: bool) -> Result<Caller, KeyRefusal> {
    let Some(keys) = &state.keys else { return Ok(Caller::anonymous()) };
    let caller = keys.authenticate(presented_key(headers))?;
    if admin && !caller.admin {
        return Err(KeyRefusal::NotAdmin);
    }
    Ok(caller)
}

async fn check(state: SharedState, mut request: Request, next: Next, admin: bool) -> Response {
    match authenticate(&state, request.headers(), admin) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => {
            let reason = if matches!(refusal, KeyRefusal::NotAdmin) { "forbidden" } else { "unauthorized" };
            state.metrics.rejections.inc(&[reason]);
            let error = AppError::from(refusal);
            // Refused queries are queries too: audit them (without a key name).
            let path = request.uri().path();
            if (path.ends_with("/infer") || path.ends_with("/secure"))
                && let Some(audit) = &state.audit
            {
                audit.record(&AuditRecord {
                    time_ms: AuditRecord::now_ms(),
                    key: None,
                    route: if request.uri().path().starts_with("/v2/tasks/") { "task" } else { "model" },
                    target: request.uri().path().to_string(),
                    model: None,
                    version: None,
                    batch: 0,
                    status: error.status().as_u16(),
                    latency_ms: 0.0,
                    secure: None,
                });
            }
            error.into_response()
        }
    }
}

/// Routes for key holders: any configured key (or anyone, without keys).
pub(crate) async fn require_key(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    check(state, request, next, false).await
}

/// Operator routes: an admin key (or anyone, without keys).
pub(crate) async fn require_admin(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    check(state, request, next, true).await
}

/// The JSON 404 for unknown routes.
pub(crate) async fn not_found(request: Request) -> AppError {
    AppError::NotFound(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// The JSON 405 for known routes with the wrong method.
pub(crate) async fn method_not_allowed(request: Request) -> Response {
    let mut r = AppError::MethodNotAllowed(format!("{} is not allowed on {}", request.method(), request.uri().path()))
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
