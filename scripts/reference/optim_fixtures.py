#!/usr/bin/env python3
"""Records torch.optim.AdamW on fixed parameters and gradients, for the optimizer test in
crates/ferroformer/tests/train_lm.rs: tests/fixtures/adamw.safetensors.

Two parameters as `train lm` groups them — a matrix `w` with weight decay 0.1 and a vector `b`
without — five steps with a changing learning rate (as the warmup + cosine schedule gives),
β = (0.9, 0.95), ε = 1e-8. Stored: the starting values (`w0`, `b0`), each step's gradients
(`gw{t}`, `gb{t}`) and learning rate (`lr`), and after the last step the parameters and both
moments (`w5`, `b5`, `m.w`, `v.w`, `m.b`, `v.b`).

Usage: python scripts/reference/optim_fixtures.py [--out tests/fixtures]
"""
import argparse
import os

import torch
from safetensors.torch import save_file

STEPS = 5
LRS = [1e-3, 2e-3, 3e-3, 2.5e-3, 1e-3]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures")))
    args = ap.parse_args()
    torch.manual_seed(0)
    w = torch.randn(6, 5)
    b = torch.randn(5)
    out = {"w0": w.clone(), "b0": b.clone(), "lr": torch.tensor(LRS, dtype=torch.float64)}
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1},
                             {"params": [b], "weight_decay": 0.0}],
                            lr=LRS[0], betas=(0.9, 0.95), eps=1e-8)
    for t in range(STEPS):
        gw = torch.randn(6, 5) * (0.5 + t)
        gb = torch.randn(5) * 1e-3  # small gradients: ε matters
        out[f"gw{t}"], out[f"gb{t}"] = gw.clone(), gb.clone()
        w.grad, b.grad = gw, gb
        for group in opt.param_groups:
            group["lr"] = LRS[t]
        opt.step()
    out["w5"], out["b5"] = w.detach().clone(), b.detach().clone()
    for name, p in (("w", w), ("b", b)):
        state = opt.state[p]
        out[f"m.{name}"] = state["exp_avg"].clone()
        out[f"v.{name}"] = state["exp_avg_sq"].clone()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(args.out, "adamw.safetensors"))


if __name__ == "__main__":
    main()
