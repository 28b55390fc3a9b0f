//! Loading pretrained Hugging Face checkpoints: a directory with `config.json` and
//! `model.safetensors` is read into the same blocks the other examples build from random
//! weights. This runs the tiny BERT and GPT-2 test fixtures (random-but-fixed weights made by
//! `transformers`): BERT gives per-token hidden states and a pooled `[CLS]` vector, GPT-2 gives
//! next-token logits.
//!
//! Run: `cargo run -q --example pretrained_tiny -p ferroformer`

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{IndexOp, D};
use ferroformer::models::{BertModel, Gpt2LmHeadModel};
use ferroformer::{DType, Device, Tensor};

fn main() -> Result<()> {
    let device = Device::Cpu;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");

    // BERT: a batch of two sequences, the second right-padded, with segment ids.
    let bert = BertModel::from_dir(&fixtures.join("tiny-bert"), DType::F32, &device)?;
    let c = bert.config();
    println!(
        "tiny-bert: vocab {}, hidden {}, {} layers, {} heads",
        c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    );
    let ids = Tensor::new(&[[2u32, 45, 12, 77, 30, 3], [2, 18, 64, 3, 0, 0]], &device)?;
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &device)?;
    let types = Tensor::new(&[[0u32, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], &device)?;
    let out = bert.forward(&ids, Some(&mask), Some(&types))?;
    println!("last_hidden_state: {:?}", out.last_hidden_state.dims());
    let pooled = out.pooler_output.context("tiny-bert has a pooler")?;
    println!("pooler_output:     {:?}", pooled.dims());
    let first: Vec<f32> = pooled.i((0, ..4))?.to_vec1()?;
    println!("pooler_output[0, ..4] = {first:?}");

    // GPT-2: logits for every position; the last one predicts the next token.
    let gpt2 = Gpt2LmHeadModel::from_dir(&fixtures.join("tiny-gpt2"), DType::F32, &device)?;
    let g = gpt2.config();
    println!(
        "\ntiny-gpt2: vocab {}, n_embd {}, {} layers, {} heads, {} positions",
        g.vocab_size, g.n_embd, g.n_layer, g.n_head, g.n_positions
    );
    let prompt = Tensor::new(&[[11u32, 42, 7, 93, 20]], &device)?;
    let logits = gpt2.forward(&prompt, None, None)?.logits;
    println!(
        "input_ids {:?} -> logits {:?}",
        prompt.dims(),
        logits.dims()
    );
    let last = logits.i((0, prompt.dim(1)? - 1))?;
    let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
    let probs = candle_nn::ops::softmax_last_dim(&last.unsqueeze(0)?)?.squeeze(0)?;
    let p = probs.i(next as usize)?.to_scalar::<f32>()?;
    println!("argmax next token: {next} (probability {p:.4})");

    // Going past n_positions is an error that says so.
    let too_long = Tensor::zeros((1, g.n_positions + 1), DType::U32, &device)?;
    if let Err(e) = gpt2.forward(&too_long, None, None) {
        println!("{} tokens: {e}", g.n_positions + 1);
    }
    Ok(())
}
