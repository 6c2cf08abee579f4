//! `moat train`: train a zoo architecture on a dataset, write the ONNX model and its card.

use std::path::{Path, PathBuf};

use anyhow::Context;
use moat_nn::card::{Members, ModelCard};
use moat_nn::data::{InputSpec, TrainTest};
use moat_nn::eval::fixed_vs_float;
use moat_nn::train::{Augment, Optimizer, TrainConfig, TrainReport, evaluate, train_with_test};
use moat_nn::zoo::{self, Architecture};
use moat_nn::{FixedPoint, Graph, QuantizedGraph};
use serde::Serialize;

use super::{DataArgs, FixedArgs};
use crate::report::{print_json, thousands};

/// Arguments of `moat train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture: mlp:H1,H2,…, lenet5[:xW], resnet20|32|44|56[:xW], resnet18[:xW].
    #[arg(long, default_value = "lenet5")]
    pub arch: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs (default: the architecture's preset).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Minibatch size (default: the preset).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimiser: adam or sgd (default: the preset).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Base learning rate (default: the preset).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Train on the first N training samples only: the model's members (recorded in the card
    /// with the split seed), e.g. a small member set for a leaky victim.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Augmentation: none or crop-flip (default: the preset). `none` with many epochs
    /// overfits on purpose (a victim for membership inference).
    #[arg(long)]
    pub augment: Option<String>,
    /// Evaluate on the first N test samples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed of initialisation, minibatch order and dataset splits; default: drawn from the OS
    /// and recorded in the model card and the summary line.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// Output model path (the card goes beside it as MODEL.card.json).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the card as JSON when done.
    #[arg(long)]
    pub json: bool,
}

/// A trained model and everything known about it.
pub struct Trained {
    /// The trained graph.
    pub graph: Graph,
    /// Its card.
    pub card: ModelCard,
    /// The training run.
    pub report: TrainReport,
}

/// Everything `train_model` needs beyond the data.
pub struct Recipe {
    /// Architecture.
    pub arch: Architecture,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Fixed-point setting to check the model at.
    pub fixed: FixedPoint,
}

/// Trains `recipe` on `data` and fills in the card (train/test accuracy, fixed-point accuracy).
pub fn train_model(recipe: &Recipe, data: &TrainTest, spec: &InputSpec, split_seed: u64) -> anyhow::Result<Trained> {
    let seed = recipe.config.seed;
    let initial = zoo::build(&recipe.arch, &data.train.sample_shape, data.train.classes, seed)?;
    let name = format!("{}-{}", recipe.arch.slug(), spec.dataset);
    let (graph, report) = train_with_test(&initial, &data.train, &data.test, &recipe.config).context("training")?;
    let graph = graph.with_name(name.clone());
    let members = data.train.take(recipe.config.max_train_samples.unwrap_or(usize::MAX));
    let train_accuracy = evaluate(&graph, &members)? as f64;
    let quantized = QuantizedGraph::new(&graph, recipe.fixed)?;
    let comparison = fixed_vs_float(&graph, &quantized, &data.test)?;
    let card = ModelCard {
        name,
        architecture: recipe.arch.to_string(),
        input: spec.clone(),
        classes: data.train.classes,
        parameters: graph.parameter_count(),
        epochs: recipe.config.epochs,
        seed,
        train_seconds: report.seconds_total,
        train_accuracy,
        test_accuracy: comparison.float_accuracy,
        members: Members { split_seed, count: members.len(), indices: None },
        fixed_point: recipe.fixed,
        fixed_test_accuracy: Some(comparison.fixed_accuracy),
        moat_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Ok(Trained { graph, card, report })
}

/// Writes the model and its card; returns the card path.
pub fn save(trained: &Trained, path: &Path) -> anyhow::Result<PathBuf> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    moat_nn::onnx::save_onnx(&trained.graph, path).with_context(|| format!("writing {}", path.display()))?;
    let card_path = ModelCard::path_for(path);
    trained.card.save(&card_path)?;
    Ok(card_path)
}

#[derive(Serialize)]
struct Output<'a> {
    model: String,
    card: &'a ModelCard,
    training: &'a TrainReport,
}

/// `moat train`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let arch: Architecture = args.arch.parse()?;
    let mut config = TrainConfig::default_for(&arch);
    config.seed = args.seed;
    config.progress = !args.quiet && !args.json;
    config.max_train_samples = args.train_limit;
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    if let Some(name) = &args.optimizer {
        config.optimizer = match name.as_str() {
            "adam" => Optimizer::Adam { lr: config.optimizer.learning_rate(), weight_decay: 0.0 },
            "sgd" => Optimizer::Sgd {
                lr: config.optimizer.learning_rate(),
                momentum: 0.9,
                weight_decay: 5e-4,
                nesterov: false,
            },
            other => anyhow::bail!("unknown optimizer '{other}' (adam or sgd)"),
        };
    }
    if let Some(lr) = args.lr {
        config.optimizer = match config.optimizer {
            Optimizer::Adam { weight_decay, .. } => Optimizer::Adam { lr, weight_decay },
            Optimizer::Sgd { momentum, weight_decay, nesterov, .. } => {
                Optimizer::Sgd { lr, momentum, weight_decay, nesterov }
            }
        };
    }
    if let Some(name) = &args.augment {
        config.augment = match name.as_str() {
            "none" => Augment::None,
            "crop-flip" => Augment::CropFlip,
            other => anyhow::bail!("unknown augmentation '{other}' (none or crop-flip)"),
        };
    }
    config.validate()?;
    let (mut data, spec) = args.data.load_with_spec(args.seed)?;
    if let Some(n) = args.test_limit {
        data.test = data.test.take(n);
    }
    let recipe = Recipe { arch, config, fixed: args.fixed.fixed_point()? };
    let trained = train_model(&recipe, &data, &spec, args.seed)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("models/{}.onnx", trained.card.name)));
    let card_path = save(&trained, &out)?;
    if args.json {
        return print_json(&Output {
            model: out.display().to_string(),
            card: &trained.card,
            training: &trained.report,
        });
    }
    let c = &trained.card;
    println!(
        "{}: {} parameters, {} epochs in {:.1} s (seed {})",
        c.name,
        thousands(c.parameters),
        c.epochs,
        c.train_seconds,
        c.seed
    );
    println!(
        "accuracy: train {:.2} % ({} samples), test {:.2} % float, {:.2} % fixed point (ℓ={}, f={})",
        100.0 * c.train_accuracy,
        c.members.count,
        100.0 * c.test_accuracy,
        100.0 * c.fixed_test_accuracy.unwrap_or(f64::NAN),
        c.fixed_point.ring_bits(),
        c.fixed_point.frac_bits()
    );
    println!("wrote {} and {}", out.display(), card_path.display());
    Ok(())
}
