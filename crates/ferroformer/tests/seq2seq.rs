//! Encoder-decoder families against `transformers` 4.57 (fixtures from
//! `scripts/reference/seq2seq_fixtures.py`): T5 v1.0 and v1.1, BART, mBART-50, Marian,
//! M2M100, NLLB and Pegasus. For each: the encoder output and the teacher-forced decoder
//! logits at 1e-4, every recorded `generate` call (greedy, beam search with each early
//! stopping rule and length penalty, several sequences, n-gram and repetition penalties,
//! minimum and maximum lengths, bad words, forced first and last tokens) on a padded batch
//! and on each row alone, and the summarization / translation / text2text-generation
//! pipelines' texts, batched and one by one.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ferroformer::generation::{AutoModelForSeq2SeqLM, GenerationConfig};
use ferroformer::models::LoadOptions;
use ferroformer::pipelines::{pipeline_with, PipelineConfig, PipelineInput, Task, TaskOptions};
use serde_json::Value;

/// Families whose tokenizer ships as `tokenizer.json` (the others need the SentencePiece
/// files: their pipeline cases run in `seq2seq_spm_pipelines`).
const FAMILIES: [&str; 8] = [
    "t5", "t5-v1_1", "bart", "mbart", "marian", "m2m100", "nllb", "pegasus",
];

fn dir(family: &str) -> PathBuf {
    common::fixtures().join("seq2seq").join(family)
}

fn expected(family: &str) -> Value {
    let path = dir(family).join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn model(family: &str) -> AutoModelForSeq2SeqLM {
    AutoModelForSeq2SeqLM::from_dir(&dir(family), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

fn rows(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("token id rows")
}

fn io(family: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(dir(family).join("io.safetensors"), &Device::Cpu)
        .expect("io.safetensors")
}

#[test]
fn encoder_outputs_and_decoder_logits_match_transformers() {
    for family in FAMILIES {
        let m = model(family);
        let t = io(family);
        let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = t["attention_mask"].to_dtype(DType::U32).unwrap();
        let dec = t["decoder_input_ids"].to_dtype(DType::U32).unwrap();
        let memory = m.model().encode(&ids, Some(&mask)).unwrap();
        common::assert_close(
            &format!("{family} encoder output"),
            &memory,
            &t["encoder_last_hidden_state"],
            1e-4,
        );
        let logits = m.forward(&ids, Some(&mask), &dec).unwrap();
        common::assert_close(&format!("{family} logits"), &logits, &t["logits"], 1e-4);
        // The same logits one decoder token at a time on the KV cache.
        let mut caches = m.model().new_caches();
        let steps: Vec<Tensor> = (0..dec.dim(1).unwrap())
            .map(|i| {
                m.model()
                    .decode(
                        &dec.narrow(1, i, 1).unwrap(),
                        &memory,
                        Some(&mask),
                        Some(&mut caches),
                    )
                    .unwrap()
                    .logits
            })
            .collect();
        let stepped = Tensor::cat(&steps, 1).unwrap();
        common::assert_close(
            &format!("{family} cached logits"),
            &stepped,
            &t["logits"],
            1e-4,
        );
    }
}

#[test]
fn generate_matches_transformers_batched_and_alone() {
    for family in FAMILIES {
        let m = model(family);
        let exp = expected(family);
        let cases = exp["generate"].as_array().expect("generate cases");
        assert!(cases.len() >= 30, "{family}: {} cases", cases.len());
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let mut cfg: GenerationConfig = m.generation_config().clone();
            cfg.update(&case["kwargs"])
                .unwrap_or_else(|e| panic!("{family}/{name}: {e}"));
            let ids = rows(&case["input_ids"]);
            let mask = rows(&case["attention_mask"]);
            let out = m
                .generate(&ids, Some(&mask), &cfg)
                .unwrap_or_else(|e| panic!("{family}/{name}: {e}"));
            assert_eq!(out.sequences, rows(&case["sequences"]), "{family}/{name}");
            match case.get("sequences_scores").filter(|s| !s.is_null()) {
                Some(s) => {
                    let want: Vec<f32> = serde_json::from_value(s.clone()).unwrap();
                    let got = out.sequences_scores.expect("beam scores");
                    assert_eq!(got.len(), want.len(), "{family}/{name}");
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-4, "{family}/{name}: score {g} vs {w}");
                    }
                }
                None => assert!(out.sequences_scores.is_none(), "{family}/{name}"),
            }
        }
    }
}

/// Runs the recorded pipeline cases of `family` and compares the texts exactly.
fn check_pipelines(family: &str) {
    let exp = expected(family);
    let cases = exp["pipelines"].as_array().expect("pipeline cases");
    assert!(!cases.is_empty(), "{family}: no pipeline cases");
    for (n, case) in cases.iter().enumerate() {
        let task_name = case["task"].as_str().unwrap();
        let what = format!("{family} case {n} ({task_name}, {})", case["kwargs"]);
        let mut kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
        let batch_size = kwargs
            .remove("batch_size")
            .and_then(|v| v.as_u64())
            .unwrap_or(1) as usize;
        let truncation = kwargs.remove("truncation").and_then(|v| v.as_bool());
        let src_lang = kwargs
            .remove("src_lang")
            .map(|v| v.as_str().unwrap().to_string());
        let tgt_lang = kwargs
            .remove("tgt_lang")
            .map(|v| v.as_str().unwrap().to_string());
        let config = PipelineConfig {
            batch_size,
            ..PipelineConfig::default()
        };
        let pipe = pipeline_with(task_name, dir(family).to_str().unwrap(), &config)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut options = TaskOptions::default();
        let o = match Task::from_name(task_name).unwrap() {
            Task::Summarization => &mut options.summarization,
            Task::Translation => &mut options.translation,
            _ => &mut options.text2text_generation,
        };
        o.generate_kwargs = kwargs;
        o.truncation = truncation;
        o.src_lang = src_lang;
        o.tgt_lang = tgt_lang;
        let inputs: Vec<PipelineInput> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| PipelineInput::text(t.as_str().unwrap()))
            .collect();
        let got = pipe
            .run(&inputs, &options)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // `transformers` returns a list of dicts for one input, and for a list of inputs
        // one dict per input (one list per input with several sequences each).
        let want = case["output"].as_array().unwrap();
        if case["batched"].as_bool().unwrap() {
            assert_eq!(got.len(), want.len(), "{what}");
            for (g, w) in got.iter().zip(want) {
                let g = g.as_array().unwrap();
                match w {
                    Value::Array(_) => assert_eq!(&Value::Array(g.clone()), w, "{what}"),
                    _ => {
                        assert_eq!(g.len(), 1, "{what}");
                        assert_eq!(&g[0], w, "{what}");
                    }
                }
            }
        } else {
            assert_eq!(got.len(), 1, "{what}");
            assert_eq!(&got[0], &case["output"], "{what}");
        }
    }
}

macro_rules! pipeline_tests {
    ($($name:ident = $family:literal;)*) => {$(
        #[test]
        fn $name() {
            check_pipelines($family);
        }
    )*};
}

pipeline_tests! {
    t5_pipelines_match_transformers = "t5";
    t5_v1_1_pipelines_match_transformers = "t5-v1_1";
    bart_pipelines_match_transformers = "bart";
    mbart_pipelines_match_transformers = "mbart";
    marian_pipelines_match_transformers = "marian";
    m2m100_pipelines_match_transformers = "m2m100";
    nllb_pipelines_match_transformers = "nllb";
    pegasus_pipelines_match_transformers = "pegasus";
}

#[test]
fn pipelines_refuse_models_that_are_not_encoder_decoder() {
    let gpt2 = common::fixtures().join("tiny-gpt2");
    let err = match pipeline_with(
        "summarization",
        gpt2.to_str().unwrap(),
        &PipelineConfig::default(),
    ) {
        Ok(_) => panic!("a GPT-2 checkpoint ran summarization"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("model_type `gpt2`") && err.contains("text-generation"),
        "{err}"
    );
}

#[test]
fn multilingual_translation_names_the_language_codes() {
    let pipe = pipeline_with(
        "translation",
        dir("nllb").to_str().unwrap(),
        &PipelineConfig::default(),
    )
    .unwrap();
    let input = [PipelineInput::text("Hello")];
    // Without languages: an error listing the valid codes.
    let err = pipe
        .run(&input, &TaskOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--src-lang") && err.contains("eng_Latn"),
        "{err}"
    );
    // A wrong target code: the error names it and lists the valid ones.
    let mut options = TaskOptions::default();
    options.translation.src_lang = Some("eng_Latn".into());
    options.translation.tgt_lang = Some("klingon".into());
    let err = pipe.run(&input, &options).unwrap_err().to_string();
    assert!(err.contains("klingon") && err.contains("deu_Latn"), "{err}");
}

#[test]
fn missing_sentencepiece_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "vocab.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(dir("marian").join(f), tmp.path().join(f)).unwrap();
    }
    let err = match pipeline_with(
        "translation",
        tmp.path().to_str().unwrap(),
        &PipelineConfig::default(),
    ) {
        Ok(_) => panic!("loaded without source.spm"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("source.spm"), "{err}");
}
