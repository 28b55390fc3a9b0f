//! Forward-pass time of a 6-layer, d=384, 12-head encoder stack (FFN 1536, ReLU, post-norm,
//! like `nn.TransformerEncoder`) on a batch of 32 × 64 positions.
//!
//! `cargo bench -p ferroformer --bench encoder [-- --json] [--iters N] [--masked]`
//! Thread count follows `RAYON_NUM_THREADS` (scripts/bench/encoder.py sets 2 for both sides
//! and prints the ratio against PyTorch).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use ferroformer::arch::{LayerStack, StackConfig, StackContext, StackNames};
use ferroformer::nn::mask::attention_bias;
use ferroformer::nn::{Activation, LayerConfig, LayerNames};
use ferroformer::Weights;

fn main() -> ferroformer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let masked = args.iter().any(|a| a == "--masked");
    let iters: usize = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (batch, seq, d, heads, d_ff, layers) = (32, 64, 384, 12, 1536, 6);
    let dev = Device::Cpu;
    let cfg = StackConfig {
        layer: LayerConfig::standard(d, heads, d_ff, 0.0, Activation::Relu, false, 1e-5, false)?,
        num_layers: layers,
        final_norm: false,
        sliding_window: None,
    };
    let names = StackNames {
        layer_prefix: "layers".into(),
        layer: LayerNames::torch(&cfg.layer),
        final_norm: None,
    };
    // Random parameters, then detached into a plain (inference) store.
    let varmap = VarMap::new();
    LayerStack::load(
        &Weights::from_varmap(&varmap, DType::F32, &dev),
        &cfg,
        &names,
    )?;
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| ferroformer::Error::Invalid("poisoned var map".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let stack = LayerStack::load(
        &Weights::from_tensors(tensors, DType::F32, &dev),
        &cfg,
        &names,
    )?;

    let x = Tensor::randn(0f32, 1f32, (batch, seq, d), &dev)?;
    let mask = if masked {
        // Half the rows padded to varying lengths.
        let m: Vec<u8> = (0..batch)
            .flat_map(|b| (0..seq).map(move |t| u8::from(b % 2 == 0 || t < seq - b)))
            .collect();
        Some(Tensor::from_vec(m, (batch, seq), &dev)?)
    } else {
        None
    };
    let run = || -> ferroformer::Result<Tensor> {
        let bias = attention_bias(mask.as_ref(), false, batch, seq, seq, DType::F32, &dev)?;
        Ok(stack
            .forward(
                &x,
                StackContext {
                    self_bias: bias.as_ref(),
                    ..Default::default()
                },
            )?
            .hidden)
    };
    for _ in 0..3 {
        run()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let min = times[0];
    if json {
        println!(
            "{{\"impl\":\"ferroformer\",\"median_ms\":{median:.3},\"min_ms\":{min:.3},\"iters\":{iters},\"masked\":{masked}}}"
        );
    } else {
        println!("ferroformer encoder forward: median {median:.2} ms, min {min:.2} ms over {iters} runs (masked={masked})");
    }
    Ok(())
}
