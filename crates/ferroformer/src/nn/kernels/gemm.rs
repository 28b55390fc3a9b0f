//! Matrix products: `act(x W^T + b)` for inference (one GEMM starting from the bias, the
//! activation applied in place) and the differentiable linear op for training (one GEMM per
//! product in both directions), side by side.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::apply_activation;
use super::{check_extent, contiguous_f32, f32_data, gemm_parallelism, with_data};
use crate::error::{Error, Result};
use crate::nn::feed_forward::Activation;

/// Values an `rows × cols` matrix with strides `(col_stride, row_stride)` reaches.
pub(crate) fn extent(rows: usize, cols: usize, col_stride: usize, row_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

/// `act(x W^T + b)` for a contiguous f32 CPU `x` `(..., in)` and `w` `(out, in)`; `None`
/// when `w`'s layout has no unit stride (the caller then composes the product).
///
/// `w` may be any 2-D view with a unit stride: row-major `(out, in)` as checkpoints store
/// it, or the transpose of a row-major `(in, out)` (see [`crate::nn::Linear::load`]), which
/// the GEMM reads without re-packing it on every call. Shapes and extents are checked here.
pub(crate) fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Option<Tensor>> {
    let (n, k) = w.dims2()?;
    if x.dims().last() != Some(&k) {
        return Err(Error::shape(
            "linear layer input",
            format!("(..., {k})"),
            x.dims(),
        ));
    }
    if let Some(b) = b {
        if b.dims() != [n] {
            return Err(Error::shape(
                "linear layer bias",
                format!("({n},)"),
                b.dims(),
            ));
        }
    }
    // Element (o, i) of `w` is at o * w_out + i * w_in.
    let (w_out, w_in) = match w.stride() {
        [so, si] if *so == 1 || *si == 1 => (*so, *si),
        _ => return Ok(None),
    };
    let x = x.contiguous()?;
    let m = x.elem_count() / k.max(1);
    let mut dst: Vec<f32> = match b {
        Some(b) => {
            let bias = b.to_vec1::<f32>()?;
            let mut d = Vec::with_capacity(m * n);
            for _ in 0..m {
                d.extend_from_slice(&bias);
            }
            d
        }
        None => vec![0f32; m * n],
    };
    if m > 0 && n > 0 && k > 0 {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (Some(xd), Some(wd)) = (f32_data(&xs, xl), f32_data(&ws, wl)) else {
            return Ok(None);
        };
        check_extent("linear input", xd, m * k)?;
        check_extent("linear weight", wd, extent(n, k, w_in, w_out))?;
        // SAFETY: dst holds m×n values row-major (checked length); x covers m×k row-major and
        // w the n×k view with strides (w_out, w_in), read as the k×n matrix W^T (column
        // stride w_out, row stride w_in): both extents were checked above.
        unsafe {
            ::gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                b.is_some(),
                xd.as_ptr(),
                1,
                k as isize,
                wd.as_ptr(),
                w_out as isize,
                w_in as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm_parallelism(m, n, k),
            );
        }
    }
    if let Some(act) = act {
        apply_activation(&mut dst, act);
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok(Some(Tensor::from_vec(dst, dims, &Device::Cpu)?))
}

/// `dst (rows × cols) = lhs (rows × inner) · rhs (inner × cols)`, the operands given as
/// (data, column stride, row stride); `dst` is row-major. The extents are checked first.
fn gemm_into(
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    inner: usize,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) -> candle_core::Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    if dst.len() < rows * cols
        || lhs.0.len() < extent(rows, inner, lhs.1, lhs.2)
        || rhs.0.len() < extent(inner, cols, rhs.1, rhs.2)
    {
        candle_core::bail!(
            "gemm operands shorter than their {rows}x{inner} by {inner}x{cols} layouts"
        )
    }
    // SAFETY: every operand covers its extent (checked above).
    unsafe {
        ::gemm::gemm(
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
            gemm_parallelism(rows, cols, inner),
        );
    }
    Ok(())
}

/// Backward of `y = x W^T (+ b)` for `x` (m × k), `W` (n × k), `g` (m × n).
fn linear_backward(
    x: &[f32],
    w: &[f32],
    g: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> candle_core::Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let mut dx = vec![0f32; m * k];
    gemm_into(&mut dx, m, k, n, (g, 1, n), (w, 1, k))?; // g · W
    let mut dw = vec![0f32; n * k];
    gemm_into(&mut dw, n, k, m, (g, n, 1), (x, 1, k))?; // g^T · x
    let mut db = vec![0f32; n];
    for row in g.chunks(n.max(1)) {
        db.iter_mut().zip(row).for_each(|(d, v)| *d += v);
    }
    Ok((dx, dw, db))
}

fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
) -> candle_core::Result<Vec<f32>> {
    let mut y = vec![0f32; m * n];
    gemm_into(&mut y, m, n, k, (x, 1, k), (w, k, 1))?; // x · W^T
    if let Some(b) = b {
        if b.len() != n {
            candle_core::bail!("linear bias has {} values for {n} outputs", b.len())
        }
        y.par_chunks_mut(n.max(1))
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, b)| *v += b));
    }
    Ok(y)
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
    if let Some(last) = out.last_mut() {
        *last = n;
    }
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
            CpuStorage::F32(linear_forward(x, w, Some(b), m, n, k)?),
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
        })??;
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
        Ok((CpuStorage::F32(linear_forward(x, w, None, m, n, k)?), shape))
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
        })??;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, (n, k), w.device())?),
        ))
    }
}

/// `x W^T + b` over the last dimension of `x`, differentiable in all three, with one GEMM
/// per product.
pub(crate) fn linear_op(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, LinearBias),
        None => x.apply_op2(&w, LinearNoBias),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_checks_its_operands_at_entry() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::ones((2, 4), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::ones((3, 4), candle_core::DType::F32, &dev).unwrap();
        // A bias of the wrong length once made the GEMM read uninitialized memory.
        let b = Tensor::ones(2, candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, Some(&b), None).is_err());
        // An input that does not end in the weight's inputs.
        let x5 = Tensor::ones((2, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(linear(&x5, &w, None, None).is_err());
        let y = linear(&x, &w, None, None).unwrap().unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![4f32; 3]; 2]);
    }

    #[test]
    fn gemm_into_refuses_operands_shorter_than_their_layouts() {
        let a = vec![1f32; 6];
        let mut dst = vec![0f32; 4];
        // 2×3 · 3×2 fits; the same with a 5-value right operand does not.
        assert!(gemm_into(&mut dst, 2, 2, 3, (&a, 1, 3), (&a, 1, 2)).is_ok());
        assert_eq!(dst, vec![3f32; 4]);
        assert!(gemm_into(&mut dst, 2, 2, 3, (&a, 1, 3), (&a[..5], 1, 2)).is_err());
        assert!(gemm_into(&mut dst[..3], 2, 2, 3, (&a, 1, 3), (&a, 1, 2)).is_err());
    }
}
