//! Loading pretrained tokenizers (`AutoTokenizer`) and encoding text the way `transformers`'
//! fast tokenizers do.
//!
//! A checkpoint directory holds either a serialized `tokenizer.json`, or the vocabulary files
//! of a "slow" tokenizer (`vocab.txt` for BERT's WordPiece, `vocab.json` + `merges.txt` for
//! byte-level BPE, a SentencePiece model for T5, Pegasus, mBART, NLLB, M2M100 and Marian),
//! next to `tokenizer_config.json` and `special_tokens_map.json`.
//! [`AutoTokenizer`] loads any of these into a [`tokenizers::Tokenizer`], then applies the same
//! corrections `transformers`' `PreTrainedTokenizerFast` applies on load (special tokens from
//! the configs added to the vocabulary, `do_lower_case` and `add_prefix_space` from the config
//! overriding the serialized pipeline), so ids, offsets and decoded text match Python.
//!
//! Encoding follows `transformers`' `tokenizer(...)` call: truncation (with stride and
//! overflowing windows), padding across the whole batch, and **character** offsets (as Python
//! reports them), never byte offsets.
//!
//! The code is split by concern:
//!
//! - `sources`: finding a checkpoint's tokenizer files and building the `tokenizers` backend
//!   from them, one submodule per kind of file set (`tokenizer.json`, WordPiece `vocab.txt`,
//!   byte-level BPE `vocab.json` + `merges.txt`, SentencePiece models with the language codes
//!   and target side of the sequence-to-sequence families);
//! - `config`: `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json`
//!   (special tokens, added tokens, the tokenizer class);
//! - `corrections`: what `PreTrainedTokenizerFast.__init__` changes once the backend exists;
//! - `encode`: encoding options, truncation strategies, stride and overflow windows, padding;
//! - `encoding`: the encoded rows ([`Encoding`], [`BatchEncoding`]) and their tensors;
//! - this file: [`AutoTokenizer`]'s loading entry points, decoding, special tokens and
//!   settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::models::hub;

mod config;
mod corrections;
mod encode;
mod encoding;
mod sources;

pub(crate) use config::read_json;
pub use encode::{EncodeOptions, PaddingStrategy, Side, TruncationStrategy};
pub use encoding::{BatchEncoding, Encoding};

use encode::TruncationKey;
use sources::sentencepiece::{Languages, SlowDecode, VocabLookup};
use sources::TokenizerSource;

/// A pretrained tokenizer loaded as `transformers`' `AutoTokenizer.from_pretrained` loads it
/// (the fast tokenizer), with its special tokens, maximum length and padding side.
///
/// ```no_run
/// use ferroformer::models::{AutoTokenizer, EncodeOptions, PaddingStrategy};
///
/// # fn main() -> ferroformer::Result<()> {
/// let tok = AutoTokenizer::from_pretrained("sentence-transformers/all-MiniLM-L6-v2")?;
/// let opts = EncodeOptions { padding: PaddingStrategy::Longest, ..Default::default() };
/// let batch = tok.encode_batch(&["Hello, world!", "Paris is the capital of France."], &opts)?;
/// assert_eq!(batch.encodings[0].tokens[..3], ["[CLS]", "hello", ","]);
/// assert_eq!(batch.encodings[0].offsets[1], (0, 5)); // character offsets of "Hello"
/// let (input_ids, attention_mask, token_type_ids) =
///     batch.to_tensors(&ferroformer::Device::Cpu)?;
/// assert_eq!(tok.decode(&batch.encodings[0].ids, true)?, "hello, world!");
/// # let _ = (input_ids, attention_mask, token_type_ids);
/// # Ok(())
/// # }
/// ```
pub struct AutoTokenizer {
    /// The backend, with neither truncation nor padding configured.
    tokenizer: Tokenizer,
    source: PathBuf,
    special: HashMap<&'static str, Option<String>>,
    all_special: Vec<String>,
    model_max_length: Option<usize>,
    padding_side: Side,
    truncation_side: Side,
    clean_up_tokenization_spaces: bool,
    /// The language codes of mBART, mBART-50, NLLB and M2M100, and the current source language.
    languages: Option<Languages>,
    /// Marian's target side (`target.spm`).
    target: Option<Box<AutoTokenizer>>,
    /// How the slow-only SentencePiece families (M2M100, Marian) decode.
    slow_decode: Option<Arc<SlowDecode>>,
    /// The `vocab.json` lookup of the slow-only SentencePiece families.
    vocab_lookup: Option<Arc<VocabLookup>>,
    /// Copies of the backend configured for recent truncation settings: truncation happens
    /// inside `tokenizers`' encode (before the template adds special tokens), so it needs a
    /// tokenizer configured for it, and `&self` encoding must not reconfigure the shared one.
    truncating: Mutex<Vec<(TruncationKey, Arc<Tokenizer>)>>,
}

impl Clone for AutoTokenizer {
    fn clone(&self) -> Self {
        Self {
            tokenizer: self.tokenizer.clone(),
            source: self.source.clone(),
            special: self.special.clone(),
            all_special: self.all_special.clone(),
            model_max_length: self.model_max_length,
            padding_side: self.padding_side,
            truncation_side: self.truncation_side,
            clean_up_tokenization_spaces: self.clean_up_tokenization_spaces,
            languages: self.languages.clone(),
            target: self.target.clone(),
            slow_decode: self.slow_decode.clone(),
            vocab_lookup: self.vocab_lookup.clone(),
            truncating: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for AutoTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.all_special)
            .field("model_max_length", &self.model_max_length)
            .field("padding_side", &self.padding_side)
            .finish_non_exhaustive()
    }
}

impl AutoTokenizer {
    /// Loads the tokenizer of `model`: a local directory, a `tokenizer.json` file, or a hub id
    /// `org/name[@revision]` found in the local hub cache (see [`hub::resolve`]).
    pub fn from_pretrained(model: &str) -> Result<Self> {
        let path = hub::resolve(model)?;
        if path.is_file() {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| Path::new("."));
            Self::from_source(&TokenizerSource::TokenizerJson(path.clone()), dir)
        } else {
            Self::from_dir(&path)
        }
    }

    /// Loads the tokenizer in `dir`: `tokenizer.json` if present, else a WordPiece tokenizer
    /// built from `vocab.txt`, else a byte-level BPE tokenizer built from `vocab.json` +
    /// `merges.txt`, else a SentencePiece tokenizer (T5 and Pegasus `spiece.model`, mBART,
    /// mBART-50 and NLLB `sentencepiece.bpe.model`, M2M100 `sentencepiece.bpe.model` +
    /// `vocab.json`, Marian `source.spm` + `target.spm` + `vocab.json`) built as
    /// `transformers` builds it; with `tokenizer_config.json`, `special_tokens_map.json` and
    /// `added_tokens.json` applied. A SentencePiece family whose files are incomplete is an
    /// error naming the missing file.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a directory"));
        }
        Self::from_source(&TokenizerSource::find(dir)?, dir)
    }

    /// Builds the backend from `source` (with the configuration files of `dir`), then applies
    /// what `PreTrainedTokenizerFast.__init__` applies.
    fn from_source(source: &TokenizerSource, dir: &Path) -> Result<Self> {
        corrections::finish(source.load(dir)?)
    }

    // ----- decoding -----

    /// Turns ids back into text, optionally without special tokens, then applies
    /// `transformers`' `clean_up_tokenization` (" ." → ".", " n't" → "n't", ...) when the
    /// tokenizer config asks for it. Unknown ids are skipped.
    ///
    /// M2M100 and Marian decode as their slow classes do (Marian with its target-side
    /// SentencePiece model, as `MarianTokenizer.decode`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = match &self.slow_decode {
            Some(slow) => slow.decode(ids, skip_special_tokens),
            None => self
                .tokenizer
                .decode(ids, skip_special_tokens)
                .map_err(|e| Error::Invalid(format!("decoding failed: {e}")))?,
        };
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// Joins tokens back into text with the tokenizer's decoder (`##` pieces glued for
    /// WordPiece, bytes decoded for byte-level BPE), as `convert_tokens_to_string` does in
    /// `transformers`; without a decoder the tokens are joined by spaces.
    pub fn convert_tokens_to_string(&self, tokens: &[String]) -> Result<String> {
        use tokenizers::Decoder;
        match self.tokenizer.get_decoder() {
            Some(decoder) => decoder
                .decode(tokens.to_vec())
                .map_err(|e| Error::Invalid(format!("decoding tokens failed: {e}"))),
            None => Ok(tokens.join(" ")),
        }
    }

    /// The prefix marking a word's continuation pieces (`##` for WordPiece), when the model
    /// has one; byte-level BPE marks word starts instead and has none.
    pub fn continuing_subword_prefix(&self) -> Option<String> {
        match self.tokenizer.get_model() {
            tokenizers::ModelWrapper::WordPiece(wp) => Some(wp.continuing_subword_prefix.clone()),
            tokenizers::ModelWrapper::BPE(bpe) => bpe.continuing_subword_prefix.clone(),
            _ => None,
        }
    }

    /// The token string of each id; fails on an id outside the vocabulary.
    pub fn convert_ids_to_tokens(&self, ids: &[u32]) -> Result<Vec<String>> {
        ids.iter()
            .map(|&id| {
                self.id_to_token(id).ok_or_else(|| {
                    Error::Invalid(format!(
                        "token id {id} is outside the vocabulary of {} tokens",
                        self.vocab_size_with_added_tokens()
                    ))
                })
            })
            .collect()
    }

    /// The id of a token string (added tokens included), if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The token string of an id, if the id is in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        if let Some(token) = self.slow_decode.as_ref().and_then(|s| s.token(id)) {
            return Some(token.to_string());
        }
        self.tokenizer.id_to_token(id)
    }

    // ----- sequence-to-sequence: languages and the target side -----

    /// The language codes of a multilingual sequence-to-sequence tokenizer, as
    /// [`lang_code_id`](Self::lang_code_id) and [`with_src_lang`](Self::with_src_lang) take
    /// them (`transformers`' `src_lang` / `tgt_lang`): mBART and mBART-50 `en_XX`, NLLB
    /// `eng_Latn`, M2M100 `en` (whose token is `__en__`). Empty for other tokenizers.
    pub fn lang_codes(&self) -> Vec<String> {
        self.languages
            .as_ref()
            .map(|l| l.codes.iter().map(|(c, _, _)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// The token id of a language code (as `src_lang` / `tgt_lang` take it: `ro_RO`,
    /// `fra_Latn`, or `fr` for M2M100's `__fr__`), e.g. the `forced_bos_token_id` of the target
    /// language. An unknown code (or a tokenizer without languages) is an error listing the
    /// valid codes.
    pub fn lang_code_id(&self, code: &str) -> Result<u32> {
        match &self.languages {
            Some(l) => Ok(l.lookup(code)?.1),
            None => Err(Error::Invalid(format!(
                "unknown language code `{code}`: this tokenizer has no language codes"
            ))),
        }
    }

    /// The source language whose special tokens encoding adds now (`src_lang`), for the
    /// multilingual tokenizers.
    pub fn src_lang(&self) -> Option<&str> {
        self.languages.as_ref().map(|l| l.current.as_str())
    }

    /// This tokenizer with `code` as source language: [`encode`](Self::encode) and
    /// [`encode_batch`](Self::encode_batch) then add the special tokens `transformers` adds
    /// after `tokenizer.src_lang = code` (mBART `X </s> en_XX`, mBART-50 `en_XX X </s>`,
    /// NLLB `eng_Latn X </s>` (`X </s> eng_Latn` with `legacy_behaviour`), M2M100
    /// `__en__ X </s>`). An unknown code is an error listing the valid ones.
    pub fn with_src_lang(&self, code: &str) -> Result<AutoTokenizer> {
        let mut tok = self.clone();
        tok.set_src_lang(code)?;
        Ok(tok)
    }

    /// Sets the source language in place (see [`with_src_lang`](Self::with_src_lang)).
    pub fn set_src_lang(&mut self, code: &str) -> Result<()> {
        let Some(languages) = self.languages.as_mut() else {
            return Err(Error::Invalid(format!(
                "cannot set the source language `{code}`: this tokenizer has no language codes"
            )));
        };
        let post = languages.template(code)?;
        languages.current = code.to_string();
        self.tokenizer.with_post_processor(Some(post));
        self.truncating
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        Ok(())
    }

    /// Marian's target side: `target.spm` with the shared `vocab.json`, which encodes target
    /// texts (`tokenizer(text_target=...)`) and decodes generated ids as
    /// `MarianTokenizer.decode` does. `None` for tokenizers with one side.
    pub fn target_tokenizer(&self) -> Option<&AutoTokenizer> {
        self.target.as_deref()
    }

    // ----- special tokens and settings -----

    fn special(&self, name: &str) -> Option<&str> {
        self.special.get(name).and_then(|t| t.as_deref())
    }

    fn special_id(&self, name: &str) -> Option<u32> {
        self.special(name).and_then(|t| self.token_to_id(t))
    }

    /// The padding token (`[PAD]`, `<pad>`), if the tokenizer has one.
    pub fn pad_token(&self) -> Option<&str> {
        self.special("pad")
    }
    /// The id of the padding token.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.special_id("pad")
    }
    /// The mask token of masked language models (`[MASK]`, `<mask>`).
    pub fn mask_token(&self) -> Option<&str> {
        self.special("mask")
    }
    /// The id of the mask token.
    pub fn mask_token_id(&self) -> Option<u32> {
        self.special_id("mask")
    }
    /// The classifier token that starts a sequence (`[CLS]`, `<s>`).
    pub fn cls_token(&self) -> Option<&str> {
        self.special("cls")
    }
    /// The id of the classifier token.
    pub fn cls_token_id(&self) -> Option<u32> {
        self.special_id("cls")
    }
    /// The separator token (`[SEP]`, `</s>`).
    pub fn sep_token(&self) -> Option<&str> {
        self.special("sep")
    }
    /// The id of the separator token.
    pub fn sep_token_id(&self) -> Option<u32> {
        self.special_id("sep")
    }
    /// The unknown token (`[UNK]`, `<unk>`).
    pub fn unk_token(&self) -> Option<&str> {
        self.special("unk")
    }
    /// The id of the unknown token.
    pub fn unk_token_id(&self) -> Option<u32> {
        self.special_id("unk")
    }
    /// The beginning-of-sequence token (`<s>`; none for BERT).
    pub fn bos_token(&self) -> Option<&str> {
        self.special("bos")
    }
    /// The id of the beginning-of-sequence token.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.special_id("bos")
    }
    /// The end-of-sequence token (`</s>`; none for BERT).
    pub fn eos_token(&self) -> Option<&str> {
        self.special("eos")
    }
    /// The id of the end-of-sequence token.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.special_id("eos")
    }

    /// All special tokens (bos, eos, unk, sep, pad, cls, mask, then additional ones), without
    /// repeats — `transformers`' `all_special_tokens`.
    pub fn all_special_tokens(&self) -> &[String] {
        &self.all_special
    }

    /// The ids of [`all_special_tokens`](Self::all_special_tokens), in the same order.
    pub fn all_special_ids(&self) -> Vec<u32> {
        self.all_special
            .iter()
            .filter_map(|t| self.token_to_id(t).or_else(|| self.unk_token_id()))
            .collect()
    }

    /// How many special tokens encoding adds to one text (`pair == false`) or a pair.
    pub fn num_special_tokens_to_add(&self, pair: bool) -> usize {
        use tokenizers::PostProcessor;
        self.tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    /// The longest input the model accepts (`model_max_length` of tokenizer_config.json);
    /// `None` when unlimited or unknown.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// Size of the base vocabulary, without added tokens (`tokenizer.vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(false)
    }

    /// Size of the vocabulary with added tokens (`len(tokenizer)`).
    pub fn vocab_size_with_added_tokens(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Which side padding goes on (tokenizer_config.json `padding_side`; right by default).
    pub fn padding_side(&self) -> Side {
        self.padding_side
    }

    /// Sets the padding side (left padding for batched generation with decoder-only models).
    pub fn set_padding_side(&mut self, side: Side) {
        self.padding_side = side;
    }

    /// Which side truncation removes tokens from (`truncation_side`; right by default).
    pub fn truncation_side(&self) -> Side {
        self.truncation_side
    }

    /// Sets the truncation side.
    pub fn set_truncation_side(&mut self, side: Side) {
        self.truncation_side = side;
    }

    /// Whether [`decode`](Self::decode) cleans up spaces before punctuation and contractions.
    pub fn clean_up_tokenization_spaces(&self) -> bool {
        self.clean_up_tokenization_spaces
    }

    /// Where the tokenizer was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer (without truncation or padding configured).
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("hello , world ! it 's I 'm do n't ."),
            "hello, world! it's I'm don't."
        );
    }
}
