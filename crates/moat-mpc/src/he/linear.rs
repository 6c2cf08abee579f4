//! The two-party protocol of one linear layer on additive shares.
//!
//! **Inputs.** The server `P0` holds the layer's weights and bias ([`ServerLayer`]) and its
//! share `x₀`; the client `P1` holds its share `x₁` and the BFV secret key. Both know the
//! layer's public [`LinearShape`] and build the same [`Packing`].
//!
//! **Protocol** (one round trip per layer, after a one-time key setup):
//!
//! 1. setup, once per session: the client sends its public key ([`HeClient::setup`],
//!    [`HeServer::setup`]; 55.8 KB at N = 4096);
//! 2. client → server: the encryptions of its share, one seeded ciphertext per input
//!    polynomial of the plan (one frame, [`Packing::input_polys`] × [`HeParams::query_bytes`]);
//! 3. server: adds its own share `x₀` to each ciphertext as a plaintext (they now encrypt
//!    `x = x₀ + x₁ mod 2^ℓ`, [`QueryCiphertext::add_plain`]), then per output polynomial
//!    `Σ ct·ŵ` minus a fresh uniform mask `r`, re-randomised by a public-key encryption of zero,
//!    flooded with noise of `flood_bits` bits, switched to the first prime and compressed
//!    ([`super::cipher::respond`]); one frame back ([`Packing::output_polys`] ×
//!    [`HeParams::response_bytes`]);
//! 4. the client decrypts its share `y₁ = L(x) − r mod 2^ℓ`; the server's share is
//!    `y₀ = b + r mod 2^ℓ`, so `y₀ + y₁ = L(x) + b`: exactly
//!    `QuantizedGraph::linear(index, x, true)` (before truncation).
//!
//! **What each party learns.** The server sees only fresh BFV encryptions under the client's
//! key (RLWE, 128-bit). The client decrypts `L(x) − r`, uniform in Z_2^ℓ since `r` is; the
//! ciphertext it receives is statistically close (≤ 2^−[`MIN_FLOOD_SECURITY`] per coefficient,
//! checked per layer by [`ServerLayer::new`]) to one computed from `L(x) − r` alone: `c₁` is
//! hidden by the public-key re-randomisation and the weight-dependent noise in `c₀` by the
//! flooding; coefficients that carry no output are not sent at all. Semi-honest security.
//! (Cheetah folds the server's share in the same way; computing `L(x₀)` in the clear instead,
//! as moat did before, costs the server a plaintext convolution per layer — ≈ 4 G wrapping
//! multiply-adds for ResNet-50 — for no gain in privacy.)
//!
//! **Work.** The client encrypts and decrypts; the server adds its share (one NTT per prime
//! per input polynomial), encodes the weight polynomials (one NTT per prime each, once per
//! model when [`ServerLayer::prepare`]d) and computes [`Packing::products`] NTT-domain
//! multiply-accumulates. Both sides spread ciphertexts over the rayon pool; randomness is drawn
//! per ciphertext from seeds taken in order from the party's RNG, so the results do not depend
//! on the scheduling.

use moat_nn::exec::QuantizedLayer;
use moat_nn::kernels::Window;
use moat_nn::{FixedPoint, QuantizedGraph};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::cipher::{PublicKey, QueryCiphertext, SecretKey, WeightPoly, respond};
use super::encoding::{Group, LinearShape, Packing, PackingCosts};
use super::params::{HeParams, MIN_FLOOD_SECURITY};
use crate::error::{MpcError, Result};
use crate::transport::Channel;

impl HeParams {
    /// The sizes the plan search weighs for these parameters.
    pub fn plan_costs(&self) -> PackingCosts {
        PackingCosts { degree: self.degree(), query_bytes: self.query_bytes(), response_bytes: self.response_bytes(0) }
    }

    /// The plan of `shape` under these parameters (both parties call this).
    pub fn plan(&self, shape: LinearShape) -> Result<Packing> {
        Packing::new(shape, &self.plan_costs())
    }
}

/// Predicted traffic of one layer: `(client → server, server → client)` payload bytes.
pub fn predicted_bytes(params: &HeParams, plan: &Packing) -> (usize, usize) {
    let up = plan.input_polys() * params.query_bytes();
    let down = plan.groups().iter().flat_map(|g| &g.outputs).map(|o| params.response_bytes(o.coefficients.len())).sum();
    (up, down)
}

/// The public geometry of node `index` of `graph`, or `None` when the node is not linear.
pub fn shape_of(graph: &QuantizedGraph, index: usize) -> Result<Option<LinearShape>> {
    Ok(layer_of(graph, index)?.map(|(shape, _, _)| shape))
}

/// `(shape, weights, bias expanded to the output)` of a linear node.
type LayerParts = (LinearShape, Vec<u64>, Vec<u64>);

/// The parts of node `index` when it is linear.
fn layer_of(graph: &QuantizedGraph, index: usize) -> Result<Option<LayerParts>> {
    let layer = graph
        .layers()
        .get(index)
        .ok_or_else(|| MpcError::invalid("he::linear", format!("no node {index} in the model")))?;
    let node = &graph.graph().nodes()[index];
    let input_len = moat_nn::tensor::numel(graph.graph().shape(node.inputs[0]));
    let broadcast = |per_channel: &[u64], len: usize| -> Vec<u64> {
        let per = len / per_channel.len().max(1);
        (0..len).map(|i| per_channel[i / per.max(1)]).collect()
    };
    Ok(match layer {
        QuantizedLayer::Conv2d { weight, bias, window, in_channels, groups } => {
            let out_channels = bias.len();
            let (shape, weights) = if *groups <= 1 {
                (LinearShape::Conv2d { in_channels: *in_channels, out_channels, window: *window }, weight.clone())
            } else if *groups == *in_channels && *groups == out_channels {
                // Depthwise: `[C, 1, kh, kw]` is the depthwise encoding's `[C, kh, kw]`.
                (LinearShape::Depthwise { channels: out_channels, window: *window }, weight.clone())
            } else {
                // Other groupings: the ordinary convolution with block-diagonal weights (zeros
                // outside each group) — the same map, the same bytes, `groups`× the products.
                let shape = LinearShape::Conv2d { in_channels: *in_channels, out_channels, window: *window };
                (shape, block_diagonal(weight, *in_channels, out_channels, *groups, window.kernel))
            };
            Some((shape, weights, broadcast(bias, shape.output_len())))
        }
        QuantizedLayer::Dense { weight, bias } => {
            let shape = LinearShape::Dense { inputs: weight.len() / bias.len().max(1), outputs: bias.len() };
            Some((shape, weight.clone(), bias.clone()))
        }
        QuantizedLayer::Affine { scale, shift } => {
            let per = input_len / scale.len().max(1);
            let window = Window { in_hw: [1, per], kernel: [1, 1], stride: [1, 1], padding: [0; 4] };
            let shape = LinearShape::Depthwise { channels: scale.len(), window };
            Some((shape, scale.clone(), broadcast(shift, input_len)))
        }
        QuantizedLayer::AvgPool { window, channels, reciprocal } => {
            let shape = LinearShape::Depthwise { channels: *channels, window: *window };
            Some((shape, vec![*reciprocal; shape.weight_len()], vec![0; shape.output_len()]))
        }
        QuantizedLayer::GlobalAvgPool { channels, reciprocal } => {
            let shape = LinearShape::ChannelSum { channels: *channels, per_channel: input_len / (*channels).max(1) };
            Some((shape, vec![*reciprocal], vec![0; *channels]))
        }
        QuantizedLayer::MaxPool { .. }
        | QuantizedLayer::Clip { .. }
        | QuantizedLayer::LeakyRelu { .. }
        | QuantizedLayer::HardSigmoid(_)
        | QuantizedLayer::HardSwish(_)
        | QuantizedLayer::Spline(_)
        | QuantizedLayer::None => None,
    })
}

/// Grouped weights `[O, C / g, kh, kw]` as ordinary weights `[O, C, kh, kw]`, zero outside
/// each output channel's group.
fn block_diagonal(weight: &[u64], channels: usize, outputs: usize, groups: usize, kernel: [usize; 2]) -> Vec<u64> {
    let taps = kernel[0] * kernel[1];
    let (ci, co) = (channels / groups, outputs / groups.max(1));
    let mut full = vec![0u64; outputs * channels * taps];
    for o in 0..outputs {
        let first = (o / co.max(1)) * ci;
        let row = &weight[o * ci * taps..(o + 1) * ci * taps];
        full[(o * channels + first) * taps..(o * channels + first + ci) * taps].copy_from_slice(row);
    }
    full
}

/// The server's side of one linear layer: shape, plan, ring weights and bias.
#[derive(Clone)]
pub struct ServerLayer {
    plan: Packing,
    weights: Vec<u64>,
    bias: Vec<u64>,
    fixed: FixedPoint,
    flood_security: f64,
    /// The ciphertext primes of the parameters the layer was built for.
    moduli: Vec<u64>,
    /// Weight polynomials in NTT form, per group, when [`ServerLayer::prepare`]d.
    prepared: Option<Vec<Vec<WeightPoly>>>,
}

impl std::fmt::Debug for ServerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLayer")
            .field("shape", &self.plan.shape())
            .field("input_polys", &self.plan.input_polys())
            .field("output_polys", &self.plan.output_polys())
            .field("weight_polys", &self.plan.weight_polys())
            .field("flood_security", &self.flood_security)
            .field("prepared", &self.prepared.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerLayer {
    /// A layer with ring `weights` in the shape's layout and `bias` per output element (scale
    /// 2^(2f)). Refused when the flooding of `params` would leave less than
    /// [`MIN_FLOOD_SECURITY`] bits of circuit privacy for these weights.
    pub fn new(params: &HeParams, shape: LinearShape, weights: Vec<u64>, bias: Vec<u64>) -> Result<Self> {
        shape.check(shape.input_len(), weights.len())?;
        if bias.len() != shape.output_len() {
            return Err(MpcError::invalid(
                "ServerLayer::new",
                format!("{} bias values for {} outputs", bias.len(), shape.output_len()),
            ));
        }
        let plan = params.plan(shape)?;
        let fixed = params.fixed_point();
        // Worst output polynomial: Σ over its terms of ‖ŵ‖₂².
        let mut worst = 0f64;
        for group in plan.groups() {
            let norms: Vec<f64> = group
                .weights
                .iter()
                .map(|&k| plan.weight_poly(k, &weights, fixed).iter().map(|&w| (w as f64) * (w as f64)).sum())
                .collect();
            for output in &group.outputs {
                worst = worst.max(output.terms.iter().map(|&(_, w)| norms[w]).sum());
            }
        }
        let flood_security = params.flood_security(params.product_noise_bound(worst));
        if flood_security < MIN_FLOOD_SECURITY {
            return Err(MpcError::invalid(
                "ServerLayer::new",
                format!(
                    "weights too large for the flooding of these parameters: {flood_security:.1} bits of circuit \
                     privacy < {MIN_FLOOD_SECURITY}; use HeParams::n8192"
                ),
            ));
        }
        let bias = bias.into_iter().map(|b| fixed.reduce(b)).collect();
        let moduli = params.moduli().to_vec();
        Ok(Self { plan, weights, bias, fixed, flood_security, moduli, prepared: None })
    }

    /// Whether this layer is the map `shape` with these `weights` (a layer built ahead, checked
    /// before it stands in for one built now).
    pub fn computes(&self, shape: LinearShape, weights: &[u64]) -> bool {
        self.plan.shape() == shape && self.weights == weights
    }

    /// Encodes the weight polynomials once (in parallel) and keeps them, so later queries skip
    /// the encoding (one NTT per prime per weight polynomial, the bulk of the server's work
    /// for convolutions). Costs [`ServerLayer::prepared_bytes`] of memory.
    pub fn prepare(&mut self, params: &HeParams) -> Result<()> {
        self.check_params(params)?;
        let prepared = self
            .plan
            .groups()
            .par_iter()
            .map(|g| encode_weights(params, &self.plan, g, &self.weights))
            .collect::<Result<Vec<_>>>()?;
        self.prepared = Some(prepared);
        Ok(())
    }

    /// Memory the prepared weight polynomials take (0 when not prepared).
    pub fn prepared_bytes(&self) -> usize {
        self.prepared.as_ref().map_or(0, |p| {
            let per = self.plan.degree() * 8 * self.prepared_moduli();
            p.iter().map(|g| g.len() * per).sum()
        })
    }

    fn check_params(&self, params: &HeParams) -> Result<()> {
        if params.moduli() != self.moduli.as_slice()
            || params.fixed_point() != self.fixed
            || params.degree() != self.plan.degree()
        {
            return Err(MpcError::invalid("ServerLayer", "used with parameters it was not built for"));
        }
        Ok(())
    }

    fn prepared_moduli(&self) -> usize {
        self.prepared.as_ref().and_then(|p| p.iter().flatten().next()).map_or(0, |w| w.moduli())
    }

    /// Node `index` of `graph`, or `None` when the node is not linear.
    pub fn from_quantized(params: &HeParams, graph: &QuantizedGraph, index: usize) -> Result<Option<Self>> {
        if graph.fixed() != params.fixed_point() {
            return Err(MpcError::invalid(
                "ServerLayer::from_quantized",
                "model and HE parameters use different rings",
            ));
        }
        layer_of(graph, index)?.map(|(shape, weights, bias)| Self::new(params, shape, weights, bias)).transpose()
    }

    /// The plan (public).
    pub fn plan(&self) -> &Packing {
        &self.plan
    }

    /// Bits of statistical circuit privacy per received coefficient for these weights.
    pub fn flood_security(&self) -> f64 {
        self.flood_security
    }

    /// `L(x) + b` in the clear: the layer's plaintext reference (the protocol never computes it).
    pub fn apply_with_bias(&self, x: &[u64]) -> Result<Vec<u64>> {
        let y = self.plan.shape().apply(x, &self.weights, self.fixed)?;
        Ok(y.iter().zip(&self.bias).map(|(&v, &b)| self.fixed.add(v, b)).collect())
    }
}

/// The client `P1` of the homomorphic linear layers: holds the secret key.
#[derive(Debug)]
pub struct HeClient {
    key: SecretKey,
    rng: ChaCha20Rng,
}

impl HeClient {
    /// A client with a fresh key; `seed` drives all of its randomness (reproducible runs; a
    /// deployment seeds [`HeClient::with_rng`] with 256 bits of entropy instead).
    pub fn new(params: &HeParams, seed: u64) -> Result<Self> {
        Self::with_rng(params, ChaCha20Rng::seed_from_u64(seed))
    }

    /// A client with a fresh key, drawing all of its randomness from `rng`.
    pub fn with_rng(params: &HeParams, mut rng: ChaCha20Rng) -> Result<Self> {
        let key = SecretKey::generate(params, &mut rng)?;
        Ok(Self { key, rng })
    }

    /// The parameters.
    pub fn params(&self) -> &HeParams {
        self.key.params()
    }

    /// The secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// Session setup: sends the public key (one frame).
    pub fn setup(&mut self, channel: &mut dyn Channel) -> Result<()> {
        let pk = self.key.public_key_bytes(&mut self.rng)?;
        channel.send(&pk)?;
        channel.flush()?;
        Ok(())
    }

    /// One linear layer: sends the encryption of the share `x1`, returns `y₁ = L(x₀ + x₁) − r`.
    pub fn linear(&mut self, channel: &mut dyn Channel, plan: &Packing, x1: &[u64]) -> Result<Vec<u64>> {
        self.send_query(channel, plan, x1)?;
        self.receive_response(channel, plan)
    }

    /// Step 2: the query (one frame).
    pub fn send_query(&mut self, channel: &mut dyn Channel, plan: &Packing, x1: &[u64]) -> Result<()> {
        let params = self.key.params();
        check_degree(params, plan)?;
        let polys = plan.encode_input(x1, params.fixed_point())?;
        let seeds: Vec<[u8; 32]> = polys.iter().map(|_| child_seed(&mut self.rng)).collect();
        let key = &self.key;
        let cts = polys
            .par_iter()
            .zip(seeds)
            .map(|(m, seed)| key.encrypt(m, &mut ChaCha20Rng::from_seed(seed)))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        channel.send(&cts.concat())?;
        channel.flush()?;
        Ok(())
    }

    /// Step 4: decrypts the response into `y₁`.
    pub fn receive_response(&mut self, channel: &mut dyn Channel, plan: &Packing) -> Result<Vec<u64>> {
        let params = self.key.params();
        let bytes = channel.recv()?;
        let outputs: Vec<_> = plan.groups().iter().flat_map(|g| &g.outputs).collect();
        let (_, expected) = predicted_bytes(params, plan);
        if bytes.len() != expected {
            return Err(MpcError::peer("HE response", format!("{} bytes, expected {expected}", bytes.len())));
        }
        let mut slices = Vec::with_capacity(outputs.len());
        let mut at = 0;
        for o in &outputs {
            let len = params.response_bytes(o.coefficients.len());
            slices.push(&bytes[at..at + len]);
            at += len;
        }
        let key = &self.key;
        let decrypted = outputs
            .par_iter()
            .zip(slices)
            .map(|(o, b)| {
                let used: Vec<u32> = o.coefficients.iter().map(|&(c, _)| c).collect();
                key.decrypt_response(b, &used)
            })
            .collect::<Result<Vec<Vec<u64>>>>()?;
        let mut y = vec![0u64; plan.shape().output_len()];
        for (o, values) in outputs.iter().zip(decrypted) {
            for (&(_, idx), v) in o.coefficients.iter().zip(values) {
                y[idx as usize] = v;
            }
        }
        Ok(y)
    }
}

/// The server `P0` of the homomorphic linear layers: holds the client's public key.
#[derive(Debug)]
pub struct HeServer {
    pk: PublicKey,
    rng: ChaCha20Rng,
}

impl HeServer {
    /// Session setup: receives the client's public key; `seed` drives the server's randomness
    /// (reproducible runs; a deployment uses [`HeServer::setup_with_rng`] with 256 bits of
    /// entropy).
    pub fn setup(params: &HeParams, channel: &mut dyn Channel, seed: u64) -> Result<Self> {
        Self::setup_with_rng(params, channel, ChaCha20Rng::seed_from_u64(seed))
    }

    /// Session setup drawing the server's randomness (masks, re-randomisation, flooding) from `rng`.
    pub fn setup_with_rng(params: &HeParams, channel: &mut dyn Channel, rng: ChaCha20Rng) -> Result<Self> {
        let bytes = channel.recv()?;
        Ok(Self { pk: PublicKey::from_bytes(params, &bytes)?, rng })
    }

    /// The parameters.
    pub fn params(&self) -> &HeParams {
        self.pk.params()
    }

    /// One linear layer on the server's share `x0`: returns `y₀ = b + r`.
    pub fn linear(&mut self, channel: &mut dyn Channel, layer: &ServerLayer, x0: &[u64]) -> Result<Vec<u64>> {
        let masks = self.respond(channel, layer, x0)?;
        let fp = self.params().fixed_point();
        Ok(layer.bias.iter().zip(&masks).map(|(&b, &r)| fp.add(b, r)).collect())
    }

    /// Steps 2–3 on the server's share `x0`: receives the query, adds `x0` to it, sends the
    /// masked response and returns the masks `r` (the client ends with `L(x₀ + x₁) − r`).
    pub fn respond(&mut self, channel: &mut dyn Channel, layer: &ServerLayer, x0: &[u64]) -> Result<Vec<u64>> {
        let params = self.pk.params().clone();
        let plan = &layer.plan;
        layer.check_params(&params)?;
        let shares = plan.encode_input(x0, params.fixed_point())?;
        let share_seeds: Vec<[u8; 32]> = shares.iter().map(|_| child_seed(&mut self.rng)).collect();
        let bytes = channel.recv()?;
        let ct_len = params.query_bytes();
        let expected = plan.input_polys() * ct_len;
        if bytes.len() != expected {
            return Err(MpcError::peer("HE query", format!("{} bytes, expected {expected}", bytes.len())));
        }
        let queries = bytes
            .par_chunks(ct_len)
            .zip(shares.par_iter().zip(share_seeds))
            .map(|(c, (share, seed))| {
                let mut query = QueryCiphertext::from_bytes(&params, c)?;
                query.add_plain(&params, share, &mut ChaCha20Rng::from_seed(seed))?;
                Ok(query)
            })
            .collect::<Result<Vec<QueryCiphertext>>>()?;
        let seeds: Vec<[u8; 32]> = plan.groups().iter().map(|_| child_seed(&mut self.rng)).collect();
        let fp = params.fixed_point();
        let pk = &self.pk;
        let results = plan
            .groups()
            .par_iter()
            .enumerate()
            .zip(seeds)
            .map(|((g, group), seed)| {
                let mut rng = ChaCha20Rng::from_seed(seed);
                let encoded;
                let weights = match layer.prepared.as_ref().and_then(|p| p.get(g)) {
                    Some(w) => w,
                    None => {
                        encoded = encode_weights(&params, plan, group, &layer.weights)?;
                        &encoded
                    }
                };
                group
                    .outputs
                    .iter()
                    .map(|o| {
                        let terms: Vec<(&QueryCiphertext, &WeightPoly)> =
                            o.terms.iter().map(|&(i, w)| (&queries[i], &weights[w])).collect();
                        let used: Vec<u32> = o.coefficients.iter().map(|&(c, _)| c).collect();
                        let masks: Vec<u64> = used.iter().map(|_| fp.reduce(rng.random::<u64>())).collect();
                        let bytes = respond(pk, &terms, &used, &masks, &mut rng)?;
                        Ok((bytes, masks))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(predicted_bytes(&params, plan).1);
        let mut r = vec![0u64; plan.shape().output_len()];
        let outputs = plan.groups().iter().flat_map(|g| &g.outputs);
        for (o, (bytes, masks)) in outputs.zip(results.into_iter().flatten()) {
            out.extend_from_slice(&bytes);
            for (&(_, idx), m) in o.coefficients.iter().zip(masks) {
                r[idx as usize] = m;
            }
        }
        channel.send(&out)?;
        channel.flush()?;
        Ok(r)
    }
}

/// A 256-bit seed for the RNG of one parallel task, drawn in order from the party's RNG.
fn child_seed(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    seed
}

/// The weight polynomials of one group, NTT form.
fn encode_weights(params: &HeParams, plan: &Packing, group: &Group, weights: &[u64]) -> Result<Vec<WeightPoly>> {
    let fp = params.fixed_point();
    group.weights.iter().map(|&k| WeightPoly::new(params, &plan.weight_poly(k, weights, fp))).collect()
}

fn check_degree(params: &HeParams, plan: &Packing) -> Result<()> {
    if plan.degree() != params.degree() {
        return Err(MpcError::invalid(
            "he::linear",
            format!("plan for N = {} used with N = {}", plan.degree(), params.degree()),
        ));
    }
    Ok(())
}
