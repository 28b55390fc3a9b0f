//! `ferroformer train classifier` from the command line: settings from a TOML file with
//! flags overriding it, the output directory, progress on stderr only, clear errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .output()
        .expect("run ferroformer")
}

#[test]
fn config_file_with_flags_overriding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let data = fixtures().join("classifier");
    let toml = tmp.path().join("run.toml");
    std::fs::write(
        &toml,
        format!(
            "model = {:?}\ndata = {:?}\neval_data = {:?}\nepochs = 5\nbatch_size = 4\nlr = 1e-3\nmetric = [\"accuracy\", \"f1\"]\n",
            data.join("bert-init").display().to_string(),
            data.join("train.csv").display().to_string(),
            data.join("eval.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    let o = run(&[
        "train",
        "classifier",
        "--config",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--freeze-base",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(o.stdout.is_empty(), "progress belongs on stderr");
    assert!(stderr.contains("eval") && stderr.contains("f1"), "{stderr}");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "log.jsonl",
        "loss.png",
    ] {
        assert!(out.join(f).is_file(), "no {f}");
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint/training_state.json")).unwrap(),
    )
    .unwrap();
    // The flag overrode the file's 5 epochs: 10 examples in batches of 4 is 3 steps.
    assert_eq!(state["step"], 3);
    assert_eq!(state["config"]["freeze_base"], true);

    // A second run into the same directory is refused without --resume.
    let o = run(&[
        "train",
        "classifier",
        "--config",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

#[test]
fn unknown_keys_and_bad_data_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&["train", "classifier", "--lable-column", "y"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("lable-column") && stderr.contains("label_column"),
        "{stderr}"
    );

    let bad = tmp.path().join("bad.tsv");
    std::fs::write(&bad, "text\tlabel\nfine\tpos\n\tneg\textra\n").unwrap();
    let o = run(&[
        "train",
        "classifier",
        "--model",
        fixtures().join("classifier/bert-init").to_str().unwrap(),
        "--data",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("run").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("bad.tsv") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(!tmp.path().join("run").exists());
}

/// `train token-classifier`: a TOML file (its defaults kept where it says nothing: the
/// metric is entity F1) with flags overriding it, `--json` events and the final summary on
/// stdout, and a checkpoint the `ner` pipeline runs.
#[test]
fn token_classifier_from_config_with_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let data = fixtures().join("token_classifier");
    let toml = tmp.path().join("run.toml");
    std::fs::write(
        &toml,
        format!(
            "model = {:?}\ndata = {:?}\neval_data = {:?}\nepochs = 5\nbatch_size = 4\nlr = 1e-2\n",
            data.join("bert-init").display().to_string(),
            data.join("train.conll").display().to_string(),
            data.join("eval.jsonl").display().to_string(),
        ),
    )
    .unwrap();
    let o = run(&[
        "train",
        "token-classifier",
        "--config",
        toml.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout holds JSON lines only"))
        .collect();
    let eval = events.iter().find(|e| e["event"] == "eval").unwrap();
    assert!(eval["metrics"]["f1"].is_number(), "{eval}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    // 8 sentences in batches of 4, one epoch (the flag overrode the file's 5).
    assert_eq!(last["run"]["steps"], 2);
    assert_eq!(last["run"]["best"]["metric"], "f1");
    assert_eq!(
        last["run"]["labels"],
        serde_json::json!(["B-LOC", "B-PER", "I-LOC", "I-PER", "O"])
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "log.jsonl",
    ] {
        assert!(out.join(f).is_file(), "no {f}");
    }
    let o = run(&[
        "pipeline",
        "ner",
        "--model",
        out.to_str().unwrap(),
        "--ignore-labels",
        "",
        "--json",
        "Marie Curie lived in Paris",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tokens = v.as_array().unwrap();
    assert!(!tokens.is_empty(), "{v}");

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n").unwrap();
    let o = run(&[
        "train",
        "token-classifier",
        "--model",
        data.join("bert-init").to_str().unwrap(),
        "--data",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("bad-run").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("bad.jsonl") && stderr.contains("line 1") && stderr.contains("`tags`"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let o = run(&["train", "token-classifier", "--tag-column", "ner"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("tags_column"), "{stderr}");
}
