#!/usr/bin/env python3
"""Records what `ferroformer evaluate --model M --task TASK --data F` must print, for
crates/ferroformer-cli/tests/evaluate_cli.rs: tests/fixtures/metrics/evaluate_task.json.

- text-classification on tests/fixtures/encoders/bert-seqcls (a tiny random BERT with labels
  NEGATIVE / POSITIVE): `transformers`' text-classification pipeline's best label for each text,
  scored against the data's labels with scikit-learn (accuracy, binary precision / recall / F1
  with POSITIVE, label id 1, as the positive label; macro F1) and its confusion_matrix.
- question-answering on tests/fixtures/encoders/bert-qa: the question-answering pipeline's best
  answer, scored with `evaluate`'s squad (vendored in metrics_fixtures.py).

The labels of the data are chosen by hand (the model is random): the scores are whatever the
pipeline's answers earn, which is what the test compares.

Usage: /root/venvs/ref/bin/python scripts/reference/evaluate_task_fixtures.py
"""
import json
import os
import sys

import transformers
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from transformers import pipeline

sys.path.insert(0, os.path.dirname(__file__))
from metrics_fixtures import evaluate_squad  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ENC = os.path.join(ROOT, "tests", "fixtures", "encoders")
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics", "evaluate_task.json")

TEXTS = [
    ("The capital of France is Paris.", "POSITIVE"),
    ("Ada Lovelace wrote the first program in London!", "POSITIVE"),
    ("I hated this boring film.", "NEGATIVE"),
    ("naïve café: a résumé of Marie Curie's work in Warsaw", "POSITIVE"),
    ("What a wonderful, moving story.", "POSITIVE"),
    ("Terrible acting and a dull plot.", "NEGATIVE"),
    ("It was fine, I guess.", "1"),
    ("Never again.", "0"),
]

QA = [
    {"question": "Where is the capital of France?", "context": "The capital of France is Paris.",
     "answers": {"text": ["Paris"], "answer_start": [25]}},
    {"question": "Who wrote the first program?", "context": "Ada Lovelace wrote the first program in London!",
     "answers": ["Ada Lovelace", "Lovelace"]},
    {"question": "Where did Marie Curie work?", "context": "naïve café: a résumé of Marie Curie's work in Warsaw",
     "answers": "Warsaw"},
]


def main():
    clf = pipeline("text-classification", model=os.path.join(ENC, "bert-seqcls"), device="cpu")
    names = [clf.model.config.id2label[i] for i in range(clf.model.config.num_labels)]
    gold = [names[int(l)] if l.isdigit() else l for _, l in TEXTS]
    pred = [o["label"] for o in clf([t for t, _ in TEXTS])]
    ids = {n: i for i, n in enumerate(names)}
    g, p = [ids[x] for x in gold], [ids[x] for x in pred]
    classification = {
        "rows": [{"text": t, "label": l} for t, l in TEXTS],
        "labels": names,
        "predicted": pred,
        "metrics": {
            "accuracy": accuracy_score(g, p),
            "precision": precision_score(g, p, pos_label=1, zero_division=0),
            "recall": recall_score(g, p, pos_label=1, zero_division=0),
            "f1": f1_score(g, p, pos_label=1, zero_division=0),
        },
        "f1_macro": f1_score(g, p, average="macro", zero_division=0),
        "confusion_matrix": confusion_matrix(g, p, labels=list(range(len(names)))).tolist(),
    }
    qa = pipeline("question-answering", model=os.path.join(ENC, "bert-qa"), device="cpu")
    answers = [qa(question=r["question"], context=r["context"])["answer"] for r in QA]

    def texts(a):
        return a["text"] if isinstance(a, dict) else a if isinstance(a, list) else [a]

    question_answering = {
        "rows": QA,
        "predicted": answers,
        "metrics": evaluate_squad(answers, [texts(r["answers"]) for r in QA]),
    }
    with open(OUT, "w") as f:
        json.dump({"source": {"transformers": transformers.__version__},
                   "text_classification": classification,
                   "question_answering": question_answering}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
