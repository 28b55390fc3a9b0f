#!/usr/bin/env python3
"""Checks that a classifier written by `ferroformer train classifier` loads in
`transformers`' AutoModelForSequenceClassification with the logits ferroformer computes.

Runs `ferroformer pipeline text-classification --function-to-apply none --top-k all --json`
on the texts (one forward per text, so no padding is involved), computes the logits of the
same texts with `transformers`, and compares them in label order. Prints the largest
difference; exits non-zero when it exceeds the tolerance (1e-4) or when the labels differ.

Usage: /root/venvs/ref/bin/python scripts/reference/check_classifier_export.py DIR
           [--ferroformer target/debug/ferroformer] [--texts-file FILE]
"""
import argparse
import json
import subprocess
import sys

import torch
import transformers

TEXTS = [
    "I love this movie, it was wonderful!",
    "This film was terrible and boring.",
    "The capital of France is Paris.",
    "naïve café: a résumé of Marie Curie's work in Warsaw",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ferroformer", default="target/debug/ferroformer")
    ap.add_argument("--texts-file")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    texts = TEXTS
    if args.texts_file:
        with open(args.texts_file) as f:
            texts = [l.rstrip("\n") for l in f if l.strip()]

    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        args.dir, output_loading_info=True
    )
    # A tensor under a name transformers does not expect would be dropped, and the missing
    # one initialized at random: the export must match the class's names exactly.
    if info["missing_keys"] or info["unexpected_keys"]:
        print(f"names differ: missing {info['missing_keys']}, unexpected {info['unexpected_keys']}")
        return 1
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(args.dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    out = subprocess.run(
        [args.ferroformer, "pipeline", "text-classification", "--model", args.dir,
         "--function-to-apply", "none", "--top-k", "all", "--batch-size", "1", "--json", *texts],
        check=True, capture_output=True, text=True,
    ).stdout
    ours = json.loads(out)
    worst = 0.0
    for text, ranked in zip(texts, ours):
        by_label = {r["label"]: r["score"] for r in ranked}
        if sorted(by_label) != sorted(labels):
            print(f"labels differ: ferroformer {sorted(by_label)}, transformers {sorted(labels)}")
            return 1
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt")).logits[0].tolist()
        for label, want in zip(labels, logits):
            worst = max(worst, abs(by_label[label] - want))
    print(f"{type(model).__name__} from {args.dir}: {len(texts)} texts, {len(labels)} labels, "
          f"max |logit difference| = {worst:.3g} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
