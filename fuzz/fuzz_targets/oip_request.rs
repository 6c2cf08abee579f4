//! Fuzzes the Open Inference Protocol request parser (JSON body, binary-tensor extension with
//! its header length): any bytes must give `Ok` or an `Err` for a 4xx, never a panic, and a
//! parsed request must decode or fail cleanly against a model's input shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_serve::oip::{ModelIo, RawRequest};

fuzz_target!(|data: &[u8]| {
    // First byte: whether and where the JSON header ends (the binary extension).
    let Some((&split, body)) = data.split_first() else { return };
    let header = (split & 1 == 1).then(|| (usize::from(split >> 1) % (body.len() + 2)).to_string());
    if let Ok(request) = RawRequest::parse(body, header.as_deref()) {
        let io = |input: &str, sample_shape: &[usize]| ModelIo {
            input: input.into(),
            sample_shape: sample_shape.to_vec(),
            outputs: vec![("output".into(), vec![10]), ("aux".into(), vec![2, 3])],
            classes: 10,
        };
        let _ = request.decode_input(&io("input", &[1, 28, 28]), 64);
        let _ = request.decode_input(&io("x", &[12]), 8);
        let _ = request.outputs(&io("input", &[12]));
    }
});
