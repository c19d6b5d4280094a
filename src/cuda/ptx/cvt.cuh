// Conversions and special functions with the roundings docs/ALGORITHM.md §2 names.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace sageattn::cuda::ptx {

// ex2.approx.ftz: the fast exp2 the kernels use (§2 allows it).
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats to packed e4m3 (lo in the low byte), nearest even, saturating (sm89+).
__device__ __forceinline__ uint16_t e4m3x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint16_t r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(r) : "f"(hi), "f"(lo));
    return r;
#else
    __trap();
    return 0;
#endif
}

// Packed e4m3 pair back to two floats (exact).
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(h2) : "h"(v));
    return __half22float2(*reinterpret_cast<__half2*>(&h2));
#else
    __trap();
    return float2{0.f, 0.f};
#endif
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ float2 unpack_half2(uint32_t v) { return __half22float2(*reinterpret_cast<__half2*>(&v)); }

// One 16-bit input element (fp16 or bf16 bits) to float.
template <bool kBf16>
__device__ __forceinline__ float load16(const uint16_t* p) {
    const uint16_t bits = *p;
    if constexpr (kBf16) return __uint_as_float(static_cast<uint32_t>(bits) << 16);
    else return __half2float(__ushort_as_half(bits));
}

template <bool kBf16>
__device__ __forceinline__ uint16_t store16(float x) {
    if constexpr (kBf16) return __bfloat16_as_ushort(__float2bfloat16_rn(x));
    else return __half_as_ushort(__float2half_rn(x));
}

// Lane-wise maximum and minimum of two pairs of 16-bit inputs (fp16x2 or bf16x2 bits; sm_80+),
// and a value in both lanes of a pair. Exact: the result is one of the inputs.
template <bool kBf16>
__device__ __forceinline__ uint32_t max_pair(uint32_t a, uint32_t b) {
    uint32_t d;
    if constexpr (kBf16) asm("max.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    else asm("max.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}
template <bool kBf16>
__device__ __forceinline__ uint32_t min_pair(uint32_t a, uint32_t b) {
    uint32_t d;
    if constexpr (kBf16) asm("min.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    else asm("min.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}
template <bool kBf16>
__device__ __forceinline__ uint32_t pair_of(float x) {
    const uint32_t h = store16<kBf16>(x);
    return h | (h << 16);
}

}  // namespace sageattn::cuda::ptx
