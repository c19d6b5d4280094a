// The constants of docs/ALGORITHM.md and the meaning of the C ABI's options, shared by
// every implementation of it: the CPU emulation, the host code and the CUDA kernels. A
// constant or an option's meaning is written here once; the others name it.
#pragma once

#include <cstdint>

#include "sageattn/sageattn.h"

// Functions that host code, the CPU emulation and device code all call.
#if defined(__CUDACC__)
#define SAGEATTN_HOST_DEVICE __host__ __device__
#else
#define SAGEATTN_HOST_DEVICE
#endif

namespace sageattn::alg {

constexpr int64_t kKvBlock = 64;         // §3: K scale groups; §6: the online-softmax step
constexpr int64_t kWideKvBlock = 128;    // §6, §10: the softmax step of the sm_90a kernel's INT8 heads
constexpr int64_t kQWarpRows = 32;       // §3: per-warp / per-thread Q slab
constexpr int64_t kQBlockRows = 128;     // §3: per-block Q group
constexpr int kQThreadGroups = 8;        // §3: per-thread Q groups per slab (row mod 8)
constexpr int kKThreadGroups = 4;        // §3: per-thread K groups per block ((token mod 8) / 2)
constexpr int64_t kKMeanKeys = 256;      // §3: keys K's smoothing mean is taken over, spread over the sequence
constexpr float kInt8Max = 127.0f;       // §3: symmetric INT8, codes in [-127, 127]
constexpr float kE4M3Max = 448.0f;       // §2: the largest finite FP8 E4M3 value
constexpr float kAmaxFloor = 0x1p-100f;  // §3/§4: keeps 127/amax and 448/amax finite
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kFltMax = 3.4028235e38f;  // §6: an additive bias saturates here (log2 units)
constexpr float kFp8POffset = 8.807f;    // §6: log2(448) rounded down: P̃ = exp2(s - m + offset) <= 448
constexpr float kFp8VRange = kE4M3Max;   // §4: V's channel amax maps here (fp32 accumulation)
constexpr float kFp8VRangeFp16Acc = 2.25f;  // §4: ... and here for fp16 accumulation (no overflow)
constexpr int kFp16VMaxExp = 9;          // §4: FP16 V is scaled by 2^e so that |v| <= 2^9
constexpr int kFp16VMinExp = -100;
constexpr float kSharpDenominator = 311.0f;     // §5: 127 · sqrt(12 / 2)
constexpr float kDefaultSharpThreshold = 0.3f;  // §5: qk_sharp_threshold = 0 means this

// §6: an additive mask value in log2 units, saturated so that a huge finite
// bias (PyTorch's finfo.min fill) stays finite and a fully masked row comes out
// as the exact formula's uniform average, not as an empty row. (No fminf/fmaxf:
// they would turn a NaN bias into -FLT_MAX, and §6 wants it to reach the row.)
SAGEATTN_HOST_DEVICE inline float bias_log2(float bias) {
    const float b = bias * kLog2e;
    return b < -kFltMax ? -kFltMax : (b > kFltMax ? kFltMax : b);
}

// §4: the value a channel's floored amax maps to in FP8 V, by the P·V accumulation mode.
SAGEATTN_HOST_DEVICE constexpr float fp8_v_range(int32_t pv_accum) {
    return pv_accum == SAGEATTN_ACCUM_FP32_FP16 ? kFp8VRangeFp16Acc : kFp8VRange;
}

// §4: FP16 V's scale exponent e_c from E, the frexp exponent of a nonzero channel amax.
SAGEATTN_HOST_DEVICE constexpr int fp16_v_exponent(int frexp_exponent) {
    const int e = frexp_exponent - kFp16VMaxExp;
    return e > kFp16VMinExp ? e : kFp16VMinExp;
}

// §5: σ, the estimate of the INT8 logit error's standard deviation, from |scale|,
// sqrt(head_dim) and the largest |q| and |k̂| (each caller takes the absolute value and the
// root with its own fp32 functions).
SAGEATTN_HOST_DEVICE inline float sharpness(float abs_scale, float sqrt_head_dim, float qmax, float kmax) {
    return abs_scale * sqrt_head_dim * qmax * kmax / kSharpDenominator;
}

// Q group of row i inside its sequence (§3); one scale per group.
SAGEATTN_HOST_DEVICE inline int64_t q_group(int64_t i, int granularity) {
    if (granularity == SAGEATTN_QK_PER_BLOCK) return i / kQBlockRows;
    if (granularity == SAGEATTN_QK_PER_WARP) return i / kQWarpRows;
    return (i / kQWarpRows) * kQThreadGroups + (i % kQThreadGroups);  // per-thread
}
SAGEATTN_HOST_DEVICE inline int64_t q_groups(int64_t len, int granularity) {
    if (granularity == SAGEATTN_QK_PER_BLOCK) return (len + kQBlockRows - 1) / kQBlockRows;
    const int64_t slabs = (len + kQWarpRows - 1) / kQWarpRows;
    return granularity == SAGEATTN_QK_PER_WARP ? slabs : slabs * kQThreadGroups;
}
// K groups of one kKvBlock-key block, and the group of key j (0 <= j < kKvBlock) inside it.
// §3: K's smoothing mean is over min(Lk, kKMeanKeys) keys spread over the sequence: key
// floor(i·Lk / kKMeanKeys) for i < kKMeanKeys (every key when Lk <= kKMeanKeys).
SAGEATTN_HOST_DEVICE constexpr int64_t k_mean_keys(int64_t len) { return len < kKMeanKeys ? len : kKMeanKeys; }
// Key i of that sample (i < k_mean_keys(len)), ascending in i: in_k_mean(j, len) holds exactly for
// these. Walking the sample this way takes a product a key where in_k_mean takes a division a key.
SAGEATTN_HOST_DEVICE constexpr int64_t k_mean_key(int64_t i, int64_t len) { return len <= kKMeanKeys ? i : i * len / kKMeanKeys; }
SAGEATTN_HOST_DEVICE constexpr bool in_k_mean(int64_t j, int64_t len) {
    if (len <= kKMeanKeys) return j < len;
    const int64_t i = (j * kKMeanKeys + len - 1) / len;  // the least i with floor(i·len / kKMeanKeys) >= j
    return i < kKMeanKeys && i * len / kKMeanKeys == j;
}

SAGEATTN_HOST_DEVICE constexpr int k_groups_per_block(int granularity) {
    return granularity == SAGEATTN_QK_PER_THREAD ? kKThreadGroups : 1;
}
template <class Int>
SAGEATTN_HOST_DEVICE constexpr Int k_group_in_block(Int j, int granularity) {
    return granularity == SAGEATTN_QK_PER_THREAD ? (j % 8) / 2 : 0;
}
// K group of token j inside its sequence (§3).
SAGEATTN_HOST_DEVICE inline int64_t k_group(int64_t j, int granularity) {
    return (j / kKvBlock) * k_groups_per_block(granularity) + k_group_in_block(j % kKvBlock, granularity);
}
SAGEATTN_HOST_DEVICE inline int64_t k_groups(int64_t len, int granularity) {
    return (len + kKvBlock - 1) / kKvBlock * k_groups_per_block(granularity);
}

}  // namespace sageattn::alg
