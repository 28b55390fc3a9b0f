//! `ferroformer train classifier` and `ferroformer train token-classifier`: fine-tune a
//! sequence- or token-classification head on a pretrained encoder, with a progress bar on
//! stderr. Both run the same loop and report the same events.

use std::path::PathBuf;

use anyhow::bail;
use ferroformer::train::classifier::{train_classifier, ClassifierConfig};
use ferroformer::train::finetune::{FineTuneEvent, FineTuneRun};
use ferroformer::train::token_classifier::{train_token_classifier, TokenClassifierConfig};

/// Fine-tune a pretrained encoder (BERT, DistilBERT, RoBERTa, …) for sequence
/// classification on a labelled CSV, TSV or JSONL file.
///
/// Every config key is also a flag; flags override `--config`:
/// --model M --data F [--eval-data F | --val-fraction X] --text-column text
/// [--text-pair-column C] --label-column label --out DIR --epochs 3 --lr 5e-5
/// --batch-size 8 --max-length N --weight-decay 0 --warmup-ratio 0 --max-grad-norm 1
/// --eval-strategy epoch|steps|no --eval-steps N --save-steps N --metric accuracy,f1
/// --average binary|micro|macro|weighted --seed 42 --freeze-base | --train-last-layers N
/// --early-stopping-patience N --log-every 10 --adam-beta1 --adam-beta2 --adam-epsilon.
///
/// DIR receives the best model (by the first metric) as a Hugging Face checkpoint,
/// `checkpoint/` (resume state), `log.jsonl`, `loss.png` and `metric.png`.
#[derive(clap::Args)]
pub struct TrainClassifierArgs {
    #[command(flatten)]
    args: FineTuneArgs,
}

/// Fine-tune a pretrained encoder (BERT, DistilBERT, RoBERTa, …) for token classification
/// (NER, POS tagging) on tagged sentences.
///
/// Data: CoNLL style (one `word … TAG` per line, the tag last, a blank line between
/// sentences, `-DOCSTART-` skipped) or JSONL with a list of words and a list of tags (names
/// or ids) per line. A word's tag goes on its first sub-token; the others are not scored.
///
/// Every config key is also a flag; flags override `--config`:
/// --model M --data F [--eval-data F | --val-fraction X] --tokens-column tokens
/// --tags-column tags --out DIR --epochs 3 --lr 5e-5 --batch-size 8 --max-length N
/// --weight-decay 0 --warmup-ratio 0 --max-grad-norm 1 --eval-strategy epoch|steps|no
/// --eval-steps N --save-steps N --metric f1,precision,recall,accuracy,loss --seed 42
/// --freeze-base | --train-last-layers N --early-stopping-patience N --log-every 10.
///
/// DIR receives the best model (by the first metric; f1 is seqeval's entity F1) as a
/// Hugging Face checkpoint, `checkpoint/` (resume state), `log.jsonl`, `loss.png` and
/// `metric.png`.
#[derive(clap::Args)]
pub struct TrainTokenClassifierArgs {
    #[command(flatten)]
    args: FineTuneArgs,
}

/// The arguments both fine-tuning commands take.
#[derive(clap::Args)]
struct FineTuneArgs {
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
    device: crate::device_arg::DeviceArgs,
    /// Config keys as flags: --model DIR --data train.csv --epochs 3 ...
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "--KEY VALUE"
    )]
    settings: Vec<String>,
}

/// `--key value` pairs from trailing arguments: several values after one key are joined
/// with commas (`--data a.txt b.txt`), a key with no value is `true` (`--freeze-base`),
/// `--key=value` is accepted.
pub fn parse_settings(settings: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < settings.len() {
        let flag = &settings[i];
        let Some(key) = flag.strip_prefix("--") else {
            bail!("expected a --key flag, found `{flag}`");
        };
        match key.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                let mut values = Vec::new();
                while i + 1 < settings.len() && !settings[i + 1].starts_with("--") {
                    i += 1;
                    values.push(settings[i].clone());
                }
                let value = if values.is_empty() {
                    "true".to_string()
                } else {
                    values.join(",")
                };
                out.push((key.to_string(), value));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Runs `train classifier`.
pub fn run(args: TrainClassifierArgs) -> anyhow::Result<()> {
    let args = args.args;
    let mut cfg = match &args.config {
        Some(path) => ClassifierConfig::from_toml_file(path)?,
        None => ClassifierConfig::default(),
    };
    for (key, value) in parse_settings(&args.settings)? {
        cfg.set(&key, &value)?;
    }
    run_with(&args, |stop, on_event, device| {
        Ok(train_classifier(&cfg, args.resume, stop, on_event, device)?)
    })
}

/// Runs `train token-classifier`.
pub fn run_token(args: TrainTokenClassifierArgs) -> anyhow::Result<()> {
    let args = args.args;
    let mut cfg = match &args.config {
        Some(path) => TokenClassifierConfig::from_toml_file(path)?,
        None => TokenClassifierConfig::default(),
    };
    for (key, value) in parse_settings(&args.settings)? {
        cfg.set(&key, &value)?;
    }
    run_with(&args, |stop, on_event, device| {
        Ok(train_token_classifier(
            &cfg,
            args.resume,
            stop,
            on_event,
            device,
        )?)
    })
}

/// Where a run's events go.
type EventSink<'a> = dyn FnMut(&FineTuneEvent) + 'a;

/// Runs a fine-tuning with a progress bar (or JSON lines with `--json`) and the final
/// report on stderr.
fn run_with(
    args: &FineTuneArgs,
    train: impl FnOnce(
        &std::sync::atomic::AtomicBool,
        &mut EventSink<'_>,
        &candle_core::Device,
    ) -> anyhow::Result<FineTuneRun>,
) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let stop = crate::progress::interrupt_flag()?;
    let progress = crate::progress::TrainingProgress::new(0, args.json)?;
    let bar = &progress.bar;
    let say = |msg: String| progress.say(msg);
    let json = args.json;
    let mut on_event = |e: &FineTuneEvent| {
        if json {
            if let Ok(s) = serde_json::to_string(e) {
                println!("{s}");
            }
        }
        match e {
            FineTuneEvent::Started {
                start_step,
                max_steps,
                parameters,
                trainable,
                train_examples,
                eval_examples,
                labels,
                ..
            } => {
                bar.set_length(*max_steps);
                bar.set_position(*start_step);
                say(format!(
                    "model: {parameters} parameters, {trainable} trained; data: {train_examples} training / {eval_examples} evaluation examples; labels {labels:?}"
                ));
            }
            FineTuneEvent::Step {
                step,
                epoch,
                loss,
                lr,
                examples_per_sec,
                ..
            } => {
                bar.set_position(*step);
                let msg = format!(
                    "epoch {epoch:.2}  loss {loss:.4}  lr {lr:.2e}  {examples_per_sec:.1} ex/s"
                );
                if !progress.interactive() {
                    say(format!("step {step}: {msg}"));
                }
                bar.set_message(msg);
            }
            FineTuneEvent::Eval {
                step,
                metrics,
                best,
                ..
            } => {
                let values: Vec<String> =
                    metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
                let mark = if *best { "  (best, saved)" } else { "" };
                say(format!("step {step}: eval {}{mark}", values.join(", ")));
            }
            FineTuneEvent::Saved { .. } => {}
            FineTuneEvent::EarlyStopped { step } => {
                say(format!("step {step}: early stopping (no improvement)"));
            }
        }
    };
    let run = train(&stop, &mut on_event, &device)?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::json!({ "event": "finished", "run": run }));
    }
    if let Some(best) = &run.best {
        eprintln!(
            "best {} {:.4} at step {}; model saved in {}",
            best.metric,
            best.value,
            best.step,
            run.out.display()
        );
    } else {
        eprintln!("model saved in {}", run.out.display());
    }
    Ok(())
}
