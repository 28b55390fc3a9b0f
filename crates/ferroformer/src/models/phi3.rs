//! Phi-3 (`Phi3ForCausalLM`) on the shared decoder-only architecture: Llama's layout with
//! q, k and v in one tensor (`self_attn.qkv_proj`), the gate and up projections in one
//! (`mlp.gate_up_proj`), rotary positions on the first `partial_rotary_factor` of each head,
//! a sliding window on every layer when `sliding_window` is set, and the 128k models'
//! `longrope` scaling (the shared [`crate::nn::RopeScaling::LongRope`]).

use crate::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer, PositionalKind};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, AttentionConfig, FeedForwardConfig, FeedForwardNames, ParamNames, QkvNames,
    RopeLayout, RopeScaling,
};
use crate::weights::Weights;

use super::llama::{llama_decoder, llama_names, sliding_window, LlamaShape};

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    4096
}
fn default_act() -> String {
    "silu".into()
}
fn default_factor() -> f64 {
    1.0
}
fn default_original_max_pos() -> usize {
    4096
}

/// `config.json` of a Phi-3 checkpoint (the fields this model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Phi3Config {
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
    /// Longest sequence.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Share of each head that is rotated.
    #[serde(default = "default_factor")]
    pub partial_rotary_factor: f64,
    /// RoPE scaling (`longrope` for the 128k models; `su` and `yarn` are read as `longrope`,
    /// as `Phi3Config` renames them), or `null`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The pre-training context: `longrope` passes longer than it use the long factors, and
    /// `max_position_embeddings / original_max_position_embeddings` sets the attention
    /// factor (`Phi3Config`'s default 4096).
    #[serde(default = "default_original_max_pos")]
    pub original_max_position_embeddings: usize,
    /// FFN activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Keys a query sees, on every layer, or `null`.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Whether the LM head shares the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

impl Phi3Config {
    /// The decoder configuration these values describe.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "{heads} heads do not divide hidden_size {}",
                    self.hidden_size
                ),
            ));
        }
        let scaling = match self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            None => None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?");
                if !matches!(kind, "longrope" | "su" | "yarn") {
                    return Err(Error::config(
                        "rope_scaling",
                        format!(
                            "Phi-3 RoPE scaling `{kind}` is not supported; Phi-3 takes null or \
                             longrope (`su` and `yarn` mean longrope, as in Phi3Config)"
                        ),
                    ));
                }
                let mut s = s.clone();
                if let Some(obj) = s.as_object_mut() {
                    obj.remove("type");
                    obj.insert("rope_type".into(), "longrope".into());
                }
                RopeScaling::from_config(
                    Some(&s),
                    Some(self.max_position_embeddings),
                    Some(self.original_max_position_embeddings),
                )?
            }
        };
        let head_dim = self.hidden_size / heads;
        let factor = self.partial_rotary_factor;
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::config(
                "partial_rotary_factor",
                format!("must be in (0, 1], found {factor}"),
            ));
        }
        // `int(head_dim * partial_rotary_factor)`, as `transformers` computes it.
        let rotary = (head_dim as f64 * factor) as usize;
        let attention = AttentionConfig {
            d_model: self.hidden_size,
            num_heads: heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            qkv_bias: false,
            out_bias: false,
            scale: None,
            dropout: 0.0,
            softcap: None,
            rotary_dim: (rotary != head_dim).then_some(rotary),
        };
        attention.validate()?;
        let mut ffn = FeedForwardConfig::swiglu(self.hidden_size, self.intermediate_size);
        ffn.activation = Activation::from_name(&self.hidden_act)?;
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
                scaling,
            },
        );
        // `Phi3Model` masks every layer by the window when one is set.
        cfg.stack.sliding_window = sliding_window(
            self.sliding_window,
            vec![self.sliding_window.is_some(); self.num_hidden_layers],
        )?;
        Ok(cfg)
    }

    /// Tensor names, relative to `model.`: Llama's with `self_attn.qkv_proj` and
    /// `mlp.gate_up_proj`.
    pub fn names(cfg: &DecoderConfig) -> DecoderNames {
        let mut names = llama_names(cfg);
        let layer = &mut names.stack.layer;
        layer.self_attention.qkv =
            QkvNames::Packed(ParamNames::linear("self_attn.qkv_proj", false));
        layer.feed_forward =
            FeedForwardNames::gated_packed("mlp.gate_up_proj", "mlp.down_proj", false);
        names
    }
}

/// A Phi-3 model with its language-model head.
pub type Phi3ForCausalLm = super::causal_lm::CausalLm<Phi3Config>;

impl super::causal_lm::CausalLmFamily for Phi3Config {
    /// The body sits under `model.`, the LM head (`lm_head`) at the root.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer> {
        let cfg = self.decoder_config()?;
        DecoderOnlyTransformer::load_split(&w.pp("model"), w, &cfg, &Self::names(&cfg))
    }
}
