//! `moat demo`: the main job on the embedded default, end to end, with no files to download.
//!
//! It trains a model on the embedded UCI digits set, shows its layer table, runs float and
//! fixed-point inference over the whole test set and checks the ONNX export round trip. Then
//! the scorecard:
//! - two-party secure inference of test samples: a server and a client over loopback TCP, the
//!   full protocol (BFV, OT), labels checked against the fixed-point executor;
//! - SEEK, a malicious client extracting the whole model from label-only answers;
//! - the same attack against a server that adds hardening noise, with its accuracy cost.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use moat_attack::SimulatedTamperOracle;
use moat_attack::oracle::public_architecture;
use moat_attack::seek::evaluate::{Scores, extracted_graph, score};
use moat_attack::seek::{Seek, SeekConfig};
use moat_mpc::engine::{ClientSession, Hardening, Honest, Reveal, ServerModel, SimulatedEngine};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};
use moat_nn::data::Dataset;
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
    /// Seed of the data split, initialisation and minibatch order (default: drawn from the OS
    /// and printed).
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry, recorded in the
    /// output).
    #[arg(skip)]
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
    /// Test samples to run through the two-party protocol.
    #[arg(long, default_value_t = 40)]
    pub secure_samples: usize,
    /// Hardening noise (real units) of the server in the last stage.
    #[arg(long, default_value_t = 0.02)]
    pub harden: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Two-party secure inference on test samples.
#[derive(Debug, Serialize)]
pub struct SecureSummary {
    /// Samples run.
    pub samples: usize,
    /// Labels equal to the fixed-point executor's.
    pub agree_with_fixed_point: usize,
    /// Accuracy of the secure labels.
    pub accuracy: f64,
    /// Seconds per inference (session setup excluded).
    pub seconds_per_inference: f64,
    /// Bytes both ways per inference.
    pub bytes_per_inference: f64,
    /// Session setup (base OTs, HE key) in seconds.
    pub setup_seconds: f64,
}

/// SEEK against the plain and the hardened server.
#[derive(Debug, Serialize)]
pub struct SeekSummary {
    /// Parameters extracted.
    pub parameters: usize,
    /// Queries per parameter.
    pub queries_per_parameter: f64,
    /// Mean relative error against the deployed weights.
    pub mean_relative_error: f64,
    /// Fraction of parameters recovered bit for bit.
    pub exact_fraction: f64,
    /// Label agreement of the extracted model with the victim on the test set.
    pub fidelity: f64,
    /// Hardening amplitude of the second run.
    pub harden: f64,
    /// Test accuracy of the hardened server (fixed point + noise).
    pub hardened_accuracy: f64,
    /// The attack against the hardened server: parameters extracted / failed, mean relative
    /// error, fraction exact, fidelity of what it extracted.
    pub hardened_parameters: usize,
    /// Parameters the attack could not extract from the hardened server.
    pub hardened_failed: usize,
    /// Mean relative error against the hardened server.
    pub hardened_mean_relative_error: f64,
    /// Fraction exact against the hardened server.
    pub hardened_exact_fraction: f64,
    /// Fidelity of the model extracted from the hardened server.
    pub hardened_fidelity: f64,
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
    /// Two-party secure inference.
    pub secure: SecureSummary,
    /// SEEK and the hardening against it.
    pub seek: SeekSummary,
}

/// `moat demo`.
pub fn run(mut args: Args) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    let data_args = DataArgs { dataset: "digits".into(), data_dir: None };
    let (data, spec) = data_args.load_with_spec(args.seed)?;
    say(format!(
        "[1/7] data: embedded UCI optical digits, {} train / {} test samples of shape {:?}, {} classes (seed {})",
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
    say(format!("[2/7] training {} for {} epochs", recipe.arch, recipe.config.epochs));
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

    say("[3/7] layers".into());
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
        "[4/7] test set: float accuracy {:.2} %, fixed point (ℓ={}, f={}) accuracy {:.2} %, labels agree on {:.2} %, max |Δlogit| {:.5}; ONNX round trip exact",
        100.0 * test.float_accuracy,
        recipe.fixed.ring_bits(),
        recipe.fixed.frac_bits(),
        100.0 * test.fixed_accuracy,
        100.0 * test.label_agreement,
        test.max_logit_error
    ));
    let quantized = Arc::new(quantized);
    say(format!(
        "[5/7] two-party secure inference (BFV linear layers, OT-based ReLU and argmax) of {} test samples over loopback TCP",
        args.secure_samples.min(data.test.len())
    ));
    let secure = secure_inference(&quantized, &data.test, args.secure_samples)?;
    say(format!(
        "      {}/{} labels equal to the fixed-point executor, accuracy {:.2} %, {:.1} ms and {:.0} KiB per inference (setup {:.2} s)",
        secure.agree_with_fixed_point,
        secure.samples,
        100.0 * secure.accuracy,
        1e3 * secure.seconds_per_inference,
        secure.bytes_per_inference / 1024.0,
        secure.setup_seconds
    ));
    say("[6/7] SEEK: a malicious client offsets its shares and extracts every parameter from label-only answers".into());
    let seek = seek_scorecard(&quantized, &data.test, args.seed, args.harden, &say)?;
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
        secure,
        seek,
    };
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "\nnext: the scorecard of every attack against every defense (SEEK, membership inference, PSML, Fusion) \
             on the same embedded data: `moat eval --quick` (about 30 s) writes out/eval/report.html"
        );
    }
    Ok(())
}

/// Runs `samples` test images through the real two-party protocol, server and client on two
/// threads over a loopback TCP connection. Both parties' session seeds come from the OS (the
/// answers and costs do not depend on them).
fn secure_inference(model: &Arc<QuantizedGraph>, test: &Dataset, samples: usize) -> anyhow::Result<SecureSummary> {
    let n = samples.min(test.len());
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    let addr = listener.local_addr()?;
    let config = ChannelConfig { timeout: Duration::from_secs(60), ..ChannelConfig::default() };
    let server = ServerModel::new(Arc::clone(model), 4096)?;
    let server_seed = moat_mpc::Seed::from_os()?;
    let server_thread = std::thread::spawn(move || -> moat_mpc::Result<u64> {
        let mut ch = TcpChannel::accept(&listener, config)?;
        server.serve(&mut ch, server_seed)
    });
    let mut ch = TcpChannel::connect(addr, config)?;
    let started = Instant::now();
    let mut client = ClientSession::connect(&mut ch, moat_mpc::Seed::from_os()?)?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let setup_bytes = ch.stats().total().bytes_total();
    let started = Instant::now();
    let (mut agree, mut right) = (0, 0);
    for i in 0..n {
        let x = test.sample(i);
        let label = client.infer(&mut ch, x, Reveal::Label, &mut Honest)?.label(model.fixed());
        agree += usize::from(label == Some(model.predict(x)?));
        right += usize::from(label == Some(test.label(i)));
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = ch.stats().total().bytes_total() - setup_bytes;
    client.close(&mut ch)?;
    let served = server_thread.join().map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    ensure!(served as usize == n, "the server answered {served} of {n} queries");
    Ok(SecureSummary {
        samples: n,
        agree_with_fixed_point: agree,
        accuracy: right as f64 / n.max(1) as f64,
        seconds_per_inference: seconds / n.max(1) as f64,
        bytes_per_inference: bytes as f64 / n.max(1) as f64,
        setup_seconds,
    })
}

/// SEEK against the simulated engine, plain and hardened, scored against the victim.
fn seek_scorecard(
    model: &Arc<QuantizedGraph>,
    test: &Dataset,
    seed: u64,
    harden: f64,
    say: &dyn Fn(String),
) -> anyhow::Result<SeekSummary> {
    let public = public_architecture(model)?;
    let fidelity = |graph: &moat_nn::Graph| -> anyhow::Result<f64> {
        Ok(moat_attack::seek::evaluate::copy_quality(model, graph, test, test.len())?.fidelity)
    };
    let attack = |hardening: Hardening| -> anyhow::Result<(Scores, f64)> {
        let mut oracle = SimulatedTamperOracle::new(Arc::clone(model), seed, hardening)?;
        let extraction = Seek::new(&mut oracle, SeekConfig { seed, ..SeekConfig::default() })?.run()?;
        let scores = score(&extraction, model)?;
        let copy = extracted_graph(&extraction, &public)?;
        Ok((scores, fidelity(&copy)?))
    };
    let (plain, plain_fidelity) = attack(Hardening::NONE)?;
    say(format!(
        "      {} parameters, {:.1} queries each, mean relative error {:.1e} against the deployed weights ({:.1} % bit-exact); the copy agrees with the victim on {:.2} % of the test set",
        thousands(plain.total.parameters),
        plain.total.queries_per_parameter,
        plain.total.mean_relative_error_deployed,
        100.0 * plain.total.exact_fraction,
        100.0 * plain_fidelity
    ));
    let hardening = Hardening::uniform(harden);
    let mut engine = SimulatedEngine::new(Arc::clone(model), seed).with_hardening(hardening);
    let mut right = 0usize;
    for i in 0..test.len() {
        let label = engine.infer(test.sample(i), Reveal::Label, &mut Honest)?.label(model.fixed());
        right += usize::from(label == Some(test.label(i)));
    }
    let hardened_accuracy = right as f64 / test.len().max(1) as f64;
    let (hard, hard_fidelity) = attack(hardening)?;
    say(format!(
        "[7/7] hardened server (noise ±{harden} on its shares of every activation and logit): accuracy {:.2} %; the same attack now extracts {} parameters ({} fail), mean relative error {:.1e}, {:.1} % bit-exact, fidelity {:.2} %",
        100.0 * hardened_accuracy,
        thousands(hard.total.parameters),
        hard.total.failed,
        hard.total.mean_relative_error_deployed,
        100.0 * hard.total.exact_fraction,
        100.0 * hard_fidelity
    ));
    Ok(SeekSummary {
        parameters: plain.total.parameters,
        queries_per_parameter: plain.total.queries_per_parameter,
        mean_relative_error: plain.total.mean_relative_error_deployed,
        exact_fraction: plain.total.exact_fraction,
        fidelity: plain_fidelity,
        harden,
        hardened_accuracy,
        hardened_parameters: hard.total.parameters,
        hardened_failed: hard.total.failed,
        hardened_mean_relative_error: hard.total.mean_relative_error_deployed,
        hardened_exact_fraction: hard.total.exact_fraction,
        hardened_fidelity: hard_fidelity,
    })
}
