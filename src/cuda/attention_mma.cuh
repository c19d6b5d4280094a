// The mma.sync attention kernel (sm80+): INT8 m16n8k32 Q·Kᵀ (16-bit m16n8k16
// for the heads §5 flags), online softmax in exp2, P·V in FP16 m16n8k16 or FP8
// m16n8k32 (sm89+), one 64-key block at a time as docs/ALGORITHM.md §6 writes it.
// A CTA is 4 warps x 16 query rows of one (sequence, head); each thread holds
// rows g and g+8 of its warp (g = lane/4) and columns 2t, 2t+1 of every n8 tile.
// K and Vᵀ reach shared memory in one of mma_config.hpp's pipelines (kPipe).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"
#include "cuda/mma_config.hpp"
#include "cuda/ptx/cp_async.cuh"
#include "cuda/ptx/ldmatrix.cuh"
#include "cuda/ptx/mma.cuh"

namespace sageattn::cuda {

// Dynamic shared memory: kStages stages of [K block | Vᵀ block] (mma_config.hpp). Rows are
// padded by kSmemRowPad bytes (bank conflicts).
template <int DP, bool kFp8, MmaPipeline kPipe>
struct AttnSmem {
    static constexpr int kKRow8 = DP + kSmemRowPad;       // INT8 K row
    static constexpr int kKRow16 = 2 * DP + kSmemRowPad;  // 16-bit K row (heads of §5)
    static constexpr int kVRow = kBlockKv * (kFp8 ? 1 : 2) + kSmemRowPad;
    static constexpr int kKBytes = kBlockKv * kKRow16;
    static constexpr int kVBytes = DP * kVRow;
    static constexpr int kStage = kKBytes + kVBytes;
    static constexpr int kStages = mma_stages(kPipe);
    static constexpr int kBytes = kStages * kStage;
    static_assert(kBytes == mma_dynamic_smem(DP, kFp8, kPipe), "mma_config.hpp's count is the one the host checks");
    // The split buffers are what the 99 KB parts (sm_86, sm_89, sm_12x) run: they must fit.
    static_assert(kPipe != MmaPipeline::kSplitKv || kBytes + mma_static_smem(DP) <= kCtaSmem99K,
                  "the split configuration exists for the 99 KB parts and must fit them");
};

// Registers are cut for three CTAs per SM (two at head_dim 256), or for as many as shared
// memory holds (min_ctas). Where it holds one at d128 (100 KB parts), a cut to three CTAs'
// 168 registers bought nothing and spilled 300 bytes a thread on sm_89 and sm_120.
template <int DP, bool kFp8, MmaPipeline kPipe>
constexpr int mma_min_ctas() {
    return min_ctas(DP <= 128 ? 3 : 2, mma_shared_bytes(DP, kFp8, kPipe));
}

template <int DP, bool kBf16, bool kFp8, bool kSharp, MmaPipeline kPipe>
__device__ __forceinline__ void attend(const Params& p, uint8_t* smem, int b, int h, const Seq& s, int64_t q0) {
    constexpr int kNT = kBlockKv / 8;  // n8 tiles of S per block
    constexpr int kOT = DP / 8;        // n8 tiles of O
    constexpr int kVB = kFp8 ? 1 : 2;
    using Smem = AttnSmem<DP, kFp8, kPipe>;
    constexpr bool kSplit = kPipe == MmaPipeline::kSplitKv;
    const int hk = h / p.group, warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int64_t row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    const int64_t lq = s.len_q, lkv = s.len_kv;
    const float p_offset = kFp8 ? kFp8POffset : 0.f;

    // Q fragments for the whole key loop.
    constexpr int kQRegs = kSharp ? DP / 16 : DP / 32;
    uint32_t qa[kQRegs][4];
    float q_scale[2] = {0.f, 0.f};
    if constexpr (!kSharp) {
        for (int r = 0; r < 2; ++r) {
            const int64_t qrow = h * p.q_rows + s.pad_q + row[r];
            q_scale[r] = p.q_scale[qrow];
            const uint32_t* codes = reinterpret_cast<const uint32_t*>(p.q_codes + qrow * DP);
#pragma unroll
            for (int ks = 0; ks < kQRegs; ++ks) {
                qa[ks][r] = codes[ks * 8 + t];
                qa[ks][r + 2] = codes[ks * 8 + 4 + t];
            }
        }
    } else {
        const int64_t qb = s.in_q + h * p.q.head_stride;
        const uint16_t* q16 = static_cast<const uint16_t*>(p.q.data);
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int ks = 0; ks < kQRegs; ++ks)
                for (int half = 0; half < 2; ++half) {
                    const int c = ks * 16 + half * 8 + 2 * t;
                    uint32_t lo = 0, hi = 0;
                    if (row[r] < lq) {
                        const int64_t at = qb + row[r] * p.q.token_stride + c;
                        if (c < p.head_dim) lo = q16[at];
                        if (c + 1 < p.head_dim) hi = q16[at + 1];
                    }
                    qa[ks][r + 2 * half] = lo | (hi << 16);
                }
    }

    float o[kOT][4];
#pragma unroll
    for (int i = 0; i < kOT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, l_exact[2] = {0.f, 0.f};

    // Keys this CTA can see (causal, bottom-right).
    int64_t kv_end = lkv;
    if (p.causal) {
        const int64_t last = min64(q0 + kTileQ - 1, lq - 1);
        kv_end = max64(0, min64(lkv, last + lkv - lq + 1));
    }
    const int64_t kcode_base = hk * p.kv_rows + s.pad_kv;
    const int64_t kin_base = s.in_kv + hk * p.k.head_stride;

    // Issue the copies of block j0 into shared-memory stage `stage`: K codes and Vᵀ
    // asynchronously (the caller commits the group), the 16-bit K of §5 heads synchronously,
    // through its strides.
    auto load_k = [&](int stage, int64_t j0) {
        uint8_t* k_dst = smem + stage * Smem::kStage;
        if constexpr (!kSharp) {
            const int8_t* src = p.k_codes + (kcode_base + j0) * DP;
            for (int i = threadIdx.x; i < kBlockKv * DP / 16; i += blockDim.x) {
                const int j = i / (DP / 16), w = i % (DP / 16);
                ptx::cp_async_16(k_dst + j * Smem::kKRow8 + w * 16, src + i * 16);
            }
        } else {
            const uint16_t* k16 = static_cast<const uint16_t*>(p.k.data);
            for (int i = threadIdx.x; i < kBlockKv * DP; i += blockDim.x) {
                const int j = i / DP, c = i % DP;
                reinterpret_cast<uint16_t*>(k_dst + j * Smem::kKRow16)[c] =
                    (j0 + j < lkv && c < p.head_dim) ? k16[kin_base + (j0 + j) * p.k.token_stride + c] : uint16_t(0);
            }
        }
    };
    auto load_v = [&](int stage, int64_t j0) {
        uint8_t* v_dst = smem + stage * Smem::kStage + Smem::kKBytes;
        constexpr int kVecPerRow = kBlockKv * kVB / 16;
        for (int i = threadIdx.x; i < DP * kVecPerRow; i += blockDim.x) {
            const int c = i / kVecPerRow, w = i % kVecPerRow;
            const uint8_t* src = p.v_codes + ((static_cast<int64_t>(hk) * DP + c) * p.kv_rows + s.pad_kv + j0) * kVB;
            ptx::cp_async_16(v_dst + c * Smem::kVRow + w * 16, src + w * 16);
        }
    };

    // Double-buffered, block 0 comes whole; split, its K alone (its Vᵀ at the loop's top).
    if (kv_end > 0) {
        load_k(0, 0);
        if constexpr (!kSplit) load_v(0, 0);
        ptx::cp_async_commit();
    }
    // The epilogue's per-channel V scale and offset, while the first copies fly.
    __shared__ float v_scale_smem[DP], v_offset_smem[DP];
    stage_v_columns<DP, kFp8>(p, b, hk, lkv, v_scale_smem, v_offset_smem);
    __syncthreads();
    int stage = 0;
    for (int64_t j0 = 0; j0 < kv_end; j0 += kBlockKv, stage = kSplit ? 0 : stage ^ 1) {
        const bool more = j0 + kBlockKv < kv_end;
        if constexpr (kSplit) {
            load_v(0, j0);  // the Vᵀ buffer was released at the end of the last block
            ptx::cp_async_commit();
            ptx::cp_async_wait<1>();  // K of this block is in; its Vᵀ may still be on the way
        } else if (more) {
            load_k(stage ^ 1, j0 + kBlockKv);  // that stage was released at the end of the last block
            load_v(stage ^ 1, j0 + kBlockKv);
            ptx::cp_async_commit();
            ptx::cp_async_wait<1>();
        } else {
            ptx::cp_async_wait<0>();
        }
        __syncthreads();
        const uint8_t* k_smem = smem + stage * Smem::kStage;
        const uint8_t* v_smem = k_smem + Smem::kKBytes;

        // S = Q·Kᵀ in log2 units (§3 / §5).
        float sc[kNT][4];
        if constexpr (!kSharp) {
            int acc[kNT][4];
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;
            // One ldmatrix.x4 brings the B fragments of two k32 steps of an n8 tile.
            const uint8_t* k_lane = k_smem + (lane % 8) * Smem::kKRow8 + 16 * (lane / 8);
#pragma unroll
            for (int pair = 0; pair < DP / 64; ++pair)
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) {
                    uint32_t bf[4];
                    ptx::ldmatrix_x4(bf, k_lane + nt * 8 * Smem::kKRow8 + 64 * pair);
                    ptx::mma_s8(acc[nt], qa[2 * pair], bf[0], bf[1]);
                    ptx::mma_s8(acc[nt], qa[2 * pair + 1], bf[2], bf[3]);
                }
            const float k_scale = p.k_scale[(kcode_base + j0) / kBlockKv * 4 + t];
            const float f0 = q_scale[0] * k_scale, f1 = q_scale[1] * k_scale;
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
                sc[nt][0] = static_cast<float>(acc[nt][0]) * f0;
                sc[nt][1] = static_cast<float>(acc[nt][1]) * f0;
                sc[nt][2] = static_cast<float>(acc[nt][2]) * f1;
                sc[nt][3] = static_cast<float>(acc[nt][3]) * f1;
            }
        } else {
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < DP / 16; ++ks)
#pragma unroll
                for (int nt = 0; nt < kNT; ++nt) {
                    const uint16_t* krow = reinterpret_cast<const uint16_t*>(k_smem + (nt * 8 + g) * Smem::kKRow16) + ks * 16;
                    ptx::mma_16bit_f32<kBf16>(sc[nt], qa[ks], *reinterpret_cast<const uint32_t*>(krow + 2 * t),
                                              *reinterpret_cast<const uint32_t*>(krow + 8 + 2 * t));
                }
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
                for (int e = 0; e < 4; ++e) sc[nt][e] *= p.scale_log2;
        }

        // Visibility and additive bias (§1, §6); blocks wholly inside every bound skip the checks.
        float block_max[2] = {-INFINITY, -INFINITY};
        const bool interior = p.mask_type == SAGEATTN_MASK_NONE && j0 + kBlockKv <= lkv && q0 + kTileQ <= lq &&
                              (!p.causal || j0 + kBlockKv - 1 <= q0 + lkv - lq);
        if (interior) {
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
                block_max[0] = fmaxf(block_max[0], fmaxf(sc[nt][0], sc[nt][1]));
                block_max[1] = fmaxf(block_max[1], fmaxf(sc[nt][2], sc[nt][3]));
            }
        } else {
#pragma unroll 1
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2;
                    const int64_t j = j0 + nt * 8 + 2 * t + (e & 1);
                    sc[nt][e] = visible_score(p, b, h, row[r], j, lq, lkv, sc[nt][e]);
                    block_max[r] = fmaxf(block_max[r], sc[nt][e]);
                }
        }
        float alpha[2];
        advance_row_max(block_max, m, alpha);
        for (int r = 0; r < 2; ++r) {
            l[r] *= alpha[r];
            l_exact[r] *= alpha[r];
        }

        // P̃, rounded to the P·V type; l sums the rounded values, l_exact the others (§6).
        uint32_t pk[kNT][2];  // per n8 tile: rows g and g+8, two elements each (fp8 in the low 16 bits)
        // exp2(s − (m − offset)); with no visible key yet every s is −inf and so is the result 0.
        float m_shift[2];
        for (int r = 0; r < 2; ++r) m_shift[r] = m[r] == -INFINITY ? 0.f : m[r] - p_offset;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
            for (int r = 0; r < 2; ++r) {
                float x[2];
                for (int e = 0; e < 2; ++e) x[e] = ptx::exp2_approx(sc[nt][2 * r + e] - m_shift[r]);
                l_exact[r] = l_exact[r] + x[0] + x[1];
                if constexpr (kFp8) {
                    const uint16_t packed = ptx::e4m3x2(x[0], x[1]);
                    const float2 back = ptx::e4m3x2_to_float2(packed);
                    l[r] += back.x + back.y;
                    pk[nt][r] = packed;
                } else {
                    pk[nt][r] = ptx::pack_half2(x[0], x[1]);
                    const float2 back = ptx::unpack_half2(pk[nt][r]);
                    l[r] += back.x + back.y;
                }
            }
        if constexpr (kSplit) {
            ptx::cp_async_wait<0>();
            __syncthreads();  // Vᵀ is in, and every warp is done with K: the next block's K may come
            if (more) {
                load_k(0, j0 + kBlockKv);
                ptx::cp_async_commit();
            }
        }
        // O = O·alpha + P·V per n8 tile of the output (§6).
        const uint8_t* v_lane = v_smem + (lane % 8) * Smem::kVRow + 16 * (lane / 8);
        auto pv_block = [&](auto direct_tag) {
            constexpr bool kDirect = decltype(direct_tag)::value;
#pragma unroll
            for (int ot = 0; ot < kOT; ++ot) {
                o[ot][0] *= alpha[0], o[ot][1] *= alpha[0], o[ot][2] *= alpha[1], o[ot][3] *= alpha[1];
                float block[4] = {0.f, 0.f, 0.f, 0.f};
                uint32_t inner16[2] = {0u, 0u};
                auto mma_f32 = [&](const uint32_t(&a)[4], uint32_t b0, uint32_t b1) {
                    if constexpr (kFp8) {
                        if constexpr (kDirect) ptx::mma_e4m3_f32(o[ot], a, b0, b1);
                        else ptx::mma_e4m3_f32(block, a, b0, b1);
                    } else {
                        if constexpr (kDirect) ptx::mma_16bit_f32<false>(o[ot], a, b0, b1);
                        else ptx::mma_16bit_f32<false>(block, a, b0, b1);
                    }
                };
                if constexpr (kFp8) {
                    uint32_t bf[4];  // b0, b1 of the two k32 steps
                    ptx::ldmatrix_x4(bf, v_lane + ot * 8 * Smem::kVRow);
#pragma unroll
                    for (int ks = 0; ks < kBlockKv / 32; ++ks) {
                        const uint32_t a[4] = {pk[4 * ks][0] | (pk[4 * ks + 1][0] << 16),
                                               pk[4 * ks][1] | (pk[4 * ks + 1][1] << 16),
                                               pk[4 * ks + 2][0] | (pk[4 * ks + 3][0] << 16),
                                               pk[4 * ks + 2][1] | (pk[4 * ks + 3][1] << 16)};
                        if (p.pv_accum == SAGEATTN_ACCUM_FP32_FP16) ptx::mma_e4m3_f16acc(inner16, a, bf[2 * ks], bf[2 * ks + 1]);
                        else mma_f32(a, bf[2 * ks], bf[2 * ks + 1]);
                    }
                } else {
                    const uint16_t* v16 = reinterpret_cast<const uint16_t*>(v_smem + (ot * 8 + g) * Smem::kVRow);
#pragma unroll
                    for (int ks = 0; ks < kBlockKv / 16; ++ks) {
                        const uint32_t a[4] = {pk[2 * ks][0], pk[2 * ks][1], pk[2 * ks + 1][0], pk[2 * ks + 1][1]};
                        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(v16 + ks * 16 + 2 * t);
                        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(v16 + ks * 16 + 8 + 2 * t);
                        if (p.pv_accum == SAGEATTN_ACCUM_FP16_FP32) ptx::mma_f16_f16acc(inner16, a, b0, b1);
                        else mma_f32(a, b0, b1);
                    }
                }
                if constexpr (!kDirect) {
                    if (p.pv_accum == SAGEATTN_ACCUM_FP32_FP16 || p.pv_accum == SAGEATTN_ACCUM_FP16_FP32) {
                        const float2 lo = ptx::unpack_half2(inner16[0]), hi = ptx::unpack_half2(inner16[1]);
                        block[0] = lo.x, block[1] = lo.y, block[2] = hi.x, block[3] = hi.y;
                    }
                    o[ot][0] += block[0], o[ot][1] += block[1], o[ot][2] += block[2], o[ot][3] += block[3];
                }
            }
        };
        // "fp32" accumulates straight into the rescaled O; the two-level modes sum each block apart first.
        if (p.pv_accum == SAGEATTN_ACCUM_FP32) pv_block(std::true_type{});
        else pv_block(std::false_type{});
        __syncthreads();  // this stage is free for the block after next (split: Vᵀ's buffer, for the next)
    }

    // Epilogue (§6): the row sums of the quad, then out = acc/l · v_scale + v_offset.
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 1);
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 2);
    }
    store_rows<kBf16, kOT>(p, b, h, s, row, t, m, l, l_exact, p_offset, p.lse != nullptr, !kSharp, v_scale_smem,
                           v_offset_smem, nonfinite_flags(p, b, h), [&](int r, int ot, int e) { return o[ot][2 * r + e]; });
}

// Three CTAs per SM at most 170 registers a thread, enough warps to hide the loads, where
// shared memory allows three (mma_min_ctas).
template <int DP, bool kBf16, bool kFp8, MmaPipeline kPipe>
__global__ void __launch_bounds__(128, (mma_min_ctas<DP, kFp8, kPipe>())) attention_kernel(Params p) {
    extern __shared__ __align__(16) uint8_t smem[];
    const int b = blockIdx.z, h = blockIdx.y;
    const Seq s = sequence(p, b);
    const int64_t q0 = query_tile(p) * kTileQ;
    if (q0 >= s.len_q) return;
    // §5: one flag per (sequence, head), uniform over the CTA.
    const bool sharp = p.qk_precision == SAGEATTN_QK_INPUT || (p.qk_precision == SAGEATTN_QK_AUTO && sharp_scores(p, b, h));
    if (sharp) attend<DP, kBf16, kFp8, true, kPipe>(p, smem, b, h, s, q0);
    else attend<DP, kBf16, kFp8, false, kPipe>(p, smem, b, h, s, q0);
}

// §5's sharp heads after the sm_90a kernel took the others (p.sharp_only): a few CTAs an SM
// walk the (head, query tile) pairs of the heads that kernel listed, longest tiles first, so
// that a call without a sharp head is one small launch (a CTA for every tile of every head,
// each finding its head not sharp, took 27-33 µs a call at 1k-16k tokens, docs/PERF.md).
template <int DP, bool kBf16, bool kFp8, MmaPipeline kPipe>
__global__ void __launch_bounds__(128, (mma_min_ctas<DP, kFp8, kPipe>())) sharp_heads_kernel(Params p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ == 900  // only the sm_90a kernel lists heads: no code elsewhere
    extern __shared__ __align__(16) uint8_t smem[];
    const int64_t tiles = (p.max_len_q + kTileQ - 1) / kTileQ;
    const int64_t items = static_cast<int64_t>(p.sharp_heads[0]) * tiles;
    for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
        const uint32_t head = p.sharp_heads[1 + item / tiles];
        const int b = static_cast<int>(head / static_cast<uint32_t>(p.heads_q)), h = static_cast<int>(head % static_cast<uint32_t>(p.heads_q));
        const Seq s = sequence(p, b);
        const int64_t q0 = (tiles - 1 - item % tiles) * kTileQ;
        if (q0 >= s.len_q) continue;
        attend<DP, kBf16, kFp8, true, kPipe>(p, smem, b, h, s, q0);
        __syncthreads();  // the shared memory is the next item's
    }
#endif
}

// The kernel, or with p.sharp_only the sharp heads' walk over the list (SMs · CTAs an SM of them).
template <int DP, bool kBf16, bool kFp8, MmaPipeline kPipe>
void launch_attention(const Params& p, cudaStream_t stream) {
    static_assert(mma_pipeline_built(DP, kPipe), "mma_config.hpp lists the instances built");
    constexpr int kSmem = AttnSmem<DP, kFp8, kPipe>::kBytes;
    auto kernel = p.sharp_only ? sharp_heads_kernel<DP, kBf16, kFp8, kPipe> : attention_kernel<DP, kBf16, kFp8, kPipe>;
    // Once per device and kernel: the attribute persists, and the call costs host time.
    static std::atomic<bool> configured[2][64];
    int device = 0;
    cudaGetDevice(&device);
    std::atomic<bool>* done = device < 64 ? &configured[p.sharp_only ? 1 : 0][device] : nullptr;
    if (done == nullptr || !done->load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) == cudaSuccess && done != nullptr)
            done->store(true, std::memory_order_relaxed);
    }
    const int64_t tiles = (p.max_len_q + kTileQ - 1) / kTileQ;
    if (tiles == 0) return;
    if (p.sharp_only) {
        const int64_t ctas =
            std::min<int64_t>(int64_t{std::max(p.sms, 1)} * mma_min_ctas<DP, kFp8, kPipe>(), tiles * p.heads_q * p.batch);
        kernel<<<static_cast<unsigned>(ctas), 128, kSmem, stream>>>(p);
        return;
    }
    kernel<<<dim3(static_cast<unsigned>(tiles), p.heads_q, p.batch), 128, kSmem, stream>>>(p);
}

}  // namespace sageattn::cuda
