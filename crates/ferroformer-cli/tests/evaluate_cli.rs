//! `ferroformer evaluate` end to end: results on stdout as one JSON object equal (to 1e-9)
//! to the reference values of tests/fixtures/metrics, text and JSON Lines inputs, and errors
//! that name the file and the line with a non-zero exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture_case(file: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metrics")
        .join(file);
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| pick(c))
        .unwrap_or_else(|| panic!("no such case in {file}"))
        .clone()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .arg("evaluate")
        .args(args)
        .output()
        .expect("run ferroformer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes one JSON value per line.
fn write_jsonl(path: &Path, values: &Value) {
    let lines: Vec<String> = values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| serde_json::to_string(v).unwrap())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Runs with `--json` and returns the parsed stdout, which must be exactly one JSON object.
fn json_result(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "evaluate {args:?} failed: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is not one line: {stdout}"
    );
    let value: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert!(value.is_object(), "{value}");
    value
}

fn assert_close(actual: &Value, expected: &Value) {
    let (a, e) = (actual.as_object().unwrap(), expected.as_object().unwrap());
    let mut ak: Vec<_> = a.keys().collect();
    let mut ek: Vec<_> = e.keys().collect();
    ak.sort();
    ek.sort();
    assert_eq!(ak, ek);
    for (k, ev) in e {
        let flatten = |v: &Value| -> Vec<f64> {
            match v {
                Value::Array(items) => items.iter().map(|x| x.as_f64().unwrap()).collect(),
                other => vec![other.as_f64().unwrap()],
            }
        };
        let (av, evs) = (flatten(&a[k]), flatten(ev));
        assert_eq!(av.len(), evs.len(), "{k}");
        for (x, y) in av.iter().zip(&evs) {
            assert!((x - y).abs() <= 1e-9, "{k}: {x} vs reference {y}");
        }
    }
}

#[test]
fn rouge_from_jsonl_with_several_references_matches_rouge_score() {
    let case = fixture_case("rouge.json", |c| {
        c["options"] == serde_json::json!({"use_stemmer": true})
            && c["references"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_array().unwrap().len() > 1)
    });
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = (dir.path().join("pred.jsonl"), dir.path().join("refs.jsonl"));
    write_jsonl(&p, &case["predictions"]);
    write_jsonl(&r, &case["references"]);
    let result = json_result(&[
        "rouge",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--use-stemmer",
        "--json",
    ]);
    assert_close(&result, &case["expected"]);
}

#[test]
fn sacrebleu_options_reach_the_metric() {
    let case = fixture_case("bleu.json", |c| {
        c["metric"] == "sacrebleu"
            && c["options"] == serde_json::json!({"tokenize": "intl", "smooth_method": "floor"})
    });
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = (dir.path().join("pred.jsonl"), dir.path().join("refs.jsonl"));
    write_jsonl(&p, &case["predictions"]);
    write_jsonl(&r, &case["references"]);
    let result = json_result(&[
        "sacrebleu",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--tokenize",
        "intl",
        "--smooth-method",
        "floor",
        "--json",
    ]);
    assert_close(&result, &case["expected"]);
}

#[test]
fn f1_from_plain_text_label_files_matches_scikit_learn() {
    let case = fixture_case("classification.json", |c| {
        c["metric"] == "f1" && c["options"] == serde_json::json!({"average": "macro"})
    });
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = (dir.path().join("pred.txt"), dir.path().join("refs.txt"));
    let labels = |v: &Value| -> String {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| match l {
                Value::Array(one) => one[0].as_str().unwrap().to_string(),
                other => other.as_str().unwrap().to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(&p, labels(&case["predictions"])).unwrap();
    // CRLF line ends read as LF.
    std::fs::write(
        &r,
        labels(&case["references"]).replace('\n', "\r\n") + "\r\n",
    )
    .unwrap();
    let result = json_result(&[
        "f1",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--average",
        "macro",
        "--json",
    ]);
    assert_close(&result, &case["expected"]);

    // Without --json: a readable summary naming the metric and its key.
    let out = run(&[
        "f1",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--average",
        "macro",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("f1 over "), "{stdout}");
    let expected = case["expected"]["f1"].as_f64().unwrap();
    assert!(stdout.contains(&format!("{expected:.6}")), "{stdout}");
}

/// Runs a failing command and returns its stderr.
fn failure(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "evaluate {args:?} succeeded");
    assert!(
        out.stdout.is_empty(),
        "stdout on failure: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

#[test]
fn errors_name_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(path("pred.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(path("two.txt"), "a\nb\n").unwrap();
    std::fs::write(path("bad_utf8.txt"), b"a\n\xff\xfe\nc\n").unwrap();
    std::fs::write(path("bad.jsonl"), "\"a\"\n[\"b\", \"c\"]\n{not json\n").unwrap();
    std::fs::write(path("list.jsonl"), "\"a\"\n[\"b\", 3]\n[]\n").unwrap();
    std::fs::write(path("multi.jsonl"), "\"a\"\n[\"b\", \"c\"]\n\"d\"\n").unwrap();

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("two.txt"),
    ]);
    assert!(
        err.contains("pred.txt has 3 predictions") && err.contains("two.txt has 2 references"),
        "{err}"
    );

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("bad_utf8.txt"),
    ]);
    assert!(
        err.contains("bad_utf8.txt:2") && err.contains("UTF-8"),
        "{err}"
    );

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("bad.jsonl"),
    ]);
    assert!(err.contains("bad.jsonl:3") && err.contains("JSON"), "{err}");

    let err = failure(&[
        "rouge",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("list.jsonl"),
    ]);
    assert!(
        err.contains("list.jsonl:3") && err.contains("empty list"),
        "{err}"
    );

    let err = failure(&[
        "exact_match",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("multi.jsonl"),
    ]);
    assert!(
        err.contains("multi.jsonl:2: exact_match takes one reference per prediction, found 2"),
        "{err}"
    );

    let err = failure(&[
        "accuracy",
        "--predictions",
        &path("multi.jsonl"),
        "--references",
        &path("pred.txt"),
    ]);
    assert!(
        err.contains("multi.jsonl:2") && err.contains("found a list"),
        "{err}"
    );

    let err = failure(&[
        "blue",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("pred.txt"),
    ]);
    assert!(
        err.contains("unknown metric `blue`") && err.contains("sacrebleu"),
        "{err}"
    );

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("pred.txt"),
        "--use-stemmer",
    ]);
    assert!(
        err.contains("--use-stemmer does not apply to metric bleu"),
        "{err}"
    );

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("pred.txt"),
        "--references",
        &path("pred.txt"),
        "--no-such-flag",
    ]);
    assert!(err.contains("--no-such-flag"), "{err}");

    let err = failure(&[
        "bleu",
        "--predictions",
        &path("missing.txt"),
        "--references",
        &path("pred.txt"),
    ]);
    assert!(err.contains("missing.txt"), "{err}");
}

#[test]
fn meteor_reads_wordnet_from_the_given_directory() {
    let case = fixture_case("meteor.json", |c| c["metric"] == "meteor");
    let dir = tempfile::tempdir().unwrap();
    let (p, r) = (dir.path().join("pred.jsonl"), dir.path().join("refs.jsonl"));
    write_jsonl(&p, &case["predictions"]);
    write_jsonl(&r, &case["references"]);
    let wordnet =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/metrics/wordnet");
    let args = [
        "meteor",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--wordnet",
        wordnet.to_str().unwrap(),
        "--json",
    ];
    assert_close(&json_result(&args), &case["expected"]);

    let missing = dir.path().join("no-wordnet");
    let err = failure(&[
        "meteor",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
        "--wordnet",
        missing.to_str().unwrap(),
    ]);
    assert!(
        err.contains("no-wordnet") && err.contains("index.noun"),
        "{err}"
    );
}

/// `evaluate`'s perplexity computes in f32 (log-softmax, the mean, `exp`): equal to 1e-5
/// relative.
fn assert_perplexities_close(actual: &Value, case: &Value) {
    let name = &case["name"];
    let got: Vec<f64> = actual["perplexities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = case["perplexities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{name}");
    for (x, y) in got
        .iter()
        .chain([&actual["mean_perplexity"].as_f64().unwrap()])
        .zip(
            want.iter()
                .chain([&case["mean_perplexity"].as_f64().unwrap()]),
        )
    {
        assert!(
            (x - y).abs() <= 1e-5 * y.abs(),
            "{name}: {x} vs evaluate's {y}"
        );
    }
}

fn trained_gpt2() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/trained-gpt2")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn perplexity_matches_evaluate_with_and_without_start_token_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_gpt2();
    for name in [
        "defaults",
        "no_start_token",
        "max_length",
        "max_length_no_start_token",
    ] {
        let case = fixture_case("perplexity.json", |c| c["name"] == name);
        // JSON Lines: one text may hold a newline.
        let texts = dir.path().join(format!("{name}.jsonl"));
        write_jsonl(&texts, &case["texts"]);
        let mut args = vec![
            "perplexity".to_string(),
            "--model".into(),
            model.clone(),
            "--predictions".into(),
            texts.to_str().unwrap().into(),
            "--json".into(),
        ];
        if let Some(n) = case["max_length"].as_u64() {
            args.extend(["--max-length".into(), n.to_string()]);
        }
        if case["add_start_token"] == false {
            args.push("--no-start-token".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_perplexities_close(&json_result(&args), &case);
    }
}

#[test]
fn perplexity_errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_gpt2();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "to be or not\n").unwrap();
    let long = dir.path().join("long.txt");
    std::fs::write(&long, "to be, or not to be, that is the question\n").unwrap();
    let texts = texts.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["perplexity", "--predictions", texts],
            &["perplexity", "--model"],
        ),
        (
            vec![
                "perplexity",
                "--model",
                &model,
                "--predictions",
                texts,
                "--references",
                texts,
            ],
            &["takes no references"],
        ),
        (
            vec![
                "perplexity",
                "--model",
                &model,
                "--predictions",
                texts,
                "--use-stemmer",
            ],
            &["--use-stemmer", "not an option of perplexity"],
        ),
        (
            vec![
                "perplexity",
                "--model",
                &model,
                "--predictions",
                long.to_str().unwrap(),
            ],
            &["text 1", "context of 16", "max_length"],
        ),
        (
            vec!["bleu", "--predictions", texts],
            &["bleu", "--references"],
        ),
        (
            vec![
                "bleu",
                "--predictions",
                texts,
                "--references",
                texts,
                "--model",
                &model,
            ],
            &["--model", "perplexity"],
        ),
        (
            vec!["perplexty", "--predictions", texts, "--references", texts],
            &["unknown metric `perplexty`", "perplexity"],
        ),
    ];
    for (args, needles) in cases {
        let err = failure(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
        }
    }
}

fn task_fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/metrics/evaluate_task.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn encoder(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/encoders")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn assert_metrics(actual: &Value, expected: &Value, what: &str) {
    for (k, v) in expected.as_object().unwrap() {
        let (x, y) = (actual[k].as_f64(), v.as_f64().unwrap());
        assert!(
            x.is_some_and(|x| (x - y).abs() <= 1e-9),
            "{what}: {k} = {:?}, reference {y}",
            actual[k]
        );
    }
}

#[test]
fn evaluate_task_text_classification_scores_the_pipeline_as_transformers_and_sklearn() {
    let f = &task_fixture()["text_classification"];
    let dir = tempfile::tempdir().unwrap();
    // The same rows as CSV (labels as names or ids) and as JSON Lines.
    let jsonl = dir.path().join("data.jsonl");
    write_jsonl(&jsonl, &f["rows"]);
    let csv = dir.path().join("data.csv");
    let mut text = String::from("label,text\n");
    for row in f["rows"].as_array().unwrap() {
        let t = row["text"].as_str().unwrap().replace('"', "\"\"");
        text.push_str(&format!("{},\"{t}\"\n", row["label"].as_str().unwrap()));
    }
    std::fs::write(&csv, text).unwrap();
    let png = dir.path().join("confusion.png");
    let model = encoder("bert-seqcls");
    for data in [&jsonl, &csv] {
        let out = json_result(&[
            "--model",
            &model,
            "--task",
            "text-classification",
            "--data",
            data.to_str().unwrap(),
            "--metric",
            "accuracy,precision,recall,f1",
            "--confusion-matrix",
            png.to_str().unwrap(),
            "--json",
        ]);
        assert_metrics(&out["metrics"], &f["metrics"], "binary");
        assert_eq!(out["confusion_matrix"], f["confusion_matrix"]);
        assert_eq!(out["labels"], f["labels"]);
        assert_eq!(out["examples"], f["rows"].as_array().unwrap().len());
    }
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG", "the confusion matrix is a PNG");
    let macro_f1 = json_result(&[
        "--model",
        &model,
        "--task",
        "sentiment-analysis",
        "--data",
        jsonl.to_str().unwrap(),
        "--metric",
        "f1",
        "--average",
        "macro",
        "--json",
    ]);
    assert!(
        (macro_f1["metrics"]["f1"].as_f64().unwrap() - f["f1_macro"].as_f64().unwrap()).abs()
            <= 1e-9
    );
}

#[test]
fn evaluate_task_question_answering_scores_with_squad() {
    let f = &task_fixture()["question_answering"];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qa.jsonl");
    write_jsonl(&data, &f["rows"]);
    let out = json_result(&[
        "--model",
        &encoder("bert-qa"),
        "--task",
        "question-answering",
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_metrics(&out["metrics"], &f["metrics"], "squad");
}

#[test]
fn evaluate_task_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"good\", \"label\": \"POSITIVE\"}\n{\"text\": \"bad\", \"label\": \"MEH\"}\n",
    )
    .unwrap();
    let data = data.to_str().unwrap();
    let model = encoder("bert-seqcls");
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec![
                "--model",
                &model,
                "--task",
                "text-classification",
                "--data",
                data,
            ],
            &["line 2", "`MEH`", "NEGATIVE, POSITIVE"],
        ),
        (
            vec![
                "--model",
                &model,
                "--task",
                "text-classification",
                "--data",
                data,
                "--metric",
                "bleu",
            ],
            &["--metric bleu", "accuracy, precision, recall, f1"],
        ),
        (
            vec!["--model", &model, "--task", "summarization", "--data", data],
            &["summarization", "no encoder-decoder pipeline yet"],
        ),
        (
            vec![
                "--model",
                &model,
                "--task",
                "text-classification",
                "--data",
                data,
                "--metric",
                "accuracy",
                "--use-stemmer",
            ],
            &["--use-stemmer", "not an option of accuracy"],
        ),
        (
            vec![
                "--model",
                &model,
                "--task",
                "text-classification",
                "--data",
                data,
                "--label-column",
                "stars",
            ],
            &["stars"],
        ),
    ];
    for (args, needles) in cases {
        let err = failure(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: `{n}` not in: {err}");
        }
    }
}

fn seqeval_fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/metrics/seqeval.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Compares nested seqeval results: the same keys, numbers within 1e-9.
fn assert_nested_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let (ak, ek): (Vec<_>, Vec<_>) = (a.keys().collect(), e.keys().collect());
            assert_eq!(ak, ek, "{path}: keys (in the metric's order)");
            for (k, ev) in e {
                assert_nested_close(&a[k], ev, &format!("{path}.{k}"));
            }
        }
        _ => {
            let (x, y) = (actual.as_f64().unwrap(), expected.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-9, "{path}: {x} vs reference {y}");
        }
    }
}

#[test]
fn seqeval_from_jsonl_tag_lists_matches_evaluate() {
    let fixture = seqeval_fixture();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "several types, an empty sequence",
        "I without B",
        "all O, zero_division 1",
        "strict IOBES",
        "strict, detected IOB2",
        "suffix",
    ] {
        let case = fixture["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no seqeval case {name}"));
        // Not .jsonl on purpose: seqeval reads JSON Lines whatever the file is called.
        let (p, r) = (dir.path().join("pred.txt"), dir.path().join("refs.txt"));
        write_jsonl(&p, &case["predictions"]);
        write_jsonl(&r, &case["references"]);
        let mut args = vec![
            "seqeval".to_string(),
            "--predictions".into(),
            p.to_str().unwrap().into(),
            "--references".into(),
            r.to_str().unwrap().into(),
            "--json".into(),
        ];
        for (key, value) in case["options"].as_object().unwrap() {
            args.push(format!("--{}", key.replace('_', "-")));
            if let Some(v) = value.as_str() {
                args.push(v.to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = json_result(&args);
        assert_nested_close(&result, &case["expected"], name);
    }
    // The plain output names each entity type and the overall scores.
    let case = &fixture["cases"][1];
    let (p, r) = (dir.path().join("p.jsonl"), dir.path().join("r.jsonl"));
    write_jsonl(&p, &case["predictions"]);
    write_jsonl(&r, &case["references"]);
    let out = run(&[
        "seqeval",
        "--predictions",
        p.to_str().unwrap(),
        "--references",
        r.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for word in ["overall_f1", "LOC", "MISC", "ORG", "PER", "precision"] {
        assert!(stdout.contains(word), "{word} missing from {stdout}");
    }
}

#[test]
fn seqeval_errors_name_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    let good = write("good.jsonl", "[\"B-PER\", \"O\"]\n[\"O\"]\n");
    let cases: Vec<(String, &str, Vec<&str>, String)> = vec![
        (
            write("short.jsonl", "[\"B-PER\", \"O\"]\n"),
            "short",
            vec![],
            "has 1 tag sequences but".into(),
        ),
        (
            write("notlist.jsonl", "[\"B-PER\", \"O\"]\n\"O\"\n"),
            "notlist",
            vec![],
            "notlist.jsonl:2: found \"O\", expected a list of tags".into(),
        ),
        (
            write("notjson.jsonl", "[\"B-PER\", \"O\"]\nB-PER O\n"),
            "notjson",
            vec![],
            "notjson.jsonl:2: not a JSON value".into(),
        ),
        (
            write("number.jsonl", "[\"B-PER\", 3]\n[\"O\"]\n"),
            "number",
            vec![],
            "number.jsonl:1: tag 2 is 3, expected a string".into(),
        ),
        (
            write("long.jsonl", "[\"B-PER\", \"O\"]\n[\"O\", \"O\"]\n"),
            "long",
            vec![],
            "long.jsonl:2: 2 tags, but line 2 of".into(),
        ),
        (
            write("iobes.jsonl", "[\"B-PER\", \"O\"]\n[\"S-LOC\"]\n"),
            "iobes",
            vec!["--mode", "strict", "--scheme", "IOB2"],
            "iobes.jsonl:2: tag 1 (`S-LOC`) has a prefix IOB2 does not allow".into(),
        ),
        (
            write("detected.jsonl", "[\"B-PER\", \"O\"]\n[\"U-LOC\"]\n"),
            "detected",
            vec!["--mode", "strict"],
            "detected.jsonl:2: tag 1 (`U-LOC`) has a prefix IOB2 does not allow".into(),
        ),
        (
            write("empty.jsonl", "[\"B-PER\", \"\"]\n[\"O\"]\n"),
            "empty",
            vec![],
            "empty.jsonl:1: tag 2 is empty".into(),
        ),
        (
            good.clone(),
            "scheme without strict",
            vec!["--scheme", "IOB2"],
            "only in the strict mode".into(),
        ),
        (
            good.clone(),
            "bad zero division",
            vec!["--zero-division", "nan"],
            "expected warn, 0 or 1".into(),
        ),
        (
            good.clone(),
            "stray option",
            vec!["--use-stemmer"],
            "option --use-stemmer does not apply to metric seqeval".into(),
        ),
    ];
    for (predictions, what, extra, want) in cases {
        let mut args = vec![
            "seqeval",
            "--predictions",
            predictions.as_str(),
            "--references",
            good.as_str(),
        ];
        args.extend(extra);
        let err = failure(&args);
        assert!(err.contains(&want), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

/// `evaluate --task token-classification` as `evaluate`'s token-classification evaluator
/// with seqeval: the same tagged sentences as JSON Lines (tags as names or ids) and as
/// CoNLL, default and strict IOB2 mode.
#[test]
fn evaluate_task_token_classification_scores_with_seqeval_as_evaluate() {
    let f = &task_fixture()["token_classification"];
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("ner.jsonl");
    write_jsonl(&jsonl, &f["rows"]);
    // CoNLL: one `word TAG` per line, tags as names.
    let conll = dir.path().join("ner.conll");
    let mut text = String::from("-DOCSTART- O\n\n");
    for (row, refs) in f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f["references"].as_array().unwrap())
    {
        let words = row["tokens"].as_array().unwrap();
        for (w, t) in words.iter().zip(refs.as_array().unwrap()) {
            text.push_str(&format!(
                "{} {}\n",
                w.as_str().unwrap(),
                t.as_str().unwrap()
            ));
        }
        text.push('\n');
    }
    std::fs::write(&conll, text).unwrap();
    let model = encoder("bert-tokcls");
    let examples = f["rows"].as_array().unwrap().len();
    for data in [&jsonl, &conll] {
        let out = json_result(&[
            "--model",
            &model,
            "--task",
            "ner",
            "--data",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(out["task"], "token-classification");
        assert_eq!(out["examples"], examples);
        assert_nested_close(&out["metrics"], &f["metrics"], "token-classification");
    }
    let out = json_result(&[
        "--model",
        &model,
        "--task",
        "token-classification",
        "--data",
        jsonl.to_str().unwrap(),
        "--metric",
        "seqeval",
        "--mode",
        "strict",
        "--scheme",
        "IOB2",
        "--json",
    ]);
    assert_nested_close(&out["metrics"], &f["metrics_strict"], "strict IOB2");
    // The strict result differs from the default one: the options reached the metric.
    assert_ne!(f["metrics"], f["metrics_strict"]);

    // Errors: a tag id beyond the labels, a metric the task does not take.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"tokens\": [\"Paris\"], \"tags\": [\"42\"]}\n").unwrap();
    let err = failure(&[
        "--model",
        &model,
        "--task",
        "ner",
        "--data",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("line 1") && err.contains("tag id 42"), "{err}");
    let err = failure(&[
        "--model",
        &model,
        "--task",
        "ner",
        "--data",
        jsonl.to_str().unwrap(),
        "--metric",
        "accuracy",
    ]);
    assert!(
        err.contains("token-classification is scored with seqeval"),
        "{err}"
    );
}
