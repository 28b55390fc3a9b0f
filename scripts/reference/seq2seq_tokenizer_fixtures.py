#!/usr/bin/env python3
"""Tiny SentencePiece tokenizers of the sequence-to-sequence families, laid out as their hub
checkpoints ship them (no tokenizer.json), and what `transformers` 4.57 makes of them, for
crates/ferroformer/tests/seq2seq_tokenizers.rs.

For each family a SentencePiece model is trained with a fixed seed on the small multilingual
text below (Unigram for T5 / Pegasus / Marian, BPE for mBART / NLLB / M2M100, as the real
checkpoints), wrapped in the family's slow tokenizer and saved with `save_pretrained` under
tests/fixtures/seq2seq_tokenizers/<family>/ (any tokenizer.json removed, so the Rust side must
convert the SentencePiece files). Then `AutoTokenizer.from_pretrained(dir, use_fast=True)` is
the reference: the fast tokenizer converted from the slow files (`convert_slow_tokenizer`), or
the slow tokenizer itself for the families without a fast one (Marian, M2M100).

expected.json per family holds, for each text of TEXTS:
  - `ids`: `tok(text).input_ids`,
  - `decoded`: `tok.decode(ids, skip_special_tokens=True)`,
  - `truncated`: `tok(text, truncation=True, max_length=MAX_LEN).input_ids`,
and for the multilingual families one `src_lang` block per source language (ids after
`tok.src_lang = code`), the language codes (`lang_codes`, as `src_lang` takes them) with
their ids; for Marian the target side: `tok(text_target=text).input_ids` and their decode.

Usage: /root/venvs/ref/bin/python scripts/reference/seq2seq_tokenizer_fixtures.py
"""
import json
import os
import random
import shutil
import tempfile

import sentencepiece as spm
import transformers
from transformers import (
    AutoTokenizer,
    M2M100Tokenizer,
    MarianTokenizer,
    MBart50Tokenizer,
    MBartTokenizer,
    NllbTokenizer,
    PegasusTokenizer,
    T5Tokenizer,
)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "seq2seq_tokenizers")

# Training text: Latin with accents, Cyrillic, Greek, CJK, emoji, digits, whitespace runs, code.
CORPUS = """The quick brown fox jumps over the lazy dog. Translation is fun!
Le café était très bon, déjà à Noël ; où est l'hôtel ? Ça va très bien.
Der Bär läuft über die Straße. Schöne Grüße aus München, Köln und Düsseldorf.
El niño comió una piña en la mañana. ¿Dónde está la biblioteca? ¡Qué día!
Москва — столица России. Привет, как дела? Я люблю читать книги.
Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. Καλημέρα σας, φίλοι μου.
東京は日本の首都です。我爱北京天安门。今天天气很好。
Summarize: The meeting is on 2024-05-17 at 10:30, room 42; budget 1,250,000 EUR.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828 -7 +12 50%
def add(a, b):\n    return a + b  # sum of two numbers
for (int i = 0; i < n; ++i) { total += x[i]; }
Emoji are fun 😀 🎉 👍 and so are symbols like © ® ™ € £ ¥.
translate English to German: That is good. Das ist gut.
summarize: studies have shown that owning a dog is good for you.
She sells sea shells by the sea shore; the shells she sells are surely sea shells.
Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.
"""

# The texts encoded: mixed scripts, special tokens inside text, leading / trailing / repeated
# spaces, newlines and tabs, characters the models never saw.
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces   ",
    "multiple    spaces\tand\ttabs\nand\n\nnewlines",
    "Le café était très bon, déjà à Noël.",
    "Москва — столица России.",
    "Η Αθήνα είναι η πρωτεύουσα.",
    "東京は日本の首都です。我爱北京。",
    "Emoji 😀 🎉 and unseen ones 🦀 🧬 ꙮ ∰ ᚠ",
    "def add(a, b):\n    return a + b",
    "Numbers: 3.14159, 1,250,000 and 2024-05-17.",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ligature ﬁ",
    "special </s> inside <unk> text <pad> here",
    "fill <extra_id_0> and <extra_id_9>, a <mask> or <mask_1>, codes en_XX eng_Latn __fr__ end",
    # Marian's target-language code, which the slow class splits off the start of the text.
    ">>fra<< Hello world, again",
    "",
    " ",
]
MAX_LEN = 8


# The real checkpoints normalize with SentencePiece's `nmt_nfkc` rules, whose precompiled
# charsmap alone is ~240 KB per model; a few rules of the same kinds (fullwidth forms,
# ligatures, whitespace controls, a one-to-many and a many-to-one mapping) compile to a small
# charsmap that exercises the same machinery.
NORMALIZATION_RULES = (
    [(0xFF01 + i, [0x21 + i]) for i in range(0x5E)]  # fullwidth ASCII
    + [(0xFB01, [0x66, 0x69]), (0xFB02, [0x66, 0x6C])]  # ﬁ ﬂ
    + [(0x09, [0x20]), (0x0A, [0x20]), (0x0D, [0x20]), (0xA0, [0x20]), (0x3000, [0x20])]
    + [(0x2026, [0x2E, 0x2E, 0x2E]), (0x2160, [0x49])]  # … Ⅰ
)


def rules_tsv(path):
    with open(path, "w") as f:
        for src, dst in NORMALIZATION_RULES:
            f.write(f"{src:X}\t{' '.join(f'{c:X}' for c in dst)}\n")
        # A sequence of two code points mapped to one.
        f.write("65 301\tE9\n")


def train(name, model_type, vocab_size, extra, text=CORPUS, seed=0):
    """A SentencePiece model trained on `text` with fixed settings; returns the .model bytes."""
    # A fixed directory: the trainer records its input paths in the model.
    tmp = os.path.join(tempfile.gettempdir(), "seq2seq-spm-fixture")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rules = os.path.join(tmp, "rules.tsv")
    rules_tsv(rules)
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        # Repeated lines give the trainer enough sentences; the order is fixed.
        for _ in range(3):
            f.write(text)
    prefix = os.path.join(tmp, name)
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=0.9995,
        normalization_rule_tsv=rules,
        num_threads=1,
        # The text is small: train as many pieces as it supports, up to vocab_size.
        hard_vocab_limit=False,
        minloglevel=2,
        **extra,
    )
    with open(prefix + ".model", "rb") as f:
        data = f.read()
    shutil.rmtree(tmp)
    return data


def write_model(dir_, filename, data):
    with open(os.path.join(dir_, filename), "wb") as f:
        f.write(data)


def fresh_dir(family):
    out = os.path.join(ROOT, family)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    return out


def save(slow, out):
    slow.save_pretrained(out)
    json_path = os.path.join(out, "tokenizer.json")
    if os.path.exists(json_path):
        os.remove(json_path)


def encode_cases(tok):
    cases = []
    for text in TEXTS:
        ids = tok(text).input_ids
        cases.append(
            {
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids, skip_special_tokens=True),
                "decoded_with_special": tok.decode(ids, skip_special_tokens=False),
                "truncated": tok(text, truncation=True, max_length=MAX_LEN).input_ids,
            }
        )
    return cases


# Pairs (the second text after the first, with the family's special tokens).
PAIRS = [("Hello world", "Das ist gut."), ("Москва", "東京 😀")]


def pair_cases(tok):
    return [{"a": a, "b": b, "ids": tok(a, b).input_ids} for a, b in PAIRS]


def record(family, out, src_langs=(), lang_codes=None, target=False):
    tok = AutoTokenizer.from_pretrained(out, use_fast=True)
    expected = {
        "class": type(tok).__name__,
        "max_length": MAX_LEN,
        "cases": encode_cases(tok),
        "pairs": pair_cases(tok),
    }
    if lang_codes is not None:
        expected["lang_codes"] = {code: tok.convert_tokens_to_ids(token) for code, token in lang_codes}
    blocks = []
    for code in src_langs:
        tok.src_lang = code
        blocks.append({"src_lang": code, "cases": encode_cases(tok)})
    if blocks:
        expected["src_lang"] = blocks
    if target:
        rows = []
        for text in TEXTS:
            ids = tok(text_target=text).input_ids
            rows.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
        expected["target"] = rows
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(family, expected["class"], "ok")


def t5():
    out = fresh_dir("t5")
    # T5's spiece.model: <pad>=0, </s>=1, <unk>=2, no <s>.
    data = train("t5", "unigram", 300, dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    write_model(out, "spiece.model", data)
    slow = T5Tokenizer(os.path.join(out, "spiece.model"), extra_ids=10, legacy=True)
    save(slow, out)
    record("t5", out)


def pegasus():
    out = fresh_dir("pegasus")
    # Pegasus's spiece.model: <pad>=0, </s>=1, <unk>=2, shifted by `offset` in the vocabulary.
    data = train("pegasus", "unigram", 280, dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    write_model(out, "spiece.model", data)
    slow = PegasusTokenizer(os.path.join(out, "spiece.model"))
    save(slow, out)
    record("pegasus", out)


def fairseq_bpe(name, vocab_size=320):
    # fairseq's sentencepiece.bpe.model: <unk>=0, <s>=1, </s>=2 (SentencePiece's defaults).
    return train(name, "bpe", vocab_size, dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1))


def mbart():
    out = fresh_dir("mbart")
    write_model(out, "sentencepiece.bpe.model", fairseq_bpe("mbart"))
    slow = MBartTokenizer(os.path.join(out, "sentencepiece.bpe.model"), src_lang="en_XX", tgt_lang="ro_RO")
    save(slow, out)
    codes = transformers.models.mbart.tokenization_mbart.FAIRSEQ_LANGUAGE_CODES
    record("mbart", out, src_langs=["ro_RO", "zh_CN"], lang_codes=[(c, c) for c in codes])


def mbart50():
    out = fresh_dir("mbart50")
    write_model(out, "sentencepiece.bpe.model", fairseq_bpe("mbart50"))
    slow = MBart50Tokenizer(os.path.join(out, "sentencepiece.bpe.model"), src_lang="en_XX", tgt_lang="ro_RO")
    save(slow, out)
    codes = transformers.models.mbart50.tokenization_mbart50.FAIRSEQ_LANGUAGE_CODES
    record("mbart50", out, src_langs=["ro_RO", "uk_UA"], lang_codes=[(c, c) for c in codes])


def nllb():
    out = fresh_dir("nllb")
    write_model(out, "sentencepiece.bpe.model", fairseq_bpe("nllb"))
    slow = NllbTokenizer(os.path.join(out, "sentencepiece.bpe.model"), src_lang="eng_Latn", tgt_lang="fra_Latn")
    save(slow, out)
    codes = transformers.models.nllb.tokenization_nllb.FAIRSEQ_LANGUAGE_CODES
    record("nllb", out, src_langs=["fra_Latn", "rus_Cyrl"], lang_codes=[(c, c) for c in codes])


def shuffled_vocab(first, pieces, last, seed):
    """A fairseq / Marian vocab.json: its ids are not the SentencePiece ids."""
    rest = list(pieces)
    random.Random(seed).shuffle(rest)
    vocab = {}
    for token in first + rest + last:
        vocab.setdefault(token, len(vocab))
    return vocab


def spm_pieces(path):
    sp = spm.SentencePieceProcessor(model_file=path)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def m2m100():
    out = fresh_dir("m2m100")
    spm_path = os.path.join(out, "sentencepiece.bpe.model")
    write_model(out, "sentencepiece.bpe.model", fairseq_bpe("m2m100"))
    # "🦀" is no piece of the model: the slow class looks the text SentencePiece cannot
    # segment up in vocab.json, where a fairseq dictionary may have it.
    vocab = shuffled_vocab(["<s>", "<pad>", "</s>", "<unk>"], spm_pieces(spm_path) + ["🦀"], [], seed=1)
    vocab_path = os.path.join(out, "vocab.json")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    codes = transformers.models.m2m_100.tokenization_m2m_100.FAIRSEQ_LANGUAGE_CODES["m2m100"]
    # The hub's M2M100 configs list the language tokens as additional special tokens (without
    # them the class would not make them special, and decoding would keep them).
    slow = M2M100Tokenizer(
        vocab_path,
        spm_path,
        src_lang="en",
        tgt_lang="fr",
        additional_special_tokens=[f"__{c}__" for c in codes],
    )
    save(slow, out)
    record("m2m100", out, src_langs=["fr", "ru"], lang_codes=[(c, f"__{c}__") for c in codes])


# Marian's target side is trained on other text, so the two SentencePiece models differ.
TARGET_CORPUS = """Das ist gut. Der Hund läuft schnell über die Straße. Guten Morgen!
Le chien court vite dans la rue. Bonjour à tous, ça va ?
Привет мир. Καλημέρα κόσμε. 你好世界。 Zahlen 1 2 3 4 5 6 7 8 9 0 und 3,14.
Ich möchte einen Kaffee, bitte. Wo ist der Bahnhof? Vielen Dank für Ihre Hilfe.
"""


def marian():
    out = fresh_dir("marian")
    # Marian's SentencePiece models: <unk>=0, <s>=1, </s>=2.
    extra = dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    src = os.path.join(out, "source.spm")
    tgt = os.path.join(out, "target.spm")
    write_model(out, "source.spm", train("marian-src", "unigram", 260, extra))
    write_model(out, "target.spm", train("marian-tgt", "unigram", 300, extra, text=TARGET_CORPUS + CORPUS[:600]))
    pieces = spm_pieces(src) + spm_pieces(tgt)
    # opus-mt vocabularies: </s>=0, <unk>=1, the pieces of both sides, multilingual target
    # codes, <pad> last.
    vocab = shuffled_vocab(["</s>", "<unk>"], pieces + ["🦀"], [">>fra<<", ">>deu<<", "<pad>"], seed=2)
    vocab_path = os.path.join(out, "vocab.json")
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    slow = MarianTokenizer(src, tgt, vocab_path, source_lang="en", target_lang="de")
    save(slow, out)
    record("marian", out, target=True)


def variant(base, name, tokenizer_config, config_json=None, **record_kwargs):
    """A copy of `base`'s model files with other configuration files: the older hub layouts
    (no tokenizer class, no special_tokens_map.json, class defaults) and the settings that
    change the layout (`legacy`, `legacy_behaviour`)."""
    out = fresh_dir(name)
    src = os.path.join(ROOT, base)
    for f in os.listdir(src):
        if f.endswith((".model", ".spm")) or f == "vocab.json":
            shutil.copy(os.path.join(src, f), os.path.join(out, f))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=2)
    if config_json is not None:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(config_json, f, indent=2)
    record(name, out, **record_kwargs)


def variants():
    # t5-small's layout: no class (config.json's model type), 100 sentinels by default.
    variant("t5", "t5-hub", {"model_max_length": 512}, {"model_type": "t5"})
    # `legacy: false`: only the first word gets the prefix space.
    variant("t5", "t5-nonlegacy", {"tokenizer_class": "T5Tokenizer", "extra_ids": 10, "legacy": False})
    # opus-mt's layout: languages only, special tokens from the class.
    variant("marian", "marian-hub", {"source_lang": "en", "target_lang": "de"}, {"model_type": "marian"}, target=True)
    nllb_codes = transformers.models.nllb.tokenization_nllb.FAIRSEQ_LANGUAGE_CODES
    # The old NLLB layout: `X </s> lang`.
    variant(
        "nllb",
        "nllb-legacy",
        {"tokenizer_class": "NllbTokenizer", "legacy_behaviour": True, "src_lang": "eng_Latn"},
        src_langs=["fra_Latn"],
        lang_codes=[(c, c) for c in nllb_codes],
    )
    mbart50_codes = transformers.models.mbart50.tokenization_mbart50.FAIRSEQ_LANGUAGE_CODES
    # Only the class and the source language: the codes and specials come from the class.
    variant(
        "mbart50",
        "mbart50-hub",
        {"tokenizer_class": "MBart50Tokenizer", "src_lang": "de_DE"},
        src_langs=["en_XX"],
        lang_codes=[(c, c) for c in mbart50_codes],
    )


if __name__ == "__main__":
    t5()
    pegasus()
    mbart()
    mbart50()
    nllb()
    m2m100()
    marian()
    variants()
