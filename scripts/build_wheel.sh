#!/usr/bin/env bash
# Builds the sageattention wheel and checks it: one wheel, tagged
# py3-none-<platform>, for every CPython >= 3.9 and every PyTorch >= 2.4.
#
#   scripts/build_wheel.sh [OUT_DIR]        (default OUT_DIR: dist/)
#
# Environment (docs/INSTALL.md):
#   SAGEATTN_CUDA        ON (default here: the CUDA backend, built with the nvcc
#                        found as CMake finds it), or OFF for a CPU-only wheel
#   SAGEATTN_CUDA_ARCHS  CMake CUDA architectures; default: pyproject.toml's list
#                        (80-real;86-real;89-real;90;120-real: sm_80/86/89/90/120 + compute_90 PTX)
#   SAGEATTN_CUDA_MAJOR  13 or 12: build the +cu13 or the +cu12 wheel with a
#                        toolkit of that major found on this machine (CUDACXX,
#                        PATH, CUDA_PATH, CUDA_HOME, /usr/local/cuda-MAJOR.*, ...;
#                        scripts/wheel_version.py --nvcc-for-major says which,
#                        or what to install). Unset: whatever CUDACXX / nvcc is.
#   CUDACXX              the nvcc to build with; its CUDA major names the wheel
#                        (2.2.0.0.1.0+cu13) and is the CUDA runtime linked into it
#   CMAKE_BUILD_PARALLEL_LEVEL   parallel compile jobs (default: the CPU count)
#   PYTHON               the Python that builds (default: python3, else python)
#
# The build runs in pip's isolated build environment: scikit-build-core (and
# CMake/Ninja from PyPI where the machine's are missing or too old), no PyTorch.
# Then: the wheel's path, `auditwheel show`, and tests/wheel/check_wheel.py
# (tag, version label, contents, and libsageattn.so's DT_NEEDED: glibc,
# libstdc++ and libgcc only -- no libcudart, no libtorch).
#
# On Windows the same script runs in Git Bash (the release workflow's Windows
# job does), from a shell where MSVC's cl.exe is on PATH (a Developer prompt
# for VS 2022): it builds with Ninja, and the checks read sageattn.dll's PE
# imports and exports instead (auditwheel is for Linux).

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/dist}"
python="${PYTHON:-$(command -v python3 >/dev/null 2>&1 && echo python3 || echo python)}"
export SAGEATTN_CUDA="${SAGEATTN_CUDA:-ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$("$python" -c 'import os; print(os.cpu_count() or 1)')}"
windows=
if [ "$("$python" -c 'import sys; print(sys.platform)')" = win32 ]; then
  windows=1
  if ! command -v cl >/dev/null 2>&1; then
    echo "build_wheel.sh: MSVC's cl.exe is not on PATH: run this from a Developer PowerShell or Command Prompt" \
      "for VS 2022 (x64), or after vcvars64.bat; nvcc needs it as its host compiler" >&2
    exit 1
  fi
  # nvcc with the Visual Studio generators needs the CUDA MSBuild integration; Ninja needs only cl and nvcc.
  export CMAKE_GENERATOR="${CMAKE_GENERATOR:-Ninja}"
fi

case "${SAGEATTN_CUDA^^}" in OFF|0|FALSE|NO|N) cpu_only=1 ;; *) cpu_only= ;; esac
if [ -n "${SAGEATTN_CUDA_MAJOR:-}" ] && [ -z "$cpu_only" ]; then
  # The compiler decides the label, the runtime linked in and the toolkit CMake
  # uses (FindCUDAToolkit follows the compiler): naming it is all it takes.
  CUDACXX="$("$python" "$root/scripts/wheel_version.py" --nvcc-for-major "$SAGEATTN_CUDA_MAJOR")"
  export CUDACXX
  echo "== CUDA $SAGEATTN_CUDA_MAJOR: $CUDACXX ($("$CUDACXX" --version | grep -o 'release [0-9.]*'))"
fi
version="$("$python" "$root/scripts/wheel_version.py")"
label="${version##*+}"
echo "== building sageattention $version (SAGEATTN_CUDA=$SAGEATTN_CUDA${SAGEATTN_CUDA_ARCHS:+, SAGEATTN_CUDA_ARCHS=$SAGEATTN_CUDA_ARCHS})"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
"$python" -m pip wheel "$root" --no-deps -w "$work" ${SAGEATTN_WHEEL_VERBOSE:+-v}
elapsed=$((SECONDS - start))
wheels=("$work"/sageattention-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "build_wheel.sh: expected one wheel, found: ${wheels[*]}" >&2
  exit 1
fi
mkdir -p "$out"
wheel="$(cd "$out" && pwd)/$(basename "${wheels[0]}")"
mv -f "${wheels[0]}" "$wheel"
echo "== built in ${elapsed}s: $wheel ($(du -h "$wheel" | cut -f1))"

if [ -n "$windows" ]; then
  echo "== wheel checks (sageattn.dll's imports and exports)"
  "$python" "$root/tests/wheel/check_wheel.py" "$wheel" --label "$label"
else
  echo "== auditwheel show"
  "$python" -m auditwheel --version >/dev/null 2>&1 || "$python" -m pip install -q auditwheel
  "$python" -m auditwheel show "$wheel"

  echo "== wheel checks"
  "$python" "$root/tests/wheel/check_wheel.py" "$wheel" --label "$label" --auditwheel
fi
echo "$wheel"
