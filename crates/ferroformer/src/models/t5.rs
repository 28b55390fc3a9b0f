//! T5, FLAN-T5 and mT5 (`T5ForConditionalGeneration`, `MT5ForConditionalGeneration`):
//! pre-norm layers with T5's RMS norm, attention without biases or score scaling, one
//! relative position bias per stack shared by its layers, ReLU (v1.0) or gated-GELU (v1.1,
//! FLAN-T5, mT5) feed-forward sublayers, and a head tied to the embeddings (rescaled by
//! `d_model ** -0.5`) or untied — as a configuration of the shared encoder-decoder.

use crate::arch::{
    EmbeddingConfig, EmbeddingNames, EncoderDecoderConfig, EncoderDecoderNames, PositionalKind,
    RelativeAttentionConfig, StackConfig, StackNames,
};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerConfig,
    LayerNames, NormConfig,
};

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}
fn default_dropout() -> f64 {
    0.1
}

/// `config.json` of a T5 / mT5 checkpoint (the fields the model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Width of one attention head (`num_heads * d_kv` need not equal `d_model`).
    pub d_kv: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Decoder layers (default: `num_layers`).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative position buckets.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Relative distance beyond which positions share a bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `relu`, `gelu`, `gated-gelu` (`gelu_new` on the gate), `gated-silu`, ...
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    /// Dropout everywhere T5 applies it.
    #[serde(default = "default_dropout")]
    pub dropout_rate: f64,
    /// Whether the head shares the embedding table (then rescaled by `d_model ** -0.5`).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl T5Config {
    /// The feed-forward activation and whether it is gated, from `feed_forward_proj` as
    /// `T5Config.__init__` reads it (`gated-gelu` means `gelu_new`).
    fn feed_forward(&self) -> Result<(Activation, bool)> {
        let proj = self.feed_forward_proj.as_str();
        let (gated, act) = match proj.split_once('-') {
            Some(("gated", act)) => (true, act),
            None => (false, proj),
            Some(_) => {
                return Err(Error::config(
                    "feed_forward_proj",
                    format!(
                        "expected `ACT` or `gated-ACT` (relu, gated-gelu, ...), found `{proj}`"
                    ),
                ))
            }
        };
        let act = if act == "gelu" && gated {
            "gelu_new"
        } else {
            act
        };
        Ok((Activation::from_name(act)?, gated))
    }

    fn layer(&self, cross: bool) -> Result<LayerConfig> {
        let mut attention = AttentionConfig::new(self.num_heads * self.d_kv, self.num_heads)?;
        attention.d_model = self.d_model;
        attention.head_dim = self.d_kv;
        attention.qkv_bias = false;
        attention.out_bias = false;
        // T5 folds the 1/sqrt(d) into its initialization: scores are not scaled.
        attention.scale = Some(1.0);
        attention.dropout = self.dropout_rate;
        attention.validate()?;
        let (activation, gated) = self.feed_forward()?;
        let mut feed_forward = FeedForwardConfig::new(self.d_model, self.d_ff, activation);
        feed_forward.gated = gated;
        feed_forward.bias = false;
        feed_forward.dropout = self.dropout_rate;
        Ok(LayerConfig {
            cross_attention: cross.then(|| attention.clone()),
            self_attention: attention,
            feed_forward,
            norm: NormConfig::rms_norm(self.layer_norm_epsilon),
            norm_first: true,
            dropout: self.dropout_rate,
        })
    }

    /// The encoder-decoder configuration these values describe.
    pub fn encoder_decoder_config(&self) -> Result<EncoderDecoderConfig> {
        let embeddings = EmbeddingConfig {
            vocab_size: self.vocab_size,
            d_model: self.d_model,
            // Relative positions: any length runs (the bias buckets far distances together).
            max_positions: usize::MAX,
            positional: PositionalKind::None,
            type_vocab_size: None,
            norm: None,
            scale: None,
            dropout: self.dropout_rate,
        };
        let stack = |cross: bool, num_layers: usize| -> Result<StackConfig> {
            Ok(StackConfig {
                layer: self.layer(cross)?,
                num_layers,
                final_norm: true,
                sliding_window: None,
            })
        };
        Ok(EncoderDecoderConfig {
            encoder_embeddings: embeddings.clone(),
            encoder: stack(false, self.num_layers)?,
            decoder_embeddings: embeddings,
            decoder: stack(true, self.num_decoder_layers.unwrap_or(self.num_layers))?,
            relative_attention: Some(RelativeAttentionConfig {
                num_buckets: self.relative_attention_num_buckets,
                max_distance: self.relative_attention_max_distance,
            }),
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_scale: self
                .tie_word_embeddings
                .then(|| (self.d_model as f64).powf(-0.5)),
            final_logits_bias: false,
            arithmetic: Default::default(),
        })
    }
}

/// T5's tensor names (`T5ForConditionalGeneration`).
pub fn t5_names(cfg: &EncoderDecoderConfig) -> EncoderDecoderNames {
    let attention = |prefix: &str, c: &AttentionConfig| {
        AttentionNames::separate(
            &format!("{prefix}.q"),
            &format!("{prefix}.k"),
            &format!("{prefix}.v"),
            &format!("{prefix}.o"),
            c,
        )
    };
    let feed_forward = |prefix: &str, c: &FeedForwardConfig| {
        let p = format!("{prefix}.DenseReluDense");
        if c.gated {
            FeedForwardNames::gated(
                &format!("{p}.wi_0"),
                &format!("{p}.wi_1"),
                &format!("{p}.wo"),
                false,
            )
        } else {
            FeedForwardNames::two_layer(&format!("{p}.wi"), &format!("{p}.wo"), false)
        }
    };
    let enc = &cfg.encoder.layer;
    let dec = &cfg.decoder.layer;
    let dec_cross = dec.cross_attention.as_ref().unwrap_or(&dec.self_attention);
    let embeddings = EmbeddingNames {
        word: "shared.weight".into(),
        position: None,
        token_type: None,
        norm: None,
    };
    EncoderDecoderNames {
        encoder_embeddings: embeddings.clone(),
        encoder: StackNames {
            layer_prefix: "encoder.block".into(),
            layer: LayerNames {
                self_attention: attention("layer.0.SelfAttention", &enc.self_attention),
                self_attention_norm: "layer.0.layer_norm".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: feed_forward("layer.1", &enc.feed_forward),
                feed_forward_norm: "layer.1.layer_norm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: Some("encoder.final_layer_norm".into()),
        },
        encoder_relative_bias: Some(
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into(),
        ),
        decoder_embeddings: embeddings,
        decoder: StackNames {
            layer_prefix: "decoder.block".into(),
            layer: LayerNames {
                self_attention: attention("layer.0.SelfAttention", &dec.self_attention),
                self_attention_norm: "layer.0.layer_norm".into(),
                cross_attention: Some(attention("layer.1.EncDecAttention", dec_cross)),
                cross_attention_norm: Some("layer.1.layer_norm".into()),
                feed_forward: feed_forward("layer.2", &dec.feed_forward),
                feed_forward_norm: "layer.2.layer_norm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: Some("decoder.final_layer_norm".into()),
        },
        decoder_relative_bias: Some(
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".into(),
        ),
        lm_head: "lm_head".into(),
        final_logits_bias: None,
    }
}
