//! Task heads that sit on top of an encoder or decoder.

use candle_core::{DType, IndexOp, Tensor, D};

use crate::error::{Error, Result};
use crate::nn::{Activation, Linear, Norm, NormConfig, ParamNames, WeightMatrix};
use crate::weights::Weights;

/// Sequence classification: one vector per sequence to `num_labels` logits.
#[derive(Debug, Clone)]
pub struct ClassificationHead {
    linear: Linear,
}

impl ClassificationHead {
    /// Loads (or creates) a linear layer `d_model -> num_labels` under `prefix`.
    pub fn load(w: &Weights, d_model: usize, num_labels: usize, prefix: &str) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(w, d_model, num_labels, &ParamNames::linear(prefix, true))?,
        })
    }

    /// Logits `(batch, num_labels)` from pooled features `(batch, d_model)`.
    pub fn logits(&self, pooled: &Tensor) -> Result<Tensor> {
        self.linear.forward(pooled)
    }

    /// Log-probabilities `(batch, num_labels)` (`log_softmax` of the logits), as the course's
    /// classifier head returns.
    pub fn log_probs(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::log_softmax(
            &self.logits(pooled)?,
            D::Minus1,
        )?)
    }
}

/// Token classification: logits for every position.
#[derive(Debug, Clone)]
pub struct TokenClassificationHead {
    linear: Linear,
}

impl TokenClassificationHead {
    /// Loads (or creates) a linear layer `d_model -> num_labels` under `prefix`.
    pub fn load(w: &Weights, d_model: usize, num_labels: usize, prefix: &str) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(w, d_model, num_labels, &ParamNames::linear(prefix, true))?,
        })
    }

    /// Logits `(batch, seq, num_labels)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.linear.forward(hidden)
    }
}

/// Extractive question answering: start and end logits for every position.
#[derive(Debug, Clone)]
pub struct SpanHead {
    linear: Linear,
}

impl SpanHead {
    /// Loads (or creates) a linear layer `d_model -> 2` under `prefix` (`qa_outputs`).
    pub fn load(w: &Weights, d_model: usize, prefix: &str) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(w, d_model, 2, &ParamNames::linear(prefix, true))?,
        })
    }

    /// `(start_logits, end_logits)`, each `(batch, seq)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<(Tensor, Tensor)> {
        let logits = self.linear.forward(hidden)?;
        let start = logits.i((.., .., 0))?.contiguous()?;
        let end = logits.i((.., .., 1))?.contiguous()?;
        Ok((start, end))
    }
}

/// Language-model head: hidden states to vocabulary logits, with its own weight or tied to
/// the token embeddings.
#[derive(Debug, Clone)]
pub struct LmHead {
    linear: Linear,
}

impl LmHead {
    /// A head sharing the token embedding table `(vocab, d_model)` (dense or quantized).
    pub fn tied(word_embeddings: &WeightMatrix) -> Result<Self> {
        Ok(Self {
            linear: Linear::from_matrix(word_embeddings.clone(), None)?,
        })
    }

    /// A head from a linear layer `d_model -> vocab`.
    pub fn new(linear: Linear) -> Self {
        Self { linear }
    }

    /// Loads (or creates) `{prefix}.weight` `(vocab, d_model)` (and a bias if `bias`).
    pub fn load(
        w: &Weights,
        d_model: usize,
        vocab: usize,
        prefix: &str,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(w, d_model, vocab, &ParamNames::linear(prefix, bias))?,
        })
    }

    /// Logits `(batch, seq, vocab)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.linear.forward(hidden)
    }
}

/// The nonlinearity a [`ClsPooler`] applies after its dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerActivation {
    /// `tanh` (BERT's pooler, RoBERTa's classification head).
    Tanh,
    /// `max(0, x)` (DistilBERT's `pre_classifier`).
    Relu,
}

/// A dense layer and a nonlinearity on the first token: BERT's pooler
/// (`tanh(dense(hidden[:, 0]))`), and the first half of RoBERTa's and DistilBERT's
/// sequence-classification heads.
#[derive(Debug, Clone)]
pub struct ClsPooler {
    dense: Linear,
    activation: PoolerActivation,
}

impl ClsPooler {
    /// Loads (or creates) `{prefix}` (`pooler.dense`), with `tanh`.
    pub fn load(w: &Weights, d_model: usize, prefix: &str) -> Result<Self> {
        Self::load_with(w, d_model, prefix, PoolerActivation::Tanh)
    }

    /// Loads (or creates) `{prefix}` `d_model -> d_model`, followed by `activation`.
    pub fn load_with(
        w: &Weights,
        d_model: usize,
        prefix: &str,
        activation: PoolerActivation,
    ) -> Result<Self> {
        Ok(Self {
            dense: Linear::load(w, d_model, d_model, &ParamNames::linear(prefix, true))?,
            activation,
        })
    }

    /// `(batch, d_model)` from `(batch, seq, d_model)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        self.dense_act(&first_token(hidden)?)
    }

    /// The dense layer and the nonlinearity on already pooled vectors `(batch, d_model)`
    /// (a fine-tuned head applies dropout between the pooling and this).
    pub fn dense_act(&self, cls: &Tensor) -> Result<Tensor> {
        Ok(match self.activation {
            PoolerActivation::Tanh => self.dense.forward(cls)?.tanh()?,
            PoolerActivation::Relu => self.dense.forward_act(cls, Activation::Relu)?,
        })
    }
}

/// Where a masked-LM head's parameters are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedLmHeadNames {
    /// The transform's dense layer (`cls.predictions.transform.dense`).
    pub dense: String,
    /// The transform's LayerNorm (`cls.predictions.transform.LayerNorm`).
    pub norm: String,
    /// The decoder's own weight (`cls.predictions.decoder.weight`), read only when the head is
    /// not tied to the token embeddings.
    pub decoder_weight: String,
    /// Names the decoder's bias may be stored under, first found wins
    /// (`cls.predictions.bias`, which `transformers` ties to `cls.predictions.decoder.bias`).
    pub bias: Vec<String>,
}

/// The masked-LM head of BERT-like encoders: `dense -> activation -> LayerNorm`, then a
/// decoder to the vocabulary (usually sharing the token embedding table) plus a bias.
#[derive(Debug, Clone)]
pub struct MaskedLmHead {
    dense: Linear,
    activation: Activation,
    norm: Norm,
    decoder: Linear,
}

impl MaskedLmHead {
    /// Loads the head. With `tied_embeddings` (`(vocab, d_model)`, the token embedding
    /// table) the decoder reuses it, as `transformers` does when `tie_word_embeddings` is on
    /// (its default, and such checkpoints usually omit the decoder weight); otherwise the
    /// decoder weight is read from `names.decoder_weight`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &Weights,
        d_model: usize,
        vocab: usize,
        activation: Activation,
        norm: &NormConfig,
        names: &MaskedLmHeadNames,
        tied_embeddings: Option<&Tensor>,
    ) -> Result<Self> {
        let dense = Linear::load(w, d_model, d_model, &ParamNames::linear(&names.dense, true))?;
        let norm = Norm::load(w, d_model, norm, &names.norm)?;
        let weight = match tied_embeddings {
            Some(t) => {
                if t.dims() != [vocab, d_model] {
                    return Err(Error::shape(
                        "tied token embeddings",
                        format!("({vocab}, {d_model})"),
                        t.dims(),
                    ));
                }
                t.clone()
            }
            None => w.get((vocab, d_model), &names.decoder_weight)?,
        };
        let bias_name = names
            .bias
            .iter()
            .find(|n| w.contains(n))
            .or(names.bias.first())
            .ok_or_else(|| Error::config("bias", "a masked-LM head needs a bias name"))?;
        let bias = w.get(vocab, bias_name)?;
        Ok(Self {
            dense,
            activation,
            norm,
            decoder: Linear::new(weight, Some(bias))?,
        })
    }

    /// Vocabulary logits `(batch, seq, vocab)` from hidden states `(batch, seq, d_model)`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let h = self.dense.forward_act(hidden, self.activation)?;
        let h = self.norm.forward(&h)?;
        self.decoder.forward(&h)
    }
}

/// The first position of every sequence, `(batch, d_model)`.
pub fn first_token(hidden: &Tensor) -> Result<Tensor> {
    let (_, s, _) = hidden.dims3()?;
    if s == 0 {
        return Err(Error::Invalid("cannot pool an empty sequence".into()));
    }
    Ok(hidden.i((.., 0))?.contiguous()?)
}

/// Mean over the positions where `attention_mask` is 1 (sentence-transformers' pooling):
/// `(batch, seq, d)` and `(batch, seq)` to `(batch, d)`.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let (b, s, _) = hidden.dims3()?;
    if attention_mask.dims() != [b, s] {
        return Err(Error::shape(
            "attention_mask",
            format!("({b}, {s})"),
            attention_mask.dims(),
        ));
    }
    let m = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    // Clamp as sentence-transformers does, so an all-padding row divides by 1e-9, not 0.
    let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    Ok(summed.broadcast_div(&counts)?)
}

/// L2-normalizes the last dimension.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?
        .to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&norm)?)
}
