//! GPT-2 (`GPT2LMHeadModel`): learned positions, pre-norm layers with GELU (tanh), `Conv1D`
//! weights stored transposed, a fused q/k/v projection and a tied LM head — all mapped onto
//! the shared decoder-only architecture.

use crate::arch::{
    DecoderConfig, DecoderNames, DecoderOnlyTransformer, EmbeddingConfig, EmbeddingNames,
    PositionalKind, StackConfig, StackNames,
};
use crate::error::Result;
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerConfig,
    LayerNames, NormConfig, ParamNames, QkvNames,
};
use crate::weights::Weights;

fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}

/// `config.json` of a GPT-2 checkpoint (the fields this model reads).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence.
    pub n_positions: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// FFN width (`None`: 4 × `n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// FFN activation.
    #[serde(default = "default_act")]
    pub activation_function: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Residual dropout.
    #[serde(default)]
    pub resid_pdrop: f64,
    /// Embedding dropout.
    #[serde(default)]
    pub embd_pdrop: f64,
    /// Attention dropout.
    #[serde(default)]
    pub attn_pdrop: f64,
    /// Whether scores are divided by `sqrt(head_dim)`.
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Whether the LM head shares the token embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl Gpt2Config {
    /// The decoder configuration these values describe.
    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let d = self.n_embd;
        let mut attention = AttentionConfig::new(d, self.n_head)?;
        attention.dropout = self.attn_pdrop;
        if !self.scale_attn_weights {
            attention.scale = Some(1.0);
        }
        let ffn = FeedForwardConfig::new(
            d,
            self.n_inner.unwrap_or(4 * d),
            Activation::from_name(&self.activation_function)?,
        );
        Ok(DecoderConfig {
            embeddings: EmbeddingConfig {
                vocab_size: self.vocab_size,
                d_model: d,
                max_positions: self.n_positions,
                positional: PositionalKind::Learned { offset: 0 },
                type_vocab_size: None,
                norm: None,
                scale: None,
                dropout: self.embd_pdrop,
            },
            stack: StackConfig {
                layer: LayerConfig {
                    self_attention: attention,
                    cross_attention: None,
                    feed_forward: ffn,
                    norm: NormConfig::layer_norm(self.layer_norm_epsilon),
                    norm_first: true,
                    dropout: self.resid_pdrop,
                },
                num_layers: self.n_layer,
                final_norm: true,
                sliding_window: None,
            },
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_bias: false,
            arithmetic: Default::default(),
            final_logit_softcap: None,
        })
    }
}

/// GPT-2's tensor names, relative to `transformer.`.
pub fn gpt2_names() -> DecoderNames {
    DecoderNames {
        embeddings: EmbeddingNames {
            word: "wte.weight".into(),
            position: Some("wpe.weight".into()),
            token_type: None,
            norm: None,
        },
        stack: StackNames {
            layer_prefix: "h".into(),
            layer: LayerNames {
                self_attention: AttentionNames {
                    qkv: QkvNames::Packed(ParamNames::conv1d("attn.c_attn")),
                    out: ParamNames::conv1d("attn.c_proj"),
                },
                self_attention_norm: "ln_1".into(),
                cross_attention: None,
                cross_attention_norm: None,
                feed_forward: FeedForwardNames {
                    up: ParamNames::conv1d("mlp.c_fc"),
                    gate: None,
                    down: ParamNames::conv1d("mlp.c_proj"),
                },
                feed_forward_norm: "ln_2".into(),
                qk_norms: None,
                post_norms: None,
            },
            final_norm: Some("ln_f".into()),
        },
        lm_head: "lm_head".into(),
    }
}

/// GPT-2 with its language-model head.
pub type Gpt2LmHeadModel = super::causal_lm::CausalLm<Gpt2Config>;

impl super::causal_lm::CausalLmFamily for Gpt2Config {
    /// The body may sit under `transformer.` (`GPT2LMHeadModel`) or at the root
    /// (`GPT2Model`); an untied `lm_head` sits beside `transformer.`, not under it.
    fn load_decoder(&self, w: &Weights) -> Result<DecoderOnlyTransformer> {
        let base = super::under_prefix_if_present(w, "transformer", "wte.weight");
        DecoderOnlyTransformer::load_split(&base, w, &self.decoder_config()?, &gpt2_names())
    }
}
