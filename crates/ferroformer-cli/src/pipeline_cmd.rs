//! `ferroformer pipeline TASK --model M [options] [--json] [INPUT...]`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ferroformer::pipelines::inputs::{read_inputs, read_inputs_file};
use ferroformer::pipelines::{
    pipeline_with, AggregationStrategy, ClassificationFunction, PipelineConfig, PipelineInput,
    Pooling, Task, TaskOptions, TopK,
};

use crate::device_arg::{require_cpu_for_gguf, DeviceArgs};
use crate::generation_args::GenerationArgs;

/// Arguments of `ferroformer pipeline`.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// text-classification (sentiment-analysis), token-classification (ner),
    /// question-answering, fill-mask, feature-extraction, zero-shot-classification,
    /// text-generation, summarization, translation (translation_xx_to_yy),
    /// text2text-generation.
    pub task: String,
    /// Checkpoint directory, file, or hub id `org/name[@revision]`; for text-generation
    /// also a `.gguf` file (or a hub repository holding one).
    #[arg(long)]
    pub model: String,
    /// Texts to run; `-` reads inputs from stdin.
    pub inputs: Vec<String>,
    /// Read inputs from a file: one text per line, or JSONL with `text` or
    /// `question` + `context` fields.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// One JSON document on stdout: a list with one entry per input.
    #[arg(long)]
    pub json: bool,
    /// Inputs per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Compute dtype: f32 (default, whatever the checkpoint stores), f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// How many results per input (text-classification: a number or `all`; fill-mask: 5;
    /// question-answering: 1); text-generation: the tokens kept when sampling.
    #[arg(long)]
    pub top_k: Option<String>,
    /// text-classification: softmax, sigmoid or none (default from the config).
    #[arg(long)]
    pub function_to_apply: Option<String>,
    /// token-classification: none, simple, first, average or max.
    #[arg(long, default_value = "none")]
    pub aggregation: String,
    /// token-classification: labels to leave out (default O).
    #[arg(long, value_delimiter = ',')]
    pub ignore_labels: Option<Vec<String>>,
    /// question-answering: the question (with --context).
    #[arg(long)]
    pub question: Option<String>,
    /// question-answering: the context (with --question).
    #[arg(long)]
    pub context: Option<String>,
    /// question-answering: overlap of the windows of a long context.
    #[arg(long)]
    pub doc_stride: Option<usize>,
    /// question-answering: longest answer in tokens.
    #[arg(long, default_value_t = 15)]
    pub max_answer_len: usize,
    /// question-answering: tokens per window.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// question-answering: allow "no answer".
    #[arg(long)]
    pub handle_impossible_answer: bool,
    /// fill-mask: restrict predictions to these tokens.
    #[arg(long, value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// feature-extraction: mean, cls, max, or auto (the checkpoint's sentence-transformers
    /// pooling); without it, token-level hidden states.
    #[arg(long)]
    pub pooling: Option<String>,
    /// feature-extraction: L2-normalize the pooled vector.
    #[arg(long)]
    pub normalize: bool,
    /// zero-shot-classification: the labels, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub candidate_labels: Vec<String>,
    /// zero-shot-classification: hypothesis with `{}` for the label.
    #[arg(long, default_value = "This example is {}.")]
    pub hypothesis_template: String,
    /// zero-shot-classification: labels are independent.
    #[arg(long)]
    pub multi_label: bool,
    /// text-generation: the prompt followed by the continuation (true), or the
    /// continuation only (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub return_full_text: bool,
    /// summarization, translation, text2text-generation: decoder tokens at least (the
    /// decoder start token included), as `transformers`' `min_length`.
    #[arg(long)]
    pub min_length: Option<usize>,
    /// summarization, translation, text2text-generation: decoder tokens at most (the
    /// decoder start token included), as `transformers`' `max_length`.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// translation with a multilingual model (mBART-50, M2M100, NLLB): the source language
    /// code (`en_XX`, `en`, `eng_Latn`, ...).
    #[arg(long)]
    pub src_lang: Option<String>,
    /// translation with a multilingual model: the target language code.
    #[arg(long)]
    pub tgt_lang: Option<String>,
    /// summarization, translation, text2text-generation: `true` cuts inputs to the
    /// tokenizer's model_max_length, `false` makes an input longer than the encoder an
    /// error; by default inputs run whole unless longer than the encoder's positions,
    /// which keep their first tokens.
    #[arg(long, action = clap::ArgAction::Set)]
    pub truncation: Option<bool>,
    /// text-generation, summarization, translation, text2text-generation: the generation
    /// options (shared with `generate` and `chat`).
    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Inputs from the positional arguments, stdin (`-`) and `--input-file`, in that order.
fn collect_inputs(args: &PipelineArgs, task: Task) -> anyhow::Result<Vec<PipelineInput>> {
    let mut inputs = Vec::new();
    for text in &args.inputs {
        if text == "-" {
            inputs.extend(read_inputs(std::io::stdin().lock(), "stdin")?);
        } else {
            inputs.push(PipelineInput::text(text.clone()));
        }
    }
    if let Some(path) = &args.input_file {
        inputs.extend(read_inputs_file(path).context("reading --input-file")?);
    }
    match (&args.question, &args.context) {
        (Some(q), Some(c)) => inputs.push(PipelineInput::question(q.clone(), c.clone())),
        (Some(_), None) => bail!("--question needs a --context to find the answer in"),
        (None, Some(_)) => bail!("--context needs a --question"),
        (None, None) => {}
    }
    if task == Task::QuestionAnswering {
        if let Some(i) = inputs
            .iter()
            .position(|i| matches!(i, PipelineInput::Text { .. }))
        {
            bail!(
                "question-answering needs a question and a context for every input (input {} \
                 is a plain text): use --question Q --context C, or JSONL lines with \
                 \"question\" and \"context\"",
                i + 1
            );
        }
    }
    if inputs.is_empty() {
        bail!("no inputs: give texts as arguments, `-` for stdin, or --input-file");
    }
    Ok(inputs)
}

fn task_options(args: &PipelineArgs, task: Task) -> anyhow::Result<TaskOptions> {
    let mut o = TaskOptions::default();
    let top_k_number = |default: usize| -> anyhow::Result<usize> {
        match &args.top_k {
            None => Ok(default),
            Some(k) => k
                .parse::<usize>()
                .ok()
                .filter(|&k| k > 0)
                .with_context(|| format!("--top-k must be a positive number, found `{k}`")),
        }
    };
    match task {
        Task::TextClassification => {
            o.text_classification.top_k = match args.top_k.as_deref() {
                None => TopK::Best,
                Some("all") => TopK::All,
                Some(_) => TopK::K(top_k_number(1)?),
            };
            if let Some(f) = &args.function_to_apply {
                o.text_classification.function_to_apply =
                    Some(ClassificationFunction::from_name(f)?);
            }
        }
        Task::TokenClassification => {
            o.token_classification.aggregation = AggregationStrategy::from_name(&args.aggregation)?;
            o.token_classification.ignore_labels = args.ignore_labels.clone();
        }
        Task::QuestionAnswering => {
            let q = &mut o.question_answering;
            q.top_k = top_k_number(1)?;
            q.doc_stride = args.doc_stride;
            q.max_answer_len = args.max_answer_len;
            q.max_seq_len = args.max_seq_len;
            q.handle_impossible_answer = args.handle_impossible_answer;
        }
        Task::FillMask => {
            o.fill_mask.top_k = top_k_number(5)?;
            o.fill_mask.targets = args.targets.clone();
        }
        Task::FeatureExtraction => {
            o.feature_extraction.pooling = args
                .pooling
                .as_deref()
                .map(Pooling::from_name)
                .transpose()?;
            o.feature_extraction.normalize = args.normalize.then_some(true);
        }
        Task::TextGeneration => {
            let g = &mut o.text_generation;
            g.return_full_text = args.return_full_text;
            let top_k = match args.top_k {
                Some(_) => Some(top_k_number(50)?),
                None => None,
            };
            g.generate_kwargs = args.generation.kwargs(top_k);
            g.truncation = args.generation.truncation()?;
        }
        Task::Summarization | Task::Translation | Task::Text2TextGeneration => {
            let top_k = match args.top_k {
                Some(_) => Some(top_k_number(50)?),
                None => None,
            };
            let mut kwargs = args.generation.kwargs(top_k);
            if let Some(n) = args.min_length {
                kwargs.insert("min_length".into(), n.into());
            }
            if let Some(n) = args.max_length {
                kwargs.insert("max_length".into(), n.into());
            }
            if args.generation.truncate.is_some() {
                bail!(
                    "--truncate is for text-generation; {} takes --truncation true|false",
                    task.name()
                );
            }
            let s = match task {
                Task::Summarization => &mut o.summarization,
                Task::Translation => &mut o.translation,
                _ => &mut o.text2text_generation,
            };
            s.generate_kwargs = kwargs;
            s.truncation = args.truncation;
            s.src_lang = args.src_lang.clone();
            s.tgt_lang = args.tgt_lang.clone();
        }
        Task::ZeroShotClassification => {
            if args.candidate_labels.is_empty() {
                bail!("zero-shot-classification needs --candidate-labels a,b,c");
            }
            o.zero_shot.candidate_labels = args.candidate_labels.clone();
            o.zero_shot.hypothesis_template = args.hypothesis_template.clone();
            o.zero_shot.multi_label = args.multi_label;
        }
    }
    Ok(o)
}

/// Runs `ferroformer pipeline`.
pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let task = Task::from_name(&args.task)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let options = task_options(&args, task)?;
    let inputs = collect_inputs(&args, task)?;
    let dtype = match args.dtype.as_str() {
        "f32" => candle_core::DType::F32,
        "f16" => candle_core::DType::F16,
        "bf16" => candle_core::DType::BF16,
        other => bail!("--dtype must be f32, f16 or bf16, found `{other}`"),
    };
    if ferroformer::models::gguf::gguf_file(&args.model)?.is_some() {
        require_cpu_for_gguf(args.device.device, &args.model)?;
    }
    let config = PipelineConfig {
        batch_size: args.batch_size,
        dtype,
        device: args.device.open()?,
    };
    let pipe = pipeline_with(&args.task, &args.model, &config)
        .with_context(|| format!("loading {} for {}", args.model, task.name()))?;
    // Long input files get a progress bar on stderr; stdout stays machine-readable.
    let chunk = (args.batch_size * 4).max(1);
    let bar = if inputs.len() > chunk && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(inputs.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} inputs {per_sec} {eta}")
                .expect("valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut outputs = Vec::with_capacity(inputs.len());
    for part in inputs.chunks(chunk) {
        outputs.extend(pipe.run(part, &options)?);
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&outputs)?);
    } else {
        for (input, output) in inputs.iter().zip(&outputs) {
            print_readable(task, input, output);
        }
        if task == Task::FeatureExtraction {
            print_similarities(&outputs);
        }
    }
    Ok(())
}

/// Cosine similarities between sentence vectors, when there are several.
fn print_similarities(outputs: &[serde_json::Value]) {
    let vectors: Vec<Vec<f64>> = outputs
        .iter()
        .filter_map(|o| o.as_array())
        .filter(|v| v.first().is_some_and(|x| x.is_number()))
        .map(|v| v.iter().filter_map(|x| x.as_f64()).collect())
        .collect();
    if vectors.len() < 2 || vectors.len() != outputs.len() {
        return;
    }
    let cos = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (na * nb).max(1e-12)
    };
    println!("cosine similarity:");
    for (i, a) in vectors.iter().enumerate() {
        let row: Vec<String> = vectors
            .iter()
            .map(|b| format!("{:6.3}", cos(a, b)))
            .collect();
        println!("  [{}] {}", i + 1, row.join(" "));
    }
}

fn print_readable(task: Task, input: &PipelineInput, output: &serde_json::Value) {
    match input {
        PipelineInput::Text { text } => println!("> {text}"),
        PipelineInput::Question { question, .. } => println!("> {question}"),
    }
    let rows: Vec<&serde_json::Value> = match output {
        serde_json::Value::Array(items) if task != Task::FeatureExtraction => {
            items.iter().collect()
        }
        other => vec![other],
    };
    for row in rows {
        let num = |k: &str| row.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let text = |k: &str| {
            row.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        match task {
            Task::TextClassification => {
                println!("  {:<24} {:.4}", text("label"), num("score"));
            }
            Task::TokenClassification => {
                let label = if row.get("entity_group").is_some() {
                    text("entity_group")
                } else {
                    text("entity")
                };
                println!(
                    "  {:<10} {:.4}  {:<20} [{}..{})",
                    label,
                    num("score"),
                    text("word"),
                    num("start"),
                    num("end")
                );
            }
            Task::QuestionAnswering => println!(
                "  {:.4}  {:?} [{}..{})",
                num("score"),
                text("answer"),
                num("start"),
                num("end")
            ),
            Task::FillMask => match row {
                serde_json::Value::Array(per_mask) => {
                    for p in per_mask {
                        println!("  {}", p);
                    }
                }
                _ => println!(
                    "  {:.4}  {:<16} {}",
                    num("score"),
                    text("token_str"),
                    text("sequence")
                ),
            },
            Task::FeatureExtraction => {
                let shape = shape_of(row);
                let first: Vec<String> = match row {
                    serde_json::Value::Array(v) => v
                        .iter()
                        .take(4)
                        .filter_map(|x| x.as_f64())
                        .map(|x| format!("{x:+.4}"))
                        .collect(),
                    _ => Vec::new(),
                };
                if first.is_empty() {
                    println!("  features of shape {shape:?}");
                } else {
                    println!(
                        "  vector of {} values [{}, ...]",
                        shape[0],
                        first.join(", ")
                    );
                }
            }
            Task::TextGeneration | Task::Text2TextGeneration => {
                println!("  {}", text("generated_text"))
            }
            Task::Summarization => println!("  {}", text("summary_text")),
            Task::Translation => println!("  {}", text("translation_text")),
            Task::ZeroShotClassification => {
                let labels = row
                    .get("labels")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                let scores = row
                    .get("scores")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                for (l, s) in labels.iter().zip(&scores) {
                    println!(
                        "  {:<24} {:.4}",
                        l.as_str().unwrap_or(""),
                        s.as_f64().unwrap_or(f64::NAN)
                    );
                }
            }
        }
    }
}

fn shape_of(v: &serde_json::Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let serde_json::Value::Array(items) = cur {
        shape.push(items.len());
        match items.first() {
            Some(first) => cur = first,
            None => break,
        }
    }
    shape
}
