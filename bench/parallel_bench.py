"""Sequence-parallel attention on 2 GPUs against 1: time per call, scaling
efficiency and the share of communication, for Ulysses and ring attention.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \\
    python -m torch.distributed.run --standalone --nproc-per-node 2 bench/parallel_bench.py \\
        [--seq 131072] [--heads 24] [--kv-heads 24] [--dim 128] [--dtype bf16] \\
        [--causal no yes] [--warmup 2] [--iters 5] [--json out.json]

(NVLink SHARP multicast stays off: NCCL_NVLS_ENABLE=0, and torch's symmetric
memory is told not to use multicast; the script sets both when unset.)

Every rank builds the same whole sequence (b = 1) from one seed.
- 1 GPU: sageattn on the whole sequence, run on each GPU at once (they share
  nothing); t1 is the faster GPU's median, so efficiency is not flattered.
- 2 GPUs: each mode on the rank's shard; a call's time is the slower rank's.
  "ulysses": contiguous shards, all-to-all to 12 heads × the whole sequence.
  "ring": contiguous shards; "ring-zigzag": zigzag shards (causal only).
- efficiency = t1 / (world · t_world).
- comm: the mode's communication timed alone, with the same tensors: Ulysses'
  four all-to-alls with their packing copies, ring's K/V transfers (which the
  ring overlaps with attention, so its exposed share is smaller).
- rel_l1: the 2-GPU output against the 1-GPU output, Σ|a − b| / Σ|b|.
Times are medians of --iters calls after --warmup calls; ranks start every
call together (barrier, then synchronize).
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import sageattention  # noqa: E402
from sageattention import parallel  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE = torch.device("cuda")


CUDA = True  # --cpu: gloo and CPU tensors, a dry run of this script at small sizes


def sync():
    if CUDA:
        torch.cuda.synchronize()


def sync_all():
    sync()
    dist.barrier(device_ids=[torch.cuda.current_device()]) if CUDA else dist.barrier()
    sync()


def timed(fn, warmup, iters, across=True):
    """Median seconds per call; with `across`, each call's time is the slowest rank's."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync_all()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    t = torch.tensor(times, dtype=torch.float64, device=DEVICE)
    if across:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return statistics.median(t.tolist())


def rel_l1(a, b):
    return float((a.float() - b.float()).abs().sum() / b.float().abs().sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=131072)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--causal", nargs="+", choices=["no", "yes"], default=["no", "yes"])
    ap.add_argument("--modes", nargs="+", choices=["ulysses", "ring", "ring-zigzag"],
                    default=["ulysses", "ring", "ring-zigzag"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cpu", action="store_true", help="gloo and CPU tensors: a dry run at small sizes")
    args = ap.parse_args()

    global CUDA, DEVICE
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if args.cpu:
        CUDA, DEVICE = False, torch.device("cpu")
        dist.init_process_group("gloo")
    else:
        DEVICE = torch.device("cuda", local)
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=DEVICE)
    rank, world = dist.get_rank(), dist.get_world_size()
    say = print if rank == 0 else (lambda *a, **k: None)

    dtype = DTYPES[args.dtype]
    hkv = args.kv_heads or args.heads
    n, d = args.seq, args.dim
    g = torch.Generator(device=DEVICE).manual_seed(0)
    q = torch.randn((1, args.heads, n, d), generator=g, device=DEVICE, dtype=dtype)
    k = torch.randn((1, hkv, n, d), generator=g, device=DEVICE, dtype=dtype)
    v = torch.randn((1, hkv, n, d), generator=g, device=DEVICE, dtype=dtype)
    device_name = torch.cuda.get_device_name() if CUDA else "CPU"
    nccl = None
    if CUDA:
        version = torch.cuda.nccl.version()
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    say(f"{world} × {device_name} | torch {torch.__version__} | NCCL {nccl} | sageattention "
        f"{sageattention.__version__} ({sageattention.library_path})")
    say(f"b 1, heads {args.heads}/{hkv}, seq {n}, head_dim {d}, {args.dtype}; "
        f"warmup {args.warmup}, median of {args.iters}")

    rows = []
    for causal in [c == "yes" for c in args.causal]:
        single = None

        def one(causal=causal):
            nonlocal single
            single = sageattention.sageattn(q, k, v, tensor_layout="HND", is_causal=causal)

        t_mine = timed(one, args.warmup, args.iters, across=False)
        t_all = torch.tensor([t_mine], dtype=torch.float64, device=DEVICE)
        dist.all_reduce(t_all, op=dist.ReduceOp.MIN)
        t1 = float(t_all)
        flops = 4 * args.heads * n * n * d / (2 if causal else 1)
        say(f"\ncausal={causal}: 1 GPU {t1 * 1e3:.1f} ms ({flops / t1 / 1e12:.0f} TOPS)")

        for mode in args.modes:
            if mode == "ring-zigzag" and not causal:
                continue
            sharding = "zigzag" if mode == "ring-zigzag" else "contiguous"
            ql, kl, vl = (parallel.shard_sequence(t, 2, rank, world, sharding).contiguous() for t in (q, k, v))
            lens = [sum(e - s for s, e in r) for r in parallel.sequence_shards(n, world, sharding)]
            out = None

            shard = {"tensor_layout": "HND", "is_causal": causal, "seq_lens": lens}
            if mode == "ulysses":

                def call(qkv=(ql, kl, vl), kw=shard):
                    nonlocal out
                    out = parallel.ulysses_attention(*qkv, **kw)

                comm = ulysses_comm(ql, kl, vl, lens, world)
            else:

                def call(qkv=(ql, kl, vl), kw=dict(shard, sharding=sharding)):
                    nonlocal out
                    out = parallel.ring_attention(*qkv, **kw)

                comm = ring_comm(kl, vl, world, rank)
            t2 = timed(call, args.warmup, args.iters)
            t_comm = timed(comm, 1, args.iters)
            ref = parallel.shard_sequence(single, 2, rank, world, sharding)
            err = torch.tensor([rel_l1(out, ref)], device=DEVICE)
            dist.all_reduce(err, op=dist.ReduceOp.MAX)
            row = {
                "mode": mode,
                "causal": causal,
                "world": world,
                "t1_s": t1,
                "t_s": t2,
                "efficiency": t1 / (world * t2),
                "comm_s": t_comm,
                "comm_share": t_comm / t2,
                "tops_per_gpu": flops / t2 / world / 1e12,
                "rel_l1_vs_1gpu": float(err),
            }
            rows.append(row)
            del out
            if CUDA:
                torch.cuda.empty_cache()
        del single
        if CUDA:
            torch.cuda.empty_cache()

    say("")
    say(f"{'mode':<12} {'causal':<6} {'1 GPU ms':>9} {f'{world} GPU ms':>9} {'effic.':>7} "
        f"{'comm ms':>8} {'comm %':>7} {'TOPS/GPU':>9} {'relL1 vs 1':>11}")
    for r in rows:
        say(f"{r['mode']:<12} {str(r['causal']):<6} {r['t1_s'] * 1e3:9.1f} {r['t_s'] * 1e3:9.1f} "
            f"{r['efficiency'] * 100:6.1f}% {r['comm_s'] * 1e3:8.2f} {r['comm_share'] * 100:6.2f}% "
            f"{r['tops_per_gpu']:9.0f} {r['rel_l1_vs_1gpu']:11.2e}")
    if rank == 0 and args.json:
        info = {
            "device": device_name,
            "world": world,
            "torch": torch.__version__,
            "nccl": nccl,
            "library": sageattention.library_path,
            "build": sageattention.build_info(),
            "args": vars(args),
            "results": rows,
        }
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2, default=str)
        say(f"wrote {args.json}")
    dist.destroy_process_group()


def ulysses_comm(ql, kl, vl, lens, world):
    """Ulysses' exchanges alone: q, k, v to head shards (packing copy + all-to-all
    each) and the output back (all-to-all + unpacking copy)."""
    group, me = dist.group.WORLD, dist.get_rank()
    back = parallel._seq_to_heads(ql, "HND", group, world, lens)  # the output's shape, token-major
    heads = parallel._kv_heads(ql.size(1), kl.size(1), world)  # GQA: K/V heads replicated as the call does
    index = None if heads is None else torch.tensor(heads, device=kl.device)

    def comm():
        for t in (ql, kl, vl):
            if t is not ql and index is not None:
                t = t.index_select(1, index)
            parallel._seq_to_heads(t, "HND", group, world, lens)
        recv = parallel._heads_to_seq(back, group, world, me, lens)
        recv.permute(2, 0, 3, 1, 4).flatten(1, 2).contiguous()

    return comm


def ring_comm(kl, vl, world, rank):
    """The ring's K/V transfers alone: world − 1 steps of send to the next
    rank and receive from the previous one."""
    nxt, prv = (rank + 1) % world, (rank - 1) % world

    def comm():
        cur_k, cur_v = kl, vl
        for _ in range(world - 1):  # equal shards (an even sequence), as the benchmark makes them
            nk, nv = torch.empty_like(cur_k), torch.empty_like(cur_v)
            ops = [dist.P2POp(dist.isend, cur_k, nxt), dist.P2POp(dist.isend, cur_v, nxt),
                   dist.P2POp(dist.irecv, nk, prv), dist.P2POp(dist.irecv, nv, prv)]
            for w in dist.batch_isend_irecv(ops):
                w.wait()
            cur_k, cur_v = nk, nv

    return comm


if __name__ == "__main__":
    sys.exit(main())
