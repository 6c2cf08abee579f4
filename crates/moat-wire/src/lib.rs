//! Everything moat's own client and server exchange outside the two-party protocol, typed once:
//! the secure-session handshake on the session port ([`session`]), the admission request and
//! answer that hand out session tokens over HTTP ([`admission`]), and the keys of request
//! `parameters` ([`params`]).
//!
//! `moat-serve` writes these messages and `moat-client` reads them (and the other way round),
//! so a change to the wire is a change to this crate. It depends on serde alone; the two-party
//! protocol's own messages (`moat-2pc/1`) are moat-mpc's, and the Open Inference Protocol
//! tensors are moat-serve's and moat-client's.

pub mod admission;
pub mod params;
pub mod session;

pub use admission::{Admission, AdmissionDetails, AdmissionRequest, SessionToken};
pub use session::{HANDSHAKE, HandshakeReply, MAX_TOKEN_FRAME, Refusal};
