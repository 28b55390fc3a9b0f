//! `ferroformer evaluate --model M --task TASK --data F --metric a,b`: runs a task pipeline
//! over a labelled file and scores its answers with `ferroformer::metrics`.
//!
//! - text-classification: the best label of each text against the label column
//!   (accuracy, precision, recall, f1; default accuracy,f1), with the confusion matrix in the
//!   result and, with `--confusion-matrix FILE`, as a PNG;
//! - question-answering: the best answer span against the reference answers (`squad`:
//!   exact match and F1 ×100; `exact_match`);
//! - token-classification (`ner`): tagged sentences (CoNLL or JSON Lines, as
//!   `train token-classifier` reads them) scored with `seqeval`, as `evaluate`'s
//!   token-classification evaluator does: the words joined by spaces, every token labelled
//!   (`ignore_labels=[]`, no aggregation), each word taking the label of the token that
//!   starts where the word starts (`O` when none does).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ferroformer::metrics::{self, Metric, MetricOptions};
use ferroformer::pipelines::{
    pipeline_with, ClassificationFunction, Pipeline, PipelineConfig, PipelineInput, Task,
    TaskOptions,
};
use ferroformer::train::labelled_data::{read_examples, Columns};
use ferroformer::train::token_classifier::read_tagged;
use serde_json::{json, Value};

use crate::device_arg::DeviceArgs;

/// What `evaluate --task` needs besides the metric options.
pub struct TaskEvaluation<'a> {
    pub model: &'a str,
    pub task: &'a str,
    pub data: &'a Path,
    pub metrics: &'a [String],
    pub text_column: &'a str,
    pub label_column: &'a str,
    pub question_column: &'a str,
    pub context_column: &'a str,
    pub answers_column: &'a str,
    pub tokens_column: &'a str,
    pub tags_column: &'a str,
    pub confusion_matrix: Option<&'a PathBuf>,
    pub batch_size: usize,
    pub device: &'a DeviceArgs,
    pub options: MetricOptions,
}

/// The tasks `evaluate --task` runs, with their metrics and the default ones.
const TASKS: &[(&str, &[&str], &str)] = &[
    (
        "text-classification",
        &["accuracy", "precision", "recall", "f1"],
        "accuracy,f1",
    ),
    ("question-answering", &["squad", "exact_match"], "squad"),
    ("token-classification", &["seqeval"], "seqeval"),
];

/// Runs the evaluation and returns the result object printed by the command.
pub fn evaluate(e: TaskEvaluation) -> anyhow::Result<Value> {
    if matches!(
        e.task,
        "summarization" | "translation" | "text2text-generation"
    ) || e.task.starts_with("translation_")
    {
        bail!(
            "evaluate --task {}: there is no encoder-decoder pipeline yet; evaluate --task runs {}",
            e.task,
            TASKS.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
        );
    }
    let task = Task::from_name(e.task)?;
    let Some(&(name, allowed, default)) = TASKS.iter().find(|t| t.0 == task.name()) else {
        bail!(
            "evaluate --task runs {}; {} is not one of them{}",
            TASKS.iter().map(|t| t.0).collect::<Vec<_>>().join(", "),
            task.name(),
            ""
        );
    };
    let wanted: Vec<String> = if e.metrics.is_empty() {
        default.split(',').map(String::from).collect()
    } else {
        e.metrics.to_vec()
    };
    let metrics: Vec<Metric> = wanted
        .iter()
        .map(|m| {
            let metric: Metric = m.parse()?;
            if !allowed.contains(&metric.name()) {
                bail!("--metric {m}: {name} is scored with {}", allowed.join(", "));
            }
            Ok(metric)
        })
        .collect::<anyhow::Result<_>>()?;
    for option in e.options.set_options() {
        if !metrics.iter().any(|m| m.options().contains(&option)) {
            bail!(
                "{} is not an option of {}",
                metrics::flag_name(option),
                wanted.join(", ")
            );
        }
    }
    if e.confusion_matrix.is_some() && name != "text-classification" {
        bail!("--confusion-matrix is for text-classification, not {name}");
    }
    let config = PipelineConfig {
        batch_size: e.batch_size,
        device: e.device.open()?,
        ..PipelineConfig::default()
    };
    let pipe = pipeline_with(name, e.model, &config)
        .with_context(|| format!("loading {} for {name}", e.model))?;
    let mut tagged = None;
    let (predictions, references, extra) = match &pipe {
        Pipeline::TextClassification(p) => classify(p, &e)?,
        Pipeline::QuestionAnswering(_) => answer(&pipe, &e)?,
        Pipeline::TokenClassification(p) => {
            tagged = Some(tag(p, &e)?);
            (Vec::new(), Vec::new(), json!({}))
        }
        _ => unreachable!("TASKS lists only the tasks matched here"),
    };
    let examples = tagged.as_ref().map_or(predictions.len(), |(p, _)| p.len());
    let labels = extra["labels"].as_array().cloned().unwrap_or_default();
    let mut scores = serde_json::Map::new();
    for metric in metrics {
        let mut options = options_for(metric, &e.options);
        // Binary precision/recall/F1 count the label with id 1 as positive, as
        // `transformers`' recipes do with `pos_label=1` on label ids.
        if metric.options().contains(&"pos_label")
            && options.pos_label.is_none()
            && matches!(options.average.as_deref(), None | Some("binary"))
            && labels.len() == 2
        {
            options.pos_label = labels[1].as_str().map(String::from);
        }
        let result = match &tagged {
            Some((p, r)) => metrics::compute_sequences(metric, p, r, &options),
            None => metrics::compute(metric, &predictions, &references, &options),
        }
        .with_context(|| format!("scoring {} with {}", e.data.display(), metric.name()))?;
        match result {
            Value::Object(map) => scores.extend(map),
            other => {
                scores.insert(metric.name().to_string(), other);
            }
        }
    }
    let mut out = json!({
        "task": name,
        "model": e.model,
        "data": e.data.display().to_string(),
        "examples": examples,
        "metrics": scores,
    });
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    Ok(out)
}

/// The options of `all` that `metric` takes (the others belong to the other metrics asked
/// for).
fn options_for(metric: Metric, all: &MetricOptions) -> MetricOptions {
    let mut o = MetricOptions::default();
    match metric {
        Metric::Precision | Metric::Recall | Metric::F1 => {
            o.average = all.average.clone();
            o.pos_label = all.pos_label.clone();
        }
        Metric::Seqeval => {
            o.scheme = all.scheme.clone();
            o.mode = all.mode.clone();
            o.suffix = all.suffix;
            o.zero_division = all.zero_division.clone();
        }
        Metric::ExactMatch => {
            o.regexes_to_ignore = all.regexes_to_ignore.clone();
            o.ignore_case = all.ignore_case;
            o.ignore_punctuation = all.ignore_punctuation;
            o.ignore_numbers = all.ignore_numbers;
        }
        _ => {}
    }
    o
}

/// Predictions and references as the metrics take them, and what else the result shows.
type Scored = (Vec<String>, Vec<Vec<String>>, Value);

fn classify(
    p: &ferroformer::pipelines::TextClassificationPipeline,
    e: &TaskEvaluation,
) -> anyhow::Result<Scored> {
    let columns = Columns {
        text: e.text_column.to_string(),
        text_pair: None,
        label: e.label_column.to_string(),
    };
    let examples = read_examples(e.data, &columns)?;
    if examples.is_empty() {
        bail!("{} holds no examples", e.data.display());
    }
    let labels = p.labels();
    // A gold label is a label name of the model, or a label id written as a number.
    let gold = examples
        .iter()
        .map(|x| {
            if let Some(i) = labels.iter().position(|l| *l == x.label) {
                return Ok(i);
            }
            match x.label.parse::<usize>() {
                Ok(i) if i < labels.len() => Ok(i),
                _ => bail!(
                    "{}: line {}: column `{}`: label `{}` is not one of the model's labels ({}) \
                     nor a label id below {}",
                    x.file.display(),
                    x.line,
                    e.label_column,
                    x.label,
                    labels.join(", "),
                    labels.len()
                ),
            }
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let texts: Vec<&str> = examples.iter().map(|x| x.text.as_str()).collect();
    let scores = p.scores(&texts, ClassificationFunction::Softmax)?;
    let predicted: Vec<usize> = scores
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map_or(0, |(i, _)| i)
        })
        .collect();
    let mut matrix = vec![vec![0usize; labels.len()]; labels.len()];
    for (&t, &q) in gold.iter().zip(&predicted) {
        matrix[t][q] += 1;
    }
    if let Some(path) = e.confusion_matrix {
        ferroformer::viz::confusion_matrix_png(path, &matrix, 64)?;
        eprintln!(
            "wrote {} (rows: true label, columns: predicted; {})",
            path.display(),
            labels.join(", ")
        );
    }
    Ok((
        predicted.iter().map(|&i| labels[i].clone()).collect(),
        gold.iter().map(|&i| vec![labels[i].clone()]).collect(),
        json!({ "labels": labels, "confusion_matrix": matrix }),
    ))
}

/// Predicted and reference tag sequences, one of each per sentence.
type TagSequences = (Vec<Vec<String>>, Vec<Vec<String>>);

/// `evaluate`'s token-classification evaluator: each sentence's words joined by one space
/// and labelled token by token by the pipeline; a word takes the label of the token that
/// starts at its first character, `O` when the first token there starts later. Returns the
/// predicted and the reference tags (ids among the references become the model's label
/// names, as `evaluate` maps a `ClassLabel` column).
fn tag(
    p: &ferroformer::pipelines::TokenClassificationPipeline,
    e: &TaskEvaluation,
) -> anyhow::Result<TagSequences> {
    use ferroformer::pipelines::{AggregationStrategy, TokenClassificationOptions};
    let sentences = read_tagged(e.data, e.tokens_column, e.tags_column)?;
    let labels = p.labels();
    let references = sentences
        .iter()
        .map(|s| {
            s.tags
                .iter()
                .zip(&s.lines)
                .map(|(t, &line)| {
                    if labels.contains(t) {
                        return Ok(t.clone());
                    }
                    match t.parse::<usize>() {
                        Ok(id) if id < labels.len() => Ok(labels[id].clone()),
                        Ok(id) => bail!(
                            "{}: line {line}: tag id {id} is not below the model's {} labels",
                            s.file.display(),
                            labels.len()
                        ),
                        // A tag the model does not have is still a tag to score against.
                        Err(_) => Ok(t.clone()),
                    }
                })
                .collect::<anyhow::Result<Vec<String>>>()
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let texts: Vec<String> = sentences.iter().map(|s| s.tokens.join(" ")).collect();
    // An empty sentence has no words to label; the pipeline is not asked about it.
    let asked: Vec<&str> = texts
        .iter()
        .filter(|t| !t.is_empty())
        .map(String::as_str)
        .collect();
    let options = TokenClassificationOptions {
        aggregation: AggregationStrategy::None,
        ignore_labels: Some(Vec::new()),
    };
    let mut labelled = p.run(&asked, &options)?.into_iter();
    let mut predictions = Vec::with_capacity(sentences.len());
    for (s, text) in sentences.iter().zip(&texts) {
        if text.is_empty() {
            predictions.push(Vec::new());
            continue;
        }
        let tokens = labelled
            .next()
            .context("the pipeline returned fewer results than texts")?;
        let mut tags = Vec::with_capacity(s.tokens.len());
        let (mut start, mut t) = (0usize, 0usize);
        for (k, word) in s.tokens.iter().enumerate() {
            while tokens.get(t).is_some_and(|x| x.start < start) {
                t += 1;
            }
            let Some(token) = tokens.get(t) else {
                bail!(
                    "{}: line {}: no token of the model's input starts at or after word {} \
                     (`{word}`): the sentence is longer than the model takes, which \
                     `evaluate` cannot score either",
                    s.file.display(),
                    s.lines.get(k).copied().unwrap_or_default(),
                    k + 1
                );
            };
            tags.push(if token.start > start {
                "O".to_string()
            } else {
                token.entity.clone().unwrap_or_else(|| "O".into())
            });
            // The next word starts after this one and the joining space (in characters).
            start += word.chars().count() + 1;
        }
        predictions.push(tags);
    }
    Ok((predictions, references))
}

/// The answer texts of a reference: a list of strings, a string, or SQuAD's
/// `{"text": [...], "answer_start": [...]}`.
fn answer_texts(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|v| v.as_str().map(String::from)).collect(),
        Value::Object(map) => map.get("text").and_then(answer_texts),
        _ => None,
    }
}

fn answer(pipe: &Pipeline, e: &TaskEvaluation) -> anyhow::Result<Scored> {
    let text = std::fs::read_to_string(e.data)
        .with_context(|| format!("cannot read {}", e.data.display()))?;
    let field = |record: &Value, column: &str, line: usize| -> anyhow::Result<String> {
        record
            .get(column)
            .and_then(Value::as_str)
            .map(String::from)
            .with_context(|| {
                format!(
                    "{}: line {line}: column `{column}` is missing or not a string",
                    e.data.display()
                )
            })
    };
    let (mut inputs, mut references) = (Vec::new(), Vec::new());
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let record: Value = serde_json::from_str(raw).with_context(|| {
            format!(
                "{}: line {line}: not a JSON object; question-answering data is JSON Lines \
                 with `{}`, `{}` and `{}`",
                e.data.display(),
                e.question_column,
                e.context_column,
                e.answers_column
            )
        })?;
        let question = field(&record, e.question_column, line)?;
        let context = field(&record, e.context_column, line)?;
        let answers = record
            .get(e.answers_column)
            .and_then(answer_texts)
            .filter(|a| !a.is_empty())
            .with_context(|| {
                format!(
                    "{}: line {line}: column `{}` must hold the reference answers: a string, \
                     a list of strings, or {{\"text\": [...]}}",
                    e.data.display(),
                    e.answers_column
                )
            })?;
        inputs.push(PipelineInput::question(question, context));
        references.push(answers);
    }
    if inputs.is_empty() {
        bail!("{} holds no examples", e.data.display());
    }
    let outputs = pipe.run(&inputs, &TaskOptions::default())?;
    let predictions = outputs
        .iter()
        .map(|o| {
            let best = if o.is_array() { &o[0] } else { o };
            best["answer"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    Ok((predictions, references, json!({})))
}
