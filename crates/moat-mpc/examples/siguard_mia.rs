//! SIGuard against threshold membership-inference attacks on a victim with a model card, measured on the
//! probabilities the two-party protocol reveals (computed by the plaintext `RingOps`, which the
//! tests hold bit-identical to the real protocol).
//!
//! `cargo run --release --example siguard_mia -- MODEL.onnx CARD.json [g1] [OUTER INNER]`
//! (datasets other than the embedded digits are read from `$MOAT_DATA_DIR`, default
//! `../shared/data`).
//!
//! The card's members are the first `count` samples of the dataset's training split (drawn by
//! its `split_seed` where the set has no official split). The server trains its defender on the first half of the members against as
//! many non-members of the training split (its own held-out data); the attacks are scored on
//! the other half of the members against as many test samples. For each attack (confidence,
//! negative loss, negative entropy, modified entropy) it prints AUC and TPR at 1 % FPR without
//! and with SIGuard, then label agreement, mean L1 distortion and SIGuard's plaintext time.

use std::error::Error;
use std::time::Instant;

use moat_mpc::ring_ops::{DefenderShape, DefenderWeights, PlainOps, SiGuard, SiGuardConfig, softmax};
use moat_nn::{FixedPoint, QuantizedGraph};

/// Encoded logits and true labels of a set of queries.
type Queries = Vec<(Vec<u64>, usize)>;

/// AUC (ties count half) and TPR at `fpr` of scores where members are positive.
fn auc_tpr(members: &[f64], others: &[f64], fpr: f64) -> (f64, f64) {
    let mut wins = 0.0;
    for m in members {
        for o in others {
            wins += if m > o {
                1.0
            } else if m == o {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / (members.len() * others.len()) as f64;
    let mut sorted = others.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // The threshold that lets at most ⌊fpr·n⌋ non-members above it.
    let allowed = (fpr * others.len() as f64).floor() as usize;
    let threshold = sorted.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    let tpr = members.iter().filter(|m| **m > threshold).count() as f64 / members.len() as f64;
    (auc, tpr)
}

/// Attack scores of one revealed vector with true label `y` (higher = member).
fn scores(p: &[f64], y: usize) -> [f64; 4] {
    let eps = 1e-6;
    let confidence = p.iter().copied().fold(0.0, f64::max);
    let loss = (p[y].max(eps)).ln();
    let entropy: f64 = p.iter().map(|q| if *q > 0.0 { q * q.ln() } else { 0.0 }).sum();
    let modified: f64 = p
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q.clamp(eps, 1.0 - eps);
            if i == y { -(1.0 - q) * q.ln() } else { -q * (1.0 - q).ln() }
        })
        .sum();
    [confidence, loss, entropy, -modified]
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, card, rest @ ..] = &args[..] else {
        return Err("usage: siguard_mia MODEL.onnx CARD.json [g1] [OUTER INNER]".into());
    };
    let g1_only = rest.first().is_some_and(|a| a == "g1");
    let counts: Vec<u32> = rest.iter().filter_map(|a| a.parse().ok()).collect();
    let mut config = SiGuardConfig { g1_only, ..Default::default() };
    if let [outer, inner] = counts[..] {
        config.outer = outer;
        config.inner = inner;
    }
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(card)?)?;
    let split_seed = card["members"]["split_seed"].as_u64().ok_or("card without members.split_seed")?;
    let count = card["members"]["count"].as_u64().ok_or("card without members.count")? as usize;
    let graph = moat_nn::onnx::load_onnx(std::path::Path::new(model))?;
    let fp = FixedPoint::default();
    let q = QuantizedGraph::new(&graph, fp)?;
    let dataset = card["input"]["dataset"].as_str().ok_or("card without input.dataset")?;
    let data_dir = std::env::var("MOAT_DATA_DIR").unwrap_or_else(|_| "../shared/data".into());
    let data = moat_nn::data::load(dataset, Some(std::path::Path::new(&data_dir)), split_seed)?;
    let half = count / 2;
    let ops = &mut PlainOps::new(fp);
    let logits = |set: &moat_nn::data::Dataset, range: std::ops::Range<usize>| -> Result<Queries, Box<dyn Error>> {
        range.map(|i| Ok((q.logits_encoded(set.sample(i))?, set.label(i)))).collect()
    };
    let train_members = logits(&data.train, 0..half)?;
    let train_others = logits(&data.train, count..count + half)?;
    let eval_members = logits(&data.train, half..count)?;
    let eval_others = logits(&data.test, 0..(count - half).min(data.test.len()))?;
    let as_f32 = |ops: &mut PlainOps, set: &[(Vec<u64>, usize)]| -> Result<Vec<Vec<f32>>, Box<dyn Error>> {
        set.iter()
            .map(|(z, _)| Ok(softmax(ops, z, z.len(), config.softmax)?.iter().map(|v| fp.decode(*v) as f32).collect()))
            .collect()
    };
    let (dm, dn) = (as_f32(ops, &train_members)?, as_f32(ops, &train_others)?);
    let classes = q.graph().output_shape().iter().product::<usize>();
    let mut rng = moat_mpc::Seed::from_os()?.rng();
    let trained = DefenderWeights::train(DefenderShape::paper(classes), &dm, &dn, 300, &mut rng)?;
    let train_acc = (dm.iter().filter(|p| trained.output(p) > 0.0).count()
        + dn.iter().filter(|p| trained.output(p) <= 0.0).count()) as f64
        / (dm.len() + dn.len()) as f64;
    let siguard = SiGuard::new(trained.to_defender(fp)?, config, classes)?;
    println!(
        "victim {model}: {count} members; defender trained on {} + {} (train accuracy {train_acc:.3}); evaluation on {} members + {} non-members; {config:?}",
        dm.len(),
        dn.len(),
        eval_members.len(),
        eval_others.len()
    );
    let mut l1 = 0.0;
    let (mut agree, mut total) = (0usize, 0usize);
    let mut seconds = 0.0;
    let mut all: Vec<[Vec<f64>; 4]> = vec![Default::default(); 4];
    for (set, member) in [(&eval_members, true), (&eval_others, false)] {
        for (z, y) in set {
            let plain = softmax(ops, z, z.len(), config.softmax)?;
            let started = Instant::now();
            let guarded = siguard.run(ops, z)?;
            seconds += started.elapsed().as_secs_f64();
            let plain: Vec<f64> = plain.iter().map(|v| fp.decode(*v)).collect();
            let guarded: Vec<f64> = guarded.iter().map(|v| fp.decode(*v)).collect();
            l1 += plain.iter().zip(&guarded).map(|(a, b)| (a - b).abs()).sum::<f64>();
            let label = |v: &[f64]| v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best });
            agree += usize::from(label(&plain) == label(&guarded));
            total += 1;
            // all[0]: unguarded members, [1]: unguarded others, [2]/[3]: guarded.
            let (a, b) = if member { (0, 2) } else { (1, 3) };
            for (k, s) in scores(&plain, *y).into_iter().enumerate() {
                all[a][k].push(s);
            }
            for (k, s) in scores(&guarded, *y).into_iter().enumerate() {
                all[b][k].push(s);
            }
        }
    }
    for (k, name) in ["confidence", "loss", "entropy", "modified-entropy"].iter().enumerate() {
        let (auc0, tpr0) = auc_tpr(&all[0][k], &all[1][k], 0.01);
        let (auc1, tpr1) = auc_tpr(&all[2][k], &all[3][k], 0.01);
        println!(
            "{name:>17}: AUC {auc0:.3} → {auc1:.3} with SIGuard; TPR@1%FPR {:.1} % → {:.1} %",
            100.0 * tpr0,
            100.0 * tpr1
        );
    }
    println!(
        "label agreement {agree}/{total}; mean L1 distortion {:.4}; SIGuard {:.1} ms per query (plaintext)",
        l1 / total.max(1) as f64,
        1e3 * seconds / total.max(1) as f64
    );
    Ok(())
}
