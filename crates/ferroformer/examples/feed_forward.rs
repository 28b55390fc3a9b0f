//! The position-wise feed-forward sublayer, applied to every position independently. The
//! classic form is `down(relu(up(x)))` with biases (the original paper, `nn.Transformer`); the
//! gated SwiGLU form of Llama is `down(silu(gate(x)) * up(x))` without biases.
//! `FeedForwardNames` says where each projection's parameters are stored.
//!
//! Run: `cargo run -q --example feed_forward -p ferroformer`

use anyhow::Result;
use candle_nn::VarMap;
use ferroformer::nn::{Activation, FeedForward, FeedForwardConfig, FeedForwardNames, Mode};
use ferroformer::{DType, Device, Tensor, Weights};

fn first_values(t: &Tensor, n: usize) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.narrow(0, 0, n)?.to_vec1()?)
}

fn main() -> Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let w = Weights::from_varmap(&varmap, DType::F32, &device);
    let (d_model, d_ff) = (16, 64);
    let x = Tensor::randn(0f32, 1.0, (2, 3, d_model), &device)?;

    // ReLU feed-forward with PyTorch's names: linear1 (up) and linear2 (down).
    let relu_cfg = FeedForwardConfig::new(d_model, d_ff, Activation::Relu);
    let relu_names = FeedForwardNames::two_layer("linear1", "linear2", relu_cfg.bias);
    let relu_ffn = FeedForward::load(&w.pp("relu"), &relu_cfg, &relu_names)?;
    let y = relu_ffn.forward(&x, Mode::INFERENCE)?;
    println!("ReLU FFN:   {:?} -> {:?}", x.dims(), y.dims());
    println!("  first values: {:?}", first_values(&y, 4)?);

    // SwiGLU with Llama's names: gate_proj, up_proj, down_proj, no biases.
    let swiglu_cfg = FeedForwardConfig::swiglu(d_model, d_ff);
    let swiglu_names = FeedForwardNames::gated("gate_proj", "up_proj", "down_proj", false);
    let swiglu = FeedForward::load(&w.pp("swiglu"), &swiglu_cfg, &swiglu_names)?;
    let y = swiglu.forward(&x, Mode::INFERENCE)?;
    println!("SwiGLU FFN: {:?} -> {:?}", x.dims(), y.dims());
    println!("  first values: {:?}", first_values(&y, 4)?);

    // Each position is transformed on its own: running one position alone gives the same row.
    let alone = swiglu.forward(&x.narrow(1, 1, 1)?, Mode::INFERENCE)?;
    let diff = (alone - y.narrow(1, 1, 1)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    println!("  position 1 alone vs in the batch: max diff {diff}");

    // The parameters created in the varmap, with their shapes.
    let mut params: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    params.sort();
    for (name, dims) in params {
        println!("  param {name:<24} {dims:?}");
    }

    // A gated config needs the name of its gate projection.
    let no_gate = FeedForwardNames::two_layer("up_proj", "down_proj", false);
    if let Err(e) = FeedForward::load(&w.pp("bad"), &swiglu_cfg, &no_gate) {
        println!("SwiGLU without a gate name: {e}");
    }
    Ok(())
}
