#!/usr/bin/env python3
"""Records the reference values of the evaluation metrics for crates/ferroformer/tests/metrics.rs
and crates/ferroformer-cli/tests/evaluate_cli.rs: tests/fixtures/metrics/*.json.

Each file holds `cases`: a metric, its options (named as the `ferroformer evaluate` flags),
predictions, references (a list per prediction) and the reference implementation's result.

References:
- classification: scikit-learn (accuracy_score, precision_score, recall_score, f1_score).
- exact_match, squad, bleu: Hugging Face `evaluate`'s metric scripts. `evaluate` downloads
  them from the hub at run time, so the few lines that compute each are vendored below from
  github.com/huggingface/evaluate (metrics/exact_match/exact_match.py,
  metrics/squad/compute_score.py, metrics/bleu/{bleu,nmt_bleu,tokenizer_13a}.py; Apache-2.0;
  nmt_bleu.py is tensorflow/nmt's, Copyright 2017 Google Inc., Apache-2.0) and used as they
  are: they *are* the reference.
- sacrebleu, chrf: sacreBLEU's BLEU / CHRF corpus_score.
- rouge: rouge_score's RougeScorer (+ BootstrapAggregator after np.random.seed for the
  seeded bootstrap), aggregated as `evaluate`'s rouge does.
- porter: nltk.stem.porter.PorterStemmer().stem on a word list.
- seqeval: the `seqeval` package called as `evaluate`'s seqeval metric calls it
  (metrics/seqeval/seqeval.py's `_compute`, vendored below: classification_report with
  output_dict=True, its micro average as overall_*, accuracy_score): seqeval.json.
- meteor (with --wordnet DIR): nltk.translate.meteor_score on whitespace tokens with WordNet
  3.0 read by NLTK's WordNetCorpusReader from DIR, e.g. Debian's wordnet-base
  (`apt-get download wordnet-base && dpkg -x wordnet-base_*.deb root`, then
  DIR=root/usr/share/wordnet; NLTK also wants the `lexnames` file, written here from the
  table of lexnames(5WN) when missing). The test cannot carry the 30 MB database, so the
  script also writes tests/fixtures/metrics/wordnet/: the entries of every form the test
  texts can look up (index lines, their synsets' data lines at new offsets, exception
  entries, with WordNet's license header; glosses dropped, pointers are left as they are, METEOR reads
  none), and records the synonyms NLTK finds for each of those words, which the test
  compares with what ours finds in the excerpt.

Usage: /root/venvs/ref/bin/python scripts/reference/metrics_fixtures.py [--out tests/fixtures/metrics]
           [--wordnet /path/to/wordnet/dict]
"""
import argparse
import collections
import itertools
import json
import math
import os
import re
import string

import importlib

import nltk
import numpy as np
import rouge_score
import sacrebleu
import seqeval
import sklearn
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer, scoring
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a as SacreTokenizer13a
from seqeval.metrics import accuracy_score as seqeval_accuracy_score
from seqeval.metrics import classification_report as seqeval_classification_report
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

VERSIONS = {
    "scikit-learn": sklearn.__version__,
    "sacrebleu": sacrebleu.__version__,
    "rouge-score": "0.1.2",
    "nltk": nltk.__version__,
    "numpy": np.__version__,
    "seqeval": "1.2.2",
    "evaluate metric scripts": "vendored from huggingface/evaluate main",
}

# ---------------------------------------------------------------- vendored from `evaluate`


def evaluate_exact_match(predictions, references, regexes_to_ignore=None, ignore_case=False,
                         ignore_punctuation=False, ignore_numbers=False):
    original_predictions = np.asarray(predictions)
    original_references = np.asarray(references)
    predictions = original_predictions.copy()
    references = original_references.copy()
    if regexes_to_ignore is not None:
        for s in regexes_to_ignore:
            predictions = np.array([re.sub(s, "", x) for x in predictions])
            references = np.array([re.sub(s, "", x) for x in references])
    if ignore_case:
        predictions = np.char.lower(predictions)
        references = np.char.lower(references)
    if ignore_punctuation:
        repl_table = string.punctuation.maketrans("", "", string.punctuation)
        predictions = np.char.translate(predictions, table=repl_table)
        references = np.char.translate(references, table=repl_table)
    if ignore_numbers:
        repl_table = string.digits.maketrans("", "", string.digits)
        predictions = np.char.translate(predictions, table=repl_table)
        references = np.char.translate(references, table=repl_table)
    score_list = (predictions == references) & (
        (predictions != "") | (original_predictions == original_references)
    )
    return {"exact_match": np.mean(score_list)}


def squad_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction, ground_truth):
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def squad_exact_match_score(prediction, ground_truth):
    return squad_normalize_answer(prediction) == squad_normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def evaluate_squad(predictions, references):
    # squad.py turns its inputs into this loop of compute_score.py.
    f1 = exact_match = total = 0
    for prediction, ground_truths in zip(predictions, references):
        total += 1
        exact_match += metric_max_over_ground_truths(squad_exact_match_score, prediction, ground_truths)
        f1 += metric_max_over_ground_truths(squad_f1_score, prediction, ground_truths)
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


def evaluate_tokenizer_13a(line):
    # evaluate's tokenizer_13a.py is sacreBLEU's 13a returning `line.split()`.
    return SacreTokenizer13a()(line).split()


def _get_ngrams(segment, max_order):
    ngram_counts = collections.Counter()
    for order in range(1, max_order + 1):
        for i in range(0, len(segment) - order + 1):
            ngram = tuple(segment[i:i + order])
            ngram_counts[ngram] += 1
    return ngram_counts


def nmt_compute_bleu(reference_corpus, translation_corpus, max_order=4, smooth=False):
    matches_by_order = [0] * max_order
    possible_matches_by_order = [0] * max_order
    reference_length = 0
    translation_length = 0
    for (references, translation) in zip(reference_corpus, translation_corpus):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged_ref_ngram_counts = collections.Counter()
        for reference in references:
            merged_ref_ngram_counts |= _get_ngrams(reference, max_order)
        translation_ngram_counts = _get_ngrams(translation, max_order)
        overlap = translation_ngram_counts & merged_ref_ngram_counts
        for ngram in overlap:
            matches_by_order[len(ngram) - 1] += overlap[ngram]
        for order in range(1, max_order + 1):
            possible_matches = len(translation) - order + 1
            if possible_matches > 0:
                possible_matches_by_order[order - 1] += possible_matches
    precisions = [0] * max_order
    for i in range(0, max_order):
        if smooth:
            precisions[i] = ((matches_by_order[i] + 1.) / (possible_matches_by_order[i] + 1.))
        else:
            if possible_matches_by_order[i] > 0:
                precisions[i] = (float(matches_by_order[i]) / possible_matches_by_order[i])
            else:
                precisions[i] = 0.0
    if min(precisions) > 0:
        p_log_sum = sum((1. / max_order) * math.log(p) for p in precisions)
        geo_mean = math.exp(p_log_sum)
    else:
        geo_mean = 0
    if reference_length == 0 or translation_length == 0:
        ratio = 0.0
        bp = 0.0
    else:
        ratio = float(translation_length) / reference_length
        bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    bleu = geo_mean * bp
    return (bleu, precisions, bp, ratio, translation_length, reference_length)


def evaluate_bleu(predictions, references, max_order=4, smooth=False):
    references = [[evaluate_tokenizer_13a(r) for r in ref] for ref in references]
    predictions = [evaluate_tokenizer_13a(p) for p in predictions]
    (bleu, precisions, bp, ratio, translation_length, reference_length) = nmt_compute_bleu(
        reference_corpus=references, translation_corpus=predictions, max_order=max_order, smooth=smooth)
    return {"bleu": bleu, "precisions": precisions, "brevity_penalty": bp, "length_ratio": ratio,
            "translation_length": translation_length, "reference_length": reference_length}

# ---------------------------------------------------------------- inputs

TEXT_PAIRS = [
    ("The cat sat on the mat.", ["The cat is sitting on the mat.", "A cat sat on a mat!"]),
    ("It costs $3.50, not 4,000 dollars (roughly).", ["It costs $3.50 -- not 4,000 dollars."]),
    ("Naïve café owners' résumés — ¿Qué tal? «Bonjour»",
     ["naive cafe owners resumes: que tal? bonjour", "Naïve café owners’ résumés"]),
    ("", ["Something was expected here."]),
    ("HELLO world hello WORLD", ["hello world", "Hello, World!", "HELLO world hello WORLD again"]),
    ("running runners ran quickly; the generalization of relational conditionally",
     ["the runner runs quick generalizations relate conditional"]),
    ("Line one.\nLine two is here.", ["Line one is here.\nLine two."]),
    ("1990s-era 3-4 players &amp; co. at 10:30 p.m.", ["1990s era 3 - 4 players & co. at 10:30 pm"]),
    ("日本語のテキスト 123 ΣΊΣΥΦΟΣ", ["日本語 の テキスト 123 σίσυφος"]),
    ("  spaces   everywhere  ", ["spaces everywhere"]),
    ("An apple a day keeps the doctor away", ["the doctor stays away with an apple every day",
                                              "one apple per day"]),
    ("Is this the real life? Is this just fantasy?", ["Is this the real life?", ""]),
]


def corpus(pairs):
    return [p for p, _ in pairs], [list(r) for _, r in pairs]


def streams(references):
    """Per-prediction reference lists as sacreBLEU's reference streams (None pads)."""
    width = max(len(r) for r in references)
    return [[r[i] if i < len(r) else None for r in references] for i in range(width)]


def case(metric, options, predictions, references, expected):
    return {"metric": metric, "options": options, "predictions": predictions,
            "references": references, "expected": expected}



def evaluate_seqeval(predictions, references, suffix=False, scheme=None, mode=None,
                     sample_weight=None, zero_division="warn"):
    # evaluate's metrics/seqeval/seqeval.py `_compute`, as it is.
    if scheme is not None:
        try:
            scheme_module = importlib.import_module("seqeval.scheme")
            scheme = getattr(scheme_module, scheme)
        except AttributeError:
            raise ValueError(f"Scheme should be one of [IOB1, IOB2, IOE1, IOE2, IOBES, BILOU], got {scheme}")
    report = seqeval_classification_report(
        y_true=references,
        y_pred=predictions,
        suffix=suffix,
        output_dict=True,
        scheme=scheme,
        mode=mode,
        sample_weight=sample_weight,
        zero_division=zero_division,
    )
    report.pop("macro avg")
    report.pop("weighted avg")
    overall_score = report.pop("micro avg")

    scores = {
        type_name: {
            "precision": score["precision"],
            "recall": score["recall"],
            "f1": score["f1-score"],
            "number": score["support"],
        }
        for type_name, score in report.items()
    }
    scores["overall_precision"] = overall_score["precision"]
    scores["overall_recall"] = overall_score["recall"]
    scores["overall_f1"] = overall_score["f1-score"]
    scores["overall_accuracy"] = seqeval_accuracy_score(y_true=references, y_pred=predictions)

    return scores

# ---------------------------------------------------------------- families


def classification_cases():
    sets = [
        ("binary ints", ["1", "0", "1", "1", "0", "0", "1"], ["1", "0", "0", "1", "1", "0", "1"], "1"),
        ("binary strings", ["pos", "neg", "neg", "pos"], ["pos", "pos", "neg", "neg"], "pos"),
        ("positive never predicted", ["0", "0", "0"], ["1", "0", "1"], "1"),
        ("one label, positive absent", ["0", "0"], ["0", "0"], "1"),
        ("multiclass", ["cat", "dog", "bird", "cat", "dog", "fish", "cat"],
         ["cat", "cat", "bird", "dog", "dog", "bird", "fish"], None),
        ("multiclass ints", ["0", "2", "1", "2", "10", "1"], ["0", "1", "1", "2", "2", "10"], None),
    ]
    out = []
    for name, pred, ref, pos in sets:
        out.append(case("accuracy", {}, pred, [[r] for r in ref], {"accuracy": accuracy_score(ref, pred)}))
        averages = ["micro", "macro", "weighted"] + (["binary"] if pos is not None else [])
        for average in averages:
            opts = {"average": average}
            kw = {"average": average}
            if average == "binary":
                opts["pos_label"] = pos
                kw["pos_label"] = pos
            for metric, fn in [("precision", precision_score), ("recall", recall_score), ("f1", f1_score)]:
                value = float(fn(ref, pred, **kw))
                out.append(case(metric, dict(opts), pred, [[r] for r in ref], {metric: value}))
    return out


def exact_match_cases():
    pairs = [
        ("The Cat sat.", "the cat sat"),
        ("the cat sat", "the cat sat"),
        ("Yelling 123!", "yelling 456"),
        ("", ""),
        ("!!!", ""),
        ("...", "?"),
        ("Tomorrow is 2 days away", "tomorrow is 3 days away"),
        ("Theaters are great.", "Theaters are great."),
        ("Ünïcödé ÀÉ", "ünïcödé àé"),
        ("the the the", "a a a"),
    ]
    preds = [p for p, _ in pairs]
    refs = [r for _, r in pairs]
    out = []
    option_sets = [
        {},
        {"ignore_case": True},
        {"ignore_punctuation": True},
        {"ignore_numbers": True},
        {"ignore_case": True, "ignore_punctuation": True, "ignore_numbers": True},
        {"regexes_to_ignore": ["the ", "yell"], "ignore_case": True},
        {"regexes_to_ignore": [r"\d+", r"[Tt]he\s*"]},
    ]
    for opts in option_sets:
        value = evaluate_exact_match(preds, refs, **opts)["exact_match"]
        out.append(case("exact_match", opts, preds, [[r] for r in refs], {"exact_match": float(value)}))
    squad_preds = ["Denver Broncos", "the 1990s", "Santa Clara, California", "", "an apple",
                   "Ünïcödé answer!", "seven", "The Eiffel Tower in Paris"]
    squad_refs = [["Denver Broncos", "The Denver Broncos"], ["1990s", "the nineties"],
                  ["Levi's Stadium", "Santa Clara"], ["something"], ["apple", "a pear"],
                  ["ünïcödé answer"], ["7"], ["Eiffel Tower", "the tower"]]
    out.append(case("squad", {}, squad_preds, squad_refs, evaluate_squad(squad_preds, squad_refs)))
    preds, refs = corpus(TEXT_PAIRS)
    out.append(case("squad", {}, preds, refs, evaluate_squad(preds, refs)))
    return out


def bleu_cases():
    preds, refs = corpus(TEXT_PAIRS)
    single_refs = [[r[0]] for r in refs]
    out = []
    for opts in [{}, {"max_order": 2}, {"smooth": True}, {"max_order": 6, "smooth": True}]:
        kw = dict(opts)
        out.append(case("bleu", opts, preds, refs, evaluate_bleu(preds, refs, **kw)))
        out.append(case("bleu", opts, preds, single_refs, evaluate_bleu(preds, single_refs, **kw)))
    # evaluate's docstring example: perfect matches.
    p = ["hello there general kenobi", "foo bar foobar"]
    r = [["hello there general kenobi", "hello there!"], ["foo bar foobar"]]
    out.append(case("bleu", {}, p, r, evaluate_bleu(p, r)))
    out.append(case("bleu", {}, [""], [["a reference"]], evaluate_bleu([""], [["a reference"]])))

    for tokenize in ["13a", "none", "intl", "char"]:
        for smooth in ["exp", "floor", "add-k", "none"]:
            for lowercase in [False, True]:
                if lowercase and (tokenize, smooth) != ("13a", "exp") and (tokenize, smooth) != ("intl", "floor"):
                    continue
                s = BLEU(tokenize=tokenize, smooth_method=smooth, lowercase=lowercase).corpus_score(
                    preds, streams(refs))
                expected = {"score": s.score, "counts": s.counts, "totals": s.totals,
                            "precisions": s.precisions, "bp": s.bp, "sys_len": s.sys_len,
                            "ref_len": s.ref_len}
                opts = {"tokenize": tokenize, "smooth_method": smooth}
                if lowercase:
                    opts["lowercase"] = True
                out.append(case("sacrebleu", opts, preds, refs, expected))
    # No matches at all: sacreBLEU's early exit.
    s = BLEU().corpus_score(["xyz"], [["abc def"]])
    out.append(case("sacrebleu", {}, ["xyz"], [["abc def"]],
                    {"score": s.score, "counts": s.counts, "totals": s.totals, "precisions": s.precisions,
                     "bp": s.bp, "sys_len": s.sys_len, "ref_len": s.ref_len}))
    for lowercase in [False, True]:
        c = CHRF(lowercase=lowercase).corpus_score(preds, streams(refs))
        opts = {"lowercase": True} if lowercase else {}
        out.append(case("chrf", opts, preds, refs,
                        {"score": c.score, "char_order": c.char_order, "word_order": c.word_order,
                         "beta": c.beta}))
    c = CHRF().corpus_score(preds, streams(single_refs))
    out.append(case("chrf", {}, preds, single_refs,
                    {"score": c.score, "char_order": 6, "word_order": 0, "beta": 2}))
    tokenized = {
        "13a": [SacreTokenizer13a()(p) for p in preds],
        "intl": [BLEU(tokenize="intl").tokenizer(p) for p in preds],
    }
    return out, {"texts": preds, "tokenized": tokenized}


def rouge_cases():
    preds, refs = corpus(TEXT_PAIRS)
    single_refs = [[r[0]] for r in refs]
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    out = []
    for use_stemmer in [False, True]:
        for rr in [refs, single_refs]:
            scorer = rouge_scorer.RougeScorer(rouge_types=types, use_stemmer=use_stemmer)
            scores = [scorer.score_multi(r, p) for p, r in zip(preds, rr)]
            per_example = {k: [s[k].fmeasure for s in scores] for k in types}
            opts = {"use_stemmer": True} if use_stemmer else {}
            out.append(case("rouge", dict(opts, no_aggregator=True), preds, rr, per_example))
            out.append(case("rouge", opts, preds, rr,
                            {k: float(np.mean(v)) for k, v in per_example.items()}))
            for samples, seed in [(1000, 0), (200, 12345)]:
                np.random.seed(seed)
                aggregator = scoring.BootstrapAggregator(n_samples=samples)
                for s in scores:
                    aggregator.add_scores(s)
                result = aggregator.aggregate()
                out.append(case("rouge", dict(opts, bootstrap=samples, seed=seed), preds, rr,
                                {k: float(result[k].mid.fmeasure) for k in types}))
    scorer = rouge_scorer.RougeScorer(rouge_types=["rouge3", "rougeL"])
    scores = [scorer.score_multi(r, p) for p, r in zip(preds, refs)]
    out.append(case("rouge", {"rouge_types": ["rouge3", "rougeL"]}, preds, refs,
                    {k: float(np.mean([s[k].fmeasure for s in scores])) for k in ["rouge3", "rougeL"]}))
    return out


def plain(value):
    """numpy scalars in a result as Python numbers, for json."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return float(value)


def seqeval_cases():
    """(name, options as the CLI flags name them, predictions, references)."""
    docstring_refs = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    docstring_preds = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    several_refs = [
        ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"],
        ["O", "B-MISC", "O", "B-PER", "B-PER", "O"],
        [],
        ["B-LOC", "I-LOC", "O", "O", "B-ORG", "O", "B-LOC"],
        ["O", "O", "O"],
    ]
    several_preds = [
        ["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "I-ORG", "O"],
        ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "O"],
        [],
        ["B-LOC", "I-LOC", "O", "B-LOC", "B-ORG", "O", "I-LOC"],
        ["O", "B-PER", "O"],
    ]
    # I- without B-, I- of another type inside, a type never predicted, one never referenced.
    loose_refs = [
        ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "O", "B-DATE", "I-DATE"],
        ["O", "B-ORG", "I-LOC", "I-LOC", "O"],
        ["B-PER", "O", "I-PER", "I-PER"],
    ]
    loose_preds = [
        ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "O", "O", "I-DATE"],
        ["O", "B-ORG", "I-ORG", "I-LOC", "O"],
        ["B-PER", "O", "I-PER", "B-EVENT"],
    ]
    all_o_refs = [["O", "O"], ["O"], []]
    all_o_preds = [["O", "O"], ["O"], []]
    spurious_preds = [["B-PER", "O"], ["O"], []]
    iobes_refs = [
        ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "O"],
        ["S-ORG", "O", "B-LOC", "E-LOC"],
        ["O", "B-PER", "E-PER", "S-PER"],
    ]
    iobes_preds = [
        ["B-PER", "I-PER", "I-PER", "O", "S-LOC", "O"],
        ["S-ORG", "O", "B-LOC", "E-LOC"],
        ["O", "B-PER", "E-PER", "B-PER"],
    ]
    bilou_refs = [["B-PER", "I-PER", "L-PER", "O", "U-LOC"], ["U-ORG", "B-LOC", "L-LOC", "O"]]
    bilou_preds = [["B-PER", "L-PER", "O", "O", "U-LOC"], ["U-ORG", "B-LOC", "I-LOC", "O"]]
    iob1_refs = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"], ["O", "I-ORG", "I-ORG", "I-LOC"]]
    iob1_preds = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "B-ORG", "I-LOC"]]
    ioe2_refs = [["I-PER", "E-PER", "O", "E-LOC"], ["O", "I-ORG", "I-ORG", "E-ORG"]]
    ioe2_preds = [["I-PER", "E-PER", "O", "I-LOC"], ["O", "E-ORG", "I-ORG", "E-ORG"]]
    ioe1_refs = [["I-PER", "E-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "I-ORG"]]
    ioe1_preds = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "E-ORG"]]
    suffix_refs = [["PER-B", "PER-I", "O", "LOC-B"], ["O", "ORG-B", "ORG-I"]]
    suffix_preds = [["PER-B", "PER-I", "O", "LOC-I"], ["O", "ORG-B", "O"]]
    sets = [
        ("docstring", {}, docstring_preds, docstring_refs),
        ("several types, an empty sequence", {}, several_preds, several_refs),
        ("several types, zero_division 1", {"zero_division": "1"}, several_preds, several_refs),
        ("I without B", {}, loose_preds, loose_refs),
        ("I without B, strict IOB2", {"mode": "strict", "scheme": "IOB2"}, loose_preds, loose_refs),
        ("all O", {}, all_o_preds, all_o_refs),
        ("all O, zero_division 1", {"zero_division": "1"}, all_o_preds, all_o_refs),
        ("all O, zero_division 0", {"zero_division": "0"}, all_o_preds, all_o_refs),
        ("nothing referenced", {}, spurious_preds, all_o_refs),
        ("nothing referenced, zero_division 1", {"zero_division": "1"}, spurious_preds, all_o_refs),
        ("nothing predicted, zero_division 1", {"zero_division": "1"}, all_o_preds, spurious_preds),
        ("strict, detected IOB2", {"mode": "strict"}, several_preds, several_refs),
        ("strict IOB2, zero_division 1", {"mode": "strict", "scheme": "IOB2", "zero_division": "1"},
         several_preds, several_refs),
        ("IOBES default mode", {}, iobes_preds, iobes_refs),
        ("strict IOBES", {"mode": "strict", "scheme": "IOBES"}, iobes_preds, iobes_refs),
        ("strict, detected IOBES", {"mode": "strict"}, iobes_preds, iobes_refs),
        ("strict BILOU", {"mode": "strict", "scheme": "BILOU"}, bilou_preds, bilou_refs),
        ("strict IOB1", {"mode": "strict", "scheme": "IOB1"}, iob1_preds, iob1_refs),
        ("IOB1 default mode", {}, iob1_preds, iob1_refs),
        ("strict IOE2", {"mode": "strict", "scheme": "IOE2"}, ioe2_preds, ioe2_refs),
        ("strict IOE1", {"mode": "strict", "scheme": "IOE1"}, ioe1_preds, ioe1_refs),
        ("suffix", {"suffix": True}, suffix_preds, suffix_refs),
        ("suffix, strict IOB2", {"suffix": True, "mode": "strict", "scheme": "IOB2"}, suffix_preds, suffix_refs),
    ]
    out = []
    for name, options, preds, refs in sets:
        kwargs = dict(options)
        if "zero_division" in kwargs and kwargs["zero_division"] != "warn":
            kwargs["zero_division"] = int(kwargs["zero_division"])
        expected = plain(evaluate_seqeval(preds, refs, **kwargs))
        c = case("seqeval", options, preds, refs, expected)
        c["name"] = name
        out.append(c)
    return out


def seqeval_error_cases():
    """Inputs on which evaluate's seqeval raises (the error, as Python names it)."""
    sets = [
        ("S- under strict IOB2", {"mode": "strict", "scheme": "IOB2"},
         [["B-PER", "S-LOC"]], [["B-PER", "O"]]),
        ("unknown prefix, strict", {"mode": "strict", "scheme": "IOBES"},
         [["X-PER", "O"]], [["B-PER", "E-PER"]]),
        ("scheme of all-O references not detected", {"mode": "strict"},
         [["B-PER", "O"]], [["O", "O"]]),
        ("I and O only: no scheme detected", {"mode": "strict"},
         [["I-PER", "O"]], [["I-PER", "O"]]),
        ("lengths differ", {}, [["B-PER", "O"]], [["B-PER"]]),
        ("no tags", {}, [[], []], [[], []]),
        ("empty tag", {}, [["", "O"]], [["B-PER", "O"]]),
    ]
    out = []
    for name, options, preds, refs in sets:
        kwargs = dict(options)
        try:
            evaluate_seqeval(preds, refs, **kwargs)
        except Exception as e:  # noqa: BLE001 - any raise is what is recorded
            c = case("seqeval", options, preds, refs, None)
            c["name"] = name
            c["error"] = type(e).__name__
            out.append(c)
            continue
        raise SystemExit(f"seqeval error case {name!r} did not raise")
    return out


def porter_words():
    stems = ["relat", "condition", "general", "happ", "hop", "fall", "fil", "sky", "dy", "agre", "feed",
             "motor", "plaster", "controll", "rat", "ceas", "triplic", "form", "electr", "hop", "callous",
             "sensitiv", "vietnam", "analog", "digit", "radic", "differ", "vil", "operat", "feud",
             "decis", "formal", "sensib", "adjust", "depend", "adopt", "commun", "activ", "bowdler",
             "effect", "probat", "homolog", "gyroscop", "irrit", "infer", "replac", "ador", "troubl",
             "conflat", "siz", "tann", "fizz", "hiss", "fail", "enjoy", "spy", "fly", "tr", "syzyg",
             "toy", "archaeo", "geo", "theo", "run", "sing", "bled", "plan", "cri", "tie", "li"]
    suffixes = ["", "s", "es", "ed", "ing", "ies", "ied", "ly", "ness", "ful", "fully", "ation",
                "ational", "ization", "izer", "ator", "alism", "iveness", "fulness", "ousness", "aliti",
                "iviti", "biliti", "logi", "logy", "alli", "ental", "ement", "ence", "ance", "able",
                "ible", "ism", "ous", "ive", "ize", "ate", "iti", "al", "er", "ic", "ion", "y", "e",
                "ll", "eed", "bli", "entli", "eli", "ousli", "enci", "anci", "icate", "ative", "alize",
                "iciti", "ical", "ant", "ment", "ent", "ou", "sses", "ss"]
    # Every third combination keeps the fixture small and still reaches every rule.
    words = sorted({s + x for s, x in itertools.product(stems, suffixes)})[::3]
    extra = ["caresses", "ponies", "ties", "caress", "cats", "feed", "agreed", "disabled", "matting",
             "mating", "meeting", "milling", "messing", "meetings", "happy", "sky", "skies", "dying",
             "lying", "tying", "news", "innings", "outings", "cannings", "howe", "proceed", "exceed",
             "succeed", "yyyy", "syzygy", "oed", "eed", "ies", "ied", "aaa", "1990s", "a1b2c3d",
             "generously", "generalizations", "oscillators", "hopefulness", "dies", "died", "spied",
             "flies", "dried", "controlling", "rolling", "roll", "sensibility", "archaeology",
             "theology", "geology", "y", "by", "is", "as", "us", "ys", "yes", "eyes", "yyyyyyy"]
    return words + extra


# ---------------------------------------------------------------- METEOR + WordNet

LEXNAMES = """adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession
noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time
verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption
verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession
verb.social verb.stative verb.weather adj.ppl""".split()
WN_SUFFIXES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

METEOR_PAIRS = [
    ("the cat sat on the mat", ["a feline was sitting on the rug", "the cat is on the mat"]),
    ("It is a guide to action which ensures that the military always obeys the commands of the party",
     ["It is a guide to action that ensures that the military will forever heed Party commands"]),
    ("he read the book because he was interested in world history",
     ["he was interested in world history because he read the book"]),
    ("The quick brown fox jumps over the lazy dog", ["A fast brown fox leaped over a lazy hound"]),
    ("", ["nothing was predicted"]),
    ("entirely unrelated words here", ["completely different sentence"]),
    ("children were running happily in the gardens", ["kids ran joyfully in the garden",
                                                      "the children are running in gardens"]),
    ("She bought cheaper apples", ["she purchased inexpensive apples"]),
    ("The Big Apple is New York", ["new york is the big apple"]),
]


def wordnet_reader(root):
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        # map_wn maps other WordNet versions onto the loaded one for the multilingual
        # functions (it loads NLTK's own WordNet); METEOR does not use it.
        def map_wn(self, version="wordnet"):
            return None

    nltk.data.path.insert(0, os.path.dirname(os.path.abspath(root)))
    return Reader(os.path.abspath(root), None)


def ensure_lexnames(root):
    path = os.path.join(root, "lexnames")
    if not os.path.exists(path):
        category = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
        with open(path, "w") as f:
            for i, name in enumerate(LEXNAMES):
                f.write(f"{i:02d}\t{name}\t{category[name.split('.')[0]]}\n")


def write_mini_wordnet(wn, full_root, out, texts):
    """The part of the database that lookups of `texts`' words (and their stems) can reach."""
    stemmer = PorterStemmer()
    queries = set()
    for t in texts:
        for w in t.split():
            queries.add(w.lower())
            queries.add(stemmer.stem(w.lower()))
    forms = set()
    for q in queries:
        for pos in "nvar":
            exc = wn._exception_map[pos]
            if q in exc:
                forms.update([q] + exc[q])
            else:
                forms.add(q)
                forms.update(q[: -len(old)] + new for old, new in wn.MORPHOLOGICAL_SUBSTITUTIONS[pos]
                             if q.endswith(old))
    os.makedirs(out, exist_ok=True)
    for pos, suffix in WN_SUFFIXES.items():
        with open(os.path.join(full_root, f"index.{suffix}"), "rb") as f:
            index_lines = f.read().split(b"\n")
        header = [l for l in index_lines if l.startswith(b" ")]
        kept = [l for l in index_lines if l and not l.startswith(b" ") and l.split()[0].decode() in forms]
        offsets = sorted({int(x) for l in kept for x in l.split()[-int(l.split()[2]):]})
        with open(os.path.join(full_root, f"data.{suffix}"), "rb") as f:
            data = f.read()
        data_header = [l for l in data.split(b"\n") if l.startswith(b" ")]
        body = b"".join(l + b"\n" for l in data_header)
        new_offset = {}
        for old in offsets:
            # Glosses dropped to keep the excerpt small; the synset fields stay.
            line = data[old:data.index(b"\n", old)].split(b" | ")[0] + b" |"
            new_offset[old] = len(body)
            body += b"%08d" % len(body) + line[8:] + b"\n"
        with open(os.path.join(out, f"data.{suffix}"), "wb") as f:
            f.write(body)
        with open(os.path.join(out, f"index.{suffix}"), "wb") as f:
            for l in header:
                f.write(l + b"\n")
            for l in kept:
                parts = l.split(b" ")
                n = int(parts[2])
                # Offsets are the last n fields (a trailing space follows them).
                fields = [p for p in parts if p]
                fields[-n:] = [b"%08d" % new_offset[int(x)] for x in fields[-n:]]
                f.write(b" ".join(fields) + b"  \n")
        with open(os.path.join(full_root, f"{suffix}.exc"), "rb") as f:
            exc = [l for l in f.read().split(b"\n") if l and l.split()[0].decode() in queries]
        with open(os.path.join(out, f"{suffix}.exc"), "wb") as f:
            f.write(b"".join(l + b"\n" for l in exc))
    return sorted(queries)


def meteor_cases(full_root, mini_root):
    from nltk.translate.meteor_score import meteor_score

    ensure_lexnames(full_root)
    wn = wordnet_reader(full_root)
    preds, refs = corpus(METEOR_PAIRS)
    queries = write_mini_wordnet(wn, full_root, mini_root, preds + [r for rr in refs for r in rr])
    scores = [meteor_score([r.split() for r in rr], p.split(), wordnet=wn) for p, rr in zip(preds, refs)]
    full, per = float(np.mean(scores)), scores
    synonyms = {w: sorted({l.name() for s in wn.synsets(w) for l in s.lemmas()}) for w in queries}
    out = [case("meteor", {}, preds, refs, {"meteor": full})]
    out.append(case("meteor", {}, preds, [[r[0]] for r in refs],
                    {"meteor": score_single(preds, refs, wn)}))
    return out, per, synonyms


def score_single(preds, refs, wn):
    from nltk.translate.meteor_score import single_meteor_score
    return float(np.mean([single_meteor_score(r[0].split(), p.split(), wordnet=wn) for p, r in zip(preds, refs)]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "metrics")))
    ap.add_argument("--wordnet", help="WordNet 3.0 database directory (index.*, data.*, *.exc) for METEOR")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def write(name, payload, indent=1):
        payload = dict(payload, versions=VERSIONS)
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False, indent=indent)
            f.write("\n")

    write("classification.json", {"cases": classification_cases()})
    write("exact_match.json", {"cases": exact_match_cases()})
    bleu, tokenized = bleu_cases()
    write("bleu.json", {"cases": bleu, "tokenizers": tokenized})
    write("rouge.json", {"cases": rouge_cases()})
    write("seqeval.json", {"cases": seqeval_cases(), "errors": seqeval_error_cases()})
    stemmer = PorterStemmer()
    words = porter_words()
    write("porter.json", {"stems": {w: stemmer.stem(w) for w in words}}, indent=None)
    if args.wordnet:
        cases, per_example, synonyms = meteor_cases(args.wordnet, os.path.join(args.out, "wordnet"))
        write("meteor.json", {"cases": cases, "per_example": per_example, "synonyms": synonyms})
    else:
        print("no --wordnet: meteor.json and wordnet/ left as they are")


if __name__ == "__main__":
    main()
