"""Sequence parallelism: SageAttention over a sequence spread across processes.

Runs on torch.distributed (NCCL between GPUs, gloo between CPU processes)
over a process group the caller made. Every rank holds a shard of the
sequence of q, k and v; each function returns this rank's shard of what one
`sageattn` call on the whole sequence returns.

- `ulysses_attention`: all-to-all from sequence shards to head shards, one
  whole-sequence attention per head group, all-to-all back. Heads must divide
  by the group size; K/V heads are replicated where there are too few (GQA).
- `ring_attention`: K/V shards passed around the ring (P2P, the next transfer
  overlapping this step's attention), partial results merged exactly through
  their LSE. Causal attention computes only the blocks that see something.
- `hybrid_attention`: Ulysses inside one group (a node), ring across another.
- `merge_attention` / `update_attention`: the LSE merge, for callers that run
  rings of their own with sageattn as the block attention.
- `sequence_shards`, `shard_sequence`, `gather_sequence`: the sharding
  conventions ("contiguous", "zigzag") as code.

docs/PARALLEL.md describes the API, the sharding conventions and how to plug
the merge into other ring implementations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist

from . import core

__all__ = [
    "gather_sequence",
    "hybrid_attention",
    "hybrid_groups",
    "merge_attention",
    "ring_attention",
    "sequence_shards",
    "shard_sequence",
    "ulysses_attention",
    "update_attention",
]

_LAYOUTS = ("HND", "NHD")
_SHARDINGS = ("contiguous", "zigzag")
_DTYPES = (torch.float16, torch.bfloat16)

# How the Ulysses exchange moves data: None picks all_to_all_single where the
# backend has it and P2P (batch_isend_irecv) where it does not; "p2p" forces
# the latter (tests use it to cover the fallback on backends that have both).
_ALL_TO_ALL_MODE: str | None = None
_NO_ALL_TO_ALL: set = set()  # backends found without all_to_all_single


# ------------------------------------------------------------------ sharding


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of `parts` chunks of n tokens, as torch.tensor_split makes
    them: the first n % parts chunks one token longer."""
    base, extra = divmod(n, parts)
    ranges, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        ranges.append((start, start + size))
        start += size
    return ranges


def _length(ranges) -> int:
    return sum(e - s for s, e in ranges)


def _take(ranges, start: int, stop: int) -> list[tuple[int, int]]:
    """Local tokens [start, stop) of a rank whose tokens are `ranges`, as global ranges."""
    out, offset = [], 0
    for s, e in ranges:
        lo, hi = max(start, offset), min(stop, offset + e - s)
        if lo < hi:
            out.append((s + lo - offset, s + hi - offset))
        offset += e - s
    return out


def _check_sharding(sharding) -> None:
    if sharding not in _SHARDINGS:
        raise ValueError(f"sharding = {sharding!r}; accepted: 'contiguous', 'zigzag'")


def sequence_shards(
    seq_len: int, world_size: int, sharding: str = "contiguous", ulysses_size: int = 1
) -> list[list[tuple[int, int]]]:
    """For every sequence rank, the [start, end) ranges of the global sequence
    it holds, in the order it holds them.

    "contiguous": rank r holds chunk r of `world_size` chunks.
    "zigzag": the sequence is cut into 2·world_size chunks and rank r holds
    chunks r and 2·world_size−1−r, which balances causal attention.
    Chunk sizes follow torch.tensor_split: the first seq_len % chunks chunks
    are one token longer. With ulysses_size U > 1 (hybrid_attention), the
    sharding applies to world_size // U ring positions and each position's
    tokens are split contiguously, in that order, over its U Ulysses ranks;
    sequence rank r·U + u is ring position r, Ulysses rank u.
    """
    _check_sharding(sharding)
    if not isinstance(seq_len, int) or seq_len < 0:
        raise ValueError(f"seq_len = {seq_len!r}; expected an int >= 0")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size = {world_size!r}; expected an int >= 1")
    if not isinstance(ulysses_size, int) or ulysses_size < 1 or world_size % ulysses_size:
        raise ValueError(f"ulysses_size = {ulysses_size!r} must be >= 1 and divide world_size = {world_size}")
    ring = world_size // ulysses_size
    if sharding == "contiguous":
        positions = [[c] for c in _split(seq_len, ring)]
    else:
        chunks = _split(seq_len, 2 * ring)
        positions = [[chunks[r], chunks[2 * ring - 1 - r]] for r in range(ring)]
    shards = []
    for ranges in positions:
        for lo, hi in _split(_length(ranges), ulysses_size):
            shards.append([(s, e) for s, e in _take(ranges, lo, hi)])
    return shards


def shard_sequence(
    x: torch.Tensor,
    dim: int,
    rank: int,
    world_size: int,
    sharding: str = "contiguous",
    ulysses_size: int = 1,
) -> torch.Tensor:
    """Sequence rank `rank`'s shard of x, whose dim `dim` is the whole
    sequence (dim 2 of HND, dim 1 of NHD tensors), under the convention of
    sequence_shards. A view when the shard is one range, else a new tensor."""
    ranges = sequence_shards(x.size(dim), world_size, sharding, ulysses_size)[rank]
    parts = [x.narrow(dim, s, e - s) for s, e in ranges]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return x.narrow(dim, 0, 0)
    return torch.cat(parts, dim)


def gather_sequence(
    x: torch.Tensor,
    dim: int,
    group=None,
    sharding: str = "contiguous",
    ulysses_size: int = 1,
) -> torch.Tensor:
    """The whole sequence on every rank, from each rank's shard x (the inverse
    of shard_sequence; the group's rank order is the sequence rank order).
    "contiguous" shards of any lengths are concatenated in rank order."""
    _check_sharding(sharding)
    group, world, _ = _group(group, "gather_sequence")
    dim = dim % x.dim()
    lens = [n for (n,) in _all_lengths((x.size(dim),), group, x.device)]
    n_all = sum(lens)
    if sharding == "contiguous" and ulysses_size == 1:
        starts = [sum(lens[:r]) for r in range(world)]
        shards = [[(starts[r], starts[r] + lens[r])] for r in range(world)]
    else:
        shards = sequence_shards(n_all, world, sharding, ulysses_size)
        _check_lengths("gather_sequence", lens, shards, sharding)
    longest = max(lens)
    padded = x.contiguous()
    if x.size(dim) < longest:
        pad_shape = list(x.shape)
        pad_shape[dim] = longest - x.size(dim)
        padded = torch.cat([padded, x.new_zeros(pad_shape)], dim)
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded, group=group)
    shape = list(x.shape)
    shape[dim] = n_all
    full = x.new_empty(shape)
    for r in range(world):
        offset = 0
        for s, e in shards[r]:
            full.narrow(dim, s, e - s).copy_(pieces[r].narrow(dim, offset, e - s))
            offset += e - s
    return full


def hybrid_groups(ulysses_size: int, group=None):
    """(ulysses_group, ring_group) for this rank: Ulysses groups of
    `ulysses_size` consecutive ranks (one node, when ranks are numbered by
    node), ring groups of the ranks with the same place in theirs. Every rank
    of `group` (default: the world) must call it. Sequence rank = rank in
    `group`, matching sequence_shards(..., ulysses_size=ulysses_size)."""
    group, world, rank = _group(group, "hybrid_groups")
    if not isinstance(ulysses_size, int) or ulysses_size < 1 or world % ulysses_size:
        raise ValueError(f"ulysses_size = {ulysses_size!r} must be >= 1 and divide the group size {world}")
    ring = world // ulysses_size
    glob = [_global_rank(group, r) for r in range(world)]
    mine = [None, None]
    for r in range(ring):  # every rank creates every group, in one order
        g = dist.new_group([glob[r * ulysses_size + u] for u in range(ulysses_size)])
        if rank // ulysses_size == r:
            mine[0] = g
    for u in range(ulysses_size):
        g = dist.new_group([glob[r * ulysses_size + u] for r in range(ring)])
        if rank % ulysses_size == u:
            mine[1] = g
    return mine[0], mine[1]


# --------------------------------------------------------------- the LSE merge


def _lse_as_out(lse: torch.Tensor, layout: str) -> torch.Tensor:
    """The LSE ([b, h, n], varlen [h, t]) broadcast against out in `layout`."""
    if layout == "HND":
        return lse.unsqueeze(-1)
    if layout == "NHD":
        return lse.transpose(1, 2).unsqueeze(-1)
    return lse.transpose(0, 1).unsqueeze(-1)  # "THD": out [t, h, d], lse [h, t]


def _check_merge_layout(fn: str, layout) -> None:
    if layout not in ("HND", "NHD", "THD"):
        raise ValueError(f"{fn}(): tensor_layout = {layout!r}; accepted: 'HND', 'NHD', 'THD' (varlen)")


def _lse_shape(out: torch.Tensor, layout: str) -> tuple:
    if layout == "HND":
        return tuple(out.shape[:3])
    if layout == "NHD":
        return (out.shape[0], out.shape[2], out.shape[1])
    return (out.shape[1], out.shape[0])


def _weights(lse: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """exp(lse - total), 0 where total is -inf (no part saw a key)."""
    safe = torch.where(torch.isneginf(total), torch.zeros_like(total), total)
    return torch.exp(lse - safe)


def update_attention(
    out: torch.Tensor,
    lse: torch.Tensor,
    block_out: torch.Tensor,
    block_lse: torch.Tensor,
    tensor_layout: str = "HND",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merges one block's attention into a running result, in place.

    out: the running output, float32, in `tensor_layout` ("HND" [b, h, n, d],
    "NHD" [b, n, h, d], "THD" varlen [t, h, d]); lse: its float32 natural-log
    LSE ([b, h, n]; varlen [h, t]). block_out, block_lse: what
    sageattn(..., return_lse=True) returned for the same queries against
    other keys. Afterwards out and lse describe attention over the keys of
    both: lse' = logaddexp(lse, block_lse),
    out' = exp(lse − lse')·out + exp(block_lse − lse')·block_out.
    A row with lse = −inf (it has seen no key yet) takes the block as it is;
    a row no block has seen keeps out = 0, lse = −inf. Start from
    out = zeros, lse = −inf (or from the first block's float32 copy).
    Returns (out, lse), the same tensors.
    """
    _check_merge_layout("update_attention", tensor_layout)
    if out.dtype != torch.float32 or lse.dtype != torch.float32:
        raise ValueError(f"update_attention(): out and lse must be float32 (got {out.dtype}, {lse.dtype})")
    if block_out.shape != out.shape:
        raise ValueError(f"update_attention(): block_out has shape {tuple(block_out.shape)}, out {tuple(out.shape)}")
    want = _lse_shape(out, tensor_layout)
    if tuple(lse.shape) != want or tuple(block_lse.shape) != want:
        raise ValueError(
            f"update_attention(): lse and block_lse must have shape {list(want)} for {tensor_layout} out "
            f"{list(out.shape)}; got {list(lse.shape)} and {list(block_lse.shape)}"
        )
    total = torch.logaddexp(lse, block_lse.float())
    w_old = _lse_as_out(_weights(lse, total), tensor_layout)
    w_new = _lse_as_out(_weights(block_lse.float(), total), tensor_layout)
    out.mul_(w_old).addcmul_(block_out, w_new)
    lse.copy_(total)
    return out, lse


def merge_attention(
    outs: Sequence[torch.Tensor],
    lses: Sequence[torch.Tensor],
    tensor_layout: str = "HND",
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of disjoint key sets, from the attention over
    each: outs[i], lses[i] are what sageattn(..., return_lse=True) returned
    for the same queries against key set i. Computed in float32:
    lse = logsumexp_i lses[i], out = Σ_i exp(lses[i] − lse)·outs[i].
    Returns (out in out_dtype, default outs[0].dtype; lse float32). Rows
    that no part saw give out = 0 and lse = −inf."""
    _check_merge_layout("merge_attention", tensor_layout)
    if len(outs) == 0 or len(outs) != len(lses):
        raise ValueError(f"merge_attention(): needs as many outs as lses, at least one (got {len(outs)}, {len(lses)})")
    shape = outs[0].shape
    want = _lse_shape(outs[0], tensor_layout)
    for o, l in zip(outs, lses):
        if o.shape != shape or tuple(l.shape) != want:
            raise ValueError(
                f"merge_attention(): every out must have shape {list(shape)} and every lse {list(want)}; "
                f"got {list(o.shape)} and {list(l.shape)}"
            )
    total = torch.stack([l.float() for l in lses]).logsumexp(0)
    acc = torch.zeros(shape, dtype=torch.float32, device=outs[0].device)
    for o, l in zip(outs, lses):
        acc.addcmul_(o, _lse_as_out(_weights(l.float(), total), tensor_layout))
    return acc.to(out_dtype or outs[0].dtype), total


# ------------------------------------------------------------ communication


def _group(group, fn: str):
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{fn}(): torch.distributed is not initialised (call torch.distributed.init_process_group)")
    g = group if group is not None else dist.group.WORLD
    rank = dist.get_rank(g)
    if rank < 0:
        raise ValueError(f"{fn}(): this process (global rank {dist.get_rank()}) is not a member of the group")
    return g, dist.get_world_size(g), rank


def _global_rank(group, rank: int) -> int:
    if group is None or group is dist.group.WORLD:
        return rank
    return dist.get_global_rank(group, rank)


def _all_lengths(local: tuple, group, device) -> list[tuple]:
    """Every rank's `local` tuple of ints, in rank order (one small all_gather)."""
    world = dist.get_world_size(group)
    t = torch.tensor(local, dtype=torch.int64, device=device)
    gathered = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(gathered, t, group=group)
    return [tuple(row) for row in torch.stack(gathered).tolist()]


def _all_to_all(out: torch.Tensor, inp: torch.Tensor, out_splits: list, in_splits: list, group) -> None:
    """all_to_all_single on flat contiguous tensors, or the same exchange
    through P2P where the backend has no all-to-all."""
    backend = _backend(group)
    if _ALL_TO_ALL_MODE != "p2p" and backend not in _NO_ALL_TO_ALL:
        try:
            dist.all_to_all_single(out, inp, out_splits, in_splits, group=group)
            return
        except RuntimeError as e:
            # Some gloo builds have no all-to-all: that is refused on every rank
            # alike, before any transfer. Anything else (and anything on NCCL,
            # which has it) is a real error.
            text = str(e).lower()
            if backend == "nccl" or ("support" not in text and "implement" not in text):
                raise
            _NO_ALL_TO_ALL.add(backend)
    world, me = dist.get_world_size(group), dist.get_rank(group)
    outs, ins = out.split(out_splits), inp.split(in_splits)
    ops = []
    for peer in range(world):
        if peer == me:
            outs[peer].copy_(ins[peer])
            continue
        if in_splits[peer]:
            ops.append(dist.P2POp(dist.isend, ins[peer], _global_rank(group, peer), group))
        if out_splits[peer]:
            ops.append(dist.P2POp(dist.irecv, outs[peer], _global_rank(group, peer), group))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _seq_to_heads(x: torch.Tensor, layout: str, group, world: int, lens: list) -> torch.Tensor:
    """Local [b, h, n, d] (HND) or [b, n, h, d] (NHD), n = this rank's tokens,
    to [N, b, h/world, d]: every rank's tokens, in rank order, of this rank's
    head group. (Stored token-major so that it needs no copy on arrival.)"""
    if layout == "HND":
        b, h, n, d = x.shape
        send = x.unflatten(1, (world, h // world)).permute(1, 3, 0, 2, 4)
    else:
        b, n, h, d = x.shape
        send = x.unflatten(2, (world, h // world)).permute(2, 1, 0, 3, 4)
    send = send.contiguous()  # [world, n, b, h/world, d]
    per_token = b * (h // world) * d
    recv = x.new_empty((sum(lens), b, h // world, d))
    _all_to_all(recv.view(-1), send.view(-1), [m * per_token for m in lens], [n * per_token] * world, group)
    return recv


def _heads_to_seq(y: torch.Tensor, group, world: int, me: int, lens: list) -> torch.Tensor:
    """[N, b, hp, *rest] (every rank's tokens of this rank's head group) to
    [world, n, b, hp, *rest]: this rank's tokens of every head group."""
    y = y.contiguous()
    per_token = y[0].numel() if y.size(0) else math.prod(y.shape[1:])
    recv = y.new_empty((world, lens[me]) + tuple(y.shape[1:]))
    _all_to_all(recv.view(-1), y.view(-1), [lens[me] * per_token] * world, [m * per_token for m in lens], group)
    return recv


def _kv_heads(hq: int, hkv: int, world: int) -> list | None:
    """The K/V heads each head group needs, concatenated over the groups, so
    that each group's q heads map to them as sageattn maps GQA heads; None
    when the K/V heads split evenly (no replication)."""
    if hkv % world == 0:
        return None
    group_size, per_rank = hq // hkv, hq // world
    if group_size % per_rank == 0:  # each rank's q heads share one K/V head
        return [(g * per_rank) // group_size for g in range(world)]
    return [(g * per_rank + i) // group_size for g in range(world) for i in range(per_rank)]  # one per q head


# ------------------------------------------------------------------- checks


def _check_inputs(fn: str, q, k, v, layout, heads_divisor: int, sm_scale, kwargs, backend: str):
    """Everything that can be refused is refused before any communication, on
    every rank alike (an exception on one rank only would leave the others
    waiting in a collective)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}(): {name} must be a torch.Tensor, not {type(t).__name__}")
    if layout not in _LAYOUTS:
        raise ValueError(f"{fn}(): tensor_layout = {layout!r}; accepted: 'HND', 'NHD'")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"{fn}(): q, k and v must all be float16 or all bfloat16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"{fn}(): q, k and v must be on one device; got {q.device}, {k.device}, {v.device}")
    if backend == "nccl" and not q.is_cuda:
        raise ValueError(f"{fn}(): the group's backend is NCCL but q is on {q.device}; NCCL moves CUDA tensors only")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"{fn}(): {layout} takes 4-D q, k, v; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"{fn}(): k and v must have one shape; got {tuple(k.shape)} and {tuple(v.shape)}")
    hd = 1 if layout == "HND" else 2
    hq, hkv = q.size(hd), k.size(hd)
    if q.size(0) != k.size(0) or q.size(3) != k.size(3):
        raise ValueError(
            f"{fn}(): q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch and head_dim ({layout})"
        )
    if hkv == 0 or hq % hkv:
        raise ValueError(f"{fn}(): heads_q = {hq} must be a multiple of heads_kv = {hkv}")
    if hq % heads_divisor:
        raise ValueError(
            f"{fn}(): heads_q = {hq} is not divisible by the Ulysses group size {heads_divisor}; "
            "Ulysses gives each rank heads_q / group size heads (use ring_attention, or a group size that divides it)"
        )
    if "attn_mask" in kwargs:
        raise NotImplementedError(f"{fn}(): attn_mask is not supported in sequence-parallel attention")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        # The exchanges carry no gradient back to the ranks that sent the data:
        # refuse rather than return partial gradients.
        raise NotImplementedError(
            f"{fn}(): sequence-parallel attention is forward-only; call it under torch.no_grad() or "
            "torch.inference_mode(), or detach q, k and v"
        )
    # Every other option as sageattn would take it: unknown names and values are refused here.
    core._resolve(fn, kwargs, {"sm_scale": sm_scale, "return_lse": True}, "any")


def _check_lengths(fn: str, lens: list, shards: list, sharding: str) -> None:
    want = [_length(r) for r in shards]
    if list(lens) != want:
        raise ValueError(
            f"{fn}(): the shards hold {list(lens)} tokens (in rank order), but {sharding} sharding of "
            f"{sum(lens)} tokens gives {want} (see sequence_shards)"
        )


def _attend(q, k, v, layout, causal, sm_scale, kwargs, lse=True):
    """sageattn on one block: (out, lse), lse None unless asked for."""
    r = core.sageattn(q, k, v, tensor_layout=layout, is_causal=causal, sm_scale=sm_scale, return_lse=lse, **kwargs)
    return r if lse else (r, None)


def _backend(group) -> str:
    return str(dist.get_backend(group)).lower()


# ------------------------------------------------------------------ Ulysses


def _ulysses(q, k, v, layout, group, world, me, lens_q, lens_kv, inner, return_lse):
    """The Ulysses exchange around `inner(qh, kh, vh)`, which takes
    [b, hp, N, d] (HND views over token-major storage) and returns
    (out [b, hp, N, d], lse [b, hp, N]) for the whole sequence."""
    hd = 1 if layout == "HND" else 2
    hq, hkv = q.size(hd), k.size(hd)
    heads = _kv_heads(hq, hkv, world)
    if heads is not None:
        index = torch.tensor(heads, dtype=torch.long, device=k.device)
        k, v = k.index_select(hd, index), v.index_select(hd, index)
    qh = _seq_to_heads(q, layout, group, world, lens_q).permute(1, 2, 0, 3)
    kh = _seq_to_heads(k, layout, group, world, lens_kv).permute(1, 2, 0, 3)
    vh = _seq_to_heads(v, layout, group, world, lens_kv).permute(1, 2, 0, 3)
    out_h, lse_h = inner(qh, kh, vh)
    recv = _heads_to_seq(out_h.permute(2, 0, 1, 3), group, world, me, lens_q)  # [world, n, b, hp, d]
    if layout == "HND":
        out = recv.permute(2, 0, 3, 1, 4).flatten(1, 2)  # [b, world·hp, n, d]
    else:
        out = recv.permute(2, 1, 0, 3, 4).flatten(2, 3)  # [b, n, world·hp, d]
    if not return_lse:
        return out.contiguous()
    recv_lse = _heads_to_seq(lse_h.permute(2, 0, 1), group, world, me, lens_q)  # [world, n, b, hp]
    return out.contiguous(), recv_lse.permute(2, 0, 3, 1).flatten(1, 2).contiguous()


def ulysses_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group=None,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    sharding: str = "contiguous",
    seq_lens: Sequence[int] | None = None,
    **kwargs,
):
    """Ulysses (all-to-all) sequence-parallel attention over `group`
    (default: the world).

    q, k, v: this rank's shard of the sequence, in `tensor_layout` ("HND"
    [b, h, n, d] or "NHD" [b, n, h, d]); shards may differ in length. heads_q
    must divide by the group size; K/V heads that do not are replicated so
    that each rank gets the ones its q heads use (docs/PARALLEL.md). Each
    rank attends its heads over the whole sequence, so the result equals
    one sageattn call on the whole sequence. `sharding` says how the caller
    sharded ("contiguous": rank order; "zigzag": see sequence_shards) and
    matters only for is_causal. seq_lens: every rank's shard length, q and
    k/v alike; None exchanges them (one small all_gather). kwargs: sageattn's
    options (qk_quant_gran, pv_accum_dtype, smooth_k, ...); attn_mask is
    refused. Returns this rank's shard of out, and with return_lse its LSE
    [b, heads_q, n] (float32, natural log).
    """
    fn = "ulysses_attention"
    _check_sharding(sharding)
    group, world, me = _group(group, fn)
    _check_inputs(fn, q, k, v, tensor_layout, world, sm_scale, kwargs, _backend(group))
    causal = bool(is_causal)
    if world == 1:
        out, lse = _attend(q, k, v, tensor_layout, causal, sm_scale, kwargs, return_lse)
        return (out, lse) if return_lse else out
    sd = 2 if tensor_layout == "HND" else 1
    lens_q, lens_kv = _lengths(fn, q.size(sd), k.size(sd), seq_lens, group, q.device)
    order = None
    if causal and sharding == "zigzag":
        if lens_q != lens_kv:
            raise ValueError(f"{fn}(): zigzag sharding needs q and k/v shards of one length (got {lens_q}, {lens_kv})")
        shards = sequence_shards(sum(lens_q), world, "zigzag")
        _check_lengths(fn, lens_q, shards, "zigzag")
        # rank-order position i holds global token order[i]: put them in sequence order for the mask
        order = torch.tensor([t for ranges in shards for s, e in ranges for t in range(s, e)], device=q.device)
        inverse = torch.argsort(order)

    def inner(qh, kh, vh):
        if order is None:
            return _attend(qh, kh, vh, "HND", causal, sm_scale, kwargs, return_lse)
        qs, ks, vs = (t.index_select(2, inverse) for t in (qh, kh, vh))
        out_s, lse_s = _attend(qs, ks, vs, "HND", causal, sm_scale, kwargs, return_lse)
        return out_s.index_select(2, order), lse_s.index_select(2, order) if return_lse else None

    return _ulysses(q, k, v, tensor_layout, group, world, me, lens_q, lens_kv, inner, return_lse)


def _lengths(fn, n_q, n_kv, seq_lens, group, device):
    """Every rank's (q, k/v) shard lengths, exchanged unless given."""
    world, me = dist.get_world_size(group), dist.get_rank(group)
    if seq_lens is not None:
        lens = [int(x) for x in seq_lens]
        if len(lens) != world or lens[me] != n_q or n_kv != n_q:
            raise ValueError(
                f"{fn}(): seq_lens = {list(seq_lens)} must give all {world} ranks' shard lengths, this rank's "
                f"({me}) being {n_q} for q and for k/v (got {n_kv}); leave it None for k/v of other lengths"
            )
        return lens, lens
    pairs = _all_lengths((n_q, n_kv), group, device)
    return [p[0] for p in pairs], [p[1] for p in pairs]


# --------------------------------------------------------------------- ring


def _ring_plan(causal: bool, me: int, src: int, n_q: int, n_kv: int, shards) -> list:
    """The attention calls for this rank's queries against rank src's keys:
    (first row, rows, keys, causal) with keys a prefix of src's k/v. Every
    rank holds ranges of one partition of the sequence in increasing order,
    so a query chunk sees src's chunks before it entirely, its own chunk
    causally, and nothing after it: no call touches a fully masked block."""
    if n_q == 0 or n_kv == 0:
        return []
    if not causal:
        return [(0, n_q, n_kv, False)]
    if src == me:  # the same tokens, in increasing order: the local causal mask is the global one
        return [(0, n_q, n_q, True)]
    calls, row = [], 0
    for qs, qe in shards[me]:
        seen = 0
        for ks, ke in shards[src]:
            if ke <= qs:
                seen += ke - ks
            elif ks < qe:
                raise AssertionError(f"shards overlap: {shards[me]} and {shards[src]}")
        if seen:
            if calls and calls[-1][0] + calls[-1][1] == row and calls[-1][2] == seen:
                calls[-1] = (calls[-1][0], calls[-1][1] + qe - qs, seen, False)
            else:
                calls.append((row, qe - qs, seen, False))
        row += qe - qs
    return calls


def _ring(q, k, v, layout, group, world, me, lens_kv, shards, causal, attend):
    """Ring attention proper: (out float32 shaped like q, lse [b, h, n] float32).
    shards: every rank's global token ranges (needed when causal)."""
    sd, hd = (2, 1) if layout == "HND" else (1, 2)
    n_q = q.size(sd)
    nxt, prv = _global_rank(group, (me + 1) % world), _global_rank(group, (me - 1) % world)
    acc = torch.zeros_like(q, dtype=torch.float32)  # q's memory layout where q is dense
    acc_lse = torch.full((q.size(0), q.size(hd), n_q), float("-inf"), dtype=torch.float32, device=q.device)
    cur_k, cur_v = k.contiguous(), v.contiguous()
    fresh = True
    for step in range(world):
        src = (me - step) % world
        works = None
        if step + 1 < world:
            shape = list(k.shape)
            shape[sd] = lens_kv[(me - step - 1) % world]
            nk, nv = k.new_empty(shape), v.new_empty(shape)
            ops = []
            if cur_k.numel():
                ops += [dist.P2POp(dist.isend, cur_k, nxt, group), dist.P2POp(dist.isend, cur_v, nxt, group)]
            if nk.numel():
                ops += [dist.P2POp(dist.irecv, nk, prv, group), dist.P2POp(dist.irecv, nv, prv, group)]
            works = dist.batch_isend_irecv(ops) if ops else []
        for row, rows, keys, diag in _ring_plan(causal, me, src, n_q, cur_k.size(sd), shards):
            out_b, lse_b = attend(q.narrow(sd, row, rows), cur_k.narrow(sd, 0, keys), cur_v.narrow(sd, 0, keys), diag)
            if fresh and rows == n_q:
                acc.copy_(out_b)
                acc_lse.copy_(lse_b)
            else:
                update_attention(acc.narrow(sd, row, rows), acc_lse.narrow(2, row, rows), out_b, lse_b, layout)
            fresh = False
        if works is not None:
            for w in works:
                w.wait()
            cur_k, cur_v = nk, nv
    return acc, acc_lse


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group=None,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    sharding: str = "contiguous",
    seq_lens: Sequence[int] | None = None,
    **kwargs,
):
    """Ring sequence-parallel attention over `group` (default: the world).

    q, k, v: this rank's shard of the sequence, in `tensor_layout` ("HND" or
    "NHD"), GQA allowed. K/V shards travel around the ring (P2P, the next
    transfer overlapping this step's attention); each step's partial result
    is merged exactly through its LSE, in float32. `sharding` says how the
    caller sharded the sequence: "contiguous" (rank order, any lengths) or
    "zigzag" (sequence_shards; balances causal work). With is_causal, each
    rank computes only the blocks its queries see: earlier keys in full, its
    own tokens causally, later keys not at all; q and k/v must then be
    sharded alike. seq_lens: every rank's shard length (q and k/v alike);
    None exchanges them (one small all_gather). kwargs: sageattn's options;
    attn_mask is refused. Returns this rank's shard of out (and with
    return_lse its LSE [b, heads_q, n], float32, natural log).
    """
    fn = "ring_attention"
    _check_sharding(sharding)
    group, world, me = _group(group, fn)
    _check_inputs(fn, q, k, v, tensor_layout, 1, sm_scale, kwargs, _backend(group))
    causal = bool(is_causal)
    if world == 1:
        out, lse = _attend(q, k, v, tensor_layout, causal, sm_scale, kwargs, return_lse)
        return (out, lse) if return_lse else out
    sd = 2 if tensor_layout == "HND" else 1
    lens_q, lens_kv = _lengths(fn, q.size(sd), k.size(sd), seq_lens, group, q.device)
    shards = _ring_shards(fn, lens_q, lens_kv, world, sharding, causal)

    def attend(qs, ks, vs, diag):
        return _attend(qs, ks, vs, tensor_layout, diag, sm_scale, kwargs)

    acc, lse = _ring(q, k, v, tensor_layout, group, world, me, lens_kv, shards, causal, attend)
    out = acc.to(q.dtype)
    return (out, lse) if return_lse else out


def _ring_shards(fn, lens_q, lens_kv, world, sharding, causal):
    if not causal:
        return None
    if lens_q != lens_kv:
        raise ValueError(
            f"{fn}(): causal ring attention needs q and k/v sharded alike (self-attention); "
            f"shard lengths are {lens_q} for q and {lens_kv} for k/v"
        )
    if sharding == "contiguous":
        starts = [sum(lens_q[:r]) for r in range(world)]
        return [[(starts[r], starts[r] + lens_q[r])] for r in range(world)]
    shards = sequence_shards(sum(lens_q), world, sharding)
    _check_lengths(fn, lens_q, shards, sharding)
    return shards


# ------------------------------------------------------------------- hybrid


def hybrid_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ulysses_group,
    ring_group,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    sharding: str = "contiguous",
    **kwargs,
):
    """Ulysses inside `ulysses_group` (typically the GPUs of one node), ring
    attention across `ring_group` (the same place in every node's group; see
    hybrid_groups). The sequence is sharded as sequence_shards(...,
    ulysses_size=size of ulysses_group) describes: `sharding` ("contiguous"
    or "zigzag") over the ring positions, then each position's tokens split
    contiguously over its Ulysses group. heads_q must divide by the Ulysses
    group's size. Returns this rank's shard of out (and with return_lse its
    LSE [b, heads_q, n]).
    """
    fn = "hybrid_attention"
    _check_sharding(sharding)
    ugroup, uworld, ume = _group(ulysses_group, fn)
    rgroup, rworld, rme = _group(ring_group, fn)
    _check_inputs(fn, q, k, v, tensor_layout, uworld, sm_scale, kwargs, _backend(ugroup))
    if _backend(rgroup) == "nccl" and not q.is_cuda:
        raise ValueError(f"{fn}(): the ring group's backend is NCCL but q is on {q.device}")
    causal = bool(is_causal)
    sd = 2 if tensor_layout == "HND" else 1
    if uworld > 1:
        lens_q, lens_kv = _lengths(fn, q.size(sd), k.size(sd), None, ugroup, q.device)
    else:
        lens_q, lens_kv = [q.size(sd)], [k.size(sd)]
    if rworld > 1:
        ring_q, ring_kv = _lengths(fn, sum(lens_q), sum(lens_kv), None, rgroup, q.device)
        shards = _ring_shards(fn, ring_q, ring_kv, rworld, sharding, causal)

    def inner(qh, kh, vh):
        # [b, hp, T, d]: this ring position's tokens, in increasing order, of this rank's heads
        if rworld == 1:
            return _attend(qh, kh, vh, "HND", causal, sm_scale, kwargs, return_lse)

        def attend(qs, ks, vs, diag):
            return _attend(qs, ks, vs, "HND", diag, sm_scale, kwargs)

        acc, lse = _ring(qh, kh, vh, "HND", rgroup, rworld, rme, ring_kv, shards, causal, attend)
        return acc.to(qh.dtype), lse

    if uworld == 1:
        if tensor_layout == "NHD":
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out, lse = inner(q, k, v)
        out = out.transpose(1, 2).contiguous() if tensor_layout == "NHD" else out
        return (out, lse) if return_lse else out
    return _ulysses(q, k, v, tensor_layout, ugroup, uworld, ume, lens_q, lens_kv, inner, return_lse)
