//! `ferroformer train lm` configuration: a TOML file whose every key is also a flag.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Architecture presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The original paper as taught in the course: sinusoidal positions, post-norm, ReLU.
    Course,
    /// GPT-2: learned positions, pre-norm, GELU (tanh); saved as a `GPT2LMHeadModel`.
    Gpt2,
    /// Llama: RoPE, RMSNorm, SwiGLU; saved as a `LlamaForCausalLM`.
    Llama,
}

impl std::str::FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "course" => Ok(Preset::Course),
            "gpt2" => Ok(Preset::Gpt2),
            "llama" => Ok(Preset::Llama),
            other => Err(Error::config(
                "preset",
                format!("unknown preset `{other}`; expected course, gpt2 or llama"),
            )),
        }
    }
}

/// Everything a language-model training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Architecture preset.
    pub preset: Preset,
    /// Text files, folders, or JSONL files.
    pub data: Vec<PathBuf>,
    /// `tokenizer.json` to encode the corpus with.
    pub tokenizer: Option<PathBuf>,
    /// Run directory (checkpoint, logs, plots).
    pub out: PathBuf,
    /// Layers.
    pub layers: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention); default: `heads`.
    pub kv_heads: Option<usize>,
    /// FFN width; default 4 × d_model (Llama: 8/3 × d_model, rounded up to a multiple of 8).
    pub d_ff: Option<usize>,
    /// Tokens per training window.
    pub context_length: usize,
    /// Dropout.
    pub dropout: f64,
    /// Override the preset's positional encoding (`course` preset only):
    /// sinusoidal, learned, rotary.
    pub positional: Option<String>,
    /// Override the preset's norm placement (`course` preset only).
    pub norm_first: Option<bool>,
    /// Override the preset's activation: relu, gelu, gelu_new, silu.
    pub activation: Option<String>,
    /// Tie the LM head to the token embeddings (default: gpt2 yes, others no).
    pub tie_embeddings: Option<bool>,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay; default lr / 10.
    pub min_lr: Option<f64>,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Optimizer steps.
    pub max_steps: u64,
    /// Stop (and save) after this many minutes of training, if set.
    pub max_minutes: Option<f64>,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip gradients to this global L2 norm (0: off).
    pub clip: f64,
    /// Evaluate every N steps (and at the end).
    pub eval_every: u64,
    /// Validation windows per evaluation.
    pub eval_windows: usize,
    /// Save a checkpoint every N steps (and at the end).
    pub save_every: u64,
    /// Log every N steps.
    pub log_every: u64,
    /// Fraction of the token stream held out for validation.
    pub val_fraction: f64,
    /// Files held out for validation instead of a fraction (split by file).
    pub val_files: Vec<PathBuf>,
    /// JSONL field holding the text.
    pub text_field: String,
    /// Replace invalid UTF-8 instead of failing.
    pub lossy: bool,
    /// Seed for initialization, data order and dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            preset: Preset::Gpt2,
            data: Vec::new(),
            tokenizer: None,
            out: PathBuf::from("runs/lm"),
            layers: 4,
            d_model: 128,
            heads: 4,
            kv_heads: None,
            d_ff: None,
            context_length: 128,
            dropout: 0.0,
            positional: None,
            norm_first: None,
            activation: None,
            tie_embeddings: None,
            batch_size: 32,
            lr: 1e-3,
            min_lr: None,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            warmup_steps: 100,
            max_steps: 5000,
            max_minutes: None,
            grad_accum: 1,
            clip: 1.0,
            eval_every: 250,
            eval_windows: 64,
            save_every: 500,
            log_every: 10,
            val_fraction: 0.1,
            val_files: Vec::new(),
            text_field: "text".into(),
            lossy: false,
            seed: 1337,
        }
    }
}

/// The keys of a configuration type: the fields its default serializes (TOML keys; flags
/// are the same with `-` for `_`).
pub fn keys_of<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The config keys of [`TrainConfig`].
pub fn known_keys() -> Vec<String> {
    keys_of::<TrainConfig>()
}

/// Edit distance, for "did you mean" suggestions.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The key of `known` closest to `key`, if reasonably close.
pub fn closest_key_in(key: &str, known: &[String]) -> Option<String> {
    let key = key.replace('-', "_");
    known
        .iter()
        .map(|k| (levenshtein(&key, k), k.clone()))
        .filter(|(d, k)| *d <= 3.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// The [`TrainConfig`] key closest to `key`, if reasonably close.
pub fn closest_key(key: &str) -> Option<String> {
    closest_key_in(key, &known_keys())
}

/// Rejects a key not in `known`, naming it and suggesting the closest known one.
pub fn check_key_in(key: &str, source: &str, known: &[String]) -> Result<()> {
    let norm = key.replace('-', "_");
    if known.contains(&norm) {
        return Ok(());
    }
    let hint = match closest_key_in(key, known) {
        Some(k) => format!("; did you mean `{k}`?"),
        None => String::new(),
    };
    Err(Error::Invalid(format!(
        "{source}: unknown config key `{key}`{hint}"
    )))
}

/// Rejects an unknown [`TrainConfig`] key, naming it and suggesting the closest known one.
pub fn check_key(key: &str, source: &str) -> Result<()> {
    check_key_in(key, source, &known_keys())
}

/// Reads a configuration of type `T` from a TOML file; unknown keys are errors with a
/// suggestion.
pub fn from_toml_file<T: Serialize + serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let table: toml::Table = text.parse().map_err(|e| Error::file(path, e))?;
    let known = keys_of::<T>();
    for key in table.keys() {
        check_key_in(key, &path.display().to_string(), &known)?;
    }
    // Deserialized on its own first for errors that name the line and the key.
    toml::from_str::<T>(&text).map_err(|e| Error::file(path, e))?;
    // The file's keys go over `T::default()`'s values: a configuration that flattens shared
    // settings in may give them defaults of its own, which deserializing the file alone
    // would replace by the shared ones.
    let mut json = serde_json::to_value(T::default()).map_err(|e| Error::Invalid(e.to_string()))?;
    for (key, value) in table {
        json[&key] = serde_json::to_value(value).map_err(|e| Error::file(path, e))?;
    }
    serde_json::from_value(json).map_err(|e| Error::file(path, e))
}

/// Sets one key of a configuration from its string form (a `--flag value` or `key=value`):
/// lists split at commas, strings taken as they are, anything else parsed as JSON.
pub fn set_key<T: Serialize + serde::de::DeserializeOwned + Default>(
    cfg: &mut T,
    key: &str,
    value: &str,
) -> Result<()> {
    check_key_in(key, "command line", &keys_of::<T>())?;
    let key = key.replace('-', "_");
    let mut json = serde_json::to_value(&*cfg).map_err(|e| Error::Invalid(e.to_string()))?;
    let current = json.get(&key).cloned().unwrap_or(serde_json::Value::Null);
    let parsed: serde_json::Value = match &current {
        serde_json::Value::Array(_) => serde_json::Value::Array(
            value
                .split(',')
                .map(|s| serde_json::Value::String(s.to_string()))
                .collect(),
        ),
        serde_json::Value::String(_) => serde_json::Value::String(value.to_string()),
        _ => serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string())),
    };
    json[&key] = parsed;
    *cfg = serde_json::from_value(json)
        .map_err(|e| Error::config(key.clone(), format!("cannot use `{value}`: {e}")))?;
    Ok(())
}

impl TrainConfig {
    /// Reads a TOML file (unknown keys are errors with a suggestion).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        from_toml_file(path)
    }

    /// Sets one key from its string form (a `--flag value` or `key=value`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        set_key(self, key, value)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("layers", self.layers),
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("context_length", self.context_length),
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(Error::config(k, "must be > 0"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(Error::config(
                "d_model",
                format!(
                    "d_model ({}) must be a multiple of heads ({})",
                    self.d_model, self.heads
                ),
            ));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(Error::config(
                "lr",
                format!("must be > 0, found {}", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("must be in [0, 1), found {}", self.dropout),
            ));
        }
        if self.data.is_empty() {
            return Err(Error::config(
                "data",
                "no training data given (--data FILE...)",
            ));
        }
        if self.tokenizer.is_none() {
            return Err(Error::config(
                "tokenizer",
                "no tokenizer given (--tokenizer tokenizer.json)",
            ));
        }
        if self.max_steps == 0 {
            return Err(Error::config("max_steps", "must be > 0"));
        }
        Ok(())
    }
}
