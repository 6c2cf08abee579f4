//! Acceptance on real data: simulated two-party inference of the committed zoo models gives the
//! fixed-point executor's labels (and, with exact truncation, its logits bit for bit) over the
//! test sets. Needs `MOAT_DATA_DIR`; without it the test prints a notice and passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moat_mpc::engine::{Honest, Reveal, Revealed, SimulatedEngine};
use moat_nn::{FixedPoint, QuantizedGraph, data, exec::par_map, onnx};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn model_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(format!("{name}.onnx"))
}

#[test]
fn shared_data_simulated_engine_matches_fixed_point_on_test_sets() -> TestResult {
    let Some(dir) = std::env::var_os("MOAT_DATA_DIR").map(PathBuf::from) else {
        eprintln!("MOAT_DATA_DIR is not set: skipping the data-backed suite (CI sets it)");
        return Ok(());
    };
    for (name, dataset, samples) in [("lenet5-mnist", "mnist", 10_000), ("resnet20-cifar10", "cifar10", 10_000)] {
        let graph = onnx::load_onnx(&model_path(name))?;
        let quantized = Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?);
        let test = data::load(dataset, Some(&dir), 0)?.test.take(samples);
        let outcomes = par_map(test.len(), |i| -> Result<(bool, bool), String> {
            let x = test.sample(i);
            let expected = quantized.logits_encoded(x).map_err(|e| e.to_string())?;
            let mut engine = SimulatedEngine::new(Arc::clone(&quantized), i as u64);
            let logits = engine.infer(x, Reveal::Logits, &mut Honest).map_err(|e| e.to_string())?;
            let label = engine.infer(x, Reveal::Label, &mut Honest).map_err(|e| e.to_string())?;
            let fixed_label = moat_nn::exec::argmax_ring(quantized.fixed(), &expected);
            Ok((logits == Revealed::Logits(expected), label.label(quantized.fixed()) == fixed_label))
        });
        let outcomes: Vec<(bool, bool)> = outcomes.into_iter().collect::<Result<_, _>>()?;
        let exact = outcomes.iter().filter(|o| o.0).count();
        let same_label = outcomes.iter().filter(|o| o.1).count();
        eprintln!("{name}: simulated = fixed point on {exact}/{samples} logits, {same_label}/{samples} labels");
        assert_eq!(outcomes.len(), samples);
        assert_eq!(exact, samples, "{name}: logits must be bit-identical (exact truncation)");
        assert_eq!(same_label, samples, "{name}: labels");
    }
    Ok(())
}
