// The constants of docs/ALGORITHM.md, shared by every implementation of it.
#pragma once

#include <cmath>
#include <cstdint>

namespace sageattn::alg {

constexpr int64_t kKvBlock = 64;         // §3: K scale groups; §6: the online-softmax step
constexpr int64_t kWideKvBlock = 128;    // §6, §10: the softmax step of the sm_90a kernel's INT8 heads
constexpr int64_t kQWarpRows = 32;       // §3: per-warp / per-thread Q slab
constexpr int64_t kQBlockRows = 128;     // §3: per-block Q group
constexpr int kQThreadGroups = 8;        // §3: per-thread Q groups per slab (row mod 8)
constexpr int kKThreadGroups = 4;        // §3: per-thread K groups per block ((token mod 8) / 2)
constexpr float kInt8Max = 127.0f;       // §3: symmetric INT8, codes in [-127, 127]
constexpr float kAmaxFloor = 0x1p-100f;  // §3/§4: keeps 127/amax and 448/amax finite
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kFp8POffset = 8.807f;    // §6: log2(448) rounded down: P̃ = exp2(s - m + offset) <= 448
constexpr float kFp8VRange = 448.0f;     // §4: V's channel amax maps here (fp32 accumulation)
constexpr float kFp8VRangeFp16Acc = 2.25f;  // §4: ... and here for fp16 accumulation (no overflow)
constexpr int kFp16VMaxExp = 9;          // §4: FP16 V is scaled by 2^e so that |v| <= 2^9
constexpr int kFp16VMinExp = -100;
constexpr float kSharpDenominator = 311.0f;  // §5: 127 · sqrt(12 / 2)

// §6: an additive mask value in log2 units, saturated so that a huge finite
// bias (PyTorch's finfo.min fill) stays finite and a fully masked row comes out
// as the exact formula's uniform average, not as an empty row.
inline float bias_log2(float bias) {
    const float b = bias * kLog2e;
    return b < -3.4028235e38f ? -3.4028235e38f : (b > 3.4028235e38f ? 3.4028235e38f : b);
}

// Q group of row i inside its sequence (§3); one scale per group.
inline int64_t q_group(int64_t i, int granularity) {
    if (granularity == 2) return i / kQBlockRows;                      // per-block
    if (granularity == 1) return i / kQWarpRows;                       // per-warp
    return (i / kQWarpRows) * kQThreadGroups + (i % kQThreadGroups);   // per-thread
}
inline int64_t q_groups(int64_t len, int granularity) {
    if (granularity == 2) return (len + kQBlockRows - 1) / kQBlockRows;
    const int64_t slabs = (len + kQWarpRows - 1) / kQWarpRows;
    return granularity == 1 ? slabs : slabs * kQThreadGroups;
}
// K group of token j inside its sequence (§3).
inline int64_t k_group(int64_t j, int granularity) {
    if (granularity != 0) return j / kKvBlock;
    return (j / kKvBlock) * kKThreadGroups + (j % 8) / 2;
}
inline int64_t k_groups(int64_t len, int granularity) {
    const int64_t blocks = (len + kKvBlock - 1) / kKvBlock;
    return granularity != 0 ? blocks : blocks * kKThreadGroups;
}

}  // namespace sageattn::alg
