use std::time::Instant;
use moat_mpc::he::HeParams;
use moat_mpc::he::cipher::{PublicKey, QueryCiphertext, SecretKey, WeightPoly, respond};
use moat_nn::FixedPoint;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[test]
fn profile() -> moat_mpc::Result<()> {
    let fp = FixedPoint::default();
    let params = HeParams::n4096(fp)?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&params, &mut rng)?;
    let pk = PublicKey::from_bytes(&params, &sk.public_key_bytes(&mut rng)?)?;
    let m: Vec<u64> = (0..4096).map(|_| fp.reduce(rng.next_u64())).collect();
    let t = Instant::now();
    let cts: Vec<Vec<u8>> = (0..22).map(|_| sk.encrypt(&m, &mut rng)).collect::<Result<_,_>>()?;
    println!("encrypt: {:.3} ms/ct", t.elapsed().as_secs_f64() * 1e3 / 22.0);
    let t = Instant::now();
    let qs: Vec<QueryCiphertext> = cts.iter().map(|c| QueryCiphertext::from_bytes(&params, c)).collect::<Result<_,_>>()?;
    println!("parse: {:.3} ms/ct", t.elapsed().as_secs_f64() * 1e3 / 22.0);
    let mut w = vec![0i64; 4096];
    for i in 0..27 { w[i * 100] = 1000 - i as i64; }
    let t = Instant::now();
    let ws: Vec<WeightPoly> = (0..22).map(|_| WeightPoly::new(&params, &w)).collect::<Result<_,_>>()?;
    println!("weight poly: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 22.0);
    let used: Vec<u32> = (0..1024).collect();
    let masks = vec![5u64; 1024];
    let terms: Vec<_> = qs.iter().zip(&ws).collect();
    let t = Instant::now();
    let mut resp = Vec::new();
    for _ in 0..10 { resp = respond(&pk, &terms, &used, &masks, &mut rng)?; }
    println!("respond (22 terms): {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 10.0);
    let t = Instant::now();
    for _ in 0..10 { respond(&pk, &terms[..1], &used, &masks, &mut rng)?; }
    println!("respond (1 term): {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 10.0);
    let t = Instant::now();
    for _ in 0..10 { sk.decrypt_response(&resp, &used)?; }
    println!("decrypt: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 10.0);
    Ok(())
}
