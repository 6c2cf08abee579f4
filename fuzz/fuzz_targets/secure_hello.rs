//! Fuzzes what a secure-inference client reads from a server it does not trust: the session
//! hello (JSON with the model's public skeleton). Parsing, instantiating the architecture,
//! quantising it and deriving the rescale plan must fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_mpc::engine::RescalePlan;
use moat_mpc::engine::real::Hello;
use moat_nn::{FixedPoint, QuantizedGraph, ValueId};

fuzz_target!(|data: &[u8]| {
    let Ok(hello) = serde_json::from_slice::<Hello>(data) else { return };
    let Ok(fixed) = FixedPoint::new(hello.ring_bits, hello.frac_bits) else { return };
    let Ok(graph) = hello.skeleton.instantiate() else { return };
    let small = (0..=graph.nodes().len()).all(|v| graph.shape(ValueId(v)).iter().product::<usize>() <= 1 << 16);
    if small && let Ok(model) = QuantizedGraph::new(&graph, fixed) {
        let _ = RescalePlan::fused(model.graph());
    }
});
