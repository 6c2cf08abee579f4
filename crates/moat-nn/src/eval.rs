//! Evaluation of a model over a dataset in its float and fixed-point executions, in parallel
//! over samples.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{NnError, Result};
use crate::exec::{FloatExecutor, QuantizedGraph, argmax_ring, par_map};
use crate::graph::Graph;
use crate::tensor::argmax_f32;

fn check_shape(graph: &Graph, data: &Dataset) -> Result<()> {
    if graph.input_shape() != data.sample_shape.as_slice() {
        return Err(NnError::Shape(format!(
            "model '{}' takes inputs of shape {:?} but dataset '{}' has samples of shape {:?}",
            graph.name(),
            graph.input_shape(),
            data.name,
            data.sample_shape
        )));
    }
    Ok(())
}

/// Float predictions for every sample.
pub fn predict_float(graph: &Graph, data: &Dataset) -> Result<Vec<usize>> {
    check_shape(graph, data)?;
    par_map(data.len(), |i| FloatExecutor::predict(graph, data.sample(i))).into_iter().collect()
}

/// Top-1 accuracy of the float executor.
pub fn accuracy(graph: &Graph, data: &Dataset) -> Result<f64> {
    let predictions = predict_float(graph, data)?;
    Ok(fraction(predictions.iter().enumerate().filter(|(i, p)| **p == data.label(*i)).count(), data.len()))
}

fn fraction(count: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { count as f64 / total as f64 }
}

/// How the fixed-point execution of a model compares with its float execution on a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedVsFloat {
    /// Samples evaluated.
    pub samples: usize,
    /// Float top-1 accuracy.
    pub float_accuracy: f64,
    /// Fixed-point top-1 accuracy.
    pub fixed_accuracy: f64,
    /// Fraction of samples whose float and fixed-point labels agree.
    pub label_agreement: f64,
    /// Largest absolute difference between a float logit and its decoded fixed-point logit.
    pub max_logit_error: f64,
    /// Mean absolute logit difference.
    pub mean_logit_error: f64,
}

/// One sample's comparison.
struct Row {
    float_label: usize,
    fixed_label: usize,
    max_error: f64,
    mean_error: f64,
}

/// Runs both executions over `data` and compares them.
pub fn fixed_vs_float(graph: &Graph, quantized: &QuantizedGraph, data: &Dataset) -> Result<FixedVsFloat> {
    check_shape(graph, data)?;
    let fixed = quantized.fixed();
    let rows: Vec<Row> = par_map(data.len(), |i| -> Result<Row> {
        let x = data.sample(i);
        let float_logits = FloatExecutor::logits(graph, x)?;
        let ring_logits = quantized.logits_encoded(x)?;
        let float_label = argmax_f32(&float_logits).unwrap_or(0);
        let fixed_label = argmax_ring(fixed, &ring_logits).unwrap_or(0);
        let errors = float_logits.iter().zip(&ring_logits).map(|(a, b)| (*a as f64 - fixed.decode(*b)).abs());
        let (max, sum) = errors.fold((0.0f64, 0.0f64), |(m, s), e| (m.max(e), s + e));
        Ok(Row { float_label, fixed_label, max_error: max, mean_error: sum / float_logits.len().max(1) as f64 })
    })
    .into_iter()
    .collect::<Result<_>>()?;
    let n = data.len();
    let count = |f: &dyn Fn(usize, &Row) -> bool| rows.iter().enumerate().filter(|(i, r)| f(*i, r)).count();
    Ok(FixedVsFloat {
        samples: n,
        float_accuracy: fraction(count(&|i, r| r.float_label == data.label(i)), n),
        fixed_accuracy: fraction(count(&|i, r| r.fixed_label == data.label(i)), n),
        label_agreement: fraction(count(&|_, r| r.float_label == r.fixed_label), n),
        max_logit_error: rows.iter().map(|r| r.max_error).fold(0.0, f64::max),
        mean_logit_error: if n == 0 { 0.0 } else { rows.iter().map(|r| r.mean_error).sum::<f64>() / n as f64 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::zoo::{Architecture, build};

    #[test]
    fn fixed_agrees_with_float_on_random_inputs() -> Result<()> {
        let graph = build(&Architecture::Mlp { hidden: vec![32, 16] }, &[20], 4, 9)?;
        let features: Vec<f32> = (0..50 * 20).map(|i| ((i * 7919 % 200) as f32 - 100.0) / 50.0).collect();
        let labels: Vec<u16> = (0..50).map(|i| (i % 4) as u16).collect();
        let data = Dataset::new("synthetic", vec![20], 4, features, labels)?;
        let q = QuantizedGraph::new(&graph, FixedPoint::default())?;
        let report = fixed_vs_float(&graph, &q, &data)?;
        assert_eq!(report.samples, 50);
        assert!(report.label_agreement >= 0.96, "{report:?}");
        assert!(report.max_logit_error < 0.05, "{report:?}");
        assert!((report.float_accuracy - accuracy(&graph, &data)?).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn shape_mismatch_is_reported() -> Result<()> {
        let graph = build(&Architecture::Mlp { hidden: vec![] }, &[3], 2, 0)?;
        let data = Dataset::new("d", vec![4], 2, vec![0.0; 8], vec![0, 1])?;
        let err = accuracy(&graph, &data).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("[3]") && err.contains("[4]"), "{err}");
        Ok(())
    }
}
