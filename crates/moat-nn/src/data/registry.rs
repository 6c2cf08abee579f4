//! Datasets by name, for the CLI and for anything configured by text.

use std::path::{Path, PathBuf};

use crate::data::adult::{ADULT_CLASSES, ADULT_FEATURES, ADULT_FILES, load_adult_with_encoder};
use crate::data::cifar::{
    CIFAR10_CLASSES, CIFAR10_SHAPE, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, CifarOptions, load_cifar10,
};
use crate::data::digits::{DIGITS_CLASSES, DIGITS_SHAPE, load_digits};
use crate::data::io::{dataset_error, has};
use crate::data::mnist::{
    FASHION_MNIST_CLASSES, MNIST_CLASSES, MNIST_FILES, MNIST_SHAPE, load_fashion_mnist, load_mnist,
};
use crate::data::{InputSpec, Normalization, TrainTest};
use crate::error::Result;

/// A dataset [`load`] knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    /// The name [`load`] accepts.
    pub name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// Per-sample shape (for `adult`, as fitted on the published training file).
    pub sample_shape: &'static [usize],
    /// Class names, by label.
    pub class_names: &'static [&'static str],
    /// Files expected in the dataset directory (each raw or `.gz`); empty when none are needed.
    pub files: &'static [&'static str],
    /// Conventional sub-directory name: [`load`] also looks in `<dir>/<subdir>`.
    pub subdir: &'static str,
}

const CIFAR10_FILES: [&str; 6] = [
    CIFAR10_TRAIN_FILES[0],
    CIFAR10_TRAIN_FILES[1],
    CIFAR10_TRAIN_FILES[2],
    CIFAR10_TRAIN_FILES[3],
    CIFAR10_TRAIN_FILES[4],
    CIFAR10_TEST_FILE,
];

/// Every dataset [`load`] accepts.
pub const DATASETS: &[DatasetInfo] = &[
    DatasetInfo {
        name: "mnist",
        summary: "MNIST handwritten digits, 60,000 + 10,000 28x28 grey images (idx files)",
        sample_shape: &MNIST_SHAPE,
        class_names: &MNIST_CLASSES,
        files: &MNIST_FILES,
        subdir: "mnist",
    },
    DatasetInfo {
        name: "fashion-mnist",
        summary: "Fashion-MNIST clothing, 60,000 + 10,000 28x28 grey images (idx files)",
        sample_shape: &MNIST_SHAPE,
        class_names: &FASHION_MNIST_CLASSES,
        files: &MNIST_FILES,
        subdir: "fashion-mnist",
    },
    DatasetInfo {
        name: "cifar10",
        summary: "CIFAR-10 objects, 50,000 + 10,000 32x32 colour images (binary version)",
        sample_shape: &CIFAR10_SHAPE,
        class_names: &CIFAR10_CLASSES,
        files: &CIFAR10_FILES,
        subdir: "cifar10",
    },
    DatasetInfo {
        name: "adult",
        summary: "UCI Adult census income >50K, 32,561 + 16,281 rows, 108 encoded features (CSV)",
        sample_shape: &[ADULT_FEATURES],
        class_names: &ADULT_CLASSES,
        files: &ADULT_FILES,
        subdir: "adult",
    },
    DatasetInfo {
        name: "digits",
        summary: "UCI optical digits, 1,797 8x8 images, embedded (no files), seeded 1,437/360 split",
        sample_shape: &DIGITS_SHAPE,
        class_names: &DIGITS_CLASSES,
        files: &[],
        subdir: "",
    },
];

/// The [`DatasetInfo`] of `name`, or an error listing the known names.
pub fn info(name: &str) -> Result<&'static DatasetInfo> {
    DATASETS.iter().find(|d| d.name == name).ok_or_else(|| {
        let known: Vec<&str> = DATASETS.iter().map(|d| d.name).collect();
        dataset_error(name, format!("unknown dataset (known: {})", known.join(", ")))
    })
}

/// A help text: one line per dataset with its name, summary and expected files.
pub fn describe() -> String {
    DATASETS
        .iter()
        .map(|d| {
            let files = if d.files.is_empty() {
                "no files needed".to_string()
            } else {
                format!("files (raw or .gz): {}", d.files.join(", "))
            };
            format!("{:<14} {} — {files}\n", d.name, d.summary)
        })
        .collect()
}

/// The directory holding `info`'s files: `dir` itself or `dir/<subdir>`.
fn resolve_dir(info: &DatasetInfo, dir: Option<&Path>) -> Result<PathBuf> {
    let expected = || format!("expects a directory holding {} (each raw or .gz)", info.files.join(", "));
    let Some(dir) = dir else {
        return Err(dataset_error(info.name, format!("no data directory given; {}", expected())));
    };
    let holds = |d: &Path| info.files.iter().any(|f| has(d, f));
    if holds(dir) {
        return Ok(dir.to_path_buf());
    }
    let sub = dir.join(info.subdir);
    if holds(&sub) {
        return Ok(sub);
    }
    Err(dataset_error(dir, format!("no {} files here or in {}; {}", info.name, sub.display(), expected())))
}

/// Loads dataset `name` ([`DATASETS`]) with its standard train/test split.
///
/// `dir` is the directory holding the dataset's files, or a parent of it holding them in the
/// conventional sub-directory (`mnist/`, `fashion-mnist/`, `cifar10/`, `adult/`), so one data
/// root serves every set. `digits` is embedded and ignores `dir`. `seed` draws the split of
/// sets without an official one (`digits`); the others ignore it.
pub fn load(name: &str, dir: Option<&Path>, seed: u64) -> Result<TrainTest> {
    load_with_spec(name, dir, seed).map(|(data, _)| data)
}

/// [`load`], also returning the [`InputSpec`] a model trained on the data expects.
pub fn load_with_spec(name: &str, dir: Option<&Path>, seed: u64) -> Result<(TrainTest, InputSpec)> {
    let info = info(name)?;
    let spec =
        |sample_shape: Vec<usize>, raw_scale: f32, normalization: Normalization, features: Vec<String>| InputSpec {
            dataset: info.name.to_string(),
            sample_shape,
            class_names: info.class_names.iter().map(|s| s.to_string()).collect(),
            raw_scale,
            normalization,
            feature_names: features,
        };
    let image = |norm: Normalization, scale: f32| spec(info.sample_shape.to_vec(), scale, norm, Vec::new());
    Ok(match info.name {
        "digits" => (load_digits(seed)?, image(Normalization::digits(), 16.0)),
        "mnist" => (load_mnist(&resolve_dir(info, dir)?)?, image(Normalization::mnist(), 255.0)),
        "fashion-mnist" => {
            (load_fashion_mnist(&resolve_dir(info, dir)?)?, image(Normalization::fashion_mnist(), 255.0))
        }
        "cifar10" => {
            (load_cifar10(&resolve_dir(info, dir)?, CifarOptions::default())?, image(Normalization::cifar10(), 255.0))
        }
        "adult" => {
            let (data, encoder) = load_adult_with_encoder(&resolve_dir(info, dir)?)?;
            let s = spec(vec![encoder.num_features()], 1.0, encoder.normalization(), encoder.feature_names());
            (data, s)
        }
        other => return Err(dataset_error(other, "listed in DATASETS but has no loader (a bug)")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text, idx_u8};

    #[test]
    fn names_are_unique_and_described() {
        for (i, d) in DATASETS.iter().enumerate() {
            assert!(DATASETS[..i].iter().all(|o| o.name != d.name));
            assert!(describe().contains(d.name));
            assert_eq!(d.class_names.len(), if d.name == "adult" { 2 } else { 10 });
        }
        assert!(describe().contains("train-images-idx3-ubyte"));
    }

    #[test]
    fn errors_say_what_is_expected() -> TestResult {
        let err = err_text(load("imagenet", None, 0))?;
        assert!(err.contains("mnist, fashion-mnist, cifar10, adult, digits"), "{err}");
        let err = err_text(load("mnist", None, 0))?;
        assert!(err.contains("no data directory") && err.contains("t10k-labels-idx1-ubyte"), "{err}");
        let dir = tempfile::tempdir()?;
        let err = err_text(load("cifar10", Some(dir.path()), 0))?;
        assert!(err.contains("data_batch_1.bin") && err.contains("test_batch.bin"), "{err}");
        Ok(())
    }

    #[test]
    fn digits_need_no_directory_and_follow_the_seed() -> TestResult {
        let (tt, spec) = load_with_spec("digits", None, 3)?;
        assert_eq!((tt.train.len(), tt.test.len()), (1437, 360));
        assert_eq!(spec.raw_scale, 16.0);
        assert_eq!(spec.sample_shape, vec![1, 8, 8]);
        assert_eq!(load("digits", None, 3)?.test, tt.test);
        assert_ne!(load("digits", None, 4)?.test.labels, tt.test.labels);
        Ok(())
    }

    #[test]
    fn finds_files_in_the_conventional_subdirectory() -> TestResult {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("fashion-mnist");
        std::fs::create_dir(&dir)?;
        for (stem, n) in [("train", 3u32), ("t10k", 2)] {
            let size = n as usize * 784;
            std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), idx_u8(&[n, 28, 28], &vec![255; size]))?;
            std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), idx_u8(&[n], &vec![9; n as usize]))?;
        }
        let (tt, spec) = load_with_spec("fashion-mnist", Some(root.path()), 0)?;
        assert_eq!((tt.train.len(), tt.test.len()), (3, 2));
        assert_eq!(spec.class_names[9], "Ankle boot");
        assert_eq!(spec.normalization, Normalization::fashion_mnist());
        assert!((tt.train.features[0] - (1.0 - 0.2860) / 0.3530).abs() < 1e-6);
        assert_eq!(load("fashion-mnist", Some(&dir), 0)?.test, tt.test);
        Ok(())
    }
}
