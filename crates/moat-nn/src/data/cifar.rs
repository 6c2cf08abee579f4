//! CIFAR-10, binary version, from a directory.
//!
//! Files ([`CIFAR10_TRAIN_FILES`], [`CIFAR10_TEST_FILE`]), each raw or with a `.gz` suffix, hold
//! records of [`CIFAR10_RECORD_BYTES`] bytes: one label byte, then 3,072 pixel bytes — the red,
//! green and blue 32×32 planes, each row-major. Samples have shape `[3, 32, 32]`: pixels scaled
//! to [0, 1], then normalised per channel ([`Normalization::cifar10`]).

use std::path::Path;

use crate::data::io::{dataset_error, find, read};
use crate::data::{Dataset, Normalization, TrainTest};
use crate::error::Result;

/// The training batches, in order (10,000 records each in the official release).
pub const CIFAR10_TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
/// The test batch (10,000 records).
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// Per-sample shape.
pub const CIFAR10_SHAPE: [usize; 3] = [3, 32, 32];
/// Bytes per record: the label and 3 × 32 × 32 pixels.
pub const CIFAR10_RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// Usual per-channel (R, G, B) mean of the training pixels scaled to [0, 1].
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Usual per-channel (R, G, B) std of the training pixels scaled to [0, 1].
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// Class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

impl Normalization {
    /// CIFAR-10's usual per-channel normalisation ([`CIFAR10_MEAN`], [`CIFAR10_STD`]).
    pub fn cifar10() -> Self {
        Self { mean: CIFAR10_MEAN.to_vec(), std: CIFAR10_STD.to_vec() }
    }
}

/// How much of CIFAR-10 to load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CifarOptions {
    /// Load only the first this many training samples (batches are read in order and only as
    /// far as needed: `Some(10_000)` reads `data_batch_1.bin` alone); `None` loads all five.
    pub train_limit: Option<usize>,
    /// Load only the first this many test samples; `None` loads the whole test batch.
    pub test_limit: Option<usize>,
}

/// Loads CIFAR-10 (`cifar10-train`, `cifar10-test`) from `dir`.
///
/// Every batch read must be a whole number of records with labels in `0..10`. With a limit,
/// only the prefix needed is read (and checked).
pub fn load_cifar10(dir: &Path, options: CifarOptions) -> Result<TrainTest> {
    let norm = Normalization::cifar10();
    let train = load_batches(dir, "cifar10-train", &CIFAR10_TRAIN_FILES, options.train_limit, &norm)?;
    let test = load_batches(dir, "cifar10-test", &[CIFAR10_TEST_FILE], options.test_limit, &norm)?;
    tracing::debug!(train = train.len(), test = test.len(), "loaded CIFAR-10");
    Ok(TrainTest { train, test })
}

fn load_batches(dir: &Path, name: &str, files: &[&str], limit: Option<usize>, norm: &Normalization) -> Result<Dataset> {
    let tables = norm.byte_tables(255.0);
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<u16> = Vec::new();
    for (b, file) in files.iter().enumerate() {
        let wanted = limit.map(|l| l.saturating_sub(labels.len()));
        if wanted == Some(0) {
            break;
        }
        let path = find(dir, file)?;
        let prefix = wanted.map(|w| w.saturating_mul(CIFAR10_RECORD_BYTES) as u64);
        let bytes = read(&path, prefix)?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
            return Err(dataset_error(
                &path,
                format!(
                    "{} bytes is not a positive whole number of {CIFAR10_RECORD_BYTES}-byte records (truncated?)",
                    bytes.len()
                ),
            ));
        }
        let records = bytes.len() / CIFAR10_RECORD_BYTES;
        if b == 0 {
            // Reserve once, assuming the batches that follow are as long as the first.
            let all = records.saturating_mul(files.len());
            let expected = limit.map_or(all, |l| l.min(all));
            features.reserve_exact(expected.saturating_mul(CIFAR10_RECORD_BYTES - 1));
            labels.reserve_exact(expected);
        }
        for (i, record) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
            let label = record[0];
            if label >= 10 {
                return Err(dataset_error(&path, format!("label {label} of record {i} is outside 0..10")));
            }
            labels.push(u16::from(label));
            for (table, plane) in tables.iter().zip(record[1..].chunks_exact(32 * 32)) {
                features.extend(plane.iter().map(|&p| table[p as usize]));
            }
        }
    }
    Dataset::new(name, CIFAR10_SHAPE.to_vec(), 10, features, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text, gzip};

    /// `n` records; record `i` has label `i % 10` and pixel `k` of channel `c` equal to
    /// `(i + 3k + 50c) % 256`.
    fn records(n: usize, first: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * CIFAR10_RECORD_BYTES);
        for i in first..first + n {
            out.push((i % 10) as u8);
            for c in 0..3 {
                out.extend((0..1024).map(|k| ((i + 3 * k + 50 * c) % 256) as u8));
            }
        }
        out
    }

    fn write_set(dir: &Path, per_batch: usize, test: usize) -> TestResult {
        for (b, file) in CIFAR10_TRAIN_FILES.iter().enumerate() {
            let bytes = records(per_batch, b * per_batch);
            // Mix raw and gzipped batches.
            if b % 2 == 0 {
                std::fs::write(dir.join(file), bytes)?;
            } else {
                std::fs::write(dir.join(format!("{file}.gz")), gzip(&bytes)?)?;
            }
        }
        std::fs::write(dir.join(CIFAR10_TEST_FILE), records(test, 1000))?;
        Ok(())
    }

    fn raw_pixel(i: usize, c: usize, k: usize) -> f32 {
        (((i + 3 * k + 50 * c) % 256) as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
    }

    #[test]
    fn loads_all_batches_in_order_with_planes_per_channel() -> TestResult {
        let dir = tempfile::tempdir()?;
        write_set(dir.path(), 7, 4)?;
        let tt = load_cifar10(dir.path(), CifarOptions::default())?;
        assert_eq!((tt.train.len(), tt.test.len()), (35, 4));
        assert_eq!(tt.train.sample_shape, vec![3, 32, 32]);
        for i in [0, 6, 7, 20, 34] {
            assert_eq!(tt.train.label(i), i % 10);
            let s = tt.train.sample(i);
            for (c, k) in [(0, 0), (0, 1023), (1, 5), (2, 700)] {
                assert!((s[c * 1024 + k] - raw_pixel(i, c, k)).abs() < 1e-6, "sample {i} channel {c} pixel {k}");
            }
        }
        assert_eq!(tt.test.label(1), 1001 % 10);
        Ok(())
    }

    #[test]
    fn limits_read_only_the_prefix() -> TestResult {
        let dir = tempfile::tempdir()?;
        write_set(dir.path(), 7, 4)?;
        let full = load_cifar10(dir.path(), CifarOptions::default())?;
        // Batches after the limit may be missing or broken: they are not read.
        std::fs::write(dir.path().join("data_batch_4.bin"), b"broken")?;
        std::fs::remove_file(dir.path().join("data_batch_5.bin"))?;
        let part = load_cifar10(dir.path(), CifarOptions { train_limit: Some(17), test_limit: Some(2) })?;
        assert_eq!((part.train.len(), part.test.len()), (17, 2));
        assert_eq!(part.train, full.train.take(17));
        assert_eq!(part.test.features, full.test.take(2).features);
        let none = load_cifar10(dir.path(), CifarOptions { train_limit: Some(0), test_limit: Some(100) })?;
        assert_eq!((none.train.len(), none.test.len()), (0, 4));
        Ok(())
    }

    #[test]
    fn malformed_batches_are_errors_naming_the_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        write_set(dir.path(), 3, 2)?;
        let path = dir.path().join("data_batch_3.bin");
        let good = records(3, 6);

        std::fs::write(&path, &good[..good.len() - 1])?;
        let err = err_text(load_cifar10(dir.path(), CifarOptions::default()))?;
        assert!(err.contains("data_batch_3.bin") && err.contains("truncated"), "{err}");

        let mut bad = good.clone();
        bad[CIFAR10_RECORD_BYTES] = 10;
        std::fs::write(&path, &bad)?;
        let err = err_text(load_cifar10(dir.path(), CifarOptions::default()))?;
        assert!(err.contains("data_batch_3.bin") && err.contains("label 10 of record 1"), "{err}");

        std::fs::write(&path, [])?;
        assert!(load_cifar10(dir.path(), CifarOptions::default()).is_err());

        std::fs::remove_file(&path)?;
        let err = err_text(load_cifar10(dir.path(), CifarOptions::default()))?;
        assert!(err.contains("data_batch_3.bin or data_batch_3.bin.gz"), "{err}");
        Ok(())
    }
}
