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

/// A `(batch, heads, seq, head_dim)` operand of [`AttentionOp`]: element `(b, h, s, d)` is
/// at `b*sb + h*sh + s*ss + d` of `data`.
struct HeadsView<'a> {
    data: &'a [f32],
    sb: usize,
    sh: usize,
    ss: usize,
}

impl<'a> HeadsView<'a> {
    fn new(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<Self> {
        let st = l.stride();
        if st.len() != 4 || st[3] != 1 {
            candle_core::bail!("attention operands must be 4-D with a contiguous last dimension")
        }
        Ok(Self {
            data: &s.as_slice::<f32>()?[l.start_offset()..],
            sb: st[0],
            sh: st[1],
            ss: st[2],
        })
    }

    fn head(&self, b: usize, h: usize) -> &'a [f32] {
        &self.data[b * self.sb + h * self.sh..]
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

/// Scaled dot-product attention `softmax(scale q k^T + bias) v`, differentiable in q, k and
/// v: one pass per (batch, head) forward, and a backward pass that recomputes each block's
/// probabilities instead of keeping `(batch, heads, q_len, k_len)` of them alive between the
/// passes. The composed form costs a dozen tensors of that size per layer (scale, mask add,
/// softmax, head split and merge copies, and as many again backward).
///
/// q is `(batch, heads, q_len, head_dim)`, k and v `(batch, kv_heads, k_len, head_dim)` (any
/// strides with a contiguous last dimension; `heads` a multiple of `kv_heads`); the output is
/// `(batch, q_len, heads * head_dim)` with the heads merged. The biases are constants (masks)
/// broadcastable to `(batch, heads, q_len, k_len)`: no gradient flows to them.
struct AttentionOp {
    biases: Vec<Tensor>,
    scale: f32,
}

impl AttentionOp {
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
}

impl CustomOp3 for AttentionOp {
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
        use super::kernels::{attend_block, Block, SendPtr};
        let (q, k, v) = (
            HeadsView::new(s1, l1)?,
            HeadsView::new(s2, l2)?,
            HeadsView::new(s3, l3)?,
        );
        let (batch, heads, q_len, hd) = l1.shape().dims4()?;
        let (_, kv_heads, k_len, _) = l2.shape().dims4()?;
        let n_rep = heads / kv_heads;
        let width = heads * hd;
        let mut out = vec![0f32; batch * q_len * width];
        let out_ptr = SendPtr(out.as_mut_ptr());
        self.with_biases(|biases| {
            (0..batch * heads).into_par_iter().for_each(|unit| {
                let (b, h) = (unit / heads, unit % heads);
                let g = h / n_rep;
                let blk = Block {
                    q: q.head(b, h),
                    q_stride: q.ss,
                    k: k.head(b, g),
                    k_stride: k.ss,
                    v: v.head(b, g),
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
                // SAFETY: this (b, h) writes q_len rows of head h's columns only.
                unsafe {
                    attend_block(
                        blk,
                        add,
                        out_ptr.get().add(b * q_len * width + h * hd),
                        width,
                    )
                };
            })
        })?;
        Ok((CpuStorage::F32(out), Shape::from((batch, q_len, width))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use super::kernels::{attention_probs, Block, SendPtr};
        let (batch, heads, q_len, hd) = q.dims4()?;
        let (_, kv_heads, k_len, _) = k.dims4()?;
        let n_rep = heads / kv_heads;
        let width = heads * hd;
        let grad = grad.contiguous()?;
        let mut dq = vec![0f32; batch * heads * q_len * hd];
        let mut dk = vec![0f32; batch * kv_heads * k_len * hd];
        let mut dv = vec![0f32; batch * kv_heads * k_len * hd];
        {
            let (gs, gl) = grad.storage_and_layout();
            let (qs, ql) = q.storage_and_layout();
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            fn cpu(s: &candle_core::Storage) -> candle_core::Result<&CpuStorage> {
                match s {
                    candle_core::Storage::Cpu(c) => Ok(c),
                    _ => candle_core::bail!("attention backward runs on the CPU"),
                }
            }
            let (qv, kv, vv) = (
                HeadsView::new(cpu(&qs)?, ql)?,
                HeadsView::new(cpu(&ks)?, kl)?,
                HeadsView::new(cpu(&vs)?, vl)?,
            );
            let Some(g) = f32_data(&gs, gl) else {
                candle_core::bail!("attention gradient must be f32 on the CPU")
            };
            let (dq_ptr, dk_ptr, dv_ptr) = (
                SendPtr(dq.as_mut_ptr()),
                SendPtr(dk.as_mut_ptr()),
                SendPtr(dv.as_mut_ptr()),
            );
            self.with_biases(|biases| {
                (0..batch * kv_heads).into_par_iter().for_each(|unit| {
                    let (b, kvh) = (unit / kv_heads, unit % kv_heads);
                    let (kp, vp) = (kv.head(b, kvh), vv.head(b, kvh));
                    // SAFETY (all writes below): unit (b, kvh) alone writes dk and dv of
                    // (b, kvh) and dq of the heads that share kvh.
                    let dk_blk = unsafe { dk_ptr.get().add(unit * k_len * hd) };
                    let dv_blk = unsafe { dv_ptr.get().add(unit * k_len * hd) };
                    for h in kvh * n_rep..(kvh + 1) * n_rep {
                        let qp = qv.head(b, h);
                        let blk = Block {
                            q: qp,
                            q_stride: qv.ss,
                            k: kp,
                            k_stride: kv.ss,
                            v: vp,
                            v_stride: vv.ss,
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
                        let go = &g[b * q_len * width + h * hd..];
                        let first = h == kvh * n_rep;
                        let mut dp = vec![0f32; q_len * k_len];
                        unsafe {
                            // dV += P^T dO
                            gemm_block(
                                dv_blk,
                                hd,
                                !first,
                                (k_len, hd, q_len),
                                (&p, 1, k_len),
                                (go, width, 1),
                                1.0,
                            );
                            // dP = dO V^T
                            gemm_block(
                                dp.as_mut_ptr(),
                                k_len,
                                false,
                                (q_len, k_len, hd),
                                (go, width, 1),
                                (vp, 1, vv.ss),
                                1.0,
                            );
                        }
                        // dS = P ⊙ (dP − rowsum(dP ⊙ P))
                        for (dpr, pr) in dp.chunks_mut(k_len.max(1)).zip(p.chunks(k_len.max(1))) {
                            let dot: f32 = dpr.iter().zip(pr).map(|(a, b)| a * b).sum();
                            dpr.iter_mut()
                                .zip(pr)
                                .for_each(|(d, p)| *d = p * (*d - dot));
                        }
                        unsafe {
                            // dQ = scale dS K
                            let dq_blk = dq_ptr.get().add((b * heads + h) * q_len * hd);
                            gemm_block(
                                dq_blk,
                                hd,
                                false,
                                (q_len, hd, k_len),
                                (&dp, k_len, 1),
                                (kp, kv.ss, 1),
                                self.scale,
                            );
                            // dK += scale dS^T Q
                            gemm_block(
                                dk_blk,
                                hd,
                                !first,
                                (k_len, hd, q_len),
                                (&dp, 1, k_len),
                                (qp, qv.ss, 1),
                                self.scale,
                            );
                        }
                    }
                })
            })?;
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, (batch, heads, q_len, hd), dev)?),
            Some(Tensor::from_vec(dk, (batch, kv_heads, k_len, hd), dev)?),
            Some(Tensor::from_vec(dv, (batch, kv_heads, k_len, hd), dev)?),
        ))
    }
}

/// Scaled dot-product attention with constant additive `biases`, differentiable in q, k and
/// v (see [`AttentionOp`]); returns `(batch, q_len, heads * head_dim)`.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    biases: &[&Tensor],
    scale: f32,
) -> candle_core::Result<Tensor> {
    let op = AttentionOp {
        biases: biases.iter().map(|b| (*b).clone()).collect(),
        scale,
    };
    let last_contiguous = |t: &Tensor| -> candle_core::Result<Tensor> {
        if t.stride().last() == Some(&1) {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    last_contiguous(q)?.apply_op3(&last_contiguous(k)?, &last_contiguous(v)?, op)
}
