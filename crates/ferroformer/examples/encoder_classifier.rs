//! Sequence classification with an encoder-only transformer: token embeddings plus sinusoidal
//! positions, a stack of post-norm encoder layers, then one vector per sequence (the first
//! token, or the mean over real tokens) fed to a linear head. `log_probs` returns
//! `log_softmax(logits)`, as the course's `ClassifierHead` does.
//!
//! Run: `cargo run -q --example encoder_classifier -p ferroformer`

use anyhow::Result;
use candle_core::D;
use candle_nn::VarMap;
use ferroformer::arch::heads::{first_token, mean_pool};
use ferroformer::arch::{ClassificationHead, EncoderConfig, EncoderNames, TransformerEncoder};
use ferroformer::nn::Pass;
use ferroformer::{DType, Device, Tensor, Weights};

fn print_rows(label: &str, t: &Tensor) -> Result<()> {
    for (i, row) in t.to_vec2::<f32>()?.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:+.4}")).collect();
        println!("  {label}[{i}] = [{}]", cells.join(", "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let (vocab, d_model, layers, heads, d_ff, max_len, num_labels) = (100, 32, 2, 4, 64, 64, 3);

    let cfg = EncoderConfig::new(vocab, d_model, layers, heads, d_ff, 0.1, max_len)?;
    let encoder = TransformerEncoder::load(&w.pp("encoder"), &cfg, &EncoderNames::torch(&cfg))?;
    let head = ClassificationHead::load(&w, d_model, num_labels, "classifier")?;

    // Two sequences; the second is right-padded with id 0.
    let ids = Tensor::new(&[[5u32, 17, 42, 8, 99, 3], [7, 21, 64, 0, 0, 0]], &device)?;
    let mask = Tensor::new(&[[1u8, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], &device)?;
    let hidden = encoder
        .forward(&ids, Some(&mask), None, Pass::INFERENCE)?
        .hidden;
    println!("input_ids {:?} -> hidden {:?}", ids.dims(), hidden.dims());

    // Pooling 1: the first token (a [CLS]-style summary).
    let cls = first_token(&hidden)?;
    println!("first-token pooling: {:?}", cls.dims());
    print_rows("logits", &head.logits(&cls)?)?;
    let log_probs = head.log_probs(&cls)?;
    print_rows("log_probs", &log_probs)?;
    let prob_sums = log_probs.exp()?.sum(D::Minus1)?.to_vec1::<f32>()?;
    println!("  exp(log_probs) sums per row: {prob_sums:?}");
    let preds = log_probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
    println!("  predicted labels: {preds:?}");

    // Pooling 2: the mean over real tokens only (padding is left out).
    let mean = mean_pool(&hidden, &mask)?;
    println!("mean pooling: {:?}", mean.dims());
    print_rows("log_probs", &head.log_probs(&mean)?)?;

    // Padding does not change a row's result: row 1 alone (unpadded) gives the same mean.
    let alone = encoder.forward(
        &ids.narrow(0, 1, 1)?.narrow(1, 0, 3)?,
        None,
        None,
        Pass::INFERENCE,
    )?;
    let alone_mean = alone.hidden.mean(1)?;
    let diff = (alone_mean - mean.narrow(0, 1, 1)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("row 1 padded vs alone, mean-pooled: max diff {diff:.2e}");
    Ok(())
}
