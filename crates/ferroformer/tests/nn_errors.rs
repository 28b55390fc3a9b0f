//! Regression tests for the building blocks' input checks (issue: one dispatch per op, no
//! panics): each of these once panicked, read memory it did not own, or allocated without
//! bound.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use ferroformer::nn::loss::cross_entropy;
use ferroformer::nn::{Arithmetic, Linear, RopeLayout, RotaryEmbedding};

#[test]
fn cross_entropy_rejects_a_label_count_other_than_the_row_count() {
    let logits = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    // Inference (the one-pass kernel) and training (a tracked variable) alike.
    let err = cross_entropy(&logits, &labels).unwrap_err().to_string();
    assert!(
        err.contains("cross-entropy labels") && err.contains("(4,)"),
        "{err}"
    );
    let var = Var::from_tensor(&logits).unwrap();
    let err = cross_entropy(var.as_tensor(), &labels)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cross-entropy labels"), "{err}");
    // A label outside the classes is an error too, not an out-of-bounds read.
    let labels = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();
    let err = cross_entropy(&logits, &labels).unwrap_err().to_string();
    assert!(err.contains("outside the 3 classes"), "{err}");
    // The right count works.
    let labels = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
    let loss = cross_entropy(&logits, &labels)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((loss - 3f32.ln()).abs() < 1e-6, "{loss}");
}

#[test]
fn linear_rejects_a_bias_that_does_not_match_its_outputs() {
    let w = Tensor::ones((8, 4), DType::F32, &Device::Cpu).unwrap();
    for len in [3usize, 9] {
        let b = Tensor::zeros(len, DType::F32, &Device::Cpu).unwrap();
        let err = Linear::new(w.clone(), Some(b)).unwrap_err().to_string();
        assert!(err.contains("linear bias") && err.contains("(8,)"), "{err}");
    }
    let err = Linear::new(Tensor::ones(8, DType::F32, &Device::Cpu).unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(out, in)"), "{err}");
    // A right-sized bias computes x W^T + b.
    let b = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap();
    let y = Linear::new(w, Some(b))
        .unwrap()
        .forward(&Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(
        y.to_vec2::<f32>().unwrap()[1],
        vec![4., 5., 6., 7., 8., 9., 10., 11.]
    );
}

#[test]
fn rotary_tables_are_built_only_for_the_positions_asked() {
    // A context of 2^40 positions: the tables are never built whole.
    let start = Instant::now();
    let rope = RotaryEmbedding::new(
        64,
        1 << 40,
        10_000.0,
        RopeLayout::HalfSplit,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    for arithmetic in [Arithmetic::Reference, Arithmetic::Ggml] {
        let t = rope.tables_range(2, (1 << 40) - 3, 3, arithmetic).unwrap();
        assert_eq!(t.cos.dims(), &[2, 3, 32]);
        let near = rope.tables_range(1, 0, 2, arithmetic).unwrap();
        let cos = near.cos.to_vec3::<f32>().unwrap();
        assert_eq!(
            cos[0][0],
            vec![1.0; 32],
            "position 0 is the identity rotation"
        );
    }
    assert!(
        start.elapsed().as_secs() < 5,
        "tables for 6 positions took {:?}",
        start.elapsed()
    );
    // Past the context: the error names the position.
    let err = rope
        .tables_range(1, 1 << 40, 1, Arithmetic::Reference)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&(1usize << 40).to_string()), "{err}");
    // An odd head dimension or a nonsensical base is a config error.
    for (hd, base) in [(7, 10_000.0), (8, 0.0), (8, f64::NAN)] {
        assert!(RotaryEmbedding::new(
            hd,
            16,
            base,
            RopeLayout::HalfSplit,
            DType::F32,
            &Device::Cpu
        )
        .is_err());
    }
}

#[test]
fn ggml_rope_tables_equal_the_reference_scheme_at_small_positions() {
    // llama.cpp's repeated multiplication and the reference `p × f` agree to rounding.
    let rope = RotaryEmbedding::new(
        64,
        4096,
        10_000.0,
        RopeLayout::Interleaved,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let a = rope.tables_range(1, 0, 100, Arithmetic::Reference).unwrap();
    let b = rope.tables_range(1, 0, 100, Arithmetic::Ggml).unwrap();
    let d = (a.cos - b.cos)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 0.0 && d < 1e-3, "{d}");
}

#[test]
fn a_sinusoidal_table_for_an_absurd_context_is_refused_before_allocating() {
    use ferroformer::nn::SinusoidalPositionalEncoding;
    let err = SinusoidalPositionalEncoding::new(512, 10_000_000_000, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_position_embeddings"), "{err}");
    assert!(SinusoidalPositionalEncoding::new(8, 16, DType::F32, &Device::Cpu).is_ok());
}

#[test]
fn the_gguf_inputs_the_fuzzer_found_are_errors() {
    // Inputs that once crashed a loader, kept as regressions (fuzz/regressions).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/gguf");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let err = ferroformer::models::GgufModel::load(&path)
            .unwrap_err()
            .to_string();
        assert!(!err.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(seen > 0, "no inputs in {}", dir.display());
}
