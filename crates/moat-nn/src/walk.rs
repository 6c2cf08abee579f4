//! The one walk over a layer graph, shared by every execution.
//!
//! moat runs a graph four ways — float, fixed point, simulated two-party, real two-party — and
//! all four take the same steps: hold one value slot per [`ValueId`], visit the nodes in order,
//! decide what each op does at which scale, free a value after its last reader, and hand back
//! the logits. [`run`] does that once; an execution supplies only a [`Kernel`]: what a linear
//! layer, a ReLU, a max pool, a sum and a concatenation *are* on its values (floats, ring
//! elements, shared ring elements over a channel).
//!
//! Each op's rule lives here, in [`Step::of`]:
//!
//! * linear ops (conv, dense, batch norm, average pools) → [`Kernel::linear`], truncated at
//!   once unless the [`RescalePlan`] defers the truncation past the ReLU that reads them;
//! * ReLU → [`Kernel::relu`], truncating its output when its input was left at `2f`;
//! * clip → [`Kernel::clip`], rescaled like a ReLU (`clip(x, a, b) = a + ReLU(x − a) − ReLU(x − b)`);
//! * max pool → [`Kernel::max_pool`]; under [`RescalePlan::pool_first`] a ReLU that only the
//!   pool reads is moved behind it: the ReLU passes its input on ([`Step::MovedRelu`]) and the
//!   pool runs [`Kernel::relu`] on its own output ([`Step::MaxPool`]'s `relu`);
//! * leaky ReLU → [`Kernel::leaky_relu`] (input at `f`, output truncated);
//! * hard sigmoid → [`Kernel::hard_sigmoid`], hard swish → [`Kernel::hard_swish`], sigmoid,
//!   tanh, SiLU, GELU and ELU → [`Kernel::spline`] (input at `f`, output at `f`;
//!   [`crate::approx`]);
//! * add → [`Kernel::add`], each operand lifted by `2^f` when it meets a deferred one;
//! * concat → [`Kernel::concat`];
//! * max → [`Kernel::max`] (inputs at `f`: no linear layer defers its truncation into a max);
//! * flatten, reshape → the value itself (row-major values do not move);
//! * transpose → [`Kernel::transpose`] with the public [`crate::kernels::permutation`];
//! * softmax → [`Kernel::softmax`] (the ring executions stop at the logits, its input).
//!
//! The float execution uses [`RescalePlan::unfused`] (no deferred truncation, and it ignores
//! scales anyway); the fixed-point executor too; both two-party backends use
//! [`RescalePlan::fused`], which is exact, so all agree bit for bit with the fixed-point
//! executor on honest runs.

use crate::graph::{Graph, Node, Op, ValueId};
use crate::plan::RescalePlan;

/// An input of a node was freed before the node read it (a bug in the walk or the graph).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("walk: an input of node '{node}' was released before it was read")]
pub struct Released {
    /// The node's name.
    pub node: String,
}

impl From<Released> for crate::NnError {
    fn from(e: Released) -> Self {
        crate::NnError::Graph(e.to_string())
    }
}

/// One node as the walk hands it to a kernel.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// Index of the node in the graph.
    pub index: usize,
    /// The node.
    pub node: &'a Node,
    /// Per-sample shape of the node's first input.
    pub input_shape: &'a [usize],
    /// Per-sample shape of the node's output.
    pub output_shape: &'a [usize],
    /// The first input carries `2f` fractional bits (else `f`).
    pub input_double: bool,
    /// The output carries `2f` fractional bits (else `f`).
    pub output_double: bool,
}

impl Site<'_> {
    /// Fractional bits of the first input when a factor has `frac_bits`.
    pub fn input_frac_bits(&self, frac_bits: u32) -> u32 {
        if self.input_double { 2 * frac_bits } else { frac_bits }
    }

    /// Fractional bits of the output when a factor has `frac_bits`.
    pub fn output_frac_bits(&self, frac_bits: u32) -> u32 {
        if self.output_double { 2 * frac_bits } else { frac_bits }
    }
}

/// What a node does, its scales decided: the op's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A linear op; `truncate`: its output is truncated by `f` bits at once (else it stays at
    /// `2f` for the ReLU behind it).
    Linear {
        /// Truncate at once.
        truncate: bool,
    },
    /// A ReLU; `truncate`: its input is at `2f` and its (non-negative) output is truncated.
    Relu {
        /// Truncate the output.
        truncate: bool,
    },
    /// A clip; `truncate`: its input is at `2f` and its output is truncated (as a ReLU's).
    Clip {
        /// Truncate the output.
        truncate: bool,
    },
    /// A leaky ReLU (or a PRelu: one slope per channel) on a value at `f` (its output is
    /// truncated).
    LeakyRelu,
    /// A hard sigmoid on a value at `f` (output at `f`).
    HardSigmoid,
    /// A hard swish on a value at `f` (output at `f`).
    HardSwish,
    /// A sigmoid, tanh, SiLU, GELU or ELU spline on a value at `f` (output at `f`).
    Spline,
    /// A ReLU moved behind the max pool that reads it ([`RescalePlan::pool_first`]): its
    /// input, passed on.
    MovedRelu,
    /// A max pool; `relu: Some(truncate)`: then the moved ReLU of its input, truncating its
    /// output when the input is at `2f` (`None`: no rescaling).
    MaxPool {
        /// The ReLU applied to the pooled values, and whether it truncates.
        relu: Option<bool>,
    },
    /// A sum of the inputs; an input is lifted by `2^f` when [`RescalePlan::lifts`] says so.
    Add,
    /// Concatenation of the inputs along the first axis.
    Concat,
    /// The element-wise maximum of the inputs (all at `f`).
    Max,
    /// Flatten or reshape: the value itself.
    Reshape,
    /// A softmax head.
    Softmax,
    /// A public permutation of the elements.
    Transpose,
}

impl Step {
    /// The rule for node `index` of `graph` under `plan`.
    pub fn of(graph: &Graph, plan: &RescalePlan, index: usize) -> Step {
        match &graph.nodes()[index].op {
            Op::Conv2d(_) | Op::Dense(_) | Op::BatchNorm(_) | Op::AvgPool(_) | Op::GlobalAvgPool => {
                Step::Linear { truncate: plan.truncates_linear(index) }
            }
            Op::Relu if plan.moves_relu(index) => Step::MovedRelu,
            Op::Relu => Step::Relu { truncate: plan.truncates_after_relu(index) },
            Op::Clip { .. } => Step::Clip { truncate: plan.truncates_after_relu(index) },
            Op::LeakyRelu { .. } | Op::PRelu { .. } => Step::LeakyRelu,
            Op::HardSigmoid { .. } => Step::HardSigmoid,
            Op::HardSwish => Step::HardSwish,
            Op::Sigmoid
            | Op::Tanh
            | Op::Silu
            | Op::Gelu
            | Op::GeluTanh
            | Op::Softplus
            | Op::Softsign
            | Op::Elu { .. }
            | Op::Selu { .. } => Step::Spline,
            Op::MaxPool(_) => Step::MaxPool { relu: plan.relu_after_pool(index) },
            Op::Add => Step::Add,
            Op::Concat => Step::Concat,
            Op::Max => Step::Max,
            Op::Flatten | Op::Reshape(_) => Step::Reshape,
            Op::Softmax => Step::Softmax,
            Op::Transpose(_) => Step::Transpose,
        }
    }

    /// Whether the step truncates its output.
    pub fn truncates(self) -> bool {
        matches!(
            self,
            Step::Linear { truncate: true }
                | Step::Relu { truncate: true }
                | Step::Clip { truncate: true }
                | Step::MaxPool { relu: Some(true) }
        )
    }
}

/// One execution's meaning of each step. See the module documentation.
pub trait Kernel {
    /// A value: floats, ring elements, or one party's shares of ring elements.
    type Value: Clone;
    /// The execution's error.
    type Error: From<Released>;

    /// Called before node `site` runs (traffic phases, timers).
    fn begin(&mut self, site: &Site<'_>) {
        let _ = site;
    }

    /// A linear op on `x`, truncated by `f` bits when `truncate`.
    fn linear(&mut self, site: &Site<'_>, x: &Self::Value, truncate: bool) -> Result<Self::Value, Self::Error>;

    /// A ReLU on `x`, its output truncated by `f` bits when `truncate`.
    fn relu(&mut self, site: &Site<'_>, x: &Self::Value, truncate: bool) -> Result<Self::Value, Self::Error>;

    /// A clip of `x` to the node's `[min, max]`, its output truncated by `f` bits when
    /// `truncate` (the bounds are at the output's scale).
    fn clip(&mut self, site: &Site<'_>, x: &Self::Value, truncate: bool) -> Result<Self::Value, Self::Error>;

    /// The elements of `x` reordered: `out[k] = x[indices[k]]` (a public permutation).
    fn transpose(&mut self, site: &Site<'_>, x: &Self::Value, indices: &[usize]) -> Result<Self::Value, Self::Error>;

    /// A leaky ReLU of `x` (at `f`): `⌊(a·x + (2^f − a)·ReLU(x)) / 2^f⌋`, `a` the slope at `f`
    /// bits.
    fn leaky_relu(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// A hard sigmoid of `x` (at `f`), [`crate::approx::RingHard`] in the ring executions.
    fn hard_sigmoid(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// A hard swish of `x` (at `f`), [`crate::approx::RingSwish`] in the ring executions.
    fn hard_swish(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// A sigmoid, tanh, softsign, SiLU, GELU, ELU, SELU or softplus of `x` (at `f`),
    /// [`crate::approx::RingSpline`] in the ring executions.
    fn spline(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// A max pool on `x`.
    fn max_pool(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// The sum of `terms`; a term `(v, true)` is multiplied by `2^f` first.
    fn add(&mut self, site: &Site<'_>, terms: &[(&Self::Value, bool)]) -> Result<Self::Value, Self::Error>;

    /// The element-wise maximum of `parts` (at `f`): `acc ← b + ReLU(acc − b)` for each `b`
    /// after the first, in order (the ring executions compute exactly that, mod `2^ℓ`).
    fn max(&mut self, site: &Site<'_>, parts: &[&Self::Value]) -> Result<Self::Value, Self::Error>;

    /// `parts` one after the other.
    fn concat(&mut self, site: &Site<'_>, parts: &[&Self::Value]) -> Result<Self::Value, Self::Error>;

    /// A softmax head on `x`. The default passes `x` through: the ring executions stop at the
    /// logits (the softmax's input).
    fn softmax(&mut self, site: &Site<'_>, x: &Self::Value) -> Result<Self::Value, Self::Error> {
        let _ = site;
        Ok(x.clone())
    }

    /// Called after node `site` ran; `truncated`: its step truncated ([`Step::truncates`]).
    fn end(&mut self, site: &Site<'_>, truncated: bool) {
        let _ = (site, truncated);
    }
}

/// Which values [`run`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every value of the graph (for per-layer comparisons).
    All,
    /// Only the logits and the output: every other value is freed after its last reader.
    Outputs,
}

/// The values a walk kept (index = `ValueId.0`).
#[derive(Clone, Debug)]
pub struct Values<V>(Vec<Option<V>>);

impl<V> Values<V> {
    /// Takes `value` out, if it was kept.
    pub fn take(&mut self, value: ValueId) -> Option<V> {
        self.0.get_mut(value.0).and_then(Option::take)
    }

    /// Every slot, in value order (`None` for freed values).
    pub fn into_slots(self) -> Vec<Option<V>> {
        self.0
    }
}

/// Walks `graph` from `input` with `kernel`, rescaling as `plan` says; returns the values
/// `keep` asks for.
pub fn run<K: Kernel>(
    graph: &Graph,
    plan: &RescalePlan,
    input: K::Value,
    kernel: &mut K,
    keep: Keep,
) -> Result<Values<K::Value>, K::Error> {
    let mut values: Vec<Option<K::Value>> = vec![None; graph.nodes().len() + 1];
    values[0] = Some(input);
    let mut readers = graph.reader_counts();
    // The logits are read by the caller even when a softmax head also reads them.
    readers[graph.logits().0] += 1;
    let released = |node: &Node| Released { node: node.name.clone() };
    for (index, node) in graph.nodes().iter().enumerate() {
        let output = ValueId::of_node(index);
        let site = Site {
            index,
            node,
            input_shape: graph.shape(node.inputs[0]),
            output_shape: graph.shape(output),
            input_double: plan.is_double(node.inputs[0]),
            output_double: plan.is_double(output),
        };
        let step = Step::of(graph, plan, index);
        kernel.begin(&site);
        let x = values[node.inputs[0].0].as_ref().ok_or_else(|| released(node))?;
        let y = match step {
            Step::Linear { truncate } => kernel.linear(&site, x, truncate)?,
            Step::Relu { truncate } => kernel.relu(&site, x, truncate)?,
            Step::Clip { truncate } => kernel.clip(&site, x, truncate)?,
            Step::Transpose => {
                let Op::Transpose(perm) = &node.op else { unreachable!("Step::of gives Transpose for Op::Transpose") };
                kernel.transpose(&site, x, &crate::kernels::permutation(site.input_shape, perm))?
            }
            Step::MaxPool { relu: None } => kernel.max_pool(&site, x)?,
            Step::MaxPool { relu: Some(truncate) } => {
                // The pool at its input's scale, then the moved ReLU on the pooled values.
                let pooled = kernel.max_pool(&Site { output_double: site.input_double, ..site }, x)?;
                let relu = Site { input_shape: site.output_shape, ..site };
                kernel.relu(&relu, &pooled, truncate)?
            }
            Step::MovedRelu => x.clone(),
            Step::LeakyRelu => kernel.leaky_relu(&site, x)?,
            Step::HardSigmoid => kernel.hard_sigmoid(&site, x)?,
            Step::HardSwish => kernel.hard_swish(&site, x)?,
            Step::Spline => kernel.spline(&site, x)?,
            Step::Add => {
                let mut terms = Vec::with_capacity(node.inputs.len());
                for input in &node.inputs {
                    let v = values[input.0].as_ref().ok_or_else(|| released(node))?;
                    terms.push((v, plan.lifts(index, *input)));
                }
                kernel.add(&site, &terms)?
            }
            Step::Concat | Step::Max => {
                let mut parts = Vec::with_capacity(node.inputs.len());
                for input in &node.inputs {
                    parts.push(values[input.0].as_ref().ok_or_else(|| released(node))?);
                }
                if step == Step::Max { kernel.max(&site, &parts)? } else { kernel.concat(&site, &parts)? }
            }
            Step::Reshape => x.clone(),
            Step::Softmax => kernel.softmax(&site, x)?,
        };
        if keep == Keep::Outputs {
            for input in &node.inputs {
                readers[input.0] -= 1;
                if readers[input.0] == 0 {
                    values[input.0] = None;
                }
            }
        }
        values[output.0] = Some(y);
        kernel.end(&site, step.truncates());
    }
    Ok(Values(values))
}
