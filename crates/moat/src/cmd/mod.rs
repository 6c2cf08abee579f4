//! One module per subcommand, plus the argument groups they share.

pub mod attack;
pub mod audit;
pub mod bench;
pub mod bench_http;
pub mod defender;
pub mod demo;
pub mod eval;
pub mod fusion;
pub mod infer;
pub mod inspect;
pub mod mia;
pub mod psml;
pub mod psml_plot;
pub mod secure;
pub mod serve;
pub mod train;

use std::path::{Path, PathBuf};

use anyhow::Context;
use moat_mpc::ring_ops::{SiGuardConfig, Softmax};
use moat_nn::data::{self, InputSpec, TrainTest};
use moat_nn::{FixedPoint, Graph};

/// Fixed-point setting shared by every command that runs fixed-point or secure inference.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct FixedArgs {
    /// Ring bit-width ℓ (values live in Z_2^ℓ).
    #[arg(long, default_value_t = 37)]
    pub ring_bits: u32,
    /// Fractional bits f of the fixed-point encoding.
    #[arg(long, default_value_t = 12)]
    pub frac_bits: u32,
}

impl FixedArgs {
    /// The validated setting.
    pub fn fixed_point(&self) -> anyhow::Result<FixedPoint> {
        Ok(FixedPoint::new(self.ring_bits, self.frac_bits)?)
    }
}

/// SIGuard's parameters, as `moat secure server --defender`, `moat bench secure --guard
/// siguard` and `moat attack mia --guard siguard` take them (the secure softmax is each
/// command's own `--softmax` option).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct SiGuardArgs {
    /// SIGuard's rounds and steps per round (the paper: 6,49).
    #[arg(long, value_delimiter = ',', default_value = "6,49")]
    pub siguard_steps: Vec<u32>,
    /// SIGuard applies the defender term g₁ only (the public prototype's behaviour) instead of
    /// the full objective.
    #[arg(long)]
    pub siguard_g1_only: bool,
    /// SIGuard's initial distortion weight c₃ (the paper: 0.1; ×10 after each validated round,
    /// at most 10; 0 leaves the noise unpenalised).
    #[arg(long, default_value_t = SiGuardConfig::default().c3)]
    pub siguard_c3: f64,
    /// SIGuard's initial step length (the paper: 0.2; ×1.1 after each rejected round).
    #[arg(long, default_value_t = SiGuardConfig::default().lr)]
    pub siguard_lr: f64,
}

impl Default for SiGuardArgs {
    /// The command line's defaults: the paper's parameters.
    fn default() -> Self {
        let c = SiGuardConfig::default();
        Self { siguard_steps: vec![c.outer, c.inner], siguard_g1_only: c.g1_only, siguard_c3: c.c3, siguard_lr: c.lr }
    }
}

impl SiGuardArgs {
    /// The configuration with the secure softmax `softmax` (checked by `SiGuard::new`).
    pub fn config(&self, softmax: Softmax) -> anyhow::Result<SiGuardConfig> {
        let [outer, inner] = self.siguard_steps[..] else {
            anyhow::bail!("--siguard-steps takes OUTER,INNER, got {:?}", self.siguard_steps);
        };
        Ok(SiGuardConfig {
            outer,
            inner,
            g1_only: self.siguard_g1_only,
            c3: self.siguard_c3,
            lr: self.siguard_lr,
            softmax,
            ..SiGuardConfig::default()
        })
    }

    /// The same options on another command line (a `moat secure server` child).
    pub fn to_args(&self) -> Vec<String> {
        let steps: Vec<String> = self.siguard_steps.iter().map(u32::to_string).collect();
        let mut args = vec![
            "--siguard-steps".to_string(),
            steps.join(","),
            "--siguard-c3".into(),
            self.siguard_c3.to_string(),
            "--siguard-lr".into(),
            self.siguard_lr.to_string(),
        ];
        if self.siguard_g1_only {
            args.push("--siguard-g1-only".into());
        }
        args
    }
}

/// Where a dataset comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset: digits (embedded, no files), mnist, fashion-mnist, cifar10, adult.
    #[arg(long, default_value = "digits")]
    pub dataset: String,
    /// Directory holding the dataset's files, or a parent with one folder per dataset
    /// (e.g. ../shared/data). Not needed for `digits`.
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    /// Loads the train/test pair; `seed` decides splits of sets without an official one.
    pub fn load(&self, seed: u64) -> anyhow::Result<TrainTest> {
        Ok(self.load_with_spec(seed)?.0)
    }

    /// [`Self::load`] with the input specification models trained on it expect.
    pub fn load_with_spec(&self, seed: u64) -> anyhow::Result<(TrainTest, InputSpec)> {
        data::load_with_spec(&self.dataset, self.data_dir.as_deref(), seed)
            .with_context(|| format!("loading dataset '{}'", self.dataset))
    }
}

/// Loads an ONNX model.
pub fn load_model(path: &Path) -> anyhow::Result<Graph> {
    moat_nn::onnx::load_onnx(path).with_context(|| format!("loading model {}", path.display()))
}

/// The seed of an experiment: `given`, or one drawn from the operating system when the user
/// gave none (so no randomness of a run comes from a fixed default). Commands record the seed
/// they used in their output, so a run can be repeated with `--seed`.
pub fn experiment_seed(given: Option<u64>) -> anyhow::Result<u64> {
    use rand::RngCore;
    match given {
        Some(seed) => Ok(seed),
        None => Ok(moat_mpc::Seed::from_os()
            .map_err(|e| anyhow::anyhow!("no OS entropy for the experiment seed: {e}"))?
            .rng()
            .next_u64()),
    }
}
