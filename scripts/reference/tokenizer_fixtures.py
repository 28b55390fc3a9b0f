#!/usr/bin/env python3
"""Records how Python's `tokenizers` encodes a few sentences with the tokenizers that
ferroformer trained (tests/fixtures/tokenizers/{char,bpe,wordpiece}.json).

The Rust test `crates/ferroformer/tests/tokenizer_train.rs` encodes the same sentences with
the same files and asserts the ids (and the decoded text) are identical. The fixture
tokenizers themselves are written by that test with FERROFORMER_REGEN=1; run this script
after regenerating them.

Each file is also loaded through `transformers.PreTrainedTokenizerFast` (when installed) to
check that `transformers` sees the same ids.

Usage: python scripts/reference/tokenizer_fixtures.py [--dir tests/fixtures/tokenizers]
"""
import argparse
import json
import os

import tokenizers
from tokenizers import Tokenizer

KINDS = ["char", "bpe", "wordpiece"]

# Unicode (accents, CJK, Greek, emoji), newlines (\n, \r\n, blank lines), runs of spaces and
# tabs, special tokens inside text, characters never seen in training, and the empty string.
SENTENCES = [
    "The transformer reads a sentence as a sequence of tokens.",
    "Le café était très bon ; Größe zählt nicht. Ελληνικά: α, β, γ. 日本語 🙂 🚀",
    "line one\nline two\n\nline four\r\nand a last line",
    "   runs of   spaces,\ttabs\t\tand  trailing spaces   ",
    "first document<|endoftext|>second document<|endoftext|>",
    "[CLS] WordPiece marks pieces: tokenization [SEP] [MASK] [PAD]",
    "Unseen characters: ∑∫ Ωμέγα ¿qué? ₿ 1,000,000",
    "",
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "tokenizers"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=default_dir)
    args = parser.parse_args()

    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:  # the check through `transformers` is optional
        PreTrainedTokenizerFast = None

    out = {
        "tokenizers_version": tokenizers.__version__,
        "sentences": SENTENCES,
        "tokenizers": {},
    }
    for kind in KINDS:
        path = os.path.join(args.dir, f"{kind}.json")
        tok = Tokenizer.from_file(path)
        ids = [tok.encode(s).ids for s in SENTENCES]
        decoded = [tok.decode(i, skip_special_tokens=False) for i in ids]
        if PreTrainedTokenizerFast is not None:
            fast = PreTrainedTokenizerFast(tokenizer_file=path)
            for s, want in zip(SENTENCES, ids):
                got = fast(s)["input_ids"]
                assert got == want, f"{kind}: transformers gives {got}, tokenizers {want} for {s!r}"
        out["tokenizers"][kind] = {
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "ids": ids,
            "decoded": decoded,
        }
        print(f"{kind}: vocab {tok.get_vocab_size()}, {sum(map(len, ids))} ids")

    dest = os.path.join(args.dir, "python_encodings.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
