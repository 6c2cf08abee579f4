//! Everything moat's own client and server exchange outside the two-party protocol, typed once:
//! the secure-session handshake on the session port ([`session`]), the admission request and
//! answer that hand out session tokens over HTTP ([`admission`]), the keys of request
//! `parameters` ([`params`]) and the server's commitment to a model's weights with its opening
//! to an auditor ([`commitment`]).
//!
//! `moat-serve` writes these messages and `moat-client` reads them (and the other way round),
//! so a change to the wire is a change to this crate. It depends on serde, sha2 and thiserror
//! alone; the two-party protocol's own messages (`moat-2pc/3`, whose hello carries the
//! commitment) are moat-mpc's, and the Open Inference Protocol tensors are moat-serve's and
//! moat-client's.

pub mod admission;
pub mod commitment;
pub mod params;
pub mod session;

pub use admission::{Admission, AdmissionDetails, AdmissionRequest, SessionToken};
pub use commitment::{CommitmentOpening, OpeningError};
pub use session::{HANDSHAKE, HandshakeReply, MAX_TOKEN_FRAME, Refusal};
