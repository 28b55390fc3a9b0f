//! `ferroformer pipeline text-generation` and `ferroformer perplexity` against
//! `transformers` (fixture tests/fixtures/text_generation.json from
//! scripts/reference/text_generation_fixtures.py, on the tiny GPT-2 our `train lm` wrote).

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .output()
        .expect("run ferroformer")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("text_generation.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model() -> String {
    fixtures()
        .join("trained-gpt2")
        .to_str()
        .unwrap()
        .to_string()
}

/// HF keyword arguments → our flags.
fn flags(options: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in options.as_object().unwrap() {
        out.push(format!("--{}", k.replace('_', "-")));
        out.push(match v {
            Value::Bool(b) => b.to_string(),
            other => other.to_string(),
        });
    }
    out
}

#[test]
fn text_generation_equals_transformers_pipeline() {
    let r = reference();
    let model = model();
    for case in r["cases"].as_array().unwrap() {
        let mut args: Vec<String> = ["pipeline", "text-generation", "--model", &model, "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(flags(&case["options"]));
        for input in case["inputs"].as_array().unwrap() {
            args.push(input.as_str().unwrap().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert!(
            o.status.success(),
            "{}: {}",
            case["name"],
            String::from_utf8_lossy(&o.stderr)
        );
        let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ours, case["expected"], "{}", case["name"]);
    }
}

#[test]
fn perplexity_equals_the_guides_sliding_window() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("text.txt");
    std::fs::write(&file, r["perplexity_text"].as_str().unwrap()).unwrap();
    let model = model();
    for expected in r["perplexity"].as_array().unwrap() {
        let stride = expected["stride"].to_string();
        let o = run(&[
            "perplexity",
            "--model",
            &model,
            "--file",
            file.to_str().unwrap(),
            "--context-length",
            "16",
            "--stride",
            &stride,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(ours["tokens"], expected["tokens"], "stride {stride}");
        for key in ["perplexity", "nll_per_token"] {
            let (a, b) = (ours[key].as_f64().unwrap(), expected[key].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "stride {stride} {key}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn invalid_generation_and_perplexity_options_are_clear_errors() {
    let model = model();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "pipeline",
                "text-generation",
                "--model",
                &model,
                "--top-p",
                "1.5",
                "x",
            ],
            "top_p",
        ),
        (
            vec![
                "pipeline",
                "text-generation",
                "--model",
                &model,
                "--temperature=-1",
                "x",
            ],
            "temperature",
        ),
        (
            vec![
                "pipeline",
                "text-generation",
                "--model",
                &model,
                "--do-sample",
                "false",
                "--num-return-sequences",
                "3",
                "x",
            ],
            "num_return_sequences",
        ),
        (
            vec![
                "perplexity",
                "--model",
                &model,
                "--file",
                "/no/such/file.txt",
            ],
            "/no/such/file.txt",
        ),
    ];
    for (args, needle) in cases {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.txt");
    std::fs::write(&file, "ROMEO: But soft").unwrap();
    let f = file.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--stride", "0"], "stride"),
        (vec!["--context-length", "64"], "--context-length 64"),
    ] {
        let mut args = vec!["perplexity", "--model", &model, "--file", f];
        args.extend(extra);
        let o = run(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{err}");
    }
}
