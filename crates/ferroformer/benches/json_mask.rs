//! Cost of the JSON-object constraint per decoding step on a real vocabulary, next to the
//! model's own step.
//!
//! `cargo bench -p ferroformer --bench json_mask -- --model FILE.gguf [--steps 64]`
//! Prints the token table's build time, the mask time in each kind of automaton state
//! (structure, inside a string, inside a number), and a constrained greedy generation's
//! time per token against an unconstrained one's.

use std::sync::Arc;
use std::time::Instant;

use ferroformer::generation::{
    generate_with_sampler, ExtraSampling, JsonConstraint, SequenceSampler, TokenBytes,
};
use ferroformer::models::GgufModel;
use ferroformer::GenerationConfig;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
}

/// Without `--model` (as under `cargo test`, a smoke pass): a tiny Llama 3 GGUF fixture
/// and small sizes.
fn smoke_model() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gguf/llama3/llama3-q8_0.gguf"
    )
    .to_string()
}

fn main() -> ferroformer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let smoke = arg::<String>(&args, "--model").is_none();
    let path = arg::<String>(&args, "--model").unwrap_or_else(smoke_model);
    let steps: usize = arg(&args, "--steps").unwrap_or(if smoke { 4 } else { 64 });
    let model = GgufModel::load(&path)?;
    let vocab = model.decoder().config().embeddings.vocab_size;
    let tok = model.tokenizer();
    let t0 = Instant::now();
    let table = Arc::new(TokenBytes::from_tokenizer(tok.tokenizer(), vocab));
    println!(
        "token table: {vocab} tokens in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let eos = tok.stop_token_ids();
    // Mask cost in a few states, each reached by feeding its prefix byte by byte.
    for (what, prefix) in [
        ("start", ""),
        ("after {", "{"),
        ("in a key", "{\"na"),
        ("in a string value", "{\"name\": \"Ada Love"),
        ("in a number", "{\"n\": [1, -0.5"),
        ("after a value", "{\"n\": [1, 2]"),
    ] {
        let mut c = JsonConstraint::new(Arc::clone(&table), &eos)?;
        let mut st = c.state().clone();
        assert!(st.feed(prefix.as_bytes()));
        // Drive the constraint to the state with one-byte tokens.
        for b in prefix.bytes() {
            let id = (0..vocab as u32)
                .find(|&i| table.get(i) == Some(&[b][..]))
                .expect("a one-byte token");
            assert!(c.advance(id));
        }
        let mut scores = vec![0f32; vocab];
        let reps = 50;
        let t = Instant::now();
        let mut allowed = 0;
        for _ in 0..reps {
            scores.iter_mut().for_each(|s| *s = 0.0);
            c.mask(&mut scores, Some(100));
            allowed = scores.iter().filter(|s| s.is_finite()).count();
        }
        println!(
            "mask {what:>18}: {:.3} ms/step ({allowed} of {vocab} tokens allowed)",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    let prompt = tok.encode(
        "<|im_start|>user\nDescribe a cat as a JSON object.<|im_end|>\n<|im_start|>assistant\n",
        false,
    )?;
    let mut cfg = GenerationConfig::greedy(steps);
    cfg.eos_token_id = eos.clone();
    let run = |json: bool| -> ferroformer::Result<(f64, usize, Vec<u32>)> {
        let mut s = SequenceSampler::new(cfg.clone(), ExtraSampling::default(), prompt.len());
        if json {
            s = s.with_json(JsonConstraint::new(Arc::clone(&table), &eos)?);
        }
        let t = Instant::now();
        let out = generate_with_sampler(model.decoder(), &prompt, &mut s, steps, &eos)?;
        Ok((t.elapsed().as_secs_f64(), out.tokens.len(), out.tokens))
    };
    let (free_s, free_n, _) = run(false)?;
    let (json_s, json_n, tokens) = run(true)?;
    let text = tok.decode(&tokens, true)?;
    println!(
        "greedy decode: {:.2} ms/token unconstrained ({free_n} tokens), {:.2} ms/token \
         constrained ({json_n} tokens): {:+.1}% per token",
        free_s * 1e3 / free_n as f64,
        json_s * 1e3 / json_n as f64,
        100.0 * (json_s / json_n as f64) / (free_s / free_n as f64) - 100.0
    );
    println!(
        "constrained output parses as an object: {}  {text:?}",
        matches!(
            serde_json::from_str::<serde_json::Value>(&text),
            Ok(serde_json::Value::Object(_))
        )
    );
    Ok(())
}
