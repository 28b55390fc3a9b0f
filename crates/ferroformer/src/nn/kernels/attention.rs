//! Scaled dot-product attention `softmax(scale q k^T + bias) v` on the CPU, one (batch, head)
//! block per task, forward and backward side by side:
//!
//! - [`attention`]: inference, reading q, k and v in place through [`HeadLayout`]s (straight
//!   out of the fused projection: no head split copies) and writing the heads merged as
//!   `(batch, q_len, heads * head_dim)`, with the reference loop ([`attention_into`]) or
//!   llama.cpp's ([`ggml_attention_into`]);
//! - [`attention_packed`]: inference over sequences packed end to end without padding;
//! - [`attention_op`] and [`attention_packed_op`]: the differentiable op for training, whose
//!   backward pass recomputes each block's probabilities instead of keeping them.
//!
//! Every entry point checks that q, k, v, the biases and the output cover the extents their
//! layouts and the dimensions reach before any block reads through a pointer.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::math::{dot_f32, exp_shifted_in_place, hsum16, round_f16, v_expf, GGML_LANES};
use super::{contiguous_f32, f16_data, f32_data, with_data, SendPtr};
use crate::error::{Error, Result};
use crate::nn::dropout::{drop_threshold, mask_bits};
use crate::nn::mask::{MASKED, OUTSIDE_WINDOW};

/// Biases at or below this mask a key as padding (`MASKED`); `OUTSIDE_WINDOW` is above it.
const PADDING_LIMIT: f32 = MASKED / 2.0 + OUTSIDE_WINDOW / 2.0;
use crate::nn::ops::Arithmetic;

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

    /// Values a buffer must hold for `(batch, heads, seq, head_dim)` read through this layout.
    pub fn extent(&self, batch: usize, heads: usize, seq: usize, head_dim: usize) -> usize {
        if batch == 0 || heads == 0 || seq == 0 || head_dim == 0 {
            return 0;
        }
        self.offset + (batch - 1) * self.sb + (heads - 1) * self.sh + (seq - 1) * self.ss + head_dim
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
    /// A view of a 4-D bias over `data` whose every dimension is 1 or the attention's own
    /// (`target`: batch, heads, q_len, k_len), and whose strides stay inside `data`.
    pub fn new(
        data: &'a [f32],
        dims: &[usize],
        stride: &[usize],
        target: [usize; 4],
    ) -> Result<Self> {
        let fits = dims.len() == 4
            && stride.len() == 4
            && (0..4).all(|i| dims[i] == 1 || dims[i] == target[i]);
        if !fits {
            return Err(Error::shape(
                "attention bias",
                format!("broadcastable to {target:?}"),
                dims,
            ));
        }
        let s = |i: usize| if dims[i] == 1 { 0 } else { stride[i] };
        let strides = [s(0), s(1), s(2), s(3)];
        if target.iter().all(|&n| n > 0) {
            let last: usize = (0..4).map(|i| (target[i] - 1) * strides[i]).sum();
            if last >= data.len() {
                return Err(Error::Invalid(format!(
                    "attention bias of shape {dims:?} reaches value {last} of a buffer of {}",
                    data.len()
                )));
            }
        }
        Ok(Self { data, strides })
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

/// Scaled dot-product attention with `arithmetic`'s loop ([`attention_into`] or
/// [`ggml_attention_into`]); returns `(batch, q_len, heads * head_dim)`. `biases` are
/// additive tensors broadcastable to `(batch, heads, q_len, k_len)`. `None` when an operand
/// is not f32 on the CPU. `softcap` (llama.cpp's loop only: `None` is returned for the
/// reference loop, which the composed ops replace) bends the products before the scale.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: Heads,
    k: Heads,
    v: Heads,
    dims: AttentionDims,
    biases: &[&Tensor],
    scale: f32,
    softcap: Option<f32>,
    arithmetic: Arithmetic,
) -> Result<Option<Tensor>> {
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
    let mut all = vec![q.tensor];
    all.extend(biases.iter().copied());
    let guards: Vec<_> = all.iter().map(|t| t.storage_and_layout()).collect();
    let data: Option<Vec<&[f32]>> = guards.iter().map(|(s, l)| f32_data(s, l)).collect();
    let Some(data) = data else { return Ok(None) };
    let kv_guards = [k.tensor.storage_and_layout(), v.tensor.storage_and_layout()];
    let [(ks, kl), (vs, vl)] = [&kv_guards[0], &kv_guards[1]].map(|(s, l)| (&**s, l));
    let target = [batch, heads, q_len, k_len];
    let bias_views: Vec<BiasView> = biases
        .iter()
        .zip(&data[1..])
        .map(|(t, d)| BiasView::new(d, t.dims(), t.stride(), target))
        .collect::<Result<_>>()?;
    let layouts = [q.layout, k.layout, v.layout];
    match (arithmetic, f32_data(ks, kl).zip(f32_data(vs, vl))) {
        (Arithmetic::Reference, _) if softcap.is_some() => return Ok(None),
        (Arithmetic::Reference, Some((kd, vd))) => attention_into(
            &mut out,
            [data[0], kd, vd],
            layouts,
            dims,
            &bias_views,
            scale,
            None,
        )?,
        (Arithmetic::Ggml, Some((kd, vd))) => {
            let inputs = HeadInputs {
                q: data[0],
                kv: [kd, vd],
                layouts,
                biases: &bias_views,
                dims,
                scale,
                softcap,
            };
            ggml_attention_into(&mut out, &inputs)?
        }
        // llama.cpp's f16 cache, read as it is by the decoding path; for anything else the
        // caller widens it to f32 (the same values).
        (Arithmetic::Ggml, None) => match f16_data(ks, kl).zip(f16_data(vs, vl)) {
            Some((kd, vd)) if q_len == 1 && decodes_f16(head_dim) => {
                let inputs = HeadInputs {
                    q: data[0],
                    kv: [kd, vd],
                    layouts,
                    biases: &bias_views,
                    dims,
                    scale,
                    softcap,
                };
                ggml_attention_into(&mut out, &inputs)?
            }
            _ => return Ok(None),
        },
        (Arithmetic::Reference, None) => return Ok(None),
    }
    drop(kv_guards);
    drop(guards);
    Ok(Some(Tensor::from_vec(
        out,
        (batch, q_len, width),
        &Device::Cpu,
    )?))
}

/// Checks what the attention loops read and write: the head counts, `out`, and q, k and v
/// through their layouts.
fn check_operands(
    out: &[f32],
    lens: [usize; 3],
    [q, k, v]: [HeadLayout; 3],
    dims: AttentionDims,
) -> Result<()> {
    let AttentionDims {
        batch,
        heads,
        kv_heads,
        q_len,
        k_len,
        head_dim,
    } = dims;
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::Invalid(format!(
            "attention with {heads} query heads and {kv_heads} key/value heads"
        )));
    }
    let needed = [
        (
            "attention output",
            out.len(),
            batch * q_len * heads * head_dim,
        ),
        (
            "attention queries",
            lens[0],
            q.extent(batch, heads, q_len, head_dim),
        ),
        (
            "attention keys",
            lens[1],
            k.extent(batch, kv_heads, k_len, head_dim),
        ),
        (
            "attention values",
            lens[2],
            v.extent(batch, kv_heads, k_len, head_dim),
        ),
    ];
    for (what, have, need) in needed {
        if have < need {
            return Err(Error::Invalid(format!(
                "{what}: the layout reaches {need} values but the buffer holds {have}"
            )));
        }
    }
    Ok(())
}

/// Scaled dot-product attention for every (batch, head) in parallel, from q, k and v in
/// `data` through their layouts, into `out` `(batch, q_len, heads * head_dim)` (heads merged).
/// Inference ([`attention`]) and the training op ([`attention_op`]) both run this.
pub(crate) fn attention_into(
    out: &mut [f32],
    data: [&[f32]; 3],
    layouts: [HeadLayout; 3],
    dims: AttentionDims,
    biases: &[BiasView],
    scale: f32,
    dropout: Option<AttnDropout>,
) -> Result<()> {
    check_operands(out, data.map(<[f32]>::len), layouts, dims)?;
    let [q, k, v] = layouts;
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
        let drop = |p: &mut [f32]| {
            if let Some(d) = dropout {
                d.apply(p, b, h, dims);
            }
        };
        unsafe {
            attend_block(
                blk,
                add,
                drop,
                out_ptr.get().add(b * q_len * width + h * head_dim),
                width,
            )
        };
    });
    Ok(())
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
        ::gemm::gemm(
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
            ::gemm::Parallelism::None,
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
/// values `dst_stride` apart from `dst`; `after_softmax` (dropout) sees the probabilities
/// before they weigh the values.
///
/// # Safety
/// `dst` must be valid for those writes and no other thread may write them concurrently; the
/// slices in `blk` must hold every row the strides reach.
unsafe fn attend_block(
    blk: Block,
    add_biases: impl Fn(&mut [f32]),
    after_softmax: impl Fn(&mut [f32]),
    dst: *mut f32,
    dst_stride: usize,
) {
    let mut probs = attention_probs(&blk, add_biases);
    after_softmax(&mut probs);
    let Block {
        q_len,
        k_len,
        head_dim,
        ..
    } = blk;
    ::gemm::gemm(
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
        ::gemm::Parallelism::None,
    );
}

/// Self-attention over sequences packed end to end without padding: `qkv` is the fused
/// projection `(1, tokens, q_dim + 2 kv_dim)` and `lengths` the sequence lengths in order
/// (summing to `tokens`); every sequence attends only to itself. Returns
/// `(1, tokens, heads * head_dim)`, or `None` for a tensor that is not f32 on the CPU.
pub(crate) fn attention_packed(
    qkv: &Tensor,
    lengths: &[usize],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
) -> Result<Option<Tensor>> {
    let qkv = qkv.contiguous()?;
    let (batch, tokens, cols) = qkv.dims3()?;
    let width = heads * head_dim;
    let kv_dim = kv_heads * head_dim;
    if batch != 1
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || cols != width + 2 * kv_dim
        || lengths.iter().sum::<usize>() != tokens
    {
        return Err(Error::Invalid(format!(
            "packed attention: {lengths:?} sequences of {heads} heads ({kv_heads} key/value) of \
             {head_dim} over a projection of shape {:?}",
            qkv.dims()
        )));
    }
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

/// Attention as llama.cpp computes it without flash attention and with an f16 KV cache,
/// into `out` `(batch, q_len, heads · head_dim)`, from `inputs`: q, k and v through their
/// layouts (keys and values holding f16 values: stored as f16, read by the decoding path,
/// or widened to f32 for any other), additive biases. [`attention`] prepares the inputs,
/// as for its reference loop.
///
/// Per query: scores `q16·k16`, scaled, plus the biases (masked keys skip the product);
/// softmax over 16-key blocks with [`v_expf`] and an f64 sum; probabilities rounded to f16;
/// output `Σ p16·v16` accumulated by key index. Both products follow the routine
/// llama.cpp's matrix product picks for them: with several query rows (a prompt) tinyBLAS
/// (one 16-lane FMA accumulator, then [`hsum16`]); with one (a decoding step) tinyBLAS
/// declines (`n < 2`) and `ggml_vec_dot_f16` runs (four 16-lane accumulators over 64-value
/// steps, folded pairwise, then [`hsum16`]). A row's own query count decides, not the
/// batch's, so a sequence decodes to the same result alone or batched.
///
/// Key indices count from the row's first real key: in llama.cpp a sequence starts at cache
/// cell 0, here a left-padded row of a batch starts later, and counting from its first real
/// key keeps the lanes and blocks (so the result) equal to the row alone. Keys that left a
/// sliding window still count (their bias is `OUTSIDE_WINDOW`, not `MASKED`), as cells of
/// llama.cpp's full-size window cache do.
pub(crate) fn ggml_attention_into<K: KvElement>(
    out: &mut [f32],
    inputs: &HeadInputs<K>,
) -> Result<()> {
    let [ks, vs] = inputs.kv;
    check_operands(
        out,
        [inputs.q.len(), ks.len(), vs.len()],
        inputs.layouts,
        inputs.dims,
    )?;
    let AttentionDims {
        batch: b,
        heads: h,
        q_len,
        k_len,
        head_dim: d,
        ..
    } = inputs.dims;
    let tasks: Vec<(usize, usize)> = (0..b)
        .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
        .collect();
    #[cfg(target_arch = "x86_64")]
    let decoding = q_len == 1 && decode_x86::applies(d);
    #[cfg(not(target_arch = "x86_64"))]
    let decoding = false;
    let widened = K::f32_slice(ks).zip(K::f32_slice(vs));
    let head = |t: (usize, usize)| {
        #[cfg(target_arch = "x86_64")]
        if decoding {
            // SAFETY: `applies` checked AVX2, FMA and F16C at run time.
            return unsafe { decode_x86::decode_head(inputs, t) };
        }
        // Checked below: f16 keys and values take the decoding path.
        widened.map_or_else(Vec::new, |(k, v)| {
            let inputs = HeadInputs {
                kv: [k, v],
                ..inputs.f32_parts()
            };
            #[cfg(target_arch = "x86_64")]
            if q_len > 1 && decode_x86::applies(d) {
                // SAFETY: as above; the head size is a multiple of 64.
                return unsafe { decode_x86::prompt_head(&inputs, t) };
            }
            attention_head(&inputs, t)
        })
    };
    if !decoding && widened.is_none() {
        return Err(Error::Invalid(format!(
            "f16 keys and values are read by the decoding path only (one query row, a head \
             size that is a multiple of 64, AVX2 + FMA + F16C), not {q_len} query rows of \
             head size {d}: widen them to f32 first"
        )));
    }
    // One (batch, head) per task; threads once there are a few microseconds of work.
    let results: Vec<Vec<f32>> = if b * h * q_len * k_len * d >= 1 << 15 {
        tasks.par_iter().map(|&t| head(t)).collect()
    } else {
        tasks.iter().map(|&t| head(t)).collect()
    };
    for (&(bi, hi), head_out) in tasks.iter().zip(&results) {
        for t in 0..q_len {
            let dst = ((bi * q_len + t) * h + hi) * d;
            out[dst..dst + d].copy_from_slice(&head_out[t * d..][..d]);
        }
    }
    Ok(())
}

/// How a key or value is stored: f32, or f16 as in llama.cpp's cache (read by the decoding
/// path, converted exactly).
pub(crate) trait KvElement: Copy + Send + Sync + 'static {
    /// The slice as f32 values, when that is what it holds.
    fn f32_slice(s: &[Self]) -> Option<&[f32]>;
    /// The exact f32 value.
    fn widen(self) -> f32;
    /// Eight values from `p` as f32 lanes.
    ///
    /// # Safety
    /// AVX, F16C; eight values readable at `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElement for f32 {
    fn f32_slice(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvElement for half::f16 {
    fn f32_slice(_: &[half::f16]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// Whether llama.cpp's loop reads f16 keys and values in place for `head_dim`-wide heads
/// and one query row on this CPU (otherwise they are widened to f32 first).
pub(crate) fn decodes_f16(head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return decode_x86::applies(head_dim);
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// What every (batch, head) task of [`ggml_attention_into`] reads: queries in f32, keys and
/// values as `K`.
pub(crate) struct HeadInputs<'a, K = f32> {
    pub q: &'a [f32],
    pub kv: [&'a [K]; 2],
    pub layouts: [HeadLayout; 3],
    pub biases: &'a [BiasView<'a>],
    pub dims: AttentionDims,
    pub scale: f32,
    /// Gemma 2's `cap · tanh(kq / cap)` on the products, before the scale and biases.
    pub softcap: Option<f32>,
}

impl<'a, K> HeadInputs<'a, K> {
    /// Everything but the keys and values (to build the f32 inputs of the same call).
    fn f32_parts(&self) -> HeadInputs<'a, f32> {
        HeadInputs {
            q: self.q,
            kv: [&[], &[]],
            layouts: self.layouts,
            biases: self.biases,
            dims: self.dims,
            scale: self.scale,
            softcap: self.softcap,
        }
    }
}

fma_dispatch!(attention_head => attention_head_body(inputs: &HeadInputs, task: (usize, usize)) -> Vec<f32>);

/// Head `hi` of batch row `bi` of [`attention_into`]: every query row, as `(q_len, d)`.
#[inline(always)]
fn attention_head_body(inputs: &HeadInputs, (bi, hi): (usize, usize)) -> Vec<f32> {
    let HeadInputs {
        q: qs,
        kv: [ks, vs],
        layouts: [ql, kl, vl],
        biases,
        dims,
        scale,
        softcap,
    } = *inputs;
    let AttentionDims {
        heads: h,
        kv_heads: kvh,
        q_len,
        k_len,
        head_dim: d,
        ..
    } = dims;
    let kv_hi = hi / (h / kvh);
    let (q0, k0, v0) = (ql.at(bi, hi), kl.at(bi, kv_hi), vl.at(bi, kv_hi));
    let key = |j: usize| &ks[k0 + j * kl.ss..][..d];
    let value = |j: usize| &vs[v0 + j * vl.ss..][..d];
    let mut out = vec![0f32; q_len * d];
    let mut scores = vec![0f32; k_len];
    let mut q16 = vec![0f32; d];
    // One query row: `ggml_vec_dot_f16`'s four accumulators; more: tinyBLAS's one.
    let accumulators = if q_len == 1 { VEC_DOT_ARR } else { 1 };
    let mut acc = vec![0f32; accumulators * GGML_LANES * d];
    for t in 0..q_len {
        for (r, x) in q16.iter_mut().zip(&qs[q0 + t * ql.ss..][..d]) {
            *r = round_f16(*x);
        }
        // The biases first: a masked key (≤ f32::MIN / 2) needs no product, its score
        // rounds to the mask's value whatever the product is. With one bias (a mask, as
        // GGUF models have) `product × scale + bias` is ggml's order exactly.
        scores.fill(0.0);
        for bias in biases {
            bias.add_row(&mut scores, bi, hi, t);
        }
        for (j, s) in scores.iter_mut().enumerate() {
            if *s > f32::MIN / 2.0 {
                // A direct call, not a function pointer: both inline here, under this
                // function's FMA target feature (through a pointer `mul_add` is libm's `fmaf`).
                let kq = if q_len == 1 {
                    dot_vec_f16(key(j), &q16)
                } else {
                    dot_lanes(key(j), &q16)
                };
                // llama.cpp: `ggml_scale(kq, 1/cap)`, `ggml_tanh`, `ggml_scale(kq, cap)`.
                let kq = match softcap {
                    Some(cap) => (kq * (1.0 / cap)).tanh() * cap,
                    None => kq,
                };
                *s += kq * scale;
            }
        }
        // Key indices (lanes, softmax blocks) count from the row's first real key, its cell
        // 0 in llama.cpp's cache: the first key not masked as padding. Keys that left a
        // sliding window carry `OUTSIDE_WINDOW`, above `MASKED`, and still count.
        let start = scores.iter().position(|s| *s > PADDING_LIMIT).unwrap_or(0);
        let probs = &mut scores[start..];
        ggml_softmax_in_place(probs);
        if t > 0 {
            // The first query finds the buffer as allocated, zeroed.
            acc.fill(0.0);
        }
        for (j, p) in probs.iter().enumerate() {
            if *p == 0.0 {
                // Would add 0 to every lane.
                continue;
            }
            let p16 = round_f16(*p);
            // Key j goes to lane j % 16 of accumulator (j / 16) % accumulators.
            let slot = (j / GGML_LANES) % accumulators * GGML_LANES + j % GGML_LANES;
            let lane = &mut acc[slot * d..][..d];
            for (a, x) in lane.iter_mut().zip(value(start + j)) {
                *a = x.mul_add(p16, *a);
            }
        }
        reduce_value_lanes(&mut acc, d, &mut out[t * d..][..d]);
    }
    out
}

/// The output row of the values' products from their lane accumulators (`acc` holds one
/// `d`-wide row per lane: 16 lanes, or 4 × 16 for `ggml_vec_dot_f16`'s four accumulators):
/// `GGML_F32x16_REDUCE`'s pairwise folds down to the first accumulator, then [`hsum16`] of
/// every column at once (the same additions, one row of lanes at a time).
#[inline(always)]
fn reduce_value_lanes(acc: &mut [f32], d: usize, out: &mut [f32]) {
    if acc.len() == VEC_DOT_ARR * GGML_LANES * d {
        let (lo, hi) = acc.split_at_mut(2 * GGML_LANES * d);
        for (a, b) in lo.iter_mut().zip(hi.iter()) {
            *a += *b;
        }
        let (first, second) = lo.split_at_mut(GGML_LANES * d);
        for (a, b) in first.iter_mut().zip(second.iter()) {
            *a += *b;
        }
    }
    let lane = |l: usize| &acc[l * d..(l + 1) * d];
    for (c, o) in out.iter_mut().enumerate() {
        let t3: [f32; 8] = std::array::from_fn(|i| lane(8 + i)[c] + lane(i)[c]);
        let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
        *o = (t6[0] + t6[2]) + (t6[1] + t6[3]);
    }
}

/// One query row (a decoding step) of [`ggml_attention_into`] on AVX2 + FMA registers: per
/// output exactly the operations of [`attention_head_body`], in the same order, but
///
/// - the keys' products are reduced eight keys at a time: each key's 64-value steps go into
///   four 16-lane accumulators and fold pairwise in registers as `ggml_vec_dot_f16` does,
///   and the eight keys' [`hsum16`]s run side by side after an 8 × 8 transpose (one add per
///   step of the sum for all eight, instead of a shuffle chain per key through memory);
/// - each of the 64 value accumulators (key `j` goes to lane `j % 16` of accumulator
///   `(j / 16) % 4`) stays in registers while its keys `j, j + 64, …` are added in key
///   order, instead of a load, add and store of its row for every key.
///
/// Used for head sizes that are multiples of 64, where `ggml_vec_dot_f16` has no tail.
#[cfg(target_arch = "x86_64")]
mod decode_x86 {
    use std::arch::x86_64::*;

    use super::{
        dot_vec_f16, ggml_softmax_in_place, reduce_value_lanes, round_f16, AttentionDims,
        HeadInputs, KvElement, GGML_LANES, PADDING_LIMIT, VEC_DOT_ARR,
    };

    /// Values of one `ggml_vec_dot_f16` step (four 16-lane accumulators).
    const STEP: usize = VEC_DOT_ARR * GGML_LANES;

    /// Whether [`decode_head`] serves heads of `head_dim` values on this CPU.
    pub(super) fn applies(head_dim: usize) -> bool {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        head_dim > 0
            && head_dim.is_multiple_of(STEP)
            && *AVX2.get_or_init(|| {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            })
    }

    /// `ggml_vec_dot_f16(key, q)` of eight keys `stride` values apart from `keys[0]`: the
    /// lane order, folds and [`super::hsum16`] of [`dot_vec_f16`] for each.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; `keys` holds `7 · stride + q.len()` values; `q.len()` is a
    /// multiple of [`STEP`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot8<K: KvElement>(keys: &[K], stride: usize, q: &[f32]) -> [f32; 8] {
        let d = q.len();
        debug_assert!(keys.len() >= 7 * stride + d);
        let qp = q.as_ptr();
        let mut t3 = [_mm256_setzero_ps(); 8];
        for (key, t) in t3.iter_mut().enumerate() {
            let kp = keys.as_ptr().add(key * stride);
            // acc[a][half]: lanes 8·half .. 8·half + 8 of accumulator a.
            let mut acc = [[_mm256_setzero_ps(); 2]; VEC_DOT_ARR];
            for s in (0..d).step_by(STEP) {
                for (a, lanes) in acc.iter_mut().enumerate() {
                    for (half, l) in lanes.iter_mut().enumerate() {
                        let o = s + a * GGML_LANES + half * 8;
                        *l = _mm256_fmadd_ps(K::load8(kp.add(o)), _mm256_loadu_ps(qp.add(o)), *l);
                    }
                }
            }
            // (a0 + a2) + (a1 + a3) per lane, then hsum16's first step: lane 8+i + lane i.
            let fold = |h: usize| {
                _mm256_add_ps(
                    _mm256_add_ps(acc[0][h], acc[2][h]),
                    _mm256_add_ps(acc[1][h], acc[3][h]),
                )
            };
            *t = _mm256_add_ps(fold(1), fold(0));
        }
        // Transpose: row i of the result holds lane i of every key's `t3`.
        let t = transpose8(t3);
        // hsum16's last steps for all eight keys at once: t6[i] = t3[4 + i] + t3[i], then
        // (t6[0] + t6[2]) + (t6[1] + t6[3]).
        let t6 = [
            _mm256_add_ps(t[4], t[0]),
            _mm256_add_ps(t[5], t[1]),
            _mm256_add_ps(t[6], t[2]),
            _mm256_add_ps(t[7], t[3]),
        ];
        let sum = _mm256_add_ps(_mm256_add_ps(t6[0], t6[2]), _mm256_add_ps(t6[1], t6[3]));
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out
    }

    /// 8 × 8 transpose: `out[i]` lane `k` is `m[k]` lane `i`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose8(m: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(m[0], m[1]);
        let t1 = _mm256_unpackhi_ps(m[0], m[1]);
        let t2 = _mm256_unpacklo_ps(m[2], m[3]);
        let t3 = _mm256_unpackhi_ps(m[2], m[3]);
        let t4 = _mm256_unpacklo_ps(m[4], m[5]);
        let t5 = _mm256_unpackhi_ps(m[4], m[5]);
        let t6 = _mm256_unpacklo_ps(m[6], m[7]);
        let t7 = _mm256_unpackhi_ps(m[6], m[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Query rows of a prompt that [`prompt_head`] takes together.
    const BLOCK: usize = 4;

    /// Head `hi` of batch row `bi` for several query rows (a prompt), with f32 keys and
    /// values: per output exactly the operations of `attention_head_body` (tinyBLAS's one
    /// 16-lane accumulator for `q·k`, then [`super::hsum16`]; value lane `j % 16` summing
    /// `p16 · v` in key order), but [`BLOCK`] query rows at a time, so that every key and
    /// value row is loaded once per block (a 1,024-token prompt's values are a megabyte per
    /// head: one pass per query row was a pass through L3) and the rows' FMA chains
    /// overlap. A block whose rows count their keys from different first keys (padding)
    /// sums each row's values alone.
    ///
    /// # Safety
    /// AVX2, FMA and F16C ([`applies`]); the operands were checked by
    /// [`super::ggml_attention_into`] (`super::check_operands`); the head size is a multiple
    /// of [`STEP`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn prompt_head(inputs: &HeadInputs, (bi, hi): (usize, usize)) -> Vec<f32> {
        let HeadInputs {
            q: qs,
            kv: [ks, vs],
            layouts: [ql, kl, vl],
            biases,
            dims,
            scale,
            softcap,
        } = *inputs;
        let AttentionDims {
            heads: h,
            kv_heads: kvh,
            q_len,
            k_len,
            head_dim: d,
            ..
        } = dims;
        let kv_hi = hi / (h / kvh);
        let (q0, k0, v0) = (ql.at(bi, hi), kl.at(bi, kv_hi), vl.at(bi, kv_hi));
        let mut out = vec![0f32; q_len * d];
        let mut q16 = vec![0f32; BLOCK * d];
        let mut scores = vec![0f32; BLOCK * k_len];
        let mut p16 = vec![0f32; BLOCK * k_len];
        let mut any = vec![false; k_len];
        let mut acc = vec![0f32; BLOCK * GGML_LANES * d];
        for t0 in (0..q_len).step_by(BLOCK) {
            let rows = BLOCK.min(q_len - t0);
            q16.fill(0.0);
            for r in 0..rows {
                for (x16, x) in q16[r * d..][..d]
                    .iter_mut()
                    .zip(&qs[q0 + (t0 + r) * ql.ss..][..d])
                {
                    *x16 = round_f16(*x);
                }
                let row = &mut scores[r * k_len..][..k_len];
                row.fill(0.0);
                for bias in biases {
                    bias.add_row(row, bi, hi, t0 + r);
                }
            }
            // q·k for the block's rows, each key loaded once; masked keys keep their bias.
            for j in 0..k_len {
                if !(0..rows).any(|r| scores[r * k_len + j] > f32::MIN / 2.0) {
                    continue;
                }
                let kp = ks.as_ptr().add(k0 + j * kl.ss);
                let mut lo = [_mm256_setzero_ps(); BLOCK];
                let mut hi8 = [_mm256_setzero_ps(); BLOCK];
                for c in (0..d).step_by(GGML_LANES) {
                    let k_lo = _mm256_loadu_ps(kp.add(c));
                    let k_hi = _mm256_loadu_ps(kp.add(c + 8));
                    for r in 0..BLOCK {
                        let qp = q16.as_ptr().add(r * d + c);
                        lo[r] = _mm256_fmadd_ps(k_lo, _mm256_loadu_ps(qp), lo[r]);
                        hi8[r] = _mm256_fmadd_ps(k_hi, _mm256_loadu_ps(qp.add(8)), hi8[r]);
                    }
                }
                for r in 0..rows {
                    let s = &mut scores[r * k_len + j];
                    if *s > f32::MIN / 2.0 {
                        let mut lanes = [0f32; GGML_LANES];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), lo[r]);
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi8[r]);
                        let kq = super::hsum16(&lanes);
                        let kq = match softcap {
                            Some(cap) => (kq * (1.0 / cap)).tanh() * cap,
                            None => kq,
                        };
                        *s += kq * scale;
                    }
                }
            }
            // Softmax per row, from the row's first real key (see `attention_head_body`).
            let mut starts = [0usize; BLOCK];
            for (r, start) in starts.iter_mut().enumerate().take(rows) {
                let row = &mut scores[r * k_len..][..k_len];
                *start = row.iter().position(|s| *s > PADDING_LIMIT).unwrap_or(0);
                ggml_softmax_in_place(&mut row[*start..]);
            }
            // Rows sharing their first key sum their values together: the whole block, or
            // (padding) each row alone.
            let together = starts[..rows].iter().all(|s| *s == starts[0]);
            let groups = if together { 1 } else { rows };
            for g in 0..groups {
                let group = if together { 0..rows } else { g..g + 1 };
                let start = starts[group.start];
                let n = k_len - start;
                // Rows outside the group keep probability 0 (they add nothing).
                p16.fill(0.0);
                any[..n].fill(false);
                for r in group.clone() {
                    for (j, p) in scores[r * k_len + start..][..n].iter().enumerate() {
                        if *p != 0.0 {
                            p16[r * k_len + j] = round_f16(*p);
                            any[j] = true;
                        }
                    }
                }
                let vp = vs.as_ptr().add(v0 + start * vl.ss);
                acc.fill(0.0);
                for lane in 0..GGML_LANES.min(n) {
                    for c0 in (0..d).step_by(GGML_LANES) {
                        let mut a = [[_mm256_setzero_ps(); 2]; BLOCK];
                        for j in (lane..n).step_by(GGML_LANES) {
                            if !any[j] {
                                // Every row would add 0 to every column.
                                continue;
                            }
                            let row = vp.add(j * vl.ss + c0);
                            let v_lo = _mm256_loadu_ps(row);
                            let v_hi = _mm256_loadu_ps(row.add(8));
                            for (r, a) in a.iter_mut().enumerate() {
                                // A row whose probability is 0 adds ±0 (finite values):
                                // the same bits as skipping the key.
                                let p = _mm256_set1_ps(*p16.get_unchecked(r * k_len + j));
                                a[0] = _mm256_fmadd_ps(v_lo, p, a[0]);
                                a[1] = _mm256_fmadd_ps(v_hi, p, a[1]);
                            }
                        }
                        for (r, a) in a.iter().enumerate() {
                            let dst = acc.as_mut_ptr().add((r * GGML_LANES + lane) * d + c0);
                            _mm256_storeu_ps(dst, a[0]);
                            _mm256_storeu_ps(dst.add(8), a[1]);
                        }
                    }
                }
                for r in group {
                    let lanes = &mut acc[r * GGML_LANES * d..][..GGML_LANES * d];
                    reduce_value_lanes(lanes, d, &mut out[(t0 + r) * d..][..d]);
                }
            }
        }
        out
    }

    /// Head `hi` of batch row `bi` for one query row (see the module documentation).
    ///
    /// # Safety
    /// AVX2, FMA and F16C ([`applies`]); the operands were checked by
    /// [`super::ggml_attention_into`] (`super::check_operands`), the head size is a multiple
    /// of [`STEP`] and `q_len` is 1.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn decode_head<K: KvElement>(
        inputs: &HeadInputs<K>,
        (bi, hi): (usize, usize),
    ) -> Vec<f32> {
        let HeadInputs {
            q: qs,
            kv: [ks, vs],
            layouts: [ql, kl, vl],
            biases,
            dims,
            scale,
            softcap,
        } = *inputs;
        let AttentionDims {
            heads: h,
            kv_heads: kvh,
            k_len,
            head_dim: d,
            ..
        } = dims;
        let kv_hi = hi / (h / kvh);
        let (q0, k0, v0) = (ql.at(bi, hi), kl.at(bi, kv_hi), vl.at(bi, kv_hi));
        let q16: Vec<f32> = qs[q0..][..d].iter().map(|x| round_f16(*x)).collect();
        let mut scores = vec![0f32; k_len];
        for bias in biases {
            bias.add_row(&mut scores, bi, hi, 0);
        }
        let add_product = |s: &mut f32, kq: f32| {
            // Masked keys keep their bias (see `attention_head_body`).
            if *s > f32::MIN / 2.0 {
                let kq = match softcap {
                    Some(cap) => (kq * (1.0 / cap)).tanh() * cap,
                    None => kq,
                };
                *s += kq * scale;
            }
        };
        let full = k_len - k_len % 8;
        for j in (0..full).step_by(8) {
            let group = &mut scores[j..j + 8];
            if group.iter().all(|s| *s <= f32::MIN / 2.0) {
                continue;
            }
            let kq = dot8(&ks[k0 + j * kl.ss..], kl.ss, &q16);
            for (s, kq) in group.iter_mut().zip(kq) {
                add_product(s, kq);
            }
        }
        let mut key = vec![0f32; d];
        for (j, s) in scores.iter_mut().enumerate().skip(full) {
            if *s > f32::MIN / 2.0 {
                for (w, x) in key.iter_mut().zip(&ks[k0 + j * kl.ss..][..d]) {
                    *w = x.widen();
                }
                add_product(s, dot_vec_f16(&key, &q16));
            }
        }
        let start = scores.iter().position(|s| *s > PADDING_LIMIT).unwrap_or(0);
        let probs = &mut scores[start..];
        ggml_softmax_in_place(probs);
        // Lane `j % 64` (accumulator (j / 16) % 4, lane j % 16) of key j: each lane's row
        // summed in registers, 64 columns at a time, over its keys in key order.
        let mut acc = vec![0f32; STEP * d];
        let vp = vs.as_ptr().add(v0);
        // The probabilities rounded to f16 once (F16C: round to nearest even, as
        // `round_f16`), not once per 64 columns.
        let mut p16 = vec![0f32; probs.len()];
        let whole = probs.len() - probs.len() % 8;
        for i in (0..whole).step_by(8) {
            let p = _mm256_loadu_ps(probs.as_ptr().add(i));
            let r = _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p));
            _mm256_storeu_ps(p16.as_mut_ptr().add(i), r);
        }
        for (r, p) in p16.iter_mut().zip(probs.iter()).skip(whole) {
            *r = round_f16(*p);
        }
        // Lane-major: a lane's keys (every 64th) stay in L1 while all of their columns are
        // summed, instead of one pass over every value row per 64 columns (Gemma's 256-wide
        // heads read their values four times otherwise).
        for lane in 0..STEP.min(probs.len()) {
            for c0 in (0..d).step_by(STEP) {
                let mut a = [_mm256_setzero_ps(); STEP / 8];
                for j in (lane..probs.len()).step_by(STEP) {
                    let p = probs[j];
                    if p == 0.0 {
                        // Would add 0 to every column.
                        continue;
                    }
                    let pv = _mm256_set1_ps(*p16.get_unchecked(j));
                    let row = vp.add((start + j) * vl.ss + c0);
                    for (r, a) in a.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(K::load8(row.add(8 * r)), pv, *a);
                    }
                }
                let dst = acc.as_mut_ptr().add(lane * d + c0);
                for (r, a) in a.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(8 * r), *a);
                }
            }
        }
        let mut out = vec![0f32; d];
        reduce_value_lanes(&mut acc, d, &mut out);
        out
    }
}

/// `Σ k·q` over f16-valued keys and queries in 16 FMA lanes then [`hsum16`] (tinyBLAS's
/// order); a length that is not a multiple of 16 finishes in lane order.
#[inline(always)]
fn dot_lanes(k: &[f32], q: &[f32]) -> f32 {
    let mut acc = [0f32; GGML_LANES];
    for (kc, qc) in k.chunks_exact(GGML_LANES).zip(q.chunks_exact(GGML_LANES)) {
        for l in 0..GGML_LANES {
            acc[l] = kc[l].mul_add(qc[l], acc[l]);
        }
    }
    let n = k.len() - k.len() % GGML_LANES;
    for (l, (kv, qv)) in k[n..].iter().zip(&q[n..]).enumerate() {
        acc[l] = kv.mul_add(*qv, acc[l]);
    }
    hsum16(&acc)
}

/// Accumulators of `ggml_vec_dot_f16` in llama.cpp's AVX-512 build (`GGML_F32_ARR`: a
/// 64-value step in four 16-lane registers).
const VEC_DOT_ARR: usize = 4;

/// `ggml_vec_dot_f16` over f16-valued operands as llama.cpp's AVX-512 build computes it:
/// value `i` of each 64-value step into lane `i % 16` of accumulator `(i / 16) % 4`, the
/// accumulators folded pairwise (`0 += 2`, `1 += 3`, `0 += 1`), [`hsum16`], then the values
/// past the last full step added one product at a time in f64.
#[inline(always)]
fn dot_vec_f16(k: &[f32], q: &[f32]) -> f32 {
    const STEP: usize = VEC_DOT_ARR * GGML_LANES;
    let mut acc = [[0f32; GGML_LANES]; VEC_DOT_ARR];
    let np = k.len() - k.len() % STEP;
    for (ks, qs) in k[..np].chunks_exact(STEP).zip(q[..np].chunks_exact(STEP)) {
        for ((a, kc), qc) in acc
            .iter_mut()
            .zip(ks.chunks_exact(GGML_LANES))
            .zip(qs.chunks_exact(GGML_LANES))
        {
            for l in 0..GGML_LANES {
                a[l] = kc[l].mul_add(qc[l], a[l]);
            }
        }
    }
    let [a0, a1, a2, a3] = acc;
    let folded: [f32; GGML_LANES] = std::array::from_fn(|l| (a0[l] + a2[l]) + (a1[l] + a3[l]));
    let mut sum = hsum16(&folded) as f64;
    for (kv, qv) in k[np..].iter().zip(&q[np..]) {
        sum += (kv * qv) as f64;
    }
    sum as f32
}

/// `ggml_vec_soft_max_f32` and the scaling after it, in place: `exp(x − max)` by
/// [`v_expf`], summed in f64 one 16-value block at a time, times the f32 reciprocal of the
/// sum.
#[inline(always)]
fn ggml_softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for chunk in x.chunks_mut(GGML_LANES) {
        let mut block = [0f32; GGML_LANES];
        for (b, v) in block.iter_mut().zip(chunk.iter_mut()) {
            *v = v_expf(*v - max);
            *b = *v;
        }
        sum += hsum16(&block) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `dst (m × n) (+)= alpha · lhs (m × k) · rhs (k × n)`, single-threaded (the callers run
/// one attention block per thread). Operands are `(data, row stride, column stride)`.
///
/// # Safety
/// `dst` must hold m rows `dst_rs` apart of n contiguous values; the operands' strides must
/// stay inside their slices.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    alpha: f32,
) {
    ::gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.0.as_ptr(),
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0.as_ptr(),
        rhs.2 as isize,
        rhs.1 as isize,
        1.0,
        alpha,
        false,
        false,
        false,
        ::gemm::Parallelism::None,
    );
}

/// Scaled dot-product attention `softmax(scale q k^T + bias) v` on the CPU, differentiable
/// in q, k and v: one pass per (batch, head) forward, and a backward pass that recomputes
/// each block's probabilities instead of keeping `(batch, heads, q_len, k_len)` of them alive
/// between the passes. The composed form costs a dozen tensors of that size per layer (scale,
/// mask add, softmax, head split and merge copies, and as many again backward).
///
/// The output is `(batch, q_len, heads * head_dim)`, heads merged. The biases are constants
/// (masks) broadcastable to `(batch, heads, q_len, k_len)`: no gradient flows to them.
struct Attention {
    biases: Vec<Tensor>,
    scale: f32,
    dropout: Option<AttnDropout>,
}

/// Dropout on the attention probabilities inside the training op: probability `(b, h, i, j)`
/// is zeroed with probability `p`, else scaled by `1 / (1 - p)` (inverted dropout, as
/// PyTorch). The keep decision is a hash of `seed` and the element's index, so the backward
/// pass regenerates the forward's mask instead of keeping `(batch, heads, q_len, k_len)` of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AttnDropout {
    /// Drop probability, in (0, 1).
    pub p: f32,
    /// Drawn from the seedable dropout generator once per call ([`crate::nn::dropout`]).
    pub seed: u64,
}

impl AttnDropout {
    /// Multiplies block `(b, h)`'s `q_len × k_len` values by the mask.
    pub(crate) fn apply(&self, block: &mut [f32], b: usize, h: usize, sh: AttentionDims) {
        let scale = 1.0 / (1.0 - self.p);
        let threshold = drop_threshold(self.p as f64);
        let base = ((b * sh.heads + h) * sh.q_len * sh.k_len) as u64;
        for (j, x) in block.iter_mut().enumerate() {
            *x = if mask_bits(self.seed, base + j as u64) >= threshold {
                *x * scale
            } else {
                0.0
            };
        }
    }
}

/// The mask [`AttnDropout`] applies, as a `(batch, heads, q_len, k_len)` tensor of 0 and
/// `1 / (1 - p)`: for checking the op against composed ops.
#[cfg(test)]
pub(crate) fn attention_dropout_mask(d: AttnDropout, sh: AttentionDims) -> Tensor {
    let n = sh.q_len * sh.k_len;
    let mut all = Vec::with_capacity(sh.batch * sh.heads * n);
    for b in 0..sh.batch {
        for h in 0..sh.heads {
            let mut block = vec![1f32; n];
            d.apply(&mut block, b, h, sh);
            all.extend(block);
        }
    }
    Tensor::from_vec(all, (sh.batch, sh.heads, sh.q_len, sh.k_len), &Device::Cpu).unwrap()
}

impl Attention {
    /// Runs `f` with views of the biases' data, checked against the attention's sizes.
    fn with_biases<R>(
        &self,
        sh: AttentionDims,
        f: impl FnOnce(&[BiasView]) -> R,
    ) -> candle_core::Result<R> {
        let guards: Vec<_> = self.biases.iter().map(|t| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(guards.len());
        let target = [sh.batch, sh.heads, sh.q_len, sh.k_len];
        for ((s, l), t) in guards.iter().zip(&self.biases) {
            let Some(d) = f32_data(s, l) else {
                candle_core::bail!("attention biases must be f32 CPU tensors")
            };
            views.push(
                BiasView::new(d, t.dims(), t.stride(), target)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            );
        }
        Ok(f(&views))
    }

    /// The forward pass: q, k and v read from `data` through their layouts.
    fn forward(
        &self,
        data: [&[f32]; 3],
        layouts: [HeadLayout; 3],
        sh: AttentionDims,
    ) -> candle_core::Result<Vec<f32>> {
        let mut out = vec![0f32; sh.batch * sh.q_len * sh.heads * sh.head_dim];
        self.with_biases(sh, |biases| {
            attention_into(
                &mut out,
                data,
                layouts,
                sh,
                biases,
                self.scale,
                self.dropout,
            )
        })?
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok(out)
    }

    /// The backward pass from the output gradient `grad` (contiguous, `(batch, q_len,
    /// heads * head_dim)`): the gradients of q, k and v written into `dst` through
    /// `dst_strides` (each element exactly once; the three may share one buffer).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        data: [&[f32]; 3],
        [q, k, v]: [HeadLayout; 3],
        grad: &[f32],
        sh: AttentionDims,
        dst: &mut [f32],
        [dq, dk, dv]: [HeadLayout; 3],
    ) -> candle_core::Result<()> {
        let AttentionDims {
            batch,
            heads,
            kv_heads,
            q_len,
            k_len,
            head_dim: hd,
        } = sh;
        // Everything the blocks below read and write through pointers, checked once.
        let grad_ok = grad.len() >= batch * q_len * heads * hd;
        let dst_ok = dst.len() >= dq.extent(batch, heads, q_len, hd)
            && dst.len() >= dk.extent(batch, kv_heads, k_len, hd)
            && dst.len() >= dv.extent(batch, kv_heads, k_len, hd);
        let operands = check_operands(grad, data.map(<[f32]>::len), [q, k, v], sh);
        if !grad_ok || !dst_ok || operands.is_err() {
            candle_core::bail!("attention backward: operands shorter than their layouts")
        }
        let n_rep = heads / kv_heads;
        let width = heads * hd;
        let dst_ptr = SendPtr(dst.as_mut_ptr());
        self.with_biases(sh, |biases| {
            (0..batch * kv_heads).into_par_iter().for_each(|unit| {
                let (b, kvh) = (unit / kv_heads, unit % kv_heads);
                let kp = &data[1][k.at(b, kvh)..];
                let vp = &data[2][v.at(b, kvh)..];
                // SAFETY (all writes below): unit (b, kvh) alone writes dk and dv of
                // (b, kvh) and dq of the heads that share kvh.
                let dk_blk = dst_ptr.get().wrapping_add(dk.at(b, kvh));
                let dv_blk = dst_ptr.get().wrapping_add(dv.at(b, kvh));
                let mut dp = vec![0f32; q_len * k_len];
                for h in kvh * n_rep..(kvh + 1) * n_rep {
                    let qp = &data[0][q.at(b, h)..];
                    let blk = Block {
                        q: qp,
                        q_stride: q.ss,
                        k: kp,
                        k_stride: k.ss,
                        v: vp,
                        v_stride: v.ss,
                        q_len,
                        k_len,
                        head_dim: hd,
                        scale: self.scale,
                    };
                    let add = |s: &mut [f32]| {
                        biases
                            .iter()
                            .for_each(|bv| bv.add_to(s, b, h, q_len, k_len))
                    };
                    let p = attention_probs(&blk, add);
                    // With dropout the values were weighed by the dropped probabilities.
                    let dropped = self.dropout.map(|d| {
                        let mut pd = p.clone();
                        d.apply(&mut pd, b, h, sh);
                        pd
                    });
                    let go = &grad[b * q_len * width + h * hd..];
                    let first = h == kvh * n_rep;
                    let dims = |m, n, k| (m, n, k);
                    unsafe {
                        // dV (+)= P^T dO
                        let pv = dropped.as_deref().unwrap_or(&p);
                        let (pt, dov) = ((pv, 1, k_len), (go, width, 1));
                        gemm_block(dv_blk, dv.ss, !first, dims(k_len, hd, q_len), pt, dov, 1.0);
                        // dP = dO V^T
                        let vt = (vp, 1, v.ss);
                        gemm_block(
                            dp.as_mut_ptr(),
                            k_len,
                            false,
                            dims(q_len, k_len, hd),
                            dov,
                            vt,
                            1.0,
                        );
                    }
                    // Through dropout: the gradient of a probability is its dropped
                    // copy's times the mask.
                    if let Some(d) = self.dropout {
                        d.apply(&mut dp, b, h, sh);
                    }
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P))
                    let row = k_len.max(1);
                    for (dpr, pr) in dp.chunks_mut(row).zip(p.chunks(row)) {
                        let dot = dot_f32(dpr, pr);
                        dpr.iter_mut()
                            .zip(pr)
                            .for_each(|(d, p)| *d = p * (*d - dot));
                    }
                    unsafe {
                        // dQ = scale dS K
                        let dq_blk = dst_ptr.get().wrapping_add(dq.at(b, h));
                        let (ds, km) = ((&dp[..], k_len, 1), (kp, k.ss, 1));
                        gemm_block(
                            dq_blk,
                            dq.ss,
                            false,
                            dims(q_len, hd, k_len),
                            ds,
                            km,
                            self.scale,
                        );
                        // dK (+)= scale dS^T Q
                        let (dst_t, qm) = ((&dp[..], 1, k_len), (qp, q.ss, 1));
                        gemm_block(
                            dk_blk,
                            dk.ss,
                            !first,
                            dims(k_len, hd, q_len),
                            dst_t,
                            qm,
                            self.scale,
                        );
                    }
                }
            })
        })
    }
}

/// The layout of an attention operand: 4-D with a contiguous last dimension.
fn head_layout(l: &Layout) -> candle_core::Result<HeadLayout> {
    match HeadLayout::of(l) {
        Some(h) => Ok(h),
        None => {
            candle_core::bail!("attention operands must be 4-D with a contiguous last dimension")
        }
    }
}

fn cpu_storage(s: &candle_core::Storage) -> candle_core::Result<&CpuStorage> {
    match s {
        candle_core::Storage::Cpu(c) => Ok(c),
        _ => candle_core::bail!("the attention op runs on the CPU"),
    }
}

/// [`Attention`] over separate q `(batch, heads, q_len, head_dim)` and k, v `(batch,
/// kv_heads, k_len, head_dim)` (any strides with a contiguous last dimension).
struct AttentionQkv(Attention);

impl AttentionQkv {
    fn shape(q: &Shape, k: &Shape) -> candle_core::Result<AttentionDims> {
        let (batch, heads, q_len, head_dim) = q.dims4()?;
        let (_, kv_heads, k_len, _) = k.dims4()?;
        Ok(AttentionDims {
            batch,
            heads,
            kv_heads,
            q_len,
            k_len,
            head_dim,
        })
    }
}

impl CustomOp3 for AttentionQkv {
    fn name(&self) -> &'static str {
        "ferroformer-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let sh = Self::shape(l1.shape(), l2.shape())?;
        let data = [s1.as_slice()?, s2.as_slice()?, s3.as_slice()?];
        let strides = [head_layout(l1)?, head_layout(l2)?, head_layout(l3)?];
        let out = self.0.forward(data, strides, sh)?;
        let shape = Shape::from((sh.batch, sh.q_len, sh.heads * sh.head_dim));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let sh = Self::shape(q.shape(), k.shape())?;
        let (hd, q_n, kv_n) = (sh.head_dim, q.elem_count(), k.elem_count());
        // dq, dk and dv side by side in one buffer, each contiguous.
        let mut dst = vec![0f32; q_n + 2 * kv_n];
        {
            let grad = grad.contiguous()?;
            let (gs, gl) = grad.storage_and_layout();
            let Some(g) = f32_data(&gs, gl) else {
                candle_core::bail!("attention gradient must be f32 on the CPU")
            };
            let guards = [q, k, v].map(|t| t.storage_and_layout());
            let data = [
                cpu_storage(&guards[0].0)?.as_slice()?,
                cpu_storage(&guards[1].0)?.as_slice()?,
                cpu_storage(&guards[2].0)?.as_slice()?,
            ];
            let strides = [
                head_layout(guards[0].1)?,
                head_layout(guards[1].1)?,
                head_layout(guards[2].1)?,
            ];
            let dq = HeadLayout::contiguous(sh.heads, sh.q_len, hd);
            let mut dk = HeadLayout::contiguous(sh.kv_heads, sh.k_len, hd);
            let mut dv = dk;
            dk.offset = q_n;
            dv.offset = q_n + kv_n;
            self.0
                .backward(data, strides, g, sh, &mut dst, [dq, dk, dv])?;
        }
        let dev = q.device();
        let all = Tensor::from_vec(dst, q_n + 2 * kv_n, dev)?;
        Ok((
            Some(all.narrow(0, 0, q_n)?.reshape(q.shape())?),
            Some(all.narrow(0, q_n, kv_n)?.reshape(k.shape())?),
            Some(all.narrow(0, q_n + kv_n, kv_n)?.reshape(v.shape())?),
        ))
    }
}

/// [`Attention`] straight from the fused projection `(batch, seq, (heads + 2 kv_heads) *
/// head_dim)`, q then k then v columns: no head split copies forward, and one gradient
/// buffer backward instead of three narrowed ones summed.
struct AttentionPacked {
    attn: Attention,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl AttentionPacked {
    fn layout(&self, seq: usize, width: usize) -> (AttentionDims, [HeadLayout; 3]) {
        let hd = self.head_dim;
        let q_dim = self.heads * hd;
        let kv_dim = self.kv_heads * hd;
        let strides = [
            HeadLayout::packed(0, seq, width, hd),
            HeadLayout::packed(q_dim, seq, width, hd),
            HeadLayout::packed(q_dim + kv_dim, seq, width, hd),
        ];
        let sh = AttentionDims {
            batch: 0,
            heads: self.heads,
            kv_heads: self.kv_heads,
            q_len: seq,
            k_len: seq,
            head_dim: hd,
        };
        (sh, strides)
    }
}

impl CustomOp1 for AttentionPacked {
    fn name(&self) -> &'static str {
        "ferroformer-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let (batch, seq, width) = l.shape().dims3()?;
        let (mut sh, strides) = self.layout(seq, width);
        sh.batch = batch;
        let out = self.attn.forward([x; 3], strides, sh)?;
        let shape = Shape::from((batch, seq, self.heads * self.head_dim));
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (batch, seq, width) = arg.dims3()?;
        let (mut sh, strides) = self.layout(seq, width);
        sh.batch = batch;
        let mut dst = vec![0f32; arg.elem_count()];
        with_data(&[arg, grad], |d| {
            self.attn
                .backward([d[0]; 3], strides, d[1], sh, &mut dst, strides)
        })??;
        Ok(Some(Tensor::from_vec(dst, arg.shape(), arg.device())?))
    }
}

/// Scaled dot-product attention with constant additive `biases`, differentiable in q, k and
/// v (see [`Attention`]); returns `(batch, q_len, heads * head_dim)`.
pub(crate) fn attention_op(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    biases: &[&Tensor],
    scale: f32,
    dropout: Option<AttnDropout>,
) -> candle_core::Result<Tensor> {
    let op = AttentionQkv(Attention {
        biases: biases.iter().map(|b| (*b).clone()).collect(),
        scale,
        dropout,
    });
    let last_contiguous = |t: &Tensor| -> candle_core::Result<Tensor> {
        if t.stride().last() == Some(&1) {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    };
    last_contiguous(q)?.apply_op3(&last_contiguous(k)?, &last_contiguous(v)?, op)
}

/// [`attention`] straight from the fused projection `qkv` `(batch, seq, (heads + 2 kv_heads)
/// * head_dim)` (self-attention without rotary positions).
pub(crate) fn attention_packed_op(
    qkv: &Tensor,
    (heads, kv_heads, head_dim): (usize, usize, usize),
    biases: &[&Tensor],
    scale: f32,
    dropout: Option<AttnDropout>,
) -> candle_core::Result<Tensor> {
    let op = AttentionPacked {
        attn: Attention {
            biases: biases.iter().map(|b| (*b).clone()).collect(),
            scale,
            dropout,
        },
        heads,
        kv_heads,
        head_dim,
    };
    qkv.contiguous()?.apply_op1(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(batch: usize, heads: usize, kv_heads: usize, len: usize, hd: usize) -> AttentionDims {
        AttentionDims {
            batch,
            heads,
            kv_heads,
            q_len: len,
            k_len: len,
            head_dim: hd,
        }
    }

    #[test]
    fn the_loops_check_every_extent_before_reading() {
        let (b, h, s, d) = (2, 2, 3, 4);
        let full = vec![0.5f32; b * h * s * d];
        let layout = HeadLayout::contiguous(h, s, d);
        let sizes = dims(b, h, h, s, d);
        let mut out = vec![0f32; b * s * h * d];
        for ggml in [false, true] {
            let run = |out: &mut [f32], data: [&[f32]; 3], sizes| {
                if ggml {
                    let inputs = HeadInputs {
                        q: data[0],
                        kv: [data[1], data[2]],
                        layouts: [layout; 3],
                        biases: &[],
                        dims: sizes,
                        scale: 1.0,
                        softcap: None,
                    };
                    ggml_attention_into(out, &inputs)
                } else {
                    attention_into(out, data, [layout; 3], sizes, &[], 1.0, None)
                }
            };
            assert!(run(&mut out, [&full, &full, &full], sizes).is_ok());
            // One value short in the keys, the values, the queries or the output: an error
            // naming the operand, where the loop would have read past the buffer.
            let short = &full[..full.len() - 1];
            for (data, what) in [
                ([short, &full[..], &full[..]], "queries"),
                ([&full[..], short, &full[..]], "keys"),
                ([&full[..], &full[..], short], "values"),
            ] {
                let err = run(&mut out, data, sizes).unwrap_err().to_string();
                assert!(err.contains(what), "{err}");
            }
            let mut small = vec![0f32; out.len() - 1];
            let err = run(&mut small, [&full, &full, &full], sizes)
                .unwrap_err()
                .to_string();
            assert!(err.contains("output"), "{err}");
            // Heads that do not divide into key/value heads.
            let err = run(&mut out, [&full, &full, &full], dims(b, h, 3, s, d)).unwrap_err();
            assert!(err.to_string().contains("key/value heads"), "{err}");
        }
    }

    /// The AVX2 decoding path gives every output the same bits as the generic loop, with
    /// grouped heads, padding masks (whole groups of eight keys and single keys), keys
    /// outside a sliding window, soft-capping, and key counts around the group sizes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_decoding_path_equals_the_generic_loop_bit_for_bit() {
        use super::super::math::round_f16;
        use crate::nn::mask::{MASKED, OUTSIDE_WINDOW};
        if !decode_x86::applies(64) {
            eprintln!("no AVX2 + FMA + F16C here: the decoding path does not run");
            return;
        }
        let mut seed = 0x2545_f491_u64;
        let mut unit = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (d, h, kvh, k_len, softcap) in [
            (64, 9, 3, 1, None),
            (64, 9, 3, 7, None),
            (64, 4, 4, 8, None),
            (64, 9, 3, 77, None),
            (128, 4, 2, 200, None),
            (256, 4, 1, 133, Some(50.0)),
            (64, 2, 1, 300, Some(30.0)),
        ] {
            let b = 3;
            let q: Vec<f32> = (0..b * h * d).map(|_| 3.0 * unit()).collect();
            // Keys and values as llama.cpp's f16 cache holds them.
            let k: Vec<f32> = (0..b * kvh * k_len * d)
                .map(|_| round_f16(unit()))
                .collect();
            let v: Vec<f32> = (0..b * kvh * k_len * d)
                .map(|_| round_f16(unit()))
                .collect();
            // Row 0 unmasked; row 1 left-padded by 9 keys with the next 5 outside a window;
            // row 2 with every other group of eight keys padded.
            let mut bias = vec![0f32; b * k_len];
            for j in 0..k_len {
                bias[k_len + j] = if j < 9 {
                    MASKED
                } else if j < 14 {
                    OUTSIDE_WINDOW
                } else {
                    0.0
                };
                bias[2 * k_len + j] = if (j / 8) % 2 == 1 && j + 1 < k_len {
                    MASKED
                } else {
                    0.0
                };
            }
            let view = BiasView::new(
                &bias,
                &[b, 1, 1, k_len],
                &[k_len, 0, k_len, 1],
                [b, h, 1, k_len],
            )
            .unwrap();
            let sizes = AttentionDims {
                batch: b,
                heads: h,
                kv_heads: kvh,
                q_len: 1,
                k_len,
                head_dim: d,
            };
            let inputs = HeadInputs {
                q: &q,
                kv: [&k, &v],
                layouts: [
                    HeadLayout::contiguous(h, 1, d),
                    HeadLayout::contiguous(kvh, k_len, d),
                    HeadLayout::contiguous(kvh, k_len, d),
                ],
                biases: std::slice::from_ref(&view),
                dims: sizes,
                scale: 0.125,
                softcap,
            };
            // The same keys and values stored as f16, as the cache keeps them.
            let halves = |x: &[f32]| x.iter().map(|v| half::f16::from_f32(*v)).collect();
            let (k16, v16): (Vec<half::f16>, Vec<half::f16>) = (halves(&k), halves(&v));
            let inputs16 = HeadInputs {
                q: &q,
                kv: [&k16[..], &v16[..]],
                layouts: inputs.layouts,
                biases: inputs.biases,
                dims: sizes,
                scale: inputs.scale,
                softcap,
            };
            for bi in 0..b {
                for hi in 0..h {
                    let generic = attention_head(&inputs, (bi, hi));
                    // SAFETY: `applies` said AVX2, FMA and F16C are here; the layouts are
                    // full.
                    let fast = unsafe { decode_x86::decode_head(&inputs, (bi, hi)) };
                    // SAFETY: as above.
                    let fast16 = unsafe { decode_x86::decode_head(&inputs16, (bi, hi)) };
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    for (path, out) in [("f32", &fast), ("f16", &fast16)] {
                        assert_eq!(
                            bits(&generic),
                            bits(out),
                            "{path} keys and values: d {d}, k_len {k_len}, row {bi}, head {hi}"
                        );
                    }
                }
            }
        }
    }

    /// The AVX2 prompt path gives every output the same bits as the generic loop: blocks of
    /// query rows with causal masks, left padding, a sliding window, soft-capping, a fully
    /// masked query row (rows of one block counting from different first keys), grouped
    /// heads, and query counts that leave partial blocks.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_prompt_path_equals_the_generic_loop_bit_for_bit() {
        use super::super::math::round_f16;
        use crate::nn::mask::{MASKED, OUTSIDE_WINDOW};
        if !decode_x86::applies(64) {
            eprintln!("no AVX2 + FMA + F16C here: the prompt path does not run");
            return;
        }
        let mut seed = 0x9e37_79b9_u64;
        let mut unit = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (d, h, kvh, q_len, k_len, softcap) in [
            (64, 9, 3, 5, 5, None),
            (64, 4, 2, 9, 12, None),
            (128, 2, 1, 7, 20, Some(30.0)),
            (256, 4, 1, 6, 6, None),
            (64, 2, 2, 13, 40, None),
        ] {
            let b = 2;
            let q: Vec<f32> = (0..b * h * q_len * d).map(|_| 3.0 * unit()).collect();
            let k: Vec<f32> = (0..b * kvh * k_len * d)
                .map(|_| round_f16(unit()))
                .collect();
            let v: Vec<f32> = (0..b * kvh * k_len * d)
                .map(|_| round_f16(unit()))
                .collect();
            // Row 0: causal over a cache of `k_len - q_len` earlier keys. Row 1: the same,
            // left-padded by 3 keys, keys 4 or more behind outside a window, and its first
            // query fully masked.
            let past = k_len - q_len;
            let mut bias = vec![0f32; b * q_len * k_len];
            for t in 0..q_len {
                for j in 0..k_len {
                    let future = j > past + t;
                    bias[t * k_len + j] = if future { MASKED } else { 0.0 };
                    bias[(q_len + t) * k_len + j] = if future || j < 3 || t == 0 {
                        MASKED
                    } else if past + t - j >= 4 {
                        OUTSIDE_WINDOW
                    } else {
                        0.0
                    };
                }
            }
            let view = BiasView::new(
                &bias,
                &[b, 1, q_len, k_len],
                &[q_len * k_len, 0, k_len, 1],
                [b, h, q_len, k_len],
            )
            .unwrap();
            let inputs = HeadInputs {
                q: &q,
                kv: [&k, &v],
                layouts: [
                    HeadLayout::contiguous(h, q_len, d),
                    HeadLayout::contiguous(kvh, k_len, d),
                    HeadLayout::contiguous(kvh, k_len, d),
                ],
                biases: std::slice::from_ref(&view),
                dims: AttentionDims {
                    batch: b,
                    heads: h,
                    kv_heads: kvh,
                    q_len,
                    k_len,
                    head_dim: d,
                },
                scale: 0.125,
                softcap,
            };
            for bi in 0..b {
                for hi in 0..h {
                    let generic = attention_head(&inputs, (bi, hi));
                    // SAFETY: `applies` said AVX2, FMA and F16C are here; the layouts are
                    // full.
                    let fast = unsafe { decode_x86::prompt_head(&inputs, (bi, hi)) };
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&generic),
                        bits(&fast),
                        "d {d}, q_len {q_len}, k_len {k_len}, row {bi}, head {hi}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_bias_view_stays_inside_its_buffer() {
        let data = vec![0f32; 3 * 5];
        // (1, 1, 3, 5) over (2, 4, 3, 5): fine.
        assert!(BiasView::new(&data, &[1, 1, 3, 5], &[15, 15, 5, 1], [2, 4, 3, 5]).is_ok());
        // Strides that reach past the data, or a dimension that does not broadcast.
        assert!(BiasView::new(&data, &[1, 1, 3, 5], &[15, 15, 6, 1], [2, 4, 3, 5]).is_err());
        assert!(BiasView::new(&data, &[1, 1, 3, 4], &[12, 12, 4, 1], [2, 4, 3, 5]).is_err());
        assert!(BiasView::new(&data, &[3, 5], &[5, 1], [2, 4, 3, 5]).is_err());
    }

    /// Attention dropout inside the training op: the output and the gradients of q, k and v
    /// equal the composed ops' with the same mask applied to the probabilities.
    #[test]
    fn dropout_in_the_training_op_matches_composed_ops_with_its_mask() {
        use candle_core::{DType, Var, D};
        let (b, h, t, d) = (2, 3, 7, 4);
        let dev = Device::Cpu;
        let var = |seed: f32| {
            let x = Tensor::arange(0f32, (b * h * t * d) as f32, &dev)
                .unwrap()
                .affine(0.37, seed as f64)
                .unwrap()
                .sin()
                .unwrap()
                .reshape((b, h, t, d))
                .unwrap();
            Var::from_tensor(&x).unwrap()
        };
        let (q, k, v) = (var(0.1), var(1.3), var(2.2));
        let drop = AttnDropout { p: 0.3, seed: 42 };
        let scale = 0.5f32;
        let weights = Tensor::arange(0f32, (b * t * h * d) as f32, &dev)
            .unwrap()
            .cos()
            .unwrap()
            .reshape((b, t, h * d))
            .unwrap();
        let ours = attention_op(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            &[],
            scale,
            Some(drop),
        )
        .unwrap();
        let mask = attention_dropout_mask(drop, dims(b, h, h, t, d));
        let probs = candle_nn::ops::softmax(
            &(q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap() * scale as f64).unwrap(),
            D::Minus1,
        )
        .unwrap();
        let composed = (probs * &mask)
            .unwrap()
            .matmul(v.as_tensor())
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * d))
            .unwrap();
        let diff = |a: &Tensor, c: &Tensor| {
            (a - c)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(&ours, &composed) < 1e-5, "outputs differ");
        let g_ours = (&ours * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_comp = (&composed * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, c) = (
                g_ours.get(x.as_tensor()).unwrap(),
                g_comp.get(x.as_tensor()).unwrap(),
            );
            assert!(diff(a, c) < 1e-4, "gradient of {name} differs");
            assert!(a
                .to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .is_finite());
        }
        // Some probabilities are dropped, the rest scaled by 1 / 0.7; another seed, another mask.
        let values = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dropped = values.iter().filter(|&&x| x == 0.0).count() as f64 / values.len() as f64;
        assert!((0.2..0.4).contains(&dropped), "dropped fraction {dropped}");
        assert!(values
            .iter()
            .all(|&x| x == 0.0 || (x - 1.0 / 0.7).abs() < 1e-6));
        let other = attention_dropout_mask(AttnDropout { p: 0.3, seed: 43 }, dims(b, h, h, t, d));
        assert!(diff(&mask, &other) > 0.0, "the seed chooses the mask");
    }
}
