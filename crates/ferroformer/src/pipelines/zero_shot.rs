//! `zero-shot-classification`: classifies a text into labels chosen at run time, by asking an
//! NLI model whether the text entails "This example is {label}." for every label.

use std::path::Path;

use serde::Serialize;

use super::driver::{self, require_labels, EncoderRunner, PipelineTask, Prepared};
use super::{argsort_desc, softmax, PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::models::tokenizer::{EncodeOptions, Encoding, TruncationStrategy};
use crate::models::{AutoModelForSequenceClassification, PretrainedConfig};

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
    runner: EncoderRunner<AutoModelForSequenceClassification>,
    entailment_id: usize,
    contradiction_id: usize,
}

/// The options of one run, resolved.
pub(crate) struct Params {
    labels: Vec<String>,
    /// One hypothesis per label.
    hypotheses: Vec<String>,
    /// Score each label on its own (entailment against contradiction).
    independent: bool,
}

impl ZeroShotPipeline {
    /// Loads the tokenizer and the NLI model; its `label2id` must have a label starting with
    /// "entail", with an index among the model's labels.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let model_config = require_labels(dir, "zero-shot-classification")?;
        let (entailment_id, contradiction_id) = nli_labels(&model_config)?;
        let runner = EncoderRunner::<AutoModelForSequenceClassification>::from_dir(dir, config)?;
        Ok(Self {
            runner,
            entailment_id,
            contradiction_id,
        })
    }

    /// Classifies every text into the candidate labels.
    pub fn run(&self, texts: &[&str], options: &ZeroShotOptions) -> Result<Vec<ZeroShotOutput>> {
        driver::run(self, texts, options, self.runner.config.batch_size)
    }
}

/// The entailment index (the label starting with "entail") and the contradiction index
/// (the first label's, or the last when entailment is first), both checked against the
/// number of labels.
fn nli_labels(config: &PretrainedConfig) -> Result<(usize, usize)> {
    let n = config.num_labels;
    let (label, entail) = config
        .label2id
        .iter()
        .find(|(label, _)| label.to_lowercase().starts_with("entail"))
        .ok_or_else(|| {
            Error::file(
                config.source(),
                "`label2id`: zero-shot-classification needs an NLI model, and no label starts \
                 with \"entail\"",
            )
        })?;
    if *entail >= n {
        return Err(Error::file(
            config.source(),
            format!(
                "`label2id`: {label:?} has index {entail}, but the model has {n} labels \
                 (indices 0..{n})"
            ),
        ));
    }
    let contradiction = if *entail == 0 { n - 1 } else { 0 };
    Ok((*entail, contradiction))
}

impl PipelineTask for ZeroShotPipeline {
    type Input<'a> = &'a str;
    type Options = ZeroShotOptions;
    type Params = Params;
    type Row = Encoding;
    /// The text.
    type State = String;
    type RowOutput = Vec<f32>;
    type Output = ZeroShotOutput;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::ZeroShotClassification)
    }

    fn params(&self, options: &ZeroShotOptions) -> Result<Params> {
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
        Ok(Params {
            labels: labels.clone(),
            hypotheses: labels.iter().map(|l| template.replace("{}", l)).collect(),
            independent: options.multi_label || labels.len() == 1,
        })
    }

    /// One row per (text, hypothesis) pair.
    fn preprocess(&self, text: &str, params: &Params) -> Result<Prepared<String, Encoding>> {
        let opts = EncodeOptions {
            // Only the text is cut, so the hypothesis always survives.
            truncation: TruncationStrategy::OnlyFirst,
            max_length: Some(self.runner.max_len),
            ..EncodeOptions::default()
        };
        let pairs: Vec<(&str, &str)> = params
            .hypotheses
            .iter()
            .map(|h| (text, h.as_str()))
            .collect();
        let rows = self.runner.tokenizer.encode_pair_batch(&pairs, &opts)?;
        Ok(Prepared::new(rows.encodings, text.to_string()))
    }

    fn forward(&self, rows: &[Encoding], _: &Params) -> Result<Vec<Vec<f32>>> {
        let (batch, logits) = self.runner.forward(rows)?;
        batch.rows2(&logits)
    }

    fn postprocess(
        &self,
        text: String,
        rows: Vec<(Encoding, Vec<f32>)>,
        params: &Params,
    ) -> Result<ZeroShotOutput> {
        let logit = |l: &[f32], i: usize| {
            l.get(i).copied().ok_or_else(|| {
                Error::Invalid(format!(
                    "zero-shot-classification: the model returned {} logits, label {i} has none",
                    l.len()
                ))
            })
        };
        let (entail, contradiction) = (self.entailment_id, self.contradiction_id);
        let scores: Vec<f32> = if params.independent {
            rows.iter()
                .map(|(_, l)| Ok(softmax(&[logit(l, contradiction)?, logit(l, entail)?])[1]))
                .collect::<Result<_>>()?
        } else {
            let entailment = rows
                .iter()
                .map(|(_, l)| logit(l, entail))
                .collect::<Result<Vec<_>>>()?;
            softmax(&entailment)
        };
        let order = argsort_desc(&scores);
        Ok(ZeroShotOutput {
            sequence: text,
            labels: order
                .iter()
                .filter_map(|&i| params.labels.get(i).cloned())
                .collect(),
            scores: order.iter().map(|&i| scores[i]).collect(),
        })
    }
}
