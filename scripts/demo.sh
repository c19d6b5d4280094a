#!/usr/bin/env bash
# Builds the library and runs the demo: attention through the C ABI on the CPU,
# with its accuracy against exact float64 attention. Extra arguments go to the demo
# (see `build/sageattn-demo --help`).

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target sageattn-demo -j "$(nproc)"
exec ./build/sageattn-demo "$@"
