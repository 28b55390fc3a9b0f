//! The tokenizer a GGUF file describes in its metadata, rebuilt as a
//! [`tokenizers::Tokenizer`] that gives the same ids as llama.cpp.
//!
//! Supported:
//!
//! - `tokenizer.ggml.model = gpt2` (byte-level BPE) with the pre-tokenizer that
//!   `tokenizer.ggml.pre` names. llama.cpp applies a list of regular expressions one after
//!   the other, each splitting the pieces the previous one produced, and keeps the text
//!   between matches as pieces too; that is a sequence of `Split(regex, Isolated)`
//!   pre-tokenizers followed by the byte-level mapping. The regexes are llama.cpp's
//!   (`llama-vocab.cpp`): `gpt2`, `smollm` and the StarCoder family, `llama-bpe` (Llama 3,
//!   which also looks whole pieces up before merging) and `qwen2`.
//! - `tokenizer.ggml.model = llama` (SentencePiece BPE: Llama 2, Mistral, Gemma): llama.cpp
//!   merges the adjacent pair whose joined text is the highest-scoring token until none is
//!   left, and spells characters outside the vocabulary as `<0xXX>` byte tokens. That is a
//!   `tokenizers` BPE whose merges are ranked by the score of the token they make, as
//!   `transformers`' slow-to-fast conversion of a SentencePiece model generates them
//!   (`generate_merges`), with byte fallback; spaces become `▁`, and a `▁` goes in front of
//!   each piece of text when `tokenizer.ggml.add_space_prefix` says so (Llama 2, not Gemma).

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::NormalizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::gguf::GgufFile;
use crate::error::{Error, Result};

/// The `tokenizer.ggml.model` values this module rebuilds.
pub const SUPPORTED_TOKENIZER_MODELS: &[&str] = &["gpt2", "llama"];

/// Gemma 3's chat template as `google/gemma-3-*`'s `tokenizer_config.json` has it: a system
/// message goes in front of the first user turn, the assistant's role is `model`, and each
/// turn is `<start_of_turn>{role}\n{text}<end_of_turn>\n`. Used for a `gemma3` GGUF file
/// without `tokenizer.chat_template`.
pub const GEMMA3_CHAT_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

/// Texts llama.cpp treats as end of generation wherever they are in a vocabulary
/// (`llama_vocab::impl::load`'s EOG list, the ones a chat ends on).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// GPT-2's split: contractions, letters, digits, other symbols, whitespace.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's split (`LLAMA_VOCAB_PRE_TYPE_LLAMA3`): case-insensitive contractions, a letter
/// run with one leading non-letter, digits in groups of up to three, symbols with trailing
/// newlines, newline runs, whitespace.
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split (`LLAMA_VOCAB_PRE_TYPE_QWEN2`): Llama 3's with every digit on its own.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values whose words llama.cpp looks up whole before merging
/// (`ignore_merges`: a piece that is itself a token is that token); these are also the
/// ones for which llama.cpp adds BOS by default.
const IGNORE_MERGES: &[&str] = &["llama3", "llama-v3", "llama-bpe"];

/// `tokenizer.ggml.pre` values and the regexes llama.cpp splits with, in order.
const PRE_TOKENIZERS: &[(&[&str], &[&str])] = &[
    (&["llama3", "llama-v3", "llama-bpe"], &[LLAMA3_REGEX]),
    (&["qwen2", "deepseek-r1-qwen"], &[QWEN2_REGEX]),
    // GPT-2 alone.
    (
        &["gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "trillion"],
        &[GPT2_REGEX],
    ),
    // Every digit on its own, then GPT-2's split (StarCoder's tokenizer, SmolLM's).
    (
        &[
            "starcoder",
            "refact",
            "command-r",
            "smollm",
            "codeshell",
            "exaone",
            "minerva-7b",
        ],
        &[r"\p{N}", GPT2_REGEX],
    ),
];

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
mod token_type {
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
}

/// A tokenizer rebuilt from GGUF metadata, with its special token ids and chat template.
#[derive(Debug, Clone)]
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    eot_token_id: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
    /// Tokens whose text llama.cpp ends a generation on ([`EOG_TEXTS`]).
    eog_token_ids: Vec<u32>,
}

/// A token id entry, when present: an id beyond 32 bits is an error, never truncated.
fn optional_id(file: &GgufFile, key: &str) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(_) => {
            let id = file.usize_value(key)?;
            u32::try_from(id).map(Some).map_err(|_| {
                Error::file(
                    file.path(),
                    format!("metadata `{key}`: token id {id} does not fit in 32 bits"),
                )
            })
        }
    }
}

impl GgufTokenizer {
    /// Rebuilds the tokenizer described by `tokenizer.ggml.*` in `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let path = file.path();
        let err = |key: &str, what: String| Error::file(path, format!("metadata `{key}`: {what}"));
        let model = file.str_value("tokenizer.ggml.model")?;
        if !SUPPORTED_TOKENIZER_MODELS.contains(&model) {
            return Err(err(
                "tokenizer.ggml.model",
                format!(
                    "tokenizer `{model}` is not supported; supported: {}",
                    SUPPORTED_TOKENIZER_MODELS.join(", ")
                ),
            ));
        }
        let tokens = file.string_array("tokenizer.ggml.tokens")?;
        // Token ids are 32-bit.
        if u32::try_from(tokens.len()).is_err() {
            return Err(err(
                "tokenizer.ggml.tokens",
                format!("{} tokens; ids are 32-bit", tokens.len()),
            ));
        }
        let types: Vec<i32> = match file.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(_) => file
                .array("tokenizer.ggml.token_type")?
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::I32(t) => Ok(*t),
                    Value::U32(t) => Ok(*t as i32),
                    _ => Err(err(
                        "tokenizer.ggml.token_type",
                        format!("element {i} is not an integer"),
                    )),
                })
                .collect::<Result<_>>()?,
        };
        if types.len() != tokens.len() {
            return Err(err(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        // The first of duplicate strings keeps its id, as llama.cpp's text-to-token map does.
        let mut vocab = Vocab::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            // Below 2^32: the length was checked above.
            vocab.entry(t.to_string()).or_insert(id as u32);
        }
        let mut tokenizer = if model == "llama" {
            sentencepiece_tokenizer(file, &tokens, vocab)?
        } else {
            gpt2_tokenizer(file, vocab)?
        };

        // Control tokens (`<|im_start|>`) are matched in the text before anything else, as
        // llama.cpp does when asked to parse special tokens; user-defined ones as well.
        // llama.cpp recognizes Phi-3 by its `general.name` and strips the whitespace after
        // its special tokens (`LLAMA_TOKEN_ATTR_RSTRIP`), except after `<unk>`, `<s>` and
        // `<|endoftext|>`.
        let phi3 = matches!(file.get("general.name"), Some(Value::String(n))
            if { let n = n.to_lowercase(); n.contains("phi-3") || n.contains("phi3") });
        let rstrip = |s: &str| phi3 && !matches!(s, "<unk>" | "<s>" | "<|endoftext|>");
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(**t, token_type::CONTROL | token_type::UNKNOWN))
            .map(|(s, _)| {
                AddedToken::from(s.to_string(), true)
                    .normalized(false)
                    .rstrip(rstrip(s))
            })
            .collect();
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == token_type::USER_DEFINED)
            .map(|(s, _)| {
                AddedToken::from(s.to_string(), false)
                    .normalized(false)
                    .rstrip(rstrip(s))
            })
            .collect();
        tokenizer.add_special_tokens(&specials);
        tokenizer.add_tokens(&user);
        let eog_token_ids: Vec<u32> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| EOG_TEXTS.contains(t))
            .map(|(id, _)| id as u32)
            .collect();

        let bos_token_id = optional_id(file, "tokenizer.ggml.bos_token_id")?;
        let eos_token_id = optional_id(file, "tokenizer.ggml.eos_token_id")?;
        let eot_token_id = optional_id(file, "tokenizer.ggml.eot_token_id")?;
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", bos_token_id),
            ("tokenizer.ggml.eos_token_id", eos_token_id),
            ("tokenizer.ggml.eot_token_id", eot_token_id),
        ] {
            if let Some(id) = id {
                if id as usize >= tokens.len() {
                    return Err(err(
                        key,
                        format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    ));
                }
            }
        }
        let add_bos = file.bool_or(
            "tokenizer.ggml.add_bos_token",
            default_add_bos(file, model)?,
        )?;
        let add_eos = file.bool_or("tokenizer.ggml.add_eos_token", false)?;
        let mut template: Vec<String> = Vec::new();
        let mut template_tokens: Vec<(String, u32)> = Vec::new();
        for (add, id, key) in [
            (add_bos, bos_token_id, "tokenizer.ggml.add_bos_token"),
            (add_eos, eos_token_id, "tokenizer.ggml.add_eos_token"),
        ] {
            if !add {
                continue;
            }
            let id = id.ok_or_else(|| err(key, "is set but the token id is missing".into()))?;
            let content = tokens[id as usize].to_string();
            if content.contains([' ', ':']) || content.starts_with('$') {
                // TemplateProcessing parses its pieces from strings.
                return Err(err(
                    key,
                    format!("cannot add token `{content}` automatically"),
                ));
            }
            template_tokens.push((content.clone(), id));
            if key.ends_with("add_bos_token") {
                template.push(content);
                template.push("$A".into());
            } else {
                if template.is_empty() {
                    template.push("$A".into());
                }
                template.push(content);
            }
        }
        if !template.is_empty() {
            let processor = TemplateProcessing::builder()
                .try_single(template)
                .map_err(|e| Error::Invalid(e.to_string()))?
                .special_tokens(template_tokens)
                .build()
                .map_err(|e| Error::Invalid(e.to_string()))?;
            tokenizer.with_post_processor(Some(processor));
        }

        let chat_template = match file.get("tokenizer.chat_template") {
            Some(_) => Some(file.str_value("tokenizer.chat_template")?.to_string()),
            // Gemma 3 files converted from a base checkpoint may carry no template; Gemma's
            // own (the one its `tokenizer_config.json` ships) is the format the model knows.
            None if file.architecture().is_ok_and(|a| a == "gemma3")
                && tokens.contains(&"<start_of_turn>") =>
            {
                Some(GEMMA3_CHAT_TEMPLATE.to_string())
            }
            None => None,
        };
        Ok(Self {
            tokenizer,
            bos_token_id,
            eos_token_id,
            eot_token_id,
            add_bos,
            chat_template,
            eog_token_ids,
        })
    }

    /// The rebuilt tokenizer (its post-processor adds BOS/EOS as the file asks).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become
    /// their ids, as llama.cpp's `tokenize(..., parse_special = true)`; with
    /// `add_special_tokens`, BOS/EOS are added where `tokenizer.ggml.add_bos_token` /
    /// `add_eos_token` ask for them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Invalid(format!("cannot tokenize: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Whether [`GgufTokenizer::encode`] turns control tokens written in the text into
    /// their ids (`true`, the default) or tokenizes them as text, as llama.cpp's
    /// `parse_special` argument does. User-defined tokens are matched either way, as in
    /// llama.cpp.
    pub fn set_parse_special(&mut self, parse: bool) {
        self.tokenizer.set_encode_special_tokens(!parse);
    }

    /// Text of `ids` (special tokens dropped with `skip_special_tokens`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Invalid(format!("cannot decode: {e}")))
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// Tokens that end a generation: EOS, the end-of-turn token the file names, and the
    /// tokens llama.cpp ends a generation on by their text (`<end_of_turn>`, `<|im_end|>`,
    /// `<|eot_id|>`, ...).
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_token_id.into_iter().collect();
        for id in self.eot_token_id.iter().chain(&self.eog_token_ids) {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        ids
    }

    /// Whether encoding adds BOS (`tokenizer.ggml.add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The Jinja chat template (`tokenizer.chat_template`), when the file has one; for a
    /// `gemma3` file without one, [`GEMMA3_CHAT_TEMPLATE`].
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// Whether llama.cpp adds BOS when the file does not say (`tokenizer.ggml.add_bos_token`
/// absent): always for SentencePiece, for byte-level BPE only with the pre-tokenizers that
/// set it in `llama_vocab::impl::load` (Llama 3's among them).
fn default_add_bos(file: &GgufFile, model: &str) -> Result<bool> {
    if model == "llama" {
        return Ok(true);
    }
    let pre = match file.get("tokenizer.ggml.pre") {
        Some(_) => file.str_value("tokenizer.ggml.pre")?,
        None => "",
    };
    Ok(IGNORE_MERGES.contains(&pre))
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`): the file's merges, the pre-tokenizer
/// `tokenizer.ggml.pre` names.
fn gpt2_tokenizer(file: &GgufFile, vocab: Vocab) -> Result<Tokenizer> {
    let path = file.path();
    let err = |key: &str, what: String| Error::file(path, format!("metadata `{key}`: {what}"));
    let merges = file
        .string_array("tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(err(
                "tokenizer.ggml.merges",
                format!("element {i} `{m}` is not two tokens separated by a space"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;

    let pre_name = match file.get("tokenizer.ggml.pre") {
        Some(_) => file.str_value("tokenizer.ggml.pre")?,
        None => "gpt2",
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(IGNORE_MERGES.contains(&pre_name))
        .build()
        .map_err(|e| err("tokenizer.ggml.merges", e.to_string()))?;

    let regexes = PRE_TOKENIZERS
        .iter()
        .find(|(names, _)| names.contains(&pre_name))
        .map(|(_, r)| *r)
        .ok_or_else(|| {
            let known: Vec<&str> = PRE_TOKENIZERS
                .iter()
                .flat_map(|(n, _)| *n)
                .copied()
                .collect();
            err(
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer `{pre_name}` is not supported; supported: {}",
                    known.join(", ")
                ),
            )
        })?;
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(regexes.len() + 1);
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex(r.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err("tokenizer.ggml.pre", format!("regex `{r}`: {e}")))?;
        steps.push(split.into());
    }
    // Bytes to GPT-2's printable characters only: the splitting is done above.
    steps.push(ByteLevel::new(false, true, false).into());

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(Sequence::new(steps)))
        .with_decoder(Some(ByteLevelDecoder::default()));

    Ok(tokenizer)
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`) as a `tokenizers` BPE: merges from the
/// scores (see the module documentation), byte fallback, `▁` for spaces.
fn sentencepiece_tokenizer(file: &GgufFile, tokens: &[&str], vocab: Vocab) -> Result<Tokenizer> {
    let path = file.path();
    let err = |key: &str, what: String| Error::file(path, format!("metadata `{key}`: {what}"));
    let scores: Vec<f32> = file
        .array("tokenizer.ggml.scores")?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            v => Err(err(
                "tokenizer.ggml.scores",
                format!("element {i}: expected a number, found {:?}", v.value_type()),
            )),
        })
        .collect::<Result<_>>()?;
    if scores.len() != tokens.len() {
        return Err(err(
            "tokenizer.ggml.scores",
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let merges = sentencepiece_merges(tokens, &scores, &vocab);
    let unk = optional_id(file, "tokenizer.ggml.unknown_token_id")?
        .and_then(|id| tokens.get(id as usize))
        .map(|t| t.to_string());
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder
        .build()
        .map_err(|e| err("tokenizer.ggml.scores", e.to_string()))?;
    let add_space_prefix = file.bool_or("tokenizer.ggml.add_space_prefix", true)?;
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| Error::Invalid(format!("tokenizer normalizer: {e}")))
    };
    let mut tokenizer = Tokenizer::new(bpe);
    let mut decoders: Vec<DecoderWrapper> = vec![
        DecoderWrapper::Replace(replace("\u{2581}", " ")?),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    let space_to_bar: NormalizerWrapper = replace(" ", "\u{2581}")?.into();
    if add_space_prefix {
        // llama.cpp puts a space in front of the text and after every special token, which
        // is where `tokenizers` normalizes a piece of text on its own.
        tokenizer.with_normalizer(Some(tokenizers::normalizers::Sequence::new(vec![
            Prepend::new("\u{2581}".into()).into(),
            space_to_bar,
        ])));
        decoders.push(Strip::new(' ', 1, 0).into());
    } else {
        tokenizer.with_normalizer(Some(space_to_bar));
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// The merges `transformers`' `generate_merges` derives from a SentencePiece vocabulary and
/// its scores: for every token (in id order), each split into two tokens of the vocabulary
/// (ordered by the two ids), all sorted by the score of the token they make, highest first,
/// then by the longer left and right piece (a stable sort, so id order breaks the rest).
/// Splits are at character boundaries, as Python slices a string.
fn sentencepiece_merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, usize, usize, u32, u32)> = Vec::new();
    let mut local: Vec<(u32, u32, usize, usize)> = Vec::new();
    for (id, token) in tokens.iter().enumerate() {
        // Duplicates: the dict of scores keeps the last score but the first position.
        if vocab.get(*token) != Some(&(id as u32)) {
            continue;
        }
        local.clear();
        for (split, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(split);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l.chars().count(), r.chars().count()));
            }
        }
        local.sort_by_key(|&(l, r, _, _)| (l, r));
        merges.extend(
            local
                .iter()
                .map(|&(l, r, ll, rl)| (scores[id], ll, rl, l, r)),
        );
    }
    // Python's `sorted(key=(score, len l, len r), reverse=True)`: descending, stable.
    merges.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
    });
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| {
            (
                tokens[l as usize].to_string(),
                tokens[r as usize].to_string(),
            )
        })
        .collect()
}
