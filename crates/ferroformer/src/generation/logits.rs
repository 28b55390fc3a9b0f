//! Logits processors and warpers with `transformers`' semantics, applied to one row of
//! next-token scores at a time (`f32`, as `transformers` computes them).

use std::collections::HashSet;

use rand::Rng;

use super::config::GenerationConfig;

/// The processors a [`GenerationConfig`] asks for, in `transformers`' order.
#[derive(Debug, Clone)]
pub struct LogitsProcessor<'a> {
    cfg: &'a GenerationConfig,
    /// Length of the (padded) prompt: `min_new_tokens` counts from here.
    prompt_len: usize,
    /// Total length at most: `forced_eos_token_id` is forced at the last position.
    max_len: Option<usize>,
}

impl<'a> LogitsProcessor<'a> {
    /// Processors for prompts of `prompt_len` tokens (padding included, as in
    /// `transformers`).
    pub fn new(cfg: &'a GenerationConfig, prompt_len: usize) -> Self {
        Self {
            cfg,
            prompt_len,
            max_len: None,
        }
    }

    /// Sets the total length generation stops at (where `forced_eos_token_id` applies).
    pub fn with_max_length(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// Applies the processors that run for every decoding method, given the row's tokens so
    /// far (`ids`, padding included; the decoder's tokens for encoder-decoder models), in
    /// `transformers`' order: repetition penalty, no-repeat n-grams, bad words,
    /// end-of-sequence suppression below `min_length` / `min_new_tokens`, the forced first
    /// token, the forced last token.
    pub fn process(&self, ids: &[u32], scores: &mut [f32]) {
        let c = self.cfg;
        if c.repetition_penalty != 1.0 {
            repetition_penalty(ids, scores, c.repetition_penalty as f32);
        }
        if c.no_repeat_ngram_size > 0 {
            no_repeat_ngram(ids, scores, c.no_repeat_ngram_size);
        }
        if !c.bad_words_ids.is_empty() {
            bad_words(ids, scores, &c.bad_words_ids, &c.eos_token_id);
        }
        let cur_len = ids.len();
        let too_short = (c.min_length > 0 && cur_len < c.min_length)
            || c.min_new_tokens
                .is_some_and(|n| n > 0 && cur_len.saturating_sub(self.prompt_len) < n);
        if too_short {
            for &e in &c.eos_token_id {
                if let Some(s) = scores.get_mut(e as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if let (Some(bos), 1) = (c.forced_bos_token_id, cur_len) {
            force(scores, &[bos]);
        }
        if !c.forced_eos_token_id.is_empty() && self.max_len == Some(cur_len + 1) {
            force(scores, &c.forced_eos_token_id);
        }
    }

    /// Applies the sampling warpers: temperature, top-k, top-p, min-p.
    pub fn warp(&self, scores: &mut [f32]) {
        let c = self.cfg;
        // `transformers` keeps one token at least (two only for beam sampling, which this
        // crate rejects).
        let min_keep = 1;
        if c.temperature != 1.0 {
            let t = c.temperature as f32;
            scores.iter_mut().for_each(|s| *s /= t);
        }
        if c.top_k > 0 {
            top_k(scores, c.top_k.max(min_keep));
        }
        if c.top_p < 1.0 {
            top_p(scores, c.top_p as f32, min_keep);
        }
        if let Some(p) = c.min_p {
            min_p(scores, p as f32, min_keep);
        }
    }
}

/// Every score `-inf` except those of `tokens`, which become 0.
fn force(scores: &mut [f32], tokens: &[u32]) {
    scores.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
    for &t in tokens {
        if let Some(s) = scores.get_mut(t as usize) {
            *s = 0.0;
        }
    }
}

/// Bans the last token of every bad-word sequence whose other tokens end `ids` (a
/// one-token sequence always); sequences that are a lone end-of-sequence token are ignored,
/// as `transformers`' `NoBadWordsLogitsProcessor` does.
pub fn bad_words(ids: &[u32], scores: &mut [f32], bad: &[Vec<u32>], eos: &[u32]) {
    for seq in bad {
        let Some((&last, prefix)) = seq.split_last() else {
            continue;
        };
        if prefix.is_empty() && eos.contains(&last) {
            continue;
        }
        if ids.ends_with(prefix) {
            if let Some(s) = scores.get_mut(last as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Scores of tokens already present: divided by `penalty` when positive, multiplied when
/// negative (each token once, however often it occurs).
pub fn repetition_penalty(ids: &[u32], scores: &mut [f32], penalty: f32) {
    let seen: HashSet<u32> = ids.iter().copied().collect();
    for t in seen {
        if let Some(s) = scores.get_mut(t as usize) {
            *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
        }
    }
}

/// Bans every token that would complete an n-gram of size `n` already in `ids`.
pub fn no_repeat_ngram(ids: &[u32], scores: &mut [f32], n: usize) {
    let cur_len = ids.len();
    if cur_len + 1 < n {
        return;
    }
    let prefix = &ids[cur_len + 1 - n..];
    for w in ids.windows(n) {
        if &w[..n - 1] == prefix {
            if let Some(s) = scores.get_mut(w[n - 1] as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Keeps the `k` highest scores (and any tied with the k-th), the rest get `-inf`.
pub fn top_k(scores: &mut [f32], k: usize) {
    let k = k.min(scores.len());
    if k == 0 {
        return;
    }
    let mut sorted: Vec<f32> = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[k - 1];
    scores
        .iter_mut()
        .filter(|s| **s < kth)
        .for_each(|s| *s = f32::NEG_INFINITY);
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// `log_softmax` of a row.
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|s| (s - max).exp()).sum();
    let lse = max + sum.ln();
    scores.iter().map(|s| s - lse).collect()
}

/// Nucleus filtering as `transformers` does it: sort ascending, drop the tokens whose
/// cumulative probability stays at or below `1 - p`, keep the `min_keep` most likely.
pub fn top_p(scores: &mut [f32], p: f32, min_keep: usize) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
    let probs = softmax(&sorted);
    let n = scores.len();
    let mut acc = 0f32;
    for (rank, (&i, pr)) in order.iter().zip(&probs).enumerate() {
        acc += pr;
        if acc <= 1.0 - p && rank < n.saturating_sub(min_keep) {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Drops tokens whose probability is below `p` times the most likely token's.
pub fn min_p(scores: &mut [f32], p: f32, min_keep: usize) {
    let probs = softmax(scores);
    let top = probs.iter().copied().fold(0f32, f32::max);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    for &i in order.iter().skip(min_keep) {
        if probs[i] < p * top {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// The most likely token (the first one on ties, like `argmax`).
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// Draws a token from `softmax(scores)`.
pub fn sample(scores: &[f32], rng: &mut impl Rng) -> u32 {
    let probs = softmax(scores);
    let u: f64 = rng.random();
    let mut acc = 0f64;
    let mut last = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            acc += p as f64;
            last = i;
            if u < acc {
                return i as u32;
            }
        }
    }
    // Rounding left `acc` just under 1: the last token with any probability.
    last as u32
}
