//! Reading documents (`.txt` files in pieces, `.jsonl` files line by line) and streaming
//! them through the tokenizer in batches.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::documents::{is_jsonl, DocFile};
use super::writer::TokenWriter;
use super::CorpusOptions;
use crate::error::{Error, Result};

/// Target size of a piece of a `.txt` document handed to the tokenizer at once.
const PIECE_BYTES: usize = 1 << 20;
/// Text handed to the tokenizer in one (parallel) batch.
const BATCH_BYTES: usize = 4 << 20;
/// Pieces handed to the tokenizer in one batch.
const BATCH_PIECES: usize = 4096;

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
pub(super) fn encode_documents(
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
