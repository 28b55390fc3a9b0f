//! Continuous-batching decode speed: [`BatchDecoder`] steps with 1 row and with N rows
//! (prompts of different lengths, so rows are padded as in the server), greedy tokens chosen
//! by [`SequenceSampler`] as the scheduler does. Prints ms per step (the forward pass and the
//! token choice apart) and the tokens/s of N rows over one row's, measured in the same run.
//!
//! `cargo bench -p ferroformer --bench batch_decode -- --model FILE.gguf [--rows 1,4,16]
//! [--steps 32] [--prompt-tokens 40]`
//! Thread count follows `RAYON_NUM_THREADS`.

use std::time::Instant;

use ferroformer::generation::{BatchDecoder, ExtraSampling, SequenceSampler};
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
    let rows: Vec<usize> = arg::<String>(&args, "--rows")
        .unwrap_or_else(|| if smoke { "1,2" } else { "1,16" }.into())
        .split(',')
        .filter_map(|r| r.parse().ok())
        .collect();
    let steps: usize = arg(&args, "--steps").unwrap_or(if smoke { 2 } else { 32 });
    let prompt_len: usize = arg(&args, "--prompt-tokens").unwrap_or(if smoke { 8 } else { 40 });
    let model = GgufModel::load(&path)?;
    let m = model.decoder();
    let vocab = m.config().embeddings.vocab_size as u32;
    let mut base = None;
    for &n in &rows {
        let mut batch = BatchDecoder::new(m);
        let mut running = Vec::new();
        let mut joining = Vec::new();
        for r in 0..n {
            // Lengths differ by row, as the server's requests do.
            let len = prompt_len / 2 + (r * 7) % prompt_len.max(1);
            let prompt: Vec<u32> = (0..len as u32)
                .map(|i| (1000 + (i * 37 + r as u32 * 101) % 20000) % vocab)
                .collect();
            let (cache, mut scores) = batch.prefill(&prompt)?;
            let mut s = SequenceSampler::new(
                GenerationConfig::greedy(steps + 1),
                ExtraSampling::default(),
                prompt.len(),
            );
            let t = s.choose(&prompt, &mut scores).token;
            let mut ids = prompt;
            ids.push(t);
            joining.push((r as u64, cache));
            running.push((r as u64, ids, s));
        }
        batch.update(&[], joining)?;
        let (mut fwd, mut choose) = (0f64, 0f64);
        let t_all = Instant::now();
        for _ in 0..steps {
            let tokens: Vec<(u64, u32)> = running
                .iter()
                .map(|(id, ids, _)| (*id, *ids.last().unwrap()))
                .collect();
            let t = Instant::now();
            let scores = batch.step(&tokens)?;
            fwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            for ((_, ids, s), mut sc) in running.iter_mut().zip(scores) {
                let tok = s.choose(ids, &mut sc).token;
                ids.push(tok);
            }
            choose += t.elapsed().as_secs_f64();
        }
        let total = t_all.elapsed().as_secs_f64();
        let tps = (n * steps) as f64 / total;
        let ratio = match base {
            None => {
                base = Some(tps);
                1.0
            }
            Some(b) => tps / b,
        };
        println!(
            "{n:>3} rows: {:.2} ms/step (step {:.2} + choose {:.2}), {:.1} tokens/s, {ratio:.2}x the first row count",
            total * 1e3 / steps as f64,
            fwd * 1e3 / steps as f64,
            choose * 1e3 / steps as f64,
            tps
        );
    }
    Ok(())
}
