// Host entry points of the CUDA kernels (defined in .cu files, called by backend.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <iterator>

#include "cuda/kernels.hpp"
#include "cuda/mma_config.hpp"
#include "cuda/params.hpp"

namespace sageattn::cuda {

// The kernel registry's head dims (kernels.hpp, from kernels.py): a problem of head_dim d runs
// at the smallest padded head dim >= d; validation keeps d <= SAGEATTN_MAX_HEAD_DIM.
constexpr int kMaxHeadDimPad = kMmaHeadDims[std::size(kMmaHeadDims) - 1];
constexpr int padded_head_dim(int64_t d) {
    for (int dp : kMmaHeadDims)
        if (d <= dp) return dp;
    return kMaxHeadDimPad;
}
constexpr bool has_wgmma_instance(int dp) {
    for (int d : kWgmmaHeadDims)
        if (d == dp) return true;
    return false;
}
// ... with FP16 P·V too (d256 has FP8 P·V only).
constexpr bool has_wgmma_fp16_pv(int dp) {
    for (int d : kWgmmaFp16PvHeadDims)
        if (d == dp) return true;
    return false;
}
// The registry's lists as the dispatch needs them: the mma.sync head dims ascending (for
// padded_head_dim), multiples of 64 (the mma.sync kernel takes Q·Kᵀ two k32 steps at a time),
// the last SAGEATTN_MAX_HEAD_DIM; every sm_90a head dim among them (its sharp heads, §5, run on
// the mma.sync kernel of the same size), and every split-buffer one (a second configuration of
// an mma.sync size). quantize.cu checks what its work split needs.
constexpr bool registry_is_consistent() {
    int last = 0;
    for (int dp : kMmaHeadDims) {
        if (dp <= last || dp % 64 != 0) return false;
        last = dp;
    }
    for (int dp : kWgmmaHeadDims)
        if (padded_head_dim(dp) != dp) return false;
    for (int dp : kSplitKvHeadDims)
        if (padded_head_dim(dp) != dp) return false;
    for (int dp : kWgmmaFp16PvHeadDims)
        if (!has_wgmma_instance(dp)) return false;
    int cut_dp = 0, cut_c = 0;
    for (const auto& cut : kWgmmaChannelCuts) {
        if (!has_wgmma_instance(cut[0]) || cut[1] % 32 != 0 || cut[1] >= cut[0] || (cut[0] == cut_dp && cut[1] <= cut_c))
            return false;
        cut_dp = cut[0], cut_c = cut[1];
    }
    return last == SAGEATTN_MAX_HEAD_DIM;
}
static_assert(registry_is_consistent(),
              "kernels.py: mma.sync head dims ascending multiples of 64 up to SAGEATTN_MAX_HEAD_DIM, and every "
              "sm_90a and split-buffer head dim among them, every sm_90a FP16 P·V head dim among those, and "
              "channel cuts of sm_90a head dims, multiples of 32 below them, ascending per head dim");

// K/V sums, then K, V and Q codes (§3, §4): one launch when there are at most
// `one_launch_items` blocks in all (small problems, whose time is launch latency), else
// four kernels in stream order.
void launch_quantize(const Params& p, int64_t one_launch_items, cudaStream_t stream);

// Checks varlen prefix sums on the device (seqlens.cu): ORs 1 into *faults if cu_q breaks §1's
// rules, 2 if cu_kv does. *faults must be zero before.
void launch_check_seqlens(const int32_t* cu_q, const int32_t* cu_kv, int64_t batch, int64_t total_q, int64_t total_kv,
                          int64_t max_q, int64_t max_kv, uint32_t* faults, cudaStream_t stream);

// The mma.sync kernel (attention_mma.cuh) in one of mma_config.hpp's shared-memory
// configurations; instances/ holds those mma_pipeline_built lists.
template <int DP, bool kBf16, bool kFp8, MmaPipeline kPipe>
void launch_attention(const Params& p, cudaStream_t stream);

// sm_90a only (built when the SM list names 90): INT8 and FP8 wgmma, FP8 P·V with
// "fp32+fp32" accumulation (or FP16 P·V with "fp32"), head_dim_pad 64 or 128, and 256 with FP8
// P·V only (kernels.py's WGMMA_FP16_PV_HEAD_DIMS); skips the heads §5 flags. False when
// the problem is beyond it (32-bit tile coordinates) or the driver has no tensor-map encoder:
// the caller then runs the mma.sync kernel.
template <int DP, bool kBf16>
bool launch_attention_wgmma(const Params& p, cudaStream_t stream);
// The same on DP's layout computing only its first C channels (kernels.py's
// WGMMA_CHANNEL_CUTS), for head dims up to C; false otherwise.
template <int DP, int C, bool kBf16>
bool launch_attention_wgmma_cut(const Params& p, cudaStream_t stream);

}  // namespace sageattn::cuda
