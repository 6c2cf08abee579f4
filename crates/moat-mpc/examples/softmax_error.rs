//! Error of each secure softmax against float softmax on a real model's logits, and the cost
//! of one secure softmax in the two-party protocol (in-memory channel, IKNP).
//!
//! `cargo run --release --example softmax_error -- MODEL.onnx [SAMPLES]` — the model must take
//! the embedded digits (8×8, normalised as `moat train --dataset digits` does).
//!
//! Reports, per variant, the largest and the mean absolute error per probability entry
//! against (a) float softmax of the float model's logits and (b) the same function
//! ([`Softmax::reference`]) on the fixed-point logits, and the label agreement with the float
//! model. The plaintext computation is bit for bit what the two-party protocol reveals
//! (tested in `ring_ops::softmax` and `engine::real`), so it stands for both backends.

use std::error::Error;
use std::time::Instant;

use moat_mpc::protocols::Session;
use moat_mpc::ring_ops::{PlainOps, SessionOps, Softmax, softmax};
use moat_mpc::transport::{Channel, memory};
use moat_mpc::{Party, share};
use moat_nn::{FixedPoint, QuantizedGraph};

fn float_softmax(z: &[f64]) -> Vec<f64> {
    Softmax::Exp.reference(z, z.len())
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: softmax_error MODEL.onnx [SAMPLES]")?;
    let limit: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(usize::MAX);
    let graph = moat_nn::onnx::load_onnx(std::path::Path::new(&path))?;
    let fp = FixedPoint::default();
    let q = QuantizedGraph::new(&graph, fp)?;
    let data = moat_nn::data::load_digits_all()?;
    let n = data.len().min(limit);
    println!("model {path}, {n} digits, ring ℓ = {}, f = {}", fp.ring_bits(), fp.frac_bits());
    let mut last_logits = Vec::new();
    for kind in Softmax::ALL {
        let (mut max_float, mut sum_float, mut max_same, mut sum_same, mut entries) = (0f64, 0f64, 0f64, 0f64, 0usize);
        let mut agree = 0;
        let started = Instant::now();
        for i in 0..n {
            let x = data.sample(i);
            let float_logits: Vec<f64> =
                moat_nn::FloatExecutor::logits(&graph, x)?.iter().map(|v| f64::from(*v)).collect();
            let fixed_logits = q.logits_encoded(x)?;
            let z: Vec<f64> = fixed_logits.iter().map(|v| fp.decode(*v)).collect();
            let p = softmax(&mut PlainOps::new(fp), &fixed_logits, fixed_logits.len(), kind)?;
            let p: Vec<f64> = p.iter().map(|v| fp.decode(*v)).collect();
            let want_float = float_softmax(&float_logits);
            let want_same = kind.reference(&z, z.len());
            for ((a, b), c) in p.iter().zip(&want_float).zip(&want_same) {
                max_float = max_float.max((a - b).abs());
                sum_float += (a - b).abs();
                max_same = max_same.max((a - c).abs());
                sum_same += (a - c).abs();
                entries += 1;
            }
            agree += usize::from(argmax(&p) == argmax(&float_logits));
            last_logits = fixed_logits;
        }
        println!(
            "{kind:>4}: vs float softmax max {max_float:.2e} mean {:.2e} | vs its own float function max {max_same:.2e} mean {:.2e} | label = float label {agree}/{n} | {:.1} µs/sample plaintext",
            sum_float / entries.max(1) as f64,
            sum_same / entries.max(1) as f64,
            started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
        );
    }
    // Cost of one secure softmax between two parties (one sample, in-memory channel).
    for kind in Softmax::ALL {
        let (z0, z1) = share(fp, &last_logits, &mut moat_mpc::Seed::from_os()?.rng());
        let (mut c0, mut c1) = memory::pair(Default::default());
        let client_rng = moat_mpc::Seed::from_os()?.rng();
        let client = std::thread::spawn(move || -> moat_mpc::Result<Vec<u64>> {
            let mut s = Session::setup_with_rng(&mut c1, Party::P1, fp, client_rng)?;
            softmax(&mut SessionOps::new(&mut s, &mut c1), z1.values(), z1.len(), kind)
        });
        let mut s = Session::setup_with_rng(&mut c0, Party::P0, fp, moat_mpc::Seed::from_os()?.rng())?;
        let before = c0.stats().total();
        let started = Instant::now();
        softmax(&mut SessionOps::new(&mut s, &mut c0), z0.values(), z0.len(), kind)?;
        let seconds = started.elapsed().as_secs_f64();
        let used = c0.stats().total().since(&before);
        client.join().map_err(|_| "client thread panicked")??;
        println!(
            "{kind:>4}: two-party, one sample of {} classes: {:.1} KB both directions, {} flights from P0, {:.1} ms",
            last_logits.len(),
            used.bytes_total() as f64 / 1e3,
            used.rounds,
            seconds * 1e3
        );
    }
    Ok(())
}
