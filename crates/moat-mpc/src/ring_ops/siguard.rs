//! SIGuard (NDSS 2025) over [`RingOps`]: MemGuard-style noise on the logits, crafted inside
//! the secure computation, so that the server's secret defender `h` can no longer tell
//! members from non-members while the label stays the same; only `softmax(z + e*)` is revealed.
//!
//! **Inputs.** Both parties: their shares of one sample's logits `z` (C values at 2^f), the
//! public [`SiGuardConfig`] and the defender's public [`DefenderShape`]. The server `P0` also
//! holds the defender's weights in plaintext ([`Defender::new`]); the client holds
//! [`Defender::public`] (no weights). The defender's products with its weights — `W_i·x`
//! forward, `W_iᵀ·u` backward, `w₃ ⊙ s₂` — are the same six matrices every step, so a run
//! first counts them and prepares them all ([`RingOps::prepare_private_matrices`]: Delphi's
//! offline phase, [`crate::protocols::prepared`], one homomorphic batch per matrix); each
//! product is then one flight of the client's masked share ([`RingOps::mul_private_matrix`];
//! Gilboa's OT product if the server's weights do not fit the HE parameters).
//!
//! **Computation** (fixed counts, no data-dependent control flow):
//! * `p = softmax(z)` ([`SiGuardConfig::softmax`], the spline [`Softmax::Spline`] by default);
//!   `h₀ = h(p)`, `h` the MLP `C → H₁ → ReLU → H₂ → ReLU → 1` (output: a membership logit);
//!   `ℓ̂ = onehot(argmax z)` by `sign(z − max z)`.
//! * `outer` rounds, each from `e = 0`, of `inner` steps: `y = z + e`, `p* = softmax(y)`;
//!   `g₁ = sign(h(p*))·J(p*)ᵀ ∇ₚh(p*)` (back-propagation through h's three layers with the
//!   ReLU masks of the forward pass, and the softmax Jacobian `J = diag(p) − ppᵀ`);
//!   `g₂ = [max_{j≠ℓ} yⱼ > y_ℓ]·(onehot(argmax_{j≠ℓ} y) − ℓ̂)` (the label-preservation hinge
//!   `ReLU(max_{j≠ℓ} yⱼ − y_ℓ)`); `g₃ = J(p*)ᵀ sign(p* − p)` (the L1 distortion
//!   `‖p* − p‖₁`); `g = c₁g₁ + c₂g₂ + c₃g₃` (or `g₁` alone with [`SiGuardConfig::g1_only`],
//!   as the public prototype applies); `e −= lr · g/‖g‖₂` with `1/‖g‖₂` by Newton's
//!   inverse square root ([`super::newton::inv_sqrt`]).
//! * After each round, the oblivious validator: `b₁ = [y_ℓ ≥ max y]` (label kept),
//!   `b₂ = [h₀·h(softmax(z + e)) ≤ 0]` (the defender's decision flipped); with `b = b₁b₂`:
//!   `e* ← b ? e : e*`, `c₃ ← b ? min(10c₃, c₃ᵐᵃˣ) : c₃`, `lr ← b ? lr : 1.1·lr` — all
//!   selects on shares. `e*` starts at 0 (no kept round: the unguarded probabilities).
//! * Result: `softmax(z + e*)`, the only value opened (by the caller).
//!
//! **The rounds side by side.** Each round restarts from `e = 0` on the same logits, so what it
//! computes depends only on its `(c₃, lr)`, and round `k` after `a` kept rounds has the public
//! `c₃ = min(10^a·c₃⁰, c₃ᵐᵃˣ)`, `lr = 1.1^(k−a)·lr⁰`. So the rounds do not run one after
//! another on secret `(c₃, lr)`: every distinct public pair a round can have is a *lane*
//! (15 for the paper's 6 rounds, 6 with `g1_only`), all lanes descend at once (one batch per
//! primitive; `Speculation` in the code), each lane's validator runs once, and the sequence of
//! verdicts is followed obliviously (a one-hot share of the number of kept rounds picks each
//! round's verdict and `e`, two flights per round). The result is exactly the sequential rounds'
//! (`speculated_lanes_equal_the_sequential_rounds`); the flights are one round's, the bytes
//! and products 15/6 = 2.5 times the rounds'.
//!
//! **Deviations** (ring ℓ = 37, f = 12 instead of the prototype's 31/16 in a 3-party ring):
//! `c₃` is capped at [`SiGuardConfig::c3_max`] (10 by default) so that `g` and `g·g` stay
//! inside the ring's product range (|a·b| < 2^(ℓ−1−2f) = 4096); `‖g‖²` is assumed in
//! `[2^−8, 2^16]` for the inverse square root (below it the step is shorter than
//! normalised; the top is 16 times one square's range, more than the ten squares of C = 10
//! classes can sum to); ties of the maximum make several one-hot entries; a tie between the
//! label's logit and the runner-up counts as the hinge being active.
//!
//! **Rounds.** Independent tests and products of one step share a batch: the softmax's max
//! tree also finds the runner-up `max_{j≠ℓ} y_j`; g₂'s and g₃'s sign tests ride in the sign
//! batch of the defender's first layer; the hinge and the backward pass's ReLU mask are one
//! batch of products; `J(p*)ᵀ` is applied once, to `c₁·sign(h)·v + c₃·sign(p* − p)` (it is
//! linear); `g ⊙ g` and `lr·g` are truncated in one batch. Products of a bit (a ReLU mask,
//! the hinge's switch, `sign h`, the validator's and the bookkeeping's verdicts) with a value
//! are multiplexed ([`RingOps::mul_bit`]: 2 OTs, not a Beaver triple's 74). It runs its
//! protocols at their fewest rounds ([`RingOps::fewest_rounds`]), with the bounded truncation
//! ([`RingOps::truncate_bounded`]) wherever a value is known to be small (the defender's
//! products when [`SiGuardSpec::bounded`]), whose activations are then also sign-tested in a
//! narrow ring ([`RingOps::sign_within`]: `ℓ − 3 − f` compared bits instead of `ℓ − 1`); the
//! tests of one value against many public thresholds (the spline's knots, Newton's start)
//! share their leaf OTs ([`RingOps::sign_against`]).
//! Flights from `P0` per inner step (`examples/siguard_cost.rs`, Ferret): 98 with the spline
//! softmax (126 with CrypTen's), the same for one lane and for all; ≈ 5,000 for the paper's
//! 6 × 49 (26,800 with the rounds one after another).
//!
//! **Learns:** nothing beyond the opened result — every step is a [`RingOps`] primitive on
//! shares. **Cost:** once per run, the preparation of `1 + lanes·(inner + 1)` forward and
//! `lanes·inner` backward products per matrix (a round trip per matrix); per inner step and
//! lane one secure softmax, a forward and backward pass of `h` (five prepared matrix–vector
//! products and one element-wise, each `cols` ring values from the client; 2 sign tests of
//! H₁ + H₂ values), 4 sign tests / max trees of C values, 7 products of C values and the
//! inverse square root (one batch of 80 sign tests against public thresholds, 2 steps of 3
//! products); per lane one more softmax and forward pass. The paper's 6 × 49, spline
//! softmax, in memory: 69 MB, ≈ 0.75–0.82 s of which 24 MB and 0.20–0.32 s the preparation
//! (0.13 s its HE, with the server's layers built at load: [`SiGuard::with_prepared_layers`]).
//! Between two processes (`moat bench secure --guard siguard`, BENCHMARKS.md) it adds
//! ≈ 0.7–1.0 s to a query (+20–32 % on the paper's ResNet-34 / CIFAR-10, +45–59 % on
//! ResNet-18; ≈ 0.45 s with g₁ alone).

use std::sync::Arc;

use moat_nn::FixedPoint;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::newton::{Inverse, Newton};
use super::softmax::{Softmax, softmax, softmax_from_max};
use super::{MatrixKind, MatrixSpec, PlainOps, RingOps, bounded_product_limit, broadcast, tile, truncate_known};
use crate::error::{MpcError, Result};
use crate::he::{HeParams, ServerLayer};

/// The public shape of a defender: `classes → hidden[0] → ReLU → hidden[1] → ReLU → 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefenderShape {
    /// Input width (the classifier's classes).
    pub classes: usize,
    /// The two hidden widths (128 and 64 in the paper).
    pub hidden: [usize; 2],
}

impl DefenderShape {
    /// The paper's defender for `classes` classes.
    pub fn paper(classes: usize) -> Self {
        Self { classes, hidden: [128, 64] }
    }

    /// Weights per layer: `(rows, cols)` of W1, W2, W3.
    pub fn layers(&self) -> [(usize, usize); 3] {
        [(self.hidden[0], self.classes), (self.hidden[1], self.hidden[0]), (1, self.hidden[1])]
    }

    /// Refuses a shape with an empty layer (a server's announcement is checked too).
    pub fn validate(&self) -> Result<()> {
        if self.classes == 0 || self.hidden.contains(&0) {
            return Err(MpcError::invalid("defender", format!("empty layer in {self:?}")));
        }
        Ok(())
    }
}

/// The defender's weights, encoded at 2^f (the server's secret).
#[derive(Clone)]
struct Weights {
    /// The ring they are encoded in.
    fixed: FixedPoint,
    w: [Vec<u64>; 3],
    /// `Wᵀ` of each layer (row-major, `cols × rows`), for the backward pass.
    wt: [Vec<u64>; 3],
    b: [Vec<u64>; 3],
}

/// The defender `h` as a party holds it: the shape, and the weights for the server only.
#[derive(Clone)]
pub struct Defender {
    shape: DefenderShape,
    weights: Option<Weights>,
    /// Every value the defender's products make stays below half of
    /// [`RingOps::truncate_bounded`]'s range for every input (checked on the weights by
    /// [`Defender::new`], announced in [`SiGuardSpec::bounded`]): its truncations are the
    /// bounded ones.
    bounded: bool,
}

impl std::fmt::Debug for Defender {
    // The weights are the server's secret: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Defender")
            .field("shape", &self.shape)
            .field("has_weights", &self.weights.is_some())
            .field("bounded", &self.bounded)
            .finish_non_exhaustive()
    }
}

impl Defender {
    /// The server's defender from float weights (row-major `W[out][in]`) and biases, one
    /// pair per layer of [`DefenderShape::layers`], encoded in ring `fixed`.
    pub fn new(
        fixed: moat_nn::FixedPoint,
        shape: DefenderShape,
        weights: [&[f32]; 3],
        biases: [&[f32]; 3],
    ) -> Result<Self> {
        shape.validate()?;
        let mut w: [Vec<u64>; 3] = Default::default();
        let mut wt: [Vec<u64>; 3] = Default::default();
        let mut b: [Vec<u64>; 3] = Default::default();
        for (i, (rows, cols)) in shape.layers().into_iter().enumerate() {
            if weights[i].len() != rows * cols || biases[i].len() != rows {
                return Err(MpcError::invalid(
                    "defender",
                    format!(
                        "layer {}: {} weights and {} biases, expected {rows}×{cols} and {rows}",
                        i + 1,
                        weights[i].len(),
                        biases[i].len()
                    ),
                ));
            }
            let encode =
                |v: &f32| fixed.try_encode(f64::from(*v)).map_err(|e| MpcError::invalid("defender", e.to_string()));
            w[i] = weights[i].iter().map(encode).collect::<Result<_>>()?;
            wt[i] = (0..rows * cols).map(|k| w[i][(k % rows) * cols + k / rows]).collect();
            b[i] = biases[i].iter().map(encode).collect::<Result<_>>()?;
        }
        // Below half the bounded truncation's range.
        let bounded = activation_bound(shape, weights, biases) < bounded_product_limit(fixed) / 2.0;
        Ok(Self { shape, weights: Some(Weights { fixed, w, wt, b }), bounded })
    }

    /// The client's view: the shape only (products truncated by the general truncation).
    pub fn public(shape: DefenderShape) -> Self {
        Self { shape, weights: None, bounded: false }
    }

    /// The client's view of this defender: its shape and whether its products are bounded
    /// (what [`SiGuardSpec`] announces), without the weights.
    pub fn public_half(&self) -> Self {
        Self { shape: self.shape, weights: None, bounded: self.bounded }
    }

    /// Whether every product of a run stays inside [`RingOps::truncate_bounded`]'s range
    /// (see [`SiGuardSpec::bounded`]).
    pub fn bounded(&self) -> bool {
        self.bounded
    }

    /// Whether the bound holds for a run with `config`: it assumes `c₁ ≤ 1` (a larger `c₁`
    /// scales the defender's gradient past [`activation_bound`]'s check).
    fn bounded_for(&self, config: &SiGuardConfig) -> bool {
        self.bounded && config.c1 <= 1.0
    }

    /// `floor(x / 2^f)` of one of the defender's products: [`RingOps::truncate_bounded`]
    /// when [`Defender`]'s bound holds, [`RingOps::truncate`] otherwise (the same result).
    fn truncate<O: RingOps + ?Sized>(&self, ops: &mut O, x: &[u64]) -> Result<Vec<u64>> {
        let f = ops.fixed().frac_bits();
        truncate_known(ops, x, f, self.bounded)
    }

    /// `1{x ≥ 0}` of one of the defender's activations (a layer's output, biases included): by
    /// [`RingOps::sign_within`] on the bound's range `±2^(ℓ−3−f)` when [`Defender`]'s bound
    /// holds (a comparison on `ℓ − 3 − f` bits instead of `ℓ − 1`), by [`RingOps::sign`]
    /// otherwise (the same bits).
    fn sign<O: RingOps + ?Sized>(&self, ops: &mut O, x: &[u64]) -> Result<Vec<u64>> {
        let fp = ops.fixed();
        if self.bounded { ops.sign_within(x, fp.ring_bits() - 2 - fp.frac_bits()) } else { ops.sign(x) }
    }

    /// The shape.
    pub fn shape(&self) -> DefenderShape {
        self.shape
    }

    fn w(&self, i: usize) -> Option<&[u64]> {
        self.weights.as_ref().map(|w| &w.w[i][..])
    }

    fn wt(&self, i: usize) -> Option<&[u64]> {
        self.weights.as_ref().map(|w| &w.wt[i][..])
    }

    fn b(&self, i: usize) -> Option<&[u64]> {
        self.weights.as_ref().map(|w| &w.b[i][..])
    }

    /// The kind and the weights (server) of the defender's private product `m` ([`Product`]).
    fn product(&self, m: Product) -> (MatrixKind, Option<&[u64]>) {
        let layers = self.shape.layers();
        match m {
            Product::Forward(i) => {
                let (rows, cols) = layers[i];
                (MatrixKind::Full { rows, cols }, self.w(i))
            }
            Product::Backward(i) => {
                let (rows, cols) = layers[i];
                (MatrixKind::Full { rows: cols, cols: rows }, self.wt(i))
            }
            Product::LastWeights => (MatrixKind::Diagonal { len: layers[2].1 }, self.w(2)),
        }
    }

    /// `m`'s product with a shared `x` (prepared, when [`siguard`] could prepare it).
    fn mul<O: RingOps + ?Sized>(&self, ops: &mut O, m: Product, x: &[u64]) -> Result<Vec<u64>> {
        let (kind, w) = self.product(m);
        ops.mul_private_matrix(m.index(), kind, w, x)
    }
}

/// The defender's products with its private weights: `W_i·x` forward, `W_iᵀ·u` backward, and
/// `w₃ ⊙ s` (the last layer's weights times the ReLU mask, backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Product {
    Forward(usize),
    Backward(usize),
    LastWeights,
}

impl Product {
    /// Every product a run makes, in [`Product::index`] order.
    const ALL: [Product; 6] = [
        Product::Forward(0),
        Product::Forward(1),
        Product::Forward(2),
        Product::Backward(0),
        Product::Backward(1),
        Product::LastWeights,
    ];

    /// The position in [`Product::ALL`] (the matrix index of [`RingOps::mul_private_matrix`]).
    fn index(self) -> usize {
        match self {
            Product::Forward(i) => i,
            Product::Backward(i) => 3 + i,
            Product::LastWeights => 5,
        }
    }
}

/// The largest magnitude any product of a SIGuard run with this defender can take, for every
/// probability vector `p` (entries in `[0, 1]`, summing to 1 — the softmax's, within a
/// factor 2 for its approximation): the pre-activations `|W₁p| ≤ maxⱼ|W₁ᵢⱼ|`,
/// `|W₂r₁| ≤ Σ|W₂|·A₁`, `|W₃r₂| ≤ Σ|w₃|·A₂` (with `Aₖ` the bounds of the ReLU inputs, biases
/// included); backward `|W₂ᵀ(w₃ ⊙ s)| ≤ Σ|W₂|·|w₃|`, `|v| = |W₁ᵀ(s ⊙ u₁)| ≤ Σ|W₁|·U₁`; and the
/// softmax Jacobian's products on `±c₁v + c₃·sign(p* − p)`, `≤ 2·(max|v| + c₃)` for `c₁ ≤ 1`
/// and `c₃ ≤` [`WEIGHT_LIMIT`] (a larger `c₁` gives up the bound, see [`SiGuard::new`]). In
/// real units.
fn activation_bound(shape: DefenderShape, weights: [&[f32]; 3], biases: [&[f32]; 3]) -> f64 {
    let [(h1, c), (h2, _), _] = shape.layers();
    let w = |l: usize, r: usize, k: usize, cols: usize| f64::from(weights[l][r * cols + k]).abs();
    let b = |l: usize, r: usize| f64::from(biases[l][r]).abs();
    // The factor 2 covers the softmax's probabilities summing to slightly more than 1.
    let a1: Vec<f64> = (0..h1).map(|r| 2.0 * (0..c).map(|k| w(0, r, k, c)).fold(0.0, f64::max) + b(0, r)).collect();
    let a2: Vec<f64> = (0..h2).map(|r| (0..h1).map(|k| w(1, r, k, h1) * a1[k]).sum::<f64>() + b(1, r)).collect();
    let out = (0..h2).map(|k| w(2, 0, k, h2) * a2[k]).sum::<f64>() + b(2, 0);
    let u1: Vec<f64> = (0..h1).map(|k| (0..h2).map(|r| w(1, r, k, h1) * w(2, 0, r, h2)).sum()).collect();
    let v = (0..c).map(|j| (0..h1).map(|r| w(0, r, j, c) * u1[r]).sum::<f64>()).fold(0.0, f64::max);
    let largest = [a1.iter().copied().fold(0.0, f64::max), a2.iter().copied().fold(0.0, f64::max), out];
    largest.into_iter().chain(u1).fold(2.0 * (v + WEIGHT_LIMIT), f64::max)
}

/// A defender's float weights (row-major `W[out][in]` per layer of
/// [`DefenderShape::layers`]), as the server trains and stores them (JSON beside the model).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenderWeights {
    /// The shape.
    pub shape: DefenderShape,
    /// Weights of the three layers.
    pub weights: [Vec<f32>; 3],
    /// Biases of the three layers.
    pub biases: [Vec<f32>; 3],
}

impl std::fmt::Debug for DefenderWeights {
    // The server's secret: not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefenderWeights").field("shape", &self.shape).finish_non_exhaustive()
    }
}

impl DefenderWeights {
    /// Trains `h` on the server's own data: probability vectors of `members` (label 1) and of
    /// held-out samples `non_members` (label 0), by Adam on the logistic loss of `h`'s output,
    /// full batches of both classes balanced by weight, `epochs` passes; `rng` draws the
    /// initial weights and the sample order.
    pub fn train(
        shape: DefenderShape,
        members: &[Vec<f32>],
        non_members: &[Vec<f32>],
        epochs: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if members.is_empty() || non_members.is_empty() {
            return Err(MpcError::invalid("train defender", "needs members and non-members"));
        }
        if let Some(bad) = members.iter().chain(non_members).find(|p| p.len() != shape.classes) {
            return Err(MpcError::invalid(
                "train defender",
                format!("a vector of {} values for {} classes", bad.len(), shape.classes),
            ));
        }
        let layers = shape.layers();
        let mut init = |rows: usize, cols: usize| -> Vec<f32> {
            let a = (6.0 / (rows + cols) as f32).sqrt();
            (0..rows * cols).map(|_| rng.random_range(-a..a)).collect()
        };
        let mut w: [Vec<f32>; 3] = std::array::from_fn(|i| init(layers[i].0, layers[i].1));
        let mut b: [Vec<f32>; 3] = std::array::from_fn(|i| vec![0.0; layers[i].0]);
        let mut adam = Adam::new(&w, &b);
        let mut samples: Vec<(&[f32], f32, f32)> = Vec::new();
        let (wm, wn) = (0.5 / members.len() as f32, 0.5 / non_members.len() as f32);
        samples.extend(members.iter().map(|p| (&p[..], 1.0, wm)));
        samples.extend(non_members.iter().map(|p| (&p[..], 0.0, wn)));
        let batch = 64;
        for _ in 0..epochs {
            for i in (1..samples.len()).rev() {
                samples.swap(i, rng.random_range(0..=i));
            }
            for chunk in samples.chunks(batch) {
                let mut gw: [Vec<f32>; 3] = std::array::from_fn(|i| vec![0.0; w[i].len()]);
                let mut gb: [Vec<f32>; 3] = std::array::from_fn(|i| vec![0.0; b[i].len()]);
                let scale = samples.len() as f32 / chunk.len() as f32;
                for (p, y, weight) in chunk {
                    let acts = forward_f32(&layers, &w, &b, p);
                    let out = acts[3][0];
                    let prob = 1.0 / (1.0 + (-out).exp());
                    let mut delta = vec![(prob - y) * weight * scale];
                    for l in (0..3).rev() {
                        let (rows, cols) = layers[l];
                        let input = &acts[l];
                        let mut back = vec![0.0; cols];
                        for r in 0..rows {
                            gb[l][r] += delta[r];
                            for c in 0..cols {
                                gw[l][r * cols + c] += delta[r] * input[c];
                                back[c] += delta[r] * w[l][r * cols + c];
                            }
                        }
                        if l > 0 {
                            // Through the ReLU that produced this layer's input.
                            back.iter_mut().zip(input).for_each(|(g, a)| *g *= f32::from(u8::from(*a > 0.0)));
                        }
                        delta = back;
                    }
                }
                adam.step(&mut w, &mut b, &gw, &gb);
            }
        }
        Ok(Self { shape, weights: w, biases: b })
    }

    /// `h(p)` in float.
    pub fn output(&self, p: &[f32]) -> f32 {
        forward_f32(&self.shape.layers(), &self.weights, &self.biases, p)[3].first().copied().unwrap_or(0.0)
    }

    /// The server's [`Defender`] in ring `fixed`.
    pub fn to_defender(&self, fixed: moat_nn::FixedPoint) -> Result<Defender> {
        let w = [&self.weights[0][..], &self.weights[1][..], &self.weights[2][..]];
        let b = [&self.biases[0][..], &self.biases[1][..], &self.biases[2][..]];
        Defender::new(fixed, self.shape, w, b)
    }
}

/// Activations of `h`: input, hidden 1 and 2 (after ReLU), output.
fn forward_f32(layers: &[(usize, usize); 3], w: &[Vec<f32>; 3], b: &[Vec<f32>; 3], p: &[f32]) -> [Vec<f32>; 4] {
    let mut acts: [Vec<f32>; 4] = Default::default();
    acts[0] = p.to_vec();
    for l in 0..3 {
        let (rows, cols) = layers[l];
        let out: Vec<f32> = (0..rows)
            .map(|r| {
                let v = b[l][r] + (0..cols).map(|c| w[l][r * cols + c] * acts[l][c]).sum::<f32>();
                if l < 2 { v.max(0.0) } else { v }
            })
            .collect();
        acts[l + 1] = out;
    }
    acts
}

/// Adam (β = 0.9, 0.999, learning rate 10⁻³) over the defender's parameters.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(w: &[Vec<f32>; 3], b: &[Vec<f32>; 3]) -> Self {
        let n = w.iter().chain(b).map(Vec::len).sum();
        Self { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    fn step(&mut self, w: &mut [Vec<f32>; 3], b: &mut [Vec<f32>; 3], gw: &[Vec<f32>; 3], gb: &[Vec<f32>; 3]) {
        const LR: f32 = 1e-3;
        self.t += 1;
        let (c1, c2) = (1.0 - 0.9f32.powi(self.t), 1.0 - 0.999f32.powi(self.t));
        let params = w.iter_mut().chain(b.iter_mut()).flat_map(|v| v.iter_mut());
        let grads = gw.iter().chain(gb).flat_map(|v| v.iter());
        for (((p, g), m), v) in params.zip(grads).zip(&mut self.m).zip(&mut self.v) {
            *m = 0.9 * *m + 0.1 * g;
            *v = 0.999 * *v + 0.001 * g * g;
            *p -= LR * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// The largest weight `c₁`, `c₂`, `c₃ᵐᵃˣ` SIGuard accepts ([`SiGuardConfig::validate`]).
pub const WEIGHT_LIMIT: f64 = 16.0;

/// SIGuard's public parameters (both parties run the same counts).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiGuardConfig {
    /// Outer rounds (6), each restarting from `e = 0`.
    pub outer: u32,
    /// Gradient steps per round (49).
    pub inner: u32,
    /// Weight of the defender term (1).
    pub c1: f64,
    /// Weight of the label-preservation term (10).
    pub c2: f64,
    /// Initial weight of the distortion term (0.1), ×10 after each validated round.
    pub c3: f64,
    /// Cap of `c3` (see the module's deviations).
    pub c3_max: f64,
    /// Initial step length (0.2), ×1.1 after each rejected round.
    pub lr: f64,
    /// Apply only `g₁` (the public prototype's behaviour) instead of the full objective.
    pub g1_only: bool,
    /// The secure softmax of `p`, every `p*` and the result ([`Softmax::Spline`] by default:
    /// 98 flights per inner step where CrypTen's [`Softmax::Exp`] takes 126, and more exact).
    /// Absent from older announcements: [`Softmax::Exp`], their default.
    #[serde(default = "super::softmax::absent_softmax")]
    pub softmax: Softmax,
}

impl Default for SiGuardConfig {
    fn default() -> Self {
        Self {
            outer: 6,
            inner: 49,
            c1: 1.0,
            c2: 10.0,
            c3: 0.1,
            c3_max: 10.0,
            lr: 0.2,
            g1_only: false,
            softmax: Softmax::Spline,
        }
    }
}

impl SiGuardConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let finite = [self.c1, self.c2, self.c3, self.c3_max, self.lr].iter().all(|v| v.is_finite() && *v >= 0.0);
        let small = [self.c1, self.c2, self.c3_max].iter().all(|v| *v <= WEIGHT_LIMIT);
        if !finite || !small || self.c3 > self.c3_max {
            return Err(MpcError::invalid(
                "siguard",
                format!("weights must be finite, non-negative and at most {WEIGHT_LIMIT}, c3 ≤ c3_max: {self:?}"),
            ));
        }
        Ok(())
    }
}

/// What the client must know to run its half of SIGuard: the defender's shape and the
/// parameters (announced in the session's hello; no weights).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiGuardSpec {
    /// The defender's public shape.
    pub shape: DefenderShape,
    /// The parameters.
    pub config: SiGuardConfig,
    /// The server's defender keeps every product of a run below half of
    /// [`RingOps::truncate_bounded`]'s range (checked on its weights), so both parties
    /// truncate the defender's products with the cheaper bounded truncation. One bit about
    /// the weights' scale; absent (older servers): false.
    #[serde(default)]
    pub bounded: bool,
}

/// SIGuard as a party runs it: its defender (with weights on the server) and the parameters.
/// As a [`crate::engine::ServerGuard`] it replaces the secure softmax behind
/// [`crate::engine::Reveal::Probabilities`] in both backends. (Cloned once per session by a
/// serving layer.)
#[derive(Clone)]
pub struct SiGuard {
    defender: Defender,
    config: SiGuardConfig,
    /// The server's homomorphic layers of the run's preparation, one per [`Product`], their
    /// weights encoded once ([`SiGuard::with_prepared_layers`]); shared by the sessions' clones.
    layers: Option<Arc<[ServerLayer]>>,
}

impl std::fmt::Debug for SiGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiGuard")
            .field("defender", &self.defender)
            .field("config", &self.config)
            .field("layers_ahead", &self.layers.is_some())
            .finish()
    }
}

impl SiGuard {
    /// The server's SIGuard for a model of `classes` classes; refuses a defender of another
    /// width or invalid parameters (before any query). A `c₁` above 1 scales the defender's
    /// gradient beyond [`Defender::bounded`]'s check, so the run then truncates its products
    /// by the general truncation (the same results) and the spec announces no bound.
    pub fn new(defender: Defender, config: SiGuardConfig, classes: usize) -> Result<Self> {
        config.validate()?;
        if defender.weights.is_none() {
            return Err(MpcError::invalid("siguard", "the server's defender has no weights (not trained)"));
        }
        if defender.shape.classes != classes {
            return Err(MpcError::invalid(
                "siguard",
                format!("the defender takes {} classes, the model has {classes}", defender.shape.classes),
            ));
        }
        Ok(Self { defender, config, layers: None })
    }

    /// Builds the server's homomorphic layers of every run's preparation now and encodes their
    /// weights (NTT form), once for all queries and sessions — as a served network's own
    /// layers are at load — instead of in every query's preparation (≈ 0.15 s of the server's
    /// CPU per query for the paper's defender, 10 classes, 6 × 49). Costs memory: 282 MB for
    /// that defender (logged). A defender whose weights do not fit the HE parameters'
    /// flooding keeps the per-query path (which then multiplies without the preparation).
    pub fn with_prepared_layers(mut self) -> Result<Self> {
        let Some(weights) = self.defender.weights.as_ref() else {
            return Ok(self);
        };
        let fp = weights.fixed;
        let params = HeParams::n4096(fp)?;
        let products = siguard_products(fp, self.defender.shape, &self.config)?;
        let mut layers = Vec::with_capacity(Product::ALL.len());
        for m in Product::ALL {
            let (kind, w) = self.defender.product(m);
            let mut layer = match kind.server_layer(&params, products.private[m.index()].max(1), w.unwrap_or_default())
            {
                Ok(layer) => layer,
                Err(e) => {
                    tracing::warn!(error = %e, "the defender's products are not prepared by HE");
                    return Ok(self);
                }
            };
            layer.prepare(&params)?;
            layers.push(layer);
        }
        let bytes: usize = layers.iter().map(ServerLayer::prepared_bytes).sum();
        tracing::info!(mib = bytes >> 20, "SIGuard's HE layers encoded ahead");
        self.layers = Some(layers.into());
        Ok(self)
    }

    /// The client's half from the server's announcement.
    pub fn client(spec: SiGuardSpec) -> Result<Self> {
        spec.config.validate()?;
        spec.shape.validate()?;
        let defender = Defender { bounded: spec.bounded, ..Defender::public(spec.shape) };
        Ok(Self { defender, config: spec.config, layers: None })
    }

    /// The parameters (public: announced in [`Self::spec`]).
    pub fn config(&self) -> &SiGuardConfig {
        &self.config
    }

    /// The public part.
    pub fn spec(&self) -> SiGuardSpec {
        SiGuardSpec {
            shape: self.defender.shape,
            config: self.config,
            bounded: self.defender.bounded_for(&self.config),
        }
    }

    /// [`siguard`] with this party's defender (and its layers built ahead).
    pub fn run<O: RingOps + ?Sized>(&self, ops: &mut O, z: &[u64]) -> Result<Vec<u64>> {
        run_prepared(ops, z, &self.defender, &self.config, self.layers())
    }

    /// [`prepare_siguard`] with this party's defender (a run's preparation alone).
    pub fn prepare<O: RingOps + ?Sized>(&self, ops: &mut O) -> Result<()> {
        prepare_with(ops, &self.defender, &self.config, self.layers())
    }

    fn layers(&self) -> Option<&[ServerLayer]> {
        self.layers.as_deref()
    }
}

/// Lower and upper end of the assumed `‖g‖²` range: up to 16 times what one of g's squares
/// may reach in the ring (`|a·b| < 4096`), so that Newton's iteration converges for every
/// gradient of a few large entries (its start is one sign batch; the extra octaves cost 16
/// comparisons in it, no flight).
const NORM_RANGE: (f64, f64) = (1.0 / 256.0, 65536.0);

/// `x + b` for each row of `x` where `b` is the server's private bias (`None` on the client).
fn add_private<O: RingOps + ?Sized>(ops: &O, x: &[u64], b: Option<&[u64]>) -> Vec<u64> {
    match b {
        Some(b) if ops.holds_public() && !b.is_empty() => x.chunks(b.len()).flat_map(|row| ops.add(row, b)).collect(),
        _ => x.to_vec(),
    }
}

/// `W x + b` for the defender's layer `i` (`W` of `rows × cols`, private), truncated to 2^f.
fn dense<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, i: usize, x: &[u64]) -> Result<Vec<u64>> {
    let sums = d.mul(ops, Product::Forward(i), x)?;
    let out = d.truncate(ops, &sums)?;
    Ok(add_private(ops, &out, d.b(i)))
}

/// `Wᵀ u` for the defender's layer `i`, truncated to 2^f.
fn dense_transposed<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, i: usize, u: &[u64]) -> Result<Vec<u64>> {
    let sums = d.mul(ops, Product::Backward(i), u)?;
    d.truncate(ops, &sums)
}

/// What [`forward`] returns.
struct Forward {
    /// `h(p)`.
    h: Vec<u64>,
    /// The ReLU masks of layers 1 and 2.
    s1: Vec<u64>,
    s2: Vec<u64>,
    /// `[x ≥ 0]` for each `x` of `extra`.
    extra: Vec<u64>,
}

/// The defender's forward pass on `p`, with the sign tests of `extra` (tests the caller needs
/// at that point) in the batch of layer 1's ReLU mask, for the flights they save — or, for a
/// bounded defender whose masks are tested in a narrow ring, in a batch of their own.
fn forward<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, p: &[u64], extra: &[u64]) -> Result<Forward> {
    let a1 = dense(ops, d, 0, p)?;
    let (s1, extra) = if d.bounded {
        // The layer's tests in the bound's narrow ring, the caller's in the whole ring.
        let s1 = d.sign(ops, &a1)?;
        (s1, if extra.is_empty() { Vec::new() } else { ops.sign(extra)? })
    } else {
        let mut signs = ops.sign(&[a1.as_slice(), extra].concat())?;
        let extra = signs.split_off(a1.len());
        (signs, extra)
    };
    let r1 = ops.mul_bit(&s1, &a1)?;
    let a2 = dense(ops, d, 1, &r1)?;
    let s2 = d.sign(ops, &a2)?;
    let r2 = ops.mul_bit(&s2, &a2)?;
    Ok(Forward { h: dense(ops, d, 2, &r2)?, s1, s2, extra })
}

/// The defender's output `h(p)` (at 2^f) on probabilities `p`.
pub fn defender_output<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, p: &[u64]) -> Result<u64> {
    Ok(forward(ops, d, p, &[])?.h.first().copied().unwrap_or(0))
}

/// `J(p)ᵀ v = p ⊙ (v − ⟨p, v⟩)` for each row of `cols` values (the softmax Jacobian is
/// symmetric); `v` is the defender's gradient (or `c₃·sign`), so its products are within
/// the defender's bound.
fn jacobian<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, p: &[u64], v: &[u64], cols: usize) -> Result<Vec<u64>> {
    let pv = ops.mul(p, v)?;
    let pv = d.truncate(ops, &pv)?;
    let dot = ops.row_sum(&pv, cols);
    let centred = ops.sub(v, &broadcast(&dot, cols));
    let pc = ops.mul(p, &centred)?;
    d.truncate(ops, &pc)
}

/// `(2b − 1)·x` for bits `b` (ring integers): `x` or `−x`, exactly.
fn signed<O: RingOps + ?Sized>(ops: &mut O, b: &[u64], x: &[u64]) -> Result<Vec<u64>> {
    let bx = ops.mul_bit(b, x)?;
    Ok(ops.sub(&ops.scale(&bx, 2), x))
}

/// `2s − 1` for `s ∈ {0, 1}` (ring integers).
fn plus_minus<O: RingOps + ?Sized>(ops: &O, s: &[u64]) -> Vec<u64> {
    let fp = ops.fixed();
    ops.add_public(&ops.scale(s, 2), fp.neg(1))
}

/// Counts the element products ([`RingOps::mul`]) of a computation without computing it:
/// every primitive returns zeros of the right length. SIGuard's control flow does not depend
/// on the data, so the count is the same for every input.
struct CountingOps {
    fixed: FixedPoint,
    products: usize,
    /// Products with each private matrix, by [`Product::index`].
    private: [usize; 6],
}

impl RingOps for CountingOps {
    fn fixed(&self) -> FixedPoint {
        self.fixed
    }

    fn holds_public(&self) -> bool {
        true
    }

    fn mul(&mut self, x: &[u64], _: &[u64]) -> Result<Vec<u64>> {
        self.products += x.len();
        Ok(vec![0; x.len()])
    }

    fn truncate(&mut self, x: &[u64], _: u32) -> Result<Vec<u64>> {
        Ok(vec![0; x.len()])
    }

    fn relu(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        Ok(vec![0; x.len()])
    }

    fn sign(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        Ok(vec![0; x.len()])
    }

    fn mul_bit(&mut self, _: &[u64], x: &[u64]) -> Result<Vec<u64>> {
        Ok(vec![0; x.len()])
    }

    fn mul_private(&mut self, _: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
        Ok(vec![0; x.len()])
    }

    fn mul_private_matvec(&mut self, _: Option<&[u64]>, rows: usize, _: &[u64]) -> Result<Vec<u64>> {
        Ok(vec![0; rows])
    }

    fn mul_private_matrix(
        &mut self,
        matrix: usize,
        kind: MatrixKind,
        _: Option<&[u64]>,
        x: &[u64],
    ) -> Result<Vec<u64>> {
        let uses = x.len() / kind.cols().max(1);
        if let Some(n) = self.private.get_mut(matrix) {
            *n += uses;
        }
        Ok(vec![0; uses * kind.rows()])
    }
}

/// What one [`siguard`] run multiplies (its control flow does not depend on the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiGuardProducts {
    /// Element products of two shared values ([`RingOps::mul`], for [`RingOps::reserve_products`]).
    pub shared: usize,
    /// Products with each private matrix, in the order `W₁, W₂, W₃` forward, `W₁ᵀ, W₂ᵀ`
    /// backward, `w₃ ⊙ s` (for [`RingOps::prepare_private_matrices`]).
    pub private: [usize; 6],
}

/// The products one [`siguard`] run multiplies, counted by running it on zeros.
pub fn siguard_products(fixed: FixedPoint, shape: DefenderShape, config: &SiGuardConfig) -> Result<SiGuardProducts> {
    config.validate()?;
    let mut counter = CountingOps { fixed, products: 0, private: [0; 6] };
    run_siguard(&mut counter, &vec![0; shape.classes], &Defender::public(shape), config)?;
    Ok(SiGuardProducts { shared: counter.products, private: counter.private })
}

/// Runs SIGuard on one sample's shared logits `z` (see the module documentation) and returns
/// this party's share of `softmax(z + e*)`, at 2^f. Both parties call it with the same
/// `config` and a defender of the same shape (the server's with weights).
///
/// Its Beaver triples and its products with the defender's weights are prepared first
/// ([`prepare_siguard`]), so each product is a single exchange.
pub fn siguard<O: RingOps + ?Sized>(ops: &mut O, z: &[u64], d: &Defender, config: &SiGuardConfig) -> Result<Vec<u64>> {
    run_prepared(ops, z, d, config, None)
}

/// [`siguard`] with the server's layers of the preparation built ahead, if any.
fn run_prepared<O: RingOps + ?Sized>(
    ops: &mut O,
    z: &[u64],
    d: &Defender,
    config: &SiGuardConfig,
    layers: Option<&[ServerLayer]>,
) -> Result<Vec<u64>> {
    let c = d.shape.classes;
    if z.len() != c {
        return Err(MpcError::invalid("siguard", format!("{} logits for a defender of {c} classes", z.len())));
    }
    // Both parties see the same config, so both give up a bound it breaks.
    let general;
    let d = if d.bounded && !d.bounded_for(config) {
        general = Defender { bounded: false, ..d.clone() };
        &general
    } else {
        d
    };
    // Validates `config`; both checks come before any traffic.
    prepare_with(ops, d, config, layers)?;
    // 98–126 sequential flights per inner step (every lane at once), ≈ 1.6 MB: rounds matter.
    ops.fewest_rounds(true)?;
    let out = run_siguard(ops, z, d, config);
    ops.fewest_rounds(false)?;
    out
}

/// What [`siguard`] does before its first step: the run's Beaver triples in one batch
/// ([`RingOps::reserve_products`]) and its products with each of the defender's six weight
/// matrices ([`RingOps::prepare_private_matrices`]), counted by [`siguard_products`].
/// Public so that its cost can be measured on its own.
pub fn prepare_siguard<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, config: &SiGuardConfig) -> Result<()> {
    prepare_with(ops, d, config, None)
}

/// [`prepare_siguard`] with the server's layers built ahead, if any (by [`Product::index`]).
fn prepare_with<O: RingOps + ?Sized>(
    ops: &mut O,
    d: &Defender,
    config: &SiGuardConfig,
    layers: Option<&[ServerLayer]>,
) -> Result<()> {
    let products = siguard_products(ops.fixed(), d.shape, config)?;
    ops.reserve_products(products.shared)?;
    let matrices: Vec<MatrixSpec<'_>> = Product::ALL
        .iter()
        .map(|&m| {
            let (kind, weights) = d.product(m);
            let layer = layers.and_then(|l| l.get(m.index()));
            MatrixSpec { kind, weights, uses: products.private[m.index()], layer }
        })
        .collect();
    ops.prepare_private_matrices(&matrices)
}

/// The outer rounds' public parameters, speculated. Every round restarts from `e = 0` with
/// the same logits, so what a round computes depends only on its `(c₃, lr)`, and those
/// depend only on how many earlier rounds the validator kept: round `k` after `a` kept
/// rounds runs with `c₃ = min(10^a·c₃⁰, c₃ᵐᵃˣ)` and `lr = 1.1^(k−a)·lr⁰` (as the ring computes
/// them). Instead of `outer` rounds one after another with secret `(c₃, lr)`, a run descends
/// in every *distinct* public `(c₃, lr)` a round can have — its lanes — at once, and then
/// follows the validator's verdicts through the rounds obliviously. The same result, in one
/// round's depth of flights.
#[derive(Clone, Debug, PartialEq)]
struct Speculation {
    /// Each lane's `(c₃, lr)` at 2^f (`c₃ = 0` for [`SiGuardConfig::g1_only`], which ignores it).
    lanes: Vec<(u64, u64)>,
    /// `lane[k][a]`: the lane of round `k` after `a` kept rounds (`a ≤ k`).
    lane: Vec<Vec<usize>>,
}

impl Speculation {
    fn new(fp: FixedPoint, config: &SiGuardConfig) -> Result<Self> {
        let outer = config.outer as usize;
        let cap = fp.encode(config.c3_max);
        // `c₃ ← min(10·c₃, c₃ᵐᵃˣ)` and `lr ← lr ⊗ 1.1` in the ring, as the rounds would.
        let mut c3 = vec![fp.encode(config.c3)];
        let mut lr = vec![fp.encode(config.lr)];
        let plain = &mut PlainOps::new(fp);
        for _ in 1..outer {
            c3.push(c3[c3.len() - 1].saturating_mul(10).min(cap));
            lr.extend(plain.mul_public_fixed(&lr[lr.len() - 1..], 1.1)?);
        }
        let mut lanes: Vec<(u64, u64)> = Vec::new();
        let mut lane = Vec::with_capacity(outer);
        for k in 0..outer {
            let row = (0..=k)
                .map(|a| {
                    let key = (if config.g1_only { 0 } else { c3[a] }, lr[k - a]);
                    lanes.iter().position(|l| *l == key).unwrap_or_else(|| {
                        lanes.push(key);
                        lanes.len() - 1
                    })
                })
                .collect();
            lane.push(row);
        }
        Ok(Self { lanes, lane })
    }
}

/// Each row of `x` (`cols` values) times its own public ring element of `k` (local).
fn scale_rows<O: RingOps + ?Sized>(ops: &O, x: &[u64], k: &[u64], cols: usize) -> Vec<u64> {
    x.chunks(cols).zip(k).flat_map(|(row, &k)| ops.scale(row, k)).collect()
}

/// [`siguard`] without its preparation, on inputs its callers have checked (`config` valid,
/// `z` of the defender's classes).
fn run_siguard<O: RingOps + ?Sized>(ops: &mut O, z: &[u64], d: &Defender, config: &SiGuardConfig) -> Result<Vec<u64>> {
    let c = d.shape.classes;
    let plan = Speculation::new(ops.fixed(), config)?;
    let start = Start::new(ops, d, z, config)?;
    let kept = if plan.lanes.is_empty() {
        // No rounds: e* = 0.
        vec![0; c]
    } else {
        let e = descend(ops, d, config, &start, &plan.lanes)?;
        let verdicts = validate(ops, d, config, &start, &e)?;
        follow(ops, &plan, &verdicts, &e, c)?
    };
    let y = ops.add(z, &kept);
    softmax(ops, &y, c, config.softmax)
}

/// What every round starts from: the sample's logits `z`, `p = softmax(z)`, the defender's
/// `h₀ = h(p)` and the label's one-hot `ℓ̂` (shares).
struct Start {
    z: Vec<u64>,
    p: Vec<u64>,
    h0: Vec<u64>,
    label: Vec<u64>,
}

impl Start {
    fn new<O: RingOps + ?Sized>(ops: &mut O, d: &Defender, z: &[u64], config: &SiGuardConfig) -> Result<Self> {
        let c = d.shape.classes;
        let p = softmax(ops, z, c, config.softmax)?;
        let h0 = forward(ops, d, &p, &[])?.h;
        let mz = ops.row_max(z, c)?;
        let label = ops.sign(&ops.sub(z, &broadcast(&mz, c)))?;
        Ok(Self { z: z.to_vec(), p, h0, label })
    }
}

/// One round's `inner` gradient steps from `e = 0`, in every lane at once (a lane's public
/// `(c₃, lr)`, see [`Speculation`]): each lane's `e`, a row of C values each.
fn descend<O: RingOps + ?Sized>(
    ops: &mut O,
    d: &Defender,
    config: &SiGuardConfig,
    start: &Start,
    lanes: &[(u64, u64)],
) -> Result<Vec<u64>> {
    let c = d.shape.classes;
    let fp = ops.fixed();
    let n = lanes.len();
    // Every lane's copy of the logits, the label, the probabilities (a row each).
    let (z, label, p) = (tile(&start.z, n), tile(&start.label, n), tile(&start.p, n));
    let big = ops.scale(&label, fp.encode(1024.0));
    let c3: Vec<u64> = lanes.iter().map(|l| l.0).collect();
    let lr: Vec<u64> = lanes.iter().map(|l| l.1).collect();
    let inv_sqrt = Newton::new(Inverse::InvSqrt, NORM_RANGE.0, NORM_RANGE.1, fp.frac_bits())?;
    let mut e = vec![0u64; n * c];
    for _ in 0..config.inner {
        let y = ops.add(&z, &e);
        // p* = softmax(y); for the full objective, g₂'s and g₃'s sign tests ride in the
        // defender's first batch:
        //   [m₂ ≥ max y]   the hinge ReLU(max_{j≠ℓ} y_j − y_ℓ) is active (ties count:
        //                  the label is at risk there);
        //   [y − big ≥ m₂] the one-hot of the runner-up;
        //   [p* ≥ p]       the sign of the L1 distortion ‖p* − p‖₁'s terms;
        // with m₂ = max_{j≠ℓ} y_j from the same max tree as the softmax's max y.
        let (ps, tests) = if config.g1_only {
            (softmax(ops, &y, c, config.softmax)?, Vec::new())
        } else {
            let masked = ops.sub(&y, &big);
            let maxima = ops.row_max(&[y.as_slice(), &masked].concat(), c)?;
            let (my, m2) = maxima.split_at(n);
            let ps = softmax_from_max(ops, &y, my, c, config.softmax)?;
            let tests = [ops.sub(m2, my), ops.sub(&masked, &broadcast(m2, c)), ops.sub(&ps, &p)].concat();
            (ps, tests)
        };
        let fwd = forward(ops, d, &ps, &tests)?;
        // sign(h(p*)) as a bit; g₁ = (2·bit − 1)·J(p*)ᵀ∇ₚh.
        let sign_h = broadcast(&d.sign(ops, &fwd.h)?, c);
        // Back-propagation: ∇ₚh = W1ᵀ (s1 ⊙ W2ᵀ (s2 ⊙ W3ᵀ)).
        let u2 = d.mul(ops, Product::LastWeights, &fwd.s2)?;
        let u1 = dense_transposed(ops, d, 1, &u2)?;
        let g = if config.g1_only {
            let u1 = ops.mul_bit(&fwd.s1, &u1)?;
            let v = dense_transposed(ops, d, 0, &u1)?;
            let jv = jacobian(ops, d, &ps, &v, c)?;
            signed(ops, &sign_h, &jv)?
        } else {
            // s1 ⊙ u1 and the hinge [active]·(onehot(runner-up) − ℓ̂) in one batch of
            // products (the hinge's of ring integers: exact at 2^f); c₃·sign(p* − p) with
            // each lane's public c₃ (local).
            let (active, rest) = fwd.extra.split_at(n);
            let (second, grew) = rest.split_at(n * c);
            let h1 = u1.len();
            let products = ops.mul_bit(
                &[fwd.s1.as_slice(), &broadcast(active, c)].concat(),
                &[u1.as_slice(), &ops.sub(second, &label)].concat(),
            )?;
            let (u1, hinge) = products.split_at(h1);
            let c3_sign = scale_rows(ops, &plus_minus(ops, grew), &c3, c);
            let v = dense_transposed(ops, d, 0, u1)?;
            // J is linear: c₁g₁ + c₃g₃ = J(p*)ᵀ(c₁·sign(h)·v + c₃·sign(p* − p)), one Jacobian.
            let v = signed(ops, &sign_h, &v)?;
            let v = if config.c1 == 1.0 { v } else { ops.mul_public_fixed(&v, config.c1)? };
            let g13 = jacobian(ops, d, &ps, &ops.add(&v, &c3_sign), c)?;
            // c₂·g₂ with g₂ = hinge at 2^f: exactly hinge·c₂ (local).
            let g2 = ops.scale(hinge, fp.encode(config.c2));
            ops.add(&g13, &g2)
        };
        // e −= lr·g/‖g‖₂: g ⊙ g and lr·g (each lane's public lr, local) truncated in one batch.
        let squares = ops.mul(&g, &g)?;
        let products = ops.truncate(&[squares, scale_rows(ops, &g, &lr, c)].concat(), fp.frac_bits())?;
        let (squares, lr_g) = products.split_at(n * c);
        let n2 = ops.row_sum(squares, c);
        let inv = inv_sqrt.apply(ops, &n2)?;
        // A small product: |lr·gᵢ| ≤ 0.33·64 (lr ≤ 0.2·1.1⁵, every gᵢ² inside the ring's
        // product range) and the inverse norm ≤ 34 (two Newton steps of at most ×1.5 from
        // the bottom piece's start), so |δᵢ| < 720.
        let delta = ops.mul_fixed_bounded(lr_g, &broadcast(&inv, c))?;
        e = ops.sub(&e, &delta);
    }
    Ok(e)
}

/// The oblivious validator on every lane's `e` (a row of C values each): `b = b₁·b₂` per lane,
/// `b₁ = [y_ℓ ≥ max y]` (the label kept), `b₂ = [h₀·h(softmax(y)) ≤ 0]` (the defender's
/// decision flipped), `y = z + e`.
fn validate<O: RingOps + ?Sized>(
    ops: &mut O,
    d: &Defender,
    config: &SiGuardConfig,
    start: &Start,
    e: &[u64],
) -> Result<Vec<u64>> {
    let c = d.shape.classes;
    let n = e.len() / c;
    let y = ops.add(&tile(&start.z, n), e);
    let my = ops.row_max(&y, c)?;
    let picked = ops.mul_bit(&tile(&start.label, n), &y)?;
    let yl = ops.row_sum(&picked, c);
    let b1 = ops.sign(&ops.sub(&yl, &my))?;
    let ps = softmax(ops, &y, c, config.softmax)?;
    let h = forward(ops, d, &ps, &[])?.h;
    let flipped = ops.mul_fixed(&tile(&start.h0, n), &h)?;
    let b2 = ops.sign(&ops.sub(&vec![0; n], &flipped))?;
    ops.mul_bit(&b1, &b2)
}

/// `e*`: the rounds' sequential bookkeeping on the lanes' verdicts, obliviously. A one-hot
/// share over the number of kept rounds so far picks round `k`'s verdict among its lanes';
/// when it holds, that lane's `e` replaces `e*` (which starts at 0). Two flights per round.
fn follow<O: RingOps + ?Sized>(
    ops: &mut O,
    plan: &Speculation,
    verdicts: &[u64],
    e: &[u64],
    c: usize,
) -> Result<Vec<u64>> {
    let mut state = ops.public(1, 1);
    let mut kept = vec![0u64; c];
    for lanes in &plan.lane {
        let theirs: Vec<u64> = lanes.iter().map(|&l| verdicts[l]).collect();
        // won[a]: this round is kept, after a kept rounds.
        let won = ops.mul_bit(&state, &theirs)?;
        let any = ops.row_sum(&won, won.len());
        let rest = ops.sub(&ops.public(1, 1), &any);
        let candidates: Vec<u64> = lanes.iter().flat_map(|&l| e[l * c..(l + 1) * c].iter().copied()).collect();
        let terms =
            ops.mul_bit(&[broadcast(&won, c), broadcast(&rest, c)].concat(), &[candidates.as_slice(), &kept].concat())?;
        kept = terms.chunks(c).fold(vec![0; c], |sum, t| ops.add(&sum, t));
        // A kept round moves the count up by one.
        let fp = ops.fixed();
        let mut next = ops.sub(&state, &won);
        next.push(0);
        for (a, w) in won.iter().enumerate() {
            next[a + 1] = fp.add(next[a + 1], *w);
        }
        state = next;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring_ops::PlainOps;
    use crate::ring_ops::tests::both;
    use moat_nn::FixedPoint;
    use moat_nn::exec::argmax_ring;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn defender(fp: FixedPoint, shape: DefenderShape, seed: u64) -> Result<Defender> {
        scaled_defender(fp, shape, seed, 1.0)
    }

    /// A random defender with its weights (not its biases) times `k`.
    fn scaled_defender(fp: FixedPoint, shape: DefenderShape, seed: u64, k: f32) -> Result<Defender> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut draw = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(-scale..scale)).collect() };
        let [(r1, c1), (r2, c2), (r3, c3)] = shape.layers();
        let (w1, w2, w3) = (draw(r1 * c1, k), draw(r2 * c2, k / 2.0), draw(r3 * c3, k / 2.0));
        let (b1, b2, b3) = (draw(r1, 0.2), draw(r2, 0.2), draw(r3, 0.2));
        Defender::new(fp, shape, [&w1, &w2, &w3], [&b1, &b2, &b3])
    }

    fn logits(fp: FixedPoint, c: usize, seed: u64) -> Vec<u64> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..c).map(|_| fp.encode(rng.random_range(-6.0..6.0))).collect()
    }

    /// Both backends agree bit for bit, with a defender whose products the bounded
    /// truncation takes and with one (weights ×12) that needs the general one.
    #[test]
    fn two_party_siguard_equals_the_plaintext_one_bit_for_bit() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape { classes: 4, hidden: [6, 3] };
        let z = logits(fp, 4, 1);
        assert!(scaled_defender(fp, shape, 2, 1.0)?.bounded());
        assert!(!scaled_defender(fp, shape, 2, 12.0)?.bounded());
        let (plain, real) = both(fp, &z, move |ops, z| {
            let server = ops.holds_public();
            let mut out = Vec::new();
            for k in [1.0, 12.0] {
                let d = scaled_defender(FixedPoint::default(), shape, 2, k)?;
                let d = if server { d } else { d.public_half() };
                let config = SiGuardConfig { outer: 2, inner: 2, ..Default::default() };
                let spline = SiGuardConfig { softmax: Softmax::Spline, ..config };
                // c₁ ≠ 1 scales the defender's gradient before the one Jacobian (above 1 with
                // the general truncation).
                out.extend(siguard(ops, z, &d, &config)?);
                out.extend(siguard(ops, z, &d, &spline)?);
                for c1 in [0.5, 3.0] {
                    out.extend(siguard(ops, z, &d, &SiGuardConfig { c1, ..spline })?);
                }
            }
            Ok(out)
        })?;
        assert_eq!(plain, real);
        for run in plain.chunks(4) {
            assert_eq!(argmax_ring(fp, run), argmax_ring(fp, &z));
        }
        Ok(())
    }

    /// A server whose layers were built ahead answers exactly as one that builds them per query.
    #[test]
    fn layers_built_ahead_give_the_same_run() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape { classes: 4, hidden: [6, 3] };
        let z = logits(fp, 4, 5);
        let config = SiGuardConfig { outer: 2, inner: 2, softmax: Softmax::Spline, ..Default::default() };
        let ahead = move || -> Result<SiGuard> {
            SiGuard::new(scaled_defender(FixedPoint::default(), shape, 6, 1.0)?, config, 4)?.with_prepared_layers()
        };
        assert!(format!("{:?}", ahead()?).contains("layers_ahead: true"));
        let spec = ahead()?.spec();
        let (plain, real) =
            both(
                fp,
                &z,
                move |ops, z| {
                    if ops.holds_public() { ahead()?.run(ops, z) } else { SiGuard::client(spec)?.run(ops, z) }
                },
            )?;
        assert_eq!(plain, real);
        let d = scaled_defender(fp, shape, 6, 1.0)?;
        assert_eq!(plain, siguard(&mut PlainOps::new(fp), &z, &d, &config)?);
        Ok(())
    }

    fn guard_spec(fp: FixedPoint, shape: DefenderShape) -> Result<SiGuardSpec> {
        Ok(SiGuard::new(scaled_defender(fp, shape, 3, 0.1)?, SiGuardConfig::default(), shape.classes)?.spec())
    }

    /// The server's spec carries the bound, and the client's half takes it from there.
    #[test]
    fn the_defenders_bound_travels_in_the_spec() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape::paper(10);
        let bad = |e: serde_json::Error| MpcError::invalid("test", e.to_string());
        for (k, bounded) in [(0.1, true), (30.0, false)] {
            let guard = SiGuard::new(scaled_defender(fp, shape, 3, k)?, SiGuardConfig::default(), 10)?;
            let spec = guard.spec();
            assert_eq!(spec.bounded, bounded, "weights ×{k}");
            let back: SiGuardSpec = serde_json::from_str(&serde_json::to_string(&spec).map_err(bad)?).map_err(bad)?;
            assert_eq!(SiGuard::client(back)?.defender.bounded(), bounded);
        }
        // A defender term weighted above 1 leaves the checked bound: the general truncation.
        let heavy = SiGuardConfig { c1: 2.0, ..SiGuardConfig::default() };
        assert!(!SiGuard::new(scaled_defender(fp, shape, 3, 0.1)?, heavy, 10)?.spec().bounded);
        // A server announcing an empty layer is refused before any traffic.
        let empty = SiGuardSpec { shape: DefenderShape { classes: 10, hidden: [0, 64] }, ..guard_spec(fp, shape)? };
        assert!(matches!(SiGuard::client(empty), Err(MpcError::InvalidArgument { .. })));
        // An older server's spec has no field: the general truncation.
        let mut old = serde_json::to_value(guard_spec(fp, shape)?).map_err(bad)?;
        assert!(old.as_object_mut().and_then(|o| o.remove("bounded")).is_some());
        let spec: SiGuardSpec = serde_json::from_value(old).map_err(bad)?;
        assert!(!spec.bounded);
        Ok(())
    }

    /// The plaintext operations, counting their element products.
    struct Counted {
        ops: PlainOps,
        products: usize,
        private: [usize; 6],
    }

    impl RingOps for Counted {
        fn fixed(&self) -> FixedPoint {
            self.ops.fixed()
        }
        fn holds_public(&self) -> bool {
            true
        }
        fn mul(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
            self.products += x.len();
            self.ops.mul(x, y)
        }
        fn truncate(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
            self.ops.truncate(x, shift)
        }
        fn relu(&mut self, x: &[u64]) -> Result<Vec<u64>> {
            self.ops.relu(x)
        }
        fn sign(&mut self, x: &[u64]) -> Result<Vec<u64>> {
            self.ops.sign(x)
        }
        fn mul_bit(&mut self, b: &[u64], x: &[u64]) -> Result<Vec<u64>> {
            self.ops.mul_bit(b, x)
        }
        fn sign_against(&mut self, x: &[u64], thresholds: &[u64], bits: u32) -> Result<Vec<u64>> {
            self.ops.sign_against(x, thresholds, bits)
        }
        fn sign_within(&mut self, x: &[u64], bits: u32) -> Result<Vec<u64>> {
            self.ops.sign_within(x, bits)
        }
        fn mul_private(&mut self, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
            self.ops.mul_private(w, x)
        }
        fn mul_private_matrix(&mut self, m: usize, kind: MatrixKind, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
            self.private[m] += x.len() / kind.cols();
            self.ops.mul_private_matrix(m, kind, w, x)
        }
    }

    /// The triples and private products SIGuard prepares are exactly those a run on real data
    /// multiplies.
    #[test]
    fn the_reserved_products_are_what_a_run_multiplies() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape { classes: 5, hidden: [7, 4] };
        for (seed, g1_only) in [(1, false), (2, true)] {
            let d = defender(fp, shape, seed)?;
            let config = SiGuardConfig { outer: 2, inner: 3, g1_only, ..Default::default() };
            let mut ops = Counted { ops: PlainOps::new(fp), products: 0, private: [0; 6] };
            run_siguard(&mut ops, &logits(fp, 5, seed), &d, &config)?;
            assert!(ops.products > 0);
            let counted = siguard_products(fp, shape, &config)?;
            assert_eq!(ops.products, counted.shared, "g1_only = {g1_only}");
            assert_eq!(ops.private, counted.private, "g1_only = {g1_only}");
            // h(p), one forward pass per lane and step and per lane's validator; one backward
            // pass per lane and step.
            let (lanes, inner) = (Speculation::new(fp, &config)?.lanes.len(), config.inner as usize);
            let (forward, backward) = (1 + lanes * (inner + 1), lanes * inner);
            assert_eq!(counted.private, [forward, forward, forward, backward, backward, backward]);
        }
        Ok(())
    }

    /// SIGuard's rounds one after another, as the paper states them, in plaintext: each round
    /// descends with the current `(c₃, lr)`, the validator's verdict keeps its `e` and raises
    /// `c₃` (to its cap), or grows `lr` by 1.1.
    fn sequential(fp: FixedPoint, z: &[u64], d: &Defender, config: &SiGuardConfig) -> Result<Vec<u64>> {
        let ops = &mut PlainOps::new(fp);
        let start = Start::new(ops, d, z, config)?;
        let (mut c3, mut lr) = (fp.encode(config.c3), fp.encode(config.lr));
        let mut kept = vec![0; z.len()];
        for _ in 0..config.outer {
            let lane = (if config.g1_only { 0 } else { c3 }, lr);
            let e = descend(ops, d, config, &start, &[lane])?;
            if validate(ops, d, config, &start, &e)? == [1] {
                kept = e;
                c3 = (c3 * 10).min(fp.encode(config.c3_max));
            } else {
                lr = ops.mul_public_fixed(&[lr], 1.1)?[0];
            }
        }
        softmax(ops, &ops.add(z, &kept), z.len(), config.softmax)
    }

    /// The lanes and the oblivious bookkeeping give exactly what the rounds give one after
    /// another, for runs whose validators keep some rounds and reject others.
    #[test]
    fn speculated_lanes_equal_the_sequential_rounds() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape { classes: 5, hidden: [8, 4] };
        let (mut kept, mut rejected) = (0, 0);
        for seed in 0..6u64 {
            let d = defender(fp, shape, 40 + seed)?;
            let z = logits(fp, 5, seed);
            let config = SiGuardConfig { outer: 4, inner: 3, g1_only: seed % 3 == 2, ..Default::default() };
            let plan = Speculation::new(fp, &config)?;
            // Round k has k + 1 states; equal (c₃, lr) share a lane.
            assert!(plan.lanes.len() <= 10 && plan.lane.iter().enumerate().all(|(k, l)| l.len() == k + 1));
            let ops = &mut PlainOps::new(fp);
            let start = Start::new(ops, &d, &z, &config)?;
            let e = descend(ops, &d, &config, &start, &plan.lanes)?;
            let verdicts = validate(ops, &d, &config, &start, &e)?;
            kept += verdicts.iter().filter(|&&b| b == 1).count();
            rejected += verdicts.iter().filter(|&&b| b == 0).count();
            assert_eq!(siguard(ops, &z, &d, &config)?, sequential(fp, &z, &d, &config)?, "seed {seed}");
        }
        assert!(kept > 0 && rejected > 0, "kept {kept}, rejected {rejected}: both paths must be taken");
        Ok(())
    }

    /// No rounds, or rounds of no steps: both backends agree, without a panic or a hang (no
    /// rounds reveal the unguarded softmax; empty lanes are no traffic).
    #[test]
    fn degenerate_counts_run_in_both_backends() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape { classes: 4, hidden: [6, 3] };
        let z = logits(fp, 4, 9);
        let (plain, real) = both(fp, &z, move |ops, z| {
            let d = scaled_defender(FixedPoint::default(), shape, 7, 1.0)?;
            let d = if ops.holds_public() { d } else { d.public_half() };
            let mut out = Vec::new();
            for (outer, inner) in [(0, 3), (2, 0), (1, 1)] {
                let config = SiGuardConfig { outer, inner, softmax: Softmax::Spline, ..Default::default() };
                out.extend(siguard(ops, z, &d, &config)?);
            }
            Ok(out)
        })?;
        assert_eq!(plain, real);
        assert_eq!(plain[..4], softmax(&mut PlainOps::new(fp), &z, 4, Softmax::Spline)?[..]);
        Ok(())
    }

    /// The paper's 6 outer rounds: 21 states, 15 distinct lanes (c₃ reaches its cap of 10
    /// after two kept rounds); 6 with the plain-g₁ objective (c₃ unused).
    #[test]
    fn the_papers_rounds_take_fifteen_lanes() -> Result<()> {
        let fp = FixedPoint::default();
        assert_eq!(Speculation::new(fp, &SiGuardConfig::default())?.lanes.len(), 15);
        let g1 = SiGuardConfig { g1_only: true, ..Default::default() };
        assert_eq!(Speculation::new(fp, &g1)?.lanes.len(), 6);
        Ok(())
    }

    #[test]
    fn the_full_run_keeps_every_label_and_flips_the_defender_where_it_acts() -> Result<()> {
        let fp = FixedPoint::default();
        let shape = DefenderShape::paper(10);
        let mut acted = 0;
        let (exp, spline) = (Softmax::Exp, Softmax::Spline);
        let runs = [
            (1, false, exp),
            (2, false, spline),
            (3, true, exp),
            (4, false, exp),
            (5, true, spline),
            (6, false, spline),
        ];
        for (seed, g1_only, softmax_kind) in runs {
            let d = defender(fp, shape, 10 + seed)?;
            let z = logits(fp, 10, seed);
            let ops = &mut PlainOps::new(fp);
            let config = SiGuardConfig { g1_only, softmax: softmax_kind, ..Default::default() };
            let guarded = siguard(ops, &z, &d, &config)?;
            let plain = softmax(ops, &z, 10, softmax_kind)?;
            assert_eq!(argmax_ring(fp, &guarded), argmax_ring(fp, &z), "seed {seed}");
            if guarded != plain {
                acted += 1;
                let (h0, h) = (defender_output(ops, &d, &plain)?, defender_output(ops, &d, &guarded)?);
                assert!(fp.decode(h0) * fp.decode(h) < 1e-3, "seed {seed}: h {} → {}", fp.decode(h0), fp.decode(h));
            }
        }
        assert!(acted >= 3, "SIGuard changed only {acted} of 6 outputs");
        Ok(())
    }

    #[test]
    fn a_trained_defender_separates_two_distributions() -> Result<()> {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let shape = DefenderShape { classes: 4, hidden: [16, 8] };
        // Members: confident vectors; non-members: flatter ones.
        let vector = |peak: f32, rng: &mut ChaCha20Rng| -> Vec<f32> {
            let top = rng.random_range(0..4);
            let rest = (1.0 - peak) / 3.0;
            (0..4).map(|i| if i == top { peak } else { rest }).collect()
        };
        let members: Vec<Vec<f32>> = (0..100).map(|_| vector(0.9 + 0.09 * rng.random::<f32>(), &mut rng)).collect();
        let others: Vec<Vec<f32>> = (0..100).map(|_| vector(0.4 + 0.4 * rng.random::<f32>(), &mut rng)).collect();
        let trained = DefenderWeights::train(shape, &members, &others, 200, &mut rng)?;
        let right = members.iter().filter(|p| trained.output(p) > 0.0).count()
            + others.iter().filter(|p| trained.output(p) <= 0.0).count();
        assert!(right >= 190, "{right} of 200 right");
        let d = trained.to_defender(FixedPoint::default())?;
        assert_eq!(d.shape(), shape);
        Ok(())
    }
}
