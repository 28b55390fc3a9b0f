//! Fine-tuning token classifiers: the aligned labels and the training steps against PyTorch
//! and `transformers` (fixtures from scripts/reference/token_classifier_fixtures.py), the
//! exported checkpoint against `transformers`' tensor names and the trained logits, the
//! entity metrics against `seqeval`, resume, frozen parameters and bad input.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use ferroformer::metrics::seqeval::seqeval;
use ferroformer::models::{AutoModelForTokenClassification, AutoTokenizer, LoadOptions};
use ferroformer::pipelines::token_classification::{
    TokenClassificationOptions, TokenClassificationPipeline,
};
use ferroformer::pipelines::PipelineConfig;
use ferroformer::train::finetune::{
    Batch, FineTuneConfig, FineTuneEvent, FineTuneModel, FineTuneRun, FineTuner, HeadKind,
    Tokenized, IGNORE_LABEL,
};
use ferroformer::train::labelled_data::sorted_labels;
use ferroformer::train::optim::{linear_schedule, AdamWConfig};
use ferroformer::train::token_classifier::{
    read_tagged, tag_ids, tokenize_tagged, train_token_classifier, TaggedSentence,
    TokenClassifierConfig,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn dir() -> PathBuf {
    fixtures().join("token_classifier")
}

fn labels() -> Vec<String> {
    ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
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

fn i64s(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
}

fn train_sentences() -> Vec<TaggedSentence> {
    read_tagged(&dir().join("train.conll"), "tokens", "tags").unwrap()
}

fn tokenized(model_dir: &Path, sentences: &[TaggedSentence]) -> Vec<Tokenized> {
    let tok = AutoTokenizer::from_dir(model_dir).unwrap();
    let ids = tag_ids(sentences, &labels(), "tags").unwrap();
    tokenize_tagged(&tok, sentences, &ids, 128).unwrap()
}

/// Words tokenized split, tags on each word's first sub-token and -100 elsewhere, as
/// `transformers`' `tokenize_and_align_labels` gives them: for BERT's WordPiece and for
/// RoBERTa's byte-level BPE (every word with its prefix space).
#[test]
fn aligned_labels_match_transformers() {
    let train = train_sentences();
    assert_eq!(train.len(), 8);
    assert_eq!(
        sorted_labels(train.iter().flat_map(|s| s.tags.iter().map(String::as_str))),
        labels()
    );
    let eval = read_tagged(&dir().join("eval.jsonl"), "tokens", "tags").unwrap();
    for (model, sentences, file) in [
        (dir().join("bert-init"), train.clone(), "parity.safetensors"),
        (
            fixtures().join("encoders/roberta-base"),
            [train.clone(), eval].concat(),
            "aligned_roberta.safetensors",
        ),
    ] {
        let io = candle_core::safetensors::load(dir().join(file), &Device::Cpu).unwrap();
        let rows = tokenized(&model, &sentences);
        let mut split_words = 0;
        for (i, row) in rows.iter().enumerate() {
            let want_ids = i64s(&io[&format!("aligned.{i}.input_ids")]);
            let want_labels = i64s(&io[&format!("aligned.{i}.labels")]);
            let ids: Vec<i64> = row.ids.iter().map(|&x| x as i64).collect();
            assert_eq!(ids, want_ids, "{file}: sentence {i} ids");
            assert_eq!(row.labels, want_labels, "{file}: sentence {i} labels");
            let labelled = row.labels.iter().filter(|&&l| l != IGNORE_LABEL).count();
            assert_eq!(labelled, sentences[i].tokens.len());
            split_words += row.labels.len() - labelled - 2;
        }
        // The fixture exercises words of several sub-tokens.
        assert!(split_words > 10, "{file}: {split_words}");
    }
}

fn batch_of(model: &FineTuneModel, rows: &[Tokenized], pick: &[usize]) -> Batch {
    let picked: Vec<&Tokenized> = pick.iter().map(|&i| &rows[i]).collect();
    model.batch(&picked, &Device::Cpu).unwrap()
}

/// Our batches are PyTorch's `DataCollatorForTokenClassification` batches, and three AdamW
/// steps (warmup + linear decay, weight decay, clipping, loss ignoring -100) on them give
/// PyTorch's losses, parameters and logits; the exported checkpoint loads with the tensor
/// names `transformers` expects and gives PyTorch's trained logits.
#[test]
fn three_adamw_steps_match_pytorch_and_the_export_loads() {
    let io =
        candle_core::safetensors::load(dir().join("parity.safetensors"), &Device::Cpu).unwrap();
    let init = dir().join("bert-init");
    let model =
        FineTuneModel::from_pretrained(HeadKind::Token, &init, &labels(), 0, &Device::Cpu).unwrap();
    let rows = tokenized(&init, &train_sentences());
    let eval_rows = tokenized(
        &init,
        &read_tagged(&dir().join("eval.jsonl"), "tokens", "tags").unwrap(),
    );
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut tuner = FineTuner::new(model, |_, _| true, adam, 1.0).unwrap();
    let check_batch = |batch: &Batch, prefix: &str| {
        for (ours, key) in [
            (&batch.input_ids, "input_ids"),
            (&batch.attention_mask, "attention_mask"),
            (batch.token_type_ids.as_ref().unwrap(), "token_type_ids"),
        ] {
            assert_eq!(
                i64s(ours),
                i64s(&io[&format!("{prefix}.{key}")]),
                "{prefix}.{key}"
            );
        }
        // Our labels are those of the labelled positions; PyTorch's a padded grid.
        let grid = i64s(&io[&format!("{prefix}.labels")]);
        let positions = i64s(batch.label_positions.as_ref().unwrap());
        let want: Vec<(i64, i64)> = grid
            .iter()
            .enumerate()
            .filter(|(_, &l)| l != -100)
            .map(|(p, &l)| (p as i64, l))
            .collect();
        let got: Vec<(i64, i64)> = positions.into_iter().zip(i64s(&batch.labels)).collect();
        assert_eq!(got, want, "{prefix}.labels");
    };
    let eval = batch_of(&tuner.model, &eval_rows, &[0, 1, 2]);
    check_batch(&eval, "eval");
    let before = tuner.model.logits(&eval, false).unwrap();
    let d = max_abs_diff(&before, &io["logits_before"]);
    assert!(d < 1e-4, "logits before training differ by {d}");

    let losses = io["losses"].to_vec1::<f64>().unwrap();
    let lrs = io["lrs"].to_vec1::<f64>().unwrap();
    let batches: [&[usize]; 3] = [&[0, 1, 2, 3], &[4, 5, 6, 7], &[1, 3, 5, 7]];
    for (i, pick) in batches.iter().enumerate() {
        let batch = batch_of(&tuner.model, &rows, pick);
        check_batch(&batch, &format!("batch{i}"));
        let lr = linear_schedule(i as u64, 1e-3, 1, 3);
        assert!(
            (lr - lrs[i]).abs() < 1e-12,
            "step {i}: lr {lr} vs {}",
            lrs[i]
        );
        let stats = tuner.step(&batch, lr).unwrap();
        assert!(
            (stats.loss - losses[i]).abs() < 1e-4,
            "step {i}: loss {} vs PyTorch {}",
            stats.loss,
            losses[i]
        );
    }
    let after = tuner.model.logits(&eval, false).unwrap();
    let d = max_abs_diff(&after, &io["logits_after"]);
    assert!(d < 1e-4, "logits after training differ by {d}");
    assert!(max_abs_diff(&after, &before) > 1e-2);
    let params = tuner.model.hf_tensors();
    for (key, want) in io.iter().filter(|(k, _)| k.starts_with("param.")) {
        let name = &key["param.".len()..];
        let d = max_abs_diff(&params[name], want);
        assert!(d < 1e-4, "{name} differs from PyTorch's by {d}");
    }

    let out = tempfile::tempdir().unwrap();
    tuner.model.save_pretrained(out.path(), &init).unwrap();
    assert_export_names(out.path(), "bert-base");
    let loaded =
        AutoModelForTokenClassification::from_dir(out.path(), &LoadOptions::default()).unwrap();
    let logits = loaded
        .forward(
            &eval.input_ids,
            Some(&eval.attention_mask),
            eval.token_type_ids.as_ref(),
        )
        .unwrap();
    let d = max_abs_diff(&logits, &io["logits_after"]);
    assert!(d < 1e-4, "the export's logits differ from PyTorch's by {d}");
}

/// The exported `model.safetensors` holds exactly the tensors (names and shapes) of
/// `transformers`' `…ForTokenClassification` for the family, and `config.json` names it.
fn assert_export_names(out: &Path, family: &str) {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("export_names.json")).unwrap())
            .unwrap();
    let expected = &expected[family];
    let want: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(expected["tensors"].clone()).unwrap();
    let saved =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let got: BTreeMap<String, Vec<usize>> = saved
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    // transformers' state dict may hold buffers (position ids) that are not parameters.
    let want: BTreeMap<String, Vec<usize>> = want
        .into_iter()
        .filter(|(k, _)| !k.ends_with("position_ids") && !k.ends_with("token_type_ids"))
        .collect();
    assert_eq!(got, want, "{family}: exported tensors");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], expected["architecture"]);
    assert_eq!(config["id2label"]["1"], "B-PER");
    assert_eq!(config["label2id"]["O"], 4);
    assert_eq!(config["num_labels"], 5);
    assert!(config.get("problem_type").is_none());
}

fn config(model: &Path, out: &Path) -> TokenClassifierConfig {
    TokenClassifierConfig {
        common: FineTuneConfig {
            model: model.display().to_string(),
            data: dir().join("train.conll"),
            eval_data: Some(dir().join("eval.jsonl")),
            out: out.to_path_buf(),
            epochs: 3,
            lr: 1e-2,
            batch_size: 3,
            weight_decay: 0.01,
            warmup_ratio: 0.2,
            metric: vec!["f1".into(), "accuracy".into()],
            seed: 7,
            log_every: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn run(cfg: &TokenClassifierConfig) -> FineTuneRun {
    train_token_classifier(
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

/// For BERT, DistilBERT and RoBERTa (new seeded heads): the run's directory holds
/// `transformers`' tensor names, and our `token-classification` pipeline runs it with the
/// trained model's scores.
#[test]
fn saved_checkpoint_runs_in_the_pipeline_for_each_family() {
    for family in ["bert-base", "distilbert-base", "roberta-base"] {
        let tmp = tempfile::tempdir().unwrap();
        let base = fixtures().join("encoders").join(family);
        let mut cfg = config(&base, tmp.path());
        cfg.common.eval_strategy = "no".into();
        cfg.common.epochs = 2;
        let report = run(&cfg);
        assert_eq!(report.steps, 6);
        let out = tmp.path();
        assert_export_names(out, family);
        assert!(out.join("tokenizer.json").is_file());

        let model =
            FineTuneModel::from_pretrained(HeadKind::Token, &base, &labels(), 0, &Device::Cpu)
                .unwrap();
        model
            .load_parameters(&out.join("checkpoint/model.safetensors"))
            .unwrap();
        let text = "Marie Curie lived in Paris";
        let tok = AutoTokenizer::from_dir(&base).unwrap();
        let enc = tok.encode(text, &Default::default()).unwrap().remove(0);
        let n = enc.ids.len();
        let row = Tokenized {
            ids: enc.ids.clone(),
            type_ids: enc.type_ids.clone(),
            labels: vec![IGNORE_LABEL; n],
        };
        let probs = candle_nn::ops::softmax_last_dim(
            &model
                .logits(&model.batch(&[&row], &Device::Cpu).unwrap(), false)
                .unwrap(),
        )
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        let pipe = TokenClassificationPipeline::from_dir(out, &PipelineConfig::default()).unwrap();
        let options = TokenClassificationOptions {
            ignore_labels: Some(vec![]),
            ..Default::default()
        };
        let entities = pipe.run(&[text], &options).unwrap().remove(0);
        assert_eq!(entities.len(), n - 2, "{family}: every non-special token");
        for e in entities {
            let i = e.index.unwrap();
            let (best, score) = probs[i]
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (j, &p)| if p > a.1 { (j, p) } else { a });
            assert_eq!(
                e.entity.as_deref(),
                Some(labels()[best].as_str()),
                "{family}"
            );
            assert!(
                (e.score - score).abs() < 1e-5,
                "{family}: {} vs {score}",
                e.score
            );
        }
    }
}

/// A run stopped after step 4 and resumed ends exactly as an uninterrupted run (dropout on:
/// bert-base has dropout 0.1), the evaluations (entity F1 first) in its log included.
#[test]
fn stop_and_resume_equals_uninterrupted() {
    let base = fixtures().join("encoders/bert-base");
    let a = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, a.path());
    cfg.common.save_steps = 2;
    let full = run(&cfg);
    assert_eq!(full.steps, 9);
    assert_eq!(full.best.as_ref().unwrap().metric, "f1");

    let b = tempfile::tempdir().unwrap();
    let mut cfg_b = cfg.clone();
    cfg_b.common.out = b.path().to_path_buf();
    let stop = AtomicBool::new(false);
    let r = train_token_classifier(
        &cfg_b,
        false,
        &stop,
        &mut |e| {
            if let FineTuneEvent::Step { step: 4, .. } = e {
                stop.store(true, Ordering::SeqCst);
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.steps, 4);
    // Resuming with other settings is refused.
    let mut other = cfg_b.clone();
    other.tags_column = "ner_tags".into();
    let e = train_token_classifier(
        &other,
        true,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("tags_column"), "{e}");
    let r = train_token_classifier(
        &cfg_b,
        true,
        &AtomicBool::new(false),
        &mut |_| {},
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.steps, 9);
    assert_eq!(r.best, full.best);

    let log_a = std::fs::read_to_string(a.path().join("log.jsonl")).unwrap();
    assert_eq!(log_a.lines().filter(|l| l.contains("eval_f1")).count(), 3);
    for f in [
        "model.safetensors",
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
    ] {
        let (x, y) = (load(&a.path().join(f)), load(&b.path().join(f)));
        assert_eq!(x.len(), y.len());
        for (k, t) in &x {
            let p = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let q = y[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(p == q, "{f}: {k} differs");
        }
    }
    assert_eq!(
        log_a,
        std::fs::read_to_string(b.path().join("log.jsonl")).unwrap()
    );
    assert!(a.path().join("loss.png").is_file() && a.path().join("metric.png").is_file());
}

/// `--freeze-base` leaves every base parameter bit-identical and trains the head.
#[test]
fn frozen_base_stays_bit_identical() {
    let base = fixtures().join("encoders/bert-base");
    let original = load(&base.join("model.safetensors"));
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, tmp.path());
    cfg.common.freeze_base = true;
    cfg.common.eval_strategy = "no".into();
    run(&cfg);
    let saved = load(&tmp.path().join("model.safetensors"));
    let mut compared = 0;
    for (name, t) in &original {
        // A token classifier has no pooler.
        if name.starts_with("pooler.") {
            assert!(!saved.contains_key(&format!("bert.{name}")));
            continue;
        }
        let a = saved[&format!("bert.{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(a == b, "{name} changed under --freeze-base");
        compared += 1;
    }
    assert!(compared > 20);
    // The head was trained away from its seeded initialization.
    let init =
        FineTuneModel::from_pretrained(HeadKind::Token, &base, &labels(), 7, &Device::Cpu).unwrap();
    let d = max_abs_diff(
        &init.hf_tensors()["classifier.weight"],
        &saved["classifier.weight"],
    );
    assert!(d > 1e-3, "{d}");
}

/// `seqeval`'s entity precision, recall and F1 (default mode, micro average) and accuracy.
#[test]
fn entity_scores_match_seqeval() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir().join("seqeval.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let refs: Vec<Vec<String>> = serde_json::from_value(case["references"].clone()).unwrap();
        let preds: Vec<Vec<String>> = serde_json::from_value(case["predictions"].clone()).unwrap();
        let got = seqeval(&preds, &refs).unwrap();
        for (name, value) in [
            ("precision", got.overall_precision),
            ("recall", got.overall_recall),
            ("f1", got.overall_f1),
            ("accuracy", got.overall_accuracy),
        ] {
            let want = case[name].as_f64().unwrap();
            assert!(
                (value - want).abs() < 1e-12,
                "{name}: {value} vs seqeval {want} for {refs:?} / {preds:?}"
            );
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn error_of(cfg: &TokenClassifierConfig) -> String {
    train_token_classifier(
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
    let base = dir().join("bert-init");
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&base, &tmp.path().join("run"));
    let good = dir().join("train.conll");

    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "notags.jsonl",
            "{\"tokens\": [\"a\"], \"tags\": [\"O\"]}\n{\"tokens\": [\"b\"], \"ner_tags\": [\"O\"]}\n",
            &["notags.jsonl", "line 2", "`tags`", "ner_tags"],
        ),
        (
            "mismatch.jsonl",
            "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n",
            &["mismatch.jsonl", "line 1", "2 tokens", "1 tags", "`tokens`", "`tags`"],
        ),
        (
            "number.jsonl",
            "{\"tokens\": [\"a\", 7], \"tags\": [\"O\", \"O\"]}\n",
            &["number.jsonl", "line 1", "`tokens`", "token 1", "expected a string", "7"],
        ),
        (
            "badtag.jsonl",
            "{\"tokens\": [\"a\"], \"tags\": [null]}\n",
            &["badtag.jsonl", "line 1", "`tags`", "tag 0", "null"],
        ),
        (
            "notalist.jsonl",
            "{\"tokens\": \"a b\", \"tags\": [\"O\", \"O\"]}\n",
            &["notalist.jsonl", "line 1", "`tokens`", "expected a list"],
        ),
        (
            "oneword.conll",
            "EU B-ORG\nrejects O\n\nlonely\n",
            &["oneword.conll", "line 4", "lonely", "tag"],
        ),
    ];
    for (name, text, wants) in cases {
        cfg.common.data = write(tmp.path(), name, text);
        let e = error_of(&cfg);
        for w in wants {
            assert!(e.contains(w), "{name}: `{w}` not in: {e}");
        }
    }

    // A tag the training data never had, in JSONL and in CoNLL evaluation data.
    cfg.common.data = good.clone();
    cfg.common.eval_data = Some(write(
        tmp.path(),
        "eval.jsonl",
        "{\"tokens\": [\"Paris\"], \"tags\": [\"B-LOC\"]}\n{\"tokens\": [\"IBM\"], \"tags\": [\"B-ORG\"]}\n",
    ));
    let e = error_of(&cfg);
    for w in ["eval.jsonl", "line 2", "`B-ORG`", "`tags`"] {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }
    cfg.common.eval_data = Some(write(
        tmp.path(),
        "eval.conll",
        "Paris NNP B-LOC\n\nIBM NNP B-MISC\n",
    ));
    let e = error_of(&cfg);
    for w in ["eval.conll", "line 3", "`B-MISC`", "last"] {
        assert!(e.contains(w), "`{w}` not in: {e}");
    }

    cfg.common.eval_data = None;
    cfg.common.metric = vec!["bleu".into()];
    let e = error_of(&cfg);
    assert!(e.contains("metric") && e.contains("bleu"), "{e}");
    // Nothing was written for any of these.
    assert!(!tmp.path().join("run").exists());
}

/// Integer tag ids from JSONL keep their values as names (sorted numerically), and a
/// validation fraction is held out of the training file.
#[test]
fn integer_tags_and_a_validation_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let mut jsonl = String::new();
    for i in 0..8 {
        jsonl.push_str(&format!(
            "{{\"words\": [\"Paris\", \"is\", \"nice\", \"{i}\"], \"ner\": [10, 0, 0, {}]}}\n",
            (i % 2) * 2
        ));
    }
    let data = write(tmp.path(), "ids.jsonl", &jsonl);
    let out = tmp.path().join("run");
    let cfg = TokenClassifierConfig {
        common: FineTuneConfig {
            model: fixtures().join("encoders/bert-base").display().to_string(),
            data,
            val_fraction: 0.25,
            out: out.clone(),
            epochs: 1,
            batch_size: 4,
            ..TokenClassifierConfig::default().common
        },
        tokens_column: "words".into(),
        tags_column: "ner".into(),
    };
    let mut examples = (0, 0);
    let r = train_token_classifier(
        &cfg,
        false,
        &AtomicBool::new(false),
        &mut |e| {
            if let FineTuneEvent::Started {
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
    assert_eq!(examples, (6, 2));
    assert_eq!(r.labels, ["0", "2", "10"]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["id2label"],
        serde_json::json!({"0": "0", "1": "2", "2": "10"})
    );
    // The default metric is seqeval's entity F1.
    assert_eq!(r.best.unwrap().metric, "f1");
}

/// A sentence whose words all vanish in the tokenizer (control characters) is left out
/// rather than giving a row without a labelled token.
#[test]
fn sentences_without_tokens_are_left_out() {
    let sentence = |words: &[&str]| TaggedSentence {
        tokens: words.iter().map(|w| w.to_string()).collect(),
        tags: vec!["O".to_string(); words.len()],
        file: PathBuf::from("x.jsonl"),
        lines: vec![1; words.len()],
    };
    let sentences = [sentence(&["\u{7}", "\u{0}"]), sentence(&["Paris", "\u{7}"])];
    let rows = tokenized(&dir().join("bert-init"), &sentences);
    assert_eq!(rows.len(), 1);
    // The second sentence keeps its one word that has tokens.
    let labelled: Vec<i64> = rows[0]
        .labels
        .iter()
        .copied()
        .filter(|&l| l != IGNORE_LABEL)
        .collect();
    assert_eq!(labelled, [4]);
}
