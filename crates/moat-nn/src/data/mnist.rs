//! MNIST and Fashion-MNIST from a directory of idx files (raw or `.gz`).
//!
//! Both sets use the same file names ([`MNIST_FILES`]): 60,000 training and 10,000 test images
//! of 28×28 8-bit grey levels and one label byte each. Samples have shape `[1, 28, 28]`: pixels
//! are scaled to [0, 1] and then normalised with the set's usual mean and std
//! ([`Normalization::mnist`], [`Normalization::fashion_mnist`]).

use std::path::Path;

use crate::data::idx::IdxArray;
use crate::data::io::{dataset_error, find};
use crate::data::{Dataset, Normalization, TrainTest};
use crate::error::Result;

/// The idx files both MNIST and Fashion-MNIST loaders read, each raw or with a `.gz` suffix.
pub const MNIST_FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// Per-sample shape of both sets.
pub const MNIST_SHAPE: [usize; 3] = [1, 28, 28];

/// Mean of MNIST training pixels scaled to [0, 1].
pub const MNIST_MEAN: f32 = 0.1307;
/// Std of MNIST training pixels scaled to [0, 1].
pub const MNIST_STD: f32 = 0.3081;
/// Mean of Fashion-MNIST training pixels scaled to [0, 1].
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Std of Fashion-MNIST training pixels scaled to [0, 1].
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// MNIST class names (the digits).
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

impl Normalization {
    /// MNIST's usual normalisation (mean 0.1307, std 0.3081 of pixels in [0, 1]).
    pub fn mnist() -> Self {
        Self { mean: vec![MNIST_MEAN], std: vec![MNIST_STD] }
    }

    /// Fashion-MNIST's usual normalisation (mean 0.2860, std 0.3530 of pixels in [0, 1]).
    pub fn fashion_mnist() -> Self {
        Self { mean: vec![FASHION_MNIST_MEAN], std: vec![FASHION_MNIST_STD] }
    }
}

/// Loads MNIST (`mnist-train`, `mnist-test`) from `dir`.
pub fn load_mnist(dir: &Path) -> Result<TrainTest> {
    load_idx_set(dir, "mnist", &Normalization::mnist())
}

/// Loads Fashion-MNIST (`fashion-mnist-train`, `fashion-mnist-test`) from `dir`.
pub fn load_fashion_mnist(dir: &Path) -> Result<TrainTest> {
    load_idx_set(dir, "fashion-mnist", &Normalization::fashion_mnist())
}

fn load_idx_set(dir: &Path, name: &str, norm: &Normalization) -> Result<TrainTest> {
    let [train_images, train_labels, test_images, test_labels] = MNIST_FILES;
    let train = load_split(dir, &format!("{name}-train"), train_images, train_labels, norm)?;
    let test = load_split(dir, &format!("{name}-test"), test_images, test_labels, norm)?;
    tracing::debug!(dataset = name, train = train.len(), test = test.len(), "loaded idx dataset");
    Ok(TrainTest { train, test })
}

/// One split: an idx3 image file and the idx1 label file that goes with it.
fn load_split(dir: &Path, name: &str, images_file: &str, labels_file: &str, norm: &Normalization) -> Result<Dataset> {
    let images_path = find(dir, images_file)?;
    let labels_path = find(dir, labels_file)?;
    let images = IdxArray::read(&images_path)?;
    let labels = IdxArray::read(&labels_path)?;
    let [n, h, w] = match images.dims() {
        &[n, h, w] => [n, h, w],
        dims => return Err(dataset_error(&images_path, format!("expected 3 dimensions (n, 28, 28), found {dims:?}"))),
    };
    if [1, h, w] != MNIST_SHAPE {
        return Err(dataset_error(&images_path, format!("images are {h}x{w}, expected 28x28")));
    }
    if labels.dims() != [n] {
        return Err(dataset_error(
            &labels_path,
            format!("expected {n} labels to match {}, found dimensions {:?}", images_path.display(), labels.dims()),
        ));
    }
    if let Some((i, l)) = labels.data().iter().enumerate().find(|&(_, &l)| l >= 10) {
        return Err(dataset_error(&labels_path, format!("label {l} of sample {i} is outside 0..10")));
    }
    let table = &norm.byte_tables(255.0)[0];
    let features: Vec<f32> = images.data().iter().map(|&b| table[b as usize]).collect();
    let labels: Vec<u16> = labels.data().iter().map(|&l| u16::from(l)).collect();
    Dataset::new(name, MNIST_SHAPE.to_vec(), 10, features, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TestResult, err_text, gzip, idx_u8};

    /// Writes a tiny MNIST-format set: `n` train and `m` test images whose pixel `k` of image
    /// `i` is `(i + k) % 256`, labels `i % 10`.
    fn write_set(dir: &Path, n: u32, m: u32, gz: bool) -> TestResult {
        for (stem, count) in [("train", n), ("t10k", m)] {
            let pixels: Vec<u8> = (0..count as usize * 784).map(|j| ((j / 784 + j % 784) % 256) as u8).collect();
            let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
            let files = [
                (format!("{stem}-images-idx3-ubyte"), idx_u8(&[count, 28, 28], &pixels)),
                (format!("{stem}-labels-idx1-ubyte"), idx_u8(&[count], &labels)),
            ];
            for (file, bytes) in files {
                if gz {
                    std::fs::write(dir.join(format!("{file}.gz")), gzip(&bytes)?)?;
                } else {
                    std::fs::write(dir.join(file), bytes)?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn loads_raw_and_gzipped_sets() -> TestResult {
        for gz in [false, true] {
            let dir = tempfile::tempdir()?;
            write_set(dir.path(), 12, 5, gz)?;
            let tt = load_mnist(dir.path())?;
            assert_eq!((tt.train.len(), tt.test.len()), (12, 5));
            assert_eq!(tt.train.sample_shape, vec![1, 28, 28]);
            assert_eq!(tt.train.name, "mnist-train");
            assert_eq!(tt.test.labels, vec![0, 1, 2, 3, 4]);
            // Image 3, pixel 10 has raw value 13.
            let expect = (13.0 / 255.0 - MNIST_MEAN) / MNIST_STD;
            assert!((tt.train.sample(3)[10] - expect).abs() < 1e-6);
            let fashion = load_fashion_mnist(dir.path())?;
            let expect = (13.0 / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD;
            assert!((fashion.train.sample(3)[10] - expect).abs() < 1e-6);
            assert_eq!(fashion.test.name, "fashion-mnist-test");
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_bad_file() -> TestResult {
        let dir = tempfile::tempdir()?;
        write_set(dir.path(), 4, 3, false)?;
        let labels = dir.path().join("train-labels-idx1-ubyte");
        let images = dir.path().join("train-images-idx3-ubyte");

        // Label out of range.
        std::fs::write(&labels, idx_u8(&[4], &[0, 1, 10, 3]))?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-labels-idx1-ubyte") && err.contains("label 10 of sample 2"), "{err}");

        // Label count differs from image count.
        std::fs::write(&labels, idx_u8(&[3], &[0, 1, 2]))?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-labels-idx1-ubyte") && err.contains("expected 4 labels"), "{err}");
        std::fs::write(&labels, idx_u8(&[4], &[0, 1, 2, 3]))?;

        // Truncated image file.
        let full = idx_u8(&[4, 28, 28], &vec![7; 4 * 784]);
        std::fs::write(&images, &full[..full.len() - 100])?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");

        // Wrong magic (labels in the image file's place).
        std::fs::write(&images, idx_u8(&[4], &[0, 1, 2, 3]))?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("expected 3 dimensions"), "{err}");
        std::fs::write(&images, b"garbage that is not an idx file")?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("magic"), "{err}");

        // Wrong image size.
        std::fs::write(&images, idx_u8(&[4, 32, 32], &vec![0; 4 * 1024]))?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("32x32"), "{err}");

        // Missing file.
        std::fs::remove_file(&images)?;
        let err = err_text(load_mnist(dir.path()))?;
        assert!(err.contains("train-images-idx3-ubyte or train-images-idx3-ubyte.gz"), "{err}");
        Ok(())
    }
}
