// cp.async: global -> shared copies that run while the warp computes (sm80+).
#pragma once

#include <cstdint>

namespace sageattn::cuda::ptx {

__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* global_src) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
}
// Sixteen bytes, or sixteen zero bytes where `valid` is false (nothing is read then).
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* global_src, bool valid) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global_src), "r"(valid ? 16 : 0));
}
// Four bytes, or four zero bytes where `valid` is false (nothing is read then).
__device__ __forceinline__ void cp_async_4(void* smem_dst, const void* global_src, bool valid) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global_src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace sageattn::cuda::ptx
