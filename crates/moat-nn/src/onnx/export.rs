//! [`Graph`] → ONNX (opset 13, IR version 8; opset 20, IR version 9, when the graph has a
//! `GeluTanh`, whose ONNX `Gelu` is opset 20 — every other op below reads the same there).
//!
//! | moat op | ONNX nodes |
//! |---|---|
//! | `Conv2d` | `Conv` (kernel_shape, strides, pads, dilations 1, group 1) |
//! | `Dense` | `Gemm` (transB = 1) — a Dense input is already `[N, F]` |
//! | `BatchNorm` | `BatchNormalization` |
//! | `Relu`, `Add`, `Max`, `Flatten` (axis 1), `Sigmoid`, `Tanh`, `HardSigmoid` | same |
//! | `HardSwish` | `HardSigmoid` (α = 1/6, β = 1/2) + `Mul` (ONNX `HardSwish` is opset 14) |
//! | `Silu` | `Sigmoid` + `Mul` (ONNX `Swish` is opset 24) |
//! | `Gelu` | `Div` by √2, `Erf`, `Add` 1, `Mul` by x, `Mul` by 1/2 (ONNX `Gelu` is opset 20) |
//! | `GeluTanh` | `Gelu` (approximate = "tanh"), opset 20 |
//! | `Elu` | `Elu` (alpha) |
//! | `Selu` | `Selu` (alpha, gamma) |
//! | `Softplus`, `Softsign` | same |
//! | `PRelu` | `PRelu` with a `[C, 1, …]` slope |
//! | `Concat` | `Concat` (axis = 1, the channels) |
//! | `MaxPool`, `AvgPool` | `MaxPool`, `AveragePool` (count_include_pad = 1) |
//! | `GlobalAvgPool` | `GlobalAveragePool` + `Flatten`, so ONNX's `[N, C, 1, 1]` becomes moat's `[N, C]` |
//! | `Reshape(s)` | `Reshape` by the constant `[-1] ++ s` (the batch is the inferred axis) |
//! | `Softmax` | `Softmax` (axis = -1) |

use std::collections::HashSet;

use super::constant::{float_tensor, int64_tensor};
use super::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, TypeValue, ValueInfoProto, attribute_type, data_type,
};
use crate::error::Result;
use crate::graph::{Graph, Op, Pool, ValueId};

/// The `ai.onnx` opset moat writes.
pub const EXPORT_OPSET: i64 = 13;
/// The IR version moat writes.
pub const EXPORT_IR_VERSION: i64 = 8;
/// The `ai.onnx` opset moat writes for a graph with a [`Op::GeluTanh`] (ONNX `Gelu` is opset
/// 20), and its IR version.
const GELU_TANH_OPSET: (i64, i64) = (20, 9);

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::INT), i: Some(v), ..Default::default() }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(attribute_type::INTS),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(attribute_type::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::FLOAT), f: Some(v), ..Default::default() }
}

/// A `FLOAT` tensor value description with a symbolic batch dimension `N`.
fn batched_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let batch = Dimension { value: Some(DimensionValue::DimParam("N".into())), ..Default::default() };
    let dims =
        shape.iter().map(|&d| Dimension { value: Some(DimensionValue::DimValue(d as i64)), ..Default::default() });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: std::iter::once(batch).chain(dims).collect() }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hands out unique names.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "value" } else { base };
        let mut name = base.to_string();
        let mut k = 0;
        while self.0.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.0.insert(name.clone());
        name
    }
}

/// The graph being written.
struct Writer {
    values: Names,
    node_names: Names,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Writer {
    fn node(&mut self, op_type: &str, name: &str, inputs: Vec<String>, output: String, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output],
            name: self.node_names.fresh(name),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
    }

    fn weight(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.values.fresh(name);
        self.initializers.push(float_tensor(&name, dims, data));
        name
    }
}

fn pool_attrs(p: &Pool) -> Vec<AttributeProto> {
    vec![attr_ints("kernel_shape", &p.kernel), attr_ints("strides", &p.stride), attr_ints("pads", &p.padding)]
}

/// Builds the ONNX model of a graph. See the module documentation for the mapping.
pub(super) fn export_model(graph: &Graph) -> Result<ModelProto> {
    let mut w = Writer { values: Names::default(), node_names: Names::default(), nodes: vec![], initializers: vec![] };
    let input = w.values.fresh("input");
    let output = w.values.fresh("output");
    let mut value_names = vec![input.clone()];
    for (i, node) in graph.nodes().iter().enumerate() {
        let id = ValueId::of_node(i);
        let out = if id == graph.output() { output.clone() } else { w.values.fresh(&node.name) };
        let ins: Vec<String> = node.inputs.iter().map(|v| value_names[v.0].clone()).collect();
        let name = node.name.as_str();
        match &node.op {
            Op::Add => w.node("Add", name, ins, out.clone(), vec![]),
            Op::Max => w.node("Max", name, ins, out.clone(), vec![]),
            Op::Concat => w.node("Concat", name, ins, out.clone(), vec![attr_int("axis", 1)]),
            Op::AvgPool(p) => {
                let mut attrs = pool_attrs(p);
                attrs.push(attr_int("count_include_pad", 1));
                w.node("AveragePool", name, ins, out.clone(), attrs);
            }
            Op::BatchNorm(bn) => {
                let c = [bn.channels()];
                let scale = w.weight(&format!("{name}.scale"), &c, &bn.gamma);
                let bias = w.weight(&format!("{name}.bias"), &c, &bn.beta);
                let mean = w.weight(&format!("{name}.mean"), &c, &bn.mean);
                let var = w.weight(&format!("{name}.var"), &c, &bn.var);
                let inputs = vec![ins[0].clone(), scale, bias, mean, var];
                w.node("BatchNormalization", name, inputs, out.clone(), vec![attr_float("epsilon", bn.eps)]);
            }
            Op::Conv2d(c) => {
                let weight = w.weight(&format!("{name}.weight"), c.weight.shape(), c.weight.data());
                let bias = w.weight(&format!("{name}.bias"), &[c.bias.len()], &c.bias);
                let attrs = vec![
                    attr_ints("kernel_shape", &c.kernel()),
                    attr_ints("strides", &c.stride),
                    attr_ints("pads", &c.padding),
                    attr_ints("dilations", &[1, 1]),
                    attr_int("group", c.group as i64),
                ];
                w.node("Conv", name, vec![ins[0].clone(), weight, bias], out.clone(), attrs);
            }
            Op::Dense(d) => {
                let weight = w.weight(&format!("{name}.weight"), d.weight.shape(), d.weight.data());
                let bias = w.weight(&format!("{name}.bias"), &[d.bias.len()], &d.bias);
                w.node("Gemm", name, vec![ins[0].clone(), weight, bias], out.clone(), vec![attr_int("transB", 1)]);
            }
            Op::Flatten => w.node("Flatten", name, ins, out.clone(), vec![attr_int("axis", 1)]),
            Op::GlobalAvgPool => {
                let pooled = w.values.fresh(&format!("{name}.pooled"));
                w.node("GlobalAveragePool", name, ins, pooled.clone(), vec![]);
                w.node("Flatten", &format!("{name}/flatten"), vec![pooled], out.clone(), vec![attr_int("axis", 1)]);
            }
            Op::MaxPool(p) => w.node("MaxPool", name, ins, out.clone(), pool_attrs(p)),
            Op::Relu => w.node("Relu", name, ins, out.clone(), vec![]),
            Op::LeakyRelu { alpha } => {
                w.node("LeakyRelu", name, ins, out.clone(), vec![attr_float("alpha", *alpha)]);
            }
            Op::HardSigmoid { alpha, beta } => {
                let attrs = vec![attr_float("alpha", *alpha), attr_float("beta", *beta)];
                w.node("HardSigmoid", name, ins, out.clone(), attrs);
            }
            Op::HardSwish => {
                // ONNX HardSwish is opset 14: x · HardSigmoid(x; 1/6, 1/2), its definition.
                let gate = w.values.fresh(&format!("{name}.gate"));
                let attrs = vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)];
                w.node("HardSigmoid", &format!("{name}/gate"), ins.clone(), gate.clone(), attrs);
                w.node("Mul", name, vec![ins[0].clone(), gate], out.clone(), vec![]);
            }
            Op::Sigmoid => w.node("Sigmoid", name, ins, out.clone(), vec![]),
            Op::Silu => {
                let gate = w.values.fresh(&format!("{name}.gate"));
                w.node("Sigmoid", &format!("{name}/gate"), ins.clone(), gate.clone(), vec![]);
                w.node("Mul", name, vec![ins[0].clone(), gate], out.clone(), vec![]);
            }
            Op::Gelu => {
                // 0.5 · x · (1 + Erf(x / √2)), as PyTorch writes it before opset 20.
                let sqrt2 = w.weight(&format!("{name}.sqrt2"), &[], &[std::f32::consts::SQRT_2]);
                let one = w.weight(&format!("{name}.one"), &[], &[1.0]);
                let half = w.weight(&format!("{name}.half"), &[], &[0.5]);
                let [scaled, erf, sum, product] =
                    ["scaled", "erf", "sum", "product"].map(|v| w.values.fresh(&format!("{name}.{v}")));
                w.node("Div", &format!("{name}/div"), vec![ins[0].clone(), sqrt2], scaled.clone(), vec![]);
                w.node("Erf", &format!("{name}/erf"), vec![scaled], erf.clone(), vec![]);
                w.node("Add", &format!("{name}/add"), vec![erf, one], sum.clone(), vec![]);
                w.node("Mul", &format!("{name}/mul"), vec![ins[0].clone(), sum], product.clone(), vec![]);
                w.node("Mul", name, vec![product, half], out.clone(), vec![]);
            }
            Op::PRelu { slope } => {
                // [C, 1, …]: one slope per channel of the per-sample value.
                let rank = graph.shape(node.inputs[0]).len();
                let dims: Vec<usize> = std::iter::once(slope.len()).chain(std::iter::repeat_n(1, rank - 1)).collect();
                let slope = w.weight(&format!("{name}.slope"), &dims, slope);
                w.node("PRelu", name, vec![ins[0].clone(), slope], out.clone(), vec![]);
            }
            Op::GeluTanh => w.node("Gelu", name, ins, out.clone(), vec![attr_string("approximate", "tanh")]),
            Op::Elu { alpha } => w.node("Elu", name, ins, out.clone(), vec![attr_float("alpha", *alpha)]),
            Op::Selu { alpha, gamma } => {
                w.node("Selu", name, ins, out.clone(), vec![attr_float("alpha", *alpha), attr_float("gamma", *gamma)])
            }
            Op::Softplus => w.node("Softplus", name, ins, out.clone(), vec![]),
            Op::Softsign => w.node("Softsign", name, ins, out.clone(), vec![]),
            Op::Tanh => w.node("Tanh", name, ins, out.clone(), vec![]),
            Op::Clip { min, max } => {
                let lo = w.weight(&format!("{name}.min"), &[], &[*min]);
                let hi = w.weight(&format!("{name}.max"), &[], &[*max]);
                w.node("Clip", name, vec![ins[0].clone(), lo, hi], out.clone(), vec![]);
            }
            Op::Transpose(perm) => {
                let perm: Vec<usize> = std::iter::once(0).chain(perm.iter().map(|a| a + 1)).collect();
                w.node("Transpose", name, ins, out.clone(), vec![attr_ints("perm", &perm)]);
            }
            Op::Reshape(target) => {
                let shape = w.values.fresh(&format!("{name}.shape"));
                let spec: Vec<i64> = std::iter::once(-1).chain(target.iter().map(|&d| d as i64)).collect();
                w.initializers.push(int64_tensor(&shape, &spec));
                w.node("Reshape", name, vec![ins[0].clone(), shape], out.clone(), vec![]);
            }
            Op::Softmax => w.node("Softmax", name, ins, out.clone(), vec![attr_int("axis", -1)]),
        }
        value_names.push(out);
    }
    if graph.output() == ValueId::INPUT {
        w.node("Identity", "identity", vec![input.clone()], output.clone(), vec![]);
    }
    let onnx_graph = GraphProto {
        node: w.nodes,
        name: graph.name().to_string(),
        initializer: w.initializers,
        input: vec![batched_info(&input, graph.input_shape())],
        output: vec![batched_info(&output, graph.output_shape())],
        ..Default::default()
    };
    let (opset, ir_version) = if graph.nodes().iter().any(|n| n.op == Op::GeluTanh) {
        GELU_TANH_OPSET
    } else {
        (EXPORT_OPSET, EXPORT_IR_VERSION)
    };
    Ok(ModelProto {
        ir_version,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        producer_name: "moat".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(onnx_graph),
        ..Default::default()
    })
}
