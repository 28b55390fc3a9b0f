//! Q5_0 and Q4_1 products on AVX2 with one lane per activation row, for prompts and
//! batched decoding on CPUs without AVX-512 VNNI (where [`super::wide`] serves them).
//!
//! Every output is the same bits as the 4-row kernel `super::x86::q5_0_avx2` (and so as
//! llama.cpp's `ggml_vec_dot_q5_0_q8_0`): per output eight f32 lanes, lane `l` of block `b`
//! adding `fma(d_w·d_x, float(Σ q_w·q_x over values 4l..4l + 4), acc_l)`, in block order,
//! then `hsum_float_8`. Here the eight lanes of one output live in eight registers
//! (`acc[l]`), each holding that lane for eight activation rows:
//!
//! - Activations are laid out `[block][l][row][4]` and stored offset to unsigned bytes
//!   (`q_x + 128`), so `vpmaddubsw` with the weights' four values of lane `l` broadcast
//!   (signed, −16..=15: no saturation, |pair| ≤ 2·255·16) and `vpmaddwd` by ones give
//!   `Σ (q_x + 128)·q_w` for the eight rows; subtracting the weights' `128·Σ q_w` (shared by
//!   all rows) leaves the same integer as the 4-row kernel's.
//! - `d_w·d_x` for the eight rows is one `vmulps` (commutative: the same bits), and each
//!   `vfmadd` is, lane by lane, the scalar kernel's.
//! - `hsum_float_8` adds an output's lanes as `((a0 + a4) + (a2 + a6)) + ((a1 + a5) +
//!   (a3 + a7))`; with the lanes in separate registers that is seven `vaddps` for all eight
//!   rows, in that order.
//!
//! Q4_1 (`ggml_vec_dot_q4_1_q8_1`) the same way, with two differences: its weights are
//! unsigned already (0..=15), so they are the unsigned operand of `vpmaddubsw` and the
//! activations stay signed (no offset); and each output adds `summs`, the chain
//! `fma(m_w, s_x, summs)` over blocks, after `hsum_float_8` — one `vfmadd` per block for all
//! eight rows, lane by lane the scalar chain.
//!
//! Padding rows are zero and dropped; no lane reads another row's data.

use super::{for_column_ranges, QuantizedRows, WeightFormat, Q4_1_BYTES, Q5_0_BYTES, QK};
use crate::nn::kernels::SendPtr;

/// Activation rows per group: one ymm of f32 lanes.
const ROWS: usize = 8;

/// Activation rows from which products take these kernels: fewer would leave most lanes
/// idle.
pub(super) const MIN_ROWS: usize = 5;

/// Weight rows unpacked together and multiplied with every group of activation rows.
const COLUMNS: usize = 8;

/// Up to [`ROWS`] consecutive activation rows (Q8_0), laid out for the kernel.
pub(super) struct Group {
    /// The first row of the group in the activation matrix.
    i0: usize,
    /// Rows in the group (1..=ROWS).
    rows: usize,
    /// `[block][8][ROWS][4]` values: plus 128 (unsigned) for Q5_0, as they are (signed)
    /// for Q4_1; padding rows are zero.
    qs: Vec<u8>,
    /// `[block][ROWS]` activation scales; padding lanes are zero.
    d: Vec<f32>,
    /// `[block][ROWS]` Q8_1 sums (`d × Σ q`) for Q4_1; empty for Q5_0.
    s: Vec<f32>,
}

/// Rearranges `m` quantized rows of `nb` blocks into groups of [`ROWS`] rows for the
/// kernels of `format` (Q5_0: values offset by 128; Q4_1: values as they are, and sums).
pub(super) fn pack(xq: &QuantizedRows, m: usize, nb: usize, format: WeightFormat) -> Vec<Group> {
    let offset = if format == WeightFormat::Q4_1 {
        0
    } else {
        0x80
    };
    let with_sums = format == WeightFormat::Q4_1;
    (0..m)
        .step_by(ROWS)
        .map(|i0| {
            let rows = ROWS.min(m - i0);
            let mut qs = vec![0u8; nb * QK * ROWS];
            let mut d = vec![0f32; nb * ROWS];
            let mut sums = vec![0f32; if with_sums { nb * ROWS } else { 0 }];
            for r in 0..rows {
                for b in 0..nb {
                    let xb = (i0 + r) * nb + b;
                    let src = &xq.qs[xb * QK..(xb + 1) * QK];
                    for (l, quad) in src.chunks_exact(4).enumerate() {
                        let at = ((b * 8 + l) * ROWS + r) * 4;
                        for (q, &v) in qs[at..at + 4].iter_mut().zip(quad) {
                            *q = v as u8 ^ offset;
                        }
                    }
                    d[b * ROWS + r] = xq.d[xb];
                    if with_sums {
                        sums[b * ROWS + r] = xq.s[xb];
                    }
                }
            }
            Group {
                i0,
                rows,
                qs,
                d,
                s: sums,
            }
        })
        .collect()
}

/// One weight block unpacked for the kernel.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Unpacked {
    /// The 32 values as bytes: signed (`q − 16`) for Q5_0, unsigned (0..=15) for Q4_1.
    q: [i8; QK],
    /// `128 × Σ q` of each lane's four values (Q5_0; zero for Q4_1).
    offset: [i32; 8],
    /// The block scale `d_w`.
    d: f32,
    /// The block minimum `m_w` (Q4_1; zero for Q5_0).
    m: f32,
}

impl Unpacked {
    const ZERO: Self = Self {
        q: [0; QK],
        offset: [0; 8],
        d: 0.0,
        m: 0.0,
    };
}

/// The `m × n` product of `format` (Q5_0 or Q4_1) weight rows `w` (`n` rows of `nb`
/// blocks) with the `m` activation rows packed in `groups`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `format` is Q5_0 or Q4_1; `w` holds `n` rows of `nb`
/// blocks of it and `groups` were packed for it from `m` rows of `nb` blocks.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn matmul(
    format: WeightFormat,
    w: &[u8],
    n: usize,
    nb: usize,
    m: usize,
    groups: &[Group],
) -> Vec<f32> {
    let q4_1 = format == WeightFormat::Q4_1;
    let row_bytes = nb * if q4_1 { Q4_1_BYTES } else { Q5_0_BYTES };
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
                let u = &mut unpacked[c * nb..(c + 1) * nb];
                unsafe {
                    if q4_1 {
                        x86::unpack_q4_1(wrow, u)
                    } else {
                        x86::unpack(wrow, u)
                    }
                };
            }
            for g in groups {
                let mut tile = [[0f32; ROWS]; COLUMNS];
                for (c, col) in tile.iter_mut().enumerate().take(cols) {
                    // SAFETY: as above; `unpacked` holds `nb` blocks per column and `g`
                    // rows of `nb` blocks.
                    let u = &unpacked[c * nb..(c + 1) * nb];
                    unsafe {
                        if q4_1 {
                            x86::kernel_q4_1(u, g, nb, col)
                        } else {
                            x86::kernel(u, g, nb, col)
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

    use super::super::x86::{bytes_from_bits_32, bytes_from_nibbles_32, f16_at};
    use super::{Group, Unpacked, Q4_1_BYTES, Q5_0_BYTES, QK, ROWS};

    /// Unpacks the `out.len()` Q5_0 blocks of one weight row `w` (as the 4-row kernel forms
    /// the signed values: the nibbles, with `0xf0` where the fifth bit is clear).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn unpack(w: &[u8], out: &mut [Unpacked]) {
        debug_assert!(w.len() >= out.len() * Q5_0_BYTES);
        let high = _mm256_set1_epi8(0xf0u8 as i8);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        for (b, u) in out.iter_mut().enumerate() {
            let blk = w.as_ptr().add(b * Q5_0_BYTES);
            u.d = f16_at(blk);
            let nibbles = bytes_from_nibbles_32(blk.add(6));
            let q = _mm256_or_si256(
                nibbles,
                _mm256_andnot_si256(bytes_from_bits_32(blk.add(2)), high),
            );
            _mm256_storeu_si256(u.q.as_mut_ptr() as *mut __m256i, q);
            // 128 × the sum of each lane's four values (exact in i16, then i32).
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
            _mm256_storeu_si256(
                u.offset.as_mut_ptr() as *mut __m256i,
                _mm256_slli_epi32(sums, 7),
            );
        }
    }

    /// One unpacked weight row `u` against the rows of `g`, written to `out`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; `u` holds `nb` blocks and `g` was packed from rows of
    /// `nb` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn kernel(u: &[Unpacked], g: &Group, nb: usize, out: &mut [f32; ROWS]) {
        debug_assert!(u.len() >= nb && g.qs.len() >= nb * QK * ROWS && g.d.len() >= nb * ROWS);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 8];
        let xp = g.qs.as_ptr();
        let dp = g.d.as_ptr();
        for (b, ub) in u.iter().enumerate().take(nb) {
            let dd = _mm256_mul_ps(_mm256_loadu_ps(dp.add(b * ROWS)), _mm256_set1_ps(ub.d));
            for (l, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_si256(xp.add((b * 8 + l) * ROWS * 4) as *const __m256i);
                let wq = _mm256_set1_epi32(std::ptr::read_unaligned(
                    ub.q.as_ptr().add(4 * l) as *const i32
                ));
                let s = _mm256_madd_epi16(_mm256_maddubs_epi16(x, wq), ones);
                let s = _mm256_sub_epi32(s, _mm256_set1_epi32(ub.offset[l]));
                *acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), *acc);
            }
        }
        // hsum_float_8 of every row at once.
        let y = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
            _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])),
        );
        _mm256_storeu_ps(out.as_mut_ptr(), y);
    }

    /// Unpacks the `out.len()` Q4_1 blocks of one weight row `w`: the nibbles in the 4-row
    /// kernel's order (low nibbles are values 0..16, high ones 16..32), the scale and the
    /// minimum.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn unpack_q4_1(w: &[u8], out: &mut [Unpacked]) {
        debug_assert!(w.len() >= out.len() * Q4_1_BYTES);
        for (b, u) in out.iter_mut().enumerate() {
            let blk = w.as_ptr().add(b * Q4_1_BYTES);
            u.d = f16_at(blk);
            u.m = f16_at(blk.add(2));
            let q = bytes_from_nibbles_32(blk.add(4));
            _mm256_storeu_si256(u.q.as_mut_ptr() as *mut __m256i, q);
            u.offset = [0; 8];
        }
    }

    /// One unpacked Q4_1 weight row `u` against the rows of `g` (packed for Q4_1), written
    /// to `out`: per row `hsum_float_8(acc) + summs`, as `super::super::x86::q4_1_avx2`.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are present; `u` holds `nb` blocks and `g` was packed for Q4_1
    /// from rows of `nb` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn kernel_q4_1(u: &[Unpacked], g: &Group, nb: usize, out: &mut [f32; ROWS]) {
        debug_assert!(u.len() >= nb && g.qs.len() >= nb * QK * ROWS);
        debug_assert!(g.d.len() >= nb * ROWS && g.s.len() >= nb * ROWS);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut summs = _mm256_setzero_ps();
        let xp = g.qs.as_ptr();
        let dp = g.d.as_ptr();
        let sp = g.s.as_ptr();
        for (b, ub) in u.iter().enumerate().take(nb) {
            // The scalar chain `summs = fma(m_w, s_x, summs)`, all rows at once.
            summs = _mm256_fmadd_ps(
                _mm256_set1_ps(ub.m),
                _mm256_loadu_ps(sp.add(b * ROWS)),
                summs,
            );
            let dd = _mm256_mul_ps(_mm256_loadu_ps(dp.add(b * ROWS)), _mm256_set1_ps(ub.d));
            for (l, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_si256(xp.add((b * 8 + l) * ROWS * 4) as *const __m256i);
                let wq = _mm256_set1_epi32(std::ptr::read_unaligned(
                    ub.q.as_ptr().add(4 * l) as *const i32
                ));
                // Unsigned weights by signed activations: |pair| ≤ 2·15·128, no saturation.
                let s = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, x), ones);
                *acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), *acc);
            }
        }
        let y = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6])),
            _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7])),
        );
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(y, summs));
    }
}
