"""sageattention.sdpa: torch's semantics on our kernels, every fallback,
and patching torch.nn.functional.scaled_dot_product_attention."""

import pytest
import torch
import torch.nn.functional as F

import sageattention as sa
from attn_helpers import cosine, make, record_abi, refuse_runs, same_run
from sageattention import _lib, _ops

TORCH_SDPA = _ops.torch_sdpa
F16, BF16 = torch.float16, torch.bfloat16


def exact(query, key, value, **kwargs):
    """torch's own SDPA in float64: the semantics sdpa must reproduce."""
    mask = kwargs.pop("attn_mask", None)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.double()
    return TORCH_SDPA(query.double(), key.double(), value.double(), attn_mask=mask, **kwargs)


def tensors(shape_q, shape_kv=None, dtype=F16, seed=0):
    shape_kv = shape_kv or shape_q
    return make(shape_q, dtype, seed), make(shape_kv, dtype, seed + 1), make(shape_kv, dtype, seed + 2)


CASES = {
    "plain": ((2, 2, 48, 32), None, {}),
    "causal square": ((1, 2, 40, 32), None, {"is_causal": True}),
    "causal short query (top-left)": ((1, 2, 12, 32), (1, 2, 40, 32), {"is_causal": True}),
    "causal long query (top-left)": ((1, 2, 40, 32), (1, 2, 12, 32), {"is_causal": True}),
    "scale": ((1, 2, 32, 16), None, {"scale": 0.07}),
    "gqa": ((1, 4, 32, 16), (1, 2, 32, 16), {"enable_gqa": True}),
    "unbatched 3-D": ((2, 32, 16), None, {}),
    "2-D": ((32, 16), None, {}),
    "head_dim 256": ((1, 1, 16, 256), None, {}),
    "head_dim 5": ((1, 2, 24, 5), None, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [F16, BF16])
def test_matches_torch_on_our_kernel(monkeypatch, case, dtype):
    shape_q, shape_kv, kwargs = CASES[case]
    q, k, v = tensors(shape_q, shape_kv, dtype)
    with record_abi(monkeypatch) as rec:
        out = sa.sdpa(q, k, v, **kwargs)
    assert len(rec.calls) == 1, "did not run on the library"
    ref = exact(q, k, v, **kwargs)
    assert out.shape == ref.shape and out.dtype == dtype
    assert cosine(out, ref) >= 0.999


MASKS = {
    "bool [L, S]": lambda: make((32, 40), torch.float32, 5) > -0.8,
    "bool [B, 1, L, S]": lambda: make((2, 1, 32, 40), torch.float32, 5) > -0.8,
    "additive same dtype": lambda: make((2, 2, 32, 40), F16, 6),
    "additive float32": lambda: make((1, 32, 40), torch.float32, 6) * 4,
    "additive -inf rows": lambda: torch.zeros(32, 40, dtype=F16).index_fill_(0, torch.tensor([0, 7]), float("-inf")),
}


@pytest.mark.parametrize("name", sorted(MASKS))
def test_masks_run_on_our_kernel(monkeypatch, name):
    q, k, v = tensors((2, 2, 32, 16), (2, 2, 40, 16))
    mask = MASKS[name]()
    with record_abi(monkeypatch) as rec:
        out = sa.sdpa(q, k, v, attn_mask=mask)
    assert len(rec.calls) == 1 and rec.last.mask.data == mask.data_ptr()  # the caller's mask, not a copy
    ref = exact(q, k, v, attn_mask=mask)
    ok = ~torch.isnan(ref)  # torch's float masks give NaN for rows of only -inf; ours gives 0
    assert cosine(out[ok], ref[ok]) >= 0.999
    assert not torch.isnan(out).any()


def test_positional_arguments_as_torch_passes_them(monkeypatch):
    q, k, v = tensors((1, 2, 16, 16))
    mask = torch.ones(16, 16, dtype=torch.bool).tril()
    with record_abi(monkeypatch) as rec:
        out = sa.sdpa(q, k, v, mask, 0.0, False)
    assert len(rec.calls) == 1 and rec.last.mask.type == _lib.MASK_BOOL
    assert cosine(out, exact(q, k, v, attn_mask=mask)) >= 0.999


# ------------------------------------------------------------- fallbacks


def _fallback_case(name):
    q, k, v = tensors((1, 2, 16, 16))
    cases = {
        "dropout": ((q, k, v), {"dropout_p": 0.3}),
        "float32": ((q.float(), k.float(), v.float()), {}),
        "float64": ((q.double(), k.double(), v.double()), {}),
        "mixed dtypes": ((q, k.bfloat16(), v), {}),  # torch raises; so must we
        "head_dim 300": (tensors((1, 1, 8, 300)), {}),
        "value head_dim differs": ((q, k, make((1, 2, 16, 24), F16, 3)), {}),
        "scale 0": ((q, k, v), {"scale": 0.0}),
        "mask and causal": ((q, k, v), {"attn_mask": torch.ones(16, 16, dtype=torch.bool), "is_causal": True}),
        "heads differ without enable_gqa": ((q, k[:, :1], v[:, :1]), {}),
        "broadcast batch": ((make((3, 2, 16, 16), F16, 4), k, v), {}),
        "5-D": (tensors((2, 1, 2, 8, 16)), {}),
        "mask of other half dtype": ((q, k, v), {"attn_mask": torch.zeros(16, 16, dtype=BF16)}),
        "mask with more dims than query": ((q[0], k[0], v[0]), {"attn_mask": torch.zeros(1, 2, 16, 16, dtype=F16)}),
        "empty": ((q[:, :, :0], k, v), {}),
        "1-D mask": ((q, k, v), {"attn_mask": torch.ones(16, dtype=torch.bool)}),
        "meta device": ((q.to("meta"), k.to("meta"), v.to("meta")), {}),
    }
    return cases[name]


FALLBACKS = [
    "dropout", "float32", "float64", "mixed dtypes", "head_dim 300", "value head_dim differs", "scale 0",
    "mask and causal", "heads differ without enable_gqa", "broadcast batch", "5-D", "mask of other half dtype",
    "mask with more dims than query", "empty", "1-D mask", "meta device",
]


@pytest.mark.parametrize("name", FALLBACKS)
def test_fallback_is_torchs_own_result(monkeypatch, name):
    args, kwargs = _fallback_case(name)
    torch.manual_seed(0)
    try:
        expected = TORCH_SDPA(*args, **kwargs)
    except Exception as e:  # torch refuses it: sdpa must refuse it the same way
        with record_abi(monkeypatch) as rec, pytest.raises(type(e)):
            sa.sdpa(*args, **kwargs)
        assert not rec.calls
        return
    torch.manual_seed(0)
    with record_abi(monkeypatch) as rec:
        out = sa.sdpa(*args, **kwargs)
    assert not rec.calls, "a fallback case reached the library"
    assert out.shape == expected.shape and out.dtype == expected.dtype
    if out.device.type != "meta":
        assert torch.equal(out, expected)


def test_inputs_that_need_grad_fall_back_with_torchs_backward(monkeypatch):
    q, k, v = (t.requires_grad_() for t in tensors((1, 2, 16, 16)))
    with record_abi(monkeypatch) as rec:
        out = sa.sdpa(q, k, v, is_causal=True)
    assert not rec.calls
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad.float()).all()
    with torch.no_grad(), record_abi(monkeypatch) as rec:
        sa.sdpa(q, k, v)
    assert len(rec.calls) == 1, "no_grad inputs that require grad need no backward: our kernel runs"


def test_library_refusal_at_run_time_falls_back_inside_the_op(monkeypatch):
    # What happens on a GPU the library has no kernel for: the op computes
    # torch's answer; the reference API reports the refusal instead.
    refuse_runs(monkeypatch, _lib.ERROR_UNSUPPORTED)
    q, k, v = tensors((1, 4, 24, 16), (1, 2, 24, 16))
    mask = make((24, 24), F16, 9)
    out = sa.sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    assert torch.allclose(out, TORCH_SDPA(q, k, v, attn_mask=mask, enable_gqa=True), atol=1e-3)
    with pytest.raises(NotImplementedError):
        sa.sageattn(q, k, v)


def test_misaligned_views_are_retried_on_fresh_copies(monkeypatch):
    calls = []
    real = _lib.plan_forward

    def plan_forward(plan, data, ws, nbytes, stream):
        calls.append(_lib.Data.from_address(data).q)
        return _lib.ERROR_MISALIGNED if len(calls) == 1 else real(plan, data, ws, nbytes, stream)

    monkeypatch.setattr(_lib, "plan_forward", plan_forward)
    q, k, v = tensors((1, 2, 16, 16))
    out = sa.sageattn(q, k, v)
    assert len(calls) == 2 and calls[0] == q.data_ptr() and calls[1] != q.data_ptr()
    monkeypatch.undo()
    assert torch.equal(out, sa.sageattn(q, k, v))


# ------------------------------------------------------------ patching


def test_patch_and_unpatch():
    original = F.scaled_dot_product_attention
    assert original is TORCH_SDPA
    sa.patch_sdpa()
    try:
        assert F.scaled_dot_product_attention is sa.sdpa
        sa.patch_sdpa()  # idempotent
        assert F.scaled_dot_product_attention is sa.sdpa
    finally:
        sa.unpatch_sdpa()
    assert F.scaled_dot_product_attention is original
    sa.unpatch_sdpa()  # harmless when not patched
    assert F.scaled_dot_product_attention is original


def test_context_manager_restores_even_on_error():
    original = F.scaled_dot_product_attention
    with pytest.raises(KeyError):
        with sa.patched_sdpa():
            assert F.scaled_dot_product_attention is sa.sdpa
            raise KeyError("boom")
    assert F.scaled_dot_product_attention is original


def test_patched_sdpa_reaches_multihead_attention(monkeypatch):
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).to(BF16).eval()
    x, y = make((2, 24, 32), BF16, 1), make((2, 24, 32), BF16, 2)  # cross-attention: not MHA's C++ fast path
    causal = torch.ones(24, 24, dtype=torch.bool).triu(1)  # MHA's convention: True = masked out
    with torch.no_grad():
        expected = mha(x, y, y, attn_mask=causal, need_weights=False)[0]
        with record_abi(monkeypatch) as rec, sa.patched_sdpa():
            out = mha(x, y, y, attn_mask=causal, need_weights=False)[0]
    assert len(rec.calls) == 1
    assert cosine(out, expected) >= 0.999


# ------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_gpu_sdpa_matches_torch_and_captures_in_a_graph():
    # Runs on our CUDA kernels, or on torch's inside the op where the library
    # has none for this GPU: either way inside a CUDA graph.
    q, k, v = (t.cuda() for t in tensors((2, 4, 256, 64), (2, 2, 256, 64), BF16))
    mask = (make((256, 256), torch.float32, 7) > -1).cuda()
    out = sa.sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    assert cosine(out.cpu(), exact(q.cpu(), k.cpu(), v.cpu(), attn_mask=mask.cpu(), enable_gqa=True)) >= 0.999
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = sa.sdpa(q, k, v, attn_mask=mask, enable_gqa=True)
    q.copy_(torch.randn_like(q))
    graph.replay()
    assert same_run(captured, sa.sdpa(q, k, v, attn_mask=mask, enable_gqa=True))


def test_torch_attention_modules_and_their_fast_path():
    # docs/PYTHON.md's table: which of torch's own attention modules reach the
    # patched SDPA, and how to make the others reach it.
    torch.manual_seed(0)
    x = make((2, 64, 128), BF16, seed=20)
    kv = make((2, 24, 128), BF16, seed=21)
    mha = torch.nn.MultiheadAttention(128, 4, batch_first=True, dtype=BF16).eval()
    layer = torch.nn.TransformerEncoderLayer(128, 4, 256, batch_first=True, dtype=BF16).eval()

    def calls(fn):
        with torch.no_grad(), sa.count_calls() as counts, sa.patched_sdpa():
            fn()
        return counts.library, counts.torch

    fast = torch.backends.mha.get_fastpath_enabled()
    assert fast  # torch's default
    try:
        assert calls(lambda: mha(x, x, x)) == (0, {})  # need_weights=True: its own softmax
        assert calls(lambda: mha(x, x, x, need_weights=False)) == (0, {})  # the fast path
        assert calls(lambda: layer(x)) == (0, {})  # the fast path
        assert calls(lambda: mha(x, kv, kv, need_weights=False)) == (1, {})  # cross-attention: no fast path
        torch.backends.mha.set_fastpath_enabled(False)
        assert calls(lambda: mha(x, x, x, need_weights=False)) == (1, {})
        assert calls(lambda: layer(x)) == (1, {})
        assert calls(lambda: mha(x, x, x)) == (0, {})  # still its own softmax
        layer.train()
        assert calls(lambda: layer(x)) == (0, {"sdpa: dropout": 1})
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    # With the fast path off, the module's output is still its own within our error.
    layer.eval()
    with torch.no_grad():
        reference = layer(x)
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with sa.patched_sdpa():
                ours = layer(x)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
    assert cosine(ours, reference) > 0.999
