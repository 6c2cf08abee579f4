//! The query audit log: one JSON line per inference request, per key — what an operator needs
//! to spot an extraction campaign after the fact (who asked how much of which model).
//!
//! ```json
//! {"time_ms":1718000000000,"key":"alice","route":"task","target":"digits","model":"mlp-64","version":"1","batch":4,"status":200,"latency_ms":0.41}
//! ```
//!
//! `model`/`version` is the model that served the request (also when the response did not
//! disclose it), `null` when none did.
//!
//! Secure sessions ([`crate::secure`]) leave two lines: the admission (an HTTP request like the
//! others, `batch` = queries asked for) and the session's end (`batch` = queries answered), each
//! with a `secure` object:
//!
//! ```json
//! {"time_ms":1718000000000,"key":"alice","route":"model","target":"lenet5","model":"lenet5","version":"1","batch":3,"status":200,"latency_ms":412.0,
//!  "secure":{"event":"session","granted":5,"answered":3,"outcome":"completed","bytes_in":31000000,"bytes_out":18000000}}
//! ```
//!
//! Session `status`: 200 completed, 429 cut off at the granted queries, 410 token expired
//! unused, 400 aborted (the client vanished or broke the protocol; `answered` absent), 503 the
//! model could not be prepared. Lines are written and flushed one at a time under a
//! mutex, so concurrent requests never interleave within a line.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::ServeError;

/// One audited query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Unix time, milliseconds.
    pub time_ms: u64,
    /// Key name (`anonymous` without keys, `null` when the key was refused).
    pub key: Option<String>,
    /// `model` or `task`.
    pub route: &'static str,
    /// The model or task named in the URL.
    pub target: String,
    /// The model that served it.
    pub model: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Samples in the request (0 when it could not be parsed).
    pub batch: usize,
    /// HTTP status returned.
    pub status: u16,
    /// Time spent in the server, milliseconds.
    pub latency_ms: f64,
    /// Secure-session details (absent for plaintext inference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure: Option<SessionAudit>,
}

/// The secure-session part of an audit line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionAudit {
    /// `admission` (the HTTP request granting the session) or `session` (its end).
    pub event: &'static str,
    /// Queries granted (asked for, when the admission was refused).
    pub granted: u64,
    /// Queries answered (`session` lines; absent when a failed session cannot tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<u64>,
    /// How the session ended: `completed`, `limit`, `aborted`, `expired`, `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
}

impl AuditRecord {
    /// The current time in Unix milliseconds.
    pub fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// An append-only JSON-lines audit log.
#[derive(Debug)]
pub struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating or appending to) the log file.
    pub fn open(path: &Path) -> Result<Self, ServeError> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| ServeError::io(path, e))?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Appends one record. A failed write is logged, never fatal to the request.
    pub fn record(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "audit record not serialisable");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_json_line_per_record() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path)?;
        let mut r = AuditRecord {
            time_ms: 1,
            key: Some("alice".into()),
            route: "task",
            target: "digits".into(),
            model: Some("mlp".into()),
            version: Some("1".into()),
            batch: 4,
            status: 200,
            latency_ms: 0.5,
            secure: None,
        };
        log.record(&r);
        r.status = 429;
        r.model = None;
        AuditLog::open(&path)?.record(&r);
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<serde_json::Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["key"], "alice");
        assert_eq!(lines[0]["batch"], 4);
        assert_eq!(lines[1]["status"], 429);
        assert!(lines[1]["model"].is_null());
        Ok(())
    }
}
