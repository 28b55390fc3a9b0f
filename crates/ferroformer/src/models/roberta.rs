//! RoBERTa, XLM-RoBERTa and CamemBERT: BERT's layout and tensor names (under `roberta.` in
//! task checkpoints), one token type, and positions counted from the padding index. Only the
//! spec differs from BERT's; the blocks and names are the same.

use super::bert::{bert_names, BertConfig};
use super::encoder_model::{EncoderSpec, MaskedLmSpec, PositionIds, SequenceClassifierNames};
use crate::arch::heads::{MaskedLmHeadNames, PoolerActivation};
use crate::error::{Error, Result};
use crate::nn::{Activation, NormConfig};

/// `transformers`' `RobertaConfig` default padding id.
const DEFAULT_PAD_TOKEN_ID: u32 = 1;

/// `config.json` of a RoBERTa-like checkpoint: the same fields as BERT's.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct RobertaConfig {
    /// The fields, read as BERT reads them (`pad_token_id` defaults to 1 here).
    pub bert: BertConfig,
}

impl RobertaConfig {
    /// The padding id, which also anchors the positions.
    pub fn pad_token_id(&self) -> u32 {
        self.bert.pad_token_id.unwrap_or(DEFAULT_PAD_TOKEN_ID)
    }

    /// The longest input: the position table minus the rows up to and including the
    /// padding index, which real tokens never use.
    pub fn max_length(&self) -> usize {
        self.bert
            .max_position_embeddings
            .saturating_sub(self.pad_token_id() as usize + 1)
    }

    /// RoBERTa's spec for `model_type` (`roberta`, `xlm-roberta` or `camembert`, which all
    /// keep the base model under `roberta.`): BERT's encoder and names, positions after the
    /// padding index, the pooler in base models only, and the heads of `transformers`'
    /// `RobertaFor…` classes.
    pub fn encoder_spec(&self, model_type: &str) -> Result<EncoderSpec> {
        let encoder = self.bert.encoder_config()?;
        if self.max_length() == 0 {
            return Err(Error::config(
                "max_position_embeddings",
                format!(
                    "{} leaves no positions after the padding index {}",
                    self.bert.max_position_embeddings,
                    self.pad_token_id()
                ),
            ));
        }
        Ok(EncoderSpec {
            model_type: model_type.into(),
            names: bert_names(&encoder),
            encoder,
            base_prefix: "roberta".into(),
            position_ids: PositionIds::AfterPaddingIndex(self.pad_token_id()),
            max_length: self.max_length(),
            pooler: Some("pooler.dense".into()),
            sequence_classifier: SequenceClassifierNames::FirstToken {
                dense: "classifier.dense".into(),
                activation: PoolerActivation::Tanh,
                out: "classifier.out_proj".into(),
            },
            token_classifier: "classifier".into(),
            question_answering: "qa_outputs".into(),
            masked_lm: MaskedLmSpec {
                names: MaskedLmHeadNames {
                    dense: "lm_head.dense".into(),
                    norm: "lm_head.layer_norm".into(),
                    decoder_weight: "lm_head.decoder.weight".into(),
                    bias: vec!["lm_head.bias".into(), "lm_head.decoder.bias".into()],
                },
                // `RobertaLMHead` applies exact GELU whatever `hidden_act` says.
                activation: Activation::Gelu,
                norm: NormConfig::layer_norm(self.bert.layer_norm_eps),
                tied: self.bert.tie_word_embeddings,
            },
        })
    }
}
