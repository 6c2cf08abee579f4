//! Errors of the attacks.

use thiserror::Error;

/// What can stop an attack.
#[derive(Debug, Error)]
pub enum AttackError {
    /// The oracle (engine or remote session) failed.
    #[error("oracle: {0}")]
    Oracle(#[from] moat_mpc::MpcError),
    /// The architecture has a shape the attack does not handle (names the node).
    #[error("node '{node}': {detail}")]
    Unsupported {
        /// The node.
        node: String,
        /// What is not supported.
        detail: String,
    },
    /// A search found no label flip where one must be (e.g. under heavy server-side noise,
    /// or a query budget cut the session).
    #[error("{0}")]
    Search(String),
    /// The service refused further queries (a query budget, a rate limit, an abort): the
    /// attack stops with what it has.
    #[error("the service refused further queries: {0}")]
    Refused(String),
    /// The service failed for a reason other than a refusal (a timeout, a broken connection,
    /// an answer off the protocol): an error, not the end of the attack's budget.
    #[error("the service failed: {0}")]
    Service(String),
    /// Building or evaluating the extracted model failed.
    #[error("model: {0}")]
    Model(#[from] moat_nn::NnError),
}

impl From<moat_client::ClientError> for AttackError {
    /// The service saying no — an HTTP refusal (401, 403, 429) or a session port that turns
    /// the session down — is [`AttackError::Refused`]; anything else (timeouts, broken
    /// connections, answers off the protocol) is [`AttackError::Service`] with its cause.
    fn from(e: moat_client::ClientError) -> Self {
        use moat_client::ClientError;
        match e {
            ClientError::Status { status: 401 | 403 | 429, .. } | ClientError::Refused { .. } => {
                AttackError::Refused(e.to_string())
            }
            other => AttackError::Service(other.to_string()),
        }
    }
}

/// Result with [`AttackError`].
pub type Result<T> = std::result::Result<T, AttackError>;

impl AttackError {
    pub(crate) fn unsupported(node: &str, detail: impl Into<String>) -> Self {
        Self::Unsupported { node: node.to_string(), detail: detail.into() }
    }
}
