//! Membership-inference victims that answer through a guard, with the guard's effect counted:
//! how many answers kept the unguarded label, how many the guard changed, and the mean L1
//! distance between the guarded and the unguarded probabilities.
//!
//! * [`MemGuardVictim`]: any [`Victim`]'s probabilities through [`MemGuard`] — the plaintext
//!   OIP path's guard.
//! * [`SiGuardVictim`]: the model's fixed-point logits through SIGuard
//!   ([`moat_mpc::ring_ops::SiGuard`]) on [`PlainOps`] — the probabilities the two-party
//!   protocol reveals under SIGuard: `moat_mpc::ring_ops::siguard`'s test
//!   `two_party_siguard_equals_the_plaintext_one_bit_for_bit` holds the real protocol
//!   (`SessionOps`) to the same ring values as `PlainOps`, `moat_mpc::engine::real`'s
//!   `siguard_reveals_the_same_probabilities_in_both_backends_and_keeps_the_label` the served
//!   engine, and this module's test a real session's answers. The client decodes the revealed
//!   ring values and divides by their sum (the fixed-point softmax sums to 1 only within its
//!   precision), which keeps the label.
//! * [`ServedGuardVictim`]: a served model that guards its answers itself (a `moat secure
//!   server --defender` reached through real sessions), its answers compared with the
//!   unguarded answers of the same model and secure softmax, computed locally from the
//!   fixed-point logits — what the server reveals without a guard. The attacker cannot do this
//!   (it needs the model); the experimenter, who holds the victim, can.
//!
//! Labels ([`Victim::labels`]) are the unguarded victim's: both guards keep the label by
//! construction, and the probability answers measure that they do ([`GuardStats`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use moat_mpc::ring_ops::{PlainOps, SiGuard, SiGuardConfig, Softmax, softmax};
use moat_nn::QuantizedGraph;
use moat_nn::exec::par_map;
use serde::Serialize;

use super::defender::{DefenderFile, DefenderInput};
use super::memguard::MemGuard;
use super::{Result as DefenseResult, invalid};
use crate::victim::{Result, Victim, VictimError, argmax, check_class_vector, read_ring_probabilities as normalised};

/// What a guard did over the queries it answered.
#[derive(Clone, Debug, Default)]
pub struct GuardStats {
    /// Probability vectors answered.
    pub queries: usize,
    /// Answers whose label equals the unguarded answer's.
    pub label_kept: usize,
    /// Answers the guard changed.
    pub changed: usize,
    /// Sum of the L1 distances between guarded and unguarded answers.
    pub l1_sum: f64,
    /// Seconds spent in the guard.
    pub seconds: f64,
}

/// [`GuardStats`] as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardSummary {
    /// Probability vectors answered.
    pub queries: usize,
    /// Fraction of answers with the unguarded label.
    pub label_agreement: f64,
    /// Fraction of answers the guard changed.
    pub changed: f64,
    /// Mean L1 distance between guarded and unguarded probabilities.
    pub mean_l1_distortion: f64,
    /// Milliseconds of guard computation per answer.
    pub ms_per_query: f64,
}

impl GuardStats {
    fn add(&mut self, unguarded: &[f64], guarded: &[f64], seconds: f64) {
        self.queries += 1;
        self.label_kept += usize::from(argmax(unguarded) == argmax(guarded));
        self.changed += usize::from(unguarded != guarded);
        self.l1_sum += unguarded.iter().zip(guarded).map(|(a, b)| (a - b).abs()).sum::<f64>();
        self.seconds += seconds;
    }

    /// The summary (zeros before any query).
    pub fn summary(&self) -> GuardSummary {
        let n = self.queries.max(1) as f64;
        GuardSummary {
            queries: self.queries,
            label_agreement: self.label_kept as f64 / n,
            changed: self.changed as f64 / n,
            mean_l1_distortion: self.l1_sum / n,
            ms_per_query: 1e3 * self.seconds / n,
        }
    }
}

/// A shared handle on a guard's statistics (read after the victim was used).
pub type SharedStats = Arc<Mutex<GuardStats>>;

fn record(stats: &SharedStats, pairs: &[(Vec<f64>, Vec<f64>, f64)]) {
    // A poisoned lock only means another thread panicked while counting; the counts stay usable.
    let mut s = stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (u, g, t) in pairs {
        s.add(u, g, *t);
    }
}

/// Any victim's probabilities through MemGuard.
pub struct MemGuardVictim {
    inner: Box<dyn Victim>,
    guard: MemGuard,
    stats: SharedStats,
}

impl MemGuardVictim {
    /// Guards `inner`'s answers; refuses a defender of another width (before any query).
    pub fn new(inner: Box<dyn Victim>, guard: MemGuard) -> DefenseResult<Self> {
        let classes = guard.defender().meta.shape.classes;
        if classes != inner.classes() {
            return Err(invalid(format!(
                "the defender reads {classes} classes, victim '{}' answers {}",
                inner.name(),
                inner.classes()
            )));
        }
        Ok(Self { inner, guard, stats: SharedStats::default() })
    }

    /// The guard's statistics.
    pub fn stats(&self) -> SharedStats {
        Arc::clone(&self.stats)
    }
}

impl Victim for MemGuardVictim {
    fn name(&self) -> String {
        format!("{}-memguard", self.inner.name())
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let plain = self.inner.probabilities(inputs)?;
        let guard = &self.guard;
        let guarded = par_map(plain.len(), |i| {
            let start = Instant::now();
            guard.guard(&plain[i]).map(|g| (g.probabilities, start.elapsed().as_secs_f64()))
        });
        let mut pairs = Vec::with_capacity(plain.len());
        for (u, g) in plain.into_iter().zip(guarded) {
            let (g, t) = g.map_err(|e| VictimError::Guard(format!("memguard: {e}")))?;
            check_class_vector(&self.name(), &g, self.classes())?;
            pairs.push((u, g, t));
        }
        record(&self.stats, &pairs);
        Ok(pairs.into_iter().map(|(_, g, _)| g).collect())
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        self.inner.labels(inputs)
    }
}

/// The two-party protocol's SIGuard-revealed probabilities, computed by the plaintext ring
/// operations (see the module documentation).
pub struct SiGuardVictim {
    model: Arc<QuantizedGraph>,
    guard: SiGuard,
    classes: usize,
    stats: SharedStats,
}

impl SiGuardVictim {
    /// SIGuard over `model` with the server's `defender` (which must read the raw
    /// probabilities: SIGuard evaluates it inside the protocol, where sorting is not done);
    /// every check before any query.
    pub fn new(model: Arc<QuantizedGraph>, defender: &DefenderFile, config: SiGuardConfig) -> DefenseResult<Self> {
        defender.validate()?;
        if defender.meta.input != DefenderInput::Probabilities {
            return Err(invalid(
                "SIGuard needs a defender on the raw probabilities (moat train-defender --input probabilities); this one reads sorted scores",
            ));
        }
        let classes = moat_nn::tensor::numel(model.graph().output_shape());
        let guard = SiGuard::new(defender.weights().to_defender(model.fixed())?, config, classes)?;
        Ok(Self { model, guard, classes, stats: SharedStats::default() })
    }

    /// The guard's statistics.
    pub fn stats(&self) -> SharedStats {
        Arc::clone(&self.stats)
    }
}

impl Victim for SiGuardVictim {
    fn name(&self) -> String {
        "siguard-2pc".into()
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let (model, guard, c) = (&self.model, &self.guard, self.classes);
        let fixed = model.fixed();
        let answers = par_map(inputs.len(), |i| -> Result<(Vec<f64>, Vec<f64>, f64)> {
            let z = model.logits_encoded(inputs[i])?;
            // The unguarded answer by the guard's own softmax: the distortion is the guard's.
            let plain = unguarded(model, &z, c, guard.config().softmax)?;
            let start = Instant::now();
            let guarded = guard.run(&mut PlainOps::new(fixed), &z)?;
            let t = start.elapsed().as_secs_f64();
            Ok((plain, normalised(fixed, &guarded), t))
        });
        let pairs = answers.into_iter().collect::<Result<Vec<_>>>()?;
        for (_, g, _) in &pairs {
            check_class_vector("siguard-2pc", g, c)?;
        }
        record(&self.stats, &pairs);
        Ok(pairs.into_iter().map(|(_, g, _)| g).collect())
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        inputs.iter().map(|x| Ok(self.model.predict(x)?)).collect()
    }
}

/// What a server without a guard reveals for the fixed-point logits `z` (`classes` of them),
/// as the client reads it: the secure softmax `variant` on the plaintext ring operations.
fn unguarded(model: &QuantizedGraph, z: &[u64], classes: usize, variant: Softmax) -> Result<Vec<f64>> {
    let fixed = model.fixed();
    Ok(normalised(fixed, &softmax(&mut PlainOps::new(fixed), z, classes, variant)?))
}

/// A victim that guards its own answers (the guard runs where the model is served), counted
/// against the unguarded answers of the same model: the fixed-point logits through the same
/// secure softmax, decoded as the client reads them. The time recorded per answer is the whole
/// query's (the served guard cannot be timed apart from the inference it guards).
pub struct ServedGuardVictim {
    inner: Box<dyn Victim>,
    model: Arc<QuantizedGraph>,
    softmax: Softmax,
    stats: SharedStats,
}

impl ServedGuardVictim {
    /// Counts `inner`'s answers against `model`'s unguarded answers by `softmax` (the variant
    /// the server announced); refuses a model of another width before any query.
    pub fn new(inner: Box<dyn Victim>, model: Arc<QuantizedGraph>, softmax: Softmax) -> DefenseResult<Self> {
        let classes = moat_nn::tensor::numel(model.graph().output_shape());
        if classes != inner.classes() {
            return Err(invalid(format!(
                "the local model outputs {classes} values, victim '{}' answers {}",
                inner.name(),
                inner.classes()
            )));
        }
        Ok(Self { inner, model, softmax, stats: SharedStats::default() })
    }

    /// The guard's statistics.
    pub fn stats(&self) -> SharedStats {
        Arc::clone(&self.stats)
    }
}

impl Victim for ServedGuardVictim {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn reveals(&self) -> moat_mpc::engine::Reveal {
        self.inner.reveals()
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let start = Instant::now();
        let guarded = self.inner.probabilities(inputs)?;
        let t = start.elapsed().as_secs_f64() / inputs.len().max(1) as f64;
        let (model, variant, c) = (&self.model, self.softmax, self.classes());
        let plain = par_map(inputs.len(), |i| unguarded(model, &model.logits_encoded(inputs[i])?, c, variant));
        let pairs = plain.into_iter().zip(guarded).map(|(u, g)| Ok((u?, g, t))).collect::<Result<Vec<_>>>()?;
        record(&self.stats, &pairs);
        Ok(pairs.into_iter().map(|(_, g, _)| g).collect())
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        self.inner.labels(inputs)
    }
}

#[cfg(test)]
mod tests {
    use moat_client::SecureSession;
    use moat_mpc::Seed;
    use moat_mpc::engine::{Honest, Reveal, Revealed, ServeOptions, ServerModel};
    use moat_mpc::transport::memory;
    use moat_nn::{FixedPoint, zoo};
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::defense::defender::TrainSpec;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// The SIGuard victim's answers are what a real two-party session reveals under the same
    /// guard, read the same way by the client — bit for bit — and keep the unguarded label.
    #[test]
    fn the_siguard_victim_answers_what_a_real_session_reveals() -> TestResult {
        let graph = zoo::build(&zoo::Architecture::Mlp { hidden: vec![8] }, &[1, 4, 4], 3, 7)?;
        let model = Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (members, others) = crate::defense::defender::tests::synthetic(3, 20, &mut rng);
        let spec = TrainSpec {
            model: "tiny".into(),
            dataset: "synthetic".into(),
            hidden: [6, 4],
            input: DefenderInput::Probabilities,
            epochs: 50,
            insecure_seed: Some(3),
        };
        let defender = DefenderFile::train(spec, &members, &others, &mut rng)?;
        let config = SiGuardConfig { outer: 2, inner: 2, ..Default::default() };
        let inputs: Vec<Vec<f32>> =
            (0..2).map(|i| (0..16).map(|j| ((i * 16 + j) as f32 * 0.37).sin()).collect()).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();

        let mut victim = SiGuardVictim::new(Arc::clone(&model), &defender, config)?;
        let ours = victim.probabilities(&refs)?;

        let (mut server_ch, client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let mut guard = SiGuard::new(defender.weights().to_defender(model.fixed())?, config, 3)?;
        let handle = std::thread::spawn(move || {
            server.serve_guarded(&mut server_ch, Seed::insecure_from_u64(1), &ServeOptions::default(), &mut guard)
        });
        let mut session = SecureSession::start(Box::new(client_ch), Seed::insecure_from_u64(2), None)?;
        let mut real = Vec::new();
        for x in &refs {
            let Revealed::Probabilities(ring) = session.infer_with(x, Reveal::Probabilities, &mut Honest)? else {
                return Err("the session revealed no probabilities".into());
            };
            real.push(normalised(model.fixed(), &ring));
        }
        session.close()?;
        handle.join().map_err(|_| "server thread panicked")??;
        assert_eq!(ours, real);
        let stats = victim.stats();
        let s = stats.lock().map_err(|_| "poisoned")?.summary();
        assert_eq!((s.queries, s.label_agreement), (2, 1.0));
        assert_eq!(victim.labels(&refs)?, refs.iter().map(|x| model.predict(x)).collect::<moat_nn::Result<Vec<_>>>()?);
        // A defender on sorted scores cannot run inside the protocol.
        let mut sorted = defender.clone();
        sorted.meta.input = DefenderInput::Sorted;
        assert!(SiGuardVictim::new(Arc::clone(&model), &sorted, config).is_err());

        // The same answers counted from outside (as for a served guard) give the same counts,
        // and a local model of another width is refused.
        let inner = SiGuardVictim::new(Arc::clone(&model), &defender, config)?;
        let mut served = ServedGuardVictim::new(Box::new(inner), Arc::clone(&model), config.softmax)?;
        assert_eq!(served.probabilities(&refs)?, ours);
        let counted = served.stats().lock().map_err(|_| "poisoned")?.summary();
        assert_eq!((counted.queries, counted.label_agreement, counted.changed), (s.queries, 1.0, s.changed));
        assert!((counted.mean_l1_distortion - s.mean_l1_distortion).abs() < 1e-12);
        let wider = zoo::build(&zoo::Architecture::Mlp { hidden: vec![8] }, &[1, 4, 4], 4, 7)?;
        let wider = Arc::new(QuantizedGraph::new(&wider, FixedPoint::default())?);
        let inner = SiGuardVictim::new(model, &defender, config)?;
        assert!(ServedGuardVictim::new(Box::new(inner), wider, config.softmax).is_err());
        Ok(())
    }
}
