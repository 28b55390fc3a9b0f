//! Positional encodings: sinusoidal (the original paper), learned absolute (BERT, GPT-2, BART)
//! and rotary (RoPE: Llama, Qwen2, GPT-NeoX).

use candle_core::{DType, Device, Tensor};
use candle_nn::Init;

use super::ops::{self, Arithmetic};
use crate::error::{Error, Result};
use crate::weights::Weights;

fn check_range(what: &str, start: usize, len: usize, max: usize) -> Result<()> {
    if start + len > max {
        return Err(Error::PositionOutOfRange {
            what: what.to_string(),
            position: start + len - 1,
            max,
        });
    }
    Ok(())
}

/// Largest value of a `(batch, seq)` tensor of position ids, checked against `max`.
fn check_ids(what: &str, ids: &Tensor, offset: usize, max: usize) -> Result<()> {
    if ids.elem_count() == 0 {
        return Ok(());
    }
    let largest = ids.to_dtype(DType::F64)?.max_all()?.to_scalar::<f64>()?;
    if largest < 0.0 {
        return Err(Error::Invalid(format!(
            "{what}: negative position id {largest}"
        )));
    }
    let largest = largest as usize + offset;
    if largest >= max {
        return Err(Error::PositionOutOfRange {
            what: what.to_string(),
            position: largest,
            max,
        });
    }
    Ok(())
}

/// The most values a sinusoidal table may hold (2^28: 1 GiB in f32), far above any model's.
const MAX_SINUSOIDAL_VALUES: usize = 1 << 28;

/// The fixed encoding of "Attention Is All You Need":
/// `pe[p, 2i] = sin(p / 10000^(2i/d))`, `pe[p, 2i+1] = cos(p / 10000^(2i/d))`.
#[derive(Debug, Clone)]
pub struct SinusoidalPositionalEncoding {
    table: Tensor,
    max_len: usize,
}

impl SinusoidalPositionalEncoding {
    /// Precomputes the table for `max_len` positions of width `d_model` (computed in f64).
    pub fn new(d_model: usize, max_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        // The table is built whole: a context no model uses is refused before allocating it.
        Self::check_size(d_model, max_len)?;
        let mut data = vec![0f64; max_len * d_model];
        for p in 0..max_len {
            for i in (0..d_model).step_by(2) {
                let angle = p as f64 / 10000f64.powf(i as f64 / d_model as f64);
                data[p * d_model + i] = angle.sin();
                if i + 1 < d_model {
                    data[p * d_model + i + 1] = angle.cos();
                }
            }
        }
        let table = Tensor::from_vec(data, (max_len, d_model), device)?.to_dtype(dtype)?;
        Ok(Self { table, max_len })
    }

    /// The full `(max_len, d_model)` table.
    pub fn table(&self) -> &Tensor {
        &self.table
    }

    /// Rows `start..start + len` of the table.
    pub fn encoding(&self, start: usize, len: usize) -> Result<Tensor> {
        check_range("sinusoidal positional encoding", start, len, self.max_len)?;
        Ok(self.table.narrow(0, start, len)?)
    }

    /// Encodings of explicit position ids `(batch, seq)`, shape `(batch, seq, d_model)`
    /// (left-padded rows count positions from their first real token).
    pub fn forward_ids(&self, position_ids: &Tensor) -> Result<Tensor> {
        check_ids(
            "sinusoidal positional encoding",
            position_ids,
            0,
            self.max_len,
        )?;
        let (b, s) = position_ids.dims2()?;
        let flat = position_ids.to_dtype(DType::U32)?.flatten_all()?;
        Ok(self
            .table
            .index_select(&flat, 0)?
            .reshape((b, s, self.table.dim(1)?))?)
    }

    /// Adds the encoding of positions `start..` to `x` of shape `(batch, seq, d_model)`.
    pub fn forward(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let (_, seq, d) = x.dims3()?;
        let d_model = self.table.dim(1)?;
        if d != d_model {
            return Err(Error::shape(
                "positional encoding input",
                format!("(batch, seq, {d_model})"),
                x.dims(),
            ));
        }
        Ok(x.broadcast_add(&self.encoding(start, seq)?)?)
    }
}

impl SinusoidalPositionalEncoding {
    /// Checks the table size and wraps `data` (`max_len` rows of `d_model`).
    fn from_rows(
        data: Vec<f32>,
        d_model: usize,
        max_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let table = Tensor::from_vec(data, (max_len, d_model), device)?.to_dtype(dtype)?;
        Ok(Self { table, max_len })
    }

    fn check_size(d_model: usize, max_len: usize) -> Result<()> {
        if d_model == 0 {
            return Err(Error::config("d_model", "must be > 0"));
        }
        match max_len.checked_mul(d_model) {
            Some(n) if n <= MAX_SINUSOIDAL_VALUES => Ok(()),
            _ => Err(Error::config(
                "max_position_embeddings",
                format!(
                    "a sinusoidal table of {max_len} positions × {d_model} is more than the \
                     {MAX_SINUSOIDAL_VALUES} values supported"
                ),
            )),
        }
    }

    /// The same frequencies with every sine first and every cosine after them
    /// (`pe[p, k] = sin(p / 10000^(2k/d))`, `pe[p, ceil(d/2) + k] = cos(...)`): Marian's and
    /// Pegasus' `SinusoidalPositionalEmbedding` (computed in f64, as their NumPy code).
    pub fn halves(d_model: usize, max_len: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::check_size(d_model, max_len)?;
        let sentinel = d_model.div_ceil(2);
        let mut data = vec![0f32; max_len * d_model];
        for p in 0..max_len {
            let row = &mut data[p * d_model..(p + 1) * d_model];
            for j in 0..d_model {
                let angle = p as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d_model as f64);
                if j % 2 == 0 {
                    row[j / 2] = angle.sin() as f32;
                } else {
                    row[sentinel + j / 2] = angle.cos() as f32;
                }
            }
        }
        Self::from_rows(data, d_model, max_len, dtype, device)
    }

    /// fairseq's table (M2M100, NLLB): `num_embeddings` rows, frequencies
    /// `exp(-k ln(10000) / (d/2 - 1))`, sines then cosines, an odd width padded with a zero
    /// column, and row `padding_idx` all zeros. Computed in f32 like `transformers`' code, so
    /// the rounding is the same.
    pub fn fairseq(
        d_model: usize,
        num_embeddings: usize,
        padding_idx: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::check_size(d_model, num_embeddings)?;
        let half = d_model / 2;
        if half < 2 {
            return Err(Error::config(
                "d_model",
                format!("fairseq sinusoidal positions need d_model >= 4, found {d_model}"),
            ));
        }
        let step = -((10000f64).ln() / (half - 1) as f64) as f32;
        let freqs: Vec<f32> = (0..half).map(|k| (k as f32 * step).exp()).collect();
        let mut data = vec![0f32; num_embeddings * d_model];
        for p in 0..num_embeddings {
            if p == padding_idx {
                continue;
            }
            let row = &mut data[p * d_model..(p + 1) * d_model];
            for (k, f) in freqs.iter().enumerate() {
                let angle = p as f32 * f;
                row[k] = angle.sin();
                row[half + k] = angle.cos();
            }
        }
        Self::from_rows(data, d_model, num_embeddings, dtype, device)
    }
}

/// T5's relative position bias: a learned scalar per head for each bucket of the distance
/// between a key and a query, added to the attention scores of every layer of a stack
/// (the table lives in the first layer and is shared by the others).
#[derive(Debug, Clone)]
pub struct RelativePositionBias {
    /// `(num_buckets, num_heads)`
    table: Tensor,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl RelativePositionBias {
    /// Loads (or creates) `{name}` of shape `(num_buckets, num_heads)`. Encoders are
    /// `bidirectional` (half the buckets for keys after the query); decoders see only keys
    /// at or before the query.
    pub fn load(
        w: &Weights,
        num_buckets: usize,
        max_distance: usize,
        num_heads: usize,
        bidirectional: bool,
        name: &str,
    ) -> Result<Self> {
        let min_buckets = if bidirectional { 4 } else { 2 };
        if num_buckets < min_buckets || max_distance == 0 {
            return Err(Error::config(
                "relative_attention_num_buckets",
                format!(
                    "need at least {min_buckets} buckets and a positive max distance, found \
                     {num_buckets} buckets and max distance {max_distance}"
                ),
            ));
        }
        let table = w.get_init(
            (num_buckets, num_heads),
            name,
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self {
            table,
            bidirectional,
            num_buckets,
            max_distance,
        })
    }

    /// The bucket of `relative = key_position - query_position`, as T5's
    /// `_relative_position_bucket` computes it (the logarithm in f32, truncated).
    pub fn bucket(&self, relative: i64) -> usize {
        let mut buckets = self.num_buckets;
        let mut bucket = 0;
        let distance = if self.bidirectional {
            buckets /= 2;
            if relative > 0 {
                bucket += buckets;
            }
            relative.unsigned_abs() as usize
        } else {
            (-relative.min(0)) as usize
        };
        let max_exact = buckets / 2;
        if distance < max_exact {
            return bucket + distance;
        }
        let log_ratio = (distance as f32 / max_exact as f32).ln()
            / ((self.max_distance as f64 / max_exact as f64).ln() as f32)
            * (buckets - max_exact) as f32;
        bucket + (max_exact + log_ratio as usize).min(buckets - 1)
    }

    /// The bias `(1, heads, q_len, k_len)` for queries at positions `q_start..q_start + q_len`
    /// and keys at `0..k_len`.
    pub fn bias(&self, q_start: usize, q_len: usize, k_len: usize) -> Result<Tensor> {
        let mut idx = Vec::with_capacity(q_len * k_len);
        for i in 0..q_len {
            let q = (q_start + i) as i64;
            for k in 0..k_len {
                idx.push(self.bucket(k as i64 - q) as u32);
            }
        }
        let idx = Tensor::from_vec(idx, q_len * k_len, self.table.device())?;
        let heads = self.table.dim(1)?;
        Ok(self
            .table
            .index_select(&idx, 0)?
            .reshape((q_len, k_len, heads))?
            .permute((2, 0, 1))?
            .contiguous()?
            .unsqueeze(0)?)
    }
}

/// A learned table of position embeddings, `(max_positions + offset, d)`.
///
/// BART stores two extra rows and looks position `p` up at row `p + 2`; `offset` says so.
#[derive(Debug, Clone)]
pub struct LearnedPositionalEmbedding {
    weight: Tensor,
    offset: usize,
}

impl LearnedPositionalEmbedding {
    /// Loads (or creates, N(0, 1) like `nn.Embedding`) `{name}` of shape
    /// `(max_positions + offset, d)`.
    pub fn load(
        w: &Weights,
        max_positions: usize,
        d: usize,
        offset: usize,
        name: &str,
    ) -> Result<Self> {
        let weight = w.get_init(
            (max_positions + offset, d),
            name,
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        Ok(Self { weight, offset })
    }

    /// Number of positions that can be looked up.
    pub fn max_positions(&self) -> usize {
        self.weight.dims()[0] - self.offset
    }

    /// The table.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Embeddings of positions `start..start + len`, shape `(len, d)`.
    pub fn range(&self, start: usize, len: usize) -> Result<Tensor> {
        check_range(
            "learned position embedding",
            start,
            len,
            self.max_positions(),
        )?;
        Ok(self.weight.narrow(0, start + self.offset, len)?)
    }

    /// Embeddings of explicit position ids of shape `(batch, seq)`, shape `(batch, seq, d)`.
    pub fn forward_ids(&self, position_ids: &Tensor) -> Result<Tensor> {
        check_ids(
            "learned position embedding",
            position_ids,
            self.offset,
            self.weight.dims()[0],
        )?;
        let ids =
            (position_ids.to_dtype(DType::U32)? + self.offset as f64)?.to_dtype(DType::U32)?;
        let (b, s) = ids.dims2()?;
        let flat = self.weight.index_select(&ids.flatten_all()?, 0)?;
        Ok(flat.reshape((b, s, self.weight.dim(1)?))?)
    }
}

/// How the two halves of each rotated pair are laid out in a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Pairs `(x[i], x[i + d/2])`: Llama/Qwen2 as written in `transformers` (`rotate_half`).
    HalfSplit,
    /// Pairs `(x[2i], x[2i+1])`: the RoFormer paper, GPT-J, Llama in GGUF.
    Interleaved,
}

/// How the rotary frequencies are rescaled for contexts longer than the model was
/// trained on (`rope_scaling` in `config.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Llama 3.1's scheme (`rope_type: "llama3"`): high frequencies (wavelength below
    /// `original_max_position_embeddings / high_freq_factor`) are kept, low frequencies
    /// (wavelength above `original_max_position_embeddings / low_freq_factor`) are divided by
    /// `factor`, and the band between is interpolated smoothly.
    Llama3 {
        /// Context extension factor.
        factor: f64,
        /// Lower bound of the smoothed band, as a divisor of the original context.
        low_freq_factor: f64,
        /// Upper bound of the smoothed band, as a divisor of the original context.
        high_freq_factor: f64,
        /// Context length the model was pre-trained on.
        original_max_position_embeddings: usize,
    },
    /// Position interpolation (`rope_type: "linear"`, Gemma 3 4B+): every frequency divided
    /// by `factor`.
    Linear {
        /// Context extension factor.
        factor: f64,
    },
    /// LongRoPE (`rope_type: "longrope"`, Phi-3's `su`; Phi-3-mini-128k, Phi-3.5-mini), as
    /// `transformers` 4.57's `_compute_longrope_parameters` and `dynamic_rope_update`:
    /// frequency `i` is `1 / (factor[i] · base^(2i/d))` with the short factors while the
    /// positions of a forward pass stay within `original_max_position_embeddings`, the long
    /// ones once the largest position reaches past it, and cosines and sines are multiplied
    /// by `attention_factor`.
    ///
    /// Which factors a forward pass uses is decided, as in `transformers`, from that pass's
    /// own largest position (largest over the batch), not from the context size as
    /// llama.cpp decides (`n_ctx > n_ctx_orig`: one choice for the whole session). We follow
    /// `transformers` because that is what the logits are checked against, and it needs no
    /// context size up front. What this implies, as in `transformers`: a prompt within the
    /// original length is encoded with the short factors and keeps those keys in the cache
    /// when decoding crosses the threshold (later steps use the long ones); a left-padded
    /// batch picks one set for every row, by its longest row.
    #[serde(rename = "longrope")]
    LongRope {
        /// Per-frequency divisors within the original context (`short_factor`).
        short_factor: Vec<f64>,
        /// Per-frequency divisors past it (`long_factor`).
        long_factor: Vec<f64>,
        /// The pre-training context: longer passes use `long_factor` (the config's top-level
        /// `original_max_position_embeddings`, else `max_position_embeddings`).
        original_max_position_embeddings: usize,
        /// Multiplies cosines and sines: `rope_scaling.attention_factor`, else
        /// `sqrt(1 + ln(factor) / ln(original_max_position_embeddings))` (1 when the factor
        /// is at most 1), the factor being `max_position_embeddings /
        /// original_max_position_embeddings` when the config has the latter at top level,
        /// `rope_scaling.factor` otherwise.
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// Reads `config.json`'s `rope_scaling` value (`null` or absent: no scaling). Older
    /// checkpoints name the kind `type` instead of `rope_type`; `default` means none.
    /// `longrope` also needs the context lengths: see [`RopeScaling::from_config`].
    pub fn from_json(value: Option<&serde_json::Value>) -> Result<Option<Self>> {
        Self::from_config(value, None, None)
    }

    /// [`RopeScaling::from_json`] with the config's top-level `max_position_embeddings` and
    /// `original_max_position_embeddings`, which `longrope` reads as `transformers` does
    /// (see [`RopeScaling::LongRope`]).
    pub fn from_config(
        value: Option<&serde_json::Value>,
        max_position_embeddings: Option<usize>,
        original_max_position_embeddings: Option<usize>,
    ) -> Result<Option<Self>> {
        let Some(obj) = value.and_then(|v| v.as_object()) else {
            return Ok(None);
        };
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let num = |key: &str| -> Result<f64> {
            obj.get(key).and_then(|v| v.as_f64()).ok_or_else(|| {
                Error::config(
                    format!("rope_scaling.{key}"),
                    format!("missing or not a number (rope_type `{kind}` needs it)"),
                )
            })
        };
        match kind {
            "default" => Ok(None),
            "llama3" => {
                let s = RopeScaling::Llama3 {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?
                        as usize,
                };
                s.validate()?;
                Ok(Some(s))
            }
            "linear" => {
                let s = RopeScaling::Linear {
                    factor: num("factor")?,
                };
                s.validate()?;
                Ok(Some(s))
            }
            "longrope" => {
                let factors = |key: &str| -> Result<Vec<f64>> {
                    obj.get(key)
                        .and_then(|v| v.as_array())
                        .and_then(|a| a.iter().map(|x| x.as_f64()).collect::<Option<Vec<_>>>())
                        .ok_or_else(|| {
                            Error::config(
                                format!("rope_scaling.{key}"),
                                "missing or not a list of numbers (rope_type `longrope` needs \
                                 short_factor and long_factor)",
                            )
                        })
                };
                let Some(max_positions) = max_position_embeddings else {
                    return Err(Error::config(
                        "rope_scaling.rope_type",
                        "`longrope` needs max_position_embeddings, which this model does not \
                         pass on",
                    ));
                };
                // `_compute_longrope_parameters`: a top-level original context (Phi-3) sets
                // the factor; without one the context is max_position_embeddings and the
                // factor comes from rope_scaling.
                let (original, factor) = match original_max_position_embeddings.filter(|&o| o > 0) {
                    Some(o) => (o, max_positions as f64 / o as f64),
                    None => (
                        max_positions,
                        obj.get("factor")
                            .and_then(|v| v.as_f64())
                            .unwrap_or(f64::NAN),
                    ),
                };
                let attention_factor = match obj.get("attention_factor") {
                    Some(v) if !v.is_null() => v.as_f64().ok_or_else(|| {
                        Error::config("rope_scaling.attention_factor", "not a number")
                    })?,
                    _ if factor.is_nan() => {
                        return Err(Error::config(
                            "rope_scaling.factor",
                            "missing: `longrope` without a top-level \
                             original_max_position_embeddings needs factor or attention_factor",
                        ))
                    }
                    _ if factor <= 1.0 => 1.0,
                    _ => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                let s = RopeScaling::LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_position_embeddings: original,
                    attention_factor,
                };
                s.validate()?;
                Ok(Some(s))
            }
            other => Err(Error::config(
                "rope_scaling.rope_type",
                format!(
                    "`{other}` is not supported (supported: llama3, linear, longrope, default)"
                ),
            )),
        }
    }

    /// Rejects values `transformers` rejects.
    pub fn validate(&self) -> Result<()> {
        match *self {
            RopeScaling::LongRope {
                ref short_factor,
                ref long_factor,
                original_max_position_embeddings,
                attention_factor,
            } => {
                for (key, list) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    if let Some(bad) = list.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                        return Err(Error::config(
                            format!("rope_scaling.{key}"),
                            format!("factors must be finite and > 0, found {bad}"),
                        ));
                    }
                }
                if original_max_position_embeddings < 2 {
                    return Err(Error::config(
                        "original_max_position_embeddings",
                        format!("must be at least 2, found {original_max_position_embeddings}"),
                    ));
                }
                if !(attention_factor.is_finite() && attention_factor >= 0.0) {
                    return Err(Error::config(
                        "rope_scaling.attention_factor",
                        format!("must be a finite number >= 0, found {attention_factor}"),
                    ));
                }
                Ok(())
            }
            RopeScaling::Linear { factor } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(Error::config(
                        "rope_scaling.factor",
                        format!("must be a finite number > 0, found {factor}"),
                    ));
                }
                Ok(())
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                if factor.is_nan() || factor < 1.0 {
                    return Err(Error::config(
                        "rope_scaling.factor",
                        format!("must be >= 1, found {factor}"),
                    ));
                }
                if high_freq_factor.is_nan() || high_freq_factor <= low_freq_factor {
                    return Err(Error::config(
                        "rope_scaling.high_freq_factor",
                        format!(
                            "must be greater than low_freq_factor ({low_freq_factor}), found \
                             {high_freq_factor}"
                        ),
                    ));
                }
                if original_max_position_embeddings == 0 {
                    return Err(Error::config(
                        "rope_scaling.original_max_position_embeddings",
                        "must be > 0",
                    ));
                }
                Ok(())
            }
        }
    }

    /// Rescales the inverse frequencies, in f32 like `transformers`'
    /// `_compute_llama3_parameters` (so the tables match it bit for bit).
    pub fn apply(&self, inv_freq: &mut [f32]) {
        match *self {
            RopeScaling::LongRope {
                ref short_factor, ..
            } => {
                for (f, s) in inv_freq.iter_mut().zip(short_factor) {
                    *f /= *s as f32;
                }
            }
            RopeScaling::Linear { factor } => {
                let factor = factor as f32;
                for f in inv_freq.iter_mut() {
                    *f /= factor;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let low_freq_wavelen = old / low;
                let high_freq_wavelen = old / high;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_freq_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_freq_wavelen {
                        let smooth = (old / wavelen - low) / (high - low);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
    }
}

/// Rotary position embedding (RoPE).
///
/// Holds the frequencies only: the cosines and sines of the positions of a forward pass are
/// computed when asked for, in the model's arithmetic, so a model with a context of millions
/// of positions costs nothing until it sees them.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inv_freq: Vec<f32>,
    rescaled: bool,
    /// llama.cpp's per-frequency divisors (a GGUF file's `rope_freqs` tensor), if any.
    freq_factors: Option<Vec<f32>>,
    /// LongRoPE: the frequencies used past the original context, and when.
    long: Option<LongFrequencies>,
    /// Multiplies cosines and sines (LongRoPE's attention factor; 1 otherwise).
    attention_factor: f32,
    head_dim: usize,
    max_positions: usize,
    layout: RopeLayout,
    base: f64,
    dtype: DType,
    device: Device,
}

/// LongRoPE's long-context frequencies ([`RopeScaling::LongRope`]); the short ones are the
/// embedding's own.
#[derive(Debug, Clone)]
struct LongFrequencies {
    inv_freq: Vec<f32>,
    /// llama.cpp's divisors (a GGUF file's `rope_factors_long`), when loaded from one.
    freq_factors: Option<Vec<f32>>,
    /// `original_max_position_embeddings` (GGUF: `rope.scaling.original_context_length`).
    original: usize,
    /// `Some(n_ctx)`: chosen once by the context size, as llama.cpp does; `None`: by each
    /// pass's largest position, as `transformers` does.
    context: Option<usize>,
}

impl LongFrequencies {
    fn used(&self, positions: &[u32]) -> bool {
        match self.context {
            Some(n_ctx) => n_ctx > self.original,
            None => positions
                .iter()
                .max()
                .is_some_and(|&p| p as usize + 1 > self.original),
        }
    }
}

/// Cosines and sines of the positions of one forward pass, shared by all layers.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// `(batch, seq, head_dim / 2)`
    pub cos: Tensor,
    /// `(batch, seq, head_dim / 2)`
    pub sin: Tensor,
    layout: RopeLayout,
}

impl RotaryEmbedding {
    /// Rotations by `p * base^(-2i/head_dim)` for positions below `max_positions`.
    pub fn new(
        head_dim: usize,
        max_positions: usize,
        base: f64,
        layout: RopeLayout,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::with_scaling(head_dim, max_positions, base, layout, None, dtype, device)
    }

    /// Like [`RotaryEmbedding::new`], with the frequencies rescaled by `scaling`.
    pub fn with_scaling(
        head_dim: usize,
        max_positions: usize,
        base: f64,
        layout: RopeLayout,
        scaling: Option<RopeScaling>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::config(
                "head_dim",
                format!("rotary embeddings need an even head dimension, found {head_dim}"),
            ));
        }
        if !(base.is_finite() && base > 0.0) {
            return Err(Error::config(
                "rope_theta",
                format!("must be a positive number, found {base}"),
            ));
        }
        let half = head_dim / 2;
        // Same arithmetic as `transformers`: inverse frequencies in f32, angles in f32.
        let powers = || (0..half).map(|i| base.powf((2 * i) as f64 / head_dim as f64) as f32);
        let mut inv_freq: Vec<f32> = powers().map(|p| 1.0 / p).collect();
        let (mut long, mut attention_factor) = (None, 1.0f32);
        match &scaling {
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                attention_factor: a,
            }) => {
                scaling.as_ref().map(RopeScaling::validate).transpose()?;
                for (key, list) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    if list.len() != half {
                        return Err(Error::config(
                            format!("rope_scaling.{key}"),
                            format!(
                                "needs one factor per rotated pair: {half} (rotary width \
                                 {head_dim} / 2), found {}",
                                list.len()
                            ),
                        ));
                    }
                }
                // `1 / (ext_factors * base**(2i/d))` in f32, as `transformers`.
                let scaled = |factors: &[f64]| -> Vec<f32> {
                    powers()
                        .zip(factors)
                        .map(|(p, f)| 1.0 / (*f as f32 * p))
                        .collect()
                };
                inv_freq = scaled(short_factor);
                long = Some(LongFrequencies {
                    inv_freq: scaled(long_factor),
                    freq_factors: None,
                    original: *original_max_position_embeddings,
                    context: None,
                });
                attention_factor = *a as f32;
            }
            Some(scaling) => {
                scaling.validate()?;
                scaling.apply(&mut inv_freq);
            }
            None => {}
        }
        Ok(Self {
            inv_freq,
            rescaled: scaling.is_some(),
            freq_factors: None,
            long,
            attention_factor,
            head_dim,
            max_positions,
            layout,
            base,
            dtype,
            device: device.clone(),
        })
    }

    /// Divides frequency `i` by `factors[i]`, as llama.cpp applies a GGUF file's
    /// `rope_freqs` tensor (how its converter stores Llama 3's `rope_scaling`): under
    /// [`Arithmetic::Ggml`] the angle is llama.cpp's `theta / factor` in f32, otherwise
    /// `p × (f / factor)`. Replaces any `scaling` given at construction.
    pub fn with_freq_factors(mut self, factors: Vec<f32>) -> Result<Self> {
        self.inv_freq = self.divided_frequencies(&factors)?;
        self.rescaled = true;
        self.freq_factors = Some(factors);
        self.long = None;
        self.attention_factor = 1.0;
        Ok(self)
    }

    /// LongRoPE as llama.cpp loads it from a GGUF file (`rope_factors_short`,
    /// `rope_factors_long`, `rope.scaling.original_context_length`,
    /// `rope.scaling.attn_factor`): the short and long divisors applied as
    /// [`RotaryEmbedding::with_freq_factors`] applies one set, cosines and sines times
    /// `attention_factor`. Which set a pass uses follows [`RopeScaling::LongRope`]'s rule
    /// (by the pass's largest position) until [`RotaryEmbedding::set_longrope_context`]
    /// fixes it by a context size, as llama.cpp does.
    pub fn with_longrope_factors(
        self,
        short: Vec<f32>,
        long: Vec<f32>,
        original: usize,
        attention_factor: f32,
    ) -> Result<Self> {
        if !(attention_factor.is_finite() && attention_factor >= 0.0) {
            return Err(Error::config(
                "rope.scaling.attn_factor",
                format!("must be a finite number >= 0, found {attention_factor}"),
            ));
        }
        if original == 0 {
            return Err(Error::config(
                "rope.scaling.original_context_length",
                "must be > 0",
            ));
        }
        let long_inv_freq = self.divided_frequencies(&long)?;
        let mut out = self.with_freq_factors(short)?;
        out.long = Some(LongFrequencies {
            inv_freq: long_inv_freq,
            freq_factors: Some(long),
            original,
            context: None,
        });
        out.attention_factor = attention_factor;
        Ok(out)
    }

    /// LongRoPE: `Some(n_ctx)` picks the long frequencies for every pass when `n_ctx` (the
    /// context per sequence, as llama.cpp's `n_ctx_seq`) exceeds the original context and
    /// the short ones otherwise, as llama.cpp does; `None` goes back to `transformers`' rule
    /// (each pass by its largest position). No effect on other embeddings.
    pub fn set_longrope_context(&mut self, n_ctx: Option<usize>) {
        if let Some(long) = &mut self.long {
            long.context = n_ctx;
        }
    }

    /// Whether this embedding has LongRoPE's two sets of frequencies.
    pub fn is_longrope(&self) -> bool {
        self.long.is_some()
    }

    /// The plain frequencies divided by `factors` (one per rotated pair, finite and > 0).
    fn divided_frequencies(&self, factors: &[f32]) -> Result<Vec<f32>> {
        if factors.len() != self.head_dim / 2 {
            return Err(Error::shape(
                "rotary frequency factors",
                format!("({})", self.head_dim / 2),
                &[factors.len()],
            ));
        }
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(Error::config(
                "rope_freqs",
                format!("frequency factors must be finite and > 0, found {bad}"),
            ));
        }
        let half = self.head_dim / 2;
        Ok((0..half)
            .map(|i| {
                let f = 1.0 / (self.base.powf((2 * i) as f64 / self.head_dim as f64)) as f32;
                f / factors[i]
            })
            .collect())
    }

    /// The head dimension this embedding rotates.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Tables for explicit position ids of shape `(batch, seq)` (left padding gives each row
    /// its own positions), in `arithmetic`.
    pub fn tables(&self, position_ids: &Tensor, arithmetic: Arithmetic) -> Result<RopeTables> {
        check_ids("rotary embedding", position_ids, 0, self.max_positions)?;
        let (b, s) = position_ids.dims2()?;
        let positions = position_ids
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        self.build(&positions, (b, s), arithmetic)
    }

    /// Tables for positions `start..start + len`, the same for every row of a batch.
    pub fn tables_range(
        &self,
        batch: usize,
        start: usize,
        len: usize,
        arithmetic: Arithmetic,
    ) -> Result<RopeTables> {
        check_range("rotary embedding", start, len, self.max_positions)?;
        let row: Vec<u32> = (start..start + len).map(|p| p as u32).collect();
        let positions: Vec<u32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
        self.build(&positions, (batch, len), arithmetic)
    }

    fn build(
        &self,
        positions: &[u32],
        (b, s): (usize, usize),
        arithmetic: Arithmetic,
    ) -> Result<RopeTables> {
        let half = self.head_dim / 2;
        // LongRoPE: the long factors once the pass reaches past the original context
        // (`dynamic_rope_update`: `max(position_ids) + 1 > original_max_position_embeddings`).
        let (inv_freq, freq_factors) = match &self.long {
            Some(long) if long.used(positions) => (&long.inv_freq, long.freq_factors.as_deref()),
            _ => (&self.inv_freq, self.freq_factors.as_deref()),
        };
        let (mut cos, mut sin) = ops::rope_angles(
            inv_freq,
            self.base,
            self.rescaled,
            freq_factors,
            positions,
            arithmetic,
        );
        if self.attention_factor != 1.0 {
            // `emb.cos() * attention_scaling` in f32, as `transformers`.
            for v in cos.iter_mut().chain(sin.iter_mut()) {
                *v *= self.attention_factor;
            }
        }
        let table = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (b, s, half), &self.device)?.to_dtype(self.dtype)?)
        };
        Ok(RopeTables {
            cos: table(cos)?,
            sin: table(sin)?,
            layout: self.layout,
        })
    }
}

impl RopeTables {
    /// Rotates `x` of shape `(batch, heads, seq, head_dim)` (see [`ops::rope`](super::ops)).
    /// Tables narrower than the head rotate its first dimensions and pass the rest through
    /// (partial rotary, Phi-3's `partial_rotary_factor`, llama.cpp's `n_rot`).
    pub fn apply(&self, x: &Tensor, arithmetic: Arithmetic) -> Result<Tensor> {
        let (b, _h, s, d) = x.dims4()?;
        let (cb, cs, half) = self.cos.dims3()?;
        if cb != b || cs != s || half * 2 > d {
            return Err(Error::shape(
                "rotary embedding input",
                format!("(batch={cb}, heads, seq={cs}, head_dim>={})", half * 2),
                x.dims(),
            ));
        }
        if half * 2 == d {
            return ops::rope(x, &self.cos, &self.sin, self.layout, arithmetic);
        }
        let rotated = ops::rope(
            &x.narrow(3, 0, half * 2)?,
            &self.cos,
            &self.sin,
            self.layout,
            arithmetic,
        )?;
        let rest = x.narrow(3, half * 2, d - half * 2)?;
        Ok(Tensor::cat(&[&rotated, &rest], 3)?)
    }
}
