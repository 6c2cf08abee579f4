//! Hand-built ONNX protos for each import feature: the imported graph must compute what the
//! ONNX semantics say (checked against direct computations or equivalent moat graphs), and
//! unsupported constructs must fail with errors naming the op and node.

mod onnx_util;

use moat_nn::onnx::{self, proto::TensorProto};
use moat_nn::{Conv2d, Graph, NnError, Node, Op, Pool, Result, Tensor, ValueId};
use onnx_util::*;

/// y = x · B for x [k], B [k, m] row-major.
fn vec_mat(x: &[f32], b: &[f32], m: usize) -> Vec<f32> {
    (0..m).map(|j| x.iter().enumerate().map(|(i, v)| v * b[i * m + j]).sum()).collect()
}

// ---------------------------------------------------------------- Gemm / MatMul

#[test]
fn gemm_alpha_beta_and_trans_b() -> Result<()> {
    let (k, m) = (3, 2);
    let b = weights(k * m, 1);
    let c = [0.25f32, -0.75];
    let x = [0.5f32, -1.0, 2.0];
    // transB = 0: B is [K, M].
    let gemm = node("Gemm", "fc", &["x", "B", "C"], &["y"], vec![a_float("alpha", 0.5), a_float("beta", 2.0)]);
    let g = import(&model(13, &[3], vec![gemm], vec![t_f32("B", &[3, 2], &b), t_f32("C", &[2], &c)]))?;
    let want: Vec<f32> = vec_mat(&x, &b, m).iter().zip(&c).map(|(v, c)| 0.5 * v + 2.0 * c).collect();
    assert!(close(&run(&g, &x)?, &want), "{:?} vs {want:?}", run(&g, &x)?);
    assert_eq!(kinds(&g), ["Dense"]);
    assert_eq!(g.nodes()[0].name, "fc");
    // transB = 1: B is [M, K]; C as [1, M] and as a scalar.
    let bt: Vec<f32> = (0..m).flat_map(|j| (0..k).map(move |i| (i, j))).map(|(i, j)| b[i * m + j]).collect();
    for (cdims, cdata, cwant) in
        [(vec![1, 2], vec![0.25, -0.75], vec![0.25, -0.75]), (vec![], vec![1.5], vec![1.5, 1.5])]
    {
        let gemm = node("Gemm", "fc", &["x", "B", "C"], &["y"], vec![a_int("transB", 1)]);
        let g = import(&model(9, &[3], vec![gemm], vec![t_f32("B", &[2, 3], &bt), t_f32("C", &cdims, &cdata)]))?;
        let want: Vec<f32> = vec_mat(&x, &b, m).iter().zip(&cwant).map(|(v, c)| v + c).collect();
        assert!(close(&run(&g, &x)?, &want));
    }
    // No C (optional from opset 11).
    let gemm = node("Gemm", "fc", &["x", "B"], &["y"], vec![]);
    let g = import(&model(13, &[3], vec![gemm], vec![t_f32("B", &[3, 2], &b)]))?;
    assert!(close(&run(&g, &x)?, &vec_mat(&x, &b, m)));
    // transA = 1 would put the batch on the second axis.
    let gemm = node("Gemm", "fc", &["x", "B"], &["y"], vec![a_int("transA", 1)]);
    let e = error(&model(13, &[3], vec![gemm], vec![t_f32("B", &[3, 2], &b)]));
    assert!(e.contains("transA") && e.contains("'fc'"), "{e}");
    // A C that does not broadcast per output.
    let gemm = node("Gemm", "fc", &["x", "B", "C"], &["y"], vec![]);
    let e = error(&model(13, &[3], vec![gemm], vec![t_f32("B", &[3, 2], &b), t_f32("C", &[3], &[0.0; 3])]));
    assert!(e.contains("'fc'") && e.contains("C"), "{e}");
    Ok(())
}

#[test]
fn matmul_add_fuses_into_dense() -> Result<()> {
    let w = weights(4 * 3, 2);
    let bias = [0.1f32, -0.2, 0.3];
    let x = [1.0f32, -0.5, 0.25, 2.0];
    let xw = vec_mat(&x, &w, 3);
    let inits = || vec![t_f32("W", &[4, 3], &w), t_f32("b", &[3], &bias)];
    // Bias on either side of the Add.
    for inputs in [["mm", "b"], ["b", "mm"]] {
        let nodes =
            vec![node("MatMul", "fc", &["x", "W"], &["mm"], vec![]), node("Add", "fc.bias", &inputs, &["y"], vec![])];
        let g = import(&model(13, &[4], nodes, inits()))?;
        assert_eq!(kinds(&g), ["Dense"], "the Add is folded");
        let Op::Dense(d) = &g.nodes()[0].op else { unreachable!() };
        assert_eq!(d.bias, bias);
        let want: Vec<f32> = xw.iter().zip(&bias).map(|(a, b)| a + b).collect();
        assert!(close(&run(&g, &x)?, &want));
    }
    // A MatMul without Add gets a zero bias.
    let g = import(&model(13, &[4], vec![node("MatMul", "fc", &["x", "W"], &["y"], vec![])], inits()))?;
    let Op::Dense(d) = &g.nodes()[0].op else { unreachable!() };
    assert_eq!(d.bias, [0.0; 3]);
    assert!(close(&run(&g, &x)?, &xw));
    // When the MatMul output is read elsewhere too, the bias cannot be folded: it becomes an
    // exact per-channel add, and the other reader still sees the bias-free value.
    let nodes = vec![
        node("MatMul", "fc", &["x", "W"], &["mm"], vec![]),
        node("Add", "fc.bias", &["mm", "b"], &["biased"], vec![]),
        node("Relu", "relu", &["mm"], &["r"], vec![]),
        node("Add", "sum", &["biased", "r"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[4], nodes, inits()))?;
    assert_eq!(kinds(&g), ["Dense", "BatchNorm", "Relu", "Add"]);
    let want: Vec<f32> = xw.iter().zip(&bias).map(|(a, b)| (a + b) + a.max(0.0)).collect();
    assert!(close(&run(&g, &x)?, &want), "{:?} vs {want:?}", run(&g, &x)?);
    // A constant that is not per-channel is refused.
    let nodes =
        vec![node("MatMul", "fc", &["x", "W"], &["mm"], vec![]), node("Add", "odd", &["mm", "b"], &["y"], vec![])];
    let e = error(&model(13, &[4], nodes, vec![t_f32("W", &[4, 3], &w), t_f32("b", &[2, 3], &[0.0; 6])]));
    assert!(e.contains("'odd'") && e.contains("per-channel"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- Conv, Pad, pools

/// A moat graph with one convolution, the reference for the imported ones.
fn conv_graph(
    weight: &[f32],
    bias: &[f32],
    shape: [usize; 4],
    input: &[usize],
    stride: usize,
    padding: [usize; 4],
) -> Result<Graph> {
    let conv = Conv2d {
        weight: Tensor::new(shape.to_vec(), weight.to_vec())?,
        bias: bias.to_vec(),
        stride: [stride; 2],
        padding,
        group: 1,
    };
    Graph::new(
        "ref",
        input.to_vec(),
        vec![Node { name: "c".into(), op: Op::Conv2d(conv), inputs: vec![ValueId::INPUT] }],
        ValueId(1),
    )
}

#[test]
fn pad_folds_into_conv_in_opset_9_and_13_forms() -> Result<()> {
    let w = weights(3 * 2 * 3 * 3, 3);
    let b = [0.5f32, -0.5, 0.0];
    let x = &inputs(&[2, 5, 6], 1, 4)[0];
    let reference = conv_graph(&w, &b, [3, 2, 3, 3], &[2, 5, 6], 1, [2, 1, 1, 3])?;
    let inits = || vec![t_f32_raw("W", &[3, 2, 3, 3], &w), t_f32("B", &[3], &b)];
    // Opset 9: pads attribute; the Conv has pads of its own, which add up.
    let nodes = vec![
        node("Pad", "pad", &["x"], &["p"], vec![a_ints("pads", &[0, 0, 1, 0, 0, 0, 0, 2]), a_str("mode", "constant")]),
        node(
            "Conv",
            "conv",
            &["p", "W", "B"],
            &["y"],
            vec![a_ints("pads", &[1, 1, 1, 1]), a_ints("kernel_shape", &[3, 3])],
        ),
    ];
    let g = import(&model(9, &[2, 5, 6], nodes, inits()))?;
    assert_eq!(kinds(&g), ["Conv2d"]);
    assert_eq!(run(&g, x)?, run(&reference, x)?);
    // Opset 13: pads as an int64 input, constant_value as an explicit zero.
    let nodes = vec![
        node("Pad", "pad", &["x", "pads", "zero"], &["p"], vec![]),
        node("Conv", "conv", &["p", "W", "B"], &["y"], vec![a_ints("pads", &[1, 1, 1, 1])]),
    ];
    let mut init = inits();
    init.push(t_i64("pads", &[8], &[0, 0, 1, 0, 0, 0, 0, 2]));
    init.push(t_f32("zero", &[], &[0.0]));
    let g = import(&model(13, &[2, 5, 6], nodes, init))?;
    assert_eq!(run(&g, x)?, run(&reference, x)?);
    // Opset 18: pads for the listed axes only.
    let nodes = vec![
        node("Pad", "pad", &["x", "pads", "", "axes"], &["p"], vec![]),
        node("Conv", "conv", &["p", "W", "B"], &["y"], vec![a_ints("pads", &[1, 1, 1, 1])]),
    ];
    let mut init = inits();
    init.push(t_i64("pads", &[4], &[1, 0, 0, 2]));
    init.push(t_i64("axes", &[2], &[-2, -1]));
    let g = import(&model(18, &[2, 5, 6], nodes, init))?;
    assert_eq!(run(&g, x)?, run(&reference, x)?);
    Ok(())
}

#[test]
fn pad_errors_name_the_node() {
    let w = weights(2 * 2 * 3 * 3, 3);
    let conv = || node("Conv", "conv", &["p", "W"], &["y"], vec![]);
    let pad = |attrs| node("Pad", "pad1", &["x"], &["p"], attrs);
    let cases = [
        (vec![pad(vec![a_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), a_float("value", 1.0)]), conv()], "zero padding"),
        (vec![pad(vec![a_ints("pads", &[0, 1, 0, 0, 0, 0, 0, 0])]), conv()], "spatial"),
        (vec![pad(vec![a_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]), a_str("mode", "reflect")]), conv()], "reflect"),
        (
            vec![
                pad(vec![a_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1])]),
                node("MaxPool", "mp", &["p"], &["y"], vec![a_ints("kernel_shape", &[2, 2])]),
            ],
            "Pad node 'pad1'",
        ),
    ];
    for (nodes, needle) in cases {
        let e = error(&model(9, &[2, 5, 5], nodes, vec![t_f32("W", &[2, 2, 3, 3], &w)]));
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn conv_attributes() -> Result<()> {
    let w = weights(2 * 3 * 3 * 3, 8);
    let x = &inputs(&[3, 7, 8], 1, 9)[0];
    let conv = |attrs| node("Conv", "c1", &["x", "W"], &["y"], attrs);
    let m = |attrs| model(13, &[3, 7, 8], vec![conv(attrs)], vec![t_f32("W", &[2, 3, 3, 3], &w)]);
    // SAME_UPPER / SAME_LOWER with stride 2: out = ceil(in / 2); the odd pad goes at the end /
    // at the beginning. 7 → 4: total 2 (1, 1); 8 → 4: total 1.
    let g = import(&m(vec![a_str("auto_pad", "SAME_UPPER"), a_ints("strides", &[2, 2])]))?;
    assert_eq!(run(&g, x)?, run(&conv_graph(&w, &[0.0; 2], [2, 3, 3, 3], &[3, 7, 8], 2, [1, 0, 1, 1])?, x)?);
    assert_eq!(g.output_shape(), &[2, 4, 4]);
    let g = import(&m(vec![a_str("auto_pad", "SAME_LOWER"), a_ints("strides", &[2, 2])]))?;
    assert_eq!(run(&g, x)?, run(&conv_graph(&w, &[0.0; 2], [2, 3, 3, 3], &[3, 7, 8], 2, [1, 1, 1, 0])?, x)?);
    let g = import(&m(vec![a_str("auto_pad", "VALID")]))?;
    assert_eq!(g.output_shape(), &[2, 5, 6]);
    // Unsupported configurations.
    for (attrs, needle) in [
        (vec![a_int("group", 3)], "group"),
        (vec![a_ints("dilations", &[2, 2])], "dilation"),
        (vec![a_ints("kernel_shape", &[5, 5])], "kernel_shape"),
        (vec![a_str("auto_pad", "SAME_WHATEVER")], "auto_pad"),
    ] {
        let e = error(&m(attrs));
        assert!(e.contains(needle) && e.contains("'c1'"), "{needle}: {e}");
    }
    // Weights computed from the input are not supported.
    let e = error(&model(13, &[3, 7, 8], vec![node("Conv", "c1", &["x", "x"], &["y"], vec![])], vec![]));
    assert!(e.contains("initializer or a Constant"), "{e}");
    Ok(())
}

#[test]
fn average_pool_padding_rules() -> Result<()> {
    let pool = |attrs| node("AveragePool", "avg", &["x"], &["y"], attrs);
    let m = |attrs| model(13, &[1, 4, 4], vec![pool(attrs)], vec![]);
    let k = || a_ints("kernel_shape", &[3, 3]);
    // count_include_pad = 0 (the default) with padding: refused with an explanation.
    let e = error(&m(vec![k(), a_ints("pads", &[1, 1, 1, 1])]));
    assert!(e.contains("count_include_pad") && e.contains("'avg'"), "{e}");
    // count_include_pad = 1: padded zeros count, as in moat.
    let g = import(&m(vec![k(), a_ints("pads", &[1, 1, 1, 1]), a_int("count_include_pad", 1)]))?;
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let y = run(&g, &x)?;
    // Corner: (0 + 1 + 4 + 5) / 9.
    assert!((y[0] - 10.0 / 9.0).abs() < 1e-6, "{y:?}");
    // No padding: count_include_pad does not matter.
    let g = import(&m(vec![k()]))?;
    assert!((run(&g, &x)?[0] - 5.0).abs() < 1e-6);
    // A Pad before an AveragePool is real zeros, whatever count_include_pad says.
    let nodes =
        vec![node("Pad", "pad", &["x", "pads"], &["p"], vec![]), node("AveragePool", "avg", &["p"], &["y"], vec![k()])];
    let g = import(&model(13, &[1, 4, 4], nodes, vec![t_i64("pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1])]))?;
    assert!((run(&g, &x)?[0] - 10.0 / 9.0).abs() < 1e-6);
    // ceil_mode = 1 is accepted only when it changes nothing: (4 - 3) / 1 is exact, (4 - 3) / 2 is not.
    assert!(import(&m(vec![k(), a_int("ceil_mode", 1)])).is_ok());
    let e = error(&m(vec![k(), a_int("ceil_mode", 1), a_ints("strides", &[2, 2])]));
    assert!(e.contains("ceil_mode"), "{e}");
    Ok(())
}

#[test]
fn max_pool_and_global_average_pool() -> Result<()> {
    // GlobalAveragePool → 1×1 Conv needs moat's [C] back in [C, 1, 1] layout: a Reshape.
    let w = weights(3 * 2, 5);
    let nodes = vec![
        node(
            "MaxPool",
            "mp",
            &["x"],
            &["m"],
            vec![a_ints("kernel_shape", &[2, 2]), a_ints("strides", &[2, 2]), a_ints("pads", &[0, 0, 1, 1])],
        ),
        node("GlobalAveragePool", "gap", &["m"], &["g"], vec![]),
        node("Conv", "proj", &["g", "W"], &["c"], vec![]),
        node("Flatten", "flat", &["c"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[2, 3, 3], nodes, vec![t_f32("W", &[3, 2, 1, 1], &w)]))?;
    assert_eq!(kinds(&g), ["MaxPool", "GlobalAvgPool", "Reshape", "Conv2d", "Flatten"]);
    assert_eq!(g.nodes()[2].name, "proj/reshape");
    let x: Vec<f32> = (0..18).map(|v| (v as f32 * 0.37).sin()).collect();
    // Reference: max over 2×2 windows of the 3×3 maps padded at the end (4 windows), mean, 1×1 conv.
    let mut mean = [0.0f32; 2];
    for (c, m) in mean.iter_mut().enumerate() {
        let at = |i: usize, j: usize| x[c * 9 + i * 3 + j];
        let mut total = 0.0;
        for (i0, j0) in [(0, 0), (0, 2), (2, 0), (2, 2)] {
            let mut best = f32::NEG_INFINITY;
            for i in i0..(i0 + 2).min(3) {
                for j in j0..(j0 + 2).min(3) {
                    best = best.max(at(i, j));
                }
            }
            total += best;
        }
        *m = total / 4.0;
    }
    let want: Vec<f32> = (0..3).map(|o| w[o * 2] * mean[0] + w[o * 2 + 1] * mean[1]).collect();
    assert!(close(&run(&g, &x)?, &want), "{:?} vs {want:?}", run(&g, &x)?);
    // MaxPool's Indices output must be unused.
    let nodes = vec![
        node("MaxPool", "mp", &["x"], &["m", "idx"], vec![a_ints("kernel_shape", &[2, 2])]),
        node("Add", "add", &["m", "idx"], &["y"], vec![]),
    ];
    let e = error(&model(13, &[2, 3, 3], nodes, vec![]));
    assert!(e.contains("'mp'") && e.contains("idx"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- Relu, Clip, BatchNorm

#[test]
fn clip_is_relu_in_opset_9_and_13_forms() -> Result<()> {
    let x = [-2.0f32, -0.0, 0.5, 3.0, 1e30];
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    // Opset 9: min / max attributes.
    let g = import(&model(9, &[5], vec![node("Clip", "clip", &["x"], &["y"], vec![a_float("min", 0.0)])], vec![]))?;
    assert_eq!(kinds(&g), ["Relu"]);
    assert_eq!(g.nodes()[0].name, "clip");
    assert_eq!(run(&g, &x)?, want);
    let inf = vec![a_float("min", 0.0), a_float("max", f32::INFINITY)];
    assert_eq!(kinds(&import(&model(9, &[5], vec![node("Clip", "clip", &["x"], &["y"], inf)], vec![]))?), ["Relu"]);
    // Opset 13: bounds as inputs, max omitted (empty name) or absent, min from a Constant.
    for inputs in [&["x", "zero", ""][..], &["x", "zero"][..]] {
        let nodes = vec![
            node("Constant", "zero_c", &[], &["zero"], vec![a_tensor("value", t_f32("", &[], &[0.0]))]),
            node("Clip", "clip", inputs, &["y"], vec![]),
        ];
        let g = import(&model(13, &[5], nodes, vec![]))?;
        assert_eq!(run(&g, &x)?, want);
    }
    // ReLU6 (both bounds finite), as attributes (opset 9) or inputs (opset 13): a moat Clip.
    let relu6: Vec<f32> = x.iter().map(|v| v.clamp(0.0, 6.0)).collect();
    for m in [
        model(
            9,
            &[5],
            vec![node("Clip", "relu6", &["x"], &["y"], vec![a_float("min", 0.0), a_float("max", 6.0)])],
            vec![],
        ),
        model(
            13,
            &[5],
            vec![node("Clip", "relu6", &["x", "lo", "hi"], &["y"], vec![])],
            vec![t_f32("lo", &[], &[0.0]), t_f32("hi", &[], &[6.0])],
        ),
    ] {
        let g = import(&m)?;
        assert_eq!(g.nodes()[0].op, Op::Clip { min: 0.0, max: 6.0 });
        assert_eq!(run(&g, &x)?, relu6);
    }
    // Refused: no lower bound, opset-13 bounds given as attributes.
    let cases = [
        model(9, &[5], vec![node("Clip", "relu6", &["x"], &["y"], vec![a_float("max", 6.0)])], vec![]),
        model(13, &[5], vec![node("Clip", "relu6", &["x"], &["y"], vec![a_float("min", 0.0)])], vec![]),
    ];
    for m in cases {
        let e = error(&m);
        assert!(e.contains("'relu6'") && e.contains("Clip"), "{e}");
    }
    Ok(())
}

#[test]
fn batch_normalization_opset_9_and_15() -> Result<()> {
    let stats = |name: &str, v: &[f32]| t_f32(name, &[2], v);
    let inits =
        || vec![stats("s", &[2.0, 0.5]), stats("b", &[1.0, -1.0]), stats("m", &[0.1, 0.2]), stats("v", &[4.0, 1.0])];
    let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
    for opset in [9, 15] {
        let bn = node("BatchNormalization", "bn", &["x", "s", "b", "m", "v"], &["y"], vec![a_float("epsilon", 0.0)]);
        let g = import(&model(opset, &[2, 2, 2], vec![bn], inits()))?;
        let want: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| if i < 4 { (v - 0.1) + 1.0 } else { 0.5 * (v - 0.2) - 1.0 }).collect();
        assert!(close(&run(&g, &x)?, &want), "{:?}", run(&g, &x)?);
    }
    let bn = node("BatchNormalization", "bn", &["x", "s", "b", "m", "v"], &["y"], vec![a_int("training_mode", 1)]);
    let e = error(&model(15, &[2, 2, 2], vec![bn], inits()));
    assert!(e.contains("training_mode") && e.contains("'bn'"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- shapes: Flatten, Reshape, Squeeze

#[test]
fn reshape_handles_zero_minus_one_and_the_batch() -> Result<()> {
    let cases: [(&[i64], Option<Vec<usize>>); 9] = [
        (&[0, -1], Some(vec![48])),
        (&[-1, 48], Some(vec![48])),
        (&[0, 0, -1], Some(vec![3, 16])),
        (&[1, 12, 4], Some(vec![12, 4])),
        (&[0, 6, 0, -1], Some(vec![6, 4, 2])),
        (&[2, -1], None),     // the first axis is not the batch
        (&[-1, 5], None),     // 48 per sample cannot become 5: would mix samples
        (&[0, -1, -1], None), // two -1
        (&[0, 7, -1], None),  // 48 is not a multiple of 7
    ];
    let x: Vec<f32> = (0..48).map(|v| v as f32).collect();
    for (spec, want) in cases {
        let nodes = vec![node("Reshape", "rs", &["x", "shape"], &["y"], vec![])];
        let m = model(13, &[3, 4, 4], nodes, vec![t_i64("shape", &[spec.len() as i64], spec)]);
        match want {
            Some(shape) => {
                let g = import(&m)?;
                assert_eq!(g.output_shape(), shape.as_slice(), "{spec:?}");
                assert_eq!(run(&g, &x)?, x, "a reshape keeps the elements in order");
            }
            None => {
                let e = error(&m);
                assert!(e.contains("'rs'") && e.contains("Reshape"), "{spec:?}: {e}");
            }
        }
    }
    // allowzero = 1 makes 0 a real (empty) dimension.
    let nodes = vec![node("Reshape", "rs", &["x", "shape"], &["y"], vec![a_int("allowzero", 1)])];
    assert!(import(&model(14, &[3, 4, 4], nodes, vec![t_i64("shape", &[2], &[0, -1])])).is_err());
    // Shape from a Constant node (value tensor), and a shape computed at run time is refused.
    let nodes = vec![
        node("Constant", "k", &[], &["shape"], vec![a_tensor("value", t_i64("", &[3], &[0, 12, 4]))]),
        node("Reshape", "rs", &["x", "shape"], &["y"], vec![]),
    ];
    assert_eq!(import(&model(13, &[3, 4, 4], nodes, vec![]))?.output_shape(), &[12, 4]);
    let nodes = vec![node("Reshape", "rs", &["x", "x"], &["y"], vec![])];
    assert!(error(&model(13, &[3, 4, 4], nodes, vec![])).contains("initializer or a Constant"));
    Ok(())
}

#[test]
fn flatten_squeeze_unsqueeze_across_opsets() -> Result<()> {
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    // Flatten axis 1 (default, explicit, negative) only.
    for attrs in [vec![], vec![a_int("axis", 1)], vec![a_int("axis", -3)]] {
        let g = import(&model(13, &[3, 2, 2], vec![node("Flatten", "f", &["x"], &["y"], attrs)], vec![]))?;
        assert_eq!(g.output_shape(), &[12]);
    }
    let e = error(&model(13, &[3, 2, 2], vec![node("Flatten", "f", &["x"], &["y"], vec![a_int("axis", 2)])], vec![]));
    assert!(e.contains("axis") && e.contains("'f'"), "{e}");
    // Squeeze/Unsqueeze: axes attribute before opset 13, input from 13.
    let old = vec![
        node("Unsqueeze", "u", &["x"], &["w"], vec![a_ints("axes", &[2, -1])]),
        node("Squeeze", "s", &["w"], &["y"], vec![a_ints("axes", &[-1])]),
    ];
    let g = import(&model(11, &[12], old, vec![]))?;
    assert_eq!(g.output_shape(), &[12, 1]);
    assert_eq!(run(&g, &x)?, x);
    let new = vec![node("Unsqueeze", "u", &["x", "a"], &["w"], vec![]), node("Squeeze", "s", &["w"], &["y"], vec![])];
    let g = import(&model(13, &[12], new, vec![t_i64("a", &[2], &[2, 3])]))?;
    assert_eq!(g.output_shape(), &[12]);
    let e =
        error(&model(13, &[12], vec![node("Squeeze", "s", &["x", "a"], &["y"], vec![])], vec![t_i64("a", &[1], &[0])]));
    assert!(e.contains("batch"), "{e}");
    Ok(())
}

#[test]
fn softmax_axis_semantics_by_opset() -> Result<()> {
    let x: Vec<f32> = (0..8).map(|v| v as f32 * 0.3).collect();
    let soft = |v: &[f32]| {
        let e: Vec<f32> = v.iter().map(|a| (a - 2.1).exp()).collect();
        let s: f32 = e.iter().sum();
        e.into_iter().map(|a| a / s).collect::<Vec<f32>>()
    };
    // Before opset 13, axis = 1 (the default) means over all per-sample elements.
    let g = import(&model(9, &[2, 2, 2], vec![node("Softmax", "sm", &["x"], &["y"], vec![])], vec![]))?;
    assert!(close(&run(&g, &x)?, &soft(&x)));
    assert_eq!(g.output_shape(), &[8]);
    // From opset 13 the default is the last axis, which on a 4-D value is not per sample.
    let e = error(&model(13, &[2, 2, 2], vec![node("Softmax", "sm", &["x"], &["y"], vec![])], vec![]));
    assert!(e.contains("softmax") && e.contains("'sm'"), "{e}");
    let g = import(&model(13, &[8], vec![node("Softmax", "sm", &["x"], &["y"], vec![])], vec![]))?;
    assert_eq!(kinds(&g), ["Softmax"]);
    assert!(close(&run(&g, &x)?, &soft(&x)));
    Ok(())
}

// ---------------------------------------------------------------- Constant, Dropout, Identity

#[test]
fn constants_feed_weights_and_shapes() -> Result<()> {
    let w = weights(6, 3);
    let nodes = vec![
        node("Constant", "wc", &[], &["W"], vec![a_tensor("value", t_f32_raw("", &[3, 2], &w))]),
        node("Constant", "bc", &[], &["b"], vec![AttrList::floats("value_floats", &[1.0, 2.0])]),
        node("Constant", "sc", &[], &["shape"], vec![a_ints("value_ints", &[0, 2, 1])]),
        node("Gemm", "fc", &["x", "W", "b"], &["h"], vec![]),
        node("Reshape", "rs", &["h", "shape"], &["y"], vec![]),
    ];
    let g = import(&model(13, &[3], nodes, vec![]))?;
    assert_eq!(g.output_shape(), &[2, 1]);
    let x = [1.0f32, 2.0, 3.0];
    let want: Vec<f32> = vec_mat(&x, &w, 2).iter().zip([1.0, 2.0]).map(|(a, b)| a + b).collect();
    assert!(close(&run(&g, &x)?, &want));
    Ok(())
}

/// Attribute builders not in the shared helpers.
struct AttrList;
impl AttrList {
    fn floats(name: &str, v: &[f32]) -> moat_nn::onnx::proto::AttributeProto {
        moat_nn::onnx::proto::AttributeProto {
            name: name.into(),
            r#type: Some(moat_nn::onnx::proto::attribute_type::FLOATS),
            floats: v.to_vec(),
            ..Default::default()
        }
    }
}

#[test]
fn dropout_and_identity_pass_through() -> Result<()> {
    let x = [-1.0f32, 2.0];
    // Opset 9: ratio attribute, optional mask output left unused.
    let nodes = vec![
        node("Dropout", "drop", &["x"], &["d", "mask"], vec![a_float("ratio", 0.5)]),
        node("Identity", "id", &["d"], &["i"], vec![]),
        node("Relu", "relu", &["i"], &["y"], vec![]),
    ];
    let g = import(&model(9, &[2], nodes, vec![]))?;
    assert_eq!(kinds(&g), ["Relu"]);
    assert_eq!(run(&g, &x)?, [0.0, 2.0]);
    // Opset 12+: ratio and training_mode inputs; training mode is refused.
    let nodes = vec![node("Dropout", "drop", &["x", "r", "t"], &["y"], vec![])];
    let ok =
        TensorProto { dims: vec![], data_type: 9, raw_data: Some(vec![0]), name: "t".into(), ..Default::default() };
    let train = TensorProto { raw_data: Some(vec![1]), ..ok.clone() };
    assert!(import(&model(13, &[2], nodes.clone(), vec![t_f32("r", &[], &[0.1]), ok])).is_ok());
    let e = error(&model(13, &[2], nodes, vec![t_f32("r", &[], &[0.1]), train]));
    assert!(e.contains("training_mode") && e.contains("'drop'"), "{e}");
    // A used mask is refused.
    let nodes = vec![
        node("Dropout", "drop", &["x"], &["d", "mask"], vec![]),
        node("Add", "add", &["d", "mask"], &["y"], vec![]),
    ];
    assert!(error(&model(9, &[2], nodes, vec![])).contains("mask"));
    Ok(())
}

// ---------------------------------------------------------------- residuals, names, pruning

#[test]
fn residual_add_unique_names_and_dead_nodes() -> Result<()> {
    let nodes = vec![
        node("Relu", "dup", &["x"], &["a"], vec![]),
        node("Relu", "dup", &["a"], &["b"], vec![]),
        node("Relu", "", &["b"], &["c"], vec![]),
        node("Add", "res", &["c", "x"], &["y"], vec![]),
        node("Relu", "dead", &["x"], &["unused"], vec![]),
    ];
    let g = import(&model(13, &[3], nodes, vec![]))?;
    let names: Vec<&str> = g.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["dup", "dup_1", "Relu_2", "res"], "unique names, dead node dropped");
    assert_eq!(run(&g, &[-1.0, 0.5, 2.0])?, [-1.0, 1.0, 4.0]);
    Ok(())
}

#[test]
fn initializer_encodings_agree() -> Result<()> {
    let w = weights(4, 6);
    let doubles: Vec<u8> = w.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect();
    let encodings = [
        t_f32("W", &[2, 2], &w),
        t_f32_raw("W", &[2, 2], &w),
        TensorProto {
            name: "W".into(),
            dims: vec![2, 2],
            data_type: 11,
            raw_data: Some(doubles),
            ..Default::default()
        },
        TensorProto {
            name: "W".into(),
            dims: vec![2, 2],
            data_type: 11,
            double_data: w.iter().map(|&v| f64::from(v)).collect(),
            ..Default::default()
        },
    ];
    let mut outputs = vec![];
    for t in encodings {
        let g = import(&model(13, &[2], vec![node("MatMul", "mm", &["x", "W"], &["y"], vec![])], vec![t]))?;
        outputs.push(run(&g, &[0.3, -0.7])?);
    }
    assert!(outputs.windows(2).all(|p| p[0] == p[1]), "{outputs:?}");
    // Reshape shapes as raw int64 and as int32.
    for t in [
        TensorProto {
            name: "s".into(),
            dims: vec![2],
            data_type: 7,
            raw_data: Some([0i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        },
        TensorProto { name: "s".into(), dims: vec![2], data_type: 6, int32_data: vec![0, -1], ..Default::default() },
    ] {
        let g = import(&model(13, &[2, 3], vec![node("Reshape", "rs", &["x", "s"], &["y"], vec![])], vec![t]))?;
        assert_eq!(g.output_shape(), &[6]);
    }
    // External data is refused clearly.
    let mut ext = t_f32("W", &[2, 2], &[]);
    ext.data_location = 1;
    let e = error(&model(13, &[2], vec![node("MatMul", "mm", &["x", "W"], &["y"], vec![])], vec![ext]));
    assert!(e.contains("external"), "{e}");
    Ok(())
}

// ---------------------------------------------------------------- inputs and opsets

#[test]
fn graph_input_rules() -> Result<()> {
    let relu = || vec![node("Relu", "r", &["x"], &["y"], vec![])];
    // Batch 1 is accepted; a fixed batch of 4 is not.
    let mut m = model(13, &[3], relu(), vec![]);
    if let Some(g) = m.graph.as_mut() {
        g.input[0] = info("x", Some(1), &[3]);
    }
    assert_eq!(import(&m)?.input_shape(), &[3]);
    if let Some(g) = m.graph.as_mut() {
        g.input[0] = info("x", Some(4), &[3]);
    }
    assert!(error(&m).contains("batch"));
    // Initializers listed as graph inputs (IR < 4) are skipped when looking for the input.
    let mut m = model(
        9,
        &[2],
        vec![node("MatMul", "mm", &["x", "W"], &["y"], vec![])],
        vec![t_f32("W", &[2, 2], &[1.0, 0.0, 0.0, 1.0])],
    );
    if let Some(g) = m.graph.as_mut() {
        g.input.insert(0, info("W", Some(2), &[2]));
    }
    assert_eq!(run(&import(&m)?, &[3.0, 4.0])?, [3.0, 4.0]);
    // A rank-1 input has no batch dimension.
    let mut m = model(13, &[], relu(), vec![]);
    if let Some(g) = m.graph.as_mut() {
        g.input[0] = info("x", None, &[]);
    }
    assert!(error(&m).contains("batch"));
    Ok(())
}

#[test]
fn leaky_relu_imports_with_its_slope() -> Result<()> {
    let x = [-2.0f32, -0.5, 0.0, 3.0];
    let g =
        import(&model(13, &[4], vec![node("LeakyRelu", "lr", &["x"], &["y"], vec![a_float("alpha", 0.2)])], vec![]))?;
    assert_eq!(g.nodes()[0].op, Op::LeakyRelu { alpha: 0.2 });
    assert_eq!(run(&g, &x)?, [-0.4, -0.1, 0.0, 3.0]);
    // The ONNX default slope is 0.01.
    let g = import(&model(9, &[4], vec![node("LeakyRelu", "lr", &["x"], &["y"], vec![])], vec![]))?;
    assert_eq!(g.nodes()[0].op, Op::LeakyRelu { alpha: 0.01 });
    Ok(())
}

#[test]
fn approximated_activations_import_with_their_attributes() -> Result<()> {
    let x = [-4.0f32, -1.0, 0.0, 2.0];
    let g = import(&model(
        13,
        &[4],
        vec![node("HardSigmoid", "hs", &["x"], &["y"], vec![a_float("alpha", 0.25), a_float("beta", 0.4)])],
        vec![],
    ))?;
    assert_eq!(g.nodes()[0].op, Op::HardSigmoid { alpha: 0.25, beta: 0.4 });
    assert_eq!(run(&g, &x)?, [0.0, 0.15, 0.4, 0.9]);
    // ONNX defaults: alpha 0.2, beta 0.5.
    let g = import(&model(9, &[4], vec![node("HardSigmoid", "hs", &["x"], &["y"], vec![])], vec![]))?;
    assert_eq!(g.nodes()[0].op, Op::HardSigmoid { alpha: 0.2, beta: 0.5 });
    for (op, expected, exact) in [
        ("HardSwish", Op::HardSwish, [0.0, -1.0 / 3.0, 0.0, 5.0 / 3.0]),
        ("Sigmoid", Op::Sigmoid, [0.017_986_21, 0.268_941_43, 0.5, 0.880_797_1]),
        ("Tanh", Op::Tanh, [-0.999_329_3, -0.761_594_2, 0.0, 0.964_027_6]),
    ] {
        let g = import(&model(14, &[4], vec![node(op, "act", &["x"], &["y"], vec![])], vec![]))?;
        assert_eq!(g.nodes()[0].op, expected);
        let y = run(&g, &x)?;
        assert!(y.iter().zip(exact).all(|(a, b)| (a - b).abs() < 1e-6), "{op}: {y:?}");
    }
    // A non-finite attribute is refused, naming the node.
    let e = error(&model(
        13,
        &[4],
        vec![node("HardSigmoid", "gate", &["x"], &["y"], vec![a_float("alpha", f32::NAN)])],
        vec![],
    ));
    assert!(e.contains("'gate'") && e.contains("alpha"), "{e}");
    Ok(())
}

#[test]
fn silu_gelu_elu_import_from_their_ops_and_patterns() -> Result<()> {
    let x = [-3.0f32, -0.5, 0.0, 2.0];
    let silu = [-0.142_277_62, -0.188_770_33, 0.0, 1.761_594_2];
    let gelu = [-0.004_049_694, -0.154_268_77, 0.0, 1.954_499_7];
    let near = |y: &[f32], want: &[f32]| y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6);
    let one = |op: &str, opset: i64, attrs| model(opset, &[4], vec![node(op, "act", &["x"], &["y"], attrs)], vec![]);
    // SiLU: ONNX Swish (opset 24), and PyTorch's x * Sigmoid(x) (the gate is dropped).
    for m in [
        one("Swish", 24, vec![]),
        model(
            13,
            &[4],
            vec![node("Sigmoid", "gate", &["x"], &["s"], vec![]), node("Mul", "silu", &["s", "x"], &["y"], vec![])],
            vec![],
        ),
    ] {
        let g = import(&m)?;
        assert_eq!(kinds(&g), ["Silu"]);
        let y = run(&g, &x)?;
        assert!(near(&y, &silu), "{y:?}");
    }
    let e = error(&one("Swish", 24, vec![a_float("alpha", 2.0)]));
    assert!(e.contains("'act'") && e.contains("alpha = 2"), "{e}");
    // GELU: the opset-20 op, and the Erf pattern in PyTorch's form and with 0.5·x formed first.
    let consts = || {
        vec![
            t_f32("sqrt2", &[], &[std::f32::consts::SQRT_2]),
            t_f32("inv_sqrt2", &[], &[std::f32::consts::FRAC_1_SQRT_2]),
            t_f32("one", &[], &[1.0]),
            t_f32("half", &[], &[0.5]),
        ]
    };
    let pytorch = vec![
        node("Div", "div", &["x", "sqrt2"], &["d"], vec![]),
        node("Erf", "erf", &["d"], &["e"], vec![]),
        node("Add", "add", &["e", "one"], &["a"], vec![]),
        node("Mul", "mul", &["x", "a"], &["m"], vec![]),
        node("Mul", "mul_half", &["m", "half"], &["y"], vec![]),
    ];
    let half_first = vec![
        node("Mul", "half_x", &["half", "x"], &["h"], vec![]),
        node("Mul", "scale", &["inv_sqrt2", "x"], &["d"], vec![]),
        node("Erf", "erf", &["d"], &["e"], vec![]),
        node("Add", "add", &["one", "e"], &["a"], vec![]),
        node("Mul", "mul", &["a", "h"], &["y"], vec![]),
    ];
    for m in
        [one("Gelu", 20, vec![]), model(13, &[4], pytorch.clone(), consts()), model(13, &[4], half_first, consts())]
    {
        let g = import(&m)?;
        assert_eq!(kinds(&g), ["Gelu"]);
        let y = run(&g, &x)?;
        assert!(near(&y, &gelu), "{y:?}");
    }
    let e = error(&one("Gelu", 20, vec![a_str("approximate", "fast")]));
    assert!(e.contains("'act'") && e.contains("Gelu") && e.contains("approximate = 'fast'"), "{e}");
    // An Erf outside the pattern, or a pattern whose parts are read elsewhere, is refused.
    let e = error(&model(13, &[4], vec![node("Erf", "lonely", &["x"], &["y"], vec![])], vec![]));
    assert!(e.contains("'lonely'") && e.contains("GELU"), "{e}");
    let mut leaky = pytorch;
    leaky.push(node("Add", "peek", &["a", "a"], &["z"], vec![]));
    let e = error(&model(13, &[4], leaky, consts()));
    assert!(e.contains("'erf'") && e.contains("is read 3 times"), "{e}");
    // ELU with its alpha (default 1); an alpha beyond what the ring holds is refused.
    let g = import(&one("Elu", 9, vec![a_float("alpha", 0.5)]))?;
    assert_eq!(g.nodes()[0].op, Op::Elu { alpha: 0.5 });
    let y = run(&g, &x)?;
    assert!(near(&y, &[-0.475_106_47, -0.196_734_67, 0.0, 2.0]), "{y:?}");
    assert_eq!(import(&one("Elu", 13, vec![]))?.nodes()[0].op, Op::Elu { alpha: 1.0 });
    let e = error(&one("Elu", 13, vec![a_float("alpha", 100.0)]));
    assert!(e.contains("'act'") && e.contains("alpha = 100"), "{e}");
    Ok(())
}

#[test]
fn selu_gelu_tanh_softplus_softsign_import_with_their_attributes_and_round_trip() -> Result<()> {
    let x = [-3.0f32, -0.5, 0.0, 2.0];
    // numpy, in f64 rounded to f32.
    let selu = [-1.670_568_7, -0.691_758_2, 0.0, 2.101_402];
    let gelu_tanh = [-0.003_637_392, -0.154_286, 0.0, 1.954_597_7];
    let softplus = [0.048_587_35, 0.474_077, std::f32::consts::LN_2, 2.126_928];
    let near = |y: &[f32], want: &[f32]| y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6);
    let one = |op: &str, opset: i64, attrs| model(opset, &[4], vec![node(op, "act", &["x"], &["y"], attrs)], vec![]);
    // SELU with ONNX's defaults at opsets 9 and 17, and with its own alpha and gamma.
    for opset in [9, 17] {
        let g = import(&one("Selu", opset, vec![]))?;
        assert_eq!(g.nodes()[0].op, Op::Selu { alpha: 1.673_263_2, gamma: 1.050_701 });
        let y = run(&g, &x)?;
        assert!(near(&y, &selu), "{y:?}");
    }
    let g = import(&one("Selu", 13, vec![a_float("alpha", 0.5), a_float("gamma", 2.0)]))?;
    assert_eq!(g.nodes()[0].op, Op::Selu { alpha: 0.5, gamma: 2.0 });
    let y = run(&g, &x)?;
    assert!(near(&y, &[-0.950_212_96, -0.393_469_33, 0.0, 4.0]), "{y:?}");
    // A gamma the ring functions do not take, or a non-finite alpha, is refused naming the node.
    for attrs in [vec![a_float("gamma", 0.0)], vec![a_float("gamma", 40.0)], vec![a_float("alpha", f32::NAN)]] {
        let e = error(&one("Selu", 13, attrs));
        assert!(e.contains("'act'") && e.contains("Selu") && e.contains("gamma"), "{e}");
    }
    // GELU's tanh form (opset 20) and Softplus.
    let g = import(&one("Gelu", 20, vec![a_str("approximate", "tanh")]))?;
    assert_eq!(g.nodes()[0].op, Op::GeluTanh);
    let y = run(&g, &x)?;
    assert!(near(&y, &gelu_tanh), "{y:?}");
    // The same before opset 20, as exporters write it: PyTorch's symbolic (x·(x·x), constants
    // first, (x·s)·0.5) and transformer code's gelu_new (0.5·x first, Pow(x, 3)).
    let consts = || {
        vec![
            t_f32("three", &[], &[3.0]),
            t_f32("kappa", &[], &[0.044_715]),
            t_f32("beta", &[], &[(2.0 / std::f32::consts::PI).sqrt()]),
            t_f32("one", &[], &[1.0]),
            t_f32("half", &[], &[0.5]),
        ]
    };
    let pytorch = vec![
        node("Mul", "square", &["x", "x"], &["sq"], vec![]),
        node("Mul", "cube", &["x", "sq"], &["c"], vec![]),
        node("Mul", "kappa_c", &["kappa", "c"], &["kc"], vec![]),
        node("Add", "inner", &["x", "kc"], &["i"], vec![]),
        node("Mul", "beta_i", &["beta", "i"], &["bi"], vec![]),
        node("Tanh", "tanh", &["bi"], &["t"], vec![]),
        node("Add", "one_t", &["one", "t"], &["s"], vec![]),
        node("Mul", "x_s", &["x", "s"], &["p"], vec![]),
        node("Mul", "half_p", &["half", "p"], &["y"], vec![]),
    ];
    let gelu_new = vec![
        node("Mul", "half_x", &["half", "x"], &["h"], vec![]),
        node("Pow", "pow", &["x", "three"], &["c"], vec![]),
        node("Mul", "kappa_c", &["c", "kappa"], &["kc"], vec![]),
        node("Add", "inner", &["kc", "x"], &["i"], vec![]),
        node("Mul", "beta_i", &["i", "beta"], &["bi"], vec![]),
        node("Tanh", "tanh", &["bi"], &["t"], vec![]),
        node("Add", "one_t", &["t", "one"], &["s"], vec![]),
        node("Mul", "h_s", &["h", "s"], &["y"], vec![]),
    ];
    for chain in [pytorch.clone(), gelu_new.clone()] {
        let g = import(&model(13, &[4], chain, consts()))?;
        assert_eq!(kinds(&g), ["GeluTanh"]);
        let y = run(&g, &x)?;
        assert!(near(&y, &gelu_tanh), "{y:?}");
    }
    // A Pow or a square outside the pattern, or a pattern whose parts are read elsewhere, is
    // refused naming the node and why.
    let e = error(&model(13, &[4], vec![node("Pow", "square", &["x", "two"], &["y"], vec![])], {
        vec![t_f32("two", &[], &[2.0])]
    }));
    assert!(e.contains("'square'") && e.contains("Pow") && e.contains("exponent"), "{e}");
    let e = error(&model(13, &[4], vec![node("Mul", "sq", &["x", "x"], &["y"], vec![])], vec![]));
    assert!(e.contains("'sq'") && e.contains("two computed values"), "{e}");
    let mut leaky = gelu_new;
    leaky.push(node("Add", "peek", &["t", "t"], &["z"], vec![]));
    let e = error(&model(13, &[4], leaky, consts()));
    assert!(e.contains("'pow'") && e.contains("is read 3 times"), "{e}");
    for opset in [9, 13, 17] {
        let g = import(&one("Softplus", opset, vec![]))?;
        assert_eq!(g.nodes()[0].op, Op::Softplus);
        let y = run(&g, &x)?;
        assert!(near(&y, &softplus), "{y:?}");
    }
    let g = import(&one("Softsign", 9, vec![]))?;
    assert_eq!(g.nodes()[0].op, Op::Softsign);
    assert_eq!(run(&g, &x)?, [-0.75, -1.0 / 3.0, 0.0, 2.0 / 3.0]);
    // Round trip: exported at opset 20 (the tanh Gelu's), imported back the same.
    let chain = vec![
        node("Selu", "selu", &["x"], &["s"], vec![a_float("alpha", 1.5), a_float("gamma", 1.25)]),
        node("Gelu", "gelu", &["s"], &["t"], vec![a_str("approximate", "tanh")]),
        node("Softplus", "softplus", &["t"], &["u"], vec![]),
        node("Softsign", "softsign", &["u"], &["y"], vec![]),
    ];
    let g = import(&model(20, &[4], chain, vec![]))?;
    let exported = onnx::export_model(&g)?;
    assert_eq!(exported.opset_import[0].version, 20);
    let back = onnx::import_onnx(&onnx::export_onnx(&g)?)?;
    let ops = |g: &Graph| g.nodes().iter().map(|n| n.op.clone()).collect::<Vec<_>>();
    assert_eq!(ops(&back), [Op::Selu { alpha: 1.5, gamma: 1.25 }, Op::GeluTanh, Op::Softplus, Op::Softsign]);
    assert_eq!(run(&back, &x)?, run(&g, &x)?);
    // Without a tanh Gelu the export stays at opset 13.
    let g = import(&model(13, &[4], vec![node("Selu", "selu", &["x"], &["y"], vec![])], vec![]))?;
    assert_eq!(onnx::export_model(&g)?.opset_import[0].version, 13);
    Ok(())
}

#[test]
fn prelu_with_one_slope_and_spatial_reduce_mean() -> Result<()> {
    let x = [-2.0f32, -0.5, 0.0, 3.0];
    let slope = vec![t_f32("s", &[1], &[0.25])];
    let g = import(&model(9, &[4], vec![node("PRelu", "pr", &["x", "s"], &["y"], vec![])], slope))?;
    assert_eq!(g.nodes()[0].op, Op::LeakyRelu { alpha: 0.25 });
    assert_eq!(run(&g, &x)?, [-0.5, -0.125, 0.0, 3.0]);
    // One slope per channel: a moat PRelu.
    let slopes = vec![t_f32("s", &[2, 1, 1], &[0.25, -0.5])];
    let g = import(&model(13, &[2, 2, 1], vec![node("PRelu", "pr2", &["x", "s"], &["y"], vec![])], slopes))?;
    assert_eq!(g.nodes()[0].op, Op::PRelu { slope: vec![0.25, -0.5] });
    assert_eq!(run(&g, &[-2.0, 1.0, -2.0, 3.0])?, [-0.5, 1.0, 1.0, 3.0]);
    // Slopes along another axis are refused, naming the node.
    let slopes = vec![t_f32("s", &[1, 1, 2], &[0.25, 0.5])];
    let e = error(&model(13, &[2, 2, 2], vec![node("PRelu", "pr3", &["x", "s"], &["y"], vec![])], slopes));
    assert!(e.contains("'pr3'") && e.contains("per channel"), "{e}");
    // ReduceMean over H, W: the mean per channel, kept as [N, C, 1, 1] or dropped to [N, C].
    let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
    for (keep, axes, declared) in [(1, [2i64, 3], vec![2, 1, 1]), (0, [-1, -2], vec![2])] {
        let attrs = vec![a_ints("axes", &axes), a_int("keepdims", keep)];
        let m = model(13, &[2, 2, 2], vec![node("ReduceMean", "rm", &["x"], &["y"], attrs)], vec![]);
        let g = import(&m)?;
        assert_eq!(g.nodes()[0].op, Op::GlobalAvgPool);
        assert_eq!(run(&g, &x)?, [1.5, 5.5]);
        // The output shape served is the ONNX graph's ([N, C, 1, 1] kept), not moat's [C].
        assert_eq!(onnx::import_outputs(&m, "rm")?.signature.output_shapes, [declared]);
    }
    let m = model(13, &[2, 2, 2], vec![node("GlobalAveragePool", "gap", &["x"], &["y"], vec![])], vec![]);
    assert_eq!(onnx::import_outputs(&m, "gap")?.signature.output_shapes, [vec![2, 1, 1]]);
    let axes = vec![t_i64("axes", &[2], &[2, 3])];
    let g = import(&model(18, &[2, 2, 2], vec![node("ReduceMean", "rm", &["x", "axes"], &["y"], vec![])], axes))?;
    assert_eq!(run(&g, &x)?, [1.5, 5.5]);
    // Other axes are refused, naming the node.
    let attrs = vec![a_ints("axes", &[1])];
    let e = error(&model(13, &[2, 2, 2], vec![node("ReduceMean", "channels", &["x"], &["y"], attrs)], vec![]));
    assert!(e.contains("'channels'") && e.contains("spatial"), "{e}");
    Ok(())
}

#[test]
fn max_takes_computed_values_of_equal_shapes() -> Result<()> {
    let x = [1.0f32, -2.0, 3.0];
    let nodes = vec![node("Relu", "r", &["x"], &["a"], vec![]), node("Max", "m", &["x", "a", "x"], &["y"], vec![])];
    let g = import(&model(13, &[3], nodes, vec![]))?;
    assert_eq!(kinds(&g), ["Relu", "Max"]);
    assert_eq!(run(&g, &x)?, [1.0, 0.0, 3.0]);
    let one = import(&model(9, &[3], vec![node("Max", "one", &["x"], &["y"], vec![])], vec![]))?;
    assert!(one.nodes().is_empty());
    let c = vec![t_f32("c", &[3], &[1.0, 1.0, 1.0])];
    let e = error(&model(13, &[3], vec![node("Max", "with_const", &["x", "c"], &["y"], vec![])], c));
    assert!(e.contains("'with_const'") && e.contains("constant"), "{e}");
    Ok(())
}

#[test]
fn sum_adds_computed_values_and_refuses_constants() -> Result<()> {
    let x = [1.0f32, -2.0, 3.0];
    let nodes = vec![node("Relu", "r", &["x"], &["a"], vec![]), node("Sum", "s", &["x", "a", "x"], &["y"], vec![])];
    let g = import(&model(13, &[3], nodes, vec![]))?;
    assert_eq!(kinds(&g), ["Relu", "Add", "Add"]);
    assert_eq!(g.nodes()[2].name, "s");
    assert_eq!(run(&g, &x)?, [3.0, -4.0, 9.0]);
    let c = vec![t_f32("c", &[3], &[1.0, 1.0, 1.0])];
    let e = error(&model(13, &[3], vec![node("Sum", "with_const", &["x", "c"], &["y"], vec![])], c));
    assert!(e.contains("'with_const'") && e.contains("constant"), "{e}");
    Ok(())
}

#[test]
fn opset_range() {
    let m = model(6, &[3], vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    assert!(error(&m).contains("opset 6"));
    // Opsets 7 and 8 read their attribute forms.
    for opset in [7, 8] {
        let m = model(opset, &[3], vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
        assert!(import(&m).is_ok(), "opset {opset}");
    }
    let mut m = model(13, &[3], vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    m.opset_import.clear();
    assert!(error(&m).contains("opset"));
    // Newer opsets import (with a warning).
    let m = model(22, &[3], vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    assert!(import(&m).is_ok());
}

// ---------------------------------------------------------------- errors

#[test]
fn unsupported_op_names_op_node_and_supported_list() {
    let nodes =
        vec![node("Relu", "r", &["x"], &["a"], vec![]), node("LSTM", "lstm_1", &["a", "W", "R"], &["y"], vec![])];
    let e = import(&model(13, &[3], nodes, vec![]));
    let Err(NnError::UnsupportedOp { op_type, node: at, supported }) = &e else { panic!("{e:?}") };
    assert_eq!((op_type.as_str(), at.as_str()), ("LSTM", "lstm_1"));
    assert!(supported.contains("Conv") && supported.contains("Gemm"));
    let text = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("LSTM") && text.contains("lstm_1") && text.contains("BatchNormalization"), "{text}");
    // An unnamed node is named by its index; other domains are unsupported too.
    let e = error(&model(
        13,
        &[3],
        vec![node("Relu", "r", &["x"], &["a"], vec![]), node("Einsum", "", &["a"], &["y"], vec![])],
        vec![],
    ));
    assert!(e.contains("'Einsum'") && e.contains("'#1'"), "{e}");
    let mut fused = node("FusedConv", "fc", &["x"], &["y"], vec![]);
    fused.domain = "com.microsoft".into();
    assert!(error(&model(13, &[3], vec![fused], vec![])).contains("com.microsoft.FusedConv"));
}

#[test]
fn shape_mismatches_name_the_node() {
    // Gemm weights for 4 inputs on a 3-feature input.
    let gemm = node("Gemm", "head", &["x", "W"], &["y"], vec![a_int("transB", 1)]);
    let e = error(&model(13, &[3], vec![gemm], vec![t_f32("W", &[2, 4], &[0.0; 8])]));
    assert!(e.contains("'head'"), "{e}");
    // Conv weights for 2 channels on a 3-channel input.
    let conv = node("Conv", "stem", &["x", "W"], &["y"], vec![]);
    let e = error(&model(13, &[3, 5, 5], vec![conv], vec![t_f32("W", &[4, 2, 3, 3], &[0.0; 72])]));
    assert!(e.contains("'stem'") && e.contains("channels"), "{e}");
    // A residual Add of different shapes.
    let nodes = vec![
        node("MaxPool", "mp", &["x"], &["p"], vec![a_ints("kernel_shape", &[2, 2])]),
        node("Add", "res", &["p", "x"], &["y"], vec![]),
    ];
    let e = error(&model(13, &[1, 4, 4], nodes, vec![]));
    assert!(e.contains("'res'") && e.contains("shapes"), "{e}");
    // Reading a value nobody produces.
    let e = error(&model(13, &[3], vec![node("Relu", "r", &["nope"], &["y"], vec![])], vec![]));
    assert!(e.contains("nope") && e.contains("'r'"), "{e}");
}

#[test]
fn malformed_bytes_are_onnx_errors() -> Result<()> {
    let graph = moat_nn::zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 0)?;
    let bytes = onnx::export_onnx(&graph)?;
    // Truncated inside a weight tensor.
    let e = onnx::import_onnx(&bytes[..bytes.len() / 2]);
    assert!(matches!(e, Err(NnError::Onnx(ref m)) if m.contains("decode")), "{e:?}");
    // Garbage and empty input.
    assert!(onnx::import_onnx(b"this is not an onnx file at all").is_err());
    let e = onnx::import_onnx(&[]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("no graph"), "{e}");
    Ok(())
}

#[test]
fn graph_output_rules() {
    // The output must be computed: a constant output or a dangling Pad are errors.
    let mut m = model(13, &[3], vec![node("Constant", "k", &[], &["y"], vec![a_float("value_float", 1.0)])], vec![]);
    assert!(error(&m).contains("constant"));
    if let Some(g) = m.graph.as_mut() {
        g.output.clear();
    }
    assert!(error(&m).contains("no output"));
    let pad = node("Pad", "p", &["x"], &["y"], vec![a_ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1])]);
    assert!(error(&model(9, &[1, 3, 3], vec![pad], vec![])).contains("Pad"));
}

#[test]
fn pool_matches_moat_semantics() -> Result<()> {
    // MaxPool padding is ignored (-inf in ONNX), as in moat.
    let nodes = vec![node(
        "MaxPool",
        "mp",
        &["x"],
        &["y"],
        vec![a_ints("kernel_shape", &[2, 2]), a_ints("pads", &[1, 1, 0, 0])],
    )];
    let g = import(&model(13, &[1, 2, 2], nodes, vec![]))?;
    let Op::MaxPool(Pool { padding, .. }) = g.nodes()[0].op else { unreachable!() };
    assert_eq!(padding, [1, 1, 0, 0]);
    assert_eq!(run(&g, &[-1.0, -2.0, -3.0, -4.0])?, [-1.0, -1.0, -1.0, -1.0]);
    Ok(())
}

// ---------------------------------------------------------------- Resize / Upsample

/// `x [C, H, W]` with every pixel copied into an `sh × sw` block.
fn blocks(x: &[f32], [c, h, w]: [usize; 3], sh: usize, sw: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(x.len() * sh * sw);
    for ch in 0..c {
        for i in 0..h * sh {
            for j in 0..w * sw {
                y.push(x[(ch * h + i / sh) * w + j / sw]);
            }
        }
    }
    y
}

#[test]
fn nearest_resize_by_whole_factors_in_every_opset_form() -> Result<()> {
    let shape = [2usize, 3, 2];
    let x: Vec<f32> = (0..12).map(|v| v as f32 - 5.5).collect();
    let scales = |s: &[f32]| t_f32("scales", &[4], s);
    let cases = vec![
        // Upsample with the scales attribute (opset 7) and input (opset 9).
        (
            model(
                7,
                &[2, 3, 2],
                vec![node("Upsample", "up", &["x"], &["y"], vec![a_floats("scales", &[1.0, 1.0, 2.0, 3.0])])],
                vec![],
            ),
            (2, 3),
        ),
        (
            model(
                9,
                &[2, 3, 2],
                vec![node("Upsample", "up", &["x", "scales"], &["y"], vec![])],
                vec![scales(&[1.0, 1.0, 2.0, 2.0])],
            ),
            (2, 2),
        ),
        // Resize-10 (scales is input 1), 13 with ONNX's defaults (half_pixel, round_prefer_floor),
        // PyTorch's nn.Upsample export (asymmetric, floor), and sizes instead of scales.
        (
            model(
                10,
                &[2, 3, 2],
                vec![node("Resize", "up", &["x", "scales"], &["y"], vec![])],
                vec![scales(&[1.0, 1.0, 3.0, 1.0])],
            ),
            (3, 1),
        ),
        (
            model(
                13,
                &[2, 3, 2],
                vec![node("Resize", "up", &["x", "", "scales"], &["y"], vec![])],
                vec![scales(&[1.0, 1.0, 2.0, 2.0])],
            ),
            (2, 2),
        ),
        (
            model(
                13,
                &[2, 3, 2],
                vec![node(
                    "Resize",
                    "up",
                    &["x", "", "scales"],
                    &["y"],
                    vec![a_str("coordinate_transformation_mode", "asymmetric"), a_str("nearest_mode", "floor")],
                )],
                vec![scales(&[1.0, 1.0, 4.0, 2.0])],
            ),
            (4, 2),
        ),
        (
            model(
                11,
                &[2, 3, 2],
                vec![node("Resize", "up", &["x", "", "", "sizes"], &["y"], vec![])],
                vec![t_i64("sizes", &[4], &[1, 2, 6, 6])],
            ),
            (2, 3),
        ),
    ];
    for (m, (sh, sw)) in cases {
        let g = import(&m)?;
        let y = run(&g, &x)?;
        assert_eq!(y, blocks(&x, shape, sh, sw), "×({sh}, {sw}): {:?}", kinds(&g));
        assert_eq!(kinds(&g), ["Concat", "Reshape", "Transpose", "Reshape"]);
    }
    // Factor 1 on both axes is the input itself.
    let g = import(&model(
        13,
        &[2, 3, 2],
        vec![node("Resize", "up", &["x", "", "scales"], &["y"], vec![])],
        vec![scales(&[1.0; 4])],
    ))?;
    assert_eq!(run(&g, &x)?, x);
    // Refused, naming the node and why: another mode, a factor that is not whole, a channel
    // factor, a rule that does not copy whole blocks.
    let refused = |attrs: Vec<_>, s: &[f32], want: &str| {
        let e = error(&model(
            13,
            &[2, 3, 2],
            vec![node("Resize", "up", &["x", "", "scales"], &["y"], attrs)],
            vec![scales(s)],
        ));
        assert!(e.contains("'up'") && e.contains(want), "{e}");
    };
    refused(vec![a_str("mode", "linear")], &[1.0, 1.0, 2.0, 2.0], "mode = 'linear'");
    refused(vec![], &[1.0, 1.0, 1.5, 2.0], "whole factors");
    refused(vec![], &[1.0, 2.0, 2.0, 2.0], "channel");
    // align_corners copies whole blocks for some lengths (3 → 6 does) but not for others
    // (3 → 9: output pixel 6 is 1.5 → input 1, not 2).
    refused(vec![a_str("coordinate_transformation_mode", "align_corners")], &[1.0, 1.0, 3.0, 1.0], "pixel 6");
    Ok(())
}
