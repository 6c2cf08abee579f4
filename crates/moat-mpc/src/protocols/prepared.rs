//! Products with the server's fixed private matrices, prepared ahead: Delphi's offline phase
//! (Mishra et al., USENIX Security 2020; MiniONN, CCS 2017, before it), for computations
//! that multiply by the same secret matrix many times (SIGuard's defender: ≈ 300 products
//! per matrix and query).
//!
//! **Computes** shares of `W·x` for the server's private `rows × cols` matrix `W` (or of
//! `w ⊙ x` for a private vector `w`, [`MatrixKind::Diagonal`]) and a shared `x = x₀ + x₁`,
//! `uses` times, exactly in Z_2^ℓ.
//!
//! **Offline** ([`prepare`], once for a list of matrices). The client draws `uses` uniform
//! vectors `R_k ∈ Z_2^ℓ^cols`. One homomorphic 1×1 convolution per matrix ([`crate::he`]: the
//! vectors are the `uses` pixels of a `cols`-channel image, `W` the kernel; a diagonal is a
//! depthwise 1×1 kernel) leaves the client `W·R_k − s_k` and the server `s_k`, uniform. The
//! client sends a fresh BFV public key (55.8 KB at N = 4096), then per matrix a query frame,
//! answered by a response frame (the first one preceded by the server's status frame): one
//! round trip per matrix, so that the two never send megabytes at the same time.
//! Bytes: the plans' query and response ciphertexts ([`crate::he::predicted_bytes`]), e.g.
//! 7.9 MB for SIGuard's six with its rounds one after another (the paper's defender at 6 × 49:
//! 301 forward and 294 backward uses each; the Gilboa products they replace sent ≈ 1.7 MB per
//! inner step, 500 MB a run); 2.5 times that with its rounds side by side (751 and 735 uses).
//! If the server's weights are too large for the HE parameters' flooding
//! ([`crate::he::ServerLayer::new`]), it says so in the status frame and both parties go on
//! without the preparation ([`prepare`] returns `None`).
//!
//! **Online** ([`PreparedMatrix::mul`]): the client sends `u = x₁ − R_k` (`cols` values of ℓ
//! bits) and keeps `W·R_k − s_k`; the server outputs `W·(x₀ + u) + s_k`. Together `W·x`.
//! One flight, client → server, and `rows·cols` local products on the server; no OT. Several
//! vectors multiply in the same flight (one `R_k` each).
//!
//! **Learns:** the server sees fresh BFV encryptions under the client's key and `u`, uniform
//! since each `R_k` is used once; the client decrypts `W·R_k − s_k`, uniform since `s_k` is,
//! from circuit-private responses ([`crate::he::linear`]). Semi-honest.

use std::borrow::Cow;

use moat_nn::kernels::Window;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::session::Session;
use crate::error::{MpcError, Result};
use crate::he::{HeClient, HeParams, HeServer, LinearShape, ServerLayer};
use crate::shares::Party;
use crate::transport::Channel;

/// How the server's private factor multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixKind {
    /// `W·x` for a row-major `rows × cols` matrix.
    Full {
        /// Output length.
        rows: usize,
        /// Input length.
        cols: usize,
    },
    /// `w ⊙ x` for a vector of `len` values.
    Diagonal {
        /// Input and output length.
        len: usize,
    },
}

impl MatrixKind {
    /// Input length.
    pub fn cols(&self) -> usize {
        match *self {
            MatrixKind::Full { cols, .. } => cols,
            MatrixKind::Diagonal { len } => len,
        }
    }

    /// Output length.
    pub fn rows(&self) -> usize {
        match *self {
            MatrixKind::Full { rows, .. } => rows,
            MatrixKind::Diagonal { len } => len,
        }
    }

    /// Ring weights the server holds.
    pub fn weight_len(&self) -> usize {
        self.batch_shape(1).weight_len()
    }

    /// `W·v` (or `w ⊙ v`) in the clear, mod 2^ℓ: the homomorphic layer's map on one pixel
    /// (the tests' reference).
    #[cfg(test)]
    fn apply(&self, fp: moat_nn::FixedPoint, w: &[u64], v: &[u64]) -> Result<Vec<u64>> {
        self.batch_shape(1).apply(v, w, fp)
    }

    /// The server's homomorphic layer for `uses` products with weights `w` (bias zero): what
    /// [`prepare`] builds per call, or a server ahead of its queries
    /// ([`crate::ring_ops::SiGuard::with_prepared_layers`]). Refuses weights too large for the
    /// parameters' flooding.
    pub fn server_layer(&self, params: &HeParams, uses: usize, w: &[u64]) -> Result<ServerLayer> {
        let shape = self.batch_shape(uses);
        ServerLayer::new(params, shape, w.to_vec(), vec![0; shape.output_len()])
    }

    /// The homomorphic layer that multiplies `uses` vectors at once: a 1×1 convolution over a
    /// `1 × uses` image (input `[cols, 1, uses]`, output `[rows, 1, uses]`).
    pub fn batch_shape(&self, uses: usize) -> LinearShape {
        let window = Window { in_hw: [1, uses], kernel: [1, 1], stride: [1, 1], padding: [0; 4] };
        match *self {
            MatrixKind::Full { rows, cols } => LinearShape::Conv2d { in_channels: cols, out_channels: rows, window },
            MatrixKind::Diagonal { len } => LinearShape::Depthwise { channels: len, window },
        }
    }
}

/// One matrix to prepare: its kind, the weights (the server's; `None` on the client) and the
/// number of products that will follow.
#[derive(Clone, Copy)]
pub struct MatrixSpec<'a> {
    /// The shape of the product.
    pub kind: MatrixKind,
    /// Row-major ring weights (server), `None` (client).
    pub weights: Option<&'a [u64]>,
    /// Products to prepare.
    pub uses: usize,
    /// The server's homomorphic layer for these products (`uses` vectors times these
    /// weights), built and its weights encoded ahead, once for many queries
    /// ([`crate::ring_ops::SiGuard::with_prepared_layers`]); `None`, or one that does not
    /// compute this product: built by [`prepare`].
    pub layer: Option<&'a ServerLayer>,
}

/// Shows the shape, the count and whether a layer was built ahead: the weights are secret.
impl std::fmt::Debug for MatrixSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixSpec")
            .field("kind", &self.kind)
            .field("has_weights", &self.weights.is_some())
            .field("uses", &self.uses)
            .field("layer_ahead", &self.layer.is_some())
            .finish()
    }
}

/// A party's prepared products with one matrix ([`prepare`]), used in order.
pub struct PreparedMatrix {
    kind: MatrixKind,
    uses: usize,
    used: usize,
    /// This party's share of `W·R_k` for use `k`, at `k·rows ..` (server `s_k`, client
    /// `W·R_k − s_k`).
    shares: Vec<u64>,
    /// The client's `R_k` at `k·cols ..` (empty on the server).
    masks: Vec<u64>,
}

/// Shows the shape and the count only: the shares and masks are secret.
impl std::fmt::Debug for PreparedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMatrix")
            .field("kind", &self.kind)
            .field("uses", &self.uses)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

/// Status frame of the server: the preparation follows (1) or is refused (0).
const PREPARED: u8 = 1;
const REFUSED: u8 = 0;

/// Runs the offline phase for `specs` (both parties, the same list; see the module doc) and
/// returns one [`PreparedMatrix`] per spec, in order (a spec of 0 uses costs nothing). `None`
/// when the server's weights do not fit the HE parameters: nothing is prepared and the caller
/// multiplies another way.
pub fn prepare(s: &mut Session, ch: &mut dyn Channel, specs: &[MatrixSpec<'_>]) -> Result<Option<Vec<PreparedMatrix>>> {
    if let Some(m) = specs.iter().find(|m| m.kind.rows() == 0 || m.kind.cols() == 0) {
        return Err(MpcError::invalid("prepared products", format!("empty matrix {:?}", m.kind)));
    }
    let used: Vec<&MatrixSpec<'_>> = specs.iter().filter(|m| m.uses > 0).collect();
    if used.is_empty() {
        return Ok(Some(specs.iter().map(|m| PreparedMatrix::new(m, Vec::new(), Vec::new())).collect()));
    }
    let fp = s.fixed_point();
    let party = s.party();
    let params = HeParams::n4096(fp)?;
    let (_, _, rng) = s.parts();
    let he_rng = ChaCha20Rng::from_rng(&mut *rng);
    // Per spec with uses: (this party's shares, the client's masks), both `[uses][n]`.
    let mut parts = match party {
        Party::P0 => {
            let layers = used
                .iter()
                .map(|m| {
                    let w = m
                        .weights
                        .ok_or_else(|| MpcError::invalid("prepared products", "the server needs the weights"))?;
                    if w.len() != m.kind.weight_len() {
                        return Err(MpcError::invalid(
                            "prepared products",
                            format!("{} weights for {:?}", w.len(), m.kind),
                        ));
                    }
                    Ok(match m.layer {
                        Some(layer) if layer.computes(m.kind.batch_shape(m.uses), w) => Ok(Cow::Borrowed(layer)),
                        _ => m.kind.server_layer(&params, m.uses, w).map(Cow::Owned),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut server = HeServer::setup_with_rng(&params, ch, he_rng)?;
            let layers = match layers.into_iter().collect::<Result<Vec<_>>>() {
                Ok(layers) => layers,
                Err(e) => {
                    tracing::warn!(error = %e, "products with the private matrices not prepared");
                    // The client sent its first query before reading the status.
                    ch.recv()?;
                    ch.send(&[REFUSED])?;
                    ch.flush()?;
                    return Ok(None);
                }
            };
            // Read with the first response (each response is flushed).
            ch.send(&[PREPARED])?;
            used.iter()
                .zip(&layers)
                .map(|(m, layer)| {
                    let masks = server.respond(ch, layer, &vec![0; m.kind.cols() * m.uses])?;
                    Ok((transpose(&masks, m.kind.rows(), m.uses), Vec::new()))
                })
                .collect::<Result<Vec<_>>>()?
        }
        Party::P1 => {
            let mut client = HeClient::with_rng(&params, he_rng)?;
            client.setup(ch)?;
            let mut mask_rng = ChaCha20Rng::from_rng(&mut *rng);
            let mut parts = Vec::with_capacity(used.len());
            // One matrix at a time: a query, then its response — never both parties sending
            // megabytes at once, which could fill both socket buffers.
            for (k, m) in used.iter().enumerate() {
                let plan = params.plan(m.kind.batch_shape(m.uses))?;
                let r: Vec<u64> = (0..m.kind.cols() * m.uses).map(|_| fp.reduce(mask_rng.random())).collect();
                client.send_query(ch, &plan, &r)?;
                if k == 0 {
                    match ch.recv_exact(1)?.first() {
                        Some(&PREPARED) => {}
                        Some(&REFUSED) => return Ok(None),
                        other => return Err(MpcError::peer("prepared products", format!("status {other:?}"))),
                    }
                }
                let y = client.receive_response(ch, &plan)?;
                parts.push((transpose(&y, m.kind.rows(), m.uses), transpose(&r, m.kind.cols(), m.uses)));
            }
            parts
        }
    }
    .into_iter();
    Ok(Some(
        specs
            .iter()
            .map(|m| {
                let (shares, masks) = if m.uses > 0 { parts.next().unwrap_or_default() } else { Default::default() };
                PreparedMatrix::new(m, shares, masks)
            })
            .collect(),
    ))
}

/// `[n][uses]` (the convolution's channel-major layout) to `[uses][n]` (one use contiguous).
fn transpose(values: &[u64], n: usize, uses: usize) -> Vec<u64> {
    (0..uses).flat_map(|k| (0..n).map(move |i| values[i * uses + k])).collect()
}

impl PreparedMatrix {
    fn new(spec: &MatrixSpec<'_>, shares: Vec<u64>, masks: Vec<u64>) -> Self {
        Self { kind: spec.kind, uses: spec.uses, used: 0, shares, masks }
    }

    /// The shape of the products.
    pub fn kind(&self) -> MatrixKind {
        self.kind
    }

    /// Products left.
    pub fn remaining(&self) -> usize {
        self.uses - self.used
    }

    /// Shares of `W·x` (see the module doc) for each of the vectors of this party's share `x`
    /// (`n·cols` values, `n` vectors one after another; `n·rows` values out); `w` is the
    /// server's weights (`None` on the client). Uses `n` prepared products, in one flight (none
    /// for no vector).
    pub fn mul(&mut self, s: &Session, ch: &mut dyn Channel, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
        let (rows, cols) = (self.kind.rows(), self.kind.cols());
        if x.is_empty() {
            return Ok(Vec::new());
        }
        if !x.len().is_multiple_of(cols) {
            return Err(MpcError::invalid("prepared product", format!("{} values for {:?}", x.len(), self.kind)));
        }
        let n = x.len() / cols;
        if n > self.remaining() {
            return Err(MpcError::invalid(
                "prepared product",
                format!("{n} products asked, {} of {} prepared left", self.remaining(), self.uses),
            ));
        }
        let k = self.used;
        self.used += n;
        let fp = s.fixed_point();
        let share = &self.shares[k * rows..(k + n) * rows];
        match (s.party(), w) {
            (Party::P0, Some(w)) => {
                if w.len() != self.kind.weight_len() {
                    return Err(MpcError::invalid(
                        "prepared product",
                        format!("{} weights for {:?}", w.len(), self.kind),
                    ));
                }
                let u = ch.recv_ring(x.len(), fp.ring_bits())?;
                let v: Vec<u64> = x.iter().zip(&u).map(|(&a, &b)| fp.add(a, b)).collect();
                // The n vectors as the pixels of one image: one pass of the layer's map.
                let image = transpose(&v, n, cols);
                let out = transpose(&self.kind.batch_shape(n).apply(&image, w, fp)?, rows, n);
                Ok(out.iter().zip(share).map(|(&y, &m)| fp.add(y, m)).collect())
            }
            (Party::P1, None) => {
                let r = &self.masks[k * cols..(k + n) * cols];
                let u: Vec<u64> = x.iter().zip(r).map(|(&a, &b)| fp.sub(a, b)).collect();
                ch.send_ring(&u, fp.ring_bits())?;
                ch.flush()?;
                Ok(share.to_vec())
            }
            _ => Err(MpcError::invalid("prepared product", "only the server (P0) holds the private factor")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shares::{AShare, reconstruct, share};
    use crate::transport::memory;
    use moat_nn::FixedPoint;

    /// Prepared full and diagonal products give exactly `W·x` and `w ⊙ x` mod 2^ℓ, use after
    /// use, one vector or several in one flight, and refuse one use too many.
    #[test]
    fn prepared_products_are_exact() -> Result<()> {
        let fp = FixedPoint::default();
        let (rows, cols, uses) = (5usize, 7usize, 3usize);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let w: Vec<u64> = (0..rows * cols).map(|_| fp.encode(rng.random_range(-2.0..2.0))).collect();
        let d: Vec<u64> = (0..cols).map(|_| fp.encode(rng.random_range(-2.0..2.0))).collect();
        let xs: Vec<Vec<u64>> = (0..uses).map(|_| (0..cols).map(|_| fp.reduce(rng.random())).collect()).collect();
        let shared: Vec<(AShare, AShare)> = xs.iter().map(|x| share(fp, x, &mut rng)).collect();
        let kinds = [MatrixKind::Full { rows, cols }, MatrixKind::Diagonal { len: cols }];
        let run =
            move |party: Party, ch: &mut dyn Channel, w: Option<Vec<u64>>, d: Option<Vec<u64>>, xs: Vec<Vec<u64>>| {
                let mut s = Session::setup(ch, party, fp, if party == Party::P0 { 1 } else { 2 })?;
                let specs = [
                    MatrixSpec { kind: kinds[0], weights: w.as_deref(), uses, layer: None },
                    MatrixSpec { kind: kinds[1], weights: d.as_deref(), uses, layer: None },
                ];
                let mut prepared = prepare(&mut s, ch, &specs)?.ok_or_else(|| MpcError::invalid("test", "refused"))?;
                let mut out = Vec::new();
                // The first vector alone, the others in one batch.
                for x in [xs[0].clone(), xs[1..].concat()] {
                    let full = prepared[0].mul(&s, ch, w.as_deref(), &x)?;
                    let diagonal = prepared[1].mul(&s, ch, d.as_deref(), &x)?;
                    for (f, g) in full.chunks(rows).zip(diagonal.chunks(cols)) {
                        out.push(f.to_vec());
                        out.push(g.to_vec());
                    }
                }
                let extra = prepared[0].mul(&s, ch, w.as_deref(), &xs[0]);
                assert!(matches!(extra, Err(MpcError::InvalidArgument { .. })), "{extra:?}");
                Ok::<_, MpcError>(out)
            };
        let x1: Vec<Vec<u64>> = shared.iter().map(|(_, b)| b.values().to_vec()).collect();
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client = std::thread::spawn(move || run(Party::P1, &mut c1, None, None, x1));
        let x0: Vec<Vec<u64>> = shared.iter().map(|(a, _)| a.values().to_vec()).collect();
        let y0 = run(Party::P0, &mut c0, Some(w.clone()), Some(d.clone()), x0)?;
        let y1 = client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
        for (i, x) in xs.iter().enumerate() {
            for (j, (kind, weights)) in kinds.iter().zip([&w, &d]).enumerate() {
                let got = reconstruct(
                    &AShare::from_wrapping(fp, y0[2 * i + j].clone()),
                    &AShare::from_wrapping(fp, y1[2 * i + j].clone()),
                )?;
                assert_eq!(got, kind.apply(fp, weights, x)?, "use {i}, {kind:?}");
            }
        }
        Ok(())
    }

    /// A layer built ahead stands in only for the product it computes (its kind's shape for
    /// the count, its weights); a server handed one built for other weights builds its own,
    /// and the products are still exactly `W·x`.
    #[test]
    fn a_layer_built_ahead_stands_in_only_for_its_own_product() -> Result<()> {
        let fp = FixedPoint::default();
        let params = HeParams::n4096(fp)?;
        let kind = MatrixKind::Full { rows: 3, cols: 4 };
        let w: Vec<u64> = (0..12).map(|i| fp.encode(f64::from(i) / 8.0 - 0.5)).collect();
        let other: Vec<u64> = w.iter().map(|v| fp.add(*v, 1)).collect();
        let ahead = kind.server_layer(&params, 2, &w)?;
        assert!(ahead.computes(kind.batch_shape(2), &w));
        assert!(!ahead.computes(kind.batch_shape(2), &other));
        assert!(!ahead.computes(kind.batch_shape(3), &w));

        let x = [fp.encode(1.5), fp.encode(-2.0), fp.encode(0.25), fp.encode(3.0)];
        let (x0, x1) = share(fp, &x, &mut ChaCha20Rng::seed_from_u64(4));
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client = std::thread::spawn(move || -> Result<Vec<u64>> {
            let mut s = Session::setup(&mut c1, Party::P1, fp, 2)?;
            let spec = MatrixSpec { kind, weights: None, uses: 2, layer: None };
            let mut prepared =
                prepare(&mut s, &mut c1, &[spec])?.ok_or_else(|| MpcError::invalid("test", "refused"))?;
            prepared[0].mul(&s, &mut c1, None, x1.values())
        });
        let mut s = Session::setup(&mut c0, Party::P0, fp, 1)?;
        let wrong = kind.server_layer(&params, 2, &other)?;
        let spec = MatrixSpec { kind, weights: Some(&w), uses: 2, layer: Some(&wrong) };
        let mut prepared = prepare(&mut s, &mut c0, &[spec])?.ok_or_else(|| MpcError::invalid("test", "refused"))?;
        let y0 = prepared[0].mul(&s, &mut c0, Some(&w), x0.values())?;
        let y1 = client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
        let got = reconstruct(&AShare::from_wrapping(fp, y0), &AShare::from_wrapping(fp, y1))?;
        assert_eq!(got, kind.apply(fp, &w, &x)?);
        Ok(())
    }

    /// A server that answers the preparation with a status it does not define, and a client
    /// whose online message is cut short: clear errors, no panic.
    #[test]
    fn a_peer_that_lies_gets_a_clear_error() -> Result<()> {
        let fp = FixedPoint::default();
        let kind = MatrixKind::Full { rows: 3, cols: 4 };
        let w: Vec<u64> = (0..12).map(|i| fp.encode(f64::from(i) / 8.0)).collect();
        // A fake server: reads the key and the query, answers status 7.
        let (mut c0, mut c1) = memory::pair(Default::default());
        let server = std::thread::spawn(move || -> Result<()> {
            let _s = Session::setup(&mut c0, Party::P0, fp, 1)?;
            c0.recv()?;
            c0.recv()?;
            c0.send(&[7])?;
            c0.flush()?;
            Ok(())
        });
        let mut s = Session::setup(&mut c1, Party::P1, fp, 2)?;
        let got = prepare(&mut s, &mut c1, &[MatrixSpec { kind, weights: None, uses: 2, layer: None }]);
        assert!(matches!(got, Err(MpcError::PeerMisbehaved { .. })), "{got:?}");
        server.join().map_err(|_| MpcError::invalid("test", "server panicked"))??;

        // A client that prepares honestly, then sends 3 of the 4 values of its masked share.
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client = std::thread::spawn(move || -> Result<()> {
            let mut s = Session::setup(&mut c1, Party::P1, fp, 2)?;
            prepare(&mut s, &mut c1, &[MatrixSpec { kind, weights: None, uses: 2, layer: None }])?;
            c1.send_ring(&[1, 2, 3], fp.ring_bits())?;
            c1.flush()?;
            Ok(())
        });
        let mut s = Session::setup(&mut c0, Party::P0, fp, 1)?;
        let mut prepared = prepare(&mut s, &mut c0, &[MatrixSpec { kind, weights: Some(&w), uses: 2, layer: None }])?
            .ok_or_else(|| MpcError::invalid("test", "refused"))?;
        let got = prepared[0].mul(&s, &mut c0, Some(&w), &[0; 4]);
        assert!(matches!(got, Err(MpcError::Transport(_))), "{got:?}");
        client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
        Ok(())
    }
}
