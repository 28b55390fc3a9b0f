//! The BART family of encoder-decoders, which share one layout of tensor names and differ in
//! configuration only:
//!
//! | `model_type` | norms | positions | embedding norm | final norms | logits bias |
//! |---|---|---|---|---|---|
//! | `bart` (BART, distilBART) | post | learned, offset 2 | yes | no | yes |
//! | `mbart` (mBART, mBART-50) | pre | learned, offset 2 | yes | yes | yes |
//! | `marian` (opus-mt) | post | sinusoidal, halves | no | no | yes |
//! | `pegasus` | pre | sinusoidal, halves | no | yes | yes |
//! | `m2m_100` (M2M100, NLLB) | pre | fairseq sinusoidal | no | yes | no |
//!
//! `scale_embedding` (multiply token embeddings by `sqrt(d_model)`) is read from the config
//! for all of them. Marian may keep a separate decoder vocabulary
//! (`share_encoder_decoder_embeddings: false`, `decoder_vocab_size`).

use crate::arch::{
    EmbeddingConfig, EmbeddingNames, EncoderDecoderConfig, EncoderDecoderNames, PositionalKind,
    StackConfig, StackNames,
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
fn default_true() -> bool {
    true
}
fn default_pad() -> u32 {
    1
}

/// The `model_type`s this file maps.
pub const BART_FAMILY: &[&str] = &["bart", "mbart", "marian", "pegasus", "m2m_100"];

/// `config.json` of a BART-family checkpoint (the fields the model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct BartConfig {
    /// `bart`, `mbart`, `marian`, `pegasus` or `m2m_100`.
    pub model_type: String,
    /// Vocabulary size (the encoder's, and the decoder's unless `decoder_vocab_size`).
    pub vocab_size: usize,
    /// Marian: the decoder's vocabulary when it has its own.
    #[serde(default)]
    pub decoder_vocab_size: Option<usize>,
    /// Marian: whether encoder and decoder share one embedding table.
    #[serde(default = "default_true")]
    pub share_encoder_decoder_embeddings: bool,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Model width.
    pub d_model: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Encoder heads.
    pub encoder_attention_heads: usize,
    /// Encoder feed-forward width.
    pub encoder_ffn_dim: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder heads.
    pub decoder_attention_heads: usize,
    /// Decoder feed-forward width.
    pub decoder_ffn_dim: usize,
    /// Feed-forward activation.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// Multiply token embeddings by `sqrt(d_model)`.
    #[serde(default)]
    pub scale_embedding: bool,
    /// Whether the LM head shares the (decoder) embedding table.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Padding id (fairseq positions count from it).
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    /// Residual and embedding dropout.
    #[serde(default)]
    pub dropout: f64,
    /// Dropout on attention weights.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation.
    #[serde(default)]
    pub activation_dropout: f64,
}

/// What distinguishes the members of the family.
struct Variant {
    pre_norm: bool,
    positional: PositionalKind,
    embedding_norm: bool,
    final_norms: bool,
    logits_bias: bool,
}

impl BartConfig {
    fn variant(&self) -> Result<Variant> {
        let learned = PositionalKind::Learned { offset: 2 };
        Ok(match self.model_type.as_str() {
            "bart" => Variant {
                pre_norm: false,
                positional: learned,
                embedding_norm: true,
                final_norms: false,
                logits_bias: true,
            },
            "mbart" => Variant {
                pre_norm: true,
                positional: learned,
                embedding_norm: true,
                final_norms: true,
                logits_bias: true,
            },
            "marian" => Variant {
                pre_norm: false,
                positional: PositionalKind::SinusoidalHalves,
                embedding_norm: false,
                final_norms: false,
                logits_bias: true,
            },
            "pegasus" => Variant {
                pre_norm: true,
                positional: PositionalKind::SinusoidalHalves,
                embedding_norm: false,
                final_norms: true,
                logits_bias: true,
            },
            "m2m_100" => Variant {
                pre_norm: true,
                positional: PositionalKind::SinusoidalFairseq {
                    padding_idx: self.pad_token_id,
                },
                embedding_norm: false,
                final_norms: true,
                logits_bias: false,
            },
            other => {
                return Err(Error::config(
                    "model_type",
                    format!(
                        "`{other}` is not a BART-family model; expected one of {}",
                        BART_FAMILY.join(", ")
                    ),
                ))
            }
        })
    }

    fn decoder_vocab(&self) -> usize {
        match (
            self.share_encoder_decoder_embeddings,
            self.decoder_vocab_size,
        ) {
            (false, Some(v)) => v,
            _ => self.vocab_size,
        }
    }

    /// The encoder-decoder configuration these values describe.
    pub fn encoder_decoder_config(&self) -> Result<EncoderDecoderConfig> {
        let v = self.variant()?;
        let activation = Activation::from_name(&self.activation_function)?;
        let embeddings = |vocab_size: usize| EmbeddingConfig {
            vocab_size,
            d_model: self.d_model,
            max_positions: self.max_position_embeddings,
            positional: v.positional.clone(),
            type_vocab_size: None,
            norm: v.embedding_norm.then(|| NormConfig::layer_norm(1e-5)),
            scale: self.scale_embedding.then(|| (self.d_model as f64).sqrt()),
            dropout: self.dropout,
        };
        let stack = |heads: usize, ffn: usize, layers: usize, cross: bool| -> Result<StackConfig> {
            let mut attention = AttentionConfig::new(self.d_model, heads)?;
            attention.dropout = self.attention_dropout;
            let mut feed_forward = FeedForwardConfig::new(self.d_model, ffn, activation);
            feed_forward.dropout = self.activation_dropout;
            Ok(StackConfig {
                layer: LayerConfig {
                    cross_attention: cross.then(|| attention.clone()),
                    self_attention: attention,
                    feed_forward,
                    norm: NormConfig::layer_norm(1e-5),
                    norm_first: v.pre_norm,
                    dropout: self.dropout,
                },
                num_layers: layers,
                final_norm: v.final_norms,
                sliding_window: None,
            })
        };
        Ok(EncoderDecoderConfig {
            encoder_embeddings: embeddings(self.vocab_size),
            encoder: stack(
                self.encoder_attention_heads,
                self.encoder_ffn_dim,
                self.encoder_layers,
                false,
            )?,
            decoder_embeddings: embeddings(self.decoder_vocab()),
            decoder: stack(
                self.decoder_attention_heads,
                self.decoder_ffn_dim,
                self.decoder_layers,
                true,
            )?,
            relative_attention: None,
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_scale: None,
            final_logits_bias: v.logits_bias,
            arithmetic: Default::default(),
        })
    }

    /// The family's tensor names, relative to `model.` (the caller strips it), with the
    /// token tables found in `w`: checkpoints store the shared table as `shared.weight`, or
    /// only as `encoder.embed_tokens.weight` (separate Marian vocabularies, some exports).
    pub fn names(&self, cfg: &EncoderDecoderConfig, w: &Weights) -> Result<EncoderDecoderNames> {
        let v = self.variant()?;
        let shared = self.share_encoder_decoder_embeddings;
        let pick = |candidates: &[&str]| -> String {
            candidates
                .iter()
                .find(|n| w.contains(n))
                .unwrap_or(&candidates[0])
                .to_string()
        };
        let encoder_word = pick(&["shared.weight", "encoder.embed_tokens.weight"]);
        let decoder_word = if shared {
            pick(&[
                "shared.weight",
                "decoder.embed_tokens.weight",
                "encoder.embed_tokens.weight",
            ])
        } else {
            "decoder.embed_tokens.weight".to_string()
        };
        let side = |side: &str, word: String, stack: &StackConfig| {
            let layer = &stack.layer;
            let attention = |name: &str, c: &AttentionConfig| {
                AttentionNames::separate(
                    &format!("{name}.q_proj"),
                    &format!("{name}.k_proj"),
                    &format!("{name}.v_proj"),
                    &format!("{name}.out_proj"),
                    c,
                )
            };
            let embeddings = EmbeddingNames {
                word,
                position: matches!(v.positional, PositionalKind::Learned { .. })
                    .then(|| format!("{side}.embed_positions.weight")),
                token_type: None,
                norm: v
                    .embedding_norm
                    .then(|| format!("{side}.layernorm_embedding")),
            };
            let cross = layer.cross_attention.as_ref();
            let names = StackNames {
                layer_prefix: format!("{side}.layers"),
                layer: LayerNames {
                    self_attention: attention("self_attn", &layer.self_attention),
                    self_attention_norm: "self_attn_layer_norm".into(),
                    cross_attention: cross.map(|c| attention("encoder_attn", c)),
                    cross_attention_norm: cross.map(|_| "encoder_attn_layer_norm".into()),
                    feed_forward: FeedForwardNames::two_layer("fc1", "fc2", true),
                    feed_forward_norm: "final_layer_norm".into(),
                    qk_norms: None,
                    post_norms: None,
                },
                final_norm: v.final_norms.then(|| format!("{side}.layer_norm")),
            };
            (embeddings, names)
        };
        let (encoder_embeddings, encoder) = side("encoder", encoder_word, &cfg.encoder);
        let (decoder_embeddings, decoder) = side("decoder", decoder_word, &cfg.decoder);
        Ok(EncoderDecoderNames {
            encoder_embeddings,
            encoder,
            encoder_relative_bias: None,
            decoder_embeddings,
            decoder,
            decoder_relative_bias: None,
            lm_head: "lm_head".into(),
            final_logits_bias: v.logits_bias.then(|| "final_logits_bias".into()),
        })
    }
}
