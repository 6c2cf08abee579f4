//! Argmax for label-only answers: the index of the largest of `K` shared logits, revealed to
//! the client `P1` only.
//!
//! **Computes** for each sample of `K` logits the index of the *first* maximum (signed), as
//! [`moat_nn::exec::argmax_ring`]; `P1` learns that index and nothing else, `P0` learns
//! nothing.
//!
//! **How.** A tournament carrying `(value, index)` pairs, the index arithmetically shared
//! (initially public: `P0` holds `k`, `P1` holds 0). Each level pairs neighbours, the left `a`
//! covering lower indices than the right `b`; `s = DReLU(a − b) = 1{a ≥ b}` keeps the left on
//! ties, so the lowest index of the maximum wins, and one batched MUX selects both value and
//! index: `b + s·(a − b)`. At the end `P0` sends its index shares (reduced mod 2^⌈log₂ K⌉,
//! enough to open an index below `K`) and `P1` reconstructs.
//!
//! **Precondition:** `|logit| < 2^(ℓ−2)` (differences stay in the signed range).
//! **Cost** per sample: `K − 1` DReLUs and `2(K − 1)` MUX elements, plus ⌈log₂ K⌉ bits
//! `P0 → P1`; 8.26 KB per sample for `K = 10` at ℓ = 37. **Rounds:** `⌈log₂ K⌉` levels of
//! DReLU + MUX and the final opening: 17 flights from `P0` and 21 from `P1` for `K = 10`.

use super::drelu::drelu_plane;
use super::mux::{check_ring, mux_values};
use super::planes;
use super::session::Session;
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::shares::{AShare, Party};
use crate::transport::Channel;

/// The label of each sample of `classes` logits (`logits` holds `samples × classes` values,
/// sample-major). `P1` gets `Some(labels)`, `P0` gets `None`.
pub fn argmax(s: &mut Session, ch: &mut dyn Channel, logits: &AShare, classes: usize) -> Result<Option<Vec<usize>>> {
    check_ring(s, logits, "argmax")?;
    if classes == 0 || !logits.len().is_multiple_of(classes) {
        return Err(MpcError::invalid(
            "argmax",
            format!("{} logits do not split into {classes} classes", logits.len()),
        ));
    }
    let fp = logits.fixed_point();
    let party = s.party();
    let samples = logits.len() / classes;
    if samples == 0 {
        return Ok(if party == Party::P1 { Some(Vec::new()) } else { None });
    }
    let mut values = logits.values().to_vec();
    let mut index: Vec<u64> =
        (0..logits.len()).map(|k| if party == Party::P0 { (k % classes) as u64 } else { 0 }).collect();
    let mut k = classes;
    while k > 1 {
        let pairs = k / 2;
        let next_k = k.div_ceil(2);
        // Left (lower indices) and right candidates of every pair of every sample.
        let (mut va, mut vb, mut ia, mut ib) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for sample in 0..samples {
            for p in 0..pairs {
                let (l, r) = (sample * k + 2 * p, sample * k + 2 * p + 1);
                va.push(values[l]);
                vb.push(values[r]);
                ia.push(index[l]);
                ib.push(index[r]);
            }
        }
        let m = va.len();
        let dv: Vec<u64> = va.iter().zip(&vb).map(|(&a, &b)| fp.sub(a, b)).collect();
        let keep_left = planes::to_bitvec(drelu_plane(s, ch, &dv)?, m)?;
        let mut diffs = dv;
        diffs.extend(ia.iter().zip(&ib).map(|(&a, &b)| fp.sub(a, b)));
        let both = BitVec::from_fn(2 * m, |i| keep_left.bit(i % m) == 1);
        let chosen = mux_values(s, ch, &both, &diffs)?;
        let (mut next_v, mut next_i) = (Vec::with_capacity(samples * next_k), Vec::with_capacity(samples * next_k));
        for sample in 0..samples {
            for p in 0..pairs {
                let t = sample * pairs + p;
                next_v.push(fp.add(vb[t], chosen[t]));
                next_i.push(fp.add(ib[t], chosen[m + t]));
            }
            if k % 2 == 1 {
                next_v.push(values[sample * k + k - 1]);
                next_i.push(index[sample * k + k - 1]);
            }
        }
        values = next_v;
        index = next_i;
        k = next_k;
    }
    let width = (usize::BITS - (classes - 1).leading_zeros()).max(1);
    match party {
        Party::P0 => {
            ch.send_ring(&index, width)?;
            ch.flush()?;
            Ok(None)
        }
        Party::P1 => {
            let theirs = ch.recv_ring(samples, width)?;
            let m = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
            let labels = index
                .iter()
                .zip(&theirs)
                .map(|(&a, &b)| {
                    let label = (a.wrapping_add(b) & m) as usize;
                    if label < classes {
                        Ok(label)
                    } else {
                        Err(MpcError::peer("argmax", format!("opened label {label} ≥ {classes} classes")))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(labels))
        }
    }
}
