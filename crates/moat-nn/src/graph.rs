//! The layer graph: moat's single model representation.
//!
//! A [`Graph`] is a DAG of [`Node`]s in topological order over *per-sample* shapes (no batch
//! dimension: images are `[C, H, W]`, feature vectors `[N]`). Value `0` is the graph input; node
//! `i` produces value `i + 1`, so a node can only read values produced before it and the order of
//! `nodes` is always a valid execution order. Residual networks are graphs whose `Add` nodes read
//! two earlier values.
//!
//! Every graph is shape-checked when it is built ([`Graph::new`]); errors name the node.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::tensor::{Tensor, numel};

/// Identifies a value (an edge) of the graph: `ValueId(0)` is the input, `ValueId(i + 1)` the
/// output of node `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub usize);

impl ValueId {
    /// The graph input.
    pub const INPUT: ValueId = ValueId(0);

    /// The value produced by node `index`.
    pub fn of_node(index: usize) -> Self {
        ValueId(index + 1)
    }

    /// The node producing this value, `None` for the graph input.
    pub fn node(self) -> Option<usize> {
        self.0.checked_sub(1)
    }
}

/// 2-D convolution (dilation 1), NCHW / OIHW, optionally grouped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    /// Weights `[out_channels, in_channels / group, kh, kw]`.
    pub weight: Tensor<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Groups (ONNX `group`): input and output channels are cut into `group` equal parts and
    /// output part `g` reads only input part `g`. 1: an ordinary convolution; `group` equal to
    /// the input and output channels: a depthwise convolution.
    #[serde(default = "one_group")]
    pub group: usize,
}

fn one_group() -> usize {
    1
}

impl Conv2d {
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
    /// Input channels (of all groups together).
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[1] * self.group
    }
    /// Input channels each output channel reads (`in_channels / group`).
    pub fn group_in_channels(&self) -> usize {
        self.weight.shape()[1]
    }
    /// Whether each output channel reads exactly its own input channel (`group = C = O`).
    pub fn is_depthwise(&self) -> bool {
        self.group > 1 && self.group == self.out_channels() && self.weight.shape()[1] == 1
    }
    /// Kernel `[kh, kw]`.
    pub fn kernel(&self) -> [usize; 2] {
        [self.weight.shape()[2], self.weight.shape()[3]]
    }
}

/// Fully connected layer `y = W x + b` on a 1-D input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    /// Weights `[out, in]`.
    pub weight: Tensor<f32>,
    /// One bias per output.
    pub bias: Vec<f32>,
}

/// Inference-mode batch normalisation over axis 0 (channels) of the per-sample value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    /// Scale γ.
    pub gamma: Vec<f32>,
    /// Shift β.
    pub beta: Vec<f32>,
    /// Running mean.
    pub mean: Vec<f32>,
    /// Running variance.
    pub var: Vec<f32>,
    /// ε added to the variance.
    pub eps: f32,
}

impl BatchNorm {
    /// The equivalent per-channel affine map `y = s·x + t`.
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self.gamma.iter().zip(&self.var).map(|(g, v)| g / (v + self.eps).sqrt()).collect();
        let shift = self.beta.iter().zip(&self.mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        (scale, shift)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }
}

/// Window of a max or average pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`. Max pooling ignores padded positions; average
    /// pooling counts them as zeros (ONNX `count_include_pad = 1`), so the divisor is always
    /// `kh·kw`.
    pub padding: [usize; 4],
}

/// A graph operation. Shapes are per sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Element-wise sum of two values of the same shape (residual connection).
    Add,
    /// Average pooling over `[C, H, W]`.
    AvgPool(Pool),
    /// Batch normalisation (folded into the preceding linear layer by [`Graph::fold_batch_norms`]).
    BatchNorm(BatchNorm),
    /// `min(max(x, min), max)` element-wise (ONNX `Clip`; ReLU6 is `Clip { min: 0, max: 6 }`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound (above `min`).
        max: f32,
    },
    /// Concatenation of two or more values along axis 0 (channels); the other axes must agree.
    Concat,
    /// 2-D convolution over `[C, H, W]`.
    Conv2d(Conv2d),
    /// Fully connected layer over `[N]`.
    Dense(Dense),
    /// `x` where `x > 0`, `alpha · (e^x − 1)` elsewhere (ONNX `Elu`). Exact in float; in fixed
    /// point and two-party `ReLU(x)` plus a spline ([`crate::approx::ELU`], measured maximum
    /// error 2.2·10⁻³ at α = 1, scaling with α).
    Elu {
        /// The scale of the negative side (`|alpha| ≤` [`crate::approx::ELU_MAX_ALPHA`]).
        alpha: f32,
    },
    /// Flattens the value to one dimension.
    Flatten,
    /// `x · Φ(x)` (ONNX `Gelu` with `approximate = "none"`, or its `Erf` pattern). Exact in
    /// float; in fixed point and two-party `ReLU(x)` plus a spline ([`crate::approx::GELU`],
    /// measured maximum error 1.3·10⁻³).
    Gelu,
    /// `x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) / 2` (ONNX `Gelu` with `approximate =
    /// "tanh"`). Exact in float; in fixed point and two-party `ReLU(x)` plus a spline
    /// ([`crate::approx::GELU_TANH`], its measured maximum error there).
    GeluTanh,
    /// Mean over the spatial dimensions: `[C, H, W] → [C]`.
    GlobalAvgPool,
    /// `max(0, min(1, alpha · x + beta))` (ONNX `HardSigmoid`). Exact in float; in fixed point
    /// and two-party up to rounding ([`crate::approx`] states the measured error).
    HardSigmoid {
        /// The slope.
        alpha: f32,
        /// The offset.
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))` (ONNX `HardSwish`). Exact in float; in fixed point and
    /// two-party up to rounding ([`crate::approx`] states the measured error).
    HardSwish,
    /// `x` where `x ≥ 0`, `alpha · x` elsewhere (ONNX `LeakyRelu`, `PRelu` with one slope).
    LeakyRelu {
        /// The slope below zero.
        alpha: f32,
    },
    /// Element-wise maximum of two or more values of the same shape (ONNX `Max`): exact in every
    /// execution, `max(a, b) = b + ReLU(a − b)` folded over the inputs in order.
    Max,
    /// Max pooling over `[C, H, W]`.
    MaxPool(Pool),
    /// `x` where `x ≥ 0`, `slope[c] · x` elsewhere, one slope per channel (axis 0 of the
    /// per-sample value; ONNX `PRelu` with a `[C, 1, 1]` or `[C]` slope). Exact by comparison in
    /// every execution, as [`Op::LeakyRelu`]; the slopes are public in two-party inference (part
    /// of the architecture the client receives, as a LeakyRelu's α).
    PRelu {
        /// One slope per channel.
        slope: Vec<f32>,
    },
    /// `max(x, 0)`.
    Relu,
    /// Static reshape to the given per-sample shape.
    Reshape(Vec<usize>),
    /// `gamma · x` where `x > 0`, `gamma · alpha · (e^x − 1)` elsewhere (ONNX `Selu`):
    /// `gamma · Elu(alpha)`. Exact in float; in fixed point and two-party [`Op::Elu`]'s spline
    /// scaled by `gamma · alpha` plus the ReLU times `gamma` ([`crate::approx::selu`], its
    /// measured maximum error there).
    Selu {
        /// The scale of the negative side before `gamma` (`|gamma · alpha| ≤`
        /// [`crate::approx::ELU_MAX_ALPHA`]).
        alpha: f32,
        /// The scale of the whole (`0 < gamma ≤` [`crate::approx::SELU_MAX_GAMMA`]).
        gamma: f32,
    },
    /// `x · σ(x)` (ONNX `Swish` with α = 1, or `Mul(x, Sigmoid(x))`). Exact in float; in fixed
    /// point and two-party `ReLU(x)` plus a spline ([`crate::approx::SILU`], measured maximum
    /// error 1.9·10⁻³).
    Silu,
    /// `1 / (1 + e^−x)` (ONNX `Sigmoid`). Exact in float; in fixed point and two-party an
    /// odd linear spline ([`crate::approx::SIGMOID`], measured maximum error 9.3·10⁻⁴).
    Sigmoid,
    /// Softmax over a 1-D value (a head: the logits are its input).
    Softmax,
    /// `x / (1 + |x|)` (ONNX `Softsign`). Exact in float; in fixed point and two-party an odd
    /// linear spline ([`crate::approx::SOFTSIGN`], its measured maximum error there).
    Softsign,
    /// `ln(1 + e^x)` (ONNX `Softplus`). Exact in float; in fixed point and two-party `ReLU(x)`
    /// plus a spline of `ln(1 + e^−|x|)` ([`crate::approx::SOFTPLUS`], its measured maximum
    /// error there).
    Softplus,
    /// `tanh(x)` (ONNX `Tanh`). Exact in float; in fixed point and two-party an odd linear
    /// spline ([`crate::approx::TANH`], measured maximum error 1.8·10⁻³).
    Tanh,
    /// A permutation of the per-sample axes: output axis `i` is input axis `perm[i]` (the
    /// elements move; NHWC↔NCHW, channel shuffle).
    Transpose(Vec<usize>),
}

/// The kind of an [`Op`] without its parameters: what tamper sites, timings and errors name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpKind {
    /// [`Op::Add`].
    Add,
    /// [`Op::AvgPool`].
    AvgPool,
    /// [`Op::BatchNorm`].
    BatchNorm,
    /// [`Op::Clip`].
    Clip,
    /// [`Op::Concat`].
    Concat,
    /// [`Op::Conv2d`].
    Conv2d,
    /// [`Op::Dense`].
    Dense,
    /// [`Op::Elu`].
    Elu,
    /// [`Op::Flatten`].
    Flatten,
    /// [`Op::Gelu`].
    Gelu,
    /// [`Op::GeluTanh`].
    GeluTanh,
    /// [`Op::GlobalAvgPool`].
    GlobalAvgPool,
    /// [`Op::HardSigmoid`].
    HardSigmoid,
    /// [`Op::HardSwish`].
    HardSwish,
    /// [`Op::LeakyRelu`].
    LeakyRelu,
    /// [`Op::Max`].
    Max,
    /// [`Op::MaxPool`].
    MaxPool,
    /// [`Op::PRelu`].
    PRelu,
    /// [`Op::Relu`].
    Relu,
    /// [`Op::Reshape`].
    Reshape,
    /// [`Op::Selu`].
    Selu,
    /// [`Op::Silu`].
    Silu,
    /// [`Op::Sigmoid`].
    Sigmoid,
    /// [`Op::Softmax`].
    Softmax,
    /// [`Op::Softplus`].
    Softplus,
    /// [`Op::Softsign`].
    Softsign,
    /// [`Op::Tanh`].
    Tanh,
    /// [`Op::Transpose`].
    Transpose,
    /// Not an op: the graph input (the site of logits that are the input itself).
    Input,
}

impl OpKind {
    /// A short, stable name for tables and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Add => "Add",
            OpKind::AvgPool => "AvgPool",
            OpKind::BatchNorm => "BatchNorm",
            OpKind::Clip => "Clip",
            OpKind::Concat => "Concat",
            OpKind::Conv2d => "Conv2d",
            OpKind::Dense => "Dense",
            OpKind::Elu => "Elu",
            OpKind::Flatten => "Flatten",
            OpKind::Gelu => "Gelu",
            OpKind::GeluTanh => "GeluTanh",
            OpKind::GlobalAvgPool => "GlobalAvgPool",
            OpKind::HardSigmoid => "HardSigmoid",
            OpKind::HardSwish => "HardSwish",
            OpKind::LeakyRelu => "LeakyRelu",
            OpKind::Max => "Max",
            OpKind::MaxPool => "MaxPool",
            OpKind::PRelu => "PRelu",
            OpKind::Relu => "Relu",
            OpKind::Reshape => "Reshape",
            OpKind::Selu => "Selu",
            OpKind::Silu => "Silu",
            OpKind::Sigmoid => "Sigmoid",
            OpKind::Softmax => "Softmax",
            OpKind::Softplus => "Softplus",
            OpKind::Softsign => "Softsign",
            OpKind::Tanh => "Tanh",
            OpKind::Transpose => "Transpose",
            OpKind::Input => "Input",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Op {
    /// The op's kind.
    pub fn op_kind(&self) -> OpKind {
        match self {
            Op::Add => OpKind::Add,
            Op::AvgPool(_) => OpKind::AvgPool,
            Op::BatchNorm(_) => OpKind::BatchNorm,
            Op::Clip { .. } => OpKind::Clip,
            Op::Concat => OpKind::Concat,
            Op::Conv2d(_) => OpKind::Conv2d,
            Op::Dense(_) => OpKind::Dense,
            Op::Elu { .. } => OpKind::Elu,
            Op::Flatten => OpKind::Flatten,
            Op::Gelu => OpKind::Gelu,
            Op::GeluTanh => OpKind::GeluTanh,
            Op::GlobalAvgPool => OpKind::GlobalAvgPool,
            Op::HardSigmoid { .. } => OpKind::HardSigmoid,
            Op::HardSwish => OpKind::HardSwish,
            Op::LeakyRelu { .. } => OpKind::LeakyRelu,
            Op::Max => OpKind::Max,
            Op::MaxPool(_) => OpKind::MaxPool,
            Op::PRelu { .. } => OpKind::PRelu,
            Op::Relu => OpKind::Relu,
            Op::Reshape(_) => OpKind::Reshape,
            Op::Selu { .. } => OpKind::Selu,
            Op::Silu => OpKind::Silu,
            Op::Sigmoid => OpKind::Sigmoid,
            Op::Softmax => OpKind::Softmax,
            Op::Softplus => OpKind::Softplus,
            Op::Softsign => OpKind::Softsign,
            Op::Tanh => OpKind::Tanh,
            Op::Transpose(_) => OpKind::Transpose,
        }
    }

    /// A short, stable name for tables and errors ([`OpKind::as_str`]).
    pub fn kind(&self) -> &'static str {
        self.op_kind().as_str()
    }

    /// Whether the op accepts `n` inputs.
    pub fn accepts_inputs(&self, n: usize) -> bool {
        match self {
            Op::Add => n == 2,
            Op::Max => n >= 2,
            Op::Concat => n >= 2,
            _ => n == 1,
        }
    }

    /// Trainable parameters (weights and biases; batch-norm counts γ and β).
    pub fn parameter_count(&self) -> usize {
        match self {
            Op::Conv2d(c) => c.weight.len() + c.bias.len(),
            Op::Dense(d) => d.weight.len() + d.bias.len(),
            Op::BatchNorm(b) => 2 * b.channels(),
            _ => 0,
        }
    }

    /// True for ops that are linear in their (single) input up to a public bias: the ones the
    /// secure protocol evaluates homomorphically.
    pub fn is_linear(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::Dense(_) | Op::BatchNorm(_) | Op::AvgPool(_) | Op::GlobalAvgPool)
    }
}

/// One node: an op, the values it reads, and a name (unique within the graph).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name (kept from ONNX on import).
    pub name: String,
    /// The operation.
    pub op: Op,
    /// The values read, in order.
    pub inputs: Vec<ValueId>,
}

/// Largest magnitude of a parameter (weight, bias, batch-norm statistic): far above any trained
/// model's, and far below where a layer's sums stop meaning anything in `f32` or fit no
/// fixed-point encoding.
pub const MAX_PARAMETER: f32 = 1e7;

/// Largest number of values (all intermediate tensors of one sample together) a graph may
/// declare: 2^28 (1 GiB of `f32`), about 25× ResNet-50's at 224×224.
pub const MAX_VALUES: usize = 1 << 28;

/// Refuses a non-finite parameter or one beyond [`MAX_PARAMETER`], naming the node, the tensor
/// and the element.
fn check_parameters(node: &Node) -> Result<()> {
    let tensors: Vec<(&str, &[f32])> = match &node.op {
        Op::Conv2d(c) => vec![("weight", c.weight.data()), ("bias", &c.bias)],
        Op::Dense(d) => vec![("weight", d.weight.data()), ("bias", &d.bias)],
        Op::Clip { min, max } => vec![("min", std::slice::from_ref(min)), ("max", std::slice::from_ref(max))],
        Op::LeakyRelu { alpha } => vec![("alpha", std::slice::from_ref(alpha))],
        Op::PRelu { slope } => vec![("slope", slope.as_slice())],
        Op::Elu { alpha } => {
            if alpha.abs() > crate::approx::ELU_MAX_ALPHA {
                return Err(NnError::node(
                    &node.name,
                    node.op.kind(),
                    format!(
                        "alpha = {alpha}: moat computes Elu with |alpha| ≤ {} (its fixed-point spline must fit the ring)",
                        crate::approx::ELU_MAX_ALPHA
                    ),
                ));
            }
            vec![("alpha", std::slice::from_ref(alpha))]
        }
        Op::Selu { alpha, gamma } => {
            if let Some(why) = crate::approx::selu_unsupported(*alpha, *gamma) {
                return Err(NnError::node(&node.name, node.op.kind(), why));
            }
            vec![("alpha", std::slice::from_ref(alpha)), ("gamma", std::slice::from_ref(gamma))]
        }
        Op::HardSigmoid { alpha, beta } => {
            vec![("alpha", std::slice::from_ref(alpha)), ("beta", std::slice::from_ref(beta))]
        }
        Op::BatchNorm(b) => {
            vec![
                ("scale", &b.gamma),
                ("shift", &b.beta),
                ("mean", &b.mean),
                ("variance", &b.var),
                ("epsilon", std::slice::from_ref(&b.eps)),
            ]
        }
        _ => Vec::new(),
    };
    for (tensor, values) in tensors {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite() || v.abs() > MAX_PARAMETER) {
            return Err(NnError::node(
                &node.name,
                node.op.kind(),
                format!(
                    "{tensor} element {i} is {v}: parameters must be finite and at most {MAX_PARAMETER:e} in magnitude"
                ),
            ));
        }
    }
    Ok(())
}

/// A shape-checked model graph. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    name: String,
    input_shape: Vec<usize>,
    nodes: Vec<Node>,
    output: ValueId,
    shapes: Vec<Vec<usize>>,
}

impl Graph {
    /// Builds and shape-checks a graph.
    ///
    /// `input_shape` is the per-sample input shape; `output` the value the model returns.
    pub fn new(name: impl Into<String>, input_shape: Vec<usize>, nodes: Vec<Node>, output: ValueId) -> Result<Self> {
        if input_shape.is_empty() || input_shape.contains(&0) {
            return Err(NnError::Graph(format!("input shape {input_shape:?} has no elements")));
        }
        let shapes = infer_shapes(&input_shape, &nodes)?;
        if output.0 >= shapes.len() {
            return Err(NnError::Graph(format!("output value {} does not exist ({} values)", output.0, shapes.len())));
        }
        let mut seen = std::collections::HashSet::new();
        for node in &nodes {
            if !seen.insert(node.name.as_str()) {
                return Err(NnError::node(&node.name, node.op.kind(), "duplicate node name"));
            }
            check_parameters(node)?;
        }
        let total = shapes.iter().try_fold(0usize, |sum, s| sum.checked_add(numel(s)));
        if total.is_none_or(|t| t > MAX_VALUES) {
            return Err(NnError::Graph(format!(
                "the declared shapes add up to more than {MAX_VALUES} values per sample (input {input_shape:?}); \
                 moat refuses models this large"
            )));
        }
        Ok(Self { name: name.into(), input_shape, nodes, output, shapes })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Nodes in execution order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The value the model returns.
    pub fn output(&self) -> ValueId {
        self.output
    }

    /// Per-sample shape of a value.
    pub fn shape(&self, value: ValueId) -> &[usize] {
        &self.shapes[value.0]
    }

    /// Shape of the model output.
    pub fn output_shape(&self) -> &[usize] {
        self.shape(self.output)
    }

    /// The logits: the output, or the input of a trailing softmax head.
    pub fn logits(&self) -> ValueId {
        let mut value = self.output;
        while let Some(index) = value.node() {
            let node = &self.nodes[index];
            if matches!(node.op, Op::Softmax) {
                value = node.inputs[0];
            } else {
                break;
            }
        }
        value
    }

    /// Number of classes (elements of the logits).
    pub fn num_classes(&self) -> usize {
        numel(self.shape(self.logits()))
    }

    /// Renames the model.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// For each value, how many nodes read it (the graph output counts as a reader).
    pub fn reader_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.shapes.len()];
        for node in &self.nodes {
            for input in &node.inputs {
                counts[input.0] += 1;
            }
        }
        counts[self.output.0] += 1;
        counts
    }

    /// Total trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.nodes.iter().map(|n| n.op.parameter_count()).sum()
    }

    /// Multiply-accumulates of one node for one sample.
    pub fn node_macs(&self, index: usize) -> usize {
        let node = &self.nodes[index];
        let out = numel(self.shape(ValueId::of_node(index)));
        match &node.op {
            Op::Conv2d(c) => {
                let [kh, kw] = c.kernel();
                out * c.group_in_channels() * kh * kw
            }
            Op::Dense(d) => d.weight.len(),
            Op::BatchNorm(_) => out,
            _ => 0,
        }
    }

    /// Comparisons-with-zero the secure protocol needs for a node (ReLUs, and the pairwise
    /// comparisons of a max pool).
    pub fn node_relus(&self, index: usize) -> usize {
        let node = &self.nodes[index];
        let out = numel(self.shape(ValueId::of_node(index)));
        match &node.op {
            Op::Relu | Op::LeakyRelu { .. } | Op::PRelu { .. } => out,
            // One ReLU per input after the first.
            Op::Max => out * node.inputs.len().saturating_sub(1),
            // ReLU(x − min) and ReLU(x − max); a hard sigmoid is a clip, a hard swish one too.
            Op::Clip { .. } | Op::HardSigmoid { .. } | Op::HardSwish => 2 * out,
            // The sign of x, then one ReLU per knot of the spline.
            Op::Sigmoid => (1 + crate::approx::SIGMOID.knots().len()) * out,
            Op::Tanh => (1 + crate::approx::TANH.knots().len()) * out,
            // ReLU(x), then one ReLU per knot.
            Op::Silu => (1 + crate::approx::SILU.knots().len()) * out,
            Op::Gelu => (1 + crate::approx::GELU.knots().len()) * out,
            Op::Elu { .. } | Op::Selu { .. } => (1 + crate::approx::ELU.knots().len()) * out,
            Op::GeluTanh => (1 + crate::approx::GELU_TANH.knots().len()) * out,
            Op::Softplus => (1 + crate::approx::SOFTPLUS.knots().len()) * out,
            Op::Softsign => (1 + crate::approx::SOFTSIGN.knots().len()) * out,
            Op::MaxPool(p) => out * (p.kernel[0] * p.kernel[1]).saturating_sub(1),
            _ => 0,
        }
    }

    /// Folds every batch norm whose input is a convolution or dense layer read by nothing else
    /// into that layer's weights and bias. Batch norms that cannot be folded stay as ops.
    pub fn fold_batch_norms(&self) -> Result<Graph> {
        let readers = self.reader_counts();
        let mut nodes: Vec<Option<Node>> = self.nodes.iter().cloned().map(Some).collect();
        // Maps each old value to the value that replaces it.
        let mut replace: Vec<ValueId> = (0..self.shapes.len()).map(ValueId).collect();
        for index in 0..nodes.len() {
            let Some(node) = nodes[index].clone() else { continue };
            let Op::BatchNorm(bn) = &node.op else { continue };
            let source = node.inputs[0];
            let Some(prev) = source.node() else { continue };
            if readers[source.0] != 1 {
                continue;
            }
            let (scale, shift) = bn.scale_shift();
            let Some(prev_node) = nodes[prev].as_mut() else { continue };
            let folded = match &mut prev_node.op {
                Op::Conv2d(conv) => {
                    let per_out = conv.weight.len() / conv.out_channels().max(1);
                    scale_rows(conv.weight.data_mut(), per_out, &mut conv.bias, &scale, &shift);
                    true
                }
                Op::Dense(dense) => {
                    let per_out = dense.weight.len() / dense.bias.len().max(1);
                    scale_rows(dense.weight.data_mut(), per_out, &mut dense.bias, &scale, &shift);
                    true
                }
                _ => false,
            };
            if folded {
                nodes[index] = None;
                replace[ValueId::of_node(index).0] = source;
            }
        }
        self.rebuild(nodes, &replace)
    }

    /// Removes `Reshape`/`Flatten` nodes that do not change the shape.
    pub fn drop_identity_reshapes(&self) -> Result<Graph> {
        let mut replace: Vec<ValueId> = (0..self.shapes.len()).map(ValueId).collect();
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let is_reshape = matches!(node.op, Op::Reshape(_) | Op::Flatten);
                if is_reshape && self.shape(node.inputs[0]) == self.shape(ValueId::of_node(i)) {
                    replace[ValueId::of_node(i).0] = node.inputs[0];
                    None
                } else {
                    Some(node.clone())
                }
            })
            .collect();
        self.rebuild(nodes, &replace)
    }

    /// Rebuilds the graph from a node list with holes, renumbering values.
    fn rebuild(&self, nodes: Vec<Option<Node>>, replace: &[ValueId]) -> Result<Graph> {
        // Resolve chains of replacements (a removed node reading a removed node).
        let resolve = |mut v: ValueId| {
            while replace[v.0] != v {
                v = replace[v.0];
            }
            v
        };
        let mut new_id = vec![None; self.shapes.len()];
        new_id[0] = Some(ValueId::INPUT);
        let mut kept = Vec::new();
        for (index, node) in nodes.into_iter().enumerate() {
            let Some(mut node) = node else { continue };
            for input in &mut node.inputs {
                *input = new_id[resolve(*input).0]
                    .ok_or_else(|| NnError::Graph(format!("node '{}' reads a removed value", node.name)))?;
            }
            new_id[ValueId::of_node(index).0] = Some(ValueId::of_node(kept.len()));
            kept.push(node);
        }
        let output =
            new_id[resolve(self.output).0].ok_or_else(|| NnError::Graph("the graph output was removed".into()))?;
        Graph::new(self.name.clone(), self.input_shape.clone(), kept, output)
    }
}

/// `w[r, ..] *= scale[r]`, `b[r] = b[r]·scale[r] + shift[r]`.
fn scale_rows(weights: &mut [f32], per_row: usize, bias: &mut [f32], scale: &[f32], shift: &[f32]) {
    for (r, row) in weights.chunks_mut(per_row.max(1)).enumerate() {
        for w in row {
            *w *= scale[r];
        }
    }
    for (r, b) in bias.iter_mut().enumerate() {
        *b = *b * scale[r] + shift[r];
    }
}

/// Output size of a pooled/convolved spatial axis, `None` when the window does not fit.
fn window_out(size: usize, pad_lo: usize, pad_hi: usize, k: usize, stride: usize) -> Option<usize> {
    let padded = size + pad_lo + pad_hi;
    if stride == 0 || k == 0 || padded < k {
        return None;
    }
    Some((padded - k) / stride + 1)
}

/// Shape inference: the shape of every value, or an error naming the first bad node.
fn infer_shapes(input_shape: &[usize], nodes: &[Node]) -> Result<Vec<Vec<usize>>> {
    let mut shapes: Vec<Vec<usize>> = vec![input_shape.to_vec()];
    for node in nodes {
        let shape = node_shape(&shapes, node)?;
        shapes.push(shape);
    }
    Ok(shapes)
}

/// The output shape of `node` given the shapes of the values before it (`shapes[0]` is the
/// input; the node's own output would be `shapes.len()`), or an error naming the node.
pub(crate) fn node_shape(shapes: &[Vec<usize>], node: &Node) -> Result<Vec<usize>> {
    let index = shapes.len() - 1;
    {
        let err = |msg: String| NnError::node(&node.name, node.op.kind(), msg);
        if !node.op.accepts_inputs(node.inputs.len()) {
            let expected = match node.op {
                Op::Add => "2 inputs",
                Op::Concat => "at least 2 inputs",
                _ => "1 input",
            };
            return Err(err(format!("takes {expected}, got {}", node.inputs.len())));
        }
        for input in &node.inputs {
            if input.0 > index {
                return Err(err(format!("reads value {} that is not produced before it", input.0)));
            }
        }
        let x = shapes[node.inputs[0].0].clone();
        let shape = match &node.op {
            Op::Add => {
                let y = &shapes[node.inputs[1].0];
                if &x != y {
                    return Err(err(format!("adds shapes {x:?} and {y:?}")));
                }
                x
            }
            Op::Max => {
                if let Some(y) = node.inputs[1..].iter().map(|v| &shapes[v.0]).find(|y| **y != x) {
                    return Err(err(format!("the maximum of shapes {x:?} and {y:?} (no broadcasting)")));
                }
                x
            }
            Op::Concat => {
                let mut out = x.clone();
                for input in &node.inputs[1..] {
                    let y = &shapes[input.0];
                    if y.len() != x.len() || y.is_empty() || y[1..] != x[1..] {
                        return Err(err(format!("concatenates {x:?} and {y:?}: all axes but the first must agree")));
                    }
                    out[0] += y[0];
                }
                out
            }
            Op::Conv2d(conv) => {
                let [o, i, kh, kw] = match conv.weight.shape() {
                    &[o, i, kh, kw] => [o, i, kh, kw],
                    other => return Err(err(format!("weight shape {other:?} is not 4-D"))),
                };
                if conv.bias.len() != o {
                    return Err(err(format!("{} biases for {o} output channels", conv.bias.len())));
                }
                let [c, h, w] = chw(&x).ok_or_else(|| err(format!("input {x:?} is not [C,H,W]")))?;
                let g = conv.group;
                if g == 0 || !o.is_multiple_of(g) {
                    return Err(err(format!("group = {g} does not divide the {o} output channels")));
                }
                if c != i * g {
                    return Err(err(format!("input has {c} channels, weights expect {i} × {g} groups")));
                }
                let [pt, pl, pb, pr] = conv.padding;
                let oh = window_out(h, pt, pb, kh, conv.stride[0]);
                let ow = window_out(w, pl, pr, kw, conv.stride[1]);
                match (oh, ow) {
                    (Some(oh), Some(ow)) => vec![o, oh, ow],
                    _ => return Err(err(format!("kernel {kh}x{kw} does not fit input {x:?}"))),
                }
            }
            Op::Dense(dense) => {
                let [out, inp] = match dense.weight.shape() {
                    &[out, inp] => [out, inp],
                    other => return Err(err(format!("weight shape {other:?} is not 2-D"))),
                };
                if dense.bias.len() != out {
                    return Err(err(format!("{} biases for {out} outputs", dense.bias.len())));
                }
                if x.len() != 1 || x[0] != inp {
                    return Err(err(format!("input {x:?} does not match weights [{out}, {inp}]")));
                }
                vec![out]
            }
            Op::BatchNorm(bn) => {
                let c = bn.channels();
                let lens = [bn.beta.len(), bn.mean.len(), bn.var.len()];
                if lens.iter().any(|&l| l != c) {
                    return Err(err("gamma, beta, mean and var differ in length".into()));
                }
                if x.first() != Some(&c) {
                    return Err(err(format!("input {x:?} does not have {c} channels")));
                }
                x
            }
            Op::MaxPool(pool) | Op::AvgPool(pool) => {
                let [c, h, w] = chw(&x).ok_or_else(|| err(format!("input {x:?} is not [C,H,W]")))?;
                let [pt, pl, pb, pr] = pool.padding;
                let oh = window_out(h, pt, pb, pool.kernel[0], pool.stride[0]);
                let ow = window_out(w, pl, pr, pool.kernel[1], pool.stride[1]);
                if pool
                    .padding
                    .iter()
                    .zip([pool.kernel[0], pool.kernel[1], pool.kernel[0], pool.kernel[1]])
                    .any(|(p, k)| *p >= k)
                {
                    return Err(err(format!("padding {:?} not smaller than kernel", pool.padding)));
                }
                match (oh, ow) {
                    (Some(oh), Some(ow)) => vec![c, oh, ow],
                    _ => return Err(err(format!("window {:?} does not fit input {x:?}", pool.kernel))),
                }
            }
            Op::GlobalAvgPool => {
                let [c, _, _] = chw(&x).ok_or_else(|| err(format!("input {x:?} is not [C,H,W]")))?;
                vec![c]
            }
            Op::Flatten => vec![numel(&x)],
            Op::Reshape(target) => {
                if numel(target) != numel(&x) {
                    return Err(err(format!("cannot reshape {x:?} to {target:?}")));
                }
                target.clone()
            }
            Op::Relu
            | Op::LeakyRelu { .. }
            | Op::HardSigmoid { .. }
            | Op::HardSwish
            | Op::Sigmoid
            | Op::Tanh
            | Op::Silu
            | Op::Gelu
            | Op::GeluTanh
            | Op::Softplus
            | Op::Softsign
            | Op::Elu { .. }
            | Op::Selu { .. } => x,
            Op::PRelu { slope } => {
                if x.first() != Some(&slope.len()) {
                    return Err(err(format!("{} slopes for a value of shape {x:?} (one per channel)", slope.len())));
                }
                x
            }
            Op::Clip { min, max } => {
                if min >= max {
                    return Err(err(format!("min {min} is not below max {max}")));
                }
                x
            }
            Op::Transpose(perm) => {
                let mut seen = vec![false; x.len()];
                if perm.len() != x.len() || perm.iter().any(|&a| a >= x.len() || std::mem::replace(&mut seen[a], true))
                {
                    return Err(err(format!("perm {perm:?} is not a permutation of the axes of {x:?}")));
                }
                perm.iter().map(|&a| x[a]).collect()
            }
            Op::Softmax => {
                if x.len() != 1 {
                    return Err(err(format!("softmax over {x:?}: moat supports 1-D logits")));
                }
                x
            }
        };
        Ok(shape)
    }
}

fn chw(shape: &[usize]) -> Option<[usize; 3]> {
    match shape {
        &[c, h, w] => Some([c, h, w]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(o: usize, i: usize, k: usize) -> Op {
        Op::Conv2d(Conv2d {
            weight: Tensor::new(vec![o, i, k, k], (0..o * i * k * k).map(|v| v as f32 * 0.01).collect())
                .unwrap_or_else(|_| unreachable!()),
            bias: vec![0.5; o],
            stride: [1, 1],
            padding: [0; 4],
            group: 1,
        })
    }

    fn node(name: &str, op: Op, inputs: &[usize]) -> Node {
        Node { name: name.into(), op, inputs: inputs.iter().map(|&v| ValueId(v)).collect() }
    }

    #[test]
    fn shapes_are_inferred() -> Result<()> {
        let g = Graph::new(
            "t",
            vec![1, 6, 6],
            vec![
                node("c", conv(2, 1, 3), &[0]),
                node("r", Op::Relu, &[1]),
                node("p", Op::MaxPool(Pool { kernel: [2, 2], stride: [2, 2], padding: [0; 4] }), &[2]),
                node("f", Op::Flatten, &[3]),
            ],
            ValueId(4),
        )?;
        assert_eq!(g.shape(ValueId(1)), &[2, 4, 4]);
        assert_eq!(g.output_shape(), &[8]);
        assert_eq!(g.node_macs(0), 2 * 4 * 4 * 9);
        Ok(())
    }

    #[test]
    fn errors_name_the_node() {
        let e = Graph::new("t", vec![3, 6, 6], vec![node("conv_one", conv(2, 1, 3), &[0])], ValueId(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("conv_one") && e.contains("channels"), "{e}");
        let e = Graph::new("t", vec![2, 4, 4], vec![node("add", Op::Add, &[0, 1])], ValueId(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("add"), "{e}");
    }

    /// A SELU whose γ or γ·α the ring functions cannot take is refused when the graph is built
    /// (also from a peer's skeleton), naming the node.
    #[test]
    fn selu_parameters_are_checked() {
        let selu = |alpha, gamma| {
            Graph::new("t", vec![4], vec![node("act", Op::Selu { alpha, gamma }, &[0])], ValueId(1))
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(selu(crate::approx::SELU_ALPHA, crate::approx::SELU_GAMMA), None);
        assert_eq!(selu(-1.0, 0.5), None);
        for (alpha, gamma) in [(1.0, 0.0), (1.0, -1.0), (1.0, f32::NAN), (1.0, 17.0), (10.0, 2.0), (f32::NAN, 1.0)] {
            let e = selu(alpha, gamma).unwrap_or_default();
            assert!(e.contains("act") && e.contains("Selu"), "α = {alpha}, γ = {gamma}: {e}");
        }
    }

    #[test]
    fn concat_joins_channels_and_checks_the_rest() -> Result<()> {
        let nodes =
            vec![node("a", conv(2, 1, 1), &[0]), node("b", conv(3, 1, 1), &[0]), node("cat", Op::Concat, &[1, 2])];
        let g = Graph::new("t", vec![1, 4, 4], nodes, ValueId(3))?;
        assert_eq!(g.output_shape(), &[5, 4, 4]);
        let nodes =
            vec![node("a", conv(2, 1, 3), &[0]), node("b", conv(3, 1, 1), &[0]), node("cat", Op::Concat, &[1, 2])];
        let e = Graph::new("t", vec![1, 4, 4], nodes, ValueId(3)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("cat") && e.contains("first"), "{e}");
        let e = Graph::new("t", vec![1, 4, 4], vec![node("cat", Op::Concat, &[0])], ValueId(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("at least 2"), "{e}");
        Ok(())
    }

    #[test]
    fn batch_norm_folds_into_conv() -> Result<()> {
        let bn = BatchNorm {
            gamma: vec![2.0, 0.5],
            beta: vec![1.0, -1.0],
            mean: vec![0.1, 0.2],
            var: vec![4.0, 1.0],
            eps: 0.0,
        };
        let g = Graph::new(
            "t",
            vec![1, 3, 3],
            vec![node("c", conv(2, 1, 3), &[0]), node("bn", Op::BatchNorm(bn), &[1]), node("r", Op::Relu, &[2])],
            ValueId(3),
        )?;
        let folded = g.fold_batch_norms()?;
        assert_eq!(folded.nodes().len(), 2);
        assert_eq!(folded.nodes()[1].inputs, vec![ValueId(1)]);
        let Op::Conv2d(c) = &folded.nodes()[0].op else { panic!("conv expected") };
        // channel 0: scale 2/2 = 1, shift 1 - 0.1 = 0.9; bias 0.5 → 1.4
        assert!((c.bias[0] - 1.4).abs() < 1e-6);
        // channel 1: scale 0.5, shift -1 - 0.1 = -1.1; bias 0.25 - 1.1 = -0.85
        assert!((c.bias[1] + 0.85).abs() < 1e-6);
        Ok(())
    }
}
