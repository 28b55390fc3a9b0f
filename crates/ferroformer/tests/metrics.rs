//! Metrics against their reference implementations: tests/fixtures/metrics/*.json, written
//! by scripts/reference/metrics_fixtures.py (scikit-learn, `evaluate`'s metric scripts,
//! sacreBLEU, rouge_score, NLTK). Deterministic values agree to 1e-9.

use std::path::PathBuf;

use ferroformer::metrics::{self, bleu, porter, wordnet::WordNet, Metric, MetricOptions};
use serde::Deserialize;
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/metrics")
}

/// The excerpt of WordNet 3.0 that the METEOR fixtures' words reach.
fn wordnet_excerpt() -> PathBuf {
    fixtures().join("wordnet")
}

fn fixture(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Case {
    metric: String,
    options: MetricOptions,
    predictions: Vec<String>,
    references: Vec<Vec<String>>,
    expected: Value,
}

/// Asserts `actual` equals `expected`: the same keys and list lengths, numbers within
/// [`TOLERANCE`], everything else equal.
fn assert_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let mut ak: Vec<&String> = a.keys().collect();
            let mut ek: Vec<&String> = e.keys().collect();
            ak.sort();
            ek.sort();
            assert_eq!(ak, ek, "{path}: keys differ");
            for (k, ev) in e {
                assert_close(&a[k], ev, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{path}: lengths differ");
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                assert_close(av, ev, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            assert!(
                (a - e).abs() <= TOLERANCE,
                "{path}: {a} vs reference {e} (difference {:e})",
                (a - e).abs()
            );
        }
        _ => assert_eq!(actual, expected, "{path}"),
    }
}

fn run_cases(file: &str) -> usize {
    let fixture = fixture(file);
    let cases: Vec<Case> =
        serde_json::from_value(fixture["cases"].clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(!cases.is_empty(), "{file} has no cases");
    for (i, case) in cases.iter().enumerate() {
        let metric: Metric = case.metric.parse().unwrap();
        let mut options = case.options.clone();
        if metric == Metric::Meteor {
            options.wordnet = Some(wordnet_excerpt());
        }
        let actual = metrics::compute(metric, &case.predictions, &case.references, &options)
            .unwrap_or_else(|e| panic!("{file} case {i} ({}): {e}", case.metric));
        assert_close(
            &actual,
            &case.expected,
            &format!("{file} case {i} ({} {:?})", case.metric, case.options),
        );
    }
    cases.len()
}

#[test]
fn classification_matches_scikit_learn() {
    assert!(run_cases("classification.json") > 50);
}

#[test]
fn exact_match_and_squad_match_evaluate() {
    assert!(run_cases("exact_match.json") >= 9);
}

#[test]
fn bleu_sacrebleu_and_chrf_match_the_references() {
    assert!(run_cases("bleu.json") >= 20);
}

#[test]
fn rouge_matches_rouge_score() {
    assert!(run_cases("rouge.json") >= 16);
}

#[test]
fn meteor_matches_nltk() {
    assert!(run_cases("meteor.json") >= 2);
    // Per example, against NLTK's meteor_score (best over references).
    let fixture = fixture("meteor.json");
    let case: Case = serde_json::from_value(fixture["cases"][0].clone()).unwrap();
    let wordnet = WordNet::open(&wordnet_excerpt()).unwrap();
    let expected = fixture["per_example"].as_array().unwrap();
    for ((prediction, refs), want) in case.predictions.iter().zip(&case.references).zip(expected) {
        let best = refs
            .iter()
            .map(|r| {
                metrics::meteor::single_meteor(r, prediction, &wordnet, &Default::default())
                    .unwrap()
            })
            .fold(f64::NEG_INFINITY, f64::max);
        let want = want.as_f64().unwrap();
        assert!(
            (best - want).abs() <= TOLERANCE,
            "{prediction:?}: {best} vs NLTK {want}"
        );
    }
}

#[test]
fn wordnet_synonyms_match_nltk() {
    let fixture = fixture("meteor.json");
    let wordnet = WordNet::open(&wordnet_excerpt()).unwrap();
    let synonyms = fixture["synonyms"].as_object().unwrap();
    assert!(synonyms.len() > 50);
    for (word, want) in synonyms {
        let mut got: Vec<String> = wordnet.synonyms(word).unwrap().into_iter().collect();
        got.sort();
        let want: Vec<String> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "synonyms of {word}");
    }
    let missing = WordNet::open(&fixtures().join("no-such-dir"))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("index.noun"), "{missing}");
}

#[test]
fn tokenizers_match_sacrebleu() {
    let fixture = fixture("bleu.json");
    let texts = fixture["tokenizers"]["texts"].as_array().unwrap();
    for (name, tokenizer) in [
        ("13a", bleu::BleuTokenizer::Thirteen),
        ("intl", bleu::BleuTokenizer::Intl),
    ] {
        let expected = fixture["tokenizers"]["tokenized"][name].as_array().unwrap();
        assert_eq!(texts.len(), expected.len());
        for (text, want) in texts.iter().zip(expected) {
            let text = text.as_str().unwrap();
            assert_eq!(
                tokenizer.tokenize(text),
                want.as_str().unwrap(),
                "{name} on {text:?}"
            );
        }
    }
}

#[test]
fn porter_stemmer_matches_nltk() {
    let fixture = fixture("porter.json");
    let stems = fixture["stems"].as_object().unwrap();
    assert!(stems.len() > 1000);
    let wrong: Vec<String> = stems
        .iter()
        .filter_map(|(word, want)| {
            let got = porter::stem(word);
            (got != want.as_str().unwrap()).then(|| format!("{word}: {got} (NLTK: {want})"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} stems differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn mismatched_lengths_and_stray_options_are_errors() {
    let p = vec!["a".to_string(), "b".to_string()];
    let r = vec![vec!["a".to_string()]];
    let err = metrics::compute(Metric::Bleu, &p, &r, &MetricOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("2 predictions but 1 references"),
        "{err}"
    );

    let r2 = vec![vec!["a".to_string()], vec!["b".to_string()]];
    let options = MetricOptions {
        use_stemmer: true,
        ..Default::default()
    };
    let err = metrics::compute(Metric::Bleu, &p, &r2, &options).unwrap_err();
    assert!(
        err.to_string()
            .contains("option --use-stemmer does not apply to metric bleu"),
        "{err}"
    );

    let two_refs = vec![
        vec!["a".to_string(), "c".to_string()],
        vec!["b".to_string()],
    ];
    let err =
        metrics::compute(Metric::Accuracy, &p, &two_refs, &MetricOptions::default()).unwrap_err();
    assert!(err.to_string().contains("exactly one reference"), "{err}");

    let options = MetricOptions {
        bootstrap: Some(10),
        ..Default::default()
    };
    let err = metrics::compute(Metric::Rouge, &p, &r2, &options).unwrap_err();
    assert!(err.to_string().contains("--seed"), "{err}");

    // Sizes that would only exhaust memory or time are refused up front.
    let options = MetricOptions {
        max_order: Some(1 << 40),
        ..Default::default()
    };
    let err = metrics::compute(Metric::Bleu, &p, &r2, &options).unwrap_err();
    assert!(
        err.to_string()
            .contains("--max-order must be between 1 and 32"),
        "{err}"
    );
    let options = MetricOptions {
        bootstrap: Some(usize::MAX),
        seed: Some(0),
        ..Default::default()
    };
    let err = metrics::compute(Metric::Rouge, &p, &r2, &options).unwrap_err();
    assert!(err.to_string().contains("--bootstrap takes 1 to"), "{err}");
}

#[derive(Deserialize)]
struct SequenceCase {
    name: String,
    options: MetricOptions,
    predictions: Vec<Vec<String>>,
    references: Vec<Vec<String>>,
    expected: Value,
}

/// `evaluate`'s seqeval (the `seqeval` package as the metric calls it): several entity
/// types, I- without B-, empty sequences, all-O, zero_division 0/1, the strict mode with
/// each scheme and with the scheme detected, suffix tags.
#[test]
fn seqeval_matches_evaluate() {
    let fixture = fixture("seqeval.json");
    let cases: Vec<SequenceCase> = serde_json::from_value(fixture["cases"].clone()).unwrap();
    assert!(cases.len() > 20, "seqeval.json has {} cases", cases.len());
    for case in &cases {
        let actual = metrics::compute_sequences(
            Metric::Seqeval,
            &case.predictions,
            &case.references,
            &case.options,
        )
        .unwrap_or_else(|e| panic!("seqeval case {}: {e}", case.name));
        assert_close(&actual, &case.expected, &format!("seqeval {}", case.name));
        // The keys in the metric's order: entity types sorted, then the overall scores.
        let keys: Vec<&String> = actual.as_object().unwrap().keys().collect();
        let expected_keys: Vec<&String> = case.expected.as_object().unwrap().keys().collect();
        assert_eq!(keys, expected_keys, "seqeval {}: key order", case.name);
    }
}

/// Where seqeval raises, we return an error (never a panic) that says what is wrong.
#[test]
fn seqeval_errors_where_the_reference_raises() {
    let fixture = fixture("seqeval.json");
    let cases: Vec<Value> = serde_json::from_value(fixture["errors"].clone()).unwrap();
    assert!(cases.len() >= 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let options: MetricOptions = serde_json::from_value(case["options"].clone()).unwrap();
        let p: Vec<Vec<String>> = serde_json::from_value(case["predictions"].clone()).unwrap();
        let r: Vec<Vec<String>> = serde_json::from_value(case["references"].clone()).unwrap();
        let err = metrics::compute_sequences(Metric::Seqeval, &p, &r, &options)
            .expect_err(name)
            .to_string();
        let want = match name {
            "S- under strict IOB2" => "prediction sequence 1, tag 2 (`S-LOC`) has a prefix IOB2",
            "unknown prefix, strict" => "tag `X-PER` has prefix `X`",
            "scheme of all-O references not detected" => "prefixes found: O;",
            "I and O only: no scheme detected" => "prefixes found: I, O;",
            "lengths differ" => "sequence 1 has 2 predicted tags but 1 reference tags",
            "no tags" => "hold no tags",
            "empty tag" => "tag 1 is empty",
            other => panic!("no expectation for error case {other}"),
        };
        assert!(err.contains(want), "{name}: {err}");
    }
    // A scheme without the strict mode would be ignored by seqeval: refused, not ignored.
    let options = MetricOptions {
        scheme: Some("IOB2".into()),
        ..Default::default()
    };
    let t = vec![vec!["B-PER".to_string()]];
    let err = metrics::compute_sequences(Metric::Seqeval, &t, &t, &options).unwrap_err();
    assert!(err.to_string().contains("only in the strict mode"), "{err}");
    for (options, want) in [
        (
            MetricOptions {
                mode: Some("lenient".into()),
                ..Default::default()
            },
            "unknown --mode `lenient`",
        ),
        (
            MetricOptions {
                mode: Some("strict".into()),
                scheme: Some("IOB3".into()),
                ..Default::default()
            },
            "unknown scheme `IOB3`",
        ),
        (
            MetricOptions {
                zero_division: Some("2".into()),
                ..Default::default()
            },
            "expected warn, 0 or 1",
        ),
        (
            MetricOptions {
                lowercase: true,
                ..Default::default()
            },
            "option --lowercase does not apply to metric seqeval",
        ),
    ] {
        let err = metrics::compute_sequences(Metric::Seqeval, &t, &t, &options).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    let texts = vec!["B-PER".to_string()];
    let err = metrics::compute(Metric::Seqeval, &texts, &t, &MetricOptions::default()).unwrap_err();
    assert!(err.to_string().contains("compute_sequences"), "{err}");
}
