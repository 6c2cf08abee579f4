//! Open Inference Protocol v2 messages as a client writes and reads them: an inference request
//! with one `FP32` input (JSON or Triton's binary tensor extension), and the response's output
//! tensors (`FP32`, `FP64`, `INT32`, `INT64`, `BYTES`, JSON or binary).
//!
//! moat serves a model under its ONNX graph's own tensor names (take them from the model
//! metadata: [`crate::ModelMetadata::request`]); without `outputs` the answer holds the declared
//! outputs. moat's extras — `label`, `logits`, `probabilities` — come back only when asked for
//! ([`InferRequest::with_output`]).
//!
//! Written from the protocol specification, independently of the server crate, so the two
//! check each other.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ClientError;

/// One output the client asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Ask for binary data.
    pub binary: bool,
    /// Ask for the top-k classification strings instead of the tensor.
    pub classification: Option<usize>,
}

/// An inference request with one `FP32` input tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// Request id, echoed by the server.
    pub id: Option<String>,
    /// Input name: the model's own (moat's exported models: `input`).
    pub input_name: String,
    /// Input shape, batch first.
    pub shape: Vec<usize>,
    /// Input values, row-major.
    pub data: Vec<f32>,
    /// Send the input as binary data after the JSON header.
    pub binary_input: bool,
    /// Outputs to return (empty: all).
    pub outputs: Vec<RequestedOutput>,
    /// Request parameters (`min_accuracy`, `max_latency_ms`, `binary_data_output`, …).
    pub parameters: Map<String, Value>,
}

impl InferRequest {
    /// A request for the input `input` of `shape` holding `data`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ClientError> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(ClientError::Invalid(format!("shape {shape:?} holds {n} values, got {}", data.len())));
        }
        Ok(Self {
            id: None,
            input_name: "input".into(),
            shape,
            data,
            binary_input: false,
            outputs: Vec::new(),
            parameters: Map::new(),
        })
    }

    /// A batch of samples of `sample_shape`: shape `[samples.len(), ...sample_shape]`.
    pub fn batch(samples: &[Vec<f32>], sample_shape: &[usize]) -> Result<Self, ClientError> {
        let mut shape = vec![samples.len()];
        shape.extend_from_slice(sample_shape);
        Self::new(shape, samples.concat())
    }

    /// Sets the input name (the model's, from its metadata).
    pub fn with_input_name(mut self, name: impl Into<String>) -> Self {
        self.input_name = name.into();
        self
    }

    /// Sets the request id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets a request parameter.
    pub fn with_parameter(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.parameters.insert(key.into(), value.into());
        self
    }

    /// Sets a task request's spec: minimum accuracy (percent) and maximum latency (ms).
    pub fn with_spec(mut self, min_accuracy: Option<f64>, max_latency_ms: Option<f64>) -> Self {
        insert_spec(&mut self.parameters, min_accuracy, max_latency_ms);
        self
    }

    /// Asks for one output.
    pub fn with_output(mut self, name: impl Into<String>, binary: bool, classification: Option<usize>) -> Self {
        self.outputs.push(RequestedOutput { name: name.into(), binary, classification });
        self
    }

    /// Sends the input as binary data.
    pub fn with_binary_input(mut self, binary: bool) -> Self {
        self.binary_input = binary;
        self
    }

    /// The body and, for binary input, the JSON header length.
    pub fn encode(&self) -> Result<(Vec<u8>, Option<usize>), ClientError> {
        let mut input = json!({ "name": self.input_name, "shape": self.shape, "datatype": "FP32" });
        if self.binary_input {
            input["parameters"] = json!({ "binary_data_size": self.data.len() * 4 });
        } else {
            input["data"] = json!(self.data);
        }
        let mut request = json!({ "inputs": [input] });
        if let Some(id) = &self.id {
            request["id"] = json!(id);
        }
        if !self.parameters.is_empty() {
            request["parameters"] = Value::Object(self.parameters.clone());
        }
        if !self.outputs.is_empty() {
            let outputs: Vec<Value> = self
                .outputs
                .iter()
                .map(|o| {
                    let mut p = Map::new();
                    if o.binary {
                        p.insert("binary_data".into(), json!(true));
                    }
                    if let Some(k) = o.classification {
                        p.insert("classification".into(), json!(k));
                    }
                    if p.is_empty() { json!({ "name": o.name }) } else { json!({ "name": o.name, "parameters": p }) }
                })
                .collect();
            request["outputs"] = json!(outputs);
        }
        let mut body = serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !self.binary_input {
            return Ok((body, None));
        }
        let header = body.len();
        body.extend(self.data.iter().flat_map(|x| x.to_le_bytes()));
        Ok((body, Some(header)))
    }
}

/// Values of an output tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `FP32` (and `FP64`, narrowed).
    F32(Vec<f32>),
    /// `INT32` / `INT64`.
    I64(Vec<i64>),
    /// `BYTES`, as UTF-8 strings.
    Bytes(Vec<String>),
}

/// An output tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: TensorData,
}

/// An inference response.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    /// The model (or task) that answered.
    pub model_name: String,
    /// Its version, when disclosed.
    pub model_version: Option<String>,
    /// The request id, when given.
    pub id: Option<String>,
    /// Response parameters.
    pub parameters: Map<String, Value>,
    /// Output tensors.
    pub outputs: Vec<OutputTensor>,
}

#[derive(Deserialize)]
struct ResponseJson {
    model_name: String,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

fn protocol(message: impl Into<String>) -> ClientError {
    ClientError::Protocol(message.into())
}

fn flatten_json(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten_json(v, out)),
        other => out.push(other.clone()),
    }
}

fn decode_json(datatype: &str, data: &Value) -> Result<TensorData, ClientError> {
    let mut flat = Vec::new();
    flatten_json(data, &mut flat);
    let bad = |v: &Value| protocol(format!("{datatype} tensor holds {v}"));
    Ok(match datatype {
        "FP32" | "FP64" => TensorData::F32(
            flat.iter().map(|v| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(v))).collect::<Result<_, _>>()?,
        ),
        "INT32" | "INT64" => {
            TensorData::I64(flat.iter().map(|v| v.as_i64().ok_or_else(|| bad(v))).collect::<Result<_, _>>()?)
        }
        "BYTES" => TensorData::Bytes(
            flat.iter().map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(v))).collect::<Result<_, _>>()?,
        ),
        other => return Err(protocol(format!("unsupported output datatype {other}"))),
    })
}

fn decode_binary(datatype: &str, bytes: &[u8]) -> Result<TensorData, ClientError> {
    let exact = |size: usize| {
        if bytes.len().is_multiple_of(size) {
            Ok(bytes.chunks_exact(size))
        } else {
            Err(protocol(format!("{} bytes of {datatype}", bytes.len())))
        }
    };
    Ok(match datatype {
        "FP32" => TensorData::F32(exact(4)?.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        "FP64" => TensorData::F32(
            exact(8)?.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
        ),
        "INT32" => TensorData::I64(exact(4)?.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect()),
        "INT64" => TensorData::I64(
            exact(8)?.map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
        ),
        "BYTES" => {
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(protocol("truncated BYTES element length"));
                }
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let body = rest.get(4..4 + n).ok_or_else(|| protocol("truncated BYTES element"))?;
                out.push(String::from_utf8_lossy(body).into_owned());
                rest = &rest[4 + n..];
            }
            TensorData::Bytes(out)
        }
        other => return Err(protocol(format!("unsupported output datatype {other}"))),
    })
}

impl InferResponse {
    /// Decodes a response body; `header_length` is the `Inference-Header-Content-Length`.
    pub fn decode(body: &[u8], header_length: Option<usize>) -> Result<Self, ClientError> {
        let json_len = header_length.unwrap_or(body.len());
        let head = body.get(..json_len).ok_or_else(|| protocol("header length beyond the body"))?;
        let parsed: ResponseJson =
            serde_json::from_slice(head).map_err(|e| protocol(format!("bad response JSON: {e}")))?;
        let mut rest = &body[json_len..];
        let mut outputs = Vec::with_capacity(parsed.outputs.len());
        for o in parsed.outputs {
            let size = o.parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64);
            let data = match (size, &o.data) {
                (Some(n), _) => {
                    let n = n as usize;
                    if n > rest.len() {
                        return Err(protocol(format!(
                            "output '{}' claims {n} binary bytes, {} left",
                            o.name,
                            rest.len()
                        )));
                    }
                    let (chunk, tail) = rest.split_at(n);
                    rest = tail;
                    decode_binary(&o.datatype, chunk)?
                }
                (None, Some(d)) => decode_json(&o.datatype, d)?,
                (None, None) => return Err(protocol(format!("output '{}' has no data", o.name))),
            };
            let count = match &data {
                TensorData::F32(v) => v.len(),
                TensorData::I64(v) => v.len(),
                TensorData::Bytes(v) => v.len(),
            };
            if count != o.shape.iter().product::<usize>() {
                return Err(protocol(format!("output '{}' has {count} values for shape {:?}", o.name, o.shape)));
            }
            outputs.push(OutputTensor { name: o.name, datatype: o.datatype, shape: o.shape, data });
        }
        Ok(Self {
            model_name: parsed.model_name,
            model_version: parsed.model_version,
            id: parsed.id,
            parameters: parsed.parameters.unwrap_or_default(),
            outputs,
        })
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&OutputTensor> {
        self.outputs.iter().find(|o| o.name == name)
    }

    fn rows(&self, name: &str) -> Result<Vec<Vec<f32>>, ClientError> {
        let o = self.output(name).ok_or_else(|| protocol(format!("no '{name}' output")))?;
        match (&o.data, o.shape.as_slice()) {
            (TensorData::F32(v), [_, k]) if *k > 0 => Ok(v.chunks(*k).map(<[f32]>::to_vec).collect()),
            _ => Err(protocol(format!("'{name}' is not an [N, K] float tensor"))),
        }
    }

    /// An `[N, K]` float output, one row per sample.
    pub fn rows_of(&self, name: &str) -> Result<Vec<Vec<f32>>, ClientError> {
        self.rows(name)
    }

    /// The `logits` output, one row per sample.
    pub fn logits(&self) -> Result<Vec<Vec<f32>>, ClientError> {
        self.rows(moat_wire::params::OUTPUT_LOGITS)
    }

    /// The `probabilities` output, one row per sample.
    pub fn probabilities(&self) -> Result<Vec<Vec<f32>>, ClientError> {
        self.rows(moat_wire::params::OUTPUT_PROBABILITIES)
    }

    /// The `label` output.
    pub fn labels(&self) -> Result<Vec<usize>, ClientError> {
        match self.output(moat_wire::params::OUTPUT_LABEL).map(|o| &o.data) {
            Some(TensorData::I64(v)) => {
                v.iter().map(|&l| usize::try_from(l).map_err(|_| protocol(format!("negative label {l}")))).collect()
            }
            _ => Err(protocol("no INT64 'label' output")),
        }
    }
}

/// Writes a task spec's bounds (those given) into request `parameters`: `min_accuracy`
/// (percent) and `max_latency_ms`.
pub fn insert_spec(parameters: &mut Map<String, Value>, min_accuracy: Option<f64>, max_latency_ms: Option<f64>) {
    if let Some(a) = min_accuracy {
        parameters.insert(moat_wire::params::MIN_ACCURACY.into(), json!(a));
    }
    if let Some(l) = max_latency_ms {
        parameters.insert(moat_wire::params::MAX_LATENCY_MS.into(), json!(l));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_json_and_binary_requests() -> Result<(), ClientError> {
        let r = InferRequest::new(vec![1, 2], vec![0.5, -1.0])?
            .with_id("7")
            .with_spec(Some(90.0), None)
            .with_output("label", false, None)
            .with_output("logits", true, Some(2));
        let (body, header) = r.encode()?;
        assert_eq!(header, None);
        let v: Value = serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
        assert_eq!(v["inputs"][0]["data"], json!([0.5, -1.0]));
        assert_eq!(v["parameters"]["min_accuracy"], json!(90.0));
        assert_eq!(v["outputs"][1]["parameters"], json!({"binary_data": true, "classification": 2}));
        let (body, header) = r.with_binary_input(true).encode()?;
        let n = header.ok_or_else(|| protocol("header"))?;
        assert_eq!(&body[n..], [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat().as_slice());
        assert!(InferRequest::new(vec![2, 2], vec![1.0]).is_err());
        Ok(())
    }

    #[test]
    fn decodes_json_and_binary_responses() -> Result<(), ClientError> {
        let json = br#"{"model_name":"m","model_version":"1","outputs":[
            {"name":"logits","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]},
            {"name":"label","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}},
            {"name":"top","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":7}}]}"#;
        let mut body = json.to_vec();
        body.extend(1i64.to_le_bytes());
        body.extend(0i64.to_le_bytes());
        body.extend(3u32.to_le_bytes());
        body.extend(b"4:1");
        let r = InferResponse::decode(&body, Some(json.len()))?;
        assert_eq!(r.logits()?, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        assert_eq!(r.labels()?, vec![1, 0]);
        assert_eq!(r.output("top").map(|o| o.data.clone()), Some(TensorData::Bytes(vec!["4:1".into()])));
        assert!(InferResponse::decode(&body[..body.len() - 1], Some(json.len())).is_err());
        assert!(InferResponse::decode(b"{\"model_name\":\"m\",\"outputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3],\"data\":[1]}]}", None).is_err());
        Ok(())
    }
}
