"""The backward of `fwd`: the exact gradient of unquantized attention (and of
its LSE), recomputed with torch math in float32, in chunks of query rows so
that memory stays bounded; and the autograd glue that calls the `bwd` op."""

from __future__ import annotations

import math

import torch

from ._checks import VARLEN, to_hnd

# Float32 bytes of one query-chunk's score-sized temporaries; bounds the
# backward's memory whatever the sequence length.
_BWD_CHUNK_BYTES = 256 << 20


def _grad_hnd(do, glse, q, k, v, mask, is_causal, scale):
    """Exact gradients of softmax(scale·q·kᵀ + mask)·v (and of its LSE), in
    float32, for [b, h, n, d] views; K/V heads shared by query groups (GQA)."""
    f32 = torch.float32
    batch, hq, lq, d = q.shape
    hkv, lkv = k.size(1), k.size(2)
    group = hq // hkv
    scale = scale if scale != 0.0 else 1.0 / math.sqrt(d)
    qf = q.to(f32).unflatten(1, (hkv, group))
    kf = k.to(f32).unsqueeze(2)
    vf = v.to(f32).unsqueeze(2)
    dof = do.to(f32).unflatten(1, (hkv, group))
    glf = glse.to(f32).unflatten(1, (hkv, group)) if glse is not None else None
    m = mask.expand(batch, hq, lq, lkv).unflatten(1, (hkv, group)) if mask is not None else None
    dq = torch.empty_like(qf)
    dk = torch.zeros(batch, hkv, lkv, d, dtype=f32, device=q.device)
    dv = torch.zeros_like(dk)
    rows = max(1, _BWD_CHUNK_BYTES // max(1, 16 * batch * hq * lkv))
    cols = torch.arange(lkv, device=q.device)
    for r0 in range(0, lq, rows):
        r1 = min(lq, r0 + rows)
        qc, doc = qf[..., r0:r1, :], dof[..., r0:r1, :]
        s = (qc @ kf.transpose(-1, -2)) * scale
        if m is not None:
            mc = m[..., r0:r1, :]
            s = s.masked_fill(~mc, float("-inf")) if mc.dtype == torch.bool else s + mc.to(f32)
        if is_causal:
            visible = cols <= torch.arange(r0, r1, device=q.device).unsqueeze(1) + (lkv - lq)
            s = s.masked_fill(~visible, float("-inf"))
        top = s.amax(-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # rows that see no key
        e = torch.exp(s - top)
        z = e.sum(-1, keepdim=True)
        pr = e / torch.where(z > 0, z, torch.ones_like(z))
        o = pr @ vf
        dv += (pr.transpose(-1, -2) @ doc).sum(2)
        ds = doc @ vf.transpose(-1, -2) - (doc * o).sum(-1, keepdim=True)
        if glf is not None:
            ds = ds + glf[..., r0:r1].unsqueeze(-1)
        ds = pr * ds
        dq[..., r0:r1, :] = (ds @ kf) * scale
        dk += (ds.transpose(-1, -2) @ qc).sum(2) * scale
    return dq.flatten(1, 2), dk, dv


def bwd_kernel(grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale):
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if layout != VARLEN:
        h = lambda t: to_hnd(t, layout)
        gq, gk, gv = _grad_hnd(h(grad_out), grad_lse, h(q), h(k), h(v), attn_mask, is_causal, scale)
        h(dq).copy_(gq)
        h(dk).copy_(gk)
        h(dv).copy_(gv)
        return dq, dk, dv
    starts_q, starts_kv = cu_q.tolist(), cu_kv.tolist()
    batch = len(starts_q) - 1
    dk.zero_()
    dv.zero_()
    for b in range(batch):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_kv[b], starts_kv[b + 1]
        mask = None
        if attn_mask is not None:
            mask = attn_mask.expand(batch, q.size(1), max_q, max_kv)[b : b + 1, :, : q1 - q0, : k1 - k0]
        seq = lambda t, a, z: t[a:z].transpose(0, 1).unsqueeze(0)
        glse = grad_lse[:, q0:q1].unsqueeze(0) if grad_lse is not None else None
        gq, gk, gv = _grad_hnd(
            seq(grad_out, q0, q1), glse, seq(q, q0, q1), seq(k, k0, k1), seq(v, k0, k1), mask, is_causal, scale
        )
        dq[q0:q1] = gq[0].transpose(0, 1)
        dk[k0:k1] = gk[0].transpose(0, 1)
        dv[k0:k1] = gv[0].transpose(0, 1)
    return dq, dk, dv


def bwd_fake(grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def setup_context(ctx, inputs, output):
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale = inputs[:11]
    if attn_mask is not None and attn_mask.requires_grad:
        raise NotImplementedError("sageattention does not differentiate attn_mask; detach it or use torch's SDPA")
    ctx.save_for_backward(q, k, v, attn_mask, cu_q, cu_kv)
    ctx.args = (layout, max_q, max_kv, is_causal, scale)


def backward(ctx, grad_out, grad_lse):
    q, k, v, attn_mask, cu_q, cu_kv = ctx.saved_tensors
    layout, max_q, max_kv, is_causal, scale = ctx.args
    if grad_lse is not None and grad_lse.numel() == 0:
        grad_lse = None
    dq, dk, dv = torch.ops.sageattention.bwd.default(
        grad_out, grad_lse, q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale
    )
    return (dq, dk, dv) + (None,) * 18
