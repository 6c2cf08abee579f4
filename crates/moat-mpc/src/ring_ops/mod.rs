//! Fixed-point computations written once, over a small set of secure ring operations, and
//! run either in plaintext or between the two parties.
//!
//! [`RingOps`] is what an output-side computation (the secure softmax, SIGuard) may use:
//! local linear operations (add, subtract, add a public constant, multiply by a public
//! integer) and four interactive primitives — the exact ring product of two secret values,
//! the exact signed truncation, ReLU and the sign test. Every primitive is **exact** (no
//! probabilistic truncation, no ±1 ulp), so one algorithm over `RingOps` gives bit for bit the
//! same result on
//!
//! * [`PlainOps`]: the values themselves, in fixed point — the reference, and what the
//!   simulated engine computes; and
//! * [`SessionOps`]: one party's additive shares, over a [`Session`] and its channel — the
//!   real two-party protocol ([`crate::protocols`]: Beaver products from Gilboa triples, the
//!   exact truncation, ReLU, DReLU + B2A).
//!
//! A value's slice holds the values themselves for [`PlainOps`] and the party's shares for
//! [`SessionOps`]; the algorithms never look at them, only pass them on. What each party
//! learns, bytes and rounds are those of the primitives it calls (their module docs); the
//! algorithms have no data-dependent control flow.

pub mod newton;
pub mod siguard;
pub mod softmax;

pub use siguard::{
    Defender, DefenderShape, DefenderWeights, SiGuard, SiGuardConfig, SiGuardProducts, SiGuardSpec, prepare_siguard,
    siguard, siguard_products,
};
pub use softmax::{Softmax, softmax, softmax_from_max};

use moat_nn::FixedPoint;

use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::protocols::prepared::PreparedMatrix;
pub use crate::protocols::prepared::{MatrixKind, MatrixSpec};
use crate::protocols::{self, Session};
use crate::shares::{AShare, BShare, Party};
use crate::transport::Channel;

/// Secure operations on fixed-point ring values (see the module documentation).
///
/// The provided methods are local (no interaction) or built from the four required
/// interactive primitives, so they are the same in every implementation.
pub trait RingOps {
    /// The ring and its fixed-point scale.
    fn fixed(&self) -> FixedPoint;

    /// Whether this party adds public constants: the plaintext reference and the server `P0`
    /// (the client's share of a public value is 0).
    fn holds_public(&self) -> bool;

    /// Exact element-wise ring product `x·y mod 2^ℓ` (no truncation).
    fn mul(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>>;

    /// Exact signed truncation `floor(signed(x) / 2^shift)`, element-wise.
    fn truncate(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>>;

    /// `max(x, 0)` (signed), element-wise.
    fn relu(&mut self, x: &[u64]) -> Result<Vec<u64>>;

    /// `floor(x / 2^shift)` for values the caller **knows** to lie in `[0, 2^(ℓ−1))` by
    /// construction (a ReLU's output, a square of one): the same result as
    /// [`Self::truncate`] there, cheaper between two parties
    /// ([`protocols::truncate_nonnegative`]: 3 flights from `P0` with Ferret against 5, a
    /// third of the bytes). Outside the precondition the two-party result is wrong by a
    /// multiple of `2^(ℓ−shift)`, so the plaintext reference refuses a negative value. By
    /// default [`Self::truncate`].
    fn truncate_nonnegative(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        self.truncate(x, shift)
    }

    /// Exact signed truncation `floor(signed(x) / 2^shift)` for values the caller **knows**
    /// to be small, `|signed(x)| < 2^(ℓ−2)` (at ℓ = 37 and a product at 2^2f, f = 12: a real
    /// magnitude below 2048): the non-negative truncation of `x + 2^(ℓ−2)`, minus
    /// `2^(ℓ−2−shift)` — `2^shift` divides the bias, so the result is [`Self::truncate`]'s,
    /// at [`Self::truncate_nonnegative`]'s cost. Outside the precondition the biased value is
    /// negative, which the plaintext reference refuses.
    fn truncate_bounded(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        let fp = self.fixed();
        let top = fp.ring_bits().saturating_sub(2);
        if shift > top {
            // The bias would not be a multiple of 2^shift.
            return self.truncate(x, shift);
        }
        let bias = 1u64 << top;
        let t = self.truncate_nonnegative(&self.add_public(x, bias), shift)?;
        Ok(self.add_public(&t, fp.neg(bias >> shift)))
    }

    /// `1{x ≥ 0}` (signed) as ring integers 0 or 1 (not scaled), element-wise.
    fn sign(&mut self, x: &[u64]) -> Result<Vec<u64>>;

    /// [`Self::sign`] of values the caller **knows** to lie in `[−2^(bits−1), 2^(bits−1))`
    /// (`2 ≤ bits ≤ ℓ`): the same bits, for less. By default [`Self::sign`] (the plaintext
    /// reference refuses a value outside the range, which the two-party implementation would
    /// get wrong); the two-party implementation compares in `Z_2^bits` (the shares' low bits:
    /// [`protocols::drelu()`] on `bits − 1` bits instead of `ℓ − 1`), then B2A into the ring.
    fn sign_within(&mut self, x: &[u64], bits: u32) -> Result<Vec<u64>> {
        let _ = bits;
        self.sign(x)
    }

    /// `1{x − t ≥ 0}` for each shared `x` and each public threshold `t` (row-major: `x₀`
    /// against every threshold in order, then `x₁`, … — [`Self::sign_within`] of
    /// [`Self::sub_public_each`]), for differences the caller **knows** to lie in
    /// `[−2^(bits−1), 2^(bits−1))` (`bits = ℓ`: every ring value). The two-party
    /// implementation lets the comparisons of one `x` share their leaf OTs
    /// ([`protocols::drelu`](mod@protocols::drelu)'s `drelu_against_plane_in`): `bits − 1`
    /// random OTs per `x` instead of per comparison, the same bits.
    fn sign_against(&mut self, x: &[u64], thresholds: &[u64], bits: u32) -> Result<Vec<u64>> {
        let differences = self.sub_public_each(x, thresholds);
        self.sign_within(&differences, bits)
    }

    /// Exact element-wise ring product `b·x` of shared **bits** `b ∈ {0, 1}` (ring integers,
    /// e.g. from [`Self::sign`]) and shared `x`: the same value as [`Self::mul`], for a
    /// fraction of its cost. By default [`Self::mul`] (the plaintext reference refuses a `b`
    /// that is not a bit, which the two-party implementation would get wrong); the two-party
    /// implementation reads XOR shares of each bit off its shares' lowest bits (a sum's lowest
    /// bit carries nothing in) and multiplexes (CrypTFlow2's `F_MUX`, [`protocols::mux()`]):
    /// 2 correlated OTs and `2ℓ` bits per element, 3 flights, no Beaver triple (74 OTs).
    fn mul_bit(&mut self, b: &[u64], x: &[u64]) -> Result<Vec<u64>> {
        self.mul(b, x)
    }

    /// Exact element-wise ring product `w·x` of the server's private `w` (`Some` for the
    /// plaintext reference and `P0`, `None` for the client) and a shared `x`.
    fn mul_private(&mut self, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>>;

    /// Prepares `n` element products of later [`Self::mul`] calls ahead of use (both parties
    /// call it at the same point with the same `n`). Local no-op by default; the two-party
    /// implementation makes `n` Beaver triples in one batch.
    fn reserve_products(&mut self, n: usize) -> Result<()> {
        let _ = n;
        Ok(())
    }

    /// From `true` until `false`: the computation that follows is bound by its sequential
    /// rounds rather than its bytes, so the two-party implementation switches its protocols
    /// to their fewest-rounds parameters (the widest millionaires' leaves,
    /// [`protocols::MAX_CHUNK_BITS`]: one combining-tree level, a flight, less in every
    /// comparison and truncation at ℓ = 37 when the session's leaves are narrower) and back.
    /// Both parties call it at the same points. Results do not change (the protocols are
    /// exact for every width). No-op by default.
    fn fewest_rounds(&mut self, on: bool) -> Result<()> {
        let _ = on;
        Ok(())
    }

    /// `W·x` (ring products summed, no truncation) for the server's private `rows × x.len()`
    /// matrix `W` (row-major; `None` on the client) and shared `x`. By default the
    /// element-wise [`Self::mul_private`] of `x` tiled `rows` times, summed per row.
    fn mul_private_matvec(&mut self, w: Option<&[u64]>, rows: usize, x: &[u64]) -> Result<Vec<u64>> {
        let tiled: Vec<u64> = (0..rows).flat_map(|_| x.iter().copied()).collect();
        let products = self.mul_private(w, &tiled)?;
        Ok(self.row_sum(&products, x.len()))
    }

    /// Prepares, ahead of use, `uses` products with each of the server's private matrices
    /// (both parties at the same point, the same list; weights `None` on the client): later
    /// [`Self::mul_private_matrix`] calls name a matrix by its position in `matrices`. Local
    /// no-op by default; the two-party implementation runs Delphi's offline phase
    /// ([`protocols::prepared`]: one homomorphic batch per matrix), after which each product
    /// is one flight of `cols` ring values.
    fn prepare_private_matrices(&mut self, matrices: &[MatrixSpec<'_>]) -> Result<()> {
        let _ = matrices;
        Ok(())
    }

    /// `W·x` (or `w ⊙ x`, by `kind`) for the server's private factor `w` (`None` on the
    /// client), prepared as `matrices[matrix]` of [`Self::prepare_private_matrices`], for each
    /// of the vectors of `x` (`n·cols` values, one after another; `n·rows` out, one prepared
    /// use each, all in one flight). By default (and when the preparation was refused or is
    /// used up) [`Self::mul_private_matvec`] or [`Self::mul_private`]; the result is the same.
    fn mul_private_matrix(
        &mut self,
        matrix: usize,
        kind: MatrixKind,
        w: Option<&[u64]>,
        x: &[u64],
    ) -> Result<Vec<u64>> {
        let _ = matrix;
        mul_unprepared(self, kind, w, x)
    }

    /// `x + y` (local).
    fn add(&self, x: &[u64], y: &[u64]) -> Vec<u64> {
        let fp = self.fixed();
        x.iter().zip(y).map(|(a, b)| fp.add(*a, *b)).collect()
    }

    /// `x − y` (local).
    fn sub(&self, x: &[u64], y: &[u64]) -> Vec<u64> {
        let fp = self.fixed();
        x.iter().zip(y).map(|(a, b)| fp.sub(*a, *b)).collect()
    }

    /// `x + c` for a public ring element `c` (local).
    fn add_public(&self, x: &[u64], c: u64) -> Vec<u64> {
        let fp = self.fixed();
        if self.holds_public() { x.iter().map(|a| fp.add(*a, c)).collect() } else { x.to_vec() }
    }

    /// `x_i − c_j` for every value `x_i` and public ring element `c_j`, value-major
    /// (`x.len() · c.len()` values; local): one batch of comparisons of each value with
    /// public thresholds.
    fn sub_public_each(&self, x: &[u64], c: &[u64]) -> Vec<u64> {
        let fp = self.fixed();
        let public = self.holds_public();
        x.iter().flat_map(|v| c.iter().map(move |t| if public { fp.sub(*v, *t) } else { *v })).collect()
    }

    /// `n` copies of the public ring element `c`, as this party holds them (local).
    fn public(&self, n: usize, c: u64) -> Vec<u64> {
        vec![if self.holds_public() { self.fixed().reduce(c) } else { 0 }; n]
    }

    /// `k·x` for a public ring element `k` (an integer, or a fixed-point constant to be
    /// truncated after; local).
    fn scale(&self, x: &[u64], k: u64) -> Vec<u64> {
        let fp = self.fixed();
        x.iter().map(|a| fp.mul(*a, k)).collect()
    }

    /// Fixed-point product: `floor(x·y / 2^f)`, both at scale 2^f.
    fn mul_fixed(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        let f = self.fixed().frac_bits();
        let z = self.mul(x, y)?;
        self.truncate(&z, f)
    }

    /// [`Self::mul_fixed`] for products the caller **knows** to be small (real magnitude
    /// below `2^(ℓ−2−2f)`, 2048 at ℓ = 37, f = 12): the same result, truncated by
    /// [`Self::truncate_bounded`].
    fn mul_fixed_bounded(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        let f = self.fixed().frac_bits();
        let z = self.mul(x, y)?;
        self.truncate_bounded(&z, f)
    }

    /// Fixed-point product with a public real `c` (encoded at 2^f): `floor(x·c̄ / 2^f)`.
    fn mul_public_fixed(&mut self, x: &[u64], c: f64) -> Result<Vec<u64>> {
        let fp = self.fixed();
        let z = self.scale(x, fp.encode(c));
        self.truncate(&z, fp.frac_bits())
    }

    /// `b ? x : y` for `b` in {0, 1} (ring integers, e.g. from [`Self::sign`]): `y + b·(x − y)`.
    fn select(&mut self, b: &[u64], x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        let diff = self.sub(x, y);
        let picked = self.mul(b, &diff)?;
        Ok(self.add(y, &picked))
    }

    /// The maximum of each row of `x` (`cols` values per row): a tree of
    /// `max(a, b) = b + ReLU(a − b)`, `⌈log₂ cols⌉` ReLU batches.
    fn row_max(&mut self, x: &[u64], cols: usize) -> Result<Vec<u64>> {
        let rows = check_rows(x, cols, "row_max")?;
        let mut cur: Vec<Vec<u64>> = x.chunks(cols).map(<[u64]>::to_vec).collect();
        let mut k = cols;
        while k > 1 {
            let pairs = k / 2;
            let mut a = Vec::with_capacity(rows * pairs);
            let mut b = Vec::with_capacity(rows * pairs);
            for row in &cur {
                for i in 0..pairs {
                    a.push(row[2 * i]);
                    b.push(row[2 * i + 1]);
                }
            }
            let d = self.sub(&a, &b);
            let r = self.relu(&d)?;
            let m = self.add(&b, &r);
            for (row, maxima) in cur.iter_mut().zip(m.chunks(pairs)) {
                let last = (k % 2 == 1).then(|| row[k - 1]);
                row.clear();
                row.extend_from_slice(maxima);
                row.extend(last);
            }
            k = k.div_ceil(2);
        }
        Ok(cur.into_iter().map(|row| row[0]).collect())
    }

    /// The sum of each row of `x` (local).
    fn row_sum(&self, x: &[u64], cols: usize) -> Vec<u64> {
        let fp = self.fixed();
        x.chunks(cols.max(1)).map(|row| row.iter().fold(0, |s, v| fp.add(s, *v))).collect()
    }
}

/// The number of rows of `x` with `cols` values each.
pub(crate) fn check_rows(x: &[u64], cols: usize, context: &'static str) -> Result<usize> {
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(MpcError::invalid(context, format!("{} values are not rows of {cols}", x.len())));
    }
    Ok(x.len() / cols)
}

/// Each row's value repeated `cols` times (local).
pub(crate) fn broadcast(per_row: &[u64], cols: usize) -> Vec<u64> {
    per_row.iter().flat_map(|v| std::iter::repeat_n(*v, cols)).collect()
}

/// The whole of `row` repeated `n` times (local).
pub(crate) fn tile(row: &[u64], n: usize) -> Vec<u64> {
    (0..n).flat_map(|_| row.iter().copied()).collect()
}

/// The real magnitude `2^(ℓ−2−2f)` below which a product at `2^2f` is inside
/// [`RingOps::truncate_bounded`]'s range (2048 at ℓ = 37, f = 12).
pub(crate) fn bounded_product_limit(fp: FixedPoint) -> f64 {
    (f64::from(fp.ring_bits()) - 2.0 - 2.0 * f64::from(fp.frac_bits())).exp2()
}

/// The plaintext fixed-point implementation: operates on the values themselves. This is what
/// the simulated engine computes and the reference the two-party run is tested against.
#[derive(Clone, Copy, Debug)]
pub struct PlainOps {
    fixed: FixedPoint,
}

impl PlainOps {
    /// Operations in ring `fixed`.
    pub fn new(fixed: FixedPoint) -> Self {
        Self { fixed }
    }
}

impl RingOps for PlainOps {
    fn fixed(&self) -> FixedPoint {
        self.fixed
    }

    fn holds_public(&self) -> bool {
        true
    }

    fn mul(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        same_len(x, y, "mul")?;
        Ok(x.iter().zip(y).map(|(a, b)| self.fixed.mul(*a, *b)).collect())
    }

    fn truncate(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        Ok(x.iter().map(|v| self.fixed.truncate_by(*v, shift)).collect())
    }

    fn relu(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        Ok(x.iter().map(|v| if self.fixed.is_negative(*v) { 0 } else { self.fixed.reduce(*v) }).collect())
    }

    fn truncate_nonnegative(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        if x.iter().any(|v| self.fixed.is_negative(*v)) {
            return Err(MpcError::invalid(
                "truncate_nonnegative",
                "a negative value (the caller's precondition is broken)",
            ));
        }
        self.truncate(x, shift)
    }

    fn sign(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        Ok(x.iter().map(|v| u64::from(!self.fixed.is_negative(*v))).collect())
    }

    fn sign_within(&mut self, x: &[u64], bits: u32) -> Result<Vec<u64>> {
        let ell = self.fixed.ring_bits();
        if !(2..=ell).contains(&bits) {
            return Err(MpcError::invalid("sign_within", format!("a range of {bits} bits in a ring of {ell}")));
        }
        let half = 1u64 << (bits - 1);
        // x + 2^(bits−1) (mod 2^ℓ) is below 2^bits exactly for x inside the range.
        if x.iter().any(|v| self.fixed.add(*v, half) >> bits != 0) {
            return Err(MpcError::invalid(
                "sign_within",
                format!("a value outside ±2^{} (the caller's precondition is broken)", bits - 1),
            ));
        }
        self.sign(x)
    }

    fn mul_bit(&mut self, b: &[u64], x: &[u64]) -> Result<Vec<u64>> {
        if b.iter().any(|v| *v > 1) {
            return Err(MpcError::invalid(
                "mul_bit",
                "a factor that is not a bit (the caller's precondition is broken)",
            ));
        }
        self.mul(b, x)
    }

    fn mul_private(&mut self, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
        let w = w.ok_or_else(|| MpcError::invalid("mul_private", "the plaintext reference needs the weights"))?;
        self.mul(w, x)
    }
}

/// `floor(x / 2^shift)` by [`RingOps::truncate_bounded`] when the caller has shown every value
/// small (`bounded`), by [`RingOps::truncate`] otherwise: the same result either way.
pub(crate) fn truncate_known<O: RingOps + ?Sized>(
    ops: &mut O,
    x: &[u64],
    shift: u32,
    bounded: bool,
) -> Result<Vec<u64>> {
    if bounded { ops.truncate_bounded(x, shift) } else { ops.truncate(x, shift) }
}

/// Products with the server's private factor made without a preparation, for each of the
/// vectors of `x` (`n·cols` values): [`RingOps::mul_private_matvec`] for one vector of a full
/// matrix; otherwise one [`RingOps::mul_private`] batch of every element product (a full
/// matrix's vectors tiled `rows` times, summed per row).
fn mul_unprepared<O: RingOps + ?Sized>(
    ops: &mut O,
    kind: MatrixKind,
    w: Option<&[u64]>,
    x: &[u64],
) -> Result<Vec<u64>> {
    let cols = kind.cols();
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(MpcError::invalid("private product", format!("{} values for {kind:?}", x.len())));
    }
    let n = x.len() / cols;
    let repeated = w.map(|w| tile(w, n));
    match kind {
        MatrixKind::Full { rows, .. } if n == 1 => ops.mul_private_matvec(w, rows, x),
        MatrixKind::Full { rows, .. } => {
            let tiled: Vec<u64> = x.chunks(cols).flat_map(|v| tile(v, rows)).collect();
            let products = ops.mul_private(repeated.as_deref(), &tiled)?;
            Ok(ops.row_sum(&products, cols))
        }
        MatrixKind::Diagonal { .. } => ops.mul_private(repeated.as_deref(), x),
    }
}

fn same_len(x: &[u64], y: &[u64], context: &'static str) -> Result<()> {
    if x.len() != y.len() {
        return Err(MpcError::invalid(context, format!("{} values and {} values", x.len(), y.len())));
    }
    Ok(())
}

/// The two-party implementation: one party's shares, over its [`Session`] and channel. Both
/// parties run the same algorithm with their own `SessionOps`, in lockstep.
pub struct SessionOps<'a> {
    session: &'a mut Session,
    ch: &'a mut dyn Channel,
    /// The session's parameters while [`RingOps::fewest_rounds`] is on.
    saved: Option<protocols::Config>,
    /// Products with the server's private matrices, prepared ahead (empty when none were or
    /// the server refused).
    prepared: Vec<PreparedMatrix>,
}

impl std::fmt::Debug for SessionOps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionOps").field("party", &self.session.party()).finish_non_exhaustive()
    }
}

impl<'a> SessionOps<'a> {
    /// This party's operations over `session` and `ch`.
    pub fn new(session: &'a mut Session, ch: &'a mut dyn Channel) -> Self {
        Self { session, ch, saved: None, prepared: Vec::new() }
    }

    /// The channel's traffic counters so far (for cost breakdowns by operation).
    pub fn stats(&self) -> &crate::transport::Stats {
        self.ch.stats()
    }

    fn share(&self, x: &[u64]) -> AShare {
        AShare::from_wrapping(self.session.fixed_point(), x.to_vec())
    }
}

impl RingOps for SessionOps<'_> {
    fn fixed(&self) -> FixedPoint {
        self.session.fixed_point()
    }

    fn holds_public(&self) -> bool {
        self.session.party() == Party::P0
    }

    fn mul(&mut self, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
        protocols::mul_values(self.session, self.ch, x, y)
    }

    fn truncate(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        if shift == 0 {
            return Ok(x.to_vec());
        }
        let x = self.share(x);
        Ok(protocols::truncate_by(self.session, self.ch, &x, shift)?.into_values())
    }

    fn relu(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        let x = self.share(x);
        Ok(protocols::relu(self.session, self.ch, &x)?.into_values())
    }

    fn truncate_nonnegative(&mut self, x: &[u64], shift: u32) -> Result<Vec<u64>> {
        let x = self.share(x);
        Ok(protocols::truncate_nonnegative(self.session, self.ch, &x, shift)?.into_values())
    }

    fn sign(&mut self, x: &[u64]) -> Result<Vec<u64>> {
        let x = self.share(x);
        let bits = protocols::drelu(self.session, self.ch, &x)?;
        Ok(protocols::b2a(self.session, self.ch, &bits)?.into_values())
    }

    fn sign_within(&mut self, x: &[u64], bits: u32) -> Result<Vec<u64>> {
        self.sign_against(x, &[0], bits)
    }

    fn sign_against(&mut self, x: &[u64], thresholds: &[u64], bits: u32) -> Result<Vec<u64>> {
        if thresholds.is_empty() {
            return Ok(Vec::new());
        }
        let plane = protocols::drelu::drelu_against_plane_in(self.session, self.ch, x, thresholds, bits)?;
        let bits = BShare::new(protocols::planes::to_bitvec(plane, x.len() * thresholds.len())?);
        Ok(protocols::b2a(self.session, self.ch, &bits)?.into_values())
    }

    fn mul_bit(&mut self, b: &[u64], x: &[u64]) -> Result<Vec<u64>> {
        same_len(b, x, "mul_bit")?;
        let mut out = Vec::with_capacity(x.len());
        let batch = self.session.config().max_batch.max(1);
        for (b, x) in b.chunks(batch).zip(x.chunks(batch)) {
            out.extend(protocols::mux::mux_values(self.session, self.ch, &BitVec::from_lsbs(b), x)?);
        }
        Ok(out)
    }

    fn mul_private(&mut self, w: Option<&[u64]>, x: &[u64]) -> Result<Vec<u64>> {
        protocols::beaver::mul_private_values(self.session, self.ch, w, x)
    }

    fn mul_private_matvec(&mut self, w: Option<&[u64]>, rows: usize, x: &[u64]) -> Result<Vec<u64>> {
        protocols::beaver::mul_private_matvec_values(self.session, self.ch, w, rows, x)
    }

    fn reserve_products(&mut self, n: usize) -> Result<()> {
        protocols::beaver::preprocess_triples(self.session, self.ch, n)
    }

    fn prepare_private_matrices(&mut self, matrices: &[MatrixSpec<'_>]) -> Result<()> {
        self.prepared = protocols::prepared::prepare(self.session, self.ch, matrices)?.unwrap_or_default();
        Ok(())
    }

    fn mul_private_matrix(
        &mut self,
        matrix: usize,
        kind: MatrixKind,
        w: Option<&[u64]>,
        x: &[u64],
    ) -> Result<Vec<u64>> {
        match self.prepared.get_mut(matrix) {
            Some(p) if p.kind() == kind && p.remaining() * kind.cols() >= x.len() => p.mul(self.session, self.ch, w, x),
            _ => mul_unprepared(self, kind, w, x),
        }
    }

    fn fewest_rounds(&mut self, on: bool) -> Result<()> {
        match (on, self.saved) {
            (true, None) => {
                let config = self.session.config();
                self.session.set_config(protocols::Config { chunk_bits: protocols::MAX_CHUNK_BITS, ..config })?;
                self.saved = Some(config);
            }
            (false, Some(config)) => {
                self.session.set_config(config)?;
                self.saved = None;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shares::{reconstruct, share};
    use crate::transport::memory;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Runs `f` on the plaintext values and between two parties on shares of them; returns
    /// (plaintext result, reconstructed two-party result).
    pub(crate) fn both<F>(fp: FixedPoint, x: &[u64], f: F) -> Result<(Vec<u64>, Vec<u64>)>
    where
        F: Fn(&mut dyn RingOps, &[u64]) -> Result<Vec<u64>> + Send + Sync + Copy + 'static,
    {
        let plain = f(&mut PlainOps::new(fp), x)?;
        let (x0, x1) = share(fp, x, &mut ChaCha20Rng::seed_from_u64(5));
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client = std::thread::spawn(move || -> Result<Vec<u64>> {
            let mut s = Session::setup(&mut c1, Party::P1, fp, 2)?;
            f(&mut SessionOps::new(&mut s, &mut c1), x1.values())
        });
        let mut s = Session::setup(&mut c0, Party::P0, fp, 1)?;
        let z0 = f(&mut SessionOps::new(&mut s, &mut c0), x0.values())?;
        let z1 = client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
        Ok((plain, reconstruct(&AShare::from_wrapping(fp, z0), &AShare::from_wrapping(fp, z1))?))
    }

    #[test]
    fn primitives_agree_bit_for_bit_between_plaintext_and_two_parties() -> Result<()> {
        let fp = FixedPoint::default();
        let x: Vec<u64> = [-7.5, -0.001, 0.0, 0.25, 3.0, 100.125, -2048.0].iter().map(|v| fp.encode(*v)).collect();
        let (plain, real) = both(fp, &x, |ops, x| {
            let sq = ops.mul_fixed(x, x)?;
            let r = ops.relu(x)?;
            let s = ops.sign(x)?;
            let sel = ops.select(&s, &sq, &r)?;
            let m = ops.row_max(x, 7)?;
            let h = ops.mul_public_fixed(x, -0.3)?;
            let t = ops.truncate_nonnegative(&r, 3)?;
            let sx = ops.mul_bit(&s, x)?;
            Ok([sq, r, s, sel, m, h, ops.add_public(x, 5), t, sx].concat())
        })?;
        assert_eq!(plain, real);
        let relu_shifted = x.iter().map(|v| if fp.is_negative(*v) { 0 } else { v >> 3 });
        assert_eq!(plain[plain.len() - 14..plain.len() - 7], relu_shifted.collect::<Vec<_>>()[..]);
        // A bit product (multiplexed from the shares' lowest bits) is the ReLU.
        assert_eq!(plain[plain.len() - 7..], plain[7..14]);
        // The plaintext reference refuses what the two-party protocol would get wrong.
        assert!(PlainOps::new(fp).truncate_nonnegative(&x, 3).is_err());
        assert!(PlainOps::new(fp).mul_bit(&[0, 1, 2], &[5, 5, 5]).is_err());
        assert_eq!(plain[..7], x.iter().map(|v| fp.truncate(fp.mul(*v, *v))).collect::<Vec<_>>()[..]);
        assert_eq!(plain[14..21], [0, 0, 1, 1, 1, 1, 0]);
        assert_eq!(plain[28], fp.encode(100.125));
        Ok(())
    }

    /// The narrow-ring sign is the sign on `[−2^(bits−1), 2^(bits−1))`, edges included, between
    /// two parties as in plaintext; the plaintext reference refuses a value past either edge.
    #[test]
    fn narrow_sign_is_exact_inside_its_range_and_refused_outside() -> Result<()> {
        let fp = FixedPoint::default();
        let bits = 11;
        let edge = 1u64 << (bits - 1);
        let x: Vec<u64> = [fp.neg(edge), edge - 1, 0, fp.neg(1), 1, 968, fp.neg(968), fp.neg(500)].to_vec();
        let (plain, real) =
            both(
                fp,
                &x,
                move |ops, x| Ok([ops.sign_within(x, bits)?, ops.sign_within(x, 37)?, ops.sign(x)?].concat()),
            )?;
        assert_eq!(plain, real);
        assert_eq!(plain[..8], [0, 1, 1, 0, 1, 1, 0, 0]);
        assert_eq!(plain[..8], plain[8..16]);
        assert_eq!(plain[..8], plain[16..]);
        let ops = &mut PlainOps::new(fp);
        assert!(ops.sign_within(&[edge], bits).is_err());
        assert!(ops.sign_within(&[fp.neg(edge + 1)], bits).is_err());
        assert!(ops.sign_within(&[0], 1).is_err() && ops.sign_within(&[0], 38).is_err());
        Ok(())
    }

    /// One secret against many public thresholds, its comparisons sharing their leaf OTs
    /// (pads stretched past one 128-bit block from 4 thresholds of 5-bit chunks on), is the
    /// separate tests' bits: every fan-out, ring width and chunk width, with passes split
    /// inside a group's elements, on IKNP and on Ferret; and (IKNP's bytes) the leaf OTs are
    /// the values', not the comparisons'.
    #[test]
    fn signs_against_thresholds_are_the_separate_tests_with_shared_leaf_ots() -> Result<()> {
        let fp = FixedPoint::default();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        for (bits, count, chunk_bits, max_batch, silent) in [
            (11, 32, 6, 1 << 16, false),
            (11, 3, 4, 7, false),
            (23, 80, 6, 100, false),
            (37, 80, 6, 1 << 16, false),
            (37, 1, 4, 5, false),
            (5, 4, 2, 3, false),
            (11, 32, 6, 1 << 16, true),
            (37, 80, 4, 50, true),
        ] {
            use rand::Rng;
            let half = 1i64 << (bits - 2);
            // Values and thresholds within ±2^(bits−2): their differences within ±2^(bits−1).
            let x: Vec<u64> = (0..9).map(|_| fp.reduce(rng.random_range(-half..half) as u64)).collect();
            let t: Vec<u64> = (0..count).map(|_| fp.reduce(rng.random_range(-half..half) as u64)).collect();
            let (x0, x1) = share(fp, &x, &mut rng);
            // Both tests in one session: the shared one, then the separate one; their bytes.
            type Run = (Vec<u64>, Vec<u64>, u64, u64);
            let run = move |s: &mut Session, ch: &mut dyn Channel, x: &[u64], t: &[u64]| -> Result<Run> {
                s.set_config(protocols::Config { chunk_bits, max_batch })?;
                let start = ch.stats().total().bytes_total();
                let shared = SessionOps::new(s, ch).sign_against(x, t, bits)?;
                let mid = ch.stats().total().bytes_total();
                let ops = &mut SessionOps::new(s, ch);
                let separate = ops.sign_within(&ops.sub_public_each(x, t), bits)?;
                let end = ch.stats().total().bytes_total();
                Ok((shared, separate, mid - start, end - mid))
            };
            let (mut c0, mut c1) = memory::pair(Default::default());
            let (t1, x1) = (t.clone(), x1.values().to_vec());
            // IKNP, or Ferret (a small insecure parameter set: the leaves only see random OTs).
            let setup = move |ch: &mut dyn Channel, party: Party, seed: u64| {
                let rng = ChaCha20Rng::seed_from_u64(seed);
                if silent {
                    Session::setup_silent_with_params(ch, party, fp, rng, crate::ot::ferret::tests::SMALL)
                } else {
                    Session::setup_with_rng(ch, party, fp, rng)
                }
            };
            let client = std::thread::spawn(move || -> Result<Run> {
                let mut s = setup(&mut c1, Party::P1, 2)?;
                run(&mut s, &mut c1, &x1, &t1)
            });
            let mut s = setup(&mut c0, Party::P0, 1)?;
            let (a0, b0, shared_bytes, separate_bytes) = run(&mut s, &mut c0, x0.values(), &t)?;
            let (a1, b1, ..) = client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
            let open = |z0: Vec<u64>, z1: Vec<u64>| {
                reconstruct(&AShare::from_wrapping(fp, z0), &AShare::from_wrapping(fp, z1))
            };
            let (real, separate) = (open(a0, a1)?, open(b0, b1)?);
            let plain = PlainOps::new(fp).sign_against(&x, &t, bits)?;
            let case = format!(
                "bits {bits}, {count} thresholds, {chunk_bits}-bit chunks, passes of {max_batch}, silent {silent}"
            );
            assert_eq!(real, plain, "{case}");
            assert_eq!(separate, plain, "{case}");
            // IKNP's random OTs are 16 bytes each (in blocks of 128): sharing the leaves of
            // many thresholds shows in the bytes.
            if count >= 32 && !silent {
                assert!(
                    2 * shared_bytes < separate_bytes,
                    "{case}: {shared_bytes} B shared, {separate_bytes} B separate"
                );
            }
            let expected: Vec<u64> =
                x.iter().flat_map(|v| t.iter().map(|u| u64::from(!fp.is_negative(fp.sub(*v, *u))))).collect();
            assert_eq!(plain, expected);
        }
        Ok(())
    }

    /// The bounded truncation is the signed one on `[−2^(ℓ−2), 2^(ℓ−2))`, edges included,
    /// between two parties as in plaintext; the plaintext reference refuses a value past
    /// either edge.
    #[test]
    fn bounded_truncation_is_exact_inside_its_range_and_refused_outside() -> Result<()> {
        let fp = FixedPoint::default();
        let edge = 1u64 << (fp.ring_bits() - 2);
        let x: Vec<u64> = [edge - 1, fp.neg(edge), 0, fp.neg(1), 4095, 4096, fp.neg(4097), fp.encode(-3.7)].to_vec();
        for shift in [1, fp.frac_bits(), fp.frac_bits() + 1, fp.ring_bits() - 2] {
            let (plain, real) = both(fp, &x, move |ops, x| ops.truncate_bounded(x, shift))?;
            let signed: Vec<u64> = x.iter().map(|v| fp.truncate_by(*v, shift)).collect();
            assert_eq!((&plain, &real), (&signed, &signed), "shift {shift}");
        }
        let ops = &mut PlainOps::new(fp);
        assert!(ops.truncate_bounded(&[edge], 12).is_err());
        assert!(ops.truncate_bounded(&[fp.neg(edge + 1)], 12).is_err());
        // Past ℓ − 2 bits the bias is no multiple of 2^shift: the general truncation.
        assert_eq!(
            ops.truncate_bounded(&[fp.neg(2)], fp.ring_bits() - 1)?,
            ops.truncate(&[fp.neg(2)], fp.ring_bits() - 1)?
        );
        Ok(())
    }

    #[test]
    fn fewest_rounds_widens_the_leaves_for_its_duration_and_changes_no_result() -> Result<()> {
        let fp = FixedPoint::default();
        let x: Vec<u64> = [-3.5, 0.0, 2.25, -0.001, 700.0].iter().map(|v| fp.encode(*v)).collect();
        let (x0, x1) = share(fp, &x, &mut ChaCha20Rng::seed_from_u64(9));
        // Each party: (sign and truncation at the session's 4-bit leaves, the same at the
        // widest, leaves before, during and after).
        fn party(s: &mut Session, ch: &mut dyn Channel, x: &[u64]) -> Result<(Vec<u64>, Vec<u64>, [u32; 3])> {
            let mut ops = SessionOps::new(s, ch);
            let before = ops.session.config().chunk_bits;
            let narrow = [ops.sign(x)?, ops.truncate(x, 7)?].concat();
            ops.fewest_rounds(true)?;
            ops.fewest_rounds(true)?;
            let during = ops.session.config().chunk_bits;
            let wide = [ops.sign(x)?, ops.truncate(x, 7)?].concat();
            ops.fewest_rounds(false)?;
            Ok((narrow, wide, [before, during, ops.session.config().chunk_bits]))
        }
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client = std::thread::spawn(move || -> Result<_> {
            let mut s = Session::setup(&mut c1, Party::P1, fp, 2)?.with_config(protocols::Config::silent())?;
            party(&mut s, &mut c1, x1.values())
        });
        let mut s = Session::setup(&mut c0, Party::P0, fp, 1)?.with_config(protocols::Config::silent())?;
        let (n0, w0, leaves) = party(&mut s, &mut c0, x0.values())?;
        let (n1, w1, _) = client.join().map_err(|_| MpcError::invalid("test", "client panicked"))??;
        assert_eq!(leaves, [4, protocols::MAX_CHUNK_BITS, 4]);
        let open = |a: Vec<u64>, b: Vec<u64>| reconstruct(&AShare::from_wrapping(fp, a), &AShare::from_wrapping(fp, b));
        let (narrow, wide) = (open(n0, n1)?, open(w0, w1)?);
        let plain = [PlainOps::new(fp).sign(&x)?, PlainOps::new(fp).truncate(&x, 7)?].concat();
        assert_eq!((&narrow, &wide), (&plain, &plain));
        Ok(())
    }
}
