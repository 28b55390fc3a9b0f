//! Fine-tuning sequence classifiers: the training steps against PyTorch + `transformers`
//! (fixtures from scripts/reference/classifier_fixtures.py), the saved checkpoint against the
//! model that was trained, resume, frozen parameters and bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use ferroformer::pipelines::text_classification::{
    ClassificationFunction, TextClassificationPipeline,
};
use ferroformer::pipelines::PipelineConfig;
use ferroformer::train::classifier::{train_classifier, ClassifierConfig};
use ferroformer::train::finetune::{
    Batch, FineTuneConfig, FineTuneEvent as ClassifierEvent, FineTuneModel, FineTuneRun, FineTuner,
    HeadKind, Tokenized,
};
use ferroformer::train::optim::{linear_schedule, AdamWConfig};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn labels() -> Vec<String> {
    ["neg", "neu", "pos"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn u32s(t: &Tensor) -> Tensor {
    t.to_dtype(DType::U32).unwrap()
}

fn fixture_batch(io: &HashMap<String, Tensor>, prefix: &str) -> Batch {
    Batch {
        input_ids: u32s(&io[&format!("{prefix}.input_ids")]),
        attention_mask: u32s(&io[&format!("{prefix}.attention_mask")]),
        token_type_ids: Some(u32s(&io[&format!("{prefix}.token_type_ids")])),
        labels: u32s(&io[&format!("{prefix}.labels")]),
        label_positions: None,
    }
}

/// Three AdamW steps (warmup + linear decay, weight decay, clipping) on fixed batches give
/// PyTorch's losses, parameters and logits.
#[test]
fn three_adamw_steps_match_pytorch() {
    let dir = fixtures().join("classifier");
    let io = candle_core::safetensors::load(dir.join("parity.safetensors"), &Device::Cpu).unwrap();
    let model = FineTuneModel::from_pretrained(
        HeadKind::Sequence,
        &dir.join("bert-init"),
        &labels(),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut tuner = FineTuner::new(model, |_, _| true, adam, 1.0).unwrap();
    let eval = fixture_batch(&io, "eval");
    let before = tuner.model.logits(&eval, false).unwrap();
    let d = max_abs_diff(&before, &io["logits_before"]);
    assert!(d < 1e-4, "logits before training differ by {d}");

    let losses = io["losses"].to_vec1::<f64>().unwrap();
    let lrs = io["lrs"].to_vec1::<f64>().unwrap();
    for (i, (&want_loss, &want_lr)) in losses.iter().zip(&lrs).enumerate() {
        let lr = linear_schedule(i as u64, 1e-3, 1, 3);
        assert!(
            (lr - want_lr).abs() < 1e-12,
            "step {i}: lr {lr} vs {want_lr}"
        );
        let stats = tuner
            .step(&fixture_batch(&io, &format!("batch{i}")), lr)
            .unwrap();
        assert!(
            (stats.loss - want_loss).abs() < 1e-4,
            "step {i}: loss {} vs PyTorch {want_loss}",
            stats.loss
        );
    }
    let after = tuner.model.logits(&eval, false).unwrap();
    let d = max_abs_diff(&after, &io["logits_after"]);
    assert!(d < 1e-4, "logits after training differ by {d}");
    // Training moved the logits by far more than the tolerance.
    assert!(max_abs_diff(&after, &before) > 1e-2);
    let params = tuner.model.hf_tensors();
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with("param.")) {
        let name = &key["param.".len()..];
        let d = max_abs_diff(&params[name], want);
        assert!(d < 1e-4, "{name} differs from PyTorch's by {d}");
    }
}

fn config(model: &Path, out: &Path) -> ClassifierConfig {
    let dir = fixtures().join("classifier");
    ClassifierConfig {
        common: FineTuneConfig {
            model: model.display().to_string(),
            data: dir.join("train.csv"),
            eval_data: Some(dir.join("eval.jsonl")),
            out: out.to_path_buf(),
            epochs: 3,
            lr: 1e-3,
            batch_size: 4,
            weight_decay: 0.01,
            warmup_ratio: 0.2,
            metric: vec!["accuracy".into(), "f1".into()],
            seed: 7,
            log_every: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn run(cfg: &ClassifierConfig) -> FineTuneRun {
    train_classifier(
        cfg,
        false,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap()
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    assert_eq!(a.len(), b.len());
    for (k, t) in a {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(x == y, "{k} differs");
    }
}

/// The saved directory is a Hugging Face checkpoint that our pipeline runs with the trained
/// model's logits, for BERT, DistilBERT and RoBERTa (heads new, seeded).
#[test]
fn saved_checkpoint_runs_in_the_pipeline_with_the_trained_logits() {
    let cases = [
        (
            "bert-base",
            "BertForSequenceClassification",
            vec![
                "bert.pooler.dense.weight",
                "classifier.weight",
                "classifier.bias",
            ],
        ),
        (
            "distilbert-base",
            "DistilBertForSequenceClassification",
            vec![
                "distilbert.embeddings.word_embeddings.weight",
                "pre_classifier.weight",
                "classifier.weight",
            ],
        ),
        (
            "roberta-base",
            "RobertaForSequenceClassification",
            vec![
                "roberta.encoder.layer.0.attention.self.query.weight",
                "classifier.dense.weight",
                "classifier.out_proj.weight",
            ],
        ),
    ];
    for (family, arch, names) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let base = fixtures().join("encoders").join(family);
        let mut cfg = config(&base, tmp.path());
        cfg.common.eval_strategy = "no".into();
        cfg.common.epochs = 2;
        let report = run(&cfg);
        assert_eq!(report.steps, 6);
        let out = tmp.path();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], arch);
        assert_eq!(config["id2label"]["2"], "pos");
        assert_eq!(config["label2id"]["neg"], 0);
        assert_eq!(config["num_labels"], 3);
        assert_eq!(config["problem_type"], "single_label_classification");
        assert!(out.join("tokenizer.json").is_file());
        let saved = load(&out.join("model.safetensors"));
        for n in names {
            assert!(
                saved.contains_key(n),
                "{family}: no {n} in {:?}",
                saved.keys()
            );
        }

        // The trained parameters, as the resumable checkpoint holds them.
        let model =
            FineTuneModel::from_pretrained(HeadKind::Sequence, &base, &labels(), 0, &Device::Cpu)
                .unwrap();
        model
            .load_parameters(&out.join("checkpoint/model.safetensors"))
            .unwrap();
        let texts = [
            "A wonderful movie, I love the actors.",
            "The cat sat on the mat.",
        ];
        let tok = ferroformer::models::AutoTokenizer::from_dir(&base).unwrap();
        let pipe = TextClassificationPipeline::from_dir(out, &PipelineConfig::default()).unwrap();
        let scores = pipe.scores(&texts, ClassificationFunction::None).unwrap();
        for (text, got) in texts.iter().zip(scores) {
            let enc = tok.encode(text, &Default::default()).unwrap().remove(0);
            let rows = [&Tokenized {
                type_ids: enc.type_ids.clone(),
                ids: enc.ids,
                labels: vec![0],
            }];
            let want = model
                .logits(&model.batch(&rows, &Device::Cpu).unwrap(), false)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "{family}: pipeline {got:?} vs trained {want:?}"
                );
            }
        }
        // The head was trained: the pipeline's logits are not those of the initial model.
        let init =
            FineTuneModel::from_pretrained(HeadKind::Sequence, &base, &labels(), 7, &Device::Cpu)
                .unwrap();
        assert!(init.hf_tensors().iter().any(|(k, t)| {
            let s = &saved[k];
            (t - s)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 1e-3
        }));
    }
}

/// A run stopped after step 4 and resumed ends exactly as an uninterrupted run (dropout on:
/// bert-base has dropout 0.1); so does a run whose newer files were lost after a checkpoint
/// (killed between saves).
#[test]
fn stop_and_resume_equals_uninterrupted() {
    let base = fixtures().join("encoders/bert-base");
    let a = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, a.path());
    cfg.common.save_steps = 2;
    run(&cfg);

    let b = tempfile::tempdir().unwrap();
    let mut cfg_b = cfg.clone();
    cfg_b.common.out = b.path().to_path_buf();
    let stop = AtomicBool::new(false);
    let r = train_classifier(
        &cfg_b,
        false,
        &stop,
        &mut |e| {
            if let ClassifierEvent::Step { step: 4, .. } = e {
                stop.store(true, Ordering::SeqCst);
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.steps, 4);
    let r = train_classifier(
        &cfg_b,
        true,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.steps, 9);

    // Killed: the checkpoint of step 2 is restored under the files of a finished run.
    let c = tempfile::tempdir().unwrap();
    let mut cfg_c = cfg.clone();
    cfg_c.common.out = c.path().to_path_buf();
    let snapshot = tempfile::tempdir().unwrap();
    let mut copied = false;
    train_classifier(
        &cfg_c,
        false,
        &AtomicBool::new(false),
        &mut |e| {
            if let (ClassifierEvent::Saved { step: 2, .. }, false) = (e, copied) {
                for f in [
                    "model.safetensors",
                    "optimizer.safetensors",
                    "training_state.json",
                ] {
                    std::fs::copy(c.path().join("checkpoint").join(f), snapshot.path().join(f))
                        .unwrap();
                }
                copied = true;
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "training_state.json",
    ] {
        std::fs::copy(snapshot.path().join(f), c.path().join("checkpoint").join(f)).unwrap();
    }
    train_classifier(
        &cfg_c,
        true,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap();

    let log_a = std::fs::read_to_string(a.path().join("log.jsonl")).unwrap();
    assert_eq!(
        log_a
            .lines()
            .filter(|l| l.contains("eval_accuracy"))
            .count(),
        3
    );
    for other in [b.path(), c.path()] {
        for f in [
            "model.safetensors",
            "checkpoint/model.safetensors",
            "checkpoint/optimizer.safetensors",
        ] {
            assert_same_tensors(&load(&a.path().join(f)), &load(&other.join(f)));
        }
        assert_eq!(
            log_a,
            std::fs::read_to_string(other.join("log.jsonl")).unwrap()
        );
    }
}

/// `--freeze-base` leaves every base parameter bit-identical; `--train-last-layers 1`
/// leaves the embeddings and layer 0 so and trains layer 1.
#[test]
fn frozen_parameters_stay_bit_identical() {
    let base = fixtures().join("encoders/bert-base");
    let original = load(&base.join("model.safetensors"));
    let same = |saved: &HashMap<String, Tensor>, name: &str| {
        let a = saved[&format!("bert.{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = original[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        a == b
    };

    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, tmp.path());
    cfg.common.freeze_base = true;
    cfg.common.eval_strategy = "no".into();
    run(&cfg);
    let saved = load(&tmp.path().join("model.safetensors"));
    for name in original.keys() {
        assert!(same(&saved, name), "{name} changed under --freeze-base");
    }

    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, tmp.path());
    cfg.common.train_last_layers = Some(1);
    cfg.common.eval_strategy = "no".into();
    run(&cfg);
    let saved = load(&tmp.path().join("model.safetensors"));
    for name in original.keys() {
        let frozen = name.starts_with("embeddings.") || name.starts_with("encoder.layer.0.");
        assert_eq!(same(&saved, name), frozen, "{name}");
    }
}

/// Evaluations pick the best checkpoint by the first metric; early stopping ends the run.
#[test]
fn best_checkpoint_and_early_stopping() {
    let base = fixtures().join("classifier/bert-init");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, tmp.path());
    cfg.common.epochs = 20;
    cfg.common.lr = 0.0;
    cfg.common.eval_strategy = "steps".into();
    cfg.common.eval_steps = 3;
    cfg.common.early_stopping_patience = Some(2);
    // A learning rate of 0 is refused: nothing would be trained.
    let err = train_classifier(
        &cfg,
        false,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lr"), "{err}");
    cfg.common.lr = 1e-9;
    let r = run(&cfg);
    // Nothing improves after the first evaluation (step 3): stopped after two more.
    assert_eq!(r.steps, 9);
    let best = r.best.unwrap();
    assert_eq!(best.step, 3);
    assert_eq!(best.metric, "accuracy");
    assert!(tmp.path().join("loss.png").is_file() && tmp.path().join("metric.png").is_file());
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn error_of(cfg: &ClassifierConfig) -> String {
    train_classifier(
        cfg,
        false,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .expect_err("an error")
    .to_string()
}

#[test]
fn bad_input_errors_name_file_line_and_column() {
    let base = fixtures().join("classifier/bert-init");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, &tmp.path().join("run"));
    let good = fixtures().join("classifier/train.csv");

    cfg.common.data = write(tmp.path(), "nolabel.csv", "text,sentiment\nhello,pos\n");
    let e = error_of(&cfg);
    assert!(
        e.contains("nolabel.csv") && e.contains("line 1") && e.contains("`label`"),
        "{e}"
    );

    cfg.common.data = write(tmp.path(), "empty.csv", "text,label\nhello,pos\n\"bye\",\n");
    let e = error_of(&cfg);
    assert!(
        e.contains("empty.csv") && e.contains("line 3") && e.contains("`label` is empty"),
        "{e}"
    );

    cfg.common.data = write(
        tmp.path(),
        "num.jsonl",
        "{\"text\": \"a\", \"label\": \"pos\"}\n{\"text\": 5, \"label\": \"neg\"}\n",
    );
    let e = error_of(&cfg);
    assert!(
        e.contains("num.jsonl")
            && e.contains("line 2")
            && e.contains("`text`")
            && e.contains("expected a string"),
        "{e}"
    );

    cfg.common.data = good.clone();
    cfg.common.eval_data = Some(write(
        tmp.path(),
        "eval.jsonl",
        "{\"text\": \"a\", \"label\": \"pos\"}\n{\"text\": \"b\", \"label\": \"meh\"}\n",
    ));
    let e = error_of(&cfg);
    assert!(
        e.contains("eval.jsonl")
            && e.contains("line 2")
            && e.contains("`meh`")
            && e.contains("`label`"),
        "{e}"
    );

    cfg.common.eval_data = Some(write(tmp.path(), "nolabel.jsonl", "{\"text\": \"a\"}\n"));
    let e = error_of(&cfg);
    assert!(
        e.contains("nolabel.jsonl") && e.contains("line 1") && e.contains("`label`"),
        "{e}"
    );

    cfg.common.eval_data = None;
    cfg.common.metric = vec!["bleu".into()];
    let e = error_of(&cfg);
    assert!(e.contains("metric") && e.contains("bleu"), "{e}");
    // Nothing was written for any of these.
    assert!(!tmp.path().join("run").exists());
}

/// Sentence pairs from a TSV file with integer labels, evaluated on a held-out fraction.
#[test]
fn pairs_with_integer_labels_and_a_validation_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tsv = String::from("premise\thypothesis\tlabel\n");
    for i in 0..12 {
        let (a, b) = if i % 2 == 0 {
            ("The cat sat on the mat.", "A cat is on a mat.")
        } else {
            ("Paris is in France.", "The dog chased the ball.")
        };
        tsv.push_str(&format!("{a} {i}\t{b}\t{}\n", (i % 2) * 10));
    }
    let data = write(tmp.path(), "pairs.tsv", &tsv);
    let base = fixtures().join("encoders/bert-base");
    let out = tmp.path().join("run");
    let cfg = ClassifierConfig {
        common: FineTuneConfig {
            model: base.display().to_string(),
            data,
            val_fraction: 0.25,
            out: out.clone(),
            epochs: 1,
            batch_size: 4,
            ..Default::default()
        },
        text_column: "premise".into(),
        text_pair_column: Some("hypothesis".into()),
        ..Default::default()
    };
    let mut examples = (0, 0);
    train_classifier(
        &cfg,
        false,
        &AtomicBool::new(false),
        &mut |e| {
            if let ClassifierEvent::Started {
                train_examples,
                eval_examples,
                ..
            } = e
            {
                examples = (*train_examples, *eval_examples);
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(examples, (9, 3));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    // Ids keep their values as names, sorted numerically.
    assert_eq!(config["id2label"], serde_json::json!({"0": "0", "1": "10"}));
    let best = std::fs::read_to_string(out.join("checkpoint/training_state.json")).unwrap();
    assert!(best.contains("\"accuracy\""), "{best}");
}
