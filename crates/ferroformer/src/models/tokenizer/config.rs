//! The configuration files of a tokenizer directory — `tokenizer_config.json`,
//! `special_tokens_map.json`, `added_tokens.json` (and the `added_tokens` of
//! `tokenizer.json`) — merged the way `transformers`' `from_pretrained` merges them: the
//! tokenizer class, its special tokens and the added tokens.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// The `transformers` tokenizer class a checkpoint asks for, as far as it changes loading:
/// class defaults for special tokens and the corrections their `__init__` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
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
pub(super) const SPECIAL_NAMES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// A token as `transformers` holds it: a plain string, or an `AddedToken` with flags. Plain
/// strings and `AddedToken`s compare differently in `PreTrainedTokenizerFast.__init__`, which
/// decides what gets added to the vocabulary, so the distinction is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenSpec {
    /// The token string.
    pub(super) content: String,
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

/// A token id read from a file: a JSON integer that fits in a `u32` (the ids of
/// `tokenizers`), else an error naming the file, where in it (`place`), the token and the
/// value found, never an id silently cut to 32 bits.
pub(super) fn token_id(path: &Path, place: &str, token: &str, id: &Value) -> Result<u32> {
    id.as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "{place}: token `{token}` has id {id}, which is not a token id (an integer \
                     from 0 to {})",
                    u32::MAX
                ),
            )
        })
}

/// What a JSON value is, for errors.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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
pub(super) struct TokenizerFiles {
    /// The directory the files are in.
    pub(super) dir: PathBuf,
    /// `tokenizer_config.json` (which may not exist), for errors.
    pub(super) config_path: PathBuf,
    /// `tokenizer_config.json` (an empty object when absent).
    pub(super) config: serde_json::Map<String, Value>,
    /// The tokenizer class, as far as it changes loading.
    pub(super) family: Family,
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
    pub(super) fn read(dir: &Path, tokenizer_json: Option<(&Path, &Value)>) -> Result<Self> {
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

    fn read_special_tokens(&mut self, tokenizer_json: Option<(&Path, &Value)>) -> Result<()> {
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
                    let content = tok.get("content").and_then(Value::as_str).or(tok.as_str());
                    Error::file(
                        &cfg_path,
                        format!(
                            "`added_tokens_decoder`: token `{}` has id `{id}`, which is not a \
                             token id (an integer from 0 to {})",
                            content.unwrap_or("<no content>"),
                            u32::MAX
                        ),
                    )
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
                    let id = token_id(&added_path, "added tokens", &content, &id)?;
                    let is_special = specials.contains(&content);
                    self.added_tokens.push((
                        id,
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
            let listed = tokenizer_json.and_then(|(path, t)| Some((path, t.get("added_tokens")?)));
            if let Some((json_path, Value::Array(list))) = listed {
                for t in list {
                    let (Some(id), Some(spec)) =
                        (t.get("id"), TokenSpec::parse(t, json_path, "added_tokens")?)
                    else {
                        continue;
                    };
                    let id = token_id(json_path, "`added_tokens`", &spec.content, id)?;
                    self.added_tokens.push((id, spec));
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

    /// Class defaults of a tokenizer class `Family` does not model (the SentencePiece
    /// sequence-to-sequence classes): `named` fills the special tokens the files do not
    /// mention at all, `additional` the additional special tokens when none are configured.
    /// Call before [`Self::set_family`].
    pub(super) fn class_defaults(
        &mut self,
        named: &[(&'static str, &str)],
        additional: Vec<String>,
    ) {
        for (name, content) in named {
            self.special
                .entry(name)
                .or_insert_with(|| Some(TokenSpec::plain(content)));
        }
        if self.additional_special.is_empty() {
            self.additional_special = additional.iter().map(|t| TokenSpec::plain(t)).collect();
        }
    }

    /// The additional special tokens' contents (`additional_special_tokens`).
    pub(super) fn additional_special_contents(&self) -> Vec<String> {
        self.additional_special
            .iter()
            .map(|t| t.content.clone())
            .collect()
    }

    /// Puts `first` before the other configured additional special tokens, as mBART's
    /// `__init__` puts its language codes first; a configured token keeps its flags.
    pub(super) fn prepend_additional(&mut self, first: &[&str]) {
        let mut rest = std::mem::take(&mut self.additional_special);
        let mut ordered = Vec::with_capacity(first.len() + rest.len());
        for t in first {
            match rest.iter().position(|r| r.content == *t) {
                Some(i) => ordered.push(rest.remove(i)),
                None => ordered.push(TokenSpec::plain(t)),
            }
        }
        ordered.extend(rest);
        self.additional_special = ordered;
    }

    /// A mask token given as a plain string becomes an `AddedToken` that swallows the space
    /// before it (`lstrip=True`), as mBART's and NLLB's `__init__` make it.
    pub(super) fn mask_lstrip(&mut self) {
        if let Some(Some(t)) = self.special.get_mut("mask") {
            if t.flags.is_none() {
                t.flags = Some(TokenFlags {
                    single_word: false,
                    lstrip: true,
                    rstrip: false,
                    normalized: Some(true),
                    special: true,
                });
            }
        }
    }

    /// Settles the tokenizer class: its `__init__` defaults fill the special tokens the files
    /// do not mention at all (an explicit null stays unset).
    pub(super) fn set_family(&mut self, family: Family) {
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

    /// The special token `name` (`"cls"`, `"pad"`, ...), if set.
    pub(super) fn token(&self, name: &str) -> Option<&TokenSpec> {
        self.special.get(name).and_then(Option::as_ref)
    }

    /// A boolean setting of `tokenizer_config.json`.
    pub(super) fn bool(&self, key: &str) -> Option<bool> {
        self.config.get(key).and_then(Value::as_bool)
    }

    /// `all_special_tokens_extended`: named tokens in attribute order, then the additional
    /// ones, without repeated contents.
    pub(super) fn all_special(&self) -> Vec<TokenSpec> {
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

/// The added-token step of `PreTrainedTokenizerFast.__init__`: tokens of
/// `added_tokens_decoder` the backend lacks (same content and flags), then special tokens the
/// vocabulary of added tokens does not hold yet, are added in that order.
pub(super) fn add_config_tokens(tokenizer: &mut Tokenizer, files: &TokenizerFiles) {
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
