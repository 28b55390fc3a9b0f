//! `train classifier`: fine-tuning a sequence-classification head on a pretrained encoder
//! with [`super::finetune`]'s loop. This file holds what is the task's own: its settings
//! (the text and label columns, the averaging of F1), reading and tokenizing labelled texts
//! (CSV, TSV or JSONL, see [`super::labelled_data`]) and the classification metrics.
//!
//! The output directory is a Hugging Face checkpoint that `transformers`'
//! `AutoModelForSequenceClassification` and our `text-classification` pipeline load.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::finetune::{
    fine_tune, FineTuneConfig, FineTuneEvent, FineTuneRun, FineTuneTask, HeadKind, TaskData,
    Tokenized,
};
use super::labelled_data::{label_ids, label_set, read_examples, split_off, Columns, Example};
use crate::error::{Error, Result};
use crate::metrics::classification::{self, Average, ClassificationOptions};
use crate::models::tokenizer::{EncodeOptions, TruncationStrategy};
use crate::models::AutoTokenizer;

/// Everything a sequence-classification run needs: the shared settings (flattened: every
/// key is a top-level TOML key and a flag) and the task's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassifierConfig {
    /// The settings every fine-tuning run shares.
    #[serde(flatten)]
    pub common: FineTuneConfig,
    /// Column (JSONL field) holding the text.
    pub text_column: String,
    /// Column holding the second text of a pair, if any.
    pub text_pair_column: Option<String>,
    /// Column holding the label (a name or an integer id).
    pub label_column: String,
    /// Averaging of f1/precision/recall: binary, micro, macro, weighted; default binary for
    /// two labels (class 1 positive), macro otherwise.
    pub average: Option<String>,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            common: FineTuneConfig::default(),
            text_column: "text".into(),
            text_pair_column: None,
            label_column: "label".into(),
            average: None,
        }
    }
}

/// The metrics an evaluation can compute.
pub const CLASSIFIER_METRICS: &[&str] = &["accuracy", "f1", "precision", "recall", "loss"];

impl ClassifierConfig {
    /// Reads a TOML file (unknown keys are errors with a suggestion).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        super::config::from_toml_file(path)
    }

    /// Sets one key from its string form (a `--flag value` or `key=value`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        super::config::set_key(self, key, value)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<()> {
        self.common.validate(CLASSIFIER_METRICS)?;
        if let Some(a) = &self.average {
            a.parse::<Average>()?;
        }
        Ok(())
    }
}

impl FineTuneTask for ClassifierConfig {
    fn settings(&self) -> &FineTuneConfig {
        &self.common
    }

    fn settings_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::Invalid(e.to_string()))
    }

    fn head(&self) -> HeadKind {
        HeadKind::Sequence
    }

    fn metric_names(&self) -> &'static [&'static str] {
        CLASSIFIER_METRICS
    }

    fn validate(&self) -> Result<()> {
        ClassifierConfig::validate(self)
    }

    fn load_data(&self, tokenizer: &AutoTokenizer, max_length: usize) -> Result<TaskData> {
        let cfg = &self.common;
        let columns = Columns {
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: self.label_column.clone(),
        };
        let all = read_examples(&cfg.data, &columns)?;
        let (train, eval) = match &cfg.eval_data {
            Some(p) => (all, read_examples(p, &columns)?),
            None => split_off(all, cfg.val_fraction, cfg.seed)?,
        };
        let labels = label_set(&train);
        let train_ids = label_ids(&train, &labels, &self.label_column)?;
        let eval_ids = label_ids(&eval, &labels, &self.label_column)?;
        Ok(TaskData {
            train: tokenize(tokenizer, &train, &train_ids, max_length)?,
            eval: tokenize(tokenizer, &eval, &eval_ids, max_length)?,
            labels,
        })
    }

    fn metrics(
        &self,
        labels: &[String],
        predictions: &[Vec<u32>],
        references: &[Vec<u32>],
    ) -> Result<BTreeMap<String, f64>> {
        let flat = |rows: &[Vec<u32>]| -> Vec<String> {
            rows.iter().flatten().map(|p| p.to_string()).collect()
        };
        let (predictions, references) = (flat(predictions), flat(references));
        let average = match &self.average {
            Some(a) => a.parse()?,
            None if labels.len() == 2 => Average::Binary,
            None => Average::Macro,
        };
        let opts = ClassificationOptions {
            average,
            pos_label: "1".into(),
        };
        let mut out = BTreeMap::new();
        for m in &self.common.metric {
            let v = match m.as_str() {
                "accuracy" => classification::accuracy(&predictions, &references)?.accuracy,
                "f1" => classification::f1(&predictions, &references, &opts)?.f1,
                "precision" => {
                    classification::precision(&predictions, &references, &opts)?.precision
                }
                "recall" => classification::recall(&predictions, &references, &opts)?.recall,
                _ => continue,
            };
            out.insert(m.clone(), v);
        }
        Ok(out)
    }
}

/// Tokenizes examples (truncated to `max_length`, special tokens added, no padding); each
/// row's label is its class id in `ids`.
pub fn tokenize(
    tokenizer: &AutoTokenizer,
    examples: &[Example],
    ids: &[usize],
    max_length: usize,
) -> Result<Vec<Tokenized>> {
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(max_length),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(examples.len());
    for (chunk, labels) in examples.chunks(256).zip(ids.chunks(256)) {
        let enc = if chunk[0].text_pair.is_some() {
            let pairs: Vec<(&str, &str)> = chunk
                .iter()
                .map(|e| (e.text.as_str(), e.text_pair.as_deref().unwrap_or("")))
                .collect();
            tokenizer.encode_pair_batch(&pairs, &opts)?
        } else {
            let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
            tokenizer.encode_batch(&texts, &opts)?
        };
        for (e, &label) in enc.encodings.into_iter().zip(labels) {
            out.push(Tokenized {
                ids: e.ids,
                type_ids: e.type_ids,
                labels: vec![label as i64],
            });
        }
    }
    Ok(out)
}

/// Fine-tunes (or resumes) a sequence classifier as `cfg` says, on `device`. `stop` ends
/// the run early with a checkpoint (Ctrl-C); `on_event` receives progress.
pub fn train_classifier(
    cfg: &ClassifierConfig,
    resume: bool,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&FineTuneEvent),
    device: &Device,
) -> Result<FineTuneRun> {
    fine_tune(cfg, resume, stop, on_event, device)
}
