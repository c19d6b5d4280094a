"""diffusers' attention backend "sage" against "native", same run: the forward
of a Wan 2.1 1.3B-sized and a Flux.1-sized transformer, speed ratio and output
cosine (the numbers of docs/CLIENTS.md).

    python examples/clients_speed.py                      # both models at real sizes (a GPU; a few minutes)
    python examples/clients_speed.py --quick              # fewer layers and timed forwards (about a minute)
    python examples/clients_speed.py --models flux --json flux.json
    python examples/clients_speed.py --sage-backends sage _sage_qk_int8_pv_fp8_cuda_sm90
    python examples/clients_speed.py --tiny               # toy sizes on the CPU, seconds (tests)

This is diffusers as its users run it: the model's attention processors call
diffusers' dispatcher, and `model.set_attention_backend("sage")` makes it call
`sageattention.sageattn` (backend "native": torch's SDPA). So sageattention
must be installed as a package (`pip install --no-deps sageattention-...whl`):
diffusers enables its sage backends only for an installed distribution of
version >= 2.1.1, and the run stops, saying so, where it would not.

The models are built from diffusers' own classes and configs with random
weights (nothing is downloaded; the machine may have no network): real layer
sizes, so the timings are the real models'; the accuracy is indicative (a
trained model's attention is sharper than a random one's).

- Wan 2.1 T2V 1.3B (WanTransformer3DModel: 30 blocks, 12 heads x 128), a video
  of 81 frames at 480x832: 32760 video tokens, 512 text tokens.
- Flux.1 [dev] (FluxTransformer2DModel: 19 double + 38 single blocks, 24 heads
  x 128, guidance embedding), a 1024x1024 image: 4096 image tokens, 512 text.

Each backend is timed in rounds that alternate the backends (median of
--iters forwards after --warmup, per round; the median over rounds is
reported), one sage forward is counted (sageattention.count_calls: every
attention call must have run on sageattention, or the run says so loudly and
exits with status 3), and the sage output is compared with the native one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

import sageattention

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import wan_transformer  # noqa: E402

# Exit status of a run where an attention call did not run on sageattention.
NOT_ALL_OURS = 3

WAN_TINY = wan_transformer.CONFIGS["tiny"]
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
FLUX_TINY = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
                 axes_dims_rope=(4, 6, 6))
# --quick keeps the token counts (attention's share of a forward depends on them) and cuts the blocks.
QUICK_LAYERS = {"wan": dict(num_layers=8), "flux": dict(num_layers=4, num_single_layers=8)}
MODELS = ("wan", "flux")
LABELS = {"wan": "Wan 2.1 1.3B-sized", "flux": "Flux.1-sized"}


def import_diffusers():
    try:
        import diffusers
        from diffusers.models import attention_dispatch
    except ImportError as e:
        raise SystemExit(f"this script needs diffusers 0.35 or newer (pip install diffusers): {e}")
    if not hasattr(diffusers.ModelMixin, "set_attention_backend"):
        raise SystemExit(f"diffusers {diffusers.__version__} has no attention backends: this needs 0.35 or newer")
    return diffusers, attention_dispatch


def check_gate(dispatch) -> None:
    """diffusers' own condition for its sage backends, with what to do when it fails."""
    from diffusers.utils import import_utils

    if dispatch._CAN_USE_SAGE_ATTN:
        return
    import sageattention

    if not import_utils.is_sageattention_available():
        why = ("diffusers finds no installed sageattention distribution (a source checkout on PYTHONPATH has no "
               "metadata): install the wheel, pip install --no-deps sageattention-<version>+cu13-...whl")
    else:
        why = (f"diffusers sees sageattention {import_utils._sageattention_version} and needs >= "
               f"{dispatch._REQUIRED_SAGE_VERSION}: install this package's wheel (its version is "
               f"{sageattention.__version__})")
    raise SystemExit(f"diffusers will not use sageattention: {why}")


def _build_module(cls, config, args, build_dtype):
    """The model in args.torch_dtype on args.device, random weights
    (examples/_common.py), built in build_dtype: float32 where the model keeps
    modules in float32 (as from_pretrained(torch_dtype=...) leaves them),
    args.torch_dtype for Flux, whose 12B weights need no float32 copy."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(build_dtype)
    try:
        with torch.device(args.device):
            model = cls(**config)
    finally:
        torch.set_default_dtype(previous)
    _common.init_random_(model, _common.seeded_generator(args.device, args.seed))
    _common.cast_like_pipelines_(model, args.torch_dtype)
    return model


def build_wan(args):
    from diffusers import WanTransformer3DModel

    cfg = dict(WAN_TINY if args.tiny else wan_transformer.CONFIGS["1.3b"])
    cfg.update(args.layer_override.get("wan", {}))
    frames, height, width = (5, 64, 64) if args.tiny else (81, 480, 832)
    text = 8 if args.tiny else wan_transformer.TEXT_TOKENS
    model = _build_module(WanTransformer3DModel, cfg, args, torch.float32)
    latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    tokens = latent[2] * (latent[3] // 2) * (latent[4] // 2)
    gen = _common.seeded_generator(args.device, args.seed + 1)
    inputs = dict(
        hidden_states=torch.randn(latent, generator=gen, device=args.device).to(args.torch_dtype),
        encoder_hidden_states=torch.randn(1, text, model.config.text_dim, generator=gen, device=args.device).to(
            args.torch_dtype),
        timestep=torch.tensor([500], device=args.device),
        return_dict=False,
    )
    what = (f"Wan 2.1 1.3B-sized transformer: {cfg['num_layers']} blocks, {cfg['num_attention_heads']} heads x "
            f"{cfg['attention_head_dim']}; {frames} frames {height}x{width}: {tokens} video tokens, {text} text tokens")
    return model, inputs, dict(tokens=tokens, text_tokens=text, config=cfg, description=what)


def _flux_ids(rows, cols, device):
    """Flux's positions: (0, row, column) per image token; text tokens are all 0."""
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    return torch.stack([torch.zeros_like(r), r, c], dim=1).float()


def build_flux(args):
    from diffusers import FluxTransformer2DModel

    cfg = dict(FLUX_TINY if args.tiny else FLUX_DEV)
    cfg.update(args.layer_override.get("flux", {}))
    size, text = (64, 8) if args.tiny else (1024, 512)
    rows = cols = size // 16  # VAE /8, then 2x2 patches packed into tokens
    model = _build_module(FluxTransformer2DModel, cfg, args, args.torch_dtype)
    gen = _common.seeded_generator(args.device, args.seed + 1)
    dtype, device = args.torch_dtype, args.device
    inputs = dict(
        hidden_states=torch.randn(1, rows * cols, cfg["in_channels"], generator=gen, device=device).to(dtype),
        encoder_hidden_states=torch.randn(1, text, cfg["joint_attention_dim"], generator=gen, device=device).to(dtype),
        pooled_projections=torch.randn(1, cfg["pooled_projection_dim"], generator=gen, device=device).to(dtype),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),
        img_ids=_flux_ids(rows, cols, device),
        txt_ids=torch.zeros(text, 3, device=device),
        return_dict=False,
    )
    if cfg["guidance_embeds"]:
        inputs["guidance"] = torch.tensor([3.5], device=device, dtype=dtype)
    what = (f"Flux.1-sized transformer: {cfg['num_layers']} double + {cfg['num_single_layers']} single blocks, "
            f"{cfg['num_attention_heads']} heads x {cfg['attention_head_dim']}; a {size}x{size} image: "
            f"{rows * cols} image tokens, {text} text tokens")
    return model, inputs, dict(tokens=rows * cols, text_tokens=text, config=cfg, description=what)


BUILDERS = {"wan": build_wan, "flux": build_flux}


def use_backend(model, backend: str) -> None:
    """model.set_attention_backend(backend), without diffusers' warning that
    backends are experimental on every switch after the first."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    if getattr(model, "_backend_switched", False):
        logging.set_verbosity_error()
    try:
        model.set_attention_backend(backend)
    finally:
        logging.set_verbosity(level)
    model._backend_switched = True


def measure(name, args, log=print) -> dict:
    """One model: every backend timed in alternating rounds, the sage outputs
    compared with native's, one sage forward counted."""
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(args.device)
    model, inputs, info = BUILDERS[name](args)
    log(info["description"])
    backends = ["native"] + list(args.sage_backends)

    def forward():
        return model(**inputs)[0]

    outputs, counts = {}, {}
    with torch.no_grad():
        for backend in backends:  # a first forward of each: its output, its calls
            use_backend(model, backend)
            if backend == "native":
                outputs[backend] = forward()
                continue
            with sageattention.count_calls() as c:
                outputs[backend] = forward()
            counts[backend] = c
        seconds = {b: [] for b in backends}
        for r in range(args.rounds):
            for backend in backends if r % 2 == 0 else backends[::-1]:
                use_backend(model, backend)
                seconds[backend].append(_common.timed(forward, args.device, args.warmup, args.iters))
    use_backend(model, "native")
    result = dict(info, model=name, backends={})
    native = statistics.median(seconds["native"])
    for backend in backends:
        t = statistics.median(seconds[backend])
        entry = dict(seconds=t, rounds=seconds[backend])
        if backend != "native":
            entry["speedup_vs_native"] = native / t
            entry["vs_native"] = _common.error_stats(outputs[backend], outputs["native"])
            entry["calls"] = counts[backend].as_dict()
        result["backends"][backend] = entry
        line = f"  {backend:<32} {1e3 * t:10.2f} ms per forward"
        if backend != "native":
            s = entry["vs_native"]
            line += (f"  {native / t:5.2f}x native   output vs native: cosine {s['cosine']:.6f}, "
                     f"rel. L1 {s['rel_l1']:.4f}; {counts[backend]}")
        log(line)
    if args.device.startswith("cuda"):
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(args.device) / 2**30
    del model, inputs, outputs
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def markdown_rows(results) -> list[str]:
    """Rows of docs/CLIENTS.md's table."""
    rows = []
    for r in results:
        for backend, e in r["backends"].items():
            if backend == "native":
                continue
            rows.append(
                f"| {LABELS[r['model']]} ({r['tokens']} + {r['text_tokens']} text tokens) | `{backend}` | "
                f"{1e3 * r['backends']['native']['seconds']:.1f} | {1e3 * e['seconds']:.1f} | "
                f"{e['speedup_vs_native']:.2f}x | {e['vs_native']['cosine']:.5f} |"
            )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="default: wan flux")
    ap.add_argument("--sage-backends", nargs="+", default=["sage"],
                    help="diffusers backends to time against native (default: sage; others: sage_varlen, "
                         "_sage_qk_int8_pv_fp8_cuda, _sage_qk_int8_pv_fp8_cuda_sm90, _sage_qk_int8_pv_fp16_cuda, "
                         "_sage_qk_int8_pv_fp16_triton)")
    ap.add_argument("--quick", action="store_true",
                    help="real token counts, fewer blocks (Wan 8, Flux 4+8), 1 round of 3 forwards")
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU, seconds (for tests)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; --tiny: cpu)")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    ap.add_argument("--warmup", type=int, default=None, help="untimed forwards per round (default 2; quick 1)")
    ap.add_argument("--iters", type=int, default=None, help="timed forwards per round (default 5; quick 3)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds alternating the backends (default 3; quick 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write every number to this file")
    args = ap.parse_args(argv)

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    if args.device == "cpu" and not args.tiny:
        raise SystemExit("real model sizes need a GPU; use --tiny on the CPU")
    quick = args.quick or args.tiny
    args.warmup = (1 if quick else 2) if args.warmup is None else args.warmup
    args.iters = (3 if args.quick else 1 if args.tiny else 5) if args.iters is None else args.iters
    args.rounds = (1 if quick else 3) if args.rounds is None else args.rounds
    args.torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    args.layer_override = QUICK_LAYERS if args.quick and not args.tiny else {}

    diffusers, dispatch = import_diffusers()
    check_gate(dispatch)
    unknown = [b for b in args.sage_backends if b not in {n.value for n in dispatch.AttentionBackendName}]
    if unknown:
        raise SystemExit(f"diffusers {diffusers.__version__} has no attention backend {', '.join(unknown)}")
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    info = sageattention.build_info()
    print(f"{device_name}; torch {torch.__version__}; diffusers {diffusers.__version__}; sageattention "
          f"{sageattention.__version__} ({', '.join(info.get('kernel_families', []))}); {args.dtype}; "
          f"median of {args.iters} forwards after {args.warmup}, {args.rounds} round(s)")
    print("weights: RANDOM (nothing downloaded), " + ("toy sizes (--tiny): a check that it runs, not a measurement"
          if args.tiny else "real layer sizes" + (" (--quick: fewer blocks)" if args.quick else "")), flush=True)
    started = time.time()
    results = []
    for name in args.models:
        results.append(measure(name, args, log=lambda s: print(s, flush=True)))
    report = dict(device=device_name, torch=torch.__version__, diffusers=diffusers.__version__,
                  sageattention=sageattention.__version__, dtype=args.dtype, quick=args.quick, tiny=args.tiny,
                  warmup=args.warmup, iters=args.iters, rounds=args.rounds, seconds_total=time.time() - started,
                  date=time.strftime("%Y-%m-%d"), models=results)
    print(f"\n{device_name}, diffusers {diffusers.__version__}, {args.dtype}" + (", --quick" if args.quick else "")
          + (", --tiny" if args.tiny else ""))
    print("| model (tokens) | backend | native ms | sage ms | speed | output cosine |\n|---|---|---|---|---|---|")
    print("\n".join(markdown_rows(results)))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    bad = [(r["model"], b, e["calls"]) for r in results for b, e in r["backends"].items()
           if "calls" in e and (e["calls"]["library"] == 0 or e["calls"]["torch"])]
    if bad:
        for model, backend, calls in bad:
            print(f"!! {model} with backend {backend}: not every attention call ran on sageattention: {calls}",
                  file=sys.stderr)
        return NOT_ALL_OURS
    return 0


if __name__ == "__main__":
    sys.exit(main())
