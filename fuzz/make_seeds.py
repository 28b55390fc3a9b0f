#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Python standard library only (no venv needed): the seeds are tiny, valid inputs — a GGUF
Llama of one layer and a vocabulary of 100 tokens, BERT / GPT-2 / Llama checkpoints with a
hidden size of 4, tokenizer files from tests/fixtures — so that the fuzzers start from
inputs that reach the end of each loader. Run from anywhere: `python3 fuzz/make_seeds.py`.

Multi-file inputs use the framing of `fuzz/src/lib.rs`: records of `id: u8`,
`len: u32 LE`, then `len` bytes.
"""

import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def record(file_id: int, data) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return struct.pack("<BI", file_id, len(data)) + data


def save(target: str, name: str, data: bytes) -> None:
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def floats(n: int, dtype: str = "F32") -> bytes:
    """`n` small deterministic values."""
    vals = [((i * 37) % 17 - 8) / 32.0 for i in range(n)]
    if dtype == "F16":
        return b"".join(struct.pack("<e", v) for v in vals)
    return struct.pack(f"<{n}f", *vals)


# ------------------------------------------------------------------------------------------
# GGUF (v3): header, metadata, tensor directory, tensor data aligned to 32 bytes.
# ------------------------------------------------------------------------------------------

GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY = 4, 5, 6, 7, 8, 9
GGML_F32, GGML_F16 = 0, 1


def gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind, value) -> bytes:
    if kind == GGUF_U32:
        return struct.pack("<I", value)
    if kind == GGUF_I32:
        return struct.pack("<i", value)
    if kind == GGUF_F32:
        return struct.pack("<f", value)
    if kind == GGUF_BOOL:
        return struct.pack("<B", int(value))
    if kind == GGUF_STRING:
        return gguf_string(value)
    if kind == GGUF_ARRAY:
        elem_kind, items = value
        return struct.pack("<IQ", elem_kind, len(items)) + b"".join(
            gguf_value(elem_kind, v) for v in items
        )
    raise ValueError(kind)


def gguf_file(metadata, tensors) -> bytes:
    """`metadata`: [(key, kind, value)]; `tensors`: [(name, shape (candle order), ggml type)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    data = b""
    for name, shape, ggml_type in tensors:
        n = 1
        for s in shape:
            n *= s
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", s) for s in reversed(shape))
        out += struct.pack("<IQ", ggml_type, len(data))
        data += floats(n, "F16" if ggml_type == GGML_F16 else "F32")
        data += b"\0" * (-len(data) % 32)
    out += b"\0" * (-len(out) % 32)
    return out + data


def gpt2_byte_char(b: int) -> str:
    """GPT-2's printable stand-in for byte `b` (only the ones used here)."""
    return chr(0x100 + b) if b <= 0x20 else chr(b)


def tiny_gguf(tied: bool, with_template: bool) -> bytes:
    d, heads, kv, ff, vocab_chars = 8, 2, 1, 16, range(0x21, 0x7F)
    tokens = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", gpt2_byte_char(0x20)]
    tokens += [chr(c) for c in vocab_chars]
    tokens += ["Ġt", "he"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    vocab = len(tokens)
    md = [
        ("general.architecture", GGUF_STRING, "llama"),
        ("general.name", GGUF_STRING, "tiny"),
        ("llama.block_count", GGUF_U32, 1),
        ("llama.context_length", GGUF_U32, 32),
        ("llama.embedding_length", GGUF_U32, d),
        ("llama.feed_forward_length", GGUF_U32, ff),
        ("llama.attention.head_count", GGUF_U32, heads),
        ("llama.attention.head_count_kv", GGUF_U32, kv),
        ("llama.rope.freq_base", GGUF_F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5),
        ("tokenizer.ggml.model", GGUF_STRING, "gpt2"),
        ("tokenizer.ggml.pre", GGUF_STRING, "smollm"),
        ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, tokens)),
        ("tokenizer.ggml.token_type", GGUF_ARRAY, (GGUF_I32, types)),
        ("tokenizer.ggml.merges", GGUF_ARRAY, (GGUF_STRING, ["Ġ t", "h e"])),
        ("tokenizer.ggml.bos_token_id", GGUF_U32, 0),
        ("tokenizer.ggml.eos_token_id", GGUF_U32, 1),
    ]
    if with_template:
        md += [
            ("tokenizer.ggml.add_bos_token", GGUF_BOOL, True),
            (
                "tokenizer.chat_template",
                GGUF_STRING,
                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                "{% endif %}",
            ),
        ]
    hd = d // heads
    t = [("token_embd.weight", [vocab, d], GGML_F16)]
    t += [
        ("blk.0.attn_norm.weight", [d], GGML_F32),
        ("blk.0.attn_q.weight", [heads * hd, d], GGML_F32),
        ("blk.0.attn_k.weight", [kv * hd, d], GGML_F32),
        ("blk.0.attn_v.weight", [kv * hd, d], GGML_F32),
        ("blk.0.attn_output.weight", [d, heads * hd], GGML_F32),
        ("blk.0.ffn_norm.weight", [d], GGML_F32),
        ("blk.0.ffn_gate.weight", [ff, d], GGML_F32),
        ("blk.0.ffn_up.weight", [ff, d], GGML_F32),
        ("blk.0.ffn_down.weight", [d, ff], GGML_F32),
        ("output_norm.weight", [d], GGML_F32),
    ]
    if not tied:
        t.append(("output.weight", [vocab, d], GGML_F16))
    return gguf_file(md, t)


# ------------------------------------------------------------------------------------------
# Safetensors checkpoints with the fixtures' configs shrunk to a hidden size of 4.
# ------------------------------------------------------------------------------------------


def safetensors(tensors) -> bytes:
    header, data = {}, b""
    for name, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        blob = floats(n)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def shrunk_config(name: str, **changes) -> str:
    with open(os.path.join(FIXTURES, name, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(changes)
    return json.dumps(cfg, indent=1)


def bert_checkpoint():
    h, inter, vocab, pos = 4, 8, 10, 8
    cfg = shrunk_config(
        "tiny-bert", hidden_size=h, intermediate_size=inter, num_attention_heads=2,
        num_hidden_layers=1, vocab_size=vocab, max_position_embeddings=pos,
    )
    p = "encoder.layer.0."
    t = [
        ("embeddings.word_embeddings.weight", [vocab, h]),
        ("embeddings.position_embeddings.weight", [pos, h]),
        ("embeddings.token_type_embeddings.weight", [2, h]),
        ("embeddings.LayerNorm.weight", [h]),
        ("embeddings.LayerNorm.bias", [h]),
    ]
    for m in ("query", "key", "value"):
        t += [(f"{p}attention.self.{m}.weight", [h, h]), (f"{p}attention.self.{m}.bias", [h])]
    t += [
        (f"{p}attention.output.dense.weight", [h, h]),
        (f"{p}attention.output.dense.bias", [h]),
        (f"{p}attention.output.LayerNorm.weight", [h]),
        (f"{p}attention.output.LayerNorm.bias", [h]),
        (f"{p}intermediate.dense.weight", [inter, h]),
        (f"{p}intermediate.dense.bias", [inter]),
        (f"{p}output.dense.weight", [h, inter]),
        (f"{p}output.dense.bias", [h]),
        (f"{p}output.LayerNorm.weight", [h]),
        (f"{p}output.LayerNorm.bias", [h]),
        ("pooler.dense.weight", [h, h]),
        ("pooler.dense.bias", [h]),
    ]
    return cfg, t


def gpt2_checkpoint():
    h, vocab, pos = 4, 10, 8
    cfg = shrunk_config("tiny-gpt2", n_embd=h, n_head=2, n_layer=1, n_positions=pos, vocab_size=vocab,
                        bos_token_id=0, eos_token_id=1)
    p = "transformer.h.0."
    t = [
        (f"{p}attn.c_attn.weight", [h, 3 * h]), (f"{p}attn.c_attn.bias", [3 * h]),
        (f"{p}attn.c_proj.weight", [h, h]), (f"{p}attn.c_proj.bias", [h]),
        (f"{p}ln_1.weight", [h]), (f"{p}ln_1.bias", [h]),
        (f"{p}ln_2.weight", [h]), (f"{p}ln_2.bias", [h]),
        (f"{p}mlp.c_fc.weight", [h, 4 * h]), (f"{p}mlp.c_fc.bias", [4 * h]),
        (f"{p}mlp.c_proj.weight", [4 * h, h]), (f"{p}mlp.c_proj.bias", [h]),
        ("transformer.ln_f.weight", [h]), ("transformer.ln_f.bias", [h]),
        ("transformer.wpe.weight", [pos, h]), ("transformer.wte.weight", [vocab, h]),
    ]
    return cfg, t


def llama_checkpoint():
    h, inter, vocab, heads, kv, hd = 4, 8, 10, 2, 1, 2
    cfg = shrunk_config(
        "tiny-llama", hidden_size=h, intermediate_size=inter, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=hd, num_hidden_layers=1, vocab_size=vocab,
        max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
    )
    p = "model.layers.0."
    t = [
        ("lm_head.weight", [vocab, h]), ("model.embed_tokens.weight", [vocab, h]),
        (f"{p}input_layernorm.weight", [h]), (f"{p}post_attention_layernorm.weight", [h]),
        (f"{p}mlp.down_proj.weight", [h, inter]), (f"{p}mlp.gate_proj.weight", [inter, h]),
        (f"{p}mlp.up_proj.weight", [inter, h]),
        (f"{p}self_attn.q_proj.weight", [heads * hd, h]), (f"{p}self_attn.k_proj.weight", [kv * hd, h]),
        (f"{p}self_attn.v_proj.weight", [kv * hd, h]), (f"{p}self_attn.o_proj.weight", [h, heads * hd]),
        ("model.norm.weight", [h]),
    ]
    return cfg, t


def main() -> None:
    # gguf: whole files.
    save("gguf", "tiny-llama-tied.gguf", tiny_gguf(tied=True, with_template=False))
    save("gguf", "tiny-llama-chat.gguf", tiny_gguf(tied=False, with_template=True))

    # safetensors_config: loader byte, then 0 config.json, 1 model.safetensors,
    # 2 generation_config.json, 3 model.safetensors.index.json, 4 a shard.
    bert_cfg, bert_t = bert_checkpoint()
    gpt2_cfg, gpt2_t = gpt2_checkpoint()
    llama_cfg, llama_t = llama_checkpoint()
    save("safetensors_config", "bert-automodel", bytes([0]) + record(0, bert_cfg) + record(1, safetensors(bert_t)))
    labelled = json.loads(bert_cfg)
    labelled.update(architectures=["BertForSequenceClassification"], id2label={"0": "NEG", "1": "POS"},
                    label2id={"NEG": 0, "POS": 1})
    cls_t = bert_t + [("classifier.weight", [2, 4]), ("classifier.bias", [2])]
    save("safetensors_config", "bert-classification",
         bytes([1]) + record(0, json.dumps(labelled)) + record(1, safetensors([("bert." + n, s) for n, s in cls_t[:-2]] + cls_t[-2:])))
    save("safetensors_config", "gpt2-causal",
         bytes([5]) + record(0, gpt2_cfg) + record(1, safetensors(gpt2_t))
         + record(2, json.dumps({"bos_token_id": 0, "eos_token_id": 1, "max_new_tokens": 4})))
    index = {"metadata": {}, "weight_map": {n: "model-00001-of-00002.safetensors" for n, _ in llama_t}}
    save("safetensors_config", "llama-sharded",
         bytes([5]) + record(0, llama_cfg) + record(3, json.dumps(index)) + record(4, safetensors(llama_t)))
    save("safetensors_config", "llama-inspect", bytes([6]) + record(0, llama_cfg) + record(1, safetensors(llama_t)))

    # tokenizer: options byte, then 0 tokenizer.json, 1 tokenizer_config.json,
    # 2 special_tokens_map.json, 3 added_tokens.json, 4 vocab.txt, 5 vocab.json, 6 merges.txt,
    # 7 text, 8 pair text.
    tok = os.path.join(FIXTURES, "tokenizers")
    for name in ("char", "wordpiece", "bpe"):
        with open(os.path.join(tok, f"{name}.json"), "rb") as f:
            tj = f.read()
        save("tokenizer", f"{name}-tokenizer-json", bytes([0x0B]) + record(0, tj) + record(7, "hello world, the end"))
    with open(os.path.join(tok, "wordpiece.json")) as f:
        wp_vocab = json.load(f)["model"]["vocab"]
    vocab_txt = "\n".join(sorted(wp_vocab, key=wp_vocab.get)) + "\n"
    save("tokenizer", "vocab-txt-bert",
         bytes([0x4F]) + record(4, vocab_txt)
         + record(1, json.dumps({"do_lower_case": True, "model_max_length": 16, "tokenizer_class": "BertTokenizer"}))
         + record(2, json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "mask_token": "[MASK]"}))
         + record(7, "Hello World") + record(8, "second text"))
    with open(os.path.join(tok, "bpe.json")) as f:
        bpe_model = json.load(f)["model"]
    merges = bpe_model["merges"]
    merges_txt = "#version: 0.2\n" + "\n".join(m if isinstance(m, str) else " ".join(m) for m in merges) + "\n"
    save("tokenizer", "vocab-json-merges-gpt2",
         bytes([0x03]) + record(5, json.dumps(bpe_model["vocab"])) + record(6, merges_txt)
         + record(3, json.dumps({"<new>": len(bpe_model["vocab"])}))
         + record(1, json.dumps({"add_prefix_space": True, "padding_side": "left"})) + record(7, "the end"))

    # chat_template: flags byte (bit 0 add_generation_prompt, the rest picks a real template),
    # then 0 template, 1 messages JSON, 2 kwargs JSON, 3 a user message, 4 a special token.
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    with open(os.path.join(FIXTURES, "chat_templates.json")) as f:
        n_real = len(json.load(f)["templates"])
    for i in range(n_real):
        save("chat_template", f"real-{i}", bytes([(i << 1) | 1]) + record(1, json.dumps(msgs)) + record(3, "Hi there"))
    tools = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
    save("chat_template", "real-tools", bytes([3 << 1]) + record(1, json.dumps(msgs[1:2])) + record(2, json.dumps(tools)))
    save("chat_template", "custom",
         bytes([1]) + record(0, "{{ bos_token }}{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}"
                                "{% if not loop.last %}\n{% endif %}{% endfor %}{{ messages | tojson }}")
         + record(1, json.dumps(msgs)) + record(4, "<s>"))

    # pipeline_inputs: plain bytes.
    save("pipeline_inputs", "lines", b"I love this movie!\n\n  indented text \r\nlast line without newline")
    save("pipeline_inputs", "jsonl", b'{"text": "first"}\n{"question": "Who?", "context": "Me."}\nplain\n')

    # train_data: 0 a.txt, 1 b.jsonl, 2 docs/c.txt, 3 cache/manifest.json, 4 tokens.bin, 5 options.
    with open(os.path.join(tok, "corpus.txt"), "rb") as f:
        corpus = f.read()[:400]
    save("train_data", "txt-and-jsonl",
         record(0, corpus) + record(1, b'{"text": "hello there"}\n{"text": "second doc"}\n')
         + record(5, bytes([0, 1, 40, 4])))
    save("train_data", "val-files", record(0, corpus[:200]) + record(2, corpus[200:]) + record(5, bytes([2, 0, 0, 3])))
    save("train_data", "lossy-field",
         record(1, b'{"body": "caf\\u00e9"}\n{"body": "x"}\n') + record(0, b"bad \xff utf8 but lossy")
         + record(4, struct.pack("<6I", 1, 2, 3, 4, 5, 6)) + record(5, bytes([1, 5, 128, 2]) + b"body"))


if __name__ == "__main__":
    main()
