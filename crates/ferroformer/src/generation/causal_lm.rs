//! `AutoModelForCausalLM`: a causal language model of any supported family with its
//! generation defaults and `generate`. It lives here, above `models`, because it joins a
//! loaded decoder ([`crate::models::auto`]) with the generation loop.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::{GenerateOutput, GenerationConfig};
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::generation;
use crate::models::auto::{causal_lm_spec_from_json, load_causal_lm};
use crate::models::{read_config, LoadOptions};
use crate::weights::Weights;

/// A causal language model of any supported family, picked by `config.json`'s
/// `model_type` (`transformers`' `AutoModelForCausalLM`), with its generation defaults.
#[derive(Debug, Clone)]
pub struct AutoModelForCausalLM {
    model_type: String,
    decoder: DecoderOnlyTransformer,
    generation_config: GenerationConfig,
}

impl AutoModelForCausalLM {
    /// Loads a model by hub id (`org/name`, from the local cache or downloaded), local
    /// directory or `.gguf` file, in f32 on the CPU; a GGUF file (or a directory or hub
    /// repository holding one and no `config.json`) keeps its quantized weights.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        match crate::models::gguf::gguf_file(model)? {
            Some(path) => Self::from_gguf(&path),
            None => Self::from_dir(
                &crate::models::hub::resolve(model)?,
                &LoadOptions::default(),
            ),
        }
    }

    /// Loads a GGUF file: the architecture from its metadata, quantized weights kept
    /// quantized, and generation defaults from its special tokens (end-of-sequence and
    /// end-of-turn ids, BOS). Its tokenizer is
    /// [`GgufTokenizer::from_gguf`](crate::models::GgufTokenizer::from_gguf).
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Ok(Self::from_gguf_model(&crate::models::GgufModel::load(
            path,
        )?))
    }

    /// The model of an already loaded GGUF file (whose tokenizer the caller keeps).
    pub fn from_gguf_model(gguf: &crate::models::GgufModel) -> Self {
        Self {
            model_type: gguf.config().architecture.clone(),
            decoder: gguf.decoder().clone(),
            generation_config: GenerationConfig::from_gguf_tokenizer(gguf.tokenizer()),
        }
    }

    /// Loads a checkpoint directory: `config.json`, safetensors weights, and
    /// `generation_config.json` when present.
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let raw: serde_json::Value = read_config(dir)?;
        let spec = causal_lm_spec_from_json(&raw, &dir.join("config.json"))?;
        let files = crate::models::checkpoint_files(dir)?;
        let w = Weights::from_safetensors(&files, options.dtype, &options.device)?;
        Ok(Self {
            model_type: raw
                .get("model_type")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            decoder: load_causal_lm(&w, &spec)?,
            generation_config: GenerationConfig::from_dir(dir)?,
        })
    }

    /// `config.json`'s `model_type` (a GGUF file's `general.architecture`).
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// The decoder.
    pub fn decoder(&self) -> &DecoderOnlyTransformer {
        &self.decoder
    }

    /// The checkpoint's generation defaults (`generation_config.json`).
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation_config
    }

    /// Logits `(batch, seq, vocab)` for `input_ids` `(batch, seq)`; `attention_mask`
    /// `(batch, seq)` marks real tokens of left-padded rows.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self
            .decoder
            .forward(input_ids, attention_mask, None, crate::nn::Pass::INFERENCE)?
            .logits)
    }

    /// Generates from `input_ids` `(batch, seq)` with `cfg` (see
    /// [`generation::generate_ids`]); the attention mask is inferred from `pad_token_id`
    /// as `transformers` does.
    pub fn generate(&self, input_ids: &Tensor, cfg: &GenerationConfig) -> Result<GenerateOutput> {
        self.generate_with(input_ids, None, cfg, None)
    }

    /// [`AutoModelForCausalLM::generate`] with an explicit attention mask and, for stop
    /// strings, the tokenizer.
    pub fn generate_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cfg: &GenerationConfig,
        tokenizer: Option<&tokenizers::Tokenizer>,
    ) -> Result<GenerateOutput> {
        let rows = |t: &Tensor, what: &str| -> Result<Vec<Vec<u32>>> {
            t.dims2()
                .map_err(|_| Error::shape(what, "(batch, seq)", t.dims()))?;
            Ok(t.to_dtype(DType::U32)?.to_vec2::<u32>()?)
        };
        let ids = rows(input_ids, "input_ids")?;
        let mask = attention_mask
            .map(|m| rows(m, "attention_mask"))
            .transpose()?;
        generation::generate_ids(&self.decoder, &ids, mask.as_deref(), cfg, tokenizer)
    }

    /// Left-pads `prompts` (with `cfg`'s pad token, else 0) and generates for all of them.
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerationConfig,
    ) -> Result<GenerateOutput> {
        let pad = cfg.effective_pad_token_id().unwrap_or(0);
        let (ids, mask) = generation::left_pad(prompts, pad);
        generation::generate_ids(&self.decoder, &ids, Some(&mask), cfg, None)
    }
}
