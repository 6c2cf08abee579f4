//! # moat-client — talking to a moat server
//!
//! Plaintext inference over the Open Inference Protocol v2 (HTTP/REST, JSON or Triton's binary
//! tensor extension) against moat's server or any other OIP v2 server, including moat's
//! model-less task requests with an accuracy/latency spec. Blocking (ureq): attack code and
//! load generators call it from plain threads.
//!
//! ```no_run
//! use moat_client::{HttpClient, InferRequest};
//!
//! let client = HttpClient::new("http://127.0.0.1:8000")?.with_api_key("k-123");
//! let meta = client.model_metadata("mlp-64", None)?;
//! let sample = vec![0.0f32; meta.sample_shape()?.iter().product()];
//! let request = InferRequest::batch(&[sample], &meta.sample_shape()?)?;
//! let answer = client.infer("mlp-64", None, &request)?;
//! println!("label {:?}", answer.labels()?);
//! // Model-less: let the server pick a model of the task meeting the spec.
//! let answer = client.infer_task("digits", &request.with_spec(Some(90.0), Some(5.0)))?;
//! println!("served by {}", answer.model_name);
//! # Ok::<(), moat_client::ClientError>(())
//! ```
//!
//! Secure (two-party) inference — the server never sees the input — goes through the same
//! server and key ([`secure`]): an admission over HTTP, then moat-mpc's protocol on the
//! server's session port. Fusion's mix-and-check ([`fusion`]) runs on top of either path: it
//! mixes known-answer samples and duplicates into a batch and releases the answers only after
//! checking them.

pub mod error;
pub mod fusion;
pub mod http;
pub mod oip;
pub mod secure;
pub mod tls;

pub use error::ClientError;
pub use http::{HttpClient, ModelMetadata, TensorMetadata};
pub use moat_mpc::Seed;
pub use oip::{InferRequest, InferResponse, OutputTensor, RequestedOutput, TensorData};
pub use secure::{Admission, SecureClient, SecureSession, SessionRequest, SessionStats};
pub use tls::ClientTls;
