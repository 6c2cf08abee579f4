//! SEEK against the simulated two-party engine on small random-weight models: every
//! extracted parameter must equal the deployed one (bit for bit where the read is exact).

use std::sync::Arc;

use moat_attack::seek::evaluate::score;
use moat_attack::seek::{Sampling, Seek, SeekConfig};
use moat_attack::{Result, SimulatedTamperOracle};
use moat_mpc::engine::Hardening;
use moat_nn::{FixedPoint, QuantizedGraph, zoo};

fn victim(arch: &str, shape: &[usize], seed: u64) -> Arc<QuantizedGraph> {
    let arch: zoo::Architecture = arch.parse().unwrap_or_else(|e| panic!("{e}"));
    let g = zoo::build(&arch, shape, 10, seed).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(QuantizedGraph::new(&g, FixedPoint::default()).unwrap_or_else(|e| panic!("{e}")))
}

fn attack(arch: &str, shape: &[usize], sampling: Sampling) -> Result<()> {
    let model = victim(arch, shape, 5);
    let mut oracle = SimulatedTamperOracle::new(Arc::clone(&model), 9, Hardening::NONE)?;
    let config = SeekConfig { sampling, seed: 3, ..SeekConfig::default() };
    let extraction = Seek::new(&mut oracle, config)?.run()?;
    let scores = score(&extraction, &model)?;
    assert!(scores.total.parameters > 0);
    assert_eq!(scores.total.failed, 0);
    // Every read is exact; only the logits layer's biases are known to 2^-f (its output is
    // truncated before the label), and those are class differences.
    for (layer, report) in extraction.layers.iter().zip(&scores.layers) {
        let inexact = layer.biases.iter().filter(|e| !e.exact).count();
        let exact = report.figures.parameters - inexact;
        assert!(
            report.figures.exact_fraction * report.figures.parameters as f64 >= exact as f64 - 0.5,
            "{}: {:?}",
            layer.name,
            report.figures
        );
    }
    assert!(scores.total.max_relative_error_deployed <= 1.0, "{:?}", scores.total);
    // Well under the paper's 50 queries per parameter even on these small samples.
    assert!(scores.total.queries_per_parameter < 30.0, "{:?}", scores.total);
    Ok(())
}

#[test]
fn a_small_mlp_is_extracted_exactly() -> Result<()> {
    attack("mlp:16,8", &[12], Sampling::Full)
}

#[test]
fn lenet_samples_are_extracted_exactly() -> Result<()> {
    attack("lenet5:x0.5", &[1, 28, 28], Sampling::Sample { channels: 2, per_channel: 5 })
}

#[test]
fn resnet_samples_are_extracted_exactly() -> Result<()> {
    attack("resnet20:x0.25", &[3, 32, 32], Sampling::Sample { channels: 2, per_channel: 4 })
}
