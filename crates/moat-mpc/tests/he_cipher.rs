//! BFV at moat's parameters (N = 4096, q ≈ 2^109, t = 2^37): decryption of fresh and
//! post-multiplication ciphertexts at the extremes of the share and weight ranges, the
//! re-randomisation of server responses, and malformed peer messages.

use moat_mpc::he::HeParams;
use moat_mpc::he::cipher::{PublicKey, QueryCiphertext, SecretKey, WeightPoly, respond};
use moat_mpc::{MpcError, Result};
use moat_nn::FixedPoint;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const N: usize = 4096;

/// `a · w mod (X^N + 1)` over Z_2^ℓ.
fn negacyclic(a: &[u64], w: &[i64], fp: FixedPoint) -> Vec<u64> {
    let mut out = vec![0u64; N];
    for (j, &wj) in w.iter().enumerate().filter(|(_, w)| **w != 0) {
        for (i, &ai) in a.iter().enumerate() {
            let p = ai.wrapping_mul(wj as u64);
            if i + j < N {
                out[i + j] = out[i + j].wrapping_add(p);
            } else {
                out[i + j - N] = out[i + j - N].wrapping_sub(p);
            }
        }
    }
    out.into_iter().map(|v| fp.reduce(v)).collect()
}

struct Setup {
    fp: FixedPoint,
    params: HeParams,
    sk: SecretKey,
    pk: PublicKey,
    rng: ChaCha20Rng,
}

fn setup(seed: u64) -> Result<Setup> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sk = SecretKey::generate(&params, &mut rng)?;
    let pk = PublicKey::from_bytes(&params, &sk.public_key_bytes(&mut rng)?)?;
    Ok(Setup { fp, params, sk, pk, rng })
}

/// Shares at the extremes: all zero, all 2^ℓ − 1, alternating, and random with extremes mixed in.
fn extreme_shares(fp: FixedPoint, rng: &mut ChaCha20Rng) -> Vec<Vec<u64>> {
    let top = fp.mask();
    let mut mixed: Vec<u64> = (0..N).map(|_| fp.reduce(rng.next_u64())).collect();
    for (i, v) in mixed.iter_mut().enumerate().step_by(5) {
        *v = [0, 1, top, 1 << 36, (1 << 36) - 1][(i / 5) % 5];
    }
    vec![vec![0; N], vec![top; N], (0..N).map(|i| if i % 2 == 0 { top } else { 0 }).collect(), mixed]
}

#[test]
fn fresh_ciphertexts_decrypt_at_the_extremes() -> Result<()> {
    let mut s = setup(1)?;
    for m in extreme_shares(s.fp, &mut s.rng) {
        let ct = s.sk.encrypt(&m, &mut s.rng)?;
        assert_eq!(ct.len(), s.params.query_bytes());
        assert_eq!(s.sk.decrypt_query(&ct)?, m);
    }
    Ok(())
}

#[test]
fn products_decrypt_at_the_extremes_of_weights_and_shares() -> Result<()> {
    let mut s = setup(2)?;
    let big = 1i64 << (s.fp.frac_bits() + 4);
    // Four terms (as for four channel chunks), every coefficient of every weight polynomial at
    // ±2^(f+4): the largest product noise the flooding check admits at these parameters.
    let shares = extreme_shares(s.fp, &mut s.rng);
    let weights: Vec<Vec<i64>> =
        (0..shares.len()).map(|k| (0..N).map(|i| if (i * 7 + k) % 3 == 0 { -big } else { big }).collect()).collect();
    let queries = shares
        .iter()
        .map(|m| QueryCiphertext::from_bytes(&s.params, &s.sk.encrypt(m, &mut s.rng)?))
        .collect::<Result<Vec<_>>>()?;
    let wpolys = weights.iter().map(|w| WeightPoly::new(&s.params, w)).collect::<Result<Vec<_>>>()?;
    let mut expected = vec![0u64; N];
    for (m, w) in shares.iter().zip(&weights) {
        for (e, v) in expected.iter_mut().zip(negacyclic(m, w, s.fp)) {
            *e = s.fp.add(*e, v);
        }
    }
    let used: Vec<u32> = (0..N as u32).collect();
    // Masks 0 and 2^ℓ − 1 as well as random ones.
    let masks: Vec<u64> =
        (0..N).map(|i| if i < 2 { [0, s.fp.mask()][i] } else { s.fp.reduce(s.rng.next_u64()) }).collect();
    for terms in [1, shares.len()] {
        let pairs: Vec<_> = queries.iter().zip(&wpolys).take(terms).collect();
        let response = respond(&s.pk, &pairs, &used, &masks, &mut s.rng)?;
        assert_eq!(response.len(), s.params.response_bytes(N));
        let got = s.sk.decrypt_response(&response, &used)?;
        let mut want = vec![0u64; N];
        for (m, w) in shares.iter().zip(&weights).take(terms) {
            for (e, v) in want.iter_mut().zip(negacyclic(m, w, s.fp)) {
                *e = s.fp.add(*e, v);
            }
        }
        let want: Vec<u64> = want.iter().zip(&masks).map(|(&y, &r)| s.fp.sub(y, r)).collect();
        assert_eq!(got, want, "{terms} terms");
    }
    // Sanity: the 4-term sum is not trivially zero.
    assert!(expected.iter().any(|&v| v != 0));
    Ok(())
}

#[test]
fn responses_are_rerandomised_and_shares_uniform() -> Result<()> {
    let mut s = setup(3)?;
    let m: Vec<u64> = (0..N).map(|i| s.fp.reduce((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();
    let query = QueryCiphertext::from_bytes(&s.params, &s.sk.encrypt(&m, &mut s.rng)?)?;
    let w: Vec<i64> = (0..N).map(|i| if i % 9 == 0 { 3 - (i as i64 % 7) } else { 0 }).collect();
    let wp = WeightPoly::new(&s.params, &w)?;
    let product = negacyclic(&m, &w, s.fp);
    let used: Vec<u32> = (0..N as u32).collect();

    // Same input, weights and masks, two server runs: different bytes, same decryption.
    let masks: Vec<u64> = (0..N).map(|_| s.fp.reduce(s.rng.next_u64())).collect();
    let a = respond(&s.pk, &[(&query, &wp)], &used, &masks, &mut ChaCha20Rng::seed_from_u64(100))?;
    let b = respond(&s.pk, &[(&query, &wp)], &used, &masks, &mut ChaCha20Rng::seed_from_u64(101))?;
    assert_ne!(a, b);
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(differing > a.len() * 9 / 10, "only {differing} of {} bytes differ", a.len());
    let want: Vec<u64> = product.iter().zip(&masks).map(|(&y, &r)| s.fp.sub(y, r)).collect();
    assert_eq!(s.sk.decrypt_response(&a, &used)?, want);
    assert_eq!(s.sk.decrypt_response(&b, &used)?, want);

    // Fresh masks per run: the client's shares are uniform. Chi-square on the top 4 bits of
    // 24 runs × 4096 shares (15 degrees of freedom; 37.7 is the 0.1 % critical value).
    let mut bins = [0u64; 16];
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for _ in 0..24 {
        let masks: Vec<u64> = (0..N).map(|_| s.fp.reduce(rng.random())).collect();
        let response = respond(&s.pk, &[(&query, &wp)], &used, &masks, &mut rng)?;
        let shares = s.sk.decrypt_response(&response, &used)?;
        for (i, &y) in shares.iter().enumerate() {
            assert_eq!(s.fp.add(y, masks[i]), product[i]);
            bins[(y >> 33) as usize] += 1;
        }
    }
    let expected = (24 * N) as f64 / 16.0;
    let chi2: f64 = bins.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
    assert!(chi2 < 37.7, "chi-square {chi2} on {bins:?}");
    Ok(())
}

#[test]
fn malformed_messages_are_errors_not_panics() -> Result<()> {
    let mut s = setup(4)?;
    let ct = s.sk.encrypt(&vec![5; N], &mut s.rng)?;
    let peer = |r: Result<QueryCiphertext>| matches!(r, Err(MpcError::PeerMisbehaved { .. }));
    assert!(peer(QueryCiphertext::from_bytes(&s.params, &ct[..ct.len() - 1])));
    assert!(peer(QueryCiphertext::from_bytes(&s.params, &[ct.clone(), vec![0]].concat())));
    assert!(peer(QueryCiphertext::from_bytes(&s.params, &[])));
    // A residue ≥ q₀ (all bits of the first coefficient set).
    let mut bad = ct.clone();
    for b in &mut bad[32..40] {
        *b = 0xff;
    }
    assert!(peer(QueryCiphertext::from_bytes(&s.params, &bad)));
    // Random bytes of the right length are (almost surely) reduced residues: a valid, if
    // meaningless, ciphertext that the server computes on without trouble.
    let mut noise = vec![0u8; ct.len()];
    s.rng.fill_bytes(&mut noise);
    let q = QueryCiphertext::from_bytes(&s.params, &noise)?;
    let w = WeightPoly::new(&s.params, &[1, -2])?;
    assert!(respond(&s.pk, &[(&q, &w)], &[0, 9], &[0, 0], &mut s.rng).is_ok());
    assert!(PublicKey::from_bytes(&s.params, &ct[..100]).is_err());
    // Responses of the wrong length; any value of the right widths decrypts (to garbage).
    let used = [0u32, 7, 4095];
    assert!(matches!(s.sk.decrypt_response(&[1, 2, 3], &used), Err(MpcError::PeerMisbehaved { .. })));
    let len = s.params.response_bytes(used.len());
    assert!(s.sk.decrypt_response(&vec![0xff; len], &used).is_ok());
    assert!(s.sk.decrypt_query(&ct[1..]).is_err());
    // Local misuse: masks that do not match, coefficients beyond N.
    let q = QueryCiphertext::from_bytes(&s.params, &ct)?;
    let w = WeightPoly::new(&s.params, &[1])?;
    assert!(respond(&s.pk, &[(&q, &w)], &[1, 2], &[0], &mut s.rng).is_err());
    assert!(respond(&s.pk, &[(&q, &w)], &[N as u32], &[0], &mut s.rng).is_err());
    Ok(())
}
