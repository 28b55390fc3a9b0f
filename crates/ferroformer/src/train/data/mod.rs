//! Next-token prediction datasets.
//!
//! Three pieces, used in this order:
//!
//! 1. [`list_documents`] finds the documents of a corpus: `.txt` files (one document each)
//!    and `.jsonl` files (one document per line), given directly or found in folders.
//! 2. [`tokenize_corpus`] streams them through a tokenizer into `train.bin` and `val.bin`
//!    (little-endian `u32` token ids) and memory-maps them as [`TokenFile`]s. A
//!    `manifest.json` beside them fingerprints the inputs, the tokenizer and the options, so
//!    an unchanged corpus is tokenized once.
//! 3. [`WindowSampler`] cuts a token stream into non-overlapping windows of
//!    `context_length + 1` tokens and draws batches of `(inputs, labels)` from them. Batch
//!    number `step` is a pure function of `(seed, step)`, so a run resumes exactly from its
//!    step count.
//!
//! The code follows those steps: `documents` lists the files, `reader` reads them in pieces
//! and streams the pieces through the tokenizer, `writer` writes the token files atomically,
//! `manifest` decides whether an earlier run's files can be reused, `token_file` maps them,
//! `sampler` draws the windows; this file holds the options and [`tokenize_corpus`], which
//! ties them together.
//!
//! ```
//! use ferroformer::train::data::{TokenFile, WindowSampler};
//!
//! # fn main() -> ferroformer::Result<()> {
//! let stream = TokenFile::from_tokens((0..101).collect());
//! let sampler = WindowSampler::new(stream.len(), 10, 42)?; // 10 windows of 10 (+1) tokens
//! let (inputs, labels) = sampler.batch(stream.tokens(), 0, 4); // 4 rows of 10 tokens each
//! assert_eq!(inputs.len(), 40);
//! assert_eq!(&inputs[1..10], &labels[..9]); // labels are the inputs shifted left by one
//! # Ok(()) }
//! ```

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod documents;
mod manifest;
mod reader;
mod sampler;
mod token_file;
mod writer;

pub use documents::list_documents;
pub use sampler::WindowSampler;
pub use token_file::{TokenFile, TokenSplit};

use documents::{canonical, collect_documents, describe_documents, DocFile};
use manifest::{cached_split, fingerprint, write_manifest, Manifest};
use reader::encode_documents;
use writer::{sync_dir, TempFile, TokenWriter};

/// How to read a corpus: see [`list_documents`] and [`tokenize_corpus`].
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusOptions {
    /// The JSONL field holding a document's text (default `"text"`).
    pub text_field: String,
    /// Replace invalid UTF-8 with U+FFFD instead of failing (default `false`).
    pub lossy: bool,
    /// A token id appended after every document (a `.txt` file or a JSONL line); documents
    /// that produce no tokens get none. Default `None`.
    pub end_of_text: Option<u32>,
    /// The fraction of the token stream held out for validation, `0 <= f < 1` (default
    /// 0.1): the last `val_fraction` of the concatenated stream is validation. `0` means no
    /// validation set (an empty `val.bin`). Ignored when `val_files` is non-empty.
    pub val_fraction: f64,
    /// If non-empty, split by file instead: the documents under these paths (files or
    /// folders) are validation, every other document is training. They need not be among
    /// the inputs: [`list_documents`] adds them.
    pub val_files: Vec<PathBuf>,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        CorpusOptions {
            text_field: "text".to_string(),
            lossy: false,
            end_of_text: None,
            val_fraction: 0.1,
            val_files: Vec::new(),
        }
    }
}

impl CorpusOptions {
    /// Checks the options: `val_fraction` must lie in `[0, 1)` and `text_field` must not be
    /// empty.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::config(
                "val_fraction",
                format!(
                    "must be in [0, 1) (at least 0, less than 1), got {}",
                    self.val_fraction
                ),
            ));
        }
        if self.text_field.is_empty() {
            return Err(Error::config("text_field", "must not be empty"));
        }
        Ok(())
    }
}

/// Tokenizes a corpus into `out_dir/train.bin` and `out_dir/val.bin` and memory-maps them.
///
/// The documents are those of [`list_documents`], in its order. They are streamed file by
/// file (a corpus larger than memory works): the token ids of each document, followed by
/// `opts.end_of_text` if set, are appended to the output as they come. The tokenizer adds
/// no special tokens, and its truncation and padding settings are ignored. A `.txt` file
/// larger than about 1 MiB is tokenized in pieces cut at the start of a line; this equals
/// tokenizing it whole for tokenizers whose pre-tokenizer splits at newlines (GPT-2's
/// byte-level, whitespace, character-level), while a tokenizer that marks the start of its
/// input (a Metaspace prefix) marks each piece.
///
/// The split: with `opts.val_files` empty, the last `opts.val_fraction` of the concatenated
/// token stream (rounded to whole tokens) is validation and the rest is training; otherwise
/// the documents under `opts.val_files` are validation and the others training.
///
/// Both files (little-endian `u32` ids) are written atomically: to a temporary file,
/// fsynced, then renamed into place. `out_dir/manifest.json` records a fingerprint of the
/// input paths, sizes and modification times, the tokenizer's JSON, and the options; when
/// it matches (and the files have the recorded sizes) the existing files are reused without
/// reading the corpus.
///
/// Errors: a missing input; a file that is not UTF-8 (naming the file and the byte offset
/// of the first invalid byte) unless `opts.lossy`; a JSONL line that is not JSON or lacks
/// `opts.text_field` (naming the file, the line and the field); `val_fraction` outside
/// `[0, 1)`; a corpus with no tokens; a split that leaves the training or validation set
/// empty; I/O errors naming the file.
pub fn tokenize_corpus(
    inputs: &[PathBuf],
    tokenizer: &tokenizers::Tokenizer,
    opts: &CorpusOptions,
    out_dir: &Path,
) -> Result<TokenSplit> {
    opts.validate()?;
    let docs = collect_documents(inputs, opts)?;
    let val_roots = opts
        .val_files
        .iter()
        .map(|p| canonical(p))
        .collect::<Result<Vec<_>>>()?;
    let is_val = |doc: &DocFile| val_roots.iter().any(|r| doc.canonical.starts_with(r));

    // The tokenizer as used: no truncation, no padding.
    let mut tokenizer = tokenizer.clone();
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::Invalid(format!("cannot disable the tokenizer's truncation: {e}")))?;
    tokenizer.with_padding(None);
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(|e| Error::Invalid(format!("cannot serialize the tokenizer: {e}")))?;

    let fp = fingerprint(&docs, &is_val, &tokenizer_json, opts)?;
    if let Some(split) = cached_split(out_dir, &fp) {
        return Ok(split);
    }

    fs::create_dir_all(out_dir)
        .map_err(|e| Error::file(out_dir, format!("cannot create folder: {e}")))?;
    // A stale manifest must never describe files half replaced by this rebuild.
    let manifest_path = out_dir.join("manifest.json");
    match fs::remove_file(&manifest_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::file(
                &manifest_path,
                format!("cannot remove stale manifest: {e}"),
            ))
        }
    }
    let train_path = out_dir.join("train.bin");
    let val_path = out_dir.join("val.bin");
    let all_docs: Vec<&DocFile> = docs.iter().collect();

    let (train_tokens, val_tokens) = if opts.val_files.is_empty() {
        let mut writers = [TokenWriter::create(&out_dir.join("all.bin"))?];
        encode_documents(&docs, &tokenizer, opts, &|_| 0, &mut writers)?;
        let [writer] = writers;
        let (all_temp, mut all, total) = writer.finish()?;
        if total == 0 {
            return Err(Error::Invalid(format!(
                "empty corpus: {} produce no tokens",
                describe_documents(&all_docs)
            )));
        }
        let val = (total as f64 * opts.val_fraction).round() as u64;
        let train = total - val;
        if val == 0 && opts.val_fraction > 0.0 {
            return Err(Error::Invalid(format!(
                "the validation split is empty: val_fraction {} of {total} tokens rounds to 0 tokens; use a larger corpus or val_fraction",
                opts.val_fraction
            )));
        }
        if train == 0 {
            return Err(Error::Invalid(format!(
                "the training split is empty: val_fraction {} of {total} tokens leaves 0 tokens for training; use a larger corpus or a smaller val_fraction",
                opts.val_fraction
            )));
        }
        // val.bin is the tail of all.bin; all.bin cut to its head becomes train.bin.
        let (val_temp, mut val_file) = TempFile::create(&val_path)?;
        all.seek(SeekFrom::Start(train * 4))
            .map_err(|e| Error::file(&all_temp.tmp, format!("cannot seek: {e}")))?;
        let copied = io::copy(&mut (&mut all).take(val * 4), &mut val_file)
            .map_err(|e| Error::file(&val_temp.tmp, format!("cannot write: {e}")))?;
        if copied != val * 4 {
            return Err(Error::file(
                &all_temp.tmp,
                format!(
                    "expected {} bytes of validation tokens, read {copied}",
                    val * 4
                ),
            ));
        }
        all.set_len(train * 4)
            .map_err(|e| Error::file(&all_temp.tmp, format!("cannot truncate: {e}")))?;
        all_temp.retarget(&train_path).persist(all)?;
        val_temp.persist(val_file)?;
        (train, val)
    } else {
        let mut writers = [
            TokenWriter::create(&train_path)?,
            TokenWriter::create(&val_path)?,
        ];
        encode_documents(
            &docs,
            &tokenizer,
            opts,
            &|d| usize::from(is_val(d)),
            &mut writers,
        )?;
        let [train_writer, val_writer] = writers;
        let (train, val) = (train_writer.count, val_writer.count);
        let train_docs: Vec<&DocFile> = docs.iter().filter(|d| !is_val(d)).collect();
        let val_docs: Vec<&DocFile> = docs.iter().filter(|d| is_val(d)).collect();
        if train + val == 0 {
            return Err(Error::Invalid(format!(
                "empty corpus: {} produce no tokens",
                describe_documents(&all_docs)
            )));
        }
        if train_docs.is_empty() {
            return Err(Error::Invalid(format!(
                "the training split is empty: all {} are validation files (val_files)",
                describe_documents(&val_docs)
            )));
        }
        if train == 0 {
            return Err(Error::Invalid(format!(
                "the training split is empty: the training documents, {}, produce no tokens",
                describe_documents(&train_docs)
            )));
        }
        if val == 0 {
            return Err(Error::Invalid(format!(
                "the validation split is empty: the validation files (val_files), {}, produce no tokens",
                describe_documents(&val_docs)
            )));
        }
        train_writer.persist()?;
        val_writer.persist()?;
        (train, val)
    };
    sync_dir(out_dir);

    write_manifest(
        out_dir,
        &Manifest {
            fingerprint: fp,
            train_tokens,
            val_tokens,
        },
    )?;
    sync_dir(out_dir);
    Ok(TokenSplit {
        train: TokenFile::open(&train_path)?,
        val: TokenFile::open(&val_path)?,
    })
}
