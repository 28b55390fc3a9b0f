#!/usr/bin/env python3
"""Tiny random GGUF checkpoints of the `qwen2`, `qwen3` and `llama` (Llama 3, `llama-bpe`
pre-tokenizer, `rope_scaling` llama3; Mistral, SentencePiece), `gemma2` and `phi3`
architectures (and a `phi3` with `longrope` RoPE scaling, recorded at two context sizes
since llama.cpp picks its short or long factors by n_ctx), and what llama.cpp does with
them, for crates/ferroformer/tests/gguf_tiny.rs. Fixtures go to tests/fixtures/gguf/<family>/.

Two stages, two virtual environments:

  build   (transformers + torch: /root/venvs/ref) makes a tiny byte-level BPE tokenizer with
          the family's pre-tokenizer regex and special tokens, a tiny random
          Qwen2ForCausalLM / Qwen3ForCausalLM / LlamaForCausalLM (fixed seed), and converts
          them with llama.cpp's own convert_hf_to_gguf.py (Mistral, Gemma 2 and Phi-3 get a
          tiny SentencePiece BPE model with byte fallback, `tokenizer.model`, instead) (from llama-cpp-python's source
          package: `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36`,
          unpacked; pass its vendor/llama.cpp as --llama-cpp) to F32 and Q8_0 GGUF files.
          The converter names the pre-tokenizer by hashing what the tokenizer makes of a test
          text, which only the real tokenizers match; the family's name is given instead.
  record  (llama-cpp-python: /root/venvs/gguf) runs each file through llama.cpp:
          llama_tokenize (special tokens parsed, no BOS) of a mixed text set, the logits of
          every position of a prompt, and 24 greedy tokens.

Usage:
  /root/venvs/ref/bin/python scripts/reference/gguf_tiny_fixtures.py build --llama-cpp DIR
  /root/venvs/gguf/bin/python scripts/reference/gguf_tiny_fixtures.py record
"""
import argparse
import ctypes
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "fixtures", "gguf"))

# The regexes llama.cpp's llama-vocab.cpp uses for these `tokenizer.ggml.pre` values (the
# tokenizers' own, as their tokenizer.json files have them).
LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

FAMILIES = {
    "qwen2": dict(pre="qwen2", regex=QWEN2_RE, specials=QWEN_SPECIALS, tie=False),
    "qwen3": dict(pre="qwen2", regex=QWEN2_RE, specials=QWEN_SPECIALS, tie=True),
    "llama3": dict(pre="llama-bpe", regex=LLAMA3_RE, specials=LLAMA3_SPECIALS, tie=False),
    # K-quants need rows of 256 values: one wider layer, quantized by llama.cpp itself
    # (llama_model_quantize) from an F32 conversion that is not kept.
    "llama3-kquant": dict(pre="llama-bpe", regex=LLAMA3_RE, specials=LLAMA3_SPECIALS, tie=True,
                          sizes=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1),
                          # Q4_0 and Q2_K: the formats llama.cpp repacks at load on x86
                          # (Q2_K with AVX-512).
                          quantize=["q4_k_m", "q6_k", "q4_0", "q2_k"]),
    # SentencePiece families: the converter reads tokenizer.model.
    "mistral": dict(spm="llama", tie=False),
    "gemma2": dict(spm="gemma", tie=True),
    # Phi-3's chat tokens: llama.cpp strips the spaces after them (`phi3` in the name).
    "phi3": dict(spm="llama", tie=False,
                 specials=["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]),
    # Phi-3 `longrope` (the 128k models): original context 256 of 1024, so llama.cpp uses
    # the short factors at n_ctx 256 and the long ones at 512. F32 only; recorded at both.
    "phi3-longrope": dict(spm="llama", tie=False, types=["f32"], contexts=[256, 512],
                          specials=["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]),
    "gemma2-kquant": dict(spm="gemma", tie=True,
                          sizes=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                                     head_dim=64),
                          quantize=["q4_k_m", "q6_k"]),
}
TYPES = ["f32", "q8_0"]


def types(family):
    spec = FAMILIES[family]
    return spec.get("quantize", spec.get("types", TYPES))
VOCAB = 384

CORPUS = [
    "The quick brown fox jumps over the lazy dog. I'm sure you're right, they'll say it's what we've done.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n}\n",
    "Numbers: 3.14159, 1234567890, 2024-11-26. Café naïve 東京 中文 한국어 🦀🚀",
    "Transformers read text as a sequence of tokens; each token is a piece of a word.",
    "the theory of the thing is that there are three things that they think",
]

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure YOU'RE right, they'LL say it's what we've done and I'd agree.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tlet v: Vec<u32> = (0..10).map(|x| x * x).collect();\n\tprintln!(\"{v:?}\");\n}",
    "Café, naïve, résumé, Größe, Ελληνικά, Москва, 東京, 한국어, العربية, 日本語のテキストと中文文本",
    "I ❤️ 🦀 and 🚀! Family: 👩‍👩‍👧‍👦, flags: 🇫🇷🇯🇵 🫠",
    "Numbers: 3.14159, 1234567890, 1e-5, $1,000.00, 42%, 2024-11-26, ½ ² ٣",
    "a  b   c    d     e\t\tf \n\n\n g",
    "   leading and trailing spaces   ",
    "line one\nline two\n\n\nline five\r\n\tindented\n  \n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "first document<|endoftext|>second<|end_of_text|>third",
    "<|user|>\nHi there!<|end|>\n<|assistant|>  \n Hello<|end|>\n<|endoftext|>  x",
    "",
]
PROMPT = "def fib(n):\n    return the quick brown fox"
GREEDY = 24


def spm_tokenizer(hf, kind, specials=()):
    """A tiny SentencePiece BPE model (byte fallback, digits split, no normalization, as
    Llama's and Gemma's), saved in `hf` with the `transformers` tokenizer files."""
    import io
    import sentencepiece as spm
    import transformers

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=400, model_type="bpe",
        byte_fallback=True, split_digits=True, character_coverage=1.0,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, add_dummy_prefix=(kind == "llama"),
        hard_vocab_limit=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    path = os.path.join(hf, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    cls = transformers.GemmaTokenizer if kind == "gemma" else transformers.LlamaTokenizer
    tok = cls(vocab_file=path)
    if specials:
        tok.add_special_tokens({"additional_special_tokens": list(specials)})
    tok.save_pretrained(hf)
    return len(tok)


def bpe_tokenizer(hf, family, spec):
    """A tiny byte-level BPE tokenizer with the family's pre-tokenizer regex and special
    tokens, saved in `hf`."""
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders, Regex
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["regex"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(spec["specials"]),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_special_tokens(spec["specials"])
    eos = "<|end_of_text|>" if family.startswith("llama3") else spec["specials"][0]
    kw = dict(tokenizer_object=tok, eos_token=eos)
    if family.startswith("llama3"):
        kw["bos_token"] = "<|begin_of_text|>"
    PreTrainedTokenizerFast(**kw).save_pretrained(hf)
    return tok.get_vocab_size()


def build(args):
    import torch
    import transformers

    vendor = os.path.abspath(args.llama_cpp)
    sys.path.insert(0, os.path.join(vendor, "gguf-py"))
    sys.path.insert(0, vendor)
    import convert_hf_to_gguf
    from conversion import base as conv_base

    for family in args.families:
        spec = FAMILIES[family]
        out = os.path.join(OUT, family)
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryDirectory() as hf:
            if "spm" in spec:
                n_vocab = spm_tokenizer(hf, spec["spm"], spec.get("specials", ()))
            else:
                n_vocab = bpe_tokenizer(hf, family, spec)

            torch.manual_seed(0)
            common = dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          rms_norm_eps=1e-6, tie_word_embeddings=spec["tie"], torch_dtype="float32")
            common.update(spec.get("sizes", {}))
            if family == "mistral":
                cfg = transformers.MistralConfig(**common, rope_theta=10000.0)
                model = transformers.MistralForCausalLM(cfg)
            elif family.startswith("gemma2"):
                # Soft caps low enough to bend these scores and logits; a window shorter
                # than the prompt; a head width that is not hidden/heads.
                kw = dict(head_dim=16, query_pre_attn_scalar=16)
                kw.update({k: v for k, v in common.items()})
                if "head_dim" in common:
                    kw["query_pre_attn_scalar"] = common["head_dim"]
                cfg = transformers.Gemma2Config(**kw, sliding_window=6, attn_logit_softcapping=3.0,
                                                final_logit_softcapping=5.0, rope_theta=10000.0)
                model = transformers.Gemma2ForCausalLM(cfg)
            elif family == "phi3-longrope":
                common["max_position_embeddings"] = 1024
                cfg = transformers.Phi3Config(**common, rope_theta=10000.0, pad_token_id=0, bos_token_id=1,
                                              eos_token_id=2, original_max_position_embeddings=256,
                                              rope_scaling={"type": "longrope",
                                                            "short_factor": [1.0, 1.5, 2.5, 4.0],
                                                            "long_factor": [2.0, 6.0, 20.0, 60.0]})
                model = transformers.Phi3ForCausalLM(cfg)
            elif family == "phi3":
                cfg = transformers.Phi3Config(**common, partial_rotary_factor=0.5, rope_theta=10000.0,
                                              pad_token_id=0, bos_token_id=1, eos_token_id=2)
                model = transformers.Phi3ForCausalLM(cfg)
            elif family.startswith("qwen2"):
                cfg = transformers.Qwen2Config(**common, rope_theta=10000.0)
                model = transformers.Qwen2ForCausalLM(cfg)
            elif family.startswith("qwen3"):
                cfg = transformers.Qwen3Config(**common, head_dim=16, rope_theta=10000.0)
                model = transformers.Qwen3ForCausalLM(cfg)
            else:
                cfg = transformers.LlamaConfig(**common, rope_theta=10000.0, rope_scaling={
                    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
                model = transformers.LlamaForCausalLM(cfg)
            # Random init gives tiny logits; widen the weights so greedy choices are clear.
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "norm" in name:
                        # Gemma's norms store weight - 1.
                        p.copy_((0.0 if "gemma" in family else 1.0) + 0.1 * torch.randn_like(p))
                    else:
                        p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else 1.0 / p.shape[-1] ** 0.5))
            model.save_pretrained(hf, safe_serialization=True)

            if "pre" in spec:
                conv_base.TextModel.get_vocab_base_pre = lambda self, tokenizer, _p=spec["pre"]: _p
            for t in (["f32"] if "quantize" in spec else types(family)):
                dst = os.path.join(out, f"{family}-{t}.gguf")
                # A fixed name (the default is the directory's, a random temporary one).
                sys.argv = ["convert_hf_to_gguf.py", hf, "--outtype", t, "--outfile", dst,
                            "--model-name", f"tiny-{family}"]
                convert_hf_to_gguf.main()
                print(f"wrote {dst} ({os.path.getsize(dst)} bytes)")


def record(args):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    for family in args.families:
        out = os.path.join(OUT, family)
        result = {"source": {"llama_cpp_python": llama_cpp.__version__, "n_ctx": 256, "n_threads": 2},
                  "files": {}}
        spec = FAMILIES[family]
        source = os.path.join(out, f"{family}-f32.gguf")
        for t in spec.get("quantize", []):
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + t.upper())
            dst = os.path.join(out, f"{family}-{t}.gguf")
            if llama_cpp.llama_model_quantize(source.encode(), dst.encode(), ctypes.byref(params)) != 0:
                raise SystemExit(f"llama_model_quantize failed for {dst}")
        if "quantize" in spec:
            os.remove(source)
        if "contexts" in spec:
            result["contexts"] = record_contexts(os.path.join(out, f"{family}-f32.gguf"), spec["contexts"])
            result["source"]["n_ctx"] = spec["contexts"]
            result["files"] = {"f32": {"file": f"{family}-f32.gguf"}}
            write_record(out, result)
            continue
        for t in types(family):
            path = os.path.join(out, f"{family}-{t}.gguf")
            llm = Llama(model_path=path, n_ctx=256, n_threads=2, n_threads_batch=2, logits_all=True,
                        seed=0, verbose=False)
            tok = lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
            tokens = [{"text": s, "ids": tok(s)} for s in TEXTS]
            ids = tok(PROMPT)
            llm.reset()
            llm.eval(ids)
            logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
            gen = []
            for _ in range(GREEDY):
                row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
                nxt = int(np.argmax(row))
                s = np.sort(row)
                gen.append({"id": nxt, "lead": round(float(s[-1] - s[-2]), 5)})
                llm.eval([nxt])
            result["files"][t] = {
                "file": f"{family}-{t}.gguf",
                "add_bos": bool(llm._model.add_bos_token()) if hasattr(llm._model, "add_bos_token") else None,
                "tokens": tokens,
                "prompt_ids": ids,
                "logits": [[round(float(x), 5) for x in row] for row in logits],
                "greedy": gen,
            }
            del llm
        write_record(out, result)


def write_record(out, result):
    path = os.path.join(out, "llama_cpp.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def record_contexts(path, contexts):
    """The prompt's logits and greedy tokens at each context size (LongRoPE's choice)."""
    import numpy as np
    from llama_cpp import Llama

    out = {}
    for n_ctx in contexts:
        llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=2, n_threads_batch=2, logits_all=True,
                    seed=0, verbose=False)
        ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        gen = []
        for _ in range(GREEDY):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            nxt = int(np.argmax(row))
            s = np.sort(row)
            gen.append({"id": nxt, "lead": round(float(s[-1] - s[-2]), 5)})
            llm.eval([nxt])
        out[str(n_ctx)] = {"n_ctx_seq": int(llm.n_ctx()), "prompt_ids": ids,
                           "logits": [[round(float(x), 5) for x in row] for row in logits],
                           "greedy": gen}
        del llm
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["build", "record"])
    ap.add_argument("--llama-cpp", default="/tmp/lcpp/llama_cpp_python-0.3.36/vendor/llama.cpp")
    ap.add_argument("--families", nargs="+", default=sorted(FAMILIES))
    args = ap.parse_args()
    build(args) if args.stage == "build" else record(args)


if __name__ == "__main__":
    main()
