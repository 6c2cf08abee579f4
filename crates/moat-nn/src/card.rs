//! Model cards: the small JSON file that travels beside every model moat trains.
//!
//! A card says what the model is (architecture, input, classes, the normalisation its inputs
//! need), how it was made (dataset, epochs, seed, time) and how good it is (train and test
//! accuracy). It also records how to reproduce the training set — the *members* — which
//! membership-inference experiments need: the seed and sizes of the split, not the indices
//! themselves unless asked.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::InputSpec;
use crate::error::{NnError, Result};
use crate::fixed::FixedPoint;

/// Which samples of a dataset a model was trained on: the first `count` samples of the
/// dataset's training split (for sets without an official split, the split drawn by
/// `split_seed`), or exactly `indices` when recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Members {
    /// Seed the train/test split was drawn with (it only matters for sets split by seed).
    pub split_seed: u64,
    /// How many training samples were used.
    pub count: usize,
    /// The indices into the dataset's official training set, when recorded explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<Vec<usize>>,
}

/// The JSON card of a trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model name.
    pub name: String,
    /// Zoo architecture (e.g. `lenet5`).
    pub architecture: String,
    /// What the model takes as input: dataset, shape, class names, scaling and normalisation.
    pub input: InputSpec,
    /// Number of classes.
    pub classes: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Seed of initialisation and minibatch order.
    pub seed: u64,
    /// Training wall time in seconds.
    pub train_seconds: f64,
    /// Top-1 accuracy on the training members.
    pub train_accuracy: f64,
    /// Top-1 accuracy on the test set.
    pub test_accuracy: f64,
    /// The training set.
    pub members: Members,
    /// Fixed-point setting the accuracies were checked at.
    #[serde(default)]
    pub fixed_point: FixedPoint,
    /// Fixed-point test accuracy at that setting.
    #[serde(default)]
    pub fixed_test_accuracy: Option<f64>,
    /// moat version that wrote the card.
    pub moat_version: String,
}

impl ModelCard {
    /// The card path that belongs to a model file: `model.onnx` → `model.card.json`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("card.json")
    }

    /// Writes the card as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| NnError::Graph(format!("card: {e}")))?;
        std::fs::write(path, json + "\n").map_err(|e| NnError::io(path, e))
    }

    /// Reads a card.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| NnError::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| NnError::Dataset { path: path.display().to_string(), message: format!("bad model card: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_round_trips_through_json() -> Result<()> {
        let card = ModelCard {
            name: "lenet5-mnist".into(),
            architecture: "lenet5".into(),
            input: crate::data::load_with_spec("digits", None, 0)?.1,
            classes: 10,
            parameters: 61_706,
            epochs: 3,
            seed: 7,
            train_seconds: 12.5,
            train_accuracy: 0.99,
            test_accuracy: 0.989,
            members: Members { split_seed: 7, count: 60_000, indices: None },
            fixed_point: FixedPoint::default(),
            fixed_test_accuracy: Some(0.989),
            moat_version: "0.1.0".into(),
        };
        let dir = std::env::temp_dir().join(format!("moat-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| NnError::io(&dir, e))?;
        let path = ModelCard::path_for(&dir.join("m.onnx"));
        assert!(path.ends_with("m.card.json"));
        card.save(&path)?;
        assert_eq!(ModelCard::load(&path)?, card);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
