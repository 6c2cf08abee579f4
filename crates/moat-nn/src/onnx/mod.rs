//! ONNX import and export.
//!
//! moat reads and writes ONNX files itself: the protobuf messages are hand-written prost
//! structs for the subset of `onnx.proto` it needs ([`proto`]), so no `protoc` and no ONNX
//! runtime are involved.
//!
//! **Import** ([`import_onnx`], [`load_onnx`]) reads `ai.onnx` opsets 7–21, older attribute
//! forms included (opset-7/8 `BatchNormalization` with `spatial` = 1). The model input is
//! the first graph input that is not an initializer, of shape `[N, …]` with a symbolic or unit
//! batch `N`; moat's graph works on one sample, so the batch dimension is dropped everywhere.
//! A graph computes one output (the first); [`load_onnx_outputs`] imports one graph per declared
//! output, with the file's tensor names ([`Signature`]), for serving every output under its own
//! name.
//! Supported ops ([`SUPPORTED_OPS`]) and how they map:
//!
//! | ONNX | moat | conditions |
//! |---|---|---|
//! | `Conv` | `Conv2d` | 2-D, any `group` dividing the channels (depthwise: `group` = C), `dilations` = 1; `auto_pad` resolved to explicit padding |
//! | `Gemm` | `Dense` | `transA` = 0; `transB`, `alpha`, `beta` folded into the weights; `B`, `C` constant |
//! | `MatMul` (+ `Add`) | `Dense` | constant `[K, M]` right operand; a following per-output constant `Add` becomes the bias |
//! | `Add` | `Add` | two computed values of equal shape (residual) |
//! | `Sum` | `Add`s | computed values of equal shape: one passes through, more are added in order |
//! | `Max` | `Max` | computed values of equal shape (no broadcasting): one passes through; exact in every execution (`b + ReLU(a − b)` per further input) |
//! | `Add`, `Sub`, `Mul`, `Div` with a constant | `BatchNorm`, or folded | scalar or per-channel constant: the exact affine map `x·s + t` (`x / c` as `x·(1/c)`, exact for powers of two), also `c + x`, `c − x`, `c·x`; `c / x` is refused. Folded into a following Dense or unpadded Conv when nothing else reads it; `Add`/`Sub` right after a Dense/Conv read by nothing else becomes its bias |
//! | `Concat` | `Concat` | computed values along the channel axis: ONNX axis 1 (−3 for `[N, C, H, W]`, −1 for `[N, F]`) |
//! | `BatchNormalization` | `BatchNorm` | inference mode |
//! | `Relu`, `Clip(min = 0)` | `Relu` | `Clip` without an upper bound |
//! | `Clip` | `Clip` | both bounds finite, `min < max` (ReLU6: 0 and 6) |
//! | `LeakyRelu` | `LeakyRelu` | `alpha` finite (default 0.01) |
//! | `PRelu` | `LeakyRelu` | one slope (all elements of the constant slope equal) |
//! | `ReduceMean` | `GlobalAvgPool` | axes {2, 3} of `[N, C, H, W]` (attribute before opset 18, input from 18), `keepdims` 0 or 1 |
//! | `HardSigmoid` | `HardSigmoid` | `alpha`, `beta` finite (defaults 0.2, 0.5); fixed point and two-party per [`crate::approx`] |
//! | `HardSwish`, or `Mul(x, HardSigmoid(x; 1/6, 1/2))` | `HardSwish` | `HardSwish` from opset 14; the product is how it is written before (moat's export, PyTorch's); fixed point and two-party per [`crate::approx`] |
//! | `Sigmoid`, `Tanh` | `Sigmoid`, `Tanh` | fixed point and two-party: odd splines, [`crate::approx`] |
//! | `Swish`, or `Mul(x, Sigmoid(x))` | `Silu` | `Swish` (opset 24) with `alpha` = 1; the product is how PyTorch writes SiLU; fixed point and two-party: ReLU plus a spline, [`crate::approx`] |
//! | `Gelu`, or `Div(x, √2)` (or `Mul(x, 1/√2)`) → `Erf` → `Add 1` → `Mul x` → `Mul 0.5` (either operand order; `0.5·x` may be formed first) | `Gelu` | `Gelu` from opset 20 with `approximate` = "none"; the `Erf` pattern is how exporters write it before, each intermediate read only by the next step; any other `Erf` is refused; fixed point and two-party: ReLU plus a spline, [`crate::approx`] |
//! | `Gelu` with `approximate` = "tanh", or `Pow(x, 3)` (or `Mul(x, Mul(x, x))`) → `Mul 0.044715` → `Add x` → `Mul √(2/π)` → `Tanh` → `Add 1` → `Mul x` → `Mul 0.5` (either operand order; `0.5·x` may be formed first) | `GeluTanh` | `Gelu` from opset 20; the pattern is how exporters write it before, each intermediate read only by the next step; any other `Pow`, or product of computed values, is refused; fixed point and two-party: ReLU plus a spline with its own knots, [`crate::approx`] |
//! | `Elu` | `Elu` | `alpha` finite, \|alpha\| ≤ 16 (default 1); fixed point and two-party: ReLU plus a spline, [`crate::approx`] |
//! | `Selu` | `Selu` | `alpha` finite (default 1.6733), 0 < `gamma` ≤ 16 (default 1.0507), \|gamma·alpha\| ≤ 16; fixed point and two-party: ELU's spline scaled by γα plus γ·ReLU rounded, input range γ·\|x\| < 4096, [`crate::approx`] |
//! | `Softsign` | `Softsign` | fixed point and two-party: an odd spline as `Tanh`'s, [`crate::approx`] |
//! | `Softplus` | `Softplus` | fixed point and two-party: ReLU plus a spline of `ln(1 + e^−\|x\|)`, [`crate::approx`] |
//! | `MaxPool`, `AveragePool` | `MaxPool`, `AvgPool` | 2-D, no dilation, `ceil_mode` only when it changes nothing, average pools with padding need `count_include_pad` = 1 |
//! | `GlobalAveragePool` | `GlobalAvgPool` | |
//! | `Flatten` | `Flatten` | `axis` = 1 |
//! | `Reshape`, `Squeeze`, `Unsqueeze` | `Reshape` | constant (or folded) shape; the batch axis stays first |
//! | `Transpose` | `Transpose`, `Reshape`, or nothing | the batch axis stays first; a `Reshape` when only size-1 axes move, nothing for the identity |
//! | `Resize` (opset 10+), `Upsample` (7–9) | `Concat` of copies, `Reshape`, `Transpose`, `Reshape` | `nearest` mode, whole spatial factors 1–64 (scales or sizes, `axes` from opset 18), batch and channel factors 1, and a coordinate rule that copies each pixel into a block (ONNX's default, PyTorch's `asymmetric`/`floor`, … checked pixel by pixel); free in two-party inference |
//! | `Pad` | (folded) | constant zero padding of the spatial axes, directly before `Conv` or `AveragePool` |
//! | `Softmax` | `Softmax` | per sample over a 1-D value |
//! | `Cast` | (alias) | of a computed value: to `FLOAT` only |
//! | `Identity`, `Dropout`, `Constant` | (aliases, constants) | `Dropout`'s mask unused |
//! | `Shape`, `Gather`, `Slice`, `ConstantOfShape`, and the ops above on constants | (folded) | see below |
//!
//! **Constant folding.** Ops whose inputs are all constants are evaluated at import time:
//! `Shape`, `Gather`, `Slice` (attribute and input forms), `Cast` (to `FLOAT`, `DOUBLE`,
//! `INT64`, `INT32`, `BOOL`), `ConstantOfShape`, `Concat`, `Reshape`, `Squeeze`, `Unsqueeze`,
//! `Transpose`, `Add`, `Sub`, `Mul`, `Div`, `Identity`. This is what turns PyTorch's
//! `x.view(x.size(0), -1)` (`Shape → Gather → Unsqueeze → Concat → Reshape`) into one
//! `Reshape`. `Shape` of a computed value is `[N, d1, …]`: the per-sample sizes are static in
//! moat, the batch size `N` is kept as a symbol that data-movement ops carry along and
//! arithmetic keeps only where it stays exactly `N` (`N·1`, `N + 0`); a reshape target may use
//! it as its first entry. Anything else that computes with `N` (e.g. `ConstantOfShape` of a
//! batched shape) is an error naming the node. Folded constants are limited in size (4 Mi
//! elements each, 16 Mi per model).
//!
//! Anything else is [`NnError::UnsupportedOp`] naming the op, the node and the supported list;
//! undecodable bytes are [`NnError::Onnx`]; shape errors name the node. Node names are kept
//! (made unique; unnamed nodes become `OpType_index`). Nodes the output does not depend on are
//! dropped.
//!
//! **Export** ([`export_onnx`], [`save_onnx`]) writes opset 13 / IR version 8 with input
//! `"input"` of shape `[N, …]` and output `"output"`, weights as little-endian `raw_data`. The
//! round trip `import_onnx(export_onnx(g))` computes bit-identical float outputs.
//!
//! ```
//! use moat_nn::{onnx, zoo, FloatExecutor};
//!
//! let graph = zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 7)?;
//! let bytes = onnx::export_onnx(&graph)?;
//! let back = onnx::import_onnx(&bytes)?;
//! let x = vec![0.25f32; 784];
//! assert_eq!(FloatExecutor::run(&graph, &x)?, FloatExecutor::run(&back, &x)?);
//! # Ok::<(), moat_nn::NnError>(())
//! ```

mod affine;
mod const_ops;
mod constant;
mod export;
mod fold;
mod gelu;
mod import;
mod ops;
pub mod proto;
mod resize;

use std::path::Path;

use prost::Message;

use crate::error::{NnError, Result};
use crate::graph::Graph;

pub use export::{EXPORT_IR_VERSION, EXPORT_OPSET};
pub use import::{MAX_OPSET, MIN_OPSET, SUPPORTED_OPS};

/// Decodes ONNX protobuf bytes; errors carry prost's message.
pub fn decode_model(bytes: &[u8]) -> Result<proto::ModelProto> {
    proto::ModelProto::decode(bytes).map_err(|e| NnError::Onnx(format!("cannot decode the model protobuf: {e}")))
}

/// Imports a decoded model (see the module documentation): the graph computing its first
/// output.
pub fn import_model(model: &proto::ModelProto) -> Result<Graph> {
    warn_unused_outputs(model);
    import::import_model(model, "onnx", 0).map(|(graph, _)| graph)
}

/// Imports an ONNX model from its serialised bytes.
pub fn import_onnx(bytes: &[u8]) -> Result<Graph> {
    import_model(&decode_model(bytes)?)
}

/// Loads an ONNX file; the model is named after the graph, or the file stem when the graph has
/// no name.
pub fn load_onnx(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|e| NnError::io(path, e))?;
    let model = decode_model(&bytes)?;
    warn_unused_outputs(&model);
    import::import_model(&model, file_stem(path), 0).map(|(graph, _)| graph)
}

fn file_stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("onnx")
}

fn warn_unused_outputs(model: &proto::ModelProto) {
    if let Some(g) = &model.graph
        && g.output.len() > 1
    {
        tracing::warn!(
            outputs = g.output.len(),
            "ONNX graph has several outputs; this graph computes the first (load_onnx_outputs computes each)"
        );
    }
}

/// The tensors an ONNX model declares, by the names its graph gives them — what a serving API
/// calls them (Triton serves a model's own tensor names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The model input: the first graph input that is not an initializer.
    pub input: String,
    /// The graph outputs, in declaration order.
    pub outputs: Vec<String>,
    /// The per-sample ONNX shape of each output, as the graph computes it (`[C, 1, 1]` after
    /// a `GlobalAveragePool`, where moat's graph holds the same elements as `[C]`); what a
    /// serving API declares and answers. Empty until the outputs are imported
    /// ([`import_outputs`]).
    pub output_shapes: Vec<Vec<usize>>,
}

/// A model with every declared output: `graphs[k]` computes `signature.outputs[k]`, without the
/// nodes that output does not depend on (`graphs[0]` is what [`load_onnx`] returns).
#[derive(Clone, Debug, PartialEq)]
pub struct MultiOutput {
    /// The declared tensor names.
    pub signature: Signature,
    /// One graph per declared output.
    pub graphs: Vec<Graph>,
}

/// The declared input and output names of a decoded model (without output shapes: those come
/// from importing them, [`import_outputs`]).
pub fn signature(model: &proto::ModelProto) -> Result<Signature> {
    let graph = model.graph.as_ref().ok_or_else(|| NnError::Onnx("the model has no graph".into()))?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|v| !initializers.contains(v.name.as_str()))
        .ok_or_else(|| NnError::Onnx("the graph has no input besides its initializers".into()))?;
    if graph.output.is_empty() {
        return Err(NnError::Onnx("the graph has no output".into()));
    }
    Ok(Signature {
        input: input.name.clone(),
        outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        output_shapes: Vec::new(),
    })
}

/// Imports every declared output of a decoded model (one import per output; `fallback_name`
/// names the graphs when the file does not).
pub fn import_outputs(model: &proto::ModelProto, fallback_name: &str) -> Result<MultiOutput> {
    let mut signature = signature(model)?;
    let (graphs, shapes) = (0..signature.outputs.len())
        .map(|k| import::import_model(model, fallback_name, k))
        .collect::<Result<(Vec<_>, Vec<_>)>>()?;
    signature.output_shapes = shapes;
    Ok(MultiOutput { signature, graphs })
}

/// Loads an ONNX file with every declared output (see [`import_outputs`], [`load_onnx`]).
pub fn load_onnx_outputs(path: &Path) -> Result<MultiOutput> {
    let bytes = std::fs::read(path).map_err(|e| NnError::io(path, e))?;
    import_outputs(&decode_model(&bytes)?, file_stem(path))
}

/// The ONNX model of a graph (opset 13, IR version 8; see the module documentation).
pub fn export_model(graph: &Graph) -> Result<proto::ModelProto> {
    export::export_model(graph)
}

/// Serialises a graph as ONNX bytes.
pub fn export_onnx(graph: &Graph) -> Result<Vec<u8>> {
    Ok(export_model(graph)?.encode_to_vec())
}

/// Writes a graph as an ONNX file.
pub fn save_onnx(graph: &Graph, path: &Path) -> Result<()> {
    let bytes = export_onnx(graph)?;
    std::fs::write(path, bytes).map_err(|e| NnError::io(path, e))
}
