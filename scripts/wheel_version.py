"""The wheel's version, for scikit-build-core (pyproject.toml, [[tool.dynamic-metadata]]).

The project's version comes from CMakeLists.txt's project() line; a local label
says which CUDA major the library inside is built with: "0.1.0+cu13",
"0.1.0+cu12", or "0.1.0+cpu" for a build without the CUDA backend.

The metadata is read before CMake runs, so the CUDA compiler is found here the
way CMake finds it (CUDACXX, then nvcc on PATH, then $CUDA_PATH/bin), honouring
the SAGEATTN_CUDA environment variable (ON, OFF or AUTO, as the CMake option).
CMakeLists.txt checks, in a wheel build, that the label agrees with what CMake
actually built, and stops the build when it does not.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["cuda_label", "dynamic_metadata", "project_version"]

_ROOT = Path(__file__).resolve().parent.parent
_OFF = {"OFF", "0", "FALSE", "NO", "N", "IGNORE", "NOTFOUND"}
_ON = {"ON", "1", "TRUE", "YES", "Y"}


def project_version(cmakelists: Path = _ROOT / "CMakeLists.txt") -> str:
    text = cmakelists.read_text(encoding="utf-8")
    m = re.search(
        r"^\s*project\(\s*sageattn\s+VERSION\s+([0-9]+(?:\.[0-9]+)*)",
        text,
        re.MULTILINE | re.IGNORECASE,
    )
    if not m:
        raise RuntimeError(f"no 'project(sageattn VERSION x.y.z' line in {cmakelists}")
    return m.group(1)


def _cuda_mode() -> str:
    raw = os.environ.get("SAGEATTN_CUDA", "AUTO").strip().upper()
    if raw in ("", "AUTO"):
        return "AUTO"
    if raw in _OFF or raw.endswith("-NOTFOUND"):
        return "OFF"
    if raw in _ON:
        return "ON"
    raise RuntimeError(f"SAGEATTN_CUDA={raw!r}: expected ON, OFF or AUTO")


def _find_nvcc() -> str | None:
    explicit = os.environ.get("CUDACXX")
    if explicit:
        # CMake takes CUDACXX as given (it may carry flags after the path).
        return explicit.split()[0]
    found = shutil.which("nvcc")
    if found:
        return found
    cuda_path = os.environ.get("CUDA_PATH")
    if cuda_path:
        candidate = Path(cuda_path) / "bin" / "nvcc"
        if candidate.is_file():
            return str(candidate)
    return None


def _cuda_major(nvcc: str) -> int:
    try:
        out = subprocess.run(
            [nvcc, "--version"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot run {nvcc} --version: {e}") from e
    m = re.search(r"release\s+([0-9]+)\.([0-9]+)", out)
    if not m:
        raise RuntimeError(f"{nvcc} --version does not name a CUDA release:\n{out}")
    return int(m.group(1))


def cuda_label() -> str:
    """ "cuXX" for the CUDA major the build will use, or "cpu"."""
    mode = _cuda_mode()
    if mode == "OFF":
        return "cpu"
    nvcc = _find_nvcc()
    if nvcc is None:
        if mode == "ON":
            raise RuntimeError(
                "SAGEATTN_CUDA=ON but no CUDA compiler was found: put nvcc on PATH or name it in CUDACXX"
            )
        return "cpu"
    return f"cu{_cuda_major(nvcc)}"


def dynamic_metadata(settings, project):  # the provider protocol: (settings, project)
    if settings:
        raise RuntimeError(f"wheel_version takes no settings, got {sorted(settings)}")
    return {"version": f"{project_version()}+{cuda_label()}"}


if __name__ == "__main__":
    print(f"{project_version()}+{cuda_label()}")
