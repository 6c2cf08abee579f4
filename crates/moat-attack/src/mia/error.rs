//! Errors of the membership-inference attacks.

use thiserror::Error;

/// What can stop a membership-inference run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MiaError {
    /// Querying the victim failed (its answer, a refusal, the service, the engine).
    #[error(transparent)]
    Victim(#[from] crate::victim::VictimError),
    /// The inputs of an attack or a metric are inconsistent (sizes, empty classes, NaN).
    #[error("{0}")]
    Invalid(String),
    /// The model executor or dataset code failed.
    #[error("model: {0}")]
    Model(#[from] moat_nn::NnError),
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

/// Result with [`MiaError`].
pub type Result<T> = std::result::Result<T, MiaError>;

pub(crate) fn invalid(message: impl Into<String>) -> MiaError {
    MiaError::Invalid(message.into())
}
