"""The torch.library operators over the C ABI.

`sageattention::fwd` computes attention (quantized, or the exact float64
reference on the CPU); `sageattention::bwd` is its backward: the exact
gradient of unquantized attention, recomputed with torch math. Both have
fake implementations, so that torch.compile traces through them, and run on
the current stream of the tensors' device, so that CUDA graphs capture them.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from typing import NamedTuple

import torch

from . import _counting, _lib

# How q, k and v are laid out in memory (the `layout` argument of the ops).
HND = 0  # [batch, heads, tokens, dim]
NHD = 1  # [batch, tokens, heads, dim]
VARLEN = 2  # [total tokens, heads, dim], sequences given by cu_seqlens

_DTYPES = {torch.float16: _lib.DTYPE_FP16, torch.bfloat16: _lib.DTYPE_BF16}
_MASK_DTYPES = {torch.float16: _lib.DTYPE_FP16, torch.bfloat16: _lib.DTYPE_BF16, torch.float32: _lib.DTYPE_FP32}
_LAYOUT_NAMES = {HND: "HND", NHD: "NHD", VARLEN: "varlen"}
# Workspace bases the library asks for: 256 bytes on CUDA, 64 on the CPU.
_WS_ALIGN = 256
_NO_GUARD = contextlib.nullcontext()

# The original SDPA, captured before anyone can patch it.
torch_sdpa = torch.nn.functional.scaled_dot_product_attention
_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2] if x.isdigit()) >= (2, 5)

_library = torch.library.Library("sageattention", "DEF")
_library.define(
    "fwd(Tensor q, Tensor k, Tensor v, int layout, Tensor? attn_mask, Tensor? cu_seqlens_q, "
    "Tensor? cu_seqlens_kv, int max_seqlen_q, int max_seqlen_kv, bool is_causal, float scale, "
    "bool return_lse, int algorithm, int qk_granularity, int qk_precision, int pv_precision, "
    "int pv_accum, bool smooth_k, bool smooth_v, bool fallback, bool check_seqlens=False) -> (Tensor, Tensor)"
)
_library.define(
    "bwd(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, int layout, Tensor? attn_mask, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_kv, int max_seqlen_q, int max_seqlen_kv, bool is_causal, "
    "float scale) -> (Tensor, Tensor, Tensor)"
)


# ----------------------------------------------------------------- checking


def _fix_last_dim(t: torch.Tensor) -> torch.Tensor:
    """The ABI needs a contiguous last dimension; copy only when it is not."""
    if t.stride(-1) != 1 and t.size(-1) > 1:
        return t.contiguous()
    return t


def _geometry(q, k, v, layout, cu_q, cu_kv):
    """(batch, heads_q, heads_kv, len_q, len_kv, head_dim), after checking what
    the C ABI cannot see: dtypes agree, devices agree, shapes agree."""
    if q.dtype not in _DTYPES:
        raise ValueError(f"q.dtype is {q.dtype}; sageattention takes torch.float16 or torch.bfloat16")
    if k.dtype is not q.dtype or v.dtype is not q.dtype:
        raise ValueError(f"q, k and v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device; got {q.device}, {k.device}, {v.device}")
    dims = 3 if layout == VARLEN else 4
    if q.dim() != dims or k.dim() != dims or v.dim() != dims:
        raise ValueError(
            f"layout {_LAYOUT_NAMES.get(layout, layout)} takes {dims}-D q, k, v; got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape; got {tuple(k.shape)} and {tuple(v.shape)}")
    if layout == HND:
        batch, hq, lq, d = q.shape
        kb, hkv, lkv, kd = k.shape
    elif layout == NHD:
        batch, lq, hq, d = q.shape
        kb, lkv, hkv, kd = k.shape
    elif layout == VARLEN:
        lq, hq, d = q.shape
        lkv, hkv, kd = k.shape
        batch = kb = _check_seqlens(cu_q, cu_kv, q.device)
    else:
        raise ValueError(f"layout = {layout}; expected 0 (HND), 1 (NHD) or 2 (varlen)")
    if kb != batch:
        raise ValueError(f"q has batch {batch} but k and v have batch {kb}")
    if kd != d:
        raise ValueError(f"q has head_dim {d} but k and v have head_dim {kd}")
    return batch, hq, hkv, lq, lkv, d


def _check_seqlens(cu_q, cu_kv, device) -> int:
    if cu_q is None or cu_kv is None:
        raise ValueError("varlen attention needs both cu_seqlens_q and cu_seqlens_k")
    for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_kv)):
        if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
            raise ValueError(
                f"{name} must be a 1-D torch.int32 tensor of batch + 1 entries; got {cu.dtype} {tuple(cu.shape)}"
            )
        if cu.device != device:
            raise ValueError(f"{name} is on {cu.device} but q is on {device}")
    if cu_q.numel() != cu_kv.numel():
        raise ValueError(f"cu_seqlens_q has {cu_q.numel()} entries but cu_seqlens_k has {cu_kv.numel()}")
    return cu_q.numel() - 1


def _mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv):
    if layout == VARLEN:
        return (batch, hq, max_q, max_kv)
    return (batch, hq, lq, lkv)


def _expand_mask(mask, device, shape):
    """The mask as a [batch, heads_q, len_q, len_kv] view; broadcast dims get stride 0."""
    if mask.device != device:
        raise ValueError(f"attn_mask is on {mask.device} but q is on {device}")
    if mask.dtype != torch.bool and mask.dtype not in _MASK_DTYPES:
        raise ValueError(
            f"attn_mask.dtype is {mask.dtype}; expected torch.bool (True attends) or an additive "
            "torch.float16, torch.bfloat16 or torch.float32 mask"
        )
    if mask.dim() > 4:
        raise ValueError(f"attn_mask has {mask.dim()} dims; it must broadcast to {list(shape)}")
    try:
        return mask.expand(shape)
    except RuntimeError:
        raise ValueError(f"attn_mask of shape {list(mask.shape)} does not broadcast to {list(shape)}") from None


def _new_lse(q, layout, batch, hq, lq, return_lse):
    """The LSE output, or None when not asked for (the op then returns an empty tensor)."""
    if not return_lse:
        return None
    if layout == VARLEN:
        return q.new_empty((hq, lq), dtype=torch.float32)
    return q.new_empty((batch, hq, lq), dtype=torch.float32)


# ---------------------------------------------------------------- forward


def _public_raw_stream(index: int) -> int:
    return torch.cuda.current_stream(index).cuda_stream


# The current stream's cudaStream_t. The private accessors (what torch's own
# generated code calls) skip building a Stream object on every call.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", _public_raw_stream)
_current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)

_capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", torch.cuda.is_current_stream_capturing)
# Workspaces up to this size are kept (see _Plan.run).
_WS_KEEP = 1 << 20

_U8, _F32 = torch.uint8, torch.float32
_P = _lib.Problem
_PROBLEM_SIZE = ctypes.sizeof(_P)
# The library's defaults (sageattn_problem_init), as our mirror of the struct.
_DEFAULTS = ctypes.string_at(_lib.thread_problem().addr, _PROBLEM_SIZE)


def _index(offset: int, size: int) -> int:
    assert offset % size == 0, "a field the hot path writes is not naturally aligned"
    return offset // size


# The fields that change from call to call, as indices of the struct seen as
# 8-byte words (pointers) and 4-byte words (num_threads).
assert _lib.Tensor.data.offset == 0 and _PROBLEM_SIZE % 8 == 0
_Q_DATA, _K_DATA, _V_DATA, _OUT_DATA = (_index(f.offset, 8) for f in (_P.q, _P.k, _P.v, _P.out))
_MASK_DATA = _index(_P.mask.offset + _lib.Mask.data.offset, 8)
_LSE_DATA = _index(_P.lse.offset, 8)
_CU_Q, _CU_KV = _index(_P.cu_seqlens_q.offset, 8), _index(_P.cu_seqlens_kv.offset, 8)
_NUM_THREADS = _index(_P.num_threads.offset, 4)


class _Plan:
    """A problem struct filled for one combination of shapes, strides, dtypes,
    devices and options, whose checks in Python have passed: each call writes
    its data pointers and runs it. Also keeps the workspace size the library
    asked for, so that a call is one C call (one validation), not two."""

    __slots__ = (
        "raw", "addr", "words", "ints", "size", "size_addr", "ws_bytes", "cache_size",
        "device", "index", "extra", "fix", "geom", "mask_shape", "lse_shape",
    )  # fmt: skip

    def __init__(self, q, k, v, out, lse, layout, geom, mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, check):
        self.raw = raw = bytearray(_DEFAULTS)
        p = _P.from_buffer(raw)
        self.addr = ctypes.addressof(p)
        self.words = memoryview(raw).cast("Q")
        self.ints = memoryview(raw).cast("i")
        self.size = ctypes.c_size_t(0)
        self.size_addr = ctypes.addressof(self.size)
        self.geom = geom
        self.fix = False
        self.mask_shape = None
        self.lse_shape = None if lse is None else tuple(lse.shape)
        self.extra = mask is not None or lse is not None or cu_q is not None
        self.device = q.device

        p.batch, p.heads_q, p.heads_kv, p.len_q, p.len_kv, p.head_dim = geom
        if layout == HND:
            b, h, n = 0, 1, 2
        elif layout == NHD:
            b, h, n = 0, 2, 1
        else:  # varlen [tokens, heads, dim]: no batch stride
            b, h, n = None, 1, 0
        for view, t in ((p.q, q), (p.k, k), (p.v, v), (p.out, out)):
            s = t.stride()
            view.batch_stride = 0 if b is None else s[b]
            view.head_stride, view.token_stride = s[h], s[n]
        p.dtype = _DTYPES[q.dtype]
        if layout == VARLEN:
            p.max_len_q, p.max_len_kv = max_q, max_kv
            p.check_seqlens = 1 if check else 0
        p.causal = 1 if is_causal else 0
        scale, _, algorithm, granularity, qk_precision, pv_precision, pv_accum, smooth_k, smooth_v = options
        p.scale = scale
        p.algorithm, p.qk_granularity, p.qk_precision = algorithm, granularity, qk_precision
        p.pv_precision, p.pv_accum = pv_precision, pv_accum
        p.smooth_k, p.smooth_v = int(smooth_k), int(smooth_v)
        if mask is not None:
            m = p.mask
            if mask.dtype == torch.bool:
                m.type = _lib.MASK_BOOL
            else:
                m.type, m.dtype = _lib.MASK_ADDITIVE, _MASK_DTYPES[mask.dtype]
            m.batch_stride, m.head_stride, m.q_stride, m.kv_stride = mask.stride()
        if lse is not None:
            if layout == VARLEN:
                p.lse_batch_stride, p.lse_head_stride, p.lse_token_stride = 0, lse.stride(0), lse.stride(1)
            else:
                p.lse_batch_stride, p.lse_head_stride, p.lse_token_stride = lse.stride()
        if q.is_cuda:
            self.index = q.get_device()
            p.device_type = _lib.DEVICE_CUDA
            p.device_index = self.index
        else:
            self.index = -1
        # The workspace size is a function of what the key holds, except on the
        # CPU for varlen problems, where it follows cu_seqlens' contents.
        self.ws_bytes = None
        self.cache_size = not (self.index < 0 and layout == VARLEN)

    def run(self, q, k, v, out, lse, mask, cu_q, cu_kv, keep_ws=False) -> int:
        """Runs the problem on these tensors; returns the library's status (a
        failure's message stays readable through sageattn_last_error()).
        keep_ws: an eager call outside any graph machinery may use a kept workspace."""
        w = self.words
        w[_Q_DATA] = q.data_ptr()
        w[_K_DATA] = k.data_ptr()
        w[_V_DATA] = v.data_ptr()
        w[_OUT_DATA] = out.data_ptr()
        if self.extra:
            if mask is not None:
                w[_MASK_DATA] = mask.data_ptr()
            if lse is not None:
                w[_LSE_DATA] = lse.data_ptr()
            if cu_q is not None:
                w[_CU_Q] = cu_q.data_ptr()
                w[_CU_KV] = cu_kv.data_ptr()
        if self.index >= 0:
            stream = _raw_stream(self.index)
        else:
            self.ints[_NUM_THREADS] = torch.get_num_threads()
            stream = None
        nbytes = self.ws_bytes
        if nbytes is None:
            status = _lib.workspace_size(self.addr, self.size_addr)
            if status != _lib.SUCCESS:
                return status
            nbytes = self.size.value
            if self.cache_size:
                self.ws_bytes = nbytes
        if not nbytes:
            return _lib.forward(self.addr, None, 0, stream)
        # Allocated through torch (caching allocator, graph pools; on CUDA it is
        # recycled in stream order, after the kernel) and aligned by hand,
        # since no allocator promises the library's alignment. For eager calls
        # (keep_ws: not through the op, which compiled graphs and their graph
        # pools use) a small one is kept per thread, device and stream and
        # reused in that stream's order (the allocation costs as much host time
        # as a kernel launch), except while a graph is being captured.
        if keep_ws and self.index >= 0 and nbytes <= _WS_KEEP and self.index == _current_device() and not _capturing():
            try:
                kept = _tls.workspaces
            except AttributeError:
                kept = _tls.workspaces = {}
            ws = kept.get((self.index, stream))
            if ws is None:
                ws = kept[self.index, stream] = torch.empty(_WS_KEEP + _WS_ALIGN, dtype=_U8, device=self.device)
        else:
            ws = torch.empty(nbytes + _WS_ALIGN, dtype=_U8, device=self.device)
        base = ws.data_ptr()
        return _lib.forward(self.addr, base + (-base % _WS_ALIGN), nbytes, stream)


# Plans by metadata, per thread (each owns its struct); a bounded number, since
# eager code with ever-changing shapes would otherwise grow the cache forever.
_MAX_PLANS = 256
_tls = threading.local()


def _meta(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def _forward(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, keep_ws=False, check=False
):
    """The work of the `fwd` op (options: its arguments from `scale` to
    `smooth_v`; check: its `check_seqlens`); returns (out, lse), lse None
    unless asked for.

    Everything checked here in Python is a function of the tensors' metadata,
    so it is checked once per combination and the struct it fills is kept (a
    _Plan); the library still validates every call in full."""
    key = (
        q.shape, q.stride(), k.shape, k.stride(), v.shape, v.stride(),
        q.dtype, k.dtype, v.dtype, q.device, k.device, v.device, layout, is_causal, options,
    )  # fmt: skip
    if attn_mask is not None or cu_q is not None or cu_kv is not None:
        key += (_meta(attn_mask), _meta(cu_q), _meta(cu_kv), max_q, max_kv, check)
    try:
        plans = _tls.plans
    except AttributeError:
        plans = _tls.plans = {}
    plan = plans.get(key)
    if plan is None:
        return _first_forward(
            plans, key, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, keep_ws,
            check,
        )
    if plan.fix:
        q, k, v = _fix_last_dim(q), _fix_last_dim(k), _fix_last_dim(v)
    out = torch.empty_like(q)
    lse = None if plan.lse_shape is None else torch.empty(plan.lse_shape, dtype=_F32, device=plan.device)
    status = plan.run(q, k, v, out, lse, attn_mask, cu_q, cu_kv, keep_ws)
    if status == _lib.SUCCESS:
        if _counting.active is not None:
            _counting.active.ran()
        return out, lse
    mask = None if attn_mask is None else attn_mask.expand(plan.mask_shape)
    args = (layout, plan.geom, mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, check)
    return _failed(status, q, k, v, out, lse, args, fallback)


def _first_forward(
    plans, key, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, keep_ws=False,
    check=False,
):
    """A combination not seen before on this thread: every Python-side check,
    then the run, and the plan kept if the library accepted the problem."""
    fix = q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1
    if fix:
        q, k, v = _fix_last_dim(q), _fix_last_dim(k), _fix_last_dim(v)
    geom = _geometry(q, k, v, layout, cu_q, cu_kv)
    batch, hq, _, lq, lkv, _ = geom
    mask_shape = _mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv)
    mask = None if attn_mask is None else _expand_mask(attn_mask, q.device, mask_shape)
    out = torch.empty_like(q)
    lse = _new_lse(q, layout, batch, hq, lq, options[1])
    args = (layout, geom, mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, check)
    plan = _Plan(q, k, v, out, lse, *args)
    plan.fix, plan.mask_shape = fix, mask_shape
    status = plan.run(q, k, v, out, lse, mask, cu_q, cu_kv, keep_ws)
    if status != _lib.SUCCESS:
        return _failed(status, q, k, v, out, lse, args, fallback)
    if len(plans) >= _MAX_PLANS:
        plans.clear()
    plans[key] = plan
    if _counting.active is not None:
        _counting.active.ran()
    return out, lse


def _failed(status, q, k, v, out, lse, args, fallback):
    """After a failed run: a retry on fresh copies for misaligned views, torch's
    answer where the caller allows it (`fallback`), or the library's error.
    args: (layout, geom, mask expanded, cu_q, cu_kv, max_q, max_kv, is_causal, options, check)."""
    layout, _, mask, cu_q, cu_kv, _, _, is_causal, options, _ = args
    guard = _NO_GUARD
    if q.is_cuda and q.get_device() != _current_device():
        guard = torch.cuda.device(q.get_device())
    with guard:
        if status == _lib.ERROR_MISALIGNED:
            # A view whose start or rows are off the kernel's alignment: fresh copies are not.
            fresh = [t.clone(memory_format=torch.contiguous_format) for t in (q, k, v)]
            status = _Plan(*fresh, out, lse, *args).run(*fresh, out, lse, mask, cu_q, cu_kv)
            if status == _lib.SUCCESS:
                if _counting.active is not None:
                    _counting.active.ran()
                return out, lse
        error = _lib.error_for(status, "sageattention")
        return_lse, scale = options[1], options[0]
        if fallback and not return_lse and status in (_lib.ERROR_UNSUPPORTED, _lib.ERROR_MISALIGNED):
            out.copy_(torch_attention(q, k, v, layout, mask, cu_q, cu_kv, is_causal, scale))
            if _counting.active is not None:
                _counting.active.fell_back(f"kernel: {error.status_name}")
            return out, lse
    raise error


def _fwd_kernel(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *rest):
    # rest: the options (scale .. smooth_v), fallback, and check_seqlens when given (it has a default).
    check = len(rest) > 10 and rest[10]
    out, lse = _forward(
        q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, rest[:9], rest[9], check=check
    )
    return out, lse if lse is not None else out.new_empty((0,), dtype=torch.float32)


def _fwd_fake(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale, return_lse,
    algorithm, qk_granularity, qk_precision, pv_precision, pv_accum, smooth_k, smooth_v, fallback, check_seqlens=False,
):
    q, k, v = _fix_last_dim(q), _fix_last_dim(k), _fix_last_dim(v)
    batch, hq, _, lq, lkv, _ = _geometry(q, k, v, layout, cu_q, cu_kv)
    if attn_mask is not None:
        _expand_mask(attn_mask, q.device, _mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv))
    lse = _new_lse(q, layout, batch, hq, lq, return_lse)
    return torch.empty_like(q), lse if lse is not None else q.new_empty((0,), dtype=torch.float32)


_library.impl("fwd", _fwd_kernel, "CPU")
_library.impl("fwd", _fwd_kernel, "CUDA")
torch.library.register_fake("sageattention::fwd", _fwd_fake, lib=_library)


# ------------------------------------------------------------- torch math


def _to_hnd(t: torch.Tensor, layout: int) -> torch.Tensor:
    return t.transpose(1, 2) if layout == NHD else t


def _causal_keep(lq: int, lkv: int, device) -> torch.Tensor:
    """Bottom-right aligned causal mask: query i sees keys j <= i + lkv - lq."""
    return torch.ones(lq, lkv, dtype=torch.bool, device=device).tril(lkv - lq)


def _sdpa_hnd(q, k, v, mask, is_causal, scale):
    """Attention of [b, h, n, d] views with torch's own SDPA and our semantics
    (bottom-right causal, GQA, scale 0 = default)."""
    lq, lkv = q.size(-2), k.size(-2)
    if is_causal and (mask is not None or lq != lkv):
        keep = _causal_keep(lq, lkv, q.device)
        if mask is None:
            mask = keep
        elif mask.dtype == torch.bool:
            mask = mask & keep
        else:
            mask = mask.masked_fill(~keep, float("-inf"))
        is_causal = False
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    kwargs = {"scale": scale if scale != 0.0 else None}
    if k.size(1) != q.size(1):
        if _SDPA_HAS_GQA:
            kwargs["enable_gqa"] = True
        else:
            group = q.size(1) // k.size(1)
            k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return torch_sdpa(q, k, v, attn_mask=mask, is_causal=is_causal, **kwargs)


def torch_attention(q, k, v, layout, mask, cu_q, cu_kv, is_causal, scale):
    """What `fwd` computes, done by torch's own SDPA: the fallback for
    problems the library cannot run on this device. `mask` is already
    expanded to [batch, heads_q, len_q, len_kv] (varlen: max lengths).
    Returns out in q's layout."""
    if layout != VARLEN:
        out = _sdpa_hnd(_to_hnd(q, layout), _to_hnd(k, layout), _to_hnd(v, layout), mask, is_causal, scale)
        return _to_hnd(out, layout)
    out = torch.empty_like(q)
    starts_q, starts_kv = cu_q.tolist(), cu_kv.tolist()
    for b in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_kv[b], starts_kv[b + 1]
        seq_mask = mask[b : b + 1, :, : q1 - q0, : k1 - k0] if mask is not None else None
        seq = [t.transpose(0, 1).unsqueeze(0) for t in (q[q0:q1], k[k0:k1], v[k0:k1])]
        out[q0:q1] = _sdpa_hnd(*seq, seq_mask, is_causal, scale)[0].transpose(0, 1)
    return out


# --------------------------------------------------------------- backward

# Float32 bytes of one query-chunk's score-sized temporaries; bounds the
# backward's memory whatever the sequence length.
_BWD_CHUNK_BYTES = 256 << 20


def _grad_hnd(do, glse, q, k, v, mask, is_causal, scale):
    """Exact gradients of softmax(scale·q·kᵀ + mask)·v (and of its LSE), in
    float32, for [b, h, n, d] views; K/V heads shared by query groups (GQA)."""
    f32 = torch.float32
    batch, hq, lq, d = q.shape
    hkv, lkv = k.size(1), k.size(2)
    group = hq // hkv
    scale = scale if scale != 0.0 else 1.0 / math.sqrt(d)
    qf = q.to(f32).unflatten(1, (hkv, group))
    kf = k.to(f32).unsqueeze(2)
    vf = v.to(f32).unsqueeze(2)
    dof = do.to(f32).unflatten(1, (hkv, group))
    glf = glse.to(f32).unflatten(1, (hkv, group)) if glse is not None else None
    m = mask.expand(batch, hq, lq, lkv).unflatten(1, (hkv, group)) if mask is not None else None
    dq = torch.empty_like(qf)
    dk = torch.zeros(batch, hkv, lkv, d, dtype=f32, device=q.device)
    dv = torch.zeros_like(dk)
    rows = max(1, _BWD_CHUNK_BYTES // max(1, 16 * batch * hq * lkv))
    cols = torch.arange(lkv, device=q.device)
    for r0 in range(0, lq, rows):
        r1 = min(lq, r0 + rows)
        qc, doc = qf[..., r0:r1, :], dof[..., r0:r1, :]
        s = (qc @ kf.transpose(-1, -2)) * scale
        if m is not None:
            mc = m[..., r0:r1, :]
            s = s.masked_fill(~mc, float("-inf")) if mc.dtype == torch.bool else s + mc.to(f32)
        if is_causal:
            visible = cols <= torch.arange(r0, r1, device=q.device).unsqueeze(1) + (lkv - lq)
            s = s.masked_fill(~visible, float("-inf"))
        top = s.amax(-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows that see no key
        e = torch.exp(s - top)
        z = e.sum(-1, keepdim=True)
        pr = e / torch.where(z > 0, z, torch.ones_like(z))
        o = pr @ vf
        dv += (pr.transpose(-1, -2) @ doc).sum(2)
        ds = doc @ vf.transpose(-1, -2) - (doc * o).sum(-1, keepdim=True)
        if glf is not None:
            ds = ds + glf[..., r0:r1].unsqueeze(-1)
        ds = pr * ds
        dq[..., r0:r1, :] = (ds @ kf) * scale
        dk += (ds.transpose(-1, -2) @ qc).sum(2) * scale
    return dq.flatten(1, 2), dk, dv


def _bwd_kernel(grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale):
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if layout != VARLEN:
        h = lambda t: _to_hnd(t, layout)
        gq, gk, gv = _grad_hnd(h(grad_out), grad_lse, h(q), h(k), h(v), attn_mask, is_causal, scale)
        h(dq).copy_(gq)
        h(dk).copy_(gk)
        h(dv).copy_(gv)
        return dq, dk, dv
    starts_q, starts_kv = cu_q.tolist(), cu_kv.tolist()
    batch = len(starts_q) - 1
    dk.zero_()
    dv.zero_()
    for b in range(batch):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_kv[b], starts_kv[b + 1]
        mask = None
        if attn_mask is not None:
            mask = attn_mask.expand(batch, q.size(1), max_q, max_kv)[b : b + 1, :, : q1 - q0, : k1 - k0]
        seq = lambda t, a, z: t[a:z].transpose(0, 1).unsqueeze(0)
        glse = grad_lse[:, q0:q1].unsqueeze(0) if grad_lse is not None else None
        gq, gk, gv = _grad_hnd(
            seq(grad_out, q0, q1), glse, seq(q, q0, q1), seq(k, k0, k1), seq(v, k0, k1), mask, is_causal, scale
        )
        dq[q0:q1] = gq[0].transpose(0, 1)
        dk[k0:k1] = gk[0].transpose(0, 1)
        dv[k0:k1] = gv[0].transpose(0, 1)
    return dq, dk, dv


def _bwd_fake(grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


_library.impl("bwd", _bwd_kernel, "CPU")
_library.impl("bwd", _bwd_kernel, "CUDA")
torch.library.register_fake("sageattention::bwd", _bwd_fake, lib=_library)


def _setup_context(ctx, inputs, output):
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale = inputs[:11]
    if attn_mask is not None and attn_mask.requires_grad:
        raise NotImplementedError("sageattention does not differentiate attn_mask; detach it or use torch's SDPA")
    ctx.save_for_backward(q, k, v, attn_mask, cu_q, cu_kv)
    ctx.args = (layout, max_q, max_kv, is_causal, scale)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, attn_mask, cu_q, cu_kv = ctx.saved_tensors
    layout, max_q, max_kv, is_causal, scale = ctx.args
    if grad_lse is not None and grad_lse.numel() == 0:
        grad_lse = None
    dq, dk, dv = torch.ops.sageattention.bwd.default(
        grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale
    )
    return (dq, dk, dv) + (None,) * 18


torch.library.register_autograd("sageattention::fwd", _backward, setup_context=_setup_context, lib=_library)


# ------------------------------------------------------------------ calling

_fwd_op = torch.ops.sageattention.fwd.default
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_Tensor = torch.Tensor


class Options(NamedTuple):
    """The `fwd` arguments from `scale` to `smooth_v`, in schema order."""

    scale: float = 0.0  # 0 = 1/sqrt(head_dim)
    return_lse: bool = False
    algorithm: int = _lib.ALGORITHM_QUANTIZED
    qk_granularity: int = _lib.QK_PER_THREAD
    qk_precision: int = _lib.QK_AUTO
    pv_precision: int = _lib.PV_AUTO
    pv_accum: int = _lib.ACCUM_AUTO
    smooth_k: bool = True
    smooth_v: bool = False


DEFAULT_OPTIONS = Options()


def attention(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback=False, check_seqlens=False
):
    """Runs the `fwd` op; returns (out, lse). Without options.return_lse,
    lse is None or an empty tensor: callers must not use it. check_seqlens:
    the op's argument (varlen on CUDA: cu_seqlens checked on the device)."""
    if (
        _is_compiling()
        or _dispatch_modes()
        or type(q) is not _Tensor
        or type(k) is not _Tensor
        or type(v) is not _Tensor
        or (attn_mask is not None and type(attn_mask) is not _Tensor)
        or (cu_q is not None and (type(cu_q) is not _Tensor or type(cu_kv) is not _Tensor))
        or not (q.is_cuda or q.is_cpu)
        or (
            torch.is_grad_enabled()
            and (
                q.requires_grad
                or k.requires_grad
                or v.requires_grad
                or (attn_mask is not None and attn_mask.requires_grad)
            )
        )
    ):
        return _fwd_op(
            q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *options, fallback, check_seqlens
        )
    # Plain eager tensors, nothing to differentiate, no dispatch mode watching:
    # the op would only route to this same code, through a dispatcher and an
    # autograd layer that cost more host time than the rest of the call.
    return _forward(
        q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, True, check_seqlens
    )


def attention_checked(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback=False):
    """attention() for callers that have already checked what it checks on the
    tensors: q, k, v (and the mask) plain torch.Tensors on a CPU or CUDA
    device, none needing grad (sdpa's rules ensure it)."""
    if _is_compiling() or _dispatch_modes():
        return _fwd_op(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *options, fallback)
    return _forward(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, True)
