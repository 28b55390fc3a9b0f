//! Dropout with a seedable random source.
//!
//! candle's CPU random generator cannot be seeded, so a training run that uses it could not
//! be repeated or resumed exactly. Each mask here gets a seed from a per-thread ChaCha8
//! generator that [`seed`] resets; the training loop seeds it from (run seed, step) before
//! every step, which makes a resumed run draw the same masks as an uninterrupted one. Within
//! a mask, element `i` is kept or dropped by a hash of (mask seed, `i`) ([`mask_bits`]): the
//! elements are independent, so the mask is drawn on every thread at once and is the same
//! whatever the thread count (a sequential generator drew one element at a time, about 4 %
//! of a fine-tuning step).

use std::cell::RefCell;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

thread_local! {
    static RNG: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(0));
}

/// Resets this thread's dropout generator.
pub fn seed(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = ChaCha8Rng::seed_from_u64(seed));
}

/// A seed for a mask drawn elsewhere (the attention op's), from this thread's generator:
/// the same (run seed, step) seeding makes it repeat on resume.
pub(crate) fn next_seed() -> u64 {
    RNG.with(|r| r.borrow_mut().random::<u64>())
}

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`
/// (inverted dropout, as PyTorch).
pub fn dropout(x: &Tensor, p: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::config(
            "dropout",
            format!("must be in [0, 1), found {p}"),
        ));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let n = x.elem_count();
    let scale = (1.0 / (1.0 - p)) as f32;
    let threshold = drop_threshold(p);
    let seed = next_seed();
    // Chunks big enough that a task is tens of microseconds of hashing.
    const CHUNK: usize = 1 << 14;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = (c * CHUNK) as u64;
            for (i, m) in chunk.iter_mut().enumerate() {
                if mask_bits(seed, base + i as u64) >= threshold {
                    *m = scale;
                }
            }
        });
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}

/// The [`mask_bits`] value below which an element is dropped with probability `p`: keep
/// when the 24 bits, as a fraction, are `>= p` (the comparison `random::<f32>() < 1 - p`
/// makes on 24-bit uniform values).
#[inline]
pub(crate) fn drop_threshold(p: f64) -> u64 {
    (p * (1u64 << 24) as f64).round() as u64
}

/// 24 uniform bits for element `index` of a mask drawn with `seed` (SplitMix64's finalizer,
/// a bijection that mixes every input bit into every output bit).
#[inline(always)]
pub(crate) fn mask_bits(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) >> 40
}
