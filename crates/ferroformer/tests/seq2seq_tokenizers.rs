//! `AutoTokenizer` on the SentencePiece tokenizers sequence-to-sequence checkpoints ship (no
//! tokenizer.json): T5 and Pegasus `spiece.model`, mBART / mBART-50 / NLLB
//! `sentencepiece.bpe.model`, M2M100 `sentencepiece.bpe.model` + `vocab.json`, Marian
//! `source.spm` + `target.spm` + `vocab.json`. Ids, truncated ids and decoded text equal
//! `transformers`' (the fast tokenizer it converts from the slow files; the slow tokenizer for
//! M2M100 and Marian, which have no fast one), with and without a source language; language
//! codes and their errors; Marian's target side; errors for missing files.
//!
//! The fixtures are in tests/fixtures/seq2seq_tokenizers/, written by
//! `scripts/reference/seq2seq_tokenizer_fixtures.py` (transformers 4.57.6, tokenizers 0.22.2,
//! sentencepiece 0.2.3):
//!
//! ```sh
//! /root/venvs/ref/bin/python scripts/reference/seq2seq_tokenizer_fixtures.py
//! cargo test -p ferroformer --test seq2seq_tokenizers
//! ```

use std::path::{Path, PathBuf};

use ferroformer::models::{AutoTokenizer, EncodeOptions, TruncationStrategy};
use serde_json::Value;

fn fixture_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/seq2seq_tokenizers")
        .join(family)
}

fn expected(family: &str) -> Value {
    let path = fixture_dir(family).join("expected.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json parses")
}

fn load(family: &str) -> AutoTokenizer {
    AutoTokenizer::from_dir(&fixture_dir(family))
        .unwrap_or_else(|e| panic!("loading the {family} tokenizer: {e}"))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// Checks every case of `cases` (ids, decoded text, truncated ids) against `tok`; returns how
/// many were compared.
fn check_cases(
    family: &str,
    what: &str,
    tok: &AutoTokenizer,
    cases: &Value,
    max_length: usize,
) -> usize {
    let cases = cases.as_array().expect("a case list");
    let plain = EncodeOptions::default();
    let truncating = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(max_length),
        ..Default::default()
    };
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text, &plain).expect("encode")[0].ids.clone();
        if got != want {
            mismatches.push(format!(
                "{what} ids of {text:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        let want_trunc = ids_of(&case["truncated"]);
        let got_trunc = tok.encode(text, &truncating).expect("encode")[0]
            .ids
            .clone();
        if got_trunc != want_trunc {
            mismatches.push(format!(
                "{what} truncated ids of {text:?}:\n  got  {got_trunc:?}\n  want {want_trunc:?}"
            ));
        }
        for (key, skip) in [("decoded", true), ("decoded_with_special", false)] {
            let want_text = case[key].as_str().expect("decoded text");
            let got_text = tok.decode(&want, skip).expect("decode");
            if got_text != want_text {
                mismatches.push(format!(
                    "{what} decode (skip_special_tokens={skip}) of {text:?}:\n  got  {got_text:?}\n  want {want_text:?}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{family}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // The batched call gives the same rows.
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let batch = tok.encode_batch(&texts, &plain).expect("encode_batch");
    for (row, case) in batch.encodings.iter().zip(cases) {
        assert_eq!(
            row.ids,
            ids_of(&case["ids"]),
            "{family} {what}: batched ids"
        );
    }
    cases.len()
}

/// The default source language, then each `src_lang` block.
fn check_family(family: &str) {
    let exp = expected(family);
    let tok = load(family);
    let max_length = exp["max_length"].as_u64().unwrap() as usize;
    let n = check_cases(family, "default", &tok, &exp["cases"], max_length);
    assert!(n >= 10, "{family}: only {n} cases");
    for pair in exp["pairs"].as_array().expect("pairs") {
        let (a, b) = (pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap());
        let got = tok
            .encode_pair(a, b, &EncodeOptions::default())
            .expect("encode_pair")[0]
            .ids
            .clone();
        assert_eq!(
            got,
            ids_of(&pair["ids"]),
            "{family}: ids of the pair {a:?}, {b:?}"
        );
    }
    if let Some(blocks) = exp.get("src_lang").and_then(Value::as_array) {
        for block in blocks {
            let code = block["src_lang"].as_str().unwrap();
            let with = tok.with_src_lang(code).expect("with_src_lang");
            assert_eq!(with.src_lang(), Some(code));
            check_cases(
                family,
                &format!("src_lang={code}"),
                &with,
                &block["cases"],
                max_length,
            );
        }
        // The original keeps its language.
        check_cases(family, "default again", &tok, &exp["cases"], max_length);
    }
    if let Some(codes) = exp.get("lang_codes").and_then(Value::as_object) {
        let listed = tok.lang_codes();
        assert_eq!(
            listed.len(),
            codes.len(),
            "{family}: number of language codes"
        );
        for (code, id) in codes {
            assert!(listed.contains(code), "{family}: `{code}` not listed");
            assert_eq!(
                tok.lang_code_id(code).expect("lang_code_id"),
                id.as_u64().unwrap() as u32,
                "{family}: id of `{code}`"
            );
        }
        let err = tok.lang_code_id("xx_YY").unwrap_err().to_string();
        assert!(
            err.contains("xx_YY")
                && err.contains(listed[0].as_str())
                && err.contains(listed.last().unwrap().as_str()),
            "{family}: the error names the code and lists the valid ones: {err}"
        );
        let err = tok.with_src_lang("xx_YY").unwrap_err().to_string();
        assert!(
            err.contains("xx_YY") && err.contains(listed[1].as_str()),
            "{err}"
        );
    } else {
        assert!(
            tok.lang_codes().is_empty(),
            "{family} has no language codes"
        );
        assert!(tok.lang_code_id("en_XX").is_err());
    }
}

#[test]
fn t5_matches_transformers() {
    check_family("t5");
    let tok = load("t5");
    assert!(tok.target_tokenizer().is_none());
    // T5's sentinels: `<extra_id_0>` is the last id.
    assert_eq!(
        tok.token_to_id("<extra_id_0>"),
        Some(tok.vocab_size_with_added_tokens() as u32 - 1)
    );
}

#[test]
fn pegasus_matches_transformers() {
    check_family("pegasus");
}

#[test]
fn mbart_matches_transformers() {
    check_family("mbart");
}

#[test]
fn mbart50_matches_transformers() {
    check_family("mbart50");
}

#[test]
fn nllb_matches_transformers() {
    check_family("nllb");
}

#[test]
fn m2m100_matches_transformers() {
    check_family("m2m100");
    let tok = load("m2m100");
    // The code as `src_lang` takes it, the token as the vocabulary has it.
    assert_eq!(
        tok.lang_code_id("fr").unwrap(),
        tok.token_to_id("__fr__").unwrap()
    );
    assert!(tok.lang_code_id("__fr__").is_err());
}

#[test]
fn marian_matches_transformers() {
    check_family("marian");
    let exp = expected("marian");
    let tok = load("marian");
    let target = tok.target_tokenizer().expect("Marian has a target side");
    let mut mismatches = Vec::new();
    for row in exp["target"].as_array().unwrap() {
        let text = row["text"].as_str().unwrap();
        let want = ids_of(&row["ids"]);
        let got = target.encode(text, &EncodeOptions::default()).unwrap()[0]
            .ids
            .clone();
        if got != want {
            mismatches.push(format!(
                "target ids of {text:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        let want_text = row["decoded"].as_str().unwrap();
        for (side, t) in [("target", target), ("source", &tok)] {
            let got_text = t.decode(&want, true).unwrap();
            if got_text != want_text {
                mismatches.push(format!(
                    "{side} decode of target ids of {text:?}:\n  got  {got_text:?}\n  want {want_text:?}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A copy of a fixture directory without some files, removed on drop.
struct Copy(PathBuf);

impl Copy {
    fn without(family: &str, drop: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ferroformer-seq2seq-tok-{family}-{}-{}",
            drop.join("-"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture_dir(family)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if !drop.contains(&name.as_str()) {
                std::fs::copy(&path, dir.join(&name)).unwrap();
            }
        }
        Copy(dir)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_error(family: &str, drop: &[&str]) -> String {
    let copy = Copy::without(family, drop);
    match AutoTokenizer::from_dir(&copy.0) {
        Ok(_) => panic!("{family} without {drop:?} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_files_are_errors_naming_them() {
    for (family, drop, named) in [
        ("t5", "spiece.model", "spiece.model"),
        ("pegasus", "spiece.model", "spiece.model"),
        (
            "mbart",
            "sentencepiece.bpe.model",
            "sentencepiece.bpe.model",
        ),
        ("nllb", "sentencepiece.bpe.model", "sentencepiece.bpe.model"),
        ("m2m100", "vocab.json", "vocab.json"),
        (
            "m2m100",
            "sentencepiece.bpe.model",
            "sentencepiece.bpe.model",
        ),
        ("marian", "vocab.json", "vocab.json"),
        ("marian", "target.spm", "target.spm"),
        ("marian", "source.spm", "source.spm"),
    ] {
        let err = load_error(family, &[drop]);
        assert!(
            err.contains(named),
            "{family} without {drop}: the error names {named}: {err}"
        );
    }
}

#[test]
fn corrupt_model_is_an_error_naming_the_file() {
    let copy = Copy::without("t5", &[]);
    std::fs::write(
        copy.0.join("spiece.model"),
        b"\x0a\xff\xff\xff not a protobuf",
    )
    .unwrap();
    let err = AutoTokenizer::from_dir(&copy.0).unwrap_err().to_string();
    assert!(
        err.contains("spiece.model") && err.contains("SentencePiece"),
        "{err}"
    );
}

#[test]
fn tokenizer_json_keeps_precedence() {
    // A tokenizer.json next to the SentencePiece files is what loads: here a WordPiece one,
    // whose ids differ from the T5 model's.
    let copy = Copy::without("t5", &[]);
    let tokenizer_json = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encoders/bert-base/tokenizer.json");
    std::fs::copy(&tokenizer_json, copy.0.join("tokenizer.json")).unwrap();
    let json = AutoTokenizer::from_dir(&copy.0).unwrap();
    let spm = load("t5");
    let opts = EncodeOptions::default();
    let a = json.encode("hello world", &opts).unwrap()[0].tokens.clone();
    let b = spm.encode("hello world", &opts).unwrap()[0].tokens.clone();
    assert_ne!(a, b);
    assert!(json.source().join("tokenizer.json").is_file());
    assert!(!a.iter().any(|t| t.starts_with('▁')), "{a:?}");
}

#[test]
fn t5_hub_layout_uses_class_defaults() {
    // No tokenizer class (config.json's model type), no special tokens configured: 100
    // sentinels, `</s>` / `<unk>` / `<pad>` from the class.
    check_family("t5-hub");
    let tok = load("t5-hub");
    assert_eq!(tok.pad_token(), Some("<pad>"));
    assert_eq!(tok.model_max_length(), Some(512));
    assert!(tok.token_to_id("<extra_id_99>").is_some());
}

#[test]
fn t5_non_legacy_prepends_only_the_first_word() {
    check_family("t5-nonlegacy");
}

#[test]
fn marian_hub_layout_matches_transformers() {
    check_family("marian-hub");
    let tok = load("marian-hub");
    assert!(tok.target_tokenizer().is_some());
    assert_eq!(tok.eos_token(), Some("</s>"));
}

#[test]
fn nllb_legacy_behaviour_puts_the_language_last() {
    check_family("nllb-legacy");
}

#[test]
fn mbart50_class_defaults_match_transformers() {
    check_family("mbart50-hub");
}
