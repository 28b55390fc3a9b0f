#!/usr/bin/env python3
"""PyTorch + transformers side of scripts/bench/embeddings.py: all-MiniLM-L6-v2 sentence
embeddings (mean pooling, L2 normalize), batch 32, inference mode. Prints one JSON line."""
import json
import resource
import statistics
import sys
import time

import torch

sentences = [l for l in open(sys.argv[1], encoding="utf-8").read().splitlines() if l]
torch.set_num_threads(int(sys.argv[2]))
t0 = time.perf_counter()
from huggingface_hub import snapshot_download  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

path = snapshot_download("sentence-transformers/all-MiniLM-L6-v2", local_files_only=True)
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModel.from_pretrained(path).eval()
load_s = time.perf_counter() - t0


def embed(batch):
    enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def run():
    out = []
    for i in range(0, len(sentences), 32):
        out.append(embed(sentences[i:i + 32]))
    return torch.cat(out)


run()  # warm-up
times = []
for _ in range(3):
    t = time.perf_counter()
    vectors = run()
    times.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"sentences_per_s": len(sentences) / statistics.median(times), "load_s": load_s,
                  "peak_rss_mb": peak, "first_vector_sum": float(vectors[0].sum())}))
