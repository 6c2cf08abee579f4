//! The embedded default: UCI optical-recognition handwritten digits (Alpaydin & Kaynak 1998,
//! the set scikit-learn ships as `load_digits`), 1,797 8×8 images of intensities 0–16 in 10
//! classes, compiled into the binary through the `smartcore` crate. Needs no files.
//!
//! Samples have shape `[1, 8, 8]`: intensities divided by 16, then normalised with the set's own
//! mean and std ([`DIGITS_MEAN`], [`DIGITS_STD`], over all 1,797 × 64 values). There is no
//! official split: [`load_digits`] draws a stratified 1,437 / 360 train/test split by seed.

use crate::data::split::{Pools, Sampling};
use crate::data::{Dataset, Normalization, TrainTest};
use crate::error::{NnError, Result};

/// Number of images.
pub const DIGITS_SAMPLES: usize = 1797;
/// Test-set size of [`load_digits`] (≈ 20 %); the other 1,437 images train.
pub const DIGITS_TEST_SAMPLES: usize = 360;
/// Per-sample shape.
pub const DIGITS_SHAPE: [usize; 3] = [1, 8, 8];
/// Mean of all intensities divided by 16.
pub const DIGITS_MEAN: f32 = 0.305_260_3;
/// Population std of all intensities divided by 16.
pub const DIGITS_STD: f32 = 0.376_049_22;
/// Class names (the digits).
pub const DIGITS_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

impl Normalization {
    /// The digits set's normalisation ([`DIGITS_MEAN`], [`DIGITS_STD`] of intensities / 16).
    pub fn digits() -> Self {
        Self { mean: vec![DIGITS_MEAN], std: vec![DIGITS_STD] }
    }
}

/// The raw embedded set: intensities 0–16 (`1797 × 64`, row-major 8×8 per image) and labels.
fn raw() -> Result<(Vec<f32>, Vec<u16>)> {
    let bad = |message: String| NnError::Dataset { path: "embedded digits".into(), message };
    let set = smartcore::dataset::digits::load_dataset();
    if set.num_samples != DIGITS_SAMPLES || set.num_features != 64 || set.data.len() != DIGITS_SAMPLES * 64 {
        return Err(bad(format!("unexpected size {} x {}", set.num_samples, set.num_features)));
    }
    if let Some(v) = set.data.iter().find(|v| !(0.0..=16.0).contains(*v)) {
        return Err(bad(format!("intensity {v} outside 0..=16")));
    }
    let labels =
        set.target
            .iter()
            .map(|&t| {
                if (0.0..10.0).contains(&t) && t.fract() == 0.0 { Ok(t as u16) } else { Err(bad(format!("label {t}"))) }
            })
            .collect::<Result<Vec<u16>>>()?;
    Ok((set.data, labels))
}

/// All 1,797 images, normalised, in the embedded order (`digits-all`).
pub fn load_digits_all() -> Result<Dataset> {
    let (mut features, labels) = raw()?;
    let norm = Normalization::digits();
    features.iter_mut().for_each(|v| *v = (*v / 16.0 - norm.mean[0]) / norm.std[0]);
    Dataset::new("digits-all", DIGITS_SHAPE.to_vec(), 10, features, labels)
}

/// The digits as `digits-train` (1,437) and `digits-test` (360), stratified by class and drawn
/// by `seed` (see [`Pools::draw`]).
pub fn load_digits(seed: u64) -> Result<TrainTest> {
    let all = load_digits_all()?;
    let pools = Pools::draw(
        &all.labels,
        &[("train", DIGITS_SAMPLES - DIGITS_TEST_SAMPLES), ("test", DIGITS_TEST_SAMPLES)],
        Sampling::Stratified,
        seed,
    )?;
    let pick = |name: &str| -> Result<Dataset> {
        let indices = pools.get(name).unwrap_or_default();
        all.subset(format!("digits-{name}"), indices)
    };
    Ok(TrainTest { train: pick("train")?, test: pick("test")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_the_embedded_data() -> Result<()> {
        let (values, labels) = raw()?;
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64 / 16.0).sum::<f64>() / n;
        let std = (values.iter().map(|&v| (v as f64 / 16.0 - mean).powi(2)).sum::<f64>() / n).sqrt();
        // The layout is row-major 8x8 per image, as scikit-learn's copy: image 0 is a zero
        // whose top two rows are these, and labels start 0, 1, 2, ….
        assert_eq!(&values[..16], &[0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0.]);
        assert_eq!(&labels[..12], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
        assert!((mean - DIGITS_MEAN as f64).abs() < 5e-6, "mean {mean}");
        assert!((std - DIGITS_STD as f64).abs() < 5e-6, "std {std}");
        assert_eq!(labels.len(), DIGITS_SAMPLES);
        Ok(())
    }

    #[test]
    fn normalised_set_has_zero_mean_unit_std_and_a_stratified_split() -> Result<()> {
        let all = load_digits_all()?;
        let n = all.features.len() as f64;
        let mean = all.features.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = all.features.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-5 && (var.sqrt() - 1.0).abs() < 1e-5, "mean {mean} var {var}");
        assert!((all.sample(0)[2] - (5.0 / 16.0 - DIGITS_MEAN) / DIGITS_STD).abs() < 1e-6);

        let tt = load_digits(11)?;
        assert_eq!((tt.train.len(), tt.test.len()), (1437, 360));
        let full = all.label_histogram();
        for (c, (&test, &total)) in tt.test.label_histogram().iter().zip(&full).enumerate() {
            let want = total as f64 * 360.0 / 1797.0;
            assert!((test as f64 - want).abs() <= 2.0, "class {c}: {test} of {total}");
        }
        let train_hist = tt.train.label_histogram();
        assert!(train_hist.iter().zip(tt.test.label_histogram()).zip(&full).all(|((a, b), c)| a + b == *c));
        Ok(())
    }
}
