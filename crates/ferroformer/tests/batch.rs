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
        let leaving: Vec<u64> = running
            .iter()
            .filter(|(i, _, _)| out[*i].len() >= new[*i])
            .map(|(i, _, _)| *i as u64)
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
                joining.push((i as u64, cache));
                joined.push((i, seq, s));
            }
        }
        batch.update(&leaving, joining).unwrap();
        running.retain(|(i, _, _)| !leaving.contains(&(*i as u64)));
        running.extend(joined);
        assert_eq!(batch.rows(), running.len());
        if batch.rows() > 0 {
            let tokens: Vec<(u64, u32)> = running
                .iter()
                .map(|(i, s, _)| (*i as u64, *s.last().unwrap()))
                .collect();
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
        vec![30, 31, 32, 33, 34],
        vec![12, 4, 19, 25],
        (1..=30).collect(),
    ];
    // Prompt 2 joins into the slot prompt 1 left at step 3 (it fits the batch's width of 10);
    // prompt 4 is wider than the batch and makes it rebuild.
    let joins = [0, 0, 3, 5, 7];
    let new = [9, 4, 7, 6, 5];
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

#[test]
fn a_batch_cut_narrower_keeps_every_rows_tokens() {
    // The long row leaves while the short one, which pads most of the batch's width, goes on:
    // the batch is rebuilt without the columns nobody needs.
    let prompts: Vec<Vec<u32>> = vec![vec![3, 9], vec![7, 1, 22], vec![5, 6, 7, 8]];
    let joins = [0, 80, 85];
    let new = [100, 25, 30];
    for family in ["llama", "llama3"] {
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
