// The Hopper attention kernel (sm_90a): INT8 wgmma m64n128k32 for Q·Kᵀ and, for P·V,
// FP8 E4M3 wgmma m64n(D+8)k32 or FP16 wgmma m64n(D+8)k16, each 128-key block summed apart
// in fp32 and folded into O ("fp32+fp32"), online softmax in exp2 with 128-key steps:
// docs/ALGORITHM.md §6 on the instructions that reach Hopper's full tensor-core rate, with
// the choices of §10.
// At head_dim 256 (FP8 P·V only; timings in docs/PERF.md) Q and K rows are two 128-byte
// halves and P·V runs in two channel halves of m64n136 each.
//
// A CTA is kWarpgroups consumer warpgroups of 64 query rows each, all of one (sequence,
// head), and a producer warpgroup, one thread of which drives the bulk tensor copy engine
// (sm90/producer.cuh): K codes and Vᵀ codes of the blocks ahead arrive in a multi-stage,
// swizzled shared-memory pipeline on full/empty mbarriers while each consumer
// (sm90/mainloop.cuh) runs its MMAs and softmax (sm90/softmax.cuh) on the current block.
// Q codes stay in shared memory for the whole key loop. One CTA an SM: the producer also asks
// L2 for the first copies of the CTA that will take the SM next (prefetch_next_wave). Tile
// sizes and the shared-memory layout live in sm90/traits.cuh. Heads that §5 flags (sharp
// softmax) are left to the mma.sync kernel's 16-bit path.
#pragma once

#include <cuda_runtime.h>

#include <cudaTypedefs.h>

#include <atomic>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"
#include "cuda/ptx/barrier.cuh"
#include "cuda/ptx/cp_async.cuh"
#include "cuda/ptx/mbarrier.cuh"
#include "cuda/ptx/setmaxnreg.cuh"
#include "cuda/ptx/wgmma.cuh"
#include "cuda/sm90/epilogue.cuh"
#include "cuda/sm90/mainloop.cuh"
#include "cuda/sm90/producer.cuh"
#include "cuda/sm90/softmax.cuh"
#include "cuda/sm90/traits.cuh"

namespace sageattn::cuda {
namespace sm90 {

// The copies of the CTA that runs the query tile at row q0 of head h of sequence s.
template <class T>
__device__ __forceinline__ Copies<T> tile_copies(const Params& p, const TensorMaps& maps, int h, const Seq& s, int64_t q0) {
    const int hk = h / p.group;
    const int64_t k_block0 = (hk * p.kv_rows + s.pad_kv) / kBlockKv;
    return Copies<T>{maps, static_cast<int32_t>(h * p.q_rows + s.pad_q + q0), hk * p.kv_rows + s.pad_kv, s.pad_kv,
                     hk * T::kDp, p.k_scale + k_block0 * alg::kKThreadGroups};
}

// Scheduler. One CTA an SM, launched in the order of their linear index: the CTA that takes an
// SM when this one leaves it is about p.sms places later. What it copies first (its Q codes,
// block 0) is asked of L2 now, so that its set-up, which nothing overlaps, waits on L2, not DRAM.
template <class T>
__device__ __forceinline__ void prefetch_next_wave(const Params& p, const TensorMaps& maps) {
    const int64_t next = blockIdx.x + int64_t{gridDim.x} * (blockIdx.y + int64_t{gridDim.y} * blockIdx.z) + max(p.sms, 1);
    const int64_t x = next % gridDim.x, y = next / gridDim.x % gridDim.y, z = next / gridDim.x / gridDim.y;
    if (z >= gridDim.z) return;
    const Seq s = sequence(p, static_cast<int>(z));
    const int64_t q0 = query_tile(p, x) * T::kTileQ;
    if (q0 < s.len_q) tile_copies<T>(p, maps, static_cast<int>(y), s, q0).prefetch_start();
}

template <class T, bool kBf16, bool kLse>
__global__ void __launch_bounds__(T::kThreads, 1)
    attention_kernel(const Params p, const __grid_constant__ CUtensorMap q_map,
                     const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
    constexpr int DP = T::kDp;
    extern __shared__ __align__(16) uint8_t smem_raw[];
    uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
    Pipeline pipe;
    pipe.q_smem = smem;
    pipe.stages = smem + T::kStagesOffset;
    pipe.full = reinterpret_cast<uint64_t*>(smem + T::kBarriersOffset);
    pipe.empty = pipe.full + T::kStages;
    pipe.q_full = pipe.empty + T::kStages;

    Tile tile;
    tile.b = blockIdx.z, tile.h = blockIdx.y;
    tile.s = sequence(p, tile.b);
    const int64_t q0 = query_tile(p) * T::kTileQ;
    if (q0 >= tile.s.len_q) return;
    const int hk = tile.h / p.group;

    // The warpgroup index through a shuffle: the compiler then knows it is warp-uniform and keeps
    // the wgmma descriptors built from it in uniform registers.
    const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0), tid = threadIdx.x % 128;
    tile.lq = tile.s.len_q, tile.lkv = tile.s.len_kv;
    // Keys a row sees (causal, bottom-right): up to row + lkv − lq.
    auto keys_seen_by = [&](int64_t last_row) {
        return p.causal ? max64(0, min64(tile.lkv, last_row + tile.lkv - tile.lq + 1)) : tile.lkv;
    };
    const int64_t kv_end = keys_seen_by(min64(q0 + T::kTileQ, tile.lq) - 1);
    tile.blocks = static_cast<uint32_t>((kv_end + T::kBlockN - 1) / T::kBlockN);

    // Stage s is full when the copy engine has written its K and Vᵀ codes (one arrival and
    // their bytes), and empty once every consumer thread is done with it. The copies of Q and of
    // block 0, all the consumers need to start, go out before the rest of the CTA's set-up (the
    // rows of ones), so that they overlap it; the producer sends the other first stages after
    // the CTA's barrier (sent here, ten more copies held every warp at it: docs/PERF.md), and
    // each later block once its stage is free.
    const TensorMaps maps{&q_map, &k_map, &v_map};
    const Copies<T> copies = tile_copies<T>(p, maps, tile.h, tile.s, q0);
    if (threadIdx.x == 0) {
        for (int i = 0; i < T::kStages; ++i)
            ptx::mbarrier_init(pipe.full + i, 1), ptx::mbarrier_init(pipe.empty + i, T::kConsumers);
        ptx::mbarrier_init(pipe.q_full, 1);
        ptx::mbarrier_init_fence();
        ptx::fence_proxy_async();  // the initialised barriers, for the copy engine
        copies.q(pipe);
        if (tile.blocks > 0) copies.block(pipe, 0);
    }
    // §5: heads flagged sharp run on the mma.sync kernel's 16-bit Q·Kᵀ. One thread of another
    // warp reads the verdict's inputs while thread 0 sets up, and leaves it for every thread
    // past the barrier (read by each thread before it, their latency came on top of the set-up).
    uint32_t* sharp_flag = reinterpret_cast<uint32_t*>(smem + T::kFlagOffset);
    if (threadIdx.x == 32) *sharp_flag = p.qk_precision == SAGEATTN_QK_AUTO && sharp_scores(p, tile.b, tile.h);
    // The rows of ones under every P·V half of every stage's Vᵀ tiles (e4m3 1.0 = 0x38, fp16
    // 1.0 = 0x3c00); the copies never touch them.
    constexpr uint32_t kOnes = T::kVB == 1 ? 0x38383838u : 0x3c003c00u;
    constexpr int kOnesChunks = 8 * 128 / 16;
    constexpr int kOnesBlocks = T::kStages * T::kVTiles * T::kPvHalves;
    for (int i = threadIdx.x; i < kOnesBlocks * kOnesChunks; i += T::kThreads) {
        const int v = i / kOnesChunks / T::kPvHalves, half = i / kOnesChunks % T::kPvHalves, at = i % kOnesChunks;
        uint8_t* ones = pipe.stages + (v / T::kVTiles) * T::kStageBytes + T::kKBytes + (v % T::kVTiles) * T::kVTileBytes +
                        (half * T::kPvHalf1Row + T::kOnesRow) * 128;
        reinterpret_cast<uint4*>(ones)[at] = make_uint4(kOnes, kOnes, kOnes, kOnes);
    }
    ptx::fence_proxy_async();  // the rows of ones, for the tensor cores
    __syncthreads();

    // A sharp head's CTA waits for the copies it sent (none may land after it exits) and leaves;
    // the CTA of the head's first rows (every head with rows has one) lists it for the mma.sync
    // kernel's launch.
    if (*sharp_flag) {
        if (threadIdx.x == 0) {
            if (q0 == 0) p.sharp_heads[1 + atomicAdd(p.sharp_heads, 1u)] = tile.b * p.heads_q + tile.h;
            ptx::mbarrier_wait(pipe.q_full, 0);
            if (tile.blocks > 0) ptx::mbarrier_wait(pipe.full, 0);
        }
        return;
    }
    if (wg == T::kConsumers / 128) {
        ptx::setmaxnreg_dec<T::kProducerRegs>();
        if (tid == 0) {
            for (uint32_t n = 1; n < tile.blocks && n < T::kStages; ++n) copies.block(pipe, n);
            prefetch_next_wave<T>(p, maps);
            for (uint32_t n = T::kStages; n < tile.blocks; ++n) copies.refill(pipe, n);
        }
        return;
    }
    ptx::setmaxnreg_inc<T::kConsumerRegs>();
    // The epilogue's per-channel V factors: one channel a consumer thread. Its statistics are
    // copied to shared memory now (cp.async, no registers held) and turned into the factors
    // after the key loop, which hides their latency (read before the CTA's first barrier,
    // they held every warp up).
    float* columns = reinterpret_cast<float*>(smem + T::kColumnsOffset);  // [3][DP]
    const bool column_thread = threadIdx.x < DP;
    if (column_thread) {
        const VColumnSource src = v_column_source<DP, T::kVB == 1>(p, tile.b, hk, threadIdx.x);
        ptx::cp_async_4(columns + threadIdx.x, src.amax, src.real);
        ptx::cp_async_4(columns + DP + threadIdx.x, src.sum, src.has_sum);
        ptx::cp_async_4(columns + 2 * DP + threadIdx.x, src.err, src.has_err);
        ptx::cp_async_commit();
    }

    const int lane = tid % 32, g = lane / 4, t = lane % 4;
    tile.qw0 = q0 + wg * 64;
    tile.wg_blocks = tile.qw0 < tile.lq
                         ? static_cast<uint32_t>((keys_seen_by(min64(tile.qw0 + 64, tile.lq) - 1) + T::kBlockN - 1) / T::kBlockN)
                         : 0;
    const int64_t row[2] = {tile.qw0 + (tid / 32) * 16 + g, tile.qw0 + (tid / 32) * 16 + g + 8};
    float o[T::kOTiles * 4];
#pragma unroll
    for (int i = 0; i < T::kOTiles * 4; ++i) o[i] = 0.f;
    Rows rows;
    const float p_offset = T::kVB == 1 ? alg::kFp8POffset : 0.f;
    consume<T, kLse>(p, tile, pipe, wg, tid, row, o, rows, p_offset);
    // Read before the epilogue's barrier and stores, which hide their latency (read after them,
    // every consumer warp's last instruction waited on them: docs/PERF.md; before the key loop
    // the register they take made it spill).
    const uint32_t nonfinite = nonfinite_flags(p, tile.b, tile.h);

    float* v_scale_smem = columns;
    float* v_offset_smem = columns + DP;
    if (column_thread) {
        ptx::cp_async_wait<0>();
        const VColumnInputs in{columns[threadIdx.x], columns[DP + threadIdx.x], columns[2 * DP + threadIdx.x]};
        v_column_factors<T::kVB == 1>(p, in, tile.lkv, v_scale_smem[threadIdx.x], v_offset_smem[threadIdx.x]);
    }
    ptx::named_barrier_sync(kColumnsBarrier, T::kConsumers);

    // Epilogue (§6): the row sums of the quad, then out = acc/l · v_scale + v_offset.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        rows.l_exact[r] += __shfl_xor_sync(0xffffffffu, rows.l_exact[r], 1);
        rows.l_exact[r] += __shfl_xor_sync(0xffffffffu, rows.l_exact[r], 2);
    }
    auto acc = [&](int r, int ot, int e) { return o[4 * ot + 2 * r + e]; };
    if (staged_output(p)) {
        store_output_staged<T, kBf16>(p, tile.b, tile.h, tile.s, row, lane, rows.m, rows.l, v_scale_smem, v_offset_smem,
                                      pipe.stages + threadIdx.x / 32 * Staging<T>::kWarpBytes, acc);
        store_lse_and_nonfinite(p, tile.b, tile.h, tile.s, row, t, rows.m, rows.l, rows.l_exact, p_offset, kLse, true,
                                nonfinite);
    } else {
        store_rows<kBf16, T::kOTiles>(p, tile.b, tile.h, tile.s, row, t, rows.m, rows.l, rows.l_exact, p_offset, kLse,
                                      true, v_scale_smem, v_offset_smem, nonfinite, acc);
    }
}

// cuTensorMapEncodeTiled from the driver, found once (the library does not link libcuda).
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void* f = nullptr;
        cudaDriverEntryPointQueryResult found{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess)
            f = nullptr;
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
    }();
    return fn;
}

// A 2-D byte tensor of `rows` rows `row_bytes` apart, read in boxes of box_cols x box_rows.
inline bool byte_map(CUtensorMap* map, const void* base, uint64_t cols, uint64_t rows, uint64_t row_bytes,
                     uint32_t box_cols, uint32_t box_rows, int swizzle_bytes) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return false;
    const cuuint64_t dims[2] = {cols, rows};
    const cuuint64_t strides[1] = {row_bytes};
    const cuuint32_t box[2] = {box_cols, box_rows};
    const cuuint32_t unit[2] = {1, 1};
    const CUtensorMapSwizzle swizzle = swizzle_bytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
    return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box, unit,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The tile scheduler is the grid: (query tile, head, sequence), causal tiles longest first
// (query_tile in common.cuh).
template <class T, bool kBf16>
bool launch(const Params& p, cudaStream_t stream) {
    // Tile coordinates are 32-bit: Q and K rows, Vᵀ rows (channels) and Vᵀ columns (key bytes).
    const int64_t q_cells = static_cast<int64_t>(p.heads_q) * p.q_rows, kv_cells = static_cast<int64_t>(p.heads_kv) * p.kv_rows;
    if (q_cells >= (int64_t{1} << 31) || kv_cells >= (int64_t{1} << 31) || int64_t{p.heads_kv} * T::kDp >= (int64_t{1} << 31) ||
        p.kv_rows * T::kVB >= (int64_t{1} << 31))
        return false;
    CUtensorMap q_map, k_map, v_map;
    // Boxes of Q and K are one swizzle span of their rows (d256: half a row), of Vᵀ a P·V
    // half's channels (d256: 128 of 256).
    if (!byte_map(&q_map, p.q_codes, T::kDp, static_cast<uint64_t>(q_cells), T::kDp, T::kQKSwizzle, T::kTileQ, T::kQKSwizzle) ||
        !byte_map(&k_map, p.k_codes, T::kDp, static_cast<uint64_t>(kv_cells), T::kDp, T::kQKSwizzle, T::kBlockN, T::kQKSwizzle) ||
        !byte_map(&v_map, p.v_codes, static_cast<uint64_t>(p.kv_rows) * T::kVB, static_cast<uint64_t>(p.heads_kv) * T::kDp,
                  static_cast<uint64_t>(p.kv_rows) * T::kVB, 128, T::kPvHalfChannels, T::kVSwizzle))
        return false;
    auto kernel = p.lse ? attention_kernel<T, kBf16, true> : attention_kernel<T, kBf16, false>;
    // Once per device and instance: the attribute persists, and the call costs host time.
    static std::atomic<bool> configured[2][64];
    std::atomic<bool>* done = configured[p.lse ? 1 : 0];
    int device = 0;
    cudaGetDevice(&device);
    if (device >= 64 || !done[device].load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kBytes) == cudaSuccess &&
            device < 64)
            done[device].store(true, std::memory_order_relaxed);
    }
    const int64_t tiles = (p.max_len_q + T::kTileQ - 1) / T::kTileQ;
    if (tiles == 0) return true;
    kernel<<<dim3(static_cast<unsigned>(tiles), p.heads_q, p.batch), T::kThreads, T::kBytes, stream>>>(p, q_map, k_map, v_map);
    return true;
}

}  // namespace sm90

// The instance per problem: two consumer warpgroups (128-row tiles, 240 registers each); at
// d64 with FP8 P·V three (192-row tiles), whose accumulators fit 160 registers nearly
// (docs/PERF.md: the A/B of 2026-12-06).
// d256 has FP8 P·V only (P·V in two channel halves, kernels.py's WGMMA_FP16_PV_HEAD_DIMS):
// false for FP16 P·V there, which the dispatch never asks for (backend.cu, sm90_takes).
template <int DP, bool kBf16>
bool launch_attention_wgmma(const Params& p, cudaStream_t stream) {
    if constexpr (DP > 128) {
        return p.pv_fp8 && sm90::launch<sm90::Traits<DP, 2, true>, kBf16>(p, stream);
    } else {
        if (!p.pv_fp8) return sm90::launch<sm90::Traits<DP, 2, false>, kBf16>(p, stream);
        if constexpr (DP <= 64) return sm90::launch<sm90::Traits<DP, 3, true>, kBf16>(p, stream);
        return sm90::launch<sm90::Traits<DP, 2, true>, kBf16>(p, stream);
    }
}

// A channel cut (kernels.py's WGMMA_CHANNEL_CUTS): DP's layout, its first C channels computed,
// for head dims up to C; FP8 P·V only, as at d256.
template <int DP, int C, bool kBf16>
bool launch_attention_wgmma_cut(const Params& p, cudaStream_t stream) {
    return p.pv_fp8 && p.head_dim <= C && sm90::launch<sm90::Traits<DP, 2, true, C>, kBf16>(p, stream);
}

}  // namespace sageattn::cuda
