"""One sageattn call at a given shape, for profilers (ncu, nsys):
    python bench/profile_one.py --len 16384 --batch 2 --dim 128 [--causal]"""
import argparse

import torch

import sageattention

ap = argparse.ArgumentParser()
ap.add_argument("--len", type=int, default=16384)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--heads", type=int, default=32)
ap.add_argument("--dim", type=int, default=128)
ap.add_argument("--causal", action="store_true")
ap.add_argument("--calls", type=int, default=3)
a = ap.parse_args()
q, k, v = (torch.randn(a.batch, a.heads, a.len, a.dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
for _ in range(a.calls):
    sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=a.causal)
torch.cuda.synchronize()

# Device time per kernel of one call (median over a few), largest first.
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=a.causal)
    torch.cuda.synchronize()
total = 0.0
rows = []
for e in prof.key_averages():
    t = e.device_time_total / 5
    if t > 0:
        rows.append((t, e.key[:90]))
        total += t
for t, key in sorted(rows, reverse=True):
    print(f"{t:10.1f} us  {100 * t / total:5.1f}%  {key}")
