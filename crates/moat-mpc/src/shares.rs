//! Secret shares: additive over the ring Z_2^ℓ of [`FixedPoint`], and XOR over bits.
//!
//! A value `x ∈ Z_2^ℓ` is held as `⟨x⟩ = (x₀, x₁)` with `x₀ + x₁ = x mod 2^ℓ`, party `Pᵢ`
//! holding `xᵢ`; one share alone is uniform and says nothing about `x`. Addition, subtraction,
//! negation and multiplication by a public constant are local (no communication); adding a
//! public constant is done by [`Party::P0`] only. Bits are shared by XOR (`b = b₀ ⊕ b₁`), where
//! XOR and AND with a public bit are local and `NOT` is done by `P0` only.
//!
//! Share vectors carry their [`FixedPoint`] setting; operations on shares of different rings
//! or lengths are refused ([`MpcError::InvalidArgument`]) instead of producing garbage.

use moat_nn::FixedPoint;
use rand::{CryptoRng, RngCore};

use crate::bits::BitVec;
use crate::error::{MpcError, Result};

/// Which of the two parties this is.
///
/// The engine's convention is that `P0` is the server (model owner) and `P1` the client;
/// share arithmetic only needs the distinction for public constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Party {
    /// Party 0 (adds public constants, flips negated bits).
    P0,
    /// Party 1.
    P1,
}

impl Party {
    /// 0 or 1.
    pub fn index(self) -> usize {
        match self {
            Party::P0 => 0,
            Party::P1 => 1,
        }
    }

    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::P0 => Party::P1,
            Party::P1 => Party::P0,
        }
    }
}

/// One party's additive shares of a vector of ring elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AShare {
    fp: FixedPoint,
    values: Vec<u64>,
}

/// Splits `values` (reduced mod 2^ℓ or not; they are reduced) into two uniformly random
/// additive share vectors, `s0 + s1 = values mod 2^ℓ`.
pub fn share<R: RngCore + CryptoRng>(fp: FixedPoint, values: &[u64], rng: &mut R) -> (AShare, AShare) {
    let s0: Vec<u64> = values.iter().map(|_| fp.reduce(rng.next_u64())).collect();
    let s1 = values.iter().zip(&s0).map(|(&v, &r)| fp.sub(v, r)).collect();
    (AShare { fp, values: s0 }, AShare { fp, values: s1 })
}

/// Opens a sharing: `s0 + s1 mod 2^ℓ`.
pub fn reconstruct(s0: &AShare, s1: &AShare) -> Result<Vec<u64>> {
    Ok(s0.try_add(s1)?.values)
}

impl AShare {
    /// Shares from ring elements; every value must be reduced (`< 2^ℓ`).
    pub fn new(fp: FixedPoint, values: Vec<u64>) -> Result<Self> {
        if let Some((i, v)) = values.iter().enumerate().find(|&(_, &v)| v > fp.mask()) {
            return Err(MpcError::invalid(
                "AShare::new",
                format!("value {v:#x} at index {i} is not reduced mod 2^{}", fp.ring_bits()),
            ));
        }
        Ok(Self { fp, values })
    }

    /// Shares from arbitrary `u64`s, reduced mod 2^ℓ.
    pub fn from_wrapping(fp: FixedPoint, mut values: Vec<u64>) -> Self {
        for v in &mut values {
            *v = fp.reduce(*v);
        }
        Self { fp, values }
    }

    /// `n` zero shares (a valid sharing of zeros when both parties use it).
    pub fn zeros(fp: FixedPoint, n: usize) -> Self {
        Self { fp, values: vec![0; n] }
    }

    /// The party's share of public `values`: `P0` holds them, `P1` holds zeros.
    pub fn of_public(fp: FixedPoint, party: Party, values: &[u64]) -> Self {
        match party {
            Party::P0 => Self::from_wrapping(fp, values.to_vec()),
            Party::P1 => Self::zeros(fp, values.len()),
        }
    }

    /// The ring setting.
    pub fn fixed_point(&self) -> FixedPoint {
        self.fp
    }

    /// ℓ.
    pub fn ring_bits(&self) -> u32 {
        self.fp.ring_bits()
    }

    /// The share values.
    pub fn values(&self) -> &[u64] {
        &self.values
    }

    /// The share values, owned.
    pub fn into_values(self) -> Vec<u64> {
        self.values
    }

    /// Number of shared elements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no elements are shared.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn check_same(&self, other: &AShare, context: &'static str) -> Result<()> {
        if self.fp != other.fp {
            return Err(MpcError::invalid(context, format!("ring mismatch: {:?} vs {:?}", self.fp, other.fp)));
        }
        if self.len() != other.len() {
            return Err(MpcError::invalid(context, format!("length mismatch: {} vs {}", self.len(), other.len())));
        }
        Ok(())
    }

    fn zip_with(&self, other: &AShare, context: &'static str, f: impl Fn(u64, u64) -> u64) -> Result<AShare> {
        self.check_same(other, context)?;
        let values = self.values.iter().zip(&other.values).map(|(&a, &b)| f(a, b)).collect();
        Ok(AShare { fp: self.fp, values })
    }

    /// `⟨x⟩ + ⟨y⟩` (local).
    pub fn try_add(&self, other: &AShare) -> Result<AShare> {
        let fp = self.fp;
        self.zip_with(other, "AShare::try_add", |a, b| fp.add(a, b))
    }

    /// `⟨x⟩ − ⟨y⟩` (local).
    pub fn try_sub(&self, other: &AShare) -> Result<AShare> {
        let fp = self.fp;
        self.zip_with(other, "AShare::try_sub", |a, b| fp.sub(a, b))
    }

    /// `−⟨x⟩` (local).
    pub fn neg(&self) -> AShare {
        AShare { fp: self.fp, values: self.values.iter().map(|&a| self.fp.neg(a)).collect() }
    }

    /// `c · ⟨x⟩` for a public ring element `c` (local; no truncation).
    pub fn mul_public(&self, c: u64) -> AShare {
        AShare { fp: self.fp, values: self.values.iter().map(|&a| self.fp.mul(a, c)).collect() }
    }

    /// `cᵢ · ⟨xᵢ⟩` element-wise for public `c` (local; no truncation).
    pub fn mul_public_vec(&self, c: &[u64]) -> Result<AShare> {
        if c.len() != self.len() {
            return Err(MpcError::invalid(
                "AShare::mul_public_vec",
                format!("{} constants for {} shares", c.len(), self.len()),
            ));
        }
        let values = self.values.iter().zip(c).map(|(&a, &k)| self.fp.mul(a, k)).collect();
        Ok(AShare { fp: self.fp, values })
    }

    /// `⟨x⟩ + c` for public `c`: `P0` adds, `P1` keeps its share.
    pub fn add_public(&self, party: Party, c: &[u64]) -> Result<AShare> {
        let public = AShare::of_public(self.fp, party, c);
        self.zip_with(&public, "AShare::add_public", |a, b| self.fp.add(a, b))
    }

    /// `⟨x⟩ − c` for public `c`.
    pub fn sub_public(&self, party: Party, c: &[u64]) -> Result<AShare> {
        let public = AShare::of_public(self.fp, party, c);
        self.zip_with(&public, "AShare::sub_public", |a, b| self.fp.sub(a, b))
    }

    /// The shares of the selected elements, in the order of `indices` (e.g. a gather for a
    /// layer's im2col); an out-of-range index is an error.
    pub fn gather(&self, indices: &[usize]) -> Result<AShare> {
        let values = indices
            .iter()
            .map(|&i| {
                self.values.get(i).copied().ok_or_else(|| {
                    MpcError::invalid("AShare::gather", format!("index {i} out of range for {} shares", self.len()))
                })
            })
            .collect::<Result<_>>()?;
        Ok(AShare { fp: self.fp, values })
    }

    /// Reinterprets the shares in a smaller ring Z_2^ℓ' (ℓ' ≤ ℓ): reduction mod 2^ℓ' commutes
    /// with addition, so this is local and exact.
    pub fn reduce_to(&self, fp: FixedPoint) -> Result<AShare> {
        if fp.ring_bits() > self.fp.ring_bits() {
            return Err(MpcError::invalid(
                "AShare::reduce_to",
                format!("cannot widen a {}-bit sharing to {} bits locally", self.fp.ring_bits(), fp.ring_bits()),
            ));
        }
        Ok(AShare::from_wrapping(fp, self.values.clone()))
    }
}

/// One party's XOR shares of a vector of bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BShare {
    bits: BitVec,
}

/// Splits `bits` into two uniformly random XOR share vectors.
pub fn share_bits<R: RngCore + CryptoRng>(bits: &BitVec, rng: &mut R) -> (BShare, BShare) {
    let s0 = BitVec::random(bits.len(), rng);
    let s1 = BitVec::from_fn(bits.len(), |i| (bits.bit(i) ^ s0.bit(i)) == 1);
    (BShare { bits: s0 }, BShare { bits: s1 })
}

/// Opens a bit sharing: `s0 ⊕ s1`.
pub fn reconstruct_bits(s0: &BShare, s1: &BShare) -> Result<BitVec> {
    Ok(s0.try_xor(s1)?.bits)
}

impl BShare {
    /// Wraps a party's share bits.
    pub fn new(bits: BitVec) -> Self {
        Self { bits }
    }

    /// The party's share of public `bits`: `P0` holds them, `P1` holds zeros.
    pub fn of_public(party: Party, bits: &BitVec) -> Self {
        match party {
            Party::P0 => Self { bits: bits.clone() },
            Party::P1 => Self { bits: BitVec::zeros(bits.len()) },
        }
    }

    /// The share bits.
    pub fn bits(&self) -> &BitVec {
        &self.bits
    }

    /// The share bits, owned.
    pub fn into_bits(self) -> BitVec {
        self.bits
    }

    /// Number of shared bits.
    pub fn len(&self) -> usize {
        self.bits.len()
    }

    /// True when no bits are shared.
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }

    fn length_error(context: &'static str, a: usize, b: usize) -> MpcError {
        MpcError::invalid(context, format!("length mismatch: {a} vs {b}"))
    }

    /// `⟨a⟩ ⊕ ⟨b⟩` (local).
    pub fn try_xor(&self, other: &BShare) -> Result<BShare> {
        let bits =
            self.bits.xor(&other.bits).ok_or_else(|| Self::length_error("BShare::try_xor", self.len(), other.len()))?;
        Ok(BShare { bits })
    }

    /// `⟨a⟩ ⊕ c` for public `c`: `P0` flips, `P1` keeps its share.
    pub fn xor_public(&self, party: Party, c: &BitVec) -> Result<BShare> {
        self.try_xor(&BShare::of_public(party, c))
    }

    /// `⟨a⟩ ∧ c` for public `c` (local: each party ANDs its share).
    pub fn and_public(&self, c: &BitVec) -> Result<BShare> {
        let bits = self.bits.and(c).ok_or_else(|| Self::length_error("BShare::and_public", self.len(), c.len()))?;
        Ok(BShare { bits })
    }

    /// `¬⟨a⟩`: `P0` negates its share.
    pub fn not(&self, party: Party) -> BShare {
        match party {
            Party::P0 => BShare { bits: self.bits.not() },
            Party::P1 => self.clone(),
        }
    }
}

/// Bit `bit` of every element (a plaintext helper for bit-decomposition tests and protocols).
pub fn bit_plane(values: &[u64], bit: u32) -> BitVec {
    BitVec::from_fn(values.len(), |i| bit < 64 && (values[i] >> bit) & 1 == 1)
}

/// The most significant bit (the sign, bit ℓ−1) of every element.
pub fn msb_plane(fp: FixedPoint, values: &[u64]) -> BitVec {
    bit_plane(values, fp.ring_bits() - 1)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops over several arrays read best in tests
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn ring(bits: u32) -> FixedPoint {
        FixedPoint::new(bits, 0).unwrap_or_default()
    }

    /// Values including the ring's edges: 0, 1, 2^(ℓ−1) (most negative), 2^ℓ − 1 (−1).
    fn values_with_edges(fp: FixedPoint, raw: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = raw.iter().map(|&x| fp.reduce(x)).collect();
        v.extend([0, 1, 1u64 << (fp.ring_bits() - 1), fp.mask(), fp.mask() - 1]);
        v
    }

    proptest! {
        #[test]
        fn share_reconstruct(raw in proptest::collection::vec(any::<u64>(), 0..50), bits in 2u32..=64, seed in any::<u64>()) {
            let fp = ring(bits);
            let x = values_with_edges(fp, &raw);
            let (s0, s1) = share(fp, &x, &mut ChaCha20Rng::seed_from_u64(seed));
            prop_assert!(s0.values().iter().chain(s1.values()).all(|&v| v <= fp.mask()));
            prop_assert_eq!(reconstruct(&s0, &s1).ok(), Some(x.clone()));
            // P1's share of a fresh sharing is not the secret (probability 2^-ℓ per element).
            if bits >= 32 && x.len() >= 8 {
                prop_assert_ne!(s1.values(), &x[..]);
            }
        }

        #[test]
        fn linear_ops_are_homomorphic(raw_x in proptest::collection::vec(any::<u64>(), 1..30), raw_c in any::<u64>(), bits in 2u32..=64, seed in any::<u64>()) {
            let fp = ring(bits);
            let x = values_with_edges(fp, &raw_x);
            let y: Vec<u64> = x.iter().rev().map(|&v| fp.mul(v, 3)).collect();
            let c = fp.reduce(raw_c);
            let cs: Vec<u64> = (0..x.len() as u64).map(|i| fp.reduce(i.wrapping_mul(raw_c))).collect();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let (x0, x1) = share(fp, &x, &mut rng);
            let (y0, y1) = share(fp, &y, &mut rng);
            let open = |a: &AShare, b: &AShare| reconstruct(a, b).map_err(|e| TestCaseError::fail(e.to_string()));
            let add: Vec<u64> = x.iter().zip(&y).map(|(&a, &b)| fp.add(a, b)).collect();
            let sub: Vec<u64> = x.iter().zip(&y).map(|(&a, &b)| fp.sub(a, b)).collect();
            let f = |e: MpcError| TestCaseError::fail(e.to_string());
            prop_assert_eq!(open(&x0.try_add(&y0).map_err(f)?, &x1.try_add(&y1).map_err(f)?)?, add.clone());
            prop_assert_eq!(open(&x0.try_sub(&y0).map_err(f)?, &x1.try_sub(&y1).map_err(f)?)?, sub);
            prop_assert_eq!(open(&x0.neg(), &x1.neg())?, x.iter().map(|&a| fp.neg(a)).collect::<Vec<_>>());
            prop_assert_eq!(open(&x0.mul_public(c), &x1.mul_public(c))?, x.iter().map(|&a| fp.mul(a, c)).collect::<Vec<_>>());
            prop_assert_eq!(
                open(&x0.mul_public_vec(&cs).map_err(f)?, &x1.mul_public_vec(&cs).map_err(f)?)?,
                x.iter().zip(&cs).map(|(&a, &k)| fp.mul(a, k)).collect::<Vec<_>>()
            );
            prop_assert_eq!(
                open(&x0.add_public(Party::P0, &cs).map_err(f)?, &x1.add_public(Party::P1, &cs).map_err(f)?)?,
                x.iter().zip(&cs).map(|(&a, &k)| fp.add(a, k)).collect::<Vec<_>>()
            );
            prop_assert_eq!(
                open(&x0.sub_public(Party::P0, &cs).map_err(f)?, &x1.sub_public(Party::P1, &cs).map_err(f)?)?,
                x.iter().zip(&cs).map(|(&a, &k)| fp.sub(a, k)).collect::<Vec<_>>()
            );
            // x + (−x) = 0 and c·x + c·y = c·(x + y).
            prop_assert!(open(&x0.try_add(&x0.neg()).map_err(f)?, &x1.try_add(&x1.neg()).map_err(f)?)?.iter().all(|&v| v == 0));
            let lhs = open(&x0.mul_public(c).try_add(&y0.mul_public(c)).map_err(f)?, &x1.mul_public(c).try_add(&y1.mul_public(c)).map_err(f)?)?;
            prop_assert_eq!(lhs, add.iter().map(|&a| fp.mul(a, c)).collect::<Vec<_>>());
        }

        #[test]
        fn reduce_to_smaller_ring_commutes(raw in proptest::collection::vec(any::<u64>(), 1..30), bits in 3u32..=64, seed in any::<u64>()) {
            let fp = ring(bits);
            let small = ring(bits - 1);
            let x = values_with_edges(fp, &raw);
            let (x0, x1) = share(fp, &x, &mut ChaCha20Rng::seed_from_u64(seed));
            let f = |e: MpcError| TestCaseError::fail(e.to_string());
            let opened = reconstruct(&x0.reduce_to(small).map_err(f)?, &x1.reduce_to(small).map_err(f)?).map_err(f)?;
            prop_assert_eq!(opened, x.iter().map(|&v| small.reduce(v)).collect::<Vec<_>>());
            prop_assert!(x0.reduce_to(ring(64)).is_err() || bits == 64);
        }

        #[test]
        fn bit_shares_are_xor_homomorphic(a in proptest::collection::vec(any::<bool>(), 0..150), seed in any::<u64>()) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let a = BitVec::from_bools(&a);
            let b = BitVec::random(a.len(), &mut rng);
            let c = BitVec::random(a.len(), &mut rng);
            let (a0, a1) = share_bits(&a, &mut rng);
            let (b0, b1) = share_bits(&b, &mut rng);
            let f = |e: MpcError| TestCaseError::fail(e.to_string());
            prop_assert_eq!(reconstruct_bits(&a0, &a1).map_err(f)?, a.clone());
            let x = reconstruct_bits(&a0.try_xor(&b0).map_err(f)?, &a1.try_xor(&b1).map_err(f)?).map_err(f)?;
            prop_assert_eq!(Some(x), a.xor(&b));
            let x = reconstruct_bits(&a0.xor_public(Party::P0, &c).map_err(f)?, &a1.xor_public(Party::P1, &c).map_err(f)?).map_err(f)?;
            prop_assert_eq!(Some(x), a.xor(&c));
            let x = reconstruct_bits(&a0.and_public(&c).map_err(f)?, &a1.and_public(&c).map_err(f)?).map_err(f)?;
            prop_assert_eq!(Some(x), a.and(&c));
            prop_assert_eq!(reconstruct_bits(&a0.not(Party::P0), &a1.not(Party::P1)).map_err(f)?, a.not());
        }
    }

    #[test]
    fn mismatches_are_errors() {
        let fp = FixedPoint::default();
        let a = AShare::zeros(fp, 3);
        assert!(a.try_add(&AShare::zeros(fp, 4)).is_err());
        assert!(a.try_add(&AShare::zeros(ring(40), 3)).is_err());
        assert!(AShare::new(fp, vec![1 << 37]).is_err());
        assert!(a.gather(&[0, 3]).is_err());
        assert!(BShare::new(BitVec::zeros(2)).try_xor(&BShare::new(BitVec::zeros(3))).is_err());
    }

    #[test]
    fn planes_pick_bits() {
        let fp = FixedPoint::default();
        let v = [fp.encode(-1.0), fp.encode(2.0), 0];
        assert_eq!(msb_plane(fp, &v).to_bools(), vec![true, false, false]);
        assert_eq!(bit_plane(&v, 13).to_bools(), vec![true, true, false]);
    }
}
