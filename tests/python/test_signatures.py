"""Signature parity with the reference SageAttention 2.x API and with torch's SDPA.

The expected signatures are written out here, as the reference publishes
them (sageattention/core.py of SageAttention 2.x), so that a change on our
side that breaks existing callers fails loudly.
"""

import inspect

import pytest

import sageattention

REQUIRED = inspect.Parameter.empty
KWARGS = "**kwargs"

REFERENCE = {
    "sageattn": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("tensor_layout", "HND"), ("is_causal", False), ("sm_scale", None), ("return_lse", False),
        KWARGS,
    ],
    "sageattn_qk_int8_pv_fp16_triton": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("tensor_layout", "HND"), ("quantization_backend", "triton"), ("is_causal", False),
        ("attn_mask", None), ("sm_scale", None), ("smooth_k", True), ("return_lse", False),
        KWARGS,
    ],
    "sageattn_varlen": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("cu_seqlens_q", REQUIRED), ("cu_seqlens_k", REQUIRED), ("max_seqlen_q", REQUIRED), ("max_seqlen_k", REQUIRED),
        ("is_causal", False), ("sm_scale", None), ("smooth_k", True),
        KWARGS,
    ],
    "sageattn_qk_int8_pv_fp16_cuda": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("tensor_layout", "HND"), ("is_causal", False), ("qk_quant_gran", "per_thread"), ("sm_scale", None),
        ("pv_accum_dtype", "fp32"), ("smooth_k", True), ("smooth_v", False), ("return_lse", False),
        KWARGS,
    ],
    "sageattn_qk_int8_pv_fp8_cuda": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("tensor_layout", "HND"), ("is_causal", False), ("qk_quant_gran", "per_thread"), ("sm_scale", None),
        ("pv_accum_dtype", "fp32+fp16"), ("smooth_k", True), ("smooth_v", False), ("return_lse", False),
        KWARGS,
    ],
    "sageattn_qk_int8_pv_fp8_cuda_sm90": [
        ("q", REQUIRED), ("k", REQUIRED), ("v", REQUIRED),
        ("tensor_layout", "HND"), ("is_causal", False), ("qk_quant_gran", "per_thread"), ("sm_scale", None),
        ("pv_accum_dtype", "fp32+fp32"), ("smooth_k", True), ("return_lse", False),
        KWARGS,
    ],
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_signature(name):
    # The reference's parameters, in its order (positional calls keep working),
    # then, where the reference has no attn_mask, a keyword-only one: clients look
    # for it in the signature before they pass a mask (ComfyUI's attention_sage
    # sends masked calls elsewhere when sageattn has none; the reference would
    # swallow it in **kwargs), and keyword-only changes no positional call.
    params = list(inspect.signature(getattr(sageattention, name)).parameters.values())
    expected = REFERENCE[name]
    got, keyword_only = [], []
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            got.append(KWARGS)
        elif p.kind is inspect.Parameter.KEYWORD_ONLY:
            keyword_only.append((p.name, p.default))
        else:
            assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, f"{name}: {p.name} is {p.kind}"
            got.append((p.name, p.default))
    assert got == expected
    named = [p[0] for p in expected if p != KWARGS]
    ours = [("check_seqlens", False)] if name == "sageattn_varlen" else []  # keyword-only: no positional call changes
    assert keyword_only == ([] if "attn_mask" in named else [("attn_mask", None)]) + ours
    assert "attn_mask" in inspect.signature(getattr(sageattention, name)).parameters


def test_reference_names_are_exported():
    for name in REFERENCE:
        assert name in sageattention.__all__ and callable(getattr(sageattention, name))


def test_sdpa_signature_is_torchs():
    # torch's builtin takes at most six positional arguments: scale and
    # enable_gqa are keyword-only in practice, and so they are here.
    sig = inspect.signature(sageattention.sdpa)
    got = [(p.name, p.default, p.kind.name) for p in sig.parameters.values()]
    assert got == [
        ("query", REQUIRED, "POSITIONAL_OR_KEYWORD"),
        ("key", REQUIRED, "POSITIONAL_OR_KEYWORD"),
        ("value", REQUIRED, "POSITIONAL_OR_KEYWORD"),
        ("attn_mask", None, "POSITIONAL_OR_KEYWORD"),
        ("dropout_p", 0.0, "POSITIONAL_OR_KEYWORD"),
        ("is_causal", False, "POSITIONAL_OR_KEYWORD"),
        ("scale", None, "KEYWORD_ONLY"),
        ("enable_gqa", False, "KEYWORD_ONLY"),
    ]
