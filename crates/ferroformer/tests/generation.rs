//! Generation against `transformers`' `generate` (fixtures from
//! `scripts/reference/generation_fixtures.py`): greedy, beam search, repetition penalty,
//! no-repeat n-grams, min new tokens, batched left-padded prompts, for GPT-2, Llama (GQA,
//! untied head), Qwen2 (q/k/v biases, tied embeddings) and Llama 3 RoPE scaling; plus
//! sampling reproducibility and option validation.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ferroformer::generation::{generate_ids, left_pad, EarlyStopping};
use ferroformer::models::LoadOptions;
use ferroformer::{AutoModelForCausalLM, GenerationConfig};
use serde_json::Value;

const FAMILIES: [&str; 4] = ["gpt2", "llama", "qwen2", "llama3"];

fn dir() -> PathBuf {
    common::fixtures().join("generation")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

fn model(family: &str) -> AutoModelForCausalLM {
    AutoModelForCausalLM::from_dir(&dir().join(family), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("token id rows")
}

fn pad() -> u32 {
    expected()["pad_token_id"].as_u64().unwrap() as u32
}

/// Runs one recorded `generate` call and compares token ids exactly, beam scores at 1e-4.
fn check_case(family: &str, m: &AutoModelForCausalLM, name: &str, case: &Value) {
    let cfg = GenerationConfig::from_json(&case["kwargs"]).expect("kwargs");
    let out = m
        .generate_batch(&ids(&case["prompts"]), &cfg)
        .unwrap_or_else(|e| panic!("{family}/{name}: {e}"));
    let want = ids(&case["sequences"]);
    assert_eq!(out.sequences, want, "{family}/{name}: sequences");
    match case.get("sequences_scores") {
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

/// Every family, the cases whose name satisfies `pick`; returns how many ran.
fn check_cases(pick: impl Fn(&str) -> bool) -> usize {
    let e = expected();
    let mut n = 0;
    for family in FAMILIES {
        let m = model(family);
        for (name, case) in e["families"][family]["cases"].as_object().unwrap() {
            if pick(name) {
                check_case(family, &m, name, case);
                n += 1;
            }
        }
    }
    n
}

#[test]
fn logits_match_transformers_for_every_family() {
    let e = expected();
    for family in FAMILIES {
        let f = &e["families"][family];
        let input: Vec<u32> = serde_json::from_value(f["logits_input"].clone()).unwrap();
        let want: Vec<Vec<f32>> = serde_json::from_value(f["logits_last"].clone()).unwrap();
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model(family).forward(&x, None).unwrap();
        let got: Vec<Vec<f32>> = logits.get(0).unwrap().to_vec2().unwrap();
        let got = &got[got.len() - want.len()..];
        for (gr, wr) in got.iter().zip(&want) {
            for (g, w) in gr.iter().zip(wr) {
                assert!((g - w).abs() < 1e-4, "{family}: logit {g} vs {w}");
            }
        }
    }
}

#[test]
fn llama3_rope_scaling_changes_the_logits() {
    // Without `rope_scaling` the same weights give other logits: the parity above depends
    // on the scaling being applied.
    let tmp = tempfile::tempdir().unwrap();
    let src = dir().join("llama3");
    std::fs::copy(
        src.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["rope_scaling"]["rope_type"], "llama3");
    cfg["rope_scaling"] = Value::Null;
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let plain = AutoModelForCausalLM::from_dir(tmp.path(), &LoadOptions::default()).unwrap();
    let input: Vec<u32> =
        serde_json::from_value(expected()["families"]["llama3"]["logits_input"].clone()).unwrap();
    let x = Tensor::new(input.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let a = model("llama3").forward(&x, None).unwrap();
    let b = plain.forward(&x, None).unwrap();
    let diff = common::max_abs_diff(&a, &b);
    assert!(diff > 1e-2, "scaling made no difference ({diff})");

    // A bad scaling block is a clear error naming the field.
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    std::fs::write(tmp.path().join("config.json"), cfg.to_string()).unwrap();
    let err = AutoModelForCausalLM::from_dir(tmp.path(), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("low_freq_factor"), "{err}");
}

#[test]
fn qwen2_fixture_is_tied_with_qkv_biases() {
    // The fixture exercises what it claims: no lm_head tensor (tied), q/k/v biases but no
    // o_proj bias.
    let t = candle_core::safetensors::load(dir().join("qwen2/model.safetensors"), &Device::Cpu)
        .unwrap();
    assert!(!t.contains_key("lm_head.weight"));
    assert!(t.contains_key("model.layers.0.self_attn.q_proj.bias"));
    assert!(!t.contains_key("model.layers.0.self_attn.o_proj.bias"));
    assert_eq!(model("qwen2").model_type(), "qwen2");
}

#[test]
fn greedy_matches_transformers() {
    assert_eq!(check_cases(|n| n == "greedy" || n == "greedy_eos"), 8);
}

#[test]
fn eos_stops_greedy_decoding() {
    // The eos case is the greedy run cut right after the eos token.
    let e = expected();
    for family in FAMILIES {
        let c = &e["families"][family]["cases"];
        let full = &ids(&c["greedy"]["sequences"])[0];
        let cut = &ids(&c["greedy_eos"]["sequences"])[0];
        let eos = e["families"][family]["eos_candidate"].as_u64().unwrap() as u32;
        assert_eq!(cut.last(), Some(&eos), "{family}");
        assert!(cut.len() < full.len() && full.starts_with(cut), "{family}");
    }
}

#[test]
fn min_new_tokens_suppresses_eos() {
    assert_eq!(check_cases(|n| n == "min_new_tokens"), 4);
}

#[test]
fn repetition_penalty_matches_transformers() {
    assert_eq!(check_cases(|n| n == "repetition_penalty"), 4);
}

#[test]
fn no_repeat_ngram_matches_transformers() {
    assert_eq!(check_cases(|n| n == "no_repeat_ngram"), 4);
    // And no bigram repeats in what was generated.
    let m = model("gpt2");
    let cfg = GenerationConfig {
        no_repeat_ngram_size: 2,
        max_new_tokens: Some(30),
        ..Default::default()
    };
    let out = m.generate_batch(&[vec![5, 17, 3]], &cfg).unwrap();
    let s = &out.sequences[0];
    let mut seen = std::collections::HashSet::new();
    for w in s.windows(2) {
        assert!(seen.insert(w.to_vec()), "bigram {w:?} repeated in {s:?}");
    }
}

#[test]
fn beam_search_matches_transformers() {
    // num_beams=4: plain, with eos, length_penalty 2 and -1, num_return_sequences=2,
    // early_stopping true and "never".
    assert_eq!(check_cases(|n| n.starts_with("beam4")), 7 * FAMILIES.len());
}

#[test]
fn batched_left_padded_generation_matches_transformers() {
    assert_eq!(check_cases(|n| n.starts_with("batch_")), 3 * FAMILIES.len());
}

#[test]
fn batched_equals_unbatched_for_every_family() {
    let e = expected();
    for family in FAMILIES {
        let m = model(family);
        let case = &e["families"][family]["cases"]["batch_greedy_eos"];
        let prompts = ids(&case["prompts"]);
        let cfg = GenerationConfig::from_json(&case["kwargs"]).unwrap();
        let batched = m.generate_batch(&prompts, &cfg).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone = m.generate_batch(std::slice::from_ref(p), &cfg).unwrap();
            assert_eq!(
                batched.new_tokens(i),
                alone.new_tokens(0),
                "{family} row {i}"
            );
        }
        // Finished rows are filled with the pad token.
        for (i, row) in batched.sequences.iter().enumerate() {
            let n = batched.new_tokens(i).len();
            assert!(
                row[batched.prompt_len + n..].iter().all(|&t| t == pad()),
                "{family} row {i}: {row:?}"
            );
        }
    }
}

#[test]
fn sampling_is_reproducible_from_the_seed() {
    let m = model("llama");
    let cfg = |seed| GenerationConfig {
        do_sample: true,
        temperature: 1.5,
        top_k: 0,
        max_new_tokens: Some(20),
        seed,
        ..Default::default()
    };
    let prompts = vec![vec![5, 17, 3, 40], vec![9, 9]];
    let a = m.generate_batch(&prompts, &cfg(7)).unwrap();
    let b = m.generate_batch(&prompts, &cfg(7)).unwrap();
    let c = m.generate_batch(&prompts, &cfg(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.sequences, c.sequences);
    // Sampling with top-p / min-p set still returns valid ids.
    let d = m
        .generate_batch(
            &prompts,
            &GenerationConfig {
                top_p: 0.9,
                min_p: Some(0.05),
                top_k: 10,
                num_return_sequences: 3,
                ..cfg(1)
            },
        )
        .unwrap();
    assert_eq!(d.sequences.len(), 6);
    assert!(d.sequences.iter().flatten().all(|&t| t < 48));
}

#[test]
fn top_k_one_sampling_equals_greedy() {
    for family in FAMILIES {
        let m = model(family);
        let prompts = vec![vec![5, 17, 3, 40, 22, 9], vec![30, 2, 11]];
        let greedy = GenerationConfig {
            max_new_tokens: Some(12),
            pad_token_id: Some(0),
            ..Default::default()
        };
        let sampled = GenerationConfig {
            do_sample: true,
            top_k: 1,
            temperature: 0.7,
            seed: 3,
            ..greedy.clone()
        };
        assert_eq!(
            m.generate_batch(&prompts, &greedy).unwrap(),
            m.generate_batch(&prompts, &sampled).unwrap(),
            "{family}"
        );
    }
}

#[test]
fn generate_takes_a_tensor_and_infers_the_mask_from_the_pad_token() {
    let m = model("llama");
    let e = expected();
    let case = &e["families"]["llama"]["cases"]["batch_greedy"];
    let prompts = ids(&case["prompts"]);
    let (rows, _) = left_pad(&prompts, pad());
    let x = Tensor::new(rows, &Device::Cpu).unwrap();
    let cfg = GenerationConfig::from_json(&case["kwargs"]).unwrap();
    let out = m.generate(&x, &cfg).unwrap();
    assert_eq!(out.sequences, ids(&case["sequences"]));
}

#[test]
fn generation_config_reads_hf_files_with_hf_defaults() {
    let d = GenerationConfig::from_json(&serde_json::json!({})).unwrap();
    assert_eq!(d, GenerationConfig::default());
    assert_eq!(
        (d.max_length, d.top_k, d.top_p, d.num_beams),
        (20, 50, 1.0, 1)
    );
    let c = GenerationConfig::from_json(&serde_json::json!({
        "eos_token_id": [1, 2], "pad_token_id": null, "early_stopping": "never",
        "do_sample": true, "transformers_version": "4.57.6", "stop_strings": "###"
    }))
    .unwrap();
    assert_eq!(c.eos_token_id, vec![1, 2]);
    assert_eq!(c.pad_token_id, None);
    assert_eq!(c.early_stopping, EarlyStopping::Never);
    assert_eq!(c.stop_strings, vec!["###".to_string()]);
    assert!(c.do_sample);
    // A directory's generation_config.json (tiny-gpt2 has one).
    let g = GenerationConfig::from_dir(&common::fixtures().join("tiny-gpt2")).unwrap();
    let raw: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("tiny-gpt2/generation_config.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        g.eos_token_id,
        vec![raw["eos_token_id"].as_u64().unwrap() as u32]
    );
    // Without one, the special tokens of config.json.
    let g = GenerationConfig::from_dir(&dir().join("llama")).unwrap();
    assert_eq!((g.eos_token_id.clone(), g.bos_token_id), (vec![1], Some(0)));
    assert_eq!(model("llama").generation_config(), &g);
}

#[test]
fn bad_generation_config_json_names_the_option() {
    for (json, key) in [
        (
            serde_json::json!({"early_stopping": "sometimes"}),
            "early_stopping",
        ),
        (serde_json::json!({"num_beams": -1}), "num_beams"),
        (serde_json::json!({"eos_token_id": "x"}), "eos_token_id"),
        (serde_json::json!({"top_p": "high"}), "top_p"),
    ] {
        let err = GenerationConfig::from_json(&json).unwrap_err().to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
}

#[test]
fn invalid_options_are_errors_naming_the_option() {
    let m = model("gpt2");
    let base = GenerationConfig::greedy(5);
    let cases: Vec<(GenerationConfig, &str)> = vec![
        (
            GenerationConfig {
                top_p: 0.0,
                ..base.clone()
            },
            "top_p",
        ),
        (
            GenerationConfig {
                top_p: 1.5,
                ..base.clone()
            },
            "top_p",
        ),
        (
            GenerationConfig {
                temperature: -1.0,
                ..base.clone()
            },
            "temperature",
        ),
        (
            GenerationConfig {
                do_sample: true,
                temperature: 0.0,
                ..base.clone()
            },
            "temperature",
        ),
        (
            GenerationConfig {
                min_p: Some(1.5),
                ..base.clone()
            },
            "min_p",
        ),
        (
            GenerationConfig {
                repetition_penalty: 0.0,
                ..base.clone()
            },
            "repetition_penalty",
        ),
        (
            GenerationConfig {
                num_beams: 0,
                ..base.clone()
            },
            "num_beams",
        ),
        (
            GenerationConfig {
                num_beams: 2,
                num_return_sequences: 3,
                ..base.clone()
            },
            "num_return_sequences",
        ),
        (
            GenerationConfig {
                num_return_sequences: 2,
                ..base.clone()
            },
            "num_return_sequences",
        ),
        (
            GenerationConfig {
                do_sample: true,
                num_beams: 2,
                ..base.clone()
            },
            "num_beams",
        ),
        (
            GenerationConfig {
                max_new_tokens: Some(0),
                ..base.clone()
            },
            "max_new_tokens",
        ),
        (
            GenerationConfig {
                max_new_tokens: Some(1000),
                ..base.clone()
            },
            "max_new_tokens",
        ),
        (
            GenerationConfig {
                max_new_tokens: None,
                max_length: 2,
                ..base.clone()
            },
            "max_length",
        ),
        (
            GenerationConfig {
                eos_token_id: vec![4800],
                ..base.clone()
            },
            "eos_token_id",
        ),
        (
            GenerationConfig {
                pad_token_id: Some(4800),
                ..base.clone()
            },
            "pad_token_id",
        ),
        (
            GenerationConfig {
                stop_strings: vec!["x".into()],
                ..base.clone()
            },
            "stop_strings",
        ),
        (
            GenerationConfig {
                length_penalty: f64::NAN,
                ..base.clone()
            },
            "length_penalty",
        ),
    ];
    for (cfg, key) in cases {
        let err = m
            .generate_batch(&[vec![5, 17, 3]], &cfg)
            .expect_err(key)
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // Bad inputs.
    let cfg = GenerationConfig::greedy(3);
    let err = generate_ids(m.decoder(), &[], None, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("input_ids"), "{err}");
    let err = generate_ids(m.decoder(), &[vec![1, 2], vec![3]], None, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("input_ids"), "{err}");
    let err = generate_ids(m.decoder(), &[vec![1, 99]], None, &cfg, None).unwrap_err();
    assert!(err.to_string().contains("input_ids"), "{err}");
    let err =
        generate_ids(m.decoder(), &[vec![1, 2]], Some(&[vec![0, 0]]), &cfg, None).unwrap_err();
    assert!(err.to_string().contains("attention_mask"), "{err}");
}

#[test]
fn stop_strings_end_a_sequence() {
    use tokenizers::models::wordlevel::WordLevel;
    // A word-level tokenizer over the fixtures' 48 ids: token i is "w{i}".
    let vocab = (0..48u32).map(|i| (format!("w{i}"), i)).collect();
    let wl = WordLevel::builder()
        .vocab(vocab)
        .unk_token("w0".into())
        .build()
        .unwrap();
    let tok = tokenizers::Tokenizer::new(wl);
    let m = model("gpt2");
    let greedy = GenerationConfig::greedy(10);
    let x = Tensor::new(&[[5u32, 17, 3, 40, 22, 9]], &Device::Cpu).unwrap();
    let full = m.generate(&x, &greedy).unwrap();
    let new = full.new_tokens(0).to_vec();
    // Stop at the text of the third new token.
    let stop = format!("w{}", new[2]);
    let first = new.iter().position(|t| format!("w{t}") == stop).unwrap();
    let cfg = GenerationConfig {
        stop_strings: vec![stop],
        ..greedy
    };
    let out = m.generate_with(&x, None, &cfg, Some(&tok)).unwrap();
    assert_eq!(out.new_tokens(0), &new[..=first]);
    // Streaming stops at the same token, and says why.
    let streamed = ferroformer::generation::generate_stream(
        m.decoder(),
        &[5, 17, 3, 40, 22, 9],
        &cfg,
        Some(&tok),
        |_| Ok(true),
    )
    .unwrap();
    assert_eq!(streamed.tokens, &new[..=first]);
    assert_eq!(
        streamed.stop_reason,
        ferroformer::generation::StopReason::StopString
    );
}

#[test]
fn logits_processors_match_transformers() {
    use ferroformer::generation::LogitsProcessor;
    let e = expected();
    let p = &e["processors"];
    let scores: Vec<f32> = serde_json::from_value(p["scores"].clone()).unwrap();
    let ids: Vec<u32> = serde_json::from_value(p["ids"].clone()).unwrap();
    let sampling = GenerationConfig {
        do_sample: true,
        ..Default::default()
    };
    // (case, config, prompt length, sampling warper or processor)
    let cases: Vec<(&str, GenerationConfig, usize, bool)> = vec![
        (
            "temperature_0.7",
            GenerationConfig {
                temperature: 0.7,
                ..sampling.clone()
            },
            0,
            true,
        ),
        (
            "top_k_3",
            GenerationConfig {
                top_k: 3,
                ..sampling.clone()
            },
            0,
            true,
        ),
        (
            "top_p_0.8",
            GenerationConfig {
                top_p: 0.8,
                ..sampling.clone()
            },
            0,
            true,
        ),
        (
            "top_p_0.3",
            GenerationConfig {
                top_p: 0.3,
                ..sampling.clone()
            },
            0,
            true,
        ),
        (
            "min_p_0.2",
            GenerationConfig {
                min_p: Some(0.2),
                ..sampling.clone()
            },
            0,
            true,
        ),
        (
            "repetition_penalty_1.5",
            GenerationConfig {
                repetition_penalty: 1.5,
                ..Default::default()
            },
            0,
            false,
        ),
        (
            "no_repeat_ngram_2",
            GenerationConfig {
                no_repeat_ngram_size: 2,
                ..Default::default()
            },
            0,
            false,
        ),
        (
            "no_repeat_ngram_3",
            GenerationConfig {
                no_repeat_ngram_size: 3,
                ..Default::default()
            },
            0,
            false,
        ),
        (
            "min_new_tokens_5_eos_4",
            GenerationConfig {
                min_new_tokens: Some(5),
                eos_token_id: vec![4],
                ..Default::default()
            },
            4,
            false,
        ),
    ];
    assert_eq!(cases.len(), p["outputs"].as_object().unwrap().len());
    for (name, cfg, prompt_len, warp) in cases {
        let want: Vec<Option<f32>> = serde_json::from_value(p["outputs"][name].clone()).unwrap();
        let proc = LogitsProcessor::new(&cfg, prompt_len);
        let mut got = scores.clone();
        if warp {
            proc.warp(&mut got);
        } else {
            proc.process(&ids, &mut got);
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            match w {
                None => assert_eq!(*g, f32::NEG_INFINITY, "{name}[{i}]"),
                Some(w) => assert!((g - w).abs() < 1e-5, "{name}[{i}]: {g} vs {w}"),
            }
        }
    }
}

#[test]
fn streaming_generate_agrees_with_generate_ids() {
    use ferroformer::generation::{generate_stream, StopReason};
    let e = expected();
    let prompt = [5u32, 17, 3, 40, 22, 9];
    for family in FAMILIES {
        let m = model(family);
        let eos = e["families"][family]["eos_candidate"].as_u64().unwrap() as u32;
        let greedy = GenerationConfig {
            eos_token_id: vec![eos],
            ..GenerationConfig::greedy(10)
        };
        let sampled = GenerationConfig {
            do_sample: true,
            temperature: 1.3,
            top_p: 0.95,
            repetition_penalty: 1.2,
            seed: 11,
            ..GenerationConfig::greedy(12)
        };
        for cfg in [&greedy, &sampled] {
            let mut seen = Vec::new();
            let streamed = generate_stream(m.decoder(), &prompt, cfg, None, |t| {
                seen.push(t);
                Ok(true)
            })
            .unwrap();
            assert_eq!(
                seen, streamed.tokens,
                "{family}: the callback saw every token"
            );
            let out = generate_ids(m.decoder(), &[prompt.to_vec()], None, cfg, None).unwrap();
            assert_eq!(out.new_tokens(0), streamed.tokens.as_slice(), "{family}");
            let want_reason = if streamed
                .tokens
                .last()
                .is_some_and(|t| cfg.eos_token_id.contains(t))
            {
                StopReason::Eos
            } else {
                StopReason::Length
            };
            assert_eq!(streamed.stop_reason, want_reason, "{family}");
        }
        // The greedy run with that eos is transformers' (and it stops at the eos).
        let streamed = generate_stream(m.decoder(), &prompt, &greedy, None, |_| Ok(true)).unwrap();
        let want = &ids(&e["families"][family]["cases"]["greedy_eos"]["sequences"])[0];
        let new = &want[prompt.len()..];
        let new = match new.iter().position(|&t| t == eos) {
            Some(p) => &new[..=p],
            None => new,
        };
        assert_eq!(new, streamed.tokens.as_slice(), "{family}");
        if streamed.stop_reason == StopReason::Eos {
            assert_eq!(
                streamed.tokens_without_eos(),
                &streamed.tokens[..streamed.tokens.len() - 1]
            );
        }
        // The callback can stop it.
        let stopped = generate_stream(m.decoder(), &prompt, &sampled, None, |_| Ok(false)).unwrap();
        assert_eq!(stopped.tokens.len(), 1, "{family}");
        assert_eq!(stopped.stop_reason, StopReason::Callback);
    }
}

#[test]
fn streaming_refuses_what_cannot_stream() {
    use ferroformer::generation::generate_stream;
    let m = model("gpt2");
    for (cfg, what) in [
        (
            GenerationConfig {
                num_beams: 2,
                ..GenerationConfig::greedy(4)
            },
            "num_beams",
        ),
        (
            GenerationConfig {
                do_sample: true,
                num_return_sequences: 2,
                ..GenerationConfig::greedy(4)
            },
            "num_return_sequences",
        ),
        (
            GenerationConfig {
                top_p: 0.0,
                ..GenerationConfig::greedy(4)
            },
            "top_p",
        ),
    ] {
        let err = generate_stream(m.decoder(), &[1, 2], &cfg, None, |_| Ok(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{err}");
    }
}
