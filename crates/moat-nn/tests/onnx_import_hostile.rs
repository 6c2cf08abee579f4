//! Models and inputs that are valid protobuf but dishonest numbers or invalid ONNX: each is
//! refused with an error that names what is wrong, before anything large is allocated.

mod onnx_util;

use std::time::{Duration, Instant};

use moat_nn::onnx::proto::ModelProto;
use moat_nn::{FixedPoint, QuantizedGraph};
use onnx_util::*;

fn error(m: &ModelProto) -> String {
    match moat_nn::onnx::import_model(m) {
        Ok(g) => panic!("imported {:?}", g.input_shape()),
        Err(e) => e.to_string(),
    }
}

fn gemm(w: &[f32], b: &[f32]) -> ModelProto {
    model(
        13,
        &[2],
        vec![node("Gemm", "fc1", &["x", "W", "B"], &["y"], vec![a_int("transB", 1)])],
        vec![t_f32("W", &[2, 2], w), t_f32("B", &[2], b)],
    )
}

#[test]
fn non_finite_and_absurd_weights_are_refused_naming_the_tensor() {
    assert!(moat_nn::onnx::import_model(&gemm(&[1.0, 0.0, 0.0, 1.0], &[0.5, -0.5])).is_ok());
    for (w, b, needle) in [
        ([1.0, f32::NAN, 0.0, 1.0], [0.0, 0.0], "weight element 1 is NaN"),
        ([1.0, 0.0, f32::INFINITY, 1.0], [0.0, 0.0], "weight element"),
        ([1.0, 0.0, 0.0, 1.0], [0.0, 1e30], "bias element 1 is 1000000000000000000000000000000"),
    ] {
        let e = error(&gemm(&w, &b));
        assert!(e.contains("'fc1'") && e.contains(needle), "{needle}: {e}");
    }
    // Batch-norm statistics too.
    let bn = model(
        9,
        &[2, 1, 1],
        vec![node("BatchNormalization", "bn", &["x", "g", "b", "m", "v"], &["y"], vec![])],
        vec![
            t_f32("g", &[2], &[1.0, 1.0]),
            t_f32("b", &[2], &[0.0, 0.0]),
            t_f32("m", &[2], &[0.0, 0.0]),
            t_f32("v", &[2], &[1.0, f32::NEG_INFINITY]),
        ],
    );
    let e = error(&bn);
    assert!(e.contains("'bn'") && e.contains("variance element 1"), "{e}");
}

#[test]
fn huge_declared_shapes_are_refused_at_once_with_the_right_reason() {
    let relu = |shape: &[i64]| model(13, shape, vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![]);
    let started = Instant::now();
    // 16384 × 16384 = 2^28 per value: each value within the per-tensor cap, the graph not.
    let e = error(&relu(&[16384, 16384]));
    assert!(e.contains("add up to more than"), "{e}");
    // 50000 × 50000: one value already beyond the cap, said as such.
    let e = error(&relu(&[50000, 50000]));
    assert!(e.contains("2500000000 values per sample, more than"), "{e}");
    let e = error(&relu(&[1 << 40, 1 << 40]));
    assert!(e.contains("more than 2^64"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn invalid_onnx_is_refused() {
    let w = weights(2 * 3 * 3 * 3, 8);
    let conv = |attrs| {
        model(13, &[3, 7, 8], vec![node("Conv", "c1", &["x", "W"], &["y"], attrs)], vec![t_f32("W", &[2, 3, 3, 3], &w)])
    };
    let e = error(&conv(vec![a_int("group", 0)]));
    assert!(e.contains("group = 0") && e.contains("'c1'"), "{e}");
    // Two nodes writing one value: the second would silently replace the first.
    let twice = model(
        13,
        &[3],
        vec![
            node("Relu", "a", &["x"], &["h"], vec![]),
            node("Relu", "b", &["x"], &["h"], vec![]),
            node("Relu", "c", &["h"], &["y"], vec![]),
        ],
        vec![],
    );
    let e = error(&twice);
    assert!(e.contains("'b'") && e.contains("'h'") && e.contains("already defined"), "{e}");
    // A node output shadowing the graph input.
    let shadow = model(
        13,
        &[3],
        vec![node("Relu", "a", &["x"], &["x"], vec![]), node("Relu", "b", &["x"], &["y"], vec![])],
        vec![],
    );
    assert!(error(&shadow).contains("already defined"));
}

#[test]
fn inputs_outside_the_fixed_point_range_are_refused_not_wrapped() -> moat_nn::Result<()> {
    let graph = moat_nn::onnx::import_model(&gemm(&[1.0, 0.0, 0.0, 1.0], &[0.0, 0.0]))?;
    let q = QuantizedGraph::new(&graph, FixedPoint::default())?;
    assert!(q.encode_input(&[1.5, -1e6]).is_ok());
    for bad in [[3e38, 0.0], [0.0, -3e38], [f32::NAN, 0.0], [0.0, f32::INFINITY], [16_777_216.0, 0.0]] {
        let e = q.encode_input(&bad).map(|_| ()).map_err(|e| e.to_string());
        assert!(e.as_ref().is_err_and(|m| m.contains("outside the fixed-point range")), "{bad:?}: {e:?}");
        assert!(q.predict(&bad).is_err(), "{bad:?}");
    }
    let e = q.encode_input(&[0.0, 3e38]).map(|_| ()).map_err(|e| e.to_string());
    assert!(e.is_err_and(|m| m.contains("input value 1")));
    Ok(())
}
