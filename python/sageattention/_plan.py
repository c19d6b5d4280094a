"""The forward's host path: a problem struct per combination of shapes, strides,
dtypes, devices and options, filled once after the checks in Python, and the
library's plan of it (sageattn_plan_create: its checks and choices made once),
kept per thread; each call then writes its data pointers and makes one C call,
sageattn_plan_forward, which checks only those. On failure: a retry on fresh
copies for misaligned views, torch's answer where the caller allows it, or the
library's error."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import weakref

import torch

from . import _checks, _counting, _fallback, _lib
from ._checks import HND, NHD, VARLEN

# Workspace bases the library asks for: 256 bytes on CUDA, 64 on the CPU.
_WS_ALIGN = 256
_NO_GUARD = contextlib.nullcontext()


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
    devices and options, whose checks in Python have passed, and the library's
    plan of it: each call writes its data pointers and runs the plan. Also keeps
    the workspace size the library asked for, so that a call is one C call."""

    __slots__ = (
        "raw", "addr", "words", "ints", "size", "size_addr", "ws_bytes", "cache_size",
        "device", "index", "extra", "fix", "geom", "mask_shape", "lse_shape",
        "handle", "destroy", "threads", "data", "data_addr", "data_words", "__weakref__",
    )  # fmt: skip

    def __init__(self, q, k, v, out, lse, layout, geom, mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, check):
        self.raw = raw = bytearray(_DEFAULTS)
        p = _P.from_buffer(raw)
        self.addr = ctypes.addressof(p)
        self.words = memoryview(raw).cast("Q")
        self.ints = memoryview(raw).cast("i")
        self.size = ctypes.c_size_t(0)
        self.size_addr = ctypes.addressof(self.size)
        # The library's plan of the struct (sageattn_plan_create), made on the first run, when
        # the struct holds real pointers; each later run passes only its pointers (`data`).
        self.handle = None
        self.destroy = None
        self.threads = 0
        self.data = bytearray(ctypes.sizeof(_lib.Data))  # a sageattn_data: its 8 pointers as words
        self.data_addr = ctypes.addressof(_lib.Data.from_buffer(self.data))
        self.data_words = memoryview(self.data).cast("Q")
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
        p.dtype = _checks.DTYPES[q.dtype]
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
                m.type, m.dtype = _lib.MASK_ADDITIVE, _checks.MASK_DTYPES[mask.dtype]
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

    def _planned(self) -> int:
        """Makes the library's plan of the struct (its pointers written); returns the status."""
        if self.destroy is not None:
            self.destroy()  # the plan of an earlier thread count
        handle = ctypes.c_void_p()
        status = _lib.plan_create(self.addr, ctypes.addressof(handle))
        if status == _lib.SUCCESS:
            self.handle = handle.value
            self.destroy = weakref.finalize(self, _lib.plan_destroy, handle.value)
        return status

    def run(self, q, k, v, out, lse, mask, cu_q, cu_kv, keep_ws=False) -> int:
        """Runs the problem on these tensors; returns the library's status (a
        failure's message stays readable through sageattn_last_error()).
        keep_ws: an eager call outside any graph machinery may use a kept workspace."""
        d = self.data_words
        d[0] = q.data_ptr()
        d[1] = k.data_ptr()
        d[2] = v.data_ptr()
        d[3] = out.data_ptr()
        if self.extra:
            d[4] = 0 if mask is None else mask.data_ptr()
            d[5] = 0 if lse is None else lse.data_ptr()
            d[6] = 0 if cu_q is None else cu_q.data_ptr()
            d[7] = 0 if cu_kv is None else cu_kv.data_ptr()
        if self.index >= 0:
            stream = _raw_stream(self.index)
        else:
            stream = None
            threads = torch.get_num_threads()  # the CPU's worker threads are the plan's
            if threads != self.threads:
                self.threads, self.handle = threads, None
                self.ints[_NUM_THREADS] = threads
        if self.handle is None:
            w = self.words
            w[_Q_DATA], w[_K_DATA], w[_V_DATA], w[_OUT_DATA], w[_MASK_DATA], w[_LSE_DATA], w[_CU_Q], w[_CU_KV] = d
            if _lib.plan_create is None:  # a library from before plans: the struct, checked in full every call
                return self._call(_lib.workspace_size, _lib.forward, (self.addr,), stream, keep_ws)
            status = self._planned()
            if status != _lib.SUCCESS:
                return status
        return self._call(_lib.plan_workspace_size, _lib.plan_forward, (self.handle, self.data_addr), stream, keep_ws)

    def _call(self, size, forward, head, stream, keep_ws) -> int:
        """forward(*head, workspace, bytes, stream), the workspace size asked of size(*head, ...)
        unless kept."""
        nbytes = self.ws_bytes
        if nbytes is None:
            status = size(*head, self.size_addr)
            if status != _lib.SUCCESS:
                return status
            nbytes = self.size.value
            if self.cache_size:
                self.ws_bytes = nbytes
        if not nbytes:
            return forward(*head, None, 0, stream)
        ws = self._workspace(nbytes, stream, keep_ws)  # alive through the call
        base = ws.data_ptr()
        return forward(*head, base + (-base % _WS_ALIGN), nbytes, stream)

    def _workspace(self, nbytes, stream, keep_ws) -> torch.Tensor:
        """A workspace of nbytes and _WS_ALIGN more (to align it by hand); the caller keeps it
        alive through the library call."""
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
        return ws


# Plans by metadata, per thread (each owns its struct); a bounded number, since
# eager code with ever-changing shapes would otherwise grow the cache forever.
_MAX_PLANS = 256
_tls = threading.local()


def _meta(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def forward(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, keep_ws=False, check=False
):
    """The work of the `fwd` op (options: its arguments from `scale` to
    `smooth_v`; check: its `check_seqlens`); returns (out, lse), lse None
    unless asked for.

    Everything checked here in Python is a function of the tensors' metadata,
    so it is checked once per combination and the struct it fills is kept (a
    _Plan), with the library's plan of it, which checks each call's pointers."""
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
        q, k, v = _checks.fix_last_dim(q), _checks.fix_last_dim(k), _checks.fix_last_dim(v)
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
        q, k, v = _checks.fix_last_dim(q), _checks.fix_last_dim(k), _checks.fix_last_dim(v)
    geom = _checks.geometry(q, k, v, layout, cu_q, cu_kv)
    batch, hq, _, lq, lkv, _ = geom
    mask_shape = _checks.mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv)
    mask = None if attn_mask is None else _checks.expand_mask(attn_mask, q.device, mask_shape)
    out = torch.empty_like(q)
    lse = _checks.new_lse(q, layout, batch, hq, lq, options[1])
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
            out.copy_(_fallback.torch_attention(q, k, v, layout, mask, cu_q, cu_kv, is_causal, scale))
            if _counting.active is not None:
                _counting.active.fell_back(f"kernel: {error.status_name}")
            return out, lse
    raise error

