//! `ferroformer`: the command-line face of the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use ferroformer::models::{self, BertModel, Gpt2LmHeadModel};
use ferroformer::nn::SinusoidalPositionalEncoding;

#[derive(Parser)]
#[command(
    name = "ferroformer",
    version,
    about = "Transformers from their parts, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a checkpoint's architecture, parameters per module and in total, and dtypes.
    Inspect {
        /// Checkpoint directory (config.json + model.safetensors), or a hub id
        /// `org/name[@revision]` already in the local Hugging Face cache.
        model: String,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Draw pictures of what a transformer computes.
    Viz {
        #[command(subcommand)]
        what: Viz,
    },
}

#[derive(Subcommand)]
enum Viz {
    /// The sinusoidal positional encoding as a heatmap (rows: positions, columns: dimensions).
    PositionalEncoding {
        /// Embedding width.
        #[arg(long, default_value_t = 128)]
        d_model: usize,
        /// Number of positions.
        #[arg(long, default_value_t = 100)]
        max_len: usize,
        /// Pixels per cell.
        #[arg(long, default_value_t = 4)]
        cell: u32,
        /// Output PNG.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Attention weights of one layer of a model on an input, one panel per head.
    Attention {
        /// Checkpoint directory or cached hub id of a BERT or GPT-2 model.
        #[arg(long)]
        model: String,
        /// Token ids of the input, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// Layer to draw (0-based).
        #[arg(long, default_value_t = 0)]
        layer: usize,
        /// Pixels per cell.
        #[arg(long, default_value_t = 16)]
        cell: u32,
        /// Output PNG.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model, json } => inspect(&models::hub::resolve_local(&model)?, json),
        Command::Viz { what } => match what {
            Viz::PositionalEncoding {
                d_model,
                max_len,
                cell,
                output,
            } => {
                if d_model == 0 || max_len == 0 {
                    bail!("--d-model and --max-len must be > 0");
                }
                let pe =
                    SinusoidalPositionalEncoding::new(d_model, max_len, DType::F32, &Device::Cpu)?;
                ferroformer::viz::positional_encoding_png(&output, pe.table(), cell)?;
                eprintln!(
                    "wrote {} ({max_len} positions x {d_model} dimensions)",
                    output.display()
                );
                Ok(())
            }
            Viz::Attention {
                model,
                ids,
                layer,
                cell,
                output,
            } => {
                let weights = attention_weights(&models::hub::resolve_local(&model)?, &ids, layer)?;
                ferroformer::viz::attention_png(&output, &weights, cell)?;
                eprintln!(
                    "wrote {} (layer {layer}, {} heads, {} tokens)",
                    output.display(),
                    weights.dim(0)?,
                    ids.len()
                );
                Ok(())
            }
        },
    }
}

fn inspect(dir: &Path, json: bool) -> anyhow::Result<()> {
    let s = models::inspect_checkpoint(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("checkpoint:    {}", s.path);
    println!(
        "architecture:  {} (model_type: {})",
        if s.architectures.is_empty() {
            "unknown".to_string()
        } else {
            s.architectures.join(", ")
        },
        s.model_type.as_deref().unwrap_or("unknown")
    );
    for (k, v) in &s.config {
        println!("  {k}: {v}");
    }
    println!();
    let width = s
        .modules
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:>12}  {:>7}",
        "module", "parameters", "tensors"
    );
    for m in &s.modules {
        println!(
            "{:<width$}  {:>12}  {:>7}",
            m.name,
            group_digits(m.parameters),
            m.tensors
        );
    }
    println!(
        "{:<width$}  {:>12}",
        "total",
        group_digits(s.total_parameters)
    );
    let dtypes: Vec<String> = s
        .dtypes
        .iter()
        .map(|(d, n)| format!("{d} ({})", group_digits(*n)))
        .collect();
    println!("dtype: {}", dtypes.join(", "));
    Ok(())
}

fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Attention weights `(heads, seq, seq)` of `layer` for one input.
fn attention_weights(dir: &Path, ids: &[u32], layer: usize) -> anyhow::Result<Tensor> {
    let summary = models::inspect_checkpoint(dir)?;
    let dev = Device::Cpu;
    let input = Tensor::new(ids, &dev)?.unsqueeze(0)?;
    let all = match summary.model_type.as_deref() {
        Some("bert") => {
            let m = BertModel::from_dir(dir, DType::F32, &dev)?;
            m.encoder()
                .forward(&input, None, None, false, true)?
                .self_attention_weights
        }
        Some("gpt2") => {
            let m = Gpt2LmHeadModel::from_dir(dir, DType::F32, &dev)?;
            m.decoder()
                .forward(&input, None, None, false, true)?
                .attention_weights
        }
        other => bail!(
            "{}: model_type {:?} is not supported by `viz attention` (supported: bert, gpt2)",
            dir.join("config.json").display(),
            other.unwrap_or("missing")
        ),
    };
    let n = all.len();
    let w = all
        .into_iter()
        .nth(layer)
        .with_context(|| format!("--layer {layer} is out of range: the model has {n} layers"))?;
    Ok(w.squeeze(0)?)
}
