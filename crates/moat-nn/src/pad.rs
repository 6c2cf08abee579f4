//! Padding models of different sizes to one public architecture that computes each of them.
//!
//! In two-party inference the client learns the architecture (the [`Skeleton`] in the session
//! hello). A server that hides which of several models answers (a task that does not disclose
//! its model) must therefore serve all of them under **one** skeleton, or the hello alone names
//! the member. [`pad_to_common`] rewrites every member of a set of multi-layer perceptrons into
//! the smallest common shape that contains them all, computing exactly the same function:
//!
//! * every hidden layer `j` gets the largest width any member has there; a member's weights sit
//!   in the top-left block and the added rows and columns are zero, so an added unit's
//!   pre-activation is `0`, its ReLU `0`, and it adds `0` to the next layer;
//! * a member with fewer hidden layers than the deepest one passes its last hidden value
//!   through identity layers (`W = I`, `b = 0`): that value is a ReLU output, so `x ≥ 0` and
//!   `ReLU(I·x) = x`;
//! * node names and the graph name are replaced by neutral ones (`fc1`, `relu1`, …, and the
//!   name given), since the skeleton carries them too.
//!
//! Members that already share one architecture (a single member, or several of one shape with
//! different weights) need no padding, whatever their ops: they are only renamed
//! ([`anonymise`]).
//!
//! In fixed point the identity weight encodes as exactly `2^f`, and a product by `2^f`
//! truncated by `f` bits is exact, so the padded model's fixed-point logits equal the
//! original's bit for bit (a test holds it); in float, added terms are exact zeros and exact
//! products by one.
//!
//! **Cost.** Every member then costs what the largest shape costs: the price of hiding it.
//! **Scope.** Chains of the form `prefix → Dense (→ ReLU → Dense)* [→ Softmax]`, where the prefix
//! holds only weightless reshaping ops (`Flatten`, `Reshape`) and is the same for every member;
//! members with no hidden layer cannot be padded to ones with hidden layers (a pass-through
//! would need non-negative inputs). Anything else is refused with the member and node named.

use crate::error::{NnError, Result};
use crate::graph::{Dense, Graph, Node, Op, ValueId};
use crate::skeleton::SkeletonOp;
use crate::tensor::Tensor;

/// A member read as `prefix → Dense (→ ReLU → Dense)* [→ Softmax]`.
struct Chain<'a> {
    /// Weightless reshaping nodes before the first dense layer.
    prefix: &'a [Node],
    /// The dense layers, hidden ones first, the output layer last.
    layers: Vec<&'a Dense>,
    /// Whether the chain ends in a softmax.
    softmax: bool,
}

impl Chain<'_> {
    /// Hidden widths (the outputs of every dense layer but the last).
    fn hidden(&self) -> Vec<usize> {
        self.layers[..self.layers.len() - 1].iter().map(|d| d.weight.shape()[0]).collect()
    }

    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |d| d.weight.shape()[0])
    }

    fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |d| d.weight.shape()[1])
    }
}

fn refuse(graph: &Graph, node: &Node, why: &str) -> NnError {
    NnError::node(
        &node.name,
        node.op.kind(),
        format!("model '{}' cannot be padded to a common shape: {why}", graph.name()),
    )
}

/// Reads `graph` as a [`Chain`], or says which node breaks the pattern.
fn chain(graph: &Graph) -> Result<Chain<'_>> {
    let nodes = graph.nodes();
    for (i, node) in nodes.iter().enumerate() {
        let previous = if i == 0 { ValueId::INPUT } else { ValueId::of_node(i - 1) };
        if node.inputs != [previous] {
            return Err(refuse(graph, node, "only a chain of single-input layers can be padded"));
        }
    }
    if graph.output() != ValueId(nodes.len()) {
        return Err(NnError::Graph(format!(
            "model '{}' cannot be padded to a common shape: its output is not its last node",
            graph.name()
        )));
    }
    let start = nodes.iter().position(|n| !matches!(n.op, Op::Flatten | Op::Reshape(_))).unwrap_or(nodes.len());
    let mut layers = Vec::new();
    let mut softmax = false;
    for (i, node) in nodes[start..].iter().enumerate() {
        let expect_dense = i % 2 == 0;
        match (&node.op, expect_dense) {
            (Op::Dense(d), true) if !softmax => layers.push(d),
            (Op::Relu, false) if !softmax => {}
            (Op::Softmax, false) if i + 1 == nodes.len() - start => softmax = true,
            _ => {
                let want = if expect_dense { "a dense layer" } else { "a ReLU (or a final softmax)" };
                return Err(refuse(graph, node, &format!("expected {want} here")));
            }
        }
    }
    let ends_in_dense = matches!(nodes.last().map(|n| &n.op), Some(Op::Dense(_)));
    if layers.is_empty() || !(ends_in_dense || softmax) {
        return Err(NnError::Graph(format!(
            "model '{}' cannot be padded to a common shape: it does not end in a dense layer",
            graph.name()
        )));
    }
    Ok(Chain { prefix: &nodes[..start], layers, softmax })
}

/// `rows × cols` zeros with `block` (of `block_rows × block_cols`) in the top-left corner.
fn embed(block: &[f32], block_rows: usize, block_cols: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..block_rows {
        out[r * cols..r * cols + block_cols].copy_from_slice(&block[r * block_cols..(r + 1) * block_cols]);
    }
    out
}

/// The members read as chains, and the common hidden widths.
struct CommonShape<'a> {
    chains: Vec<Chain<'a>>,
    widths: Vec<usize>,
}

/// Reads every member and derives the common shape, or says why there is none.
fn common_shape<'a>(members: &[&'a Graph]) -> Result<CommonShape<'a>> {
    let chains: Vec<Chain<'a>> = members.iter().map(|g| chain(g)).collect::<Result<_>>()?;
    let (Some(first), Some(first_graph)) = (chains.first(), members.first()) else {
        return Ok(CommonShape { chains, widths: Vec::new() });
    };
    let prefix_ops = |g: &Graph, c: &Chain<'_>| -> Vec<SkeletonOp> {
        g.skeleton().nodes.into_iter().take(c.prefix.len()).map(|n| n.op).collect()
    };
    let reference = prefix_ops(first_graph, first);
    let depth = chains.iter().map(|c| c.hidden().len()).max().unwrap_or(0);
    for (graph, c) in members.iter().zip(&chains).skip(1) {
        let differs = |what: &str| {
            NnError::Graph(format!(
                "models '{}' and '{}' cannot be padded to a common shape: they differ in {what}",
                first_graph.name(),
                graph.name()
            ))
        };
        if graph.input_shape() != first_graph.input_shape() {
            return Err(differs("their input shape"));
        }
        if prefix_ops(graph, c) != reference || c.input_width() != first.input_width() {
            return Err(differs("the layers before their first dense layer"));
        }
        if c.classes() != first.classes() {
            return Err(differs("their number of classes"));
        }
        if c.softmax != first.softmax {
            return Err(differs("whether they end in a softmax"));
        }
    }
    if depth > 0
        && let Some((graph, _)) = members.iter().zip(&chains).find(|(_, c)| c.hidden().is_empty())
    {
        return Err(NnError::Graph(format!(
            "model '{}' cannot be padded to a common shape: it has no hidden layer to pass through \
             the {depth} hidden layers of the others",
            graph.name()
        )));
    }
    // Width j: the widest member's layer j, or the value a shallower member passes through.
    let widths: Vec<usize> = (0..depth)
        .map(|j| {
            chains
                .iter()
                .map(|c| {
                    let h = c.hidden();
                    h.get(j).or(h.last()).copied().unwrap_or(0)
                })
                .max()
                .unwrap_or(0)
        })
        .collect();
    Ok(CommonShape { chains, widths })
}

/// `graph` renamed `name`, its nodes `n1`, `n2`, … in order: what the skeleton shows of it is
/// its structure alone.
pub fn anonymise(graph: &Graph, name: &str) -> Result<Graph> {
    let nodes = graph
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| Node { name: format!("n{}", i + 1), op: n.op.clone(), inputs: n.inputs.clone() })
        .collect();
    Graph::new(name, graph.input_shape().to_vec(), nodes, graph.output())
}

/// Whether every member has one architecture up to names (then none needs padding).
fn one_architecture(members: &[&Graph]) -> bool {
    let structure = |g: &Graph| {
        let mut s = g.skeleton();
        s.name.clear();
        s.nodes.iter_mut().for_each(|n| n.name.clear());
        s
    };
    let mut all = members.iter().map(|g| structure(g));
    match all.next() {
        Some(first) => all.all(|s| s == first),
        None => true,
    }
}

/// Whether `members` can be served under one architecture, without building anything (cheap:
/// no weight is copied). The error is [`pad_to_common`]'s.
pub fn check_common(members: &[&Graph]) -> Result<()> {
    if one_architecture(members) {
        return Ok(());
    }
    common_shape(members).map(|_| ())
}

/// The common shape of `members` and each member padded to it, in order, all named `name`
/// (members of one architecture are only [`anonymise`]d).
///
/// Fails, naming the member and node, when a member is not a padable chain (see the module
/// documentation) or the members disagree on their input, their prefix, their classes or
/// whether they end in a softmax.
pub fn pad_to_common(members: &[&Graph], name: &str) -> Result<Vec<Graph>> {
    if one_architecture(members) {
        return members.iter().map(|g| anonymise(g, name)).collect();
    }
    let CommonShape { chains, widths } = common_shape(members)?;
    let Some(first) = members.first() else { return Ok(Vec::new()) };
    chains.iter().map(|c| padded(first.input_shape(), c, &widths, name)).collect()
}

/// One member rebuilt at `widths`.
fn padded(input_shape: &[usize], c: &Chain<'_>, widths: &[usize], name: &str) -> Result<Graph> {
    let mut nodes: Vec<Node> = Vec::new();
    let push = |op: Op, nodes: &mut Vec<Node>, label: String| {
        let input = if nodes.is_empty() { ValueId::INPUT } else { ValueId::of_node(nodes.len() - 1) };
        nodes.push(Node { name: label, op, inputs: vec![input] });
    };
    for (i, node) in c.prefix.iter().enumerate() {
        push(node.op.clone(), &mut nodes, format!("reshape{}", i + 1));
    }
    let hidden = c.hidden();
    let mut inputs = (c.input_width(), c.input_width()); // (padded, the member's own)
    for (j, &width) in widths.iter().enumerate() {
        let (weight, bias, own) = match c.layers.get(j).filter(|_| j < hidden.len()) {
            Some(d) => {
                let own = hidden[j];
                (embed(d.weight.data(), own, inputs.1, width, inputs.0), embed(&d.bias, own, 1, width, 1), own)
            }
            None => {
                // Pass the member's last hidden value through: identity on its first units.
                let own = inputs.1;
                let mut w = vec![0.0; width * inputs.0];
                for k in 0..own {
                    w[k * inputs.0 + k] = 1.0;
                }
                (w, vec![0.0; width], own)
            }
        };
        let layer = Dense { weight: Tensor::new(vec![width, inputs.0], weight)?, bias };
        push(Op::Dense(layer), &mut nodes, format!("fc{}", j + 1));
        push(Op::Relu, &mut nodes, format!("relu{}", j + 1));
        inputs = (width, own);
    }
    let out = c.layers[c.layers.len() - 1];
    let classes = c.classes();
    let layer = Dense {
        weight: Tensor::new(vec![classes, inputs.0], embed(out.weight.data(), classes, inputs.1, classes, inputs.0))?,
        bias: out.bias.clone(),
    };
    push(Op::Dense(layer), &mut nodes, format!("fc{}", widths.len() + 1));
    if c.softmax {
        push(Op::Softmax, &mut nodes, "softmax".into());
    }
    let output = ValueId(nodes.len());
    Graph::new(name, input_shape.to_vec(), nodes, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{FloatExecutor, QuantizedGraph};
    use crate::fixed::FixedPoint;
    use crate::zoo;

    fn mlp(hidden: &str, seed: u64) -> Result<Graph> {
        zoo::build(&format!("mlp:{hidden}").parse()?, &[1, 8, 8], 10, seed)
    }

    /// Deterministic inputs in [-1, 1).
    fn inputs(count: usize) -> Vec<Vec<f32>> {
        (0..count).map(|i| (0..64).map(|k| (((i * 131 + k * 29) % 97) as f32 / 48.5) - 1.0).collect()).collect()
    }

    #[test]
    fn padded_members_share_one_skeleton_and_keep_their_outputs() -> Result<()> {
        let members = [mlp("16", 1)?, mlp("64", 2)?, mlp("256,128", 3)?, mlp("8,8,8", 4)?];
        let refs: Vec<&Graph> = members.iter().collect();
        let padded = pad_to_common(&refs, "task")?;
        assert_eq!(padded.len(), members.len());
        let skeleton = padded[0].skeleton();
        let widths: Vec<usize> = skeleton
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                SkeletonOp::Dense { weight_shape } => Some(weight_shape[0]),
                _ => None,
            })
            .collect();
        // Layer 3: mlp:8,8,8 has 8 units there; mlp:256,128 passes its 128 through.
        assert_eq!(widths, vec![256, 128, 128, 10], "the widest member's layer, or the value passed through");
        let fixed = FixedPoint::default();
        for (original, padded) in members.iter().zip(&padded) {
            assert_eq!(padded.skeleton(), skeleton, "one public architecture for every member");
            let (q_original, q_padded) = (QuantizedGraph::new(original, fixed)?, QuantizedGraph::new(padded, fixed)?);
            for x in inputs(20) {
                let (a, b) = (FloatExecutor::logits(original, &x)?, FloatExecutor::logits(padded, &x)?);
                let gap = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(gap <= 1e-5, "{}: float logits moved by {gap}", original.name());
                assert_eq!(
                    q_original.logits_encoded(&x)?,
                    q_padded.logits_encoded(&x)?,
                    "{}: fixed-point logits must be bit-identical",
                    original.name()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_pad_and_names_it() -> Result<()> {
        let lenet = zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 0)?;
        let wide = zoo::build(&"lenet5:x2".parse()?, &[1, 28, 28], 10, 0)?;
        let err = pad_to_common(&[&lenet, &wide], "task").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("conv1") && err.contains("lenet5"), "{err}");
        assert_eq!(check_common(&[&lenet, &wide]).err().map(|e| e.to_string()), Some(err));

        let (a, b) = (mlp("16", 1)?, zoo::build(&"mlp:16".parse()?, &[1, 8, 8], 3, 1)?);
        let err = pad_to_common(&[&a, &b], "task").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("number of classes"), "{err}");

        let linear = mlp("16", 5)?;
        let none = padded_without_hidden(&linear)?;
        let err = pad_to_common(&[&a, &none], "task").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("no hidden layer"), "{err}");
        Ok(())
    }

    /// `graph` without its hidden layers: flatten → dense to the classes.
    fn padded_without_hidden(graph: &Graph) -> Result<Graph> {
        let dense = Dense { weight: Tensor::new(vec![10, 64], vec![0.01; 640])?, bias: vec![0.0; 10] };
        let nodes = vec![
            Node { name: "flatten".into(), op: Op::Flatten, inputs: vec![ValueId::INPUT] },
            Node { name: "fc".into(), op: Op::Dense(dense), inputs: vec![ValueId(1)] },
        ];
        Graph::new("linear", graph.input_shape().to_vec(), nodes, ValueId(2))
    }

    #[test]
    fn members_of_one_architecture_are_only_renamed() -> Result<()> {
        assert!(pad_to_common(&[], "task")?.is_empty());
        let (a, b) = (
            zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 1)?,
            zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 2)?,
        );
        let b = b.with_name("other-name");
        check_common(&[&a, &b])?;
        let renamed = pad_to_common(&[&a, &b], "task")?;
        assert_eq!(renamed[0].skeleton(), renamed[1].skeleton());
        assert_eq!(renamed[0].skeleton().name, "task");
        assert!(renamed[1].nodes().iter().all(|n| n.name.starts_with('n')));
        for (original, renamed) in [&a, &b].into_iter().zip(&renamed) {
            assert_eq!(
                renamed.nodes().iter().map(|n| &n.op).collect::<Vec<_>>(),
                original.nodes().iter().map(|n| &n.op).collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}
