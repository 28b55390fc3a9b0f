//! What a checkpoint directory holds: architecture, parameters per module, dtypes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Parameters of one module (a group of tensors sharing a name prefix).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleSummary {
    /// Module path, e.g. `encoder.layer.0`.
    pub name: String,
    /// Number of scalar parameters.
    pub parameters: usize,
    /// Number of tensors.
    pub tensors: usize,
}

/// Summary of a checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckpointSummary {
    /// The directory inspected.
    pub path: String,
    /// `config.json`'s `architectures`.
    pub architectures: Vec<String>,
    /// `config.json`'s `model_type`.
    pub model_type: Option<String>,
    /// The pipeline tasks this crate runs on the checkpoint, by its `model_type` (empty when
    /// the family is not supported).
    pub tasks: Vec<String>,
    /// Main sizes from `config.json` (whatever of the usual keys it has).
    pub config: BTreeMap<String, serde_json::Value>,
    /// Parameters per module, in name order.
    pub modules: Vec<ModuleSummary>,
    /// Total scalar parameters.
    pub total_parameters: usize,
    /// Scalar parameters per stored dtype.
    pub dtypes: BTreeMap<String, usize>,
}

/// The module a tensor belongs to: its name up to and including the first numeric
/// component (`encoder.layer.3`), else its first two components (`embeddings.LayerNorm`),
/// else the name without its last component.
pub fn module_of(tensor_name: &str) -> String {
    let parts: Vec<&str> = tensor_name.split('.').collect();
    if let Some(i) = parts.iter().position(|p| p.parse::<usize>().is_ok()) {
        return parts[..=i].join(".");
    }
    let keep = (parts.len().saturating_sub(1)).clamp(1, 2);
    parts[..keep].join(".")
}

const CONFIG_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "n_embd",
    "d_model",
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "num_decoder_layers",
    "encoder_layers",
    "decoder_layers",
    "num_attention_heads",
    "num_heads",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "d_kv",
    "d_ff",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "feed_forward_proj",
    "n_head",
    "num_key_value_heads",
    "intermediate_size",
    "n_inner",
    "max_position_embeddings",
    "n_positions",
    "hidden_act",
    "activation_function",
    "torch_dtype",
    "dtype",
];

/// The pipeline tasks a checkpoint of `model_type` runs (encoder families: with the matching
/// head).
pub fn tasks_of(model_type: &str) -> Vec<String> {
    let names: &[&str] = if super::is_seq2seq_model_type(model_type) {
        &["summarization", "translation", "text2text-generation"]
    } else if super::auto::SUPPORTED_CAUSAL_LM.contains(&model_type) {
        &["text-generation"]
    } else if super::SUPPORTED_ENCODER_MODEL_TYPES.contains(&model_type) {
        &[
            "text-classification",
            "token-classification",
            "question-answering",
            "fill-mask",
            "feature-extraction",
            "zero-shot-classification",
        ]
    } else {
        &[]
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Reads `config.json` (if present) and the safetensors headers of `dir`.
pub fn inspect_checkpoint(dir: &Path) -> Result<CheckpointSummary> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "not a directory"));
    }
    let config_path = dir.join("config.json");
    let config: serde_json::Value = if config_path.is_file() {
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| Error::file(&config_path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&config_path, e))?
    } else {
        serde_json::Value::Null
    };
    let architectures = config
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let model_type = config
        .get("model_type")
        .and_then(|m| m.as_str())
        .map(String::from);
    let config_sizes = CONFIG_KEYS
        .iter()
        .filter_map(|k| {
            config
                .get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();

    let files = super::checkpoint_files(dir)?;
    let mut modules: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for file in &files {
        // SAFETY: read-only map of a file we only read headers from.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
            .map_err(|e| Error::file(file, format!("not a valid safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let n: usize = view.shape().iter().product();
            let entry = modules.entry(module_of(&name)).or_default();
            entry.0 += n;
            entry.1 += 1;
            *dtypes
                .entry(format!("{:?}", view.dtype()).to_lowercase())
                .or_default() += n;
            total += n;
        }
    }
    // Numeric components sort numerically (layer 10 after layer 9).
    let mut modules: Vec<ModuleSummary> = modules
        .into_iter()
        .map(|(name, (parameters, tensors))| ModuleSummary {
            name,
            parameters,
            tensors,
        })
        .collect();
    modules.sort_by_key(|m| {
        m.name
            .split('.')
            .map(|p| match p.parse::<usize>() {
                Ok(n) => format!("{n:010}"),
                Err(_) => p.to_string(),
            })
            .collect::<Vec<_>>()
    });
    Ok(CheckpointSummary {
        path: dir.display().to_string(),
        architectures,
        tasks: tasks_of(model_type.as_deref().unwrap_or("")),
        model_type,
        config: config_sizes,
        modules,
        total_parameters: total,
        dtypes,
    })
}
