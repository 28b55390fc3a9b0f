#!/usr/bin/env python3
"""Summarization-shaped generation, ferroformer against PyTorch + transformers, same run.

Random-weight models with the real sizes of t5-small and bart-base (compute does not depend
on the weights' values; the hub is not reachable here), saved once under
~/.cache/ferroformer/bench/. Both sides get the same 32 inputs of ~300 tokens (right-padded
batch), beam search with 4 beams and exactly 60 new tokens per hypothesis
(min_new_tokens = max_new_tokens, so the work is the same), f32, 2 threads each. The sides
alternate for --rounds rounds; the ratio of the median throughputs is reported.

Usage: python3 scripts/bench/seq2seq.py --python /root/venvs/ref/bin/python
           [--models t5-small,bart-base] [--rounds 2] [--inputs 32] [--new-tokens 60]
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ferroformer", "bench")

MAKE = r"""
import sys, torch, transformers
name, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if name == "t5-small":
    cfg = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6,
                                num_heads=8, feed_forward_proj="relu", decoder_start_token_id=0,
                                pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(cfg)
else:
    cfg = transformers.BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                                  encoder_attention_heads=12, decoder_attention_heads=12,
                                  encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                                  max_position_embeddings=1024)
    model = transformers.BartForConditionalGeneration(cfg)
model.save_pretrained(out, safe_serialization=True)
"""

TORCH = r"""
import json, sys, time, torch, transformers
model_dir, ids_path, beams, new_tokens, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
rows = json.load(open(ids_path))
model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
pad = model.generation_config.pad_token_id or 0
width = max(map(len, rows))
ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
with torch.inference_mode():
    t = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, num_beams=int(beams),
                         max_new_tokens=int(new_tokens), min_new_tokens=int(new_tokens),
                         early_stopping=True, forced_eos_token_id=None)
    seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "inputs": len(rows), "generated_tokens": int((out.shape[1] - 1) * out.shape[0])}))
"""


def ensure_model(python, name):
    out = os.path.join(CACHE, f"{name}-random")
    if not os.path.isfile(os.path.join(out, "model.safetensors")):
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([python, "-c", MAKE, name, out], check=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="Python with torch and transformers 4.57")
    ap.add_argument("--models", default="t5-small,bart-base")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--inputs", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=60)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    subprocess.run(["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "seq2seq_generate", "--no-run"],
                   cwd=ROOT, check=True, env=env)
    for name in args.models.split(","):
        model = ensure_model(args.python, name)
        rng = random.Random(0)
        vocab = 32000 if name == "t5-small" else 50000
        # ~300 tokens each (280..320), ids past the special tokens, the end-of-sequence token last.
        eos = 1 if name == "t5-small" else 2
        rows = [[rng.randrange(5, vocab) for _ in range(rng.randrange(280, 321))] + [eos]
                for _ in range(args.inputs)]
        ids_path = os.path.join(CACHE, f"{name}-inputs.json")
        with open(ids_path, "w") as f:
            json.dump(rows, f)
        common = [str(args.beams), str(args.new_tokens)]
        ours, theirs = [], []
        for r in range(args.rounds):
            out = subprocess.run(
                ["cargo", "bench", "-q", "-p", "ferroformer", "--bench", "seq2seq_generate", "--",
                 "--model", model, "--inputs", ids_path, "--beams", common[0], "--new-tokens", common[1],
                 "--json"], cwd=ROOT, check=True, env=env, capture_output=True, text=True).stdout
            o = json.loads(out.strip().splitlines()[-1])
            out = subprocess.run([args.python, "-c", TORCH, model, ids_path, *common, str(args.threads)],
                                 check=True, env=env, capture_output=True, text=True).stdout
            t = json.loads(out.strip().splitlines()[-1])
            if o["generated_tokens"] != t["generated_tokens"]:
                sys.exit(f"{name}: different work: {o} vs {t}")
            ours.append(args.inputs / o["seconds"])
            theirs.append(args.inputs / t["seconds"])
            print(f"{name} round {r + 1}: ferroformer {ours[-1]:.3f} inputs/s ({o['seconds']:.1f} s), "
                  f"pytorch {theirs[-1]:.3f} inputs/s ({t['seconds']:.1f} s)", file=sys.stderr)
        o, t = statistics.median(ours), statistics.median(theirs)
        print(json.dumps({"benchmark": f"{name} (random weights) summarization-shaped generate: "
                                       f"{args.inputs} inputs of ~300 tokens, {args.beams} beams, "
                                       f"{args.new_tokens} new tokens",
                          "threads": args.threads, "ferroformer_inputs_per_s": round(o, 3),
                          "pytorch_inputs_per_s": round(t, 3), "ratio": round(o / t, 3)}))


if __name__ == "__main__":
    main()
