//! The simulated backend: both parties in one process, every step replaced by its ideal
//! functionality.
//!
//! Each step computes exactly what the real protocol's parties would end up holding. Linear
//! layers and every non-linear step act on the reconstructed value (the real parties' fresh
//! output shares are uniformly random, so the pair is fully described by the value), and the
//! value is split into shares only where the client could act: at every [`TamperPoint`](crate::engine::hook::TamperPoint) the
//! engine draws the server's share `r` at random, hands the client `x − r`, and continues with
//! `r + (x − r)'` — what the real protocol reconstructs inside its next step. Truncations sit
//! where the real backend puts them ([`RescalePlan::fused`]), so tamper points see the same
//! scales in both backends. (A real client that does not tamper may run
//! [`RescalePlan::pool_first`] instead: it has fewer tamper points and the same result.) With
//! the honest client the result is bit for bit the fixed-point executor's; no cryptography runs, so one query costs at most one plaintext fixed-point
//! inference, and much less when the client has switched most activations off (mostly-zero
//! inputs take the scatter kernels): this is the oracle for attacks that need 10⁵–10⁹ queries.
//! The server's [`ServerGuard`] (e.g. [`Hardening`] noise) acts where the real server's does.

use std::sync::Arc;

use moat_nn::exec::{FixedKernel, argmax_ring};
use moat_nn::walk::{self, Keep, Kernel, Site};
use moat_nn::{FixedPoint, QuantizedGraph};
use rand::{Rng, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

use super::guard::{HardeningGuard, HonestServer, ServerGuard};
use super::hardening::{Hardening, NOISE_DOMAIN};
use super::hook::{ClientBehaviour, ShareSite};
use super::plan::RescalePlan;
use super::{Reveal, Revealed};
use crate::error::{MpcError, Result};
use crate::ring_ops::{PlainOps, Softmax, softmax};

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
    /// The server's guard (honest by default).
    guard: Box<dyn ServerGuard + Send>,
    /// Seed of the hardening noise stream ([`Self::with_hardening`]).
    noise_seed: u64,
    /// The secure softmax behind [`Reveal::Probabilities`].
    softmax: Softmax,
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
            guard: Box::new(HonestServer),
            noise_seed: seed ^ NOISE_DOMAIN,
            softmax: Softmax::default(),
            queries: 0,
        }
    }

    /// The same engine with the server adding `hardening` noise to its shares (a
    /// [`HardeningGuard`] whose stream is seeded from the engine's seed).
    pub fn with_hardening(self, hardening: Hardening) -> Self {
        let guard = HardeningGuard::new(hardening, self.model.fixed(), ChaCha20Rng::seed_from_u64(self.noise_seed));
        self.with_guard(Box::new(guard))
    }

    /// The same engine with the server acting through `guard` at every tamper point and at the
    /// reveal point, as the real server's walk calls it.
    pub fn with_guard(mut self, guard: Box<dyn ServerGuard + Send>) -> Self {
        self.guard = guard;
        self
    }

    /// The same engine revealing probabilities by the secure softmax `kind` (as a real server
    /// announcing it in its hello; [`Softmax::Spline`] by default).
    pub fn with_softmax(mut self, kind: Softmax) -> Self {
        self.softmax = kind;
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
        let expected = moat_nn::tensor::numel(graph.input_shape());
        if input.len() != expected {
            return Err(MpcError::invalid(
                "infer",
                format!("input has {} values, the model takes {expected}", input.len()),
            ));
        }
        reveal.check_supported()?;
        if self.guard.reveal_protocol().is_some() {
            reveal.check_allowed(Reveal::Probabilities)?;
        }
        self.queries += 1;
        let input = input.into_iter().map(|v| fp.reduce(v)).collect();
        let mut kernel = SimKernel {
            fixed: FixedKernel::new(&model),
            fp,
            parties: Parties { shares: &mut self.shares, guard: &mut *self.guard, client },
            trace: trace.as_deref_mut(),
        };
        let mut values = walk::run(graph, &self.plan, input, &mut kernel, Keep::Outputs)?;
        let logits =
            values.take(graph.logits()).ok_or_else(|| MpcError::invalid("infer", "the walk lost the logits"))?;
        let site = ShareSite::logits_of(graph, &self.plan, fp.frac_bits());
        let logits = kernel.parties.split(fp, &site, logits, Some(reveal));
        if let Some(t) = trace {
            t.logits = logits.clone();
        }
        Ok(match reveal {
            Reveal::Label => Revealed::Label(argmax_ring(fp, &logits).unwrap_or(0)),
            Reveal::Logits => Revealed::Logits(logits),
            Reveal::Probabilities => {
                let ops = &mut PlainOps::new(fp);
                Revealed::Probabilities(match self.guard.reveal_protocol() {
                    Some(siguard) => siguard.run(ops, &logits)?,
                    None => softmax(ops, &logits, logits.len(), self.softmax)?,
                })
            }
            other => return Err(MpcError::OutputUnsupported { requested: other }),
        })
    }
}

/// The two parties' hooks and the share randomness of the simulation.
struct Parties<'a> {
    shares: &'a mut ChaCha8Rng,
    guard: &'a mut dyn ServerGuard,
    client: &'a mut dyn ClientBehaviour,
}

impl Parties<'_> {
    /// Splits `value` into a random server share `r` and the client's `value − r`, lets the
    /// server's guard alter `r` (and, with `reveal`, act at the reveal point) and the client
    /// alter its share, and returns the value the two shares now reconstruct to. With an
    /// additive guard and client both act on the value itself: the same result.
    fn split(&mut self, fp: FixedPoint, site: &ShareSite<'_>, mut value: Vec<u64>, reveal: Option<Reveal>) -> Vec<u64> {
        if self.client.is_additive() && self.guard.is_additive() {
            if !self.guard.is_noop() {
                self.guard.guard(site, &mut value);
                if let Some(output) = reveal {
                    self.guard.reveal(output, site, &mut value);
                }
                value.iter_mut().for_each(|v| *v = fp.reduce(*v));
            }
            self.client.tamper(site, &mut value);
            value.iter_mut().for_each(|v| *v = fp.reduce(*v));
            return value;
        }
        let mut server: Vec<u64> = (0..value.len()).map(|_| fp.reduce(self.shares.random::<u64>())).collect();
        let mut share: Vec<u64> = value.iter().zip(&server).map(|(v, r)| fp.sub(*v, *r)).collect();
        self.guard.guard(site, &mut server);
        if let Some(output) = reveal {
            self.guard.reveal(output, site, &mut server);
        }
        self.client.tamper(site, &mut share);
        server.iter().zip(&share).map(|(r, s)| fp.add(fp.reduce(*r), fp.reduce(*s))).collect()
    }
}

/// The simulated execution of each step: the fixed-point kernels on reconstructed values, with
/// both parties' hooks at the tamper points of ReLUs and max pools.
struct SimKernel<'a> {
    fixed: FixedKernel<'a>,
    fp: FixedPoint,
    parties: Parties<'a>,
    trace: Option<&'a mut Trace>,
}

impl SimKernel<'_> {
    /// An activation: the pre-activation point, the ideal functionality, the post-activation
    /// point.
    fn activation(
        &mut self,
        site: &Site<'_>,
        x: &[u64],
        step: impl FnOnce(&mut FixedKernel<'_>, &Vec<u64>) -> moat_nn::Result<Vec<u64>>,
    ) -> Result<Vec<u64>> {
        let f = self.fp.frac_bits();
        let pre = ShareSite::input_of(site, f);
        let x = self.parties.split(self.fp, &pre, x.to_vec(), None);
        if let Some(t) = self.trace.as_deref_mut() {
            t.pre_activation.push((site.index, x.clone()));
        }
        let y = step(&mut self.fixed, &x)?;
        Ok(self.parties.split(self.fp, &ShareSite::output_of(site, f), y, None))
    }
}

impl Kernel for SimKernel<'_> {
    type Value = Vec<u64>;
    type Error = MpcError;

    fn linear(&mut self, site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        // The server's homomorphic response and, unless deferred, the truncation.
        Ok(self.fixed.linear(site, x, truncate)?)
    }

    fn relu(&mut self, site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.relu(site, x, truncate))
    }

    fn clip(&mut self, site: &Site<'_>, x: &Vec<u64>, truncate: bool) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.clip(site, x, truncate))
    }

    fn leaky_relu(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.leaky_relu(site, x))
    }

    fn hard_sigmoid(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.hard_sigmoid(site, x))
    }

    fn hard_swish(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.hard_swish(site, x))
    }

    fn spline(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.spline(site, x))
    }

    fn transpose(&mut self, site: &Site<'_>, x: &Vec<u64>, indices: &[usize]) -> Result<Vec<u64>> {
        // A public permutation of the shares, local to each party.
        Ok(self.fixed.transpose(site, x, indices)?)
    }

    fn max_pool(&mut self, site: &Site<'_>, x: &Vec<u64>) -> Result<Vec<u64>> {
        self.activation(site, x, |k, x| k.max_pool(site, x))
    }

    fn add(&mut self, site: &Site<'_>, terms: &[(&Vec<u64>, bool)]) -> Result<Vec<u64>> {
        Ok(self.fixed.add(site, terms)?)
    }

    fn concat(&mut self, site: &Site<'_>, parts: &[&Vec<u64>]) -> Result<Vec<u64>> {
        Ok(self.fixed.concat(site, parts)?)
    }

    /// The ideal functionality of [`crate::engine::layer::max_shares`] (no tamper points, as
    /// the real backend).
    fn max(&mut self, site: &Site<'_>, parts: &[&Vec<u64>]) -> Result<Vec<u64>> {
        Ok(self.fixed.max(site, parts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hook::{FnBehaviour, Honest, TamperPoint};
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
