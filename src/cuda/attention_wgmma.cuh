// The Hopper attention kernel (sm_90a): INT8 wgmma m64n64k32 for Q·Kᵀ and, for
// P·V, FP8 E4M3 wgmma m64n(D+8)k32 or FP16 wgmma m64n(D+8)k16, each 64-key block
// summed apart in fp32 and folded into O ("fp32+fp32"), online softmax in exp2:
// the same arithmetic as docs/ALGORITHM.md §6 and the mma.sync kernel, on the
// instructions that reach Hopper's full tensor-core rate.
//
// A CTA is kWarpgroups consumer warpgroups of 64 query rows each, all of one
// (sequence, head), and a producer warpgroup, one thread of which drives the bulk
// tensor copy engine: K codes and Vᵀ codes of the blocks ahead arrive in a
// multi-stage, swizzled shared-memory pipeline on full/empty mbarriers, while each
// consumer runs its MMAs and softmax on the current block. Q codes stay in shared
// memory for the whole key loop. docs/ALGORITHM.md §10 says what the kernel
// chooses within §8. Heads that §5 flags (sharp softmax) are left to the mma.sync
// kernel's 16-bit path.
#pragma once

#include <cuda_runtime.h>

#include <cudaTypedefs.h>

#include <atomic>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"
#include "cuda/ptx/cvt.cuh"
#include "cuda/ptx/mbarrier.cuh"
#include "cuda/ptx/setmaxnreg.cuh"
#include "cuda/ptx/tma.cuh"
#include "cuda/ptx/wgmma.cuh"

namespace sageattn::cuda {

template <int DP, int kWarpgroups, bool kFp8>
struct WgmmaConfig {
    // kWarpgroups consumer warpgroups (MMAs and softmax) and one producer warpgroup, of which
    // one thread drives the copy engine. The producer gives its registers to the consumers.
    static constexpr int kConsumers = 128 * kWarpgroups;
    static constexpr int kThreads = kConsumers + 128;
    static constexpr int kProducerRegs = 24;
    static constexpr int kConsumerRegs = (65536 / 128 - kProducerRegs) / kWarpgroups / 8 * 8;
    static constexpr int kTileQ = 64 * kWarpgroups;
    static constexpr int kQKSwizzle = DP;        // INT8 rows of DP bytes: 64- or 128-byte swizzle
    static constexpr int kVB = kFp8 ? 1 : 2;     // bytes of a V code: FP8 or FP16
    static constexpr int kVSwizzle = kBlockKv * kVB;  // Vᵀ rows of 64 keys: 64 or 128 bytes
    static constexpr int kPvK = kFp8 ? 32 : 16;  // keys per P·V MMA step
    static constexpr int kQBytes = kTileQ * DP;
    static constexpr int kKBytes = kBlockKv * DP;
    // Vᵀ has 8 more rows of ones: P·V's last 8 columns are then P̃'s row sums (§6's l).
    static constexpr int kPvN = DP + 8;
    static constexpr int kVBytes = kPvN * kBlockKv * kVB;
    // Block j computes while j - 1's Vᵀ is in use and the copies of the next ones are in flight.
    static constexpr int kStages = 8;
    static constexpr int kStage = (kKBytes + kVBytes + 1023) / 1024 * 1024;
    static constexpr int kBarriers = kQBytes + kStages * kStage;  // full[kStages], empty[kStages], q
    static constexpr int kColumns = kBarriers + (2 * kStages + 1) * 8;  // v_scale[DP], v_offset[DP]
    static constexpr int kBytes = kColumns + 2 * DP * 4 + 1024;  // + slack to align the base to 1024
};

template <int DP, bool kBf16, bool kLse, int kWarpgroups, bool kFp8>
__global__ void __launch_bounds__(128 * (kWarpgroups + 1), 1)
    attention_wgmma_kernel(const Params p, const __grid_constant__ CUtensorMap q_map,
                           const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
    using Cfg = WgmmaConfig<DP, kWarpgroups, kFp8>;
    constexpr int kNT = kBlockKv / 8;   // n8 tiles of S per block
    constexpr int kOT = DP / 8;         // n8 tiles of O
    constexpr int kPT = Cfg::kPvN / 8;  // n8 tiles of P·V: O's and one of row sums
    extern __shared__ __align__(16) uint8_t smem_raw[];
    uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
    uint8_t* q_smem = smem;
    uint8_t* kv_smem = smem + Cfg::kQBytes;

    const int b = blockIdx.z, h = blockIdx.y;
    const Seq s = sequence(p, b);
    const int64_t q0 = query_tile(p) * Cfg::kTileQ;
    if (q0 >= s.len_q) return;
    const int hk = h / p.group;
    // §5: heads flagged sharp run on the mma.sync kernel's 16-bit Q·Kᵀ.
    if (p.qk_precision == 0 && sharp_scores(p, b, h)) return;

    // The warpgroup index through a shuffle: the compiler then knows it is warp-uniform and keeps
    // the wgmma descriptors built from it in uniform registers.
    const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x / 128), 0), tid = threadIdx.x % 128;
    const int64_t lq = s.len_q, lkv = s.len_kv;

    // Keys this CTA can see (causal, bottom-right).
    int64_t kv_end = lkv;
    if (p.causal) {
        const int64_t last = min64(q0 + Cfg::kTileQ - 1, lq - 1);
        kv_end = max64(0, min64(lkv, last + lkv - lq + 1));
    }
    const int64_t kcode_base = hk * p.kv_rows + s.pad_kv;

    // The rows of ones under every stage's Vᵀ (e4m3 1.0 = 0x38, fp16 1.0 = 0x3c00); the copies
    // never touch them.
    constexpr uint32_t kOnes = kFp8 ? 0x38383838u : 0x3c003c00u;
    constexpr int kOnesChunks = 8 * kBlockKv * Cfg::kVB / 16;
    for (int i = threadIdx.x; i < Cfg::kStages * kOnesChunks; i += Cfg::kThreads) {
        const int stage = i / kOnesChunks, at = i % kOnesChunks;
        reinterpret_cast<uint4*>(kv_smem + stage * Cfg::kStage + Cfg::kKBytes + DP * kBlockKv * Cfg::kVB)[at] =
            make_uint4(kOnes, kOnes, kOnes, kOnes);
    }
    // Stage s is full when the copy engine has written its K and Vᵀ codes (one arrival and
    // their bytes), and empty once every thread's P·V on it has completed.
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + Cfg::kBarriers);
    uint64_t* empty = full + Cfg::kStages;
    uint64_t* q_full = empty + Cfg::kStages;
    if (threadIdx.x == 0) {
        for (int i = 0; i < Cfg::kStages; ++i) ptx::mbarrier_init(full + i, 1), ptx::mbarrier_init(empty + i, Cfg::kConsumers);
        ptx::mbarrier_init(q_full, 1);
        ptx::mbarrier_init_fence();
    }
    // The epilogue's per-channel V scale and offset.
    float* v_scale_smem = reinterpret_cast<float*>(smem + Cfg::kColumns);
    float* v_offset_smem = v_scale_smem + DP;
    stage_v_columns<DP, kFp8>(p, b, hk, lkv, v_scale_smem, v_offset_smem);
    ptx::fence_proxy_async();  // the rows of ones, for the tensor cores
    __syncthreads();
    const int64_t blocks = (kv_end + kBlockKv - 1) / kBlockKv;

    if (wg == kWarpgroups) {
        // The producer: Q codes of the tile once, then K codes [key][channel] and Vᵀ codes
        // [channel][key] of block n into stage n % kStages as soon as the consumers have
        // released it. Q rows past the sequence hold whatever follows (or zeros past the
        // workspace): finite codes whose scores the visibility rule drops.
        ptx::setmaxnreg_dec<Cfg::kProducerRegs>();
        if (tid == 0) {
            ptx::mbarrier_arrive_expect_tx(q_full, Cfg::kQBytes);
            ptx::tma_load_2d(q_smem, &q_map, 0, static_cast<int32_t>(h * p.q_rows + s.pad_q + q0), q_full);
            for (int64_t n = 0; n < blocks; ++n) {
                const int stage = static_cast<int>(n % Cfg::kStages);
                if (n >= Cfg::kStages)
                    ptx::mbarrier_wait(empty + stage, static_cast<uint32_t>((n / Cfg::kStages - 1) & 1));
                uint8_t* k_dst = kv_smem + stage * Cfg::kStage;
                ptx::mbarrier_arrive_expect_tx(full + stage, Cfg::kKBytes + DP * kBlockKv * Cfg::kVB);
                ptx::tma_load_2d(k_dst, &k_map, 0, static_cast<int32_t>(kcode_base + n * kBlockKv), full + stage);
                ptx::tma_load_2d(k_dst + Cfg::kKBytes, &v_map,
                                 static_cast<int32_t>((s.pad_kv + n * kBlockKv) * Cfg::kVB), hk * DP, full + stage);
            }
        }
        return;
    }
    ptx::setmaxnreg_inc<Cfg::kConsumerRegs>();

    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int64_t qw0 = q0 + wg * 64;  // this warpgroup's first row
    const int64_t row[2] = {qw0 + warp * 16 + g, qw0 + warp * 16 + g + 8};
    float q_scale[2];
    for (int r = 0; r < 2; ++r) q_scale[r] = row[r] < lq ? p.q_scale[h * p.q_rows + s.pad_q + row[r]] : 0.f;

    float o[kOT * 4];
#pragma unroll
    for (int i = 0; i < kOT * 4; ++i) o[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, l_exact[2] = {0.f, 0.f};
    const float p_offset = kFp8 ? kFp8POffset : 0.f;
    const uint64_t q_desc = ptx::make_desc<Cfg::kQKSwizzle>(q_smem + wg * 64 * DP);

    // Block j's K and Vᵀ live in stage j % kStages. Iteration j issues S_j = Q·K_jᵀ and
    // P_{j-1}·V_{j-1} together, then runs block j's softmax while the tensor cores do P·V.
    // No block-wide barrier: the warpgroups meet only through the stages' full and empty barriers.
    auto consume = [&](int64_t j) {
        ptx::mbarrier_wait(full + j % Cfg::kStages, static_cast<uint32_t>((j / Cfg::kStages) & 1));
    };
    ptx::mbarrier_wait(q_full, 0);

    // Block j's softmax: from the INT8 scores to P̃ in FP8 (pk), then packed as the A
    // operand of P·V (a) once the tensor cores are done with the previous block's (§6).
    uint32_t a[kBlockKv / Cfg::kPvK][4];
    uint32_t pk[kNT][2];
    // Block j's K scale for this thread's columns, read before the scores are waited for.
    auto k_scale_of = [&](int64_t j) { return p.k_scale[(kcode_base / kBlockKv + j) * 4 + t]; };
    // From the block's scores (times g per row) and row maxima to P̃ = exp2(s − m + offset) in FP8;
    // l_exact sums the unrounded values for the LSE (§6), l (the rounded ones) comes from the
    // tensor cores. Called inside each branch of the softmax: the wait for the previous P·V that
    // follows the softmax then sits in a later basic block, and the scheduler cannot hoist it
    // above the exponentials (they would stop overlapping the tensor cores).
    auto exponentials = [&](const float (&sc)[kNT * 4], float (&block_max)[2], float g0, float g1, float (&alpha)[2]) {
        advance_row_max(block_max, m, alpha);
        float m_shift[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            if constexpr (kLse) l_exact[r] *= alpha[r];
            m_shift[r] = m[r] == -INFINITY ? 0.f : m[r] - p_offset;
        }
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float gr = r == 0 ? g0 : g1;
                const float x0 = ptx::exp2_approx(fmaf(sc[4 * nt + 2 * r], gr, -m_shift[r]));
                const float x1 = ptx::exp2_approx(fmaf(sc[4 * nt + 2 * r + 1], gr, -m_shift[r]));
                if constexpr (kLse) l_exact[r] = l_exact[r] + x0 + x1;
                if constexpr (kFp8) pk[nt][r] = ptx::e4m3x2(x0, x1);
                else pk[nt][r] = ptx::pack_half2(x0, x1);
            }
    };
    auto softmax = [&](int64_t j0, int (&acc)[kNT * 4], float (&alpha)[2], float k_scale) {
        // s = code product · (q scale · k scale): one factor per row, as every column of a
        // thread shares its K group ((key mod 8) / 2 = t).
        float sc[kNT * 4];
        const float f[2] = {q_scale[0] * k_scale, q_scale[1] * k_scale};
#pragma unroll
        for (int i = 0; i < kNT * 4; ++i) sc[i] = static_cast<float>(acc[i]);
        // Visibility and additive bias (§1, §6). Blocks wholly inside every bound skip the
        // checks and keep the scale for the exponent's FFMA (max(s) = f·max(code product) for f ≥ 0).
        float block_max[2] = {-INFINITY, -INFINITY};
        const bool interior = p.mask_type == 0 && p.scale > 0.f && j0 + kBlockKv <= lkv && qw0 + 64 <= lq &&
                              (!p.causal || j0 + kBlockKv - 1 <= qw0 + lkv - lq);
        if (interior) {
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
                block_max[0] = fmaxf(block_max[0], fmaxf(sc[4 * nt + 0], sc[4 * nt + 1]));
                block_max[1] = fmaxf(block_max[1], fmaxf(sc[4 * nt + 2], sc[4 * nt + 3]));
            }
            block_max[0] *= f[0], block_max[1] *= f[1];
            exponentials(sc, block_max, f[0], f[1], alpha);
        } else {
#pragma unroll
            for (int i = 0; i < kNT * 4; ++i) sc[i] *= f[i % 4 / 2];
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2;
                    const int64_t j = j0 + nt * 8 + 2 * t + (e & 1);
                    sc[4 * nt + e] = visible_score(p, b, h, row[r], j, lq, lkv, sc[4 * nt + e]);
                    block_max[r] = fmaxf(block_max[r], sc[4 * nt + e]);
                }
            exponentials(sc, block_max, 1.f, 1.f, alpha);
        }
    };
    auto pack = [&]() {
#pragma unroll
        for (int ks = 0; ks < kBlockKv / Cfg::kPvK; ++ks) {
            if constexpr (kFp8) {
                a[ks][0] = pk[4 * ks][0] | (pk[4 * ks + 1][0] << 16);
                a[ks][1] = pk[4 * ks][1] | (pk[4 * ks + 1][1] << 16);
                a[ks][2] = pk[4 * ks + 2][0] | (pk[4 * ks + 3][0] << 16);
                a[ks][3] = pk[4 * ks + 2][1] | (pk[4 * ks + 3][1] << 16);
            } else {
                // The m16n8k16 A layout: rows g, g + 8 of keys 2t, 2t + 1, then of keys 8 + 2t, 9 + 2t.
                // Copied by an instruction here: a plain assignment lets the compiler merge pk into
                // a's registers, or sink the copies between the next MMAs, and either serializes them.
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    asm volatile("mov.b32 %0, %1;\n" : "=r"(a[ks][i]) : "r"(pk[2 * ks + i / 2][i % 2]));
            }
        }
    };
    // Descriptors are computed before the wgmma fence: an operand defined between the
    // MMAs of one commit group would serialize them.
    auto k_desc_of = [&](int64_t j) { return ptx::make_desc<Cfg::kQKSwizzle>(kv_smem + (j % Cfg::kStages) * Cfg::kStage); };
    auto v_desc_of = [&](int64_t j) {
        return ptx::make_desc<Cfg::kVSwizzle>(kv_smem + (j % Cfg::kStages) * Cfg::kStage + Cfg::kKBytes);
    };
    // The descriptors depend on warp-uniform values only, so they stay in uniform registers.
    struct Descs {
        uint64_t k, v;
    };
    auto descs_of = [&](int64_t j_s, int64_t j_pv) { return Descs{k_desc_of(j_s), v_desc_of(j_pv)}; };
    auto issue_s = [&](int (&acc)[kNT * 4], const Descs& d) {
#pragma unroll
        for (int ks = 0; ks < DP / 32; ++ks) ptx::wgmma_s8_ss<kBlockKv>(acc, q_desc + 2 * ks, d.k + 2 * ks, ks > 0);
        ptx::wgmma_commit();
    };
    // This block's P·V apart (the FP8 tensor core's accumulator is short): O = O·alpha + it.
    auto issue_pv = [&](float (&ob)[kPT * 4], const uint32_t (&a)[kBlockKv / Cfg::kPvK][4], const Descs& d) {
        // Each step covers 32 bytes of every Vᵀ row: 32 FP8 or 16 FP16 keys.
#pragma unroll
        for (int ks = 0; ks < kBlockKv / Cfg::kPvK; ++ks) {
            if constexpr (kFp8) ptx::wgmma_e4m3_rs<Cfg::kPvN>(ob, a[ks], d.v + 2 * ks, ks > 0);
            else ptx::wgmma_f16_rs<Cfg::kPvN>(ob, a[ks], d.v + 2 * ks, ks > 0);
        }
        ptx::wgmma_commit();
    };
    auto fold = [&](const float (&ob)[kPT * 4], const float (&alpha)[2]) {
        l[0] = l[0] * alpha[0] + ob[4 * kOT + 0];
        l[1] = l[1] * alpha[1] + ob[4 * kOT + 2];
#pragma unroll
        for (int ot = 0; ot < kOT; ++ot) {
            o[4 * ot + 0] = o[4 * ot + 0] * alpha[0] + ob[4 * ot + 0];
            o[4 * ot + 1] = o[4 * ot + 1] * alpha[0] + ob[4 * ot + 1];
            o[4 * ot + 2] = o[4 * ot + 2] * alpha[1] + ob[4 * ot + 2];
            o[4 * ot + 3] = o[4 * ot + 3] * alpha[1] + ob[4 * ot + 3];
        }
    };

    if (blocks > 0) {
        int acc[kNT * 4];
        float ob[kPT * 4];
        float alpha_prev[2];
        const float ks0 = k_scale_of(0);
        consume(0);
        const Descs d0 = descs_of(0, 0);
        ptx::wgmma_fence();
        issue_s(acc, d0);
        ptx::wgmma_wait<0>();
        ptx::fence_operand(acc);
        softmax(0, acc, alpha_prev, ks0);
        pack();
        for (int64_t j = 1; j < blocks; ++j) {
            const float ks = k_scale_of(j);
            consume(j);
            const Descs d = descs_of(j, j - 1);
            ptx::fence_operand(a);
            ptx::wgmma_fence();
            issue_s(acc, d);
            issue_pv(ob, a, d);
            ptx::wgmma_wait<1>();
            ptx::fence_operand(acc);
            float alpha[2];
            softmax(j * kBlockKv, acc, alpha, ks);
            // P̃ is computed before the wait: otherwise the exponentials sink below it and
            // stop overlapping P·V.
            ptx::wgmma_wait<0>();
            ptx::fence_operand(ob);
            ptx::mbarrier_arrive(empty + (j - 1) % Cfg::kStages);
            pack();  // P̃ of block j replaces that of j - 1 only now: the tensor cores read it until the wait
            fold(ob, alpha_prev);
            alpha_prev[0] = alpha[0], alpha_prev[1] = alpha[1];
        }
        const Descs d = descs_of(blocks - 1, blocks - 1);
        ptx::fence_operand(a);
        ptx::wgmma_fence();
        issue_pv(ob, a, d);
        ptx::wgmma_wait<0>();
        ptx::fence_operand(ob);
        fold(ob, alpha_prev);
    }

    // Epilogue (§6): the row sums of the quad, then out = acc/l · v_scale + v_offset.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 1);
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 2);
    }
    store_rows<kBf16, kOT>(p, b, h, s, row, t, m, l, l_exact, p_offset, kLse, true, v_scale_smem, v_offset_smem,
                           [&](int r, int ot, int e) { return o[4 * ot + 2 * r + e]; });
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

template <int DP, bool kBf16, int kWarpgroups, bool kFp8>
bool launch_tiles(const Params& p, cudaStream_t stream) {
    using Cfg = WgmmaConfig<DP, kWarpgroups, kFp8>;
    // Tile coordinates are 32-bit.
    const int64_t q_cells = static_cast<int64_t>(p.heads_q) * p.q_rows, kv_cells = static_cast<int64_t>(p.heads_kv) * p.kv_rows;
    if (q_cells >= (int64_t{1} << 31) || kv_cells >= (int64_t{1} << 31) || int64_t{p.heads_kv} * DP >= (int64_t{1} << 31))
        return false;
    CUtensorMap q_map, k_map, v_map;
    if (!byte_map(&q_map, p.q_codes, DP, static_cast<uint64_t>(q_cells), DP, DP, Cfg::kTileQ, Cfg::kQKSwizzle) ||
        !byte_map(&k_map, p.k_codes, DP, static_cast<uint64_t>(kv_cells), DP, DP, kBlockKv, Cfg::kQKSwizzle) ||
        !byte_map(&v_map, p.v_codes, static_cast<uint64_t>(p.kv_rows) * Cfg::kVB, static_cast<uint64_t>(p.heads_kv) * DP,
                  static_cast<uint64_t>(p.kv_rows) * Cfg::kVB, kBlockKv * Cfg::kVB, DP, Cfg::kVSwizzle))
        return false;
    auto kernel = p.lse ? attention_wgmma_kernel<DP, kBf16, true, kWarpgroups, kFp8>
                        : attention_wgmma_kernel<DP, kBf16, false, kWarpgroups, kFp8>;
    // Once per device and instance: the attribute persists, and the call costs host time.
    static std::atomic<bool> configured[2][64];
    std::atomic<bool>* done = configured[p.lse ? 1 : 0];
    int device = 0;
    cudaGetDevice(&device);
    if (device >= 64 || !done[device].load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kBytes) == cudaSuccess &&
            device < 64)
            done[device].store(true, std::memory_order_relaxed);
    }
    const int64_t tiles = (p.max_len_q + Cfg::kTileQ - 1) / Cfg::kTileQ;
    if (tiles == 0) return true;
    kernel<<<dim3(static_cast<unsigned>(tiles), p.heads_q, p.batch), Cfg::kThreads, Cfg::kBytes, stream>>>(
        p, q_map, k_map, v_map);
    return true;
}

template <int DP, bool kBf16>
bool launch_attention_wgmma(const Params& p, cudaStream_t stream) {
    // d64 fits three warpgroups in 168 registers: 192-row tiles, faster from 2k rows on
    // (measured on the H100: 16k 324 -> 399 TOPS, 4k 319 -> 354; 1k 247 -> 224).
    if (!p.pv_fp8) {
        if constexpr (DP <= 64)
            if (p.max_len_q >= 2048) return launch_tiles<DP, kBf16, 3, false>(p, stream);
        return launch_tiles<DP, kBf16, 2, false>(p, stream);
    }
    if constexpr (DP <= 64)
        if (p.max_len_q >= 2048) return launch_tiles<DP, kBf16, 3, true>(p, stream);
    return launch_tiles<DP, kBf16, 2, true>(p, stream);
}

}  // namespace sageattn::cuda
