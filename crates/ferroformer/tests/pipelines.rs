//! Every pipeline against `transformers`' pipeline output on the tiny checkpoints
//! (tests/fixtures/pipelines, built by scripts/reference/pipeline_fixtures.py): labels, spans,
//! tokens and words exactly, scores within 1e-5, alone and in padded batches.

mod common;

use ferroformer::pipelines::{
    pipeline_with, AggregationStrategy, ClassificationFunction, PipelineConfig, PipelineInput,
    TaskOptions, TopK,
};
use serde_json::Value;

const TOL: f64 = 1e-5;

/// Compares `ours` with `expected`: same structure, equal strings and integers, floats
/// within `TOL`. Returns the path of the first difference.
fn diff(ours: &Value, expected: &Value, path: &str) -> Option<String> {
    match (ours, expected) {
        (Value::Object(a), Value::Object(b)) => {
            let mut ka: Vec<_> = a.keys().collect();
            let mut kb: Vec<_> = b.keys().collect();
            ka.sort();
            kb.sort();
            if ka != kb {
                return Some(format!("{path}: keys {ka:?} != {kb:?}"));
            }
            a.iter()
                .find_map(|(k, v)| diff(v, &b[k], &format!("{path}.{k}")))
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path}: length {} != {}", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| diff(x, y, &format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            // Integers (ids, offsets, indices) must be equal; scores within TOL.
            let both_int = ours.is_u64() && expected.is_u64();
            let far = x.is_nan() || y.is_nan() || (x - y).abs() > TOL;
            if (both_int && x != y) || far {
                Some(format!("{path}: {x} != {y}"))
            } else {
                None
            }
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: {a} != {b}")),
    }
}

/// `transformers` keyword arguments → our options.
fn options(task: &str, hf: &Value) -> TaskOptions {
    let mut o = TaskOptions::default();
    let get = |k: &str| hf.get(k);
    match task {
        "text-classification" => {
            if let Some(k) = get("top_k") {
                o.text_classification.top_k = match k.as_u64() {
                    Some(k) => TopK::K(k as usize),
                    None => TopK::All,
                };
            }
            if let Some(f) = get("function_to_apply").and_then(|f| f.as_str()) {
                o.text_classification.function_to_apply =
                    Some(ClassificationFunction::from_name(f).unwrap());
            }
        }
        "token-classification" => {
            if let Some(a) = get("aggregation_strategy").and_then(|a| a.as_str()) {
                o.token_classification.aggregation = AggregationStrategy::from_name(a).unwrap();
            }
            if let Some(l) = get("ignore_labels") {
                o.token_classification.ignore_labels = Some(
                    l.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                );
            }
        }
        "question-answering" => {
            let q = &mut o.question_answering;
            if let Some(k) = get("top_k") {
                q.top_k = k.as_u64().unwrap() as usize;
            }
            q.doc_stride = get("doc_stride").map(|v| v.as_u64().unwrap() as usize);
            q.max_seq_len = get("max_seq_len").map(|v| v.as_u64().unwrap() as usize);
            if let Some(m) = get("max_answer_len") {
                q.max_answer_len = m.as_u64().unwrap() as usize;
            }
            if let Some(h) = get("handle_impossible_answer") {
                q.handle_impossible_answer = h.as_bool().unwrap();
            }
        }
        "fill-mask" => {
            if let Some(k) = get("top_k") {
                o.fill_mask.top_k = k.as_u64().unwrap() as usize;
            }
            if let Some(t) = get("targets") {
                o.fill_mask.targets = Some(
                    t.as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap().to_string())
                        .collect(),
                );
            }
        }
        "feature-extraction" => {}
        "zero-shot-classification" => {
            let z = &mut o.zero_shot;
            z.candidate_labels = get("candidate_labels")
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            if let Some(t) = get("hypothesis_template").and_then(|t| t.as_str()) {
                z.hypothesis_template = t.to_string();
            }
            if let Some(m) = get("multi_label") {
                z.multi_label = m.as_bool().unwrap();
            }
        }
        other => panic!("unknown task {other}"),
    }
    o
}

fn check_task(task: &str) {
    let path = common::fixtures().join(format!("pipelines/{task}.json"));
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let model = common::fixtures()
            .join("encoders")
            .join(case["model"].as_str().unwrap());
        let inputs: Vec<PipelineInput> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| match i {
                Value::String(s) => PipelineInput::text(s.clone()),
                obj => serde_json::from_value(obj.clone()).unwrap(),
            })
            .collect();
        let opts = options(task, &case["options"]);
        let expected = case["expected"].as_array().unwrap();
        // Alone (batch 1) and all inputs in one padded batch must both match.
        for batch_size in [1, inputs.len()] {
            let config = PipelineConfig {
                batch_size,
                ..PipelineConfig::default()
            };
            let pipe = pipeline_with(task, model.to_str().unwrap(), &config)
                .unwrap_or_else(|e| panic!("{name}: loading failed: {e}"));
            let ours = pipe
                .run(&inputs, &opts)
                .unwrap_or_else(|e| panic!("{name}: run failed: {e}"));
            assert_eq!(ours.len(), expected.len(), "{name}: one output per input");
            for (i, (o, e)) in ours.iter().zip(expected).enumerate() {
                if let Some(d) = diff(o, e, &format!("{name} (batch {batch_size}) input {i}")) {
                    failures.push(d);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn text_classification_matches_transformers() {
    check_task("text-classification");
}

#[test]
fn token_classification_matches_transformers() {
    check_task("token-classification");
}

#[test]
fn question_answering_matches_transformers() {
    check_task("question-answering");
}

#[test]
fn fill_mask_matches_transformers() {
    check_task("fill-mask");
}

#[test]
fn feature_extraction_matches_transformers() {
    check_task("feature-extraction");
}

#[test]
fn zero_shot_classification_matches_transformers() {
    check_task("zero-shot-classification");
}

#[test]
fn the_diff_catches_differences() {
    // The comparison itself must not pass everything.
    let a: Value = serde_json::json!({"label": "A", "score": 0.5, "start": 3});
    assert!(diff(&a, &a, "").is_none());
    assert!(diff(
        &a,
        &serde_json::json!({"label": "B", "score": 0.5, "start": 3}),
        ""
    )
    .is_some());
    assert!(diff(
        &a,
        &serde_json::json!({"label": "A", "score": 0.50002, "start": 3}),
        ""
    )
    .is_some());
    assert!(diff(
        &a,
        &serde_json::json!({"label": "A", "score": 0.5, "start": 4}),
        ""
    )
    .is_some());
    assert!(diff(&a, &serde_json::json!({"label": "A", "score": 0.5}), "").is_some());
}

/// The real all-MiniLM-L6-v2 (packaged, fetched into the hub cache by
/// scripts/fetch_models.py) through `feature-extraction --pooling auto`: its
/// sentence-transformers files ask for mean pooling and normalization, and the vectors must
/// equal sentence-transformers' (fixture minilm-embeddings.json), a 332-token sentence
/// included. A missing checkpoint fails the test.
#[test]
fn minilm_sentence_embeddings_match_sentence_transformers() {
    let path = common::fixtures().join("pipelines/minilm-embeddings.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let sentences: Vec<PipelineInput> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| PipelineInput::text(s.as_str().unwrap()))
        .collect();
    assert!(fixture["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_u64().unwrap() > 128));
    // Batches of 4, and one batch of every sentence five times over (over a thousand
    // tokens: the packed sequences run as one group per thread).
    let repeated: Vec<PipelineInput> = (0..5).flat_map(|_| sentences.clone()).collect();
    for (batch_size, inputs) in [(4, &sentences), (repeated.len(), &repeated)] {
        let config = PipelineConfig {
            batch_size,
            ..PipelineConfig::default()
        };
        check_minilm(&config, inputs, &fixture);
    }
}

fn check_minilm(config: &PipelineConfig, sentences: &[PipelineInput], fixture: &Value) {
    use ferroformer::pipelines::Pooling;
    let pipe = pipeline_with(
        "feature-extraction",
        "sentence-transformers/all-MiniLM-L6-v2",
        config,
    )
    .expect(
        "run `python3 scripts/fetch_models.py` to place the packaged checkpoint in the hub cache",
    );
    let mut opts = TaskOptions::default();
    opts.feature_extraction.pooling = Some(Pooling::Auto);
    let ours = pipe.run(sentences, &opts).unwrap();
    let expected: Vec<Value> = fixture["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .cycle()
        .take(sentences.len())
        .cloned()
        .collect();
    assert_eq!(ours.len(), expected.len());
    for (i, (o, e)) in ours.iter().zip(expected).enumerate() {
        let o: Vec<f64> = o
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let e: Vec<f64> = e
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(o.len(), 384);
        let max_diff = common::max_abs_diff_values(&format!("sentence {i}"), &o, &e);
        let dot: f64 = o.iter().zip(&e).map(|(a, b)| a * b).sum();
        let cos = dot
            / (o.iter().map(|a| a * a).sum::<f64>().sqrt()
                * e.iter().map(|b| b * b).sum::<f64>().sqrt());
        assert!(max_diff <= 1e-5, "sentence {i}: max |diff| {max_diff}");
        assert!(cos >= 0.99999, "sentence {i}: cosine {cos}");
    }
}
