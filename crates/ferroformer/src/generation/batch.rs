//! Continuous batching: sequences that started at different times decode together, one
//! forward pass per step over all of them, each with its own cache length and position.
//!
//! [`BatchDecoder`] keeps one KV cache per layer for the whole batch, every row left-padded
//! to the longest row, with an attention mask that hides the padding. Positions come from
//! the mask (as in [`super::generate_ids`]' left-padded batches), so each row computes what
//! it would compute alone: the greedy tokens of a sequence do not depend on who else is in
//! the batch. A sequence is prefilled alone ([`BatchDecoder::prefill`]) and joins between
//! steps, into the slot of a row that finished when it fits; rows leave between steps too
//! ([`BatchDecoder::update`]); the batch is rebuilt narrower once every row pads enough
//! columns, so the cache holds about what the running rows use.
//!
//! [`SequenceSampler`] chooses each row's next token with its own settings and random
//! generator: [`GenerationConfig`]'s processors and warpers, plus the OpenAI API's
//! presence / frequency penalties and logit bias, and the log-probabilities it asks for.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::GenerationConfig;
use super::json_constraint::JsonConstraint;
use super::logits::{self, LogitsProcessor};
use super::stream::{StopReason, StreamOutput};
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::nn::{KvCache, LayerCache};

/// The KV caches of one prefilled sequence, ready to join a batch.
#[derive(Debug, Clone)]
pub struct SequenceCache {
    caches: Vec<LayerCache>,
    len: usize,
}

impl SequenceCache {
    /// Cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Positions of room a rebuilt batch cache gets before its buffer grows; also how many
/// leading columns every row may pad before the batch is rebuilt narrower.
const ROOM: usize = 64;

/// Several sequences decoding together over one model (see the module documentation).
///
/// Rows live in slots. A finished row frees its slot; a new sequence no longer than the
/// batch's width is written into a free slot in place (its columns before its own are
/// masked), so sequences coming and going cost no copy of the batch. The cache is rebuilt
/// (rows compacted, leading columns that every row pads cut off) only when a new sequence is
/// longer than the width, when free slots outnumber running rows, or when every row pads
/// [`ROOM`] columns or more.
pub struct BatchDecoder<'m> {
    model: &'m DecoderOnlyTransformer,
    /// One cache per layer, `(slots, kv_heads, width, head_dim)`.
    caches: Vec<LayerCache>,
    /// Each slot's row id and cached length (its real positions, right-aligned); `None`
    /// when free.
    slots: Vec<Option<(u64, usize)>>,
    /// Cached columns.
    width: usize,
}

impl<'m> BatchDecoder<'m> {
    /// An empty batch over `model`.
    pub fn new(model: &'m DecoderOnlyTransformer) -> Self {
        Self {
            model,
            caches: model.new_caches(),
            slots: Vec::new(),
            width: 0,
        }
    }

    /// The model.
    pub fn model(&self) -> &'m DecoderOnlyTransformer {
        self.model
    }

    /// Running rows.
    pub fn rows(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Cached positions of the batch, padding and free slots included (`slots × width`):
    /// what the cache occupies.
    pub fn cached_positions(&self) -> usize {
        self.slots.len() * self.width
    }

    /// Bytes one cached position takes (keys and values of every layer: f16 under
    /// llama.cpp's arithmetic, the activations' dtype otherwise).
    pub fn bytes_per_position(&self) -> usize {
        let cfg = self.model.config();
        let a = &cfg.stack.layer.self_attention;
        let element = crate::nn::ops::kv_element_bytes(cfg.arithmetic, self.model.dtype());
        cfg.stack.num_layers * 2 * a.num_kv_heads * a.head_dim * element
    }

    /// Runs `prompt` alone through the model: its caches and the scores of the first new
    /// token (`f32`, one per vocabulary entry).
    pub fn prefill(&self, prompt: &[u32]) -> Result<(SequenceCache, Vec<f32>)> {
        if prompt.is_empty() {
            return Err(Error::Invalid(
                "an empty prompt has nothing to continue from".into(),
            ));
        }
        let mut caches = self.model.new_caches();
        let input = Tensor::new(prompt, self.model.device())?.unsqueeze(0)?;
        let logits = self
            .model
            .next_token_logits(&input, None, Some(&mut caches))?;
        let scores = logits.get(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok((
            SequenceCache {
                caches,
                len: prompt.len(),
            },
            scores,
        ))
    }

    /// Between steps: the rows `leaving` (by the ids they joined with) leave, `joining`
    /// (id, prefilled sequence) join. A finished row's slot is reused at once, and its
    /// memory freed when the batch is next rebuilt.
    pub fn update(&mut self, leaving: &[u64], joining: Vec<(u64, SequenceCache)>) -> Result<()> {
        for id in leaving {
            let slot = self.slot_of(*id)?;
            self.slots[slot] = None;
        }
        let mut pending = Vec::new();
        for (id, seq) in joining {
            if self.slots.iter().flatten().any(|(i, _)| *i == id) {
                return Err(Error::Invalid(format!("row id {id} is already running")));
            }
            let free = self.slots.iter().position(|s| s.is_none());
            match free {
                Some(slot) if seq.len <= self.width => {
                    for (layer, cache) in self.caches.iter_mut().enumerate() {
                        let Some((k, v)) = seq.caches[layer].self_attention.get() else {
                            return Err(Error::Invalid(
                                "a joining sequence has no cached positions".into(),
                            ));
                        };
                        cache
                            .self_attention
                            .write_row(slot, self.width - seq.len, &k, &v)?;
                    }
                    self.slots[slot] = Some((id, seq.len));
                }
                _ => pending.push((id, seq)),
            }
        }
        let live = self.rows() + pending.len();
        let free = self.slots.len() - self.rows();
        let min_pad = self
            .slots
            .iter()
            .flatten()
            .map(|(_, l)| self.width - l)
            .min()
            .unwrap_or(self.width);
        if !pending.is_empty() || free > live || (live > 0 && min_pad >= ROOM) || live == 0 {
            self.rebuild(pending)?;
        }
        Ok(())
    }

    fn slot_of(&self, id: u64) -> Result<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|(i, _)| i == id))
            .ok_or_else(|| Error::Invalid(format!("no running row has id {id}")))
    }

    /// Compacts the running rows (in slot order) and appends `joining`, at the narrowest
    /// width.
    fn rebuild(&mut self, joining: Vec<(u64, SequenceCache)>) -> Result<()> {
        let kept: Vec<(usize, u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(id, l)| (i, id, l)))
            .collect();
        let rows: Vec<(u64, usize)> = kept
            .iter()
            .map(|&(_, id, l)| (id, l))
            .chain(joining.iter().map(|(id, s)| (*id, s.len)))
            .collect();
        let width = rows.iter().map(|r| r.1).max().unwrap_or(0);
        let mut caches = Vec::with_capacity(self.caches.len());
        for (layer, cache) in self.caches.iter().enumerate() {
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            if let Some((k, v)) = cache.self_attention.get() {
                for &(i, _, len) in &kept {
                    // Each kept row: its own positions, left-padded to the new width.
                    let (k, v) = (
                        k.narrow(0, i, 1)?.narrow(2, self.width - len, len)?,
                        v.narrow(0, i, 1)?.narrow(2, self.width - len, len)?,
                    );
                    let (k, v) = fit_width(k, v, len, width)?;
                    ks.push(k);
                    vs.push(v);
                }
            }
            for (_, seq) in &joining {
                let Some((k, v)) = seq.caches[layer].self_attention.get() else {
                    return Err(Error::Invalid(
                        "a joining sequence has no cached positions".into(),
                    ));
                };
                let (k, v) = fit_width(k, v, seq.len, width)?;
                ks.push(k);
                vs.push(v);
            }
            let mut new = LayerCache::default();
            if !ks.is_empty() {
                let k = Tensor::cat(&ks, 0)?;
                let v = Tensor::cat(&vs, 0)?;
                new.self_attention = KvCache::from_tensors(&k, &v, ROOM)?;
            }
            caches.push(new);
        }
        self.caches = caches;
        self.slots = rows.into_iter().map(Some).collect();
        self.width = if self.slots.is_empty() { 0 } else { width };
        Ok(())
    }

    /// One decoding step: feeds `tokens` (row id, token) — one for every running row, in
    /// any order — and returns each one's next-token scores (`f32`), in the same order.
    pub fn step(&mut self, tokens: &[(u64, u32)]) -> Result<Vec<Vec<f32>>> {
        let n = self.slots.len();
        if tokens.len() != self.rows() {
            return Err(Error::Invalid(format!(
                "a step needs one token for each of the {} running rows, found {} tokens",
                self.rows(),
                tokens.len()
            )));
        }
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let slots = tokens
            .iter()
            .map(|&(id, _)| self.slot_of(id))
            .collect::<Result<Vec<_>>>()?;
        // A full buffer would grow by hundreds of positions for every slot: rebuild it with
        // room for the next few dozen steps instead (and without the columns nobody needs).
        let full_buffer = self
            .caches
            .first()
            .is_some_and(|c| c.self_attention.capacity() <= self.width);
        let (slots, n) = if full_buffer {
            self.rebuild(Vec::new())?;
            let slots = tokens
                .iter()
                .map(|&(id, _)| self.slot_of(id))
                .collect::<Result<Vec<_>>>()?;
            (slots, self.slots.len())
        } else {
            (slots, n)
        };
        let mut input = vec![0u32; n];
        for (&s, &(_, t)) in slots.iter().zip(tokens) {
            input[s] = t;
        }
        let device = self.model.device();
        let input = Tensor::new(input.as_slice(), device)?.unsqueeze(1)?;
        let cols = self.width + 1;
        let full = self
            .slots
            .iter()
            .all(|s| s.is_some_and(|(_, l)| l == self.width));
        let mask = if full {
            // No padding: the unmasked path, as a sequence alone runs.
            None
        } else {
            let mut m = Vec::with_capacity(n * cols);
            for s in &self.slots {
                // A free slot attends to its own new position only.
                let pad = s.map_or(self.width, |(_, l)| self.width - l);
                m.extend((0..cols).map(|c| u32::from(c >= pad)));
            }
            Some(Tensor::from_vec(m, (n, cols), device)?)
        };
        let logits = self
            .model
            .next_token_logits(&input, mask.as_ref(), Some(&mut self.caches));
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // A failed pass may have cached part of its input: the batch is lost.
                self.caches = self.model.new_caches();
                self.slots.clear();
                self.width = 0;
                return Err(e);
            }
        };
        self.width += 1;
        for (_, l) in self.slots.iter_mut().flatten() {
            *l += 1;
        }
        let logits = logits.to_dtype(DType::F32)?;
        slots
            .iter()
            .map(|&s| Ok(logits.get(s)?.to_vec1::<f32>()?))
            .collect()
    }
}

/// `(1|rows, heads, from, dim)` keys and values left-padded with zeros (or with their
/// leading columns cut) to `to` columns.
fn fit_width(k: Tensor, v: Tensor, from: usize, to: usize) -> Result<(Tensor, Tensor)> {
    Ok(match to.cmp(&from) {
        std::cmp::Ordering::Equal => (k, v),
        std::cmp::Ordering::Less => (k.narrow(2, from - to, to)?, v.narrow(2, from - to, to)?),
        std::cmp::Ordering::Greater => {
            let (b, h, _, d) = k.dims4()?;
            let zeros = Tensor::zeros((b, h, to - from, d), k.dtype(), k.device())?;
            (
                Tensor::cat(&[&zeros, &k], 2)?,
                Tensor::cat(&[&zeros, &v], 2)?,
            )
        }
    })
}

/// One alternative and its log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
}

/// A chosen token with the log-probabilities asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    /// The token.
    pub token: u32,
    /// Its log-probability (under the processed scores, before sampling warpers); NaN
    /// unless [`ExtraSampling::logprobs`] or `top_logprobs` asked for it.
    pub logprob: f32,
    /// The most likely alternatives, best first (empty unless asked).
    pub top: Vec<TokenLogprob>,
}

/// The OpenAI API's sampling options beyond [`GenerationConfig`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtraSampling {
    /// Subtracted once from the score of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from the score of every generated token, times its count.
    pub frequency_penalty: f32,
    /// Added to the given tokens' scores.
    pub logit_bias: HashMap<u32, f32>,
    /// How many alternatives to report with each token (0: none); tokens that cannot be
    /// chosen (score `-inf`) are left out, so there may be fewer.
    pub top_logprobs: usize,
    /// Whether to report the chosen token's log-probability ([`SampledToken::logprob`]);
    /// implied by `top_logprobs > 0`. Off, a greedy step skips the log-softmax over the
    /// vocabulary (a tenth of a 16-row decode step on a 50k vocabulary).
    pub logprobs: bool,
}

/// Chooses one sequence's tokens: its own settings and random generator, so that it draws
/// the same numbers whoever shares the batch.
pub struct SequenceSampler {
    cfg: GenerationConfig,
    extra: ExtraSampling,
    prompt_len: usize,
    rng: ChaCha8Rng,
    counts: HashMap<u32, u32>,
    json: Option<JsonConstraint>,
}

impl SequenceSampler {
    /// A sampler for a prompt of `prompt_len` tokens; the generator is seeded from
    /// `cfg.seed`.
    pub fn new(cfg: GenerationConfig, extra: ExtraSampling, prompt_len: usize) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        Self {
            cfg,
            extra,
            prompt_len,
            rng,
            counts: HashMap::new(),
            json: None,
        }
    }

    /// Constrains the tokens to one JSON object (see [`JsonConstraint`]): each step masks
    /// what would not keep the output a JSON-object prefix, and, when `cfg.max_new_tokens`
    /// is set, what would leave too few tokens to complete the object.
    pub fn with_json(mut self, constraint: JsonConstraint) -> Self {
        self.json = Some(constraint);
        self
    }

    /// The JSON constraint, when there is one.
    pub fn json(&self) -> Option<&JsonConstraint> {
        self.json.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &GenerationConfig {
        &self.cfg
    }

    /// Chooses the next token from `scores` given the sequence so far (`ids`: prompt and
    /// generated tokens), as [`super::generate_stream`] does, then the OpenAI penalties.
    pub fn choose(&mut self, ids: &[u32], scores: &mut [f32]) -> SampledToken {
        LogitsProcessor::new(&self.cfg, self.prompt_len).process(ids, scores);
        let x = &self.extra;
        if x.presence_penalty != 0.0 || x.frequency_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(s) = scores.get_mut(t as usize) {
                    *s -= x.presence_penalty + x.frequency_penalty * n as f32;
                }
            }
        }
        for (&t, &b) in &x.logit_bias {
            if let Some(s) = scores.get_mut(t as usize) {
                *s += b;
            }
        }
        if let Some(json) = &mut self.json {
            // The constraint comes last, so that no processor can bring back a token it
            // masked; log-probabilities are then those of the constrained distribution.
            let generated = ids.len().saturating_sub(self.prompt_len);
            let remaining = self.cfg.max_new_tokens.map(|m| m.saturating_sub(generated));
            json.mask(scores, remaining);
        }
        let logprobs = if x.logprobs || x.top_logprobs > 0 {
            logits::log_softmax(scores)
        } else {
            Vec::new()
        };
        let next = if self.cfg.do_sample {
            LogitsProcessor::new(&self.cfg, self.prompt_len).warp(scores);
            logits::sample(scores, &mut self.rng)
        } else {
            logits::argmax(scores)
        };
        *self.counts.entry(next).or_insert(0) += 1;
        if let Some(json) = &mut self.json {
            // `next` was allowed: its scores alone were finite.
            json.advance(next);
        }
        let top = if x.top_logprobs > 0 {
            let mut order: Vec<usize> = (0..logprobs.len()).collect();
            let k = x.top_logprobs.min(order.len());
            order.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
                logprobs[b].total_cmp(&logprobs[a])
            });
            order.truncate(k);
            // Masked tokens (a JSON constraint, banned words) are no alternatives: their
            // -inf would reach clients as `null`.
            order.retain(|&i| logprobs[i].is_finite());
            order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .map(|i| TokenLogprob {
                    token: i as u32,
                    logprob: logprobs[i],
                })
                .collect()
        } else {
            Vec::new()
        };
        SampledToken {
            token: next,
            logprob: if logprobs.is_empty() {
                f32::NAN
            } else {
                logprobs
                    .get(next as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY)
            },
            top,
        }
    }
}

/// Generates a continuation of `prompt` alone with `sampler` (its settings, penalties and
/// JSON constraint), through a [`BatchDecoder`] of one row: up to `max_new` tokens, ending
/// at one of `eos` (kept as the last token). What a request of the server gets when it runs
/// alone, without the server.
pub fn generate_with_sampler(
    model: &DecoderOnlyTransformer,
    prompt: &[u32],
    sampler: &mut SequenceSampler,
    max_new: usize,
    eos: &[u32],
) -> Result<StreamOutput> {
    let mut batch = BatchDecoder::new(model);
    let mut ids = prompt.to_vec();
    let mut tokens = Vec::new();
    if max_new == 0 {
        return Ok(StreamOutput {
            tokens,
            stop_reason: StopReason::Length,
        });
    }
    let (cache, mut scores) = batch.prefill(prompt)?;
    batch.update(&[], vec![(0, cache)])?;
    loop {
        let t = sampler.choose(&ids, &mut scores).token;
        ids.push(t);
        tokens.push(t);
        if eos.contains(&t) {
            return Ok(StreamOutput {
                tokens,
                stop_reason: StopReason::Eos,
            });
        }
        if tokens.len() >= max_new || ids.len() >= model.config().embeddings.max_positions {
            return Ok(StreamOutput {
                tokens,
                stop_reason: StopReason::Length,
            });
        }
        scores = batch
            .step(&[(0, t)])?
            .pop()
            .ok_or_else(|| Error::Invalid("a step returned no scores".into()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_width_pads_on_the_left_and_cuts_leading_columns() {
        let dev = candle_core::Device::Cpu;
        let k = Tensor::arange(0f32, 4., &dev)
            .unwrap()
            .reshape((1, 1, 2, 2))
            .unwrap();
        let (p, _) = fit_width(k.clone(), k.clone(), 2, 3).unwrap();
        assert_eq!(
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 0., 0., 1., 2., 3.]
        );
        let (c, _) = fit_width(k.clone(), k, 2, 1).unwrap();
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![2., 3.]
        );
    }
}
