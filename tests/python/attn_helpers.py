"""Float64 attention in plain torch, input makers and a recorder of what
reaches the C ABI: the tools the package tests share."""

import contextlib
import math

import torch

import sageattention
from sageattention import _lib


def make(shape, dtype=torch.float16, seed=0, scale=1.0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float32) * scale).to(dtype=dtype, device=device)


def qkv(b=1, hq=2, hkv=None, lq=64, lkv=None, d=32, dtype=torch.float16, layout="HND", seed=0, device="cpu"):
    hkv = hkv or hq
    lkv = lkv or lq
    if layout == "HND":
        shapes = (b, hq, lq, d), (b, hkv, lkv, d)
    else:
        shapes = (b, lq, hq, d), (b, lkv, hkv, d)
    return (
        make(shapes[0], dtype, seed, device=device),
        make(shapes[1], dtype, seed + 1, device=device),
        make(shapes[1], dtype, seed + 2, device=device),
    )


def to_hnd(t, layout):
    return t.transpose(1, 2) if layout == "NHD" else t


def reference(q, k, v, layout="HND", mask=None, causal=False, scale=None):
    """(out, lse) in float64, out in q's layout, lse [b, hq, lq]; causal is
    bottom-right aligned; rows that see no key give 0 and -inf."""
    q, k, v = (to_hnd(t, layout).double() for t in (q, k, v))
    hq, hkv = q.size(1), k.size(1)
    k = k.repeat_interleave(hq // hkv, 1)
    v = v.repeat_interleave(hq // hkv, 1)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    s = (q @ k.transpose(-1, -2)) * scale
    lq, lkv = s.shape[-2:]
    if mask is not None:
        if mask.dtype == torch.bool:
            s = s.masked_fill(~mask, float("-inf"))
        else:
            s = s + mask.double()
    if causal:
        keep = torch.ones(lq, lkv, dtype=torch.bool).tril(lkv - lq)
        s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse.unsqueeze(-1))
    p = torch.nan_to_num(p, nan=0.0)
    out = p @ v
    return to_hnd(out, layout), lse


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


class AbiRecorder:
    """Wraps the C calls that run a problem and records the problem each run passed: what
    really reached the C ABI (pointers, strides, options). A plan's run (sageattn_plan_forward)
    is recorded as the struct the plan was made of (sageattn_plan_create) with the run's
    pointers in it; sageattn_forward's as its struct."""

    def __init__(self):
        self.calls = []
        self._forward = _lib.forward
        self._plan_create = _lib.plan_create
        self._plan_forward = _lib.plan_forward
        self._plans = {}

    @staticmethod
    def _copy(addr):
        import ctypes

        copy = _lib.Problem()
        ctypes.memmove(ctypes.addressof(copy), addr, ctypes.sizeof(copy))
        return copy

    def __call__(self, addr, ws, nbytes, stream):
        self.calls.append(self._copy(addr))
        return self._forward(addr, ws, nbytes, stream)

    def plan_create(self, addr, plan_addr):
        import ctypes

        status = self._plan_create(addr, plan_addr)
        if status == _lib.SUCCESS:
            self._plans[ctypes.c_void_p.from_address(plan_addr).value] = self._copy(addr)
        return status

    def plan_forward(self, plan, data_addr, ws, nbytes, stream):
        import ctypes

        copy = self._copy(ctypes.addressof(self._plans[plan]))
        d = _lib.Data.from_address(data_addr)
        copy.q.data, copy.k.data, copy.v.data, copy.out.data = d.q, d.k, d.v, d.out
        copy.mask.data, copy.lse, copy.cu_seqlens_q, copy.cu_seqlens_kv = d.mask, d.lse, d.cu_seqlens_q, d.cu_seqlens_kv
        self.calls.append(copy)
        return self._plan_forward(plan, data_addr, ws, nbytes, stream)

    @property
    def last(self):
        return self.calls[-1]


@contextlib.contextmanager
def record_abi(monkeypatch):
    from sageattention import _plan

    _plan._tls.__dict__.pop("plans", None)  # plans made from now on are made through the recorder
    rec = AbiRecorder()
    monkeypatch.setattr(_lib, "forward", rec)
    monkeypatch.setattr(_lib, "plan_create", rec.plan_create)
    monkeypatch.setattr(_lib, "plan_forward", rec.plan_forward)
    yield rec


def refuse_runs(monkeypatch, status):
    """Every run the library is asked for returns `status` (problems still pass the checks)."""
    monkeypatch.setattr(_lib, "forward", lambda *a: status)
    monkeypatch.setattr(_lib, "plan_forward", lambda *a: status)


def view_of(t, layout):
    """(data, batch, head, token strides) as the ABI should see tensor t."""
    s = t.stride()
    if layout == "HND":
        return t.data_ptr(), s[0], s[1], s[2]
    if layout == "NHD":
        return t.data_ptr(), s[0], s[2], s[1]
    return t.data_ptr(), 0, s[1], s[0]


def abi_view(tensor_struct):
    return (tensor_struct.data, tensor_struct.batch_stride, tensor_struct.head_stride, tensor_struct.token_stride)


def has_cuda_backend():
    return "cuda" in sageattention.build_info()["backends"]


def same_run(x, y):
    """Two runs of the same call agree bit for bit, on the CPU and on CUDA (the
    kernels add their cross-CTA sums in a fixed order)."""
    return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
