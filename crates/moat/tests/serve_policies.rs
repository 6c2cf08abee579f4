//! End-to-end: the selection frequencies of each policy, measured over HTTP against the real
//! `moat serve`, match the policy's definition within sampling error.
//!
//! The expected distributions are computed here, independently of moat-serve's policy module,
//! from the profiles the server reports: fastest and uniform directly, the exponential
//! mechanism by its formula, permute-and-flip by enumerating permutations, noisy-spec by Monte
//! Carlo over the Laplace noise.

mod serve_util;

use std::collections::BTreeMap;

use moat_client::{HttpClient, InferRequest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{Value, json};
use serve_util::*;

const DELTA_U: f64 = 0.01;

#[derive(Clone, Copy, Debug)]
struct Profile {
    accuracy: f64,
    latency: f64,
}

fn utility(p: Profile, a: f64, l: f64) -> f64 {
    ((1.0 - (a - p.accuracy).max(0.0) / 100.0) + (1.0 - (p.latency - l).max(0.0) / 100.0)) / 2.0
}

fn feasible(p: Profile, a: f64, l: f64) -> bool {
    p.accuracy >= a && p.latency <= l
}

fn front(ps: &[Profile]) -> Vec<usize> {
    (0..ps.len())
        .filter(|&i| {
            !ps.iter().any(|q| {
                q.accuracy >= ps[i].accuracy
                    && q.latency <= ps[i].latency
                    && (q.accuracy > ps[i].accuracy || q.latency < ps[i].latency)
            })
        })
        .collect()
}

fn fastest(ps: &[Profile], a: f64, l: f64) -> usize {
    let feasible: Vec<usize> = (0..ps.len()).filter(|&i| feasible(ps[i], a, l)).collect();
    if let Some(&i) = feasible.iter().min_by(|&&i, &&j| ps[i].latency.total_cmp(&ps[j].latency)) {
        return i;
    }
    (0..ps.len()).max_by(|&i, &j| ps[i].accuracy.total_cmp(&ps[j].accuracy)).unwrap_or(0)
}

fn exponential(ps: &[Profile], a: f64, l: f64, eps: f64) -> Vec<f64> {
    let mut p = vec![0.0; ps.len()];
    let f = front(ps);
    let w: Vec<f64> = f.iter().map(|&i| (eps * utility(ps[i], a, l) / (2.0 * DELTA_U)).exp()).collect();
    let total: f64 = w.iter().sum();
    for (k, &i) in f.iter().enumerate() {
        p[i] = w[k] / total;
    }
    p
}

fn permute_and_flip(ps: &[Profile], a: f64, l: f64, eps: f64) -> Vec<f64> {
    fn perms(items: &[usize]) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut tail in perms(&rest) {
                tail.insert(0, first);
                out.push(tail);
            }
        }
        out
    }
    let f = front(ps);
    let best = f.iter().map(|&i| utility(ps[i], a, l)).fold(f64::NEG_INFINITY, f64::max);
    let accept = |i: usize| (eps * (utility(ps[i], a, l) - best) / (2.0 * DELTA_U)).exp();
    let all = perms(&f);
    let mut p = vec![0.0; ps.len()];
    for perm in &all {
        let mut reach = 1.0 / all.len() as f64;
        for &i in perm {
            p[i] += reach * accept(i);
            reach *= 1.0 - accept(i);
        }
    }
    p
}

fn noisy_spec_monte_carlo(ps: &[Profile], a: f64, l: f64, eps: f64, sens: (f64, f64), draws: usize) -> Vec<f64> {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut laplace = |scale: f64| {
        let u: f64 = rng.random::<f64>() - 0.5;
        -scale * u.signum() * (1.0 - 2.0 * u.abs()).max(f64::MIN_POSITIVE).ln()
    };
    let mut counts = vec![0usize; ps.len()];
    for _ in 0..draws {
        let (na, nl) = (a + laplace(sens.0 / eps), l + laplace(sens.1 / eps));
        counts[fastest(ps, na, nl)] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

/// Sends `n` task requests from 4 threads; counts the disclosed serving models.
fn sample_task(url: &str, task: &str, request: &InferRequest, n: usize) -> Result<BTreeMap<String, usize>, Error> {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, task, request) = (url.to_string(), task.to_string(), request.clone());
            std::thread::spawn(move || -> Result<Vec<String>, String> {
                let client = HttpClient::new(&url).map_err(|e| e.to_string())?;
                (0..n / 4 + usize::from(t < n % 4))
                    .map(|_| client.infer_task(&task, &request).map(|r| r.model_name).map_err(|e| e.to_string()))
                    .collect()
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for t in threads {
        for name in t.join().map_err(|_| "thread panicked")?? {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

fn assert_matches(task: &str, names: &[&str], counts: &BTreeMap<String, usize>, expected: &[f64], extra_slack: f64) {
    let n: usize = counts.values().sum();
    let mut chi2 = 0.0;
    for (i, name) in names.iter().enumerate() {
        let got = counts.get(*name).copied().unwrap_or(0) as f64 / n as f64;
        let p = expected[i];
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        if p > 0.0 {
            chi2 += (got - p).powi(2) * n as f64 / p;
        }
        assert!(
            (got - p).abs() <= 5.0 * sigma + extra_slack,
            "{task}: {name} served {got:.4} of requests, expected {p:.4} (±{:.4}); counts {counts:?}",
            5.0 * sigma + extra_slack
        );
    }
    eprintln!("{task}: counts {counts:?}, expected {expected:?}, chi2 {chi2:.2} on {} df", names.len() - 1);
}

#[test]
fn selection_frequencies_match_each_policy() -> TestResult {
    let dir = scratch("policies")?;
    let repo = build_repo(&dir, 10)?;
    // Accuracies are known before the server starts (the cards' test accuracy is the held-out
    // accuracy); they decide the spec and keep the distributions away from 0 and 1.
    let card_accuracy = |name: &str| -> Result<f64, Error> {
        let card: Value = serde_json::from_str(&std::fs::read_to_string(repo.join(name).join("1/model.card.json"))?)?;
        Ok(card["test_accuracy"].as_f64().ok_or("card")? * 100.0)
    };
    let (a16, a64, a256) = (card_accuracy("mlp-16")?, card_accuracy("mlp-64")?, card_accuracy("mlp-256")?);
    assert!(a16 < a64 && a64 < a256, "the zoo must have a real front: {a16} {a64} {a256}");
    let models = ["mlp-16", "mlp-256", "mlp-64"]; // name order, as the server lists members
    let (eps, sens) = (0.5, (1.0, 1.0));
    let tasks = json!({
        "t-fastest": {"policy": "fastest", "disclose_model": true, "models": models},
        "t-uniform": {"policy": "uniform", "disclose_model": true, "models": models},
        "t-exp": {"policy": "exponential", "epsilon": eps, "disclose_model": true, "models": models},
        "t-pf": {"policy": "permute-and-flip", "epsilon": eps, "disclose_model": true, "models": models},
        "t-noisy": {"policy": "noisy-spec", "epsilon": eps, "disclose_model": true, "models": models,
                    "accuracy_sensitivity": sens.0, "latency_sensitivity_ms": sens.1},
    });
    std::fs::write(repo.join("tasks.json"), tasks.to_string())?;
    let server = ServerProcess::start(&repo, &["--seed", "2024"])?;
    let client = HttpClient::new(&server.url)?;
    let profiles: Vec<Profile> = models
        .iter()
        .map(|m| -> Result<Profile, Error> {
            let p = client.model_metadata(m, None)?.parameters["profile"].clone();
            Ok(Profile {
                accuracy: p["accuracy"].as_f64().ok_or("acc")?,
                latency: p["latency_ms"].as_f64().ok_or("lat")?,
            })
        })
        .collect::<Result<_, _>>()?;
    let sample = vec![digits_test()?.sample(0).to_vec()];
    let base = InferRequest::batch(&sample, &[1, 8, 8])?;
    let n = 3000;

    // Fastest: deterministic.
    let (a, l) = (a64 - 0.5, 10.0);
    let counts = sample_task(&server.url, "t-fastest", &base.clone().with_spec(Some(a), Some(l)), 40)?;
    let mut expected = vec![0.0; 3];
    expected[fastest(&profiles, a, l)] = 1.0;
    assert_matches("fastest", &models, &counts, &expected, 0.0);

    // Uniform over feasible: everything above mlp-16's accuracy minus a point.
    let (a, l) = (a16 - 1.0, 10.0);
    let feasible_set: Vec<usize> = (0..3).filter(|&i| feasible(profiles[i], a, l)).collect();
    let expected: Vec<f64> =
        (0..3).map(|i| if feasible_set.contains(&i) { 1.0 / feasible_set.len() as f64 } else { 0.0 }).collect();
    let counts = sample_task(&server.url, "t-uniform", &base.clone().with_spec(Some(a), Some(l)), n)?;
    assert_matches("uniform", &models, &counts, &expected, 0.0);

    // The PSML defenses, one point above the middle model: only the top model is feasible.
    let (a, l) = (a64 + 1.0, 10.0);
    let spec = base.clone().with_spec(Some(a), Some(l));
    let counts = sample_task(&server.url, "t-exp", &spec, n)?;
    assert_matches("exponential", &models, &counts, &exponential(&profiles, a, l, eps), 0.0);
    let counts = sample_task(&server.url, "t-pf", &spec, n)?;
    assert_matches("permute-and-flip", &models, &counts, &permute_and_flip(&profiles, a, l, eps), 0.0);
    let counts = sample_task(&server.url, "t-noisy", &spec, n)?;
    let expected = noisy_spec_monte_carlo(&profiles, a, l, eps, sens, 400_000);
    // Monte Carlo error of the expectation (400k draws) on top of the sampling error.
    assert_matches("noisy-spec", &models, &counts, &expected, 0.004);
    // Randomised policies really randomise here.
    assert!(counts.len() >= 2, "{counts:?}");

    // The server's own selection counters agree with what the responses disclosed.
    let stats = client.get_json("/v2/tasks/t-noisy/stats")?;
    for m in models {
        assert_eq!(
            stats["selections"][m].as_u64().unwrap_or(0) as usize,
            counts.get(m).copied().unwrap_or(0),
            "{stats}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
