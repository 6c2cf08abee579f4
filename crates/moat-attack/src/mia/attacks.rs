//! The attacks: each maps what the attacker observed to one score per target (higher =
//! "member").
//!
//! | name | attack | needs |
//! |---|---|---|
//! | `loss`, `confidence`, `entropy`, `mentr` | global threshold on the loss, on `p_y`, on the entropy, on Song & Mittal's modified entropy (USENIX Sec. 2021) | probabilities |
//! | `top1` | global threshold on the largest probability, whatever the label (Salem et al., NDSS 2019, adversary 3) | probabilities |
//! | `shadow` | Shokri et al. (S&P 2017): a classifier trained on reference models' outputs on their own members and non-members | probabilities, references |
//! | `lira-online`, `lira-online-fixed` | LiRA (Carlini et al., S&P 2022): Gaussian likelihood ratio of the logit-scaled confidence under the IN and OUT reference models, per-sample or global variance | probabilities, references |
//! | `lira-offline`, `lira-offline-fixed` | LiRA offline: one-sided test against the OUT models only | probabilities, references |
//! | `rmia`, `rmia-offline`, `rmia-1` | RMIA (Zarifzadeh et al., ICML 2024): the likelihood ratio `p(x∣θ)/p(x)` compared pairwise with population samples `z`; online with all reference models, offline with the OUT models and the linear correction `a`, offline with one reference model | probabilities (targets and population), references |
//! | `gap` | the gap attack (Yeom et al.): correctly classified = member | labels |
//! | `robustness` | label-only noise robustness (Choquette-Choo et al., ICML 2021): the fraction of noisy copies still given the true label | labels on noisy copies |
//!
//! Every attack but `entropy` and `top1` reads the target's true label ([`Attack::reads_label`]).

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::error::{Result, invalid};
use super::reference::References;
use super::signals;
use crate::victim::{Victim, VictimError};
use moat_mpc::engine::Reveal;
use moat_nn::data::Dataset;

/// One membership-inference attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Threshold on `p_y`.
    Confidence,
    /// Threshold on the entropy of the answer.
    Entropy,
    /// Label-only: correctly classified = member.
    Gap,
    /// LiRA offline, per-sample OUT variance.
    LiraOffline,
    /// LiRA offline, one global OUT variance.
    LiraOfflineFixed,
    /// LiRA online, per-sample IN and OUT variances.
    LiraOnline,
    /// LiRA online, global IN and OUT variances.
    LiraOnlineFixed,
    /// Threshold on the cross-entropy loss.
    Loss,
    /// Threshold on the modified entropy.
    Mentr,
    /// RMIA online: all reference models.
    Rmia,
    /// RMIA offline with a single OUT reference model per sample.
    Rmia1,
    /// RMIA offline: the OUT reference models with the linear correction.
    RmiaOffline,
    /// Label-only robustness to input noise.
    Robustness,
    /// The shadow-model classifier.
    Shadow,
    /// Threshold on the largest probability (label-free).
    Top1,
}

impl Attack {
    /// Every attack, in report order.
    pub const ALL: [Attack; 15] = [
        Attack::Loss,
        Attack::Confidence,
        Attack::Top1,
        Attack::Entropy,
        Attack::Mentr,
        Attack::Shadow,
        Attack::LiraOnline,
        Attack::LiraOnlineFixed,
        Attack::LiraOffline,
        Attack::LiraOfflineFixed,
        Attack::Rmia,
        Attack::RmiaOffline,
        Attack::Rmia1,
        Attack::Gap,
        Attack::Robustness,
    ];

    /// The attack's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Confidence => "confidence",
            Attack::Entropy => "entropy",
            Attack::Gap => "gap",
            Attack::LiraOffline => "lira-offline",
            Attack::LiraOfflineFixed => "lira-offline-fixed",
            Attack::LiraOnline => "lira-online",
            Attack::LiraOnlineFixed => "lira-online-fixed",
            Attack::Loss => "loss",
            Attack::Mentr => "mentr",
            Attack::Rmia => "rmia",
            Attack::Rmia1 => "rmia-1",
            Attack::RmiaOffline => "rmia-offline",
            Attack::Robustness => "robustness",
            Attack::Shadow => "shadow",
            Attack::Top1 => "top1",
        }
    }

    /// Whether the attack needs reference models.
    pub fn needs_references(self) -> bool {
        matches!(
            self,
            Attack::Shadow
                | Attack::LiraOnline
                | Attack::LiraOnlineFixed
                | Attack::LiraOffline
                | Attack::LiraOfflineFixed
                | Attack::Rmia
                | Attack::RmiaOffline
                | Attack::Rmia1
        )
    }

    /// Whether the attack reads the target's true label (all but `entropy` and `top1`). A
    /// guard that keeps the predicted label leaves its correctness visible to such an attack,
    /// so the gap attack's AUC `0.5 + (a_in − a_out)/2` (the accuracies on members and
    /// non-members) stays within its reach whatever the guard does to the scores.
    pub fn reads_label(self) -> bool {
        !matches!(self, Attack::Entropy | Attack::Top1)
    }

    /// Whether the attack reads only labels.
    pub fn label_only(self) -> bool {
        matches!(self, Attack::Gap | Attack::Robustness)
    }
}

impl FromStr for Attack {
    type Err = super::MiaError;

    fn from_str(s: &str) -> Result<Self> {
        Attack::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
            invalid(format!("unknown attack '{s}' (one of {})", names.join(", ")))
        })
    }
}

/// Knobs of the attacks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiaConfig {
    /// RMIA's threshold γ on the pairwise likelihood ratio.
    pub rmia_gamma: f64,
    /// RMIA offline's linear correction `a`: `p(x) = ((1 + a)·p_OUT(x) + 1 − a) / 2`.
    pub rmia_offline_a: f64,
    /// Noisy copies per target for the robustness attack.
    pub robustness_copies: usize,
    /// Standard deviation of the Gaussian noise (in the model's normalised input units).
    pub robustness_sigma: f32,
    /// Seeds the robustness noise and the shadow classifier (not secret).
    pub seed: u64,
}

impl Default for MiaConfig {
    fn default() -> Self {
        Self { rmia_gamma: 1.0, rmia_offline_a: 0.3, robustness_copies: 16, robustness_sigma: 0.1, seed: 0 }
    }
}

/// Scores of threshold attacks: the signal's sign is set so that members score higher.
pub fn threshold_scores(attack: Attack, probs: &[Vec<f64>], labels: &[usize]) -> Result<Vec<f64>> {
    let f: fn(&[f64], usize) -> f64 = match attack {
        Attack::Loss => |p, y| -signals::loss(p, y),
        Attack::Confidence => signals::confidence,
        Attack::Entropy => |p, _| -signals::entropy(p),
        Attack::Top1 => |p, _| signals::top1(p),
        Attack::Mentr => |p, y| -signals::modified_entropy(p, y),
        other => return Err(invalid(format!("'{}' is not a threshold attack", other.name()))),
    };
    Ok(probs.iter().zip(labels).map(|(p, &y)| f(p, y)).collect())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

fn log_normal_pdf(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    -0.5 * z * z - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// Smallest standard deviation LiRA divides by.
const MIN_STD: f64 = 1e-6;

/// LiRA scores of the targets (pool samples `0..targets`). `observed[i]` is the victim's
/// logit-scaled confidence on target `i`. Online: `ln N(φ; μ_in, σ_in²) − ln N(φ; μ_out,
/// σ_out²)`; offline: `(φ − μ_out) / σ_out`, the monotone image of the one-sided p-value
/// `Pr[Z < φ]`, kept unsaturated. `fixed_variance` replaces the per-sample deviations by the
/// deviation of all IN (OUT) values together, as the reference implementation does.
pub fn lira_scores(
    refs: &References,
    labels: &[usize],
    observed: &[f64],
    online: bool,
    fixed_variance: bool,
) -> Vec<f64> {
    let phi = |i: usize, inside: bool| refs.signal(i, inside, |p| signals::logit_confidence(p, labels[i]));
    let n = observed.len();
    let ins: Vec<Vec<f64>> = (0..n).map(|i| phi(i, true)).collect();
    let outs: Vec<Vec<f64>> = (0..n).map(|i| phi(i, false)).collect();
    let global = |sets: &[Vec<f64>]| std(&sets.concat()).max(MIN_STD);
    let (global_in, global_out) = (global(&ins), global(&outs));
    (0..n)
        .map(|i| {
            let sd = |v: &[f64], g: f64| if fixed_variance { g } else { std(v).max(MIN_STD) };
            let (mu_out, sd_out) = (mean(&outs[i]), sd(&outs[i], global_out));
            if online {
                let (mu_in, sd_in) = (mean(&ins[i]), sd(&ins[i], global_in));
                log_normal_pdf(observed[i], mu_in, sd_in) - log_normal_pdf(observed[i], mu_out, sd_out)
            } else {
                (observed[i] - mu_out) / sd_out
            }
        })
        .collect()
}

/// How RMIA estimates `p(x)`, the probability of `x`'s label averaged over models.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RmiaMode {
    /// The mean over all reference models (half of them trained on `x`).
    Online,
    /// `((1 + a)·mean over OUT models + 1 − a) / 2`.
    Offline {
        /// The correction `a`.
        a: f64,
    },
    /// Offline with the first OUT reference model of each sample only.
    Single {
        /// The correction `a`.
        a: f64,
    },
}

/// RMIA scores of the targets (pool samples `0..n`): for each target `x`, the fraction of the
/// population samples `z` (pool samples `n..`) with `(p(x∣θ)/p(x)) / (p(z∣θ)/p(z)) > γ`, where
/// `p(·∣θ)` is the victim's probability of the true label. Equal fractions are ordered by the
/// ratio `p(x∣θ)/p(x)` itself (a logistic of its logarithm, less than one step `1/|Z|`), so the
/// ranking between different fractions is the paper's.
pub fn rmia_scores(
    refs: &References,
    pool_labels: &[usize],
    victim_targets: &[f64],
    victim_population: &[f64],
    mode: RmiaMode,
    gamma: f64,
) -> Result<Vec<f64>> {
    let n = victim_targets.len();
    if victim_population.is_empty() {
        return Err(invalid("RMIA needs population samples"));
    }
    let prior = |i: usize| -> f64 {
        let conf = |p: &[f64]| p[pool_labels[i]];
        let p = match mode {
            RmiaMode::Online => mean(&[refs.signal(i, true, conf), refs.signal(i, false, conf)].concat()),
            RmiaMode::Offline { a } => ((1.0 + a) * mean(&refs.signal(i, false, conf)) + 1.0 - a) / 2.0,
            RmiaMode::Single { a } => {
                let first = refs.signal(i, false, conf).first().copied().unwrap_or(0.0);
                ((1.0 + a) * first + 1.0 - a) / 2.0
            }
        };
        p.max(signals::FLOOR)
    };
    let mut population: Vec<f64> = victim_population.iter().enumerate().map(|(j, &p)| p / prior(n + j)).collect();
    population.sort_by(f64::total_cmp);
    Ok((0..n)
        .map(|i| {
            let ratio = victim_targets[i] / prior(i);
            // Count z with ratio / ratio_z > γ  ⇔  ratio_z < ratio / γ.
            let below = population.partition_point(|&r| r < ratio / gamma);
            // Targets that beat the same number of z (above all, typically) are ordered by
            // their own ratio, inside one step 1/|Z| of the fraction: a finite population
            // otherwise ties the most exposed members with confident non-members at 1.
            let step = 1.0 / population.len() as f64;
            let tie_break = 0.5 * step / (1.0 + (-ratio.max(signals::FLOOR).ln()).exp());
            below as f64 * step + tie_break
        })
        .collect())
}

/// Features the shadow classifier reads: the probabilities sorted in decreasing order, then
/// `p_y`, the loss (scaled by 1/10) and whether the answer is correct.
fn shadow_features(p: &[f64], y: usize) -> Vec<f64> {
    let mut sorted = p.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let correct = if crate::victim::argmax(p) == y { 1.0 } else { 0.0 };
    sorted.extend([p[y], signals::loss(p, y).min(50.0) / 10.0, correct]);
    sorted
}

/// A one-hidden-layer perceptron (ReLU, logistic output) trained with Adam on the
/// cross-entropy: Shokri et al.'s attack model, one for all classes (the label enters through
/// the features).
struct AttackModel {
    w1: Vec<Vec<f64>>,
    b1: Vec<f64>,
    w2: Vec<f64>,
    b2: f64,
}

impl AttackModel {
    const HIDDEN: usize = 32;

    fn forward(&self, x: &[f64]) -> (Vec<f64>, f64) {
        let h: Vec<f64> = self
            .w1
            .iter()
            .zip(&self.b1)
            .map(|(w, b)| (w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + b).max(0.0))
            .collect();
        let logit = h.iter().zip(&self.w2).map(|(a, b)| a * b).sum::<f64>() + self.b2;
        (h, logit)
    }

    fn train(xs: &[Vec<f64>], ys: &[bool], epochs: usize, seed: u64) -> Self {
        let d = xs.first().map_or(0, Vec::len);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let scale = (2.0 / d.max(1) as f64).sqrt();
        let mut model = Self {
            w1: (0..Self::HIDDEN)
                .map(|_| (0..d).map(|_| scale * (rng.random::<f64>() * 2.0 - 1.0)).collect())
                .collect(),
            b1: vec![0.0; Self::HIDDEN],
            w2: (0..Self::HIDDEN).map(|_| 0.1 * (rng.random::<f64>() * 2.0 - 1.0)).collect(),
            b2: 0.0,
        };
        // Adam state over the flattened parameters [w1, b1, w2, b2].
        let count = Self::HIDDEN * d + 2 * Self::HIDDEN + 1;
        let (mut m, mut v) = (vec![0.0; count], vec![0.0; count]);
        let (lr, beta1, beta2, eps, batch) = (1e-3, 0.9, 0.999, 1e-8, 64);
        let mut order: Vec<usize> = (0..xs.len()).collect();
        let mut step = 0;
        for _ in 0..epochs {
            rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
            for chunk in order.chunks(batch) {
                let mut grad = vec![0.0; count];
                for &i in chunk {
                    let (h, logit) = model.forward(&xs[i]);
                    let p = 1.0 / (1.0 + (-logit).exp());
                    let dl = (p - if ys[i] { 1.0 } else { 0.0 }) / chunk.len() as f64;
                    for j in 0..Self::HIDDEN {
                        grad[Self::HIDDEN * d + Self::HIDDEN + j] += dl * h[j];
                        if h[j] > 0.0 {
                            let dh = dl * model.w2[j];
                            for (k, x) in xs[i].iter().enumerate() {
                                grad[j * d + k] += dh * x;
                            }
                            grad[Self::HIDDEN * d + j] += dh;
                        }
                    }
                    grad[count - 1] += dl;
                }
                step += 1;
                let (c1, c2) = (1.0 - f64::powi(beta1, step), 1.0 - f64::powi(beta2, step));
                for (idx, g) in grad.iter().enumerate() {
                    m[idx] = beta1 * m[idx] + (1.0 - beta1) * g;
                    v[idx] = beta2 * v[idx] + (1.0 - beta2) * g * g;
                    let delta = lr * (m[idx] / c1) / ((v[idx] / c2).sqrt() + eps);
                    let param = if idx < Self::HIDDEN * d {
                        &mut model.w1[idx / d][idx % d]
                    } else if idx < Self::HIDDEN * d + Self::HIDDEN {
                        &mut model.b1[idx - Self::HIDDEN * d]
                    } else if idx < count - 1 {
                        &mut model.w2[idx - Self::HIDDEN * d - Self::HIDDEN]
                    } else {
                        &mut model.b2
                    };
                    *param -= delta;
                }
            }
        }
        model
    }
}

/// Shokri et al.'s shadow-model attack: an attack classifier learns IN vs OUT from every
/// reference model's outputs on the population samples (pool samples `targets..`, whose
/// membership the attacker knows), then scores the victim's outputs on the targets (its logit).
pub fn shadow_scores(refs: &References, pool_labels: &[usize], victim_targets: &[Vec<f64>], seed: u64) -> Vec<f64> {
    let n = victim_targets.len();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for k in 0..refs.models() {
        for (i, &y) in pool_labels.iter().enumerate().skip(n) {
            xs.push(shadow_features(&refs.probabilities[k][i], y));
            ys.push(refs.inside[k][i]);
        }
    }
    let model = AttackModel::train(&xs, &ys, 8, seed);
    victim_targets.iter().enumerate().map(|(i, p)| model.forward(&shadow_features(p, pool_labels[i])).1).collect()
}

/// One standard normal draw (Box–Muller).
fn gaussian(rng: &mut ChaCha20Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The label-only robustness scores: for each target, the fraction of `copies` noisy versions
/// (Gaussian, standard deviation `sigma`) plus the clean input that the victim labels
/// correctly. Costs `copies + 1` label queries per target.
pub fn robustness_scores(victim: &mut dyn Victim, targets: &Dataset, config: &MiaConfig) -> Result<Vec<f64>> {
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed ^ 0x726f_6275_7374);
    let mut scores = Vec::with_capacity(targets.len());
    for i in 0..targets.len() {
        let x = targets.sample(i);
        let mut copies: Vec<Vec<f32>> = vec![x.to_vec()];
        for _ in 0..config.robustness_copies {
            copies.push(x.iter().map(|&v| v + config.robustness_sigma * gaussian(&mut rng)).collect());
        }
        let refs: Vec<&[f32]> = copies.iter().map(Vec::as_slice).collect();
        let labels = victim.labels(&refs)?;
        let y = targets.label(i);
        scores.push(labels.iter().filter(|&&l| l == y).count() as f64 / labels.len() as f64);
    }
    Ok(scores)
}

/// One attack's scores on the targets.
#[derive(Clone, Debug, PartialEq)]
pub struct AttackScores {
    /// The attack.
    pub attack: Attack,
    /// One score per target (higher = member).
    pub scores: Vec<f64>,
}

/// Checks that `victim` reveals what `attacks` need (probabilities, unless every attack is
/// label-only), before any query.
pub fn check_reveals(victim: &dyn Victim, attacks: &[Attack]) -> Result<()> {
    match attacks.iter().find(|a| !a.label_only()) {
        Some(a) if !victim.reveals().permits(Reveal::Probabilities) => Err(VictimError::NotRevealed {
            victim: format!("{} (label-only attacks: gap, robustness; asked '{}')", victim.name(), a.name()),
            reveals: victim.reveals(),
            asked: Reveal::Probabilities,
        }
        .into()),
        _ => Ok(()),
    }
}

/// Runs `attacks` against `victim`: queries it on the pool's targets (samples `0..targets`)
/// and, for RMIA, on the population (the rest of the pool), once, and scores every attack.
/// `references` must cover the same pool when an attack needs them.
pub fn run(
    victim: &mut dyn Victim,
    pool: &Dataset,
    targets: usize,
    references: Option<&References>,
    attacks: &[Attack],
    config: &MiaConfig,
) -> Result<Vec<AttackScores>> {
    if targets == 0 || targets > pool.len() {
        return Err(invalid(format!("{targets} targets in a pool of {}", pool.len())));
    }
    if victim.classes() != pool.classes {
        return Err(VictimError::NotClassVector {
            victim: victim.name(),
            detail: format!("{} classes, the dataset has {}", victim.classes(), pool.classes),
        }
        .into());
    }
    check_reveals(victim, attacks)?;
    if let Some(a) = attacks.iter().find(|a| a.needs_references()) {
        match references {
            None => return Err(invalid(format!("'{}' needs reference models", a.name()))),
            Some(r) if r.inside.first().is_none_or(|m| m.len() != pool.len()) => {
                return Err(invalid("the reference models cover a different pool"));
            }
            Some(_) => {}
        }
    }
    let labels: Vec<usize> = (0..pool.len()).map(|i| pool.label(i)).collect();
    let inputs: Vec<&[f32]> = (0..pool.len()).map(|i| pool.sample(i)).collect();
    let wants_probs = attacks.iter().any(|a| !a.label_only());
    let wants_population = attacks.iter().any(|a| matches!(a, Attack::Rmia | Attack::RmiaOffline | Attack::Rmia1));
    let target_probs = if wants_probs { victim.probabilities(&inputs[..targets])? } else { Vec::new() };
    let population_conf: Vec<f64> = if wants_population {
        let probs = victim.probabilities(&inputs[targets..])?;
        probs.iter().zip(&labels[targets..]).map(|(p, &y)| p[y]).collect()
    } else {
        Vec::new()
    };
    let target_conf: Vec<f64> = target_probs.iter().zip(&labels).map(|(p, &y)| p[y]).collect();
    let observed_phi: Vec<f64> =
        target_probs.iter().zip(&labels).map(|(p, &y)| signals::logit_confidence(p, y)).collect();
    let mut out = Vec::with_capacity(attacks.len());
    for &attack in attacks {
        let refs = || references.ok_or_else(|| invalid("no reference models"));
        let scores = match attack {
            Attack::Loss | Attack::Confidence | Attack::Top1 | Attack::Entropy | Attack::Mentr => {
                threshold_scores(attack, &target_probs, &labels)?
            }
            Attack::Shadow => shadow_scores(refs()?, &labels, &target_probs, config.seed),
            Attack::LiraOnline => lira_scores(refs()?, &labels, &observed_phi, true, false),
            Attack::LiraOnlineFixed => lira_scores(refs()?, &labels, &observed_phi, true, true),
            Attack::LiraOffline => lira_scores(refs()?, &labels, &observed_phi, false, false),
            Attack::LiraOfflineFixed => lira_scores(refs()?, &labels, &observed_phi, false, true),
            Attack::Rmia | Attack::RmiaOffline | Attack::Rmia1 => {
                let a = config.rmia_offline_a;
                let mode = match attack {
                    Attack::Rmia => RmiaMode::Online,
                    Attack::RmiaOffline => RmiaMode::Offline { a },
                    _ => RmiaMode::Single { a },
                };
                rmia_scores(refs()?, &labels, &target_conf, &population_conf, mode, config.rmia_gamma)?
            }
            Attack::Gap => {
                let predicted = victim.labels(&inputs[..targets])?;
                predicted.iter().zip(&labels).map(|(&p, &y)| if p == y { 1.0 } else { 0.0 }).collect()
            }
            Attack::Robustness => {
                let indices: Vec<usize> = (0..targets).collect();
                robustness_scores(victim, &pool.subset(pool.name.clone(), &indices)?, config)?
            }
        };
        out.push(AttackScores { attack, scores });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mia::metrics::Metrics;
    use crate::mia::reference::assignment;

    /// Two-class probability vectors whose true-class logit is `difficulty + 3·inside + noise`:
    /// members are easier for the model that trained on them, but per-sample difficulty varies
    /// far more than the membership effect, as on real data.
    fn synthetic(
        targets: usize,
        population: usize,
        models: usize,
    ) -> (References, Vec<usize>, Vec<Vec<f64>>, Vec<bool>) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let pool = targets + population;
        let difficulty: Vec<f64> = (0..pool).map(|_| 8.0 * (rng.random::<f64>() - 0.5)).collect();
        let labels: Vec<usize> = (0..pool).map(|i| i % 2).collect();
        let answer = |logit: f64, y: usize| {
            let p = 1.0 / (1.0 + (-logit).exp());
            if y == 0 { vec![p, 1.0 - p] } else { vec![1.0 - p, p] }
        };
        let inside = assignment(pool, models, 1).unwrap_or_default();
        let noise = |rng: &mut ChaCha20Rng| f64::from(gaussian(rng)) * 0.5;
        let probabilities = (0..models)
            .map(|k| {
                (0..pool)
                    .map(|i| answer(difficulty[i] + if inside[k][i] { 3.0 } else { 0.0 } + noise(&mut rng), labels[i]))
                    .collect()
            })
            .collect();
        let member: Vec<bool> = (0..targets).map(|i| i % 3 == 0).collect();
        let victim = (0..pool)
            .map(|i| {
                let m = i < targets && member[i];
                answer(difficulty[i] + if m { 3.0 } else { 0.0 } + noise(&mut rng), labels[i])
            })
            .collect();
        (References { inside, probabilities }, labels, victim, member)
    }

    #[test]
    fn reference_attacks_beat_the_global_threshold_when_difficulty_varies() -> Result<()> {
        let (refs, labels, victim, member) = synthetic(300, 300, 8);
        let targets = &victim[..300];
        let auc = |scores: &[f64]| Metrics::compute(scores, &member).map(|m| m.auc);
        let loss = auc(&threshold_scores(Attack::Loss, targets, &labels)?)?;
        let phi: Vec<f64> = targets.iter().zip(&labels).map(|(p, &y)| signals::logit_confidence(p, y)).collect();
        let conf = |v: &[Vec<f64>], off: usize| -> Vec<f64> {
            v.iter().enumerate().map(|(i, p)| p[labels[i + off]]).collect()
        };
        let (tconf, pconf) = (conf(targets, 0), conf(&victim[300..], 300));
        let mut results = vec![("loss", loss)];
        for (name, online, fixed) in [
            ("lira-on", true, false),
            ("lira-on-fixed", true, true),
            ("lira-off", false, false),
            ("lira-off-fixed", false, true),
        ] {
            results.push((name, auc(&lira_scores(&refs, &labels, &phi, online, fixed))?));
        }
        for (name, mode) in [
            ("rmia", RmiaMode::Online),
            ("rmia-off", RmiaMode::Offline { a: 0.3 }),
            ("rmia-1", RmiaMode::Single { a: 0.3 }),
        ] {
            results.push((name, auc(&rmia_scores(&refs, &labels, &tconf, &pconf, mode, 1.0)?)?));
        }
        results.push(("shadow", auc(&shadow_scores(&refs, &labels, targets, 3))?));
        eprintln!("{results:?}");
        assert!(loss < 0.85, "{results:?}");
        for &(name, a) in &results[1..] {
            if name != "shadow" {
                assert!(a > loss + 0.1 && a > 0.85, "{name}: {a} vs loss {loss}");
            }
        }
        // The shadow classifier sees no per-sample reference: it is a (learned) global threshold.
        assert!(results.last().is_some_and(|&(_, a)| a > 0.55));
        Ok(())
    }

    #[test]
    fn names_parse_back() -> Result<()> {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>()?, a);
        }
        assert!("lira".parse::<Attack>().is_err());
        // Only the entropy and the top-1 probability do without the true label.
        let label_free: Vec<&str> = Attack::ALL.iter().filter(|a| !a.reads_label()).map(|a| a.name()).collect();
        assert_eq!(label_free, ["top1", "entropy"]);
        Ok(())
    }

    #[test]
    fn missing_references_fail_before_any_query() {
        struct Counting(usize);
        impl Victim for Counting {
            fn name(&self) -> String {
                "counting".into()
            }
            fn classes(&self) -> usize {
                2
            }
            fn probabilities(&mut self, inputs: &[&[f32]]) -> crate::victim::Result<Vec<Vec<f64>>> {
                self.0 += inputs.len();
                Ok(vec![vec![0.5, 0.5]; inputs.len()])
            }
        }
        let Ok(pool) = Dataset::new("toy", vec![1], 2, vec![0.0, 1.0, 2.0, 3.0], vec![0, 1, 0, 1]) else {
            panic!("toy dataset");
        };
        let mut victim = Counting(0);
        let err = run(&mut victim, &pool, 2, None, &[Attack::Loss, Attack::LiraOnline], &MiaConfig::default());
        assert!(err.is_err_and(|e| e.to_string().contains("reference")));
        assert_eq!(victim.0, 0);
        let Ok(three) = Dataset::new("toy3", vec![1], 3, vec![0.0, 1.0], vec![0, 2]) else { panic!("toy3") };
        assert!(run(&mut victim, &three, 1, None, &[Attack::Loss], &MiaConfig::default()).is_err());
        assert_eq!(victim.0, 0);
    }
}
