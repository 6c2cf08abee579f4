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
//! Every other linear node truncates at once.
//!
//! ## ReLU after the max pool ([`RescalePlan::pool_first`])
//!
//! A third identity moves a ReLU past the max pool that reads it: `max_w ReLU(⌊x/2^s⌋) =
//! ReLU(⌊max_w x / 2^s⌋)` (ReLU and floor are monotone, so they commute with a maximum), also
//! through a channel concatenation of ReLU outputs (SqueezeNet's fire modules: the pool is per
//! channel). The pool then compares the ReLU's *input* (at `2f` behind a deferred linear
//! layer) and one ReLU runs on its output — a 3×3 stride-2 pool has about four inputs per
//! output, so three quarters of those ReLUs (and their truncations) disappear. The comparisons
//! of the pool cost the same at any scale. The ReLU nodes pass their input through; the pool
//! applies them ([`RescalePlan::relu_after_pool`]).
//!
//! The plan removes the tamper points between the ReLU and the pool (the ReLU's output does
//! not exist any more), so a two-party session uses it only for a client that does not tamper
//! (moat-mpc's `ClientBehaviour::tampers`); both plans give the same honest result.
//!
//! ## Range
//!
//! Honest results are bit for bit the fixed-point executor's under any plan, as long as the
//! values held at `2f` stay in the ring's signed range — `|v| < 2^(ℓ−1−2f)`, 4096 in real units
//! at ℓ = 37, f = 12, the same bound a linear layer's untruncated output already needs (half of
//! it, 2048, for the values a [`RescalePlan::pool_first`] max pool compares at `2f`: a
//! comparison reads the sign of a difference). Honest activations are far below. The plan only
//! changes *where* the client holds which scale: the pre-activation share of a ReLU behind a
//! deferred layer is at `2f` (moat-mpc's `ShareSite::frac_bits`). Both backends follow the
//! fused plan for a client that tampers, so a client behaviour sees the same shares in both.
//! Every plan is a function of the public architecture: the client derives it from the
//! server's skeleton.

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
    /// Per node: a ReLU moved behind the max pool that reads it (it passes its input on).
    moved_relu: Vec<bool>,
    /// Per node: a max pool that applies the moved ReLU(s) of its input to its output,
    /// `Some(truncate)`: the ReLU truncates (the pool's input is at `2f`).
    relu_after_pool: Vec<Option<bool>>,
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

    /// [`Self::fused`] with every ReLU that only a max pool reads (directly, or through a
    /// concatenation of such ReLUs that only the pool reads) moved behind the pool (see the
    /// module documentation). The values between the ReLU and the pool keep the ReLU input's
    /// scale; the pool's output is at `f`.
    pub fn pool_first(graph: &Graph) -> Self {
        let nodes = graph.nodes();
        let readers = graph.reader_counts();
        let logits = graph.logits();
        let mut plan = Self::fused(graph);
        // The node writing `v` when it is an `op` whose value only one node reads and that is
        // not the logits.
        let only_read = |v: ValueId, op: fn(&Op) -> bool| {
            v.node().filter(|&n| op(&nodes[n].op) && v != logits && readers[v.0] == 1)
        };
        let relu = |v: ValueId| only_read(v, |op| matches!(op, Op::Relu));
        for (pool, node) in nodes.iter().enumerate() {
            if !matches!(node.op, Op::MaxPool(_)) {
                continue;
            }
            let input = node.inputs[0];
            // The pool's input is one such ReLU, or a concatenation of them.
            let relus: Vec<usize> = match relu(input) {
                Some(r) => vec![r],
                None => match only_read(input, |op| matches!(op, Op::Concat)) {
                    Some(c) => match nodes[c].inputs.iter().map(|v| relu(*v)).collect::<Option<Vec<_>>>() {
                        Some(parts) if !parts.is_empty() => parts,
                        _ => continue,
                    },
                    None => continue,
                },
            };
            // The parts of a concatenation share one scale.
            let double = plan.is_double(nodes[relus[0]].inputs[0]);
            if relus.iter().any(|&r| plan.is_double(nodes[r].inputs[0]) != double) {
                continue;
            }
            for &r in &relus {
                plan.moved_relu[r] = true;
                plan.truncating_relu[r] = false;
                plan.double[ValueId::of_node(r).0] = double;
            }
            plan.double[input.0] = double;
            plan.relu_after_pool[pool] = Some(double);
        }
        plan
    }

    /// The plan that truncates every linear output at once (the fixed-point executor's order).
    pub fn unfused(graph: &Graph) -> Self {
        let n = graph.nodes().len();
        Self {
            double: vec![false; n + 1],
            deferred: vec![false; n],
            truncating_relu: vec![false; n],
            moved_relu: vec![false; n],
            relu_after_pool: vec![None; n],
        }
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

    /// Whether ReLU node `node` was moved behind the max pool that reads it
    /// ([`Self::pool_first`]): it passes its input on.
    pub fn moves_relu(&self, node: usize) -> bool {
        self.moved_relu.get(node).copied().unwrap_or(false)
    }

    /// For a max pool that applies the moved ReLU(s) of its input ([`Self::pool_first`]):
    /// `Some(truncate)`, whether that ReLU truncates its output. `None` for every other node.
    pub fn relu_after_pool(&self, node: usize) -> Option<bool> {
        self.relu_after_pool.get(node).copied().flatten()
    }

    /// Checks the plan against what the walk can run: a value at `2f` is read only by a ReLU
    /// (which truncates it, or passes it to a max pool that applies it), by an `Add` or a
    /// concatenation that stays at `2f`, or by a max pool that applies a moved ReLU, and the
    /// logits are at `f`.
    pub fn check(&self, graph: &Graph) -> Result<()> {
        for (index, node) in graph.nodes().iter().enumerate() {
            let output_double = self.is_double(ValueId::of_node(index));
            let reads_double = node.inputs.iter().any(|v| self.is_double(*v));
            let reads_all_double = node.inputs.iter().all(|v| self.is_double(*v));
            let consistent = match node.op {
                Op::Relu if self.moves_relu(index) => reads_double == output_double,
                Op::Relu | Op::Clip { .. } => !output_double,
                Op::Add => !reads_double || output_double,
                Op::Concat => !reads_double || (reads_all_double && output_double),
                Op::MaxPool(_) if self.relu_after_pool(index).is_some() => {
                    !output_double && self.relu_after_pool(index) == Some(reads_double)
                }
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

    /// Number of ReLU nodes moved behind their max pool ([`Self::pool_first`]).
    pub fn moved_relus(&self) -> usize {
        self.moved_relu.iter().filter(|m| **m).count()
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

    /// The fixed-point logits of `g` (random weights) for one input in [-1, 1) under `plan`.
    fn fixed_logits(g: &Graph, plan: &RescalePlan, seed: u64) -> Vec<u64> {
        use rand::{Rng, SeedableRng};
        let model = crate::QuantizedGraph::new(g, crate::FixedPoint::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let input: Vec<f32> = (0..crate::tensor::numel(g.input_shape())).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = model.encode_input(&input).unwrap_or_else(|e| panic!("{e}"));
        model.logits_under(plan, x).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pool_first_moves_the_relus_in_front_of_each_pool_and_keeps_every_bit() {
        // SqueezeNet: conv1's ReLU, and the two expand ReLUs (through their concatenation) of
        // fire3 and fire5; LeNet-5: one per pool; ResNet-18 (ImageNet stem): the stem's ReLU.
        for (arch, shape, moved, pools) in [
            ("squeezenet", &[3, 64, 64][..], 5, 3),
            ("lenet5", &[1, 28, 28][..], 2, 2),
            ("resnet18", &[3, 32, 32][..], 0, 0),
        ] {
            let g = folded(arch, shape);
            let plan = RescalePlan::pool_first(&g);
            plan.check(&g).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert_eq!(plan.moved_relus(), moved, "{arch}");
            let applying = (0..g.nodes().len()).filter(|&i| plan.relu_after_pool(i).is_some()).count();
            assert_eq!(applying, pools, "{arch}");
            for (i, node) in g.nodes().iter().enumerate() {
                if plan.moves_relu(i) {
                    assert!(!plan.truncates_after_relu(i), "{}", node.name);
                }
                if plan.relu_after_pool(i).is_some() {
                    assert!(!plan.is_double(ValueId::of_node(i)), "{}", node.name);
                }
            }
            // The identity is exact: the same logits, bit for bit, as both other plans.
            for seed in 0..3 {
                let unfused = fixed_logits(&g, &RescalePlan::unfused(&g), seed);
                assert_eq!(fixed_logits(&g, &RescalePlan::fused(&g), seed), unfused, "{arch}");
                assert_eq!(fixed_logits(&g, &plan, seed), unfused, "{arch}");
            }
        }
    }
}
