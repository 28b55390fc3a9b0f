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
