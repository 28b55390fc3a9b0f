#!/usr/bin/env python3
"""Load test of `ferroformer serve`: many concurrent streaming clients, greedy outputs checked
against single-request outputs, memory growth, throughput with 16 streams vs 1, and
(optionally) llama.cpp's server on the same model.

What it does:
1. starts `ferroformer serve --model MODEL` on a free loopback port (or uses --base-url);
2. builds a pool of --shapes distinct requests (prompts of mixed lengths, max_tokens between
   --min-tokens and --max-tokens, greedy) and runs each one alone: the reference outputs;
3. runs --requests requests drawn from the pool with --clients concurrent streaming clients
   (SSE, /v1/completions); every answer must arrive without error and equal its reference;
   the server's RSS is read after the first 10 % of the requests and after all of them, each
   time after --settle seconds of idle (and its peak RSS, VmHWM, with it);
4. throughput: --throughput-requests requests with 1 stream, then with 16 concurrent streams
   (generated tokens per second, wall clock);
5. with --llama-cpp (and `llama_cpp.server` importable: `pip install llama-cpp-python[server]`),
   the same throughput run against llama-cpp-python's server with the same GGUF file and
   --threads threads (that server runs one request at a time: it has no parallel slots).

Prints one JSON report on stdout (progress on stderr). Only loopback addresses are used.

Usage:
  python scripts/serve/load_test.py --binary target/release/ferroformer \\
      --model ~/.cache/.../SmolLM2-135M-Instruct.Q4_1.gguf --requests 2000 --clients 64
"""
import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly read old maps "
         "about rivers mountains and cities where people build bridges ships gardens and "
         "schools for their children who learn numbers letters music and history").split()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(base, path, timeout=300, proc=None):
    u = urlparse(base)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base} did not come up")


def rss_kib(pid, key="VmRSS"):
    """The server's resident memory (`VmRSS`) or its peak so far (`VmHWM`), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def stream_completion(base, body):
    """One streamed /v1/completions request: (text, tokens, ttft, inter-token gaps, error)."""
    u = urlparse(base)
    body = dict(body, stream=True, stream_options={"include_usage": True})
    t0 = time.perf_counter()
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        c.request("POST", "/v1/completions", json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            return None, 0, None, [], f"HTTP {r.status}: {r.read()[:200]!r}"
        text, tokens, ttft, gaps, last, done = [], 0, None, [], None, False
        usage = None
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"].get("completion_tokens")
            if "error" in chunk:
                return None, 0, None, [], f"stream error: {chunk['error']}"
            now = time.perf_counter()
            for ch in chunk.get("choices", []):
                piece = ch.get("text", "")
                if ch.get("finish_reason") is None:
                    tokens += 1
                    if ttft is None:
                        ttft = now - t0
                    else:
                        gaps.append(now - last)
                    last = now
                text.append(piece)
        c.close()
        if not done:
            return None, 0, None, [], "no [DONE]"
        # The usage chunk counts tokens exactly (a chunk may carry no token, or several).
        return "".join(text), usage if usage is not None else tokens, ttft, gaps, None
    except Exception as e:  # noqa: BLE001 - any failure counts as an error
        return None, 0, None, [], repr(e)


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run_batch(base, bodies, clients):
    results = [None] * len(bodies)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        futs = {ex.submit(stream_completion, base, b): i for i, b in enumerate(bodies)}
        for f in futs:
            results[futs[f]] = f.result()
    return results, time.perf_counter() - t0


def summary(results, wall):
    toks = sum(r[1] for r in results if r[4] is None)
    ttft = [r[2] for r in results if r[2] is not None]
    gaps = [g for r in results for g in r[3]]
    return {
        "requests": len(results),
        "errors": sum(r[4] is not None for r in results),
        "generated_tokens": toks,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(toks / wall, 1),
        "ttft_p50_ms": round(1000 * pct(ttft, 50), 1) if ttft else None,
        "ttft_p99_ms": round(1000 * pct(ttft, 99), 1) if ttft else None,
        "itl_p50_ms": round(1000 * pct(gaps, 50), 2) if gaps else None,
        "itl_p99_ms": round(1000 * pct(gaps, 99), 2) if gaps else None,
    }


def throughput(base, pool, n, label):
    bodies = [dict(pool[i % len(pool)], max_tokens=64) for i in range(n)]
    out = {}
    for streams in (1, 16):
        res, wall = run_batch(base, bodies, streams)
        out[f"{streams}_streams"] = summary(res, wall)
        log(f"{label}: {streams} stream(s): {out[f'{streams}_streams']}")
    a, b = out["1_streams"]["tokens_per_s"], out["16_streams"]["tokens_per_s"]
    out["speedup_16_vs_1"] = round(b / a, 2) if a else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="target/release/ferroformer")
    ap.add_argument("--model", help="model for `ferroformer serve` (a SmolLM2 GGUF file)")
    ap.add_argument("--base-url", help="use a running server instead of starting one")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--shapes", type=int, default=40, help="distinct requests in the pool")
    ap.add_argument("--min-tokens", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--throughput-requests", type=int, default=32)
    ap.add_argument("--max-concurrent-sequences", type=int, default=64)
    ap.add_argument("--llama-cpp", action="store_true", help="also measure llama.cpp's server")
    ap.add_argument("--llama-cpp-python", default="/root/venvs/gguf/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds of idle before each RSS reading")
    args = ap.parse_args()
    rng = random.Random(args.seed)

    server = None
    base = args.base_url
    if base is None:
        if not args.model:
            raise SystemExit("give --model (or --base-url)")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [args.binary, "serve", "--model", args.model, "--port", str(port),
               "--max-concurrent-sequences", str(args.max_concurrent_sequences),
               "--max-queue", str(max(args.requests, 256))]
        log("starting:", " ".join(cmd))
        server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_ready(base, "/health", proc=server)
        report = {"base_url": base, "model": args.model}
        # The pool: prompts of 3..60 words, mixed max_tokens, greedy.
        pool = []
        for i in range(args.shapes):
            n = rng.choice([3, 5, 8, 13, 21, 34, 60])
            prompt = " ".join(rng.choice(WORDS) for _ in range(n))
            pool.append({"prompt": prompt, "temperature": 0,
                         "max_tokens": rng.randint(args.min_tokens, args.max_tokens)})
        log(f"references: {len(pool)} requests one at a time")
        refs = []
        for b in pool:
            text, tokens, _, _, err = stream_completion(base, b)
            if err:
                raise SystemExit(f"reference request failed: {err}")
            refs.append(text)
        picks = [rng.randrange(len(pool)) for _ in range(args.requests)]
        first = max(1, args.requests // 10)
        rss = {}
        results = []
        t0 = time.perf_counter()
        for part, label in ((picks[:first], "first_10pct"), (picks[first:], "rest")):
            res, _ = run_batch(base, [pool[i] for i in part], args.clients)
            results.extend(res)
            if server:
                # Both readings after the same pause, once the server is idle: it returns
                # memory it has not reused within a second (see `set_purge_policy`).
                time.sleep(args.settle)
                rss[label] = rss_kib(server.pid)
                rss[label + "_peak"] = rss_kib(server.pid, "VmHWM")
            log(f"{label}: {len(part)} requests done, RSS {rss.get(label)} KiB, "
                f"peak {rss.get(label + '_peak')} KiB")
        wall = time.perf_counter() - t0
        mismatches = [i for i, (p, r) in enumerate(zip(picks, results))
                      if r[4] is None and r[0] != refs[p]]
        errors = [r[4] for r in results if r[4] is not None]
        load = summary(results, wall)
        load.update({
            "clients": args.clients,
            "greedy_mismatches": len(mismatches),
            "first_errors": errors[:3],
        })
        if server:
            load["rss_after_first_10pct_mib"] = round(rss["first_10pct"] / 1024, 1)
            load["rss_after_all_mib"] = round(rss["rest"] / 1024, 1)
            load["rss_growth_pct"] = round(100 * (rss["rest"] / rss["first_10pct"] - 1), 2)
            load["peak_rss_after_first_10pct_mib"] = round(rss["first_10pct_peak"] / 1024, 1)
            load["peak_rss_after_all_mib"] = round(rss["rest_peak"] / 1024, 1)
        report["load"] = load
        log("load:", json.dumps(load))
        report["throughput"] = throughput(base, pool, args.throughput_requests, "ferroformer")
        if args.llama_cpp:
            report["llama_cpp"] = llama_cpp(args, pool)
        print(json.dumps(report, indent=1))
        ok = load["errors"] == 0 and load["greedy_mismatches"] == 0
        sys.exit(0 if ok else 1)
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)


def llama_cpp(args, pool):
    probe = subprocess.run([args.llama_cpp_python, "-c", "import llama_cpp.server"],
                           capture_output=True)
    if probe.returncode != 0:
        msg = "skipped: llama_cpp.server is not importable (pip install 'llama-cpp-python[server]')"
        log(msg)
        return {"skipped": msg}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [args.llama_cpp_python, "-m", "llama_cpp.server", "--model", args.model,
           "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(args.threads),
           "--n_ctx", "4096", "--interrupt_requests", "False"]
    log("starting:", " ".join(cmd))
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        wait_ready(base, "/v1/models", timeout=120, proc=p)
        return throughput(base, pool, args.throughput_requests, "llama.cpp")
    finally:
        p.terminate()
        p.wait(timeout=60)


if __name__ == "__main__":
    main()
