"""The public API of SageAttention 2.x, with its argument names and defaults,
served by libsageattn.

Mostly a superset of the reference (docs/PYTHON.md lists every difference):
CPU tensors, head dims 1..256, any strided view with a contiguous last dim,
GQA everywhere, bottom-right causal masks when len_q != len_kv, attention
masks on every entry point. Arguments are honoured or refused, never
swallowed: unknown keyword arguments raise TypeError.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from . import _lib, _ops

_LAYOUTS = {"HND": _ops.HND, "NHD": _ops.NHD}
_GRANULARITIES = {"per_thread": _lib.QK_PER_THREAD, "per_warp": _lib.QK_PER_WARP, "per_block": _lib.QK_PER_BLOCK}
_QK_PRECISIONS = {"auto": _lib.QK_AUTO, "int8": _lib.QK_INT8, "input": _lib.QK_INPUT}
_BACKENDS = ("triton", "cuda")

# pv_accum_dtype -> (pv_precision, pv_accum), per family of entry points.
# The reference's whole-sequence "fp16" accumulator overflows on long rows;
# the library runs it as fp16 per block added into fp32 (sageattn.h).
_PV_FP16 = {
    "fp32": (_lib.PV_FP16, _lib.ACCUM_FP32),
    "fp16+fp32": (_lib.PV_FP16, _lib.ACCUM_FP16_FP32),
    "fp16": (_lib.PV_FP16, _lib.ACCUM_FP16_FP32),
}
_PV_FP8 = {
    "fp32": (_lib.PV_FP8, _lib.ACCUM_FP32),
    "fp32+fp32": (_lib.PV_FP8, _lib.ACCUM_FP32_FP32),
    "fp32+fp16": (_lib.PV_FP8, _lib.ACCUM_FP32_FP16),
}
_PV_SM90 = {k: _PV_FP8[k] for k in ("fp32", "fp32+fp32")}
# sageattn / sageattn_varlen choose for the device; a pv_accum_dtype given to
# them anyway picks the precision it implies ("fp32" alone implies none).
_PV_ANY = {**_PV_FP8, **_PV_FP16, "fp32": (_lib.PV_AUTO, _lib.ACCUM_FP32), None: (_lib.PV_AUTO, _lib.ACCUM_AUTO)}
_PV_TABLES = {"any": _PV_ANY, "fp16": _PV_FP16, "fp8": _PV_FP8, "sm90": _PV_SM90}

# Keyword arguments every entry point honours beyond its own parameters.
# (attn_mask is a named parameter of every entry point: keyword-only where the
# reference has none, so that clients that look for it in the signature, as
# ComfyUI does before passing masks, find it.)
_EXTRA_KWARGS = frozenset(
    (
        "qk_quant_gran",
        "pv_accum_dtype",
        "smooth_k",
        "smooth_v",
        "qk_precision",  # "auto" (default), "int8", "input"
        "quantization_backend",  # accepted for compatibility; one backend here
        "return_lse",
        # Accepted from SDPA-style callers only where they change nothing:
        "scale",  # an alias of sm_scale
        "dropout_p",  # must be 0
        "enable_gqa",  # GQA always works
    )
)


def _choice(fn: str, name: str, value, table: dict):
    try:
        return table[value]
    except (KeyError, TypeError):
        accepted = ", ".join(repr(k) for k in table if k is not None)
        hint = ""
        if name == "tensor_layout" and isinstance(value, torch.Tensor):
            hint = (
                " (a tensor here usually means sageattn was installed as F.scaled_dot_product_attention "
                "and got attn_mask positionally; use sageattention.patch_sdpa() instead)"
            )
        raise ValueError(f"{fn}(): {name} = {value!r}; accepted: {accepted}{hint}") from None


def _check_kwargs(fn: str, kwargs: dict) -> None:
    for name in kwargs:
        if name not in _EXTRA_KWARGS:
            raise TypeError(
                f"{fn}() got an unexpected keyword argument {name!r} "
                "(sageattention refuses arguments rather than ignore them)"
            )


def _options(fn: str, kwargs: tuple, explicit: tuple, pv_table: str) -> _ops.Options:
    """Every option as its ABI value, from the (name, value) pairs of the
    honoured **kwargs under those of the explicit parameters. attn_mask is
    not among them: options are cached, masks are not."""
    o = dict(kwargs)
    o.update(explicit)
    if o.get("dropout_p", 0.0):
        raise ValueError(f"{fn}(): dropout_p = {o['dropout_p']}; sageattention has no dropout (use torch's SDPA)")
    sm_scale, alias = o.get("sm_scale"), o.get("scale")
    if alias is not None:
        if sm_scale is not None and sm_scale != alias:
            raise ValueError(f"{fn}(): sm_scale = {sm_scale} and scale = {alias} disagree")
        sm_scale = alias
    if sm_scale is None:
        scale = 0.0  # the library's 1/sqrt(head_dim)
    else:
        scale = float(sm_scale)
        if scale == 0.0 or not math.isfinite(scale):
            raise ValueError(f"{fn}(): sm_scale = {sm_scale}; it must be finite and nonzero")
    backend = o.get("quantization_backend", "triton")
    if backend not in _BACKENDS:
        raise ValueError(f"{fn}(): quantization_backend = {backend!r}; accepted: 'triton', 'cuda'")
    pv_precision, pv_accum = _choice(fn, "pv_accum_dtype", o.get("pv_accum_dtype"), _PV_TABLES[pv_table])
    return _ops.Options(
        scale=scale,
        return_lse=bool(o.get("return_lse", False)),
        qk_granularity=_choice(fn, "qk_quant_gran", o.get("qk_quant_gran", "per_thread"), _GRANULARITIES),
        qk_precision=_choice(fn, "qk_precision", o.get("qk_precision", "auto"), _QK_PRECISIONS),
        pv_precision=pv_precision,
        pv_accum=pv_accum,
        smooth_k=bool(o.get("smooth_k", True)),
        smooth_v=bool(o.get("smooth_v", False)),
    )


# Parsing options costs more host time than the attention call itself at
# small sizes; the same few combinations come back on every call.
_cached_options = functools.lru_cache(maxsize=512)(_options)


def _resolve(fn: str, kwargs: dict, explicit: tuple, pv_table: str) -> _ops.Options:
    """The options of one call; explicit: (name, value) pairs of the named parameters."""
    kw = ()
    if kwargs:
        _check_kwargs(fn, kwargs)
        kw = tuple(kwargs.items())
    if torch.compiler.is_compiling():  # traced once per graph: no cache needed, nor wanted by dynamo
        return _options(fn, kw, explicit, pv_table)
    try:
        return _cached_options(fn, kw, explicit, pv_table)
    except TypeError:  # an unhashable value: parse it uncached
        return _options(fn, kw, explicit, pv_table)


def _check_tensors(fn: str, q, k, v) -> None:
    if isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor):
        return
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{fn}(): {name} must be a torch.Tensor, not {type(t).__name__}")


# The reference options the CUDA-named entry points take, by parameter name.
_CUDA_OPTIONS = ("qk_quant_gran", "sm_scale", "pv_accum_dtype", "smooth_k", "smooth_v", "return_lse")


def _explicit(args: dict, names: tuple = _CUDA_OPTIONS) -> tuple:
    """The options a function received as named parameters (those it has),
    as (name, value) pairs."""
    return tuple([(name, args[name]) for name in names if name in args])


def _dense(fn, q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, pv_table):
    _check_tensors(fn, q, k, v)
    layout = _choice(fn, "tensor_layout", tensor_layout, _LAYOUTS)
    o = _resolve(fn, kwargs, explicit, pv_table)
    out, lse = _ops.attention(q, k, v, layout, attn_mask, None, None, 0, 0, bool(is_causal), o)
    return (out, lse) if o.return_lse else out


def sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    return_lse: bool = False,
    *,
    attn_mask: torch.Tensor | None = None,
    **kwargs: Any,
):
    """SageAttention with the best kernel for q's device (CPU or CUDA).

    q: [batch, heads_q, len_q, head_dim] ("HND") or [batch, len_q, heads_q,
    head_dim] ("NHD"); k, v likewise with heads_kv dividing heads_q. fp16 or
    bf16, head_dim 1..256. is_causal aligns the mask bottom-right. Returns
    out in q's layout, and with return_lse the float32 natural-log LSE
    [batch, heads_q, len_q]. attn_mask: bool (True attends) or additive,
    broadcast to [batch, heads_q, len_q, len_kv]. kwargs: see docs/PYTHON.md.
    """
    explicit = (("sm_scale", sm_scale), ("return_lse", return_lse))
    return _dense("sageattn", q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, "any")


def sageattn_qk_int8_pv_fp16_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    quantization_backend: str = "triton",
    is_causal: bool = False,
    attn_mask: torch.Tensor | None = None,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    return_lse: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-block INT8 Q/K, FP16 P·V accumulated in fp16 per block and added
    into fp32. attn_mask: bool (True attends) or additive fp16/bf16/fp32."""
    explicit = (
        ("quantization_backend", quantization_backend),
        ("sm_scale", sm_scale),
        ("smooth_k", smooth_k),
        ("return_lse", return_lse),
        ("qk_quant_gran", kwargs.pop("qk_quant_gran", "per_block")),
        ("pv_accum_dtype", kwargs.pop("pv_accum_dtype", "fp16+fp32")),
    )
    fn = "sageattn_qk_int8_pv_fp16_triton"
    return _dense(fn, q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, "fp16")


def sageattn_qk_int8_pv_fp16_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    *,
    attn_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """INT8 Q/K, FP16 P·V. pv_accum_dtype: "fp32", "fp16+fp32" or "fp16"
    (run as fp16+fp32). smooth_v is honoured in every mode."""
    explicit = _explicit(locals())
    fn = "sageattn_qk_int8_pv_fp16_cuda"
    return _dense(fn, q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, "fp16")


def sageattn_qk_int8_pv_fp8_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp16",
    smooth_k: bool = True,
    smooth_v: bool = False,
    return_lse: bool = False,
    *,
    attn_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """INT8 Q/K, FP8 P·V. pv_accum_dtype: "fp32", "fp32+fp32" or "fp32+fp16"."""
    explicit = _explicit(locals())
    fn = "sageattn_qk_int8_pv_fp8_cuda"
    return _dense(fn, q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, "fp8")


def sageattn_qk_int8_pv_fp8_cuda_sm90(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    qk_quant_gran: str = "per_thread",
    sm_scale: float | None = None,
    pv_accum_dtype: str = "fp32+fp32",
    smooth_k: bool = True,
    return_lse: bool = False,
    *,
    attn_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """INT8 Q/K, FP8 P·V, the reference's Hopper entry point; runs on any
    device the library supports. pv_accum_dtype: "fp32+fp32" or "fp32"."""
    explicit = _explicit(locals())
    fn = "sageattn_qk_int8_pv_fp8_cuda_sm90"
    return _dense(fn, q, k, v, tensor_layout, is_causal, attn_mask, kwargs, explicit, "sm90")


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _cu_seqlens(fn: str, name: str, cu, check: bool = True) -> torch.Tensor:
    """cu_seqlens as the int32 the ABI reads. The reference takes int64 too: a plain
    narrowing would wrap an offset past 2^31 into a plausible one, so int64 values
    are checked first (reading them costs a synchronisation on CUDA, which the
    unchecked CUDA path does not pay: it saturates them to int32 instead, and the
    kernels then clamp offsets to the tensors)."""
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{fn}(): {name} must be a torch.Tensor, not {type(cu).__name__}")
    if cu.dtype == torch.int64:
        if (check or not cu.is_cuda) and cu.numel() > 0:
            outside = (cu < _INT32_MIN) | (cu > _INT32_MAX)
            if bool(outside.any()):
                i = int(outside.nonzero()[0, 0])
                raise ValueError(
                    f"{fn}(): {name}[{i}] = {int(cu[i])} does not fit the int32 offsets the library reads "
                    f"(-2^31 .. 2^31-1)"
                )
        elif cu.is_cuda:
            cu = cu.clamp(_INT32_MIN, _INT32_MAX)
        cu = cu.to(torch.int32)
    elif cu.dtype != torch.int32:
        raise ValueError(f"{fn}(): {name}.dtype is {cu.dtype}; expected torch.int32 or torch.int64")
    return cu.contiguous()


def sageattn_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    is_causal: bool = False,
    sm_scale: float | None = None,
    smooth_k: bool = True,
    *,
    attn_mask: torch.Tensor | None = None,
    check_seqlens: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Attention over packed sequences: q [total_q, heads_q, head_dim], k and
    v [total_kv, heads_kv, head_dim]; sequence b is rows cu_seqlens[b] to
    cu_seqlens[b+1]. Smoothing and causal masks are per sequence. With
    return_lse=True (a keyword) returns (out, lse [heads_q, total_q]).

    CPU tensors' offsets are always checked. On CUDA they stay on the device
    and are clamped to the tensors (no memory error; inconsistent offsets then
    give the clamped sequences' answer); check_seqlens=True checks them there
    first and raises ValueError as the CPU does, at the cost of a
    synchronisation; it cannot run inside CUDA-graph capture."""
    fn = "sageattn_varlen"
    _check_tensors(fn, q, k, v)
    check = bool(check_seqlens)
    cu_q = _cu_seqlens(fn, "cu_seqlens_q", cu_seqlens_q, check)
    cu_k = _cu_seqlens(fn, "cu_seqlens_k", cu_seqlens_k, check)
    o = _resolve(fn, kwargs, (("sm_scale", sm_scale), ("smooth_k", smooth_k)), "any")
    out, lse = _ops.attention(
        q, k, v, _ops.VARLEN, attn_mask, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k), bool(is_causal), o,
        check_seqlens=check,
    )
    return (out, lse) if o.return_lse else out


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    attn_mask: torch.Tensor | None = None,
    return_lse: bool = False,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int = 0,
    max_seqlen_k: int = 0,
):
    """The exact algorithm in float64 (CPU tensors only): what every other
    path is judged against. Same conventions as sageattn; with cu_seqlens,
    q, k, v are packed as in sageattn_varlen (tensor_layout is then ignored)."""
    fn = "reference_attention"
    _check_tensors(fn, q, k, v)
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    layout = _ops.VARLEN if varlen else _choice(fn, "tensor_layout", tensor_layout, _LAYOUTS)
    o = _resolve(fn, {}, (("sm_scale", sm_scale), ("return_lse", return_lse)), "any")
    if varlen:
        cu_seqlens_q = _cu_seqlens(fn, "cu_seqlens_q", cu_seqlens_q)
        cu_seqlens_k = _cu_seqlens(fn, "cu_seqlens_k", cu_seqlens_k)
    o = o._replace(algorithm=_lib.ALGORITHM_EXACT)
    lengths = int(max_seqlen_q), int(max_seqlen_k)
    out, lse = _ops.attention(q, k, v, layout, attn_mask, cu_seqlens_q, cu_seqlens_k, *lengths, bool(is_causal), o)
    return (out, lse) if o.return_lse else out
