//! Tokenizer training: the three kinds train, save, reload and round-trip; training is
//! deterministic; bad input fails with errors that name the file or value; and the committed
//! tokenizers encode exactly as Python's `tokenizers` does (ids recorded by
//! `scripts/reference/tokenizer_fixtures.py`).
//!
//! Regenerating the fixtures after a change to the training code:
//!
//! ```sh
//! FERROFORMER_REGEN=1 cargo test -p ferroformer --test tokenizer_train
//! /root/venvs/ref/bin/python scripts/reference/tokenizer_fixtures.py   # any env with `tokenizers`
//! cargo test -p ferroformer --test tokenizer_train
//! ```

use std::path::{Path, PathBuf};

use ferroformer::train::tokenizer::{
    load_tokenizer, save_tokenizer, train_tokenizer, TokenizerKind, END_OF_TEXT,
};
use ferroformer::Error;
use tokenizers::Tokenizer;

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ferroformer-tokenizer-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PARAGRAPHS: &str = "\
Attention is all you need, or so the paper said. The model reads the whole sentence at once,
and every token attends to every other token in the sequence.

Positional encodings tell the model where each token sits. Without them, the sentence
\"the dog bites the man\" would look the same as \"the man bites the dog\".

Training a language model means predicting the next token, again and again, over a large
corpus of text. The loss goes down, the samples get better, and the model learns grammar
before it learns facts.
";

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, true)
        .unwrap_or_else(|e| panic!("encode {text:?}: {e}"))
        .get_ids()
        .to_vec()
}

fn decode(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> String {
    tok.decode(ids, skip_special)
        .unwrap_or_else(|e| panic!("decode {ids:?}: {e}"))
}

fn specials(tokens: &[&str]) -> Vec<String> {
    tokens.iter().map(|t| t.to_string()).collect()
}

/// Trains on `text`, saves to and reloads from a temp dir, and checks the reloaded tokenizer
/// encodes like the trained one.
fn train_save_reload(
    dir: &TempDir,
    kind: TokenizerKind,
    vocab_size: usize,
    text: &str,
    special_tokens: &[String],
) -> Tokenizer {
    let corpus = dir.write("corpus.txt", text);
    let trained = train_tokenizer(kind, vocab_size, &[corpus], special_tokens)
        .unwrap_or_else(|e| panic!("train {kind}: {e}"));
    let path = dir.0.join(format!("{kind}.json"));
    save_tokenizer(&trained, &path).expect("save");
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .expect("list temp dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let loaded = load_tokenizer(&path).expect("load");
    assert_eq!(
        trained.to_string(false).expect("json"),
        loaded.to_string(false).expect("json"),
        "{kind}: reloaded tokenizer differs"
    );
    assert_eq!(encode(&trained, text), encode(&loaded, text));
    loaded
}

#[test]
fn char_tokenizer_trains_and_round_trips() {
    let dir = TempDir::new("char");
    let text = format!("{PARAGRAPHS}{END_OF_TEXT}Ünïcödé, 日本語 and 🙂\n  two spaces\t\n");
    let special = specials(&[END_OF_TEXT, "<pad>"]);
    let tok = train_save_reload(&dir, TokenizerKind::Char, 1000, &text, &special);

    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
    assert_eq!(tok.token_to_id("<pad>"), Some(1));
    // Every distinct character of the text (outside special tokens), nothing more.
    let without_specials = text.replace(END_OF_TEXT, "");
    let alphabet: std::collections::BTreeSet<char> = without_specials.chars().collect();
    assert_eq!(tok.get_vocab_size(true), alphabet.len() + 2);
    assert!(
        tok.token_to_id("|").is_none(),
        "characters of special tokens were learned"
    );
    for c in &alphabet {
        assert!(tok.token_to_id(&c.to_string()).is_some(), "{c:?} missing");
    }

    // One token per character, and decode(encode(text)) == text exactly.
    let ids = encode(&tok, &without_specials);
    assert_eq!(ids.len(), without_specials.chars().count());
    assert_eq!(decode(&tok, &ids, true), without_specials);
    let ids = encode(&tok, &text);
    assert_eq!(ids.iter().filter(|&&id| id == 0).count(), 1);
    assert_eq!(decode(&tok, &ids, false), text);
    assert_eq!(decode(&tok, &ids, true), without_specials);

    // The vocabulary size is an upper bound: the alphabet must fit.
    let corpus = dir.write("small.txt", "abcdef");
    let err = train_tokenizer(TokenizerKind::Char, 6, &[corpus], &special).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Config { .. }) && msg.contains("6 distinct characters"),
        "{msg}"
    );
}

#[test]
fn bpe_tokenizer_trains_and_round_trips() {
    let dir = TempDir::new("bpe");
    let text = format!("{PARAGRAPHS}{END_OF_TEXT}Ünïcödé, 日本語 and 🙂\n  two  spaces\t\n");
    let special = specials(&[END_OF_TEXT, "<pad>"]);
    let tok = train_save_reload(&dir, TokenizerKind::Bpe, 300, &text, &special);

    assert_eq!(tok.get_vocab_size(true), 300);
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
    assert_eq!(tok.token_to_id("<pad>"), Some(1));
    // GPT-2's byte alphabet comes right after the special tokens; merges after that.
    assert_eq!(tok.token_to_id("!"), Some(2));
    assert!(tok.token_to_id("Ġthe").is_some(), "no merge for ' the'");

    let ids = encode(&tok, &text);
    assert_eq!(ids.iter().filter(|&&id| id == 0).count(), 1);
    assert_eq!(decode(&tok, &ids, false), text);
    assert_eq!(decode(&tok, &ids, true), text.replace(END_OF_TEXT, ""));
    // Byte-level: text never seen in training still round-trips.
    let unseen = "Ωμέγα ∑∫ — ok?\r\n";
    assert_eq!(decode(&tok, &encode(&tok, unseen), false), unseen);

    let corpus = dir.write("small.txt", "abc");
    let err = train_tokenizer(TokenizerKind::Bpe, 257, &[corpus], &special).unwrap_err();
    assert!(err.to_string().contains("256 byte tokens"), "{err}");
}

#[test]
fn wordpiece_tokenizer_trains_and_round_trips() {
    let dir = TempDir::new("wordpiece");
    let tok = train_save_reload(&dir, TokenizerKind::WordPiece, 300, PARAGRAPHS, &[]);

    let size = tok.get_vocab_size(true);
    assert!(size <= 300 && size > 200, "vocab size {size}");
    for (id, token) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .enumerate()
    {
        assert_eq!(tok.token_to_id(token), Some(id as u32), "{token}");
    }
    assert!(
        tok.get_vocab(false).keys().any(|t| t.starts_with("##")),
        "no ## continuation tokens"
    );

    // Round trip up to BERT's normalization: lowercase; whitespace is not kept.
    let ids = encode(&tok, PARAGRAPHS);
    assert!(!ids.contains(&1), "[UNK] in a training text");
    let decoded = decode(&tok, &ids, true);
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squash(&decoded), squash(&PARAGRAPHS.to_lowercase()));
    assert_eq!(decode(&tok, &encode(&tok, "The Model"), true), "the model");
    // Special tokens are matched in raw text; unknown characters give [UNK].
    assert_eq!(encode(&tok, "[CLS] the [SEP]"), {
        let the = tok.token_to_id("the").expect("`the` in vocab");
        vec![2, the, 3]
    });
    assert!(encode(&tok, "the ∑").contains(&1));

    // Custom special tokens: [UNK] is appended when missing.
    let corpus = dir.write("corpus2.txt", PARAGRAPHS);
    let tok = train_tokenizer(
        TokenizerKind::WordPiece,
        300,
        std::slice::from_ref(&corpus),
        &specials(&[END_OF_TEXT]),
    )
    .expect("train");
    assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
    assert_eq!(tok.token_to_id("[UNK]"), Some(1));

    let err = train_tokenizer(TokenizerKind::WordPiece, 20, &[corpus], &[]).unwrap_err();
    assert!(err.to_string().contains("distinct characters"), "{err}");
}

#[test]
fn training_is_deterministic() {
    let dir = TempDir::new("determinism");
    let corpus = dir.write("corpus.txt", PARAGRAPHS);
    let more = dir.write(
        "more.txt",
        "Another file, another paragraph: tokens, tokens and more tokens.\n",
    );
    let files = [corpus, more];
    for kind in TokenizerKind::ALL {
        let size = if kind == TokenizerKind::Char {
            1000
        } else {
            320
        };
        let json = || {
            train_tokenizer(kind, size, &files, &specials(&[END_OF_TEXT]))
                .expect("train")
                .to_string(false)
                .expect("json")
        };
        let first = json();
        for _ in 0..3 {
            assert!(first == json(), "{kind}: two trainings differ");
        }
    }
}

#[test]
fn bad_input_is_reported_with_the_file() {
    let dir = TempDir::new("errors");
    let good = dir.write("good.txt", PARAGRAPHS);
    let eot = specials(&[END_OF_TEXT]);

    let err = train_tokenizer(TokenizerKind::Bpe, 300, &[], &eot).unwrap_err();
    assert!(err.to_string().contains("no training files"), "{err}");

    let missing = dir.0.join("missing.txt");
    let err = train_tokenizer(TokenizerKind::Bpe, 300, &[good.clone(), missing], &eot).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::File { .. }) && msg.contains("missing.txt"),
        "{msg}"
    );

    // Byte 0xff at offset 13 (line 2), in the second file.
    let latin1 = dir.write("latin1.txt", b"first line\nab\xffcd\n");
    for kind in TokenizerKind::ALL {
        let err = train_tokenizer(kind, 1000, &[good.clone(), latin1.clone()], &eot).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("latin1.txt")
                && msg.contains("UTF-8")
                && msg.contains("byte offset 13")
                && msg.contains("0xff"),
            "{kind}: {msg}"
        );
    }

    let only_specials = dir.write("only-specials.txt", format!("{END_OF_TEXT}{END_OF_TEXT}"));
    let err = train_tokenizer(TokenizerKind::Char, 100, &[only_specials], &eot).unwrap_err();
    assert!(err.to_string().contains("no text"), "{err}");

    let err =
        train_tokenizer(TokenizerKind::Char, 1, std::slice::from_ref(&good), &eot).unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");
    let err = train_tokenizer(
        TokenizerKind::Char,
        100,
        std::slice::from_ref(&good),
        &specials(&["<a>", "<a>"]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
    let err = train_tokenizer(TokenizerKind::Char, 100, &[good], &specials(&[""])).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    // Kinds parse by name; a wrong name lists the options.
    assert_eq!(
        "wordpiece".parse::<TokenizerKind>().ok(),
        Some(TokenizerKind::WordPiece)
    );
    assert_eq!(
        "char".parse::<TokenizerKind>().ok(),
        Some(TokenizerKind::Char)
    );
    let err = "sentencepiece".parse::<TokenizerKind>().unwrap_err();
    assert!(err.to_string().contains("char, bpe, wordpiece"), "{err}");

    // Loading names the file, for missing and for malformed files.
    let err = load_tokenizer(&dir.0.join("nope.json")).unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
    let bad = dir.write("bad.json", "{\"not\": \"a tokenizer\"}");
    let err = load_tokenizer(&bad).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bad.json") && msg.contains("not a valid tokenizer.json"),
        "{msg}"
    );
}

/// The committed fixture tokenizers: kind, vocabulary size, special tokens.
fn fixture_specs() -> Vec<(TokenizerKind, usize, Vec<String>)> {
    vec![
        (TokenizerKind::Char, 300, specials(&[END_OF_TEXT])),
        (TokenizerKind::Bpe, 300, specials(&[END_OF_TEXT])),
        (TokenizerKind::WordPiece, 300, vec![]),
    ]
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate: see the top of tests/tokenizer_train.rs)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn fixtures_match_training_and_python_encodings() {
    let dir = fixtures_dir();
    let corpus = dir.join("corpus.txt");
    let regen = std::env::var("FERROFORMER_REGEN").is_ok_and(|v| v == "1");

    for (kind, size, special) in fixture_specs() {
        let path = dir.join(format!("{kind}.json"));
        let trained = train_tokenizer(kind, size, std::slice::from_ref(&corpus), &special)
            .unwrap_or_else(|e| panic!("train {kind}: {e}"));
        if regen {
            save_tokenizer(&trained, &path).expect("save fixture");
            eprintln!("wrote {}", path.display());
            continue;
        }
        // Training in this process reproduces the committed file (written by another process).
        let committed = load_tokenizer(&path).expect("load fixture");
        assert!(
            trained.to_string(false).expect("json") == committed.to_string(false).expect("json"),
            "{kind}: training no longer reproduces {}; regenerate the fixtures",
            path.display()
        );
    }
    if regen {
        eprintln!(
            "now run scripts/reference/tokenizer_fixtures.py to refresh the Python encodings"
        );
        return;
    }

    let python = read_json(&dir.join("python_encodings.json"));
    let sentences: Vec<String> = serde_json::from_value(python["sentences"].clone())
        .expect("`sentences` is a list of strings");
    assert!(sentences.len() >= 6);
    for (kind, _, _) in fixture_specs() {
        let tok = load_tokenizer(&dir.join(format!("{kind}.json"))).expect("load fixture");
        let case = &python["tokenizers"][kind.name()];
        let ids: Vec<Vec<u32>> =
            serde_json::from_value(case["ids"].clone()).expect("`ids` is a list of id lists");
        let decoded: Vec<String> =
            serde_json::from_value(case["decoded"].clone()).expect("`decoded` is a list");
        assert_eq!(ids.len(), sentences.len(), "{kind}");
        for ((sentence, want_ids), want_text) in sentences.iter().zip(&ids).zip(&decoded) {
            let got = encode(&tok, sentence);
            assert_eq!(
                &got, want_ids,
                "{kind}: ids differ from Python for {sentence:?}"
            );
            assert_eq!(
                &decode(&tok, &got, false),
                want_text,
                "{kind}: decoding differs from Python for {sentence:?}"
            );
        }
    }
}
