//! The encoder-decoder language model of the pretrained sequence-to-sequence families (T5,
//! BART, mBART, Marian, M2M100/NLLB, Pegasus): token embeddings and a layer stack on each
//! side, cross-attention from every decoder layer to the encoder output, and a
//! language-model head. The families differ only in configuration (positions, norm
//! placement, activations, T5's relative position bias, scaling) and tensor names.

use candle_core::Tensor;

use super::embeddings::{EmbeddingConfig, EmbeddingNames, Embeddings};
use super::heads::LmHead;
use super::stack::{LayerStack, StackConfig, StackContext, StackNames};
use crate::error::{Error, Result};
use crate::nn::mask::attention_bias;
use crate::nn::{Arithmetic, LayerCache, Mode, Pass, RelativePositionBias};
use crate::weights::Weights;

/// T5's relative position bias (one table per stack, shared by its layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeAttentionConfig {
    /// Buckets (`relative_attention_num_buckets`).
    pub num_buckets: usize,
    /// Distance beyond which all positions share a bucket
    /// (`relative_attention_max_distance`).
    pub max_distance: usize,
}

/// Shape of an encoder-decoder language model.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderDecoderConfig {
    /// Encoder input embeddings.
    pub encoder_embeddings: EmbeddingConfig,
    /// Encoder layers (no cross-attention).
    pub encoder: StackConfig,
    /// Decoder input embeddings (their vocabulary is the output vocabulary).
    pub decoder_embeddings: EmbeddingConfig,
    /// Decoder layers (with cross-attention).
    pub decoder: StackConfig,
    /// Relative position bias in every self-attention (T5), if any.
    pub relative_attention: Option<RelativeAttentionConfig>,
    /// The LM head reuses the decoder's token embedding table.
    pub tie_word_embeddings: bool,
    /// Factor applied to the decoder output before the head (T5 with a tied head:
    /// `d_model ** -0.5`).
    pub lm_head_scale: Option<f64>,
    /// A constant bias added to the logits (`final_logits_bias` of BART, mBART, Marian,
    /// Pegasus).
    pub final_logits_bias: bool,
    /// Whose arithmetic every op follows.
    pub arithmetic: Arithmetic,
}

/// Where an encoder-decoder model's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderDecoderNames {
    /// Encoder embeddings.
    pub encoder_embeddings: EmbeddingNames,
    /// Encoder layers.
    pub encoder: StackNames,
    /// The encoder's relative position bias table (T5).
    pub encoder_relative_bias: Option<String>,
    /// Decoder embeddings.
    pub decoder_embeddings: EmbeddingNames,
    /// Decoder layers.
    pub decoder: StackNames,
    /// The decoder's relative position bias table (T5).
    pub decoder_relative_bias: Option<String>,
    /// LM head prefix (ignored when tied).
    pub lm_head: String,
    /// The `(1, vocab)` logits bias.
    pub final_logits_bias: Option<String>,
}

/// Output of one decoder pass.
#[derive(Debug, Clone)]
pub struct Seq2SeqDecoderOutput {
    /// `(batch, tgt_len, vocab)`
    pub logits: Tensor,
    /// Last decoder hidden state `(batch, tgt_len, d_model)`.
    pub hidden: Tensor,
}

/// Embeddings + encoder stack, embeddings + decoder stack with cross-attention, LM head.
#[derive(Debug, Clone)]
pub struct EncoderDecoderTransformer {
    cfg: EncoderDecoderConfig,
    encoder_embeddings: Embeddings,
    encoder: LayerStack,
    encoder_bias: Option<RelativePositionBias>,
    decoder_embeddings: Embeddings,
    decoder: LayerStack,
    decoder_bias: Option<RelativePositionBias>,
    lm_head: LmHead,
    final_logits_bias: Option<Tensor>,
}

impl EncoderDecoderTransformer {
    /// Loads (or creates, in a trainable store) the model.
    pub fn load(
        w: &Weights,
        cfg: &EncoderDecoderConfig,
        names: &EncoderDecoderNames,
    ) -> Result<Self> {
        Self::load_split(w, w, cfg, names)
    }

    /// Like [`Self::load`], with the encoder and decoder under `body` and an untied LM head
    /// and the logits bias under `head` (BART keeps the body under `model.` and `lm_head`,
    /// `final_logits_bias` at the root).
    pub fn load_split(
        body: &Weights,
        head: &Weights,
        cfg: &EncoderDecoderConfig,
        names: &EncoderDecoderNames,
    ) -> Result<Self> {
        let w = body;
        if cfg.encoder.layer.cross_attention.is_some() {
            return Err(Error::config(
                "encoder",
                "encoder layers have no cross-attention",
            ));
        }
        if cfg.decoder.layer.cross_attention.is_none() {
            return Err(Error::config(
                "decoder",
                "decoder layers of an encoder-decoder model need cross-attention",
            ));
        }
        let encoder_embeddings =
            Embeddings::load(w, &cfg.encoder_embeddings, &names.encoder_embeddings)?;
        let decoder_embeddings =
            Embeddings::load(w, &cfg.decoder_embeddings, &names.decoder_embeddings)?;
        let encoder = LayerStack::load(w, &cfg.encoder, &names.encoder)?;
        let decoder = LayerStack::load(w, &cfg.decoder, &names.decoder)?;
        let relative = |stack: &StackConfig, name: &Option<String>, bidirectional: bool| match (
            cfg.relative_attention,
            name,
        ) {
            (None, _) => Ok(None),
            (Some(r), Some(name)) => RelativePositionBias::load(
                w,
                r.num_buckets,
                r.max_distance,
                stack.layer.self_attention.num_heads,
                bidirectional,
                name,
            )
            .map(Some),
            (Some(_), None) => Err(Error::config(
                "relative_attention",
                "the relative position bias needs a tensor name",
            )),
        };
        let encoder_bias = relative(&cfg.encoder, &names.encoder_relative_bias, true)?;
        let decoder_bias = relative(&cfg.decoder, &names.decoder_relative_bias, false)?;
        let d_model = cfg.decoder_embeddings.d_model;
        let vocab = cfg.decoder_embeddings.vocab_size;
        let lm_head = if cfg.tie_word_embeddings {
            LmHead::tied(decoder_embeddings.word_embeddings())?
        } else {
            LmHead::load(head, d_model, vocab, &names.lm_head, false)?
        };
        let final_logits_bias = match (cfg.final_logits_bias, &names.final_logits_bias) {
            (false, _) => None,
            (true, Some(name)) => {
                Some(head.get_init((1, vocab), name, candle_nn::Init::Const(0.0))?)
            }
            (true, None) => {
                return Err(Error::config(
                    "final_logits_bias",
                    "the logits bias needs a tensor name",
                ))
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            encoder_embeddings,
            encoder,
            encoder_bias,
            decoder_embeddings,
            decoder,
            decoder_bias,
            lm_head,
            final_logits_bias,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderDecoderConfig {
        &self.cfg
    }

    /// The device the parameters live on (inputs must be created there).
    pub fn device(&self) -> &candle_core::Device {
        self.encoder_embeddings.word_embeddings().device()
    }

    /// Fresh decoder caches (self-attention keys and values grow with each step; the
    /// cross-attention ones are computed from the encoder output at the first step and
    /// reused).
    pub fn new_caches(&self) -> Vec<LayerCache> {
        self.decoder.new_caches()
    }

    /// Encodes `input_ids` `(batch, src_len)`; `attention_mask` `(batch, src_len)` marks the
    /// real tokens (1) of a padded batch. Returns `(batch, src_len, d_model)`.
    pub fn encode(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        self.encode_with(input_ids, attention_mask, Pass::INFERENCE)
    }

    /// [`Self::encode`] in training or inference mode.
    pub fn encode_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (b, s) = input_ids
            .dims2()
            .map_err(|_| Error::shape("input_ids", "(batch, src_len)", input_ids.dims()))?;
        check_mask("attention_mask", attention_mask, b, s)?;
        let mode = Mode::new(pass, self.cfg.arithmetic);
        let x = self
            .encoder_embeddings
            .forward(input_ids, None, None, 0, mode)?
            .hidden;
        let bias = attention_bias(attention_mask, false, b, s, s, x.dtype(), x.device())?;
        let position_bias = match &self.encoder_bias {
            Some(r) => Some(r.bias(0, s, s)?.to_dtype(x.dtype())?),
            None => None,
        };
        Ok(self
            .encoder
            .forward(
                &x,
                StackContext {
                    self_bias: bias.as_ref(),
                    position_bias: position_bias.as_ref(),
                    mode,
                    ..Default::default()
                },
            )?
            .hidden)
    }

    /// Runs the decoder on `decoder_input_ids` `(batch, tgt_len)` against the encoder
    /// output `memory` `(batch, src_len, d_model)` (whose real tokens `encoder_mask` marks).
    /// With `caches`, the ids continue what the caches hold (incremental decoding).
    pub fn decode(
        &self,
        decoder_input_ids: &Tensor,
        memory: &Tensor,
        encoder_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
    ) -> Result<Seq2SeqDecoderOutput> {
        self.decode_with(
            decoder_input_ids,
            memory,
            encoder_mask,
            caches,
            Pass::INFERENCE,
        )
    }

    /// [`Self::decode`] in training or inference mode.
    pub fn decode_with(
        &self,
        decoder_input_ids: &Tensor,
        memory: &Tensor,
        encoder_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
        pass: Pass,
    ) -> Result<Seq2SeqDecoderOutput> {
        let (b, t) = decoder_input_ids.dims2().map_err(|_| {
            Error::shape(
                "decoder_input_ids",
                "(batch, tgt_len)",
                decoder_input_ids.dims(),
            )
        })?;
        let (mb, s, _) = memory.dims3()?;
        if mb != b {
            return Err(Error::shape(
                "encoder output",
                format!("(batch={b}, src_len, d_model)"),
                memory.dims(),
            ));
        }
        check_mask("encoder attention_mask", encoder_mask, b, s)?;
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.self_attention.len())
            .unwrap_or(0);
        let mode = Mode::new(pass, self.cfg.arithmetic);
        let x = self
            .decoder_embeddings
            .forward(decoder_input_ids, None, None, past, mode)?
            .hidden;
        let self_bias = attention_bias(None, true, b, t, past + t, x.dtype(), x.device())?;
        let memory_bias = attention_bias(encoder_mask, false, b, t, s, x.dtype(), x.device())?;
        let position_bias = match &self.decoder_bias {
            Some(r) => Some(r.bias(past, t, past + t)?.to_dtype(x.dtype())?),
            None => None,
        };
        let mut hidden = self
            .decoder
            .forward(
                &x,
                StackContext {
                    self_bias: self_bias.as_ref(),
                    memory: Some(memory),
                    memory_bias: memory_bias.as_ref(),
                    position_bias: position_bias.as_ref(),
                    caches,
                    mode,
                    ..Default::default()
                },
            )?
            .hidden;
        let out = hidden.clone();
        if let Some(scale) = self.cfg.lm_head_scale {
            hidden = (hidden * scale)?;
        }
        let mut logits = self.lm_head.forward(&hidden)?;
        if let Some(bias) = &self.final_logits_bias {
            logits = logits.broadcast_add(&bias.to_dtype(logits.dtype())?)?;
        }
        Ok(Seq2SeqDecoderOutput {
            logits,
            hidden: out,
        })
    }

    /// Encoder and decoder in one call (teacher forcing): logits `(batch, tgt_len, vocab)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        decoder_input_ids: &Tensor,
        pass: Pass,
    ) -> Result<Tensor> {
        let memory = self.encode_with(input_ids, attention_mask, pass)?;
        Ok(self
            .decode_with(decoder_input_ids, &memory, attention_mask, None, pass)?
            .logits)
    }
}

fn check_mask(what: &str, mask: Option<&Tensor>, b: usize, s: usize) -> Result<()> {
    match mask {
        Some(m) if m.dims() != [b, s] => Err(Error::shape(what, format!("({b}, {s})"), m.dims())),
        _ => Ok(()),
    }
}
