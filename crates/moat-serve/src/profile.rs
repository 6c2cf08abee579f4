//! Model profiles: the accuracy and latency the task router selects by.
//!
//! Each model version is profiled when it is loaded: its accuracy on a held-out set (named in
//! its `config.json`), else the test accuracy of its model card, else a declared value; and its
//! single-sample latency on this machine, measured over warm-up plus timed runs of the float
//! executor (p50 / p99 / mean). A `declared` latency in the config replaces the measurement,
//! e.g. to advertise a service-level objective rather than a measured figure.

use std::time::Instant;

use moat_nn::data::Dataset;
use moat_nn::{FloatExecutor, Graph};
use serde::Serialize;

use crate::error::ServeError;

/// A model version's profile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// Top-1 accuracy in percent, when known. Models without one serve explicit requests but are
    /// not task candidates.
    pub accuracy: Option<f64>,
    /// Where the accuracy comes from: `held-out`, `card`, `declared` or `unknown`.
    pub accuracy_source: String,
    /// Held-out samples the accuracy was measured on (0 unless `held-out`).
    pub accuracy_samples: usize,
    /// Latency used for selection, in milliseconds: the measured p99, or the declared value.
    pub latency_ms: f64,
    /// Measured median single-sample latency, in milliseconds.
    pub latency_p50_ms: f64,
    /// Measured 99th-percentile single-sample latency, in milliseconds.
    pub latency_p99_ms: f64,
    /// Measured mean single-sample latency, in milliseconds.
    pub latency_mean_ms: f64,
    /// Timed runs behind the latency figures.
    pub latency_runs: usize,
    /// `measured` or `declared`.
    pub latency_source: String,
}

/// Latency statistics of repeated single-sample runs, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Timed runs.
    pub runs: usize,
}

/// The nearest-rank percentile `q ∈ (0, 1]` of sorted values (0 for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `graph` on `sample` `warmup` times untimed, then `runs` (≥ 1) times timed.
pub fn measure_latency(graph: &Graph, sample: &[f32], warmup: usize, runs: usize) -> Result<LatencyStats, ServeError> {
    let nn = |source| ServeError::Nn { model: graph.name().to_string(), source };
    for _ in 0..warmup {
        FloatExecutor::logits(graph, sample).map_err(nn)?;
    }
    let runs = runs.max(1);
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let logits = FloatExecutor::logits(graph, sample).map_err(nn)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(logits);
    }
    let mean_ms = ms.iter().sum::<f64>() / runs as f64;
    ms.sort_by(f64::total_cmp);
    Ok(LatencyStats { p50_ms: percentile(&ms, 0.5), p99_ms: percentile(&ms, 0.99), mean_ms, runs })
}

/// Top-1 accuracy in percent of `graph` on `data`.
pub fn held_out_accuracy(graph: &Graph, data: &Dataset) -> Result<f64, ServeError> {
    moat_nn::eval::accuracy(graph, data)
        .map(|a| a * 100.0)
        .map_err(|source| ServeError::Nn { model: graph.name().to_string(), source })
}

#[cfg(test)]
mod tests {
    use moat_nn::zoo;

    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn bigger_models_measure_slower() -> Result<(), Box<dyn std::error::Error>> {
        let small = zoo::build(&"mlp:8".parse()?, &[1, 8, 8], 10, 1)?;
        let big = zoo::build(&"mlp:512,512".parse()?, &[1, 8, 8], 10, 1)?;
        let x = vec![0.25f32; 64];
        let s = measure_latency(&small, &x, 5, 50)?;
        let b = measure_latency(&big, &x, 5, 50)?;
        assert_eq!(s.runs, 50);
        assert!(s.p50_ms <= s.p99_ms && s.p50_ms > 0.0);
        // ~300k vs ~600 multiply-adds: the median must reflect it even on a busy machine.
        assert!(b.p50_ms > 5.0 * s.p50_ms, "small {s:?} big {b:?}");
        assert!(measure_latency(&small, &[0.0; 3], 0, 1).is_err());
        Ok(())
    }
}
