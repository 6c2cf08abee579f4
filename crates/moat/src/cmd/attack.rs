//! `moat attack seek`: SEEK label-only extraction by share tampering, against the simulated
//! two-party engine or a real `moat secure server`, scored against the true weights.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use moat_attack::seek::evaluate::{Scores, copy_quality, extracted_graph, score};
use moat_attack::seek::{Extraction, Sampling, Seek, SeekConfig};
use moat_attack::{AttackError, Oracle, ServiceTamperOracle, SessionTamperOracle, SimulatedTamperOracle};
use moat_client::{HttpClient, OipTarget, RenewingSession, SecureClient, SecureSession, SessionRequest, SessionSeeds};
use moat_mpc::engine::{Hardening, Honest, Reveal, SimulatedEngine};
use moat_mpc::transport::ChannelConfig;
use moat_nn::{Graph, QuantizedGraph, zoo};
use serde::Serialize;

use super::{FixedArgs, load_model};
use crate::report::{Table, print_json};

/// Arguments of `moat attack`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub attack: AttackKind,
}

/// Which attack.
#[derive(clap::Subcommand, Debug)]
pub enum AttackKind {
    /// SEEK: extract the model layer by layer from label-only answers by offsetting the
    /// client's shares.
    Seek(SeekArgs),
    /// Fusion: cheating servers (a cheaper model, flipped or targeted answers, a model switch)
    /// against the client's mix-and-check; measured detection beside the analytic one.
    Fusion(super::fusion::FusionArgs),
    /// Membership inference: threshold, shadow-model, LiRA, RMIA and label-only attacks on
    /// the victim's float, fixed-point or simulated two-party outputs.
    Mia(super::mia::MiaArgs),
    /// PSML: fingerprint a served model zoo through its task endpoint, steer the router to one
    /// victim and extract it (guided, naive and single-model arms), optionally against the
    /// ε-randomised selection policies.
    Psml(super::psml::PsmlArgs),
}

/// Arguments of `moat attack seek`.
#[derive(clap::Args, Debug)]
pub struct SeekArgs {
    /// The victim: an ONNX file, or `zoo:ARCH:C,H,W` for random weights (e.g.
    /// `zoo:resnet18:3,32,32`). Its weights are read only to score the result.
    #[arg(default_value = "models/lenet5-mnist.onnx")]
    pub model: String,
    /// Attack a running `moat secure server` at this address instead of the simulated engine.
    #[arg(long)]
    pub connect: Option<String>,
    /// Attack a `moat serve` service at this URL through its secure sessions, as a key holder
    /// (`--api-key`, `--name`): each session's grant is used up, then a new one is admitted
    /// and charged, until the key's budget refuses.
    #[arg(long, conflicts_with = "connect")]
    pub url: Option<String>,
    /// The API key for `--url`.
    #[arg(long, requires = "url")]
    pub api_key: Option<String>,
    /// The served model's name for `--url`.
    #[arg(long, requires = "url")]
    pub name: Option<String>,
    /// Queries asked per secure session with `--url`.
    #[arg(long, default_value_t = 1000)]
    pub session_queries: u64,
    /// Sample `CHANNELS,PER_CHANNEL` parameters from every layer instead of extracting all.
    #[arg(long, value_parser = parse_pair)]
    pub sample: Option<(usize, usize)>,
    /// Only these layers (node names, comma separated).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Queries per decision (majority vote): > 1 against a noisy server.
    #[arg(long, default_value_t = 1)]
    pub votes: u32,
    /// Margin (in output units) between a detector's flip and the read's zero: raise above the
    /// noise against a noisy server.
    #[arg(long, default_value_t = 0)]
    pub margin: i64,
    /// Weight reads inject this many units (a larger signal against a noisy server).
    #[arg(long, default_value_t = 1)]
    pub input_scale: u64,
    /// Server-side hardening (simulated engine): uniform noise of this half-width (real
    /// units) on every activation input and logit.
    #[arg(long, default_value_t = 0.0)]
    pub harden: f64,
    /// A per-key query budget to set the attack against (the serving layer's first defense).
    #[arg(long)]
    pub budget: Option<u64>,
    /// Score the extracted model on this dataset's test set (accuracy, fidelity).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory of the datasets (e.g. ../shared/data).
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Test samples for accuracy and fidelity.
    #[arg(long, default_value_t = 10_000)]
    pub eval_samples: usize,
    /// Write `extracted.onnx` and `report.json` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of every random choice of the attack and the simulated engine (default: drawn from
    /// the OS and recorded in the report). Given, it also fixes the attacker's session keys
    /// against a real server (**not private**); without it they come from the OS.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fixed: FixedArgs,
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("expected CHANNELS,PER_CHANNEL, got '{s}'"))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("'{v}': {e}"));
    Ok((parse(a)?, parse(b)?))
}

/// Accuracy and fidelity of the extracted model.
#[derive(Debug, Serialize)]
pub struct ModelQuality {
    /// Dataset.
    pub dataset: String,
    /// Test samples used.
    pub samples: usize,
    /// The victim's fixed-point accuracy.
    pub victim_accuracy: f64,
    /// The victim's accuracy with the server's hardening noise (simulated engine).
    pub hardened_accuracy: Option<f64>,
    /// The extracted model's (float) accuracy.
    pub extracted_accuracy: f64,
    /// Label agreement between the extracted model and the victim.
    pub fidelity: f64,
}

/// The attack's report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `"seek"`.
    pub attack: &'static str,
    /// The victim.
    pub model: String,
    /// `"simulated"` or the server address.
    pub backend: String,
    /// Server-side noise.
    pub hardening: Hardening,
    /// Queries per second of the oracle.
    pub queries_per_second: f64,
    /// Scores against the true weights.
    pub scores: Scores,
    /// Accuracy and fidelity (with `--dataset`, full extractions).
    pub quality: Option<ModelQuality>,
    /// With `--budget`: parameters the attack had extracted when the budget ran out.
    pub budget: Option<BudgetOutcome>,

    /// Wall time.
    pub seconds: f64,
    /// The extraction itself (every estimate, its queries, the settings and seed).
    pub extraction: Extraction,
}

/// What `--url` prints when the service stops the attack before it finishes.
#[derive(Debug, Serialize)]
pub struct StoppedReport {
    /// `"seek"`.
    pub attack: &'static str,
    /// The victim.
    pub model: String,
    /// The service URL.
    pub backend: String,
    /// The attack's seed.
    pub seed: u64,
    /// How far it got.
    pub stopped_by_service: StoppedByService,
}

/// How far the attack got before the service refused further queries.
#[derive(Debug, Serialize)]
pub struct StoppedByService {
    /// Why (the service's answer).
    pub reason: String,
    /// Queries answered before the refusal.
    pub queries: u64,
    /// Parameters extracted by then, of those planned.
    pub parameters_extracted: usize,
    /// Parameters planned.
    pub parameters_planned: usize,
}

/// The attack set against a per-key query budget.
#[derive(Debug, Serialize)]
pub struct BudgetOutcome {
    /// The budget.
    pub budget: u64,
    /// Queries the attack needed.
    pub needed: u64,
    /// Fraction of the planned parameters extracted within the budget.
    pub fraction_within_budget: f64,
}

fn victim(spec: &str, fixed: &FixedArgs) -> anyhow::Result<(Graph, Arc<QuantizedGraph>)> {
    let graph = match spec.strip_prefix("zoo:") {
        Some(rest) => {
            let (arch, shape) = rest.rsplit_once(':').context("expected zoo:ARCH:C,H,W")?;
            let arch: zoo::Architecture = arch.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            let shape: Vec<usize> =
                shape.split(',').map(|v| v.trim().parse::<usize>()).collect::<Result<_, _>>().context("shape")?;
            let classes = if shape == [3, 224, 224] { 1000 } else { 10 };
            zoo::build(&arch, &shape, classes, 7)?
        }
        None => load_model(std::path::Path::new(spec))?,
    };
    let quantized = Arc::new(QuantizedGraph::new(&graph, fixed.fixed_point()?)?);
    Ok((graph, quantized))
}

/// Runs `moat attack …`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.attack {
        AttackKind::Seek(a) => seek(a),
        AttackKind::Fusion(a) => super::fusion::attack(a),
        AttackKind::Mia(a) => super::mia::run(a),
        AttackKind::Psml(a) => super::psml::run(a),
    }
}

/// The attacker's session keys: fixed by an explicit `--seed` (reproducible, not private),
/// else from the OS.
fn session_seeds(args: &SeekArgs) -> SessionSeeds {
    args.seed_arg.map_or(SessionSeeds::Os, SessionSeeds::InsecureFrom)
}

fn session_seed(args: &SeekArgs) -> anyhow::Result<moat_mpc::Seed> {
    match args.seed_arg {
        Some(n) => Ok(moat_mpc::Seed::insecure_from_u64(n)),
        None => moat_mpc::Seed::from_os().map_err(|e| anyhow::anyhow!("no OS entropy for the session keys: {e}")),
    }
}

fn seek(mut args: SeekArgs) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let (_, model) = victim(&args.model, &args.fixed)?;
    let hardening = Hardening::uniform(args.harden);
    let config = SeekConfig {
        seed: args.seed,
        votes: args.votes,
        sampling: match args.sample {
            Some((channels, per_channel)) => Sampling::Sample { channels, per_channel },
            None => Sampling::Full,
        },
        layers: args.layers.clone(),
        input_scale: args.input_scale,
        margin: args.margin,
        ..SeekConfig::default()
    };
    let bar = crate::progress::bar(0, "seek", args.json);
    let started = std::time::Instant::now();
    let progress = |p: &moat_attack::seek::Progress<'_>| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} · {} queries", p.layer, p.queries));
    };
    let done = Cell::new((0usize, 0usize));
    let progress = |p: &moat_attack::seek::Progress<'_>| {
        done.set((p.done, p.total));
        progress(p)
    };
    let extraction = match (&args.connect, &args.url) {
        (None, None) => {
            let mut oracle = SimulatedTamperOracle::new(Arc::clone(&model), args.seed, hardening)?;
            Seek::new(&mut oracle, config)?.on_progress(progress).run()?
        }
        (Some(addr), _) => {
            if args.harden > 0.0 {
                bail!("--harden applies to the simulated engine; a real server sets its own noise");
            }
            let config_ch = ChannelConfig { timeout: Duration::from_secs(120), ..ChannelConfig::default() };
            let session = SecureSession::connect_direct(addr, config_ch, session_seed(&args)?)
                .with_context(|| format!("secure session with {addr}"))?;
            let mut oracle = SessionTamperOracle::new(session);
            let result = Seek::new(&mut oracle, config)?.on_progress(progress).run();
            let traffic = oracle.session().traffic().total().bytes_total();
            tracing::info!(queries = oracle.queries(), bytes = traffic, "session traffic");
            oracle.close()?;
            result?
        }
        (None, Some(url)) => {
            if args.harden > 0.0 {
                bail!("--harden applies to the simulated engine; `moat serve --secure-harden` sets a service's noise");
            }
            let (Some(key), Some(name)) = (&args.api_key, &args.name) else {
                bail!("--url needs --api-key and --name (the served model)");
            };
            let client = SecureClient::new(HttpClient::new(url)?.with_api_key(key));
            let target = OipTarget::Model { name: name.clone(), version: None };
            let request = SessionRequest::queries(args.session_queries);
            let sessions = RenewingSession::open(client, target, request, session_seeds(&args))
                .with_context(|| format!("secure session for '{name}' at {url}"))?;
            let mut oracle = ServiceTamperOracle::open(sessions)?;
            let result = Seek::new(&mut oracle, config)?.on_progress(progress).run();
            let queries = oracle.queries();
            if let Err(e) = oracle.close() {
                tracing::warn!(error = %e, "closing the secure session");
            }
            match result {
                Err(AttackError::Refused(reason)) => {
                    bar.finish_and_clear();
                    let (parameters_extracted, parameters_planned) = done.get();
                    let report = StoppedReport {
                        attack: "seek",
                        model: args.model.clone(),
                        backend: url.clone(),
                        seed: args.seed,
                        stopped_by_service: StoppedByService {
                            reason,
                            queries,
                            parameters_extracted,
                            parameters_planned,
                        },
                    };
                    return if args.json {
                        print_json(&report)
                    } else {
                        let s = &report.stopped_by_service;
                        println!(
                            "seek on {url}: the service stopped the attack after {} queries, with {} of {} parameters extracted: {}",
                            s.queries, s.parameters_extracted, s.parameters_planned, s.reason
                        );
                        Ok(())
                    };
                }
                other => other?,
            }
        }
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let scores = score(&extraction, &model)?;
    let extracted = extracted_graph(&extraction, &moat_attack::oracle::public_architecture(&model)?)?;
    let quality = match (&args.dataset, &extraction.config.sampling) {
        (Some(dataset), Sampling::Full) => Some(quality(&args, dataset, &model, &extracted, hardening)?),
        _ => None,
    };
    let budget = args.budget.map(|budget| {
        let mut spent = 0u64;
        let mut within = 0usize;
        for layer in &extraction.layers {
            spent += layer.detector_queries;
            for e in layer.weights.iter().chain(&layer.biases) {
                spent += e.queries;
                if spent <= budget {
                    within += 1;
                }
            }
        }
        BudgetOutcome {
            budget,
            needed: extraction.queries,
            fraction_within_budget: within as f64 / extraction.parameters().max(1) as f64,
        }
    });
    let report = Report {
        attack: "seek",
        model: args.model.clone(),
        backend: args.connect.clone().unwrap_or_else(|| "simulated".into()),
        hardening,
        queries_per_second: extraction.queries as f64 / extraction.seconds.max(1e-9),
        scores,
        quality,
        budget,
        seconds,
        extraction,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        moat_nn::onnx::save_onnx(&extracted, &dir.join("extracted.onnx"))?;
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(dir.join("report.json"), json).with_context(|| format!("writing {}", dir.display()))?;
    }
    if args.json {
        print_json(&report)
    } else {
        print_report(&report);
        Ok(())
    }
}

fn quality(
    args: &SeekArgs,
    dataset: &str,
    model: &Arc<QuantizedGraph>,
    extracted: &Graph,
    hardening: Hardening,
) -> anyhow::Result<ModelQuality> {
    let (data, _) = moat_nn::data::load_with_spec(dataset, args.data_dir.as_deref(), args.seed)
        .with_context(|| format!("loading dataset '{dataset}'"))?;
    let test = &data.test;
    let quality = copy_quality(model, extracted, test, args.eval_samples)?;
    let n = quality.samples;
    let sample = |i: usize| test.sample(i);
    let labels: Vec<usize> = (0..n).map(|i| test.label(i)).collect();
    let hardened_accuracy = if hardening.is_active() {
        let mut engine = SimulatedEngine::new(Arc::clone(model), args.seed).with_hardening(hardening);
        let mut right = 0usize;
        for (i, label) in labels.iter().enumerate() {
            let got = engine.infer(sample(i), Reveal::Label, &mut Honest)?.label(model.fixed());
            right += usize::from(got == Some(*label));
        }
        Some(right as f64 / n.max(1) as f64)
    } else {
        None
    };
    Ok(ModelQuality {
        dataset: dataset.to_string(),
        samples: n,
        victim_accuracy: quality.victim_accuracy,
        hardened_accuracy,
        extracted_accuracy: quality.copy_accuracy,
        fidelity: quality.fidelity,
    })
}

fn print_report(r: &Report) {
    let mut table =
        Table::new(&["layer", "params", "failed", "queries/param", "max q", "exact", "mean rel err", "vs float"]);
    for l in &r.scores.layers {
        let f = &l.figures;
        table.row(vec![
            l.name.clone(),
            f.parameters.to_string(),
            f.failed.to_string(),
            format!("{:.1}", f.queries_per_parameter),
            f.max_queries_per_parameter.to_string(),
            format!("{:.1} %", 100.0 * f.exact_fraction),
            format!("{:.2e}", f.mean_relative_error_deployed),
            format!("{:.2e}", f.mean_relative_error_float),
        ]);
    }
    print!("{}", table.render());
    let t = &r.scores.total;
    println!(
        "seek on {} ({}): {} parameters, {} queries = {:.1} per parameter (max {}), mean relative error {:.2e} \
         (max {:.2e}) against the deployed weights, {:.2e} against the float weights; {:.0} queries/s, {:.1} s, seed {}",
        r.model,
        r.backend,
        t.parameters,
        t.queries,
        t.queries_per_parameter,
        t.max_queries_per_parameter,
        t.mean_relative_error_deployed,
        t.max_relative_error_deployed,
        t.mean_relative_error_float,
        r.queries_per_second,
        r.seconds,
        r.extraction.config.seed,
    );
    if let Some(q) = &r.quality {
        println!(
            "extracted model: accuracy {:.2} % (victim {:.2} %), fidelity {:.2} % on {} {} test samples",
            100.0 * q.extracted_accuracy,
            100.0 * q.victim_accuracy,
            100.0 * q.fidelity,
            q.samples,
            q.dataset
        );
        if let Some(h) = q.hardened_accuracy {
            println!("victim accuracy under the server's noise: {:.2} %", 100.0 * h);
        }
    }
    if let Some(b) = &r.budget {
        println!(
            "budget {}: the attack needed {} queries; {:.1} % of the parameters fall within the budget",
            b.budget,
            b.needed,
            100.0 * b.fraction_within_budget
        );
    }
}
