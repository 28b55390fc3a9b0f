//! Auto-style loading of causal language models: `config.json`'s `model_type` picks the
//! family, and every family runs on the same [`DecoderOnlyTransformer`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{course::CourseConfig, gpt2, llama, read_config, Gpt2Config, LlamaConfig, LoadOptions};
use crate::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer};
use crate::error::{Error, Result};
use crate::generation::{self, GenerateOutput, GenerationConfig};
use crate::weights::Weights;

/// The causal-LM families `from_dir` understands.
pub const SUPPORTED_CAUSAL_LM: &[&str] = &["gpt2", "llama", "mistral", "qwen2", "ferroformer"];

/// A family's decoder configuration, its tensor names, and where the body sits in the file.
pub struct CausalLmSpec {
    /// Architecture.
    pub config: DecoderConfig,
    /// Tensor names, relative to `body_prefix`.
    pub names: DecoderNames,
    /// Prefix of the body (`transformer` for GPT-2, `model` for Llama, empty otherwise).
    pub body_prefix: &'static str,
}

/// Reads `dir/config.json` and describes the model.
pub fn causal_lm_spec(dir: &Path) -> Result<CausalLmSpec> {
    let raw: serde_json::Value = read_config(dir)?;
    causal_lm_spec_from_json(&raw, &dir.join("config.json"))
}

/// Describes the model a parsed `config.json` (read from `source`) defines.
pub fn causal_lm_spec_from_json(raw: &serde_json::Value, source: &Path) -> Result<CausalLmSpec> {
    fn parse<T: serde::de::DeserializeOwned>(raw: &serde_json::Value, source: &Path) -> Result<T> {
        serde_json::from_value(raw.clone()).map_err(|e| Error::file(source, e))
    }
    let model_type = raw.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    match model_type {
        "gpt2" => {
            let c: Gpt2Config = parse(raw, source)?;
            Ok(CausalLmSpec {
                config: c.decoder_config()?,
                names: gpt2::gpt2_names(),
                body_prefix: "transformer",
            })
        }
        "llama" | "mistral" | "qwen2" => {
            let c: LlamaConfig = parse(raw, source)?;
            let config = c.decoder_config()?;
            Ok(CausalLmSpec {
                names: llama::llama_names(&config),
                config,
                body_prefix: "model",
            })
        }
        "ferroformer" => {
            let c: CourseConfig = parse(raw, source)?;
            let config = c.decoder_config()?;
            Ok(CausalLmSpec {
                names: c.names(&config),
                config,
                body_prefix: "",
            })
        }
        other => Err(Error::file(
            source,
            format!(
                "model_type `{other}` is not a supported causal LM; supported: {}",
                SUPPORTED_CAUSAL_LM.join(", ")
            ),
        )),
    }
}

/// Builds the model described by `spec` from `w` (checkpoint root).
pub fn load_causal_lm(w: &Weights, spec: &CausalLmSpec) -> Result<DecoderOnlyTransformer> {
    // Base-model checkpoints (`GPT2Model`) store the body without the prefix.
    let body = if spec.body_prefix.is_empty() || w.is_trainable() {
        if spec.body_prefix.is_empty() {
            w.clone()
        } else {
            w.pp(spec.body_prefix)
        }
    } else {
        super::under_prefix_if_present(w, spec.body_prefix, &spec.names.embeddings.word)
    };
    DecoderOnlyTransformer::load_split(&body, w, &spec.config, &spec.names)
}

/// Loads any supported causal LM from a checkpoint directory.
pub fn causal_lm_from_dir(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<DecoderOnlyTransformer> {
    let spec = causal_lm_spec(dir)?;
    let files = super::checkpoint_files(dir)?;
    let w = Weights::from_safetensors(&files, dtype, device)?;
    load_causal_lm(&w, &spec)
}

/// A causal language model of any supported family, picked by `config.json`'s
/// `model_type` (`transformers`' `AutoModelForCausalLM`), with its generation defaults.
#[derive(Debug, Clone)]
pub struct AutoModelForCausalLM {
    model_type: String,
    decoder: DecoderOnlyTransformer,
    generation_config: GenerationConfig,
}

impl AutoModelForCausalLM {
    /// Loads a model by hub id (`org/name`, from the local cache or downloaded) or local
    /// directory, in f32 on the CPU.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_dir(&super::hub::resolve(model)?, &LoadOptions::default())
    }

    /// Loads a checkpoint directory: `config.json`, safetensors weights, and
    /// `generation_config.json` when present.
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let raw: serde_json::Value = read_config(dir)?;
        let spec = causal_lm_spec_from_json(&raw, &dir.join("config.json"))?;
        let files = super::checkpoint_files(dir)?;
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

    /// `config.json`'s `model_type`.
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
            .forward(input_ids, attention_mask, None, false, false)?
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
