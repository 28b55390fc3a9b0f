#!/usr/bin/env python3
"""Records what `ferroformer evaluate --model M --task TASK --data F` must print, for
crates/ferroformer-cli/tests/evaluate_cli.rs: tests/fixtures/metrics/evaluate_task.json.

- text-classification on tests/fixtures/encoders/bert-seqcls (a tiny random BERT with labels
  NEGATIVE / POSITIVE): `transformers`' text-classification pipeline's best label for each text,
  scored against the data's labels with scikit-learn (accuracy, binary precision / recall / F1
  with POSITIVE, label id 1, as the positive label; macro F1) and its confusion_matrix.
- question-answering on tests/fixtures/encoders/bert-qa: the question-answering pipeline's best
  answer, scored with `evaluate`'s squad (vendored in metrics_fixtures.py).
- token-classification on tests/fixtures/encoders/bert-tokcls: `evaluate`'s
  TokenClassificationEvaluator (src/evaluate/evaluator/token_classification.py, its
  `words_to_offsets` and `predictions_processor` vendored below): the words joined by " ", the
  token-classification pipeline with ignore_labels=[], each word's label from the token that
  starts at it, scored with `evaluate`'s seqeval (vendored in metrics_fixtures.py). Tags given
  as ids become the model's label names, as the evaluator maps a ClassLabel column.

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
from metrics_fixtures import evaluate_seqeval, evaluate_squad, plain  # noqa: E402

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

# The model is random: the tags are chosen by hand so that some of its entities are right.
TAGGED = [
    {"tokens": ["Marie", "Curie", "lived", "in", "Warsaw", "and", "Paris", "."],
     "tags": ["B-MISC", "I-MISC", "O", "B-MISC", "B-ORG", "O", "B-PER", "O"]},
    {"tokens": ["Turing", "wrote", "programs", "in", "New", "York", "for", "IBM."],
     "tags": ["B-MISC", "I-MISC", "I-MISC", "O", "B-ORG", "O", "B-LOC", "I-LOC"]},
    {"tokens": ["The", "naïve", "café", "served", "résumés", "to", "Ada", "Lovelace"],
     "tags": ["7", "5", "0", "5", "1", "1", "0", "5"]},
    {"tokens": ["Google", "and", "the", "Louvre", "museum", "in", "Paris", "!"],
     "tags": ["B-MISC", "I-MISC", "O", "B-LOC", "I-LOC", "O", "B-LOC", "O"]},
]


def words_to_offsets(words, join_by):
    # evaluate's TokenClassificationEvaluator.words_to_offsets, as it is.
    offsets = []
    start = 0
    for word in words:
        end = start + len(word) - 1
        offsets.append((start, end))
        start = end + len(join_by) + 1
    return offsets


def predictions_processor(predictions, words, join_by):
    # evaluate's TokenClassificationEvaluator.predictions_processor, as it is.
    preds = []
    for i, prediction in enumerate(predictions):
        pred_processed = []
        words_offsets = words_to_offsets(words[i], join_by)
        token_index = 0
        for word_offset in words_offsets:
            while prediction[token_index]["start"] < word_offset[0]:
                token_index += 1
            if prediction[token_index]["start"] > word_offset[0]:  # bad indexing
                pred_processed.append("O")
            elif prediction[token_index]["start"] == word_offset[0]:
                pred_processed.append(prediction[token_index]["entity"])
        preds.append(pred_processed)
    return {"predictions": preds}


def token_classification():
    ner = pipeline("token-classification", model=os.path.join(ENC, "bert-tokcls"), device="cpu")
    names = [ner.model.config.id2label[i] for i in range(ner.model.config.num_labels)]
    references = [[names[int(t)] if t.isdigit() else t for t in r["tags"]] for r in TAGGED]
    texts = [" ".join(r["tokens"]) for r in TAGGED]
    outputs = [ner(t, ignore_labels=[]) if t else [] for t in texts]
    predicted = predictions_processor(outputs, [r["tokens"] for r in TAGGED], " ")["predictions"]
    return {
        "rows": TAGGED,
        "predicted": predicted,
        "references": references,
        "metrics": plain(evaluate_seqeval(predicted, references)),
        "metrics_strict": plain(evaluate_seqeval(predicted, references, mode="strict", scheme="IOB2")),
    }


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
                   "question_answering": question_answering,
                   "token_classification": token_classification()}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
