//! `feature-extraction`: the encoder's hidden states for every token, or one sentence vector
//! per text with sentence-transformers' pooling.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::driver::{self, EncoderRunner, PipelineTask, Prepared};
use super::{PipelineConfig, PipelineInput, Task};
use crate::arch::heads::{first_token, l2_normalize, mean_pool};
use crate::error::{Error, Result};
use crate::models::tokenizer::Encoding;
use crate::models::AutoModel;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real tokens (sentence-transformers' default).
    Mean,
    /// The first token (`[CLS]` / `<s>`).
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
    /// What the checkpoint's sentence-transformers files say (`modules.json`,
    /// `1_Pooling/config.json`), normalizing when it lists a `Normalize` module.
    Auto,
}

impl Pooling {
    /// Parses `mean`, `cls`, `max` or `auto`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "max" => Ok(Self::Max),
            "auto" => Ok(Self::Auto),
            other => Err(Error::Invalid(format!(
                "pooling must be mean, cls, max or auto, found `{other}`"
            ))),
        }
    }
}

/// Options of `feature-extraction`.
#[derive(Debug, Clone, Default)]
pub struct FeatureExtractionOptions {
    /// `None`: token-level hidden states, as `transformers`' pipeline. `Some`: one vector per
    /// text.
    pub pooling: Option<Pooling>,
    /// L2-normalize the sentence vector (with pooling only). `None` keeps what the pooling
    /// implies (only [`Pooling::Auto`] may normalize).
    pub normalize: Option<bool>,
}

/// The result for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Features {
    /// `[1][tokens][hidden]`, the shape `transformers`' pipeline returns.
    Tokens(Vec<Vec<Vec<f32>>>),
    /// One sentence vector.
    Sentence(Vec<f32>),
}

/// What a sentence-transformers checkpoint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SentenceTransformerSpec {
    pooling: Pooling,
    normalize: bool,
    max_seq_length: Option<usize>,
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    Ok(Some(
        serde_json::from_str(&text).map_err(|e| Error::file(path, e))?,
    ))
}

/// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`.
fn sentence_transformer_spec(dir: &Path) -> Result<Option<SentenceTransformerSpec>> {
    let Some(modules) = read_json(&dir.join("modules.json"))? else {
        return Ok(None);
    };
    let modules = modules.as_array().cloned().unwrap_or_default();
    let module_type = |m: &serde_json::Value| {
        m.get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    };
    let normalize = modules
        .iter()
        .any(|m| module_type(m).ends_with(".Normalize"));
    let mut pooling = Pooling::Mean;
    if let Some(pool) = modules
        .iter()
        .find(|m| module_type(m).ends_with(".Pooling"))
    {
        let sub = pool
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("1_Pooling");
        let cfg_path = dir.join(sub).join("config.json");
        if let Some(cfg) = read_json(&cfg_path)? {
            let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
            pooling = if on("pooling_mode_cls_token") {
                Pooling::Cls
            } else if on("pooling_mode_max_tokens") {
                Pooling::Max
            } else if on("pooling_mode_mean_tokens") {
                Pooling::Mean
            } else {
                return Err(Error::file(
                    cfg_path,
                    "no supported pooling mode (mean, cls or max tokens) is enabled",
                ));
            };
        }
    }
    let max_seq_length = read_json(&dir.join("sentence_bert_config.json"))?
        .and_then(|c| c.get("max_seq_length").and_then(|v| v.as_u64()))
        .map(|v| v as usize);
    Ok(Some(SentenceTransformerSpec {
        pooling,
        normalize,
        max_seq_length,
    }))
}

/// An encoder with its tokenizer, returning hidden states.
pub struct FeatureExtractionPipeline {
    runner: EncoderRunner<AutoModel>,
    sentence: Option<SentenceTransformerSpec>,
}

/// The options of one run, resolved: the pooling (never [`Pooling::Auto`]) and whether to
/// normalize.
pub(crate) struct Params {
    pooling: Option<Pooling>,
    normalize: bool,
}

impl FeatureExtractionPipeline {
    /// Loads the tokenizer, the base model, and the sentence-transformers files if present.
    pub fn from_dir(dir: &Path, config: &PipelineConfig) -> Result<Self> {
        let mut runner = EncoderRunner::<AutoModel>::from_dir(dir, config)?;
        let sentence = sentence_transformer_spec(dir)?;
        if let Some(m) = sentence.and_then(|s| s.max_seq_length) {
            runner.max_len = runner.max_len.min(m);
        }
        Ok(Self { runner, sentence })
    }

    /// Sentence vectors `(texts, hidden)` with the given pooling (not [`Pooling::Auto`]).
    fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
        match pooling {
            Pooling::Mean | Pooling::Auto => mean_pool(hidden, mask),
            Pooling::Cls => first_token(hidden),
            Pooling::Max => {
                // Padding is pushed far down so it never wins, as sentence-transformers does.
                let m = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
                let pushed = hidden.broadcast_add(&((m - 1.0)? * 1e9)?)?;
                Ok(pushed.max(1)?)
            }
        }
    }

    /// Embeds every text.
    pub fn run(&self, texts: &[&str], options: &FeatureExtractionOptions) -> Result<Vec<Features>> {
        driver::run(self, texts, options, self.runner.config.batch_size)
    }
}

impl PipelineTask for FeatureExtractionPipeline {
    type Input<'a> = &'a str;
    type Options = FeatureExtractionOptions;
    type Params = Params;
    type Row = Encoding;
    type State = ();
    type RowOutput = Features;
    type Output = Features;

    fn input(input: &PipelineInput) -> Result<&str> {
        input.as_text(Task::FeatureExtraction)
    }

    fn params(&self, options: &FeatureExtractionOptions) -> Result<Params> {
        let (pooling, normalize) = match options.pooling {
            None => (None, false),
            Some(Pooling::Auto) => {
                let spec = self.sentence.unwrap_or(SentenceTransformerSpec {
                    pooling: Pooling::Mean,
                    normalize: false,
                    max_seq_length: None,
                });
                (
                    Some(spec.pooling),
                    options.normalize.unwrap_or(spec.normalize),
                )
            }
            Some(p) => (Some(p), options.normalize.unwrap_or(false)),
        };
        if pooling.is_none() && options.normalize == Some(true) {
            return Err(Error::Invalid(
                "feature-extraction: normalize needs a pooling (mean, cls, max or auto)".into(),
            ));
        }
        Ok(Params { pooling, normalize })
    }

    fn preprocess(&self, text: &str, _: &Params) -> Result<Prepared<(), Encoding>> {
        Ok(Prepared::new(vec![self.runner.encode_text(text)?], ()))
    }

    /// Pools on the whole batch at once; without pooling, each row's own tokens.
    fn forward(&self, rows: &[Encoding], params: &Params) -> Result<Vec<Features>> {
        let (batch, output) = self.runner.forward(rows)?;
        let hidden = output.last_hidden_state.to_dtype(DType::F32)?;
        Ok(match params.pooling {
            None => batch
                .rows3(&hidden)?
                .into_iter()
                .map(|tokens| Features::Tokens(vec![tokens]))
                .collect(),
            Some(p) => {
                let mut pooled = Self::pool(&hidden, &batch.mask, p)?;
                if params.normalize {
                    pooled = l2_normalize(&pooled)?;
                }
                batch
                    .rows2(&pooled)?
                    .into_iter()
                    .map(Features::Sentence)
                    .collect()
            }
        })
    }

    fn postprocess(&self, _: (), rows: Vec<(Encoding, Features)>, _: &Params) -> Result<Features> {
        rows.into_iter()
            .next()
            .map(|(_, features)| features)
            .ok_or_else(|| Error::Invalid("feature-extraction: a text gave no output".into()))
    }
}
