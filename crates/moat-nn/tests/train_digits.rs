//! Short training runs on the embedded digits set: models learn, batch-norm statistics are
//! trained and exported, and runs are reproducible from their seed.

#![cfg(feature = "train")]

use moat_nn::data::{self, TrainTest};
use moat_nn::train::{self, Augment, LrSchedule, Optimizer, TrainConfig};
use moat_nn::zoo::{self, GraphBuilder};
use moat_nn::{FloatExecutor, Graph, Op, Result, ValueId};

fn digits() -> Result<TrainTest> {
    data::load("digits", None, 0)
}

/// A small residual CNN with batch norms for `[1, 8, 8]` inputs.
fn small_cnn(seed: u64) -> Result<Graph> {
    let mut b = GraphBuilder::new(&[1, 8, 8], seed);
    let mut x = b.conv_bn("conv1", ValueId::INPUT, 8, 3, 1, 1)?;
    x = b.relu(x)?;
    x = b.basic_block("block", x, 8, 1)?;
    x = b.max_pool(x, 2, 2)?;
    x = b.flatten(x)?;
    x = b.dense("fc1", x, 32)?;
    x = b.batch_norm("fc1.bn", x)?;
    x = b.relu(x)?;
    let out = b.dense("fc2", x, 10)?;
    b.finish("small-cnn", out)
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig { epochs, batch_size: 32, threads: Some(1), ..TrainConfig::default() }
}

/// Test accuracy computed by the reference executor, independent of the burn code.
fn reference_accuracy(graph: &Graph, test: &data::Dataset) -> Result<f32> {
    let mut correct = 0;
    for i in 0..test.len() {
        if FloatExecutor::predict(graph, test.sample(i))? == test.label(i) {
            correct += 1;
        }
    }
    Ok(correct as f32 / test.len() as f32)
}

#[test]
fn mlp_learns_digits() -> Result<()> {
    let tt = digits()?;
    let graph = zoo::build(&"mlp:64".parse()?, &[1, 8, 8], 10, 1)?;
    let before = train::evaluate(&graph, &tt.test)?;
    let (trained, report) = train::train_with_test(&graph, &tt.train, &tt.test, &config(10))?;
    let after = reference_accuracy(&trained, &tt.test)?;
    assert!(before < 0.5, "untrained accuracy {before}");
    assert!(after >= 0.90, "test accuracy after training {after}");
    assert_eq!(report.epochs.len(), 10);
    assert_eq!(report.steps, 10 * tt.train.len().div_ceil(32));
    let first = &report.epochs[0];
    let last = &report.epochs[9];
    assert!(last.train_loss < first.train_loss / 2.0, "{first:?} → {last:?}");
    // The per-epoch test accuracy is the burn evaluation of the exported graph.
    let reported = last.test_accuracy.unwrap_or(0.0);
    assert!((reported - after).abs() <= 1.5 / tt.test.len() as f32, "reported {reported}, reference {after}");
    assert!(last.learning_rate < 1e-4, "cosine schedule ends near 0: {}", last.learning_rate);
    Ok(())
}

#[test]
fn residual_cnn_with_batch_norm_learns_and_exports_running_stats() -> Result<()> {
    let tt = digits()?;
    let graph = small_cnn(2)?;
    let sgd = Optimizer::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 1e-4, nesterov: true };
    let cfg = TrainConfig { optimizer: sgd, lr_schedule: LrSchedule::Cosine, ..config(6) };
    let (trained, report) = train::train(&graph, &tt.train, &cfg)?;
    let accuracy = reference_accuracy(&trained, &tt.test)?;
    assert!(accuracy >= 0.90, "test accuracy {accuracy}, report {report:?}");
    // burn and the reference executor may disagree on a near-tie, not more.
    let burn = train::evaluate(&trained, &tt.test)?;
    assert!((burn - accuracy).abs() <= 1.5 / tt.test.len() as f32, "burn {burn}, reference {accuracy}");
    // Same structure, trained statistics.
    assert_eq!(trained.nodes().len(), graph.nodes().len());
    let mut norms = 0;
    for (old, new) in graph.nodes().iter().zip(trained.nodes()) {
        assert_eq!(old.name, new.name);
        assert_eq!(old.inputs, new.inputs);
        if let (Op::BatchNorm(a), Op::BatchNorm(b)) = (&old.op, &new.op) {
            norms += 1;
            assert!(a.mean.iter().all(|&m| m == 0.0) && a.var.iter().all(|&v| v == 1.0));
            let moved = b.mean.iter().any(|m| m.abs() > 1e-3) && b.var.iter().any(|v| (v - 1.0).abs() > 1e-2);
            assert!(moved, "{}: running stats not exported: {:?} {:?}", new.name, b.mean, b.var);
            assert!(b.var.iter().all(|&v| v > 0.0), "{}: variances {:?}", new.name, b.var);
            assert_ne!(a.gamma, b.gamma, "{}: gamma not trained", new.name);
            assert_eq!(a.eps, b.eps);
        }
    }
    assert_eq!(norms, 4);
    Ok(())
}

#[test]
fn same_seed_same_model_other_seed_other_model() -> Result<()> {
    let tt = digits()?;
    let data = tt.train.take(300);
    let graph = small_cnn(3)?;
    let cfg = TrainConfig { augment: Augment::CropFlip, ..config(1) };
    let (a, ra) = train::train(&graph, &data, &cfg)?;
    let (b, rb) = train::train(&graph, &data, &cfg)?;
    let (c, _) = train::train(&graph, &data, &TrainConfig { seed: 1, ..cfg.clone() })?;
    assert_eq!(a, b);
    assert_eq!(ra.epochs[0].train_loss, rb.epochs[0].train_loss);
    assert_ne!(a, c);
    assert_ne!(a, graph);
    // Multi-threaded kernels are deterministic too, for a fixed thread count.
    let two = TrainConfig { threads: Some(2), ..cfg };
    assert_eq!(train::train(&graph, &data, &two)?.0, train::train(&graph, &data, &two)?.0);
    Ok(())
}

#[test]
fn max_train_samples_limits_the_epoch() -> Result<()> {
    let tt = digits()?;
    let graph = zoo::build(&"mlp:16".parse()?, &[1, 8, 8], 10, 1)?;
    let cfg = TrainConfig { max_train_samples: Some(100), batch_size: 30, ..config(2) };
    let (_, report) = train::train(&graph, &tt.train, &cfg)?;
    assert_eq!(report.samples, 100);
    assert_eq!(report.steps, 2 * 4);
    Ok(())
}

#[test]
fn mismatched_data_is_rejected_with_context() -> Result<()> {
    let tt = digits()?;
    let graph = zoo::build(&"mlp:16".parse()?, &[1, 28, 28], 10, 1)?;
    let err = train::train(&graph, &tt.train, &config(1)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("digits") && err.contains("[1, 28, 28]"), "{err}");
    let three_classes = zoo::build(&"mlp:16".parse()?, &[1, 8, 8], 3, 1)?;
    assert!(train::train(&three_classes, &tt.train, &config(1)).is_err());
    assert!(train::evaluate(&three_classes, &tt.test).is_err());
    Ok(())
}
