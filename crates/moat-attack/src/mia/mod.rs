//! Membership inference: does a model's answer on `x` betray that `x` was in its training set?
//!
//! The attacks see only what a client of the service sees — a probability vector per query
//! ([`crate::victim::Victim`]), or only the label — plus data of their own and reference (shadow) models they
//! train themselves on it ([`reference`]). Each attack turns observations into one score per
//! target sample, higher meaning "member"; [`metrics`] reads the scores against the ground truth
//! (member = positive) and exports them so anyone can recompute the figures.
//!
//! ```
//! use moat_attack::mia::{Attack, MiaConfig, Metrics, run};
//! use moat_attack::victim::FloatVictim;
//! use std::sync::Arc;
//!
//! let digits = moat_nn::data::load("digits", None, 0)?;
//! let graph = moat_nn::zoo::build(&"mlp:16".parse()?, &digits.train.sample_shape, 10, 1)?;
//! let mut victim = FloatVictim::new(Arc::new(graph), 10)?;
//! let pool = digits.train.take(40);
//! let scored = run(&mut victim, &pool, 40, None, &[Attack::Loss, Attack::Gap], &MiaConfig::default())?;
//! let member: Vec<bool> = (0..40).map(|i| i < 20).collect();
//! let auc = Metrics::compute(&scored[0].scores, &member)?.auc;
//! assert!((0.0..=1.0).contains(&auc));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attacks;
pub mod error;
pub mod metrics;
pub mod reference;
pub mod signals;

pub use attacks::{Attack, AttackScores, MiaConfig, check_reveals, run};
pub use error::{MiaError, Result};
pub use metrics::{Metrics, RocPoint, ScoreTable};
pub use reference::{ReferenceTrainer, References};
