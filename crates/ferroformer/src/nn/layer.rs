//! Encoder and decoder layers: masked self-attention, optional cross-attention, and a
//! feed-forward sublayer, each wrapped in a residual connection with a norm placed after
//! (post-norm, the original paper and BERT) or before (pre-norm, GPT-2 and Llama).

use candle_core::Tensor;

use super::attention::{
    AttentionConfig, AttentionContext, AttentionNames, KvCache, MultiHeadAttention,
};
use super::feed_forward::{Activation, FeedForward, FeedForwardConfig, FeedForwardNames};
use super::norm::{Norm, NormConfig};
use super::ops::Mode;
use super::positional::RopeTables;
use crate::error::Result;
use crate::weights::Weights;

/// Shape and options of one transformer layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    /// Self-attention.
    pub self_attention: AttentionConfig,
    /// Cross-attention to an encoder output (decoder layers of encoder-decoder models).
    pub cross_attention: Option<AttentionConfig>,
    /// Feed-forward sublayer.
    pub feed_forward: FeedForwardConfig,
    /// Norm used around every sublayer.
    pub norm: NormConfig,
    /// Pre-norm (`x + f(norm(x))`) instead of post-norm (`norm(x + f(x))`).
    pub norm_first: bool,
    /// Dropout on each sublayer's output before the residual addition, during training.
    pub dropout: f64,
}

impl LayerConfig {
    /// The layer of PyTorch's `nn.TransformerEncoderLayer` (`cross = false`) or
    /// `nn.TransformerDecoderLayer` (`cross = true`): biases everywhere, LayerNorm, the
    /// same dropout on attention weights, the FFN hidden layer and each sublayer output.
    #[allow(clippy::too_many_arguments)]
    pub fn standard(
        d_model: usize,
        num_heads: usize,
        d_ff: usize,
        dropout: f64,
        activation: Activation,
        norm_first: bool,
        norm_eps: f64,
        cross: bool,
    ) -> Result<Self> {
        let mut attention = AttentionConfig::new(d_model, num_heads)?;
        attention.dropout = dropout;
        attention.validate()?;
        let mut feed_forward = FeedForwardConfig::new(d_model, d_ff, activation);
        feed_forward.dropout = dropout;
        Ok(Self {
            cross_attention: cross.then(|| attention.clone()),
            self_attention: attention,
            feed_forward,
            norm: NormConfig::layer_norm(norm_eps),
            norm_first,
            dropout,
        })
    }
}

/// Where a layer's parameters are stored: the weight-name map a model family provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    /// Self-attention projections.
    pub self_attention: AttentionNames,
    /// Norm of the self-attention sublayer.
    pub self_attention_norm: String,
    /// Cross-attention projections (when configured).
    pub cross_attention: Option<AttentionNames>,
    /// Norm of the cross-attention sublayer.
    pub cross_attention_norm: Option<String>,
    /// Feed-forward projections.
    pub feed_forward: FeedForwardNames,
    /// Norm of the feed-forward sublayer.
    pub feed_forward_norm: String,
    /// Norms of each self-attention query and key head, before the rotation (Qwen3's and
    /// Gemma 3's `self_attn.q_norm` / `self_attn.k_norm`), configured as the layer's norms.
    pub qk_norms: Option<(String, String)>,
    /// Norms of the self-attention and feed-forward outputs before each residual addition
    /// (Gemma 2/3's `post_attention_layernorm` / `post_feedforward_layernorm`).
    pub post_norms: Option<(String, String)>,
}

impl LayerNames {
    /// PyTorch's `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer` names:
    /// `self_attn`, `multihead_attn`, `linear1`, `linear2`, `norm1`, `norm2` (`norm3`).
    pub fn torch(cfg: &LayerConfig) -> Self {
        let cross = cfg.cross_attention.as_ref();
        Self {
            self_attention: AttentionNames::torch("self_attn", &cfg.self_attention),
            self_attention_norm: "norm1".into(),
            cross_attention: cross.map(|c| AttentionNames::torch("multihead_attn", c)),
            cross_attention_norm: cross.map(|_| "norm2".into()),
            feed_forward: FeedForwardNames::two_layer("linear1", "linear2", cfg.feed_forward.bias),
            feed_forward_norm: if cross.is_some() { "norm3" } else { "norm2" }.into(),
            qk_norms: None,
            post_norms: None,
        }
    }
}

/// Per-layer state for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    /// Self-attention keys and values so far.
    pub self_attention: KvCache,
    /// Cross-attention keys and values of the encoder output.
    pub cross_attention: KvCache,
}

/// Inputs besides the hidden states. `Default`: no masks, no memory, inference.
#[derive(Debug, Default)]
pub struct LayerContext<'a> {
    /// Additive self-attention bias (padding and/or causal), see [`super::mask`].
    pub self_bias: Option<&'a Tensor>,
    /// Encoder output for cross-attention.
    pub memory: Option<&'a Tensor>,
    /// Additive cross-attention bias (encoder padding).
    pub memory_bias: Option<&'a Tensor>,
    /// Additive position bias for self-attention (T5).
    pub position_bias: Option<&'a Tensor>,
    /// Rotary tables for self-attention.
    pub rope: Option<&'a RopeTables>,
    /// Cache for incremental decoding.
    pub cache: Option<&'a mut LayerCache>,
    /// Training or inference, attention weights wanted, whose arithmetic.
    pub mode: Mode,
    /// Lengths of the sequences packed end to end in a `(1, tokens, d_model)` input (see
    /// [`super::AttentionContext::packed`]).
    pub packed: Option<&'a [usize]>,
}

/// Output of a layer.
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// `(batch, seq, d_model)`
    pub hidden: Tensor,
    /// Self-attention weights, when requested.
    pub self_attention_weights: Option<Tensor>,
    /// Cross-attention weights, when requested and present.
    pub cross_attention_weights: Option<Tensor>,
}

/// One encoder or decoder layer.
#[derive(Debug, Clone)]
pub struct TransformerLayer {
    cfg: LayerConfig,
    self_attention: MultiHeadAttention,
    self_attention_norm: Norm,
    cross: Option<(MultiHeadAttention, Norm)>,
    feed_forward: FeedForward,
    feed_forward_norm: Norm,
    /// Norms of the self-attention and feed-forward outputs before each residual addition
    /// (Gemma 2/3's `post_attention_layernorm` and `post_feedforward_layernorm`).
    post_norms: Option<(Norm, Norm)>,
}

impl TransformerLayer {
    /// Loads (or creates) a layer from the names a family provides.
    pub fn load(w: &Weights, cfg: &LayerConfig, names: &LayerNames) -> Result<Self> {
        let d = cfg.self_attention.d_model;
        let mut self_attention =
            MultiHeadAttention::load(w, &cfg.self_attention, &names.self_attention)?;
        if let Some((q, k)) = &names.qk_norms {
            let hd = cfg.self_attention.head_dim;
            self_attention = self_attention.with_qk_norms(
                Norm::load(w, hd, &cfg.norm, q)?,
                Norm::load(w, hd, &cfg.norm, k)?,
            )?;
        }
        let self_attention_norm = Norm::load(w, d, &cfg.norm, &names.self_attention_norm)?;
        let cross = match (
            &cfg.cross_attention,
            &names.cross_attention,
            &names.cross_attention_norm,
        ) {
            (Some(c), Some(n), Some(norm)) => Some((
                MultiHeadAttention::load(w, c, n)?,
                Norm::load(w, d, &cfg.norm, norm)?,
            )),
            (None, _, _) => None,
            _ => {
                return Err(crate::Error::config(
                    "cross_attention",
                    "a layer with cross-attention needs names for its projections and norm",
                ))
            }
        };
        let feed_forward = FeedForward::load(w, &cfg.feed_forward, &names.feed_forward)?;
        let feed_forward_norm = Norm::load(w, d, &cfg.norm, &names.feed_forward_norm)?;
        let layer = Self {
            cfg: cfg.clone(),
            self_attention,
            self_attention_norm,
            cross,
            feed_forward,
            feed_forward_norm,
            post_norms: None,
        };
        match &names.post_norms {
            Some((attn, ffn)) => layer.with_post_norms(
                Norm::load(w, d, &cfg.norm, attn)?,
                Norm::load(w, d, &cfg.norm, ffn)?,
            ),
            None => Ok(layer),
        }
    }

    /// Assembles a layer without cross-attention from its sublayers and norms.
    pub fn from_parts(
        cfg: &LayerConfig,
        self_attention: MultiHeadAttention,
        self_attention_norm: Norm,
        feed_forward: FeedForward,
        feed_forward_norm: Norm,
    ) -> Result<Self> {
        if cfg.cross_attention.is_some() {
            return Err(crate::Error::config(
                "cross_attention",
                "TransformerLayer::from_parts builds layers without cross-attention",
            ));
        }
        Ok(Self {
            cfg: cfg.clone(),
            self_attention,
            self_attention_norm,
            cross: None,
            feed_forward,
            feed_forward_norm,
            post_norms: None,
        })
    }

    /// Adds norms on the self-attention and feed-forward outputs, applied before each
    /// residual addition: `x + post(f(pre(x)))` (Gemma 2/3's sandwich norms). Pre-norm
    /// layers only.
    pub fn with_post_norms(mut self, attention: Norm, feed_forward: Norm) -> Result<Self> {
        if !self.cfg.norm_first {
            return Err(crate::Error::config(
                "norm_first",
                "post-sublayer norms go with pre-norm layers",
            ));
        }
        self.post_norms = Some((attention, feed_forward));
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &LayerConfig {
        &self.cfg
    }

    fn dropout(&self, x: Tensor, mode: Mode) -> Result<Tensor> {
        if mode.train && self.cfg.dropout > 0.0 {
            super::dropout::dropout(&x, self.cfg.dropout)
        } else {
            Ok(x)
        }
    }

    /// Residual block: `x + f(norm(x))` (pre-norm) or `norm(x + f(x))` (post-norm).
    fn residual(
        &self,
        x: &Tensor,
        norm: &Norm,
        post_norm: Option<&Norm>,
        mode: Mode,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if self.cfg.norm_first {
            let mut y = f(&norm.forward_with(x, None, mode.arithmetic)?)?;
            if let Some(post) = post_norm {
                y = post.forward_with(&y, None, mode.arithmetic)?;
            }
            Ok((x + self.dropout(y, mode)?)?)
        } else {
            let y = self.dropout(f(x)?, mode)?;
            norm.forward_with(x, Some(&y), mode.arithmetic)
        }
    }

    /// Runs the layer on `x` of shape `(batch, seq, d_model)`.
    pub fn forward(&self, x: &Tensor, ctx: LayerContext) -> Result<LayerOutput> {
        let mode = ctx.mode;
        let (self_cache, cross_cache) = match ctx.cache {
            Some(c) => (Some(&mut c.self_attention), Some(&mut c.cross_attention)),
            None => (None, None),
        };
        let mut self_weights = None;
        let post = self.post_norms.as_ref();
        let h = self.residual(
            x,
            &self.self_attention_norm,
            post.map(|p| &p.0),
            mode,
            |inp| {
                let out = self.self_attention.forward(
                    inp,
                    AttentionContext {
                        bias: ctx.self_bias,
                        position_bias: ctx.position_bias,
                        rope: ctx.rope,
                        cache: self_cache,
                        mode,
                        packed: ctx.packed,
                        ..Default::default()
                    },
                )?;
                self_weights = out.weights;
                Ok(out.output)
            },
        )?;
        let mut cross_weights = None;
        let h =
            match (&self.cross, ctx.memory) {
                (Some((attn, norm)), Some(mem)) => self.residual(&h, norm, None, mode, |inp| {
                    let out = attn.forward(
                        inp,
                        AttentionContext {
                            memory: Some(mem),
                            bias: ctx.memory_bias,
                            cache: cross_cache,
                            mode,
                            ..Default::default()
                        },
                    )?;
                    cross_weights = out.weights;
                    Ok(out.output)
                })?,
                (Some(_), None) => return Err(crate::Error::Invalid(
                    "this decoder layer has cross-attention and needs the encoder output (memory)"
                        .into(),
                )),
                (None, _) => h,
            };
        let h = self.residual(
            &h,
            &self.feed_forward_norm,
            post.map(|p| &p.1),
            mode,
            |inp| self.feed_forward.forward(inp, mode),
        )?;
        Ok(LayerOutput {
            hidden: h,
            self_attention_weights: self_weights,
            cross_attention_weights: cross_weights,
        })
    }
}
