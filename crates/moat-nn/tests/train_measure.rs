//! Training measurements on real data. Runs only when `MOAT_DATA_DIR` names the data root (the
//! directory holding `mnist/` and `cifar10/`); prints a notice and passes otherwise.
//!
//! * default (CI-sized): LeNet-5 on MNIST for 2 epochs, and one epoch of ResNet-20 on a
//!   2,000-image CIFAR-10 slice to time it (`MOAT_CIFAR_SAMPLES`, `MOAT_CIFAR_EPOCHS` change
//!   the slice and the epochs);
//! * `MOAT_FULL=1`: LeNet-5 with its full preset ([`TrainConfig::default_for`]), which must
//!   reach 98.5 % test accuracy.
//!
//! `cargo test --release -p moat-nn --features train --test train_measure -- --nocapture`

#![cfg(feature = "train")]

use std::path::PathBuf;
use std::time::Instant;

use moat_nn::train::{self, TrainConfig, TrainReport};
use moat_nn::{Result, data, zoo};

fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("MOAT_DATA_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!("MOAT_DATA_DIR is not set: skipping the training measurements");
            None
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn full() -> bool {
    std::env::var("MOAT_FULL").is_ok_and(|v| v == "1")
}

fn print_report(what: &str, report: &TrainReport) {
    for e in &report.epochs {
        eprintln!(
            "{what}: epoch {} loss {:.4} train acc {:.4} test acc {} lr {:.2e} {:.1} s",
            e.epoch,
            e.train_loss,
            e.train_accuracy,
            e.test_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
            e.learning_rate,
            e.seconds
        );
    }
    eprintln!("{what}: {} samples, {} steps, {:.1} s total", report.samples, report.steps, report.seconds_total);
}

#[test]
fn lenet5_on_mnist() -> Result<()> {
    let Some(dir) = data_dir() else { return Ok(()) };
    let tt = data::load("mnist", Some(&dir), 0)?;
    let arch = "lenet5".parse()?;
    let graph = zoo::build(&arch, &tt.train.sample_shape, 10, 0)?;
    let preset = TrainConfig::default_for(&arch);
    let config = if full() { preset } else { TrainConfig { epochs: 2, ..preset } };
    let start = Instant::now();
    let (trained, report) = train::train(&graph, &tt.train, &config)?;
    let accuracy = train::evaluate(&trained, &tt.test)?;
    let wall = start.elapsed().as_secs_f64();
    print_report("lenet5/mnist", &report);
    eprintln!(
        "lenet5/mnist: {} epochs, test accuracy {accuracy:.4}, wall time {wall:.1} s (incl. evaluation)",
        config.epochs
    );
    let target = if full() { 0.985 } else { 0.97 };
    assert!(accuracy >= target, "test accuracy {accuracy} below {target}");
    Ok(())
}

#[test]
fn resnet20_on_a_cifar10_slice() -> Result<()> {
    let Some(dir) = data_dir() else { return Ok(()) };
    let tt = data::load("cifar10", Some(&dir), 0)?;
    let samples = env_usize("MOAT_CIFAR_SAMPLES", 2000);
    let epochs = env_usize("MOAT_CIFAR_EPOCHS", 1);
    let slice = tt.train.take(samples);
    let arch = "resnet20".parse()?;
    let graph = zoo::build(&arch, &slice.sample_shape, 10, 0)?;
    let config = TrainConfig { epochs, ..TrainConfig::default_for(&arch) };
    let (trained, report) = train::train(&graph, &slice, &config)?;
    print_report("resnet20/cifar10", &report);
    let per_epoch = report.epochs.iter().map(|e| e.seconds).sum::<f64>() / epochs as f64;
    let start = Instant::now();
    let test = tt.test.take(2000);
    let accuracy = train::evaluate(&trained, &test)?;
    let eval = start.elapsed().as_secs_f64();
    eprintln!(
        "resnet20/cifar10: {per_epoch:.1} s per {samples}-image epoch → ≈{:.0} s per 50,000-image epoch; \
         evaluation {eval:.1} s per 2,000 test images; test accuracy after {epochs} epoch(s) {accuracy:.4}",
        per_epoch * 50_000.0 / slice.len() as f64,
    );
    assert!(report.epochs[0].train_loss.is_finite());
    Ok(())
}
