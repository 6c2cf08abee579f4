//! The Open Inference Protocol v2 wire format (KServe / Triton), JSON and Triton's binary
//! tensor extension, for moat's models.
//!
//! As in Triton, a model is served under its ONNX graph's own tensor names ([`ModelIo`]): one
//! input (the graph's, datatype `FP32`, shape `[N, ...sample_shape]`; also accepted:
//! `[N, prod(sample_shape)]`; `FP64` and integer datatypes are converted) and every declared
//! output, `FP32` `[N, ...shape]`, carrying exactly the graph's value (a trailing `Softmax`
//! included). moat adds three outputs, returned only when a request names them in `outputs`
//! (and not offered when the graph declares an output of the same name):
//!
//! | extra output | datatype | shape | what |
//! |---|---|---|---|
//! | `logits` | `FP32` | `[N, K]` | the input of the graph's trailing softmax, else its first output |
//! | `probabilities` | `FP32` | `[N, K]` | softmax of the logits |
//! | `label` | `INT64` | `[N]` | argmax of the logits |
//!
//! `data` may be flat or nested (row-major). Requests choose outputs with `outputs` (default:
//! the declared outputs); an unknown input or output name is a 400 listing the valid ones. An
//! output's `parameters` may ask for `binary_data: true` (binary tensor extension) or
//! `classification: k` (Triton's classification extension: a `BYTES` tensor `[N, k]` of
//! `"value:index[:label]"` strings, top-k by value, for outputs with one dimension per sample).
//! A request's `parameters` may set `binary_data_output: true` for every output.
//!
//! Binary tensor extension: with an `Inference-Header-Content-Length: L` header, the first `L`
//! bytes of the body are the JSON request and the rest is the raw little-endian data of every
//! input that declares `parameters.binary_data_size`, in input order. Binary outputs come back
//! the same way (`Content-Type: application/octet-stream`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::AppError;

/// The tensors a model serves: its graph's own input and outputs, and moat's extras.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIo {
    /// The graph input's name.
    pub input: String,
    /// Per-sample input shape.
    pub sample_shape: Vec<usize>,
    /// The declared outputs: name and per-sample shape.
    pub outputs: Vec<(String, Vec<usize>)>,
    /// Number of classes (elements of the logits).
    pub classes: usize,
}

impl ModelIo {
    /// The extra outputs this model offers (those whose name no declared output takes).
    pub fn extras(&self) -> Vec<OutputKind> {
        [OutputKind::Logits, OutputKind::Probabilities, OutputKind::Label]
            .into_iter()
            .filter(|k| self.outputs.iter().all(|(name, _)| name != k.extra_name()))
            .collect()
    }

    /// Every output name a request may ask for: the declared ones, then the extras.
    pub fn output_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.outputs.iter().map(|(n, _)| n.clone()).collect();
        names.extend(self.extras().iter().map(|k| k.extra_name().to_string()));
        names
    }

    /// The output called `name`.
    fn find(&self, name: &str) -> Option<OutputKind> {
        match self.outputs.iter().position(|(n, _)| n == name) {
            Some(k) => Some(OutputKind::Declared(k)),
            None => self.extras().into_iter().find(|k| k.extra_name() == name),
        }
    }

    /// The tensor name of an output.
    pub fn name_of(&self, kind: OutputKind) -> &str {
        match kind {
            OutputKind::Declared(k) => self.outputs.get(k).map_or("", |(n, _)| n.as_str()),
            other => other.extra_name(),
        }
    }

    /// The per-sample shape of an output.
    pub fn sample_shape_of(&self, kind: OutputKind) -> Vec<usize> {
        match kind {
            OutputKind::Declared(k) => self.outputs.get(k).map_or_else(Vec::new, |(_, s)| s.clone()),
            OutputKind::Label => Vec::new(),
            OutputKind::Logits | OutputKind::Probabilities => vec![self.classes],
        }
    }
}
/// Header giving the JSON length when binary tensors follow it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `$inference_request`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct InferenceRequest {
    /// Request id, echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`min_accuracy`, `max_latency_ms`, `binary_data_output`, …).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Requested outputs (default: all).
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// `$request_input`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RequestInput {
    /// Tensor name.
    pub name: String,
    /// Full shape, batch dimension included.
    pub shape: Vec<u64>,
    /// Element datatype.
    pub datatype: String,
    /// Parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Elements, flat or nested; absent for binary inputs.
    #[serde(default)]
    pub data: Option<Value>,
}

/// `$request_output`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// Parameters (`binary_data`, `classification`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// Tensor element types of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// `BOOL`.
    Bool,
    /// `BYTES`.
    Bytes,
    /// `FP16`.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
}

impl DataType {
    /// Parses the protocol name (case-sensitive, as the spec says).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BOOL" => DataType::Bool,
            "BYTES" => DataType::Bytes,
            "FP16" => DataType::Fp16,
            "FP32" => DataType::Fp32,
            "FP64" => DataType::Fp64,
            "INT8" => DataType::Int8,
            "INT16" => DataType::Int16,
            "INT32" => DataType::Int32,
            "INT64" => DataType::Int64,
            "UINT8" => DataType::Uint8,
            "UINT16" => DataType::Uint16,
            "UINT32" => DataType::Uint32,
            "UINT64" => DataType::Uint64,
            _ => return None,
        })
    }

    /// Bytes per element of the numeric types moat accepts as model input (`None` otherwise).
    fn numeric_size(self) -> Option<usize> {
        match self {
            DataType::Fp32 | DataType::Int32 | DataType::Uint32 => Some(4),
            DataType::Fp64 | DataType::Int64 | DataType::Uint64 => Some(8),
            DataType::Int16 | DataType::Uint16 => Some(2),
            DataType::Int8 | DataType::Uint8 => Some(1),
            DataType::Bool | DataType::Bytes | DataType::Fp16 => None,
        }
    }

    fn is_integer(self) -> bool {
        !matches!(self, DataType::Fp32 | DataType::Fp64 | DataType::Fp16)
    }

    /// Decodes one little-endian element (`bytes.len()` is the element size).
    fn decode_le(self, b: &[u8]) -> f64 {
        let a = |n: usize| -> [u8; 8] {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&b[..n]);
            x
        };
        match self {
            DataType::Fp32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Fp64 => f64::from_le_bytes(a(8)),
            DataType::Int8 => b[0] as i8 as f64,
            DataType::Uint8 => b[0] as f64,
            DataType::Int16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            DataType::Uint16 => u16::from_le_bytes([b[0], b[1]]) as f64,
            DataType::Int32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Uint32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            DataType::Int64 => i64::from_le_bytes(a(8)) as f64,
            DataType::Uint64 => u64::from_le_bytes(a(8)) as f64,
            DataType::Bool | DataType::Bytes | DataType::Fp16 => f64::NAN,
        }
    }
}

/// A request split into its JSON part and the binary data of each input.
#[derive(Debug)]
pub struct RawRequest<'a> {
    /// The JSON request.
    pub request: InferenceRequest,
    /// Binary data per input (same order as `request.inputs`), `None` for JSON inputs.
    pub binary: Vec<Option<&'a [u8]>>,
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::BadRequest(message.into())
}

/// A parameter as a number (JSON number, or a string holding one).
pub fn number_parameter(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<f64>, AppError> {
    let Some(v) = params.and_then(|p| p.get(key)) else { return Ok(None) };
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    x.filter(|x| x.is_finite()).map(Some).ok_or_else(|| bad(format!("parameter '{key}' must be a number, got {v}")))
}

/// A parameter as a boolean (JSON bool, or the strings `true`/`false`).
pub fn bool_parameter(params: Option<&Map<String, Value>>, key: &str) -> Result<Option<bool>, AppError> {
    let Some(v) = params.and_then(|p| p.get(key)) else { return Ok(None) };
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
        _ => Err(bad(format!("parameter '{key}' must be a boolean, got {v}"))),
    }
}

impl<'a> RawRequest<'a> {
    /// Parses a body; `header_length` is the `Inference-Header-Content-Length` value, if sent.
    pub fn parse(body: &'a [u8], header_length: Option<&str>) -> Result<Self, AppError> {
        let json_len = match header_length {
            None => body.len(),
            Some(s) => {
                let n: usize = s
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("Inference-Header-Content-Length '{s}' is not a byte count")))?;
                if n > body.len() {
                    return Err(bad(format!(
                        "Inference-Header-Content-Length {n} exceeds the body length {}",
                        body.len()
                    )));
                }
                n
            }
        };
        let request: InferenceRequest = serde_json::from_slice(&body[..json_len])
            .map_err(|e| bad(format!("malformed inference request JSON: {e}")))?;
        let mut rest = &body[json_len..];
        let mut binary = Vec::with_capacity(request.inputs.len());
        for input in &request.inputs {
            let size = number_parameter(input.parameters.as_ref(), "binary_data_size")?;
            match (size, &input.data) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!("input '{}' has both JSON data and binary_data_size", input.name)));
                }
                (Some(s), None) => {
                    if s < 0.0 || s.fract() != 0.0 || s > rest.len() as f64 {
                        return Err(bad(format!(
                            "input '{}': binary_data_size {s} does not fit the {} binary bytes left in the body",
                            input.name,
                            rest.len()
                        )));
                    }
                    let (head, tail) = rest.split_at(s as usize);
                    binary.push(Some(head));
                    rest = tail;
                }
                (None, Some(_)) => binary.push(None),
                (None, None) => {
                    return Err(bad(format!("input '{}' has neither 'data' nor binary_data_size", input.name)));
                }
            }
        }
        if !rest.is_empty() {
            return Err(bad(format!("{} unclaimed bytes of binary data after the JSON request", rest.len())));
        }
        Ok(Self { request, binary })
    }

    /// Decodes the model input `io.input` into `(batch size, values)`.
    pub fn decode_input(&self, io: &ModelIo, max_batch: usize) -> Result<(usize, Vec<f32>), AppError> {
        let (name, sample_shape) = (io.input.as_str(), io.sample_shape.as_slice());
        let inputs = &self.request.inputs;
        if let Some(other) = inputs.iter().find(|i| i.name != name) {
            return Err(bad(format!("unknown input '{}': the model's inputs are [\"{name}\"]", other.name)));
        }
        let input = match inputs.as_slice() {
            [one] => one,
            [] => return Err(bad(format!("missing input '{name}': the model's inputs are [\"{name}\"]"))),
            _ => return Err(bad(format!("input '{name}' given {} times", inputs.len()))),
        };
        let per_sample: usize = sample_shape.iter().product();
        let shape: Vec<usize> = input.shape.iter().map(|&d| usize::try_from(d).unwrap_or(usize::MAX)).collect();
        let batched = shape.len() == sample_shape.len() + 1 && shape[1..] == *sample_shape;
        let flat = shape.len() == 2 && shape[1] == per_sample;
        if !(batched || flat) {
            return Err(bad(format!(
                "input '{name}' has shape {shape:?}; the model takes [N, {}] (or [N, {per_sample}])",
                sample_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )));
        }
        let n = shape[0];
        if n == 0 {
            return Err(bad("empty batch: the first dimension of the input shape is 0"));
        }
        if n > max_batch {
            return Err(bad(format!("batch of {n} samples exceeds max_batch_size {max_batch}")));
        }
        let count = n * per_sample;
        let dtype =
            DataType::parse(&input.datatype).ok_or_else(|| bad(format!("unknown datatype '{}'", input.datatype)))?;
        let Some(size) = dtype.numeric_size() else {
            return Err(bad(format!("datatype {} is not supported for input '{name}': send FP32", input.datatype)));
        };
        let mut values = Vec::with_capacity(count);
        match (&self.binary[0], &input.data) {
            (Some(bytes), _) => {
                if bytes.len() != count * size {
                    return Err(bad(format!(
                        "input '{name}': binary_data_size {} does not match shape {shape:?} of {} ({} bytes)",
                        bytes.len(),
                        input.datatype,
                        count * size
                    )));
                }
                values.extend(bytes.chunks_exact(size).map(|b| dtype.decode_le(b) as f32));
            }
            (None, Some(data)) => {
                flatten(data, dtype, count, &mut values)?;
                if values.len() > count {
                    return Err(bad(format!("input '{name}' has more than the {count} values shape {shape:?} needs")));
                }
                if values.len() < count {
                    return Err(bad(format!(
                        "input '{name}' has {} values, shape {shape:?} needs {count}",
                        values.len()
                    )));
                }
            }
            (None, None) => return Err(bad(format!("input '{name}' has no data"))),
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("input '{name}' contains values that are not finite f32 numbers")));
        }
        Ok((n, values))
    }

    /// The outputs to return (default: the declared ones), validated against `io`.
    pub fn outputs(&self, io: &ModelIo) -> Result<Vec<OutputSpec>, AppError> {
        let all_binary = bool_parameter(self.request.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
        let Some(requested) = &self.request.outputs else {
            return Ok((0..io.outputs.len())
                .map(|k| OutputSpec { kind: OutputKind::Declared(k), binary: all_binary, classification: None })
                .collect());
        };
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(requested.len());
        for r in requested {
            let kind = io.find(&r.name).ok_or_else(|| {
                bad(format!("unknown output '{}': the model's outputs are {:?}", r.name, io.output_names()))
            })?;
            if !seen.insert(r.name.as_str()) {
                return Err(bad(format!("output '{}' requested twice", r.name)));
            }
            let params = r.parameters.as_ref();
            let binary = bool_parameter(params, "binary_data")?.unwrap_or(all_binary);
            let classification = match number_parameter(params, "classification")? {
                None | Some(0.0) => None,
                Some(k) => {
                    let shape = io.sample_shape_of(kind);
                    let [len] = shape.as_slice() else {
                        return Err(bad(format!(
                            "classification applies to outputs of one dimension per sample; '{}' has shape {shape:?}",
                            r.name
                        )));
                    };
                    if kind == OutputKind::Label || k.fract() != 0.0 || k < 1.0 || k > *len as f64 {
                        return Err(bad(format!("classification {k} of '{}' must be a count in 1..={len}", r.name)));
                    }
                    Some(k as usize)
                }
            };
            out.push(OutputSpec { kind, binary, classification });
        }
        Ok(out)
    }
}

/// Appends the numbers of a flat or nested JSON array, stopping past `limit` values.
fn flatten(value: &Value, dtype: DataType, limit: usize, out: &mut Vec<f32>) -> Result<(), AppError> {
    match value {
        Value::Array(items) => {
            for item in items {
                if out.len() > limit {
                    return Ok(());
                }
                flatten(item, dtype, limit, out)?;
            }
            Ok(())
        }
        Value::Number(n) => {
            let x = if dtype.is_integer() {
                n.as_i64().map(|i| i as f64).or(n.as_u64().map(|u| u as f64))
            } else {
                n.as_f64()
            };
            let x = x.ok_or_else(|| bad(format!("value {n} is not of datatype {dtype:?}")))?;
            out.push(x as f32);
            Ok(())
        }
        other => Err(bad(format!("tensor data must be numbers, found {other}"))),
    }
}

/// An output a model serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Declared graph output `k`: FP32 `[N, ...shape]`.
    Declared(usize),
    /// Extra `label`: INT64 `[N]`.
    Label,
    /// Extra `logits`: FP32 `[N, K]`.
    Logits,
    /// Extra `probabilities`: FP32 `[N, K]`.
    Probabilities,
}

impl OutputKind {
    /// The name of an extra output (empty for declared outputs, which the model names).
    pub fn extra_name(self) -> &'static str {
        match self {
            OutputKind::Declared(_) => "",
            OutputKind::Label => moat_wire::params::OUTPUT_LABEL,
            OutputKind::Logits => moat_wire::params::OUTPUT_LOGITS,
            OutputKind::Probabilities => moat_wire::params::OUTPUT_PROBABILITIES,
        }
    }

    /// Datatype of the plain output.
    pub fn datatype(self) -> &'static str {
        match self {
            OutputKind::Label => "INT64",
            OutputKind::Declared(_) | OutputKind::Logits | OutputKind::Probabilities => "FP32",
        }
    }
}

/// One requested output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    /// Which output.
    pub kind: OutputKind,
    /// Return it as binary data.
    pub binary: bool,
    /// Top-k classification strings instead of the tensor.
    pub classification: Option<usize>,
}

/// `$metadata_tensor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataTensor {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: String,
    /// Shape, -1 for variable dimensions.
    pub shape: Vec<i64>,
}

fn batched(shape: &[usize]) -> Vec<i64> {
    std::iter::once(-1).chain(shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX))).collect()
}

/// The `inputs` and `outputs` metadata of a model: its graph's own tensors (-1: the batch).
pub fn io_metadata(io: &ModelIo) -> (Vec<MetadataTensor>, Vec<MetadataTensor>) {
    let inputs =
        vec![MetadataTensor { name: io.input.clone(), datatype: "FP32".into(), shape: batched(&io.sample_shape) }];
    let outputs = io
        .outputs
        .iter()
        .map(|(name, shape)| MetadataTensor { name: name.clone(), datatype: "FP32".into(), shape: batched(shape) })
        .collect();
    (inputs, outputs)
}

/// The extra outputs a request may name, in the same format (listed apart from the model's own
/// `outputs`, as they are moat's, not the graph's).
pub fn extra_metadata(io: &ModelIo) -> Vec<MetadataTensor> {
    io.extras()
        .into_iter()
        .map(|k| MetadataTensor {
            name: k.extra_name().into(),
            datatype: k.datatype().into(),
            shape: batched(&io.sample_shape_of(k)),
        })
        .collect()
}

/// Values of an output tensor.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TensorValues {
    /// FP32.
    F32(Vec<f32>),
    /// INT64.
    I64(Vec<i64>),
    /// BYTES (UTF-8 strings).
    Bytes(Vec<String>),
}

impl TensorValues {
    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::Bytes(v) => {
                v.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect()
            }
        }
    }
}

/// One output tensor of a response.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Name.
    pub name: String,
    /// Datatype.
    pub datatype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: TensorValues,
    /// Send as binary data.
    pub binary: bool,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct ResponseOutputJson<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorValues>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Map<String, Value>>,
    outputs: Vec<ResponseOutputJson<'a>>,
}

/// An encoded response body: JSON alone, or a JSON header followed by binary tensors.
#[derive(Debug)]
pub struct EncodedResponse {
    /// The body.
    pub body: Vec<u8>,
    /// JSON length when binary data follows (the `Inference-Header-Content-Length` value).
    pub header_length: Option<usize>,
}

/// Encodes `$inference_response`.
pub fn encode_response(
    model_name: &str,
    model_version: Option<&str>,
    id: Option<&str>,
    parameters: Option<&Map<String, Value>>,
    outputs: &[OutputTensor],
) -> Result<EncodedResponse, AppError> {
    let mut binary = Vec::new();
    let mut json_outputs = Vec::with_capacity(outputs.len());
    for o in outputs {
        if o.binary {
            let bytes = o.data.to_le_bytes();
            json_outputs.push(ResponseOutputJson {
                name: &o.name,
                datatype: o.datatype,
                shape: &o.shape,
                parameters: Some(BinarySize { binary_data_size: bytes.len() }),
                data: None,
            });
            binary.extend(bytes);
        } else {
            json_outputs.push(ResponseOutputJson {
                name: &o.name,
                datatype: o.datatype,
                shape: &o.shape,
                parameters: None,
                data: Some(&o.data),
            });
        }
    }
    let json = ResponseJson { model_name, model_version, id, parameters, outputs: json_outputs };
    let mut body = serde_json::to_vec(&json).map_err(AppError::internal)?;
    if binary.is_empty() {
        return Ok(EncodedResponse { body, header_length: None });
    }
    let header_length = Some(body.len());
    body.extend(binary);
    Ok(EncodedResponse { body, header_length })
}

/// Triton's classification strings `"value:index[:label]"` of the top `k` values of each row.
pub fn classification(rows: &[Vec<f32>], k: usize, labels: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::with_capacity(rows.len() * k);
    for row in rows {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        for &i in order.iter().take(k) {
            out.push(match labels.and_then(|l| l.get(i)) {
                Some(name) => format!("{}:{i}:{name}", row[i]),
                None => format!("{}:{i}", row[i]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<RawRequest<'_>, AppError> {
        RawRequest::parse(json.as_bytes(), None)
    }

    fn io(input: &str, sample_shape: &[usize], outputs: &[(&str, usize)]) -> ModelIo {
        ModelIo {
            input: input.into(),
            sample_shape: sample_shape.to_vec(),
            outputs: outputs.iter().map(|(n, k)| (n.to_string(), vec![*k])).collect(),
            classes: outputs.first().map_or(0, |o| o.1),
        }
    }

    #[test]
    fn decodes_flat_nested_and_converted_inputs() -> Result<(), AppError> {
        let flat =
            request(r#"{"inputs":[{"name":"input","shape":[2,1,2,2],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#)?;
        assert_eq!(
            flat.decode_input(&io("input", &[1, 2, 2], &[("y", 3)]), 8)?,
            (2, vec![1., 2., 3., 4., 5., 6., 7., 8.])
        );
        let nested =
            request(r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP64","data":[[1.5,2,3,4],[5,6,7,8]]}]}"#)?;
        assert_eq!(nested.decode_input(&io("input", &[1, 2, 2], &[("y", 3)]), 8)?.1[0], 1.5);
        let ints = request(r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT32","data":[1,-2,3,4]}]}"#)?;
        assert_eq!(ints.decode_input(&io("input", &[4], &[("y", 3)]), 8)?.1, vec![1., -2., 3., 4.]);
        Ok(())
    }

    #[test]
    fn rejects_inputs_that_do_not_fit() -> Result<(), AppError> {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                r#"unknown input 'x': the model's inputs are ["input"]"#,
            ),
            (r#"{"inputs":[]}"#, "missing input 'input'"),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                "given 2 times",
            ),
            (r#"{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#, "has shape"),
            (r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}"#, "has 3 values"),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
                "more than the 4 values",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"BYTES","data":["a","b","c","d"]}]}"#,
                "not supported",
            ),
            (r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"float","data":[1,2,3,4]}]}"#, "unknown datatype"),
            (r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,"2",3,4]}]}"#, "must be numbers"),
            (r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT8","data":[1,2.5,3,4]}]}"#, "not of datatype"),
            (r#"{"inputs":[{"name":"input","shape":[0,4],"datatype":"FP32","data":[]}]}"#, "empty batch"),
            (r#"{"inputs":[{"name":"input","shape":[9,4],"datatype":"FP32","data":[]}]}"#, "exceeds max_batch_size"),
        ];
        for (json, needle) in cases {
            let err = request(json)?
                .decode_input(&io("input", &[4], &[("y", 3)]), 8)
                .err()
                .ok_or(AppError::BadRequest(json.into()))?;
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
        for bad_json in
            ["{", r#"{"inputs": 3}"#, r#"{"inputs":[{"name":"input","shape":[-1],"datatype":"FP32","data":[]}]}"#]
        {
            assert!(request(bad_json).is_err(), "{bad_json}");
        }
        Ok(())
    }

    #[test]
    fn splits_binary_tensors_after_the_json_header() -> Result<(), AppError> {
        let json =
            r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.as_bytes().to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend((-2.0f32).to_le_bytes());
        let len = json.len().to_string();
        let raw = RawRequest::parse(&body, Some(&len))?;
        assert_eq!(raw.decode_input(&io("input", &[2], &[("y", 3)]), 4)?, (1, vec![1.5, -2.0]));
        // Wrong sizes are errors, not panics.
        assert!(RawRequest::parse(&body, Some("100000")).is_err());
        assert!(RawRequest::parse(&body[..body.len() - 1], Some(&len)).is_err());
        let mut extra = body.clone();
        extra.push(0);
        assert!(RawRequest::parse(&extra, Some(&len)).is_err());
        let nan: Vec<u8> = json.bytes().chain(f32::NAN.to_le_bytes()).chain(0f32.to_le_bytes()).collect();
        assert!(RawRequest::parse(&nan, Some(&len))?.decode_input(&io("input", &[2], &[("y", 3)]), 4).is_err());
        Ok(())
    }

    #[test]
    fn output_selection_and_classification() -> Result<(), AppError> {
        let model = io("x", &[4], &[("prob", 10), ("aux", 3)]);
        let raw = request(
            r#"{"inputs":[],"parameters":{"binary_data_output":true},
                "outputs":[{"name":"label","parameters":{"binary_data":false}},{"name":"logits","parameters":{"classification":2}},
                           {"name":"aux"}]}"#,
        )?;
        let specs = raw.outputs(&model)?;
        assert_eq!(specs[0], OutputSpec { kind: OutputKind::Label, binary: false, classification: None });
        assert_eq!(specs[1], OutputSpec { kind: OutputKind::Logits, binary: true, classification: Some(2) });
        assert_eq!(specs[2], OutputSpec { kind: OutputKind::Declared(1), binary: true, classification: None });
        // Default: the declared outputs only.
        let default = request(r#"{"inputs":[]}"#)?.outputs(&model)?;
        assert_eq!(
            default.iter().map(|s| s.kind).collect::<Vec<_>>(),
            [OutputKind::Declared(0), OutputKind::Declared(1)]
        );
        assert_eq!(model.output_names(), ["prob", "aux", "logits", "probabilities", "label"]);
        // A declared output shadows the extra of the same name.
        let shadow = io("x", &[4], &[("logits", 10)]);
        assert_eq!(shadow.output_names(), ["logits", "probabilities", "label"]);
        let err = request(r#"{"inputs":[],"outputs":[{"name":"scores"}]}"#)?.outputs(&model).err();
        assert!(err.is_some_and(|e| e.to_string().contains(
            r#"unknown output 'scores': the model's outputs are ["prob", "aux", "logits", "probabilities", "label"]"#
        )));
        for bad_outputs in [
            r#"[{"name":"scores"}]"#,
            r#"[{"name":"label"},{"name":"label"}]"#,
            r#"[{"name":"logits","parameters":{"classification":11}}]"#,
            r#"[{"name":"aux","parameters":{"classification":4}}]"#,
            r#"[{"name":"label","parameters":{"classification":1}}]"#,
        ] {
            let json = format!(r#"{{"inputs":[],"outputs":{bad_outputs}}}"#);
            assert!(request(&json)?.outputs(&model).is_err(), "{bad_outputs}");
        }
        let labels = vec!["zero".to_string(), "one".into(), "two".into()];
        assert_eq!(classification(&[vec![0.5, 3.25, -1.0]], 2, Some(&labels)), vec!["3.25:1:one", "0.5:0:zero"]);
        assert_eq!(classification(&[vec![1.0, 1.0]], 2, None), vec!["1:0", "1:1"]);
        Ok(())
    }

    #[test]
    fn encodes_json_and_binary_outputs() -> Result<(), Box<dyn std::error::Error>> {
        let logits = OutputTensor {
            name: "logits".into(),
            datatype: "FP32",
            shape: vec![1, 2],
            data: TensorValues::F32(vec![0.1, -2.5]),
            binary: false,
        };
        let json = encode_response("m", Some("1"), Some("42"), None, std::slice::from_ref(&logits))?;
        assert_eq!(json.header_length, None);
        assert_eq!(
            std::str::from_utf8(&json.body)?,
            r#"{"model_name":"m","model_version":"1","id":"42","outputs":[{"name":"logits","datatype":"FP32","shape":[1,2],"data":[0.1,-2.5]}]}"#
        );
        let label = OutputTensor {
            name: "label".into(),
            datatype: "INT64",
            shape: vec![1],
            data: TensorValues::I64(vec![7]),
            binary: true,
        };
        let mixed = encode_response("t", None, None, None, &[logits, label])?;
        let n = mixed.header_length.ok_or("binary")?;
        let header: Value = serde_json::from_slice(&mixed.body[..n])?;
        assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(header.get("model_version").is_none() && header.get("id").is_none());
        assert_eq!(&mixed.body[n..], &7i64.to_le_bytes());
        let strings = TensorValues::Bytes(vec!["ab".into()]).to_le_bytes();
        assert_eq!(strings, vec![2, 0, 0, 0, b'a', b'b']);
        Ok(())
    }
}
