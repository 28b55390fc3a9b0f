#!/usr/bin/env python3
"""Builds tests/fixtures/generation/: tiny random causal LMs saved with `save_pretrained`
and what `transformers`' `generate` returns for them (token ids, beam scores), plus
reference logits.

Models: GPT-2, Llama (grouped-query attention, untied LM head), Qwen2 (q/k/v biases,
tied embeddings) and Llama with Llama 3 RoPE scaling. The weights are scaled up
(initializer_range 0.5+) so greedy and beam choices are not near-ties between tokens.

Every case is one `generate` call; `expected.json` lists them with their kwargs, so the
Rust test maps the same kwargs onto `GenerationConfig`.

Usage: python scripts/reference/generation_fixtures.py [--out tests/fixtures/generation]
"""
import argparse
import json
import os

import torch
import transformers
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

torch.set_num_threads(1)
VOCAB = 48


def build(name):
    torch.manual_seed({"gpt2": 1, "llama": 2, "qwen2": 3, "llama3": 4}[name])
    if name == "gpt2":
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                         initializer_range=0.5, bos_token_id=0, eos_token_id=1)
        model = GPT2LMHeadModel(cfg)
    elif name == "qwen2":
        cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, initializer_range=0.5,
                          tie_word_embeddings=True, bos_token_id=0, eos_token_id=1)
        model = Qwen2ForCausalLM(cfg)
        # Random init leaves the q/k/v biases at zero: give them values so they matter.
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                             layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.5)
    else:
        extra = {}
        head_dim = 4
        if name == "llama3":
            # head_dim 8: wavelengths 6.3, 63, 628, 6283 cover the three llama3 bands
            # (high frequency kept, medium smoothed, low divided by `factor`).
            head_dim = 8
            extra["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64}
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          head_dim=head_dim, max_position_embeddings=128,
                          initializer_range=0.5, tie_word_embeddings=False,
                          bos_token_id=0, eos_token_id=1, **extra)
        model = LlamaForCausalLM(cfg)
    # RMSNorm / LayerNorm weights start at one; perturb them so a wrong norm shows.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or ".ln_" in n:
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


PROMPT = [5, 17, 3, 40, 22, 9]
BATCH = [[5, 17, 3, 40, 22, 9], [30, 2, 11], [7, 44, 19, 25, 13]]
PAD = 0


def run(model, prompts, kwargs):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True,
                         output_scores=True, **kwargs)
    res = {"sequences": out.sequences.tolist()}
    if getattr(out, "sequences_scores", None) is not None:
        res["sequences_scores"] = out.sequences_scores.tolist()
    return res


def processors():
    """Each logits processor / warper on one fixed row of scores (sampling cannot be
    compared through torch's RNG, so the warpers are compared directly)."""
    from transformers.generation.logits_process import (
        MinNewTokensLengthLogitsProcessor, MinPLogitsWarper, NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
        TopPLogitsWarper)
    torch.manual_seed(5)
    scores = (torch.randn(1, 16) * 2.0).float()
    ids = torch.tensor([[3, 7, 3, 9, 1, 3, 7]])
    procs = {
        "temperature_0.7": TemperatureLogitsWarper(0.7),
        "top_k_3": TopKLogitsWarper(3),
        "top_p_0.8": TopPLogitsWarper(0.8),
        "top_p_0.3": TopPLogitsWarper(0.3),
        "min_p_0.2": MinPLogitsWarper(0.2),
        "repetition_penalty_1.5": RepetitionPenaltyLogitsProcessor(1.5),
        "no_repeat_ngram_2": NoRepeatNGramLogitsProcessor(2),
        "no_repeat_ngram_3": NoRepeatNGramLogitsProcessor(3),
        "min_new_tokens_5_eos_4": MinNewTokensLengthLogitsProcessor(4, 5, 4),
    }
    out = {"scores": scores[0].tolist(), "ids": ids[0].tolist(), "outputs": {}}
    for name, p in procs.items():
        r = p(ids, scores.clone())[0]
        # JSON has no -inf: masked entries become null.
        out["outputs"][name] = [None if x == float("-inf") else x for x in r.tolist()]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/generation")
    args = ap.parse_args()
    expected = {"pad_token_id": PAD, "families": {}}
    for name in ["gpt2", "llama", "qwen2", "llama3"]:
        model = build(name)
        d = os.path.join(args.out, name)
        model.save_pretrained(d, safe_serialization=True)
        if os.path.exists(os.path.join(d, "generation_config.json")):
            os.remove(os.path.join(d, "generation_config.json"))
        fam = {}
        long_prompt = [(7 * i + 3) % VOCAB for i in range(40)]
        with torch.no_grad():
            fam["logits_input"] = long_prompt
            # The last 8 positions only (where Llama 3 scaling matters most), rounded to
            # 1e-6: the tests compare at 1e-4 and the fixtures stay small.
            logits = model(torch.tensor([long_prompt])).logits[0, -8:]
            fam["logits_last"] = [[round(x, 6) for x in row] for row in logits.tolist()]
        base = dict(do_sample=False, max_new_tokens=10, pad_token_id=PAD)
        greedy = run(model, [PROMPT], base)
        gen = greedy["sequences"][0][len(PROMPT):]
        # An eos that greedy decoding emits as its 2nd new token (and not before).
        eos = next(t for t in gen[1:] if t != gen[0])
        cases = {
            "greedy": ([PROMPT], dict(base)),
            "greedy_eos": ([PROMPT], dict(base, eos_token_id=eos)),
            "min_new_tokens": ([PROMPT], dict(base, eos_token_id=eos, min_new_tokens=6)),
            "repetition_penalty": ([PROMPT], dict(base, repetition_penalty=1.8)),
            "no_repeat_ngram": ([PROMPT], dict(base, no_repeat_ngram_size=2)),
            "beam4": ([PROMPT], dict(base, num_beams=4)),
            "beam4_eos": ([PROMPT], dict(base, num_beams=4, eos_token_id=eos)),
            "beam4_length_penalty": ([PROMPT], dict(base, num_beams=4, eos_token_id=eos,
                                                    length_penalty=2.0)),
            "beam4_negative_length_penalty": ([PROMPT], dict(base, num_beams=4,
                                                             eos_token_id=eos,
                                                             length_penalty=-1.0)),
            "beam4_return2": ([PROMPT], dict(base, num_beams=4, num_return_sequences=2,
                                             eos_token_id=eos)),
            "beam4_early_stopping": ([PROMPT], dict(base, num_beams=4, eos_token_id=eos,
                                                    early_stopping=True)),
            "beam4_never": ([PROMPT], dict(base, num_beams=4, eos_token_id=eos,
                                           early_stopping="never")),
            "batch_greedy": (BATCH, dict(base)),
            "batch_greedy_eos": (BATCH, dict(base, eos_token_id=eos)),
            "batch_beam4": (BATCH, dict(base, num_beams=4, num_return_sequences=2,
                                        eos_token_id=eos)),
        }
        fam["eos_candidate"] = eos
        fam["cases"] = {}
        for case, (prompts, kw) in cases.items():
            r = run(model, prompts, kw)
            fam["cases"][case] = {"prompts": prompts, "kwargs": kw, **r}
        expected["families"][name] = fam
    expected["processors"] = processors()
    expected["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
