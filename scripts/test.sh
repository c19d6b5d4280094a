#!/usr/bin/env bash
# Runs every test: the C++ suites (CTest), the mutation check (each quantization
# option dropped from the CPU emulation must fail a test), the invalid-input suites
# and the C ABI fuzzer under AddressSanitizer + UBSan, the Python suite on CPU tensors, the wheel, the
# Windows build (the CPU library and the C++ suites cross-built with MinGW-w64
# and run under Wine, and a win_amd64 CPU wheel checked) and the release files.
# GPU tests are marked and skip, saying so, where no GPU is present.
# Dependencies: scripts/setup.sh installs them.

# --help: the comment above, and nothing run.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# The CUDA kernels build wherever nvcc is (no GPU needed); CI compiles them for
# SAGEATTN_CUDA_ARCHS (default here sm_80, sm_89 and sm_90, which brings the sm_90a
# Hopper kernel) and their tests skip without a GPU.
echo "== C++ tests (Release)"
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSAGEATTN_BUILD_TESTS=ON \
  -DSAGEATTN_CUDA_ARCHS="${SAGEATTN_CUDA_ARCHS:-80;89;90-real}" >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest -j "$jobs" --output-on-failure -V | grep -E '^([0-9]+: )?\[ (seed|accuracy|sharp|rejected|gpu|nonfinite|fuzz) |SKIPPED|Test +#|tests passed|tests failed|Failure|FAILED' ) || true
(cd build && ctest -j "$jobs" --output-on-failure)

echo "== Mutation check: the tests must fail when the CPU emulation drops an option"
bash scripts/mutation_check.sh

echo "== C++ invalid-input, numeric and feature tests, and the C ABI fuzzer (100 000 descriptors), under AddressSanitizer + UBSan"
cmake -S . -B build-sanitize "${generator[@]}" -DCMAKE_BUILD_TYPE=Debug -DSAGEATTN_BUILD_TESTS=ON \
  -DSAGEATTN_BUILD_TOOLS=OFF -DSAGEATTN_SANITIZE=address,undefined -DSAGEATTN_CUDA=OFF >/dev/null
cmake --build build-sanitize -j "$jobs"
if ! (cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest -j "$jobs" -V >ctest.log 2>&1); then
  tail -200 build-sanitize/ctest.log
  echo "test.sh: the sanitized suites failed (build-sanitize/ctest.log)" >&2
  exit 1
fi
grep -E '^[0-9]+: \[ (seed|fuzz) |tests passed' build-sanitize/ctest.log

if [ -d tests/python ]; then
  echo "== Python tests (CPU tensors)"
  SAGEATTN_LIBRARY="$PWD/build/libsageattn.so" PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}" \
    python3 -m pytest tests/python -q -rs
fi

echo "== Wheel: build a CPU-only wheel, install it into a fresh venv, run it from outside the tree"
bash tests/wheel/test_wheel.sh

echo "== Windows x64: the CPU library and the C++ tests cross-built with MinGW-w64, run under Wine"
# What MSVC and a Windows GPU would show cannot run here; this proves the sources,
# the DLL's exports, the CMake package and the CPU suites on Windows.
for tool in x86_64-w64-mingw32-g++-posix wine wineboot; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
[ -f /usr/src/googletest/CMakeLists.txt ] || { echo "test.sh: no GoogleTest sources in /usr/src/googletest: run scripts/setup.sh" >&2; exit 1; }
# Wine's prefix in the build folder; no Mono/Gecko installers, no debug chatter.
export WINEPREFIX="$PWD/build-mingw/wine" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
cmake -S . -B build-mingw "${generator[@]}" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/mingw-w64-x86_64.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DSAGEATTN_CUDA=OFF -DSAGEATTN_BUILD_TESTS=ON \
  -DSAGEATTN_GTEST_SOURCE_DIR=/usr/src/googletest >/dev/null
cmake --build build-mingw -j "$jobs"
# The prefix is made once, before the suites start Wine in parallel.
if [ ! -f "$WINEPREFIX/system.reg" ]; then wineboot --init >/dev/null 2>&1 || true; fi
wineserver -w
(cd build-mingw && ctest -j "$jobs" --output-on-failure)

echo "== Windows x64 wheel (CPU, MinGW-w64): tag, sageattn.dll's exports and imports"
rm -rf build-mingw/dist
CMAKE_TOOLCHAIN_FILE="$PWD/cmake/mingw-w64-x86_64.cmake" SAGEATTN_CUDA=OFF \
  python3 -m pip wheel . --no-deps -q -w build-mingw/dist -C wheel.tags=py3-none-win_amd64
python3 tests/wheel/check_wheel.py build-mingw/dist/sageattention-*-py3-none-win_amd64.whl --label cpu

echo "== Release files: workflow, bake file and Dockerfile checked statically (no Docker engine here)"
bash tests/release/check_release_files.sh
