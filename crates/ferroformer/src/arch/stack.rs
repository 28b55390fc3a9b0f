//! A stack of identical transformer layers with an optional final norm: the body of every
//! encoder and decoder.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::nn::{
    LayerCache, LayerConfig, LayerContext, LayerNames, Mode, Norm, RopeTables, TransformerLayer,
};
use crate::weights::Weights;

/// Shape of a layer stack.
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    /// The layer (every layer is configured alike).
    pub layer: LayerConfig,
    /// Number of layers.
    pub num_layers: usize,
    /// Whether a norm follows the last layer (pre-norm models need one).
    pub final_norm: bool,
    /// Layers that attend only to the most recent keys (Gemma 2/3, Mistral), if any.
    pub sliding_window: Option<SlidingWindow>,
}

/// Sliding-window (local) attention on some layers of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct SlidingWindow {
    /// Keys a query sees, its own included: key `j` is visible from query `i` when
    /// `i - j < window` (see [`crate::nn::mask::sliding_window_bias`]).
    pub window: usize,
    /// `layers[i]`: whether layer `i` is local (one entry per layer).
    pub layers: Vec<bool>,
    /// RoPE base of the local layers when it differs from the model's (Gemma 3: 10 000 on
    /// local layers, `rope_theta` on global ones).
    pub local_rope_base: Option<f64>,
}

impl SlidingWindow {
    /// Every layer but each `pattern`-th one is local (Gemma 3: `pattern` 6, so layers
    /// 5, 11, 17, ... are global), as llama.cpp's `set_swa_pattern`; `pattern` 0 makes every
    /// layer local.
    pub fn every_but_nth(window: usize, num_layers: usize, pattern: usize) -> Self {
        Self {
            window,
            layers: (0..num_layers)
                .map(|i| pattern == 0 || i % pattern < pattern - 1)
                .collect(),
            local_rope_base: None,
        }
    }
}

/// What the local layers of a stack use instead of the global bias and rotary tables.
#[derive(Debug, Clone, Copy)]
pub struct LocalAttention<'a> {
    /// `layers[i]`: whether layer `i` is local.
    pub layers: &'a [bool],
    /// Their self-attention bias (causal within the window, padding).
    pub bias: Option<&'a Tensor>,
    /// Their rotary tables (another base), or `None` to use the stack's.
    pub rope: Option<&'a RopeTables>,
}

/// Where a stack's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNames {
    /// Layer `i` lives under `{layer_prefix}.{i}`.
    pub layer_prefix: String,
    /// Names inside one layer.
    pub layer: LayerNames,
    /// Prefix of the final norm.
    pub final_norm: Option<String>,
}

/// Inputs of a stack besides the hidden states.
#[derive(Debug, Default)]
pub struct StackContext<'a> {
    /// Additive self-attention bias.
    pub self_bias: Option<&'a Tensor>,
    /// Encoder output (decoders with cross-attention).
    pub memory: Option<&'a Tensor>,
    /// Additive cross-attention bias.
    pub memory_bias: Option<&'a Tensor>,
    /// Additive self-attention position bias shared by every layer (T5's relative
    /// position bias, see [`crate::nn::RelativePositionBias`]).
    pub position_bias: Option<&'a Tensor>,
    /// Rotary tables.
    pub rope: Option<&'a RopeTables>,
    /// One cache per layer.
    pub caches: Option<&'a mut [LayerCache]>,
    /// Training or inference, attention weights wanted (from every layer), whose arithmetic.
    pub mode: Mode,
    /// Lengths of the sequences packed end to end in a `(1, tokens, d_model)` input.
    pub packed: Option<&'a [usize]>,
    /// Sliding-window layers and what they attend with.
    pub local: Option<LocalAttention<'a>>,
}

/// Output of a stack.
#[derive(Debug, Clone)]
pub struct StackOutput {
    /// Last hidden state, after the final norm if any.
    pub hidden: Tensor,
    /// Self-attention weights per layer (when requested).
    pub self_attention_weights: Vec<Tensor>,
    /// Cross-attention weights per layer (when requested and present).
    pub cross_attention_weights: Vec<Tensor>,
}

/// N transformer layers and an optional final norm.
#[derive(Debug, Clone)]
pub struct LayerStack {
    layers: Vec<TransformerLayer>,
    final_norm: Option<Norm>,
}

impl LayerStack {
    /// Loads (or creates) the stack.
    pub fn load(w: &Weights, cfg: &StackConfig, names: &StackNames) -> Result<Self> {
        let layers = (0..cfg.num_layers)
            .map(|i| {
                TransformerLayer::load(
                    &w.pp(format!("{}.{i}", names.layer_prefix)),
                    &cfg.layer,
                    &names.layer,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = match (cfg.final_norm, &names.final_norm) {
            (true, Some(prefix)) => Some(Norm::load(
                w,
                cfg.layer.self_attention.d_model,
                &cfg.layer.norm,
                prefix,
            )?),
            (true, None) => {
                return Err(Error::config(
                    "final_norm",
                    "the final norm needs a tensor name",
                ))
            }
            (false, _) => None,
        };
        Ok(Self { layers, final_norm })
    }

    /// A stack of ready-made layers and an optional final norm.
    pub fn from_parts(layers: Vec<TransformerLayer>, final_norm: Option<Norm>) -> Self {
        Self { layers, final_norm }
    }

    /// The layers.
    pub fn layers(&self) -> &[TransformerLayer] {
        &self.layers
    }

    /// Fresh caches, one per layer.
    pub fn new_caches(&self) -> Vec<LayerCache> {
        vec![LayerCache::default(); self.layers.len()]
    }

    /// Runs every layer in turn.
    pub fn forward(&self, x: &Tensor, ctx: StackContext) -> Result<StackOutput> {
        let StackContext {
            self_bias,
            memory,
            memory_bias,
            position_bias,
            rope,
            mut caches,
            mode,
            packed,
            local,
        } = ctx;
        if let Some(l) = &local {
            if l.layers.len() != self.layers.len() {
                return Err(Error::Invalid(format!(
                    "sliding window: {} layer flags for {} layers",
                    l.layers.len(),
                    self.layers.len()
                )));
            }
        }
        if let Some(c) = &caches {
            if c.len() != self.layers.len() {
                return Err(Error::Invalid(format!(
                    "expected {} layer caches, found {}",
                    self.layers.len(),
                    c.len()
                )));
            }
        }
        let mut hidden = x.clone();
        let mut self_w = Vec::new();
        let mut cross_w = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            let (self_bias, rope) = match local {
                Some(l) if l.layers[i] => (l.bias, l.rope.or(rope)),
                _ => (self_bias, rope),
            };
            let out = layer.forward(
                &hidden,
                LayerContext {
                    self_bias,
                    memory,
                    memory_bias,
                    position_bias,
                    rope,
                    cache,
                    mode,
                    packed,
                },
            )?;
            hidden = out.hidden;
            self_w.extend(out.self_attention_weights);
            cross_w.extend(out.cross_attention_weights);
        }
        if let Some(norm) = &self.final_norm {
            hidden = norm.forward_with(&hidden, None, mode.arithmetic)?;
        }
        Ok(StackOutput {
            hidden,
            self_attention_weights: self_w,
            cross_attention_weights: cross_w,
        })
    }
}
