"""Host time of one eager call, and of one call under CUDA-graph replay.

    python tests/python/measure_overhead.py [--device cuda] [--stub-forward]

At a tiny size the GPU finishes each kernel long before the host submits the
next, so wall time per call is host time. --stub-forward replaces the library's
sageattn_workspace_size and sageattn_forward with no-ops: it measures the Python layer alone, on a build
or device where the kernels cannot run.
"""

import argparse
import ctypes
import time

import torch

import sageattention as sa
from sageattention import _lib


def per_call(fn, calls, sync):
    for _ in range(50):
        fn()
    sync()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stub-forward", action="store_true")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    if args.stub_forward:
        def workspace_size(problem, size):  # as a real call: a workspace to allocate
            ctypes.c_size_t.from_address(size).value = 4096
            return _lib.SUCCESS

        _lib.workspace_size = workspace_size
        _lib.forward = lambda *a: _lib.SUCCESS
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    q, k, v = (torch.randn(1, 1, 64, 64, dtype=torch.float16, device=device) for _ in range(3))
    mask = torch.ones(64, 64, dtype=torch.bool, device=device).tril()
    cases = {
        "sageattn": lambda: sa.sageattn(q, k, v),
        "sageattn causal NHD": lambda: sa.sageattn(q, k, v, tensor_layout="NHD", is_causal=True),
        "sageattn_qk_int8_pv_fp8_cuda": lambda: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v),
        "sdpa": lambda: sa.sdpa(q, k, v),
        "sdpa with mask": lambda: sa.sdpa(q, k, v, attn_mask=mask),
        "torch sdpa (for scale)": lambda: sa._ops.torch_sdpa(q, k, v),
        "torch.add (for scale)": lambda: torch.add(q, k),
    }
    print(f"device {device}, torch {torch.__version__}, library {sa.__version__}, stub_forward={args.stub_forward}")
    for name, fn in cases.items():
        print(f"eager  {name:32s} {per_call(fn, args.calls, sync):7.2f} us/call")
    if device.type == "cuda" and not args.stub_forward:
        repeats = 100
        sa.sageattn(q, k, v)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                sa.sageattn(q, k, v)
        us = per_call(graph.replay, max(1, args.calls // repeats), sync) / repeats
        print(f"graph  {'sageattn':32s} {us:7.2f} us/call (kernel time included)")
        # Host time alone: submit a burst short enough that the launch queue never
        # fills (the host never waits for the GPU), time the submission, then sync.
        print(f"host   {'sageattn, eager':32s} {host_only(lambda: sa.sageattn(q, k, v)):7.2f} us/call (submission only)")
        print(f"host   {'sdpa, eager':32s} {host_only(lambda: sa.sdpa(q, k, v)):7.2f} us/call (submission only)")
        print(f"host   {'torch sdpa, eager':32s} {host_only(lambda: sa._ops.torch_sdpa(q, k, v)):7.2f} us/call (submission only)")
        replay_us = host_only(graph.replay, burst=5) / repeats
        print(f"host   {'sageattn, graph replay':32s} {replay_us:7.2f} us/call (one replay of {repeats} calls)")


def host_only(fn, burst=50, trials=20):
    """Median host time per call of a burst of calls submitted with the GPU idle."""
    times = []
    for _ in range(trials):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(burst):
            fn()
        times.append((time.perf_counter() - start) / burst)
        torch.cuda.synchronize()
    times.sort()
    return times[len(times) // 2] * 1e6


if __name__ == "__main__":
    main()
