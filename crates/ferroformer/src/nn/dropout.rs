//! Dropout with a seedable random source.
//!
//! candle's CPU random generator cannot be seeded, so a training run that uses it could not
//! be repeated or resumed exactly. Dropout masks here come from a per-thread ChaCha8
//! generator that [`seed`] resets; the training loop seeds it from (run seed, step) before
//! every step, which makes a resumed run draw the same masks as an uninterrupted one.

use std::cell::RefCell;

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let mask: Vec<f32> = RNG.with(|r| {
        let mut r = r.borrow_mut();
        (0..n)
            .map(|_| if r.random::<f64>() < keep { scale } else { 0.0 })
            .collect()
    });
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok((x * mask)?)
}
