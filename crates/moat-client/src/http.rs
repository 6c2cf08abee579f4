//! A blocking HTTP client for Open Inference Protocol v2 servers (moat's and any other), with
//! moat's task extension. One client holds one connection pool; clone-free: make one per
//! thread for concurrent use.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::oip::{InferRequest, InferResponse};

/// Where a request goes: a model (or one of its versions) or a task. The same target names
/// the inference route (`…/infer`) and the secure-session admission route (`…/secure`).
#[derive(Clone, Debug, PartialEq)]
pub enum OipTarget {
    /// `/v2/models/{name}[/versions/{version}]/infer`.
    Model {
        /// Model name.
        name: String,
        /// Version, or the server's default.
        version: Option<String>,
    },
    /// `/v2/tasks/{name}/infer`: the server picks one model for the whole request.
    Task {
        /// Task name.
        name: String,
    },
}

/// Largest response body read (bigger ones are a protocol error).
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// `$metadata_tensor`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TensorMetadata {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: String,
    /// Shape (-1: variable).
    pub shape: Vec<i64>,
}

/// `$metadata_model_response` (plus the optional `parameters` moat adds).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ModelMetadata {
    /// Model (or task) name.
    pub name: String,
    /// Versions.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Platform.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
    /// Server-specific details (moat: profile, task, input specification).
    #[serde(default)]
    pub parameters: Value,
}

impl ModelMetadata {
    /// The name of the model's (first) input, as its ONNX graph calls it.
    pub fn input_name(&self) -> Result<&str, ClientError> {
        self.inputs.first().map(|i| i.name.as_str()).ok_or_else(|| ClientError::Protocol("model has no inputs".into()))
    }

    /// The names of the model's declared outputs, in order.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.name.as_str()).collect()
    }

    /// A request for a batch of samples, under the model's own input name and sample shape.
    pub fn request(&self, samples: &[Vec<f32>]) -> Result<InferRequest, ClientError> {
        Ok(InferRequest::batch(samples, &self.sample_shape()?)?.with_input_name(self.input_name()?))
    }

    /// The most samples one request may carry, when the server says (moat's
    /// [`moat_wire::params::MAX_BATCH_SIZE`]).
    pub fn max_batch_size(&self) -> Option<usize> {
        self.parameters.get(moat_wire::params::MAX_BATCH_SIZE).and_then(Value::as_u64).map(|b| b as usize)
    }

    /// The per-sample input shape: the first input's shape without its batch dimension.
    pub fn sample_shape(&self) -> Result<Vec<usize>, ClientError> {
        let input = self.inputs.first().ok_or_else(|| ClientError::Protocol("model has no inputs".into()))?;
        input
            .shape
            .iter()
            .skip(1)
            .map(|&d| {
                usize::try_from(d)
                    .map_err(|_| ClientError::Protocol(format!("variable sample dimension in {:?}", input.shape)))
            })
            .collect()
    }
}

/// A response: status, the headers the client needs, and the body.
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    header_length: Option<usize>,
    body: Vec<u8>,
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    agent: ureq::Agent,
    api_key: Option<String>,
    timeout: Duration,
    /// TLS settings of an `https://` client (see [`crate::tls`]).
    tls: Option<crate::tls::ClientTls>,
}

fn agent(timeout: Duration, tls: Option<&crate::tls::ClientTls>) -> ureq::Agent {
    let mut builder = ureq::Agent::config_builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.ureq_config());
    }
    let config = builder
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("moat-client/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

/// True for names safe to put in a URL path segment unescaped.
pub(crate) fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s != "."
        && s != ".."
}

impl HttpClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8000`), 30 s per request.
    /// An `https://` URL trusts what [`crate::ClientTls::from_env`] says (the web PKI roots
    /// unless `MOAT_CACERT` is set); [`HttpClient::with_tls`] overrides it.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Invalid(format!("'{base_url}' is not an http:// or https:// URL")));
        }
        let timeout = Duration::from_secs(30);
        let tls = match base.starts_with("https://") {
            true => Some(crate::tls::ClientTls::from_env()?),
            false => None,
        };
        Ok(Self { base, agent: agent(timeout, tls.as_ref()), api_key: None, timeout, tls })
    }

    /// Uses `tls` for an `https://` URL (ignored for `http://`).
    pub fn with_tls(mut self, tls: crate::tls::ClientTls) -> Self {
        if self.base.starts_with("https://") {
            self.agent = agent(self.timeout, Some(&tls));
            self.tls = Some(tls);
        }
        self
    }

    /// The TLS settings, for an `https://` URL.
    pub fn tls(&self) -> Option<&crate::tls::ClientTls> {
        self.tls.as_ref()
    }

    /// Sends `key` as `Authorization: Bearer KEY` with every request.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Bounds every request (connect, send, receive) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.agent = agent(timeout, self.tls.as_ref());
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ClientError> {
        let mut response = result.map_err(|e| ClientError::Transport(e.to_string()))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let header_length = match header("inference-header-content-length") {
            None => None,
            Some(v) => {
                Some(v.trim().parse::<usize>().map_err(|_| ClientError::Protocol(format!("bad header length '{v}'")))?)
            }
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Reply { status, retry_after, header_length, body })
    }

    fn get(&self, path: &str) -> Result<Reply, ClientError> {
        let mut request = self.agent.get(self.url(path));
        if let Some(k) = &self.api_key {
            request = request.header("authorization", format!("Bearer {k}"));
        }
        self.finish(request.call())
    }

    fn post(&self, path: &str, body: Vec<u8>, header_length: Option<usize>) -> Result<Reply, ClientError> {
        let mut request = self.agent.post(self.url(path));
        if let Some(k) = &self.api_key {
            request = request.header("authorization", format!("Bearer {k}"));
        }
        request = match header_length {
            Some(n) => request
                .header("content-type", "application/octet-stream")
                .header("inference-header-content-length", n.to_string()),
            None => request.header("content-type", "application/json"),
        };
        self.finish(request.send(body))
    }

    /// Turns an error status into [`ClientError::Status`] with the server's message.
    fn ok(reply: Reply) -> Result<Reply, ClientError> {
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let message = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).chars().take(500).collect());
        Err(ClientError::Status { status: reply.status, message, retry_after: reply.retry_after })
    }

    fn json(reply: Reply) -> Result<Value, ClientError> {
        let reply = Self::ok(reply)?;
        serde_json::from_slice(&reply.body).map_err(|e| ClientError::Protocol(format!("response is not JSON: {e}")))
    }

    /// `GET path` → JSON (any endpoint; `path` starts with `/`).
    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        Self::json(self.get(path)?)
    }

    /// `POST path` with a JSON body → JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Invalid(e.to_string()))?;
        Self::json(self.post(path, bytes, None)?)
    }

    /// `GET /v2/health/live` is 200.
    pub fn is_live(&self) -> Result<bool, ClientError> {
        Ok(self.get("/v2/health/live")?.status == 200)
    }

    /// `GET /v2/health/ready` is 200.
    pub fn is_ready(&self) -> Result<bool, ClientError> {
        Ok(self.get("/v2/health/ready")?.status == 200)
    }

    /// `GET /v2`.
    pub fn server_metadata(&self) -> Result<Value, ClientError> {
        self.get_json("/v2")
    }

    pub(crate) fn model_path(model: &str, version: Option<&str>) -> Result<String, ClientError> {
        if !safe_segment(model) || version.is_some_and(|v| !safe_segment(v)) {
            return Err(ClientError::Invalid(format!("'{model}' / {version:?} is not a valid model name / version")));
        }
        Ok(match version {
            Some(v) => format!("/v2/models/{model}/versions/{v}"),
            None => format!("/v2/models/{model}"),
        })
    }

    /// `GET /v2/models/{model}[/versions/{version}]`.
    pub fn model_metadata(&self, model: &str, version: Option<&str>) -> Result<ModelMetadata, ClientError> {
        let v = self.get_json(&Self::model_path(model, version)?)?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("bad model metadata: {e}")))
    }

    /// `GET /v2/models/{model}/ready` is 200.
    pub fn is_model_ready(&self, model: &str, version: Option<&str>) -> Result<bool, ClientError> {
        Ok(self.get(&format!("{}/ready", Self::model_path(model, version)?))?.status == 200)
    }

    fn infer_at(&self, path: &str, request: &InferRequest) -> Result<InferResponse, ClientError> {
        let (body, header_length) = request.encode()?;
        let reply = Self::ok(self.post(path, body, header_length)?)?;
        InferResponse::decode(&reply.body, reply.header_length)
    }

    /// `POST /v2/models/{model}[/versions/{version}]/infer`.
    pub fn infer(
        &self,
        model: &str,
        version: Option<&str>,
        request: &InferRequest,
    ) -> Result<InferResponse, ClientError> {
        self.infer_at(&format!("{}/infer", Self::model_path(model, version)?), request)
    }

    /// `POST /v2/tasks/{task}/infer` (moat's model-less extension; set the spec with
    /// [`InferRequest::with_spec`]).
    pub fn infer_task(&self, task: &str, request: &InferRequest) -> Result<InferResponse, ClientError> {
        if !safe_segment(task) {
            return Err(ClientError::Invalid(format!("'{task}' is not a valid task name")));
        }
        self.infer_at(&format!("/v2/tasks/{task}/infer"), request)
    }

    /// `POST` to `target`'s `infer` route.
    pub fn infer_target(&self, target: &OipTarget, request: &InferRequest) -> Result<InferResponse, ClientError> {
        match target {
            OipTarget::Model { name, version } => self.infer(name, version.as_deref(), request),
            OipTarget::Task { name } => self.infer_task(name, request),
        }
    }

    /// `samples` to `target` in consecutive requests of at most `max_batch` samples (a
    /// model's `max_batch_size`), each built by `prepare` from the plain batch request; the
    /// answers in order, each with its number of samples. The first failing request ends it.
    pub fn infer_in_batches(
        &self,
        target: &OipTarget,
        samples: &[Vec<f32>],
        sample_shape: &[usize],
        max_batch: usize,
        mut prepare: impl FnMut(InferRequest) -> InferRequest,
    ) -> Result<Vec<(usize, InferResponse)>, ClientError> {
        samples
            .chunks(max_batch.max(1))
            .map(|chunk| {
                let request = prepare(InferRequest::batch(chunk, sample_shape)?);
                Ok((chunk.len(), self.infer_target(target, &request)?))
            })
            .collect()
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let reply = Self::ok(self.get("/metrics")?)?;
        String::from_utf8(reply.body).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /v2/models/{model}[/versions/{version}]/commitment/opening` (an admin key): the
    /// nonce of the model version's commitment, for an auditor to check a model file against
    /// ([`moat_wire::CommitmentOpening::verify_seen`]).
    pub fn commitment_opening(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<moat_wire::CommitmentOpening, ClientError> {
        if !safe_segment(model) || version.is_some_and(|v| !safe_segment(v)) {
            return Err(ClientError::Invalid(format!("'{model}' / {version:?} is not a valid model name and version")));
        }
        let path = match version {
            Some(v) => format!("/v2/models/{model}/versions/{v}/commitment/opening"),
            None => format!("/v2/models/{model}/commitment/opening"),
        };
        serde_json::from_value(self.get_json(&path)?)
            .map_err(|e| ClientError::Protocol(format!("a malformed commitment opening: {e}")))
    }

    /// `POST /v2/repository/index`.
    pub fn repository_index(&self, ready_only: bool) -> Result<Value, ClientError> {
        self.post_json("/v2/repository/index", &json!({ "ready": ready_only }))
    }

    /// `POST /v2/repository/models/{model}/load`.
    pub fn load_model(&self, model: &str) -> Result<(), ClientError> {
        self.repository_action(model, "load")
    }

    /// `POST /v2/repository/models/{model}/unload`.
    pub fn unload_model(&self, model: &str) -> Result<(), ClientError> {
        self.repository_action(model, "unload")
    }

    fn repository_action(&self, model: &str, action: &str) -> Result<(), ClientError> {
        if !safe_segment(model) {
            return Err(ClientError::Invalid(format!("'{model}' is not a valid model name")));
        }
        self.post_json(&format!("/v2/repository/models/{model}/{action}"), &json!({})).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_urls_and_names() {
        assert!(HttpClient::new("127.0.0.1:8000").is_err());
        assert!(HttpClient::new("http://127.0.0.1:8000/").is_ok_and(|c| c.base_url() == "http://127.0.0.1:8000"));
        assert!(HttpClient::model_path("../x", None).is_err());
        assert!(HttpClient::model_path("m", Some("1/infer")).is_err());
        assert_eq!(HttpClient::model_path("mlp-16", Some("2")).ok().as_deref(), Some("/v2/models/mlp-16/versions/2"));
    }

    #[test]
    fn connection_refused_is_a_transport_error() -> Result<(), Box<dyn std::error::Error>> {
        // A port nothing listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let client = HttpClient::new(&format!("http://127.0.0.1:{port}"))?.with_timeout(Duration::from_secs(2));
        assert!(matches!(client.is_live(), Err(ClientError::Transport(_))));
        Ok(())
    }
}
