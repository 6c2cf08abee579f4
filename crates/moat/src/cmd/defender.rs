//! `moat train-defender`: the server trains the defender `h` that SIGuard and MemGuard fool —
//! a membership classifier on its model's probability vectors, its members (label 1) against
//! held-out samples of the test split (label 0) — and writes it to a file marked secret.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use moat_attack::defense::defender::TrainSpec;
use moat_attack::defense::{DefenderFile, DefenderInput};
use moat_attack::victim::{FixedVictim, Victim};
use moat_nn::QuantizedGraph;
use moat_nn::card::ModelCard;
use moat_nn::data::Dataset;
use rand::SeedableRng;
use serde::Serialize;

use super::{DataArgs, FixedArgs, load_model};
use crate::report::print_json;

/// Arguments of `moat train-defender`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model to guard (ONNX).
    pub model: PathBuf,
    /// Its card (default: MODEL.card.json beside it), which names its members and dataset.
    #[arg(long)]
    pub card: Option<PathBuf>,
    /// Directory holding the dataset's files (not needed for `digits`).
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to write the defender (JSON, owner-readable only: it holds the server's secret
    /// weights).
    #[arg(long)]
    pub out: PathBuf,
    /// What the defender reads: `probabilities` (as revealed; SIGuard's, and usable by
    /// MemGuard) or `sorted` (the scores in decreasing order; MemGuard's defender).
    #[arg(long, default_value = "probabilities")]
    pub input: String,
    /// Members to train on (the model's first N members; default: all).
    #[arg(long)]
    pub members: Option<usize>,
    /// Held-out samples to train on: the first N of the test split (default: as many as the
    /// members, at most the test split).
    #[arg(long)]
    pub non_members: Option<usize>,
    /// Training epochs.
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Hidden widths (two).
    #[arg(long, value_delimiter = ',', default_value = "128,64")]
    pub hidden: Vec<usize>,
    /// A FIXED seed for the defender's initial weights and sample order, recorded in the file.
    /// Makes the secret weights reproducible by anyone who knows it: for tests only. Default:
    /// drawn from the operating system.
    #[arg(long)]
    pub insecure_seed: Option<u64>,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// Print the public metadata as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Written<'a> {
    path: String,
    meta: &'a moat_attack::defense::DefenderMeta,
}

/// The model's probability vectors (plaintext fixed point, f64 softmax) on `indices` of `set`.
fn vectors(victim: &mut FixedVictim, set: &Dataset, indices: &[usize]) -> anyhow::Result<Vec<Vec<f64>>> {
    let inputs: Vec<&[f32]> = indices.iter().map(|&i| set.sample(i)).collect();
    Ok(victim.probabilities(&inputs)?)
}

/// Trains a defender for `model` (with its card) and returns it; used by `moat eval` too.
pub fn train_defender(args: &Args) -> anyhow::Result<DefenderFile> {
    let input: DefenderInput = args.input.parse()?;
    let [h1, h2] = args.hidden[..] else { bail!("--hidden takes two widths, got {:?}", args.hidden) };
    if h1 == 0 || h2 == 0 || args.epochs == 0 {
        bail!("--hidden widths and --epochs must be positive");
    }
    let graph = load_model(&args.model)?;
    let card_path = args.card.clone().unwrap_or_else(|| ModelCard::path_for(&args.model));
    let card = ModelCard::load(&card_path)
        .with_context(|| format!("reading the model's card {} (it names the members)", card_path.display()))?;
    let data = DataArgs { dataset: card.input.dataset.clone(), data_dir: args.data_dir.clone() }
        .load(card.members.split_seed)?;
    let mut members = super::mia::member_indices(&card, data.train.len())?;
    if let Some(n) = args.members {
        members.truncate(n);
    }
    let non_n = args.non_members.unwrap_or(members.len()).min(data.test.len());
    if members.is_empty() || non_n == 0 {
        bail!("the defender needs members and held-out samples ({} and {non_n})", members.len());
    }
    let quantized = Arc::new(QuantizedGraph::new(&graph, args.fixed.fixed_point()?)?);
    let mut victim = FixedVictim::new(quantized, data.train.classes)?;
    let m = vectors(&mut victim, &data.train, &members)?;
    let n = vectors(&mut victim, &data.test, &(0..non_n).collect::<Vec<_>>())?;
    let mut rng = match args.insecure_seed {
        Some(seed) => rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        None => moat_mpc::Seed::from_os().map_err(|e| anyhow::anyhow!("no OS entropy for the defender: {e}"))?.rng(),
    };
    let spec = TrainSpec {
        model: args.model.display().to_string(),
        dataset: card.input.dataset.clone(),
        hidden: [h1, h2],
        input,
        epochs: args.epochs,
        insecure_seed: args.insecure_seed,
    };
    Ok(DefenderFile::train(spec, &m, &n, &mut rng)?)
}

/// `moat train-defender`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let defender = train_defender(&args)?;
    defender.save(&args.out).with_context(|| format!("writing the defender {}", args.out.display()))?;
    let meta = &defender.meta;
    if args.json {
        return print_json(&Written { path: args.out.display().to_string(), meta });
    }
    println!(
        "defender {:?} on {} ({} → {} → {} → 1): {} members vs {} held-out test samples, {} epochs, train accuracy {:.1} %",
        meta.input,
        meta.model,
        meta.shape.classes,
        meta.shape.hidden[0],
        meta.shape.hidden[1],
        meta.members,
        meta.non_members,
        meta.epochs,
        100.0 * meta.train_accuracy
    );
    println!("wrote {} (secret: the server's weights, owner-readable only)", args.out.display());
    Ok(())
}
