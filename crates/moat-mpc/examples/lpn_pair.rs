//! Ferret's two LPN encodings of one party's round pair (its sender's `A·K` and its
//! receiver's `A·M`) as two passes over the column table against one
//! ([`LpnCode::encode_pair`]), on the main B12 code (one round of 6,225,920 rows).
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example lpn_pair` (one core, as in
//! `lpn_speed`). The fused pass is checked against the two.

use std::time::Instant;

use moat_mpc::ot::ferret::FerretParams;
use moat_mpc::ot::ferret::lpn::LpnCode;

fn main() {
    let (k, n) = (FerretParams::B12.main.k, FerretParams::B12.main.n);
    let a: Vec<u128> = (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
    let b: Vec<u128> = (0..k as u128).map(|i| i.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 5).collect();
    let code = LpnCode::with_table(k, 7, n);
    let (mut a_two, mut b_two) = (vec![0u128; n], vec![0u128; n]);
    let (mut a_one, mut b_one) = (vec![0u128; n], vec![0u128; n]);
    // Touches every output page once, outside the timing.
    code.encode_pair(&a, &mut a_one, &b, &mut b_one);
    code.encode(&a, &mut a_two);
    code.encode_over(&b, &mut b_two);
    assert!(a_one == a_two && b_one == b_two, "the fused pass differs");
    for round in 1..=3 {
        let start = Instant::now();
        code.encode(&a, &mut a_two);
        code.encode_over(&b, &mut b_two);
        let two = start.elapsed().as_nanos() as f64 / n as f64;
        let start = Instant::now();
        code.encode_pair(&a, &mut a_one, &b, &mut b_one);
        let one = start.elapsed().as_nanos() as f64 / n as f64;
        println!("round {round}: two passes {two:.1} ns per pair of rows, one pass {one:.1} ns");
    }
    println!("outputs equal");
}
