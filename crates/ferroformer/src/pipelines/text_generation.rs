//! `text-generation`: continues each prompt with a causal language model, with
//! `generate`'s options on top of the checkpoint's `generation_config.json`.

use std::path::Path;

use serde::Serialize;

use super::PipelineConfig;
use crate::error::{Error, Result};
use crate::generation::{fit_to_context, AutoModelForCausalLM, GenerationConfig, Truncation};
use crate::models::tokenizer::{AutoTokenizer, EncodeOptions};
use crate::models::LoadOptions;

/// Options of `text-generation`.
#[derive(Debug, Clone)]
pub struct TextGenerationOptions {
    /// Generation options over the checkpoint's defaults, with `generation_config.json`'s
    /// keys (`max_new_tokens`, `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`,
    /// `repetition_penalty`, `no_repeat_ngram_size`, `num_beams`, `length_penalty`,
    /// `early_stopping`, `num_return_sequences`, `min_new_tokens`, `stop_strings`, `seed`, ...).
    pub generate_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Return the prompt followed by the continuation (default), or the continuation only.
    pub return_full_text: bool,
    /// A prompt that leaves no room in the model's context is an error
    /// ([`Truncation::Error`], the default), or keeps its last tokens ([`Truncation::Left`],
    /// leaving room for the new tokens as `transformers`' `handle_long_generation="hole"`).
    /// Either way, new tokens stop where the context is full.
    pub truncation: Truncation,
}

impl Default for TextGenerationOptions {
    fn default() -> Self {
        Self {
            generate_kwargs: serde_json::Map::new(),
            return_full_text: true,
            truncation: Truncation::Error,
        }
    }
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedText {
    /// The text (with the prompt unless `return_full_text` is false).
    pub generated_text: String,
}

/// A causal language model with its tokenizer.
pub struct TextGenerationPipeline {
    tokenizer: AutoTokenizer,
    model: AutoModelForCausalLM,
}

impl TextGenerationPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let tokenizer = AutoTokenizer::from_dir(dir)?;
        let model = AutoModelForCausalLM::from_dir(
            dir,
            &LoadOptions {
                dtype: config.dtype,
                device: config.device.clone(),
                ..LoadOptions::default()
            },
        )?;
        Ok(Self { tokenizer, model })
    }

    /// The generation options for `options`: the checkpoint's defaults, then the overrides.
    pub fn generation_config(&self, options: &TextGenerationOptions) -> Result<GenerationConfig> {
        let mut cfg = self.model.generation_config().clone();
        cfg.update(&serde_json::Value::Object(options.generate_kwargs.clone()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Continues every prompt; one list per prompt with `num_return_sequences` texts.
    ///
    /// Each prompt is generated on its own, so the answer never depends on the others (the
    /// library's batched generation gives the same tokens; see
    /// [`AutoModelForCausalLM::generate_batch`]).
    pub fn run(
        &self,
        prompts: &[&str],
        options: &TextGenerationOptions,
    ) -> Result<Vec<Vec<GeneratedText>>> {
        let cfg = self.generation_config(options)?;
        let mut out = Vec::with_capacity(prompts.len());
        for &prompt in prompts {
            let enc = self
                .tokenizer
                .encode(prompt, &EncodeOptions::default())?
                .remove(0);
            if enc.ids.is_empty() {
                return Err(Error::Invalid(
                    "text-generation needs a prompt of at least one token".into(),
                ));
            }
            // Fit the prompt and its new tokens into the context (the prompt's first tokens
            // dropped with `Truncation::Left`).
            let context = self.model.decoder().config().embeddings.max_positions;
            let wanted = cfg
                .max_total_length(enc.ids.len())
                .saturating_sub(enc.ids.len());
            let fit = fit_to_context(enc.ids.len(), wanted, context, options.truncation)?;
            let ids = &enc.ids[fit.skip..];
            let mut cfg = cfg.clone();
            if wanted > 0 {
                cfg.max_new_tokens = Some(fit.max_new_tokens);
            }
            let result = self
                .model
                .generate_batch(std::slice::from_ref(&ids.to_vec()), &cfg)?;
            // As `transformers`: decode the whole sequence, and cut the decoded prompt off
            // by its length in characters.
            let prompt_text = self.tokenizer.decode(ids, true)?;
            let prompt_chars = prompt_text.chars().count();
            let mut texts = Vec::with_capacity(result.sequences.len());
            for i in 0..result.sequences.len() {
                let mut ids = ids.to_vec();
                ids.extend_from_slice(result.new_tokens(i));
                let all = self.tokenizer.decode(&ids, true)?;
                let continuation: String = all.chars().skip(prompt_chars).collect();
                texts.push(GeneratedText {
                    generated_text: if options.return_full_text {
                        format!("{prompt}{continuation}")
                    } else {
                        continuation
                    },
                });
            }
            out.push(texts);
        }
        Ok(out)
    }
}
