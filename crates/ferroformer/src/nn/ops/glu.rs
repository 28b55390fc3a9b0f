//! Activations, and `act(gate) * up` of a fused gated projection (SwiGLU, GeGLU).

use candle_core::{Tensor, D};

use super::{path, Arithmetic, Path};
use crate::error::Result;
use crate::nn::feed_forward::Activation;
use crate::nn::kernels::{glu as kernels, math};

/// `act(x)`: candle's element-wise ops, or the differentiable one-pass GELUs when training
/// on the CPU.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match (path(&[x]), act) {
        (Path::Autograd, Activation::GeluTanh) => math::gelu_tanh_op(x)?,
        (Path::Autograd, Activation::Gelu) => math::gelu_erf_op(x)?,
        (_, Activation::Relu) => x.relu()?,
        (_, Activation::Gelu) => x.gelu_erf()?,
        (_, Activation::GeluTanh) => x.gelu()?,
        (_, Activation::Silu) => x.silu()?,
    })
}

/// `act(gate) * up` for `hidden` `(..., 2 * d_ff)` holding gate then up:
///
/// - f32 CPU inference: one pass into one buffer (llama.cpp's SwiGLU and GeGLU under
///   [`Arithmetic::Ggml`]);
/// - otherwise: two views and candle's element-wise ops (differentiable).
pub(crate) fn glu(
    hidden: &Tensor,
    d_ff: usize,
    act: Activation,
    arithmetic: Arithmetic,
) -> Result<Tensor> {
    let fused = match (path(&[hidden]), arithmetic, act) {
        (Path::Kernel, Arithmetic::Ggml, Activation::Silu) => kernels::ggml_swiglu(hidden, d_ff)?,
        (Path::Kernel, Arithmetic::Ggml, Activation::GeluTanh) => {
            kernels::ggml_geglu(hidden, d_ff)?
        }
        (Path::Kernel, _, _) => kernels::gated_activation(hidden, d_ff, act)?,
        _ => None,
    };
    match fused {
        Some(out) => Ok(out),
        None => {
            let gate = hidden.narrow(D::Minus1, 0, d_ff)?;
            let up = hidden.narrow(D::Minus1, d_ff, d_ff)?;
            Ok((activation(&gate, act)? * up)?)
        }
    }
}
