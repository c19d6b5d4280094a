#!/usr/bin/env python3
"""Calls that run each sm_90a attention-kernel family on hostile inputs, small enough for
compute-sanitizer and large enough to pass the small-problem path (more than 1024 keys):

    compute-sanitizer --tool memcheck  --error-exitcode 9 python bench/sanitize_calls.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python bench/sanitize_calls.py
    compute-sanitizer --tool synccheck --error-exitcode 9 python bench/sanitize_calls.py

Each call prints its shape and the share of output rows that are finite (a NaN or an
infinity in K or V makes the rows that see it non-finite, by design: docs/ALGORITHM.md).
SAGEATTN_LIBRARY picks the build, as for bench/ab.py.
"""
import argparse
import sys


def call(sa, torch, b, hq, hkv, n, nk, d, causal=False, dtype=None, nonfinite=False, lse=False, fp16_pv=False,
         sharp=False):
    dtype = dtype or torch.bfloat16
    q = torch.randn(b, hq, n, d, device="cuda", dtype=dtype)
    k = torch.randn(b, hkv, nk, d, device="cuda", dtype=dtype) + 2  # a K bias: smoothing at work
    v = torch.randn(b, hkv, nk, d, device="cuda", dtype=dtype)
    if sharp:  # head 0's scores sharp enough for §5: that head goes to the mma.sync kernel
        q[:, 0] *= 40
        k[:, 0] *= 40
    if nonfinite:
        k[0, 0, 7, 3] = float("nan")
        v[0, -1, nk - 1, 0] = float("inf")
    if fp16_pv:
        out = sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="HND", is_causal=causal,
                                               pv_accum_dtype="fp32", return_lse=lse)
    else:
        out = sa.sageattn(q, k, v, tensor_layout="HND", is_causal=causal, return_lse=lse)
    torch.cuda.synchronize()
    o = out[0] if isinstance(out, tuple) else out
    finite = torch.isfinite(o).all(-1).float().mean().item()
    print(f"b{b} h{hq}/{hkv} n{n} nk{nk} d{d} causal={causal} {str(dtype).split('.')[-1]} lse={lse} "
          f"fp16_pv={fp16_pv} nonfinite={nonfinite} sharp={sharp}: finite rows {finite:.6f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: these calls are for compute-sanitizer on a GPU", file=sys.stderr)
        return 2
    import sageattention as sa

    torch.manual_seed(0)
    call(sa, torch, 1, 8, 8, 2100, 2100, 128, nonfinite=True, lse=True)  # d128, edge blocks, LSE
    call(sa, torch, 1, 8, 4, 1500, 2500, 64, causal=True, dtype=torch.float16, lse=True)  # d64, GQA, causal
    call(sa, torch, 1, 4, 4, 1300, 1300, 256)  # d256: P·V in channel halves
    call(sa, torch, 1, 8, 8, 1700, 1700, 96, causal=True)  # d96 padded to 128
    call(sa, torch, 1, 8, 8, 1500, 1500, 128, fp16_pv=True)  # FP16 P·V
    call(sa, torch, 1, 4, 4, 1200, 1200, 128, sharp=True)  # a §5 sharp head among the others
    return 0


if __name__ == "__main__":
    sys.exit(main())
