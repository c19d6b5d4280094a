"""Attention throughput and accuracy report: sageattention beside torch SDPA's
own backends (cuDNN and flash on CUDA), measured in the same run.

    python -m sageattention bench [--tokens 32768] [--heads 32] [--dims 64 128]
                                  [--lens 1024 2048 4096 8192 16384 32768]
                                  [--pv auto|fp16|fp8] [--device cuda|cpu]
                                  [--json FILE] [--out DIR] [--doc docs/PERF.md]
    python -m sageattention bench --from-json DIR/bench.json --out DIR [--doc docs/PERF.md]

(`python -m sageattention.bench` is the same command.)

TOPS = 4·b·h·len_q·len_kv·d / time, halved for causal. "ours e2e" is the whole
`sageattn` call (quantization included); "kernel" is the attention kernel's
device time alone (profiler, CUDA only); "quant%" the share of the e2e time
spent in our other kernels. Accuracy is measured against float64 attention on
a subset of query rows (all keys).

`--out DIR` writes bench.md (the tables), bench.json (every number) and
bench.png (TOPS against length, one panel per head_dim and causal; needs
matplotlib). `--doc FILE` replaces the part of FILE between
`<!-- bench:begin -->` and `<!-- bench:end -->` with the same report.
`--from-json` renders a saved run again (no GPU needed).

The helpers (`timed`, `exact_rows`, `error_stats`) are also what the examples
in examples/ measure with.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import statistics
import sys
import time

import torch

import sageattention
from sageattention._ops import torch_sdpa

_DOC_BEGIN = "<!-- bench:begin -->"
_DOC_END = "<!-- bench:end -->"
# Our attention kernels: attention_kernel (mma.sync), attention_wgmma_kernel, ...
_ATTENTION_KERNEL = re.compile(r"attention_\w*kernel")


# ------------------------------------------------------------------ measuring


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cuda", warmup=5, iters=20) -> float:
    """Median seconds per call of fn() (CUDA events on CUDA, wall clock on the CPU)."""
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_seconds(fn, iters=10):
    """(attention kernel, all our kernels) median device seconds per call, CUDA only."""
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
        if _ATTENTION_KERNEL.search(e.key):
            attn += total
    return attn, ours


def exact_rows(q, k, v, rows=None, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """softmax(scale·q·kᵀ + mask)·v in float64 for the query rows `rows` (a
    1-D index tensor, or None for all), with torch SDPA's semantics: inputs
    [..., heads, len, dim], is_causal aligned top-left, GQA by head groups.
    Computed on q's device, a few heads at a time. Returns float64 [..., heads, len(rows), dim]."""
    lead = q.shape[:-3]
    q, k, v = (t.reshape((-1,) + tuple(t.shape[-3:])) for t in (q, k, v))
    batch, heads, len_q, dim = q.shape
    len_kv = k.size(-2)
    if rows is None:
        rows = torch.arange(len_q, device=q.device)
    rows = rows.to(q.device)
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    mask = None
    if attn_mask is not None:
        mask = attn_mask.expand(tuple(lead) + (heads, len_q, len_kv)).reshape(batch, heads, len_q, len_kv)
    group = heads // k.size(1)
    out = torch.empty(batch, heads, rows.numel(), dim, dtype=torch.float64, device=q.device)
    step = max(1, (256 << 20) // max(1, rows.numel() * len_kv * 8))  # heads per chunk: ~256 MiB of scores
    keys = torch.arange(len_kv, device=q.device)
    for b in range(batch):
        for h0 in range(0, heads, step):
            h1 = min(heads, h0 + step)
            kv_heads = torch.arange(h0, h1, device=q.device) // group
            qc = q[b, h0:h1].index_select(1, rows).double()
            kc, vc = k[b].index_select(0, kv_heads).double(), v[b].index_select(0, kv_heads).double()
            s = qc @ kc.transpose(-1, -2) * scale
            if mask is not None:
                m = mask[b, h0:h1].index_select(1, rows)
                s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.double()
            if is_causal:
                s = s.masked_fill(keys > rows.unsqueeze(1), float("-inf"))
            out[b, h0:h1] = torch.softmax(s, dim=-1).nan_to_num(0.0) @ vc
    return out.reshape(tuple(lead) + tuple(out.shape[1:]))


def error_stats(out, ref, peak=None, chunk=1 << 24) -> dict:
    """cosine, relative L1, max |err| and PSNR of out against ref. The PSNR's
    peak is `peak` (e.g. 2 for images in [-1, 1]), by default ref's max |value|.
    Sums in float64, a chunk at a time, so that a decoded video fits."""
    o_all, r_all = out.detach().reshape(-1), ref.detach().reshape(-1)
    if o_all.numel() != r_all.numel():
        raise ValueError(f"out has {o_all.numel()} elements, ref {r_all.numel()}")
    dot = oo = rr = l1 = r1 = sq = 0.0
    max_err = max_ref = 0.0
    for i in range(0, max(1, o_all.numel()), chunk):
        o, r = o_all[i : i + chunk].double(), r_all[i : i + chunk].double()
        diff = o - r
        dot += torch.dot(o, r).item()
        oo += torch.dot(o, o).item()
        rr += torch.dot(r, r).item()
        l1 += diff.abs().sum().item()
        r1 += r.abs().sum().item()
        sq += torch.dot(diff, diff).item()
        if diff.numel():
            max_err = max(max_err, diff.abs().max().item())
            max_ref = max(max_ref, r.abs().max().item())
    n = max(1, o_all.numel())
    cos = dot / max(math.sqrt(oo) * math.sqrt(rr), 1e-300)
    mse = sq / n
    peak = max_ref if peak is None else peak
    psnr = float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse) if peak > 0 else float("-inf")
    return {"cosine": cos, "rel_l1": l1 / max(r1, 1e-300), "max_abs": max_err, "psnr_db": psnr}


# ------------------------------------------------------------------ running

TORCH_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                   "math": "MATH"}


@contextlib.contextmanager
def torch_backend(name):
    """torch's SDPA restricted to one backend inside the block; "default"
    leaves torch's own choice."""
    if name == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([getattr(SDPBackend, TORCH_BACKENDS[name])]):
        yield


def torch_sdpa_call(backend, q, k, v, causal):
    """A call of torch's SDPA restricted to one backend ("default": torch's own choice)."""

    def call():
        with torch_backend(backend):
            return torch_sdpa(q, k, v, is_causal=causal)

    return call


def _ours(pv, q, k, v, causal):
    if pv == "fp8":
        return lambda: sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout="HND", is_causal=causal)
    if pv == "fp16":
        return lambda: sageattention.sageattn_qk_int8_pv_fp16_cuda(
            q, k, v, tensor_layout="HND", is_causal=causal, pv_accum_dtype="fp32"
        )
    return lambda: sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)


def _inputs(kind, shape, device, dtype, gen):
    """q, k, v drawn as `kind`: the hard cases of docs/ALGORITHM.md."""
    q, k, v = (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) for _ in range(3))
    d = shape[-1]
    if kind == "k-bias":  # a large per-channel offset in K: what smoothing K is for
        k = k + 4.0 * torch.randn(d, generator=gen, device=device)
    elif kind == "v-outliers":  # a few V channels 20x the rest
        v[..., torch.rand(d, generator=gen, device=device).argsort()[: max(1, d // 32)]] *= 20.0
    elif kind == "sharp":  # logits of std ~9: near one-hot softmax rows
        q, k = q * 3.0, k * 3.0
    return q.to(dtype), k.to(dtype), v.to(dtype)


def run_throughput(args, log):
    device, dtype = args.device, torch.bfloat16
    cuda = torch.device(device).type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for d in args.dims:
        for causal in (False, True):
            for n in args.lens:
                b = max(1, args.tokens // n)
                q, k, v = _inputs("normal", (b, args.heads, n, d), device, dtype, gen)
                flops = 4 * b * args.heads * n * n * d / (2 if causal else 1)
                row = dict(head_dim=d, causal=causal, len=n, batch=b, heads=args.heads)
                for name in args.backends:
                    try:
                        t = timed(torch_sdpa_call(name, q, k, v, causal), device, args.warmup, args.iters)
                        row[f"tops_{name}"] = flops / t / 1e12
                    except RuntimeError as e:  # a backend that cannot run this problem here
                        row[f"tops_{name}"] = None
                        log(f"  torch {name}: unavailable ({str(e).splitlines()[0][:100]})")
                call = _ours(args.pv, q, k, v, causal)
                with sageattention.count_calls() as counts:
                    t_ours = timed(call, device, args.warmup, args.iters)
                if counts.library == 0:
                    raise SystemExit(f"sageattention did not run this problem ({counts}); nothing to measure")
                row["tops_ours"] = flops / t_ours / 1e12
                if cuda:
                    t_kernel, t_all = kernel_seconds(call)
                    row["tops_kernel"] = flops / t_kernel / 1e12 if t_kernel else None
                    row["quant_share"] = (t_all - t_kernel) / t_ours if t_kernel else None
                else:
                    row["tops_kernel"] = row["quant_share"] = None
                # Accuracy on batch 0, 2 heads, the first 1024 queries (with top-left
                # causal these see exactly what they see in the full problem).
                out = call()
                sel = torch.arange(min(n, 1024), device=device)
                ref = exact_rows(q[:1, :2], k[:1, :2], v[:1, :2], sel, is_causal=causal)
                stats = error_stats(out[:1, :2, : sel.numel()], ref)
                row["cosine"], row["rel_l1"] = stats["cosine"], stats["rel_l1"]
                rows.append(row)
                log(_format_row(row, args.backends))
                del q, k, v, out
    return rows


def run_accuracy(args, log):
    """Our P·V modes and torch's default backend against float64, per input kind."""
    device, dtype = args.device, torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(1)
    rows = []
    n = args.acc_len
    sel = torch.arange(0, n, max(1, n // 512), device=device)  # 512 query rows spread over the sequence
    for d in args.dims:
        for causal in (False, True):
            for kind in ("normal", "k-bias", "v-outliers", "sharp"):
                q, k, v = _inputs(kind, (1, args.acc_heads, n, d), device, dtype, gen)
                ref = exact_rows(q, k, v, sel, is_causal=causal)
                base = error_stats(torch_sdpa(q, k, v, is_causal=causal)[..., sel, :], ref)
                for pv in ("auto", "fp16", "fp8"):
                    stats = error_stats(_ours(pv, q, k, v, causal)()[..., sel, :], ref)
                    row = dict(head_dim=d, causal=causal, inputs=kind, pv=pv, len=n, heads=args.acc_heads,
                               **stats, torch_cosine=base["cosine"], torch_rel_l1=base["rel_l1"])
                    rows.append(row)
                    log(f"  d{d} {'causal' if causal else 'full'} {kind:<10} {pv:<4}: cos {stats['cosine']:.6f} "
                        f"rel.L1 {stats['rel_l1']:.4f} (torch bf16: {base['cosine']:.6f} / {base['rel_l1']:.4f})")
    return rows


# ------------------------------------------------------------------ reporting


def _num(x, fmt):
    return "–" if x is None else format(x, fmt)


def _best_torch(row, backends):
    vals = [row.get(f"tops_{b}") for b in backends if row.get(f"tops_{b}")]
    return max(vals) if vals else None


def _format_row(row, backends):
    best = _best_torch(row, backends)
    cells = " ".join(f"{b} {_num(row.get(f'tops_{b}'), '7.1f')}" for b in backends)
    ratio = row["tops_ours"] / best if best else None
    kind = "causal" if row["causal"] else "full  "
    return (f"d{row['head_dim']:>4} {kind} len {row['len']:>6} b {row['batch']:>3} | "
            f"{cells} | ours {row['tops_ours']:7.1f} kernel {_num(row['tops_kernel'], '7.1f')} | "
            f"ours/best {_num(ratio, '5.2f')} | cos {row['cosine']:.5f} relL1 {row['rel_l1']:.4f}")


def throughput_table(report) -> str:
    backends = report["backends"]
    names = {"cudnn": "cuDNN", "flash": "flash", "efficient": "mem-eff", "math": "math", "default": "torch"}
    head = ["d", "causal", "len", "b"] + [names.get(b, b) for b in backends]
    head += ["ours e2e", "kernel", "e2e/best", "kernel/best", "quant%", "cos", "rel. L1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        best = _best_torch(r, backends)
        cells = [str(r["head_dim"]), "yes" if r["causal"] else "no", str(r["len"]), str(r["batch"])]
        cells += [_num(r.get(f"tops_{b}"), ".1f") for b in backends]
        cells += [
            _num(r["tops_ours"], ".1f"),
            _num(r["tops_kernel"], ".1f"),
            _num(r["tops_ours"] / best if best else None, ".2f"),
            _num(r["tops_kernel"] / best if best and r["tops_kernel"] else None, ".2f"),
            _num(100 * r["quant_share"] if r["quant_share"] is not None else None, ".1f"),
            f"{r['cosine']:.5f}",
            f"{r['rel_l1']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(report) -> str:
    head = ["d", "causal", "inputs", "P·V", "cos", "rel. L1", "max abs err", "torch bf16 cos", "torch bf16 rel. L1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["accuracy"]:
        lines.append(
            f"| {r['head_dim']} | {'yes' if r['causal'] else 'no'} | {r['inputs']} | {r['pv']} | {r['cosine']:.6f} | "
            f"{r['rel_l1']:.4f} | {r['max_abs']:.4f} | {r['torch_cosine']:.6f} | {r['torch_rel_l1']:.4f} |"
        )
    return "\n".join(lines)


def markdown(report, image=None) -> str:
    a = report["args"]
    parts = [
        f"Measured {report['date']} on {report['device']}; torch {report['torch']}, sageattention "
        f"{report['sageattention']} ({', '.join(report['kernel_families'])}); bf16, {a['heads']} heads, "
        f"b·len = {a['tokens']} tokens, P·V {a['pv']}, median of {a['iters']} calls after {a['warmup']} warm-up. "
        "TOPS; accuracy against float64 on batch 0, 2 heads, the first 1024 queries.",
        "",
    ]
    if image:
        parts += [f"![TOPS against sequence length]({image})", ""]
    if report["rows"]:
        parts += [throughput_table(report), ""]
    if report.get("accuracy"):
        acc = report["accuracy"][0]
        parts += [
            f"Accuracy against float64 (1 × {acc['heads']} heads × {acc['len']} tokens, 512 query rows spread "
            "over the sequence; `sageattn` is `auto`, `fp16`/`fp8` force the P·V path). Inputs: normal N(0,1); "
            "k-bias adds a per-channel K offset of N(0, 4²); v-outliers scales d/32 V channels by 20; "
            "sharp scales Q and K by 3. The last two columns are torch's own bf16 SDPA on the same inputs.",
            "",
            accuracy_table(report),
            "",
        ]
    return "\n".join(parts)


def plot(report, path) -> bool:
    """TOPS against length, one panel per head_dim × causal. False (and a
    message) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed, so no plot was written (pip install matplotlib)", file=sys.stderr)
        return False
    rows = report["rows"]
    dims = sorted({r["head_dim"] for r in rows})
    fig, axes = plt.subplots(len(dims), 2, figsize=(11, 3.8 * len(dims)), squeeze=False)
    series = [(f"tops_{b}", f"torch {b}", "-", "o") for b in report["backends"]]
    series += [("tops_ours", "sageattention e2e", "-", "s"), ("tops_kernel", "sageattention kernel", "--", "^")]
    for i, d in enumerate(dims):
        for j, causal in enumerate((False, True)):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["head_dim"] == d and r["causal"] == causal), key=lambda r: r["len"])
            for key, label, style, marker in series:
                pts = [(r["len"], r[key]) for r in sel if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts), style, marker=marker, label=label)
            ax.set_xscale("log", base=2)
            lens = [r["len"] for r in sel]
            ax.set_xticks(lens, [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lens])
            ax.minorticks_off()
            ax.set_title(f"head_dim {d}, {'causal' if causal else 'no mask'}")
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TOPS")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{report['device']} — torch {report['torch']}, sageattention {report['sageattention']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_doc(doc, text) -> None:
    with open(doc) as f:
        content = f.read()
    begin, end = content.find(_DOC_BEGIN), content.find(_DOC_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{doc} has no {_DOC_BEGIN} ... {_DOC_END} block to replace")
    content = content[: begin + len(_DOC_BEGIN)] + "\n" + text.rstrip() + "\n" + content[end:]
    with open(doc, "w") as f:
        f.write(content)


def write_report(report, out=None, json_path=None, doc=None) -> None:
    png = None
    if out:
        os.makedirs(out, exist_ok=True)
        json_path = json_path or os.path.join(out, "bench.json")
        if report["rows"] and plot(report, os.path.join(out, "bench.png")):
            png = os.path.join(out, "bench.png")
        with open(os.path.join(out, "bench.md"), "w") as f:
            f.write(markdown(report, "bench.png" if png else None))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
    if doc:
        image = os.path.relpath(png, os.path.dirname(os.path.abspath(doc))) if png else None
        update_doc(doc, markdown(report, image))


def main(argv=None, prog="python -m sageattention bench", description=None) -> int:
    paragraphs = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(prog=prog, description=description or paragraphs[0],
                                 epilog="\n\n".join(paragraphs[3:5]))
    ap.add_argument("--tokens", type=int, default=32768, help="b·len of each throughput problem (default 32768)")
    ap.add_argument("--heads", type=int, default=32, help="attention heads (default 32)")
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="head dims (default 64 128)")
    ap.add_argument("--lens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768],
                    help="sequence lengths; batch = tokens / len (default 1k to 32k)")
    ap.add_argument("--pv", default="auto", choices=["auto", "fp16", "fp8"], help="force a P·V path")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--backends", nargs="+", choices=sorted(TORCH_BACKENDS) + ["default"], default=None,
                    help="torch SDPA backends to time (default: cudnn flash on CUDA, default on the CPU)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before each measurement (default 5)")
    ap.add_argument("--iters", type=int, default=20, help="timed calls; the median is reported (default 20)")
    ap.add_argument("--acc-len", type=int, default=4096, help="sequence length of the accuracy table")
    ap.add_argument("--acc-heads", type=int, default=8, help="heads of the accuracy table (default 8)")
    ap.add_argument("--no-throughput", action="store_true", help="only the accuracy table")
    ap.add_argument("--no-accuracy", action="store_true", help="only the throughput table")
    ap.add_argument("--json", default=None, help="write every number here (default with --out: DIR/bench.json)")
    ap.add_argument("--out", default=None, help="folder for bench.md, bench.json and bench.png")
    ap.add_argument("--doc", default=None, help="a markdown file whose bench:begin/end block gets the report")
    ap.add_argument("--from-json", default=None, help="render a saved run (bench.json) instead of measuring")
    args = ap.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        write_report(report, args.out, args.json if args.json != args.from_json else None, args.doc)
        print(markdown(report))
        return 0
    if args.backends is None:
        args.backends = ["cudnn", "flash"] if torch.device(args.device).type == "cuda" else ["default"]
    info = sageattention.build_info()
    device_name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "CPU"
    report = dict(
        date=datetime.date.today().isoformat(),
        device=device_name,
        torch=torch.__version__,
        sageattention=sageattention.__version__,
        kernel_families=info.get("kernel_families", []),
        backends=args.backends,
        args={k: getattr(args, k) for k in ("tokens", "heads", "dims", "lens", "pv", "warmup", "iters", "acc_len")},
        rows=[],
        accuracy=[],
    )
    print(f"device: {device_name}; torch {torch.__version__}; sageattention {sageattention.__version__} "
          f"({', '.join(report['kernel_families'])})", flush=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if not args.no_throughput:
        report["rows"] = run_throughput(args, log)
    if not args.no_accuracy:
        print("accuracy against float64:", flush=True)
        report["accuracy"] = run_accuracy(args, log)
    write_report(report, args.out, args.json, args.doc)
    if args.out:
        print(f"wrote {args.out}/bench.md, bench.json" + (", bench.png" if report["rows"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m sageattention.bench"))
