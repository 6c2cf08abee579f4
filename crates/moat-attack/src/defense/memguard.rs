//! MemGuard (Jia, Salem, Backes, Zhang, Gong — CCS 2019), phase I, in plaintext: the guard of
//! the probabilities the plaintext OIP path reveals.
//!
//! **Computed** for one revealed vector `p` with label `ℓ = argmax p`, the server's defender
//! `h` ([`DefenderFile`], usually on sorted scores) and logits `z = ln p` (the softmax is
//! shift-invariant, so these are the model's logits up to a constant): noise `e` on the logits
//! minimising SIGuard's objective
//! `L(e) = |h(s)| + c₂·ReLU(max_{j≠ℓ} yⱼ − y_ℓ) + c₃·‖s − p‖₁` with `y = z + e`, `s = softmax(y)`,
//! by normalised gradient steps `e −= lr·∇L/‖∇L‖₂` (the gradient through `h`, the sort and the
//! softmax Jacobian `diag(s) − ssᵀ`). Rounds restart from `e = 0`; a round ends at the first
//! *valid* `e` — label kept (`argmax s = ℓ`) and the defender's decision flipped
//! (`h(p)·h(s) ≤ 0`) — after which `c₃ ×= 10` for a less distorting next round; a round that
//! ends without a valid `e` ends the search. At most [`MemGuardConfig::max_steps`] steps in all
//! (300). The result is the valid `s` of least L1 distortion, or `p` unchanged when no valid
//! `e` was found: the label is never changed.
//!
//! **Deviation:** MemGuard's phase II (releasing the noise only with a probability chosen to
//! meet an expected-distortion budget) is not applied: every valid noise is released, the
//! strongest setting of the defense.
//!
//! **Learns:** the server computes this on its own output; the client sees only the result.
//! **Cost:** per step one forward and backward pass of `h` and a softmax, in f64.

use serde::{Deserialize, Serialize};

use super::defender::DefenderFile;
use super::{Result, invalid};

/// MemGuard's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemGuardConfig {
    /// Gradient steps over all rounds (300).
    pub max_steps: u32,
    /// Weight of the label-preservation term (10).
    pub c2: f64,
    /// Initial weight of the distortion term (0.1), ×10 after each round that found a valid noise.
    pub c3: f64,
    /// Step length (0.1).
    pub lr: f64,
}

impl Default for MemGuardConfig {
    fn default() -> Self {
        Self { max_steps: 300, c2: 10.0, c3: 0.1, lr: 0.1 }
    }
}

/// One guarded answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Guarded {
    /// The released probability vector.
    pub probabilities: Vec<f64>,
    /// Gradient steps taken.
    pub steps: u32,
    /// Whether a valid noise was found (the release differs from the input).
    pub changed: bool,
}

/// MemGuard with the server's defender.
pub struct MemGuard {
    defender: DefenderFile,
    config: MemGuardConfig,
}

impl std::fmt::Debug for MemGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemGuard").field("defender", &self.defender).field("config", &self.config).finish()
    }
}

/// `softmax(y)` in f64, max-subtracted.
fn softmax(y: &[f64]) -> Vec<f64> {
    let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = y.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// `Jᵀv` for the softmax Jacobian at `s` (symmetric): `sᵢ(vᵢ − s·v)`.
fn jacobian(s: &[f64], v: &[f64]) -> Vec<f64> {
    let dot: f64 = s.iter().zip(v).map(|(a, b)| a * b).sum();
    s.iter().zip(v).map(|(si, vi)| si * (vi - dot)).collect()
}

fn argmax(p: &[f64]) -> usize {
    p.iter().enumerate().fold(0, |best, (i, &v)| if v > p[best] { i } else { best })
}

impl MemGuard {
    /// MemGuard for a model of `classes` classes; refuses a defender of another width or
    /// invalid parameters.
    pub fn new(defender: DefenderFile, config: MemGuardConfig, classes: usize) -> Result<Self> {
        defender.validate()?;
        if defender.meta.shape.classes != classes {
            return Err(invalid(format!(
                "the defender reads {} classes, the model outputs {classes}",
                defender.meta.shape.classes
            )));
        }
        let ok = [config.c2, config.c3, config.lr].iter().all(|v| v.is_finite() && *v >= 0.0) && config.lr > 0.0;
        if !ok {
            return Err(invalid(format!("MemGuard's weights must be finite and non-negative: {config:?}")));
        }
        Ok(Self { defender, config })
    }

    /// The defender.
    pub fn defender(&self) -> &DefenderFile {
        &self.defender
    }

    /// Guards one revealed probability vector `p`.
    pub fn guard(&self, p: &[f64]) -> Result<Guarded> {
        let c = self.defender.meta.shape.classes;
        if p.len() != c || p.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(invalid(format!("MemGuard guards probability vectors of {c} classes")));
        }
        let unchanged = |steps| Guarded { probabilities: p.to_vec(), steps, changed: false };
        let label = argmax(p);
        let z: Vec<f64> = p.iter().map(|v| v.max(f64::MIN_POSITIVE).ln()).collect();
        let h0 = self.defender.output(p);
        if h0 == 0.0 {
            return Ok(unchanged(0));
        }
        let valid = |s: &[f64]| argmax(s) == label && h0 * self.defender.output(s) <= 0.0;
        let mut best: Option<(f64, Vec<f64>)> = None;
        let (mut c3, mut steps) = (self.config.c3, 0);
        while steps < self.config.max_steps {
            let mut e = vec![0.0; c];
            let mut found = None;
            loop {
                let y: Vec<f64> = z.iter().zip(&e).map(|(a, b)| a + b).collect();
                let s = softmax(&y);
                if valid(&s) {
                    found = Some(s);
                    break;
                }
                if steps >= self.config.max_steps {
                    break;
                }
                let g = self.gradient(&y, &s, p, label, c3);
                let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm == 0.0 || !norm.is_finite() {
                    break;
                }
                e.iter_mut().zip(&g).for_each(|(ei, gi)| *ei -= self.config.lr * gi / norm);
                steps += 1;
            }
            let Some(s) = found else { break };
            let l1: f64 = s.iter().zip(p).map(|(a, b)| (a - b).abs()).sum();
            if best.as_ref().is_none_or(|(b, _)| l1 < *b) {
                best = Some((l1, s));
            }
            c3 *= 10.0;
        }
        Ok(match best {
            Some((_, s)) => Guarded { probabilities: s, steps, changed: true },
            None => unchanged(steps),
        })
    }

    /// `∇L` at `y` (with `s = softmax(y)`).
    fn gradient(&self, y: &[f64], s: &[f64], p: &[f64], label: usize, c3: f64) -> Vec<f64> {
        let (h, gh) = self.defender.output_and_gradient(s);
        let sign = if h > 0.0 { 1.0 } else { -1.0 };
        let g1 = jacobian(s, &gh.iter().map(|v| sign * v).collect::<Vec<_>>());
        let distortion: Vec<f64> =
            s.iter().zip(p).map(|(a, b)| (a - b).signum() * f64::from(u8::from(a != b))).collect();
        let g3 = jacobian(s, &distortion);
        let mut g: Vec<f64> = g1.iter().zip(&g3).map(|(a, b)| a + c3 * b).collect();
        // The label hinge ReLU(max_{j≠ℓ} yⱼ − y_ℓ).
        let second = (0..y.len()).filter(|&j| j != label).fold(None, |best: Option<usize>, j| match best {
            Some(b) if y[b] >= y[j] => Some(b),
            _ => Some(j),
        });
        if let Some(j) = second
            && y[j] > y[label]
        {
            g[j] += self.config.c2;
            g[label] -= self.config.c2;
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defense::DefenderInput;
    use crate::defense::defender::tests::trained;

    #[test]
    fn the_label_is_kept_on_every_sample_and_the_decision_flipped_where_possible() -> Result<()> {
        for input in [DefenderInput::Sorted, DefenderInput::Probabilities] {
            let (d, members, others) = trained(input, 7)?;
            let guard = MemGuard::new(d, MemGuardConfig::default(), 4)?;
            let mut flipped = 0;
            let all: Vec<&Vec<f64>> = members.iter().chain(&others).collect();
            for p in &all {
                let g = guard.guard(p)?;
                assert_eq!(argmax(&g.probabilities), argmax(p), "{input:?}: label changed on {p:?}");
                assert!(g.steps <= 300);
                let sum: f64 = g.probabilities.iter().sum();
                assert!((sum - 1.0).abs() < 1e-9);
                let (h0, h) = (guard.defender().output(p), guard.defender().output(&g.probabilities));
                if g.changed {
                    assert!(h0 * h <= 0.0, "{input:?}: changed but not flipped: {h0} → {h}");
                    flipped += 1;
                } else {
                    assert_eq!(&g.probabilities, *p);
                }
            }
            // Every synthetic vector leaves room to cross the decision boundary with its label kept.
            assert!(flipped * 10 >= all.len() * 9, "{input:?}: flipped {flipped} of {}", all.len());
        }
        Ok(())
    }

    #[test]
    fn a_defender_of_another_width_or_a_bad_vector_is_refused() -> Result<()> {
        let (d, _, _) = trained(DefenderInput::Sorted, 8)?;
        assert!(MemGuard::new(d.clone(), MemGuardConfig::default(), 10).is_err());
        let guard = MemGuard::new(d, MemGuardConfig::default(), 4)?;
        assert!(guard.guard(&[0.5, 0.5]).is_err());
        assert!(guard.guard(&[0.5, f64::NAN, 0.0, 0.5]).is_err());
        Ok(())
    }
}
