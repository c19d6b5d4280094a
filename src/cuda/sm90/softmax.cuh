// §6 for one 128-key block of the sm_90a kernel, per thread: its two rows (g and g + 8
// of its warp's 16) and, in each of the block's 16 n8 tiles, columns 2t and 2t + 1 (the
// wgmma accumulator layout, wgmma.cuh). From the INT8 scores to the running maximum, the
// rescale factor alpha and P̃ packed as the A operand of P·V.
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/ptx/cvt.cuh"

namespace sageattn::cuda::sm90 {

// The thread's row state (§6): running maximum m (log2 units), l from the rounded P̃,
// l_exact from the unrounded one (only for the LSE).
struct Rows {
    float m[2] = {-INFINITY, -INFINITY};
    float l[2] = {0.f, 0.f};
    float l_exact[2] = {0.f, 0.f};
};

// Stores P̃ of tile nt, row r (columns 2t, 2t + 1) into the A registers of P·V: FP8 or FP16
// pairs in the m16n8k32 / m16n8k16 A layout (rows g, g + 8; the V codes are permuted to match, §8).
template <class T>
__device__ __forceinline__ void pack_pair(uint32_t (&a)[T::kPvSteps][4], int nt, int r, float p0, float p1) {
    if constexpr (T::kVB == 1) {
        // k32 step nt / 4 holds tiles (4ks, 4ks + 1) in registers 0 (row g) and 1 (row g + 8),
        // tiles (4ks + 2, 4ks + 3) in registers 2 and 3; the first tile of a pair in the low half.
        const uint32_t pair = ptx::e4m3x2(p0, p1);
        uint32_t& word = a[nt / 4][(nt % 4) / 2 * 2 + r];
        if (nt % 2 == 0) word = pair;
        else word |= pair << 16;
    } else {
        // k16 step nt / 2 holds tile 2ks in registers 0 and 1 (rows g, g + 8), 2ks + 1 in 2 and 3.
        a[nt / 2][(nt % 2) * 2 + r] = ptx::pack_half2(p0, p1);
    }
}

// The maximum of row r's integer products in 64-key half h of the block: the thread's
// two in each of the half's n8 tiles, by three-way maxima (one VIMNMX3 each on sm_90) in a tree.
template <class T>
__device__ __forceinline__ int32_t half_row_max(const int32_t (&acc)[T::kSTiles * 4], int r, int h) {
    constexpr int kHalfTiles = T::kSTiles / 2;
    constexpr int kN = 2 * kHalfTiles;
    static_assert(kN == 16, "a 64-key half: 8 n8 tiles, 16 products a row");
    int32_t v[kN];
#pragma unroll
    for (int i = 0; i < kN; ++i) v[i] = acc[4 * (h * kHalfTiles + i / 2) + 2 * r + (i & 1)];
    const int32_t a = __vimax3_s32(v[0], v[1], v[2]), b = __vimax3_s32(v[3], v[4], v[5]);
    const int32_t c = __vimax3_s32(v[6], v[7], v[8]), d = __vimax3_s32(v[9], v[10], v[11]);
    const int32_t e = __vimax3_s32(v[12], v[13], v[14]);
    return max(__vimax3_s32(a, b, c), __vimax3_s32(d, e, v[15]));
}

// P̃ = exp2(x·g − c) for every score x of the block (g and c per row r and 64-key half h),
// packed straight into the A registers of P·V; `issue(group)` once a P·V group's part is in.
// l_exact sums the unrounded values when the LSE is wanted.
template <class T, bool kLse, class Issue>
__device__ __forceinline__ void exponentials(const float (&x)[T::kSTiles * 4], const float (&g)[2][2],
                                             const float (&c)[2][2], Rows& rows, uint32_t (&a)[T::kPvSteps][4],
                                             const Issue& issue) {
    constexpr int kHalfTiles = T::kSTiles / 2;
#pragma unroll
    for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int h = nt / kHalfTiles;
            const float p0 = ptx::exp2_approx(fmaf(x[4 * nt + 2 * r], g[r][h], -c[r][h]));
            const float p1 = ptx::exp2_approx(fmaf(x[4 * nt + 2 * r + 1], g[r][h], -c[r][h]));
            if constexpr (kLse) rows.l_exact[r] = rows.l_exact[r] + p0 + p1;
            pack_pair<T>(a, nt, r, p0, p1);
            if (r == 1 && (nt + 1) % T::kSTilesPerGroup == 0) issue((nt + 1) / T::kSTilesPerGroup - 1);
        }
}

// One block's softmax (§6) from its INT8 code products `acc`. `f[r][h]` = q_scale·k_scale of
// row r and 64-key half h (each thread's columns share one K group per half, §3); `j0` is the
// block's first key. Leaves alpha (what rescales the previous O and l) and P̃ in `a`, and
// issues P·V through `issue`. `before_exponentials()` runs
// just before the exponentials (the softmax turn, mainloop.cuh).
template <class T, bool kLse, class Issue, class Before>
__device__ __forceinline__ void block_softmax(const Params& p, int b, int h, const int64_t (&row)[2], int t,
                                              int64_t j0, int64_t lq, int64_t lkv, bool interior,
                                              const int32_t (&acc)[T::kSTiles * 4], const float (&f)[2][2],
                                              float p_offset, Rows& rows, float (&alpha)[2],
                                              uint32_t (&a)[T::kPvSteps][4], const Issue& issue,
                                              const Before& before_exponentials) {
    constexpr int kHalfTiles = T::kSTiles / 2;
    float x[T::kSTiles * 4];
    float block_max[2] = {-INFINITY, -INFINITY};
    float g[2][2], c[2][2];  // P̃ = exp2(x·g − c)
    if (interior) {
        // No key of the block is hidden and f > 0: the row maximum comes from the raw products,
        // and f rides in the exponent's FFMA (§10): one rounding where §6 has two (§8 allows it).
        // The maxima are taken on the integer products, before their conversion (which is exact
        // and monotonic, so the same values): sm_90's three-way integer max halves the
        // instructions and the tree shortens the chain that opens the block (docs/PERF.md).
        int32_t half_max[2][2];
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int h = 0; h < 2; ++h) half_max[r][h] = half_row_max<T>(acc, r, h);
#pragma unroll
        for (int i = 0; i < T::kSTiles * 4; ++i) x[i] = static_cast<float>(acc[i]);
#pragma unroll
        for (int r = 0; r < 2; ++r)
            block_max[r] = fmaxf(static_cast<float>(half_max[r][0]) * f[r][0], static_cast<float>(half_max[r][1]) * f[r][1]);
        advance_row_max(block_max, rows.m, alpha);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            if constexpr (kLse) rows.l_exact[r] *= alpha[r];
            c[r][0] = c[r][1] = rows.m[r] - p_offset;
            g[r][0] = f[r][0], g[r][1] = f[r][1];
        }
    } else {
        // The conversion is written in each branch, not once above it: above the branch it would
        // be a basic block of its own, ahead of the interior maxima, where ptxas cannot move the
        // conversions into the shuffles' latency (docs/PERF.md, the integer row maxima).
#pragma unroll
        for (int i = 0; i < T::kSTiles * 4; ++i) x[i] = static_cast<float>(acc[i]);
        // Scale, then visibility and bias as §6 writes them. Without a mask a row sees a prefix of
        // the block (up to the sequence's end or the causal edge): one compare of the score's
        // column with the row's count, worked out once.
        if (p.mask_type == SAGEATTN_MASK_NONE) {
            int seen[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int64_t end = row[r] >= lq ? 0 : (p.causal ? min64(lkv, row[r] + lkv - lq + 1) : lkv);
                seen[r] = static_cast<int>(max64(0, min64(end - j0, T::kBlockN)));
            }
#pragma unroll
            for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2;
                    float& s = x[4 * nt + e];
                    s = nt * 8 + 2 * t + (e & 1) < seen[r] ? s * f[r][nt / kHalfTiles] : -INFINITY;
                    block_max[r] = fmaxf(block_max[r], s);
                }
        } else {
#pragma unroll
            for (int nt = 0; nt < T::kSTiles; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2;
                    const int64_t j = j0 + nt * 8 + 2 * t + (e & 1);
                    float& s = x[4 * nt + e];
                    s = visible_score(p, b, h, row[r], j, lq, lkv, s * f[r][nt / kHalfTiles]);
                    block_max[r] = fmaxf(block_max[r], s);
                }
        }
        advance_row_max(block_max, rows.m, alpha);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            if constexpr (kLse) rows.l_exact[r] *= alpha[r];
            // No visible key yet: m is −inf and every P̃ of the block is exp2(−inf) = 0.
            c[r][0] = c[r][1] = rows.m[r] == -INFINITY ? 0.f : rows.m[r] - p_offset;
            g[r][0] = g[r][1] = 1.f;
        }
    }
    before_exponentials();
    exponentials<T, kLse>(x, g, c, rows, a, issue);
}

}  // namespace sageattn::cuda::sm90
