//! Loading pretrained tokenizers (`AutoTokenizer`) and encoding text the way `transformers`'
//! fast tokenizers do.
//!
//! A checkpoint directory holds either a serialized `tokenizer.json`, or the vocabulary files
//! of a "slow" tokenizer (`vocab.txt` for BERT's WordPiece, `vocab.json` + `merges.txt` for
//! byte-level BPE), next to `tokenizer_config.json` and `special_tokens_map.json`.
//! [`AutoTokenizer`] loads any of these into a [`tokenizers::Tokenizer`], then applies the same
//! corrections `transformers`' `PreTrainedTokenizerFast` applies on load (special tokens from
//! the configs added to the vocabulary, `do_lower_case` and `add_prefix_space` from the config
//! overriding the serialized pipeline), so ids, offsets and decoded text match Python.
//!
//! Encoding follows `transformers`' `tokenizer(...)` call: truncation (with stride and
//! overflowing windows), padding across the whole batch, and **character** offsets (as Python
//! reports them), never byte offsets.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
// Both models take an `ahash` map; the BPE alias names it without a direct `ahash` dependency.
use tokenizers::models::bpe::{Vocab as TokenMap, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, EncodeInput, NormalizerWrapper, PaddingDirection, PaddingParams,
    PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TruncationDirection, TruncationParams,
};

use crate::error::{Error, Result};
use crate::models::hub;

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
    fn parse(s: &str) -> Option<Side> {
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
    fn from_hf(e: tokenizers::Encoding, sample: usize) -> Self {
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

/// The `transformers` tokenizer class a checkpoint asks for, as far as it changes loading:
/// class defaults for special tokens and the corrections their `__init__` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// BertTokenizerFast and the classes that copy it (DistilBERT, ELECTRA, ...).
    Bert,
    /// RobertaTokenizerFast and the classes that copy it (BART, Longformer, ...).
    Roberta,
    /// GPT2TokenizerFast.
    Gpt2,
    /// Anything else (`PreTrainedTokenizerFast`): no class defaults.
    Other,
}

impl Family {
    fn from_class(class: &str) -> Family {
        let class = class.strip_suffix("Fast").unwrap_or(class);
        match class {
            "BertTokenizer"
            | "DistilBertTokenizer"
            | "ElectraTokenizer"
            | "MobileBertTokenizer"
            | "ConvBertTokenizer"
            | "SqueezeBertTokenizer"
            | "LayoutLMTokenizer"
            | "LxmertTokenizer"
            | "RetriBertTokenizer" => Family::Bert,
            "RobertaTokenizer"
            | "LongformerTokenizer"
            | "BartTokenizer"
            | "LEDTokenizer"
            | "MvpTokenizer" => Family::Roberta,
            "GPT2Tokenizer" => Family::Gpt2,
            _ => Family::Other,
        }
    }

    fn from_model_type(model_type: &str) -> Family {
        match model_type {
            "bert" | "distilbert" | "electra" | "mobilebert" | "convbert" | "squeezebert"
            | "layoutlm" | "lxmert" | "retribert" => Family::Bert,
            "roberta" | "longformer" | "bart" | "led" | "mvp" => Family::Roberta,
            "gpt2" => Family::Gpt2,
            _ => Family::Other,
        }
    }

    /// The class's default special tokens (`__init__` keyword defaults).
    fn default_token(self, name: &str) -> Option<TokenSpec> {
        let s = match (self, name) {
            (Family::Bert, "unk") => "[UNK]",
            (Family::Bert, "sep") => "[SEP]",
            (Family::Bert, "pad") => "[PAD]",
            (Family::Bert, "cls") => "[CLS]",
            (Family::Bert, "mask") => "[MASK]",
            (Family::Roberta, "bos" | "cls") => "<s>",
            (Family::Roberta, "eos" | "sep") => "</s>",
            (Family::Roberta, "unk") => "<unk>",
            (Family::Roberta, "pad") => "<pad>",
            (Family::Roberta, "mask") => "<mask>",
            (Family::Gpt2, "unk" | "bos" | "eos") => "<|endoftext|>",
            _ => return None,
        };
        Some(TokenSpec::plain(s))
    }
}

/// The names of `transformers`' special-token attributes (`SPECIAL_TOKENS_ATTRIBUTES` order,
/// which is also the order of `all_special_ids`), without the `_token` suffix.
const SPECIAL_NAMES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// A token as `transformers` holds it: a plain string, or an `AddedToken` with flags. Plain
/// strings and `AddedToken`s compare differently in `PreTrainedTokenizerFast.__init__`, which
/// decides what gets added to the vocabulary, so the distinction is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenSpec {
    content: String,
    /// `None` for a plain string.
    flags: Option<TokenFlags>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenFlags {
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    /// `None` when not given: `tokenizers` then uses `!special` at the time of use.
    normalized: Option<bool>,
    special: bool,
}

impl TokenSpec {
    fn plain(content: &str) -> Self {
        Self {
            content: content.to_string(),
            flags: None,
        }
    }

    /// Parses `"[CLS]"` or `{"content": "[CLS]", "lstrip": false, ...}` (with or without
    /// `"__type": "AddedToken"`). `None` for JSON null.
    fn parse(v: &Value, path: &Path, key: &str) -> Result<Option<Self>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Self::plain(s))),
            Value::Object(o) => {
                let content = o.get("content").and_then(Value::as_str).ok_or_else(|| {
                    Error::file(
                        path,
                        format!("`{key}`: token object without a string `content`"),
                    )
                })?;
                let flag = |k: &str| o.get(k).and_then(Value::as_bool);
                Ok(Some(Self {
                    content: content.to_string(),
                    flags: Some(TokenFlags {
                        single_word: flag("single_word").unwrap_or(false),
                        lstrip: flag("lstrip").unwrap_or(false),
                        rstrip: flag("rstrip").unwrap_or(false),
                        normalized: flag("normalized"),
                        special: flag("special").unwrap_or(false),
                    }),
                }))
            }
            other => Err(Error::file(
                path,
                format!("`{key}`: expected a token string or object, found {other}"),
            )),
        }
    }

    fn with_special(mut self, special: bool) -> Self {
        if let Some(f) = self.flags.as_mut() {
            f.special = special;
        }
        self
    }

    /// The `tokenizers` token this stands for (a plain string becomes `AddedToken(s,
    /// special=special)`).
    fn added_token(&self, special_if_plain: bool) -> AddedToken {
        match self.flags {
            None => AddedToken::from(self.content.clone(), special_if_plain),
            Some(f) => {
                let t = AddedToken::from(self.content.clone(), f.special)
                    .single_word(f.single_word)
                    .lstrip(f.lstrip)
                    .rstrip(f.rstrip);
                match f.normalized {
                    Some(n) => t.normalized(n),
                    None => t,
                }
            }
        }
    }
}

/// Reads an optional JSON file: `Ok(None)` when absent, an error naming the file when it
/// cannot be read or parsed.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// The configuration files of a tokenizer directory, merged the way `transformers`'
/// `from_pretrained` merges them.
struct TokenizerFiles {
    dir: PathBuf,
    config_path: PathBuf,
    /// `tokenizer_config.json` (an empty object when absent).
    config: serde_json::Map<String, Value>,
    family: Family,
    /// Special tokens by name (see [`SPECIAL_NAMES`]): absent where the files do not mention
    /// them (until [`Self::set_family`] fills class defaults), `None` where set to null.
    special: HashMap<&'static str, Option<TokenSpec>>,
    additional_special: Vec<TokenSpec>,
    /// `added_tokens_decoder` (or its legacy sources), by id.
    added_tokens: Vec<(u32, TokenSpec)>,
}

impl TokenizerFiles {
    /// Reads the configuration files of `dir`; the family is the configured class's, and its
    /// defaults are not applied yet.
    fn read(dir: &Path, tokenizer_json: Option<&Value>) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config = match read_json(&config_path)? {
            None => serde_json::Map::new(),
            Some(Value::Object(o)) => o,
            Some(_) => return Err(Error::file(&config_path, "expected a JSON object")),
        };
        let family = match config.get("tokenizer_class").and_then(Value::as_str) {
            Some(class) => Family::from_class(class),
            None => {
                // AutoTokenizer falls back to the model type of config.json.
                let model_type = read_json(&dir.join("config.json"))?.and_then(|c| {
                    c.get("model_type")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                model_type.map_or(Family::Other, |m| Family::from_model_type(&m))
            }
        };
        let mut files = Self {
            dir: dir.to_path_buf(),
            config_path,
            config,
            family,
            special: HashMap::new(),
            additional_special: Vec::new(),
            added_tokens: Vec::new(),
        };
        files.read_special_tokens(tokenizer_json)?;
        Ok(files)
    }

    fn read_special_tokens(&mut self, tokenizer_json: Option<&Value>) -> Result<()> {
        let cfg_path = self.config_path.clone();
        let mut special: HashMap<&'static str, Option<TokenSpec>> = HashMap::new();
        for name in SPECIAL_NAMES {
            let key = format!("{name}_token");
            if let Some(v) = self.config.get(&key) {
                special.insert(name, TokenSpec::parse(v, &cfg_path, &key)?);
            }
        }
        let mut additional = match self.config.get("additional_special_tokens") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| TokenSpec::parse(v, &cfg_path, "additional_special_tokens"))
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };

        if let Some(decoder) = self.config.get("added_tokens_decoder") {
            let Value::Object(map) = decoder else {
                return Err(Error::file(
                    &cfg_path,
                    "`added_tokens_decoder` is not an object",
                ));
            };
            for (id, tok) in map {
                let id: u32 = id.parse().map_err(|_| {
                    Error::file(&cfg_path, format!("`added_tokens_decoder`: bad id `{id}`"))
                })?;
                if let Some(t) = TokenSpec::parse(tok, &cfg_path, "added_tokens_decoder")? {
                    self.added_tokens.push((id, t));
                }
            }
        } else {
            // Legacy layout (no `added_tokens_decoder`): special_tokens_map.json overrides
            // the config's special tokens, added_tokens.json and tokenizer.json's
            // `added_tokens` list the added tokens.
            let map_path = self.dir.join("special_tokens_map.json");
            if let Some(Value::Object(map)) = read_json(&map_path)? {
                for name in SPECIAL_NAMES {
                    let key = format!("{name}_token");
                    if let Some(v) = map.get(&key) {
                        let t = TokenSpec::parse(v, &map_path, &key)?.map(|t| t.with_special(true));
                        special.insert(name, t);
                    }
                }
                if let Some(Value::Array(a)) = map.get("additional_special_tokens") {
                    additional = a
                        .iter()
                        .map(|v| TokenSpec::parse(v, &map_path, "additional_special_tokens"))
                        .filter_map(Result::transpose)
                        .map(|t| t.map(|t| t.with_special(true)))
                        .collect::<Result<Vec<_>>>()?;
                }
            }
            let specials: HashSet<String> = special
                .values()
                .flatten()
                .chain(&additional)
                .map(|t| t.content.clone())
                .collect();
            let added_path = self.dir.join("added_tokens.json");
            if let Some(v) = read_json(&added_path)? {
                let Value::Object(map) = v else {
                    return Err(Error::file(&added_path, "expected an object {token: id}"));
                };
                for (content, id) in map {
                    let id = id.as_u64().ok_or_else(|| {
                        Error::file(&added_path, format!("`{content}`: id is not an integer"))
                    })?;
                    let is_special = specials.contains(&content);
                    self.added_tokens.push((
                        id as u32,
                        TokenSpec {
                            content,
                            flags: Some(TokenFlags {
                                single_word: false,
                                lstrip: false,
                                rstrip: false,
                                normalized: Some(!is_special),
                                special: is_special,
                            }),
                        },
                    ));
                }
            }
            if let Some(Value::Array(list)) = tokenizer_json.and_then(|t| t.get("added_tokens")) {
                for t in list {
                    let id = t.get("id").and_then(Value::as_u64);
                    if let (Some(id), Some(spec)) = (
                        id,
                        TokenSpec::parse(t, &cfg_path, "tokenizer.json added_tokens")?,
                    ) {
                        self.added_tokens.push((id as u32, spec));
                    }
                }
            }
        }
        // Later entries for the same id replace earlier ones (a Python dict by id).
        let mut by_id: Vec<(u32, TokenSpec)> = Vec::new();
        for (id, t) in std::mem::take(&mut self.added_tokens) {
            by_id.retain(|(i, _)| *i != id);
            by_id.push((id, t));
        }
        by_id.sort_by_key(|(id, _)| *id);
        self.added_tokens = by_id;
        self.special = special;
        self.additional_special = additional;
        Ok(())
    }

    /// Settles the tokenizer class: its `__init__` defaults fill the special tokens the files
    /// do not mention at all (an explicit null stays unset).
    fn set_family(&mut self, family: Family) {
        self.family = family;
        for name in SPECIAL_NAMES {
            self.special
                .entry(name)
                .or_insert_with(|| family.default_token(name));
        }
        // RobertaTokenizerFast makes a plain-string mask token an AddedToken that swallows the
        // space before it.
        if family == Family::Roberta {
            if let Some(Some(t)) = self.special.get_mut("mask") {
                if t.flags.is_none() {
                    t.flags = Some(TokenFlags {
                        single_word: false,
                        lstrip: true,
                        rstrip: false,
                        normalized: Some(false),
                        special: false,
                    });
                }
            }
        }
    }

    fn token(&self, name: &str) -> Option<&TokenSpec> {
        self.special.get(name).and_then(Option::as_ref)
    }

    fn bool(&self, key: &str) -> Option<bool> {
        self.config.get(key).and_then(Value::as_bool)
    }

    /// `all_special_tokens_extended`: named tokens in attribute order, then the additional
    /// ones, without repeated contents.
    fn all_special(&self) -> Vec<TokenSpec> {
        let mut seen = HashSet::new();
        SPECIAL_NAMES
            .iter()
            .filter_map(|n| self.token(n))
            .chain(&self.additional_special)
            .filter(|t| seen.insert(t.content.clone()))
            .cloned()
            .collect()
    }
}

/// Cache key of a tokenizer configured for one truncation setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TruncationKey {
    max_length: usize,
    stride: usize,
    strategy: TruncationStrategy,
    side: Side,
}

/// How many truncation settings keep a configured tokenizer around (pipelines use one or two).
const TRUNCATION_CACHE: usize = 4;

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

/// Values above this mean "no maximum length" (`transformers`' `LARGE_INTEGER`; the sentinel
/// it writes for unlimited models is `VERY_LARGE_INTEGER` = 1e30).
const LARGE_INTEGER: f64 = 1e20;

impl AutoTokenizer {
    /// Loads the tokenizer of `model`: a local directory, a `tokenizer.json` file, or a hub id
    /// `org/name[@revision]` found in the local hub cache (see [`hub::resolve`]).
    pub fn from_pretrained(model: &str) -> Result<Self> {
        let path = hub::resolve(model)?;
        if path.is_file() {
            Self::from_file(&path)
        } else {
            Self::from_dir(&path)
        }
    }

    /// Loads the tokenizer in `dir`: `tokenizer.json` if present, else a WordPiece tokenizer
    /// built from `vocab.txt`, else a byte-level BPE tokenizer built from `vocab.json` +
    /// `merges.txt`; with `tokenizer_config.json`, `special_tokens_map.json` and
    /// `added_tokens.json` applied.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::file(dir, "not a directory"));
        }
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(&json);
        }
        let mut files = TokenizerFiles::read(dir, None)?;
        let vocab_txt = dir.join("vocab.txt");
        let vocab_json = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        let tokenizer = if vocab_txt.is_file() {
            files.set_family(match files.family {
                Family::Other => Family::Bert,
                f => f,
            });
            wordpiece_from_vocab(&vocab_txt, &files)?
        } else if vocab_json.is_file() {
            if !merges.is_file() {
                return Err(Error::file(
                    dir,
                    format!(
                        "has vocab.json but no merges.txt (looked for {})",
                        merges.display()
                    ),
                ));
            }
            let family = match files.family {
                Family::Other if looks_like_roberta(&files, &vocab_json)? => Family::Roberta,
                Family::Other => Family::Gpt2,
                f => f,
            };
            files.set_family(family);
            bpe_from_vocab(&vocab_json, &merges, &files)?
        } else {
            return Err(Error::file(
                dir,
                "no tokenizer files in this directory: looked for tokenizer.json, vocab.txt \
                 (WordPiece), and vocab.json + merges.txt (byte-level BPE)",
            ));
        };
        // A slow tokenizer converted to a fast one carries the slow class's defaults, and
        // BertTokenizer (unlike BertTokenizerFast) defaults `clean_up_tokenization_spaces`
        // to true.
        let clean_up_default = files.family == Family::Bert;
        Self::finish(tokenizer, files, None, true, clean_up_default)
    }

    /// Loads a serialized `tokenizer.json`, with the configuration files next to it.
    fn from_file(path: &Path) -> Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("invalid tokenizer JSON: {e}")))?;
        let tokenizer: Tokenizer = text
            .parse()
            .map_err(|e| Error::file(path, format!("invalid tokenizer: {e}")))?;
        let mut files = TokenizerFiles::read(dir, Some(&value))?;
        files.set_family(files.family);
        Self::finish(tokenizer, files, Some(&value), false, false)
    }

    /// What `PreTrainedTokenizerFast.__init__` (and the family's `__init__`) do after the
    /// backend exists. `converted`: the backend was built from vocabulary files and already
    /// holds the configured tokens.
    fn finish(
        mut tokenizer: Tokenizer,
        files: TokenizerFiles,
        tokenizer_json: Option<&Value>,
        converted: bool,
        clean_up_default: bool,
    ) -> Result<Self> {
        let cfg = &files.config_path;
        // Truncation and padding saved in tokenizer.json only provide defaults for the
        // sides; every call sets its own.
        let saved_side = |section: &str| {
            tokenizer_json
                .and_then(|t| t.get(section))
                .and_then(|s| s.get("direction"))
                .and_then(Value::as_str)
                .and_then(Side::parse)
        };
        let side = |key: &str, saved: Option<Side>| -> Result<Side> {
            match files.config.get(key).and_then(Value::as_str) {
                Some(s) => Side::parse(s).ok_or_else(|| {
                    Error::file(
                        cfg,
                        format!("`{key}` must be \"left\" or \"right\", got {s:?}"),
                    )
                }),
                None => Ok(saved.unwrap_or_default()),
            }
        };
        let padding_side = side("padding_side", saved_side("padding"))?;
        let truncation_side = side("truncation_side", saved_side("truncation"))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Invalid(e.to_string()))?;

        if !converted {
            add_config_tokens(&mut tokenizer, &files);
        }

        let add_prefix_space = files.bool("add_prefix_space").unwrap_or(false);
        // Every fast tokenizer: the config's add_prefix_space wins over the pre-tokenizer's.
        if let Some(pre) = tokenizer.get_pre_tokenizer() {
            let mut state = serde_json::to_value(pre).map_err(|e| Error::file(cfg, e))?;
            if let Some(v) = state.get_mut("add_prefix_space") {
                if v.as_bool() != Some(add_prefix_space) {
                    *v = Value::Bool(add_prefix_space);
                    let pre: PreTokenizerWrapper =
                        serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                    tokenizer.with_pre_tokenizer(Some(pre));
                }
            }
        }
        match files.family {
            // BertTokenizerFast: do_lower_case / strip_accents / tokenize_chinese_chars of the
            // config win over the serialized normalizer.
            Family::Bert => {
                if let Some(norm) = tokenizer.get_normalizer() {
                    let mut state = serde_json::to_value(norm).map_err(|e| Error::file(cfg, e))?;
                    let want = [
                        (
                            "lowercase",
                            Value::Bool(files.bool("do_lower_case").unwrap_or(true)),
                        ),
                        (
                            "strip_accents",
                            files
                                .config
                                .get("strip_accents")
                                .cloned()
                                .unwrap_or(Value::Null),
                        ),
                        (
                            "handle_chinese_chars",
                            Value::Bool(files.bool("tokenize_chinese_chars").unwrap_or(true)),
                        ),
                    ];
                    let differs = want
                        .iter()
                        .any(|(k, v)| state.get(*k).is_some_and(|cur| cur != v));
                    if differs {
                        for (k, v) in want {
                            state[k] = v;
                        }
                        let norm: NormalizerWrapper =
                            serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                        tokenizer.with_normalizer(Some(norm));
                    }
                }
            }
            // RobertaTokenizerFast: the config's add_prefix_space / trim_offsets win over the
            // post-processor's.
            Family::Roberta => {
                if let Some(post) = tokenizer.get_post_processor() {
                    let mut state = serde_json::to_value(post).map_err(|e| Error::file(cfg, e))?;
                    let trim_offsets = files.bool("trim_offsets").unwrap_or(true);
                    let mut changed = false;
                    for (k, want) in [
                        ("add_prefix_space", add_prefix_space),
                        ("trim_offsets", trim_offsets),
                    ] {
                        if let Some(v) = state.get_mut(k) {
                            if v.as_bool() != Some(want) {
                                *v = Value::Bool(want);
                                changed = true;
                            }
                        }
                    }
                    if changed {
                        let post: PostProcessorWrapper =
                            serde_json::from_value(state).map_err(|e| Error::file(cfg, e))?;
                        tokenizer.with_post_processor(Some(post));
                    }
                }
            }
            _ => {}
        }

        let model_max_length = match files
            .config
            .get("model_max_length")
            .or_else(|| files.config.get("max_len"))
        {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(x) if x > LARGE_INTEGER => None,
                Some(x) if x >= 0.0 && x.fract() == 0.0 => Some(x as usize),
                _ => {
                    return Err(Error::file(
                        cfg,
                        format!("`model_max_length` must be a non-negative integer, got {v}"),
                    ))
                }
            },
        };
        let clean_up_tokenization_spaces = files
            .bool("clean_up_tokenization_spaces")
            .unwrap_or(clean_up_default);
        let special = SPECIAL_NAMES
            .iter()
            .map(|n| (*n, files.token(n).map(|t| t.content.clone())))
            .collect();
        let all_special = files.all_special().into_iter().map(|t| t.content).collect();
        Ok(Self {
            tokenizer,
            source: files.dir,
            special,
            all_special,
            model_max_length,
            padding_side,
            truncation_side,
            clean_up_tokenization_spaces,
            truncating: Mutex::new(Vec::new()),
        })
    }

    // ----- encoding -----

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
        self.run(inputs, opts, false)
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
        self.run(inputs, opts, true)
    }

    /// `transformers`' `_batch_encode_plus`: settle strategies and lengths, encode the batch
    /// with character offsets, pad, then flatten each input's overflow windows after it.
    fn run(
        &self,
        inputs: Vec<EncodeInput<'_>>,
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
            encodings.push(Encoding::from_hf(e, sample));
            if opts.return_overflowing_tokens {
                encodings.extend(overflow.into_iter().map(|o| Encoding::from_hf(o, sample)));
            }
        }
        Ok(BatchEncoding { encodings })
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

    // ----- decoding -----

    /// Turns ids back into text, optionally without special tokens, then applies
    /// `transformers`' `clean_up_tokenization` (" ." → ".", " n't" → "n't", ...) when the
    /// tokenizer config asks for it. Unknown ids are skipped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Invalid(format!("decoding failed: {e}")))?;
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
        self.tokenizer.id_to_token(id)
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

/// The added-token step of `PreTrainedTokenizerFast.__init__`: tokens of
/// `added_tokens_decoder` the backend lacks (same content and flags), then special tokens the
/// vocabulary of added tokens does not hold yet, are added in that order.
fn add_config_tokens(tokenizer: &mut Tokenizer, files: &TokenizerFiles) {
    let backend: Vec<AddedToken> = tokenizer.get_added_tokens_decoder().into_values().collect();
    let special_contents: HashSet<String> =
        files.all_special().into_iter().map(|t| t.content).collect();
    let mut to_add: Vec<TokenSpec> = files
        .added_tokens
        .iter()
        .map(|(_, t)| t.clone())
        .filter(|t| !backend.contains(&t.added_token(false)))
        .collect();
    let mut encoder: HashSet<String> = backend.iter().map(|t| t.content.clone()).collect();
    encoder.extend(to_add.iter().map(|t| t.content.clone()));
    let mut extra = Vec::new();
    for t in files.all_special() {
        // A plain string is skipped when its content is known; an AddedToken (which never
        // equals a string in Python) only when an identical token is already queued.
        let known = match t.flags {
            None => encoder.contains(&t.content),
            Some(_) => to_add
                .iter()
                .any(|q| q.added_token(false) == t.added_token(false)),
        };
        if !known {
            extra.push(t);
        }
    }
    to_add.extend(extra);
    if to_add.is_empty() {
        return;
    }
    let tokens: Vec<AddedToken> = to_add
        .into_iter()
        .map(|t| {
            let special =
                t.flags.is_some_and(|f| f.special) || special_contents.contains(&t.content);
            t.with_special(special).added_token(special)
        })
        .collect();
    tokenizer.add_tokens(&tokens);
}

/// Whether a byte-level BPE directory without a known class is RoBERTa-style: its special
/// tokens (configured, else found in the vocabulary) are `<s>` / `</s>`.
fn looks_like_roberta(files: &TokenizerFiles, vocab_json: &Path) -> Result<bool> {
    let content = |n: &str| files.token(n).map(|t| t.content.as_str());
    if content("cls").or(content("bos")).is_some() || content("sep").or(content("eos")).is_some() {
        return Ok(content("cls").or(content("bos")) == Some("<s>")
            && content("sep").or(content("eos")) == Some("</s>"));
    }
    let vocab = read_bpe_vocab(vocab_json)?;
    Ok(vocab.contains_key("<s>") && vocab.contains_key("</s>"))
}

/// `vocab.txt`: one token per line, the line number is the id (a repeated token keeps its
/// last line, as `BertTokenizer.load_vocab` does).
fn read_wordpiece_vocab(path: &Path) -> Result<Vec<(String, u32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    // Only "\n" ends a line (Python strips just that), so "\r" stays part of a token.
    Ok(text
        .split_terminator('\n')
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect())
}

/// `convert_slow_tokenizer.BertConverter`.
fn wordpiece_from_vocab(vocab_txt: &Path, files: &TokenizerFiles) -> Result<Tokenizer> {
    let vocab: HashMap<String, u32> = read_wordpiece_vocab(vocab_txt)?.into_iter().collect();
    let unk = files.token("unk").map_or("[UNK]", |t| t.content.as_str());
    let model = WordPiece::builder()
        .vocab(vocab.into_iter().collect::<TokenMap>())
        .unk_token(unk.to_string())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| Error::file(vocab_txt, e))?;
    let mut tokenizer = Tokenizer::new(model);
    let strip_accents = match files.config.get("strip_accents") {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    tokenizer.with_normalizer(Some(BertNormalizer::new(
        true,
        files.bool("tokenize_chinese_chars").unwrap_or(true),
        strip_accents,
        files.bool("do_lower_case").unwrap_or(true),
    )));
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_decoder(Some(DecoderWrapper::from(WordPieceDecoder::new(
        "##".into(),
        true,
    ))));
    // The template needs the ids of [CLS]/[SEP] as the finished vocabulary has them, so it
    // is built after the configured tokens are added (see `finish`); add them here first.
    add_config_tokens(&mut tokenizer, files);
    let cls = special_with_id(&tokenizer, files, "cls", vocab_txt)?;
    let sep = special_with_id(&tokenizer, files, "sep", vocab_txt)?;
    let template = template(
        format!("{}:0 $A:0 {}:0", cls.0, sep.0),
        format!("{}:0 $A:0 {}:0 $B:1 {}:1", cls.0, sep.0, sep.0),
        vec![cls, sep],
    )
    .map_err(|e| Error::file(vocab_txt, format!("cannot build the BERT template: {e}")))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// A template post-processor from `transformers`' template strings (`"[CLS]:0 $A:0 [SEP]:0"`).
fn template(
    single: String,
    pair: String,
    special_tokens: Vec<(String, u32)>,
) -> std::result::Result<TemplateProcessing, String> {
    TemplateProcessing::builder()
        .try_single(single)?
        .try_pair(pair)?
        .special_tokens(special_tokens)
        .build()
        .map_err(|e| e.to_string())
}

/// The content and id of a special token the template needs.
fn special_with_id(
    tokenizer: &Tokenizer,
    files: &TokenizerFiles,
    name: &str,
    vocab: &Path,
) -> Result<(String, u32)> {
    let t = files.token(name).ok_or_else(|| {
        Error::file(
            &files.config_path,
            format!("no `{name}_token` configured; it is needed to build the tokenizer"),
        )
    })?;
    let id = tokenizer.token_to_id(&t.content).ok_or_else(|| {
        Error::file(
            vocab,
            format!("the {name} token `{}` is not in the vocabulary", t.content),
        )
    })?;
    Ok((t.content.clone(), id))
}

/// `vocab.json`: `{token: id}`.
fn read_bpe_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid vocabulary: {e}")))
}

/// `merges.txt` as the slow GPT-2/RoBERTa tokenizers read it: the first line (`#version`) and
/// the last (empty after the final newline) are dropped, each other line is a pair.
fn read_merges(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let lines: Vec<&str> = text.split('\n').collect();
    let body = if lines.len() >= 2 {
        &lines[1..lines.len() - 1]
    } else {
        &[][..]
    };
    let mut seen = HashSet::new();
    let mut merges = Vec::with_capacity(body.len());
    for (i, line) in body.iter().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [a, b] = parts[..] else {
            return Err(Error::file(
                path,
                format!("line {}: expected two tokens, found {line:?}", i + 2),
            ));
        };
        // A repeated merge keeps its first rank (`dict(zip(merges, range(...)))` keys).
        if seen.insert((a, b)) {
            merges.push((a.to_string(), b.to_string()));
        }
    }
    Ok(merges)
}

/// `convert_slow_tokenizer.RobertaConverter` / `GPT2Converter`.
fn bpe_from_vocab(
    vocab_json: &Path,
    merges_txt: &Path,
    files: &TokenizerFiles,
) -> Result<Tokenizer> {
    let vocab = read_bpe_vocab(vocab_json)?;
    let merges = read_merges(merges_txt)?;
    let model = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<TokenMap>(), merges)
        .build()
        .map_err(|e| {
            Error::file(
                merges_txt,
                format!("cannot build BPE from {}: {e}", vocab_json.display()),
            )
        })?;
    let add_prefix_space = files.bool("add_prefix_space").unwrap_or(false);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(
        ByteLevel::default().add_prefix_space(add_prefix_space),
    ));
    tokenizer.with_decoder(Some(DecoderWrapper::from(ByteLevelDecoder::default())));
    add_config_tokens(&mut tokenizer, files);
    let post: PostProcessorWrapper = if files.family == Family::Roberta {
        let cls = special_with_id(&tokenizer, files, "cls", vocab_json)?;
        let sep = special_with_id(&tokenizer, files, "sep", vocab_json)?;
        RobertaProcessing::new(sep, cls)
            .trim_offsets(true)
            .add_prefix_space(add_prefix_space)
            .into()
    } else if files.bool("add_bos_token").unwrap_or(false) {
        let bos = special_with_id(&tokenizer, files, "bos", vocab_json)?;
        template(
            format!("{}:0 $A:0", bos.0),
            format!("{}:0 $A:0 $B:1", bos.0),
            vec![bos],
        )
        .map_err(|e| Error::file(vocab_json, format!("cannot build the BOS template: {e}")))?
        .into()
    } else {
        // GPT-2 adds no special tokens; trim_offsets=false makes this a no-op, as in Python.
        ByteLevel::default().trim_offsets(false).into()
    };
    tokenizer.with_post_processor(Some(post));
    Ok(tokenizer)
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

    #[test]
    fn merges_skip_header_and_last_line() {
        let dir = std::env::temp_dir().join(format!("ferroformer-merges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("merges.txt");
        std::fs::write(&p, "#version: 0.2\na b\nab c\na b\n").unwrap();
        let m = read_merges(&p).unwrap();
        assert_eq!(m, vec![("a".into(), "b".into()), ("ab".into(), "c".into())]);
        std::fs::write(&p, "#version: 0.2\na b c\n").unwrap();
        let err = read_merges(&p).unwrap_err().to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 2"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
