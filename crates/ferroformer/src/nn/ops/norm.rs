//! LayerNorm and RMSNorm over the last dimension, optionally of `x + residual` (the
//! post-norm sublayer): the one entry point of every norm.

use candle_core::{DType, Tensor, D};

use super::{path, Arithmetic, Path};
use crate::error::Result;
use crate::nn::kernels::norm as kernels;
use crate::nn::norm::NormKind;

/// The parameters of one norm.
pub(crate) struct NormParams<'a> {
    pub kind: NormKind,
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub eps: f64,
}

/// `norm(x + residual)` (or `norm(x)`):
///
/// - f32 CPU inference: LayerNorm of a residual sum in one fused pass; llama.cpp's RMSNorm
///   (f64 sum of squares) under [`Arithmetic::Ggml`]; candle's fused kernels otherwise;
/// - f32 CPU training: the differentiable one-pass ops;
/// - other devices: candle's fused kernels, or the composed form when tracked.
pub(crate) fn norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    p: &NormParams,
    arithmetic: Arithmetic,
) -> Result<Tensor> {
    let mut operands = vec![x, p.weight];
    operands.extend(residual);
    operands.extend(p.bias);
    let route = path(&operands);
    let eps = p.eps as f32;
    if let (Path::Kernel, NormKind::LayerNorm, Some(r)) = (route, p.kind, residual) {
        if let Some(out) = kernels::add_layer_norm(x, r, p.weight, p.bias, eps)? {
            return Ok(out);
        }
    }
    let x = match residual {
        Some(r) => (x + r)?,
        None => x.clone(),
    };
    let zeros = || p.weight.zeros_like();
    match (route, p.kind, arithmetic) {
        (Path::Kernel, NormKind::RmsNorm, Arithmetic::Ggml) => {
            match kernels::ggml_rms_norm(&x, p.weight, eps)? {
                Some(out) => Ok(out),
                None => Ok(candle_nn::ops::rms_norm(&x.contiguous()?, p.weight, eps)?),
            }
        }
        (Path::Kernel | Path::Candle { tracked: false }, NormKind::LayerNorm, _) => {
            let bias = match p.bias {
                Some(b) => b.clone(),
                None => zeros()?,
            };
            Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                p.weight,
                &bias,
                eps,
            )?)
        }
        (Path::Kernel | Path::Candle { tracked: false }, NormKind::RmsNorm, _) => {
            Ok(candle_nn::ops::rms_norm(&x.contiguous()?, p.weight, eps)?)
        }
        (Path::Autograd, NormKind::LayerNorm, _) => {
            let bias = match p.bias {
                Some(b) => b.clone(),
                None => zeros()?,
            };
            Ok(kernels::layer_norm_op(&x, p.weight, &bias, p.eps)?)
        }
        (Path::Autograd, NormKind::RmsNorm, _) => Ok(kernels::rms_norm_op(&x, p.weight, p.eps)?),
        (Path::Candle { tracked: true }, kind, _) => composed(&x, p, kind),
    }
}

/// The differentiable composed form, computed in f32.
fn composed(x: &Tensor, p: &NormParams, kind: NormKind) -> Result<Tensor> {
    let x32 = x.to_dtype(DType::F32)?;
    let (centered, var) = match kind {
        NormKind::LayerNorm => {
            let centered = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            (centered, var)
        }
        NormKind::RmsNorm => {
            let ms = x32.sqr()?.mean_keepdim(D::Minus1)?;
            (x32, ms)
        }
    };
    let normed = centered.broadcast_div(&(var + p.eps)?.sqrt()?)?;
    let y = normed.to_dtype(x.dtype())?.broadcast_mul(p.weight)?;
    Ok(match (kind, p.bias) {
        (NormKind::LayerNorm, Some(b)) => y.broadcast_add(b)?,
        _ => y,
    })
}
