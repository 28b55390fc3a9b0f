//! What every pretrained encoder family (BERT, DistilBERT, RoBERTa, XLM-RoBERTa) reduces to:
//! an [`EncoderSpec`] — the shared [`TransformerEncoder`]'s configuration, the family's tensor
//! names, how it counts positions, and where its task heads live — and one base model,
//! [`EncoderModel`], built from it. The families only fill in the spec; the task models in
//! [`super::auto_encoder`] put the shared heads of [`crate::arch::heads`] on top.

use candle_core::Tensor;

use crate::arch::embeddings::position_ids_after_padding_index;
use crate::arch::heads::{ClsPooler, MaskedLmHeadNames, PoolerActivation};
use crate::arch::{EncoderConfig, EncoderNames, TransformerEncoder};
use crate::error::{Error, Result};
use crate::nn::{Activation, NormConfig};
use crate::weights::Weights;

/// How a family numbers the positions of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionIds {
    /// `0..seq` in every row (BERT, DistilBERT). Right padding leaves real tokens at the
    /// same positions as an unpadded run.
    Sequential,
    /// RoBERTa's scheme: real tokens count from `padding_idx + 1`, padding tokens sit at
    /// `padding_idx` (see [`position_ids_after_padding_index`]).
    AfterPaddingIndex(u32),
}

/// Where a family's sequence-classification head lives and what it computes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceClassifierNames {
    /// The base model's pooler output goes through a linear layer (BERT: `classifier`).
    Pooler {
        /// The linear layer `hidden -> num_labels`.
        classifier: String,
    },
    /// A dense layer and a nonlinearity on the first token, then a linear layer
    /// (RoBERTa: `classifier.dense`, tanh, `classifier.out_proj`; DistilBERT:
    /// `pre_classifier`, ReLU, `classifier`).
    FirstToken {
        /// The dense layer `hidden -> hidden`.
        dense: String,
        /// Its nonlinearity.
        activation: PoolerActivation,
        /// The linear layer `hidden -> num_labels`.
        out: String,
    },
}

/// A family's masked-LM head.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedLmSpec {
    /// Tensor names, relative to the checkpoint root.
    pub names: MaskedLmHeadNames,
    /// Activation after the transform's dense layer.
    pub activation: Activation,
    /// The transform's LayerNorm.
    pub norm: NormConfig,
    /// Whether the decoder shares the token embedding table (`tie_word_embeddings`).
    pub tied: bool,
}

/// Everything that distinguishes one encoder family from another.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSpec {
    /// `config.json`'s `model_type` (`bert`, `distilbert`, `roberta`, …).
    pub model_type: String,
    /// The shared encoder's configuration.
    pub encoder: EncoderConfig,
    /// Encoder tensor names, relative to the base model.
    pub names: EncoderNames,
    /// Where task checkpoints keep the base model (`bert`, `distilbert`, `roberta`);
    /// base-model checkpoints store it at the root.
    pub base_prefix: String,
    /// How positions are numbered.
    pub position_ids: PositionIds,
    /// The longest input, in tokens.
    pub max_length: usize,
    /// The base model's pooler (relative to the base model), if the family has one.
    pub pooler: Option<String>,
    /// Sequence-classification head.
    pub sequence_classifier: SequenceClassifierNames,
    /// Token-classification linear layer (`classifier`).
    pub token_classifier: String,
    /// Extractive question-answering linear layer (`qa_outputs`).
    pub question_answering: String,
    /// Masked-LM head.
    pub masked_lm: MaskedLmSpec,
}

/// Output of an encoder base model (`BertModel`, `RobertaModel`, `DistilBertModel`).
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// `(batch, seq, hidden)`
    pub last_hidden_state: Tensor,
    /// `(batch, hidden)`; `None` for a family or checkpoint without a pooler.
    pub pooler_output: Option<Tensor>,
}

/// Whether [`EncoderModel::load_with`] loads the pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolerLoad {
    /// When the checkpoint has one (base models; task checkpoints other than BERT's
    /// sequence classification do not).
    IfPresent,
    /// Always; a missing pooler is an error (BERT's sequence classification uses it).
    Required,
    /// Never.
    Skip,
}

/// An encoder base model of any family: embeddings, layers, and the optional pooler.
#[derive(Debug, Clone)]
pub struct EncoderModel {
    encoder: TransformerEncoder,
    pooler: Option<ClsPooler>,
    position_ids: PositionIds,
    max_length: usize,
    skip_padding_outputs: bool,
}

impl EncoderModel {
    /// Loads from weights rooted at the checkpoint root, the base model stored there or
    /// under the spec's prefix; the pooler is loaded when present.
    pub fn load(w: &Weights, spec: &EncoderSpec) -> Result<Self> {
        Self::load_with(w, spec, PoolerLoad::IfPresent)
    }

    /// Like [`EncoderModel::load`], choosing what to do about the pooler.
    pub fn load_with(w: &Weights, spec: &EncoderSpec, pooler: PoolerLoad) -> Result<Self> {
        let body = if w.is_trainable() {
            w.clone()
        } else {
            super::under_prefix_if_present(w, &spec.base_prefix, &spec.names.embeddings.word)
        };
        let encoder = TransformerEncoder::load(&body, &spec.encoder, &spec.names)?;
        let d = spec.encoder.embeddings.d_model;
        let pooler = match (&spec.pooler, pooler) {
            (Some(name), PoolerLoad::Required) => Some(ClsPooler::load(&body, d, name)?),
            (Some(name), PoolerLoad::IfPresent)
                if body.is_trainable() || body.contains(&format!("{name}.weight")) =>
            {
                Some(ClsPooler::load(&body, d, name)?)
            }
            (None, PoolerLoad::Required) => {
                return Err(Error::Invalid(format!(
                    "the {} family has no pooler",
                    spec.model_type
                )))
            }
            _ => None,
        };
        Ok(Self {
            encoder,
            pooler,
            position_ids: spec.position_ids,
            max_length: spec.max_length,
            skip_padding_outputs: false,
        })
    }

    /// Compute only the real tokens of padded batches (see
    /// [`crate::models::LoadOptions::skip_padding_outputs`]).
    pub fn set_skip_padding_outputs(&mut self, on: bool) {
        self.skip_padding_outputs = on;
    }

    /// The encoder.
    pub fn encoder(&self) -> &TransformerEncoder {
        &self.encoder
    }

    /// The token embedding table `(vocab, hidden)` (tied masked-LM decoders reuse it).
    pub fn word_embeddings(&self) -> &crate::nn::WeightMatrix {
        self.encoder.embeddings().word_embeddings()
    }

    /// The longest input this model accepts, in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Whether a pooler was loaded.
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The position ids the family uses for `input_ids`; `None` means `0..seq`.
    pub fn position_ids(&self, input_ids: &Tensor) -> Result<Option<Tensor>> {
        match self.position_ids {
            PositionIds::Sequential => Ok(None),
            PositionIds::AfterPaddingIndex(pad) => {
                Ok(Some(position_ids_after_padding_index(input_ids, pad)?))
            }
        }
    }

    /// The last hidden state `(batch, seq, hidden)`. `input_ids`, `attention_mask` (1 = real
    /// token, 0 = padding) and `token_type_ids` are `(batch, seq)`; token types are ignored by
    /// families without them (DistilBERT) and default to zeros.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.hidden_states_with(
            input_ids,
            attention_mask,
            token_type_ids,
            crate::nn::Pass::INFERENCE,
        )
    }

    /// [`EncoderModel::hidden_states`] for a given pass: [`crate::nn::Pass::TRAIN`] applies
    /// the configuration's dropout (fine-tuning) and always computes the padded batch.
    pub fn hidden_states_with(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
        pass: crate::nn::Pass,
    ) -> Result<Tensor> {
        let (_, s) = input_ids
            .dims2()
            .map_err(|_| Error::shape("input_ids", "(batch, seq)", input_ids.dims()))?;
        if s > self.max_length {
            return Err(Error::PositionOutOfRange {
                what: "the model's position embeddings".into(),
                position: s - 1,
                max: self.max_length,
            });
        }
        let positions = self.position_ids(input_ids)?;
        if let (true, false, Some(mask)) = (self.skip_padding_outputs, pass.train, attention_mask) {
            return self.encoder.forward_packed(
                input_ids,
                mask,
                token_type_ids,
                positions.as_ref(),
            );
        }
        Ok(self
            .encoder
            .forward_with_positions(
                input_ids,
                attention_mask,
                token_type_ids,
                positions.as_ref(),
                pass,
            )?
            .hidden)
    }

    /// The pooler applied to hidden states, when the model has one.
    pub fn pool(&self, hidden: &Tensor) -> Result<Option<Tensor>> {
        self.pooler.as_ref().map(|p| p.forward(hidden)).transpose()
    }

    /// Runs the base model (see [`EncoderModel::hidden_states`] for the inputs).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<EncoderOutput> {
        let last_hidden_state = self.hidden_states(input_ids, attention_mask, token_type_ids)?;
        let pooler_output = self.pool(&last_hidden_state)?;
        Ok(EncoderOutput {
            last_hidden_state,
            pooler_output,
        })
    }
}
