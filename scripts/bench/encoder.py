#!/usr/bin/env python3
"""Encoder forward-pass benchmark: ferroformer vs PyTorch, same machine, same run.

6 layers, d_model 384, 12 heads, FFN 1536, ReLU, post-norm; batch 32 x 64; f32; 2 threads
each. The two sides run alternately for several rounds (so drift in machine load hits both)
and the ratio of their medians is reported. Needs the reference virtual environment
(scripts/reference/requirements.txt) for PyTorch.

Usage: python scripts/bench/encoder.py [--python VENV_PYTHON] [--rounds 5] [--iters 10] [--masked]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="Python with torch installed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--masked", action="store_true", help="pad half of the rows")
    args = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "encoder", "--no-run"],
                   cwd=ROOT, check=True, env=env)
    extra = ["--masked"] if args.masked else []
    ours, theirs = [], []
    for r in range(args.rounds):
        out = subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "encoder", "--",
                              "--json", "--iters", str(args.iters)] + extra,
                             cwd=ROOT, check=True, env=env, capture_output=True, text=True).stdout
        ours.append(json.loads(out.strip().splitlines()[-1])["median_ms"])
        out = subprocess.run([args.python, os.path.join(ROOT, "scripts/bench/encoder_torch.py"),
                              str(args.threads), str(args.iters)] + extra,
                             check=True, env=env, capture_output=True, text=True).stdout
        theirs.append(json.loads(out.strip().splitlines()[-1])["median_ms"])
        print(f"round {r + 1}: ferroformer {ours[-1]:.1f} ms, pytorch {theirs[-1]:.1f} ms",
              file=sys.stderr)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(json.dumps({"benchmark": "encoder 6x384x12 batch 32x64" + (" masked" if args.masked else ""),
                      "threads": args.threads, "ferroformer_ms": o, "pytorch_ms": t,
                      "ratio_time_ours_over_pytorch": round(o / t, 3)}))


if __name__ == "__main__":
    main()
