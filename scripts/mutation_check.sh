#!/usr/bin/env bash
# The mutation check: the tests must notice when the CPU emulation drops an option.
# For each mutation below, src/cpu/quantized.cpp is compiled with
# -DSAGEATTN_MUTATE_<NAME> (one at a time; only that file and the links rebuild), which
# makes the emulation ignore one option of docs/ALGORITHM.md as a kernel that dropped it
# would; the C++ tests named beside it must then fail. They are first run unmutated and
# must pass, so that a failure means the mutation was caught. A CPU-only build in
# build-mutate; about a minute and a half on two cores. scripts/test.sh runs it.
# --help: this comment.
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-mutate
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# NAME  the tests that must catch it (a gtest filter)
mutations=(
  "GRANULARITY_ALL_PER_THREAD     Features.QuantizationGroupsFollowSection3"
  "GRANULARITY_THREAD_AS_WARP     Features.QuantizationGroupsFollowSection3"
  "GRANULARITY_WARP_AS_BLOCK      Features.QuantizationGroupsFollowSection3"
  "GRANULARITY_BLOCK_AS_WARP      Features.QuantizationGroupsFollowSection3"
  "QK_INT8_AS_AUTO                Accuracy.SharpSoftmax:Accuracy.SharpThresholdAndPrecisionAreHonoured"
  "QK_INPUT_AS_AUTO               Accuracy.SharpThresholdAndPrecisionAreHonoured"
  "SHARP_RULE_OFF                 Accuracy.SharpSoftmax:Accuracy.SharpThresholdAndPrecisionAreHonoured"
  "SHARP_THRESHOLD_IGNORED        Accuracy.SharpThresholdAndPrecisionAreHonoured"
  "SMOOTH_K_IGNORED               Accuracy.KBiasCase"
  "SMOOTH_V_IGNORED               Accuracy.SmoothVResolvesAChannelMeanFarFromZero"
  "PV_FP16_AS_FP8                 Accuracy.KBiasCase:Features.Fp16AccumulationRoundsEverySixteenKeys"
  "ACCUM_ALL_AS_FP32              Features.Fp8AccumulationModes:Features.Fp16AccumulationRoundsEverySixteenKeys"
  "ACCUM_FP32_AS_FP16_INNER       Features.Fp8AccumulationModes:Features.Fp16AccumulationRoundsEverySixteenKeys"
  "ACCUM_FP32_FP32_AS_FP32_FP16   Features.Fp8AccumulationModes"
  "ACCUM_FP32_FP16_AS_FP32        Features.Fp8AccumulationModes"
  "ACCUM_FP16_FP32_AS_FP32        Features.Fp16AccumulationRoundsEverySixteenKeys"
  "SOFTMAX_STEP_IGNORED           Accuracy.WideSoftmaxStep"
)

configure() {
  cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSAGEATTN_CUDA=OFF -DSAGEATTN_BUILD_TESTS=ON \
    -DSAGEATTN_BUILD_TOOLS=OFF -DSAGEATTN_MUTATION="$1" >/dev/null 2>&1
  cmake --build "$build" --target sageattn_tests -j "$(nproc)" >/dev/null
}

filters=""
for m in "${mutations[@]}"; do
  read -r name filter <<<"$m"
  grep -q "SAGEATTN_MUTATE_${name}\b" src/cpu/quantized.cpp ||
    { echo "mutation_check.sh: src/cpu/quantized.cpp has no SAGEATTN_MUTATE_${name}" >&2; exit 1; }
  filters="${filters:+$filters:}$filter"
done

echo "-- unmutated: the catching tests pass"
configure ""
"$build/tests/sageattn_tests" --gtest_filter="$filters" --gtest_brief=1 >/dev/null ||
  { echo "mutation_check.sh: the catching tests fail without a mutation" >&2; exit 1; }

missed=()
for m in "${mutations[@]}"; do
  read -r name filter <<<"$m"
  configure "$name"
  if "$build/tests/sageattn_tests" --gtest_filter="$filter" --gtest_brief=1 >"$build/mutation_$name.log" 2>&1; then
    echo "MISSED  $name: $filter all pass"
    missed+=("$name")
  else
    failed=$(grep -E '^\[  FAILED  \] [A-Za-z]' "$build/mutation_$name.log" | sed -E 's/^\[  FAILED  \] ([^ ]*).*/\1/' | sort -u | tr '\n' ' ')
    echo "caught  $name: ${failed}"
  fi
done
configure ""  # leave the build unmutated
if [ "${#missed[@]}" -gt 0 ]; then
  echo "mutation_check.sh: ${#missed[@]} of ${#mutations[@]} mutations were not caught: ${missed[*]}" >&2
  exit 1
fi
echo "all ${#mutations[@]} mutations caught"
