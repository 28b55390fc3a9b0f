#!/usr/bin/env python3
"""`transformers`' text-generation pipeline and the sliding-window perplexity of its
perplexity guide, on the tiny trained GPT-2 of tests/fixtures/trained-gpt2 (a char-level
model our own `train lm` wrote; 16 positions), as tests/fixtures/text_generation.json.

Usage: python scripts/reference/text_generation_fixtures.py [--fixtures tests/fixtures]
"""
import argparse
import json
import math
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, pipeline

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

TEXT = ("ROMEO: But soft, what light through yonder window breaks?\n"
        "It is the east, and Juliet is the sun.\n") * 3


def guide_perplexity(model, ids, max_length, stride):
    """The loop of https://huggingface.co/docs/transformers/perplexity, verbatim in effect."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_valid = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid - target_ids.size(0)
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end = end
        if end == seq_len:
            break
    avg = nll_sum / n_tokens
    return {"perplexity": math.exp(avg), "nll_per_token": avg, "tokens": n_tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="tests/fixtures")
    args = ap.parse_args()
    path = os.path.join(args.fixtures, "trained-gpt2")
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    prompts = ["ROMEO:", "It is the", "But"]
    cases = []
    for name, kwargs in [
        ("greedy", {"do_sample": False, "max_new_tokens": 8}),
        ("greedy new text only", {"do_sample": False, "max_new_tokens": 6, "return_full_text": False}),
        ("beam 4 x2", {"do_sample": False, "num_beams": 4, "num_return_sequences": 2,
                       "max_new_tokens": 7}),
        ("repetition penalty", {"do_sample": False, "max_new_tokens": 8, "repetition_penalty": 1.5}),
    ]:
        expected = [gen(p, **kwargs) for p in prompts]
        cases.append({"name": name, "options": kwargs, "inputs": prompts, "expected": expected})
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    ppl = [dict(guide_perplexity(model, ids, 16, s), stride=s, context_length=16) for s in (16, 8, 5)]
    with open(os.path.join(args.fixtures, "text_generation.json"), "w") as f:
        json.dump({"model": "trained-gpt2", "cases": cases, "perplexity_text": TEXT,
                   "perplexity": ppl, "versions": {"torch": torch.__version__,
                                                   "transformers": transformers.__version__}},
                  f, indent=1)


if __name__ == "__main__":
    main()
