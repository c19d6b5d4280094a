"""Per-layer attention accuracy on the example models' own activations.

    python examples/layer_accuracy.py wan   [wan_transformer.py's model options] [--rows 256] [--json FILE]
    python examples/layer_accuracy.py llama [llama_prefill.py's model options]   [--rows 256] [--json FILE]
    python examples/layer_accuracy.py wan --tiny

One forward of the model runs with torch's SDPA; every attention call's q, k,
v (with its mask, causal flag, scale and GQA) is caught on the way, and
there the call is also run with sageattention and judged, with torch's own
output, against float64 attention on a sample of query rows (all keys). So
the inputs are the model's real activations at that layer — of a model with
RANDOM weights (no checkpoint is downloaded), whose attention is flatter than
a trained model's; --qk-gain (Wan) sharpens it.

Modes: "sdpa" is exactly what patch_sdpa() runs (the library's choice of P·V
path, or torch where sdpa falls back; the table says which); "fp16" and "fp8"
force the P·V path through sageattn_qk_int8_pv_fp16_cuda / _fp8_cuda.
The table lists the calls worst first (by the first mode's cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import llama_prefill  # noqa: E402
import wan_transformer  # noqa: E402

import sageattention  # noqa: E402
from sageattention._ops import torch_sdpa  # noqa: E402
from sageattention.bench import error_stats, exact_rows  # noqa: E402

MODELS = {"wan": wan_transformer, "llama": llama_prefill}
MODES = ("sdpa", "fp16", "fp8")


def _forced(mode, q, k, v, attn_mask, is_causal, scale):
    """sageattn with a forced P·V path, on torch SDPA's semantics; None where
    those differ from the reference API's (top-left causal with len_q != len_kv)."""
    if q.dim() != 4 or (is_causal and q.size(-2) != k.size(-2)):
        return None
    kwargs = dict(tensor_layout="HND", is_causal=is_causal, sm_scale=scale, attn_mask=attn_mask)
    if mode == "fp16":
        return sageattention.sageattn_qk_int8_pv_fp16_cuda(q, k, v, pv_accum_dtype="fp32", **kwargs)
    return sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, **kwargs)


def _per_head_cosine(out, ref):
    o, r = out.double().flatten(-2), ref.double().flatten(-2)  # [..., heads, rows*dim]
    return F.cosine_similarity(o, r, dim=-1)


class Recorder:
    """Stands in for F.scaled_dot_product_attention during one forward: returns
    torch's output, and judges each mode's output on the same call."""

    def __init__(self, rows, modes):
        self.rows, self.modes = rows, modes
        self.layer = "?"
        self.records = []

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False):
        extra = {"enable_gqa": True} if enable_gqa else {}
        out = torch_sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                         scale=scale, **extra)
        len_q = query.size(-2)
        sel = torch.linspace(0, len_q - 1, min(self.rows, len_q), device=query.device).round().long().unique()
        ref = exact_rows(query, key, value, sel, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                         enable_gqa=enable_gqa)
        rec = dict(
            index=len(self.records), layer=self.layer,
            shape=dict(batch=query.shape[:-3].numel(), heads_q=query.size(-3) if query.dim() > 2 else 1,
                       heads_kv=key.size(-3) if key.dim() > 2 else 1, len_q=len_q, len_kv=key.size(-2),
                       head_dim=query.size(-1)),
            causal=bool(is_causal), mask=None if attn_mask is None else str(attn_mask.dtype).replace("torch.", ""),
            rows=int(sel.numel()), torch=error_stats(out[..., sel, :], ref), modes={},
        )
        for mode in self.modes:
            if mode == "sdpa":
                with sageattention.count_calls() as counts:
                    ours = sageattention.sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
                ran = "sageattention" if counts.library else f"torch ({', '.join(counts.torch)})"
            else:
                ours = _forced(mode, query, key, value, attn_mask, is_causal, scale)
                if ours is None:
                    continue
                ran = "sageattention"
            picked = ours[..., sel, :]
            stats = error_stats(picked, ref)
            stats["worst_head_cosine"] = _per_head_cosine(picked, ref).min().item()
            stats["ran_on"] = ran
            rec["modes"][mode] = stats
        self.records.append(rec)
        return out


def _name_attention_modules(model, recorder):
    """Each module whose class name ends in "Attention" names the calls made inside it."""
    for name, module in model.named_modules():
        if type(module).__name__.endswith("Attention"):
            module.register_forward_pre_hook(lambda m, a, name=name: setattr(recorder, "layer", name))


def table(records, modes, top=None) -> str:
    head = ["layer", "Lq×Lkv", "heads q/kv", "mask"]
    for m in modes:
        head += [f"{m} cos", f"{m} rel. L1", f"{m} worst head"]
    head += ["torch bf16 cos", "torch bf16 rel. L1", "ran on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records[:top]:
        s = r["shape"]
        cells = [r["layer"], f"{s['len_q']}×{s['len_kv']}", f"{s['heads_q']}/{s['heads_kv']}",
                 "causal" if r["causal"] else (r["mask"] or "–")]
        for m in modes:
            st = r["modes"].get(m)
            if st:
                cells += [f"{st['cosine']:.6f}", f"{st['rel_l1']:.4f}", f"{st['worst_head_cosine']:.6f}"]
            else:
                cells += ["–"] * 3
        first = r["modes"].get(modes[0], {})
        cells += [f"{r['torch']['cosine']:.6f}", f"{r['torch']['rel_l1']:.4f}", first.get("ran_on", "–")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="model", required=True)
    for name, module in MODELS.items():
        p = sub.add_parser(name, help=f"the model of examples/{module.__name__}.py")
        _common.add_common_args(p)
        module.add_model_args(p)
        p.add_argument("--rows", type=int, default=256, help="query rows judged per call (all keys each)")
        p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
        p.add_argument("--top", type=int, default=None, help="rows of the printed table (default: every call)")
    args = ap.parse_args(argv)
    module = MODELS[args.model]
    module.resolve(args)
    _common.describe(args, f"per-call attention accuracy of the {args.model} example model against float64 "
                           f"({args.rows} query rows per call, all keys)")
    model, inputs = module.build(args)
    recorder = Recorder(args.rows, args.modes)
    _name_attention_modules(model, recorder)
    previous = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = recorder
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        F.scaled_dot_product_attention = previous
    records = recorder.records
    if not records:
        raise SystemExit("the model made no call to torch.nn.functional.scaled_dot_product_attention")
    key = args.modes[0]
    records.sort(key=lambda r: r["modes"].get(key, r["torch"])["cosine"])
    print(table(records, args.modes, args.top))
    worst, fell = records[0], [r for r in records if not r["modes"].get(key, {}).get("ran_on", "").startswith("sage")]
    w = worst["modes"].get(key, worst["torch"])
    print(f"\n{len(records)} attention calls; worst ({key}): {worst['layer']} cosine {w['cosine']:.6f}, "
          f"rel. L1 {w['rel_l1']:.4f} (torch bf16 there: {worst['torch']['cosine']:.6f} / "
          f"{worst['torch']['rel_l1']:.4f})")
    if key == "sdpa" and fell:
        print(f"{len(fell)} of {len(records)} calls fell back to torch under patch_sdpa(): "
              f"{sorted({r['modes']['sdpa']['ran_on'] for r in fell})}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(dict(model=args.model, device=args.device, dtype=args.dtype, rows=args.rows,
                           random_weights=True, config=args.model_config, calls=records), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
