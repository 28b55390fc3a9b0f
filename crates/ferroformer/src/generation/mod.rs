//! Text generation from a causal language model, with the KV cache.
//!
//! - [`GenerationConfig`] + [`generate_ids`]: `transformers`' `generate` semantics for a
//!   batch of left-padded prompts: greedy search, sampling (temperature, top-k, top-p,
//!   min-p), beam search (length penalty, early stopping, several sequences per prompt),
//!   repetition penalty, no-repeat n-grams, minimum new tokens, stop strings.
//! - [`SamplingConfig`] + [`generate`]: one prompt, streamed token by token (the CLI's
//!   `generate` command).
//!
//! One module serves every decoder family (they all run on
//! [`DecoderOnlyTransformer`]).

pub mod causal_lm;
pub mod config;
pub mod logits;
pub mod perplexity;
pub mod search;

pub use causal_lm::AutoModelForCausalLM;
pub use config::{EarlyStopping, GenerationConfig};
pub use logits::LogitsProcessor;
pub use perplexity::{perplexity, Perplexity};
pub use search::{generate_ids, left_pad, GenerateOutput};

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability adds up to at least `p`.
    pub top_p: Option<f64>,
    /// Seed of the sampler: the same seed gives the same text.
    pub seed: u64,
    /// Stop after producing one of these tokens.
    pub eos_token_ids: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 100,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
            eos_token_ids: Vec::new(),
        }
    }
}

impl SamplingConfig {
    /// Rejects values that make no sense (as `transformers` does).
    pub fn validate(&self) -> Result<()> {
        if self.temperature.is_nan() || self.temperature < 0.0 || self.temperature.is_infinite() {
            return Err(Error::config(
                "temperature",
                format!("must be >= 0 (0 = greedy), found {}", self.temperature),
            ));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::config(
                    "top_p",
                    format!("must be in (0, 1], found {p}"),
                ));
            }
        }
        if self.top_k == Some(0) {
            return Err(Error::config("top_k", "must be > 0"));
        }
        Ok(())
    }
}

impl From<&SamplingConfig> for GenerationConfig {
    /// The same decoding as [`GenerationConfig`]: temperature 0 becomes greedy search,
    /// unset top-k / top-p become disabled (not `transformers`' default top-k of 50).
    /// The sampler differs (its random stream), so only greedy runs give equal tokens.
    fn from(c: &SamplingConfig) -> Self {
        Self {
            max_new_tokens: Some(c.max_new_tokens),
            do_sample: c.temperature > 0.0,
            temperature: if c.temperature > 0.0 {
                c.temperature
            } else {
                1.0
            },
            top_k: c.top_k.unwrap_or(0),
            top_p: c.top_p.unwrap_or(1.0),
            seed: c.seed,
            eos_token_id: c.eos_token_ids.clone(),
            ..Self::default()
        }
    }
}

/// Picks a token from next-token logits.
pub struct Sampler {
    cfg: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded from `cfg.seed`.
    pub fn new(cfg: &SamplingConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg: cfg.clone(),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        })
    }

    /// The next token from `logits` over the vocabulary.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Invalid("cannot sample from empty logits".into()));
        }
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.cfg.temperature == 0.0 {
            return Ok(argmax());
        }
        let t = self.cfg.temperature as f32;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / t))
            .collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        if let Some(k) = self.cfg.top_k {
            cand.truncate(k.max(1));
        }
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand.iter().map(|c| ((c.1 - max) as f64).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(top_p) = self.cfg.top_p {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
            let s: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let u: f64 = self.rng.random();
        let mut acc = 0.0;
        for (c, p) in cand.iter().zip(&probs) {
            acc += p;
            if u < acc {
                return Ok(c.0);
            }
        }
        Ok(cand[cand.len() - 1].0)
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` reached.
    Length,
    /// An end-of-sequence token was produced.
    Eos,
    /// The model's maximum sequence length was reached.
    ContextFull,
    /// The callback asked to stop.
    Callback,
}

/// Generates a continuation of `prompt`, calling `on_token` with each new token (return
/// `false` to stop). Returns the new tokens and why generation stopped.
pub fn generate(
    model: &DecoderOnlyTransformer,
    prompt: &[u32],
    cfg: &SamplingConfig,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<(Vec<u32>, StopReason)> {
    let mut sampler = Sampler::new(cfg)?;
    if prompt.is_empty() {
        return Err(Error::Invalid(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let max_len = model.config().embeddings.max_positions;
    if prompt.len() > max_len {
        return Err(Error::PositionOutOfRange {
            what: "the model's context (prompt)".into(),
            position: prompt.len() - 1,
            max: max_len,
        });
    }
    let device = model.device().clone();
    let mut caches = model.new_caches();
    let mut input = Tensor::new(prompt, &device)?.unsqueeze(0)?;
    let mut out = Vec::new();
    for len in prompt.len()..prompt.len() + cfg.max_new_tokens {
        let last = model
            .next_token_logits(&input, None, Some(&mut caches))?
            .get(0)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let next = sampler.sample(&last)?;
        out.push(next);
        if !on_token(next)? {
            return Ok((out, StopReason::Callback));
        }
        if cfg.eos_token_ids.contains(&next) {
            return Ok((out, StopReason::Eos));
        }
        if len >= max_len {
            return Ok((out, StopReason::ContextFull));
        }
        input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
    }
    Ok((out, StopReason::Length))
}

/// Turns a growing token sequence into text pieces without splitting a multi-byte
/// character or losing the spaces a tokenizer adds between tokens: it decodes the whole
/// sequence and emits only what is new, holding back an incomplete character.
pub struct TextStreamer<'a> {
    tokenizer: &'a tokenizers::Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStreamer<'a> {
    /// A streamer over `tokenizer`, starting after `prompt` (which is not emitted).
    pub fn new(tokenizer: &'a tokenizers::Tokenizer, prompt: &[u32]) -> Result<Self> {
        let text = decode(tokenizer, prompt)?;
        Ok(Self {
            tokenizer,
            ids: prompt.to_vec(),
            emitted: text.len(),
        })
    }

    /// Adds a token; returns the text that became final.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = decode(self.tokenizer, &self.ids)?;
        if text.ends_with('\u{FFFD}')
            || text.len() < self.emitted
            || !text.is_char_boundary(self.emitted)
        {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}

fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer
        .decode(ids, false)
        .map_err(|e| Error::Invalid(format!("cannot decode tokens: {e}")))
}
