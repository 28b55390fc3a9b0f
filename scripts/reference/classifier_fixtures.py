#!/usr/bin/env python3
"""Fixtures for fine-tuning sequence classifiers (tests/train_classifier.rs), under
tests/fixtures/classifier/.

- `bert-init/`: the tiny BERT of tests/fixtures/encoders/bert-base as a
  `BertForSequenceClassification` for the labels neg/neu/pos, its head drawn by
  `transformers` (torch seed 0), dropout set to 0 so that training is deterministic on both
  sides; with the tokenizer files.
- `train.csv`, `eval.jsonl`: a tiny labelled data set (3 labels).
- `parity.safetensors`: three AdamW steps of PyTorch on fixed batches from `bert-init`, as
  `Trainer` takes them: AdamW (torch.optim.AdamW, betas 0.9/0.999, eps 1e-8) with weight decay
  on every parameter except biases and LayerNorm weights, `get_linear_schedule_with_warmup`
  (1 warmup step of 3), `clip_grad_norm_` at 1.0, mean cross-entropy. Holds each batch
  (`batch{i}.input_ids|attention_mask|token_type_ids|labels`), the loss and learning rate of
  every step (`losses`, `lrs`), logits on an evaluation batch (`eval.*`) before and after
  training (`logits_before`, `logits_after`) and two trained parameters
  (`param.<hf name>`).

Usage: /root/venvs/ref/bin/python scripts/reference/classifier_fixtures.py
"""
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file

torch.set_num_threads(1)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BASE = os.path.join(ROOT, "tests", "fixtures", "encoders", "bert-base")
OUT = os.path.join(ROOT, "tests", "fixtures", "classifier")
LABELS = ["neg", "neu", "pos"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]

TRAIN = [
    ("I love this movie, it was wonderful!", "pos"),
    ("This film was terrible and boring.", "neg"),
    ("The capital of France is Paris.", "neu"),
    ("What a fantastic day in Berlin.", "pos"),
    ("I hated it, far too long.", "neg"),
    ("The cat sat on the mat.", "neu"),
    ("The actors were great, a wonderful film!", "pos"),
    ("Boring, terrible, I hated this film.", "neg"),
    ("Rust is a systems programming language.", "neu"),
    ("Wonderful and fantastic, I love it.", "pos"),
]
EVAL = [
    ("A wonderful movie, I love the actors.", "pos"),
    ("Terrible film, I hated the boring story.", "neg"),
    ("The dog chased the ball in the garden.", "neu"),
    ("Fantastic weather, the day was great.", "pos"),
]
STEPS = 3
LR = 1e-3
WEIGHT_DECAY = 0.01
WARMUP = 1
BATCH_ROWS = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 5]]


def write_data():
    import csv

    with open(os.path.join(OUT, "train.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for text, label in TRAIN:
            w.writerow([text, label])
    with open(os.path.join(OUT, "eval.jsonl"), "w") as f:
        for text, label in EVAL:
            f.write(json.dumps({"text": text, "label": label}) + "\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_data()
    init_dir = os.path.join(OUT, "bert-init")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(
        BASE,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={l: i for i, l in enumerate(LABELS)},
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.save_pretrained(init_dir, safe_serialization=True)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(BASE, f), os.path.join(init_dir, f))
    tok = transformers.AutoTokenizer.from_pretrained(init_dir)

    out = {}

    def encode(prefix, rows, data):
        enc = tok([data[r][0] for r in rows], padding=True, return_tensors="pt")
        labels = torch.tensor([LABELS.index(data[r][1]) for r in rows])
        for k in ["input_ids", "attention_mask", "token_type_ids"]:
            out[f"{prefix}.{k}"] = enc[k].to(torch.int64).contiguous()
        out[f"{prefix}.labels"] = labels.to(torch.int64)
        return dict(enc), labels

    eval_enc, _ = encode("eval", list(range(len(EVAL))), EVAL)
    model.eval()
    with torch.no_grad():
        out["logits_before"] = model(**eval_enc).logits.contiguous()

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
        enc, labels = encode(f"batch{i}", rows, TRAIN)
        lrs.append(sched.get_last_lr()[0])
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out["logits_after"] = model(**eval_enc).logits.contiguous()
    out["losses"] = torch.tensor(losses, dtype=torch.float64)
    out["lrs"] = torch.tensor(lrs, dtype=torch.float64)
    params = dict(model.named_parameters())
    for name in ["bert.encoder.layer.0.attention.self.query.weight", "classifier.weight", "bert.embeddings.word_embeddings.weight"]:
        out[f"param.{name}"] = params[name].detach().contiguous()
    save_file(out, os.path.join(OUT, "parity.safetensors"))
    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f)
        f.write("\n")
    print("losses", losses, "lrs", lrs)


if __name__ == "__main__":
    main()
