//! Encoding options — truncation strategies, stride and overflow windows, padding — and
//! [`AutoTokenizer`]'s encoding calls, which follow `transformers`' `tokenizer(...)`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tokenizers::{
    EncodeInput, PaddingDirection, PaddingParams, Tokenizer, TruncationDirection, TruncationParams,
};

use super::{AutoTokenizer, BatchEncoding, Encoding};
use crate::error::{Error, Result};

/// How to shorten inputs longer than the maximum length (`transformers`' `truncation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationStrategy {
    /// No truncation (`truncation=False`). A `max_length` then only sets the
    /// [`PaddingStrategy::MaxLength`] target.
    #[default]
    None,
    /// Remove tokens from the longer sequence of a pair first, one at a time
    /// (`"longest_first"`, what `truncation=True` means).
    LongestFirst,
    /// Truncate only the first sequence (`"only_first"`).
    OnlyFirst,
    /// Truncate only the second sequence of a pair (`"only_second"`, the context in question
    /// answering).
    OnlySecond,
}

/// How to pad a batch (`transformers`' `padding=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingStrategy {
    /// No padding (`padding=False`).
    #[default]
    None,
    /// Pad every row to the longest row of the batch, overflow windows included
    /// (`padding="longest"` / `True`).
    Longest,
    /// Pad every row to `max_length` (`padding="max_length"`), or to the model's maximum length
    /// when `max_length` is not given.
    MaxLength,
}

/// A side of a sequence, for padding and truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// The start of the sequence.
    Left,
    /// The end of the sequence (the default for both padding and truncation).
    #[default]
    Right,
}

impl Side {
    /// `"left"` / `"right"` (any case), as the config files write it.
    pub(super) fn parse(s: &str) -> Option<Side> {
        match s.to_ascii_lowercase().as_str() {
            "left" => Some(Side::Left),
            "right" => Some(Side::Right),
            _ => None,
        }
    }
}

/// Options of an encoding call; the defaults are those of `tokenizer(text)` in `transformers`
/// (special tokens added, no truncation, no padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add the model's special tokens (`[CLS]`/`[SEP]`, `<s>`/`</s>`).
    pub add_special_tokens: bool,
    /// Truncation strategy.
    pub truncation: TruncationStrategy,
    /// Maximum length, special tokens included. `None` with truncation or max-length padding
    /// means the tokenizer's [`AutoTokenizer::model_max_length`] (and no truncation/padding if
    /// that is unlimited), as in `transformers`.
    pub max_length: Option<usize>,
    /// Tokens shared by consecutive overflow windows.
    pub stride: usize,
    /// Return the truncated-away parts as extra windows (one [`Encoding`] each).
    pub return_overflowing_tokens: bool,
    /// Padding strategy.
    pub padding: PaddingStrategy,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            add_special_tokens: true,
            truncation: TruncationStrategy::None,
            max_length: None,
            stride: 0,
            return_overflowing_tokens: false,
            padding: PaddingStrategy::None,
        }
    }
}

/// What the offsets of an input's tokens point into: its texts (by sequence id), or its
/// words (by word id) when it was given split into words.
#[derive(Debug, Clone, Copy)]
enum Sources<'a> {
    Texts([&'a str; 2]),
    Words(&'a [String]),
}

/// A copy of `tok` whose byte-level pre-tokenizer adds a prefix space, if it has one that
/// does not (`transformers` refuses split words without it: the first word of a text would
/// be the only one tokenized without its space).
fn with_prefix_space(tok: &Tokenizer) -> Option<Tokenizer> {
    fn set(v: &mut serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                let mut changed = false;
                if m.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
                    && m.get("add_prefix_space") == Some(&serde_json::Value::Bool(false))
                {
                    m.insert("add_prefix_space".into(), true.into());
                    changed = true;
                }
                for x in m.values_mut() {
                    changed |= set(x);
                }
                changed
            }
            serde_json::Value::Array(a) => a.iter_mut().fold(false, |c, x| set(x) | c),
            _ => false,
        }
    }
    let mut json = serde_json::to_value(tok.get_pre_tokenizer()?).ok()?;
    if !set(&mut json) {
        return None;
    }
    let pre: tokenizers::pre_tokenizers::PreTokenizerWrapper = serde_json::from_value(json).ok()?;
    let mut out = tok.clone();
    out.with_pre_tokenizer(Some(pre));
    Some(out)
}

/// Cache key of a tokenizer configured for one truncation setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TruncationKey {
    max_length: usize,
    stride: usize,
    strategy: TruncationStrategy,
    side: Side,
}

/// How many truncation settings keep a configured tokenizer around (pipelines use one or two).
const TRUNCATION_CACHE: usize = 4;

impl AutoTokenizer {
    /// Encodes one text. Returns one [`Encoding`], or several (the overflow windows, in order)
    /// with [`EncodeOptions::return_overflowing_tokens`].
    pub fn encode(&self, text: &str, opts: &EncodeOptions) -> Result<Vec<Encoding>> {
        Ok(self.encode_batch(&[text], opts)?.encodings)
    }

    /// Encodes a pair of texts (question + context, premise + hypothesis). With
    /// [`TruncationStrategy::OnlySecond`], a stride and overflow, returns one [`Encoding`] per
    /// window of the second text, in order, each with the whole first text.
    pub fn encode_pair(&self, a: &str, b: &str, opts: &EncodeOptions) -> Result<Vec<Encoding>> {
        Ok(self.encode_pair_batch(&[(a, b)], opts)?.encodings)
    }

    /// Encodes a batch of texts; padding applies across the whole batch, overflow windows
    /// included.
    pub fn encode_batch(&self, texts: &[&str], opts: &EncodeOptions) -> Result<BatchEncoding> {
        let inputs = texts.iter().map(|t| EncodeInput::from(*t)).collect();
        let sources = texts.iter().map(|t| Sources::Texts([*t, ""])).collect();
        self.run(inputs, sources, opts, false)
    }

    /// Encodes a batch of texts already split into words (`transformers`'
    /// `is_split_into_words=True`): each word is pre-tokenized on its own, and
    /// [`Encoding::word_ids`] index the words. A byte-level BPE tokenizer (RoBERTa, GPT-2)
    /// encodes every word with a leading space, as `transformers` requires of it
    /// (`add_prefix_space=True`), so that words are tokenized as they are inside a text.
    pub fn encode_words_batch(
        &self,
        sentences: &[Vec<String>],
        opts: &EncodeOptions,
    ) -> Result<BatchEncoding> {
        let inputs = sentences
            .iter()
            .map(|w| EncodeInput::from(w.as_slice()))
            .collect();
        let sources = sentences
            .iter()
            .map(|w| Sources::Words(w.as_slice()))
            .collect();
        self.run(inputs, sources, opts, false)
    }

    /// Encodes a batch of text pairs; padding applies across the whole batch, overflow windows
    /// included.
    pub fn encode_pair_batch(
        &self,
        pairs: &[(&str, &str)],
        opts: &EncodeOptions,
    ) -> Result<BatchEncoding> {
        let inputs = pairs
            .iter()
            .map(|&(a, b)| EncodeInput::from((a, b)))
            .collect();
        let sources = pairs.iter().map(|&(a, b)| Sources::Texts([a, b])).collect();
        self.run(inputs, sources, opts, true)
    }

    /// `transformers`' `_batch_encode_plus`: settle strategies and lengths, encode the batch
    /// with character offsets, pad, then flatten each input's overflow windows after it.
    /// `sources` are the texts of each input (for the slow SentencePiece families' lookup).
    fn run(
        &self,
        inputs: Vec<EncodeInput<'_>>,
        sources: Vec<Sources<'_>>,
        opts: &EncodeOptions,
        is_pair: bool,
    ) -> Result<BatchEncoding> {
        let mut padding = opts.padding;
        let mut truncation = opts.truncation;
        let mut max_length = opts.max_length;
        if max_length.is_none() {
            if padding == PaddingStrategy::MaxLength {
                match self.model_max_length {
                    Some(m) => max_length = Some(m),
                    None => padding = PaddingStrategy::None,
                }
            }
            if truncation != TruncationStrategy::None {
                match self.model_max_length {
                    Some(m) => max_length = Some(m),
                    None => truncation = TruncationStrategy::None,
                }
            }
        }
        let pad = if padding == PaddingStrategy::None {
            None
        } else {
            let (Some(pad_token), Some(pad_id)) = (self.pad_token(), self.pad_token_id()) else {
                return Err(Error::Invalid(
                    "asking to pad but the tokenizer has no padding token".into(),
                ));
            };
            Some(PaddingParams {
                strategy: match (padding, max_length) {
                    (PaddingStrategy::MaxLength, Some(len)) => {
                        tokenizers::PaddingStrategy::Fixed(len)
                    }
                    _ => tokenizers::PaddingStrategy::BatchLongest,
                },
                direction: match self.padding_side {
                    Side::Left => PaddingDirection::Left,
                    Side::Right => PaddingDirection::Right,
                },
                pad_to_multiple_of: None,
                pad_id,
                pad_type_id: 0,
                pad_token: pad_token.to_string(),
            })
        };

        let configured;
        let tokenizer: &Tokenizer = match (truncation, max_length) {
            (TruncationStrategy::None, _) | (_, None) => &self.tokenizer,
            (strategy, Some(max_length)) => {
                // `tokenizers` subtracts the special tokens from max_length unchecked (an
                // overflow panic, or no truncation at all in a release build): refuse instead.
                // Configuring subtracts a single text's count, encoding the count of what is
                // encoded.
                let when_configured = self.num_special_tokens_to_add(false);
                let when_encoding = if opts.add_special_tokens {
                    self.num_special_tokens_to_add(is_pair)
                } else {
                    0
                };
                let n_added = when_configured.max(when_encoding);
                if max_length < n_added {
                    return Err(Error::Invalid(format!(
                        "max_length {max_length} is shorter than the {n_added} special tokens \
                         the tokenizer adds"
                    )));
                }
                configured = self.truncating_tokenizer(TruncationKey {
                    max_length,
                    stride: opts.stride,
                    strategy,
                    side: self.truncation_side,
                })?;
                &configured
            }
        };

        let prefixed;
        let words = matches!(sources.first(), Some(Sources::Words(_)));
        let tokenizer: &Tokenizer = match words.then(|| with_prefix_space(tokenizer)).flatten() {
            Some(t) => {
                prefixed = t;
                &prefixed
            }
            None => tokenizer,
        };

        // `tokenizers` asserts that each window leaves room beyond the stride, which depends
        // on every input's length (Python surfaces it as a PanicException): make it an error.
        let add_special = opts.add_special_tokens;
        let encoded = catch_unwind(AssertUnwindSafe(|| {
            tokenizer.encode_batch_char_offsets(inputs, add_special)
        }))
        .map_err(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Error::Invalid(format!("tokenizer failed: {msg}"))
        })?;
        let mut encoded = encoded.map_err(|e| Error::Invalid(format!("tokenizer failed: {e}")))?;
        // Padding the finished batch gives the rows Python gets from a backend configured to
        // pad: both pad every input, and its overflow windows, to the batch-wide target.
        if let Some(params) = &pad {
            tokenizers::pad_encodings(&mut encoded, params)
                .map_err(|e| Error::Invalid(format!("padding failed: {e}")))?;
        }

        let mut encodings = Vec::with_capacity(encoded.len());
        for (sample, mut e) in encoded.into_iter().enumerate() {
            let overflow = e.take_overflowing();
            let texts = sources[sample];
            encodings.push(self.row(e, sample, texts));
            if opts.return_overflowing_tokens {
                encodings.extend(overflow.into_iter().map(|o| self.row(o, sample, texts)));
            }
        }
        Ok(BatchEncoding { encodings })
    }

    /// One output row, with the ids a slow SentencePiece tokenizer's `vocab.json` lookup gives
    /// (see `VocabLookup`); `texts` are the input's texts, for the text behind an unknown token.
    fn row(&self, e: tokenizers::Encoding, sample: usize, texts: Sources<'_>) -> Encoding {
        let mut row = Encoding::from_hf(e, sample);
        if let Some(lookup) = &self.vocab_lookup {
            for i in 0..row.ids.len() {
                let surface = || {
                    let text = match texts {
                        Sources::Texts(t) => t[row.sequence_ids[i]?],
                        Sources::Words(w) => w.get(row.word_ids[i]? as usize)?.as_str(),
                    };
                    let (start, end) = row.offsets[i];
                    Some(
                        text.chars()
                            .skip(start)
                            .take(end - start)
                            .collect::<String>(),
                    )
                };
                row.ids[i] = lookup.id(row.ids[i], &row.tokens[i], surface);
            }
        }
        row
    }

    /// The backend configured for one truncation setting (from the cache, or a new copy).
    fn truncating_tokenizer(&self, key: TruncationKey) -> Result<Arc<Tokenizer>> {
        let mut cache = self
            .truncating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pos) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(pos);
            let tok = entry.1.clone();
            cache.push(entry);
            return Ok(tok);
        }
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(TruncationParams {
            max_length: key.max_length,
            stride: key.stride,
            strategy: match key.strategy {
                TruncationStrategy::OnlyFirst => tokenizers::TruncationStrategy::OnlyFirst,
                TruncationStrategy::OnlySecond => tokenizers::TruncationStrategy::OnlySecond,
                _ => tokenizers::TruncationStrategy::LongestFirst,
            },
            direction: match key.side {
                Side::Left => TruncationDirection::Left,
                Side::Right => TruncationDirection::Right,
            },
        }))
        .map_err(|e| Error::Invalid(format!("invalid truncation: {e}")))?;
        let tok = Arc::new(tok);
        if cache.len() >= TRUNCATION_CACHE {
            cache.remove(0);
        }
        cache.push((key, tok.clone()));
        Ok(tok)
    }
}
