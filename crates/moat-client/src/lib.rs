//! # moat-client — talking to a moat server
//!
//! Plaintext inference over the Open Inference Protocol v2 (HTTP/REST, JSON or Triton's binary
//! tensor extension) against moat's server or any other OIP v2 server, including moat's
//! model-less task requests with an accuracy/latency spec. Blocking (ureq): attack code and
//! load generators call it from plain threads.
//!
//! ```no_run
//! use moat_client::HttpClient;
//!
//! let client = HttpClient::new("http://127.0.0.1:8000")?.with_api_key("k-123");
//! let meta = client.model_metadata("mlp-64", None)?;
//! let sample = vec![0.0f32; meta.sample_shape()?.iter().product()];
//! // The model's own input name and shape; its declared outputs, plus moat's `label`.
//! let output = meta.output_names()[0].to_string();
//! let request = meta.request(&[sample])?.with_output(output, false, None).with_output("label", false, None);
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
pub use http::{HttpClient, ModelMetadata, OipTarget, TensorMetadata};
pub use moat_mpc::Seed;
pub use oip::{InferRequest, InferResponse, OutputTensor, RequestedOutput, TensorData};
pub use secure::{
    Admission, Refusal, RenewingSession, SecureClient, SecureSession, SessionRequest, SessionSeeds, SessionStats,
};
pub use tls::ClientTls;
