//! The same attack code against the real two-party protocol (server and client on two
//! threads over the in-memory channel: the full cryptography) and against the simulated
//! engine: the same parameters, read with the same number of queries.

use std::path::Path;
use std::sync::Arc;

use moat_attack::seek::{Extraction, Sampling, Seek, SeekConfig};
use moat_attack::{AttackError, Result, SessionTamperOracle, SimulatedTamperOracle};
use moat_mpc::engine::{Hardening, ServerModel};
use moat_mpc::transport::memory;
use moat_nn::{FixedPoint, QuantizedGraph};

fn lenet() -> Result<Arc<QuantizedGraph>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx");
    let graph = moat_nn::onnx::load_onnx(&path)?;
    Ok(Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?))
}

fn config() -> SeekConfig {
    // The first layer and a middle one, 20 weights and the bias of one neuron each.
    SeekConfig {
        seed: 11,
        sampling: Sampling::Sample { channels: 1, per_channel: 20 },
        layers: vec!["conv1".into(), "fc1".into()],
        ..SeekConfig::default()
    }
}

fn estimates(e: &Extraction) -> Vec<(String, usize, i64, u64)> {
    e.layers
        .iter()
        .flat_map(|l| l.weights.iter().chain(&l.biases).map(|x| (l.name.clone(), x.index, x.raw, x.queries)))
        .collect()
}

#[test]
fn the_attack_reads_the_same_values_with_the_same_queries_over_the_real_protocol() -> Result<()> {
    let model = lenet()?;
    let mut simulated = SimulatedTamperOracle::new(Arc::clone(&model), 1, Hardening::NONE)?;
    let expected = Seek::new(&mut simulated, config())?.run()?;

    let (mut server_ch, client_ch) = memory::pair(Default::default());
    let server = ServerModel::new(Arc::clone(&model), 4096)?;
    let handle = std::thread::spawn(move || server.serve(&mut server_ch, moat_mpc::Seed::insecure_from_u64(5)));
    let session = moat_client::SecureSession::start(Box::new(client_ch), moat_mpc::Seed::insecure_from_u64(6), None)?;
    let mut remote = SessionTamperOracle::new(session);
    let got = Seek::new(&mut remote, config())?.run()?;
    remote.close()?;
    let served = handle.join().map_err(|_| AttackError::Search("server thread panicked".into()))??;

    let conv1 = got.layers.iter().find(|l| l.name == "conv1").map(|l| l.weights.len() + l.biases.len());
    let fc1 = got.layers.iter().find(|l| l.name == "fc1").map(|l| l.weights.len() + l.biases.len());
    assert!(conv1 >= Some(20) && fc1 >= Some(20), "{conv1:?} {fc1:?}");
    assert_eq!(estimates(&got), estimates(&expected));
    assert_eq!(got.queries, expected.queries);
    assert_eq!(served, got.queries);
    Ok(())
}
