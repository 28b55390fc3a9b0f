//! BERT (`BertModel` and its task heads): learned positions and token types, post-norm
//! layers with GELU, and the CLS pooler, all on the shared blocks. RoBERTa reuses this
//! layout ([`super::roberta`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::encoder_model::{
    EncoderModel, EncoderOutput, EncoderSpec, MaskedLmSpec, PositionIds, SequenceClassifierNames,
};
use crate::arch::heads::MaskedLmHeadNames;
use crate::arch::{
    EmbeddingConfig, EmbeddingNames, EncoderConfig, EncoderNames, PositionalKind, StackConfig,
    StackNames, TransformerEncoder,
};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerConfig,
    LayerNames, NormConfig,
};
use crate::weights::Weights;

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}
fn default_true() -> bool {
    true
}

/// `config.json` of a BERT checkpoint (the fields this model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Segment vocabulary.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// FFN activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Dropout after embeddings and sublayers.
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention weights.
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    /// Padding token id (`None`: the family's default, 0 for BERT, 1 for RoBERTa).
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// `absolute` (the only kind supported; `relative_key` variants are refused).
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    /// Whether the masked-LM decoder shares the token embedding table.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl BertConfig {
    /// The encoder configuration these values describe.
    pub fn encoder_config(&self) -> Result<EncoderConfig> {
        match self.position_embedding_type.as_deref() {
            None | Some("absolute") => {}
            Some(other) => {
                return Err(Error::config(
                    "position_embedding_type",
                    format!("`{other}` is not supported; only `absolute` is"),
                ))
            }
        }
        let d = self.hidden_size;
        let mut attention = AttentionConfig::new(d, self.num_attention_heads)?;
        attention.dropout = self.attention_probs_dropout_prob;
        let mut ffn = FeedForwardConfig::new(
            d,
            self.intermediate_size,
            Activation::from_name(&self.hidden_act)?,
        );
        ffn.dropout = 0.0;
        Ok(EncoderConfig {
            embeddings: EmbeddingConfig {
                vocab_size: self.vocab_size,
                d_model: d,
                max_positions: self.max_position_embeddings,
                positional: PositionalKind::Learned { offset: 0 },
                type_vocab_size: Some(self.type_vocab_size),
                norm: Some(NormConfig::layer_norm(self.layer_norm_eps)),
                scale: None,
                dropout: self.hidden_dropout_prob,
            },
            stack: StackConfig {
                layer: LayerConfig {
                    self_attention: attention,
                    cross_attention: None,
                    feed_forward: ffn,
                    norm: NormConfig::layer_norm(self.layer_norm_eps),
                    norm_first: false,
                    dropout: self.hidden_dropout_prob,
                },
                num_layers: self.num_hidden_layers,
                final_norm: false,
                sliding_window: None,
            },
        })
    }
}

impl BertConfig {
    /// BERT's spec: names under `bert.` in task checkpoints, positions `0..seq`, the pooler
    /// under `pooler.dense`, and the heads of `transformers`' `BertFor…` classes.
    pub fn encoder_spec(&self) -> Result<EncoderSpec> {
        let encoder = self.encoder_config()?;
        Ok(EncoderSpec {
            model_type: "bert".into(),
            names: bert_names(&encoder),
            encoder,
            base_prefix: "bert".into(),
            position_ids: PositionIds::Sequential,
            max_length: self.max_position_embeddings,
            pooler: Some("pooler.dense".into()),
            sequence_classifier: SequenceClassifierNames::Pooler {
                classifier: "classifier".into(),
            },
            token_classifier: "classifier".into(),
            question_answering: "qa_outputs".into(),
            masked_lm: MaskedLmSpec {
                names: MaskedLmHeadNames {
                    dense: "cls.predictions.transform.dense".into(),
                    norm: "cls.predictions.transform.LayerNorm".into(),
                    decoder_weight: "cls.predictions.decoder.weight".into(),
                    bias: vec![
                        "cls.predictions.bias".into(),
                        "cls.predictions.decoder.bias".into(),
                    ],
                },
                activation: Activation::from_name(&self.hidden_act)?,
                norm: NormConfig::layer_norm(self.layer_norm_eps),
                tied: self.tie_word_embeddings,
            },
        })
    }
}

/// BERT's tensor names, relative to the base model.
pub fn bert_names(cfg: &EncoderConfig) -> EncoderNames {
    let attn = &cfg.stack.layer.self_attention;
    EncoderNames {
        embeddings: EmbeddingNames {
            word: "embeddings.word_embeddings.weight".into(),
            position: Some("embeddings.position_embeddings.weight".into()),
            token_type: Some("embeddings.token_type_embeddings.weight".into()),
            norm: Some("embeddings.LayerNorm".into()),
        },
        stack: StackNames {
            layer_prefix: "encoder.layer".into(),
            layer: LayerNames {
                self_attention: AttentionNames::separate(
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                    attn,
                ),
                self_attention_norm: "attention.output.LayerNorm".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: FeedForwardNames::two_layer(
                    "intermediate.dense",
                    "output.dense",
                    true,
                ),
                feed_forward_norm: "output.LayerNorm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: None,
        },
    }
}

/// `BertModel` outputs (the output of every encoder base model).
pub type BertOutput = EncoderOutput;

/// The BERT encoder with its pooler.
#[derive(Debug, Clone)]
pub struct BertModel {
    config: BertConfig,
    model: EncoderModel,
}

impl BertModel {
    /// Loads from weights rooted at the base model or at a task model (`bert.` prefix).
    pub fn load(w: &Weights, config: &BertConfig) -> Result<Self> {
        Ok(Self {
            config: config.clone(),
            model: EncoderModel::load(w, &config.encoder_spec()?)?,
        })
    }

    /// Loads `config.json` and the weights (safetensors, sharded or not, or
    /// `pytorch_model.bin`) of a checkpoint directory.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config: BertConfig = super::read_config(dir)?;
        let w = super::weights_from_dir(dir, dtype, device)?;
        Self::load(&w, &config)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The encoder.
    pub fn encoder(&self) -> &TransformerEncoder {
        self.model.encoder()
    }

    /// Runs the model. `attention_mask` and `token_type_ids` are `(batch, seq)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertOutput> {
        self.model
            .forward(input_ids, attention_mask, token_type_ids)
    }
}
