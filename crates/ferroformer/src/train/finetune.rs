//! Fine-tuning a classification head on a pretrained encoder (any family the Auto loader
//! reads: BERT, DistilBERT, RoBERTa, XLM-RoBERTa, CamemBERT), as `transformers`' `Trainer`
//! does with its defaults: AdamW with decoupled weight decay on every matrix (biases and
//! LayerNorm weights excluded), a linear warmup then linear decay to 0, gradient clipping at
//! a global norm, evaluation each epoch or every N steps, the best checkpoint kept by a
//! chosen metric, early stopping.
//!
//! One loop serves every head: a [`HeadKind`] says which head the model carries (a label per
//! text or a label per token) and so how batches, logits and the loss look; a
//! [`FineTuneTask`] reads and tokenizes the task's data and turns predictions into its
//! metrics (`train/classifier.rs`, `train/token_classifier.rs`).
//!
//! The output directory is a Hugging Face checkpoint (`config.json` with `architectures`,
//! `id2label`/`label2id`, `model.safetensors` with the family's tensor names, the tokenizer
//! files): `transformers`' Auto classes and our pipelines load it as it is. `checkpoint/`
//! beside it holds the state a resumed run continues from; `log.jsonl`, `loss.png` and
//! `metric.png` record the run.
//!
//! Determinism: the order of the examples depends on (seed, epoch) and the dropout masks on
//! (seed, step) only, so a run stopped and resumed computes what an uninterrupted run does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{atomic_write, atomic_write_with, file_checksum};
use super::log::LogWriter;
use super::optim::{clip_grad_norm, linear_schedule, AdamW, AdamWConfig};
use crate::error::{Error, Result};
use crate::models::auto_encoder::{
    sequence_classification_architecture, token_classification_architecture,
};
use crate::models::encoder_model::{EncoderSpec, SequenceClassifierNames};
use crate::models::{
    AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
    PretrainedConfig,
};
use crate::nn::Pass;
use crate::weights::Weights;

/// The settings every fine-tuning run shares. Every field is a TOML key of `--config` and
/// a flag (`max_length` is `--max-length`); the defaults are `TrainingArguments`' where it
/// has one. A task's configuration flattens these in beside its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FineTuneConfig {
    /// The pretrained encoder: a checkpoint directory or a cached hub id.
    pub model: String,
    /// Training data.
    pub data: PathBuf,
    /// Evaluation data; without it `val_fraction` of the training data is held out.
    pub eval_data: Option<PathBuf>,
    /// Fraction of the training data held out for evaluation when no `eval_data` is given
    /// (0: no evaluation; the last model is saved).
    pub val_fraction: f64,
    /// Output directory.
    pub out: PathBuf,
    /// Passes over the training data.
    pub epochs: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Longest input in tokens (longer inputs are truncated); default: the model's.
    pub max_length: Option<usize>,
    /// AdamW's decoupled weight decay (matrices only).
    pub weight_decay: f64,
    /// Fraction of the steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// Clip gradients to this global L2 norm (0: off).
    pub max_grad_norm: f64,
    /// AdamW β1.
    pub adam_beta1: f64,
    /// AdamW β2.
    pub adam_beta2: f64,
    /// AdamW ε.
    pub adam_epsilon: f64,
    /// When to evaluate: `epoch`, `steps` (every `eval_steps`) or `no`.
    pub eval_strategy: String,
    /// Steps between evaluations with `eval_strategy = "steps"`.
    pub eval_steps: u64,
    /// Also save a resumable checkpoint every N steps (0: only at evaluations and at the end).
    pub save_steps: u64,
    /// Metrics computed at each evaluation (the task lists which). The first picks the best
    /// checkpoint (higher is better; lower for loss).
    pub metric: Vec<String>,
    /// Seed of the head's initialization, the data order and the dropout masks.
    pub seed: u64,
    /// Train only the classification head.
    pub freeze_base: bool,
    /// Train only the last N encoder layers (and the pooler and head).
    pub train_last_layers: Option<usize>,
    /// Stop after this many evaluations without improvement of the best metric.
    pub early_stopping_patience: Option<u64>,
    /// Report progress every N steps.
    pub log_every: u64,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            data: PathBuf::new(),
            eval_data: None,
            val_fraction: 0.0,
            out: PathBuf::from("runs/classifier"),
            epochs: 3,
            lr: 5e-5,
            batch_size: 8,
            max_length: None,
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            max_grad_norm: 1.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            eval_strategy: "epoch".into(),
            eval_steps: 500,
            save_steps: 0,
            metric: vec!["accuracy".into()],
            seed: 42,
            freeze_base: false,
            train_last_layers: None,
            early_stopping_patience: None,
            log_every: 10,
        }
    }
}

impl FineTuneConfig {
    /// Checks the values make sense together; `metrics` are the names the task computes.
    pub fn validate(&self, metrics: &[&str]) -> Result<()> {
        if self.model.is_empty() {
            return Err(Error::config("model", "no model given (--model DIR)"));
        }
        if self.data.as_os_str().is_empty() {
            return Err(Error::config(
                "data",
                "no training data given (--data FILE)",
            ));
        }
        for (k, v) in [("epochs", self.epochs), ("log_every", self.log_every)] {
            if v == 0 {
                return Err(Error::config(k, "must be > 0"));
            }
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be > 0"));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(Error::config(
                "lr",
                format!("must be > 0, found {}", self.lr),
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(Error::config(
                "warmup_ratio",
                format!("must be in [0, 1], found {}", self.warmup_ratio),
            ));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(Error::config("weight_decay", "must be >= 0"));
        }
        match self.eval_strategy.as_str() {
            "epoch" | "no" => {}
            "steps" if self.eval_steps > 0 => {}
            "steps" => return Err(Error::config("eval_steps", "must be > 0")),
            other => {
                return Err(Error::config(
                    "eval_strategy",
                    format!("unknown `{other}`; expected epoch, steps or no"),
                ))
            }
        }
        if self.metric.is_empty() {
            return Err(Error::config("metric", "name at least one metric"));
        }
        for m in &self.metric {
            if !metrics.contains(&m.as_str()) {
                return Err(Error::config(
                    "metric",
                    format!("unknown metric `{m}`; expected one of {metrics:?}"),
                ));
            }
        }
        if self.freeze_base && self.train_last_layers.is_some() {
            return Err(Error::config(
                "train_last_layers",
                "--freeze-base and --train-last-layers exclude each other",
            ));
        }
        if self.max_length == Some(0) {
            return Err(Error::config("max_length", "must be > 0"));
        }
        Ok(())
    }
}

/// Which head a fine-tuned model carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// One label per text (`…ForSequenceClassification`).
    Sequence,
    /// One label per token (`…ForTokenClassification`).
    Token,
}

/// The label that marks a token as unlabelled (`transformers`' `-100`): special tokens and
/// the sub-tokens after a word's first; the loss and the metrics skip it.
pub const IGNORE_LABEL: i64 = -100;

/// A tokenized example: token ids, segment ids and its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// A sequence head's class id (one entry), or a token head's class id per token
    /// ([`IGNORE_LABEL`] where a token is not labelled).
    pub labels: Vec<i64>,
}

/// One batch of tokenized examples.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(batch, seq)` u32.
    pub input_ids: Tensor,
    /// `(batch, seq)` u32, 1 for tokens, 0 for padding.
    pub attention_mask: Tensor,
    /// `(batch, seq)` u32, for families that use segments.
    pub token_type_ids: Option<Tensor>,
    /// u32 class ids: `(batch,)` for a sequence head, one per labelled token for a token
    /// head.
    pub labels: Tensor,
    /// For a token head, the positions in the flattened `(batch · seq)` logits that
    /// `labels` belong to (u32); `None` for a sequence head.
    pub label_positions: Option<Tensor>,
}

/// The task heads a fine-tuned model may carry.
enum HeadModel {
    Sequence(AutoModelForSequenceClassification),
    Token(AutoModelForTokenClassification),
}

/// A classifier being fine-tuned: the network, its parameters as trainable variables
/// (named as in a base checkpoint, the head as in a task checkpoint), and what is needed to
/// save it in the Hugging Face layout.
pub struct FineTuneModel {
    model: HeadModel,
    /// The parameters, by name.
    pub vars: HashMap<String, Var>,
    /// The `config.json` the checkpoint is saved with.
    pub config_json: serde_json::Value,
    /// Label names by class id.
    pub labels: Vec<String>,
    spec: EncoderSpec,
    head_prefixes: Vec<String>,
    uses_token_types: bool,
    pad_token_id: u32,
}

fn starts_module(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|r| r.starts_with('.'))
}

impl FineTuneModel {
    /// Loads the pretrained encoder in `dir` with every parameter a trainable variable, and
    /// puts a `head` for `labels` on it: the checkpoint's own head when it is that head for
    /// the same labels, else a new one initialized as `transformers` does (weights
    /// N(0, `initializer_range`), biases 0), seeded by `seed`. A BERT checkpoint without a
    /// pooler gets a new pooler the same way when the head reads it.
    pub fn from_pretrained(
        head: HeadKind,
        dir: &Path,
        labels: &[String],
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::Invalid(
                "a classifier needs at least one label".into(),
            ));
        }
        let source = PretrainedConfig::from_dir(dir)?;
        let spec = source.encoder_spec()?;
        let config_json = head_config_json(head, &source, labels)?;
        let config = PretrainedConfig::from_json(config_json.clone(), &dir.join("config.json"))?;

        let varmap = VarMap::new();
        let w = Weights::from_varmap(&varmap, DType::F32, device);
        let (model, head_prefixes) = match head {
            HeadKind::Sequence => (
                HeadModel::Sequence(AutoModelForSequenceClassification::load(&w, &config)?),
                match &spec.sequence_classifier {
                    SequenceClassifierNames::Pooler { classifier } => vec![classifier.clone()],
                    SequenceClassifierNames::FirstToken { dense, out, .. } => {
                        vec![dense.clone(), out.clone()]
                    }
                },
            ),
            HeadKind::Token => (
                HeadModel::Token(AutoModelForTokenClassification::load(&w, &config)?),
                vec![spec.token_classifier.clone()],
            ),
        };
        let vars: HashMap<String, Var> = super::checkpoint::varmap_vars(&varmap)?;
        let this = Self {
            model,
            vars,
            uses_token_types: config.uses_token_types(),
            pad_token_id: config.pad_token_id.unwrap_or(0),
            config_json,
            labels: labels.to_vec(),
            spec,
            head_prefixes,
        };

        let src = crate::models::weights_from_dir(dir, DType::F32, &Device::Cpu)?;
        let base = crate::models::under_prefix_if_present(
            &src,
            &this.spec.base_prefix,
            &this.spec.names.embeddings.word,
        );
        // A head is reused only from a checkpoint of the same task and labels: a BERT
        // sequence classifier's `classifier` has the token classifier's name and shape.
        let arch = this.config_json["architectures"][0].as_str().unwrap_or("");
        let same_labels = source.id2label.values().eq(labels.iter())
            && source.architectures.iter().any(|a| a == arch)
            && this.head_names().iter().all(|n| src.contains(n));
        let init_std = source
            .raw
            .get("initializer_range")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.02);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for name in this.names() {
            let var = &this.vars[&name];
            let dims = var.as_tensor().dims().to_vec();
            let loaded = if this.is_head(&name) {
                same_labels
                    .then(|| src.get(dims.as_slice(), &name))
                    .transpose()?
            } else if base.contains(&name) {
                Some(base.get(dims.as_slice(), &name)?)
            } else if this
                .spec
                .pooler
                .as_deref()
                .is_some_and(|p| starts_module(&name, p))
            {
                None
            } else {
                return Err(Error::MissingTensor {
                    name: format!("{}.{name}", this.spec.base_prefix),
                    source_desc: dir.display().to_string(),
                });
            };
            let value = match loaded {
                Some(t) => t,
                None if name.ends_with("bias") => var.as_tensor().zeros_like()?,
                None => Tensor::from_vec(
                    super::lm::normals(&mut rng, var.as_tensor().elem_count(), init_std),
                    dims.as_slice(),
                    &Device::Cpu,
                )?,
            };
            var.set(&value.to_device(device)?)?;
        }
        Ok(this)
    }

    /// The head the model carries.
    pub fn head(&self) -> HeadKind {
        match self.model {
            HeadModel::Sequence(_) => HeadKind::Sequence,
            HeadModel::Token(_) => HeadKind::Token,
        }
    }

    /// Parameter names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vars.keys().cloned().collect();
        names.sort();
        names
    }

    fn head_names(&self) -> Vec<String> {
        self.names()
            .into_iter()
            .filter(|n| self.is_head(n))
            .collect()
    }

    /// Whether `name` belongs to the task head (rather than the base model).
    pub fn is_head(&self, name: &str) -> bool {
        self.head_prefixes.iter().any(|p| starts_module(name, p))
    }

    /// The encoder layer a parameter belongs to, if any.
    pub fn layer_of(&self, name: &str) -> Option<usize> {
        let rest = name.strip_prefix(&self.spec.names.stack.layer_prefix)?;
        rest.strip_prefix('.')?.split('.').next()?.parse().ok()
    }

    /// Encoder layers.
    pub fn num_layers(&self) -> usize {
        self.spec.encoder.stack.num_layers
    }

    /// The name a parameter has in a Hugging Face task checkpoint (`bert.encoder…`,
    /// `classifier.weight`).
    pub fn hf_name(&self, name: &str) -> String {
        if self.is_head(name) {
            name.to_string()
        } else {
            format!("{}.{name}", self.spec.base_prefix)
        }
    }

    /// The parameters under their Hugging Face names.
    pub fn hf_tensors(&self) -> HashMap<String, Tensor> {
        self.vars
            .iter()
            .map(|(k, v)| (self.hf_name(k), v.as_tensor().clone()))
            .collect()
    }

    /// The parameters under their own names (for a resumable checkpoint).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        super::checkpoint::var_tensors(&self.vars)
    }

    /// Overwrites every parameter from a file written from [`FineTuneModel::tensors`].
    pub fn load_parameters(&self, path: &Path) -> Result<()> {
        super::checkpoint::load_vars(&self.vars, path)
    }

    /// Pads tokenized examples into a batch on `device` (right padding with the model's pad
    /// token, as `DataCollatorWithPadding` / `DataCollatorForTokenClassification`).
    pub fn batch(&self, rows: &[&Tokenized], device: &Device) -> Result<Batch> {
        let seq = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let b = rows.len();
        let (mut ids, mut mask, mut types) = (
            Vec::with_capacity(b * seq),
            Vec::with_capacity(b * seq),
            Vec::with_capacity(b * seq),
        );
        for r in rows {
            let pad = seq - r.ids.len();
            ids.extend(
                r.ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.pad_token_id, pad)),
            );
            mask.extend(std::iter::repeat_n(1u32, r.ids.len()).chain(std::iter::repeat_n(0, pad)));
            types.extend(
                r.type_ids
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, pad)),
            );
        }
        let (labels, label_positions) = match self.head() {
            HeadKind::Sequence => {
                let labels = rows
                    .iter()
                    .map(|r| match r.labels.as_slice() {
                        [l] if *l >= 0 => Ok(*l as u32),
                        other => Err(Error::Invalid(format!(
                            "a sequence-classification row needs one class id, found {other:?}"
                        ))),
                    })
                    .collect::<Result<Vec<u32>>>()?;
                (Tensor::from_vec(labels, b, device)?, None)
            }
            HeadKind::Token => {
                let (mut labels, mut positions) = (Vec::new(), Vec::new());
                for (i, r) in rows.iter().enumerate() {
                    for (j, &l) in r.labels.iter().enumerate() {
                        if l != IGNORE_LABEL {
                            labels.push(l as u32);
                            positions.push((i * seq + j) as u32);
                        }
                    }
                }
                let n = labels.len();
                (
                    Tensor::from_vec(labels, n, device)?,
                    Some(Tensor::from_vec(positions, n, device)?),
                )
            }
        };
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (b, seq), device)?,
            attention_mask: Tensor::from_vec(mask, (b, seq), device)?,
            token_type_ids: if self.uses_token_types {
                Some(Tensor::from_vec(types, (b, seq), device)?)
            } else {
                None
            },
            labels,
            label_positions,
        })
    }

    /// Logits: `(batch, num_labels)` for a sequence head, `(batch, seq, num_labels)` for a
    /// token head; `train` applies dropout.
    pub fn logits(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let pass = if train { Pass::TRAIN } else { Pass::INFERENCE };
        let (ids, mask, types) = (
            &batch.input_ids,
            Some(&batch.attention_mask),
            batch.token_type_ids.as_ref(),
        );
        match &self.model {
            HeadModel::Sequence(m) => m.forward_with(ids, mask, types, pass),
            HeadModel::Token(m) => m.forward_with(ids, mask, types, pass),
        }
    }

    /// The logits of the labelled units, `(units, num_labels)`: every row for a sequence
    /// head, the labelled tokens (in [`Batch::label_positions`] order) for a token head.
    pub fn labelled_logits(&self, logits: &Tensor, batch: &Batch) -> Result<Tensor> {
        match &batch.label_positions {
            None => Ok(logits.clone()),
            Some(positions) => {
                let classes = logits.dim(D::Minus1)?;
                Ok(logits.reshape(((), classes))?.index_select(positions, 0)?)
            }
        }
    }

    /// Mean cross-entropy of the labelled units of `logits` (tokens labelled
    /// [`IGNORE_LABEL`] skipped, as PyTorch's `ignore_index`).
    pub fn loss(&self, logits: &Tensor, batch: &Batch) -> Result<Tensor> {
        crate::nn::loss::cross_entropy(&self.labelled_logits(logits, batch)?, &batch.labels)
    }

    /// Writes `config.json`, `model.safetensors` (Hugging Face names) and the tokenizer files
    /// found in `tokenizer_dir` to `dir`, each atomically; `config.json` last.
    pub fn save_pretrained(&self, dir: &Path, tokenizer_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        for file in TOKENIZER_FILES {
            let src = tokenizer_dir.join(file);
            if src.is_file() {
                let bytes = std::fs::read(&src).map_err(|e| Error::file(&src, e))?;
                atomic_write(&dir.join(file), &bytes)?;
            }
        }
        let tensors = self.hf_tensors();
        let path = dir.join("model.safetensors");
        atomic_write_with(&path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| Error::file(tmp, e))
        })?;
        atomic_write(
            &dir.join("config.json"),
            &serde_json::to_vec_pretty(&self.config_json)
                .map_err(|e| Error::Invalid(e.to_string()))?,
        )
    }
}

/// The tokenizer files a checkpoint directory may hold; those present are copied.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
];

/// The `config.json` of a classifier with `head` for `labels` made from the base model's:
/// `architectures` set to the family's `…ForSequenceClassification` or
/// `…ForTokenClassification`, `id2label`, `label2id`, `num_labels`, and (sequence head)
/// `problem_type` single-label classification.
pub fn head_config_json(
    head: HeadKind,
    source: &PretrainedConfig,
    labels: &[String],
) -> Result<serde_json::Value> {
    let (arch, task) = match head {
        HeadKind::Sequence => (
            sequence_classification_architecture(&source.model_type),
            "sequence-classification",
        ),
        HeadKind::Token => (
            token_classification_architecture(&source.model_type),
            "token-classification",
        ),
    };
    let arch = arch.ok_or_else(|| {
        Error::file(
            source.source(),
            format!("model_type `{}` has no {task} class", source.model_type),
        )
    })?;
    let mut j = source.raw.clone();
    let obj = j
        .as_object_mut()
        .ok_or_else(|| Error::file(source.source(), "not a JSON object"))?;
    obj.insert("architectures".into(), serde_json::json!([arch]));
    obj.insert("model_type".into(), source.model_type.clone().into());
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    obj.insert("id2label".into(), id2label.into());
    obj.insert("label2id".into(), label2id.into());
    obj.insert("num_labels".into(), labels.len().into());
    match head {
        HeadKind::Sequence => {
            obj.insert("problem_type".into(), "single_label_classification".into());
        }
        // `problem_type` is a sequence-classification setting; a base taken from a
        // sequence classifier must not pass its own on.
        HeadKind::Token => {
            obj.remove("problem_type");
        }
    }
    Ok(j)
}

/// Loss and gradient norm of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A [`FineTuneModel`] with its optimizer over the parameters being trained (the others
/// stay exactly as loaded).
pub struct FineTuner {
    /// The model.
    pub model: FineTuneModel,
    /// The optimizer.
    pub opt: AdamW,
    trainable: HashMap<String, Var>,
    max_grad_norm: f64,
}

impl FineTuner {
    /// An optimizer over the parameters `train(name)` accepts. Every matrix is decayed, no
    /// bias or LayerNorm weight (the groups `Trainer` makes).
    pub fn new(
        model: FineTuneModel,
        train: impl Fn(&FineTuneModel, &str) -> bool,
        adam: AdamWConfig,
        max_grad_norm: f64,
    ) -> Result<Self> {
        let trainable: HashMap<String, Var> = model
            .vars
            .iter()
            .filter(|(n, _)| train(&model, n.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if trainable.is_empty() {
            return Err(Error::Invalid("no parameter is left to train".into()));
        }
        let opt = AdamW::with_decay_rule(&trainable, adam, |_, v| v.as_tensor().rank() >= 2)?;
        Ok(Self {
            model,
            opt,
            trainable,
            max_grad_norm,
        })
    }

    /// Scalar parameters being trained.
    pub fn trainable_parameters(&self) -> usize {
        self.trainable
            .values()
            .map(|v| v.as_tensor().elem_count())
            .sum()
    }

    /// Mean cross-entropy of a batch (dropout on when `train`).
    pub fn loss(&self, batch: &Batch, train: bool) -> Result<Tensor> {
        let logits = self.model.logits(batch, train)?;
        self.model.loss(&logits, batch)
    }

    /// One optimizer step on `batch` at learning rate `lr`: forward in training mode,
    /// backward, clipping, AdamW.
    pub fn step(&mut self, batch: &Batch, lr: f64) -> Result<StepStats> {
        let loss = self.loss(batch, true)?;
        let value = loss.to_scalar::<f32>()? as f64;
        let store = loss.backward()?;
        let mut grads = HashMap::new();
        for (name, var) in &self.trainable {
            if let Some(g) = store.get(var.as_tensor()) {
                grads.insert(name.clone(), g.clone());
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, self.max_grad_norm)?;
        self.opt.step(&grads, lr)?;
        Ok(StepStats {
            loss: value,
            grad_norm,
        })
    }
}

/// What happened during fine-tuning, for progress bars and logs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FineTuneEvent {
    /// The run is about to start (or resume).
    Started {
        /// First step to run.
        start_step: u64,
        /// Last step.
        max_steps: u64,
        /// Steps per epoch.
        steps_per_epoch: u64,
        /// All parameters.
        parameters: usize,
        /// Parameters being trained.
        trainable: usize,
        /// Training examples.
        train_examples: usize,
        /// Evaluation examples.
        eval_examples: usize,
        /// Label names by class id.
        labels: Vec<String>,
    },
    /// One optimizer step finished (sent every `log_every` steps).
    Step {
        /// Steps done.
        step: u64,
        /// Epochs done, fractional.
        epoch: f64,
        /// Training loss of the step.
        loss: f64,
        /// Learning rate used.
        lr: f64,
        /// Gradient norm before clipping.
        grad_norm: f64,
        /// Throughput since the last report.
        examples_per_sec: f64,
    },
    /// An evaluation finished.
    Eval {
        /// Steps done.
        step: u64,
        /// Epochs done, fractional.
        epoch: f64,
        /// Metric values (`loss` always).
        metrics: BTreeMap<String, f64>,
        /// Whether this is the best model so far (and was saved).
        best: bool,
    },
    /// A resumable checkpoint was written.
    Saved {
        /// Steps done.
        step: u64,
        /// Output directory.
        path: PathBuf,
    },
    /// Early stopping ended the run.
    EarlyStopped {
        /// Steps done.
        step: u64,
    },
}

/// The best evaluation of a run so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestEval {
    /// Step it was made at.
    pub step: u64,
    /// The metric that picks the best model, and its value.
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Every metric of that evaluation.
    pub metrics: BTreeMap<String, f64>,
}

/// Saved in `checkpoint/`: where the run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FineTuneState {
    /// Optimizer steps done.
    pub step: u64,
    /// The run's settings (the task's configuration, every key).
    pub config: serde_json::Value,
    /// Label names by class id.
    pub labels: Vec<String>,
    /// The best evaluation so far.
    pub best: Option<BestEval>,
    /// Evaluations since the best one.
    pub evals_without_improvement: u64,
    /// Whether early stopping ended the run.
    pub early_stopped: bool,
    /// Checksums of `model.safetensors` and `optimizer.safetensors` of the same save.
    pub checksums: HashMap<String, String>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FineTuneRun {
    /// Output directory (the Hugging Face checkpoint).
    pub out: PathBuf,
    /// Steps done.
    pub steps: u64,
    /// The best evaluation (none without evaluation data).
    pub best: Option<BestEval>,
    /// Label names by class id.
    pub labels: Vec<String>,
}

/// A task's data, tokenized: its label set (class-id order) and the training and
/// evaluation examples.
#[derive(Debug, Clone)]
pub struct TaskData {
    /// Label names by class id.
    pub labels: Vec<String>,
    /// Training examples.
    pub train: Vec<Tokenized>,
    /// Evaluation examples (empty: no evaluation).
    pub eval: Vec<Tokenized>,
}

/// What makes a fine-tuning task: its settings, its data and its metrics. The loop,
/// optimizer, freezing, evaluation schedule, early stopping, checkpoints and logs are
/// [`fine_tune`]'s.
pub trait FineTuneTask {
    /// The shared settings.
    fn settings(&self) -> &FineTuneConfig;
    /// Every setting of the task, as a flat JSON object (saved with each checkpoint: a
    /// resumed run must be given the same).
    fn settings_json(&self) -> Result<serde_json::Value>;
    /// The head the task trains.
    fn head(&self) -> HeadKind;
    /// The metrics an evaluation can compute (`loss` included).
    fn metric_names(&self) -> &'static [&'static str];
    /// Checks the task's own settings (the shared ones are checked by [`fine_tune`]).
    fn validate(&self) -> Result<()>;
    /// Reads the training and evaluation data and tokenizes it (inputs truncated to
    /// `max_length` tokens); label errors name the file, the line and the column.
    fn load_data(&self, tokenizer: &AutoTokenizer, max_length: usize) -> Result<TaskData>;
    /// The metrics `settings().metric` names (except `loss`) from the predicted and the
    /// reference class ids of every labelled unit, by example.
    fn metrics(
        &self,
        labels: &[String],
        predictions: &[Vec<u32>],
        references: &[Vec<u32>],
    ) -> Result<BTreeMap<String, f64>>;
}

/// Evaluates on tokenized examples: `loss` (the mean over examples of their batch's mean
/// loss, as `Trainer` averages it) and the task's metrics.
pub fn evaluate(
    tuner: &FineTuner,
    task: &dyn FineTuneTask,
    data: &[Tokenized],
    device: &Device,
) -> Result<BTreeMap<String, f64>> {
    let batch_size = task.settings().batch_size.max(1);
    let (mut loss_sum, mut predictions, mut references) = (0f64, Vec::new(), Vec::new());
    for chunk in data.chunks(batch_size) {
        let rows: Vec<&Tokenized> = chunk.iter().collect();
        let batch = tuner.model.batch(&rows, device)?;
        let logits = tuner.model.logits(&batch, false)?;
        let loss = tuner.model.loss(&logits, &batch)?;
        loss_sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        let best = logits.argmax(D::Minus1)?;
        match tuner.model.head() {
            HeadKind::Sequence => {
                predictions.extend(best.to_vec1::<u32>()?.into_iter().map(|p| vec![p]));
            }
            HeadKind::Token => {
                for (row, best) in chunk.iter().zip(best.to_vec2::<u32>()?) {
                    predictions.push(
                        row.labels
                            .iter()
                            .zip(best)
                            .filter(|(l, _)| **l != IGNORE_LABEL)
                            .map(|(_, p)| p)
                            .collect(),
                    );
                }
            }
        }
        references.extend(chunk.iter().map(|r| {
            r.labels
                .iter()
                .filter(|l| **l != IGNORE_LABEL)
                .map(|&l| l as u32)
                .collect::<Vec<u32>>()
        }));
    }
    let mut out = task.metrics(&tuner.model.labels, &predictions, &references)?;
    out.insert("loss".to_string(), loss_sum / data.len().max(1) as f64);
    Ok(out)
}

/// The examples of epoch `epoch` in training order (a seeded permutation per epoch).
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B54A32D192ED03),
    ));
    order
}

/// Which parameters a run trains.
fn train_rule(cfg: &FineTuneConfig) -> impl Fn(&FineTuneModel, &str) -> bool + '_ {
    move |m: &FineTuneModel, name: &str| {
        if m.is_head(name) {
            return true;
        }
        if cfg.freeze_base {
            return false;
        }
        match cfg.train_last_layers {
            None => true,
            Some(n) => match m.layer_of(name) {
                Some(layer) => layer + n >= m.num_layers(),
                // Embeddings stay frozen; the pooler, which sits above the layers, trains.
                None => m
                    .spec
                    .pooler
                    .as_deref()
                    .is_some_and(|p| starts_module(name, p)),
            },
        }
    }
}

fn read_state(path: &Path) -> Result<FineTuneState> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::file(
            path,
            format!("cannot resume: {e} (no checkpoint in this output directory)"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, e))
}

/// Fine-tunes (or resumes) the model of `task` as its settings say, on `device`. `stop`
/// ends the run early with a checkpoint (Ctrl-C); `on_event` receives progress.
pub fn fine_tune(
    task: &dyn FineTuneTask,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&FineTuneEvent),
    device: &Device,
) -> Result<FineTuneRun> {
    let cfg = task.settings();
    cfg.validate(task.metric_names())?;
    task.validate()?;
    let settings = task.settings_json()?;
    let out = cfg.out.clone();
    let ckpt = out.join("checkpoint");
    let state_path = ckpt.join("training_state.json");
    let previous = if resume {
        let prev = read_state(&state_path)?;
        if let (Some(old), Some(new)) = (prev.config.as_object(), settings.as_object()) {
            if let Some((k, _)) = new.iter().find(|(k, v)| old.get(*k) != Some(v)) {
                return Err(Error::file(
                    &state_path,
                    format!(
                        "the run was started with {k} = {}, now {} is given; resume with the same settings (nothing was overwritten)",
                        old.get(k).cloned().unwrap_or_default(),
                        new[k]
                    ),
                ));
            }
        }
        for (file, sum) in &prev.checksums {
            if &file_checksum(&ckpt.join(file))? != sum {
                return Err(Error::file(
                    ckpt.join(file),
                    "does not belong to the checkpoint in training_state.json (an interrupted save?)",
                ));
            }
        }
        Some(prev)
    } else {
        if state_path.exists() {
            return Err(Error::file(
                &out,
                "already holds a training run; pass --resume to continue it or choose another --out (nothing was overwritten)",
            ));
        }
        None
    };

    let model_dir = crate::models::hub::resolve(&cfg.model)?;
    let tokenizer = AutoTokenizer::from_dir(&model_dir)?;
    let model_max = PretrainedConfig::from_dir(&model_dir)?
        .encoder_spec()?
        .max_length;
    let max_length = cfg.max_length.unwrap_or(model_max).min(model_max);
    let TaskData {
        labels,
        train: train_tok,
        eval: eval_tok,
    } = task.load_data(&tokenizer, max_length)?;
    if let Some(prev) = &previous {
        if prev.labels != labels {
            return Err(Error::file(
                &state_path,
                format!(
                    "the run was trained on labels {:?}, the data now has {labels:?}",
                    prev.labels
                ),
            ));
        }
    }
    let model = FineTuneModel::from_pretrained(task.head(), &model_dir, &labels, cfg.seed, device)?;

    let parameters = model
        .vars
        .values()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    let mut tuner = FineTuner::new(
        model,
        train_rule(cfg),
        AdamWConfig {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_epsilon,
            weight_decay: cfg.weight_decay,
        },
        cfg.max_grad_norm,
    )?;
    let mut step = 0;
    let mut best = None;
    let mut patience_used = 0;
    if let Some(prev) = &previous {
        tuner
            .model
            .load_parameters(&ckpt.join("model.safetensors"))?;
        tuner
            .opt
            .load_state(&ckpt.join("optimizer.safetensors"), prev.step, device)?;
        step = prev.step;
        best = prev.best.clone();
        patience_used = prev.evals_without_improvement;
        if prev.early_stopped {
            return Ok(FineTuneRun {
                out,
                steps: step,
                best,
                labels,
            });
        }
    }

    let n = train_tok.len();
    let steps_per_epoch = n.div_ceil(cfg.batch_size) as u64;
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (total as f64 * cfg.warmup_ratio).ceil() as u64;
    let evaluating = !eval_tok.is_empty() && cfg.eval_strategy != "no";
    on_event(&FineTuneEvent::Started {
        start_step: step,
        max_steps: total,
        steps_per_epoch,
        parameters,
        trainable: tuner.trainable_parameters(),
        train_examples: n,
        eval_examples: eval_tok.len(),
        labels: labels.clone(),
    });

    // A fresh run's directory does not exist yet; the log is its first file.
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e))?;
    let mut log = LogWriter::open(&out.join("log.jsonl"), step)?;
    let key_metric = cfg.metric[0].clone();
    let better = |new: f64, old: f64| {
        if key_metric == "loss" {
            new < old
        } else {
            new > old
        }
    };
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    let mut window = (Instant::now(), 0usize);
    let mut early_stopped = false;
    let save = |tuner: &FineTuner, step, best: &Option<BestEval>, used, early| -> Result<()> {
        let state = FineTuneState {
            step,
            config: settings.clone(),
            labels: labels.clone(),
            best: best.clone(),
            evals_without_improvement: used,
            early_stopped: early,
            checksums: HashMap::new(),
        };
        save_state(&ckpt, tuner, state)
    };
    let mut last_saved = step;
    while step < total {
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(n, cfg.seed, epoch);
            order_epoch = epoch;
        }
        let b = (step % steps_per_epoch) as usize;
        let rows: Vec<&Tokenized> = order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(n)]
            .iter()
            .map(|&i| &train_tok[i])
            .collect();
        let batch = tuner.model.batch(&rows, device)?;
        // Dropout masks depend only on (seed, step): a resumed run draws the same ones.
        crate::nn::dropout::seed(cfg.seed.wrapping_mul(0x9E3779B97F4A7C15) ^ step);
        let lr = linear_schedule(step, cfg.lr, warmup, total);
        let stats = tuner.step(&batch, lr)?;
        step += 1;
        window.1 += rows.len();
        if !stats.loss.is_finite() {
            return Err(Error::Invalid(format!(
                "training diverged at step {step}: loss is {}; lower --lr",
                stats.loss
            )));
        }
        let epoch_f = step as f64 / steps_per_epoch as f64;
        log.append(serde_json::json!({
            "step": step, "epoch": epoch_f, "loss": stats.loss, "lr": lr, "grad_norm": stats.grad_norm
        }))?;
        if step % cfg.log_every == 0 || step == total {
            on_event(&FineTuneEvent::Step {
                step,
                epoch: epoch_f,
                loss: stats.loss,
                lr,
                grad_norm: stats.grad_norm,
                examples_per_sec: window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9),
            });
            window = (Instant::now(), 0);
        }
        let stopping = stop.load(Ordering::SeqCst) || step == total;
        let eval_now = evaluating
            && match cfg.eval_strategy.as_str() {
                "epoch" => step % steps_per_epoch == 0,
                _ => step % cfg.eval_steps == 0 || step == total,
            };
        if eval_now {
            let metrics = evaluate(&tuner, task, &eval_tok, device)?;
            let value = metrics[&key_metric];
            let improved = best
                .as_ref()
                .is_none_or(|b: &BestEval| better(value, b.value));
            if improved {
                tuner.model.save_pretrained(&out, &model_dir)?;
                best = Some(BestEval {
                    step,
                    metric: key_metric.clone(),
                    value,
                    metrics: metrics.clone(),
                });
                patience_used = 0;
            } else {
                patience_used += 1;
            }
            let mut entry = serde_json::json!({ "step": step, "epoch": epoch_f });
            for (k, v) in &metrics {
                entry[format!("eval_{k}")] = (*v).into();
            }
            log.append(entry)?;
            log.plot(&out.join("loss.png"), "loss", "eval_loss")?;
            crate::viz::loss_curves_png(
                &out.join("metric.png"),
                &[],
                log.series(&format!("eval_{key_metric}")),
            )?;
            on_event(&FineTuneEvent::Eval {
                step,
                epoch: epoch_f,
                metrics,
                best: improved,
            });
            early_stopped = cfg
                .early_stopping_patience
                .is_some_and(|p| patience_used >= p);
        }
        let periodic = cfg.save_steps > 0 && step % cfg.save_steps == 0;
        if eval_now || periodic || stopping || early_stopped {
            save(&tuner, step, &best, patience_used, early_stopped)?;
            last_saved = step;
            on_event(&FineTuneEvent::Saved {
                step,
                path: out.clone(),
            });
        }
        if early_stopped {
            on_event(&FineTuneEvent::EarlyStopped { step });
            break;
        }
        if stopping {
            break;
        }
    }
    if last_saved != step {
        save(&tuner, step, &best, patience_used, early_stopped)?;
    }
    if !evaluating && step == total {
        tuner.model.save_pretrained(&out, &model_dir)?;
    }
    Ok(FineTuneRun {
        out,
        steps: step,
        best,
        labels,
    })
}

/// Writes the resumable checkpoint: the parameters, the optimizer state, then the state
/// naming both files' checksums.
fn save_state(ckpt: &Path, tuner: &FineTuner, mut state: FineTuneState) -> Result<()> {
    let save_tensors = |name: &str, tensors: HashMap<String, Tensor>| -> Result<()> {
        atomic_write_with(&ckpt.join(name), |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| Error::file(tmp, e))
        })
    };
    save_tensors("model.safetensors", tuner.model.tensors())?;
    save_tensors("optimizer.safetensors", tuner.opt.state_tensors())?;
    for f in ["model.safetensors", "optimizer.safetensors"] {
        state
            .checksums
            .insert(f.to_string(), file_checksum(&ckpt.join(f))?);
    }
    // Written last: a checkpoint counts only once its state names its files' checksums.
    atomic_write(
        &ckpt.join("training_state.json"),
        &serde_json::to_vec_pretty(&state).map_err(|e| Error::Invalid(e.to_string()))?,
    )
}
