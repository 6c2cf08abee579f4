//! Errors: [`ServeError`] for the library (loading, configuration, startup) and [`AppError`],
//! the one type every HTTP handler returns, which decides what the client is told.
//!
//! Client mistakes come back as 4xx with their message; overload as 503 with `Retry-After`;
//! internal failures as an opaque 500 whose detail only goes to the server log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_nn::NnError;

/// Library errors: the repository, configuration files, startup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A configuration file is malformed or inconsistent.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A model (version) failed to load or profile.
    #[error("model '{model}': {message}")]
    Model {
        /// Model name (and version, `name/version`).
        model: String,
        /// What failed.
        message: String,
    },
    /// The model core failed.
    #[error("model '{model}': {source}")]
    Nn {
        /// Model name (and version).
        model: String,
        /// The cause.
        source: NnError,
    },
    /// No model of this name exists in the repository.
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    /// The network listener or runtime failed.
    #[error("server: {0}")]
    Server(String),
}

impl ServeError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ServeError::Io { path: path.to_path_buf(), source }
    }

    /// A configuration error in `path`.
    pub fn config(path: &Path, message: impl Into<String>) -> Self {
        ServeError::Config { path: path.to_path_buf(), message: message.into() }
    }
}

/// An error at the HTTP edge: a status, a message for the client and, for overload and rate
/// limits, a `Retry-After`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// 400: the request is malformed or does not fit the model.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the key may not use this endpoint.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown model, version, task or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: wrong method for the route.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413: the body exceeds the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: unsupported content encoding.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// 429: rate limit or budget.
    #[error("{message}")]
    TooManyRequests {
        /// For the client.
        message: String,
        /// When retrying makes sense (none for an exhausted budget).
        retry_after: Option<Duration>,
    },
    /// 503: saturated or not ready.
    #[error("{message}")]
    Unavailable {
        /// For the client.
        message: String,
        /// Suggested wait.
        retry_after: Option<Duration>,
    },
    /// 504: the request did not finish within its deadline.
    #[error("{0}")]
    Timeout(String),
    /// 500: the detail is logged, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told.
    pub fn client_message(&self) -> String {
        match self {
            AppError::Internal(_) => "internal server error (details are in the server log)".into(),
            other => other.to_string(),
        }
    }

    /// An internal error.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        AppError::Internal(detail.to_string())
    }
}

impl From<crate::keys::Refusal> for AppError {
    fn from(r: crate::keys::Refusal) -> Self {
        use crate::keys::Refusal;
        match &r {
            Refusal::MissingKey | Refusal::UnknownKey => AppError::Unauthorized(r.to_string()),
            Refusal::NotAdmin => AppError::Forbidden(r.to_string()),
            Refusal::RateLimited { retry_after, .. } => {
                AppError::TooManyRequests { message: r.to_string(), retry_after: Some(*retry_after) }
            }
            Refusal::BudgetExhausted { .. } => AppError::TooManyRequests { message: r.to_string(), retry_after: None },
            Refusal::StoreUnavailable(_) => {
                AppError::Unavailable { message: r.to_string(), retry_after: Some(Duration::from_secs(1)) }
            }
        }
    }
}

/// The JSON body of every error: `{"error": "…"}` (the OIP error object).
pub fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = (self.status(), Json(error_body(&self.client_message()))).into_response();
        let retry = match &self {
            AppError::TooManyRequests { retry_after, .. } | AppError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        };
        if let Some(wait) = retry {
            // Whole seconds, rounded up, at least 1.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
