//! Attention masks. A padding mask `(batch, seq)` marks real tokens with 1 and padding with 0,
//! on either side; a causal mask lets query `i` see only keys `j <= i`. `attention_bias`
//! combines them into an additive bias (0 = allowed, a large negative number = blocked); this
//! example prints the allowed patterns as 0/1 grids for right- and left-padded rows.
//!
//! Run: `cargo run -q --example masks -p ferroformer`

use anyhow::{Context, Result};
use ferroformer::nn::mask::{attention_bias, causal_allowed, position_ids_from_mask};
use ferroformer::{DType, Device, Tensor};

/// Prints the `(q_len, k_len)` allowed grid of batch row `row` of a `(batch, 1, q_len, k_len)`
/// bias: 1 where the bias is 0.
fn print_grid(title: &str, bias: &Tensor, row: usize) -> Result<()> {
    let allowed = bias.eq(0f64)?.get(row)?.get(0)?.to_vec2::<u8>()?;
    println!("{title}  (rows: queries, columns: keys)");
    for line in allowed {
        let cells: Vec<String> = line.iter().map(u8::to_string).collect();
        println!("    {}", cells.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let (batch, seq) = (1, 5);
    // The same three tokens, padded to length 5 on the right or on the left.
    let right = Tensor::new(&[[1u8, 1, 1, 0, 0]], &dev)?;
    let left = Tensor::new(&[[0u8, 0, 1, 1, 1]], &dev)?;

    let causal = attention_bias(None, true, batch, seq, seq, DType::F32, &dev)?
        .context("a causal mask over 5 positions masks something")?;
    println!("causal bias shape: {:?}", causal.dims());
    print_grid("causal", &causal, 0)?;

    for (side, mask) in [("right", &right), ("left", &left)] {
        println!(
            "\n== {side} padding, mask {:?} ==",
            mask.to_vec2::<u8>()?[0]
        );
        let pad = attention_bias(Some(mask), false, batch, seq, seq, DType::F32, &dev)?
            .context("a padding mask gives a bias")?;
        println!(
            "padding bias shape: {:?} (broadcast over queries)",
            pad.dims()
        );
        print_grid("padding", &pad.broadcast_as((batch, 1, seq, seq))?, 0)?;
        let both = attention_bias(Some(mask), true, batch, seq, seq, DType::F32, &dev)?
            .context("padding + causal gives a bias")?;
        print_grid("padding + causal", &both, 0)?;
        // A padding query that sees no key (left padding) gets uniform weights, not NaN; its
        // output is ignored anyway.
        println!(
            "position ids: {:?}",
            position_ids_from_mask(mask)?.to_vec2::<u32>()?[0]
        );
    }

    // With a KV cache: 1 new query over 4 cached + 1 new key sees everything.
    let step = causal_allowed(1, 5, &dev)?;
    println!(
        "\ncausal, 1 query over 5 keys: {:?}",
        step.flatten_all()?.to_vec1::<u8>()?
    );
    println!(
        "attention_bias(None, causal, q_len=1) = {:?} (nothing to mask)",
        attention_bias(None, true, 1, 1, 5, DType::F32, &dev)?.map(|b| b.dims().to_vec())
    );
    Ok(())
}
