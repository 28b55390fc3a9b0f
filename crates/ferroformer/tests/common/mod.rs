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

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `|a - b| <= tol` elementwise, printing the worst difference.
#[track_caller]
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d:e} > {tol:e}");
    // Guard against comparing two empty or all-zero tensors by accident.
    let mag = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
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
