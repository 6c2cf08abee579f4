//! Correlated OT over several rings in one call (the building block of MUX and B2A).
//!
//! For each segment `(Δ, ℓ)` the sender gets uniformly random `x` and the receiver, with
//! choice bit `c`, gets `x + c·Δ mod 2^ℓ` — the flavour of
//! [`crate::ot::OtSender::send_correlated`], but with segments of different widths sharing
//! one run of random OTs and one correction frame, streamed chunk by chunk.
//!
//! **Cost:** `N = Σ|segment|` random OTs (receiver → sender) and `Σ |segment|·ℓ` bits of
//! corrections (sender → receiver); two flights. The receiver learns nothing about `Δ`
//! beyond `x + cΔ`, the sender nothing about `c`.

use super::planes::{self, BitWriter};
use crate::bits::BitVec;
use crate::error::{MpcError, Result};
use crate::ot::{OtReceiver, OtSender};
use crate::transport::Channel;

#[inline]
fn mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=64).contains(&bits) {
        Ok(())
    } else {
        Err(MpcError::invalid("correlated OT", format!("ring width {bits} not in 1..=64")))
    }
}

/// Maps a global OT index to (segment, index in segment) while walking forward.
struct Cursor<'a> {
    lens: &'a [usize],
    segment: usize,
    index: usize,
}

impl Cursor<'_> {
    /// The current position, then advances; skips empty segments.
    #[inline]
    fn next(&mut self) -> (usize, usize) {
        while self.index >= self.lens[self.segment] {
            self.segment += 1;
            self.index = 0;
        }
        let at = (self.segment, self.index);
        self.index += 1;
        at
    }
}

/// Sender side: `segments[s] = (Δ values, ℓ_s)`; returns each segment's `x`.
pub(crate) fn send(ot: &mut dyn OtSender, ch: &mut dyn Channel, segments: &[(&[u64], u32)]) -> Result<Vec<Vec<u64>>> {
    for &(_, bits) in segments {
        check_bits(bits)?;
    }
    let lens: Vec<usize> = segments.iter().map(|(d, _)| d.len()).collect();
    let total: usize = lens.iter().sum();
    let mut xs: Vec<Vec<u64>> = lens.iter().map(|&l| Vec::with_capacity(l)).collect();
    if total == 0 {
        return Ok(xs);
    }
    let corr_bits: usize = segments.iter().map(|(d, b)| d.len() * *b as usize).sum();
    let mut corrections = BitWriter::with_capacity(corr_bits);
    let mut cursor = Cursor { lens: &lens, segment: 0, index: 0 };
    ot.send_random_chunks(ch, total, &mut |_, pairs| {
        for p in pairs {
            let (s, k) = cursor.next();
            let (deltas, bits) = segments[s];
            let m = mask(bits);
            let (m0, m1) = (p[0] as u64 & m, p[1] as u64 & m);
            xs[s].push(m0);
            corrections.push(m1.wrapping_sub(m0).wrapping_sub(deltas[k]) & m, bits);
        }
        Ok(())
    })?;
    planes::send_words(ch, &corrections.finish(), corr_bits)?;
    ch.flush()?;
    Ok(xs)
}

/// Receiver side: `segments[s] = (choice bits, ℓ_s)`; returns each segment's `x + c·Δ`.
pub(crate) fn receive(
    ot: &mut dyn OtReceiver,
    ch: &mut dyn Channel,
    segments: &[(&BitVec, u32)],
) -> Result<Vec<Vec<u64>>> {
    for &(_, bits) in segments {
        check_bits(bits)?;
    }
    let lens: Vec<usize> = segments.iter().map(|(c, _)| c.len()).collect();
    let total: usize = lens.iter().sum();
    let mut ys: Vec<Vec<u64>> = lens.iter().map(|&l| Vec::with_capacity(l)).collect();
    if total == 0 {
        return Ok(ys);
    }
    let mut choices = BitWriter::with_capacity(total);
    for (c, _) in segments {
        for (k, &w) in c.words().iter().enumerate() {
            choices.push(w, (c.len() - 64 * k).min(64) as u32);
        }
    }
    let choices = planes::to_bitvec(choices.finish(), total)?;
    let mut cursor = Cursor { lens: &lens, segment: 0, index: 0 };
    ot.receive_random_chunks(ch, &choices, &mut |_, keys| {
        for &key in keys {
            let (s, _) = cursor.next();
            ys[s].push(key as u64 & mask(segments[s].1));
        }
        Ok(())
    })?;
    let corr_bits: usize = segments.iter().map(|(c, b)| c.len() * *b as usize).sum();
    let corrections = planes::recv_words(ch, corr_bits)?;
    let mut pos = 0;
    for ((c, bits), y) in segments.iter().zip(ys.iter_mut()) {
        let m = mask(*bits);
        for (k, v) in y.iter_mut().enumerate() {
            let d = planes::bits_at(&corrections, pos, *bits);
            pos += *bits as usize;
            *v = v.wrapping_sub(c.bit(k) * d) & m;
        }
    }
    Ok(ys)
}
