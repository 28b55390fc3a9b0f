//! Training losses.

use candle_core::Tensor;

use crate::error::Result;

/// Mean cross-entropy of `logits` `(rows, classes)` against class ids `labels` `(rows,)`
/// (PyTorch's `F.cross_entropy` with the default mean reduction), differentiable in the
/// logits. On the CPU in f32 it is one pass forward and one backward; elsewhere candle's
/// composed log-softmax.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    super::ops::cross_entropy(logits, labels)
}
