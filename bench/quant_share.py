"""End to end against kernel alone at len 1k, b 32, 32 heads, bf16, for each kernel
family an entry point reaches on this GPU:

    python bench/quant_share.py

End to end is the median of 20 calls, each timed alone between two events (so the
host's submission latency of the call is in it); the kernel and the quantization
kernels' device times come from the profiler over 5 calls. On the H100,
`pv_accum_dtype="fp16+fp32"` and the FP8 entry point's `"fp32+fp16"` run the mma.sync
kernel, `sageattn` and `pv_accum_dtype="fp32"` the sm_90a kernel.
"""

import argparse
import statistics

import torch

import sageattention as sa


def run(d, fn, kw):
    q, k, v = (torch.randn(32, 32, 1024, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def call():
        return getattr(sa, fn)(q, k, v, **kw)

    for _ in range(5):
        call()
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        call()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) * 1e3)
    e2e = statistics.median(ts)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            call()
        torch.cuda.synchronize()
    attn = quant = 0.0
    for e in prof.key_averages():
        t = e.device_time_total / 5
        if "attention" in e.key:
            attn += t
        elif t > 0:
            quant += t
    flops = 4 * 32 * 32 * 1024 * 1024 * d
    print(
        f"d{d:<4} {fn:34s} {str(kw):32s} e2e {e2e:8.1f} us  kernel {attn:8.1f} us  quant {quant:7.1f} us  "
        f"kernel/e2e {attn / e2e:.2f}  kernel TOPS {flops / attn / 1e6:6.1f}"
    )


if __name__ == "__main__":
    # No options; --help prints what it measures.
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0].rstrip(":") + ".").parse_args()
    for d in (64, 128):
        run(d, "sageattn_qk_int8_pv_fp16_cuda", dict(pv_accum_dtype="fp16+fp32"))
        run(d, "sageattn_qk_int8_pv_fp16_cuda", dict(pv_accum_dtype="fp32"))
        run(d, "sageattn_qk_int8_pv_fp8_cuda", dict(pv_accum_dtype="fp32+fp16"))
        run(d, "sageattn", {})
