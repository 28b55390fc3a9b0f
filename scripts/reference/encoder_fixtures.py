#!/usr/bin/env python3
"""Tiny pretrained-encoder checkpoints (BERT, DistilBERT, RoBERTa, XLM-RoBERTa) × task heads,
with their tokenizers and `transformers`' outputs, under tests/fixtures/encoders/.

Each checkpoint directory `<family>-<head>/` is what `save_pretrained` writes for the model and
its fast tokenizer (config.json, model.safetensors, tokenizer.json, vocab files,
tokenizer_config.json, special_tokens_map.json), plus `reference.json`:

    {"texts": [...], "input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]],
     "outputs": {"last_hidden_state" | "pooler_output" | "logits" | "start_logits" |
                 "end_logits": nested lists}}

for a right-padded batch of the texts (the tokenizer's own `__call__` with padding=True); for
the masked-LM heads only the first two sequences' logits are kept.
Weights are random with a fixed seed and `initializer_range` 0.3 so that logits are far apart
(argmax and top-k do not hinge on the last bit).

PyTorch-format copies of `bert-seqcls` (see `write_pytorch_bin_fixtures`) go to
`bert-seqcls-bin/` (torch.save of the state dict) and `bert-seqcls-bin-gamma-beta/` (the same
with LayerNorm parameters under their old TensorFlow names `gamma`/`beta`); they hold only
config.json and pytorch_model.bin, and share bert-seqcls's reference.json.

The weights are reproducible. The WordPiece trainer's vocabulary order is not, so the
BERT/DistilBERT vocabulary is trained once and the committed `bert-base/vocab.txt` is reused
on later runs (a full rerun is then byte-identical). `--pytorch-bin-only` writes just the
PyTorch copies from the committed bert-seqcls checkpoint.

Usage: python scripts/reference/encoder_fixtures.py [--out tests/fixtures/encoders]
                                                    [--pytorch-bin-only]
"""
import argparse
import json
import os
import shutil
import tempfile

import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from tokenizers.implementations import ByteLevelBPETokenizer

torch.set_num_threads(1)

CORPUS = """
The quick brown fox jumps over the lazy dog near the river bank.
Ada Lovelace wrote the first program for the Analytical Engine in London.
Marie Curie was born in Warsaw and worked at the University of Paris.
Hugging Face is a company based in New York City and Paris.
Shakespeare wrote Romeo and Juliet, Hamlet, Macbeth and King Lear.
John Milton wrote Paradise Lost while living in England.
I love this movie, it was wonderful and the actors were great!
This film was terrible, boring and far too long. I hated it.
What a fantastic day; the weather in Berlin is sunny and warm.
The capital of France is Paris. The capital of Germany is Berlin.
Rust is a systems programming language focused on safety and speed.
Transformers use attention to relate every token to every other token.
The cat sat on the mat. The dog chased the ball in the garden.
Who wrote the first program? Where was Marie Curie born?
Tokenization splits text into words, subwords and characters: naïve café résumé.
Numbers like 1234, 3.14 and 42 appear in text too, as do emails like a@b.com.
""".strip().splitlines()

TEXTS = [
    "The capital of France is Paris.",
    "Ada Lovelace wrote the first program in London!",
    "I hated this boring film.",
    "naïve café: a résumé of Marie Curie's work in Warsaw",
]

BERT_NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
SENTIMENT = ["NEGATIVE", "POSITIVE"]
NLI = ["contradiction", "neutral", "entailment"]


def train_wordpiece(tmp, out):
    path = os.path.join(tmp, "vocab.txt")
    committed = os.path.join(out, "bert-base", "vocab.txt")
    if os.path.exists(committed):
        # The WordPiece trainer breaks ties in hash order, so a retrained vocabulary differs
        # from run to run: reuse the committed one to keep the fixtures reproducible.
        shutil.copy(committed, path)
        return (transformers.BertTokenizerFast(vocab_file=path, model_max_length=128),
                transformers.DistilBertTokenizerFast(vocab_file=path, model_max_length=128))
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tok.train_from_iterator(CORPUS, trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    with open(path, "w", encoding="utf-8") as f:
        for word, _ in vocab:
            f.write(word + "\n")
    # DistilBERT's tokenizer class is the same WordPiece without token type ids.
    return (transformers.BertTokenizerFast(vocab_file=path, model_max_length=128),
            transformers.DistilBertTokenizerFast(vocab_file=path, model_max_length=128))


def train_bpe(tmp):
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        CORPUS,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    tok.save_model(tmp)
    return transformers.RobertaTokenizerFast(
        vocab_file=os.path.join(tmp, "vocab.json"),
        merges_file=os.path.join(tmp, "merges.txt"),
        model_max_length=128,
    )


def nested(t):
    """Nested lists rounded to 7 significant digits (far below the 1e-4 tolerance)."""
    def r(x):
        return [r(y) for y in x] if isinstance(x, list) else float(f"{x:.7g}")
    return r(t.detach().to(torch.float32).tolist())


def build(out, family, head, tokenizer, seed):
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), initializer_range=0.3)
    if family == "bert":
        cfg = transformers.BertConfig(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=128, type_vocab_size=2, pad_token_id=tokenizer.pad_token_id,
            **common)
        classes = {
            "base": transformers.BertModel,
            "seqcls": transformers.BertForSequenceClassification,
            "multilabel": transformers.BertForSequenceClassification,
            "nli": transformers.BertForSequenceClassification,
            "tokcls": transformers.BertForTokenClassification,
            "qa": transformers.BertForQuestionAnswering,
            "mlm": transformers.BertForMaskedLM,
        }
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(
            dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=128,
            pad_token_id=tokenizer.pad_token_id, **common)
        classes = {
            "base": transformers.DistilBertModel,
            "seqcls": transformers.DistilBertForSequenceClassification,
            "tokcls": transformers.DistilBertForTokenClassification,
            "qa": transformers.DistilBertForQuestionAnswering,
            "mlm": transformers.DistilBertForMaskedLM,
        }
    else:  # roberta, xlm-roberta
        cls_cfg = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        cfg = cls_cfg(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=130, type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **common)
        p = "Roberta" if family == "roberta" else "XLMRoberta"
        classes = {
            "base": getattr(transformers, f"{p}Model"),
            "seqcls": getattr(transformers, f"{p}ForSequenceClassification"),
            "tokcls": getattr(transformers, f"{p}ForTokenClassification"),
            "qa": getattr(transformers, f"{p}ForQuestionAnswering"),
            "mlm": getattr(transformers, f"{p}ForMaskedLM"),
        }
    labels = {"seqcls": SENTIMENT, "tokcls": BERT_NER, "nli": NLI,
              "multilabel": ["sports", "politics", "science"]}.get(head)
    if labels:
        cfg.num_labels = len(labels)
        cfg.id2label = dict(enumerate(labels))
        cfg.label2id = {l: i for i, l in enumerate(labels)}
    if head == "multilabel":
        cfg.problem_type = "multi_label_classification"
    model = classes[head](cfg).eval()
    # `initializer_range` does not reach LayerNorm; give it non-trivial values too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = os.path.join(out, f"{family}-{head}")
    if os.path.exists(path):
        shutil.rmtree(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        kwargs = {k: v for k, v in enc.items() if k != "token_type_ids" or family == "bert"}
        res = model(**kwargs)
    outputs = {}
    for key in ["last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits"]:
        v = getattr(res, key, None)
        if v is not None:
            # MLM logits are (batch, seq, vocab): two sequences are enough to check them.
            outputs[key] = nested(v[:2] if head == "mlm" else v)
    ref = {
        "texts": TEXTS,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "token_type_ids": enc["token_type_ids"].tolist() if "token_type_ids" in enc else None,
        "outputs": outputs,
    }
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(ref, f)
    return model


def write_pytorch_bin_fixtures(out):
    """`pytorch_model.bin` copies of the bert-seqcls checkpoint, to test loading PyTorch
    pickles: a plain `torch.save(state_dict)`, and one whose LayerNorm parameters carry the
    old names `gamma`/`beta` (which `transformers` renames on load). Each directory holds only
    config.json and pytorch_model.bin; the expected logits are bert-seqcls/reference.json's."""
    src = os.path.join(out, "bert-seqcls")
    model = transformers.BertForSequenceClassification.from_pretrained(src).eval()
    state = model.state_dict()
    renamed = {}
    for k, v in state.items():
        if k.endswith("LayerNorm.weight"):
            k = k[: -len("weight")] + "gamma"
        elif k.endswith("LayerNorm.bias"):
            k = k[: -len("bias")] + "beta"
        renamed[k] = v
    with open(os.path.join(src, "reference.json")) as f:
        ref = json.load(f)
    for name, sd in [("bert-seqcls-bin", state), ("bert-seqcls-bin-gamma-beta", renamed)]:
        path = os.path.join(out, name)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(path)
        shutil.copy(os.path.join(src, "config.json"), path)
        # Contiguous copies, so no tensor is a view into another's storage.
        torch.save({k: v.detach().clone().contiguous() for k, v in sd.items()},
                   os.path.join(path, "pytorch_model.bin"))
        # transformers itself must read the file back to the reference logits.
        reloaded = transformers.BertForSequenceClassification.from_pretrained(
            path, use_safetensors=False).eval()
        with torch.no_grad():
            logits = reloaded(
                input_ids=torch.tensor(ref["input_ids"]),
                attention_mask=torch.tensor(ref["attention_mask"]),
                token_type_ids=torch.tensor(ref["token_type_ids"]),
            ).logits
        err = (logits - torch.tensor(ref["outputs"]["logits"])).abs().max().item()
        assert err < 1e-5, f"{name}: transformers reloads it with max error {err}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/encoders")
    ap.add_argument("--pytorch-bin-only", action="store_true",
                    help="only write the pytorch_model.bin copies of the committed bert-seqcls")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.pytorch_bin_only:
        write_pytorch_bin_fixtures(args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        wp, distil = train_wordpiece(tmp, args.out)
        os.makedirs(os.path.join(tmp, "bpe"))
        bpe = train_bpe(os.path.join(tmp, "bpe"))
    seed = 0
    plan = [("bert", h) for h in ["base", "seqcls", "multilabel", "nli", "tokcls", "qa", "mlm"]]
    plan += [("distilbert", h) for h in ["base", "seqcls", "tokcls", "qa", "mlm"]]
    plan += [("roberta", h) for h in ["base", "seqcls", "tokcls", "qa", "mlm"]]
    plan += [("xlm-roberta", h) for h in ["base"]]
    for family, head in plan:
        seed += 1
        tokenizer = {"bert": wp, "distilbert": distil}.get(family, bpe)
        build(args.out, family, head, tokenizer, seed)
    write_pytorch_bin_fixtures(args.out)
    with open(os.path.join(args.out, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f)


if __name__ == "__main__":
    main()
