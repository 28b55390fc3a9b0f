//! Model resolution against a real HTTP server: a small hub on 127.0.0.1 that speaks the
//! part of the Hugging Face hub API that `hf-hub` uses (repo listing, `resolve` with
//! `X-Repo-Commit`/`ETag`/`X-Linked-Etag`, a redirect to a "CDN" for LFS files, `Range`
//! requests) and serves the tiny BERT checkpoint from `tests/fixtures/encoders/bert-seqcls`.
//! Every test gets its own server and its own cache folder, so they run in parallel.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferroformer::models::hub::{
    cached_snapshot_in, resolve_file_with, resolve_with, HubOptions, DEFAULT_ENDPOINT,
};
use ferroformer::models::{checkpoint_files, read_config, BertModel};
use ferroformer::{DType, Device};

// ---------------------------------------------------------------------------------------
// The fake hub
// ---------------------------------------------------------------------------------------

/// A stand-in for a content hash (the hub uses git blob sha1 and LFS sha256); only
/// uniqueness matters here, and the tests compute the same names independently.
fn hex_hash(data: &[u8], chars: usize) -> String {
    let mut out = String::new();
    let mut seed = 0u64;
    while out.len() < chars {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
        seed += 1;
    }
    out.truncate(chars);
    out
}

fn is_lfs(name: &str) -> bool {
    [".safetensors", ".bin", ".gguf"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The blob name the hub's headers give a file: the LFS sha256 for LFS files (sent as
/// `X-Linked-Etag`), else the git blob id (sent as `ETag`).
fn etag_of(name: &str, bytes: &[u8]) -> String {
    if is_lfs(name) {
        hex_hash(bytes, 64)
    } else {
        let mut data = b"blob ".to_vec();
        data.extend_from_slice(bytes);
        hex_hash(&data, 40)
    }
}

fn commit_sha(label: &str) -> String {
    hex_hash(label.as_bytes(), 40)
}

type Files = BTreeMap<String, Vec<u8>>;

#[derive(Default)]
struct FakeRepo {
    /// commit sha → files
    commits: HashMap<String, Files>,
    /// branch or tag → commit sha
    refs: HashMap<String, String>,
    /// The token a request must carry (a gated repo).
    token: Option<String>,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct HubState {
    repos: HashMap<String, FakeRepo>,
    seen: Vec<Seen>,
    /// File name → how many more transfers of it to cut off halfway.
    interrupt: HashMap<String, usize>,
}

struct FakeHub {
    addr: SocketAddr,
    state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    fn start(repos: HashMap<String, FakeRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HubState {
            repos,
            ..HubState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // One request per connection (we answer `Connection: close`), one
                        // at a time: the client is synchronous.
                        let _ = handle(stream, addr, &state);
                    }
                }
            })
        };
        FakeHub {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn opts(&self, cache: &Path) -> HubOptions {
        HubOptions {
            endpoint: self.endpoint(),
            cache_dir: cache.to_path_buf(),
            offline: false,
            token: None,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn interrupt(&self, file: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .interrupt
            .insert(file.to_string(), times);
    }

    /// Stops accepting; the port is closed when this returns.
    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking `accept`.
            let _ = TcpStream::connect(self.addr);
            thread.join().unwrap();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes (after announcing all of them), then hang up.
    cut_after: Option<usize>,
}

impl Response {
    fn new(status: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            cut_after: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn error(status: &'static str, message: &str) -> Self {
        Response::new(status, serde_json::json!({ "error": message }).to_string())
            .header("Content-Type", "application/json")
    }
}

fn handle(stream: TcpStream, addr: SocketAddr, state: &Mutex<HubState>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let seen = Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    let response = {
        let mut state = state.lock().unwrap();
        state.seen.push(seen.clone());
        route(&mut state, addr, &seen)
    };
    let mut out = &stream;
    let sent = response.cut_after.unwrap_or(response.body.len());
    let mut head = format!("HTTP/1.1 {}\r\n", response.status);
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    out.write_all(head.as_bytes())?;
    out.write_all(&response.body[..sent])?;
    out.flush()?;
    stream.shutdown(Shutdown::Both)
}

fn route(state: &mut HubState, addr: SocketAddr, req: &Seen) -> Response {
    if let Some(rest) = req.path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.rsplit_once("/revision/") else {
            return Response::error("404 Not Found", "Not Found");
        };
        let (repo, commit) = match find(state, id, &percent_decode(rev), req) {
            Ok(found) => found,
            Err(response) => return response,
        };
        let siblings: Vec<_> = repo.commits[&commit]
            .iter()
            .map(|(name, bytes)| {
                let mut s = serde_json::json!({
                    "rfilename": name,
                    "size": bytes.len(),
                    "blobId": etag_of("", bytes),
                });
                if is_lfs(name) {
                    s["lfs"] = serde_json::json!({
                        "sha256": etag_of(name, bytes),
                        "size": bytes.len(),
                        "pointerSize": 134,
                    });
                }
                s
            })
            .collect();
        let body = serde_json::json!({ "id": id, "sha": commit, "siblings": siblings });
        return Response::new("200 OK", body.to_string())
            .header("Content-Type", "application/json");
    }
    if let Some(etag) = req.path.strip_prefix("/cdn/") {
        // The "CDN" answers with its own ETag, as S3 does: the blob name must come from
        // the hub's `X-Linked-Etag`, not from here.
        let found = state
            .repos
            .values()
            .flat_map(|r| r.commits.values())
            .find_map(|files| {
                files
                    .iter()
                    .find(|(name, bytes)| etag_of(name, bytes) == etag)
                    .map(|(name, bytes)| (name.clone(), bytes.clone()))
            });
        return match found {
            Some((name, bytes)) => serve_bytes(state, &name, &bytes, req)
                .header("ETag", format!("\"cdn-{}\"", &etag[..8])),
            None => Response::error("404 Not Found", "no such object"),
        };
    }
    let Some((id, rest)) = req.path[1..].split_once("/resolve/") else {
        return Response::error("404 Not Found", "Not Found");
    };
    let Some((rev, file)) = rest.split_once('/') else {
        return Response::error("404 Not Found", "Not Found");
    };
    let (repo, commit) = match find(state, id, &percent_decode(rev), req) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(bytes) = repo.commits[&commit].get(file).cloned() else {
        return Response::error("404 Not Found", "Entry not found")
            .header("X-Error-Code", "EntryNotFound");
    };
    let etag = etag_of(file, &bytes);
    if is_lfs(file) {
        return Response::new("302 Found", Vec::new())
            .header("Location", format!("http://{addr}/cdn/{etag}"))
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{etag}\""))
            .header("X-Linked-Size", bytes.len().to_string())
            .header("ETag", "\"pointer-etag\"");
    }
    serve_bytes(state, file, &bytes, req)
        .header("X-Repo-Commit", commit)
        .header("ETag", format!("\"{etag}\""))
}

/// The repo and the commit a revision names, or the hub's error answer.
fn find<'a>(
    state: &'a HubState,
    id: &str,
    rev: &str,
    req: &Seen,
) -> Result<(&'a FakeRepo, String), Response> {
    let repo = state
        .repos
        .get(id)
        .ok_or_else(|| Response::error("404 Not Found", "Repository not found"))?;
    if let Some(token) = &repo.token {
        if req.auth.as_deref() != Some(&format!("Bearer {token}")) {
            return Err(Response::error(
                "401 Unauthorized",
                "Access to model is restricted",
            ));
        }
    }
    let commit = match repo.refs.get(rev) {
        Some(commit) => commit.clone(),
        None if repo.commits.contains_key(rev) => rev.to_string(),
        None => {
            return Err(Response::error(
                "404 Not Found",
                &format!("Invalid rev id: {rev}"),
            ))
        }
    };
    Ok((repo, commit))
}

/// A file's bytes, honouring `Range: bytes=a-` / `bytes=a-b`, possibly cut off halfway.
fn serve_bytes(state: &mut HubState, name: &str, bytes: &[u8], req: &Seen) -> Response {
    let total = bytes.len();
    let (start, end) = match req.range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse::<usize>().unwrap().min(total - 1)
            };
            (a, b)
        }
        None => (0, total - 1),
    };
    if start >= total {
        return Response::error("416 Range Not Satisfiable", "bad range");
    }
    let mut response = if req.range.is_some() {
        Response::new("206 Partial Content", bytes[start..=end].to_vec())
            .header("Content-Range", format!("bytes {start}-{end}/{total}"))
    } else {
        Response::new("200 OK", bytes.to_vec())
    };
    // The 1-byte probe hf-hub makes for the metadata is never cut.
    let is_probe = req.range.as_deref() == Some("bytes=0-0");
    if let Some(left) = state.interrupt.get_mut(name).filter(|n| **n > 0) {
        if !is_probe {
            *left -= 1;
            response.cut_after = Some(response.body.len() / 2);
        }
    }
    response.header("Accept-Ranges", "bytes")
}

// ---------------------------------------------------------------------------------------
// Repos served
// ---------------------------------------------------------------------------------------

fn fixture_files() -> Files {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/bert-seqcls");
    [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(dir.join(f)).unwrap()))
    .collect()
}

/// `org/tiny-bert`: tag `v1.0` is the fixture; `main` one commit later changes the
/// config and adds files a checkpoint download must leave alone.
fn tiny_bert() -> (FakeRepo, String, String) {
    let v1 = commit_sha("tiny-bert v1.0");
    let head = commit_sha("tiny-bert main");
    let old = fixture_files();
    let mut new = old.clone();
    let mut config: serde_json::Value = serde_json::from_slice(&old["config.json"]).unwrap();
    config["_name_or_path"] = "org/tiny-bert (main)".into();
    new.insert(
        "config.json".into(),
        serde_json::to_vec_pretty(&config).unwrap(),
    );
    new.insert("README.md".into(), b"# tiny bert\n".to_vec());
    new.insert("pytorch_model.bin".into(), vec![7u8; 3000]);
    new.insert("tiny-q8_0.gguf".into(), b"GGUF\x03\0\0\0fake".to_vec());
    let repo = FakeRepo {
        commits: HashMap::from([(v1.clone(), old), (head.clone(), new)]),
        refs: HashMap::from([("main".into(), head.clone()), ("v1.0".into(), v1.clone())]),
        token: None,
    };
    (repo, v1, head)
}

fn hub_with_tiny_bert() -> (FakeHub, String, String) {
    let (repo, v1, head) = tiny_bert();
    let hub = FakeHub::start(HashMap::from([("org/tiny-bert".to_string(), repo)]));
    (hub, v1, head)
}

fn one_commit_repo(label: &str, files: Files) -> (FakeRepo, String) {
    let sha = commit_sha(label);
    let repo = FakeRepo {
        commits: HashMap::from([(sha.clone(), files)]),
        refs: HashMap::from([("main".into(), sha.clone())]),
        token: None,
    };
    (repo, sha)
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// Asserts that `snapshot/name` is a relative symlink into the repo's `blobs/`, named by
/// the file's etag, holding exactly `bytes`.
fn assert_linked_blob(snapshot: &Path, name: &str, bytes: &[u8]) {
    let pointer = snapshot.join(name);
    let meta = std::fs::symlink_metadata(&pointer)
        .unwrap_or_else(|e| panic!("{}: {e}", pointer.display()));
    assert!(meta.file_type().is_symlink(), "{name} is not a symlink");
    let depth = 2 + name.matches('/').count();
    let expected = format!("{}blobs/{}", "../".repeat(depth), etag_of(name, bytes));
    assert_eq!(
        std::fs::read_link(&pointer).unwrap(),
        PathBuf::from(expected),
        "{name}"
    );
    let repo_dir = snapshot.parent().unwrap().parent().unwrap();
    assert_eq!(
        std::fs::canonicalize(&pointer).unwrap(),
        std::fs::canonicalize(repo_dir.join("blobs").join(etag_of(name, bytes))).unwrap()
    );
    assert_eq!(std::fs::read(&pointer).unwrap(), bytes, "{name}");
}

/// Every file under `dir` (not following symlinks), relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// No partial download, lock or staging folder anywhere in the cache.
fn assert_no_leftovers(cache: &Path) {
    for f in walk(cache) {
        assert!(
            !f.ends_with(".part")
                && !f.ends_with(".lock")
                && !f.ends_with(".incomplete")
                && !f.contains(".ferroformer-download"),
            "left behind: {f}"
        );
    }
}

fn count(seen: &[Seen], pred: impl Fn(&Seen) -> bool) -> usize {
    seen.iter().filter(|s| pred(s)).count()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn download_populates_the_cache_in_the_huggingface_hub_layout() {
    let (hub, _v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let opts = hub.opts(cache.path());

    let dir = resolve_with("org/tiny-bert", &opts).unwrap();

    let repo_dir = cache.path().join("models--org--tiny-bert");
    assert_eq!(dir, repo_dir.join("snapshots").join(&head));
    // refs/main holds the commit, byte for byte as Python writes it (no newline).
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        head
    );
    let served = &tiny_bert().0.commits[&head];
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        assert_linked_blob(&dir, name, &served[name]);
    }
    // Not part of a checkpoint (the README), not asked for (GGUF), or superseded by
    // safetensors (the .bin): not fetched.
    for name in ["README.md", "tiny-q8_0.gguf", "pytorch_model.bin"] {
        assert!(!dir.join(name).exists(), "{name} was fetched");
    }
    let seen = hub.seen();
    assert_eq!(
        count(&seen, |s| s.path.contains("pytorch_model.bin")
            || s.path.contains(".gguf")),
        0
    );
    // Files the repo lacks get Python's `.no_exist` markers.
    assert!(repo_dir
        .join(".no_exist")
        .join(&head)
        .join("generation_config.json")
        .is_file());
    assert!(!repo_dir
        .join(".no_exist")
        .join(&head)
        .join("config.json")
        .exists());
    assert_no_leftovers(cache.path());
    // No token configured, none sent.
    assert!(seen.iter().all(|s| s.auth.is_none()), "{seen:?}");

    // It is a checkpoint the library loads.
    let config: serde_json::Value = read_config(&dir).unwrap();
    assert_eq!(config["_name_or_path"], "org/tiny-bert (main)");
    assert_eq!(
        checkpoint_files(&dir).unwrap(),
        vec![dir.join("model.safetensors")]
    );
    BertModel::from_dir(&dir, DType::F32, &Device::Cpu).unwrap();

    // Complete now: a second resolution asks the server nothing.
    let before = hub.seen().len();
    assert_eq!(resolve_with("org/tiny-bert", &opts).unwrap(), dir);
    assert_eq!(hub.seen().len(), before);

    // A file resolve() leaves alone comes on request, alone, into the same snapshot.
    let gguf = resolve_file_with("org/tiny-bert", "tiny-q8_0.gguf", &opts).unwrap();
    assert_eq!(gguf, dir.join("tiny-q8_0.gguf"));
    assert_linked_blob(&dir, "tiny-q8_0.gguf", &served["tiny-q8_0.gguf"]);
    let new: Vec<_> = hub.seen()[before..].to_vec();
    assert!(
        new.iter().all(|s| s.path.starts_with("/api/")
            || s.path.contains("gguf")
            || s.path.starts_with("/cdn/")),
        "{new:?}"
    );
    let before = hub.seen().len();
    assert_eq!(
        resolve_file_with("org/tiny-bert", "tiny-q8_0.gguf", &opts).unwrap(),
        gguf
    );
    assert_eq!(hub.seen().len(), before);
    let err = resolve_file_with("org/tiny-bert", "nope.gguf", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("org/tiny-bert") && err.contains("nope.gguf") && err.contains(&head),
        "{err}"
    );
    assert_no_leftovers(cache.path());
}

#[test]
fn pinned_revisions_resolve_to_their_own_snapshots() {
    let (hub, v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let opts = hub.opts(cache.path());
    let repo_dir = cache.path().join("models--org--tiny-bert");
    let fixture = fixture_files();

    // A tag.
    let tagged = resolve_with("org/tiny-bert@v1.0", &opts).unwrap();
    assert_eq!(tagged, repo_dir.join("snapshots").join(&v1));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/v1.0")).unwrap(),
        v1
    );
    assert_linked_blob(&tagged, "config.json", &fixture["config.json"]);
    assert!(!repo_dir.join("refs/main").exists());

    // A commit hash: its own snapshot, and (as in Python) no ref named after it.
    let pinned = resolve_with(&format!("org/tiny-bert@{head}"), &opts).unwrap();
    assert_eq!(pinned, repo_dir.join("snapshots").join(&head));
    assert!(!repo_dir.join("refs").join(&head).exists());
    let config: serde_json::Value = read_config(&pinned).unwrap();
    assert_eq!(config["_name_or_path"], "org/tiny-bert (main)");

    // The weights did not change between the commits: one blob, fetched once.
    assert_eq!(
        std::fs::canonicalize(tagged.join("model.safetensors")).unwrap(),
        std::fs::canonicalize(pinned.join("model.safetensors")).unwrap()
    );
    let weight_gets = count(&hub.seen(), |s| {
        s.path.starts_with("/cdn/") && s.range.as_deref() != Some("bytes=0-0")
    });
    assert_eq!(weight_gets, 1);

    // The branch resolves to the same commit as its hash, offline once cached.
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert!(resolve_with("org/tiny-bert", &offline).is_err());
    assert_eq!(resolve_with("org/tiny-bert", &opts).unwrap(), pinned);
    assert_eq!(resolve_with("org/tiny-bert", &offline).unwrap(), pinned);
    assert_eq!(
        resolve_with("org/tiny-bert@v1.0", &offline).unwrap(),
        tagged
    );

    // A revision the hub does not know.
    let err = resolve_with("org/tiny-bert@v9", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("org/tiny-bert@v9") && err.contains("v9"),
        "{err}"
    );
    assert_no_leftovers(cache.path());
}

#[test]
fn offline_reuse_makes_no_request() {
    let (mut hub, _v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let opts = hub.opts(cache.path());
    let dir = resolve_with("org/tiny-bert", &opts).unwrap();

    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    let before = hub.seen().len();
    assert_eq!(resolve_with("org/tiny-bert", &offline).unwrap(), dir);
    assert_eq!(
        resolve_with(&format!("org/tiny-bert@{head}"), &offline).unwrap(),
        dir
    );
    assert_eq!(hub.seen().len(), before);

    // With the server gone the port refuses connections: only the cache can answer.
    hub.stop();
    assert!(TcpStream::connect(hub.addr).is_err());
    assert_eq!(resolve_with("org/tiny-bert", &offline).unwrap(), dir);
    // Online too: the snapshot is complete, so nothing is asked.
    assert_eq!(resolve_with("org/tiny-bert", &opts).unwrap(), dir);
    assert_eq!(
        cached_snapshot_in(cache.path(), "org/tiny-bert").unwrap(),
        dir
    );
    // A file that is not cached cannot come offline, and the error says where it looked.
    let err = resolve_file_with("org/tiny-bert", "tiny-q8_0.gguf", &offline)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tiny-q8_0.gguf") && err.contains(&dir.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_cache_python_wrote_is_found_offline_and_completed_online() {
    let (hub, _v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let served = tiny_bert().0.commits[&head].clone();
    // What `AutoConfig`/`AutoModel.from_pretrained` leave: two files, no tokenizer.
    let repo_dir = cache.path().join("models--org--tiny-bert");
    let snapshot = repo_dir.join("snapshots").join(&head);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(repo_dir.join("refs/main"), &head).unwrap();
    for name in ["config.json", "model.safetensors"] {
        let etag = etag_of(name, &served[name]);
        std::fs::write(repo_dir.join("blobs").join(&etag), &served[name]).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snapshot.join(name)).unwrap();
    }

    let offline = HubOptions {
        offline: true,
        ..hub.opts(cache.path())
    };
    assert_eq!(resolve_with("org/tiny-bert", &offline).unwrap(), snapshot);
    assert!(hub.seen().is_empty());

    // Online, the missing tokenizer files are fetched into the same snapshot; what was
    // there is not fetched again.
    let dir = resolve_with("org/tiny-bert", &hub.opts(cache.path())).unwrap();
    assert_eq!(dir, snapshot);
    for name in ["tokenizer.json", "vocab.txt", "special_tokens_map.json"] {
        assert_linked_blob(&dir, name, &served[name]);
    }
    let seen = hub.seen();
    assert_eq!(
        count(&seen, |s| s.path.ends_with("/config.json")
            || s.path.starts_with("/cdn/")
            || s.path.ends_with("model.safetensors")),
        0,
        "{seen:?}"
    );
    let before = seen.len();
    assert_eq!(
        resolve_with("org/tiny-bert", &hub.opts(cache.path())).unwrap(),
        dir
    );
    assert_eq!(hub.seen().len(), before);
}

#[test]
fn bare_names_nested_files_and_sharded_weights() {
    let mut files = fixture_files();
    files.retain(|name, _| name == "config.json" || name == "model.safetensors");
    files.insert(
        "modules.json".into(),
        br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#.to_vec(),
    );
    files.insert(
        "1_Pooling/config.json".into(),
        br#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#.to_vec(),
    );
    let (bare, bare_sha) = one_commit_repo("bare", files.clone());

    let index = serde_json::json!({
        "metadata": {"total_size": 3000},
        "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors",
            "c.weight": "model-00001-of-00002.safetensors",
        }
    });
    let mut sharded_files = Files::new();
    sharded_files.insert("config.json".into(), files["config.json"].clone());
    sharded_files.insert(
        "model.safetensors.index.json".into(),
        serde_json::to_vec(&index).unwrap(),
    );
    sharded_files.insert("model-00001-of-00002.safetensors".into(), vec![1u8; 1000]);
    sharded_files.insert("model-00002-of-00002.safetensors".into(), vec![2u8; 2000]);
    let (sharded, sharded_sha) = one_commit_repo("sharded", sharded_files.clone());

    let hub = FakeHub::start(HashMap::from([
        ("tiny".to_string(), bare),
        ("org/sharded".to_string(), sharded),
    ]));
    let cache = tempfile::tempdir().unwrap();
    let opts = hub.opts(cache.path());

    // `tiny` has no org, like `gpt2`: its cache folder is `models--tiny`.
    let dir = resolve_with("tiny", &opts).unwrap();
    assert_eq!(
        dir,
        cache.path().join("models--tiny/snapshots").join(&bare_sha)
    );
    for (name, bytes) in &files {
        // 1_Pooling/config.json links `../../../blobs/...`.
        assert_linked_blob(&dir, name, bytes);
    }

    let dir = resolve_with("org/sharded", &opts).unwrap();
    assert_eq!(
        dir,
        cache
            .path()
            .join("models--org--sharded/snapshots")
            .join(&sharded_sha)
    );
    for (name, bytes) in &sharded_files {
        assert_linked_blob(&dir, name, bytes);
    }
    assert_eq!(
        checkpoint_files(&dir).unwrap(),
        vec![
            dir.join("model-00001-of-00002.safetensors"),
            dir.join("model-00002-of-00002.safetensors")
        ]
    );
    let before = hub.seen().len();
    assert_eq!(resolve_with("org/sharded", &opts).unwrap(), dir);
    assert_eq!(hub.seen().len(), before);
    assert_no_leftovers(cache.path());
}

#[test]
fn unknown_model_is_a_clear_error() {
    let (hub, _v1, _head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let err = resolve_with("nobody/nothing", &hub.opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`nobody/nothing`")
            && err.contains("404")
            && err.contains("not found")
            && err.contains("Repository not found"),
        "{err}"
    );
    assert!(!cache.path().join("models--nobody--nothing").exists());

    // Neither a path nor a hub id.
    let err = resolve_with("a/b/c", &hub.opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`a/b/c`") && err.contains("neither"), "{err}");
    // Nothing reached the server for it.
    assert_eq!(hub.seen().len(), 1);
}

#[test]
fn interrupted_transfer_leaves_no_partial_file_and_a_retry_succeeds() {
    let (hub, _v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let opts = hub.opts(cache.path());
    let weights = &tiny_bert().0.commits[&head]["model.safetensors"];
    // Every transfer of the weights stops halfway, after a full Content-Length.
    hub.interrupt("model.safetensors", usize::MAX);

    let err = resolve_with("org/tiny-bert", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("org/tiny-bert"),
        "{err}"
    );
    let repo_dir = cache.path().join("models--org--tiny-bert");
    let snapshot = repo_dir.join("snapshots").join(&head);
    assert!(std::fs::symlink_metadata(snapshot.join("model.safetensors")).is_err());
    assert!(!repo_dir
        .join("blobs")
        .join(etag_of("model.safetensors", weights))
        .exists());
    // Whatever is in blobs/ is a whole file the hub serves (the ones fetched before the
    // weights).
    let served = &tiny_bert().0.commits[&head];
    for blob in std::fs::read_dir(repo_dir.join("blobs")).unwrap() {
        let blob = blob.unwrap().path();
        let name = blob.file_name().unwrap().to_str().unwrap().to_string();
        let whole = served
            .iter()
            .any(|(f, bytes)| etag_of(f, bytes) == name && std::fs::read(&blob).unwrap() == *bytes);
        assert!(whole, "partial or unknown blob {name}");
    }
    // No ref to a half-made snapshot.
    assert!(!repo_dir.join("refs/main").exists());
    assert_no_leftovers(cache.path());
    // hf-hub retried, resuming where each attempt stopped.
    let transfers: Vec<_> = hub
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/cdn/") && s.range.as_deref() != Some("bytes=0-0"))
        .collect();
    assert!(transfers.len() >= 2, "{transfers:?}");
    // Each attempt got half of what it asked for; the next asked for the rest.
    let mut start = 0;
    for t in &transfers {
        assert_eq!(t.range, Some(format!("bytes={start}-")), "{transfers:?}");
        start += (weights.len() - start) / 2;
    }

    // The link is back: the next resolution completes the snapshot.
    hub.interrupt("model.safetensors", 0);
    let dir = resolve_with("org/tiny-bert", &opts).unwrap();
    assert_eq!(dir, snapshot);
    assert_linked_blob(&dir, "model.safetensors", weights);
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        head
    );
    assert_no_leftovers(cache.path());
}

#[test]
fn a_dropped_transfer_resumes_within_one_call() {
    let (hub, _v1, head) = hub_with_tiny_bert();
    let cache = tempfile::tempdir().unwrap();
    let served = tiny_bert().0.commits[&head].clone();
    hub.interrupt("model.safetensors", 1);
    hub.interrupt("tokenizer.json", 1);

    let dir = resolve_with("org/tiny-bert", &hub.opts(cache.path())).unwrap();
    assert_linked_blob(&dir, "model.safetensors", &served["model.safetensors"]);
    assert_linked_blob(&dir, "tokenizer.json", &served["tokenizer.json"]);
    let seen = hub.seen();
    let resumed = |prefix: &str, len: usize| {
        count(&seen, |s| {
            s.path.starts_with(prefix) && s.range == Some(format!("bytes={}-", len / 2))
        })
    };
    assert_eq!(resumed("/cdn/", served["model.safetensors"].len()), 1);
    assert_eq!(
        resumed("/org/tiny-bert/resolve/", served["tokenizer.json"].len()),
        1
    );
    assert_no_leftovers(cache.path());
}

#[test]
fn offline_or_unreachable_with_nothing_cached_names_the_id_and_the_paths() {
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache.path().join("models--org--tiny-bert");
    let offline = HubOptions {
        endpoint: DEFAULT_ENDPOINT.to_string(),
        cache_dir: cache.path().to_path_buf(),
        offline: true,
        token: None,
    };
    let err = resolve_with("org/tiny-bert@v1.0", &offline)
        .unwrap_err()
        .to_string();
    for part in [
        "`org/tiny-bert@v1.0`".to_string(),
        repo_dir.join("refs/v1.0").display().to_string(),
        repo_dir.join("snapshots/v1.0").display().to_string(),
        "HF_HUB_OFFLINE".to_string(),
        "huggingface-cli download org/tiny-bert --revision v1.0".to_string(),
    ] {
        assert!(err.contains(&part), "missing {part:?} in: {err}");
    }
    assert!(!repo_dir.exists());

    // A port nobody listens on.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = HubOptions {
        endpoint: format!("http://{closed}"),
        offline: false,
        ..offline
    };
    let err = resolve_with("org/tiny-bert", &unreachable)
        .unwrap_err()
        .to_string();
    for part in [
        "`org/tiny-bert`".to_string(),
        format!("http://{closed}"),
        repo_dir.join("refs/main").display().to_string(),
        repo_dir.join("snapshots/main").display().to_string(),
    ] {
        assert!(err.contains(&part), "missing {part:?} in: {err}");
    }
}

#[test]
fn the_token_goes_to_the_hub() {
    let (mut gated, sha) = one_commit_repo("gated", fixture_files());
    gated.token = Some("hf_secret".into());
    let hub = FakeHub::start(HashMap::from([("org/gated".to_string(), gated)]));
    let cache = tempfile::tempdir().unwrap();

    let err = resolve_with("org/gated", &hub.opts(cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("HF_TOKEN") && err.contains("`org/gated`"),
        "{err}"
    );

    let opts = HubOptions {
        token: Some("hf_secret".into()),
        ..hub.opts(cache.path())
    };
    let dir = resolve_with("org/gated", &opts).unwrap();
    assert_eq!(
        dir,
        cache.path().join("models--org--gated/snapshots").join(sha)
    );
    assert_linked_blob(
        &dir,
        "model.safetensors",
        &fixture_files()["model.safetensors"],
    );
    let seen = hub.seen();
    assert!(seen[1..]
        .iter()
        .filter(|s| !s.path.starts_with("/cdn/"))
        .all(|s| s.auth.as_deref() == Some("Bearer hf_secret")));
    // The token never shows in a printed HubOptions.
    assert!(!format!("{opts:?}").contains("hf_secret"));
}

#[test]
fn local_paths_are_returned_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.gguf");
    std::fs::write(&file, b"GGUF").unwrap();
    // An endpoint that would fail if it were used.
    let opts = HubOptions {
        endpoint: "http://127.0.0.1:9".into(),
        cache_dir: dir.path().join("cache"),
        offline: false,
        token: None,
    };
    let as_str = |p: &Path| p.to_str().unwrap().to_string();
    assert_eq!(
        resolve_with(&as_str(dir.path()), &opts).unwrap(),
        dir.path()
    );
    assert_eq!(resolve_with(&as_str(&file), &opts).unwrap(), file);
    assert_eq!(
        resolve_file_with(&as_str(dir.path()), "model.gguf", &opts).unwrap(),
        file
    );
    assert!(resolve_file_with(&as_str(dir.path()), "other.gguf", &opts).is_err());
    // A file name may not climb out of the snapshot.
    let err = resolve_file_with("org/x", "../../etc/passwd", &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("../../etc/passwd"), "{err}");
    assert!(!dir.path().join("cache").exists());
}

#[test]
fn options_come_from_the_hf_variables() {
    let home = tempfile::tempdir().unwrap();
    let hf_home = home.path().join("hf");
    std::fs::create_dir_all(&hf_home).unwrap();
    std::fs::write(hf_home.join("token"), "hf_from_file\n").unwrap();
    let env = |vars: &[(&str, &str)]| {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_lookup(move |name| vars.get(name).cloned())
    };
    let home_str = home.path().to_str().unwrap();
    let hf_home_str = hf_home.to_str().unwrap();

    let defaults = env(&[("HOME", home_str)]);
    assert_eq!(defaults.endpoint, "https://huggingface.co");
    assert_eq!(
        defaults.cache_dir,
        home.path().join(".cache/huggingface/hub")
    );
    assert!(!defaults.offline);
    assert_eq!(defaults.token, None);

    let o = env(&[
        ("HOME", home_str),
        ("HF_HOME", hf_home_str),
        ("HF_ENDPOINT", "http://mirror.local:8080/"),
        ("HF_HUB_OFFLINE", "1"),
    ]);
    assert_eq!(o.endpoint, "http://mirror.local:8080");
    assert_eq!(o.cache_dir, hf_home.join("hub"));
    assert!(o.offline);
    assert_eq!(o.token.as_deref(), Some("hf_from_file"));

    let o = env(&[
        ("HF_HOME", hf_home_str),
        ("HF_HUB_CACHE", "/somewhere/else"),
        ("HF_TOKEN", "hf_env"),
        ("TRANSFORMERS_OFFLINE", "TRUE"),
    ]);
    assert_eq!(o.cache_dir, PathBuf::from("/somewhere/else"));
    assert_eq!(o.token.as_deref(), Some("hf_env"));
    assert!(o.offline);

    for off in ["0", "false", ""] {
        assert!(!env(&[("HOME", home_str), ("HF_HUB_OFFLINE", off)]).offline);
    }
}
