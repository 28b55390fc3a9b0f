//! Q4_1, Q8_0, Q5_0 and Q5_1 products of one weight row with up to [`TILE`] = 16 activation
//! rows at once, on 512-bit registers (AVX-512 F + VNNI), for batched decoding and prompts.
//!
//! Every output is the same bits as the 4-row kernels in `super::x86` give (and so as
//! llama.cpp's `ggml_vec_dot_*`), because only the float operations fix the result and each
//! output still gets exactly these, in this order:
//!
//! - per block `b`, in block order: `acc_lane = fma(d_w·d_x, float(isum_lane), acc_lane)` in
//!   eight lanes, where `isum_lane` is the integer sum of four byte products;
//! - `hsum_float_8(acc)` (the same `super::x86::hsum`);
//! - for Q4_1 and Q5_1, `summs = fma(m_w, s_x, summs)` in block order, added after `hsum`.
//!
//! What changes is only how many outputs one instruction serves:
//!
//! - The activations of a group of rows are laid out block by block (`[block][row][32]`),
//!   so two rows' values of one block are one 64-byte load, and one `vpdpbusd` on 512 bits
//!   gives the eight lane sums of both (the weight block repeated in both halves). Lanes
//!   never mix in `vpdpbusd`, `vcvtdq2ps` or `vfmadd`, so a zmm accumulator is two
//!   independent 8-lane accumulators, each reduced by `hsum` from its own 256-bit half.
//! - The scales `d_x` and sums `s_x` are laid out `[block][row]`, so `d_w·d_x` for all 16
//!   rows is one `vmulps` and `m_w·s_x + summs` one `vfmadd` across rows: each lane is the
//!   same single f32 multiply (IEEE multiplication is commutative, so `d_x·d_w` and
//!   `d_w·d_x` are the same bits) or the same fused multiply-add as the scalar code. A
//!   `vpermps` then spreads row `2p`'s product over the low half and row `2p + 1`'s over the
//!   high half.
//! - The integer sums are exact whichever instructions produce them (|products| ≤ 255·128,
//!   four per lane, and `vpdpbusd` does not saturate). `vpdpbusd` multiplies unsigned by
//!   signed bytes. Q4_1 and Q5_1 weights are unsigned already. For the signed Q8_0 and Q5_0
//!   weights the activations are stored offset instead (`q_x + 128`, i.e. `q_x ^ 0x80`, in
//!   1..=255), and the accumulator starts from `-128 × Σ q_w` of the lane's four weights
//!   (one `vpdpbusd` per weight block, shared by all rows):
//!   `Σ (q_x + 128)·q_w − 128·Σ q_w = Σ q_w·q_x`, the same integer as the 4-row kernels'
//!   `vpsignb` trick. (Offsetting the weights instead would need a correction per activation
//!   row and lane, an array as large as the activations that pushed 16 rows of 2048 values
//!   out of L1.)
//!
//! Padding rows (a group of an odd count, or fewer than 16) hold zeros and are dropped; a
//! row's outputs never depend on which other rows share its group, since no lane reads
//! another row's data.

use super::{for_column_ranges, QuantizedRows, WeightFormat, QK};
use crate::nn::kernels::SendPtr;

/// Activation rows one wide kernel call reads: one zmm of f32 scales per block.
pub(super) const TILE: usize = 16;

/// Up to [`TILE`] consecutive activation rows, laid out block by block for the wide kernels.
pub(super) struct Group {
    /// The first row of the group in the activation matrix.
    i0: usize,
    /// Rows in the group (1..=TILE).
    rows: usize,
    /// Row pairs in the layout: `rows` rounded up to even, halved.
    pairs: usize,
    /// `[block][2 · pairs][32]` quantized values; padding rows are zero.
    qs: Vec<i8>,
    /// `[block][TILE]` activation scales; padding lanes are zero.
    d: Vec<f32>,
    /// `[block][TILE]` Q8_1 sums (`d × Σ q`); empty for Q8_0 activations.
    s: Vec<f32>,
}

/// Whether the wide kernels for `format` take the activations offset to unsigned bytes
/// (`q + 128`): those whose weights are signed.
pub(super) fn offset_activations(format: WeightFormat) -> bool {
    matches!(format, WeightFormat::Q8_0 | WeightFormat::Q5_0)
}

/// Rearranges `m` quantized rows of `nb` blocks into groups of [`TILE`] rows, with the
/// values stored as `q + 128` (unsigned) where `offset`.
pub(super) fn pack(xq: &QuantizedRows, m: usize, nb: usize, offset: bool) -> Vec<Group> {
    (0..m)
        .step_by(TILE)
        .map(|i0| {
            let rows = TILE.min(m - i0);
            let pairs = rows.div_ceil(2);
            let stride = 2 * pairs;
            let mut qs = vec![0i8; nb * stride * QK];
            let mut d = vec![0f32; nb * TILE];
            let mut s = if xq.s.is_empty() {
                Vec::new()
            } else {
                vec![0f32; nb * TILE]
            };
            for r in 0..rows {
                let i = i0 + r;
                for b in 0..nb {
                    let src = &xq.qs[(i * nb + b) * QK..(i * nb + b + 1) * QK];
                    let at = b * stride + r;
                    let dst = &mut qs[at * QK..(at + 1) * QK];
                    if offset {
                        for (q, v) in dst.iter_mut().zip(src) {
                            *q = (*v as u8 ^ 0x80) as i8;
                        }
                    } else {
                        dst.copy_from_slice(src);
                    }
                    d[b * TILE + r] = xq.d[i * nb + b];
                    if !s.is_empty() {
                        s[b * TILE + r] = xq.s[i * nb + b];
                    }
                }
            }
            Group {
                i0,
                rows,
                pairs,
                qs,
                d,
                s,
            }
        })
        .collect()
}

/// The `m × n` output of `f(j, group, out)`, which writes column `j` of the group's rows to
/// the first `group.rows` values of `out`.
///
/// Columns are split over the threads by `super::for_column_ranges`, so the result does not
/// depend on the thread count.
pub(super) fn by_columns<F>(m: usize, n: usize, groups: &[Group], f: F) -> Vec<f32>
where
    F: Fn(usize, &Group, &mut [f32; TILE]) + Sync,
{
    let mut out = vec![0f32; m * n];
    let out_ptr = SendPtr(out.as_mut_ptr());
    for_column_ranges(n, 16, 512, |columns| {
        let (j0, j1) = (columns.start, columns.end);
        for g in groups {
            // Sixteen columns' results are gathered and written row by row: sixteen
            // contiguous floats per row rather than one float per row and column, which
            // touched a cache line of each output row for every column.
            for jt in (j0..j1).step_by(TILE) {
                let cols = TILE.min(j1 - jt);
                let mut tile = [[0f32; TILE]; TILE];
                // The kernels write their results in place: returned by value, sixteen
                // scalar stores were reread at once and missed store forwarding (~10 % of
                // a 16-row decoding step's product time).
                for (c, col) in tile.iter_mut().enumerate().take(cols) {
                    f(jt + c, g, col);
                }
                for r in 0..g.rows {
                    for (c, col) in tile.iter().enumerate().take(cols) {
                        // SAFETY: (g.i0 + r, jt + c) lies in the m × n output and each
                        // column belongs to one chunk, so no two threads write the same
                        // element.
                        unsafe { *out_ptr.get().add((g.i0 + r) * n + jt + c) = col[r] };
                    }
                }
            }
        }
    });
    out
}

/// Dots of one weight row `w` (`nb` blocks of `format`) with the rows of `g`.
///
/// # Safety
/// The CPU has AVX-512 F and VNNI, AVX2, FMA and F16C; `w` holds `nb` blocks and `g` was
/// packed from rows of `nb` blocks with `offset_activations(format)`.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn dot(
    format: WeightFormat,
    w: &[u8],
    g: &Group,
    nb: usize,
    out: &mut [f32; TILE],
) {
    use x86::*;
    macro_rules! by_pairs {
        ($f:expr) => {
            match g.pairs {
                1 => kernel::<{ $f }, 1>(w, g, nb, out),
                2 => kernel::<{ $f }, 2>(w, g, nb, out),
                3 => kernel::<{ $f }, 3>(w, g, nb, out),
                4 => kernel::<{ $f }, 4>(w, g, nb, out),
                5 => kernel::<{ $f }, 5>(w, g, nb, out),
                6 => kernel::<{ $f }, 6>(w, g, nb, out),
                7 => kernel::<{ $f }, 7>(w, g, nb, out),
                _ => kernel::<{ $f }, 8>(w, g, nb, out),
            }
        };
    }
    debug_assert!(g.pairs >= 1 && g.pairs <= TILE / 2);
    match format {
        WeightFormat::Q4_1 => by_pairs!(F_Q4_1),
        WeightFormat::Q8_0 => by_pairs!(F_Q8_0),
        WeightFormat::Q5_0 => by_pairs!(F_Q5_0),
        WeightFormat::Q5_1 => by_pairs!(F_Q5_1),
        _ => unreachable!("the wide kernels serve Q4_1, Q8_0, Q5_0 and Q5_1"),
    }
}

/// Off x86 the wide kernels never run (`Path::Wide` needs `Level::Vnni`).
///
/// # Safety
/// Never called.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn dot(
    format: WeightFormat,
    w: &[u8],
    g: &Group,
    nb: usize,
    out: &mut [f32; TILE],
) {
    let _ = (format, w, g, nb, out);
    unreachable!("the wide kernels run only on x86 with AVX-512 VNNI")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86::{bytes_from_bits_32, bytes_from_nibbles_32, f16_at, hsum};
    use super::super::{Q4_1_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q8_0_BYTES, QK};
    use super::{Group, TILE};

    pub(super) const F_Q4_1: u8 = 0;
    pub(super) const F_Q8_0: u8 = 1;
    pub(super) const F_Q5_0: u8 = 2;
    pub(super) const F_Q5_1: u8 = 3;

    /// One weight row against `2 · P` packed rows; `F` picks the format (`F_*`), so each
    /// instance has its unpacking inlined and its accumulators in registers (`P` ≤ 8 zmm
    /// accumulators and `P` permutation indices of the 32 zmm registers).
    #[target_feature(enable = "avx512f,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn kernel<const F: u8, const P: usize>(
        w: &[u8],
        g: &Group,
        nb: usize,
        out: &mut [f32; TILE],
    ) {
        let with_min = F == F_Q4_1 || F == F_Q5_1;
        let signed = F == F_Q8_0 || F == F_Q5_0;
        let block_bytes = match F {
            F_Q4_1 => Q4_1_BYTES,
            F_Q8_0 => Q8_0_BYTES,
            F_Q5_0 => Q5_0_BYTES,
            _ => Q5_1_BYTES,
        };
        debug_assert!(P == g.pairs && w.len() >= nb * block_bytes);
        debug_assert!(g.qs.len() >= nb * 2 * P * QK && g.d.len() >= nb * TILE);
        debug_assert!(!with_min || g.s.len() >= nb * TILE);
        let fifth = _mm256_set1_epi8(0x10);
        let high = _mm256_set1_epi8(0xf0u8 as i8);
        let offset = _mm512_set1_epi8(0x80u8 as i8);
        // Lanes 0..8 take row 2p's scale, lanes 8..16 row 2p + 1's.
        let mut idx = [_mm512_setzero_si512(); P];
        for (p, idx) in idx.iter_mut().enumerate() {
            let lo = (2 * p) as i32;
            *idx = _mm512_mask_set1_epi32(_mm512_set1_epi32(lo), 0xff00, lo + 1);
        }
        let mut acc = [_mm512_setzero_ps(); P];
        let mut summs = _mm512_setzero_ps();
        let wp = w.as_ptr();
        let qp = g.qs.as_ptr();
        let dp = g.d.as_ptr();
        let sp = g.s.as_ptr();
        for b in 0..nb {
            let blk = wp.add(b * block_bytes);
            let dw = f16_at(blk);
            // The block's 32 weights as bytes: unsigned (Q4_1, Q5_1) or signed (Q8_0, and
            // Q5_0's `q - 16` as the 4-row kernel forms it).
            let qx = match F {
                F_Q4_1 => bytes_from_nibbles_32(blk.add(4)),
                F_Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
                F_Q5_0 => {
                    let nibbles = bytes_from_nibbles_32(blk.add(6));
                    _mm256_or_si256(
                        nibbles,
                        _mm256_andnot_si256(bytes_from_bits_32(blk.add(2)), high),
                    )
                }
                _ => {
                    let nibbles = bytes_from_nibbles_32(blk.add(8));
                    _mm256_or_si256(
                        nibbles,
                        _mm256_and_si256(bytes_from_bits_32(blk.add(4)), fifth),
                    )
                }
            };
            let qx2 = _mm512_inserti64x4(_mm512_castsi256_si512(qx), qx, 1);
            // Signed weights meet activations stored `+ 128`: start each lane from
            // `-128 × Σ q_w` of its four weights.
            let init = if signed {
                let zero = _mm512_setzero_si512();
                _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, offset, qx2))
            } else {
                _mm512_setzero_si512()
            };
            // d_x·d_w for every row: each lane the scalar kernels' one f32 product.
            let dd = _mm512_mul_ps(_mm512_loadu_ps(dp.add(b * TILE)), _mm512_set1_ps(dw));
            if with_min {
                // fma(m_w, s_x, summs) for every row, as the scalar chain per output.
                let mw = f16_at(blk.add(2));
                summs =
                    _mm512_fmadd_ps(_mm512_set1_ps(mw), _mm512_loadu_ps(sp.add(b * TILE)), summs);
            }
            for p in 0..P {
                let at = b * 2 * P + 2 * p;
                let qy = _mm512_loadu_si512(qp.add(at * QK) as *const __m512i);
                let isum = if signed {
                    _mm512_dpbusd_epi32(init, qy, qx2)
                } else {
                    _mm512_dpbusd_epi32(init, qx2, qy)
                };
                let scale = _mm512_permutexvar_ps(idx[p], dd);
                acc[p] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[p]);
            }
        }
        let mut sm = [0f32; TILE];
        _mm512_storeu_ps(sm.as_mut_ptr(), summs);
        for (p, acc) in acc.iter().enumerate() {
            let lo = _mm512_castps512_ps256(*acc);
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
            out[2 * p] = hsum(lo);
            out[2 * p + 1] = hsum(hi);
            if with_min {
                // hsum(acc) + summs: the scalar kernels' last addition (skipped for Q8_0
                // and Q5_0, where even `+ 0.0` would turn a -0.0 into +0.0).
                out[2 * p] += sm[2 * p];
                out[2 * p + 1] += sm[2 * p + 1];
            }
        }
    }
}
