//! The encoder-decoder transformer of "Attention Is All You Need", with the same knobs as
//! PyTorch's `nn.Transformer` and its parameter names.

use candle_core::Tensor;

use super::stack::{LayerStack, StackConfig, StackContext, StackNames, StackOutput};
use crate::error::{Error, Result};
use crate::nn::mask::attention_bias;
use crate::nn::{Activation, LayerCache, LayerConfig, LayerNames, Mode, Pass};
use crate::weights::Weights;

/// `nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers,
/// dim_feedforward, dropout, activation, layer_norm_eps, norm_first)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub nhead: usize,
    /// Encoder layers.
    pub num_encoder_layers: usize,
    /// Decoder layers.
    pub num_decoder_layers: usize,
    /// Feed-forward hidden width.
    pub dim_feedforward: usize,
    /// Dropout everywhere PyTorch applies it.
    pub dropout: f64,
    /// FFN activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Pre-norm layers.
    pub norm_first: bool,
}

impl Default for TransformerConfig {
    /// PyTorch's defaults: 512, 8 heads, 6 + 6 layers, 2048, dropout 0.1, ReLU, post-norm.
    fn default() -> Self {
        Self {
            d_model: 512,
            nhead: 8,
            num_encoder_layers: 6,
            num_decoder_layers: 6,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            norm_first: false,
        }
    }
}

impl TransformerConfig {
    fn stack(&self, cross: bool) -> Result<StackConfig> {
        Ok(StackConfig {
            layer: LayerConfig::standard(
                self.d_model,
                self.nhead,
                self.dim_feedforward,
                self.dropout,
                self.activation,
                self.norm_first,
                self.layer_norm_eps,
                cross,
            )?,
            num_layers: if cross {
                self.num_decoder_layers
            } else {
                self.num_encoder_layers
            },
            // nn.Transformer always ends both stacks with a LayerNorm.
            final_norm: true,
            sliding_window: None,
        })
    }
}

/// Encoder and decoder stacks over already-embedded inputs, like `nn.Transformer`
/// (`batch_first=True`).
#[derive(Debug, Clone)]
pub struct Transformer {
    encoder: LayerStack,
    decoder: LayerStack,
}

impl Transformer {
    /// Loads (or creates) the model under PyTorch's names (`encoder.layers.0.self_attn...`).
    pub fn load(w: &Weights, cfg: &TransformerConfig) -> Result<Self> {
        let enc = cfg.stack(false)?;
        let dec = cfg.stack(true)?;
        let names = |prefix: &str, c: &StackConfig| StackNames {
            layer_prefix: format!("{prefix}.layers"),
            layer: LayerNames::torch(&c.layer),
            final_norm: Some(format!("{prefix}.norm")),
        };
        Ok(Self {
            encoder: LayerStack::load(w, &enc, &names("encoder", &enc))?,
            decoder: LayerStack::load(w, &dec, &names("decoder", &dec))?,
        })
    }

    /// Fresh decoder caches for incremental decoding.
    pub fn new_caches(&self) -> Vec<LayerCache> {
        self.decoder.new_caches()
    }

    /// Encodes `src` `(batch, src_len, d_model)`; `src_mask` `(batch, src_len)` is 1 for real
    /// tokens (the opposite of PyTorch's `src_key_padding_mask`, see
    /// [`crate::nn::mask::from_key_padding_mask`]).
    pub fn encode(&self, src: &Tensor, src_mask: Option<&Tensor>, pass: Pass) -> Result<Tensor> {
        let (b, s, _) = src.dims3()?;
        let bias = attention_bias(src_mask, false, b, s, s, src.dtype(), src.device())?;
        Ok(self
            .encoder
            .forward(
                src,
                StackContext {
                    self_bias: bias.as_ref(),
                    mode: Mode::new(pass, Default::default()),
                    ..Default::default()
                },
            )?
            .hidden)
    }

    /// Decodes `tgt` `(batch, tgt_len, d_model)` against `memory`. `causal` applies the
    /// square subsequent mask; `tgt_mask` marks real target tokens (over cached + new).
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        src_mask: Option<&Tensor>,
        tgt_mask: Option<&Tensor>,
        causal: bool,
        caches: Option<&mut [LayerCache]>,
        pass: Pass,
    ) -> Result<StackOutput> {
        let (b, t, _) = tgt.dims3()?;
        let (mb, s, _) = memory.dims3()?;
        if mb != b {
            return Err(Error::shape(
                "memory",
                format!("(batch={b}, src_len, d_model)"),
                memory.dims(),
            ));
        }
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.self_attention.len())
            .unwrap_or(0);
        let self_bias =
            attention_bias(tgt_mask, causal, b, t, past + t, tgt.dtype(), tgt.device())?;
        let memory_bias = attention_bias(src_mask, false, b, t, s, tgt.dtype(), tgt.device())?;
        self.decoder.forward(
            tgt,
            StackContext {
                self_bias: self_bias.as_ref(),
                memory: Some(memory),
                memory_bias: memory_bias.as_ref(),
                caches,
                mode: Mode::new(pass, Default::default()),
                ..Default::default()
            },
        )
    }

    /// `nn.Transformer.forward(src, tgt, tgt_mask=causal, src_key_padding_mask,
    /// tgt_key_padding_mask, memory_key_padding_mask=src_key_padding_mask)`.
    pub fn forward(
        &self,
        src: &Tensor,
        tgt: &Tensor,
        src_mask: Option<&Tensor>,
        tgt_mask: Option<&Tensor>,
        causal: bool,
        pass: Pass,
    ) -> Result<Tensor> {
        let memory = self.encode(src, src_mask, pass)?;
        Ok(self
            .decode(tgt, &memory, src_mask, tgt_mask, causal, None, pass)?
            .hidden)
    }
}
