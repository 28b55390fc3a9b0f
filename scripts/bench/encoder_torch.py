"""PyTorch side of the encoder benchmark: nn.TransformerEncoder, 6 layers, d=384, 12 heads,
FFN 1536, ReLU, post-norm, batch 32 x 64, eval + inference mode (PyTorch's fast path)."""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 20
masked = "--masked" in sys.argv
torch.set_num_threads(threads)
torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, batch_first=True)
model = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False).eval()
x = torch.randn(32, 64, 384)
kpm = None
if masked:
    kpm = torch.zeros(32, 64, dtype=torch.bool)
    for b in range(32):
        if b % 2 == 1:
            kpm[b, 64 - b:] = True
with torch.inference_mode():
    for _ in range(3):
        model(x, src_key_padding_mask=kpm)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        model(x, src_key_padding_mask=kpm)
        times.append((time.perf_counter() - t) * 1e3)
times.sort()
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": threads,
                  "median_ms": round(statistics.median(times), 3), "min_ms": round(times[0], 3),
                  "iters": iters, "masked": masked}))
