//! One prompt, streamed: [`generate_stream`] runs [`GenerationConfig`]'s greedy search or
//! sampling and hands each new token to a callback as soon as it is chosen;
//! [`TextStreamer`] turns those tokens into text pieces that never split a character.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::GenerationConfig;
use super::logits::{self, LogitsProcessor};
use super::search::{check_inputs, default_mask, StopStrings};
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::nn::LayerCache;

/// Why a streamed generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The length limit (`max_new_tokens`, or `max_length`) was reached.
    Length,
    /// An end-of-sequence token was produced.
    Eos,
    /// The text ended with one of the stop strings.
    StopString,
    /// The callback asked to stop.
    Callback,
}

/// What [`generate_stream`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOutput {
    /// The new tokens, in order; the end-of-sequence token that stopped generation is the
    /// last one (as in [`super::GenerateOutput::new_tokens`]).
    pub tokens: Vec<u32>,
    /// Why generation stopped.
    pub stop_reason: StopReason,
}

impl StreamOutput {
    /// The new tokens without the end-of-sequence token that ended them, if any (what a
    /// chat keeps as the assistant's answer).
    pub fn tokens_without_eos(&self) -> &[u32] {
        match self.stop_reason {
            StopReason::Eos => &self.tokens[..self.tokens.len().saturating_sub(1)],
            _ => &self.tokens,
        }
    }
}

/// Generates a continuation of one prompt with `cfg` (greedy search or sampling, every
/// logits processor of [`GenerationConfig`]), calling `on_token` with each new token as soon
/// as it is chosen; `on_token` returns `false` to stop early.
///
/// The tokens equal [`super::generate_ids`]' for the same prompt and config (sampling draws
/// the same random numbers). Beam search and several return sequences cannot stream (as in
/// `transformers`, whose streamers refuse them): they are errors. `tokenizer` is needed for
/// `stop_strings` only.
///
/// ```no_run
/// use ferroformer::generation::{generate_stream, GenerationConfig, TextStreamer};
/// use ferroformer::models::GgufModel;
///
/// # fn main() -> ferroformer::Result<()> {
/// let model = GgufModel::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let tokenizer = model.tokenizer().tokenizer();
/// let prompt = model.tokenizer().encode("The capital of France is", true)?;
/// let mut cfg = GenerationConfig::greedy(20);
/// cfg.eos_token_id = model.tokenizer().stop_token_ids();
/// let mut streamer = TextStreamer::new(tokenizer, &prompt)?;
/// generate_stream(model.decoder(), &prompt, &cfg, Some(tokenizer), |id| {
///     print!("{}", streamer.push(id)?);
///     Ok(true)
/// })?;
/// # Ok(()) }
/// ```
pub fn generate_stream(
    model: &DecoderOnlyTransformer,
    prompt: &[u32],
    cfg: &GenerationConfig,
    tokenizer: Option<&tokenizers::Tokenizer>,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<StreamOutput> {
    let mut cache = PromptCache::new(model);
    generate_stream_cached(model, &mut cache, prompt, cfg, tokenizer, on_token)
}

/// KV caches kept from one generation to the next, with the tokens they hold: a chat
/// keeps one for the whole conversation, so that each turn runs the model on the new
/// messages only, not on the conversation again (llama.cpp keeps its cache the same way).
#[derive(Debug, Clone)]
pub struct PromptCache {
    tokens: Vec<u32>,
    caches: Vec<LayerCache>,
    reused: usize,
}

impl PromptCache {
    /// An empty cache for `model`.
    pub fn new(model: &DecoderOnlyTransformer) -> Self {
        Self {
            tokens: Vec::new(),
            caches: model.new_caches(),
            reused: 0,
        }
    }

    /// The tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many prompt tokens the last generation found cached (and did not recompute).
    pub fn reused(&self) -> usize {
        self.reused
    }

    /// Forgets everything (a new conversation).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.reused = 0;
        for c in &mut self.caches {
            c.self_attention.reset();
        }
    }

    /// Keeps the longest prefix of the cache that `prompt` starts with, leaving at least
    /// the prompt's last token to run (its logits choose the first new token); returns
    /// that prefix's length.
    fn keep_prefix_of(&mut self, prompt: &[u32]) -> Result<usize> {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        for c in &mut self.caches {
            c.self_attention.truncate(common)?;
        }
        self.tokens.truncate(common);
        self.reused = common;
        Ok(common)
    }
}

/// [`generate_stream`] continuing from `cache`: the longest prefix of `prompt` that the
/// cache already holds is not run again, and the cache then holds the prompt and the
/// answer. The tokens are those of [`generate_stream`] on the whole prompt.
pub fn generate_stream_cached(
    model: &DecoderOnlyTransformer,
    cache: &mut PromptCache,
    prompt: &[u32],
    cfg: &GenerationConfig,
    tokenizer: Option<&tokenizers::Tokenizer>,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<StreamOutput> {
    if cfg.num_beams > 1 {
        return Err(Error::config(
            "num_beams",
            format!(
                "streaming generates one sequence token by token; beam search ({} beams) \
                 cannot stream (set num_beams to 1)",
                cfg.num_beams
            ),
        ));
    }
    if cfg.num_return_sequences > 1 {
        return Err(Error::config(
            "num_return_sequences",
            format!(
                "streaming generates one sequence, found {} (set num_return_sequences to 1)",
                cfg.num_return_sequences
            ),
        ));
    }
    let rows = [prompt.to_vec()];
    let (prompt_len, max_len) = check_inputs(model, &rows, None, cfg, tokenizer)?;
    // Padding tokens inside the prompt are masked as `transformers` masks them; otherwise no
    // mask at all (the faster path).
    let mut mask = default_mask(&rows, cfg).remove(0);
    let masked = mask.contains(&0);
    let stop = StopStrings {
        strings: &cfg.stop_strings,
        tokenizer,
    };
    let proc = LogitsProcessor::new(cfg, prompt_len);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let device = model.device();
    let layers = model.config().stack.num_layers;
    if cache.caches.len() != layers {
        return Err(Error::Invalid(format!(
            "the prompt cache has {} layers, the model {layers}: make it with PromptCache::new(model)",
            cache.caches.len()
        )));
    }
    let cached = if masked {
        // Padding inside the prompt: run it whole (positions depend on the mask).
        cache.reset();
        0
    } else {
        cache.keep_prefix_of(prompt)?
    };
    let mut seq = prompt.to_vec();
    let mut input = Tensor::new(&prompt[cached..], device)?.unsqueeze(0)?;
    // Whatever happens next, the cache holds these tokens' keys and values once a forward
    // pass has run: kept in step below.
    let caches = &mut cache.caches;
    let tokens = &mut cache.tokens;
    while seq.len() < max_len {
        let mask_tensor = if masked {
            Some(Tensor::new(mask.as_slice(), device)?.unsqueeze(0)?)
        } else {
            None
        };
        let fed = input.dim(1)?;
        let logits = model.next_token_logits(&input, mask_tensor.as_ref(), Some(caches));
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // A failed pass may have cached part of its input: start over next time.
                cache_reset(caches, tokens);
                return Err(e);
            }
        };
        tokens.extend_from_slice(&seq[seq.len() - fed..]);
        let mut scores = logits.get(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        proc.process(&seq, &mut scores);
        let next = if cfg.do_sample {
            proc.warp(&mut scores);
            logits::sample(&scores, &mut rng)
        } else {
            logits::argmax(&scores)
        };
        seq.push(next);
        mask.push(1);
        let go_on = on_token(next)?;
        let reason = if cfg.eos_token_id.contains(&next) {
            Some(StopReason::Eos)
        } else if stop.hit(&seq[prompt_len..])? {
            Some(StopReason::StopString)
        } else if !go_on {
            Some(StopReason::Callback)
        } else {
            None
        };
        if let Some(stop_reason) = reason {
            return Ok(StreamOutput {
                tokens: seq.split_off(prompt_len),
                stop_reason,
            });
        }
        input = Tensor::new(&[next], device)?.unsqueeze(0)?;
    }
    Ok(StreamOutput {
        tokens: seq.split_off(prompt_len),
        stop_reason: StopReason::Length,
    })
}

/// Empties caches whose contents are no longer known.
fn cache_reset(caches: &mut [LayerCache], tokens: &mut Vec<u32>) {
    tokens.clear();
    for c in caches {
        c.self_attention.reset();
    }
}

/// Turns a growing token sequence into text pieces without splitting a multi-byte
/// character or losing the spaces a tokenizer adds between tokens: it decodes the whole
/// sequence and emits only what is new, holding back an incomplete character.
#[derive(Clone)]
pub struct TextStreamer<'a> {
    tokenizer: &'a tokenizers::Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
    skip_special_tokens: bool,
}

impl<'a> TextStreamer<'a> {
    /// A streamer over `tokenizer`, starting after `prompt` (which is not emitted); special
    /// tokens are written out.
    pub fn new(tokenizer: &'a tokenizers::Tokenizer, prompt: &[u32]) -> Result<Self> {
        Self::with_options(tokenizer, prompt, false)
    }

    /// A streamer that leaves special tokens (end of turn, ...) out of the text when
    /// `skip_special_tokens` is set.
    pub fn with_options(
        tokenizer: &'a tokenizers::Tokenizer,
        prompt: &[u32],
        skip_special_tokens: bool,
    ) -> Result<Self> {
        let text = decode(tokenizer, prompt, skip_special_tokens)?;
        Ok(Self {
            tokenizer,
            ids: prompt.to_vec(),
            emitted: text.len(),
            skip_special_tokens,
        })
    }

    /// Adds a token; returns the text that became final.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = decode(self.tokenizer, &self.ids, self.skip_special_tokens)?;
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

fn decode(tokenizer: &tokenizers::Tokenizer, ids: &[u32], skip_special: bool) -> Result<String> {
    tokenizer
        .decode(ids, skip_special)
        .map_err(|e| Error::Invalid(format!("cannot decode tokens: {e}")))
}
