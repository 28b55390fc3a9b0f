//! Element-wise and row arithmetic the other kernels share: a vectorizable `exp` and `erf`,
//! row reductions in eight lanes, activations; llama.cpp's vectorized `expf`, its 16-lane
//! sums and f16 rounding; and the differentiable GELU-tanh and softmax ops (forward and
//! backward side by side).

use candle_core::op::{Gelu, Relu, Silu, UnaryOpT};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, with_data};
use crate::nn::feed_forward::Activation;

/// `erf(x)` for f32 as a ratio of odd and even polynomials in `x` (the coefficients of
/// Eigen's `generic_fast_erf_float`), clamped to ±4 where erf is ±1 in f32: at most 4.2e-7
/// from the exact value, branch-free so that loops over it vectorize.
#[inline(always)]
pub(crate) fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// `e^x` for f32, branch-free so that loops over it vectorize (libm's `expf` is a scalar
/// call, a sixth of training time in softmax and GELU-tanh): `x = n ln2 + r` with
/// `|r| <= ln2/2`, Cephes' degree-6 polynomial for `e^r`, and `2^n` built in the exponent
/// bits. Within 2 ulp of libm over the range; inputs are clamped to [-87, 88] (below, the
/// result is 0 to within 1.7e-38; the callers never pass more than 88).
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer in SSE2 arithmetic.
    const ROUND: f32 = 12_582_912.0;
    if x < -87.0 {
        return 0.0;
    }
    let x = x.min(88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    f32::from_bits(((n as i32 + 127) as u32) << 23) * e
}

/// Row reductions the compiler vectorizes: eight running lanes instead of one serial
/// accumulator (a serial float sum or an `f32::max` fold, with its NaN rule, compiles to
/// one scalar operation per element). The rounding order differs from a serial sum by a few
/// ulp.
const LANES: usize = 8;

/// The largest value of `x` (−∞ when empty).
#[inline]
pub(crate) fn max_f32(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            m[i] = if c[i] > m[i] { c[i] } else { m[i] };
        }
    }
    let mut r = f32::NEG_INFINITY;
    for v in m.into_iter().chain(rest.iter().copied()) {
        r = if v > r { v } else { r };
    }
    r
}

/// `Σ f(x_i)`.
#[inline]
pub(crate) fn sum_map_f32(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

/// `Σ x_i`.
#[inline]
pub(crate) fn sum_f32(x: &[f32]) -> f32 {
    sum_map_f32(x, |v| v)
}

/// `Σ a_i b_i`.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// `exp(x_i - max x)` in place (a softmax numerator); returns their sum.
#[inline]
pub(crate) fn exp_shifted_in_place(x: &mut [f32]) -> f32 {
    let max = max_f32(x);
    // Masked scores sit ~3e38 below the maximum: exactly 0 here (libm's `expf` takes a slow
    // underflow path with errno for each, half of a causal block).
    x.iter_mut().for_each(|v| *v = exp_fast(*v - max));
    sum_f32(x)
}

/// GELU with the error function: `x/2 (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf_fast(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
}

pub(crate) fn apply_activation(data: &mut [f32], act: Activation) {
    fn map<F: Fn(f32) -> f32 + Sync>(data: &mut [f32], f: F) {
        data.par_chunks_mut(1 << 14)
            .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f(*v)));
    }
    match act {
        Activation::Relu => map(data, Relu::f32),
        // libm's scalar erf made GELU a sixth of BERT's inference time; a rational
        // approximation the compiler vectorizes is within 5e-7 of it.
        Activation::Gelu => map(data, gelu_erf_fast),
        Activation::GeluTanh => map(data, Gelu::f32),
        Activation::Silu => map(data, Silu::f32),
    }
}

/// Lanes of ggml's AVX-512 accumulators.
pub(crate) const GGML_LANES: usize = 16;

/// `_mm512_reduce_add_ps` as GCC expands it: halves, then quarters, then pairs.
#[inline(always)]
pub(crate) fn hsum16(v: &[f32; GGML_LANES]) -> f32 {
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

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// tanh through one vectorizable `exp` (libm's `tanhf` costs several times more; absolute
/// error ~1e-7).
fn tanh(u: f32) -> f32 {
    if u.abs() > 9.0 {
        return u.signum();
    }
    let e = exp_fast(2.0 * u);
    (e - 1.0) / (e + 1.0)
}

/// `gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
#[inline(always)]
fn gelu_tanh_value(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)))
}

/// `d/dx gelu_tanh(x)`.
#[inline(always)]
fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
}

/// `d/dx gelu(x) = Φ(x) + x φ(x)` (GELU with the error function).
#[inline(always)]
fn gelu_erf_grad(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
        + x * exp_fast(-0.5 * x * x) * INV_SQRT_2PI
}

/// A differentiable element-wise activation in one pass each way (candle's composed GELU
/// backward builds half a dozen tensors of the input's size, and its exact GELU calls
/// libm's scalar `erf`). Each kind's functions are called directly in its own loop, so they
/// inline and vectorize.
#[derive(Clone, Copy)]
enum Elementwise {
    /// GELU with the tanh approximation.
    GeluTanh,
    /// GELU with the error function (BERT's `gelu`).
    GeluErf,
}

/// `f` over `x` into a new buffer, in parallel chunks.
fn map_par(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)));
    y
}

/// `g · f'(x)` over `x` and `g` into a new buffer, in parallel chunks.
fn grad_par(x: &[f32], g: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14).zip(g.par_chunks(1 << 14)))
        .for_each(|(o, (x, g))| {
            for i in 0..o.len() {
                o[i] = g[i] * f(x[i]);
            }
        });
    dx
}

impl CustomOp1 for Elementwise {
    fn name(&self) -> &'static str {
        match self {
            Self::GeluTanh => "ferroformer-gelu-tanh",
            Self::GeluErf => "ferroformer-gelu-erf",
        }
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let y = match self {
            Self::GeluTanh => map_par(x, gelu_tanh_value),
            Self::GeluErf => map_par(x, gelu_erf_fast),
        };
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let dx = with_data(&[arg, grad], |d| match self {
            Self::GeluTanh => grad_par(d[0], d[1], gelu_tanh_grad),
            Self::GeluErf => grad_par(d[0], d[1], gelu_erf_grad),
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// GELU with the tanh approximation, differentiable.
pub(crate) fn gelu_tanh_op(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(Elementwise::GeluTanh)
}

/// GELU with the error function, differentiable.
pub(crate) fn gelu_erf_op(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1(Elementwise::GeluErf)
}

struct SoftmaxLastDim;

fn softmax_rows(x: &[f32], y: &mut [f32], n: usize) {
    y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
        y.copy_from_slice(x);
        let inv = 1.0 / exp_shifted_in_place(y);
        y.iter_mut().for_each(|y| *y *= inv);
    });
}

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "ferroformer-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut y = vec![0f32; x.len()];
        softmax_rows(x, &mut y, n);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let n = arg.dims().last().copied().unwrap_or(1).max(1);
        let dx = with_data(&[res, grad], |d| {
            let (y, g) = (d[0], d[1]);
            let mut dx = vec![0f32; y.len()];
            dx.par_chunks_mut(n)
                .zip(y.par_chunks(n).zip(g.par_chunks(n)))
                .for_each(|(o, (y, g))| {
                    let dot = dot_f32(y, g);
                    for i in 0..n {
                        o[i] = y[i] * (g[i] - dot);
                    }
                });
            dx
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// Softmax over the last dimension, differentiable.
pub(crate) fn softmax_op(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(SoftmaxLastDim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_2_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (ours, libm) = (exp_fast(x), x.exp());
            // `f32::max` drops a NaN: check each value before folding it in.
            assert!(ours.is_finite(), "exp_fast({x}) = {ours}");
            worst = worst.max(((ours - libm) / libm).abs());
            x += 0.000_37;
        }
        assert!(worst <= 2.4e-7, "relative error {worst:e}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(-1e30), 0.0);
        assert_eq!(exp_fast(f32::MIN), 0.0);
        assert!(exp_fast(1e30).is_finite());
    }

    #[test]
    fn fast_erf_is_within_5e_7_of_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let ours = erf_fast(x);
            assert!(ours.is_finite(), "erf_fast({x}) = {ours}");
            worst = worst.max((ours - candle_core::cpu::erf::erf_f64(x as f64) as f32).abs());
        }
        assert!(worst < 5e-7, "max |erf_fast - erf| = {worst}");
    }

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
