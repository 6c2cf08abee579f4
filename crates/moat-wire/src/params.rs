//! Keys of the `parameters` objects of Open Inference Protocol requests and answers, and of the
//! secure-session admission, as moat reads and writes them (INFaaS-style product knobs).

/// Request: the least held-out accuracy (percent) a task's model must have.
pub const MIN_ACCURACY: &str = "min_accuracy";
/// Request: the most a task's model may take per query, milliseconds.
pub const MAX_LATENCY_MS: &str = "max_latency_ms";
/// The spec keys a task accepts, in the order metadata lists them.
pub const SPEC: [&str; 2] = [MIN_ACCURACY, MAX_LATENCY_MS];
/// Answer: the task that served the request.
pub const TASK: &str = "task";
/// Answer: whether the selected model met the spec (when the task discloses it).
pub const SPEC_MET: &str = "spec_met";
/// Answer: the server's commitment to the serving model's weights (when disclosed).
pub const MODEL_COMMITMENT: &str = "model_commitment";
/// Metadata: the most samples one request may carry.
pub const MAX_BATCH_SIZE: &str = "max_batch_size";

/// Output: the predicted label (INT64 `[N]`), which moat's server adds beside a model's
/// declared outputs.
pub const OUTPUT_LABEL: &str = "label";
/// Output: the logits (FP32 `[N, K]`), added beside a model's declared outputs.
pub const OUTPUT_LOGITS: &str = "logits";
/// Output: the softmax of the logits (FP32 `[N, K]`), added beside a model's declared outputs.
pub const OUTPUT_PROBABILITIES: &str = "probabilities";
