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

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use memmap2::Mmap;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

// ---------------------------------------------------------------------------------------
// Listing documents
// ---------------------------------------------------------------------------------------

/// A document file and its canonical path (used to deduplicate and to match `val_files`).
struct DocFile {
    path: PathBuf,
    canonical: PathBuf,
}

fn is_jsonl(path: &Path) -> bool {
    has_extension(path, "jsonl")
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| Error::file(path, format!("cannot resolve path: {e}")))
}

/// Appends the `.txt` and `.jsonl` files under `dir` (recursively) to `out`. `visited` holds
/// the canonical folders already walked, so symbolic-link loops end.
fn walk_folder(dir: &Path, out: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) -> Result<()> {
    if !visited.insert(canonical(dir)?) {
        return Ok(());
    }
    let entries =
        fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot read folder: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(dir, format!("cannot read folder: {e}")))?;
        let path = entry.path();
        // Follows symbolic links; a dangling link is skipped.
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk_folder(&path, out, visited)?;
        } else if meta.is_file() && (has_extension(&path, "txt") || is_jsonl(&path)) {
            out.push(path);
        }
    }
    Ok(())
}

/// The files of one input path: the file itself, or the `.txt`/`.jsonl` files of a folder.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = fs::metadata(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::file(path, "no such file or folder")
        } else {
            Error::file(path, format!("cannot read: {e}"))
        }
    })?;
    if meta.is_dir() {
        let mut files = Vec::new();
        walk_folder(path, &mut files, &mut HashSet::new())?;
        if files.is_empty() {
            return Err(Error::file(
                path,
                "no .txt or .jsonl files found in this folder",
            ));
        }
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Lists, sorts and deduplicates the documents of `inputs` and `opts.val_files`.
fn collect_documents(inputs: &[PathBuf], opts: &CorpusOptions) -> Result<Vec<DocFile>> {
    if inputs.is_empty() && opts.val_files.is_empty() {
        return Err(Error::Invalid(
            "no corpus given: pass at least one file or folder".into(),
        ));
    }
    let mut files = Vec::new();
    for input in inputs.iter().chain(&opts.val_files) {
        files.extend(expand(input)?);
    }
    files.sort();
    let mut seen = HashSet::new();
    let mut docs = Vec::with_capacity(files.len());
    for path in files {
        let canonical = canonical(&path)?;
        if seen.insert(canonical.clone()) {
            docs.push(DocFile { path, canonical });
        }
    }
    Ok(docs)
}

/// The documents of a corpus.
///
/// Each path in `inputs` (and in `opts.val_files`, which are part of the corpus too) is a
/// file or a folder:
///
/// - a `.jsonl` file holds one document per line, a JSON object whose field
///   `opts.text_field` is the text (blank lines are skipped);
/// - any other file (normally `.txt`) is one document;
/// - a folder contributes its `*.txt` and `*.jsonl` files, recursively.
///
/// Returns the files sorted by path (so the token stream is deterministic), each once.
/// Errors name a path that does not exist, a folder with no `.txt` or `.jsonl` file, or an
/// empty `inputs`.
pub fn list_documents(inputs: &[PathBuf], opts: &CorpusOptions) -> Result<Vec<PathBuf>> {
    Ok(collect_documents(inputs, opts)?
        .into_iter()
        .map(|d| d.path)
        .collect())
}

// ---------------------------------------------------------------------------------------
// Token files
// ---------------------------------------------------------------------------------------

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u32>),
}

/// A file of `u32` token ids (little-endian), memory-mapped, or tokens held in memory.
///
/// The file must not be modified while it is open.
pub struct TokenFile {
    storage: Storage,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("len", &self.len())
            .finish()
    }
}

impl TokenFile {
    /// Memory-maps a file of little-endian `u32` token ids. Errors name the file if it cannot
    /// be opened or its size is not a multiple of 4 bytes.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let size = file
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot read metadata: {e}")))?
            .len();
        if size % 4 != 0 {
            return Err(Error::file(
                path,
                format!("size {size} bytes is not a multiple of 4: not a file of u32 tokens"),
            ));
        }
        let path_buf = Some(path.to_path_buf());
        if size == 0 {
            return Ok(TokenFile {
                storage: Storage::Owned(Vec::new()),
                path: path_buf,
            });
        }
        // SAFETY: the map is read-only; the files this module writes are replaced by rename,
        // never modified in place, and the type's docs ask callers not to modify the file.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::file(path, format!("cannot memory-map: {e}")))?;
        let aligned = (map.as_ptr() as usize) % std::mem::align_of::<u32>() == 0;
        let storage = if cfg!(target_endian = "little") && aligned && map.len() % 4 == 0 {
            Storage::Mapped(map)
        } else {
            Storage::Owned(
                map.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        };
        Ok(TokenFile {
            storage,
            path: path_buf,
        })
    }

    /// Tokens held in memory (for tests and small corpora).
    pub fn from_tokens(tokens: Vec<u32>) -> Self {
        TokenFile {
            storage: Storage::Owned(tokens),
            path: None,
        }
    }

    /// The token ids.
    pub fn tokens(&self) -> &[u32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped(map) => {
                // SAFETY: `open` keeps a map only on little-endian targets when its start is
                // aligned for u32 and its length is a multiple of 4; every bit pattern is a
                // valid u32, and the slice borrows `self`, which owns the map.
                unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<u32>(), map.len() / 4) }
            }
        }
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens().len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file this was opened from (`None` for [`TokenFile::from_tokens`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The training and validation token streams made by [`tokenize_corpus`].
#[derive(Debug)]
pub struct TokenSplit {
    /// `train.bin`.
    pub train: TokenFile,
    /// `val.bin` (empty when `val_fraction` is 0 and there are no `val_files`).
    pub val: TokenFile,
}

// ---------------------------------------------------------------------------------------
// Atomic output files
// ---------------------------------------------------------------------------------------

/// A temporary file beside its destination, removed on drop unless renamed into place.
struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    fn create(dest: &Path) -> Result<(Self, File)> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        // Readable too: the fraction split reads the tail back.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::file(&tmp, format!("cannot create: {e}")))?;
        Ok((
            TempFile {
                tmp,
                dest: dest.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// The same temporary file, to be renamed to `dest` instead.
    fn retarget(mut self, dest: &Path) -> Self {
        self.dest = dest.to_path_buf();
        self
    }

    /// fsyncs `file` (this temp file) and renames it over the destination.
    fn persist(mut self, file: File) -> Result<()> {
        file.sync_all()
            .map_err(|e| Error::file(&self.tmp, format!("cannot sync to disk: {e}")))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            Error::file(
                &self.dest,
                format!("cannot rename {} into place: {e}", self.tmp.display()),
            )
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams u32 tokens (little-endian) into a temporary file.
struct TokenWriter {
    temp: TempFile,
    out: BufWriter<File>,
    count: u64,
    bytes: Vec<u8>,
}

impl TokenWriter {
    fn create(dest: &Path) -> Result<Self> {
        let (temp, file) = TempFile::create(dest)?;
        Ok(TokenWriter {
            temp,
            out: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            bytes: Vec::new(),
        })
    }

    fn push(&mut self, ids: &[u32]) -> Result<()> {
        self.bytes.clear();
        self.bytes.extend(ids.iter().flat_map(|t| t.to_le_bytes()));
        self.out
            .write_all(&self.bytes)
            .map_err(|e| Error::file(&self.temp.tmp, format!("cannot write: {e}")))?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Flushes and returns the temporary file, its handle and the token count.
    fn finish(self) -> Result<(TempFile, File, u64)> {
        let TokenWriter {
            temp, out, count, ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| Error::file(&temp.tmp, format!("cannot write: {}", e.error())))?;
        Ok((temp, file, count))
    }

    fn persist(self) -> Result<u64> {
        let (temp, file, count) = self.finish()?;
        temp.persist(file)?;
        Ok(count)
    }
}

fn sync_dir(dir: &Path) {
    // Makes the renames durable where folders can be opened (not on Windows); best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------------
// Reading documents
// ---------------------------------------------------------------------------------------

/// Target size of a piece of a `.txt` document handed to the tokenizer at once.
const PIECE_BYTES: usize = 1 << 20;
/// Text handed to the tokenizer in one (parallel) batch.
const BATCH_BYTES: usize = 4 << 20;
/// Pieces handed to the tokenizer in one batch.
const BATCH_PIECES: usize = 4096;
/// Bumped whenever the token stream for the same inputs could change.
const FORMAT_VERSION: u32 = 1;

/// A piece of text to tokenize: part of a document, or all of it.
struct Piece {
    text: String,
    /// Index of the document file (for error messages).
    doc: usize,
    /// 0 = train, 1 = validation.
    dest: usize,
    /// The last piece of its document: the end-of-text token follows.
    ends_document: bool,
}

fn utf8_error(path: &Path, offset: u64, line: Option<usize>) -> Error {
    let at = match line {
        Some(line) => format!("line {line}, byte offset {offset}"),
        None => format!("byte offset {offset}"),
    };
    Error::file(
        path,
        format!("not valid UTF-8: invalid byte at {at} (use the lossy option to replace invalid bytes with U+FFFD)"),
    )
}

/// Where to end a piece of `buf` (not at the end of the file): after the last newline that
/// is followed by a non-space byte, so no word or run of spaces is cut; else after the
/// last space before a non-space byte; else at the last character boundary.
fn piece_cut(buf: &[u8]) -> usize {
    let starts = |i: usize| !buf[i].is_ascii_whitespace() && (buf[i] & 0xC0) != 0x80;
    if let Some(i) = (1..buf.len())
        .rev()
        .find(|&i| buf[i - 1] == b'\n' && starts(i))
    {
        return i;
    }
    if let Some(i) = (1..buf.len())
        .rev()
        .find(|&i| buf[i - 1].is_ascii_whitespace() && starts(i))
    {
        return i;
    }
    (1..buf.len())
        .rev()
        .find(|&i| (buf[i] & 0xC0) != 0x80)
        .unwrap_or(buf.len())
}

/// Reads a `.txt` document in pieces of about [`PIECE_BYTES`], cut at line starts.
fn read_text_document(
    path: &Path,
    doc: usize,
    dest: usize,
    lossy: bool,
    sink: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf: Vec<u8> = Vec::with_capacity(PIECE_BYTES);
    let mut offset: u64 = 0; // file offset of buf[0]
    let mut eof = false;
    let mut first = true;
    loop {
        if !eof && buf.len() < PIECE_BYTES {
            let want = (PIECE_BYTES - buf.len()) as u64;
            let n = (&mut reader)
                .take(want)
                .read_to_end(&mut buf)
                .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
            // `take` stops at `want` bytes or at the end of the file.
            eof = (n as u64) < want;
        }
        if first {
            first = false;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
                offset = 3;
            }
        }
        let cut = if eof { buf.len() } else { piece_cut(&buf) };
        let bytes = &buf[..cut];
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s.to_string(),
            Err(_) if lossy => String::from_utf8_lossy(bytes).into_owned(),
            Err(e) => return Err(utf8_error(path, offset + e.valid_up_to() as u64, None)),
        };
        buf.drain(..cut);
        offset += cut as u64;
        let last = eof && buf.is_empty();
        if !text.is_empty() || last {
            sink(Piece {
                text,
                doc,
                dest,
                ends_document: last,
            })?;
        }
        if last {
            return Ok(());
        }
    }
}

/// Reads a `.jsonl` file: each non-blank line is a document, the string field `field`.
fn read_jsonl_documents(
    path: &Path,
    doc: usize,
    dest: usize,
    opts: &CorpusOptions,
    sink: &mut dyn FnMut(Piece) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let mut offset: u64 = 0;
    let field = opts.text_field.as_str();
    let mut number = 0usize;
    loop {
        number += 1;
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        let line_offset = offset;
        offset += n as u64;
        let mut bytes = line.as_slice();
        let mut start = line_offset;
        if number == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes = &bytes[3..];
            start += 3;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) if opts.lossy => String::from_utf8_lossy(bytes),
            Err(e) => {
                return Err(utf8_error(
                    path,
                    start + e.valid_up_to() as u64,
                    Some(number),
                ))
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(path, format!("line {number}: not valid JSON: {e}")))?;
        let found = match value.get(field) {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                let kind = match other {
                    serde_json::Value::Null => "null",
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Array(_) => "an array",
                    _ => "an object",
                };
                return Err(Error::file(
                    path,
                    format!("line {number}: field \"{field}\" is {kind}, expected a string"),
                ));
            }
            None if value.is_object() => {
                return Err(Error::file(
                    path,
                    format!("line {number}: no field \"{field}\" (set the text field option to the field holding the text)"),
                ))
            }
            None => {
                return Err(Error::file(
                    path,
                    format!(
                        "line {number}: expected a JSON object with a field \"{field}\", found {}",
                        if value.is_array() { "an array" } else { "a JSON value that is not an object" }
                    ),
                ))
            }
        };
        sink(Piece {
            text: found.clone(),
            doc,
            dest,
            ends_document: true,
        })?;
    }
}

/// Tokenizes pieces in batches and writes the ids (and end-of-text tokens) in order.
struct Encoder<'a> {
    tokenizer: &'a tokenizers::Tokenizer,
    docs: &'a [DocFile],
    end_of_text: Option<u32>,
    pending: Vec<Piece>,
    pending_bytes: usize,
    /// Tokens of the current document written so far.
    doc_tokens: u64,
}

impl Encoder<'_> {
    fn push(&mut self, piece: Piece, writers: &mut [TokenWriter]) -> Result<()> {
        self.pending_bytes += piece.text.len();
        self.pending.push(piece);
        if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_PIECES {
            self.flush(writers)?;
        }
        Ok(())
    }

    fn flush(&mut self, writers: &mut [TokenWriter]) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pieces = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
        let encodings = match self.tokenizer.encode_batch_fast(texts, false) {
            Ok(encodings) => encodings,
            Err(batch_err) => {
                // Find the piece that fails, to name its file.
                for piece in &pieces {
                    if let Err(e) = self.tokenizer.encode_fast(piece.text.as_str(), false) {
                        return Err(Error::file(
                            &self.docs[piece.doc].path,
                            format!("the tokenizer failed: {e}"),
                        ));
                    }
                }
                return Err(Error::Invalid(format!("the tokenizer failed: {batch_err}")));
            }
        };
        for (piece, encoding) in pieces.iter().zip(&encodings) {
            let ids = encoding.get_ids();
            writers[piece.dest].push(ids)?;
            self.doc_tokens += ids.len() as u64;
            if piece.ends_document {
                if let (Some(eot), true) = (self.end_of_text, self.doc_tokens > 0) {
                    writers[piece.dest].push(&[eot])?;
                }
                self.doc_tokens = 0;
            }
        }
        Ok(())
    }
}

/// Streams every document through the tokenizer into `writers[dest]`, where `dest` is
/// `dest_of(doc)`.
fn encode_documents(
    docs: &[DocFile],
    tokenizer: &tokenizers::Tokenizer,
    opts: &CorpusOptions,
    dest_of: &dyn Fn(&DocFile) -> usize,
    writers: &mut [TokenWriter],
) -> Result<()> {
    let mut encoder = Encoder {
        tokenizer,
        docs,
        end_of_text: opts.end_of_text,
        pending: Vec::new(),
        pending_bytes: 0,
        doc_tokens: 0,
    };
    for (i, doc) in docs.iter().enumerate() {
        let dest = dest_of(doc);
        let mut sink = |piece: Piece| encoder.push(piece, writers);
        if is_jsonl(&doc.path) {
            read_jsonl_documents(&doc.path, i, dest, opts, &mut sink)?;
        } else {
            read_text_document(&doc.path, i, dest, opts.lossy, &mut sink)?;
        }
    }
    encoder.flush(writers)
}

// ---------------------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DocStamp {
    path: String,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
    validation: bool,
}

/// Everything the token stream depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fingerprint {
    format_version: u32,
    documents: Vec<DocStamp>,
    /// FNV-1a (128-bit) of the tokenizer's JSON, hex.
    tokenizer_hash: String,
    text_field: String,
    lossy: bool,
    end_of_text: Option<u32>,
    /// `None` when splitting by file.
    val_fraction: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    fingerprint: Fingerprint,
    train_tokens: u64,
    val_tokens: u64,
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

fn fingerprint(
    docs: &[DocFile],
    validation: &dyn Fn(&DocFile) -> bool,
    tokenizer_json: &str,
    opts: &CorpusOptions,
) -> Result<Fingerprint> {
    let mut documents = Vec::with_capacity(docs.len());
    for doc in docs {
        let meta = fs::metadata(&doc.canonical)
            .map_err(|e| Error::file(&doc.path, format!("cannot read metadata: {e}")))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        documents.push(DocStamp {
            path: doc.canonical.to_string_lossy().into_owned(),
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
            validation: validation(doc),
        });
    }
    Ok(Fingerprint {
        format_version: FORMAT_VERSION,
        documents,
        tokenizer_hash: format!("{:032x}", fnv1a_128(tokenizer_json.as_bytes())),
        text_field: opts.text_field.clone(),
        lossy: opts.lossy,
        end_of_text: opts.end_of_text,
        val_fraction: opts.val_files.is_empty().then_some(opts.val_fraction),
    })
}

/// The cached split, if the manifest matches `fp` and both files have the recorded sizes.
fn cached_split(out_dir: &Path, fp: &Fingerprint) -> Option<TokenSplit> {
    let text = fs::read_to_string(out_dir.join("manifest.json")).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    if manifest.fingerprint != *fp {
        return None;
    }
    let train = TokenFile::open(&out_dir.join("train.bin")).ok()?;
    let val = TokenFile::open(&out_dir.join("val.bin")).ok()?;
    (train.len() as u64 == manifest.train_tokens && val.len() as u64 == manifest.val_tokens)
        .then_some(TokenSplit { train, val })
}

fn write_manifest(out_dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = out_dir.join("manifest.json");
    let json = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::file(&path, format!("cannot serialize: {e}")))?;
    let (temp, mut file) = TempFile::create(&path)?;
    file.write_all(json.as_bytes())
        .map_err(|e| Error::file(&temp.tmp, format!("cannot write: {e}")))?;
    temp.persist(file)
}

fn describe_documents(docs: &[&DocFile]) -> String {
    let mut names: Vec<String> = docs
        .iter()
        .take(3)
        .map(|d| d.path.display().to_string())
        .collect();
    if docs.len() > 3 {
        names.push(format!("and {} more", docs.len() - 3));
    }
    format!(
        "{} document file{} ({})",
        docs.len(),
        if docs.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

// ---------------------------------------------------------------------------------------
// Tokenizing a corpus
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Sampling windows
// ---------------------------------------------------------------------------------------

/// Rounds of the Feistel network behind the per-epoch permutation.
const FEISTEL_ROUNDS: usize = 6;

/// Deterministic batches of `(inputs, labels)` windows from a token stream.
///
/// Window `i` covers tokens `[i * context_length, i * context_length + context_length + 1)`:
/// its input is the first `context_length` tokens and its labels are the same tokens shifted
/// left by one. Windows do not overlap except for that one token, so there are
/// `(num_tokens - 1) / context_length` of them.
///
/// [`WindowSampler::batch`] draws micro-batch number `step` (0-based, counting every
/// micro-batch ever drawn) as a pure function of `(seed, step)`: sample `k = step *
/// batch_size + row` is position `k % num_windows` of epoch `k / num_windows`, and each
/// epoch visits every window exactly once in its own seeded order. Resuming a run from its
/// step count therefore continues it exactly. The order is a keyed pseudo-random
/// permutation (a Feistel network whose round keys come from `ChaCha8Rng` seeded with
/// `seed`, stream `epoch`), computed per sample: no memory per window and no state.
#[derive(Debug, Clone)]
pub struct WindowSampler {
    num_tokens: usize,
    context_length: usize,
    num_windows: usize,
    seed: u64,
    /// Bits of each Feistel half: the permuted domain is `[0, 4^half_bits)`.
    half_bits: u32,
}

impl WindowSampler {
    /// A sampler over a stream of `num_tokens` tokens. Errors if `context_length` is 0 or
    /// the stream is shorter than one window (`context_length + 1` tokens).
    pub fn new(num_tokens: usize, context_length: usize, seed: u64) -> Result<Self> {
        if context_length == 0 {
            return Err(Error::config("context_length", "must be at least 1"));
        }
        let needed = context_length.saturating_add(1);
        if num_tokens < needed {
            return Err(Error::Invalid(format!(
                "too few tokens: {num_tokens} tokens, but one window of context_length {context_length} needs at least {needed}"
            )));
        }
        let num_windows = (num_tokens - 1) / context_length;
        let bits = usize::BITS - (num_windows - 1).leading_zeros(); // ceil(log2(num_windows))
        let half_bits = bits.div_ceil(2).max(1);
        Ok(WindowSampler {
            num_tokens,
            context_length,
            num_windows,
            seed,
            half_bits,
        })
    }

    /// The number of windows.
    pub fn num_windows(&self) -> usize {
        self.num_windows
    }

    /// The number of input (and label) tokens per window.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The number of tokens of the stream this sampler was made for.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    /// The epoch that the first row of micro-batch `step` belongs to.
    pub fn epoch(&self, step: u64, batch_size: usize) -> u64 {
        ((step as u128 * batch_size as u128) / self.num_windows as u128) as u64
    }

    fn round_keys(&self, epoch: u64) -> [u64; FEISTEL_ROUNDS] {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch);
        std::array::from_fn(|_| rng.next_u64())
    }

    /// Position `index` (< num_windows) of the permutation given by `keys`.
    fn permute(&self, keys: &[u64; FEISTEL_ROUNDS], index: usize) -> usize {
        let half = self.half_bits;
        let mask = (1u64 << half) - 1;
        let mut x = index as u64;
        loop {
            // A bijection of [0, 4^half): cycle-walk until the value falls in range.
            let (mut left, mut right) = (x >> half, x & mask);
            for &key in keys {
                let f = mix(right ^ key) & mask;
                (left, right) = (right, left ^ f);
            }
            x = (left << half) | right;
            if (x as usize) < self.num_windows {
                return x as usize;
            }
        }
    }

    /// The window of global sample `k` (`k = step * batch_size + row`).
    fn window_of(&self, keys: &mut Option<(u64, [u64; FEISTEL_ROUNDS])>, k: u128) -> usize {
        let w = self.num_windows as u128;
        let epoch = (k / w) as u64;
        let position = (k % w) as usize;
        let keys = match keys {
            Some((e, k)) if *e == epoch => *k,
            _ => {
                let k = self.round_keys(epoch);
                *keys = Some((epoch, k));
                k
            }
        };
        self.permute(&keys, position)
    }

    fn push_window(
        &self,
        tokens: &[u32],
        window: usize,
        inputs: &mut Vec<u32>,
        labels: &mut Vec<u32>,
    ) {
        let start = window * self.context_length;
        let span = &tokens[start..start + self.context_length + 1];
        inputs.extend_from_slice(&span[..self.context_length]);
        labels.extend_from_slice(&span[1..]);
    }

    /// Micro-batch number `step`: `(inputs, labels)`, each `batch_size * context_length`
    /// ids, row-major (row `r` is `[r * context_length, (r + 1) * context_length)`).
    ///
    /// `tokens` is the stream given to [`WindowSampler::new`] (its first `num_tokens`
    /// tokens are used).
    ///
    /// # Panics
    ///
    /// If `tokens` is shorter than the `num_tokens` given to [`WindowSampler::new`].
    pub fn batch(&self, tokens: &[u32], step: u64, batch_size: usize) -> (Vec<u32>, Vec<u32>) {
        let mut inputs = Vec::with_capacity(batch_size * self.context_length);
        let mut labels = Vec::with_capacity(batch_size * self.context_length);
        let mut keys = None;
        let first = step as u128 * batch_size as u128;
        for row in 0..batch_size {
            let window = self.window_of(&mut keys, first + row as u128);
            self.push_window(tokens, window, &mut inputs, &mut labels);
        }
        (inputs, labels)
    }

    /// The first `max_windows` windows (all of them if fewer) in order, in batches of
    /// `batch_size` rows (the last batch may have fewer): a fixed evaluation set. Empty if
    /// `batch_size` is 0.
    ///
    /// # Panics
    ///
    /// If `tokens` is shorter than the `num_tokens` given to [`WindowSampler::new`].
    pub fn sequential_batches(
        &self,
        tokens: &[u32],
        batch_size: usize,
        max_windows: usize,
    ) -> Vec<(Vec<u32>, Vec<u32>)> {
        if batch_size == 0 {
            return Vec::new();
        }
        let n = max_windows.min(self.num_windows);
        (0..n)
            .step_by(batch_size)
            .map(|first| {
                let rows = batch_size.min(n - first);
                let mut inputs = Vec::with_capacity(rows * self.context_length);
                let mut labels = Vec::with_capacity(rows * self.context_length);
                for window in first..first + rows {
                    self.push_window(tokens, window, &mut inputs, &mut labels);
                }
                (inputs, labels)
            })
            .collect()
    }
}

/// A 64-bit mixer (the SplitMix64 finalizer): the Feistel round function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
