"""The torch.library operators over the C ABI.

`sageattention::fwd` computes attention (quantized, or the exact float64
reference on the CPU); `sageattention::bwd` is its backward: the exact
gradient of unquantized attention, recomputed with torch math. Both have
fake implementations, so that torch.compile traces through them, and run on
the current stream of the tensors' device, so that CUDA graphs capture them.

This module holds the schemas, their registrations and the calls into them;
the work is done by _checks (the layouts and the checks in Python), _plan (the
kept problem structs and the C call), _fallback (torch's SDPA, where the
library cannot run a problem) and _backward (the gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _lib, _plan
from ._backward import backward, bwd_fake, bwd_kernel, setup_context
from ._checks import expand_mask, fix_last_dim, geometry, mask_shape, new_lse

# The op's `layout` argument, and the original SDPA (captured before anyone can
# patch it), for the modules that call the ops.
from ._checks import HND, NHD, VARLEN  # noqa: E402, F401
from ._fallback import torch_sdpa  # noqa: E402, F401

_library = torch.library.Library("sageattention", "DEF")
_library.define(
    "fwd(Tensor q, Tensor k, Tensor v, int layout, Tensor? attn_mask, Tensor? cu_seqlens_q, "
    "Tensor? cu_seqlens_kv, int max_seqlen_q, int max_seqlen_kv, bool is_causal, float scale, "
    "bool return_lse, int algorithm, int qk_granularity, int qk_precision, int pv_precision, "
    "int pv_accum, bool smooth_k, bool smooth_v, bool fallback, bool check_seqlens=False) -> (Tensor, Tensor)"
)
_library.define(
    "bwd(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, int layout, Tensor? attn_mask, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_kv, int max_seqlen_q, int max_seqlen_kv, bool is_causal, "
    "float scale) -> (Tensor, Tensor, Tensor)"
)


def _fwd_kernel(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *rest):
    # rest: the options (scale .. smooth_v), fallback, and check_seqlens when given (it has a default).
    check = len(rest) > 10 and rest[10]
    out, lse = _plan.forward(
        q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, rest[:9], rest[9], check=check
    )
    return out, lse if lse is not None else out.new_empty((0,), dtype=torch.float32)


def _fwd_fake(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, scale, return_lse,
    algorithm, qk_granularity, qk_precision, pv_precision, pv_accum, smooth_k, smooth_v, fallback, check_seqlens=False,
):
    q, k, v = fix_last_dim(q), fix_last_dim(k), fix_last_dim(v)
    batch, hq, _, lq, lkv, _ = geometry(q, k, v, layout, cu_q, cu_kv)
    if attn_mask is not None:
        expand_mask(attn_mask, q.device, mask_shape(batch, hq, lq, lkv, layout, max_q, max_kv))
    lse = new_lse(q, layout, batch, hq, lq, return_lse)
    return torch.empty_like(q), lse if lse is not None else q.new_empty((0,), dtype=torch.float32)


_library.impl("fwd", _fwd_kernel, "CPU")
_library.impl("fwd", _fwd_kernel, "CUDA")
torch.library.register_fake("sageattention::fwd", _fwd_fake, lib=_library)


_library.impl("bwd", bwd_kernel, "CPU")
_library.impl("bwd", bwd_kernel, "CUDA")
torch.library.register_fake("sageattention::bwd", bwd_fake, lib=_library)
torch.library.register_autograd("sageattention::fwd", backward, setup_context=setup_context, lib=_library)

# ------------------------------------------------------------------ calling

_fwd_op = torch.ops.sageattention.fwd.default
_is_compiling = torch.compiler.is_compiling
_dispatch_modes = torch._C._len_torch_dispatch_stack
_Tensor = torch.Tensor


class Options(NamedTuple):
    """The `fwd` arguments from `scale` to `smooth_v`, in schema order."""

    scale: float = 0.0  # 0 = 1/sqrt(head_dim)
    return_lse: bool = False
    algorithm: int = _lib.ALGORITHM_QUANTIZED
    qk_granularity: int = _lib.QK_PER_THREAD
    qk_precision: int = _lib.QK_AUTO
    pv_precision: int = _lib.PV_AUTO
    pv_accum: int = _lib.ACCUM_AUTO
    smooth_k: bool = True
    smooth_v: bool = False


DEFAULT_OPTIONS = Options()


def attention(
    q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback=False, check_seqlens=False
):
    """Runs the `fwd` op; returns (out, lse). Without options.return_lse,
    lse is None or an empty tensor: callers must not use it. check_seqlens:
    the op's argument (varlen on CUDA: cu_seqlens checked on the device)."""
    if (
        _is_compiling()
        or _dispatch_modes()
        or type(q) is not _Tensor
        or type(k) is not _Tensor
        or type(v) is not _Tensor
        or (attn_mask is not None and type(attn_mask) is not _Tensor)
        or (cu_q is not None and (type(cu_q) is not _Tensor or type(cu_kv) is not _Tensor))
        or not (q.is_cuda or q.is_cpu)
        or (
            torch.is_grad_enabled()
            and (
                q.requires_grad
                or k.requires_grad
                or v.requires_grad
                or (attn_mask is not None and attn_mask.requires_grad)
            )
        )
    ):
        return _fwd_op(
            q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *options, fallback, check_seqlens
        )
    # Plain eager tensors, nothing to differentiate, no dispatch mode watching:
    # the op would only route to this same code, through a dispatcher and an
    # autograd layer that cost more host time than the rest of the call.
    return _plan.forward(
        q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, True, check_seqlens
    )


def attention_checked(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback=False):
    """attention() for callers that have already checked what it checks on the
    tensors: q, k, v (and the mask) plain torch.Tensors on a CPU or CUDA
    device, none needing grad (sdpa's rules ensure it)."""
    if _is_compiling() or _dispatch_modes():
        return _fwd_op(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, *options, fallback)
    return _plan.forward(q, k, v, layout, attn_mask, cu_q, cu_kv, max_q, max_kv, is_causal, options, fallback, True)
