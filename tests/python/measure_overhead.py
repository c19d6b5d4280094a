"""Host time of one eager call, and of one call under CUDA-graph replay.

    python tests/python/measure_overhead.py [--device cuda] [--stub-forward] [--breakdown]

At a tiny size the GPU finishes each kernel long before the host submits the
next, so wall time per call is host time. --stub-forward replaces the library's
sageattn_workspace_size and sageattn_forward with no-ops: it measures the Python
layer alone, on a build or device where the kernels cannot run. --breakdown
measures, after the real calls, where one call's host time goes: the Python
layer (the same calls with the library stubbed), sageattn_forward alone on a
problem recorded from a real call (on CUDA: validation, the memset and the
launches; on the CPU the attention itself is inside it), sageattn_check
(validation and one ctypes crossing) and a no-op ctypes call (the crossing).
"""

import argparse
import ctypes
import statistics
import time

import torch

import sageattention as sa
from sageattention import _lib, _ops, _plan


def per_call(fn, calls, sync, rounds=5):
    """Best of `rounds` runs of `calls` back-to-back calls, in us per call."""
    for _ in range(50):
        fn()
    sync()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def host_only(fn, burst=50, trials=20):
    """Median host time per call of a burst of calls submitted with the GPU idle
    (short enough that the launch queue never fills, so the host never waits)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(trials):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(burst):
            fn()
        times.append((time.perf_counter() - start) / burst)
        torch.cuda.synchronize()
    return statistics.median(times) * 1e6


def stub_library():
    """Replaces the C calls of a forward by no-ops (a plan, its size, its run, and the struct
    path's two); returns the undo."""
    names = ("workspace_size", "forward", "plan_create", "plan_workspace_size", "plan_forward", "plan_destroy")
    saved = {name: getattr(_lib, name) for name in names}

    def size(*args):  # as a real call: a workspace to allocate
        ctypes.c_size_t.from_address(args[-1]).value = 4096
        return _lib.SUCCESS

    def plan_create(problem, plan):
        ctypes.c_void_p.from_address(plan).value = 1
        return _lib.SUCCESS

    _lib.workspace_size = _lib.plan_workspace_size = size
    _lib.forward = _lib.plan_forward = lambda *a: _lib.SUCCESS
    _lib.plan_create, _lib.plan_destroy = plan_create, lambda plan: None

    def undo():
        for name, fn in saved.items():
            setattr(_lib, name, fn)
        _plan._tls.__dict__.pop("plans", None)  # the stubbed plans

    return undo


def recorded_forward(call):
    """The library's calls alone, on what one real `call` passed to it: returns two
    no-argument functions, one making its sageattn_plan_forward call again (on a plan of
    the same struct) and one its sageattn_forward call (the struct with the run's pointers),
    and the address of the struct."""
    _plan._tls.__dict__.pop("plans", None)  # the call makes its plan now
    seen = {}
    real_create, real_forward = _lib.plan_create, _lib.plan_forward

    def create(addr, plan):
        seen["problem"] = ctypes.string_at(addr, ctypes.sizeof(_lib.Problem))
        return real_create(addr, plan)

    def forward(plan, data, ws, nbytes, stream):
        seen["data"], seen["nbytes"], seen["stream"] = ctypes.string_at(data, ctypes.sizeof(_lib.Data)), nbytes, stream
        return real_forward(plan, data, ws, nbytes, stream)

    _lib.plan_create, _lib.plan_forward = create, forward
    try:
        result = call()  # keeps q, k, v (the caller's) and out alive
    finally:
        _lib.plan_create, _lib.plan_forward = real_create, real_forward
    nbytes, stream = seen["nbytes"], seen["stream"]
    problem = ctypes.create_string_buffer(seen["problem"], len(seen["problem"]))
    data = _lib.Data.from_buffer_copy(seen["data"])
    p = _lib.Problem.from_buffer(problem)
    p.q.data, p.k.data, p.v.data, p.out.data = data.q, data.k, data.v, data.out
    p.mask.data, p.lse, p.cu_seqlens_q, p.cu_seqlens_kv = data.mask, data.lse, data.cu_seqlens_q, data.cu_seqlens_kv
    handle = ctypes.c_void_p()
    if real_create(ctypes.addressof(problem), ctypes.addressof(handle)) != _lib.SUCCESS:
        raise _lib.error_for(_lib.ERROR_INTERNAL, "a plan of the recorded struct")
    device = result.device
    ws = torch.empty(nbytes + 256, dtype=torch.uint8, device=device)
    ws_ptr = ws.data_ptr() + (-ws.data_ptr() % 256) if nbytes else None
    addr, data_addr = ctypes.addressof(problem), ctypes.addressof(data)
    keep = (problem, data, ws, result)

    def plan_again():
        keep  # noqa: B018 (the buffers must outlive every call)
        return real_forward(handle.value, data_addr, ws_ptr, nbytes, stream)

    def forward_again():
        keep  # noqa: B018
        return _lib.forward(addr, ws_ptr, nbytes, stream)

    for again in (plan_again, forward_again):
        status = again()
        if status != _lib.SUCCESS:
            raise _lib.error_for(status, "recorded call")
    return plan_again, forward_again, addr


def graphs(cases, repeats=100):
    """One CUDA graph per case, capturing `repeats` calls."""
    out = {}
    for name, fn in cases.items():
        side = torch.cuda.Stream()  # warm-up on a side stream, as torch's docs ask before a capture
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeats):
                fn()
        out[name] = graph
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--stub-forward", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    if args.stub_forward:
        stub_library()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    q, k, v = (torch.randn(1, 1, 64, 64, dtype=torch.float16, device=device) for _ in range(3))
    mask = torch.ones(64, 64, dtype=torch.bool, device=device).tril()
    ours = {
        "sageattn": lambda: sa.sageattn(q, k, v),
        "sageattn causal NHD": lambda: sa.sageattn(q, k, v, tensor_layout="NHD", is_causal=True),
        "sageattn_qk_int8_pv_fp8_cuda": lambda: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v),
        "sdpa": lambda: sa.sdpa(q, k, v),
        "sdpa with mask": lambda: sa.sdpa(q, k, v, attn_mask=mask),
    }
    scale = {
        "torch sdpa (for scale)": lambda: _ops.torch_sdpa(q, k, v),
        "torch.add (for scale)": lambda: torch.add(q, k),
    }
    print(
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, "
        f"torch {torch.__version__}, library {sa.__version__} ({_lib.library_path}), stub_forward={args.stub_forward}"
    )
    for name, fn in {**ours, **scale}.items():
        print(f"eager  {name:32s} {per_call(fn, args.calls, sync):7.2f} us/call")

    if cuda and not args.stub_forward:
        replayed = {
            "sageattn": ours["sageattn"],
            "sdpa": ours["sdpa"],
            "torch sdpa": scale["torch sdpa (for scale)"],
        }
        repeats = 100
        captured = graphs(replayed, repeats)
        for name, graph in captured.items():
            us = per_call(graph.replay, max(1, args.calls // repeats), sync) / repeats
            print(f"graph  {name:32s} {us:7.2f} us/call (kernel time included)")
        for name, fn in {**replayed, "torch.add": scale["torch.add (for scale)"]}.items():
            print(f"host   {name + ', eager':32s} {host_only(fn):7.2f} us/call (submission only)")
        for name, graph in captured.items():
            us = host_only(graph.replay, burst=5) / repeats
            print(f"host   {name + ', graph replay':32s} {us:7.2f} us/call (one replay of {repeats} calls)")

    if args.breakdown and not args.stub_forward:
        time_of = host_only if cuda else (lambda fn: per_call(fn, args.calls, sync))
        how = "submission only" if cuda else "wall"
        plan_forward, forward, problem_addr = recorded_forward(ours["sageattn"])
        undo = stub_library()
        try:
            for name in ("sageattn", "sdpa"):
                print(f"split  {name + ': Python layer':32s} {time_of(ours[name]):7.2f} us/call ({how}, library stubbed)")
        finally:
            undo()
        computes = "" if cuda else " (computes)"
        print(f"split  {'sageattn_plan_forward alone' + computes:32s} {time_of(plan_forward):7.2f} us/call ({how})")
        print(f"split  {'sageattn_forward alone' + computes:32s} {time_of(forward):7.2f} us/call ({how})")
        print(f"split  {'sageattn_check (validation)':32s} {per_call(lambda: _lib.check(problem_addr), args.calls, sync):7.2f} us/call (ctypes crossing included)")
        print(f"split  {'no-op ctypes call':32s} {per_call(_lib._abi_version, args.calls, sync):7.2f} us/call")


if __name__ == "__main__":
    main()
