//! Differentiable CPU kernels for training: GELU (tanh), softmax, LayerNorm and RMSNorm,
//! each one pass forward and one pass backward.
//!
//! candle's fused versions of these have no backward pass, and their composed
//! (differentiable) forms cost a dozen passes over memory and as many buffers — GELU's
//! composed backward alone calls `powf` and `tanh` per element. These custom ops keep
//! training on the CPU within a small factor of the matrix multiplications.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::kernels::{
    attention_into, dot_f32, exp_fast, exp_shifted_in_place, f32_data, max_f32, sum_f32,
    sum_map_f32, AttentionDims, HeadLayout,
};

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

/// tanh through one vectorizable `exp` (libm's `tanhf` costs several times more; absolute
/// error ~1e-7).
fn tanh(u: f32) -> f32 {
    if u.abs() > 9.0 {
        return u.signum();
    }
    let e = exp_fast(2.0 * u);
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
        y.copy_from_slice(x);
        let inv = 1.0 / super::kernels::exp_shifted_in_place(y);
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
                    let dot = dot_f32(y, g);
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
    let mean = if center { sum_f32(x) / n } else { 0.0 };
    let var = sum_map_f32(x, |v| (v - mean) * (v - mean)) / n;
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

/// `(m, n, k, output shape)` of `x W^T` for `x` `(..., k)` and `W` `(n, k)`: every leading
/// dimension of `x` is a row, so no reshape nodes enter the autograd graph.
fn linear_dims(x: &Shape, w: &Shape) -> candle_core::Result<(usize, usize, usize, Shape)> {
    let (n, k) = w.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&k) {
        candle_core::bail!("linear input {dims:?} does not end in the weight's {k} inputs")
    }
    let m = x.elem_count() / k.max(1);
    let mut out = dims.to_vec();
    *out.last_mut().expect("rank >= 1") = n;
    Ok((m, n, k, Shape::from(out)))
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
        let (m, n, k, shape) = linear_dims(l1.shape(), l2.shape())?;
        Ok((
            CpuStorage::F32(linear_forward(x, w, Some(b), m, n, k)),
            shape,
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
        let (m, n, k, _) = linear_dims(x.shape(), w.shape())?;
        let (dx, dw, db) = with_data(&[x, w, grad], |d| {
            linear_backward(d[0], d[1], d[2], m, n, k)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
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
        let (m, n, k, shape) = linear_dims(l1.shape(), l2.shape())?;
        Ok((CpuStorage::F32(linear_forward(x, w, None, m, n, k)), shape))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (m, n, k, _) = linear_dims(x.shape(), w.shape())?;
        let (dx, dw, _) = with_data(&[x, w, grad], |d| {
            linear_backward(d[0], d[1], d[2], m, n, k)
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, (n, k), w.device())?),
        ))
    }
}

/// `x W^T + b` over the last dimension of `x`, differentiable in all three, with one GEMM
/// per product.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBias),
        None => x.apply_op2(&w, LinearNoBias),
    }
}

/// `dst (m × n) (+)= alpha · lhs (m × k) · rhs (k × n)`, single-threaded (the callers run
/// one attention block per thread). Operands are `(data, row stride, column stride)`.
///
/// # Safety
/// `dst` must hold m rows `dst_rs` apart of n contiguous values; the operands' strides must
/// stay inside their slices.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    alpha: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.0.as_ptr(),
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0.as_ptr(),
        rhs.2 as isize,
        rhs.1 as isize,
        1.0,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Scaled dot-product attention `softmax(scale q k^T + bias) v` on the CPU, differentiable
/// in q, k and v: one pass per (batch, head) forward, and a backward pass that recomputes
/// each block's probabilities instead of keeping `(batch, heads, q_len, k_len)` of them alive
/// between the passes. The composed form costs a dozen tensors of that size per layer (scale,
/// mask add, softmax, head split and merge copies, and as many again backward).
///
/// The output is `(batch, q_len, heads * head_dim)`, heads merged. The biases are constants
/// (masks) broadcastable to `(batch, heads, q_len, k_len)`: no gradient flows to them.
struct Attention {
    biases: Vec<Tensor>,
    scale: f32,
}

impl Attention {
    /// Runs `f` with views of the biases' data.
    fn with_biases<R>(
        &self,
        f: impl FnOnce(&[super::kernels::BiasView]) -> R,
    ) -> candle_core::Result<R> {
        let guards: Vec<_> = self.biases.iter().map(|t| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(guards.len());
        for ((s, l), t) in guards.iter().zip(&self.biases) {
            let Some(d) = f32_data(s, l) else {
                candle_core::bail!("attention biases must be f32 CPU tensors")
            };
            views.push(super::kernels::BiasView::new(d, t.dims(), t.stride()));
        }
        Ok(f(&views))
    }

    /// The forward pass: q, k and v read from `data` through their layouts.
    fn forward(
        &self,
        data: [&[f32]; 3],
        layouts: [HeadLayout; 3],
        sh: AttentionDims,
    ) -> candle_core::Result<Vec<f32>> {
        let mut out = vec![0f32; sh.batch * sh.q_len * sh.heads * sh.head_dim];
        self.with_biases(|biases| attention_into(&mut out, data, layouts, sh, biases, self.scale))?;
        Ok(out)
    }

    /// The backward pass from the output gradient `grad` (contiguous, `(batch, q_len,
    /// heads * head_dim)`): the gradients of q, k and v written into `dst` through
    /// `dst_strides` (each element exactly once; the three may share one buffer).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        data: [&[f32]; 3],
        [q, k, v]: [HeadLayout; 3],
        grad: &[f32],
        sh: AttentionDims,
        dst: &mut [f32],
        [dq, dk, dv]: [HeadLayout; 3],
    ) -> candle_core::Result<()> {
        use super::kernels::{attention_probs, Block, SendPtr};
        let AttentionDims {
            batch,
            heads,
            kv_heads,
            q_len,
            k_len,
            head_dim: hd,
        } = sh;
        let n_rep = heads / kv_heads;
        let width = heads * hd;
        let dst_ptr = SendPtr(dst.as_mut_ptr());
        self.with_biases(|biases| {
            (0..batch * kv_heads).into_par_iter().for_each(|unit| {
                let (b, kvh) = (unit / kv_heads, unit % kv_heads);
                let kp = &data[1][k.at(b, kvh)..];
                let vp = &data[2][v.at(b, kvh)..];
                // SAFETY (all writes below): unit (b, kvh) alone writes dk and dv of
                // (b, kvh) and dq of the heads that share kvh.
                let dk_blk = dst_ptr.get().wrapping_add(dk.at(b, kvh));
                let dv_blk = dst_ptr.get().wrapping_add(dv.at(b, kvh));
                let mut dp = vec![0f32; q_len * k_len];
                for h in kvh * n_rep..(kvh + 1) * n_rep {
                    let qp = &data[0][q.at(b, h)..];
                    let blk = Block {
                        q: qp,
                        q_stride: q.ss,
                        k: kp,
                        k_stride: k.ss,
                        v: vp,
                        v_stride: v.ss,
                        q_len,
                        k_len,
                        head_dim: hd,
                        scale: self.scale,
                    };
                    let add = |s: &mut [f32]| {
                        biases
                            .iter()
                            .for_each(|bv| bv.add_to(s, b, h, q_len, k_len))
                    };
                    let p = attention_probs(&blk, add);
                    let go = &grad[b * q_len * width + h * hd..];
                    let first = h == kvh * n_rep;
                    let dims = |m, n, k| (m, n, k);
                    unsafe {
                        // dV (+)= P^T dO
                        let (pt, dov) = ((&p[..], 1, k_len), (go, width, 1));
                        gemm_block(dv_blk, dv.ss, !first, dims(k_len, hd, q_len), pt, dov, 1.0);
                        // dP = dO V^T
                        let vt = (vp, 1, v.ss);
                        gemm_block(
                            dp.as_mut_ptr(),
                            k_len,
                            false,
                            dims(q_len, k_len, hd),
                            dov,
                            vt,
                            1.0,
                        );
                    }
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P))
                    let row = k_len.max(1);
                    for (dpr, pr) in dp.chunks_mut(row).zip(p.chunks(row)) {
                        let dot = dot_f32(dpr, pr);
                        dpr.iter_mut()
                            .zip(pr)
                            .for_each(|(d, p)| *d = p * (*d - dot));
                    }
                    unsafe {
                        // dQ = scale dS K
                        let dq_blk = dst_ptr.get().wrapping_add(dq.at(b, h));
                        let (ds, km) = ((&dp[..], k_len, 1), (kp, k.ss, 1));
                        gemm_block(
                            dq_blk,
                            dq.ss,
                            false,
                            dims(q_len, hd, k_len),
                            ds,
                            km,
                            self.scale,
                        );
                        // dK (+)= scale dS^T Q
                        let (dst_t, qm) = ((&dp[..], 1, k_len), (qp, q.ss, 1));
                        gemm_block(
                            dk_blk,
                            dk.ss,
                            !first,
                            dims(k_len, hd, q_len),
                            dst_t,
                            qm,
                            self.scale,
                        );
                    }
                }
            })
        })
    }
}

/// The layout of an attention operand: 4-D with a contiguous last dimension.
fn head_layout(l: &Layout) -> candle_core::Result<HeadLayout> {
    match HeadLayout::of(l) {
        Some(h) => Ok(h),
        None => {
            candle_core::bail!("attention operands must be 4-D with a contiguous last dimension")
        }
    }
}

fn cpu_storage(s: &candle_core::Storage) -> candle_core::Result<&CpuStorage> {
    match s {
        candle_core::Storage::Cpu(c) => Ok(c),
        _ => candle_core::bail!("the attention op runs on the CPU"),
    }
}

/// [`Attention`] over separate q `(batch, heads, q_len, head_dim)` and k, v `(batch,
/// kv_heads, k_len, head_dim)` (any strides with a contiguous last dimension).
struct AttentionQkv(Attention);

impl AttentionQkv {
    fn shape(q: &Shape, k: &Shape) -> candle_core::Result<AttentionDims> {
        let (batch, heads, q_len, head_dim) = q.dims4()?;
        let (_, kv_heads, k_len, _) = k.dims4()?;
        Ok(AttentionDims {
            batch,
            heads,
            kv_heads,
            q_len,
            k_len,
            head_dim,
        })
    }
}

impl CustomOp3 for AttentionQkv {
    fn name(&self) -> &'static str {
        "ferroformer-attention"
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
        let sh = Self::shape(l1.shape(), l2.shape())?;
        let data = [s1.as_slice()?, s2.as_slice()?, s3.as_slice()?];
        let strides = [head_layout(l1)?, head_layout(l2)?, head_layout(l3)?];
        let out = self.0.forward(data, strides, sh)?;
        let shape = Shape::from((sh.batch, sh.q_len, sh.heads * sh.head_dim));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let sh = Self::shape(q.shape(), k.shape())?;
        let (hd, q_n, kv_n) = (sh.head_dim, q.elem_count(), k.elem_count());
        // dq, dk and dv side by side in one buffer, each contiguous.
        let mut dst = vec![0f32; q_n + 2 * kv_n];
        {
            let grad = grad.contiguous()?;
            let (gs, gl) = grad.storage_and_layout();
            let Some(g) = f32_data(&gs, gl) else {
                candle_core::bail!("attention gradient must be f32 on the CPU")
            };
            let guards = [q, k, v].map(|t| t.storage_and_layout());
            let data = [
                cpu_storage(&guards[0].0)?.as_slice()?,
                cpu_storage(&guards[1].0)?.as_slice()?,
                cpu_storage(&guards[2].0)?.as_slice()?,
            ];
            let strides = [
                head_layout(guards[0].1)?,
                head_layout(guards[1].1)?,
                head_layout(guards[2].1)?,
            ];
            let dq = HeadLayout::contiguous(sh.heads, sh.q_len, hd);
            let mut dk = HeadLayout::contiguous(sh.kv_heads, sh.k_len, hd);
            let mut dv = dk;
            dk.offset = q_n;
            dv.offset = q_n + kv_n;
            self.0
                .backward(data, strides, g, sh, &mut dst, [dq, dk, dv])?;
        }
        let dev = q.device();
        let all = Tensor::from_vec(dst, q_n + 2 * kv_n, dev)?;
        Ok((
            Some(all.narrow(0, 0, q_n)?.reshape(q.shape())?),
            Some(all.narrow(0, q_n, kv_n)?.reshape(k.shape())?),
            Some(all.narrow(0, q_n + kv_n, kv_n)?.reshape(v.shape())?),
        ))
    }
}

/// [`Attention`] straight from the fused projection `(batch, seq, (heads + 2 kv_heads) *
/// head_dim)`, q then k then v columns: no head split copies forward, and one gradient
/// buffer backward instead of three narrowed ones summed.
struct AttentionPacked {
    attn: Attention,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl AttentionPacked {
    fn layout(&self, seq: usize, width: usize) -> (AttentionDims, [HeadLayout; 3]) {
        let hd = self.head_dim;
        let q_dim = self.heads * hd;
        let kv_dim = self.kv_heads * hd;
        let strides = [
            HeadLayout::packed(0, seq, width, hd),
            HeadLayout::packed(q_dim, seq, width, hd),
            HeadLayout::packed(q_dim + kv_dim, seq, width, hd),
        ];
        let sh = AttentionDims {
            batch: 0,
            heads: self.heads,
            kv_heads: self.kv_heads,
            q_len: seq,
            k_len: seq,
            head_dim: hd,
        };
        (sh, strides)
    }
}

impl CustomOp1 for AttentionPacked {
    fn name(&self) -> &'static str {
        "ferroformer-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let (batch, seq, width) = l.shape().dims3()?;
        let (mut sh, strides) = self.layout(seq, width);
        sh.batch = batch;
        let out = self.attn.forward([x; 3], strides, sh)?;
        let shape = Shape::from((batch, seq, self.heads * self.head_dim));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (batch, seq, width) = arg.dims3()?;
        let (mut sh, strides) = self.layout(seq, width);
        sh.batch = batch;
        let mut dst = vec![0f32; arg.elem_count()];
        with_data(&[arg, grad], |d| {
            self.attn
                .backward([d[0]; 3], strides, d[1], sh, &mut dst, strides)
        })??;
        Ok(Some(Tensor::from_vec(dst, arg.shape(), arg.device())?))
    }
}

/// Scaled dot-product attention with constant additive `biases`, differentiable in q, k and
/// v (see [`Attention`]); returns `(batch, q_len, heads * head_dim)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    biases: &[&Tensor],
    scale: f32,
) -> candle_core::Result<Tensor> {
    let op = AttentionQkv(Attention {
        biases: biases.iter().map(|b| (*b).clone()).collect(),
        scale,
    });
    let last_contiguous = |t: &Tensor| -> candle_core::Result<Tensor> {
        if t.stride().last() == Some(&1) {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    last_contiguous(q)?.apply_op3(&last_contiguous(k)?, &last_contiguous(v)?, op)
}

/// [`attention`] straight from the fused projection `qkv` `(batch, seq, (heads + 2 kv_heads)
/// * head_dim)` (self-attention without rotary positions).
pub(crate) fn attention_packed(
    qkv: &Tensor,
    (heads, kv_heads, head_dim): (usize, usize, usize),
    biases: &[&Tensor],
    scale: f32,
) -> candle_core::Result<Tensor> {
    let op = AttentionPacked {
        attn: Attention {
            biases: biases.iter().map(|b| (*b).clone()).collect(),
            scale,
        },
        heads,
        kv_heads,
        head_dim,
    };
    qkv.contiguous()?.apply_op1(op)
}

/// Mean cross-entropy of rows of logits against class ids, one pass forward (log-sum-exp per
/// row) and one backward (`softmax - one_hot`), instead of the composed log-softmax,
/// gather and mean — a dozen nodes over `(rows, vocab)` in the autograd graph.
struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "ferroformer-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let logits = contiguous_f32(s1, l1)?;
        let (rows, vocab) = l1.shape().dims2()?;
        let labels = match l2.contiguous_offsets() {
            Some((a, b)) => &s2.as_slice::<u32>()?[a..b],
            None => candle_core::bail!("cross-entropy labels must be contiguous"),
        };
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= vocab) {
            candle_core::bail!("cross-entropy label {bad} is outside the {vocab} classes")
        }
        let total: f64 = logits
            .par_chunks(vocab.max(1))
            .zip(labels.par_iter())
            .map(|(row, &label)| {
                let max = max_f32(row);
                let sum = sum_map_f32(row, |x| exp_fast(x - max));
                (max + sum.ln() - row[label as usize]) as f64
            })
            .sum();
        let mean = if rows == 0 {
            f64::NAN
        } else {
            total / rows as f64
        };
        Ok((CpuStorage::F32(vec![mean as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, vocab) = logits.dims2()?;
        let scale = grad.to_dtype(DType::F32)?.to_scalar::<f32>()? / rows.max(1) as f32;
        let labels = labels.to_vec1::<u32>()?;
        let dx = with_data(&[logits], |d| {
            let mut dx = vec![0f32; rows * vocab];
            dx.par_chunks_mut(vocab.max(1))
                .zip(d[0].par_chunks(vocab.max(1)))
                .zip(labels.par_iter())
                .for_each(|((o, row), &label)| {
                    o.copy_from_slice(row);
                    let inv = scale / exp_shifted_in_place(o);
                    o.iter_mut().for_each(|v| *v *= inv);
                    o[label as usize] -= scale;
                });
            dx
        })?;
        Ok((
            Some(Tensor::from_vec(dx, (rows, vocab), logits.device())?),
            None,
        ))
    }
}

/// Mean cross-entropy of `logits` `(rows, classes)` against `labels` `(rows,)` (u32),
/// differentiable in the logits.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&labels.to_dtype(DType::U32)?.contiguous()?, CrossEntropy)
}
