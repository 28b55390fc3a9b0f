//! Focused CPU kernels for the inference hot paths, where composing candle ops costs extra
//! passes over memory and extra buffers:
//!
//! - [`linear`]: `act(x W^T + b)` as one GEMM that starts from the bias, with the
//!   activation applied in place — one output buffer instead of three;
//! - [`attention`]: `softmax(q k^T * scale + bias) v` for every (batch, head) in parallel,
//!   reading q, k and v straight out of the fused projection (no head split copies) and
//!   writing the heads already merged as `(batch, seq, heads * head_dim)`.
//!
//! Both run only for f32 tensors on the CPU that no gradient is tracked through; callers
//! fall back to the composed (differentiable, any-device) form otherwise. The per-element
//! activation functions are candle's own, so both paths give the same numbers.

use candle_core::op::{Gelu, Relu, Silu, UnaryOpT};
use candle_core::{DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::feed_forward::Activation;
use super::ggml::Arithmetic;
use crate::error::Result;

/// Whether every tensor is an f32 CPU tensor outside any autograd graph.
pub(crate) fn eligible(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// The f32 data of a CPU storage, from `layout`'s start offset on.
pub(crate) fn f32_data<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu
            .as_slice::<f32>()
            .ok()
            .map(|d| &d[layout.start_offset()..]),
        _ => None,
    }
}

thread_local! {
    /// Set while this thread runs one of several independent pieces of work in parallel
    /// (see [`serial`]): its GEMMs then stay on this thread.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's GEMMs single-threaded: for callers that already spread
/// independent work over the threads (one group of sequences per thread), where splitting
/// every GEMM again would only add synchronization.
pub(crate) fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let out = f();
    SERIAL.with(|s| s.set(before));
    out
}

pub(crate) fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if SERIAL.with(|s| s.get()) {
        return gemm::Parallelism::None;
    }
    let threads = candle_core::utils::get_num_threads();
    // Below ~a million multiply-adds, waking threads costs more than it saves.
    if threads > 1 && m * n * k >= 1 << 20 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

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
fn gelu_erf_fast(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
}

fn apply_activation(data: &mut [f32], act: Activation) {
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

/// `act(gate) * up` for `hidden` `(..., 2 * d_ff)` holding gate and up side by side (a
/// fused gated projection), in one pass and one buffer instead of two narrow copies and two
/// candle element-wise ops; the same per-element arithmetic as those ops. `None` when not
/// applicable.
pub(crate) fn gated_activation(
    hidden: &Tensor,
    d_ff: usize,
    act: Activation,
) -> Result<Option<Tensor>> {
    if !eligible(&[hidden]) || !hidden.is_contiguous() || hidden.dims().last() != Some(&(2 * d_ff))
    {
        return Ok(None);
    }
    let rows = hidden.elem_count() / (2 * d_ff);
    let (storage, layout) = hidden.storage_and_layout();
    let Some(src) = f32_data(&storage, layout) else {
        return Ok(None);
    };
    let src = &src[..rows * 2 * d_ff];
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
    *dims.last_mut().expect("rank >= 1") = d_ff;
    Ok(Some(Tensor::from_vec(out, dims, hidden.device())?))
}

/// `act(x W^T + b)` for `x` `(..., in)`, `w` `(out, in)`; `None` when not applicable.
///
/// `w` may be any 2-D view with a unit stride: row-major `(out, in)` as checkpoints store
/// it, or the transpose of a row-major `(in, out)` (see [`super::Linear::load`]), which the
/// GEMM reads without re-packing it on every call.
pub(crate) fn linear(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Option<Tensor>> {
    let mut all = vec![x, w];
    all.extend(b);
    if !eligible(&all) || !x.is_contiguous() || !b.is_none_or(|b| b.is_contiguous()) {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    // Element (o, i) of `w` is at o * w_out + i * w_in.
    let (w_out, w_in) = match w.stride() {
        [so, si] if *so == 1 || *si == 1 => (*so as isize, *si as isize),
        _ => return Ok(None),
    };
    let m = x.elem_count() / k.max(1);
    let mut dst: Vec<f32> = match b {
        Some(b) => {
            let bias = b.to_vec1::<f32>()?;
            let mut d = Vec::with_capacity(m * n);
            for _ in 0..m {
                d.extend_from_slice(&bias);
            }
            d
        }
        None => vec![0f32; m * n],
    };
    if m > 0 && n > 0 {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (Some(xd), Some(wd)) = (f32_data(&xs, xl), f32_data(&ws, wl)) else {
            return Ok(None);
        };
        // SAFETY: dst is m×n row-major; x is m×k row-major; w is an n×k view with strides
        // (w_out, w_in), read as the k×n matrix W^T (column stride w_out, row stride w_in).
        // All slices cover those extents.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                b.is_some(),
                xd.as_ptr(),
                1,
                k as isize,
                wd.as_ptr(),
                w_out,
                w_in,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm_parallelism(m, n, k),
            );
        }
    }
    if let Some(act) = act {
        apply_activation(&mut dst, act);
    }
    let mut dims = x.dims().to_vec();
    let last = dims.len() - 1;
    dims[last] = n;
    Ok(Some(Tensor::from_vec(dst, dims, &Device::Cpu)?))
}

/// Where the heads of q, k or v live in a buffer: element `(b, h, s, d)` is at
/// `offset + b*sb + h*sh + s*ss + d`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLayout {
    pub offset: usize,
    pub sb: usize,
    pub sh: usize,
    pub ss: usize,
}

impl HeadLayout {
    /// Heads `head_dim` wide side by side from column `col` of a contiguous
    /// `(batch, seq, width)` buffer (the fused q/k/v projection, or merged heads).
    pub fn packed(col: usize, seq: usize, width: usize, head_dim: usize) -> Self {
        Self {
            offset: col,
            sb: seq * width,
            sh: head_dim,
            ss: width,
        }
    }

    /// A contiguous `(batch, heads, seq, head_dim)` buffer.
    pub fn contiguous(heads: usize, seq: usize, head_dim: usize) -> Self {
        Self {
            offset: 0,
            sb: heads * seq * head_dim,
            sh: seq * head_dim,
            ss: head_dim,
        }
    }

    /// A 4-D `(batch, heads, seq, head_dim)` layout whose last dimension is contiguous.
    pub fn of(layout: &Layout) -> Option<Self> {
        let st = layout.stride();
        (st.len() == 4 && st[3] == 1).then(|| Self {
            offset: layout.start_offset(),
            sb: st[0],
            sh: st[1],
            ss: st[2],
        })
    }

    /// Where head `h` of batch row `b` starts.
    pub fn at(&self, b: usize, h: usize) -> usize {
        self.offset + b * self.sb + h * self.sh
    }
}

/// The heads of q, k or v inside a tensor's data (its storage from offset 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads<'a> {
    pub tensor: &'a Tensor,
    pub layout: HeadLayout,
}

impl<'a> Heads<'a> {
    /// Heads packed along the last dimension of a contiguous `(batch, seq, width)` tensor,
    /// starting at column `offset`, `head_dim` wide each.
    pub fn packed(tensor: &'a Tensor, offset: usize, head_dim: usize) -> Result<Self> {
        let (_, s, width) = tensor.dims3()?;
        Ok(Self {
            tensor,
            layout: HeadLayout::packed(offset, s, width, head_dim),
        })
    }

    /// A `(batch, heads, seq, head_dim)` tensor whose last dimension is contiguous.
    pub fn bhsd(tensor: &'a Tensor) -> Option<Self> {
        let st = tensor.stride();
        (st.len() == 4 && st[3] == 1).then(|| Self {
            tensor,
            layout: HeadLayout {
                offset: 0,
                sb: st[0],
                sh: st[1],
                ss: st[2],
            },
        })
    }
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionDims {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub k_len: usize,
    pub head_dim: usize,
}

/// An additive attention bias broadcastable to `(batch, heads, q_len, k_len)`: its data from
/// the layout's start offset, and element strides that are 0 along broadcast dimensions.
pub(crate) struct BiasView<'a> {
    data: &'a [f32],
    strides: [usize; 4],
}

impl<'a> BiasView<'a> {
    pub fn new(data: &'a [f32], dims: &[usize], stride: &[usize]) -> Self {
        let s = |i: usize| if dims[i] == 1 { 0 } else { stride[i] };
        Self {
            data,
            strides: [s(0), s(1), s(2), s(3)],
        }
    }

    /// Adds row `i` of the `(b, h)` block to `scores` (`k_len` values).
    pub fn add_row(&self, scores: &mut [f32], b: usize, h: usize, i: usize) {
        let st = self.strides;
        let row = &self.data[b * st[0] + h * st[1] + i * st[2]..];
        for (j, s) in scores.iter_mut().enumerate() {
            *s += row[j * st[3]];
        }
    }

    /// Adds the `(b, h)` block to `scores`, `q_len` rows of `k_len`.
    pub fn add_to(&self, scores: &mut [f32], b: usize, h: usize, q_len: usize, k_len: usize) {
        let st = self.strides;
        let base = b * st[0] + h * st[1];
        for i in 0..q_len {
            let row = &self.data[base + i * st[2]..];
            let srow = &mut scores[i * k_len..(i + 1) * k_len];
            for (j, s) in srow.iter_mut().enumerate() {
                *s += row[j * st[3]];
            }
        }
    }
}

pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: every (batch, head) unit writes a disjoint set of output elements.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method (not a field access) so closures capture the wrapper, not the raw pointer.
    pub fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Scaled dot-product attention with `arithmetic`'s loop ([`attention_into`], or llama.cpp's
/// in `super::ggml`); returns `(batch, q_len, heads * head_dim)`.
///
/// `biases` are additive tensors broadcastable to `(batch, heads, q_len, k_len)` (already
/// shape-checked by the caller). `None` when not applicable.
pub(crate) fn attention(
    q: Heads,
    k: Heads,
    v: Heads,
    dims: AttentionDims,
    biases: &[&Tensor],
    scale: f32,
    arithmetic: Arithmetic,
) -> Result<Option<Tensor>> {
    let mut all = vec![q.tensor, k.tensor, v.tensor];
    all.extend(biases.iter().copied());
    if !eligible(&all) {
        return Ok(None);
    }
    let AttentionDims {
        batch,
        heads,
        q_len,
        k_len,
        head_dim,
        ..
    } = dims;
    let width = heads * head_dim;
    let mut out = vec![0f32; batch * q_len * width];
    if out.is_empty() || k_len == 0 {
        return Ok(Some(Tensor::from_vec(
            out,
            (batch, q_len, width),
            &Device::Cpu,
        )?));
    }
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let data: Option<Vec<&[f32]>> = guards.iter().map(|(s, l)| f32_data(s, l)).collect();
    let Some(data) = data else { return Ok(None) };
    let (qd, kd, vd) = (data[0], data[1], data[2]);
    let bias_views: Vec<BiasView> = biases
        .iter()
        .zip(&data[3..])
        .map(|(t, d)| BiasView::new(d, t.dims(), t.stride()))
        .collect();
    let (data, layouts) = ([qd, kd, vd], [q.layout, k.layout, v.layout]);
    match arithmetic {
        Arithmetic::Reference => attention_into(&mut out, data, layouts, dims, &bias_views, scale),
        Arithmetic::Ggml => {
            super::ggml::attention_into(&mut out, data, layouts, dims, &bias_views, scale)
        }
    }
    drop(guards);
    Ok(Some(Tensor::from_vec(
        out,
        (batch, q_len, width),
        &Device::Cpu,
    )?))
}

/// Scaled dot-product attention for every (batch, head) in parallel, from q, k and v in
/// `data` through their layouts, into `out` `(batch, q_len, heads * head_dim)` (heads merged).
/// Inference ([`attention`]) and the training op (`autograd_ops`) both run this.
pub(crate) fn attention_into(
    out: &mut [f32],
    data: [&[f32]; 3],
    [q, k, v]: [HeadLayout; 3],
    dims: AttentionDims,
    biases: &[BiasView],
    scale: f32,
) {
    let AttentionDims {
        batch,
        heads,
        kv_heads,
        q_len,
        k_len,
        head_dim,
    } = dims;
    let n_rep = heads / kv_heads;
    let width = heads * head_dim;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each(|unit| {
        let (b, h) = (unit / heads, unit % heads);
        let g = h / n_rep;
        let blk = Block {
            q: &data[0][q.at(b, h)..],
            q_stride: q.ss,
            k: &data[1][k.at(b, g)..],
            k_stride: k.ss,
            v: &data[2][v.at(b, g)..],
            v_stride: v.ss,
            q_len,
            k_len,
            head_dim,
            scale,
        };
        let add = |s: &mut [f32]| {
            biases
                .iter()
                .for_each(|bv| bv.add_to(s, b, h, q_len, k_len))
        };
        // SAFETY: the output block of this (b, h) is q_len rows of `head_dim` values,
        // `width` apart, disjoint from every other unit's block; `out` holds them all.
        unsafe {
            attend_block(
                blk,
                add,
                out_ptr.get().add(b * q_len * width + h * head_dim),
                width,
            )
        };
    });
}

/// One (sequence, head) attention block: q rows `q_stride` apart (k, v likewise), each row
/// `head_dim` contiguous values.
pub(crate) struct Block<'a> {
    pub q: &'a [f32],
    pub q_stride: usize,
    pub k: &'a [f32],
    pub k_stride: usize,
    pub v: &'a [f32],
    pub v_stride: usize,
    pub q_len: usize,
    pub k_len: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// `softmax(scale q k^T + bias)` for one block: `q_len` rows of `k_len` probabilities.
pub(crate) fn attention_probs(blk: &Block, add_biases: impl Fn(&mut [f32])) -> Vec<f32> {
    let Block {
        q_len,
        k_len,
        head_dim,
        ..
    } = *blk;
    let mut scores = vec![0f32; q_len * k_len];
    // SAFETY: q holds q_len rows `q_stride` apart and k k_len rows `k_stride` apart, each
    // `head_dim` long (the caller's contract on `Block`); scores is q_len × k_len.
    unsafe {
        gemm::gemm(
            q_len,
            k_len,
            head_dim,
            scores.as_mut_ptr(),
            1,
            k_len as isize,
            false,
            blk.q.as_ptr(),
            1,
            blk.q_stride as isize,
            blk.k.as_ptr(),
            blk.k_stride as isize,
            1,
            0.0,
            blk.scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    add_biases(&mut scores);
    for row in scores.chunks_mut(k_len.max(1)) {
        let inv = 1.0 / exp_shifted_in_place(row);
        row.iter_mut().for_each(|s| *s *= inv);
    }
    scores
}

/// `softmax(scale q k^T + bias) v` for one block, written as `q_len` rows of `head_dim`
/// values `dst_stride` apart from `dst`.
///
/// # Safety
/// `dst` must be valid for those writes and no other thread may write them concurrently; the
/// slices in `blk` must hold every row the strides reach.
unsafe fn attend_block(
    blk: Block,
    add_biases: impl Fn(&mut [f32]),
    dst: *mut f32,
    dst_stride: usize,
) {
    let probs = attention_probs(&blk, add_biases);
    let Block {
        q_len,
        k_len,
        head_dim,
        ..
    } = blk;
    gemm::gemm(
        q_len,
        head_dim,
        k_len,
        dst,
        1,
        dst_stride as isize,
        false,
        probs.as_ptr(),
        1,
        k_len as isize,
        blk.v.as_ptr(),
        1,
        blk.v_stride as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Self-attention over sequences packed end to end without padding: `qkv` is the fused
/// projection `(1, tokens, q_dim + 2 kv_dim)` and `lengths` the sequence lengths in order
/// (summing to `tokens`); every sequence attends only to itself. Returns
/// `(1, tokens, heads * head_dim)`, or `None` off the CPU f32 inference path.
pub(crate) fn attention_packed(
    qkv: &Tensor,
    lengths: &[usize],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    if !eligible(&[qkv]) || !qkv.is_contiguous() {
        return Ok(None);
    }
    let (_, tokens, cols) = qkv.dims3()?;
    let width = heads * head_dim;
    let kv_dim = kv_heads * head_dim;
    let mut out = vec![0f32; tokens * width];
    let (storage, layout) = qkv.storage_and_layout();
    let Some(data) = f32_data(&storage, layout) else {
        return Ok(None);
    };
    let starts: Vec<usize> = lengths
        .iter()
        .scan(0, |acc, &n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();
    let n_rep = heads / kv_heads;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..lengths.len() * heads).into_par_iter().for_each(|unit| {
        let (seq, h) = (unit / heads, unit % heads);
        let (start, len) = (starts[seq], lengths[seq]);
        if len == 0 {
            return;
        }
        let kvh = h / n_rep;
        let row = &data[start * cols..];
        // SAFETY: this (sequence, head) writes rows start..start+len, columns of head h only.
        unsafe {
            attend_block(
                Block {
                    q: &row[h * head_dim..],
                    q_stride: cols,
                    k: &row[width + kvh * head_dim..],
                    k_stride: cols,
                    v: &row[width + kv_dim + kvh * head_dim..],
                    v_stride: cols,
                    q_len: len,
                    k_len: len,
                    head_dim,
                    scale,
                },
                |_| {},
                out_ptr.get().add(start * width + h * head_dim),
                width,
            );
        }
    });
    drop(storage);
    Ok(Some(Tensor::from_vec(
        out,
        (1, tokens, width),
        &Device::Cpu,
    )?))
}

/// `LayerNorm(x + y)` over the last dimension in one pass per row (the post-norm residual):
/// no intermediate sum tensor, rows in parallel. `None` off the CPU f32 inference path.
pub(crate) fn add_layer_norm(
    x: &Tensor,
    y: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Option<Tensor>> {
    let mut all = vec![x, y, weight];
    all.extend(bias);
    if !eligible(&all) || !all.iter().all(|t| t.is_contiguous()) || x.dims() != y.dims() {
        return Ok(None);
    }
    let d = weight.elem_count();
    if d == 0 || x.dims().last() != Some(&d) {
        return Ok(None);
    }
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let data: Option<Vec<&[f32]>> = guards.iter().map(|(s, l)| f32_data(s, l)).collect();
    let Some(data) = data else { return Ok(None) };
    let n = x.elem_count();
    let (xd, yd, wd) = (&data[0][..n], &data[1][..n], &data[2][..d]);
    let bd = bias.map(|_| &data[3][..d]);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(d)
        .zip(xd.par_chunks(d).zip(yd.par_chunks(d)))
        .for_each(|(o, (xr, yr))| {
            for ((o, a), b) in o.iter_mut().zip(xr).zip(yr) {
                *o = a + b;
            }
            let mean = sum_f32(o) / d as f32;
            let var = sum_map_f32(o, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            match bd {
                Some(bd) => {
                    for ((o, w), b) in o.iter_mut().zip(wd).zip(bd) {
                        *o = (*o - mean) * inv * w + b;
                    }
                }
                None => {
                    for (o, w) in o.iter_mut().zip(wd) {
                        *o = (*o - mean) * inv * w;
                    }
                }
            }
        });
    drop(guards);
    Ok(Some(Tensor::from_vec(out, x.dims(), &Device::Cpu)?))
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
            worst =
                worst.max((erf_fast(x) - candle_core::cpu::erf::erf_f64(x as f64) as f32).abs());
        }
        assert!(worst < 5e-7, "max |erf_fast - erf| = {worst}");
    }
}
