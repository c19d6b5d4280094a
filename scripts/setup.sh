#!/usr/bin/env bash
# Installs what the build and the tests need on a Debian/Ubuntu machine:
# a C++ toolchain, CMake, Ninja, GoogleTest; for the Windows checks MinGW-w64
# (g++-mingw-w64-x86-64-posix), Wine, GoogleTest's sources (built for Windows
# by the tests) and, for the release files, shellcheck and check-jsonschema
# (about 20 s and 900 MB from Debian); and for the Python tests PyTorch
# (CPU build), pytest, and what the examples' and clients' tests and the
# benchmark plot use (diffusers, transformers, matplotlib: pure Python plus
# small wheels, about 40 s and 270 MB; pinned to the versions the examples are
# tested with). The oldest diffusers the client tests hold us to (0.35.2, pure
# Python, 4 MB) goes beside it, into $SAGEATTN_CLIENTS_DIR (default
# ~/.cache/sageattention-clients), where tests/python/test_clients_diffusers.py
# looks for it. Safe to run again.

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
need_apt=()
command -v g++ >/dev/null || need_apt+=(g++)
[ -f /usr/include/gtest/gtest.h ] || need_apt+=(libgtest-dev)
[ -f /usr/src/googletest/CMakeLists.txt ] || need_apt+=(googletest)
command -v x86_64-w64-mingw32-g++-posix >/dev/null || need_apt+=(g++-mingw-w64-x86-64-posix)
command -v wine >/dev/null || need_apt+=(wine wine64)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  # Without recommends: Wine runs the console tests without its fonts, Mono or Gecko.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check cmake ninja pytest numpy pyyaml python-hcl2 check-jsonschema
python3 -c "import torch" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check "torch==2.13.0"
python3 -m pip install -q --disable-pip-version-check "diffusers==0.42.1" "transformers==5.23.0" "matplotlib==3.11.2"
clients="${SAGEATTN_CLIENTS_DIR:-$HOME/.cache/sageattention-clients}"
[ -d "$clients/diffusers-0.35.2/diffusers" ] ||
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$clients/diffusers-0.35.2" "diffusers==0.35.2"
