#!/usr/bin/env python3
"""How far llama.cpp agrees with itself on a GGUF model: the top-1 prediction at every
position of the teacher-forced fixture text, computed (a) by llama.cpp's batch evaluation
(the fixture's `top1`, as `scripts/reference/gguf_fixtures.py` recorded it) and (b) by
llama.cpp evaluating the same tokens one at a time. Both are llama.cpp with the same
weights; they differ only in which kernels (matrix-matrix or matrix-vector) run, so the
share of equal predictions is the floor below which a comparison with llama.cpp cannot be
read as an arithmetic difference of ours.

Usage (venv: scripts/reference/requirements-gguf.txt):
  python scripts/bench/llama_cpp_self_agreement.py [--family gemma3]
"""
import argparse
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import gguf_fixtures  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(gguf_fixtures.FAMILIES), default="gemma3")
    args = ap.parse_args()
    hub_id, filename, sub = gguf_fixtures.FAMILIES[args.family]
    gguf_fixtures.HUB_ID, gguf_fixtures.FILENAME = hub_id, filename
    model = gguf_fixtures.default_model()
    fixture = os.path.join(HERE, "..", "..", "tests", "fixtures", "gguf", sub, "perplexity.json")
    f = json.load(open(fixture))
    ids, batch_top1 = f["ids"], f["top1"]
    llm = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, seed=0, verbose=False)
    n_vocab = llm.n_vocab()
    one_at_a_time = []
    for t in ids[:-1]:
        llm.eval([t])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        one_at_a_time.append(int(np.argmax(logits)))
    equal = sum(a == b for a, b in zip(one_at_a_time, batch_top1))
    print(json.dumps({"model": f"{hub_id}/{filename}", "positions": len(one_at_a_time),
                      "equal_top1": equal, "agreement": equal / len(one_at_a_time)}))


if __name__ == "__main__":
    main()
