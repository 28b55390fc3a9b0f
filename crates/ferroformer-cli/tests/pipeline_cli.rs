//! `ferroformer pipeline` end to end: the JSON contract (one document on stdout, one entry
//! per input, in order, equal to `transformers`' pipeline output), inputs from arguments,
//! files and stdin, the readable table, and clear failures.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model(name: &str) -> String {
    fixtures()
        .join("encoders")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .output()
        .expect("run ferroformer")
}

fn run_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_stdout(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// The reference case `name` of `task`'s fixture.
fn reference(task: &str, name: &str) -> Value {
    let path = fixtures().join(format!("pipelines/{task}.json"));
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone()
}

fn assert_close(ours: &Value, expected: &Value, path: &str) {
    match (ours, expected) {
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            for (k, v) in a {
                assert_close(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::Number(x), Value::Number(y)) if !(x.is_u64() && y.is_u64()) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5, "{path}: {x} vs {y}");
        }
        (a, b) => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn text_classification_json_is_one_entry_per_input() {
    let case = reference("text-classification", "bert-seqcls default");
    let inputs: Vec<&str> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let model = model("bert-seqcls");
    let mut args = vec![
        "pipeline",
        "sentiment-analysis",
        "--model",
        &model,
        "--json",
        "--batch-size",
        "2",
    ];
    args.extend(&inputs);
    let out = json_stdout(&run(&args));
    assert_close(&out, &case["expected"], "text-classification");
}

#[test]
fn ner_with_aggregation_from_an_input_file() {
    let case = reference("token-classification", "bert-tokcls simple");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inputs.txt");
    let lines: Vec<&str> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n\n") + "\n").unwrap();
    let model = model("bert-tokcls");
    let out = json_stdout(&run(&[
        "pipeline",
        "ner",
        "--model",
        &model,
        "--aggregation",
        "simple",
        "--input-file",
        file.to_str().unwrap(),
        "--json",
    ]));
    assert_close(&out, &case["expected"], "ner");
}

#[test]
fn question_answering_from_flags_and_from_jsonl_on_stdin() {
    let case = reference("question-answering", "bert-qa default");
    let model = model("bert-qa");
    let first = &case["inputs"][0];
    let out = json_stdout(&run(&[
        "pipeline",
        "question-answering",
        "--model",
        &model,
        "--question",
        first["question"].as_str().unwrap(),
        "--context",
        first["context"].as_str().unwrap(),
        "--json",
    ]));
    assert_close(&out[0], &case["expected"][0], "qa flags");

    let jsonl: String = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.to_string() + "\n")
        .collect();
    let out = json_stdout(&run_stdin(
        &[
            "pipeline",
            "question-answering",
            "--model",
            &model,
            "--json",
            "-",
        ],
        &jsonl,
    ));
    assert_close(&out, &case["expected"], "qa stdin");
}

#[test]
fn fill_mask_zero_shot_and_features() {
    let case = reference("fill-mask", "bert-mlm top_k=2");
    let model_dir = model("bert-mlm");
    let out = json_stdout(&run(&[
        "pipeline",
        "fill-mask",
        "--model",
        &model_dir,
        "--top-k",
        "2",
        "--json",
        case["inputs"][0].as_str().unwrap(),
    ]));
    assert_close(&out[0], &case["expected"][0], "fill-mask");

    let case = reference("zero-shot-classification", "multi label");
    let nli = model("bert-nli");
    let out = json_stdout(&run(&[
        "pipeline",
        "zero-shot-classification",
        "--model",
        &nli,
        "--candidate-labels",
        "politics,science,sports",
        "--multi-label",
        "--json",
        case["inputs"][0].as_str().unwrap(),
    ]));
    assert_close(&out[0], &case["expected"][0], "zero-shot");

    let base = model("bert-base");
    let out = json_stdout(&run(&[
        "pipeline",
        "feature-extraction",
        "--model",
        &base,
        "--pooling",
        "mean",
        "--normalize",
        "--json",
        "hello world",
        "",
    ]));
    let vectors = out.as_array().unwrap();
    assert_eq!(vectors.len(), 2, "the empty string is an input too");
    for v in vectors {
        let norm: f64 = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "unit vectors, found |v|² = {norm}"
        );
        assert_eq!(v.as_array().unwrap().len(), 16);
    }
}

#[test]
fn readable_output_without_json() {
    let model = model("bert-seqcls");
    let o = run(&[
        "pipeline",
        "text-classification",
        "--model",
        &model,
        "--top-k",
        "all",
        "I love it",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("> I love it"), "{text}");
    assert!(
        text.contains("POSITIVE") && text.contains("NEGATIVE"),
        "{text}"
    );
}

#[test]
fn texts_longer_than_the_model_are_truncated() {
    let model = model("bert-tokcls");
    let long = "Ada Lovelace wrote the first program in London. ".repeat(40);
    let out = json_stdout(&run(&[
        "pipeline",
        "token-classification",
        "--model",
        &model,
        "--ignore-labels",
        "",
        "--json",
        &long,
    ]));
    let entities = out[0].as_array().unwrap();
    // 128 positions minus [CLS] and [SEP].
    assert_eq!(entities.len(), 126, "one entity per kept token");
}

/// Runs a failing command and returns its stderr, checking the exit code and that stdout
/// stayed empty.
fn failure(o: Output) -> String {
    assert!(!o.status.success(), "expected failure");
    assert!(o.stdout.is_empty(), "nothing on stdout when failing");
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        !err.contains("panicked"),
        "a panic is not an error message: {err}"
    );
    err
}

#[test]
fn bad_input_is_a_clear_error() {
    let seqcls = model("bert-seqcls");
    let err = failure(run(&["pipeline", "summarize", "--model", &seqcls, "hi"]));
    assert!(
        err.contains("unknown task `summarize`") && err.contains("question-answering"),
        "{err}"
    );

    let qa = model("bert-qa");
    let err = failure(run(&[
        "pipeline",
        "question-answering",
        "--model",
        &qa,
        "--question",
        "Who?",
    ]));
    assert!(err.contains("--context"), "{err}");
    let err = failure(run(&[
        "pipeline",
        "question-answering",
        "--model",
        &qa,
        "Who?",
    ]));
    assert!(err.contains("question and a context"), "{err}");

    let err = failure(run(&[
        "pipeline",
        "fill-mask",
        "--model",
        &model("bert-mlm"),
        "no mask here",
    ]));
    assert!(err.contains("no mask token ([MASK])"), "{err}");

    let err = failure(run(&[
        "pipeline",
        "zero-shot-classification",
        "--model",
        &model("bert-nli"),
        "x",
    ]));
    assert!(err.contains("--candidate-labels"), "{err}");

    // A checkpoint whose tokenizer files are missing or corrupt, or whose weights are cut
    // short.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ckpt");
    std::fs::create_dir(&copy).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(PathBuf::from(&seqcls).join(f), copy.join(f)).unwrap();
    }
    let c = copy.to_str().unwrap();
    let err = failure(run(&[
        "pipeline",
        "text-classification",
        "--model",
        c,
        "hi",
    ]));
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab.txt"),
        "{err}"
    );

    std::fs::write(copy.join("tokenizer.json"), "{ not json").unwrap();
    let err = failure(run(&[
        "pipeline",
        "text-classification",
        "--model",
        c,
        "hi",
    ]));
    assert!(err.contains("tokenizer.json"), "{err}");

    std::fs::copy(
        PathBuf::from(&seqcls).join("tokenizer.json"),
        copy.join("tokenizer.json"),
    )
    .unwrap();
    let weights = std::fs::read(copy.join("model.safetensors")).unwrap();
    std::fs::write(
        copy.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let err = failure(run(&[
        "pipeline",
        "text-classification",
        "--model",
        c,
        "hi",
    ]));
    assert!(err.contains("model.safetensors"), "{err}");

    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args([
            "pipeline",
            "text-classification",
            "--model",
            "nobody/no-such-model",
            "hi",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .unwrap();
    let err = failure(o);
    assert!(err.contains("nobody/no-such-model"), "{err}");
}
