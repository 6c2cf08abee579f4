//! The simulated backend: both parties in one process, every step replaced by its ideal
//! functionality.
//!
//! Each step computes exactly what the real protocol's parties would end up holding. Linear
//! layers and every non-linear step act on the reconstructed value (the real parties' fresh
//! output shares are uniformly random, so the pair is fully described by the value), and the
//! value is split into shares only where the client could act: at every [`TamperPoint`] the
//! engine draws the server's share `r` at random, hands the client `x − r`, and continues with
//! `r + (x − r)'` — what the real protocol reconstructs inside its next step. Truncations sit
//! where the real backend puts them ([`RescalePlan::fused`]), so tamper points see the same
//! scales in both backends. With the honest client the result is bit for bit the fixed-point
//! executor's; no cryptography runs, so one query costs at most one plaintext fixed-point
//! inference, and much less when the client has switched most activations off (mostly-zero
//! inputs take the scatter kernels): this is the oracle for attacks that need 10⁵–10⁹ queries.
//! Server-side [`Hardening`] noise is added where the real server adds it.

use std::sync::Arc;

use moat_nn::exec::argmax_ring;
use moat_nn::graph::{Op, ValueId};
use moat_nn::kernels;
use moat_nn::{FixedPoint, QuantizedGraph, QuantizedLayer};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

use super::hardening::Hardening;
use super::hook::{ClientBehaviour, ShareSite, TamperPoint};
use super::plan::RescalePlan;
use super::{Reveal, Revealed};
use crate::error::{MpcError, Result};

/// Reconstructed values seen by the non-linear steps of one inference (for tests and
/// diagnostics; the real protocol reveals none of this).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// `(node, value)`: the reconstructed input of each ReLU / max pool after tampering (at
    /// the site's scale, see [`ShareSite::frac_bits`]).
    pub pre_activation: Vec<(usize, Vec<u64>)>,
    /// The reconstructed logits after tampering.
    pub logits: Vec<u64>,
}

/// Two-party inference with both parties in one process. See the module documentation.
pub struct SimulatedEngine {
    model: Arc<QuantizedGraph>,
    plan: RescalePlan,
    /// The server's share randomness (not security-relevant here: ChaCha8 for speed).
    shares: ChaCha8Rng,
    /// The server's hardening noise.
    noise: ChaCha20Rng,
    hardening: Hardening,
    queries: u64,
}

impl SimulatedEngine {
    /// An engine for `model`; `seed` drives the parties' share randomness.
    pub fn new(model: Arc<QuantizedGraph>, seed: u64) -> Self {
        let plan = RescalePlan::fused(model.graph());
        Self {
            model,
            plan,
            shares: ChaCha8Rng::seed_from_u64(seed),
            noise: ChaCha20Rng::seed_from_u64(seed ^ 0x6e6f_6973_6521),
            hardening: Hardening::NONE,
            queries: 0,
        }
    }

    /// The same engine with the server adding `hardening` noise to its shares.
    pub fn with_hardening(mut self, hardening: Hardening) -> Self {
        self.hardening = hardening;
        self
    }

    /// The model being served.
    pub fn model(&self) -> &QuantizedGraph {
        &self.model
    }

    /// Where the walk truncates (the same plan as the real backend).
    pub fn plan(&self) -> &RescalePlan {
        &self.plan
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
        let f = fp.frac_bits();
        let expected = moat_nn::tensor::numel(graph.input_shape());
        if input.len() != expected {
            return Err(MpcError::invalid(
                "infer",
                format!("input has {} values, the model takes {expected}", input.len()),
            ));
        }
        self.queries += 1;
        let mut values: Vec<Option<Vec<u64>>> = vec![None; graph.nodes().len() + 1];
        values[0] = Some(input.into_iter().map(|v| fp.reduce(v)).collect());
        let mut readers = graph.reader_counts();
        let logits_value = graph.logits();
        let released = |name: &str| MpcError::invalid("infer", format!("an input of node '{name}' was released early"));

        for (index, node) in graph.nodes().iter().enumerate() {
            let x = values[node.inputs[0].0].as_ref().ok_or_else(|| released(&node.name))?;
            let out = if let Some(y) = model.linear(index, x, true) {
                // The server's homomorphic response and, unless deferred, the truncation.
                if self.plan.truncates_linear(index) { y.into_iter().map(|v| fp.truncate(v)).collect() } else { y }
            } else {
                match &node.op {
                    Op::Relu | Op::MaxPool(_) => {
                        let site = |point, shape, frac_bits| ShareSite {
                            point,
                            node: index,
                            name: &node.name,
                            op: node.op.kind(),
                            shape,
                            frac_bits,
                        };
                        let pre_bits = self.plan.frac_bits(node.inputs[0], f);
                        let mut x = x.clone();
                        self.add_noise(fp, &mut x, self.hardening.activation_noise, pre_bits);
                        let pre = site(TamperPoint::PreActivation, graph.shape(node.inputs[0]), pre_bits);
                        let x = self.tamper(fp, client, &pre, x);
                        if let Some(t) = trace.as_deref_mut() {
                            t.pre_activation.push((index, x.clone()));
                        }
                        let y = match (&node.op, &model.layers()[index]) {
                            (Op::MaxPool(_), QuantizedLayer::MaxPool { window, channels }) => {
                                kernels::max_pool(&x, *channels, *window, |a, b| fp.to_signed(a) > fp.to_signed(b))
                            }
                            _ if self.plan.truncates_after_relu(index) => {
                                x.iter().map(|&v| if fp.is_negative(v) { 0 } else { fp.truncate(v) }).collect()
                            }
                            _ => x.iter().map(|&v| if fp.is_negative(v) { 0 } else { v }).collect(),
                        };
                        let post_bits = self.plan.frac_bits(ValueId::of_node(index), f);
                        self.tamper(
                            fp,
                            client,
                            &site(TamperPoint::PostActivation, graph.shape(ValueId::of_node(index)), post_bits),
                            y,
                        )
                    }
                    Op::Add => {
                        let mut sum = vec![0u64; x.len()];
                        for input in &node.inputs {
                            let v = values[input.0].as_ref().ok_or_else(|| released(&node.name))?;
                            let lift = if self.plan.lifts(index, *input) { 1u64 << f } else { 1 };
                            for (s, v) in sum.iter_mut().zip(v) {
                                *s = fp.add(*s, fp.mul(*v, lift));
                            }
                        }
                        sum
                    }
                    Op::Concat => {
                        let mut parts = Vec::with_capacity(node.inputs.len());
                        for input in &node.inputs {
                            parts.push(values[input.0].as_ref().ok_or_else(|| released(&node.name))?.as_slice());
                        }
                        moat_nn::exec::concat(parts.into_iter())
                    }
                    Op::Flatten | Op::Reshape(_) | Op::Softmax => x.clone(),
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

        let mut logits = values[logits_value.0].take().ok_or_else(|| released("output"))?;
        self.add_noise(fp, &mut logits, self.hardening.logit_noise, f);
        let producer = logits_value.node().unwrap_or(0);
        let name = graph.nodes().get(producer).map(|n| n.name.as_str()).unwrap_or("input");
        let op = graph.nodes().get(producer).map(|n| n.op.kind()).unwrap_or("Input");
        let shape = graph.shape(logits_value);
        let site = ShareSite { point: TamperPoint::Logits, node: producer, name, op, shape, frac_bits: f };
        let logits = self.tamper(fp, client, &site, logits);
        if let Some(t) = trace {
            t.logits = logits.clone();
        }
        Ok(match reveal {
            Reveal::Label => Revealed::Label(argmax_ring(fp, &logits).unwrap_or(0)),
            Reveal::Logits => Revealed::Logits(logits),
        })
    }

    /// Splits `value` into a random server share `r` and the client's `value − r`, lets the
    /// client alter its share, and returns the value the two shares now reconstruct to.
    fn tamper(
        &mut self,
        fp: FixedPoint,
        client: &mut dyn ClientBehaviour,
        site: &ShareSite<'_>,
        mut value: Vec<u64>,
    ) -> Vec<u64> {
        if client.is_additive() {
            client.tamper(site, &mut value);
            value.iter_mut().for_each(|v| *v = fp.reduce(*v));
            return value;
        }
        let server: Vec<u64> = (0..value.len()).map(|_| fp.reduce(self.shares.random::<u64>())).collect();
        let mut share: Vec<u64> = value.iter().zip(&server).map(|(v, r)| fp.sub(*v, *r)).collect();
        client.tamper(site, &mut share);
        server.iter().zip(&share).map(|(r, s)| fp.add(*r, fp.reduce(*s))).collect()
    }

    /// The server's hardening noise on its share of `value`.
    fn add_noise(&mut self, fp: FixedPoint, value: &mut [u64], amplitude: f64, frac_bits: u32) {
        if amplitude > 0.0 {
            Hardening::perturb(fp, value, amplitude, frac_bits, &mut self.noise);
        }
    }
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

    /// Adds fixed offsets; declared additive, so the engine may apply it to values.
    struct Offsets(u64);

    impl ClientBehaviour for Offsets {
        fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
            let d = self.0.wrapping_mul(site.node as u64 + 1);
            share.iter_mut().step_by(3).for_each(|v| *v = v.wrapping_add(d));
        }

        fn is_additive(&self) -> bool {
            true
        }
    }

    #[test]
    fn an_additive_behaviour_on_values_equals_the_same_offsets_on_shares() -> Result<()> {
        let q = model("resnet20:x0.25", &[3, 32, 32]);
        let x = q.encode_input(&input(3 * 32 * 32, 4)).map_err(|e| MpcError::invalid("test", e.to_string()))?;
        let delta = q.fixed().encode(0.75);
        let mut fast = Trace::default();
        let mut slow = Trace::default();
        let a = SimulatedEngine::new(Arc::clone(&q), 1).infer_encoded(
            x.clone(),
            Reveal::Logits,
            &mut Offsets(delta),
            Some(&mut fast),
        )?;
        let mut on_shares = Offsets(delta);
        let mut shares_only = FnBehaviour(|site: &ShareSite<'_>, share: &mut [u64]| on_shares.tamper(site, share));
        let b = SimulatedEngine::new(Arc::clone(&q), 2).infer_encoded(
            x,
            Reveal::Logits,
            &mut shares_only,
            Some(&mut slow),
        )?;
        assert_eq!(a, b);
        assert_eq!(fast, slow);
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
