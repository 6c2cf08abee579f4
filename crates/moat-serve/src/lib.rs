//! The model owner's service: model repository, per-query model selection, Open Inference Protocol v2 HTTP API, secure sessions, metrics.
