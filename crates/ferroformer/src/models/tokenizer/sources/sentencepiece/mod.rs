//! SentencePiece tokenizers (`spiece.model`, `sentencepiece.bpe.model`, Marian's
//! `source.spm` / `target.spm`), built the way `transformers` 4.57 builds them:
//!
//! - T5, Pegasus, mBART, mBART-50 and NLLB have fast tokenizers, which `transformers` converts
//!   from the slow files (`convert_slow_tokenizer`: `T5Converter`, `PegasusConverter`,
//!   `MBartConverter`, `MBart50Converter`, `NllbConverter`): a Unigram or BPE model (from
//!   `trainer_spec.model_type`) over the family's vocabulary layout, the normalizer (precompiled
//!   charsmap, right strip, runs of spaces), Metaspace pre-tokenizer and decoder, the family's
//!   post-processor, then the fast class's `__init__` (the source language's template).
//! - M2M100 and Marian have only slow tokenizers: SentencePiece segments the text and
//!   `vocab.json` gives the ids. Their pipeline here reproduces SentencePiece's own
//!   normalization (both ends stripped, runs of spaces collapsed), maps the pieces onto the
//!   `vocab.json` ids, and decodes as the slow classes' `convert_tokens_to_string` do.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::bpe::{Vocab as TokenMap, BPE};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{Precompiled, Replace, Sequence as NormalizerSequence, Strip};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer,
};

use super::super::config::{
    add_config_tokens, json_kind, read_json, token_id, Family, TokenizerFiles,
};
use super::Backend;
use crate::error::{Error, Result};

mod lang_codes;
mod proto;

use proto::ModelProto;

/// SentencePiece's word-boundary mark.
const SPIECE_UNDERLINE: char = '▁';

/// The `transformers` tokenizer class of a SentencePiece checkpoint, as far as it changes how
/// the files become a tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::models::tokenizer) enum SpmFamily {
    /// `T5Tokenizer`: `spiece.model`, `<extra_id_N>` sentinels, `X </s>`.
    T5,
    /// `PegasusTokenizer`: `spiece.model` shifted by `offset`, `X </s>`.
    Pegasus,
    /// `MBartTokenizer`: `sentencepiece.bpe.model`, fairseq ids, `X </s> en_XX`.
    MBart,
    /// `MBart50Tokenizer`: as mBART with 52 languages, `en_XX X </s>`.
    MBart50,
    /// `NllbTokenizer`: fairseq ids, languages as added tokens, `eng_Latn X </s>`.
    Nllb,
    /// `M2M100Tokenizer` (slow only): `sentencepiece.bpe.model` + `vocab.json`, `__en__ X </s>`.
    M2M100,
    /// `MarianTokenizer` (slow only): `source.spm` / `target.spm` + `vocab.json`, `X </s>`.
    Marian,
    /// Any other class with a SentencePiece file: `convert_slow_tokenizer.SpmConverter`.
    Other,
}

impl SpmFamily {
    fn from_class(class: &str) -> Option<Self> {
        Some(match class.strip_suffix("Fast").unwrap_or(class) {
            "T5Tokenizer" => Self::T5,
            "PegasusTokenizer" => Self::Pegasus,
            "MBartTokenizer" => Self::MBart,
            "MBart50Tokenizer" => Self::MBart50,
            "NllbTokenizer" => Self::Nllb,
            "M2M100Tokenizer" => Self::M2M100,
            "MarianTokenizer" => Self::Marian,
            _ => return None,
        })
    }

    fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "t5" | "mt5" | "longt5" | "umt5" => Self::T5,
            "pegasus" => Self::Pegasus,
            "mbart" => Self::MBart,
            "m2m_100" => Self::M2M100,
            "marian" => Self::Marian,
            _ => return None,
        })
    }

    /// The slow class's name, for errors.
    fn class(self) -> &'static str {
        match self {
            Self::T5 => "T5Tokenizer",
            Self::Pegasus => "PegasusTokenizer",
            Self::MBart => "MBartTokenizer",
            Self::MBart50 => "MBart50Tokenizer",
            Self::Nllb => "NllbTokenizer",
            Self::M2M100 => "M2M100Tokenizer",
            Self::Marian => "MarianTokenizer",
            Self::Other => "a SentencePiece tokenizer",
        }
    }

    /// The SentencePiece file the family ships.
    fn model_file(self) -> &'static str {
        match self {
            Self::T5 | Self::Pegasus | Self::Other => "spiece.model",
            Self::MBart | Self::MBart50 | Self::Nllb | Self::M2M100 => "sentencepiece.bpe.model",
            Self::Marian => "source.spm",
        }
    }
}

/// The files of a SentencePiece checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::models::tokenizer) struct SpmFiles {
    /// The family the files are read as.
    pub(in crate::models::tokenizer) family: SpmFamily,
    /// The SentencePiece model (Marian: `source.spm`).
    pub(in crate::models::tokenizer) model: PathBuf,
    /// Marian's `target.spm`.
    pub(in crate::models::tokenizer) target: Option<PathBuf>,
    /// `vocab.json` of the slow-only families (M2M100, Marian).
    pub(in crate::models::tokenizer) vocab: Option<PathBuf>,
}

/// The SentencePiece files of `dir`, if it has any (or its config names a SentencePiece class):
/// the family from `tokenizer_config.json`'s class (else `config.json`'s model type, else the
/// file names), then the files that family needs; a missing one is an error naming it.
pub(in crate::models::tokenizer) fn find(dir: &Path) -> Result<Option<SpmFiles>> {
    let class = read_json(&dir.join("tokenizer_config.json"))?.and_then(|c| {
        c.get("tokenizer_class")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let configured = match class.as_deref().and_then(SpmFamily::from_class) {
        Some(f) => Some(f),
        None if class.is_none() => read_json(&dir.join("config.json"))?
            .and_then(|c| {
                c.get("model_type")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .and_then(|m| SpmFamily::from_model_type(&m)),
        None => None,
    };
    let has = |name: &str| dir.join(name).is_file();
    let family = match configured {
        Some(f) => f,
        None if has("source.spm") => SpmFamily::Marian,
        None if has("sentencepiece.bpe.model") && has("vocab.json") => SpmFamily::M2M100,
        // Without a class, a fairseq model is read as the generic converter would.
        None if has("sentencepiece.bpe.model") || has("spiece.model") => SpmFamily::Other,
        None => return Ok(None),
    };
    let need = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::file(
                dir,
                format!(
                    "{} needs `{name}`, which is not in this directory (looked for {})",
                    family.class(),
                    path.display()
                ),
            ))
        }
    };
    let model = if family == SpmFamily::Other && !has("spiece.model") {
        need("sentencepiece.bpe.model")?
    } else {
        need(family.model_file())?
    };
    let (target, vocab) = match family {
        SpmFamily::Marian => (Some(need("target.spm")?), Some(need("vocab.json")?)),
        SpmFamily::M2M100 => (None, Some(need("vocab.json")?)),
        _ => (None, None),
    };
    Ok(Some(SpmFiles {
        family,
        model,
        target,
        vocab,
    }))
}

/// Where a family puts the source-language token around the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::models::tokenizer) enum LangLayout {
    /// `X </s> lang` (mBART, NLLB with `legacy_behaviour`).
    Suffix,
    /// `lang X </s>` (mBART-50, NLLB, M2M100).
    Prefix,
}

/// The language codes of a multilingual family and the special tokens they add.
#[derive(Debug, Clone)]
pub(in crate::models::tokenizer) struct Languages {
    /// How the source-language token is placed.
    pub(in crate::models::tokenizer) layout: LangLayout,
    /// `(code as src_lang takes it, token, id)`, in the family's order.
    pub(in crate::models::tokenizer) codes: Vec<(String, String, u32)>,
    /// The end-of-sequence token and its id.
    pub(in crate::models::tokenizer) eos: (String, u32),
    /// The source language the post-processor adds now.
    pub(in crate::models::tokenizer) current: String,
}

impl Languages {
    /// The token and id of `code` (as `src_lang` takes it), or an error listing the codes.
    pub(in crate::models::tokenizer) fn lookup(&self, code: &str) -> Result<(&str, u32)> {
        self.codes
            .iter()
            .find(|(c, _, _)| c == code)
            .map(|(_, t, id)| (t.as_str(), *id))
            .ok_or_else(|| {
                let valid: Vec<&str> = self.codes.iter().map(|(c, _, _)| c.as_str()).collect();
                Error::Invalid(format!(
                    "unknown language code `{code}`; this tokenizer knows {}: {}",
                    valid.len(),
                    valid.join(", ")
                ))
            })
    }

    /// The post-processor that adds `code`'s token and `</s>` as the fast class's
    /// `set_src_lang_special_tokens` does.
    pub(in crate::models::tokenizer) fn template(&self, code: &str) -> Result<TemplateProcessing> {
        let (token, id) = self.lookup(code)?;
        let (eos, eos_id) = (&self.eos.0, self.eos.1);
        let (single, pair) = match self.layout {
            LangLayout::Suffix => (format!("$A {eos} {token}"), format!("$A $B {eos} {token}")),
            LangLayout::Prefix => (format!("{token} $A {eos}"), format!("{token} $A $B {eos}")),
        };
        let mut specials = vec![(eos.clone(), eos_id)];
        if token != eos {
            specials.push((token.to_string(), id));
        }
        super::template(single, pair, specials)
            .map_err(|e| Error::Invalid(format!("cannot build the `{code}` template: {e}")))
    }
}

/// How the slow-only families (M2M100, Marian) turn ids back into text:
/// `convert_ids_to_tokens` on `vocab.json`, then their `convert_tokens_to_string` with the
/// (target) SentencePiece model, as the slow `_decode` does.
#[derive(Debug, Clone)]
pub(in crate::models::tokenizer) struct SlowDecode {
    /// Which class's `convert_tokens_to_string`.
    family: SpmFamily,
    /// The token of each id (`vocab.json` reversed, then the language tokens).
    id_to_token: HashMap<u32, String>,
    /// The unknown token (what ids outside the vocabulary decode to).
    unk: String,
    /// `all_special_tokens`.
    special: HashSet<String>,
    /// Added special tokens past the vocabulary (M2M100's language tokens), which the slow
    /// `_decode` keeps as separate sub-texts joined by spaces.
    legacy_added: HashSet<String>,
    /// The decoding SentencePiece model's pieces: `true` for control pieces (decoded to
    /// nothing); the unknown piece is kept apart.
    pieces: HashMap<String, bool>,
    /// The decoding model's unknown piece (decoded to SentencePiece's " ⁇ ").
    unk_piece: String,
}

impl SlowDecode {
    /// The token string of an id (`_convert_id_to_token`).
    pub(in crate::models::tokenizer) fn token(&self, id: u32) -> Option<&str> {
        self.id_to_token.get(&id).map(String::as_str)
    }

    /// The slow `_decode`: special ids skipped if asked, language tokens as separate
    /// sub-texts, `convert_tokens_to_string` on the rest, joined by spaces.
    pub(in crate::models::tokenizer) fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut sub_texts = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        for &id in ids {
            let token = self.token(id).unwrap_or(&self.unk);
            if skip_special && self.special.contains(token) {
                continue;
            }
            if self.legacy_added.contains(token) {
                if !current.is_empty() {
                    sub_texts.push(self.tokens_to_string(&current));
                    current.clear();
                }
                sub_texts.push(token.to_string());
            } else {
                current.push(token);
            }
        }
        if !current.is_empty() {
            sub_texts.push(self.tokens_to_string(&current));
        }
        sub_texts.join(" ")
    }

    /// The class's `convert_tokens_to_string`.
    fn tokens_to_string(&self, tokens: &[&str]) -> String {
        let mut out = String::new();
        let mut current: Vec<&str> = Vec::new();
        for &token in tokens {
            if self.special.contains(token) {
                out.push_str(&self.spm_decode(&current));
                out.push_str(token);
                if self.family == SpmFamily::Marian {
                    out.push(' ');
                }
                current.clear();
            } else {
                current.push(token);
            }
        }
        out.push_str(&self.spm_decode(&current));
        if self.family == SpmFamily::Marian {
            out = out.replace(SPIECE_UNDERLINE, " ");
        }
        out.trim().to_string()
    }

    /// SentencePiece's `DecodePieces`: control pieces vanish, the unknown piece becomes " ⁇ ",
    /// a piece the model lacks is kept as is, others get spaces for `▁`; the first piece with
    /// text loses the space of its leading `▁` (the dummy prefix).
    fn spm_decode(&self, pieces: &[&str]) -> String {
        let mut out = String::new();
        let mut at_start = true;
        for &piece in pieces {
            let surface = if piece == self.unk_piece {
                " \u{2047} ".to_string()
            } else {
                match self.pieces.get(piece) {
                    Some(true) => continue,
                    Some(false) => {
                        let text = piece.replace(SPIECE_UNDERLINE, " ");
                        if at_start {
                            text.strip_prefix(' ').map_or(text.clone(), str::to_string)
                        } else {
                            text
                        }
                    }
                    None => piece.to_string(),
                }
            };
            if !surface.is_empty() {
                at_start = false;
            }
            out.push_str(&surface);
        }
        out
    }
}

/// How the slow families (M2M100, Marian) give ids to SentencePiece's output: each piece
/// string — for text the model cannot segment, the text itself — is looked up in `vocab.json`
/// (`encoder.get(piece, unk_id)`). The backend gives the unknown id to such text even when
/// `vocab.json` has it (Marian's vocabulary holds the other side's pieces), and ids
/// `from..end` to pieces `vocab.json` lacks; both are looked up again after encoding.
#[derive(Debug, Clone)]
pub(in crate::models::tokenizer) struct VocabLookup {
    /// `vocab.json`.
    ids: HashMap<String, u32>,
    /// The unknown token's id.
    unk: u32,
    /// The unknown token (what the BPE model names text it cannot segment).
    unk_token: String,
    /// Ids of the pieces `vocab.json` lacks (empty when none).
    missing: std::ops::Range<u32>,
}

impl VocabLookup {
    /// The id the slow tokenizer gives a token the backend encoded as `id` (`token`); for
    /// BPE, whose unknown token stands for the text, `surface` gives that text.
    pub(in crate::models::tokenizer) fn id(
        &self,
        id: u32,
        token: &str,
        surface: impl FnOnce() -> Option<String>,
    ) -> u32 {
        if id != self.unk && !self.missing.contains(&id) {
            return id;
        }
        let found = if token == self.unk_token {
            surface().and_then(|s| self.ids.get(&s).copied())
        } else {
            self.ids.get(token).copied()
        };
        found.unwrap_or(self.unk)
    }
}

/// What a SentencePiece checkpoint adds to the tokenizer beyond the backend.
#[derive(Default)]
pub(in crate::models::tokenizer) struct SpmExtras {
    /// The language codes (mBART, mBART-50, NLLB, M2M100).
    pub(in crate::models::tokenizer) languages: Option<Languages>,
    /// Marian's target side (`target.spm`), used to encode targets and decode outputs.
    pub(in crate::models::tokenizer) target: Option<Box<Backend>>,
    /// The slow decoding of M2M100 and Marian.
    pub(in crate::models::tokenizer) slow_decode: Option<SlowDecode>,
    /// The slow families' `vocab.json` lookup of what segmentation gives.
    pub(in crate::models::tokenizer) vocab_lookup: Option<VocabLookup>,
}

/// Builds the tokenizer of `spm` with the configuration files of `dir`.
pub(in crate::models::tokenizer) fn load(spm: &SpmFiles, dir: &Path) -> Result<Backend> {
    let mut files = TokenizerFiles::read(dir, None)?;
    class_defaults(spm.family, &mut files);
    match spm.family {
        SpmFamily::M2M100 | SpmFamily::Marian => load_slow(spm, &spm.model, files, true),
        family => load_converted(family, &spm.model, files),
    }
}

/// The slow and fast classes' `__init__` defaults: special tokens the files do not name,
/// additional special tokens (T5's sentinels, Pegasus's `<unk_N>`, the language codes).
fn class_defaults(family: SpmFamily, files: &mut TokenizerFiles) {
    const FAIRSEQ: [(&str, &str); 7] = [
        ("bos", "<s>"),
        ("eos", "</s>"),
        ("sep", "</s>"),
        ("cls", "<s>"),
        ("unk", "<unk>"),
        ("pad", "<pad>"),
        ("mask", "<mask>"),
    ];
    let configured = files.additional_special_contents();
    match family {
        SpmFamily::T5 => {
            let extra_ids = files
                .config
                .get("extra_ids")
                .and_then(Value::as_u64)
                .unwrap_or(100);
            // Configured tokens without sentinels get the sentinels after them.
            let mut additional = configured.clone();
            if !configured.iter().any(|t| t.contains("<extra_id_")) {
                additional.extend((0..extra_ids).map(|i| format!("<extra_id_{i}>")));
            }
            files.class_defaults(
                &[("eos", "</s>"), ("unk", "<unk>"), ("pad", "<pad>")],
                Vec::new(),
            );
            let refs: Vec<&str> = additional.iter().map(String::as_str).collect();
            files.prepend_additional(&refs);
        }
        SpmFamily::Pegasus => {
            let offset = files
                .config
                .get("offset")
                .and_then(Value::as_u64)
                .unwrap_or(103);
            let sent = config_str(files, "mask_token_sent", "<mask_1>");
            let additional = sent
                .into_iter()
                .chain((2..offset).map(|i| format!("<unk_{i}>")))
                .collect();
            files.class_defaults(
                &[
                    ("pad", "<pad>"),
                    ("eos", "</s>"),
                    ("unk", "<unk>"),
                    ("mask", "<mask_2>"),
                ],
                additional,
            );
        }
        SpmFamily::MBart | SpmFamily::MBart50 => {
            files.class_defaults(&FAIRSEQ, Vec::new());
            let codes: &[&str] = if family == SpmFamily::MBart {
                &lang_codes::MBART
            } else {
                &lang_codes::MBART50
            };
            files.prepend_additional(codes);
            files.mask_lstrip();
        }
        SpmFamily::Nllb => {
            files.class_defaults(
                &FAIRSEQ,
                lang_codes::NLLB.iter().map(|c| c.to_string()).collect(),
            );
            files.mask_lstrip();
        }
        SpmFamily::M2M100 => files.class_defaults(
            &[
                ("bos", "<s>"),
                ("eos", "</s>"),
                ("sep", "</s>"),
                ("pad", "<pad>"),
                ("unk", "<unk>"),
            ],
            Vec::new(),
        ),
        SpmFamily::Marian => files.class_defaults(
            &[("unk", "<unk>"), ("eos", "</s>"), ("pad", "<pad>")],
            Vec::new(),
        ),
        SpmFamily::Other => {}
    }
    files.set_family(Family::Other);
}

/// A config string with a default (`None` when set to null).
fn config_str(files: &TokenizerFiles, key: &str, default: &str) -> Option<String> {
    match files.config.get(key) {
        None => Some(default.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    }
}

/// The content of special token `name`, else `default`.
fn special(files: &TokenizerFiles, name: &str, default: &str) -> String {
    files
        .token(name)
        .map_or_else(|| default.to_string(), |t| t.content.clone())
}

/// A fast family: `convert_slow_tokenizer`'s converter, then the fast class's `__init__`.
fn load_converted(family: SpmFamily, path: &Path, files: TokenizerFiles) -> Result<Backend> {
    let proto = ModelProto::read(path)?;
    let pieces = &proto.pieces;
    let fairseq_head = || -> Vec<(String, f64)> {
        ["<s>", "<pad>", "</s>", "<unk>"]
            .iter()
            .map(|t| (t.to_string(), 0.0))
            .chain(
                pieces
                    .iter()
                    .skip(3)
                    .map(|p| (p.text().to_string(), p.score_f64())),
            )
            .collect()
    };
    let (vocab, unk_id) = match family {
        SpmFamily::T5 => {
            let extra_ids = files
                .config
                .get("extra_ids")
                .and_then(Value::as_u64)
                .unwrap_or(100);
            let mut v: Vec<(String, f64)> = pieces
                .iter()
                .map(|p| (p.text().to_string(), p.score_f64()))
                .collect();
            v.extend(
                (0..extra_ids)
                    .rev()
                    .map(|i| (format!("<extra_id_{i}>"), 0.0)),
            );
            (v, to_index(proto.unk_id(), path)?)
        }
        SpmFamily::Pegasus => {
            let offset = files
                .config
                .get("offset")
                .and_then(Value::as_u64)
                .unwrap_or(103) as usize;
            let mut v = vec![
                (special(&files, "pad", "<pad>"), 0.0),
                (special(&files, "eos", "</s>"), 0.0),
            ];
            // The mask tokens take ids 2 and 3 only with a sentence mask token
            // (`mask_token_id < offset` in the converter).
            if let Some(sent) = config_str(&files, "mask_token_sent", "<mask_1>") {
                v.push((sent, 0.0));
                v.push((special(&files, "mask", "<mask_2>"), 0.0));
            }
            v.extend((2..offset).map(|i| (format!("<unk_{i}>"), -100.0)));
            v.extend(
                pieces
                    .iter()
                    .skip(2)
                    .map(|p| (p.text().to_string(), p.score_f64())),
            );
            (v, to_index(proto.unk_id(), path)? + offset)
        }
        SpmFamily::MBart | SpmFamily::MBart50 => {
            let codes: &[&str] = if family == SpmFamily::MBart {
                &lang_codes::MBART
            } else {
                &lang_codes::MBART50
            };
            let mut v = fairseq_head();
            v.extend(codes.iter().map(|c| (c.to_string(), 0.0)));
            v.push(("<mask>".to_string(), 0.0));
            (v, 3)
        }
        SpmFamily::Nllb => (fairseq_head(), 3),
        _ => (
            pieces
                .iter()
                .map(|p| (p.text().to_string(), p.score_f64()))
                .collect(),
            to_index(proto.unk_id(), path)?,
        ),
    };

    let model: ModelWrapper = match proto.model_type() {
        proto::UNIGRAM => Unigram::from(vocab, Some(unk_id), false)
            .map_err(|e| Error::file(path, format!("cannot build the Unigram model: {e}")))?
            .into(),
        proto::BPE => {
            let spm_vocab = spm_piece_ids(&proto);
            let merges = generate_merges(&spm_vocab, &vocab);
            let mut ids = TokenMap::new();
            for (i, (token, _)) in vocab.iter().enumerate() {
                ids.insert(token.clone(), i as u32);
            }
            spm_bpe(ids, merges, &proto.unk_piece(), path)?.into()
        }
        other => {
            return Err(Error::file(
                path,
                format!(
                    "trainer_spec.model_type is {other}; only Unigram (1) and BPE (2) models \
                     convert to a fast tokenizer"
                ),
            ))
        }
    };

    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(converter_normalizer(&proto, path)?));
    let prepend = prepend_scheme(family, &files);
    let metaspace = Metaspace::new(SPIECE_UNDERLINE, prepend, true);
    let pre: PreTokenizerWrapper = if family == SpmFamily::Pegasus {
        PreTokenizerSequence::new(vec![WhitespaceSplit.into(), metaspace.into()]).into()
    } else {
        metaspace.into()
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(DecoderWrapper::from(MetaspaceDecoder::new(
        SPIECE_UNDERLINE,
        prepend,
        true,
    ))));
    add_spm_tokens(&mut tokenizer, &proto);
    add_config_tokens(&mut tokenizer, &files);

    let eos = special(&files, "eos", "</s>");
    let eos_id = tokenizer.token_to_id(&eos).ok_or_else(|| {
        Error::file(
            path,
            format!("the end-of-sequence token `{eos}` is not in the vocabulary"),
        )
    })?;
    let mut extras = SpmExtras::default();
    let post = match family {
        SpmFamily::T5 => Some(
            super::template(
                format!("$A {eos}"),
                format!("$A {eos} $B {eos}"),
                vec![(eos.clone(), eos_id)],
            )
            .map_err(|e| Error::file(path, format!("cannot build the template: {e}")))?,
        ),
        SpmFamily::Pegasus => Some(
            super::template(
                format!("$A {eos}"),
                format!("$A $B {eos}"),
                vec![(eos.clone(), eos_id)],
            )
            .map_err(|e| Error::file(path, format!("cannot build the template: {e}")))?,
        ),
        SpmFamily::MBart | SpmFamily::MBart50 | SpmFamily::Nllb => {
            match language_setup(family, &tokenizer, &files, (eos.clone(), eos_id))? {
                Some((languages, post)) => {
                    extras.languages = Some(languages);
                    Some(post)
                }
                None => None,
            }
        }
        _ => None,
    };
    if let Some(post) = post {
        tokenizer.with_post_processor(Some(post));
    }
    Ok(Backend {
        tokenizer,
        files,
        tokenizer_json: None,
        converted: true,
        clean_up_default: false,
        spm: Some(extras),
    })
}

/// The language codes and the source-language template of the multilingual fast classes
/// (mBART, mBART-50, NLLB), from the codes present in `tokenizer`'s vocabulary; `None` for
/// other families.
fn language_setup(
    family: SpmFamily,
    tokenizer: &Tokenizer,
    files: &TokenizerFiles,
    eos: (String, u32),
) -> Result<Option<(Languages, TemplateProcessing)>> {
    let (codes, default, layout): (&[&str], &str, LangLayout) = match family {
        SpmFamily::MBart => (&lang_codes::MBART, "en_XX", LangLayout::Suffix),
        SpmFamily::MBart50 => (&lang_codes::MBART50, "en_XX", LangLayout::Prefix),
        SpmFamily::Nllb => {
            let legacy = files.bool("legacy_behaviour").unwrap_or(false);
            let layout = if legacy {
                LangLayout::Suffix
            } else {
                LangLayout::Prefix
            };
            (&lang_codes::NLLB, "eng_Latn", layout)
        }
        _ => return Ok(None),
    };
    let languages = languages(
        tokenizer,
        codes.iter().map(|c| (c.to_string(), c.to_string())),
        layout,
        eos,
        files,
        default,
    )?;
    let post = languages.template(&languages.current)?;
    Ok(Some((languages, post)))
}

/// A `tokenizer.json` of a multilingual class (`tokenizer_config.json`'s
/// `tokenizer_class` mBART, mBART-50 or NLLB): its language codes, so that `src_lang` can
/// change the special tokens as the fast class's `set_src_lang_special_tokens` does.
pub(in crate::models::tokenizer) fn fast_languages(
    tokenizer: &Tokenizer,
    files: &TokenizerFiles,
) -> Result<Option<Languages>> {
    let class = files.config.get("tokenizer_class").and_then(Value::as_str);
    let Some(family) = class.and_then(SpmFamily::from_class) else {
        return Ok(None);
    };
    let eos = special(files, "eos", "</s>");
    let Some(eos_id) = tokenizer.token_to_id(&eos) else {
        return Ok(None);
    };
    Ok(language_setup(family, tokenizer, files, (eos, eos_id))?.map(|(l, _)| l))
}

/// The family's languages present in the vocabulary, with the source language of the config
/// (`src_lang`, else the class default) checked.
fn languages(
    tokenizer: &Tokenizer,
    codes: impl Iterator<Item = (String, String)>,
    layout: LangLayout,
    eos: (String, u32),
    files: &TokenizerFiles,
    default: &str,
) -> Result<Languages> {
    let codes = codes
        .filter_map(|(code, token)| {
            let id = tokenizer.token_to_id(&token)?;
            Some((code, token, id))
        })
        .collect();
    let current = config_str(files, "src_lang", default).unwrap_or_else(|| default.to_string());
    let languages = Languages {
        layout,
        codes,
        eos,
        current,
    };
    languages
        .lookup(&languages.current)
        .map_err(|e| Error::file(&files.config_path, format!("`src_lang`: {e}")))?;
    Ok(languages)
}

/// A BPE model as SentencePiece's BPE runs: unknown pieces fused, no byte fallback.
fn spm_bpe(ids: TokenMap, merges: Vec<(String, String)>, unk: &str, path: &Path) -> Result<BPE> {
    BPE::builder()
        .vocab_and_merges(ids, merges)
        .unk_token(unk.to_string())
        .fuse_unk(true)
        .byte_fallback(false)
        .build()
        .map_err(|e| Error::file(path, format!("cannot build the BPE model: {e}")))
}

/// A proto id as a vocabulary index.
fn to_index(id: i32, path: &Path) -> Result<usize> {
    usize::try_from(id)
        .map_err(|_| Error::file(path, format!("trainer_spec.unk_id is {id}, not an id")))
}

/// `convert_slow_tokenizer._get_prepend_scheme`: `add_prefix_space` (default true) prepends
/// `▁` to every word, only to the first one for T5 with `legacy: false`.
fn prepend_scheme(family: SpmFamily, files: &TokenizerFiles) -> PrependScheme {
    if !files.bool("add_prefix_space").unwrap_or(true) {
        PrependScheme::Never
    } else if family == SpmFamily::T5 && files.bool("legacy") == Some(false) {
        PrependScheme::First
    } else {
        PrependScheme::Always
    }
}

/// `SpmConverter.normalizer`: the precompiled charsmap (when the model has one), the right
/// end stripped, and runs of spaces made one `▁`.
fn converter_normalizer(proto: &ModelProto, path: &Path) -> Result<NormalizerWrapper> {
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if let Some(p) = precompiled(proto, path)? {
        steps.push(p.into());
    }
    steps.push(Strip::new(false, true).into());
    steps.push(spaces(&SPIECE_UNDERLINE.to_string())?.into());
    Ok(NormalizerSequence::new(steps).into())
}

/// SentencePiece's own normalization, as the slow tokenizers run it: the charsmap, then
/// (with `remove_extra_whitespaces`, the default) both ends stripped and runs of spaces made
/// one.
fn spm_normalizer(proto: &ModelProto, path: &Path) -> Result<NormalizerWrapper> {
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if let Some(p) = precompiled(proto, path)? {
        steps.push(p.into());
    }
    if proto.remove_extra_whitespaces() {
        steps.push(Strip::new(true, true).into());
        steps.push(spaces(" ")?.into());
    }
    Ok(NormalizerSequence::new(steps).into())
}

fn precompiled(proto: &ModelProto, path: &Path) -> Result<Option<Precompiled>> {
    let map = proto.charsmap();
    if map.is_empty() {
        return Ok(None);
    }
    Precompiled::from(map).map(Some).map_err(|e| {
        Error::file(
            path,
            format!("normalizer_spec.precompiled_charsmap is invalid: {e}"),
        )
    })
}

/// Runs of two or more spaces replaced by `with`.
fn spaces(with: &str) -> Result<Replace> {
    Replace::new(
        tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
        with,
    )
    .map_err(|e| Error::Invalid(format!("space normalizer: {e}")))
}

/// `SpmConverter.tokenizer`'s added tokens: control pieces (special) and user-defined pieces
/// (not special), never normalized, in id order.
fn add_spm_tokens(tokenizer: &mut Tokenizer, proto: &ModelProto) {
    let tokens: Vec<AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| matches!(p.piece_type(), proto::CONTROL | proto::USER_DEFINED))
        .map(|p| AddedToken::from(p.text(), p.piece_type() == proto::CONTROL).normalized(false))
        .collect();
    if !tokens.is_empty() {
        tokenizer.add_tokens(&tokens);
    }
}

/// The SentencePiece model's own piece → id map (`SentencePieceExtractor`'s `vocab`).
fn spm_piece_ids(proto: &ModelProto) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for (i, p) in proto.pieces.iter().enumerate() {
        ids.insert(p.text().to_string(), i);
    }
    ids
}

/// `convert_slow_tokenizer.generate_merges(vocab, vocab_scores)`: every split of every piece
/// of `vocab_scores` into two pieces of `vocab`, ordered within a piece by the pieces' ids,
/// then (stably) by descending (score, left length, right length), lengths in characters.
fn generate_merges(
    vocab: &HashMap<String, usize>,
    vocab_scores: &[(String, f64)],
) -> Vec<(String, String)> {
    // `dict(vocab_scores)`: the first position of a repeated piece, with its last score.
    let mut order: Vec<&str> = Vec::new();
    let mut score: HashMap<&str, f64> = HashMap::new();
    for (piece, s) in vocab_scores {
        if score.insert(piece.as_str(), *s).is_none() {
            order.push(piece.as_str());
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for piece in order {
        let s = score[piece];
        let mut local: Vec<(&str, &str, f64)> = piece
            .char_indices()
            .skip(1)
            .map(|(at, _)| piece.split_at(at))
            .filter(|(l, r)| vocab.contains_key(*l) && vocab.contains_key(*r))
            .map(|(l, r)| (l, r, s))
            .collect();
        local.sort_by_key(|(l, r, _)| (vocab[*l], vocab[*r]));
        merges.extend(local);
    }
    let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// `vocab.json`: `{token: id}`.
fn read_vocab(path: &Path) -> Result<Vec<(String, u32)>> {
    let Some(value) = read_json(path)? else {
        return Err(Error::file(path, "no such file"));
    };
    let Value::Object(map) = value else {
        return Err(Error::file(
            path,
            format!(
                "expected an object {{token: id}}, found {}",
                json_kind(&value)
            ),
        ));
    };
    map.iter()
        .map(|(token, id)| Ok((token.clone(), token_id(path, "vocabulary", token, id)?)))
        .collect()
}

/// A slow-only family (M2M100, Marian): SentencePiece segmentation (from `model`) with the
/// ids of `vocab.json`. `main` is false for Marian's target side.
fn load_slow(spm: &SpmFiles, model: &Path, files: TokenizerFiles, main: bool) -> Result<Backend> {
    let family = spm.family;
    let vocab_path = spm
        .vocab
        .as_deref()
        .ok_or_else(|| Error::file(&files.dir, format!("{} needs `vocab.json`", family.class())))?;
    let proto = ModelProto::read(model)?;
    let vocab = read_vocab(vocab_path)?;
    let unk = special(&files, "unk", "<unk>");
    let eos = special(&files, "eos", "</s>");
    let by_token: HashMap<&str, u32> = vocab.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    let unk_id = *by_token.get(unk.as_str()).ok_or_else(|| {
        Error::file(
            vocab_path,
            format!("the unknown token `{unk}` is not in the vocabulary"),
        )
    })?;
    // Tokens matched before segmentation: the special tokens, and Marian's target-language
    // codes (`>>fra<<`, split off the text's start by the slow class).
    let mut specials: Vec<String> = files.all_special().into_iter().map(|t| t.content).collect();
    for name in ["unk", "eos", "pad"] {
        let t = special(&files, name, "");
        if !t.is_empty() && !specials.contains(&t) {
            specials.push(t);
        }
    }
    let marian_codes: Vec<String> =
        if family == SpmFamily::Marian && !files.bool("separate_vocabs").unwrap_or(false) {
            vocab
                .iter()
                .filter(|(t, _)| t.starts_with(">>") && t.ends_with("<<"))
                .map(|(t, _)| t.clone())
                .collect()
        } else {
            Vec::new()
        };
    let whole: HashSet<&str> = specials
        .iter()
        .chain(&marian_codes)
        .map(String::as_str)
        .collect();
    // Pieces SentencePiece can output for text (control pieces it never does).
    let spm_pieces: HashMap<&str, f64> = proto
        .pieces
        .iter()
        .filter(|p| p.piece_type() != proto::CONTROL && p.piece_type() != proto::UNKNOWN)
        .map(|p| (p.text(), p.score_f64()))
        .collect();
    // A vocab.json token that is neither a piece of this model nor matched whole must never
    // come out of segmentation (Marian's vocabulary holds both sides' pieces): it keeps its
    // id under a name no pre-tokenized word can hold (words never contain a space).
    let model_name = |token: &str, id: u32| -> String {
        if spm_pieces.contains_key(token) || whole.contains(token) {
            token.to_string()
        } else {
            format!("{token} #{id}")
        }
    };
    let size = vocab
        .iter()
        .map(|(_, id)| *id as usize + 1)
        .max()
        .unwrap_or(0);
    let mut missing_ids = 0..0;
    let segmenter: ModelWrapper = match proto.model_type() {
        proto::UNIGRAM => {
            let mut list: Vec<(String, f64)> = (0..size).map(|i| (format!(" #{i}"), 0.0)).collect();
            for (token, id) in &vocab {
                let score = spm_pieces.get(token.as_str()).copied().unwrap_or(0.0);
                list[*id as usize] = (model_name(token, *id), score);
            }
            // Pieces vocab.json lacks still segment as SentencePiece does; their ids (past the
            // vocabulary) become the unknown id after encoding.
            let mut missing: Vec<&proto::SentencePiece> = proto
                .pieces
                .iter()
                .filter(|p| spm_pieces.contains_key(p.text()) && !by_token.contains_key(p.text()))
                .collect();
            missing.dedup_by_key(|p| p.text().to_string());
            if !missing.is_empty() {
                let from = list.len() as u32;
                list.extend(
                    missing
                        .iter()
                        .map(|p| (p.text().to_string(), p.score_f64())),
                );
                missing_ids = from..list.len() as u32;
            }
            Unigram::from(list, Some(unk_id as usize), false)
                .map_err(|e| Error::file(model, format!("cannot build the Unigram model: {e}")))?
                .into()
        }
        proto::BPE => {
            let mut ids = TokenMap::new();
            for (token, id) in &vocab {
                ids.insert(model_name(token, *id), *id);
            }
            let spm_vocab = spm_piece_ids(&proto);
            let scores: Vec<(String, f64)> = proto
                .pieces
                .iter()
                .map(|p| (p.text().to_string(), p.score_f64()))
                .collect();
            // A merge into a piece vocab.json lacks cannot be represented; SentencePiece
            // would give that piece the unknown id.
            let merges: Vec<(String, String)> = generate_merges(&spm_vocab, &scores)
                .into_iter()
                .filter(|(l, r)| {
                    ids.contains_key(l)
                        && ids.contains_key(r)
                        && ids.contains_key(&format!("{l}{r}"))
                })
                .collect();
            spm_bpe(ids, merges, &unk, model)?.into()
        }
        other => {
            return Err(Error::file(
                model,
                format!(
                "trainer_spec.model_type is {other}; only Unigram (1) and BPE (2) are supported"
            ),
            ))
        }
    };
    let mut tokenizer = Tokenizer::new(segmenter);
    tokenizer.with_normalizer(Some(spm_normalizer(&proto, model)?));
    // SentencePiece's dummy prefix: a `▁` before each text it segments.
    let prepend = if proto.add_dummy_prefix() {
        PrependScheme::Always
    } else {
        PrependScheme::Never
    };
    tokenizer.with_pre_tokenizer(Some(Metaspace::new(SPIECE_UNDERLINE, prepend, true)));
    tokenizer.with_decoder(Some(DecoderWrapper::from(MetaspaceDecoder::new(
        SPIECE_UNDERLINE,
        prepend,
        true,
    ))));

    // M2M100's language tokens follow the vocabulary (`encoder_size + i`).
    let mut lang_tokens: Vec<(String, String)> = Vec::new();
    if family == SpmFamily::M2M100 {
        let codes: &[&str] = match files.config.get("language_codes").and_then(Value::as_str) {
            Some("wmt21") => &lang_codes::WMT21,
            _ => &lang_codes::M2M100,
        };
        lang_tokens = codes
            .iter()
            .map(|c| (c.to_string(), format!("__{c}__")))
            .collect();
        // Special only when the config lists them as additional special tokens (the hub's
        // configs do; the class's own loop never adds them).
        let tokens: Vec<AddedToken> = lang_tokens
            .iter()
            .map(|(_, t)| AddedToken::from(t.clone(), specials.contains(t)).normalized(false))
            .collect();
        tokenizer.add_tokens(&tokens);
    }
    let special_tokens: Vec<AddedToken> = specials
        .iter()
        .map(|t| AddedToken::from(t.clone(), true).normalized(false))
        .chain(
            marian_codes
                .iter()
                .map(|t| AddedToken::from(t.clone(), false).normalized(false)),
        )
        .collect();
    tokenizer.add_tokens(&special_tokens);

    let eos_id = tokenizer.token_to_id(&eos).ok_or_else(|| {
        Error::file(
            vocab_path,
            format!("the end-of-sequence token `{eos}` is not in the vocabulary"),
        )
    })?;
    let mut extras = SpmExtras {
        vocab_lookup: Some(VocabLookup {
            ids: by_token
                .iter()
                .map(|(t, id)| (t.to_string(), *id))
                .collect(),
            unk: unk_id,
            unk_token: unk.clone(),
            missing: missing_ids,
        }),
        ..Default::default()
    };
    let post = if family == SpmFamily::M2M100 {
        let languages = languages(
            &tokenizer,
            lang_tokens.into_iter(),
            LangLayout::Prefix,
            (eos.clone(), eos_id),
            &files,
            "en",
        )?;
        let post = languages.template(&languages.current)?;
        extras.languages = Some(languages);
        post
    } else {
        super::template(
            format!("$A {eos}"),
            format!("$A $B {eos}"),
            vec![(eos.clone(), eos_id)],
        )
        .map_err(|e| Error::file(model, format!("cannot build the template: {e}")))?
    };
    tokenizer.with_post_processor(Some(post));

    // Decoding: vocab.json's tokens (and M2M100's language tokens), with the target model for
    // Marian (the slow class decodes with `spm_target`).
    let mut id_to_token: HashMap<u32, String> =
        vocab.iter().map(|(t, id)| (*id, t.clone())).collect();
    let mut legacy_added = HashSet::new();
    if let Some(languages) = &extras.languages {
        for (_, token, id) in &languages.codes {
            id_to_token.insert(*id, token.clone());
            legacy_added.insert(token.clone());
        }
    }
    let decoding_proto;
    let decoding = match (&spm.target, family) {
        (Some(target), SpmFamily::Marian) if main => {
            decoding_proto = ModelProto::read(target)?;
            &decoding_proto
        }
        _ => &proto,
    };
    let pieces = decoding
        .pieces
        .iter()
        .filter(|p| p.piece_type() != proto::UNKNOWN)
        .map(|p| (p.text().to_string(), p.piece_type() == proto::CONTROL))
        .collect();
    let special_set: HashSet<String> = specials.iter().cloned().collect();
    extras.slow_decode = Some(SlowDecode {
        family,
        id_to_token,
        unk: unk.clone(),
        special: special_set,
        legacy_added,
        pieces,
        unk_piece: decoding.unk_piece(),
    });

    if main {
        if let (Some(target), SpmFamily::Marian) = (&spm.target, family) {
            let mut target_files = TokenizerFiles::read(&files.dir, None)?;
            class_defaults(family, &mut target_files);
            // Its own decoding uses its own model, which is the target one too.
            let side = load_slow(spm, target, target_files, false)?;
            extras.target = Some(Box::new(side));
        }
    }
    Ok(Backend {
        tokenizer,
        files,
        tokenizer_json: None,
        converted: true,
        clean_up_default: false,
        spm: Some(extras),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_score_then_lengths() {
        let vocab: HashMap<String, usize> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i))
            .collect();
        let scores: Vec<(String, f64)> = [("ab", -1.0), ("bc", -2.0), ("abc", -1.0)]
            .iter()
            .map(|(t, s)| (t.to_string(), *s))
            .collect();
        let merges = generate_merges(&vocab, &scores);
        let as_str: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // Score -1 first: "abc" splits (a, bc) and (ab, c); sorted by descending left length
        // then right length: (ab, c), then (a, bc) and (a, b) by right length.
        assert_eq!(
            as_str,
            vec![("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")]
        );
    }
}
