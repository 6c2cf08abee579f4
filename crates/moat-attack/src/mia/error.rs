//! Errors of the membership-inference attacks.

use thiserror::Error;

/// What can stop a membership-inference run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MiaError {
    /// The victim's answer is not a probability vector over the dataset's classes. Raised by
    /// the first query (or before any, when the victim's declared output size is wrong).
    #[error("victim '{victim}': {detail}")]
    NotClassVector {
        /// The victim.
        victim: String,
        /// What is wrong with its output.
        detail: String,
    },
    /// The inputs of an attack or a metric are inconsistent (sizes, empty classes, NaN).
    #[error("{0}")]
    Invalid(String),
    /// The model executor or dataset code failed.
    #[error("model: {0}")]
    Model(#[from] moat_nn::NnError),
    /// The two-party engine failed.
    #[error("engine: {0}")]
    Engine(#[from] moat_mpc::MpcError),
    /// The service refused the queries (a budget, a rate limit, the session port).
    #[error("the service refused: {0}")]
    Refused(String),
    /// The service failed for another reason (a timeout, a broken connection, an answer off
    /// the protocol).
    #[error("the service failed: {0}")]
    Service(String),
    /// Training a reference (shadow) model failed.
    #[error("training reference model {index}: {source}")]
    Training {
        /// Which reference model.
        index: usize,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing scores failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<moat_client::ClientError> for MiaError {
    /// Sorted as [`crate::AttackError`]'s: a refusal is not a failure.
    fn from(e: moat_client::ClientError) -> Self {
        match crate::AttackError::from(e) {
            crate::AttackError::Refused(m) => MiaError::Refused(m),
            crate::AttackError::Service(m) => MiaError::Service(m),
            other => MiaError::Service(other.to_string()),
        }
    }
}

/// Result with [`MiaError`].
pub type Result<T> = std::result::Result<T, MiaError>;

pub(crate) fn invalid(message: impl Into<String>) -> MiaError {
    MiaError::Invalid(message.into())
}
