//! Continuous batching ([`BatchDecoder`]): sequences that join and leave a running batch at
//! different steps get the tokens they get alone ([`generate_stream`]), for every family of
//! the generation fixtures and for a GGUF model's llama.cpp arithmetic when it is cached.

mod common;

use ferroformer::generation::{generate_stream, BatchDecoder, ExtraSampling, SequenceSampler};
use ferroformer::models::LoadOptions;
use ferroformer::{AutoModelForCausalLM, GenerationConfig};

const FAMILIES: [&str; 4] = ["gpt2", "llama", "qwen2", "llama3"];

fn model(family: &str) -> AutoModelForCausalLM {
    AutoModelForCausalLM::from_dir(
        &common::fixtures().join("generation").join(family),
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{family}: {e}"))
}

/// Runs `prompts` through one batch: prompt `i` joins at step `joins[i]` and generates
/// `new[i]` tokens greedily; returns each one's tokens.
fn batched(
    m: &ferroformer::arch::DecoderOnlyTransformer,
    prompts: &[Vec<u32>],
    joins: &[usize],
    new: &[usize],
) -> Vec<Vec<u32>> {
    let mut batch = BatchDecoder::new(m);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    // Running rows: (prompt index, sequence so far, sampler).
    let mut running: Vec<(usize, Vec<u32>, SequenceSampler)> = Vec::new();
    let mut step = 0;
    while out.iter().zip(new).any(|(o, &n)| o.len() < n) {
        // Rows with all their tokens leave; new prompts are prefilled and join.
        let keep: Vec<bool> = running
            .iter()
            .map(|(i, _, _)| out[*i].len() < new[*i])
            .collect();
        let mut joining = Vec::new();
        let mut joined = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            if joins[i] == step {
                let (cache, mut scores) = batch.prefill(p).unwrap();
                let mut s = SequenceSampler::new(
                    GenerationConfig::greedy(new[i]),
                    ExtraSampling::default(),
                    p.len(),
                );
                let t = s.choose(p, &mut scores).token;
                out[i].push(t);
                let mut seq = p.clone();
                seq.push(t);
                joining.push(cache);
                joined.push((i, seq, s));
            }
        }
        batch.update(&keep, joining).unwrap();
        let mut k = keep.into_iter();
        running.retain(|_| k.next().unwrap());
        running.extend(joined);
        assert_eq!(batch.rows(), running.len());
        if batch.rows() > 0 {
            let tokens: Vec<u32> = running.iter().map(|(_, s, _)| *s.last().unwrap()).collect();
            let scores = batch.step(&tokens).unwrap();
            for ((i, seq, s), mut sc) in running.iter_mut().zip(scores) {
                let t = s.choose(seq, &mut sc).token;
                seq.push(t);
                if out[*i].len() < new[*i] {
                    out[*i].push(t);
                }
            }
        }
        step += 1;
    }
    out
}

#[test]
fn rows_joining_and_leaving_get_the_tokens_they_get_alone() {
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 17, 42, 9, 3, 11, 8],
        vec![2, 7],
        vec![30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41],
        vec![12, 4, 19, 25],
    ];
    let joins = [0, 0, 3, 5];
    let new = [9, 4, 7, 6];
    for family in FAMILIES {
        let m = model(family);
        let got = batched(m.decoder(), &prompts, &joins, &new);
        for (i, p) in prompts.iter().enumerate() {
            let alone = generate_stream(
                m.decoder(),
                p,
                &GenerationConfig::greedy(new[i]),
                None,
                |_| Ok(true),
            )
            .unwrap();
            assert_eq!(got[i], alone.tokens, "{family} prompt {i}");
        }
    }
}
