//! Gemma 2 (`Gemma2ForCausalLM`) and Gemma 3's text model (`Gemma3ForCausalLM`,
//! `model_type = gemma3_text`) on the shared decoder-only architecture: embeddings scaled by
//! `sqrt(hidden_size)`, RMS norms that multiply by `1 + weight`, a norm before and after each
//! sublayer, a GELU-tanh gated feed-forward, scores scaled by `query_pre_attn_scalar^-1/2`,
//! sliding-window attention on the layers `layer_types` names, and Gemma 2's soft caps on
//! attention scores and final logits; Gemma 3 adds per-head q/k norms and its own RoPE base
//! on the local layers.

use crate::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer, PositionalKind};
use crate::error::{Error, Result};
use crate::nn::{Activation, AttentionConfig, FeedForwardConfig, RopeLayout, RopeScaling};
use crate::weights::Weights;

use super::llama::{layer_type_flags, llama_decoder, llama_names, sliding_window, LlamaShape};

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    8192
}
fn default_head_dim() -> usize {
    256
}
fn default_true() -> bool {
    true
}

/// `config.json` of a Gemma 2 or Gemma 3 text checkpoint (the fields this model reads, as
/// `transformers` writes them: every field present).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct GemmaConfig {
    /// `gemma2` or `gemma3_text`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to `num_attention_heads`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width (need not be `hidden_size / num_attention_heads`).
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
    /// Longest sequence.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (Gemma 3: of the global layers).
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Gemma 3: RoPE base of the sliding-window layers.
    #[serde(default)]
    pub rope_local_base_freq: Option<f64>,
    /// RoPE scaling of the global layers (Gemma 3 4B+: `linear`), or `null`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The pre-training context of a `longrope` model (top level, as `transformers` reads
    /// it), if the config has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// FFN activation (`gelu_pytorch_tanh`).
    #[serde(default)]
    pub hidden_activation: Option<String>,
    /// Older name of the FFN activation, used when `hidden_activation` is absent.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Scores are scaled by `query_pre_attn_scalar^-1/2` (instead of `head_dim^-1/2`).
    pub query_pre_attn_scalar: f64,
    /// Keys a query sees in sliding-window layers.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// `"full_attention"` or `"sliding_attention"` per layer.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3 without `layer_types`: every `sliding_window_pattern`-th layer is global.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Soft cap on the final logits, or `null`; absent: `transformers`' default for the
    /// family (Gemma 2: 30, Gemma 3: none), see [`GemmaConfig::final_softcap`].
    #[serde(default, deserialize_with = "present")]
    pub final_logit_softcapping: Option<Option<f64>>,
    /// Soft cap on the attention scores, or `null`; absent: the family's default (Gemma 2:
    /// 50, Gemma 3: none), see [`GemmaConfig::attn_softcap`].
    #[serde(default, deserialize_with = "present")]
    pub attn_logit_softcapping: Option<Option<f64>>,
    /// q/k/v/o biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the LM head shares the token embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Gemma 3 (EmbeddingGemma): attention without the causal mask; not supported.
    #[serde(default)]
    pub use_bidirectional_attention: bool,
}

/// A key that is present (`Some`), whether its value is `null` (`Some(None)`) or a number;
/// an absent key stays `None` through `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<f64>>, D::Error> {
    use serde::Deserialize;
    Option::<f64>::deserialize(d).map(Some)
}

impl GemmaConfig {
    fn gemma3(&self) -> bool {
        self.model_type == "gemma3_text"
    }

    /// The final logit soft cap: the config's value (`null`: none), else `Gemma2Config`'s
    /// default 30 (`Gemma3TextConfig`'s is none).
    pub fn final_softcap(&self) -> Option<f64> {
        self.final_logit_softcapping
            .unwrap_or(if self.gemma3() { None } else { Some(30.0) })
    }

    /// The attention score soft cap: the config's value (`null`: none), else
    /// `Gemma2Config`'s default 50 (`Gemma3TextConfig`'s is none).
    pub fn attn_softcap(&self) -> Option<f64> {
        self.attn_logit_softcapping
            .unwrap_or(if self.gemma3() { None } else { Some(50.0) })
    }

    /// The decoder configuration these values describe.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        if !matches!(self.model_type.as_str(), "gemma2" | "gemma3_text") {
            return Err(Error::config(
                "model_type",
                format!(
                    "`{}`; expected gemma2 or gemma3_text (a Gemma 3 checkpoint with vision \
                     weights, `gemma3`, is not a text-only model)",
                    self.model_type
                ),
            ));
        }
        if self.use_bidirectional_attention {
            return Err(Error::config(
                "use_bidirectional_attention",
                "true (an encoder, EmbeddingGemma); only causal Gemma models are supported",
            ));
        }
        let heads = self.num_attention_heads;
        if heads == 0 {
            return Err(Error::config("num_attention_heads", "must be > 0"));
        }
        if !(self.query_pre_attn_scalar.is_finite() && self.query_pre_attn_scalar > 0.0) {
            return Err(Error::config(
                "query_pre_attn_scalar",
                format!(
                    "must be a finite number > 0, found {}",
                    self.query_pre_attn_scalar
                ),
            ));
        }
        let attention = AttentionConfig {
            d_model: self.hidden_size,
            num_heads: heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim: self.head_dim,
            qkv_bias: self.attention_bias,
            out_bias: self.attention_bias,
            scale: Some(self.query_pre_attn_scalar.powf(-0.5)),
            dropout: 0.0,
            softcap: self.attn_softcap(),
            rotary_dim: None,
        };
        attention.validate()?;
        let act = self
            .hidden_activation
            .as_deref()
            .or(self.hidden_act.as_deref())
            .unwrap_or("gelu_pytorch_tanh");
        let mut ffn = FeedForwardConfig::swiglu(self.hidden_size, self.intermediate_size);
        ffn.activation = Activation::from_name(act)?;
        let mut cfg = llama_decoder(
            LlamaShape {
                vocab_size: self.vocab_size,
                max_positions: self.max_position_embeddings,
                num_layers: self.num_hidden_layers,
                rms_norm_eps: self.rms_norm_eps,
                tie_word_embeddings: self.tie_word_embeddings,
            },
            attention,
            ffn,
            PositionalKind::Rotary {
                base: self.rope_theta,
                layout: RopeLayout::HalfSplit,
                scaling: RopeScaling::from_config(
                    self.rope_scaling.as_ref(),
                    Some(self.max_position_embeddings),
                    self.original_max_position_embeddings,
                )?,
            },
        );
        // `Gemma2RMSNorm`: `norm(x) * (1 + weight)`.
        cfg.stack.layer.norm.weight_offset = 1.0;
        // `hidden_size ** 0.5`, rounded to the activations' dtype.
        cfg.embeddings.scale = Some((self.hidden_size as f64).sqrt() as f32 as f64);
        cfg.final_logit_softcap = self.final_softcap();
        let n = self.num_hidden_layers;
        let flags = match &self.layer_types {
            Some(types) => layer_type_flags(types, n)?,
            // Gemma 3: every `sliding_window_pattern`-th layer global (default 6).
            None if self.gemma3() => {
                let p = self.sliding_window_pattern.unwrap_or(6).max(1);
                (0..n).map(|i| (i + 1) % p != 0).collect()
            }
            // Gemma 2: even layers local.
            None => (0..n).map(|i| i % 2 == 0).collect(),
        };
        cfg.stack.sliding_window = sliding_window(self.sliding_window, flags)?;
        if let (Some(sw), true) = (cfg.stack.sliding_window.as_mut(), self.gemma3()) {
            sw.local_rope_base = Some(self.rope_local_base_freq.unwrap_or(10_000.0));
        }
        Ok(cfg)
    }

    /// Tensor names, relative to `model.`: Llama's, with the sandwich norms
    /// (`input_layernorm` / `post_attention_layernorm` around attention,
    /// `pre_feedforward_layernorm` / `post_feedforward_layernorm` around the MLP) and Gemma
    /// 3's `self_attn.q_norm` / `self_attn.k_norm`.
    pub fn names(&self, cfg: &DecoderConfig) -> DecoderNames {
        let mut names = llama_names(cfg);
        let layer = &mut names.stack.layer;
        layer.self_attention_norm = "input_layernorm".into();
        layer.feed_forward_norm = "pre_feedforward_layernorm".into();
        layer.post_norms = Some((
            "post_attention_layernorm".into(),
            "post_feedforward_layernorm".into(),
        ));
        if self.gemma3() {
            layer.qk_norms = Some(("self_attn.q_norm".into(), "self_attn.k_norm".into()));
        }
        names
    }
}

/// A Gemma 2 or Gemma 3 text model with its language-model head.
pub type GemmaForCausalLm = super::causal_lm::CausalLm<GemmaConfig>;

impl super::causal_lm::CausalLmFamily for GemmaConfig {
    /// The body sits under `model.`, the LM head (`lm_head`, when untied) at the root.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer> {
        let cfg = self.decoder_config()?;
        DecoderOnlyTransformer::load_split(&w.pp("model"), w, &cfg, &self.names(&cfg))
    }
}
