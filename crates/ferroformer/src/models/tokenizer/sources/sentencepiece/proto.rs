//! The fields of SentencePiece's `ModelProto` (`sentencepiece_model.proto`, proto2) that the
//! slow→fast conversion reads, as `prost` messages. Fields not declared here are skipped by the
//! decoder; absent optional fields take the proto's declared defaults through the accessors.

use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};

/// `ModelProto`: the pieces, and the trainer and normalizer settings.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ModelProto {
    /// `repeated SentencePiece pieces = 1`, in id order.
    #[prost(message, repeated, tag = "1")]
    pub(super) pieces: Vec<SentencePiece>,
    /// `optional TrainerSpec trainer_spec = 2`.
    #[prost(message, optional, tag = "2")]
    pub(super) trainer_spec: Option<TrainerSpec>,
    /// `optional NormalizerSpec normalizer_spec = 3`.
    #[prost(message, optional, tag = "3")]
    pub(super) normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`: one piece of the vocabulary.
#[derive(Clone, PartialEq, Message)]
pub(super) struct SentencePiece {
    /// `optional string piece = 1`.
    #[prost(string, optional, tag = "1")]
    pub(super) piece: Option<String>,
    /// `optional float score = 2`.
    #[prost(float, optional, tag = "2")]
    pub(super) score: Option<f32>,
    /// `optional Type type = 3 [default = NORMAL]` (an enum, read as its number).
    #[prost(int32, optional, tag = "3")]
    pub(super) kind: Option<i32>,
}

/// `SentencePiece.Type`: NORMAL.
pub(super) const NORMAL: i32 = 1;
/// `SentencePiece.Type`: UNKNOWN.
pub(super) const UNKNOWN: i32 = 2;
/// `SentencePiece.Type`: CONTROL (`<s>`, `</s>`: special tokens).
pub(super) const CONTROL: i32 = 3;
/// `SentencePiece.Type`: USER_DEFINED (matched as a whole, not special).
pub(super) const USER_DEFINED: i32 = 4;

impl SentencePiece {
    /// The piece string.
    pub(super) fn text(&self) -> &str {
        self.piece.as_deref().unwrap_or("")
    }
    /// The score (a log-probability for Unigram, the merge priority for BPE).
    pub(super) fn score_f64(&self) -> f64 {
        f64::from(self.score.unwrap_or(0.0))
    }
    /// The piece type (`NORMAL` when absent).
    pub(super) fn piece_type(&self) -> i32 {
        self.kind.unwrap_or(NORMAL)
    }
}

/// `TrainerSpec`, the settings the model was trained with.
#[derive(Clone, PartialEq, Message)]
pub(super) struct TrainerSpec {
    /// `optional ModelType model_type = 3 [default = UNIGRAM]`: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR.
    #[prost(int32, optional, tag = "3")]
    pub(super) model_type: Option<i32>,
    /// `optional bool byte_fallback = 35 [default = false]`.
    #[prost(bool, optional, tag = "35")]
    pub(super) byte_fallback: Option<bool>,
    /// `optional int32 unk_id = 40 [default = 0]`.
    #[prost(int32, optional, tag = "40")]
    pub(super) unk_id: Option<i32>,
    /// `optional string unk_piece = 45 [default = "<unk>"]`.
    #[prost(string, optional, tag = "45")]
    pub(super) unk_piece: Option<String>,
}

/// `TrainerSpec.ModelType`: UNIGRAM.
pub(super) const UNIGRAM: i32 = 1;
/// `TrainerSpec.ModelType`: BPE.
pub(super) const BPE: i32 = 2;

/// `NormalizerSpec`, the normalization applied before segmentation.
#[derive(Clone, PartialEq, Message)]
pub(super) struct NormalizerSpec {
    /// `optional bytes precompiled_charsmap = 2`: the compiled normalization rules.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub(super) precompiled_charsmap: Option<Vec<u8>>,
    /// `optional bool add_dummy_prefix = 3 [default = true]`: a `▁` before the text.
    #[prost(bool, optional, tag = "3")]
    pub(super) add_dummy_prefix: Option<bool>,
    /// `optional bool remove_extra_whitespaces = 4 [default = true]`: ends stripped, runs of
    /// spaces collapsed.
    #[prost(bool, optional, tag = "4")]
    pub(super) remove_extra_whitespaces: Option<bool>,
}

impl ModelProto {
    /// Reads and decodes a `.model` file; errors name the file.
    pub(super) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, e))?;
        let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| {
            Error::file(
                path,
                format!("not a SentencePiece model (protobuf ModelProto): {e}"),
            )
        })?;
        if proto.pieces.is_empty() {
            return Err(Error::file(path, "the SentencePiece model has no pieces"));
        }
        Ok(proto)
    }

    /// `trainer_spec.model_type` (UNIGRAM when absent).
    pub(super) fn model_type(&self) -> i32 {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.model_type)
            .unwrap_or(UNIGRAM)
    }

    /// `trainer_spec.unk_id` (0 when absent).
    pub(super) fn unk_id(&self) -> i32 {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.unk_id)
            .unwrap_or(0)
    }

    /// `trainer_spec.unk_piece` (`<unk>` when absent).
    pub(super) fn unk_piece(&self) -> String {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.unk_piece.clone())
            .unwrap_or_else(|| "<unk>".to_string())
    }

    /// `normalizer_spec.add_dummy_prefix` (true when absent).
    pub(super) fn add_dummy_prefix(&self) -> bool {
        self.normalizer_spec
            .as_ref()
            .and_then(|n| n.add_dummy_prefix)
            .unwrap_or(true)
    }

    /// `normalizer_spec.remove_extra_whitespaces` (true when absent).
    pub(super) fn remove_extra_whitespaces(&self) -> bool {
        self.normalizer_spec
            .as_ref()
            .and_then(|n| n.remove_extra_whitespaces)
            .unwrap_or(true)
    }

    /// `normalizer_spec.precompiled_charsmap` (empty when absent).
    pub(super) fn charsmap(&self) -> &[u8] {
        self.normalizer_spec
            .as_ref()
            .and_then(|n| n.precompiled_charsmap.as_deref())
            .unwrap_or(&[])
    }
}
