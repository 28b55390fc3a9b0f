#!/usr/bin/env python3
"""Tiny random causal LMs of the Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 (text) and Phi-3
families, saved as `transformers` checkpoints with their logits, for
crates/ferroformer/tests/causal_lm_families.rs. Fixtures go to
tests/fixtures/families/<family>/: config.json and model.safetensors (the checkpoint) and
io.safetensors (input ids, a left-padding mask, the logits of row 0 alone and of the padded
batch).

Each model is small enough to commit (tens of KB) but exercises what its family adds:
sliding windows shorter than the 9-token inputs, Gemma's soft caps set low enough to bend
the scores, a head width that is not hidden/heads, Phi-3's partial rotary. The weights are
widened from the tiny default init so the logits are not all near zero.

tests/fixtures/families/phi3_longrope/: a Phi-3 with `longrope` RoPE scaling (Phi-3-mini-128k,
Phi-3.5-mini) whose original context is 8 positions (of 32), so a test crosses it:
io.safetensors holds a short input (6 tokens: short factors), a long one (14: long factors),
left-padded batches of two long rows, of two short rows and of one of each (`transformers`
picks the factors by the batch's largest position: long for both), and cached decoding from a
6-token prompt to 14 tokens (the prompt's keys stay short-factor keys).

Usage: /root/venvs/ref/bin/python scripts/reference/causal_lm_families_fixtures.py [FAMILY ...]
"""
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "families"))
VOCAB = 61
COMMON = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
              rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def families():
    T = transformers
    return {
        "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(
            **COMMON, sliding_window=4, rope_theta=10000.0, tie_word_embeddings=False)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(
            **COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1,
            rope_theta=10000.0, tie_word_embeddings=False)),
        "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(
            **COMMON, head_dim=8, rope_theta=10000.0, tie_word_embeddings=True)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(
            **COMMON, head_dim=8, query_pre_attn_scalar=6, sliding_window=4,
            attn_logit_softcapping=2.0, final_logit_softcapping=3.0, rope_theta=10000.0)),
        "gemma3_text": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(
            **COMMON, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_theta=1000000.0, rope_local_base_freq=10000.0,
            rope_scaling={"rope_type": "linear", "factor": 2.0})),
        "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(
            **COMMON, partial_rotary_factor=0.5, sliding_window=4, rope_theta=10000.0,
            tie_word_embeddings=False)),
    }


def widen(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                # Gemma's norms multiply by 1 + weight; the others by weight.
                base = 0.0 if "gemma" in type(model).__name__.lower() else 1.0
                p.copy_(base + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else 1.0 / p.shape[-1] ** 0.5))


def padded(ids, lengths):
    """Left-padded rows of `ids` with the given lengths: (ids, mask, position ids)."""
    width = max(lengths)
    rows = torch.zeros(len(lengths), width, dtype=ids.dtype)
    mask = torch.zeros(len(lengths), width, dtype=torch.uint8)
    for r, n in enumerate(lengths):
        rows[r, width - n:] = ids[r, :n]
        mask[r, width - n:] = 1
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return rows, mask, pos


def longrope():
    T = transformers
    torch.manual_seed(200)
    config = T.Phi3Config(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=32,
        original_max_position_embeddings=8, rms_norm_eps=1e-6, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, partial_rotary_factor=0.5, rope_theta=10000.0, tie_word_embeddings=False,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.25, 2.0, 3.5],
                      "long_factor": [1.5, 4.0, 9.0, 24.0]})
    model = T.Phi3ForCausalLM(config)
    model.config._attn_implementation = "eager"
    widen(model)
    model.eval()
    out = os.path.join(OUT, "phi3_longrope")
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    ids = torch.randint(3, VOCAB, (2, 14))
    tensors = {"io.input_ids": ids}
    with torch.no_grad():
        tensors["io.logits_short"] = model(ids[:1, :6]).logits
        tensors["io.logits_long"] = model(ids[:1]).logits
        for name, lengths in [("long", [14, 11]), ("short", [7, 4]), ("mixed", [14, 5])]:
            rows, mask, pos = padded(ids, lengths)
            tensors[f"io.batch_{name}_input_ids"] = rows
            tensors[f"io.batch_{name}_attention_mask"] = mask
            tensors[f"io.batch_{name}_logits"] = model(
                rows, attention_mask=mask.long(), position_ids=pos).logits
        step = model(ids[:1, :6], use_cache=True)
        cache, steps = step.past_key_values, [step.logits]
        for t in range(6, 14):
            step = model(ids[:1, t:t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            steps.append(step.logits)
        tensors["io.logits_cached"] = torch.cat(steps, 1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "io.safetensors"))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    gap = (tensors["io.logits_cached"] - tensors["io.logits_long"]).abs().max()
    print(f"phi3_longrope: {size} bytes, logits up to {tensors['io.logits_long'].abs().max():.2f}, "
          f"cached vs full {gap:.3f}")


def main():
    only = set(sys.argv[1:])
    if not only or "phi3_longrope" in only:
        longrope()
    for i, (family, make) in enumerate(families().items()):
        if only and family not in only:
            continue
        torch.manual_seed(100 + i)
        model = make()
        model.config._attn_implementation = "eager"
        widen(model)
        model.eval()
        out = os.path.join(OUT, family)
        os.makedirs(out, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        gen = os.path.join(out, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
        ids = torch.randint(3, VOCAB, (3, 9))
        lengths = [9, 6, 3]
        mask = torch.zeros(3, 9, dtype=torch.uint8)
        for r, n in enumerate(lengths):
            mask[r, 9 - n:] = 1
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            full = model(ids[:1]).logits
            padded = model(ids, attention_mask=mask.long(), position_ids=pos).logits
        save_file({"io.input_ids": ids.contiguous(), "io.attention_mask": mask.contiguous(),
                   "io.logits_row0": full.contiguous(), "io.logits_padded": padded.contiguous()},
                  os.path.join(out, "io.safetensors"))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"{family}: {size} bytes, logits up to {full.abs().max():.2f}")


if __name__ == "__main__":
    main()
