//! The Open Inference Protocol request parser takes bytes from any HTTP client: random and
//! mutated bodies (JSON and binary-tensor) must parse or fail with a 4xx, never panic — the
//! stable-toolchain twin of `fuzz/fuzz_targets/oip_request.rs`.

use moat_serve::oip::{ModelIo, RawRequest};
use proptest::prelude::*;

/// A model with input `input` of `sample_shape` and outputs `output` `[10]` and `aux` `[2, 3]`.
fn io(sample_shape: &[usize]) -> ModelIo {
    ModelIo {
        input: "input".into(),
        sample_shape: sample_shape.to_vec(),
        outputs: vec![("output".into(), vec![10]), ("aux".into(), vec![2, 3])],
        classes: 10,
    }
}

const JSON: &str = r#"{"id":"a","inputs":[{"name":"input","shape":[1,12],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12]}],"outputs":[{"name":"output","parameters":{"classification":2}}],"parameters":{"min_accuracy":90,"max_latency_ms":5}}"#;

fn binary() -> (Vec<u8>, String) {
    let header =
        r#"{"inputs":[{"name":"input","shape":[1,12],"datatype":"FP32","parameters":{"binary_data_size":48}}]}"#;
    let mut body = header.as_bytes().to_vec();
    for i in 0..12 {
        body.extend_from_slice(&(i as f32).to_le_bytes());
    }
    (body, header.len().to_string())
}

fn consume(body: &[u8], header: Option<&str>) {
    if let Ok(request) = RawRequest::parse(body, header) {
        let _ = request.decode_input(&io(&[12]), 8);
        let _ = request.decode_input(&io(&[3, 2, 2]), 8);
        let _ = request.decode_input(&io(&[]), 1);
        let _ = request.outputs(&io(&[12]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256), header in proptest::option::of(0usize..300)) {
        consume(&body, header.map(|h| h.to_string()).as_deref());
    }

    #[test]
    fn mutated_json_never_panics(at in 0usize..512, byte in any::<u8>(), keep in 0usize..512) {
        let mut body = JSON.as_bytes().to_vec();
        let i = at % body.len();
        body[i] = byte;
        body.truncate(keep.max(1));
        consume(&body, None);
    }

    #[test]
    fn mutated_binary_bodies_never_panic(at in 0usize..512, byte in any::<u8>(), keep in 0usize..512, length in prop_oneof![Just(None), (0usize..400).prop_map(Some)]) {
        let (mut body, header) = binary();
        let i = at % body.len();
        body[i] = byte;
        body.truncate(keep.max(1));
        let header = length.map(|l| l.to_string()).unwrap_or(header);
        consume(&body, Some(&header));
    }
}

#[test]
fn the_unmutated_bodies_parse_and_decode() -> Result<(), Box<dyn std::error::Error>> {
    let request = RawRequest::parse(JSON.as_bytes(), None).map_err(|e| format!("{e:?}"))?;
    assert_eq!(request.decode_input(&io(&[12]), 8).map_err(|e| format!("{e:?}"))?.0, 1);
    assert_eq!(request.outputs(&io(&[12])).map_err(|e| format!("{e:?}"))?[0].classification, Some(2));
    let (body, header) = binary();
    let request = RawRequest::parse(&body, Some(&header)).map_err(|e| format!("{e:?}"))?;
    let (n, values) = request.decode_input(&io(&[12]), 8).map_err(|e| format!("{e:?}"))?;
    assert_eq!((n, values[11]), (1, 11.0));
    Ok(())
}
