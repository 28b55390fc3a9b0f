//! Q4_K, Q5_K, Q6_K and Q3_K products of one weight row with a group of activation rows at
//! once, one row per lane, for prompts and batched decoding: [`TILE`] = 16 rows on 512-bit
//! registers (AVX-512 F + VNNI), or [`NARROW`] = 8 on 256-bit ones (AVX2).
//!
//! Every output is the same bits as the 4-row kernels in `super::kquants` give (and so as
//! llama.cpp), because each output still gets exactly their float operations in their order
//! (see that module's notes):
//!
//! - Q4_K: per super-block, `acc = fma(isum_sb, d_w·d_x, acc)` and
//!   `acc_min = fma(imin_sb, dmin_w·d_x, acc_min)` for the four sums of 64 values in order
//!   (rows in a full group of 4: llama.cpp's repacked gemm), or once with the sums over 256
//!   (the other rows: its gemv); the result is `acc − acc_min`.
//! - Q6_K and Q3_K (the tiled order, from 8 rows on): `y = fma(isum · d_w, d_x, y)`.
//! - Q5_K (tiled): `y = fma(fma(imin, −dmin_w, isum · d_w), d_x, y)`.
//!
//! These orders are scalar per output: no lanes, no horizontal sums. So here a lane is an
//! activation row, and one instruction serves sixteen outputs:
//!
//! - The activations of a group of rows are laid out in groups of four values
//!   (`[block][k / 4][row][4]`), so the four values of all sixteen rows at one position are
//!   one 64-byte load, and `vpdpbusd` with the weight row's four values at that position
//!   broadcast (`{1to16}`, a load, no shuffle) adds their four products to each row's
//!   lane. Chained over a sub-block (32 values for Q4_K/Q5_K, 16 for Q6_K/Q3_K) a lane
//!   holds the row's whole integer dot of that sub-block, which `vpmulld` scales.
//! - The weights are unpacked once per weight row and tile of columns to unsigned bytes in
//!   value order ([`Unpacked`]): Q4_K and Q5_K as they are, Q6_K as `q + 32` and Q3_K as
//!   `q + 4` (as stored). The offsets come back out with the activation sums of 16
//!   (`bsums`): `Σ sc·(u − o)·q8 = Σ sc·(u·q8) − o·Σ sc·bsum`, one `vpdpwssd` per two
//!   sub-blocks; the same `vpdpwssd` gives the Q4_K/Q5_K minimums' `Σ min·bsum`.
//! - The integer sums are exact whichever instructions form them (|q8| ≤ 127, weights
//!   ≤ 63, scales ≤ 63 or ≥ −128: every partial sum fits in i32, and `vpdpbusd` and
//!   `vpdpwssd` do not saturate); `vcvtdq2ps` rounds them to f32 as `as f32` does.
//! - The scales `d_x` are laid out `[block][row]`, so `d_w·d_x` for all sixteen rows is one
//!   `vmulps` (IEEE multiplication is commutative: the same bits as `d_x·d_w`), and every
//!   `fma` of the scalar code is one `vfmadd` across rows, lane by lane the same operation.
//!
//! On AVX2 the same lanes take `vpmaddubsw` products summed in 16 bits over as many
//! positions as cannot overflow (no saturation either: |pair| ≤ 2·63·127), then `vpmaddwd`
//! with the sub-block's scale (and `vpmaddwd` for the sums of 16): the same integers.
//!
//! Padding rows (a group that is not full) hold zeros and are dropped; no lane reads another
//! row's data, so a row's outputs never depend on which rows share its group.

use super::kquants::{
    q3k_scales, q4k_scales_mins, Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8K, QK_K,
};
use super::{for_column_ranges, WeightFormat};
use crate::nn::kernels::SendPtr;

/// Activation rows one 512-bit kernel call reads: one zmm of i32 lanes.
pub(super) const TILE: usize = 16;

/// Activation rows one AVX2 kernel call reads: one ymm of i32 lanes. (Groups of this many
/// rather than two halves of a 16-row group: 8 rows of 2048 values stay in a 32 KiB L1
/// next to the unpacked weights.)
const NARROW: usize = 8;

/// Groups of four values per super-block (one `vpdpbusd` each).
const QUADS: usize = QK_K / 4;

/// Weight rows unpacked together and multiplied with every group of activation rows
/// before the next are unpacked.
const COLUMNS: usize = 8;

/// Up to `width` ([`TILE`] or [`NARROW`]) consecutive activation rows (Q8_K), laid out for
/// the kernels.
pub(super) struct Group {
    /// The first row of the group in the activation matrix.
    i0: usize,
    /// Rows in the group (1..=width).
    rows: usize,
    /// Rows in the layout (the kernel's lanes).
    width: usize,
    /// `[block][QUADS][width][4]` values; padding rows are zero.
    qs: Vec<i8>,
    /// `[block][width]` activation scales; padding lanes are zero.
    d: Vec<f32>,
    /// `[block][8][width]` pairs of sums of 16 (`bsums[2p]` low, `bsums[2p + 1]` high i16).
    bsums: Vec<i32>,
}

/// Rearranges `m` Q8_K rows of `nb` super-blocks into groups for the 512-bit kernels
/// (`avx512`) or the AVX2 ones.
pub(super) fn pack(xq: &Q8K, m: usize, nb: usize, avx512: bool) -> Vec<Group> {
    let width = if avx512 { TILE } else { NARROW };
    (0..m)
        .step_by(width)
        .map(|i0| {
            let rows = width.min(m - i0);
            let mut qs = vec![0i8; nb * QK_K * width];
            let mut d = vec![0f32; nb * width];
            let mut bsums = vec![0i32; nb * 8 * width];
            for r in 0..rows {
                for b in 0..nb {
                    let xb = (i0 + r) * nb + b;
                    let src = &xq.qs[xb * QK_K..(xb + 1) * QK_K];
                    for (t, quad) in src.chunks_exact(4).enumerate() {
                        let at = ((b * QUADS + t) * width + r) * 4;
                        qs[at..at + 4].copy_from_slice(quad);
                    }
                    d[b * width + r] = xq.d[xb];
                    for p in 0..8 {
                        let lo = xq.bsums[xb * 16 + 2 * p] as u16 as u32;
                        let hi = xq.bsums[xb * 16 + 2 * p + 1] as u16 as u32;
                        bsums[(b * 8 + p) * width + r] = (lo | (hi << 16)) as i32;
                    }
                }
            }
            Group {
                i0,
                rows,
                width,
                qs,
                d,
                bsums,
            }
        })
        .collect()
}

/// One weight super-block unpacked for the kernels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Unpacked {
    /// The 256 values as unsigned bytes in value order (Q6_K: `q + 32`; Q3_K: `q + 4`).
    q: [u8; QK_K],
    /// Scale of each sub-block (8 of 32 values for Q4_K/Q5_K, 16 of 16 for Q6_K/Q3_K).
    scales: [i32; 16],
    /// Per pair `p` of sums of 16: the two i16 factors of `bsums[2p]` and `bsums[2p + 1]`
    /// (Q4_K/Q5_K: the minimum of sub-block `p`, twice; Q6_K/Q3_K: `offset × scale` of
    /// sub-blocks `2p` and `2p + 1`).
    pairs: [i32; 8],
    /// The super-block scale `d_w`.
    d: f32,
    /// The super-block minimum scale `dmin_w` (Q4_K/Q5_K).
    dmin: f32,
}

impl Unpacked {
    const ZERO: Self = Self {
        q: [0; QK_K],
        scales: [0; 16],
        pairs: [0; 8],
        d: 0.0,
        dmin: 0.0,
    };
}

/// Two i16 values as one i32 word (`lo` in the low half), for `vpdpwssd`.
fn word_pair(lo: i32, hi: i32) -> i32 {
    ((lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// Bytes of one block of `format`.
pub(super) fn block_bytes(format: WeightFormat) -> Option<usize> {
    match format {
        WeightFormat::Q4K => Some(Q4_K_BYTES),
        WeightFormat::Q5K => Some(Q5_K_BYTES),
        WeightFormat::Q6K => Some(Q6_K_BYTES),
        WeightFormat::Q3K => Some(Q3_K_BYTES),
        _ => None,
    }
}

/// The `m × n` product of weight rows `w` (`n` rows of `nb` blocks of `format`) with the
/// `m` activation rows packed in `groups` (by [`pack`] with the same `avx512`). Q4_K rows in
/// a full group of 4 take the per-64 order, the rest the per-256 one.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and AVX-512 F and VNNI where `avx512`; `w` holds `n` rows of `nb` blocks of
/// `format` (a K-quant) and `groups` were packed from `m` rows of `nb` blocks.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn matmul(
    format: WeightFormat,
    w: &[u8],
    n: usize,
    nb: usize,
    m: usize,
    groups: &[Group],
    avx512: bool,
) -> Vec<f32> {
    // Q4_K rows in a full group of 4 take llama.cpp's gemm order, the rest its gemv.
    let full4 = m - m % 4;
    let Some(bytes) = block_bytes(format) else {
        unreachable!("the wide K-quant kernels serve Q4_K, Q5_K, Q6_K and Q3_K")
    };
    let row_bytes = nb * bytes;
    let mut out = vec![0f32; m * n];
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_column_ranges(n, 16, 512, |columns| {
        let mut unpacked = vec![Unpacked::ZERO; COLUMNS * nb];
        let (j0, j1) = (columns.start, columns.end);
        for jt in (j0..j1).step_by(COLUMNS) {
            let cols = COLUMNS.min(j1 - jt);
            for c in 0..cols {
                let wrow = &w[(jt + c) * row_bytes..(jt + c + 1) * row_bytes];
                // SAFETY: the caller vouches for AVX2; `wrow` holds `nb` blocks.
                unsafe { x86::unpack(format, wrow, &mut unpacked[c * nb..(c + 1) * nb]) };
            }
            for g in groups {
                let mut tile = [[0f32; TILE]; COLUMNS];
                for (c, col) in tile.iter_mut().enumerate().take(cols) {
                    let u = &unpacked[c * nb..(c + 1) * nb];
                    // SAFETY: as above; `u` holds `nb` blocks and `g` rows of `nb` blocks.
                    unsafe {
                        if avx512 {
                            x86::dot(format, u, g, nb, full4, col)
                        } else {
                            x86::dot_avx2(format, u, g, nb, full4, col)
                        }
                    };
                }
                // SAFETY: (g.i0 + r, jt + c) lies in the m × n output for every row of the group
                // and column of the tile, and each column belongs to one range.
                unsafe { super::store_tile(&out_ptr, n, (g.i0, g.rows), (jt, cols), &tile) };
            }
        }
    });
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::kquants::{Q3_K_BYTES, Q4_K_BYTES, Q5_K_BYTES, Q6_K_BYTES};
    use super::super::x86::f16_at;
    use super::super::WeightFormat;
    use super::{
        q3k_scales, q4k_scales_mins, word_pair, Group, Unpacked, NARROW, QK_K, QUADS, TILE,
    };

    /// Unpacks the `out.len()` blocks of one weight row `w` of `format`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn unpack(format: WeightFormat, w: &[u8], out: &mut [Unpacked]) {
        let m4 = _mm256_set1_epi8(0x0f);
        for (b, u) in out.iter_mut().enumerate() {
            let q = u.q.as_mut_ptr() as *mut __m256i;
            match format {
                WeightFormat::Q4K | WeightFormat::Q5K => {
                    let five = format == WeightFormat::Q5K;
                    let bytes = if five { Q5_K_BYTES } else { Q4_K_BYTES };
                    debug_assert!(w.len() >= (b + 1) * bytes);
                    let blk = w.as_ptr().add(b * bytes);
                    u.d = f16_at(blk);
                    u.dmin = f16_at(blk.add(2));
                    let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
                    for j in 0..8 {
                        u.scales[j] = sc[j] as i32;
                        u.pairs[j] = word_pair(mn[j] as i32, mn[j] as i32);
                    }
                    // Sub-block 2j: the low nibbles of bytes 32j.., 2j + 1 the high ones
                    // (Q5_K: plus bit 2j, 2j + 1 of its high bits as 16).
                    let nibbles = blk.add(if five { 48 } else { 16 });
                    let hbits = _mm256_loadu_si256(blk.add(16) as *const __m256i);
                    for j in 0..4 {
                        let bits = _mm256_loadu_si256(nibbles.add(32 * j) as *const __m256i);
                        let mut lo = _mm256_and_si256(bits, m4);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                        if five {
                            let sixteen = _mm256_set1_epi8(16);
                            for (v, i) in [(&mut lo, 2 * j), (&mut hi, 2 * j + 1)] {
                                let mask = _mm256_set1_epi8(1 << i);
                                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, mask), mask);
                                *v = _mm256_or_si256(*v, _mm256_and_si256(set, sixteen));
                            }
                        }
                        _mm256_storeu_si256(q.add(2 * j), lo);
                        _mm256_storeu_si256(q.add(2 * j + 1), hi);
                    }
                }
                WeightFormat::Q6K => {
                    debug_assert!(w.len() >= (b + 1) * Q6_K_BYTES);
                    let blk = w.as_ptr().add(b * Q6_K_BYTES);
                    u.d = f16_at(blk.add(208));
                    u.dmin = 0.0;
                    for i in 0..16 {
                        u.scales[i] = *blk.add(192 + i) as i8 as i32;
                    }
                    for p in 0..8 {
                        u.pairs[p] = word_pair(32 * u.scales[2 * p], 32 * u.scales[2 * p + 1]);
                    }
                    let m3 = _mm256_set1_epi8(3);
                    for half in 0..2 {
                        let bits1 = _mm256_loadu_si256(blk.add(64 * half) as *const __m256i);
                        let bits2 = _mm256_loadu_si256(blk.add(64 * half + 32) as *const __m256i);
                        let bh = _mm256_loadu_si256(blk.add(128 + 32 * half) as *const __m256i);
                        let h0 = _mm256_slli_epi16(_mm256_and_si256(bh, m3), 4);
                        let h1 = _mm256_slli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(12)), 2);
                        let h2 = _mm256_and_si256(bh, _mm256_set1_epi8(48));
                        let h3 = _mm256_srli_epi16(_mm256_and_si256(bh, _mm256_set1_epi8(-64)), 2);
                        let lo1 = _mm256_and_si256(bits1, m4);
                        let lo2 = _mm256_and_si256(bits2, m4);
                        let hi1 = _mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4);
                        let hi2 = _mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4);
                        _mm256_storeu_si256(q.add(4 * half), _mm256_or_si256(lo1, h0));
                        _mm256_storeu_si256(q.add(4 * half + 1), _mm256_or_si256(lo2, h1));
                        _mm256_storeu_si256(q.add(4 * half + 2), _mm256_or_si256(hi1, h2));
                        _mm256_storeu_si256(q.add(4 * half + 3), _mm256_or_si256(hi2, h3));
                    }
                }
                _ => {
                    debug_assert!(w.len() >= (b + 1) * Q3_K_BYTES);
                    let blk = w.as_ptr().add(b * Q3_K_BYTES);
                    u.d = f16_at(blk.add(108));
                    u.dmin = 0.0;
                    let sc = q3k_scales(std::slice::from_raw_parts(blk.add(96), 12));
                    for (s, &v) in u.scales.iter_mut().zip(&sc) {
                        *s = v as i32;
                    }
                    for p in 0..8 {
                        u.pairs[p] = word_pair(4 * sc[2 * p] as i32, 4 * sc[2 * p + 1] as i32);
                    }
                    // Chunk 4j + s (32 values): bits 2s of bytes 32j.. of `qs` plus 4 where
                    // high bit 4j + s is set (the stored `q + 4`).
                    let m3 = _mm256_set1_epi8(3);
                    let four = _mm256_set1_epi8(4);
                    let hbits = _mm256_loadu_si256(blk as *const __m256i);
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
                            let mask = _mm256_set1_epi8(1 << c);
                            let set = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, mask), mask);
                            let v = _mm256_or_si256(
                                _mm256_and_si256(shifted, m3),
                                _mm256_and_si256(set, four),
                            );
                            _mm256_storeu_si256(q.add(c), v);
                        }
                    }
                }
            }
        }
    }

    const F_Q4K: u8 = 0;
    const F_Q5K: u8 = 1;
    const F_Q6K: u8 = 2;
    const F_Q3K: u8 = 3;

    /// Dots of one unpacked weight row `u` with the rows of `g`, written to `out`.
    ///
    /// # Safety
    /// AVX-512 F and VNNI, AVX2, FMA and F16C are present; `u` holds `nb` blocks and `g` was
    /// packed from rows of `nb` blocks.
    #[inline]
    pub(super) unsafe fn dot(
        format: WeightFormat,
        u: &[Unpacked],
        g: &Group,
        nb: usize,
        full4: usize,
        out: &mut [f32; TILE],
    ) {
        match format {
            WeightFormat::Q4K => kernel::<F_Q4K>(u, g, nb, full4, out),
            WeightFormat::Q5K => kernel::<F_Q5K>(u, g, nb, full4, out),
            WeightFormat::Q6K => kernel::<F_Q6K>(u, g, nb, full4, out),
            _ => kernel::<F_Q3K>(u, g, nb, full4, out),
        }
    }

    /// [`dot`] on AVX2, for a group of [`NARROW`] rows.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; `u` holds `nb` blocks and `g` was packed from rows
    /// of `nb` blocks.
    #[inline]
    pub(super) unsafe fn dot_avx2(
        format: WeightFormat,
        u: &[Unpacked],
        g: &Group,
        nb: usize,
        full4: usize,
        out: &mut [f32; TILE],
    ) {
        let out = &mut out[..NARROW];
        match format {
            WeightFormat::Q4K => kernel_avx2::<F_Q4K>(u, g, nb, full4, out),
            WeightFormat::Q5K => kernel_avx2::<F_Q5K>(u, g, nb, full4, out),
            WeightFormat::Q6K => kernel_avx2::<F_Q6K>(u, g, nb, full4, out),
            _ => kernel_avx2::<F_Q3K>(u, g, nb, full4, out),
        }
    }

    /// The scaled integer dot of sub-block `i` (`S` quads) of one weight block `q` with the
    /// eight rows' values at `x`, on
    /// AVX2: `vpmaddubsw` products summed in 16 bits over `C` quads (no overflow: `C` is
    /// chosen per format so that `C · 2 · max q · 127 < 2^15`), then `vpmaddwd` with the
    /// scale, which also adds each row's two halves.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scaled_dot_avx2<const S: usize, const C: usize>(
        q: *const u8,
        x: *const i8,
        scale: i32,
        i: usize,
    ) -> __m256i {
        let mut sum = _mm256_setzero_si256();
        let mut t0 = 0;
        while t0 < S {
            let mut part = _mm256_setzero_si256();
            for t in t0..t0 + C {
                let at = i * S + t;
                let wq = _mm256_set1_epi32(std::ptr::read_unaligned(q.add(4 * at) as *const i32));
                let xq = _mm256_loadu_si256(x.add(at * NARROW * 4) as *const __m256i);
                part = _mm256_add_epi16(part, _mm256_maddubs_epi16(wq, xq));
            }
            let sc = _mm256_set1_epi16(scale as i16);
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(part, sc));
            t0 += C;
        }
        sum
    }

    /// [`kernel`] on AVX2 for the [`NARROW`] rows of `g`: the same integers and, lane by
    /// lane, the same float operations.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel_avx2<const F: u8>(
        u: &[Unpacked],
        g: &Group,
        nb: usize,
        full4: usize,
        out: &mut [f32],
    ) {
        debug_assert!(u.len() >= nb && out.len() >= NARROW && g.width == NARROW);
        debug_assert!(g.qs.len() >= nb * QK_K * NARROW && g.d.len() >= nb * NARROW);
        debug_assert!(g.bsums.len() >= nb * 8 * NARROW);
        let per_64 = full4.saturating_sub(g.i0).min(NARROW);
        let per_256 = F == F_Q4K && per_64 != NARROW;
        let zero = _mm256_setzero_si256();
        let (mut acc, mut acc_min) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut acc1, mut acc1_min) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let xp = g.qs.as_ptr();
        let bp = g.bsums.as_ptr();
        let dp = g.d.as_ptr();
        for (b, ub) in u.iter().enumerate().take(nb) {
            let x = xp.add(b * QUADS * NARROW * 4);
            let q = ub.q.as_ptr();
            // Σ pair·bsums of pair `p` of sums of 16, per row.
            macro_rules! paired {
                ($p:expr) => {
                    _mm256_madd_epi16(
                        _mm256_loadu_si256(bp.add((b * 8 + $p) * NARROW) as *const __m256i),
                        _mm256_set1_epi32(ub.pairs[$p]),
                    )
                };
            }
            let dx = _mm256_loadu_ps(dp.add(b * NARROW));
            let dw = _mm256_set1_ps(ub.d);
            if F == F_Q4K || F == F_Q5K {
                let mut isum = [zero; 4];
                let mut imin = [zero; 4];
                for sb in 0..4 {
                    let (j0, j1) = (2 * sb, 2 * sb + 1);
                    let (a, c) = if F == F_Q4K {
                        (
                            scaled_dot_avx2::<8, 8>(q, x, ub.scales[j0], j0),
                            scaled_dot_avx2::<8, 8>(q, x, ub.scales[j1], j1),
                        )
                    } else {
                        (
                            scaled_dot_avx2::<8, 4>(q, x, ub.scales[j0], j0),
                            scaled_dot_avx2::<8, 4>(q, x, ub.scales[j1], j1),
                        )
                    };
                    isum[sb] = _mm256_add_epi32(a, c);
                    imin[sb] = _mm256_add_epi32(paired!(j0), paired!(j1));
                }
                let isum_all = _mm256_add_epi32(
                    _mm256_add_epi32(isum[0], isum[1]),
                    _mm256_add_epi32(isum[2], isum[3]),
                );
                let imin_all = _mm256_add_epi32(
                    _mm256_add_epi32(imin[0], imin[1]),
                    _mm256_add_epi32(imin[2], imin[3]),
                );
                if F == F_Q4K {
                    let dd = _mm256_mul_ps(dx, dw);
                    let dm = _mm256_mul_ps(dx, _mm256_set1_ps(ub.dmin));
                    for sb in 0..4 {
                        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[sb]), dd, acc);
                        acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[sb]), dm, acc_min);
                    }
                    if per_256 {
                        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum_all), dd, acc1);
                        acc1_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin_all), dm, acc1_min);
                    }
                } else {
                    let part = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(imin_all),
                        _mm256_set1_ps(-ub.dmin),
                        _mm256_mul_ps(_mm256_cvtepi32_ps(isum_all), dw),
                    );
                    acc = _mm256_fmadd_ps(part, dx, acc);
                }
            } else {
                let mut sum = [zero; 4];
                for i in 0..16 {
                    let s = if F == F_Q6K {
                        scaled_dot_avx2::<4, 2>(q, x, ub.scales[i], i)
                    } else {
                        scaled_dot_avx2::<4, 4>(q, x, ub.scales[i], i)
                    };
                    sum[i % 4] = _mm256_add_epi32(sum[i % 4], s);
                }
                let mut offset = zero;
                for p in 0..8 {
                    offset = _mm256_add_epi32(offset, paired!(p));
                }
                let isum = _mm256_sub_epi32(
                    _mm256_add_epi32(
                        _mm256_add_epi32(sum[0], sum[1]),
                        _mm256_add_epi32(sum[2], sum[3]),
                    ),
                    offset,
                );
                acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), dw), dx, acc);
            }
        }
        let y = if F == F_Q4K {
            let y64 = _mm256_sub_ps(acc, acc_min);
            let y256 = _mm256_sub_ps(acc1, acc1_min);
            // Lanes below `per_64` from the per-64 sums.
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let take64 = _mm256_cmpgt_epi32(_mm256_set1_epi32(per_64 as i32), lane);
            _mm256_blendv_ps(y256, y64, _mm256_castsi256_ps(take64))
        } else {
            acc
        };
        _mm256_storeu_ps(out.as_mut_ptr(), y);
    }

    /// The integer dots of every sub-block of `S` quads (`QUADS / S` sub-blocks) of one
    /// weight block `q` with the sixteen rows' values at `x`, each scaled by its sub-block's
    /// scale.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
    unsafe fn scaled_dots<const S: usize, const SUBS: usize>(
        q: *const u8,
        x: *const i8,
        scales: &[i32; 16],
    ) -> [__m512i; SUBS] {
        let mut dots = [_mm512_setzero_si512(); SUBS];
        // Quad by quad across the sub-blocks: SUBS independent chains.
        for t in 0..S {
            for (i, dot) in dots.iter_mut().enumerate() {
                let at = i * S + t;
                let wq = _mm512_set1_epi32(std::ptr::read_unaligned(q.add(4 * at) as *const i32));
                let xq = _mm512_loadu_si512(x.add(at * TILE * 4) as *const __m512i);
                *dot = _mm512_dpbusd_epi32(*dot, wq, xq);
            }
        }
        for (dot, &s) in dots.iter_mut().zip(scales.iter()) {
            *dot = _mm512_mullo_epi32(*dot, _mm512_set1_epi32(s));
        }
        dots
    }

    /// One weight row against the sixteen rows of `g`; `F` picks the format (`F_*`).
    #[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
    unsafe fn kernel<const F: u8>(
        u: &[Unpacked],
        g: &Group,
        nb: usize,
        full4: usize,
        out: &mut [f32; TILE],
    ) {
        debug_assert!(u.len() >= nb && g.width == TILE);
        debug_assert!(g.qs.len() >= nb * QK_K * TILE && g.d.len() >= nb * TILE);
        debug_assert!(g.bsums.len() >= nb * 8 * TILE);
        // Q4_K: lanes of rows past `full4` take the per-256 order.
        let per_64: u16 = if full4 <= g.i0 {
            0
        } else {
            ((1u32 << (full4 - g.i0).min(TILE)) - 1) as u16
        };
        let per_256 = F == F_Q4K && per_64 != 0xffff;
        let zero = _mm512_setzero_si512();
        let (mut acc, mut acc_min) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let (mut acc1, mut acc1_min) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let xp = g.qs.as_ptr();
        let bp = g.bsums.as_ptr();
        let dp = g.d.as_ptr();
        for (b, ub) in u.iter().enumerate().take(nb) {
            let x = xp.add(b * QUADS * TILE * 4);
            // (Macros, not closures: the intrinsics stay in this function's features.)
            macro_rules! bsums {
                ($p:expr) => {
                    _mm512_loadu_si512(bp.add((b * 8 + $p) * TILE) as *const __m512i)
                };
            }
            macro_rules! pair {
                ($p:expr) => {
                    _mm512_set1_epi32(ub.pairs[$p])
                };
            }
            let dx = _mm512_loadu_ps(dp.add(b * TILE));
            let dw = _mm512_set1_ps(ub.d);
            if F == F_Q4K || F == F_Q5K {
                let s = scaled_dots::<8, 8>(ub.q.as_ptr(), x, &ub.scales);
                // Per 64 values: scaled dots and Σ min·bsum of sub-blocks 2sb and 2sb + 1.
                let mut isum = [zero; 4];
                let mut imin = [zero; 4];
                for sb in 0..4 {
                    isum[sb] = _mm512_add_epi32(s[2 * sb], s[2 * sb + 1]);
                    let m = _mm512_dpwssd_epi32(zero, bsums!(2 * sb), pair!(2 * sb));
                    imin[sb] = _mm512_dpwssd_epi32(m, bsums!(2 * sb + 1), pair!(2 * sb + 1));
                }
                let isum_all = _mm512_add_epi32(
                    _mm512_add_epi32(isum[0], isum[1]),
                    _mm512_add_epi32(isum[2], isum[3]),
                );
                let imin_all = _mm512_add_epi32(
                    _mm512_add_epi32(imin[0], imin[1]),
                    _mm512_add_epi32(imin[2], imin[3]),
                );
                if F == F_Q4K {
                    let dd = _mm512_mul_ps(dx, dw);
                    let dm = _mm512_mul_ps(dx, _mm512_set1_ps(ub.dmin));
                    for sb in 0..4 {
                        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[sb]), dd, acc);
                        acc_min = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin[sb]), dm, acc_min);
                    }
                    if per_256 {
                        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum_all), dd, acc1);
                        acc1_min = _mm512_fmadd_ps(_mm512_cvtepi32_ps(imin_all), dm, acc1_min);
                    }
                } else {
                    // r = fma(imin, −dmin_w, isum·d_w); y = fma(r, d_x, y).
                    let part = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(imin_all),
                        _mm512_set1_ps(-ub.dmin),
                        _mm512_mul_ps(_mm512_cvtepi32_ps(isum_all), dw),
                    );
                    acc = _mm512_fmadd_ps(part, dx, acc);
                }
            } else {
                let s = scaled_dots::<4, 16>(ub.q.as_ptr(), x, &ub.scales);
                let mut sum = [zero; 4];
                for (i, s) in s.iter().enumerate() {
                    sum[i % 4] = _mm512_add_epi32(sum[i % 4], *s);
                }
                // offset × Σ scale·bsum, taken back out.
                let mut offset = zero;
                for p in 0..8 {
                    offset = _mm512_dpwssd_epi32(offset, bsums!(p), pair!(p));
                }
                let isum = _mm512_sub_epi32(
                    _mm512_add_epi32(
                        _mm512_add_epi32(sum[0], sum[1]),
                        _mm512_add_epi32(sum[2], sum[3]),
                    ),
                    offset,
                );
                // y = fma(isum·d_w, d_x, y).
                acc = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(isum), dw), dx, acc);
            }
        }
        let y = if F == F_Q4K {
            let y64 = _mm512_sub_ps(acc, acc_min);
            let y256 = _mm512_sub_ps(acc1, acc1_min);
            _mm512_mask_blend_ps(per_64, y256, y64)
        } else {
            acc
        };
        _mm512_storeu_ps(out.as_mut_ptr(), y);
    }
}
