"""What `fwd` computes, done by torch's own SDPA: the answer for problems the
library cannot run on the device (unsupported or misaligned), where the caller
allows it."""

from __future__ import annotations

import torch

from ._checks import VARLEN, to_hnd

# The original SDPA, captured before anyone can patch it.
torch_sdpa = torch.nn.functional.scaled_dot_product_attention
_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2] if x.isdigit()) >= (2, 5)


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
        out = _sdpa_hnd(to_hnd(q, layout), to_hnd(k, layout), to_hnd(v, layout), mask, is_causal, scale)
        return to_hnd(out, layout)
    out = torch.empty_like(q)
    starts_q, starts_kv = cu_q.tolist(), cu_kv.tolist()
    for b in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_kv[b], starts_kv[b + 1]
        seq_mask = mask[b : b + 1, :, : q1 - q0, : k1 - k0] if mask is not None else None
        seq = [t.transpose(0, 1).unsqueeze(0) for t in (q[q0:q1], k[k0:k1], v[k0:k1])]
        out[q0:q1] = _sdpa_hnd(*seq, seq_mask, is_causal, scale)[0].transpose(0, 1)
    return out

