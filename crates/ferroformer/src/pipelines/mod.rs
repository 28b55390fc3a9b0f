//! Task pipelines with Hugging Face `pipeline(...)` semantics: a tokenizer, a model with the
//! task's head, and the task's post-processing, behind one call.
//!
//! Every pipeline takes a batch of inputs and returns one output per input, in order, shaped
//! like what `transformers`' pipeline returns for that single input (the outputs serialize to
//! the same JSON). Inputs are run in batches of `batch_size` with padding; the answer for an
//! input never depends on what it was batched with.
//!
//! ```no_run
//! use ferroformer::pipelines::{pipeline, PipelineInput, TaskOptions};
//!
//! let classifier = pipeline("text-classification", "path/to/checkpoint")?;
//! let out = classifier.run(
//!     &[PipelineInput::text("I love this movie!")],
//!     &TaskOptions::default(),
//! )?;
//! println!("{}", serde_json::to_string(&out)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod feature_extraction;
pub mod fill_mask;
pub mod inputs;
pub mod question_answering;
pub mod text_classification;
pub mod text_generation;
pub mod token_classification;
pub mod zero_shot;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::models::encoder_model::EncoderOutput;
use crate::models::tokenizer::{
    AutoTokenizer, BatchEncoding, EncodeOptions, PaddingStrategy, TruncationStrategy,
};
use crate::models::{
    AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification, AutoModelForTokenClassification, LoadOptions,
    PretrainedConfig,
};

pub use feature_extraction::{FeatureExtractionOptions, FeatureExtractionPipeline, Pooling};
pub use fill_mask::{FillMaskOptions, FillMaskPipeline};
pub use question_answering::{QuestionAnsweringOptions, QuestionAnsweringPipeline};
pub use text_classification::{
    ClassificationFunction, TextClassificationOptions, TextClassificationPipeline, TopK,
};
pub use text_generation::{GeneratedText, TextGenerationOptions, TextGenerationPipeline};
pub use token_classification::{
    AggregationStrategy, TokenClassificationOptions, TokenClassificationPipeline,
};
pub use zero_shot::{ZeroShotOptions, ZeroShotPipeline};

/// The tasks, by their canonical `transformers` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `text-classification` (alias `sentiment-analysis`).
    TextClassification,
    /// `token-classification` (alias `ner`).
    TokenClassification,
    /// `question-answering`.
    QuestionAnswering,
    /// `fill-mask`.
    FillMask,
    /// `feature-extraction`.
    FeatureExtraction,
    /// `zero-shot-classification`.
    ZeroShotClassification,
    /// `text-generation`.
    TextGeneration,
}

impl Task {
    /// Every task name the pipelines accept, aliases included.
    pub const NAMES: &'static [&'static str] = &[
        "text-classification",
        "sentiment-analysis",
        "token-classification",
        "ner",
        "question-answering",
        "fill-mask",
        "feature-extraction",
        "zero-shot-classification",
        "text-generation",
    ];

    /// Parses a task name or alias; an unknown name lists the known ones.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "text-classification" | "sentiment-analysis" => Self::TextClassification,
            "token-classification" | "ner" => Self::TokenClassification,
            "question-answering" => Self::QuestionAnswering,
            "fill-mask" => Self::FillMask,
            "feature-extraction" => Self::FeatureExtraction,
            "zero-shot-classification" => Self::ZeroShotClassification,
            "text-generation" => Self::TextGeneration,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown task `{other}`; known tasks: {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::TextClassification => "text-classification",
            Self::TokenClassification => "token-classification",
            Self::QuestionAnswering => "question-answering",
            Self::FillMask => "fill-mask",
            Self::FeatureExtraction => "feature-extraction",
            Self::ZeroShotClassification => "zero-shot-classification",
            Self::TextGeneration => "text-generation",
        }
    }
}

/// One pipeline input: a text, or a question with its context.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum PipelineInput {
    /// A question and the context to find its answer in.
    Question {
        /// The question.
        question: String,
        /// The text holding the answer.
        context: String,
    },
    /// A plain text.
    Text {
        /// The text.
        text: String,
    },
}

impl PipelineInput {
    /// A plain text input.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// A question-answering input.
    pub fn question(question: impl Into<String>, context: impl Into<String>) -> Self {
        Self::Question {
            question: question.into(),
            context: context.into(),
        }
    }

    /// The text, or an error naming the task when this is a question.
    pub fn as_text(&self, task: Task) -> Result<&str> {
        match self {
            Self::Text { text } => Ok(text),
            Self::Question { .. } => Err(Error::Invalid(format!(
                "{} takes texts, not question/context pairs",
                task.name()
            ))),
        }
    }
}

/// Where and how a pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Inputs per forward pass.
    pub batch_size: usize,
    /// Compute dtype (f32 unless asked).
    pub dtype: DType,
    /// Device.
    pub device: Device,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            batch_size: 8,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// Options of every task, one field per task; a pipeline reads its own.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// `text-classification`.
    pub text_classification: TextClassificationOptions,
    /// `token-classification`.
    pub token_classification: TokenClassificationOptions,
    /// `question-answering`.
    pub question_answering: QuestionAnsweringOptions,
    /// `fill-mask`.
    pub fill_mask: FillMaskOptions,
    /// `feature-extraction`.
    pub feature_extraction: FeatureExtractionOptions,
    /// `zero-shot-classification`.
    pub zero_shot: ZeroShotOptions,
    /// `text-generation`.
    pub text_generation: TextGenerationOptions,
}

/// A loaded pipeline of any task.
#[allow(clippy::large_enum_variant)]
pub enum Pipeline {
    /// `text-classification`.
    TextClassification(TextClassificationPipeline),
    /// `token-classification`.
    TokenClassification(TokenClassificationPipeline),
    /// `question-answering`.
    QuestionAnswering(QuestionAnsweringPipeline),
    /// `fill-mask`.
    FillMask(FillMaskPipeline),
    /// `feature-extraction`.
    FeatureExtraction(FeatureExtractionPipeline),
    /// `zero-shot-classification`.
    ZeroShotClassification(ZeroShotPipeline),
    /// `text-generation`.
    TextGeneration(TextGenerationPipeline),
}

/// Loads the pipeline for `task` (a name or alias) on `model` (a directory, a file, or a hub
/// id `org/name[@revision]`), on the CPU in f32 with batches of 8.
pub fn pipeline(task: &str, model: &str) -> Result<Pipeline> {
    pipeline_with(task, model, &PipelineConfig::default())
}

/// [`pipeline`] with an explicit [`PipelineConfig`].
pub fn pipeline_with(task: &str, model: &str, config: &PipelineConfig) -> Result<Pipeline> {
    let task = Task::from_name(task)?;
    let dir = crate::models::hub::resolve(model)?;
    let dir = checkpoint_dir(&dir)?;
    Ok(match task {
        Task::TextClassification => {
            Pipeline::TextClassification(TextClassificationPipeline::from_dir(&dir, config)?)
        }
        Task::TokenClassification => {
            Pipeline::TokenClassification(TokenClassificationPipeline::from_dir(&dir, config)?)
        }
        Task::QuestionAnswering => {
            Pipeline::QuestionAnswering(QuestionAnsweringPipeline::from_dir(&dir, config)?)
        }
        Task::FillMask => Pipeline::FillMask(FillMaskPipeline::from_dir(&dir, config)?),
        Task::FeatureExtraction => {
            Pipeline::FeatureExtraction(FeatureExtractionPipeline::from_dir(&dir, config)?)
        }
        Task::ZeroShotClassification => {
            Pipeline::ZeroShotClassification(ZeroShotPipeline::from_dir(&dir, config)?)
        }
        Task::TextGeneration => {
            Pipeline::TextGeneration(TextGenerationPipeline::from_dir(&dir, config)?)
        }
    })
}

impl Pipeline {
    /// The task.
    pub fn task(&self) -> Task {
        match self {
            Self::TextClassification(_) => Task::TextClassification,
            Self::TokenClassification(_) => Task::TokenClassification,
            Self::QuestionAnswering(_) => Task::QuestionAnswering,
            Self::FillMask(_) => Task::FillMask,
            Self::FeatureExtraction(_) => Task::FeatureExtraction,
            Self::ZeroShotClassification(_) => Task::ZeroShotClassification,
            Self::TextGeneration(_) => Task::TextGeneration,
        }
    }

    /// Runs every input and returns one JSON value per input, in order, shaped like
    /// `transformers`' pipeline output for that input.
    pub fn run(
        &self,
        inputs: &[PipelineInput],
        options: &TaskOptions,
    ) -> Result<Vec<serde_json::Value>> {
        fn texts(inputs: &[PipelineInput], task: Task) -> Result<Vec<&str>> {
            inputs.iter().map(|i| i.as_text(task)).collect()
        }
        let task = self.task();
        match self {
            Self::TextClassification(p) => {
                to_json(p.run(&texts(inputs, task)?, &options.text_classification)?)
            }
            Self::TokenClassification(p) => {
                to_json(p.run(&texts(inputs, task)?, &options.token_classification)?)
            }
            Self::QuestionAnswering(p) => {
                let pairs = inputs
                    .iter()
                    .map(|i| match i {
                        PipelineInput::Question { question, context } => {
                            Ok((question.as_str(), context.as_str()))
                        }
                        PipelineInput::Text { .. } => Err(Error::Invalid(
                            "question-answering needs a question and a context for every input"
                                .into(),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?;
                to_json(p.run(&pairs, &options.question_answering)?)
            }
            Self::FillMask(p) => to_json(p.run(&texts(inputs, task)?, &options.fill_mask)?),
            Self::FeatureExtraction(p) => {
                to_json(p.run(&texts(inputs, task)?, &options.feature_extraction)?)
            }
            Self::ZeroShotClassification(p) => {
                to_json(p.run(&texts(inputs, task)?, &options.zero_shot)?)
            }
            Self::TextGeneration(p) => {
                to_json(p.run(&texts(inputs, task)?, &options.text_generation)?)
            }
        }
    }
}

fn to_json<T: serde::Serialize>(items: Vec<T>) -> Result<Vec<serde_json::Value>> {
    items
        .into_iter()
        .map(|i| serde_json::to_value(i).map_err(|e| Error::Invalid(e.to_string())))
        .collect()
}

/// The directory a checkpoint's files live in (a file path points into it).
fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    match path.parent() {
        Some(p) if path.is_file() => Ok(if p.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            p.to_path_buf()
        }),
        _ => Err(Error::file(path, "not a checkpoint directory or file")),
    }
}

/// A model with a task head that a pipeline runs: every `AutoModel…` class.
pub(crate) trait TaskModel: Sized {
    /// What one forward pass returns.
    type Output;
    /// Loads the checkpoint directory.
    fn load(dir: &Path, options: &LoadOptions) -> Result<Self>;
    /// Its configuration.
    fn config(&self) -> &PretrainedConfig;
    /// One forward pass over a padded batch.
    fn run(&self, ids: &Tensor, mask: &Tensor, types: Option<&Tensor>) -> Result<Self::Output>;
}

macro_rules! task_model {
    ($ty:ty, $out:ty) => {
        impl TaskModel for $ty {
            type Output = $out;
            fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
                <$ty>::from_dir(dir, options)
            }
            fn config(&self) -> &PretrainedConfig {
                <$ty>::config(self)
            }
            fn run(&self, ids: &Tensor, mask: &Tensor, types: Option<&Tensor>) -> Result<$out> {
                self.forward(ids, Some(mask), types)
            }
        }
    };
}
task_model!(AutoModel, EncoderOutput);
task_model!(AutoModelForSequenceClassification, Tensor);
task_model!(AutoModelForTokenClassification, Tensor);
task_model!(AutoModelForQuestionAnswering, (Tensor, Tensor));
task_model!(AutoModelForMaskedLM, Tensor);

/// The part every pipeline shares: the tokenizer, the model with its head, and running
/// inputs through them in padded batches.
pub(crate) struct Runner<M> {
    pub tokenizer: AutoTokenizer,
    pub model: M,
    pub config: PipelineConfig,
    /// The longest input: the smaller of the tokenizer's `model_max_length` and the model's
    /// position table.
    pub max_len: usize,
}

impl<M: TaskModel> Runner<M> {
    /// Loads the tokenizer and the model. Pipelines read only the real tokens of a padded
    /// batch, so the model skips computing the padding.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let tokenizer = AutoTokenizer::from_dir(dir)?;
        let options = LoadOptions {
            dtype: config.dtype,
            device: config.device.clone(),
            skip_padding_outputs: true,
        };
        let model = M::load(dir, &options)?;
        let model_max = model.config().max_position_embeddings;
        let max_len = tokenizer
            .model_max_length()
            .map_or(model_max, |t| t.min(model_max));
        Ok(Self {
            tokenizer,
            model,
            config: config.clone(),
            max_len,
        })
    }

    /// Runs one padded batch; token type ids are passed to the models that have them.
    pub fn forward(&self, batch: &BatchEncoding) -> Result<M::Output> {
        let (ids, mask, types) = batch.to_tensors(&self.config.device)?;
        let types = self.model.config().uses_token_types().then_some(types);
        self.model.run(&ids, &mask, types.as_ref())
    }

    /// Encodes `texts` in chunks of `batch_size` — with special tokens, padding to the
    /// longest row and truncation to `max_len` (`transformers` would fail on longer inputs;
    /// cutting them is what a user of the CLI expects) — and runs each chunk.
    pub fn run_texts(&self, texts: &[&str]) -> Result<Vec<(BatchEncoding, M::Output)>> {
        let opts = EncodeOptions {
            truncation: TruncationStrategy::LongestFirst,
            max_length: Some(self.max_len),
            padding: PaddingStrategy::Longest,
            ..EncodeOptions::default()
        };
        texts
            .chunks(self.config.batch_size.max(1))
            .map(|chunk| {
                let batch = self.tokenizer.encode_batch(chunk, &opts)?;
                let out = self.forward(&batch)?;
                Ok((batch, out))
            })
            .collect()
    }
}

/// Softmax of a row of logits in f64 for the sum, as numpy does in `transformers`'
/// post-processing.
pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Logistic sigmoid.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices of `scores` from highest to lowest (ties keep index order).
pub(crate) fn argsort_desc(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// Rows of a `(batch, n)` f32 tensor.
pub(crate) fn rows2(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Rows of a `(batch, seq, n)` f32 tensor.
pub(crate) fn rows3(t: &Tensor) -> Result<Vec<Vec<Vec<f32>>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec3::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_and_aliases() {
        assert_eq!(
            Task::from_name("sentiment-analysis").unwrap(),
            Task::TextClassification
        );
        assert_eq!(Task::from_name("ner").unwrap(), Task::TokenClassification);
        let err = Task::from_name("summarize-my-life")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("summarize-my-life") && err.contains("fill-mask"),
            "{err}"
        );
    }

    #[test]
    fn softmax_and_argsort() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
        assert_eq!(argsort_desc(&[0.1, 0.7, 0.2]), vec![1, 2, 0]);
    }

    #[test]
    fn inputs_deserialize_from_jsonl_shapes() {
        let q: PipelineInput =
            serde_json::from_str(r#"{"question": "Who?", "context": "Ada."}"#).unwrap();
        assert_eq!(q, PipelineInput::question("Who?", "Ada."));
        let t: PipelineInput = serde_json::from_str(r#"{"text": "hi"}"#).unwrap();
        assert_eq!(t, PipelineInput::text("hi"));
    }
}
