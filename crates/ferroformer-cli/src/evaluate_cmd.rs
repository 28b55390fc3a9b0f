//! `ferroformer evaluate METRIC --predictions FILE --references FILE`: scores predictions
//! against references with the metrics of `ferroformer::metrics`.
//!
//! Files hold one entry per line: plain text (a line is one text or label), or JSON Lines
//! (`.jsonl` files, or `--format jsonl`) where a line is a JSON string, a number or boolean
//! (a label), or — in the references — a list of strings: several references for one
//! prediction.
//!
//! `seqeval` scores sequences of tags: both files are JSON Lines whatever their names, a line
//! is a JSON list of tag strings, and the n-th prediction lines up tag for tag with the n-th
//! reference.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ferroformer::metrics::{self, Metric, MetricOptions};
use serde_json::Value;

use crate::device_arg::DeviceArgs;

/// Arguments of `ferroformer evaluate`.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// accuracy, precision, recall, f1, exact_match, squad, bleu, sacrebleu, chrf, rouge,
    /// meteor, seqeval (JSON Lines of tag lists), or perplexity (texts scored by --model).
    /// Not with --task.
    metric: Option<String>,
    /// Predictions, one per line (perplexity: the texts to score).
    #[arg(long, required_unless_present = "task")]
    predictions: Option<PathBuf>,
    /// Run this task's pipeline of --model over --data and score it: text-classification
    /// (accuracy, precision, recall, f1), question-answering (squad, exact_match) or
    /// token-classification (seqeval).
    #[arg(long, requires_all = ["model", "data"], conflicts_with_all = ["metric", "predictions", "references"])]
    task: Option<String>,
    /// --task: the labelled examples (CSV, TSV or JSON Lines; question-answering: JSON
    /// Lines with question, context and answers; token-classification: CoNLL, or JSON Lines
    /// with a list of words and a list of tags).
    #[arg(long, requires = "task")]
    data: Option<PathBuf>,
    /// --task: the metrics, comma-separated (text-classification: accuracy,f1 by default;
    /// question-answering: squad; token-classification: seqeval).
    #[arg(long = "metric", value_delimiter = ',', requires = "task")]
    task_metrics: Vec<String>,
    /// --task text-classification: the column of the texts.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// --task text-classification: the column of the labels (names or ids).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// --task question-answering: the field of the questions.
    #[arg(long, default_value = "question")]
    question_column: String,
    /// --task question-answering: the field of the contexts.
    #[arg(long, default_value = "context")]
    context_column: String,
    /// --task question-answering: the field of the reference answers (a string, a list, or
    /// SQuAD's {"text": [...]}).
    #[arg(long, default_value = "answers")]
    answers_column: String,
    /// --task token-classification, JSON Lines: the field of the words.
    #[arg(long, default_value = "tokens")]
    tokens_column: String,
    /// --task token-classification, JSON Lines: the field of the tags (names, or ids of
    /// the model's labels).
    #[arg(long, default_value = "tags")]
    tags_column: String,
    /// --task text-classification: also draw the confusion matrix as a PNG here.
    #[arg(long, requires = "task")]
    confusion_matrix: Option<PathBuf>,
    /// --task: inputs per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// References, one per line (in JSON Lines a list of strings for several). Every metric
    /// but perplexity needs them.
    #[arg(long)]
    references: Option<PathBuf>,
    /// perplexity: the causal language model that scores the texts (checkpoint directory,
    /// `.gguf` file, or hub id of either).
    #[arg(long)]
    model: Option<String>,
    /// perplexity: truncate each text to this many tokens, the start token included
    /// (`evaluate`'s max_length; default: no truncation, a text longer than the context is
    /// an error).
    #[arg(long)]
    max_length: Option<usize>,
    /// perplexity: do not put the BOS token in front of each text (`evaluate`'s
    /// add_start_token=False; the first token is then not scored).
    #[arg(long)]
    no_start_token: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// text or jsonl (default: jsonl for files ending in .jsonl, text otherwise).
    #[arg(long)]
    format: Option<String>,
    /// Print the result as one JSON object on stdout (the reference's keys).
    #[arg(long)]
    json: bool,
    /// precision/recall/f1: binary (default), micro, macro or weighted.
    #[arg(long)]
    average: Option<String>,
    /// precision/recall/f1: the positive label of --average binary (default 1).
    #[arg(long)]
    pos_label: Option<String>,
    /// exact_match: a regular expression removed from both texts first (repeatable).
    #[arg(long)]
    regexes_to_ignore: Vec<String>,
    /// exact_match: compare lowercased.
    #[arg(long)]
    ignore_case: bool,
    /// exact_match: ignore ASCII punctuation.
    #[arg(long)]
    ignore_punctuation: bool,
    /// exact_match: ignore the digits 0-9.
    #[arg(long)]
    ignore_numbers: bool,
    /// bleu: largest n-gram order (default 4).
    #[arg(long)]
    max_order: Option<usize>,
    /// bleu: Lin & Och add-one smoothing.
    #[arg(long)]
    smooth: bool,
    /// sacrebleu: tokenizer 13a (default), intl, char or none.
    #[arg(long)]
    tokenize: Option<String>,
    /// sacrebleu: smoothing exp (default), floor, add-k or none.
    #[arg(long)]
    smooth_method: Option<String>,
    /// sacrebleu: the value of floor (default 0.1) or add-k (default 1).
    #[arg(long)]
    smooth_value: Option<f64>,
    /// sacrebleu/chrf: lowercase predictions and references.
    #[arg(long)]
    lowercase: bool,
    /// rouge: types, comma-separated (default rouge1,rouge2,rougeL,rougeLsum).
    #[arg(long, value_delimiter = ',')]
    rouge_types: Vec<String>,
    /// rouge: Porter-stem tokens (NLTK's stemmer, as rouge_score).
    #[arg(long)]
    use_stemmer: bool,
    /// rouge: one F-measure per example instead of the mean.
    #[arg(long)]
    no_aggregator: bool,
    /// rouge: rouge_score's bootstrap aggregate (median of N resample means); needs --seed.
    #[arg(long, value_name = "N")]
    bootstrap: Option<usize>,
    /// rouge: seed of the bootstrap (numpy's legacy seeding: same draws as np.random.seed).
    #[arg(long, value_name = "S")]
    seed: Option<u32>,
    /// meteor: WordNet 3.0 database directory (default /usr/share/wordnet, where Debian's
    /// wordnet-base puts it).
    #[arg(long, value_name = "DIR")]
    wordnet: Option<PathBuf>,
    /// seqeval: the tagging scheme of the strict mode: IOB1, IOB2, IOE1, IOE2, IOBES or
    /// BILOU (default: detected from the references). Only with --mode strict.
    #[arg(long)]
    scheme: Option<String>,
    /// seqeval: `strict` reads entities by the scheme (default: conlleval's chunking).
    #[arg(long)]
    mode: Option<String>,
    /// seqeval: the prefix ends the tag (`PER-B`).
    #[arg(long)]
    suffix: bool,
    /// seqeval: a score whose denominator is 0 is warn (0; the default), 0 or 1.
    #[arg(long)]
    zero_division: Option<String>,
}

/// How an input file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    JsonLines,
}

fn format_of(path: &Path, flag: Option<&str>) -> anyhow::Result<Format> {
    match flag {
        Some("text") => Ok(Format::Text),
        Some("jsonl") => Ok(Format::JsonLines),
        Some(other) => bail!("unknown --format `{other}`: expected text or jsonl"),
        None => Ok(
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
            {
                Format::JsonLines
            } else {
                Format::Text
            },
        ),
    }
}

/// One line's entry: one text, or a list of texts (references only).
enum Entry {
    One(String),
    Many(Vec<String>),
}

/// A JSON scalar as a text or label; numbers and booleans as they are written.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn read_entries(path: &Path, format: Format) -> anyhow::Result<Vec<Entry>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut entries = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, raw) in lines.into_iter().enumerate() {
        let line_number = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|e| {
            anyhow::anyhow!(
                "{}:{line_number}: the line is not valid UTF-8 ({e})",
                path.display()
            )
        })?;
        let entry = match format {
            Format::Text => Entry::One(line.to_string()),
            Format::JsonLines => {
                let value: Value = serde_json::from_str(line).map_err(|e| {
                    anyhow::anyhow!(
                        "{}:{line_number}: not a JSON value ({e}); expected a string, a label or a list of strings",
                        path.display()
                    )
                })?;
                match &value {
                    Value::Array(items) => Entry::Many(
                        items
                            .iter()
                            .enumerate()
                            .map(|(k, item)| {
                                scalar_text(item).ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "{}:{line_number}: item {k} of the list is {item}, expected a string",
                                        path.display()
                                    )
                                })
                            })
                            .collect::<anyhow::Result<_>>()?,
                    ),
                    other => Entry::One(scalar_text(other).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}:{line_number}: found {other}, expected a string, a label or a list of strings",
                            path.display()
                        )
                    })?),
                }
            }
        };
        entries.push(entry);
    }
    Ok(entries)
}

/// Runs `ferroformer evaluate`.
pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    if let Some(task) = args.task.as_deref() {
        return evaluate_task(&args, task);
    }
    let Some(metric) = args.metric.as_deref() else {
        bail!("name the METRIC to compute, or run a pipeline with --task");
    };
    if metric == PERPLEXITY {
        return perplexity(&args);
    }
    let metric: Metric = metric.parse().map_err(|e| {
        anyhow::anyhow!("{e}, or {PERPLEXITY} (texts scored by a model given with --model)")
    })?;
    for (set, flag) in [
        (args.model.is_some(), "--model"),
        (args.max_length.is_some(), "--max-length"),
        (args.no_start_token, "--no-start-token"),
    ] {
        if set {
            bail!(
                "{flag} is an option of {PERPLEXITY}, not of {}",
                metric.name()
            );
        }
    }
    let Some(references_path) = args.references.as_deref() else {
        bail!(
            "{} compares predictions with references: give them with --references FILE",
            metric.name()
        );
    };
    if metric.takes_sequences() {
        return sequences(&args, metric, references_path);
    }
    let predictions = read_predictions(&args)?;
    let references = read_entries(
        references_path,
        format_of(references_path, args.format.as_deref())?,
    )?
    .into_iter()
    .enumerate()
    .map(|(i, e)| match e {
        Entry::One(text) => Ok(vec![text]),
        Entry::Many(list) if list.is_empty() => bail!(
            "{}:{}: an empty list of references; at least one is needed",
            references_path.display(),
            i + 1
        ),
        Entry::Many(list) => Ok(list),
    })
    .collect::<anyhow::Result<Vec<Vec<String>>>>()?;
    if predictions.len() != references.len() {
        bail!(
            "{} has {} predictions but {} has {} references: one line each per example",
            predictions_path(&args)?.display(),
            predictions.len(),
            references_path.display(),
            references.len()
        );
    }
    if predictions.is_empty() {
        bail!("{} has no predictions", predictions_path(&args)?.display());
    }
    if metric.takes_labels() || metric == Metric::ExactMatch {
        if let Some(i) = references.iter().position(|r| r.len() != 1) {
            bail!(
                "{}:{}: {} takes one reference per prediction, found {}",
                references_path.display(),
                i + 1,
                metric.name(),
                references[i].len()
            );
        }
    }
    let result = metrics::compute(metric, &predictions, &references, &metric_options(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_result(metric.name(), predictions.len(), &result);
    }
    Ok(())
}

/// The metric options the flags set.
fn metric_options(args: &EvaluateArgs) -> MetricOptions {
    MetricOptions {
        average: args.average.clone(),
        pos_label: args.pos_label.clone(),
        regexes_to_ignore: args.regexes_to_ignore.clone(),
        ignore_case: args.ignore_case,
        ignore_punctuation: args.ignore_punctuation,
        ignore_numbers: args.ignore_numbers,
        max_order: args.max_order,
        smooth: args.smooth,
        tokenize: args.tokenize.clone(),
        smooth_method: args.smooth_method.clone(),
        smooth_value: args.smooth_value,
        lowercase: args.lowercase,
        rouge_types: args.rouge_types.clone(),
        use_stemmer: args.use_stemmer,
        no_aggregator: args.no_aggregator,
        bootstrap: args.bootstrap,
        seed: args.seed,
        wordnet: args.wordnet.clone(),
        scheme: args.scheme.clone(),
        mode: args.mode.clone(),
        suffix: args.suffix,
        zero_division: args.zero_division.clone(),
    }
}

/// A metric of tag sequences (seqeval): both files read as JSON Lines of tag lists, checked
/// line by line, then scored.
fn sequences(args: &EvaluateArgs, metric: Metric, references_path: &Path) -> anyhow::Result<()> {
    if args.format.as_deref().is_some_and(|f| f != "jsonl") {
        bail!(
            "{} reads JSON Lines (a list of tags per line); --format {} does not apply",
            metric.name(),
            args.format.as_deref().unwrap_or_default()
        );
    }
    let predictions_path = predictions_path(args)?;
    let options = metric_options(args);
    // Options are checked before the files so that a wrong flag is reported as such.
    let parsed = metrics::seqeval_options(&options)?;
    let predictions = read_tag_sequences(predictions_path)?;
    let references = read_tag_sequences(references_path)?;
    if predictions.len() != references.len() {
        bail!(
            "{} has {} tag sequences but {} has {}: one line each per example",
            predictions_path.display(),
            predictions.len(),
            references_path.display(),
            references.len()
        );
    }
    if predictions.is_empty() {
        bail!("{} has no tag sequences", predictions_path.display());
    }
    // The strict mode without a scheme reads the references' scheme, as seqeval detects it:
    // known here, a tag outside it is reported with its file and line. (When detection
    // fails, scoring reports why.)
    let mut parsed = parsed;
    if parsed.strict && parsed.scheme.is_none() {
        parsed.scheme =
            ferroformer::metrics::seqeval::detect_scheme(&references, parsed.suffix).ok();
    }
    for (i, (p, r)) in predictions.iter().zip(&references).enumerate() {
        if p.len() != r.len() {
            bail!(
                "{}:{line}: {} tags, but line {line} of {} has {}: a prediction has one tag per \
                 reference tag",
                predictions_path.display(),
                p.len(),
                references_path.display(),
                r.len(),
                line = i + 1
            );
        }
        for (path, tags) in [(predictions_path, p), (references_path, r)] {
            ferroformer::metrics::seqeval::check_sequence(tags, &parsed)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        }
    }
    let result = metrics::compute_sequences(metric, &predictions, &references, &options)
        .with_context(|| {
            format!(
                "scoring {} against {}",
                predictions_path.display(),
                references_path.display()
            )
        })?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_sequence_result(metric.name(), predictions.len(), &result);
    }
    Ok(())
}

/// One JSON list of strings per line.
fn read_tag_sequences(path: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let line_number = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            let value: Value = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{line_number}: not a JSON value ({e}); expected a list of tags such as \
                     [\"B-PER\", \"O\"]",
                    path.display()
                )
            })?;
            let Value::Array(items) = value else {
                bail!(
                    "{}:{line_number}: found {value}, expected a list of tags such as [\"B-PER\", \"O\"]",
                    path.display()
                );
            };
            items
                .into_iter()
                .enumerate()
                .map(|(k, item)| match item {
                    Value::String(tag) => Ok(tag),
                    other => bail!(
                        "{}:{line_number}: tag {} is {other}, expected a string",
                        path.display(),
                        k + 1
                    ),
                })
                .collect()
        })
        .collect()
}

/// The overall scores, then one row per entity type.
fn print_sequence_result(metric: &str, examples: usize, result: &Value) {
    println!("{metric} over {examples} sequences");
    let Value::Object(map) = result else {
        return;
    };
    let overall: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !v.is_object()).collect();
    let key_width = overall.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in overall {
        println!(
            "  {key:<key_width$}  {:.6}",
            value.as_f64().unwrap_or(f64::NAN)
        );
    }
    let types: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| v.is_object()).collect();
    if types.is_empty() {
        return;
    }
    let width = types.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(4);
    println!(
        "  {:<width$}  {:>9}  {:>9}  {:>9}  {:>6}",
        "type", "precision", "recall", "f1", "number"
    );
    for (name, scores) in types {
        let f = |k: &str| scores[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  {name:<width$}  {:>9.6}  {:>9.6}  {:>9.6}  {:>6}",
            f("precision"),
            f("recall"),
            f("f1"),
            scores["number"]
        );
    }
}

/// The predictions file's texts, one string per line.
fn read_predictions(args: &EvaluateArgs) -> anyhow::Result<Vec<String>> {
    let path = predictions_path(args)?;
    read_entries(path, format_of(path, args.format.as_deref())?)?
        .into_iter()
        .enumerate()
        .map(|(i, e)| match e {
            Entry::One(text) => Ok(text),
            Entry::Many(_) => bail!(
                "{}:{}: a prediction is one string, found a list",
                path.display(),
                i + 1
            ),
        })
        .collect()
}

/// `--predictions` (clap requires it unless --task is given).
fn predictions_path(args: &EvaluateArgs) -> anyhow::Result<&Path> {
    args.predictions
        .as_deref()
        .context("--predictions FILE is required")
}

/// `evaluate --task`: a pipeline run over labelled data, then scored.
fn evaluate_task(args: &EvaluateArgs, task: &str) -> anyhow::Result<()> {
    for (set, flag) in [
        (args.max_length.is_some(), "--max-length"),
        (args.no_start_token, "--no-start-token"),
        (args.format.is_some(), "--format"),
    ] {
        if set {
            bail!("{flag} is not an option of evaluate --task");
        }
    }
    let (Some(model), Some(data)) = (args.model.as_deref(), args.data.as_deref()) else {
        bail!("evaluate --task needs --model and --data");
    };
    let result = crate::evaluate_task::evaluate(crate::evaluate_task::TaskEvaluation {
        model,
        task,
        data,
        metrics: &args.task_metrics,
        text_column: &args.text_column,
        label_column: &args.label_column,
        question_column: &args.question_column,
        context_column: &args.context_column,
        answers_column: &args.answers_column,
        tokens_column: &args.tokens_column,
        tags_column: &args.tags_column,
        confusion_matrix: args.confusion_matrix.as_ref(),
        batch_size: args.batch_size,
        device: &args.device,
        options: metric_options(args),
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_task_result(&result);
    }
    Ok(())
}

fn print_task_result(result: &Value) {
    println!(
        "{} of {} on {} ({} examples)",
        result["task"].as_str().unwrap_or_default(),
        result["model"].as_str().unwrap_or_default(),
        result["data"].as_str().unwrap_or_default(),
        result["examples"]
    );
    if let Value::Object(map) = &result["metrics"] {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in map {
            match (value.as_f64(), value) {
                (Some(x), _) => println!("  {key:<width$}  {x:.6}"),
                // seqeval's per-type scores.
                (None, Value::Object(inner)) => {
                    let cells: Vec<String> = inner
                        .iter()
                        .map(|(k, v)| match v.as_f64() {
                            Some(x) if v.is_f64() => format!("{k} {x:.6}"),
                            _ => format!("{k} {v}"),
                        })
                        .collect();
                    println!("  {key:<width$}  {}", cells.join("  "));
                }
                (None, _) => println!("  {key:<width$}  {value}"),
            }
        }
    }
    if let (Some(labels), Some(rows)) = (
        result["labels"].as_array(),
        result["confusion_matrix"].as_array(),
    ) {
        println!("  confusion matrix (rows: true label, columns: predicted)");
        let names: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(6);
        println!(
            "    {:<width$}  {}",
            "",
            names
                .iter()
                .map(|n| format!("{n:>width$}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (name, row) in names.iter().zip(rows) {
            let cells: Vec<String> = row
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{:>width$}", c.to_string()))
                .collect();
            println!("    {name:<width$}  {}", cells.join(" "));
        }
    }
}

/// The name of the metric that scores texts with a model rather than against references.
const PERPLEXITY: &str = "perplexity";

/// `evaluate`'s `perplexity`: each text tokenized without special tokens, truncated to
/// `--max-length` (start token included), the BOS put in front, and scored on its own.
fn perplexity(args: &EvaluateArgs) -> anyhow::Result<()> {
    let Some(model) = args.model.as_deref() else {
        bail!("{PERPLEXITY} scores texts with a causal language model: give it with --model");
    };
    if let Some(path) = &args.references {
        bail!(
            "{PERPLEXITY} takes no references (found --references {}): it scores the texts \
             of --predictions",
            path.display()
        );
    }
    let set = metric_options(args).set_options();
    if let Some(option) = set.first() {
        bail!(
            "{} is not an option of {PERPLEXITY}; it takes --model, --max-length and \
             --no-start-token",
            metrics::flag_name(option)
        );
    }
    let texts = read_predictions(args)?;
    if texts.is_empty() {
        bail!(
            "{} has no texts to score",
            predictions_path(args)?.display()
        );
    }
    let lm = crate::device_arg::load_language_model(model, &args.device)?;
    let start_token = if args.no_start_token {
        None
    } else {
        Some(lm.tokenizer.bos_token_id().with_context(|| {
            format!(
                "`{model}` has no BOS token to put in front of each text; use \
                 --no-start-token (the first token of each text is then not scored)"
            )
        })?)
    };
    let keep = match args.max_length {
        Some(0) => bail!("--max-length must be at least 1"),
        Some(n) => Some(n - usize::from(start_token.is_some())),
        None => None,
    };
    let ids = texts
        .iter()
        .map(|text| {
            let mut ids = lm.tokenizer.encode(text, false)?;
            if let Some(keep) = keep {
                ids.truncate(keep);
            }
            Ok(ids)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let result = ferroformer::generation::text_perplexities(lm.decoder(), &ids, start_token)
        .with_context(|| {
            format!(
                "scoring {}",
                args.predictions
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )
        })?;
    let result = serde_json::to_value(&result)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_result(PERPLEXITY, texts.len(), &result);
    }
    Ok(())
}

fn print_result(metric: &str, examples: usize, result: &Value) {
    println!("{metric} over {examples} examples");
    if let Value::Object(map) = result {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in map {
            let shown = match value {
                Value::Number(n) if n.is_f64() => format!("{:.6}", n.as_f64().unwrap_or(f64::NAN)),
                Value::Array(items) => items
                    .iter()
                    .map(|v| match v.as_f64() {
                        Some(x) if v.is_f64() => format!("{x:.4}"),
                        _ => v.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.to_string(),
            };
            println!("  {key:<width$}  {shown}");
        }
    }
}
