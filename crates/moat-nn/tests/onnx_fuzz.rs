//! The importer never panics: random bytes, random byte-level mutations and truncations of
//! valid models, and structured mutations of attribute values all give `Ok` or `Err`. Graphs
//! that do import are also executed (when small enough) to check they are well-formed.
//!
//! The cargo-fuzz target `fuzz/fuzz_targets/onnx_import.rs` runs the same property with
//! coverage guidance.

mod onnx_util;

use moat_nn::onnx::{self, proto::ModelProto};
use moat_nn::zoo::GraphBuilder;
use moat_nn::{FloatExecutor, Graph, Op, Pool, ValueId};
use onnx_util::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use prost::Message;

/// Fixed seed and no regression files; `PROPTEST_CASES` overrides the case count for longer
/// campaigns.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    Config { cases, rng_seed: RngSeed::Fixed(0x6d6f_6174), failure_persistence: None, ..Config::default() }
}

/// Imports and, when the result is small, runs the graph on zeros. Panics are the failure.
fn exercise(bytes: &[u8]) {
    if let Ok(graph) = onnx::import_onnx(bytes) {
        let small = (0..=graph.nodes().len()).all(|v| graph.shape(ValueId(v)).iter().product::<usize>() <= 1 << 16);
        if small {
            let input = vec![0.0f32; graph.input_shape().iter().product()];
            let _ = FloatExecutor::run(&graph, &input);
        }
    }
}

/// A small valid model using many op types, as bytes from moat's exporter.
fn exported_seed() -> Vec<u8> {
    let build = || -> moat_nn::Result<Graph> {
        let mut b = GraphBuilder::new(&[2, 6, 6], 1);
        let x = b.conv("conv", ValueId::INPUT, 3, 3, 1, 1)?;
        let x = b.batch_norm("bn", x)?;
        let y = b.relu(x)?;
        let x = b.push("sum", Op::Add, vec![x, y])?;
        let x = b.push("avg", Op::AvgPool(Pool { kernel: [2, 2], stride: [2, 2], padding: [0; 4] }), vec![x])?;
        let x = b.max_pool(x, 1, 1)?;
        let x = b.push("rs", Op::Reshape(vec![3, 9]), vec![x])?;
        let x = b.flatten(x)?;
        let x = b.dense("fc", x, 4)?;
        let x = b.push("sm", Op::Softmax, vec![x])?;
        b.finish("seed", x)
    };
    build().and_then(|g| onnx::export_onnx(&g)).unwrap_or_default()
}

/// A hand-built opset-9 model exercising the importer-only paths (Pad, Clip, Gemm, MatMul+Add,
/// Constant, Dropout, GlobalAveragePool).
fn handmade_seed() -> Vec<u8> {
    let nodes = vec![
        node("Pad", "pad", &["x"], &["p"], vec![a_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1])]),
        node("Conv", "conv", &["p", "W", "B"], &["c"], vec![a_ints("strides", &[1, 1])]),
        node("Clip", "clip", &["c"], &["r"], vec![a_float("min", 0.0)]),
        node("GlobalAveragePool", "gap", &["r"], &["g"], vec![]),
        node("Constant", "shape", &[], &["s"], vec![a_ints("value_ints", &[0, -1])]),
        node("Reshape", "rs", &["g", "s"], &["f"], vec![]),
        node("Dropout", "drop", &["f"], &["d"], vec![a_float("ratio", 0.5)]),
        node("MatMul", "mm", &["d", "M"], &["m"], vec![]),
        node("Add", "bias", &["m", "b"], &["h"], vec![]),
        node("Gemm", "fc", &["h", "G"], &["y"], vec![a_int("transB", 1), a_float("alpha", 0.5)]),
    ];
    let inits = vec![
        t_f32_raw("W", &[3, 2, 3, 3], &weights(54, 1)),
        t_f32("B", &[3], &[0.1, 0.2, 0.3]),
        t_f32("M", &[3, 4], &weights(12, 2)),
        t_f32("b", &[4], &[0.0, 1.0, 2.0, 3.0]),
        t_f32_raw("G", &[2, 4], &weights(8, 3)),
    ];
    model(9, &[2, 5, 5], nodes, inits).encode_to_vec()
}

/// A hand-built opset-13 model in the shape of a `torch.onnx.export` output: input
/// normalisation, a fire module (Concat), the folded `x.view(x.size(0), -1)` subgraph, and the
/// other constant-folding ops (Slice, Cast, ConstantOfShape, Transpose, Squeeze).
fn torch_seed() -> Vec<u8> {
    let nodes = vec![
        node("Sub", "sub", &["x", "mean"], &["xc"], vec![]),
        node("Div", "div", &["xc", "std"], &["xn"], vec![]),
        node("Conv", "stem", &["xn", "W"], &["s"], vec![]),
        node("Relu", "relu", &["s"], &["sr"], vec![]),
        node("Conv", "e1", &["sr", "E1"], &["a"], vec![]),
        node("Conv", "e3", &["sr", "E3"], &["b"], vec![a_ints("pads", &[1, 1, 1, 1])]),
        node("Concat", "cat", &["a", "b"], &["c"], vec![a_int("axis", 1)]),
        node("Transpose", "t", &["c"], &["ct"], vec![a_ints("perm", &[0, 1, 2, 3])]),
        node("Shape", "shape", &["ct"], &["sh"], vec![]),
        node("Gather", "g", &["sh", "i0"], &["n"], vec![a_int("axis", 0)]),
        node("Unsqueeze", "u", &["n", "ax"], &["n1"], vec![]),
        node("Slice", "sl", &["sh", "st", "en", "ax", "stp"], &["rest"], vec![]),
        node("ConstantOfShape", "ones", &["len"], &["one"], vec![a_tensor("value", t_i64("", &[1], &[1]))]),
        node("Mul", "prod", &["rest", "one"], &["rest1"], vec![]),
        node("Squeeze", "sq", &["rest1", "ax"], &["r0"], vec![]),
        node("Unsqueeze", "u2", &["r0", "ax"], &["r1"], vec![]),
        node("Cast", "cast", &["r1"], &["r64"], vec![a_int("to", 7)]),
        node("Concat", "spec", &["n1", "m1", "r64"], &["sp"], vec![a_int("axis", 0)]),
        node("Reshape", "view", &["ct", "sp"], &["f"], vec![]),
        node("Flatten", "flat", &["f"], &["ff"], vec![]),
        node("Gemm", "fc", &["ff", "G"], &["y"], vec![a_int("transB", 1)]),
    ];
    let inits = vec![
        t_f32("mean", &[1, 2, 1, 1], &[0.5, -0.5]),
        t_f32("std", &[2, 1, 1], &[0.25, 2.0]),
        t_f32_raw("W", &[3, 2, 3, 3], &weights(54, 1)),
        t_f32("E1", &[2, 3, 1, 1], &weights(6, 2)),
        t_f32("E3", &[2, 3, 3, 3], &weights(54, 3)),
        t_i64("i0", &[], &[0]),
        t_i64("ax", &[1], &[0]),
        t_i64("st", &[1], &[-1]),
        t_i64("en", &[1], &[i64::MAX]),
        t_i64("stp", &[1], &[1]),
        t_i64("len", &[1], &[1]),
        t_i64("m1", &[1], &[-1]),
        t_f32_raw("G", &[2, 36], &weights(72, 4)),
    ];
    model(13, &[2, 5, 5], nodes, inits).encode_to_vec()
}

/// Seed `k mod 3`.
fn seed(k: usize) -> Vec<u8> {
    match k % 3 {
        0 => exported_seed(),
        1 => handmade_seed(),
        _ => torch_seed(),
    }
}

#[test]
fn seeds_import() -> moat_nn::Result<()> {
    for k in 0..3 {
        onnx::import_onnx(&seed(k))?;
    }
    // The torch-style seed folds its shape subgraph and normalisation away.
    let kinds: Vec<&str> = onnx::import_onnx(&torch_seed())?.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Conv2d", "Relu", "Conv2d", "Conv2d", "Concat", "Reshape", "Flatten", "Dense"]);
    Ok(())
}

/// A byte-level edit.
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..12)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match edit {
        Edit::Set(i, b) => {
            if let Some(x) = bytes.get_mut(i % len) {
                *x = *b;
            }
        }
        Edit::Flip(i, bit) => {
            if let Some(x) = bytes.get_mut(i % len) {
                *x ^= 1 << bit;
            }
        }
        Edit::Insert(i, b) => {
            let at = i % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Delete(i, n) => {
            let at = i % len;
            let end = (at + n).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Edit::Truncate(i) => bytes.truncate(i % len),
    }
}

/// Attribute and dimension values that stress arithmetic.
fn nasty() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(1),
        Just(2),
        Just(-2),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(1 << 31),
        Just(1 << 40),
        -10i64..100,
    ]
}

/// Replaces one integer (attribute element, dimension, or constant element) of the model.
fn mutate_model(m: &mut ModelProto, pick: usize, value: i64) {
    let Some(g) = m.graph.as_mut() else { return };
    let mut slots: Vec<&mut i64> = Vec::new();
    for n in &mut g.node {
        for a in &mut n.attribute {
            slots.extend(a.ints.iter_mut());
            if let Some(i) = a.i.as_mut() {
                slots.push(i);
            }
            if let Some(t) = a.t.as_mut() {
                slots.extend(t.dims.iter_mut());
                slots.extend(t.int64_data.iter_mut());
            }
        }
    }
    for t in &mut g.initializer {
        slots.extend(t.dims.iter_mut());
        slots.extend(t.int64_data.iter_mut());
    }
    for v in g.input.iter_mut().chain(g.output.iter_mut()) {
        if let Some(moat_nn::onnx::proto::TypeValue::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(s) = t.shape.as_mut()
        {
            for d in &mut s.dim {
                if let Some(moat_nn::onnx::proto::DimensionValue::DimValue(x)) = d.value.as_mut() {
                    slots.push(x);
                }
            }
        }
    }
    let n = slots.len();
    if n > 0 {
        *slots[pick % n] = value;
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_models_never_panic(k in 0usize..3, edits in proptest::collection::vec(edit(), 1..6)) {
        let mut bytes = seed(k);
        for e in &edits {
            apply(&mut bytes, e);
        }
        exercise(&bytes);
    }

    #[test]
    fn mutated_values_never_panic(
        k in 0usize..3,
        changes in proptest::collection::vec((any::<usize>(), nasty()), 1..4),
    ) {
        let mut m = onnx::decode_model(&seed(k)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (pick, value) in changes {
            mutate_model(&mut m, pick, value);
        }
        exercise(&m.encode_to_vec());
    }
}

/// The mutation harness is only useful if mutated models get past the decoder: check that
/// value mutations yield both imports and (non-decode) import errors.
#[test]
fn value_mutations_reach_the_importer() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let values = [0i64, -1, 1, 2, 3, i64::MAX, 1 << 40];
    let (mut ok, mut rejected) = (0, 0);
    for round in 0..400 {
        let Ok(mut m) = onnx::decode_model(&seed(round)) else { panic!("seed does not decode") };
        mutate_model(&mut m, rng.random::<u32>() as usize, values[rng.random_range(0..values.len())]);
        match onnx::import_onnx(&m.encode_to_vec()) {
            Ok(_) => ok += 1,
            Err(moat_nn::NnError::Onnx(msg)) if msg.contains("decode") => {}
            Err(_) => rejected += 1,
        }
    }
    assert!(ok > 40 && rejected > 40, "ok {ok}, rejected {rejected}");
}
