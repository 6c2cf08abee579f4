//! `moat demo`: the main job on the embedded default, end to end, with no files to download.
//!
//! It trains a model on the embedded UCI digits set, shows its layer table, runs float and
//! fixed-point inference over the whole test set and checks the ONNX export round trip. Later
//! stages (secure inference, attacks and defences) extend it into moat's scorecard.

use std::path::PathBuf;

use anyhow::{Context, ensure};
use moat_nn::eval::{FixedVsFloat, fixed_vs_float};
use moat_nn::train::TrainConfig;
use moat_nn::zoo::Architecture;
use moat_nn::{FloatExecutor, QuantizedGraph};
use serde::Serialize;

use super::inspect::{layer_rows, render_layers};
use super::train::{Recipe, save, train_model};
use super::{DataArgs, FixedArgs};
use crate::report::{print_json, thousands};

/// Arguments of `moat demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the data split, initialisation and minibatch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Architecture to train (see `moat train --help`).
    #[arg(long, default_value = "mlp:128,64")]
    pub arch: String,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// Directory for the trained model and its card.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the demo found.
#[derive(Debug, Serialize)]
pub struct DemoSummary {
    /// Seed used throughout.
    pub seed: u64,
    /// Dataset.
    pub dataset: String,
    /// Training / test samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Architecture.
    pub architecture: String,
    /// Parameters.
    pub parameters: usize,
    /// Training seconds.
    pub train_seconds: f64,
    /// Train accuracy.
    pub train_accuracy: f64,
    /// Float vs fixed point over the test set.
    pub test: FixedVsFloat,
    /// The exported model.
    pub model: String,
    /// Whether the re-imported ONNX model reproduces the float outputs exactly.
    pub onnx_round_trip_exact: bool,
}

/// `moat demo`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    let data_args = DataArgs { dataset: "digits".into(), data_dir: None };
    let (data, spec) = data_args.load_with_spec(args.seed)?;
    say(format!(
        "[1/4] data: embedded UCI optical digits, {} train / {} test samples of shape {:?}, {} classes (seed {})",
        data.train.len(),
        data.test.len(),
        data.train.sample_shape,
        data.train.classes,
        args.seed
    ));

    let arch: Architecture = args.arch.parse()?;
    let mut config = TrainConfig::default_for(&arch);
    config.epochs = args.epochs;
    config.seed = args.seed;
    config.progress = !args.json;
    let recipe = Recipe { arch, config, fixed: args.fixed.fixed_point()? };
    say(format!("[2/4] training {} for {} epochs", recipe.arch, recipe.config.epochs));
    let trained = train_model(&recipe, &data, &spec, args.seed)?;
    let model_path = args.out.join(format!("{}.onnx", trained.card.name));
    save(&trained, &model_path)?;
    say(format!(
        "      {} parameters, {:.1} s, train accuracy {:.2} %, wrote {}",
        thousands(trained.card.parameters),
        trained.card.train_seconds,
        100.0 * trained.card.train_accuracy,
        model_path.display()
    ));

    say("[3/4] layers".into());
    if !args.json {
        print!("{}", render_layers(&layer_rows(&trained.graph)));
    }

    let quantized = QuantizedGraph::new(&trained.graph, recipe.fixed)?;
    let test = fixed_vs_float(&trained.graph, &quantized, &data.test)?;
    let reloaded = moat_nn::onnx::load_onnx(&model_path).context("re-importing the exported model")?;
    let mut exact = true;
    for i in 0..data.test.len() {
        let x = data.test.sample(i);
        exact &= FloatExecutor::run(&trained.graph, x)? == FloatExecutor::run(&reloaded, x)?;
    }
    ensure!(exact, "the re-imported ONNX model's outputs differ from the trained model's");
    say(format!(
        "[4/4] test set: float accuracy {:.2} %, fixed point (ℓ={}, f={}) accuracy {:.2} %, labels agree on {:.2} %, max |Δlogit| {:.5}; ONNX round trip exact",
        100.0 * test.float_accuracy,
        recipe.fixed.ring_bits(),
        recipe.fixed.frac_bits(),
        100.0 * test.fixed_accuracy,
        100.0 * test.label_agreement,
        test.max_logit_error
    ));
    let summary = DemoSummary {
        seed: args.seed,
        dataset: spec.dataset.clone(),
        train_samples: data.train.len(),
        test_samples: data.test.len(),
        architecture: recipe.arch.to_string(),
        parameters: trained.card.parameters,
        train_seconds: trained.card.train_seconds,
        train_accuracy: trained.card.train_accuracy,
        test,
        model: model_path.display().to_string(),
        onnx_round_trip_exact: exact,
    };
    if args.json {
        print_json(&summary)?;
    }
    Ok(())
}
