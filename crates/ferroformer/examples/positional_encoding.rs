//! Sinusoidal positional encoding, as in "Attention Is All You Need": each position `p` gets a
//! fixed vector with `sin(p / 10000^(2i/d))` in even and `cos(...)` in odd columns, added to
//! the token embeddings so attention can tell positions apart. The table is precomputed for
//! `max_len` positions; asking for a position beyond it is a clear error, not a panic.
//!
//! Run: `cargo run -q --example positional_encoding -p ferroformer`

use anyhow::Result;
use ferroformer::nn::SinusoidalPositionalEncoding;
use ferroformer::{DType, Device, Tensor};

fn main() -> Result<()> {
    let device = Device::Cpu;
    let (d_model, max_len) = (16, 50);
    let pe = SinusoidalPositionalEncoding::new(d_model, max_len, DType::F32, &device)?;
    println!("table shape: {:?}", pe.table().dims());

    // Rows 0..3, first 6 columns: row 0 is (sin 0, cos 0, ...) = (0, 1, 0, 1, ...).
    let rows: Vec<Vec<f32>> = pe.encoding(0, 3)?.narrow(1, 0, 6)?.to_vec2()?;
    for (p, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:+.4}")).collect();
        println!("pe[{p}][..6] = [{}]", cells.join(", "));
    }

    // Adding the encoding to a batch of embeddings (here zeros, so the output is the table).
    let x = Tensor::zeros((2, 5, d_model), DType::F32, &device)?;
    let y = pe.forward(&x, 0)?;
    println!("forward: input {:?} -> output {:?}", x.dims(), y.dims());

    // Continue at an offset, as a decoder with a KV cache does: positions 10..15.
    let y_off = pe.forward(&x, 10)?;
    let same = pe.encoding(10, 5)?;
    let diff = (y_off.get(0)? - same)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("forward at start=10 equals rows 10..15: max diff {diff}");

    // Positions 48..52 do not fit in a table of 50 positions.
    match pe.encoding(48, 4) {
        Ok(t) => println!("unexpected success: {:?}", t.dims()),
        Err(e) => println!("encoding(48, 4) fails: {e}"),
    }
    let long = Tensor::zeros((1, max_len + 1, d_model), DType::F32, &device)?;
    if let Err(e) = pe.forward(&long, 0) {
        println!("forward on {} positions fails: {e}", max_len + 1);
    }
    Ok(())
}
