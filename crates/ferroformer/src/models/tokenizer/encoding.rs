//! The rows an encoding call returns ([`Encoding`], [`BatchEncoding`]) and their tensors.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// One encoded row: a text, a pair, or one overflow window of either.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids: 0 for the first sequence, 1 for the second of a pair (BERT's template);
    /// padding gets 0.
    pub type_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// 1 for special tokens added by the template and for padding, else 0.
    pub special_tokens_mask: Vec<u32>,
    /// Token strings (`##ing`, `Ġthe`, `[CLS]`).
    pub tokens: Vec<String>,
    /// `(start, end)` character (Unicode scalar value) offsets of each token into its own input
    /// text; `(0, 0)` for special tokens and padding.
    pub offsets: Vec<(usize, usize)>,
    /// Index of the word (pre-tokenizer split) each token comes from; `None` for special tokens
    /// and padding.
    pub word_ids: Vec<Option<u32>>,
    /// Which input each token comes from (0 or 1 for a pair); `None` for special tokens and
    /// padding.
    pub sequence_ids: Vec<Option<usize>>,
    /// Index of the input in the batch that this row (window) belongs to.
    pub overflow_to_sample: usize,
}

impl Encoding {
    /// Row `sample`'s encoding (or one of its overflow windows) from `tokenizers`.
    pub(super) fn from_hf(e: tokenizers::Encoding, sample: usize) -> Self {
        Self {
            sequence_ids: e.get_sequence_ids(),
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
            special_tokens_mask: e.get_special_tokens_mask().to_vec(),
            tokens: e.get_tokens().to_vec(),
            offsets: e.get_offsets().to_vec(),
            word_ids: e.get_word_ids().to_vec(),
            overflow_to_sample: sample,
        }
    }

    /// Number of tokens, padding included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the row has no tokens at all.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The rows of a batch call, in input order with each input's overflow windows right after it
/// (the layout of `transformers`' `BatchEncoding`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchEncoding {
    /// One entry per row.
    pub encodings: Vec<Encoding>,
}

impl BatchEncoding {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// `(input_ids, attention_mask, token_type_ids)` as `(batch, seq)` `u32` tensors.
    /// Fails if the rows have different lengths (encode with padding to get equal rows).
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let seq = self.encodings.first().map_or(0, Encoding::len);
        if let Some((i, e)) = self
            .encodings
            .iter()
            .enumerate()
            .find(|(_, e)| e.len() != seq)
        {
            return Err(Error::Invalid(format!(
                "cannot stack a batch whose rows have different lengths (row 0 has {seq} \
                 tokens, row {i} has {}); encode with padding",
                e.len()
            )));
        }
        let batch = self.encodings.len();
        let stack = |f: fn(&Encoding) -> &[u32]| -> Result<Tensor> {
            let flat: Vec<u32> = self.encodings.iter().flat_map(|e| f(e).to_vec()).collect();
            Ok(Tensor::from_vec(flat, (batch, seq), device)?)
        };
        Ok((
            stack(|e| &e.ids)?,
            stack(|e| &e.attention_mask)?,
            stack(|e| &e.type_ids)?,
        ))
    }
}
