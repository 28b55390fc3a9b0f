//! The manifest beside the token files: a fingerprint of everything the token stream depends
//! on, so an unchanged corpus is tokenized once.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::documents::DocFile;
use super::token_file::{TokenFile, TokenSplit};
use super::writer::TempFile;
use super::CorpusOptions;
use crate::error::{Error, Result};

/// Bumped whenever the token stream for the same inputs could change.
const FORMAT_VERSION: u32 = 1;

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
pub(super) struct Fingerprint {
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

/// `manifest.json`: the fingerprint and the token counts of the files it describes.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Manifest {
    /// What the files were made from.
    pub(super) fingerprint: Fingerprint,
    /// Tokens in `train.bin`.
    pub(super) train_tokens: u64,
    /// Tokens in `val.bin`.
    pub(super) val_tokens: u64,
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

/// The fingerprint of `docs` (paths, sizes, modification times, which are validation), the
/// tokenizer and the options.
pub(super) fn fingerprint(
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
pub(super) fn cached_split(out_dir: &Path, fp: &Fingerprint) -> Option<TokenSplit> {
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

/// Writes `out_dir/manifest.json` atomically.
pub(super) fn write_manifest(out_dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = out_dir.join("manifest.json");
    let json = serde_json::to_string_pretty(manifest)
        .map_err(|e| Error::file(&path, format!("cannot serialize: {e}")))?;
    let (temp, mut file) = TempFile::create(&path)?;
    file.write_all(json.as_bytes())
        .map_err(|e| Error::file(&temp.tmp, format!("cannot write: {e}")))?;
    temp.persist(file)
}
