//! CPU kernels, one file per operation, each with its forward and backward side by side:
//!
//! - [`math`]: vectorizable `exp`/`erf`, row reductions, llama.cpp's `expf` and f16
//!   rounding, activations, and the differentiable GELU-tanh and softmax;
//! - [`gemm`]: `act(x W^T + b)` for inference and the differentiable linear op;
//! - [`attention`]: scaled dot-product attention per (batch, head) — the reference loop,
//!   llama.cpp's loop, packed sequences, and the differentiable op;
//! - [`norm`]: LayerNorm (fused with the residual add), llama.cpp's RMSNorm, and the
//!   differentiable LayerNorm and RMSNorm;
//! - [`rope`]: llama.cpp's rotary tables and rotation;
//! - [`glu`]: `act(gate) * up` of a fused gated projection (and llama.cpp's SwiGLU);
//! - [`loss`]: the differentiable cross-entropy;
//! - [`qmatmul`]: products with GGML block-quantized weights.
//!
//! Kernels do not choose when they run: [`super::ops`] does, once per op. Every kernel that
//! reads through raw pointers or strides checks its operands' extents once at entry, so no
//! safe function here relies on an unchecked precondition.

use candle_core::{CpuStorage, DType, Layout, Storage, Tensor};

use crate::error::{Error, Result};

/// Defines `$name`, which runs the `#[inline(always)]` function `$body` compiled for AVX2 and
/// FMA (or AVX-512) where the CPU has them: `mul_add` is then one instruction and the lane
/// loops vectorize. The results are the same either way (without FMA, `mul_add` is libm's
/// exact `fmaf`, a call per value).
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

pub(crate) mod attention;
pub(crate) mod gemm;
pub(crate) mod glu;
pub(crate) mod loss;
pub(crate) mod math;
pub(crate) mod norm;
pub(crate) mod qmatmul;
pub(crate) mod rope;

/// The f32 data of a CPU storage, from `layout`'s start offset on (`None` for other
/// storages and dtypes, or an offset past the end).
pub(crate) fn f32_data<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => cpu
            .as_slice::<f32>()
            .ok()
            .and_then(|d| d.get(layout.start_offset()..)),
        _ => None,
    }
}

/// The f16 data of a CPU storage, from `layout`'s start offset on (`None` for other
/// storages and dtypes, or an offset past the end): llama.cpp's KV cache type.
pub(crate) fn f16_data<'a>(storage: &'a Storage, layout: &Layout) -> Option<&'a [half::f16]> {
    match storage {
        Storage::Cpu(cpu) => cpu
            .as_slice::<half::f16>()
            .ok()
            .and_then(|d| d.get(layout.start_offset()..)),
        _ => None,
    }
}

/// Whether `t` is an f32 CPU tensor outside any autograd graph: the only tensors the
/// inference kernels read.
fn plain_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op()
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

/// How many threads a GEMM of `m × k` by `k × n` gets.
pub(crate) fn gemm_parallelism(m: usize, n: usize, k: usize) -> ::gemm::Parallelism {
    if SERIAL.with(|s| s.get()) {
        return ::gemm::Parallelism::None;
    }
    let threads = candle_core::utils::get_num_threads();
    // Below ~a million multiply-adds, waking threads costs more than it saves.
    if threads > 1 && m * n * k >= 1 << 20 {
        ::gemm::Parallelism::Rayon(threads)
    } else {
        ::gemm::Parallelism::None
    }
}

/// A raw output pointer shared by parallel tasks that write disjoint elements.
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

/// Runs `f` on the f32 data of a contiguous CPU tensor (borrowed, not copied); `None`
/// for any other tensor or one that tracks gradients.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !plain_f32(t) || !t.is_contiguous() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let data = f32_data(&storage, layout)?.get(..t.elem_count())?;
    Some(f(data))
}

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => match data.get(a..b) {
            Some(d) => Ok(d),
            None => candle_core::bail!("tensor layout {a}..{b} past its {} values", data.len()),
        },
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// Runs `f` on the f32 data of contiguous tensors.
pub(crate) fn with_data<R>(
    tensors: &[&Tensor],
    f: impl FnOnce(&[&[f32]]) -> R,
) -> candle_core::Result<R> {
    let owned: Vec<Tensor> = tensors
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        let Some(d) = f32_data(s, l) else {
            candle_core::bail!("expected f32 CPU tensors")
        };
        let Some(d) = d.get(..l.shape().elem_count()) else {
            candle_core::bail!("tensor data shorter than its shape {:?}", l.dims())
        };
        slices.push(d);
    }
    Ok(f(&slices))
}

/// Checks that `data` holds `needed` values: what a kernel reading through strides will
/// touch, computed from the layout at entry.
pub(crate) fn check_extent(what: &str, data: &[f32], needed: usize) -> Result<()> {
    if data.len() < needed {
        return Err(Error::Invalid(format!(
            "{what}: the layout reaches {needed} values but the buffer holds {}",
            data.len()
        )));
    }
    Ok(())
}
