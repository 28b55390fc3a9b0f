//! [`LanguageModel`]: the one loader of causal language models with their tokenizers. `generate`,
//! `chat`, `perplexity`, the `text-generation` pipeline and the server all load through it,
//! so a `.gguf` file, a checkpoint directory and a hub id of either work in every one of
//! them alike.

use std::path::{Path, PathBuf};

use super::AutoModelForCausalLM;
use crate::arch::DecoderOnlyTransformer;
use crate::error::{Error, Result};
use crate::models::chat_template::ChatTemplate;
use crate::models::tokenizer::{AutoTokenizer, EncodeOptions};
use crate::models::{GgufModel, GgufTokenizer, LoadOptions};

/// The tokenizer of a causal LM: read from a GGUF file's metadata, or from a checkpoint's
/// tokenizer files.
pub enum LmTokenizer {
    /// Built from `tokenizer.ggml.*` metadata.
    Gguf(Box<GgufTokenizer>),
    /// `tokenizer.json` and its configuration.
    Auto(Box<AutoTokenizer>),
}

impl LmTokenizer {
    /// The `tokenizers` tokenizer underneath.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        match self {
            Self::Gguf(t) => t.tokenizer(),
            Self::Auto(t) => t.inner(),
        }
    }

    /// Token ids of `text`; with `add_special_tokens`, the model's own (a BOS where the
    /// model asks for one), as `transformers` and llama.cpp add them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match self {
            Self::Gguf(t) => t.encode(text, add_special_tokens),
            Self::Auto(t) => {
                let opts = EncodeOptions {
                    add_special_tokens,
                    ..EncodeOptions::default()
                };
                Ok(t.encode(text, &opts)?
                    .into_iter()
                    .next()
                    .map(|e| e.ids)
                    .unwrap_or_default())
            }
        }
    }

    /// The beginning-of-sequence token's id, when the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        match self {
            Self::Gguf(t) => t.bos_token_id(),
            Self::Auto(t) => t.bos_token_id(),
        }
    }

    /// The text of `ids`, special tokens skipped or kept.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match self {
            Self::Gguf(t) => t.decode(ids, skip_special_tokens),
            Self::Auto(t) => t.decode(ids, skip_special_tokens),
        }
    }
}

/// Where a loaded causal LM came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file.
    Gguf(PathBuf),
    /// A checkpoint directory (`config.json`, safetensors, tokenizer files).
    Dir(PathBuf),
}

/// A causal language model with its tokenizer, loaded from a GGUF file, a checkpoint
/// directory, or a hub id of either.
pub struct LanguageModel {
    /// The model and its generation defaults.
    pub model: AutoModelForCausalLM,
    /// Its tokenizer.
    pub tokenizer: LmTokenizer,
    /// The file or directory it was read from.
    pub source: ModelSource,
}

impl LanguageModel {
    /// Loads `model`: a `.gguf` file, a checkpoint directory, or a hub id (`org/name[@rev]`,
    /// from the local cache or downloaded) of a repository holding either. A GGUF file keeps
    /// its quantized weights and runs on the CPU only: any other device in `options` is an
    /// error saying so. Checkpoints load in `options.dtype` on `options.device`.
    pub fn from_pretrained(model: &str, options: &LoadOptions) -> Result<Self> {
        match crate::models::gguf::gguf_file(model)? {
            Some(path) => {
                if !options.device.is_cpu() {
                    return Err(Error::file(
                        &path,
                        "GGUF models run on the CPU only (their quantized products are \
                         llama.cpp's CPU arithmetic); load it with the CPU device",
                    ));
                }
                Self::from_gguf(&path)
            }
            None => Self::from_dir(&crate::models::hub::resolve(model)?, options),
        }
    }

    /// Loads a GGUF file: model, tokenizer and generation defaults from its metadata.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let gguf = GgufModel::load(path)?;
        Ok(Self {
            model: AutoModelForCausalLM::from_gguf_model(&gguf),
            tokenizer: LmTokenizer::Gguf(Box::new(gguf.tokenizer().clone())),
            source: ModelSource::Gguf(path.to_path_buf()),
        })
    }

    /// Loads a checkpoint directory.
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
        Ok(Self {
            model: AutoModelForCausalLM::from_dir(dir, options)?,
            tokenizer: LmTokenizer::Auto(Box::new(AutoTokenizer::from_dir(dir)?)),
            source: ModelSource::Dir(dir.to_path_buf()),
        })
    }

    /// The decoder.
    pub fn decoder(&self) -> &DecoderOnlyTransformer {
        self.model.decoder()
    }

    /// The longest sequence the model takes (its positions, or a GGUF file's trained
    /// context).
    pub fn context_length(&self) -> usize {
        self.decoder().config().embeddings.max_positions
    }

    /// The model's chat template: the GGUF file's `tokenizer.chat_template`, or the
    /// checkpoint's (`chat_template.jinja`, `tokenizer_config.json`).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        match (&self.source, &self.tokenizer) {
            (ModelSource::Gguf(path), LmTokenizer::Gguf(tok)) => ChatTemplate::from_gguf(tok, path),
            (ModelSource::Dir(dir), LmTokenizer::Auto(tok)) => ChatTemplate::from_dir(dir, tok),
            // The constructors above pair each source with its own kind of tokenizer; a
            // caller that assembled another pairing by hand gets an error, not a guess.
            (source, _) => Err(Error::Invalid(format!(
                "the tokenizer does not belong to {source:?}: a GGUF file's chat template \
                 needs its GGUF tokenizer, a checkpoint's its tokenizer files"
            ))),
        }
    }
}
