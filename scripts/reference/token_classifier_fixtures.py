#!/usr/bin/env python3
"""Fixtures for fine-tuning token classifiers (tests/train_token_classifier.rs), under
tests/fixtures/token_classifier/.

- `bert-init/`: the tiny BERT of tests/fixtures/encoders/bert-base as a
  `BertForTokenClassification` for the sorted tag set of `train.conll`, its head drawn by
  `transformers` (torch seed 0), dropout set to 0 so that training is deterministic on both
  sides; with the tokenizer files.
- `train.conll` (CoNLL style, with a `-DOCSTART-` line and POS columns), `eval.jsonl`
  (`tokens`/`tags`): a tiny tagged data set.
- `parity.safetensors`: `transformers`' recipe on `bert-init`: the training sentences
  tokenized with `is_split_into_words=True, truncation=True` and their tags aligned by
  `tokenize_and_align_labels` (first sub-token labelled, -100 on the others and on special
  tokens) (`aligned.<i>.input_ids|labels`), then three AdamW steps on fixed batches padded as
  `DataCollatorForTokenClassification` pads them (labels with -100), as `Trainer` takes them:
  AdamW (betas 0.9/0.999, eps 1e-8) with weight decay on every parameter except biases and
  LayerNorm weights, `get_linear_schedule_with_warmup` (1 warmup step of 3), `clip_grad_norm_`
  at 1.0, cross-entropy ignoring -100. Holds each batch (`batch{i}.input_ids|attention_mask|
  token_type_ids|labels`), the loss and learning rate of every step (`losses`, `lrs`), logits
  on the evaluation sentences (`eval.*`) before and after training (`logits_before`,
  `logits_after`) and three trained parameters (`param.<hf name>`).
- `aligned_roberta.safetensors`: the same alignment with the RoBERTa fixture's byte-level
  tokenizer loaded with `add_prefix_space=True` (what `transformers` requires for split
  words).
- `export_names.json`: the state-dict names and shapes of `transformers`'
  `BertForTokenClassification`, `DistilBertForTokenClassification` and
  `RobertaForTokenClassification` built on the encoder fixtures with this tag set: an export
  must hold exactly these to load without missing or unexpected keys.
- `seqeval.json`: tag sequences (nested lists of sentences) and `seqeval`'s scores
  (default mode, micro average) and accuracy for them.

Usage: /root/venvs/ref/bin/python scripts/reference/token_classifier_fixtures.py
(needs `seqeval`, see requirements.txt)
"""
import json
import os
import shutil

import seqeval
import seqeval.metrics
import torch
import transformers
from safetensors.torch import save_file

torch.set_num_threads(1)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ENCODERS = os.path.join(ROOT, "tests", "fixtures", "encoders")
BASE = os.path.join(ENCODERS, "bert-base")
OUT = os.path.join(ROOT, "tests", "fixtures", "token_classifier")
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]

TRAIN = [
    ("Marie Curie worked in Paris .", "B-PER I-PER O O B-LOC O"),
    ("The program was written in Berlin .", "O O O O O B-LOC O"),
    ("Ada Lovelace wrote the first program .", "B-PER I-PER O O O O O"),
    ("Paris and Berlin are capitals .", "B-LOC O B-LOC O O O"),
    ("Alan Turing broke codes at Bletchley Park .", "B-PER I-PER O O O B-LOC I-LOC O"),
    ("Tokens are split into sub-words .", "O O O O O O"),
    ("Grace Hopper visited New York .", "B-PER I-PER O B-LOC I-LOC O"),
    ("The cat sat on the mat in Warsaw .", "O O O O O O O B-LOC O"),
]
EVAL = [
    ("Curie lived in Warsaw and Paris .", "B-PER O O B-LOC O B-LOC O"),
    ("Turing wrote programs in New York .", "B-PER O O O B-LOC I-LOC O"),
    ("The naïve café served résumés .", "O O O O O O"),
]
STEPS = 3
LR = 1e-3
WEIGHT_DECAY = 0.01
WARMUP = 1
BATCH_ROWS = [[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7]]


def split(data):
    return [(text.split(), tags.split()) for text, tags in data]


def write_data(train, evals):
    with open(os.path.join(OUT, "train.conll"), "w") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for words, tags in train:
            for w, t in zip(words, tags):
                f.write(f"{w} NN O {t}\n")
            f.write("\n")
    with open(os.path.join(OUT, "eval.jsonl"), "w") as f:
        for words, tags in evals:
            f.write(json.dumps({"tokens": words, "tags": tags}, ensure_ascii=False) + "\n")


def align(tok, sentences, label2id):
    """`tokenize_and_align_labels` of the token-classification example scripts."""
    enc = tok([w for w, _ in sentences], is_split_into_words=True, truncation=True)
    labels = []
    for i, (_, tags) in enumerate(sentences):
        previous, row = None, []
        for w in enc.word_ids(batch_index=i):
            if w is None or w == previous:
                row.append(-100)
            else:
                row.append(label2id[tags[w]])
            previous = w
        labels.append(row)
    return enc, labels


def export_names(labels):
    out = {}
    for family, cls in [
        ("bert-base", transformers.BertForTokenClassification),
        ("distilbert-base", transformers.DistilBertForTokenClassification),
        ("roberta-base", transformers.RobertaForTokenClassification),
    ]:
        model = cls.from_pretrained(
            os.path.join(ENCODERS, family),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={l: i for i, l in enumerate(labels)},
        )
        out[family] = {
            "architecture": type(model).__name__,
            "tensors": {k: list(v.shape) for k, v in sorted(model.state_dict().items())},
        }
    return out


def seqeval_cases():
    cases = [
        # seqeval's docstring example.
        ([["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]],
         [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]),
        # I- after O starts an entity; a type change inside a span splits it; an entity at a
        # sentence's end does not run into the next sentence.
        ([["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-LOC", "O"], ["I-ORG", "I-ORG", "O"]],
         [["B-PER", "I-LOC", "O", "B-LOC", "I-LOC"], ["I-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG"]]),
        # Nothing predicted; nothing to find.
        ([["B-PER", "O"], ["O", "O"]], [["O", "O"], ["O", "O"]]),
        ([["O", "O"]], [["B-LOC", "O"]]),
        ([["O"]], [["O"]]),
        # Tags without a type, and a B- right after an I- of the same type.
        ([["B", "I", "O", "B-X", "I-X", "B-X"]], [["B", "I", "O", "B-X", "B-X", "B-X"]]),
    ]
    out = []
    for refs, preds in cases:
        out.append({
            "references": refs,
            "predictions": preds,
            "precision": seqeval.metrics.precision_score(refs, preds, zero_division=0),
            "recall": seqeval.metrics.recall_score(refs, preds, zero_division=0),
            "f1": seqeval.metrics.f1_score(refs, preds, zero_division=0),
            "accuracy": seqeval.metrics.accuracy_score(refs, preds),
        })
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    train, evals = split(TRAIN), split(EVAL)
    write_data(train, evals)
    # The sorted tag set, as the ferroformer reader makes it.
    labels = sorted({t for _, tags in train for t in tags})
    label2id = {l: i for i, l in enumerate(labels)}

    init_dir = os.path.join(OUT, "bert-init")
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification.from_pretrained(
        BASE,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.save_pretrained(init_dir, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(BASE, f), os.path.join(init_dir, f))
    tok = transformers.AutoTokenizer.from_pretrained(init_dir)
    collator = transformers.DataCollatorForTokenClassification(tok)

    out = {}
    enc, aligned = align(tok, train, label2id)
    for i, row in enumerate(aligned):
        out[f"aligned.{i}.input_ids"] = torch.tensor(enc["input_ids"][i], dtype=torch.int64)
        out[f"aligned.{i}.labels"] = torch.tensor(row, dtype=torch.int64)

    def batch(prefix, rows, sentences):
        e, lab = align(tok, [sentences[r] for r in rows], label2id)
        features = [
            {"input_ids": e["input_ids"][j], "attention_mask": e["attention_mask"][j],
             "token_type_ids": e["token_type_ids"][j], "labels": lab[j]}
            for j in range(len(rows))
        ]
        b = collator(features)
        for k in ["input_ids", "attention_mask", "token_type_ids", "labels"]:
            out[f"{prefix}.{k}"] = b[k].to(torch.int64).contiguous()
        return dict(b)

    eval_batch = batch("eval", list(range(len(evals))), evals)
    eval_inputs = {k: v for k, v in eval_batch.items() if k != "labels"}
    model.eval()
    with torch.no_grad():
        out["logits_before"] = model(**eval_inputs).logits.contiguous()

    decay = [n for n, _ in model.named_parameters() if "bias" not in n and "LayerNorm" not in n]
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = transformers.get_linear_schedule_with_warmup(opt, WARMUP, STEPS)
    losses, lrs = [], []
    model.train()
    for i, rows in enumerate(BATCH_ROWS):
        b = batch(f"batch{i}", rows, train)
        lrs.append(sched.get_last_lr()[0])
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out["logits_after"] = model(**eval_inputs).logits.contiguous()
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    params = dict(model.named_parameters())
    for name in ["bert.encoder.layer.0.attention.self.query.weight", "classifier.weight",
                 "bert.embeddings.word_embeddings.weight"]:
        out[f"param.{name}"] = params[name].detach().contiguous()
    save_file(out, os.path.join(OUT, "parity.safetensors"))

    rtok = transformers.AutoTokenizer.from_pretrained(
        os.path.join(ENCODERS, "roberta-base"), add_prefix_space=True)
    renc, raligned = align(rtok, train + evals, {**label2id})
    rout = {}
    for i, row in enumerate(raligned):
        rout[f"aligned.{i}.input_ids"] = torch.tensor(renc["input_ids"][i], dtype=torch.int64)
        rout[f"aligned.{i}.labels"] = torch.tensor(row, dtype=torch.int64)
    save_file(rout, os.path.join(OUT, "aligned_roberta.safetensors"))

    with open(os.path.join(OUT, "export_names.json"), "w") as f:
        json.dump(export_names(labels), f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "seqeval.json"), "w") as f:
        json.dump(seqeval_cases(), f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "seqeval": "1.2.2"}, f)
        f.write("\n")
    print("labels", labels, "losses", losses, "lrs", lrs)


if __name__ == "__main__":
    main()
