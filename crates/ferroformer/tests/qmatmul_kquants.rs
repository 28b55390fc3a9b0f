//! K-quant products (`QuantizedMatrix::matmul_t`) against llama.cpp's own CPU functions on
//! the same weights and activations: tests/fixtures/gguf/qmatmul_kquants.json from
//! `scripts/reference/qmatmul_fixtures.py`, which calls ggml's `quantize_row_q8_K`,
//! `ggml_gemm_q4_K_8x8_q8_K` / `ggml_gemv_q4_K_8x8_q8_K` (Q4_K, as llama.cpp repacks it on
//! AVX2 CPUs) and `ggml_mul_mat` on a ggml graph (Q6_K: `ggml_vec_dot_q6_K_q8_K` below 8
//! rows, the tiled K-quant matmul from 8 on) from llama-cpp-python 0.3.36's libraries.
//!
//! Q4_0 and Q2_K (tests/fixtures/gguf/qmatmul_repacked.json, same script) are what llama.cpp
//! computes after repacking them at load: `ggml_gemm_{q4_0,q2_K}_8x8_*` on full groups of 4
//! activation rows and `ggml_gemv_*` on the rest, at 1, 2, 4, 7, 8, 11 and 16 rows and each
//! row alone.
//!
//! On CPUs with AVX2, FMA and F16C (Q2_K: and AVX-512, where llama.cpp repacks it) the
//! products run on ferroformer's kernels and must equal llama.cpp's bit for bit; elsewhere
//! they run on candle's quantized matmul, which follows the same integer arithmetic but
//! rounds exact ties and orders the f32 steps its own way, so there the check is a relative
//! tolerance.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use ferroformer::nn::QuantizedMatrix;
use serde_json::Value as Json;

fn fixture() -> Json {
    fixture_named("qmatmul_kquants.json")
}

fn fixture_named(name: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(name);
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
    compare_on(fast_kernels(), what, got, want)
}

/// Bit for bit where `exact` (ferroformer's kernels run), else within 1e-3 of the largest.
fn compare_on(exact: bool, what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: output size");
    if exact {
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

/// Checks a repacked format: every batch of the fixture's first `b` rows and every row alone.
fn check_repacked(name: &str, dtype: GgmlDType, exact: bool) {
    let fx = fixture_named("qmatmul_repacked.json");
    let get = |key: &str| fx[key].as_u64().unwrap() as usize;
    let (n, k, m) = (get("n"), get("k"), get("m"));
    let x = floats(&fx["x"]);
    assert_eq!(x.len(), m * k);
    let case = &fx["cases"][name];
    let w = matrix(&hex(&case["w"]), n, k, dtype);
    let batches: Vec<usize> = fx["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as usize)
        .collect();
    assert!(batches.contains(&7) && batches.contains(&16));
    for b in batches {
        compare_on(
            exact,
            &format!("{name} {b} rows"),
            &product(&w, &x[..b * k], b, k),
            &floats(&case[format!("y{b}")]),
        );
    }
    let single = floats(&case["y_single"]);
    for r in 0..m {
        compare_on(
            exact,
            &format!("{name} row {r} alone"),
            &product(&w, &x[r * k..(r + 1) * k], 1, k),
            &single[r * n..(r + 1) * n],
        );
    }
}

/// Q4_0: llama.cpp's gemm and gemv give one order (one FMA per block of 32), on any x86
/// CPU with AVX2.
#[test]
fn q4_0_equals_llama_cpp() {
    check_repacked("q4_0", GgmlDType::Q4_0, fast_kernels());
}

/// Q2_K: gemm (an FMA per 128 values) on full groups of 4 rows, gemv (per 256) on the rest;
/// bit for bit on CPUs with AVX-512, where llama.cpp repacks Q2_K.
#[test]
fn q2_k_equals_llama_cpp() {
    #[cfg(target_arch = "x86_64")]
    let exact = fast_kernels() && is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let exact = false;
    check_repacked("q2_k", GgmlDType::Q2K, exact);
}
