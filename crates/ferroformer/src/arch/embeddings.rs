//! Token embeddings plus the position information added at the input.

use candle_core::{DType, Device, Tensor};
use candle_nn::Init;

use crate::error::{Error, Result};
use crate::nn::mask::position_ids_from_mask;
use crate::nn::{
    LearnedPositionalEmbedding, Mode, Norm, NormConfig, RopeLayout, RopeScaling, RopeTables,
    RotaryEmbedding, SinusoidalPositionalEncoding, WeightMatrix,
};
use crate::weights::Weights;

/// How a model knows where each token is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PositionalKind {
    /// No position information.
    None,
    /// Fixed sinusoids added to the embeddings (the original paper).
    Sinusoidal,
    /// Sines then cosines of the same frequencies, added to the embeddings (Marian,
    /// Pegasus; see [`SinusoidalPositionalEncoding::halves`]).
    SinusoidalHalves,
    /// fairseq's sinusoidal table (M2M100, NLLB; see
    /// [`SinusoidalPositionalEncoding::fairseq`]): real tokens count from
    /// `padding_idx + 1`, padding tokens look up the zero row `padding_idx`.
    SinusoidalFairseq {
        /// The padding token id, which is also the table's zero row.
        padding_idx: u32,
    },
    /// A learned table added to the embeddings; position `p` is row `p + offset`.
    Learned {
        /// Rows before position 0 (BART: 2).
        offset: usize,
    },
    /// Rotary embeddings applied to queries and keys in every self-attention.
    Rotary {
        /// Frequency base (`rope_theta`).
        base: f64,
        /// Pair layout.
        layout: RopeLayout,
        /// Frequency rescaling for long contexts (`rope_scaling`), if any.
        #[serde(default)]
        scaling: Option<RopeScaling>,
    },
}

/// Shape and options of the input embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Embedding width.
    pub d_model: usize,
    /// Maximum sequence length (positions `0..max_positions`).
    pub max_positions: usize,
    /// Position information.
    pub positional: PositionalKind,
    /// Segment (token type) vocabulary, as BERT has.
    pub type_vocab_size: Option<usize>,
    /// Norm applied to the sum (BERT).
    pub norm: Option<NormConfig>,
    /// Factor applied to token embeddings (`sqrt(d_model)` in the original paper).
    pub scale: Option<f64>,
    /// Dropout on the result during training.
    pub dropout: f64,
}

/// Where the embedding parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingNames {
    /// Token embedding table.
    pub word: String,
    /// Learned position table.
    pub position: Option<String>,
    /// Token type table.
    pub token_type: Option<String>,
    /// Norm prefix.
    pub norm: Option<String>,
}

#[derive(Debug, Clone)]
enum Positions {
    None,
    Sinusoidal(SinusoidalPositionalEncoding),
    /// A fixed table indexed by ids derived from the input ids (fairseq).
    Fairseq(SinusoidalPositionalEncoding, u32),
    Learned(LearnedPositionalEmbedding),
    Rotary(RotaryEmbedding),
}

/// Token (+ position, + token type) embeddings.
#[derive(Debug, Clone)]
pub struct Embeddings {
    cfg: EmbeddingConfig,
    word: WeightMatrix,
    positions: Positions,
    token_type: Option<Tensor>,
    norm: Option<Norm>,
}

/// Embedded input plus, for rotary models, the tables the attention layers need.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// `(batch, seq, d_model)`
    pub hidden: Tensor,
    /// Rotary tables for these positions (rotary models only).
    pub rope: Option<RopeTables>,
}

/// Checks that every id is below `limit`, so a bad id is an error rather than an
/// out-of-bounds lookup.
pub(crate) fn check_token_ids(what: &str, ids: &Tensor, limit: usize) -> Result<()> {
    if ids.elem_count() == 0 {
        return Ok(());
    }
    let largest = ids.to_dtype(DType::F64)?.max_all()?.to_scalar::<f64>()?;
    let smallest = ids.to_dtype(DType::F64)?.min_all()?.to_scalar::<f64>()?;
    if smallest < 0.0 || largest >= limit as f64 {
        return Err(Error::Invalid(format!(
            "{what} must be in 0..{limit}, found values in {smallest}..={largest}"
        )));
    }
    Ok(())
}

/// The positional part that holds no parameters (none, sinusoidal, rotary for heads of
/// `head_dim`), built for `cfg`; learned positions are an error (they are loaded).
fn fixed_positions(
    cfg: &EmbeddingConfig,
    head_dim: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Positions> {
    Ok(match cfg.positional.clone() {
        PositionalKind::None => Positions::None,
        PositionalKind::Sinusoidal => Positions::Sinusoidal(SinusoidalPositionalEncoding::new(
            cfg.d_model,
            cfg.max_positions,
            dtype,
            device,
        )?),
        PositionalKind::SinusoidalHalves => Positions::Sinusoidal(
            SinusoidalPositionalEncoding::halves(cfg.d_model, cfg.max_positions, dtype, device)?,
        ),
        PositionalKind::SinusoidalFairseq { padding_idx } => Positions::Fairseq(
            SinusoidalPositionalEncoding::fairseq(
                cfg.d_model,
                cfg.max_positions + padding_idx as usize + 1,
                padding_idx as usize,
                dtype,
                device,
            )?,
            padding_idx,
        ),
        PositionalKind::Rotary {
            base,
            layout,
            scaling,
        } => {
            let head_dim = head_dim.ok_or_else(|| {
                Error::config(
                    "positional",
                    "rotary embeddings need the head dimension: use Embeddings::load_with_rotary",
                )
            })?;
            Positions::Rotary(RotaryEmbedding::with_scaling(
                head_dim,
                cfg.max_positions,
                base,
                layout,
                scaling,
                dtype,
                device,
            )?)
        }
        PositionalKind::Learned { .. } => {
            return Err(Error::config(
                "positional",
                "learned positions need parameters: use Embeddings::load",
            ))
        }
    })
}

impl Embeddings {
    /// Loads (or creates) the embeddings.
    pub fn load(w: &Weights, cfg: &EmbeddingConfig, names: &EmbeddingNames) -> Result<Self> {
        Self::load_impl(w, cfg, names, None)
    }

    fn load_impl(
        w: &Weights,
        cfg: &EmbeddingConfig,
        names: &EmbeddingNames,
        head_dim: Option<usize>,
    ) -> Result<Self> {
        if cfg.vocab_size == 0 {
            return Err(Error::config("vocab_size", "must be > 0"));
        }
        let normal = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let word = w.get_init((cfg.vocab_size, cfg.d_model), &names.word, normal)?;
        let positions = match cfg.positional {
            PositionalKind::Learned { offset } => {
                let name = names.position.as_deref().ok_or_else(|| {
                    Error::config("positional", "learned positions need a tensor name")
                })?;
                Positions::Learned(LearnedPositionalEmbedding::load(
                    w,
                    cfg.max_positions,
                    cfg.d_model,
                    offset,
                    name,
                )?)
            }
            _ => fixed_positions(cfg, head_dim, w.dtype(), w.device())?,
        };
        let token_type = match (cfg.type_vocab_size, &names.token_type) {
            (Some(n), Some(name)) => Some(w.get_init((n, cfg.d_model), name, normal)?),
            (Some(_), None) => {
                return Err(Error::config(
                    "type_vocab_size",
                    "token type embeddings need a tensor name",
                ))
            }
            (None, _) => None,
        };
        let norm = match (&cfg.norm, &names.norm) {
            (Some(n), Some(prefix)) => Some(Norm::load(w, cfg.d_model, n, prefix)?),
            (Some(_), None) => {
                return Err(Error::config(
                    "norm",
                    "the embedding norm needs a tensor name",
                ))
            }
            (None, _) => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            word: WeightMatrix::Dense(word),
            positions,
            token_type,
            norm,
        })
    }

    /// Like [`Embeddings::load`], and builds rotary tables for heads of `head_dim` when the
    /// config asks for rotary positions.
    pub fn load_with_rotary(
        w: &Weights,
        cfg: &EmbeddingConfig,
        names: &EmbeddingNames,
        head_dim: usize,
    ) -> Result<Self> {
        Self::load_impl(w, cfg, names, Some(head_dim))
    }

    /// Embeddings from a ready-made token table `(vocab, d_model)` (dense or quantized),
    /// for configs whose other parts hold no parameters: no learned positions, token
    /// types or norm. Rotary tables are built for heads of `head_dim`.
    pub fn from_table(
        word: WeightMatrix,
        cfg: &EmbeddingConfig,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (rows, cols) = word.dims2()?;
        if (rows, cols) != (cfg.vocab_size, cfg.d_model) {
            return Err(Error::shape(
                "token embedding table",
                format!("({}, {})", cfg.vocab_size, cfg.d_model),
                &[rows, cols],
            ));
        }
        if cfg.type_vocab_size.is_some() || cfg.norm.is_some() {
            return Err(Error::config(
                "embeddings",
                "token types and an embedding norm need parameters: use Embeddings::load",
            ));
        }
        let positions = fixed_positions(cfg, Some(head_dim), dtype, device)?;
        Ok(Self {
            cfg: cfg.clone(),
            word,
            positions,
            token_type: None,
            norm: None,
        })
    }

    /// Divides the rotary frequencies by `factors` (one per rotated pair), as llama.cpp
    /// applies a GGUF file's `rope_freqs` tensor (see [`RotaryEmbedding::with_freq_factors`]).
    /// An error for embeddings without rotary positions.
    pub fn with_rope_freq_factors(mut self, factors: Vec<f32>) -> Result<Self> {
        self.positions = match self.positions {
            Positions::Rotary(r) => Positions::Rotary(r.with_freq_factors(factors)?),
            _ => {
                return Err(Error::config(
                    "rope_freqs",
                    "frequency factors need rotary positions",
                ))
            }
        };
        Ok(self)
    }

    /// LongRoPE from a GGUF file (see [`RotaryEmbedding::with_longrope_factors`]): short and
    /// long per-pair divisors, the original context, the factor on cosines and sines. An
    /// error for embeddings without rotary positions.
    pub fn with_longrope_factors(
        mut self,
        short: Vec<f32>,
        long: Vec<f32>,
        original: usize,
        attention_factor: f32,
    ) -> Result<Self> {
        self.positions = match self.positions {
            Positions::Rotary(r) => Positions::Rotary(r.with_longrope_factors(
                short,
                long,
                original,
                attention_factor,
            )?),
            _ => {
                return Err(Error::config(
                    "rope_factors_long",
                    "LongRoPE factors need rotary positions",
                ))
            }
        };
        Ok(self)
    }

    /// LongRoPE: fixes the choice of frequencies by the context size, as llama.cpp does, or
    /// (`None`) by each pass (see [`RotaryEmbedding::set_longrope_context`]). No effect
    /// without LongRoPE.
    pub fn set_longrope_context(&mut self, n_ctx: Option<usize>) {
        if let Positions::Rotary(r) = &mut self.positions {
            r.set_longrope_context(n_ctx);
        }
    }

    /// The token embedding table `(vocab, d_model)` (tied LM heads reuse it).
    pub fn word_embeddings(&self) -> &WeightMatrix {
        &self.word
    }

    /// The configuration.
    pub fn config(&self) -> &EmbeddingConfig {
        &self.cfg
    }

    /// Embeds `input_ids` `(batch, seq)`.
    ///
    /// Positions are `past..past + seq` for every row, or the explicit `position_ids`
    /// `(batch, seq)` (see [`padded_position_ids`] for left-padded batches).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        position_ids: Option<&Tensor>,
        past: usize,
        mode: Mode,
    ) -> Result<Embedded> {
        let (b, s) = input_ids
            .dims2()
            .map_err(|_| Error::shape("input_ids", "(batch, seq)", input_ids.dims()))?;
        check_token_ids("input_ids", input_ids, self.cfg.vocab_size)?;
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        let mut hidden = self.word.rows(&ids)?.reshape((b, s, self.cfg.d_model))?;
        if let Some(scale) = self.cfg.scale {
            hidden = (hidden * scale)?;
        }
        if let Some(p) = position_ids {
            if p.dims() != [b, s] {
                return Err(Error::shape(
                    "position_ids",
                    format!("({b}, {s})"),
                    p.dims(),
                ));
            }
        }
        let fairseq_ids;
        let position_ids = match (&self.positions, position_ids) {
            (Positions::Fairseq(_, pad), None) => {
                fairseq_ids = position_ids_after_padding_index_from(input_ids, *pad, past)?;
                Some(&fairseq_ids)
            }
            (_, p) => p,
        };
        let (hidden, rope) = self.add_positions(hidden, position_ids, past, mode)?;
        let mut hidden = self.add_token_types(hidden, token_type_ids)?;
        if let Some(norm) = &self.norm {
            hidden = norm.forward_with(&hidden, None, mode.arithmetic)?;
        }
        if mode.train && self.cfg.dropout > 0.0 {
            hidden = crate::nn::dropout::dropout(&hidden, self.cfg.dropout)?;
        }
        Ok(Embedded { hidden, rope })
    }

    /// Adds the position information of `past..past + seq` (or `position_ids`) to `hidden`
    /// `(batch, seq, d_model)`; rotary models get their tables instead.
    fn add_positions(
        &self,
        hidden: Tensor,
        position_ids: Option<&Tensor>,
        past: usize,
        mode: Mode,
    ) -> Result<(Tensor, Option<RopeTables>)> {
        let (b, s, _) = hidden.dims3()?;
        Ok(match &self.positions {
            Positions::None => (hidden, None),
            Positions::Sinusoidal(pe) => match position_ids {
                Some(p) => ((hidden + pe.forward_ids(p)?)?, None),
                None => (pe.forward(&hidden, past)?, None),
            },
            Positions::Fairseq(table, _) => match position_ids {
                Some(p) => ((hidden + table.forward_ids(p)?)?, None),
                None => {
                    return Err(Error::Invalid(
                        "fairseq positions are looked up from position ids".into(),
                    ))
                }
            },
            Positions::Learned(pe) => {
                let pos = match position_ids {
                    Some(p) => pe.forward_ids(p)?,
                    None => pe.range(past, s)?.unsqueeze(0)?,
                };
                (hidden.broadcast_add(&pos)?, None)
            }
            Positions::Rotary(r) => {
                let tables = match position_ids {
                    Some(p) => r.tables(p, mode.arithmetic)?,
                    None => r.tables_range(b, past, s, mode.arithmetic)?,
                };
                (hidden, Some(tables))
            }
        })
    }

    /// Adds the segment embeddings (all-zero types when none are given, as `transformers`).
    fn add_token_types(&self, hidden: Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        let Some(tt) = &self.token_type else {
            return Ok(hidden);
        };
        let (b, s, d) = hidden.dims3()?;
        let types = match token_type_ids {
            Some(t) => {
                if t.dims() != [b, s] {
                    return Err(Error::shape(
                        "token_type_ids",
                        format!("({b}, {s})"),
                        t.dims(),
                    ));
                }
                check_token_ids("token_type_ids", t, tt.dim(0)?)?;
                tt.index_select(&t.to_dtype(DType::U32)?.flatten_all()?, 0)?
                    .reshape((b, s, d))?
            }
            None => tt.narrow(0, 0, 1)?.unsqueeze(0)?,
        };
        Ok(hidden.broadcast_add(&types)?)
    }
}

/// Position ids for a left- or right-padded batch: the last `seq` columns of
/// `cumsum(mask) - 1` over all keys.
pub fn padded_position_ids(attention_mask: &Tensor, seq: usize) -> Result<Tensor> {
    let (_, k_len) = attention_mask.dims2()?;
    if seq > k_len {
        return Err(Error::shape(
            "attention_mask",
            format!("(batch, at least {seq})"),
            attention_mask.dims(),
        ));
    }
    Ok(position_ids_from_mask(attention_mask)?.narrow(1, k_len - seq, seq)?)
}

/// RoBERTa's position ids: real tokens count from `padding_idx + 1`, and every padding token
/// (an id equal to `padding_idx`) sits at position `padding_idx`, whose row of the table is
/// never trained. `cumsum(ids != pad) * (ids != pad) + pad`, as `transformers`'
/// `create_position_ids_from_input_ids`; like it, this looks at the ids, not at a mask.
pub fn position_ids_after_padding_index(input_ids: &Tensor, padding_idx: u32) -> Result<Tensor> {
    position_ids_after_padding_index_from(input_ids, padding_idx, 0)
}

/// [`position_ids_after_padding_index`] for tokens that follow `past` cached ones (every
/// real token counts from `padding_idx + past + 1`), as `create_position_ids_from_input_ids`
/// with `past_key_values_length`.
pub fn position_ids_after_padding_index_from(
    input_ids: &Tensor,
    padding_idx: u32,
    past: usize,
) -> Result<Tensor> {
    let past = u32::try_from(past)
        .map_err(|_| Error::Invalid(format!("position {past} does not fit in u32")))?;
    let (b, s) = input_ids
        .dims2()
        .map_err(|_| Error::shape("input_ids", "(batch, seq)", input_ids.dims()))?;
    let rows: Vec<Vec<u32>> = input_ids.to_dtype(DType::U32)?.to_vec2()?;
    let mut ids = Vec::with_capacity(b * s);
    for row in &rows {
        let mut count = 0u32;
        for &id in row {
            if id == padding_idx {
                ids.push(padding_idx);
            } else {
                count += 1;
                ids.push(padding_idx + past + count);
            }
        }
    }
    Ok(Tensor::from_vec(ids, (b, s), input_ids.device())?)
}
