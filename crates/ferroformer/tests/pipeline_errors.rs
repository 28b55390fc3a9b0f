//! Pipelines given a broken checkpoint or extreme options fail with an error naming the
//! problem, never a panic. Each checkpoint is a tiny fixture copied to a temporary directory
//! with one file edited.

mod common;

use std::path::Path;

use ferroformer::pipelines::{pipeline, PipelineInput, TaskOptions};
use serde_json::Value;

/// Copies the fixture checkpoint `name` into a temporary directory.
fn copy_checkpoint(name: &str) -> tempfile::TempDir {
    let from = common::fixtures().join("encoders").join(name);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Rewrites the JSON file `file` of `dir` with `edit`.
fn edit_json(dir: &Path, file: &str, edit: impl FnOnce(&mut Value)) {
    let path = dir.join(file);
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// The error of loading `task` on `dir` and, if that loads, of running `inputs`: one of
/// them must fail (a panic fails the test).
fn error_of(task: &str, dir: &Path, inputs: &[PipelineInput], options: &TaskOptions) -> String {
    match pipeline(task, dir.to_str().unwrap()) {
        Err(e) => e.to_string(),
        Ok(p) => match p.run(inputs, options) {
            Err(e) => e.to_string(),
            Ok(out) => panic!("{task} on a broken checkpoint gave {out:?}"),
        },
    }
}

#[test]
fn zero_shot_entailment_index_beyond_the_labels_is_an_error() {
    let dir = copy_checkpoint("bert-nli");
    edit_json(dir.path(), "config.json", |c| {
        c["label2id"]["entailment"] = 7.into();
    });
    let mut options = TaskOptions::default();
    options.zero_shot.candidate_labels = vec!["sports".into(), "politics".into()];
    let err = error_of(
        "zero-shot-classification",
        dir.path(),
        &[PipelineInput::text("The match ended in a draw.")],
        &options,
    );
    assert!(
        err.contains("config.json") && err.contains("label2id") && err.contains('7'),
        "{err}"
    );
}

#[test]
fn fill_mask_target_beyond_the_model_vocabulary_is_an_error() {
    let dir = copy_checkpoint("bert-mlm");
    // An added token after the 300 entries the model predicts.
    edit_json(dir.path(), "tokenizer.json", |t| {
        let added = t["added_tokens"].as_array_mut().unwrap();
        added.push(serde_json::json!({
            "id": 300, "content": "<extra>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": false
        }));
    });
    let mut options = TaskOptions::default();
    options.fill_mask.targets = Some(vec!["<extra>".into()]);
    let err = error_of(
        "fill-mask",
        dir.path(),
        &[PipelineInput::text("the cat [MASK] on the mat")],
        &options,
    );
    assert!(
        err.contains("<extra>") && err.contains("300") && err.contains("vocab_size"),
        "{err}"
    );
}

/// A classifier config without labels: `num_labels: 0` and no `id2label`.
fn without_labels(name: &str) -> tempfile::TempDir {
    let dir = copy_checkpoint(name);
    edit_json(dir.path(), "config.json", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("id2label");
        c.remove("label2id");
        c.insert("num_labels".into(), 0.into());
    });
    dir
}

#[test]
fn text_classification_without_labels_is_an_error() {
    let dir = without_labels("bert-seqcls");
    let err = error_of(
        "text-classification",
        dir.path(),
        &[PipelineInput::text("I love it")],
        &TaskOptions::default(),
    );
    assert!(
        err.contains("config.json") && err.contains("num_labels"),
        "{err}"
    );
}

#[test]
fn token_classification_without_labels_is_an_error() {
    let dir = without_labels("bert-tokcls");
    let err = error_of(
        "token-classification",
        dir.path(),
        &[PipelineInput::text("Ada lives in London")],
        &TaskOptions::default(),
    );
    assert!(
        err.contains("config.json") && err.contains("num_labels"),
        "{err}"
    );
}

#[test]
fn zero_shot_without_labels_is_an_error() {
    let dir = without_labels("bert-nli");
    let mut options = TaskOptions::default();
    options.zero_shot.candidate_labels = vec!["sports".into()];
    let err = error_of(
        "zero-shot-classification",
        dir.path(),
        &[PipelineInput::text("The match ended in a draw.")],
        &options,
    );
    assert!(err.contains("config.json"), "{err}");
}

/// `top_k` and `max_answer_len` as large as the CLI accepts: every answer, no overflow.
#[test]
fn question_answering_takes_huge_top_k_and_answer_length() {
    let dir = common::fixtures().join("encoders/bert-qa");
    let qa = pipeline("question-answering", dir.to_str().unwrap()).unwrap();
    let mut options = TaskOptions::default();
    options.question_answering.top_k = usize::MAX;
    options.question_answering.max_answer_len = usize::MAX;
    let out = qa
        .run(
            &[PipelineInput::question(
                "Where does Ada live?",
                "Ada lives in London.",
            )],
            &options,
        )
        .unwrap();
    let answers = out[0].as_array().expect("a ranked list of answers");
    assert!(answers.len() > 1, "{out:?}");
    let scores: Vec<f64> = answers
        .iter()
        .map(|a| a["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
}

/// Rows of different inputs share batches: every batch size gives the same outputs.
#[test]
fn question_answering_windows_batch_across_inputs() {
    let dir = common::fixtures().join("encoders/bert-qa");
    let inputs = [
        PipelineInput::question(
            "Where does Ada live?",
            "Ada lives in London. She works on engines. Her friend Charles lives in Paris \
             and builds machines that compute tables of numbers for sailors.",
        ),
        PipelineInput::question("Who builds machines?", "Charles builds machines."),
        PipelineInput::question(
            "What do the machines compute?",
            "The machines compute tables of numbers for sailors, and the tables are printed \
             in books that every ship carries on long voyages across the sea.",
        ),
    ];
    let mut options = TaskOptions::default();
    options.question_answering.max_seq_len = Some(32);
    options.question_answering.doc_stride = Some(4);
    options.question_answering.top_k = 2;
    let run = |batch_size| {
        let config = ferroformer::pipelines::PipelineConfig {
            batch_size,
            ..Default::default()
        };
        ferroformer::pipelines::pipeline_with("question-answering", dir.to_str().unwrap(), &config)
            .unwrap()
            .run(&inputs, &options)
            .unwrap()
    };
    let alone = run(1);
    assert_eq!(alone.len(), inputs.len());
    for batch_size in [2, 3, 5, 64] {
        let batched = run(batch_size);
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            let (a, b) = (a.to_string(), b.to_string());
            // Answers (texts and offsets) equal; scores may differ in the last digits.
            let strip = |s: &str| {
                let v: Value = serde_json::from_str(s).unwrap();
                let list = v.as_array().cloned().unwrap_or_else(|| vec![v]);
                list.iter()
                    .map(|x| (x["answer"].clone(), x["start"].clone(), x["end"].clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(strip(&a), strip(&b), "input {i}, batch size {batch_size}");
        }
    }
}
