//! Scoring an extraction against the victim — evaluation code, the only place that reads the
//! true weights — and building the extracted model.
//!
//! Two references: the **deployed** parameters (the fixed-point values the server computes
//! with: what the protocol can reveal) and the **float** parameters of the trained model
//! (batch norms folded), which differ from the deployed ones by the quantisation step.
//! Relative error is `|estimate − truth| / max(|truth|, 2^−f)`, per parameter: one unit of
//! the fixed-point format is the floor, so a zero parameter read as zero scores 0.

use moat_nn::data::Dataset;
use moat_nn::exec::QuantizedLayer;
use moat_nn::graph::{Graph, Op, ValueId};
use moat_nn::tensor::Tensor;
use moat_nn::{FixedPoint, QuantizedGraph};
use serde::{Deserialize, Serialize};

use super::topology::Topology;
use super::{Estimate, Extraction, LayerExtraction};
use crate::error::{AttackError, Result};

/// How an extracted copy does on a test set next to its victim (ML Privacy Meter's extraction
/// figures: accuracy of each, and fidelity, the copy's label agreement with the victim).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CopyQuality {
    /// Test samples used.
    pub samples: usize,
    /// The victim's fixed-point accuracy.
    pub victim_accuracy: f64,
    /// The copy's float accuracy.
    pub copy_accuracy: f64,
    /// Fraction of samples on which the copy's label equals the victim's.
    pub fidelity: f64,
}

/// [`CopyQuality`] of `copy` (run in float) against `victim` (its deployed fixed-point model)
/// on the first `n` samples of `test` (all of them when `n` is larger).
pub fn copy_quality(victim: &QuantizedGraph, copy: &Graph, test: &Dataset, n: usize) -> Result<CopyQuality> {
    let n = n.min(test.len());
    let answers = moat_nn::exec::par_map(n, |i| -> Result<(usize, usize)> {
        let x = test.sample(i);
        Ok((victim.predict(x)?, moat_nn::FloatExecutor::predict(copy, x)?))
    });
    let (mut victim_right, mut copy_right, mut agree) = (0usize, 0usize, 0usize);
    for (i, answer) in answers.into_iter().enumerate() {
        let (v, c) = answer?;
        let truth = test.label(i);
        victim_right += usize::from(v == truth);
        copy_right += usize::from(c == truth);
        agree += usize::from(v == c);
    }
    let fraction = |k: usize| k as f64 / n.max(1) as f64;
    Ok(CopyQuality {
        samples: n,
        victim_accuracy: fraction(victim_right),
        copy_accuracy: fraction(copy_right),
        fidelity: fraction(agree),
    })
}

/// Error and cost figures of a set of parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Parameters.
    pub parameters: usize,
    /// Queries, detectors included.
    pub queries: u64,
    /// `queries / parameters`.
    pub queries_per_parameter: f64,
    /// The most queries one parameter's own read took.
    pub max_queries_per_parameter: u64,
    /// Mean relative error against the deployed (fixed-point) parameters.
    pub mean_relative_error_deployed: f64,
    /// Max relative error against the deployed parameters.
    pub max_relative_error_deployed: f64,
    /// Mean relative error against the trained float parameters.
    pub mean_relative_error_float: f64,
    /// Max relative error against the trained float parameters.
    pub max_relative_error_float: f64,
    /// Fraction of parameters recovered bit for bit.
    pub exact_fraction: f64,
    /// Planned parameters the attack could not extract.
    pub failed: usize,
}

/// One layer's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// Node name.
    pub name: String,
    /// Figures.
    #[serde(flatten)]
    pub figures: Figures,
}

/// The scored extraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Over all extracted parameters.
    pub total: Figures,
    /// Per layer.
    pub layers: Vec<LayerReport>,
}

#[derive(Default)]
struct Accumulator {
    n: usize,
    queries: u64,
    max_queries: u64,
    exact: usize,
    dep_sum: f64,
    dep_max: f64,
    float_sum: f64,
    float_max: f64,
    failed: usize,
}

impl Accumulator {
    fn add(&mut self, e: &Estimate, deployed: i64, float: f64, scale_bits: u32, frac_bits: u32) {
        let unit = (-(scale_bits as f64)).exp2();
        let floor = (-(frac_bits as f64)).exp2();
        let est = e.raw as f64 * unit;
        let dep = deployed as f64 * unit;
        let rel = |truth: f64| (est - truth).abs() / truth.abs().max(floor);
        let (d, f) = (rel(dep), rel(float));
        self.n += 1;
        self.queries += e.queries;
        self.max_queries = self.max_queries.max(e.queries);
        self.exact += usize::from(e.raw == deployed);
        self.dep_sum += d;
        self.dep_max = self.dep_max.max(d);
        self.float_sum += f;
        self.float_max = self.float_max.max(f);
    }

    fn merge(&mut self, o: &Accumulator) {
        self.n += o.n;
        self.queries += o.queries;
        self.max_queries = self.max_queries.max(o.max_queries);
        self.exact += o.exact;
        self.dep_sum += o.dep_sum;
        self.dep_max = self.dep_max.max(o.dep_max);
        self.float_sum += o.float_sum;
        self.float_max = self.float_max.max(o.float_max);
        self.failed += o.failed;
    }

    fn figures(&self) -> Figures {
        let n = self.n.max(1) as f64;
        Figures {
            parameters: self.n,
            queries: self.queries,
            queries_per_parameter: self.queries as f64 / n,
            max_queries_per_parameter: self.max_queries,
            mean_relative_error_deployed: self.dep_sum / n,
            max_relative_error_deployed: self.dep_max,
            mean_relative_error_float: self.float_sum / n,
            max_relative_error_float: self.float_max,
            exact_fraction: self.exact as f64 / n,
            failed: self.failed,
        }
    }
}

/// The true parameters of one layer: deployed ring values and float values.
struct Truth {
    weight: Vec<i64>,
    bias: Vec<i64>,
    float_weight: Vec<f32>,
    float_bias: Vec<f32>,
}

fn truth(victim: &QuantizedGraph, node: usize) -> Result<Truth> {
    let fp = victim.fixed();
    let signed = |v: &[u64]| v.iter().map(|x| fp.to_signed(*x)).collect::<Vec<_>>();
    let (weight, bias) = match &victim.layers()[node] {
        QuantizedLayer::Conv2d { weight, bias, .. } | QuantizedLayer::Dense { weight, bias } => {
            (signed(weight), signed(bias))
        }
        _ => return Err(AttackError::unsupported(&victim.graph().nodes()[node].name, "not a parameter layer")),
    };
    let (float_weight, float_bias) = match &victim.graph().nodes()[node].op {
        Op::Conv2d(c) => (c.weight.data().to_vec(), c.bias.clone()),
        Op::Dense(d) => (d.weight.data().to_vec(), d.bias.clone()),
        _ => (Vec::new(), Vec::new()),
    };
    Ok(Truth { weight, bias, float_weight, float_bias })
}

/// Scores `extraction` against `victim` (the quantised model the server runs; its graph holds
/// the folded float weights).
pub fn score(extraction: &Extraction, victim: &QuantizedGraph) -> Result<Scores> {
    let topo = Topology::new(victim)?;
    let layers = topo.layers()?;
    let fp = victim.fixed();
    let f = fp.frac_bits();
    let mut total = Accumulator::default();
    let mut reports = Vec::new();
    for ex in &extraction.layers {
        let layer = layers
            .iter()
            .find(|l| l.node == ex.node)
            .ok_or_else(|| AttackError::unsupported(&ex.name, "not a parameter layer of the victim"))?;
        let t = truth(victim, ex.node)?;
        // A residual sum's other operand adds its bias to the one read here.
        let (shortcut, shortcut_float) = shortcut_bias(&topo, victim, layer.add, ex.node)?;
        let mut acc = Accumulator { failed: ex.failed, ..Accumulator::default() };
        acc.queries += ex.detector_queries;
        let inputs = if t.bias.is_empty() { 0 } else { t.weight.len() / t.bias.len() };
        for e in &ex.weights {
            let (dep, flt) = match ex.relative_to_class {
                Some(r) => {
                    let reference = r * inputs + e.index % inputs;
                    (
                        t.weight[e.index] - t.weight[reference],
                        (t.float_weight[e.index] - t.float_weight[reference]) as f64,
                    )
                }
                None => (t.weight[e.index], t.float_weight[e.index] as f64),
            };
            acc.add(e, dep, flt, f, f);
        }
        for e in &ex.biases {
            let (dep, flt) = match ex.relative_to_class {
                Some(r) => (t.bias[e.index] - t.bias[r], (t.float_bias[e.index] - t.float_bias[r]) as f64),
                None => (
                    t.bias[e.index] + shortcut.get(e.index).copied().unwrap_or(0),
                    t.float_bias[e.index] as f64 + shortcut_float.get(e.index).copied().unwrap_or(0.0),
                ),
            };
            acc.add(e, dep, flt, 2 * f, f);
        }
        total.merge(&acc);
        reports.push(LayerReport { name: ex.name.clone(), figures: acc.figures() });
    }
    let mut figures = total.figures();
    figures.queries = extraction.queries;
    figures.queries_per_parameter = extraction.queries as f64 / figures.parameters.max(1) as f64;
    Ok(Scores { total: figures, layers: reports })
}

/// The deployed (ring, scale 2^(2f)) and float bias that the other operand of `add` contributes
/// at zero input: a projection shortcut's truncated bias, lifted; an identity shortcut's 0.
fn shortcut_bias(
    topo: &Topology,
    victim: &QuantizedGraph,
    add: Option<usize>,
    node: usize,
) -> Result<(Vec<i64>, Vec<f64>)> {
    let Some(add) = add else { return Ok((Vec::new(), Vec::new())) };
    let graph = victim.graph();
    let fp = victim.fixed();
    let f = fp.frac_bits();
    let this = ValueId::of_node(node);
    let mut deployed = Vec::new();
    let mut float = Vec::new();
    for v in graph.nodes()[add].inputs.iter().filter(|v| **v != this) {
        let Some(p) = v.node() else { continue };
        if !matches!(graph.nodes()[p].op, Op::Conv2d(_) | Op::Dense(_)) {
            continue;
        }
        let t = truth(victim, p)?;
        let lifted = topo.plan.lifts(add, *v);
        deployed = t.bias.iter().map(|b| if lifted { (b >> f) << f } else { *b }).collect();
        float = t.float_bias.iter().map(|b| *b as f64).collect();
    }
    Ok((deployed, float))
}

/// The extracted model: the public architecture with the extracted parameters (zero where
/// none was extracted; the logits layer's reference row at zero).
pub fn extracted_graph(extraction: &Extraction, public: &QuantizedGraph) -> Result<Graph> {
    let graph = public.graph();
    let fp: FixedPoint = public.fixed();
    let f = fp.frac_bits();
    let mut nodes = graph.nodes().to_vec();
    for ex in &extraction.layers {
        let node = nodes.get_mut(ex.node).ok_or_else(|| AttackError::unsupported(&ex.name, "node out of range"))?;
        let set = |weight: &mut Tensor<f32>, bias: &mut Vec<f32>, ex: &LayerExtraction| {
            let w = weight.data_mut();
            for e in &ex.weights {
                if let Some(slot) = w.get_mut(e.index) {
                    *slot = (e.raw as f64 * (-(f as f64)).exp2()) as f32;
                }
            }
            for e in &ex.biases {
                if let Some(slot) = bias.get_mut(e.index) {
                    *slot = (e.raw as f64 * (-(2.0 * f as f64)).exp2()) as f32;
                }
            }
        };
        match &mut node.op {
            Op::Conv2d(c) => set(&mut c.weight, &mut c.bias, ex),
            Op::Dense(d) => set(&mut d.weight, &mut d.bias, ex),
            _ => return Err(AttackError::unsupported(&ex.name, "not a parameter layer")),
        }
    }
    Ok(Graph::new(format!("{}-extracted", graph.name()), graph.input_shape().to_vec(), nodes, graph.output())?)
}
