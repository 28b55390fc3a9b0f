#!/usr/bin/env python3
"""Records `evaluate`'s `perplexity` metric on the tiny trained GPT-2 of tests/fixtures/trained-gpt2
(a character-level model, 16 positions) for crates/ferroformer-cli/tests/evaluate_cli.rs:
tests/fixtures/metrics/perplexity.json.

`evaluate` downloads its metric scripts from the hub at run time, so the lines of
metrics/perplexity/perplexity.py (github.com/huggingface/evaluate, Apache-2.0) that compute the
metric are vendored below as they are, with the model and tokenizer passed in rather than loaded
by id: they *are* the reference. Batches are padded on the right and masked, so each text's
value is the one it gets alone.

Usage: /root/venvs/ref/bin/python scripts/reference/perplexity_metric_fixtures.py
"""
import json
import os

import numpy as np
import torch
from torch.nn import CrossEntropyLoss
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MODEL = os.path.join(ROOT, "tests", "fixtures", "trained-gpt2")
OUT = os.path.join(ROOT, "tests", "fixtures", "metrics", "perplexity.json")


def evaluate_perplexity(predictions, model, tokenizer, batch_size=16, add_start_token=True, max_length=None):
    """evaluate's Perplexity._compute, from `if tokenizer.pad_token is None` on."""
    device = "cpu"
    if tokenizer.pad_token is None and batch_size > 1:
        existing_special_tokens = list(tokenizer.special_tokens_map_extended.values())
        assert len(existing_special_tokens) > 0
        tokenizer.add_special_tokens({"pad_token": existing_special_tokens[0]})
    if add_start_token and max_length:
        assert tokenizer.bos_token is not None
        max_tokenized_len = max_length - 1
    else:
        max_tokenized_len = max_length
    encodings = tokenizer(
        predictions,
        add_special_tokens=False,
        padding=True,
        truncation=True if max_tokenized_len else False,
        max_length=max_tokenized_len,
        return_tensors="pt",
        return_attention_mask=True,
    ).to(device)
    encoded_texts = encodings["input_ids"]
    attn_masks = encodings["attention_mask"]
    if add_start_token:
        assert torch.all(torch.ge(attn_masks.sum(1), 1))
    else:
        assert torch.all(torch.ge(attn_masks.sum(1), 2))
    ppls = []
    loss_fct = CrossEntropyLoss(reduction="none")
    for start_index in range(0, len(encoded_texts), batch_size):
        end_index = min(start_index + batch_size, len(encoded_texts))
        encoded_batch = encoded_texts[start_index:end_index]
        attn_mask = attn_masks[start_index:end_index]
        if add_start_token:
            bos_tokens_tensor = torch.tensor([[tokenizer.bos_token_id]] * encoded_batch.size(dim=0)).to(device)
            encoded_batch = torch.cat([bos_tokens_tensor, encoded_batch], dim=1)
            attn_mask = torch.cat(
                [torch.ones(bos_tokens_tensor.size(), dtype=torch.int64).to(device), attn_mask], dim=1
            )
        labels = encoded_batch
        with torch.no_grad():
            out_logits = model(encoded_batch, attention_mask=attn_mask).logits
        shift_logits = out_logits[..., :-1, :].contiguous()
        shift_labels = labels[..., 1:].contiguous()
        shift_attention_mask_batch = attn_mask[..., 1:].contiguous()
        perplexity_batch = torch.exp(
            (loss_fct(shift_logits.transpose(1, 2), shift_labels) * shift_attention_mask_batch).sum(1)
            / shift_attention_mask_batch.sum(1)
        )
        ppls += perplexity_batch.tolist()
    return {"perplexities": ppls, "mean_perplexity": np.mean(ppls)}


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    # The model's vocabulary is the characters of these texts.
    texts = ["to be or not", "that is the", "a", "To be, or not", "question:\nthis", "brains in the"]
    long_texts = ["to be, or not to be, that is the question", "there is the rub"]
    cases = []
    for name, inputs, kwargs in [
        ("defaults", texts, {}),
        ("batch_of_two", texts, {"batch_size": 2}),
        ("no_start_token", [t for t in texts if len(t) >= 2], {"add_start_token": False}),
        ("max_length", long_texts, {"max_length": 16}),
        ("max_length_no_start_token", long_texts, {"max_length": 16, "add_start_token": False}),
    ]:
        tokenizer = AutoTokenizer.from_pretrained(MODEL)
        result = evaluate_perplexity(inputs, model, tokenizer, **kwargs)
        cases.append({
            "name": name,
            "texts": inputs,
            "max_length": kwargs.get("max_length"),
            "add_start_token": kwargs.get("add_start_token", True),
            "perplexities": result["perplexities"],
            "mean_perplexity": float(result["mean_perplexity"]),
        })
    import transformers
    with open(OUT, "w") as f:
        json.dump({
            "source": {"model": "tests/fixtures/trained-gpt2", "transformers": transformers.__version__,
                       "torch": torch.__version__},
            "cases": cases,
        }, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
