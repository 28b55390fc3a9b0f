//! `ferroformer`: the command-line face of the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::{Parser, Subcommand};
use ferroformer::models::{self, BertModel, Gpt2LmHeadModel};
use ferroformer::nn::SinusoidalPositionalEncoding;

mod device_arg;
mod evaluate_cmd;
mod evaluate_task;
mod generate_cmd;
mod generation_args;
mod pipeline_cmd;
mod progress;
mod serve;
mod train_classifier_cmd;

/// Tensors of many megabytes are allocated and freed on every layer; the system allocator
/// returns them to the kernel each time, so every new buffer costs page faults. mimalloc
/// keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Train and inspect tokenizers.
    Tokenizer {
        #[command(subcommand)]
        what: TokenizerCmd,
    },
    /// Train models.
    Train {
        #[command(subcommand)]
        what: TrainCmd,
    },
    /// Continue a prompt with a causal language model, streaming the text.
    ///
    /// Decoding as the model's generation_config.json says (greedy without one, as
    /// `transformers`), at most 256 new tokens unless --max-new-tokens or the config say
    /// otherwise.
    Generate(Box<generate_cmd::GenerateArgs>),
    /// Chat with a model through its chat template: one answer with --prompt, else a
    /// conversation on stdin.
    ///
    /// Defaults: the system message "You are a helpful assistant." (see --system,
    /// --no-system); decoding as the model's generation_config.json says, greedy when it has
    /// none (a GGUF file), as `transformers`; at most 256 new tokens per answer unless
    /// --max-new-tokens or the config say otherwise. Answers end at the model's
    /// end-of-sequence tokens and the template's end of turn (`<|im_end|>`, `<|eot_id|>`).
    Chat(Box<generate_cmd::ChatArgs>),
    /// Run a task pipeline (text-classification, ner, question-answering, fill-mask,
    /// feature-extraction, zero-shot-classification) on inputs.
    Pipeline(Box<pipeline_cmd::PipelineArgs>),
    /// Serve models over HTTP: the OpenAI API (chat completions, completions, embeddings,
    /// models), tokenize / detokenize, Prometheus metrics, and the pipelines with Hugging
    /// Face's inference API body; concurrent requests decode together (continuous batching).
    Serve(Box<serve::ServeArgs>),
    /// Score predictions against references (accuracy, precision, recall, f1, exact_match,
    /// squad, bleu, sacrebleu, chrf, rouge, meteor) with the reference implementations' keys;
    /// score texts with a model (perplexity); or run a pipeline over labelled data and score
    /// it (--task).
    Evaluate(Box<evaluate_cmd::EvaluateArgs>),
    /// Perplexity of a causal language model on a text file (sliding windows, as in
    /// `transformers`' perplexity guide).
    Perplexity {
        /// A causal language model: checkpoint directory, `.gguf` file, or hub id of either.
        #[arg(long)]
        model: String,
        /// UTF-8 text file to score.
        #[arg(long)]
        file: PathBuf,
        /// Tokens per window (default: the model's context length).
        #[arg(long)]
        context_length: Option<usize>,
        /// Tokens between window starts (default: the context length).
        #[arg(long)]
        stride: Option<usize>,
        /// `{"perplexity", "nll_per_token", "tokens"}` on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: device_arg::DeviceArgs,
    },
}

#[derive(Subcommand)]
enum TokenizerCmd {
    /// Train a tokenizer on text files and save it as a standard tokenizer.json.
    Train {
        /// char, bpe (byte-level) or wordpiece.
        #[arg(long, default_value = "bpe")]
        kind: String,
        /// Vocabulary size (an upper bound for char).
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Special tokens (default: <|endoftext|> for char/bpe; BERT's for wordpiece).
        #[arg(long, value_delimiter = ',')]
        special_tokens: Vec<String>,
        /// Output tokenizer.json.
        #[arg(short, long)]
        output: PathBuf,
        /// Training text files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrainCmd {
    /// Train a decoder-only language model by next-token prediction.
    ///
    /// Every config key is also a flag (`--d-model 128`); flags override the file.
    Lm(TrainLmArgs),
    /// Fine-tune a pretrained encoder for sequence classification.
    Classifier(Box<train_classifier_cmd::TrainClassifierArgs>),
    /// Fine-tune a pretrained encoder for token classification (NER, tagging).
    TokenClassifier(Box<train_classifier_cmd::TrainTokenClassifierArgs>),
}

#[derive(clap::Args)]
struct TrainLmArgs {
    /// TOML file with the run's settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Print progress as JSON lines on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: device_arg::DeviceArgs,
    /// Config keys as flags: --preset gpt2 --data a.txt,b.txt --d-model 128 ...
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "--KEY VALUE"
    )]
    settings: Vec<String>,
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
        #[command(flatten)]
        device: device_arg::DeviceArgs,
    },
}

fn main() -> ExitCode {
    // Our kernels and GEMMs run on rayon's pool; candle's element-wise ops have a pool of
    // their own whose workers spin-wait between ops. On a few cores the two pools take turns
    // starving each other (training ran ~1.5x faster on 2 cores with candle's pool off), so
    // candle's ops stay on the calling thread unless the user says otherwise.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    set_purge_policy(&cli.command);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, which the bindings leave
/// unnamed).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory mimalloc has freed stays with the process.
///
/// Batch commands keep it for good: every layer allocates and frees buffers of the same
/// sizes, and a returned page costs a fault and a zeroing the next time (up to 5 % of samples
/// in profiles of inference and training); their peak memory is unchanged. A server instead
/// returns what it has not reused within ten seconds, and everything once it has been idle
/// for half a second (the scheduler's `release_freed_memory`): under load the batch's KV
/// cache is rebuilt in new sizes as rows join and leave, and with a one-second delay those
/// buffers went back and came again as fresh zeroed pages (8 % of a 16-stream profile,
/// 4 % with ten seconds), while memory left over from a burst of long requests still goes
/// back to the OS once the burst is over instead of staying in the process's RSS.
fn set_purge_policy(command: &Command) {
    let delay_ms = match command {
        Command::Serve(_) => 10_000,
        _ => -1,
    };
    // SAFETY: setting an option is always allowed; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model, json } => inspect(&models::hub::resolve(&model)?, json),
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
                device,
            } => {
                let dev = device.open()?;
                let weights = attention_weights(&models::hub::resolve(&model)?, &ids, layer, &dev)?;
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
        Command::Tokenizer { what } => match what {
            TokenizerCmd::Train {
                kind,
                vocab_size,
                special_tokens,
                output,
                files,
            } => tokenizer_train(&kind, vocab_size, special_tokens, &output, &files),
        },
        Command::Train { what } => match what {
            TrainCmd::Lm(args) => train_lm(args),
            TrainCmd::Classifier(args) => train_classifier_cmd::run(*args),
            TrainCmd::TokenClassifier(args) => train_classifier_cmd::run_token(*args),
        },
        Command::Generate(args) => generate_cmd::generate(*args),
        Command::Chat(args) => generate_cmd::chat(*args),
        Command::Pipeline(args) => pipeline_cmd::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Evaluate(args) => evaluate_cmd::run(*args),
        Command::Perplexity {
            model,
            file,
            context_length,
            stride,
            json,
            device,
        } => perplexity(&model, &file, context_length, stride, json, &device),
    }
}

fn perplexity(
    model: &str,
    file: &Path,
    context_length: Option<usize>,
    stride: Option<usize>,
    json: bool,
    device: &device_arg::DeviceArgs,
) -> anyhow::Result<()> {
    let lm = device_arg::load_language_model(model, device)?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
    // With the model's special tokens (a BOS where it wants one), as `transformers`'
    // perplexity guide and llama.cpp's perplexity tool tokenize.
    let ids = lm.tokenizer.encode(&text, true)?;
    let max = lm.context_length();
    let context_length = context_length.unwrap_or(max);
    if context_length > max {
        bail!("--context-length {context_length} is longer than the model's {max} positions");
    }
    let stride = stride.unwrap_or(context_length);
    let p = ferroformer::generation::perplexity(
        lm.decoder(),
        &ids,
        context_length,
        stride,
        lm.decoder().device(),
    )?;
    if json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!(
            "perplexity {:.4} ({:.4} nats per token over {} tokens; windows of {context_length}, stride {stride})",
            p.perplexity, p.nll_per_token, p.tokens
        );
    }
    Ok(())
}

fn tokenizer_train(
    kind: &str,
    vocab_size: usize,
    special_tokens: Vec<String>,
    output: &Path,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    use ferroformer::train::tokenizer::{
        save_tokenizer, train_tokenizer, TokenizerKind, END_OF_TEXT,
    };
    let kind: TokenizerKind = kind.parse()?;
    let specials = if special_tokens.is_empty() && kind != TokenizerKind::WordPiece {
        vec![END_OF_TEXT.to_string()]
    } else {
        special_tokens
    };
    let tok = train_tokenizer(kind, vocab_size, files, &specials)?;
    save_tokenizer(&tok, output)?;
    eprintln!(
        "wrote {} ({kind} tokenizer, {} tokens)",
        output.display(),
        tok.get_vocab_size(true)
    );
    Ok(())
}

fn train_lm(args: TrainLmArgs) -> anyhow::Result<()> {
    use ferroformer::train::{TrainConfig, TrainEvent};

    let device = args.device.open()?;
    let mut cfg = match &args.config {
        Some(path) => TrainConfig::from_toml_file(path)?,
        None => TrainConfig::default(),
    };
    for (key, value) in train_classifier_cmd::parse_settings(&args.settings)? {
        cfg.set(&key, &value)?;
    }
    let stop = crate::progress::interrupt_flag()?;
    let progress = crate::progress::TrainingProgress::new(cfg.max_steps, args.json)?;
    let bar = &progress.bar;
    let say = |msg: String| progress.say(msg);
    let mut last_val = None;
    let json = args.json;
    let mut on_event = |e: &TrainEvent| {
        if json {
            if let Ok(s) = serde_json::to_string(e) {
                println!("{s}");
            }
        }
        match e {
            TrainEvent::Started {
                start_step,
                parameters,
                train_tokens,
                val_tokens,
                ..
            } => {
                bar.set_position(*start_step);
                say(format!(
                    "model: {parameters} parameters; data: {train_tokens} training / {val_tokens} validation tokens"
                ));
            }
            TrainEvent::Step {
                step,
                loss,
                lr,
                tokens_per_sec,
                ..
            } => {
                bar.set_position(*step);
                let val = last_val
                    .map(|v: f64| format!("  val {v:.4}"))
                    .unwrap_or_default();
                let msg = format!("loss {loss:.4}{val}  lr {lr:.2e}  {tokens_per_sec:.0} tok/s");
                if !progress.interactive() {
                    say(format!("step {step}: {msg}"));
                }
                bar.set_message(msg);
            }
            TrainEvent::Eval {
                step,
                val_loss,
                perplexity,
            } => {
                last_val = Some(*val_loss);
                say(format!(
                    "step {step}: validation loss {val_loss:.4}, perplexity {perplexity:.2}"
                ));
            }
            TrainEvent::Saved { step, path } => {
                say(format!(
                    "step {step}: checkpoint saved to {}",
                    path.display()
                ));
            }
        }
    };
    let dir = ferroformer::train::train_lm_on(&cfg, args.resume, &stop, &mut on_event, &device)?;
    bar.finish_and_clear();
    eprintln!("run directory: {}", dir.display());
    Ok(())
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
    if !s.tasks.is_empty() {
        println!("runs:          {}", s.tasks.join(", "));
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Attention weights `(heads, seq, seq)` of `layer` for one input, computed on `dev`.
fn attention_weights(
    dir: &Path,
    ids: &[u32],
    layer: usize,
    dev: &Device,
) -> anyhow::Result<Tensor> {
    let summary = models::inspect_checkpoint(dir)?;
    let input = Tensor::new(ids, dev)?.unsqueeze(0)?;
    let all = match summary.model_type.as_deref() {
        Some("bert") => {
            let m = BertModel::from_dir(dir, DType::F32, dev)?;
            m.encoder()
                .forward(
                    &input,
                    None,
                    None,
                    ferroformer::nn::Pass::INFERENCE.with_weights(),
                )?
                .self_attention_weights
        }
        Some("gpt2") => {
            let m = Gpt2LmHeadModel::from_dir(dir, DType::F32, dev)?;
            m.decoder()
                .forward(
                    &input,
                    None,
                    None,
                    ferroformer::nn::Pass::INFERENCE.with_weights(),
                )?
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
