// mma.sync wrappers, one per instruction shape the attention kernels use.
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k*"): with
// g = lane / 4 and t = lane % 4,
//   C/D (m16n8, 32-bit):  c0,c1 = row g, cols 2t, 2t+1;  c2,c3 = row g+8, same cols
//   A 8-bit m16n8k32:     a0 = row g, k 4t..4t+3;  a1 = row g+8;  a2/a3 = the same at k+16
//   B 8-bit m16n8k32:     b0 = k 4t..4t+3, col g;  b1 = k 16+4t..16+4t+3
//   A 16-bit m16n8k16:    a0 = row g, k 2t,2t+1;  a1 = row g+8;  a2/a3 = the same at k+8
//   B 16-bit m16n8k16:    b0 = k 2t,2t+1, col g;  b1 = k 2t+8, 2t+9
#pragma once

#include <cstdint>

namespace sageattn::cuda::ptx {

// INT8 · INT8 -> INT32 (sm80+).
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// FP16 or BF16 inputs, FP32 accumulator (sm80+).
template <bool kBf16>
__device__ __forceinline__ void mma_16bit_f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if constexpr (kBf16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// FP16 inputs, FP16 accumulator: d holds two half2 (rows g and g+8).
__device__ __forceinline__ void mma_f16_f16acc(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, {%0,%1};\n"
        : "+r"(d[0]), "+r"(d[1])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// FP8 E4M3 inputs, FP32 accumulator (sm89+; the caller dispatches only there).
__device__ __forceinline__ void mma_e4m3_f32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

// FP8 E4M3 inputs, FP16 accumulator (sm89+ with PTX 8.7): d holds two half2.
__device__ __forceinline__ void mma_e4m3_f16acc(uint32_t (&d)[2], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f16.e4m3.e4m3.f16 {%0,%1}, {%2,%3,%4,%5}, {%6,%7}, {%0,%1};\n"
        : "+r"(d[0]), "+r"(d[1])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

}  // namespace sageattn::cuda::ptx
