"""Attention throughput and accuracy: sageattention's kernels beside torch SDPA's
cuDNN and flash backends, measured in the same run.

TOPS = 4·b·h·len_q·len_kv·d / time (halved for causal). "ours e2e" is the whole
call (quantization included); "ours kernel" is the attention kernel alone,
from the profiler's device times. Accuracy: cosine and relative L1 of the output
against torch's float32 math SDPA on the same bf16 inputs.

    python bench/bench.py [--tokens 32768] [--heads 32] [--dims 64 128]
                          [--lens 1024 2048 4096 8192 16384 32768] [--json out.json]
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import sageattention


def timed(fn, warmup=5, iters=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def kernel_seconds(fn, iters=10):
    """Median device time per call of the attention kernel alone, and of everything we launch."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA], acc_events=True) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    attn = ours = 0.0
    for e in prof.key_averages():
        if "sageattn" not in e.key:
            continue
        total = e.device_time_total / 1e6 / iters
        ours += total
        if "attention_kernel" in e.key or "attention_wgmma_kernel" in e.key:
            attn += total
    return attn, ours


def accuracy(out, ref):
    o, r = out.float().flatten(), ref.float().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item()
    return cos, ((o - r).abs().sum() / r.abs().sum()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--pv", default="auto", choices=["auto", "fp16", "fp8"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    print(f"device: {dev}; torch {torch.__version__}; sageattention {sageattention.__version__}")
    rows = []
    header = (f"{'d':>4} {'causal':>6} {'len':>6} {'b':>3} | {'cuDNN':>7} {'flash':>7} {'ours e2e':>8} {'kernel':>7} | "
              f"{'e2e/cuDNN':>9} {'kern/cuDNN':>10} {'quant%':>6} | {'cos':>8} {'relL1':>7}")
    print(header)
    for d in args.dims:
        for causal in (False, True):
            for n in args.lens:
                b = max(1, args.tokens // n)
                q, k, v = (torch.randn(b, args.heads, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                flops = 4 * b * args.heads * n * n * d / (2 if causal else 1)

                def sdpa(backend):
                    with sdpa_kernel([backend]):
                        return timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))

                t_cudnn = sdpa(SDPBackend.CUDNN_ATTENTION)
                t_flash = sdpa(SDPBackend.FLASH_ATTENTION)
                if args.pv == "fp8":
                    call = lambda: sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout="HND", is_causal=causal)
                elif args.pv == "fp16":
                    call = lambda: sageattention.sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="HND", is_causal=causal,
                                                                               pv_accum_dtype="fp32")
                else:
                    call = lambda: sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)
                t_ours = timed(call)
                t_kernel, t_all = kernel_seconds(call)
                out = call()
                # Reference on a slice (batch 0, 2 heads, the first 1024 queries: torch's
                # top-left causal mask is then the same as the full problem's).
                rows_ref = min(n, 1024)
                with sdpa_kernel([SDPBackend.MATH]):
                    ref = F.scaled_dot_product_attention(q[:1, :2, :rows_ref].float(), k[:1, :2].float(),
                                                         v[:1, :2].float(), is_causal=causal)
                cos, rel = accuracy(out[:1, :2, :rows_ref], ref)
                row = dict(head_dim=d, causal=causal, len=n, batch=b, heads=args.heads,
                           tops_cudnn=flops / t_cudnn / 1e12, tops_flash=flops / t_flash / 1e12,
                           tops_ours=flops / t_ours / 1e12, tops_kernel=flops / t_kernel / 1e12 if t_kernel else 0.0,
                           quant_share=(t_all - t_kernel) / t_ours if t_ours else 0.0, cosine=cos, rel_l1=rel)
                rows.append(row)
                print(f"{d:>4} {str(causal):>6} {n:>6} {b:>3} | {row['tops_cudnn']:7.1f} {row['tops_flash']:7.1f} "
                      f"{row['tops_ours']:8.1f} {row['tops_kernel']:7.1f} | {row['tops_ours'] / row['tops_cudnn']:9.2f} "
                      f"{row['tops_kernel'] / row['tops_cudnn']:10.2f} {100 * row['quant_share']:6.1f} | {cos:8.5f} {rel:7.4f}", flush=True)
                del q, k, v, out
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=dev, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
