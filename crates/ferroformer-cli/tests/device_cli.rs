//! `--device`: one flag on every command that runs a model. A backend this build lacks is an
//! error saying how to build it, a GGUF model off the CPU is an error saying why, and an
//! unknown device is rejected by the parser.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .output()
        .expect("run ferroformer")
}

/// Every command that loads a model, with the arguments it needs, and `--device DEVICE`
/// appended (before any trailing settings).
fn commands_with_device(device: &str, scratch: &std::path::Path) -> Vec<Vec<String>> {
    let text = scratch.join("text.txt");
    std::fs::write(&text, "To be, or not to be, that is the question.").unwrap();
    let png = scratch.join("attn.png");
    let gpt2 = fixture("trained-gpt2");
    let bert = fixture("encoders/bert-seqcls");
    let cmds: Vec<Vec<&str>> = vec![
        vec!["generate", "--model", &gpt2, "--max-new-tokens", "2", "Hi"],
        vec!["chat", "--model", &gpt2, "--prompt", "Hi"],
        vec!["pipeline", "text-classification", "--model", &bert, "good"],
        vec![
            "pipeline",
            "text-generation",
            "--model",
            &gpt2,
            "--max-new-tokens",
            "2",
            "Hi",
        ],
        vec![
            "perplexity",
            "--model",
            &gpt2,
            "--file",
            text.to_str().unwrap(),
        ],
        vec![
            "viz",
            "attention",
            "--model",
            &bert,
            "--ids",
            "1,2,3",
            "-o",
            png.to_str().unwrap(),
        ],
        vec!["train", "lm"],
    ];
    cmds.into_iter()
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(String::from).collect();
            // `train lm` takes its settings as trailing flags: the device goes right after.
            let at = if c[0] == "train" { 2 } else { c.len() };
            c.insert(at, "--device".into());
            c.insert(at + 1, device.into());
            c
        })
        .collect()
}

fn assert_fails_with(o: &Output, cmd: &[String], needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "`{}` succeeded", cmd.join(" "));
    for n in needles {
        assert!(
            stderr.contains(n),
            "`{}`: stderr lacks `{n}`:\n{stderr}",
            cmd.join(" ")
        );
    }
}

#[test]
#[cfg_attr(feature = "cuda", ignore = "this build has the CUDA backend")]
fn cuda_on_a_build_without_it_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["cuda", "cuda:1"] {
        for cmd in commands_with_device(device, dir.path()) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let o = run(&args);
            assert_fails_with(
                &o,
                &cmd,
                &[
                    "without CUDA support",
                    "cargo build --release --features cuda",
                ],
            );
            assert_eq!(o.status.code(), Some(1), "{}", cmd.join(" "));
        }
    }
}

#[test]
#[cfg_attr(feature = "metal", ignore = "this build has the Metal backend")]
fn metal_on_a_build_without_it_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in commands_with_device("metal", dir.path()) {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_fails_with(&o, &cmd, &["cargo build --release --features metal"]);
    }
}

#[test]
fn an_unknown_device_is_rejected_by_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    for device in ["bogus", "gpu", "cuda:x"] {
        for cmd in commands_with_device(device, dir.path()) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            let o = run(&args);
            assert_fails_with(&o, &cmd, &[device, "expected cpu, cuda, cuda:N"]);
            // A usage error (clap's exit code), before anything is loaded.
            assert_eq!(o.status.code(), Some(2), "{}", cmd.join(" "));
        }
    }
}

#[test]
fn a_gguf_model_off_the_cpu_is_an_error_saying_so() {
    // The check comes before the file is read (or the device opened): any `.gguf` path will do.
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("model.gguf");
    std::fs::write(&gguf, b"").unwrap();
    let gguf = gguf.to_str().unwrap();
    for device in ["cuda", "metal"] {
        for cmd in [
            vec!["generate", "--model", gguf, "--device", device, "Hi"],
            vec![
                "chat", "--model", gguf, "--device", device, "--prompt", "Hi",
            ],
            vec![
                "pipeline",
                "text-generation",
                "--model",
                gguf,
                "--device",
                device,
                "Hi",
            ],
            vec![
                "perplexity",
                "--model",
                gguf,
                "--file",
                gguf,
                "--device",
                device,
            ],
        ] {
            let o = run(&cmd);
            let cmd: Vec<String> = cmd.into_iter().map(String::from).collect();
            assert_fails_with(&o, &cmd, &["GGUF models run on the CPU only", "model.gguf"]);
        }
    }
}

#[test]
fn device_cpu_runs_as_the_default_does() {
    let bert = fixture("encoders/bert-seqcls");
    let with = run(&[
        "pipeline",
        "text-classification",
        "--model",
        &bert,
        "--json",
        "--device",
        "cpu",
        "good",
    ]);
    let without = run(&[
        "pipeline",
        "text-classification",
        "--model",
        &bert,
        "--json",
        "good",
    ]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(!with.stdout.is_empty());
    assert_eq!(with.stdout, without.stdout);
}
