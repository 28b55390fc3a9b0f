//! Auto-style loading of causal language models: `config.json`'s `model_type` picks the
//! family, and every family runs on the same [`DecoderOnlyTransformer`].

use std::path::Path;

use candle_core::{DType, Device};

use super::{course::CourseConfig, gemma, gpt2, llama, phi3, read_config, Gpt2Config};
use crate::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The causal-LM families `from_dir` understands.
pub const SUPPORTED_CAUSAL_LM: &[&str] = &[
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "phi3",
    "ferroformer",
];

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
        "llama" | "mistral" | "qwen2" | "qwen3" => {
            let c: llama::LlamaFamilyConfig = parse(raw, source)?;
            let config = c.decoder_config().map_err(|e| Error::file(source, e))?;
            Ok(CausalLmSpec {
                names: llama::llama_names_with(&config, c.qk_norms()),
                config,
                body_prefix: "model",
            })
        }
        "gemma2" | "gemma3_text" => {
            let c: gemma::GemmaConfig = parse(raw, source)?;
            let config = c.decoder_config().map_err(|e| Error::file(source, e))?;
            Ok(CausalLmSpec {
                names: c.names(&config),
                config,
                body_prefix: "model",
            })
        }
        "phi3" => {
            let c: phi3::Phi3Config = parse(raw, source)?;
            let config = c.decoder_config().map_err(|e| Error::file(source, e))?;
            Ok(CausalLmSpec {
                names: phi3::Phi3Config::names(&config),
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
