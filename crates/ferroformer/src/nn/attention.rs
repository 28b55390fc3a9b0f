//! Multi-head attention: self- and cross-attention, MHA/GQA/MQA, optional biases, any scale,
//! additive masks and position biases, rotary embeddings, a KV cache, and attention weights
//! on request. Every model family runs through this one implementation.

use std::sync::Arc;

use candle_core::{Tensor, D};

use super::linear::{join, Linear, ParamNames};
use super::norm::Norm;
use super::ops::{self, Mode};
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
    /// Soft cap on the scaled scores, `cap · tanh(score / cap)`, before the masks (Gemma 2's
    /// `attn_logit_softcapping`); `None` leaves them as they are.
    pub softcap: Option<f64>,
    /// Dimensions of each query and key head that the rotary embedding rotates, the first
    /// ones (Phi-3's `partial_rotary_factor`); `None` rotates all `head_dim`.
    pub rotary_dim: Option<usize>,
}

impl AttentionConfig {
    /// Standard multi-head attention with biases; fails if `d_model` is not divisible by
    /// `num_heads`.
    pub fn new(d_model: usize, num_heads: usize) -> Result<Self> {
        if num_heads == 0 {
            return Err(Error::config("num_heads", "must be > 0"));
        }
        if d_model == 0 || !d_model.is_multiple_of(num_heads) {
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
            softcap: None,
            rotary_dim: None,
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
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::config(
                "num_kv_heads",
                format!(
                    "num_heads ({}) must be a multiple of num_kv_heads ({})",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if let Some(r) = self.rotary_dim {
            if r == 0 || r > self.head_dim || !r.is_multiple_of(2) {
                return Err(Error::config(
                    "rotary_dim",
                    format!(
                        "must be even and in 2..={} (head_dim), found {r}",
                        self.head_dim
                    ),
                ));
            }
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config(
                    "softcap",
                    format!("must be a finite number > 0, found {c}"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("must be in [0, 1), found {}", self.dropout),
            ));
        }
        Ok(())
    }

    /// Width of the rotated part of each head: `rotary_dim`, else `head_dim`.
    pub fn rotary_width(&self) -> usize {
        self.rotary_dim.unwrap_or(self.head_dim)
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
    /// Set by `select_rows`: the buffer holds exactly the cached positions.
    tight: bool,
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

    /// Positions the buffer holds before it must grow (0 when empty).
    pub fn capacity(&self) -> usize {
        self.buf
            .as_ref()
            .and_then(|b| b.k.dims4().ok())
            .map_or(0, |(_, _, cap, _)| cap)
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.buf = None;
        self.len = 0;
        self.copy_on_append = false;
        self.tight = false;
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

    /// Keeps the batch rows `rows` (indices into the current batch, in their new order):
    /// beam search reorders beams this way, and rows that finished leave the batch. The
    /// cached positions are copied once; the next append extends them by concatenation
    /// (a beam cache is reordered again at every step, so spare capacity would be copied
    /// for nothing).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        if let Some((k, v)) = self.get() {
            // A view into spare capacity is copied to contiguous rows first (once: the
            // selected buffer is exactly full and stays contiguous).
            self.buf = Some(Arc::new(KvBuffer {
                k: k.contiguous()?.index_select(rows, 0)?,
                v: v.contiguous()?.index_select(rows, 0)?,
            }));
            self.copy_on_append = false;
            self.tight = true;
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

    /// A cache holding `k` and `v`, each `(batch, kv_heads, len, head_dim)`, with room for
    /// `room` more positions before its buffer grows: continuous batching assembles the
    /// cache of a batch from the caches of its sequences (left-padded to one length).
    pub fn from_tensors(k: &Tensor, v: &Tensor, room: usize) -> Result<Self> {
        let (b, h, n, d) = k.dims4()?;
        if v.dims() != k.dims() {
            return Err(Error::shape(
                "cached values",
                format!("({b}, {h}, {n}, {d}) like the keys"),
                v.dims(),
            ));
        }
        if n == 0 {
            return Ok(Self::new());
        }
        let cap = n + room.max(1);
        let buf = KvBuffer {
            k: Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?,
            v: Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?,
        };
        buf.k.slice_set(&k.contiguous()?, 2, 0)?;
        buf.v.slice_set(&v.contiguous()?, 2, 0)?;
        Ok(Self {
            buf: Some(Arc::new(buf)),
            len: n,
            copy_on_append: false,
            tight: false,
        })
    }

    /// Overwrites row `row`'s positions `start..start + n` with `k` and `v`, each
    /// `(1, kv_heads, n, head_dim)`, in place (within the cached length): continuous
    /// batching puts a new sequence into the row of one that finished instead of rebuilding
    /// the cache of the whole batch.
    pub fn write_row(&mut self, row: usize, start: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let (_, h, n, d) = k.dims4()?;
        let Some(buf) = self.buf.as_mut() else {
            return Err(Error::Invalid("write_row: the cache is empty".into()));
        };
        let (b, bh, _, bd) = buf.k.dims4()?;
        if row >= b || (h, d) != (bh, bd) || start + n > self.len || v.dims() != k.dims() {
            return Err(Error::shape(
                "write_row keys and values",
                format!(
                    "(1, {bh}, n <= {} - {start}, {bd}) for a row below {b}",
                    self.len
                ),
                k.dims(),
            ));
        }
        if Arc::get_mut(buf).is_none() || self.copy_on_append {
            // Shared with a clone (or views past a truncation): write into a copy.
            let (k0, v0) = self
                .get()
                .ok_or_else(|| Error::Invalid("write_row: the cache is empty".into()))?;
            let len = self.len;
            self.reset();
            self.append(k0.contiguous()?, v0.contiguous()?)?;
            debug_assert_eq!(self.len, len);
        }
        let buf = self
            .buf
            .as_ref()
            .ok_or_else(|| Error::Invalid("write_row: the cache is empty".into()))?;
        buf.k
            .narrow(0, row, 1)?
            .slice_set(&k.contiguous()?, 2, start)?;
        buf.v
            .narrow(0, row, 1)?
            .slice_set(&v.contiguous()?, 2, start)?;
        Ok(())
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
            // Filled exactly by `select_rows`: extend by one concatenation rather than
            // allocate spare room that the next reordering would copy again.
            Some(buf) if self.tight && !self.copy_on_append && n == 1 => {
                let k = Tensor::cat(&[&buf.k, &k.contiguous()?], 2)?;
                let v = Tensor::cat(&[&buf.v, &v.contiguous()?], 2)?;
                self.buf = Some(Arc::new(KvBuffer {
                    k: k.clone(),
                    v: v.clone(),
                }));
                self.len = needed;
                self.tight = false;
                return Ok((k, v));
            }
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
                self.tight = false;
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
    /// Training or inference, attention weights wanted, whose arithmetic.
    pub mode: Mode,
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
    /// RMS norms of each query and key head before the rotation (Qwen3, Gemma 3).
    qk_norms: Option<(Norm, Norm)>,
    /// Factor applied to the queries after the rotation, before they meet the keys
    /// (Gemma 3 in llama.cpp: `1/sqrt(head_dim)` on q, 1 inside the softmax). Under
    /// [`super::Arithmetic::Ggml`] the rounding of the scaled queries to f16 is llama.cpp's.
    query_scale: Option<f64>,
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
        Self::from_parts(cfg, qkv, out)
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
            qk_norms: None,
            query_scale: None,
        })
    }

    /// Adds norms over each query head and each key head (width `head_dim`), applied
    /// before the rotation.
    pub fn with_qk_norms(mut self, q_norm: Norm, k_norm: Norm) -> Result<Self> {
        for (what, n) in [("query", &q_norm), ("key", &k_norm)] {
            if n.dim()? != self.cfg.head_dim {
                return Err(Error::shape(
                    format!("{what} head norm weight"),
                    format!("({})", self.cfg.head_dim),
                    &[n.dim()?],
                ));
            }
        }
        self.qk_norms = Some((q_norm, k_norm));
        Ok(self)
    }

    /// Multiplies the queries by `scale` after the rotation; the configured score scale
    /// ([`AttentionConfig::scale`]) still applies inside the softmax.
    pub fn with_query_scale(mut self, scale: f64) -> Self {
        self.query_scale = Some(scale);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionConfig {
        &self.cfg
    }

    /// Attends from `x` `(batch, q_len, d_model)` to itself, or to `ctx.memory`.
    pub fn forward(&self, x: &Tensor, ctx: AttentionContext) -> Result<AttentionOutput> {
        let cfg = &self.cfg;
        if x.rank() != 3 || x.dims().last() != Some(&cfg.d_model) {
            return Err(Error::shape(
                "attention input",
                format!("(batch, seq, {})", cfg.d_model),
                x.dims(),
            ));
        }
        let (h, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let biases: Vec<(&str, &Tensor)> = [
            ("position bias", ctx.position_bias),
            ("attention mask", ctx.bias),
        ]
        .into_iter()
        .filter_map(|(name, b)| Some((name, b?)))
        .collect();
        let (fused, split);
        let qkv = match (ctx.memory, ctx.rope, ctx.cache) {
            (Some(_), _, _) if ctx.packed.is_some() => {
                return Err(Error::Invalid(
                    "packed sequences attend to themselves: no cross-attention memory".into(),
                ))
            }
            (Some(memory), _, cache) => {
                split = self.cross_qkv(x, memory, cache)?;
                ops::Qkv::Split {
                    q: &split.0,
                    k: &split.1,
                    v: &split.2,
                }
            }
            // Nothing to normalize, rotate, scale or cache: attention reads the fused
            // projection in place.
            (None, None, None) if self.qk_norms.is_none() && self.query_scale.is_none() => {
                fused = self.qkv.forward(x)?;
                ops::Qkv::Fused(&fused)
            }
            (None, rope, cache) => {
                split = self.self_qkv(x, rope, cache, ctx.mode)?;
                ops::Qkv::Split {
                    q: &split.0,
                    k: &split.1,
                    v: &split.2,
                }
            }
        };
        let (context, weights) = ops::attention(ops::AttentionCall {
            qkv,
            heads: h,
            kv_heads: kvh,
            head_dim: hd,
            biases: &biases,
            scale: cfg.scale,
            softcap: cfg.softcap,
            packed: ctx.packed,
            dropout: cfg.dropout,
            mode: ctx.mode,
        })?;
        Ok(AttentionOutput {
            output: self.out.forward(&context)?,
            weights,
        })
    }

    /// Self-attention heads: the fused projection split, rotated, and appended to the cache
    /// (keys and values as the model's arithmetic stores them); k and v span the cache.
    fn self_qkv(
        &self,
        x: &Tensor,
        rope: Option<&RopeTables>,
        cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let cfg = &self.cfg;
        let (h, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let qkv = self.qkv.forward(x)?;
        let q = ops::to_heads(&qkv.narrow(D::Minus1, 0, q_dim)?, h, hd)?;
        let k = ops::to_heads(&qkv.narrow(D::Minus1, q_dim, kv_dim)?, kvh, hd)?;
        let v = ops::to_heads(&qkv.narrow(D::Minus1, q_dim + kv_dim, kv_dim)?, kvh, hd)?;
        let (q, k) = match &self.qk_norms {
            Some((qn, kn)) => (
                qn.forward_with(&q, None, mode.arithmetic)?,
                kn.forward_with(&k, None, mode.arithmetic)?,
            ),
            _ => (q, k),
        };
        let (q, k) = match rope {
            Some(rope) => (
                rope.apply(&q, mode.arithmetic)?,
                rope.apply(&k, mode.arithmetic)?,
            ),
            _ => (q, k),
        };
        let q = match self.query_scale {
            Some(s) => (q * s)?,
            None => q,
        };
        let (k, v) = ops::kv_values(k, v, mode.arithmetic)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v)?,
            None => (k, v),
        };
        Ok((q, k, v))
    }

    /// Cross-attention heads: queries from `x`, keys and values from `memory` — computed
    /// once and kept in the cache when there is one.
    fn cross_qkv(
        &self,
        x: &Tensor,
        memory: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let cfg = &self.cfg;
        let (h, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        let (mb, _, md) = memory.dims3()?;
        if mb != x.dim(0)? || md != cfg.d_model {
            return Err(Error::shape(
                "cross-attention memory",
                format!("(batch={}, mem_len, {})", x.dim(0)?, cfg.d_model),
                memory.dims(),
            ));
        }
        let q = ops::to_heads(&self.qkv.narrow_out(0, q_dim)?.forward(x)?, h, hd)?;
        if let Some((k, v)) = cache.as_ref().and_then(|c| c.get()) {
            return Ok((q, k, v));
        }
        let kv = self.qkv.narrow_out(q_dim, 2 * kv_dim)?.forward(memory)?;
        let k = ops::to_heads(&kv.narrow(D::Minus1, 0, kv_dim)?, kvh, hd)?;
        let v = ops::to_heads(&kv.narrow(D::Minus1, kv_dim, kv_dim)?, kvh, hd)?;
        if let Some(cache) = cache {
            cache.append(k.clone(), v.clone())?;
        }
        Ok((q, k, v))
    }
}

/// Softmax over the last dimension (see [`ops::softmax_last_dim`]).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    ops::softmax_last_dim(x)
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
