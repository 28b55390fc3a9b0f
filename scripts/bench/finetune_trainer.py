#!/usr/bin/env python3
"""The `transformers` `Trainer` side of the fine-tuning comparison (docs/PERFORMANCE.md,
"Fine-tuning a classifier"): fine-tunes a pretrained encoder for sequence classification on a
JSON Lines split (`{"text", "label"}` per line, e.g. `scripts/fetch_models.py rotten-tomatoes`)
with the recipe `ferroformer train classifier` runs, then scores the test split.

Recipe, as ferroformer's flags name it: labels sorted into ids; inputs truncated to
--max-length and padded to the longest in each batch; AdamW (torch's, betas 0.9/0.999, eps 1e-8)
with --weight-decay on every parameter but biases and LayerNorm weights, linear warmup over
--warmup-ratio of the steps then linear decay to 0; --epochs passes over the training split,
shuffled with --seed; dropout as the model's config says; no gradient clipping difference
(max_grad_norm 1.0, as both default). 2 threads (torch.set_num_threads), CPU.

Prints one JSON object: test accuracy and F1 (scikit-learn; positive label: the second label
id), training examples/s (Trainer's train_samples_per_second, and our own timing of the
optimizer steps alone), the final training loss.

Usage: /root/venvs/ref/bin/python scripts/bench/finetune_trainer.py --model DIR --train F --test F
           [--epochs 2 --lr 1e-4 --batch-size 32 --max-length 64 --weight-decay 0.01
            --warmup-ratio 0.1 --seed 42 --threads 2 --limit N]
"""
import argparse
import json
import sys
import time

import numpy as np
import torch


def read_jsonl(path, limit=None):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    ap.add_argument("--out", default="runs/trainer")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments, set_seed)

    set_seed(args.seed)
    train_rows = read_jsonl(args.train, args.limit)
    test_rows = read_jsonl(args.test)
    labels = sorted({str(r["label"]) for r in train_rows})
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)

    def encode(rows):
        enc = tok([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                 **({"token_type_ids": enc["token_type_ids"][i]} if "token_type_ids" in enc else {}),
                 "labels": label2id[str(r["label"])]} for i, r in enumerate(rows)]

    train_set, test_set = encode(train_rows), encode(test_rows)

    class StepTimer(TrainerCallback):
        """Wall time of the optimizer steps alone (no evaluation, no saving)."""
        def __init__(self):
            self.total, self.start = 0.0, None

        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.total += time.perf_counter() - self.start

    timer = StepTimer()
    targs = TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, lr_scheduler_type="linear",
        seed=args.seed, data_seed=args.seed, save_strategy="no", eval_strategy="no",
        logging_steps=50, report_to=[], use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=train_set,
                      data_collator=DataCollatorWithPadding(tok), callbacks=[timer])
    out = trainer.train()
    pred = trainer.predict(test_set)
    y_pred = np.argmax(pred.predictions, axis=-1)
    y_true = np.array([t["labels"] for t in test_set])
    result = {
        "side": "transformers Trainer",
        "train_examples": len(train_set),
        "test_examples": len(test_set),
        "labels": labels,
        "epochs": args.epochs,
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, pos_label=1)),
        "train_samples_per_second": out.metrics["train_samples_per_second"],
        "step_examples_per_second": len(train_set) * args.epochs / timer.total,
        "train_loss": out.metrics["train_loss"],
        "train_runtime_s": out.metrics["train_runtime"],
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    print(json.dumps(result, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
