//! Listing the documents of a corpus: files given directly or found in folders, sorted and
//! each once.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::CorpusOptions;
use crate::error::{Error, Result};

/// A document file and its canonical path (used to deduplicate and to match `val_files`).
pub(super) struct DocFile {
    /// The path as listed.
    pub(super) path: PathBuf,
    /// The path with links resolved.
    pub(super) canonical: PathBuf,
}

/// Whether `path` is a `.jsonl` file (one document per line).
pub(super) fn is_jsonl(path: &Path) -> bool {
    has_extension(path, "jsonl")
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// `path` with links resolved; an error names the path.
pub(super) fn canonical(path: &Path) -> Result<PathBuf> {
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
pub(super) fn collect_documents(inputs: &[PathBuf], opts: &CorpusOptions) -> Result<Vec<DocFile>> {
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

/// "3 document files (a.txt, b.txt, c.txt)", with at most three names, for errors.
pub(super) fn describe_documents(docs: &[&DocFile]) -> String {
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
