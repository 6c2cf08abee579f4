//! Fuzzes the Open Inference Protocol request parser (JSON body, binary-tensor extension with
//! its header length): any bytes must give `Ok` or an `Err` for a 4xx, never a panic, and a
//! parsed request must decode or fail cleanly against a model's input shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_serve::oip::RawRequest;

fuzz_target!(|data: &[u8]| {
    // First byte: whether and where the JSON header ends (the binary extension).
    let Some((&split, body)) = data.split_first() else { return };
    let header = (split & 1 == 1).then(|| (usize::from(split >> 1) % (body.len() + 2)).to_string());
    if let Ok(request) = RawRequest::parse(body, header.as_deref()) {
        let _ = request.decode_input(&[1, 28, 28], 64);
        let _ = request.decode_input(&[12], 8);
    }
});
