//! DistilBERT: BERT's post-norm layers under other names (`q_lin`, `sa_layer_norm`,
//! `ffn.lin1`, …), learned positions without token types, LayerNorm eps 1e-12 everywhere,
//! and no pooler. Only a config struct and a weight-name map onto the shared blocks.

use super::encoder_model::{EncoderSpec, MaskedLmSpec, PositionIds, SequenceClassifierNames};
use crate::arch::heads::{MaskedLmHeadNames, PoolerActivation};
use crate::arch::{
    EmbeddingConfig, EmbeddingNames, EncoderConfig, EncoderNames, PositionalKind, StackConfig,
    StackNames,
};
use crate::error::Result;
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerConfig,
    LayerNames, NormConfig,
};

/// DistilBERT hard-codes this epsilon in every LayerNorm (it is not in `config.json`).
const LAYER_NORM_EPS: f64 = 1e-12;

fn default_act() -> String {
    "gelu".into()
}
fn default_max_positions() -> usize {
    512
}
fn default_true() -> bool {
    true
}

/// `config.json` of a DistilBERT checkpoint (the fields this model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct DistilBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub dim: usize,
    /// Layers.
    pub n_layers: usize,
    /// Heads.
    pub n_heads: usize,
    /// FFN width.
    pub hidden_dim: usize,
    /// Longest sequence.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// FFN (and masked-LM transform) activation.
    #[serde(default = "default_act")]
    pub activation: String,
    /// Whether the position table was initialized with sinusoids. `transformers` writes the
    /// sinusoids into `position_embeddings.weight` and saves that table with the other
    /// weights, so it is loaded like a learned one either way.
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// Dropout after embeddings and sublayers.
    #[serde(default)]
    pub dropout: f64,
    /// Dropout on attention weights.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: u32,
    /// Whether the masked-LM decoder (`vocab_projector`) shares the token embedding table.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl DistilBertConfig {
    /// The encoder configuration these values describe.
    pub fn encoder_config(&self) -> Result<EncoderConfig> {
        let d = self.dim;
        let mut attention = AttentionConfig::new(d, self.n_heads)?;
        attention.dropout = self.attention_dropout;
        let mut ffn =
            FeedForwardConfig::new(d, self.hidden_dim, Activation::from_name(&self.activation)?);
        ffn.dropout = 0.0;
        Ok(EncoderConfig {
            embeddings: EmbeddingConfig {
                vocab_size: self.vocab_size,
                d_model: d,
                max_positions: self.max_position_embeddings,
                positional: PositionalKind::Learned { offset: 0 },
                type_vocab_size: None,
                norm: Some(NormConfig::layer_norm(LAYER_NORM_EPS)),
                scale: None,
                dropout: self.dropout,
            },
            stack: StackConfig {
                layer: LayerConfig {
                    self_attention: attention,
                    cross_attention: None,
                    feed_forward: ffn,
                    norm: NormConfig::layer_norm(LAYER_NORM_EPS),
                    norm_first: false,
                    dropout: self.dropout,
                },
                num_layers: self.n_layers,
                final_norm: false,
                sliding_window: None,
            },
        })
    }

    /// DistilBERT's spec: names under `distilbert.` in task checkpoints, positions
    /// `0..seq`, no pooler, and the heads of `transformers`' `DistilBertFor…` classes.
    pub fn encoder_spec(&self) -> Result<EncoderSpec> {
        let encoder = self.encoder_config()?;
        Ok(EncoderSpec {
            model_type: "distilbert".into(),
            names: distilbert_names(&encoder),
            encoder,
            base_prefix: "distilbert".into(),
            position_ids: PositionIds::Sequential,
            max_length: self.max_position_embeddings,
            pooler: None,
            sequence_classifier: SequenceClassifierNames::FirstToken {
                dense: "pre_classifier".into(),
                activation: PoolerActivation::Relu,
                out: "classifier".into(),
            },
            token_classifier: "classifier".into(),
            question_answering: "qa_outputs".into(),
            masked_lm: MaskedLmSpec {
                names: MaskedLmHeadNames {
                    dense: "vocab_transform".into(),
                    norm: "vocab_layer_norm".into(),
                    decoder_weight: "vocab_projector.weight".into(),
                    bias: vec!["vocab_projector.bias".into()],
                },
                activation: Activation::from_name(&self.activation)?,
                norm: NormConfig::layer_norm(LAYER_NORM_EPS),
                tied: self.tie_word_embeddings,
            },
        })
    }
}

/// DistilBERT's tensor names, relative to the base model.
pub fn distilbert_names(cfg: &EncoderConfig) -> EncoderNames {
    let attn = &cfg.stack.layer.self_attention;
    EncoderNames {
        embeddings: EmbeddingNames {
            word: "embeddings.word_embeddings.weight".into(),
            position: Some("embeddings.position_embeddings.weight".into()),
            token_type: None,
            norm: Some("embeddings.LayerNorm".into()),
        },
        stack: StackNames {
            layer_prefix: "transformer.layer".into(),
            layer: LayerNames {
                self_attention: AttentionNames::separate(
                    "attention.q_lin",
                    "attention.k_lin",
                    "attention.v_lin",
                    "attention.out_lin",
                    attn,
                ),
                self_attention_norm: "sa_layer_norm".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: FeedForwardNames::two_layer("ffn.lin1", "ffn.lin2", true),
                feed_forward_norm: "output_layer_norm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: None,
        },
    }
}
