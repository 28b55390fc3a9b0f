#!/usr/bin/env python3
"""Sentence-embedding throughput of all-MiniLM-L6-v2: ferroformer vs PyTorch + transformers,
same machine, same run, same sentences.

Both sides go from raw texts to L2-normalized mean-pooled vectors (tokenize with padding to
the longest sentence of the batch, encode, pool), batch 32, f32, 2 threads. The sentences
(512 of about 20 tokens, seeded) are written to a temporary file both sides read. The two
sides alternate for several rounds and the ratio of their median throughputs is reported,
with model load time and peak resident memory of each process.

Needs scripts/fetch_models.py (the packaged model in the hub cache) and the reference
virtual environment (scripts/reference/requirements.txt) for PyTorch.

Usage: python scripts/bench/embeddings.py [--python VENV_PYTHON] [--rounds 5]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORDS = """the of and to in is was for that with as on by he it at from his an were are which
this be or has had first one their its new after who they have her she two been other when
there all during into school time may years more most only over city some world would where
later up such used many can state about national out known university united then made
between before film under music series american year called team both three well being game
season also these people since company including government through age part public north
could long number early village life album war history south county house work river band
station high life church center area book love market river garden night light water""".split()


def sentences(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(12, 24))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=sys.executable, help="Python with torch installed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=512)
    args = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "embeddings",
                    "--no-run"], cwd=ROOT, check=True, env=env)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(sentences(args.sentences)) + "\n")
        path = f.name
    ours, theirs = [], []
    for r in range(args.rounds):
        out = subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "embeddings",
                              "--", path], cwd=ROOT, check=True, env=env, capture_output=True,
                             text=True).stdout
        ours.append(json.loads(out.strip().splitlines()[-1]))
        out = subprocess.run([args.python, os.path.join(ROOT, "scripts/bench/embeddings_torch.py"),
                              path, str(args.threads)], check=True, env=env, capture_output=True,
                             text=True).stdout
        theirs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"round {r + 1}: ferroformer {ours[-1]['sentences_per_s']:.1f}/s, "
              f"pytorch {theirs[-1]['sentences_per_s']:.1f}/s", file=sys.stderr)
    os.unlink(path)

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    o, t = med(ours, "sentences_per_s"), med(theirs, "sentences_per_s")
    print(json.dumps({
        "benchmark": f"all-MiniLM-L6-v2 sentence embeddings, batch 32, {args.sentences} sentences",
        "threads": args.threads,
        "ferroformer_sentences_per_s": round(o, 1), "pytorch_sentences_per_s": round(t, 1),
        "ratio_throughput_ours_over_pytorch": round(o / t, 3),
        "ferroformer_load_s": round(med(ours, "load_s"), 3),
        "pytorch_load_s": round(med(theirs, "load_s"), 3),
        "ferroformer_peak_rss_mb": round(med(ours, "peak_rss_mb"), 1),
        "pytorch_peak_rss_mb": round(med(theirs, "peak_rss_mb"), 1),
        # Same sentences, same model: the first vector's sum must agree (a sanity check).
        "first_vector_sum": [ours[0]["first_vector_sum"], theirs[0]["first_vector_sum"]],
    }))


if __name__ == "__main__":
    main()
