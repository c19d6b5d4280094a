"""`python -m sageattention doctor`: runs as a subprocess against this
checkout's library and package (CPU; on a GPU machine it checks the GPU)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PYTHON = os.path.join(_ROOT, "python")
_DOCTOR = os.path.join(_PYTHON, "sageattention", "doctor.py")


def _env(library=None):
    env = dict(os.environ)
    if library is not None:
        env["SAGEATTN_LIBRARY"] = library
    env["PYTHONPATH"] = _PYTHON + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run(args, library=None, module=True):
    cmd = [sys.executable, "-m", "sageattention", "doctor", *args] if module else [sys.executable, _DOCTOR, *args]
    return subprocess.run(cmd, env=_env(library), check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def text_run():
    return _run(["--no-bench", "--quick"])


def test_doctor_passes(text_run):
    assert text_run.returncode == 0, text_run.stdout + text_run.stderr
    out = text_run.stdout
    for label in ("library:", "library version:", "ABI version:", "package version:", "CUDA runtime (built):",
                  "compiled SM targets:", "kernel families:", "torch:", "accuracy ("):
        assert label in out, f"{label!r} missing from:\n{out}"
    assert "PASS" in out
    assert "verdict: OK" in out
    assert os.environ["SAGEATTN_LIBRARY"] in out


def test_doctor_json():
    r = _run(["--no-bench", "--quick", "--json"])
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["problems"] == []
    assert d["abi_version"] == 1
    assert d["library_path"] == os.environ["SAGEATTN_LIBRARY"]
    assert d["accuracy"]["ok"] is True and d["accuracy"]["cosine"] >= 0.999
    assert isinstance(d["cuda_archs"], list) and isinstance(d["kernel_families"], list)


def test_doctor_usage():
    r = subprocess.run([sys.executable, "-m", "sageattention", "frobnicate"], env=_env(),
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.parametrize("module", [False, True], ids=["script", "module"])
def test_doctor_missing_library(tmp_path, module):
    missing = str(tmp_path / "no-such-libsageattn.so")
    r = _run(["--no-bench", "--quick"], library=missing, module=module)
    assert r.returncode == 1, r.stdout + r.stderr
    # The doctor itself reports it, as one sentence with what to do; no traceback.
    assert "Traceback" not in r.stderr, r.stderr
    assert missing in r.stdout
    assert "SAGEATTN_LIBRARY does not name an existing file" in r.stdout
    assert "The library cannot be loaded" in r.stdout and "make it name an existing libsageattn" in r.stdout
    assert "verdict: 1 problem(s) found" in r.stdout


@pytest.mark.parametrize("module", [False, True], ids=["script", "module"])
def test_doctor_library_not_a_library(tmp_path, module):
    bogus = tmp_path / "libsageattn.so"
    bogus.write_text("not a shared library\n")
    r = _run(["--no-bench", "--quick", "--json"], library=str(bogus), module=module)
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is False and str(bogus) in d["import_error"]
    assert len(d["problems"]) == 1 and d["problems"][0].startswith("The library cannot be loaded")


def test_import_still_raises(tmp_path):
    # Outside `python -m sageattention`, importing raises the same clear error.
    missing = str(tmp_path / "no-such-libsageattn.so")
    for code in ("import sageattention", "from sageattention import sageattn",
                 "import runpy; runpy.run_module('sageattention.bench')"):
        r = subprocess.run([sys.executable, "-c", code], env=_env(missing), check=False,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, (code, r.stdout, r.stderr)
        assert "ImportError: sageattention: cannot load libsageattn: SAGEATTN_LIBRARY does not name" in r.stderr, r.stderr
    # Another module run with -m gets the error too: only the doctor's entry defers it.
    r = subprocess.run([sys.executable, "-m", "sageattention.bench", "--help"], env=_env(missing),
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot load libsageattn" in r.stderr, r.stderr


def test_arch_coverage_heuristic():
    sys.path.insert(0, _PYTHON)
    from sageattention.doctor import arch_coverage, kernel_path

    assert arch_coverage(89, [80, 89])[0] is True
    ok, how = arch_coverage(86, [80, 89])
    assert ok and "sm_80" in how
    ok, how = arch_coverage(120, [80, 89, 90])
    assert ok and "PTX" in how and "heuristic" in how
    ok, how = arch_coverage(121, [80, 86, 89, 90, 120])  # the default build's list
    assert ok and "sm_120 code runs on sm_121" in how
    ok, how = arch_coverage(75, [80, 89])
    assert not ok and "sm_75" in how
    assert "FP16 P·V" in kernel_path(80) and "FP16 P·V" in kernel_path(90)
    assert "FP8 P·V" in kernel_path(89) and "FP8 P·V" in kernel_path(120)
    # 99 KB of shared memory per block (sm_86, sm_89, sm_12x): head_dim 256 on single K/V buffers.
    for cc in (86, 89, 120, 121):
        assert "single K/V buffers" in kernel_path(cc)
    assert "head_dim" not in kernel_path(80)
    assert "wgmma" in kernel_path(90, "cpu,cuda-mma,cuda-wgmma-sm90a") and "wgmma" not in kernel_path(90, "cpu,cuda-mma")


def test_doctor_without_torch():
    # torch made unimportable: the doctor still reports the library and says to install torch.
    code = (
        "import runpy, sys; sys.modules['torch'] = None; "
        f"sys.argv = ['doctor.py', '--quick']; runpy.run_path({_DOCTOR!r}, run_name='__main__')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(), check=False, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PyTorch is not installed" in r.stdout
    assert "ABI version:" in r.stdout and "compiled SM targets:" in r.stdout
