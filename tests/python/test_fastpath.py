"""The eager shortcut against the operator path.

In eager mode with plain tensors and nothing to differentiate, attention()
calls the op's kernel directly and reuses a per-thread plan (the filled problem
struct and its workspace size) for metadata it has seen. These tests hold that
shortcut to the operator through the dispatcher: the same bits, the same
errors, and the library's validation on every call.
"""

import contextlib
import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import sageattention as sa
from attn_helpers import has_cuda_backend, make, qkv, same_run
from sageattention import _lib, _ops, _plan

F16, BF16 = torch.float16, torch.bfloat16


class Through(TorchDispatchMode):
    """Passes every op on unchanged; while it is active, calls take the op path."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def op_calls(monkeypatch):
    """Counts the calls that went through the dispatcher."""
    calls = []
    real = _ops._fwd_op

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(_ops, "_fwd_op", counted)
    yield calls


@contextlib.contextmanager
def library_calls(monkeypatch):
    """Counts the C calls that run problems: plans made, their workspace sizes, their runs."""
    counts = {"plan_create": 0, "plan_workspace_size": 0, "plan_forward": 0}
    for name in counts:
        real = getattr(_lib, name)

        def counted(*args, _real=real, _name=name):
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(_lib, name, counted)
    yield counts


def clear_plans():
    _plan._tls.__dict__.pop("plans", None)


def flat(result):
    return list(result) if isinstance(result, tuple) else [result]


def assert_same(a, b):
    a, b = flat(a), flat(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.shape, x.stride(), x.dtype, x.device) == (y.shape, y.stride(), y.dtype, y.device)
        assert same_run(x, y), "the eager shortcut and the op path disagree"


def packed(seed, layout="NHD"):
    """q, k, v as strided slices of one fused qkv tensor, as models make them."""
    qkv_ = make((2, 40, 3, 4, 32), F16, seed)
    q, k, v = qkv_.unbind(2)
    return (q, k, v) if layout == "NHD" else tuple(t.transpose(1, 2) for t in (q, k, v))


def varlen(seed, dtype=F16):
    cu_q = torch.tensor([0, 7, 30], dtype=torch.int32)
    cu_k = torch.tensor([0, 12, 40], dtype=torch.int32)
    q, k, v = make((30, 4, 16), dtype, seed), make((40, 2, 16), dtype, seed + 1), make((40, 2, 16), dtype, seed + 2)
    return q, k, v, cu_q, cu_k


# Each case: seed -> the call's result (out or a tuple with lse).
CASES = {
    "sageattn HND": lambda s: sa.sageattn(*qkv(b=2, hq=4, lq=40, d=32, seed=s)),
    "sageattn NHD causal GQA lq!=lkv": lambda s: sa.sageattn(
        *qkv(b=2, hq=4, hkv=2, lq=24, lkv=56, d=64, layout="NHD", seed=s), tensor_layout="NHD", is_causal=True
    ),
    "sageattn bf16 return_lse": lambda s: sa.sageattn(*qkv(hq=2, lq=33, d=48, dtype=BF16, seed=s), return_lse=True),
    "sageattn bool mask broadcast": lambda s: sa.sageattn(
        *qkv(b=2, hq=2, lq=20, lkv=36, d=16, seed=s), attn_mask=make((1, 1, 20, 36), torch.float32, s) > 0
    ),
    "sageattn additive mask + causal": lambda s: sa.sageattn(
        *qkv(b=1, hq=2, lq=36, d=16, seed=s), attn_mask=make((36, 36), torch.float32, s), is_causal=True
    ),
    "fp16 per_warp fp16+fp32 smooth_v": lambda s: sa.sageattn_qk_int8_pv_fp16_cuda(
        *qkv(hq=2, lq=64, d=32, seed=s), qk_quant_gran="per_warp", pv_accum_dtype="fp16+fp32", smooth_v=True
    ),
    "fp8 sm_scale lse": lambda s: sa.sageattn_qk_int8_pv_fp8_cuda(
        *qkv(hq=2, lq=50, d=32, seed=s), sm_scale=0.3, return_lse=True
    ),
    "triton per_block": lambda s: sa.sageattn_qk_int8_pv_fp16_triton(*qkv(hq=2, lq=70, d=32, seed=s)),
    "qk_precision input": lambda s: sa.sageattn(*qkv(hq=2, lq=32, d=32, seed=s), qk_precision="input"),
    "packed qkv slices NHD": lambda s: sa.sageattn(*packed(s), tensor_layout="NHD"),
    "packed qkv slices as HND views": lambda s: sa.sageattn(*packed(s, "HND")),
    "last dim not contiguous (copied)": lambda s: sa.sageattn(
        *(t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in qkv(hq=2, lq=32, d=32, seed=s))
    ),
    "varlen lse mask": lambda s: sa.sageattn_varlen(
        *varlen(s), 23, 28, is_causal=True, return_lse=True, attn_mask=make((23, 28), F16, s)
    ),
    "reference_attention": lambda s: sa.reference_attention(*qkv(hq=2, lq=20, d=16, seed=s), return_lse=True),
    "sdpa": lambda s: sa.sdpa(*qkv(b=2, hq=4, lq=40, d=32, seed=s)),
    "sdpa bool mask": lambda s: sa.sdpa(*qkv(hq=2, lq=24, d=32, seed=s), attn_mask=make((24, 24), F16, s) > 0),
    "sdpa causal L!=S (top-left)": lambda s: sa.sdpa(*qkv(hq=2, lq=16, lkv=40, d=32, seed=s), is_causal=True),
    "sdpa unbatched GQA scale": lambda s: sa.sdpa(
        *(t[0] for t in qkv(hq=4, hkv=2, lq=24, d=16, dtype=BF16, seed=s)), enable_gqa=True, scale=0.2
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shortcut_and_op_path_give_the_same_bits(case, monkeypatch):
    fn = CASES[case]
    clear_plans()
    with op_calls(monkeypatch) as through_op:
        first = fn(0)  # checks everything, fills a plan
        again = fn(1)  # new data, same metadata: the plan is reused
    assert not through_op, "the eager call went through the dispatcher"
    assert _plan._tls.plans, "no plan was kept"
    with Through(), op_calls(monkeypatch) as through_op:
        op0, op1 = fn(0), fn(1)
    assert len(through_op) == 2
    assert_same(first, op0)
    assert_same(again, op1)
    clear_plans()
    assert_same(fn(1), op1)  # and a plan built on other data changes nothing


def test_one_library_call_per_attention_once_the_shape_is_known(monkeypatch):
    clear_plans()
    with library_calls(monkeypatch) as calls:
        sa.sageattn(*qkv(hq=2, lq=40, d=32))
        assert calls == {"plan_create": 1, "plan_workspace_size": 1, "plan_forward": 1}
        for seed in range(3):
            sa.sageattn(*qkv(hq=2, lq=40, d=32, seed=seed))
        assert calls == {"plan_create": 1, "plan_workspace_size": 1, "plan_forward": 4}
        # The CPU sizes a varlen workspace by cu_seqlens' contents: asked every call.
        sa.sageattn_varlen(*varlen(0), 23, 28)
        sa.sageattn_varlen(*varlen(1), 23, 28)
        assert calls == {"plan_create": 2, "plan_workspace_size": 3, "plan_forward": 6}


def test_the_plan_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_plan, "_MAX_PLANS", 4)
    clear_plans()
    for n in range(8, 20):
        q, k, v = qkv(hq=2, lq=n, d=16, seed=n)
        out = sa.sageattn(q, k, v)
        assert len(_plan._tls.plans) <= 4
        with Through():
            assert_same(out, sa.sageattn(q, k, v))


def test_threads_keep_their_own_problem_structs():
    shapes = [dict(hq=2, lq=24 + 8 * i, d=16 * (1 + i % 2)) for i in range(4)]
    inputs = [qkv(**s, seed=i) for i, s in enumerate(shapes)]
    expected = [sa.sageattn(*t) for t in inputs]
    failures = []

    def work(i):
        try:
            for r in range(25):
                j = (i + r) % len(inputs)
                if not torch.equal(sa.sageattn(*inputs[j]), expected[j]):
                    failures.append((i, r))
        except Exception as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _bad_varlen_contents():
    q, k, v, cu_q, cu_k = varlen(0)
    return sa.sageattn_varlen(q, k, v, torch.tensor([0, 31, 30], dtype=torch.int32), cu_k, 31, 28)


# Each raises; the message must not depend on the path taken.
BAD = {
    "dtypes differ": (ValueError, lambda: sa.sageattn(*qkv(lq=8, d=8)[:2], qkv(lq=8, d=8, dtype=BF16)[2])),
    "float32": (ValueError, lambda: sa.sageattn(*(t.float() for t in qkv(lq=8, d=8)))),
    "k on another device": (ValueError, lambda: sa.sageattn(*(t if i != 1 else t.to("meta") for i, t in enumerate(qkv(lq=8, d=8))))),
    "k and v shapes differ": (ValueError, lambda: sa.sageattn(*qkv(lq=8, d=8)[:2], qkv(lq=9, d=8)[2])),
    "3-D tensors in HND": (ValueError, lambda: sa.sageattn(*(t[0] for t in qkv(lq=8, d=8)))),
    "head_dim 300": (sa.InvalidProblemError, lambda: sa.sageattn(*qkv(lq=4, d=300))),
    "heads not a multiple": (sa.InvalidProblemError, lambda: sa.sageattn(*qkv(hq=3, hkv=2, lq=8, d=8))),
    "mask does not broadcast": (ValueError, lambda: sa.sageattn(*qkv(lq=8, d=8), attn_mask=torch.ones(3, 8, dtype=torch.bool))),
    "mask int32": (ValueError, lambda: sa.sageattn(*qkv(lq=8, d=8), attn_mask=torch.ones(8, 8, dtype=torch.int32))),
    "cu_seqlens decreasing": (sa.InvalidProblemError, _bad_varlen_contents),
    "cu_seqlens one short": (
        ValueError,
        lambda: sa.sageattn_varlen(*varlen(0)[:3], torch.tensor([0, 30], dtype=torch.int32), varlen(0)[4], 30, 28),
    ),
}


def _raised(fn, error):
    with pytest.raises(error) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_raise_the_same_errors_on_both_paths(case, monkeypatch):
    error, fn = BAD[case]
    clear_plans()
    with op_calls(monkeypatch) as through_op:
        first = _raised(fn, error)
        again = _raised(fn, error)  # a failure leaves no plan behind
    assert not through_op
    with Through():
        on_op = _raised(fn, error)
    assert first == again == on_op


def test_a_kept_plan_still_has_every_call_validated():
    # The plan holds what the metadata decides; the contents of cu_seqlens and
    # the pointers are checked by the library on every call.
    clear_plans()
    q, k, v, cu_q, cu_k = varlen(0)
    sa.sageattn_varlen(q, k, v, cu_q, cu_k, 23, 28)
    assert len(_plan._tls.plans) == 1
    bad = torch.tensor([0, 7, 5], dtype=torch.int32)  # same metadata, the plan is reused
    with pytest.raises(sa.InvalidProblemError, match="cu_seqlens_q decreases") as info:
        sa.sageattn_varlen(q, k, v, bad, cu_k, 23, 28)
    assert info.value.status == _lib.ERROR_INVALID_SEQLENS
    with pytest.raises(sa.InvalidProblemError, match="max_len"):
        sa.sageattn_varlen(q, k, v, cu_q, cu_k, 5, 28)  # max_len_q in the key: a new plan, refused


def test_cpu_varlen_workspace_follows_the_packed_key_count():
    clear_plans()
    q, k, v, cu_q, _ = varlen(0)
    few = torch.tensor([0, 5, 10], dtype=torch.int32)  # 10 of the 40 packed keys
    sa.sageattn_varlen(q, k, v, cu_q, few, 23, 28)
    every = torch.tensor([0, 12, 40], dtype=torch.int32)  # same metadata, a larger workspace
    out = sa.sageattn_varlen(q, k, v, cu_q, every, 23, 28)
    with Through():
        assert_same(out, sa.sageattn_varlen(q, k, v, cu_q, every, 23, 28))


def test_a_library_without_plans_runs_the_struct(monkeypatch):
    # A library of this ABI from before plans (no sageattn_plan_*): every call goes through
    # the struct and sageattn_forward, with the same result, varlen included.
    clear_plans()
    q, k, v = qkv(hq=2, lq=40, d=32)
    want = sa.sageattn(q, k, v)
    want_varlen = sa.sageattn_varlen(*varlen(0), 23, 28)
    clear_plans()
    monkeypatch.setattr(_lib, "plan_create", None)
    calls = []
    real = _lib.forward
    monkeypatch.setattr(_lib, "forward", lambda *a: calls.append(a) or real(*a))
    assert all(torch.equal(sa.sageattn(q, k, v), want) for _ in range(2))
    assert torch.equal(sa.sageattn_varlen(*varlen(0), 23, 28), want_varlen)
    assert len(calls) == 3


def test_library_failure_after_a_plan_is_kept_is_reported(monkeypatch):
    clear_plans()
    q, k, v = qkv(hq=2, lq=16, d=16)
    sa.sageattn(q, k, v)
    monkeypatch.setattr(_lib, "plan_forward", lambda *a: _lib.ERROR_UNSUPPORTED)
    with pytest.raises(sa.UnsupportedError):
        sa.sageattn(q, k, v)
    out = sa.sdpa(q, k, v)  # sdpa falls back to torch inside the op, also on a kept plan
    assert torch.allclose(out, _ops.torch_sdpa(q, k, v), atol=1e-3)


# ------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_shortcut_and_op_path_agree_and_capture():
    if not has_cuda_backend():
        pytest.skip("this build of libsageattn has no CUDA backend")
    q, k, v = (t.cuda() for t in qkv(b=2, hq=4, hkv=2, lq=128, d=64, dtype=BF16))
    mask = (make((128, 128), torch.float32, 3) > -1).cuda()
    calls = [
        lambda: sa.sageattn(q, k, v, is_causal=True),
        lambda: sa.sageattn(q, k, v, attn_mask=mask, return_lse=True),
        lambda: sa.sdpa(q, k, v, enable_gqa=True),
    ]
    clear_plans()
    eager = [fn() for fn in calls]
    with Through():
        through = [fn() for fn in calls]
    for a, b in zip(eager, through):
        assert_same(a, b)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = [fn() for fn in calls]
    q.copy_(torch.randn_like(q))
    graph.replay()
    for a, fn in zip(captured, calls):
        assert_same(a, fn())


@pytest.mark.gpu
def test_gpu_tensors_on_a_device_that_is_not_current():
    if not has_cuda_backend() or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices and a CUDA build")
    q, k, v = (t.to("cuda:1") for t in qkv(hq=2, lq=64, d=64))
    with torch.cuda.device(0):
        out = sa.sageattn(q, k, v)
        with Through():
            assert_same(out, sa.sageattn(q, k, v))
    assert out.device == torch.device("cuda:1")


@pytest.mark.gpu
def test_gpu_kept_workspace_per_stream_and_not_in_graphs():
    """Small problems reuse a kept workspace per stream: interleaved streams, a
    captured graph replayed after eager calls, and eager calls after a replay
    all give the bits of a lone call."""
    if not has_cuda_backend():
        pytest.skip("this build of libsageattn has no CUDA backend")
    sets = [[t.cuda() for t in qkv(b=1, hq=2, lq=96, d=64, dtype=F16, seed=10 * i)] for i in range(3)]
    alone = [sa.sageattn(*s) for s in sets]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    for st in streams:
        st.wait_stream(torch.cuda.current_stream())
    outs = []
    for i in range(6):  # both streams in flight at once, each on its kept workspace
        with torch.cuda.stream(streams[i % 2]):
            outs.append(sa.sageattn(*sets[i % 3]))
    torch.cuda.synchronize()
    for i, out in enumerate(outs):
        assert torch.equal(out, alone[i % 3])
    assert len(_plan._tls.workspaces) >= 2
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sa.sageattn(*sets[0])
    eager = sa.sageattn(*sets[1])  # the kept workspace, not the graph's
    graph.replay()
    after = sa.sageattn(*sets[2])
    torch.cuda.synchronize()
    assert torch.equal(captured, alone[0]) and torch.equal(eager, alone[1]) and torch.equal(after, alone[2])
