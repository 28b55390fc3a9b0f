//! `text-classification` (alias `sentiment-analysis`): one label and score per text, or every
//! label sorted by score.

use std::path::Path;

use super::{argsort_desc, rows2, sigmoid, softmax, PipelineConfig, Runner};
use crate::error::{Error, Result};
use crate::models::AutoModelForSequenceClassification;

/// How many labels to return, with `transformers`' three behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopK {
    /// No `top_k` given: the best label as a single `{"label", "score"}` object.
    #[default]
    Best,
    /// `top_k=None`: every label, best first, as a list.
    All,
    /// `top_k=k`: the `k` best labels, as a list (even for `k = 1`).
    K(usize),
}

/// The function turning logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassificationFunction {
    /// Softmax over the labels.
    Softmax,
    /// Independent sigmoid per label.
    Sigmoid,
    /// Raw logits.
    None,
}

impl ClassificationFunction {
    /// Parses `softmax`, `sigmoid` or `none`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "softmax" => Ok(Self::Softmax),
            "sigmoid" => Ok(Self::Sigmoid),
            "none" => Ok(Self::None),
            other => Err(Error::Invalid(format!(
                "function_to_apply must be softmax, sigmoid or none, found `{other}`"
            ))),
        }
    }
}

/// Options of `text-classification`.
#[derive(Debug, Clone, Default)]
pub struct TextClassificationOptions {
    /// How many labels to return.
    pub top_k: TopK,
    /// Overrides the function chosen from the config (`problem_type`, `num_labels`).
    pub function_to_apply: Option<ClassificationFunction>,
}

/// A label with its score.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelScore {
    /// The label (`id2label`).
    pub label: String,
    /// Its score.
    pub score: f32,
}

/// The result for one text: the best label, or a list of labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum TextClassificationOutput {
    /// [`TopK::Best`].
    Best(LabelScore),
    /// [`TopK::All`] and [`TopK::K`].
    Ranked(Vec<LabelScore>),
}

/// A sequence classifier with its tokenizer.
pub struct TextClassificationPipeline {
    runner: Runner<AutoModelForSequenceClassification>,
}

impl TextClassificationPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        Ok(Self {
            runner: Runner::from_dir(dir, config)?,
        })
    }

    /// The function applied by default: none for regression, sigmoid for multi-label or a
    /// single label, softmax otherwise (as `transformers`).
    pub fn default_function(&self) -> ClassificationFunction {
        let c = self.runner.model.config();
        match c.problem_type.as_deref() {
            Some("regression") => ClassificationFunction::None,
            Some("multi_label_classification") => ClassificationFunction::Sigmoid,
            _ if c.num_labels == 1 => ClassificationFunction::Sigmoid,
            _ => ClassificationFunction::Softmax,
        }
    }

    /// Scores every label of every text (`(texts, num_labels)`), in label-id order.
    pub fn scores(
        &self,
        texts: &[&str],
        function: ClassificationFunction,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for (_, logits) in self.runner.run_texts(texts)? {
            for row in rows2(&logits)? {
                out.push(match function {
                    ClassificationFunction::Softmax => softmax(&row),
                    ClassificationFunction::Sigmoid => row.iter().map(|&x| sigmoid(x)).collect(),
                    ClassificationFunction::None => row,
                });
            }
        }
        Ok(out)
    }

    /// Classifies every text.
    pub fn run(
        &self,
        texts: &[&str],
        options: &TextClassificationOptions,
    ) -> Result<Vec<TextClassificationOutput>> {
        let function = options
            .function_to_apply
            .unwrap_or_else(|| self.default_function());
        let config = self.runner.model.config();
        if config.num_labels == 0 {
            return Err(Error::file(config.source(), "the classifier has no labels"));
        }
        let label = |i: usize| config.label(i);
        Ok(self
            .scores(texts, function)?
            .into_iter()
            .map(|scores| {
                let order = argsort_desc(&scores);
                let ranked = |k: usize| {
                    order
                        .iter()
                        .take(k)
                        .map(|&i| LabelScore {
                            label: label(i),
                            score: scores[i],
                        })
                        .collect()
                };
                match options.top_k {
                    TopK::Best => TextClassificationOutput::Best(LabelScore {
                        label: label(order[0]),
                        score: scores[order[0]],
                    }),
                    TopK::All => TextClassificationOutput::Ranked(ranked(scores.len())),
                    TopK::K(k) => TextClassificationOutput::Ranked(ranked(k)),
                }
            })
            .collect())
    }
}
