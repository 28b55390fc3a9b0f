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
    let mut caches = model.new_caches();
    let mut seq = prompt.to_vec();
    let mut input = Tensor::new(prompt, device)?.unsqueeze(0)?;
    while seq.len() < max_len {
        let mask_tensor = if masked {
            Some(Tensor::new(mask.as_slice(), device)?.unsqueeze(0)?)
        } else {
            None
        };
        let mut scores = model
            .next_token_logits(&input, mask_tensor.as_ref(), Some(&mut caches))?
            .get(0)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
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
