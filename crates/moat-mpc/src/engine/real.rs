//! The real backend: the server and the client as two parties over a [`Channel`] (separate
//! processes over TCP in production; threads over the in-memory pair in tests).
//!
//! ## Session
//!
//! 1. **Hello** (server → client, one JSON frame): the protocol version, the model's public
//!    [`Skeleton`] (the batch-norm-folded graph the server runs, no weights), the fixed-point
//!    setting and the HE ring degree. The client instantiates a zero-weight copy of the graph:
//!    node indices, shapes, pooling windows and HE plans then agree on both sides.
//! 2. **Setup**: IKNP base OTs in both directions ([`Session::setup`]), then the client's BFV
//!    public key ([`HeClient::setup`]).
//! 3. **Queries**, any number: the client sends a one-byte request (label or logits), then
//!    both walk the graph node by node — linear layers by [`crate::he`] followed by exact
//!    truncation, ReLU and max pool by [`crate::protocols`] with the client's tamper points,
//!    additions, concatenations and reshapes locally — and end with the argmax revealed to the
//!    client only, or with the server's logit share sent to the client.
//! 4. **End**: the client sends the end byte (or closes the channel).
//!
//! What each party learns is what [`crate::he::linear`] and [`crate::protocols`] state for
//! each step: the server nothing about the input, the client the label (or the logits) and
//! the public architecture. Traffic is attributed to one phase per node (`"{index}:{name}"`),
//! plus `"setup"` and `"output"`, so per-layer bytes and rounds come from the channel's
//! [`crate::transport::Stats`].

use std::sync::Arc;

use moat_nn::graph::{Op, ValueId};
use moat_nn::kernels::pool_windows;
use moat_nn::skeleton::Skeleton;
use moat_nn::{FixedPoint, QuantizedGraph, QuantizedLayer};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::hook::{ClientBehaviour, Honest, ShareSite, TamperPoint};
use super::{Reveal, Revealed};
use crate::error::{MpcError, Result};
use crate::he::encoding::Plan;
use crate::he::linear::{HeClient, HeServer, ServerLayer, shape_of};
use crate::he::params::HeParams;
use crate::protocols::layer::{LayerSite, label_layer, max_pool_layer, relu_layer, tamper_share};
use crate::protocols::session::Session;
use crate::protocols::truncate::truncate;
use crate::shares::{AShare, Party};
use crate::transport::Channel;

/// Version string both parties must agree on.
pub const PROTOCOL: &str = "moat-2pc/1";

const REQUEST_END: u8 = 0;
const REQUEST_LABEL: u8 = 1;
const REQUEST_LOGITS: u8 = 2;

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
    params: HeParams,
    layers: Vec<Option<ServerLayer>>,
    prepared_bytes: usize,
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
        Ok(Self { model, params, layers, prepared_bytes: used })
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
    /// queries answered. `seed` drives the server's share and OT randomness.
    pub fn serve(&self, ch: &mut dyn Channel, seed: u64) -> Result<u64> {
        let fixed = self.model.fixed();
        let hello = Hello {
            protocol: PROTOCOL.to_string(),
            skeleton: self.model.graph().skeleton(),
            ring_bits: fixed.ring_bits(),
            frac_bits: fixed.frac_bits(),
            he_degree: self.params.degree(),
        };
        let mut seeds = ChaCha20Rng::seed_from_u64(seed);
        ch.set_phase("setup");
        let json = serde_json::to_vec(&hello).map_err(|e| MpcError::invalid("hello", e.to_string()))?;
        ch.send(&json)?;
        let mut session = Session::setup(ch, Party::P0, fixed, seeds.next_u64())?;
        let mut he = HeServer::setup(&self.params, ch, seeds.next_u64())?;
        let mut queries = 0;
        loop {
            ch.set_phase("request");
            let request = match ch.recv() {
                Ok(bytes) => bytes,
                // A client that hangs up between queries ends its session normally.
                Err(crate::transport::TransportError::PeerClosed) => break,
                Err(e) => return Err(e.into()),
            };
            let reveal = match request.as_slice() {
                [REQUEST_END] => break,
                [REQUEST_LABEL] => Reveal::Label,
                [REQUEST_LOGITS] => Reveal::Logits,
                other => return Err(MpcError::peer("request", format!("unknown request {other:?}"))),
            };
            let input = vec![0; moat_nn::tensor::numel(self.model.graph().input_shape())];
            let mut party = Party0 { he: &mut he, layers: &self.layers };
            let input = AShare::from_wrapping(fixed, input);
            walk(&self.model, &mut session, ch, &mut party, input, reveal, &mut Honest, None)?;
            queries += 1;
        }
        Ok(queries)
    }
}

/// Wall time of one node in the last inference (both parties advance in lock step, so the
/// client's time of a node is the protocol's time for it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// Node index in the folded graph.
    pub node: usize,
    /// Node name (also the traffic phase `"{node}:{name}"`).
    pub name: String,
    /// Op kind.
    pub op: String,
    /// Seconds.
    pub seconds: f64,
}

/// The client's side of a session.
pub struct ClientSession {
    model: QuantizedGraph,
    session: Session,
    he: HeClient,
    plans: Vec<Option<Plan>>,
    hello: Hello,
    timings: Vec<NodeTiming>,
}

impl ClientSession {
    /// Opens a session: reads the server's hello, sets up OT and HE. `seed` drives the
    /// client's keys, shares and OT choices.
    pub fn connect(ch: &mut dyn Channel, seed: u64) -> Result<Self> {
        let mut seeds = ChaCha20Rng::seed_from_u64(seed);
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
        let params = he_params(hello.he_degree, fixed)?;
        let plans = (0..model.graph().nodes().len())
            .map(|i| shape_of(&model, i)?.map(|shape| params.plan(shape)).transpose())
            .collect::<Result<_>>()?;
        let session = Session::setup(ch, Party::P1, fixed, seeds.next_u64())?;
        let mut he = HeClient::new(&params, seeds.next_u64())?;
        he.setup(ch)?;
        Ok(Self { model, session, he, plans, hello, timings: Vec::new() })
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
        ch.set_phase("request");
        ch.send(&[match reveal {
            Reveal::Label => REQUEST_LABEL,
            Reveal::Logits => REQUEST_LOGITS,
        }])?;
        let fixed = self.model.fixed();
        let mut party = Party1 { he: &mut self.he, plans: &self.plans };
        self.timings.clear();
        let input = AShare::from_wrapping(fixed, input);
        let timings = Some(&mut self.timings);
        let out = walk(&self.model, &mut self.session, ch, &mut party, input, reveal, behaviour, timings)?;
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
    plans: &'a [Option<Plan>],
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

/// Both parties' walk over the graph: the same steps in the same order. Returns what the
/// client learns (`None` for the server); records per-node wall times into `timings`.
#[expect(clippy::too_many_arguments, reason = "one call site per party; a struct would only rename them")]
fn walk(
    model: &QuantizedGraph,
    session: &mut Session,
    ch: &mut dyn Channel,
    party: &mut dyn LinearParty,
    input: AShare,
    reveal: Reveal,
    behaviour: &mut dyn ClientBehaviour,
    mut timings: Option<&mut Vec<NodeTiming>>,
) -> Result<Option<Revealed>> {
    let graph = model.graph();
    let fixed = model.fixed();
    let mut values: Vec<Option<AShare>> = vec![None; graph.nodes().len() + 1];
    values[0] = Some(input);
    let mut readers = graph.reader_counts();
    let missing = |name: &str| MpcError::invalid("walk", format!("an input of node '{name}' was released early"));
    for (index, node) in graph.nodes().iter().enumerate() {
        let started = std::time::Instant::now();
        ch.set_phase(&format!("{index}:{}", node.name));
        let x = values[node.inputs[0].0].as_ref().ok_or_else(|| missing(&node.name))?;
        let site = LayerSite {
            node: index,
            name: &node.name,
            input_shape: graph.shape(node.inputs[0]),
            output_shape: graph.shape(ValueId::of_node(index)),
        };
        let y = match (&node.op, &model.layers()[index]) {
            (op, _) if op.is_linear() => {
                let pre = party.linear(ch, index, x)?;
                truncate(session, ch, &pre)?
            }
            (Op::Relu, _) => relu_layer(session, ch, x, &site, behaviour)?,
            (Op::MaxPool(_), QuantizedLayer::MaxPool { window, channels }) => {
                max_pool_layer(session, ch, x, &pool_windows(*channels, *window), &site, behaviour)?
            }
            (Op::Add, _) => {
                let z = values[node.inputs[1].0].as_ref().ok_or_else(|| missing(&node.name))?;
                x.try_add(z)?
            }
            (Op::Concat, _) => {
                let mut joined = Vec::new();
                for input in &node.inputs {
                    joined.extend_from_slice(values[input.0].as_ref().ok_or_else(|| missing(&node.name))?.values());
                }
                AShare::from_wrapping(fixed, joined)
            }
            (Op::Flatten | Op::Reshape(_) | Op::Softmax, _) => x.clone(),
            (op, _) => {
                return Err(MpcError::invalid(
                    "walk",
                    format!("node '{}': no two-party protocol for {}", node.name, op.kind()),
                ));
            }
        };
        for input in &node.inputs {
            readers[input.0] -= 1;
            if readers[input.0] == 0 {
                values[input.0] = None;
            }
        }
        values[ValueId::of_node(index).0] = Some(y);
        if let Some(t) = timings.as_deref_mut() {
            let seconds = started.elapsed().as_secs_f64();
            t.push(NodeTiming { node: index, name: node.name.clone(), op: node.op.kind().to_string(), seconds });
        }
    }

    let started = std::time::Instant::now();
    ch.set_phase("output");
    let logits_value = graph.logits();
    let logits = values[logits_value.0].take().ok_or_else(|| missing("output"))?;
    let producer = logits_value.node().unwrap_or(0);
    let (name, op) = graph.nodes().get(producer).map(|n| (n.name.as_str(), n.op.kind())).unwrap_or(("input", "Input"));
    let site = ShareSite { point: TamperPoint::Logits, node: producer, name, op, shape: graph.shape(logits_value) };
    let revealed = match reveal {
        Reveal::Label => label_layer(session, ch, &logits, &site, behaviour)?.map(Revealed::Label),
        Reveal::Logits => {
            let logits = tamper_share(session, &logits, &site, behaviour);
            let bits = fixed.ring_bits();
            if session.party() == Party::P0 {
                ch.send_ring(logits.values(), bits)?;
                ch.flush()?;
                None
            } else {
                let other = ch.recv_ring(logits.len(), bits)?;
                let opened = logits.values().iter().zip(&other).map(|(a, b)| fixed.add(*a, *b)).collect();
                Some(Revealed::Logits(opened))
            }
        }
    };
    if let Some(t) = timings {
        let seconds = started.elapsed().as_secs_f64();
        t.push(NodeTiming { node: graph.nodes().len(), name: "output".into(), op: "Output".into(), seconds });
    }
    Ok(revealed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::hook::FnBehaviour;
    use crate::engine::simulated::{SimulatedEngine, Trace};
    use crate::transport::memory;
    use moat_nn::zoo;
    use rand::Rng;

    fn quantized(arch: &str, shape: &[usize], seed: u64) -> Arc<QuantizedGraph> {
        let arch = arch.parse().unwrap_or(zoo::Architecture::Mlp { hidden: vec![4] });
        let graph = zoo::build(&arch, shape, 10, seed).unwrap_or_else(|e| panic!("build: {e}"));
        Arc::new(QuantizedGraph::new(&graph, FixedPoint::default()).unwrap_or_else(|e| panic!("quantize: {e}")))
    }

    /// Runs `queries` through the real protocol (two threads, in-memory channel).
    fn run_real(
        model: Arc<QuantizedGraph>,
        queries: Vec<(Vec<f32>, Reveal)>,
        mut behaviour: impl ClientBehaviour + Send + 'static,
    ) -> Result<Vec<Revealed>> {
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(model, 4096)?;
        let handle = std::thread::spawn(move || server.serve(&mut server_ch, 7));
        let mut client = ClientSession::connect(&mut client_ch, 8)?;
        let mut out = Vec::new();
        for (x, reveal) in queries {
            out.push(client.infer(&mut client_ch, &x, reveal, &mut behaviour)?);
        }
        client.close(&mut client_ch)?;
        let served = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))??;
        assert_eq!(served as usize, out.len());
        Ok(out)
    }

    fn input(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn real_protocol_equals_the_simulated_backend() -> Result<()> {
        for (arch, shape) in
            [("mlp:16,8", vec![12]), ("lenet5:x0.5", vec![1, 28, 28]), ("resnet20:x0.25", vec![3, 16, 16])]
        {
            let model = quantized(arch, &shape, 3);
            let n = moat_nn::tensor::numel(&shape);
            let queries =
                vec![(input(n, 1), Reveal::Logits), (input(n, 2), Reveal::Label), (input(n, 3), Reveal::Logits)];
            let real = run_real(Arc::clone(&model), queries.clone(), Honest)?;
            let mut simulated = SimulatedEngine::new(Arc::clone(&model), 1);
            for ((x, reveal), got) in queries.iter().zip(&real) {
                assert_eq!(got, &simulated.infer(x, *reveal, &mut Honest)?, "{arch}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_same_tampering_has_the_same_effect_in_both_backends() -> Result<()> {
        let model = quantized("lenet5:x0.5", &[1, 28, 28], 4);
        let fp = model.fixed();
        let x = input(784, 9);
        let delta = fp.encode(2.5);
        let tamper = move |site: &ShareSite<'_>, share: &mut [u64]| {
            if site.point == TamperPoint::PreActivation && site.op == "Relu" {
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
    fn a_client_that_disconnects_mid_layer_ends_the_server_session_with_an_error() -> Result<()> {
        let model = quantized("mlp:16", &[12], 1);
        let (mut server_ch, mut client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(model, 4096)?;
        let handle = std::thread::spawn(move || server.serve(&mut server_ch, 7));
        let _client = ClientSession::connect(&mut client_ch, 8)?;
        client_ch.send(&[REQUEST_LABEL])?;
        client_ch.flush()?;
        drop(client_ch);
        let result = handle.join().map_err(|_| MpcError::invalid("test", "server thread panicked"))?;
        assert!(matches!(result, Err(MpcError::Transport(_))), "{result:?}");
        Ok(())
    }
}
