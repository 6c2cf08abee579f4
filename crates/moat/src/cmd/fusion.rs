//! `moat attack fusion`: cheating servers against Fusion's mix-and-check. Every cheat of
//! `moat_client::fusion::danger` runs for `--batches` batches per point through the same client
//! code as every other path (compile, send one batch, check); the answers of the honest and the
//! cheaper model are computed once per test sample (fixed point, what the secure protocol
//! returns), so a batch costs a table look-up per input. The report sets measured detection
//! beside the analytic value, and the honest server's false alarms beside β.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use moat_client::fusion::analysis::{self, Shape};
use moat_client::fusion::danger::{Cheat, CheatingServer, PoolFacts};
use moat_client::fusion::{
    FusionConfig, FusionError, KnownAnswerPool, LabelOracle, ModelIdentity, PoolLabels, Randomness, run,
};
use moat_nn::{FixedPoint, QuantizedGraph};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use super::{DataArgs, FixedArgs, load_model};
use crate::report::{Table, print_json};

/// Arguments of `moat attack fusion`.
#[derive(clap::Args, Debug)]
pub struct FusionArgs {
    /// The honest (committed) model.
    #[arg(default_value = "models/lenet5-mnist.onnx")]
    pub model: PathBuf,
    /// Dataset whose test split gives the queries (first half) and the public known-answer pool
    /// (second half).
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Directory of the datasets (e.g. ../shared/data).
    #[arg(long, env = "MOAT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Test samples used (at most the split's size).
    #[arg(long, default_value_t = 4000)]
    pub samples: usize,
    /// The cheaper model a cheating server substitutes is the committed one at this many
    /// fractional bits (default: the largest that loses at least --gap points of accuracy).
    #[arg(long)]
    pub worse_frac_bits: Option<u32>,
    /// A different model the cheating server substitutes (an ONNX file, run in fixed point),
    /// instead of the committed one at fewer fractional bits. The client's helper still
    /// designs m from the fewer-bits copy it can build itself (its proxy): the run then shows
    /// whether a pool chosen for one substitute holds against another.
    #[arg(long)]
    pub substitute: Option<PathBuf>,
    /// Accuracy the substituted model must lose, in points.
    #[arg(long, default_value_t = 5.0)]
    pub gap: f64,
    /// Real queries per batch.
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// `m,k[,beta]`; default: the helper's choice for --target against a model --rate worse.
    #[arg(long)]
    pub fusion: Option<String>,
    /// Detection probability the helper aims for.
    #[arg(long, default_value_t = 0.99)]
    pub target: f64,
    /// Cheating rate the helper designs for (a model this much less accurate; a server
    /// corrupting this fraction of answers).
    #[arg(long, default_value_t = 0.05)]
    pub rate: f64,
    /// The known-answer pool: `random` (the second half of the samples) or `hardest:SIZE`
    /// (the SIZE samples of it on which the committed model's two best logits are closest,
    /// `moat_client::fusion::selection`; the helper then picks m from the disagreement
    /// measured on them, and the report adds the `cascade` server that routes the inputs its
    /// cheap model finds hard to the committed one).
    #[arg(long, default_value = "random")]
    pub pool: String,
    /// Fractions of inputs the `cascade` servers send to the committed model (hardest pools
    /// only; default: the hard pool's share of the public half, and 2, 4 and 8 times it).
    #[arg(long, value_delimiter = ',')]
    pub cascade: Vec<f64>,
    /// Duplicates per batch (default: the helper's k for --rate with a random pool, 0 with a
    /// hardest pool — duplicates do not catch a deterministic substitute).
    #[arg(long)]
    pub duplicates: Option<usize>,
    /// β: the honest server's false-alarm bound (with the helper's choice).
    #[arg(long, default_value_t = 0.01)]
    pub beta: f64,
    /// Batches per point (≥ 1,000 for the report's claims).
    #[arg(long, default_value_t = 5000)]
    pub batches: usize,
    /// Write report.json and the plots here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the experiment: the clients' permutations (an insecure seeded generator, so the
    /// sweep repeats) and the cheating servers' choices; default: drawn from the OS and
    /// recorded in the report.
    #[arg(long = "seed", value_name = "SEED")]
    pub seed_arg: Option<u64>,
    /// The seed this run uses: `--seed`, or drawn from the OS (set on entry, recorded in the
    /// output).
    #[arg(skip)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fixed: FixedArgs,
}

/// One point of the sweep.
#[derive(Debug, Serialize)]
pub struct Point {
    /// The cheat.
    pub cheat: Cheat,
    /// Its name.
    pub name: String,
    /// Pool labels: the honest model's, or ground truth with the binomial test.
    pub pool_labels: PoolLabels,
    /// Fraction of a batch's answers the cheat corrupts (expected), for the plots.
    pub cheating_rate: f64,
    /// Batches run.
    pub batches: usize,
    /// Batches flagged (`ServerCheated`).
    pub detected: usize,
    /// detected / batches.
    pub measured: f64,
    /// The analytic detection probability.
    pub analytic: f64,
    /// Whether the analytic value is exact (else an approximation, see `Cheat`).
    pub exact: bool,
    /// measured − analytic, in points.
    pub difference_points: f64,
    /// Binomial standard error of the measured value, in points.
    pub standard_error_points: f64,
    /// Batches verified although a released label differs from the honest model's.
    pub undetected_wrong: usize,
}

/// The sweep's report.
#[derive(Debug, Serialize)]
pub struct FusionReport {
    /// The committed model.
    pub model: String,
    /// Dataset.
    pub dataset: String,
    /// Query samples and pool samples.
    pub queries: usize,
    /// Pool size.
    pub pool: usize,
    /// The honest model's fixed-point accuracy on the samples.
    pub honest_accuracy: f64,
    /// The client's proxy substitute: the committed model at these fractional bits (also the
    /// server's substitute unless `substitute` is set).
    pub worse_frac_bits: u32,
    /// The server's substitute, when it is another model (`--substitute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substitute: Option<String>,
    /// Fraction of the selected pool on which the client's proxy disagrees (what the helper
    /// designs m for with a hardest pool).
    pub proxy_pool_disagreement: f64,
    /// Its accuracy.
    pub worse_accuracy: f64,
    /// Fraction of samples where the two models' labels differ.
    pub disagreement: f64,
    /// Batch shape.
    pub shape: Shape,
    /// β.
    pub beta: f64,
    /// The helper's choice (when --fusion was not given).
    pub helper: Option<analysis::Choice>,
    /// `random` or `hardest:SIZE`.
    pub pool_selection: String,
    /// Fraction of the selected pool on which the substitute's label differs (what the
    /// helper designs m for with a hardest pool).
    pub pool_disagreement: f64,
    /// The same fraction on the whole public half (a random pool).
    pub random_pool_disagreement: f64,
    /// Queries added per real query: (m + k)/n.
    pub overhead: f64,
    /// The cascade servers (hardest pools only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cascade: Vec<Cascade>,
    /// What the analytic values assume about the pool and the models.
    pub facts: PoolFacts,
    /// Every point.
    pub points: Vec<Point>,
    /// Largest |measured − analytic| over exact points, in points.
    pub max_difference_points: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// A server on the plaintext path that recognises hard inputs with its cheap model: it sends
/// the fraction `escalated` of inputs on which the cheap model's logit gap is smallest to the
/// committed model and answers the rest with the cheap one.
#[derive(Debug, Serialize)]
pub struct Cascade {
    /// Fraction of inputs answered by the committed model (its cost relative to honest).
    pub escalated: f64,
    /// Fraction of real queries it answers differently from the committed model.
    pub query_disagreement: f64,
    /// Fraction of the selected (hard) pool it answers differently.
    pub pool_disagreement: f64,
    /// Fraction of a random pool it answers differently.
    pub random_pool_disagreement: f64,
    /// Analytic detection with a random pool of the same m: 1 − C(A, m)/C(P, m).
    pub random_pool_detection: f64,
}

/// Logit gaps (top-1 − top-2) of the first `n` samples under `model`.
fn margins_of(model: &QuantizedGraph, test: &moat_nn::data::Dataset, n: usize) -> Vec<Option<f32>> {
    moat_nn::exec::par_map(n, |i| {
        model.logits(test.sample(i)).ok().and_then(|l| moat_client::fusion::selection::margin(&l)).map(|(_, m)| m)
    })
}

fn labels_of(model: &QuantizedGraph, test: &moat_nn::data::Dataset, n: usize) -> Vec<usize> {
    moat_nn::exec::par_map(n, |i| model.predict(test.sample(i)).unwrap_or(usize::MAX))
}

fn accuracy(labels: &[usize], truth: &[usize]) -> f64 {
    labels.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / labels.len().max(1) as f64
}

/// How many batches of how many queries, drawn from the first `query_count` samples.
#[derive(Clone, Copy)]
struct Sweep {
    query_count: usize,
    n: usize,
    batches: usize,
}

/// Runs the sweep's batches against `server`; returns (detected, verified-but-wrong).
fn measure(
    config: &FusionConfig,
    pool: &KnownAnswerPool<usize>,
    honest: &[usize],
    sweep: Sweep,
    server: &mut CheatingServer<LabelOracle, LabelOracle>,
    seed: u64,
) -> anyhow::Result<(usize, usize)> {
    let Sweep { query_count, n, batches } = sweep;
    let mut randomness = Randomness::insecure_seed(seed);
    let mut pick = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    let (mut detected, mut wrong) = (0, 0);
    for _ in 0..batches {
        let queries = rand::seq::index::sample(&mut pick, query_count, n).into_vec();
        match run(config, pool, queries.clone(), server, &mut randomness) {
            Ok(verified) => {
                let labels = verified.into_labels();
                wrong += usize::from(queries.iter().zip(&labels).any(|(&q, &l)| honest[q] != l));
            }
            Err(FusionError::ServerCheated(_)) => detected += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((detected, wrong))
}

/// `moat attack fusion`.
pub fn attack(mut args: FusionArgs) -> anyhow::Result<()> {
    args.seed = super::experiment_seed(args.seed_arg)?;
    let started = Instant::now();
    if args.batches < 1 || args.n < 1 {
        bail!("--batches and --n must be positive");
    }
    let graph = load_model(&args.model)?;
    let fixed = args.fixed.fixed_point()?;
    let honest_model = QuantizedGraph::new(&graph, fixed)?;
    let data = DataArgs { dataset: args.dataset.clone(), data_dir: args.data_dir.clone() }.load(args.seed)?;
    let test = &data.test;
    let total = test.len().min(args.samples);
    if total < 2 * args.n {
        bail!("{total} samples is too few for batches of {} queries and a pool", args.n);
    }
    let truth: Vec<usize> = (0..total).map(|i| test.label(i)).collect();
    let honest = labels_of(&honest_model, test, total);
    let honest_accuracy = accuracy(&honest, &truth);
    let (worse_frac_bits, worse) = match args.worse_frac_bits {
        Some(f) => (f, labels_of(&QuantizedGraph::new(&graph, FixedPoint::new(fixed.ring_bits(), f)?)?, test, total)),
        None => {
            let mut found = None;
            for f in (1..fixed.frac_bits()).rev() {
                let labels =
                    labels_of(&QuantizedGraph::new(&graph, FixedPoint::new(fixed.ring_bits(), f)?)?, test, total);
                tracing::info!(frac_bits = f, accuracy = accuracy(&labels, &truth), "candidate cheaper model");
                if 100.0 * (honest_accuracy - accuracy(&labels, &truth)) >= args.gap {
                    found = Some((f, labels));
                    break;
                }
            }
            found.with_context(|| format!("no fractional bit count loses {} points of accuracy", args.gap))?
        }
    };
    let proxy = worse;
    let substitute_graph = args.substitute.as_deref().map(load_model).transpose()?;
    let worse = match &substitute_graph {
        Some(g) => labels_of(&QuantizedGraph::new(g, fixed)?, test, total),
        None => proxy.clone(),
    };
    let worse_accuracy = accuracy(&worse, &truth);
    let classes = test.classes;
    let query_count = total / 2;
    let pool_range = query_count..total;
    // The pool: the public half, or its hardest samples by the committed model's logit gap.
    let hardest_size = match args.pool.as_str() {
        "random" => None,
        other => Some(
            other
                .strip_prefix("hardest:")
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&s| s > 0 && s <= pool_range.len())
                .with_context(|| {
                    format!("--pool is 'random' or 'hardest:SIZE' with SIZE in 1..={}, got '{other}'", pool_range.len())
                })?,
        ),
    };
    let pool_indices: Vec<usize> = match hardest_size {
        None => pool_range.clone().collect(),
        Some(size) => {
            let public = margins_of(&honest_model, test, total)[pool_range.clone()].to_vec();
            moat_client::fusion::selection::hardest(&public, size).into_iter().map(|j| query_count + j).collect()
        }
    };
    let pool = KnownAnswerPool::honest_labels(pool_indices.clone(), pool_indices.iter().map(|&i| honest[i]).collect())?;
    let differs = |i: &usize| honest[*i] != worse[*i];
    let pool_disagreeing = pool_indices.iter().filter(|i| differs(i)).count();
    let proxy_disagreeing = pool_indices.iter().filter(|&&i| honest[i] != proxy[i]).count();
    let (config, helper) = match &args.fusion {
        Some(spec) => (FusionConfig::parse(spec)?, None),
        None => {
            let q = 1.0 / (classes.max(2) - 1) as f64;
            let mut choice = analysis::choose(args.n, args.rate, args.target, true, q)
                .context("--rate must be in (0, 1] and --target in (0, 1)")?;
            if hardest_size.is_some() {
                // m from the disagreement measured on the selected pool.
                choice.m = analysis::choose_for_pool(pool.len(), proxy_disagreeing, args.target).with_context(|| {
                    format!(
                        "the proxy substitute disagrees on {proxy_disagreeing} of the {} pool samples: no m reaches --target",
                        pool.len()
                    )
                })?;
                choice.k = 0;
                choice.known_detection = 1.0
                    - analysis::miss_known_answers(
                        pool.len() as u64,
                        (pool.len() - proxy_disagreeing) as u64,
                        choice.m as u64,
                        Some(choice.m as u64 - 1),
                    );
            }
            if let Some(k) = args.duplicates {
                choice.k = k.min(args.n);
            }
            choice.duplicate_detection =
                1.0 - ((1.0 - args.rate).powi(2) + args.rate * args.rate * q).powf(choice.k as f64);
            (FusionConfig::new(choice.m, choice.k, args.beta)?, Some(choice))
        }
    };
    let shape = Shape { n: args.n, m: config.known, k: config.duplicates };
    let target_from =
        (0..classes).max_by_key(|c| pool_indices.iter().filter(|&&i| honest[i] == *c).count()).unwrap_or(0);
    let facts = PoolFacts {
        pool: pool.len(),
        pool_disagreeing,
        query_disagreement: (0..query_count).filter(differs).count() as f64 / query_count as f64,
        pool_in_target_class: pool_indices.iter().filter(|&&i| honest[i] == target_from).count(),
        classes,
    };
    let random_pool_disagreement = pool_range.clone().filter(differs).count() as f64 / pool_range.len() as f64;
    // The cascades: the cheap model's own smallest gaps go to the committed model.
    let cascade_labels: Vec<(Vec<usize>, f64)> = match hardest_size {
        None => Vec::new(),
        Some(size) => {
            let cheap = match &substitute_graph {
                Some(g) => QuantizedGraph::new(g, fixed)?,
                None => QuantizedGraph::new(&graph, FixedPoint::new(fixed.ring_bits(), worse_frac_bits)?)?,
            };
            let cheap_margins = margins_of(&cheap, test, total);
            let share = size as f64 / pool_range.len() as f64;
            let fractions = if args.cascade.is_empty() {
                vec![share, 2.0 * share, 4.0 * share, 8.0 * share]
            } else {
                args.cascade.clone()
            };
            fractions
                .iter()
                .filter(|f| (0.0..=1.0).contains(*f))
                .map(|f| {
                    let escalate = (f * total as f64).round() as usize;
                    let hard_to_cheap = moat_client::fusion::selection::hardest(&cheap_margins, escalate);
                    let mut labels = worse.clone();
                    for &i in &hard_to_cheap {
                        labels[i] = honest[i];
                    }
                    (labels, hard_to_cheap.len() as f64 / total as f64)
                })
                .collect()
        }
    };
    let (honest, worse) = (Arc::new(honest), Arc::new(worse));
    let committed = ModelIdentity::named("committed", Some("1"));
    let cheaper = ModelIdentity::named("cheaper", Some("1"));
    let rates = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1];
    let mut cheats = vec![
        Cheat::Honest,
        Cheat::Substitute,
        Cheat::SwitchModel,
        Cheat::TargetClass { from: target_from, to: (target_from + 1) % classes },
    ];
    cheats.extend(rates.iter().map(|&rate| Cheat::Flip { rate }));
    cheats.extend(rates.iter().map(|&rate| Cheat::SubstituteFraction { rate }));
    cheats.extend([1usize, 2, 3, 5, 8].iter().map(|&t| Cheat::CorruptExactly { t }));
    let sweep = Sweep { query_count, n: args.n, batches: args.batches };
    let mut points = Vec::new();
    let bar = crate::progress::bar((cheats.len() + 2) as u64, "fusion sweep", args.json);
    for (i, cheat) in cheats.iter().enumerate() {
        let mut server = CheatingServer::new(
            LabelOracle::new(Arc::clone(&honest), committed.clone()),
            LabelOracle::new(Arc::clone(&worse), cheaper.clone()),
            *cheat,
            classes,
            args.seed.wrapping_add(1000 + i as u64),
        );
        let seed = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64);
        let (detected, wrong) = measure(&config, &pool, &honest, sweep, &mut server, seed)?;
        let (analytic, exact) = cheat.analytic_detection(shape, &facts);
        let cheating_rate = match *cheat {
            Cheat::Flip { rate } => rate,
            Cheat::SubstituteFraction { rate } => rate * facts.query_disagreement,
            Cheat::CorruptExactly { t } => t as f64 / shape.total() as f64,
            Cheat::Substitute => facts.query_disagreement,
            _ => 0.0,
        };
        points.push(point(
            *cheat,
            PoolLabels::HonestModel,
            cheating_rate,
            args.batches,
            detected,
            wrong,
            analytic,
            exact,
        ));
        bar.inc(1);
    }
    let mut cascade = Vec::new();
    for (c, (labels, escalated)) in cascade_labels.iter().enumerate() {
        let disagree = |range: &mut dyn Iterator<Item = usize>| {
            let (mut d, mut all) = (0usize, 0usize);
            for i in range {
                all += 1;
                d += usize::from(labels[i] != honest[i]);
            }
            (d, all)
        };
        let (q_d, q_all) = disagree(&mut (0..query_count));
        let (p_d, _) = disagree(&mut pool_indices.iter().copied());
        let (r_d, r_all) = disagree(&mut pool_range.clone());
        let m = shape.m as u64;
        let miss = |p: usize, d: usize| analysis::miss_known_answers(p as u64, (p - d) as u64, m, m.checked_sub(1));
        let mut server = CheatingServer::new(
            LabelOracle::new(Arc::clone(&honest), committed.clone()),
            LabelOracle::new(Arc::new(labels.clone()), cheaper.clone()),
            Cheat::Substitute,
            classes,
            args.seed.wrapping_add(4000 + c as u64),
        );
        let seed = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(4000 + c as u64);
        let (detected, wrong) = measure(&config, &pool, &honest, sweep, &mut server, seed)?;
        let query_disagreement = q_d as f64 / q_all.max(1) as f64;
        let mut p = point(
            Cheat::Substitute,
            PoolLabels::HonestModel,
            query_disagreement,
            args.batches,
            detected,
            wrong,
            1.0 - miss(pool.len(), p_d),
            true,
        );
        p.name = format!("cascade-{:.3}", escalated);
        points.push(p);
        cascade.push(Cascade {
            escalated: *escalated,
            query_disagreement,
            pool_disagreement: p_d as f64 / pool.len() as f64,
            random_pool_disagreement: r_d as f64 / r_all.max(1) as f64,
            random_pool_detection: 1.0 - miss(r_all, r_d),
        });
    }
    // The accuracy test on ground truth: an honest server's false alarms (≤ β) and the
    // substituted model, both against the honest model's accuracy on the pool as the claim.
    let claimed = accuracy(&honest[pool_range.clone()], &truth[pool_range.clone()]);
    let gt_pool =
        KnownAnswerPool::ground_truth(pool_range.clone().collect(), truth[pool_range.clone()].to_vec(), claimed)?;
    let gt_pool_len = gt_pool.len();
    let threshold = analysis::rejection_threshold(shape.m as u64, claimed, config.beta);
    for (j, cheat) in [Cheat::Honest, Cheat::Substitute].into_iter().enumerate() {
        let mut server = CheatingServer::new(
            LabelOracle::new(Arc::clone(&honest), committed.clone()),
            LabelOracle::new(Arc::clone(&worse), cheaper.clone()),
            cheat,
            classes,
            args.seed.wrapping_add(5000 + j as u64),
        );
        let seed = args.seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(j as u64);
        let (detected, wrong) = match measure(&config, &gt_pool, &honest, sweep, &mut server, seed) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "the ground-truth accuracy test cannot run at this m and β");
                bar.inc(1);
                continue;
            }
        };
        let model_labels = if cheat == Cheat::Honest { &honest } else { &worse };
        let right = pool_range.clone().filter(|&i| model_labels[i] == truth[i]).count() as u64;
        let analytic = 1.0 - analysis::miss_known_answers(gt_pool_len as u64, right, shape.m as u64, threshold);
        let rate = if cheat == Cheat::Honest { 0.0 } else { facts.query_disagreement };
        points.push(point(
            cheat,
            PoolLabels::GroundTruth { claimed_accuracy: claimed },
            rate,
            args.batches,
            detected,
            wrong,
            analytic,
            true,
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let max_difference_points =
        points.iter().filter(|p| p.exact).map(|p| p.difference_points.abs()).fold(0.0f64, f64::max);
    let report = FusionReport {
        model: args.model.display().to_string(),
        dataset: args.dataset.clone(),
        queries: query_count,
        pool: pool.len(),
        honest_accuracy,
        worse_frac_bits,
        substitute: args.substitute.as_ref().map(|p| p.display().to_string()),
        proxy_pool_disagreement: proxy_disagreeing as f64 / pool.len() as f64,
        worse_accuracy,
        disagreement: (0..total).filter(|&i| honest[i] != worse[i]).count() as f64 / total as f64,
        shape,
        beta: config.beta,
        helper,
        pool_selection: args.pool.clone(),
        pool_disagreement: pool_disagreeing as f64 / pool.len() as f64,
        random_pool_disagreement,
        overhead: (shape.m + shape.k) as f64 / shape.n as f64,
        cascade,
        facts,
        points,
        max_difference_points,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", dir.display()))?;
        plot(&report, dir)?;
    }
    if args.json {
        return print_json(&report);
    }
    print_report(&report);
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "one row of the report, every field named at the call")]
fn point(
    cheat: Cheat,
    pool_labels: PoolLabels,
    cheating_rate: f64,
    batches: usize,
    detected: usize,
    undetected_wrong: usize,
    analytic: f64,
    exact: bool,
) -> Point {
    let measured = detected as f64 / batches as f64;
    Point {
        cheat,
        name: cheat.name(),
        pool_labels,
        cheating_rate,
        batches,
        detected,
        measured,
        analytic,
        exact,
        difference_points: 100.0 * (measured - analytic),
        standard_error_points: 100.0 * (analytic * (1.0 - analytic) / batches as f64).sqrt(),
        undetected_wrong,
    }
}

fn print_report(r: &FusionReport) {
    let mut table =
        Table::new(&["cheat", "pool", "rate", "measured", "analytic", "diff (pts)", "σ (pts)", "escaped wrong"]);
    for p in &r.points {
        table.row(vec![
            p.name.clone(),
            match p.pool_labels {
                PoolLabels::HonestModel => "honest labels".into(),
                PoolLabels::GroundTruth { claimed_accuracy } => format!("truth ≥ {claimed_accuracy:.4}"),
            },
            format!("{:.4}", p.cheating_rate),
            format!("{:.2} %", 100.0 * p.measured),
            format!("{:.2} %{}", 100.0 * p.analytic, if p.exact { "" } else { " ≈" }),
            format!("{:+.2}", p.difference_points),
            format!("{:.2}", p.standard_error_points),
            p.undetected_wrong.to_string(),
        ]);
    }
    print!("{}", table.render());
    println!(
        "fusion on {} ({}): n = {}, m = {}, k = {}, β = {}; honest model {:.2} %, substitute (f = {} unless named below) {:.2} %, \
         disagreement {:.2} %; {} batches per point, max |measured − analytic| {:.2} points (exact points), {:.1} s",
        r.model,
        r.dataset,
        r.shape.n,
        r.shape.m,
        r.shape.k,
        r.beta,
        100.0 * r.honest_accuracy,
        r.worse_frac_bits,
        100.0 * r.worse_accuracy,
        100.0 * r.disagreement,
        r.points.first().map_or(0, |p| p.batches),
        r.max_difference_points,
        r.seconds
    );
    if let Some(path) = &r.substitute {
        println!(
            "the server substitutes {path} ({:.2} %); the helper designed m for the f = {} proxy",
            100.0 * r.worse_accuracy,
            r.worse_frac_bits
        );
    }
    println!(
        "pool {}: the proxy disagrees on {:.2} % of it, the substitute on {:.2} % ({:.2} % of a random pool); overhead (m + k)/n = {:.1} %",
        r.pool_selection,
        100.0 * r.proxy_pool_disagreement,
        100.0 * r.pool_disagreement,
        100.0 * r.random_pool_disagreement,
        100.0 * r.overhead
    );
    for c in &r.cascade {
        println!(
            "cascade server (plaintext path: routes its cheap model's hardest {:.1} % of inputs to the committed model): \
             corrupts {:.2} % of real answers, disagrees on {:.2} % of the hard pool and {:.2} % of a random pool \
             (random pool of the same m would catch it with {:.2} %)",
            100.0 * c.escalated,
            100.0 * c.query_disagreement,
            100.0 * c.pool_disagreement,
            100.0 * c.random_pool_disagreement,
            100.0 * c.random_pool_detection
        );
    }
}

/// detection_vs_rate.svg: measured (markers) and analytic (lines) detection against the
/// fraction of answers corrupted, one series per cheat family.
fn plot(r: &FusionReport, dir: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if !crate::plot::font_ready() {
        bail!("plot: the plot font could not be registered");
    }
    let path = dir.join("detection_vs_rate.svg");
    let root = SVGBackend::new(&path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let max_rate = r.points.iter().map(|p| p.cheating_rate).fold(0.0f64, f64::max).max(1e-3) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Fusion detection, n={} m={} k={} ({} batches/point)",
                r.shape.n,
                r.shape.m,
                r.shape.k,
                r.points.first().map_or(0, |p| p.batches)
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max_rate, 0.0..1.02)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("fraction of answers corrupted")
        .y_desc("detection probability")
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    type Family = (&'static str, fn(&Cheat) -> bool, RGBColor);
    let families: [Family; 3] = [
        ("flip", |c| matches!(c, Cheat::Flip { .. }), RED),
        ("substitute fraction", |c| matches!(c, Cheat::SubstituteFraction { .. }), BLUE),
        ("corrupt t", |c| matches!(c, Cheat::CorruptExactly { .. }), GREEN),
    ];
    for (name, member, color) in families {
        let mut pts: Vec<&Point> = r.points.iter().filter(|p| member(&p.cheat)).collect();
        pts.sort_by(|a, b| a.cheating_rate.total_cmp(&b.cheating_rate));
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.cheating_rate, p.analytic)), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
            .label(format!("{name}: analytic"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.cheating_rate, p.measured), 5, color.filled())))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
            .label(format!("{name}: measured"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}

/// What `moat infer --fusion` learned.
#[derive(Debug, Serialize)]
pub struct FusionInference {
    /// `fusion-remote`, `fusion-secure` or `fusion-simulated`.
    pub execution: String,
    /// The verified labels of the real queries.
    pub labels: Vec<usize>,
    /// Their true labels (dataset inputs).
    pub true_labels: Vec<usize>,
    /// The check.
    pub check: moat_client::fusion::CheckReport,
    /// n, m, k.
    pub shape: Shape,
    /// Seconds for the whole batch (admission and setup included on the secure path).
    pub seconds: f64,
    /// Seconds labelling and selecting the known-answer pool before the batch (plaintext, on
    /// the client; once per pool, reusable across batches), not in `seconds`.
    pub pool_seconds: f64,
    /// Bytes sent and received on the secure path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// On the secure paths: the session's setup and the protocol time of its n + m + k
    /// queries, timed as `moat secure client` times its queries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<moat_client::SessionStats>,
}

/// The public known-answer pool for `moat infer --fusion`: the dataset's training split,
/// labelled by `reference` (the committed model's published copy: any disagreement is
/// evidence) or by ground truth with the server's claimed accuracy.
fn infer_pool(args: &super::infer::Args, train: &moat_nn::data::Dataset) -> anyhow::Result<KnownAnswerPool<Vec<f32>>> {
    let size = train.len().min(args.fusion_pool);
    let samples: Vec<Vec<f32>> = (0..size).map(|i| train.sample(i).to_vec()).collect();
    match (&args.fusion_reference, args.claimed_accuracy) {
        (Some(path), _) => {
            if let Some(keep) = args.fusion_hardest
                && (keep == 0 || keep > size)
            {
                bail!("--fusion-hardest {keep} must be in 1..={size} (the pool's size)");
            }
            let q = QuantizedGraph::new(&load_model(path)?, args.fixed_point.fixed_point()?)?;
            let fixed = q.fixed();
            // One reference inference per sample gives both its label (the argmax of the ring
            // logits, as `predict`) and its top-1 − top-2 gap.
            let labelled: Vec<(usize, Option<f32>)> =
                moat_nn::exec::par_map(size, |i| match q.logits_encoded(train.sample(i)) {
                    Ok(ring) => {
                        let label = moat_nn::exec::argmax_ring(fixed, &ring).unwrap_or(usize::MAX);
                        let decoded: Vec<f32> = ring.iter().map(|&v| fixed.decode(v) as f32).collect();
                        (label, moat_client::fusion::selection::margin(&decoded).map(|(_, m)| m))
                    }
                    Err(_) => (usize::MAX, None),
                });
            let (labels, margins): (Vec<usize>, Vec<Option<f32>>) = labelled.into_iter().unzip();
            let pool = KnownAnswerPool::honest_labels(samples, labels)?;
            match args.fusion_hardest {
                None => Ok(pool),
                Some(keep) => Ok(pool.select(&moat_client::fusion::selection::hardest(&margins, keep))?),
            }
        }
        (None, Some(a)) => {
            Ok(KnownAnswerPool::ground_truth(samples, (0..size).map(|i| train.label(i)).collect(), a / 100.0)?)
        }
        (None, None) => bail!(
            "--fusion needs known answers: --fusion-reference MODEL.onnx (the committed model's labels) or \
             --claimed-accuracy PERCENT (ground truth with a binomial test)"
        ),
    }
}

/// The client's session secret: from the OS, or `--insecure-seed` for experiments.
fn client_seed(args: &super::infer::Args) -> anyhow::Result<moat_mpc::Seed> {
    match args.insecure_seed {
        Some(n) => Ok(moat_mpc::Seed::insecure_from_u64(n)),
        None => moat_mpc::Seed::from_os().context("no OS entropy for the client's session secret"),
    }
}

/// `moat infer … --fusion m,k[,beta]`: the queries `--index I --count C` mixed with known
/// answers and duplicates, on the path the other flags choose (plaintext `--url`, `--secure`,
/// or the local simulated two-party engine), labels printed only after the check.
pub fn infer(args: &super::infer::Args, spec: &str) -> anyhow::Result<()> {
    use moat_client::fusion::{OipOracle, OipTarget, SessionOracle, SimulatedOracle};
    let config = FusionConfig::parse(spec)?;
    let index = args.index.context("--fusion takes its queries from the dataset: --index I --count C")?;
    let data = args.data.load(args.seed.unwrap_or(0))?;
    if args.count == 0 || index.saturating_add(args.count) > data.test.len() {
        bail!("--index {index} + --count {} must be within the {} test samples", args.count, data.test.len());
    }
    let queries: Vec<Vec<f32>> = (index..index + args.count).map(|i| data.test.sample(i).to_vec()).collect();
    let true_labels: Vec<usize> = (index..index + args.count).map(|i| data.test.label(i)).collect();
    let pool_started = Instant::now();
    let pool = infer_pool(args, &data.train)?;
    let pool_seconds = pool_started.elapsed().as_secs_f64();
    let shape = Shape { n: queries.len(), m: config.known, k: config.duplicates };
    let mut randomness = Randomness::Os;
    let started = Instant::now();
    let (execution, outcome, session) = match &args.url {
        Some(url) => {
            let name = args.remote_model.as_deref().context("--url needs --model NAME")?;
            let mut http = moat_client::HttpClient::new(url)?;
            if let Some(key) = &args.api_key {
                http = http.with_api_key(key.clone());
            }
            let meta = http.model_metadata(name, None).with_context(|| format!("asking {url} about '{name}'"))?;
            if args.secure {
                let client = moat_client::SecureClient::new(http).with_timeout(args.timeout);
                let mut request = moat_client::SessionRequest::queries(shape.total() as u64);
                for (k, v) in super::bench_http::parse_params(&args.params)? {
                    request = request.with_parameter(k, v);
                }
                let admission = client.admit_model(name, None, &request)?;
                let seed = client_seed(args)?;
                let mut session = client.connect(&admission, seed)?;
                let identity = ModelIdentity::from(&admission);
                let outcome =
                    run(&config, &pool, queries, &mut SessionOracle::new(&mut session, identity), &mut randomness);
                let stats = session.close()?;
                ("fusion-secure", outcome, Some(stats))
            } else {
                // A model's path serves a task of that name too: one request, routed once.
                let target = OipTarget::Model { name: name.into(), version: None };
                let max_batch =
                    meta.parameters.get(moat_wire::params::MAX_BATCH_SIZE).and_then(serde_json::Value::as_u64);
                let mut oracle = OipOracle::new(&http, target, meta.input_name()?.to_string(), meta.sample_shape()?)
                    .with_max_batch(max_batch.map_or(usize::MAX, |b| b as usize));
                // A named model's answers carry its commitment, so a batch over its
                // max_batch_size may go as several requests; a task's parts would each be
                // routed on their own: refused before any query.
                if meta.platform != "moat_task" {
                    oracle = oracle.allowing_split();
                }
                for (k, v) in super::bench_http::parse_params(&args.params)? {
                    oracle = oracle.with_parameter(k, v);
                }
                ("fusion-remote", run(&config, &pool, queries, &mut oracle, &mut randomness), None)
            }
        }
        None if args.fusion_connect.is_some() => {
            let address = args.fusion_connect.as_deref().unwrap_or_default();
            let config_ch = moat_mpc::transport::ChannelConfig::default()
                .with_timeout(args.timeout)
                .with_connect_timeout(args.timeout);
            let mut session = moat_client::SecureSession::connect_direct(address, config_ch, client_seed(args)?)
                .with_context(|| format!("secure session with {address}"))?;
            let identity = ModelIdentity::named(address, None);
            let outcome =
                run(&config, &pool, queries, &mut SessionOracle::new(&mut session, identity), &mut randomness);
            let stats = session.close()?;
            ("fusion-direct", outcome, Some(stats))
        }
        None => {
            let path = args.model.as_deref().context("give a MODEL.onnx or --url")?;
            let q = Arc::new(QuantizedGraph::new(&load_model(path)?, args.fixed_point.fixed_point()?)?);
            let seed = args.seed.unwrap_or(0);
            let engine = moat_mpc::engine::SimulatedEngine::new(q, seed);
            let mut oracle = SimulatedOracle::new(engine, ModelIdentity::named(&path.display().to_string(), None));
            ("fusion-simulated", run(&config, &pool, queries, &mut oracle, &mut randomness), None)
        }
    };
    let verified = match outcome {
        Ok(v) => v,
        Err(FusionError::ServerCheated(evidence)) => bail!("the server cheated, no label released: {evidence}"),
        Err(e) => return Err(e.into()),
    };
    let result = FusionInference {
        execution: execution.into(),
        check: verified.report().clone(),
        labels: verified.into_labels(),
        true_labels,
        shape,
        seconds: started.elapsed().as_secs_f64(),
        pool_seconds,
        bytes: session.as_ref().map(|s| s.bytes_sent + s.bytes_received),
        session,
    };
    if args.json {
        return print_json(&result);
    }
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(" ");
    println!("verified labels {} ({})", list(&result.labels), result.execution);
    println!("true labels     {}", list(&result.true_labels));
    println!(
        "check: {}/{} known answers right (p = {:.3} ≥ β = {}), {} duplicate pairs agree, one model: {}; n = {}, m = {}, k = {}, {:.2} s{}",
        result.check.known_correct,
        result.check.known_total,
        result.check.p_value,
        result.check.beta,
        result.check.duplicates,
        result.check.model,
        shape.n,
        shape.m,
        shape.k,
        result.seconds,
        result.bytes.map_or(String::new(), |b| format!(", {:.1} MiB", b as f64 / (1024.0 * 1024.0)))
    );
    Ok(())
}
