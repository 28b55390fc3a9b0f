//! Decoder-only transformer: causal self-attention layers and a language-model head.

use candle_core::Tensor;

use super::embeddings::Embeddings;
use super::embeddings::{padded_position_ids, EmbeddingConfig, EmbeddingNames, PositionalKind};
use super::heads::LmHead;
use super::stack::LocalAttention;
use super::stack::{LayerStack, StackConfig, StackContext, StackNames};
use crate::error::{Error, Result};
use crate::nn::mask::{attention_bias, sliding_window_bias};
use crate::nn::ops::soft_cap;
use crate::nn::{
    Activation, Arithmetic, LayerCache, LayerConfig, LayerNames, Mode, Pass, RotaryEmbedding,
};
use crate::weights::Weights;

/// Shape of a decoder-only model.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Input embeddings.
    pub embeddings: EmbeddingConfig,
    /// Layers (without cross-attention).
    pub stack: StackConfig,
    /// The LM head reuses the token embedding table.
    pub tie_word_embeddings: bool,
    /// The (untied) LM head has a bias.
    pub lm_head_bias: bool,
    /// Whose arithmetic every op of the model follows: the reference for `transformers`
    /// checkpoints, llama.cpp's for GGUF files. Chosen once, here.
    pub arithmetic: Arithmetic,
    /// Soft cap on the logits, `cap · tanh(logit / cap)` (Gemma 2's
    /// `final_logit_softcapping`); `None` leaves them as the head computes them.
    pub final_logit_softcap: Option<f64>,
}

impl DecoderConfig {
    /// The course's decoder-only transformer: embedding + sinusoidal encoding, post-norm
    /// ReLU layers, an untied linear head with bias.
    pub fn course(
        vocab_size: usize,
        d_model: usize,
        num_layers: usize,
        num_heads: usize,
        d_ff: usize,
        dropout: f64,
        max_seq_len: usize,
    ) -> Result<Self> {
        Ok(Self {
            embeddings: EmbeddingConfig {
                vocab_size,
                d_model,
                max_positions: max_seq_len,
                positional: PositionalKind::Sinusoidal,
                type_vocab_size: None,
                norm: None,
                scale: None,
                dropout,
            },
            stack: StackConfig {
                layer: LayerConfig::standard(
                    d_model,
                    num_heads,
                    d_ff,
                    dropout,
                    Activation::Relu,
                    false,
                    1e-5,
                    false,
                )?,
                num_layers,
                final_norm: false,
                sliding_window: None,
            },
            tie_word_embeddings: false,
            lm_head_bias: true,
            arithmetic: Default::default(),
            final_logit_softcap: None,
        })
    }
}

/// Where a decoder-only model's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderNames {
    /// Embeddings.
    pub embeddings: EmbeddingNames,
    /// Layers.
    pub stack: StackNames,
    /// LM head prefix (ignored when tied).
    pub lm_head: String,
}

impl DecoderNames {
    /// `embedding.weight`, `position_embedding.weight`, `layers.{i}.` with PyTorch layer
    /// names, `norm`, `fc`.
    pub fn torch(cfg: &DecoderConfig) -> Self {
        Self {
            embeddings: EmbeddingNames {
                word: "embedding.weight".into(),
                position: Some("position_embedding.weight".into()),
                token_type: None,
                norm: None,
            },
            stack: StackNames {
                layer_prefix: "layers".into(),
                layer: LayerNames::torch(&cfg.stack.layer),
                final_norm: Some("norm".into()),
            },
            lm_head: "fc".into(),
        }
    }
}

/// Output of a decoder-only forward pass.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// `(batch, seq, vocab)`
    pub logits: Tensor,
    /// Last hidden state `(batch, seq, d_model)`.
    pub hidden: Tensor,
    /// Self-attention weights per layer, when requested.
    pub attention_weights: Vec<Tensor>,
}

/// Embeddings, causal layers and an LM head.
#[derive(Debug, Clone)]
pub struct DecoderOnlyTransformer {
    cfg: DecoderConfig,
    embeddings: Embeddings,
    stack: LayerStack,
    lm_head: LmHead,
    /// Rotary tables of the sliding-window layers when their base differs (Gemma 3).
    local_rope: Option<RotaryEmbedding>,
}

/// Checks what the stack's config cannot check itself (the final logit cap, the
/// sliding-window layers against the stack), and builds the rotary embedding of the local
/// layers when they have their own base. Every constructor goes through here.
fn local_rope(
    cfg: &DecoderConfig,
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Result<Option<RotaryEmbedding>> {
    if let Some(cap) = cfg.final_logit_softcap {
        if !(cap.is_finite() && cap > 0.0) {
            return Err(Error::config(
                "final_logit_softcapping",
                format!("must be a finite number > 0, found {cap}"),
            ));
        }
    }
    let Some(sw) = &cfg.stack.sliding_window else {
        return Ok(None);
    };
    if sw.layers.len() != cfg.stack.num_layers {
        return Err(Error::config(
            "sliding_window",
            format!(
                "{} layer flags for {} layers",
                sw.layers.len(),
                cfg.stack.num_layers
            ),
        ));
    }
    if sw.window == 0 {
        return Err(Error::config("sliding_window", "the window must be > 0"));
    }
    let Some(base) = sw.local_rope_base else {
        return Ok(None);
    };
    let PositionalKind::Rotary {
        layout, scaling: _, ..
    } = cfg.embeddings.positional
    else {
        return Err(Error::config(
            "sliding_window",
            "a RoPE base for the local layers needs rotary positions",
        ));
    };
    // Local layers rotate with the plain frequencies of their own base (Gemma 3 scales only
    // the global layers' frequencies, and llama.cpp's `rope_freq_scale_train_swa` is 1).
    Ok(Some(RotaryEmbedding::with_scaling(
        cfg.stack.layer.self_attention.rotary_width(),
        cfg.embeddings.max_positions,
        base,
        layout,
        None,
        dtype,
        device,
    )?))
}

impl DecoderOnlyTransformer {
    /// Loads (or creates) the model.
    pub fn load(w: &Weights, cfg: &DecoderConfig, names: &DecoderNames) -> Result<Self> {
        Self::load_split(w, w, cfg, names)
    }

    /// Like [`DecoderOnlyTransformer::load`], with the body under `body` and an untied LM
    /// head under `head` (GPT-2 keeps the body under `transformer.` and `lm_head` at the root).
    pub fn load_split(
        body: &Weights,
        head: &Weights,
        cfg: &DecoderConfig,
        names: &DecoderNames,
    ) -> Result<Self> {
        let w = body;
        if cfg.stack.layer.cross_attention.is_some() {
            return Err(Error::config(
                "cross_attention",
                "a decoder-only model has no cross-attention",
            ));
        }
        let head_dim = cfg.stack.layer.self_attention.rotary_width();
        let embeddings =
            Embeddings::load_with_rotary(w, &cfg.embeddings, &names.embeddings, head_dim)?;
        let stack = LayerStack::load(w, &cfg.stack, &names.stack)?;
        let lm_head = if cfg.tie_word_embeddings {
            LmHead::tied(embeddings.word_embeddings())?
        } else {
            LmHead::load(
                head,
                cfg.embeddings.d_model,
                cfg.embeddings.vocab_size,
                &names.lm_head,
                cfg.lm_head_bias,
            )?
        };
        let local_rope = local_rope(cfg, w.dtype(), w.device())?;
        Ok(Self {
            cfg: cfg.clone(),
            embeddings,
            stack,
            lm_head,
            local_rope,
        })
    }

    /// Assembles the model from ready-made parts (loaders that do not read a [`Weights`]
    /// store, such as GGUF files, build their blocks themselves).
    pub fn from_parts(
        cfg: &DecoderConfig,
        embeddings: Embeddings,
        stack: LayerStack,
        lm_head: LmHead,
    ) -> Result<Self> {
        if stack.layers().len() != cfg.stack.num_layers {
            return Err(Error::config(
                "num_layers",
                format!(
                    "the config says {} layers, {} were given",
                    cfg.stack.num_layers,
                    stack.layers().len()
                ),
            ));
        }
        let local_rope = local_rope(cfg, candle_core::DType::F32, &candle_core::Device::Cpu)?;
        Ok(Self {
            cfg: cfg.clone(),
            embeddings,
            stack,
            lm_head,
            local_rope,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// The device the parameters live on (inputs must be created there).
    pub fn device(&self) -> &candle_core::Device {
        self.embeddings.word_embeddings().device()
    }

    /// The dtype of the activations (and of the KV cache outside llama.cpp's arithmetic).
    pub fn dtype(&self) -> candle_core::DType {
        self.embeddings.word_embeddings().dtype()
    }

    /// LongRoPE models: `Some(n_ctx)` chooses the short or long frequencies once by the
    /// context size per sequence, as llama.cpp does (long when `n_ctx` exceeds the original
    /// context); `None` (the default) chooses by each forward pass's largest position, as
    /// `transformers` does. No effect on other models.
    pub fn set_longrope_context(&mut self, n_ctx: Option<usize>) {
        self.embeddings.set_longrope_context(n_ctx);
    }

    /// Fresh KV caches for incremental decoding.
    pub fn new_caches(&self) -> Vec<LayerCache> {
        self.stack.new_caches()
    }

    /// Next-token logits for `input_ids` `(batch, seq)`.
    ///
    /// `attention_mask` `(batch, past + seq)` marks real tokens over the cached and new
    /// positions; with it, left-padded rows get positions counted from their first real
    /// token, so each row equals its unpadded run. `caches` (one per layer) enable
    /// incremental decoding.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
        pass: Pass,
    ) -> Result<DecoderOutput> {
        self.run(input_ids, attention_mask, caches, pass, false)
    }

    /// Logits of the last position only, `(batch, vocab)`: all that generation needs. The
    /// LM head, the largest product of a small model, then runs on one position per row
    /// instead of all of them.
    pub fn next_token_logits(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
    ) -> Result<Tensor> {
        // On a rayon worker the kernels' parallel loops include the calling thread; from
        // outside the pool every loop would wake the workers and wait for them instead.
        let out = on_worker(|| self.run(input_ids, attention_mask, caches, Pass::INFERENCE, true))?;
        Ok(out.logits.squeeze(1)?)
    }

    fn run(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        caches: Option<&mut [LayerCache]>,
        pass: Pass,
        last_only: bool,
    ) -> Result<DecoderOutput> {
        let mode = Mode::new(pass, self.cfg.arithmetic);
        let (b, s) = input_ids
            .dims2()
            .map_err(|_| Error::shape("input_ids", "(batch, seq)", input_ids.dims()))?;
        let past = caches
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| c.self_attention.len())
            .unwrap_or(0);
        let position_ids = match attention_mask {
            Some(m) if self.cfg.embeddings.positional != PositionalKind::None => {
                Some(padded_position_ids(m, s)?)
            }
            _ => None,
        };
        let emb = self
            .embeddings
            .forward(input_ids, None, position_ids.as_ref(), past, mode)?;
        let bias = attention_bias(
            attention_mask,
            true,
            b,
            s,
            past + s,
            emb.hidden.dtype(),
            emb.hidden.device(),
        )?;
        // Sliding-window layers: their own bias and, with another base, their own tables.
        let (local_bias, local_tables) = match &self.cfg.stack.sliding_window {
            Some(sw) => {
                let bias = sliding_window_bias(
                    attention_mask,
                    sw.window,
                    b,
                    s,
                    past + s,
                    emb.hidden.dtype(),
                    emb.hidden.device(),
                )?;
                let tables = match (&self.local_rope, &position_ids) {
                    (Some(r), Some(p)) => Some(r.tables(p, mode.arithmetic)?),
                    (Some(r), None) => Some(r.tables_range(b, past, s, mode.arithmetic)?),
                    (None, _) => None,
                };
                (bias, tables)
            }
            None => (None, None),
        };
        let local = self
            .cfg
            .stack
            .sliding_window
            .as_ref()
            .map(|sw| LocalAttention {
                layers: &sw.layers,
                bias: local_bias.as_ref(),
                rope: local_tables.as_ref(),
            });
        let out = self.stack.forward(
            &emb.hidden,
            StackContext {
                self_bias: bias.as_ref(),
                rope: emb.rope.as_ref(),
                caches,
                mode,
                local,
                ..Default::default()
            },
        )?;
        let logits = if last_only && s > 1 {
            self.lm_head.forward(&out.hidden.narrow(1, s - 1, 1)?)?
        } else {
            self.lm_head.forward(&out.hidden)?
        };
        let logits = match self.cfg.final_logit_softcap {
            Some(cap) => soft_cap(&logits, cap as f32, mode.arithmetic)?,
            None => logits,
        };
        Ok(DecoderOutput {
            logits,
            hidden: out.hidden,
            attention_weights: out.self_attention_weights,
        })
    }
}

/// Runs `f` on a rayon worker thread (directly when already on one).
fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::scope(|s| s.spawn(|_| out = Some(f())));
    // `rayon::scope` returns once the spawned job has run.
    out.unwrap_or_else(|| unreachable!("rayon::scope ran the spawned job"))
}
