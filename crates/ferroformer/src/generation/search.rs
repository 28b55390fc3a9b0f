//! Batched decoding with `transformers`' semantics: greedy search, sampling and beam
//! search over left-padded prompts, on the KV cache.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::beam::BeamPrompt;
use super::config::GenerationConfig;
use super::logits::{self, LogitsProcessor};
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::nn::LayerCache;

/// What [`generate_ids`] returns, laid out like `transformers`' `generate`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOutput {
    /// One row per prompt (times `num_return_sequences`): the prompt as given (left padding
    /// included) followed by the new tokens. Rows have equal lengths: a row that finished
    /// early is filled with the pad token.
    pub sequences: Vec<Vec<u32>>,
    /// Beam search only: each returned hypothesis' score,
    /// `sum_logprobs / generated_len ** length_penalty`.
    pub sequences_scores: Option<Vec<f32>>,
    /// Length of the (padded) prompt: new tokens start here in every row.
    pub prompt_len: usize,
    /// The end-of-sequence tokens in effect.
    pub eos_token_id: Vec<u32>,
}

impl GenerateOutput {
    /// The new tokens of row `i`, up to and including the first end-of-sequence token (the
    /// fill after it dropped).
    pub fn new_tokens(&self, i: usize) -> &[u32] {
        let row = &self.sequences[i][self.prompt_len..];
        match row.iter().position(|t| self.eos_token_id.contains(t)) {
            Some(p) => &row[..=p],
            None => row,
        }
    }
}

/// Left-pads `prompts` with `pad` to a rectangle (decoder-only prompts); returns the ids and
/// the attention mask (1 = real token).
pub fn left_pad(prompts: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    pad_rows(prompts, pad, true)
}

/// Right-pads `inputs` with `pad` to a rectangle (encoder inputs); returns the ids and the
/// attention mask (1 = real token).
pub fn right_pad(inputs: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    pad_rows(inputs, pad, false)
}

fn pad_rows(rows: &[Vec<u32>], pad: u32, left: bool) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    rows.iter()
        .map(|r| {
            let fill = width - r.len();
            let mut ids = r.clone();
            let mut mask = vec![1u32; r.len()];
            if left {
                ids.splice(0..0, std::iter::repeat_n(pad, fill));
                mask.splice(0..0, std::iter::repeat_n(0, fill));
            } else {
                ids.resize(width, pad);
                mask.resize(width, 0);
            }
            (ids, mask)
        })
        .unzip()
}

/// Decides whether a sequence hit a stop string: the text must contain the stop string
/// ending inside the last token (as `transformers`' `StopStringCriteria`, which lets the
/// last token run past the end of the string).
pub(super) struct StopStrings<'a> {
    pub(super) strings: &'a [String],
    pub(super) tokenizer: Option<&'a tokenizers::Tokenizer>,
}

impl StopStrings<'_> {
    pub(super) fn hit(&self, new_tokens: &[u32]) -> Result<bool> {
        let (Some(tok), false) = (self.tokenizer, self.strings.is_empty()) else {
            return Ok(false);
        };
        if new_tokens.is_empty() {
            return Ok(false);
        }
        let decode = |ids: &[u32]| {
            tok.decode(ids, false)
                .map_err(|e| Error::Invalid(format!("cannot decode tokens: {e}")))
        };
        let text = decode(new_tokens)?;
        let before = decode(&new_tokens[..new_tokens.len() - 1])?;
        // The last token's text starts where the shorter decode ends (when decoding is
        // prefix-stable); a stop string must end after that point.
        let start = if text.starts_with(&before) {
            before.len()
        } else {
            0
        };
        Ok(self.strings.iter().any(|s| {
            text.match_indices(s.as_str())
                .any(|(i, m)| i + m.len() > start)
        }))
    }
}

/// Checks that `input_ids` are non-empty rows of one length (padded on the `side` the
/// caller says) and that `attention_mask` matches them with a real token in every row;
/// returns the row length.
pub(super) fn check_rows(
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    side: &str,
) -> Result<usize> {
    let Some(first) = input_ids.first() else {
        return Err(Error::Invalid(
            "input_ids is empty: give at least one input".into(),
        ));
    };
    let len = first.len();
    if len == 0 {
        return Err(Error::Invalid(
            "an input is empty: give at least one token".into(),
        ));
    }
    if let Some(row) = input_ids.iter().find(|r| r.len() != len) {
        return Err(Error::shape(
            "input_ids",
            format!("rows of equal length {len} ({side}-pad them)"),
            &[input_ids.len(), row.len()],
        ));
    }
    if let Some(mask) = attention_mask {
        if mask.len() != input_ids.len() || mask.iter().any(|r| r.len() != len) {
            return Err(Error::shape(
                "attention_mask",
                format!("({}, {len}) like input_ids", input_ids.len()),
                &[mask.len(), mask.first().map_or(0, Vec::len)],
            ));
        }
        if mask.iter().any(|r| r.iter().all(|&m| m == 0)) {
            return Err(Error::Invalid(
                "attention_mask has a row without any real token".into(),
            ));
        }
    }
    Ok(len)
}

/// An id below `vocab`, or an error naming the option it came from.
pub(super) fn check_token(what: &str, t: u32, vocab: usize) -> Result<()> {
    if t as usize >= vocab {
        return Err(Error::config(
            what,
            format!("token id {t} is outside the vocabulary (0..{vocab})"),
        ));
    }
    Ok(())
}

/// Checks every token id `cfg` names (end of sequence, padding, decoder start, forced first
/// and last tokens, bad words) against the vocabulary the model generates from: a processor
/// given an id past it would silently force or ban nothing.
pub(super) fn check_config_tokens(cfg: &GenerationConfig, vocab: usize) -> Result<()> {
    let named = [
        ("eos_token_id", &cfg.eos_token_id[..]),
        ("forced_eos_token_id", &cfg.forced_eos_token_id[..]),
    ];
    for (what, ids) in named {
        for &t in ids {
            check_token(what, t, vocab)?;
        }
    }
    let single = [
        ("pad_token_id", cfg.pad_token_id),
        ("decoder_start_token_id", cfg.decoder_start_token_id),
        ("forced_bos_token_id", cfg.forced_bos_token_id),
    ];
    for (what, t) in single {
        if let Some(t) = t {
            check_token(what, t, vocab)?;
        }
    }
    for &t in cfg.bad_words_ids.iter().flatten() {
        check_token("bad_words_ids", t, vocab)?;
    }
    Ok(())
}

pub(super) fn check_inputs(
    model: &DecoderOnlyTransformer,
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    cfg: &GenerationConfig,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> Result<(usize, usize)> {
    cfg.validate()?;
    let prompt_len = check_rows(input_ids, attention_mask, "left")?;
    let vocab = model.config().embeddings.vocab_size;
    for &t in input_ids.iter().flatten() {
        check_token("input_ids", t, vocab)?;
    }
    check_config_tokens(cfg, vocab)?;
    if !cfg.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(Error::config(
            "stop_strings",
            "stop strings need the model's tokenizer: pass one to generate",
        ));
    }
    let context = model.config().embeddings.max_positions;
    // A prompt that leaves no room for a new token: the error names both lengths.
    super::context::fit_to_context(prompt_len, 0, context, super::Truncation::Error)?;
    let max_len = cfg.max_total_length(prompt_len);
    if max_len <= prompt_len {
        return Err(Error::config(
            "max_length",
            format!(
                "the prompt has {prompt_len} tokens but max_length is {max_len}: set \
                 max_new_tokens"
            ),
        ));
    }
    if max_len > context {
        return Err(Error::config(
            "max_new_tokens",
            format!(
                "prompt ({prompt_len}) + new tokens ({}) exceed the model's {context} positions",
                max_len - prompt_len
            ),
        ));
    }
    Ok((prompt_len, max_len))
}

/// The mask `transformers` infers when none is given: padding tokens masked when the pad
/// token is not also an end-of-sequence token, else all ones.
pub(super) fn default_mask(input_ids: &[Vec<u32>], cfg: &GenerationConfig) -> Vec<Vec<u32>> {
    let pad = cfg
        .pad_token_id
        .filter(|p| !cfg.eos_token_id.contains(p))
        .filter(|p| input_ids.iter().flatten().any(|t| t == p));
    input_ids
        .iter()
        .map(|r| r.iter().map(|t| u32::from(Some(*t) != pad)).collect())
        .collect()
}

fn last_logits(
    model: &DecoderOnlyTransformer,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
    caches: &mut [LayerCache],
) -> Result<Vec<Vec<f32>>> {
    let device = model.device();
    let input = Tensor::new(ids.to_vec(), device)?;
    let mask = Tensor::new(mask.to_vec(), device)?;
    let logits = model
        .forward(
            &input,
            Some(&mask),
            Some(caches),
            crate::nn::Pass::INFERENCE,
        )?
        .logits;
    let s = logits.dim(1)?;
    Ok(logits
        .narrow(1, s - 1, 1)?
        .squeeze(1)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// Generates continuations of a batch of prompts: greedy search, sampling or beam search as
/// `cfg` says, with `transformers`' semantics.
///
/// `input_ids` are rows of equal length (left-pad uneven prompts, see [`left_pad`]);
/// `attention_mask` marks their real tokens (default: as `transformers` infers it from
/// `pad_token_id`). Positions count from each row's first real token, so every row gives
/// what its prompt gives alone. `tokenizer` is needed for `stop_strings` only.
pub fn generate_ids(
    model: &DecoderOnlyTransformer,
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    cfg: &GenerationConfig,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> Result<GenerateOutput> {
    let (prompt_len, max_len) = check_inputs(model, input_ids, attention_mask, cfg, tokenizer)?;
    let mask = match attention_mask {
        Some(m) => m.to_vec(),
        None => default_mask(input_ids, cfg),
    };
    let stop = StopStrings {
        strings: &cfg.stop_strings,
        tokenizer,
    };
    if cfg.num_beams > 1 {
        return beam_search(model, input_ids, &mask, cfg, prompt_len, max_len, &stop);
    }
    // Sampling with several sequences per prompt: each prompt repeated, as `transformers`
    // expands the batch.
    let n = cfg.num_return_sequences;
    let rows: Vec<Vec<u32>> = input_ids
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.clone(), n))
        .collect();
    let mut mask: Vec<Vec<u32>> = mask
        .iter()
        .flat_map(|r| std::iter::repeat_n(r.clone(), n))
        .collect();
    let pad = cfg.effective_pad_token_id();
    let proc = LogitsProcessor::new(cfg, prompt_len).with_max_length(max_len);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut seqs = rows.clone();
    let mut unfinished = vec![true; rows.len()];
    let mut caches = model.new_caches();
    let mut step_ids = rows;
    let mut step_mask = mask.clone();
    while seqs[0].len() < max_len {
        let all_logits = last_logits(model, &step_ids, &step_mask, &mut caches)?;
        let mut next = Vec::with_capacity(seqs.len());
        for (i, mut scores) in all_logits.into_iter().enumerate() {
            if !unfinished[i] {
                // A finished row only needs filling; `pad` exists because finishing
                // requires an end-of-sequence token or a stop string.
                next.push(pad.unwrap_or(0));
                continue;
            }
            proc.process(&seqs[i], &mut scores);
            let t = if cfg.do_sample {
                proc.warp(&mut scores);
                logits::sample(&scores, &mut rng)
            } else {
                logits::argmax(&scores)
            };
            next.push(t);
        }
        for (i, &t) in next.iter().enumerate() {
            seqs[i].push(t);
            if unfinished[i]
                && (cfg.eos_token_id.contains(&t) || stop.hit(&seqs[i][prompt_len..])?)
            {
                unfinished[i] = false;
            }
            // Finished rows keep attending like the rest (`transformers` appends ones for
            // every row); their fill tokens are never read.
            mask[i].push(1);
        }
        if unfinished.iter().all(|u| !u) {
            break;
        }
        step_ids = next.iter().map(|&t| vec![t]).collect();
        step_mask = mask.clone();
    }
    Ok(GenerateOutput {
        sequences: seqs,
        sequences_scores: None,
        prompt_len,
        eos_token_id: cfg.eos_token_id.clone(),
    })
}

/// `transformers`' beam search (`_beam_search`), one prompt at a time: a prompt's result
/// depends only on its own beams, and once a prompt is done nothing more can enter its
/// finished hypotheses, so running prompts separately gives the batched result.
fn beam_search(
    model: &DecoderOnlyTransformer,
    input_ids: &[Vec<u32>],
    mask: &[Vec<u32>],
    cfg: &GenerationConfig,
    prompt_len: usize,
    max_len: usize,
    stop: &StopStrings,
) -> Result<GenerateOutput> {
    let mut all: Vec<(Vec<u32>, f32)> = Vec::new();
    for (ids, m) in input_ids.iter().zip(mask) {
        let hyps = beam_search_one(model, ids, m, cfg, max_len, stop)?;
        all.extend(hyps.into_iter().take(cfg.num_return_sequences));
    }
    let (sequences, scores) = super::beam::pad_hypotheses(all, cfg, prompt_len);
    Ok(GenerateOutput {
        sequences,
        sequences_scores: Some(scores),
        prompt_len,
        eos_token_id: cfg.eos_token_id.clone(),
    })
}

/// Finished hypotheses of one prompt, best first; each beam keeps its own KV cache
/// (reordering beams clones caches, which shares their tensors).
fn beam_search_one(
    model: &DecoderOnlyTransformer,
    prompt: &[u32],
    prompt_mask: &[u32],
    cfg: &GenerationConfig,
    max_len: usize,
    stop: &StopStrings,
) -> Result<Vec<(Vec<u32>, f32)>> {
    let proc = LogitsProcessor::new(cfg, prompt.len()).with_max_length(max_len);
    let mut beams = BeamPrompt::new(prompt, cfg, &proc, stop, max_len);
    let mut mask = prompt_mask.to_vec();
    let mut caches = model.new_caches();
    let first = last_logits(model, &[prompt.to_vec()], &[mask.clone()], &mut caches)?;
    let mut beam_caches = vec![caches; cfg.num_beams];
    let mut step_logits: Vec<Vec<f32>> = vec![first[0].clone(); cfg.num_beams];
    while let Some(chosen) = beams.advance(&step_logits)? {
        mask.push(1);
        let mut next_caches = Vec::with_capacity(chosen.len());
        let mut next_logits = Vec::with_capacity(chosen.len());
        for &(parent, token) in &chosen {
            let mut c = beam_caches[parent].clone();
            let l = last_logits(model, &[vec![token]], &[mask.clone()], &mut c)?;
            next_logits.push(l.into_iter().next().unwrap_or_default());
            next_caches.push(c);
        }
        beam_caches = next_caches;
        step_logits = next_logits;
    }
    Ok(beams.into_hypotheses())
}
