// Reading and writing fp16/bf16/fp32 elements by dtype code on the host.
#pragma once

#include <cstdint>

#include "common/numeric.hpp"
#include "sageattn/sageattn.h"

namespace sageattn {

inline float load_element(const void* base, int32_t dtype, int64_t index) {
    switch (dtype) {
        case SAGEATTN_DTYPE_FP16: return num::fp16_to_float(static_cast<const uint16_t*>(base)[index]);
        case SAGEATTN_DTYPE_BF16: return num::bf16_to_float(static_cast<const uint16_t*>(base)[index]);
        default: return static_cast<const float*>(base)[index];
    }
}

inline void load_row(const void* base, int32_t dtype, int64_t offset, int64_t n, float* dst) {
    for (int64_t c = 0; c < n; ++c) dst[c] = load_element(base, dtype, offset + c);
}

inline void store_element(void* base, int32_t dtype, int64_t index, float value) {
    if (dtype == SAGEATTN_DTYPE_FP16)
        static_cast<uint16_t*>(base)[index] = num::float_to_fp16(value);
    else
        static_cast<uint16_t*>(base)[index] = num::float_to_bf16(value);
}
// The float64 reference's outputs, rounded once (not through float).
inline void store_element(void* base, int32_t dtype, int64_t index, double value) {
    if (dtype == SAGEATTN_DTYPE_FP16)
        static_cast<uint16_t*>(base)[index] = num::double_to_fp16(value);
    else
        static_cast<uint16_t*>(base)[index] = num::double_to_bf16(value);
}

// The mask entry for (b, h, i, j): whether key j is visible to query i and
// the additive bias in natural-log units (0 for boolean masks).
struct MaskValue {
    bool visible;
    float bias;
};

inline MaskValue mask_at(const sageattn_mask& m, int64_t b, int64_t h, int64_t i, int64_t j) {
    if (m.type == SAGEATTN_MASK_NONE) return {true, 0.0f};
    const int64_t idx = b * m.batch_stride + h * m.head_stride + i * m.q_stride + j * m.kv_stride;
    if (m.type == SAGEATTN_MASK_BOOL) return {static_cast<const uint8_t*>(m.data)[idx] != 0, 0.0f};
    const float bias = load_element(m.data, m.dtype, idx);
    return {bias != -INFINITY, bias};
}

}  // namespace sageattn
