//! Errors of the model core.

use thiserror::Error;

/// Result alias for moat-nn.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

/// What went wrong while building, importing, executing or training a model.
///
/// Every variant carries enough context (node name, op type, path) to be printed on one line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NnError {
    /// A tensor or node shape is inconsistent.
    #[error("shape error: {0}")]
    Shape(String),
    /// A node of the graph is invalid (bad inputs, bad attributes, bad shapes).
    #[error("node '{node}' ({op}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// The node's op type.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// The graph as a whole is invalid.
    #[error("invalid graph: {0}")]
    Graph(String),
    /// An ONNX file could not be decoded or uses something moat does not support.
    #[error("onnx: {0}")]
    Onnx(String),
    /// An ONNX operator moat does not implement.
    #[error("unsupported ONNX operator '{op_type}' at node '{node}' (supported: {supported})")]
    UnsupportedOp {
        /// The ONNX op type.
        op_type: String,
        /// The node's name (or its index when unnamed).
        node: String,
        /// The supported op types, comma separated.
        supported: String,
    },
    /// A dataset file is missing or malformed.
    #[error("dataset {path}: {message}")]
    Dataset {
        /// The file or directory.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A fixed-point configuration is unusable.
    #[error("fixed-point: {0}")]
    FixedPoint(String),
    /// Training failed.
    #[error("training: {0}")]
    Train(String),
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl NnError {
    /// A node error.
    pub fn node(node: &str, op: &str, message: impl Into<String>) -> Self {
        Self::Node { node: node.to_string(), op: op.to_string(), message: message.into() }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().display().to_string(), source }
    }
}
