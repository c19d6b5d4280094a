// Named barriers (bar.sync / bar.arrive) between some warps of a CTA. Id 0 is __syncthreads';
// `count` threads, a multiple of 32, take part: those that sync wait for all of them.
#pragma once

namespace sageattn::cuda::ptx {

__device__ __forceinline__ void named_barrier_sync(int id, int count) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int count) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

}  // namespace sageattn::cuda::ptx
