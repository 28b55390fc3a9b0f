//! The encoder-decoder transformer of "Attention Is All You Need", configured like PyTorch's
//! `nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2)` with
//! `batch_first=True`. It takes already-embedded source and target sequences: the encoder
//! reads the source (with a padding mask), and the decoder attends causally to the target and
//! through cross-attention to the encoder output.
//!
//! Run: `cargo run -q --example encoder_decoder -p ferroformer`

use anyhow::Result;
use candle_nn::VarMap;
use ferroformer::arch::{Transformer, TransformerConfig};
use ferroformer::nn::mask::from_key_padding_mask;
use ferroformer::nn::Pass;
use ferroformer::{DType, Device, Tensor, Weights};

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let cfg = TransformerConfig {
        d_model: 32,
        nhead: 4,
        num_encoder_layers: 2,
        num_decoder_layers: 2,
        dim_feedforward: 64,
        ..Default::default()
    };
    let model = Transformer::load(&w, &cfg)?;
    println!("parameters created: {}", varmap.all_vars().len());

    let (batch, src_len, tgt_len) = (2, 7, 5);
    let src = Tensor::randn(0f32, 1.0, (batch, src_len, cfg.d_model), &device)?;
    let tgt = Tensor::randn(0f32, 1.0, (batch, tgt_len, cfg.d_model), &device)?;
    // PyTorch's src_key_padding_mask marks padding with true; ferroformer masks mark real
    // tokens with 1. Row 1 of the source has 2 padding positions, row 1 of the target 1.
    let src_key_padding = Tensor::new(&[[0u8, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1]], &device)?;
    let src_mask = from_key_padding_mask(&src_key_padding)?;
    let tgt_mask = Tensor::new(&[[1u8, 1, 1, 1, 1], [1, 1, 1, 1, 0]], &device)?;
    println!("src_mask (1 = attend): {:?}", src_mask.to_vec2::<u8>()?);

    let out = model.forward(
        &src,
        &tgt,
        Some(&src_mask),
        Some(&tgt_mask),
        true,
        Pass::INFERENCE,
    )?;
    println!(
        "src {:?}, tgt {:?} -> output {:?}",
        src.dims(),
        tgt.dims(),
        out.dims()
    );
    let first: Vec<f32> = out.get(0)?.get(0)?.narrow(0, 0, 5)?.to_vec1()?;
    println!("output[0, 0, ..5] = {first:?}");

    // The same in two steps, with attention weights from the decoder.
    let memory = model.encode(&src, Some(&src_mask), Pass::INFERENCE)?;
    let dec = model.decode(
        &tgt,
        &memory,
        Some(&src_mask),
        Some(&tgt_mask),
        true,
        None,
        Pass::INFERENCE.with_weights(),
    )?;
    println!("memory {:?}", memory.dims());
    println!(
        "decoder self-attention weights: {} x {:?}, cross-attention weights: {} x {:?}",
        dec.self_attention_weights.len(),
        dec.self_attention_weights[0].dims(),
        dec.cross_attention_weights.len(),
        dec.cross_attention_weights[0].dims()
    );
    let diff = (&dec.hidden - &out)?.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("encode + decode vs forward: max diff {diff:.2e}");

    // Cross-attention puts no weight on padded source positions (row 1, keys 5 and 6).
    let on_pad = dec.cross_attention_weights[0].get(1)?.narrow(2, 5, 2)?;
    let on_pad = on_pad.abs()?.max_all()?.to_scalar::<f32>()?;
    println!("cross-attention weight on padded source keys: {on_pad}");
    Ok(())
}
