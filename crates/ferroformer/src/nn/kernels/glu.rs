//! `act(gate) * up` over a fused gated projection `[gate | up]` (SwiGLU, GeGLU): the
//! reference arithmetic (candle's per-element functions) and llama.cpp's SwiGLU.

use candle_core::op::{Gelu, Relu, Silu, UnaryOpT};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::math::{gelu_erf_fast, v_expf, GGML_LANES};
use super::{f32_data, with_f32};
use crate::error::{Error, Result};
use crate::nn::feed_forward::Activation;

/// `act(gate) * up` for `hidden` `(..., 2 * d_ff)` holding gate and up side by side (a
/// fused gated projection), in one pass and one buffer instead of two narrow copies and two
/// candle element-wise ops; the same per-element arithmetic as those ops. `None` for a
/// tensor that is not f32 on the CPU.
pub(crate) fn gated_activation(
    hidden: &Tensor,
    d_ff: usize,
    act: Activation,
) -> Result<Option<Tensor>> {
    check_gated(hidden, d_ff)?;
    let hidden = hidden.contiguous()?;
    let rows = hidden.elem_count() / (2 * d_ff);
    let (storage, layout) = hidden.storage_and_layout();
    let Some(src) = f32_data(&storage, layout).and_then(|d| d.get(..rows * 2 * d_ff)) else {
        return Ok(None);
    };
    let mut out = vec![0f32; rows * d_ff];
    fn run<F: Fn(f32) -> f32 + Sync>(src: &[f32], out: &mut [f32], d_ff: usize, f: F) {
        let work = |(o, s): (&mut [f32], &[f32])| {
            let (gate, up) = s.split_at(d_ff);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = f(*g) * u;
            }
        };
        // Rows in parallel only when there are enough of them to pay for the threads.
        if out.len() >= 1 << 15 {
            out.par_chunks_mut(d_ff)
                .zip(src.par_chunks(2 * d_ff))
                .for_each(work);
        } else {
            out.chunks_mut(d_ff)
                .zip(src.chunks(2 * d_ff))
                .for_each(work);
        }
    }
    match act {
        Activation::Relu => run(src, &mut out, d_ff, Relu::f32),
        Activation::Gelu => run(src, &mut out, d_ff, gelu_erf_fast),
        Activation::GeluTanh => run(src, &mut out, d_ff, Gelu::f32),
        Activation::Silu => run(src, &mut out, d_ff, Silu::f32),
    }
    drop(storage);
    let mut dims = hidden.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = d_ff;
    }
    Ok(Some(Tensor::from_vec(out, dims, hidden.device())?))
}

/// `silu(gate) × up` for `hidden = [gate | up]` of shape `(..., 2 d_ff)`, as
/// `ggml_vec_swiglu_f32`: 16 values at a time with [`v_expf`], the rest with libm's `expf`.
pub(crate) fn ggml_swiglu(hidden: &Tensor, d_ff: usize) -> Result<Option<Tensor>> {
    check_gated(hidden, d_ff)?;
    let hidden = hidden.contiguous()?;
    let out = with_f32(&hidden, |src| {
        let mut out = vec![0f32; src.len() / 2];
        swiglu_rows(src, &mut out, d_ff);
        out
    });
    let mut dims = hidden.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = d_ff;
    }
    out.map(|o| Ok(Tensor::from_vec(o, dims, &Device::Cpu)?))
        .transpose()
}

fma_dispatch!(swiglu_rows => swiglu_rows_body(src: &[f32], out: &mut [f32], d_ff: usize) -> ());

#[inline(always)]
fn swiglu_rows_body(src: &[f32], out: &mut [f32], d_ff: usize) {
    let simd = d_ff - d_ff % GGML_LANES;
    for (o, s) in out.chunks_mut(d_ff).zip(src.chunks(2 * d_ff)) {
        let (gate, up) = s.split_at(d_ff);
        for i in 0..simd {
            let g = gate[i];
            o[i] = (g / (1.0 + v_expf(0.0 - g))) * up[i];
        }
        for i in simd..d_ff {
            let g = gate[i];
            o[i] = (g / (1.0 + (-g).exp())) * up[i];
        }
    }
}

/// `gelu_tanh(gate) × up` for `hidden = [gate | up]`, as `ggml_vec_geglu_f32` computes it
/// (ggml builds with `GGML_GELU_FP16`): the gate rounded to f16 indexes a table of
/// f16-rounded GELU values; gates ≤ −10 give 0 and gates ≥ 10 pass through.
pub(crate) fn ggml_geglu(hidden: &Tensor, d_ff: usize) -> Result<Option<Tensor>> {
    check_gated(hidden, d_ff)?;
    let hidden = hidden.contiguous()?;
    let table = gelu_f16_table();
    let out = with_f32(&hidden, |src| {
        let mut out = vec![0f32; src.len() / 2];
        let work = |(o, s): (&mut [f32], &[f32])| {
            let (gate, up) = s.split_at(d_ff);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = if g <= -10.0 {
                    0.0
                } else if g >= 10.0 {
                    g * u
                } else {
                    table[half::f16::from_f32(g).to_bits() as usize] * u
                };
            }
        };
        if out.len() >= 1 << 15 {
            out.par_chunks_mut(d_ff)
                .zip(src.par_chunks(2 * d_ff))
                .for_each(work);
        } else {
            out.chunks_mut(d_ff)
                .zip(src.chunks(2 * d_ff))
                .for_each(work);
        }
        out
    });
    let mut dims = hidden.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = d_ff;
    }
    out.map(|o| Ok(Tensor::from_vec(o, dims, &Device::Cpu)?))
        .transpose()
}

/// ggml's `ggml_table_gelu_f16`: for every f16 `x`, `ggml_gelu_f32(x)` rounded to f16 (held
/// here in f32). `ggml_gelu_f32` is `0.5x(1 + tanhf(√(2/π)·x·(1 + 0.044715·x·x)))`, whose
/// `1 + a·x·x` GCC contracts into one multiply-add.
fn gelu_f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        const GELU_COEF_A: f32 = 0.044_715;
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                let inner = SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0);
                let y = 0.5 * x * (1.0 + inner.tanh());
                half::f16::from_f32(y).to_f32()
            })
            .collect()
    })
}

/// A fused gated projection ends in `2 * d_ff` values (gate, then up).
fn check_gated(hidden: &Tensor, d_ff: usize) -> Result<()> {
    if d_ff == 0 || hidden.dims().last() != Some(&(2 * d_ff)) {
        return Err(Error::shape(
            "gated feed-forward hidden",
            format!("(..., {})", 2 * d_ff),
            hidden.dims(),
        ));
    }
    Ok(())
}
