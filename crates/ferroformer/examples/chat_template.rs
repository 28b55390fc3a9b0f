//! Chat templates: a chat model is trained on conversations laid out in one exact text format
//! (roles, separators, special tokens), and the model ships that format as a Jinja template.
//! Rendering the conversation with `add_generation_prompt` gives the text to continue; the
//! answer ends at the template's end-of-turn token.
//!
//! Run: `cargo run -q --example chat_template -p ferroformer` (a ChatML template rendered),
//! or add a GGUF file to chat with it: `... -- path/to/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`python3 scripts/fetch_models.py smollm2` places one in the Hugging Face cache).

use anyhow::Result;
use ferroformer::generation::{generate_stream, GenerationConfig, TextStreamer};
use ferroformer::models::{ChatMessage, ChatTemplate, GgufModel};

/// Qwen2's ChatML template: a default system message when the conversation has none.
const CHATML: &str = "{% for message in messages %}\
{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn main() -> Result<()> {
    let conversation = vec![
        ChatMessage::user("What is the capital of France?"),
        ChatMessage::assistant("Paris."),
        ChatMessage::user("And of Germany?"),
    ];
    let template = ChatTemplate::new(CHATML)?;
    println!("--- rendered, ready for the assistant's answer:");
    print!("{}", template.render(&conversation, true)?);
    println!(
        "--- end-of-turn markers: {:?}",
        template.end_of_turn_markers()
    );

    // With a model: its own template, and the answer streamed token by token.
    let Some(path) = std::env::args().nth(1) else {
        return Ok(());
    };
    let model = GgufModel::load(&path)?;
    let template = ChatTemplate::from_gguf(model.tokenizer(), path.as_ref())?;
    let mut messages = vec![ChatMessage::system("You are a helpful assistant.")];
    messages.extend(conversation.into_iter().take(1));
    let text = template.render(&messages, true)?;
    // The template writes the special tokens itself: none are added.
    let prompt = model.tokenizer().encode(&text, false)?;
    let mut cfg = GenerationConfig::greedy(64);
    cfg.eos_token_id = model.tokenizer().stop_token_ids();
    let tokenizer = model.tokenizer().tokenizer();
    let mut streamer = TextStreamer::with_options(tokenizer, &[], true)?;
    println!("--- {}:", path);
    let out = generate_stream(model.decoder(), &prompt, &cfg, Some(tokenizer), |id| {
        print!("{}", streamer.push(id)?);
        Ok(true)
    })?;
    println!(
        "\n--- {} tokens, stopped by {:?}",
        out.tokens.len(),
        out.stop_reason
    );
    Ok(())
}
