#!/usr/bin/env python3
"""How V's FP8 scales could be chosen so that V is read once: a float64 study on the CPU.

    python bench/v_scales.py [--keys 4096] [--queries 256] [--seed 1]

Today (docs/ALGORITHM.md §4) every channel's scale is its amax over all of the sequence's
keys, so the quantization reads V twice: once for the range (the sums pass), once for the
codes. The schemes below need one read (plus a sample of 256 spread keys, which the sums
pass reads for K's mean anyway):

  channel   today's §4: per-channel amax over all keys.
  block     one scale a 128-key block over all channels (the block's own amax), folded
            into O through a running maximum of the block scales (P̃ scaled by s_j / M_j,
            O kept in units of M_j).
  shape     a channel shape from the sample (its per-channel amax) times one scale a block
            (the block's amax after the shape), the same running-maximum fold.
  shape+O   the same codes; O kept in units of the current block's scale instead
            (O_j = O_{j-1} · alpha · s_{j-1}/s_j + P̃_j·V_j): P̃ is never scaled.
  pow2      shape+O with the shape and the block scales rounded up to powers of two:
            the scaling before the e4m3 rounding and the fold's s_{j-1}/s_j are exact.

Each runs §6's FP8 path in float64 apart from the e4m3 roundings (P̃ = e4m3(exp2(s − m +
8.807)), the codes) and adds §4's mean rounding-error offset; the judge is float64
attention. Printed per case: cosine, relative L1, and the per-channel relative L1 (the
error over the channel's |output|) median and worst, which shows channels that a shared
scale pushes into e4m3's subnormals.
"""
import argparse

import torch

R, OFF, BLOCK, SAMPLE = 448.0, 8.807, 128, 256
SCHEMES = ("channel", "block", "shape", "shape+O", "pow2")


def pow2_up(x):
    return 2.0 ** torch.ceil(torch.log2(x))


def e4m3(x):
    return x.float().to(torch.float8_e4m3fn).double()


def attention(q, k, v, scheme):
    n, d = v.shape
    s = (q @ k.T) / d**0.5 * 1.4426950408889634  # log2 domain
    shape = torch.ones(d, dtype=torch.float64)
    if scheme in ("shape", "shape+O", "pow2"):
        shape = v[torch.linspace(0, n - 1, SAMPLE).long()].abs().amax(0).clamp_min(2**-100)
        if scheme == "pow2":
            shape = pow2_up(shape)
    u = v / shape
    if scheme == "channel":
        a = u.abs().amax(0).clamp_min(2**-100) / R
        codes = e4m3(u / a)
        scales = [a] * ((n + BLOCK - 1) // BLOCK)
        deq = codes * a
    else:
        scales, parts = [], []
        for j in range(0, n, BLOCK):
            a = u[j : j + BLOCK].abs().amax().clamp_min(2**-100) / R
            scales.append(pow2_up(a) if scheme == "pow2" else a)
            a = scales[-1]
            parts.append(e4m3(u[j : j + BLOCK] / a))
        codes = torch.cat(parts)
        deq = torch.cat([c * a for c, a in zip(parts, scales)])
    err = (u - deq).mean(0)
    rows = q.shape[0]
    m = torch.full((rows, 1), -float("inf"), dtype=torch.float64)
    l = torch.zeros(rows, 1, dtype=torch.float64)
    o = torch.zeros(rows, d, dtype=torch.float64)
    unit = None  # the scale O is kept in
    for i, j in enumerate(range(0, n, BLOCK)):
        sj = s[:, j : j + BLOCK]
        m_new = torch.maximum(m, sj.amax(1, keepdim=True))
        alpha = torch.exp2(m - m_new)
        m = m_new
        a = scales[i]
        if scheme == "channel":
            p = e4m3(torch.exp2(sj - m + OFF))
            o = o * alpha + p @ codes[j : j + BLOCK]
            l = l * alpha + p.sum(1, keepdim=True)
            unit = a
        elif scheme in ("shape+O", "pow2"):
            p = e4m3(torch.exp2(sj - m + OFF))
            o = o * alpha * (unit / a if unit is not None else 0.0) + p @ codes[j : j + BLOCK]
            l = l * alpha + p.sum(1, keepdim=True)
            unit = a
        else:
            top = a if unit is None else torch.maximum(unit, a)
            ratio = a / top
            p = e4m3(torch.exp2(sj - m + OFF) * ratio)
            o = o * alpha * (unit / top if unit is not None else 0.0) + p @ codes[j : j + BLOCK]
            l = l * alpha + p.sum(1, keepdim=True) / ratio
            unit = top
    return (o / l * unit + err) * shape


def measures(o, ref):
    per_channel = (o - ref).abs().sum(0) / ref.abs().sum(0)
    cos = torch.nn.functional.cosine_similarity(o.flatten(), ref.flatten(), dim=0).item()
    return cos, ((o - ref).abs().sum() / ref.abs().sum()).item(), per_channel.median().item(), per_channel.max().item()


def cases(n, d):
    ch = torch.arange(d)
    key = torch.arange(n)[:, None]
    return {
        "normal": lambda: torch.randn(n, d),
        "v-outliers (d/32 channels x20)": lambda: torch.randn(n, d) * torch.where(ch % 32 == 0, 20.0, 1.0),
        "channel scales lognormal(0, 2)": lambda: torch.randn(n, d) * (2 * torch.randn(d)).exp(),
        "1 % of keys x50": lambda: torch.randn(n, d) * torch.where(torch.rand(n, 1) < 0.01, 50.0, 1.0),
        "both of the last two": lambda: torch.randn(n, d)
        * (2 * torch.randn(d)).exp()
        * torch.where(torch.rand(n, 1) < 0.01, 50.0, 1.0),
        "last block x1000": lambda: torch.randn(n, d) * torch.where(key >= n - BLOCK, 1000.0, 1.0),
        "first block x1000": lambda: torch.randn(n, d) * torch.where(key < BLOCK, 1000.0, 1.0),
        "blocks rising, x2 every 4": lambda: torch.randn(n, d) * 2.0 ** (key // BLOCK / 4),
        "zero keys, then normal": lambda: torch.randn(n, d) * (key >= n // 4),
        "one value x1000": lambda: torch.randn(n, d) + 1000.0 * ((key == n // 5) & (ch == 3)),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    print("cos / rel. L1 / per-channel rel. L1 median / worst, for: " + ", ".join(SCHEMES))
    for sharp in (1.0, 3.0):
        for name, make in cases(a.keys, a.dim).items():
            v = make().double()
            q = torch.randn(a.queries, a.dim, dtype=torch.float64) * sharp
            k = torch.randn(a.keys, a.dim, dtype=torch.float64) * sharp
            ref = torch.softmax(q @ k.T / a.dim**0.5, -1) @ v
            rows = [measures(attention(q, k, v, s), ref) for s in SCHEMES]
            print(f"Q, K x{sharp:g} {name:32s} " + " | ".join("/".join(f"{x:.5f}" for x in r) for r in rows), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
