//! `moat attack mia`: membership inference against a trained model, on every output kind moat
//! reveals (float, plaintext fixed point, the simulated two-party engine's logits, a real
//! `moat secure server`'s secure-softmax probabilities over TCP with `--secure`), with
//! reference models trained here by moat's own training on the attacker's population; with
//! `--guard memguard|siguard --defender FILE`, the same attacks on the guarded answers beside
//! the unguarded ones (`moat_attack::defense`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use moat_attack::defense::guarded::SharedStats;
use moat_attack::defense::{
    DefenderFile, DefenderMeta, GuardSummary, MemGuard, MemGuardConfig, MemGuardVictim, ServedGuardVictim,
    SiGuardVictim,
};
use moat_attack::mia::{
    self, Attack, Metrics, MiaConfig, MiaError, ReferenceTrainer, References, RocPoint, ScoreTable,
};
use moat_attack::victim::{self, FixedVictim, FloatVictim, HttpVictim, SessionVictim, SimulatedVictim, Victim};
use moat_client::{HttpClient, SecureSession};
use moat_mpc::Seed;
use moat_mpc::engine::Reveal;
use moat_mpc::ring_ops::{SiGuardConfig, Softmax};
use moat_mpc::transport::ChannelConfig;
use moat_nn::card::ModelCard;
use moat_nn::data::Dataset;
use moat_nn::train::{Augment, TrainConfig, train};
use moat_nn::zoo::{self, Architecture};
use moat_nn::{Graph, QuantizedGraph};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::{DataArgs, FixedArgs, SiGuardArgs, load_model};
use crate::progress::bar;
use crate::report::{Table, print_json};

/// Arguments of `moat attack mia`.
#[derive(clap::Args, Debug)]
pub struct MiaArgs {
    /// The victim model (ONNX) with its card beside it (MODEL.card.json), which says which
    /// training samples were its members.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Attacks, comma separated (or `all`): loss, confidence, top1, entropy, mentr, shadow,
    /// lira-online, lira-online-fixed, lira-offline, lira-offline-fixed, rmia, rmia-offline,
    /// rmia-1, gap, robustness.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub attacks: Vec<String>,
    /// Output kinds to attack, comma separated: float, fixed, simulated (the simulated
    /// two-party engine revealing logits; the client applies the softmax), and with `--url`
    /// http (the service's probabilities) or http-label (its labels only: the gap and
    /// robustness attacks).
    #[arg(long, value_delimiter = ',', default_value = "float")]
    pub outputs: Vec<String>,
    /// Attack the model as served by a `moat serve` (or any Open Inference Protocol service)
    /// at this URL, as a key holder (`--api-key`, `--name`; every sample is charged to the
    /// key). MODEL's card still names the members (the ground truth the scores are read
    /// against).
    #[arg(long)]
    pub url: Option<String>,
    /// Attack the model as served by a `moat secure server` at each of these addresses (comma
    /// separated), through the real two-party protocol over TCP, asking for the probabilities
    /// of its secure softmax: output `secure-2pc-exp`, `-spline` or `-relu`, after the variant
    /// the server announces (`moat secure server --softmax`). Each server is checked (its
    /// hello: the classes, the outputs it allows) by a session opened before any query; the
    /// session its queries run in is opened when its turn comes. Session randomness comes
    /// from the OS. A server started with `--defender` answers through SIGuard inside the
    /// protocol (output `secure-2pc-siguard`); its answers are counted against the MODEL's
    /// unguarded answers by the same secure softmax (label agreement, changed answers, mean L1
    /// distortion), with the `fixed` output as their baseline.
    #[arg(long, value_delimiter = ',')]
    pub secure: Vec<String>,
    /// Bound on every wait for a `--secure` server, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub secure_timeout_ms: u64,
    /// The API key for `--url`.
    #[arg(long, requires = "url")]
    pub api_key: Option<String>,
    /// The served model's name for `--url` (default: MODEL's file stem).
    #[arg(long, requires = "url")]
    pub name: Option<String>,
    /// Members to test (drawn from the victim's training set).
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Non-members to test (drawn from the training samples the victim did not see).
    #[arg(long)]
    pub non_members: Option<usize>,
    /// Population samples the attacker owns besides the targets (default: enough for each
    /// reference model to train on as many samples as the victim did).
    #[arg(long)]
    pub population: Option<usize>,
    /// Reference (shadow) models (even).
    #[arg(long, default_value_t = 8)]
    pub references: usize,
    /// Reference architecture (default: the victim's, from its card).
    #[arg(long)]
    pub reference_arch: Option<String>,
    /// Reference training epochs (default: the victim's).
    #[arg(long)]
    pub reference_epochs: Option<usize>,
    /// Noisy copies per target for the robustness attack.
    #[arg(long, default_value_t = 16)]
    pub robustness_copies: usize,
    /// Noise standard deviation for the robustness attack (normalised input units).
    #[arg(long, default_value_t = 0.1)]
    pub robustness_sigma: f32,
    /// Seed of the target/population draw, the reference models and the attacks (none of it
    /// is secret); default: drawn from the OS and recorded in the report.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry).
    #[arg(skip)]
    pub seed: u64,
    /// Guard the answers: `none`; `memguard` (MemGuard on each output kind's plaintext
    /// probabilities); `siguard` (the probabilities the two-party protocol reveals under
    /// SIGuard, computed by the plaintext ring operations that
    /// `moat_mpc::ring_ops::siguard`'s test `two_party_siguard_equals_the_plaintext_one_bit_for_bit`
    /// holds bit-identical to the real protocol; its unguarded baseline is the `fixed` output).
    /// Guarded outputs are reported beside the unguarded ones.
    #[arg(long, default_value = "none")]
    pub guard: String,
    /// The server's defender (`moat train-defender`), which a guard needs.
    #[arg(long)]
    pub defender: Option<PathBuf>,
    /// SIGuard's parameters (`--guard siguard`).
    #[command(flatten)]
    pub siguard: SiGuardArgs,
    /// SIGuard's secure softmax (`spline`, `exp` or `relu`; `moat secure server --softmax`):
    /// the probabilities it optimises and reveals.
    #[arg(long, default_value = "spline")]
    pub siguard_softmax: moat_mpc::ring_ops::Softmax,
    /// MemGuard's gradient steps (all rounds).
    #[arg(long, default_value_t = 300)]
    pub memguard_steps: u32,
    #[command(flatten)]
    pub fixed: FixedArgs,
    /// Directory for report.json, the per-sample scores and the ROC plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One ROC curve per attack, by attack name.
type Curves = Vec<(&'static str, Vec<RocPoint>)>;

/// Trains reference models with moat-nn (burn, CPU) and queries them in float.
struct MoatTrainer {
    arch: Architecture,
    config: TrainConfig,
    seed: u64,
}

impl ReferenceTrainer for MoatTrainer {
    fn train(&mut self, index: usize, data: &Dataset) -> mia::Result<Box<dyn Victim>> {
        let failed = |e: moat_nn::NnError| MiaError::Training { index, source: Box::new(e) };
        let seed = self.seed.wrapping_mul(1000).wrapping_add(index as u64 + 1);
        let initial = zoo::build(&self.arch, &data.sample_shape, data.classes, seed).map_err(failed)?;
        let config = TrainConfig { seed, ..self.config.clone() };
        let (graph, _) = train(&initial, data, &config).map_err(failed)?;
        Ok(Box::new(FloatVictim::new(Arc::new(graph), data.classes)?))
    }
}

#[derive(Serialize)]
struct AttackResult {
    attack: &'static str,
    /// Whether the attack reads the target's true label (a label-keeping guard cannot take
    /// such an attack below the gap attack's reach).
    reads_label: bool,
    #[serde(flatten)]
    metrics: Metrics,
    scores_csv: Option<String>,
}

#[derive(Serialize)]
struct OutputResult {
    output: String,
    /// The guard this output answers through, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<&'static str>,
    /// The unguarded output it is compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<String>,
    /// What the guard did (label agreement, L1 distortion, time).
    #[serde(skip_serializing_if = "Option::is_none")]
    guard_stats: Option<GuardSummary>,
    queries: usize,
    seconds: f64,
    attacks: Vec<AttackResult>,
}

/// One attack without and with a guard.
#[derive(Serialize)]
struct GuardedAttack {
    attack: &'static str,
    auc: f64,
    guarded_auc: f64,
    tpr_at_1pct_fpr: f64,
    guarded_tpr_at_1pct_fpr: f64,
    tpr_at_0_1pct_fpr: f64,
    guarded_tpr_at_0_1pct_fpr: f64,
}

/// A guarded output against its unguarded baseline.
#[derive(Serialize)]
struct GuardComparison {
    guard: &'static str,
    output: String,
    baseline: String,
    #[serde(flatten)]
    stats: GuardSummary,
    attacks: Vec<GuardedAttack>,
}

/// The defender a guard used (public metadata only).
#[derive(Serialize)]
struct GuardInfo {
    guard: &'static str,
    defender: String,
    defender_meta: DefenderMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    siguard: Option<SiGuardConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memguard: Option<MemGuardConfig>,
}

/// A victim to attack, with its guard if it has one.
struct Target {
    victim: Box<dyn Victim>,
    guard: Option<(&'static str, String, SharedStats)>,
}

#[derive(Serialize)]
struct ReferenceInfo {
    models: usize,
    architecture: String,
    epochs: usize,
    samples_each: usize,
    seconds: f64,
}

#[derive(Serialize)]
struct Report {
    victim: String,
    dataset: String,
    victim_members: usize,
    victim_train_accuracy: f64,
    victim_test_accuracy: f64,
    members: usize,
    non_members: usize,
    population: usize,
    seed: u64,
    references: Option<ReferenceInfo>,
    config: MiaConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<GuardInfo>,
    outputs: Vec<OutputResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    guards: Vec<GuardComparison>,
}

fn parse_attacks(names: &[String]) -> anyhow::Result<Vec<Attack>> {
    if names.iter().any(|n| n == "all") {
        return Ok(Attack::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        let a: Attack = n.trim().parse()?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// The victim's member indices (into the training split) according to its card.
pub(crate) fn member_indices(card: &ModelCard, train_len: usize) -> anyhow::Result<Vec<usize>> {
    let members = match &card.members.indices {
        Some(indices) => indices.clone(),
        None => (0..card.members.count).collect(),
    };
    if let Some(bad) = members.iter().find(|&&i| i >= train_len) {
        bail!("the card names training sample {bad}, the training split has {train_len}");
    }
    Ok(members)
}

fn victim_for(
    kind: &str,
    args: &MiaArgs,
    graph: &Arc<Graph>,
    fixed: &Arc<QuantizedGraph>,
    classes: usize,
) -> anyhow::Result<Box<dyn Victim>> {
    let service = |reveals: Reveal| -> anyhow::Result<Box<dyn Victim>> {
        let url = args.url.as_deref().with_context(|| format!("output '{kind}' needs --url"))?;
        let mut client = HttpClient::new(url)?;
        if let Some(key) = &args.api_key {
            client = client.with_api_key(key.clone());
        }
        let stem = args.model.file_stem().map(|s| s.to_string_lossy().into_owned());
        let name = args.name.clone().or(stem).context("--url needs --name (the served model)")?;
        let victim = HttpVictim::for_model(client, &name, None, reveals, classes)
            .with_context(|| format!("model '{name}' at {url}"))?;
        Ok(Box::new(victim))
    };
    Ok(match kind {
        "float" => Box::new(FloatVictim::new(Arc::clone(graph), classes)?),
        "fixed" => Box::new(FixedVictim::new(Arc::clone(fixed), classes)?),
        "simulated" => Box::new(SimulatedVictim::new(Arc::clone(fixed), classes, args.seed)?),
        "http" => service(Reveal::Probabilities)?,
        "http-label" => service(Reveal::Label)?,
        other => bail!("unknown output kind '{other}' (float, fixed, simulated, http or http-label)"),
    })
}

/// Adds the guarded victims `args.guard` asks for to `victims`; every check (a defender given,
/// readable, of the victim's width and of the kind the guard needs) before any query.
fn guarded_victims(
    args: &MiaArgs,
    victims: &mut Vec<Target>,
    graph: &Arc<Graph>,
    quantized: &Arc<QuantizedGraph>,
    classes: usize,
) -> anyhow::Result<Option<GuardInfo>> {
    let guard: &'static str = match args.guard.trim() {
        "none" => return Ok(None),
        "memguard" => "memguard",
        "siguard" => "siguard",
        other => bail!("unknown guard '{other}' (none, memguard or siguard)"),
    };
    let Some(path) = &args.defender else {
        bail!(
            "--guard {guard} needs the server's trained defender: --defender DEFENDER.json (write one with `moat train-defender`)"
        );
    };
    let defender = DefenderFile::load(path).with_context(|| format!("reading the defender {}", path.display()))?;
    if defender.meta.shape.classes != classes {
        bail!(
            "the defender {} reads {} classes, the victim answers {classes}: it was trained for another model",
            path.display(),
            defender.meta.shape.classes
        );
    }
    let mut info = GuardInfo {
        guard,
        defender: path.display().to_string(),
        defender_meta: defender.meta.clone(),
        siguard: None,
        memguard: None,
    };
    if guard == "memguard" {
        let config = MemGuardConfig { max_steps: args.memguard_steps, ..MemGuardConfig::default() };
        info.memguard = Some(config);
        for kind in &args.outputs {
            let inner = victim_for(kind.trim(), args, graph, quantized, classes)?;
            let baseline = inner.name();
            let guarded = MemGuardVictim::new(inner, MemGuard::new(defender.clone(), config, classes)?)?;
            let stats = guarded.stats();
            victims.push(Target { victim: Box::new(guarded), guard: Some((guard, baseline, stats)) });
        }
    } else {
        let config = args.siguard.config(args.siguard_softmax)?;
        info.siguard = Some(config);
        let guarded = SiGuardVictim::new(Arc::clone(quantized), &defender, config)?;
        let stats = guarded.stats();
        // The unguarded twin of the protocol's probabilities.
        ensure_output(victims, "fixed", args, graph, quantized, classes)?;
        victims.push(Target { victim: Box::new(guarded), guard: Some((guard, "fixed".into(), stats)) });
    }
    Ok(Some(info))
}

/// Adds the unguarded output `kind` to `victims` unless it is there: a guarded output's baseline.
fn ensure_output(
    victims: &mut Vec<Target>,
    kind: &str,
    args: &MiaArgs,
    graph: &Arc<Graph>,
    quantized: &Arc<QuantizedGraph>,
    classes: usize,
) -> anyhow::Result<()> {
    if !victims.iter().any(|t| t.guard.is_none() && t.victim.name() == kind) {
        victims.push(Target { victim: victim_for(kind, args, graph, quantized, classes)?, guard: None });
    }
    Ok(())
}

/// Each guarded output's attacks beside its baseline's.
fn compare_guards(outputs: &[OutputResult]) -> Vec<GuardComparison> {
    let mut out = Vec::new();
    for o in outputs {
        let (Some(guard), Some(baseline), Some(stats)) = (o.guard, &o.baseline, &o.guard_stats) else { continue };
        let Some(base) = outputs.iter().find(|b| b.guard.is_none() && &b.output == baseline) else { continue };
        let attacks = o
            .attacks
            .iter()
            .filter_map(|a| {
                let b = base.attacks.iter().find(|b| b.attack == a.attack)?;
                Some(GuardedAttack {
                    attack: a.attack,
                    auc: b.metrics.auc,
                    guarded_auc: a.metrics.auc,
                    tpr_at_1pct_fpr: b.metrics.tpr_at_1pct_fpr,
                    guarded_tpr_at_1pct_fpr: a.metrics.tpr_at_1pct_fpr,
                    tpr_at_0_1pct_fpr: b.metrics.tpr_at_0_1pct_fpr,
                    guarded_tpr_at_0_1pct_fpr: a.metrics.tpr_at_0_1pct_fpr,
                })
            })
            .collect();
        out.push(GuardComparison {
            guard,
            output: o.output.clone(),
            baseline: baseline.clone(),
            stats: stats.clone(),
            attacks,
        });
    }
    out
}

/// `moat attack mia`.
pub fn run(mut args: MiaArgs) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let attacks = parse_attacks(&args.attacks)?;
    let graph = Arc::new(load_model(&args.model)?);
    let card_path = ModelCard::path_for(&args.model);
    let card = ModelCard::load(&card_path)
        .with_context(|| format!("reading the victim's card {} (it names the members)", card_path.display()))?;
    if card.input.dataset != args.data.dataset {
        bail!("the victim was trained on '{}', not '{}'", card.input.dataset, args.data.dataset);
    }
    let data = args.data.load(card.members.split_seed)?;
    let full = &data.train;
    let quantized = Arc::new(QuantizedGraph::new(&graph, args.fixed.fixed_point()?)?);
    // Every victim is built (its output checked against the classes, what it reveals against
    // the attacks) before any query.
    let mut victims = Vec::new();
    for kind in &args.outputs {
        let victim = victim_for(kind.trim(), &args, &graph, &quantized, full.classes)?;
        mia::check_reveals(victim.as_ref(), &attacks)?;
        victims.push(Target { victim, guard: None });
    }
    for address in &args.secure {
        let victim = DirectVictim::probe(address.trim(), args.secure_timeout_ms, full.classes)?;
        mia::check_reveals(&victim, &attacks)?;
        match victim.guard_softmax {
            // A server that guards its answers (SIGuard inside the protocol): its answers are
            // counted against the same model's unguarded ones, beside the `fixed` output.
            Some(softmax) => {
                let served = ServedGuardVictim::new(Box::new(victim), Arc::clone(&quantized), softmax)?;
                let stats = served.stats();
                ensure_output(&mut victims, "fixed", &args, &graph, &quantized, full.classes)?;
                victims.push(Target { victim: Box::new(served), guard: Some(("siguard", "fixed".into(), stats)) });
            }
            None => victims.push(Target { victim: Box::new(victim), guard: None }),
        }
    }
    let guard = guarded_victims(&args, &mut victims, &graph, &quantized, full.classes)?;

    let members_all = member_indices(&card, full.len())?;
    let is_member: std::collections::HashSet<usize> = members_all.iter().copied().collect();
    let mut rng = ChaCha20Rng::seed_from_u64(args.seed);
    let mut members = members_all.clone();
    members.shuffle(&mut rng);
    members.truncate(args.members.min(members_all.len()));
    let mut outside: Vec<usize> = (0..full.len()).filter(|i| !is_member.contains(i)).collect();
    outside.shuffle(&mut rng);
    let non_members_n = args.non_members.unwrap_or(members.len());
    if non_members_n > outside.len() || members.is_empty() || non_members_n == 0 {
        bail!(
            "{} members and {non_members_n} non-members asked; the victim has {} members and {} unseen training samples",
            members.len(),
            members_all.len(),
            outside.len()
        );
    }
    let non_members: Vec<usize> = outside.drain(..non_members_n).collect();
    let targets: Vec<usize> = members.iter().chain(&non_members).copied().collect();
    let wants_refs = attacks.iter().any(|a| a.needs_references());
    let population_n = args
        .population
        .unwrap_or_else(|| (2 * members_all.len()).saturating_sub(targets.len()).max(targets.len()))
        .min(outside.len());
    let population: Vec<usize> = if wants_refs { outside[..population_n].to_vec() } else { Vec::new() };
    let pool_indices: Vec<usize> = targets.iter().chain(&population).copied().collect();
    let pool = full.subset(format!("{}-attack-pool", full.name), &pool_indices)?;
    let truth: Vec<bool> = (0..targets.len()).map(|i| i < members.len()).collect();

    let config = MiaConfig {
        robustness_copies: args.robustness_copies,
        robustness_sigma: args.robustness_sigma,
        seed: args.seed,
        ..MiaConfig::default()
    };

    let references = if wants_refs {
        let arch: Architecture = args.reference_arch.as_deref().unwrap_or(&card.architecture).parse()?;
        let epochs = args.reference_epochs.unwrap_or(card.epochs);
        let mut train_config = TrainConfig::default_for(&arch);
        train_config.epochs = epochs;
        train_config.augment = Augment::None;
        let mut trainer = MoatTrainer { arch: arch.clone(), config: train_config, seed: args.seed };
        let progress = bar(args.references as u64, "reference models", args.quiet || args.json);
        let start = Instant::now();
        let refs = References::train(&mut trainer, &pool, args.references, args.seed, &mut |_| progress.inc(1))?;
        progress.finish_and_clear();
        let info = ReferenceInfo {
            models: args.references,
            architecture: arch.to_string(),
            epochs,
            samples_each: refs.inside.first().map_or(0, |m| m.iter().filter(|&&b| b).count()),
            seconds: start.elapsed().as_secs_f64(),
        };
        Some((refs, info))
    } else {
        None
    };

    let mut outputs = Vec::new();
    let mut curves: Vec<(String, Curves)> = Vec::new();
    for Target { mut victim, guard } in victims {
        let start = Instant::now();
        let mut counting = Counting { inner: victim.as_mut(), queries: 0 };
        let scored =
            mia::run(&mut counting, &pool, targets.len(), references.as_ref().map(|r| &r.0), &attacks, &config)?;
        let queries = counting.queries;
        let name = victim.name();
        let mut results = Vec::new();
        let mut output_curves = Vec::new();
        for s in scored {
            let curve = mia::metrics::roc(&s.scores, &truth)?;
            let metrics = Metrics::from_curve(&curve, &truth);
            let mut scores_csv = None;
            if let Some(dir) = &args.out {
                let table = ScoreTable {
                    attack: s.attack.name().to_string(),
                    output: name.clone(),
                    index: targets.clone(),
                    member: truth.clone(),
                    score: s.scores,
                };
                let stem = format!("{name}-{}", s.attack.name());
                table.write(&dir.join("scores"), &stem)?;
                scores_csv = Some(format!("scores/{stem}.csv"));
            }
            output_curves.push((s.attack.name(), curve));
            results.push(AttackResult {
                attack: s.attack.name(),
                reads_label: s.attack.reads_label(),
                metrics,
                scores_csv,
            });
        }
        curves.push((name.clone(), output_curves));
        let (guard_name, baseline, guard_stats) = match guard {
            Some((g, baseline, stats)) => {
                let summary = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).summary();
                (Some(g), Some(baseline), Some(summary))
            }
            None => (None, None, None),
        };
        outputs.push(OutputResult {
            output: name,
            guard: guard_name,
            baseline,
            guard_stats,
            queries,
            seconds: start.elapsed().as_secs_f64(),
            attacks: results,
        });
    }
    let guards = compare_guards(&outputs);

    let report = Report {
        victim: args.model.display().to_string(),
        dataset: args.data.dataset.clone(),
        victim_members: members_all.len(),
        victim_train_accuracy: card.train_accuracy,
        victim_test_accuracy: card.test_accuracy,
        members: members.len(),
        non_members: non_members.len(),
        population: population.len(),
        seed: args.seed,
        references: references.map(|r| r.1),
        config,
        guard,
        outputs,
        guards,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("report.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        for (output, output_curves) in &curves {
            crate::plot::roc_plots(dir, output, output_curves)?;
        }
    }
    if args.json {
        return print_json(&report);
    }
    println!(
        "victim {} (train {:.1} %, test {:.1} %, {} members); {} members + {} non-members tested, population {}",
        report.victim,
        100.0 * report.victim_train_accuracy,
        100.0 * report.victim_test_accuracy,
        report.victim_members,
        report.members,
        report.non_members,
        report.population
    );
    if let Some(r) = &report.references {
        println!(
            "{} reference models ({}, {} epochs, {} samples each) in {:.1} s",
            r.models, r.architecture, r.epochs, r.samples_each, r.seconds
        );
    }
    let mut table =
        Table::new(&["output", "attack", "reads y", "AUC", "bal. acc", "adv.", "TPR@1%", "TPR@0.1%", "TPR@0%"]);
    for o in &report.outputs {
        for a in &o.attacks {
            let m = &a.metrics;
            table.row(vec![
                o.output.clone(),
                a.attack.to_string(),
                if a.reads_label { "yes" } else { "no" }.to_string(),
                format!("{:.4}", m.auc),
                format!("{:.4}", m.balanced_accuracy),
                format!("{:.4}", m.advantage),
                format!("{:.2} %", 100.0 * m.tpr_at_1pct_fpr),
                format!("{:.2} %", 100.0 * m.tpr_at_0_1pct_fpr),
                format!("{:.2} %", 100.0 * m.tpr_at_0_fpr),
            ]);
        }
    }
    print!("{}", table.render());
    for g in &report.guards {
        println!(
            "{} on {} (baseline {}): label agreement {:.2} %, changed {:.1} %, mean L1 distortion {:.4}, {:.2} ms per answer",
            g.guard,
            g.output,
            g.baseline,
            100.0 * g.stats.label_agreement,
            100.0 * g.stats.changed,
            g.stats.mean_l1_distortion,
            g.stats.ms_per_query
        );
        let gap =
            report.outputs.iter().filter(|o| o.output == g.output).flat_map(|o| &o.attacks).find(|a| a.attack == "gap");
        if let (Some(gap), true) = (gap, g.stats.label_agreement == 1.0) {
            println!(
                "  every label kept: an attacker who reads the true label still has the gap attack's AUC {:.4} on {} (the attacks with 'reads y')",
                gap.metrics.auc, g.output
            );
        }
    }
    if let Some(dir) = &args.out {
        println!("wrote {}", dir.join("report.json").display());
    }
    Ok(())
}

/// Counts the queries a victim answers.
struct Counting<'a> {
    inner: &'a mut dyn Victim,
    queries: usize,
}

impl Victim for Counting<'_> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn reveals(&self) -> Reveal {
        self.inner.reveals()
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> victim::Result<Vec<Vec<f64>>> {
        self.queries += inputs.len();
        self.inner.probabilities(inputs)
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> victim::Result<Vec<usize>> {
        self.queries += inputs.len();
        self.inner.labels(inputs)
    }
}

/// A `moat secure server` asked for its secure softmax's probabilities ([`SessionVictim`]).
/// A first session checks the server's hello (the classes, the outputs allowed) when the
/// victim is built, before any query, and is closed; the session that answers the queries is
/// opened at the first of them, so the server's idle timeout does not run out while reference
/// models train and other outputs are attacked.
struct DirectVictim {
    address: String,
    config: ChannelConfig,
    classes: usize,
    name: String,
    /// The softmax of the guard the server announced, if it guards its answers.
    guard_softmax: Option<Softmax>,
    session: Option<SessionVictim>,
}

impl DirectVictim {
    fn probe(address: &str, timeout_ms: u64, classes: usize) -> anyhow::Result<Self> {
        let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
        let config = ChannelConfig::default().with_timeout(timeout).with_connect_timeout(timeout);
        let mut victim = Self {
            address: address.to_string(),
            config,
            classes,
            name: String::new(),
            guard_softmax: None,
            session: None,
        };
        let checked = victim.open().with_context(|| format!("secure server {address}"))?;
        victim.name = checked.name();
        victim.guard_softmax = checked.guard_softmax();
        checked.close().with_context(|| format!("closing the check session with {address}"))?;
        Ok(victim)
    }

    fn open(&self) -> victim::Result<SessionVictim> {
        let seed = Seed::from_os().map_err(|e| victim::VictimError::Service(format!("session seed: {e}")))?;
        let session = SecureSession::connect_direct(&self.address, self.config, seed)?;
        SessionVictim::revealing_probabilities(session, self.classes)
    }

    fn session(&mut self) -> victim::Result<&mut SessionVictim> {
        if self.session.is_none() {
            self.session = Some(self.open()?);
        }
        self.session.as_mut().ok_or_else(|| victim::VictimError::Service("no session".into()))
    }
}

impl Drop for DirectVictim {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = session.close()
        {
            tracing::warn!(address = %self.address, error = %e, "closing the secure session");
        }
    }
}

impl Victim for DirectVictim {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn reveals(&self) -> Reveal {
        Reveal::Probabilities
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> victim::Result<Vec<Vec<f64>>> {
        self.session()?.probabilities(inputs)
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> victim::Result<Vec<usize>> {
        self.session()?.labels(inputs)
    }
}
