//! Products with K-quant weights (super-blocks of 256 values), with llama.cpp's arithmetic.
//!
//! ggml quantizes each activation row to Q8_K (`quantize_row_q8_K_ref`: per 256 values an
//! f32 scale `1 / (-127 / max)` where `max` is the value of largest magnitude, int8 values
//! rounded to nearest even, and the sum of every 16 values), multiplies in integers and
//! scales in f32. Which f32 operations follow depends on the format and on what llama.cpp
//! does with the weights on an x86 CPU with AVX2 (its default build and settings):
//!
//! - **Q4_K** matrices with a multiple of 8 rows are repacked when the model loads
//!   (`use_extra_bufts`, on by default) and multiplied by `ggml_gemm_q4_K_8x8_q8_K` on each
//!   full group of 4 activation rows and `ggml_gemv_q4_K_8x8_q8_K` on the rest. Per output
//!   both compute `Σ (d_w·d_x)·isum − Σ (dmin_w·d_x)·imin` with two fused multiply-add
//!   chains, gemm once per 64 values, gemv once per 256; so a row's bits depend on whether
//!   it falls in a full group of 4, exactly as in llama.cpp. (Matrices with other row
//!   counts are not repacked; candle's product, ggml's `vec_dot` order, serves them.)
//! - **Q6_K** goes through `ggml_vec_dot_q6_K_q8_K` (AVX2) below 8 activation rows: integer
//!   sums in eight lanes, one FMA per lane and super-block, `hsum_float_8` at the end. From
//!   8 rows on llama.cpp switches to its tiled K-quant matmul (ggml-cpu/tiled/), which sums
//!   each super-block in one integer and accumulates `y = fma(isum · d_w, d_x, y)` (its AVX2
//!   microkernel, the one llama-cpp-python 0.3.36's build runs here; the AVX-512 VNNI one
//!   would multiply and add in two roundings).
//! - **Q3_K** likewise: `ggml_vec_dot_q3_K_q8_K` below 8 rows (lanes as for Q6_K), the
//!   tiled order from 8 on.
//! - **Q5_K** likewise: `ggml_vec_dot_q5_K_q8_K` below 8 rows (eight lanes of
//!   `Σ scale·q5·q8`, FMA per super-block, and the minimums as one scalar FMA chain with
//!   `−d_x·dmin_w`), the tiled order from 8 on (`r = fma(−dmin_w, imin, isum·d_w)`,
//!   `y = fma(r, d_x, y)`).
//!
//! Groups of rows (Q4_K from 5, the others from 8, where each output's order is a scalar
//! chain) run on [`super::kwide`] instead, one activation row per lane, with the same bits.
//!
//! The integer parts are exact whichever instructions compute them (no saturation for these
//! ranges: |q8| ≤ 127, weights ≤ 63), so only the float steps are copied operation for
//! operation. `tests/qmatmul_kquants.rs` checks the bits against llama.cpp's own functions.

#[cfg(target_arch = "x86_64")]
use super::{by_columns, ROWS};

/// Values per super-block.
pub(super) const QK_K: usize = 256;
/// Bytes of one Q3_K block: 32 bytes of high bits, 64 of low bit pairs, 12 of 6-bit scales,
/// f16 d.
pub(super) const Q3_K_BYTES: usize = 110;
/// Bytes of one Q4_K block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 of nibbles.
pub(super) const Q4_K_BYTES: usize = 144;
/// Bytes of one Q5_K block: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 32 bytes of
/// fifth bits, 128 of nibbles.
pub(super) const Q5_K_BYTES: usize = 176;
/// Bytes of one Q6_K block: 128 bytes of low nibbles, 64 of high bit pairs, 16 i8 scales,
/// f16 d.
pub(super) const Q6_K_BYTES: usize = 210;

/// Activation rows from which llama.cpp's tiled K-quant matmul takes over
/// (`ggml_tiled_min_batch`).
const TILED_MIN_ROWS: usize = 8;

/// Whether the 16-row AVX-512 VNNI variant of the row-lane kernels runs where the CPU has
/// it (`FERROFORMER_KWIDE_AVX512=1`). It has not yet run on such a CPU (the machines of its
/// writing had AVX2 only), so until `wide_kernels_equal_the_4_row_kernels_for_any_row_count`
/// has passed there with this set, every CPU takes the tested 8-row AVX2 variant, which
/// gives the same bits.
fn kwide_avx512_opted_in() -> bool {
    static OPT_IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OPT_IN.get_or_init(|| std::env::var_os("FERROFORMER_KWIDE_AVX512").is_some_and(|v| v == "1"))
}

/// Activation rows from which the row-lane kernels ([`super::kwide`]) serve `format`. They
/// follow only the tiled order of Q6_K, Q5_K and Q3_K, which starts at [`TILED_MIN_ROWS`];
/// Q4_K's two orders are both theirs, and from 5 rows on (two calls of the 4-row kernel)
/// they were the faster on AVX2 (640 × 2048, 2 threads: 4 rows 247 against 209 µs, 5 rows
/// 247 against 291 µs).
fn wide_min_rows(format: super::WeightFormat) -> usize {
    match format {
        super::WeightFormat::Q4K => 5,
        _ => TILED_MIN_ROWS,
    }
}

/// Activation rows quantized to Q8_K: values, the f32 scale of each super-block, and the
/// sum of each 16 values.
pub(super) struct Q8K {
    pub(super) qs: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) bsums: Vec<i16>,
}

/// ggml's `quantize_row_q8_K_ref` on every block of 256 in `x`.
pub(super) fn quantize_q8k(x: &[f32]) -> Q8K {
    let blocks = x.len() / QK_K;
    let mut out = Q8K {
        qs: vec![0; blocks * QK_K],
        d: vec![0.0; blocks],
        bsums: vec![0; blocks * QK_K / 16],
    };
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: AVX2 and FMA are present; the same arithmetic, rounded by instructions.
        unsafe { x86::quantize_q8k(x, &mut out) };
        return out;
    }
    quantize_q8k_blocks(x, &mut out);
    out
}

#[inline(always)]
fn quantize_q8k_blocks(x: &[f32], out: &mut Q8K) {
    for (b, xs) in x.chunks_exact(QK_K).enumerate() {
        // The first value of largest magnitude, with its sign.
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let qs = &mut out.qs[b * QK_K..(b + 1) * QK_K];
        if amax == 0.0 {
            // Zeros everywhere (already so): d = 0, values 0, sums 0.
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qs.iter_mut().zip(xs) {
            // `nearest_int` adds 1.5·2^23 to the rounded product: round half to even.
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (s, group) in out.bsums[b * 16..(b + 1) * 16]
            .iter_mut()
            .zip(qs.chunks_exact(16))
        {
            *s = group.iter().map(|&q| q as i16).sum();
        }
        out.d[b] = 1.0 / iscale;
    }
}

/// `x W^T` for K-quant weights (see [`super::matmul_t`]); `None` where these kernels do
/// not reproduce llama.cpp (shapes it treats otherwise) or cannot run.
pub(super) fn matmul_t(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    format: super::WeightFormat,
) -> Option<Vec<f32>> {
    product(x, m, k, w, n, format, super::wide_enabled())
}

/// [`matmul_t`], with groups of rows on the 512-bit kernels where `wide` and the CPU has
/// them (the same bits either way).
fn product(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    format: super::WeightFormat,
    wide: bool,
) -> Option<Vec<f32>> {
    use super::WeightFormat;
    if !super::available() || !k.is_multiple_of(QK_K) {
        return None;
    }
    let block_bytes = match format {
        // llama.cpp repacks (and so multiplies this way) only matrices of 8k rows.
        WeightFormat::Q4K if n.is_multiple_of(8) => Q4_K_BYTES,
        WeightFormat::Q3K => Q3_K_BYTES,
        WeightFormat::Q5K => Q5_K_BYTES,
        WeightFormat::Q6K => Q6_K_BYTES,
        _ => return None,
    };
    let nb = k / QK_K;
    let row_bytes = nb * block_bytes;
    if w.len() != n * row_bytes {
        return None;
    }
    let xq = quantize_q8k(x);
    // From 8 activation rows on, llama.cpp multiplies K-quants (other than repacked Q4_K)
    // with its tiled matmul, in another f32 order.
    let tiled = m >= TILED_MIN_ROWS;
    #[cfg(target_arch = "x86_64")]
    if wide && m >= wide_min_rows(format) {
        let avx512 = super::level() == Some(super::Level::Vnni) && kwide_avx512_opted_in();
        let groups = super::kwide::pack(&xq, m, nb, avx512);
        drop(xq);
        // SAFETY: `available()` said AVX2, FMA and F16C are present, and `Level::Vnni`
        // AVX-512 F + VNNI; `w` holds `n` rows of `nb` blocks of `format` (checked above)
        // and the groups were packed from the `m` rows of `nb` blocks.
        return Some(unsafe { super::kwide::matmul(format, w, n, nb, m, &groups, avx512) });
    }
    #[cfg(target_arch = "x86_64")]
    return Some(by_columns(m, n, |j, i0, rows| {
        let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
        // SAFETY: `available()` said AVX2, FMA and F16C are present; `wrow` holds `nb`
        // blocks and `xq` rows `i0..i0 + rows` of `nb` blocks each.
        unsafe {
            match format {
                WeightFormat::Q4K => x86::q4k(wrow, &xq, i0, rows, nb),
                WeightFormat::Q3K => x86::q3k(wrow, &xq, i0, rows, nb, tiled),
                WeightFormat::Q5K => x86::q5k(wrow, &xq, i0, rows, nb, tiled),
                _ => x86::q6k(wrow, &xq, i0, rows, nb, tiled),
            }
        }
    }));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (xq, tiled, row_bytes, wide);
        unreachable!("`available()` is false off x86")
    }
}

/// The 8 six-bit scales and 8 six-bit minimums of a Q4_K (or Q5_K) block, unpacked from
/// its 12 bytes as ggml's `utmp` shuffle does.
#[inline(always)]
pub(super) fn q4k_scales_mins(b: &[u8]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let mut u = [0u32; 4];
    for (i, word) in u.iter_mut().take(3).enumerate() {
        *word = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    sc[..4].copy_from_slice(&u[0].to_le_bytes());
    sc[4..].copy_from_slice(&u[1].to_le_bytes());
    mn[..4].copy_from_slice(&u[2].to_le_bytes());
    mn[4..].copy_from_slice(&u[3].to_le_bytes());
    (sc, mn)
}

/// The 16 signed 6-bit scales of a Q3_K block, unpacked from its 12 bytes as ggml's
/// `ggml_vec_dot_q3_K_q8_K` does.
#[inline(always)]
pub(super) fn q3k_scales(b: &[u8]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let a = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let (a0, a1, a2) = (a(0), a(1), a(2));
    let words = [
        (a0 & KMASK2) | ((a2 & KMASK1) << 4),
        (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, w) in words.iter().enumerate() {
        for (j, byte) in w.to_le_bytes().iter().enumerate() {
            out[4 * i + j] = (*byte as i8).wrapping_sub(32);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86::{f16_at, hsum};
    use super::{
        q3k_scales, q4k_scales_mins, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8K, QK_K,
        ROWS,
    };

    /// The Q8_K quantizer compiled for AVX2, so rounding is an instruction, not a call.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize_q8k(x: &[f32], out: &mut Q8K) {
        super::quantize_q8k_blocks(x, out)
    }

    /// Q4_K with llama.cpp's repacked-weight arithmetic: per output, integer sums of
    /// `scale × Σ q4·q8` and `min × Σ q8` per 64 values (a full group of `ROWS` = 4 rows,
    /// `ggml_gemm_q4_K_8x8_q8_K`) or per 256 (the rest, `ggml_gemv_q4_K_8x8_q8_K`), each
    /// folded in by FMA with `d_w·d_x` and `dmin_w·d_x`; the result is their difference.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4k(w: &[u8], xq: &Q8K, i0: usize, rows: usize, nb: usize) -> [f32; ROWS] {
        debug_assert!(w.len() >= nb * Q4_K_BYTES && xq.d.len() >= (i0 + rows) * nb);
        // The gemm order below transposes a full group of rows as four lanes.
        const _: () = assert!(ROWS == 4);
        let m4 = _mm256_set1_epi8(0x0f);
        let per_64 = rows == ROWS;
        let mut acc = [0f32; ROWS];
        let mut acc_min = [0f32; ROWS];
        let (mut acc4, mut acc_min4) = (_mm_setzero_ps(), _mm_setzero_ps());
        let wp = w.as_ptr();
        let qp = xq.qs.as_ptr();
        let bp = xq.bsums.as_ptr();
        for b in 0..nb {
            let blk = wp.add(b * Q4_K_BYTES);
            let dw = f16_at(blk);
            let dmin = f16_at(blk.add(2));
            let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
            // Sub-block 2j holds the low nibbles of bytes 32j.., sub-block 2j + 1 the high.
            let mut v = [_mm256_setzero_si256(); 8];
            let mut s = [_mm256_setzero_si256(); 8];
            for j in 0..4 {
                let bits = _mm256_loadu_si256(blk.add(16 + 32 * j) as *const __m256i);
                v[2 * j] = _mm256_and_si256(bits, m4);
                v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                s[2 * j] = _mm256_set1_epi16(sc[2 * j] as i16);
                s[2 * j + 1] = _mm256_set1_epi16(sc[2 * j + 1] as i16);
            }
            // Each minimum twice, against the two sums of 16 of its sub-block.
            let mut mins = [0u8; 16];
            for (i, m) in mins.iter_mut().enumerate() {
                *m = mn[i / 2];
            }
            let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(mins.as_ptr() as *const __m128i));
            let mut isum = [_mm_setzero_ps(); ROWS];
            let mut imin = [_mm_setzero_ps(); ROWS];
            let mut dd = [0f32; ROWS];
            let mut dm = [0f32; ROWS];
            for r in 0..rows {
                let xb = (i0 + r) * nb + b;
                let q8 = qp.add(xb * QK_K);
                let mut p = [_mm256_setzero_si256(); 4];
                for (sb, p) in p.iter_mut().enumerate() {
                    let y0 = _mm256_loadu_si256(q8.add(64 * sb) as *const __m256i);
                    let y1 = _mm256_loadu_si256(q8.add(64 * sb + 32) as *const __m256i);
                    let a = _mm256_madd_epi16(_mm256_maddubs_epi16(v[2 * sb], y0), s[2 * sb]);
                    let c =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(v[2 * sb + 1], y1), s[2 * sb + 1]);
                    *p = _mm256_add_epi32(a, c);
                }
                // Lane i: min_i × (sum of sub-block i's 32 activation values).
                let bsums = _mm256_loadu_si256(bp.add(xb * 16) as *const __m256i);
                let mv = _mm256_madd_epi16(bsums, mins);
                let dy = *xq.d.get_unchecked(xb);
                dd[r] = dw * dy;
                dm[r] = dmin * dy;
                if per_64 {
                    // [Σp0, Σp1, Σp2, Σp3] and the minimums' sums per 64 values.
                    let h = _mm256_hadd_epi32(
                        _mm256_hadd_epi32(p[0], p[1]),
                        _mm256_hadd_epi32(p[2], p[3]),
                    );
                    let h =
                        _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
                    let hm = _mm256_hadd_epi32(mv, mv);
                    let hm = _mm256_castsi256_si128(_mm256_permute4x64_epi64(hm, 0b00_00_10_00));
                    isum[r] = _mm_cvtepi32_ps(h);
                    imin[r] = _mm_cvtepi32_ps(hm);
                } else {
                    let all = _mm256_add_epi32(
                        _mm256_add_epi32(p[0], p[1]),
                        _mm256_add_epi32(p[2], p[3]),
                    );
                    acc[r] = (hsum_i32(all) as f32).mul_add(dd[r], acc[r]);
                    acc_min[r] = (hsum_i32(mv) as f32).mul_add(dm[r], acc_min[r]);
                }
            }
            if per_64 {
                // Rows to lanes: column sb holds the four rows' sums of 64 values sb, folded in
                // by one FMA per sb for all four rows (lane-wise, the same bits as scalar).
                let isum = transpose4(isum);
                let imin = transpose4(imin);
                let dd = _mm_loadu_ps(dd.as_ptr());
                let dm = _mm_loadu_ps(dm.as_ptr());
                for sb in 0..4 {
                    acc4 = _mm_fmadd_ps(isum[sb], dd, acc4);
                    acc_min4 = _mm_fmadd_ps(imin[sb], dm, acc_min4);
                }
            }
        }
        if per_64 {
            let mut out = [0f32; ROWS];
            _mm_storeu_ps(out.as_mut_ptr(), _mm_sub_ps(acc4, acc_min4));
            return out;
        }
        let mut out = [0f32; ROWS];
        for r in 0..rows {
            out[r] = acc[r] - acc_min[r];
        }
        out
    }

    /// A 4 × 4 transpose: row `r` lane `c` to row `c` lane `r`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose4(m: [__m128; 4]) -> [__m128; 4] {
        let t0 = _mm_unpacklo_ps(m[0], m[1]);
        let t1 = _mm_unpacklo_ps(m[2], m[3]);
        let t2 = _mm_unpackhi_ps(m[0], m[1]);
        let t3 = _mm_unpackhi_ps(m[2], m[3]);
        [
            _mm_movelh_ps(t0, t1),
            _mm_movehl_ps(t1, t0),
            _mm_movelh_ps(t2, t3),
            _mm_movehl_ps(t3, t2),
        ]
    }

    /// Byte shuffles that spread scales `2c` and `2c + 1` over the two halves of chunk `c`'s
    /// sixteen 16-bit products (ggml's `get_scale_shuffle`).
    const SCALE_SHUFFLE: [[u8; 16]; 8] = {
        let mut t = [[0u8; 16]; 8];
        let mut c = 0;
        while c < 8 {
            let mut e = 0;
            while e < 16 {
                t[c][e] = (2 * c + e / 8) as u8;
                e += 1;
            }
            c += 1;
        }
        t
    };

    /// `ggml_vec_dot_q3_K_q8_K` (AVX2), or with `tiled` the tiled matmul's order: values
    /// `low2 − 4·(high bit clear)`, multiplied as two unsigned products and subtracted.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q3k(
        w: &[u8],
        xq: &Q8K,
        i0: usize,
        rows: usize,
        nb: usize,
        tiled: bool,
    ) -> [f32; ROWS] {
        debug_assert!(w.len() >= nb * Q3_K_BYTES && xq.d.len() >= (i0 + rows) * nb);
        let m3 = _mm256_set1_epi8(3);
        let four = _mm256_set1_epi8(4);
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let wp = w.as_ptr();
        let qp = xq.qs.as_ptr();
        for b in 0..nb {
            let blk = wp.add(b * Q3_K_BYTES);
            let dw = f16_at(blk.add(108));
            let scales = q3k_scales(std::slice::from_raw_parts(blk.add(96), 12));
            let scales = _mm_loadu_si128(scales.as_ptr() as *const __m128i);
            let hbits = _mm256_loadu_si256(blk as *const __m256i);
            // Chunk 4j + s (32 values): bits 2s of bytes 32j.. of `qs`, high bit 4j + s.
            let mut low = [_mm256_setzero_si256(); 8];
            let mut high = [_mm256_setzero_si256(); 8];
            for j in 0..2 {
                let bits = _mm256_loadu_si256(blk.add(32 + 32 * j) as *const __m256i);
                for sh in 0..4 {
                    let c = 4 * j + sh;
                    let shifted = match sh {
                        0 => bits,
                        1 => _mm256_srli_epi16(bits, 2),
                        2 => _mm256_srli_epi16(bits, 4),
                        _ => _mm256_srli_epi16(bits, 6),
                    };
                    low[c] = _mm256_and_si256(shifted, m3);
                    let mask = _mm256_set1_epi8(1 << c);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, mask), mask);
                    high[c] = _mm256_andnot_si256(set, four);
                }
            }
            let mut s = [_mm256_setzero_si256(); 8];
            for (c, s) in s.iter_mut().enumerate() {
                let shuf = _mm_loadu_si128(SCALE_SHUFFLE[c].as_ptr() as *const __m128i);
                *s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
            }
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let xb = (i0 + r) * nb + b;
                let q8 = qp.add(xb * QK_K);
                let mut sumi = _mm256_setzero_si256();
                for c in 0..8 {
                    let y = _mm256_loadu_si256(q8.add(32 * c) as *const __m256i);
                    let p = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(low[c], y),
                        _mm256_maddubs_epi16(high[c], y),
                    );
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s[c]));
                }
                let dy = *xq.d.get_unchecked(xb);
                if tiled {
                    let y = (hsum_i32(sumi) as f32 * dw).mul_add(dy, _mm256_cvtss_f32(*acc));
                    *acc = _mm256_set1_ps(y);
                } else {
                    let d = _mm256_set1_ps(dy * dw);
                    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), *acc);
                }
            }
        }
        let mut out = [0f32; ROWS];
        for r in 0..rows {
            out[r] = if tiled {
                _mm256_cvtss_f32(acc[r])
            } else {
                hsum(acc[r])
            };
        }
        out
    }

    /// `ggml_vec_dot_q5_K_q8_K` (AVX2), or with `tiled` the tiled matmul's order (see the
    /// module notes).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q5k(
        w: &[u8],
        xq: &Q8K,
        i0: usize,
        rows: usize,
        nb: usize,
        tiled: bool,
    ) -> [f32; ROWS] {
        debug_assert!(w.len() >= nb * Q5_K_BYTES && xq.d.len() >= (i0 + rows) * nb);
        let m4 = _mm256_set1_epi8(0x0f);
        let sixteen = _mm256_set1_epi8(16);
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let mut summs = [0f32; ROWS];
        let wp = w.as_ptr();
        let qp = xq.qs.as_ptr();
        for b in 0..nb {
            let blk = wp.add(b * Q5_K_BYTES);
            let dw = f16_at(blk);
            let dminw = f16_at(blk.add(2));
            let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
            let hbits = _mm256_loadu_si256(blk.add(16) as *const __m256i);
            // Sub-block 2j: low nibbles of bytes 32j.. plus bit 2j of `hbits` as 16; 2j + 1:
            // the high nibbles plus bit 2j + 1.
            let mut v = [_mm256_setzero_si256(); 8];
            let mut s = [_mm256_setzero_si256(); 8];
            for j in 0..4 {
                let bits = _mm256_loadu_si256(blk.add(48 + 32 * j) as *const __m256i);
                let mut high = [_mm256_setzero_si256(); 2];
                for (h, i) in high.iter_mut().zip([2 * j, 2 * j + 1]) {
                    let mask = _mm256_set1_epi8(1 << i);
                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, mask), mask);
                    *h = _mm256_and_si256(set, sixteen);
                }
                v[2 * j] = _mm256_or_si256(_mm256_and_si256(bits, m4), high[0]);
                v[2 * j + 1] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), high[1]);
                s[2 * j] = _mm256_set1_epi16(sc[2 * j] as i16);
                s[2 * j + 1] = _mm256_set1_epi16(sc[2 * j + 1] as i16);
            }
            for r in 0..rows {
                let xb = (i0 + r) * nb + b;
                let q8 = qp.add(xb * QK_K);
                let mut sumi = _mm256_setzero_si256();
                for j in 0..8 {
                    let y = _mm256_loadu_si256(q8.add(32 * j) as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(v[j], y), s[j]);
                    sumi = _mm256_add_epi32(sumi, p);
                }
                let bs = xq.bsums.get_unchecked(xb * 16..xb * 16 + 16);
                let imin: i32 = (0..8)
                    .map(|j| mn[j] as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32))
                    .sum();
                let dy = *xq.d.get_unchecked(xb);
                if tiled {
                    let part = (imin as f32).mul_add(-dminw, hsum_i32(sumi) as f32 * dw);
                    let y = part.mul_add(dy, _mm256_cvtss_f32(acc[r]));
                    acc[r] = _mm256_set1_ps(y);
                } else {
                    let d = _mm256_set1_ps(dy * dw);
                    acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r]);
                    summs[r] = (-dy * dminw).mul_add(imin as f32, summs[r]);
                }
            }
        }
        let mut out = [0f32; ROWS];
        for r in 0..rows {
            out[r] = if tiled {
                _mm256_cvtss_f32(acc[r])
            } else {
                hsum(acc[r]) + summs[r]
            };
        }
        out
    }

    /// Horizontal sum of eight i32 lanes (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// `ggml_vec_dot_q6_K_q8_K` (AVX2): per super-block, eight lanes of
    /// `Σ scale·q6·q8 − 32·Σ scale·bsum` in integers, `acc = fma(d_x·d_w, lanes, acc)`,
    /// `hsum_float_8(acc)` at the end. `tiled`: the tiled matmul's order instead, the
    /// lanes summed to one integer and `y = fma(isum·d_w, d_x, y)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q6k(
        w: &[u8],
        xq: &Q8K,
        i0: usize,
        rows: usize,
        nb: usize,
        tiled: bool,
    ) -> [f32; ROWS] {
        debug_assert!(w.len() >= nb * Q6_K_BYTES && xq.d.len() >= (i0 + rows) * nb);
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = [_mm256_setzero_ps(); ROWS];
        let wp = w.as_ptr();
        let qp = xq.qs.as_ptr();
        let bp = xq.bsums.as_ptr();
        for b in 0..nb {
            let blk = wp.add(b * Q6_K_BYTES);
            let dw = f16_at(blk.add(208));
            let mut q = [_mm256_setzero_si256(); 8];
            for half in 0..2 {
                let bits1 = _mm256_loadu_si256(blk.add(64 * half) as *const __m256i);
                let bits2 = _mm256_loadu_si256(blk.add(64 * half + 32) as *const __m256i);
                let bh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
                let h0 = _mm256_slli_epi16(_mm256_and_si256(bh, m3), 4);
                let h1 = _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(12)), 2);
                let h2 = _mm256_and_si256(bh, _mm256_set1_epi8(48));
                let h3 = _mm256_srli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(-64)), 2);
                q[4 * half] = _mm256_or_si256(_mm256_and_si256(bits1, m15), h0);
                q[4 * half + 1] = _mm256_or_si256(_mm256_and_si256(bits2, m15), h1);
                q[4 * half + 2] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits1, 4), m15), h2);
                q[4 * half + 3] =
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits2, 4), m15), h3);
            }
            let scales = _mm_loadu_si128(blk.add(192) as *const __m128i);
            let scales_16 = _mm256_cvtepi8_epi16(scales);
            let mut s = [_mm256_setzero_si256(); 8];
            for (c, s) in s.iter_mut().enumerate() {
                let shuf = _mm_loadu_si128(SCALE_SHUFFLE[c].as_ptr() as *const __m128i);
                *s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
            }
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let xb = (i0 + r) * nb + b;
                let q8 = qp.add(xb * QK_K);
                let bsums = _mm256_loadu_si256(bp.add(xb * 16) as *const __m256i);
                let sub = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales_16), 5);
                let mut sumi = _mm256_setzero_si256();
                for c in 0..8 {
                    let y = _mm256_loadu_si256(q8.add(32 * c) as *const __m256i);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[c], y), s[c]);
                    sumi = _mm256_add_epi32(sumi, p);
                }
                let sumi = _mm256_sub_epi32(sumi, sub);
                let dy = *xq.d.get_unchecked(xb);
                if tiled {
                    // Lane 0 of `acc` carries the running sum.
                    let y = (hsum_i32(sumi) as f32 * dw).mul_add(dy, _mm256_cvtss_f32(*acc));
                    *acc = _mm256_set1_ps(y);
                } else {
                    let d = _mm256_set1_ps(dy * dw);
                    *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), *acc);
                }
            }
        }
        let mut out = [0f32; ROWS];
        for r in 0..rows {
            out[r] = if tiled {
                _mm256_cvtss_f32(acc[r])
            } else {
                hsum(acc[r])
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::super::{f16_to_f32, WeightFormat};
    use super::*;

    #[test]
    fn q8k_rounds_half_to_even_and_sums_per_16() {
        // The largest magnitude is -127, so iscale = 1 and the values are the inputs rounded.
        let mut x = vec![0f32; QK_K];
        x[0] = 2.5;
        x[1] = 3.5;
        x[2] = -0.5;
        x[3] = 126.6;
        x[17] = -127.0;
        let q = quantize_q8k(&x);
        assert_eq!(q.d, vec![1.0]);
        assert_eq!(&q.qs[..4], &[2, 4, 0, 127]);
        assert_eq!(q.qs[17], -127);
        assert_eq!(q.bsums[0], 2 + 4 + 127);
        assert_eq!(q.bsums[1], -127);
        // An all-zero block: scale 0, values 0.
        let q = quantize_q8k(&[0.0; QK_K]);
        assert_eq!((q.d[0], q.qs.iter().all(|&v| v == 0)), (0.0, true));
    }

    // Weights quantized by candle (ggml's quantizer) and activations: the Q4_0 tests' cases.
    use super::super::q4_0::tests::case;

    /// Within the activations' 8-bit rounding of the f32 product of the dequantized
    /// weights: per block at most Σ|w| · d/2 (plus f32 rounding).
    fn check_against_dequantized(dtype: GgmlDType, format: WeightFormat) {
        let (n, k, m) = (24, 512, 6);
        let (bytes, deq, x) = case(dtype, n, k, m);
        if !super::super::available() {
            assert!(super::super::matmul_t(&x, m, k, &bytes, n, format).is_none());
            return;
        }
        let y = super::super::matmul_t(&x, m, k, &bytes, n, format).unwrap();
        let xq = quantize_q8k(&x);
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut bound) = (0f64, 0f64);
                for b in 0..k / QK_K {
                    let mut wsum = 0f64;
                    for e in b * QK_K..(b + 1) * QK_K {
                        let wv = deq[j * k + e] as f64;
                        exact += wv * x[i * k + e] as f64;
                        wsum += wv.abs();
                    }
                    bound += wsum * xq.d[i * (k / QK_K) + b].abs() as f64 * 0.5;
                }
                let got = y[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= bound * 1.001 + 1e-4,
                    "{format:?} ({i}, {j}): {got} vs {exact} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn q4_k_is_the_dequantized_product_within_activation_rounding() {
        check_against_dequantized(GgmlDType::Q4K, WeightFormat::Q4K);
    }

    #[test]
    fn q3_k_is_the_dequantized_product_within_activation_rounding() {
        check_against_dequantized(GgmlDType::Q3K, WeightFormat::Q3K);
    }

    #[test]
    fn q5_k_is_the_dequantized_product_within_activation_rounding() {
        check_against_dequantized(GgmlDType::Q5K, WeightFormat::Q5K);
    }

    #[test]
    fn q6_k_is_the_dequantized_product_within_activation_rounding() {
        check_against_dequantized(GgmlDType::Q6K, WeightFormat::Q6K);
    }

    /// Q4_K in scalar form: `per_64` is the gemm order (full groups of 4 rows), else gemv.
    fn reference_q4k(w: &[u8], xq: &Q8K, row: usize, nb: usize, per_64: bool) -> f32 {
        let (mut acc, mut acc_min) = (0f32, 0f32);
        for b in 0..nb {
            let blk = &w[b * Q4_K_BYTES..(b + 1) * Q4_K_BYTES];
            let dw = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let dmin = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            let (sc, mn) = q4k_scales_mins(&blk[4..16]);
            let xb = row * nb + b;
            let q8 = &xq.qs[xb * QK_K..(xb + 1) * QK_K];
            let bs = &xq.bsums[xb * 16..(xb + 1) * 16];
            let (mut isum, mut imin) = ([0i32; 4], [0i32; 4]);
            for j in 0..8 {
                let dot: i32 = (0..32)
                    .map(|l| {
                        let byte = blk[16 + 32 * (j / 2) + l];
                        let v = if j % 2 == 0 { byte & 15 } else { byte >> 4 };
                        v as i32 * q8[32 * j + l] as i32
                    })
                    .sum();
                isum[j / 2] += sc[j] as i32 * dot;
                imin[j / 2] += mn[j] as i32 * (bs[2 * j] as i32 + bs[2 * j + 1] as i32);
            }
            let (dd, dm) = (dw * xq.d[xb], dmin * xq.d[xb]);
            if per_64 {
                for sb in 0..4 {
                    acc = (isum[sb] as f32).mul_add(dd, acc);
                    acc_min = (imin[sb] as f32).mul_add(dm, acc_min);
                }
            } else {
                acc = (isum.iter().sum::<i32>() as f32).mul_add(dd, acc);
                acc_min = (imin.iter().sum::<i32>() as f32).mul_add(dm, acc_min);
            }
        }
        acc - acc_min
    }

    /// Q6_K in scalar form: `ggml_vec_dot_q6_K_q8_K`'s lanes, or the tiled matmul's order.
    fn reference_q6k(w: &[u8], xq: &Q8K, row: usize, nb: usize, tiled: bool) -> f32 {
        let mut acc = [0f32; 8];
        let mut y = 0f32;
        for b in 0..nb {
            let blk = &w[b * Q6_K_BYTES..(b + 1) * Q6_K_BYTES];
            let dw = f16_to_f32(u16::from_le_bytes([blk[208], blk[209]]));
            let sc = |i: usize| blk[192 + i] as i8 as i32;
            let value = |v: usize| -> i32 {
                let (half, c, l) = (v / 128, (v % 128) / 32, v % 32);
                let ql = blk[64 * half + 32 * (c % 2) + l];
                let low = if c < 2 { ql & 15 } else { ql >> 4 };
                let high = (blk[128 + 32 * half + l] >> (2 * c)) & 3;
                (low | (high << 4)) as i32
            };
            let xb = row * nb + b;
            let q8 = &xq.qs[xb * QK_K..(xb + 1) * QK_K];
            let bs = &xq.bsums[xb * 16..(xb + 1) * 16];
            if tiled {
                let isum: i32 = (0..QK_K)
                    .map(|v| sc(v / 16) * (value(v) - 32) * q8[v] as i32)
                    .sum();
                y = (isum as f32 * dw).mul_add(xq.d[xb], y);
                continue;
            }
            for (lane, a) in acc.iter_mut().enumerate() {
                let mut s = 0i32;
                for c in 0..8 {
                    for e in 4 * lane..4 * lane + 4 {
                        s += sc(2 * c + lane / 4) * value(32 * c + e) * q8[32 * c + e] as i32;
                    }
                }
                s -= 32
                    * (bs[2 * lane] as i32 * sc(2 * lane)
                        + bs[2 * lane + 1] as i32 * sc(2 * lane + 1));
                *a = (xq.d[xb] * dw).mul_add(s as f32, *a);
            }
        }
        if tiled {
            return y;
        }
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
    }

    /// Row counts the kernels are checked at: every count up to one more than a group of
    /// the 512-bit kernels, and a few spanning several groups.
    const ROW_COUNTS: [usize; 20] = [
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 33, 64, 71,
    ];

    /// Every output of an `m`-row product equals its scalar form, and rows that take the same
    /// path in a batch as alone (Q4_K: outside a full group of 4; Q6_K: under 8 rows) give
    /// the same bits alone. Both kernel sets: 4 rows on 256-bit registers and (with AVX-512
    /// VNNI) 16 on 512-bit ones.
    #[test]
    fn kernels_equal_their_scalar_forms_for_any_row_count() {
        // 24 weight rows (Q4_K takes these kernels only for multiples of 8): three tiles of
        // the 512-bit kernels' 8 columns.
        let (n, k) = (24, 512);
        let nb = k / QK_K;
        let most = ROW_COUNTS[ROW_COUNTS.len() - 1];
        for (dtype, format, bytes) in [
            (GgmlDType::Q4K, WeightFormat::Q4K, Q4_K_BYTES),
            (GgmlDType::Q6K, WeightFormat::Q6K, Q6_K_BYTES),
        ] {
            let (w, _, x) = case(dtype, n, k, most);
            if !super::super::available() {
                assert!(super::super::matmul_t(&x, most, k, &w, n, format).is_none());
                continue;
            }
            for (m, wide) in ROW_COUNTS.iter().flat_map(|&m| [(m, false), (m, true)]) {
                let y = product(&x[..m * k], m, k, &w, n, format, wide).unwrap();
                let xq = quantize_q8k(&x[..m * k]);
                for i in 0..m {
                    let full_group = i < m - m % 4;
                    for j in 0..n {
                        let wrow = &w[j * nb * bytes..(j + 1) * nb * bytes];
                        let want = match format {
                            WeightFormat::Q4K => reference_q4k(wrow, &xq, i, nb, full_group),
                            _ => reference_q6k(wrow, &xq, i, nb, m >= TILED_MIN_ROWS),
                        };
                        assert_eq!(
                            y[i * n + j].to_bits(),
                            want.to_bits(),
                            "{format:?} m={m} wide={wide} ({i}, {j})"
                        );
                    }
                    let same_path = match format {
                        WeightFormat::Q4K => !full_group,
                        _ => m < TILED_MIN_ROWS,
                    };
                    if same_path {
                        let alone =
                            super::super::matmul_t(&x[i * k..(i + 1) * k], 1, k, &w, n, format)
                                .unwrap();
                        assert_eq!(
                            &alone[..],
                            &y[i * n..(i + 1) * n],
                            "{format:?} m={m} wide={wide} row {i}"
                        );
                    }
                }
            }
        }
    }

    /// The row-lane kernels ([`super::super::kwide`]: AVX-512 VNNI or AVX2, whichever this
    /// CPU runs) give every output the same bits as the 4-row ones (which
    /// `tests/qmatmul_kquants.rs` checks against llama.cpp), for all four K-quants, any row
    /// count, several super-blocks per row and a column count that leaves a partial tile;
    /// activations with an all-zero super-block and extreme values included.
    #[test]
    fn wide_kernels_equal_the_4_row_kernels_for_any_row_count() {
        if !super::super::available() {
            return;
        }
        // Which of the two kernel sets (AVX-512 VNNI or AVX2) this CPU runs.
        eprintln!("kernel level: {:?}", super::super::level());
        let (n, k) = (27, 768);
        let most = ROW_COUNTS[ROW_COUNTS.len() - 1];
        for (dtype, format) in [
            (GgmlDType::Q4K, WeightFormat::Q4K),
            (GgmlDType::Q5K, WeightFormat::Q5K),
            (GgmlDType::Q6K, WeightFormat::Q6K),
            (GgmlDType::Q3K, WeightFormat::Q3K),
        ] {
            // Q4_K is multiplied here only for matrices of 8k rows (llama.cpp's repacking).
            let n = if format == WeightFormat::Q4K { 24 } else { n };
            let (w, _, mut x) = case(dtype, n, k, most);
            // Row 1: a zero super-block; row 2: one huge value (every other value rounds
            // to 0); row 3: all values at ±max (sums of 16 at their extremes).
            x[k..k + QK_K].fill(0.0);
            x[2 * k + 300] = 1e6;
            for (e, v) in x[3 * k..4 * k].iter_mut().enumerate() {
                *v = if e % 3 == 0 { -4.0 } else { 4.0 };
            }
            for &m in &ROW_COUNTS {
                let x = &x[..m * k];
                let narrow = product(x, m, k, &w, n, format, false).unwrap();
                let wide = product(x, m, k, &w, n, format, true).unwrap();
                for (e, (a, b)) in narrow.iter().zip(&wide).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{format:?} m={m} ({}, {}): {a} vs {b}",
                        e / n,
                        e % n
                    );
                }
            }
        }
    }
}
