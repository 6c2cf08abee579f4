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
