//! ONNX export → import round trips: the imported graph is the exported one and computes
//! bit-identical float outputs.

mod onnx_util;

use moat_nn::onnx::{self, proto::TypeValue};
use moat_nn::zoo::{self, GraphBuilder};
use moat_nn::{FloatExecutor, Graph, Op, Pool, Result, ValueId};
use onnx_util::{inputs, randomize};

fn assert_round_trip(graph: &Graph) -> Result<Graph> {
    let bytes = onnx::export_onnx(graph)?;
    let back = onnx::import_onnx(&bytes)?;
    for (k, x) in inputs(graph.input_shape(), 3, 11).iter().enumerate() {
        let want = FloatExecutor::run(graph, x)?;
        let got = FloatExecutor::run(&back, x)?;
        let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && want.len() == got.len(), "{}: sample {k} differs: {want:?} vs {got:?}", graph.name());
    }
    Ok(back)
}

#[test]
fn zoo_models_round_trip_exactly() -> Result<()> {
    for (arch, shape) in [
        ("mlp:64,32", vec![1, 28, 28]),
        ("lenet5", vec![1, 28, 28]),
        ("resnet20", vec![3, 32, 32]),
        // Fire modules: Concat along channels. 64×64 is the smallest comfortable input:
        // 31 → 15 → 7 → 3 after the stem and the three max pools.
        ("squeezenet", vec![3, 64, 64]),
    ] {
        let graph = randomize(&zoo::build(&arch.parse()?, &shape, 10, 5)?, 9)?;
        let back = assert_round_trip(&graph)?;
        // Same graph: names, ops, weights, shapes (the exporter's GlobalAveragePool + Flatten
        // comes back as one GlobalAvgPool).
        assert_eq!(back, graph, "{arch}");
    }
    Ok(())
}

#[test]
fn every_op_round_trips() -> Result<()> {
    let mut b = GraphBuilder::new(&[2, 9, 9], 3);
    let x = b.conv("conv", ValueId::INPUT, 4, 3, 2, 1)?;
    let x = b.push("avg", Op::AvgPool(Pool { kernel: [3, 3], stride: [1, 1], padding: [1, 1, 1, 1] }), vec![x])?;
    let y = b.batch_norm("bn", x)?;
    let sum = b.push("sum", Op::Add, vec![x, y])?;
    let x = b.push("pool", Op::MaxPool(Pool { kernel: [2, 2], stride: [2, 2], padding: [0, 0, 1, 1] }), vec![sum])?;
    let x = b.push("reshape", Op::Reshape(vec![4, 3, 3]), vec![x])?;
    let x = b.push("flat", Op::Flatten, vec![x])?;
    let x = b.dense("fc", x, 6)?;
    let x = b.relu(x)?;
    let x = b.push("softmax", Op::Softmax, vec![x])?;
    let graph = randomize(&b.finish("every-op", x)?, 1)?;
    let back = assert_round_trip(&graph)?;
    assert_eq!(back, graph);
    Ok(())
}

#[test]
fn approximated_activations_round_trip() -> Result<()> {
    let mut b = GraphBuilder::new(&[2, 5, 5], 3);
    let x = b.conv("conv", ValueId::INPUT, 4, 3, 1, 1)?;
    let x = b.push("hard_sigmoid", Op::HardSigmoid { alpha: 0.25, beta: 0.375 }, vec![x])?;
    let x = b.conv("conv2", x, 4, 3, 1, 1)?;
    // Exported as HardSigmoid(1/6, 1/2) + Mul (opset 13), imported back as one HardSwish.
    let x = b.push("hard_swish", Op::HardSwish, vec![x])?;
    let x = b.push("sigmoid", Op::Sigmoid, vec![x])?;
    let x = b.push("tanh", Op::Tanh, vec![x])?;
    let x = b.flatten(x)?;
    let x = b.dense("fc", x, 3)?;
    let graph = randomize(&b.finish("approximated", x)?, 4)?;
    let back = assert_round_trip(&graph)?;
    let ops: Vec<&Op> = back.nodes().iter().map(|n| &n.op).collect();
    assert!(ops.contains(&&Op::HardSwish) && ops.contains(&&Op::Sigmoid) && ops.contains(&&Op::Tanh), "{ops:?}");
    assert!(!ops.iter().any(|op| matches!(op, Op::HardSigmoid { alpha, .. } if *alpha != 0.25)), "{ops:?}");
    Ok(())
}

#[test]
fn global_pool_head_and_identity_graph_round_trip() -> Result<()> {
    // A GlobalAvgPool as the last op: ONNX yields [N, C] after the exporter's Flatten.
    let mut b = GraphBuilder::new(&[3, 4, 4], 2);
    let x = b.conv("conv", ValueId::INPUT, 5, 3, 1, 1)?;
    let x = b.global_avg_pool(x)?;
    let graph = b.finish("gap", x)?;
    let back = assert_round_trip(&graph)?;
    assert_eq!(back.output_shape(), &[5]);
    // A graph without nodes exports an Identity.
    let empty = Graph::new("empty", vec![7], vec![], ValueId::INPUT)?;
    let back = assert_round_trip(&empty)?;
    assert_eq!(back.nodes().len(), 0);
    Ok(())
}

#[test]
fn exported_model_declares_opset_13_and_batched_io() -> Result<()> {
    let graph = zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 0)?;
    let model = onnx::export_model(&graph)?;
    assert_eq!(model.ir_version, 8);
    assert_eq!(model.producer_name, "moat");
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!((model.opset_import[0].domain.as_str(), model.opset_import[0].version), ("", 13));
    let g = model.graph.as_ref().ok_or_else(|| moat_nn::NnError::Onnx("no graph".into()))?;
    let dims = |v: &moat_nn::onnx::proto::ValueInfoProto| -> Vec<String> {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(t)) => {
                t.shape.iter().flat_map(|s| &s.dim).map(|d| format!("{:?}", d.value)).collect()
            }
            None => vec![],
        }
    };
    assert_eq!(g.input[0].name, "input");
    assert_eq!(
        dims(&g.input[0]),
        ["Some(DimParam(\"N\"))", "Some(DimValue(1))", "Some(DimValue(28))", "Some(DimValue(28))"]
    );
    assert_eq!(g.output[0].name, "output");
    assert_eq!(dims(&g.output[0]).len(), 2);
    // Weights are raw little-endian f32.
    let w = g
        .initializer
        .iter()
        .find(|t| t.name == "conv1.weight")
        .ok_or_else(|| moat_nn::NnError::Onnx("no conv1.weight".into()))?;
    assert_eq!(w.dims, [6, 1, 5, 5]);
    assert_eq!(w.raw_data.as_ref().map(Vec::len), Some(6 * 25 * 4));
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    );
    Ok(())
}

#[test]
fn save_and_load_files() -> Result<()> {
    let graph = randomize(&zoo::build(&"mlp:16".parse()?, &[20], 4, 1)?, 2)?;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("onnx_roundtrip");
    std::fs::create_dir_all(&dir).map_err(|e| moat_nn::NnError::io(&dir, e))?;
    let path = dir.join("mlp.onnx");
    onnx::save_onnx(&graph, &path)?;
    assert_eq!(onnx::load_onnx(&path)?, graph);
    let missing = onnx::load_onnx(&dir.join("missing.onnx")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(missing.contains("missing.onnx"), "{missing}");
    Ok(())
}
