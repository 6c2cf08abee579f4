//! Helpers for the loaders' unit tests: synthetic files in the standard formats.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Result type of the data tests.
pub(crate) type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The message of an expected error (an error itself when the call succeeded).
pub(crate) fn err_text<T>(result: crate::Result<T>) -> TestResult<String> {
    match result {
        Ok(_) => Err("expected an error, got Ok".into()),
        Err(e) => Ok(e.to_string()),
    }
}

/// Gzip-compresses `bytes`.
pub(crate) fn gzip(bytes: &[u8]) -> TestResult<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// An idx file of unsigned bytes with the given dimensions and data.
pub(crate) fn idx_u8(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
