//! Output constrained to a JSON object ([`JsonConstraint`]) on a tiny random model whose
//! vocabulary holds the JSON punctuation (tests/fixtures/serve-json-llama): left alone it
//! writes no JSON, constrained it writes an object `serde_json` parses, greedy and sampled,
//! alone and in a batch with other rows.

mod common;

use std::sync::Arc;

use ferroformer::generation::{
    generate_stream, generate_with_sampler, BatchDecoder, ExtraSampling, JsonConstraint,
    LanguageModel, SequenceSampler, TokenBytes,
};
use ferroformer::models::LoadOptions;
use ferroformer::GenerationConfig;

fn lm() -> LanguageModel {
    LanguageModel::from_dir(
        &common::fixtures().join("serve-json-llama"),
        &LoadOptions::default(),
    )
    .expect("serve-json-llama fixture")
}

fn table(lm: &LanguageModel) -> Arc<TokenBytes> {
    let vocab = lm.decoder().config().embeddings.vocab_size;
    Arc::new(TokenBytes::from_tokenizer(lm.tokenizer.inner(), vocab))
}

const EOS: u32 = 1;

fn parses_as_object(text: &str) -> bool {
    matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    )
}

fn sampler(
    cfg: &GenerationConfig,
    prompt: &[u32],
    json: Option<&Arc<TokenBytes>>,
) -> SequenceSampler {
    let s = SequenceSampler::new(cfg.clone(), ExtraSampling::default(), prompt.len());
    match json {
        Some(t) => s.with_json(JsonConstraint::new(Arc::clone(t), &[EOS]).unwrap()),
        None => s,
    }
}

/// The new tokens' text, the end of sequence left out.
fn text(lm: &LanguageModel, tokens: &[u32]) -> String {
    lm.tokenizer.decode(tokens, true).unwrap()
}

#[test]
fn table_maps_the_character_vocabulary() {
    let lm = lm();
    let t = table(&lm);
    assert_eq!(t.len(), 48);
    for special in 0..4 {
        assert_eq!(t.get(special), None);
    }
    assert_eq!(t.get(6), Some(&b"{"[..]));
    assert_eq!(t.get(10), Some(&b"\""[..]));
}

#[test]
fn greedy_output_is_an_object_only_when_constrained() {
    let lm = lm();
    let t = table(&lm);
    let m = lm.decoder();
    let prompt = lm
        .tokenizer
        .encode("give me json: {\"a\": 1}", false)
        .unwrap();
    let mut cfg = GenerationConfig::greedy(40);
    cfg.eos_token_id = vec![EOS];
    // Unconstrained: the one-row batch gives generate_stream's tokens, and they are no JSON.
    let free =
        generate_with_sampler(m, &prompt, &mut sampler(&cfg, &prompt, None), 40, &[EOS]).unwrap();
    let reference = generate_stream(m, &prompt, &cfg, None, |_| Ok(true)).unwrap();
    assert_eq!(free.tokens, reference.tokens);
    let free_text = text(&lm, &free.tokens);
    assert!(!parses_as_object(&free_text), "{free_text:?}");
    for max_new in [8, 40, 100] {
        cfg.max_new_tokens = Some(max_new);
        let mut s = sampler(&cfg, &prompt, Some(&t));
        let out = generate_with_sampler(m, &prompt, &mut s, max_new, &[EOS]).unwrap();
        let s_text = text(&lm, &out.tokens);
        assert!(parses_as_object(&s_text), "max {max_new}: {s_text:?}");
        assert_eq!(
            out.tokens.last(),
            Some(&EOS),
            "ends with the end of sequence"
        );
        assert!(out.tokens.len() <= max_new);
        assert!(s.json().unwrap().is_complete());
    }
    // Alternatives reported with each token are tokens the constraint allows.
    let extra = ExtraSampling {
        top_logprobs: 5,
        ..Default::default()
    };
    let mut s = SequenceSampler::new(cfg.clone(), extra, prompt.len())
        .with_json(JsonConstraint::new(Arc::clone(&t), &[EOS]).unwrap());
    let ids = prompt.clone();
    let mut scores = {
        let (_, sc) = BatchDecoder::new(m).prefill(&prompt).unwrap();
        sc
    };
    let first = s.choose(&ids, &mut scores);
    // Whitespace or the opening brace: nothing else starts a JSON object.
    let piece = lm.tokenizer.decode(&[first.token], true).unwrap();
    assert!(matches!(piece.trim_start(), "" | "{"), "{piece:?}");
    assert!(!first.top.is_empty());
    assert!(first.top.iter().all(|a| a.logprob.is_finite()), "{first:?}");
}

#[test]
fn sampled_output_is_an_object() {
    let lm = lm();
    let t = table(&lm);
    let prompt = lm.tokenizer.encode("json please", false).unwrap();
    let mut objects = std::collections::HashSet::new();
    for seed in 0..8 {
        let mut cfg = GenerationConfig::greedy(60);
        cfg.do_sample = true;
        cfg.temperature = 1.5;
        cfg.top_p = 0.95;
        cfg.seed = seed;
        cfg.eos_token_id = vec![EOS];
        let mut free = sampler(&cfg, &prompt, None);
        let free = generate_with_sampler(lm.decoder(), &prompt, &mut free, 60, &[EOS]).unwrap();
        assert!(!parses_as_object(&text(&lm, &free.tokens)));
        let mut s = sampler(&cfg, &prompt, Some(&t));
        let out = generate_with_sampler(lm.decoder(), &prompt, &mut s, 60, &[EOS]).unwrap();
        let s_text = text(&lm, &out.tokens);
        assert!(parses_as_object(&s_text), "seed {seed}: {s_text:?}");
        objects.insert(s_text);
    }
    // Sampling explores: not every seed writes the same object.
    assert!(objects.len() > 1, "{objects:?}");
}

#[test]
fn constrained_rows_in_a_batch_get_what_they_get_alone() {
    let lm = lm();
    let t = table(&lm);
    let m = lm.decoder();
    let prompts: Vec<Vec<u32>> = ["a", "nested arrays please", "{\"x\":"]
        .iter()
        .map(|p| lm.tokenizer.encode(p, false).unwrap())
        .collect();
    let mut cfg = GenerationConfig::greedy(30);
    cfg.eos_token_id = vec![EOS];
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            generate_with_sampler(m, p, &mut sampler(&cfg, p, Some(&t)), 30, &[EOS])
                .unwrap()
                .tokens
        })
        .collect();
    // The same three, plus an unconstrained row, decoding together.
    let mut batch = BatchDecoder::new(m);
    let mut rows: Vec<(u64, Vec<u32>, SequenceSampler, Vec<u32>)> = Vec::new();
    let mut joining = Vec::new();
    for (i, p) in prompts.iter().chain([&prompts[0]]).enumerate() {
        let (cache, mut scores) = batch.prefill(p).unwrap();
        let mut s = sampler(&cfg, p, (i < 3).then_some(&t));
        let tok = s.choose(p, &mut scores).token;
        let mut ids = p.clone();
        ids.push(tok);
        joining.push((i as u64, cache));
        rows.push((i as u64, ids, s, vec![tok]));
    }
    batch.update(&[], joining).unwrap();
    let mut done: Vec<Vec<u32>> = vec![Vec::new(); 4];
    while !rows.is_empty() {
        let leaving: Vec<u64> = rows
            .iter()
            .filter(|r| r.3.last() == Some(&EOS) || r.3.len() >= 30)
            .map(|r| r.0)
            .collect();
        rows.retain(|r| {
            if leaving.contains(&r.0) {
                done[r.0 as usize] = r.3.clone();
                false
            } else {
                true
            }
        });
        batch.update(&leaving, Vec::new()).unwrap();
        if rows.is_empty() {
            break;
        }
        let tokens: Vec<(u64, u32)> = rows.iter().map(|r| (r.0, *r.1.last().unwrap())).collect();
        let scores = batch.step(&tokens).unwrap();
        for (r, mut sc) in rows.iter_mut().zip(scores) {
            let tok = r.2.choose(&r.1, &mut sc).token;
            r.1.push(tok);
            r.3.push(tok);
        }
    }
    assert_eq!(&done[..3], &alone[..]);
    for d in &done[..3] {
        assert!(parses_as_object(&text(&lm, d)), "{:?}", text(&lm, d));
    }
}
