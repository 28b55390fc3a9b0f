#!/usr/bin/env python3
"""Checks that a token classifier written by `ferroformer train token-classifier` loads in
`transformers`' AutoModelForTokenClassification with exactly the expected tensor names, and
that our `token-classification` pipeline gives the labels and scores `transformers` computes
from it.

Runs `ferroformer pipeline token-classification --ignore-labels "" --json` on the texts (one
text per call, no aggregation: every token with its label and softmax score), computes the
logits of the same texts with `transformers`, and compares token by token: the label (argmax)
must be the same and the score within the tolerance (1e-4). Prints the largest difference;
exits non-zero on any mismatch.

Usage: /root/venvs/ref/bin/python scripts/reference/check_token_classifier_export.py DIR
           [--ferroformer target/debug/ferroformer]
"""
import argparse
import json
import subprocess
import sys

import torch
import transformers

TEXTS = [
    "Marie Curie worked in Paris and Warsaw.",
    "Alan Turing broke codes at Bletchley Park",
    "naïve café: a résumé of Grace Hopper's work in New York",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--ferroformer", default="target/debug/ferroformer")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    model, info = transformers.AutoModelForTokenClassification.from_pretrained(
        args.dir, output_loading_info=True
    )
    if info["missing_keys"] or info["unexpected_keys"]:
        print(f"names differ: missing {info['missing_keys']}, unexpected {info['unexpected_keys']}")
        return 1
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(args.dir)
    worst, tokens = 0.0, 0
    for text in TEXTS:
        out = subprocess.run(
            [args.ferroformer, "pipeline", "token-classification", "--model", args.dir,
             "--ignore-labels", "", "--json", text],
            check=True, capture_output=True, text=True,
        ).stdout
        ours = json.loads(out)
        if ours and isinstance(ours[0], list):
            ours = ours[0]
        with torch.no_grad():
            probs = model(**tok(text, return_tensors="pt")).logits[0].softmax(-1)
        for e in ours:
            p = probs[e["index"]]
            label = model.config.id2label[int(p.argmax())]
            if label != e["entity"]:
                print(f"{text!r} token {e['index']}: ferroformer {e['entity']}, transformers {label}")
                return 1
            worst = max(worst, abs(float(p.max()) - e["score"]))
            tokens += 1
    print(f"{type(model).__name__} from {args.dir}: {tokens} tokens, "
          f"max |score difference| = {worst:.3g} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance and tokens > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
