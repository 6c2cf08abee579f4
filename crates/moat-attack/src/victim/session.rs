//! A real secure session as a membership-inference victim: the service reveals the logits to
//! its client ([`Reveal::Logits`]), which decodes them and applies the softmax in f64 — the
//! same answers as [`super::SimulatedVictim`], over the real two-party protocol (admitted by a
//! `moat serve`, direct to a `moat secure server`, or on any channel).

use moat_client::SecureSession;
use moat_mpc::engine::{Honest, Reveal, Revealed};

use super::{Result, Victim, VictimError, check_class_vector, softmax};

/// What the victim is called in reports.
const NAME: &str = "secure-2pc";

/// An open secure session whose queries reveal the logits.
pub struct SessionVictim {
    session: SecureSession,
    classes: usize,
}

impl SessionVictim {
    /// A victim over `session`, checked to output `classes` values (from the architecture the
    /// server announced) before any query.
    pub fn new(session: SecureSession, classes: usize) -> Result<Self> {
        let out = moat_nn::tensor::numel(session.protocol().architecture().graph().output_shape());
        if out != classes {
            return Err(VictimError::NotClassVector {
                victim: NAME.into(),
                detail: format!("the served model outputs {out} values, the dataset has {classes} classes"),
            });
        }
        Ok(Self { session, classes })
    }

    /// The session (its traffic, the queries left).
    pub fn session(&self) -> &SecureSession {
        &self.session
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
        NAME.into()
    }

    fn reveals(&self) -> Reveal {
        Reveal::Logits
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn probabilities(&mut self, inputs: &[&[f32]]) -> Result<Vec<Vec<f64>>> {
        let fixed = self.session.protocol().architecture().fixed();
        let mut answers = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Revealed::Logits(ring) = self.ask(input, Reveal::Logits)? else {
                return Err(VictimError::NotClassVector {
                    victim: NAME.into(),
                    detail: "revealed a label where logits were asked".into(),
                });
            };
            let p = softmax(&ring.iter().map(|&v| fixed.decode(v)).collect::<Vec<_>>());
            check_class_vector(NAME, &p, self.classes)?;
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
                    victim: NAME.into(),
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
}
