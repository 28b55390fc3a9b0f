#!/usr/bin/env python3
"""Drives `ferroformer serve` with the official `openai` Python client (PyPI `openai`) and checks
the answers: models, chat (whole and streamed), completions, embeddings (float and the
client's default base64), and an error.

It starts the server itself on a free loopback port (`--binary`, `--model` for chat and
completions, `--embedding-model` for embeddings), or uses a running one (`--base-url`).

Usage:
  python scripts/serve/openai_client_check.py --binary target/release/ferroformer \\
      --model ~/.cache/.../SmolLM2-135M-Instruct.Q4_1.gguf \\
      --embedding-model sentence-transformers/all-MiniLM-L6-v2
Exit status 0 when every check passes; a JSON summary on stdout.
"""
import argparse
import http.client
import json
import math
import socket
import subprocess
import sys
import time

import openai


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(host, port, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            c = http.client.HTTPConnection(host, port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not come up")


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ferroformer")
    ap.add_argument("--model", required=True, help="causal LM (chat, completions)")
    ap.add_argument("--embedding-model", help="encoder (embeddings)")
    ap.add_argument("--base-url", help="a running server's http://host:port")
    ap.add_argument("--api-key", default="check-key")
    args = ap.parse_args()

    server = None
    if args.base_url is None:
        port = free_port()
        cmd = [args.binary, "serve", "--port", str(port), "--api-key", args.api_key,
               "--model", args.model, "--alias", "chat"]
        if args.embedding_model:
            cmd += ["--model", args.embedding_model, "--alias", "embed"]
        print("starting:", " ".join(cmd), file=sys.stderr)
        server = subprocess.Popen(cmd)
        base = f"http://127.0.0.1:{port}"
        wait_ready("127.0.0.1", port)
        # Without --embedding-model no encoder is served: skip the embeddings checks.
        chat_model, embed_model = "chat", ("embed" if args.embedding_model else None)
    else:
        base = args.base_url
        chat_model, embed_model = args.model, args.embedding_model
    summary = {}
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=args.api_key)
        ids = [m.id for m in client.models.list()]
        check(chat_model in ids, f"models.list has {chat_model}: {ids}")

        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "What is the capital of France?"}]
        r = client.chat.completions.create(model=chat_model, messages=messages,
                                           max_tokens=24, temperature=0)
        text = r.choices[0].message.content
        check(isinstance(text, str) and text.strip() != "", f"chat answer: {text!r}")
        check(r.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
        u = r.usage
        check(u.total_tokens == u.prompt_tokens + u.completion_tokens and u.completion_tokens > 0,
              f"chat usage {u}")
        summary["chat"] = text

        pieces, finish, usage = [], None, None
        for chunk in client.chat.completions.create(model=chat_model, messages=messages,
                                                    max_tokens=24, temperature=0, stream=True,
                                                    stream_options={"include_usage": True}):
            if chunk.usage:
                usage = chunk.usage
            for ch in chunk.choices:
                pieces.append(ch.delta.content or "")
                finish = ch.finish_reason or finish
        check("".join(pieces) == text, "streamed chat equals the whole answer (greedy)")
        check(finish == r.choices[0].finish_reason, "streamed finish_reason")
        check(usage is not None and usage.completion_tokens == u.completion_tokens,
              "stream_options.include_usage")

        j = client.chat.completions.create(
            model=chat_model, max_tokens=64, temperature=0, response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "Describe a cat as a JSON object."}])
        jtext = j.choices[0].message.content
        try:
            parsed = json.loads(jtext)
        except ValueError:
            parsed = None
        check(isinstance(parsed, dict), f"response_format json_object gives a JSON object: {jtext!r}")
        summary["json_object"] = jtext

        c = client.completions.create(model=chat_model, prompt="The capital of France is",
                                      max_tokens=12, temperature=0, echo=True)
        check(c.choices[0].text.startswith("The capital of France is"), f"completion {c.choices[0].text!r}")
        summary["completion"] = c.choices[0].text

        try:
            client.chat.completions.create(model="no-such-model", messages=messages)
            check(False, "unknown model is an error")
        except openai.NotFoundError as e:
            check(e.status_code == 404, f"unknown model: 404 ({e.message[:60]}...)")
        try:
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
            check(False, "a wrong key is an error")
        except openai.AuthenticationError as e:
            check(e.status_code == 401, "wrong API key: 401")

        if embed_model:
            texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock prices fell."]
            f = client.embeddings.create(model=embed_model, input=texts, encoding_format="float")
            b = client.embeddings.create(model=embed_model, input=texts)  # the client asks base64
            vf = [d.embedding for d in f.data]
            vb = [d.embedding for d in b.data]
            check(len(vf) == 3 and all(len(v) == len(vf[0]) for v in vf), f"embeddings of dim {len(vf[0])}")
            check(all(abs(x - y) < 1e-6 for a, bb in zip(vf, vb) for x, y in zip(a, bb)),
                  "base64 embeddings equal float ones")

            def cos(a, bb):
                return sum(x * y for x, y in zip(a, bb)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in bb))
            near, far = cos(vf[0], vf[1]), cos(vf[0], vf[2])
            check(near > far, f"similar sentences are closer ({near:.3f} > {far:.3f})")
            summary["embedding_dim"] = len(vf[0])
            summary["cosine_similar_vs_unrelated"] = [round(near, 4), round(far, 4)]
        print(json.dumps({"ok": True, **summary}, indent=1, ensure_ascii=False))
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
