"""A drop-in torch.nn.functional.scaled_dot_product_attention.

`sdpa` has torch's signature and semantics. What the library can compute
(fp16/bf16 CPU or CUDA tensors, head_dim 1..256, bool or additive masks,
causal, GQA, any scale but 0) runs on it; everything else goes to torch's
own SDPA, captured at import, so that no argument is ever dropped.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from . import _counting, _lib, _ops

_F16, _BF16 = torch.float16, torch.bfloat16
_Tensor = torch.Tensor
_is_compiling = torch.compiler.is_compiling


def _why_torch(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """None when the library computes exactly what torch's SDPA would, else
    why torch's SDPA must (a constant string, counted by count_calls()).
    Metadata only, so that torch.compile traces it without a graph break;
    cheap checks first, since this runs on every call."""
    if type(query) is not _Tensor or type(key) is not _Tensor or type(value) is not _Tensor:
        return "sdpa: tensor subclass"  # DTensor, nested, ...: they keep their own dispatch
    dtype = query.dtype
    if (dtype is not _F16 and dtype is not _BF16) or key.dtype is not dtype or value.dtype is not dtype:
        return "sdpa: dtype not fp16/bf16"
    if dropout_p != 0.0:
        return "sdpa: dropout"
    if not (query.is_cuda or query.is_cpu):
        return "sdpa: device"
    device = query.device
    if key.device != device or value.device != device:
        return "sdpa: device"
    if torch.is_grad_enabled() and (
        query.requires_grad
        or key.requires_grad
        or value.requires_grad
        or (attn_mask is not None and attn_mask.requires_grad)
    ):
        return "sdpa: needs grad"  # torch's fused backward is exact and fast; ours would be neither
    shape_q, shape_k = query.shape, key.shape
    dims = len(shape_q)
    if dims < 2 or dims > 4 or len(shape_k) != dims or value.dim() != dims:
        return "sdpa: shape"
    head_dim = shape_q[-1]
    if head_dim < 1 or head_dim > _lib.MAX_HEAD_DIM or shape_k[-1] != head_dim or value.shape != shape_k:
        return "sdpa: head_dim"  # other head dims, or a value head_dim of its own
    if dims == 4 and shape_q[0] != shape_k[0]:
        return "sdpa: shape"  # broadcast batch dims
    if dims > 2 and shape_q[-3] != shape_k[-3]:
        if not enable_gqa or shape_k[-3] == 0 or shape_q[-3] % shape_k[-3] != 0:
            return "sdpa: shape"  # torch raises for these; let it
    if shape_q[-2] == 0 or shape_k[-2] == 0 or (dims == 4 and shape_q[0] == 0):
        return "sdpa: empty"
    if scale is not None and (scale == 0.0 or not math.isfinite(scale)):
        return "sdpa: scale"  # the ABI reads scale 0 as 1/sqrt(head_dim)
    if attn_mask is not None:
        if is_causal or type(attn_mask) is not _Tensor:
            return "sdpa: mask"  # torch raises for mask + is_causal
        if attn_mask.device != device or attn_mask.dim() > dims or attn_mask.dim() < 2:
            return "sdpa: mask"  # torch rejects masks of fewer than 2 dims
        if attn_mask.dtype is not torch.bool and attn_mask.dtype is not dtype and attn_mask.dtype is not torch.float32:
            return "sdpa: mask"
    return None


def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention, run by sageattention
    where it can be computed exactly as torch defines it (quantized), and by
    torch's own SDPA otherwise. See docs/PYTHON.md for the rules."""
    why = _why_torch(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if why is not None:
        if not _is_compiling() and _counting.active is not None:
            _counting.active.fell_back(why)
        extra = {"enable_gqa": True} if enable_gqa else {}  # older torch has no such argument
        return _ops.torch_sdpa(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **extra
        )
    dims = query.dim()
    q, k, v = query, key, value
    if dims < 4:  # unbatched: views with unit leading dims
        lead = (1,) * (4 - dims)
        q, k, v = q.view(lead + q.shape), k.view(lead + k.shape), v.view(lead + v.shape)
    causal = bool(is_causal)
    len_q, len_kv = q.size(2), k.size(2)
    if causal and len_q != len_kv:
        # torch aligns is_causal top-left (query i sees keys j <= i); the library
        # aligns bottom-right, so give it torch's mask explicitly.
        attn_mask = torch.ones(len_q, len_kv, dtype=torch.bool, device=q.device).tril()
        causal = False
    options = _ops.DEFAULT_OPTIONS if scale is None else _ops.Options(scale=float(scale))
    out, _ = _ops.attention_checked(q, k, v, _ops.HND, attn_mask, None, None, 0, 0, causal, options, True)
    return out.view(query.shape) if dims < 4 else out


_before_patch = None


def patch_sdpa() -> None:
    """Installs `sdpa` as torch.nn.functional.scaled_dot_product_attention
    (also what nn.MultiheadAttention and most models call). Idempotent."""
    global _before_patch
    if F.scaled_dot_product_attention is not sdpa:
        _before_patch = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = sdpa


def unpatch_sdpa() -> None:
    """Restores what patch_sdpa() replaced."""
    global _before_patch
    if F.scaled_dot_product_attention is sdpa:
        F.scaled_dot_product_attention = _before_patch if _before_patch is not None else _ops.torch_sdpa
    _before_patch = None


@contextlib.contextmanager
def patched_sdpa():
    """`with sageattention.patched_sdpa(): ...` runs the block with `sdpa`
    installed, and puts back whatever was there before, even on error."""
    previous = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = previous
