#!/usr/bin/env python3
"""Records how `transformers`' fast tokenizers (AutoTokenizer) encode and decode, for the Rust
tests of `ferroformer::models::AutoTokenizer` (crates/ferroformer/tests/tokenizer_loading.rs).

Writes two files under tests/fixtures/tokenizer_loading/:

* `tiny.json` — the tiny WordPiece (BERT) and byte-level BPE (RoBERTa) tokenizers of
  tests/fixtures/encoders/, each loaded several ways:
    - from its directory as saved (tokenizer.json + vocab files + configs),
    - from a copy without tokenizer.json (vocab.txt, or vocab.json + merges.txt, plus the two
      config files), which `transformers` converts from the slow tokenizer,
    - from a copy holding only the vocab files (no configs at all; BertTokenizerFast /
      RobertaTokenizerFast with their class defaults),
    - bert-mlm, whose tokenizer.json carries a padding section that calls must ignore,
    - bert-cased-config / roberta-prefix-config: tokenizer.json with a tokenizer_config.json
      that contradicts it (do_lower_case false; add_prefix_space true, trim_offsets false),
      which `transformers` lets win over the serialized pipeline,
    - gpt2-style: the RoBERTa vocabulary with a tokenizer_config.json naming GPT2Tokenizer (no
      special tokens added; `<|endoftext|>` is not in the vocabulary and becomes token 400).
* `minilm.json` — the real all-MiniLM-L6-v2 tokenizer (from the hub cache, where
  scripts/fetch_models.py puts it), including a text longer than 128 tokens.

Every case is one `tokenizer(...)` call as the pipelines make it — always the batched form,
which is what `transformers` runs for a single text too — with `return_offsets_mapping`,
`return_special_tokens_mask` and `return_overflowing_tokens` as given; each output row records
ids, type ids, attention mask, special-tokens mask, tokens, (character) offsets, word ids,
sequence ids and the overflow-to-sample index. A call that raises records `error`.

Usage: HF_HUB_OFFLINE=1 /root/venvs/ref/bin/python scripts/reference/tokenizer_loading_fixtures.py
"""
import argparse
import json
import os
import shutil
import tempfile

import tokenizers
import transformers
from transformers import AutoTokenizer, BertTokenizerFast, RobertaTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
ENCODERS = os.path.join(ROOT, "tests", "fixtures", "encoders")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Accents, CJK, emoji (incl. a ZWJ sequence), punctuation, whitespace runs, tabs/newlines,
# contractions, special tokens written inside the text, and the empty string.
SINGLES = [
    "Hello, world! The capital of France is Paris.",
    "Marie Curie was born in Warsaw.",
    "Café déjà vu: naïve résumé, Größe, ÅNGSTRÖM.",
    "日本語のテキスト 🙂🚀 emoji 👩‍👩‍👧 and 中文",
    "Wait... what?! (yes) [no] {maybe} a-b_c #tag @user $5.00 100%",
    "",
    "   leading and   trailing spaces   ",
    "tabs\tand\nnewlines\r\nhere",
    "don't can't I'm you're it's",
    "special tokens inside: [CLS] [MASK] <s> <mask> </s> [SEP]",
    "The Transformer wrote a wonderful program, like every token in Berlin.",
]

PAIRS = [
    ["Where was Marie Curie born?", "Marie Curie was born in Warsaw."],
    ["What is the capital of France?", "The capital of France is Paris."],
    ["", "Only the second."],
    ["Only the first.", ""],
    ["Café?", "日本語 🙂 ok"],
]

LONG = (
    "Marie Curie was born in Warsaw and worked in Paris. "
    "The capital of France is Paris; the capital of Germany is Berlin."
)
QUESTION = "Where did Marie Curie work?"
LONG_QUESTION = "Which city was the capital where the first program was written by Ada Lovelace?"


# Fields kept where a case checks only ids, lengths and masks (keeps the fixture small).
IDS = ["ids", "type_ids"]
MASKS = ["ids", "type_ids", "attention_mask", "special_tokens_mask", "overflow_to_sample"]


def case(name, kind, inputs, **options):
    """One tokenizer call. `options` are the call's arguments, plus `padding_side` and `fields`
    (which output fields to record; all of them when absent)."""
    return {"name": name, "kind": kind, "inputs": inputs, "options": options}


def full_cases(qa_len):
    """Everything, for the two tokenizers loaded from their saved directories. `qa_len` is the
    window length of the question-answering cases (the tiny BPE splits words finer)."""
    cases = [case(f"single[{i}]", "single", [t]) for i, t in enumerate(SINGLES)]
    cases += [case(f"pair[{i}]", "pair", [p]) for i, p in enumerate(PAIRS)]
    cases += [
        case("single/no-special", "single", [SINGLES[0]], add_special_tokens=False),
        case("pair/no-special", "pair", [PAIRS[0]], add_special_tokens=False),
        case("batch/singles", "single", SINGLES, fields=IDS),
        # Truncation.
        case("trunc/longest_first", "single", [LONG], truncation="longest_first", max_length=12),
        case("trunc/no-special", "single", [LONG], truncation="longest_first", max_length=12,
             add_special_tokens=False),
        case("trunc/single-overflow", "single", [LONG], truncation="longest_first", max_length=16,
             stride=4, return_overflowing_tokens=True),
        case("trunc/pair-longest_first", "pair", [[QUESTION, LONG]], truncation="longest_first",
             max_length=20),
        case("trunc/pair-longest_first-both", "pair", [[LONG, LONG]], truncation="longest_first",
             max_length=21),
        case("trunc/pair-only_first", "pair", [[LONG, QUESTION]], truncation="only_first",
             max_length=20),
        case("trunc/pair-only_second", "pair", [[QUESTION, LONG]], truncation="only_second",
             max_length=20),
        case("trunc/pair-only_second-too-short", "pair", [[LONG_QUESTION, "Paris."]],
             truncation="only_second", max_length=12),
        case("trunc/stride-too-large", "single", [LONG], truncation="longest_first", max_length=8,
             stride=6, return_overflowing_tokens=True),
        # Question answering: question + long context, windows with stride.
        case("qa/overflow", "pair", [[QUESTION, LONG]], truncation="only_second",
             max_length=qa_len, stride=6, return_overflowing_tokens=True),
        case("qa/overflow-pad-max", "pair", [[QUESTION, LONG]], truncation="only_second",
             max_length=qa_len, stride=6, return_overflowing_tokens=True, padding="max_length",
             fields=MASKS),
        case("qa/batch-overflow-pad-longest", "pair",
             [[QUESTION, LONG], PAIRS[1], ["Who was born in Warsaw?", LONG]],
             truncation="only_second", max_length=qa_len + 8, stride=4,
             return_overflowing_tokens=True, padding="longest"),
        case("qa/overflow-longest_first", "pair", [[QUESTION, LONG]], truncation="longest_first",
             max_length=qa_len, stride=4, return_overflowing_tokens=True),
        # Padding.
        case("pad/longest", "single", SINGLES[:5], padding="longest", fields=MASKS),
        case("pad/max_length", "single", SINGLES[:3], padding="max_length", max_length=40,
             fields=MASKS),
        case("pad/max_length+trunc", "single", [SINGLES[0], LONG], padding="max_length",
             truncation="longest_first", max_length=16),
        case("pad/model_max_length", "single", [SINGLES[1]], padding="max_length", fields=MASKS),
        case("pad/left", "single", SINGLES[:3], padding="longest", padding_side="left",
             fields=MASKS + ["offsets"]),
        case("pad/left-pairs-overflow", "pair", [[QUESTION, LONG], PAIRS[1]], padding="longest",
             padding_side="left", truncation="only_second", max_length=qa_len, stride=6,
             return_overflowing_tokens=True),
        case("pad/pairs", "pair", PAIRS, padding="longest", fields=MASKS),
    ]
    return cases


def basic_cases():
    """Plain encodes, for the alternative loading routes (only ids and type ids are
    recorded: they must agree with the route through tokenizer.json)."""
    return [
        case("batch/singles", "single", SINGLES, fields=IDS),
        case("batch/pairs", "pair", PAIRS, fields=IDS),
        case("qa/overflow", "pair", [[QUESTION, LONG]], truncation="only_second", max_length=40,
             stride=6, return_overflowing_tokens=True, fields=IDS),
    ]


def gpt2_cases():
    """GPT-2 style byte-level BPE: no template, and no padding token to pad with."""
    return [
        case("batch/singles", "single", SINGLES[:4] + SINGLES[9:]),
        case("pair", "pair", [PAIRS[0]]),
        case("pad/no-pad-token", "single", SINGLES[:2], padding="longest"),
    ]


def override_cases():
    """A few texts with every field, for the configs that override tokenizer.json."""
    return [case("batch/singles", "single", [SINGLES[0], SINGLES[2], SINGLES[9]])]


def edited_config(rel, **changes):
    with open(os.path.join(ROOT, "tests", "fixtures", rel, "tokenizer_config.json")) as f:
        config = json.load(f)
    config.update(changes)
    return {"tokenizer_config.json": config}


def run(tok, c):
    o = c["options"]
    tok.padding_side = o.get("padding_side", "right")
    kwargs = dict(
        add_special_tokens=o.get("add_special_tokens", True),
        truncation=o.get("truncation", False),
        max_length=o.get("max_length"),
        stride=o.get("stride", 0),
        return_overflowing_tokens=o.get("return_overflowing_tokens", False),
        padding=o.get("padding", False),
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    try:
        if c["kind"] == "single":
            enc = tok(list(c["inputs"]), **kwargs)
        else:
            enc = tok([a for a, _ in c["inputs"]], [b for _, b in c["inputs"]], **kwargs)
    # `tokenizers` panics (PanicException, a BaseException) when the stride does not fit.
    except BaseException as e:  # noqa: BLE001 — the error itself is the expected result
        tok.padding_side = "right"
        return dict(c, error=f"{type(e).__name__}: {e}")
    tok.padding_side = "right"
    rows = []
    for i in range(len(enc["input_ids"])):
        row = {
            "ids": enc["input_ids"][i],
            "type_ids": enc["token_type_ids"][i],
            "attention_mask": enc["attention_mask"][i],
            "special_tokens_mask": enc["special_tokens_mask"][i],
            "tokens": enc.tokens(i),
            "offsets": [list(x) for x in enc["offset_mapping"][i]],
            "word_ids": enc.word_ids(i),
            "sequence_ids": enc.sequence_ids(i),
            "overflow_to_sample": (
                enc["overflow_to_sample_mapping"][i] if "overflow_to_sample_mapping" in enc else i
            ),
        }
        rows.append({k: v for k, v in row.items() if k in o.get("fields", row.keys())})
    return dict(c, rows=rows)


def decodes(tok, texts):
    """decode() of each text's ids and of a padded row: `text` keeps special tokens,
    `text_skip` is with skip_special_tokens=True."""
    rows = [tok(t)["input_ids"] for t in texts]
    if tok.pad_token is not None:
        rows.append(tok(texts[0], padding="max_length", max_length=len(rows[0]) + 3)["input_ids"])
    return [
        {"ids": ids, "text": tok.decode(ids), "text_skip": tok.decode(ids, skip_special_tokens=True)}
        for ids in rows
    ]


def info(tok):
    def tid(t):
        return None if t is None else tok.convert_tokens_to_ids(t)

    mml = tok.model_max_length
    return {
        "class": type(tok).__name__,
        "vocab_size": tok.vocab_size,
        "len": len(tok),
        "model_max_length": mml if mml < int(1e20) else None,
        "padding_side": tok.padding_side,
        "truncation_side": tok.truncation_side,
        "clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces,
        "all_special_ids": tok.all_special_ids,
        "special_tokens": {
            k: [getattr(tok, f"{k}_token"), tid(getattr(tok, f"{k}_token"))]
            for k in ("cls", "sep", "pad", "mask", "unk", "bos", "eos")
        },
    }


def prepare(tmp, name, source, keep, write):
    """A copy of `source` holding only the files in `keep`, plus the JSON files in `write`."""
    dst = os.path.join(tmp, name)
    os.makedirs(dst)
    for f in keep:
        shutil.copy(os.path.join(source, f), dst)
    for f, content in write.items():
        with open(os.path.join(dst, f), "w", encoding="utf-8") as fh:
            json.dump(content, fh)
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "tokenizer_loading"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}

    bert_dir = os.path.join(ENCODERS, "bert-base")
    roberta_dir = os.path.join(ENCODERS, "roberta-base")
    configs = ["tokenizer_config.json", "special_tokens_map.json"]
    # name -> (directory relative to tests/fixtures, files kept in a temp copy or None,
    #          Python class to load with, expected class, cases[, JSON files written in the copy])
    specs = {
        "bert": ("encoders/bert-base", None, AutoTokenizer, "BertTokenizerFast",
                 full_cases(24)),
        "roberta": ("encoders/roberta-base", None, AutoTokenizer, "RobertaTokenizerFast",
                    full_cases(40)),
        "bert-mlm": ("encoders/bert-mlm", None, AutoTokenizer, "BertTokenizerFast",
                     basic_cases()),
        "bert-vocab": ("encoders/bert-base", ["vocab.txt"] + configs, AutoTokenizer,
                       "BertTokenizerFast", basic_cases()),
        "bert-bare": ("encoders/bert-base", ["vocab.txt"], BertTokenizerFast,
                      "BertTokenizerFast", basic_cases()),
        "roberta-vocab": ("encoders/roberta-base", ["vocab.json", "merges.txt"] + configs,
                          AutoTokenizer, "RobertaTokenizerFast", basic_cases()),
        "roberta-bare": ("encoders/roberta-base", ["vocab.json", "merges.txt"],
                         RobertaTokenizerFast, "RobertaTokenizerFast", basic_cases()),
        "bert-cased-config": ("encoders/bert-base", ["tokenizer.json", "special_tokens_map.json"],
                              AutoTokenizer, "BertTokenizerFast", override_cases(),
                              edited_config("encoders/bert-base", do_lower_case=False)),
        "roberta-prefix-config": ("encoders/roberta-base",
                                  ["tokenizer.json", "special_tokens_map.json"], AutoTokenizer,
                                  "RobertaTokenizerFast", override_cases(),
                                  edited_config("encoders/roberta-base", add_prefix_space=True,
                                                trim_offsets=False)),
        "gpt2-style": ("encoders/roberta-base", ["vocab.json", "merges.txt"], AutoTokenizer,
                       "GPT2TokenizerFast", gpt2_cases(),
                       {"tokenizer_config.json": {"tokenizer_class": "GPT2Tokenizer"}}),
    }
    assert os.path.isdir(bert_dir) and os.path.isdir(roberta_dir)
    out = {"versions": versions, "tokenizers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rel, keep, cls, expect_cls, cases, *write) in specs.items():
            write = write[0] if write else {}
            src = os.path.join(ROOT, "tests", "fixtures", rel)
            path = src if keep is None else prepare(tmp, name, src, keep, write)
            tok = cls.from_pretrained(path)
            assert type(tok).__name__ == expect_cls, (name, type(tok).__name__)
            if keep is not None and "tokenizer.json" not in keep:
                assert not os.path.exists(os.path.join(path, "tokenizer.json"))
            out["tokenizers"][name] = {
                "dir": rel,
                "keep": keep,
                "write": write,
                "info": info(tok),
                "cases": [run(tok, c) for c in cases],
                "decode": decodes(tok, SINGLES if name in ("bert", "roberta") else SINGLES[:2]),
            }
    path = os.path.join(args.out, "tiny.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(path, os.path.getsize(path), "bytes")

    # The real all-MiniLM-L6-v2 vocabulary.
    tok = AutoTokenizer.from_pretrained(MINILM)
    long_text = " ".join([LONG] * 6)
    cases = [
        case("batch/singles", "single", SINGLES[:5] + SINGLES[8:]),
        case("batch/pairs", "pair", PAIRS),
        case("long/untruncated", "single", [long_text], fields=IDS),
        case("long/truncated", "single", [long_text], truncation="longest_first", max_length=128),
        case("long/truncation-to-model-max", "single", [" ".join([LONG] * 20)],
             truncation="longest_first", fields=["ids"]),
        case("qa/overflow", "pair", [[QUESTION, " ".join([LONG] * 4)]], truncation="only_second",
             max_length=64, stride=16, return_overflowing_tokens=True, padding="max_length"),
    ]
    minilm = {
        "versions": versions,
        "hub_id": MINILM,
        "info": info(tok),
        "cases": [run(tok, c) for c in cases],
        "decode": decodes(tok, SINGLES[:5]),
    }
    assert len(minilm["cases"][2]["rows"][0]["ids"]) > 128
    path = os.path.join(args.out, "minilm.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(minilm, f, ensure_ascii=False, separators=(",", ":"))
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
