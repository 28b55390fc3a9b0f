#!/usr/bin/env python3
"""`transformers.pipeline(...)` outputs on the tiny checkpoints of encoder_fixtures.py, and
sentence-transformers embeddings of the real all-MiniLM-L6-v2, as JSON under
tests/fixtures/pipelines/.

Each `<task>.json` is `{"task": ..., "cases": [case, ...]}` where a case is

    {"name": str, "model": "<dir under tests/fixtures/encoders>", "options": {HF kwargs},
     "inputs": [input, ...], "expected": [HF output for that input, ...]}

`options` are the keyword arguments given to the pipeline call (top_k, aggregation_strategy,
doc_stride, ...); an input is a string, or {"question", "context"} for question answering.
Every input is run through the pipeline on its own *and* as one batch (batch_size=len(inputs),
so padding is exercised); the script checks both give the same answer before writing it.

Usage (needs encoder_fixtures.py's output first):
    python scripts/reference/pipeline_fixtures.py [--fixtures tests/fixtures]
    python scripts/reference/pipeline_fixtures.py --minilm   # needs scripts/fetch_models.py
"""
import argparse
import json
import math
import os

import torch
import transformers
from transformers import pipeline

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

SENTENCES = [
    "The capital of France is Paris.",
    "Ada Lovelace wrote the first program in London!",
    "I hated this boring film, the actors were terrible.",
    "Marie Curie was born in Warsaw and worked in Paris.",
    "hello",
]

LONG_CONTEXT = (
    "Ada Lovelace was an English mathematician and writer, chiefly known for her work on "
    "Charles Babbage's proposed mechanical general-purpose computer, the Analytical Engine. "
    "She was the first to recognise that the machine had applications beyond pure calculation. "
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted "
    "pioneering research on radioactivity. She was born in Warsaw, in what was then the "
    "Kingdom of Poland, part of the Russian Empire. She studied at Warsaw's clandestine "
    "Flying University and began her practical scientific training in Warsaw. In 1891, aged 24, "
    "she followed her elder sister Bronisława to study in Paris, where she earned her higher "
    "degrees and conducted her subsequent scientific work. The capital of France is Paris, "
    "and the capital of Germany is Berlin; Rust is a systems programming language."
)

QA = [
    {"question": "Where was Marie Curie born?", "context": "Marie Curie was born in Warsaw."},
    {"question": "Who wrote the first program?",
     "context": "Ada Lovelace wrote the first program for the Analytical Engine in London."},
    {"question": "What is the capital of France?", "context": LONG_CONTEXT},
]


def rounded(x):
    """Floats rounded to 8 significant digits (far below the 1e-5 tolerance)."""
    if isinstance(x, float):
        return float(f"{x:.8g}")
    if isinstance(x, list):
        return [rounded(y) for y in x]
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if hasattr(x, "item"):
        return rounded(x.item())
    return x


def close(a, b, tol=1e-5):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, abs_tol=tol)
    return a == b


def run(pipe, inputs, options, qa=False):
    """HF output per input, checked to be the same alone and batched."""
    def call(x, **kw):
        if qa:
            return pipe(question=x["question"], context=x["context"], **options, **kw)
        # A one-element list, so every task returns its per-input shape (a bare string
        # gives text-classification a list around the dict).
        out = pipe([x], **options, **kw)
        # fill-mask unwraps a one-element list itself.
        return out if pipe.task == "fill-mask" else out[0]

    alone = [rounded(call(x)) for x in inputs]
    if qa:
        batched = pipe(
            question=[x["question"] for x in inputs],
            context=[x["context"] for x in inputs],
            batch_size=len(inputs), **options)
        if len(inputs) == 1:
            batched = [batched]
    else:
        batched = pipe(inputs, batch_size=len(inputs), **options)
        if pipe.task == "fill-mask" and len(inputs) == 1:
            batched = [batched]
    batched = [rounded(b) for b in batched]
    if pipe.task == "feature-extraction":
        # HF's batched feature extraction keeps the padding positions; the real tokens
        # must still agree. (ferroformer returns the unpadded rows either way.)
        batched = [[b[0][: len(a[0])]] for a, b in zip(alone, batched)]
    assert close(alone, batched, 1e-5), f"batched != alone for {options}"
    return alone


def case(task, name, model_dir, fixtures, inputs, options=None, pipe_kwargs=None):
    options = options or {}
    pipe = pipeline(task, model=os.path.join(fixtures, "encoders", model_dir),
                    device="cpu", **(pipe_kwargs or {}))
    expected = run(pipe, inputs, options, qa=task == "question-answering")
    return {"name": name, "model": model_dir, "options": options, "inputs": inputs,
            "expected": expected}


def text_classification(fx):
    cases = []
    for m in ["bert-seqcls", "distilbert-seqcls", "roberta-seqcls"]:
        cases.append(case("text-classification", f"{m} default", m, fx, SENTENCES))
        cases.append(case("text-classification", f"{m} all", m, fx, SENTENCES, {"top_k": None}))
    cases.append(case("text-classification", "nli top_k=2", "bert-nli", fx, SENTENCES,
                      {"top_k": 2}))
    cases.append(case("text-classification", "multi-label sigmoid", "bert-multilabel", fx,
                      SENTENCES, {"top_k": None}))
    cases.append(case("text-classification", "function_to_apply none", "bert-seqcls", fx,
                      SENTENCES, {"function_to_apply": "none"}))
    return cases


def token_classification(fx):
    cases = []
    for m in ["bert-tokcls", "distilbert-tokcls", "roberta-tokcls"]:
        for agg in ["none", "simple", "first", "average", "max"]:
            # RoBERTa's BPE has no continuing-subword prefix: HF's space heuristic applies.
            cases.append(case("token-classification", f"{m} {agg}", m, fx, SENTENCES,
                              {"aggregation_strategy": agg}))
    cases.append(case("token-classification", "ignore_labels []", "bert-tokcls", fx, SENTENCES[:2],
                      {"ignore_labels": []}))
    return cases


def question_answering(fx):
    cases = []
    for m in ["bert-qa", "distilbert-qa", "roberta-qa"]:
        cases.append(case("question-answering", f"{m} default", m, fx, QA))
        cases.append(case("question-answering", f"{m} top_k=3", m, fx, QA, {"top_k": 3}))
    cases.append(case("question-answering", "stride 32 max_answer_len 5", "bert-qa", fx, QA,
                      {"doc_stride": 32, "max_answer_len": 5, "top_k": 2}))
    cases.append(case("question-answering", "max_seq_len 48 stride 16", "bert-qa", fx, QA,
                      {"max_seq_len": 48, "doc_stride": 16}))
    cases.append(case("question-answering", "handle_impossible_answer", "roberta-qa", fx, QA,
                      {"handle_impossible_answer": True, "top_k": 2}))
    return cases


def fill_mask(fx):
    cases = []
    for m, mask in [("bert-mlm", "[MASK]"), ("distilbert-mlm", "[MASK]"),
                    ("roberta-mlm", "<mask>")]:
        inputs = [f"The capital of France is {mask}.", f"Ada Lovelace wrote the {mask} program.",
                  f"{mask}"]
        cases.append(case("fill-mask", f"{m} default", m, fx, inputs))
        cases.append(case("fill-mask", f"{m} top_k=2", m, fx, inputs, {"top_k": 2}))
    cases.append(case("fill-mask", "targets", "bert-mlm", fx,
                      ["The capital of France is [MASK]."], {"targets": ["paris", "london", "the"]}))
    return cases


def feature_extraction(fx):
    return [case("feature-extraction", f"{m} tokens", m, fx, SENTENCES[:3])
            for m in ["bert-base", "distilbert-base", "roberta-base"]]


def zero_shot(fx):
    labels = ["politics", "science", "sports"]
    return [
        case("zero-shot-classification", "single label", "bert-nli", fx, SENTENCES[:3],
             {"candidate_labels": labels}),
        case("zero-shot-classification", "multi label", "bert-nli", fx, SENTENCES[:3],
             {"candidate_labels": labels, "multi_label": True}),
        case("zero-shot-classification", "template", "bert-nli", fx, SENTENCES[:2],
             {"candidate_labels": ["art", "war"], "hypothesis_template": "It is about {}."}),
    ]


def minilm(out):
    """sentence-transformers embeddings of the real all-MiniLM-L6-v2 (mean pooling + L2)."""
    from sentence_transformers import SentenceTransformer
    from huggingface_hub import snapshot_download
    path = snapshot_download("sentence-transformers/all-MiniLM-L6-v2", local_files_only=True)
    model = SentenceTransformer(path, device="cpu")
    long = " ".join([LONG_CONTEXT] * 2)
    sentences = SENTENCES + [long, ""]
    emb = model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)
    n_tokens = [len(model.tokenizer(s)["input_ids"]) for s in sentences]
    with open(os.path.join(out, "minilm-embeddings.json"), "w") as f:
        json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2",
                   "max_seq_length": model.max_seq_length, "tokens": n_tokens,
                   "sentences": sentences, "embeddings": rounded(emb.tolist())}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default="tests/fixtures")
    ap.add_argument("--minilm", action="store_true")
    args = ap.parse_args()
    out = os.path.join(args.fixtures, "pipelines")
    os.makedirs(out, exist_ok=True)
    if args.minilm:
        minilm(out)
        return
    tasks = {
        "text-classification": text_classification,
        "token-classification": token_classification,
        "question-answering": question_answering,
        "fill-mask": fill_mask,
        "feature-extraction": feature_extraction,
        "zero-shot-classification": zero_shot,
    }
    for task, build in tasks.items():
        with open(os.path.join(out, f"{task}.json"), "w") as f:
            json.dump({"task": task, "cases": build(args.fixtures)}, f, ensure_ascii=False)
    with open(os.path.join(out, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f)


if __name__ == "__main__":
    main()
