//! Minibatch assembly: seeded shuffling and data augmentation on the host.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use crate::data::Dataset;
use crate::error::{NnError, Result};

use super::Augment;

/// Zero padding of the random crop, in pixels on every side.
pub const CROP_PAD: usize = 4;

/// The sample order of one epoch: `0..n` shuffled by `rng`.
pub(crate) fn epoch_order(n: usize, rng: &mut ChaCha20Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    order
}

/// The features of the samples at `indices`, concatenated, augmented as `augment` says, and
/// their labels.
pub(crate) fn assemble(
    data: &Dataset,
    indices: &[usize],
    augment: Augment,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<f32>, Vec<u16>)> {
    let per = data.sample_len();
    let mut features = Vec::with_capacity(per * indices.len());
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let sample = data.sample(i);
        match augment {
            Augment::None => features.extend_from_slice(sample),
            Augment::CropFlip => {
                let &[c, h, w] = data.sample_shape.as_slice() else {
                    return Err(NnError::Train(format!(
                        "crop-and-flip augmentation needs [C, H, W] samples, not {:?}",
                        data.sample_shape
                    )));
                };
                let dy = rng.random_range(0..=2 * CROP_PAD);
                let dx = rng.random_range(0..=2 * CROP_PAD);
                let flip = rng.random_bool(0.5);
                crop_flip(sample, [c, h, w], dy, dx, flip, &mut features);
            }
        }
        labels.push(data.labels[i]);
    }
    Ok((features, labels))
}

/// Appends the `h×w` crop at offset `(dy, dx)` of the image zero-padded by [`CROP_PAD`] on every
/// side, mirrored horizontally when `flip`.
pub(crate) fn crop_flip(sample: &[f32], [c, h, w]: [usize; 3], dy: usize, dx: usize, flip: bool, out: &mut Vec<f32>) {
    for ch in 0..c {
        let plane = &sample[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            let sy = (y + dy).checked_sub(CROP_PAD).filter(|&sy| sy < h);
            for x in 0..w {
                let cx = if flip { w - 1 - x } else { x };
                let sx = (cx + dx).checked_sub(CROP_PAD).filter(|&sx| sx < w);
                out.push(match (sy, sx) {
                    (Some(sy), Some(sx)) => plane[sy * w + sx],
                    _ => 0.0,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn centred_crop_without_flip_is_the_identity() {
        let img: Vec<f32> = (0..2 * 3 * 5).map(|v| v as f32).collect();
        let mut out = Vec::new();
        crop_flip(&img, [2, 3, 5], CROP_PAD, CROP_PAD, false, &mut out);
        assert_eq!(out, img);
    }

    #[test]
    fn crop_shifts_in_zeros_and_flip_mirrors_rows() {
        // One channel, 2×3: rows [1 2 3], [4 5 6].
        let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = Vec::new();
        // Offset one pixel down and one right of centre: out[y][x] = img[y+1][x+1].
        crop_flip(&img, [1, 2, 3], CROP_PAD + 1, CROP_PAD + 1, false, &mut out);
        assert_eq!(out, vec![5.0, 6.0, 0.0, 0.0, 0.0, 0.0]);
        out.clear();
        crop_flip(&img, [1, 2, 3], CROP_PAD, CROP_PAD, true, &mut out);
        assert_eq!(out, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, &mut ChaCha20Rng::seed_from_u64(1));
        let b = epoch_order(100, &mut ChaCha20Rng::seed_from_u64(1));
        let c = epoch_order(100, &mut ChaCha20Rng::seed_from_u64(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
