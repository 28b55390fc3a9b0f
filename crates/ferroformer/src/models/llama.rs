//! The Llama family (`LlamaForCausalLM`: Llama 2/3, SmolLM2; `MistralForCausalLM`,
//! `Qwen2ForCausalLM` and `Qwen3ForCausalLM` share the layout): rotary positions, RMSNorm,
//! SwiGLU, grouped-query attention, optional q/k/v biases (Qwen2), per-head q/k norms
//! (Qwen3), sliding-window attention (Mistral; Qwen's `layer_types`), tied or untied LM head
//! — all on the shared decoder-only architecture.

use crate::arch::{
    DecoderConfig, DecoderNames, DecoderOnlyTransformer, EmbeddingConfig, EmbeddingNames,
    PositionalKind, SlidingWindow, StackConfig, StackNames,
};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerConfig,
    LayerNames, NormConfig, RopeLayout, RopeScaling,
};
use crate::weights::Weights;

fn default_act() -> String {
    "silu".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}

/// `config.json` of a Llama-family checkpoint (the fields this model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct LlamaConfig {
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
    /// Head width (defaults to `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest sequence.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// FFN activation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// q/k/v/o biases (Qwen2 has q/k/v biases: see `qkv_bias`).
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the LM head shares the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Dropout on attention weights.
    #[serde(default)]
    pub attention_dropout: f64,
    /// RoPE frequency scaling (`{"rope_type": "llama3", "factor": …}`), or `null`.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// The pre-training context of a `longrope` model (top level, as `transformers` reads
    /// it), if the config has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`).
    #[serde(default)]
    pub model_type: Option<String>,
}

/// `config.json` of a Mistral or Qwen2/3 checkpoint: Llama's fields and where the sliding
/// window applies.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct LlamaFamilyConfig {
    /// The fields Llama shares.
    #[serde(flatten)]
    pub base: LlamaConfig,
    /// Keys a query sees in sliding-window layers (Mistral: every layer when set; Qwen2/3:
    /// the layers `layer_types` or `use_sliding_window` make local).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2/3: whether any layer uses the sliding window.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Qwen2/3: layers from this index on are local when `use_sliding_window` is set and
    /// `layer_types` is absent.
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// `"full_attention"` or `"sliding_attention"` per layer (written by `transformers` ≥ 4.53).
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
}

/// Reads `layer_types` (one `"full_attention"` / `"sliding_attention"` per layer) into
/// sliding-window flags, checking its length against `num_hidden_layers`.
pub(crate) fn layer_type_flags(types: &[String], num_layers: usize) -> Result<Vec<bool>> {
    if types.len() != num_layers {
        return Err(Error::config(
            "layer_types",
            format!(
                "{} entries, but num_hidden_layers is {num_layers}",
                types.len()
            ),
        ));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, t)| match t.as_str() {
            "full_attention" => Ok(false),
            "sliding_attention" => Ok(true),
            other => Err(Error::config(
                "layer_types",
                format!("entry {i}: `{other}`; expected full_attention or sliding_attention"),
            )),
        })
        .collect()
}

/// The sliding window of a stack whose local layers are `flags`: `None` when no layer is
/// local; an error naming `sliding_window` when some are and it is missing or 0.
pub(crate) fn sliding_window(
    window: Option<usize>,
    flags: Vec<bool>,
) -> Result<Option<SlidingWindow>> {
    if !flags.iter().any(|&f| f) {
        return Ok(None);
    }
    match window {
        Some(w) if w > 0 => Ok(Some(SlidingWindow {
            window: w,
            layers: flags,
            local_rope_base: None,
        })),
        other => Err(Error::config(
            "sliding_window",
            format!("sliding-window layers need a window > 0, found {other:?}"),
        )),
    }
}

impl LlamaConfig {
    /// The decoder configuration these values describe.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let heads = self.num_attention_heads;
        if heads == 0 {
            return Err(Error::config("num_attention_heads", "must be > 0"));
        }
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / heads);
        let qwen2 = self.model_type.as_deref() == Some("qwen2");
        let attention = AttentionConfig {
            d_model: self.hidden_size,
            num_heads: heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(heads),
            head_dim,
            qkv_bias: self.attention_bias || qwen2,
            out_bias: self.attention_bias,
            scale: None,
            dropout: self.attention_dropout,
            softcap: None,
            rotary_dim: None,
        };
        attention.validate()?;
        let mut ffn = FeedForwardConfig::swiglu(self.hidden_size, self.intermediate_size);
        ffn.activation = Activation::from_name(&self.hidden_act)?;
        Ok(llama_decoder(
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
        ))
    }
}

impl LlamaFamilyConfig {
    /// The decoder configuration these values describe: Llama's, with the sliding window.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let mut cfg = self.base.decoder_config()?;
        let model_type = self.base.model_type.as_deref().unwrap_or("llama");
        let n = self.base.num_hidden_layers;
        let flags = match (model_type, &self.layer_types) {
            // `MistralModel` masks every layer by the window when one is set.
            ("mistral", _) => vec![self.sliding_window.is_some(); n],
            ("qwen2" | "qwen3", Some(types)) => layer_type_flags(types, n)?,
            // `Qwen2Config`: layers from `max_window_layers` on, with `use_sliding_window`.
            ("qwen2" | "qwen3", None) => {
                let from = self.max_window_layers.unwrap_or(n);
                (0..n)
                    .map(|i| self.use_sliding_window && i >= from)
                    .collect()
            }
            _ => vec![false; n],
        };
        cfg.stack.sliding_window = sliding_window(self.sliding_window, flags)?;
        Ok(cfg)
    }

    /// Whether each attention head has its own q and k RMS norms (Qwen3).
    pub fn qk_norms(&self) -> bool {
        self.base.model_type.as_deref() == Some("qwen3")
    }
}

/// The sizes of a Llama-family decoder besides its attention and feed-forward blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LlamaShape {
    pub vocab_size: usize,
    pub max_positions: usize,
    pub num_layers: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
}

/// The Llama-family decoder — rotary positions, pre-norm RMSNorm layers, a final norm —
/// whether described by `config.json` or by GGUF metadata.
pub(crate) fn llama_decoder(
    shape: LlamaShape,
    attention: AttentionConfig,
    ffn: FeedForwardConfig,
    positional: PositionalKind,
) -> DecoderConfig {
    DecoderConfig {
        embeddings: EmbeddingConfig {
            vocab_size: shape.vocab_size,
            d_model: attention.d_model,
            max_positions: shape.max_positions,
            positional,
            type_vocab_size: None,
            norm: None,
            scale: None,
            dropout: 0.0,
        },
        stack: StackConfig {
            layer: LayerConfig {
                self_attention: attention,
                cross_attention: None,
                feed_forward: ffn,
                norm: NormConfig::rms_norm(shape.rms_norm_eps),
                norm_first: true,
                dropout: 0.0,
            },
            num_layers: shape.num_layers,
            final_norm: true,
            sliding_window: None,
        },
        tie_word_embeddings: shape.tie_word_embeddings,
        lm_head_bias: false,
        arithmetic: Default::default(),
        final_logit_softcap: None,
    }
}

/// Llama's tensor names, relative to `model.` (the LM head is `lm_head` at the root), with
/// Qwen3's per-head q/k norms (`self_attn.q_norm`, `self_attn.k_norm`) when `qk_norms`.
pub fn llama_names_with(cfg: &DecoderConfig, qk_norms: bool) -> DecoderNames {
    let mut names = llama_names(cfg);
    if qk_norms {
        names.stack.layer.qk_norms = Some(("self_attn.q_norm".into(), "self_attn.k_norm".into()));
    }
    names
}

/// Llama's tensor names, relative to `model.` (the LM head is `lm_head` at the root).
pub fn llama_names(cfg: &DecoderConfig) -> DecoderNames {
    let attn = &cfg.stack.layer.self_attention;
    let mut self_attention = AttentionNames::separate(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        attn,
    );
    self_attention.out.bias = attn.out_bias.then(|| "self_attn.o_proj.bias".into());
    DecoderNames {
        embeddings: EmbeddingNames {
            word: "embed_tokens.weight".into(),
            position: None,
            token_type: None,
            norm: None,
        },
        stack: StackNames {
            layer_prefix: "layers".into(),
            layer: LayerNames {
                self_attention,
                self_attention_norm: "input_layernorm".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: FeedForwardNames::gated(
                    "mlp.gate_proj",
                    "mlp.up_proj",
                    "mlp.down_proj",
                    false,
                ),
                feed_forward_norm: "post_attention_layernorm".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: Some("norm".into()),
        },
        lm_head: "lm_head".into(),
    }
}

/// A Llama-family model with its language-model head.
pub type LlamaForCausalLm = super::causal_lm::CausalLm<LlamaConfig>;

impl super::causal_lm::CausalLmFamily for LlamaConfig {
    /// The body sits under `model.`, the LM head (`lm_head`) at the root.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer> {
        let cfg = self.decoder_config()?;
        DecoderOnlyTransformer::load_split(&w.pp("model"), w, &cfg, &llama_names(&cfg))
    }
}

/// A Mistral or Qwen2/3 model with its language-model head.
pub type LlamaFamilyForCausalLm = super::causal_lm::CausalLm<LlamaFamilyConfig>;

impl super::causal_lm::CausalLmFamily for LlamaFamilyConfig {
    /// The body sits under `model.`, the LM head (`lm_head`) at the root.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer> {
        let cfg = self.decoder_config()?;
        let names = llama_names_with(&cfg, self.qk_norms());
        DecoderOnlyTransformer::load_split(&w.pp("model"), w, &cfg, &names)
    }
}
