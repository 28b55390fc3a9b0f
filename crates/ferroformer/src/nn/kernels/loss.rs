//! The differentiable cross-entropy: one pass forward (log-sum-exp per row) and one backward
//! (`softmax - one_hot`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{exp_fast, exp_shifted_in_place, max_f32, sum_map_f32};
use super::{contiguous_f32, with_data};

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
            Some((a, b)) => match s2.as_slice::<u32>()?.get(a..b) {
                Some(l) => l,
                None => candle_core::bail!("cross-entropy labels past their buffer"),
            },
            None => candle_core::bail!("cross-entropy labels must be contiguous"),
        };
        if labels.len() != rows {
            candle_core::bail!(
                "cross-entropy has {rows} rows of logits but {} labels",
                labels.len()
            )
        }
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
        if labels.len() != rows || labels.iter().any(|&l| l as usize >= vocab) {
            candle_core::bail!("cross-entropy labels do not match the {rows} x {vocab} logits")
        }
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
