//! Rotary position embeddings: the angle tables for given positions (the reference's and
//! llama.cpp's), and llama.cpp's rotation.

use candle_core::{Device, Tensor};

use super::with_f32;
use crate::error::{Error, Result};

/// Cosines and sines of `positions` for the inverse frequencies `inv_freq`, one row of
/// `inv_freq.len()` per position: angles `p × f` in f32, as `transformers` computes them.
pub(crate) fn reference_tables(inv_freq: &[f32], positions: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let n = positions.len() * inv_freq.len();
    let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &p in positions {
        for f in inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Cosines and sines of `positions` for `head_dim / 2` frequencies, as
/// `ggml_rope_cache_init` builds them: `theta_scale = powf(base, -2/d)`, the angle of pair
/// `i` is `p × theta_scale^i` by repeated f32 multiplication, `cosf` / `sinf` of it.
pub(crate) fn ggml_tables(
    head_dim: usize,
    base: f64,
    freq_factors: Option<&[f32]>,
    positions: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let theta_scale = (base as f32).powf(-2.0 / head_dim as f32);
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        let mut theta = p as f32;
        for i in 0..half {
            // `rope_yarn(theta_extrap / ff, ...)` with freq_scale 1 and no extrapolation mix.
            let angle = match freq_factors {
                Some(ff) => theta / ff[i],
                None => theta,
            };
            cos.push(angle.cos());
            sin.push(angle.sin());
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
pub(crate) fn ggml_rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
) -> Result<Option<Tensor>> {
    let (b, h, s, d) = x.dims4()?;
    if d % 2 != 0 || cos.dims() != [b, s, d / 2] || sin.dims() != cos.dims() {
        return Err(Error::shape(
            "rotary tables",
            format!("({b}, {s}, {}) for input {:?}", d / 2, x.dims()),
            cos.dims(),
        ));
    }
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
