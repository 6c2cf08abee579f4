//! File access shared by the loaders: find `name` or `name.gz` in a directory and read it,
//! gunzipping when the file starts with the gzip magic bytes (whatever its extension).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{NnError, Result};

/// Largest (decompressed) file a loader reads whole: CIFAR-10 batches are 30 MB, MNIST
/// training images 47 MB, so 1 GiB only stops runaway or hostile inputs (gzip bombs).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;

/// The two leading bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A dataset error about `path`.
pub(crate) fn dataset_error(path: impl AsRef<Path>, message: impl Into<String>) -> NnError {
    NnError::Dataset { path: path.as_ref().display().to_string(), message: message.into() }
}

/// `dir/file` if it exists, else `dir/file.gz`, else an error naming both.
pub(crate) fn find(dir: &Path, file: &str) -> Result<PathBuf> {
    let raw = dir.join(file);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{file}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(dataset_error(&raw, format!("missing: expected {file} or {file}.gz in {}", dir.display())))
}

/// True when `dir` holds `file` raw or gzipped.
pub(crate) fn has(dir: &Path, file: &str) -> bool {
    dir.join(file).is_file() || dir.join(format!("{file}.gz")).is_file()
}

/// Reads a file, decompressing gzip, in full (`prefix = None`; an error above
/// [`MAX_FILE_BYTES`]) or only its first `prefix` (decompressed) bytes.
pub(crate) fn read(path: &Path, prefix: Option<u64>) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| NnError::io(path, e))?;
    let on_disk = file.metadata().map_err(|e| NnError::io(path, e))?.len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let gzipped = reader.fill_buf().map_err(|e| NnError::io(path, e))?.starts_with(&GZIP_MAGIC);
    let cap = prefix.unwrap_or(MAX_FILE_BYTES);
    // Read one byte past the cap to tell "exactly at the cap" from "above it".
    let take = if prefix.is_some() { cap } else { cap + 1 };
    let guess = if gzipped { on_disk.saturating_mul(5) } else { on_disk };
    let mut bytes = Vec::with_capacity(usize::try_from(guess.min(cap)).unwrap_or(0));
    let result = if gzipped {
        MultiGzDecoder::new(reader).take(take).read_to_end(&mut bytes)
    } else {
        reader.take(take).read_to_end(&mut bytes)
    };
    result.map_err(|e| {
        let what = if gzipped { "corrupt or truncated gzip stream" } else { "read failed" };
        dataset_error(path, format!("{what}: {e}"))
    })?;
    if prefix.is_none() && bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(dataset_error(
            path,
            format!("larger than {MAX_FILE_BYTES} bytes (decompressed); refusing to load"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text, gzip};

    #[test]
    fn reads_raw_and_gzip_whole_and_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.path().join("a.bin"), &payload)?;
        std::fs::write(dir.path().join("b.bin.gz"), gzip(&payload)?)?;
        let a = find(dir.path(), "a.bin")?;
        let b = find(dir.path(), "b.bin")?;
        assert!(b.to_string_lossy().ends_with("b.bin.gz"));
        assert!(has(dir.path(), "b.bin") && !has(dir.path(), "c.bin"));
        assert_eq!(read(&a, None)?, payload);
        assert_eq!(read(&b, None)?, payload);
        assert_eq!(read(&a, Some(100))?, &payload[..100]);
        assert_eq!(read(&b, Some(100))?, &payload[..100]);
        // A prefix longer than the file gives the whole file.
        assert_eq!(read(&b, Some(1 << 20))?, payload);
        Ok(())
    }

    #[test]
    fn missing_file_names_both_candidates() -> TestResult {
        let dir = tempfile::tempdir()?;
        let err = err_text(find(dir.path(), "nope.bin"))?;
        assert!(err.contains("nope.bin or nope.bin.gz"), "{err}");
        Ok(())
    }

    #[test]
    fn truncated_or_garbage_gzip_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        let payload: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let gz = gzip(&payload)?;
        let path = dir.path().join("t.gz");
        std::fs::write(&path, &gz[..gz.len() / 2])?;
        let err = err_text(read(&path, None))?;
        assert!(err.contains("t.gz") && err.contains("gzip"), "{err}");
        std::fs::write(&path, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])?;
        assert!(read(&path, None).is_err());
        Ok(())
    }
}
