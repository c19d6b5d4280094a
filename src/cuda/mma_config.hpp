// The mma.sync attention kernel's shared-memory configurations (attention_mma.cuh): what one
// CTA holds in each, which one a device gets, and the per-CTA limits of the architectures the
// kernel is built for. The kernel, its launch bounds, the host's dispatch (backend.cu) and the
// tests read these numbers here and nowhere else. Host code and kernels alike; no CUDA headers.
#pragma once

#include "cuda/kernels.hpp"
#include "cuda/params.hpp"

namespace sageattn::cuda {

// How a CTA stages its 64-key blocks of K and Vᵀ in shared memory. Only the schedule of the
// copies differs: every block is still one §6 step of 64 keys, with the same arithmetic in the
// same order, so both give the same bits.
enum class MmaPipeline : int {
    // Two stages of K and Vᵀ: the copies of block i + 1 run while block i computes.
    kDoubleBuffered = 0,
    // One K buffer and one Vᵀ buffer, half the bytes: Vᵀ of block i copies during its Q·Kᵀ and
    // softmax, K of block i + 1 during its P·V. For head_dim 256, whose two stages outgrow the
    // 99 KB a CTA may have on sm_86, sm_89 and sm_12x.
    kSplitKv = 1,
};

// Every shared-memory row is padded by 16 bytes: the 8 rows a fragment load touches
// (g = 0..7, 4-byte words t = 0..3) then fall in 32 different banks.
constexpr int kSmemRowPad = 16;
// One 64-key block of K, in rows wide enough for §5's 16-bit K (the INT8 codes use the first
// half), and of Vᵀ, one row of FP8 or FP16 codes per channel.
constexpr int mma_k_block_bytes(int dp) { return kBlockKv * (2 * dp + kSmemRowPad); }
constexpr int mma_v_block_bytes(int dp, bool pv_fp8) { return dp * (kBlockKv * (pv_fp8 ? 1 : 2) + kSmemRowPad); }
constexpr int mma_stages(MmaPipeline pipe) { return pipe == MmaPipeline::kDoubleBuffered ? 2 : 1; }
// Dynamic: the blocks above, once or twice. Static: the epilogue's per-channel V scale and
// offset, in each of the kernel's two Q·Kᵀ paths.
constexpr int mma_dynamic_smem(int dp, bool pv_fp8, MmaPipeline pipe) {
    return mma_stages(pipe) * (mma_k_block_bytes(dp) + mma_v_block_bytes(dp, pv_fp8));
}
constexpr int mma_static_smem(int dp) { return 2 * 2 * dp * 4; }
constexpr int mma_shared_bytes(int dp, bool pv_fp8, MmaPipeline pipe) {
    return mma_dynamic_smem(dp, pv_fp8, pipe) + mma_static_smem(dp);
}

// Which instances are built (the kernel registry, kernels.py): the double-buffered kernel for
// every head size, the split one for the sizes some device needs it for (kSplitKvHeadDims).
constexpr bool mma_pipeline_built(int dp, MmaPipeline pipe) {
    if (pipe == MmaPipeline::kDoubleBuffered) return true;
    for (int d : kSplitKvHeadDims)
        if (d == dp) return true;
    return false;
}

// The configuration forward() launches on a device whose CTA may have `cta_limit` bytes of
// shared memory (0: not known, taken as enough): two stages where they fit, else the split
// buffers where that instance is built. prepare() refuses what still does not fit.
constexpr MmaPipeline mma_pipeline(int dp, bool pv_fp8, int cta_limit) {
    const bool double_fits = cta_limit <= 0 || mma_shared_bytes(dp, pv_fp8, MmaPipeline::kDoubleBuffered) <= cta_limit;
    return !double_fits && mma_pipeline_built(dp, MmaPipeline::kSplitKv) ? MmaPipeline::kSplitKv
                                                                         : MmaPipeline::kDoubleBuffered;
}

// Shared memory one CTA may opt into (cudaDevAttrMaxSharedMemoryPerBlockOptin), by compute
// capability: the SM's largest carveout (the CUDA programming guide's table, cuda_occupancy.h)
// less the 1 KB reserved per CTA. 99 KB on sm_86, sm_89 and sm_12x (RTX 30/40/50, A10, L4,
// L40), 163 KB on sm_80 and sm_87, 227 KB on sm_90 and sm_10x/sm_110.
constexpr int kCtaSmem99K = 99 * 1024;
constexpr int kCtaSmem163K = 163 * 1024;
constexpr int kCtaSmem227K = 227 * 1024;
constexpr int cta_smem_optin(int cc) {
    if (cc == 86 || cc == 89 || (cc >= 120 && cc < 130)) return kCtaSmem99K;
    if (cc == 80 || cc == 87) return kCtaSmem163K;
    return kCtaSmem227K;
}

// Every head size and P·V type fits every architecture the kernel runs on, in the
// configuration that architecture gets.
constexpr int kMmaArchs[] = {80, 86, 87, 89, 90, 100, 103, 110, 120, 121};
constexpr bool mma_fits_every_arch() {
    for (int cc : kMmaArchs)
        for (int dp : kMmaHeadDims)
            for (bool fp8 : {false, true}) {
                const int limit = cta_smem_optin(cc);
                if (mma_shared_bytes(dp, fp8, mma_pipeline(dp, fp8, limit)) > limit) return false;
            }
    return true;
}
static_assert(mma_fits_every_arch(), "an mma.sync instance outgrows the shared memory a CTA may have on some architecture");
// The 99 KB parts run head_dim 256 on the split buffers; every other head size keeps two stages there.
static_assert(mma_pipeline(256, false, kCtaSmem99K) == MmaPipeline::kSplitKv &&
                  mma_pipeline(256, true, kCtaSmem99K) == MmaPipeline::kSplitKv &&
                  mma_pipeline(128, false, kCtaSmem99K) == MmaPipeline::kDoubleBuffered,
              "the configurations of the 99 KB parts");
// A100 and H100 keep the double-buffered head_dim 256 they ran before (FP16 P·V on sm_80).
static_assert(mma_pipeline(256, false, kCtaSmem163K) == MmaPipeline::kDoubleBuffered &&
                  mma_pipeline(256, true, kCtaSmem227K) == MmaPipeline::kDoubleBuffered,
              "the configurations of sm_80 and sm_90");

}  // namespace sageattn::cuda
