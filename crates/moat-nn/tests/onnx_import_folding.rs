//! Hand-built ONNX protos for what PyTorch's exporter emits beyond plain layers: channel
//! concatenation, shape subgraphs folded at import time (`x.view(x.size(0), -1)`), element-wise
//! arithmetic with constants (input normalisation) and no-op transposes. Each feature is checked
//! against direct computations, and each unsupported form must fail naming the node.

mod onnx_util;

use moat_nn::onnx::proto::{ModelProto, NodeProto};
use moat_nn::{Conv2d, Graph, Node, Op, Result, Tensor, ValueId};
use onnx_util::*;

/// A one-convolution moat graph: the reference for imported convolutions.
fn conv_ref(weight: &[f32], bias: &[f32], wshape: [usize; 4], input: &[usize], padding: [usize; 4]) -> Result<Graph> {
    let conv = Conv2d {
        weight: Tensor::new(wshape.to_vec(), weight.to_vec())?,
        bias: bias.to_vec(),
        stride: [1, 1],
        padding,
        group: 1,
    };
    let node = Node { name: "c".into(), op: Op::Conv2d(conv), inputs: vec![ValueId::INPUT] };
    Graph::new("ref", input.to_vec(), vec![node], ValueId(1))
}

/// Per-channel map over a `[C, H·W]` row-major sample.
fn per_channel(x: &[f32], channels: usize, f: impl Fn(usize, f32) -> f32) -> Vec<f32> {
    let per = x.len() / channels;
    x.iter().enumerate().map(|(i, &v)| f(i / per, v)).collect()
}

fn constant(name: &str, out: &str, t: moat_nn::onnx::proto::TensorProto) -> NodeProto {
    node("Constant", name, &[], &[out], vec![a_tensor("value", t)])
}

// ---------------------------------------------------------------- Concat

#[test]
fn concat_of_computed_values_joins_channels() -> Result<()> {
    // A fire module: squeeze 1×1 + Relu, expand 1×1 and 3×3 (padded) + Relu, Concat on axis 1.
    let (sq, e1, e3) = (weights(2 * 3, 1), weights(4 * 2, 2), weights(3 * 2 * 9, 3));
    let inits =
        || vec![t_f32("S", &[2, 3, 1, 1], &sq), t_f32("E1", &[4, 2, 1, 1], &e1), t_f32("E3", &[3, 2, 3, 3], &e3)];
    let x = &inputs(&[3, 5, 5], 1, 4)[0];
    let fire = |axis: i64| {
        vec![
            node("Conv", "squeeze", &["x", "S"], &["s"], vec![]),
            node("Relu", "squeeze_relu", &["s"], &["sr"], vec![]),
            node("Conv", "expand1", &["sr", "E1"], &["a"], vec![]),
            node("Relu", "relu1", &["a"], &["ar"], vec![]),
            node("Conv", "expand3", &["sr", "E3"], &["b"], vec![a_ints("pads", &[1, 1, 1, 1])]),
            node("Relu", "relu3", &["b"], &["br"], vec![]),
            node("Concat", "cat", &["ar", "br"], &["y"], vec![a_int("axis", axis)]),
        ]
    };
    let g = import(&model(13, &[3, 5, 5], fire(1), inits()))?;
    assert_eq!(kinds(&g), ["Conv2d", "Relu", "Conv2d", "Relu", "Conv2d", "Relu", "Concat"]);
    assert_eq!(g.output_shape(), &[7, 5, 5]);
    assert_eq!(g.nodes()[6].name, "cat");
    // Reference: the two branches computed separately, one after the other.
    let relu = |v: Vec<f32>| v.into_iter().map(|a| a.max(0.0)).collect::<Vec<f32>>();
    let s = relu(run(&conv_ref(&sq, &[0.0; 2], [2, 3, 1, 1], &[3, 5, 5], [0; 4])?, x)?);
    let mut want = relu(run(&conv_ref(&e1, &[0.0; 4], [4, 2, 1, 1], &[2, 5, 5], [0; 4])?, &s)?);
    want.extend(relu(run(&conv_ref(&e3, &[0.0; 3], [3, 2, 3, 3], &[2, 5, 5], [1; 4])?, &s)?));
    assert_eq!(run(&g, x)?, want);
    // axis = -3 is the same axis of a rank-4 value.
    assert_eq!(run(&import(&model(13, &[3, 5, 5], fire(-3), inits()))?, x)?, want);
    // Any other axis would interleave channels: refused, naming the node.
    for axis in [2, -1, 0] {
        let e = error(&model(13, &[3, 5, 5], fire(axis), inits()));
        assert!(e.contains("'cat'") && e.contains("channel axis"), "{axis}: {e}");
    }
    Ok(())
}

#[test]
fn concat_of_features_pooled_maps_and_single_inputs() -> Result<()> {
    // Rank 2: [N, F] values concatenate along axis 1 = -1.
    let (wa, wb) = (weights(4 * 2, 5), weights(4 * 3, 6));
    let nodes = vec![
        node("Gemm", "fa", &["x", "A"], &["a"], vec![a_int("transB", 1)]),
        node("Gemm", "fb", &["x", "B"], &["b"], vec![a_int("transB", 1)]),
        node("Concat", "cat", &["a", "b", "a"], &["y"], vec![a_int("axis", -1)]),
    ];
    let g = import(&model(13, &[4], nodes, vec![t_f32("A", &[2, 4], &wa), t_f32("B", &[3, 4], &wb)]))?;
    assert_eq!(kinds(&g), ["Dense", "Dense", "Concat"]);
    let x = [0.5f32, -1.0, 0.25, 2.0];
    let out = run(&g, &x)?;
    let dot = |w: &[f32], o: usize| (0..4).map(|i| w[o * 4 + i] * x[i]).sum::<f32>();
    let a: Vec<f32> = (0..2).map(|o| dot(&wa, o)).collect();
    let want: Vec<f32> = a.iter().copied().chain((0..3).map(|o| dot(&wb, o))).chain(a.iter().copied()).collect();
    assert!(close(&out, &want), "{out:?} vs {want:?}");
    // GlobalAveragePool outputs are [C] in moat but [N, C, 1, 1] in ONNX: they are concatenated
    // in the ONNX layout and give the channel means in order.
    let nodes = vec![
        node("GlobalAveragePool", "gap", &["x"], &["g"], vec![]),
        node("Relu", "relu", &["x"], &["r"], vec![]),
        node("GlobalAveragePool", "gap_r", &["r"], &["gr"], vec![]),
        node("Concat", "cat", &["g", "gr"], &["c"], vec![a_int("axis", 1)]),
        node("Flatten", "flat", &["c"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[2, 2, 2], nodes, vec![]))?;
    assert_eq!(g.output_shape(), &[4]);
    let x = [1.0f32, -3.0, 2.0, 4.0, -1.0, -1.0, -2.0, 0.0];
    assert!(close(&run(&g, &x)?, &[1.0, -1.0, 1.75, 0.0]), "{:?}", run(&g, &x)?);
    // A single input is the identity.
    let g = import(&model(13, &[3], vec![node("Concat", "cat", &["x"], &["y"], vec![a_int("axis", 1)])], vec![]))?;
    assert_eq!(kinds(&g), Vec::<&str>::new());
    // Other axes must agree; a constant among computed values is refused.
    let nodes = vec![
        node("MaxPool", "mp", &["x"], &["p"], vec![a_ints("kernel_shape", &[2, 2])]),
        node("Concat", "cat", &["x", "p"], &["y"], vec![a_int("axis", 1)]),
    ];
    let e = error(&model(13, &[1, 3, 3], nodes, vec![]));
    assert!(e.contains("'cat'") && e.contains("agree"), "{e}");
    let nodes = vec![node("Concat", "cat", &["x", "k"], &["y"], vec![a_int("axis", 1)])];
    let e = error(&model(13, &[3], nodes, vec![t_f32("k", &[1, 2], &[1.0, 2.0])]));
    assert!(e.contains("'cat'") && e.contains("constants with computed values"), "{e}");
    Ok(())
}

#[test]
fn concat_of_constants_folds_along_any_axis() -> Result<()> {
    // A [1, 3] bias built from two constants concatenated along axis 1, then added to [N, 3].
    let nodes = vec![
        node("Concat", "bias", &["b1", "b2"], &["b"], vec![a_int("axis", 1)]),
        node("Add", "add", &["x", "b"], &["y"], vec![]),
    ];
    let inits = vec![t_f32("b1", &[1, 2], &[1.0, 2.0]), t_f32("b2", &[1, 1], &[3.0])];
    let g = import(&model(13, &[3], nodes, inits))?;
    assert_eq!(run(&g, &[0.5, 0.5, 0.5])?, [1.5, 2.5, 3.5]);
    Ok(())
}

// ---------------------------------------------------------------- shape subgraphs

/// Conv(x) of shape [N, 2, 4, 4], then `nodes` computing `spec`, then Reshape(conv, spec).
fn view_model(opset: i64, mut nodes: Vec<NodeProto>, mut inits: Vec<moat_nn::onnx::proto::TensorProto>) -> ModelProto {
    nodes.insert(0, node("Conv", "conv", &["x", "W"], &["c"], vec![]));
    nodes.push(node("Reshape", "view", &["c", "spec"], &["y"], vec![]));
    inits.push(t_f32("W", &[2, 1, 3, 3], &weights(18, 7)));
    model(opset, &[1, 6, 6], nodes, inits)
}

#[test]
fn pytorch_view_batch_minus_one_folds() -> Result<()> {
    // torch.onnx.export of `x.view(x.size(0), -1)` (opset 13+: Unsqueeze axes as an input).
    let nodes = vec![
        node("Shape", "shape", &["c"], &["s"], vec![]),
        constant("zero", "i0", t_i64("", &[], &[0])),
        node("Gather", "size0", &["s", "i0"], &["n"], vec![a_int("axis", 0)]),
        constant("axes", "ax", t_i64("", &[1], &[0])),
        node("Unsqueeze", "unsq", &["n", "ax"], &["n1"], vec![]),
        constant("minus_one", "m1", t_i64("", &[1], &[-1])),
        node("Concat", "spec_cat", &["n1", "m1"], &["spec"], vec![a_int("axis", 0)]),
    ];
    let g = import(&view_model(13, nodes, vec![]))?;
    assert_eq!(g.output_shape(), &[32]);
    assert_eq!(kinds(&g), ["Conv2d", "Reshape"], "the shape subgraph leaves no nodes");
    let x = &inputs(&[1, 6, 6], 1, 3)[0];
    let conv = conv_ref(&weights(18, 7), &[0.0; 2], [2, 1, 3, 3], &[1, 6, 6], [0; 4])?;
    assert_eq!(run(&g, x)?, run(&conv, x)?);
    // `x.view(x.size(0), x.size(1), -1)` and `x.reshape(b, c * h * w)` with Mul of sizes.
    let nodes = vec![
        node("Shape", "shape", &["c"], &["s"], vec![]),
        node("Gather", "g", &["s", "idx"], &["nc"], vec![]),
        constant("minus_one", "m1", t_i64("", &[1], &[-1])),
        node("Concat", "spec_cat", &["nc", "m1"], &["spec"], vec![a_int("axis", 0)]),
    ];
    let g = import(&view_model(13, nodes, vec![t_i64("idx", &[2], &[0, 1])]))?;
    assert_eq!(g.output_shape(), &[2, 16]);
    let nodes = vec![
        node("Shape", "shape", &["c"], &["s"], vec![]),
        node("Gather", "gb", &["s", "i0"], &["b"], vec![]),
        node("Gather", "gc", &["s", "i1"], &["ch"], vec![]),
        node("Gather", "gh", &["s", "i2"], &["h"], vec![]),
        node("Gather", "gw", &["s", "i3"], &["w"], vec![]),
        node("Mul", "chh", &["ch", "h"], &["c_h"], vec![]),
        node("Mul", "chw", &["c_h", "w"], &["f"], vec![]),
        node("Unsqueeze", "ub", &["b"], &["b1"], vec![a_ints("axes", &[0])]),
        node("Unsqueeze", "uf", &["f"], &["f1"], vec![a_ints("axes", &[0])]),
        node("Concat", "spec_cat", &["b1", "f1"], &["spec"], vec![a_int("axis", 0)]),
    ];
    let idx = |n: &str, v: i64| t_i64(n, &[], &[v]);
    let g = import(&view_model(11, nodes, vec![idx("i0", 0), idx("i1", 1), idx("i2", 2), idx("i3", -1)]))?;
    assert_eq!(g.output_shape(), &[32]);
    Ok(())
}

#[test]
fn opset9_slice_and_cast_forms_fold() -> Result<()> {
    // Older exports: Slice with attributes, a Cast to INT64, Unsqueeze with an axes attribute.
    let nodes = vec![
        node("Shape", "shape", &["c"], &["s"], vec![]),
        node("Slice", "first", &["s"], &["n"], vec![a_ints("starts", &[0]), a_ints("ends", &[1])]),
        node("Cast", "cast", &["n"], &["n64"], vec![a_int("to", 7)]),
        node("Constant", "rest", &[], &["r"], vec![a_tensor("value", t_i64("", &[1], &[-1]))]),
        node("Concat", "spec_cat", &["n64", "r"], &["spec"], vec![a_int("axis", 0)]),
    ];
    let g = import(&view_model(9, nodes, vec![]))?;
    assert_eq!(g.output_shape(), &[32]);
    // Opset 10+: Slice by inputs, with axes and a negative step (the last two sizes, reversed),
    // Squeeze of a constant, and a folded Div and Sub.
    let nodes = vec![
        node("Shape", "shape", &["c"], &["s"], vec![]),
        node("Slice", "hw", &["s", "st", "en", "ax", "stp"], &["wh"], vec![]),
        node("Div", "half", &["wh", "two"], &["wh2"], vec![]),
        node("Sub", "minus", &["wh2", "zero"], &["wh3"], vec![]),
        node("Slice", "batch", &["s", "z", "one"], &["n"], vec![]),
        node("Unsqueeze", "un", &["n", "ax0"], &["n2"], vec![]),
        node("Squeeze", "sq", &["n2", "ax0"], &["n3"], vec![]),
        node("Concat", "spec_cat", &["n3", "c8", "wh3"], &["spec"], vec![a_int("axis", 0)]),
    ];
    let inits = vec![
        t_i64("st", &[1], &[-1]),
        t_i64("en", &[1], &[1]),
        t_i64("ax", &[1], &[0]),
        t_i64("stp", &[1], &[-1]),
        t_i64("two", &[], &[2]),
        t_i64("zero", &[1], &[0]),
        t_i64("z", &[1], &[0]),
        t_i64("one", &[1], &[1]),
        t_i64("ax0", &[1], &[0]),
        t_i64("c8", &[1], &[8]),
    ];
    // [4, 4, 2] reversed → [4, 4] / 2 → [2, 2]: spec [N, 8, 2, 2].
    let g = import(&view_model(13, nodes, inits))?;
    assert_eq!(g.output_shape(), &[8, 2, 2]);
    Ok(())
}

#[test]
fn shape_subgraph_errors_name_the_node() {
    let shape_then = |more: Vec<NodeProto>| {
        let mut nodes = vec![node("Shape", "shape", &["c"], &["s"], vec![])];
        nodes.extend(more);
        nodes
    };
    let cases: Vec<(Vec<NodeProto>, Vec<moat_nn::onnx::proto::TensorProto>, &str, &str)> = vec![
        // The batch size as a per-sample axis would move elements between samples.
        (
            shape_then(vec![
                node("Slice", "sl", &["s", "z", "one"], &["n"], vec![]),
                node("Concat", "cat", &["m1", "n"], &["spec"], vec![a_int("axis", 0)]),
            ]),
            vec![t_i64("m1", &[1], &[-1]), t_i64("z", &[1], &[0]), t_i64("one", &[1], &[1])],
            "'view'",
            "batch size N",
        ),
        // Arithmetic on the batch size.
        (
            shape_then(vec![node("Mul", "twice", &["s", "two"], &["spec"], vec![])]),
            vec![t_i64("two", &[], &[2])],
            "'twice'",
            "batch size N",
        ),
        // A tensor whose size depends on the batch.
        (
            shape_then(vec![node("ConstantOfShape", "zeros", &["s"], &["spec"], vec![])]),
            vec![],
            "'zeros'",
            "batch size N",
        ),
        // Constant-only ops on computed values.
        (
            vec![node("Gather", "emb", &["c", "i"], &["spec"], vec![])],
            vec![t_i64("i", &[1], &[0])],
            "'emb'",
            "constants",
        ),
        (
            vec![node("Slice", "crop", &["c", "z", "one"], &["spec"], vec![])],
            vec![t_i64("z", &[1], &[0]), t_i64("one", &[1], &[1])],
            "'crop'",
            "constants",
        ),
        // Too large to fold.
        (
            vec![node("ConstantOfShape", "big", &["dims"], &["spec"], vec![])],
            vec![t_i64("dims", &[2], &[1 << 14, 1 << 14])],
            "'big'",
            "exceed",
        ),
        (
            vec![node("Gather", "g", &["v", "i"], &["spec"], vec![])],
            vec![t_i64("v", &[2], &[0, -1]), t_i64("i", &[1], &[2])],
            "'g'",
            "out of range",
        ),
    ];
    for (nodes, inits, at, needle) in cases {
        let e = error(&view_model(13, nodes, inits));
        assert!(e.contains(at) && e.contains(needle), "{at} / {needle}: {e}");
    }
}

// ---------------------------------------------------------------- element-wise affine maps

#[test]
fn normalisation_sub_div_is_an_exact_per_channel_affine() -> Result<()> {
    let mean = [0.25f32, -0.5, 0.125];
    let std = [0.5f32, 2.0, 4.0]; // powers of two: x / s = x · (1/s) exactly
    let inits = || vec![t_f32("mean", &[1, 3, 1, 1], &mean), t_f32("std", &[3, 1, 1], &std)];
    let nodes = vec![
        node("Sub", "sub", &["x", "mean"], &["centred"], vec![]),
        node("Div", "div", &["centred", "std"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[3, 2, 2], nodes, inits()))?;
    assert_eq!(kinds(&g), ["BatchNorm", "BatchNorm"]);
    assert_eq!((g.nodes()[0].name.as_str(), g.nodes()[1].name.as_str()), ("sub", "div"));
    let x = &inputs(&[3, 2, 2], 1, 5)[0];
    assert_eq!(run(&g, x)?, per_channel(x, 3, |c, v| (v - mean[c]) / std[c]));
    // Any divisor: within a rounding of the quotient.
    let nodes = vec![node("Div", "div", &["x", "s"], &["y"], vec![])];
    let g = import(&model(13, &[3, 2, 2], nodes, vec![t_f32("s", &[3, 1, 1], &[0.3, 0.7, 1.1])]))?;
    let want = per_channel(x, 3, |c, v| v / [0.3f32, 0.7, 1.1][c]);
    assert!(close(&run(&g, x)?, &want));
    Ok(())
}

#[test]
fn scalar_and_constant_first_forms() -> Result<()> {
    let x = [-1.5f32, 0.0, 0.75, 3.0];
    let m = |nodes| model(13, &[4], nodes, vec![t_f32("c", &[], &[2.5])]);
    // (op, inputs, what it computes)
    type Case = (&'static str, [&'static str; 2], fn(f32) -> f32);
    let cases: [Case; 5] = [
        ("Sub", ["c", "x"], |v| 2.5 - v),
        ("Sub", ["x", "c"], |v| v - 2.5),
        ("Mul", ["c", "x"], |v| 2.5 * v),
        ("Mul", ["x", "c"], |v| v * 2.5),
        ("Add", ["c", "x"], |v| 2.5 + v),
    ];
    for (op, ins, f) in cases {
        let g = import(&m(vec![node(op, "op", &ins, &["y"], vec![])]))?;
        assert_eq!(kinds(&g), ["BatchNorm"], "{op} {ins:?}");
        let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        assert_eq!(run(&g, &x)?, want, "{op} {ins:?}: bit-exact");
    }
    // x · 1 and x + 0 leave no node.
    let nodes =
        vec![node("Mul", "one", &["x", "k1"], &["a"], vec![]), node("Add", "zero", &["a", "k0"], &["y"], vec![])];
    let g = import(&model(13, &[4], nodes, vec![t_f32("k1", &[1], &[1.0]), t_f32("k0", &[], &[0.0])]))?;
    assert_eq!(kinds(&g), Vec::<&str>::new());
    // c / x is not affine; two computed operands are not supported; nor a non-per-channel constant.
    let e = error(&m(vec![node("Div", "recip", &["c", "x"], &["y"], vec![])]));
    assert!(e.contains("'recip'") && e.contains("affine"), "{e}");
    let e = error(&m(vec![node("Mul", "sq", &["x", "x"], &["y"], vec![])]));
    assert!(e.contains("'sq'") && e.contains("two computed values"), "{e}");
    let nodes = vec![node("Mul", "scale", &["x", "k"], &["y"], vec![])];
    let e = error(&model(13, &[2, 2, 2], nodes, vec![t_f32("k", &[2, 2, 2], &[1.0; 8])]));
    assert!(e.contains("'scale'") && e.contains("per-channel"), "{e}");
    Ok(())
}

#[test]
fn normalisation_folds_into_an_unpadded_conv_only() -> Result<()> {
    let mean = [0.4f32, -0.2];
    let std = [0.3f32, 0.6];
    let w = weights(3 * 2 * 3 * 3, 11);
    let b = [0.1f32, -0.2, 0.3];
    let inits = || {
        vec![
            t_f32("mean", &[1, 2, 1, 1], &mean),
            t_f32("std", &[1, 2, 1, 1], &std),
            t_f32("W", &[3, 2, 3, 3], &w),
            t_f32("B", &[3], &b),
        ]
    };
    let x = &inputs(&[2, 5, 5], 1, 12)[0];
    let normalised = per_channel(x, 2, |c, v| (v - mean[c]) / std[c]);
    for pads in [[0i64; 4], [1; 4]] {
        let nodes = vec![
            node("Sub", "sub", &["x", "mean"], &["centred"], vec![]),
            node("Div", "div", &["centred", "std"], &["n"], vec![]),
            node("Conv", "conv", &["n", "W", "B"], &["y"], vec![a_ints("pads", &pads)]),
        ];
        let g = import(&model(13, &[2, 5, 5], nodes, inits()))?;
        let padding = pads.map(|p| p as usize);
        let want = run(&conv_ref(&w, &b, [3, 2, 3, 3], &[2, 5, 5], padding)?, &normalised)?;
        let got = run(&g, x)?;
        assert!(close(&got, &want), "pads {pads:?}: {got:?} vs {want:?}");
        if pads == [0; 4] {
            // (x − m)/s read only by the conv: absorbed into its weights and bias.
            assert_eq!(kinds(&g), ["Conv2d"]);
            assert_eq!(g.input_shape(), &[2, 5, 5]);
        } else {
            // Padding would pad with 0 in the normalised space, i.e. with `mean` in the raw one:
            // the normalisation stays.
            assert_eq!(kinds(&g), ["BatchNorm", "BatchNorm", "Conv2d"]);
        }
    }
    // A normalised value with a second reader is kept.
    let nodes = vec![
        node("Sub", "sub", &["x", "mean"], &["n"], vec![]),
        node("Conv", "conv", &["n", "W", "B"], &["c"], vec![]),
        node("Relu", "relu", &["n"], &["r"], vec![]),
        node("GlobalAveragePool", "gap", &["r"], &["g"], vec![]),
        node("Flatten", "flat", &["c"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[2, 5, 5], nodes, inits()))?;
    assert_eq!(kinds(&g), ["BatchNorm", "Conv2d", "Flatten"], "the Relu branch is dead, the BatchNorm stays");
    Ok(())
}

#[test]
fn scaling_folds_into_a_following_gemm() -> Result<()> {
    let w = weights(2 * 3, 13);
    let nodes = vec![
        node("Mul", "scale", &["x", "k"], &["s"], vec![]),
        node("Sub", "shift", &["s", "m"], &["n"], vec![]),
        node("Gemm", "fc", &["n", "W", "b"], &["y"], vec![a_int("transB", 1)]),
    ];
    let inits = vec![
        t_f32("k", &[], &[1.0 / 255.0]),
        t_f32("m", &[3], &[0.5, 0.25, -0.5]),
        t_f32("W", &[2, 3], &w),
        t_f32("b", &[2], &[0.1, 0.2]),
    ];
    let g = import(&model(13, &[3], nodes, inits))?;
    assert_eq!(kinds(&g), ["Dense"]);
    let x = [128.0f32, 64.0, 255.0];
    let n: Vec<f32> = x.iter().zip([0.5, 0.25, -0.5]).map(|(v, m)| v * (1.0 / 255.0) - m).collect();
    let want: Vec<f32> = (0..2).map(|o| (0..3).map(|i| w[o * 3 + i] * n[i]).sum::<f32>() + [0.1, 0.2][o]).collect();
    assert!(close(&run(&g, &x)?, &want), "{:?} vs {want:?}", run(&g, &x)?);
    Ok(())
}

#[test]
fn bias_after_a_layer_folds_only_without_other_readers() -> Result<()> {
    let w = weights(3 * 2, 14);
    let inits = || vec![t_f32("W", &[3, 2], &w), t_f32("b", &[2], &[1.0, -1.0])];
    let x = [0.5f32, -0.25, 2.0];
    let mm: Vec<f32> = (0..2).map(|j| (0..3).map(|i| x[i] * w[i * 2 + j]).sum()).collect();
    // x − b directly after the MatMul becomes its bias.
    let nodes =
        vec![node("MatMul", "fc", &["x", "W"], &["m"], vec![]), node("Sub", "sub", &["m", "b"], &["y"], vec![])];
    let g = import(&model(13, &[3], nodes, inits()))?;
    assert_eq!(kinds(&g), ["Dense"]);
    assert!(close(&run(&g, &x)?, &[mm[0] - 1.0, mm[1] + 1.0]));
    // A reader imported *before* the Add must still see the bias-free value.
    let nodes = vec![
        node("MatMul", "fc", &["x", "W"], &["m"], vec![]),
        node("Relu", "relu", &["m"], &["r"], vec![]),
        node("Add", "bias", &["m", "b"], &["biased"], vec![]),
        node("Add", "sum", &["biased", "r"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[3], nodes, inits()))?;
    assert_eq!(kinds(&g), ["Dense", "Relu", "BatchNorm", "Add"]);
    let want: Vec<f32> = mm.iter().zip([1.0, -1.0]).map(|(a, b)| (a + b) + a.max(0.0)).collect();
    assert!(close(&run(&g, &x)?, &want), "{:?} vs {want:?}", run(&g, &x)?);
    Ok(())
}

// ---------------------------------------------------------------- Transpose, Cast

#[test]
fn transpose_keeps_the_batch_axis_and_moves_the_rest() -> Result<()> {
    let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
    // Identity on [N, F]; moving a size-1 axis of [N, C, 1, 1].
    let g =
        import(&model(13, &[6], vec![node("Transpose", "t", &["x"], &["y"], vec![a_ints("perm", &[0, 1])])], vec![]))?;
    assert_eq!(kinds(&g), Vec::<&str>::new());
    let nodes = vec![node("Transpose", "t", &["x"], &["y"], vec![a_ints("perm", &[0, 2, 1, 3])])];
    let g = import(&model(13, &[6, 1, 1], nodes, vec![]))?;
    assert_eq!(g.output_shape(), &[1, 6, 1]);
    assert_eq!(run(&g, &x)?, x);
    // Swapping H and W moves the elements: a moat Transpose.
    let nodes = vec![node("Transpose", "swap", &["x"], &["y"], vec![a_ints("perm", &[0, 1, 3, 2])])];
    let g = import(&model(13, &[1, 2, 3], nodes, vec![]))?;
    assert_eq!(g.nodes()[0].op, Op::Transpose(vec![0, 2, 1]));
    assert_eq!(run(&g, &x)?, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // The default (reversed) perm moves the batch axis: refused, naming the node.
    let e = error(&model(13, &[6], vec![node("Transpose", "swap", &["x"], &["y"], vec![])], vec![]));
    assert!(e.contains("'swap'") && e.contains("batch"), "{e}");
    // A constant transpose folds: PyTorch's `x @ W.T` without constant folding.
    let w = weights(2 * 3, 15);
    let nodes =
        vec![node("Transpose", "wt", &["W"], &["wt"], vec![]), node("MatMul", "mm", &["x", "wt"], &["y"], vec![])];
    let g = import(&model(13, &[3], nodes, vec![t_f32("W", &[2, 3], &w)]))?;
    assert_eq!(kinds(&g), ["Dense"]);
    let x = [1.0f32, 2.0, -1.0];
    let want: Vec<f32> = (0..2).map(|o| (0..3).map(|i| w[o * 3 + i] * x[i]).sum()).collect();
    assert!(close(&run(&g, &x)?, &want));
    Ok(())
}

#[test]
fn cast_of_computed_values_to_float_only() -> Result<()> {
    let g = import(&model(13, &[3], vec![node("Cast", "c", &["x"], &["y"], vec![a_int("to", 1)])], vec![]))?;
    assert_eq!(kinds(&g), Vec::<&str>::new());
    let e = error(&model(13, &[3], vec![node("Cast", "c", &["x"], &["y"], vec![a_int("to", 7)])], vec![]));
    assert!(e.contains("'c'") && e.contains("FLOAT"), "{e}");
    // A float constant cast to int64 feeds a Reshape.
    let nodes = vec![
        node("Cast", "c", &["spec_f"], &["spec"], vec![a_int("to", 7)]),
        node("Reshape", "rs", &["x", "spec"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[2, 3], nodes, vec![t_f32("spec_f", &[2], &[0.0, -1.9])]))?;
    assert_eq!(g.output_shape(), &[6]);
    Ok(())
}
