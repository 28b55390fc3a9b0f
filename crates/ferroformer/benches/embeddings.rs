//! Sentence-embedding throughput of the real all-MiniLM-L6-v2 through the
//! `feature-extraction` pipeline (mean pooling + L2 normalize, batch 32): texts in, vectors
//! out, tokenization included. Prints one JSON line: sentences/s (median of 3 runs after a
//! warm-up), model load time, peak resident memory.
//!
//! `cargo bench -p ferroformer --bench embeddings -- SENTENCES_FILE`
//! (scripts/bench/embeddings.py writes the file, runs PyTorch on the same sentences in the
//! same run and prints the ratio.) Threads follow `RAYON_NUM_THREADS`.

use std::time::Instant;

use ferroformer::pipelines::{
    FeatureExtractionOptions, FeatureExtractionPipeline, PipelineConfig, Pooling,
};

/// The allocator the `ferroformer` CLI uses (fresh pages for every layer's buffers otherwise).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Peak resident set size of this process in MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The runtime settings of the `ferroformer` binary (crates/ferroformer-cli/src/main.rs):
    // candle's element-wise pool off, freed memory kept by mimalloc (option 15, purge_delay).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // SAFETY: setting a mimalloc option is always allowed; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    // Without a file (as `cargo test --all-targets` runs it), a quick pass over 64 built-in
    // sentences checks that the benchmark works.
    let text = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(path) => std::fs::read_to_string(&path)?,
        None => (0..64)
            .map(|i| {
                format!(
                    "Sentence number {i} is about the weather in city {}.\n",
                    i * 7
                )
            })
            .collect(),
    };
    let sentences: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let t0 = Instant::now();
    let config = PipelineConfig {
        batch_size: 32,
        ..PipelineConfig::default()
    };
    let dir = ferroformer::models::hub::resolve("sentence-transformers/all-MiniLM-L6-v2")?;
    let pipe = FeatureExtractionPipeline::from_dir(&dir, &config)?;
    let load_s = t0.elapsed().as_secs_f64();
    let opts = FeatureExtractionOptions {
        pooling: Some(Pooling::Mean),
        normalize: Some(true),
    };
    pipe.run(&sentences, &opts)?; // warm-up
    let mut times = Vec::new();
    let mut first_sum = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        let out = pipe.run(&sentences, &opts)?;
        times.push(t.elapsed().as_secs_f64());
        if let Some(ferroformer::pipelines::feature_extraction::Features::Sentence(v)) = out.first()
        {
            first_sum = v.iter().map(|&x| x as f64).sum::<f64>();
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "sentences_per_s": sentences.len() as f64 / times[1],
            "load_s": load_s,
            "peak_rss_mb": peak_rss_mb(),
            "first_vector_sum": first_sum,
        })
    );
    Ok(())
}
