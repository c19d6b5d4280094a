// The sm_90a kernel's copies: one thread drives the bulk tensor copy engine. Q codes of the
// tile arrive once; K codes [key][channel], Vᵀ codes [channel][key] and the K scales of block
// n go into stage n % kStages, the first kStages as soon as the CTA is set up (block 0 during
// it), each later one as soon as every consumer has released its stage (the empty barrier);
// each completes on its stage's full barrier.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "cuda/ptx/mbarrier.cuh"
#include "cuda/ptx/tma.cuh"

namespace sageattn::cuda::sm90 {

// The copy engine's view of the workspace codes (§3, §4): byte tensors, one row a token
// (Q, K) or a channel (Vᵀ). The maps are the kernel's __grid_constant__ parameters: the
// copy engine reads them there, never from a local copy.
struct TensorMaps {
    const CUtensorMap *q, *k, *v;
};

// Where one CTA's copies come from and go to.
struct Pipeline {
    uint8_t* q_smem;      // the tile's Q codes
    uint8_t* stages;      // kStages x [K codes | Vᵀ tiles], then kStages x a block's K scales
    uint64_t* full;       // [kStages]: the stage's copies have landed
    uint64_t* empty;      // [kStages]: every consumer thread is done with the stage
    uint64_t* q_full;

    // Block indices are 32-bit and unsigned (a tile's key blocks number below 2^31, launch()
    // checks the coordinates): the stage and phase of a block then cost a few uniform instructions.
    template <class T>
    __device__ uint8_t* k_tile(uint32_t block) const { return stages + (block % T::kStages) * T::kStageBytes; }
    // Vᵀ tile `tile` of a stage, from the stage's start.
    template <class T>
    static constexpr int v_tile_offset(int tile) { return T::kKBytes + tile * T::kVTileBytes; }
    template <class T>
    __device__ uint8_t* v_tile(uint32_t block, int tile) const { return k_tile<T>(block) + v_tile_offset<T>(tile); }
    template <class T>
    __device__ float* k_scale_slot(uint32_t block) const {
        return reinterpret_cast<float*>(stages + (T::kKScalesOffset - T::kStagesOffset) + (block % T::kStages) * T::kKScaleBytes);
    }
    template <class T>
    __device__ uint32_t phase(uint32_t block) const { return (block / T::kStages) & 1; }
};

// Where the copies of one CTA come from: its Q rows, its first K row, its first key in the
// Vᵀ rows and its first Vᵀ row (channel).
//
// Q rows past the sequence hold whatever follows (or zeros past the workspace): finite codes
// whose scores the visibility rule drops. So do K rows past it (the quantization kernels give
// the rest of a sequence's last block zero codes, so that no Vᵀ byte there is a NaN pattern).
template <class T>
struct Copies {
    TensorMaps maps;
    int32_t q_row;
    int64_t k_row, v_key;
    int32_t v_row;
    const float* k_scale;  // the K scales of the tile's first block (kKScaleBytes a block, 16-byte aligned)

    // Every box of the tile's Q codes, and of block n's K and Vᵀ codes: box(map, x, y, at), with
    // `at` the box's byte offset in the Q tile or in the block's stage. The copies and the
    // prefetch walk the same boxes.
    template <class Box>
    __device__ __forceinline__ void q_boxes(Box box) const {
#pragma unroll
        for (int half = 0; half < T::kQKHalves; ++half) box(maps.q, half * T::kQKSwizzle, q_row, half * T::kQHalfBytes);
    }
    template <class Box>
    __device__ __forceinline__ void block_boxes(uint32_t n, Box box) const {
#pragma unroll
        for (int half = 0; half < T::kQKHalves; ++half)
            box(maps.k, half * T::kQKSwizzle, static_cast<int32_t>(k_row + int64_t{n} * T::kBlockN), half * T::kKHalfBytes);
        // Vᵀ: each P·V half's channels, above (half 0) or below (half 1) the rows of ones.
#pragma unroll
        for (int tile = 0; tile < T::kVTiles; ++tile)
#pragma unroll
            for (int half = 0; half < T::kPvHalves; ++half)
                box(maps.v, static_cast<int32_t>((v_key + int64_t{n} * T::kBlockN + tile * T::kVTileKeys) * T::kVB),
                    v_row + half * T::kPvHalfChannels, Pipeline::v_tile_offset<T>(tile) + half * T::kPvHalf1Row * 128);
    }

    __device__ __forceinline__ void q(const Pipeline& pipe) const {
        ptx::mbarrier_arrive_expect_tx(pipe.q_full, T::kQBytes);
        q_boxes([&](const CUtensorMap* map, int32_t x, int32_t y, int at) {
            ptx::tma_load_2d(pipe.q_smem + at, map, x, y, pipe.q_full);
        });
    }
    // Block n's K and Vᵀ codes and K scales into its stage, which the caller knows to be empty.
    // The scales come with the codes: read from global memory by the consumers, their latency
    // showed at each block's first use (docs/PERF.md).
    __device__ __forceinline__ void block(const Pipeline& pipe, uint32_t n) const {
        uint64_t* full = pipe.full + n % T::kStages;
        ptx::mbarrier_arrive_expect_tx(full, T::kKBytes + T::kVTiles * T::kChannels * 128 + T::kKScaleBytes);
        ptx::bulk_load(pipe.k_scale_slot<T>(n), k_scale + int64_t{n} * (T::kKScaleBytes / 4), T::kKScaleBytes, full);
        uint8_t* stage = pipe.k_tile<T>(n);
        block_boxes(n, [&](const CUtensorMap* map, int32_t x, int32_t y, int at) {
            ptx::tma_load_2d(stage + at, map, x, y, full);
        });
    }
    // The tile's Q codes and block 0's K and Vᵀ codes asked of L2 only: for the CTA that will
    // start after this one on its SM, whose first copies then wait on L2, not DRAM.
    __device__ __forceinline__ void prefetch_start() const {
        const auto prefetch = [](const CUtensorMap* map, int32_t x, int32_t y, int) { ptx::tma_prefetch_2d(map, x, y); };
        q_boxes(prefetch);
        block_boxes(0, prefetch);
    }
    // Block n ≥ kStages goes where block n − kStages was, once every consumer has released it.
    __device__ __forceinline__ void refill(const Pipeline& pipe, uint32_t n) const {
        ptx::mbarrier_wait(pipe.empty + n % T::kStages, pipe.phase<T>(n) ^ 1);
        block(pipe, n);
    }
};

}  // namespace sageattn::cuda::sm90
