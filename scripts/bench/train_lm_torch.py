#!/usr/bin/env python3
"""PyTorch side of the language-model training comparison.

Trains the same model as `ferroformer train lm --preset gpt2` (transformers' GPT2LMHeadModel
with the config ferroformer writes), on the same token stream (the tokenizer.json and the
corpus files of a ferroformer run), the same split (last val_fraction of the stream), the
same non-overlapping windows in a shuffled order, AdamW (decay on matrices but not on
embeddings, norms or biases), linear warmup + cosine decay, gradient clipping, and evaluates
on the same first validation windows. Prints JSON lines like ferroformer's --json.

Usage: python scripts/bench/train_lm_torch.py --run RUN_DIR [--max-minutes 10] [--max-steps N]
  RUN_DIR: a ferroformer run directory (reads config.json, tokenizer.json, training_state.json's config
  for the data and hyper-parameters).
"""
import argparse
import glob
import json
import math
import os
import time

import torch
from tokenizers import Tokenizer
from transformers import GPT2Config, GPT2LMHeadModel


def documents(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(glob.glob(os.path.join(p, "**", "*.txt"), recursive=True))
        else:
            out.append(p)
    return sorted(set(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    state = json.load(open(os.path.join(args.run, "training_state.json")))
    cfg = state["config"]
    max_steps = args.max_steps or cfg["max_steps"]
    tok = Tokenizer.from_file(os.path.join(args.run, "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for f in documents(cfg["data"]):
        text = open(f, encoding="utf-8").read()
        if text:
            ids += tok.encode(text, add_special_tokens=False).ids
            if eot is not None:
                ids.append(eot)
    n_val = round(len(ids) * cfg["val_fraction"])
    train = torch.tensor(ids[: len(ids) - n_val], dtype=torch.long)
    val = torch.tensor(ids[len(ids) - n_val:], dtype=torch.long)
    ctx, bs = cfg["context_length"], cfg["batch_size"]
    n_windows = (len(train) - 1) // ctx
    torch.manual_seed(cfg["seed"])
    model = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in json.load(
        open(os.path.join(args.run, "config.json"))).items() if k not in ("architectures",)}))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    plain = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": plain, "weight_decay": 0.0}],
                            lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=1e-8)
    min_lr = cfg["min_lr"] if cfg.get("min_lr") is not None else cfg["lr"] / 10
    warm = cfg["warmup_steps"]

    def lr_at(step):
        if step < warm:
            return cfg["lr"] * (step + 1) / warm
        if step >= max_steps:
            return min_lr
        prog = (step - warm) / (max_steps - warm)
        return min_lr + 0.5 * (1 + math.cos(math.pi * prog)) * (cfg["lr"] - min_lr)

    g = torch.Generator().manual_seed(cfg["seed"])
    order, pos = torch.randperm(n_windows, generator=g), 0

    def evaluate():
        model.eval()
        nv = min((len(val) - 1) // ctx, cfg["eval_windows"])
        total, count = 0.0, 0
        with torch.no_grad():
            for s in range(0, nv, bs):
                rows = range(s, min(nv, s + bs))
                x = torch.stack([val[r * ctx: r * ctx + ctx] for r in rows])
                y = torch.stack([val[r * ctx + 1: r * ctx + ctx + 1] for r in rows])
                loss = model(x, labels=None).logits.flatten(0, 1)
                total += torch.nn.functional.cross_entropy(loss, y.flatten()).item() * len(rows)
                count += len(rows)
        model.train()
        return total / count

    start = time.perf_counter()
    window_start, window_tokens = time.perf_counter(), 0
    step = 0
    while step < max_steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg["grad_accum"]):
            if pos + bs > n_windows:
                order, pos = torch.randperm(n_windows, generator=g), 0
            w = order[pos: pos + bs]
            pos += bs
            x = torch.stack([train[i * ctx: i * ctx + ctx] for i in w.tolist()])
            y = torch.stack([train[i * ctx + 1: i * ctx + ctx + 1] for i in w.tolist()])
            logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            (loss / cfg["grad_accum"]).backward()
            total += loss.item()
        if cfg["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        step += 1
        window_tokens += bs * ctx * cfg["grad_accum"]
        elapsed = time.perf_counter() - start
        out_of_time = args.max_minutes is not None and elapsed >= args.max_minutes * 60
        if step % cfg["log_every"] == 0 or step == max_steps or out_of_time:
            now = time.perf_counter()
            print(json.dumps({"event": "step", "step": step, "loss": total / cfg["grad_accum"],
                              "lr": lr_at(step - 1), "elapsed_s": round(elapsed, 2),
                              "tokens_per_sec": window_tokens / (now - window_start)}), flush=True)
            window_start, window_tokens = now, 0
        if step % cfg["eval_every"] == 0 or step == max_steps or out_of_time:
            v = evaluate()
            print(json.dumps({"event": "eval", "step": step, "val_loss": v, "perplexity": math.exp(v),
                              "elapsed_s": round(time.perf_counter() - start, 2)}), flush=True)
        if out_of_time:
            break


if __name__ == "__main__":
    main()
