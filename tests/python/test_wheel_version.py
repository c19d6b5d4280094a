"""scripts/wheel_version.py: the wheel's version label and the choice of a
toolkit by SAGEATTN_CUDA_MAJOR (scripts/build_wheel.sh), against stand-in
nvcc scripts that only answer --version: no toolkit is downloaded or run."""

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SCRIPT = os.path.join(_ROOT, "scripts", "wheel_version.py")


@pytest.fixture()
def wv(monkeypatch):
    for var in ("CUDACXX", "CUDA_PATH", "CUDA_HOME", "SAGEATTN_CUDA", "SAGEATTN_CUDA_MAJOR"):
        monkeypatch.delenv(var, raising=False)
    for var in [v for v in os.environ if v.startswith("CUDA_PATH_V")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvcc of the machine's
    spec = importlib.util.spec_from_file_location("_wheel_version_under_test", _SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _toolkit(root, release):
    """A folder laid out like a toolkit whose bin/nvcc reports `release`."""
    nvcc = root / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(
        "#!/bin/sh\n"
        'echo "nvcc: NVIDIA (R) Cuda compiler driver"\n'
        f'echo "Cuda compilation tools, release {release}, V{release}.1"\n'
    )
    nvcc.chmod(0o755)
    return str(nvcc)


def test_label_follows_the_compiler(wv, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDACXX", _toolkit(tmp_path / "cuda-12.9", "12.9"))
    assert wv.cuda_label() == "cu12"
    monkeypatch.setenv("SAGEATTN_CUDA", "OFF")
    assert wv.cuda_label() == "cpu"


def test_requested_major_must_match(wv, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDACXX", _toolkit(tmp_path / "cuda-13.0", "13.0"))
    monkeypatch.setenv("SAGEATTN_CUDA_MAJOR", "12")
    with pytest.raises(RuntimeError, match="SAGEATTN_CUDA_MAJOR=12 but .* is CUDA 13"):
        wv.cuda_label()
    monkeypatch.setenv("SAGEATTN_CUDA_MAJOR", "13")
    assert wv.cuda_label() == "cu13"
    monkeypatch.setenv("SAGEATTN_CUDA_MAJOR", "11")
    with pytest.raises(RuntimeError, match="expected one of 12, 13"):
        wv.cuda_label()


def test_nvcc_for_major_picks_the_newest_of_that_major(wv, tmp_path, monkeypatch):
    machine = _toolkit(tmp_path / "cuda", "13.0")
    old12 = _toolkit(tmp_path / "cuda-12.6", "12.6")
    new12 = _toolkit(tmp_path / "cuda-12.9", "12.9")
    _toolkit(tmp_path / "cuda-12.8", "12.8")
    monkeypatch.setenv("PATH", os.path.dirname(machine) + os.pathsep + "/usr/bin:/bin")
    globs = (str(tmp_path / "cuda"), str(tmp_path / "cuda-{major}*"))
    assert wv.nvcc_for_major(13, globs) == machine
    assert wv.nvcc_for_major(12, globs) == new12
    # CUDACXX, when set, is the only compiler tried.
    monkeypatch.setenv("CUDACXX", old12)
    with pytest.raises(RuntimeError, match=r"no CUDA 12\.8\+ nvcc; found: .*cuda-12\.6/bin/nvcc \(CUDA 12\.6\)"):
        wv.nvcc_for_major(12, globs)
    monkeypatch.setenv("CUDACXX", new12)
    assert wv.nvcc_for_major(12, globs) == new12


def test_nvcc_for_major_says_what_to_install(wv, tmp_path, monkeypatch):
    machine = _toolkit(tmp_path / "cuda", "13.0")
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "cuda"))
    with pytest.raises(RuntimeError) as e:
        wv.nvcc_for_major(12, (str(tmp_path / "cuda-{major}*"),))
    text = str(e.value)
    assert f"found: {machine} (CUDA 13.0)" in text
    assert "install a CUDA 12.8+ toolkit" in text and "cu12-x86_64" in text
    assert "PyPI has no CUDA 12 compiler" in text


def test_command_line(tmp_path):
    # What scripts/build_wheel.sh runs: the nvcc on stdout, or the reason on stderr and exit 1.
    nvcc = _toolkit(tmp_path / "cuda-12.9", "12.9")
    env = {"PATH": "/usr/bin:/bin", "CUDACXX": nvcc}
    r = subprocess.run([sys.executable, _SCRIPT, "--nvcc-for-major", "12"], env=env,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip() == nvcc, r.stderr
    r = subprocess.run([sys.executable, _SCRIPT], env={**env, "SAGEATTN_CUDA_MAJOR": "12"},
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith("+cu12"), r.stderr
    r = subprocess.run([sys.executable, _SCRIPT, "--nvcc-for-major", "13"], env=env,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no CUDA 13.0+ nvcc" in r.stderr and not r.stdout


def test_build_wheel_stops_without_a_toolkit_of_that_major(tmp_path):
    # scripts/build_wheel.sh's SAGEATTN_CUDA_MAJOR branch, up to the build: a
    # machine with only CUDA 13 gets the reason before anything is compiled.
    if any(glob.glob(p.format(major=12)) for p in ("/usr/local/cuda-{major}*", "/opt/cuda-{major}*",
                                                   "/opt/nvidia/cuda-{major}*")):
        pytest.skip("this machine has a CUDA 12 toolkit: the script would build with it")
    nvcc = _toolkit(tmp_path / "cuda-13.0", "13.0")
    env = {"PATH": os.path.dirname(nvcc) + os.pathsep + "/usr/bin:/bin", "PYTHON": sys.executable,
           "SAGEATTN_CUDA_MAJOR": "12", "HOME": str(tmp_path)}
    r = subprocess.run(["bash", os.path.join(_ROOT, "scripts", "build_wheel.sh"), str(tmp_path / "dist")],
                       env=env, capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no CUDA 12.8+ nvcc" in r.stderr and f"{nvcc} (CUDA 13.0)" in r.stderr
    assert "building sageattention" not in r.stdout and not (tmp_path / "dist").exists()


def test_windows_toolkits_by_cuda_path_vx_y(wv, tmp_path, monkeypatch):
    # NVIDIA's Windows installer names each toolkit in CUDA_PATH_VX_Y; nvcc there is nvcc.exe.
    monkeypatch.setattr(wv, "_nvcc_name", lambda: "nvcc.exe")

    def windows_toolkit(root, release):
        exe = root / "bin" / "nvcc.exe"
        os.makedirs(exe.parent)
        os.rename(_toolkit(root / "unix", release), exe)
        return str(exe)

    older = windows_toolkit(tmp_path / "v12.8", "12.8")
    newer = windows_toolkit(tmp_path / "v12.9", "12.9")
    cu13 = windows_toolkit(tmp_path / "v13.0", "13.0")
    monkeypatch.setenv("CUDA_PATH_V12_8", str(tmp_path / "v12.8"))
    monkeypatch.setenv("CUDA_PATH_V12_9", str(tmp_path / "v12.9"))
    monkeypatch.setenv("CUDA_PATH_V13_0", str(tmp_path / "v13.0"))
    assert wv.nvcc_candidates(12, ()) == [newer, older]
    assert wv.nvcc_for_major(12, ()) == newer
    assert wv.nvcc_for_major(13, ()) == cu13
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "v13.0"))  # what the installer sets to the latest
    assert wv._find_nvcc() == cu13


def test_version_is_the_api_then_our_release(wv, monkeypatch):
    # What clients compare: diffusers enables its sage backends from 2.1.1; ours
    # implements the 2.2.0 API, so it must sort above the reference's 2.2.0 and
    # below a 2.2.1 it does not implement, and never equal a reference version.
    from packaging.version import Version

    api, release = wv.api_version(), wv.project_version()
    assert api == "2.2.0" and re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", release)
    version = wv.package_version()
    assert version == f"{api}.{release}"
    v = Version(version)
    assert len(v.release) == 6 and v >= Version("2.1.1")
    assert Version("2.2.0") < v < Version("2.2.1")
    monkeypatch.setenv("SAGEATTN_CUDA", "OFF")
    assert wv.dynamic_metadata({}, {}) == {"version": f"{version}+cpu"}


def test_docs_name_the_wheels_of_this_version(wv):
    # README.md and docs/INSTALL.md tell users which file to install: they must
    # name the version a build of this tree gets.
    version = wv.package_version()
    for doc in ("README.md", os.path.join("docs", "INSTALL.md")):
        with open(os.path.join(_ROOT, doc), encoding="utf-8") as f:
            names = re.findall(r"sageattention-([0-9][0-9.]*)\+(cu[0-9]+|cpu)-py3-none-linux_x86_64\.whl", f.read())
        assert names, f"{doc} names no wheel file"
        for found, label in names:
            assert found == version, f"{doc} names sageattention-{found}+{label}-...; this tree builds {version}"

