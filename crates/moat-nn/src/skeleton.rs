//! The public architecture of a model: every node, shape and hyper-parameter, no weights.
//!
//! In secure inference the architecture is public (the client needs it to run its half of the
//! protocol: layer geometry, pooling windows, where the ReLUs are) while the weights are the
//! server's secret. A [`Skeleton`] is that public part, compact enough to send in a session
//! handshake (a few KB even for ResNet-50), and [`Skeleton::instantiate`] rebuilds a graph of
//! the same structure with all-zero weights, on which the client computes shapes and plans.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::graph::{BatchNorm, Conv2d, Dense, Graph, Node, Op, Pool, ValueId};
use crate::tensor::Tensor;

/// One node of a [`Skeleton`]: like [`Op`] with weights replaced by their shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SkeletonOp {
    /// [`Op::Add`].
    Add,
    /// [`Op::AvgPool`].
    AvgPool {
        /// The window.
        pool: Pool,
    },
    /// [`Op::BatchNorm`] over `channels`.
    BatchNorm {
        /// Channels.
        channels: usize,
    },
    /// [`Op::Clip`] (the bounds are public).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// [`Op::Concat`].
    Concat,
    /// [`Op::HardSigmoid`] (slope and offset are public).
    HardSigmoid {
        /// The slope.
        alpha: f32,
        /// The offset.
        beta: f32,
    },
    /// [`Op::HardSwish`].
    HardSwish,
    /// [`Op::Sigmoid`].
    Sigmoid,
    /// [`Op::Tanh`].
    Tanh,
    /// [`Op::Silu`].
    Silu,
    /// [`Op::Max`].
    Max,
    /// [`Op::PRelu`] (the slopes are public).
    PRelu {
        /// One slope per channel.
        slope: Vec<f32>,
    },
    /// [`Op::Gelu`].
    Gelu,
    /// [`Op::Elu`] (α is public).
    Elu {
        /// The scale of the negative side.
        alpha: f32,
    },
    /// [`Op::GeluTanh`].
    GeluTanh,
    /// [`Op::Selu`] (α and γ are public).
    Selu {
        /// The scale of the negative side before `gamma`.
        alpha: f32,
        /// The scale of the whole.
        gamma: f32,
    },
    /// [`Op::Softplus`].
    Softplus,
    /// [`Op::Softsign`].
    Softsign,
    /// [`Op::LeakyRelu`] (the slope is public).
    LeakyRelu {
        /// The slope below zero.
        alpha: f32,
    },
    /// [`Op::Conv2d`] with weights of `weight_shape`.
    Conv2d {
        /// `[O, C / group, kh, kw]`.
        weight_shape: [usize; 4],
        /// Stride.
        stride: [usize; 2],
        /// Padding `[top, left, bottom, right]`.
        padding: [usize; 4],
        /// Groups (absent: 1).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        group: usize,
    },
    /// [`Op::Dense`] with weights `[out, in]`.
    Dense {
        /// `[out, in]`.
        weight_shape: [usize; 2],
    },
    /// [`Op::Flatten`].
    Flatten,
    /// [`Op::GlobalAvgPool`].
    GlobalAvgPool,
    /// [`Op::MaxPool`].
    MaxPool {
        /// The window.
        pool: Pool,
    },
    /// [`Op::Relu`].
    Relu,
    /// [`Op::Reshape`].
    Reshape {
        /// Target per-sample shape.
        shape: Vec<usize>,
    },
    /// [`Op::Softmax`].
    Softmax,
    /// [`Op::Transpose`].
    Transpose {
        /// Per-sample axis permutation.
        perm: Vec<usize>,
    },
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// A node of a [`Skeleton`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkeletonNode {
    /// Node name.
    pub name: String,
    /// The op without weights.
    #[serde(flatten)]
    pub op: SkeletonOp,
    /// Values read (indices as in [`ValueId`]).
    pub inputs: Vec<usize>,
}

/// The public architecture of a [`Graph`]. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skeleton {
    /// Model name.
    pub name: String,
    /// Per-sample input shape.
    pub input_shape: Vec<usize>,
    /// Nodes in execution order.
    pub nodes: Vec<SkeletonNode>,
    /// The output value.
    pub output: usize,
}

impl Graph {
    /// The public architecture of this graph.
    pub fn skeleton(&self) -> Skeleton {
        let nodes = self
            .nodes()
            .iter()
            .map(|node| {
                let op = match &node.op {
                    Op::Add => SkeletonOp::Add,
                    Op::AvgPool(pool) => SkeletonOp::AvgPool { pool: *pool },
                    Op::BatchNorm(bn) => SkeletonOp::BatchNorm { channels: bn.channels() },
                    Op::Concat => SkeletonOp::Concat,
                    Op::Conv2d(c) => {
                        let [kh, kw] = c.kernel();
                        SkeletonOp::Conv2d {
                            weight_shape: [c.out_channels(), c.group_in_channels(), kh, kw],
                            stride: c.stride,
                            padding: c.padding,
                            group: c.group,
                        }
                    }
                    Op::Dense(d) => {
                        SkeletonOp::Dense { weight_shape: [d.bias.len(), d.weight.len() / d.bias.len().max(1)] }
                    }
                    Op::Flatten => SkeletonOp::Flatten,
                    Op::GlobalAvgPool => SkeletonOp::GlobalAvgPool,
                    Op::MaxPool(pool) => SkeletonOp::MaxPool { pool: *pool },
                    Op::Relu => SkeletonOp::Relu,
                    Op::Clip { min, max } => SkeletonOp::Clip { min: *min, max: *max },
                    Op::LeakyRelu { alpha } => SkeletonOp::LeakyRelu { alpha: *alpha },
                    Op::HardSigmoid { alpha, beta } => SkeletonOp::HardSigmoid { alpha: *alpha, beta: *beta },
                    Op::HardSwish => SkeletonOp::HardSwish,
                    Op::Sigmoid => SkeletonOp::Sigmoid,
                    Op::Tanh => SkeletonOp::Tanh,
                    Op::Silu => SkeletonOp::Silu,
                    Op::Max => SkeletonOp::Max,
                    Op::PRelu { slope } => SkeletonOp::PRelu { slope: slope.clone() },
                    Op::Gelu => SkeletonOp::Gelu,
                    Op::Elu { alpha } => SkeletonOp::Elu { alpha: *alpha },
                    Op::GeluTanh => SkeletonOp::GeluTanh,
                    Op::Selu { alpha, gamma } => SkeletonOp::Selu { alpha: *alpha, gamma: *gamma },
                    Op::Softplus => SkeletonOp::Softplus,
                    Op::Softsign => SkeletonOp::Softsign,
                    Op::Transpose(perm) => SkeletonOp::Transpose { perm: perm.clone() },
                    Op::Reshape(shape) => SkeletonOp::Reshape { shape: shape.clone() },
                    Op::Softmax => SkeletonOp::Softmax,
                };
                SkeletonNode { name: node.name.clone(), op, inputs: node.inputs.iter().map(|v| v.0).collect() }
            })
            .collect();
        Skeleton {
            name: self.name().to_string(),
            input_shape: self.input_shape().to_vec(),
            nodes,
            output: self.output().0,
        }
    }
}

impl Skeleton {
    /// The most parameters (and per-value elements) a skeleton may ask its receiver to
    /// allocate: 2^30, forty times ResNet-50. A skeleton comes from the other party of a
    /// session, so its sizes are checked before anything is allocated.
    pub const MAX_ELEMENTS: usize = 1 << 30;

    /// A shape-checked graph of this architecture with all weights zero (batch norms are the
    /// identity). Fails, naming the node, when the skeleton is inconsistent or asks for more
    /// than [`Self::MAX_ELEMENTS`] parameters or elements in one value.
    pub fn instantiate(&self) -> Result<Graph> {
        let too_big = |what: &str| NnError::Graph(format!("the skeleton asks for more than 2^30 {what}"));
        let product = |dims: &[usize]| {
            dims.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).filter(|&n| n <= Self::MAX_ELEMENTS)
        };
        product(&self.input_shape).ok_or_else(|| too_big("input elements"))?;
        let mut parameters = 0usize;
        for n in &self.nodes {
            let count = match &n.op {
                SkeletonOp::Conv2d { weight_shape, .. } => product(weight_shape),
                SkeletonOp::Dense { weight_shape } => product(weight_shape),
                SkeletonOp::BatchNorm { channels } => channels.checked_mul(4),
                SkeletonOp::Reshape { shape } => product(shape).map(|_| 0),
                _ => Some(0),
            };
            parameters = count
                .and_then(|c| parameters.checked_add(c))
                .filter(|&p| p <= Self::MAX_ELEMENTS)
                .ok_or_else(|| too_big(&format!("parameters (at node '{}')", n.name)))?;
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let op = match &n.op {
                    SkeletonOp::Add => Op::Add,
                    SkeletonOp::AvgPool { pool } => Op::AvgPool(*pool),
                    SkeletonOp::BatchNorm { channels } => Op::BatchNorm(BatchNorm {
                        gamma: vec![1.0; *channels],
                        beta: vec![0.0; *channels],
                        mean: vec![0.0; *channels],
                        var: vec![1.0; *channels],
                        eps: 0.0,
                    }),
                    SkeletonOp::Concat => Op::Concat,
                    SkeletonOp::Clip { min, max } => Op::Clip { min: *min, max: *max },
                    SkeletonOp::LeakyRelu { alpha } => Op::LeakyRelu { alpha: *alpha },
                    SkeletonOp::HardSigmoid { alpha, beta } => Op::HardSigmoid { alpha: *alpha, beta: *beta },
                    SkeletonOp::HardSwish => Op::HardSwish,
                    SkeletonOp::Sigmoid => Op::Sigmoid,
                    SkeletonOp::Tanh => Op::Tanh,
                    SkeletonOp::Silu => Op::Silu,
                    SkeletonOp::Max => Op::Max,
                    SkeletonOp::PRelu { slope } => Op::PRelu { slope: slope.clone() },
                    SkeletonOp::Gelu => Op::Gelu,
                    SkeletonOp::Elu { alpha } => Op::Elu { alpha: *alpha },
                    SkeletonOp::GeluTanh => Op::GeluTanh,
                    SkeletonOp::Selu { alpha, gamma } => Op::Selu { alpha: *alpha, gamma: *gamma },
                    SkeletonOp::Softplus => Op::Softplus,
                    SkeletonOp::Softsign => Op::Softsign,
                    SkeletonOp::Conv2d { weight_shape, stride, padding, group } => Op::Conv2d(Conv2d {
                        weight: Tensor::zeros(weight_shape.to_vec()),
                        bias: vec![0.0; weight_shape[0]],
                        stride: *stride,
                        padding: *padding,
                        group: *group,
                    }),
                    SkeletonOp::Dense { weight_shape } => Op::Dense(Dense {
                        weight: Tensor::zeros(weight_shape.to_vec()),
                        bias: vec![0.0; weight_shape[0]],
                    }),
                    SkeletonOp::Flatten => Op::Flatten,
                    SkeletonOp::GlobalAvgPool => Op::GlobalAvgPool,
                    SkeletonOp::MaxPool { pool } => Op::MaxPool(*pool),
                    SkeletonOp::Relu => Op::Relu,
                    SkeletonOp::Reshape { shape } => Op::Reshape(shape.clone()),
                    SkeletonOp::Softmax => Op::Softmax,
                    SkeletonOp::Transpose { perm } => Op::Transpose(perm.clone()),
                };
                Node { name: n.name.clone(), op, inputs: n.inputs.iter().map(|&v| ValueId(v)).collect() }
            })
            .collect();
        let graph = Graph::new(self.name.clone(), self.input_shape.clone(), nodes, ValueId(self.output))?;
        for v in 0..=graph.nodes().len() {
            product(graph.shape(ValueId(v))).ok_or_else(|| too_big("elements in one value"))?;
        }
        Ok(graph)
    }
}

#[cfg(test)]
mod tests {
    use crate::zoo::build;

    #[test]
    fn a_skeleton_asking_for_huge_allocations_is_refused_before_allocating() -> crate::Result<()> {
        let mut skeleton = build(&"mlp:8".parse()?, &[5], 10, 1)?.skeleton();
        if let Some(node) = skeleton.nodes.iter_mut().find(|n| matches!(n.op, super::SkeletonOp::Dense { .. })) {
            node.op = super::SkeletonOp::Dense { weight_shape: [usize::MAX / 2, 3] };
        }
        let error = skeleton.instantiate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("more than 2^30 parameters"), "{error}");
        let mut wide = build(&"mlp:8".parse()?, &[5], 10, 1)?.skeleton();
        wide.input_shape = vec![1 << 20, 1 << 20];
        assert!(wide.instantiate().is_err());
        Ok(())
    }

    #[test]
    fn skeleton_keeps_the_structure_and_drops_the_weights() -> crate::Result<()> {
        for (arch, shape) in [("resnet20", vec![3, 32, 32]), ("squeezenet", vec![3, 224, 224]), ("mlp:8", vec![5])] {
            let graph = build(&arch.parse()?, &shape, 10, 1)?;
            let skeleton = graph.skeleton();
            let json = serde_json::to_string(&skeleton).map_err(|e| crate::NnError::Graph(e.to_string()))?;
            assert!(json.len() < 64 * 1024, "{arch}: {} bytes", json.len());
            let back: super::Skeleton =
                serde_json::from_str(&json).map_err(|e| crate::NnError::Graph(e.to_string()))?;
            assert_eq!(back, skeleton);
            let zero = back.instantiate()?;
            assert_eq!(zero.skeleton(), skeleton);
            assert_eq!(zero.parameter_count(), graph.parameter_count());
            for i in 0..=graph.nodes().len() {
                assert_eq!(zero.shape(crate::ValueId(i)), graph.shape(crate::ValueId(i)));
            }
        }
        Ok(())
    }

    #[test]
    fn inconsistent_skeleton_is_an_error() -> crate::Result<()> {
        let mut skeleton = build(&"lenet5".parse()?, &[1, 28, 28], 10, 1)?.skeleton();
        skeleton.input_shape = vec![3, 28, 28];
        let e = skeleton.instantiate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("conv1"), "{e}");
        Ok(())
    }
}
