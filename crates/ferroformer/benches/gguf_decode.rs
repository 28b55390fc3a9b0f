//! Prompt and decode speed of a GGUF model (batch 1, f32 activations, KV cache).
//!
//! `cargo bench -p ferroformer --bench gguf_decode -- --model FILE.gguf [--prompt-tokens 128]
//! [--new-tokens 128] [--json]`
//! Thread count follows `RAYON_NUM_THREADS` (scripts/bench/gguf_decode.py sets 2 for both
//! ferroformer and llama.cpp and prints the ratios).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ferroformer::models::GgufModel;

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
    let model_path = arg::<String>(&args, "--model").unwrap_or_else(smoke_model);
    let json = args.iter().any(|a| a == "--json");
    let prompt_len: usize = arg(&args, "--prompt-tokens").unwrap_or(if smoke { 8 } else { 128 });
    let new_tokens: usize = arg(&args, "--new-tokens").unwrap_or(if smoke { 4 } else { 128 });
    let model = GgufModel::load(&model_path)?;
    let vocab = model.decoder().config().embeddings.vocab_size as u32;
    // A fixed prompt of ordinary tokens (the same ids the Python side uses; folded into a
    // smaller vocabulary, the smoke pass's).
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (1000 + (i * 37) % 20000) % vocab)
        .collect();
    let dev = Device::Cpu;

    let mut caches = model.new_caches();
    let x = Tensor::new(prompt.as_slice(), &dev)?.unsqueeze(0)?;
    let t0 = Instant::now();
    let decoder = model.decoder();
    let logits = decoder.next_token_logits(&x, None, Some(&mut caches))?;
    let mut next = logits
        .get(0)?
        .argmax(0)?
        .to_dtype(DType::U32)?
        .to_scalar::<u32>()?;
    let prompt_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    for _ in 0..new_tokens {
        let x = Tensor::new(&[next], &dev)?.unsqueeze(0)?;
        let logits = decoder.next_token_logits(&x, None, Some(&mut caches))?;
        next = logits
            .get(0)?
            .argmax(0)?
            .to_dtype(DType::U32)?
            .to_scalar::<u32>()?;
    }
    let decode_s = t1.elapsed().as_secs_f64();
    let (p, d) = (prompt_len as f64 / prompt_s, new_tokens as f64 / decode_s);
    if json {
        println!("{{\"prompt_tok_s\": {p:.2}, \"decode_tok_s\": {d:.2}}}");
    } else {
        println!("prompt: {prompt_len} tokens at {p:.1} tok/s; decode: {new_tokens} tokens at {d:.1} tok/s");
    }
    Ok(())
}
