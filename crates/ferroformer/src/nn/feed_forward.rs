//! The position-wise feed-forward sublayer: `down(act(up(x)))`, or the gated form
//! `down(act(gate(x)) * up(x))` (SwiGLU, GeGLU).

use candle_core::Tensor;

use super::linear::{Linear, ParamNames};
use super::ops::{self, Mode};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// Activation functions, named as in Hugging Face configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, x)`
    Relu,
    /// GELU with the exact error function (BERT's `gelu`, PyTorch's default).
    #[serde(alias = "gelu_erf")]
    Gelu,
    /// GELU with the tanh approximation (GPT-2's `gelu_new`).
    #[serde(alias = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// `x * sigmoid(x)` (Llama's `silu`).
    #[serde(alias = "swish")]
    Silu,
}

impl Activation {
    /// Applies the activation (see [`ops::activation`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::activation(x, *self)
    }

    /// Parses a Hugging Face `hidden_act` / PyTorch `activation` string.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "relu" => Activation::Relu,
            "gelu" | "gelu_erf" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_tanh" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::config(
                    "activation",
                    format!("unknown activation `{other}`; expected one of relu, gelu, gelu_new, gelu_pytorch_tanh, silu"),
                ))
            }
        })
    }
}

/// Shape and options of a feed-forward sublayer.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedForwardConfig {
    /// Input and output width.
    pub d_model: usize,
    /// Hidden width.
    pub d_ff: usize,
    /// Activation (applied to the gate in the gated form).
    pub activation: Activation,
    /// Gated form (`act(gate(x)) * up(x)`): SwiGLU with SiLU, GeGLU with GELU.
    pub gated: bool,
    /// Whether the linear layers have biases.
    pub bias: bool,
    /// Dropout after the activation during training.
    pub dropout: f64,
}

impl FeedForwardConfig {
    /// Two linear layers with biases around `activation`.
    pub fn new(d_model: usize, d_ff: usize, activation: Activation) -> Self {
        Self {
            d_model,
            d_ff,
            activation,
            gated: false,
            bias: true,
            dropout: 0.0,
        }
    }

    /// SwiGLU without biases (Llama).
    pub fn swiglu(d_model: usize, d_ff: usize) -> Self {
        Self {
            d_model,
            d_ff,
            activation: Activation::Silu,
            gated: true,
            bias: false,
            dropout: 0.0,
        }
    }
}

/// Where a feed-forward sublayer's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedForwardNames {
    /// First projection (`linear1`, `fc1`, `up_proj`, `c_fc`).
    pub up: ParamNames,
    /// Gate projection, gated form only (`gate_proj`); `None` in the gated form: `up` holds
    /// the gate and up projections stacked, gate first (Phi-3's `gate_up_proj`).
    pub gate: Option<ParamNames>,
    /// Second projection (`linear2`, `fc2`, `down_proj`, `c_proj`).
    pub down: ParamNames,
}

impl FeedForwardNames {
    /// Two linear layers named `{up}` and `{down}`.
    pub fn two_layer(up: &str, down: &str, bias: bool) -> Self {
        Self {
            up: ParamNames::linear(up, bias),
            gate: None,
            down: ParamNames::linear(down, bias),
        }
    }

    /// Gated, with the gate and up projections stacked in one tensor `{gate_up}` (gate
    /// rows first), and `{down}`.
    pub fn gated_packed(gate_up: &str, down: &str, bias: bool) -> Self {
        Self {
            up: ParamNames::linear(gate_up, bias),
            gate: None,
            down: ParamNames::linear(down, bias),
        }
    }

    /// Gated: `{gate}`, `{up}`, `{down}`.
    pub fn gated(gate: &str, up: &str, down: &str, bias: bool) -> Self {
        Self {
            up: ParamNames::linear(up, bias),
            gate: Some(ParamNames::linear(gate, bias)),
            down: ParamNames::linear(down, bias),
        }
    }
}

/// The feed-forward sublayer.
#[derive(Debug, Clone)]
pub struct FeedForward {
    cfg: FeedForwardConfig,
    /// The gated form stacks gate and up so one GEMM computes both.
    up: Linear,
    down: Linear,
}

impl FeedForward {
    /// Loads (or creates) the sublayer.
    pub fn load(w: &Weights, cfg: &FeedForwardConfig, names: &FeedForwardNames) -> Result<Self> {
        if cfg.d_model == 0 || cfg.d_ff == 0 {
            return Err(Error::config("d_ff", "d_model and d_ff must be > 0"));
        }
        let up = match (cfg.gated, &names.gate) {
            (true, Some(gate)) => Linear::fuse(&[
                Linear::load(w, cfg.d_model, cfg.d_ff, gate)?,
                Linear::load(w, cfg.d_model, cfg.d_ff, &names.up)?,
            ])?,
            // Gate and up stacked in one tensor, gate first (Phi-3's `gate_up_proj`).
            (true, None) => Linear::load(w, cfg.d_model, 2 * cfg.d_ff, &names.up)?,
            (false, _) => Linear::load(w, cfg.d_model, cfg.d_ff, &names.up)?,
        };
        let down = Linear::load(w, cfg.d_ff, cfg.d_model, &names.down)?;
        Self::from_parts(cfg, up, down)
    }

    /// Assembles the sublayer from its projections: `up` maps `d_model` to `d_ff` (gated
    /// form: to gate and up stacked, `2 * d_ff`, as [`Linear::fuse`] builds it), `down`
    /// maps back.
    pub fn from_parts(cfg: &FeedForwardConfig, up: Linear, down: Linear) -> Result<Self> {
        if cfg.d_model == 0 || cfg.d_ff == 0 {
            return Err(Error::config("d_ff", "d_model and d_ff must be > 0"));
        }
        let up_out = if cfg.gated { 2 * cfg.d_ff } else { cfg.d_ff };
        if up.in_dim() != cfg.d_model || up.out_dim() != up_out {
            return Err(Error::shape(
                "feed-forward up projection (out, in)",
                format!("({up_out}, {})", cfg.d_model),
                &[up.out_dim(), up.in_dim()],
            ));
        }
        if down.in_dim() != cfg.d_ff || down.out_dim() != cfg.d_model {
            return Err(Error::shape(
                "feed-forward down projection (out, in)",
                format!("({}, {})", cfg.d_model, cfg.d_ff),
                &[down.out_dim(), down.in_dim()],
            ));
        }
        Ok(Self {
            cfg: cfg.clone(),
            up,
            down,
        })
    }

    /// Applies the sublayer to `(..., d_model)`; `mode` says whose arithmetic and whether
    /// dropout is on.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let cfg = &self.cfg;
        let hidden = if cfg.gated {
            let hidden = self.up.forward(x)?;
            ops::glu(&hidden, cfg.d_ff, cfg.activation, mode.arithmetic)?
        } else {
            self.up.forward_act(x, cfg.activation)?
        };
        let hidden = if mode.train && cfg.dropout > 0.0 {
            super::dropout::dropout(&hidden, cfg.dropout)?
        } else {
            hidden
        };
        self.down.forward(&hidden)
    }
}
