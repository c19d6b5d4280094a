"""The reference-compatible API on CPU tensors: accuracy, layouts, views,
GQA, causal, masks, varlen, LSE, options, gradients and every refusal."""

import math

import pytest
import torch

import sageattention as sa
from attn_helpers import abi_view, cosine, has_cuda_backend, make, qkv, record_abi, reference, same_run, view_of
from sageattention import _lib

F16, BF16 = torch.float16, torch.bfloat16


# ---------------------------------------------------------------- accuracy


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("dtype", [F16, BF16])
@pytest.mark.parametrize("d", [16, 37, 64, 128, 256])
def test_accuracy_against_float64(layout, dtype, d):
    q, k, v = qkv(b=2, hq=2, lq=80, lkv=72, d=d, dtype=dtype, layout=layout, seed=d)
    out = sa.sageattn(q, k, v, tensor_layout=layout)
    assert out.shape == q.shape and out.dtype == dtype
    assert cosine(out, reference(q, k, v, layout)[0]) >= 0.999


def test_head_dim_one():
    # One channel: each output is a single weighted average, with nothing to
    # average FP8's 3-bit mantissa errors of P and V over; FP16 P·V is exact enough.
    q, k, v = qkv(hq=2, lq=64, d=1)
    ref = reference(q, k, v)[0]
    assert cosine(sa.sageattn(q, k, v), ref) >= 0.995
    assert cosine(sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v), ref) >= 0.999


VARIANTS = [
    ("sageattn", {}),
    ("sageattn", {"pv_accum_dtype": "fp16+fp32"}),
    ("sageattn_qk_int8_pv_fp16_triton", {}),
    ("sageattn_qk_int8_pv_fp16_triton", {"quantization_backend": "cuda"}),
    ("sageattn_qk_int8_pv_fp16_cuda", {}),
    ("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp16+fp32"}),
    ("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp16", "smooth_v": True}),
    ("sageattn_qk_int8_pv_fp16_cuda", {"qk_quant_gran": "per_warp"}),
    ("sageattn_qk_int8_pv_fp8_cuda", {}),
    ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32", "smooth_v": True}),
    ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32+fp32", "qk_quant_gran": "per_warp"}),
    ("sageattn_qk_int8_pv_fp8_cuda_sm90", {}),
    ("sageattn_qk_int8_pv_fp8_cuda_sm90", {"pv_accum_dtype": "fp32"}),
]


@pytest.mark.parametrize("name,kwargs", VARIANTS)
def test_every_entry_point_and_option_is_accurate(name, kwargs):
    q, k, v = qkv(hq=2, lq=96, d=64, dtype=BF16, seed=3)
    out = getattr(sa, name)(q, k, v, **kwargs)
    assert cosine(out, reference(q, k, v)[0]) >= 0.999


# (function, kwargs) -> (qk_granularity, pv_precision, pv_accum, smooth_v) as the ABI must see them
ABI_OPTIONS = [
    ("sageattn", {}, (0, 0, 0, 0)),
    ("sageattn", {"qk_quant_gran": "per_block", "pv_accum_dtype": "fp32+fp16"}, (2, 1, 3, 0)),
    ("sageattn_qk_int8_pv_fp16_triton", {}, (2, 2, 4, 0)),
    ("sageattn_qk_int8_pv_fp16_cuda", {}, (0, 2, 1, 0)),
    ("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp16", "smooth_v": True}, (0, 2, 4, 1)),
    ("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp16+fp32", "qk_quant_gran": "per_warp"}, (1, 2, 4, 0)),
    ("sageattn_qk_int8_pv_fp8_cuda", {}, (0, 1, 3, 0)),
    ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32", "smooth_v": True}, (0, 1, 1, 1)),
    ("sageattn_qk_int8_pv_fp8_cuda_sm90", {}, (0, 1, 2, 0)),
]


@pytest.mark.parametrize("name,kwargs,expected", ABI_OPTIONS)
def test_options_reach_the_abi(monkeypatch, name, kwargs, expected):
    q, k, v = qkv(lq=16, d=16)
    with record_abi(monkeypatch) as rec:
        getattr(sa, name)(q, k, v, **kwargs)
    p = rec.last
    assert (p.qk_granularity, p.pv_precision, p.pv_accum, p.smooth_v) == expected
    assert p.smooth_k == 1 and p.algorithm == _lib.ALGORITHM_QUANTIZED


def test_smooth_k_and_qk_precision_reach_the_abi(monkeypatch):
    q, k, v = qkv(lq=16, d=16)
    with record_abi(monkeypatch) as rec:
        sa.sageattn(q, k, v, smooth_k=False, qk_precision="int8")
    assert rec.last.smooth_k == 0 and rec.last.qk_precision == _lib.QK_INT8


def test_large_key_bias_is_smoothed():
    q, k, v = qkv(hq=2, lq=128, d=64, seed=5)
    k = k + (20 * make((64,), seed=9)).to(k.dtype)  # a per-channel bias, as in real models
    assert cosine(sa.sageattn(q, k, v), reference(q, k, v)[0]) >= 0.999


def test_reference_attention_is_exact():
    q, k, v = qkv(hq=2, hkv=1, lq=40, lkv=50, d=24, seed=7)
    mask = make((40, 50), torch.float32, seed=8)
    out, lse = sa.reference_attention(q, k, v, is_causal=True, attn_mask=mask, return_lse=True)
    ref, ref_lse = reference(q, k, v, mask=mask, causal=True)
    assert torch.allclose(out.double(), ref, atol=2e-3, rtol=0)  # fp16 rounding of the output only
    assert torch.allclose(lse.double(), ref_lse, atol=1e-5, rtol=1e-6)


def test_sm_scale():
    q, k, v = qkv(lq=64, d=32, seed=11)
    out = sa.sageattn(q, k, v, sm_scale=0.05)
    assert cosine(out, reference(q, k, v, scale=0.05)[0]) >= 0.999
    assert cosine(sa.sageattn(q, k, v, sm_scale=-0.3), reference(q, k, v, scale=-0.3)[0]) >= 0.999


# --------------------------------------------------------- layouts, views


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_strided_views_reach_the_abi_without_copies(monkeypatch, layout):
    b, n, h, d = 2, 48, 2, 32
    # One packed qkv projection, sliced: every view is strided, none is contiguous.
    qkv_packed = make((b, n, 3, h, d + 8), seed=1)
    views = [qkv_packed[:, :, i, :, :d] for i in range(3)]  # NHD views
    if layout == "HND":
        views = [t.transpose(1, 2) for t in views]
    assert not any(t.is_contiguous() for t in views)
    with record_abi(monkeypatch) as rec:
        out = sa.sageattn(*views, tensor_layout=layout)
    p = rec.last
    for name, t in zip("qkv", views):
        assert abi_view(getattr(p, name)) == view_of(t, layout)
    assert abi_view(p.out) == view_of(out, layout)
    # The same numbers as contiguous copies give.
    assert torch.equal(out, sa.sageattn(*[t.contiguous() for t in views], tensor_layout=layout))


def test_output_keeps_the_input_memory_layout():
    # A transposed NHD tensor used as HND: the output is allocated the same way,
    # so that the usual transpose(1, 2).reshape(b, n, h*d) afterwards is free.
    q, k, v = (t.transpose(1, 2) for t in qkv(lq=32, d=16, layout="NHD"))
    out = sa.sageattn(q, k, v)
    assert out.stride() == q.stride()


def test_last_dim_not_contiguous_is_copied_and_correct():
    q, k, v = qkv(lq=32, d=16, seed=2)
    qt = q.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, stride(-1) != 1
    assert qt.stride(-1) != 1
    assert torch.equal(sa.sageattn(qt, k, v), sa.sageattn(q, k, v))


@pytest.mark.parametrize("hkv", [1, 2])
@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_gqa_and_mqa(hkv, layout):
    q, k, v = qkv(b=1, hq=4, hkv=hkv, lq=64, d=32, layout=layout, seed=hkv)
    out, lse = sa.sageattn(q, k, v, tensor_layout=layout, return_lse=True)
    ref, ref_lse = reference(q, k, v, layout)
    assert cosine(out, ref) >= 0.999
    assert (lse.double() - ref_lse).abs().max() < 0.05


# ------------------------------------------------------- causal and masks


@pytest.mark.parametrize("lq,lkv", [(48, 48), (16, 64), (64, 16), (1, 40)])
def test_causal_is_bottom_right(lq, lkv):
    q, k, v = qkv(hq=2, lq=lq, lkv=lkv, d=32, seed=lq)
    out, lse = sa.sageattn(q, k, v, is_causal=True, return_lse=True)
    ref, ref_lse = reference(q, k, v, causal=True)
    assert cosine(out, ref) >= 0.999
    no_key = torch.isinf(ref_lse)  # len_q > len_kv: the first rows see no key
    assert torch.equal(torch.isinf(lse), no_key)
    assert (out[no_key] == 0).all()
    assert (lse[~no_key].double() - ref_lse[~no_key]).abs().max() < 0.05


def test_bool_mask_broadcasts_without_copies(monkeypatch):
    q, k, v = qkv(b=2, hq=2, lq=40, lkv=56, d=32, seed=4)
    mask = make((1, 1, 40, 56), torch.float32, seed=5) > -0.5  # [1, 1, lq, lkv]
    mask[0, 0, 3] = False  # a fully masked row
    with record_abi(monkeypatch) as rec:
        out, lse = sa.sageattn(q, k, v, attn_mask=mask, return_lse=True)
    m = rec.last.mask
    assert (m.type, m.data) == (_lib.MASK_BOOL, mask.data_ptr())
    assert (m.batch_stride, m.head_stride, m.q_stride, m.kv_stride) == (0, 0, 56, 1)
    ref, _ref_lse = reference(q, k, v, mask=mask)
    assert cosine(out, ref) >= 0.999
    assert (out[:, :, 3] == 0).all() and torch.isinf(lse[:, :, 3]).all()


@pytest.mark.parametrize("mask_dtype", [torch.float32, F16, BF16])
def test_additive_mask_with_causal(mask_dtype):
    q, k, v = qkv(b=1, hq=2, lq=48, d=32, dtype=BF16, seed=6)
    mask = (3 * make((2, 48, 48), torch.float32, seed=7)).to(mask_dtype)  # [heads, lq, lkv]
    out = sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, attn_mask=mask, is_causal=True)
    assert cosine(out, reference(q, k, v, mask=mask, causal=True)[0]) >= 0.999


def test_mask_through_kwargs_is_honoured_not_swallowed():
    q, k, v = qkv(lq=32, d=16, seed=8)
    mask = torch.ones(32, 32, dtype=torch.bool).tril()
    out = sa.sageattn(q, k, v, attn_mask=mask)
    assert cosine(out, reference(q, k, v, mask=mask)[0]) >= 0.999
    assert cosine(out, reference(q, k, v)[0]) < 0.99


def test_hard_inputs_stay_finite_and_accurate():
    q, k, v = qkv(hq=2, lq=128, d=64, seed=3)
    v = v.clone()
    v[..., 5] = 0  # an all-zero V channel: a 0/0 per-channel scale in the reference
    v[..., 6] = 3  # a constant one
    q8, k8 = q * 8, k * 8  # a sharp softmax
    for name, kwargs in VARIANTS:
        out = getattr(sa, name)(q8, k8, v, **kwargs)
        assert torch.isfinite(out).all(), name
        assert (out[..., 5] == 0).all() and cosine(out, reference(q8, k8, v)[0]) >= 0.995, name


def test_finfo_min_mask_and_broadcast_inputs():
    q, k, v = qkv(hq=2, lq=64, d=32, seed=4)
    mask = torch.full((64, 64), torch.finfo(torch.float16).min, dtype=torch.float16)
    mask[:, :3] = 0
    mask[7] = torch.finfo(torch.float16).min  # masked "by value": the uniform average, not zeros
    out = sa.sageattn(q, k, v, attn_mask=mask)
    assert cosine(out, reference(q, k, v, mask=mask)[0]) >= 0.999
    expanded = make((1, 2, 16, 16), seed=5).expand(3, 2, 16, 16)  # batch stride 0, no copy
    out = sa.sageattn(expanded, expanded, expanded)
    assert torch.equal(out[2], sa.sageattn(*(expanded[:1].contiguous(),) * 3)[0])


def test_empty_problems():
    q, k, v = qkv(lq=16, d=16)
    out, lse = sa.sageattn(q, k[:, :, :0], v[:, :, :0], return_lse=True)
    assert (out == 0).all() and torch.isinf(lse).all()
    assert sa.sageattn(q[:0], k[:0], v[:0]).shape == (0, 2, 16, 16)
    t = make((12, 2, 16))
    cu_q, cu_k = torch.tensor([0, 0, 5, 5, 12], dtype=torch.int32), torch.tensor([0, 3, 3, 9, 12], dtype=torch.int32)
    out, lse = sa.sageattn_varlen(t, t, t, cu_q, cu_k, 7, 6, return_lse=True)
    assert torch.isinf(lse[:, :5]).all() and (out[:5] == 0).all() and torch.isfinite(lse[:, 5:]).all()


# ------------------------------------------------------------------- LSE


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_return_lse_matches_logsumexp(layout):
    q, k, v = qkv(b=2, hq=2, lq=64, lkv=80, d=32, layout=layout, seed=12)
    out, lse = sa.sageattn(q, k, v, tensor_layout=layout, return_lse=True, sm_scale=0.2)
    qh, kh = (t.transpose(1, 2) if layout == "NHD" else t for t in (q, k))
    exact = torch.logsumexp((qh.double() @ kh.double().transpose(-1, -2)) * 0.2, dim=-1)
    assert lse.dtype == torch.float32 and lse.shape == exact.shape == (2, 2, 64)
    assert (lse.double() - exact).abs().max() < 0.05
    assert torch.equal(out, sa.sageattn(q, k, v, tensor_layout=layout, sm_scale=0.2))


# ----------------------------------------------------------- non-finite inputs


def _nan_rows(out):
    return (~torch.isfinite(out.float())).any(-1)


@pytest.mark.parametrize("pv", ["fp32", "fp16+fp32"])
def test_nonfinite_inputs_give_nan_rows(pv):
    # docs/ALGORITHM.md §6: a NaN or infinity in q_i, or in k or v of a key row i sees, makes row i
    # NaN (and its LSE); rows that do not see it keep the answer for that element read as 0.
    q, k, v = qkv(b=1, hq=2, hkv=1, lq=48, lkv=40, d=32, seed=3)
    kwargs = dict(is_causal=True, return_lse=True, pv_accum_dtype=pv)
    for name, t, where, value, rows in [
        ("q", q, (0, 1, 7, 3), float("nan"), {(1, 7)}),  # row 7 sees no key (causal, 48 > 40): NaN, not zeros
        ("k", k, (0, 0, 20, 0), float("inf"), {(h, i) for h in (0, 1) for i in range(28, 48)}),
        ("v", v, (0, 0, 39, 5), float("-inf"), {(h, 47) for h in (0, 1)}),
    ]:
        zeroed = t.clone()
        zeroed[where] = 0
        args = {"q": (zeroed, k, v), "k": (q, zeroed, v), "v": (q, k, zeroed)}[name]
        base, base_lse = sa.sageattn(*args, **kwargs)
        poked = t.clone()
        poked[where] = value
        args = {"q": (poked, k, v), "k": (q, poked, v), "v": (q, k, poked)}[name]
        out, lse = sa.sageattn(*args, **kwargs)
        want = torch.zeros(1, 2, 48, dtype=torch.bool)
        for h, i in rows:
            want[0, h, i] = True
        assert torch.equal(_nan_rows(out), want), name
        assert torch.isnan(out[want]).all() and torch.isnan(lse[want]).all(), name
        assert torch.equal(out[~want], base[~want]), name
        assert torch.equal(lse[~want], base_lse[~want]), name
        # The exact algorithm follows the same rule.
        exact, exact_lse = sa.reference_attention(*args, is_causal=True, return_lse=True)
        assert torch.equal(_nan_rows(exact), want) and torch.equal(torch.isnan(exact_lse), want), name


# ---------------------------------------------------------------- varlen


def _cu(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_matches_a_loop_over_sequences(causal):
    lq, lkv = [5, 17, 1, 40], [7, 17, 9, 33]
    cu_q, cu_k = _cu(lq), _cu(lkv)
    q = make((sum(lq), 4, 32), seed=1)
    k, v = make((sum(lkv), 2, 32), seed=2), make((sum(lkv), 2, 32), seed=3)
    out, lse = sa.sageattn_varlen(q, k, v, cu_q, cu_k, max(lq), max(lkv), is_causal=causal, return_lse=True)
    assert out.shape == q.shape and lse.shape == (4, sum(lq))
    for b in range(len(lq)):
        rq, rk = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        one, one_lse = sa.sageattn(
            q[rq][None], k[rk][None], v[rk][None], tensor_layout="NHD", is_causal=causal, return_lse=True
        )
        assert torch.equal(out[rq], one[0])
        assert torch.equal(lse[:, rq], one_lse[0])
        ref = reference(q[rq][None], k[rk][None], v[rk][None], "NHD", causal=causal)[0][0]
        assert cosine(out[rq], ref) >= 0.999 or lq[b] == 1


def test_varlen_accepts_int64_seqlens():
    lq = [8, 24]
    q = make((32, 2, 16), seed=1)
    out64 = sa.sageattn_varlen(q, q, q, _cu(lq).long(), _cu(lq).long(), 24, 24)
    assert torch.equal(out64, sa.sageattn_varlen(q, q, q, _cu(lq), _cu(lq), 24, 24))


def test_varlen_int64_seqlens_past_int32_are_refused_not_wrapped():
    # 2^32 + 8 narrowed to int32 would read as 8: a plausible offset, and a wrong answer.
    q = make((32, 2, 16), seed=1)
    for bad in (2**32 + 8, -(2**31) - 1):
        cu = torch.tensor([0, 8, bad], dtype=torch.int64)
        with pytest.raises(ValueError, match=rf"cu_seqlens_k\[2\] = {bad} does not fit the int32"):
            sa.sageattn_varlen(q, q, q, _cu([8, 24]), cu, 24, 24)


def test_varlen_check_seqlens_on_the_cpu_changes_nothing():
    # CPU offsets are always checked; the keyword is accepted and the answer is the same.
    lq = [8, 24]
    q = make((32, 2, 16), seed=1)
    out = sa.sageattn_varlen(q, q, q, _cu(lq), _cu(lq), 24, 24, check_seqlens=True)
    assert torch.equal(out, sa.sageattn_varlen(q, q, q, _cu(lq), _cu(lq), 24, 24))
    with pytest.raises(ValueError, match="INVALID_SEQLENS"):
        sa.sageattn_varlen(q, q, q, _cu(lq), _cu(lq), 20, 24, check_seqlens=False)


# ----------------------------------------------------------- gradients


def _float64_grads(q, k, v, layout="HND", mask=None, causal=False, lse_weight=0.0):
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out, lse = reference(*leaves, layout=layout, mask=mask, causal=causal)
    (out.sum() + lse_weight * torch.where(torch.isinf(lse), 0, lse).sum()).backward()
    return [t.grad for t in leaves]


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_backward_is_the_exact_gradient(layout):
    q, k, v = qkv(b=1, hq=4, hkv=2, lq=24, lkv=40, d=16, layout=layout, seed=21)
    mask = make((24, 40), torch.float32, seed=22)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = sa.sageattn(*leaves, tensor_layout=layout, is_causal=True, attn_mask=mask, return_lse=True)
    (out.float().sum() + 0.5 * torch.where(torch.isinf(lse), 0, lse).sum()).backward()
    expected = _float64_grads(q, k, v, layout, mask, causal=True, lse_weight=0.5)
    for got, want in zip(leaves, expected):
        assert got.grad.shape == got.shape and got.grad.dtype == got.dtype
        assert (got.grad.double() - want).abs().max() <= 0.01 * want.abs().max() + 1e-3


def test_varlen_backward_matches_per_sequence():
    lq = [6, 19]
    cu = _cu(lq)
    q, k, v = (make((25, 2, 16), seed=s).requires_grad_() for s in (1, 2, 3))
    sa.sageattn_varlen(q, k, v, cu, cu, 19, 19, is_causal=True).float().sum().backward()
    for b in range(2):
        r = slice(cu[b], cu[b + 1])
        want = _float64_grads(q[r][None].detach(), k[r][None].detach(), v[r][None].detach(), "NHD", causal=True)
        for got, w in zip((q, k, v), want):
            assert (got.grad[r].double() - w[0]).abs().max() <= 0.01 * w.abs().max() + 1e-3


def test_mask_that_requires_grad_is_refused():
    q, k, v = (t.requires_grad_() for t in qkv(lq=8, d=8))
    mask = torch.zeros(8, 8, requires_grad=True)
    with pytest.raises(NotImplementedError, match="attn_mask"):
        sa.sageattn(q, k, v, attn_mask=mask)


def test_threads_do_not_share_a_problem():
    from concurrent.futures import ThreadPoolExecutor

    inputs = [qkv(b=1, hq=2, lq=16 + 8 * i, d=16 + 8 * i, layout="NHD" if i % 2 else "HND", seed=i) for i in range(6)]
    layouts = ["NHD" if i % 2 else "HND" for i in range(6)]
    expected = [sa.sageattn(*t, tensor_layout=lay) for t, lay in zip(inputs, layouts)]
    with ThreadPoolExecutor(3) as pool:
        for _ in range(5):
            got = list(pool.map(lambda a: sa.sageattn(*a[0], tensor_layout=a[1]), zip(inputs, layouts)))
            assert all(torch.equal(g, e) for g, e in zip(got, expected))


# --------------------------------------------------------------- refusals


def test_unknown_keyword_is_refused():
    q, k, v = qkv(lq=8, d=8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'window'"):
        sa.sageattn(q, k, v, window=4)
    with pytest.raises(TypeError, match="'foo'"):
        sa.sageattn_varlen(q[0], k[0], v[0], _cu([2]), _cu([2]), 2, 2, foo=1)


def test_sdpa_style_keywords():
    q, k, v = qkv(lq=16, d=16, seed=3)
    assert torch.equal(sa.sageattn(q, k, v, scale=0.3, dropout_p=0.0, enable_gqa=True), sa.sageattn(q, k, v, sm_scale=0.3))
    with pytest.raises(ValueError, match="dropout"):
        sa.sageattn(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="disagree"):
        sa.sageattn(q, k, v, sm_scale=0.1, scale=0.2)


def test_sageattn_assigned_over_sdpa_refuses_a_positional_mask():
    q, k, v = qkv(lq=8, d=8)
    mask = torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="patch_sdpa"):
        sa.sageattn(q, k, v, mask, 0.0, False)  # how torch calls F.scaled_dot_product_attention


BAD_INPUTS = [
    ("dtype float32", lambda q, k, v: sa.sageattn(q.float(), k.float(), v.float()), ValueError, "float16 or torch.bfloat16"),
    ("mixed dtypes", lambda q, k, v: sa.sageattn(q, k.bfloat16(), v), ValueError, "one dtype"),
    ("device mismatch", lambda q, k, v: sa.sageattn(q, k.to("meta"), v), ValueError, "one device"),
    ("3-D tensors", lambda q, k, v: sa.sageattn(q[0], k[0], v[0]), ValueError, "4-D"),
    ("k, v shapes", lambda q, k, v: sa.sageattn(q, k, v[:, :, :5]), ValueError, "one shape"),
    ("batch", lambda q, k, v: sa.sageattn(q, k[:, :, :0].expand(2, -1, -1, -1), v[:, :, :0].expand(2, -1, -1, -1)), ValueError, "batch"),
    ("head_dim mismatch", lambda q, k, v: sa.sageattn(q, k[..., :8], v[..., :8]), ValueError, "head_dim"),
    ("head_dim 257", lambda q, k, v: sa.sageattn(*(make((1, 1, 4, 257)),) * 3), ValueError, "INVALID_HEAD_DIM.*257"),
    ("head_dim 0", lambda q, k, v: sa.sageattn(q[..., :0], k[..., :0], v[..., :0]), ValueError, "INVALID_HEAD_DIM"),
    ("heads not divisible", lambda q, k, v: sa.sageattn(make((1, 3, 8, 16)), k, v), ValueError, "INVALID_HEADS"),
    ("layout string", lambda q, k, v: sa.sageattn(q, k, v, tensor_layout="BHSD"), ValueError, "tensor_layout = 'BHSD'"),
    ("layout lowercase", lambda q, k, v: sa.sageattn(q, k, v, tensor_layout="nhd"), ValueError, "'HND', 'NHD'"),
    ("qk_quant_gran", lambda q, k, v: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, qk_quant_gran="per_row"), ValueError, "qk_quant_gran"),
    ("pv_accum_dtype of another family", lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, pv_accum_dtype="fp32+fp16"), ValueError, "pv_accum_dtype = 'fp32\\+fp16'"),
    ("sm90 accum", lambda q, k, v: sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, pv_accum_dtype="fp32+fp16"), ValueError, "pv_accum_dtype"),
    ("quantization_backend", lambda q, k, v: sa.sageattn_qk_int8_pv_fp16_triton(q, k, v, quantization_backend="cutlass"), ValueError, "quantization_backend"),
    ("qk_precision", lambda q, k, v: sa.sageattn(q, k, v, qk_precision="int4"), ValueError, "qk_precision"),
    ("sm_scale 0", lambda q, k, v: sa.sageattn(q, k, v, sm_scale=0.0), ValueError, "sm_scale"),
    ("sm_scale nan", lambda q, k, v: sa.sageattn(q, k, v, sm_scale=math.nan), ValueError, "sm_scale"),
    ("not a tensor", lambda q, k, v: sa.sageattn(q.numpy(), k, v), TypeError, "q must be a torch.Tensor"),
    ("mask shape", lambda q, k, v: sa.sageattn(q, k, v, attn_mask=torch.ones(3, 5, dtype=torch.bool)), ValueError, "does not broadcast"),
    ("mask dtype", lambda q, k, v: sa.sageattn(q, k, v, attn_mask=torch.ones(8, 8, dtype=torch.int32)), ValueError, "attn_mask.dtype"),
    ("mask device", lambda q, k, v: sa.sageattn(q, k, v, attn_mask=torch.ones(8, 8, dtype=torch.bool, device="meta")), ValueError, "attn_mask is on meta"),
    ("mask dims", lambda q, k, v: sa.sageattn(q, k, v, attn_mask=torch.ones(1, 1, 1, 8, 8, dtype=torch.bool)), ValueError, "5 dims"),
]


@pytest.mark.parametrize("case,call,exc,match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused(case, call, exc, match):
    q, k, v = qkv(b=1, hq=2, lq=8, d=16)
    with pytest.raises(exc, match=match):
        call(q, k, v)


BAD_VARLEN = [
    ("seqlens dtype", dict(cu_seqlens_q=torch.tensor([0.0, 8.0])), ValueError, "cu_seqlens_q.dtype"),
    ("seqlens count", dict(cu_seqlens_k=torch.tensor([0, 4, 8], dtype=torch.int32)), ValueError, "entries"),
    ("seqlens decrease", dict(cu_seqlens_q=torch.tensor([0, 8, 6], dtype=torch.int32), cu_seqlens_k=torch.tensor([0, 4, 8], dtype=torch.int32)), ValueError, "INVALID_SEQLENS"),
    ("seqlens past the tensor", dict(cu_seqlens_q=torch.tensor([0, 9], dtype=torch.int32)), ValueError, "INVALID_SEQLENS"),
    ("max_seqlen too small", dict(max_seqlen_q=4), ValueError, "INVALID_SEQLENS"),
    ("seqlens device", dict(cu_seqlens_q=torch.tensor([0, 8], dtype=torch.int32, device="meta")), ValueError, "cu_seqlens_q is on meta"),
    ("4-D input", dict(q=make((1, 8, 2, 16))), ValueError, "3-D"),
]


@pytest.mark.parametrize("case,override,exc,match", BAD_VARLEN, ids=[c[0] for c in BAD_VARLEN])
def test_bad_varlen_input_is_refused(case, override, exc, match):
    t = make((8, 2, 16))
    args = dict(q=t, k=t, v=t, cu_seqlens_q=_cu([8]), cu_seqlens_k=_cu([8]), max_seqlen_q=8, max_seqlen_k=8)
    args.update(override)
    with pytest.raises(exc, match=match):
        sa.sageattn_varlen(**args)


def test_cuda_tensors_without_a_cuda_backend_say_so():
    if not torch.cuda.is_available() or has_cuda_backend():
        pytest.skip("needs a CUDA device and a library built without CUDA")
    q, k, v = qkv(lq=8, d=16, device="cuda")
    with pytest.raises(NotImplementedError, match="UNSUPPORTED"):
        sa.sageattn(q, k, v)


# ------------------------------------------------------------------- GPU


def _need_cuda_backend():
    if not has_cuda_backend():
        pytest.skip("GPU test skipped: this libsageattn was built without the CUDA backend")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize(
    "name,kwargs",
    [
        # Pinned precisions: with "auto" the library may rightly choose differently per device.
        ("sageattn_qk_int8_pv_fp8_cuda_sm90", {}),
        ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32+fp16"}),
        ("sageattn_qk_int8_pv_fp16_cuda", {}),
        ("sageattn_qk_int8_pv_fp16_triton", {}),
    ],
)
def test_gpu_matches_cpu_emulation(layout, name, kwargs):
    _need_cuda_backend()
    q, k, v = qkv(b=2, hq=4, hkv=2, lq=300, lkv=257, d=128, dtype=BF16, layout=layout, seed=1)
    fn = getattr(sa, name)
    cpu, cpu_lse = fn(q, k, v, tensor_layout=layout, is_causal=True, return_lse=True, **kwargs)
    gpu, gpu_lse = fn(*(t.cuda() for t in (q, k, v)), tensor_layout=layout, is_causal=True, return_lse=True, **kwargs)
    assert cosine(gpu.cpu(), cpu) >= 0.99999
    gpu_lse, seen = gpu_lse.cpu(), torch.isfinite(cpu_lse)  # len_q > len_kv: early rows see no key
    assert torch.equal(torch.isfinite(gpu_lse), seen)
    assert (gpu_lse[seen] - cpu_lse[seen]).abs().max() < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("pv", ["fp32+fp32", "fp16+fp32"])
def test_gpu_nonfinite_inputs_give_the_cpu_nan_rows(pv):
    # docs/ALGORITHM.md §6 on CUDA, through the package (tests/cpp/test_cuda.cpp covers every kernel path).
    _need_cuda_backend()
    q, k, v = qkv(b=1, hq=2, hkv=1, lq=300, lkv=280, d=64, dtype=BF16, seed=5)
    q[0, 1, 137, 5] = float("nan")
    k[0, 0, 150, 7] = float("inf")
    v[0, 0, 279, 63] = float("-inf")
    kwargs = dict(is_causal=True, return_lse=True, pv_accum_dtype=pv)
    cpu, cpu_lse = sa.sageattn(q, k, v, **kwargs)
    gpu, gpu_lse = sa.sageattn(*(t.cuda() for t in (q, k, v)), **kwargs)
    gpu, gpu_lse = gpu.cpu(), gpu_lse.cpu()
    bad = _nan_rows(cpu)
    assert bad.sum() > 0 and torch.equal(_nan_rows(gpu), bad)
    assert torch.isnan(gpu[bad]).all() and torch.equal(torch.isnan(gpu_lse), torch.isnan(cpu_lse))
    assert cosine(gpu[~bad], cpu[~bad]) >= 0.99999


@pytest.mark.gpu
def test_gpu_varlen_offsets_checked_or_clamped():
    _need_cuda_backend()
    t = make((256, 2, 64), seed=1).cuda()
    good = torch.tensor([0, 100, 256], dtype=torch.int32, device="cuda")
    past = torch.tensor([0, 256, 512], dtype=torch.int32, device="cuda")  # twice the tensor's rows
    expected = sa.sageattn_varlen(t, t, t, good, good, 156, 156)
    assert torch.equal(sa.sageattn_varlen(t, t, t, good, good, 156, 156, check_seqlens=True), expected)
    with pytest.raises(ValueError, match=r"INVALID_SEQLENS: cu_seqlens_q\[2\] = 512 exceeds the 256 packed tokens"):
        sa.sageattn_varlen(t, t, t, past, past, 256, 256, check_seqlens=True)
    with pytest.raises(ValueError, match="INVALID_SEQLENS: sequence 0 of cu_seqlens_kv has length 100 > its max_len 64"):
        sa.sageattn_varlen(t, t, t, good, good, 156, 64, check_seqlens=True)
    # Unchecked, the same offsets are clamped to the tensor: the first sequence is all of it.
    clamped = sa.sageattn_varlen(t, t, t, past, past, 256, 256)
    dense = sa.sageattn(t[None], t[None], t[None], tensor_layout="NHD")[0]
    assert cosine(clamped.cpu(), dense.cpu()) >= 0.99999
    # int64 offsets past int32 are refused when checked (never wrapped).
    wide = past.long() + torch.tensor([0, 0, 2**32], device="cuda")
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[2\] = 4294967808 does not fit"):
        sa.sageattn_varlen(t, t, t, wide, good, 256, 256, check_seqlens=True)


@pytest.mark.gpu
def test_gpu_varlen_check_is_refused_inside_graph_capture():
    _need_cuda_backend()
    t = make((256, 2, 64), seed=1).cuda()
    cu = torch.tensor([0, 100, 256], dtype=torch.int32, device="cuda")
    sa.sageattn_varlen(t, t, t, cu, cu, 156, 156)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(NotImplementedError, match="check_seqlens = 1 waits for the stream"):
        with torch.cuda.graph(graph):
            sa.sageattn_varlen(t, t, t, cu, cu, 156, 156, check_seqlens=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sa.sageattn_varlen(t, t, t, cu, cu, 156, 156)
    graph.replay()
    assert same_run(out, sa.sageattn_varlen(t, t, t, cu, cu, 156, 156))


@pytest.mark.gpu
def test_gpu_auto_choice_is_accurate():
    _need_cuda_backend()
    q, k, v = qkv(b=2, hq=4, hkv=2, lq=300, lkv=257, d=128, dtype=BF16, seed=1)
    gpu = sa.sageattn(*(t.cuda() for t in (q, k, v)), is_causal=True)
    assert cosine(gpu.cpu(), reference(q, k, v, causal=True)[0]) >= 0.999


@pytest.mark.gpu
def test_gpu_runs_on_the_current_stream_and_device():
    _need_cuda_backend()
    device = torch.device("cuda", torch.cuda.device_count() - 1)  # cuda:1 where there is one
    q, k, v = qkv(hq=2, lq=256, d=64, device=device)
    expected = sa.sageattn(q, k, v)
    side = torch.cuda.Stream(device)
    with torch.cuda.stream(side):
        side.wait_stream(torch.cuda.current_stream(device))
        out = sa.sageattn(q, k, v)
    torch.cuda.current_stream(device).wait_stream(side)
    assert out.device == device and same_run(out, expected)


@pytest.mark.gpu
def test_gpu_graph_replay_sees_inputs_changed_in_place():
    _need_cuda_backend()
    q, k, v = qkv(hq=2, lq=256, d=64, device="cuda", seed=1)
    sa.sageattn(q, k, v)  # warm up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sa.sageattn(q, k, v, is_causal=True)
    for seed in (2, 3):
        for t, s in zip((q, k, v), range(3)):
            t.copy_(make(t.shape, t.dtype, seed * 10 + s, device="cuda"))
        graph.replay()
        assert same_run(out, sa.sageattn(q, k, v, is_causal=True))
