//! Where the two-party walk rescales: which linear outputs are truncated at once and which
//! wait until after their ReLU.
//!
//! A linear layer's result sits at scale `2^(2f)` and the fixed-point semantics truncate it
//! by `f` bits at once. Two exact identities let the secure walk move that truncation past
//! the activation without changing a single bit of the result:
//!
//! * `ReLU(⌊z / 2^f⌋) = ⌊ReLU(z) / 2^f⌋` (floor is monotone and `⌊0⌋ = 0`);
//! * `⌊z / 2^f⌋ + b = ⌊(z + b·2^f) / 2^f⌋` for an integer `b` (a residual operand at scale
//!   `2^f`, lifted locally by multiplying both shares by `2^f`).
//!
//! Truncating *after* the ReLU is cheaper: the value is then known to be non-negative, so the
//! wrap bit of its shares is `msb(x₀) ∨ msb(x₁)` — one AND instead of a comparison over all
//! ℓ bits (moat-mpc's `truncate_nonnegative`).
//!
//! The rule, per linear node `L` whose value is read exactly once and is not the logits:
//!
//! 1. if its reader is a ReLU, `L` is **deferred**: its value stays at `2f`, the ReLU runs on
//!    it and the ReLU's (non-negative) output is truncated;
//! 2. if its reader is an `Add` read exactly once, by a ReLU, and `L` is the first such linear
//!    input of that `Add`, `L` is deferred; the `Add`'s other inputs are lifted to `2f` and the
//!    ReLU truncates as in 1. (A second linear input of the same `Add` truncates at once:
//!    `⌊a/2^f⌋ + ⌊c/2^f⌋ ≠ ⌊(a + c)/2^f⌋`.)
//!
//! A `Clip` counts as a ReLU here: `clip(⌊z/2^f⌋, a, b) = a + ⌊ReLU(z − A)/2^f⌋ − ⌊ReLU(z − B)/2^f⌋`
//! with `A = a·2^f`, `B = b·2^f` (the bounds at `f` bits, lifted), so it too truncates after
//! its comparisons, exactly.
//!
//! Every other linear node truncates at once. Honest results are therefore bit for bit the
//! fixed-point executor's under any plan, as long as the values held at `2f` stay in the
//! ring's signed range — `|v| < 2^(ℓ−1−2f)`, 4096 in real units at ℓ = 37, f = 12, the same
//! bound a linear layer's untruncated output already needs. Honest activations are far below. The plan only changes *where* the client holds
//! which scale: the pre-activation share of a ReLU behind a deferred layer is at `2f`
//! (moat-mpc's `ShareSite::frac_bits`). Both backends follow the same plan, so a
//! client behaviour sees the same shares in both. The plan is a function of the public
//! architecture: the client derives it from the server's skeleton.

use crate::error::{NnError, Result};
use crate::graph::{Graph, Op, ValueId};

/// How the walk rescales each node (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescalePlan {
    /// Per value (index = `ValueId.0`): carries `2f` fractional bits instead of `f`.
    double: Vec<bool>,
    /// Per node: a linear node whose truncation is deferred.
    deferred: Vec<bool>,
    /// Per node: a ReLU whose input is at `2f`, so its output is truncated.
    truncating_relu: Vec<bool>,
}

impl RescalePlan {
    /// The fused plan for `graph` (must be batch-norm folded, as the engine runs it).
    pub fn fused(graph: &Graph) -> Self {
        let nodes = graph.nodes();
        let readers = graph.reader_counts();
        let logits = graph.logits();
        // The unique reader of each value that has exactly one.
        let mut reader: Vec<Option<usize>> = vec![None; nodes.len() + 1];
        for (i, node) in nodes.iter().enumerate() {
            for input in &node.inputs {
                if readers[input.0] == 1 {
                    reader[input.0] = Some(i);
                }
            }
        }
        let single_relu_reader = |value: ValueId| {
            value != logits
                && readers[value.0] == 1
                && reader[value.0].is_some_and(|r| matches!(nodes[r].op, Op::Relu | Op::Clip { .. }))
        };
        let mut plan = Self::unfused(graph);
        for (i, node) in nodes.iter().enumerate() {
            let value = ValueId::of_node(i);
            if !node.op.is_linear() || value == logits || readers[value.0] != 1 {
                continue;
            }
            let Some(r) = reader[value.0] else { continue };
            let defer = match nodes[r].op {
                Op::Relu | Op::Clip { .. } => true,
                Op::Add => {
                    let add_value = ValueId::of_node(r);
                    let first_linear = nodes[r].inputs.iter().copied().find(|v| {
                        v.node().is_some_and(|n| nodes[n].op.is_linear()) && readers[v.0] == 1 && *v != logits
                    });
                    single_relu_reader(add_value) && first_linear == Some(value)
                }
                _ => false,
            };
            if defer {
                plan.deferred[i] = true;
                plan.double[value.0] = true;
                if let Op::Add = nodes[r].op {
                    plan.double[ValueId::of_node(r).0] = true;
                }
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            if matches!(node.op, Op::Relu | Op::Clip { .. }) && plan.double[node.inputs[0].0] {
                plan.truncating_relu[i] = true;
            }
        }
        plan
    }

    /// The plan that truncates every linear output at once (the fixed-point executor's order).
    pub fn unfused(graph: &Graph) -> Self {
        let n = graph.nodes().len();
        Self { double: vec![false; n + 1], deferred: vec![false; n], truncating_relu: vec![false; n] }
    }

    /// Whether linear node `node` truncates its output at once (`false`: deferred).
    pub fn truncates_linear(&self, node: usize) -> bool {
        !self.deferred.get(node).copied().unwrap_or(false)
    }

    /// Whether `value` carries `2f` fractional bits (otherwise `f`).
    pub fn is_double(&self, value: ValueId) -> bool {
        self.double.get(value.0).copied().unwrap_or(false)
    }

    /// Fractional bits of `value` when the ring has `frac_bits` of them per factor.
    pub fn frac_bits(&self, value: ValueId, frac_bits: u32) -> u32 {
        if self.is_double(value) { 2 * frac_bits } else { frac_bits }
    }

    /// For an `Add` node whose output is at `2f`: whether its input `input` must be lifted
    /// (multiplied by `2^f` on both shares) before the addition.
    pub fn lifts(&self, node: usize, input: ValueId) -> bool {
        self.is_double(ValueId::of_node(node)) && !self.is_double(input)
    }

    /// Whether ReLU node `node` truncates its output (its input is at `2f`).
    pub fn truncates_after_relu(&self, node: usize) -> bool {
        self.truncating_relu.get(node).copied().unwrap_or(false)
    }

    /// Checks the plan against what the walk can run: a value at `2f` is read only by a ReLU
    /// (which truncates it) or by an `Add` that stays at `2f`, and the logits are at `f`.
    pub fn check(&self, graph: &Graph) -> Result<()> {
        for (index, node) in graph.nodes().iter().enumerate() {
            let output_double = self.is_double(ValueId::of_node(index));
            let reads_double = node.inputs.iter().any(|v| self.is_double(*v));
            let consistent = match node.op {
                Op::Relu | Op::Clip { .. } => !output_double,
                Op::Add => !reads_double || output_double,
                _ => !reads_double,
            };
            if !consistent {
                return Err(NnError::node(
                    &node.name,
                    node.op.kind(),
                    format!(
                        "rescale plan: reads a value at 2f and writes one at {} (unsupported)",
                        if output_double { "2f" } else { "f" }
                    ),
                ));
            }
        }
        if self.is_double(graph.logits()) {
            return Err(NnError::Graph("rescale plan: the logits are left at 2f".into()));
        }
        Ok(())
    }

    /// Number of deferred linear nodes.
    pub fn deferred(&self) -> usize {
        self.deferred.iter().filter(|d| **d).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zoo;

    fn folded(arch: &str, shape: &[usize]) -> Graph {
        let arch: zoo::Architecture = arch.parse().unwrap_or_else(|e| panic!("{e}"));
        let g = zoo::build(&arch, shape, 10, 1).unwrap_or_else(|e| panic!("{e}"));
        g.fold_batch_norms().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn resnet_defers_every_conv_but_the_projection_shortcuts() {
        let g = folded("resnet18", &[3, 32, 32]);
        let plan = RescalePlan::fused(&g);
        let linear: Vec<usize> = (0..g.nodes().len()).filter(|&i| g.nodes()[i].op.is_linear()).collect();
        let truncating: Vec<&str> =
            linear.iter().filter(|&&i| plan.truncates_linear(i)).map(|&i| g.nodes()[i].name.as_str()).collect();
        // The three projection shortcuts meet a deferred conv in their Add, the global
        // average pool feeds a dense layer, and the dense layer produces the logits.
        assert_eq!(
            truncating,
            ["layer2.0.downsample", "layer3.0.downsample", "layer4.0.downsample", "globalavgpool_18", "fc"]
        );
        assert_eq!(plan.deferred(), linear.len() - 5);
        for (i, node) in g.nodes().iter().enumerate() {
            if let Op::Relu = node.op {
                assert!(plan.truncates_after_relu(i), "{}", node.name);
                assert!(!plan.is_double(ValueId::of_node(i)));
            }
            if let Op::Add = node.op {
                let lifted = node.inputs.iter().filter(|v| plan.lifts(i, **v)).count();
                assert_eq!(lifted, 1, "{}", node.name);
            }
        }
        assert!(!plan.is_double(g.logits()));
    }

    #[test]
    fn lenet_defers_only_what_a_relu_reads() {
        let g = folded("lenet5", &[1, 28, 28]);
        let plan = RescalePlan::fused(&g);
        for (i, node) in g.nodes().iter().enumerate() {
            if node.op.is_linear() {
                let value = ValueId::of_node(i);
                let read_by_relu = g.nodes().iter().any(|n| n.inputs.contains(&value) && matches!(n.op, Op::Relu));
                assert_eq!(!plan.truncates_linear(i), read_by_relu && value != g.logits(), "{}", node.name);
            }
        }
        assert_eq!(RescalePlan::unfused(&g).deferred(), 0);
    }
}
