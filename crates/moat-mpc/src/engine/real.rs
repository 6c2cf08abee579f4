//! The real backend: the server and the client as two parties over a [`Channel`] (separate
//! processes over TCP in production; threads over the in-memory pair in tests).
//!
//! ## Session
//!
//! 1. **Hello** (server → client, one JSON frame): the protocol version, the model's public
//!    [`Skeleton`] (the batch-norm-folded graph the server runs, no weights), the fixed-point
//!    setting, the HE ring degree and the server's commitment to the model's weights
//!    ([`Hello::model_commitment`]). The client instantiates a zero-weight copy of the graph:
//!    node indices, shapes, pooling windows and HE plans then agree on both sides.
//! 2. **Setup**: IKNP base OTs in both directions ([`Session::setup`]), then the client's BFV
//!    public key ([`HeClient::setup`]).
//! 3. **Queries**, any number: the client sends a one-byte request (label, probabilities or
//!    logits), then both walk the graph node by node — linear layers by [`crate::he`], ReLU,
//!    clip and max pool by [`crate::protocols`] with the client's tamper points, additions,
//!    average pools (public maps, [`QuantizedGraph::public_linear`]), concatenations,
//!    reshapes and transposes (public permutations of the shares) locally —
//!    and end with the argmax revealed to the client only, with the secure softmax of
//!    [`Hello::softmax`] ([`crate::ring_ops::softmax()`]) opened to the client, or with the
//!    server's logit share sent to the client.
//!
//!    Rescaling follows [`RescalePlan::fused`], which both parties derive from the skeleton: a
//!    linear layer read by a ReLU (directly, or through a residual `Add`) leaves its result at
//!    `2f` fractional bits, the `Add` lifts its other operand by `2^f` locally, and the ReLU
//!    truncates its non-negative output ([`crate::protocols::truncate_nonnegative`], a third
//!    of the cost of a signed truncation); every other linear layer truncates at once
//!    ([`crate::protocols::truncate()`]). Both are exact, so an honest run is bit for bit the
//!    fixed-point executor's. The client's pre-activation share of such a ReLU is at `2f`
//!    ([`ShareSite::frac_bits`]). A client that does not tamper ([`ClientBehaviour::tampers`])
//!    asks, with a flag in its request byte, for [`RescalePlan::pool_first`] when the hello
//!    offers it ([`Hello::pool_first`]): every ReLU that only a max pool reads then runs on
//!    the pool's output — a quarter of the ReLUs and truncations in front of a 3×3 stride-2
//!    pool — with the same result (the identity is exact; [`moat_nn::plan`]).
//!
//!    The server acts on its own shares through a [`ServerGuard`] at every tamper point and at
//!    the reveal point ([`ServerModel::serve_guarded`]); with [`ServeOptions::hardening`] that is
//!    a [`HardeningGuard`] adding fresh noise to every ReLU / max-pool input and to the logits
//!    before the protocol uses them.
//! 4. **End**: the client sends the end byte (or closes the channel).
//!
//! What each party learns is what [`crate::he::linear`] and [`crate::protocols`] state for
//! each step: the server nothing about the input, the client the label (or the logits) and
//! the public architecture. Traffic is attributed to one phase per node (`"{index}:{name}"`),
//! plus `"setup"` and `"output"`, so per-layer bytes and rounds come from the channel's
//! [`crate::transport::Stats`].

use std::sync::Arc;

use moat_nn::kernels::pool_windows;
use moat_nn::skeleton::Skeleton;
use moat_nn::walk::{self, Keep, Kernel, Site};
use moat_nn::{FixedPoint, QuantizedGraph, QuantizedLayer};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::guard::{HardeningGuard, HonestServer, ServerGuard};
use super::hardening::Hardening;
use super::hook::{ClientBehaviour, Honest, ShareSite};
use super::plan::RescalePlan;
use super::{Reveal, Revealed};
use crate::engine::layer::{
    LayerSite, RELU_SUBPHASE, clip_layer, hard_sigmoid_layer, hard_swish_layer, label_layer, leaky_relu_layer,
    max_pool_layer, relu_layer, spline_layer, tamper_share, truncating,
};
use crate::error::{MpcError, Result};
use crate::he::encoding::Packing;
use crate::he::linear::{HeClient, HeServer, ServerLayer, shape_of};
use crate::he::params::HeParams;
use crate::protocols::maxpool::MaxTree;
use crate::protocols::session::Session;
use crate::ring_ops::{SessionOps, SiGuard, SiGuardSpec, Softmax, softmax};
use crate::seed::Seed;
use crate::shares::{AShare, Party};
use crate::transport::Channel;

/// Version string both parties must agree on, so that a peer of another version is refused at
/// the hello instead of failing mid-query. `/2`: the secure softmax's and SIGuard's messages
/// changed (bounded truncations; SIGuard's defender products prepared by HE). `/3`: SIGuard
/// runs its rounds side by side and multiplexes its bit products; the spline softmax and the
/// bounded defender compare in narrow rings.
pub const PROTOCOL: &str = "moat-2pc/3";

const REQUEST_END: u8 = 0;
const REQUEST_LABEL: u8 = 1;
const REQUEST_LOGITS: u8 = 2;
const REQUEST_PROBABILITIES: u8 = 3;
/// Flag of a request byte: run this query under [`RescalePlan::pool_first`].
const REQUEST_POOL_FIRST: u8 = 0x80;

/// The server's first message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub protocol: String,
    /// The public architecture of the (folded) graph the server runs.
    pub skeleton: Skeleton,
    /// Ring bits ℓ.
    pub ring_bits: u32,
    /// Fractional bits f.
    pub frac_bits: u32,
    /// BFV ring degree N.
    pub he_degree: usize,
    /// The non-linear layers run on Ferret silent OT ([`Session::setup_silent`]) instead of
    /// IKNP ([`Session::setup`]); absent (older servers) means IKNP.
    #[serde(default)]
    pub silent_ot: bool,
    /// The most this session reveals ([`Reveal::permits`]); the client refuses to ask for
    /// more, the server ends a session that does. (Absent: logits, as before the field.)
    #[serde(default = "most_revealing")]
    pub output: Reveal,
    /// The secure softmax behind [`Reveal::Probabilities`] (absent: [`Softmax::Exp`], the
    /// default before the field).
    #[serde(default = "crate::ring_ops::softmax::absent_softmax")]
    pub softmax: Softmax,
    /// The server's SIGuard at the reveal point, if any: its public part (the defender's
    /// shape and the parameters), so the client can run its half ([`ServerGuard::reveal_protocol`]).
    #[serde(default)]
    pub guard: Option<SiGuardSpec>,
    /// The server's commitment to the served model's weights (64 hex digits of
    /// `moat_wire::commitment`: SHA-256 of a domain tag, a nonce the server drew from the OS
    /// when it loaded the model, and the model file), when the server gives one
    /// ([`ServerModel::with_commitment`]). One session serves one committed model, so a client
    /// checking a batch (Fusion) sees one commitment for it; the server opens it to an auditor
    /// out of band. Absent (older servers, or none given): no commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_commitment: Option<String>,
    /// The server runs a query under [`RescalePlan::pool_first`] when the client's request
    /// asks for it ([`ServeOptions::pool_first`], off when the server's guard acts on its
    /// shares). Absent (older servers): never.
    #[serde(default)]
    pub pool_first: bool,
}

fn most_revealing() -> Reveal {
    Reveal::Logits
}

/// HE parameters for a ring degree (the vetted sets of [`HeParams`]).
pub fn he_params(degree: usize, fixed: FixedPoint) -> Result<HeParams> {
    match degree {
        4096 => HeParams::n4096(fixed),
        8192 => HeParams::n8192(fixed),
        other => Err(MpcError::invalid("he_params", format!("no vetted parameter set for N = {other} (4096 or 8192)"))),
    }
}

/// A model prepared for serving: the quantised graph, its HE parameters and every linear
/// layer's weights encoded once (shared by all sessions).
pub struct ServerModel {
    model: Arc<QuantizedGraph>,
    layout: Layout,
    params: HeParams,
    layers: Vec<Option<ServerLayer>>,
    prepared_bytes: usize,
    commitment: Option<String>,
}

impl ServerModel {
    /// Default memory for pre-encoded weight polynomials: 4 GiB.
    pub const DEFAULT_PREPARE_BUDGET: usize = 4 << 30;

    /// Prepares `model` with HE parameters of ring degree `he_degree` (4096 or 8192),
    /// pre-encoding weight polynomials (NTT form) layer by layer while they fit in
    /// [`Self::DEFAULT_PREPARE_BUDGET`]; later layers encode their weights per query.
    pub fn new(model: Arc<QuantizedGraph>, he_degree: usize) -> Result<Self> {
        Self::with_budget(model, he_degree, Self::DEFAULT_PREPARE_BUDGET)
    }

    /// [`Self::new`] with `budget` bytes for pre-encoded weights (0: encode every query).
    pub fn with_budget(model: Arc<QuantizedGraph>, he_degree: usize, budget: usize) -> Result<Self> {
        let params = he_params(he_degree, model.fixed())?;
        let layout = Layout::new(&model)?;
        let mut used = 0usize;
        let mut layers = Vec::with_capacity(model.graph().nodes().len());
        for i in 0..model.graph().nodes().len() {
            let Some(mut layer) = ServerLayer::from_quantized(&params, &model, i)? else {
                layers.push(None);
                continue;
            };
            if used < budget {
                let mut prepared = layer.clone();
                prepared.prepare(&params)?;
                let bytes = prepared.prepared_bytes();
                if used + bytes <= budget {
                    used += bytes;
                    layer = prepared;
                }
            }
            layers.push(Some(layer));
        }
        tracing::debug!(prepared_bytes = used, "server model ready");
        Ok(Self { model, layout, params, layers, prepared_bytes: used, commitment: None })
    }

    /// Announces `commitment` (the hex commitment to the model file the graph was loaded from)
    /// in every session's [`Hello::model_commitment`].
    pub fn with_commitment(mut self, commitment: impl Into<String>) -> Self {
        self.commitment = Some(commitment.into());
        self
    }

    /// The commitment announced in the hello, if any.
    pub fn commitment(&self) -> Option<&str> {
        self.commitment.as_deref()
    }

    /// Bytes held by pre-encoded weight polynomials.
    pub fn prepared_bytes(&self) -> usize {
        self.prepared_bytes
    }

    /// The quantised model.
    pub fn model(&self) -> &QuantizedGraph {
        &self.model
    }

    /// Serves one client session on `ch` until the client ends it; returns the number of
    /// queries answered. `seed` drives the server's share and OT randomness
    /// ([`Seed::from_os`] unless an experiment needs it fixed).
    pub fn serve(&self, ch: &mut dyn Channel, seed: Seed) -> Result<u64> {
        self.serve_with(ch, seed, &ServeOptions::default())
    }

    /// [`Self::serve`] with per-session [`ServeOptions`]: a query limit (a request beyond it
    /// ends the session with [`MpcError::Limit`]), the most the session reveals (a request for
    /// more ends it with [`MpcError::OutputRefused`]) and server-side [`Hardening`] (a
    /// [`HardeningGuard`] whose noise stream is derived from `seed`).
    pub fn serve_with(&self, ch: &mut dyn Channel, seed: Seed, options: &ServeOptions) -> Result<u64> {
        let mut rng = seed.rng();
        drop(seed);
        let session = Seed::derive(&mut rng);
        // The hardening noise: one stream for the session, so every query draws fresh values.
        let mut guard = HardeningGuard::new(options.hardening, self.model.fixed(), ChaCha20Rng::from_rng(&mut rng));
        self.serve_guarded(ch, session, options, &mut guard)
    }

    /// [`Self::serve_with`] with the server acting through `guard` on its own shares at every
    /// tamper point and at the reveal point of every query ([`ServerGuard`]) instead of
    /// `options.hardening` (ignored here: give a [`HardeningGuard`] for it). `seed` drives the
    /// server's share and OT randomness; the guard brings its own.
    pub fn serve_guarded(
        &self,
        ch: &mut dyn Channel,
        seed: Seed,
        options: &ServeOptions,
        guard: &mut dyn ServerGuard,
    ) -> Result<u64> {
        let fixed = self.model.fixed();
        // An interactive reveal guard protects probabilities: the logits are not offered.
        let output = match (guard.reveal_protocol(), options.output) {
            (Some(_), Reveal::Logits) => Reveal::Probabilities,
            (_, output) => output,
        };
        let hello = Hello {
            protocol: PROTOCOL.to_string(),
            skeleton: self.model.graph().skeleton(),
            ring_bits: fixed.ring_bits(),
            frac_bits: fixed.frac_bits(),
            he_degree: self.params.degree(),
            silent_ot: options.silent_ot,
            output,
            softmax: options.softmax,
            guard: guard.reveal_protocol().map(SiGuard::spec),
            model_commitment: self.commitment.clone(),
            // The moved ReLUs have no tamper points of their own for a guard to act at.
            pool_first: options.pool_first && guard.is_noop(),
        };
        let mut seeds = seed.rng();
        drop(seed);
        ch.set_phase("setup");
        let json = serde_json::to_vec(&hello).map_err(|e| MpcError::invalid("hello", e.to_string()))?;
        ch.send(&json)?;
        let rng = ChaCha20Rng::from_rng(&mut seeds);
        let mut session = if options.silent_ot {
            Session::setup_silent_with_rng(ch, Party::P0, fixed, rng)?
        } else {
            Session::setup_with_rng(ch, Party::P0, fixed, rng)?
        };
        let mut he = HeServer::setup_with_rng(&self.params, ch, ChaCha20Rng::from_rng(&mut seeds))?;
        let mut queries = 0;
        loop {
            ch.set_phase("request");
            let next = match options.idle_timeout {
                Some(idle) => ch.recv_idle(idle),
                None => ch.recv(),
            };
            let request = match next {
                Ok(bytes) => bytes,
                // A client that hangs up between queries ends its session normally.
                Err(crate::transport::TransportError::PeerClosed) => break,
                Err(crate::transport::TransportError::Timeout { after }) if options.idle_timeout.is_some() => {
                    return Err(MpcError::Idle { after, queries });
                }
                Err(e) => return Err(e.into()),
            };
            let (byte, pool_first) = match request.as_slice() {
                [byte] => (byte & !REQUEST_POOL_FIRST, byte & REQUEST_POOL_FIRST != 0),
                other => return Err(MpcError::peer("request", format!("unknown request {other:?}"))),
            };
            let reveal = match byte {
                REQUEST_END if !pool_first => break,
                REQUEST_LABEL => Reveal::Label,
                REQUEST_LOGITS => Reveal::Logits,
                REQUEST_PROBABILITIES => Reveal::Probabilities,
                _ => return Err(MpcError::peer("request", format!("unknown request [{}]", request[0]))),
            };
            if pool_first && !hello.pool_first {
                return Err(MpcError::peer(
                    "request",
                    "asks for the pool-first plan, which this session does not offer",
                ));
            }
            reveal.check_allowed(output)?;
            if options.max_queries.is_some_and(|limit| queries >= limit) {
                return Err(MpcError::Limit { queries });
            }
            let input = AShare::zeros(fixed, moat_nn::tensor::numel(self.model.graph().input_shape()));
            let walk = Walk {
                model: &self.model,
                layout: &self.layout,
                plan: self.layout.plan(pool_first),
                session: &mut session,
                ch: &mut *ch,
                linear: &mut Party0 { he: &mut he, layers: &self.layers },
                behaviour: &mut Honest,
                guard: &mut *guard,
                softmax: options.softmax,
                client_guard: None,
                timings: None,
                started: std::time::Instant::now(),
            };
            walk.run(input, reveal)?;
            queries += 1;
        }
        Ok(queries)
    }
}

/// Per-session options of [`ServerModel::serve_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServeOptions {
    /// The most queries this session may run (`None`: unlimited). The serving layer sets it
    /// from the client's remaining query budget.
    pub max_queries: Option<u64>,
    /// The most the session reveals (default: logits, i.e. anything the backends compute);
    /// announced in the [`Hello`].
    pub output: Reveal,
    /// Noise the server adds to its own shares ([`Hardening::NONE`] by default): uniform of
    /// half-width `activation_noise` on every ReLU / max-pool input, at that input's scale
    /// (`2f` behind a deferred truncation, else `f`), and `logit_noise` on the logits, drawn
    /// fresh for every query from a stream seeded by the session seed ([`HardeningGuard`]).
    /// It costs no traffic.
    pub hardening: Hardening,
    /// Run the session's OT as Ferret silent OT ([`Session::setup_silent`]: 1 bit plus ≈ 0.05
    /// bytes per random OT instead of 16, ≈ 200 MB of OT pools per party); the client
    /// follows the hello.
    pub silent_ot: bool,
    /// The secure softmax behind [`Reveal::Probabilities`] ([`Softmax::Spline`] by default);
    /// announced in the [`Hello`].
    pub softmax: Softmax,
    /// Offer [`RescalePlan::pool_first`] in the hello (default on): a client that does not
    /// tamper runs each ReLU that only a max pool reads after the pool, on a quarter of the
    /// values for a 3×3 stride-2 pool, with the same result. Never offered with a guard that
    /// acts on the server's shares (hardening), whose points the moved ReLUs would lose.
    pub pool_first: bool,
    /// How long the server waits for the client's next request between queries before it ends
    /// the session with [`MpcError::Idle`] (`None`: the channel's own timeout). A serving
    /// layer sets it so an idle client does not hold a session slot.
    pub idle_timeout: Option<std::time::Duration>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_queries: None,
            output: Reveal::Logits,
            hardening: Hardening::NONE,
            silent_ot: false,
            softmax: Softmax::default(),
            pool_first: true,
            idle_timeout: None,
        }
    }
}

/// Wall time of one node in the last inference (both parties advance in lock step, so the
/// client's time of a node is the protocol's time for it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// Node index in the folded graph.
    pub node: usize,
    /// Node name.
    pub name: String,
    /// The traffic phase the node's bytes and rounds are counted under in the channel's
    /// [`crate::transport::Stats`] (`"{node}:{name}"`, or [`OUTPUT_PHASE`]).
    #[serde(default)]
    pub phase: String,
    /// Op kind.
    pub op: String,
    /// Whether the node truncated its output: a linear layer rescaling at once, or a ReLU
    /// rescaling its output after a deferred linear layer ([`crate::engine::plan`]).
    #[serde(default)]
    pub truncated: bool,
    /// Seconds.
    pub seconds: f64,
}

/// The client's side of a session.
pub struct ClientSession {
    model: QuantizedGraph,
    layout: Layout,
    session: Session,
    he: HeClient,
    plans: Vec<Option<Packing>>,
    hello: Hello,
    /// The client's half of the server's SIGuard, from the hello.
    guard: Option<SiGuard>,
    timings: Vec<NodeTiming>,
}

impl ClientSession {
    /// Opens a session: reads the server's hello, sets up OT and HE. `seed` drives the
    /// client's keys, shares and OT choices ([`Seed::from_os`] unless an experiment needs it
    /// fixed).
    pub fn connect(ch: &mut dyn Channel, seed: Seed) -> Result<Self> {
        let mut seeds = seed.rng();
        drop(seed);
        ch.set_phase("setup");
        let bytes = ch.recv()?;
        let hello: Hello = serde_json::from_slice(&bytes).map_err(|e| MpcError::peer("hello", e.to_string()))?;
        if hello.protocol != PROTOCOL {
            return Err(MpcError::peer(
                "hello",
                format!("protocol '{}', this client speaks '{PROTOCOL}'", hello.protocol),
            ));
        }
        let fixed =
            FixedPoint::new(hello.ring_bits, hello.frac_bits).map_err(|e| MpcError::peer("hello", e.to_string()))?;
        let graph = hello.skeleton.instantiate().map_err(|e| MpcError::peer("hello", e.to_string()))?;
        let model = QuantizedGraph::new(&graph, fixed).map_err(|e| MpcError::peer("hello", e.to_string()))?;
        if model.graph().nodes().len() != hello.skeleton.nodes.len() {
            return Err(MpcError::peer("hello", "the architecture is not batch-norm folded"));
        }
        let guard = hello.guard.map(SiGuard::client).transpose()?;
        let params = he_params(hello.he_degree, fixed)?;
        let plans = (0..model.graph().nodes().len())
            .map(|i| shape_of(&model, i)?.map(|shape| params.plan(shape)).transpose())
            .collect::<Result<_>>()?;
        let layout = Layout::new(&model)?;
        let rng = ChaCha20Rng::from_rng(&mut seeds);
        let session = if hello.silent_ot {
            Session::setup_silent_with_rng(ch, Party::P1, fixed, rng)?
        } else {
            Session::setup_with_rng(ch, Party::P1, fixed, rng)?
        };
        let mut he = HeClient::with_rng(&params, ChaCha20Rng::from_rng(&mut seeds))?;
        he.setup(ch)?;
        Ok(Self { model, layout, session, he, plans, hello, guard, timings: Vec::new() })
    }

    /// The server's hello (architecture and parameters).
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Per-node wall times of the last inference (the output step is node `"output"`).
    pub fn timings(&self) -> &[NodeTiming] {
        &self.timings
    }

    /// The public architecture as a zero-weight quantised graph.
    pub fn architecture(&self) -> &QuantizedGraph {
        &self.model
    }

    /// One private inference of a float input.
    pub fn infer(
        &mut self,
        ch: &mut dyn Channel,
        input: &[f32],
        reveal: Reveal,
        behaviour: &mut dyn ClientBehaviour,
    ) -> Result<Revealed> {
        let encoded = self.model.encode_input(input).map_err(|e| MpcError::invalid("infer", e.to_string()))?;
        self.infer_encoded(ch, encoded, reveal, behaviour)
    }

    /// One private inference of an encoded input (ring elements at scale 2^f).
    pub fn infer_encoded(
        &mut self,
        ch: &mut dyn Channel,
        input: Vec<u64>,
        reveal: Reveal,
        behaviour: &mut dyn ClientBehaviour,
    ) -> Result<Revealed> {
        let expected = moat_nn::tensor::numel(self.model.graph().input_shape());
        if input.len() != expected {
            return Err(MpcError::invalid(
                "infer",
                format!("input has {} values, the model takes {expected}", input.len()),
            ));
        }
        // Refused before anything is sent: what no backend computes, what the server's
        // policy (announced in its hello) does not allow.
        reveal.check_supported()?;
        reveal.check_allowed(self.hello.output)?;
        let request = match reveal {
            Reveal::Label => REQUEST_LABEL,
            Reveal::Logits => REQUEST_LOGITS,
            Reveal::Probabilities => REQUEST_PROBABILITIES,
            other => return Err(MpcError::OutputUnsupported { requested: other }),
        };
        // The pool-first plan has no tamper points between a moved ReLU and its pool.
        let pool_first = self.hello.pool_first && !behaviour.tampers();
        ch.set_phase("request");
        ch.send(&[if pool_first { request | REQUEST_POOL_FIRST } else { request }])?;
        self.timings.clear();
        let input = AShare::from_wrapping(self.model.fixed(), input);
        let walk = Walk {
            model: &self.model,
            layout: &self.layout,
            plan: self.layout.plan(pool_first),
            session: &mut self.session,
            ch,
            linear: &mut Party1 { he: &mut self.he, plans: &self.plans },
            behaviour,
            guard: &mut HonestServer,
            softmax: self.hello.softmax,
            client_guard: self.guard.as_ref(),
            timings: Some(&mut self.timings),
            started: std::time::Instant::now(),
        };
        let out = walk.run(input, reveal)?;
        out.ok_or_else(|| MpcError::invalid("infer", "the protocol revealed nothing to the client"))
    }

    /// Ends the session.
    pub fn close(self, ch: &mut dyn Channel) -> Result<()> {
        ch.send(&[REQUEST_END])?;
        ch.flush()?;
        Ok(())
    }
}

/// A party's half of the homomorphic linear layers.
trait LinearParty {
    /// Shares of `L(x) + b` before truncation.
    fn linear(&mut self, ch: &mut dyn Channel, index: usize, x: &AShare) -> Result<AShare>;
}

struct Party0<'a> {
    he: &'a mut HeServer,
    layers: &'a [Option<ServerLayer>],
}

impl LinearParty for Party0<'_> {
    fn linear(&mut self, ch: &mut dyn Channel, index: usize, x: &AShare) -> Result<AShare> {
        let layer = self.layers[index]
            .as_ref()
            .ok_or_else(|| MpcError::invalid("linear", format!("node {index} has no layer")))?;
        let y = self.he.linear(ch, layer, x.values())?;
        Ok(AShare::from_wrapping(x.fixed_point(), y))
    }
}

struct Party1<'a> {
    he: &'a mut HeClient,
    plans: &'a [Option<Packing>],
}

impl LinearParty for Party1<'_> {
    fn linear(&mut self, ch: &mut dyn Channel, index: usize, x: &AShare) -> Result<AShare> {
        let plan = self.plans[index]
            .as_ref()
            .ok_or_else(|| MpcError::invalid("linear", format!("node {index} has no plan")))?;
        let y = self.he.linear(ch, plan, x.values())?;
        Ok(AShare::from_wrapping(x.fixed_point(), y))
    }
}

/// What both parties derive once from the public architecture (the server per model, the
/// client per session): where the walk rescales (both plans) and every max pool's
/// comparison tree.
struct Layout {
    plan: RescalePlan,
    /// [`RescalePlan::pool_first`], for the queries that ask for it.
    pool_first: RescalePlan,
    /// Per node: the comparison tree of a max pool over its windows ([`pool_windows`]),
    /// `None` for other nodes.
    trees: Vec<Option<MaxTree>>,
}

impl Layout {
    /// The fused and the pool-first plans of `model`'s graph, checked against what the walk
    /// can run ([`RescalePlan::check`]), and the max pools' comparison trees.
    fn new(model: &QuantizedGraph) -> Result<Self> {
        let graph = model.graph();
        let plan = RescalePlan::fused(graph);
        plan.check(graph)?;
        let pool_first = RescalePlan::pool_first(graph);
        pool_first.check(graph)?;
        let trees = model
            .layers()
            .iter()
            .map(|layer| match layer {
                QuantizedLayer::MaxPool { window, channels } => {
                    let windows = pool_windows(*channels, *window);
                    let inputs = channels * window.in_hw[0] * window.in_hw[1];
                    MaxTree::new(&windows, inputs).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Self { plan, pool_first, trees })
    }

    /// The plan of a query: [`RescalePlan::pool_first`] or [`RescalePlan::fused`].
    fn plan(&self, pool_first: bool) -> &RescalePlan {
        if pool_first { &self.pool_first } else { &self.plan }
    }
}

/// One party's walk of one query over the graph: both parties take the same steps in the same
/// order ([`moat_nn::walk`]). The client carries its behaviour and its timings; the server its
/// guard (each party's other hook is the no-op).
struct Walk<'a> {
    model: &'a QuantizedGraph,
    layout: &'a Layout,
    /// The query's plan (one of the layout's).
    plan: &'a RescalePlan,
    session: &'a mut Session,
    ch: &'a mut dyn Channel,
    linear: &'a mut dyn LinearParty,
    behaviour: &'a mut dyn ClientBehaviour,
    guard: &'a mut dyn ServerGuard,
    /// The secure softmax behind [`Reveal::Probabilities`] (the hello's).
    softmax: Softmax,
    /// The client's half of the server's SIGuard (the server's is its guard's).
    client_guard: Option<&'a SiGuard>,
    timings: Option<&'a mut Vec<NodeTiming>>,
    started: std::time::Instant,
}

impl Walk<'_> {
    /// The server's guard on its share at `site` (the share as it is for the client, or when
    /// the guard changes nothing).
    fn guarded(&mut self, site: &ShareSite<'_>, x: &AShare, reveal: Option<Reveal>) -> AShare {
        if self.session.party() != Party::P0 || self.guard.is_noop() {
            return x.clone();
        }
        let mut values = x.values().to_vec();
        self.guard.guard(site, &mut values);
        if let Some(output) = reveal {
            self.guard.reveal(output, site, &mut values);
        }
        AShare::from_wrapping(x.fixed_point(), values)
    }

    /// Opens `share` to the client only: the server sends its share (one frame); the client
    /// receives it and returns the sum.
    fn open_to_client(&mut self, share: &[u64]) -> Result<Option<Vec<u64>>> {
        let fixed = self.model.fixed();
        let bits = fixed.ring_bits();
        if self.session.party() == Party::P0 {
            self.ch.send_ring(share, bits)?;
            self.ch.flush()?;
            Ok(None)
        } else {
            let other = self.ch.recv_ring(share.len(), bits)?;
            Ok(Some(share.iter().zip(&other).map(|(a, b)| fixed.add(*a, *b)).collect()))
        }
    }

    /// An element-wise activation at `site`: the server guard on its input, `layer` (the
    /// protocol with the client's tamper points), the guard on its output.
    fn activation(
        &mut self,
        site: &Site<'_>,
        x: &AShare,
        layer: impl FnOnce(
            &mut Session,
            &mut dyn Channel,
            &AShare,
            &LayerSite<'_>,
            &mut dyn ClientBehaviour,
        ) -> Result<AShare>,
    ) -> Result<AShare> {
        let f = self.model.fixed().frac_bits();
        let at = self.layer_site(site);
        let x = self.guarded(&ShareSite::input_of(site, f), x, None);
        let y = layer(self.session, self.ch, &x, &at, self.behaviour)?;
        Ok(self.guarded(&ShareSite::output_of(site, f), &y, None))
    }

    fn layer_site<'s>(&self, site: &Site<'s>) -> LayerSite<'s> {
        let f = self.model.fixed().frac_bits();
        LayerSite {
            node: site.index,
            name: &site.node.name,
            input_shape: site.input_shape,
            output_shape: site.output_shape,
            input_frac_bits: site.input_frac_bits(f),
            output_frac_bits: site.output_frac_bits(f),
        }
    }

    /// Runs the query; returns what the client learns (`None` for the server).
    fn run(mut self, input: AShare, reveal: Reveal) -> Result<Option<Revealed>> {
        let model = self.model;
        let graph = model.graph();
        let fixed = model.fixed();
        let plan = self.plan;
        let mut values = walk::run(graph, plan, input, &mut self, Keep::Outputs)?;

        let started = std::time::Instant::now();
        self.ch.set_phase(OUTPUT_PHASE);
        let logits =
            values.take(graph.logits()).ok_or_else(|| MpcError::invalid("walk", "the walk lost the logits"))?;
        let site = ShareSite::logits_of(graph, plan, fixed.frac_bits());
        let logits = self.guarded(&site, &logits, Some(reveal));
        let revealed = match reveal {
            Reveal::Label => label_layer(self.session, self.ch, &logits, &site, self.behaviour)?.map(Revealed::Label),
            Reveal::Logits => {
                let logits = tamper_share(self.session, &logits, &site, self.behaviour);
                self.open_to_client(logits.values())?.map(Revealed::Logits)
            }
            Reveal::Probabilities => {
                let logits = tamper_share(self.session, &logits, &site, self.behaviour);
                let classes = logits.len();
                let siguard = match self.session.party() {
                    Party::P0 => self.guard.reveal_protocol(),
                    Party::P1 => self.client_guard,
                };
                let ops = &mut SessionOps::new(self.session, self.ch);
                let p = match siguard {
                    Some(siguard) => siguard.run(ops, logits.values())?,
                    None => softmax(ops, logits.values(), classes, self.softmax)?,
                };
                self.open_to_client(&p)?.map(Revealed::Probabilities)
            }
            other => return Err(MpcError::OutputUnsupported { requested: other }),
        };
        if let Some(t) = self.timings {
            let seconds = started.elapsed().as_secs_f64();
            let node = graph.nodes().len();
            let (name, phase, op) = ("output".into(), OUTPUT_PHASE.into(), "Output".into());
            t.push(NodeTiming { node, name, phase, op, truncated: false, seconds });
        }
        Ok(revealed)
    }
}

/// The traffic phase of opening the output to the client.
pub const OUTPUT_PHASE: &str = "output";

/// The traffic phase of one node: `"{index}:{name}"`.
fn node_phase(site: &Site<'_>) -> String {
    format!("{}:{}", site.index, site.node.name)
}

/// The real execution of each step, by one party: linear layers by HE, activations and
/// truncations by the protocols, sums and concatenations locally on the shares.
impl Kernel for Walk<'_> {
    type Value = AShare;
    type Error = MpcError;

    fn begin(&mut self, site: &Site<'_>) {
        self.started = std::time::Instant::now();
        self.ch.set_phase(&node_phase(site));
    }

    fn linear(&mut self, site: &Site<'_>, x: &AShare, truncate: bool) -> Result<AShare> {
        // A public map (an average pool) runs on each party's own share; the others by HE.
        let pre = match self.model.public_linear(site.index, x.values()) {
            Some(y) => AShare::from_wrapping(x.fixed_point(), y),
            None => self.linear.linear(self.ch, site.index, x)?,
        };
        if truncate {
            let session = &mut *self.session;
            truncating(self.ch, |ch| crate::protocols::truncate::truncate(session, ch, &pre))
        } else {
            Ok(pre)
        }
    }

    fn relu(&mut self, site: &Site<'_>, x: &AShare, _truncate: bool) -> Result<AShare> {
        if !matches!(site.node.op, moat_nn::Op::MaxPool(_)) {
            // The truncation follows from the scales (`relu_layer` truncates by their difference).
            return self.activation(site, x, relu_layer);
        }
        // A max pool's moved ReLU (the pool-first plan), counted in its own sub-phase (as
        // `transport::in_subphase`, which cannot lend the channel back to `self`).
        let previous = self.ch.set_phase(&format!("{}{RELU_SUBPHASE}", node_phase(site)));
        let y = self.activation(site, x, relu_layer);
        self.ch.set_phase(&previous);
        y
    }

    fn clip(&mut self, site: &Site<'_>, x: &AShare, _truncate: bool) -> Result<AShare> {
        // As a ReLU: the truncation follows from the scales.
        let QuantizedLayer::Clip { min, max } = self.model.layers()[site.index] else {
            return Err(MpcError::invalid("walk", format!("node '{}': no clip bounds", site.node.name)));
        };
        self.activation(site, x, |s, ch, x, layer, b| clip_layer(s, ch, x, (min, max), layer, b))
    }

    fn leaky_relu(&mut self, site: &Site<'_>, x: &AShare) -> Result<AShare> {
        let model = self.model;
        let QuantizedLayer::LeakyRelu { alpha } = &model.layers()[site.index] else {
            return Err(MpcError::invalid("walk", format!("node '{}': no leaky ReLU slope", site.node.name)));
        };
        let op = site.node.op.op_kind();
        self.activation(site, x, |s, ch, x, layer, b| leaky_relu_layer(s, ch, x, alpha, op, layer, b))
    }

    fn hard_sigmoid(&mut self, site: &Site<'_>, x: &AShare) -> Result<AShare> {
        let QuantizedLayer::HardSigmoid(hard) = self.model.layers()[site.index] else {
            return Err(MpcError::invalid("walk", format!("node '{}': no hard sigmoid layer", site.node.name)));
        };
        self.activation(site, x, |s, ch, x, layer, b| hard_sigmoid_layer(s, ch, x, &hard, layer, b))
    }

    fn hard_swish(&mut self, site: &Site<'_>, x: &AShare) -> Result<AShare> {
        let QuantizedLayer::HardSwish(swish) = self.model.layers()[site.index] else {
            return Err(MpcError::invalid("walk", format!("node '{}': no hard swish layer", site.node.name)));
        };
        self.activation(site, x, |s, ch, x, layer, b| hard_swish_layer(s, ch, x, &swish, layer, b))
    }

    fn spline(&mut self, site: &Site<'_>, x: &AShare) -> Result<AShare> {
        let model = self.model;
        let QuantizedLayer::Spline(spline) = &model.layers()[site.index] else {
            return Err(MpcError::invalid("walk", format!("node '{}': no spline layer", site.node.name)));
        };
        let op = site.node.op.op_kind();
        self.activation(site, x, |s, ch, x, layer, b| spline_layer(s, ch, x, spline, op, layer, b))
    }

    fn transpose(&mut self, _site: &Site<'_>, x: &AShare, indices: &[usize]) -> Result<AShare> {
        // A public permutation: each party reorders its own shares, no traffic.
        x.gather(indices)
    }

    fn max_pool(&mut self, site: &Site<'_>, x: &AShare) -> Result<AShare> {
        let f = self.model.fixed().frac_bits();
        let layout = self.layout;
        let tree = layout.trees[site.index]
            .as_ref()
            .ok_or_else(|| MpcError::invalid("walk", format!("node '{}': no max-pool tree", site.node.name)))?;
        let layer = self.layer_site(site);
        let x = self.guarded(&ShareSite::input_of(site, f), x, None);
        let y = max_pool_layer(self.session, self.ch, &x, tree, &layer, self.behaviour)?;
        Ok(self.guarded(&ShareSite::output_of(site, f), &y, None))
    }

    fn add(&mut self, _site: &Site<'_>, terms: &[(&AShare, bool)]) -> Result<AShare> {
        // An operand at f meeting one at 2f is lifted locally: ⌊a/2^f⌋ + b = ⌊(a + b·2^f)/2^f⌋.
        let f = self.model.fixed().frac_bits();
        let mut sum: Option<AShare> = None;
        for (v, lift) in terms {
            let v = if *lift { v.mul_public(1u64 << f) } else { (*v).clone() };
            sum = Some(match sum {
                Some(s) => s.try_add(&v)?,
                None => v,
            });
        }
        sum.ok_or_else(|| MpcError::invalid("walk", "an Add without inputs"))
    }

    fn max(&mut self, _site: &Site<'_>, parts: &[&AShare]) -> Result<AShare> {
        crate::engine::layer::max_shares(self.session, self.ch, parts)
    }

    fn concat(&mut self, _site: &Site<'_>, parts: &[&AShare]) -> Result<AShare> {
        let joined = moat_nn::exec::concat(parts.iter().map(|p| p.values()));
        Ok(AShare::from_wrapping(self.model.fixed(), joined))
    }

    fn end(&mut self, site: &Site<'_>, truncated: bool) {
        if let Some(t) = self.timings.as_deref_mut() {
            let seconds = self.started.elapsed().as_secs_f64();
            let op = site.node.op.kind().to_string();
            let phase = node_phase(site);
            t.push(NodeTiming { node: site.index, name: site.node.name.clone(), phase, op, truncated, seconds });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::guard::GuardFactory;
    use crate::engine::hook::{FnBehaviour, TamperPoint};
    use crate::engine::simulated::{SimulatedEngine, Trace};
    use crate::protocols::{Config, cost};
    use crate::transport::memory;
    use crate::transport::stats::StatsSnapshot;
    use moat_nn::OpKind;
    use moat_nn::approx;
    use moat_nn::exec::argmax_ring;
    use moat_nn::graph::{Op, ValueId};
    use moat_nn::zoo;
    use rand::Rng;

    fn quantized(arch: &str, shape: &[usize], seed: u64) -> Arc<QuantizedGraph> {
        let arch = arch.parse().unwrap_or(zoo::Architecture::Mlp { hidden: vec![4] });
        let graph = zoo::build(&arch, shape, 10, seed).unwrap_or_else(|e| panic!("build: {e}"));
        Arc::new(QuantizedGraph::new(&graph, FixedPoint::default()).unwrap_or_else(|e| panic!("quantize: {e}")))
    }

    /// A stem conv, a SqueezeNet fire module (squeeze, two expands, concat), pooling, a dense.
    fn fire() -> Arc<QuantizedGraph> {
        let build = || -> moat_nn::Result<QuantizedGraph> {
            let mut b = zoo::GraphBuilder::new(&[3, 8, 8], 5);
            let x = b.conv("stem", ValueId::INPUT, 8, 3, 1, 1)?;
            let x = b.fire("fire", x, 4, 6)?;
            let x = b.global_avg_pool(x)?;
            let out = b.dense("fc", x, 5)?;
            QuantizedGraph::new(&b.finish("fire", out)?, FixedPoint::default())
        };
        Arc::new(build().unwrap_or_else(|e| panic!("fire: {e}")))
    }

    /// Runs `queries` through the real protocol (two threads, in-memory channel); returns the
    /// answers and the client's traffic per phase.
    fn run_real_with(
        model: Arc<QuantizedGraph>,
        options: ServeOptions,
        queries: Vec<(Vec<f32>, Reveal)>,
        mut behaviour: impl ClientBehaviour + Send + 'static,
    ) -> Result<(Vec<Revealed>, StatsSnapshot)> {
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(model, 4096)?;
        let handle =
            std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(7), &options));
        let mut client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        let mut out = Vec::new();
        for (x, reveal) in queries {
            out.push(client.infer(&mut client_ch, &x, reveal, &mut behaviour)?);
        }
        let stats = client_ch.stats().snapshot();
        client.close(&mut client_ch)?;
        let served = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
        assert_eq!(served as usize, out.len());
        Ok((out, stats))
    }

    fn run_real(
        model: Arc<QuantizedGraph>,
        queries: Vec<(Vec<f32>, Reveal)>,
        behaviour: impl ClientBehaviour + Send + 'static,
    ) -> Result<Vec<Revealed>> {
        Ok(run_real_with(model, ServeOptions::default(), queries, behaviour)?.0)
    }

    fn input(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn fixed_logits(model: &QuantizedGraph, x: &[f32]) -> Result<Vec<u64>> {
        model.logits_encoded(x).map_err(|e| MpcError::invalid("test", e.to_string()))
    }

    #[test]
    fn honest_runs_equal_the_fixed_point_executor_and_the_simulated_backend() -> Result<()> {
        let nets = [
            ("mlp:16,8", quantized("mlp:16,8", &[12], 3)),
            ("lenet5:x0.5", quantized("lenet5:x0.5", &[1, 28, 28], 3)),
            ("resnet20:x0.25", quantized("resnet20:x0.25", &[3, 16, 16], 3)),
            ("fire", fire()),
        ];
        for (arch, model) in nets {
            // The fused plan is in force: some truncations are deferred past their ReLU.
            assert!(RescalePlan::fused(model.graph()).deferred() > 0, "{arch}");
            let n = moat_nn::tensor::numel(model.graph().input_shape());
            let queries =
                vec![(input(n, 1), Reveal::Logits), (input(n, 2), Reveal::Label), (input(n, 3), Reveal::Logits)];
            let real = run_real(Arc::clone(&model), queries.clone(), Honest)?;
            let mut simulated = SimulatedEngine::new(Arc::clone(&model), 1);
            for ((x, reveal), got) in queries.iter().zip(&real) {
                let expected = fixed_logits(&model, x)?;
                match reveal {
                    Reveal::Logits => assert_eq!(got, &Revealed::Logits(expected), "{arch}"),
                    Reveal::Label => assert_eq!(got.label(model.fixed()), argmax_ring(model.fixed(), &expected)),
                    other => return Err(MpcError::OutputUnsupported { requested: *other }),
                }
                assert_eq!(got, &simulated.infer(x, *reveal, &mut Honest)?, "{arch}: real vs simulated");
            }
        }
        Ok(())
    }

    #[test]
    fn revealed_probabilities_are_the_simulated_ones_bit_for_bit_for_each_softmax() -> Result<()> {
        let model = quantized("mlp:16,8", &[12], 4);
        let fixed = model.fixed();
        let xs: Vec<Vec<f32>> = (0..2).map(|s| input(12, 20 + s)).collect();
        for kind in Softmax::ALL {
            let options = ServeOptions { softmax: kind, ..Default::default() };
            let queries = xs.iter().map(|x| (x.clone(), Reveal::Probabilities)).collect();
            let (real, stats) = run_real_with(Arc::clone(&model), options, queries, Honest)?;
            let mut simulated = SimulatedEngine::new(Arc::clone(&model), 3).with_softmax(kind);
            for (x, got) in xs.iter().zip(&real) {
                assert_eq!(got, &simulated.infer(x, Reveal::Probabilities, &mut Honest)?, "{kind}");
                let Revealed::Probabilities(p) = got else {
                    return Err(MpcError::invalid("test", "not probabilities"));
                };
                let logits = fixed_logits(&model, x)?;
                let z: Vec<f64> = logits.iter().map(|v| fixed.decode(*v)).collect();
                let want = kind.reference(&z, z.len());
                for (a, b) in p.iter().zip(&want) {
                    assert!((fixed.decode(*a) - b).abs() < 5e-3, "{kind}: {} vs {b}", fixed.decode(*a));
                }
                assert_eq!(got.label(fixed), argmax_ring(fixed, &logits), "{kind}");
            }
            assert!(stats.sum_prefix("output").bytes_total() > 0);
        }
        Ok(())
    }

    /// Convolutions (one depthwise, one grouped) read by clips with both bounds reached, a
    /// leaky ReLU and a PRelu (one slope per channel) on negative and positive values, the
    /// element-wise maximum of three values, a channel shuffle and an HWC transpose,
    /// and a dense head.
    fn clipped() -> Arc<QuantizedGraph> {
        let build = || -> moat_nn::Result<QuantizedGraph> {
            let mut b = zoo::GraphBuilder::new(&[4, 6, 6], 9);
            let x = b.conv("stem", ValueId::INPUT, 4, 3, 1, 1)?;
            let x = b.push("clip.wide", Op::Clip { min: -1.5, max: 2.0 }, vec![x])?;
            let x = b.grouped_conv("depthwise", x, 4, 3, 2, 1, 4)?;
            let x = b.push("clip.unit", Op::Clip { min: 0.0, max: 1.0 }, vec![x])?;
            let x = b.grouped_conv("grouped", x, 6, 1, 1, 0, 2)?;
            let leaky = b.push("leaky", Op::LeakyRelu { alpha: 0.5 }, vec![x])?;
            let prelu = b.push("prelu", Op::PRelu { slope: vec![0.5, -0.25, 0.0, 1.5, 0.125, 2.0] }, vec![leaky])?;
            let x = b.push("clip.narrow", Op::Clip { min: -0.25, max: 0.25 }, vec![prelu])?;
            let x = b.push("max", Op::Max, vec![x, prelu, leaky])?;
            let x = b.channel_shuffle("shuffle", x, 3)?;
            let x = b.push("hwc", Op::Transpose(vec![1, 2, 0]), vec![x])?;
            let x = b.flatten(x)?;
            let out = b.dense("fc", x, 5)?;
            QuantizedGraph::new(&b.finish("clipped", out)?, FixedPoint::default())
        };
        Arc::new(build().unwrap_or_else(|e| panic!("clipped: {e}")))
    }

    /// A convolution read by a hard sigmoid, a hard swish, a sigmoid, a tanh, a SiLU, a GELU (both
    /// forms), an ELU, a SELU, a softplus and a softsign side by side (each sees the
    /// convolution's wide range), their concatenation and a dense head.
    fn approximated() -> Arc<QuantizedGraph> {
        let build = || -> moat_nn::Result<QuantizedGraph> {
            let mut b = zoo::GraphBuilder::new(&[2, 6, 6], 13);
            let x = b.conv("stem", ValueId::INPUT, 4, 3, 1, 1)?;
            let branches = vec![
                b.push("hard_sigmoid", Op::HardSigmoid { alpha: 0.2, beta: 0.5 }, vec![x])?,
                b.push("hard_swish", Op::HardSwish, vec![x])?,
                b.push("sigmoid", Op::Sigmoid, vec![x])?,
                b.push("tanh", Op::Tanh, vec![x])?,
                b.push("silu", Op::Silu, vec![x])?,
                b.push("gelu", Op::Gelu, vec![x])?,
                b.push("elu", Op::Elu { alpha: 1.0 }, vec![x])?,
                b.push("gelu_tanh", Op::GeluTanh, vec![x])?,
                b.push("selu", Op::Selu { alpha: approx::SELU_ALPHA, gamma: approx::SELU_GAMMA }, vec![x])?,
                b.push("softplus", Op::Softplus, vec![x])?,
                b.push("softsign", Op::Softsign, vec![x])?,
            ];
            let x = b.push("cat", Op::Concat, branches)?;
            let x = b.conv("mix", x, 4, 3, 2, 1)?;
            let x = b.flatten(x)?;
            let out = b.dense("fc", x, 5)?;
            QuantizedGraph::new(&b.finish("approximated", out)?, FixedPoint::default())
        };
        Arc::new(build().unwrap_or_else(|e| panic!("approximated: {e}")))
    }

    #[test]
    fn approximated_activations_are_bit_exact_in_both_backends_and_within_their_bounds() -> Result<()> {
        let model = approximated();
        let graph = model.graph();
        let fp = model.fixed();
        let n = moat_nn::tensor::numel(graph.input_shape());
        let x: Vec<f32> = input(n, 3).into_iter().map(|v| v * 24.0).collect();
        let values = model
            .run_all_encoded(model.encode_input(&x).map_err(|e| MpcError::invalid("t", e.to_string()))?)
            .map_err(|e| MpcError::invalid("t", e.to_string()))?;
        for (i, node) in graph.nodes().iter().enumerate() {
            let (input, output) = (&values[node.inputs[0].0], &values[ValueId::of_node(i).0]);
            let (exact, bound, edges): (fn(f64) -> f64, f64, [f64; 2]) = match node.op {
                Op::HardSigmoid { .. } => {
                    (|v| (0.2 * v + 0.5).clamp(0.0, 1.0), moat_nn::approx::HARD_SIGMOID_MAX_ERROR, [-2.5, 2.5])
                }
                Op::HardSwish => {
                    (|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0), moat_nn::approx::HARD_SWISH_MAX_ERROR, [-3.0, 3.0])
                }
                Op::Sigmoid => {
                    (|v| moat_nn::approx::SIGMOID.exact(v), moat_nn::approx::SIGMOID.max_error(), [-1.0, 1.0])
                }
                Op::Tanh => (f64::tanh, moat_nn::approx::TANH.max_error(), [-1.0, 1.0]),
                Op::Silu => (|v| moat_nn::approx::SILU.exact(v), moat_nn::approx::SILU.max_error(), [-3.0, 3.0]),
                Op::Gelu => (|v| moat_nn::approx::GELU.exact(v), moat_nn::approx::GELU.max_error(), [-2.0, 2.0]),
                Op::Elu { .. } => (|v| moat_nn::approx::ELU.exact(v), moat_nn::approx::ELU.max_error(), [-3.0, 1.0]),
                Op::GeluTanh => (|v| approx::GELU_TANH.exact(v), approx::GELU_TANH.max_error(), [-2.0, 2.0]),
                Op::Softplus => (|v| approx::SOFTPLUS.exact(v), approx::SOFTPLUS.max_error(), [-3.0, 3.0]),
                Op::Softsign => (|v| approx::SOFTSIGN.exact(v), approx::SOFTSIGN.max_error(), [-3.0, 3.0]),
                Op::Selu { .. } => (
                    |v| approx::selu_exact(v, approx::SELU_ALPHA.into(), approx::SELU_GAMMA.into()),
                    approx::SELU_MAX_ERROR,
                    [-3.0, 1.0],
                ),
                _ => continue,
            };
            // SELU's γ at f bits adds |γ − γ_q|·ReLU(x) ([`approx::selu`]).
            let gamma = f64::from(approx::SELU_GAMMA);
            let gamma_error =
                if let Op::Selu { .. } = node.op { (fp.decode(fp.encode(gamma)) - gamma).abs() } else { 0.0 };
            // The input reaches both sides of the function's bends, and the error stays
            // within the documented bound on every element.
            let reals: Vec<f64> = input.iter().map(|v| fp.decode(*v)).collect();
            assert!(reals.iter().any(|v| *v < edges[0]) && reals.iter().any(|v| *v > edges[1]), "{}", node.name);
            for (v, y) in reals.iter().zip(output) {
                let err = (fp.decode(*y) - exact(*v)).abs();
                let bound = bound + gamma_error * v.max(0.0);
                assert!(err <= bound, "{} at {v}: error {err:e} above {bound:e}", node.name);
            }
        }
        let (real, stats) =
            run_real_with(Arc::clone(&model), ServeOptions::default(), vec![(x.clone(), Reveal::Logits)], Honest)?;
        assert_eq!(real[0], Revealed::Logits(fixed_logits(&model, &x)?), "real vs fixed");
        let simulated = SimulatedEngine::new(Arc::clone(&model), 1).infer(&x, Reveal::Logits, &mut Honest)?;
        assert_eq!(real[0], simulated, "real vs simulated");
        // Traffic per element of each activation (both directions, the client's counters).
        for (i, node) in graph.nodes().iter().enumerate() {
            if node.op.is_linear() || matches!(node.op, Op::Flatten | Op::Concat) {
                continue;
            }
            let phase = stats.sum_prefix(&format!("{i}:{}", node.name));
            let elements = moat_nn::tensor::numel(graph.shape(ValueId::of_node(i))) as u64;
            eprintln!(
                "{}: {} bytes, {} rounds for {elements} elements ({} bytes per element)",
                node.name,
                phase.bytes_total(),
                phase.rounds,
                phase.bytes_total() / elements
            );
        }
        Ok(())
    }

    #[test]
    fn clips_leaky_relus_grouped_convolutions_and_transposes_are_bit_exact_in_both_backends() -> Result<()> {
        let nets = [
            ("clipped", clipped(), 4.0),
            ("mobilenetv2:x0.25", quantized("mobilenetv2:x0.25", &[3, 16, 16], 3), 1.0),
            ("shufflenet:x0.25", quantized("shufflenet:x0.25", &[3, 16, 16], 3), 1.0),
        ];
        for (arch, model, scale) in nets {
            let graph = model.graph();
            assert!(RescalePlan::fused(graph).deferred() > 0, "{arch}");
            let n = moat_nn::tensor::numel(graph.input_shape());
            let x: Vec<f32> = input(n, 5).into_iter().map(|v| v * scale).collect();
            if arch == "clipped" {
                // Every clip reaches both of its bounds on this input, so both comparisons matter.
                let values = model
                    .run_all_encoded(model.encode_input(&x).map_err(|e| MpcError::invalid("t", e.to_string()))?)
                    .map_err(|e| MpcError::invalid("t", e.to_string()))?;
                let fp = model.fixed();
                for (i, node) in graph.nodes().iter().enumerate() {
                    if let Op::LeakyRelu { .. } | Op::PRelu { .. } = node.op {
                        let negative = values[node.inputs[0].0].iter().filter(|v| fp.is_negative(**v)).count();
                        assert!(negative > 0, "{}: no negative input", node.name);
                    }
                    if let Op::Clip { min, max } = node.op {
                        let out = &values[ValueId::of_node(i).0];
                        for bound in [min, max] {
                            assert!(out.contains(&fp.encode(f64::from(bound))), "{}: never {bound}", node.name);
                        }
                    }
                }
            }
            let real = run_real(Arc::clone(&model), vec![(x.clone(), Reveal::Logits)], Honest)?;
            assert_eq!(real[0], Revealed::Logits(fixed_logits(&model, &x)?), "{arch}: real vs fixed");
            let simulated = SimulatedEngine::new(Arc::clone(&model), 1).infer(&x, Reveal::Logits, &mut Honest)?;
            assert_eq!(real[0], simulated, "{arch}: real vs simulated");
        }
        Ok(())
    }

    #[test]
    fn siguard_reveals_the_same_probabilities_in_both_backends_and_keeps_the_label() -> Result<()> {
        use crate::ring_ops::{Defender, DefenderShape, SiGuardConfig};
        let model = quantized("mlp:16,8", &[12], 5);
        let fixed = model.fixed();
        let shape = DefenderShape { classes: 10, hidden: [6, 4] };
        let mut rng = ChaCha20Rng::seed_from_u64(31);
        let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let [(r1, c1), (r2, c2), (r3, c3)] = shape.layers();
        let (w1, w2, w3, b1, b2, b3) = (draw(r1 * c1), draw(r2 * c2), draw(r3 * c3), draw(r1), draw(r2), draw(r3));
        let config = SiGuardConfig { outer: 2, inner: 2, ..Default::default() };
        let make = move || -> Result<SiGuard> {
            let defender = Defender::new(fixed, shape, [&w1, &w2, &w3], [&b1, &b2, &b3])?;
            SiGuard::new(defender, config, 10)
        };
        let x = input(12, 40);
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let mut guard = make()?;
        let handle = std::thread::spawn(move || {
            server.serve_guarded(&mut server_ch, Seed::insecure_from_u64(7), &ServeOptions::default(), &mut guard)
        });
        let mut client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        assert_eq!(client.hello().output, Reveal::Probabilities);
        assert_eq!(client.hello().guard.map(|g| g.shape), Some(shape));
        let refused = client.infer(&mut client_ch, &x, Reveal::Logits, &mut Honest);
        assert_eq!(refused, Err(MpcError::OutputRefused { requested: Reveal::Logits, allowed: Reveal::Probabilities }));
        let real = client.infer(&mut client_ch, &x, Reveal::Probabilities, &mut Honest)?;
        client.close(&mut client_ch)?;
        handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
        let mut simulated = SimulatedEngine::new(Arc::clone(&model), 2).with_guard(Box::new(make()?));
        assert_eq!(real, simulated.infer(&x, Reveal::Probabilities, &mut Honest)?);
        assert_eq!(real.label(fixed), argmax_ring(fixed, &fixed_logits(&model, &x)?));
        // A defender of the wrong width is refused before any query.
        let narrow = DefenderShape { classes: 4, hidden: [6, 4] };
        let bad = Defender::new(fixed, narrow, [&[0.0; 24], &[0.0; 24], &[0.0; 4]], [&[0.0; 6], &[0.0; 4], &[0.0]]);
        assert!(SiGuard::new(bad?, config, 10).is_err());
        Ok(())
    }

    /// What a behaviour saw at the ReLUs: `(node, point, frac_bits)`.
    type Scales = Arc<Mutex<Vec<(usize, TamperPoint, u32)>>>;

    /// SqueezeNet's pooling pattern: stem conv + ReLU + 3×3/2 max pool, a fire module whose
    /// concatenated expand ReLUs feed a 3×3/2 max pool, global average pool, dense.
    fn pooled_fire() -> Arc<QuantizedGraph> {
        let build = || -> moat_nn::Result<QuantizedGraph> {
            let mut b = zoo::GraphBuilder::new(&[3, 15, 15], 9);
            let x = b.conv("stem", ValueId::INPUT, 8, 3, 1, 1)?;
            let x = b.relu(x)?;
            let x = b.max_pool(x, 3, 2)?;
            let x = b.fire("fire", x, 4, 6)?;
            let x = b.max_pool(x, 3, 2)?;
            let x = b.global_avg_pool(x)?;
            let out = b.dense("fc", x, 5)?;
            QuantizedGraph::new(&b.finish("pooled-fire", out)?, FixedPoint::default())
        };
        Arc::new(build().unwrap_or_else(|e| panic!("pooled fire: {e}")))
    }

    #[test]
    fn an_honest_client_runs_the_relus_after_their_pools_with_the_same_result_and_fewer_bytes() -> Result<()> {
        for model in [pooled_fire(), quantized("lenet5:x0.5", &[1, 28, 28], 5)] {
            let graph = model.graph();
            let plan = RescalePlan::pool_first(graph);
            assert!(plan.moved_relus() >= 2, "{}", graph.name());
            let n = moat_nn::tensor::numel(graph.input_shape());
            let queries = vec![(input(n, 11), Reveal::Logits), (input(n, 12), Reveal::Label)];
            // A behaviour that may tamper (it does not, here) keeps the tamper points: the
            // fused plan. The honest client asks for the pool-first plan.
            let watching = FnBehaviour(|_: &ShareSite<'_>, _: &mut [u64]| {});
            let (fused, fused_stats) =
                run_real_with(Arc::clone(&model), ServeOptions::default(), queries.clone(), watching)?;
            let (first, first_stats) =
                run_real_with(Arc::clone(&model), ServeOptions::default(), queries.clone(), Honest)?;
            let offered_not = ServeOptions { pool_first: false, ..Default::default() };
            let (declined, declined_stats) = run_real_with(Arc::clone(&model), offered_not, queries.clone(), Honest)?;
            for (((x, reveal), a), (b, c)) in queries.iter().zip(&first).zip(fused.iter().zip(&declined)) {
                let expected = fixed_logits(&model, x)?;
                match reveal {
                    Reveal::Logits => assert_eq!(a, &Revealed::Logits(expected)),
                    _ => assert_eq!(a.label(model.fixed()), argmax_ring(model.fixed(), &expected)),
                }
                assert_eq!(a, b);
                assert_eq!(a, c);
            }
            // The queries' bytes (the hellos differ in their `pool_first` field).
            let queried = |s: &StatsSnapshot| s.total.bytes_total() - s.sum_prefix("setup").bytes_total();
            let (pooled, tampering, plain) = (queried(&first_stats), queried(&fused_stats), queried(&declined_stats));
            assert_eq!(tampering, plain, "{}: the fused plan either way", graph.name());
            assert!(pooled < plain, "{}: {pooled} bytes pool-first, {plain} fused", graph.name());
            // The moved ReLUs send nothing; their pools carry the ReLU on the pooled values.
            for (i, node) in graph.nodes().iter().enumerate() {
                if plan.moves_relu(i) {
                    let phase = format!("{i}:{}", node.name);
                    assert_eq!(first_stats.sum_prefix(&phase).bytes_total(), 0, "{phase}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_request_for_the_pool_first_plan_is_refused_where_it_is_not_offered() -> Result<()> {
        let model = pooled_fire();
        let options = ServeOptions { pool_first: false, ..Default::default() };
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let handle =
            std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(7), &options));
        let client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        assert!(!client.hello().pool_first);
        client_ch.send(&[REQUEST_LABEL | REQUEST_POOL_FIRST])?;
        client_ch.flush()?;
        let result = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))?;
        assert!(matches!(&result, Err(MpcError::PeerMisbehaved { .. })), "{result:?}");
        // Hardening acts at the ReLU and pool inputs: a hardened server never offers the plan.
        let hardened = ServeOptions { hardening: Hardening::uniform(0.001), ..Default::default() };
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(model, 4096)?;
        let handle =
            std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(7), &hardened));
        let client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        assert!(!client.hello().pool_first);
        client.close(&mut client_ch)?;
        handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
        Ok(())
    }

    #[test]
    fn a_relu_behind_a_deferred_layer_sees_2f_and_pays_the_nonnegative_truncation() -> Result<()> {
        let model = quantized("resnet20:x0.25", &[3, 16, 16], 2);
        let (graph, fixed) = (model.graph(), model.fixed());
        let f = fixed.frac_bits();
        let plan = RescalePlan::fused(graph);
        let seen: Scales = Arc::default();
        let record = Arc::clone(&seen);
        let behaviour = FnBehaviour(move |site: &ShareSite<'_>, _: &mut [u64]| {
            if site.op == OpKind::Relu
                && let Ok(mut s) = record.lock()
            {
                s.push((site.node, site.point, site.frac_bits));
            }
        });
        let queries = vec![(input(768, 4), Reveal::Logits)];
        let (_, stats) = run_real_with(Arc::clone(&model), ServeOptions::default(), queries, behaviour)?;
        let seen = seen.lock().map_err(|_| MpcError::invalid("test", "poisoned"))?.clone();
        let config = Config::default();
        let mut fused = 0;
        for (index, node) in graph.nodes().iter().enumerate() {
            if !matches!(node.op, Op::Relu) {
                continue;
            }
            let truncates = plan.truncates_after_relu(index);
            fused += usize::from(truncates);
            let pre = if truncates { 2 * f } else { f };
            assert!(seen.contains(&(index, TamperPoint::PreActivation, pre)), "{}: {seen:?}", node.name);
            assert!(seen.contains(&(index, TamperPoint::PostActivation, f)), "{}", node.name);
            let n = moat_nn::tensor::numel(graph.shape(ValueId::of_node(index)));
            let phase = format!("{index}:{}", node.name);
            let got = stats.phases.get(&phase).copied().unwrap_or_default();
            assert_eq!(got.bytes_total(), cost::relu(n, fixed, &config).bytes_total(), "{}", node.name);
            // The truncation is counted in its own sub-phase of the node's.
            let trunc = stats
                .phases
                .get(&format!("{phase}{}", crate::engine::layer::TRUNCATION_SUBPHASE))
                .copied()
                .unwrap_or_default();
            let want = if truncates { cost::truncate_nonnegative(n, fixed, f, &config).bytes_total() } else { 0 };
            assert_eq!(trunc.bytes_total(), want, "{}", node.name);
            assert_eq!(stats.sum_prefix(&phase).bytes_total(), got.bytes_total() + want);
        }
        // Every ReLU of a ResNet reads a conv or a residual sum behind one.
        assert!(fused > 10, "{fused} fused ReLUs");
        Ok(())
    }

    #[test]
    fn the_same_tampering_has_the_same_effect_in_both_backends() -> Result<()> {
        let model = quantized("lenet5:x0.5", &[1, 28, 28], 4);
        let fp = model.fixed();
        let x = input(784, 9);
        // 2.5 in real units at the share's own scale (2f behind a deferred truncation).
        let tamper = move |site: &ShareSite<'_>, share: &mut [u64]| {
            let delta = fp.encode_at(2.5, site.frac_bits);
            if site.point == TamperPoint::PreActivation && site.op == OpKind::Relu {
                share[3] = share[3].wrapping_add(delta);
            }
            if site.point == TamperPoint::Logits {
                share[1] = share[1].wrapping_add(delta);
            }
        };
        let real = run_real(Arc::clone(&model), vec![(x.clone(), Reveal::Logits)], FnBehaviour(tamper))?;
        let encoded = model.encode_input(&x).map_err(|e| MpcError::invalid("test", e.to_string()))?;
        let mut trace = Trace::default();
        let simulated = SimulatedEngine::new(Arc::clone(&model), 5).infer_encoded(
            encoded,
            Reveal::Logits,
            &mut FnBehaviour(tamper),
            Some(&mut trace),
        )?;
        assert_eq!(real[0], simulated);
        assert_ne!(real[0], SimulatedEngine::new(model, 5).infer(&x, Reveal::Logits, &mut Honest)?);
        Ok(())
    }

    #[test]
    fn server_noise_moves_the_logits_within_its_bound_and_is_fresh_per_query() -> Result<()> {
        // fc1 → ReLU (fused: noise at 2f) → fc2 = logits.
        let model = quantized("mlp:16", &[12], 6);
        let (graph, fixed) = (model.graph(), model.fixed());
        let f = fixed.frac_bits();
        let (a, b) = (0.01, 0.02);
        let options =
            ServeOptions { hardening: Hardening { activation_noise: a, logit_noise: b }, ..Default::default() };
        // The bound: the noise on the ReLU input (≤ round(a·2^2f) at 2f) moves the truncated
        // ReLU output by at most ⌈that / 2^f⌉ ulps; fc2 multiplies by Σ|w| and truncates
        // (≤ ⌈·/2^f⌉), then the logit noise adds ≤ round(b·2^f).
        let logits_node = graph.logits().node().unwrap_or(0);
        let QuantizedLayer::Dense { weight, .. } = &model.layers()[logits_node] else {
            return Err(MpcError::invalid("test", "the logits of an MLP come from a dense layer"));
        };
        let hidden = weight.len() / 10;
        let relu_step = ((a * (2.0 * f as f64).exp2()).round() as u64).div_ceil(1 << f) as i64;
        let bounds: Vec<i64> = weight
            .chunks(hidden)
            .map(|row| {
                let l1: i64 = row.iter().map(|w| fixed.to_signed(*w).abs()).sum();
                ((l1 * relu_step) as u64).div_ceil(1 << f) as i64 + (b * (f as f64).exp2()).round() as i64
            })
            .collect();
        let xs: Vec<Vec<f32>> = (0..8).map(|s| input(12, 100 + s)).collect();
        let mut queries: Vec<(Vec<f32>, Reveal)> = xs.iter().map(|x| (x.clone(), Reveal::Logits)).collect();
        queries.push((xs[0].clone(), Reveal::Logits));
        let (noisy, _) = run_real_with(Arc::clone(&model), options, queries.clone(), Honest)?;
        let mut moved = 0;
        for ((x, _), got) in queries.iter().zip(&noisy) {
            let Revealed::Logits(got) = got else { return Err(MpcError::invalid("test", "asked for logits")) };
            let expected = fixed_logits(&model, x)?;
            for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
                let d = fixed.to_signed(fixed.sub(*g, *e)).abs();
                assert!(d <= bounds[k], "logit {k}: moved by {d} > {}", bounds[k]);
                moved += usize::from(d != 0);
            }
        }
        assert!(moved > noisy.len() * 5, "the noise moved only {moved} logits");
        // Fresh per query: the same input twice gets different noise …
        assert_ne!(noisy[0], noisy[8]);
        // … but the stream is seeded by the session seed: the same session replays exactly.
        let (again, _) = run_real_with(Arc::clone(&model), options, queries.clone(), Honest)?;
        assert_eq!(again, noisy);
        // Without noise the answers are the executor's, bit for bit.
        let (plain, _) = run_real_with(model.clone(), ServeOptions::default(), queries.clone(), Honest)?;
        for ((x, _), got) in queries.iter().zip(&plain) {
            assert_eq!(got, &Revealed::Logits(fixed_logits(&model, x)?));
        }
        Ok(())
    }

    /// A cheating server: offsets its share of logit `label` at the reveal point.
    struct ForceLabel {
        label: usize,
        offset: u64,
    }

    impl ServerGuard for ForceLabel {
        fn guard(&mut self, _site: &ShareSite<'_>, _share: &mut [u64]) {}

        fn reveal(&mut self, _output: Reveal, site: &ShareSite<'_>, share: &mut [u64]) {
            assert_eq!(site.point, TamperPoint::Logits);
            share[self.label] = share[self.label].wrapping_add(self.offset);
        }
    }

    #[test]
    fn the_same_server_guard_reveals_the_same_outputs_in_both_backends() -> Result<()> {
        let model = quantized("lenet5:x0.5", &[1, 28, 28], 5);
        let fp = model.fixed();
        // The client's randomness: a fixed, non-additive tampering (share-dependent), so the
        // simulated backend splits every value and the guard acts on the server's half.
        let tamper = move |site: &ShareSite<'_>, share: &mut [u64]| {
            if site.point == TamperPoint::PreActivation && site.op == OpKind::Relu {
                share[2] = share[2].wrapping_add(fp.encode_at(0.75, site.frac_bits));
                share[0] ^= 1;
            }
        };
        let xs: Vec<Vec<f32>> = (0..4).map(|s| input(784, 300 + s)).collect();
        let mut queries: Vec<(Vec<f32>, Reveal)> = xs.iter().map(|x| (x.clone(), Reveal::Logits)).collect();
        queries.push((xs[1].clone(), Reveal::Label));
        let guards: Vec<(&str, GuardFactory)> = vec![
            (
                "hardening",
                Arc::new(move || {
                    Box::new(HardeningGuard::new(Hardening::uniform(0.05), fp, ChaCha20Rng::seed_from_u64(42)))
                }),
            ),
            ("cheating", Arc::new(move || Box::new(ForceLabel { label: 3, offset: fp.encode(500.0) }))),
        ];
        let honest = {
            let mut engine = SimulatedEngine::new(Arc::clone(&model), 9);
            queries.iter().map(|(x, r)| engine.infer(x, *r, &mut FnBehaviour(tamper))).collect::<Result<Vec<_>>>()?
        };
        for (name, make) in guards {
            let (mut server_ch, mut client_ch) = memory::pair(Default::default());
            let server = ServerModel::new(Arc::clone(&model), 4096)?;
            let mut guard = make();
            let handle = std::thread::spawn(move || {
                server.serve_guarded(&mut server_ch, Seed::insecure_from_u64(7), &ServeOptions::default(), &mut guard)
            });
            let mut client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
            let mut real = Vec::new();
            for (x, reveal) in &queries {
                real.push(client.infer(&mut client_ch, x, *reveal, &mut FnBehaviour(tamper))?);
            }
            client.close(&mut client_ch)?;
            handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
            let mut engine = SimulatedEngine::new(Arc::clone(&model), 11).with_guard(make());
            let simulated = queries
                .iter()
                .map(|(x, r)| engine.infer(x, *r, &mut FnBehaviour(tamper)))
                .collect::<Result<Vec<_>>>()?;
            assert_eq!(real, simulated, "{name}: real vs simulated");
            // The guard did change what the client learns.
            assert_ne!(real, honest, "{name}");
            if name == "cheating" {
                assert!(real.iter().all(|r| r.label(fp) == Some(3)), "{real:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_label_only_session_refuses_logits_before_any_work() -> Result<()> {
        let model = quantized("mlp:16", &[12], 2);
        let x = input(12, 1);
        let options = ServeOptions { output: Reveal::Label, ..Default::default() };
        // An honest client: refused locally from the hello, nothing sent; labels still work.
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let handle =
            std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(7), &options));
        let mut client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        assert_eq!(client.hello().output, Reveal::Label);
        let sent = client_ch.stats().total().bytes_sent;
        let refused = client.infer(&mut client_ch, &x, Reveal::Logits, &mut Honest);
        assert_eq!(refused, Err(MpcError::OutputRefused { requested: Reveal::Logits, allowed: Reveal::Label }));
        let refused = client.infer(&mut client_ch, &x, Reveal::Probabilities, &mut Honest);
        assert_eq!(refused, Err(MpcError::OutputRefused { requested: Reveal::Probabilities, allowed: Reveal::Label }));
        let unsupported = client.infer(&mut client_ch, &x, Reveal::TopK(2), &mut Honest);
        assert_eq!(unsupported, Err(MpcError::OutputUnsupported { requested: Reveal::TopK(2) }));
        assert_eq!(client_ch.stats().total().bytes_sent, sent, "a refused query sends nothing");
        let label = client.infer(&mut client_ch, &x, Reveal::Label, &mut Honest)?;
        assert_eq!(label.label(model.fixed()), argmax_ring(model.fixed(), &fixed_logits(&model, &x)?));
        client.close(&mut client_ch)?;
        let served = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
        assert_eq!(served, 1);

        // A client that asks anyway: the server ends the session before the query's work.
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let handle =
            std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(7), &options));
        let _client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        client_ch.send(&[REQUEST_LOGITS])?;
        client_ch.flush()?;
        let result = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))?;
        assert_eq!(result, Err(MpcError::OutputRefused { requested: Reveal::Logits, allowed: Reveal::Label }));
        Ok(())
    }

    #[test]
    fn with_small_server_noise_honest_labels_mostly_agree() -> Result<()> {
        let model = quantized("lenet5:x0.5", &[1, 28, 28], 8);
        let options = ServeOptions { hardening: Hardening::uniform(0.005), ..Default::default() };
        let xs: Vec<Vec<f32>> = (0..12).map(|s| input(784, 200 + s)).collect();
        let queries = xs.iter().map(|x| (x.clone(), Reveal::Label)).collect();
        let (labels, _) = run_real_with(Arc::clone(&model), options, queries, Honest)?;
        let mut agree = 0;
        for (x, got) in xs.iter().zip(&labels) {
            agree += usize::from(got.label(model.fixed()) == argmax_ring(model.fixed(), &fixed_logits(&model, x)?));
        }
        assert!(agree >= 10, "{agree}/12 labels agree");
        Ok(())
    }

    #[test]
    fn a_client_that_disconnects_mid_layer_ends_the_server_session_with_an_error() -> Result<()> {
        let model = quantized("mlp:16", &[12], 1);
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(model, 4096)?;
        let handle = std::thread::spawn(move || server.serve(&mut server_ch, Seed::insecure_from_u64(7)));
        let _client = ClientSession::connect(&mut client_ch, Seed::insecure_from_u64(8))?;
        client_ch.send(&[REQUEST_LABEL])?;
        client_ch.flush()?;
        drop(client_ch);
        let result = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))?;
        assert!(matches!(result, Err(MpcError::Transport(_))), "{result:?}");
        Ok(())
    }
}
