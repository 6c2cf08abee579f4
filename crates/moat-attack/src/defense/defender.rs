//! The server's defender `h`: an MLP `C → H₁ → ReLU → H₂ → ReLU → 1` whose output is a
//! membership logit (positive: "member") on a revealed probability vector — raw (what SIGuard
//! evaluates inside the protocol) or sorted in decreasing order (MemGuard's defender, blind to
//! which class is which).
//!
//! The server trains it on its own data: the model's probability vectors on its members
//! (label 1) against held-out samples it never trained on (label 0). The weights are the
//! server's secret — a client that knew `h` could undo the guard's choice — so a
//! [`DefenderFile`] is written owner-readable only (mode 0600 on Unix), marked `"secret": true`,
//! and neither its `Debug` nor any log prints the weights; its [`DefenderMeta`] is public.

use std::path::Path;

use moat_mpc::ring_ops::{DefenderShape, DefenderWeights};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{DefenseError, Result, invalid};

/// The value a file's `format` field holds.
pub const FORMAT: &str = "moat-defender";
/// The file format's version.
pub const VERSION: u32 = 1;

/// What the defender reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefenderInput {
    /// The probability vector as revealed (SIGuard's defender).
    Probabilities,
    /// The probabilities sorted in decreasing order (MemGuard's defender).
    Sorted,
}

impl std::str::FromStr for DefenderInput {
    type Err = DefenseError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "probabilities" | "raw" => Ok(Self::Probabilities),
            "sorted" => Ok(Self::Sorted),
            other => Err(invalid(format!("unknown defender input '{other}' (probabilities or sorted)"))),
        }
    }
}

impl DefenderInput {
    /// The defender's input for the probability vector `p`.
    pub fn features(self, p: &[f64]) -> Vec<f64> {
        let mut x = p.to_vec();
        if self == Self::Sorted {
            x.sort_by(|a, b| b.total_cmp(a));
        }
        x
    }

    /// For each entry of [`Self::features`], the index of `p` it came from.
    pub fn order(self, p: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..p.len()).collect();
        if self == Self::Sorted {
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        }
        order
    }
}

/// The public description of a trained defender.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefenderMeta {
    /// The model it guards (as given to `moat train-defender`).
    pub model: String,
    /// The dataset of the model's card.
    pub dataset: String,
    /// The shape (its `classes` is the model's).
    pub shape: DefenderShape,
    /// What it reads.
    pub input: DefenderInput,
    /// Member vectors it was trained on (the model's members).
    pub members: usize,
    /// Non-member vectors it was trained on: the first `non_members` samples of the test split
    /// (the server's held-out data, disjoint from the training split the attacks draw from).
    pub non_members: usize,
    /// Training epochs.
    pub epochs: usize,
    /// The fixed seed of the weights' initialisation and sample order, if one was asked
    /// (`--insecure-seed`); `None`: drawn from the operating system.
    pub insecure_seed: Option<u64>,
    /// Fraction of the training vectors it classifies right (sign of its output).
    pub train_accuracy: f64,
}

/// A trained defender as stored: public metadata and the secret weights.
#[derive(Clone, Serialize, Deserialize)]
pub struct DefenderFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Always `true`: the file holds the server's secret weights and must not be published.
    pub secret: bool,
    /// Public metadata.
    pub meta: DefenderMeta,
    /// The weights (secret).
    weights: DefenderWeights,
}

impl std::fmt::Debug for DefenderFile {
    // The weights are the server's secret: only the metadata is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefenderFile").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// What [`DefenderFile::train`] records beside the weights.
#[derive(Clone, Debug)]
pub struct TrainSpec {
    /// The model guarded.
    pub model: String,
    /// Its dataset.
    pub dataset: String,
    /// The two hidden widths.
    pub hidden: [usize; 2],
    /// What the defender reads.
    pub input: DefenderInput,
    /// Epochs.
    pub epochs: usize,
    /// The fixed seed used, to record (`None` when `rng` is seeded from the OS).
    pub insecure_seed: Option<u64>,
}

impl DefenderFile {
    /// Trains the defender on the model's probability vectors of `members` against those of
    /// `non_members` (the server's held-out data), by
    /// [`DefenderWeights::train`] on [`DefenderInput::features`]; `rng` draws the initial
    /// weights and the order.
    pub fn train(spec: TrainSpec, members: &[Vec<f64>], non_members: &[Vec<f64>], rng: &mut impl Rng) -> Result<Self> {
        let classes = members.first().map_or(0, Vec::len);
        if classes < 2 {
            return Err(invalid("a defender needs member vectors of at least 2 classes"));
        }
        let shape = DefenderShape { classes, hidden: spec.hidden };
        let feats = |set: &[Vec<f64>]| -> Vec<Vec<f32>> {
            set.iter().map(|p| spec.input.features(p).into_iter().map(|v| v as f32).collect()).collect()
        };
        let (m, n) = (feats(members), feats(non_members));
        let weights = DefenderWeights::train(shape, &m, &n, spec.epochs, rng)?;
        let right = m.iter().filter(|x| weights.output(x) > 0.0).count()
            + n.iter().filter(|x| weights.output(x) <= 0.0).count();
        let meta = DefenderMeta {
            model: spec.model,
            dataset: spec.dataset,
            shape,
            input: spec.input,
            members: m.len(),
            non_members: n.len(),
            epochs: spec.epochs,
            insecure_seed: spec.insecure_seed,
            train_accuracy: right as f64 / (m.len() + n.len()) as f64,
        };
        Ok(Self { format: FORMAT.into(), version: VERSION, secret: true, meta, weights })
    }

    /// The weights (the server's secret; for the guards).
    pub fn weights(&self) -> &DefenderWeights {
        &self.weights
    }

    /// `h` and its gradient with respect to the probability vector `p` (through the sort for
    /// a [`DefenderInput::Sorted`] defender), in f64.
    pub fn output_and_gradient(&self, p: &[f64]) -> (f64, Vec<f64>) {
        let order = self.meta.input.order(p);
        let x: Vec<f64> = order.iter().map(|&i| p[i]).collect();
        let (h, gx) = forward_backward(&self.weights, &x);
        let mut g = vec![0.0; p.len()];
        for (k, &i) in order.iter().enumerate() {
            g[i] = gx[k];
        }
        (h, g)
    }

    /// `h(p)` in f64.
    pub fn output(&self, p: &[f64]) -> f64 {
        self.output_and_gradient(p).0
    }

    /// Checks the layer sizes against the shape (a file may have been edited).
    pub fn validate(&self) -> Result<()> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(invalid(format!(
                "not a moat defender file of version {VERSION} (format '{}', version {})",
                self.format, self.version
            )));
        }
        let w = &self.weights;
        if w.shape != self.meta.shape {
            return Err(invalid("the weights' shape differs from the metadata's"));
        }
        for (l, (rows, cols)) in w.shape.layers().into_iter().enumerate() {
            if w.weights[l].len() != rows * cols || w.biases[l].len() != rows {
                return Err(invalid(format!("layer {} has the wrong number of weights", l + 1)));
            }
            if w.weights[l].iter().chain(&w.biases[l]).any(|v| !v.is_finite()) {
                return Err(invalid(format!("layer {} has a non-finite weight", l + 1)));
            }
        }
        Ok(())
    }

    /// Writes the file, readable by its owner only on Unix.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| DefenseError::Io { path: path.display().to_string(), source };
        let json = serde_json::to_vec_pretty(self)
            .map_err(|source| DefenseError::Format { path: path.display().to_string(), source })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        std::io::Write::write_all(&mut file, &json).map_err(io)?;
        Ok(())
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|source| DefenseError::Io { path: path.display().to_string(), source })?;
        let file: Self = serde_json::from_slice(&bytes)
            .map_err(|source| DefenseError::Format { path: path.display().to_string(), source })?;
        file.validate()?;
        Ok(file)
    }
}

/// `h(x)` and `∂h/∂x` by back-propagation through the three layers (f64).
fn forward_backward(w: &DefenderWeights, x: &[f64]) -> (f64, Vec<f64>) {
    let layers = w.shape.layers();
    let mut acts: Vec<Vec<f64>> = vec![x.to_vec()];
    for (l, &(rows, cols)) in layers.iter().enumerate() {
        let input = &acts[l];
        let out: Vec<f64> = (0..rows)
            .map(|r| {
                let row = &w.weights[l][r * cols..(r + 1) * cols];
                let v = f64::from(w.biases[l][r]) + row.iter().zip(input).map(|(a, b)| f64::from(*a) * b).sum::<f64>();
                if l < 2 { v.max(0.0) } else { v }
            })
            .collect();
        acts.push(out);
    }
    let h = acts[3].first().copied().unwrap_or(0.0);
    let mut delta = vec![1.0];
    for l in (0..3).rev() {
        let (rows, cols) = layers[l];
        let mut back = vec![0.0; cols];
        for (r, d) in delta.iter().enumerate().take(rows) {
            for (c, b) in back.iter_mut().enumerate() {
                *b += d * f64::from(w.weights[l][r * cols + c]);
            }
        }
        if l > 0 {
            back.iter_mut().zip(&acts[l]).for_each(|(g, a)| *g *= f64::from(u8::from(*a > 0.0)));
        }
        delta = back;
    }
    (h, delta)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Confident "member" vectors and flatter "non-member" ones over `classes` classes.
    pub(crate) fn synthetic(classes: usize, n: usize, rng: &mut ChaCha20Rng) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut vector = |peak: f64| -> Vec<f64> {
            let top = rng.random_range(0..classes);
            let rest = (1.0 - peak) / (classes - 1) as f64;
            (0..classes).map(|i| if i == top { peak } else { rest }).collect()
        };
        let members = (0..n).map(|i| vector(0.9 + 0.09 * (i as f64 / n as f64))).collect();
        let others = (0..n).map(|i| vector(0.45 + 0.35 * (i as f64 / n as f64))).collect();
        (members, others)
    }

    /// A defender with the member and non-member vectors it was trained on.
    pub(crate) type Trained = (DefenderFile, Vec<Vec<f64>>, Vec<Vec<f64>>);

    pub(crate) fn trained(input: DefenderInput, seed: u64) -> Result<Trained> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (m, n) = synthetic(4, 60, &mut rng);
        let spec = TrainSpec {
            model: "synthetic".into(),
            dataset: "synthetic".into(),
            hidden: [16, 8],
            input,
            epochs: 150,
            insecure_seed: Some(seed),
        };
        Ok((DefenderFile::train(spec, &m, &n, &mut rng)?, m, n))
    }

    #[test]
    fn the_gradient_matches_finite_differences_raw_and_sorted() -> Result<()> {
        for input in [DefenderInput::Probabilities, DefenderInput::Sorted] {
            let (d, _, _) = trained(input, 5)?;
            let p = [0.1, 0.55, 0.05, 0.3];
            let (_, g) = d.output_and_gradient(&p);
            for i in 0..4 {
                let mut q = p;
                q[i] += 1e-6;
                let numeric = (d.output(&q) - d.output(&p)) / 1e-6;
                assert!((numeric - g[i]).abs() < 1e-3 * (1.0 + g[i].abs()), "{input:?} {i}: {numeric} vs {}", g[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn a_file_round_trips_owner_only_and_debug_hides_the_weights() -> Result<()> {
        let (d, m, _) = trained(DefenderInput::Sorted, 6)?;
        assert!(d.meta.train_accuracy > 0.9, "{:?}", d.meta);
        let dir = std::env::temp_dir().join(format!("moat-defender-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| DefenseError::Io { path: "tmp".into(), source })?;
        let path = dir.join("defender.json");
        d.save(&path)?;
        let back = DefenderFile::load(&path)?;
        // JSON keeps f64 to its last bit only with serde_json's float_roundtrip, not enabled.
        assert!((back.meta.train_accuracy - d.meta.train_accuracy).abs() < 1e-12);
        assert_eq!((back.meta.shape, back.meta.input, back.meta.members), (d.meta.shape, d.meta.input, d.meta.members));
        assert_eq!(back.weights().weights, d.weights().weights);
        assert_eq!(back.output(&m[0]), d.output(&m[0]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).map_err(|source| DefenseError::Io { path: "meta".into(), source })?;
            assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        }
        let debug = format!("{d:?}");
        let first = d.weights().weights[0][0].to_string();
        assert!(debug.contains("meta") && !debug.contains("weights") && !debug.contains(&first), "{debug}");
        // A tampered file is refused.
        let mut json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).map_err(|source| DefenseError::Io { path: "r".into(), source })?,
        )
        .map_err(|source| DefenseError::Format { path: "r".into(), source })?;
        json["weights"]["biases"][2] = serde_json::json!([]);
        std::fs::write(&path, json.to_string()).map_err(|source| DefenseError::Io { path: "w".into(), source })?;
        assert!(matches!(DefenderFile::load(&path), Err(DefenseError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
