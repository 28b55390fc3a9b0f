//! Next-token datasets: corpus listing, tokenization into train/val token files, the cache
//! manifest, and the deterministic window sampler.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferroformer::train::data::{
    list_documents, tokenize_corpus, CorpusOptions, TokenFile, WindowSampler,
};
use ferroformer::Error;
use tokenizers::Tokenizer;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ferroformer-train-data-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` (creating parent folders) and returns its path.
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The characters of the test tokenizer; a character's id is its index.
fn alphabet() -> Vec<char> {
    let mut chars: Vec<char> = (b' '..=b'~').map(char::from).collect();
    chars.extend(['\n', '\t', 'é', 'ß', '€', '\u{FFFD}']);
    chars
}

/// The id appended after documents in the tests (one past the vocabulary).
fn eot() -> u32 {
    alphabet().len() as u32
}

/// A character-level tokenizer: BPE with no merges and no pre-tokenizer.
fn char_tokenizer() -> Tokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> = alphabet()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": null,
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "vocab": vocab,
            "merges": []
        }
    });
    json.to_string().parse().unwrap()
}

/// What the char tokenizer gives for `text`.
fn ids(text: &str) -> Vec<u32> {
    let chars = alphabet();
    text.chars()
        .map(|c| chars.iter().position(|&a| a == c).unwrap() as u32)
        .collect()
}

fn opts(val_fraction: f64) -> CorpusOptions {
    CorpusOptions {
        val_fraction,
        ..CorpusOptions::default()
    }
}

/// Some English-ish text of `n` characters.
fn text(n: usize, salt: usize) -> String {
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "café",
    ];
    let mut s = String::new();
    let mut i = salt;
    let mut count = 0;
    while count < n {
        s.push_str(words[i % words.len()]);
        s.push(if i % 7 == 6 { '\n' } else { ' ' });
        count += words[i % words.len()].chars().count() + 1;
        i += 3;
    }
    s.chars().take(n).collect()
}

fn err_text(err: Error) -> String {
    err.to_string()
}

// ---------------------------------------------------------------------------------------
// The sampler
// ---------------------------------------------------------------------------------------

#[test]
fn labels_are_inputs_shifted_by_one() {
    let dir = TempDir::new("shift");
    let corpus = text(500, 0);
    let file = dir.write("corpus.txt", &corpus);
    let split = tokenize_corpus(
        &[file],
        &char_tokenizer(),
        &opts(0.0),
        &dir.path().join("out"),
    )
    .unwrap();
    let stream = ids(&corpus);
    assert_eq!(split.train.tokens(), stream.as_slice());
    assert!(split.val.is_empty());

    let ctx = 16;
    let sampler = WindowSampler::new(split.train.len(), ctx, 7).unwrap();
    assert_eq!(sampler.num_windows(), (500 - 1) / ctx);
    for step in 0..10 {
        let (inputs, labels) = sampler.batch(split.train.tokens(), step, 3);
        assert_eq!(inputs.len(), 3 * ctx);
        assert_eq!(labels.len(), 3 * ctx);
        for (x, y) in inputs.chunks(ctx).zip(labels.chunks(ctx)) {
            // Some window of the stream has these inputs and these labels.
            assert_eq!(x[1..], y[..ctx - 1]);
            assert!(
                (0..sampler.num_windows())
                    .map(|w| w * ctx)
                    .any(|s| stream[s..s + ctx] == *x && stream[s + 1..s + ctx + 1] == *y),
                "row is not a window of the stream"
            );
        }
    }

    let batches = sampler.sequential_batches(split.train.tokens(), 4, 10);
    assert_eq!(batches.len(), 3); // 4 + 4 + 2 windows
    assert_eq!(batches[2].0.len(), 2 * ctx);
    let inputs: Vec<u32> = batches.iter().flat_map(|b| b.0.clone()).collect();
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.1.clone()).collect();
    for w in 0..10 {
        assert_eq!(
            inputs[w * ctx..(w + 1) * ctx],
            stream[w * ctx..(w + 1) * ctx]
        );
        assert_eq!(
            labels[w * ctx..(w + 1) * ctx],
            stream[w * ctx + 1..(w + 1) * ctx + 1]
        );
    }
    // More windows asked for than there are: all of them.
    let all = sampler.sequential_batches(split.train.tokens(), 5, usize::MAX);
    let rows: usize = all.iter().map(|b| b.0.len() / ctx).sum();
    assert_eq!(rows, sampler.num_windows());
    assert!(sampler
        .sequential_batches(split.train.tokens(), 0, 10)
        .is_empty());
}

#[test]
fn batches_are_a_pure_function_of_seed_and_step() {
    let tokens: Vec<u32> = (0..1001).collect();
    let a = WindowSampler::new(tokens.len(), 10, 1234).unwrap();
    let b = WindowSampler::new(tokens.len(), 10, 1234).unwrap();
    let other_seed = WindowSampler::new(tokens.len(), 10, 1235).unwrap();
    for step in [0, 1, 5, 33, 1000, 123_456] {
        assert_eq!(a.batch(&tokens, step, 8), b.batch(&tokens, step, 8));
        assert_ne!(a.batch(&tokens, step, 8), a.batch(&tokens, step + 1, 8));
        assert_ne!(
            a.batch(&tokens, step, 8),
            other_seed.batch(&tokens, step, 8)
        );
    }
    // Drawing out of order gives the same batches (no hidden state).
    let later = a.batch(&tokens, 77, 8);
    let _ = a.batch(&tokens, 3, 8);
    assert_eq!(a.batch(&tokens, 77, 8), later);
}

/// The window index of each row of a batch over the stream `0, 1, 2, …`.
fn windows_of(inputs: &[u32], ctx: usize) -> Vec<usize> {
    inputs
        .chunks(ctx)
        .map(|row| {
            assert_eq!(row[0] as usize % ctx, 0);
            for (k, &t) in row.iter().enumerate() {
                assert_eq!(t, row[0] + k as u32);
            }
            row[0] as usize / ctx
        })
        .collect()
}

#[test]
fn every_window_once_per_epoch() {
    for (num_windows, batch_size, seed) in [(25, 7, 0u64), (1, 3, 9), (2, 1, 5), (64, 8, 42)] {
        let ctx = 4;
        let tokens: Vec<u32> = (0..(num_windows * ctx + 1 + 2) as u32).collect(); // 2 spare
        let sampler = WindowSampler::new(tokens.len(), ctx, seed).unwrap();
        assert_eq!(sampler.num_windows(), num_windows);
        let epochs = 3;
        let steps = (epochs * num_windows).div_ceil(batch_size);
        let order: Vec<usize> = (0..steps as u64)
            .flat_map(|step| windows_of(&sampler.batch(&tokens, step, batch_size).0, ctx))
            .collect();
        let mut per_epoch = Vec::new();
        for epoch in order.chunks(num_windows).take(epochs) {
            let mut sorted = epoch.to_vec();
            sorted.sort();
            assert_eq!(sorted, (0..num_windows).collect::<Vec<_>>(), "{epoch:?}");
            per_epoch.push(epoch.to_vec());
        }
        if num_windows > 8 {
            assert_ne!(per_epoch[0], per_epoch[1], "each epoch has its own order");
            assert_ne!(
                per_epoch[0],
                (0..num_windows).collect::<Vec<_>>(),
                "the order is shuffled"
            );
        }
        for step in 0..steps as u64 {
            let epoch = step as usize * batch_size / num_windows;
            assert_eq!(sampler.epoch(step, batch_size), epoch as u64);
        }
    }
}

#[test]
fn window_order_looks_shuffled() {
    // Random permutations of n: mean |p(i) - i| is about n / 3, and two independent ones
    // are uncorrelated.
    let (n, ctx) = (1000usize, 2usize);
    let tokens: Vec<u32> = (0..(n * ctx + 1) as u32).collect();
    let sampler = WindowSampler::new(tokens.len(), ctx, 3).unwrap();
    let epoch = |e: u64| windows_of(&sampler.batch(&tokens, e, n).0, ctx);
    let corr = |a: &[usize], b: &[usize]| {
        let m = (n as f64 - 1.0) / 2.0;
        let cov: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - m) * (y as f64 - m))
            .sum();
        let var: f64 = a.iter().map(|&x| (x as f64 - m).powi(2)).sum();
        cov / var
    };
    let identity: Vec<usize> = (0..n).collect();
    for e in 0..4 {
        let order = epoch(e);
        let displacement: f64 = order
            .iter()
            .enumerate()
            .map(|(i, &w)| (w as f64 - i as f64).abs())
            .sum::<f64>()
            / n as f64;
        assert!(
            (displacement - n as f64 / 3.0).abs() < 40.0,
            "{displacement}"
        );
        assert!(corr(&order, &identity).abs() < 0.15);
        assert!(corr(&order, &epoch(e + 1)).abs() < 0.15);
    }
}

#[test]
fn sampler_errors() {
    let err = WindowSampler::new(10, 10, 0).unwrap_err();
    let msg = err_text(err);
    assert!(msg.contains("10 tokens"), "{msg}");
    assert!(msg.contains("at least 11"), "{msg}");
    let err = WindowSampler::new(100, 0, 0).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref param, .. } if param == "context_length"),
        "{err}"
    );
    // Exactly one window.
    let s = WindowSampler::new(11, 10, 0).unwrap();
    assert_eq!(s.num_windows(), 1);
    let tokens: Vec<u32> = (0..11).collect();
    let (x, y) = s.batch(&tokens, 5, 2);
    assert_eq!(
        x,
        [(0..10).collect::<Vec<u32>>(), (0..10).collect()].concat()
    );
    assert_eq!(
        y,
        [(1..11).collect::<Vec<u32>>(), (1..11).collect()].concat()
    );
}

// ---------------------------------------------------------------------------------------
// Splits
// ---------------------------------------------------------------------------------------

#[test]
fn split_by_fraction() {
    let dir = TempDir::new("fraction");
    let a = dir.write("a.txt", text(60, 1));
    let b = dir.write("b.txt", text(40, 2));
    let stream = [ids(&text(60, 1)), ids(&text(40, 2))].concat();
    let split = tokenize_corpus(
        &[b, a], // sorted: a then b
        &char_tokenizer(),
        &opts(0.1),
        &dir.path().join("out"),
    )
    .unwrap();
    assert_eq!(split.train.len(), 90);
    assert_eq!(split.val.len(), 10);
    assert_eq!(split.train.tokens(), &stream[..90]);
    assert_eq!(split.val.tokens(), &stream[90..]);
    let out = dir.path().join("out");
    assert_eq!(fs::metadata(out.join("train.bin")).unwrap().len(), 90 * 4);
    assert_eq!(fs::metadata(out.join("val.bin")).unwrap().len(), 10 * 4);
    assert!(out.join("manifest.json").exists());
    // Only the outputs and the manifest remain: no temporary files.
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["manifest.json", "train.bin", "val.bin"]);

    // Reopening the files gives the same tokens.
    assert_eq!(
        TokenFile::open(&out.join("val.bin")).unwrap().tokens(),
        &stream[90..]
    );

    let split = tokenize_corpus(
        &[dir.path().to_path_buf()],
        &char_tokenizer(),
        &opts(0.25),
        &dir.path().join("out2"),
    )
    .unwrap();
    assert_eq!((split.train.len(), split.val.len()), (75, 25));
}

#[test]
fn split_by_file() {
    let dir = TempDir::new("byfile");
    dir.write("corpus/a.txt", "aaaa");
    dir.write("corpus/b.txt", "bbb");
    let c = dir.write("corpus/c.txt", "cc");
    let held_out = dir.write("held/d.txt", "dddddd");
    let options = CorpusOptions {
        val_files: vec![c.clone(), held_out.clone()],
        end_of_text: Some(eot()),
        ..CorpusOptions::default()
    };
    let inputs = [dir.path().join("corpus")];
    // The val files outside the inputs are part of the corpus too.
    let docs = list_documents(&inputs, &options).unwrap();
    assert_eq!(docs.len(), 4);
    let split = tokenize_corpus(
        &inputs,
        &char_tokenizer(),
        &options,
        &dir.path().join("out"),
    )
    .unwrap();
    let e = eot();
    assert_eq!(
        split.train.tokens(),
        [ids("aaaa"), vec![e], ids("bbb"), vec![e]].concat()
    );
    assert_eq!(
        split.val.tokens(),
        [ids("cc"), vec![e], ids("dddddd"), vec![e]].concat()
    );

    // A folder as val_files: every document under it.
    let options = CorpusOptions {
        val_files: vec![dir.path().join("held")],
        ..CorpusOptions::default()
    };
    let split = tokenize_corpus(
        &inputs,
        &char_tokenizer(),
        &options,
        &dir.path().join("out2"),
    )
    .unwrap();
    assert_eq!(split.train.tokens(), ids("aaaabbbcc"));
    assert_eq!(split.val.tokens(), ids("dddddd"));
}

#[test]
fn end_of_text_after_every_document() {
    let dir = TempDir::new("eot");
    dir.write("1.txt", "ab");
    dir.write("2.txt", ""); // no tokens: no end-of-text either
    dir.write("3.jsonl", "{\"text\": \"cd\"}\n{\"text\": \"e\"}\n");
    let options = CorpusOptions {
        end_of_text: Some(eot()),
        val_fraction: 0.0,
        ..CorpusOptions::default()
    };
    let split = tokenize_corpus(
        &[dir.path().to_path_buf()],
        &char_tokenizer(),
        &options,
        &dir.path().join("out"),
    )
    .unwrap();
    let e = eot();
    assert_eq!(
        split.train.tokens(),
        [ids("ab"), vec![e], ids("cd"), vec![e], ids("e"), vec![e]].concat()
    );
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

#[test]
fn reads_jsonl() {
    let dir = TempDir::new("jsonl");
    let file = dir.write(
        "docs.jsonl",
        "\u{FEFF}{\"id\": 1, \"body\": \"hello\\nworld\", \"text\": 5}\n\n   \n{\"body\": \"caf\\u00e9 €\", \"meta\": {\"x\": [1]}}\r\n{\"body\": \"last\"}",
    );
    let options = CorpusOptions {
        text_field: "body".into(),
        val_fraction: 0.0,
        end_of_text: Some(eot()),
        ..CorpusOptions::default()
    };
    let split = tokenize_corpus(
        &[file],
        &char_tokenizer(),
        &options,
        &dir.path().join("out"),
    )
    .unwrap();
    let e = eot();
    assert_eq!(
        split.train.tokens(),
        [
            ids("hello\nworld"),
            vec![e],
            ids("café €"),
            vec![e],
            ids("last"),
            vec![e]
        ]
        .concat()
    );
}

#[test]
fn reads_folders_recursively_in_sorted_order() {
    let dir = TempDir::new("folder");
    dir.write("corpus/b.txt", "B");
    dir.write("corpus/a/z.txt", "Z");
    dir.write("corpus/a/y.jsonl", "{\"text\": \"Y\"}\n");
    dir.write("corpus/c/deep/er/x.TXT", "X");
    dir.write("corpus/notes.md", "ignored");
    dir.write("corpus/data.json", "{\"text\": \"ignored\"}");
    let extra = dir.write("extra.txt", "E");
    let root = dir.path().join("corpus");
    let inputs = [extra.clone(), root.clone(), root.join("b.txt")]; // b.txt twice: once
    let docs = list_documents(&inputs, &CorpusOptions::default()).unwrap();
    assert_eq!(
        docs,
        [
            root.join("a/y.jsonl"),
            root.join("a/z.txt"),
            root.join("b.txt"),
            root.join("c/deep/er/x.TXT"),
            extra,
        ]
    );
    let split = tokenize_corpus(
        &inputs,
        &char_tokenizer(),
        &opts(0.0),
        &dir.path().join("out"),
    )
    .unwrap();
    assert_eq!(split.train.tokens(), ids("YZBXE"));
}

#[test]
fn large_text_files_are_streamed_in_pieces() {
    // Over 2 MiB with multi-byte characters everywhere, so pieces are cut inside lines
    // that are long, and right next to multi-byte characters.
    let dir = TempDir::new("large");
    let mut corpus = String::new();
    let mut i = 0usize;
    while corpus.len() < (5 << 20) / 2 {
        corpus.push_str(&text(50 + i % 300, i));
        corpus.push_str(if i.is_multiple_of(5) {
            "€ß\n\n"
        } else {
            "é\n"
        });
        if i.is_multiple_of(97) {
            corpus.push_str(&"€".repeat(3000)); // a long run with no space
        }
        i += 1;
    }
    let file = dir.write("big.txt", &corpus);
    let options = CorpusOptions {
        end_of_text: Some(eot()),
        val_fraction: 0.0,
        ..CorpusOptions::default()
    };
    let split = tokenize_corpus(
        &[file],
        &char_tokenizer(),
        &options,
        &dir.path().join("out"),
    )
    .unwrap();
    let expected = [ids(&corpus), vec![eot()]].concat();
    assert_eq!(split.train.len(), expected.len());
    assert!(split.train.tokens() == expected.as_slice());

    // One line of over 1 MiB (cut at spaces), and a run of over 1 MiB with no space at
    // all (cut between characters).
    let line = format!(
        "{} {}",
        text(1_500_000, 5).replace('\n', " "),
        "€".repeat(400_000)
    );
    let file = dir.write("line.txt", &line);
    let split = tokenize_corpus(
        &[file],
        &char_tokenizer(),
        &options,
        &dir.path().join("out3"),
    )
    .unwrap();
    assert!(split.train.tokens() == [ids(&line), vec![eot()]].concat().as_slice());

    // An invalid byte far into the file is reported at its offset.
    let mut bytes = corpus.into_bytes();
    let at = (0..bytes.len()).rev().find(|&i| bytes[i] == b' ').unwrap();
    assert!(at > 2 << 20);
    bytes[at] = 0xFF;
    let bad = dir.write("bad.txt", &bytes);
    let msg = err_text(
        tokenize_corpus(
            &[bad],
            &char_tokenizer(),
            &options,
            &dir.path().join("out2"),
        )
        .unwrap_err(),
    );
    assert!(msg.contains(&format!("byte offset {at}")), "{msg}");
}

// ---------------------------------------------------------------------------------------
// The cache
// ---------------------------------------------------------------------------------------

fn mtime(path: &Path) -> std::time::SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn manifest_hit_reuses_and_changes_rebuild() {
    let dir = TempDir::new("cache");
    let a = dir.write("corpus/a.txt", text(200, 3));
    let inputs = [dir.path().join("corpus")];
    let out = dir.path().join("out");
    let tok = char_tokenizer();
    let first = tokenize_corpus(&inputs, &tok, &opts(0.1), &out).unwrap();
    let (train_mtime, val_mtime, manifest_mtime) = (
        mtime(&out.join("train.bin")),
        mtime(&out.join("val.bin")),
        mtime(&out.join("manifest.json")),
    );
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Same inputs and options: reused, nothing rewritten.
    let again = tokenize_corpus(&inputs, &tok, &opts(0.1), &out).unwrap();
    assert_eq!(again.train.tokens(), first.train.tokens());
    assert_eq!(again.val.tokens(), first.val.tokens());
    assert_eq!(mtime(&out.join("train.bin")), train_mtime);
    assert_eq!(mtime(&out.join("val.bin")), val_mtime);
    assert_eq!(mtime(&out.join("manifest.json")), manifest_mtime);
    drop((first, again));

    // A changed input: rebuilt.
    fs::write(&a, text(300, 4)).unwrap();
    let changed = tokenize_corpus(&inputs, &tok, &opts(0.1), &out).unwrap();
    assert_eq!(changed.train.len() + changed.val.len(), 300);
    assert_eq!(
        [changed.train.tokens(), changed.val.tokens()].concat(),
        ids(&text(300, 4))
    );
    assert_ne!(mtime(&out.join("train.bin")), train_mtime);

    // A new file: rebuilt.
    dir.write("corpus/b.txt", "xyz");
    let more = tokenize_corpus(&inputs, &tok, &opts(0.1), &out).unwrap();
    assert_eq!(more.train.len() + more.val.len(), 303);

    // Changed options: rebuilt.
    let with_eot = CorpusOptions {
        end_of_text: Some(eot()),
        ..opts(0.1)
    };
    let eot_split = tokenize_corpus(&inputs, &tok, &with_eot, &out).unwrap();
    assert_eq!(eot_split.train.len() + eot_split.val.len(), 305);
    let other_fraction = tokenize_corpus(&inputs, &tok, &opts(0.5), &out).unwrap();
    assert_eq!(other_fraction.val.len(), 152); // round(151.5)

    // A different tokenizer: rebuilt.
    let mut other_tok = char_tokenizer();
    other_tok.with_normalizer(Some(tokenizers::normalizers::Lowercase));
    let before = mtime(&out.join("train.bin"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    tokenize_corpus(&inputs, &other_tok, &opts(0.5), &out).unwrap();
    assert_ne!(mtime(&out.join("train.bin")), before);

    // A damaged output file: rebuilt rather than trusted.
    fs::write(out.join("val.bin"), [0u8; 8]).unwrap();
    let repaired = tokenize_corpus(&inputs, &other_tok, &opts(0.5), &out).unwrap();
    assert_eq!(repaired.val.len(), 152);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn empty_corpus_is_an_error() {
    let dir = TempDir::new("empty");
    let file = dir.write("empty.txt", "");
    dir.write("blank.jsonl", "\n\n");
    let msg = err_text(
        tokenize_corpus(
            &[dir.path().to_path_buf()],
            &char_tokenizer(),
            &opts(0.1),
            &dir.path().join("out"),
        )
        .unwrap_err(),
    );
    assert!(msg.contains("empty corpus"), "{msg}");
    assert!(msg.contains("no tokens"), "{msg}");
    assert!(msg.contains("empty.txt"), "{msg}");
    assert!(!dir.path().join("out/manifest.json").exists());

    // Nothing found in a folder, or a missing path.
    let empty_dir = dir.path().join("nothing");
    fs::create_dir_all(empty_dir.join("sub")).unwrap();
    dir.write("nothing/sub/readme.md", "x");
    let msg = err_text(list_documents(&[empty_dir], &CorpusOptions::default()).unwrap_err());
    assert!(msg.contains("nothing"), "{msg}");
    assert!(msg.contains("no .txt or .jsonl files"), "{msg}");
    let missing = dir.path().join("missing.txt");
    let err = list_documents(&[file, missing.clone()], &CorpusOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::File { ref path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("no such file"), "{err}");
    let msg = err_text(list_documents(&[], &CorpusOptions::default()).unwrap_err());
    assert!(msg.contains("no corpus given"), "{msg}");
}

#[test]
fn invalid_utf8_is_an_error_unless_lossy() {
    let dir = TempDir::new("utf8");
    let file = dir.write("latin1.txt", b"caf\xe9 au lait");
    let err = tokenize_corpus(
        std::slice::from_ref(&file),
        &char_tokenizer(),
        &opts(0.0),
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::File { ref path, .. } if *path == file),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("latin1.txt"), "{msg}");
    assert!(msg.contains("not valid UTF-8"), "{msg}");
    assert!(msg.contains("byte offset 3"), "{msg}");

    let lossy = CorpusOptions {
        lossy: true,
        val_fraction: 0.0,
        ..CorpusOptions::default()
    };
    let split =
        tokenize_corpus(&[file], &char_tokenizer(), &lossy, &dir.path().join("out")).unwrap();
    assert_eq!(split.train.tokens(), ids("caf\u{FFFD} au lait"));

    // In JSONL: the line and the offset in the file.
    let file = dir.write("bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n");
    let msg = err_text(
        tokenize_corpus(
            std::slice::from_ref(&file),
            &char_tokenizer(),
            &opts(0.0),
            &dir.path().join("out2"),
        )
        .unwrap_err(),
    );
    assert!(msg.contains("bad.jsonl"), "{msg}");
    assert!(msg.contains("line 2, byte offset 25"), "{msg}");
    let split =
        tokenize_corpus(&[file], &char_tokenizer(), &lossy, &dir.path().join("out2")).unwrap();
    assert_eq!(split.train.tokens(), ids("ok\u{FFFD}"));
}

#[test]
fn bad_jsonl_lines_name_file_line_and_field() {
    let dir = TempDir::new("badjson");
    let out = dir.path().join("out");
    let tok = char_tokenizer();
    let cases: [(&str, &[&str]); 4] = [
        (
            "{\"text\": \"a\"}\n{\"text\": \"b\"\n",
            &["line 2", "not valid JSON"],
        ),
        (
            "{\"text\": \"a\"}\n\n{\"content\": \"b\"}\n",
            &["line 3", "no field \"text\""],
        ),
        ("{\"text\": 3}\n", &["line 1", "field \"text\" is a number"]),
        ("[\"text\"]\n", &["line 1", "expected a JSON object"]),
    ];
    for (i, (contents, expected)) in cases.iter().enumerate() {
        let file = dir.write(&format!("case{i}.jsonl"), contents);
        let err = tokenize_corpus(std::slice::from_ref(&file), &tok, &opts(0.0), &out).unwrap_err();
        assert!(
            matches!(err, Error::File { ref path, .. } if *path == file),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&format!("case{i}.jsonl")), "{msg}");
        for part in *expected {
            assert!(msg.contains(part), "{msg} lacks {part}");
        }
    }
}

#[test]
fn val_fraction_must_be_in_zero_one() {
    let dir = TempDir::new("fracerr");
    let file = dir.write("a.txt", "abcdef");
    for f in [1.0, 1.5, -0.1, f64::NAN] {
        let err = tokenize_corpus(
            std::slice::from_ref(&file),
            &char_tokenizer(),
            &opts(f),
            &dir.path().join("out"),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Config { ref param, .. } if param == "val_fraction"),
            "{err}"
        );
        assert!(err.to_string().contains("[0, 1)"), "{err}");
    }
}

#[test]
fn empty_splits_are_errors() {
    let dir = TempDir::new("emptysplit");
    let tok = char_tokenizer();
    let out = dir.path().join("out");
    let short = dir.write("short.txt", "abc");

    // 0.1 of 3 tokens rounds to none.
    let msg = err_text(
        tokenize_corpus(std::slice::from_ref(&short), &tok, &opts(0.1), &out).unwrap_err(),
    );
    assert!(msg.contains("validation split is empty"), "{msg}");
    assert!(msg.contains("3 tokens"), "{msg}");

    // 0.9 of 1 token leaves none for training.
    let one = dir.write("one.txt", "a");
    let msg = err_text(tokenize_corpus(&[one], &tok, &opts(0.9), &out).unwrap_err());
    assert!(msg.contains("training split is empty"), "{msg}");

    // Every file is a validation file.
    let all_val = CorpusOptions {
        val_files: vec![short.clone()],
        ..CorpusOptions::default()
    };
    let msg =
        err_text(tokenize_corpus(std::slice::from_ref(&short), &tok, &all_val, &out).unwrap_err());
    assert!(msg.contains("training split is empty"), "{msg}");
    assert!(msg.contains("validation files"), "{msg}");

    // The validation files have no text.
    let empty = dir.write("empty.txt", "");
    let empty_val = CorpusOptions {
        val_files: vec![empty],
        ..CorpusOptions::default()
    };
    let msg = err_text(tokenize_corpus(&[short], &tok, &empty_val, &out).unwrap_err());
    assert!(msg.contains("validation split is empty"), "{msg}");
    assert!(msg.contains("empty.txt"), "{msg}");

    // Nothing was left behind.
    let names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn token_files() {
    let dir = TempDir::new("tokenfile");
    let tokens: Vec<u32> = vec![0, 1, 0xDEAD_BEEF, u32::MAX];
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let path = dir.write("t.bin", &bytes);
    let file = TokenFile::open(&path).unwrap();
    assert_eq!(file.tokens(), tokens.as_slice());
    assert_eq!(file.len(), 4);
    assert!(!file.is_empty());
    assert_eq!(file.path(), Some(path.as_path()));

    let empty = TokenFile::open(&dir.write("e.bin", [])).unwrap();
    assert!(empty.is_empty());
    let mem = TokenFile::from_tokens(tokens.clone());
    assert_eq!(mem.tokens(), tokens.as_slice());

    let odd = dir.write("odd.bin", [1u8, 2, 3, 4, 5]);
    let msg = err_text(TokenFile::open(&odd).unwrap_err());
    assert!(msg.contains("odd.bin"), "{msg}");
    assert!(msg.contains("not a multiple of 4"), "{msg}");
    let msg = err_text(TokenFile::open(&dir.path().join("none.bin")).unwrap_err());
    assert!(msg.contains("none.bin"), "{msg}");

    // No duplicates or misses in list_documents for a file given twice.
    let a = dir.write("a.txt", "a");
    let docs = list_documents(&[a.clone(), a.clone()], &CorpusOptions::default()).unwrap();
    assert_eq!(docs, [a]);
    let unique: HashSet<_> = docs.iter().collect();
    assert_eq!(unique.len(), 1);
}
