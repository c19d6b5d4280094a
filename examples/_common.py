"""What the examples share: options, timing a model with each of torch's SDPA
backends and with sageattention.patch_sdpa(), and comparing the outputs.

A model run with patch_sdpa() is only measured when its attention calls
really ran on sageattention: every patched run is counted
(sageattention.count_calls) and a run where everything fell back to torch
says so loudly and exits with status 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

import sageattention
from sageattention.bench import TORCH_BACKENDS, error_stats, timed, torch_backend

# Exit status of a run where no attention call ran on sageattention.
ALL_FELL_BACK = 3



def add_common_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--layers", type=int, default=None, help="transformer blocks (default: the example's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=None, help="untimed forwards per variant (default 2; tiny 0)")
    ap.add_argument("--iters", type=int, default=None, help="timed forwards per variant (default 5; tiny 1)")
    ap.add_argument("--backends", nargs="+", default=None, choices=["default"] + sorted(TORCH_BACKENDS),
                    help="torch SDPA backends to time; the fastest is the baseline "
                         "(default: default cudnn flash on CUDA, default on the CPU)")
    ap.add_argument("--no-attention-share", action="store_true",
                    help="skip the run with attention replaced by an identity (the Amdahl bound)")
    ap.add_argument("--json", default=None, help="write every number to this file")
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU, seconds (for tests)")


def resolve_common(args) -> None:
    """Fills the defaults that depend on --tiny and the device."""
    if args.device is None:
        args.device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    args.torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 2
    if args.iters is None:
        args.iters = 1 if args.tiny else 5
    if args.backends is None:
        args.backends = ["default", "cudnn", "flash"] if torch.device(args.device).type == "cuda" else ["default"]


def init_random_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random weights of a realistic scale: every Linear and Conv weight
    N(0, 1/fan_in) (each layer keeps its input's scale), biases 0; norms as
    built (weight 1). Real checkpoints are not random: their attention is
    sharper and more structured, which these weights do not reproduce."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                fan_in = m.weight[0].numel()
                w = torch.randn(m.weight.shape, generator=generator, device=generator.device)
                m.weight.copy_(w / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.zero_()


def cast_like_pipelines_(model: torch.nn.Module, dtype) -> None:
    """Casts to `dtype` except what the model asks to keep in float32
    (diffusers' _keep_in_fp32_modules, as from_pretrained(torch_dtype=...)
    does it); eval mode."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point():
                t.data = t.data.to(torch.float32 if any(k in name.split(".") for k in keep) else dtype)
    model.eval().requires_grad_(False)


def seeded_generator(device, seed) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _identity_attention(query, key, value, *args, **kwargs):
    return query  # the output's shape; no attention work at all


@contextlib.contextmanager
def no_attention():
    previous = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _identity_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = previous


def _as_dict(outputs):
    return outputs if isinstance(outputs, dict) else {"output": outputs}


def compare_model(step, outputs, args, peaks=None, log=print) -> dict:
    """Times `step()` (one forward) with each torch backend, with
    sageattention.patch_sdpa() and (for the Amdahl bound) with no attention
    at all; compares `outputs(detail)` (a tensor or a dict name -> tensor) of
    each run with torch's first working backend (PSNR peak: `peaks[name]`, by
    default the reference's max |value|). `detail` is True for that reference
    and for sageattention, False for torch's other backends (the noise floor
    needs no costly extras). Returns every number."""
    peaks = peaks or {}
    device = args.device
    result = {"torch": {}, "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU",
              "torch_version": torch.__version__, "sageattention": sageattention.__version__}
    reference = None
    for name in args.backends:
        try:
            with torch.no_grad(), torch_backend(name):
                seconds = timed(step, device, args.warmup, args.iters)
                out = _as_dict(outputs(reference is None))
        except RuntimeError as e:  # this backend cannot run some call of the model
            log(f"torch {name:<9}: unavailable here ({str(e).splitlines()[0][:120]})")
            result["torch"][name] = {"error": str(e).splitlines()[0][:300]}
            continue
        entry = {"seconds": seconds}
        if reference is None:
            reference, result["reference"] = out, f"torch {name}"
        else:
            entry["vs_reference"] = {k: error_stats(out[k], reference[k], peaks.get(k)) for k in out}
        result["torch"][name] = entry
        log(f"torch {name:<9}: {1e3 * seconds:9.2f} ms per forward")
        del out
    timings = {n: e["seconds"] for n, e in result["torch"].items() if "seconds" in e}
    if not timings:
        raise SystemExit("no torch SDPA backend could run this model; nothing to compare against")
    best_name = min(timings, key=timings.get)
    best = timings[best_name]

    with torch.no_grad(), sageattention.patched_sdpa():
        with sageattention.count_calls() as counts:  # one forward, counted
            step()
        ours_seconds = timed(step, device, args.warmup, args.iters)
        ours_out = _as_dict(outputs(True))
    result["sageattention"] = {
        "seconds": ours_seconds,
        "speedup_vs_best_torch": best / ours_seconds,
        "best_torch": best_name,
        "calls": counts.as_dict(),
        "vs_reference": {k: error_stats(ours_out[k], reference[k], peaks.get(k)) for k in ours_out},
    }
    log(f"sageattention  : {1e3 * ours_seconds:9.2f} ms per forward")
    del ours_out

    if not args.no_attention_share:
        with torch.no_grad(), no_attention():
            bare = timed(step, device, args.warmup, args.iters)
        share = max(0.0, 1.0 - bare / best)
        result["no_attention"] = {"seconds": bare, "attention_share_of_best": share, "max_speedup": best / bare}
        log(f"no attention   : {1e3 * bare:9.2f} ms per forward (attention is {100 * share:.0f}% of the best "
            f"torch forward; infinitely fast attention would give {best / bare:.2f}x)")

    log("")
    log(f"attention calls in one forward: {counts}")
    result["all_fell_back"] = counts.library == 0
    if counts.library == 0:
        banner = ("!" * 78 + "\n!! EVERY ATTENTION CALL FELL BACK TO TORCH'S SDPA: the 'sageattention' timing and\n"
                  "!! accuracy below are torch's own, not sageattention's. Reasons: " + str(counts.torch or "none seen")
                  + "\n" + "!" * 78)
        log(banner)
        print(banner, file=sys.stderr)
    log(f"speedup of the model forward against the fastest torch backend ({best_name}): "
        f"{best / ours_seconds:.2f}x")
    log(f"outputs against {result['reference']}:")
    rows = [("sageattention", result["sageattention"]["vs_reference"])]
    rows += [(f"torch {n}", e["vs_reference"]) for n, e in result["torch"].items() if "vs_reference" in e]
    for label, stats in rows:
        for key, s in stats.items():
            log(f"  {label:<14} {key:<28} cosine {s['cosine']:.6f}  rel. L1 {s['rel_l1']:.5f}  "
                f"PSNR {s['psnr_db']:6.1f} dB  max |err| {s['max_abs']:.4g}")
    return result


def finish(result, args) -> int:
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)
    return ALL_FELL_BACK if result.get("all_fell_back") else 0


def describe(args, text, log=print) -> None:
    log(f"device {args.device}, {args.dtype}; torch {torch.__version__}; sageattention {sageattention.__version__} "
        f"({', '.join(sageattention.build_info().get('kernel_families', []))}, {sageattention.library_path})")
    log(text)
    if args.tiny:
        log("weights: RANDOM, toy sizes (--tiny): a check that the example runs, not a measurement")
    else:
        log("weights: RANDOM (no checkpoint is downloaded), at the architecture's real layer sizes: the timings "
            "are the real model's; the accuracy is indicative (trained attention is sharper than random)")
