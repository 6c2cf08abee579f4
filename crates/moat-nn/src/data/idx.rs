//! The idx file format of MNIST and Fashion-MNIST (LeCun et al.).
//!
//! Layout, all integers big-endian: two zero bytes, a type byte (`0x08` = unsigned byte, the only
//! type these datasets use and the only one read here), a byte `d` giving the number of
//! dimensions, `d` u32 sizes, then the data in row-major order. Images are `idx3` (`n × 28 × 28`,
//! magic `0x00000803`), labels `idx1` (`n`, magic `0x00000801`).

use std::path::Path;

use crate::data::io::{dataset_error, read};
use crate::error::Result;

/// The type byte of unsigned-byte data.
const TYPE_U8: u8 = 0x08;

/// A decoded idx file of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    dims: Vec<usize>,
    bytes: Vec<u8>,
    header_len: usize,
}

impl IdxArray {
    /// Parses an idx file's bytes; `path` names the file in errors. The data must be exactly as
    /// long as the header's dimensions say (a shorter file is truncated, a longer one garbage).
    pub fn parse(bytes: Vec<u8>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |message: String| dataset_error(path, message);
        let [z0, z1, kind, ndims] = match bytes.get(..4) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => return Err(bad(format!("{} bytes: too short for an idx header", bytes.len()))),
        };
        if z0 != 0 || z1 != 0 {
            return Err(bad(format!(
                "bad idx magic {:02x}{:02x}{kind:02x}{ndims:02x}: must start with two zero bytes",
                z0, z1
            )));
        }
        if kind != TYPE_U8 {
            return Err(bad(format!("idx element type 0x{kind:02x} is not supported (only 0x08, unsigned byte)")));
        }
        if ndims == 0 {
            return Err(bad("idx header declares 0 dimensions".into()));
        }
        let header_len = 4 + 4 * ndims as usize;
        let Some(header) = bytes.get(4..header_len) else {
            return Err(bad(format!(
                "{} bytes: truncated idx header ({ndims} dimensions need {header_len} bytes)",
                bytes.len()
            )));
        };
        let dims: Vec<usize> =
            header.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
        let expected = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
        let found = bytes.len() - header_len;
        if found < expected {
            return Err(bad(format!(
                "truncated: dimensions {dims:?} need {expected} data bytes, the file has {found}"
            )));
        }
        if found > expected {
            return Err(bad(format!(
                "{} unexpected bytes after the data (dimensions {dims:?} need {expected})",
                found - expected
            )));
        }
        Ok(Self { dims, bytes, header_len })
    }

    /// Reads and parses an idx file, raw or gzipped.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(read(path, None)?, path)
    }

    /// The dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The data, row-major.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text, idx_u8};

    #[test]
    fn parses_dims_and_data() -> TestResult {
        let a = IdxArray::parse(idx_u8(&[2, 3], &[1, 2, 3, 4, 5, 6]), "x")?;
        assert_eq!(a.dims(), &[2, 3]);
        assert_eq!(a.data(), &[1, 2, 3, 4, 5, 6]);
        Ok(())
    }

    #[test]
    fn rejects_malformed_files_naming_them() -> TestResult {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "too short"),
            (vec![0, 0, 8], "too short"),
            (vec![1, 0, 8, 1, 0, 0, 0, 0], "magic"),
            (vec![0, 0, 0x0d, 1, 0, 0, 0, 0], "element type"),
            (vec![0, 0, 8, 0], "0 dimensions"),
            (vec![0, 0, 8, 3, 0, 0, 0, 1], "truncated idx header"),
            (idx_u8(&[2, 3], &[1, 2, 3]), "truncated"),
            (idx_u8(&[2], &[1, 2, 3]), "unexpected bytes"),
            (idx_u8(&[u32::MAX, u32::MAX], &[]), "truncated"),
            (idx_u8(&[u32::MAX, u32::MAX, u32::MAX], &[]), "overflow"),
        ];
        for (bytes, want) in cases {
            let err = err_text(IdxArray::parse(bytes, "some/file-idx"))?;
            assert!(err.contains("some/file-idx") && err.contains(want), "{err} (want {want})");
        }
        Ok(())
    }
}
