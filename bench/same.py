#!/usr/bin/env python3
"""Whether builds of the library give the same output bits on hostile problems: for a
change meant to keep every bit (a faster schedule, a leaner epilogue), the check that it did.

    python bench/same.py --lib main=build-main/libsageattn.so --lib new=build/libsageattn.so

Each build runs in its own process (SAGEATTN_LIBRARY) over the same problems: head dims
36 to 256 (unstaged rows where head_dim % 8 != 0), lengths 1, 77, 1000 and 4097 (off every
block size), causal with more keys than queries, the LSE, fp16 inputs, FP16 P·V, NaN and
infinity, sharp heads, a bool mask, NHD strides, GQA and varlen with a one-token sequence.
Prints one line a problem (same / DIFFER, each build's digest and whether its output is
finite) and exits 1 if any differ. --device cpu --scale-down 10 runs it on CPU tensors.
"""
import argparse
import hashlib
import itertools
import sys

from _builds import emit, parse_libs, run_build


def problems(scale_down=1):
    s = lambda n: max(1, n // scale_down) if n > 1 else n
    P = [dict(name=f"d{d} n{n}", b=2, hq=4, hkv=4, nq=s(n), nk=s(n), d=d)
         for d in (64, 128, 256, 192, 96) for n in (1, 77, 1000, 4097)]
    P += [
        dict(name="causal d128 nq1000 nk3000 gqa", b=2, hq=4, hkv=2, nq=s(1000), nk=s(3000), d=128, causal=True),
        dict(name="causal d64 n4097", b=1, hq=8, hkv=8, nq=s(4097), nk=s(4097), d=64, causal=True),
        dict(name="lse d128 n2000", b=2, hq=4, hkv=4, nq=s(2000), nk=s(2000), d=128, lse=True),
        dict(name="lse d256 n1500", b=1, hq=4, hkv=4, nq=s(1500), nk=s(1500), d=256, lse=True),
        dict(name="lse d64 n1500", b=1, hq=6, hkv=6, nq=s(1500), nk=s(1500), d=64, lse=True),
        dict(name="fp16 d128 n3000", b=1, hq=4, hkv=4, nq=s(3000), nk=s(3000), d=128, fp16=True),
        dict(name="pv fp16 d128 n3000", b=1, hq=4, hkv=4, nq=s(3000), nk=s(3000), d=128, pv="fp16+fp32"),
        dict(name="pv fp16 d64 n3000", b=1, hq=4, hkv=4, nq=s(3000), nk=s(3000), d=64, pv="fp16+fp32"),
        dict(name="nan and inf d128 n1000", b=2, hq=4, hkv=4, nq=s(1000), nk=s(1000), d=128, nonfinite=True),
        dict(name="sharp d128 n1000", b=1, hq=4, hkv=4, nq=s(1000), nk=s(1000), d=128, sharp=True),
        dict(name="mask d128 n1000", b=1, hq=4, hkv=4, nq=s(1000), nk=s(1000), d=128, mask=True),
        dict(name="NHD d128 n1000", b=1, hq=4, hkv=4, nq=s(1000), nk=s(1000), d=128, nhd=True),
        dict(name="d100 n1000 (rows unstaged)", b=1, hq=4, hkv=4, nq=s(1000), nk=s(1000), d=100),
        dict(name="d36 n999 causal (rows unstaged)", b=1, hq=4, hkv=4, nq=s(999), nk=s(999), d=36, causal=True),
        dict(name="varlen d128", b=3, hq=4, hkv=4, d=128, varlen=[1, s(700), s(2050)]),
        dict(name="varlen d64 causal gqa", b=3, hq=4, hkv=2, d=64, varlen=[s(65), 1, s(3000)], causal=True),
    ]
    return P


def worker(device, scale_down):
    import torch
    import sageattention as sa

    for pr in problems(scale_down):
        g = torch.Generator(device=device).manual_seed(1234)
        dt = torch.float16 if pr.get("fp16") else torch.bfloat16
        d, hq, hkv = pr["d"], pr["hq"], pr["hkv"]
        causal = pr.get("causal", False)
        kw = dict(return_lse=True) if pr.get("lse") else {}
        if pr.get("pv"):
            kw["pv_accum_dtype"] = pr["pv"]
        rand = lambda *shape: torch.randn(*shape, device=device, dtype=dt, generator=g)
        try:
            if pr.get("varlen"):
                lens = pr["varlen"]
                cu = torch.tensor([0, *itertools.accumulate(lens)], device=device, dtype=torch.int32)
                q, k, v = rand(sum(lens), hq, d), rand(sum(lens), hkv, d) + 3, rand(sum(lens), hkv, d)
                out = sa.sageattn_varlen(q, k, v, cu, cu, max(lens), max(lens), is_causal=causal)
            else:
                b, nq, nk = pr["b"], pr["nq"], pr["nk"]
                q, k, v = rand(b, hq, nq, d), rand(b, hkv, nk, d) + 4 * rand(1, hkv, 1, d), rand(b, hkv, nk, d)
                if pr.get("nonfinite"):
                    v[0, 1, min(5, nk - 1), 3] = float("nan")
                    v[1, 2, nk * 7 // 10, 0] = float("inf")
                    q[0, 0, min(17, nq - 1), 2] = float("nan")
                if pr.get("sharp"):
                    q, k = q * 30, k * 30
                if pr.get("mask"):
                    kw["attn_mask"] = torch.rand(nq, nk, device=device, generator=g) > 0.3
                layout = "HND"
                if pr.get("nhd"):
                    layout = "NHD"
                    q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                out = sa.sageattn(q, k, v, tensor_layout=layout, is_causal=causal, **kw)
            outs = out if isinstance(out, tuple) else (out,)
            digest = hashlib.sha1(b"".join(o.float().cpu().numpy().tobytes() for o in outs)).hexdigest()[:16]
            finite = all(bool(torch.isfinite(o).all()) for o in outs)
        except Exception as e:  # a build that raises differs from one that does not
            digest, finite = "raised " + repr(e)[:120], None
        emit(dict(name=pr["name"], digest=digest, finite=finite))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", action="append", default=[], metavar="NAME=PATH", help="a build (twice or more)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--scale-down", type=int, default=1, help="divide every length above 1 by this (CPU tests)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.device, a.scale_down)
        return 0
    libs = parse_libs(ap, a.lib)
    found = {}
    for who, path in libs:
        for r in run_build(who, path, __file__, ["--device", a.device, "--scale-down", str(a.scale_down)]):
            found.setdefault(r["name"], {})[who] = r
    differ = 0
    for pr in problems(a.scale_down):
        by = found.get(pr["name"], {})
        same = len(by) == len(libs) and len({r["digest"] for r in by.values()}) == 1
        differ += not same
        print(f"{pr['name']:34s} {'same' if same else 'DIFFER'}  "
              + "  ".join(f"{w}:{r['digest']}:{'finite' if r['finite'] else r['finite']}" for w, r in by.items()))
    print(f"same.py: {len(problems()) - differ} same, {differ} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
