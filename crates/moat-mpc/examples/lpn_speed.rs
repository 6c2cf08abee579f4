//! Speed of Ferret's LPN encoding on one core: indices computed as it goes
//! ([`LpnCode::new`]) against indices streamed from the per-process table
//! ([`LpnCode::with_table`]), on the main B12 code (`k = 2^18`, one round of 6,225,920 rows).
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example lpn_speed` — run two at once to see
//! the encoding as both parties of a round do it. The last column runs the table's row loop
//! over a 1 MB input (`k = 2^16`, a cache-sized input, not a parameter set) to show what the
//! random reads into the 4 MB one cost.

use std::time::Instant;

use moat_mpc::ot::ferret::FerretParams;
use moat_mpc::ot::ferret::lpn::LpnCode;

fn per_output(code: &LpnCode, input: &[u128], out: &mut [u128]) -> f64 {
    let start = Instant::now();
    code.encode(input, out);
    start.elapsed().as_nanos() as f64 / out.len() as f64
}

fn main() {
    let (k, n) = (FerretParams::B12.main.k, FerretParams::B12.main.n);
    let input: Vec<u128> = (0..k as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
    let mut out = vec![0u128; n];
    let computed = LpnCode::new(k, 7);
    let start = Instant::now();
    let tabled = LpnCode::with_table(k, 7, n);
    println!("table built in {:.0} ms", start.elapsed().as_secs_f64() * 1e3);
    per_output(&computed, &input, &mut out); // touches the output's pages once
    // The same row loop over a 1 MB input (k = 2^16), which fits a 1 MB L2: how much of the
    // time the random reads into the 4 MB one cost.
    let small_k = 1 << 16;
    let small = LpnCode::with_table(small_k, 7, n);
    for round in 1..=3 {
        let a = per_output(&computed, &input, &mut out);
        let b = per_output(&tabled, &input, &mut out);
        let c = per_output(&small, &input[..small_k], &mut out);
        println!(
            "round {round}: computed indices {a:.1} ns per output, table {b:.1} ns, table with k = 2^16 {c:.1} ns"
        );
    }
}
