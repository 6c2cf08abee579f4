//! Fusion over the real two-party protocol (server and client on two threads over the
//! in-memory channel: the full cryptography): the honest server's batch is verified and its
//! labels equal the fixed-point executor's; a server that substitutes an untrained model of the
//! same architecture is caught, and no label is released. Needs MNIST under `MOAT_DATA_DIR` or
//! `../shared/data` beside the checkout; without it the test prints a notice and passes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moat_client::SecureSession;
use moat_client::fusion::{FusionConfig, FusionError, KnownAnswerPool, ModelIdentity, Randomness, SessionOracle, run};
use moat_mpc::Seed;
use moat_mpc::engine::{HonestServer, ServeOptions, ServerGuard, ServerModel};
use moat_mpc::transport::memory;
use moat_nn::{FixedPoint, QuantizedGraph, zoo};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What a batch returned, and the labels the committed model gives the queries.
type Outcome = (Result<Vec<usize>, FusionError>, Vec<usize>);

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MOAT_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    dir.join("mnist").is_dir().then_some(dir)
}

/// Runs one Fusion batch against a real server serving `served`, with the pool labelled by
/// `committed`.
fn batch_against(
    committed: &QuantizedGraph,
    served: Arc<QuantizedGraph>,
    test: &moat_nn::data::Dataset,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    batch_against_committed(
        committed,
        served,
        test,
        Box::new(HonestServer),
        None,
        ModelIdentity::named("lenet5", Some("1")),
    )
}

/// [`batch_against`] with the server acting on its own shares through `guard`.
#[cfg(feature = "danger-cheating-servers")]
fn batch_against_guarded(
    committed: &QuantizedGraph,
    served: Arc<QuantizedGraph>,
    test: &moat_nn::data::Dataset,
    guard: Box<dyn ServerGuard + Send>,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    batch_against_committed(committed, served, test, guard, None, ModelIdentity::named("lenet5", Some("1")))
}

/// [`batch_against_guarded`] with the server announcing `hello_commitment` in its hello and
/// the client stating `stated` (e.g. what an admission named).
fn batch_against_committed(
    committed: &QuantizedGraph,
    served: Arc<QuantizedGraph>,
    test: &moat_nn::data::Dataset,
    mut guard: Box<dyn ServerGuard + Send>,
    hello_commitment: Option<String>,
    stated: ModelIdentity,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let queries: Vec<Vec<f32>> = (0..6).map(|i| test.sample(i).to_vec()).collect();
    let expected = (0..6).map(|i| committed.predict(test.sample(i))).collect::<Result<Vec<_>, _>>()?;
    let pool_samples: Vec<Vec<f32>> = (100..140).map(|i| test.sample(i).to_vec()).collect();
    let pool_labels = (100..140).map(|i| committed.predict(test.sample(i))).collect::<Result<Vec<_>, _>>()?;
    let pool = KnownAnswerPool::honest_labels(pool_samples, pool_labels)?;
    let config = FusionConfig::new(6, 3, 0.01)?;

    let (mut server_ch, client_ch) = memory::pair(Default::default());
    let server = ServerModel::new(served, 4096)?;
    let server = match hello_commitment.clone() {
        Some(c) => server.with_commitment(c),
        None => server,
    };
    let handle = std::thread::spawn(move || {
        server.serve_guarded(&mut server_ch, Seed::insecure_from_u64(5), &ServeOptions::default(), &mut *guard)
    });
    let mut session = SecureSession::start(Box::new(client_ch), Seed::insecure_from_u64(6), None)?;
    assert_eq!(session.model_commitment(), hello_commitment.as_deref(), "the hello carries the commitment");
    let outcome = {
        let mut oracle = SessionOracle::new(&mut session, stated);
        run(&config, &pool, queries, &mut oracle, &mut Randomness::Os).map(|v| {
            assert_eq!(v.report().model.commitment, hello_commitment, "the batch names the hello's commitment");
            v.into_labels()
        })
    };
    session.close()?;
    let served_queries = handle.join().map_err(|_| "server thread panicked")??;
    assert_eq!(served_queries, 6 + 6 + 3, "one session served the whole batch of n + m + k");
    Ok((outcome, expected))
}

/// MNIST test samples and the committed model.
type MnistAndModel = (moat_nn::data::Dataset, Arc<QuantizedGraph>);

/// 200 MNIST test samples and the committed LeNet-5, or `None` without the data.
fn mnist_and_lenet() -> Result<Option<MnistAndModel>, Box<dyn std::error::Error>> {
    let Some(dir) = data_dir() else { return Ok(None) };
    let test = moat_nn::data::load("mnist", Some(&dir), 0)?.test.take(200);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx");
    let committed = Arc::new(QuantizedGraph::new(&moat_nn::onnx::load_onnx(&path)?, FixedPoint::default())?);
    Ok(Some((test, committed)))
}

#[test]
fn fusion_over_the_real_protocol_verifies_the_honest_server_and_catches_a_substitute() -> TestResult {
    let Some((test, committed)) = mnist_and_lenet()? else {
        eprintln!("no MNIST data (MOAT_DATA_DIR or ../shared/data): skipping");
        return Ok(());
    };

    let (honest, expected) = batch_against(&committed, Arc::clone(&committed), &test)?;
    assert_eq!(honest?, expected, "the honest server is verified and the labels are the model's");

    let untrained = zoo::build(&zoo::Architecture::LeNet5 { width: 1.0 }, &[1, 28, 28], 10, 3)?;
    let cheap = Arc::new(QuantizedGraph::new(&untrained, FixedPoint::default())?);
    let (cheated, _) = batch_against(&committed, cheap, &test)?;
    match cheated {
        Err(FusionError::ServerCheated(evidence)) => assert!(!evidence.known_failures.is_empty(), "{evidence}"),
        other => panic!("the substituted model must be caught, got {other:?}"),
    }
    Ok(())
}

/// The hello's commitment (the one a `moat serve` session port announces for the model
/// version, computed from the ONNX file with a nonce) names the batch's model; a hello whose
/// commitment differs from the one the admission stated is evidence, and no label comes out.
#[test]
fn the_hello_commitment_names_the_batch_and_a_different_one_is_evidence() -> TestResult {
    let Some((test, committed)) = mnist_and_lenet()? else {
        eprintln!("no MNIST data (MOAT_DATA_DIR or ../shared/data): skipping");
        return Ok(());
    };
    let file = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5-mnist.onnx"))?;
    let commitment = moat_wire::commitment::commit(&[9u8; 16], &file);
    let admitted = ModelIdentity { commitment: Some(commitment.clone()), ..ModelIdentity::named("lenet5", Some("1")) };
    let (honest, expected) = batch_against_committed(
        &committed,
        Arc::clone(&committed),
        &test,
        Box::new(HonestServer),
        Some(commitment.clone()),
        admitted.clone(),
    )?;
    assert_eq!(honest?, expected);
    // Same weights, but the hello commits to another file (another nonce): not the admitted model.
    let other = moat_wire::commitment::commit(&[10u8; 16], &file);
    let (switched, _) = batch_against_committed(
        &committed,
        Arc::clone(&committed),
        &test,
        Box::new(HonestServer),
        Some(other.clone()),
        admitted,
    )?;
    match switched {
        Err(FusionError::ServerCheated(evidence)) => {
            let seen: Vec<_> = evidence.models.iter().map(|m| m.commitment.clone()).collect();
            assert_eq!(seen, vec![Some(commitment), Some(other)], "{evidence}");
            assert!(evidence.known_failures.is_empty() && evidence.disagreeing_duplicates.is_empty());
        }
        other => panic!("a switched commitment must be evidence, got {other:?}"),
    }
    Ok(())
}

/// A server that follows the protocol's messages but offsets its own share of one class's
/// logit at the reveal point (a deviation no transcript check sees) is caught by the known
/// answers; the honest run above shows the same batch is verified without it.
#[cfg(feature = "danger-cheating-servers")]
#[test]
fn fusion_catches_a_server_that_offsets_its_logit_shares_inside_the_protocol() -> TestResult {
    use moat_client::fusion::danger::LogitShareOffset;

    let Some((test, committed)) = mnist_and_lenet()? else {
        eprintln!("no MNIST data (MOAT_DATA_DIR or ../shared/data): skipping");
        return Ok(());
    };
    // +1000 on class 3's logit (at scale 2^f) on every query: every revealed label becomes 3.
    let offset = 1000u64 << committed.fixed().frac_bits();
    let guard = Box::new(LogitShareOffset::new(3, offset, 1.0, 11));
    let (cheated, expected) = batch_against_guarded(&committed, Arc::clone(&committed), &test, guard)?;
    assert!(expected.iter().any(|&l| l != 3), "the queries must not all be of class 3");
    match cheated {
        Err(FusionError::ServerCheated(evidence)) => assert!(!evidence.known_failures.is_empty(), "{evidence}"),
        other => panic!("the share-offsetting server must be caught, got {other:?}"),
    }
    Ok(())
}
