//! SEEK: label-only model extraction by share tampering (Chen & Fan, ePrint 2022/1200),
//! against moat's own protocol.
//!
//! ## Threat model
//!
//! The client follows the message flow of the semi-honest protocol but adds offsets of its
//! choice to its *own* shares ([`moat_mpc::engine::ClientBehaviour`]). It knows what every
//! client knows: its input, its shares, the public architecture and fixed-point setting
//! (the server's hello), the fusion plan that follows from them, and the label of each query.
//! It never sees a weight; the [`Oracle`] hides the model.
//!
//! ## How one pre-activation is read, exactly
//!
//! To read element `i` of a layer's output `z` (at the ReLU `R` behind it):
//!
//! 1. **Set the layer's input.** Kill every activation up to the injection site (its output
//!    is then exactly 0) and add the chosen vector `v` to the client's post-activation share
//!    there ([`behaviour`]); for the first layer `v` is simply the client's input.
//! 2. **Isolate the neuron.** Kill every element of `R` but `i`, which gets offset `c`.
//! 3. **Carry it to the logits.** [`topology::Topology::chain`] keeps one element alive per
//!    later activation (identity: `+K` before, `−K` after), following residual shortcuts and
//!    killing the branches they bypass; everything else is killed, so the logits are a
//!    monotone function of `R`'s output `y`. Two classes `p`, `q` are kept (the others pushed
//!    down by `−K`), with an offset `Δ` on `p`: the label is a monotone step function `D(y)`.
//! 4. **Calibrate the detector** (once per neuron): binary-search `Δ` so that `D` flips
//!    between `y = 0` and some `y ≠ 0`, then the flip point `y*` by injecting `y` directly at
//!    `R`'s output; check `D` is monotone in a window around `y*`.
//! 5. **Read.** With `β = y* − 1` added to `R`'s output, the label is high exactly when
//!    `⌊max(z + c, 0) / 2^s⌋ ≥ 1`, i.e. when `c ≥ 2^s − z`. A search over `c` returns `z`
//!    *exactly* — to the last bit of the ring, at the read site's scale (2^(2f) behind a
//!    deferred truncation).
//!
//! Parameters follow from chosen inputs: the bias from `v = 0`, weight `k` from
//! `v = u·e_k` (`u` one unit at the layer's output scale): `W_k = (z(u e_k) − z(0)) / 2^g`.
//! Conv weights are read at one output position per channel. The final layer is read at the
//! logits: with only classes `c` and 0 left, `Δ` at the flip gives `logit_c − logit_0` — the
//! final layer is recovered up to a common row, which is all labels determine.
//!
//! ## Cost
//!
//! A read costs one galloping search: about `2·log2(|W| / step) + log2(step) + 1` queries,
//! with `step` the running mean of the layer's weights; a neuron's detector adds ≈ 40–60.
//! Every query kills most activations, so the simulated oracle evaluates it in a fraction of
//! a dense pass (mostly-zero inputs take the scatter kernels).

pub(crate) mod behaviour;
pub mod evaluate;
pub(crate) mod topology;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result};
use crate::oracle::Oracle;
use behaviour::Tampering;
use topology::{Chain, Footprint, Kind, Layer, Read, Source, Topology};

/// Which parameters to extract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// Every parameter of every layer.
    Full,
    /// From every layer: `channels` output channels (neurons) at random, and from each its
    /// bias and `per_channel` weights at random.
    Sample {
        /// Output channels per layer.
        channels: usize,
        /// Weights per output channel.
        per_channel: usize,
    },
}

/// Attack settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeekConfig {
    /// Drives every random choice of the attack (samples, chains).
    pub seed: u64,
    /// Queries per decision, majority vote (1 against an exact protocol; more against a noisy
    /// server).
    pub votes: u32,
    /// What to extract.
    pub sampling: Sampling,
    /// Half-width of the monotonicity check around each detector's flip.
    pub window: i64,
    /// Chains tried per neuron before giving up.
    pub retries: usize,
    /// Layers to attack by node name (empty: all).
    pub layers: Vec<String>,
    /// Posts between the detector's flip and the read's zero (`β = y* − 1 − margin`): 0 against
    /// an exact protocol; larger than the noise against a noisy server, so that a switched-off
    /// read is reliably on the low side.
    pub margin: i64,
    /// Weight reads inject `input_scale` units instead of one (against a noisy server, a
    /// larger signal; the read is divided back and rounded).
    pub input_scale: u64,
}

impl Default for SeekConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            votes: 1,
            sampling: Sampling::Full,
            window: 4,
            retries: 6,
            layers: Vec::new(),
            margin: 0,
            input_scale: 1,
        }
    }
}

/// One extracted parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Flat index into the layer's weight tensor or bias vector.
    pub index: usize,
    /// The value in ring units: weights at scale 2^f, biases at 2^(2f).
    pub raw: i64,
    /// Read to the last bit (otherwise known to the bias's truncated precision).
    pub exact: bool,
    /// Queries spent on this parameter's own read (the detector is counted per layer).
    pub queries: u64,
}

/// What was extracted from one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerExtraction {
    /// Node index in the folded graph.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// Weight estimates.
    pub weights: Vec<Estimate>,
    /// Bias estimates. Behind a residual sum with a projection shortcut, the bias read is the
    /// sum of both layers' biases (only the sum is identifiable); the shortcut's own bias is
    /// then not listed.
    pub biases: Vec<Estimate>,
    /// For the logits layer: every estimate is the difference to this class's row.
    pub relative_to_class: Option<usize>,
    /// Queries spent calibrating detectors for this layer.
    pub detector_queries: u64,
    /// Detectors used although their flip did not look monotone (a noisy server).
    pub unverified_detectors: usize,
    /// Planned parameters not extracted (a search found no flip: a noisy server).
    pub failed: usize,
}

/// One output neuron being read: its read site, and the detectors calibrated for it with
/// their zero-input reads.
struct Neuron {
    read: usize,
    element: usize,
    prefer: Option<usize>,
    detectors: Vec<Detector>,
    zero_reads: Vec<i64>,
}

/// What [`Seek::extract_output`] adds to a layer's result.
#[derive(Default)]
struct LayerAccumulator {
    weights: Vec<Estimate>,
    biases: Vec<Estimate>,
    detector_queries: u64,
    failed: usize,
    /// Running mean of |z(u e_k) − z(0)|: the galloping step.
    scale_sum: f64,
    scale_count: f64,
}

/// The result of an attack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    /// Per attacked layer.
    pub layers: Vec<LayerExtraction>,
    /// Queries in total.
    pub queries: u64,
    /// Wall time.
    pub seconds: f64,
    /// The settings.
    pub config: SeekConfig,
}

impl Extraction {
    /// Parameters extracted.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|l| l.weights.len() + l.biases.len()).sum()
    }
}

/// Progress of a running attack.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Layer being attacked.
    pub layer: &'a str,
    /// Parameters extracted so far.
    pub done: usize,
    /// Parameters planned.
    pub total: usize,
    /// Queries so far.
    pub queries: u64,
}

/// `K`: far above every honest value, far below the ring's half.
fn big(ring_bits: u32) -> u64 {
    1u64 << (ring_bits - 3)
}

const Y_RANGE: i64 = 1 << 18;
const SEARCH_LIMIT: i64 = 1 << 33;

/// The progress callback.
type ProgressFn<'o> = Box<dyn FnMut(&Progress<'_>) + 'o>;

/// Per output neuron of a layer: the weights (input indices) to read.
type LayerPlan = Vec<(usize, Vec<usize>)>;

/// Maps a weight's input index to the layer-input element it multiplies.
type TapMap = Box<dyn Fn(usize) -> usize>;

/// A calibrated label-flip detector for one neuron.
struct Detector {
    chain: Chain,
    base: Tampering,
    read: usize,
    element: usize,
    carry: u64,
    high: usize,
    beta: i64,
}

/// The attack. See the module documentation.
pub struct Seek<'o, O: Oracle> {
    oracle: &'o mut O,
    topo: Topology,
    config: SeekConfig,
    rng: ChaCha20Rng,
    /// Final-layer columns known so far: input element → `logit_c − logit_0` per unit.
    columns: BTreeMap<usize, Vec<i64>>,
    /// `logit_c − logit_0` at zero input of the logits layer.
    final_bias: Option<Vec<i64>>,
    /// The logits layer (its columns are read on demand).
    logits_layer: Layer,
    progress: Option<ProgressFn<'o>>,
    /// Detectors used without passing the monotonicity check (only under noise).
    unverified: usize,
    done: usize,
    total: usize,
}

impl<'o, O: Oracle> Seek<'o, O> {
    /// An attack on `oracle`.
    pub fn new(oracle: &'o mut O, config: SeekConfig) -> Result<Self> {
        let topo = Topology::new(oracle.architecture())?;
        let rng = ChaCha20Rng::seed_from_u64(config.seed);
        let logits_layer = topo
            .layers()?
            .into_iter()
            .find(|l| l.read == Read::Logits)
            .ok_or_else(|| AttackError::unsupported(topo.graph().name(), "no logits layer"))?;
        Ok(Self {
            logits_layer,
            oracle,
            topo,
            config,
            rng,
            columns: BTreeMap::new(),
            final_bias: None,
            progress: None,
            unverified: 0,
            done: 0,
            total: 0,
        })
    }

    /// Calls `f` after every extracted parameter.
    pub fn on_progress(mut self, f: impl FnMut(&Progress<'_>) + 'o) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Runs the attack.
    pub fn run(mut self) -> Result<Extraction> {
        let started = Instant::now();
        let first = self.oracle.queries();
        let layers = self.topo.layers()?;
        let selected: Vec<&Layer> = layers
            .iter()
            .filter(|l| self.config.layers.is_empty() || self.config.layers.iter().any(|n| n == &l.name))
            .collect();
        // Plans: which outputs and inputs of each layer.
        let plans: Vec<(usize, LayerPlan)> = selected.iter().map(|l| (l.node, self.plan_layer(l))).collect();
        self.total = plans.iter().map(|(_, p)| p.iter().map(|(_, w)| w.len() + 1).sum::<usize>()).sum();
        let logits_node = self.logits_layer.node;
        if let Some((_, plan)) = plans.iter().find(|(n, _)| *n == logits_node) {
            // The logits layer's plan lists one input set per class; it reads columns.
            let mut columns: Vec<usize> = plan.iter().flat_map(|(_, w)| w.iter().copied()).collect();
            columns.sort_unstable();
            columns.dedup();
            let classes = self.topo.graph().num_classes();
            self.total -= plan.iter().map(|(_, w)| w.len() + 1).sum::<usize>();
            self.total += (columns.len() + 1) * (classes - 1);
        }
        // The logits layer first: its columns choose each detector's classes.
        let mut order: Vec<usize> = (0..selected.len()).collect();
        order.sort_by_key(|&i| !matches!(selected[i].read, Read::Logits));
        let mut out = Vec::new();
        for i in order {
            let layer = selected[i];
            let plan = &plans[i].1;
            out.push(match layer.read {
                Read::Logits => self.extract_logits_layer(layer, plan)?,
                Read::Relu(_) => self.extract_layer(layer, plan)?,
            });
        }
        out.sort_by_key(|l| l.node);
        Ok(Extraction {
            layers: out,
            queries: self.oracle.queries() - first,
            seconds: started.elapsed().as_secs_f64(),
            config: self.config.clone(),
        })
    }

    /// `(output, inputs)` pairs to read: for a conv, `inputs` index `[C, kh, kw]`.
    fn plan_layer(&mut self, layer: &Layer) -> LayerPlan {
        let (outputs, inputs) = match &layer.kind {
            Kind::Conv { in_channels, out_channels, kernel, .. } => {
                (*out_channels, in_channels * kernel[0] * kernel[1])
            }
            Kind::Dense { inputs, outputs } => (*outputs, *inputs),
        };
        match self.config.sampling {
            Sampling::Full => (0..outputs).map(|o| (o, (0..inputs).collect())).collect(),
            Sampling::Sample { channels, per_channel } => {
                let mut picked: Vec<usize> = sample(&mut self.rng, outputs, channels.min(outputs)).into_vec();
                picked.sort_unstable();
                picked
                    .into_iter()
                    .map(|o| {
                        let mut w = sample(&mut self.rng, inputs, per_channel.min(inputs)).into_vec();
                        w.sort_unstable();
                        (o, w)
                    })
                    .collect()
            }
        }
    }

    fn report_progress(&mut self, layer: &str) {
        self.done += 1;
        if let Some(f) = self.progress.as_mut() {
            f(&Progress { layer, done: self.done, total: self.total, queries: self.oracle.queries() });
        }
    }

    // ---- queries -----------------------------------------------------------------------

    fn ask(&mut self, input: &[u64], tampering: &mut Tampering) -> Result<usize> {
        self.oracle.query(input, tampering)
    }

    /// Majority over `votes` queries of `label == want`.
    fn vote(&mut self, input: &[u64], tampering: &Tampering, want: usize) -> Result<bool> {
        let votes = self.config.votes.max(1);
        let mut yes = 0;
        for _ in 0..votes {
            let mut t = tampering.clone();
            if self.ask(input, &mut t)? == want {
                yes += 1;
            }
        }
        Ok(2 * yes > votes)
    }

    fn input_len(&self) -> usize {
        moat_nn::tensor::numel(self.topo.graph().input_shape())
    }

    /// The client's input and the injection into `tampering` that put `scale` units on
    /// element `k` of the layer's input (`None`: zero input).
    fn inject(&self, layer: &Layer, k: Option<usize>, scale: u64, tampering: &mut Tampering) -> Result<Vec<u64>> {
        let mut input = vec![0u64; self.input_len()];
        if let Some(k) = k {
            let (element, value) = self.topo.unit_injection(layer, k, scale)?;
            match layer.source {
                Source::Input => input[element] = value,
                Source::Post(s) => tampering.site(s).post.push((element, value)),
            }
        }
        Ok(input)
    }

    /// Kills every activation; then the chain's elements pass.
    fn base_tampering(&self, chain: Option<&Chain>) -> Tampering {
        let fp = self.topo.fixed();
        let k = big(fp.ring_bits());
        let mut t = Tampering::new(self.topo.graph().nodes().len());
        for a in self.topo.activations().collect::<Vec<_>>() {
            if matches!(self.topo.graph().nodes()[a].op, moat_nn::Op::Relu) {
                t.site(a).pre_fill = k.wrapping_neg();
            }
        }
        if let Some(chain) = chain {
            let mut carried = 0u64;
            for alive in chain.alive.iter().skip(1) {
                let post_k = self.post_big(alive.node);
                if alive.windows.is_empty() {
                    let site = t.site(alive.node);
                    site.pre.push((alive.element, k.wrapping_mul(2)));
                    if alive.carry {
                        carried = post_k;
                    } else {
                        site.post.push((alive.element, post_k.wrapping_neg()));
                    }
                } else {
                    let site = t.site(alive.node);
                    for &w in &alive.windows {
                        site.post.push((w, carried.wrapping_neg()));
                    }
                }
            }
            // A read ReLU feeding a max pool: the pool removes the read's carry.
            if let Some(first) = chain.alive.first()
                && first.carry
                && let Some(pool) = chain.alive.get(1)
            {
                let carry = self.post_big(first.node);
                let site = t.site(pool.node);
                for &w in &pool.windows {
                    site.post.push((w, carry.wrapping_neg()));
                }
            }
        }
        t
    }

    /// `K` at the output scale of ReLU `node`.
    fn post_big(&self, node: usize) -> u64 {
        let fp = self.topo.fixed();
        let shift = if self.topo.plan.truncates_after_relu(node) { fp.frac_bits() } else { 0 };
        big(fp.ring_bits()) >> shift
    }

    fn set_classes(&self, t: &mut Tampering, keep: &[(usize, i64)]) {
        let k = big(self.topo.fixed().ring_bits());
        t.logit_fill = k.wrapping_neg();
        t.logits = keep.iter().map(|&(c, d)| (c, k.wrapping_add(d as u64))).collect();
    }

    // ---- searches ----------------------------------------------------------------------

    /// The least `x` with `pred(x)` for a predicate that is false below a point and true from
    /// it: gallops from `guess` by doubling steps, then bisects.
    fn boundary(
        &mut self,
        what: &str,
        guess: i64,
        step: i64,
        mut pred: impl FnMut(&mut Self, i64) -> Result<bool>,
    ) -> Result<i64> {
        let step = step.max(1);
        let (mut lo, mut hi);
        if pred(self, guess)? {
            hi = guess;
            let mut s = step;
            loop {
                let x = guess - s;
                if x < -SEARCH_LIMIT {
                    return Err(AttackError::Search(format!("{what}: no label flip below {guess} − 2^33")));
                }
                if !pred(self, x)? {
                    lo = x;
                    break;
                }
                hi = x;
                s *= 2;
            }
        } else {
            lo = guess;
            let mut s = step;
            loop {
                let x = guess + s;
                if x > SEARCH_LIMIT {
                    return Err(AttackError::Search(format!("{what}: no label flip above {guess} + 2^33")));
                }
                if pred(self, x)? {
                    hi = x;
                    break;
                }
                lo = x;
                s *= 2;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if pred(self, mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    // ---- the logits layer --------------------------------------------------------------

    /// `logit_c − logit_0` for every class at the given input of the logits layer.
    fn logit_differences(&mut self, layer: &Layer, k: Option<usize>, guess: &[i64]) -> Result<(Vec<i64>, u64)> {
        let classes = self.topo.graph().num_classes();
        let before = self.oracle.queries();
        let mut diffs = vec![0i64; classes];
        for (c, diff) in diffs.iter_mut().enumerate().skip(1) {
            let mut t = self.base_tampering(None);
            let input = self.inject(layer, k, 1, &mut t)?;
            // label c ⟺ logit_c + Δ > logit_0, so the least such Δ is logit_0 − logit_c + 1.
            let start = 1 - guess.get(c).copied().unwrap_or(0);
            let delta = self.boundary("logit difference", start, 1 << 6, |s, d| {
                let mut t = t.clone();
                s.set_classes(&mut t, &[(0, 0), (c, d)]);
                s.vote(&input, &t, c)
            })?;
            *diff = 1 - delta;
        }
        Ok((diffs, self.oracle.queries() - before))
    }

    fn extract_logits_layer(&mut self, layer: &Layer, plan: &[(usize, Vec<usize>)]) -> Result<LayerExtraction> {
        let classes = self.topo.graph().num_classes();
        let f = self.topo.fixed().frac_bits();
        let (bias, bias_queries) = self.logit_differences(layer, None, &[])?;
        self.final_bias = Some(bias.clone());
        let mut biases = Vec::new();
        for (c, d) in bias.iter().enumerate().skip(1) {
            // ⌊b_c/2^f⌋ − ⌊b_0/2^f⌋ = d: the difference lies within (d − 1, d + 1)·2^f.
            let raw = d << f;
            biases.push(Estimate { index: c, raw, exact: false, queries: bias_queries / (classes as u64 - 1) });
            self.report_progress(&layer.name);
        }
        // Inputs: the union of the planned ones (a dense logits layer reads columns).
        let mut inputs: Vec<usize> = plan.iter().flat_map(|(_, w)| w.iter().copied()).collect();
        inputs.sort_unstable();
        inputs.dedup();
        let mut weights = Vec::new();
        let inputs_total = match layer.kind {
            Kind::Dense { inputs, .. } => inputs,
            Kind::Conv { .. } => return Err(AttackError::unsupported(&layer.name, "a convolution producing logits")),
        };
        for k in inputs {
            let (column, spent) = self.column(k)?;
            for (c, d) in column.iter().enumerate().skip(1) {
                let queries = spent / (classes as u64 - 1);
                weights.push(Estimate { index: c * inputs_total + k, raw: *d, exact: true, queries });
                self.report_progress(&layer.name);
            }
        }
        Ok(LayerExtraction {
            node: layer.node,
            name: layer.name.clone(),
            weights,
            biases,
            relative_to_class: Some(0),
            detector_queries: 0,
            unverified_detectors: 0,
            failed: 0,
        })
    }

    /// Column `k` of the logits layer (`W_c,k − W_0,k` per class) and the queries it took
    /// (0 when already known).
    fn column(&mut self, k: usize) -> Result<(Vec<i64>, u64)> {
        if let Some(c) = self.columns.get(&k) {
            return Ok((c.clone(), 0));
        }
        let layer = self.logits_layer.clone();
        let mut spent = 0;
        let bias = match self.final_bias.clone() {
            Some(b) => b,
            None => {
                let (b, q) = self.logit_differences(&layer, None, &[])?;
                spent += q;
                self.final_bias = Some(b.clone());
                b
            }
        };
        let (at_unit, q) = self.logit_differences(&layer, Some(k), &bias)?;
        spent += q;
        let column: Vec<i64> = at_unit.iter().zip(&bias).map(|(a, b)| (a - b) >> layer.gain_shift).collect();
        self.columns.insert(k, column.clone());
        Ok((column, spent))
    }

    // ---- hidden layers -----------------------------------------------------------------

    fn extract_layer(&mut self, layer: &Layer, plan: &[(usize, Vec<usize>)]) -> Result<LayerExtraction> {
        let Read::Relu(read) = layer.read else {
            return Err(AttackError::unsupported(&layer.name, "not read at a ReLU"));
        };
        let unverified_before = self.unverified;
        let prefer = self.columns.keys().next().copied();
        let mut acc = LayerAccumulator::default();
        for (output, inputs) in plan {
            let done = acc.weights.len() + acc.biases.len();
            match self.extract_output(layer, read, *output, inputs, prefer, &mut acc) {
                Ok(()) => {}
                // A search that finds no flip (a noisy server): the rest of this neuron fails.
                Err(AttackError::Search(why)) => {
                    let got = acc.weights.len() + acc.biases.len() - done;
                    let planned = inputs.len() + usize::from(layer.gain_shift == 0);
                    acc.failed += planned.saturating_sub(got);
                    tracing::debug!(layer = %layer.name, output, %why, "neuron abandoned");
                    for _ in got..planned {
                        self.report_progress(&layer.name);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(LayerExtraction {
            node: layer.node,
            name: layer.name.clone(),
            weights: acc.weights,
            biases: acc.biases,
            relative_to_class: None,
            detector_queries: acc.detector_queries,
            unverified_detectors: self.unverified - unverified_before,
            failed: acc.failed,
        })
    }

    /// The bias and the planned weights of one output neuron.
    fn extract_output(
        &mut self,
        layer: &Layer,
        read: usize,
        output: usize,
        inputs: &[usize],
        prefer: Option<usize>,
        acc: &mut LayerAccumulator,
    ) -> Result<()> {
        let (element, taps) = self.read_position(layer, output)?;
        let before = self.oracle.queries();
        let detectors = vec![self.detector(layer, read, element, prefer, None)?];
        acc.detector_queries += self.oracle.queries() - before;
        let before = self.oracle.queries();
        // The read flips where `β + P(c)` reaches `y*`, i.e. at `P(c) = margin + 1`.
        let shift_unit = (self.config.margin + 1) << layer.read_shift;
        let c0 = self.read(layer, &detectors[0], None, shift_unit, 1 << 16)?;
        // Per detector: the zero-input read (the bias read for the first).
        let zero_reads = vec![c0];
        let z0 = shift_unit - c0;
        let f = self.topo.fixed().frac_bits();
        let (raw, exact) = if layer.read_bits == 2 * f { (z0, true) } else { ((z0 << f) + (1 << (f - 1)), false) };
        // A lifted shortcut's bias only appears summed with the branch's: listed there.
        if layer.gain_shift == 0 {
            acc.biases.push(Estimate { index: output, raw, exact, queries: self.oracle.queries() - before });
            self.report_progress(&layer.name);
        }
        let mut neuron = Neuron { read, element, prefer, detectors, zero_reads };
        for &k in inputs {
            let index = output * layer_inputs(layer) + k;
            match self.read_weight(layer, &mut neuron, taps(k), index, acc) {
                Ok(estimate) => acc.weights.push(estimate),
                // This weight alone (e.g. every chain met its injection): go on with the rest.
                Err(AttackError::Search(why)) => {
                    tracing::debug!(layer = %layer.name, index, %why, "weight abandoned");
                    acc.failed += 1;
                }
                Err(e) => return Err(e),
            }
            self.report_progress(&layer.name);
        }
        Ok(())
    }

    /// One weight: the read at the unit input `tap` against a detector the injection does not
    /// disturb.
    fn read_weight(
        &mut self,
        layer: &Layer,
        neuron: &mut Neuron,
        tap: usize,
        index: usize,
        acc: &mut LayerAccumulator,
    ) -> Result<Estimate> {
        let scale = self.config.input_scale.max(1);
        // A detector whose chain the injection does not reach (a residual shortcut could
        // carry the injected unit straight into the chain).
        let (injected, _) = self.topo.unit_injection(layer, tap, scale)?;
        let footprint = self.topo.injection_footprint(layer.source, injected);
        let found = neuron.detectors.iter().position(|d| !footprint.meets(&d.chain));
        let which = match found {
            Some(i) => i,
            None => {
                let before = self.oracle.queries();
                let result = self.detector(layer, neuron.read, neuron.element, neuron.prefer, Some(&footprint));
                acc.detector_queries += self.oracle.queries() - before;
                let d = result?;
                let before = self.oracle.queries();
                let c = self.read(layer, &d, None, neuron.zero_reads[0], 1 << 8);
                acc.detector_queries += self.oracle.queries() - before;
                neuron.detectors.push(d);
                neuron.zero_reads.push(c?);
                neuron.detectors.len() - 1
            }
        };
        let before = self.oracle.queries();
        let step = if acc.scale_count > 0.0 {
            (acc.scale_sum / acc.scale_count).max(1.0) as i64
        } else {
            (1i64 << (8 + layer.gain_shift)) * scale as i64
        };
        let zero = neuron.zero_reads[which];
        let c = self.read(layer, &neuron.detectors[which], Some(tap), zero, step)?;
        let diff = zero - c;
        acc.scale_sum += diff.unsigned_abs() as f64;
        acc.scale_count += 1.0;
        let divisor = (scale as f64) * f64::from(1u32 << layer.gain_shift);
        let raw = (diff as f64 / divisor).round() as i64;
        Ok(Estimate { index, raw, exact: scale == 1, queries: self.oracle.queries() - before })
    }

    /// The element of the read ReLU's input that holds output `o` of the layer, and the map
    /// from a weight's input index to the layer-input element it multiplies there.
    fn read_position(&self, layer: &Layer, o: usize) -> Result<(usize, TapMap)> {
        match layer.kind.clone() {
            Kind::Dense { .. } => Ok((o, Box::new(|k| k))),
            Kind::Conv { window, kernel, .. } => {
                let [h, w] = window.in_hw;
                let [oh, ow] = window.out_hw();
                let [sh, sw] = window.stride;
                let [pt, pl, _, _] = window.padding;
                let inside = |y: usize, x: usize| {
                    y * sh >= pt && y * sh + kernel[0] - 1 < h + pt && x * sw >= pl && x * sw + kernel[1] - 1 < w + pl
                };
                let (y, x) = (0..oh)
                    .flat_map(|y| (0..ow).map(move |x| (y, x)))
                    .filter(|&(y, x)| inside(y, x))
                    .min_by_key(|&(y, x)| (y.abs_diff(oh / 2), x.abs_diff(ow / 2)))
                    .ok_or_else(|| AttackError::unsupported(&layer.name, "no output position sees a whole window"))?;
                let element = (o * oh + y) * ow + x;
                let (kh, kw) = (kernel[0], kernel[1]);
                let map = move |k: usize| {
                    let (c, i, j) = (k / (kh * kw), (k / kw) % kh, k % kw);
                    (c * h + y * sh + i - pt) * w + (x * sw + j - pl)
                };
                Ok((element, Box::new(map)))
            }
        }
    }

    /// Calibrates a detector for `element` of ReLU `read` (retrying other chains).
    fn detector(
        &mut self,
        layer: &Layer,
        read: usize,
        element: usize,
        prefer: Option<usize>,
        avoid: Option<&Footprint>,
    ) -> Result<Detector> {
        let mut last = None;
        let mut fallback = None;
        let retries = self.config.retries.max(1);
        for attempt in 0..retries {
            // Later attempts give up the preferred channel and grid to explore other paths.
            let first_half = attempt < retries.div_ceil(2);
            let prefer = if first_half { prefer } else { None };
            let chain = self.topo.chain(read, element, prefer, first_half, &mut self.rng)?;
            if avoid.is_some_and(|f| f.meets(&chain)) {
                last = Some("every chain tried meets the injection".to_string());
                continue;
            }
            match self.calibrate(layer, read, element, &chain) {
                Ok((d, true)) => return Ok(d),
                Ok((d, false)) => {
                    last = Some("the detector is not monotone near its flip".into());
                    fallback.get_or_insert(d);
                }
                Err(AttackError::Search(why)) => last = Some(why),
                Err(e) => return Err(e),
            }
        }
        // A noisy server makes every flip look non-monotone: go on with what was found.
        if let Some(d) = fallback {
            self.unverified += 1;
            return Ok(d);
        }
        Err(AttackError::Search(format!(
            "no usable detector for element {element} of node {read}: {}",
            last.unwrap_or_default()
        )))
    }

    /// A detector on `chain`, and whether it passed the monotonicity check.
    fn calibrate(&mut self, layer: &Layer, read: usize, element: usize, chain: &Chain) -> Result<(Detector, bool)> {
        let classes = self.topo.graph().num_classes();
        let (column, _) = self.column(chain.end)?;
        let p = (0..classes).max_by_key(|&c| column[c]).unwrap_or(0);
        let q = (0..classes).filter(|&c| c != p).min_by_key(|&c| column[c]).unwrap_or(1);
        let carry = if chain.alive.first().is_some_and(|a| a.carry) { self.post_big(read) } else { 0 };
        let base = self.base_tampering(Some(chain));
        let input = self.inject(layer, None, 1, &mut base.clone())?;
        // D(y; Δ): the read ReLU killed, `y` injected at its output.
        let query = |s: &mut Self, y: i64, delta: i64| -> Result<usize> {
            let mut t = base.clone();
            t.site(read).post.push((element, (y as u64).wrapping_add(carry)));
            s.set_classes(&mut t, &[(q, 0), (p, delta)]);
            let votes = s.config.votes.max(1);
            let mut hits = 0;
            for _ in 0..votes {
                let mut t = t.clone();
                if s.ask(&input, &mut t)? == p {
                    hits += 1;
                }
            }
            Ok(if 2 * hits > votes { p } else { q })
        };
        let delta0 = self.boundary("detector offset", 0, 1 << 10, |s, d| Ok(query(s, 0, d)? == p))?;
        let mut found = None;
        'search: for delta in [delta0 - 1, delta0] {
            let at_zero = query(self, 0, delta)?;
            for far in [Y_RANGE, -Y_RANGE] {
                if query(self, far, delta)? != at_zero {
                    found = Some((delta, far));
                    break 'search;
                }
            }
        }
        let Some((delta, far)) = found else {
            return Err(AttackError::Search("the chain does not move the label".into()));
        };
        let (lo, hi) = if far > 0 { (0, far) } else { (far, 0) };
        let high = query(self, hi, delta)?;
        let (mut a, mut b) = (lo, hi);
        while b - a > 1 {
            let mid = a + (b - a) / 2;
            if query(self, mid, delta)? == high {
                b = mid;
            } else {
                a = mid;
            }
        }
        let y_star = b;
        let mut verified = true;
        for j in 1..=self.config.window {
            if query(self, y_star + j, delta)? != high || query(self, y_star - 1 - j, delta)? == high {
                verified = false;
                break;
            }
        }
        let mut base = base;
        self.set_classes(&mut base, &[(q, 0), (p, delta)]);
        let beta = y_star - 1 - self.config.margin;
        Ok((Detector { chain: chain.clone(), base, read, element, carry, high, beta }, verified))
    }

    /// The least offset `c` with `⌊max(z + c, 0) / 2^s⌋ ≥ 1` for the read value `z` at input
    /// `tap` (`None`: zero input), galloping from `guess`.
    fn read(&mut self, layer: &Layer, d: &Detector, tap: Option<usize>, guess: i64, step: i64) -> Result<i64> {
        let k = big(self.topo.fixed().ring_bits());
        let mut t = d.base.clone();
        let input = self.inject(layer, tap, self.config.input_scale.max(1), &mut t)?;
        let post = (d.beta as u64).wrapping_add(d.carry);
        self.boundary("pre-activation read", guess, step, |s, c| {
            let mut t = t.clone();
            let site = t.site(d.read);
            site.pre.push((d.element, k.wrapping_add(c as u64)));
            site.post.push((d.element, post));
            s.vote(&input, &t, d.high)
        })
    }
}

fn layer_inputs(layer: &Layer) -> usize {
    match &layer.kind {
        Kind::Conv { in_channels, kernel, .. } => in_channels * kernel[0] * kernel[1],
        Kind::Dense { inputs, .. } => *inputs,
    }
}
