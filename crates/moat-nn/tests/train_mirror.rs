//! The burn mirror of a graph is exact: copying Graph → burn → Graph changes nothing, and the
//! batched burn forward pass (inference mode) equals the float executor.

#![cfg(feature = "train")]

use moat_nn::train::{self, TrainConfig};
use moat_nn::zoo::{self, GraphBuilder};
use moat_nn::{BatchNorm, Conv2d, FloatExecutor, Graph, Node, Op, Pool, Result, Tensor, ValueId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The graph with every batch norm given random γ, β, μ, σ² (zoo graphs start at identity
/// statistics, which would hide a wrong batch-norm mirror).
fn randomise_batch_norms(graph: &Graph, seed: u64) -> Result<Graph> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let nodes: Vec<Node> = graph
        .nodes()
        .iter()
        .map(|node| {
            let mut node = node.clone();
            if let Op::BatchNorm(bn) = &mut node.op {
                let c = bn.channels();
                let mut draw = |lo: f32, hi: f32| (0..c).map(|_| rng.random_range(lo..hi)).collect::<Vec<f32>>();
                *bn = BatchNorm {
                    gamma: draw(0.5, 1.5),
                    beta: draw(-0.5, 0.5),
                    mean: draw(-0.3, 0.3),
                    var: draw(0.5, 2.0),
                    eps: 1e-3,
                };
            }
            node
        })
        .collect();
    Graph::new(graph.name(), graph.input_shape().to_vec(), nodes, graph.output())
}

fn inputs(graph: &Graph, count: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let n: usize = graph.input_shape().iter().product();
    (0..count * n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// burn's batched logits agree with the float executor, sample by sample.
fn assert_mirror_exact(graph: &Graph, samples: usize) -> Result<()> {
    let features = inputs(graph, samples, 7);
    let n: usize = graph.input_shape().iter().product();
    let classes = graph.num_classes();
    let burn = train::predict_logits(graph, &features)?;
    assert_eq!(burn.len(), samples * classes);
    let mut max_diff = 0.0f32;
    for s in 0..samples {
        let reference = FloatExecutor::logits(graph, &features[s * n..(s + 1) * n])?;
        for (a, b) in reference.iter().zip(&burn[s * classes..(s + 1) * classes]) {
            let scale = 1.0f32.max(a.abs());
            max_diff = max_diff.max((a - b).abs() / scale);
        }
    }
    assert!(max_diff < 1e-4, "{}: burn and FloatExecutor differ by {max_diff}", graph.name());
    Ok(())
}

#[test]
fn mirror_forward_equals_float_executor_on_zoo_models() -> Result<()> {
    let lenet = zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 1)?;
    assert_mirror_exact(&lenet, 5)?;
    let mlp = zoo::build(&"mlp:64,32".parse()?, &[1, 28, 28], 10, 2)?;
    assert_mirror_exact(&mlp, 5)?;
    let resnet = randomise_batch_norms(&zoo::build(&"resnet20:x0.25".parse()?, &[3, 32, 32], 10, 3)?, 4)?;
    assert_mirror_exact(&resnet, 4)?;
    Ok(())
}

#[test]
fn mirror_forward_equals_float_executor_on_unusual_ops() -> Result<()> {
    // Asymmetric conv padding, strided conv, padded average and max pools, a reshape to
    // [C, H, W] and back, batch norm on a vector, a residual add, and a softmax head.
    let mut b = GraphBuilder::new(&[2, 9, 9], 11);
    let x = ValueId::INPUT;
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut weights = |len: usize| (0..len).map(|_| rng.random_range(-0.5f32..0.5)).collect::<Vec<f32>>();
    let conv = Conv2d {
        weight: Tensor::new(vec![4, 2, 3, 2], weights(48))?,
        bias: weights(4),
        stride: [1, 2],
        padding: [1, 0, 2, 1],
        group: 1,
    };
    let c1 = b.push("asym", Op::Conv2d(conv), vec![x])?; // [4, 10, 5]
    let r1 = b.relu(c1)?;
    let avg = b.push("avg", Op::AvgPool(Pool { kernel: [3, 3], stride: [2, 2], padding: [1, 1, 1, 0] }), vec![r1])?;
    let max = b.push("max", Op::MaxPool(Pool { kernel: [2, 2], stride: [1, 1], padding: [0, 1, 1, 0] }), vec![avg])?;
    // Symmetric padding takes the backends' native padded pooling path.
    let same = Pool { kernel: [3, 3], stride: [1, 1], padding: [1; 4] };
    let max = b.push("max_same", Op::MaxPool(same), vec![max])?;
    let max = b.push("avg_same", Op::AvgPool(same), vec![max])?;
    let conv2 = Conv2d {
        weight: Tensor::new(vec![4, 4, 1, 1], weights(16))?,
        bias: weights(4),
        stride: [1, 1],
        padding: [0; 4],
        group: 1,
    };
    let c2 = b.push("pointwise", Op::Conv2d(conv2), vec![max])?;
    let sum = b.push("residual", Op::Add, vec![c2, max])?;
    let flat = b.flatten(sum)?;
    let len: usize = b.shape(flat)?[0];
    let back = b.push("unflatten", Op::Reshape(vec![4, len / 4, 1]), vec![flat])?;
    let gap = b.global_avg_pool(back)?;
    let bn =
        BatchNorm { gamma: weights(4), beta: weights(4), mean: weights(4), var: vec![0.7, 1.1, 1.9, 0.4], eps: 1e-5 };
    let normed = b.push("bn_vec", Op::BatchNorm(bn), vec![gap])?;
    let logits = b.dense("fc", normed, 3)?;
    let out = b.push("softmax", Op::Softmax, vec![logits])?;
    let graph = b.finish("unusual", out)?;
    assert_eq!(graph.logits(), logits);
    assert_mirror_exact(&graph, 6)?;
    Ok(())
}

#[test]
fn zero_epochs_round_trip_the_graph_exactly() -> Result<()> {
    let resnet = randomise_batch_norms(&zoo::build(&"resnet20:x0.25".parse()?, &[3, 32, 32], 10, 3)?, 9)?;
    let data = moat_nn::data::Dataset::new("tiny", vec![3, 32, 32], 10, inputs(&resnet, 2, 1), vec![0, 1])?;
    let config = TrainConfig { epochs: 0, ..TrainConfig::default() };
    let (copy, report) = train::train(&resnet, &data, &config)?;
    assert_eq!(copy, resnet);
    assert!(report.epochs.is_empty());
    Ok(())
}
