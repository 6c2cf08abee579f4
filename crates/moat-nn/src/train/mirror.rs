//! The burn mirror of a [`Graph`]: one generic burn [`Module`] holding every trainable layer of
//! any graph, plus a parameter-free [`Plan`] that says which layer each node uses and which
//! values it reads.
//!
//! [`Mirror::from_graph`] copies the graph's weights into burn parameters (so the graph's seed
//! decides the initialisation) and [`Mirror::to_graph`] copies the trained parameters, including
//! the batch-norm running statistics, back into a graph with the same nodes.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d as BurnConv2d;
use burn::nn::{BatchNorm as BurnBatchNorm, Linear, PaddingConfig2d};
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData, activation};

use crate::error::{NnError, Result};
use crate::graph::{BatchNorm, Conv2d, Dense, Graph, Node, Op, Pool, ValueId};
use crate::tensor::{Tensor as MoatTensor, numel};

/// Momentum of the batch-norm running statistics (PyTorch's default).
const BN_MOMENTUM: f64 = 0.1;

/// Every trainable layer of a graph, in node order within each kind.
#[derive(Module, Debug)]
pub(crate) struct GraphModel {
    /// One per `Conv2d` node.
    convs: Vec<BurnConv2d>,
    /// One per `Dense` node.
    denses: Vec<Linear>,
    /// One per `BatchNorm` node.
    norms: Vec<BurnBatchNorm>,
}

/// What one node does, with its layer index into [`GraphModel`].
#[derive(Clone, Debug)]
enum Step {
    Add,
    Concat,
    AvgPool(Pool),
    BatchNorm(usize),
    Conv2d(usize),
    Dense(usize),
    GlobalAvgPool,
    MaxPool(Pool),
    Relu,
    /// Flatten and reshape: the new per-sample shape.
    Reshape(Vec<usize>),
    Softmax,
}

/// The parameter-free part of the mirror: one step per node, in node order.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    inputs: Vec<Vec<usize>>,
    input_shape: Vec<usize>,
}

/// A value of the forward pass: a batch of per-sample values of rank 1, 2 or 3.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// `[batch, n]`.
    R2(Tensor<2>),
    /// `[batch, a, b]`.
    R3(Tensor<3>),
    /// `[batch, c, h, w]`.
    R4(Tensor<4>),
}

impl Value {
    /// A batch of `batch` samples of `shape`, row-major one after the other in `data`.
    pub(crate) fn from_samples(data: Vec<f32>, shape: &[usize], batch: usize, device: &Device) -> Result<Value> {
        if data.len() != batch * numel(shape) {
            return Err(NnError::Train(format!("{} values for {batch} samples of shape {shape:?}", data.len())));
        }
        Ok(match *shape {
            [n] => Value::R2(Tensor::from_data(TensorData::new(data, [batch, n]), device)),
            [a, b] => Value::R3(Tensor::from_data(TensorData::new(data, [batch, a, b]), device)),
            [c, h, w] => Value::R4(Tensor::from_data(TensorData::new(data, [batch, c, h, w]), device)),
            _ => return Err(unsupported_rank(shape)),
        })
    }

    /// The value as `[batch, n]`, e.g. logits.
    pub(crate) fn into_matrix(self) -> Result<Tensor<2>> {
        match self {
            Value::R2(t) => Ok(t),
            _ => Err(NnError::Train("expected a batch of vectors".into())),
        }
    }

    fn batch(&self) -> usize {
        match self {
            Value::R2(t) => t.dims()[0],
            Value::R3(t) => t.dims()[0],
            Value::R4(t) => t.dims()[0],
        }
    }

    fn reshape(self, shape: &[usize]) -> Result<Value> {
        let b = self.batch();
        macro_rules! to {
            ($t:expr) => {
                match *shape {
                    [n] => Value::R2($t.reshape([b, n])),
                    [x, y] => Value::R3($t.reshape([b, x, y])),
                    [c, h, w] => Value::R4($t.reshape([b, c, h, w])),
                    _ => return Err(unsupported_rank(shape)),
                }
            };
        }
        Ok(match self {
            Value::R2(t) => to!(t),
            Value::R3(t) => to!(t),
            Value::R4(t) => to!(t),
        })
    }
}

fn unsupported_rank(shape: &[usize]) -> NnError {
    NnError::Train(format!("per-sample shape {shape:?}: training supports ranks 1 to 3"))
}

/// A graph's trainable layers as a burn module, with the plan to run them.
#[derive(Clone, Debug)]
pub(crate) struct Mirror {
    /// The burn parameters.
    pub(crate) model: GraphModel,
    /// How the nodes use them.
    pub(crate) plan: Plan,
}

fn tensor1(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn read(tensor: Tensor<1>) -> Result<Vec<f32>> {
    read_any(tensor.into_data_result())
}

fn read_any(data: Result<TensorData>) -> Result<Vec<f32>> {
    data?.try_to_vec::<f32>().map_err(|e| NnError::Train(format!("reading parameters: {e:?}")))
}

/// Reading back tensors without panicking.
trait IntoDataResult {
    fn into_data_result(self) -> Result<TensorData>;
}

impl<const D: usize> IntoDataResult for Tensor<D> {
    fn into_data_result(self) -> Result<TensorData> {
        self.try_into_data().map_err(|e| NnError::Train(format!("reading a tensor: {e:?}")))
    }
}

/// The flat values of a float tensor.
pub(crate) fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    read_any(tensor.into_data_result())
}

impl Mirror {
    /// Mirrors `graph` on `device`, with the graph's weights as initial parameters.
    pub(crate) fn from_graph(graph: &Graph, device: &Device) -> Result<Mirror> {
        let mut convs = Vec::new();
        let mut denses = Vec::new();
        let mut norms = Vec::new();
        let mut steps = Vec::with_capacity(graph.nodes().len());
        for (index, node) in graph.nodes().iter().enumerate() {
            let err = |msg: String| NnError::node(&node.name, node.op.kind(), msg);
            let out_shape = graph.shape(ValueId::of_node(index));
            if !(1..=3).contains(&out_shape.len()) {
                return Err(err(format!("per-sample shape {out_shape:?}: training supports ranks 1 to 3")));
            }
            let step = match &node.op {
                Op::Add => Step::Add,
                Op::Concat => Step::Concat,
                Op::AvgPool(p) => Step::AvgPool(*p),
                Op::MaxPool(p) => Step::MaxPool(*p),
                Op::GlobalAvgPool => Step::GlobalAvgPool,
                Op::Relu => Step::Relu,
                Op::Softmax => Step::Softmax,
                Op::Flatten | Op::Reshape(_) => Step::Reshape(out_shape.to_vec()),
                Op::Clip { .. }
                | Op::LeakyRelu { .. }
                | Op::HardSigmoid { .. }
                | Op::HardSwish
                | Op::Sigmoid
                | Op::Tanh
                | Op::Silu
                | Op::Max
                | Op::PRelu { .. }
                | Op::Gelu
                | Op::GeluTanh
                | Op::Softplus
                | Op::Softsign
                | Op::Elu { .. }
                | Op::Selu { .. }
                | Op::Transpose(_) => {
                    return Err(err("training does not support this op (inference does)".into()));
                }
                Op::Conv2d(c) => {
                    let [kh, kw] = c.kernel();
                    let weight = Tensor::<4>::from_data(
                        TensorData::new(c.weight.data().to_vec(), [c.out_channels(), c.group_in_channels(), kh, kw]),
                        device,
                    );
                    let [top, left, bottom, right] = c.padding;
                    convs.push(BurnConv2d {
                        weight: Param::from_tensor(weight),
                        bias: Some(Param::from_tensor(tensor1(&c.bias, device))),
                        stride: c.stride,
                        kernel_size: [kh, kw],
                        dilation: [1, 1],
                        groups: c.group,
                        padding: PaddingConfig2d::Explicit(top, left, bottom, right),
                    });
                    Step::Conv2d(convs.len() - 1)
                }
                Op::Dense(d) => {
                    let [out, inp] = match d.weight.shape() {
                        &[out, inp] => [out, inp],
                        other => return Err(err(format!("weight shape {other:?} is not 2-D"))),
                    };
                    // moat stores [out, in]; burn's row layout is [in, out].
                    let w = d.weight.data();
                    let mut transposed = vec![0.0f32; w.len()];
                    for o in 0..out {
                        for i in 0..inp {
                            transposed[i * out + o] = w[o * inp + i];
                        }
                    }
                    let weight = Tensor::<2>::from_data(TensorData::new(transposed, [inp, out]), device);
                    denses.push(Linear {
                        weight: Param::from_tensor(weight),
                        bias: Some(Param::from_tensor(tensor1(&d.bias, device))),
                    });
                    Step::Dense(denses.len() - 1)
                }
                Op::BatchNorm(bn) => {
                    if !(bn.eps.is_finite() && bn.eps > 0.0) {
                        return Err(err(format!("ε = {} must be finite and positive to train", bn.eps)));
                    }
                    norms.push(BurnBatchNorm {
                        gamma: Param::from_tensor(tensor1(&bn.gamma, device)),
                        beta: Param::from_tensor(tensor1(&bn.beta, device)),
                        training: Param::from_bool(true),
                        running_mean: RunningState::new(tensor1(&bn.mean, device)),
                        running_var: RunningState::new(tensor1(&bn.var, device)),
                        momentum: BN_MOMENTUM,
                        epsilon: f64::from(bn.eps),
                    });
                    Step::BatchNorm(norms.len() - 1)
                }
            };
            steps.push(step);
        }
        let plan = Plan {
            steps,
            inputs: graph.nodes().iter().map(|n| n.inputs.iter().map(|v| v.0).collect()).collect(),
            input_shape: graph.input_shape().to_vec(),
        };
        Ok(Mirror { model: GraphModel { convs, denses, norms }, plan })
    }

    /// A graph with the nodes of `like` and the parameters (and running statistics) of this
    /// mirror.
    pub(crate) fn to_graph(&self, like: &Graph) -> Result<Graph> {
        let mut nodes: Vec<Node> = Vec::with_capacity(like.nodes().len());
        for (node, step) in like.nodes().iter().zip(&self.plan.steps) {
            let op = match (&node.op, step) {
                (Op::Conv2d(c), Step::Conv2d(i)) => {
                    let layer = &self.model.convs[*i];
                    let weight = tensor_values(layer.weight.val())?;
                    let bias = match &layer.bias {
                        Some(b) => read(b.val())?,
                        None => vec![0.0; c.out_channels()],
                    };
                    Op::Conv2d(Conv2d {
                        weight: MoatTensor::new(c.weight.shape().to_vec(), weight)?,
                        bias,
                        stride: c.stride,
                        padding: c.padding,
                        group: c.group,
                    })
                }
                (Op::Dense(d), Step::Dense(i)) => {
                    let layer = &self.model.denses[*i];
                    let [inp, out] = layer.weight.val().dims();
                    let w = tensor_values(layer.weight.val())?;
                    let mut weight = vec![0.0f32; w.len()];
                    for i in 0..inp {
                        for o in 0..out {
                            weight[o * inp + i] = w[i * out + o];
                        }
                    }
                    let bias = match &layer.bias {
                        Some(b) => read(b.val())?,
                        None => vec![0.0; out],
                    };
                    Op::Dense(Dense { weight: MoatTensor::new(d.weight.shape().to_vec(), weight)?, bias })
                }
                (Op::BatchNorm(bn), Step::BatchNorm(i)) => {
                    let layer = &self.model.norms[*i];
                    Op::BatchNorm(BatchNorm {
                        gamma: read(layer.gamma.val())?,
                        beta: read(layer.beta.val())?,
                        mean: read(layer.running_mean.value_sync())?,
                        var: read(layer.running_var.value_sync())?,
                        eps: bn.eps,
                    })
                }
                (op, _) => op.clone(),
            };
            nodes.push(Node { name: node.name.clone(), op, inputs: node.inputs.clone() });
        }
        Graph::new(like.name(), like.input_shape().to_vec(), nodes, like.output())
    }
}

impl Plan {
    /// Per-sample input shape.
    pub(crate) fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Runs the nodes needed for `target` on a batch and returns that value. In training mode
    /// (autodiff device, training flags on) batch norms use batch statistics and update their
    /// running statistics.
    pub(crate) fn forward(&self, model: &GraphModel, input: Value, target: ValueId) -> Result<Value> {
        let Some(last) = target.node() else { return Ok(input) };
        if last >= self.steps.len() {
            return Err(NnError::Train(format!("value {} is not produced by the graph", target.0)));
        }
        // How many more reads each value has among the nodes that run, so it can be freed.
        let mut reads = vec![0usize; last + 2];
        for inputs in &self.inputs[..=last] {
            for &v in inputs {
                reads[v] += 1;
            }
        }
        reads[target.0] += 1;
        let mut values: Vec<Option<Value>> = vec![None; last + 2];
        values[0] = Some(input);
        for index in 0..=last {
            let mut args = Vec::with_capacity(2);
            for &v in &self.inputs[index] {
                reads[v] -= 1;
                let value = if reads[v] == 0 { values[v].take() } else { values[v].clone() };
                args.push(value.ok_or_else(|| NnError::Train(format!("value {v} read before it is computed")))?);
            }
            values[index + 1] = Some(self.step(model, index, args)?);
        }
        values[target.0].take().ok_or_else(|| NnError::Train("the target value was not computed".into()))
    }

    fn step(&self, model: &GraphModel, index: usize, args: Vec<Value>) -> Result<Value> {
        let bad = || NnError::Train(format!("node {index}: input of an unexpected rank"));
        let mut args = args.into_iter();
        let x = args.next().ok_or_else(bad)?;
        let image = |x: Value| match x {
            Value::R4(t) => Ok(t),
            _ => Err(bad()),
        };
        Ok(match &self.steps[index] {
            Step::Add => match (x, args.next().ok_or_else(bad)?) {
                (Value::R2(a), Value::R2(b)) => Value::R2(a + b),
                (Value::R3(a), Value::R3(b)) => Value::R3(a + b),
                (Value::R4(a), Value::R4(b)) => Value::R4(a + b),
                _ => return Err(bad()),
            },
            Step::Concat => {
                // Per-sample axis 0 is the batched tensors' dimension 1.
                let rest: Vec<Value> = args.collect();
                match x {
                    Value::R2(a) => Value::R2(Tensor::cat(
                        std::iter::once(Ok(a))
                            .chain(rest.into_iter().map(|v| match v {
                                Value::R2(t) => Ok(t),
                                _ => Err(bad()),
                            }))
                            .collect::<Result<Vec<_>>>()?,
                        1,
                    )),
                    Value::R3(a) => Value::R3(Tensor::cat(
                        std::iter::once(Ok(a))
                            .chain(rest.into_iter().map(|v| match v {
                                Value::R3(t) => Ok(t),
                                _ => Err(bad()),
                            }))
                            .collect::<Result<Vec<_>>>()?,
                        1,
                    )),
                    Value::R4(a) => Value::R4(Tensor::cat(
                        std::iter::once(Ok(a)).chain(rest.into_iter().map(image)).collect::<Result<Vec<_>>>()?,
                        1,
                    )),
                }
            }
            Step::AvgPool(p) => Value::R4(avg_pool2d(
                image(x)?,
                AvgPoolOptions::new(p.kernel)
                    .with_stride(p.stride)
                    .with_padding_pairs(pad_pairs(p.padding))
                    .with_count_include_pad(true),
            )),
            Step::MaxPool(p) => Value::R4(max_pool2d(
                image(x)?,
                MaxPoolOptions::new(p.kernel).with_stride(p.stride).with_padding_pairs(pad_pairs(p.padding)),
            )),
            Step::BatchNorm(i) => {
                let bn = &model.norms[*i];
                match x {
                    Value::R2(t) => Value::R2(bn.forward(t)),
                    Value::R3(t) => Value::R3(bn.forward(t)),
                    Value::R4(t) => Value::R4(bn.forward(t)),
                }
            }
            Step::Conv2d(i) => Value::R4(model.convs[*i].forward(image(x)?)),
            Step::Dense(i) => Value::R2(model.denses[*i].forward(x.into_matrix()?)),
            Step::GlobalAvgPool => {
                let t = image(x)?;
                let [b, c, _, _] = t.dims();
                Value::R2(t.mean_dim(3).mean_dim(2).reshape([b, c]))
            }
            Step::Relu => match x {
                Value::R2(t) => Value::R2(activation::relu(t)),
                Value::R3(t) => Value::R3(activation::relu(t)),
                Value::R4(t) => Value::R4(activation::relu(t)),
            },
            Step::Reshape(shape) => x.reshape(shape)?,
            Step::Softmax => Value::R2(activation::softmax(x.into_matrix()?, 1)),
        })
    }
}

/// moat's `[top, left, bottom, right]` as burn's `[(top, bottom), (left, right)]`.
fn pad_pairs(p: [usize; 4]) -> [(usize, usize); 2] {
    [(p[0], p[2]), (p[1], p[3])]
}
