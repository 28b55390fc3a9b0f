//! Scaled dot-product attention `softmax(scale q k^T + biases) v` over heads: the one entry
//! point of every self- and cross-attention, and the softmax it is built on.

use candle_core::{DType, Tensor, D};

use super::{path, Arithmetic, Mode, Path};
use crate::error::{Error, Result};
use crate::nn::kernels::attention::{self as kernels, AttentionDims, Heads};
use crate::nn::mask::{check_bias, packed_bias};

/// Where q, k and v are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Qkv<'a> {
    /// Side by side in the fused self-attention projection `(batch, seq, (heads + 2 kv_heads)
    /// * head_dim)`: q, then k, then v columns.
    Fused(&'a Tensor),
    /// Separate heads: q `(batch, heads, q_len, head_dim)`, k and v `(batch, kv_heads, k_len,
    /// head_dim)`.
    Split {
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
    },
}

/// One attention call.
pub(crate) struct AttentionCall<'a> {
    /// q, k and v.
    pub qkv: Qkv<'a>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Additive biases (masks, position biases) with the names errors give them, each
    /// broadcastable to `(batch, heads, q_len, k_len)`.
    pub biases: &'a [(&'static str, &'a Tensor)],
    /// Score scale; `None` is `1 / sqrt(head_dim)` (computed in f32 under
    /// [`Arithmetic::Ggml`], as llama.cpp does).
    pub scale: Option<f64>,
    /// Soft cap on the scaled scores, `cap · tanh(score / cap)`, applied before the biases
    /// (Gemma 2).
    pub softcap: Option<f64>,
    /// Self-attention over sequences packed end to end: `(1, tokens, ...)` input holding
    /// sequences of these lengths, each attending only to itself.
    pub packed: Option<&'a [usize]>,
    /// Dropout on the attention weights when training.
    pub dropout: f64,
    /// The forward pass's mode.
    pub mode: Mode,
}

/// Keys and values as the cache keeps them: in f16 under [`Arithmetic::Ggml`], as
/// llama.cpp's default cache stores them (half the bytes a decoding step reads; the
/// decoding kernel reads them in place, every other route widens them back to f32, the
/// same values); unchanged otherwise.
pub(crate) fn kv_values(k: Tensor, v: Tensor, arithmetic: Arithmetic) -> Result<(Tensor, Tensor)> {
    match arithmetic {
        Arithmetic::Ggml => Ok((k.to_dtype(DType::F16)?, v.to_dtype(DType::F16)?)),
        Arithmetic::Reference => Ok((k, v)),
    }
}

/// Bytes of one cached key or value element under `arithmetic` for activations of `dtype`
/// (what [`kv_values`] keeps).
pub(crate) fn kv_element_bytes(arithmetic: Arithmetic, dtype: DType) -> usize {
    match arithmetic {
        Arithmetic::Ggml => DType::F16.size_in_bytes(),
        Arithmetic::Reference => dtype.size_in_bytes(),
    }
}

/// Attention, with the heads merged: `(batch, q_len, heads * head_dim)`, and the weights
/// `(batch, heads, q_len, k_len)` when the mode asks for them.
///
/// - f32 CPU inference, no weights or dropout: one kernel per (batch, head) reading q, k
///   and v in place (llama.cpp's loop under [`Arithmetic::Ggml`]); packed sequences attend
///   within each sequence;
/// - f32 CPU training with constant biases: the differentiable op, attention dropout
///   included;
/// - anything else (weights wanted, dropout outside that op, other devices, a learned
///   position bias):
///   candle's composed ops (packed sequences through a block-diagonal mask).
pub(crate) fn attention(call: AttentionCall) -> Result<(Tensor, Option<Tensor>)> {
    let AttentionCall {
        qkv,
        heads,
        kv_heads,
        head_dim: hd,
        biases,
        scale,
        softcap,
        packed,
        dropout,
        mode,
    } = call;
    let dims = dims(qkv, heads, kv_heads, hd)?;
    for (name, bias) in biases {
        check_bias(name, bias, dims.batch, heads, dims.q_len, dims.k_len)?;
    }
    let biases: Vec<&Tensor> = biases.iter().map(|(_, b)| *b).collect();
    let scale = match (scale, mode.arithmetic) {
        (Some(s), _) => s as f32,
        // llama.cpp's `kq_scale`, rounded as it computes it.
        (None, Arithmetic::Ggml) => 1.0f32 / (hd as f32).sqrt(),
        (None, Arithmetic::Reference) => (1.0 / (hd as f64).sqrt()) as f32,
    };
    // Keys and values from llama.cpp's f16 cache: the decoding kernel reads them in place;
    // every other route takes them widened to the queries' dtype (the same values).
    let widened;
    let qkv = match qkv {
        Qkv::Split { q, k, v } if k.dtype() != q.dtype() || v.dtype() != q.dtype() => {
            if let Some(out) = decode_f16(q, k, v, dims, &biases, scale, softcap, mode)? {
                return Ok((out, None));
            }
            widened = (k.to_dtype(q.dtype())?, v.to_dtype(q.dtype())?);
            Qkv::Split {
                q,
                k: &widened.0,
                v: &widened.1,
            }
        }
        other => other,
    };
    let mut operands: Vec<&Tensor> = match qkv {
        Qkv::Fused(t) => vec![t],
        Qkv::Split { q, k, v } => vec![q, k, v],
    };
    operands.extend(biases.iter().copied());
    let route = path(&operands);
    // Dropout on the probabilities runs inside the training op (its mask regenerated in
    // backward); elsewhere it needs the composed ops.
    let dropping = mode.train && dropout > 0.0;
    // A soft cap runs in llama.cpp's loop ([`Arithmetic::Ggml`]) or the composed ops.
    let capped_elsewhere =
        softcap.is_some() && (mode.arithmetic == Arithmetic::Reference || route != Path::Kernel);
    let composed_only =
        mode.need_weights || capped_elsewhere || (dropping && route != Path::Autograd);
    let softcap = softcap.map(|c| c as f32);
    let mut all_biases = biases.clone();
    let block_mask;
    if let Some(lengths) = packed {
        let Qkv::Fused(t) = qkv else {
            return Err(Error::Invalid(
                "packed attention takes the fused self-attention projection".into(),
            ));
        };
        if dims.batch != 1 || lengths.iter().sum::<usize>() != dims.q_len {
            return Err(Error::Invalid(format!(
                "packed self-attention takes one row of {} tokens holding sequences of \
                 lengths {lengths:?}, found a projection of shape {:?}",
                lengths.iter().sum::<usize>(),
                t.dims()
            )));
        }
        let plain = route == Path::Kernel && !composed_only && biases.is_empty();
        if plain && mode.arithmetic == Arithmetic::Reference {
            if let Some(out) = kernels::attention_packed(t, lengths, heads, kv_heads, hd, scale)? {
                return Ok((out, None));
            }
        }
        // Any other mode: the same attention as a block-diagonal mask.
        block_mask = packed_bias(lengths, t.dtype(), t.device())?;
        all_biases.push(&block_mask);
    }
    match (route, composed_only, qkv) {
        (Path::Kernel, false, Qkv::Fused(t)) if mode.arithmetic == Arithmetic::Reference => {
            let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
            let (q, k, v) = (
                Heads::packed(t, 0, hd)?,
                Heads::packed(t, q_dim, hd)?,
                Heads::packed(t, q_dim + kv_dim, hd)?,
            );
            if let Some(out) =
                kernels::attention(q, k, v, dims, &all_biases, scale, None, mode.arithmetic)?
            {
                return Ok((out, None));
            }
        }
        (Path::Kernel, false, _) => {
            let (q, k, v) = split(qkv, heads, kv_heads, hd, mode.arithmetic)?;
            let (q, k, v) = (
                last_contiguous(q)?,
                last_contiguous(k)?,
                last_contiguous(v)?,
            );
            if let (Some(qh), Some(kh), Some(vh)) =
                (Heads::bhsd(&q), Heads::bhsd(&k), Heads::bhsd(&v))
            {
                if let Some(out) = kernels::attention(
                    qh,
                    kh,
                    vh,
                    dims,
                    &all_biases,
                    scale,
                    softcap,
                    mode.arithmetic,
                )? {
                    return Ok((out, None));
                }
            }
        }
        (Path::Autograd, false, _) if constant(&all_biases) => {
            let drop = dropping.then(|| kernels::AttnDropout {
                p: dropout as f32,
                seed: crate::nn::dropout::next_seed(),
            });
            let out = match qkv {
                Qkv::Fused(t) => kernels::attention_packed_op(
                    t,
                    (heads, kv_heads, hd),
                    &all_biases,
                    scale,
                    drop,
                )?,
                Qkv::Split { q, k, v } => kernels::attention_op(q, k, v, &all_biases, scale, drop)?,
            };
            return Ok((out, None));
        }
        _ => {}
    }
    composed(qkv, dims, &all_biases, scale, softcap, dropout, mode)
}

/// One query row against f16 keys and values (llama.cpp's cache) through the decoding
/// kernel, when it serves the call: llama.cpp's arithmetic, f32 CPU queries and biases
/// outside any graph, no weights wanted; `None` otherwise.
#[allow(clippy::too_many_arguments)]
fn decode_f16(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dims: AttentionDims,
    biases: &[&Tensor],
    scale: f32,
    softcap: Option<f64>,
    mode: Mode,
) -> Result<Option<Tensor>> {
    let mut operands = vec![q];
    operands.extend(biases.iter().copied());
    let serves = mode.arithmetic == Arithmetic::Ggml
        && dims.q_len == 1
        && !mode.need_weights
        && !mode.train
        && path(&operands) == Path::Kernel
        && [k, v]
            .iter()
            .all(|t| t.dtype() == DType::F16 && t.device().is_cpu() && !t.track_op())
        && kernels::decodes_f16(dims.head_dim);
    if !serves {
        return Ok(None);
    }
    let (q, k, v) = (
        last_contiguous(q.clone())?,
        last_contiguous(k.clone())?,
        last_contiguous(v.clone())?,
    );
    let (Some(qh), Some(kh), Some(vh)) = (Heads::bhsd(&q), Heads::bhsd(&k), Heads::bhsd(&v)) else {
        return Ok(None);
    };
    kernels::attention(
        qh,
        kh,
        vh,
        dims,
        biases,
        scale,
        softcap.map(|c| c as f32),
        mode.arithmetic,
    )
}

/// Sizes of the call, from q, k and v.
fn dims(qkv: Qkv, heads: usize, kv_heads: usize, hd: usize) -> Result<AttentionDims> {
    if heads == 0 || kv_heads == 0 || hd == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::config(
            "num_kv_heads",
            format!("{heads} query heads of {hd} over {kv_heads} key/value heads"),
        ));
    }
    let d = match qkv {
        Qkv::Fused(t) => {
            let (batch, seq, width) = t.dims3()?;
            if width != (heads + 2 * kv_heads) * hd {
                return Err(Error::shape(
                    "fused q/k/v projection",
                    format!("(batch, seq, {})", (heads + 2 * kv_heads) * hd),
                    t.dims(),
                ));
            }
            (batch, seq, seq)
        }
        Qkv::Split { q, k, v } => {
            let (batch, qh, q_len, qd) = q.dims4()?;
            let (kb, kh, k_len, kd) = k.dims4()?;
            if (qh, qd) != (heads, hd)
                || (kb, kh, kd) != (batch, kv_heads, hd)
                || v.dims() != k.dims()
            {
                return Err(Error::shape(
                    "attention q / k / v",
                    format!("({heads} heads, {kv_heads} key/value heads, head_dim {hd})"),
                    &[q.dims(), k.dims(), v.dims()].concat(),
                ));
            }
            (batch, q_len, k_len)
        }
    };
    Ok(AttentionDims {
        batch: d.0,
        heads,
        kv_heads,
        q_len: d.1,
        k_len: d.2,
        head_dim: hd,
    })
}

/// `(batch, heads, seq, head_dim)` heads out of `(batch, seq, heads * head_dim)` columns.
pub(crate) fn to_heads(t: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let (b, s, _) = t.dims3()?;
    Ok(t.reshape((b, s, heads, hd))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// q, k and v as separate heads (keys and values as the cache would keep them).
fn split(
    qkv: Qkv,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    arithmetic: Arithmetic,
) -> Result<(Tensor, Tensor, Tensor)> {
    match qkv {
        Qkv::Split { q, k, v } => Ok((q.clone(), k.clone(), v.clone())),
        Qkv::Fused(t) => {
            let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
            let q = to_heads(&t.narrow(D::Minus1, 0, q_dim)?, heads, hd)?;
            let k = to_heads(&t.narrow(D::Minus1, q_dim, kv_dim)?, kv_heads, hd)?;
            let v = to_heads(&t.narrow(D::Minus1, q_dim + kv_dim, kv_dim)?, kv_heads, hd)?;
            let (k, v) = kv_values(k, v, arithmetic)?;
            Ok((q, k, v))
        }
    }
}

fn last_contiguous(t: Tensor) -> Result<Tensor> {
    Ok(if t.stride().last() == Some(&1) {
        t
    } else {
        t.contiguous()?
    })
}

/// Whether the biases are constants (masks) the training op can take: a learned position
/// bias needs the composed form, which differentiates it.
fn constant(biases: &[&Tensor]) -> bool {
    biases
        .iter()
        .all(|b| !b.track_op() && b.rank() == 4 && b.dtype() == DType::F32)
}

/// candle's ops: every device and dtype, gradients, dropout and the weights.
fn composed(
    qkv: Qkv,
    dims: AttentionDims,
    biases: &[&Tensor],
    scale: f32,
    softcap: Option<f32>,
    dropout: f64,
    mode: Mode,
) -> Result<(Tensor, Option<Tensor>)> {
    let AttentionDims {
        batch,
        heads,
        kv_heads,
        q_len,
        head_dim,
        ..
    } = dims;
    let (q, k, v) = split(qkv, heads, kv_heads, head_dim, mode.arithmetic)?;
    let (k, v) = (
        repeat_kv(k, heads / kv_heads)?,
        repeat_kv(v, heads / kv_heads)?,
    );
    let q = if scale == 1.0 { q } else { (q * scale as f64)? };
    let mut scores = q.matmul(&k.t()?)?;
    if let Some(cap) = softcap {
        scores = soft_cap(&scores, cap, mode.arithmetic)?;
    }
    for bias in biases {
        scores = scores.broadcast_add(bias)?;
    }
    let weights = softmax_last_dim(&scores)?;
    let attn = if mode.train && dropout > 0.0 {
        crate::nn::dropout::dropout(&weights, dropout)?
    } else {
        weights.clone()
    };
    let context = attn
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch, q_len, heads * head_dim))?;
    Ok((context, mode.need_weights.then_some(weights)))
}

/// `cap · tanh(x / cap)`: Gemma 2's soft cap on attention scores and final logits. Under
/// [`Arithmetic::Ggml`] the division is llama.cpp's product by the f32 reciprocal.
pub fn soft_cap(x: &Tensor, cap: f32, arithmetic: Arithmetic) -> Result<Tensor> {
    let scaled = match arithmetic {
        Arithmetic::Ggml => (x * (1.0f32 / cap) as f64)?,
        Arithmetic::Reference => (x / cap as f64)?,
    };
    Ok((scaled.tanh()? * cap as f64)?)
}

/// Softmax over the last dimension: candle's fused kernel for inference, the
/// differentiable one-pass op when training on the CPU, the composed form elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(match path(&[x]) {
        Path::Autograd => crate::nn::kernels::math::softmax_op(x)?,
        Path::Candle { tracked: true } => candle_nn::ops::softmax(x, D::Minus1)?,
        Path::Kernel | Path::Candle { tracked: false } => {
            candle_nn::ops::softmax_last_dim(&x.contiguous()?)?
        }
    })
}

/// Repeats each key/value head `n_rep` times so grouped-query attention can use the
/// plain batched matmul: `(b, kv_heads, len, d)` -> `(b, kv_heads * n_rep, len, d)`.
fn repeat_kv(x: Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (b, kvh, len, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kvh, n_rep, len, d))?
        .reshape((b, kvh * n_rep, len, d))?)
}
