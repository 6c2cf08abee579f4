//! What an attack queries: one label-only secure inference with the client's behaviour.
//!
//! An [`Oracle`] exposes exactly what a client of the secure-inference service has: the
//! public architecture (the [`moat_nn::Skeleton`] the server sends in its hello, instantiated
//! with zero weights), the fixed-point setting, and one label per query — computed by the
//! two-party protocol while the client's [`ClientBehaviour`] alters its shares. The attack
//! code is generic over the oracle, so the same code runs against the simulated engine (the
//! ideal functionalities, fast enough for 10⁵–10⁹ queries) and against a real server.

use std::sync::Arc;

use moat_mpc::engine::{ClientBehaviour, ClientSession, Hardening, Reveal, Revealed, SimulatedEngine};
use moat_mpc::transport::Channel;
use moat_nn::QuantizedGraph;

use crate::error::{AttackError, Result};

/// A label-only secure-inference service as its client sees it.
pub trait Oracle {
    /// The public architecture: the folded graph the server runs, with zero weights.
    fn architecture(&self) -> &QuantizedGraph;
    /// One query of an encoded input (ring elements at scale 2^f) with `behaviour` acting on
    /// the client's shares; returns the revealed label.
    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> Result<usize>;
    /// Queries made so far.
    fn queries(&self) -> u64;
}

/// The simulated two-party engine as an oracle. The victim's weights stay inside the engine;
/// the attack sees only the zero-weight architecture.
pub struct SimulatedOracle {
    engine: SimulatedEngine,
    public: QuantizedGraph,
}

impl SimulatedOracle {
    /// An oracle serving `model` with server-side `hardening`; `seed` drives the engine's
    /// share randomness and noise.
    pub fn new(model: Arc<QuantizedGraph>, seed: u64, hardening: Hardening) -> Result<Self> {
        let public = public_architecture(&model)?;
        Ok(Self { engine: SimulatedEngine::new(model, seed).with_hardening(hardening), public })
    }
}

/// The zero-weight copy of `model`'s architecture that a client reconstructs from the hello.
pub fn public_architecture(model: &QuantizedGraph) -> Result<QuantizedGraph> {
    let graph = model.graph().skeleton().instantiate()?;
    Ok(QuantizedGraph::new(&graph, model.fixed())?)
}

impl Oracle for SimulatedOracle {
    fn architecture(&self) -> &QuantizedGraph {
        &self.public
    }

    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> Result<usize> {
        let revealed = self.engine.infer_encoded(input.to_vec(), Reveal::Label, behaviour, None)?;
        label(revealed)
    }

    fn queries(&self) -> u64 {
        self.engine.queries()
    }
}

/// A real session with a secure-inference server over a channel (two processes in
/// production): the client half of the protocol, with the attack's behaviour.
pub struct RemoteOracle<C: Channel> {
    channel: C,
    session: ClientSession,
    queries: u64,
}

impl<C: Channel> RemoteOracle<C> {
    /// Opens a session on `channel` (reads the hello, sets up OT and HE); `seed` drives the
    /// client's keys and shares.
    pub fn connect(mut channel: C, seed: moat_mpc::Seed) -> Result<Self> {
        let session = ClientSession::connect(&mut channel, seed)?;
        Ok(Self { channel, session, queries: 0 })
    }

    /// Ends the session.
    pub fn close(mut self) -> Result<()> {
        self.session.close(&mut self.channel)?;
        Ok(())
    }

    /// The channel (for its traffic statistics).
    pub fn channel(&self) -> &C {
        &self.channel
    }
}

impl<C: Channel> Oracle for RemoteOracle<C> {
    fn architecture(&self) -> &QuantizedGraph {
        self.session.architecture()
    }

    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> Result<usize> {
        self.queries += 1;
        let revealed = self.session.infer_encoded(&mut self.channel, input.to_vec(), Reveal::Label, behaviour)?;
        label(revealed)
    }

    fn queries(&self) -> u64 {
        self.queries
    }
}

fn label(revealed: Revealed) -> Result<usize> {
    match revealed {
        Revealed::Label(l) => Ok(l),
        Revealed::Logits(_) | Revealed::Probabilities(_) => {
            Err(AttackError::Search("the oracle revealed a class vector, not a label".into()))
        }
    }
}
