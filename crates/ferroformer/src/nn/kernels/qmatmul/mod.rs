//! CPU products of f32 activations with Q4_1, Q5_0, Q5_1 and Q8_0 weight matrices (here) and the
//! K-quants ([`kquants`]: Q4_K, Q6_K, ...), with llama.cpp's arithmetic.
//!
//! Each activation row is quantized to 8 bits per block of 32 (Q8_1 for Q4_1 weights, Q8_0
//! for Q5_0 and Q8_0 weights), and every output is an integer dot product per block scaled and
//! summed in f32. The model is chaotic in that rounding step: a change in the last bit of
//! an activation can flip its 8-bit rounding, and enough flips move the logits. So the
//! rounding, the f16 conversions, and the order of every float operation follow ggml's x86
//! code (`quantize_row_q8_1`, `ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q5_0_q8_0`,
//! `ggml_vec_dot_q8_0_q8_0`) exactly:
//! each output is bit for bit what llama.cpp computes for the same inputs.
//!
//! The kernels run on AVX2 + FMA + F16C, with `vpdpbusd` where AVX-512 VNNI is present
//! (picked at run time; `FERROFORMER_NO_VNNI=1` keeps AVX2 for comparisons); elsewhere the
//! caller falls back to candle's quantized matmul. Work is split over output columns with
//! rayon, so the result does not depend on the thread count. A single activation row (a
//! decoding step) runs on 256-bit registers; with AVX-512 VNNI, two or more rows (batched
//! decoding, prompts) share each unpacked weight block in groups of 16 on 512-bit registers
//! ([`wide`], `FERROFORMER_NO_WIDE=1` to compare), else four at a time (Q5_0 and Q4_1 from
//! 5 rows: eight at a time, one row per lane, [`lanes`]). Every path gives the same bits
//! per output. candle's Q4_1 product is scalar code behind a spinning thread pool, about a
//! fifth of the single-row speed here.

use rayon::prelude::*;

use super::SendPtr;

mod kquants;
mod kwide;
mod lanes;
mod q2_k;
mod q4_0;
#[cfg(target_arch = "x86_64")]
mod single;
mod wide;

/// Bytes of one Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles.
const Q4_1_BYTES: usize = 20;
/// Bytes of one Q8_0 block: f16 scale, 32 signed bytes.
const Q8_0_BYTES: usize = 34;
/// Bytes of one Q5_0 block: f16 scale, 32 fifth bits, 16 bytes of low nibbles.
const Q5_0_BYTES: usize = 22;
/// Bytes of one Q5_1 block: f16 scale, f16 minimum, 32 fifth bits, 16 bytes of nibbles.
const Q5_1_BYTES: usize = 24;
/// Values per block.
const QK: usize = 32;

/// Bytes ahead of the current weight block that the one-row loops of `single.rs` ask the
/// cache for. The weight rows are one sequential stream, but the hardware prefetcher alone left a
/// 262144 × 640 Q8_0 product (Gemma 3's LM head) at about 9.3 ms against 6.6 ms with this
/// (medians of 6 alternating runs, AVX2 Zen 3, 2 threads; Q4_1 7.5 against 6.4 ms; Q5_0,
/// bound by its bit unpacking, unchanged). The same prefetch in the one-row K-quant
/// kernels made them slower (65536 × 2048: Q4_K 7.4 → 9.1 ms, Q6_K 7.0 → 12.5 ms).
pub(super) const WEIGHT_PREFETCH: usize = 2048;

/// The weight formats these kernels serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightFormat {
    /// 4-bit values (`q - 8`) with a scale per block ([`q4_0`]).
    Q4_0,
    /// Super-blocks of 256: 2-bit values, 4-bit scales and minimums per 16 ([`q2_k`]).
    Q2K,
    /// 4-bit values with a scale and a minimum per block.
    Q4_1,
    /// 8-bit values with a scale per block.
    Q8_0,
    /// 5-bit values (`q - 16`) with a scale per block.
    Q5_0,
    /// 5-bit values with a scale and a minimum per block.
    Q5_1,
    /// Super-blocks of 256: 3-bit values (`q - 4`), 6-bit scales per 16.
    Q3K,
    /// Super-blocks of 256: 4-bit values, 6-bit scales and minimums per 32.
    Q4K,
    /// Super-blocks of 256: 5-bit values, 6-bit scales and minimums per 32.
    Q5K,
    /// Super-blocks of 256: 6-bit values (`q - 32`), 8-bit scales per 16.
    Q6K,
}

/// IEEE half to f32 (exact).
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    if exp == 0 {
        // Zero or subnormal: man × 2^-24, exact in f32.
        let v = man as f32 * (1.0 / 16_777_216.0);
        return if sign != 0 { -v } else { v };
    }
    let bits = if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// f32 to half as ggml's CPU code does it (`ggml_compute_fp32_to_fp16`, a bit-trick
/// rounding whose first multiply-add GCC fuses into one FMA), so that scales round alike.
#[inline(always)]
fn f32_to_f16_ggml(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000);
    let scale_to_zero = f32::from_bits(0x0880_0000);
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xff00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    let magic = f32::from_bits((bias >> 1) + 0x0780_0000);
    let base = (f.abs() * scale_to_inf).mul_add(scale_to_zero, magic);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7c00;
    let mantissa_bits = bits & 0x0000_0fff;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16)
        | if shl1_w > 0xff00_0000 {
            0x7e00
        } else {
            nonsign
        }) as u16
}

/// One activation row quantized to 8-bit blocks: values, the scale of each block (already
/// rounded through f16, as ggml stores it) and, for Q8_1, `scale × Σ values` (also via f16).
struct QuantizedRows {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// ggml's `quantize_row_q8_1` / `quantize_row_q8_0` (x86): per block of 32, `d = max|x| / 127`,
/// values `round_ties_even(x × (127 / max|x|))`, and for Q8_1 `s = f16(d × Σ q)`.
fn quantize_rows(x: &[f32], with_sums: bool) -> QuantizedRows {
    let blocks = x.len() / QK;
    let mut out = QuantizedRows {
        qs: vec![0; x.len()],
        d: vec![0.0; blocks],
        s: if with_sums {
            vec![0.0; blocks]
        } else {
            Vec::new()
        },
    };
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 and FMA are present; the same arithmetic, rounded by instructions.
        unsafe { x86::quantize_rows(x, &mut out, with_sums) };
        return out;
    }
    quantize_blocks(x, &mut out, with_sums);
    out
}

#[inline(always)]
fn quantize_blocks(x: &[f32], out: &mut QuantizedRows, with_sums: bool) {
    for b in 0..x.len() / QK {
        let xs = &x[b * QK..(b + 1) * QK];
        // max |x| in eight lanes, then across them: `f32::max` of non-negative values (NaN
        // ignored) is associative and commutative, so this is the serial fold's value, and
        // it vectorizes (the serial fold is a chain of 32 dependent `maxss`, most of the
        // quantizer's time).
        let mut lanes = [0f32; 8];
        for eight in xs.chunks_exact(8) {
            for (m, v) in lanes.iter_mut().zip(eight) {
                *m = m.max(v.abs());
            }
        }
        let max = lanes.iter().fold(0f32, |m, &v| m.max(v));
        let d = max / 127.0;
        let id = if max != 0.0 { 127.0 / max } else { 0.0 };
        let mut sum = 0i32;
        for (q, v) in out.qs[b * QK..(b + 1) * QK].iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        out.d[b] = f16_to_f32(f32_to_f16_ggml(d));
        if with_sums {
            out.s[b] = f16_to_f32(f32_to_f16_ggml(sum as f32 * d));
        }
    }
}

/// Which x86 kernels this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// AVX2 + FMA: byte products by `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// AVX-512 F + VNNI: one `vpdpbusd` (the same integer sums) on 256-bit registers for a
    /// single row, on 512-bit registers for groups of rows ([`wide`]).
    Vnni,
}

fn level() -> Option<Level> {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Option<Level>> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            use std::arch::is_x86_feature_detected as has;
            if !(has!("avx2") && has!("fma") && has!("f16c")) {
                None
            } else if std::env::var_os("FERROFORMER_NO_VNNI").is_none()
                && has!("avx512f")
                && has!("avx512vnni")
                && has!("avx512vl")
            {
                Some(Level::Vnni)
            } else {
                Some(Level::Avx2)
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether the fast kernels can run on this CPU.
pub(crate) fn available() -> bool {
    level().is_some()
}

/// Activation rows one kernel call reads together (each weight block is unpacked once).
const ROWS: usize = 4;

/// `x W^T` for `x` of `m × k` (row-major) and `W` of `n × k` in `format` blocks (`w` holds
/// its bytes, row after row). `None` when the kernels cannot run here.
pub(crate) fn matmul_t(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    format: WeightFormat,
) -> Option<Vec<f32>> {
    let level = level()?;
    if x.len() != m * k {
        return None;
    }
    match format {
        WeightFormat::Q4_0 => return q4_0::matmul_t(x, m, k, w, n),
        WeightFormat::Q2K => return q2_k::matmul_t(x, m, k, w, n),
        _ => {}
    }
    if matches!(
        format,
        WeightFormat::Q3K | WeightFormat::Q4K | WeightFormat::Q5K | WeightFormat::Q6K
    ) {
        return kquants::matmul_t(x, m, k, w, n, format);
    }
    if !k.is_multiple_of(QK) {
        return None;
    }
    let block_bytes = match format {
        WeightFormat::Q4_1 => Q4_1_BYTES,
        WeightFormat::Q8_0 => Q8_0_BYTES,
        WeightFormat::Q5_0 => Q5_0_BYTES,
        WeightFormat::Q5_1 => Q5_1_BYTES,
        WeightFormat::Q3K
        | WeightFormat::Q4K
        | WeightFormat::Q5K
        | WeightFormat::Q6K
        | WeightFormat::Q4_0
        | WeightFormat::Q2K => {
            unreachable!("handled above")
        }
    };
    let nb = k / QK;
    let row_bytes = nb * block_bytes;
    if w.len() != n * row_bytes {
        return None;
    }
    let path = if level == Level::Vnni && m >= 2 && wide_enabled() {
        Path::Wide
    } else if level == Level::Avx2
        && matches!(format, WeightFormat::Q5_0 | WeightFormat::Q4_1)
        && m >= lanes::MIN_ROWS
        && wide_enabled()
    {
        Path::Lanes
    } else {
        Path::Rows4(level)
    };
    Some(matmul_on(x, m, w, n, format, nb, path))
}

/// Which kernels a product runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// One weight row against up to [`ROWS`] activation rows on 256-bit registers.
    Rows4(Level),
    /// One weight row against up to [`wide::TILE`] activation rows on 512-bit registers
    /// (needs [`Level::Vnni`]).
    Wide,
    /// Q5_0 and Q4_1: one weight row against groups of 8 activation rows, one lane per row,
    /// on AVX2 ([`lanes`]).
    Lanes,
}

/// Whether groups of rows take the 512-bit kernels where the CPU has them (and the
/// row-lane ones, [`lanes`] and [`kwide`], elsewhere); `FERROFORMER_NO_WIDE=1` keeps the
/// 4-row kernels (for A/B comparisons: same bits).
fn wide_enabled() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| std::env::var_os("FERROFORMER_NO_WIDE").is_none())
}

/// [`matmul_t`] on the kernels of `path` (checked arguments: `w` holds `n` rows of `nb`
/// blocks of `format`, `x` has `m` rows of `nb · QK` values).
fn matmul_on(
    x: &[f32],
    m: usize,
    w: &[u8],
    n: usize,
    format: WeightFormat,
    nb: usize,
    path: Path,
) -> Vec<f32> {
    let row_bytes = w.len() / n.max(1);
    let xq = quantize_rows(x, matches!(format, WeightFormat::Q4_1 | WeightFormat::Q5_1));
    match path {
        #[cfg(target_arch = "x86_64")]
        Path::Rows4(Level::Avx2) if m == 1 && single::serves(format) && wide_enabled() => {
            // SAFETY: `Level::Avx2` means AVX2, FMA and F16C; `w` holds `n` rows of `nb`
            // blocks of `format` and `xq` one row of `nb` blocks.
            unsafe { single::matmul_row(format, w, n, &xq.qs, &xq.d, &xq.s) }
        }
        Path::Rows4(level) => by_columns(m, n, |j, i0, rows| {
            let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
            dot(level, format, wrow, &xq, i0, rows, nb)
        }),
        Path::Wide => {
            let groups = wide::pack(&xq, m, nb, wide::offset_activations(format));
            drop(xq);
            wide::by_columns(m, n, &groups, |j, g, out| {
                let wrow = &w[j * row_bytes..(j + 1) * row_bytes];
                // SAFETY: `Path::Wide` is taken only on `Level::Vnni` (AVX-512 F + VNNI,
                // AVX2, FMA, F16C); `wrow` holds `nb` blocks and the groups were packed
                // from rows of `nb` blocks with this format's offset.
                unsafe { wide::dot(format, wrow, g, nb, out) }
            })
        }
        Path::Lanes => {
            let groups = lanes::pack(&xq, m, nb, format);
            drop(xq);
            #[cfg(target_arch = "x86_64")]
            {
                debug_assert!(matches!(format, WeightFormat::Q5_0 | WeightFormat::Q4_1));
                // SAFETY: `Path::Lanes` is taken only where `level()` found AVX2, FMA and
                // F16C, for Q5_0 and Q4_1; `w` holds `n` rows of `nb` blocks and the groups
                // were packed for `format` from the `m` rows of `nb` blocks.
                unsafe { lanes::matmul(format, w, n, nb, m, &groups) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = groups;
                unreachable!("`level()` is None off x86")
            }
        }
    }
}

/// Runs `f` on consecutive ranges of `units` output columns (or column groups) over
/// rayon's threads: enough ranges to balance the threads, each of `min..=max` units, long
/// enough that a range's weight rows are reused from cache across the activation rows.
/// Every output is computed by one call whatever the split, so the result does not depend
/// on the thread count.
fn for_column_ranges<F>(units: usize, min: usize, max: usize, f: F)
where
    F: Fn(std::ops::Range<usize>) + Sync,
{
    let threads = rayon::current_num_threads().max(1);
    let chunk = units.div_ceil(threads * 4).clamp(min, max);
    (0..units.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let u0 = c * chunk;
        f(u0..(u0 + chunk).min(units));
    });
}

/// Writes a tile of outputs, `tile[c][r]` for columns `j0..j0 + cols` and rows
/// `i0..i0 + rows`, into the row-major `_ × n` output at `out` (the row-lane kernels' tiles of
/// weight columns by activation rows).
///
/// # Safety
/// Every `(i0 + r, j0 + c)` lies in the output, and no other thread writes those elements
/// meanwhile (each column belongs to one range of [`for_column_ranges`]).
#[cfg(target_arch = "x86_64")]
unsafe fn store_tile<const R: usize>(
    out: &SendPtr,
    n: usize,
    (i0, rows): (usize, usize),
    (j0, cols): (usize, usize),
    tile: &[[f32; R]],
) {
    for r in 0..rows {
        for (c, col) in tile.iter().enumerate().take(cols) {
            // SAFETY: the caller's promise.
            unsafe { *out.get().add((i0 + r) * n + j0 + c) = col[r] };
        }
    }
}

/// The `m × n` output of `f(j, i0, rows)`, which gives column `j` of activation rows
/// `i0..i0 + rows` (`rows <= ROWS`; every group but the last has `ROWS` rows), columns
/// split over the threads by [`for_column_ranges`].
fn by_columns<F>(m: usize, n: usize, f: F) -> Vec<f32>
where
    F: Fn(usize, usize, usize) -> [f32; ROWS] + Sync,
{
    let mut out = vec![0f32; m * n];
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_column_ranges(n, 16, 512, |columns| {
        for i0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - i0);
            for j in columns.clone() {
                let v = f(j, i0, rows);
                for (r, v) in v.iter().enumerate().take(rows) {
                    // SAFETY: (i0 + r, j) lies in the m × n output and each j belongs to
                    // one range, so no two threads write the same element.
                    unsafe { *out_ptr.get().add((i0 + r) * n + j) = *v };
                }
            }
        }
    });
    out
}

/// Dots of one weight row with activation rows `i0..i0 + rows` (`rows <= ROWS`).
#[inline(always)]
fn dot(
    level: Level,
    format: WeightFormat,
    wrow: &[u8],
    xq: &QuantizedRows,
    i0: usize,
    rows: usize,
    nb: usize,
) -> [f32; ROWS] {
    #[cfg(target_arch = "x86_64")]
    {
        let qs = &xq.qs[i0 * nb * QK..(i0 + rows) * nb * QK];
        let d = &xq.d[i0 * nb..(i0 + rows) * nb];
        let s = if xq.s.is_empty() {
            &[][..]
        } else {
            &xq.s[i0 * nb..(i0 + rows) * nb]
        };
        // SAFETY: `level` says which instructions exist; the slices cover `rows` rows of
        // `nb` blocks.
        unsafe {
            match (format, level) {
                (WeightFormat::Q4_1, Level::Vnni) => x86::q4_1_vnni(wrow, qs, d, s, rows, nb),
                (WeightFormat::Q4_1, Level::Avx2) => x86::q4_1_avx2(wrow, qs, d, s, rows, nb),
                (WeightFormat::Q8_0, Level::Vnni) => x86::q8_0_vnni(wrow, qs, d, rows, nb),
                (WeightFormat::Q8_0, Level::Avx2) => x86::q8_0_avx2(wrow, qs, d, rows, nb),
                (WeightFormat::Q5_0, Level::Vnni) => x86::q5_0_vnni(wrow, qs, d, rows, nb),
                (WeightFormat::Q5_0, Level::Avx2) => x86::q5_0_avx2(wrow, qs, d, rows, nb),
                (WeightFormat::Q5_1, Level::Vnni) => x86::q5_1_vnni(wrow, qs, d, s, rows, nb),
                (WeightFormat::Q5_1, Level::Avx2) => x86::q5_1_avx2(wrow, qs, d, s, rows, nb),
                (
                    WeightFormat::Q3K
                    | WeightFormat::Q4K
                    | WeightFormat::Q5K
                    | WeightFormat::Q6K
                    | WeightFormat::Q4_0
                    | WeightFormat::Q2K,
                    _,
                ) => {
                    unreachable!("these formats have their own kernels")
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, format, wrow, xq, i0, rows, nb);
        unreachable!("the kernels run only where `available()`")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{QuantizedRows, Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, QK, ROWS};

    /// ggml's `hsum_float_8`: ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn hsum(acc: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(acc, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(acc));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// IEEE half at `p` to f32 (exact, F16C).
    ///
    /// Written as inline assembly because, from the intrinsics, LLVM sees that only lane 0
    /// is used and inserts the half into whatever register it likes (`vpinsrw x, acc, [p]`),
    /// often a loop's accumulator: a false dependency that chained every block's scale to
    /// the previous block's FMA (the 512-bit kernels ran at a third of their speed).
    /// `vmovd` from a general register writes the whole register.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
        let h = std::ptr::read_unaligned(p as *const u16) as u32;
        let out: __m128;
        std::arch::asm!(
            "vmovd {x}, {h:e}",
            "vcvtph2ps {x}, {x}",
            h = in(reg) h,
            x = out(xmm_reg) out,
            options(pure, nomem, nostack),
        );
        _mm_cvtss_f32(out)
    }

    /// Per-lane sums of four consecutive products of unsigned `a` and signed `b` bytes
    /// (`vpmaddubsw`, then `vpmaddwd` by ones): exact, no saturation for the ranges here
    /// (|a| ≤ 127 or ≤ 15, |b| ≤ 127).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn mul_sum_i32_avx2(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
    }

    /// The same sums with one `vpdpbusd` (AVX-512 VNNI on 256-bit registers), written as
    /// inline assembly: its intrinsic and feature names need a newer Rust than the MSRV.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn mul_sum_i32_vnni(a: __m256i, b: __m256i) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        std::arch::asm!(
            "vpdpbusd {acc}, {a}, {b}",
            acc = inout(ymm_reg) acc,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack),
        );
        acc
    }

    /// [`mul_sum_i32_avx2`] as floats (`mul_sum_us8_pairs_float`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn mul_sum_avx2(a: __m256i, b: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(mul_sum_i32_avx2(a, b))
    }

    /// [`mul_sum_i32_vnni`] as floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mul_sum_vnni(a: __m256i, b: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(mul_sum_i32_vnni(a, b))
    }

    /// ggml's `bytes_from_nibbles_32`: the 16 bytes at `p` as 32 values 0..16, low nibbles
    /// first (values 0..16 of a block), then high nibbles (values 16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
        let tmp = _mm_loadu_si128(p as *const __m128i);
        _mm256_and_si256(
            _mm256_set1_epi8(0x0f),
            _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp),
        )
    }

    /// `ggml_vec_dot_q4_1_q8_1` for one weight row and up to `ROWS` activation rows:
    /// Σ_b d_w·d_x·(Σ q_w q_x) in eight lanes by FMA, reduced by `hsum`, plus Σ_b m_w·s_x by
    /// scalar FMA — per output the same operations in the same order as ggml.
    macro_rules! q4_1_kernel {
        ($name:ident, $features:literal, $mul_sum:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &[u8],
                xq: &[i8],
                xd: &[f32],
                xs: &[f32],
                rows: usize,
                nb: usize,
            ) -> [f32; ROWS] {
                debug_assert!(w.len() >= nb * Q4_1_BYTES && xq.len() >= rows * nb * QK);
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let mut summs = [0f32; ROWS];
                let wp = w.as_ptr();
                let qp = xq.as_ptr();
                for b in 0..nb {
                    let blk = wp.add(b * Q4_1_BYTES);
                    let d0 = f16_at(blk);
                    let m0 = f16_at(blk.add(2));
                    // Low nibbles are values 0..16, high nibbles values 16..32.
                    let qx = bytes_from_nibbles_32(blk.add(4));
                    for r in 0..rows {
                        let xb = r * nb + b;
                        summs[r] = m0.mul_add(*xs.get_unchecked(xb), summs[r]);
                        let d0d1 = _mm256_set1_ps(*xd.get_unchecked(xb) * d0);
                        let qy = _mm256_loadu_si256(qp.add(xb * QK) as *const __m256i);
                        acc[r] = _mm256_fmadd_ps(d0d1, $mul_sum(qx, qy), acc[r]);
                    }
                }
                let mut out = [0f32; ROWS];
                for r in 0..rows {
                    out[r] = hsum(acc[r]) + summs[r];
                }
                out
            }
        };
    }

    /// `ggml_vec_dot_q8_0_q8_0`: signed bytes through the sign trick, then as above.
    macro_rules! q8_0_kernel {
        ($name:ident, $features:literal, $mul_sum:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &[u8],
                xq: &[i8],
                xd: &[f32],
                rows: usize,
                nb: usize,
            ) -> [f32; ROWS] {
                debug_assert!(w.len() >= nb * Q8_0_BYTES && xq.len() >= rows * nb * QK);
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let wp = w.as_ptr();
                let qp = xq.as_ptr();
                for b in 0..nb {
                    let blk = wp.add(b * Q8_0_BYTES);
                    let dw = f16_at(blk);
                    let qx = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                    let ax = _mm256_sign_epi8(qx, qx);
                    for r in 0..rows {
                        let xb = r * nb + b;
                        let d = _mm256_set1_ps(dw * *xd.get_unchecked(xb));
                        let qy = _mm256_loadu_si256(qp.add(xb * QK) as *const __m256i);
                        let sy = _mm256_sign_epi8(qy, qx);
                        acc[r] = _mm256_fmadd_ps(d, $mul_sum(ax, sy), acc[r]);
                    }
                }
                let mut out = [0f32; ROWS];
                for r in 0..rows {
                    out[r] = hsum(acc[r]);
                }
                out
            }
        };
    }

    /// ggml's `bytes_from_bits_32`: byte `j` is 0xff where bit `j` of the 32 bits is set.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
        let x32 = std::ptr::read_unaligned(p as *const u32) as i32;
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32), shuf);
        let bit_mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, bit_mask), _mm256_set1_epi64x(-1))
    }

    /// `ggml_vec_dot_q5_0_q8_0`: the 5-bit values unpacked to signed bytes (`q - 16`), then
    /// the signed products as for Q8_0.
    macro_rules! q5_0_kernel {
        ($name:ident, $features:literal, $mul_sum:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &[u8],
                xq: &[i8],
                xd: &[f32],
                rows: usize,
                nb: usize,
            ) -> [f32; ROWS] {
                debug_assert!(w.len() >= nb * Q5_0_BYTES && xq.len() >= rows * nb * QK);
                let high = _mm256_set1_epi8(0xf0u8 as i8);
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let wp = w.as_ptr();
                let qp = xq.as_ptr();
                for b in 0..nb {
                    let blk = wp.add(b * Q5_0_BYTES);
                    let dw = f16_at(blk);
                    let nibbles = bytes_from_nibbles_32(blk.add(6));
                    let bxhi = _mm256_andnot_si256(bytes_from_bits_32(blk.add(2)), high);
                    let qx = _mm256_or_si256(nibbles, bxhi);
                    let ax = _mm256_sign_epi8(qx, qx);
                    for r in 0..rows {
                        let xb = r * nb + b;
                        let d = _mm256_set1_ps(dw * *xd.get_unchecked(xb));
                        let qy = _mm256_loadu_si256(qp.add(xb * QK) as *const __m256i);
                        let sy = _mm256_sign_epi8(qy, qx);
                        acc[r] = _mm256_fmadd_ps(d, $mul_sum(ax, sy), acc[r]);
                    }
                }
                let mut out = [0f32; ROWS];
                for r in 0..rows {
                    out[r] = hsum(acc[r]);
                }
                out
            }
        };
    }

    /// `ggml_vec_dot_q5_1_q8_1`: the Q4_1 product with each value's fifth bit (`+16`).
    macro_rules! q5_1_kernel {
        ($name:ident, $features:literal, $mul_sum:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &[u8],
                xq: &[i8],
                xd: &[f32],
                xs: &[f32],
                rows: usize,
                nb: usize,
            ) -> [f32; ROWS] {
                debug_assert!(w.len() >= nb * Q5_1_BYTES && xq.len() >= rows * nb * QK);
                let fifth = _mm256_set1_epi8(0x10);
                let mut acc = [_mm256_setzero_ps(); ROWS];
                let mut summs = [0f32; ROWS];
                let wp = w.as_ptr();
                let qp = xq.as_ptr();
                for b in 0..nb {
                    let blk = wp.add(b * Q5_1_BYTES);
                    let d0 = f16_at(blk);
                    let m0 = f16_at(blk.add(2));
                    let nibbles = bytes_from_nibbles_32(blk.add(8));
                    let high = _mm256_and_si256(bytes_from_bits_32(blk.add(4)), fifth);
                    let qx = _mm256_or_si256(nibbles, high);
                    for r in 0..rows {
                        let xb = r * nb + b;
                        summs[r] = m0.mul_add(*xs.get_unchecked(xb), summs[r]);
                        let d0d1 = _mm256_set1_ps(d0 * *xd.get_unchecked(xb));
                        let qy = _mm256_loadu_si256(qp.add(xb * QK) as *const __m256i);
                        acc[r] = _mm256_fmadd_ps($mul_sum(qx, qy), d0d1, acc[r]);
                    }
                }
                let mut out = [0f32; ROWS];
                for r in 0..rows {
                    out[r] = hsum(acc[r]) + summs[r];
                }
                out
            }
        };
    }

    q5_1_kernel!(q5_1_avx2, "avx2,fma,f16c", mul_sum_avx2);
    q5_1_kernel!(q5_1_vnni, "avx2,fma,f16c", mul_sum_vnni);
    q5_0_kernel!(q5_0_avx2, "avx2,fma,f16c", mul_sum_avx2);
    q5_0_kernel!(q5_0_vnni, "avx2,fma,f16c", mul_sum_vnni);
    q4_1_kernel!(q4_1_avx2, "avx2,fma,f16c", mul_sum_avx2);
    q4_1_kernel!(q4_1_vnni, "avx2,fma,f16c", mul_sum_vnni);
    q8_0_kernel!(q8_0_avx2, "avx2,fma,f16c", mul_sum_avx2);
    q8_0_kernel!(q8_0_vnni, "avx2,fma,f16c", mul_sum_vnni);

    /// `super::quantize_blocks` on 256-bit registers, value for value.
    ///
    /// The scalar form's `as i32` (saturating, NaN to 0) kept LLVM from vectorizing it: a
    /// branchy scalar loop, 4 % of a 16-row decoding step. Here per block: max |x| by
    /// `vmaxps` with the running maximum as second operand (so a NaN value is skipped, as
    /// `f32::max` skips it), `vroundps` to nearest even, NaN lanes (from `±inf × 0`) set to
    /// 0 as `as i32` does, then `vcvtps2dq` (exact: the values are integers of magnitude
    /// ≤ 127) and ggml's pack to bytes. Blocks whose maximum is below 1e-30 (where
    /// `127 / max` may overflow to infinity and the saturating cast matters) take the scalar
    /// form.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_rows(x: &[f32], out: &mut QuantizedRows, with_sums: bool) {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..x.len() / QK {
            let p = x.as_ptr().add(b * QK);
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut m = _mm256_setzero_ps();
            for v in v {
                m = _mm256_max_ps(_mm256_and_ps(v, abs_mask), m);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            let max = lanes.iter().fold(0f32, |m, &v| m.max(v));
            if max < 1e-30 {
                let mut one = QuantizedRows {
                    qs: vec![0; QK],
                    d: vec![0.0],
                    s: if with_sums { vec![0.0] } else { Vec::new() },
                };
                super::quantize_blocks(&x[b * QK..(b + 1) * QK], &mut one, with_sums);
                out.qs[b * QK..(b + 1) * QK].copy_from_slice(&one.qs);
                out.d[b] = one.d[0];
                if with_sums {
                    out.s[b] = one.s[0];
                }
                continue;
            }
            let d = max / 127.0;
            let id = _mm256_set1_ps(127.0 / max);
            let mut q = [_mm256_setzero_si256(); 4];
            for (q, v) in q.iter_mut().zip(v) {
                let r = _mm256_round_ps(
                    _mm256_mul_ps(v, id),
                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
                );
                let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
                *q = _mm256_cvtps_epi32(r);
            }
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let bytes = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(bytes, order);
            _mm256_storeu_si256(out.qs.as_mut_ptr().add(b * QK) as *mut __m256i, bytes);
            out.d[b] = super::f16_to_f32(super::f32_to_f16_ggml(d));
            if with_sums {
                let mut s = [0i32; 8];
                _mm256_storeu_si256(s.as_mut_ptr() as *mut __m256i, sum);
                let sum: i32 = s.iter().sum();
                out.s[b] = super::f16_to_f32(super::f32_to_f16_ggml(sum as f32 * d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_round_trip_and_round_to_nearest_even() {
        for h in (0u16..=0xffff).step_by(7) {
            let f = f16_to_f32(h);
            if f.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16_ggml(f), h, "{h:#06x} {f}");
        }
        // Halfway between 1.0 and the next half (1 + 2^-10): ties go to even.
        assert_eq!(f32_to_f16_ggml(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f32_to_f16_ggml(1.0 + 3.0 / 2048.0), 0x3c02);
    }

    fn reference_q4_1(w: &[u8], x: &QuantizedRows, nb: usize) -> f32 {
        // The same arithmetic in scalar form.
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        for b in 0..nb {
            let blk = &w[b * Q4_1_BYTES..(b + 1) * Q4_1_BYTES];
            let d0 = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            let m0 = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
            summs = m0.mul_add(x.s[b], summs);
            let d0d1 = x.d[b] * d0;
            for (lane, a) in acc.iter_mut().enumerate() {
                let mut s = 0i32;
                for e in lane * 4..lane * 4 + 4 {
                    let q = if e < 16 {
                        blk[4 + e] & 0x0f
                    } else {
                        blk[4 + e - 16] >> 4
                    };
                    s += q as i32 * x.qs[b * QK + e] as i32;
                }
                *a = d0d1.mul_add(s as f32, *a);
            }
        }
        ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + summs
    }

    /// What every CPU checks, with or without the x86 kernels: the activation quantizer
    /// (vectorized or portable) keeps each value within half a step of its block's scale,
    /// plus the scale's own f16 rounding (up to 127 steps × 2^-11).
    fn check_quantizer(x: &[f32], with_sums: bool) {
        let xq = quantize_rows(x, with_sums);
        for (b, block) in x.chunks(QK).enumerate() {
            let d = xq.d[b];
            assert!(d.is_finite() && d > 0.0, "block {b}: scale {d}");
            for (e, v) in block.iter().enumerate() {
                let q = xq.qs[b * QK + e] as f32;
                let bound = d * (0.5 + 127.0 / 2048.0) + 1e-6;
                assert!(
                    (q * d - v).abs() <= bound,
                    "block {b}[{e}]: {} vs {v}",
                    q * d
                );
            }
        }
    }

    #[test]
    fn q4_1_kernel_equals_its_scalar_form() {
        let (n, k) = (5, 96);
        let nb = k / QK;
        let w: Vec<u8> = (0..n * nb * Q4_1_BYTES)
            .map(|i| {
                // Plausible small scales in the f16 bytes, anything in the nibbles.
                match i % Q4_1_BYTES {
                    1 => 0x24,
                    3 => 0xa4,
                    _ => (i * 37 % 251) as u8,
                }
            })
            .collect();
        let x: Vec<f32> = (0..2 * k)
            .map(|i| ((i as f32) * 0.37).sin() * 3.0)
            .collect();
        check_quantizer(&x, true);
        if !available() {
            // Without AVX2, FMA and F16C the kernels decline, and the caller multiplies with
            // candle's QMatMul instead.
            assert!(matmul_t(&x, 2, k, &w, n, WeightFormat::Q4_1).is_none());
            return;
        }
        let y = matmul_t(&x, 2, k, &w, n, WeightFormat::Q4_1).unwrap();
        // One activation row alone: the same bits.
        let y1 = matmul_t(&x[k..], 1, k, &w, n, WeightFormat::Q4_1).unwrap();
        for j in 0..n {
            assert_eq!(y1[j].to_bits(), y[n + j].to_bits());
        }
        let xq = quantize_rows(&x, true);
        // Both instruction sets give the same bits.
        #[cfg(target_arch = "x86_64")]
        if level() == Some(Level::Vnni) {
            for j in 0..n {
                let wrow = &w[j * nb * Q4_1_BYTES..(j + 1) * nb * Q4_1_BYTES];
                let a = dot(Level::Avx2, WeightFormat::Q4_1, wrow, &xq, 0, 2, nb);
                let b = dot(Level::Vnni, WeightFormat::Q4_1, wrow, &xq, 0, 2, nb);
                assert_eq!(a, b);
            }
        }
        for i in 0..2 {
            let row = QuantizedRows {
                qs: xq.qs[i * k..(i + 1) * k].to_vec(),
                d: xq.d[i * nb..(i + 1) * nb].to_vec(),
                s: xq.s[i * nb..(i + 1) * nb].to_vec(),
            };
            for j in 0..n {
                let want = reference_q4_1(&w[j * nb * Q4_1_BYTES..], &row, nb);
                assert_eq!(y[i * n + j].to_bits(), want.to_bits());
            }
        }
    }

    #[test]
    fn q5_0_kernel_equals_its_scalar_form() {
        let (n, k) = (7, 96);
        let nb = k / QK;
        let w: Vec<u8> = (0..n * nb * Q5_0_BYTES)
            .map(|i| match i % Q5_0_BYTES {
                0 => 0x00,
                1 => 0x24,
                _ => (i * 97 % 253) as u8,
            })
            .collect();
        let x: Vec<f32> = (0..3 * k)
            .map(|i| ((i as f32) * 0.53).sin() * 1.5)
            .collect();
        check_quantizer(&x, false);
        if !available() {
            assert!(matmul_t(&x, 3, k, &w, n, WeightFormat::Q5_0).is_none());
            return;
        }
        let y = matmul_t(&x, 3, k, &w, n, WeightFormat::Q5_0).unwrap();
        let xq = quantize_rows(&x, false);
        for i in 0..3 {
            for j in 0..n {
                let row = &w[j * nb * Q5_0_BYTES..];
                let mut acc = [0f32; 8];
                for b in 0..nb {
                    let blk = &row[b * Q5_0_BYTES..];
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])) * xq.d[i * nb + b];
                    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                    let value = |e: usize| -> i32 {
                        let nibble = if e < 16 {
                            blk[6 + e] & 0x0f
                        } else {
                            blk[6 + e - 16] >> 4
                        } as i32;
                        nibble | ((((qh >> e) & 1) as i32) << 4)
                    };
                    for (lane, a) in acc.iter_mut().enumerate() {
                        let s: i32 = (lane * 4..lane * 4 + 4)
                            .map(|e| (value(e) - 16) * xq.qs[(i * nb + b) * QK + e] as i32)
                            .sum();
                        *a = d.mul_add(s as f32, *a);
                    }
                }
                let want = ((acc[0] + acc[4]) + (acc[2] + acc[6]))
                    + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
                assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "({i}, {j})");
            }
        }
    }

    #[test]
    fn q8_0_kernel_equals_its_scalar_form() {
        let (n, k) = (6, 64);
        let nb = k / QK;
        let w: Vec<u8> = (0..n * nb * Q8_0_BYTES)
            .map(|i| match i % Q8_0_BYTES {
                0 => 0x00,
                1 => 0x24,
                _ => (i * 53 % 255) as u8,
            })
            .collect();
        let x: Vec<f32> = (0..5 * k)
            .map(|i| ((i as f32) * 0.91).cos() * 2.0)
            .collect();
        check_quantizer(&x, false);
        if !available() {
            // As above: the kernels decline on this CPU.
            assert!(matmul_t(&x, 5, k, &w, n, WeightFormat::Q8_0).is_none());
            return;
        }
        let y = matmul_t(&x, 5, k, &w, n, WeightFormat::Q8_0).unwrap();
        let xq = quantize_rows(&x, false);
        for i in 0..5 {
            let y1 = matmul_t(&x[i * k..(i + 1) * k], 1, k, &w, n, WeightFormat::Q8_0).unwrap();
            for j in 0..n {
                let blk_row = &w[j * nb * Q8_0_BYTES..];
                let mut acc = [0f32; 8];
                for b in 0..nb {
                    let blk = &blk_row[b * Q8_0_BYTES..];
                    let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])) * xq.d[i * nb + b];
                    for (lane, a) in acc.iter_mut().enumerate() {
                        let s: i32 = (lane * 4..lane * 4 + 4)
                            .map(|e| blk[2 + e] as i8 as i32 * xq.qs[(i * nb + b) * QK + e] as i32)
                            .sum();
                        *a = d.mul_add(s as f32, *a);
                    }
                }
                let want = ((acc[0] + acc[4]) + (acc[2] + acc[6]))
                    + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
                assert_eq!(y[i * n + j].to_bits(), want.to_bits(), "({i}, {j})");
                assert_eq!(y1[j].to_bits(), want.to_bits(), "({i}, {j}) alone");
            }
        }
    }

    /// Bytes per block and the 32 weight values of block `blk` as integers, for the four
    /// formats of this file (ggml's reference unpacking).
    fn block_values(format: WeightFormat, blk: &[u8]) -> [i32; QK] {
        let nibble = |at: usize, e: usize| -> i32 {
            (if e < 16 {
                blk[at + e] & 0x0f
            } else {
                blk[at + e - 16] >> 4
            }) as i32
        };
        let fifth = |at: usize, e: usize| -> i32 {
            let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
            (((qh >> e) & 1) as i32) << 4
        };
        std::array::from_fn(|e| match format {
            WeightFormat::Q4_1 => nibble(4, e),
            WeightFormat::Q8_0 => blk[2 + e] as i8 as i32,
            WeightFormat::Q5_0 => (nibble(6, e) | fifth(2, e)) - 16,
            WeightFormat::Q5_1 => nibble(8, e) | fifth(4, e),
            _ => unreachable!(),
        })
    }

    fn block_bytes(format: WeightFormat) -> usize {
        match format {
            WeightFormat::Q4_1 => Q4_1_BYTES,
            WeightFormat::Q8_0 => Q8_0_BYTES,
            WeightFormat::Q5_0 => Q5_0_BYTES,
            WeightFormat::Q5_1 => Q5_1_BYTES,
            _ => unreachable!(),
        }
    }

    /// ggml's `ggml_vec_dot_*` for one weight row and activation row `i` of `xq`, in scalar
    /// form: per block `fma(d_w·d_x, Σ₄ q_w·q_x, lane)` in eight lanes, `hsum_float_8`, and
    /// for the formats with a minimum `+ Σ fma(m_w, s_x, ·)`.
    fn reference(format: WeightFormat, wrow: &[u8], xq: &QuantizedRows, i: usize) -> f32 {
        let bytes = block_bytes(format);
        let nb = wrow.len() / bytes;
        let with_min = matches!(format, WeightFormat::Q4_1 | WeightFormat::Q5_1);
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        for b in 0..nb {
            let blk = &wrow[b * bytes..(b + 1) * bytes];
            let dw = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            if with_min {
                let mw = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                summs = mw.mul_add(xq.s[i * nb + b], summs);
            }
            let d = dw * xq.d[i * nb + b];
            let values = block_values(format, blk);
            for (lane, a) in acc.iter_mut().enumerate() {
                let s: i32 = (lane * 4..lane * 4 + 4)
                    .map(|e| values[e] * xq.qs[(i * nb + b) * QK + e] as i32)
                    .sum();
                *a = d.mul_add(s as f32, *a);
            }
        }
        let h = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
        if with_min {
            h + summs
        } else {
            h
        }
    }

    /// Deterministic bytes and floats for the tests (64-bit LCG).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }
        fn unit(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    /// `n` weight rows of `nb` blocks: random values, scales and minimums of plausible size
    /// (f16 exponents around 2^-6, both signs for minimums).
    fn random_weights(format: WeightFormat, n: usize, nb: usize, rng: &mut Lcg) -> Vec<u8> {
        let bytes = block_bytes(format);
        let mut w: Vec<u8> = (0..n * nb * bytes).map(|_| rng.next() as u8).collect();
        for blk in w.chunks_exact_mut(bytes) {
            blk[1] = 0x20 | (rng.next() as u8 & 0x07);
            if matches!(format, WeightFormat::Q4_1 | WeightFormat::Q5_1) {
                blk[3] = 0x20 | (rng.next() as u8 & 0x87);
            }
        }
        w
    }

    /// Every row count from 1 to 17 (one partial group, a full group of 16, and one row
    /// past it), both instruction levels and every kernel shape, every format: each output
    /// equals the scalar form bit for bit, and each row alone equals the same row batched.
    #[test]
    fn every_kernel_and_row_count_equals_the_scalar_form() {
        let (n, k) = (37, 160);
        let nb = k / QK;
        let mut rng = Lcg(7);
        for format in [
            WeightFormat::Q4_1,
            WeightFormat::Q8_0,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
        ] {
            let with_sums = matches!(format, WeightFormat::Q4_1 | WeightFormat::Q5_1);
            let w = random_weights(format, n, nb, &mut rng);
            let row_bytes = nb * block_bytes(format);
            let mut x: Vec<f32> = (0..17 * k).map(|_| rng.unit() * 3.0).collect();
            // A zero row (scale 0), and a row whose first block is one outlier.
            x[3 * k..4 * k].fill(0.0);
            x[5 * k + 7] = 1e4;
            if !available() {
                assert!(matmul_t(&x, 17, k, &w, n, format).is_none());
                continue;
            }
            let xq = quantize_rows(&x, with_sums);
            let want: Vec<f32> = (0..17 * n)
                .map(|o| reference(format, &w[(o % n) * row_bytes..][..row_bytes], &xq, o / n))
                .collect();
            let mut paths = vec![Path::Rows4(Level::Avx2)];
            if level() == Some(Level::Vnni) {
                paths.extend([Path::Rows4(Level::Vnni), Path::Wide]);
            }
            if matches!(format, WeightFormat::Q5_0 | WeightFormat::Q4_1) {
                paths.push(Path::Lanes);
            }
            for m in 1..=17 {
                let auto = matmul_t(&x[..m * k], m, k, &w, n, format).unwrap();
                let mut outs = vec![("auto".to_string(), auto)];
                for path in &paths {
                    let y = matmul_on(&x[..m * k], m, &w, n, format, nb, *path);
                    outs.push((format!("{path:?}"), y));
                }
                for (name, y) in &outs {
                    for (o, (got, want)) in y.iter().zip(&want).enumerate() {
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{format:?} {name}, {m} rows: output ({}, {}) {got} vs {want}",
                            o / n,
                            o % n
                        );
                    }
                }
            }
            // Each row alone (the single-row kernel) gives its batched bits.
            for i in 0..17 {
                let y1 = matmul_t(&x[i * k..(i + 1) * k], 1, k, &w, n, format).unwrap();
                for j in 0..n {
                    assert_eq!(
                        y1[j].to_bits(),
                        want[i * n + j].to_bits(),
                        "{format:?} ({i}, {j})"
                    );
                }
            }
        }
    }

    /// The quantizer (vectorized where the CPU allows) equals ggml's `quantize_row_q8_1`
    /// in its plain serial form, value for value and bit for bit, on ordinary values and on
    /// zeros, ties, outliers and tiny blocks.
    #[test]
    fn quantizer_equals_the_serial_form() {
        let mut rng = Lcg(11);
        let mut x: Vec<f32> = (0..64 * QK).map(|_| rng.unit() * 4.0).collect();
        x[..QK].fill(0.0);
        x[QK..2 * QK]
            .iter_mut()
            .enumerate()
            .for_each(|(e, v)| *v = (e as f32 - 16.0) * 0.5);
        x[2 * QK + 31] = -1e5;
        x[3 * QK..4 * QK].iter_mut().for_each(|v| *v *= 1e-30);
        x[4 * QK + 3] = -0.0;
        x[5 * QK + 9] = f32::NAN;
        x[6 * QK + 1] = f32::INFINITY;
        x[7 * QK..8 * QK].iter_mut().for_each(|v| *v *= 1e-36);
        x[8 * QK..9 * QK].iter_mut().for_each(|v| *v *= 1e-31);
        for with_sums in [false, true] {
            let got = quantize_rows(&x, with_sums);
            for (b, xs) in x.chunks_exact(QK).enumerate() {
                let max = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = max / 127.0;
                let id = if max != 0.0 { 127.0 / max } else { 0.0 };
                let mut sum = 0i32;
                for (e, v) in xs.iter().enumerate() {
                    let r = (v * id).round_ties_even() as i32;
                    assert_eq!(got.qs[b * QK + e], r as i8, "block {b}[{e}]");
                    sum += r;
                }
                assert_eq!(got.d[b].to_bits(), f16_to_f32(f32_to_f16_ggml(d)).to_bits());
                if with_sums {
                    let s = f16_to_f32(f32_to_f16_ggml(sum as f32 * d));
                    assert_eq!(got.s[b].to_bits(), s.to_bits(), "block {b}");
                }
            }
        }
    }
}
