//! A decoder-only (GPT-style) language model: causal self-attention lets each position see
//! only itself and earlier positions, and a linear head gives next-token logits. Generation
//! runs the prompt once, then feeds one token at a time while each layer's KV cache keeps the
//! keys and values of earlier positions; the cached logits equal those of a full forward pass.
//!
//! Run: `cargo run -q --example decoder_only -p ferroformer`

use anyhow::Result;
use candle_core::{IndexOp, D};
use candle_nn::VarMap;
use ferroformer::arch::{DecoderConfig, DecoderNames, DecoderOnlyTransformer};
use ferroformer::nn::Pass;
use ferroformer::{DType, Device, Tensor, Weights};

/// Greedy choice from the logits of the last position of `logits` `(1, seq, vocab)`.
fn argmax_last(logits: &Tensor) -> Result<u32> {
    let seq = logits.dim(1)?;
    Ok(logits
        .i((0, seq - 1))?
        .argmax(D::Minus1)?
        .to_scalar::<u32>()?)
}

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let (vocab, d_model, layers, heads, d_ff, max_len) = (50, 32, 2, 4, 64, 64);
    let cfg = DecoderConfig::course(vocab, d_model, layers, heads, d_ff, 0.1, max_len)?;
    let model = DecoderOnlyTransformer::load(&w, &cfg, &DecoderNames::torch(&cfg))?;

    // Full forward with causal masking, asking for attention weights.
    let prompt: Vec<u32> = vec![3, 14, 15, 9, 2];
    let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
    let out = model.forward(&input, None, None, Pass::INFERENCE.with_weights())?;
    println!("input {:?} -> logits {:?}", input.dims(), out.logits.dims());
    let w0: Vec<Vec<f32>> = out.attention_weights[0].i((0, 0))?.to_vec2()?;
    println!("layer 0, head 0 attention weights (upper triangle is 0: causal):");
    for row in &w0 {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
        println!("  [{}]", cells.join(" "));
    }

    // Greedy generation of 10 tokens with the KV cache.
    let mut caches = model.new_caches();
    let mut step_logits = Vec::new();
    let logits = model
        .forward(&input, None, Some(&mut caches), Pass::INFERENCE)?
        .logits;
    let mut next = argmax_last(&logits)?;
    step_logits.push(logits);
    let mut tokens = prompt.clone();
    for _ in 0..10 {
        tokens.push(next);
        let one = Tensor::new(&[[next]], &device)?;
        let logits = model
            .forward(&one, None, Some(&mut caches), Pass::INFERENCE)?
            .logits;
        next = argmax_last(&logits)?;
        step_logits.push(logits);
    }
    println!("prompt:    {prompt:?}");
    println!("generated: {:?}", &tokens[prompt.len()..]);
    println!(
        "cache length after generation: {}",
        caches[0].self_attention.len()
    );

    // The cached logits of every position equal one full forward over all tokens.
    let cached = Tensor::cat(&step_logits, 1)?;
    let all = Tensor::new(tokens.as_slice(), &device)?.unsqueeze(0)?;
    let full = model.forward(&all, None, None, Pass::INFERENCE)?.logits;
    let diff = (&cached - &full)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "cached {:?} vs full {:?}: max |difference| = {diff:.2e}",
        cached.dims(),
        full.dims()
    );
    Ok(())
}
