#!/usr/bin/env python3
"""Builds tests/fixtures/serve-llama/: a tiny chat model for the server's integration tests.

The weights and config are the generation fixtures' random Llama (tests/fixtures/generation/
llama, 48-token vocabulary, 128 positions); this adds what a chat model needs around them:
a character-level tokenizer whose 48 ids fit that vocabulary (special tokens `<s>`, `</s>`,
`<|im_start|>`, `<|im_end|>`, then space, newline, a-z, 0-9 and punctuation; text is
lowercased, unknown characters become `?`) and a ChatML chat template in
tokenizer_config.json, with `transformers` able to load the result
(checked at the end with AutoTokenizer + apply_chat_template).

It also builds tests/fixtures/serve-json-llama/: the same weights with a character-level
vocabulary made for JSON (`{`, `}`, `[`, `]`, `"`, `:`, `,`, backslash, `-`, `+`, `.`, digits
and a-u, enough for true/false/null), for the constrained-JSON tests: the random model never
writes JSON by itself, so a valid object can only come from the constraint.

Usage: python scripts/reference/serve_fixtures.py [--out tests/fixtures/serve-llama]
       [--json-out tests/fixtures/serve-json-llama]
"""
import argparse
import os
import shutil

from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHARS = [" ", "\n"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
    [str(d) for d in range(10)] + [".", ",", "?", "!", ":", "'"]
JSON_CHARS = [" ", "\n", "{", "}", "[", "]", '"', ":", ",", "\\", "-", "+", "."] + \
    [str(d) for d in range(10)] + [chr(c) for c in range(ord("a"), ord("u") + 1)]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(here, "..", "..", "tests", "fixtures")
    ap.add_argument("--out", default=os.path.join(root, "serve-llama"))
    ap.add_argument("--json-out", default=os.path.join(root, "serve-json-llama"))
    args = ap.parse_args()
    out = args.out
    build_json(root, args.json_out)
    os.makedirs(out, exist_ok=True)
    for f in ["config.json", "model.safetensors"]:
        shutil.copyfile(os.path.join(root, "generation", "llama", f), os.path.join(out, f))
    vocab = {t: i for i, t in enumerate(SPECIAL + CHARS)}
    assert len(vocab) == 48, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="?"))
    tok.normalizer = normalizers.Lowercase()
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="?")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)
    # What `transformers` makes of it.
    t = AutoTokenizer.from_pretrained(out)
    text = t.apply_chat_template([{"role": "user", "content": "Hi there!"}], tokenize=False,
                                 add_generation_prompt=True)
    ids = t(text, add_special_tokens=False)["input_ids"]
    assert max(ids) < 48 and t.decode(ids) == text.replace("H", "h"), (ids, t.decode(ids))
    print(repr(text), ids)


def build_json(root, out):
    """The JSON-vocabulary variant (no unknown token: characters outside it are dropped)."""
    os.makedirs(out, exist_ok=True)
    for f in ["config.json", "model.safetensors"]:
        shutil.copyfile(os.path.join(root, "generation", "llama", f), os.path.join(out, f))
    vocab = {t: i for i, t in enumerate(SPECIAL + JSON_CHARS)}
    assert len(vocab) == 48, len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.normalizer = normalizers.Lowercase()
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)
    t = AutoTokenizer.from_pretrained(out)
    text = t.apply_chat_template([{"role": "user", "content": '{"a": [1, -2.5e+3]}'}],
                                 tokenize=False, add_generation_prompt=True)
    ids = t(text, add_special_tokens=False)["input_ids"]
    assert max(ids) < 48 and t.decode(ids) == text, (ids, t.decode(ids))
    print(repr(text), ids)


if __name__ == "__main__":
    main()
