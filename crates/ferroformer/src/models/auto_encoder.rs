//! Auto-style loading of pretrained encoders and their task heads, as `transformers`'
//! `AutoModel`, `AutoModelForSequenceClassification`, `AutoModelForTokenClassification`,
//! `AutoModelForQuestionAnswering` and `AutoModelForMaskedLM`: `config.json`'s `model_type`
//! (or, without one, its `architectures`) picks the family, the family supplies an
//! [`EncoderSpec`], and every family runs on the same [`EncoderModel`] and the shared heads of
//! [`crate::arch::heads`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::encoder_model::{
    EncoderModel, EncoderOutput, EncoderSpec, PoolerLoad, SequenceClassifierNames,
};
use super::{BertConfig, DistilBertConfig, LoadOptions, RobertaConfig};
use crate::arch::heads::{
    first_token, ClassificationHead, ClsPooler, MaskedLmHead, SpanHead, TokenClassificationHead,
};
use crate::error::{Error, Result};
use crate::nn::Pass;
use crate::weights::Weights;

/// The encoder `model_type`s the Auto classes load.
pub const SUPPORTED_ENCODER_MODEL_TYPES: &[&str] =
    &["bert", "distilbert", "roberta", "xlm-roberta", "camembert"];

/// Each family's class-name prefix in `architectures`, by `model_type`.
const FAMILY_CLASS_PREFIXES: &[(&str, &str)] = &[
    ("bert", "Bert"),
    ("distilbert", "DistilBert"),
    ("roberta", "Roberta"),
    ("xlm-roberta", "XLMRoberta"),
    ("camembert", "Camembert"),
];

/// The `architectures` entries the Auto classes recognize (a family prefix and a head).
pub const SUPPORTED_ENCODER_ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForQuestionAnswering",
    "BertForMaskedLM",
    "DistilBertModel",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertForQuestionAnswering",
    "DistilBertForMaskedLM",
    "RobertaModel",
    "RobertaForSequenceClassification",
    "RobertaForTokenClassification",
    "RobertaForQuestionAnswering",
    "RobertaForMaskedLM",
    "XLMRobertaModel",
    "XLMRobertaForSequenceClassification",
    "XLMRobertaForTokenClassification",
    "XLMRobertaForQuestionAnswering",
    "XLMRobertaForMaskedLM",
    "CamembertModel",
    "CamembertForSequenceClassification",
    "CamembertForTokenClassification",
    "CamembertForQuestionAnswering",
    "CamembertForMaskedLM",
];

/// The model type a supported architecture name belongs to.
fn model_type_of_architecture(arch: &str) -> Option<&'static str> {
    if !SUPPORTED_ENCODER_ARCHITECTURES.contains(&arch) {
        return None;
    }
    FAMILY_CLASS_PREFIXES
        .iter()
        .find(|(_, prefix)| arch.starts_with(prefix))
        .map(|(model_type, _)| *model_type)
}

/// The `…ForSequenceClassification` class of a `model_type` (`BertForSequenceClassification`
/// for `bert`), as `architectures` names it.
pub fn sequence_classification_architecture(model_type: &str) -> Option<String> {
    head_architecture(model_type, "ForSequenceClassification")
}

/// The `…ForTokenClassification` class of a `model_type` (`BertForTokenClassification` for
/// `bert`), as `architectures` names it.
pub fn token_classification_architecture(model_type: &str) -> Option<String> {
    head_architecture(model_type, "ForTokenClassification")
}

fn head_architecture(model_type: &str, head: &str) -> Option<String> {
    FAMILY_CLASS_PREFIXES
        .iter()
        .find(|(t, _)| *t == model_type)
        .map(|(_, prefix)| format!("{prefix}{head}"))
}

/// The most classes a `config.json` may declare with `num_labels` (far more than any
/// classification head holds; a larger count is a corrupt file, refused before anything is
/// allocated for it).
pub const MAX_NUM_LABELS: usize = 1 << 20;

/// The fields of `config.json` that pipelines and heads share, whatever the family, plus the
/// raw JSON for anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedConfig {
    /// `model_type` (inferred from `architectures` when the file has none).
    pub model_type: String,
    /// `architectures`, e.g. `["BertForSequenceClassification"]` (may be empty).
    pub architectures: Vec<String>,
    /// Number of labels of a classification head: the size of `id2label` when present,
    /// else `num_labels`, else 2 (`transformers`' default).
    pub num_labels: usize,
    /// Label names by class index; `LABEL_{i}` when the file has none.
    pub id2label: BTreeMap<usize, String>,
    /// Class index by label name; the inverse of `id2label` when the file has none.
    pub label2id: BTreeMap<String, usize>,
    /// `single_label_classification`, `multi_label_classification` or `regression`, if set.
    pub problem_type: Option<String>,
    /// Padding token id (the family's default when the file has none).
    pub pad_token_id: Option<u32>,
    /// The longest input in tokens. For RoBERTa-like models that is the position table
    /// minus the padding index and one (514 rows hold 512 positions).
    pub max_position_embeddings: usize,
    /// Hidden width (`hidden_size`, DistilBERT's `dim`, GPT-2's `n_embd`).
    pub hidden_size: usize,
    /// The whole `config.json`.
    pub raw: serde_json::Value,
    source: PathBuf,
}

impl PretrainedConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let raw: serde_json::Value = super::read_config(dir)?;
        Self::from_json(raw, &dir.join("config.json"))
    }

    /// Interprets a parsed `config.json`; `source` names the file in errors.
    pub fn from_json(raw: serde_json::Value, source: &Path) -> Result<Self> {
        let bad = |field: &str, why: String| Error::file(source, format!("`{field}`: {why}"));
        let architectures: Vec<String> = match raw.get("architectures") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| bad("architectures", e.to_string()))?,
        };
        let model_type = match raw.get("model_type").and_then(|v| v.as_str()) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => architectures
                .iter()
                .find_map(|a| model_type_of_architecture(a))
                .unwrap_or_default()
                .to_string(),
        };
        let roberta_like = matches!(model_type.as_str(), "roberta" | "xlm-roberta" | "camembert");

        let mut id2label = BTreeMap::new();
        if let Some(map) = raw.get("id2label").filter(|v| !v.is_null()) {
            let map = map
                .as_object()
                .ok_or_else(|| bad("id2label", "expected an object".into()))?;
            for (k, v) in map {
                // JSON keys are strings: `{"0": "NEGATIVE", "1": "POSITIVE"}`.
                let id: usize = k
                    .trim()
                    .parse()
                    .map_err(|_| bad("id2label", format!("key `{k}` is not a class index")))?;
                let label = v
                    .as_str()
                    .ok_or_else(|| bad("id2label", format!("label of {k} is not a string")))?;
                id2label.insert(id, label.to_string());
            }
        }
        let num_labels = if !id2label.is_empty() {
            id2label.len()
        } else {
            match raw.get("num_labels").filter(|v| !v.is_null()) {
                Some(v) => {
                    let n = v
                        .as_u64()
                        .ok_or_else(|| bad("num_labels", "expected a count".into()))?;
                    usize::try_from(n).unwrap_or(usize::MAX)
                }
                None => 2,
            }
        };
        if num_labels > MAX_NUM_LABELS {
            // Checked before `LABEL_{i}` names are made for each: a corrupt or hostile
            // `num_labels` of 10^12 would otherwise exhaust memory here.
            return Err(bad(
                "num_labels",
                format!("{num_labels} classes is more than the {MAX_NUM_LABELS} supported"),
            ));
        }
        if id2label.is_empty() {
            id2label = (0..num_labels).map(|i| (i, format!("LABEL_{i}"))).collect();
        }
        if id2label.keys().copied().ne(0..num_labels) {
            return Err(bad(
                "id2label",
                format!(
                    "class indices must be 0..{num_labels}, found {:?}",
                    id2label.keys()
                ),
            ));
        }
        let label2id = match raw.get("label2id").filter(|v| !v.is_null()) {
            Some(map) => {
                let map = map
                    .as_object()
                    .ok_or_else(|| bad("label2id", "expected an object".into()))?;
                map.iter()
                    .map(|(k, v)| {
                        let id = v.as_u64().ok_or_else(|| {
                            bad("label2id", format!("index of `{k}` is not a number"))
                        })?;
                        Ok((k.clone(), id as usize))
                    })
                    .collect::<Result<BTreeMap<_, _>>>()?
            }
            None => id2label.iter().map(|(i, l)| (l.clone(), *i)).collect(),
        };
        let problem_type = raw
            .get("problem_type")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        // A token id is 32-bit: a larger (or negative, or fractional) one is an error,
        // never truncated to another token.
        let pad_token_id = match raw.get("pad_token_id").filter(|v| !v.is_null()) {
            Some(v) => Some(
                v.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| {
                        bad(
                            "pad_token_id",
                            format!("expected a token id below 2^32, found {v}"),
                        )
                    })?,
            ),
            None => match model_type.as_str() {
                "bert" | "distilbert" => Some(0),
                _ if roberta_like => Some(1),
                _ => None,
            },
        };
        let first_usize = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| raw.get(*k).and_then(|v| v.as_u64()))
                .map(|v| v as usize)
        };
        let hidden_keys = ["hidden_size", "dim", "n_embd", "d_model"];
        let hidden_size = first_usize(&hidden_keys)
            .ok_or_else(|| bad("hidden_size", format!("none of {hidden_keys:?} is set")))?;
        let position_keys = ["max_position_embeddings", "n_positions", "max_seq_len"];
        let mut max_position_embeddings = first_usize(&position_keys).ok_or_else(|| {
            bad(
                "max_position_embeddings",
                format!("none of {position_keys:?} is set"),
            )
        })?;
        if roberta_like {
            // Positions start after the padding index (see `RobertaConfig::max_length`).
            let pad = pad_token_id.unwrap_or(1) as usize;
            max_position_embeddings = max_position_embeddings.saturating_sub(pad + 1);
        }
        Ok(Self {
            model_type,
            architectures,
            num_labels,
            id2label,
            label2id,
            problem_type,
            pad_token_id,
            max_position_embeddings,
            hidden_size,
            raw,
            source: source.to_path_buf(),
        })
    }

    /// The name of class `id` (`LABEL_{id}` when unknown).
    pub fn label(&self, id: usize) -> String {
        self.id2label
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{id}"))
    }

    /// Whether the model has a segment (token type) table with more than one entry, so
    /// pair inputs should pass their token type ids (BERT); RoBERTa's single-row table and
    /// DistilBERT's absent one take none, as their tokenizers return none.
    pub fn uses_token_types(&self) -> bool {
        self.raw
            .get("type_vocab_size")
            .and_then(|v| v.as_u64())
            .is_some_and(|n| n > 1)
    }

    /// The file this configuration was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The encoder family's spec for this configuration.
    pub fn encoder_spec(&self) -> Result<EncoderSpec> {
        encoder_spec_from_json(&self.raw, &self.source)
    }
}

/// Describes the encoder a parsed `config.json` (read from `source`) defines: `model_type`
/// picks the family (`architectures` does when `model_type` is absent). An unknown family is
/// an error that lists the supported ones.
pub fn encoder_spec_from_json(raw: &serde_json::Value, source: &Path) -> Result<EncoderSpec> {
    fn parse<T: serde::de::DeserializeOwned>(raw: &serde_json::Value, source: &Path) -> Result<T> {
        serde_json::from_value(raw.clone()).map_err(|e| Error::file(source, e))
    }
    let architectures: Vec<&str> = raw
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let model_type = match raw.get("model_type").and_then(|v| v.as_str()) {
        Some(t) if !t.is_empty() => t,
        _ => architectures
            .iter()
            .find_map(|a| model_type_of_architecture(a))
            .ok_or_else(|| {
                Error::file(
                    source,
                    format!(
                        "no `model_type`, and architectures {architectures:?} name no supported \
                         encoder; supported architectures: {}",
                        SUPPORTED_ENCODER_ARCHITECTURES.join(", ")
                    ),
                )
            })?,
    };
    match model_type {
        "bert" => parse::<BertConfig>(raw, source)?.encoder_spec(),
        "distilbert" => parse::<DistilBertConfig>(raw, source)?.encoder_spec(),
        "roberta" | "xlm-roberta" | "camembert" => {
            parse::<RobertaConfig>(raw, source)?.encoder_spec(model_type)
        }
        other => Err(Error::file(
            source,
            format!(
                "model_type `{other}` (architectures {architectures:?}) is not a supported \
                 encoder; supported model types: {}; supported architectures: {}",
                SUPPORTED_ENCODER_MODEL_TYPES.join(", "),
                SUPPORTED_ENCODER_ARCHITECTURES.join(", ")
            ),
        )),
    }
}

/// A checkpoint directory read for an Auto class: its configuration, family spec and
/// weights.
struct Checkpoint {
    config: PretrainedConfig,
    spec: EncoderSpec,
    weights: Weights<'static>,
}

impl Checkpoint {
    fn read(dir: &Path, options: &LoadOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a checkpoint directory"));
        }
        let config = PretrainedConfig::from_dir(dir)?;
        let spec = config.encoder_spec()?;
        let weights = super::weights_from_dir(dir, options.dtype, &options.device)?;
        Ok(Self {
            config,
            spec,
            weights,
        })
    }
}

/// Adds what the checkpoint is to a head's missing-tensor error: loading, say, a
/// masked-LM checkpoint for sequence classification fails on the head's first tensor, and
/// `architectures` says which head the checkpoint has instead. (`transformers` would
/// initialize the head randomly; a model for inference has no use for that.)
fn head_error(e: Error, head: &str, config: &PretrainedConfig) -> Error {
    match e {
        Error::MissingTensor { name, source_desc } => Error::Invalid(format!(
            "cannot load a {head} head: missing tensor `{name}` in {source_desc}; the \
             checkpoint's architectures are {:?}",
            config.architectures
        )),
        other => other,
    }
}

/// `from_pretrained`, `from_pretrained_with`, `from_dir` and `config` for an Auto class
/// that has `fn load(w: &Weights, config: &PretrainedConfig) -> Result<Self>`.
macro_rules! auto_loading {
    ($ty:ident) => {
        impl $ty {
            /// Loads a local checkpoint directory or a hub id (`org/name[@revision]`) from
            /// the local cache, in f32 on the CPU.
            pub fn from_pretrained(model: &str) -> Result<Self> {
                Self::from_pretrained_with(model, &LoadOptions::default())
            }

            /// Like `from_pretrained`, with the dtype and device of `options`.
            pub fn from_pretrained_with(model: &str, options: &LoadOptions) -> Result<Self> {
                Self::from_dir(&super::hub::resolve(model)?, options)
            }

            /// Loads the checkpoint directory `dir` (`config.json` and safetensors, single or
            /// sharded, or `pytorch_model.bin`).
            pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self> {
                let c = Checkpoint::read(dir, options)?;
                let mut model = Self::load_spec(&c.weights, &c.config, &c.spec)?;
                model
                    .model
                    .set_skip_padding_outputs(options.skip_padding_outputs);
                Ok(model)
            }

            /// Loads from weights rooted at the checkpoint root.
            pub fn load(w: &Weights, config: &PretrainedConfig) -> Result<Self> {
                Self::load_spec(w, config, &config.encoder_spec()?)
            }

            /// The configuration.
            pub fn config(&self) -> &PretrainedConfig {
                &self.config
            }

            /// The base model under the head.
            pub fn base_model(&self) -> &EncoderModel {
                &self.model
            }
        }
    };
}

/// An encoder base model of any supported family (`BertModel`, `DistilBertModel`,
/// `RobertaModel`, `XLMRobertaModel`): the last hidden state, and the pooler output where
/// the checkpoint has a pooler.
#[derive(Debug, Clone)]
pub struct AutoModel {
    config: PretrainedConfig,
    model: EncoderModel,
}

auto_loading!(AutoModel);

impl AutoModel {
    fn load_spec(w: &Weights, config: &PretrainedConfig, spec: &EncoderSpec) -> Result<Self> {
        Ok(Self {
            config: config.clone(),
            model: EncoderModel::load_with(w, spec, PoolerLoad::IfPresent)?,
        })
    }

    /// `last_hidden_state` `(batch, seq, hidden)` and `pooler_output` `(batch, hidden)`.
    /// `input_ids`, `attention_mask` (1 = token, 0 = padding) and `token_type_ids` are
    /// `(batch, seq)`; families without token types ignore them.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<EncoderOutput> {
        self.model
            .forward(input_ids, attention_mask, token_type_ids)
    }
}

/// The families' sequence-classification heads.
#[derive(Debug, Clone)]
enum SequenceHead {
    /// BERT: the base model's pooler output, then `classifier`.
    Pooler(ClassificationHead),
    /// RoBERTa, DistilBERT: dense + nonlinearity on the first token, then a linear layer.
    FirstToken(ClsPooler, ClassificationHead),
}

/// Sequence classification (`…ForSequenceClassification`): logits `(batch, num_labels)`.
/// Single-label, multi-label (apply a sigmoid) and regression heads compute the same
/// logits; `config().problem_type` says how to read them.
#[derive(Debug, Clone)]
pub struct AutoModelForSequenceClassification {
    config: PretrainedConfig,
    model: EncoderModel,
    head: SequenceHead,
    /// Dropout on the pooled vector, and (first-token heads) after the dense layer, in
    /// training passes.
    head_dropout: (f64, f64),
}

/// The dropout probabilities of a sequence-classification head in training, as
/// `transformers` sets them: BERT drops the pooler output, RoBERTa the first token and the
/// dense layer's output (both with `classifier_dropout`, else `hidden_dropout_prob`);
/// DistilBERT only the output of `pre_classifier` (`seq_classif_dropout`).
fn sequence_head_dropout(config: &PretrainedConfig, spec: &EncoderSpec) -> (f64, f64) {
    let raw = &config.raw;
    let num = |k: &str| raw.get(k).and_then(|v| v.as_f64());
    if config.model_type == "distilbert" {
        return (0.0, num("seq_classif_dropout").unwrap_or(0.2));
    }
    let p = num("classifier_dropout")
        .or_else(|| num("hidden_dropout_prob"))
        .unwrap_or(0.1);
    match spec.sequence_classifier {
        SequenceClassifierNames::Pooler { .. } => (p, 0.0),
        SequenceClassifierNames::FirstToken { .. } => (p, p),
    }
}

auto_loading!(AutoModelForSequenceClassification);

impl AutoModelForSequenceClassification {
    fn load_spec(w: &Weights, config: &PretrainedConfig, spec: &EncoderSpec) -> Result<Self> {
        let d = spec.encoder.embeddings.d_model;
        let n = config.num_labels;
        let head_err = |e| head_error(e, "sequence-classification", config);
        let (model, head) = match &spec.sequence_classifier {
            SequenceClassifierNames::Pooler { classifier } => {
                let mut model = EncoderModel::load_with(w, spec, PoolerLoad::IfPresent)?;
                if !model.has_pooler() {
                    // The body loaded, so this fails on the pooler: report it as the head's
                    // (a token-classification or QA checkpoint has no pooler).
                    model =
                        EncoderModel::load_with(w, spec, PoolerLoad::Required).map_err(head_err)?;
                }
                let head = ClassificationHead::load(w, d, n, classifier).map_err(head_err)?;
                (model, SequenceHead::Pooler(head))
            }
            SequenceClassifierNames::FirstToken {
                dense,
                activation,
                out,
            } => (
                EncoderModel::load_with(w, spec, PoolerLoad::Skip)?,
                SequenceHead::FirstToken(
                    ClsPooler::load_with(w, d, dense, *activation).map_err(head_err)?,
                    ClassificationHead::load(w, d, n, out).map_err(head_err)?,
                ),
            ),
        };
        Ok(Self {
            config: config.clone(),
            model,
            head,
            head_dropout: sequence_head_dropout(config, spec),
        })
    }

    /// Logits `(batch, num_labels)` (inputs as in [`AutoModel::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, token_type_ids, Pass::INFERENCE)
    }

    /// [`AutoModelForSequenceClassification::forward`] for a given pass: in a training pass
    /// the body and the head apply the configuration's dropout, as `transformers` does in
    /// `train()` mode (the masks come from [`crate::nn::dropout`]'s seeded generator).
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let hidden =
            self.model
                .hidden_states_with(input_ids, attention_mask, token_type_ids, pass)?;
        let drop = |x: Tensor, p: f64| -> Result<Tensor> {
            if pass.train && p > 0.0 {
                crate::nn::dropout::dropout(&x, p)
            } else {
                Ok(x)
            }
        };
        let (p_in, p_out) = self.head_dropout;
        match &self.head {
            SequenceHead::Pooler(classifier) => {
                let pooled = self
                    .model
                    .pool(&hidden)?
                    .ok_or_else(|| Error::Invalid("the model has no pooler".into()))?;
                classifier.logits(&drop(pooled, p_in)?)
            }
            SequenceHead::FirstToken(pre, classifier) => {
                let cls = drop(first_token(&hidden)?, p_in)?;
                classifier.logits(&drop(pre.dense_act(&cls)?, p_out)?)
            }
        }
    }
}

/// Token classification (`…ForTokenClassification`): logits `(batch, seq, num_labels)`.
#[derive(Debug, Clone)]
pub struct AutoModelForTokenClassification {
    config: PretrainedConfig,
    model: EncoderModel,
    head: TokenClassificationHead,
    /// Dropout on the last hidden state in training passes.
    head_dropout: f64,
}

/// The dropout probability `transformers`' token-classification heads apply to the last
/// hidden state in training: DistilBERT's `dropout`, the others' `classifier_dropout`, else
/// `hidden_dropout_prob`.
fn token_head_dropout(config: &PretrainedConfig) -> f64 {
    let num = |k: &str| config.raw.get(k).and_then(|v| v.as_f64());
    if config.model_type == "distilbert" {
        return num("dropout").unwrap_or(0.1);
    }
    num("classifier_dropout")
        .or_else(|| num("hidden_dropout_prob"))
        .unwrap_or(0.1)
}

auto_loading!(AutoModelForTokenClassification);

impl AutoModelForTokenClassification {
    fn load_spec(w: &Weights, config: &PretrainedConfig, spec: &EncoderSpec) -> Result<Self> {
        let d = spec.encoder.embeddings.d_model;
        let head = TokenClassificationHead::load(w, d, config.num_labels, &spec.token_classifier)
            .map_err(|e| head_error(e, "token-classification", config))?;
        Ok(Self {
            config: config.clone(),
            model: EncoderModel::load_with(w, spec, PoolerLoad::Skip)?,
            head,
            head_dropout: token_head_dropout(config),
        })
    }

    /// Logits `(batch, seq, num_labels)` (inputs as in [`AutoModel::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_with(input_ids, attention_mask, token_type_ids, Pass::INFERENCE)
    }

    /// [`AutoModelForTokenClassification::forward`] for a given pass: a training pass
    /// applies the configuration's dropout in the body and on the hidden states the head
    /// reads, as `transformers` does in `train()` mode.
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let mut hidden =
            self.model
                .hidden_states_with(input_ids, attention_mask, token_type_ids, pass)?;
        if pass.train && self.head_dropout > 0.0 {
            hidden = crate::nn::dropout::dropout(&hidden, self.head_dropout)?;
        }
        self.head.forward(&hidden)
    }
}

/// Extractive question answering (`…ForQuestionAnswering`): start and end logits
/// `(batch, seq)` each.
#[derive(Debug, Clone)]
pub struct AutoModelForQuestionAnswering {
    config: PretrainedConfig,
    model: EncoderModel,
    head: SpanHead,
}

auto_loading!(AutoModelForQuestionAnswering);

impl AutoModelForQuestionAnswering {
    fn load_spec(w: &Weights, config: &PretrainedConfig, spec: &EncoderSpec) -> Result<Self> {
        let d = spec.encoder.embeddings.d_model;
        let head = SpanHead::load(w, d, &spec.question_answering)
            .map_err(|e| head_error(e, "question-answering", config))?;
        Ok(Self {
            config: config.clone(),
            model: EncoderModel::load_with(w, spec, PoolerLoad::Skip)?,
            head,
        })
    }

    /// `(start_logits, end_logits)`, each `(batch, seq)` (inputs as in
    /// [`AutoModel::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let hidden = self
            .model
            .hidden_states(input_ids, attention_mask, token_type_ids)?;
        self.head.forward(&hidden)
    }
}

/// Masked language modeling (`…ForMaskedLM`): vocabulary logits `(batch, seq, vocab)`.
#[derive(Debug, Clone)]
pub struct AutoModelForMaskedLM {
    config: PretrainedConfig,
    model: EncoderModel,
    head: MaskedLmHead,
}

auto_loading!(AutoModelForMaskedLM);

impl AutoModelForMaskedLM {
    fn load_spec(w: &Weights, config: &PretrainedConfig, spec: &EncoderSpec) -> Result<Self> {
        let model = EncoderModel::load_with(w, spec, PoolerLoad::Skip)?;
        let mlm = &spec.masked_lm;
        let emb = &spec.encoder.embeddings;
        let tied = match mlm.tied {
            true => Some(model.word_embeddings().as_dense().ok_or_else(|| {
                Error::Invalid("a masked-LM decoder cannot be tied to quantized embeddings".into())
            })?),
            false => None,
        };
        let head = MaskedLmHead::load(
            w,
            emb.d_model,
            emb.vocab_size,
            mlm.activation,
            &mlm.norm,
            &mlm.names,
            tied,
        )
        .map_err(|e| head_error(e, "masked-LM", config))?;
        Ok(Self {
            config: config.clone(),
            model,
            head,
        })
    }

    /// Logits `(batch, seq, vocab)` (inputs as in [`AutoModel::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let hidden = self
            .model
            .hidden_states(input_ids, attention_mask, token_type_ids)?;
        self.head.forward(&hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review for the `safetensors_config` fuzz target: `num_labels` without
    /// `id2label` made a `LABEL_{i}` name for each of 10^12 classes (out of memory).
    #[test]
    fn huge_num_labels_is_an_error_naming_the_field() {
        let raw = serde_json::json!({
            "model_type": "bert",
            "hidden_size": 4,
            "max_position_embeddings": 8,
            "num_labels": 1_000_000_000_000u64,
        });
        let err = PretrainedConfig::from_json(raw, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.json")
                && err.contains("num_labels")
                && err.contains("1000000000000"),
            "{err}"
        );
    }

    #[test]
    fn num_labels_up_to_the_limit_get_default_names() {
        let raw = serde_json::json!({
            "model_type": "bert",
            "hidden_size": 4,
            "max_position_embeddings": 8,
            "num_labels": 3,
        });
        let c = PretrainedConfig::from_json(raw, Path::new("config.json")).unwrap();
        assert_eq!(c.num_labels, 3);
        assert_eq!(c.label(2), "LABEL_2");
        assert_eq!(c.label2id["LABEL_0"], 0);
    }
}
