//! The BFV operations of the protocol, on fhe-math's RNS polynomials, with moat's wire format.
//!
//! BFV with `t = 2^ℓ` and coefficient encoding: a ciphertext `(c₀, c₁)` of `m ∈ Z_t[X]/(X^N+1)`
//! has phase `c₀ + c₁·s = ⌊q/t⌉·m + e (mod q)`. The operations are written here rather than
//! through fhe.rs's `SecretKey`/`Ciphertext` API because the protocol needs things that API does
//! not offer: encryption driven by the caller's seeded RNG (fhe.rs draws the seed of `c₁` from
//! the thread RNG), the exact encoding `round(q·m/t)` (fhe.rs uses `⌊q/t⌋·m`, whose error
//! `(q mod t)·m/t` would be multiplied by the weights), weights lifted *centred* (fhe.rs lifts
//! plaintexts to `[0, t)`), noise flooding, a compressed response and validation of every
//! value received from the peer. The ciphertexts are standard BFV ciphertexts: the tests decrypt
//! them with fhe.rs.
//!
//! **Wire format.** Residues are bit-packed ([`crate::transport::frame::RingPacker`]) at
//! `⌈log₂ qᵢ⌉` bits. Polynomials in NTT form travel in fhe-math's evaluation order, which
//! depends on its NTT backend (moat builds it with `tfhe-ntt`): both parties must run the same
//! build, as they do when both are moat.
//!
//! * public key (client → server, once): 32-byte seed of `a`, then `b = −a·s + e` (NTT form);
//! * query ciphertext (client → server): 32-byte seed of `c₁`, then `c₀` (NTT form) —
//!   [`HeParams::query_bytes`] (55.8 KB at N = 4096);
//! * response ciphertext (server → client): at `q₀` only, in coefficient form, `c₁` with its
//!   low bits dropped, then only the `c₀` coefficients that carry outputs, low bits dropped —
//!   [`HeParams::response_bytes`].

use fhe_math::rq::traits::TryConvertFrom;
use fhe_math::rq::{Poly, Representation, dot_product};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::params::{ERROR_VARIANCE, HeParams, modulus_width};
use crate::error::{MpcError, Result};
use crate::transport::frame::{RingPacker, packed_len, unpack_ring};

/// Bytes of the seed of a uniform polynomial.
const SEED_LEN: usize = 32;

fn math(context: &'static str) -> impl Fn(fhe_math::Error) -> MpcError {
    move |e| MpcError::invalid(context, format!("fhe-math: {e}"))
}

/// A uniform ternary vector (the secret key and the re-randomisation's `u`).
fn ternary<R: RngCore>(n: usize, rng: &mut R) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut bits = rng.next_u64();
        for _ in 0..32 {
            if out.len() == n {
                break;
            }
            let v = bits & 3;
            bits >>= 2;
            if v < 3 {
                out.push(v as i64 - 1);
            }
        }
    }
    out
}

/// A centred-binomial error polynomial (η = 20) in coefficient form.
fn error_poly<R: RngCore + CryptoRng>(params: &HeParams, rng: &mut R) -> Result<Poly> {
    Poly::small(params.full_context(), Representation::PowerBasis, ERROR_VARIANCE, rng).map_err(math("error"))
}

fn signed_poly(params: &HeParams, v: &[i64], repr: Representation) -> Result<Poly> {
    let mut p = Poly::try_convert_from(v, params.full_context(), false, Representation::PowerBasis)
        .map_err(math("signed polynomial"))?;
    p.change_representation(repr);
    Ok(p)
}

fn seeded_uniform(params: &HeParams, seed: [u8; SEED_LEN]) -> Poly {
    Poly::random_from_seed(params.full_context(), Representation::Ntt, seed)
}

/// Packs the RNS residues of a full-context polynomial at `⌈log₂ qᵢ⌉` bits each.
fn pack_residues(params: &HeParams, p: &Poly, out: &mut Vec<u8>) -> Result<()> {
    let flat = Vec::<u64>::from(p);
    let n = params.degree();
    for (i, &q) in params.moduli().iter().enumerate() {
        let mut packer = RingPacker::new(modulus_width(q), n)?;
        for &v in &flat[i * n..(i + 1) * n] {
            packer.push(v);
        }
        out.extend_from_slice(&packer.finish());
    }
    Ok(())
}

/// Bytes of the packed residues of one full-context polynomial.
fn residues_len(params: &HeParams) -> usize {
    params.moduli().iter().map(|&q| packed_len(params.degree(), modulus_width(q)).unwrap_or(0)).sum()
}

/// Unpacks a full-context polynomial in NTT form, checking every residue is below its prime.
fn unpack_residues(params: &HeParams, bytes: &[u8], context: &'static str) -> Result<Poly> {
    let n = params.degree();
    let mut flat = Vec::with_capacity(n * params.moduli().len());
    let mut at = 0;
    for &q in params.moduli() {
        let width = modulus_width(q);
        let len = packed_len(n, width).unwrap_or(0);
        let chunk = bytes.get(at..at + len).ok_or_else(|| MpcError::peer(context, "truncated polynomial"))?;
        let values = unpack_ring(chunk, n, width).map_err(|e| MpcError::peer(context, e.to_string()))?;
        if let Some(v) = values.iter().find(|&&v| v >= q) {
            return Err(MpcError::peer(context, format!("residue {v} not reduced mod {q}")));
        }
        flat.extend_from_slice(&values);
        at += len;
    }
    Poly::try_convert_from(flat, params.full_context(), false, Representation::Ntt).map_err(math(context))
}

fn fresh_seed<R: RngCore>(rng: &mut R) -> [u8; SEED_LEN] {
    let mut seed = [0u8; SEED_LEN];
    rng.fill_bytes(&mut seed);
    seed
}

/// `m·q/t` rounded, per prime: `⌊q/t⌋·m + ⌊(q mod t)·m / t⌋ + bit`, where `bit` rounds the
/// fraction `((q mod t)·m mod t) / t` up with that probability when `randomise` (the client's
/// encoding, so the rounding error is zero-mean and independent) or to nearest otherwise.
fn scaled_residues<R: RngCore>(params: &HeParams, m: &[u64], randomise: Option<&mut R>) -> Vec<Vec<u64>> {
    let t_bits = params.ring_bits();
    let t_mask = (1u128 << t_bits) - 1;
    let r_t = params.q_mod_t() as u128;
    let mut rng = randomise;
    let m: Vec<u64> = m.iter().map(|&mi| (mi as u128 & t_mask) as u64).collect();
    let extra: Vec<u64> = m
        .iter()
        .map(|&mi| {
            let prod = r_t * mi as u128;
            let (whole, frac) = ((prod >> t_bits) as u64, prod & t_mask);
            let up = match rng.as_deref_mut() {
                Some(rng) => (rng.next_u64() as u128 & t_mask) < frac,
                None => frac >= 1u128 << (t_bits - 1),
            };
            whole + up as u64
        })
        .collect();
    let ctx = params.full_context();
    ctx.moduli_operators()
        .iter()
        .zip(params.delta())
        .map(|(qi, &delta)| {
            m.iter().zip(&extra).map(|(&mi, &x)| qi.add(qi.mul(delta, qi.reduce(mi)), qi.reduce(x))).collect()
        })
        .collect()
}

/// Refuses a message that is not `N` coefficients.
fn check_message(params: &HeParams, m: &[u64], context: &'static str) -> Result<()> {
    let n = params.degree();
    if m.len() != n {
        return Err(MpcError::invalid(context, format!("{} coefficients for N = {n}", m.len())));
    }
    Ok(())
}

/// `round(q·m/t)` with randomised rounding ([`scaled_residues`]), in coefficient form: a
/// message as a ciphertext's `c₀` carries it.
fn message_poly<R: RngCore>(params: &HeParams, m: &[u64], rng: &mut R, context: &'static str) -> Result<Poly> {
    let scaled: Vec<u64> = scaled_residues(params, m, Some(rng)).concat();
    Poly::try_convert_from(scaled, params.full_context(), false, Representation::PowerBasis).map_err(math(context))
}

/// The client's BFV secret key (uniform ternary), with its NTT forms at `q` and `q₀`; wiped
/// (coefficients and both NTT forms) when dropped.
pub struct SecretKey {
    params: HeParams,
    coefficients: Vec<i64>,
    s_full: Poly,
    s_response: Poly,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").field("degree", &self.params.degree()).finish_non_exhaustive()
    }
}

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.coefficients.zeroize();
        self.s_full.zeroize();
        self.s_response.zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// A fresh key.
    pub fn generate<R: RngCore + CryptoRng>(params: &HeParams, rng: &mut R) -> Result<Self> {
        let coefficients = ternary(params.degree(), rng);
        let s_full = signed_poly(params, &coefficients, Representation::Ntt)?;
        let mut s_response = Poly::try_convert_from(
            coefficients.as_slice(),
            params.response_context(),
            false,
            Representation::PowerBasis,
        )
        .map_err(math("SecretKey"))?;
        s_response.change_representation(Representation::Ntt);
        Ok(Self { params: params.clone(), coefficients, s_full, s_response })
    }

    /// The parameters the key belongs to.
    pub fn params(&self) -> &HeParams {
        &self.params
    }

    /// The key's coefficients in {−1, 0, 1} (to hand the key to another BFV implementation).
    pub fn coefficients(&self) -> &[i64] {
        &self.coefficients
    }

    /// The public key message: the seed of `a` and `b = −a·s + e`.
    pub fn public_key_bytes<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<Vec<u8>> {
        let seed = fresh_seed(rng);
        let a = seeded_uniform(&self.params, seed);
        let mut b = error_poly(&self.params, rng)?;
        b.change_representation(Representation::Ntt);
        b -= &(&a * &self.s_full);
        let mut out = Vec::with_capacity(SEED_LEN + residues_len(&self.params));
        out.extend_from_slice(&seed);
        pack_residues(&self.params, &b, &mut out)?;
        Ok(out)
    }

    /// A seeded encryption of `m` (`N` coefficients mod 2^ℓ) as a query ciphertext message.
    pub fn encrypt<R: RngCore + CryptoRng>(&self, m: &[u64], rng: &mut R) -> Result<Vec<u8>> {
        let (c0, _, seed) = self.encrypt_polys(m, rng)?;
        let mut out = Vec::with_capacity(self.params.query_bytes());
        out.extend_from_slice(&seed);
        pack_residues(&self.params, &c0, &mut out)?;
        Ok(out)
    }

    /// `(c₀, c₁, seed of c₁)` of a fresh encryption, NTT form at `q`.
    pub(crate) fn encrypt_polys<R: RngCore + CryptoRng>(
        &self,
        m: &[u64],
        rng: &mut R,
    ) -> Result<(Poly, Poly, [u8; SEED_LEN])> {
        check_message(&self.params, m, "SecretKey::encrypt")?;
        let seed = fresh_seed(rng);
        let a = seeded_uniform(&self.params, seed);
        let mut c0 = message_poly(&self.params, m, &mut *rng, "encrypt")?;
        c0 += &error_poly(&self.params, rng)?;
        c0.change_representation(Representation::Ntt);
        c0 -= &(&a * &self.s_full);
        Ok((c0, a, seed))
    }

    /// Decrypts a response ciphertext message carrying the coefficients `used` (in order).
    pub fn decrypt_response(&self, bytes: &[u8], used: &[u32]) -> Result<Vec<u64>> {
        Ok(self.response_phase(bytes, used)?.into_iter().map(|phase| self.decode(phase)).collect())
    }

    /// Decrypts a query ciphertext message (a fresh encryption under this key) by switching it
    /// to `q₀`: all `N` coefficients. For tests and diagnostics; the protocol never needs it.
    pub fn decrypt_query(&self, bytes: &[u8]) -> Result<Vec<u64>> {
        self.decrypt_query_ciphertext(QueryCiphertext::from_bytes(&self.params, bytes)?)
    }

    fn decrypt_query_ciphertext(&self, ct: QueryCiphertext) -> Result<Vec<u64>> {
        let QueryCiphertext { mut c0, mut c1 } = ct;
        for c in [&mut c0, &mut c1] {
            c.change_representation(Representation::PowerBasis);
            c.switch_down_to(self.params.response_context()).map_err(math("decrypt_query"))?;
        }
        let c1s = self.times_secret(c1);
        let q0 = self.params.moduli()[0];
        Ok(Vec::<u64>::from(&c0).iter().zip(c1s).map(|(&a, b)| self.decode((a + b) % q0)).collect())
    }

    /// `c₁·s` at `q₀`, coefficients.
    fn times_secret(&self, mut c1: Poly) -> Vec<u64> {
        c1.change_representation(Representation::Ntt);
        c1 *= &self.s_response;
        c1.change_representation(Representation::PowerBasis);
        Vec::<u64>::from(&c1)
    }

    /// `round(t·phase / q₀) mod t`.
    fn decode(&self, phase: u64) -> u64 {
        let q0 = self.params.moduli()[0] as u128;
        let t = 1u128 << self.params.ring_bits();
        (((phase as u128 * t + q0 / 2) / q0) % t) as u64
    }

    /// The phases `c₀ + c₁·s mod q₀` of a response at the coefficients `used`.
    pub(crate) fn response_phase(&self, bytes: &[u8], used: &[u32]) -> Result<Vec<u64>> {
        const CTX: &str = "response";
        let p = &self.params;
        let n = p.degree();
        let q0 = p.moduli()[0];
        let (k0, k1) = p.dropped_bits();
        let (w0, w1) = p.response_widths();
        let len1 = packed_len(n, w1).unwrap_or(0);
        let len0 = packed_len(used.len(), w0).unwrap_or(0);
        if bytes.len() != len1 + len0 {
            return Err(MpcError::peer(CTX, format!("{} bytes, expected {}", bytes.len(), len1 + len0)));
        }
        // Values are `round(c / 2^k) mod 2^width`; any value of `width` bits is valid.
        let expand = |values: Vec<u64>, k: u32| -> Vec<u64> { values.into_iter().map(|v| (v << k) % q0).collect() };
        let c1 = expand(unpack_ring(&bytes[..len1], n, w1).map_err(|e| MpcError::peer(CTX, e.to_string()))?, k1);
        let c0 =
            expand(unpack_ring(&bytes[len1..], used.len(), w0).map_err(|e| MpcError::peer(CTX, e.to_string()))?, k0);
        let c1 =
            Poly::try_convert_from(c1, p.response_context(), false, Representation::PowerBasis).map_err(math(CTX))?;
        let c1s = self.times_secret(c1);
        used.iter()
            .zip(c0)
            .map(|(&coef, c0)| {
                let s = *c1s.get(coef as usize).ok_or_else(|| MpcError::invalid(CTX, "coefficient beyond N"))?;
                Ok((c0 + s) % q0)
            })
            .collect()
    }
}

/// The server's view of the client's public key.
#[derive(Clone, Debug)]
pub struct PublicKey {
    params: HeParams,
    b: Poly,
    a: Poly,
}

impl PublicKey {
    /// Parses and validates a public key message.
    pub fn from_bytes(params: &HeParams, bytes: &[u8]) -> Result<Self> {
        let (a, b) = parse_seeded(params, bytes, "public key")?;
        Ok(Self { params: params.clone(), b, a })
    }

    /// The parameters the key belongs to.
    pub fn params(&self) -> &HeParams {
        &self.params
    }
}

/// A query ciphertext received from the client: `(c₀, c₁)` in NTT form at `q`.
#[derive(Clone, Debug)]
pub struct QueryCiphertext {
    pub(crate) c0: Poly,
    pub(crate) c1: Poly,
}

impl QueryCiphertext {
    /// Parses and validates a query ciphertext message.
    pub fn from_bytes(params: &HeParams, bytes: &[u8]) -> Result<Self> {
        let (c1, c0) = parse_seeded(params, bytes, "query ciphertext")?;
        Ok(Self { c0, c1 })
    }

    /// Adds the plaintext `m` (`N` coefficients mod 2^ℓ): the ciphertext then encrypts the sum
    /// mod 2^ℓ. `m` is encoded as `round(q·m/t)` with randomised rounding (as the client's
    /// message), so the noise gains one more independent term of range 1 per coefficient;
    /// [`HeParams::product_noise_bound`] counts it. One NTT per prime.
    pub fn add_plain<R: RngCore>(&mut self, params: &HeParams, m: &[u64], rng: &mut R) -> Result<()> {
        check_message(params, m, "QueryCiphertext::add_plain")?;
        let mut p = message_poly(params, m, rng, "add_plain")?;
        p.change_representation(Representation::Ntt);
        self.c0 += &p;
        Ok(())
    }
}

/// `(uniform polynomial from the seed, packed polynomial)` of a seeded message.
fn parse_seeded(params: &HeParams, bytes: &[u8], context: &'static str) -> Result<(Poly, Poly)> {
    let expected = SEED_LEN + residues_len(params);
    if bytes.len() != expected {
        return Err(MpcError::peer(context, format!("{} bytes, expected {expected}", bytes.len())));
    }
    let mut seed = [0u8; SEED_LEN];
    seed.copy_from_slice(&bytes[..SEED_LEN]);
    Ok((seeded_uniform(params, seed), unpack_residues(params, &bytes[SEED_LEN..], context)?))
}

/// A weight polynomial in NTT form at `q` (centred lift of its coefficients).
#[derive(Clone, Debug)]
pub struct WeightPoly(pub(crate) Poly);

impl WeightPoly {
    /// Encodes signed coefficients (`N` of them, `|w| < 2^62`).
    pub fn new(params: &HeParams, coefficients: &[i64]) -> Result<Self> {
        Ok(Self(signed_poly(params, coefficients, Representation::Ntt)?))
    }

    /// Number of RNS residues per coefficient.
    pub fn moduli(&self) -> usize {
        self.0.ctx().moduli().len()
    }
}

/// The server's response for one output polynomial: `Σ ctᵢ·wᵢ − round(q·r/t)` at the `used`
/// coefficients (`masks[k]` at `used[k]`), re-randomised with a public-key encryption of zero,
/// flooded, switched to `q₀` and compressed.
pub fn respond<R: RngCore + CryptoRng>(
    pk: &PublicKey,
    terms: &[(&QueryCiphertext, &WeightPoly)],
    used: &[u32],
    masks: &[u64],
    rng: &mut R,
) -> Result<Vec<u8>> {
    const CTX: &str = "respond";
    let p = &pk.params;
    let n = p.degree();
    if used.len() != masks.len() || used.iter().any(|&c| c as usize >= n) {
        return Err(MpcError::invalid(CTX, "masks do not match the used coefficients"));
    }
    let full = p.full_context();
    let (mut c0, mut c1) = if terms.is_empty() {
        (Poly::zero(full, Representation::Ntt), Poly::zero(full, Representation::Ntt))
    } else {
        (
            dot_product(terms.iter().map(|(ct, _)| &ct.c0), terms.iter().map(|(_, w)| &w.0)).map_err(math(CTX))?,
            dot_product(terms.iter().map(|(ct, _)| &ct.c1), terms.iter().map(|(_, w)| &w.0)).map_err(math(CTX))?,
        )
    };

    // Re-randomisation: + (b·u + e₀, a·u + e₁), u ternary.
    let u = signed_poly(p, &ternary(n, rng), Representation::Ntt)?;
    c0 += &(&pk.b * &u);
    c1 += &(&pk.a * &u);
    c0.change_representation(Representation::PowerBasis);
    c1.change_representation(Representation::PowerBasis);
    c1 += &error_poly(p, rng)?;
    c0 += &error_poly(p, rng)?;

    // Mask and flooding, coefficient by coefficient.
    let mut r = vec![0u64; n];
    for (&coef, &m) in used.iter().zip(masks) {
        r[coef as usize] = m;
    }
    let scaled_r = scaled_residues::<R>(p, &r, None);
    let flood = flood_residues(p, rng);
    let mut add = Vec::with_capacity(n * p.moduli().len());
    for ((qi, sr), fl) in full.moduli_operators().iter().zip(&scaled_r).zip(&flood) {
        add.extend(sr.iter().zip(fl).map(|(&s, &f)| qi.sub(f, s)));
    }
    c0 += &Poly::try_convert_from(add, full, false, Representation::PowerBasis).map_err(math(CTX))?;

    // Down to q₀ and compress.
    c0.switch_down_to(p.response_context()).map_err(math(CTX))?;
    c1.switch_down_to(p.response_context()).map_err(math(CTX))?;
    let (c0, c1) = (Vec::<u64>::from(&c0), Vec::<u64>::from(&c1));
    let (k0, k1) = p.dropped_bits();
    let (w0, w1) = p.response_widths();
    let round = |v: u64, k: u32| if k == 0 { v } else { (v + (1u64 << (k - 1))) >> k };
    let mut packer = RingPacker::new(w1, n)?;
    for &v in &c1 {
        packer.push(round(v, k1));
    }
    let mut out = packer.finish();
    let mut packer = RingPacker::new(w0, used.len())?;
    for &coef in used {
        packer.push(round(c0[coef as usize], k0));
    }
    out.extend_from_slice(&packer.finish());
    Ok(out)
}

/// Residues mod each prime of `N` integers uniform in `[−2^b, 2^b)`, `b` the flooding bits.
fn flood_residues<R: RngCore>(params: &HeParams, rng: &mut R) -> Vec<Vec<u64>> {
    let bits = params.flood_bits() + 1;
    let limbs = bits.div_ceil(64) as usize;
    let top_mask = if bits.is_multiple_of(64) { u64::MAX } else { (1u64 << (bits % 64)) - 1 };
    let n = params.degree();
    let mut samples: Vec<u64> = (0..n * limbs).map(|_| rng.next_u64()).collect();
    for sample in samples.chunks_exact_mut(limbs) {
        sample[limbs - 1] &= top_mask;
    }
    params
        .full_context()
        .moduli_operators()
        .iter()
        .map(|qi| {
            // 2^b mod qᵢ, the offset that centres the samples.
            let offset = (0..params.flood_bits()).fold(qi.reduce(1), |acc, _| qi.add(acc, acc));
            samples
                .chunks_exact(limbs)
                .map(|limbs| {
                    let v = limbs.iter().rev().fold(0u64, |acc, &l| qi.reduce_u128(((acc as u128) << 64) | l as u128));
                    qi.sub(v, offset)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_nn::FixedPoint;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn the_secret_key_is_wiped() -> Result<()> {
        fn drops_zeroized<T: ZeroizeOnDrop>() {}
        drops_zeroized::<SecretKey>();
        let p = HeParams::n4096(FixedPoint::default())?;
        let mut key = SecretKey::generate(&p, &mut ChaCha20Rng::seed_from_u64(4))?;
        let nonzero = |k: &SecretKey| {
            k.coefficients.iter().filter(|&&c| c != 0).count()
                + k.s_full.coefficients().iter().filter(|&&c| c != 0).count()
                + k.s_response.coefficients().iter().filter(|&&c| c != 0).count()
        };
        assert!(nonzero(&key) > p.degree());
        // What `Drop` runs.
        key.zeroize();
        assert_eq!(nonzero(&key), 0);
        Ok(())
    }

    /// A query with the server's share added decrypts to the sum mod 2^ℓ, wrapping included.
    #[test]
    fn a_plaintext_added_to_a_query_decrypts_to_the_sum() -> Result<()> {
        let p = HeParams::n4096(FixedPoint::default())?;
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let key = SecretKey::generate(&p, &mut rng)?;
        let t_mask = (1u64 << p.ring_bits()) - 1;
        let m1: Vec<u64> = (0..p.degree()).map(|_| rng.next_u64() & t_mask).collect();
        let mut m0: Vec<u64> = (0..p.degree()).map(|_| rng.next_u64() & t_mask).collect();
        m0[0] = t_mask; // wraps past t with any nonzero m1[0]
        let mut ct = QueryCiphertext::from_bytes(&p, &key.encrypt(&m1, &mut rng)?)?;
        ct.add_plain(&p, &m0, &mut rng)?;
        let sum = key.decrypt_query_ciphertext(ct)?;
        let want: Vec<u64> = m0.iter().zip(&m1).map(|(&a, &b)| (a + b) & t_mask).collect();
        assert_eq!(sum, want);
        Ok(())
    }

    #[test]
    fn flooding_is_centred_and_bounded() -> Result<()> {
        let p = HeParams::n4096(FixedPoint::default())?;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let f = flood_residues(&p, &mut rng);
        // Lift through q₀·q₁ < 2^109 (CRT) and check the range and sign balance.
        let (q0, q1) = (p.moduli()[0] as u128, p.moduli()[1] as u128);
        let q0_inv_mod_q1 = {
            let m = fhe_math::zq::Modulus::new(q1 as u64).map_err(math("test"))?;
            m.inv(m.reduce(q0 as u64)).unwrap_or(0) as u128
        };
        let bound = 1i128 << p.flood_bits();
        let mut negative = 0;
        for (&r0, &r1) in f[0].iter().zip(&f[1]) {
            let k = ((r1 as u128 + q1 - r0 as u128 % q1) % q1) * q0_inv_mod_q1 % q1;
            let v = r0 as u128 + k * q0;
            let q = q0 * q1;
            let signed = if v > q / 2 { v as i128 - q as i128 } else { v as i128 };
            assert!(-bound <= signed && signed < bound);
            negative += (signed < 0) as usize;
        }
        assert!((1800..2300).contains(&negative), "{negative} negative of 4096");
        Ok(())
    }

    fn negacyclic(a: &[u64], w: &[i64], t_mask: u64) -> Vec<u64> {
        let n = a.len();
        let mut out = vec![0u64; n];
        for (j, &wj) in w.iter().enumerate().filter(|(_, w)| **w != 0) {
            for (i, &ai) in a.iter().enumerate() {
                let p = ai.wrapping_mul(wj as u64);
                if i + j < n {
                    out[i + j] = out[i + j].wrapping_add(p);
                } else {
                    out[i + j - n] = out[i + j - n].wrapping_sub(p);
                }
            }
        }
        out.iter().map(|v| v & t_mask).collect()
    }

    /// Our ciphertexts are standard BFV: fhe.rs decrypts them, fresh and after ct × pt.
    #[test]
    fn fhe_rs_decrypts_our_ciphertexts() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use fhe_traits::{DeserializeParametrized, FheDecoder, FheDecrypter};
        use prost::Message;
        let fp = FixedPoint::default();
        let params = HeParams::n4096(fp)?;
        let par = params.bfv().clone();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let sk = SecretKey::generate(&params, &mut rng)?;
        let proto = fhe::proto::bfv::SecretKey { coeffs: sk.coefficients().to_vec() };
        let theirs = fhe::bfv::SecretKey::from_bytes(&proto.encode_to_vec(), &par)?;
        let mut m: Vec<u64> = (0..4096).map(|_| fp.reduce(rng.next_u64())).collect();
        m[..4].copy_from_slice(&[0, 1, fp.mask(), 1 << 36]);
        let (c0, c1, _) = sk.encrypt_polys(&m, &mut rng)?;
        let fresh = fhe::bfv::Ciphertext::new(vec![c0.clone(), c1.clone()], &par)?;
        let decoded = Vec::<u64>::try_decode(&theirs.try_decrypt(&fresh)?, fhe::bfv::Encoding::poly())?;
        assert_eq!(decoded, m);

        let mut w = vec![0i64; 4096];
        for (i, v) in w.iter_mut().enumerate().step_by(37) {
            *v = if i % 2 == 0 { 1 << 16 } else { -(1 << 16) };
        }
        let wp = WeightPoly::new(&params, &w)?;
        let product = fhe::bfv::Ciphertext::new(vec![&c0 * &wp.0, &c1 * &wp.0], &par)?;
        let decoded = Vec::<u64>::try_decode(&theirs.try_decrypt(&product)?, fhe::bfv::Encoding::poly())?;
        assert_eq!(decoded, negacyclic(&m, &w, fp.mask()));
        Ok(())
    }

    /// The response carries flooding noise of the documented size, within the budget.
    #[test]
    fn response_noise_is_flooded_and_within_budget() -> Result<()> {
        let fp = FixedPoint::default();
        let params = HeParams::n4096(fp)?;
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let sk = SecretKey::generate(&params, &mut rng)?;
        let pk = PublicKey::from_bytes(&params, &sk.public_key_bytes(&mut rng)?)?;
        let m: Vec<u64> = (0..4096).map(|_| fp.reduce(rng.next_u64())).collect();
        let query = QueryCiphertext::from_bytes(&params, &sk.encrypt(&m, &mut rng)?)?;
        let mut w = vec![0i64; 4096];
        w[0] = 1;
        let wp = WeightPoly::new(&params, &w)?;
        let used: Vec<u32> = (0..4096).collect();
        let masks: Vec<u64> = (0..4096).map(|_| fp.reduce(rng.next_u64())).collect();
        let bytes = respond(&pk, &[(&query, &wp)], &used, &masks, &mut rng)?;
        let phases = sk.response_phase(&bytes, &used)?;
        let q0 = params.moduli()[0] as f64;
        let t = (1u64 << 37) as f64;
        let mut sum_sq = 0f64;
        let mut max = 0f64;
        for ((&phase, &mi), &r) in phases.iter().zip(&m).zip(&masks) {
            let y = fp.sub(mi, r) as f64;
            let mut noise = phase as f64 - (q0 * y / t).round();
            if noise > q0 / 2.0 {
                noise -= q0;
            }
            max = f64::max(max, noise.abs());
            sum_sq += noise * noise;
        }
        let std = (sum_sq / 4096.0).sqrt();
        // Flooding, uniform in ±2^68 / q₁ ≈ ±2^19, plus the rounding of the 20 dropped bits of
        // c₀ (uniform in ±2^19); the other terms are two orders of magnitude smaller.
        let flood = 2f64.powi(params.flood_bits() as i32) / params.moduli()[1] as f64 / 3f64.sqrt();
        let dropped = 2f64.powi(params.dropped_bits().0 as i32) / 12f64.sqrt();
        let expected = (flood * flood + dropped * dropped).sqrt();
        assert!(std > 0.9 * expected && std < 1.1 * expected, "noise std {std}, expected ≈ {expected}");
        assert!(max < q0 / (2.0 * t), "noise {max} exceeds the budget");
        Ok(())
    }

    #[test]
    fn ternary_is_balanced() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let v = ternary(30_000, &mut rng);
        for s in [-1, 0, 1] {
            let count = v.iter().filter(|&&x| x == s).count();
            assert!((9_500..10_500).contains(&count), "{s}: {count}");
        }
    }
}
