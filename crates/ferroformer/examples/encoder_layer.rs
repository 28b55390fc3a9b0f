//! One encoder layer: self-attention and a feed-forward sublayer, each inside a residual
//! connection with a LayerNorm. Post-norm (`norm(x + f(x))`, the original paper and BERT)
//! normalizes after the residual addition; pre-norm (`x + f(norm(x))`, GPT-2 and Llama)
//! normalizes the sublayer input and leaves the residual stream unnormalized.
//!
//! Run: `cargo run -q --example encoder_layer -p ferroformer`

use anyhow::Result;
use candle_core::D;
use candle_nn::VarMap;
use ferroformer::nn::mask::attention_bias;
use ferroformer::nn::{Activation, LayerConfig, LayerContext, LayerNames, Mode, TransformerLayer};
use ferroformer::{DType, Device, Tensor, Weights};

/// Mean and standard deviation over the features of position 0 of batch row 0.
fn stats(t: &Tensor) -> Result<(f32, f32)> {
    let row = t.get(0)?.get(0)?;
    let mean = row.mean_all()?.to_scalar::<f32>()?;
    let std = row
        .broadcast_sub(&row.mean_keepdim(D::Minus1)?)?
        .sqr()?
        .mean_all()?
        .sqrt()?
        .to_scalar::<f32>()?;
    Ok((mean, std))
}

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let (batch, seq, d_model, heads, d_ff) = (2, 6, 32, 4, 64);

    // Input with a large offset and scale, to show what each norm placement does with it.
    let x = (Tensor::randn(0f32, 3.0, (batch, seq, d_model), &device)? + 5.0)?;
    let mask = Tensor::new(&[[1u8, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &device)?;
    let bias = attention_bias(Some(&mask), false, batch, seq, seq, DType::F32, &device)?;
    let (m, s) = stats(&x)?;
    println!("input {:?}: position 0 mean {m:.3}, std {s:.3}", x.dims());

    for norm_first in [false, true] {
        let cfg = LayerConfig::standard(
            d_model,
            heads,
            d_ff,
            0.1,
            Activation::Relu,
            norm_first,
            1e-5,
            false,
        )?;
        let names = LayerNames::torch(&cfg);
        let prefix = if norm_first { "pre" } else { "post" };
        let layer = TransformerLayer::load(&w.pp(prefix), &cfg, &names)?;
        let out = layer.forward(
            &x,
            LayerContext {
                self_bias: bias.as_ref(),
                mode: Mode::INFERENCE.with_weights(),
                ..Default::default()
            },
        )?;
        let (m, s) = stats(&out.hidden)?;
        let kind = if norm_first { "pre-norm " } else { "post-norm" };
        println!(
            "{kind}: output {:?}, position 0 mean {m:.3}, std {s:.3}",
            out.hidden.dims()
        );
        if let Some(weights) = &out.self_attention_weights {
            println!("           self-attention weights {:?}", weights.dims());
        }
    }
    println!("(post-norm output is normalized: mean 0, std 1; pre-norm keeps the input's scale)");
    // LayerNames::torch stores the layer as nn.TransformerEncoderLayer does.
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut names: Vec<String> = data
        .keys()
        .filter(|k| k.starts_with("post."))
        .cloned()
        .collect();
    names.sort();
    println!("post-norm layer parameters: {}", names.join(", "));
    Ok(())
}
