"""ComfyUI's attention entry point, called the way ComfyUI calls it.

ComfyUI is not a package one installs from an index, so this test restates,
in its own code, the calls its `attention_sage` (comfy/ldm/modules/attention.py,
used with `--use-sage-attention`) makes, argument for argument, and those of
the KJNodes "Patch Sage Attention KJ" node:

- ComfyUI decides whether sageattn takes masks by looking for `attn_mask` in
  `inspect.signature(sageattn).parameters`; without it, masked calls go to
  torch's SDPA.
- Its inputs are either [b, tokens, heads * head_dim] (viewed as NHD,
  `tensor_layout="NHD"`) or, with `skip_reshape`, [b, heads, tokens, head_dim]
  (`tensor_layout="HND"`); K/V heads are repeated to q's for GQA before the call.
- A mask of 2 or 3 dims gets unit batch / head dims in front ([1, 1, L, S],
  [b, 1, L, S]); it is bool (True attends) or additive, and is passed as
  `attn_mask=` only when there is one.
- The call: `sageattn(q, k, v, is_causal=False, tensor_layout=..., sm_scale=
  <the caller's scale or None>, smooth_k=False[, attn_mask=mask])`. The output
  is in the input layout and is reshaped back to [b, tokens, heads * head_dim]
  (or, with skip_output_reshape, [b, heads, tokens, head_dim]).
- Any exception is logged and the call is redone with torch's SDPA: so what we
  cannot run (float32 inputs, head dims above 256) must raise, never return
  something wrong.
- KJNodes calls each entry point with `attn_mask=mask, is_causal=False,
  tensor_layout=...` (fp16_cuda with pv_accum_dtype "fp32", fp8_cuda with
  "fp32+fp32" or "fp32+fp16"), after casting float32 inputs to float16 and
  back.

CPU tensors here; the same cases run on the GPU where there is one (marked gpu).
"""

import inspect

import pytest
import torch

import sageattention
from attn_helpers import cosine, make, record_abi, reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _comfy_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, scale=None):
    """sageattn called as ComfyUI's attention_sage calls it (module docstring)."""
    if skip_reshape:
        b, _, _, dim_head = q.shape
        layout = "HND"
    else:
        b, _, inner = q.shape
        dim_head = inner // heads
        q, k, v = (t.view(b, -1, heads, dim_head) for t in (q, k, v))
        layout = "NHD"
    if mask is not None and mask.ndim == 2:
        mask = mask[None]
    if mask is not None and mask.ndim == 3:
        mask = mask[:, None]
    kwargs = {"is_causal": False, "tensor_layout": layout, "sm_scale": scale, "smooth_k": False}
    if mask is not None:
        kwargs["attn_mask"] = mask
    out = sageattention.sageattn(q, k, v, **kwargs)
    if layout == "HND":
        return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * dim_head)
    return out.transpose(1, 2) if skip_output_reshape else out.reshape(b, -1, heads * dim_head)


def _expected(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False, scale=None):
    """The same attention in float64 (attn_helpers.reference), in the output layout ComfyUI expects."""
    if skip_reshape:
        b, _, _, d = q.shape
        hnd = (q, k, v)
    else:
        b, _, inner = q.shape
        d = inner // heads
        hnd = tuple(t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    m = mask
    if m is not None and m.ndim == 2:
        m = m[None]
    if m is not None and m.ndim == 3:
        m = m[:, None]
    out, _ = reference(*(t.cpu() for t in hnd), mask=None if m is None else m.cpu(), scale=scale)
    return out if skip_output_reshape else out.transpose(1, 2).reshape(b, -1, heads * d)


def _close(out, expected, dtype):
    assert out.dtype == dtype and out.shape == expected.shape
    assert torch.isfinite(out).all()
    assert cosine(out.cpu(), expected) > 0.999


def test_comfyui_finds_attn_mask_in_the_signature():
    # SAGE_ATTENTION_SUPPORTS_MASK in ComfyUI: without it, masked calls bypass us.
    assert "attn_mask" in inspect.signature(sageattention.sageattn).parameters
    # A ComfyUI fork treats a version starting with "1" as the SageAttention 1 API.
    assert not sageattention.__version__.startswith("1")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("skip_reshape,skip_output_reshape", [(False, False), (False, True), (True, False), (True, True)])
def test_layouts(device, dtype, skip_reshape, skip_output_reshape, monkeypatch):
    heads, d, tokens, text = 4, 64, 96, 40
    # Keys of another length than the queries: cross-attention to text tokens.
    if skip_reshape:  # [b, heads, tokens, d]: what Flux and Wan pass after their RoPE
        shapes = (2, heads, tokens, d), (2, heads, text, d)
    else:  # [b, tokens, heads * d]: the projections' output as it is
        shapes = (2, tokens, heads * d), (2, text, heads * d)
    q = make(shapes[0], dtype, seed=1, device=device)
    k, v = make(shapes[1], dtype, seed=2, device=device), make(shapes[1], dtype, seed=3, device=device)
    with record_abi(monkeypatch) as rec:
        out = _comfy_attention(q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape)
    _close(out, _expected(q, k, v, heads, skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape), dtype)
    # What ComfyUI asked for reached the library: no K smoothing, no mask, not causal.
    p = rec.last
    assert (p.smooth_k, p.causal, p.mask.type, p.len_q, p.len_kv, p.heads_q) == (0, 0, 0, tokens, text, heads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "mask_kind", ["2d-additive-f32", "2d-additive-q-dtype", "3d-bool", "4d-bool-per-batch", "3d-additive-per-batch"]
)
def test_masks(device, mask_kind):
    heads, d, b, lq, lkv = 2, 64, 2, 64, 80
    dtype = torch.bfloat16
    q = make((b, lq, heads * d), dtype, seed=4, device=device)
    k, v = make((b, lkv, heads * d), dtype, seed=5, device=device), make((b, lkv, heads * d), dtype, seed=6, device=device)
    g = torch.Generator().manual_seed(7)
    keep = torch.rand(b, lq, lkv, generator=g) > 0.3
    keep[..., 0] = True  # every row sees a key
    additive = torch.zeros(b, lq, lkv).masked_fill(~keep, float("-inf"))
    mask = {
        "2d-additive-f32": additive[0],
        "2d-additive-q-dtype": additive[0].to(dtype),
        "3d-bool": keep[:1],
        "4d-bool-per-batch": keep[:, None],
        "3d-additive-per-batch": additive,
    }[mask_kind].to(device)
    out = _comfy_attention(q, k, v, heads, mask=mask)
    expected = _expected(q, k, v, heads, mask=mask)
    _close(out, expected, dtype)
    # The mask matters here: without it the result is another one.
    assert cosine(_comfy_attention(q, k, v, heads).cpu(), expected) < 0.99


@pytest.mark.parametrize("device", DEVICES)
def test_scale_and_repeated_kv_heads(device):
    # ComfyUI passes the model's scale as sm_scale, and repeats K/V heads for GQA.
    heads, d = 4, 32
    q = make((1, heads, 48, d), torch.float16, seed=8, device=device)
    k, v = (make((1, 1, 48, d), torch.float16, seed=s, device=device).repeat_interleave(heads, 1) for s in (9, 10))
    out = _comfy_attention(q, k, v, heads, skip_reshape=True, scale=0.3)
    _close(out, _expected(q, k, v, heads, skip_reshape=True, scale=0.3), torch.float16)


@pytest.mark.parametrize("device", DEVICES)
def test_what_we_cannot_run_raises_so_comfyui_falls_back(device):
    # ComfyUI catches any exception and redoes the call with torch's SDPA.
    q = make((1, 16, 2 * 64), torch.float32, device=device)
    with pytest.raises(ValueError, match="torch.float16 or torch.bfloat16"):
        _comfy_attention(q, q, q, 2)  # current ComfyUI passes float32 through
    wide = make((1, 16, 2 * 320), torch.float16, device=device)
    with pytest.raises(ValueError, match="head_dim = 320"):
        _comfy_attention(wide, wide, wide, 2)
    # Head dims up to 256 run (the reference stops at 128), on every GPU: those with
    # 99 KB of shared memory per block too.
    big = make((1, 16, 2 * 256), torch.float16, device=device)
    _close(_comfy_attention(big, big, big, 2), _expected(big, big, big, 2), torch.float16)


KJNODES_MODES = {
    "auto": ("sageattn", {}),
    "sageattn_qk_int8_pv_fp16_cuda": ("sageattn_qk_int8_pv_fp16_cuda", {"pv_accum_dtype": "fp32"}),
    "sageattn_qk_int8_pv_fp16_triton": ("sageattn_qk_int8_pv_fp16_triton", {}),
    "sageattn_qk_int8_pv_fp8_cuda": ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32+fp32"}),
    "sageattn_qk_int8_pv_fp8_cuda++": ("sageattn_qk_int8_pv_fp8_cuda", {"pv_accum_dtype": "fp32+fp16"}),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", sorted(KJNODES_MODES))
def test_kjnodes_modes(device, mode):
    # KJNodes passes attn_mask to every entry point (None when there is none),
    # and casts float32 inputs to float16, then the output back.
    name, extra = KJNODES_MODES[mode]
    fn = getattr(sageattention, name)
    heads, d = 2, 64
    q32 = make((1, 80, heads * d), torch.float32, seed=11, device=device)
    k32, v32 = (make((1, 80, heads * d), torch.float32, seed=s, device=device) for s in (12, 13))
    keep = torch.ones(80, 80, dtype=torch.bool).tril().to(device)
    for mask in (None, keep):
        q, k, v = (t.to(torch.float16) for t in (q32, k32, v32))
        b, _, inner = q.shape
        qh, kh, vh = (t.view(b, -1, heads, d) for t in (q, k, v))
        out = fn(qh, kh, vh, attn_mask=None if mask is None else mask[None, None], is_causal=False,
                 tensor_layout="NHD", **extra).to(torch.float32)
        out = out.reshape(b, -1, heads * d)
        _close(out, _expected(q, k, v, heads, mask=mask).float(), torch.float32)
