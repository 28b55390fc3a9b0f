//! Finding a checkpoint's tokenizer files and building the `tokenizers` backend from them.
//!
//! Each kind of file set is one [`TokenizerSource`] variant and one submodule that builds the
//! backend the way `transformers` does (reading `tokenizer.json` as is, or converting a slow
//! tokenizer's vocabulary files as `convert_slow_tokenizer` does). Adding a kind (say
//! SentencePiece's `spiece.model`) takes a variant, its files in [`TokenizerSource::find`] at
//! its place in the order of preference, its entry in [`LOOKED_FOR`], and a submodule whose
//! `load` returns a [`Backend`]; the rest of loading (the configured tokens, the class's
//! corrections) is shared.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

use super::config::TokenizerFiles;
use crate::error::{Error, Result};

mod byte_level_bpe;
pub(super) mod sentencepiece;
mod tokenizer_json;
mod wordpiece;

/// The file sets [`TokenizerSource::find`] looks for, in its order, for the error that names
/// them when a directory has none.
const LOOKED_FOR: &str =
    "tokenizer.json, vocab.txt (WordPiece), vocab.json + merges.txt (byte-level \
     BPE), and the SentencePiece files spiece.model, sentencepiece.bpe.model (+ vocab.json) and \
     source.spm + target.spm + vocab.json";

/// The files a tokenizer is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenizerSource {
    /// A serialized fast tokenizer, `tokenizer.json`.
    TokenizerJson(PathBuf),
    /// BERT's WordPiece vocabulary, `vocab.txt`.
    WordPiece(PathBuf),
    /// A byte-level BPE vocabulary (GPT-2, RoBERTa) and its merges.
    ByteLevelBpe {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
    /// A SentencePiece model (T5, Pegasus, mBART, NLLB), with `vocab.json` for M2M100, and
    /// both sides for Marian.
    SentencePiece(sentencepiece::SpmFiles),
}

/// A backend built from a [`TokenizerSource`], with the configuration files read for it and
/// the tokenizer class settled, ready for `corrections::finish`.
pub(super) struct Backend {
    /// The `tokenizers` tokenizer.
    pub(super) tokenizer: Tokenizer,
    /// The configuration files of the checkpoint directory.
    pub(super) files: TokenizerFiles,
    /// The parsed `tokenizer.json`, when loaded from one (its saved padding and truncation
    /// sides are defaults).
    pub(super) tokenizer_json: Option<Value>,
    /// Built from vocabulary files: the configured tokens are already added.
    pub(super) converted: bool,
    /// The `clean_up_tokenization_spaces` default when the config does not set it.
    pub(super) clean_up_default: bool,
    /// What a SentencePiece checkpoint adds (languages, Marian's target side, slow decoding).
    pub(super) spm: Option<sentencepiece::SpmExtras>,
}

impl TokenizerSource {
    /// The tokenizer files of `dir`, in `AutoTokenizer`'s order of preference:
    /// `tokenizer.json`, then `vocab.txt`, then `vocab.json` + `merges.txt`, then the
    /// SentencePiece files. Errors name the directory and what was looked for, or the file a
    /// SentencePiece family lacks.
    pub(super) fn find(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Ok(Self::TokenizerJson(json));
        }
        let vocab_txt = dir.join("vocab.txt");
        if vocab_txt.is_file() {
            return Ok(Self::WordPiece(vocab_txt));
        }
        let vocab_json = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        if vocab_json.is_file() && merges.is_file() {
            return Ok(Self::ByteLevelBpe {
                vocab: vocab_json,
                merges,
            });
        }
        if let Some(spm) = sentencepiece::find(dir)? {
            return Ok(Self::SentencePiece(spm));
        }
        if vocab_json.is_file() {
            return Err(Error::file(
                dir,
                format!(
                    "has vocab.json but neither merges.txt (looked for {}) nor a SentencePiece \
                     model (source.spm, sentencepiece.bpe.model)",
                    merges.display()
                ),
            ));
        }
        Err(Error::file(
            dir,
            format!("no tokenizer files in this directory: looked for {LOOKED_FOR}"),
        ))
    }

    /// Builds the backend, with the configuration files of `dir` (the checkpoint directory).
    pub(super) fn load(&self, dir: &Path) -> Result<Backend> {
        match self {
            Self::TokenizerJson(path) => tokenizer_json::load(path, dir),
            Self::WordPiece(vocab) => wordpiece::load(vocab, dir),
            Self::ByteLevelBpe { vocab, merges } => byte_level_bpe::load(vocab, merges, dir),
            Self::SentencePiece(spm) => sentencepiece::load(spm, dir),
        }
    }
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
