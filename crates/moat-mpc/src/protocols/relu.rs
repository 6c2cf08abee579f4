//! ReLU: fresh arithmetic shares of `max(x, 0)` (signed) — exact, no dropped bits.
//!
//! **How.** `ReLU(x) = DReLU(x) · x`: the sign bit by [`super::drelu`](mod@super::drelu), then the product by
//! the multiplexer [`super::mux`](mod@super::mux) (two correlated OTs), which is exact in Z_2^ℓ.
//!
//! **Learns:** nothing beyond its uniformly random output share.
//!
//! **Cost** per element at ℓ = 37, 6-bit chunks, IKNP: millionaires' on 36 bits (36 random OTs
//! for the leaves, 5 correlated triples = 10 random OTs, 96 bytes of tables, ≈ 3 bytes of AND
//! openings) + MUX (2 random OTs, 2 × 37 bits): 48 random OTs and 876 bytes in total
//! ([`super::cost::relu`] gives the exact count with frame headers).
//! **Rounds:** 4 flights from `P0`, 6 from `P1` (comparison: OT flight, tables, 3 tree
//! levels; MUX: 3 flights), independent of `n`.

use super::drelu::drelu_plane;
use super::mux::{check_ring, mux_plane};
use super::session::Session;
use crate::error::Result;
use crate::shares::AShare;
use crate::transport::Channel;

/// Shares of `ReLU(x)` element-wise.
pub fn relu(s: &mut Session, ch: &mut dyn Channel, x: &AShare) -> Result<AShare> {
    check_ring(s, x, "relu")?;
    let values = relu_values(s, ch, x.values())?;
    Ok(AShare::from_wrapping(x.fixed_point(), values))
}

/// [`relu`] on raw share values.
pub(crate) fn relu_values(s: &mut Session, ch: &mut dyn Channel, x: &[u64]) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(x.len());
    for part in x.chunks(s.config().max_batch) {
        let sign = drelu_plane(s, ch, part)?;
        out.extend(mux_plane(s, ch, sign, part)?);
    }
    Ok(out)
}
