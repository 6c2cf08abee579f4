//! What an attack queries: one label-only secure inference with the client's behaviour.
//!
//! An [`Oracle`] exposes exactly what a client of the secure-inference service has: the
//! public architecture (the [`moat_nn::Skeleton`] the server sends in its hello, instantiated
//! with zero weights), the fixed-point setting, and one label per query — computed by the
//! two-party protocol while the client's [`ClientBehaviour`] alters its shares. The attack
//! code is generic over the oracle, so the same code runs against the simulated engine (the
//! ideal functionalities, fast enough for 10⁵–10⁹ queries) and against a real server.

use std::sync::Arc;

use moat_client::{RenewingSession, SecureSession};
use moat_mpc::engine::{ClientBehaviour, Hardening, Reveal, Revealed, SimulatedEngine};
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
pub struct SimulatedTamperOracle {
    engine: SimulatedEngine,
    public: QuantizedGraph,
}

impl SimulatedTamperOracle {
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

impl Oracle for SimulatedTamperOracle {
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

/// A real secure session as the oracle (two processes in production): the client half of the
/// protocol, with the attack's behaviour, over whatever connection the session was opened on
/// (a tokenless `moat secure server`, an admitted session, an in-process channel).
pub struct SessionTamperOracle {
    session: SecureSession,
    queries: u64,
}

impl SessionTamperOracle {
    /// The oracle over an open session.
    pub fn new(session: SecureSession) -> Self {
        Self { session, queries: 0 }
    }

    /// The session (for its traffic).
    pub fn session(&self) -> &SecureSession {
        &self.session
    }

    /// Ends the session.
    pub fn close(self) -> Result<()> {
        self.session.close()?;
        Ok(())
    }
}

impl Oracle for SessionTamperOracle {
    fn architecture(&self) -> &QuantizedGraph {
        self.session.protocol().architecture()
    }

    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> Result<usize> {
        self.queries += 1;
        label(self.session.infer_encoded_with(input.to_vec(), Reveal::Label, behaviour)?)
    }

    fn queries(&self) -> u64 {
        self.queries
    }
}

/// A `moat serve` service's secure sessions as the oracle, as a key holder: a new session
/// (charged to the key) whenever the last one's grant is used up, until the service refuses
/// ([`AttackError::Refused`]); a timeout or a broken connection is [`AttackError::Service`].
pub struct ServiceTamperOracle {
    sessions: RenewingSession,
    architecture: QuantizedGraph,
}

impl ServiceTamperOracle {
    /// Opens the first session.
    pub fn open(sessions: RenewingSession) -> Result<Self> {
        let architecture = sessions
            .architecture()
            .cloned()
            .ok_or_else(|| AttackError::Service("the service opened no session".into()))?;
        Ok(Self { sessions, architecture })
    }

    /// Ends the open session (its unused queries go back to the key).
    pub fn close(self) -> Result<()> {
        self.sessions.close()?;
        Ok(())
    }
}

impl Oracle for ServiceTamperOracle {
    fn architecture(&self) -> &QuantizedGraph {
        &self.architecture
    }

    fn query(&mut self, input: &[u64], behaviour: &mut dyn ClientBehaviour) -> Result<usize> {
        label(self.sessions.infer_encoded_with(input.to_vec(), Reveal::Label, behaviour)?)
    }

    fn queries(&self) -> u64 {
        self.sessions.queries()
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
