//! Input normalisation: what a model trained on a dataset expects to be fed.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::tensor::numel;

/// Per-channel normalisation `x ↦ (x − mean[c]) / std[c]`.
///
/// The channel of a value is its index along the sample's first dimension: `[C, H, W]` images
/// have `C` channels of `H·W` values each; a tabular sample of shape `[F]` has `F` channels of
/// one value each (so every feature has its own mean and std).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel (of the raw values, see [`InputSpec::raw_scale`]).
    pub mean: Vec<f32>,
    /// Standard deviation of each channel; all positive.
    pub std: Vec<f32>,
}

impl Normalization {
    /// A normalisation; `mean` and `std` must be non-empty, of equal length, finite, `std > 0`.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let ok = !mean.is_empty()
            && mean.len() == std.len()
            && mean.iter().all(|m| m.is_finite())
            && std.iter().all(|s| s.is_finite() && *s > 0.0);
        if !ok {
            return Err(NnError::Shape(format!("invalid normalisation: mean {mean:?}, std {std:?}")));
        }
        Ok(Self { mean, std })
    }

    /// The identity on `channels` channels (mean 0, std 1).
    pub fn identity(channels: usize) -> Self {
        Self { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalises `values` (one or more samples of `sample_shape`, concatenated) in place.
    pub fn normalize(&self, sample_shape: &[usize], values: &mut [f32]) -> Result<()> {
        self.for_each_channel(sample_shape, values, |x, mean, std| (x - mean) / std)
    }

    /// Undoes [`Normalization::normalize`] in place (up to float rounding).
    pub fn denormalize(&self, sample_shape: &[usize], values: &mut [f32]) -> Result<()> {
        self.for_each_channel(sample_shape, values, |x, mean, std| x * std + mean)
    }

    /// For each channel, a table mapping a byte `b` to `normalize(b / scale)`: turns 8-bit
    /// pixels into normalised floats with one lookup each.
    pub(crate) fn byte_tables(&self, scale: f32) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&mean, &std)| std::array::from_fn(|b| (b as f32 / scale - mean) / std))
            .collect()
    }

    fn for_each_channel(
        &self,
        sample_shape: &[usize],
        values: &mut [f32],
        f: impl Fn(f32, f32, f32) -> f32,
    ) -> Result<()> {
        let per_sample = numel(sample_shape);
        let channels = sample_shape.first().copied().unwrap_or(1);
        if channels != self.channels() || per_sample == 0 || !values.len().is_multiple_of(per_sample) {
            return Err(NnError::Shape(format!(
                "normalisation over {} channels cannot apply to {} values of samples of shape {sample_shape:?}",
                self.channels(),
                values.len()
            )));
        }
        let plane = per_sample / channels;
        for sample in values.chunks_exact_mut(per_sample) {
            for (c, block) in sample.chunks_exact_mut(plane).enumerate() {
                let (mean, std) = (self.mean[c], self.std[c]);
                block.iter_mut().for_each(|x| *x = f(*x, mean, std));
            }
        }
        Ok(())
    }
}

/// What a model trained on a dataset expects as input, for model cards and clients: take the
/// raw sample (8-bit pixels, digit intensities 0–16, or tabular values), divide by
/// `raw_scale`, then apply `normalization`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Dataset name as accepted by [`crate::data::load`], e.g. `cifar10`.
    pub dataset: String,
    /// Per-sample shape, e.g. `[3, 32, 32]`.
    pub sample_shape: Vec<usize>,
    /// Name of each class, indexed by label.
    pub class_names: Vec<String>,
    /// Raw values are divided by this first: 255 for 8-bit images, 16 for `digits`, 1 for `adult`.
    pub raw_scale: f32,
    /// Normalisation applied after scaling.
    pub normalization: Normalization,
    /// Name of each feature for tabular data (`age`, `workclass=Private`, …); empty for images.
    pub feature_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_per_channel_and_inverts() -> Result<()> {
        let n = Normalization::new(vec![0.5, 1.0], vec![0.25, 2.0])?;
        // Two samples of shape [2, 1, 2].
        let original = vec![0.5, 1.0, 1.0, 3.0, 0.0, 0.25, 5.0, -1.0];
        let mut v = original.clone();
        n.normalize(&[2, 1, 2], &mut v)?;
        assert_eq!(v, vec![0.0, 2.0, 0.0, 1.0, -2.0, -1.0, 2.0, -1.0]);
        n.denormalize(&[2, 1, 2], &mut v)?;
        assert_eq!(v, original);
        assert!(n.normalize(&[3, 1, 2], &mut v).is_err());
        assert!(n.normalize(&[2, 1, 3], &mut v).is_err());
        Ok(())
    }

    #[test]
    fn byte_tables_agree_with_normalize() -> Result<()> {
        let n = Normalization::new(vec![0.1307], vec![0.3081])?;
        let tables = n.byte_tables(255.0);
        let mut per_value = (0..=255).map(|b| b as f32 / 255.0).collect::<Vec<_>>();
        n.normalize(&[1, 256], &mut per_value)?;
        assert_eq!(tables[0].to_vec(), per_value);
        Ok(())
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Normalization::new(vec![], vec![]).is_err());
        assert!(Normalization::new(vec![0.0], vec![0.0]).is_err());
        assert!(Normalization::new(vec![0.0, 1.0], vec![1.0]).is_err());
        assert!(Normalization::new(vec![f32::NAN], vec![1.0]).is_err());
    }
}
