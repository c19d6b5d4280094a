"""diffusers (installed from the package index) takes sageattention as it takes
SageAttention 2.x.

diffusers enables its sage attention backends only when the installed
`sageattention` distribution is at least 2.1.1 (attention_dispatch.py), and then
imports sageattn, sageattn_varlen and the four sageattn_qk_int8_* functions
from it. The backends are "sage", "sage_varlen" and the private
"_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90",
"_sage_qk_int8_pv_fp16_cuda" and "_sage_qk_int8_pv_fp16_triton"; all of them
call us with NHD tensors. ("sage_hub" and "sage_blackwell_hub" load other
kernels from the Hugging Face hub, not this package.)

diffusers checks devices only with DIFFUSERS_ATTN_CHECKS set, so by default
every sage backend runs CPU tensors too, here through our CPU implementation:
that is how these tests run without a GPU. With the checks on, diffusers holds
them to CUDA (and the sm90/fp8 ones to compute capability 9.0): those cases
are marked gpu.

The checkout under test gets the metadata its wheel would carry (conftest.py);
tests/wheel/smoke.py repeats the gate check with a really installed wheel.
This module also runs again, in a fresh interpreter, against the oldest
diffusers we support (OLDEST_DIFFUSERS, installed by scripts/setup.sh).
"""

import os
import subprocess
import sys

import pytest
import torch

import sageattention
from attn_helpers import cosine, make, reference

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (scripts/setup.sh installs it)")
from diffusers.models import attention_dispatch as dispatch  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_ROOT, "examples"))

OLDEST_DIFFUSERS = "0.35.2"  # scripts/setup.sh installs it beside the newest
CLIENTS_DIR = os.environ.get("SAGEATTN_CLIENTS_DIR", os.path.join(os.path.expanduser("~"), ".cache",
                                                                   "sageattention-clients"))

# Our functions diffusers imports, and the backends that call each.
OURS = ("sageattn", "sageattn_varlen", "sageattn_qk_int8_pv_fp8_cuda", "sageattn_qk_int8_pv_fp8_cuda_sm90",
        "sageattn_qk_int8_pv_fp16_cuda", "sageattn_qk_int8_pv_fp16_triton")
BACKENDS = ("sage", "sage_varlen", "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90",
            "_sage_qk_int8_pv_fp16_cuda", "_sage_qk_int8_pv_fp16_triton")
WITH_LSE = tuple(b for b in BACKENDS if b != "sage_varlen")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def test_diffusers_is_the_one_expected():
    # The run against the oldest diffusers says which one it wants.
    assert diffusers.__version__ == os.environ.get("SAGEATTN_EXPECT_DIFFUSERS", diffusers.__version__)


def test_the_version_gate_passes_and_the_functions_are_ours():
    from diffusers.utils import is_sageattention_available, is_sageattention_version

    assert is_sageattention_available() and is_sageattention_version(">=", dispatch._REQUIRED_SAGE_VERSION)
    assert dispatch._CAN_USE_SAGE_ATTN
    for name in OURS:
        assert getattr(dispatch, name) is getattr(sageattention, name), name
    # Every sage backend of this diffusers, but the hub's, is one we test below.
    names = {b.value for b in dispatch.AttentionBackendName if "sage" in b.value and "hub" not in b.value}
    assert names == set(BACKENDS)


def _nhd(device, dtype=torch.bfloat16, b=2, lq=80, lkv=48, hq=4, hkv=4, d=64):
    q = make((b, lq, hq, d), dtype, seed=1, device=device)
    k, v = (make((b, lkv, hkv, d), dtype, seed=s, device=device) for s in (2, 3))
    return q, k, v


def _expected(q, k, v, **kw):
    return reference(q.cpu(), k.cpu(), v.cpu(), layout="NHD", **kw)


def _dispatch(backend, *args, **kwargs):
    with sageattention.count_calls() as counts:
        out = dispatch.dispatch_attention_fn(*args, backend=dispatch.AttentionBackendName(backend), **kwargs)
    assert counts.library == 1 and counts.total == 1, counts  # it ran here, once
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_sage_backend_runs_on_ours(backend, device):
    # Cross-attention (keys of another length), diffusers' NHD layout.
    q, k, v = _nhd(device)
    out = _dispatch(backend, q, k, v)
    expected, _ = _expected(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype and cosine(out.cpu(), expected) > 0.999
    # A scale of the model's own, and causal self-attention.
    out = _dispatch(backend, q, q, q, scale=0.2, is_causal=True)
    assert cosine(out.cpu(), _expected(q, q, q, scale=0.2, causal=True)[0]) > 0.999


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", WITH_LSE)
def test_lse_for_context_parallel(backend, device):
    # diffusers' ring/Ulysses attention asks the backend for the LSE.
    q, k, v = _nhd(device)
    out, lse = _dispatch(backend, q, k, v, attention_kwargs={"return_lse": True})
    expected, expected_lse = _expected(q, k, v)
    assert cosine(out.cpu(), expected) > 0.999
    assert lse.shape == (2, 4, 80) and torch.allclose(lse.cpu().double(), expected_lse, atol=0.05)


@pytest.mark.parametrize("device", DEVICES)
def test_sage_with_fewer_key_heads(device):
    # GQA: diffusers drops enable_gqa for the sage backend (it is not in its
    # signature) and hands us the heads as they are.
    q, k, v = _nhd(device, hq=4, hkv=2)
    out = _dispatch("sage", q, k, v, enable_gqa=True)
    assert cosine(out.cpu(), _expected(q, k, v)[0]) > 0.999


@pytest.mark.parametrize("device", DEVICES)
def test_sage_varlen_with_a_padding_mask(device):
    # sage_varlen turns a key padding mask into cu_seqlens for sageattn_varlen.
    q, k, v = _nhd(device)
    keep = torch.ones(2, 48, dtype=torch.bool)
    keep[1, 30:] = False
    out = _dispatch("sage_varlen", q, k, v, attn_mask=keep.to(device))
    expected, _ = _expected(q, k, v, mask=keep[:, None, None, :])
    assert cosine(out.cpu(), expected) > 0.999


def test_what_diffusers_does_with_a_mask_on_the_dense_sage_backends():
    # diffusers' own rule, before it calls us (docs/CLIENTS.md): a mask belongs to
    # sage_varlen or native. From 0.37 the dense sage backends refuse it; 0.35
    # and 0.36 drop it without a word (the backend's signature has no attn_mask),
    # so a masked model there computes unmasked attention whatever the library.
    q, k, v = _nhd("cpu")
    keep = torch.ones(2, 1, 80, 48, dtype=torch.bool)
    keep[..., 40:] = False
    sage = dispatch.AttentionBackendName.SAGE
    if "attn_mask" in dispatch._AttentionBackendRegistry._supported_arg_names[sage]:
        with pytest.raises(ValueError, match="attn_mask"):
            dispatch.dispatch_attention_fn(q, k, v, attn_mask=keep, backend=sage)
    else:
        dropped = _dispatch("sage", q, k, v, attn_mask=keep)
        assert torch.equal(dropped, _dispatch("sage", q, k, v))


def test_with_checks_on_diffusers_holds_sage_to_cuda(monkeypatch):
    monkeypatch.setattr(dispatch._AttentionBackendRegistry, "_checks_enabled", True)
    q, k, v = _nhd("cpu")
    with pytest.raises(ValueError, match="CUDA"):
        dispatch.dispatch_attention_fn(q, k, v, backend=dispatch.AttentionBackendName.SAGE)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_with_checks_on_every_sage_backend_runs_on_the_gpu(backend, monkeypatch):
    needs_sm90 = backend in ("_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp8_cuda_sm90")
    if needs_sm90 and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip(f"diffusers' checks hold {backend} to compute capability 9.0 or newer")
    monkeypatch.setattr(dispatch._AttentionBackendRegistry, "_checks_enabled", True)
    q, k, v = _nhd("cuda")
    out = _dispatch(backend, q, k, v)
    assert cosine(out.cpu(), _expected(q, k, v)[0]) > 0.999


@pytest.fixture(scope="module")
def speed_script():
    import clients_speed

    return clients_speed


def _tiny_args(device):
    """What examples/clients_speed.py's builders read, for its toy sizes."""
    import argparse

    return argparse.Namespace(tiny=True, device=device, torch_dtype=torch.bfloat16, seed=0, layer_override={})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name,calls", [("wan", 4), ("flux", 2)])
def test_set_attention_backend_sage_on_a_model(speed_script, model_name, calls, device):
    # What users write: model.set_attention_backend("sage"), then the forward.
    model, inputs, _ = speed_script.BUILDERS[model_name](_tiny_args(device))
    with torch.no_grad():
        native = model(**inputs)[0]
        model.set_attention_backend("sage")
        with sageattention.count_calls() as counts:
            out = model(**inputs)[0]
        model.set_attention_backend("native")
        with sageattention.count_calls() as after:
            again = model(**inputs)[0]
    assert counts.library == calls == counts.total, counts  # every attention call, on us
    assert after.total == 0 and torch.allclose(again, native, rtol=1e-3, atol=1e-3)  # and back to torch's
    assert cosine(out.cpu(), native.cpu()) > 0.999


def test_attention_backend_context_manager(speed_script):
    model, inputs, _ = speed_script.BUILDERS["wan"](_tiny_args("cpu"))
    with torch.no_grad(), dispatch.attention_backend("sage"), sageattention.count_calls() as counts:
        model(**inputs)
    assert counts.library == 4 == counts.total, counts


def test_clients_speed_script_tiny(speed_script, tmp_path, capsys):
    # examples/clients_speed.py (the H200 numbers of docs/CLIENTS.md), at toy sizes.
    import json

    path = tmp_path / "clients.json"
    assert speed_script.main(["--tiny", "--json", str(path), "--sage-backends", "sage", "sage_varlen"]) == 0
    report = json.loads(path.read_text())
    assert [m["model"] for m in report["models"]] == ["wan", "flux"]
    for m, calls in zip(report["models"], (4, 2)):
        for backend in ("sage", "sage_varlen"):
            e = m["backends"][backend]
            assert e["calls"] == {"library": calls, "torch": {}, "total": calls}
            assert e["vs_native"]["cosine"] > 0.999 and e["speedup_vs_native"] > 0
    out = capsys.readouterr().out
    assert "| Wan 2.1 1.3B-sized (32 + 8 text tokens) | `sage` |" in out and "weights: RANDOM" in out


def test_clients_speed_script_stops_where_diffusers_would_refuse(speed_script, monkeypatch):
    monkeypatch.setattr(dispatch, "_CAN_USE_SAGE_ATTN", False)
    with pytest.raises(SystemExit, match="diffusers will not use sageattention"):
        speed_script.main(["--tiny"])


@pytest.mark.skipif(bool(os.environ.get("SAGEATTN_EXPECT_DIFFUSERS")), reason="already the run against it")
def test_the_oldest_supported_diffusers():
    # This module again, in a fresh interpreter that imports the oldest diffusers first.
    path = os.path.join(CLIENTS_DIR, f"diffusers-{OLDEST_DIFFUSERS}")
    if not os.path.isdir(os.path.join(path, "diffusers")):
        pytest.skip(f"diffusers {OLDEST_DIFFUSERS} is not in {path}: scripts/setup.sh installs it there")
    env = dict(os.environ, SAGEATTN_EXPECT_DIFFUSERS=OLDEST_DIFFUSERS,
               PYTHONPATH=os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p))
    r = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-x"],
                       cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " failed" not in r.stdout and " passed" in r.stdout, r.stdout[-3000:]
