"""The examples in examples/, at toy sizes on the CPU: each runs, every
attention call of each model reaches sageattention, a run where none does
says so, and torch.compile of the diffusion transformer with patch_sdpa()
gives eager's output within the kernel's error.

Needs diffusers and transformers (scripts/setup.sh installs them); without
them these tests are skipped, saying which is missing.
"""

import json
import os
import sys

import pytest
import torch

import sageattention
from sageattention.bench import error_stats

_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
sys.path.insert(0, _EXAMPLES)


def _need(module):
    reason = f"{module} is not installed (pip install {module}); examples test skipped"
    return pytest.importorskip(module, reason=reason)


@pytest.fixture
def wan():
    _need("diffusers")
    import wan_transformer

    return wan_transformer


@pytest.fixture
def llama():
    _need("transformers")
    import llama_prefill

    return llama_prefill


def _run(module, argv, tmp_path):
    path = tmp_path / "result.json"
    status = module.main(argv + ["--json", str(path)])
    return status, json.loads(path.read_text())


def test_wan_transformer_tiny(wan, tmp_path, capsys):
    status, r = _run(wan, ["--tiny", "--steps", "2", "--decode"], tmp_path)
    assert status == 0 and not r["all_fell_back"]
    # 2 blocks x (self-attention + cross-attention to the text), all on the library.
    assert r["sageattention"]["calls"] == {"library": 4, "torch": {}, "total": 4}
    acc = r["sageattention"]["vs_reference"]
    assert set(acc) == {"model output", "latent after 2 steps", "decoded video"}
    for name, s in acc.items():
        assert s["cosine"] > 0.999 and s["rel_l1"] < 0.05 and s["psnr_db"] > 35, (name, s)
    assert r["no_attention"]["seconds"] > 0 and r["sageattention"]["speedup_vs_best_torch"] > 0
    out = capsys.readouterr().out
    assert "4 of 4 attention calls ran on sageattention" in out and "weights: RANDOM" in out


def test_llama_prefill_tiny(llama, tmp_path, capsys):
    status, r = _run(llama, ["--tiny", "--tokens", "48"], tmp_path)
    assert status == 0
    assert r["sageattention"]["calls"]["library"] == 2 == r["sageattention"]["calls"]["total"]
    acc = r["sageattention"]["vs_reference"]
    assert acc["last hidden state"]["cosine"] > 0.999
    assert acc["layers' contribution"]["cosine"] > 0.995
    assert r["tokens"] == 48


def test_a_run_where_everything_fell_back_says_so(llama, tmp_path, monkeypatch, capsys):
    # sdpa's rules, made to refuse everything.
    monkeypatch.setattr(sys.modules["sageattention.sdpa"], "_why_torch", lambda *a: "sdpa: forced for the test")
    status, r = _run(llama, ["--tiny", "--no-attention-share"], tmp_path)
    assert status == 3 and r["all_fell_back"]
    assert r["sageattention"]["calls"] == {"library": 0, "torch": {"sdpa: forced for the test": 2}, "total": 2}
    captured = capsys.readouterr()
    assert "EVERY ATTENTION CALL FELL BACK TO TORCH" in captured.err
    assert "EVERY ATTENTION CALL FELL BACK TO TORCH" in captured.out


@pytest.mark.parametrize("model", ["wan", "llama"])
def test_layer_accuracy_tiny(model, tmp_path, capsys):
    _need("diffusers" if model == "wan" else "transformers")
    import layer_accuracy

    path = tmp_path / "layers.json"
    assert layer_accuracy.main([model, "--tiny", "--rows", "16", "--json", str(path)]) == 0
    r = json.loads(path.read_text())
    calls = r["calls"]
    assert len(calls) == (4 if model == "wan" else 2) and r["random_weights"]
    cosines = [c["modes"]["sdpa"]["cosine"] for c in calls]
    assert cosines == sorted(cosines)  # worst first
    for c in calls:
        assert c["modes"]["sdpa"]["ran_on"] == "sageattention"
        assert set(c["modes"]) == {"sdpa", "fp16", "fp8"} and c["rows"] == 16
        for s in c["modes"].values():
            assert s["cosine"] > 0.999 and s["worst_head_cosine"] > 0.998
        assert c["torch"]["cosine"] > 0.9999
    if model == "llama":
        assert all(c["causal"] and c["shape"]["heads_kv"] == 2 for c in calls)
    assert "worst (sdpa)" in capsys.readouterr().out


def test_torch_compile_of_the_diffusion_transformer_matches_eager(wan):
    import argparse

    ap = argparse.ArgumentParser()
    wan._common.add_common_args(ap)
    wan.add_model_args(ap)
    args = ap.parse_args(["--tiny", "--layers", "1"])
    wan.resolve(args)
    model, inputs = wan.build(args)
    with torch.no_grad():
        reference = model(**inputs, return_dict=False)[0]  # torch's SDPA, eager
        with sageattention.patched_sdpa():
            eager = model(**inputs, return_dict=False)[0]
            compiled = torch.compile(model, fullgraph=True)
            compiled(**inputs, return_dict=False)  # compiles
            with sageattention.count_calls() as counts:
                out = compiled(**inputs, return_dict=False)[0]
    # The compiled graph ran the library (self- and cross-attention), not a fake or torch.
    assert counts.library == 2 and counts.total == 2, counts
    kernel_error = error_stats(eager, reference)
    vs_eager, vs_reference = error_stats(out, eager), error_stats(out, reference)
    # Compiled and eager differ only by how inductor rounds the other ops, which the
    # quantization may turn into a different INT8 code: within the kernel's own error.
    bound = 2 * kernel_error["rel_l1"] + 0.005
    assert vs_eager["cosine"] > 0.9995 and vs_eager["rel_l1"] < bound, (vs_eager, kernel_error)
    assert vs_reference["cosine"] > 0.9995 and vs_reference["rel_l1"] < bound, (vs_reference, kernel_error)
