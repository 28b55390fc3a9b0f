//! Helpers shared by the integration tests: fixture loading and numeric comparison.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use ferroformer::Weights;

/// `tests/fixtures/` at the workspace root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture file: parameters under `model.`, inputs and expected outputs under `io.`.
pub struct Fixture {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
}

impl Fixture {
    pub fn load(name: &str) -> Self {
        let path = fixtures().join(name);
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        Self { path, tensors }
    }

    /// An input or expected output.
    pub fn io(&self, name: &str) -> Tensor {
        self.tensors
            .get(&format!("io.{name}"))
            .unwrap_or_else(|| panic!("fixture {} has no io.{name}", self.path.display()))
            .clone()
    }

    /// The module parameters (rooted at `model.`).
    pub fn weights(&self) -> Weights<'static> {
        Weights::from_safetensors(&[&self.path], DType::F32, &Device::Cpu)
            .expect("fixture weights")
            .pp("model")
    }
}

/// The values of `t` as f32, in row-major order.
pub fn values_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Largest absolute difference between two equally long lists of values, computed in
/// plain Rust: candle's CPU `max` skips NaN unless it comes first, so a reduction over a
/// tensor full of NaN can report a small difference. Panics (naming `what` and the
/// position) when either side holds a NaN or an infinity, except the same infinity on both
/// sides (a masked score), which counts as no difference.
#[track_caller]
pub fn max_abs_diff_values<T: Into<f64> + Copy>(what: &str, a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let mut worst = 0f64;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y): (f64, f64) = (x.into(), y.into());
        if x.is_infinite() && x == y {
            continue;
        }
        assert!(
            x.is_finite() && y.is_finite(),
            "{what}: non-finite value at flat index {i}: {x} vs {y}"
        );
        worst = worst.max((x - y).abs());
    }
    worst
}

/// Largest absolute value, in plain Rust; panics on NaN or infinity (see
/// [`max_abs_diff_values`]).
#[track_caller]
pub fn max_abs(what: &str, t: &Tensor) -> f32 {
    let v = values_f32(t);
    let mut worst = 0f32;
    for (i, x) in v.iter().enumerate() {
        assert!(
            x.is_finite(),
            "{what}: non-finite value {x} at flat index {i}"
        );
        worst = worst.max(x.abs());
    }
    worst
}

/// Largest absolute difference between two tensors of the same shape (see
/// [`max_abs_diff_values`]: NaN or infinity on either side panics).
#[track_caller]
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs_diff_values("max_abs_diff", &values_f32(a), &values_f32(b)) as f32
}

/// Asserts `|a - b| <= tol` elementwise, printing the worst difference. Fails when either
/// side holds a NaN or an infinity (the same infinity on both sides excepted), and when
/// the reference is all zeros (two empty or zeroed tensors compared by accident).
#[track_caller]
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (va, vb) = (values_f32(a), values_f32(b));
    let d = max_abs_diff_values(what, &va, &vb);
    assert!(d <= tol as f64, "{what}: max abs diff {d:e} > {tol:e}");
    let mag = vb
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()));
    assert!(mag > 0.0, "{what}: reference is all zeros");
}

/// Row `i` of a batch, first `len` positions along dim 1: `(1, len, ...)`.
pub fn row_prefix(t: &Tensor, i: usize, len: usize) -> Tensor {
    t.i(i..i + 1)
        .unwrap()
        .narrow(1, 0, len)
        .unwrap()
        .contiguous()
        .unwrap()
}

/// Row `i` of a batch, last `len` positions along dim 1.
pub fn row_suffix(t: &Tensor, i: usize, len: usize) -> Tensor {
    let total = t.dim(1).unwrap();
    t.i(i..i + 1)
        .unwrap()
        .narrow(1, total - len, len)
        .unwrap()
        .contiguous()
        .unwrap()
}

/// Number of ones in each row of a `(batch, seq)` mask.
pub fn lengths(mask: &Tensor) -> Vec<usize> {
    mask.to_dtype(DType::F32)
        .unwrap()
        .sum(1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| x as usize)
        .collect()
}
