//! Errors of the two-party engine, sorted by who is at fault.

use crate::transport::TransportError;

/// Result alias of the engine.
pub type Result<T, E = MpcError> = std::result::Result<T, E>;

/// An error of a two-party protocol.
///
/// `InvalidArgument` is a local API misuse (never caused by what the peer sent);
/// `PeerMisbehaved` is a message of the right frame shape whose content breaks the protocol
/// (e.g. an invalid curve point, a wrong element count); `Transport` covers the channel itself
/// (disconnects, timeouts, malformed frames).
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum MpcError {
    /// A caller passed inconsistent inputs (lengths, ring settings, bit widths).
    #[error("{context}: invalid argument: {detail}")]
    InvalidArgument {
        /// The function or protocol step that rejected the input.
        context: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The peer sent a message that the protocol cannot accept.
    #[error("{context}: peer misbehaved: {detail}")]
    PeerMisbehaved {
        /// The protocol step that received the message.
        context: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The channel failed (disconnect, timeout, malformed or oversized frame).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server's policy does not allow the output asked for (refused before any work on
    /// the query).
    #[error("output '{requested}' refused: the server reveals at most '{allowed}'")]
    OutputRefused {
        /// What was asked for.
        requested: crate::engine::Reveal,
        /// The most the server's policy reveals.
        allowed: crate::engine::Reveal,
    },
    /// No two-party backend computes this output yet.
    #[error("output '{requested}' is not supported yet (the two-party backends compute label and logits)")]
    OutputUnsupported {
        /// What was asked for.
        requested: crate::engine::Reveal,
    },
    /// The session asked for more queries than it was granted.
    #[error("query limit reached: the session was granted {queries} queries")]
    Limit {
        /// Queries answered before the limit.
        queries: u64,
    },
    /// The client sent no request within the session's idle timeout
    /// ([`crate::engine::ServeOptions::idle_timeout`]): the server ended the session to free
    /// its slot.
    #[error("the client sent no request for {after:?}: session ended after {queries} queries")]
    Idle {
        /// The idle timeout.
        after: std::time::Duration,
        /// Queries answered before.
        queries: u64,
    },
}

impl MpcError {
    /// Shorthand for [`MpcError::InvalidArgument`].
    pub fn invalid(context: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidArgument { context, detail: detail.into() }
    }

    /// Shorthand for [`MpcError::PeerMisbehaved`].
    pub fn peer(context: &'static str, detail: impl Into<String>) -> Self {
        Self::PeerMisbehaved { context, detail: detail.into() }
    }
}

impl From<moat_nn::walk::Released> for MpcError {
    fn from(e: moat_nn::walk::Released) -> Self {
        Self::invalid("walk", e.to_string())
    }
}

impl From<moat_nn::NnError> for MpcError {
    /// A model the engine cannot run (a local error: the model is the caller's).
    fn from(e: moat_nn::NnError) -> Self {
        Self::invalid("model", e.to_string())
    }
}
