//! A client parses the hello of a server it does not trust. Mutated hellos (bytes flipped,
//! truncated, numbers changed) must give an error or a usable architecture, never a panic —
//! the stable-toolchain twin of `fuzz/fuzz_targets/secure_hello.rs`.

use moat_mpc::engine::RescalePlan;
use moat_mpc::engine::real::Hello;
use moat_nn::skeleton::SkeletonOp;
use moat_nn::{FixedPoint, QuantizedGraph, ValueId, zoo};
use proptest::prelude::*;

fn hello_json() -> Vec<u8> {
    let arch: zoo::Architecture = "resnet20:x0.25".parse().unwrap_or_else(|e| panic!("{e}"));
    let graph = zoo::build(&arch, &[3, 16, 16], 10, 1).unwrap_or_else(|e| panic!("{e}"));
    let folded = graph.fold_batch_norms().unwrap_or_else(|e| panic!("{e}"));
    let hello = Hello {
        protocol: moat_mpc::engine::real::PROTOCOL.into(),
        skeleton: folded.skeleton(),
        ring_bits: 37,
        frac_bits: 12,
        he_degree: 4096,
        silent_ot: false,
        output: moat_mpc::engine::Reveal::Label,
        softmax: Default::default(),
        guard: None,
        model_commitment: Some("ab".repeat(32)),
        pool_first: true,
    };
    serde_json::to_vec(&hello).unwrap_or_default()
}

/// What a client does with a hello before the first query.
fn consume(bytes: &[u8]) {
    let Ok(hello) = serde_json::from_slice::<Hello>(bytes) else { return };
    let Ok(fixed) = FixedPoint::new(hello.ring_bits, hello.frac_bits) else { return };
    // Keep the test light: the size bound itself is checked by `Skeleton::instantiate`.
    let weights: usize = hello
        .skeleton
        .nodes
        .iter()
        .map(|n| match &n.op {
            SkeletonOp::Conv2d { weight_shape, .. } => weight_shape.iter().fold(1usize, |a, b| a.saturating_mul(*b)),
            SkeletonOp::Dense { weight_shape } => weight_shape.iter().fold(1usize, |a, b| a.saturating_mul(*b)),
            _ => 0,
        })
        .fold(0usize, usize::saturating_add);
    if weights > 1 << 20 {
        return;
    }
    let Ok(graph) = hello.skeleton.instantiate() else { return };
    let small = (0..=graph.nodes().len()).all(|v| graph.shape(ValueId(v)).iter().product::<usize>() <= 1 << 16);
    if small && let Ok(model) = QuantizedGraph::new(&graph, fixed) {
        let _ = RescalePlan::fused(model.graph());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn flipped_bytes_never_panic(at in 0usize..4096, byte in any::<u8>()) {
        let mut bytes = hello_json();
        let i = at % bytes.len();
        bytes[i] = byte;
        consume(&bytes);
    }

    #[test]
    fn truncated_hellos_never_panic(keep in 0usize..4096) {
        let bytes = hello_json();
        consume(&bytes[..keep.min(bytes.len())]);
    }

    #[test]
    fn changed_numbers_never_panic(which in 0usize..512, value in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), 0u64..100_000]) {
        let text = String::from_utf8(hello_json()).unwrap_or_default();
        // Replace the `which`-th number in the JSON by `value`.
        let mut out = String::with_capacity(text.len());
        let mut count = 0;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                let mut number = c.to_string();
                while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    number.extend(chars.next());
                }
                out.push_str(&if count == which { value.to_string() } else { number });
                count += 1;
            } else {
                out.push(c);
            }
        }
        consume(out.as_bytes());
    }
}

/// A hello without the `softmax` field (a server from before the field) announces CrypTen's
/// `exp`, the default then; with it, the server's choice (the spline by default).
#[test]
fn a_hello_without_the_softmax_field_announces_exp() {
    use moat_mpc::ring_ops::Softmax;
    let parse = |v: &serde_json::Value| serde_json::from_value::<Hello>(v.clone()).map(|h| h.softmax).ok();
    let mut hello: serde_json::Value = serde_json::from_slice(&hello_json()).unwrap_or_default();
    assert_eq!(parse(&hello), Some(Softmax::Spline));
    if let Some(fields) = hello.as_object_mut() {
        fields.remove("softmax");
    }
    assert_eq!(parse(&hello), Some(Softmax::Exp));
}

#[test]
fn the_unmutated_hello_gives_the_architecture() {
    let hello: Hello = serde_json::from_slice(&hello_json()).unwrap_or_else(|e| panic!("{e}"));
    assert!(hello.skeleton.instantiate().is_ok());
}
