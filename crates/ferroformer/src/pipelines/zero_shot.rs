//! `zero-shot-classification`: classifies a text into labels chosen at run time, by asking an
//! NLI model whether the text entails "This example is {label}." for every label.

use std::path::Path;

use serde::Serialize;

use super::{argsort_desc, rows2, softmax, PipelineConfig, Runner};
use crate::error::{Error, Result};
use crate::models::tokenizer::{EncodeOptions, PaddingStrategy, TruncationStrategy};
use crate::models::AutoModelForSequenceClassification;

/// Options of `zero-shot-classification`.
#[derive(Debug, Clone)]
pub struct ZeroShotOptions {
    /// The labels to choose from.
    pub candidate_labels: Vec<String>,
    /// The hypothesis, with `{}` where the label goes.
    pub hypothesis_template: String,
    /// Labels are independent (entailment vs contradiction per label) rather than
    /// competing (softmax of entailment over the labels).
    pub multi_label: bool,
}

impl Default for ZeroShotOptions {
    fn default() -> Self {
        Self {
            candidate_labels: Vec::new(),
            hypothesis_template: "This example is {}.".into(),
            multi_label: false,
        }
    }
}

/// The result for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroShotOutput {
    /// The text.
    pub sequence: String,
    /// The labels, best first.
    pub labels: Vec<String>,
    /// Their scores.
    pub scores: Vec<f32>,
}

/// An NLI sequence classifier used for zero-shot classification.
pub struct ZeroShotPipeline {
    runner: Runner<AutoModelForSequenceClassification>,
    entailment_id: usize,
}

impl ZeroShotPipeline {
    /// Loads the tokenizer and the NLI model; its `label2id` must have a label starting with
    /// "entail".
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let runner = Runner::<AutoModelForSequenceClassification>::from_dir(dir, config)?;
        let entailment_id = runner
            .model
            .config()
            .label2id
            .iter()
            .find(|(label, _)| label.to_lowercase().starts_with("entail"))
            .map(|(_, &id)| id)
            .ok_or_else(|| {
                Error::file(
                    dir.join("config.json"),
                    "zero-shot-classification needs an NLI model: no label starting with \
                     \"entail\" in label2id",
                )
            })?;
        Ok(Self {
            runner,
            entailment_id,
        })
    }

    /// Classifies every text into the candidate labels.
    pub fn run(&self, texts: &[&str], options: &ZeroShotOptions) -> Result<Vec<ZeroShotOutput>> {
        let labels = &options.candidate_labels;
        if labels.is_empty() {
            return Err(Error::Invalid(
                "zero-shot-classification needs at least one candidate label".into(),
            ));
        }
        let template = &options.hypothesis_template;
        if !template.contains("{}") {
            return Err(Error::Invalid(format!(
                "the hypothesis template {template:?} has no `{{}}` where the label goes"
            )));
        }
        let num_labels = self.runner.model.config().num_labels;
        let entail = self.entailment_id;
        // The contradiction logit is the first label's, or the last when entailment is first.
        let contradiction = if entail == 0 { num_labels - 1 } else { 0 };
        let hypotheses: Vec<String> = labels.iter().map(|l| template.replace("{}", l)).collect();
        let opts = EncodeOptions {
            // Only the text is cut, so the hypothesis always survives.
            truncation: TruncationStrategy::OnlyFirst,
            max_length: Some(self.runner.max_len),
            padding: PaddingStrategy::Longest,
            ..EncodeOptions::default()
        };
        let mut out = Vec::with_capacity(texts.len());
        for &text in texts {
            // One forward pass per text over all its (text, hypothesis) pairs, in chunks.
            let mut logits = Vec::with_capacity(labels.len());
            for chunk in hypotheses.chunks(self.runner.config.batch_size.max(1)) {
                let pairs: Vec<(&str, &str)> = chunk.iter().map(|h| (text, h.as_str())).collect();
                let batch = self.runner.tokenizer.encode_pair_batch(&pairs, &opts)?;
                logits.extend(rows2(&self.runner.forward(&batch)?)?);
            }
            let scores: Vec<f32> = if options.multi_label || labels.len() == 1 {
                logits
                    .iter()
                    .map(|l| softmax(&[l[contradiction], l[entail]])[1])
                    .collect()
            } else {
                softmax(&logits.iter().map(|l| l[entail]).collect::<Vec<_>>())
            };
            let order = argsort_desc(&scores);
            out.push(ZeroShotOutput {
                sequence: text.to_string(),
                labels: order.iter().map(|&i| labels[i].clone()).collect(),
                scores: order.iter().map(|&i| scores[i]).collect(),
            });
        }
        Ok(out)
    }
}
