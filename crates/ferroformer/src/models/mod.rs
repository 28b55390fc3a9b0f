//! Pretrained model families: each is a config struct (read from `config.json`) plus a
//! weight-name map onto the shared [`crate::arch`] and [`crate::nn`] blocks.

pub mod auto;
pub mod bert;
pub mod causal_lm;
pub mod course;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gpt2;
pub mod hub;
pub mod inspect;
pub mod llama;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::weights::Weights;

pub use bert::{BertConfig, BertModel, BertOutput};
pub use causal_lm::{CausalLm, CausalLmFamily};
pub use gguf::{GgufConfig, GgufFile, GgufModel};
pub use gguf_tokenizer::GgufTokenizer;
pub use gpt2::{Gpt2Config, Gpt2LmHeadModel};
pub use inspect::{inspect_checkpoint, CheckpointSummary, ModuleSummary};
pub use llama::{LlamaConfig, LlamaForCausalLm};

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
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    Err(Error::file(
        dir,
        "no model.safetensors or model.safetensors.index.json in this directory",
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
