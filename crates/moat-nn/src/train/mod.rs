//! CPU training of layer graphs (burn, flex backend; `train` feature).
//!
//! The layer graph stays the only model representation the rest of moat sees: [`train`] takes a
//! [`Graph`] — its architecture and its initial weights, e.g. from
//! [`zoo::build`](crate::zoo::build), whose seed therefore decides the initialisation — and
//! returns a trained [`Graph`] with the same nodes. Internally the graph is mirrored by one
//! generic burn module (every convolution, dense and batch-norm layer) walked in node order;
//! after training the parameters and the batch-norm running statistics are copied back.
//!
//! Trainable ops: `Conv2d` (any stride, asymmetric padding), `Dense`, `BatchNorm` (batch
//! statistics while training, running statistics updated with momentum 0.1 and exported),
//! `Relu`, `MaxPool`, `AvgPool`, `GlobalAvgPool`, `Add`, `Flatten`, `Reshape` and a `Softmax`
//! head. The loss is the cross-entropy of [`Graph::logits`] (the input of a softmax head).
//!
//! Minibatches are shuffled each epoch by a ChaCha20 generator seeded from
//! [`TrainConfig::seed`], which also drives augmentation: a run is reproducible given the seed
//! and the thread count (burn's CPU kernels are deterministic for a fixed thread count).
//!
//! ```
//! use moat_nn::{data, train, zoo};
//!
//! let digits = data::load("digits", None, 0)?;
//! let arch = "mlp:64".parse()?;
//! let graph = zoo::build(&arch, &digits.train.sample_shape, 10, 42)?;
//! let config = train::TrainConfig { epochs: 10, batch_size: 32, ..train::TrainConfig::default_for(&arch) };
//! let (trained, report) = train::train(&graph, &digits.train, &config)?;
//! assert_eq!(report.epochs.len(), 10);
//! assert!(train::evaluate(&trained, &digits.test)? > 0.9);
//! # Ok::<(), moat_nn::NnError>(())
//! ```

mod batch;
mod mirror;

use std::time::Instant;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{NnError, Result};
use crate::graph::Graph;
use crate::tensor::{argmax_f32, numel};
use crate::zoo::Architecture;

pub use batch::CROP_PAD;
use mirror::{Mirror, Value, tensor_values};

/// Samples per forward pass in [`predict_logits`] and [`evaluate`].
const EVAL_BATCH: usize = 256;

/// The optimiser and its hyper-parameters. Weight decay is an L2 penalty added to the gradient
/// of every parameter (including biases and batch-norm scales).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
    Adam {
        /// Base learning rate.
        lr: f64,
        /// L2 penalty.
        weight_decay: f32,
    },
    /// Stochastic gradient descent with (PyTorch-style, undampened) momentum.
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum factor (0 for plain SGD).
        momentum: f64,
        /// L2 penalty.
        weight_decay: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
}

impl Optimizer {
    /// The base learning rate.
    pub fn learning_rate(&self) -> f64 {
        match *self {
            Optimizer::Adam { lr, .. } | Optimizer::Sgd { lr, .. } => lr,
        }
    }

    fn build(&self) -> ModuleOptimizer {
        let decay = |wd: f32| (wd > 0.0).then(|| WeightDecayConfig::new(wd));
        match *self {
            Optimizer::Adam { weight_decay, .. } => {
                AdamConfig::new().with_epsilon(1e-8).with_weight_decay(decay(weight_decay)).init()
            }
            Optimizer::Sgd { momentum, weight_decay, nesterov, .. } => {
                let momentum = (momentum > 0.0)
                    .then(|| MomentumConfig::new().with_momentum(momentum).with_dampening(0.0).with_nesterov(nesterov));
                SgdConfig::new().with_momentum(momentum).with_weight_decay(decay(weight_decay)).init()
            }
        }
    }
}

/// How the learning rate evolves over the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Cosine annealing from the base rate to 0 over all steps of the run, updated every step.
    Cosine,
}

impl LrSchedule {
    /// The rate at `step` of `total` steps for base rate `base`.
    pub fn rate(&self, base: f64, step: usize, total: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => {
                let t = step as f64 / total.max(1) as f64;
                0.5 * base * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Training-time data augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Augment {
    /// The samples as they are.
    #[default]
    None,
    /// Random crop of the image zero-padded by [`CROP_PAD`] pixels (zero in normalised space,
    /// i.e. the mean colour) and a horizontal flip with probability ½: the standard CIFAR
    /// augmentation. Needs `[C, H, W]` samples.
    CropFlip,
}

/// Hyper-parameters of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per minibatch (the last minibatch of an epoch may be smaller).
    pub batch_size: usize,
    /// Optimiser and base learning rate.
    pub optimizer: Optimizer,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Seeds shuffling and augmentation.
    pub seed: u64,
    /// Augmentation of training samples.
    pub augment: Augment,
    /// Show a progress bar per epoch on the terminal.
    pub progress: bool,
    /// Train on the first `n` samples only.
    pub max_train_samples: Option<usize>,
    /// Worker threads (a dedicated rayon pool); `None` uses rayon's global pool.
    pub threads: Option<usize>,
}

impl Default for TrainConfig {
    /// Adam (lr 10⁻³) with a cosine schedule, batch 64, 4 epochs: the preset for small models.
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 64,
            optimizer: Optimizer::Adam { lr: 1e-3, weight_decay: 0.0 },
            lr_schedule: LrSchedule::Cosine,
            seed: 0,
            augment: Augment::None,
            progress: false,
            max_train_samples: None,
            threads: None,
        }
    }
}

impl TrainConfig {
    /// The vetted preset for a zoo architecture: Adam for MLPs and LeNet-5 (MNIST-style
    /// data), SGD with momentum 0.9, weight decay 5·10⁻⁴, a cosine schedule and crop-and-flip
    /// augmentation for the residual networks (CIFAR-style data).
    pub fn default_for(arch: &Architecture) -> Self {
        match arch {
            Architecture::Mlp { .. } | Architecture::LeNet5 { .. } => Self::default(),
            Architecture::CifarResNet { .. }
            | Architecture::ResNet { .. }
            | Architecture::ResNet50
            | Architecture::SqueezeNet
            | Architecture::MobileNetV2 { .. }
            | Architecture::ShuffleNet { .. } => Self {
                epochs: 30,
                batch_size: 128,
                optimizer: Optimizer::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4, nesterov: false },
                lr_schedule: LrSchedule::Cosine,
                augment: Augment::CropFlip,
                ..Self::default()
            },
        }
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NnError::Train(m));
        let lr = self.optimizer.learning_rate();
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("learning rate {lr} must be finite and positive"));
        }
        let (wd, momentum) = match self.optimizer {
            Optimizer::Adam { weight_decay, .. } => (weight_decay, 0.0),
            Optimizer::Sgd { weight_decay, momentum, .. } => (weight_decay, momentum),
        };
        if !(wd.is_finite() && wd >= 0.0) {
            return bad(format!("weight decay {wd} must be finite and non-negative"));
        }
        if !(0.0..1.0).contains(&momentum) {
            return bad(format!("momentum {momentum} must be in [0, 1)"));
        }
        if self.threads == Some(0) {
            return bad("threads must be at least 1".into());
        }
        if self.max_train_samples == Some(0) {
            return bad("max_train_samples must be at least 1".into());
        }
        Ok(())
    }
}

/// Statistics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's minibatches (in training mode, augmented).
    pub train_loss: f32,
    /// Fraction of training samples classified correctly during the epoch.
    pub train_accuracy: f32,
    /// Accuracy on the held-out set after the epoch, when one was given.
    pub test_accuracy: Option<f32>,
    /// Learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Wall time of the epoch (without the test evaluation).
    pub seconds: f64,
}

/// What a training run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochReport>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Training samples per epoch.
    pub samples: usize,
    /// Wall time of the whole run.
    pub seconds_total: f64,
}

/// Trains `graph` on `data` and returns the trained graph (same nodes, new parameters and
/// batch-norm statistics) with a report.
pub fn train(graph: &Graph, data: &Dataset, config: &TrainConfig) -> Result<(Graph, TrainReport)> {
    run(graph, data, None, config)
}

/// [`train`], evaluating the accuracy on `test` after every epoch (logged and reported).
pub fn train_with_test(
    graph: &Graph,
    data: &Dataset,
    test: &Dataset,
    config: &TrainConfig,
) -> Result<(Graph, TrainReport)> {
    run(graph, data, Some(test), config)
}

/// Accuracy of `graph` on `data` (batched burn forward passes, in parallel on rayon's pool).
pub fn evaluate(graph: &Graph, data: &Dataset) -> Result<f32> {
    check_dataset(graph, data)?;
    if data.is_empty() {
        return Err(NnError::Train(format!("dataset {} is empty", data.name)));
    }
    let classes = graph.num_classes();
    let logits = predict_logits(graph, &data.features)?;
    let correct = logits
        .chunks(classes)
        .zip(&data.labels)
        .filter(|(row, label)| argmax_f32(row) == Some(usize::from(**label)))
        .count();
    Ok(correct as f32 / data.len() as f32)
}

/// The logits of every sample in `features` (samples of the graph's input shape, one after
/// the other), row-major `[samples, classes]`: batched burn forward passes, in parallel on
/// rayon's pool. Agrees with [`FloatExecutor::logits`](crate::FloatExecutor::logits) up to
/// float rounding.
pub fn predict_logits(graph: &Graph, features: &[f32]) -> Result<Vec<f32>> {
    let per = numel(graph.input_shape());
    if per == 0 || !features.len().is_multiple_of(per) {
        return Err(NnError::Shape(format!(
            "{} values are not a whole number of samples of shape {:?}",
            features.len(),
            graph.input_shape()
        )));
    }
    let device = Device::flex();
    let mirror = Mirror::from_graph(graph, &device)?;
    let target = graph.logits();
    let chunks: Vec<Result<Vec<f32>>> = features
        .par_chunks(EVAL_BATCH * per)
        .map_with(mirror, |mirror, chunk| {
            let x = Value::from_samples(chunk.to_vec(), mirror.plan.input_shape(), chunk.len() / per, &device)?;
            tensor_values(mirror.plan.forward(&mirror.model, x, target)?.into_matrix()?)
        })
        .collect();
    let mut out = Vec::with_capacity(features.len() / per * graph.num_classes());
    for chunk in chunks {
        out.extend(chunk?);
    }
    Ok(out)
}

fn check_dataset(graph: &Graph, data: &Dataset) -> Result<()> {
    if data.sample_shape != graph.input_shape() {
        return Err(NnError::Train(format!(
            "dataset {} has samples of shape {:?}, model '{}' takes {:?}",
            data.name,
            data.sample_shape,
            graph.name(),
            graph.input_shape()
        )));
    }
    if data.classes > graph.num_classes() {
        return Err(NnError::Train(format!(
            "dataset {} has {} classes, model '{}' has {} logits",
            data.name,
            data.classes,
            graph.name(),
            graph.num_classes()
        )));
    }
    Ok(())
}

fn run(graph: &Graph, data: &Dataset, test: Option<&Dataset>, config: &TrainConfig) -> Result<(Graph, TrainReport)> {
    config.validate()?;
    check_dataset(graph, data)?;
    if let Some(test) = test {
        check_dataset(graph, test)?;
    }
    if data.is_empty() {
        return Err(NnError::Train(format!("training set {} is empty", data.name)));
    }
    if graph.shape(graph.logits()).len() != 1 {
        return Err(NnError::Train(format!(
            "model '{}' has logits of shape {:?}; training needs a vector",
            graph.name(),
            graph.shape(graph.logits())
        )));
    }
    match config.threads {
        None => run_epochs(graph, data, test, config),
        Some(threads) => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| NnError::Train(format!("starting {threads} worker threads: {e}")))?
            .install(|| run_epochs(graph, data, test, config)),
    }
}

fn run_epochs(
    graph: &Graph,
    data: &Dataset,
    test: Option<&Dataset>,
    config: &TrainConfig,
) -> Result<(Graph, TrainReport)> {
    let started = Instant::now();
    let device = Device::flex().autodiff();
    let Mirror { mut model, plan } = Mirror::from_graph(graph, &device)?;
    let logits_id = graph.logits();
    let classes = graph.num_classes();
    let samples = config.max_train_samples.map_or(data.len(), |m| m.min(data.len()));
    let steps_per_epoch = samples.div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let base_lr = config.optimizer.learning_rate();
    let mut optimizer = config.optimizer.build();
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    let mut epochs = Vec::with_capacity(config.epochs);
    tracing::info!(
        model = graph.name(),
        dataset = data.name.as_str(),
        samples,
        epochs = config.epochs,
        batch = config.batch_size,
        "training"
    );
    for epoch in 1..=config.epochs {
        let epoch_start = Instant::now();
        let order = batch::epoch_order(samples, &mut rng);
        let bar = progress_bar(config.progress, steps_per_epoch, epoch, config.epochs);
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0.0f64, 0usize, 0usize, base_lr);
        for (b, indices) in order.chunks(config.batch_size).enumerate() {
            let step = (epoch - 1) * steps_per_epoch + b;
            lr = config.lr_schedule.rate(base_lr, step, total_steps);
            let (features, labels) = batch::assemble(data, indices, config.augment, &mut rng)?;
            let x = Value::from_samples(features, plan.input_shape(), indices.len(), &device)?;
            let logits = plan.forward(&model, x, logits_id)?.into_matrix()?;
            let targets: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [indices.len()]), &device);
            let loss = cross_entropy(logits.clone(), targets);
            let batch_loss = tensor_values(loss.clone().detach())?.first().copied().unwrap_or(f32::NAN);
            if !batch_loss.is_finite() {
                bar.abandon();
                return Err(NnError::Train(format!(
                    "loss diverged ({batch_loss}) at epoch {epoch}, step {b} (learning rate {lr:.3e})"
                )));
            }
            let rows = tensor_values(logits.detach())?;
            correct += rows
                .chunks(classes)
                .zip(&labels)
                .filter(|(row, label)| argmax_f32(row) == Some(usize::from(**label)))
                .count();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(lr, model, grads);
            loss_sum += f64::from(batch_loss) * indices.len() as f64;
            seen += indices.len();
            bar.inc(1);
            bar.set_message(format!("loss {:.4} acc {:.4}", loss_sum / seen as f64, correct as f64 / seen as f64));
        }
        bar.finish_and_clear();
        let seconds = epoch_start.elapsed().as_secs_f64();
        let test_accuracy = match test {
            Some(test) => {
                let current = Mirror { model: model.clone(), plan: plan.clone() }.to_graph(graph)?;
                Some(evaluate(&current, test)?)
            }
            None => None,
        };
        let report = EpochReport {
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f32 / seen.max(1) as f32,
            test_accuracy,
            learning_rate: lr,
            seconds,
        };
        tracing::info!(
            epoch,
            loss = report.train_loss,
            accuracy = report.train_accuracy,
            test_accuracy = ?report.test_accuracy,
            lr,
            seconds,
            "epoch done"
        );
        epochs.push(report);
    }
    let trained = Mirror { model, plan }.to_graph(graph)?;
    let report = TrainReport { epochs, steps: total_steps, samples, seconds_total: started.elapsed().as_secs_f64() };
    Ok((trained, report))
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class indices `[batch]`.
fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    activation::log_softmax(logits, 1).gather(1, targets.reshape([batch, 1])).mean().mul_scalar(-1.0)
}

fn progress_bar(show: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_runs_from_base_to_zero() {
        let s = LrSchedule::Cosine;
        assert!((s.rate(0.1, 0, 100) - 0.1).abs() < 1e-12);
        assert!((s.rate(0.1, 50, 100) - 0.05).abs() < 1e-12);
        assert!(s.rate(0.1, 99, 100) < 1e-3);
        assert_eq!(LrSchedule::Constant.rate(0.1, 99, 100), 0.1);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let ok = TrainConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            TrainConfig { batch_size: 0, ..ok.clone() },
            TrainConfig { optimizer: Optimizer::Adam { lr: 0.0, weight_decay: 0.0 }, ..ok.clone() },
            TrainConfig { optimizer: Optimizer::Adam { lr: f64::NAN, weight_decay: 0.0 }, ..ok.clone() },
            TrainConfig {
                optimizer: Optimizer::Sgd { lr: 0.1, momentum: 1.5, weight_decay: 0.0, nesterov: false },
                ..ok.clone()
            },
            TrainConfig { threads: Some(0), ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cross_entropy_matches_a_hand_computation() -> Result<()> {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 1.0, 2.0, 1.0, 1.0, 1.0], [2, 3]), &device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &device);
        let loss = tensor_values(cross_entropy(logits, targets))?[0];
        let lse = (1.0f32 + 1f32.exp() + 2f32.exp()).ln();
        let expected = ((lse - 2.0) + 3f32.ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
        Ok(())
    }
}
