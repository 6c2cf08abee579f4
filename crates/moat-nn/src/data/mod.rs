//! Datasets: labelled samples in a model's per-sample input shape, normalised as the model
//! expects them.
//!
//! Loaders read the standard on-disk formats from a directory path (MNIST/Fashion-MNIST idx,
//! CIFAR-10 binary, UCI Adult CSV) and an embedded default needs no files at all.
//!
//! | name | module | sample shape | needs |
//! |---|---|---|---|
//! | `mnist`, `fashion-mnist` | [`mnist`] | `[1, 28, 28]` | idx files (raw or `.gz`) |
//! | `cifar10` | [`cifar`] | `[3, 32, 32]` | binary batches (raw or `.gz`) |
//! | `adult` | [`adult`] | `[108]` | `adult.data`, `adult.test` |
//! | `digits` | [`digits`] | `[1, 8, 8]` | nothing (embedded) |
//!
//! [`load`] takes any of them by name; [`load_with_spec`] also says what input a model trained
//! on the data expects ([`InputSpec`]: scaling, per-channel [`Normalization`], class names).
//! [`split`] draws deterministic disjoint index pools (member / non-member / shadow).
//!
//! ```
//! let tt = moat_nn::data::load("digits", None, 0)?;
//! assert_eq!((tt.train.len(), tt.test.len()), (1437, 360));
//! assert_eq!(tt.train.sample(0).len(), 64);
//! # Ok::<(), moat_nn::NnError>(())
//! ```

pub mod adult;
pub mod cifar;
pub mod digits;
pub mod idx;
mod io;
pub mod mnist;
mod normalize;
pub mod npy;
mod registry;
pub mod split;
#[cfg(test)]
mod testutil;

pub use adult::{AdultEncoder, load_adult, load_adult_with_encoder};
pub use cifar::{CifarOptions, load_cifar10};
pub use digits::{load_digits, load_digits_all};
pub use mnist::{load_fashion_mnist, load_mnist};
pub use normalize::{InputSpec, Normalization};
pub use registry::{DATASETS, DatasetInfo, describe, info, load, load_with_spec};
pub use split::{MembershipSizes, MembershipSplit, Pools, Sampling, shuffle_indices, train_val_split};

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::tensor::numel;

/// A labelled dataset held in memory: `len()` samples of `sample_shape`, row-major, one after
/// the other in `features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Short name, e.g. `mnist-train`.
    pub name: String,
    /// Per-sample shape, e.g. `[1, 28, 28]` or `[108]`.
    pub sample_shape: Vec<usize>,
    /// Number of classes.
    pub classes: usize,
    /// All samples, normalised, concatenated.
    pub features: Vec<f32>,
    /// One label per sample, in `0..classes`.
    pub labels: Vec<u16>,
}

impl Dataset {
    /// Builds a dataset, checking that features and labels agree in count and range.
    pub fn new(
        name: impl Into<String>,
        sample_shape: Vec<usize>,
        classes: usize,
        features: Vec<f32>,
        labels: Vec<u16>,
    ) -> Result<Self> {
        let name = name.into();
        let per = numel(&sample_shape);
        let bad = |message: String| NnError::Dataset { path: name.clone(), message };
        if per == 0 || features.len() != per * labels.len() {
            return Err(bad(format!(
                "{} feature values for {} samples of shape {sample_shape:?}",
                features.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(bad(format!("label {l} outside 0..{classes}")));
        }
        Ok(Self { name, sample_shape, classes, features, labels })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        numel(&self.sample_shape)
    }

    /// The features of sample `i` (panics if `i >= len()`, like slice indexing).
    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.features[i * n..(i + 1) * n]
    }

    /// The label of sample `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    /// A new dataset of the samples at `indices` (in that order); indices out of range are an error.
    pub fn subset(&self, name: impl Into<String>, indices: &[usize]) -> Result<Dataset> {
        let n = self.sample_len();
        let mut features = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(NnError::Dataset {
                    path: self.name.clone(),
                    message: format!("index {i} out of range ({} samples)", self.len()),
                });
            }
            features.extend_from_slice(self.sample(i));
            labels.push(self.labels[i]);
        }
        Dataset::new(name, self.sample_shape.clone(), self.classes, features, labels)
    }

    /// The first `n` samples (all of them when `n >= len()`).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let per = self.sample_len();
        Dataset {
            name: self.name.clone(),
            sample_shape: self.sample_shape.clone(),
            classes: self.classes,
            features: self.features[..n * per].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// A train/test pair as published (or as split by seed for sets without an official split).
#[derive(Clone, Debug)]
pub struct TrainTest {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}
