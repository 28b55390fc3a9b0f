//! Differentiable CPU kernels for training: GELU (tanh), softmax, LayerNorm and RMSNorm,
//! each one pass forward and one pass backward.
//!
//! candle's fused versions of these have no backward pass, and their composed
//! (differentiable) forms cost a dozen passes over memory and as many buffers — GELU's
//! composed backward alone calls `powf` and `tanh` per element. These custom ops keep
//! training on the CPU within a small factor of the matrix multiplications.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::f32_data;

/// Whether these kernels apply: f32 tensors on the CPU.
pub(crate) fn applicable(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// Runs `f` on the f32 data of contiguous tensors.
fn with_data<R>(tensors: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> candle_core::Result<R> {
    let owned: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        let Some(d) = f32_data(s, l) else {
            candle_core::bail!("expected f32 CPU tensors")
        };
        slices.push(&d[..l.shape().elem_count()]);
    }
    Ok(f(&slices))
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// tanh through one `exp` (libm's `tanhf` costs several times more; absolute error ~1e-7).
fn tanh(u: f32) -> f32 {
    if u.abs() > 9.0 {
        return u.signum();
    }
    let e = (2.0 * u).exp();
    (e - 1.0) / (e + 1.0)
}

/// `gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu_tanh_value(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)))
}

/// `d/dx gelu_tanh(x)`.
fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "ferroformer-gelu-tanh"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(y, x)| {
                y.iter_mut()
                    .zip(x)
                    .for_each(|(y, &x)| *y = gelu_tanh_value(x))
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = with_data(&[arg, grad], |d| {
            let (x, g) = (d[0], d[1]);
            let mut dx = vec![0f32; x.len()];
            dx.par_chunks_mut(1 << 14)
                .zip(x.par_chunks(1 << 14).zip(g.par_chunks(1 << 14)))
                .for_each(|(o, (x, g))| {
                    for i in 0..o.len() {
                        o[i] = g[i] * gelu_tanh_grad(x[i]);
                    }
                });
            dx
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// GELU with the tanh approximation, differentiable.
pub(crate) fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(GeluTanh)
}

struct SoftmaxLastDim;

fn softmax_rows(x: &[f32], y: &mut [f32], n: usize) {
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = (x - max).exp();
            sum += *y;
        }
        let inv = 1.0 / sum;
        y.iter_mut().for_each(|y| *y *= inv);
    });
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "ferroformer-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        softmax_rows(x, &mut y, n);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = arg.dims().last().copied().unwrap_or(1).max(1);
        let dx = with_data(&[res, grad], |d| {
            let (y, g) = (d[0], d[1]);
            let mut dx = vec![0f32; y.len()];
            dx.par_chunks_mut(n)
                .zip(y.par_chunks(n).zip(g.par_chunks(n)))
                .for_each(|(o, (y, g))| {
                    let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                    for i in 0..n {
                        o[i] = y[i] * (g[i] - dot);
                    }
                });
            dx
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Softmax over the last dimension, differentiable.
pub(crate) fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}

/// Row statistics: (mean, 1/sqrt(var + eps)); RMSNorm uses mean 0 and the mean square.
fn row_stats(x: &[f32], eps: f32, center: bool) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = if center {
        x.iter().sum::<f32>() / n
    } else {
        0.0
    };
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct Norm {
    eps: f32,
    center: bool,
}

impl Norm {
    fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, self.eps, self.center);
            for i in 0..n {
                y[i] = (x[i] - mean) * rstd * w[i] + b.map_or(0.0, |b| b[i]);
            }
        });
        y
    }

    /// (dx, dw, db) for rows of width `n`.
    fn backward(
        &self,
        x: &[f32],
        w: &[f32],
        g: &[f32],
        n: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut dx = vec![0f32; x.len()];
        let rows_per_chunk = (1 << 12) / n.max(1) + 1;
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(n * rows_per_chunk)
            .zip(
                x.par_chunks(n * rows_per_chunk)
                    .zip(g.par_chunks(n * rows_per_chunk)),
            )
            .map(|(dx, (x, g))| {
                let mut dw = vec![0f32; n];
                let mut db = vec![0f32; n];
                for ((dx, x), g) in dx.chunks_mut(n).zip(x.chunks(n)).zip(g.chunks(n)) {
                    let (mean, rstd) = row_stats(x, self.eps, self.center);
                    let (mut sum_gw, mut sum_gw_xhat) = (0f32, 0f32);
                    for i in 0..n {
                        let xhat = (x[i] - mean) * rstd;
                        let gw = g[i] * w[i];
                        sum_gw += gw;
                        sum_gw_xhat += gw * xhat;
                        dw[i] += g[i] * xhat;
                        db[i] += g[i];
                    }
                    let nf = n as f32;
                    let mean_gw = if self.center { sum_gw / nf } else { 0.0 };
                    let mean_gw_xhat = sum_gw_xhat / nf;
                    for i in 0..n {
                        let xhat = (x[i] - mean) * rstd;
                        dx[i] = rstd * (g[i] * w[i] - mean_gw - xhat * mean_gw_xhat);
                    }
                }
                (dw, db)
            })
            .collect();
        let mut dw = vec![0f32; n];
        let mut db = vec![0f32; n];
        for (pw, pb) in partial {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        (dx, dw, db)
    }
}

struct LayerNormOp(Norm);

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "ferroformer-layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
        );
        let n = w.len();
        Ok((
            CpuStorage::F32(self.0.forward(x, w, Some(b), n)),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.elem_count();
        let (dx, dw, db) = with_data(&[x, w, grad], |d| self.0.backward(d[0], d[1], d[2], n))?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

struct RmsNormOp(Norm);

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "ferroformer-rms-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        Ok((
            CpuStorage::F32(self.0.forward(x, w, None, w.len())),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = w.elem_count();
        let (dx, dw, _) = with_data(&[x, w, grad], |d| self.0.backward(d[0], d[1], d[2], n))?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
        ))
    }
}

/// LayerNorm over the last dimension, differentiable in `x`, `weight` and `bias`.
pub(crate) fn layer_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        weight,
        bias,
        LayerNormOp(Norm {
            eps: eps as f32,
            center: true,
        }),
    )
}

/// RMSNorm over the last dimension, differentiable in `x` and `weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(
        weight,
        RmsNormOp(Norm {
            eps: eps as f32,
            center: false,
        }),
    )
}

/// `dst (rows × cols) = lhs (rows × inner) · rhs (inner × cols)`, all given by
/// (column stride, row stride) of row-major buffers.
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    inner: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    if rows == 0 || cols == 0 {
        return;
    }
    // SAFETY: the callers pass buffers whose strides cover rows × inner and inner × cols.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            inner,
            dst.as_mut_ptr(),
            1,
            cols as isize,
            false,
            lhs.0.as_ptr(),
            lhs.1 as isize,
            lhs.2 as isize,
            rhs.0.as_ptr(),
            rhs.1 as isize,
            rhs.2 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            super::kernels::gemm_parallelism(rows, cols, inner),
        );
    }
}

/// Backward of `y = x W^T (+ b)` for `x` (m × k), `W` (n × k), `g` (m × n).
fn linear_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; m * k];
    gemm_into(&mut dx, m, k, n, (g, 1, n), (w, 1, k)); // g · W
    let mut dw = vec![0f32; n * k];
    gemm_into(&mut dw, n, k, m, (g, n, 1), (x, 1, k)); // g^T · x
    let mut db = vec![0f32; n];
    for row in g.chunks(n) {
        db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
    }
    (dx, dw, db)
}

fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    gemm_into(&mut y, m, n, k, (x, 1, k), (w, k, 1)); // x · W^T
    if let Some(b) = b {
        y.par_chunks_mut(n)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    }
    y
}

struct LinearBias;

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "ferroformer-linear"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            contiguous_f32(s1, l1)?,
            contiguous_f32(s2, l2)?,
            contiguous_f32(s3, l3)?,
        );
        let (m, k) = l1.shape().dims2()?;
        let n = l2.shape().dims2()?.0;
        Ok((
            CpuStorage::F32(linear_forward(x, w, Some(b), m, n, k)),
            Shape::from((m, n)),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = w.dim(0)?;
        let (dx, dw, db) = with_data(&[x, w, grad], |d| {
            linear_backward(d[0], d[1], d[2], m, n, k)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, (m, k), x.device())?),
            Some(Tensor::from_vec(dw, (n, k), w.device())?),
            Some(Tensor::from_vec(db, n, b.device())?),
        ))
    }
}

struct LinearNoBias;

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "ferroformer-linear-no-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let (m, k) = l1.shape().dims2()?;
        let n = l2.shape().dims2()?.0;
        Ok((
            CpuStorage::F32(linear_forward(x, w, None, m, n, k)),
            Shape::from((m, n)),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, k) = x.dims2()?;
        let n = w.dim(0)?;
        let (dx, dw, _) = with_data(&[x, w, grad], |d| {
            linear_backward(d[0], d[1], d[2], m, n, k)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, (m, k), x.device())?),
            Some(Tensor::from_vec(dw, (n, k), w.device())?),
        ))
    }
}

/// `x W^T + b` for a 2-D `x`, differentiable in all three, with one GEMM per product.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBias),
        None => x.apply_op2(&w, LinearNoBias),
    }
}
