// The sm_90a kernel's consumer warpgroup: 64 query rows against every key block the
// producer delivers. Per 128-key block j: S_j = Q·K_jᵀ (INT8 wgmma m64n128k32), the
// softmax step of §6 (softmax.cuh), P̃_j·V_j (FP8 or FP16 wgmma, P̃ from registers) into a
// fresh fp32 accumulator, folded into O as O·alpha + it ("fp32+fp32", §10).
//
// Schedule: P·V_j is issued in parts while the softmax packs P̃ (with FP8, each 32 keys'
// MMA as soon as its P̃ is in), and S_{j+1} right after P·V_j, so Q·Kᵀ of the next block
// runs while the warpgroup folds this one, and its softmax starts on scores that are
// (mostly) in; the other warpgroups' MMAs fill the tensor cores during its softmax. With
// three warpgroups S_{j+1} follows the fold (Traits::kScoresAfterFold: registers).
// At d256 P·V runs in two channel halves into one accumulator, each folded before the next
// is issued, and S_{j+1} follows the second fold.
// docs/PERF.md has the schedules this one was measured against.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/ptx/barrier.cuh"
#include "cuda/ptx/mbarrier.cuh"
#include "cuda/ptx/wgmma.cuh"
#include "cuda/sm90/producer.cuh"
#include "cuda/sm90/softmax.cuh"

namespace sageattn::cuda::sm90 {

// What a consumer warpgroup needs of its tile.
struct Tile {
    int b, h;
    Seq s;
    int64_t lq, lkv;
    int64_t qw0;        // the warpgroup's first query row
    uint32_t blocks;     // key blocks the CTA's producer delivers
    uint32_t wg_blocks;  // ... of which this warpgroup sees any key (causal: fewer for upper rows)
};

// Softmax turns: two consumer warpgroups run their exponentials one at a time (warpgroup w
// waits on named barrier kTurnBarrier + w, then arrives on the other's), so that neither
// shares the special-function unit with the other's exponentials and each one's chain
// (next scores, fold, row maxima) runs beside the other's: +3 to +6 % at 1k-4k and causal,
// +10 % with FP16 P·V, within noise at 16k; three warpgroups (d64) lost 5 % in a ring and
// take no turns (docs/PERF.md). Both warpgroups take one turn a block of the tile, a block
// a warpgroup has no keys for being a turn without work, so that each barrier sees one
// arrival per wait.
// The kernel's named barriers: 0 is __syncthreads'; the consumer warpgroups meet on
// kColumnsBarrier before the epilogue (attention_wgmma.cuh), and take turns on kTurnBarrier
// and the one after it.
constexpr int kColumnsBarrier = 1;
constexpr int kTurnBarrier = 2;
template <int kWarpgroups>
struct Turns {
    int wg;
    uint32_t turns;
    static constexpr bool kOn = kWarpgroups == 2;
    static constexpr int kThreads = 2 * 128;
    // The first turn is warpgroup 0's.
    __device__ void start() const {
        if (kOn && wg == 1 && turns > 0) ptx::named_barrier_arrive(kTurnBarrier, kThreads);
    }
    __device__ void wait() const {
        if (kOn) ptx::named_barrier_sync(kTurnBarrier + wg, kThreads);
    }
    // Warpgroup 1's last pass would have no wait to meet.
    __device__ void pass(uint32_t turn) const {
        if (kOn && !(wg == 1 && turn + 1 == turns)) ptx::named_barrier_arrive(kTurnBarrier + (wg ^ 1), kThreads);
    }
};

template <class T, bool kLse>
__device__ __forceinline__ void consume(const Params& p, const Tile& tile, const Pipeline& pipe, int wg, int tid,
                                        const int64_t (&row)[2], float (&o)[T::kOTiles * 4], Rows& rows,
                                        float p_offset) {
    const int t = tid % 4;
    float q_scale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r)
        q_scale[r] = row[r] < tile.lq ? p.q_scale[tile.h * p.q_rows + tile.s.pad_q + row[r]] : 0.f;
    // Q: [half][row][kQKSwizzle bytes]; the warpgroup's 64 rows of each half.
    const uint64_t q_desc = ptx::make_desc<T::kQKSwizzle>(pipe.q_smem + wg * 64 * T::kQKSwizzle);

    // Block j's K scales for this thread's columns (K group t of each 64-key half), from its
    // stage (the producer copies them in with the codes): read only between wait_full(j) and release(j).
    auto k_scales = [&](uint32_t j, float (&ks)[2]) {
        static_assert(T::kBlockN / kBlockKv == 2, "one K scale per 64-key half");
        const float* at = pipe.k_scale_slot<T>(j) + t;
        ks[0] = at[0], ks[1] = at[alg::kKThreadGroups];
    };
    // Descriptors depend on warp-uniform values only (uniform registers); computed before the
    // wgmma fence, since an operand defined between the MMAs of one commit group serializes them.
    // The first MMA of each group overwrites its accumulators (`_fresh`): nothing keeps the
    // previous block's values alive across the loop.
    auto issue_s = [&](int32_t (&acc)[T::kSTiles * 4], uint32_t j) {
        const uint64_t k_desc = ptx::make_desc<T::kQKSwizzle>(pipe.k_tile<T>(j));
        ptx::wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < T::kQKSteps; ++ks) {
            if (ks == 0) ptx::wgmma_s8_ss_fresh<T::kBlockN>(acc, q_desc, k_desc);
            else
                ptx::wgmma_s8_ss<T::kBlockN>(acc, q_desc + T::qk_step_desc(ks, T::kQHalfBytes),
                                             k_desc + T::qk_step_desc(ks, T::kKHalfBytes));
        }
        ptx::wgmma_commit();
    };
    // P·V group g of block j, channel half `half` (a std::integral_constant): its steps of P̃
    // (registers) times Vᵀ (shared memory). Half 1 (d256) goes into the registers of half 0
    // once half 0 is folded (both start fresh; the shape is the same).
    auto issue_pv = [&](float (&ob)[T::kPvTiles * 4], const uint32_t (&a)[T::kPvSteps][4], uint32_t j, int g,
                        auto half) {
        constexpr int kHalf = decltype(half)::value;
        static_assert(kHalf < T::kPvHalves && (kHalf == 0 || T::kVB == 1), "a P·V half of this instance");
        uint64_t v_desc[T::kVTiles];
#pragma unroll
        for (int vt = 0; vt < T::kVTiles; ++vt)
            v_desc[vt] = ptx::make_desc<T::kVSwizzle>(pipe.v_tile<T>(j, vt) + kHalf * T::kPvHalf1Row * 128);
        ptx::wgmma_fence();
#pragma unroll
        for (int ks = g * T::kPvStepsPerGroup; ks < (g + 1) * T::kPvStepsPerGroup; ++ks) {
            const uint64_t d = v_desc[ks / T::kPvStepsPerTile] + 2 * (ks % T::kPvStepsPerTile);
            if constexpr (T::kVB == 1) {
                if (ks == 0) ptx::wgmma_e4m3_rs_fresh<T::kPvN>(ob, a[ks], d);
                else ptx::wgmma_e4m3_rs<T::kPvN>(ob, a[ks], d);
            } else {
                if (ks == 0) ptx::wgmma_f16_rs_fresh<T::kPvN>(ob, a[ks], d);
                else ptx::wgmma_f16_rs<T::kPvN>(ob, a[ks], d);
            }
        }
        ptx::wgmma_commit();
    };
    // O = O·alpha + this block's P·V, channel half `half` of it (all of it below d256); its
    // last 8 columns are the rounded P̃'s row sums (§6's l), taken from half 0.
    auto fold = [&](const float (&ob)[T::kPvTiles * 4], const float (&alpha)[2], auto half) {
        constexpr int kHalf = decltype(half)::value;
        if constexpr (kHalf == 0) {
            rows.l[0] = rows.l[0] * alpha[0] + ob[4 * T::kPvHalfOTiles + 0];
            rows.l[1] = rows.l[1] * alpha[1] + ob[4 * T::kPvHalfOTiles + 2];
        }
#pragma unroll
        for (int i = 0; i < T::kPvHalfOTiles; ++i) {
            const int ot = kHalf * T::kPvHalfOTiles + i;
            o[4 * ot + 0] = o[4 * ot + 0] * alpha[0] + ob[4 * i + 0];
            o[4 * ot + 1] = o[4 * ot + 1] * alpha[0] + ob[4 * i + 1];
            o[4 * ot + 2] = o[4 * ot + 2] * alpha[1] + ob[4 * i + 2];
            o[4 * ot + 3] = o[4 * ot + 3] * alpha[1] + ob[4 * i + 3];
        }
    };
    using Half0 = std::integral_constant<int, 0>;
    using Half1 = std::integral_constant<int, 1>;
    auto wait_full = [&](uint32_t j) { ptx::mbarrier_wait(pipe.full + j % T::kStages, pipe.phase<T>(j)); };
    auto release = [&](uint32_t j) { ptx::mbarrier_arrive(pipe.empty + j % T::kStages); };
    // Blocks wholly inside every bound skip visibility (§10); causal: the warpgroup's first row
    // sees keys up to qw0 + lkv − lq, and every later row more.
    const bool plain = p.mask_type == SAGEATTN_MASK_NONE && p.scale > 0.f && tile.qw0 + 64 <= tile.lq;
    auto interior = [&](int64_t j0) {
        return plain && j0 + T::kBlockN <= tile.lkv && (!p.causal || j0 + T::kBlockN - 1 <= tile.qw0 + tile.lkv - tile.lq);
    };

    ptx::mbarrier_wait(pipe.q_full, 0);
    int32_t acc[T::kSTiles * 4];
    float ob[T::kPvTiles * 4];
    uint32_t a[T::kPvSteps][4];
    const uint32_t n = tile.wg_blocks;
    // One block, S_j already issued; `next` (a compile-time bool) says whether a block follows.
    // The last block is peeled off the loop so that every MMA issue and wait is unconditional:
    // the compiler then tracks which accumulators each wait completes (with the issue of S_{j+1}
    // inside a branch it would wait for it too before the fold).
    // Block j + 1's K scales are read right after its scores are issued: the fold hides their
    // latency (two shared-memory loads).
    // Whether block j + 1 is interior, worked out beside its scores' MMAs: left to the block's
    // start, its 64-bit bounds tests came after the wait for the scores and opened the block's chain.
    float ks_next[2];
    bool in_next;
    auto issue_scores = [&](uint32_t j) {
        wait_full(j);
        issue_s(acc, j);
        k_scales(j, ks_next);
        in_next = interior(int64_t{j} * T::kBlockN);
    };
    const Turns<T::kConsumers / 128> turns{wg, tile.blocks};
    turns.start();
    auto step = [&](uint32_t j, auto next) {
        float ks[2] = {ks_next[0], ks_next[1]}, f[2][2], alpha[2];
        const bool in = in_next;
        ptx::wgmma_wait<0>();
        ptx::fence_operand(acc);
#pragma unroll
        for (int r = 0; r < 2; ++r) f[r][0] = q_scale[r] * ks[0], f[r][1] = q_scale[r] * ks[1];
        block_softmax<T, kLse>(p, tile.b, tile.h, row, t, int64_t{j} * T::kBlockN, tile.lq, tile.lkv, in,
                               acc, f, p_offset, rows, alpha, a, [&](int g) { issue_pv(ob, a, j, g, Half0{}); },
                               [&] { turns.wait(); });
        turns.pass(j);
        if constexpr (T::kPvHalves == 2) {
            // d256: half 0 (issued by the softmax, one group) is folded before half 1 is issued
            // into the same registers; S_{j+1} follows the second fold (kScoresAfterFold).
            ptx::wgmma_wait<0>();
            ptx::fence_operand(ob);
            fold(ob, alpha, Half0{});
            ptx::fence_operand(o);  // the fold reads ob before half 1 overwrites it
            issue_pv(ob, a, j, 0, Half1{});
            ptx::wgmma_wait<0>();
            ptx::fence_operand(ob);
            ptx::fence_operand(a);
            release(j);
            fold(ob, alpha, Half1{});
            if constexpr (decltype(next)::value) issue_scores(j + 1);
            return;
        }
        if constexpr (decltype(next)::value && !T::kScoresAfterFold) {
            issue_scores(j + 1);
            ptx::wgmma_wait<1>();
        } else {
            ptx::wgmma_wait<0>();
        }
        ptx::fence_operand(ob);
        ptx::fence_operand(a);
        release(j);
        fold(ob, alpha, Half0{});
        if constexpr (decltype(next)::value && T::kScoresAfterFold) issue_scores(j + 1);
    };
    if (n > 0) {
        issue_scores(0);
        for (uint32_t j = 0; j + 1 < n; ++j) step(j, std::true_type{});
        step(n - 1, std::false_type{});
    }
    // Blocks the producer delivered that no row of this warpgroup sees: released unread, in
    // order, so that each stage's empty barrier counts every consumer once per use.
    for (uint32_t j = n; j < tile.blocks; ++j) {
        wait_full(j);
        release(j);
        turns.wait();
        turns.pass(j);
    }
}

}  // namespace sageattn::cuda::sm90
