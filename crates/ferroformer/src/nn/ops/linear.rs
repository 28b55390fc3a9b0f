//! `act(x W^T + b)`: the one entry point of every linear layer, LM head and projection.

use candle_core::{DType, Tensor};

use super::{activation, path, Path};
use crate::error::Result;
use crate::nn::feed_forward::Activation;
use crate::nn::kernels::gemm;
use crate::nn::linear::WeightMatrix;
use crate::nn::quantized::QuantizedMatrix;

/// `act(x W^T + b)` over the last dimension of `x` (any rank); `weight` is `(out, in)`.
///
/// - quantized weights: the GGML block product (activations quantized as llama.cpp does);
/// - f32 CPU inference: one GEMM starting from the bias, the activation in place;
/// - f32 CPU training: the differentiable op (one GEMM per product each way);
/// - anything else: candle's matmul.
pub(crate) fn linear(
    x: &Tensor,
    weight: &WeightMatrix,
    bias: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let w = match weight {
        WeightMatrix::Quantized(q) => return quantized(x, q, bias, act),
        WeightMatrix::Dense(w) => w,
    };
    let mut operands = vec![x, w];
    operands.extend(bias);
    let y = match path(&operands) {
        Path::Kernel => match gemm::linear(x, w, bias, act)? {
            Some(y) => return Ok(y),
            None => composed(x, w, bias)?,
        },
        Path::Autograd => gemm::linear_op(x, w, bias)?,
        Path::Candle { .. } => composed(x, w, bias)?,
    };
    match act {
        Some(act) => activation(&y, act),
        None => Ok(y),
    }
}

/// candle's matmul: one 2-D GEMM over all leading dimensions (faster than a batched matmul
/// against a broadcast weight), then the bias.
fn composed(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let (n, k) = w.dims2()?;
    let rows = x.elem_count() / k.max(1);
    let mut y = x.reshape((rows, k))?.matmul(&w.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out_dims = dims.to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = n;
    }
    Ok(y.reshape(out_dims)?)
}

/// The product with GGML blocks (CPU, inference only). The kernels read f32 rows; other
/// dtypes are converted and converted back.
fn quantized(
    x: &Tensor,
    q: &QuantizedMatrix,
    bias: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let in_dim = q.in_dim();
    let rows = x.elem_count() / in_dim.max(1);
    let x2 = x.reshape((rows, in_dim))?.to_dtype(DType::F32)?;
    let mut y = q.matmul_t(&x2)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.to_dtype(DType::F32)?)?;
    }
    let mut out_dims = x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = q.out_dim();
    }
    let y = y.reshape(out_dims)?.to_dtype(x.dtype())?;
    match act {
        Some(act) => activation(&y, act),
        None => Ok(y),
    }
}
