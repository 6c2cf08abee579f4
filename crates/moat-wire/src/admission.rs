//! Secure-session admission over HTTP: `POST /v2/models/{m}[/versions/{v}]/secure` or
//! `POST /v2/tasks/{t}/secure` with an [`AdmissionRequest`]; the server answers an
//! [`Admission`] holding a one-use [`SessionToken`] and the session port to take it to.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A one-use session token as it travels: 32 lowercase hex digits from the server's OS entropy.
/// A bearer secret: its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionToken(String);

impl SessionToken {
    /// Wraps the token text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The token text (present it on the session port, nowhere else).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// The admission request body; every field is optional and unknown fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionRequest {
    /// Request id, echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Queries to be granted (the server's default: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<u64>,
    /// What each query may reveal (`label`, `top-K`, `probabilities`, `logits`; default
    /// `label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Request parameters, e.g. a task's [`crate::params::MIN_ACCURACY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
}

/// What the server discloses beside the grant (the `parameters` of the answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionDetails {
    /// The task that admitted the session (task routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Whether the selected model meets the spec (task routes that disclose their model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_met: Option<bool>,
    /// The commitment to the serving model's weights (when the model is disclosed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_commitment: Option<String>,
}

/// The server's grant of a session. Its `Debug` hides the token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// The request's id, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The one-use session token.
    pub session: SessionToken,
    /// Where to connect (`host:port`).
    pub address: String,
    /// Queries granted.
    pub queries: u64,
    /// How long the token stays valid, milliseconds.
    pub expires_in_ms: u64,
    /// The two-party protocol (`moat-2pc/3`).
    pub protocol: String,
    /// The handshake on the session port ([`crate::HANDSHAKE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake: Option<String>,
    /// What each query may reveal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The serving model, when disclosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Its version, when disclosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Task, spec and commitment details.
    #[serde(default)]
    pub parameters: AdmissionDetails,
}

impl Admission {
    /// The server's commitment to the serving model's weights, when disclosed.
    pub fn model_commitment(&self) -> Option<&str> {
        self.parameters.model_commitment.as_deref()
    }

    /// `name/version` of the serving model, or `name` alone, or `None` when not disclosed.
    pub fn served_by(&self) -> Option<String> {
        let name = self.model_name.as_ref()?;
        Some(match &self.model_version {
            Some(v) => format!("{name}/{v}"),
            None => name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn admissions_round_trip_and_hide_the_token() -> Result<(), serde_json::Error> {
        let text = json!({
            "session": "00112233445566778899aabbccddeeff", "address": "127.0.0.1:8001", "queries": 3,
            "expires_in_ms": 30000, "protocol": "moat-2pc/3", "handshake": "moat-session/1",
            "output": "label", "model_name": "lenet5", "model_version": "1",
            "parameters": {"task": "digits", "model_commitment": "ab"},
        });
        let admission: Admission = serde_json::from_value(text.clone())?;
        assert!(!format!("{admission:?}").contains("0011"), "the token must not be printed");
        assert_eq!(admission.served_by().as_deref(), Some("lenet5/1"));
        assert_eq!(admission.model_commitment(), Some("ab"));
        assert_eq!(serde_json::to_value(&admission)?, text);
        Ok(())
    }

    #[test]
    fn requests_refuse_unknown_fields_and_skip_absent_ones() -> Result<(), serde_json::Error> {
        assert_eq!(serde_json::to_value(AdmissionRequest::default())?, json!({}));
        assert!(serde_json::from_value::<AdmissionRequest>(json!({"querys": 2})).is_err());
        let r: AdmissionRequest = serde_json::from_value(json!({"queries": 2, "output": "logits"}))?;
        assert_eq!((r.queries, r.output.as_deref()), (Some(2), Some("logits")));
        Ok(())
    }
}
