//! Rotary position embeddings: the angle tables and the rotation, the one entry point of
//! every rotary model.

use candle_core::{IndexOp, Tensor, D};

use super::{path, Arithmetic, Path};
use crate::error::Result;
use crate::nn::kernels::rope as kernels;
use crate::nn::positional::RopeLayout;

/// Cosines and sines, `positions.len()` rows of `inv_freq.len()`: llama.cpp's tables
/// (angles by repeated multiplication) under [`Arithmetic::Ggml`] when the frequencies are
/// the plain `base^(-2i/d)` ones (`rescaled` false) or divided by llama.cpp's
/// `freq_factors`, the reference's `p × f` otherwise.
pub(crate) fn rope_angles(
    inv_freq: &[f32],
    base: f64,
    rescaled: bool,
    freq_factors: Option<&[f32]>,
    positions: &[u32],
    arithmetic: Arithmetic,
) -> (Vec<f32>, Vec<f32>) {
    match (arithmetic, rescaled, freq_factors) {
        (Arithmetic::Ggml, false, _) => {
            kernels::ggml_tables(2 * inv_freq.len(), base, None, positions)
        }
        (Arithmetic::Ggml, true, Some(ff)) => {
            kernels::ggml_tables(2 * inv_freq.len(), base, Some(ff), positions)
        }
        _ => kernels::reference_tables(inv_freq, positions),
    }
}

/// Rotates `x` `(batch, heads, seq, head_dim)` by `cos`/`sin` `(batch, seq, head_dim / 2)`
/// (shapes checked by the caller):
///
/// - f32 CPU inference under [`Arithmetic::Ggml`]: llama.cpp's multiply-adds;
/// - inference otherwise: candle's fused rotation;
/// - with gradients: the composed, differentiable form.
pub(crate) fn rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    layout: RopeLayout,
    arithmetic: Arithmetic,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let interleaved = layout == RopeLayout::Interleaved;
    match (path(&[&x, cos, sin]), arithmetic) {
        (Path::Kernel, Arithmetic::Ggml) => {
            if let Some(out) = kernels::ggml_rope(&x, cos, sin, interleaved)? {
                return Ok(out);
            }
            fused(&x, cos, sin, interleaved)
        }
        (Path::Kernel | Path::Candle { tracked: false }, _) => fused(&x, cos, sin, interleaved),
        (Path::Autograd | Path::Candle { tracked: true }, _) => composed(&x, cos, sin, layout),
    }
}

fn fused(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    Ok(if interleaved {
        candle_nn::rotary_emb::rope_i(x, cos, sin)?
    } else {
        candle_nn::rotary_emb::rope(x, cos, sin)?
    })
}

fn composed(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: RopeLayout) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    let half = d / 2;
    let cos = cos.unsqueeze(1)?; // (b, 1, s, half)
    let sin = sin.unsqueeze(1)?;
    match layout {
        RopeLayout::HalfSplit => {
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Ok(Tensor::cat(&[r1, r2], D::Minus1)?)
        }
        RopeLayout::Interleaved => {
            let pairs = x.reshape((b, h, s, half, 2))?;
            let x1 = pairs.i((.., .., .., .., 0))?;
            let x2 = pairs.i((.., .., .., .., 1))?;
            let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
            let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
            Ok(Tensor::stack(&[r1, r2], D::Minus1)?.reshape((b, h, s, d))?)
        }
    }
}
