//! Layer normalization and RMS normalization.

use candle_core::Tensor;
use candle_nn::Init;

use super::ops::{self, Arithmetic};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// Which normalization a model uses.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * weight + bias` (BERT, GPT-2, the original paper).
    LayerNorm,
    /// `x / sqrt(mean(x^2) + eps) * weight` (Llama, T5).
    RmsNorm,
}

/// Configuration of a normalization layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormConfig {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Epsilon added to the variance.
    pub eps: f64,
    /// Whether a LayerNorm has a bias (ignored for RMSNorm).
    pub bias: bool,
    /// Added to the stored weight when it is loaded: Gemma's norms multiply by
    /// `1 + weight` (`Gemma2RMSNorm`), so their checkpoints store the weight minus 1.
    pub weight_offset: f64,
}

impl NormConfig {
    /// LayerNorm with bias.
    pub fn layer_norm(eps: f64) -> Self {
        Self {
            kind: NormKind::LayerNorm,
            eps,
            bias: true,
            weight_offset: 0.0,
        }
    }

    /// RMSNorm.
    pub fn rms_norm(eps: f64) -> Self {
        Self {
            kind: NormKind::RmsNorm,
            eps,
            bias: false,
            weight_offset: 0.0,
        }
    }
}

/// A LayerNorm or RMSNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct Norm {
    kind: NormKind,
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl Norm {
    /// A norm from its parameters.
    pub fn new(kind: NormKind, weight: Tensor, bias: Option<Tensor>, eps: f64) -> Self {
        Self {
            kind,
            weight,
            bias,
            eps,
        }
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias` for a LayerNorm with bias). Old BERT
    /// checkpoints name them `gamma`/`beta`; [`Weights`] resolves those for every model.
    pub fn load(w: &Weights, dim: usize, cfg: &NormConfig, prefix: &str) -> Result<Self> {
        let wp = w.pp(prefix);
        let weight = wp.get_init(dim, "weight", Init::Const(1.0 - cfg.weight_offset))?;
        // `1 + w` in f32 once here, as Gemma's norms compute it on every call.
        let weight = if cfg.weight_offset != 0.0 {
            (weight + cfg.weight_offset)?
        } else {
            weight
        };
        let bias = if cfg.kind == NormKind::LayerNorm && cfg.bias {
            Some(wp.get_init(dim, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        if cfg.eps.is_nan() || cfg.eps <= 0.0 {
            return Err(Error::config(
                "eps",
                format!("must be > 0, found {}", cfg.eps),
            ));
        }
        Ok(Self::new(cfg.kind, weight, bias, cfg.eps))
    }

    /// Width of the normalized dimension.
    pub fn dim(&self) -> Result<usize> {
        Ok(self.weight.dims1()?)
    }

    /// Normalizes the last dimension of `x` (reference arithmetic).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, None, Arithmetic::Reference)
    }

    /// `norm(x + residual)` — the post-norm residual, one fused pass on the CPU — or
    /// `norm(x)`, computed with `arithmetic` (see [`ops::norm`](super::ops)).
    pub fn forward_with(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        arithmetic: Arithmetic,
    ) -> Result<Tensor> {
        let dim = self.weight.dims1()?;
        if x.dims().last() != Some(&dim) || residual.is_some_and(|r| r.dims() != x.dims()) {
            return Err(Error::shape(
                "norm input",
                format!("(..., {dim})"),
                residual.map_or(x.dims(), |r| r.dims()),
            ));
        }
        let params = ops::NormParams {
            kind: self.kind,
            weight: &self.weight,
            bias: self.bias.as_ref(),
            eps: self.eps,
        };
        ops::norm(x, residual, &params, arithmetic)
    }
}
