//! Encoder-decoder generation time: beam search over a batch of inputs with a checkpoint
//! directory (scripts/bench/seq2seq.py makes random-weight t5-small and bart-base ones and
//! prints the ratio against PyTorch + `transformers`, 2 threads each).
//!
//! `cargo bench -p ferroformer --bench seq2seq_generate -- --model DIR --inputs IDS.json
//! [--beams 4] [--new-tokens 60] [--iters 1] [--json]`. `IDS.json` holds the token ids of
//! each input (a list of lists). Every hypothesis runs exactly `--new-tokens` steps
//! (`min_new_tokens` = `max_new_tokens`), so both sides do the same work.

use std::time::Instant;

use ferroformer::generation::{right_pad, AutoModelForSeq2SeqLM, GenerationConfig};
use ferroformer::models::LoadOptions;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(model_dir) = arg(&args, "--model") else {
        // `cargo test` runs benches as a smoke pass without arguments.
        eprintln!(
            "usage: seq2seq_generate --model DIR --inputs IDS.json [--beams N] [--new-tokens N]"
        );
        return Ok(());
    };
    let inputs = arg(&args, "--inputs").ok_or_else(|| anyhow::anyhow!("--inputs IDS.json"))?;
    let beams: usize = arg(&args, "--beams").map_or(Ok(4), |s| s.parse())?;
    let new_tokens: usize = arg(&args, "--new-tokens").map_or(Ok(60), |s| s.parse())?;
    let iters: usize = arg(&args, "--iters").map_or(Ok(1), |s| s.parse())?;
    let json = args.iter().any(|a| a == "--json");
    let rows: Vec<Vec<u32>> = serde_json::from_str(&std::fs::read_to_string(&inputs)?)?;
    let model = AutoModelForSeq2SeqLM::from_dir(model_dir.as_ref(), &LoadOptions::default())?;
    let mut cfg: GenerationConfig = model.generation_config().clone();
    cfg.num_beams = beams;
    cfg.max_new_tokens = Some(new_tokens);
    cfg.min_new_tokens = Some(new_tokens);
    cfg.early_stopping = ferroformer::generation::EarlyStopping::Done;
    cfg.forced_eos_token_id.clear();
    let pad = cfg.pad_token_id.unwrap_or(0);
    let (ids, mask) = right_pad(&rows, pad);
    let mut times = Vec::new();
    let mut generated = 0;
    for _ in 0..iters {
        let t = Instant::now();
        let out = model.generate(&ids, Some(&mask), &cfg)?;
        times.push(t.elapsed().as_secs_f64());
        generated = out.sequences.iter().map(|s| s.len() - 1).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if json {
        println!(
            "{}",
            serde_json::json!({"seconds": median, "inputs": rows.len(), "generated_tokens": generated})
        );
    } else {
        println!(
            "{} inputs, {beams} beams, {new_tokens} new tokens: {median:.2} s ({:.2} inputs/s)",
            rows.len(),
            rows.len() as f64 / median
        );
    }
    Ok(())
}
