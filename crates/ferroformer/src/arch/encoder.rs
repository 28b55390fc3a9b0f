//! Encoder-only transformer: embeddings, positional information, N layers.

use candle_core::{DType, Tensor};

use super::embeddings::{EmbeddingConfig, EmbeddingNames, Embeddings, PositionalKind};
use super::stack::{LayerStack, StackConfig, StackContext, StackNames, StackOutput};
use crate::error::Result;
use crate::nn::mask::attention_bias;
use crate::nn::{Activation, LayerConfig, LayerNames, Mode, Pass};
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
                sliding_window: None,
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
        pass: Pass,
    ) -> Result<StackOutput> {
        self.forward_with_positions(input_ids, attention_mask, token_type_ids, None, pass)
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
        pass: Pass,
    ) -> Result<StackOutput> {
        // Encoders compute with the reference arithmetic (no GGUF encoder is loaded).
        let mode = Mode::new(pass, Default::default());
        let emb = self
            .embeddings
            .forward(input_ids, token_type_ids, position_ids, 0, mode)?;
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
                mode,
                ..Default::default()
            },
        )
    }

    /// Inference on the real tokens only: the padding of `attention_mask` `(batch, seq)` is
    /// dropped, the sequences are packed end to end into one row, and every layer runs on
    /// `tokens` rows instead of `batch × seq` (attention stays within each sequence). The
    /// result is `(batch, seq, d_model)` like [`TransformerEncoder::forward_with_positions`],
    /// equal to it at every real token; **padding positions hold zeros** instead of the
    /// values a padded run computes for them (which no task reads).
    ///
    /// Falls back to the padded computation when packing does not apply (no padding, real
    /// tokens not contiguous in a row, rotary positions).
    pub fn forward_packed(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        position_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        let emb =
            self.embeddings
                .forward(input_ids, token_type_ids, position_ids, 0, Mode::INFERENCE)?;
        let (b, s, d) = emb.hidden.dims3()?;
        let lengths = if emb.rope.is_some() {
            None
        } else {
            packed_rows(attention_mask, b, s)?
        };
        let Some((lengths, index)) = lengths else {
            return Ok(self
                .forward_with_positions(
                    input_ids,
                    Some(attention_mask),
                    token_type_ids,
                    position_ids,
                    Pass::INFERENCE,
                )?
                .hidden);
        };
        let index = Tensor::from_vec(index, lengths.iter().sum::<usize>(), emb.hidden.device())?;
        let packed = emb
            .hidden
            .reshape((b * s, d))?
            .index_select(&index, 0)?
            .unsqueeze(0)?;
        let hidden = self.stack_packed(&packed, &lengths)?;
        let full = Tensor::zeros((b * s, d), hidden.dtype(), hidden.device())?.index_add(
            &index,
            &hidden.squeeze(0)?,
            0,
        )?;
        Ok(full.reshape((b, s, d))?)
    }
}

impl TransformerEncoder {
    /// The layers over packed sequences. On the CPU with several threads, the sequences are
    /// split into one group per thread (balanced by tokens) and the groups run side by side,
    /// each with single-threaded kernels: the sequences never interact, and whole layers in
    /// parallel beat splitting every matrix product between threads.
    fn stack_packed(&self, packed: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let threads = candle_core::utils::get_num_threads();
        let total: usize = lengths.iter().sum();
        let run = |x: &Tensor, lens: &[usize]| -> Result<Tensor> {
            Ok(self
                .stack
                .forward(
                    x,
                    StackContext {
                        packed: Some(lens),
                        ..Default::default()
                    },
                )?
                .hidden)
        };
        // Below a few hundred tokens one group keeps every thread busy inside its GEMMs.
        if threads < 2 || !packed.device().is_cpu() || lengths.len() < 2 || total < 256 {
            return run(packed, lengths);
        }
        // Contiguous groups of sequences with about total / threads tokens each.
        let mut groups: Vec<(usize, usize, usize, usize)> = Vec::new(); // seqs, tokens
        let (mut seq_start, mut tok_start, mut tokens) = (0, 0, 0);
        for (i, &len) in lengths.iter().enumerate() {
            tokens += len;
            let target = total * (groups.len() + 1) / threads;
            if tok_start + tokens >= target && groups.len() + 1 < threads {
                groups.push((seq_start, i + 1, tok_start, tokens));
                (seq_start, tok_start, tokens) = (i + 1, tok_start + tokens, 0);
            }
        }
        if seq_start < lengths.len() {
            groups.push((seq_start, lengths.len(), tok_start, tokens));
        }
        use rayon::prelude::*;
        let outs: Vec<Result<Tensor>> = groups
            .par_iter()
            .map(|&(s0, s1, t0, n)| {
                crate::nn::kernels::serial(|| run(&packed.narrow(1, t0, n)?, &lengths[s0..s1]))
            })
            .collect();
        let outs = outs.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&outs, 1)?)
    }
}

/// Lengths of the real-token runs of `mask` `(batch, seq)` and their flat positions, when
/// every row's real tokens are one contiguous run (left or right padding) and some row is
/// padded; `None` otherwise.
fn packed_rows(mask: &Tensor, b: usize, s: usize) -> Result<Option<(Vec<usize>, Vec<u32>)>> {
    if mask.dims() != [b, s] {
        return Err(crate::Error::shape(
            "attention_mask",
            format!("({b}, {s})"),
            mask.dims(),
        ));
    }
    let rows = mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let mut lengths = Vec::with_capacity(b);
    let mut index = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let first = row.iter().position(|&m| m != 0).unwrap_or(0);
        let len = row.iter().filter(|&&m| m != 0).count();
        if row[first..first + len].contains(&0) {
            return Ok(None);
        }
        lengths.push(len);
        index.extend((first..first + len).map(|c| (r * s + c) as u32));
    }
    if index.len() == b * s {
        return Ok(None);
    }
    Ok(Some((lengths, index)))
}
