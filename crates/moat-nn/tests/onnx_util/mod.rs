//! Helpers shared by the ONNX integration tests: seeded graphs and inputs, and a small builder
//! for hand-written ONNX protos.
#![allow(dead_code)]

use moat_nn::onnx::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, TypeProtoTensor, TypeValue, ValueInfoProto, attribute_type, data_type,
};
use moat_nn::{Graph, Node, Op, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The graph with every bias and batch-norm statistic replaced by seeded random values, so the
/// round trip exercises all parameters.
pub fn randomize(graph: &Graph, seed: u64) -> Result<Graph> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut uniform = |lo: f32, hi: f32, n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
    let nodes: Vec<Node> = graph
        .nodes()
        .iter()
        .map(|n| {
            let mut n = n.clone();
            match &mut n.op {
                Op::Conv2d(c) => c.bias = uniform(-0.5, 0.5, c.bias.len()),
                Op::Dense(d) => d.bias = uniform(-0.5, 0.5, d.bias.len()),
                Op::BatchNorm(bn) => {
                    let c = bn.channels();
                    bn.gamma = uniform(0.5, 1.5, c);
                    bn.beta = uniform(-0.5, 0.5, c);
                    bn.mean = uniform(-0.5, 0.5, c);
                    bn.var = uniform(0.5, 2.0, c);
                }
                _ => {}
            }
            n
        })
        .collect();
    Graph::new(graph.name(), graph.input_shape().to_vec(), nodes, graph.output())
}

/// `count` seeded inputs for the graph, uniform in [-1, 1).
pub fn inputs(shape: &[usize], count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    (0..count).map(|_| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "output lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A `NodeProto`.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.into(),
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// An INT attribute.
pub fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::INT), i: Some(v), ..Default::default() }
}

/// An INTS attribute.
pub fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::INTS), ints: v.to_vec(), ..Default::default() }
}

/// A FLOATS attribute.
pub fn a_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::FLOATS), floats: v.to_vec(), ..Default::default() }
}

/// A FLOAT attribute.
pub fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::FLOAT), f: Some(v), ..Default::default() }
}

/// A STRING attribute.
pub fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: Some(attribute_type::STRING),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A TENSOR attribute.
pub fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: Some(attribute_type::TENSOR), t: Some(t), ..Default::default() }
}

/// A float tensor in `float_data` (typed field).
pub fn t_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

/// A float tensor in `raw_data`.
pub fn t_f32_raw(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// An int64 tensor in `int64_data`.
pub fn t_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// A float value info with a symbolic batch and the given per-sample shape.
pub fn info(name: &str, batch: Option<i64>, shape: &[i64]) -> ValueInfoProto {
    let batch = match batch {
        Some(n) => DimensionValue::DimValue(n),
        None => DimensionValue::DimParam("N".into()),
    };
    let dims = std::iter::once(batch)
        .chain(shape.iter().map(|&d| DimensionValue::DimValue(d)))
        .map(|v| Dimension { value: Some(v), ..Default::default() })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model at `opset` reading `x` of per-sample shape `shape` and returning `y`.
pub fn model(opset: i64, shape: &[i64], nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        producer_name: "moat-tests".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "handmade".into(),
            initializer,
            input: vec![info("x", None, shape)],
            output: vec![info("y", None, &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Seeded weights, uniform in [-1, 1).
pub fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Imports a hand-built model through its encoded bytes, as a file would be read.
pub fn import(m: &ModelProto) -> Result<Graph> {
    moat_nn::onnx::import_onnx(&prost::Message::encode_to_vec(m))
}

/// The error text of an import that must fail.
pub fn error(m: &ModelProto) -> String {
    match import(m) {
        Ok(g) => panic!("import unexpectedly succeeded: {:?}", kinds(&g)),
        Err(e) => e.to_string(),
    }
}

/// The op kinds of a graph, in order.
pub fn kinds(g: &Graph) -> Vec<&'static str> {
    g.nodes().iter().map(|n| n.op.kind()).collect()
}

/// The float output of a graph.
pub fn run(g: &Graph, x: &[f32]) -> Result<Vec<f32>> {
    moat_nn::FloatExecutor::run(g, x)
}

/// Element-wise equality up to a relative 1e-5.
pub fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}
