//! Tokenizer training: character-level, byte-level BPE (GPT-2) and WordPiece (BERT)
//! tokenizers trained on plain-text files with Hugging Face `tokenizers`.
//!
//! The trained [`tokenizers::Tokenizer`] is saved as a standard `tokenizer.json` that Python's
//! `tokenizers.Tokenizer.from_file` (and `transformers`' fast tokenizers) load and encode
//! identically.
//!
//! Three choices hold for every kind:
//!
//! - **Special tokens** get the lowest ids (0, 1, …) in the order given, are added to the
//!   tokenizer as special tokens (matched in raw text before any other processing, skipped by
//!   `decode(.., skip_special_tokens = true)`), and are cut out of the training text so that
//!   their characters do not shape the learned vocabulary.
//! - **Input** is read as UTF-8, line by line with the line endings kept; a file that is not
//!   UTF-8 is rejected with the byte offset of its first invalid byte.
//! - **Determinism**: the same files, kind, size and special tokens give a byte-identical
//!   `tokenizer.json`, run after run (see [`train_tokenizer`] for how WordPiece gets there).
//!
//! ```no_run
//! use ferroformer::train::tokenizer::{train_tokenizer, save_tokenizer, TokenizerKind, END_OF_TEXT};
//!
//! # fn main() -> ferroformer::Result<()> {
//! let files = vec![std::path::PathBuf::from("corpus.txt")];
//! let tok = train_tokenizer(TokenizerKind::Bpe, 1000, &files, &[END_OF_TEXT.to_string()])?;
//! save_tokenizer(&tok, std::path::Path::new("tokenizer.json"))?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, Model, NormalizedString, Normalizer, OffsetReferential, OffsetType,
    PreTokenizedString, PreTokenizer, Tokenizer, Trainer,
};

use crate::error::{Error, Result};

/// GPT-2's end-of-text token, the usual separator between training documents.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The special tokens a WordPiece tokenizer gets when none are given (BERT's, in BERT's order).
pub const WORDPIECE_DEFAULT_SPECIAL_TOKENS: [&str; 5] =
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// The token a WordPiece tokenizer emits for a word it cannot spell with its vocabulary.
pub const WORDPIECE_UNK: &str = "[UNK]";

/// The prefix WordPiece puts on tokens that continue a word.
const WORDPIECE_PREFIX: &str = "##";

/// Number of byte tokens in the byte-level BPE alphabet.
const BYTE_ALPHABET: usize = 256;

/// Which kind of tokenizer to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenizerKind {
    /// One token per Unicode character (spaces and newlines included); `decode` concatenates.
    /// The vocabulary is every character of the training files plus the special tokens;
    /// characters never seen in training are dropped when encoding.
    Char,
    /// Byte-level BPE set up like GPT-2: every byte is representable, so nothing is ever
    /// unknown; spaces belong to the following word (`Ġ` in the vocabulary).
    Bpe,
    /// BERT-style WordPiece: lowercasing BERT normalizer, BERT pre-tokenizer (whitespace and
    /// punctuation), `##` continuation prefix, `[UNK]` for words it cannot spell.
    WordPiece,
}

impl TokenizerKind {
    /// Every kind, in the order [`FromStr`] lists them.
    pub const ALL: [TokenizerKind; 3] = [
        TokenizerKind::Char,
        TokenizerKind::Bpe,
        TokenizerKind::WordPiece,
    ];

    /// The name [`FromStr`] parses: `"char"`, `"bpe"` or `"wordpiece"`.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Char => "char",
            TokenizerKind::Bpe => "bpe",
            TokenizerKind::WordPiece => "wordpiece",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = Error;

    /// Parses `"char"`, `"bpe"` or `"wordpiece"` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        TokenizerKind::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown tokenizer kind `{s}`: expected one of char, bpe, wordpiece"
                ))
            })
    }
}

/// Trains a tokenizer of `kind` on the UTF-8 text `files`.
///
/// - `vocab_size` is the size of the final vocabulary, special tokens included. For `Bpe` and
///   `WordPiece` merges are learned until the vocabulary reaches it (or no pair is left); for
///   `Char` it is only an upper bound on the number of distinct characters plus special tokens.
/// - `special_tokens` get ids `0, 1, …` in the order given. For `WordPiece` an empty list means
///   BERT's `[PAD] [UNK] [CLS] [SEP] [MASK]`, and `[UNK]` is appended when a non-empty list
///   lacks it (WordPiece needs an unknown token).
///
/// No post-processor adds special tokens around encodings (no `[CLS] … [SEP]`): encodings are
/// the text's tokens only, for every kind.
///
/// Errors (each naming the file or value at fault): an empty file list, a file that is missing
/// or unreadable, a file that is not UTF-8 (with the byte offset of the first invalid byte),
/// files with no text besides special tokens, an empty or repeated special token, and a
/// `vocab_size` too small for the special tokens plus the kind's alphabet (256 bytes for `Bpe`;
/// the characters of the files for `Char`; for `WordPiece` the characters plus their `##`
/// continuation forms).
///
/// Training is deterministic. Hugging Face's WordPiece trainer numbers the `##` forms of the
/// alphabet in hash-map order, which is random per process and changes which of equally
/// frequent pairs merge first; here those forms are registered up front in sorted order, so the
/// result is the same on every run.
pub fn train_tokenizer(
    kind: TokenizerKind,
    vocab_size: usize,
    files: &[PathBuf],
    special_tokens: &[String],
) -> Result<Tokenizer> {
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "cannot train a {kind} tokenizer: no training files were given"
        )));
    }
    for path in files {
        check_readable_file(path)?;
    }
    let specials = resolve_special_tokens(kind, special_tokens)?;
    if vocab_size <= specials.len() {
        return Err(Error::config(
            "vocab_size",
            format!(
                "{vocab_size} is too small for a {kind} tokenizer: its {} special tokens alone \
                 need {} ids, and at least one more is needed for text",
                specials.len(),
                specials.len()
            ),
        ));
    }
    let corpus = Corpus {
        files,
        specials: &specials,
    };
    let tokenizer = match kind {
        TokenizerKind::Char => train_char(vocab_size, &corpus)?,
        TokenizerKind::Bpe => train_bpe(vocab_size, &corpus)?,
        TokenizerKind::WordPiece => train_wordpiece(vocab_size, &corpus)?,
    };
    let size = tokenizer.get_vocab_size(true);
    if size > vocab_size {
        return Err(Error::config(
            "vocab_size",
            format!("{vocab_size} is too small: the trained {kind} tokenizer has {size} tokens"),
        ));
    }
    Ok(tokenizer)
}

/// Saves `tokenizer` as a `tokenizer.json` at `path`, atomically: the JSON is written to a
/// temporary file in the same directory, flushed to disk, then renamed over `path`, so a crash
/// never leaves a half-written file behind.
pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let json = tokenizer
        .to_string(true)
        .map_err(|e| Error::file(path, format!("cannot serialize the tokenizer: {e}")))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "cannot save a tokenizer: the path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    // Unique per process and per call, so concurrent saves never share a temporary file.
    static SAVES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let written = (|| -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(json.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: the temporary file may not exist if creating it failed.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot save the tokenizer: {e}")));
    }
    // Persist the rename itself (directory entry); not every platform can open a directory.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Loads a `tokenizer.json` (ours or any Hugging Face one this `tokenizers` version reads).
/// Errors name the file and say whether it could not be read or could not be parsed.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read the tokenizer file: {e}")))?;
    Tokenizer::from_bytes(&bytes)
        .map_err(|e| Error::file(path, format!("not a valid tokenizer.json: {e}")))
}

// ---------------------------------------------------------------------------------------------
// The three kinds.

fn train_char(vocab_size: usize, corpus: &Corpus<'_>) -> Result<Tokenizer> {
    // A BPE with no merges: the trainer's vocabulary is the special tokens followed by every
    // character it saw, sorted by code point. Each character is fed as its own "word", which
    // keeps the trainer's word table as small as the alphabet.
    let mut trainer = BpeTrainer::builder()
        .vocab_size(0)
        .show_progress(false)
        .special_tokens(added_tokens(corpus.specials))
        .build();
    let mut model = BPE::default();
    let chars = corpus.feed_and_train(TokenizerKind::Char, &mut trainer, &mut model, |piece| {
        Ok(piece.chars().map(String::from).collect())
    })?;
    let specials = corpus.specials.len();
    if model.get_vocab_size() > vocab_size {
        let alphabet = model.get_vocab_size() - specials;
        return Err(Error::config(
            "vocab_size",
            format!(
                "{vocab_size} is too small for a char tokenizer: the training files have \
                 {alphabet} distinct characters, plus {specials} special tokens = {} tokens",
                alphabet + specials
            ),
        ));
    }
    if chars == 0 {
        return Err(corpus.no_text(TokenizerKind::Char));
    }
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_decoder(Some(Fuse::new()));
    tokenizer.add_special_tokens(&added_tokens(corpus.specials));
    Ok(tokenizer)
}

fn train_bpe(vocab_size: usize, corpus: &Corpus<'_>) -> Result<Tokenizer> {
    let specials = corpus.specials.len();
    if vocab_size < specials + BYTE_ALPHABET {
        return Err(Error::config(
            "vocab_size",
            format!(
                "{vocab_size} is too small for a byte-level BPE tokenizer: it needs at least \
                 {BYTE_ALPHABET} byte tokens + {specials} special tokens = {}",
                BYTE_ALPHABET + specials
            ),
        ));
    }
    // GPT-2's setup (transformers' GPT2Converter): no prefix space, offsets trimmed by the
    // pre-tokenizer, a ByteLevel post-processor that leaves offsets alone.
    let pre_tokenizer = ByteLevel::new(false, true, true);
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(added_tokens(corpus.specials))
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut model = BPE::default();
    let chars = corpus.feed_and_train(TokenizerKind::Bpe, &mut trainer, &mut model, |piece| {
        pre_tokenize(None, &pre_tokenizer, piece)
    })?;
    if chars == 0 {
        return Err(corpus.no_text(TokenizerKind::Bpe));
    }
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .with_post_processor(Some(ByteLevel::new(true, false, true)));
    tokenizer.add_special_tokens(&added_tokens(corpus.specials));
    Ok(tokenizer)
}

fn train_wordpiece(vocab_size: usize, corpus: &Corpus<'_>) -> Result<Tokenizer> {
    // BERT uncased: clean text, split CJK characters, strip accents (implied by lowercase).
    let normalizer = BertNormalizer::new(true, true, None, true);
    let pre_tokenizer = BertPreTokenizer;
    let process = |piece: &str| pre_tokenize(Some(&normalizer), &pre_tokenizer, piece);

    // First pass: the alphabet and the `##` continuation forms the trainer will create.
    let mut alphabet = BTreeSet::new();
    let mut continuations = BTreeSet::new();
    let mut chars = 0usize;
    corpus.for_each_piece(|piece| {
        let words =
            process(piece).map_err(|e| corpus.training_error(TokenizerKind::WordPiece, e))?;
        for word in words {
            for (i, c) in word.chars().enumerate() {
                chars += 1;
                alphabet.insert(c);
                if i > 0 {
                    continuations.insert(format!("{WORDPIECE_PREFIX}{c}"));
                }
            }
        }
        Ok(())
    })?;
    if chars == 0 {
        return Err(corpus.no_text(TokenizerKind::WordPiece));
    }
    let specials: HashSet<&str> = corpus.specials.iter().map(String::as_str).collect();
    let mut initial: HashSet<String> = alphabet.iter().map(|c| c.to_string()).collect();
    initial.extend(continuations.iter().cloned());
    let needed = specials.len()
        + initial
            .iter()
            .filter(|t| !specials.contains(t.as_str()))
            .count();
    if needed > vocab_size {
        return Err(Error::config(
            "vocab_size",
            format!(
                "{vocab_size} is too small for a WordPiece tokenizer: the training files have \
                 {} distinct characters and {} `##` continuation forms, plus {} special tokens \
                 = {needed} tokens before any merge",
                alphabet.len(),
                continuations.len(),
                specials.len()
            ),
        ));
    }

    // The trainer gives the `##` forms ids in hash-map order; registering them (sorted) right
    // after the special tokens makes the ids, hence the merge tie-breaks, deterministic.
    let mut trainer_specials = added_tokens(corpus.specials);
    trainer_specials.extend(
        continuations
            .iter()
            .filter(|t| !specials.contains(t.as_str()))
            .map(|t| AddedToken::from(t.clone(), true)),
    );
    let mut trainer = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(trainer_specials)
        .continuing_subword_prefix(WORDPIECE_PREFIX.to_string())
        .build();
    // `WordPiece::default()` already has BERT's settings: unknown token `[UNK]`, continuation
    // prefix `##`, words longer than 100 characters map to `[UNK]`.
    let mut model = WordPiece::default();
    corpus.feed_and_train(TokenizerKind::WordPiece, &mut trainer, &mut model, process)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(pre_tokenizer))
        .with_decoder(Some(WordPieceDecoder::new(
            WORDPIECE_PREFIX.to_string(),
            true,
        )));
    tokenizer.add_special_tokens(&added_tokens(corpus.specials));
    Ok(tokenizer)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The special tokens for `kind`, checked: none empty, none repeated; WordPiece defaults.
fn resolve_special_tokens(kind: TokenizerKind, given: &[String]) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = given.to_vec();
    if kind == TokenizerKind::WordPiece {
        if tokens.is_empty() {
            tokens = WORDPIECE_DEFAULT_SPECIAL_TOKENS
                .iter()
                .map(|t| t.to_string())
                .collect();
        } else if !tokens.iter().any(|t| t == WORDPIECE_UNK) {
            tokens.push(WORDPIECE_UNK.to_string());
        }
    }
    let mut seen = HashSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(Error::config(
                "special_tokens",
                format!("special token #{i} is empty"),
            ));
        }
        if !seen.insert(token.as_str()) {
            return Err(Error::config(
                "special_tokens",
                format!("special token `{token}` is given more than once"),
            ));
        }
    }
    Ok(tokens)
}

fn added_tokens(tokens: &[String]) -> Vec<AddedToken> {
    tokens
        .iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect()
}

/// Fails unless `path` is an existing regular file we can open.
fn check_readable_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::file(path, format!("cannot read the training file: {e}")))?;
    if meta.is_dir() {
        return Err(Error::file(
            path,
            "cannot read the training file: it is a directory",
        ));
    }
    File::open(path)
        .map(drop)
        .map_err(|e| Error::file(path, format!("cannot open the training file: {e}")))
}

/// Runs the normalizer (if any) and the pre-tokenizer on `text`, returning the words.
fn pre_tokenize(
    normalizer: Option<&dyn Normalizer>,
    pre_tokenizer: &dyn PreTokenizer,
    text: &str,
) -> tokenizers::Result<Vec<String>> {
    let mut normalized = NormalizedString::from(text);
    if let Some(n) = normalizer {
        n.normalize(&mut normalized)?;
    }
    let mut pre = PreTokenizedString::from(normalized);
    pre_tokenizer.pre_tokenize(&mut pre)?;
    Ok(pre
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(s, _, _)| s.to_owned())
        .collect())
}

/// The training text: the files, read line by line (endings kept), with the special tokens cut
/// out of each line.
struct Corpus<'a> {
    files: &'a [PathBuf],
    specials: &'a [String],
}

impl Corpus<'_> {
    /// Calls `f` on every piece of text, in order.
    fn for_each_piece(&self, mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
        let slot = Mutex::new(None);
        for piece in Pieces::new(self.files, self.specials, &slot) {
            f(&piece)?;
        }
        take_error(&slot)
    }

    /// Feeds every piece, through `process`, to `trainer`, then trains `model`. Returns the
    /// number of characters fed (0 means the files hold no text).
    fn feed_and_train<T, F>(
        &self,
        kind: TokenizerKind,
        trainer: &mut T,
        model: &mut T::Model,
        process: F,
    ) -> Result<usize>
    where
        T: Trainer,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        let slot = Mutex::new(None);
        let chars = std::sync::atomic::AtomicUsize::new(0);
        let fed = trainer.feed(Pieces::new(self.files, self.specials, &slot), |piece| {
            chars.fetch_add(piece.chars().count(), std::sync::atomic::Ordering::Relaxed);
            process(piece)
        });
        // A read error ends the iteration early: report it rather than train on part of the text.
        take_error(&slot)?;
        fed.map_err(|e| self.training_error(kind, e))?;
        // The trainer returns the special tokens it put in the vocabulary; the caller adds the
        // real ones to the tokenizer itself (WordPiece passes extra, internal ones).
        trainer
            .train(model)
            .map_err(|e| self.training_error(kind, e))?;
        Ok(chars.into_inner())
    }

    fn training_error(&self, kind: TokenizerKind, e: impl fmt::Display) -> Error {
        Error::Invalid(format!(
            "training the {kind} tokenizer on {} failed: {e}",
            self.describe_files()
        ))
    }

    fn no_text(&self, kind: TokenizerKind) -> Error {
        Error::Invalid(format!(
            "cannot train a {kind} tokenizer: {} contain no text (besides special tokens)",
            self.describe_files()
        ))
    }

    fn describe_files(&self) -> String {
        self.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn take_error(slot: &Mutex<Option<Error>>) -> Result<()> {
    let taken = match slot.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    match taken {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Iterates over the text of the files as pieces: each line (with its ending) split around the
/// special tokens, which are dropped. Stops at the first error, which it leaves in `error`.
struct Pieces<'a> {
    files: std::slice::Iter<'a, PathBuf>,
    specials: &'a [String],
    error: &'a Mutex<Option<Error>>,
    current: Option<(&'a Path, BufReader<File>, u64)>,
    pending: std::collections::VecDeque<String>,
    line: Vec<u8>,
    failed: bool,
}

impl<'a> Pieces<'a> {
    fn new(files: &'a [PathBuf], specials: &'a [String], error: &'a Mutex<Option<Error>>) -> Self {
        Self {
            files: files.iter(),
            specials,
            error,
            current: None,
            pending: Default::default(),
            line: Vec::new(),
            failed: false,
        }
    }

    fn fail(&mut self, e: Error) -> Option<String> {
        self.failed = true;
        match self.error.lock() {
            Ok(mut guard) => *guard = Some(e),
            Err(poisoned) => *poisoned.into_inner() = Some(e),
        }
        None
    }

    /// Reads the next line into `pending`; `Ok(false)` at the end of all files.
    fn read_line(&mut self) -> Result<bool> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.next() else {
                    return Ok(false);
                };
                let file = File::open(path).map_err(|e| {
                    Error::file(path, format!("cannot open the training file: {e}"))
                })?;
                self.current = Some((path, BufReader::with_capacity(1 << 20, file), 0));
            }
            let Some((path, reader, offset)) = self.current.as_mut() else {
                continue;
            };
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::file(*path, format!("cannot read the training file: {e}")))?;
            if n == 0 {
                self.current = None;
                continue;
            }
            // `\n` never occurs inside a multi-byte UTF-8 sequence, so lines validate alone.
            let text = std::str::from_utf8(&self.line).map_err(|e| {
                let at = e.valid_up_to();
                let byte = self.line.get(at).copied().unwrap_or_default();
                Error::file(
                    *path,
                    format!(
                        "not valid UTF-8: invalid byte 0x{byte:02x} at byte offset {}",
                        *offset + at as u64
                    ),
                )
            })?;
            *offset += n as u64;
            split_specials(text, self.specials, &mut self.pending);
            return Ok(true);
        }
    }
}

impl Iterator for Pieces<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(piece) = self.pending.pop_front() {
                return Some(piece);
            }
            match self.read_line() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return self.fail(e),
            }
        }
    }
}

/// Appends the non-empty parts of `text` between occurrences of `specials` (leftmost match,
/// longest at the same position, as the tokenizer matches them) to `out`.
fn split_specials(text: &str, specials: &[String], out: &mut std::collections::VecDeque<String>) {
    let mut rest = text;
    loop {
        let next = specials
            .iter()
            .filter_map(|s| rest.find(s.as_str()).map(|at| (at, s.len())))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        match next {
            Some((at, len)) => {
                if at > 0 {
                    out.push_back(rest[..at].to_string());
                }
                rest = &rest[at + len..];
            }
            None => {
                if !rest.is_empty() {
                    out.push_back(rest.to_string());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_are_cut_out_leftmost_longest() {
        let specials = vec!["<a>".to_string(), "<a><b>".to_string(), "<b>".to_string()];
        let mut out = Default::default();
        split_specials("x<a><b>y<b><a>\n", &specials, &mut out);
        assert_eq!(Vec::from(out), vec!["x", "y", "\n"]);
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(
            "BPE".parse::<TokenizerKind>().ok(),
            Some(TokenizerKind::Bpe)
        );
        let err = "unigram"
            .parse::<TokenizerKind>()
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("char, bpe, wordpiece")));
    }
}
