//! Normalization over the last dimension: LayerNorm fused with the post-norm residual add
//! (inference), llama.cpp's RMSNorm, and the differentiable LayerNorm and RMSNorm (training),
//! forward and backward side by side.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{sum_f32, sum_map_f32};
use super::{contiguous_f32, f32_data, with_data, with_f32};
use crate::error::{Error, Result};

/// `LayerNorm(x + y)` over the last dimension in one pass per row (the post-norm residual):
/// no intermediate sum tensor, rows in parallel. `None` for tensors that are not f32 on the
/// CPU.
pub(crate) fn add_layer_norm(
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Option<Tensor>> {
    let d = weight.elem_count();
    if d == 0 || x.dims().last() != Some(&d) || x.dims() != y.dims() {
        return Err(Error::shape("norm input", format!("(..., {d})"), x.dims()));
    }
    if bias.is_some_and(|b| b.elem_count() != d) {
        return Err(Error::shape(
            "norm bias",
            format!("({d},)"),
            bias.map_or(&[][..], |b| b.dims()),
        ));
    }
    let all: Vec<Tensor> = [Some(x), Some(y), Some(weight), bias]
        .into_iter()
        .flatten()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let n = x.elem_count();
    let lens = [n, n, d, d];
    let data: Option<Vec<&[f32]>> = guards
        .iter()
        .zip(lens)
        .map(|((s, l), len)| f32_data(s, l).and_then(|d| d.get(..len)))
        .collect();
    let Some(data) = data else { return Ok(None) };
    let (xd, yd, wd) = (data[0], data[1], data[2]);
    let bd = data.get(3).copied();
    let mut out = vec![0f32; n];
    out.par_chunks_mut(d)
        .zip(xd.par_chunks(d).zip(yd.par_chunks(d)))
        .for_each(|(o, (xr, yr))| {
            for ((o, a), b) in o.iter_mut().zip(xr).zip(yr) {
                *o = a + b;
            }
            let mean = sum_f32(o) / d as f32;
            let var = sum_map_f32(o, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            match bd {
                Some(bd) => {
                    for ((o, w), b) in o.iter_mut().zip(wd).zip(bd) {
                        *o = (*o - mean) * inv * w + b;
                    }
                }
                None => {
                    for (o, w) in o.iter_mut().zip(wd) {
                        *o = (*o - mean) * inv * w;
                    }
                }
            }
        });
    drop(guards);
    Ok(Some(Tensor::from_vec(out, x.dims(), &Device::Cpu)?))
}

/// RMSNorm of the last dimension, `(x × scale) × weight`, as
/// `ggml_compute_forward_rms_norm_f32` and the following `ggml_mul` compute it.
pub(crate) fn ggml_rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let weight = weight.contiguous()?;
    let d = weight.elem_count();
    if d == 0 || x.dims().last() != Some(&d) {
        return Err(Error::shape("norm input", format!("(..., {d})"), x.dims()));
    }
    let x = x.contiguous()?;
    let out = with_f32(&x, |xs| {
        with_f32(&weight, |w| {
            let mut out = vec![0f32; xs.len()];
            for (o, row) in out.chunks_mut(d).zip(xs.chunks(d)) {
                let mut sum = 0f64;
                for v in row {
                    sum += (v * v) as f64;
                }
                let mean = (sum / d as f64) as f32;
                let scale = 1.0 / (mean + eps).sqrt();
                for ((o, v), w) in o.iter_mut().zip(row).zip(w) {
                    *o = (v * scale) * w;
                }
            }
            out
        })
    })
    .flatten();
    out.map(|o| Ok(Tensor::from_vec(o, x.shape(), &Device::Cpu)?))
        .transpose()
}

/// Row statistics: (mean, 1/sqrt(var + eps)); RMSNorm uses mean 0 and the mean square.
fn row_stats(x: &[f32], eps: f32, center: bool) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = if center { sum_f32(x) / n } else { 0.0 };
    let var = sum_map_f32(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct NormRows {
    eps: f32,
    center: bool,
}

impl NormRows {
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

struct LayerNormOp(NormRows);

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

struct RmsNormOp(NormRows);

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
pub(crate) fn layer_norm_op(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<Tensor> {
    check_norm_operands(x, weight, Some(bias))?;
    x.contiguous()?.apply_op3(
        weight,
        bias,
        LayerNormOp(NormRows {
            eps: eps as f32,
            center: true,
        }),
    )
}

/// RMSNorm over the last dimension, differentiable in `x` and `weight`.
pub(crate) fn rms_norm_op(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    check_norm_operands(x, weight, None)?;
    x.contiguous()?.apply_op2(
        weight,
        RmsNormOp(NormRows {
            eps: eps as f32,
            center: false,
        }),
    )
}

/// The differentiable norms read rows of `weight.len()` values: `x` must end in that width
/// and the weight and bias be vectors of it.
fn check_norm_operands(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<()> {
    let d = weight.elem_count();
    if d == 0
        || weight.rank() != 1
        || x.dims().last() != Some(&d)
        || bias.is_some_and(|b| b.dims() != [d])
    {
        candle_core::bail!(
            "norm over {:?} with a weight of {:?} and a bias of {:?}",
            x.dims(),
            weight.dims(),
            bias.map(|b| b.dims().to_vec())
        )
    }
    Ok(())
}
