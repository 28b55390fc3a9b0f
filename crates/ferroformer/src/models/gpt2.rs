//! GPT-2 (`GPT2LMHeadModel`): learned positions, pre-norm layers with GELU (tanh), `Conv1D`
//! weights stored transposed, a fused q/k/v projection and a tied LM head — all mapped onto
//! the shared decoder-only architecture.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::arch::{
    DecoderConfig, DecoderNames, DecoderOnlyTransformer, DecoderOutput, EmbeddingConfig,
    EmbeddingNames, PositionalKind, StackConfig, StackNames,
};
use crate::error::Result;
use crate::nn::{
    Activation, AttentionConfig, AttentionNames, FeedForwardConfig, FeedForwardNames, LayerCache,
    LayerConfig, LayerNames, NormConfig, ParamNames, QkvNames,
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
            },
            tie_word_embeddings: self.tie_word_embeddings,
            lm_head_bias: false,
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
            },
            final_norm: Some("ln_f".into()),
        },
        lm_head: "lm_head".into(),
    }
}

/// GPT-2 with its language-model head.
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    config: Gpt2Config,
    decoder: DecoderOnlyTransformer,
}

impl Gpt2LmHeadModel {
    /// Loads from weights rooted at the model (`transformer.` prefix optional).
    pub fn load(w: &Weights, config: &Gpt2Config) -> Result<Self> {
        let base = super::under_prefix_if_present(w, "transformer", "wte.weight");
        let cfg = config.decoder_config()?;
        // An untied `lm_head` sits beside `transformer.`, not under it.
        let decoder = DecoderOnlyTransformer::load_split(&base, w, &cfg, &gpt2_names())?;
        Ok(Self {
            config: config.clone(),
            decoder,
        })
    }

    /// Loads `config.json` and the safetensors weights of a checkpoint directory.
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config: Gpt2Config = super::read_config(dir)?;
        let files = super::checkpoint_files(dir)?;
        let w = Weights::from_safetensors(&files, dtype, device)?;
        Self::load(&w, &config)
    }

    /// The configuration.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The decoder.
    pub fn decoder(&self) -> &DecoderOnlyTransformer {
        &self.decoder
    }

    /// Logits for `input_ids` (see [`DecoderOnlyTransformer::forward`]).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
    ) -> Result<DecoderOutput> {
        self.decoder
            .forward(input_ids, attention_mask, caches, false, false)
    }
}
