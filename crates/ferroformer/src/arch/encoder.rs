//! Encoder-only transformer: embeddings, positional information, N layers.

use candle_core::Tensor;

use super::embeddings::{EmbeddingConfig, EmbeddingNames, Embeddings, PositionalKind};
use super::stack::{LayerStack, StackConfig, StackContext, StackNames, StackOutput};
use crate::error::Result;
use crate::nn::mask::attention_bias;
use crate::nn::{Activation, LayerConfig, LayerNames};
use crate::weights::Weights;

/// Shape of an encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Input embeddings.
    pub embeddings: EmbeddingConfig,
    /// Layers.
    pub stack: StackConfig,
}

impl EncoderConfig {
    /// The encoder of the course and the original paper: token embedding + sinusoidal
    /// encoding, post-norm layers with ReLU, LayerNorm eps 1e-5, no final norm.
    pub fn new(
        vocab_size: usize,
        d_model: usize,
        num_layers: usize,
        num_heads: usize,
        d_ff: usize,
        dropout: f64,
        max_seq_len: usize,
    ) -> Result<Self> {
        Ok(Self {
            embeddings: EmbeddingConfig {
                vocab_size,
                d_model,
                max_positions: max_seq_len,
                positional: PositionalKind::Sinusoidal,
                type_vocab_size: None,
                norm: None,
                scale: None,
                dropout,
            },
            stack: StackConfig {
                layer: LayerConfig::standard(
                    d_model,
                    num_heads,
                    d_ff,
                    dropout,
                    Activation::Relu,
                    false,
                    1e-5,
                    false,
                )?,
                num_layers,
                final_norm: false,
            },
        })
    }
}

/// Where an encoder's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderNames {
    /// Embeddings.
    pub embeddings: EmbeddingNames,
    /// Layers.
    pub stack: StackNames,
}

impl EncoderNames {
    /// `embedding.weight`, `layers.{i}.` with PyTorch layer names, `norm`.
    pub fn torch(cfg: &EncoderConfig) -> Self {
        Self {
            embeddings: EmbeddingNames {
                word: "embedding.weight".into(),
                position: Some("position_embedding.weight".into()),
                token_type: None,
                norm: None,
            },
            stack: StackNames {
                layer_prefix: "layers".into(),
                layer: LayerNames::torch(&cfg.stack.layer),
                final_norm: Some("norm".into()),
            },
        }
    }
}

/// Embeddings followed by a stack of encoder layers.
#[derive(Debug, Clone)]
pub struct TransformerEncoder {
    embeddings: Embeddings,
    stack: LayerStack,
}

impl TransformerEncoder {
    /// Loads (or creates) the encoder.
    pub fn load(w: &Weights, cfg: &EncoderConfig, names: &EncoderNames) -> Result<Self> {
        let head_dim = cfg.stack.layer.self_attention.head_dim;
        Ok(Self {
            embeddings: Embeddings::load_with_rotary(
                w,
                &cfg.embeddings,
                &names.embeddings,
                head_dim,
            )?,
            stack: LayerStack::load(w, &cfg.stack, &names.stack)?,
        })
    }

    /// The embeddings.
    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// The layers.
    pub fn stack(&self) -> &LayerStack {
        &self.stack
    }

    /// Encodes `input_ids` `(batch, seq)`; `attention_mask` `(batch, seq)` marks real tokens
    /// with 1 and padding with 0. Positions are `0..seq` in every row.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        train: bool,
        need_weights: bool,
    ) -> Result<StackOutput> {
        self.forward_with_positions(
            input_ids,
            attention_mask,
            token_type_ids,
            None,
            train,
            need_weights,
        )
    }

    /// Like [`TransformerEncoder::forward`] with explicit `position_ids` `(batch, seq)`, for
    /// families whose positions are not `0..seq` (RoBERTa counts from its padding index, see
    /// [`super::embeddings::position_ids_after_padding_index`]).
    pub fn forward_with_positions(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        train: bool,
        need_weights: bool,
    ) -> Result<StackOutput> {
        let emb = self
            .embeddings
            .forward(input_ids, token_type_ids, position_ids, 0, train)?;
        let (b, s, _) = emb.hidden.dims3()?;
        let bias = attention_bias(
            attention_mask,
            false,
            b,
            s,
            s,
            emb.hidden.dtype(),
            emb.hidden.device(),
        )?;
        self.stack.forward(
            &emb.hidden,
            StackContext {
                self_bias: bias.as_ref(),
                rope: emb.rope.as_ref(),
                train,
                need_weights,
                ..Default::default()
            },
        )
    }
}
