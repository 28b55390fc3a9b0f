//! Multi-head attention: self- and cross-attention, MHA/GQA/MQA, optional biases, any scale,
//! additive masks and position biases, rotary embeddings, a KV cache, and attention weights
//! on request. Every model family runs through this one implementation.

use std::sync::Arc;

use candle_core::{DType, Tensor, D};

use super::ggml::Arithmetic;
use super::kernels::{self, AttentionDims, Heads};
use super::linear::{join, Linear, ParamNames};
use super::mask::check_bias;
use super::positional::RopeTables;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// Shape and options of a multi-head attention block.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// Width of the input and output.
    pub d_model: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads: `num_heads` (MHA), fewer (GQA) or 1 (MQA).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Whether the q, k and v projections have biases.
    pub qkv_bias: bool,
    /// Whether the output projection has a bias.
    pub out_bias: bool,
    /// Factor applied to the scores; `None` means `1 / sqrt(head_dim)` (T5 uses `Some(1.0)`).
    pub scale: Option<f64>,
    /// Dropout on the attention weights during training.
    pub dropout: f64,
}

impl AttentionConfig {
    /// Standard multi-head attention with biases; fails if `d_model` is not divisible by
    /// `num_heads`.
    pub fn new(d_model: usize, num_heads: usize) -> Result<Self> {
        if num_heads == 0 {
            return Err(Error::config("num_heads", "must be > 0"));
        }
        if d_model == 0 || d_model % num_heads != 0 {
            return Err(Error::config(
                "d_model",
                format!(
                    "d_model ({d_model}) must be a positive multiple of num_heads ({num_heads})"
                ),
            ));
        }
        Ok(Self {
            d_model,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: d_model / num_heads,
            qkv_bias: true,
            out_bias: true,
            scale: None,
            dropout: 0.0,
        })
    }

    /// Sets the number of key/value heads (grouped-query attention).
    pub fn with_kv_heads(mut self, num_kv_heads: usize) -> Result<Self> {
        self.num_kv_heads = num_kv_heads;
        self.validate()?;
        Ok(self)
    }

    /// Checks that the sizes agree.
    pub fn validate(&self) -> Result<()> {
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return Err(Error::config(
                "num_heads",
                "num_heads, num_kv_heads and head_dim must be > 0",
            ));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(Error::config(
                "num_kv_heads",
                format!(
                    "num_heads ({}) must be a multiple of num_kv_heads ({})",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("must be in [0, 1), found {}", self.dropout),
            ));
        }
        Ok(())
    }

    fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// How q, k and v projections are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QkvNames {
    /// One tensor holding q, k and v stacked along the output dimension
    /// (PyTorch's `in_proj_weight`, GPT-2's `c_attn`).
    Packed(ParamNames),
    /// Three tensors.
    Separate {
        /// Query projection.
        q: ParamNames,
        /// Key projection.
        k: ParamNames,
        /// Value projection.
        v: ParamNames,
    },
}

/// Where an attention block's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionNames {
    /// q, k, v projections.
    pub qkv: QkvNames,
    /// Output projection.
    pub out: ParamNames,
}

impl AttentionNames {
    /// PyTorch `nn.MultiheadAttention` under `prefix`: `in_proj_weight`, `in_proj_bias`,
    /// `out_proj.weight`, `out_proj.bias`.
    pub fn torch(prefix: &str, cfg: &AttentionConfig) -> Self {
        Self {
            qkv: QkvNames::Packed(ParamNames {
                weight: join(prefix, "in_proj_weight"),
                bias: cfg.qkv_bias.then(|| join(prefix, "in_proj_bias")),
                transposed: false,
            }),
            out: ParamNames::linear(&join(prefix, "out_proj"), cfg.out_bias),
        }
    }

    /// Four separate linear layers `{q}`, `{k}`, `{v}`, `{o}` (each with `.weight`/`.bias`).
    pub fn separate(q: &str, k: &str, v: &str, o: &str, cfg: &AttentionConfig) -> Self {
        Self {
            qkv: QkvNames::Separate {
                q: ParamNames::linear(q, cfg.qkv_bias),
                k: ParamNames::linear(k, cfg.qkv_bias),
                v: ParamNames::linear(v, cfg.qkv_bias),
            },
            out: ParamNames::linear(o, cfg.out_bias),
        }
    }
}

/// Keys and values of earlier steps, for incremental decoding.
///
/// For self-attention each call appends the new keys and values; for cross-attention the
/// keys and values of the encoder output are computed once and reused.
///
/// The positions live in a buffer with room to grow (by 256 positions at a time), so a
/// decoding step writes its own keys and values only, instead of copying the whole cache.
/// Clones share the buffer until one of them appends: that one copies first (beams that fork
/// from one parent keep their own histories).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    buf: Option<Arc<KvBuffer>>,
    len: usize,
    /// Set by `truncate`: positions past `len` may still be visible through views handed
    /// out earlier, so the next append copies instead of writing over them.
    copy_on_append: bool,
}

/// `(batch, kv_heads, capacity, head_dim)` keys and values, contiguous.
#[derive(Debug)]
struct KvBuffer {
    k: Tensor,
    v: Tensor,
}

/// Positions a cache buffer grows by.
const KV_GROWTH: usize = 256;

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.buf = None;
        self.len = 0;
        self.copy_on_append = false;
    }

    /// Keeps the first `len` positions only (a prompt that shares only that prefix with
    /// what is cached continues from there).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            self.reset();
        } else if len < self.len {
            self.len = len;
            self.copy_on_append = true;
        }
        Ok(())
    }

    /// Cached `(keys, values)`, each `(batch, kv_heads, len, head_dim)`: views of the
    /// buffer (contiguous within each head).
    pub fn get(&self) -> Option<(Tensor, Tensor)> {
        let buf = self.buf.as_ref()?;
        if self.len == 0 {
            return None;
        }
        Some((
            buf.k.narrow(2, 0, self.len).ok()?,
            buf.v.narrow(2, 0, self.len).ok()?,
        ))
    }

    fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, n, d) = k.dims4()?;
        let needed = self.len + n;
        let fits = match &self.buf {
            Some(buf) => {
                let (bb, bh, cap, bd) = buf.k.dims4()?;
                (bb, bh, bd) == (b, h, d)
                    && buf.k.dtype() == k.dtype()
                    && buf.k.device().same_device(k.device())
                    && needed <= cap
            }
            None => false,
        };
        let writable = fits
            && !self.copy_on_append
            && self.buf.as_mut().is_some_and(|a| Arc::get_mut(a).is_some());
        let buf = match &self.buf {
            Some(buf) if writable => Arc::clone(buf),
            _ => {
                // A new buffer holding what is cached so far.
                let cap = needed.next_multiple_of(KV_GROWTH);
                let new = KvBuffer {
                    k: Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?,
                    v: Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?,
                };
                if let Some((pk, pv)) = self.get() {
                    new.k.slice_set(&pk.contiguous()?, 2, 0)?;
                    new.v.slice_set(&pv.contiguous()?, 2, 0)?;
                }
                let new = Arc::new(new);
                self.buf = Some(Arc::clone(&new));
                self.copy_on_append = false;
                new
            }
        };
        buf.k.slice_set(&k.contiguous()?, 2, self.len)?;
        buf.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((buf.k.narrow(2, 0, needed)?, buf.v.narrow(2, 0, needed)?))
    }
}

/// Everything besides the input that one attention call may use. `Default` is plain
/// self-attention without masks, in inference mode.
#[derive(Debug, Default)]
pub struct AttentionContext<'a> {
    /// Source of keys and values for cross-attention, `(batch, mem_len, d_model)`;
    /// `None` for self-attention.
    pub memory: Option<&'a Tensor>,
    /// Additive mask, broadcastable to `(batch, heads, q_len, k_len)` (see [`super::mask`]).
    pub bias: Option<&'a Tensor>,
    /// Additive position bias (T5, ALiBi), broadcastable to `(batch, heads, q_len, k_len)`.
    pub position_bias: Option<&'a Tensor>,
    /// Rotary tables for the queries and new keys (self-attention only).
    pub rope: Option<&'a RopeTables>,
    /// KV cache for incremental decoding.
    pub cache: Option<&'a mut KvCache>,
    /// Training mode: enables dropout.
    pub train: bool,
    /// Also return the attention weights.
    pub need_weights: bool,
    /// Self-attention over sequences packed end to end without padding: the input is
    /// `(1, tokens, d_model)` and these are the sequence lengths, in order. Every sequence
    /// attends only to itself (see [`crate::arch::TransformerEncoder::forward_packed`]).
    pub packed: Option<&'a [usize]>,
}

/// Result of an attention call.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `(batch, q_len, d_model)`
    pub output: Tensor,
    /// `(batch, heads, q_len, k_len)` when requested.
    pub weights: Option<Tensor>,
}

/// Multi-head (or grouped-query) scaled dot-product attention.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    cfg: AttentionConfig,
    /// q, k and v stacked along the output dimension: self-attention projects all three
    /// with one GEMM.
    qkv: Linear,
    out: Linear,
    arithmetic: Arithmetic,
}

impl MultiHeadAttention {
    /// Loads the projections named by `names` (or creates them in a trainable store).
    pub fn load(w: &Weights, cfg: &AttentionConfig, names: &AttentionNames) -> Result<Self> {
        cfg.validate()?;
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let qkv = match &names.qkv {
            QkvNames::Packed(p) => Linear::load(w, cfg.d_model, q_dim + 2 * kv_dim, p)?,
            QkvNames::Separate { q, k, v } => Linear::fuse(&[
                Linear::load(w, cfg.d_model, q_dim, q)?,
                Linear::load(w, cfg.d_model, kv_dim, k)?,
                Linear::load(w, cfg.d_model, kv_dim, v)?,
            ])?,
        };
        let out = Linear::load(w, q_dim, cfg.d_model, &names.out)?;
        Ok(Self {
            cfg: cfg.clone(),
            qkv,
            out,
            arithmetic: Arithmetic::Reference,
        })
    }

    /// Assembles the block from its projections: `qkv` maps `d_model` to q, k and v stacked
    /// along the output (as [`Linear::fuse`] builds it), `out` maps the heads back. Loaders
    /// that do not read a [`Weights`] store (GGUF files) build their layers this way.
    pub fn from_parts(cfg: &AttentionConfig, qkv: Linear, out: Linear) -> Result<Self> {
        cfg.validate()?;
        let qkv_out = cfg.q_dim() + 2 * cfg.kv_dim();
        if qkv.in_dim() != cfg.d_model || qkv.out_dim() != qkv_out {
            return Err(Error::shape(
                "attention qkv projection (out, in)",
                format!("({qkv_out}, {})", cfg.d_model),
                &[qkv.out_dim(), qkv.in_dim()],
            ));
        }
        if out.in_dim() != cfg.q_dim() || out.out_dim() != cfg.d_model {
            return Err(Error::shape(
                "attention output projection (out, in)",
                format!("({}, {})", cfg.d_model, cfg.q_dim()),
                &[out.out_dim(), out.in_dim()],
            ));
        }
        Ok(Self {
            cfg: cfg.clone(),
            qkv,
            out,
            arithmetic: Arithmetic::Reference,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.cfg
    }

    /// The same block computing with `arithmetic`: under [`Arithmetic::Ggml`], keys and
    /// values are rounded to f16 as llama.cpp caches them, and attention follows its
    /// arithmetic.
    pub fn with_arithmetic(mut self, arithmetic: Arithmetic) -> Self {
        self.arithmetic = arithmetic;
        self
    }

    /// Attends from `x` `(batch, q_len, d_model)` to itself, or to `ctx.memory`.
    pub fn forward(&self, x: &Tensor, ctx: AttentionContext) -> Result<AttentionOutput> {
        let cfg = &self.cfg;
        let (b, q_len, d) = x.dims3().map_err(|_| {
            Error::shape(
                "attention input",
                format!("(batch, seq, {})", cfg.d_model),
                x.dims(),
            )
        })?;
        if d != cfg.d_model {
            return Err(Error::shape(
                "attention input",
                format!("(batch, seq, {})", cfg.d_model),
                x.dims(),
            ));
        }
        let (h, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let to_heads = |t: Tensor, heads: usize, len: usize| -> Result<Tensor> {
            Ok(t.reshape((b, len, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };

        let ggml = self.arithmetic == Arithmetic::Ggml;
        let scale = match (cfg.scale, ggml) {
            (Some(s), _) => s,
            // llama.cpp's `kq_scale`, rounded as it computes it.
            (None, true) => (1.0f32 / (hd as f32).sqrt()) as f64,
            (None, false) => 1.0 / (hd as f64).sqrt(),
        };
        // The fused CPU kernel serves inference: no dropout, no weights to return.
        let dropout_active = ctx.train && cfg.dropout > 0.0;
        let fused = !dropout_active && !ctx.need_weights;
        let packed_bias: Option<Tensor>;
        let mut biases: Vec<&Tensor> = ctx
            .position_bias
            .iter()
            .chain(ctx.bias.iter())
            .copied()
            .collect();
        if let Some(lengths) = ctx.packed {
            if ctx.memory.is_some() || b != 1 || lengths.iter().sum::<usize>() != q_len {
                return Err(Error::Invalid(format!(
                    "packed self-attention takes one row of {} tokens holding sequences of \
                     lengths {lengths:?}, found input {:?}{}",
                    lengths.iter().sum::<usize>(),
                    x.dims(),
                    if ctx.memory.is_some() {
                        " with cross-attention memory"
                    } else {
                        ""
                    }
                )));
            }
            if fused && ctx.rope.is_none() && ctx.cache.is_none() && biases.is_empty() {
                let qkv = self.qkv.forward(x)?;
                if let Some(out) =
                    kernels::attention_packed(&qkv, lengths, h, kvh, hd, scale as f32)?
                {
                    return Ok(AttentionOutput {
                        output: self.out.forward(&out)?,
                        weights: None,
                    });
                }
            }
            // Any other device or mode: the same attention as a block-diagonal mask.
            packed_bias = Some(super::mask::packed_bias(lengths, x.dtype(), x.device())?);
            biases.extend(packed_bias.as_ref());
        }
        let dims = |k_len: usize| AttentionDims {
            batch: b,
            heads: h,
            kv_heads: kvh,
            q_len,
            k_len,
            head_dim: hd,
        };
        let check_biases = |k_len: usize| -> Result<()> {
            if let Some(pb) = ctx.position_bias {
                check_bias("position bias", pb, b, h, q_len, k_len)?;
            }
            if let Some(bias) = ctx.bias {
                check_bias("attention mask", bias, b, h, q_len, k_len)?;
            }
            Ok(())
        };

        let (q, k, v) = match ctx.memory {
            None => {
                let qkv = self.qkv.forward(x)?;
                if fused && !ggml && ctx.rope.is_none() && ctx.cache.is_none() {
                    // Read the heads straight out of the projection: no split copies.
                    check_biases(q_len)?;
                    let out = kernels::attention(
                        Heads::packed(&qkv, 0, hd)?,
                        Heads::packed(&qkv, q_dim, hd)?,
                        Heads::packed(&qkv, q_dim + kv_dim, hd)?,
                        dims(q_len),
                        &biases,
                        scale as f32,
                        Arithmetic::Reference,
                    )?;
                    if let Some(out) = out {
                        return Ok(AttentionOutput {
                            output: self.out.forward(&out)?,
                            weights: None,
                        });
                    }
                    // Training on the CPU: one differentiable op on the projection.
                    if super::autograd_ops::applicable(&[&qkv]) && constant_biases(&biases) {
                        let out = super::autograd_ops::attention_packed(
                            &qkv,
                            (h, kvh, hd),
                            &biases,
                            scale as f32,
                        )?;
                        return Ok(AttentionOutput {
                            output: self.out.forward(&out)?,
                            weights: None,
                        });
                    }
                }
                let q = to_heads(qkv.narrow(D::Minus1, 0, q_dim)?, h, q_len)?;
                let k = to_heads(qkv.narrow(D::Minus1, q_dim, kv_dim)?, kvh, q_len)?;
                let v = to_heads(qkv.narrow(D::Minus1, q_dim + kv_dim, kv_dim)?, kvh, q_len)?;
                let (q, k) = match ctx.rope {
                    Some(rope) => (rope.apply(&q)?, rope.apply(&k)?),
                    None => (q, k),
                };
                // llama.cpp caches keys and values in f16: round them so (see `nn::ggml`).
                let (k, v) = if ggml {
                    (
                        super::ggml::round_to_f16(&k)?,
                        super::ggml::round_to_f16(&v)?,
                    )
                } else {
                    (k, v)
                };
                let (k, v) = match ctx.cache {
                    Some(cache) => cache.append(k, v)?,
                    None => (k, v),
                };
                (q, k, v)
            }
            Some(memory) => {
                let (mb, m_len, md) = memory.dims3()?;
                if mb != b || md != cfg.d_model {
                    return Err(Error::shape(
                        "cross-attention memory",
                        format!("(batch={b}, mem_len, {})", cfg.d_model),
                        memory.dims(),
                    ));
                }
                let q = to_heads(self.qkv.narrow_out(0, q_dim)?.forward(x)?, h, q_len)?;
                let cached = ctx.cache.as_ref().and_then(|c| c.get());
                let (k, v) = match cached {
                    Some(kv) => kv,
                    None => {
                        let kv = self.qkv.narrow_out(q_dim, 2 * kv_dim)?.forward(memory)?;
                        let k = to_heads(kv.narrow(D::Minus1, 0, kv_dim)?, kvh, m_len)?;
                        let v = to_heads(kv.narrow(D::Minus1, kv_dim, kv_dim)?, kvh, m_len)?;
                        if let Some(cache) = ctx.cache {
                            cache.append(k.clone(), v.clone())?;
                        }
                        (k, v)
                    }
                };
                (q, k, v)
            }
        };
        let k_len = k.dim(2)?;
        check_biases(k_len)?;
        if fused {
            if let (Some(qh), Some(kh), Some(vh)) =
                (Heads::bhsd(&q), Heads::bhsd(&k), Heads::bhsd(&v))
            {
                let out = kernels::attention(
                    qh,
                    kh,
                    vh,
                    dims(k_len),
                    &biases,
                    scale as f32,
                    self.arithmetic,
                )?;
                if let Some(out) = out {
                    return Ok(AttentionOutput {
                        output: self.out.forward(&out)?,
                        weights: None,
                    });
                }
            }
            // Training on the CPU: one differentiable op instead of the composed form below
            // (masks are constants; a learned position bias needs the composed form).
            if super::autograd_ops::applicable(&[&q, &k, &v]) && constant_biases(&biases) {
                let out = super::autograd_ops::attention(&q, &k, &v, &biases, scale as f32)?;
                return Ok(AttentionOutput {
                    output: self.out.forward(&out)?,
                    weights: None,
                });
            }
        }
        let (k, v) = (repeat_kv(k, h / kvh)?, repeat_kv(v, h / kvh)?);

        let q = if scale == 1.0 { q } else { (q * scale)? };
        let mut scores = q.matmul(&k.t()?)?;
        for bias in &biases {
            scores = scores.broadcast_add(bias)?;
        }
        let weights = softmax_last_dim(&scores)?;
        let attn = if ctx.train && cfg.dropout > 0.0 {
            super::dropout::dropout(&weights, cfg.dropout)?
        } else {
            weights.clone()
        };
        let context = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, q_len, q_dim))?;
        let output = self.out.forward(&context)?;
        Ok(AttentionOutput {
            output,
            weights: ctx.need_weights.then_some(weights),
        })
    }
}

/// Whether the biases are constants (masks) the training attention op can take: a learned
/// position bias needs the composed form, which differentiates it.
fn constant_biases(biases: &[&Tensor]) -> bool {
    biases
        .iter()
        .all(|b| !b.track_op() && b.rank() == 4 && b.dtype() == DType::F32)
}

/// Softmax over the last dimension: candle's fused kernel for inference, the composed
/// (differentiable) form when gradients are tracked.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() && super::autograd_ops::applicable(&[x]) {
        Ok(super::autograd_ops::softmax_last_dim(x)?)
    } else if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `n` positions of `(1, 2, n, 3)` keys or values numbered from `from`.
    fn positions(from: usize, n: usize) -> Tensor {
        let data: Vec<f32> = (0..2 * n * 3)
            .map(|i| {
                let (h, rest) = (i / (n * 3), i % (n * 3));
                (1000 * h + 10 * (from + rest / 3) + rest % 3) as f32
            })
            .collect();
        Tensor::from_vec(data, (1, 2, n, 3), &Device::Cpu).unwrap()
    }

    fn all(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn kv_cache_appends_grows_forks_and_truncates() {
        let mut c = KvCache::new();
        c.append(positions(0, 5), positions(0, 5)).unwrap();
        // Step by step past the first buffer's 256 positions.
        for p in 5..300 {
            c.append(positions(p, 1), positions(p, 1)).unwrap();
        }
        assert_eq!(c.len(), 300);
        let (k, v) = c.get().unwrap();
        assert_eq!(all(&k), all(&positions(0, 300)));
        assert_eq!(all(&v), all(&positions(0, 300)));
        // A clone forks: each side keeps its own next position.
        let mut fork = c.clone();
        c.append(positions(300, 1), positions(300, 1)).unwrap();
        fork.append(positions(900, 1), positions(900, 1)).unwrap();
        let (k, _) = c.get().unwrap();
        let (kf, _) = fork.get().unwrap();
        assert_eq!(all(&k.narrow(2, 300, 1).unwrap()), all(&positions(300, 1)));
        assert_eq!(all(&kf.narrow(2, 300, 1).unwrap()), all(&positions(900, 1)));
        // Truncating and appending leaves views taken before untouched.
        let before = c.get().unwrap().0;
        c.truncate(10).unwrap();
        c.append(positions(500, 2), positions(500, 2)).unwrap();
        assert_eq!(all(&before), all(&positions(0, 301)));
        let (k, _) = c.get().unwrap();
        let want = Tensor::cat(&[positions(0, 10), positions(500, 2)], 2).unwrap();
        assert_eq!(all(&k), all(&want));
        c.truncate(0).unwrap();
        assert!(c.is_empty() && c.get().is_none());
    }
}
