#!/usr/bin/env python3
"""Same-run A/B of library builds: each build in its own process, the rounds alternating
the order, end-to-end time (median of timed calls) and each kernel's device time per call.

    python bench/ab.py --lib main=build-main/libsageattn.so --lib new=build/libsageattn.so [--rounds 2]
                       [--shapes "d128 n1k,d128 n16k"] [--json FILE]

A build is loaded through SAGEATTN_LIBRARY in a fresh process (python/ must be importable,
or the package installed). Per shape it prints each build's e2e and attention-kernel times
and the device time of the call's other kernels ("rest": the quantization kernels, the
workspace memset, the sharp heads' launch), in ms, each the best round (rounds alternate so
that drift and clocks hit every build alike); the ratio of the first build's times to each
other's (> 1: faster than the first), with the range of the kernel's ratio round by round
(round i of the first build against round i of the other): a difference inside that range,
or inside what an A/A run finds (the same build twice: --lib main=X --lib again=X), is the
harness's spread, not the change; and whether the outputs of every build agree bit for bit
(--expect-same: exit 1 where not). --device cpu runs the same on CPU tensors at
--scale-down'd sizes (for the tests; its "kernel" time is the call's, and it has no "rest").
"""
import argparse
import hashlib
import json
import sys
import time

from _builds import emit, parse_libs, run_build

# name: batch, heads_q, heads_kv, length, head_dim, causal. The names of
# ../shared/anchors/side_by_side.py where both have the shape.
SHAPES = {
    "d128 n1k": (32, 32, 32, 1024, 128, False),
    "d128 n4k": (8, 32, 32, 4096, 128, False),
    "d128 n16k": (2, 32, 32, 16384, 128, False),
    "d128 n4k causal": (8, 32, 32, 4096, 128, True),
    "d128 n16k causal": (2, 32, 32, 16384, 128, True),
    "d64 n4k": (8, 32, 32, 4096, 64, False),
    "d64 n16k": (2, 32, 32, 16384, 64, False),
    "b1 h12 n32760 d128": (1, 12, 12, 32760, 128, False),
    "b1 h24 n4608 d128": (1, 24, 24, 4608, 128, False),
    "gqa 32/8 n8k causal": (1, 32, 8, 8192, 128, True),
    "d256 n4k": (4, 16, 16, 4096, 256, False),
    "tiny b1 h8 n128 d64": (1, 8, 8, 128, 64, False),
}


def worker(shapes, device, scale_down, iters):
    import torch
    import sageattention as sa

    cuda = device == "cuda"

    def timed(fn):
        if not cuda:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e)

    def kernels(fn, reps=5):
        if not cuda:
            return {}
        from torch.profiler import ProfilerActivity, profile

        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        return {e.key: e.device_time_total / reps / 1e3 for e in prof.key_averages() if e.device_time_total > 0}

    for name in shapes:
        b, hq, hkv, n, d, causal = SHAPES[name]
        n = max(1, n // scale_down)
        g = torch.Generator(device=device).manual_seed(n + d + hq)
        q = torch.randn(b, hq, n, d, device=device, dtype=torch.bfloat16, generator=g)
        k = torch.randn(b, hkv, n, d, device=device, dtype=torch.bfloat16, generator=g)
        k = k + 4 * torch.randn(1, hkv, 1, d, device=device, dtype=torch.bfloat16, generator=g)
        v = torch.randn(b, hkv, n, d, device=device, dtype=torch.bfloat16, generator=g)
        fn = lambda: sa.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)
        out = fn()
        digest = hashlib.sha1(out.float().cpu().numpy().tobytes()).hexdigest()[:16]
        for _ in range(3):
            fn()
        times = sorted(timed(fn) for _ in range(iters))
        per_kernel = kernels(fn)
        e2e = times[len(times) // 2]
        attention = max((t for key, t in per_kernel.items() if "attention" in key), default=e2e)
        rest = sum(per_kernel.values()) - attention if per_kernel else None
        emit(dict(shape=name, e2e=e2e, kernel=attention, rest=rest, kernels=per_kernel, hash=digest))
        del q, k, v, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", action="append", default=[], metavar="NAME=PATH", help="a build (twice or more)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shapes", default=",".join(s for s in SHAPES if s != "tiny b1 h8 n128 d64"),
                    help="comma-separated names of: " + ", ".join(SHAPES))
    ap.add_argument("--iters", type=int, default=30, help="timed calls per shape and round")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--scale-down", type=int, default=1, help="divide every length by this (CPU tests)")
    ap.add_argument("--json", help="every round's rows, per build and shape")
    ap.add_argument("--expect-same", action="store_true", help="exit 1 where the builds' outputs differ")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"unknown shapes {unknown}; known: {list(SHAPES)}")
    if a.worker:
        worker(shapes, a.device, a.scale_down, a.iters)
        return 0
    libs = parse_libs(ap, a.lib)
    args = ["--shapes", ",".join(shapes), "--device", a.device, "--scale-down", str(a.scale_down), "--iters", str(a.iters)]
    rows = {}
    for rnd in range(a.rounds):
        for who, path in libs if rnd % 2 == 0 else libs[::-1]:
            for r in run_build(who, path, __file__, args):
                rows.setdefault((who, r["shape"]), []).append(r)
    names = [w for w, _ in libs]
    print(f"{'shape':22s} " + " ".join(f"{w + ' e2e':>12s} {'kernel':>8s} {'rest':>8s}" for w in names)
          + f"  vs {names[0]}: e2e/kernel [kernel by round]   outputs")
    differ = 0
    for s in shapes:
        best = []
        for w in names:
            rs = rows.get((w, s), [])
            least = lambda key: min((r[key] for r in rs if r[key] is not None), default=float("nan"))  # CPU: no rest
            best.append((least("e2e"), least("kernel"), least("rest"), {r["hash"] for r in rs}))
        same = len(set().union(*(h for *_, h in best))) == 1
        differ += not same
        line = f"{s:22s} " + " ".join(f"{e:12.4f} {k:8.4f} {r:8.4f}" for e, k, r, _ in best)
        def by_round(w):  # the kernel's ratio in each round, first build's over w's
            pairs = zip(rows.get((names[0], s), []), rows.get((w, s), []))
            ratios = [a["kernel"] / b["kernel"] for a, b in pairs if a["kernel"] and b["kernel"]]
            return f"[{min(ratios):.3f}-{max(ratios):.3f}]" if ratios else "[-]"
        line += "  " + " ".join(f"{best[0][0] / e:.3f}/{best[0][1] / k:.3f} {by_round(w)}"
                                for w, (e, k, _, _) in zip(names[1:], best[1:]))
        print(line + ("   same" if same else "   DIFFER"), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump([dict(build=w, **r) for (w, _), rs in rows.items() for r in rs], fh, indent=1)
    return 1 if differ and a.expect_same else 0


if __name__ == "__main__":
    sys.exit(main())
