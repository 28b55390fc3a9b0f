//! Chat-template rendering: one of the real templates of `tests/fixtures/chat_templates.json`
//! or an arbitrary template, with arbitrary messages (any JSON) and keyword arguments.
//!
//! Input: a flags byte (bit 0: add_generation_prompt; the rest picks a real template), then
//! framed records (see `ferroformer_fuzz`): 0 = template source (replaces the real one),
//! 1 = messages as JSON, 2 = keyword arguments as a JSON object, 3 = a plain user message,
//! 4 = a special token value (bos/eos).
#![no_main]

use std::sync::OnceLock;

use ferroformer::models::{ChatMessage, ChatTemplate};
use libfuzzer_sys::fuzz_target;

/// The real templates of the test fixtures, compiled once.
fn real_templates() -> &'static [ChatTemplate] {
    static TEMPLATES: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/chat_templates.json"))
                .expect("chat_templates.json is JSON");
        let templates = fixtures["templates"]
            .as_object()
            .expect("chat_templates.json has `templates`");
        let mut out = Vec::new();
        for entry in templates.values() {
            if let Some(source) = entry["template"].as_str() {
                out.push(ChatTemplate::new(source).expect("the fixture templates compile"));
            }
        }
        assert!(!out.is_empty(), "no templates in chat_templates.json");
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let add_generation_prompt = flags & 1 == 1;
    let records = ferroformer_fuzz::records(rest, 5);
    let text = |id| ferroformer_fuzz::last(&records, id).map(String::from_utf8_lossy);

    let template = match text(0) {
        Some(source) => match ChatTemplate::new(source.into_owned()) {
            Ok(t) => t,
            Err(_) => return,
        },
        None => {
            let real = real_templates();
            real[usize::from(flags >> 1) % real.len()].clone()
        }
    };
    let template = match text(4) {
        Some(token) => template
            .with_special_token("bos_token", token.clone())
            .with_special_token("eos_token", token),
        None => template,
    };
    let _ = template.end_of_turn_markers();

    if let Some(content) = text(3) {
        let messages = [
            ChatMessage::system("You are a test."),
            ChatMessage::user(content.clone()),
            ChatMessage::assistant(content),
        ];
        let rendered = template.render(&messages, add_generation_prompt);
        ferroformer_fuzz::report("render", &rendered);
    }
    let messages = ferroformer_fuzz::last(&records, 1)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
    if let Some(messages) = messages {
        let kwargs = ferroformer_fuzz::last(&records, 2)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let rendered = template.render_json(&messages, add_generation_prompt, &kwargs);
        ferroformer_fuzz::report("render_json", &rendered);
    }
});
