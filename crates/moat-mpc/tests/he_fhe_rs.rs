//! Empirical check of fhe.rs with a power-of-two plaintext modulus t = 2^37 (the question of
//! issue 4): fresh encryption, ct × pt and decryption with fhe.rs's own BFV at N = 4096 and a
//! [60, 49]-bit modulus chain, coefficient (poly) encoding.

use fhe::bfv::{BfvParametersBuilder, Encoding, Plaintext, SecretKey};
use fhe_traits::{FheDecoder, FheDecrypter, FheEncoder, FheEncrypter};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn negacyclic(a: &[u64], b: &[i64], t: u64) -> Vec<u64> {
    let n = a.len();
    let mut out = vec![0u64; n];
    for (i, &ai) in a.iter().enumerate() {
        for (j, &bj) in b.iter().enumerate() {
            if bj == 0 {
                continue;
            }
            let p = ai.wrapping_mul(bj as u64);
            let k = i + j;
            if k < n {
                out[k] = out[k].wrapping_add(p);
            } else {
                out[k - n] = out[k - n].wrapping_sub(p);
            }
        }
    }
    out.iter().map(|v| v & (t - 1)).collect()
}

#[test]
fn fhe_rs_accepts_a_power_of_two_plaintext_modulus() -> Result<(), Box<dyn std::error::Error>> {
    let t = 1u64 << 37;
    let n = 4096;
    let q0 = fhe_math::zq::primes::generate_prime(60, 2 * n as u64, 1 << 60).ok_or("no prime")?;
    let q1 = fhe_math::zq::primes::generate_prime(49, 2 * n as u64, 1 << 49).ok_or("no prime")?;
    let par = BfvParametersBuilder::new().set_degree(n).set_plaintext_modulus(t).set_moduli(&[q0, q1]).build_arc()?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::random(&par, &mut rng);
    // Extremes of the share range.
    let mut m = vec![0u64; n];
    m[1] = 1;
    m[2] = t - 1;
    m[3] = t / 2;
    for (i, v) in m.iter_mut().enumerate().skip(4) {
        *v = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) & (t - 1);
    }
    let pt = Plaintext::try_encode(&m, Encoding::poly(), &par)?;
    let ct = sk.try_encrypt(&pt, &mut rng)?;
    let back = Vec::<u64>::try_decode(&sk.try_decrypt(&ct)?, Encoding::poly())?;
    assert_eq!(back, m, "fresh decryption with t = 2^37");

    // ct × pt with a small weight polynomial (fhe.rs lifts plaintexts to [0, t)).
    let mut w = vec![0i64; n];
    w[0] = 3;
    w[5] = -2;
    w[n - 1] = 1;
    let wpt = Plaintext::try_encode(&w, Encoding::poly(), &par)?;
    let prod = &ct * &wpt;
    let got = Vec::<u64>::try_decode(&sk.try_decrypt(&prod)?, Encoding::poly())?;
    assert_eq!(got, negacyclic(&m, &w, t), "ct × pt with t = 2^37");
    Ok(())
}
