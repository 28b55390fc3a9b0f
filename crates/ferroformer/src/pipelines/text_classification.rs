//! `text-classification` (alias `sentiment-analysis`): one label and score per text, or every
//! label sorted by score.

use std::path::Path;

use super::driver::{self, require_labels, EncoderRunner, PipelineTask, Prepared};
use super::{argsort_desc, sigmoid, softmax, PipelineConfig, PipelineInput, Task};
use crate::error::{Error, Result};
use crate::models::tokenizer::Encoding;
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
    runner: EncoderRunner<AutoModelForSequenceClassification>,
}

/// The options of one run, resolved.
pub(crate) struct Params {
    function: ClassificationFunction,
    top_k: TopK,
}

impl TextClassificationPipeline {
    /// Loads the tokenizer and the model from a checkpoint directory; a config without
    /// labels is an error naming it.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        require_labels(dir, "text-classification")?;
        Ok(Self {
            runner: EncoderRunner::from_dir(dir, config)?,
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

    /// The model's labels in id order (`id2label`, `LABEL_{id}` where it names none).
    pub fn labels(&self) -> Vec<String> {
        let c = self.runner.model.config();
        (0..c.num_labels).map(|id| c.label(id)).collect()
    }

    /// Scores every label of every text (`(texts, num_labels)`), in label-id order.
    pub fn scores(
        &self,
        texts: &[&str],
        function: ClassificationFunction,
    ) -> Result<Vec<Vec<f32>>> {
        let options = TextClassificationOptions {
            top_k: TopK::All,
            function_to_apply: Some(function),
        };
        let params = self.params(&options)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.runner.config.batch_size.max(1)) {
            let rows = chunk
                .iter()
                .map(|text| self.runner.encode_text(text))
                .collect::<Result<Vec<_>>>()?;
            out.extend(
                self.forward(&rows, &params)?
                    .into_iter()
                    .map(|logits| apply(function, logits)),
            );
        }
        Ok(out)
    }

    /// Classifies every text.
    pub fn run(
        &self,
        texts: &[&str],
        options: &TextClassificationOptions,
    ) -> Result<Vec<TextClassificationOutput>> {
        driver::run(self, texts, options, self.runner.config.batch_size)
    }
}

/// Scores from logits.
fn apply(function: ClassificationFunction, logits: Vec<f32>) -> Vec<f32> {
    match function {
        ClassificationFunction::Softmax => softmax(&logits),
        ClassificationFunction::Sigmoid => logits.iter().map(|&x| sigmoid(x)).collect(),
        ClassificationFunction::None => logits,
    }
}

impl PipelineTask for TextClassificationPipeline {
    type Input<'a> = &'a str;
    type Options = TextClassificationOptions;
    type Params = Params;
    type Row = Encoding;
    type State = ();
    type RowOutput = Vec<f32>;
    type Output = TextClassificationOutput;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::TextClassification)
    }

    fn params(&self, options: &TextClassificationOptions) -> Result<Params> {
        let config = self.runner.model.config();
        if config.num_labels == 0 {
            return Err(Error::file(
                config.source(),
                "`num_labels` is 0: the classifier has no labels",
            ));
        }
        Ok(Params {
            function: options
                .function_to_apply
                .unwrap_or_else(|| self.default_function()),
            top_k: options.top_k,
        })
    }

    fn preprocess(&self, text: &str, _: &Params) -> Result<Prepared<(), Encoding>> {
        Ok(Prepared::new(vec![self.runner.encode_text(text)?], ()))
    }

    fn forward(&self, rows: &[Encoding], _: &Params) -> Result<Vec<Vec<f32>>> {
        let (batch, logits) = self.runner.forward(rows)?;
        batch.rows2(&logits)
    }

    fn postprocess(
        &self,
        _: (),
        rows: Vec<(Encoding, Vec<f32>)>,
        params: &Params,
    ) -> Result<TextClassificationOutput> {
        let logits = rows.into_iter().next().map(|(_, l)| l).unwrap_or_default();
        let scores = apply(params.function, logits);
        let config = self.runner.model.config();
        let order = argsort_desc(&scores);
        let ranked = |k: usize| -> Vec<LabelScore> {
            order
                .iter()
                .take(k)
                .map(|&i| LabelScore {
                    label: config.label(i),
                    score: scores[i],
                })
                .collect()
        };
        Ok(match params.top_k {
            TopK::Best => {
                let best = ranked(1).pop().ok_or_else(|| {
                    Error::file(config.source(), "the classifier returned no scores")
                })?;
                TextClassificationOutput::Best(best)
            }
            TopK::All => TextClassificationOutput::Ranked(ranked(scores.len())),
            TopK::K(k) => TextClassificationOutput::Ranked(ranked(k)),
        })
    }
}
