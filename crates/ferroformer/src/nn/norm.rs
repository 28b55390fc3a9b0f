//! Layer normalization and RMS normalization.

use candle_core::{DType, Tensor, D};
use candle_nn::Init;

use super::ggml::Arithmetic;
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
}

impl NormConfig {
    /// LayerNorm with bias.
    pub fn layer_norm(eps: f64) -> Self {
        Self {
            kind: NormKind::LayerNorm,
            eps,
            bias: true,
        }
    }

    /// RMSNorm.
    pub fn rms_norm(eps: f64) -> Self {
        Self {
            kind: NormKind::RmsNorm,
            eps,
            bias: false,
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
    arithmetic: Arithmetic,
}

impl Norm {
    /// A norm from its parameters.
    pub fn new(kind: NormKind, weight: Tensor, bias: Option<Tensor>, eps: f64) -> Self {
        Self {
            kind,
            weight,
            bias,
            eps,
            arithmetic: Arithmetic::Reference,
        }
    }

    /// The same norm computing with `arithmetic` (RMSNorm: llama.cpp's f64 sum of squares
    /// under [`Arithmetic::Ggml`]).
    pub fn with_arithmetic(mut self, arithmetic: Arithmetic) -> Self {
        self.arithmetic = arithmetic;
        self
    }

    /// Loads `{prefix}.weight` (and `{prefix}.bias` for a LayerNorm with bias). Old BERT
    /// checkpoints name them `gamma`/`beta`; [`Weights`] resolves those for every model.
    pub fn load(w: &Weights, dim: usize, cfg: &NormConfig, prefix: &str) -> Result<Self> {
        let wp = w.pp(prefix);
        let weight = wp.get_init(dim, "weight", Init::Const(1.0))?;
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

    /// `norm(x + y)`, the post-norm residual; one fused pass on the CPU inference path.
    pub fn forward_residual(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        if self.kind == NormKind::LayerNorm {
            if let Some(out) = super::kernels::add_layer_norm(
                x,
                y,
                &self.weight,
                self.bias.as_ref(),
                self.eps as f32,
            )? {
                return Ok(out);
            }
        }
        self.forward(&(x + y)?)
    }

    /// Normalizes the last dimension of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.weight.dims1()?;
        if x.dims().last() != Some(&dim) {
            return Err(Error::shape(
                "norm input",
                format!("(..., {dim})"),
                x.dims(),
            ));
        }
        // candle's fused kernels have no backward pass: use them only when no gradient is
        // being tracked, and the composed (differentiable) form otherwise.
        let fast = x.is_contiguous() && !x.track_op() && !self.weight.track_op();
        let eps = self.eps as f32;
        if self.kind == NormKind::RmsNorm && self.arithmetic == Arithmetic::Ggml {
            if let Some(out) = super::ggml::rms_norm(x, &self.weight, eps)? {
                return Ok(out);
            }
        }
        match self.kind {
            NormKind::LayerNorm if fast => {
                let bias = match &self.bias {
                    Some(b) => b.clone(),
                    None => self.weight.zeros_like()?,
                };
                Ok(candle_nn::ops::layer_norm(x, &self.weight, &bias, eps)?)
            }
            NormKind::RmsNorm if fast => Ok(candle_nn::ops::rms_norm(x, &self.weight, eps)?),
            // Training on the CPU: one-pass kernels with a backward pass.
            NormKind::LayerNorm if super::autograd_ops::applicable(&[x, &self.weight]) => {
                let bias = match &self.bias {
                    Some(b) => b.clone(),
                    None => self.weight.zeros_like()?,
                };
                Ok(super::autograd_ops::layer_norm(
                    x,
                    &self.weight,
                    &bias,
                    self.eps,
                )?)
            }
            NormKind::RmsNorm if super::autograd_ops::applicable(&[x, &self.weight]) => {
                Ok(super::autograd_ops::rms_norm(x, &self.weight, self.eps)?)
            }
            NormKind::LayerNorm => {
                let x32 = x.to_dtype(DType::F32)?;
                let mean = x32.mean_keepdim(D::Minus1)?;
                let centered = x32.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
                let y = normed.to_dtype(x.dtype())?.broadcast_mul(&self.weight)?;
                Ok(match &self.bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                })
            }
            NormKind::RmsNorm => {
                let x32 = x.to_dtype(DType::F32)?;
                let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = x32.broadcast_div(&(ms + self.eps)?.sqrt()?)?;
                Ok(normed.to_dtype(x.dtype())?.broadcast_mul(&self.weight)?)
            }
        }
    }
}
