//! ONNX → [`Graph`]: the importer's state and the plumbing shared by the op handlers
//! (`ops.rs`).
//!
//! The importer walks the (topologically sorted) ONNX nodes once, keeping for every ONNX value
//! name what it stands for ([`Val`]): a moat value computed from the graph input, a constant, or
//! a pending zero padding that the next `Conv`/`AveragePool` absorbs. ONNX values carry a batch
//! dimension, moat values do not: a runtime ONNX value of shape `[N, d1, …, dk]` is a moat value
//! of per-sample shape `[d1, …, dk]`. The two shapes may differ in layout only (same elements,
//! same order: e.g. `[C, 1, 1]` in ONNX after `GlobalAveragePool`, `[C]` in moat); ops whose
//! meaning depends on the layout insert a `Reshape` first ([`Importer::materialize`]).

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::constant::{Const, LIMIT, checked_numel, decode_tensor};
use super::fold::{Arith, FOLD_BUDGET, FOLD_LIMIT, Folded};
use super::proto::{AttributeProto, DimensionValue, GraphProto, ModelProto, NodeProto, TypeValue, data_type};
use crate::error::{NnError, Result};
use crate::graph::{Graph, Node, Op, ValueId, node_shape};

/// The ONNX op types the importer understands (domain `ai.onnx`).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "Max",
    "MaxPool",
    "Mul",
    "Pad",
    "Pow",
    "PRelu",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Selu",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "Softsign",
    "Squeeze",
    "Sub",
    "Sum",
    "Swish",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];

/// Oldest `ai.onnx` opset the importer reads.
pub const MIN_OPSET: i64 = 7;
/// Newest `ai.onnx` opset the importer was written against; newer files import with a warning.
pub const MAX_OPSET: i64 = 21;

/// What an ONNX value name stands for during import.
#[derive(Clone, Debug)]
pub(super) enum Val {
    /// A value computed from the graph input: the moat value and the ONNX per-sample shape.
    Run {
        /// The moat value.
        id: ValueId,
        /// The ONNX shape without the batch dimension.
        shape: Vec<usize>,
    },
    /// A moat value with zero padding `[top, left, bottom, right]` still to apply (an ONNX `Pad`
    /// that the next `Conv` or `AveragePool` absorbs).
    Padded {
        /// The unpadded moat value.
        id: ValueId,
        /// Its ONNX per-sample shape (unpadded).
        shape: Vec<usize>,
        /// Pending padding.
        pads: [usize; 4],
        /// The `Pad` node, for errors.
        pad_node: String,
    },
    /// An initializer, decoded on use (index into `GraphProto.initializer`).
    Init(usize),
    /// A `Constant` node's value, or a constant folded at import time.
    Const(Rc<Const>),
}

/// One ONNX node being imported: the node and its name for errors.
pub(super) struct Ctx<'m> {
    /// The node.
    pub node: &'m NodeProto,
    /// Its position in the graph.
    pub index: usize,
    /// Its name, or `#index` when unnamed.
    pub label: String,
}

impl<'m> Ctx<'m> {
    /// An error about this node.
    pub fn err(&self, message: impl Into<String>) -> NnError {
        NnError::node(&self.label, &self.node.op_type, message)
    }

    /// The node's op type is not supported.
    pub fn unsupported(&self, op_type: String) -> NnError {
        NnError::UnsupportedOp { op_type, node: self.label.clone(), supported: SUPPORTED_OPS.join(", ") }
    }

    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&'m AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => a.i.map(Some).ok_or_else(|| self.err(format!("attribute '{name}' is not an integer"))),
        }
    }

    /// A float attribute.
    pub fn float(&self, name: &str) -> Result<Option<f32>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => a.f.map(Some).ok_or_else(|| self.err(format!("attribute '{name}' is not a float"))),
        }
    }

    /// An integer-list attribute.
    pub fn ints(&self, name: &str) -> Option<&'m [i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Result<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                let bytes = a.s.as_deref().ok_or_else(|| self.err(format!("attribute '{name}' is not a string")))?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| self.err(format!("attribute '{name}' is not UTF-8")))
            }
        }
    }

    /// Input `i`, `None` when absent or empty (an omitted optional input).
    pub fn input(&self, i: usize) -> Option<&'m str> {
        self.node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Output `i`, `None` when absent or empty.
    pub fn output(&self, i: usize) -> Option<&'m str> {
        self.node.output.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }
}

/// `[N, d1, …]` for messages about batched ONNX shapes.
pub(super) fn batched(shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once("N".to_string()).chain(shape.iter().map(|d| d.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

/// Converts an attribute or tensor value to a size in `lo..=LIMIT`.
pub(super) fn size(ctx: &Ctx<'_>, what: &str, value: i64, lo: usize) -> Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v >= lo && v <= LIMIT)
        .ok_or_else(|| ctx.err(format!("{what} = {value} is out of range")))
}

/// Normalises a possibly negative axis of a rank-`rank` tensor.
pub(super) fn axis(ctx: &Ctx<'_>, value: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if value < 0 { value + r } else { value };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(ctx.err(format!("axis {value} is out of range for a rank-{rank} value")))
    }
}

/// Import state. See the module documentation.
pub(super) struct Importer<'m> {
    /// The ONNX graph.
    pub graph: &'m GraphProto,
    /// The `ai.onnx` opset version.
    pub opset: i64,
    /// moat nodes built so far.
    pub nodes: Vec<Node>,
    /// moat shape of every value built so far.
    pub shapes: Vec<Vec<usize>>,
    /// What each ONNX value name stands for.
    values: HashMap<&'m str, Val>,
    /// How many times each ONNX value name is read (node inputs and graph outputs).
    consumers: HashMap<&'m str, usize>,
    /// For each moat value, the ONNX reads not yet imported. A bias can be folded into a layer
    /// only when the `Add` is the last reader of the layer's output.
    pub pending: Vec<usize>,
    /// For each moat value, how many live moat nodes read it.
    moat_readers: Vec<usize>,
    /// Indices of the `BatchNorm` nodes made from element-wise affine ops (`x − c`, `x / c`, …):
    /// the ones a following Conv or Dense may absorb.
    pub affine: HashSet<usize>,
    /// Elements of all constants folded so far (limited by [`FOLD_BUDGET`]).
    folded: usize,
    /// ONNX nodes already imported as part of a fused pattern (GELU's `Erf` and tanh forms).
    pub fused: HashSet<usize>,
    /// moat node names in use.
    names: HashSet<String>,
}

impl<'m> Importer<'m> {
    fn new(graph: &'m GraphProto, opset: i64) -> Self {
        let mut consumers: HashMap<&str, usize> = HashMap::new();
        let reads = graph.node.iter().flat_map(|n| n.input.iter()).chain(graph.output.iter().map(|o| &o.name));
        for name in reads.filter(|n| !n.is_empty()) {
            *consumers.entry(name.as_str()).or_default() += 1;
        }
        let values = graph
            .initializer
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.name.is_empty())
            .map(|(k, t)| (t.name.as_str(), Val::Init(k)))
            .collect();
        Self {
            graph,
            opset,
            nodes: Vec::new(),
            shapes: Vec::new(),
            values,
            consumers,
            pending: Vec::new(),
            moat_readers: Vec::new(),
            affine: HashSet::new(),
            folded: 0,
            fused: HashSet::new(),
            names: HashSet::new(),
        }
    }

    /// Binds the graph input (the first input that is not an initializer) to `ValueId::INPUT`
    /// and returns its per-sample shape.
    fn bind_input(&mut self) -> Result<Vec<usize>> {
        let graph = self.graph;
        let input = graph
            .input
            .iter()
            .find(|v| !self.values.contains_key(v.name.as_str()))
            .ok_or_else(|| NnError::Onnx("the graph has no input besides its initializers".into()))?;
        let name = input.name.as_str();
        let bad = |msg: String| NnError::Onnx(format!("graph input '{name}' {msg}"));
        let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(TypeValue::TensorType(t)) => t,
            None => return Err(bad("is not a tensor".into())),
        };
        if tensor.elem_type != data_type::FLOAT && tensor.elem_type != 0 {
            return Err(bad(format!("has element type {}; moat models take FLOAT inputs", tensor.elem_type)));
        }
        let dims = &tensor.shape.as_ref().ok_or_else(|| bad("has no shape".into()))?.dim;
        let show = || {
            let d: Vec<String> = dims
                .iter()
                .map(|d| match &d.value {
                    Some(DimensionValue::DimValue(v)) => v.to_string(),
                    Some(DimensionValue::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("[{}]", d.join(", "))
        };
        if dims.len() < 2 {
            return Err(bad(format!(
                "has shape {}; moat expects the batch dimension first, e.g. [N, C, H, W] or [N, F]",
                show()
            )));
        }
        if let Some(DimensionValue::DimValue(n)) = dims[0].value
            && n > 1
        {
            return Err(bad(format!(
                "has shape {} with a fixed batch size {n}; moat needs a symbolic or unit batch dimension",
                show()
            )));
        }
        let shape = dims[1..]
            .iter()
            .map(|d| match d.value {
                Some(DimensionValue::DimValue(v)) => u64::try_from(v).ok().filter(|&v| v >= 1),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| bad(format!("has shape {}; moat needs concrete, positive per-sample sizes", show())))?;
        let total = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let shape: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d <= LIMIT))
            .collect::<Option<Vec<usize>>>()
            .filter(|s| checked_numel(s).is_some())
            .ok_or_else(|| {
                let count = total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string());
                bad(format!("has shape {}: {count} values per sample, more than the {LIMIT} moat accepts", show()))
            })?;
        self.shapes.push(shape.clone());
        self.pending.push(0);
        self.moat_readers.push(0);
        self.bind(name, Val::Run { id: ValueId::INPUT, shape: shape.clone() });
        Ok(shape)
    }

    /// Binds an ONNX value name.
    pub fn bind(&mut self, name: &'m str, val: Val) {
        if let Val::Run { id, .. } | Val::Padded { id, .. } = &val {
            self.pending[id.0] += self.consumers.get(name).copied().unwrap_or(0);
        }
        self.values.insert(name, val);
    }

    /// Binds output `k` of the node to a runtime value.
    pub fn bind_output(&mut self, ctx: &Ctx<'m>, k: usize, id: ValueId, shape: Vec<usize>) -> Result<()> {
        let name = ctx.output(k).ok_or_else(|| ctx.err(format!("has no output {k}")))?;
        self.bind(name, Val::Run { id, shape });
        Ok(())
    }

    /// How many times an ONNX value name is read.
    pub fn consumers(&self, name: &str) -> usize {
        self.consumers.get(name).copied().unwrap_or(0)
    }

    /// Input `i` of the node and what it stands for.
    pub fn get(&self, ctx: &Ctx<'m>, i: usize) -> Result<(&'m str, Val)> {
        let name = ctx.input(i).ok_or_else(|| ctx.err(format!("input {i} is missing")))?;
        let val = self.values.get(name).cloned().ok_or_else(|| {
            ctx.err(format!("input '{name}' is not produced by an earlier node, an initializer or the graph input"))
        })?;
        Ok((name, val))
    }

    /// Whether `id` has no reader besides the ONNX node being imported (which has already
    /// read it): no later ONNX reads and no moat node reading it. Only then may the node change
    /// the layer that produces `id`.
    pub fn sole_reader(&self, id: ValueId) -> bool {
        self.pending.get(id.0) == Some(&0) && self.moat_readers.get(id.0) == Some(&0)
    }

    /// Records that a moat node no longer reads `id` (its reader was folded away).
    pub fn unread(&mut self, id: ValueId) {
        if let Some(r) = self.moat_readers.get_mut(id.0) {
            *r = r.saturating_sub(1);
        }
    }

    /// What the ONNX value `name` stands for, if it is bound yet.
    pub fn lookup(&self, name: &str) -> Option<Val> {
        self.values.get(name).cloned()
    }

    /// The value of a constant of one float element bound to `name` (`None` for anything
    /// else, or a name not bound yet).
    pub fn scalar(&self, name: &str) -> Option<f32> {
        let c = match self.values.get(name)? {
            Val::Const(c) => Rc::clone(c),
            Val::Init(k) => Rc::new(decode_tensor(&self.graph.initializer[*k]).ok()?),
            Val::Run { .. } | Val::Padded { .. } => return None,
        };
        match c.floats().ok()? {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// Whether input `i` of the node is a constant (an initializer or a folded value).
    pub fn is_constant(&self, ctx: &Ctx<'m>, i: usize) -> Result<bool> {
        Ok(matches!(self.get(ctx, i)?.1, Val::Init(_) | Val::Const(_)))
    }

    /// Binds output 0 to a folded constant, or fails naming the node.
    pub fn bind_folded(&mut self, ctx: &Ctx<'m>, folded: Folded) -> Result<()> {
        let c = folded.map_err(|m| ctx.err(m))?;
        let n = c.data.len();
        if n > FOLD_LIMIT || self.folded.saturating_add(n) > FOLD_BUDGET {
            return Err(ctx.err(format!(
                "folding would hold more than {FOLD_BUDGET} constant elements; moat folds small shape computations only"
            )));
        }
        self.folded += n;
        let out = ctx.output(0).ok_or_else(|| ctx.err("has no output"))?;
        self.bind(out, Val::Const(Rc::new(c)));
        Ok(())
    }

    /// Records one ONNX read of a moat value.
    pub fn read(&mut self, id: ValueId) {
        if let Some(p) = self.pending.get_mut(id.0) {
            *p = p.saturating_sub(1);
        }
    }

    /// Input `i` as a runtime value: its moat id and ONNX per-sample shape.
    pub fn runtime(&mut self, ctx: &Ctx<'m>, i: usize) -> Result<(ValueId, Vec<usize>)> {
        let (name, val) = self.get(ctx, i)?;
        match val {
            Val::Run { id, shape } => {
                self.read(id);
                Ok((id, shape))
            }
            Val::Padded { pad_node, .. } => Err(ctx.err(format!(
                "reads the output of Pad node '{pad_node}'; moat folds Pad only into a directly following Conv or AveragePool"
            ))),
            Val::Init(_) | Val::Const(_) => Err(ctx.err(format!(
                "input {i} ('{name}') is a constant; moat needs it computed from the graph input here"
            ))),
        }
    }

    /// Input `i` as a runtime value with any pending `Pad` padding `[top, left, bottom, right]`.
    pub fn runtime_padded(&mut self, ctx: &Ctx<'m>, i: usize) -> Result<(ValueId, Vec<usize>, [usize; 4])> {
        match self.get(ctx, i)? {
            (_, Val::Padded { id, shape, pads, .. }) => {
                self.read(id);
                Ok((id, shape, pads))
            }
            _ => self.runtime(ctx, i).map(|(id, shape)| (id, shape, [0; 4])),
        }
    }

    /// Input `i` as a constant (initializer or `Constant` output).
    pub fn constant(&self, ctx: &Ctx<'m>, i: usize) -> Result<Rc<Const>> {
        match self.get(ctx, i)? {
            (_, Val::Const(c)) => Ok(c),
            (_, Val::Init(k)) => Ok(Rc::new(decode_tensor(&self.graph.initializer[k])?)),
            (name, _) => Err(ctx.err(format!(
                "input {i} ('{name}') must be an initializer or a Constant, not a value computed from the graph input"
            ))),
        }
    }

    /// Optional input `i` as a constant.
    pub fn optional_constant(&self, ctx: &Ctx<'m>, i: usize) -> Result<Option<Rc<Const>>> {
        if ctx.input(i).is_none() { Ok(None) } else { self.constant(ctx, i).map(Some) }
    }

    /// Binds output 0 to the same thing as input 0 (`Identity`, inference-mode `Dropout`).
    pub fn alias(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let (_, val) = self.get(ctx, 0)?;
        if let Val::Run { id, .. } | Val::Padded { id, .. } = &val {
            self.read(*id);
        }
        let out = ctx.output(0).ok_or_else(|| ctx.err("has no output"))?;
        self.bind(out, val);
        Ok(())
    }

    /// Fails if any output from `from` on is read: moat computes only the first output(s).
    pub fn check_unused_outputs(&self, ctx: &Ctx<'m>, from: usize) -> Result<()> {
        for (k, name) in ctx.node.output.iter().enumerate().skip(from) {
            if !name.is_empty() && self.consumers(name) > 0 {
                return Err(ctx.err(format!(
                    "output {k} ('{name}') is used, but moat computes only the inference output of {}",
                    ctx.node.op_type
                )));
            }
        }
        Ok(())
    }

    /// A unique moat node name for the ONNX node (its name, else `OpType_index`), with an
    /// optional suffix for helper nodes.
    fn node_name(&mut self, ctx: &Ctx<'m>, suffix: Option<&str>) -> String {
        let base = if ctx.node.name.is_empty() {
            format!("{}_{}", ctx.node.op_type, ctx.index)
        } else {
            ctx.node.name.clone()
        };
        let base = match suffix {
            Some(s) => format!("{base}/{s}"),
            None => base,
        };
        let mut name = base.clone();
        let mut k = 0;
        while self.names.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.names.insert(name.clone());
        name
    }

    /// Appends a moat node, shape-checking it like [`Graph::new`] does, so errors read like
    /// every other graph error (naming the node).
    pub fn push(&mut self, ctx: &Ctx<'m>, suffix: Option<&str>, op: Op, inputs: Vec<ValueId>) -> Result<ValueId> {
        let name = self.node_name(ctx, suffix);
        let node = Node { name, op, inputs };
        let shape = node_shape(&self.shapes, &node)?;
        let Node { name, op, inputs } = node;
        // Every value has 1..=LIMIT elements, so later shape arithmetic cannot overflow.
        if checked_numel(&shape).is_none_or(|n| n == 0) {
            return Err(NnError::node(&name, op.kind(), format!("output of shape {shape:?} is empty or too large")));
        }
        for input in &inputs {
            if let Some(r) = self.moat_readers.get_mut(input.0) {
                *r += 1;
            }
        }
        self.shapes.push(shape);
        self.pending.push(0);
        self.moat_readers.push(0);
        self.nodes.push(Node { name, op, inputs });
        Ok(ValueId::of_node(self.nodes.len() - 1))
    }

    /// `id` in the layout of its ONNX shape `shape`, reshaping when moat's layout differs.
    pub fn materialize(&mut self, ctx: &Ctx<'m>, id: ValueId, shape: &[usize]) -> Result<ValueId> {
        if self.shapes[id.0] == shape {
            Ok(id)
        } else {
            self.push(ctx, Some("reshape"), Op::Reshape(shape.to_vec()), vec![id])
        }
    }

    /// Imports one ONNX node.
    fn node(&mut self, index: usize, node: &'m NodeProto) -> Result<()> {
        let label = if node.name.is_empty() { format!("#{index}") } else { node.name.clone() };
        let ctx = Ctx { node, index, label };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(ctx.unsupported(format!("{}.{}", node.domain, node.op_type)));
        }
        match node.op_type.as_str() {
            "Add" => self.arith(&ctx, Arith::Add),
            "AveragePool" => self.pool(&ctx, false),
            "BatchNormalization" => self.batch_norm(&ctx),
            "Cast" => self.cast(&ctx),
            "Clip" => self.clip(&ctx),
            "Concat" => self.concat(&ctx),
            "Constant" => self.constant_node(&ctx),
            "ConstantOfShape" => self.constant_of_shape(&ctx),
            "Conv" => self.conv(&ctx),
            "Div" => self.arith(&ctx, Arith::Div),
            "Dropout" => self.dropout(&ctx),
            "Elu" => self.elu(&ctx),
            "Erf" => self.erf(&ctx),
            "Gelu" => self.gelu(&ctx),
            "Flatten" => self.flatten(&ctx),
            "Gather" => self.gather(&ctx),
            "Gemm" => self.gemm(&ctx),
            "GlobalAveragePool" => self.global_avg_pool(&ctx),
            "HardSigmoid" => self.hard_sigmoid(&ctx),
            "HardSwish" => self.activation(&ctx, Op::HardSwish),
            "Identity" => self.alias(&ctx),
            "MatMul" => self.matmul(&ctx),
            "Max" => self.max(&ctx),
            "MaxPool" => self.pool(&ctx, true),
            "Mul" => self.arith(&ctx, Arith::Mul),
            "Pad" => self.pad(&ctx),
            "Pow" => self.pow(&ctx),
            "PRelu" => self.prelu(&ctx),
            "ReduceMean" => self.reduce_mean(&ctx),
            "Relu" => self.relu(&ctx),
            "LeakyRelu" => self.leaky_relu(&ctx),
            "Reshape" => self.reshape(&ctx),
            "Resize" | "Upsample" => self.resize(&ctx),
            "Selu" => self.selu(&ctx),
            "Shape" => self.shape(&ctx),
            "Sigmoid" => self.activation(&ctx, Op::Sigmoid),
            "Slice" => self.slice(&ctx),
            "Softmax" => self.softmax(&ctx),
            "Softplus" => self.activation(&ctx, Op::Softplus),
            "Softsign" => self.activation(&ctx, Op::Softsign),
            "Squeeze" => self.squeeze(&ctx),
            "Sub" => self.arith(&ctx, Arith::Sub),
            "Sum" => self.sum(&ctx),
            "Swish" => self.swish(&ctx),
            "Tanh" => self.activation(&ctx, Op::Tanh),
            "Transpose" => self.transpose(&ctx),
            "Unsqueeze" => self.unsqueeze(&ctx),
            other => Err(ctx.unsupported(other.to_string())),
        }
    }

    /// The graph output: ONNX graph output `index`, which must be a runtime value, and its ONNX
    /// per-sample shape.
    fn output(&self, index: usize) -> Result<(ValueId, Vec<usize>)> {
        let graph = self.graph;
        let info = graph
            .output
            .get(index)
            .ok_or_else(|| NnError::Onnx(format!("the graph has {} outputs, no output {index}", graph.output.len())))?;
        let name = info.name.as_str();
        match self.values.get(name) {
            Some(Val::Run { id, shape }) => Ok((*id, shape.clone())),
            Some(Val::Padded { pad_node, .. }) => {
                Err(NnError::Onnx(format!("graph output '{name}' is the output of Pad node '{pad_node}'")))
            }
            Some(Val::Init(_) | Val::Const(_)) => Err(NnError::Onnx(format!("graph output '{name}' is a constant"))),
            None => Err(NnError::Onnx(format!("graph output '{name}' is not produced by any node"))),
        }
    }

    /// The finished graph, without nodes the output does not depend on.
    fn finish(self, name: String, input_shape: Vec<usize>, output: ValueId) -> Result<Graph> {
        let mut live = vec![false; self.nodes.len()];
        if let Some(i) = output.node() {
            live[i] = true;
        }
        for i in (0..self.nodes.len()).rev() {
            if live[i] {
                for input in &self.nodes[i].inputs {
                    if let Some(j) = input.node() {
                        live[j] = true;
                    }
                }
            }
        }
        let mut new_id: Vec<ValueId> = vec![ValueId::INPUT; self.nodes.len() + 1];
        let mut nodes = Vec::new();
        for (i, mut node) in self.nodes.into_iter().enumerate() {
            if !live[i] {
                continue;
            }
            for input in &mut node.inputs {
                *input = new_id[input.0];
            }
            nodes.push(node);
            new_id[i + 1] = ValueId::of_node(nodes.len() - 1);
        }
        let dropped = live.iter().filter(|l| !**l).count();
        if dropped > 0 {
            tracing::debug!(dropped, "dropped ONNX nodes the output does not depend on");
        }
        Graph::new(name, input_shape, nodes, new_id[output.0])
    }
}

/// ONNX graphs are in single static assignment form: a node output may not reuse the name of
/// the graph input, an initializer or an earlier output (the later one would silently win).
fn check_single_assignment(graph: &GraphProto) -> Result<()> {
    let mut defined: HashSet<&str> =
        graph.input.iter().map(|i| i.name.as_str()).chain(graph.initializer.iter().map(|t| t.name.as_str())).collect();
    for (index, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if !defined.insert(out.as_str()) {
                let label = if node.name.is_empty() { format!("#{index}") } else { format!("'{}'", node.name) };
                return Err(NnError::Onnx(format!(
                    "{} node {label} defines value '{out}', which is already defined (ONNX values are assigned once)",
                    node.op_type
                )));
            }
        }
    }
    Ok(())
}

/// Imports a decoded ONNX model computing its graph output `output` (nodes that output does not
/// depend on are dropped); `fallback_name` names the graph when the file does not. Also returns
/// the output's ONNX per-sample shape (the graph's holds the same elements, possibly in another
/// layout: `[C]` for a pooled `[C, 1, 1]`).
pub(super) fn import_model(model: &ModelProto, fallback_name: &str, output: usize) -> Result<(Graph, Vec<usize>)> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| NnError::Onnx("the model has no graph (empty or truncated file?)".into()))?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .ok_or_else(|| NnError::Onnx("the model imports no ai.onnx opset".into()))?;
    if opset < MIN_OPSET {
        return Err(NnError::Onnx(format!(
            "opset {opset} is older than {MIN_OPSET}, the oldest moat reads; upgrade it with onnx.version_converter"
        )));
    }
    if opset > MAX_OPSET {
        tracing::warn!(opset, "ONNX opset newer than {MAX_OPSET}; importing with opset-{MAX_OPSET} semantics");
    }
    check_single_assignment(graph)?;
    let mut importer = Importer::new(graph, opset);
    let input_shape = importer.bind_input()?;
    for (index, node) in graph.node.iter().enumerate() {
        if !importer.fused.contains(&index) {
            importer.node(index, node)?;
        }
    }
    let (output, shape) = importer.output(output)?;
    let name = if graph.name.is_empty() { fallback_name.to_string() } else { graph.name.clone() };
    let graph = importer.finish(name, input_shape, output)?;
    tracing::debug!(model = graph.name(), nodes = graph.nodes().len(), opset, "imported ONNX model");
    Ok((graph, shape))
}
