//! `moat attack seek`: SEEK label-only extraction by share tampering, against the simulated
//! two-party engine or a real `moat secure server`, scored against the true weights.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use moat_attack::seek::evaluate::{Scores, extracted_graph, score};
use moat_attack::seek::{Extraction, Sampling, Seek, SeekConfig};
use moat_attack::{AttackError, Oracle, RemoteOracle, SimulatedOracle};
use moat_client::{ClientError, HttpClient, SecureClient, SecureSession, SessionRequest};
use moat_mpc::engine::{ClientBehaviour, Hardening, Honest, Reveal, Revealed, SimulatedEngine};
use moat_mpc::transport::tcp::TcpChannel;
use moat_mpc::transport::{Channel, ChannelConfig};
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
    /// Seed of every random choice (attack, engine randomness).
    #[arg(long, default_value_t = 1)]
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

fn seek(args: SeekArgs) -> anyhow::Result<()> {
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
            let mut oracle = SimulatedOracle::new(Arc::clone(&model), args.seed, hardening)?;
            Seek::new(&mut oracle, config)?.on_progress(progress).run()?
        }
        (Some(addr), _) => {
            if args.harden > 0.0 {
                bail!("--harden applies to the simulated engine; a real server sets its own noise");
            }
            let config_ch = ChannelConfig { timeout: Duration::from_secs(120), ..ChannelConfig::default() };
            let channel =
                TcpChannel::connect(addr.as_str(), config_ch).with_context(|| format!("connecting {addr}"))?;
            let mut oracle = RemoteOracle::connect(channel, moat_mpc::Seed::insecure_from_u64(args.seed))?;
            let result = Seek::new(&mut oracle, config)?.on_progress(progress).run();
            let traffic = oracle.channel().stats().total().bytes_total();
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
            let mut oracle = ServiceOracle::connect(url, key, name, args.session_queries, args.seed)?;
            let result = Seek::new(&mut oracle, config)?.on_progress(progress).run();
            let queries = oracle.queries();
            oracle.close();
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
    let n = test.len().min(args.eval_samples);
    let sample = |i: usize| test.sample(i);
    let victim: Vec<usize> = moat_nn::exec::par_map(n, |i| model.predict(sample(i)).unwrap_or(usize::MAX));
    let copy: Vec<usize> =
        moat_nn::exec::par_map(n, |i| moat_nn::FloatExecutor::predict(extracted, sample(i)).unwrap_or(usize::MAX));
    let labels: Vec<usize> = (0..n).map(|i| test.label(i)).collect();
    let acc = |p: &[usize]| p.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n.max(1) as f64;
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
        victim_accuracy: acc(&victim),
        hardened_accuracy,
        extracted_accuracy: acc(&copy),
        fidelity: victim.iter().zip(&copy).filter(|(a, b)| a == b).count() as f64 / n.max(1) as f64,
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

/// A `moat serve` service's secure sessions as the oracle: admitted over HTTP with an API key,
/// a new session (charged to the key) whenever the last one's grant is used up, until the
/// service refuses.
struct ServiceOracle {
    client: SecureClient,
    name: String,
    per_session: u64,
    seed: u64,
    session: Option<SecureSession>,
    architecture: QuantizedGraph,
    queries: u64,
}

impl ServiceOracle {
    fn connect(url: &str, key: &str, name: &str, per_session: u64, seed: u64) -> anyhow::Result<Self> {
        let client = SecureClient::new(HttpClient::new(url)?.with_api_key(key));
        let admission = client.admit_model(name, None, &SessionRequest::queries(per_session))?;
        let session = client.connect(&admission, moat_mpc::Seed::insecure_from_u64(seed))?;
        let architecture = session.protocol().architecture().clone();
        Ok(Self { client, name: name.to_string(), per_session, seed, session: Some(session), architecture, queries: 0 })
    }

    fn close(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = session.close()
        {
            tracing::warn!(error = %e, "closing the secure session");
        }
    }
}

/// The service saying no — an HTTP refusal (401, 403, 429) or a session port that turns the
/// token down — ends the attack with what it has; anything else (timeouts, broken
/// connections, answers off the protocol) is an error with its cause.
fn service_error(e: ClientError) -> AttackError {
    match e {
        ClientError::Status { status: 401 | 403 | 429, .. } | ClientError::Refused { .. } => {
            AttackError::Refused(e.to_string())
        }
        other => AttackError::Service(other.to_string()),
    }
}

impl Oracle for ServiceOracle {
    fn architecture(&self) -> &QuantizedGraph {
        &self.architecture
    }

    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> moat_attack::Result<usize> {
        if self.session.as_ref().is_none_or(|s| s.remaining() == 0) {
            self.close();
            let request = SessionRequest::queries(self.per_session);
            let admission = self.client.admit_model(&self.name, None, &request).map_err(service_error)?;
            let seed = self.seed.wrapping_add(self.queries);
            let session =
                self.client.connect(&admission, moat_mpc::Seed::insecure_from_u64(seed)).map_err(service_error)?;
            self.session = Some(session);
        }
        let session = self.session.as_mut().ok_or_else(|| AttackError::Service("no session".into()))?;
        let answer = session.infer_encoded_with(input.to_vec(), Reveal::Label, behaviour).map_err(service_error)?;
        self.queries += 1;
        match answer {
            Revealed::Label(label) => Ok(label),
            Revealed::Logits(_) | Revealed::Probabilities(_) => {
                Err(AttackError::Search("the service revealed a class vector, not a label".into()))
            }
        }
    }

    fn queries(&self) -> u64 {
        self.queries
    }
}
