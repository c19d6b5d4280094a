// The sm_90a attention kernel's tile sizes and shared-memory layout, in one place.
// Every size the kernel, its producer and its launcher use comes from here, and an
// instance that cannot fit fails to compile.
#pragma once

#include "cuda/mma_config.hpp"
#include "cuda/params.hpp"

namespace sageattn::cuda::sm90 {

// DP: padded head_dim (64, 128 or 256; 256 with FP8 P·V only), the layout of the codes in the
// workspace. kWarpgroups: consumer warpgroups of 64 query rows. kFp8: FP8 (else FP16) P·V.
// C: the channels computed, DP unless the registry cuts it (kernels.py's WGMMA_CHANNEL_CUTS):
// for head dims up to C the channels from C on hold zero codes, so Q·Kᵀ takes C / 32 K steps
// and P·V and O have C channels (d192 on the d256 layout: P·V in one pass of N = 200).
template <int DP, int kWarpgroups, bool kFp8, int C = DP>
struct Traits {
    static constexpr int kDp = DP;
    static constexpr int kChannels = C;
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
    // At d256 too: O alone is 128 registers (docs/PERF.md, head_dim 256).
    static constexpr bool kScoresAfterFold = kConsumerRegs < 200 || (!kFp8 && DP > 64) || C > 128;

    // Q·Kᵀ: INT8 wgmma m64n128k32, Q and K rows of DP bytes. A copy-engine box and a swizzle
    // span are at most 128 bytes, so rows of up to 128 bytes are one span, swizzled by their
    // length, and longer ones (d256) are kQKHalves spans of 128 bytes, each its own box and its
    // own tile, one after the other: [half][rows][128 B]. K step ks (32 bytes) reads half
    // ks / kQKStepsPerHalf at 32·(ks % kQKStepsPerHalf) bytes into its rows.
    static constexpr int kQKSwizzle = DP < 128 ? DP : 128;
    static constexpr int kQKHalves = DP / kQKSwizzle;
    static constexpr int kQKSteps = C / 32;  // of the kQKHalves · kQKStepsPerHalf a row holds
    static constexpr int kQKStepsPerHalf = kQKSwizzle / 32;
    // What K step ks adds to the descriptor of a Q or K tile whose halves are `half_bytes` apart
    // (descriptors count 16-byte units): 2·ks below d256, as the steps stay in one row span.
    static constexpr uint32_t qk_step_desc(int ks, int half_bytes) {
        return static_cast<uint32_t>(((ks / kQKStepsPerHalf) * half_bytes + (ks % kQKStepsPerHalf) * 32) / 16);
    }
    static constexpr int kSTiles = kBlockN / 8;  // n8 tiles of a block's scores
    // P·V: Vᵀ rows (channels) of 128 bytes, 128-byte swizzle: one tile of 128 FP8 keys or two
    // of 64 FP16 keys. wgmma's N is at most 256, so above 128 channels P·V runs in kPvHalves
    // channel halves, one after the other into one accumulator. Under each half's channels sit
    // 8 rows of ones, so the last 8 columns of its P·V are the row sums of the rounded P̃ (§6's
    // l, taken from half 0). A tile is [channels of half 0][ones][channels of half 1][ones]:
    // each half is contiguous, and both are one MMA shape, so that half 1 takes half 0's
    // accumulator registers (with an N of 128 for half 1 ptxas spilled 540 bytes, with 136 for
    // both 28 to 132: docs/PERF.md).
    static constexpr int kVB = kFp8 ? 1 : 2;
    static constexpr int kVSwizzle = 128;
    static constexpr int kVTiles = kFp8 ? 1 : 2;
    static constexpr int kVTileKeys = kBlockN / kVTiles;
    static constexpr int kMaxPvN = 256;  // wgmma's largest N
    static constexpr int kPvHalves = C + 8 <= kMaxPvN ? 1 : 2;
    static constexpr int kPvHalfChannels = C / kPvHalves;
    static constexpr int kPvN = kPvHalfChannels + 8;  // N of each half
    static constexpr int kOnesRow = kPvHalfChannels;  // a half's first row of ones, from its start
    static constexpr int kPvHalf1Row = kPvN;          // half 1's first row in a Vᵀ tile
    static constexpr int kPvK = kFp8 ? 32 : 16;  // keys per P·V MMA step (32 bytes of a Vᵀ row)
    static constexpr int kPvSteps = kBlockN / kPvK;
    static constexpr int kPvStepsPerTile = kPvSteps / kVTiles;
    // P·V of a block is issued in commit groups, each as soon as its keys of P̃ are packed, so
    // the tensor cores start on it while the softmax goes on: FP8 one group per k32 step (+12 %
    // at d128 16k), FP16 at d128 four of 32 keys (+7 %, with kScoresAfterFold); FP16 at d64,
    // which does not spill, stays with one group and S_{j+1} before the fold (docs/PERF.md).
    // In halves (d256), one group per half: half 0 once P̃ is packed, half 1 after its fold. Above
    // 128 channels in one pass (a cut to 192) also one group: the scores (64 registers) are dead
    // before its accumulators (C / 2 + 4) come alive, beside O (C / 2) and P̃.
    static constexpr int kPvGroups = kPvHalves > 1 || C > 128 ? 1 : kFp8 ? kPvSteps : (DP > 64 ? 4 : 1);
    static constexpr int kPvStepsPerGroup = kPvSteps / kPvGroups;
    static constexpr int kSTilesPerGroup = kSTiles / kPvGroups;  // the score tiles whose P̃ a group reads
    static constexpr int kOTiles = C / 8;                       // n8 tiles of O
    static constexpr int kPvHalfOTiles = kPvHalfChannels / 8;   // ... of one P·V half's channels
    static constexpr int kPvTiles = kPvN / 8;  // n8 tiles of the P·V accumulator (half 0, with the row sums')

    // Shared memory: Q codes, then kStages stages of [K codes | Vᵀ tiles], then each stage's K
    // scales, the barriers, the epilogue's per-channel V statistics and factors, and the §5
    // verdict. Swizzled tiles start on 1024-byte boundaries.
    static constexpr int kQBytes = kTileQ * DP;
    static constexpr int kKBytes = kBlockN * DP;
    static constexpr int kQHalfBytes = kTileQ * kQKSwizzle;  // one 128-byte half of Q's rows (d256)
    static constexpr int kKHalfBytes = kBlockN * kQKSwizzle;
    static constexpr int kVTileBytes = kPvHalves * kPvN * 128;
    static constexpr int kVBoxBytes = kPvHalfChannels * 128;  // one copy: a half's channels of a tile
    static constexpr int kVBytes = kVTiles * kVTileBytes;
    static constexpr int kStageBytes = (kKBytes + kVBytes + 1023) / 1024 * 1024;
    static constexpr int kSmemLimit = kCtaSmem227K;  // dynamic shared memory a CTA may have on sm_90
    static constexpr int kAlignSlack = 1024;        // the dynamic base is aligned up to 1024 by hand
    static constexpr int kColumnBytes = 3 * DP * 4;  // V's amax, sum and error per channel, then its factors
    static constexpr int kMaxStages = 8;
    static constexpr int kFlagBytes = 16;  // the CTA's §5 verdict, written before its first barrier
    // A block's K scales (§3: kKThreadGroups a 64-key half), copied in with its codes, one slot a stage.
    static constexpr int kKScaleBytes = (kBlockN / kBlockKv) * alg::kKThreadGroups * 4;
    static constexpr int kRoomStages =
        (kSmemLimit - kAlignSlack - kQBytes - kColumnBytes - kFlagBytes - kMaxStages * kKScaleBytes -
         (2 * kMaxStages + 1) * 8) / kStageBytes;
    static constexpr int kStages = kRoomStages < kMaxStages ? kRoomStages : kMaxStages;
    static constexpr int kStagesOffset = kQBytes;
    static constexpr int kKScalesOffset = kStagesOffset + kStages * kStageBytes;   // [kStages][kKScaleBytes]
    static constexpr int kBarriersOffset = kKScalesOffset + kStages * kKScaleBytes;  // full[], empty[], q
    static constexpr int kColumnsOffset = kBarriersOffset + (2 * kStages + 1) * 8;
    static constexpr int kFlagOffset = kColumnsOffset + kColumnBytes;
    static constexpr int kBytes = kFlagOffset + kFlagBytes + kAlignSlack;

    static_assert(DP == 64 || DP == 128 || DP == 256, "Q and K rows of one 64- or 128-byte swizzle span, or two of 128");
    static_assert(kQKHalves * kQKSwizzle == DP && kQKSteps <= kQKHalves * kQKStepsPerHalf && C % 32 == 0,
                  "whole K steps, within the row");
    static_assert(C == DP || (C > 128 && DP > 128 && kFp8), "a cut only of d256, to more than 128 channels, FP8 P·V");
    static_assert(kQKHalves == 1 || kQKSwizzle == 128, "Q and K rows in several halves only of 128 bytes");
    static_assert(DP > 128 || qk_step_desc(kQKSteps - 1, kKHalfBytes) == 2 * (kQKSteps - 1),
                  "one row span: K step ks is 2·ks in the descriptor");
    static_assert(kQKHalves == 1 || (qk_step_desc(kQKStepsPerHalf, kKHalfBytes) == kKHalfBytes / 16 &&
                                     qk_step_desc(2 * kQKStepsPerHalf - 1, kQHalfBytes) == (kQHalfBytes + kQKSwizzle - 32) / 16),
                  "d256: K steps 4..7 read the second half from its start");
    static_assert(kQHalfBytes % 1024 == 0 && kKHalfBytes % 1024 == 0 && (64 * kQKSwizzle) % 1024 == 0,
                  "every half of Q and K, and each warpgroup's Q rows, on a 1024-byte boundary (128-byte swizzle)");
    static_assert(kPvHalves * kPvHalfChannels == C && kPvN <= kMaxPvN && kPvN % 8 == 0,
                  "P·V halves within wgmma's N");
    static_assert(kPvHalves == 1 || (kFp8 && kWarpgroups == 2),
                  "P·V in halves (d256) with FP8 P·V and two consumer warpgroups only (registers, shared memory)");
    static_assert(kPvHalves == 1 || (kPvHalf1Row * 128) % 1024 == 0, "half 1 of a Vᵀ tile on a 1024-byte boundary");
    static_assert(kPvHalves == 1 || kScoresAfterFold, "d256: no registers for S_{j+1} beside O and a P·V half");
    static_assert(kPvHalves == 1 || kPvGroups == 1, "d256: one commit group per P·V half");
    static_assert(kVTiles * kVBoxBytes * kPvHalves == kVTiles * C * 128, "the copies fill every channel row of the tiles");
    static_assert(kWarpgroups >= 2 && kWarpgroups <= 3, "two or three consumer warpgroups");
    static_assert(kConsumerRegs >= 152, "registers for O, a block's P·V and P̃");
    static_assert(kBlockN % kPvK == 0 && kPvSteps % kVTiles == 0, "whole P·V steps per Vᵀ tile");
    static_assert(kPvSteps % kPvGroups == 0, "whole P·V steps per group");
    static_assert(kVTileKeys * kVB == kVSwizzle, "a Vᵀ row of a tile is one swizzle span");
    static_assert(kKBytes % 1024 == 0 && kVTileBytes % 1024 == 0 && kQBytes % 1024 == 0, "tiles on 1024-byte boundaries");
    static_assert(kKScaleBytes % 16 == 0 && kKScalesOffset % 16 == 0, "K scales: whole 16-byte bulk copies");
    static_assert(kStages >= 2, "at least double buffering");  // d256: K 32 KB + Vᵀ 34 KB a stage, Q 32 KB, 2 stages
    static_assert(kConsumers >= DP, "one V channel's epilogue factors a consumer thread");
    static_assert(kBytes <= kSmemLimit, "shared memory of one CTA on sm_90");
};

}  // namespace sageattn::cuda::sm90
