//! The course's decoder-only transformer as a checkpoint family (`model_type:
//! "ferroformer"`): every architectural knob is a config key, so a model trained with any
//! combination of positional encoding, norm placement and activation can be saved and loaded.

use serde::{Deserialize, Serialize};

use crate::arch::{DecoderConfig, DecoderNames, EmbeddingConfig, PositionalKind, StackConfig};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, AttentionConfig, FeedForwardConfig, LayerConfig, NormConfig, NormKind, RopeLayout,
};

/// Positional encoding choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positional {
    /// Fixed sinusoids (the original paper).
    Sinusoidal,
    /// Learned absolute positions (GPT-2).
    Learned,
    /// Rotary (Llama).
    Rotary,
}

fn default_model_type() -> String {
    "ferroformer".into()
}

/// `config.json` of a `ferroformer` decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseConfig {
    /// Always `ferroformer`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// FFN width.
    pub d_ff: usize,
    /// Longest sequence.
    pub max_seq_len: usize,
    /// Dropout.
    pub dropout: f64,
    /// Positional encoding.
    pub positional: Positional,
    /// Pre-norm.
    pub norm_first: bool,
    /// LayerNorm or RMSNorm.
    pub norm: NormKind,
    /// FFN activation.
    pub activation: Activation,
    /// Gated FFN (SwiGLU/GeGLU).
    pub gated_ffn: bool,
    /// Biases in the linear layers.
    pub bias: bool,
    /// LM head tied to the embeddings.
    pub tie_word_embeddings: bool,
    /// RoPE base (rotary only).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
}

fn default_theta() -> f64 {
    10000.0
}

impl CourseConfig {
    /// The decoder configuration these values describe.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        if self.num_heads == 0 || !self.d_model.is_multiple_of(self.num_heads) {
            return Err(Error::config(
                "d_model",
                format!(
                    "d_model ({}) must be a positive multiple of num_heads ({})",
                    self.d_model, self.num_heads
                ),
            ));
        }
        let attention = AttentionConfig {
            qkv_bias: self.bias,
            out_bias: self.bias,
            dropout: self.dropout,
            ..AttentionConfig::new(self.d_model, self.num_heads)?
        }
        .with_kv_heads(self.num_kv_heads)?;
        let feed_forward = FeedForwardConfig {
            d_model: self.d_model,
            d_ff: self.d_ff,
            activation: self.activation,
            gated: self.gated_ffn,
            bias: self.bias,
            dropout: self.dropout,
        };
        let norm = NormConfig {
            kind: self.norm,
            eps: 1e-5,
            bias: self.bias,
            weight_offset: 0.0,
        };
        Ok(DecoderConfig {
            embeddings: EmbeddingConfig {
                vocab_size: self.vocab_size,
                d_model: self.d_model,
                max_positions: self.max_seq_len,
                positional: match self.positional {
                    Positional::Sinusoidal => PositionalKind::Sinusoidal,
                    Positional::Learned => PositionalKind::Learned { offset: 0 },
                    Positional::Rotary => PositionalKind::Rotary {
                        base: self.rope_theta,
                        layout: RopeLayout::HalfSplit,
                        scaling: None,
                    },
                },
                type_vocab_size: None,
                norm: None,
                scale: None,
                dropout: self.dropout,
            },
            stack: StackConfig {
                layer: LayerConfig {
                    self_attention: attention,
                    cross_attention: None,
                    feed_forward,
                    norm,
                    norm_first: self.norm_first,
                    dropout: self.dropout,
                },
                num_layers: self.num_layers,
                // A pre-norm stack needs a norm after its last layer.
                final_norm: self.norm_first,
                sliding_window: None,
            },
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_bias: self.bias,
            arithmetic: Default::default(),
            final_logit_softcap: None,
        })
    }

    /// Tensor names (PyTorch's layer names; `embedding`, `position_embedding`, `norm`, `fc`).
    pub fn names(&self, cfg: &DecoderConfig) -> DecoderNames {
        let mut names = DecoderNames::torch(cfg);
        if self.gated_ffn {
            names.stack.layer.feed_forward =
                crate::nn::FeedForwardNames::gated("gate", "linear1", "linear2", self.bias);
        }
        names
    }
}
