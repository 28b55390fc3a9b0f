//! Pretrained model families: each is a config struct (read from `config.json`) plus a
//! weight-name map onto the shared [`crate::arch`] and [`crate::nn`] blocks.

pub mod auto;
pub mod auto_encoder;
pub mod bart;
pub mod bert;
pub mod causal_lm;
pub mod chat_template;
pub mod course;
pub mod distilbert;
pub mod encoder_model;
pub mod gemma;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gpt2;
pub mod hub;
pub mod inspect;
pub mod llama;
pub mod phi3;
pub mod roberta;
pub mod seq2seq;
pub mod t5;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::weights::Weights;

pub use auto_encoder::{
    encoder_spec_from_json, AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, PretrainedConfig,
    SUPPORTED_ENCODER_ARCHITECTURES, SUPPORTED_ENCODER_MODEL_TYPES,
};
pub use bart::BartConfig;
pub use bert::{BertConfig, BertModel, BertOutput};
pub use causal_lm::{CausalLm, CausalLmFamily};
pub use chat_template::{ChatMessage, ChatTemplate};
pub use distilbert::DistilBertConfig;
pub use encoder_model::{EncoderModel, EncoderOutput, EncoderSpec};
pub use gemma::{GemmaConfig, GemmaForCausalLm};
pub use gguf::{GgufConfig, GgufFile, GgufModel};
pub use gguf_tokenizer::GgufTokenizer;
pub use gpt2::{Gpt2Config, Gpt2LmHeadModel};
pub use inspect::{inspect_checkpoint, CheckpointSummary, ModuleSummary};
pub use llama::{LlamaConfig, LlamaFamilyConfig, LlamaFamilyForCausalLm, LlamaForCausalLm};
pub use phi3::{Phi3Config, Phi3ForCausalLm};
pub use roberta::RobertaConfig;
pub use seq2seq::{
    is_seq2seq_model_type, load_seq2seq_lm, seq2seq_lm_from_dir, SUPPORTED_SEQ2SEQ_MODEL_TYPES,
};
pub use t5::T5Config;
pub use tokenizer::{
    AutoTokenizer, BatchEncoding, EncodeOptions, Encoding, PaddingStrategy, Side,
    TruncationStrategy,
};

/// How to load a pretrained model: the dtype parameters are converted to (and computed in)
/// and the device they are placed on. The default is f32 on the CPU, whatever the
/// checkpoint stores (f32, f16 or bf16), as `transformers` loads by default.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Parameter and compute dtype.
    pub dtype: DType,
    /// Device.
    pub device: Device,
    /// Encoders compute only the real tokens of a padded batch (packed end to end, see
    /// [`crate::arch::TransformerEncoder::forward_packed`]): faster for batches of uneven
    /// lengths, the same numbers at every real token, and zeros at padding positions.
    /// Pipelines turn it on; off by default so outputs match `transformers` everywhere.
    pub skip_padding_outputs: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            skip_padding_outputs: false,
        }
    }
}

/// Reads and parses `dir/config.json`, naming the file and the field on error.
pub fn read_config<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(&path, e))
}

/// The safetensors files of a checkpoint directory: `model.safetensors`, or every shard
/// listed in `model.safetensors.index.json`.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::file(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::file(&index, e))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::file(&index, "missing object field `weight_map`"))?;
        let mut files = Vec::with_capacity(map.len());
        for (tensor, shard) in map {
            let name = shard.as_str().ok_or_else(|| {
                Error::file(&index, format!("`weight_map.{tensor}` is not a file name"))
            })?;
            // Shards live beside the index: a path that leaves the directory is refused, not
            // read (an index could otherwise point at any file on the machine).
            let plain = Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if name.is_empty() || !plain {
                return Err(Error::file(
                    &index,
                    format!("`weight_map.{tensor}` names `{name}`, not a file in this directory"),
                ));
            }
            files.push(dir.join(name));
        }
        files.sort();
        files.dedup();
        return Ok(files);
    }
    Err(Error::file(
        dir,
        "no model.safetensors or model.safetensors.index.json in this directory",
    ))
}

/// The weights of a checkpoint directory: `model.safetensors`, the shards listed in
/// `model.safetensors.index.json`, or else a PyTorch `pytorch_model.bin`; converted to
/// `dtype` on `device`.
pub fn weights_from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Weights<'static>> {
    if dir.join("model.safetensors").is_file() || dir.join("model.safetensors.index.json").is_file()
    {
        return Weights::from_safetensors(&checkpoint_files(dir)?, dtype, device);
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Weights::from_pth(&bin, dtype, device);
    }
    if dir.join("pytorch_model.bin.index.json").is_file() {
        return Err(Error::file(
            dir,
            "sharded pytorch_model.bin checkpoints are not supported; save them as safetensors \
             (save_pretrained(..., safe_serialization=True))",
        ));
    }
    Err(Error::file(
        dir,
        "no model.safetensors, model.safetensors.index.json or pytorch_model.bin in this directory",
    ))
}

/// Returns `w` moved under `prefix` when the checkpoint stores the base model there
/// (`bert.embeddings...` in a task checkpoint, `transformer.h...` in GPT-2).
pub(crate) fn under_prefix_if_present<'a>(
    w: &Weights<'a>,
    prefix: &str,
    probe: &str,
) -> Weights<'a> {
    if !w.contains(probe) && w.contains(&format!("{prefix}.{probe}")) {
        w.pp(prefix)
    } else {
        w.clone()
    }
}
