//! SEEK against the trained MNIST LeNet-5 on the simulated engine: every parameter, and the
//! extracted model's agreement with the victim on the MNIST test set (needs MOAT_DATA_DIR).

use std::path::Path;
use std::sync::Arc;

use moat_attack::oracle::public_architecture;
use moat_attack::seek::evaluate::{extracted_graph, score};
use moat_attack::seek::{Seek, SeekConfig};
use moat_attack::{Result, SimulatedTamperOracle};
use moat_mpc::engine::Hardening;
use moat_nn::{FixedPoint, FloatExecutor, QuantizedGraph};

#[test]
fn shared_data_seek_extracts_the_mnist_lenet_completely() -> Result<()> {
    let Some(dir) = std::env::var_os("MOAT_DATA_DIR") else {
        eprintln!("MOAT_DATA_DIR not set: skipped");
        return Ok(());
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx");
    let graph = moat_nn::onnx::load_onnx(&path)?;
    let model = Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?);
    let mut oracle = SimulatedTamperOracle::new(Arc::clone(&model), 1, Hardening::NONE)?;
    let extraction = Seek::new(&mut oracle, SeekConfig::default())?.run()?;
    let scores = score(&extraction, &model)?;
    // Every parameter of the folded model (the logits layer up to its reference row).
    let expected = model.graph().parameter_count() - (84 + 1);
    assert_eq!(scores.total.parameters, expected);
    assert_eq!(scores.total.failed, 0);
    assert!(scores.total.queries_per_parameter <= 50.0, "{:?}", scores.total);
    assert!(scores.total.mean_relative_error_deployed <= 3e-4, "{:?}", scores.total);

    let copy = extracted_graph(&extraction, &public_architecture(&model)?)?;
    let (data, _) = moat_nn::data::load_with_spec("mnist", Some(Path::new(&dir)), 1)?;
    let n = data.test.len();
    let agree = (0..n)
        .filter(|&i| {
            let x = data.test.sample(i);
            model.predict(x).ok() == FloatExecutor::predict(&copy, x).ok()
        })
        .count();
    let fidelity = agree as f64 / n as f64;
    eprintln!("{:?}; fidelity {fidelity:.4} on {n} images", scores.total);
    assert!(fidelity >= 0.99, "fidelity {fidelity}");
    Ok(())
}
