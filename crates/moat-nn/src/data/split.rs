//! Deterministic, seeded splits of a dataset into disjoint index sets.
//!
//! Everything here is a pure function of its inputs and a `u64` seed (ChaCha20): the same seed
//! gives the same split on every machine, a different seed a different one.
//!
//! Membership inference needs pools that never overlap — the target model's training set
//! (*members*), samples it never saw (*non-members*), and data for the attacker's shadow models:
//!
//! ```
//! use moat_nn::data::{self, MembershipSizes, MembershipSplit, Sampling};
//!
//! let digits = data::load("digits", None, 7)?.train;
//! let sizes = MembershipSizes { members: 400, non_members: 400, shadow: 600 };
//! let split = MembershipSplit::new(&digits, sizes, Sampling::Stratified, 42)?;
//! assert!(split.members.iter().all(|i| !split.non_members.contains(i)));
//! let target_train = digits.subset("target-train", &split.members)?;
//! assert_eq!(target_train.len(), 400);
//! # Ok::<(), moat_nn::NnError>(())
//! ```

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use crate::data::Dataset;
use crate::error::{NnError, Result};

/// How pools are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sampling {
    /// Each class appears in every pool in (nearly) the proportion it has in the dataset: a
    /// pool of size `s` holds `s · n_c / n` samples of class `c`, within ±2.
    Stratified,
    /// A uniformly random subset for each pool, ignoring labels.
    #[default]
    Uniform,
}

fn split_error(message: String) -> NnError {
    NnError::Dataset { path: "split".into(), message }
}

/// The indices `0..n` in a seeded random order.
pub fn shuffle_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut ChaCha20Rng::seed_from_u64(seed));
    indices
}

/// Splits `0..n` into a training and a validation part, `val_len` of them validation, both in
/// seeded random order (uniform, not stratified).
pub fn train_val_split(n: usize, val_len: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if val_len > n {
        return Err(split_error(format!("validation size {val_len} exceeds the {n} samples")));
    }
    let mut train = shuffle_indices(n, seed);
    let val = train.split_off(n - val_len);
    Ok((train, val))
}

/// An ordering of the indices in which every class is spread evenly: sample `j` (0-based) of a
/// class with `n_c` samples sits at position key `(j + ½) / n_c`; within a class the samples
/// are shuffled, and equal keys are ordered by a seeded permutation of the classes. Any
/// contiguous run of this order is therefore stratified.
fn stratified_order(labels: &[u16], rng: &mut ChaCha20Rng) -> Vec<usize> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut class_rank: Vec<usize> = (0..classes).collect();
    class_rank.shuffle(rng);
    let mut keyed: Vec<(f64, usize, usize)> = Vec::with_capacity(labels.len());
    for (c, members) in by_class.iter_mut().enumerate() {
        members.shuffle(rng);
        let n_c = members.len() as f64;
        keyed.extend(members.iter().enumerate().map(|(j, &i)| ((j as f64 + 0.5) / n_c, class_rank[c], i)));
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// Named, pairwise disjoint index sets drawn from a dataset by seed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pools {
    /// Each pool's name and its indices (in seeded random order), in the order requested.
    pub pools: Vec<(String, Vec<usize>)>,
    /// How the pools were drawn.
    pub sampling: Sampling,
    /// The seed they were drawn with.
    pub seed: u64,
}

impl Pools {
    /// Draws disjoint pools of the given `(name, size)` from the samples whose labels are
    /// `labels` (e.g. `&dataset.labels`). The sizes may sum to less than `labels.len()`; the
    /// remaining samples belong to no pool. Names must be distinct.
    pub fn draw(labels: &[u16], sizes: &[(&str, usize)], sampling: Sampling, seed: u64) -> Result<Self> {
        let total = sizes.iter().try_fold(0usize, |acc, (_, s)| acc.checked_add(*s));
        if total.is_none_or(|t| t > labels.len()) {
            return Err(split_error(format!(
                "pool sizes {:?} exceed the {} samples",
                sizes.iter().map(|p| p.1).collect::<Vec<_>>(),
                labels.len()
            )));
        }
        for (k, (name, _)) in sizes.iter().enumerate() {
            if sizes[..k].iter().any(|(other, _)| other == name) {
                return Err(split_error(format!("pool name '{name}' given twice")));
            }
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let order = match sampling {
            Sampling::Stratified => stratified_order(labels, &mut rng),
            Sampling::Uniform => {
                let mut order: Vec<usize> = (0..labels.len()).collect();
                order.shuffle(&mut rng);
                order
            }
        };
        let mut rest = order.as_slice();
        let mut pools = Vec::with_capacity(sizes.len());
        for &(name, size) in sizes {
            let (mut pool, tail) = (rest[..size].to_vec(), &rest[size..]);
            pool.shuffle(&mut rng);
            pools.push((name.to_string(), pool));
            rest = tail;
        }
        Ok(Self { pools, sampling, seed })
    }

    /// The indices of pool `name`.
    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.pools.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_slice())
    }

    /// Pool `name` of `dataset` as its own dataset, named `<dataset>-<pool>`.
    pub fn dataset(&self, dataset: &Dataset, name: &str) -> Result<Dataset> {
        let indices = self.get(name).ok_or_else(|| split_error(format!("no pool named '{name}'")))?;
        dataset.subset(format!("{}-{name}", dataset.name), indices)
    }
}

/// Pool sizes for [`MembershipSplit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MembershipSizes {
    /// Samples the target model trains on.
    pub members: usize,
    /// Samples held out from the target model (same distribution).
    pub non_members: usize,
    /// Samples for the attacker's shadow models (disjoint from both; the attack splits it
    /// further into shadow in/out sets itself).
    pub shadow: usize,
}

/// Disjoint member / non-member / shadow index sets of one dataset, drawn by seed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MembershipSplit {
    /// Indices the target model trains on.
    pub members: Vec<usize>,
    /// Indices the target model never sees.
    pub non_members: Vec<usize>,
    /// Indices reserved for shadow models.
    pub shadow: Vec<usize>,
    /// How they were drawn.
    pub sampling: Sampling,
    /// The seed they were drawn with.
    pub seed: u64,
}

impl MembershipSplit {
    /// Draws the three pools from `dataset` (see [`Pools::draw`]).
    pub fn new(dataset: &Dataset, sizes: MembershipSizes, sampling: Sampling, seed: u64) -> Result<Self> {
        let drawn = Pools::draw(
            &dataset.labels,
            &[("members", sizes.members), ("non-members", sizes.non_members), ("shadow", sizes.shadow)],
            sampling,
            seed,
        )
        .map_err(|e| match e {
            NnError::Dataset { message, .. } => NnError::Dataset { path: dataset.name.clone(), message },
            other => other,
        })?;
        let mut pools = drawn.pools.into_iter().map(|(_, p)| p);
        let mut next = || pools.next().unwrap_or_default();
        Ok(Self { members: next(), non_members: next(), shadow: next(), sampling, seed })
    }
}

impl Dataset {
    /// Splits into `(train, validation)` datasets with `val_len` validation samples chosen by
    /// seed ([`train_val_split`]), named `<name>-train` and `<name>-val`.
    pub fn split_train_val(&self, val_len: usize, seed: u64) -> Result<(Dataset, Dataset)> {
        let (train, val) = train_val_split(self.len(), val_len, seed)?;
        Ok((self.subset(format!("{}-train", self.name), &train)?, self.subset(format!("{}-val", self.name), &val)?))
    }

    /// How many samples of each class, indexed by label.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// 1,000 labels over 4 classes with frequencies 10 %, 20 %, 30 %, 40 %.
    fn labels() -> Vec<u16> {
        (0..1000)
            .map(|i| {
                if i % 10 < 1 {
                    0
                } else if i % 10 < 3 {
                    1
                } else if i % 10 < 6 {
                    2
                } else {
                    3
                }
            })
            .collect()
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffle_indices(100, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffle_indices(100, 1));
        assert_ne!(a, shuffle_indices(100, 2));
        assert_ne!(a, sorted);
    }

    #[test]
    fn train_val_is_a_partition() -> Result<()> {
        let (train, val) = train_val_split(50, 12, 3)?;
        assert_eq!((train.len(), val.len()), (38, 12));
        let all: HashSet<usize> = train.iter().chain(&val).copied().collect();
        assert_eq!(all.len(), 50);
        assert!(train_val_split(5, 6, 0).is_err());
        Ok(())
    }

    #[test]
    fn pools_are_disjoint_deterministic_and_seed_dependent() -> Result<()> {
        let labels = labels();
        for sampling in [Sampling::Uniform, Sampling::Stratified] {
            let sizes = [("a", 300), ("b", 250), ("c", 400)];
            let pools = Pools::draw(&labels, &sizes, sampling, 9)?;
            let mut seen = HashSet::new();
            for ((name, pool), (want_name, want)) in pools.pools.iter().zip(sizes) {
                assert_eq!((name.as_str(), pool.len()), (want_name, want));
                assert!(pool.iter().all(|&i| i < labels.len() && seen.insert(i)), "pools overlap");
            }
            assert_eq!(pools, Pools::draw(&labels, &sizes, sampling, 9)?);
            let other = Pools::draw(&labels, &sizes, sampling, 10)?;
            for k in 0..3 {
                assert_ne!(pools.pools[k].1, other.pools[k].1);
            }
        }
        Ok(())
    }

    #[test]
    fn stratified_pools_keep_class_proportions() -> Result<()> {
        let labels = labels();
        let freq = [0.1, 0.2, 0.3, 0.4];
        for seed in 0..5 {
            let pools = Pools::draw(&labels, &[("a", 97), ("b", 503), ("c", 400)], Sampling::Stratified, seed)?;
            for (_, pool) in &pools.pools {
                let mut counts = [0usize; 4];
                pool.iter().for_each(|&i| counts[labels[i] as usize] += 1);
                for c in 0..4 {
                    let want = pool.len() as f64 * freq[c];
                    assert!(
                        (counts[c] as f64 - want).abs() <= 2.0,
                        "seed {seed}: class {c} {counts:?} in a pool of {}",
                        pool.len()
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn bad_requests_are_errors() {
        let labels = labels();
        assert!(Pools::draw(&labels, &[("a", 600), ("b", 401)], Sampling::Uniform, 0).is_err());
        assert!(Pools::draw(&labels, &[("a", usize::MAX), ("b", 2)], Sampling::Uniform, 0).is_err());
        assert!(Pools::draw(&labels, &[("a", 1), ("a", 2)], Sampling::Stratified, 0).is_err());
        assert!(Pools::draw(&labels, &[("a", 1000), ("b", 0)], Sampling::Stratified, 0).is_ok());
    }

    #[test]
    fn membership_split_materialises() -> Result<()> {
        let ds = Dataset::new("toy", vec![1], 4, labels().iter().map(|&l| f32::from(l)).collect(), labels())?;
        let sizes = MembershipSizes { members: 100, non_members: 100, shadow: 300 };
        let split = MembershipSplit::new(&ds, sizes, Sampling::Stratified, 5)?;
        let members: HashSet<_> = split.members.iter().collect();
        assert!(split.non_members.iter().chain(&split.shadow).all(|i| !members.contains(i)));
        assert_eq!(split.shadow.len(), 300);
        assert_eq!(ds.subset("m", &split.members)?.label_histogram(), vec![10, 20, 30, 40]);
        let err = MembershipSplit::new(
            &ds,
            MembershipSizes { members: 1000, non_members: 1, shadow: 0 },
            Sampling::Uniform,
            0,
        );
        assert!(err.is_err_and(|e| e.to_string().contains("toy")));
        let pools = Pools::draw(&ds.labels, &[("x", 10)], Sampling::Uniform, 0)?;
        assert_eq!(pools.dataset(&ds, "x")?.name, "toy-x");
        assert!(pools.dataset(&ds, "y").is_err());
        let (tr, va) = ds.split_train_val(200, 1)?;
        assert_eq!((tr.len(), va.len(), va.name.as_str()), (800, 200, "toy-val"));
        Ok(())
    }
}
