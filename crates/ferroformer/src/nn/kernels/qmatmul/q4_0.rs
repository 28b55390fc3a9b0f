//! Q4_0 products with llama.cpp's arithmetic, and the 8-column driver its repacked formats
//! share with [`super::q2_k`].
//!
//! On x86 with AVX2 llama.cpp repacks Q4_0 matrices of 8k rows when the model loads
//! (`ggml_repack_get_optimal_repack_type`: `block_q4_0x8`, eight rows interleaved) and
//! multiplies them with `ggml_gemm_q4_0_8x8_q8_0` on each full group of 4 activation rows
//! and `ggml_gemv_q4_0_8x8_q8_0` on the rest (`forward_mul_mat_one_chunk`). Activation rows
//! are quantized to Q8_0 as for the other 32-value formats (`ggml_quantize_mat_q8_0_4x8`
//! rounds exactly as `quantize_row_q8_0`). Every x86 variant of both functions (AVX2,
//! AVX-512 with or without VNNI, 16 or 4 rows at a time) computes one output the same way:
//! per block of 32 the exact integer `Σ (q − 8)·x_q`, then `acc = fma(isum, d_w·d_x, acc)`
//! from `acc = 0`, blocks in order. So the result does not depend on the batch, and these
//! kernels give llama.cpp's bits on any CPU with AVX2, FMA and F16C.
//!
//! The kernels keep candle's block layout (no copy at load): eight weight rows at a time are
//! unpacked per block, each multiplied with the activation block in integer lanes, and the
//! eight lane sets folded into one vector whose lane `c` is column `c`'s block sum, so the
//! scaling runs eight columns per instruction, as in llama.cpp (with AVX-512 VNNI, two weight
//! rows share each 512-bit `vpdpbusd`; AVX2's `vpmaddubsw` + `vpmaddwd` elsewhere, the same
//! integers). Matrices whose row count
//! is not a multiple of 8 (which llama.cpp does not repack: its `vec_dot` or tinyBLAS order)
//! are left to candle's `QMatMul`.

use super::{for_column_ranges, QK};
use crate::nn::kernels::SendPtr;

/// Bytes of one Q4_0 block: f16 scale, 16 bytes of nibbles (values `q − 8`).
pub(super) const Q4_0_BYTES: usize = 18;
/// Output columns (weight rows) one kernel call computes: llama.cpp's interleave of 8.
pub(super) const GROUP: usize = 8;
/// Activation rows one kernel call reads: llama.cpp's gemm takes full groups of 4.
pub(super) const ROWS: usize = 4;

/// `x W^T` for Q4_0 weights (see [`super::matmul_t`]); `None` where llama.cpp would not
/// repack the matrix (row count not a multiple of 8) or the kernels cannot run.
pub(super) fn matmul_t(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Option<Vec<f32>> {
    let level = super::level()?;
    if x.len() != m * k || !k.is_multiple_of(QK) || !n.is_multiple_of(GROUP) {
        return None;
    }
    let nb = k / QK;
    let row_bytes = nb * Q4_0_BYTES;
    if w.len() != n * row_bytes {
        return None;
    }
    let xq = super::quantize_rows(x, false);
    // Σ x_q per block: the weights enter the integer products as unsigned nibbles q, and
    // Σ (q − 8)·x_q = Σ q·x_q − 8·Σ x_q exactly.
    let sums: Vec<i32> = xq
        .qs
        .chunks_exact(QK)
        .map(|b| b.iter().map(|&q| q as i32).sum())
        .collect();
    // Where VNNI runs, 512-bit registers do too (two weight rows per `vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    let wide = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(target_arch = "x86_64")]
    return Some(by_column_groups(m, n, |g, i0, rows| {
        let wg = &w[g * GROUP * row_bytes..(g + 1) * GROUP * row_bytes];
        // SAFETY: `level` says which instructions exist; `wg` holds 8 rows of `nb` blocks and
        // the activations rows `i0..i0 + rows` of `nb` blocks each.
        unsafe {
            match level {
                super::Level::Vnni if wide => {
                    x86::q4_0_avx512(wg, row_bytes, &xq.qs, &xq.d, &sums, i0, rows, nb)
                }
                super::Level::Vnni => {
                    x86::q4_0_vnni(wg, row_bytes, &xq.qs, &xq.d, &sums, i0, rows, nb)
                }
                super::Level::Avx2 => {
                    x86::q4_0_avx2(wg, row_bytes, &xq.qs, &xq.d, &sums, i0, rows, nb)
                }
            }
        }
    }));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, xq, sums);
        unreachable!("`level()` is None off x86")
    }
}

/// The `m × n` output of `f(g, i0, rows)`, which gives columns `8g..8g + 8` of activation
/// rows `i0..i0 + rows` (`rows <= ROWS`; every group but the last has `ROWS` rows, so the
/// full groups of 4 and the remaining rows are llama.cpp's gemm and gemv rows).
///
/// Column groups are split over the threads by `super::for_column_ranges`, so the result
/// does not depend on the thread count.
pub(super) fn by_column_groups<F>(m: usize, n: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, usize, usize) -> [[f32; GROUP]; ROWS] + Sync,
{
    let mut out = vec![0f32; m * n];
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_column_ranges(n / GROUP, 2, 64, |groups| {
        for i0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - i0);
            for g in groups.clone() {
                let v = f(g, i0, rows);
                for (r, v) in v.iter().enumerate().take(rows) {
                    // SAFETY: row i0 + r < m, columns 8g..8g + 8 <= n; each group belongs to
                    // one chunk, so no two threads write the same elements.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            v.as_ptr(),
                            out_ptr.get().add((i0 + r) * n + g * GROUP),
                            GROUP,
                        )
                    };
                }
            }
        }
    });
    out
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86::{
        bytes_from_nibbles_32, mul_sum_i32_avx2 as mul_sum_avx2, mul_sum_i32_vnni as mul_sum_vnni,
    };
    use super::{GROUP, Q4_0_BYTES, ROWS};
    use crate::nn::kernels::qmatmul::QK;

    /// Eight vectors of eight i32 lanes folded per 128-bit half: `(lo, hi)` where lane `c`
    /// of `lo` is the sum of lanes 0..4 of `p[c]` and of `hi` the sum of lanes 4..8 (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::nn::kernels::qmatmul) fn fold8(p: &[__m256i; GROUP]) -> (__m256i, __m256i) {
        let h01 = _mm256_hadd_epi32(p[0], p[1]);
        let h23 = _mm256_hadd_epi32(p[2], p[3]);
        let h45 = _mm256_hadd_epi32(p[4], p[5]);
        let h67 = _mm256_hadd_epi32(p[6], p[7]);
        // Per 128-bit half: [Σp0, Σp1, Σp2, Σp3] of that half's lanes, and likewise 4..8.
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        (
            _mm256_permute2x128_si256(h0123, h4567, 0x20),
            _mm256_permute2x128_si256(h0123, h4567, 0x31),
        )
    }

    /// The eight f16 values at `p`, `p + stride`, ... as f32 (exact, F16C).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in crate::nn::kernels::qmatmul) unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
        let mut h = [0u16; GROUP];
        for (c, h) in h.iter_mut().enumerate() {
            *h = std::ptr::read_unaligned(p.add(c * stride) as *const u16);
        }
        _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i))
    }

    /// Columns 0..8 of `w` (8 weight rows of `row_bytes`) against activation rows
    /// `i0..i0 + rows`: per block, eight exact integer sums in the lanes of one vector, then
    /// `acc = fma(isum, d_w·d_x, acc)` lane-wise, as `gemv/gemm_q4_b32_8x8_q8_0_lut_avx` do.
    macro_rules! q4_0_kernel {
        ($name:ident, $mul_sum:ident) => {
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(in crate::nn::kernels::qmatmul) unsafe fn $name(
                w: &[u8],
                row_bytes: usize,
                xq: &[i8],
                xd: &[f32],
                sums: &[i32],
                i0: usize,
                rows: usize,
                nb: usize,
            ) -> [[f32; GROUP]; ROWS] {
                debug_assert!(w.len() >= GROUP * row_bytes && row_bytes >= nb * Q4_0_BYTES);
                debug_assert!(xq.len() >= (i0 + rows) * nb * QK && sums.len() >= (i0 + rows) * nb);
                let wp = w.as_ptr();
                let qp = xq.as_ptr();
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let mut p = [[_mm256_setzero_si256(); GROUP]; ROWS];
                for b in 0..nb {
                    let blk = wp.add(b * Q4_0_BYTES);
                    for c in 0..GROUP {
                        // Values 0..16 are the low nibbles, 16..32 the high ones.
                        let q = bytes_from_nibbles_32(blk.add(c * row_bytes + 2));
                        for (r, p) in p.iter_mut().enumerate().take(rows) {
                            let y = _mm256_loadu_si256(
                                qp.add(((i0 + r) * nb + b) * QK) as *const __m256i
                            );
                            p[c] = $mul_sum(q, y);
                        }
                    }
                    let dw = f16x8(blk, row_bytes);
                    for r in 0..rows {
                        let xb = (i0 + r) * nb + b;
                        let (lo, hi) = fold8(&p[r]);
                        let isum = _mm256_sub_epi32(
                            _mm256_add_epi32(lo, hi),
                            _mm256_set1_epi32(8 * *sums.get_unchecked(xb)),
                        );
                        let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.get_unchecked(xb)));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc[r]);
                    }
                }
                let mut out = [[0f32; GROUP]; ROWS];
                for r in 0..rows {
                    _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
                }
                out
            }
        };
    }

    q4_0_kernel!(q4_0_avx2, mul_sum_avx2);
    q4_0_kernel!(q4_0_vnni, mul_sum_vnni);

    /// [`q4_0_vnni`] with two weight rows per 512-bit `vpdpbusd` (AVX-512 F + VNNI): the
    /// same integer sums, the same float steps, so the same bits.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
    pub(in crate::nn::kernels::qmatmul) unsafe fn q4_0_avx512(
        w: &[u8],
        row_bytes: usize,
        xq: &[i8],
        xd: &[f32],
        sums: &[i32],
        i0: usize,
        rows: usize,
        nb: usize,
    ) -> [[f32; GROUP]; ROWS] {
        debug_assert!(w.len() >= GROUP * row_bytes && row_bytes >= nb * Q4_0_BYTES);
        debug_assert!(xq.len() >= (i0 + rows) * nb * QK && sums.len() >= (i0 + rows) * nb);
        let mask = _mm512_set1_epi8(0x0f);
        // Lanes (c0, c2, c4, c6 | c1, c3, c5, c7) after the folds below, put back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let wp = w.as_ptr();
        let qp = xq.as_ptr();
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let mut p = [[_mm256_setzero_si256(); GROUP / 2]; ROWS];
        let mut y = [_mm512_setzero_si512(); ROWS];
        for b in 0..nb {
            let blk = wp.add(b * Q4_0_BYTES);
            for (r, y) in y.iter_mut().enumerate().take(rows) {
                // Values 0..16 in quarters 0 and 1, 16..32 in quarters 2 and 3.
                let v = _mm512_castsi256_si512(_mm256_loadu_si256(
                    qp.add(((i0 + r) * nb + b) * QK) as *const __m256i,
                ));
                *y = _mm512_shuffle_i64x2(v, v, 0b01_01_00_00);
            }
            // `pair` picks two weight rows and the fold input of every activation row.
            #[allow(clippy::needless_range_loop)]
            for pair in 0..GROUP / 2 {
                let c0 = blk.add(2 * pair * row_bytes + 2);
                let t = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128(c0 as *const __m128i)),
                    _mm_loadu_si128(c0.add(row_bytes) as *const __m128i),
                    1,
                );
                // Quarters: row c0's low nibbles, row c1's, then their high nibbles.
                let q = _mm512_and_si512(
                    mask,
                    _mm512_inserti64x4(_mm512_castsi256_si512(t), _mm256_srli_epi16(t, 4), 1),
                );
                for r in 0..rows {
                    let d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y[r]);
                    // Lanes 0..4: row c0's partial sums, 4..8: row c1's.
                    p[r][pair] = _mm256_add_epi32(
                        _mm512_castsi512_si256(d),
                        _mm512_extracti64x4_epi64(d, 1),
                    );
                }
            }
            let dw = f16x8(blk, row_bytes);
            for r in 0..rows {
                let xb = (i0 + r) * nb + b;
                let h01 = _mm256_hadd_epi32(p[r][0], p[r][1]);
                let h23 = _mm256_hadd_epi32(p[r][2], p[r][3]);
                let folded = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(h01, h23), order);
                let isum = _mm256_sub_epi32(folded, _mm256_set1_epi32(8 * *sums.get_unchecked(xb)));
                let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.get_unchecked(xb)));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc[r]);
            }
        }
        let mut out = [[0f32; GROUP]; ROWS];
        for r in 0..rows {
            _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
        out
    }
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::super::{f16_to_f32, quantize_rows, WeightFormat};
    use super::*;

    /// Weights quantized by candle (ggml's quantizer) and activations with a few outliers.
    pub(in crate::nn::kernels::qmatmul) fn case(
        dtype: GgmlDType,
        n: usize,
        k: usize,
        m: usize,
    ) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i as f32 * 0.731).sin() * 0.05) + ((i % 97) as f32 - 48.0) * 1e-4)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dtype).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let x: Vec<f32> = (0..m * k)
            .map(|i| {
                let v = (i as f32 * 0.377).cos() * 2.0;
                if i % 53 == 0 {
                    v * 9.0
                } else {
                    v
                }
            })
            .collect();
        (bytes, deq, x)
    }

    /// One output in scalar form: per block the integer `Σ (q − 8)·x_q`, folded in by
    /// `fma(isum, d_w·d_x, acc)`.
    fn reference(w: &[u8], xq_qs: &[i8], xq_d: &[f32], row: usize, nb: usize) -> f32 {
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = &w[b * Q4_0_BYTES..(b + 1) * Q4_0_BYTES];
            let dw = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let xb = row * nb + b;
            let isum: i32 = (0..QK)
                .map(|e| {
                    let q = if e < 16 {
                        blk[2 + e] & 15
                    } else {
                        blk[2 + e - 16] >> 4
                    };
                    (q as i32 - 8) * xq_qs[xb * QK + e] as i32
                })
                .sum();
            acc = (isum as f32).mul_add(dw * xq_d[xb], acc);
        }
        acc
    }

    #[test]
    fn q4_0_equals_its_scalar_form_for_any_row_count() {
        let (n, k) = (24, 256);
        let nb = k / QK;
        let (w, deq, x) = case(GgmlDType::Q4_0, n, k, 9);
        if !super::super::available() {
            assert!(super::super::matmul_t(&x, 9, k, &w, n, WeightFormat::Q4_0).is_none());
            return;
        }
        for m in [1, 3, 4, 5, 9] {
            let y = super::super::matmul_t(&x[..m * k], m, k, &w, n, WeightFormat::Q4_0).unwrap();
            let xq = quantize_rows(&x[..m * k], false);
            for i in 0..m {
                for j in 0..n {
                    let want = reference(&w[j * nb * Q4_0_BYTES..], &xq.qs, &xq.d, i, nb);
                    assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "m={m} ({i}, {j})");
                    // And near the f32 product of the dequantized weights: each activation
                    // moves by at most half a step of its block's scale.
                    let (mut exact, mut bound) = (0f64, 0f64);
                    for e in 0..k {
                        let wv = deq[j * k + e] as f64;
                        exact += wv * x[i * k + e] as f64;
                        bound += wv.abs() * xq.d[i * nb + e / QK] as f64 * 0.51;
                    }
                    assert!((y[i * n + j] as f64 - exact).abs() <= bound + 1e-4);
                }
            }
        }
        // Both instruction sets give the same bits.
        #[cfg(target_arch = "x86_64")]
        if super::super::level() == Some(super::super::Level::Vnni) {
            let xq = quantize_rows(&x[..4 * k], false);
            let sums: Vec<i32> = xq
                .qs
                .chunks_exact(QK)
                .map(|b| b.iter().map(|&q| q as i32).sum())
                .collect();
            let rb = nb * Q4_0_BYTES;
            // SAFETY: the Vnni level implies AVX2, FMA, F16C and VNNI.
            let (a, b) = unsafe {
                (
                    x86::q4_0_avx2(&w[..8 * rb], rb, &xq.qs, &xq.d, &sums, 0, 4, nb),
                    x86::q4_0_vnni(&w[..8 * rb], rb, &xq.qs, &xq.d, &sums, 0, 4, nb),
                )
            };
            assert_eq!(a, b);
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512 F checked; VNNI as above.
                let c =
                    unsafe { x86::q4_0_avx512(&w[..8 * rb], rb, &xq.qs, &xq.d, &sums, 0, 4, nb) };
                assert_eq!(a, c);
            }
        }
    }

    #[test]
    fn q4_0_declines_row_counts_llama_cpp_does_not_repack() {
        let (w, _, x) = case(GgmlDType::Q4_0, 12, 64, 2);
        assert!(super::super::matmul_t(&x, 2, 64, &w, 12, WeightFormat::Q4_0).is_none());
    }
}
