//! Reference (shadow) models: trained by the attacker on its own data, queried locally.
//!
//! The attacker's *pool* is the targets it wants to test followed by its *population* (data from
//! the same distribution, disjoint from the victim's training set — the shadow pool of
//! [`moat_nn::data::MembershipSplit`]). Following LiRA's online setting (Carlini et al. 2022,
//! §IV), `K` reference models each train on a random half of the pool, arranged so that every
//! pool sample is inside exactly `K/2` of them: each target then has `K/2` IN and `K/2` OUT
//! models, each population sample too. Offline attacks use only the OUT models of a sample; the
//! shadow-model attack learns from the population's IN/OUT outputs.
//!
//! Training is delegated to a [`ReferenceTrainer`] (the `moat` binary trains with moat-nn on
//! burn), so this crate needs no training backend.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use super::error::{Result, invalid};
use crate::victim::{Victim, VictimError};
use moat_nn::data::Dataset;

/// Trains one reference model.
pub trait ReferenceTrainer {
    /// Trains reference model `index` on `data` and returns it as a locally queried victim.
    fn train(&mut self, index: usize, data: &Dataset) -> Result<Box<dyn Victim>>;
}

/// Which pool samples each reference model trains on: `inside[k][i]` for model `k` and pool
/// sample `i`. Every sample is inside exactly `models / 2` models; `models` must be even and at
/// least 2. Seeded (the assignment is the attacker's, not a secret).
pub fn assignment(pool_len: usize, models: usize, seed: u64) -> Result<Vec<Vec<bool>>> {
    if models < 2 || !models.is_multiple_of(2) {
        return Err(invalid(format!("reference models must be an even number ≥ 2, got {models}")));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut inside = vec![vec![false; pool_len]; models];
    let mut ks: Vec<usize> = (0..models).collect();
    for i in 0..pool_len {
        ks.shuffle(&mut rng);
        for &k in &ks[..models / 2] {
            if let Some(cell) = inside.get_mut(k).and_then(|m| m.get_mut(i)) {
                *cell = true;
            }
        }
    }
    Ok(inside)
}

/// The reference models' outputs on the pool.
#[derive(Clone, Debug, PartialEq)]
pub struct References {
    /// `inside[k][i]`: pool sample `i` was in reference model `k`'s training set.
    pub inside: Vec<Vec<bool>>,
    /// `probabilities[k][i]`: model `k`'s probability vector on pool sample `i`.
    pub probabilities: Vec<Vec<Vec<f64>>>,
}

impl References {
    /// Trains `models` reference models on halves of `pool` (per [`assignment`] with `seed`)
    /// and queries each on the whole pool. `done(k)` is called after model `k`.
    pub fn train(
        trainer: &mut dyn ReferenceTrainer,
        pool: &Dataset,
        models: usize,
        seed: u64,
        done: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        let inside = assignment(pool.len(), models, seed)?;
        let inputs: Vec<&[f32]> = (0..pool.len()).map(|i| pool.sample(i)).collect();
        let mut probabilities = Vec::with_capacity(models);
        for (k, mask) in inside.iter().enumerate() {
            let indices: Vec<usize> = (0..pool.len()).filter(|&i| mask[i]).collect();
            let half = pool.subset(format!("{}-ref{k}", pool.name), &indices)?;
            let mut model = trainer.train(k, &half)?;
            if model.classes() != pool.classes {
                return Err(VictimError::NotClassVector {
                    victim: format!("reference model {k}"),
                    detail: format!("{} classes, the pool has {}", model.classes(), pool.classes),
                }
                .into());
            }
            probabilities.push(model.probabilities(&inputs)?);
            done(k);
        }
        Ok(Self { inside, probabilities })
    }

    /// Number of reference models.
    pub fn models(&self) -> usize {
        self.inside.len()
    }

    /// The values of `signal` on pool sample `i` from the models that did (`inside = true`)
    /// or did not train on it.
    pub fn signal(&self, i: usize, inside: bool, signal: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        (0..self.models()).filter(|&k| self.inside[k][i] == inside).map(|k| signal(&self.probabilities[k][i])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_is_inside_half_the_models() -> Result<()> {
        let inside = assignment(101, 8, 3)?;
        let counts: Vec<usize> = (0..101).map(|i| inside.iter().filter(|m| m[i]).count()).collect();
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
        for mask in &inside {
            let n = mask.iter().filter(|&&b| b).count();
            assert!((30..=71).contains(&n), "model trains on {n} of 101");
        }
        assert_ne!(inside, assignment(101, 8, 4)?);
        assert!(assignment(10, 3, 0).is_err() && assignment(10, 0, 0).is_err());
        Ok(())
    }
}
