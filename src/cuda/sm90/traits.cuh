// The sm_90a attention kernel's tile sizes and shared-memory layout, in one place.
// Every size the kernel, its producer and its launcher use comes from here, and an
// instance that cannot fit fails to compile.
#pragma once

#include "cuda/mma_config.hpp"
#include "cuda/params.hpp"

namespace sageattn::cuda::sm90 {

// DP: padded head_dim (64 or 128). kWarpgroups: consumer warpgroups of 64 query rows.
// kFp8: FP8 (else FP16) P·V.
template <int DP, int kWarpgroups, bool kFp8>
struct Traits {
    static constexpr int kDp = DP;
    static constexpr int kBlockN = kWideBlockKv;  // keys per block: the §6 softmax step of this kernel
    static constexpr int kConsumers = 128 * kWarpgroups;
    static constexpr int kThreads = kConsumers + 128;  // and one producer warpgroup
    // The producer gives its registers to the consumers (setmaxnreg): 24 + 2·240 or 24 + 3·160.
    static constexpr int kProducerRegs = 24;
    static constexpr int kConsumerRegs = (65536 / 128 - kProducerRegs) / kWarpgroups / 8 * 8;
    static constexpr int kTileQ = 64 * kWarpgroups;
    // Where registers are short, the next block's Q·Kᵀ is issued after the fold, not before it:
    // three warpgroups (160 registers) and FP16 P̃ at d128 (32 registers) cannot hold S_{j+1}
    // (64) beside O and the block's P·V; both spilled in the fold (docs/PERF.md).
    static constexpr bool kScoresAfterFold = kConsumerRegs < 200 || (!kFp8 && DP > 64);

    // Q·Kᵀ: INT8 wgmma m64n128k32, Q and K rows of DP bytes, swizzled by their length.
    static constexpr int kQKSwizzle = DP;
    static constexpr int kQKSteps = DP / 32;
    static constexpr int kSTiles = kBlockN / 8;  // n8 tiles of a block's scores
    // P·V: Vᵀ rows (channels) of 128 bytes, 128-byte swizzle: one tile of 128 FP8 keys or two
    // of 64 FP16 keys. Under each tile's DP rows sit 8 rows of ones, so the last 8 columns of
    // P·V are the row sums of the rounded P̃ (§6's l).
    static constexpr int kVB = kFp8 ? 1 : 2;
    static constexpr int kVSwizzle = 128;
    static constexpr int kVTiles = kFp8 ? 1 : 2;
    static constexpr int kVTileKeys = kBlockN / kVTiles;
    static constexpr int kPvN = DP + 8;
    static constexpr int kPvK = kFp8 ? 32 : 16;  // keys per P·V MMA step (32 bytes of a Vᵀ row)
    static constexpr int kPvSteps = kBlockN / kPvK;
    static constexpr int kPvStepsPerTile = kPvSteps / kVTiles;
    // P·V of a block is issued in commit groups, each as soon as its keys of P̃ are packed, so
    // the tensor cores start on it while the softmax goes on: FP8 one group per k32 step (+12 %
    // at d128 16k), FP16 at d128 four of 32 keys (+7 %, with kScoresAfterFold); FP16 at d64,
    // which does not spill, stays with one group and S_{j+1} before the fold (docs/PERF.md).
    static constexpr int kPvGroups = kFp8 ? kPvSteps : (DP > 64 ? 4 : 1);
    static constexpr int kPvStepsPerGroup = kPvSteps / kPvGroups;
    static constexpr int kSTilesPerGroup = kSTiles / kPvGroups;  // the score tiles whose P̃ a group reads
    static constexpr int kOTiles = DP / 8;     // n8 tiles of O
    static constexpr int kPvTiles = kPvN / 8;  // ... and of P·V, with the row sums'

    // Shared memory: Q codes, then kStages stages of [K codes | Vᵀ tiles], then the barriers and
    // the epilogue's per-channel V statistics and factors. Swizzled tiles start on 1024-byte boundaries.
    static constexpr int kQBytes = kTileQ * DP;
    static constexpr int kKBytes = kBlockN * DP;
    static constexpr int kVTileBytes = kPvN * 128;
    static constexpr int kVBytes = kVTiles * kVTileBytes;
    static constexpr int kStageBytes = (kKBytes + kVBytes + 1023) / 1024 * 1024;
    static constexpr int kSmemLimit = kCtaSmem227K;  // dynamic shared memory a CTA may have on sm_90
    static constexpr int kAlignSlack = 1024;        // the dynamic base is aligned up to 1024 by hand
    static constexpr int kColumnBytes = 3 * DP * 4;  // V's amax, sum and error per channel, then its factors
    static constexpr int kMaxStages = 8;
    static constexpr int kRoomStages =
        (kSmemLimit - kAlignSlack - kQBytes - kColumnBytes - (2 * kMaxStages + 1) * 8) / kStageBytes;
    static constexpr int kStages = kRoomStages < kMaxStages ? kRoomStages : kMaxStages;
    static constexpr int kStagesOffset = kQBytes;
    static constexpr int kBarriersOffset = kStagesOffset + kStages * kStageBytes;  // full[], empty[], q
    static constexpr int kColumnsOffset = kBarriersOffset + (2 * kStages + 1) * 8;
    static constexpr int kBytes = kColumnsOffset + kColumnBytes + kAlignSlack;

    static_assert(DP == 64 || DP == 128, "Q and K rows are one 64- or 128-byte swizzle span");
    static_assert(kWarpgroups >= 2 && kWarpgroups <= 3, "two or three consumer warpgroups");
    static_assert(kConsumerRegs >= 152, "registers for O, a block's P·V and P̃");
    static_assert(kBlockN % kPvK == 0 && kPvSteps % kVTiles == 0, "whole P·V steps per Vᵀ tile");
    static_assert(kPvSteps % kPvGroups == 0, "whole P·V steps per group");
    static_assert(kVTileKeys * kVB == kVSwizzle, "a Vᵀ row of a tile is one swizzle span");
    static_assert(kKBytes % 1024 == 0 && kVTileBytes % 1024 == 0 && kQBytes % 1024 == 0, "tiles on 1024-byte boundaries");
    static_assert(kStages >= 2, "at least double buffering");
    static_assert(kConsumers >= DP, "one V channel's epilogue factors a consumer thread");
    static_assert(kBytes <= kSmemLimit, "shared memory of one CTA on sm_90");
};

}  // namespace sageattn::cuda::sm90
