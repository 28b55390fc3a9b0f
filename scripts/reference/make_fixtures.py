#!/usr/bin/env python3
"""Builds the parity fixtures under tests/fixtures/ from PyTorch and `transformers`.

Every case seeds the RNG, builds the reference module, and writes one safetensors file with
the module's parameters under `model.<state_dict name>` and the inputs / expected outputs
under `io.<name>`. Attention masks are stored in Hugging Face's convention (u8, 1 = attend).
Tiny `transformers` checkpoints are written with `save_pretrained` in their own directory.

Usage: python scripts/reference/make_fixtures.py [--out tests/fixtures]
"""
import argparse
import json
import math
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

torch.set_num_threads(1)


def save(path, model_state, io):
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model_state.items()}
    for k, v in io.items():
        tensors[f"io.{k}"] = v.detach().contiguous().clone()
    save_file(tensors, path)


def lengths_to_mask(lengths, total, left=False):
    """(batch, total) u8 mask with 1 on the real tokens."""
    m = torch.zeros(len(lengths), total, dtype=torch.uint8)
    for i, n in enumerate(lengths):
        if left:
            m[i, total - n:] = 1
        else:
            m[i, :n] = 1
    return m


def kpm(mask_u8):
    """HF mask (1 = attend) -> PyTorch key_padding_mask (True = ignore)."""
    return mask_u8 == 0


def causal(n):
    return torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)


def sinusoidal(out):
    d, n = 16, 50
    pe = torch.zeros(n, d, dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), i / d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    save(f"{out}/sinusoidal.safetensors", {}, {"pe": pe.float()})


def mha(out):
    torch.manual_seed(0)
    m = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(3, 7, 16)
    mask = lengths_to_mask([7, 4, 2], 7)
    mem = torch.randn(3, 9, 16)
    mem_mask = lengths_to_mask([9, 5, 3], 9, left=True)
    q = torch.randn(3, 5, 16)
    with torch.no_grad():
        pad_out, pad_w = m(x, x, x, key_padding_mask=kpm(mask), average_attn_weights=False)
        causal_out, causal_w = m(x, x, x, key_padding_mask=kpm(mask), attn_mask=causal(7),
                                 average_attn_weights=False)
        cross_out, _ = m(q, mem, mem, key_padding_mask=kpm(mem_mask))
        plain_out, _ = m(x, x, x)
    save(f"{out}/mha.safetensors", m.state_dict(), {
        "x": x, "mask": mask, "memory": mem, "memory_mask": mem_mask, "query": q,
        "padded_out": pad_out, "padded_weights": pad_w,
        "causal_out": causal_out, "causal_weights": causal_w,
        "cross_out": cross_out, "plain_out": plain_out,
    })


def layers(out):
    for norm_first in (False, True):
        tag = "pre" if norm_first else "post"
        torch.manual_seed(1)
        enc = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True,
                                         norm_first=norm_first).eval()
        x = torch.randn(3, 7, 16)
        mask = lengths_to_mask([7, 5, 3], 7)
        # Gradients enabled: keeps PyTorch off its inference fast path, which zeroes padded
        # rows; we compare the standard math.
        y = enc(x, src_key_padding_mask=kpm(mask))
        save(f"{out}/encoder_layer_{tag}.safetensors", enc.state_dict(),
             {"x": x, "mask": mask, "out": y})

        torch.manual_seed(2)
        dec = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True,
                                         norm_first=norm_first, activation="gelu").eval()
        tgt = torch.randn(3, 5, 16)
        tgt_mask = lengths_to_mask([5, 3, 4], 5)
        mem = torch.randn(3, 7, 16)
        mem_mask = lengths_to_mask([7, 6, 2], 7)
        y = dec(tgt, mem, tgt_mask=causal(5), tgt_key_padding_mask=kpm(tgt_mask),
                memory_key_padding_mask=kpm(mem_mask))
        save(f"{out}/decoder_layer_{tag}.safetensors", dec.state_dict(),
             {"tgt": tgt, "tgt_mask": tgt_mask, "memory": mem, "memory_mask": mem_mask, "out": y})


def transformer(out):
    torch.manual_seed(3)
    model = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=32, dropout=0.0, batch_first=True).train()
    src = torch.randn(3, 8, 16)
    src_mask = lengths_to_mask([8, 5, 3], 8)
    tgt = torch.randn(3, 6, 16)
    tgt_mask = lengths_to_mask([6, 4, 2], 6)
    y = model(src, tgt, tgt_mask=causal(6), src_key_padding_mask=kpm(src_mask),
              tgt_key_padding_mask=kpm(tgt_mask), memory_key_padding_mask=kpm(src_mask))
    # A loss that weighs every real output differently, so every gradient is non-trivial.
    weights = torch.randn(3, 6, 16) * tgt_mask[:, :, None].float()
    loss = (y * weights).sum()
    loss.backward()
    io = {"src": src, "src_mask": src_mask, "tgt": tgt, "tgt_mask": tgt_mask, "out": y,
          "loss_weights": weights, "loss": loss.reshape(1)}
    for name, p in model.named_parameters():
        io[f"grad.{name}"] = p.grad
    save(f"{out}/transformer.safetensors", model.state_dict(), io)


def rope(out):
    from transformers.models.llama.modeling_llama import (LlamaConfig, LlamaRotaryEmbedding,
                                                          apply_rotary_pos_emb)
    torch.manual_seed(4)
    cfg = LlamaConfig(hidden_size=32, num_attention_heads=4, rope_theta=10000.0,
                      max_position_embeddings=64)
    rot = LlamaRotaryEmbedding(cfg)
    q = torch.randn(2, 4, 6, 8)
    k = torch.randn(2, 4, 6, 8)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 8, 9, 10, 11, 12]])
    cos, sin = rot(q, pos)
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)
    # Interleaved layout (GPT-J / RoFormer): pairs (x[2i], x[2i+1]).
    half_cos = cos[..., : cos.shape[-1] // 2][:, None]
    half_sin = sin[..., : sin.shape[-1] // 2][:, None]
    x1, x2 = q[..., 0::2], q[..., 1::2]
    q_inter = torch.stack([x1 * half_cos - x2 * half_sin, x2 * half_cos + x1 * half_sin],
                          dim=-1).flatten(-2)
    save(f"{out}/rope.safetensors", {}, {"q": q, "k": k, "position_ids": pos,
                                         "q_rot": q_rot, "k_rot": k_rot, "q_interleaved": q_inter})


def llama_blocks(out):
    from transformers.models.llama.modeling_llama import LlamaConfig, LlamaMLP, LlamaRMSNorm
    torch.manual_seed(5)
    norm = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16))
    x = torch.randn(3, 5, 16)
    save(f"{out}/rmsnorm.safetensors", norm.state_dict(), {"x": x, "out": norm(x)})
    cfg = LlamaConfig(hidden_size=16, intermediate_size=40, hidden_act="silu")
    mlp = LlamaMLP(cfg)
    save(f"{out}/swiglu.safetensors", mlp.state_dict(), {"x": x, "out": mlp(x)})


def tiny_gpt2(out):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(6)
    cfg = GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).eval()
    d = f"{out}/tiny-gpt2"
    model.save_pretrained(d, safe_serialization=True)
    ids = torch.randint(0, 101, (3, 9))
    mask = lengths_to_mask([9, 6, 3], 9, left=True)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids[:1]).logits
        padded = model(ids, attention_mask=mask.long(), position_ids=pos).logits
    save(f"{out}/tiny-gpt2-io.safetensors", {}, {
        "input_ids": ids, "attention_mask": mask, "logits_row0": full, "logits_padded": padded})


def tiny_bert(out):
    from transformers import BertConfig, BertModel
    torch.manual_seed(7)
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(cfg).eval()
    d = f"{out}/tiny-bert"
    model.save_pretrained(d, safe_serialization=True)
    ids = torch.randint(0, 99, (3, 8))
    mask = lengths_to_mask([8, 5, 2], 8)
    types = torch.zeros(3, 8, dtype=torch.long)
    types[:, 4:] = 1
    with torch.no_grad():
        o = model(ids, attention_mask=mask.long(), token_type_ids=types)
    save(f"{out}/tiny-bert-io.safetensors", {}, {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types,
        "last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output})


def tiny_llama(out):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(8)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(f"{out}/tiny-llama", safe_serialization=True)
    ids = torch.randint(0, 97, (3, 9))
    mask = lengths_to_mask([9, 6, 3], 9, left=True)
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids[:1]).logits
        padded = model(ids, attention_mask=mask.long(), position_ids=pos).logits
    save(f"{out}/tiny-llama-io.safetensors", {}, {
        "input_ids": ids, "attention_mask": mask, "logits_row0": full, "logits_padded": padded})


def trained_checkpoints(out):
    """Checkpoints written by `ferroformer train lm` (gpt2 and llama presets) must load in
    `transformers` as GPT2LMHeadModel / LlamaForCausalLM and give our logits."""
    import shutil
    import subprocess
    import tempfile
    from transformers import AutoModelForCausalLM
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    cli = ["cargo", "run", "-q", "--release", "-p", "ferroformer-cli", "--"]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("To be, or not to be, that is the question:\n" * 50)
        tok = os.path.join(tmp, "tokenizer.json")
        subprocess.run(cli + ["tokenizer", "train", "--kind", "char", "--vocab-size", "100", "-o", tok,
                              corpus], cwd=root, check=True)
        for preset in ("gpt2", "llama"):
            run = os.path.join(tmp, preset)
            subprocess.run(cli + ["train", "lm", "--preset", preset, "--data", corpus, "--tokenizer", tok,
                                  "--out", run, "--layers", "2", "--d-model", "32", "--heads", "4",
                                  "--kv-heads", "4" if preset == "gpt2" else "2",
                                  "--context-length", "16", "--batch-size", "4", "--max-steps", "5",
                                  "--warmup-steps", "1", "--eval-windows", "4", "--seed", "3"],
                           cwd=root, check=True)
            dest = f"{out}/trained-{preset}"
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
                shutil.copy(os.path.join(run, name), dest)
            model = AutoModelForCausalLM.from_pretrained(dest).eval()
            ids = torch.tensor([[1, 5, 9, 2, 7, 3, 3, 8, 4, 6, 10, 2]])
            with torch.no_grad():
                logits = model(ids).logits
            save(f"{out}/trained-{preset}-io.safetensors", {}, {"input_ids": ids, "logits": logits})


def real_minilm(out):
    """The real all-MiniLM-L6-v2 (fetched by scripts/fetch_models.py) on two sentences."""
    import subprocess
    import sys
    from transformers import AutoTokenizer, BertModel
    here = os.path.dirname(os.path.abspath(__file__))
    snap = subprocess.run([sys.executable, os.path.join(here, "..", "fetch_models.py"),
                           "all-minilm-l6-v2"], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]
    tok = AutoTokenizer.from_pretrained(snap)
    model = BertModel.from_pretrained(snap).eval()
    sentences = ["The quick brown fox jumps over the lazy dog near the river bank.",
                 "Rust is fast."]
    enc = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        o = model(**enc)
    m = enc["attention_mask"][:, :, None].float()
    emb = (o.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
    io = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].to(torch.uint8),
          "token_type_ids": enc["token_type_ids"], "last_hidden_state": o.last_hidden_state,
          "sentence_embedding": emb}
    if o.pooler_output is not None:
        io["pooler_output"] = o.pooler_output
    save(f"{out}/minilm-io.safetensors", {}, io)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for case in (sinusoidal, mha, layers, transformer, rope, llama_blocks, tiny_gpt2, tiny_bert,
                 tiny_llama, trained_checkpoints, real_minilm):
        case(out)
        print(f"wrote {case.__name__}")
    with open(f"{out}/VERSIONS.json", "w") as f:
        import transformers
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f,
                  indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
