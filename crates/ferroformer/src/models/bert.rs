//! BERT (`BertModel`): learned positions and token types, post-norm layers with GELU, and
//! the CLS pooler, all on the shared blocks.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::arch::heads::ClsPooler;
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
}

impl BertConfig {
    /// The encoder configuration these values describe.
    pub fn encoder_config(&self) -> Result<EncoderConfig> {
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
            },
            final_norm: None,
        },
    }
}

/// `BertModel` outputs.
#[derive(Debug, Clone)]
pub struct BertOutput {
    /// `(batch, seq, hidden)`
    pub last_hidden_state: Tensor,
    /// `(batch, hidden)`; `None` for a checkpoint without a pooler.
    pub pooler_output: Option<Tensor>,
}

/// The BERT encoder with its pooler.
#[derive(Debug, Clone)]
pub struct BertModel {
    config: BertConfig,
    encoder: TransformerEncoder,
    pooler: Option<ClsPooler>,
}

impl BertModel {
    /// Loads from weights rooted at the base model or at a task model (`bert.` prefix).
    pub fn load(w: &Weights, config: &BertConfig) -> Result<Self> {
        let w = super::under_prefix_if_present(w, "bert", "embeddings.word_embeddings.weight");
        let cfg = config.encoder_config()?;
        let encoder = TransformerEncoder::load(&w, &cfg, &bert_names(&cfg))?;
        let pooler = if w.is_trainable() || w.contains("pooler.dense.weight") {
            Some(ClsPooler::load(&w, config.hidden_size, "pooler.dense")?)
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            pooler,
        })
    }

    /// Loads `config.json` and the safetensors weights of a checkpoint directory.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config: BertConfig = super::read_config(dir)?;
        let files = super::checkpoint_files(dir)?;
        let w = Weights::from_safetensors(&files, dtype, device)?;
        Self::load(&w, &config)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The encoder.
    pub fn encoder(&self) -> &TransformerEncoder {
        &self.encoder
    }

    /// Runs the model. `attention_mask` and `token_type_ids` are `(batch, seq)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertOutput> {
        let (_, s) = input_ids
            .dims2()
            .map_err(|_| Error::shape("input_ids", "(batch, seq)", input_ids.dims()))?;
        if s > self.config.max_position_embeddings {
            return Err(Error::PositionOutOfRange {
                what: "BERT position embeddings".into(),
                position: s - 1,
                max: self.config.max_position_embeddings,
            });
        }
        let out = self
            .encoder
            .forward(input_ids, attention_mask, token_type_ids, false, false)?;
        let pooler_output = match &self.pooler {
            Some(p) => Some(p.forward(&out.hidden)?),
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state: out.hidden,
            pooler_output,
        })
    }
}
