//! Task pipelines with Hugging Face `pipeline(...)` semantics: a tokenizer, a model with the
//! task's head, and the task's post-processing, behind one call.
//!
//! Every pipeline takes a batch of inputs and returns one output per input, in order, shaped
//! like what `transformers`' pipeline returns for that single input (the outputs serialize to
//! the same JSON). Every task runs through one driver (`pipelines/driver.rs`): the task's file says how
//! to preprocess one input into model rows, run a batch of rows (forward) and postprocess an
//! input's row outputs; the driver batches rows by `batch_size` with padding and hands each
//! input its outputs back in order. The answer for an input never depends on what it was
//! batched with.
//!
//! Adding a task is one file with its three steps (an `impl` of the driver's `PipelineTask`)
//! and one line in the `tasks!` registry below.
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

mod driver;
pub mod feature_extraction;
pub mod fill_mask;
pub mod inputs;
pub mod question_answering;
pub mod text2text_generation;
pub mod text_classification;
pub mod text_generation;
pub mod token_classification;
pub mod zero_shot;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use driver::PipelineTask;

pub use feature_extraction::{FeatureExtractionOptions, FeatureExtractionPipeline, Pooling};
pub use fill_mask::{FillMaskOptions, FillMaskPipeline};
pub use question_answering::{QuestionAnsweringOptions, QuestionAnsweringPipeline};
pub use text2text_generation::{
    Seq2SeqPipeline, SummarizationPipeline, Text2TextGenerationPipeline, Text2TextOptions,
    TranslationPipeline,
};
pub use text_classification::{
    ClassificationFunction, TextClassificationOptions, TextClassificationPipeline, TopK,
};
pub use text_generation::{
    generated_text, prepare_prompt, text_generation_config, GeneratedText, TextGenerationOptions,
    TextGenerationPipeline,
};
pub use token_classification::{
    AggregationStrategy, TokenClassificationOptions, TokenClassificationPipeline,
};
pub use zero_shot::{ZeroShotOptions, ZeroShotPipeline};

/// The task registry: from one line per task, the [`Task`] names, the [`TaskOptions`]
/// field, the [`Pipeline`] variant, and loading and running it.
macro_rules! tasks {
    ($(
        $(#[$doc:meta])*
        $variant:ident($pipe:ty, $field:ident: $opts:ty) = $name:literal $(| $alias:literal)*;
    )*) => {
        /// The tasks, by their canonical `transformers` names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Task {
            $($(#[$doc])* $variant,)*
        }

        impl Task {
            /// Every task name the pipelines accept, aliases included.
            pub const NAMES: &'static [&'static str] = &[$($name, $($alias,)*)*];

            /// Parses a task name or alias; an unknown name lists the known ones.
            pub fn from_name(name: &str) -> Result<Self> {
                match name {
                    $($name $(| $alias)* => Ok(Self::$variant),)*
                    // `translation_en_to_de`: the languages are part of the name.
                    other if is_translation_xx_to_yy(other) => Ok(Self::Translation),
                    other => Err(Error::Invalid(format!(
                        "unknown task `{other}`; known tasks: {}",
                        Self::NAMES.join(", ")
                    ))),
                }
            }

            /// The canonical name.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        /// Options of every task, one field per task; a pipeline reads its own.
        #[derive(Debug, Clone, Default)]
        pub struct TaskOptions {
            $($(#[$doc])* pub $field: $opts,)*
        }

        /// A loaded pipeline of any task.
        #[allow(clippy::large_enum_variant)]
        pub enum Pipeline {
            $($(#[$doc])* $variant($pipe),)*
        }

        impl Pipeline {
            /// Loads `task`'s pipeline from a checkpoint directory.
            fn load(task: Task, dir: &Path, config: &PipelineConfig) -> Result<Self> {
                Ok(match task {
                    $(Task::$variant => Self::$variant(<$pipe>::from_dir(dir, config)?),)*
                })
            }

            /// The task.
            pub fn task(&self) -> Task {
                match self {
                    $(Self::$variant(_) => Task::$variant,)*
                }
            }

            /// Runs every input and returns one JSON value per input, in order, shaped like
            /// `transformers`' pipeline output for that input.
            pub fn run(
                &self,
                inputs: &[PipelineInput],
                options: &TaskOptions,
            ) -> Result<Vec<serde_json::Value>> {
                match self {
                    $(Self::$variant(p) => {
                        let inputs = inputs
                            .iter()
                            .map(<$pipe as PipelineTask>::input)
                            .collect::<Result<Vec<_>>>()?;
                        to_json(p.run(&inputs, &options.$field)?)
                    })*
                }
            }
        }
    };
}

tasks! {
    /// `text-classification` (alias `sentiment-analysis`).
    TextClassification(TextClassificationPipeline, text_classification: TextClassificationOptions)
        = "text-classification" | "sentiment-analysis";
    /// `token-classification` (alias `ner`).
    TokenClassification(TokenClassificationPipeline, token_classification: TokenClassificationOptions)
        = "token-classification" | "ner";
    /// `question-answering`.
    QuestionAnswering(QuestionAnsweringPipeline, question_answering: QuestionAnsweringOptions)
        = "question-answering";
    /// `fill-mask`.
    FillMask(FillMaskPipeline, fill_mask: FillMaskOptions) = "fill-mask";
    /// `feature-extraction`.
    FeatureExtraction(FeatureExtractionPipeline, feature_extraction: FeatureExtractionOptions)
        = "feature-extraction";
    /// `zero-shot-classification`.
    ZeroShotClassification(ZeroShotPipeline, zero_shot: ZeroShotOptions)
        = "zero-shot-classification";
    /// `text-generation`.
    TextGeneration(TextGenerationPipeline, text_generation: TextGenerationOptions)
        = "text-generation";
    /// `summarization`.
    Summarization(SummarizationPipeline, summarization: Text2TextOptions) = "summarization";
    /// `translation` (and `translation_xx_to_yy`).
    Translation(TranslationPipeline, translation: Text2TextOptions) = "translation";
    /// `text2text-generation`.
    Text2TextGeneration(Text2TextGenerationPipeline, text2text_generation: Text2TextOptions)
        = "text2text-generation";
}

/// `translation_xx_to_yy` task names.
fn is_translation_xx_to_yy(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    matches!(parts.as_slice(), ["translation", s, "to", t] if !s.is_empty() && !t.is_empty())
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

/// Loads the pipeline for `task` (a name or alias) on `model` (a directory, a file, or a hub
/// id `org/name[@revision]`), on the CPU in f32 with batches of 8.
pub fn pipeline(task: &str, model: &str) -> Result<Pipeline> {
    pipeline_with(task, model, &PipelineConfig::default())
}

/// [`pipeline`] with an explicit [`PipelineConfig`].
pub fn pipeline_with(task: &str, model: &str, config: &PipelineConfig) -> Result<Pipeline> {
    let name = task;
    let task = Task::from_name(task)?;
    // A causal LM loads through the loader every generating command shares, so a GGUF
    // file works here as it does in `generate`.
    if task == Task::TextGeneration {
        return Ok(Pipeline::TextGeneration(
            TextGenerationPipeline::from_pretrained(model, config)?,
        ));
    }
    if let Some(path) = crate::models::gguf::gguf_file(model)? {
        return Err(Error::file(
            &path,
            format!(
                "a GGUF file holds a causal language model: it runs text-generation, not {}",
                task.name()
            ),
        ));
    }
    // Sequence-to-sequence tasks keep the name as given: `translation_en_to_de` selects
    // its languages and `task_specific_params`.
    match task {
        Task::Summarization => {
            return Ok(Pipeline::Summarization(
                SummarizationPipeline::from_pretrained(model, name, config)?,
            ))
        }
        Task::Translation => {
            return Ok(Pipeline::Translation(TranslationPipeline::from_pretrained(
                model, name, config,
            )?))
        }
        Task::Text2TextGeneration => {
            return Ok(Pipeline::Text2TextGeneration(
                Text2TextGenerationPipeline::from_pretrained(model, name, config)?,
            ))
        }
        _ => {}
    }
    let dir = crate::models::hub::resolve(model)?;
    let dir = checkpoint_dir(&dir)?;
    Pipeline::load(task, &dir, config)
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
