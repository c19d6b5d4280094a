#!/usr/bin/env bash
# Builds a CPU-only wheel (SAGEATTN_CUDA=OFF: fast), checks its contents
# (tests/wheel/check_wheel.py), installs it with --no-deps into a fresh venv
# that sees the system's PyTorch (--system-site-packages, so nothing is
# downloaded), and runs tests/wheel/smoke.py from a temporary directory with
# SAGEATTN_LIBRARY and PYTHONPATH unset: the package and its library must come
# from the installed wheel, not from the source tree.
# Needs: python3 with venv and pip, a C++ compiler, torch in python3's site-packages.

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== building a CPU-only wheel"
SAGEATTN_CUDA=OFF "$python" -m pip wheel "$root" --no-deps -q -w "$work/dist"
wheel=("$work"/dist/sageattention-*.whl)
[ "${#wheel[@]}" -eq 1 ] && [ -f "${wheel[0]}" ] || { echo "expected one wheel in $work/dist" >&2; exit 1; }
echo "built $(basename "${wheel[0]}")"
"$python" "$root/tests/wheel/check_wheel.py" "${wheel[0]}" --label cpu

echo "== installing it into a fresh venv"
"$python" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps --no-index "${wheel[0]}"

echo "== smoke test from outside the source tree"
cp "$root/tests/wheel/smoke.py" "$work/smoke.py"
(cd "$work" && env -u SAGEATTN_LIBRARY -u PYTHONPATH "$work/venv/bin/python" -I smoke.py cpu)
echo "wheel test passed"
