"""The torch.library operators: registered kernels really compute, fake
implementations agree with them, and the dispatcher path is honoured."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import sageattention as sa
from attn_helpers import cosine, make, qkv, reference
from sageattention import _backward, _ops

FWD = torch.ops.sageattention.fwd.default
BWD = torch.ops.sageattention.bwd.default


def fwd_args(q, k, v, layout=_ops.HND, mask=None, cu=None, max_len=0, causal=False, lse=False):
    return (q, k, v, layout, mask, cu, cu, max_len, max_len, causal, 0.0, lse, 0, 0, 0, 0, 0, True, False, False)


def test_kernels_are_registered_apart_from_the_fakes():
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("sageattention::fwd", key)
        assert torch._C._dispatch_has_kernel_for_dispatch_key("sageattention::bwd", key)
    assert _ops._fwd_fake is not _ops._fwd_kernel and _backward.bwd_fake is not _backward.bwd_kernel
    assert _ops._fwd_fake.__name__ != _ops._fwd_kernel.__name__


def test_fwd_op_computes_through_the_dispatcher():
    q, k, v = qkv(hq=2, lq=48, d=32, seed=1)
    out, lse = FWD(*fwd_args(q, k, v, lse=True))
    ref, ref_lse = reference(q, k, v)
    assert cosine(out, ref) >= 0.999 and (lse.double() - ref_lse).abs().max() < 0.05
    assert torch.equal(out, sa.sageattn(q, k, v))  # the eager shortcut runs the same kernel


def test_bwd_op_computes_through_the_dispatcher():
    q, k, v = qkv(hq=2, lq=16, d=8, seed=2)
    do = make(q.shape, q.dtype, 3)
    dq, dk, dv = BWD(do, None, q, k, v, _ops.HND, None, None, None, 0, 0, True, 0.0)
    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    reference(*leaves, causal=True)[0].backward(do.double())
    for got, leaf in zip((dq, dk, dv), leaves):
        assert (got.double() - leaf.grad).abs().max() <= 0.01 * leaf.grad.abs().max() + 1e-3


LAYOUT_CASES = {
    "HND": lambda: (qkv(b=2, hq=4, hkv=2, lq=24, lkv=40, d=16), _ops.HND, None, 0),
    "NHD": lambda: (qkv(b=2, hq=4, hkv=2, lq=24, lkv=40, d=16, layout="NHD"), _ops.HND + 1, None, 0),
    "NHD memory as HND": lambda: (tuple(t.transpose(1, 2) for t in qkv(lq=24, d=16, layout="NHD")), _ops.HND, None, 0),
    "varlen": lambda: ((make((30, 4, 16)), make((30, 2, 16)), make((30, 2, 16))), _ops.VARLEN, torch.tensor([0, 10, 30], dtype=torch.int32), 20),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_fake_matches_real_shapes_and_strides(case):
    (q, k, v), layout, cu, max_len = LAYOUT_CASES[case]()
    mask = torch.ones(1, 1, 1, dtype=torch.bool)
    args = fwd_args(q, k, v, layout, mask, cu, max_len, causal=True, lse=True)
    real = FWD(*args)
    with FakeTensorMode() as mode:
        fake = FWD(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
    for r, f in zip(real, fake):
        assert (r.shape, r.stride(), r.dtype) == (f.shape, f.stride(), f.dtype)


def test_fake_raises_what_the_kernel_raises():
    q, k, v = qkv(lq=8, d=8)
    k = k.bfloat16()
    with FakeTensorMode() as mode, pytest.raises(ValueError, match="one dtype"):
        FWD(*fwd_args(mode.from_tensor(q), mode.from_tensor(k), mode.from_tensor(v)))


def test_dispatch_modes_see_the_op():
    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    q, k, v = qkv(lq=16, d=16)
    with Seen() as seen:
        sa.sageattn(q, k, v)
    assert "sageattention.fwd.default" in seen.ops


def test_opcheck():
    q, k, v = qkv(b=1, hq=2, lq=16, lkv=24, d=16, seed=4)
    mask = make((16, 24), torch.float32, 5)
    samples = [
        fwd_args(q, k, v, lse=True),
        fwd_args(q, k, v, mask=mask, causal=True),
        fwd_args(*(t.requires_grad_() for t in qkv(b=1, hq=2, lq=16, d=8, seed=6)), lse=True),
    ]
    for args in samples:
        torch.library.opcheck(FWD, args)
