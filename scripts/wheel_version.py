"""The wheel's version, for scikit-build-core (pyproject.toml, [[tool.dynamic-metadata]]).

The version is the SageAttention API the package implements
(python/sageattention/_api_version.py) followed by the library's own release
(CMakeLists.txt's project() line): "2.2.0" + "0.1.0" = "2.2.0.0.1.0", so that
clients gating on the reference's version (diffusers: >= 2.1.1) accept it and
each release of ours stays distinct (docs/INSTALL.md). A local label says
which CUDA major the library inside is built with: "2.2.0.0.1.0+cu13",
"+cu12", or "+cpu" for a build without the CUDA backend.

The metadata is read before CMake runs, so the CUDA compiler is found here the
way CMake finds it (CUDACXX, then nvcc on PATH, then $CUDA_PATH/bin), honouring
the SAGEATTN_CUDA environment variable (ON, OFF or AUTO, as the CMake option).
CMakeLists.txt checks, in a wheel build, that the label agrees with what CMake
actually built, and stops the build when it does not.

SAGEATTN_CUDA_MAJOR (12 or 13) asks for a CUDA major: the label must then be
that major. `python scripts/wheel_version.py --nvcc-for-major 12` prints the
nvcc of a CUDA 12 toolkit found on this machine, or says what to install;
scripts/build_wheel.sh uses it to pick the compiler.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["api_version", "cuda_label", "dynamic_metadata", "nvcc_for_major", "package_version", "project_version"]

# The oldest toolkit of each CUDA major that builds the kernels (docs/INSTALL.md).
MIN_MINOR = {12: 8, 13: 0}
# Where toolkits are usually installed, besides PATH, CUDA_PATH and CUDA_HOME.
TOOLKIT_GLOBS = ("/usr/local/cuda", "/usr/local/cuda-{major}*", "/opt/cuda", "/opt/cuda-{major}*",
                 "/opt/nvidia/cuda-{major}*")
# NVIDIA's Windows installer puts each toolkit in its own vX.Y folder (and names
# it in CUDA_PATH_VX_Y too).
WINDOWS_TOOLKIT_GLOBS = ("C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA/v{major}.*",)


def _nvcc_name() -> str:
    return "nvcc.exe" if os.name == "nt" else "nvcc"

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


def api_version(module: Path = _ROOT / "python" / "sageattention" / "_api_version.py") -> str:
    """The SageAttention API version the package implements, read as text (the
    build environment has no torch, so the package cannot be imported)."""
    m = re.search(r'^API_VERSION = "([0-9]+\.[0-9]+\.[0-9]+)"$', module.read_text(encoding="utf-8"), re.MULTILINE)
    if not m:
        raise RuntimeError(f'no \'API_VERSION = "X.Y.Z"\' line in {module}')
    return m.group(1)


def package_version() -> str:
    """The version without its label: the API version, then the library's release."""
    return f"{api_version()}.{project_version()}"


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
        candidate = Path(cuda_path) / "bin" / _nvcc_name()
        if candidate.is_file():
            return str(candidate)
    return None


def _cuda_release(nvcc: str) -> tuple[int, int]:
    try:
        out = subprocess.run(
            [nvcc, "--version"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot run {nvcc} --version: {e}") from e
    m = re.search(r"release\s+([0-9]+)\.([0-9]+)", out)
    if not m:
        raise RuntimeError(f"{nvcc} --version does not name a CUDA release:\n{out}")
    return int(m.group(1)), int(m.group(2))


def _cuda_major(nvcc: str) -> int:
    return _cuda_release(nvcc)[0]


def requested_major() -> int | None:
    """SAGEATTN_CUDA_MAJOR as a number, or None when it is not set."""
    raw = os.environ.get("SAGEATTN_CUDA_MAJOR", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) not in MIN_MINOR:
        raise RuntimeError(f"SAGEATTN_CUDA_MAJOR={raw!r}: expected one of {', '.join(map(str, MIN_MINOR))}")
    return int(raw)


def _release_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"[0-9]+", os.path.basename(os.path.dirname(os.path.dirname(path)))))


def nvcc_candidates(major: int, globs=None) -> list[str]:
    """Every nvcc that may be of CUDA `major`, most likely first: CUDACXX alone
    when it is set; else nvcc on PATH, $CUDA_PATH, $CUDA_HOME, $CUDA_PATH_V<major>_*
    (Windows), then the usual install folders (newest release first)."""
    explicit = os.environ.get("CUDACXX")
    if explicit:
        return [explicit.split()[0]]
    if globs is None:
        globs = WINDOWS_TOOLKIT_GLOBS if os.name == "nt" else TOOLKIT_GLOBS
    nvcc = _nvcc_name()
    found = [shutil.which("nvcc")]
    found += [os.path.join(os.environ[v], "bin", nvcc) for v in ("CUDA_PATH", "CUDA_HOME") if os.environ.get(v)]
    versioned = sorted((v for v in os.environ if v.upper().startswith(f"CUDA_PATH_V{major}_")),
                       key=lambda v: tuple(int(n) for n in re.findall(r"[0-9]+", v)), reverse=True)
    found += [os.path.join(os.environ[v], "bin", nvcc) for v in versioned]
    for pattern in globs:
        roots = glob.glob(pattern.format(major=major))
        found += sorted((os.path.join(r, "bin", nvcc) for r in roots), key=_release_key, reverse=True)
    seen, out = set(), []
    for path in found:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                out.append(path)
    return out


def nvcc_for_major(major: int, globs=None) -> str:
    """The nvcc of a CUDA `major` toolkit new enough to build the kernels, or a
    RuntimeError that says what was found and what to install."""
    if major not in MIN_MINOR:
        raise RuntimeError(f"CUDA {major}: the wheels are built for CUDA {' or '.join(map(str, MIN_MINOR))}")
    oldest = f"{major}.{MIN_MINOR[major]}"
    seen = []
    for nvcc in nvcc_candidates(major, globs):
        try:
            rel = _cuda_release(nvcc)
        except RuntimeError as e:
            seen.append(f"{nvcc} (unusable: {e})")
            continue
        if rel[0] == major and rel[1] >= MIN_MINOR[major]:
            return nvcc
        seen.append(f"{nvcc} (CUDA {rel[0]}.{rel[1]})")
    where = "; found: " + ", ".join(seen) if seen else "; no nvcc found"
    if os.environ.get("CUDACXX"):
        where += " (CUDACXX names the only compiler tried)"
    how = (
        f"install a CUDA {oldest}+ toolkit (from NVIDIA's repositories: cuda-nvcc-{major}-X, "
        f"cuda-cudart-devel-{major}-X and cuda-cccl-{major}-X) and name its nvcc in CUDACXX"
    )
    if major == 12:
        how += (
            ", or build in the release container (docker buildx bake -f release/docker-bake.hcl cu12-x86_64). "
            "PyPI has no CUDA 12 compiler: its nvidia-cuda-nvcc-cu12 wheels carry ptxas and libnvvm only, "
            "without nvcc, cicc, cudafe++, fatbinary or nvlink"
        )
    raise RuntimeError(f"SAGEATTN_CUDA_MAJOR={major}: no CUDA {oldest}+ nvcc{where}. To build the +cu{major} wheel, {how}.")


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
    major = _cuda_major(nvcc)
    wanted = requested_major()
    if wanted is not None and major != wanted:
        raise RuntimeError(
            f"SAGEATTN_CUDA_MAJOR={wanted} but {nvcc} is CUDA {major}: name a CUDA {wanted} nvcc in CUDACXX "
            f"(scripts/build_wheel.sh finds one: python scripts/wheel_version.py --nvcc-for-major {wanted})"
        )
    return f"cu{major}"


def dynamic_metadata(settings, project):  # the provider protocol: (settings, project)
    if settings:
        raise RuntimeError(f"wheel_version takes no settings, got {sorted(settings)}")
    return {"version": f"{package_version()}+{cuda_label()}"}


_USAGE = """usage: wheel_version.py [--nvcc-for-major MAJOR]

Prints the version the wheel built here would have: the SageAttention API
version, the library's release, the CUDA label (API.RELEASE+cuXX or +cpu),
following SAGEATTN_CUDA, CUDACXX and SAGEATTN_CUDA_MAJOR as the build does. With --nvcc-for-major, prints the
nvcc of a CUDA MAJOR toolkit on this machine instead, or says what to install."""


def _main(argv: list[str]) -> int:
    try:
        if argv[:1] in (["-h"], ["--help"]):
            print(_USAGE)
        elif argv[:1] == ["--nvcc-for-major"] and len(argv) == 2 and argv[1].isdigit():
            print(nvcc_for_major(int(argv[1])))
        elif not argv:
            print(f"{package_version()}+{cuda_label()}")
        else:
            print(_USAGE, file=sys.stderr)
            return 2
    except RuntimeError as e:
        print(f"wheel_version.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
