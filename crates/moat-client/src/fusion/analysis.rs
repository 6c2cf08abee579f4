//! What a Fusion batch catches, in closed form: the probability that a cheating server's wrong
//! answers miss every check, the binomial test on the known answers, and a helper that picks
//! (m, k) for a target detection probability.
//!
//! A batch holds N = n + m + k positions under a secret uniform permutation: n real queries
//! (k of them also sent a second time as duplicates) and m known-answer samples. The server
//! sees N inputs in random order and cannot tell which are checks (the known answers are drawn
//! from the same distribution as the queries; the duplicates *are* queries), so whichever
//! positions it corrupts are, to it, a uniformly random subset.
//!
//! All probabilities are computed in log space from exact log-factorials, so they hold for
//! batches of many thousands of positions.

use serde::Serialize;

/// ln(n!) for n = 0..=len, summed exactly term by term.
fn ln_factorials(len: usize) -> Vec<f64> {
    let mut table = Vec::with_capacity(len + 1);
    let mut acc = 0.0f64;
    table.push(0.0);
    for i in 1..=len {
        acc += (i as f64).ln();
        table.push(acc);
    }
    table
}

/// ln C(n, k); `None` when k > n (the binomial coefficient is zero).
pub fn ln_choose(n: u64, k: u64) -> Option<f64> {
    if k > n {
        return None;
    }
    let k = k.min(n - k);
    // Σ_{i<k} ln((n−i)/(i+1)): exact enough and O(k).
    Some((0..k).map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln()).sum())
}

/// C(N − C, t) / C(N, t): the probability that t corrupted positions, uniformly placed among
/// N, all miss C check positions (the formula; 0 when t > N − C).
pub fn miss_uniform(total: u64, checks: u64, corrupted: u64) -> f64 {
    if corrupted > total {
        return 0.0;
    }
    // Π_{i<t} (N − C − i)/(N − i), which is the ratio of the two binomials.
    let mut p = 1.0f64;
    for i in 0..corrupted {
        if checks + i >= total {
            return 0.0;
        }
        p *= (total - checks - i) as f64 / (total - i) as f64;
    }
    p
}

/// The shape of a batch: n real queries, m known answers, k duplicates (k ≤ n).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    /// Real queries.
    pub n: usize,
    /// Known-answer samples.
    pub m: usize,
    /// Duplicated queries.
    pub k: usize,
}

impl Shape {
    /// N = n + m + k.
    pub fn total(&self) -> usize {
        self.n + self.m + self.k
    }

    /// Exact miss probability of a server that corrupts exactly t of the N positions (chosen by
    /// it, but uniformly random relative to the secret permutation). It escapes when no known
    /// answer is hit and every duplicate pair is hit on both or neither copy; a pair hit on both
    /// copies agrees with probability `pair_agree` (1/(L − 1) for a uniformly drawn wrong label
    /// among L classes, 1 for a deterministic wrong answer):
    ///
    /// Σ_j C(k, j) · C(n − k, t − 2j) · pair_agree^j / C(N, t).
    ///
    /// Its j = 0 term is [`miss_uniform`] with C = m + 2k checks.
    pub fn miss_exactly(&self, corrupted: usize, pair_agree: f64) -> f64 {
        let (n, m, k, t) = (self.n, self.m, self.k, corrupted);
        let total = n + m + k;
        if t > total || k > n {
            return 0.0;
        }
        if t == 0 {
            return 1.0;
        }
        let lf = ln_factorials(total);
        let ln_c = |a: usize, b: usize| if b > a { None } else { Some(lf[a] - lf[b] - lf[a - b]) };
        let Some(ln_all) = ln_c(total, t) else { return 0.0 };
        let mut sum = 0.0f64;
        for j in 0..=k.min(t / 2) {
            let (Some(a), Some(b)) = (ln_c(k, j), ln_c(n - k, t - 2 * j)) else { continue };
            if j > 0 && pair_agree <= 0.0 {
                continue;
            }
            let agree = if j == 0 { 0.0 } else { j as f64 * pair_agree.ln() };
            sum += (a + b + agree - ln_all).exp();
        }
        sum.min(1.0)
    }

    /// Miss probability of a server that corrupts each position independently with
    /// probability `rate`, drawing a wrong answer that agrees with the other copy of a pair hit
    /// twice with probability `pair_agree`: (1 − ρ)^m · ((1 − ρ)² + ρ² · pair_agree)^k.
    pub fn miss_independent(&self, rate: f64, pair_agree: f64) -> f64 {
        let rate = rate.clamp(0.0, 1.0);
        let pair_escape = (1.0 - rate).powi(2) + rate * rate * pair_agree.clamp(0.0, 1.0);
        (1.0 - rate).powf(self.m as f64) * pair_escape.powf(self.k as f64)
    }
}

/// P(X ≤ x) for X ~ Binomial(trials, p): the p-value of observing x correct known answers when
/// the model is claimed to be at least p accurate.
pub fn binomial_cdf(x: u64, trials: u64, p: f64) -> f64 {
    if x >= trials {
        return 1.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut sum = 0.0f64;
    for i in 0..=x {
        if let Some(c) = ln_choose(trials, i) {
            sum += (c + i as f64 * lp + (trials - i) as f64 * lq).exp();
        }
    }
    sum.min(1.0)
}

/// The largest number of correct known answers out of `trials` that the test rejects at level
/// β (p-value < β) when the claimed accuracy is `claimed`; `None` when even 0 correct is not
/// rejected (too few known answers for this β).
pub fn rejection_threshold(trials: u64, claimed: f64, beta: f64) -> Option<u64> {
    let mut last = None;
    for x in 0..=trials {
        if binomial_cdf(x, trials, claimed) < beta {
            last = Some(x);
        } else {
            break;
        }
    }
    last
}

/// Miss probability of the known-answer check against a model whose answers agree with the
/// pool's labels on `agreeing` of `pool` pool samples, when m are drawn without replacement
/// and the test rejects at ≤ `threshold` agreements: P(Hypergeometric ≥ threshold + 1).
/// With the honest model's labels and claimed accuracy 1, the threshold is m − 1 and this is
/// C(agreeing, m) / C(pool, m).
pub fn miss_known_answers(pool: u64, agreeing: u64, m: u64, threshold: Option<u64>) -> f64 {
    let Some(threshold) = threshold else { return 1.0 };
    let disagreeing = pool.saturating_sub(agreeing);
    let Some(ln_all) = ln_choose(pool, m) else { return 1.0 };
    let mut miss = 0.0f64;
    for x in (threshold + 1)..=m {
        if let (Some(a), Some(b)) = (ln_choose(agreeing, x), ln_choose(disagreeing, m - x)) {
            miss += (a + b - ln_all).exp();
        }
    }
    miss.min(1.0)
}

/// The (m, k) the helper picks, with the detection each check reaches on its own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Choice {
    /// Known answers.
    pub m: usize,
    /// Duplicates.
    pub k: usize,
    /// Detection of a model whose answers differ from the honest one on a fraction `rate` of
    /// inputs, by the known answers alone: 1 − (1 − rate)^m.
    pub known_detection: f64,
    /// Detection of a server corrupting a fraction `rate` of answers at random, by the
    /// duplicates alone (a server that can tell the public samples apart and answers them
    /// honestly): 1 − ((1 − ρ)² + ρ² · pair_agree)^k.
    pub duplicate_detection: f64,
}

/// Picks the smallest m with 1 − (1 − rate)^m ≥ `target` (known answers labelled by the honest
/// model: any disagreement is evidence) and, when `with_duplicates`, the smallest k ≤ n whose
/// duplicates alone reach `target` against a server corrupting a fraction `rate` of answers
/// with `pair_agree` as in [`Shape::miss_exactly`] (k = n when n pairs are not enough).
///
/// A model at least `rate` less accurate than the honest one disagrees with it on at least a
/// fraction `rate` of inputs, so m is enough to catch it with probability ≥ `target`.
pub fn choose(n: usize, rate: f64, target: f64, with_duplicates: bool, pair_agree: f64) -> Option<Choice> {
    if !(rate > 0.0 && rate <= 1.0 && target > 0.0 && target < 1.0) {
        return None;
    }
    let miss = 1.0 - target;
    let m = if rate >= 1.0 { 1 } else { (miss.ln() / (1.0 - rate).ln()).ceil().max(1.0) as usize };
    let pair_escape = (1.0 - rate).powi(2) + rate * rate * pair_agree.clamp(0.0, 1.0);
    let k = if !with_duplicates {
        0
    } else if pair_escape <= 0.0 {
        1.min(n)
    } else if pair_escape >= 1.0 {
        n
    } else {
        ((miss.ln() / pair_escape.ln()).ceil().max(1.0) as usize).min(n)
    };
    Some(Choice {
        m,
        k,
        known_detection: 1.0 - (1.0 - rate).powf(m as f64),
        duplicate_detection: 1.0 - pair_escape.powf(k as f64),
    })
}

/// The smallest m ≤ `pool` whose known answers, drawn without replacement from a pool of
/// which `disagreeing` samples get another label from the substitute, catch it with
/// probability ≥ `target` (honest-model labels: one wrong known answer is evidence):
/// 1 − C(pool − disagreeing, m)/C(pool, m) ≥ target. `None` when the whole pool is not enough.
///
/// With a discriminative pool ([`super::selection`]) `disagreeing / pool` is far above the
/// substitute's disagreement on random inputs, and m shrinks accordingly.
pub fn choose_for_pool(pool: usize, disagreeing: usize, target: f64) -> Option<usize> {
    if !(target > 0.0 && target < 1.0) || disagreeing == 0 {
        return None;
    }
    let agreeing = pool.saturating_sub(disagreeing) as u64;
    (1..=pool).find(|&m| miss_known_answers(pool as u64, agreeing, m as u64, Some(m as u64 - 1)) <= 1.0 - target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C(n, k) by Pascal's triangle, exactly in u128.
    fn choose_exact(n: usize, k: usize) -> u128 {
        let mut row = vec![1u128];
        for _ in 0..n {
            let mut next = vec![1u128; row.len() + 1];
            for i in 1..row.len() {
                next[i] = row[i - 1] + row[i];
            }
            row = next;
        }
        row.get(k).copied().unwrap_or(0)
    }

    #[test]
    fn the_uniform_miss_is_the_ratio_of_binomials() {
        for (total, checks, t) in [(20, 5, 3), (30, 0, 4), (12, 11, 1), (12, 11, 2), (40, 10, 0), (25, 7, 18)] {
            let exact = choose_exact(total - checks, t) as f64 / choose_exact(total, t) as f64;
            let got = miss_uniform(total as u64, checks as u64, t as u64);
            assert!((got - exact).abs() < 1e-12, "({total},{checks},{t}): {got} vs {exact}");
        }
    }

    /// Enumerates every t-subset of a tiny batch and counts the escapes.
    #[test]
    fn the_exact_miss_matches_enumeration() {
        // Positions: 0..n real (0..k duplicated), n..n+m known, n+m..N copies of 0..k.
        for shape in [Shape { n: 4, m: 2, k: 2 }, Shape { n: 5, m: 1, k: 3 }, Shape { n: 3, m: 0, k: 3 }] {
            let total = shape.total();
            for t in 0..=total {
                let (mut escapes, mut all) = (0u64, 0u64);
                for set in 0u32..(1 << total) {
                    if set.count_ones() as usize != t {
                        continue;
                    }
                    all += 1;
                    let hit = |p: usize| set & (1 << p) != 0;
                    let known_clean = (shape.n..shape.n + shape.m).all(|p| !hit(p));
                    let pairs_consistent = (0..shape.k).all(|j| hit(j) == hit(shape.n + shape.m + j));
                    if known_clean && pairs_consistent {
                        escapes += 1;
                    }
                }
                let expected = escapes as f64 / all as f64;
                let got = shape.miss_exactly(t, 1.0);
                assert!((got - expected).abs() < 1e-12, "{shape:?} t={t}: {got} vs {expected}");
                let no_pair_agreement = shape.miss_exactly(t, 0.0);
                let strict = miss_uniform(total as u64, (shape.m + 2 * shape.k) as u64, t as u64);
                assert!((no_pair_agreement - strict).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn binomial_tail_matches_direct_sums_and_bounds() {
        let direct = |x: u64, n: u64, p: f64| -> f64 {
            (0..=x)
                .map(|i| {
                    choose_exact(n as usize, i as usize) as f64 * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32)
                })
                .sum()
        };
        for (x, n, p) in [(3, 10, 0.5), (0, 20, 0.9), (17, 20, 0.9), (49, 60, 0.92)] {
            assert!((binomial_cdf(x, n, p) - direct(x, n, p)).abs() < 1e-10, "({x},{n},{p})");
        }
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
        assert_eq!(binomial_cdf(4, 5, 1.0), 0.0);
        // Claimed accuracy 1: any miss is rejected, all-correct is not.
        assert_eq!(rejection_threshold(40, 1.0, 0.01), Some(39));
        // Too few samples to reject anything at 1 %.
        assert_eq!(rejection_threshold(2, 0.5, 0.01), None);
        let t = rejection_threshold(200, 0.9, 0.05).unwrap_or(0);
        assert!(binomial_cdf(t, 200, 0.9) < 0.05 && binomial_cdf(t + 1, 200, 0.9) >= 0.05);
    }

    #[test]
    fn known_answer_miss_is_hypergeometric() {
        // Honest labels, claimed accuracy 1: threshold m − 1, miss = C(A, m)/C(P, m).
        let (pool, agreeing, m) = (50u64, 45u64, 6u64);
        let exact = choose_exact(45, 6) as f64 / choose_exact(50, 6) as f64;
        assert!((miss_known_answers(pool, agreeing, m, Some(m - 1)) - exact).abs() < 1e-12);
        assert_eq!(miss_known_answers(pool, pool, m, Some(m - 1)), 1.0);
        assert_eq!(miss_known_answers(pool, agreeing, m, None), 1.0);
    }

    #[test]
    fn the_helper_reaches_its_target_with_the_smallest_m() -> Result<(), String> {
        let c = choose(100, 0.05, 0.99, true, 1.0 / 9.0).ok_or("valid input")?;
        assert_eq!(c.m, 90, "0.95^90 ≈ 0.0099 ≤ 0.01 < 0.95^89");
        assert!(c.known_detection >= 0.99 && 1.0 - 0.95f64.powi(89) < 0.99);
        assert!(c.duplicate_detection >= 0.99 && c.k <= 100);
        let no_dups = choose(100, 0.2, 0.99, false, 0.0).ok_or("valid input")?;
        assert_eq!((no_dups.m, no_dups.k), (21, 0));
        assert!(choose(100, 0.0, 0.99, true, 0.0).is_none());
        assert!(choose(100, 0.1, 1.0, true, 0.0).is_none());
        Ok(())
    }

    #[test]
    fn the_pool_helper_takes_the_smallest_m_and_a_discriminative_pool_needs_fewer() -> Result<(), String> {
        // 6.22 % of a random pool vs 40 % of a hard one.
        let random = choose_for_pool(2000, 124, 0.99).ok_or("reachable")?;
        let hard = choose_for_pool(500, 200, 0.99).ok_or("reachable")?;
        assert!((70..=75).contains(&random), "{random}");
        assert!(hard <= 10, "{hard}");
        for (pool, dis, m) in [(2000u64, 124u64, random as u64), (500, 200, hard as u64)] {
            assert!(miss_known_answers(pool, pool - dis, m, Some(m - 1)) <= 0.01);
            assert!(miss_known_answers(pool, pool - dis, m - 1, Some(m - 2)) > 0.01);
        }
        assert_eq!(choose_for_pool(10, 0, 0.99), None);
        assert_eq!(choose_for_pool(10, 1, 0.99), Some(10), "the whole pool always holds the one disagreement");
        assert_eq!(choose_for_pool(10, 1, 1.0), None);
        Ok(())
    }

    #[test]
    fn independent_corruption_is_the_average_of_exact_counts() {
        // Σ_t Binom(N, t; ρ) · miss_exactly(t) = (1 − ρ)^m ((1 − ρ)² + ρ² q)^k.
        let shape = Shape { n: 12, m: 4, k: 5 };
        let (rate, q) = (0.1f64, 0.25);
        let total = shape.total() as u64;
        let averaged: f64 = (0..=total)
            .map(|t| {
                let w = ln_choose(total, t).unwrap_or(f64::NEG_INFINITY)
                    + t as f64 * rate.ln()
                    + (total - t) as f64 * (1.0f64 - rate).ln();
                w.exp() * shape.miss_exactly(t as usize, q)
            })
            .sum();
        assert!((averaged - shape.miss_independent(rate, q)).abs() < 1e-9, "{averaged}");
    }
}
