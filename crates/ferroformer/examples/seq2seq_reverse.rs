//! The course's encoder-decoder, end to end: build a small transformer from its parts
//! (embeddings with learned positions, post-norm encoder layers, decoder layers with causal
//! self-attention and cross-attention, a tied language-model head), train it to reverse
//! sequences of digits with teacher forcing, decode greedily until it solves the task, and
//! save it in the layout `transformers` loads as `BartForConditionalGeneration`
//! (`config.json`, `generation_config.json`, `model.safetensors`).
//!
//! Run: `cargo run --release --example seq2seq_reverse -p ferroformer -- [OUT_DIR]`
//! (default `runs/seq2seq-reverse`). Then, in Python:
//! `AutoModelForSeq2SeqLM.from_pretrained(OUT_DIR).generate(torch.tensor([[0, 5, 6, 7, 2]]))`
//! gives `[[2, 0, 7, 6, 5, 2]]`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use candle_nn::VarMap;
use ferroformer::arch::{
    EmbeddingConfig, EncoderDecoderConfig, EncoderDecoderTransformer, PositionalKind, StackConfig,
};
use ferroformer::generation::{generate_seq2seq, GenerationConfig};
use ferroformer::models::BartConfig;
use ferroformer::nn::loss::cross_entropy;
use ferroformer::nn::{Activation, LayerConfig, NormConfig, Pass};
use ferroformer::train::checkpoint::{atomic_write, atomic_write_with, varmap_vars};
use ferroformer::train::optim::{AdamW, AdamWConfig};
use ferroformer::{DType, Device, Tensor, Weights};
use rand::{Rng, SeedableRng};

/// BART's special ids: `<s>` 0, `<pad>` 1, `</s>` 2 (also the decoder start); digits 3..13.
const BOS: u32 = 0;
const EOS: u32 = 2;
const DIGITS: std::ops::Range<u32> = 3..13;
const VOCAB: usize = 13;

/// Token ids, one row per sequence.
type Rows = Vec<Vec<u32>>;

/// A batch of `n` random digit sequences of length `len`: encoder ids `<s> x </s>`, decoder
/// inputs `</s> <s> reversed(x)` and labels `<s> reversed(x) </s>` (teacher forcing: the
/// decoder reads the answer shifted right by the start token).
fn batch(rng: &mut impl Rng, n: usize, len: usize) -> (Rows, Rows, Rows) {
    let (mut src, mut dec, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let x: Vec<u32> = (0..len).map(|_| rng.random_range(DIGITS)).collect();
        let mut target = vec![BOS];
        target.extend(x.iter().rev());
        target.push(EOS);
        src.push([vec![BOS], x, vec![EOS]].concat());
        dec.push([vec![EOS], target[..target.len() - 1].to_vec()].concat());
        labels.push(target);
    }
    (src, dec, labels)
}

fn main() -> Result<()> {
    let out: PathBuf = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runs/seq2seq-reverse".into())
        .into();
    let device = Device::Cpu;
    let (d_model, heads, d_ff, layers, max_positions) = (64, 4, 128, 2, 32);

    // The parts: one embedding config per side, an encoder layer and a decoder layer (with
    // cross-attention), stacked twice each; post-norm and GELU as BART.
    let embeddings = EmbeddingConfig {
        vocab_size: VOCAB,
        d_model,
        max_positions,
        positional: PositionalKind::Learned { offset: 2 },
        type_vocab_size: None,
        norm: Some(NormConfig::layer_norm(1e-5)),
        scale: None,
        dropout: 0.0,
    };
    let layer = |cross| {
        LayerConfig::standard(
            d_model,
            heads,
            d_ff,
            0.0,
            Activation::Gelu,
            false,
            1e-5,
            cross,
        )
    };
    let stack = |cross| -> Result<StackConfig> {
        Ok(StackConfig {
            layer: layer(cross)?,
            num_layers: layers,
            final_norm: false,
            sliding_window: None,
        })
    };
    let cfg = EncoderDecoderConfig {
        encoder_embeddings: embeddings.clone(),
        encoder: stack(false)?,
        decoder_embeddings: embeddings,
        decoder: stack(true)?,
        relative_attention: None,
        tie_word_embeddings: true,
        lm_head_scale: None,
        final_logits_bias: true,
        arithmetic: Default::default(),
    };
    // The same model as a `transformers` config: BART's mapping gives these very parts, and
    // its tensor names are what `BartForConditionalGeneration` loads.
    let config_json = serde_json::json!({
        "architectures": ["BartForConditionalGeneration"],
        "model_type": "bart",
        "is_encoder_decoder": true,
        "vocab_size": VOCAB,
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": d_ff,
        "decoder_ffn_dim": d_ff,
        "max_position_embeddings": max_positions,
        "activation_function": "gelu",
        "scale_embedding": false,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "bos_token_id": BOS,
        "pad_token_id": 1,
        "eos_token_id": EOS,
        "decoder_start_token_id": EOS,
        "forced_eos_token_id": EOS,
        "tie_word_embeddings": true,
    });
    let bart: BartConfig = serde_json::from_value(config_json.clone())?;
    assert_eq!(bart.encoder_decoder_config()?, cfg, "the parts are BART's");

    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let body = w.pp("model");
    let names = bart.names(&cfg, &body)?;
    let model = EncoderDecoderTransformer::load_split(&body, &w, &cfg, &names)?;
    let vars = varmap_vars(&varmap)?;
    println!("{} parameter tensors", vars.len());

    let mut opt = AdamW::new(
        &vars,
        AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let greedy = GenerationConfig {
        decoder_start_token_id: Some(EOS),
        eos_token_id: vec![EOS],
        pad_token_id: Some(1),
        max_new_tokens: Some(12),
        ..Default::default()
    };
    let (eval_src, _, eval_labels) = batch(&mut rng, 64, 6);
    for step in 1..=3000 {
        let len = rng.random_range(3..=8);
        let (src, dec, labels) = batch(&mut rng, 32, len);
        let src = Tensor::new(src, &device)?;
        let dec = Tensor::new(dec, &device)?;
        let labels = Tensor::new(labels, &device)?.flatten_all()?;
        let logits = model.forward(&src, None, &dec, Pass::TRAIN)?;
        let loss = cross_entropy(&logits.reshape(((), VOCAB))?, &labels)?;
        let store = loss.backward()?;
        let grads: HashMap<String, Tensor> = vars
            .iter()
            .filter_map(|(name, var)| Some((name.clone(), store.get(var.as_tensor())?.clone())))
            .collect();
        // Warmup over 100 steps, then a linear decay to a tenth.
        let lr = 3e-3 * (step as f64 / 100.0).min(1.0) * (1.0 - step as f64 / 3000.0).max(0.1);
        opt.step(&grads, lr)?;
        if step % 100 == 0 {
            // Greedy decoding of held-out sequences: solved when every one is reversed.
            let out = generate_seq2seq(&model, &eval_src, None, &greedy)?;
            let solved = out
                .sequences
                .iter()
                .zip(&eval_labels)
                .filter(|(got, want)| got.get(1..=want.len()) == Some(&want[..]))
                .count();
            println!(
                "step {step}: loss {:.4}, greedy reverses {solved}/{} held-out sequences",
                loss.to_scalar::<f32>()?,
                eval_src.len()
            );
            if solved == eval_src.len() {
                break;
            }
        }
    }
    let example = [BOS, 5, 6, 7, 8, 9, EOS];
    let reversed = generate_seq2seq(&model, &[example.to_vec()], None, &greedy)?;
    println!("{:?} -> {:?}", &example, reversed.new_tokens(0));

    // `transformers`' layout: the tied tables are stored once (`model.shared.weight`).
    std::fs::create_dir_all(&out)?;
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    atomic_write_with(&out.join("model.safetensors"), |tmp| {
        Ok(candle_core::safetensors::save(&tensors, tmp)?)
    })?;
    atomic_write(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config_json)?.as_bytes(),
    )?;
    let generation = serde_json::json!({
        "bos_token_id": BOS, "pad_token_id": 1, "eos_token_id": EOS,
        "decoder_start_token_id": EOS, "forced_eos_token_id": EOS,
    });
    atomic_write(
        &out.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)?.as_bytes(),
    )?;
    println!("saved to {}", out.display());
    Ok(())
}
