// ldmatrix: four 8x8 b16 matrices from shared memory in one instruction. Lane l
// gives the address of row l % 8 of matrix l / 8 (16-byte aligned); register i
// receives matrix i in the mma fragment layout (row lane/4, columns 2(lane%4), +1).
#pragma once

#include <cstdint>

namespace sageattn::cuda::ptx {

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_address) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

}  // namespace sageattn::cuda::ptx
