//! Fuzzes the ONNX importer: any byte string must give `Ok` or `Err`, never a panic. Graphs
//! that import are run once on zeros when small, so they must also be executable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_nn::{FloatExecutor, ValueId};

fuzz_target!(|data: &[u8]| {
    if let Ok(graph) = moat_nn::onnx::import_onnx(data) {
        let small = (0..=graph.nodes().len()).all(|v| graph.shape(ValueId(v)).iter().product::<usize>() <= 1 << 16);
        if small {
            let input = vec![0.0f32; graph.input_shape().iter().product()];
            let _ = FloatExecutor::run(&graph, &input);
        }
    }
});
