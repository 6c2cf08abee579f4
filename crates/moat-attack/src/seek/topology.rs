//! What the attacker works out from the public architecture alone: for each parameter layer,
//! where its input can be set (the injection site), where its output can be read (the ReLU
//! behind it, or the logits), at which scales; and, for each read, a *chain* — one element
//! kept alive per later activation — that carries the read value to the logits while
//! everything else is switched off.

use moat_mpc::engine::RescalePlan;
use moat_nn::exec::QuantizedLayer;
use moat_nn::graph::{Graph, Node, Op, ValueId};
use moat_nn::kernels::{Window, pool_windows};
use moat_nn::tensor::{Tensor, numel};
use moat_nn::{FixedPoint, QuantizedGraph};
use rand::Rng;

use crate::error::{AttackError, Result};

/// Where a layer's input can be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client's own input.
    Input,
    /// The client's post-activation share of this ReLU / max-pool node (after killing it).
    Post(usize),
}

/// Where a layer's output can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// At the pre-activation of this ReLU.
    Relu(usize),
    /// At the logits (label-only: differences between classes).
    Logits,
}

/// The geometry of a parameter layer.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Conv { window: Window, in_channels: usize, out_channels: usize, kernel: [usize; 2] },
    Dense { inputs: usize, outputs: usize },
}

/// A parameter layer as the attack sees it.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    pub node: usize,
    pub name: String,
    pub kind: Kind,
    pub source: Source,
    /// Parameter-free nodes between the source and the layer, in forward order.
    pub prefix: Vec<usize>,
    pub read: Read,
    /// The `Add` between the layer and its read site, if any.
    pub add: Option<usize>,
    /// Magnitude (ulps at scale 2^f) of a unit placed on the layer's input.
    pub unit: u64,
    /// `z(unit · e_k) − z(0) = W_k · 2^gain_shift` at the read site.
    pub gain_shift: u32,
    /// Fractional bits of the read value `z`.
    pub read_bits: u32,
    /// `s` in `P(c) = ⌊max(z + c, 0) / 2^s⌋`, the read ReLU's output (0 for logits).
    pub read_shift: u32,
}

/// One element kept alive at a later activation.
#[derive(Clone, Debug)]
pub(crate) struct Alive {
    pub node: usize,
    /// The alive input element.
    pub element: usize,
    /// Max pool: the output windows containing the element.
    pub windows: Vec<usize>,
    /// ReLU whose output feeds a max pool: keep the `+K` through it.
    pub carry: bool,
}

/// The alive elements from a read site to the logits.
#[derive(Clone, Debug)]
pub(crate) struct Chain {
    /// `alive[0]` is the read ReLU itself (its element is the one being read).
    pub alive: Vec<Alive>,
    /// Element of the logits layer's input that carries the value.
    pub end: usize,
}

/// The activation inputs an injected value reaches through linear nodes: `(node, mask)`.
pub(crate) struct Footprint(Vec<(usize, Vec<u64>)>);

impl Footprint {
    /// Whether the injection reaches a live element of `chain` other than the read one: it
    /// would then also move the detector.
    pub fn meets(&self, chain: &Chain) -> bool {
        chain
            .alive
            .iter()
            .skip(1)
            .any(|a| self.0.iter().any(|(node, mask)| *node == a.node && mask.get(a.element) == Some(&1)))
    }
}

/// The attacker's analysis of the public graph.
pub(crate) struct Topology {
    pub model: QuantizedGraph,
    pub plan: RescalePlan,
    ones: QuantizedGraph,
    readers: Vec<Vec<usize>>,
    pub logits_layer: usize,
}

impl Topology {
    pub fn new(model: &QuantizedGraph) -> Result<Self> {
        let graph = model.graph();
        let plan = RescalePlan::fused(graph);
        let ones = QuantizedGraph::new(&all_ones(graph)?, model.fixed())?;
        let mut readers = vec![Vec::new(); graph.nodes().len() + 1];
        for (i, node) in graph.nodes().iter().enumerate() {
            for input in &node.inputs {
                readers[input.0].push(i);
            }
        }
        let logits_layer =
            graph.logits().node().filter(|&n| matches!(graph.nodes()[n].op, Op::Dense(_) | Op::Conv2d(_))).ok_or_else(
                || AttackError::unsupported(graph.name(), "the logits are not produced by a dense layer"),
            )?;
        Ok(Self { model: model.clone(), plan, ones, readers, logits_layer })
    }

    pub fn fixed(&self) -> FixedPoint {
        self.model.fixed()
    }

    pub fn graph(&self) -> &Graph {
        self.model.graph()
    }

    fn node(&self, i: usize) -> &Node {
        &self.graph().nodes()[i]
    }

    /// Every parameter layer, in graph order.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        (0..self.graph().nodes().len())
            .filter(|&i| matches!(self.node(i).op, Op::Conv2d(_) | Op::Dense(_)))
            .map(|i| self.layer(i))
            .collect()
    }

    fn layer(&self, index: usize) -> Result<Layer> {
        let graph = self.graph();
        let node = self.node(index);
        let f = self.fixed().frac_bits();
        let kind = match (&node.op, &self.model.layers()[index]) {
            (Op::Conv2d(c), QuantizedLayer::Conv2d { window, in_channels, bias, .. }) => {
                Kind::Conv { window: *window, in_channels: *in_channels, out_channels: bias.len(), kernel: c.kernel() }
            }
            (Op::Dense(_), QuantizedLayer::Dense { bias, .. }) => {
                Kind::Dense { inputs: numel(graph.shape(node.inputs[0])), outputs: bias.len() }
            }
            _ => return Err(AttackError::unsupported(&node.name, "not a parameter layer")),
        };
        // Back from the input to the injection site.
        let mut prefix = Vec::new();
        let mut value = node.inputs[0];
        let source = loop {
            let Some(p) = value.node() else { break Source::Input };
            match self.node(p).op {
                Op::Relu | Op::MaxPool(_) => break Source::Post(p),
                Op::Flatten | Op::Reshape(_) | Op::GlobalAvgPool => {
                    if matches!(self.node(p).op, Op::GlobalAvgPool) && !self.plan.truncates_linear(p) {
                        return Err(AttackError::unsupported(&self.node(p).name, "deferred average pool"));
                    }
                    prefix.push(p);
                    value = self.node(p).inputs[0];
                }
                ref op => {
                    return Err(AttackError::unsupported(
                        &node.name,
                        format!("its input comes through {} (no injection site)", op.kind()),
                    ));
                }
            }
        };
        if let Source::Post(p) = source
            && matches!(self.node(p).op, Op::MaxPool(_))
            && !self.node(p).inputs[0].node().is_some_and(|n| matches!(self.node(n).op, Op::Relu))
        {
            return Err(AttackError::unsupported(&self.node(p).name, "a max pool not fed by a ReLU cannot be zeroed"));
        }
        prefix.reverse();
        // Forward from the output to the read site.
        let out = ValueId::of_node(index);
        let single = |v: ValueId| match self.readers[v.0].as_slice() {
            [r] if v != graph.logits() => Some(*r),
            _ => None,
        };
        let (read, add) = if out == graph.logits() {
            (Read::Logits, None)
        } else {
            match single(out).map(|r| (r, &self.node(r).op)) {
                Some((r, Op::Relu)) => (Read::Relu(r), None),
                Some((a, Op::Add)) => match single(ValueId::of_node(a)).map(|r| (r, &self.node(r).op)) {
                    Some((r, Op::Relu)) => (Read::Relu(r), Some(a)),
                    _ => return Err(AttackError::unsupported(&node.name, "its residual sum is not read by a ReLU")),
                },
                _ => {
                    return Err(AttackError::unsupported(&node.name, "its output is not read by a ReLU or the logits"));
                }
            }
        };
        let out_bits = self.plan.frac_bits(out, f);
        let (read_bits, read_shift) = match read {
            Read::Relu(r) => {
                let bits = self.plan.frac_bits(self.node(r).inputs[0], f);
                (bits, if self.plan.truncates_after_relu(r) { f } else { 0 })
            }
            Read::Logits => (f, 0),
        };
        Ok(Layer {
            node: index,
            name: node.name.clone(),
            kind,
            source,
            prefix,
            read,
            add,
            unit: 1u64 << (2 * f - out_bits),
            gain_shift: read_bits - out_bits,
            read_bits,
            read_shift,
        })
    }

    /// The injection `(element of the source, value)` that puts `unit · scale` on element `k`
    /// of the layer's input (through its parameter-free prefix).
    pub fn unit_injection(&self, layer: &Layer, k: usize, scale: u64) -> Result<(usize, u64)> {
        let fp = self.fixed();
        let f = fp.frac_bits();
        let mut element = k;
        let mut value = layer.unit * scale;
        for &p in layer.prefix.iter().rev() {
            if let QuantizedLayer::GlobalAvgPool { reciprocal, .. } = &self.model.layers()[p] {
                let shape = self.graph().shape(self.node(p).inputs[0]);
                let plane = shape[1] * shape[2];
                let s = (value << f).div_ceil(*reciprocal);
                if fp.truncate(fp.mul(s, *reciprocal)) != value {
                    return Err(AttackError::unsupported(&self.node(p).name, "no input gives a unit average"));
                }
                element *= plane;
                value = s;
            }
        }
        Ok((element, value))
    }

    /// Whether `node`'s output feeds a max pool directly.
    pub fn feeds_max_pool(&self, node: usize) -> bool {
        matches!(self.readers[ValueId::of_node(node).0].as_slice(), [r] if matches!(self.node(*r).op, Op::MaxPool(_)))
    }

    /// The non-linear nodes (ReLU, max pool) in graph order.
    pub fn activations(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.graph().nodes().len()).filter(|&i| matches!(self.node(i).op, Op::Relu | Op::MaxPool(_)))
    }

    /// A chain from element `element` of ReLU `read`'s output to the logits: later
    /// activations that the value reaches keep one element alive (preferring channel
    /// `prefer`), unless a residual shortcut already carries it past them.
    pub fn chain(
        &self,
        read: usize,
        element: usize,
        prefer: Option<usize>,
        on_grid: bool,
        rng: &mut impl Rng,
    ) -> Result<Chain> {
        let graph = self.graph();
        let nodes = graph.nodes();
        let mut masks: Vec<Option<Vec<u64>>> = vec![None; nodes.len() + 1];
        let mut start = vec![0u64; numel(graph.shape(ValueId::of_node(read)))];
        start[element] = 1;
        masks[ValueId::of_node(read).0] = Some(start);
        let mut alive = vec![Alive { node: read, element, windows: Vec::new(), carry: self.feeds_max_pool(read) }];
        // The coarsest later resolution: positions on its grid survive strided shortcuts, so
        // the chain can ride the (high-gain) shortcuts instead of two convolutions per block.
        let coarsest = self
            .activations()
            .filter(|&a| a > read)
            .filter_map(|a| match graph.shape(nodes[a].inputs[0]) {
                [_, h, w] => Some((*h, *w)),
                _ => None,
            })
            .min()
            .filter(|_| on_grid);
        for (i, node) in nodes.iter().enumerate().skip(read + 1) {
            let input = |k: usize| masks[node.inputs[k].0].as_ref();
            let out: Option<Vec<u64>> = match &node.op {
                op if op.is_linear() => input(0).and_then(|m| {
                    let y = self.ones.linear(i, m, false)?;
                    let y: Vec<u64> = y.into_iter().map(|v| u64::from(v != 0)).collect();
                    y.contains(&1).then_some(y)
                }),
                Op::Add => {
                    let len = numel(graph.shape(ValueId::of_node(i)));
                    let mut sum = vec![0u64; len];
                    let mut any = false;
                    for v in &node.inputs {
                        if let Some(m) = masks[v.0].as_ref() {
                            any = true;
                            sum.iter_mut().zip(m).for_each(|(s, m)| *s |= m);
                        }
                    }
                    any.then_some(sum)
                }
                Op::Concat => {
                    let parts: Vec<Vec<u64>> = node
                        .inputs
                        .iter()
                        .map(|v| masks[v.0].clone().unwrap_or_else(|| vec![0; numel(graph.shape(*v))]))
                        .collect();
                    let joined = moat_nn::exec::concat(parts.iter().map(|p| p.as_slice()));
                    joined.contains(&1).then_some(joined)
                }
                Op::Flatten | Op::Reshape(_) | Op::Softmax => input(0).cloned(),
                Op::Relu => match input(0) {
                    Some(m) if !self.bypassed(i, &masks) => {
                        let shape = graph.shape(node.inputs[0]);
                        let chosen = choose(m, shape, prefer, coarsest, rng)
                            .ok_or_else(|| AttackError::Search(format!("no live element at '{}'", node.name)))?;
                        alive.push(Alive {
                            node: i,
                            element: chosen,
                            windows: Vec::new(),
                            carry: self.feeds_max_pool(i),
                        });
                        let mut out = vec![0; m.len()];
                        out[chosen] = 1;
                        Some(out)
                    }
                    _ => None,
                },
                Op::MaxPool(_) => match input(0) {
                    Some(m) => {
                        let ones: Vec<usize> = (0..m.len()).filter(|&k| m[k] == 1).collect();
                        let (&[e], Some(prev)) = (ones.as_slice(), alive.last_mut()) else {
                            return Err(AttackError::unsupported(&node.name, "a live max pool not right after a ReLU"));
                        };
                        if prev.node + 1 != i || !prev.carry {
                            return Err(AttackError::unsupported(&node.name, "a live max pool not right after a ReLU"));
                        }
                        let QuantizedLayer::MaxPool { window, channels } = &self.model.layers()[i] else {
                            return Err(AttackError::unsupported(&node.name, "max pool without geometry"));
                        };
                        let windows: Vec<usize> = pool_windows(*channels, *window)
                            .iter()
                            .enumerate()
                            .filter(|(_, w)| w.contains(&e))
                            .map(|(k, _)| k)
                            .collect();
                        let mut out = vec![0; numel(graph.shape(ValueId::of_node(i)))];
                        windows.iter().for_each(|&k| out[k] = 1);
                        alive.push(Alive { node: i, element: e, windows, carry: false });
                        Some(out)
                    }
                    None => None,
                },
                other => {
                    return Err(AttackError::unsupported(&node.name, format!("no chain through {}", other.kind())));
                }
            };
            masks[ValueId::of_node(i).0] = out;
        }
        let input = nodes[self.logits_layer].inputs[0];
        let end = masks[input.0]
            .as_ref()
            .and_then(|m| m.iter().position(|&v| v == 1))
            .ok_or_else(|| AttackError::Search(format!("the value read at node {read} does not reach the logits")))?;
        Ok(Chain { alive, end })
    }

    /// Where a value injected at element `element` of `source`'s output arrives through
    /// linear nodes only (e.g. through a residual shortcut): the input masks of the
    /// activations it reaches. Computed once per injection, checked against every chain.
    pub fn injection_footprint(&self, source: Source, element: usize) -> Footprint {
        let Source::Post(s) = source else { return Footprint(Vec::new()) };
        let nodes = self.graph().nodes();
        let mut masks: Vec<Option<Vec<u64>>> = vec![None; nodes.len() + 1];
        let mut start = vec![0u64; numel(self.graph().shape(ValueId::of_node(s)))];
        if let Some(slot) = start.get_mut(element) {
            *slot = 1;
        }
        masks[ValueId::of_node(s).0] = Some(start);
        let mut reached = Vec::new();
        for (i, node) in nodes.iter().enumerate().skip(s + 1) {
            let out = match &node.op {
                Op::Relu | Op::MaxPool(_) => {
                    if let Some(m) = masks[node.inputs[0].0].clone() {
                        reached.push((i, m));
                    }
                    None
                }
                _ => self.linear_mask(ValueId::of_node(i), i, &masks),
            };
            masks[ValueId::of_node(i).0] = out;
        }
        Footprint(reached)
    }

    /// A ReLU whose output only reaches a residual sum whose other operand already carries the
    /// chain (a shortcut that sees the live elements): switching it off keeps one path.
    fn bypassed(&self, node: usize, masks: &[Option<Vec<u64>>]) -> bool {
        let mut value = ValueId::of_node(node);
        loop {
            let [r] = self.readers[value.0].as_slice() else { return false };
            let op = &self.node(*r).op;
            if let Op::Add = op {
                let others = self.node(*r).inputs.iter().filter(|v| **v != value);
                return others.into_iter().any(|v| self.linear_mask(*v, node, masks).is_some_and(|m| m.contains(&1)));
            }
            if !op.is_linear() {
                return false;
            }
            value = ValueId::of_node(*r);
        }
    }

    /// The live mask of `value` through linear nodes only, from the masks known before node
    /// `current` (activations not yet decided count as switched off).
    fn linear_mask(&self, value: ValueId, current: usize, masks: &[Option<Vec<u64>>]) -> Option<Vec<u64>> {
        let p = value.node()?;
        if p < current {
            return masks[value.0].clone();
        }
        let node = self.node(p);
        match &node.op {
            op if op.is_linear() => {
                let m = self.linear_mask(node.inputs[0], current, masks)?;
                let y = self.ones.linear(p, &m, false)?;
                Some(y.into_iter().map(|v| u64::from(v != 0)).collect())
            }
            Op::Add => {
                let mut sum: Option<Vec<u64>> = None;
                for v in &node.inputs {
                    if let Some(m) = self.linear_mask(*v, current, masks) {
                        match sum.as_mut() {
                            Some(s) => s.iter_mut().zip(&m).for_each(|(s, m)| *s |= m),
                            None => sum = Some(m),
                        }
                    }
                }
                sum
            }
            Op::Flatten | Op::Reshape(_) => self.linear_mask(node.inputs[0], current, masks),
            _ => None,
        }
    }
}

/// A live element of `mask`: preferring positions on the grid of the `coarsest` later
/// resolution, then channel `prefer` (mod the channel count), then a random one.
fn choose(
    mask: &[u64],
    shape: &[usize],
    prefer: Option<usize>,
    coarsest: Option<(usize, usize)>,
    rng: &mut impl Rng,
) -> Option<usize> {
    let live: Vec<usize> = (0..mask.len()).filter(|&k| mask[k] == 1).collect();
    let per_channel = if shape.len() == 3 { shape[1] * shape[2] } else { 1 };
    let channels = shape.first().copied().unwrap_or(1).max(1);
    let aligned = |k: &usize| match (shape, coarsest) {
        ([_, h, w], Some((ch, cw))) if ch > 0 && cw > 0 && h % ch == 0 && w % cw == 0 => {
            let (y, x) = ((k % per_channel) / w, k % w);
            y % (h / ch) == 0 && x % (w / cw) == 0
        }
        _ => true,
    };
    let aligned_live: Vec<usize> = live.iter().copied().filter(aligned).collect();
    let live = if aligned_live.is_empty() { live } else { aligned_live };
    let preferred: Vec<usize> = match prefer {
        Some(c) => live.iter().copied().filter(|k| k / per_channel == c % channels).collect(),
        None => Vec::new(),
    };
    let pool = if preferred.is_empty() { &live } else { &preferred };
    (!pool.is_empty()).then(|| pool[rng.random_range(0..pool.len())])
}

/// The graph with every weight 1 and every bias 0: its linear maps tell which outputs depend
/// on which inputs.
fn all_ones(graph: &Graph) -> Result<Graph> {
    let nodes = graph
        .nodes()
        .iter()
        .map(|n| {
            let mut n = n.clone();
            match &mut n.op {
                Op::Conv2d(c) => {
                    c.weight = Tensor::new(c.weight.shape().to_vec(), vec![1.0; c.weight.data().len()])?;
                    c.bias.iter_mut().for_each(|b| *b = 0.0);
                }
                Op::Dense(d) => {
                    d.weight = Tensor::new(d.weight.shape().to_vec(), vec![1.0; d.weight.data().len()])?;
                    d.bias.iter_mut().for_each(|b| *b = 0.0);
                }
                _ => {}
            }
            Ok(n)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Graph::new(graph.name(), graph.input_shape().to_vec(), nodes, graph.output())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_nn::zoo;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn topology(arch: &str, shape: &[usize]) -> Topology {
        let arch: zoo::Architecture = arch.parse().unwrap_or_else(|e| panic!("{e}"));
        let g = zoo::build(&arch, shape, 10, 1).unwrap_or_else(|e| panic!("{e}"));
        let q = QuantizedGraph::new(&g, FixedPoint::default()).unwrap_or_else(|e| panic!("{e}"));
        Topology::new(&q).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lenet_layers_have_sources_reads_and_chains() -> Result<()> {
        let t = topology("lenet5", &[1, 28, 28]);
        let layers = t.layers()?;
        assert_eq!(layers.len(), 5);
        assert_eq!(layers[0].source, Source::Input);
        assert!(matches!(layers[4].read, Read::Logits));
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for layer in &layers[..4] {
            let Read::Relu(r) = layer.read else { panic!("{}", layer.name) };
            let chain = t.chain(r, 0, None, true, &mut rng)?;
            // Every later ReLU keeps exactly one element (no shortcuts in LeNet).
            let later = t.activations().filter(|&a| a > r && matches!(t.graph().nodes()[a].op, Op::Relu)).count();
            assert_eq!(chain.alive.iter().filter(|a| a.windows.is_empty()).count(), later + 1, "{}", layer.name);
        }
        Ok(())
    }

    #[test]
    fn resnet_chains_follow_the_shortcuts() -> Result<()> {
        let t = topology("resnet20:x0.25", &[3, 32, 32]);
        let layers = t.layers()?;
        let stem = &layers[0];
        let Read::Relu(r) = stem.read else { panic!("stem") };
        let chain = t.chain(r, 0, Some(2), true, &mut ChaCha20Rng::seed_from_u64(3))?;
        // The stem, then one live element per block output (9 blocks), none inside the
        // residual branches.
        assert_eq!(chain.alive.len(), 10, "{:?}", chain.alive);
        assert_eq!(chain.end % 16, 2);
        // An odd column is not sampled by the stride-2 projections: the chain then goes
        // through the first branch of each later stage instead.
        let odd = t.chain(r, 5, Some(2), true, &mut ChaCha20Rng::seed_from_u64(3))?;
        assert!(odd.alive.len() > chain.alive.len(), "{:?}", odd.alive);
        assert!(layers.iter().any(|l| l.add.is_some() && l.gain_shift == 12), "projection shortcuts are lifted");
        Ok(())
    }
}
