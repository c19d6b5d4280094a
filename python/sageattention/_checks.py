"""The layouts of q, k and v, and what the C ABI cannot check on its own: that
the tensors agree in dtype, device and shape, the mask's broadcast, the
varlen offsets' tensors; and the outputs' shapes. Errors are ValueErrors
naming the argument."""

from __future__ import annotations

import torch

from . import _lib

# How q, k and v are laid out in memory (the `layout` argument of the ops).
HND = 0  # [batch, heads, tokens, dim]
NHD = 1  # [batch, tokens, heads, dim]
VARLEN = 2  # [total tokens, heads, dim], sequences given by cu_seqlens

DTYPES = {torch.float16: _lib.DTYPE_FP16, torch.bfloat16: _lib.DTYPE_BF16}
MASK_DTYPES = {torch.float16: _lib.DTYPE_FP16, torch.bfloat16: _lib.DTYPE_BF16, torch.float32: _lib.DTYPE_FP32}
_LAYOUT_NAMES = {HND: "HND", NHD: "NHD", VARLEN: "varlen"}


def to_hnd(t: torch.Tensor, layout: int) -> torch.Tensor:
    return t.transpose(1, 2) if layout == NHD else t


def fix_last_dim(t: torch.Tensor) -> torch.Tensor:
    """The ABI needs a contiguous last dimension; copy only when it is not."""
    if t.stride(-1) != 1 and t.size(-1) > 1:
        return t.contiguous()
    return t


def geometry(q, k, v, layout, cu_q, cu_kv):
    """(batch, heads_q, heads_kv, len_q, len_kv, head_dim), after checking what
    the C ABI cannot see: dtypes agree, devices agree, shapes agree."""
    if q.dtype not in DTYPES:
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


def mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv):
    if layout == VARLEN:
        return (batch, hq, max_q, max_kv)
    return (batch, hq, lq, lkv)


def expand_mask(mask, device, shape):
    """The mask as a [batch, heads_q, len_q, len_kv] view; broadcast dims get stride 0."""
    if mask.device != device:
        raise ValueError(f"attn_mask is on {mask.device} but q is on {device}")
    if mask.dtype != torch.bool and mask.dtype not in MASK_DTYPES:
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


def new_lse(q, layout, batch, hq, lq, return_lse):
    """The LSE output, or None when not asked for (the op then returns an empty tensor)."""
    if not return_lse:
        return None
    if layout == VARLEN:
        return q.new_empty((hq, lq), dtype=torch.float32)
    return q.new_empty((batch, hq, lq), dtype=torch.float32)

