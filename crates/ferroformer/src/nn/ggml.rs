//! llama.cpp's CPU arithmetic, reproduced bit for bit, for the blocks of GGUF models.
//!
//! A quantized model is chaotic in one place: every activation entering a quantized product
//! is rounded to 8 bits per block, so a difference in the last bit of an activation can flip
//! a rounding, and enough flips move the logits by up to ~1. An implementation that is only
//! *accurate* therefore picks another top-1 token than llama.cpp wherever the two best
//! logits are close (about one position in twenty on English text with SmolLM2 Q4_1). With
//! [`Arithmetic::Ggml`] the blocks compute what ggml's x86 code computes, operation by
//! operation, so the logits are llama.cpp's own:
//!
//! - RMSNorm sums the squares in f64 (`ggml_compute_forward_rms_norm_f32`);
//! - RoPE builds its angles by repeated multiplication by `base^(-2/d)` and rotates with
//!   the multiply-adds GCC contracts (`ggml_rope_cache_init`, `rotate_pairs`);
//! - keys and values are rounded to f16 as llama.cpp's default cache stores them (kept in
//!   f32 here, so that attention reads them without a conversion per step); queries and
//!   attention probabilities are rounded to f16 for the two products, which accumulate in
//!   16 f32 lanes and reduce in the tree of `_mm512_reduce_add_ps` (llamafile's tinyBLAS);
//! - softmax uses ggml's vectorized `expf` approximation and sums in f64 per 16 lanes
//!   (`ggml_vec_soft_max_f32`);
//! - SiLU is `x / (1 + expf(-x))` with the same approximation (`ggml_vec_swiglu_f32`).
//!
//! The quantized products themselves live in [`super::qmatmul`]. The reference is ggml as
//! built for AVX-512 (llama-cpp-python 0.3.36 on Zen 4); the kernels here are plain Rust,
//! compiled with FMA where the CPU has it, so they run anywhere, and agree bit for bit
//! wherever FMA is present (without it, `mul_add` is libm's exact `fmaf`: the same values,
//! slower).

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use super::kernels::{f32_data, AttentionDims, BiasView, HeadLayout};
use crate::error::{Error, Result};

/// Whose floating-point arithmetic a block reproduces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arithmetic {
    /// f32 throughout, as PyTorch computes it: what `transformers` checkpoints are tested
    /// against (1e-4).
    #[default]
    Reference,
    /// llama.cpp's CPU arithmetic, bit for bit: f16 keys and values, its `expf`
    /// approximation, its summation orders (see the module documentation). GGUF models use
    /// it so that their logits equal llama.cpp's.
    Ggml,
}

/// Lanes of ggml's AVX-512 accumulators.
const LANES: usize = 16;

/// `_mm512_reduce_add_ps` as GCC expands it: halves, then quarters, then pairs.
#[inline(always)]
fn hsum16(v: &[f32; LANES]) -> f32 {
    let mut t3 = [0f32; 8];
    for i in 0..8 {
        t3[i] = v[8 + i] + v[i];
    }
    let mut t6 = [0f32; 4];
    for i in 0..4 {
        t6[i] = t3[4 + i] + t3[i];
    }
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// `2^k` for `k` in `-126..=127`.
#[inline(always)]
fn pow2(k: i32) -> f32 {
    f32::from_bits(((k + 127) as u32) << 23)
}

/// ggml's vectorized `expf` (`ggml_v_expf`, AVX-512 form): a degree-5 polynomial on the
/// reduced argument, within 1.5 ulp of `expf` but not equal to it. Written without
/// branches so that loops over it vectorize.
#[inline(always)]
pub(crate) fn v_expf(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),
        (-n).mul_add(f32::from_bits(0x3f31_7200), x),
    );
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6).mul_add(b, 1.0));
    // `_mm512_scalef_ps(j, n)`: j × 2^n rounded once. z is an integer in [2^23, 2^24), so
    // its low bits hold n. Two exact-range factors: the first product is exact, the second
    // rounds once (to a subnormal or to infinity where |n| > 127).
    let ni = (z.to_bits() as i32).wrapping_sub(0x4b40_0000);
    let lo = ni.clamp(-126, 127);
    let hi = ni.wrapping_sub(lo).clamp(-126, 127);
    let res = j * pow2(lo) * pow2(hi);
    let saturated = if n <= 0.0 { 0.0 } else { f32::INFINITY };
    if n.abs() > 192.0 {
        saturated
    } else {
        res
    }
}

/// The f16 value nearest `x` (ties to even, as F16C's `vcvtps2ph` rounds), back in f32:
/// computed on the f32 bits, without a conversion call per value.
#[inline(always)]
pub(crate) fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    if a < f32::from_bits(0x3880_0000) {
        // Below 2^-14 f16 is subnormal: a fixed step of 2^-24.
        return (x * 16_777_216.0).round_ties_even() * (1.0 / 16_777_216.0);
    }
    if a >= 65_520.0 || a.is_nan() {
        // Rounds past the largest f16 (65504): infinity; NaN stays NaN.
        return if a.is_nan() {
            x
        } else {
            f32::INFINITY.copysign(x)
        };
    }
    // Keep 10 of the 23 mantissa bits, rounding the 13 dropped ones to nearest even.
    let bits = x.to_bits();
    let odd = (bits >> 13) & 1;
    f32::from_bits((bits + 0x0fff + odd) & !0x1fff)
}

/// Defines `$name`, which runs the `#[inline(always)]` function `$body` compiled for AVX2 and
/// FMA where the CPU has them: `mul_add` is then one instruction and the lane loops
/// vectorize. The results are the same either way (without FMA, `mul_add` is libm's exact
/// `fmaf`, a call per value).
macro_rules! fma_dispatch {
    ($name:ident => $body:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the features were detected at run time.
                    return unsafe { wide($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// Runs `f` on the f32 data of a contiguous CPU tensor (borrowed, not copied); `None`
/// for any other tensor or one that tracks gradients.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !super::kernels::eligible(&[t]) || !t.is_contiguous() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let data = f32_data(&storage, layout)?;
    Some(f(&data[..t.elem_count()]))
}

/// `x` with every value rounded to the nearest f16 (kept in f32): what llama.cpp's f16 KV
/// cache stores.
pub(crate) fn round_to_f16(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    match with_f32(&x, |data| {
        data.iter().map(|v| round_f16(*v)).collect::<Vec<_>>()
    }) {
        Some(data) => Ok(Tensor::from_vec(data, x.shape(), &Device::Cpu)?),
        None => Ok(x.to_dtype(DType::F16)?.to_dtype(x.dtype())?),
    }
}

/// RMSNorm of the last dimension, `(x × scale) × weight`, as
/// `ggml_compute_forward_rms_norm_f32` and the following `ggml_mul` compute it.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    let d = weight.elem_count();
    if d == 0 || x.dims().last() != Some(&d) {
        return Err(Error::shape("norm input", format!("(..., {d})"), x.dims()));
    }
    let x = x.contiguous()?;
    let out = with_f32(&x, |xs| {
        with_f32(weight, |w| {
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

/// Cosines and sines of positions `0..max_positions` for `head_dim / 2` frequencies, as
/// `ggml_rope_cache_init` builds them: `theta_scale = powf(base, -2/d)`, the angle of pair
/// `i` is `p × theta_scale^i` by repeated f32 multiplication, `cosf` / `sinf` of it.
pub(crate) fn rope_tables(
    head_dim: usize,
    max_positions: usize,
    base: f64,
) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let theta_scale = (base as f32).powf(-2.0 / head_dim as f32);
    let mut cos = Vec::with_capacity(max_positions * half);
    let mut sin = Vec::with_capacity(max_positions * half);
    for p in 0..max_positions {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= theta_scale;
        }
    }
    (cos, sin)
}

/// Rotates one pair as `rotate_pairs` compiles: `x0·cos − x1·sin` and `x0·sin + x1·cos`
/// with the second product rounded and the first fused into a multiply-add.
#[inline(always)]
pub(crate) fn rotate(x0: f32, x1: f32, cos: f32, sin: f32) -> (f32, f32) {
    (x0.mul_add(cos, -(x1 * sin)), x0.mul_add(sin, x1 * cos))
}

/// Applies rotary tables `(batch, seq, half)` to `x` `(batch, heads, seq, head_dim)` with
/// [`rotate`]; `interleaved` pairs `(x[2i], x[2i+1])`, otherwise `(x[i], x[i + d/2])`.
pub(crate) fn rope_apply(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
) -> Result<Option<Tensor>> {
    let (b, h, s, d) = x.dims4()?;
    let (x, cos, sin) = (x.contiguous()?, cos.contiguous()?, sin.contiguous()?);
    let out = with_f32(&x, |xs| {
        with_f32(&cos, |c| {
            with_f32(&sin, |sn| {
                let mut out = vec![0f32; xs.len()];
                rope_rows(xs, c, sn, &mut out, [b, h, s, d], interleaved);
                out
            })
        })
    })
    .flatten()
    .flatten();
    out.map(|o| Ok(Tensor::from_vec(o, x.shape(), &Device::Cpu)?))
        .transpose()
}

fma_dispatch!(rope_rows => rope_rows_body(xs: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32], dims: [usize; 4], interleaved: bool) -> ());

#[inline(always)]
fn rope_rows_body(
    xs: &[f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [f32],
    [b, h, s, d]: [usize; 4],
    interleaved: bool,
) {
    let half = d / 2;
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let row = ((bi * h + hi) * s + si) * d;
                let tab = (bi * s + si) * half;
                for i in 0..half {
                    let (i0, i1) = if interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (a, r) = rotate(xs[row + i0], xs[row + i1], cos[tab + i], sin[tab + i]);
                    out[row + i0] = a;
                    out[row + i1] = r;
                }
            }
        }
    }
}

/// `silu(gate) × up` for `hidden = [gate | up]` of shape `(..., 2 d_ff)`, as
/// `ggml_vec_swiglu_f32`: 16 values at a time with [`v_expf`], the rest with libm's `expf`.
pub(crate) fn swiglu(hidden: &Tensor, d_ff: usize) -> Result<Option<Tensor>> {
    if hidden.dims().last() != Some(&(2 * d_ff)) {
        return Ok(None);
    }
    let hidden = hidden.contiguous()?;
    let out = with_f32(&hidden, |src| {
        let mut out = vec![0f32; src.len() / 2];
        swiglu_rows(src, &mut out, d_ff);
        out
    });
    let mut dims = hidden.dims().to_vec();
    *dims.last_mut().expect("rank >= 1") = d_ff;
    out.map(|o| Ok(Tensor::from_vec(o, dims, &Device::Cpu)?))
        .transpose()
}

fma_dispatch!(swiglu_rows => swiglu_rows_body(src: &[f32], out: &mut [f32], d_ff: usize) -> ());

#[inline(always)]
fn swiglu_rows_body(src: &[f32], out: &mut [f32], d_ff: usize) {
    let simd = d_ff - d_ff % LANES;
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

/// Attention as llama.cpp computes it without flash attention and with an f16 KV cache,
/// into `out` `(batch, q_len, heads · head_dim)`: q, k and v in `data` through their
/// layouts (keys and values holding f16 values, see [`round_to_f16`]), additive biases.
/// [`super::kernels::attention`] prepares the inputs, as for its reference loop.
///
/// Per query: scores `q16·k16` (16-lane FMA accumulation over `d`, [`hsum16`]), scaled,
/// plus the biases (masked keys skip the product); softmax over 16-key blocks with
/// [`v_expf`] and an f64 sum; probabilities rounded to f16; output `Σ p16·v16` accumulated
/// in 16 lanes by key index.
///
/// Key indices count from the first key the row may attend to: in llama.cpp a sequence
/// starts at cache cell 0, here a left-padded row of a batch starts later, and counting from
/// its first real key keeps the lanes and blocks (so the result) equal to the row alone.
pub(crate) fn attention_into(
    out: &mut [f32],
    data: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    dims: AttentionDims,
    biases: &[BiasView],
    scale: f32,
) {
    let AttentionDims {
        batch: b,
        heads: h,
        q_len,
        k_len,
        head_dim: d,
        ..
    } = dims;
    let inputs = HeadInputs {
        data,
        layouts,
        biases,
        dims,
        scale,
    };
    let tasks: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
        .collect();
    // One (batch, head) per task; threads once there are a few microseconds of work.
    let results: Vec<Vec<f32>> = if b * h * q_len * k_len * d >= 1 << 15 {
        tasks
            .par_iter()
            .map(|&t| attention_head(&inputs, t))
            .collect()
    } else {
        tasks.iter().map(|&t| attention_head(&inputs, t)).collect()
    };
    for (&(bi, hi), head_out) in tasks.iter().zip(&results) {
        for t in 0..q_len {
            let dst = ((bi * q_len + t) * h + hi) * d;
            out[dst..dst + d].copy_from_slice(&head_out[t * d..][..d]);
        }
    }
}

/// What every (batch, head) task of [`attention_into`] reads.
struct HeadInputs<'a> {
    data: [&'a [f32]; 3],
    layouts: [HeadLayout; 3],
    biases: &'a [BiasView<'a>],
    dims: AttentionDims,
    scale: f32,
}

fma_dispatch!(attention_head => attention_head_body(inputs: &HeadInputs, task: (usize, usize)) -> Vec<f32>);

/// Head `hi` of batch row `bi` of [`attention_into`]: every query row, as `(q_len, d)`.
#[inline(always)]
fn attention_head_body(inputs: &HeadInputs, (bi, hi): (usize, usize)) -> Vec<f32> {
    let HeadInputs {
        data: [qs, ks, vs],
        layouts: [ql, kl, vl],
        biases,
        dims,
        scale,
    } = *inputs;
    let AttentionDims {
        heads: h,
        kv_heads: kvh,
        q_len,
        k_len,
        head_dim: d,
        ..
    } = dims;
    let kv_hi = hi / (h / kvh);
    let (q0, k0, v0) = (ql.at(bi, hi), kl.at(bi, kv_hi), vl.at(bi, kv_hi));
    let key = |j: usize| &ks[k0 + j * kl.ss..][..d];
    let value = |j: usize| &vs[v0 + j * vl.ss..][..d];
    let mut out = vec![0f32; q_len * d];
    let mut scores = vec![0f32; k_len];
    let mut q16 = vec![0f32; d];
    let mut acc = vec![0f32; LANES * d];
    for t in 0..q_len {
        for (r, x) in q16.iter_mut().zip(&qs[q0 + t * ql.ss..][..d]) {
            *r = round_f16(*x);
        }
        // The biases first: a masked key (≤ f32::MIN / 2) needs no product, its score
        // rounds to the mask's value whatever the product is. With one bias (a mask, as
        // GGUF models have) `product × scale + bias` is ggml's order exactly.
        scores.fill(0.0);
        for bias in biases {
            bias.add_row(&mut scores, bi, hi, t);
        }
        for (j, s) in scores.iter_mut().enumerate() {
            if *s > f32::MIN / 2.0 {
                *s += dot_lanes(key(j), &q16) * scale;
            }
        }
        let start = scores.iter().position(|s| *s > f32::MIN / 2.0).unwrap_or(0);
        let probs = &mut scores[start..];
        softmax_in_place(probs);
        acc.fill(0.0);
        for (j, p) in probs.iter().enumerate() {
            if *p == 0.0 {
                // Would add 0 to every lane.
                continue;
            }
            let p16 = round_f16(*p);
            let lane = &mut acc[(j % LANES) * d..][..d];
            for (a, x) in lane.iter_mut().zip(value(start + j)) {
                *a = x.mul_add(p16, *a);
            }
        }
        // `hsum16` of every column at once: the same additions, one row of lanes at a time.
        let lane = |l: usize| &acc[l * d..(l + 1) * d];
        for (c, o) in out[t * d..][..d].iter_mut().enumerate() {
            let t3: [f32; 8] = std::array::from_fn(|i| lane(8 + i)[c] + lane(i)[c]);
            let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
            *o = (t6[0] + t6[2]) + (t6[1] + t6[3]);
        }
    }
    out
}

/// `Σ k·q` over f16-valued keys and queries in 16 FMA lanes then [`hsum16`] (tinyBLAS's
/// order); a length that is not a multiple of 16 finishes in lane order.
#[inline(always)]
fn dot_lanes(k: &[f32], q: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (kc, qc) in k.chunks_exact(LANES).zip(q.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] = kc[l].mul_add(qc[l], acc[l]);
        }
    }
    let n = k.len() - k.len() % LANES;
    for (l, (kv, qv)) in k[n..].iter().zip(&q[n..]).enumerate() {
        acc[l] = kv.mul_add(*qv, acc[l]);
    }
    hsum16(&acc)
}

/// `ggml_vec_soft_max_f32` and the scaling after it, in place: `exp(x − max)` by
/// [`v_expf`], summed in f64 one 16-value block at a time, times the f32 reciprocal of the
/// sum.
#[inline(always)]
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for chunk in x.chunks_mut(LANES) {
        let mut block = [0f32; LANES];
        for (b, v) in block.iter_mut().zip(chunk.iter_mut()) {
            *v = v_expf(*v - max);
            *b = *v;
        }
        sum += hsum16(&block) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_expf_and_saturates() {
        for i in -2000..2000 {
            let x = i as f32 * 0.043;
            let (a, e) = (v_expf(x), x.exp());
            assert!(((a - e) / e).abs() < 4e-7, "{x}: {a} vs {e}");
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(-200.0), 0.0);
        assert_eq!(v_expf(200.0), f32::INFINITY);
    }

    #[test]
    fn round_f16_equals_the_f16_conversion() {
        // Every 61st f32 bit pattern: normals, f16 subnormals, ties, overflow, NaN.
        for bits in (0..u32::MAX).step_by(61) {
            let x = f32::from_bits(bits);
            let (a, e) = (round_f16(x), half::f16::from_f32(x).to_f32());
            assert!(
                a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan()),
                "{x:e}: {a:e} vs {e:e}"
            );
        }
        // Exact ties round to even.
        for x in [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            2f32.powi(-25),
            3.0 * 2f32.powi(-25),
        ] {
            assert_eq!(round_f16(x), half::f16::from_f32(x).to_f32(), "{x:e}");
        }
    }

    #[test]
    fn hsum16_adds_every_lane() {
        let v: [f32; 16] = std::array::from_fn(|i| i as f32);
        assert_eq!(hsum16(&v), 120.0);
    }
}
