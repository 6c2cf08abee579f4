//! Client errors, sorted by who is at fault: the server said no ([`ClientError::Status`]), the
//! network failed ([`ClientError::Transport`]), the server's answer made no sense
//! ([`ClientError::Protocol`]), the caller asked for something impossible
//! ([`ClientError::Invalid`]), or the secure-session port turned a session down
//! ([`ClientError::Refused`]).

use std::time::Duration;

/// What went wrong talking to a server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status and its `{"error": …}` message.
    #[error("HTTP {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's message.
        message: String,
        /// The `Retry-After` the server sent, if any.
        retry_after: Option<Duration>,
    },
    /// Connecting, sending or receiving failed (including timeouts).
    #[error("transport: {0}")]
    Transport(String),
    /// The server's answer does not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The request cannot be made as asked.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The secure-session port refused the session.
    #[error("secure session refused ({reason}): {message}")]
    Refused {
        /// Why.
        reason: moat_wire::Refusal,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status, for [`ClientError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
