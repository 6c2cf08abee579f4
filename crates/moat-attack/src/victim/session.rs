//! A real secure session as a membership-inference victim, over the real two-party protocol
//! (admitted by a `moat serve`, direct to a `moat secure server`, or on any channel), in one
//! of two modes:
//!
//! * [`SessionVictim::new`]: the service reveals the logits ([`Reveal::Logits`]); the client
//!   decodes them and applies the softmax in f64 — the same answers as
//!   [`super::SimulatedVictim`];
//! * [`SessionVictim::revealing_probabilities`]: the service reveals only the probabilities
//!   of its secure softmax ([`Reveal::Probabilities`], the variant its hello announces:
//!   `exp` or `relu`); the client reads them with [`super::read_ring_probabilities`]. This is
//!   what SIGuard's paper attacks: the MPC softmax's approximation perturbs the vectors.

use moat_client::SecureSession;
use moat_mpc::engine::{Honest, Reveal, Revealed};

use super::{Result, Victim, VictimError, check_class_vector, read_ring_probabilities, softmax};

/// What the victim is called in reports (revealing logits; `secure-2pc-exp`, `secure-2pc-spline`,
/// `secure-2pc-relu` revealing the secure softmax's probabilities).
const NAME: &str = "secure-2pc";

/// An open secure session whose queries reveal the logits or the probabilities.
pub struct SessionVictim {
    session: SecureSession,
    classes: usize,
    reveal: Reveal,
    name: String,
}

impl SessionVictim {
    /// A victim over `session` whose queries reveal the logits, checked to output `classes`
    /// values (from the architecture the server announced) before any query.
    pub fn new(session: SecureSession, classes: usize) -> Result<Self> {
        Self::checked(session, classes, Reveal::Logits, NAME.into())
    }

    /// A victim over `session` whose queries reveal the probabilities of the server's secure
    /// softmax (named `secure-2pc-{softmax}` after the variant its hello announces, or
    /// `secure-2pc-siguard` when the hello announces SIGuard at the reveal point), checked
    /// before any query to output `classes` values and to be allowed to reveal probabilities.
    pub fn revealing_probabilities(session: SecureSession, classes: usize) -> Result<Self> {
        let hello = session.protocol().hello();
        let name = match hello.guard {
            Some(_) => format!("{NAME}-siguard"),
            None => format!("{NAME}-{}", hello.softmax),
        };
        if !hello.output.permits(Reveal::Probabilities) {
            return Err(VictimError::NotRevealed { victim: name, reveals: hello.output, asked: Reveal::Probabilities });
        }
        Self::checked(session, classes, Reveal::Probabilities, name)
    }

    fn checked(session: SecureSession, classes: usize, reveal: Reveal, name: String) -> Result<Self> {
        let out = moat_nn::tensor::numel(session.protocol().architecture().graph().output_shape());
        if out != classes {
            return Err(VictimError::NotClassVector {
                victim: name,
                detail: format!("the served model outputs {out} values, the dataset has {classes} classes"),
            });
        }
        Ok(Self { session, classes, reveal, name })
    }

    /// The session (its traffic, the queries left).
    pub fn session(&self) -> &SecureSession {
        &self.session
    }

    /// The secure softmax of the guard the server announced at the reveal point (SIGuard),
    /// or `None` for an unguarded server.
    pub fn guard_softmax(&self) -> Option<moat_mpc::ring_ops::Softmax> {
        self.session.protocol().hello().guard.as_ref().map(|g| g.config.softmax)
    }

    /// Ends the session.
    pub fn close(self) -> Result<()> {
        self.session.close()?;
        Ok(())
    }

    fn ask(&mut self, input: &[f32], reveal: Reveal) -> Result<Revealed> {
        Ok(self.session.infer_with(input, reveal, &mut Honest)?)
    }
}

impl Victim for SessionVictim {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn reveals(&self) -> Reveal {
        self.reveal
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let fixed = self.session.protocol().architecture().fixed();
        let mut answers = Vec::with_capacity(inputs.len());
        for input in inputs {
            let p = match self.ask(input, self.reveal)? {
                Revealed::Logits(ring) if self.reveal == Reveal::Logits => {
                    softmax(&ring.iter().map(|&v| fixed.decode(v)).collect::<Vec<_>>())
                }
                Revealed::Probabilities(ring) if self.reveal == Reveal::Probabilities => {
                    read_ring_probabilities(fixed, &ring)
                }
                _ => {
                    return Err(VictimError::NotClassVector {
                        victim: self.name.clone(),
                        detail: format!("revealed another output where {:?} was asked", self.reveal),
                    });
                }
            };
            check_class_vector(&self.name, &p, self.classes)?;
            answers.push(p);
        }
        Ok(answers)
    }

    fn labels(&mut self, inputs: &[&[f32]]) -> Result<Vec<usize>> {
        let fixed = self.session.protocol().architecture().fixed();
        inputs
            .iter()
            .map(|input| {
                self.ask(input, Reveal::Label)?.label(fixed).ok_or_else(|| VictimError::NotClassVector {
                    victim: self.name.clone(),
                    detail: "revealed no label".into(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use moat_mpc::Seed;
    use moat_mpc::engine::ServerModel;
    use moat_mpc::transport::memory;
    use moat_nn::{FixedPoint, QuantizedGraph, zoo};

    use super::*;
    use crate::victim::FixedVictim;

    #[test]
    fn a_real_session_answers_the_fixed_point_probabilities_and_labels()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let graph = zoo::build(&zoo::Architecture::Mlp { hidden: vec![8] }, &[1, 4, 4], 3, 7)?;
        let model = Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?);
        let (mut server_ch, client_ch) = memory::pair(Default::default());
        let server = ServerModel::new(Arc::clone(&model), 4096)?;
        let handle = std::thread::spawn(move || server.serve(&mut server_ch, Seed::insecure_from_u64(1)));
        let session = SecureSession::start(Box::new(client_ch), Seed::insecure_from_u64(2), None)?;
        let mut victim = SessionVictim::new(session, 3)?;
        let inputs: Vec<Vec<f32>> =
            (0..3).map(|i| (0..16).map(|j| ((i * 16 + j) as f32 * 0.37).sin()).collect()).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let got = victim.probabilities(&refs)?;
        let labels = victim.labels(&refs)?;
        victim.close()?;
        assert_eq!(handle.join().map_err(|_| "server thread panicked")??, 6);
        let expected = FixedVictim::new(Arc::clone(&model), 3)?.probabilities(&refs)?;
        for (g, e) in got.iter().zip(&expected) {
            // The protocol's truncations are within one unit of the plaintext fixed point's.
            assert!(g.iter().zip(e).all(|(a, b)| (a - b).abs() < 1e-2), "{g:?} vs {e:?}");
        }
        let fixed_labels: Vec<usize> = refs.iter().map(|x| model.predict(x)).collect::<moat_nn::Result<_>>()?;
        assert_eq!(labels, fixed_labels);
        Ok(())
    }

    /// Each secure softmax's probabilities, revealed by a real session and read by the client,
    /// are the plaintext ring softmax of the plaintext fixed-point logits, within the
    /// protocol's truncation error; a server that reveals labels only is refused before any
    /// query.
    #[test]
    fn a_real_session_reveals_each_secure_softmax() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use moat_mpc::engine::ServeOptions;
        use moat_mpc::ring_ops::{PlainOps, Softmax, softmax};

        let graph = zoo::build(&zoo::Architecture::Mlp { hidden: vec![8] }, &[1, 4, 4], 3, 7)?;
        let model = Arc::new(QuantizedGraph::new(&graph, FixedPoint::default())?);
        let inputs: Vec<Vec<f32>> =
            (0..3).map(|i| (0..16).map(|j| ((i * 16 + j) as f32 * 0.41).cos()).collect()).collect();
        let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let serve = |options: ServeOptions| -> std::result::Result<_, Box<dyn std::error::Error>> {
            let (mut server_ch, client_ch) = memory::pair(Default::default());
            let server = ServerModel::new(Arc::clone(&model), 4096)?;
            let handle =
                std::thread::spawn(move || server.serve_with(&mut server_ch, Seed::insecure_from_u64(1), &options));
            let session = SecureSession::start(Box::new(client_ch), Seed::insecure_from_u64(2), None)?;
            Ok((session, handle))
        };
        for kind in Softmax::ALL {
            let (session, handle) = serve(ServeOptions { softmax: kind, ..Default::default() })?;
            let mut victim = SessionVictim::revealing_probabilities(session, 3)?;
            assert_eq!((victim.name(), victim.reveals()), (format!("secure-2pc-{kind}"), Reveal::Probabilities));
            let got = victim.probabilities(&refs)?;
            victim.close()?;
            assert_eq!(handle.join().map_err(|_| "server thread panicked")??, 3);
            for (x, g) in refs.iter().zip(&got) {
                let z = model.logits_encoded(x)?;
                let plain = softmax(&mut PlainOps::new(model.fixed()), &z, 3, kind)?;
                let want = read_ring_probabilities(model.fixed(), &plain);
                assert!(g.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-2), "{kind}: {g:?} vs {want:?}");
            }
        }
        let (session, handle) = serve(ServeOptions { output: Reveal::Label, ..Default::default() })?;
        let refused = SessionVictim::revealing_probabilities(session, 3);
        assert!(matches!(refused, Err(VictimError::NotRevealed { reveals: Reveal::Label, .. })));
        drop(refused);
        // The client hung up before any query.
        assert!(handle.join().map_err(|_| "server thread panicked")?.unwrap_or(0) == 0);
        Ok(())
    }
}
