//! Multi-head self-attention with a padding mask. The mask `(batch, seq)` (1 = real token,
//! 0 = padding) becomes an additive bias of 0 / a large negative number, so after the softmax
//! no query puts any weight on a padded key. The second half builds grouped-query attention
//! (GQA), where several query heads share one key/value head.
//!
//! Run: `cargo run -q --example attention -p ferroformer`

use anyhow::{Context, Result};
use candle_core::IndexOp;
use candle_nn::VarMap;
use ferroformer::nn::mask::attention_bias;
use ferroformer::nn::{
    AttentionConfig, AttentionContext, AttentionNames, Mode, MultiHeadAttention,
};
use ferroformer::{DType, Device, Tensor, Weights};

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);

    let (batch, seq, d_model, heads) = (2, 5, 16, 4);
    let cfg = AttentionConfig::new(d_model, heads)?;
    let mha = MultiHeadAttention::load(&w.pp("mha"), &cfg, &AttentionNames::torch("", &cfg))?;

    let x = Tensor::randn(0f32, 1.0, (batch, seq, d_model), &device)?;
    // Row 0 has 3 real tokens and 2 padding tokens on the right; row 1 has no padding.
    let mask = Tensor::new(&[[1u8, 1, 1, 0, 0], [1, 1, 1, 1, 1]], &device)?;
    let bias = attention_bias(Some(&mask), false, batch, seq, seq, DType::F32, &device)?;
    println!("bias shape: {:?}", bias.as_ref().map(|b| b.dims().to_vec()));

    let out = mha.forward(
        &x,
        AttentionContext {
            bias: bias.as_ref(),
            mode: Mode::INFERENCE.with_weights(),
            ..Default::default()
        },
    )?;
    let weights = out.weights.context("weights were requested")?;
    println!("output shape:  {:?}", out.output.dims());
    println!(
        "weights shape: {:?} (batch, heads, query, key)",
        weights.dims()
    );

    // Weights of row 0, head 0: the last two columns (padded keys) are exactly 0.
    let w00: Vec<Vec<f32>> = weights.i((0, 0))?.to_vec2()?;
    for (q, row) in w00.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
        println!("row 0, head 0, query {q}: [{}]", cells.join(", "));
    }
    let on_padding = weights
        .i((0, .., .., 3..))?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("largest weight on a padded key (row 0, any head or query): {on_padding}");

    // Grouped-query attention: 4 query heads share 2 key/value heads.
    let gqa_cfg = AttentionConfig::new(d_model, heads)?.with_kv_heads(2)?;
    let gqa = MultiHeadAttention::load(
        &w.pp("gqa"),
        &gqa_cfg,
        &AttentionNames::separate("q_proj", "k_proj", "v_proj", "o_proj", &gqa_cfg),
    )?;
    let gqa_out = gqa.forward(&x, AttentionContext::default())?;
    println!(
        "GQA: {} query heads, {} kv heads, head_dim {} -> output {:?}",
        gqa_cfg.num_heads,
        gqa_cfg.num_kv_heads,
        gqa_cfg.head_dim,
        gqa_out.output.dims()
    );
    let k_shape = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?
        .get("gqa.k_proj.weight")
        .map(|v| v.dims().to_vec());
    println!("GQA k_proj weight: {k_shape:?} (kv_heads * head_dim, d_model)");

    // An invalid grouping is a configuration error.
    if let Err(e) = AttentionConfig::new(d_model, heads)?.with_kv_heads(3) {
        println!("with_kv_heads(3): {e}");
    }
    Ok(())
}
