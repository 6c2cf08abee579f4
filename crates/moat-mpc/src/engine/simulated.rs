//! The simulated backend: both parties' shares in one process, every non-linear step replaced
//! by its ideal functionality.
//!
//! Each step computes exactly what the real protocol's parties would end up holding: linear
//! layers are applied to both shares (the server adding the bias and masking the client's
//! result with fresh randomness, as its homomorphic response would), and each non-linear step
//! reconstructs its input, computes the function in the clear and re-shares the result with
//! fresh randomness. The client's [`ClientBehaviour`] is called at every [`TamperPoint`] of the
//! real protocol. With the honest client the result is bit for bit the fixed-point executor's;
//! no cryptography runs, so one query costs about one plaintext fixed-point inference — this is
//! the oracle for attacks that need 10⁵–10⁹ queries.

use std::sync::Arc;

use moat_nn::exec::argmax_ring;
use moat_nn::graph::{Op, ValueId};
use moat_nn::kernels;
use moat_nn::{FixedPoint, QuantizedGraph, QuantizedLayer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::hook::{ClientBehaviour, ShareSite, TamperPoint};
use super::{Reveal, Revealed};
use crate::error::{MpcError, Result};

/// Reconstructed values seen by the non-linear steps of one inference (for tests and
/// diagnostics; the real protocol reveals none of this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// `(node, value)`: the reconstructed input of each ReLU / max pool after tampering.
    pub pre_activation: Vec<(usize, Vec<u64>)>,
    /// The reconstructed logits after tampering.
    pub logits: Vec<u64>,
}

/// The pair of shares of one value: `(server share x₀, client share x₁)`.
type Shared = (Vec<u64>, Vec<u64>);

/// Two-party inference with both parties in one process. See the module documentation.
pub struct SimulatedEngine {
    model: Arc<QuantizedGraph>,
    rng: ChaCha20Rng,
    queries: u64,
}

impl SimulatedEngine {
    /// An engine for `model`; `seed` drives the parties' share randomness.
    pub fn new(model: Arc<QuantizedGraph>, seed: u64) -> Self {
        Self { model, rng: ChaCha20Rng::seed_from_u64(seed), queries: 0 }
    }

    /// The model being served.
    pub fn model(&self) -> &QuantizedGraph {
        &self.model
    }

    /// Inferences run so far.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// One inference on a float input (encoded at scale 2^f by the client).
    pub fn infer(&mut self, input: &[f32], reveal: Reveal, client: &mut dyn ClientBehaviour) -> Result<Revealed> {
        let encoded = self.model.encode_input(input).map_err(|e| MpcError::invalid("infer", e.to_string()))?;
        self.infer_encoded(encoded, reveal, client, None)
    }

    /// One inference on an encoded input (ring elements at scale 2^f), optionally recording a
    /// [`Trace`].
    pub fn infer_encoded(
        &mut self,
        input: Vec<u64>,
        reveal: Reveal,
        client: &mut dyn ClientBehaviour,
        mut trace: Option<&mut Trace>,
    ) -> Result<Revealed> {
        let model = Arc::clone(&self.model);
        let graph = model.graph();
        let fp = model.fixed();
        let expected = moat_nn::tensor::numel(graph.input_shape());
        if input.len() != expected {
            return Err(MpcError::invalid(
                "infer",
                format!("input has {} values, the model takes {expected}", input.len()),
            ));
        }
        self.queries += 1;
        let input: Vec<u64> = input.into_iter().map(|v| fp.reduce(v)).collect();
        let mut values: Vec<Option<Shared>> = vec![None; graph.nodes().len() + 1];
        values[0] = Some((vec![0; input.len()], input));
        let mut readers = graph.reader_counts();
        let logits_value = graph.logits();

        for (index, node) in graph.nodes().iter().enumerate() {
            let shape = graph.shape(ValueId::of_node(index));
            let (x0, x1) = values[node.inputs[0].0].as_ref().ok_or_else(|| {
                MpcError::invalid("infer", format!("value of node '{}' was released early", node.name))
            })?;
            let out: Shared =
                if let (Some(y0), Some(y1)) = (model.linear(index, x0, true), model.linear(index, x1, false)) {
                    // The server's homomorphic response: the client's part masked by fresh randomness.
                    let (y0, y1) = self.mask(fp, y0, y1);
                    // Truncation by f bits on shares (ideal functionality: exact).
                    let y = reconstruct(fp, &y0, &y1);
                    self.reshare(fp, y.into_iter().map(|v| fp.truncate(v)).collect())
                } else {
                    match &node.op {
                        Op::Relu | Op::MaxPool(_) => {
                            let pre_shape = graph.shape(node.inputs[0]);
                            let mut client_share = x1.clone();
                            let site = ShareSite {
                                point: TamperPoint::PreActivation,
                                node: index,
                                name: &node.name,
                                op: node.op.kind(),
                                shape: pre_shape,
                            };
                            client.tamper(&site, &mut client_share);
                            let x = reconstruct(fp, x0, &client_share);
                            if let Some(t) = trace.as_deref_mut() {
                                t.pre_activation.push((index, x.clone()));
                            }
                            let y = match (&node.op, &model.layers()[index]) {
                                (Op::MaxPool(_), QuantizedLayer::MaxPool { window, channels }) => {
                                    kernels::max_pool(&x, *channels, *window, |a, b| fp.to_signed(a) > fp.to_signed(b))
                                }
                                _ => x.iter().map(|&v| if fp.is_negative(v) { 0 } else { v }).collect(),
                            };
                            let (y0, mut y1) = self.reshare(fp, y);
                            let site = ShareSite {
                                point: TamperPoint::PostActivation,
                                node: index,
                                name: &node.name,
                                op: node.op.kind(),
                                shape,
                            };
                            client.tamper(&site, &mut y1);
                            y1.iter_mut().for_each(|v| *v = fp.reduce(*v));
                            (y0, y1)
                        }
                        Op::Add => {
                            let (z0, z1) = values[node.inputs[1].0]
                                .as_ref()
                                .ok_or_else(|| MpcError::invalid("infer", "residual value released early"))?;
                            (add(fp, x0, z0), add(fp, x1, z1))
                        }
                        Op::Concat => {
                            let mut parts = Vec::with_capacity(node.inputs.len());
                            for input in &node.inputs {
                                parts.push(
                                    values[input.0].as_ref().ok_or_else(|| {
                                        MpcError::invalid("infer", "concatenated value released early")
                                    })?,
                                );
                            }
                            (
                                moat_nn::exec::concat(parts.iter().map(|p| p.0.as_slice())),
                                moat_nn::exec::concat(parts.iter().map(|p| p.1.as_slice())),
                            )
                        }
                        Op::Flatten | Op::Reshape(_) | Op::Softmax => (x0.clone(), x1.clone()),
                        other => {
                            return Err(MpcError::invalid(
                                "infer",
                                format!("node '{}': no two-party semantics for {}", node.name, other.kind()),
                            ));
                        }
                    }
                };
            for input in &node.inputs {
                readers[input.0] -= 1;
                if readers[input.0] == 0 {
                    values[input.0] = None;
                }
            }
            values[ValueId::of_node(index).0] = Some(out);
        }

        let (l0, l1) = values[logits_value.0].take().ok_or_else(|| MpcError::invalid("infer", "logits missing"))?;
        let mut l1 = l1;
        let producer = logits_value.node().unwrap_or(0);
        let name = graph.nodes().get(producer).map(|n| n.name.as_str()).unwrap_or("input");
        let op = graph.nodes().get(producer).map(|n| n.op.kind()).unwrap_or("Input");
        let site = ShareSite { point: TamperPoint::Logits, node: producer, name, op, shape: graph.shape(logits_value) };
        client.tamper(&site, &mut l1);
        let logits = reconstruct(fp, &l0, &l1);
        if let Some(t) = trace {
            t.logits = logits.clone();
        }
        Ok(match reveal {
            Reveal::Label => Revealed::Label(argmax_ring(fp, &logits).unwrap_or(0)),
            Reveal::Logits => Revealed::Logits(logits),
        })
    }

    /// The server masks the client's part of a linear result: `(y₀ + r, y₁ − r)`.
    fn mask(&mut self, fp: FixedPoint, mut y0: Vec<u64>, mut y1: Vec<u64>) -> Shared {
        for (a, b) in y0.iter_mut().zip(y1.iter_mut()) {
            let r = fp.reduce(self.rng.random::<u64>());
            *a = fp.add(*a, r);
            *b = fp.sub(*b, r);
        }
        (y0, y1)
    }

    /// Fresh shares of `y`: `(r, y − r)`.
    fn reshare(&mut self, fp: FixedPoint, y: Vec<u64>) -> Shared {
        let r: Vec<u64> = (0..y.len()).map(|_| fp.reduce(self.rng.random::<u64>())).collect();
        let y1 = y.iter().zip(&r).map(|(v, r)| fp.sub(*v, *r)).collect();
        (r, y1)
    }
}

fn reconstruct(fp: FixedPoint, a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| fp.add(*x, *y)).collect()
}

fn add(fp: FixedPoint, a: &[u64], b: &[u64]) -> Vec<u64> {
    reconstruct(fp, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hook::{FnBehaviour, Honest};
    use moat_nn::zoo;

    fn model(arch: &str, shape: &[usize]) -> Arc<QuantizedGraph> {
        let graph = zoo::build(&arch.parse().unwrap_or(zoo::Architecture::Mlp { hidden: vec![4] }), shape, 10, 11)
            .unwrap_or_else(|e| panic!("build: {e}"));
        Arc::new(QuantizedGraph::new(&graph, FixedPoint::default()).unwrap_or_else(|e| panic!("quantize: {e}")))
    }

    fn input(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn honest_run_equals_the_fixed_point_executor() -> Result<()> {
        for (arch, shape) in [("lenet5", vec![1, 28, 28]), ("resnet20:x0.25", vec![3, 32, 32]), ("mlp:16,8", vec![12])]
        {
            honest_matches_fixed(arch, &shape, model(arch, &shape))?;
        }
        // Concat, as in a SqueezeNet fire module.
        let fire = || -> moat_nn::Result<QuantizedGraph> {
            let mut b = zoo::GraphBuilder::new(&[3, 8, 8], 5);
            let x = b.conv("stem", moat_nn::ValueId::INPUT, 8, 3, 1, 1)?;
            let x = b.fire("fire", x, 4, 6)?;
            let x = b.global_avg_pool(x)?;
            let out = b.dense("fc", x, 5)?;
            QuantizedGraph::new(&b.finish("fire", out)?, FixedPoint::default())
        };
        let q = fire().map_err(|e| MpcError::invalid("test", e.to_string()))?;
        honest_matches_fixed("fire", &[3, 8, 8], Arc::new(q))
    }

    fn honest_matches_fixed(arch: &str, shape: &[usize], q: Arc<QuantizedGraph>) -> Result<()> {
        let mut engine = SimulatedEngine::new(Arc::clone(&q), 1);
        for s in 0..3 {
            let x = input(moat_nn::tensor::numel(shape), s);
            let expected = q.logits_encoded(&x).map_err(|e| MpcError::invalid("test", e.to_string()))?;
            assert_eq!(engine.infer(&x, Reveal::Logits, &mut Honest)?, Revealed::Logits(expected.clone()), "{arch}");
            assert_eq!(
                engine.infer(&x, Reveal::Label, &mut Honest)?.label(q.fixed()),
                argmax_ring(q.fixed(), &expected)
            );
        }
        assert_eq!(engine.queries(), 6);
        Ok(())
    }

    #[test]
    fn pre_activation_offset_shifts_the_relu_input_by_exactly_delta() -> Result<()> {
        let q = model("lenet5", &[1, 28, 28]);
        let fp = q.fixed();
        let x = q.encode_input(&input(784, 5)).map_err(|e| MpcError::invalid("test", e.to_string()))?;
        let mut honest_trace = Trace::default();
        SimulatedEngine::new(Arc::clone(&q), 2).infer_encoded(
            x.clone(),
            Reveal::Label,
            &mut Honest,
            Some(&mut honest_trace),
        )?;
        let delta = fp.encode(-3.25);
        let first_relu = honest_trace.pre_activation[0].0;
        let mut tamper = FnBehaviour(|site: &ShareSite<'_>, share: &mut [u64]| {
            if site.point == TamperPoint::PreActivation && site.node == first_relu {
                share[17] = share[17].wrapping_add(delta);
            }
        });
        let mut trace = Trace::default();
        // Different share randomness: the shift is independent of the shares.
        SimulatedEngine::new(Arc::clone(&q), 99).infer_encoded(x, Reveal::Label, &mut tamper, Some(&mut trace))?;
        let (honest, tampered) = (&honest_trace.pre_activation[0].1, &trace.pre_activation[0].1);
        assert_eq!(fp.sub(tampered[17], honest[17]), delta);
        assert!(honest.iter().zip(tampered).enumerate().all(|(i, (a, b))| i == 17 || a == b));
        Ok(())
    }

    #[test]
    fn logit_tampering_can_force_any_label() -> Result<()> {
        let q = model("mlp:16", &[8]);
        let fp = q.fixed();
        let mut engine = SimulatedEngine::new(Arc::clone(&q), 3);
        let mut force_seven = FnBehaviour(|site: &ShareSite<'_>, share: &mut [u64]| {
            if site.point == TamperPoint::Logits {
                share[7] = share[7].wrapping_add(fp.encode(1000.0));
            }
        });
        assert_eq!(engine.infer(&input(8, 1), Reveal::Label, &mut force_seven)?, Revealed::Label(7));
        assert!(engine.infer(&[0.0; 3], Reveal::Label, &mut Honest).is_err());
        Ok(())
    }
}
