//! Sampling windows of a token stream: deterministic batches of `(inputs, labels)`.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Rounds of the Feistel network behind the per-epoch permutation.
const FEISTEL_ROUNDS: usize = 6;

/// Deterministic batches of `(inputs, labels)` windows from a token stream.
///
/// Window `i` covers tokens `[i * context_length, i * context_length + context_length + 1)`:
/// its input is the first `context_length` tokens and its labels are the same tokens shifted
/// left by one. Windows do not overlap except for that one token, so there are
/// `(num_tokens - 1) / context_length` of them.
///
/// [`WindowSampler::batch`] draws micro-batch number `step` (0-based, counting every
/// micro-batch ever drawn) as a pure function of `(seed, step)`: sample `k = step *
/// batch_size + row` is position `k % num_windows` of epoch `k / num_windows`, and each
/// epoch visits every window exactly once in its own seeded order. Resuming a run from its
/// step count therefore continues it exactly. The order is a keyed pseudo-random
/// permutation (a Feistel network whose round keys come from `ChaCha8Rng` seeded with
/// `seed`, stream `epoch`), computed per sample: no memory per window and no state.
#[derive(Debug, Clone)]
pub struct WindowSampler {
    num_tokens: usize,
    context_length: usize,
    num_windows: usize,
    seed: u64,
    /// Bits of each Feistel half: the permuted domain is `[0, 4^half_bits)`.
    half_bits: u32,
}

impl WindowSampler {
    /// A sampler over a stream of `num_tokens` tokens. Errors if `context_length` is 0 or
    /// the stream is shorter than one window (`context_length + 1` tokens).
    pub fn new(num_tokens: usize, context_length: usize, seed: u64) -> Result<Self> {
        if context_length == 0 {
            return Err(Error::config("context_length", "must be at least 1"));
        }
        let needed = context_length.saturating_add(1);
        if num_tokens < needed {
            return Err(Error::Invalid(format!(
                "too few tokens: {num_tokens} tokens, but one window of context_length {context_length} needs at least {needed}"
            )));
        }
        let num_windows = (num_tokens - 1) / context_length;
        let bits = usize::BITS - (num_windows - 1).leading_zeros(); // ceil(log2(num_windows))
        let half_bits = bits.div_ceil(2).max(1);
        Ok(WindowSampler {
            num_tokens,
            context_length,
            num_windows,
            seed,
            half_bits,
        })
    }

    /// The number of windows.
    pub fn num_windows(&self) -> usize {
        self.num_windows
    }

    /// The number of input (and label) tokens per window.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The number of tokens of the stream this sampler was made for.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// The epoch that the first row of micro-batch `step` belongs to.
    pub fn epoch(&self, step: u64, batch_size: usize) -> u64 {
        ((step as u128 * batch_size as u128) / self.num_windows as u128) as u64
    }

    fn round_keys(&self, epoch: u64) -> [u64; FEISTEL_ROUNDS] {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        std::array::from_fn(|_| rng.next_u64())
    }

    /// Position `index` (< num_windows) of the permutation given by `keys`.
    fn permute(&self, keys: &[u64; FEISTEL_ROUNDS], index: usize) -> usize {
        let half = self.half_bits;
        let mask = (1u64 << half) - 1;
        let mut x = index as u64;
        loop {
            // A bijection of [0, 4^half): cycle-walk until the value falls in range.
            let (mut left, mut right) = (x >> half, x & mask);
            for &key in keys {
                let f = mix(right ^ key) & mask;
                (left, right) = (right, left ^ f);
            }
            x = (left << half) | right;
            if (x as usize) < self.num_windows {
                return x as usize;
            }
        }
    }

    /// The window of global sample `k` (`k = step * batch_size + row`).
    fn window_of(&self, keys: &mut Option<(u64, [u64; FEISTEL_ROUNDS])>, k: u128) -> usize {
        let w = self.num_windows as u128;
        let epoch = (k / w) as u64;
        let position = (k % w) as usize;
        let keys = match keys {
            Some((e, k)) if *e == epoch => *k,
            _ => {
                let k = self.round_keys(epoch);
                *keys = Some((epoch, k));
                k
            }
        };
        self.permute(&keys, position)
    }

    fn push_window(
        &self,
        tokens: &[u32],
        window: usize,
        inputs: &mut Vec<u32>,
        labels: &mut Vec<u32>,
    ) {
        let start = window * self.context_length;
        let span = &tokens[start..start + self.context_length + 1];
        inputs.extend_from_slice(&span[..self.context_length]);
        labels.extend_from_slice(&span[1..]);
    }

    /// Micro-batch number `step`: `(inputs, labels)`, each `batch_size * context_length`
    /// ids, row-major (row `r` is `[r * context_length, (r + 1) * context_length)`).
    ///
    /// `tokens` is the stream given to [`WindowSampler::new`] (its first `num_tokens`
    /// tokens are used).
    ///
    /// # Panics
    ///
    /// If `tokens` is shorter than the `num_tokens` given to [`WindowSampler::new`].
    pub fn batch(&self, tokens: &[u32], step: u64, batch_size: usize) -> (Vec<u32>, Vec<u32>) {
        let mut inputs = Vec::with_capacity(batch_size * self.context_length);
        let mut labels = Vec::with_capacity(batch_size * self.context_length);
        let mut keys = None;
        let first = step as u128 * batch_size as u128;
        for row in 0..batch_size {
            let window = self.window_of(&mut keys, first + row as u128);
            self.push_window(tokens, window, &mut inputs, &mut labels);
        }
        (inputs, labels)
    }

    /// The first `max_windows` windows (all of them if fewer) in order, in batches of
    /// `batch_size` rows (the last batch may have fewer): a fixed evaluation set. Empty if
    /// `batch_size` is 0.
    ///
    /// # Panics
    ///
    /// If `tokens` is shorter than the `num_tokens` given to [`WindowSampler::new`].
    pub fn sequential_batches(
        &self,
        tokens: &[u32],
        batch_size: usize,
        max_windows: usize,
    ) -> Vec<(Vec<u32>, Vec<u32>)> {
        if batch_size == 0 {
            return Vec::new();
        }
        let n = max_windows.min(self.num_windows);
        (0..n)
            .step_by(batch_size)
            .map(|first| {
                let rows = batch_size.min(n - first);
                let mut inputs = Vec::with_capacity(rows * self.context_length);
                let mut labels = Vec::with_capacity(rows * self.context_length);
                for window in first..first + rows {
                    self.push_window(tokens, window, &mut inputs, &mut labels);
                }
                (inputs, labels)
            })
            .collect()
    }
}

/// A 64-bit mixer (the SplitMix64 finalizer): the Feistel round function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
