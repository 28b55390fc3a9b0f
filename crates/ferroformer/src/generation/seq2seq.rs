//! `AutoModelForSeq2SeqLM` and encoder-decoder generation with `transformers`' semantics.
//!
//! The encoder runs once per input. The decoder starts from `decoder_start_token_id` and
//! keeps, per layer, a self-attention KV cache that grows by one position per step and the
//! cross-attention keys and values of the encoder output, computed at the first step and
//! reused. Every row of the batch (prompts × beams, or prompts × returned sequences when
//! sampling) decodes in one forward pass per step; beam search reorders the self-attention
//! caches (a beam's parent is always a beam of the same input, so the cross-attention
//! caches need no reordering), and inputs that are done leave the batch.

use std::path::Path;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::beam::{pad_hypotheses, BeamPrompt};
use super::config::GenerationConfig;
use super::logits::{self, LogitsProcessor};
use super::search::{check_config_tokens, check_token, GenerateOutput, StopStrings};
use crate::arch::EncoderDecoderTransformer;
use crate::error::{Error, Result};
use crate::models::{seq2seq_lm_from_dir, LoadOptions};
use crate::nn::LayerCache;

/// An encoder-decoder language model of any supported family (T5, BART, mBART, Marian,
/// M2M100/NLLB, Pegasus), picked by `config.json`'s `model_type` (`transformers`'
/// `AutoModelForSeq2SeqLM`), with its generation defaults.
#[derive(Debug, Clone)]
pub struct AutoModelForSeq2SeqLM {
    model_type: String,
    model: EncoderDecoderTransformer,
    generation_config: GenerationConfig,
    config: Value,
}

impl AutoModelForSeq2SeqLM {
    /// Loads a model by hub id (`org/name`, from the local cache or downloaded) or local
    /// directory, in f32 on the CPU.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_dir(
            &crate::models::hub::resolve(model)?,
            &LoadOptions::default(),
        )
    }

    /// Loads a checkpoint directory: `config.json`, the weights, and
    /// `generation_config.json` when present (else the generation keys of `config.json`).
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let (model, config) = seq2seq_lm_from_dir(dir, options)?;
        let mut generation_config = GenerationConfig::from_dir(dir)?;
        // `generation_config.json` of older checkpoints may lack the start token that
        // `config.json` has.
        if generation_config.decoder_start_token_id.is_none() {
            generation_config.decoder_start_token_id = config
                .get("decoder_start_token_id")
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok());
        }
        Ok(Self {
            model_type: config
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            model,
            generation_config,
            config,
        })
    }

    /// `config.json`'s `model_type`.
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// The parsed `config.json` (pipelines read `task_specific_params` from it).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &EncoderDecoderTransformer {
        &self.model
    }

    /// The generation defaults of the checkpoint.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation_config
    }

    /// Teacher-forced logits `(batch, tgt_len, vocab)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        decoder_input_ids: &Tensor,
    ) -> Result<Tensor> {
        self.model.forward(
            input_ids,
            attention_mask,
            decoder_input_ids,
            crate::nn::Pass::INFERENCE,
        )
    }

    /// Generates from a batch of inputs (rows of equal length, right-padded; `attention_mask`
    /// marks their real tokens) with `cfg`: see [`generate_seq2seq`].
    pub fn generate(
        &self,
        input_ids: &[Vec<u32>],
        attention_mask: Option<&[Vec<u32>]>,
        cfg: &GenerationConfig,
    ) -> Result<GenerateOutput> {
        generate_seq2seq(&self.model, input_ids, attention_mask, cfg)
    }
}

/// A finished beam hypothesis: its tokens and score.
type Hypothesis = (Vec<u32>, f32);

/// The decoder's side of a batch: the encoder output of every row and the decoder caches.
struct DecoderState<'m> {
    model: &'m EncoderDecoderTransformer,
    memory: Tensor,
    encoder_mask: Tensor,
    caches: Vec<LayerCache>,
}

impl DecoderState<'_> {
    /// Feeds one token per row; returns each row's next-token logits.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let device = self.model.device();
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), device)?;
        let logits = self
            .model
            .decode(
                &ids,
                &self.memory,
                Some(&self.encoder_mask),
                Some(&mut self.caches),
            )?
            .logits;
        Ok(logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Keeps rows `rows` in that order. `same_inputs`: each new row continues a row of the
    /// same input (beam reordering), so the encoder side stays as it is.
    fn select(&mut self, rows: &[usize], same_inputs: bool) -> Result<()> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), self.memory.device())?;
        for cache in &mut self.caches {
            cache.self_attention.select_rows(&idx)?;
            if !same_inputs {
                cache.cross_attention.select_rows(&idx)?;
            }
        }
        if !same_inputs {
            self.memory = self.memory.index_select(&idx, 0)?;
            self.encoder_mask = self.encoder_mask.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

/// Checks the inputs and the config; returns the decoder start token and the maximum
/// decoder length.
fn check_inputs(
    model: &EncoderDecoderTransformer,
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    cfg: &GenerationConfig,
) -> Result<(u32, usize)> {
    cfg.validate()?;
    let len = super::search::check_rows(input_ids, attention_mask, "right")?;
    let cfg_model = model.config();
    let max_src = cfg_model.encoder_embeddings.max_positions;
    if len > max_src {
        return Err(Error::Invalid(format!(
            "the input has {len} tokens but the encoder takes at most {max_src} (truncate it)"
        )));
    }
    let vocab = cfg_model.decoder_embeddings.vocab_size;
    let start = cfg
        .decoder_start_token_id
        .or(cfg.bos_token_id)
        .ok_or_else(|| {
            Error::config(
                "decoder_start_token_id",
                "an encoder-decoder model needs a decoder start token (set \
                 decoder_start_token_id in the generation config)",
            )
        })?;
    check_token("decoder_start_token_id", start, vocab)?;
    check_config_tokens(cfg, vocab)?;
    if !cfg.stop_strings.is_empty() {
        return Err(Error::config(
            "stop_strings",
            "stop strings are not supported for encoder-decoder models",
        ));
    }
    let max_len = cfg.max_total_length(1);
    if max_len <= 1 {
        return Err(Error::config(
            "max_length",
            format!("max_length is {max_len}: the decoder needs room for one new token at least"),
        ));
    }
    let max_tgt = cfg_model.decoder_embeddings.max_positions;
    if max_len > max_tgt {
        return Err(Error::config(
            "max_new_tokens",
            format!("{max_len} decoder tokens exceed the model's {max_tgt} positions"),
        ));
    }
    Ok((start, max_len))
}

/// Encodes the inputs and repeats every row `times` times (beams, or sequences per input).
fn start_state<'m>(
    model: &'m EncoderDecoderTransformer,
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    times: usize,
) -> Result<DecoderState<'m>> {
    let device = model.device();
    let mask: Vec<Vec<u32>> = match attention_mask {
        Some(m) => m.to_vec(),
        None => input_ids.iter().map(|r| vec![1; r.len()]).collect(),
    };
    let ids = Tensor::new(input_ids.to_vec(), device)?;
    let mask = Tensor::new(mask, device)?;
    let memory = model.encode(&ids, Some(&mask))?;
    let mut state = DecoderState {
        model,
        memory,
        encoder_mask: mask,
        caches: model.new_caches(),
    };
    if times > 1 {
        let rows: Vec<usize> = (0..input_ids.len())
            .flat_map(|r| std::iter::repeat_n(r, times))
            .collect();
        state.select(&rows, false)?;
    }
    Ok(state)
}

/// Generates from an encoder-decoder model with `transformers`' semantics: greedy search,
/// sampling, or beam search (length penalty, early stopping, several sequences per input),
/// with the logits processors of [`LogitsProcessor`] (forced first / last tokens and bad
/// words included). Each input gives what it gives alone.
///
/// `input_ids` are rows of equal length (right-pad uneven inputs; `attention_mask` marks
/// the real tokens, default all ones). The output's rows are the decoder sequences,
/// starting with the decoder start token (`prompt_len` 1), filled with the pad token after
/// they end, as `transformers`' `generate` returns them.
pub fn generate_seq2seq(
    model: &EncoderDecoderTransformer,
    input_ids: &[Vec<u32>],
    attention_mask: Option<&[Vec<u32>]>,
    cfg: &GenerationConfig,
) -> Result<GenerateOutput> {
    let (start, max_len) = check_inputs(model, input_ids, attention_mask, cfg)?;
    let stop = StopStrings {
        strings: &[],
        tokenizer: None,
    };
    let proc = LogitsProcessor::new(cfg, 1).with_max_length(max_len);
    if cfg.num_beams > 1 {
        let mut state = start_state(model, input_ids, attention_mask, cfg.num_beams)?;
        let nb = cfg.num_beams;
        let mut prompts: Vec<Option<BeamPrompt>> = (0..input_ids.len())
            .map(|_| Some(BeamPrompt::new(&[start], cfg, &proc, &stop, max_len)))
            .collect();
        let mut results: Vec<Option<Vec<Hypothesis>>> = vec![None; input_ids.len()];
        // Inputs still decoding, in batch order (input i holds rows i*nb..(i+1)*nb).
        let mut active: Vec<usize> = (0..input_ids.len()).collect();
        let mut tokens = vec![start; active.len() * nb];
        while !active.is_empty() {
            let step = state.step(&tokens)?;
            let mut rows = Vec::with_capacity(step.len());
            let mut next_tokens = Vec::with_capacity(step.len());
            let mut still = Vec::with_capacity(active.len());
            let mut dropped = false;
            for (slot, &p) in active.iter().enumerate() {
                let base = slot * nb;
                let beams = prompts[p]
                    .as_mut()
                    .ok_or_else(|| Error::Invalid("beam search: a finished input ran".into()))?;
                match beams.advance(&step[base..base + nb])? {
                    Some(chosen) => {
                        for (parent, token) in chosen {
                            rows.push(base + parent);
                            next_tokens.push(token);
                        }
                        still.push(p);
                    }
                    None => dropped = true,
                }
            }
            for &p in active.iter().filter(|p| !still.contains(p)) {
                results[p] = prompts[p].take().map(BeamPrompt::into_hypotheses);
            }
            if still.is_empty() {
                break;
            }
            state.select(&rows, !dropped)?;
            active = still;
            tokens = next_tokens;
        }
        let all: Vec<(Vec<u32>, f32)> = results
            .into_iter()
            .flat_map(|h| {
                h.unwrap_or_default()
                    .into_iter()
                    .take(cfg.num_return_sequences)
            })
            .collect();
        let (sequences, scores) = pad_hypotheses(all, cfg, 1);
        return Ok(GenerateOutput {
            sequences,
            sequences_scores: Some(scores),
            prompt_len: 1,
            eos_token_id: cfg.eos_token_id.clone(),
        });
    }
    // Greedy search or sampling; with sampling each input yields `num_return_sequences`
    // rows, as `transformers` expands the batch.
    let n = cfg.num_return_sequences;
    let mut state = start_state(model, input_ids, attention_mask, n)?;
    let rows = input_ids.len() * n;
    let mut seqs: Vec<Vec<u32>> = vec![vec![start]; rows];
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Rows still decoding, in batch order.
    let mut active: Vec<usize> = (0..rows).collect();
    let mut tokens = vec![start; rows];
    while !active.is_empty() && seqs[active[0]].len() < max_len {
        let step = state.step(&tokens)?;
        let mut keep = Vec::with_capacity(active.len());
        let mut still = Vec::with_capacity(active.len());
        let mut next = Vec::with_capacity(active.len());
        for (slot, (mut scores, &r)) in step.into_iter().zip(&active).enumerate() {
            proc.process(&seqs[r], &mut scores);
            let t = if cfg.do_sample {
                proc.warp(&mut scores);
                logits::sample(&scores, &mut rng)
            } else {
                logits::argmax(&scores)
            };
            seqs[r].push(t);
            if !cfg.eos_token_id.contains(&t) {
                keep.push(slot);
                still.push(r);
                next.push(t);
            }
        }
        if still.len() != active.len() && !still.is_empty() {
            state.select(&keep, false)?;
        }
        active = still;
        tokens = next;
    }
    // Rows that ended early are filled with the pad token, as `transformers` appends it to
    // finished rows while others go on.
    let width = seqs.iter().map(Vec::len).max().unwrap_or(1);
    let fill = cfg.effective_pad_token_id().unwrap_or(0);
    for s in &mut seqs {
        s.resize(width, fill);
    }
    Ok(GenerateOutput {
        sequences: seqs,
        sequences_scores: None,
        prompt_len: 1,
        eos_token_id: cfg.eos_token_id.clone(),
    })
}
