//! Q2_K products with llama.cpp's arithmetic on CPUs with AVX-512.
//!
//! llama.cpp repacks Q2_K matrices of 8k rows at load only where `ggml_cpu_has_avx512()`
//! (`block_q2_Kx8`, eight rows interleaved), and multiplies them with
//! `ggml_gemm_q2_K_8x8_q8_K` on each full group of 4 activation rows and
//! `ggml_gemv_q2_K_8x8_q8_K` on the rest. Activations are Q8_K rows (as for the other
//! K-quants). Per output both compute, in exact integers, `isum = Σ scale·Σ q2·x_q` and
//! `imin = Σ min·Σ x_q` over the 16 sub-blocks of 16 values, and fold them in with two
//! fused multiply-add chains, `acc = fma(isum, d_w·d_x, acc)` and
//! `acc_min = fma(imin, dmin_w·d_x, acc_min)`, returning `acc − acc_min`; the gemm folds
//! once per 128 values (both of its code paths, AVX-512 and AVX2), the gemv once per 256.
//! So a row's bits depend on whether it falls in a full group of 4, exactly as in llama.cpp.
//!
//! On CPUs without AVX-512 llama.cpp keeps Q2_K unpacked (`ggml_vec_dot_q2_K_q8_K` below 8
//! rows, its tiled matmul from 8 on), and on matrices of other row counts likewise; there
//! these kernels decline and candle's `QMatMul` (the `vec_dot` order, up to the rounding of
//! exact ties in the activations) multiplies instead.
//!
//! The weights stay in candle's layout; eight weight rows at a time are unpacked per
//! super-block (two per 512-bit register: these CPUs have AVX-512; BW is needed too, and
//! VNNI's `vpdpwssd` is used where present) and their integer lanes folded into one vector
//! per activation row whose lane `c` is column `c` (see [`super::q4_0`]).

use super::kquants::{quantize_q8k, QK_K};
use super::q4_0::{by_column_groups, GROUP};

/// Bytes of one Q2_K block: 16 bytes of scales (low nibble) and minimums (high nibble), 64
/// of 2-bit values, f16 d, f16 dmin.
pub(super) const Q2_K_BYTES: usize = 84;

/// Which kernel runs here: `None` where llama.cpp does not repack Q2_K (no AVX-512) or our
/// kernels cannot run (no AVX-512 BW, AVX2, FMA or F16C); `Some(true)` with AVX-512 VNNI.
fn kernel() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        static KERNEL: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| {
            (super::available() && has!("avx512f") && has!("avx512bw"))
                .then(|| std::env::var_os("FERROFORMER_NO_VNNI").is_none() && has!("avx512vnni"))
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `x W^T` for Q2_K weights (see [`super::matmul_t`]); `None` where llama.cpp would not
/// repack the matrix (no AVX-512, row count not a multiple of 8) or the kernels cannot run.
pub(super) fn matmul_t(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Option<Vec<f32>> {
    let vnni = kernel()?;
    if x.len() != m * k || !k.is_multiple_of(QK_K) || !n.is_multiple_of(GROUP) {
        return None;
    }
    let nb = k / QK_K;
    let row_bytes = nb * Q2_K_BYTES;
    if w.len() != n * row_bytes {
        return None;
    }
    let xq = quantize_q8k(x);
    #[cfg(target_arch = "x86_64")]
    return Some(by_column_groups(m, n, |g, i0, rows| {
        let wg = &w[g * GROUP * row_bytes..(g + 1) * GROUP * row_bytes];
        // SAFETY: `kernel()` said AVX-512 F and BW (and VNNI where `vnni`), AVX2, FMA and
        // F16C are present; `wg` holds 8 rows of `nb` blocks and `xq` rows `i0..i0 + rows` of
        // `nb` blocks each.
        unsafe {
            if vnni {
                x86::q2k_vnni(wg, row_bytes, &xq, i0, rows, nb)
            } else {
                x86::q2k_avx512(wg, row_bytes, &xq, i0, rows, nb)
            }
        }
    }));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xq, vnni);
        unreachable!("`kernel()` is None off x86")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::kquants::{Q8K, QK_K};
    use super::super::q4_0::x86::{f16x8, fold8};
    use super::super::q4_0::{GROUP, ROWS};
    use super::Q2_K_BYTES;

    /// Byte shuffles of the 16-bit scales for value vector `t` (values `32t..32t + 32` of
    /// two weight rows, one per 256-bit half): in each 128-bit quarter, the scale of the
    /// sub-block of 16 whose products `vpmaddubsw` leaves there, repeated. The quarters hold
    /// scales 0..8 (t < 4) or 8..16 (t ≥ 4) of their row.
    const SCALE_SHUFFLE: [[u8; 64]; 8] = {
        let mut m = [[0u8; 64]; 8];
        let mut t = 0;
        while t < 8 {
            let mut i = 0;
            while i < 64 {
                // Quarters 0 and 2: sub-block 2t; 1 and 3: sub-block 2t + 1.
                let sub = 2 * (t % 4) + (i / 16) % 2;
                m[t][i] = (2 * sub + i % 2) as u8;
                i += 1;
            }
            t += 1;
        }
        m
    };

    /// Columns 0..8 of `w` (8 weight rows of `row_bytes`) against activation rows
    /// `i0..i0 + rows`: per super-block and half of 128 values, eight exact integer sums of
    /// `scale·q2·x_q` and of `min·bsum` per column, folded into lanes = columns; a full
    /// group of `ROWS` rows takes the gemm order (an FMA per 128 values), fewer rows the
    /// gemv order (per 256). The integer work runs on 512-bit registers, two weight rows
    /// per register.
    macro_rules! q2k_kernel {
        ($name:ident, $features:literal, $acc:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &[u8],
                row_bytes: usize,
                xq: &Q8K,
                i0: usize,
                rows: usize,
                nb: usize,
            ) -> [[f32; GROUP]; ROWS] {
                debug_assert!(w.len() >= GROUP * row_bytes && row_bytes >= nb * Q2_K_BYTES);
                debug_assert!(xq.d.len() >= (i0 + rows) * nb);
                let per_128 = rows == ROWS;
                let m3 = _mm512_set1_epi8(3);
                let m4 = _mm256_set1_epi8(0x0f);
                let wp = w.as_ptr();
                let qp = xq.qs.as_ptr();
                let bp = xq.bsums.as_ptr();
                let mut shuffles = [_mm512_setzero_si512(); 8];
                for (t, s) in shuffles.iter_mut().enumerate() {
                    *s = _mm512_loadu_si512(SCALE_SHUFFLE[t].as_ptr() as *const _);
                }
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let mut acc_min = [_mm256_setzero_ps(); ROWS];
                // Per row and column: the two halves' lanes of Σ scale·q2·x_q, the minimums'.
                let mut p0 = [[_mm256_setzero_si256(); GROUP]; ROWS];
                let mut p1 = [[_mm256_setzero_si256(); GROUP]; ROWS];
                let mut pm = [[_mm256_setzero_si256(); GROUP]; ROWS];
                for b in 0..nb {
                    let blk = wp.add(b * Q2_K_BYTES);
                    for pair in 0..GROUP / 2 {
                        let c0 = blk.add(2 * pair * row_bytes);
                        let c1 = c0.add(row_bytes);
                        let sm = _mm256_inserti128_si256(
                            _mm256_castsi128_si256(_mm_loadu_si128(c0 as *const __m128i)),
                            _mm_loadu_si128(c1 as *const __m128i),
                            1,
                        );
                        // 16-bit scales and minimums, row c0's then row c1's.
                        let scales = _mm512_cvtepu8_epi16(_mm256_and_si256(sm, m4));
                        let mins =
                            _mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(sm, 4), m4));
                        let lo = _mm512_shuffle_i64x2(scales, scales, 0b10_10_00_00);
                        let hi = _mm512_shuffle_i64x2(scales, scales, 0b11_11_01_01);
                        // Value vector t = 4j + s: bits 2s of bytes 32j.. (values 128j + 32s..).
                        let mut q = [_mm512_setzero_si512(); 8];
                        let mut s = [_mm512_setzero_si512(); 8];
                        for j in 0..2 {
                            let bits = _mm512_inserti64x4(
                                _mm512_castsi256_si512(_mm256_loadu_si256(
                                    c0.add(16 + 32 * j) as *const __m256i
                                )),
                                _mm256_loadu_si256(c1.add(16 + 32 * j) as *const __m256i),
                                1,
                            );
                            q[4 * j] = _mm512_and_si512(bits, m3);
                            q[4 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(bits, 2), m3);
                            q[4 * j + 2] = _mm512_and_si512(_mm512_srli_epi16(bits, 4), m3);
                            q[4 * j + 3] = _mm512_and_si512(_mm512_srli_epi16(bits, 6), m3);
                        }
                        for t in 0..8 {
                            s[t] = _mm512_shuffle_epi8(if t < 4 { lo } else { hi }, shuffles[t]);
                        }
                        for r in 0..rows {
                            let xb = (i0 + r) * nb + b;
                            let q8 = qp.add(xb * QK_K);
                            let mut half = [_mm512_setzero_si512(); 2];
                            for t in 0..8 {
                                let y = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                    q8.add(32 * t) as *const __m256i
                                ));
                                let v = _mm512_maddubs_epi16(q[t], y);
                                half[t / 4] = $acc(half[t / 4], v, s[t]);
                            }
                            p0[r][2 * pair] = _mm512_castsi512_si256(half[0]);
                            p0[r][2 * pair + 1] = _mm512_extracti64x4_epi64(half[0], 1);
                            p1[r][2 * pair] = _mm512_castsi512_si256(half[1]);
                            p1[r][2 * pair + 1] = _mm512_extracti64x4_epi64(half[1], 1);
                            // Lane i: min·bsum of sub-blocks 2i and 2i + 1 (lanes 0..4: first
                            // half), per row.
                            let bsums = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                bp.add(xb * 16) as *const __m256i
                            ));
                            let mv = _mm512_madd_epi16(bsums, mins);
                            pm[r][2 * pair] = _mm512_castsi512_si256(mv);
                            pm[r][2 * pair + 1] = _mm512_extracti64x4_epi64(mv, 1);
                        }
                    }
                    let dw = f16x8(blk.add(80), row_bytes);
                    let dmin = f16x8(blk.add(82), row_bytes);
                    for r in 0..rows {
                        let dy = _mm256_set1_ps(*xq.d.get_unchecked((i0 + r) * nb + b));
                        let dd = _mm256_mul_ps(dw, dy);
                        let dm = _mm256_mul_ps(dmin, dy);
                        let (m_lo, m_hi) = fold8(&pm[r]);
                        if per_128 {
                            let (lo, hi) = fold8(&p0[r]);
                            let h0 = _mm256_add_epi32(lo, hi);
                            let (lo, hi) = fold8(&p1[r]);
                            let h1 = _mm256_add_epi32(lo, hi);
                            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h0), dd, acc[r]);
                            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h1), dd, acc[r]);
                            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m_lo), dm, acc_min[r]);
                            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m_hi), dm, acc_min[r]);
                        } else {
                            let mut sum = [_mm256_setzero_si256(); GROUP];
                            for c in 0..GROUP {
                                sum[c] = _mm256_add_epi32(p0[r][c], p1[r][c]);
                            }
                            let (lo, hi) = fold8(&sum);
                            let isum = _mm256_add_epi32(lo, hi);
                            let imin = _mm256_add_epi32(m_lo, m_hi);
                            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd, acc[r]);
                            acc_min[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), dm, acc_min[r]);
                        }
                    }
                }
                let mut out = [[0f32; GROUP]; ROWS];
                for r in 0..rows {
                    _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_sub_ps(acc[r], acc_min[r]));
                }
                out
            }
        };
    }

    /// `acc + Σ pairs of a·b` in 32-bit lanes (`vpmaddwd` + `vpaddd`; exact).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn madd_add(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(acc, _mm512_madd_epi16(a, b))
    }

    /// The same with one `vpdpwssd` (AVX-512 VNNI).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        _mm512_dpwssd_epi32(acc, a, b)
    }

    q2k_kernel!(q2k_avx512, "avx512f,avx512bw,avx2,fma,f16c", madd_add);
    q2k_kernel!(
        q2k_vnni,
        "avx512f,avx512bw,avx512vnni,avx2,fma,f16c",
        dpwssd
    );
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::super::kquants::Q8K;
    use super::super::q4_0::tests::case;
    use super::super::{f16_to_f32, WeightFormat};
    use super::*;

    /// One output in scalar form: `per_128` is the gemm order (full groups of 4 rows), else
    /// the gemv order.
    fn reference(w: &[u8], xq: &Q8K, row: usize, nb: usize, per_128: bool) -> f32 {
        let (mut acc, mut acc_min) = (0f32, 0f32);
        for b in 0..nb {
            let blk = &w[b * Q2_K_BYTES..(b + 1) * Q2_K_BYTES];
            let dw = f16_to_f32(u16::from_le_bytes([blk[80], blk[81]]));
            let dmin = f16_to_f32(u16::from_le_bytes([blk[82], blk[83]]));
            let xb = row * nb + b;
            let q8 = &xq.qs[xb * QK_K..(xb + 1) * QK_K];
            let bs = &xq.bsums[xb * 16..(xb + 1) * 16];
            let (mut isum, mut imin) = ([0i32; 2], [0i32; 2]);
            for v in 0..QK_K {
                let (j, s, l) = (v / 128, (v % 128) / 32, v % 32);
                let q = (blk[16 + 32 * j + l] >> (2 * s)) & 3;
                isum[j] += (blk[v / 16] & 15) as i32 * q as i32 * q8[v] as i32;
            }
            for (sub, &bsum) in bs.iter().enumerate() {
                imin[sub / 8] += (blk[sub] >> 4) as i32 * bsum as i32;
            }
            let (dd, dm) = (dw * xq.d[xb], dmin * xq.d[xb]);
            if per_128 {
                for h in 0..2 {
                    acc = (isum[h] as f32).mul_add(dd, acc);
                    acc_min = (imin[h] as f32).mul_add(dm, acc_min);
                }
            } else {
                acc = ((isum[0] + isum[1]) as f32).mul_add(dd, acc);
                acc_min = ((imin[0] + imin[1]) as f32).mul_add(dm, acc_min);
            }
        }
        acc - acc_min
    }

    #[test]
    fn q2_k_equals_its_scalar_form_for_any_row_count() {
        let (n, k) = (16, 512);
        let nb = k / QK_K;
        let (w, deq, x) = case(GgmlDType::Q2K, n, k, 9);
        if kernel().is_none() {
            // Without AVX-512 (llama.cpp's vec_dot order) the kernels decline for candle's.
            assert!(super::super::matmul_t(&x, 9, k, &w, n, WeightFormat::Q2K).is_none());
            return;
        }
        for m in [1, 3, 4, 5, 9] {
            let y = super::super::matmul_t(&x[..m * k], m, k, &w, n, WeightFormat::Q2K).unwrap();
            let xq = quantize_q8k(&x[..m * k]);
            for i in 0..m {
                let full_group = i < m - m % 4;
                for j in 0..n {
                    let want = reference(&w[j * nb * Q2_K_BYTES..], &xq, i, nb, full_group);
                    assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "m={m} ({i}, {j})");
                    // Near the f32 product of the dequantized weights: each activation moves
                    // by at most half a step of its super-block's scale.
                    let (mut exact, mut bound) = (0f64, 0f64);
                    for e in 0..k {
                        let wv = deq[j * k + e] as f64;
                        exact += wv * x[i * k + e] as f64;
                        bound += wv.abs() * xq.d[i * nb + e / QK_K].abs() as f64 * 0.51;
                    }
                    assert!((y[i * n + j] as f64 - exact).abs() <= bound + 1e-4);
                }
            }
        }
    }

    /// With and without VNNI's `vpdpwssd`: the same integers, so the same bits.
    #[test]
    fn q2_k_kernels_agree_with_and_without_vnni() {
        let (n, k) = (8, 512);
        let nb = k / QK_K;
        let (w, _, x) = case(GgmlDType::Q2K, n, k, 5);
        #[cfg(target_arch = "x86_64")]
        if kernel() == Some(true) {
            let xq = quantize_q8k(&x);
            let rb = nb * Q2_K_BYTES;
            for (i0, rows) in [(0, 4), (4, 1)] {
                // SAFETY: `kernel()` found AVX-512 F, BW and VNNI, AVX2, FMA and F16C.
                let (a, b) = unsafe {
                    (
                        x86::q2k_avx512(&w, rb, &xq, i0, rows, nb),
                        x86::q2k_vnni(&w, rb, &xq, i0, rows, nb),
                    )
                };
                assert_eq!(a, b);
            }
        }
        let _ = (w, x, nb);
    }

    #[test]
    fn q2_k_declines_row_counts_llama_cpp_does_not_repack() {
        let (w, _, x) = case(GgmlDType::Q2K, 12, 256, 2);
        assert!(super::super::matmul_t(&x, 2, 256, &w, 12, WeightFormat::Q2K).is_none());
    }
}
