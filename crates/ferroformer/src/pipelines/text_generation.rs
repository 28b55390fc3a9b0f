//! `text-generation`: continues each prompt with a causal language model, with
//! `generate`'s options on top of the checkpoint's `generation_config.json`.

use std::path::Path;

use serde::Serialize;

use super::driver::{self, PipelineTask, Prepared};
use super::{PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::generation::{fit_to_context, GenerationConfig, LanguageModel, Truncation};
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
    lm: LanguageModel,
    /// Prompts per call of the driver's forward step.
    batch_size: usize,
}

impl TextGenerationPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        Self::with(LanguageModel::from_dir(dir, &load_options(config))?, config)
    }

    /// Loads a `.gguf` file, a checkpoint directory or a hub id of either, through the
    /// loader that `generate`, `chat` and `perplexity` use.
    pub fn from_pretrained(model: &str, config: &PipelineConfig) -> Result<Self> {
        Self::with(
            LanguageModel::from_pretrained(model, &load_options(config))?,
            config,
        )
    }

    /// The pipeline of an already loaded model.
    pub fn with(lm: LanguageModel, config: &PipelineConfig) -> Result<Self> {
        Ok(Self {
            lm,
            batch_size: config.batch_size,
        })
    }

    /// The generation options for `options`: the checkpoint's defaults, then the overrides.
    pub fn generation_config(&self, options: &TextGenerationOptions) -> Result<GenerationConfig> {
        text_generation_config(&self.lm, options)
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
        driver::run(self, prompts, options, self.batch_size)
    }
}

/// `options`' generation settings for `lm`: its checkpoint's defaults, then the overrides.
pub fn text_generation_config(
    lm: &LanguageModel,
    options: &TextGenerationOptions,
) -> Result<GenerationConfig> {
    let mut cfg = lm.model.generation_config().clone();
    cfg.update(&serde_json::Value::Object(options.generate_kwargs.clone()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// A prompt as `text-generation` runs it: its tokens (special tokens added; the first
/// ones dropped with [`Truncation::Left`]) and `generation` with `max_new_tokens` set to
/// the room the context leaves. What a caller that runs generation itself (the server's
/// scheduler) needs to answer as the pipeline does, with [`generated_text`].
pub fn prepare_prompt(
    lm: &LanguageModel,
    prompt: &str,
    generation: &GenerationConfig,
    truncation: Truncation,
) -> Result<(Vec<u32>, GenerationConfig)> {
    let ids = lm.tokenizer.encode(prompt, true)?;
    if ids.is_empty() {
        return Err(Error::Invalid(
            "text-generation needs a prompt of at least one token".into(),
        ));
    }
    let context = lm.context_length();
    let wanted = generation
        .max_total_length(ids.len())
        .saturating_sub(ids.len());
    let fit = fit_to_context(ids.len(), wanted, context, truncation)?;
    let mut generation = generation.clone();
    if wanted > 0 {
        generation.max_new_tokens = Some(fit.max_new_tokens);
    }
    let ids = ids.get(fit.skip..).unwrap_or_default().to_vec();
    Ok((ids, generation))
}

/// The pipeline's text for `new_tokens` after the prompt tokens `ids` of `prompt`: as
/// `transformers`, the whole sequence decoded and the decoded prompt cut off by its length
/// in characters; `prompt` first when `return_full_text`.
pub fn generated_text(
    lm: &LanguageModel,
    prompt: &str,
    ids: &[u32],
    new_tokens: &[u32],
    return_full_text: bool,
) -> Result<GeneratedText> {
    let prompt_chars = lm.tokenizer.decode(ids, true)?.chars().count();
    let mut all_ids = ids.to_vec();
    all_ids.extend_from_slice(new_tokens);
    let all = lm.tokenizer.decode(&all_ids, true)?;
    let continuation: String = all.chars().skip(prompt_chars).collect();
    Ok(GeneratedText {
        generated_text: if return_full_text {
            format!("{prompt}{continuation}")
        } else {
            continuation
        },
    })
}

fn load_options(config: &PipelineConfig) -> LoadOptions {
    LoadOptions {
        dtype: config.dtype,
        device: config.device.clone(),
        ..LoadOptions::default()
    }
}

/// The options of one run, resolved.
pub(crate) struct Params {
    generation: GenerationConfig,
    return_full_text: bool,
    truncation: Truncation,
}

/// A prompt ready to generate from: its tokens that fit the context, and the generation
/// options with the room left for new tokens.
pub(crate) struct PromptRow {
    ids: Vec<u32>,
    generation: GenerationConfig,
}

impl PipelineTask for TextGenerationPipeline {
    type Input<'a> = &'a str;
    type Options = TextGenerationOptions;
    type Params = Params;
    type Row = PromptRow;
    /// The prompt.
    type State = String;
    /// The new tokens of each returned sequence.
    type RowOutput = Vec<Vec<u32>>;
    type Output = Vec<GeneratedText>;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::TextGeneration)
    }

    fn params(&self, options: &TextGenerationOptions) -> Result<Params> {
        Ok(Params {
            generation: self.generation_config(options)?,
            return_full_text: options.return_full_text,
            truncation: options.truncation,
        })
    }

    /// Fits the prompt and its new tokens into the context (the prompt's first tokens
    /// dropped with [`Truncation::Left`]).
    fn preprocess(&self, prompt: &str, params: &Params) -> Result<Prepared<String, PromptRow>> {
        let (ids, generation) =
            prepare_prompt(&self.lm, prompt, &params.generation, params.truncation)?;
        Ok(Prepared::new(
            vec![PromptRow { ids, generation }],
            prompt.to_string(),
        ))
    }

    /// Generation is the forward step; each prompt runs on its own.
    fn forward(&self, rows: &[PromptRow], _: &Params) -> Result<Vec<Vec<Vec<u32>>>> {
        rows.iter()
            .map(|row| {
                let result = self
                    .lm
                    .model
                    .generate_batch(std::slice::from_ref(&row.ids), &row.generation)?;
                Ok((0..result.sequences.len())
                    .map(|i| result.new_tokens(i).to_vec())
                    .collect())
            })
            .collect()
    }

    /// As `transformers`: decode the whole sequence, and cut the decoded prompt off by its
    /// length in characters.
    fn postprocess(
        &self,
        prompt: String,
        rows: Vec<(PromptRow, Vec<Vec<u32>>)>,
        params: &Params,
    ) -> Result<Vec<GeneratedText>> {
        let mut texts = Vec::new();
        for (row, sequences) in rows {
            for new_tokens in sequences {
                texts.push(generated_text(
                    &self.lm,
                    &prompt,
                    &row.ids,
                    &new_tokens,
                    params.return_full_text,
                )?);
            }
        }
        Ok(texts)
    }
}
