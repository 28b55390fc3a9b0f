//! One activation row (a decoding step) against many weight rows, on 256-bit registers.
//!
//! Per output these are the operations of the 4-row kernels in `super::x86` (and so of
//! ggml's `vec_dot` functions), in the same order: per block `acc = fma(d, Σ q_w·q_x, acc)`
//! in eight lanes, `hsum_float_8`, and for Q4_1 `summs = fma(m_w, s_x, summs)` added after.
//! What changes is the loop around them:
//!
//! - one call covers a whole range of weight rows, so the call, the accumulators' setup
//!   and the output store are not paid per row (with SmolLM2's 576-wide rows a row is only
//!   18 blocks, and that overhead was a fifth of a decoding step's products);
//! - for Q4_1, two weight rows run side by side, each with its own accumulators, so two FMA
//!   chains are in flight and the activation block is loaded once for both (Q8_0 and Q5_0
//!   read more bytes per value and go faster as one sequential stream).

use std::arch::x86_64::*;

use super::x86::{bytes_from_bits_32, bytes_from_nibbles_32, f16_at, hsum, mul_sum_avx2};
use super::{WeightFormat, Q4_1_BYTES, Q5_0_BYTES, Q8_0_BYTES, QK};

/// Whether [`matmul_row`] serves `format`.
pub(super) fn serves(format: WeightFormat) -> bool {
    matches!(
        format,
        WeightFormat::Q4_1 | WeightFormat::Q8_0 | WeightFormat::Q5_0
    )
}

/// One block's contribution for `$format`: updates `$acc` (and `$summs`) from the weight
/// block at `$blk` and the activation block `$qy` with scale `$dx` (and sum `$sx`).
macro_rules! block_step {
    (Q4_1, $blk:expr, $qy:expr, $dx:expr, $sx:expr, $acc:ident, $summs:ident) => {{
        let blk = $blk;
        let d0 = f16_at(blk);
        let m0 = f16_at(blk.add(2));
        // Low nibbles are values 0..16, high nibbles values 16..32.
        let qx = bytes_from_nibbles_32(blk.add(4));
        $summs = m0.mul_add($sx, $summs);
        let d0d1 = _mm256_set1_ps($dx * d0);
        $acc = _mm256_fmadd_ps(d0d1, mul_sum_avx2(qx, $qy), $acc);
    }};
    (Q8_0, $blk:expr, $qy:expr, $dx:expr, $sx:expr, $acc:ident, $summs:ident) => {{
        // No minimums: the sums and their total stay unused (zero).
        let _ = (&$sx, &mut $summs);
        let blk = $blk;
        let dw = f16_at(blk);
        let qx = _mm256_loadu_si256(blk.add(2) as *const __m256i);
        block_step!(signed, dw, qx, $qy, $dx, $acc);
    }};
    (Q5_0, $blk:expr, $qy:expr, $dx:expr, $sx:expr, $acc:ident, $summs:ident) => {{
        // No minimums: the sums and their total stay unused (zero).
        let _ = (&$sx, &mut $summs);
        let blk = $blk;
        let dw = f16_at(blk);
        let nibbles = bytes_from_nibbles_32(blk.add(6));
        let bxhi = _mm256_andnot_si256(
            bytes_from_bits_32(blk.add(2)),
            _mm256_set1_epi8(0xf0u8 as i8),
        );
        let qx = _mm256_or_si256(nibbles, bxhi);
        block_step!(signed, dw, qx, $qy, $dx, $acc);
    }};
    // Signed weights: ggml's sign trick, then the unsigned-by-signed products.
    (signed, $dw:expr, $qx:expr, $qy:expr, $dx:expr, $acc:ident) => {{
        let d = _mm256_set1_ps($dw * $dx);
        let ax = _mm256_sign_epi8($qx, $qx);
        let sy = _mm256_sign_epi8($qy, $qx);
        $acc = _mm256_fmadd_ps(d, mul_sum_avx2(ax, sy), $acc);
    }};
}

/// The kernel of one format: outputs `rows` of `out` from weight rows `rows` of `w`.
macro_rules! row_kernel {
    ($name:ident, $format:ident, $bytes:expr, $pairs:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(
            w: &[u8],
            row_bytes: usize,
            rows: std::ops::Range<usize>,
            xq: &[i8],
            xd: &[f32],
            xs: &[f32],
            out: *mut f32,
        ) {
            let nb = row_bytes / $bytes;
            debug_assert!(w.len() >= rows.end * row_bytes && xq.len() >= nb * QK);
            debug_assert!(xd.len() >= nb && (xs.is_empty() || xs.len() >= nb));
            let wp = w.as_ptr();
            let qp = xq.as_ptr();
            // Q8_0 activations carry no sums; the Q4_1 step is the only one reading them.
            let sum_at = |b: usize| {
                if xs.is_empty() {
                    0.0
                } else {
                    *xs.get_unchecked(b)
                }
            };
            let mut j = rows.start;
            while $pairs && j + 2 <= rows.end {
                let (w0, w1) = (wp.add(j * row_bytes), wp.add((j + 1) * row_bytes));
                let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let (mut summs0, mut summs1) = (0f32, 0f32);
                for b in 0..nb {
                    // Row j + 1 follows row j: one prefetch stream covers both.
                    _mm_prefetch::<_MM_HINT_T0>(
                        w1.add(b * $bytes + super::WEIGHT_PREFETCH) as *const i8
                    );
                    let qy = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
                    let dx = *xd.get_unchecked(b);
                    let sx = sum_at(b);
                    block_step!($format, w0.add(b * $bytes), qy, dx, sx, acc0, summs0);
                    block_step!($format, w1.add(b * $bytes), qy, dx, sx, acc1, summs1);
                }
                *out.add(j) = hsum(acc0) + summs0;
                *out.add(j + 1) = hsum(acc1) + summs1;
                j += 2;
            }
            while j < rows.end {
                let w0 = wp.add(j * row_bytes);
                let mut acc0 = _mm256_setzero_ps();
                let mut summs0 = 0f32;
                for b in 0..nb {
                    _mm_prefetch::<_MM_HINT_T0>(
                        w0.add(b * $bytes + super::WEIGHT_PREFETCH) as *const i8
                    );
                    let qy = _mm256_loadu_si256(qp.add(b * QK) as *const __m256i);
                    let dx = *xd.get_unchecked(b);
                    let sx = sum_at(b);
                    block_step!($format, w0.add(b * $bytes), qy, dx, sx, acc0, summs0);
                }
                *out.add(j) = hsum(acc0) + summs0;
                j += 1;
            }
        }
    };
}

// Pairs of rows where the product is bound by arithmetic (Q4_1: 7.2 against 8.3 ms at
// 262144 × 640 on an AVX2 Zen 3, 2 threads); one row at a time where it is bound by memory
// (Q8_0: two interleaved streams read 15 against 9.5 ms there; Q5_0 no faster in pairs).
row_kernel!(q4_1_rows, Q4_1, Q4_1_BYTES, true);
row_kernel!(q8_0_rows, Q8_0, Q8_0_BYTES, false);
row_kernel!(q5_0_rows, Q5_0, Q5_0_BYTES, false);

/// `x W^T` for one activation row, quantized as `xq` / `xd` / `xs` (the sums only for
/// Q4_1): the `n` outputs, columns split over the threads by `super::for_column_ranges`.
///
/// # Safety
/// AVX2, FMA and F16C are present; `format` is one [`serves`]; `w` holds `n` rows of
/// `row_bytes`, whole blocks of `format`; the activations cover that many blocks.
pub(super) unsafe fn matmul_row(
    format: WeightFormat,
    w: &[u8],
    n: usize,
    xq: &[i8],
    xd: &[f32],
    xs: &[f32],
) -> Vec<f32> {
    let row_bytes = w.len() / n.max(1);
    let mut out = vec![0f32; n];
    let out_ptr = crate::nn::kernels::SendPtr(out.as_mut_ptr());
    super::for_column_ranges(n, 16, 512, |rows| {
        let out = out_ptr.get();
        // SAFETY: the caller's promises; each range of rows is written by one call.
        unsafe {
            match format {
                WeightFormat::Q4_1 => q4_1_rows(w, row_bytes, rows, xq, xd, xs, out),
                WeightFormat::Q8_0 => q8_0_rows(w, row_bytes, rows, xq, xd, xs, out),
                _ => q5_0_rows(w, row_bytes, rows, xq, xd, xs, out),
            }
        }
    });
    out
}
