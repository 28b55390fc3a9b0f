#!/usr/bin/env python3
"""Builds tests/fixtures/seq2seq/: tiny random encoder-decoder checkpoints of every family
of issue 11 (T5 v1.0 and v1.1, BART, mBART-50, Marian, M2M100, NLLB, Pegasus), each with a
tokenizer built from a SentencePiece / byte-level BPE model trained here on a small
multilingual corpus, shipped the way the hub checkpoints ship it, and what `transformers`
returns for them.

Per fixture directory `<name>/`:
- `config.json`, `generation_config.json`, `model.safetensors` (save_pretrained) and the
  tokenizer files (`tokenizer.json` where transformers has a fast tokenizer; the slow files
  `spiece.model` / `sentencepiece.bpe.model` / `source.spm` + `target.spm` + `vocab.json` /
  `vocab.json` + `merges.txt` as the real checkpoints have them);
- `io.safetensors`: input_ids (batch 2, second row right-padded), attention_mask,
  encoder_last_hidden_state, decoder_input_ids (batch 2, 5 tokens, starting with
  decoder_start_token_id) and the full forward's logits;
- `expected.json`: `tokenize` (ids of a mixed-script text set), `generate` (model.generate
  cases, each on the padded batch and on each row alone) and `pipelines` (summarization,
  translation, text2text-generation outputs).

expected.json:
  model_type; special_ids {pad, eos, bos, decoder_start, forced_bos, forced_eos, alt_eos}
  (from generation_config.json; alt_eos is the token the generate cases pass as eos_token_id);
  tokenize: [{text, kwargs, ids, tokens, decoded}] (kwargs {} = tokenizer(text) with the
  saved src_lang; {"text_target": true, "tgt_lang"?} = tokenizer(text_target=text);
  {"src_lang"} = source side with another language; decoded = skip_special_tokens=True);
  generate: [{name "<case>/<batch|row0|row1>", kwargs (exactly as passed to generate, besides
  input_ids/attention_mask), input_ids, attention_mask, sequences, sequences_scores|null}];
  pipelines: [{task, inputs, batched (false: inputs[0] passed as a plain string),
  kwargs (call kwargs), pipeline_generation_config (the pipeline's generation config before
  call kwargs: generation_config.json + the pipeline's defaults + task_specific_params, as
  to_diff_dict), prefix, output (exactly what the pipeline returned)}].

Weights: N(0, 0.4) (value / output / second FFN projections N(0, 0.2), norm weights
+-U(0.5, 1.5) with random signs, biases N(0, 0.1), final_logits_bias N(0, 0.5)) so greedy
and beam choices are not near-ties and outputs do not collapse into one repeated token;
the smallest top-1/top-2 gap of the greedy cases' scores is printed in the summary, with
any batched != unbatched generate case and any slow != fast tokenizer difference.
Deterministic: rerunning rewrites byte-identical files.

Note: MarianTokenizer applies sacremoses' punctuation normalizer only when sacremoses is
installed; the reference venv does not have it, so the Marian fixtures use no normalizer.

Usage: python scripts/reference/seq2seq_fixtures.py [--out tests/fixtures/seq2seq]
"""
import argparse
import hashlib
import json
import os
import shutil
import tempfile

import sentencepiece as spm
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import (AddedToken, AutoTokenizer, BartConfig, BartForConditionalGeneration,
                          BartTokenizerFast, GenerationConfig, M2M100Config,
                          M2M100ForConditionalGeneration, M2M100Tokenizer, MarianConfig,
                          MarianMTModel, MarianTokenizer, MBart50TokenizerFast, MBartConfig,
                          MBartForConditionalGeneration, NllbTokenizerFast, PegasusConfig,
                          PegasusForConditionalGeneration, PegasusTokenizerFast, T5Config,
                          T5ForConditionalGeneration, T5TokenizerFast)

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
MAX_POS = 64
STD = 0.4
STD_OUT = 0.2
OUT_PROJ = ("v_proj", "out_proj", ".v.weight", ".o.weight", "fc2", ".wo.")

# A small multilingual corpus: (language, sentence). English/German/French dominate so the
# translation fixtures have pieces on both sides; other scripts are there for coverage.
CORPUS = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "A small model can still learn to copy and reverse short sequences.",
        "Summarization turns a long article into a few sentences.",
        "Translation maps a sentence in one language to another language.",
        "The weather was cold and windy, so we stayed at home and read books.",
        "Researchers released a new dataset of news articles and their summaries.",
        "She bought three apples, two oranges and a loaf of bread at the market.",
        "The train to Berlin leaves at half past seven every morning.",
        "Rust programs are fast, and the compiler catches many bugs early.",
        "In 2024 the city opened a new library with more than 100000 books.",
        "Please translate this sentence into German for me.",
        "The committee will meet again next week to discuss the budget.",
        "Children played football in the park until the sun went down.",
        "He said that the results were surprising but the method was sound.",
        "Water boils at 100 degrees Celsius at sea level.",
        "Our team won the final match after a long and difficult season.",
        "The museum is closed on Mondays and open late on Fridays.",
        "Neural networks learn representations from large amounts of text.",
        "What time is it? It is almost midnight.",
        "I would like a cup of coffee with milk, please.",
    ],
    "de": [
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Ein kleines Modell kann trotzdem lernen, kurze Folgen zu kopieren.",
        "Die Zusammenfassung macht aus einem langen Artikel wenige Sätze.",
        "Die Übersetzung bildet einen Satz in eine andere Sprache ab.",
        "Das Wetter war kalt und windig, also blieben wir zu Hause.",
        "Der Zug nach Berlin fährt jeden Morgen um halb acht ab.",
        "Sie kaufte drei Äpfel, zwei Orangen und ein Brot auf dem Markt.",
        "Die Kinder spielten Fußball im Park, bis die Sonne unterging.",
        "Das Museum ist montags geschlossen und freitags lange geöffnet.",
        "Ich hätte gern eine Tasse Kaffee mit Milch, bitte.",
        "Wasser kocht auf Meereshöhe bei 100 Grad Celsius.",
        "Unsere Mannschaft gewann das Finale nach einer schwierigen Saison.",
        "Der Ausschuss trifft sich nächste Woche wieder.",
        "Neuronale Netze lernen Darstellungen aus großen Textmengen.",
    ],
    "fr": [
        "Le renard brun rapide saute par-dessus le chien paresseux.",
        "Un petit modèle peut encore apprendre à copier des séquences courtes.",
        "Le résumé transforme un long article en quelques phrases.",
        "La traduction associe une phrase à une autre langue.",
        "Le train pour Berlin part à sept heures et demie chaque matin.",
        "Elle a acheté trois pommes, deux oranges et du pain au marché.",
        "Les enfants ont joué au football dans le parc jusqu'au coucher du soleil.",
        "Je voudrais un café au lait, s'il vous plaît.",
        "Le musée est fermé le lundi et ouvert tard le vendredi.",
        "Où est la gare ? Elle est à côté de l'hôtel.",
    ],
    "es": [
        "El rápido zorro marrón salta sobre el perro perezoso.",
        "Los niños jugaron al fútbol en el parque hasta el atardecer.",
        "¿Dónde está la estación? Está cerca del hotel.",
        "Me gustaría una taza de café con leche, por favor.",
    ],
    "ru": [
        "Быстрая коричневая лиса прыгает через ленивую собаку.",
        "Дети играли в футбол в парке до заката.",
        "Поезд в Берлин отправляется каждое утро в половине восьмого.",
        "Я хотел бы чашку кофе с молоком.",
    ],
    "el": [
        "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
        "Τα παιδιά έπαιζαν ποδόσφαιρο στο πάρκο.",
    ],
    "zh": [
        "敏捷的棕色狐狸跳过了懒狗。",
        "孩子们在公园里踢足球。",
        "我想要一杯加牛奶的咖啡。",
    ],
    "ja": [
        "子供たちは公園でサッカーをしました。",
        "コーヒーを一杯ください。",
    ],
    "ar": [
        "الثعلب البني السريع يقفز فوق الكلب الكسول.",
        "لعب الأطفال كرة القدم في الحديقة.",
    ],
    "hi": [
        "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
        "बच्चे पार्क में फुटबॉल खेलते थे।",
    ],
}
ALL_SENTENCES = [s for lang in CORPUS for s in CORPUS[lang]]

# Tokenizer text set: scripts, digits, punctuation, doubled / leading / trailing spaces,
# NFKC-affected characters (ligature, full-width), an emoji and a character the training
# corpus never saw (unknown piece), a newline.
TOKENIZE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Der Zug nach Berlin fährt um halb acht.",
    "Le musée est fermé le lundi.",
    "Быстрая лиса и 孩子们 في الحديقة",
    "  leading and  double   spaces ",
    "ﬁne ＡＢＣ １２３ ｗｏｒｌｄ café naïve ½\u00a0no-break\u3000wide",
    "emoji 🙂 and unseen ק letters",
    "line one\nline two",
    "In 2024: 3.14, 100% (yes) - ok?",
    "special <mask> and <mask_1> or <extra_id_0> then </s> end",
]

LONG_TEXT = " ".join(CORPUS["en"][:8])  # well over MAX_POS tokens: exercises truncation


# --------------------------------------------------------------------------- tokenizers

# A small NFKC-like normalization table compiled into each SentencePiece model (and from
# there into tokenizer.json's `Precompiled` normalizer). The hub checkpoints use the built-in
# `nmt_nfkc` table, which is the same mechanism but ~240 KB per file; this keeps fixtures
# small while still exercising the precompiled charsmap: ligatures, full-width letters and
# digits, no-break / ideographic spaces, tab and newline to space.
NORM_RULES = (
    [("FB01", "66 69"), ("FB02", "66 6C"), ("00A0", "20"), ("3000", "20"), ("2003", "20"),
     ("0009", "20"), ("000A", "20"), ("2460", "31"), ("2461", "32"), ("00BD", "31 2044 32")]
    + [(f"{0xFF21 + i:04X}", f"{0x41 + i:02X}") for i in range(26)]
    + [(f"{0xFF41 + i:04X}", f"{0x61 + i:02X}") for i in range(26)]
    + [(f"{0xFF10 + i:04X}", f"{0x30 + i:02X}") for i in range(10)]
)


def train_spm(path_prefix, sentences, model_type, vocab_size, **ids):
    """Trains a SentencePiece model deterministically (one thread, no sampling)."""
    spm.set_random_generator_seed(1234)
    corpus = path_prefix + ".txt"
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    rules = path_prefix + ".tsv"
    with open(rules, "w", encoding="utf-8") as f:
        f.write("".join(f"{a}\t{b}\n" for a, b in NORM_RULES))
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=path_prefix, model_type=model_type,
        normalization_rule_tsv=rules,
        vocab_size=vocab_size, character_coverage=1.0, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, hard_vocab_limit=False,
        minloglevel=2, **ids)
    # The trainer records its (temporary) input paths in the model: keep only the base
    # names so that reruns write byte-identical files.
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    with open(path_prefix + ".model", "rb") as f:
        m.ParseFromString(f.read())
    m.trainer_spec.input[:] = [os.path.basename(corpus)]
    m.trainer_spec.model_prefix = os.path.basename(path_prefix)
    m.normalizer_spec.normalization_rule_tsv = os.path.basename(rules)
    with open(path_prefix + ".model", "wb") as f:
        f.write(m.SerializeToString(deterministic=True))
    return path_prefix + ".model"


def spm_pieces(model_file):
    sp = spm.SentencePieceProcessor(model_file=model_file)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())], sp


def tok_t5(tmp):
    # T5's spiece.model: pad 0, eos 1, unk 2, no bos (as t5-small's).
    m = train_spm(os.path.join(tmp, "t5"), ALL_SENTENCES, "unigram", 260,
                  pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    # add_prefix_space=True: without it T5TokenizerFast's conversion hands the slow
    # tokenizer add_prefix_space=None and writes a Metaspace with prepend_scheme "never",
    # which drops SentencePiece's dummy-prefix "▁" (t5-small's tokenizer.json prepends it).
    return T5TokenizerFast(vocab_file=m, extra_ids=10, model_max_length=MAX_POS,
                           add_prefix_space=True, legacy=True)


def tok_pegasus(tmp):
    # Pegasus' spiece.model has the same special ids as T5's; the tokenizer shifts every
    # piece by `offset` (103) to make room for <mask_1>, <mask_2> and <unk_2>..<unk_102>.
    m = train_spm(os.path.join(tmp, "pegasus"), ALL_SENTENCES, "unigram", 240,
                  pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    return PegasusTokenizerFast(vocab_file=m, model_max_length=MAX_POS)


def tok_mbart(tmp):
    # fairseq-style sentencepiece.bpe.model (unk 0, bos 1, eos 2, as the real one).
    m = train_spm(os.path.join(tmp, "mbart"), ALL_SENTENCES, "bpe", 300)
    return MBart50TokenizerFast(vocab_file=m, src_lang="en_XX", tgt_lang="de_DE",
                                model_max_length=MAX_POS)


def tok_nllb(tmp):
    m = train_spm(os.path.join(tmp, "nllb"), ALL_SENTENCES, "bpe", 300)
    # Ids laid out as facebook/nllb-200-*'s added_tokens_decoder: fairseq specials 0-3,
    # pieces, the 202 language codes, then <mask> last. (Built from scratch without this,
    # NllbTokenizerFast puts <mask> before the language codes.)
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES
    start = spm.SentencePieceProcessor(model_file=m).get_piece_size() + 1
    atd = {i: AddedToken(t, special=True)
           for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for i, code in enumerate(FAIRSEQ_LANGUAGE_CODES):
        atd[start + i] = AddedToken(code, special=True)
    atd[start + len(FAIRSEQ_LANGUAGE_CODES)] = AddedToken("<mask>", lstrip=True, special=True)
    return NllbTokenizerFast(vocab_file=m, src_lang="eng_Latn", tgt_lang="deu_Latn",
                             model_max_length=MAX_POS, added_tokens_decoder=atd)


def tok_m2m100(tmp):
    m = train_spm(os.path.join(tmp, "m2m100"), ALL_SENTENCES, "bpe", 300)
    pieces, _ = spm_pieces(m)
    # vocab.json as facebook/m2m100_418M has it: fairseq specials, then the pieces.
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for p in pieces:
        if p not in ("<unk>", "<s>", "</s>") and p not in vocab:
            vocab[p] = len(vocab)
    vpath = os.path.join(tmp, "m2m100_vocab.json")
    with open(vpath, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=2)
    # The language tokens are listed as additional special tokens, as facebook/m2m100_418M's
    # special_tokens_map.json has them. (Built from scratch, M2M100Tokenizer 4.57 leaves the
    # list empty: a chained `not in ... not in` in its __init__ is always false.)
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES
    langs = [f"__{c}__" for c in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
    return M2M100Tokenizer(vocab_file=vpath, spm_file=m, src_lang="en", tgt_lang="de",
                           model_max_length=MAX_POS, additional_special_tokens=langs)


def tok_marian(tmp):
    # opus-mt-en-de: separate source / target SentencePiece models, one joint vocab.json
    # ("</s>" 0, "<unk>" 1, pieces of both, "<pad>" last).
    src = train_spm(os.path.join(tmp, "marian_src"), CORPUS["en"], "unigram", 200)
    tgt = train_spm(os.path.join(tmp, "marian_tgt"), CORPUS["de"], "unigram", 200)
    vocab = {"</s>": 0, "<unk>": 1}
    for m in (src, tgt):
        for p in spm_pieces(m)[0]:
            if p not in ("<unk>", "<s>", "</s>") and p not in vocab:
                vocab[p] = len(vocab)
    vocab["<pad>"] = len(vocab)
    vpath = os.path.join(tmp, "marian_vocab.json")
    with open(vpath, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=2)
    return MarianTokenizer(source_spm=src, target_spm=tgt, vocab=vpath, source_lang="en",
                           target_lang="de", model_max_length=MAX_POS)


def tok_bart(tmp):
    # Byte-level BPE as facebook/bart-large's vocab.json + merges.txt.
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(ALL_SENTENCES, vocab_size=420, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    d = os.path.join(tmp, "bart_bpe")
    os.makedirs(d, exist_ok=True)
    bpe.save_model(d)
    return BartTokenizerFast(vocab_file=os.path.join(d, "vocab.json"),
                             merges_file=os.path.join(d, "merges.txt"),
                             model_max_length=MAX_POS)


def vocab_size_for(tok):
    """Model vocab size: covers every id the tokenizer can produce, rounded up to 8."""
    n = max(len(tok), max(tok.get_vocab().values()) + 1, max(tok.all_special_ids) + 1)
    if hasattr(tok, "lang_token_to_id"):  # M2M100: language codes, then 8 made-up words
        n = max(n, max(tok.lang_token_to_id.values()) + 1 + tok.num_madeup_words)
    return (n + 7) // 8 * 8


# --------------------------------------------------------------------------- models

def scale_up(model, family):
    """Re-initialises every weight (see the module docstring), so decisions are not
    near-ties and a wrong norm or bias shows. Sinusoidal position tables are left as the
    model computed them."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "embed_positions" in n and family in ("marian", "pegasus", "m2m100", "nllb"):
                continue
            if "relative_attention_bias" in n:
                p.normal_(0.0, 1.0)  # large, so bucket errors change the output
            elif "norm" in n:
                if n.endswith("bias"):
                    p.normal_(0.0, 0.1)
                else:
                    # Random signs: with a tied head (or a shared decoder embedding) a
                    # positive norm keeps the input token's direction up to the logits,
                    # and greedy decoding just repeats its last token.
                    sign = torch.randint(0, 2, p.shape).float() * 2 - 1
                    p.copy_(sign * (0.5 + torch.rand_like(p)))
            elif p.dim() == 1:
                p.normal_(0.0, 0.1)
            elif any(k in n for k in OUT_PROJ):
                # Value / output projections smaller: at std 0.4 the cross-attention
                # output swamps the residual and every decoder position gives the same
                # logits (greedy repeats one token).
                p.normal_(0.0, STD_OUT)
            else:
                p.normal_(0.0, STD)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(0.0, 0.5)


def common_bart_like(vocab, **kw):
    return dict(vocab_size=vocab, d_model=16, encoder_layers=2, decoder_layers=2,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32,
                decoder_ffn_dim=32, max_position_embeddings=MAX_POS, dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, init_std=STD, **kw)


def build(name, tok):
    vocab = vocab_size_for(tok)
    gen = {}  # generation_config.json values (besides the token ids from the config)
    if name in ("t5", "t5-v1_1"):
        v11 = name == "t5-v1_1"
        cfg = T5Config(
            vocab_size=vocab, d_model=16, d_kv=4, num_heads=3 if v11 else 4, d_ff=32,
            # Encoder and decoder depths differ (3 vs 2). Not the other way round:
            # transformers 4.57 sizes generate's KV cache by `num_layers` (the encoder's),
            # so a deeper decoder fails with IndexError in cache_utils.
            num_layers=3, num_decoder_layers=2, relative_attention_num_buckets=8,
            relative_attention_max_distance=16, dropout_rate=0.0,
            feed_forward_proj="gated-gelu" if v11 else "relu",
            tie_word_embeddings=not v11, initializer_factor=STD * 4,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        if not v11:
            # As t5-small's config.json (lengths shrunk so outputs stay short).
            cfg.task_specific_params = {
                "summarization": {"early_stopping": True, "length_penalty": 2.0,
                                  "max_length": 12, "min_length": 5,
                                  "no_repeat_ngram_size": 3, "num_beams": 4,
                                  "prefix": "summarize: "},
                "translation_en_to_de": {"early_stopping": True, "max_length": 12,
                                         "num_beams": 4,
                                         "prefix": "translate English to German: "},
                "translation_en_to_fr": {"early_stopping": True, "max_length": 12,
                                         "num_beams": 4,
                                         "prefix": "translate English to French: "},
            }
        model = T5ForConditionalGeneration(cfg)
    elif name == "bart":
        cfg = BartConfig(**common_bart_like(
            vocab, activation_function="gelu", scale_embedding=True, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            forced_bos_token_id=0, forced_eos_token_id=2))
        # As facebook/bart-large-cnn's (lengths shrunk).
        cfg.task_specific_params = {
            "summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 12,
                              "min_length": 4, "no_repeat_ngram_size": 3, "num_beams": 4}}
        model = BartForConditionalGeneration(cfg)
    elif name == "mbart":
        cfg = MBartConfig(**common_bart_like(
            vocab, activation_function="relu", scale_embedding=True, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2))
        model = MBartForConditionalGeneration(cfg)
    elif name == "marian":
        pad = tok.pad_token_id
        cfg = MarianConfig(**common_bart_like(
            vocab, decoder_vocab_size=vocab, activation_function="swish",
            scale_embedding=True, share_encoder_decoder_embeddings=True, pad_token_id=pad,
            bos_token_id=0, eos_token_id=0, decoder_start_token_id=pad,
            forced_eos_token_id=0))
        # opus-mt checkpoints ban the pad (= decoder start) token.
        gen["bad_words_ids"] = [[pad]]
        model = MarianMTModel(cfg)
    elif name in ("m2m100", "nllb"):
        cfg = M2M100Config(**common_bart_like(
            vocab, activation_function="relu", scale_embedding=True, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))
        model = M2M100ForConditionalGeneration(cfg)
    elif name == "pegasus":
        cfg = PegasusConfig(**common_bart_like(
            vocab, activation_function="relu", scale_embedding=True, pad_token_id=0,
            eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1))
        model = PegasusForConditionalGeneration(cfg)
    else:
        raise ValueError(name)
    scale_up(model, name)
    model.eval()
    # generation_config.json: the token ids the config carries, a short default max_length.
    gc = GenerationConfig.from_model_config(model.config)
    gc.max_length = 12
    for k, v in gen.items():
        setattr(gc, k, v)
    model.generation_config = gc
    return model


SEEDS = {"t5": 41, "t5-v1_1": 12, "bart": 13, "mbart": 44, "marian": 15, "m2m100": 16,
         "nllb": 17, "pegasus": 18}
TOKENIZERS = {"t5": tok_t5, "t5-v1_1": tok_t5, "bart": tok_bart, "mbart": tok_mbart,
              "marian": tok_marian, "m2m100": tok_m2m100, "nllb": tok_nllb,
              "pegasus": tok_pegasus}
# Language codes used for the multilingual families: (source, target) as the tokenizer
# spells them.
LANGS = {"mbart": ("en_XX", "de_DE"), "m2m100": ("en", "de"), "nllb": ("eng_Latn", "deu_Latn")}
ALT_TGT = {"mbart": "fr_XX", "m2m100": "fr", "nllb": "fra_Latn"}


def lang_id(name, tok, code):
    """Id of a language code's token (M2M100 spells the token `__de__`)."""
    return tok.convert_tokens_to_ids(f"__{code}__" if name == "m2m100" else code)


# --------------------------------------------------------------------------- generate

OUT = dict(return_dict_in_generate=True, output_scores=True)


def gen_call(model, ids, mask, kwargs):
    """kwargs always carry return_dict_in_generate=True and output_scores=True."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    seq = out.sequences.tolist()
    ss = getattr(out, "sequences_scores", None)
    gap = None
    if kwargs.get("num_beams", 1) == 1 and out.scores:
        # Smallest top-1 / top-2 gap among the rows still running (reported only).
        gaps = []
        for s in out.scores:
            top = torch.topk(s.float(), 2, dim=-1).values
            fin = torch.isfinite(top).all(dim=-1)
            if fin.any():
                gaps.append((top[fin, 0] - top[fin, 1]).min().item())
        gap = min(gaps) if gaps else None
    return seq, (ss.tolist() if ss is not None else None), gap


def strip_fill(seq, fill):
    """A sequence without the trailing fill tokens of a finished row."""
    n = len(seq)
    while n > 1 and seq[n - 1] == fill:
        n -= 1
    return seq[:n]


def generate_cases(name, model, tok, batch_ids, batch_mask):
    cfg = model.config
    eos = cfg.eos_token_id
    # A token greedy decoding emits as its 2nd distinct new token of row 0: used as an
    # alternative eos so stopping, min_new_tokens and beam early stopping really trigger
    # (random weights almost never emit the real eos).
    greedy, _, _ = gen_call(model, batch_ids, batch_mask, dict(max_new_tokens=8, **OUT))
    new0 = greedy[0][1:]
    alt_eos = next(t for t in new0[1:] + greedy[1][1:] if t != new0[0] and t != eos)
    first = new0[0]
    bigram = new0[1:3] if len(new0) >= 3 else [first, first]
    # The target language's code where the family has them, else an ordinary token (not
    # the bos that BART's generation_config already forces, nor Marian's bos = eos).
    forced_bos = lang_id(name, tok, LANGS[name][1]) if name in LANGS else 5
    base = dict(max_new_tokens=8, **OUT)
    beam = dict(base, num_beams=3)
    cases = [
        ("greedy", dict(base)),
        ("greedy_eos", dict(base, eos_token_id=alt_eos)),
        ("beam3", dict(beam)),
        ("beam3_lp1.0_early_true", dict(beam, eos_token_id=alt_eos, length_penalty=1.0,
                                        early_stopping=True)),
        ("beam3_lp0.5_early_false", dict(beam, eos_token_id=alt_eos, length_penalty=0.5,
                                         early_stopping=False)),
        ("beam3_lp2.0_early_never", dict(beam, eos_token_id=alt_eos, length_penalty=2.0,
                                         early_stopping="never")),
        ("beam3_return2", dict(beam, eos_token_id=alt_eos, num_return_sequences=2)),
        ("no_repeat_ngram2", dict(base, no_repeat_ngram_size=2)),
        ("beam3_no_repeat_ngram2", dict(beam, no_repeat_ngram_size=2)),
        ("repetition_penalty1.3", dict(base, repetition_penalty=1.3)),
        ("min_new_tokens5", dict(base, eos_token_id=alt_eos, min_new_tokens=5)),
        ("max_length10", dict(max_length=10, **OUT)),
        ("bad_words", dict(base, bad_words_ids=[[first], list(bigram)])),
        ("forced_bos_eos", dict(max_new_tokens=6, **OUT, forced_bos_token_id=forced_bos,
                                forced_eos_token_id=eos)),
        ("beam3_forced_bos_eos", dict(max_new_tokens=6, **OUT, num_beams=3,
                                      forced_bos_token_id=forced_bos,
                                      forced_eos_token_id=eos)),
    ]
    rows = []
    for i in range(batch_ids.shape[0]):
        n = int(batch_mask[i].sum())
        rows.append((batch_ids[i:i + 1, :n], batch_mask[i:i + 1, :n]))
    out, mismatches, min_gap = [], [], None
    for cname, kw in cases:
        per = []
        for tag, (ids, mask) in [("batch", (batch_ids, batch_mask))] + [
                (f"row{i}", r) for i, r in enumerate(rows)]:
            seq, ss, gap = gen_call(model, ids, mask, kw)
            if gap is not None:
                min_gap = gap if min_gap is None else min(min_gap, gap)
            per.append((tag, ids, mask, seq, ss))
            out.append({"name": f"{cname}/{tag}", "kwargs": kw, "input_ids": ids.tolist(),
                        "attention_mask": mask.tolist(), "sequences": seq,
                        "sequences_scores": ss})
        # Batched = unbatched check (sequences, ignoring trailing pad of shorter rows).
        nret = kw.get("num_return_sequences", 1)
        bseq = per[0][3]
        # Finished rows are filled with pad; beam search fills with eos when pad is 0
        # (transformers 4.57: `pad_token_id or eos_token_id[0]`).
        fill = cfg.pad_token_id
        if kw.get("num_beams", 1) > 1 and not fill:
            fill = kw.get("eos_token_id", eos)
        for i in range(len(rows)):
            for r in range(nret):
                a = bseq[i * nret + r]
                b = per[1 + i][3][r]
                if strip_fill(a, fill) != strip_fill(b, fill):
                    mismatches.append(f"{cname} row{i} ret{r}: {a} vs {b}")
    return out, mismatches, min_gap, alt_eos


# --------------------------------------------------------------------------- pipelines

def pipeline_cases(name):
    """(task, inputs, batched, kwargs) per fixture."""
    short = [CORPUS["en"][2], CORPUS["en"][7], CORPUS["en"][18]]
    mixed = [CORPUS["en"][4], CORPUS["fr"][4], CORPUS["ru"][1] + " " + CORPUS["zh"][1],
             LONG_TEXT]
    cases = []

    def both(task, extra=None):
        extra = extra or {}
        cases.append((task, mixed, True, dict(extra, truncation=True)))
        cases.append((task, [short[0]], False, dict(extra)))
        cases.append((task, short, True, dict(extra, num_beams=1, max_new_tokens=8)))
        cases.append((task, [short[1]], False, dict(extra, num_beams=1, max_new_tokens=8)))
        cases.append((task, short, True, dict(extra, num_beams=3, max_length=10,
                                              min_length=3)))
        cases.append((task, [LONG_TEXT], False, dict(extra, num_beams=3, truncation=True)))
        cases.append((task, short[:2], True, dict(extra, num_beams=3, max_new_tokens=6,
                                                  num_return_sequences=2)))
        cases.append((task, short, True, dict(extra, num_beams=1, max_new_tokens=8,
                                              batch_size=3)))
        cases.append((task, mixed, True, dict(extra, num_beams=3, max_new_tokens=8,
                                              truncation=True, batch_size=4)))

    if name == "t5":
        both("summarization")
        both("translation_en_to_de")
        both("text2text-generation")
    elif name == "t5-v1_1":
        both("text2text-generation")
    elif name == "bart":
        both("summarization")
        both("text2text-generation")
    elif name == "pegasus":
        both("summarization")
    elif name == "marian":
        both("translation")
    elif name in LANGS:
        src, tgt = LANGS[name]
        both("translation", dict(src_lang=src, tgt_lang=tgt))
        cases.append(("translation", short, True,
                      dict(src_lang=src, tgt_lang=ALT_TGT[name], num_beams=1,
                           max_new_tokens=8)))
    return cases


def run_pipelines(name, d):
    out = []
    pipes = {}
    for task, inputs, batched, kw in pipeline_cases(name):
        if task not in pipes:
            pipes[task] = transformers.pipeline(task, model=d, tokenizer=d, framework="pt",
                                                device="cpu")
        p = pipes[task]
        with torch.no_grad():
            res = p(list(inputs) if batched else inputs[0], **kw)
        out.append({
            "task": task, "inputs": list(inputs), "batched": batched, "kwargs": kw,
            # What the pipeline's generation config is before call kwargs apply (model
            # generation_config + pipeline defaults + task_specific_params), and the prefix.
            "pipeline_generation_config": p.generation_config.to_diff_dict(),
            "prefix": p.prefix,
            "output": res,
        })
    return out


# --------------------------------------------------------------------------- tokenize

def tokenize_cases(name, tok):
    out = []
    for t in TOKENIZE_TEXTS:
        ids = tok(t)["input_ids"]
        out.append({"text": t, "kwargs": {}, "ids": ids,
                    "tokens": tok.convert_ids_to_tokens(ids),
                    "decoded": tok.decode(ids, skip_special_tokens=True)})
    if name == "marian" or name in LANGS:
        for t in TOKENIZE_TEXTS[:3]:
            kw = {}
            if name in LANGS:
                tok.src_lang = LANGS[name][0]
                kw = {"tgt_lang": ALT_TGT[name]}
                tok.tgt_lang = ALT_TGT[name]
            ids = tok(text_target=t)["input_ids"]
            out.append({"text": t, "kwargs": dict(kw, text_target=True), "ids": ids,
                        "tokens": tok.convert_ids_to_tokens(ids),
                        "decoded": tok.decode(ids, skip_special_tokens=True)})
        if name in LANGS:
            tok.src_lang, tok.tgt_lang = LANGS[name]
            for src in (ALT_TGT[name],):
                tok.src_lang = src
                ids = tok(TOKENIZE_TEXTS[2])["input_ids"]
                out.append({"text": TOKENIZE_TEXTS[2], "kwargs": {"src_lang": src},
                            "ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
                            "decoded": tok.decode(ids, skip_special_tokens=True)})
            tok.src_lang, tok.tgt_lang = LANGS[name]
    return out


def slow_fast_mismatches(d):
    """Fast (tokenizer.json) vs slow (SentencePiece files) ids on the text set."""
    try:
        fast = AutoTokenizer.from_pretrained(d, use_fast=True)
        slow = AutoTokenizer.from_pretrained(d, use_fast=False)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return [f"could not load both: {e}"]
    if not fast.is_fast or slow.is_fast:
        return []
    bad = []
    for t in TOKENIZE_TEXTS + [LONG_TEXT]:
        a, b = fast(t)["input_ids"], slow(t)["input_ids"]
        if a != b:
            bad.append(f"{t!r}: fast {a} slow {b}")
    return bad


# --------------------------------------------------------------------------- main

def batch_texts(name):
    a = CORPUS["en"][1] + " " + CORPUS["de"][12]
    b = CORPUS["fr"][7]
    if name == "t5":
        return ["summarize: " + a, b]
    return [a, b]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/seq2seq")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = []
    for name in ["t5", "t5-v1_1", "bart", "mbart", "marian", "m2m100", "nllb", "pegasus"]:
        torch.manual_seed(SEEDS[name])
        d = os.path.join(args.out, name)
        if os.path.exists(d):
            shutil.rmtree(d)
        with tempfile.TemporaryDirectory() as tmp:
            tok = TOKENIZERS[name](tmp)
            torch.manual_seed(SEEDS[name])
            model = build(name, tok)
            model.save_pretrained(d, safe_serialization=True)
            tok.save_pretrained(d)
        if name.startswith("t5"):
            # `add_prefix_space` in tokenizer_config.json would make every load re-convert
            # spiece.model instead of reading tokenizer.json (t5-small's config has none).
            tc_path = os.path.join(d, "tokenizer_config.json")
            with open(tc_path, encoding="utf-8") as f:
                tc = json.load(f)
            tc.pop("add_prefix_space", None)
            with open(tc_path, "w", encoding="utf-8") as f:
                f.write(json.dumps(tc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        # Load back exactly what the tests load.
        tok = AutoTokenizer.from_pretrained(d)
        model = type(model).from_pretrained(d).eval()
        assert len(tok) <= model.config.vocab_size, (name, len(tok), model.config.vocab_size)
        if name in LANGS:
            tok.src_lang, tok.tgt_lang = LANGS[name]

        enc = tok(batch_texts(name), padding=True, truncation=True, return_tensors="pt")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        assert mask[1].sum() < mask[0].sum() and tok.padding_side == "right"
        cfg = model.config
        start = cfg.decoder_start_token_id
        specials = set(tok.all_special_ids) | {cfg.pad_token_id, cfg.eos_token_id}
        body = [i for i in range(5, cfg.vocab_size) if i not in specials]
        g = torch.Generator().manual_seed(SEEDS[name])
        picks = [body[j] for j in torch.randint(0, len(body), (8,), generator=g).tolist()]
        dec = [[start] + picks[:4], [start] + picks[4:]]
        if name in LANGS:  # as these models decode: [eos, tgt lang code, ...]
            lang = lang_id(name, tok, LANGS[name][1])
            dec = [[start, lang] + picks[:3], [start, lang] + picks[4:7]]
        dec = torch.tensor(dec, dtype=torch.int64)
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
        save_file({"input_ids": ids.to(torch.int64).contiguous(),
                   "attention_mask": mask.to(torch.int64).contiguous(),
                   "encoder_last_hidden_state": o.encoder_last_hidden_state.float().contiguous(),
                   "decoder_input_ids": dec.contiguous(),
                   "logits": o.logits.float().contiguous()},
                  os.path.join(d, "io.safetensors"))

        gen, mism, gap, alt_eos = generate_cases(name, model, tok, ids, mask)
        pipes = run_pipelines(name, d)
        toks = tokenize_cases(name, AutoTokenizer.from_pretrained(d))
        sf = slow_fast_mismatches(d)
        gcfg = model.generation_config
        expected = {
            "model_type": cfg.model_type,
            # From generation_config.json (where save_pretrained moves forced_bos/eos).
            "special_ids": {"pad": gcfg.pad_token_id, "eos": gcfg.eos_token_id,
                            "bos": gcfg.bos_token_id, "decoder_start": start,
                            "forced_bos": gcfg.forced_bos_token_id,
                            "forced_eos": gcfg.forced_eos_token_id,
                            "alt_eos": alt_eos},
            "tokenize": toks,
            "generate": gen,
            "pipelines": pipes,
        }
        with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        summary.append((name, cfg.vocab_size, len(tok), size, len(gen), len(pipes), gap,
                        mism, sf))

    with open(os.path.join(args.out, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "sentencepiece": spm.__version__, "tokenizers": tokenizers.__version__},
                  f, indent=1)
    total = 0
    for name, vs, nt, size, ng, np_, gap, mism, sf in summary:
        total += size
        print(f"{name:8s} vocab {vs:4d} (tokenizer {nt:4d})  {size / 1024:6.1f} KiB  "
              f"generate {ng:3d}  pipelines {np_:3d}  min greedy gap "
              f"{gap if gap is None else round(gap, 4)}")
        for m in mism:
            print(f"    batched != unbatched: {m}")
        if sf:
            print(f"    slow != fast on {len(sf)} texts, e.g. {sf[0][:300]}")
    print(f"total {total / 1024:.1f} KiB")
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(args.out)):
        for fn in sorted(files):
            with open(os.path.join(root, fn), "rb") as f:
                h.update(fn.encode() + f.read())
    print("sha256 of all files:", h.hexdigest())


if __name__ == "__main__":
    main()
