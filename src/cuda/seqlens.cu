// The opt-in device check of varlen prefix sums (sageattn_problem.check_seqlens): §1's rules
// for cu_seqlens, which stay on the device, tested where they live. The host reads one word
// back; only on a failure does it copy the arrays to name the first fault (backend.cu).
#include <cuda_runtime.h>

#include "cuda/launch.hpp"

namespace sageattn::cuda {
namespace {

// Entry b of one array: cu[0] = 0; for b >= 1 the length cu[b] − cu[b−1] in [0, max_len];
// the last entry at most the tensor's packed rows.
__device__ __forceinline__ bool entry_ok(const int32_t* cu, int64_t b, int64_t batch, int64_t total, int64_t max_len) {
    const int64_t x = cu[b];
    if (b == 0 && x != 0) return false;
    if (b > 0) {
        const int64_t len = x - cu[b - 1];
        if (len < 0 || len > max_len) return false;
    }
    return b < batch || x <= total;
}

// One thread per entry; bit 0 of `faults` for cu_seqlens_q, bit 1 for cu_seqlens_kv.
__global__ void check_seqlens_kernel(const int32_t* cu_q, const int32_t* cu_kv, int64_t batch, int64_t total_q,
                                     int64_t total_kv, int64_t max_q, int64_t max_kv, uint32_t* faults) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b <= batch; b += stride) {
        const uint32_t f = (entry_ok(cu_q, b, batch, total_q, max_q) ? 0u : 1u) |
                           (entry_ok(cu_kv, b, batch, total_kv, max_kv) ? 0u : 2u);
        if (f != 0) atomicOr(faults, f);
    }
}

}  // namespace

void launch_check_seqlens(const int32_t* cu_q, const int32_t* cu_kv, int64_t batch, int64_t total_q, int64_t total_kv,
                          int64_t max_q, int64_t max_kv, uint32_t* faults, cudaStream_t stream) {
    const int64_t entries = batch + 1;
    const int threads = 256;
    const int blocks = static_cast<int>(entries / threads + 1 < 1024 ? entries / threads + 1 : 1024);
    check_seqlens_kernel<<<blocks, threads, 0, stream>>>(cu_q, cu_kv, batch, total_q, total_kv, max_q, max_kv, faults);
}

}  // namespace sageattn::cuda
