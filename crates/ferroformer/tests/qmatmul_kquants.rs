//! K-quant products (`QuantizedMatrix::matmul_t`) against llama.cpp's own CPU functions on
//! the same weights and activations: tests/fixtures/gguf/qmatmul_kquants.json from
//! `scripts/reference/qmatmul_fixtures.py`, which calls ggml's `quantize_row_q8_K`,
//! `ggml_gemm_q4_K_8x8_q8_K` / `ggml_gemv_q4_K_8x8_q8_K` (Q4_K, as llama.cpp repacks it on
//! AVX2 CPUs) and `ggml_mul_mat` on a ggml graph (Q6_K: `ggml_vec_dot_q6_K_q8_K` below 8
//! rows, the tiled K-quant matmul from 8 on) from llama-cpp-python 0.3.36's libraries.
//!
//! On CPUs with AVX2, FMA and F16C the products run on ferroformer's kernels and must equal
//! llama.cpp's bit for bit; elsewhere they run on candle's quantized matmul, which follows
//! the same integer arithmetic but rounds exact ties and orders the f32 steps its own way,
//! so there the check is a relative tolerance.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use ferroformer::nn::QuantizedMatrix;
use serde_json::Value as Json;

fn fixture() -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf/qmatmul_kquants.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &Json) -> Vec<u8> {
    let s = s.as_str().unwrap();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn floats(s: &Json) -> Vec<f32> {
    hex(s)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An `(n, k)` quantized matrix from its GGML bytes (copied into 8-byte-aligned memory:
/// candle reinterprets the bytes as blocks).
fn matrix(bytes: &[u8], n: usize, k: usize, dtype: GgmlDType) -> QuantizedMatrix {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: the words cover `bytes.len()` bytes; u8 has no alignment.
    let buf = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, bytes.len()) };
    buf.copy_from_slice(bytes);
    let storage = QStorage::from_data(Cow::Borrowed(buf), &Device::Cpu, dtype).unwrap();
    QuantizedMatrix::new(QTensor::new(storage, (n, k)).unwrap()).unwrap()
}

fn fast_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn product(w: &QuantizedMatrix, x: &[f32], m: usize, k: usize) -> Vec<f32> {
    let x = Tensor::from_slice(x, (m, k), &Device::Cpu).unwrap();
    w.matmul_t(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn compare(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: output size");
    if fast_kernels() {
        for (i, (g, e)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                g.to_bits(),
                e.to_bits(),
                "{what}[{i}]: {g} vs llama.cpp {e}"
            );
        }
    } else {
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (i, (g, e)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - e).abs() <= 1e-3 * scale,
                "{what}[{i}]: {g} vs llama.cpp {e}"
            );
        }
    }
}

/// Checks one format: the fixture's `m`-row product and its first `few` rows (llama.cpp's
/// batches of that many rows) and every row alone (a decode step).
fn check(name: &str, dtype: GgmlDType) {
    let fx = fixture();
    let get = |key: &str| fx[key].as_u64().unwrap() as usize;
    let (n, k, m, few) = (get("n"), get("k"), get("m"), get("few"));
    let x = floats(&fx["x"]);
    assert_eq!(x.len(), m * k);
    let case = &fx["cases"][name];
    let w = matrix(&hex(&case["w"]), n, k, dtype);
    let want = floats(&case["y"]);
    compare(&format!("{name} {m} rows"), &product(&w, &x, m, k), &want);
    compare(
        &format!("{name} {few} rows"),
        &product(&w, &x[..few * k], few, k),
        &floats(&case["y_few"]),
    );
    let single = floats(&case["y_single"]);
    for r in 0..m {
        let got = product(&w, &x[r * k..(r + 1) * k], 1, k);
        compare(
            &format!("{name} row {r} alone"),
            &got,
            &single[r * n..(r + 1) * n],
        );
    }
}

#[test]
fn q4_k_equals_llama_cpp() {
    check("q4_k", GgmlDType::Q4K);
}

#[test]
fn q6_k_equals_llama_cpp() {
    check("q6_k", GgmlDType::Q6K);
}

#[test]
fn q5_k_equals_llama_cpp() {
    check("q5_k", GgmlDType::Q5K);
}

#[test]
fn q3_k_equals_llama_cpp() {
    check("q3_k", GgmlDType::Q3K);
}

/// Q5_1 (blocks of 32, activations in Q8_1) has no other order in llama.cpp:
/// `ggml_vec_dot_q5_1_q8_1` for any batch.
#[test]
fn q5_1_equals_llama_cpp() {
    check("q5_1", GgmlDType::Q5_1);
}
