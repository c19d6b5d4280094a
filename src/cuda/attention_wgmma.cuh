// The Hopper attention kernel (sm_90a): INT8 wgmma m64n64k32 for Q·Kᵀ and FP8
// E4M3 wgmma m64nDk32 for P·V with the two-level ("fp32+fp32") accumulation,
// online softmax in exp2, one 64-key block at a time: the same arithmetic as
// docs/ALGORITHM.md §6 and the mma.sync kernel, on the instructions that reach
// Hopper's full tensor-core rate.
//
// A CTA is kWarpgroups warpgroups of 64 query rows each, all of one (sequence,
// head). Every thread takes part in the cp.async copies of the K codes and Vᵀ
// codes of the next block into the other stage of a double-buffered, swizzled
// shared-memory pipeline, while each warpgroup runs its MMAs and softmax on the
// current one. Q codes stay in shared memory for the whole key loop.
// Heads that §5 flags (sharp softmax) are left to the mma.sync kernel's 16-bit path.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"
#include "cuda/ptx/cp_async.cuh"
#include "cuda/ptx/cvt.cuh"
#include "cuda/ptx/wgmma.cuh"

namespace sageattn::cuda {

template <int DP, int kWarpgroups>
struct WgmmaConfig {
    static constexpr int kThreads = 128 * kWarpgroups;
    static constexpr int kTileQ = 64 * kWarpgroups;
    static constexpr int kQKSwizzle = DP;        // INT8 rows of DP bytes: 64- or 128-byte swizzle
    static constexpr int kVSwizzle = kBlockKv;   // FP8 Vᵀ rows of 64 keys
    static constexpr int kQBytes = kTileQ * DP;
    static constexpr int kKBytes = kBlockKv * DP;
    static constexpr int kVBytes = DP * kBlockKv;
    static constexpr int kStages = 4;  // block j computes, j - 1's Vᵀ in use, j + 1 and j + 2 in flight
    static constexpr int kStage = kKBytes + kVBytes;
    static constexpr int kBytes = kQBytes + kStages * kStage + 1024;  // + slack to align the base to 1024
};

template <int DP, bool kBf16, int kWarpgroups>
__global__ void __launch_bounds__(128 * kWarpgroups, 1) attention_wgmma_kernel(Params p) {
    using Cfg = WgmmaConfig<DP, kWarpgroups>;
    constexpr int kNT = kBlockKv / 8;  // n8 tiles of S per block
    constexpr int kOT = DP / 8;        // n8 tiles of O
    extern __shared__ __align__(16) uint8_t smem_raw[];
    uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
    uint8_t* q_smem = smem;
    uint8_t* kv_smem = smem + Cfg::kQBytes;

    const int b = blockIdx.z, h = blockIdx.y;
    const Seq s = sequence(p, b);
    const int64_t q0 = static_cast<int64_t>(blockIdx.x) * Cfg::kTileQ;
    if (q0 >= s.len_q) return;
    const int hk = h / p.group;
    {
        // §5: heads flagged sharp run on the mma.sync kernel's 16-bit Q·Kᵀ.
        const float qmax = as_float(p.q_amax[b * p.heads_q + h]), kmax = as_float(p.k_amax[b * p.heads_kv + hk]);
        const float sigma = fabsf(p.scale) * sqrtf(static_cast<float>(p.head_dim)) * qmax * kmax / 311.0f;
        if (p.qk_precision == 0 && sigma > p.sharp_threshold) return;
    }

    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int64_t qw0 = q0 + wg * 64;  // this warpgroup's first row
    const int64_t row[2] = {qw0 + warp * 16 + g, qw0 + warp * 16 + g + 8};
    const int64_t lq = s.len_q, lkv = s.len_kv;
    float q_scale[2];
    for (int r = 0; r < 2; ++r) q_scale[r] = row[r] < lq ? p.q_scale[h * p.q_rows + s.pad_q + row[r]] : 0.f;

    // Keys this CTA can see (causal, bottom-right).
    int64_t kv_end = lkv;
    if (p.causal) {
        const int64_t last = min64(q0 + Cfg::kTileQ - 1, lq - 1);
        kv_end = max64(0, min64(lkv, last + lkv - lq + 1));
    }
    const int64_t kcode_base = hk * p.kv_rows + s.pad_kv;

    // Q codes of the tile, once; rows past the sequence are zeros.
    {
        const int8_t* src = p.q_codes + (h * p.q_rows + s.pad_q + q0) * DP;
        for (int i = threadIdx.x; i < Cfg::kTileQ * DP / 16; i += Cfg::kThreads) {
            const int r = i / (DP / 16), c = i % (DP / 16);
            uint8_t* dst = q_smem + ptx::swizzled<Cfg::kQKSwizzle>(r, c);
            if (q0 + r < lq) ptx::cp_async_16(dst, src + i * 16);
            else *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
    // K codes [key][channel] and Vᵀ codes [channel][key] of block j0 into a stage.
    auto load_block = [&](int stage, int64_t j0) {
        uint8_t* k_dst = kv_smem + stage * Cfg::kStage;
        uint8_t* v_dst = k_dst + Cfg::kKBytes;
        const int8_t* k_src = p.k_codes + (kcode_base + j0) * DP;
        for (int i = threadIdx.x; i < kBlockKv * DP / 16; i += Cfg::kThreads) {
            const int r = i / (DP / 16), c = i % (DP / 16);
            ptx::cp_async_16(k_dst + ptx::swizzled<Cfg::kQKSwizzle>(r, c), k_src + i * 16);
        }
        for (int i = threadIdx.x; i < DP * kBlockKv / 16; i += Cfg::kThreads) {
            const int c = i / (kBlockKv / 16), w = i % (kBlockKv / 16);
            const uint8_t* v_src = p.v_codes + (hk * DP + c) * p.kv_rows + s.pad_kv + j0;
            ptx::cp_async_16(v_dst + ptx::swizzled<Cfg::kVSwizzle>(c, w), v_src + w * 16);
        }
        ptx::cp_async_commit();
    };

    float o[kOT * 4];
#pragma unroll
    for (int i = 0; i < kOT * 4; ++i) o[i] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, l_exact[2] = {0.f, 0.f};
    const float p_offset = kFp8POffset;
    const uint64_t q_desc = ptx::make_desc<Cfg::kQKSwizzle>(q_smem + wg * 64 * DP);

    const int64_t blocks = (kv_end + kBlockKv - 1) / kBlockKv;
    // Block j's K and Vᵀ live in stage j % kStages. Iteration j issues S_j = Q·K_jᵀ and
    // P_{j-1}·V_{j-1} together, then runs block j's softmax while the tensor cores
    // do P·V; the copies run two blocks ahead.
    auto load_or_skip = [&](int64_t j) {
        if (j < blocks) load_block(static_cast<int>(j % Cfg::kStages), j * kBlockKv);
        else ptx::cp_async_commit();  // an empty group keeps the wait counts uniform
    };
    load_or_skip(0);  // with the Q codes
    load_or_skip(1);

    // Block j's softmax: from the INT8 scores to P̃ in FP8 as the A operand of P·V (§6).
    uint32_t a_next[kBlockKv / 32][4];
    auto softmax = [&](int64_t j0, int (&acc)[kNT * 4], float (&alpha)[2]) {
        float sc[kNT * 4];
        const float k_scale = p.k_scale[(kcode_base + j0) / kBlockKv * 4 + t];
        const float f0 = q_scale[0] * k_scale, f1 = q_scale[1] * k_scale;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
            sc[4 * nt + 0] = static_cast<float>(acc[4 * nt + 0]) * f0;
            sc[4 * nt + 1] = static_cast<float>(acc[4 * nt + 1]) * f0;
            sc[4 * nt + 2] = static_cast<float>(acc[4 * nt + 2]) * f1;
            sc[4 * nt + 3] = static_cast<float>(acc[4 * nt + 3]) * f1;
        }
        // Visibility and additive bias (§1, §6); blocks wholly inside every bound skip the checks.
        float block_max[2] = {-INFINITY, -INFINITY};
        const bool interior = p.mask_type == 0 && j0 + kBlockKv <= lkv && qw0 + 64 <= lq &&
                              (!p.causal || j0 + kBlockKv - 1 <= qw0 + lkv - lq);
        if (interior) {
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt) {
                block_max[0] = fmaxf(block_max[0], fmaxf(sc[4 * nt + 0], sc[4 * nt + 1]));
                block_max[1] = fmaxf(block_max[1], fmaxf(sc[4 * nt + 2], sc[4 * nt + 3]));
            }
        } else {
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = e / 2;
                    const int64_t j = j0 + nt * 8 + 2 * t + (e & 1);
                    bool visible = j < lkv && row[r] < lq && (!p.causal || j <= row[r] + lkv - lq);
                    float bias = 0.f;
                    if (visible && p.mask_type != 0) visible = mask_entry(p, b, h, row[r], j, &bias);
                    sc[4 * nt + e] = visible ? sc[4 * nt + e] + bias : -INFINITY;
                    block_max[r] = fmaxf(block_max[r], sc[4 * nt + e]);
                }
        }
        float m_shift[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 1));
            block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 2));
            const float m_new = fmaxf(m[r], block_max[r]);
            alpha[r] = m_new == -INFINITY ? 1.f : ptx::exp2_approx(m[r] - m_new);
            m[r] = m_new;
            l[r] *= alpha[r];
            l_exact[r] *= alpha[r];
            m_shift[r] = m[r] == -INFINITY ? 0.f : m[r] - p_offset;
        }
        // P̃ in FP8; l sums the rounded values, l_exact the others (§6).
        uint32_t pk[kNT][2];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float x0 = ptx::exp2_approx(sc[4 * nt + 2 * r] - m_shift[r]);
                const float x1 = ptx::exp2_approx(sc[4 * nt + 2 * r + 1] - m_shift[r]);
                l_exact[r] = l_exact[r] + x0 + x1;
                const uint16_t packed = ptx::e4m3x2(x0, x1);
                const float2 back = ptx::e4m3x2_to_float2(packed);
                l[r] += back.x + back.y;
                pk[nt][r] = packed;
            }
#pragma unroll
        for (int ks = 0; ks < kBlockKv / 32; ++ks) {
            a_next[ks][0] = pk[4 * ks][0] | (pk[4 * ks + 1][0] << 16);
            a_next[ks][1] = pk[4 * ks][1] | (pk[4 * ks + 1][1] << 16);
            a_next[ks][2] = pk[4 * ks + 2][0] | (pk[4 * ks + 3][0] << 16);
            a_next[ks][3] = pk[4 * ks + 2][1] | (pk[4 * ks + 3][1] << 16);
        }
    };
    auto issue_s = [&](int (&acc)[kNT * 4], int64_t j) {
        const uint64_t k_desc = ptx::make_desc<Cfg::kQKSwizzle>(kv_smem + (j % Cfg::kStages) * Cfg::kStage);
#pragma unroll
        for (int ks = 0; ks < DP / 32; ++ks) ptx::wgmma_s8_ss<kBlockKv>(acc, q_desc + 2 * ks, k_desc + 2 * ks, ks > 0);
        ptx::wgmma_commit();
    };
    // This block's P·V apart (the FP8 tensor core's accumulator is short): O = O·alpha + it.
    auto issue_pv = [&](float (&ob)[kOT * 4], const uint32_t (&a)[kBlockKv / 32][4], int64_t j) {
        const uint64_t v_desc =
            ptx::make_desc<Cfg::kVSwizzle>(kv_smem + (j % Cfg::kStages) * Cfg::kStage + Cfg::kKBytes);
#pragma unroll
        for (int ks = 0; ks < kBlockKv / 32; ++ks) ptx::wgmma_e4m3_rs<DP>(ob, a[ks], v_desc + 2 * ks, ks > 0);
        ptx::wgmma_commit();
    };
    auto fold = [&](const float (&ob)[kOT * 4], const float (&alpha)[2]) {
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
        float ob[kOT * 4];
        uint32_t a_prev[kBlockKv / 32][4];
        float alpha_prev[2];
        ptx::cp_async_wait<1>();
        ptx::fence_proxy_async();
        __syncthreads();
        load_or_skip(2);
        ptx::wgmma_fence();
        issue_s(acc, 0);
        ptx::wgmma_wait<0>();
        ptx::fence_operand(acc);
        softmax(0, acc, alpha_prev);
        for (int64_t j = 1; j < blocks; ++j) {
#pragma unroll
            for (int ks = 0; ks < kBlockKv / 32; ++ks)
#pragma unroll
                for (int i = 0; i < 4; ++i) a_prev[ks][i] = a_next[ks][i];
            ptx::cp_async_wait<1>();
            ptx::fence_proxy_async();
            __syncthreads();  // block j has landed; every warpgroup is done with block j - 2
            load_or_skip(j + 2);
            ptx::fence_operand(a_prev);
            ptx::wgmma_fence();
            issue_s(acc, j);
            issue_pv(ob, a_prev, j - 1);
            ptx::wgmma_wait<1>();
            ptx::fence_operand(acc);
            float alpha[2];
            softmax(j * kBlockKv, acc, alpha);
            ptx::wgmma_wait<0>();
            ptx::fence_operand(ob);
            ptx::fence_operand(a_prev);
            fold(ob, alpha_prev);
            alpha_prev[0] = alpha[0], alpha_prev[1] = alpha[1];
        }
        ptx::fence_operand(a_next);
        ptx::wgmma_fence();
        issue_pv(ob, a_next, blocks - 1);
        ptx::wgmma_wait<0>();
        ptx::fence_operand(ob);
        fold(ob, alpha_prev);
    }
    ptx::cp_async_wait<0>();

    // Epilogue (§6): the row sums of the quad, then out = acc/l · v_scale + v_offset.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 1);
        l_exact[r] += __shfl_xor_sync(0xffffffffu, l_exact[r], 2);
    }
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * DP;
    const float inv_len = lkv > 0 ? 1.f / static_cast<float>(lkv) : 0.f;
    uint16_t* out = static_cast<uint16_t*>(p.out);
    const int64_t ob_base = out_base(p, b, s) + h * p.out_head_stride;
    float inv_l[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) inv_l[r] = m[r] == -INFINITY ? 0.f : 1.f / l[r];
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int c = ot * 8 + 2 * t + e;
            if (c >= p.head_dim) continue;
            const float amax = as_float(p.v_amax[slot + c]);
            const float v_scale = fmaxf(amax, kAmaxFloor) / 448.0f;
            const float v_offset = (p.smooth_v ? p.v_sum[slot + c] * inv_len : 0.f) + p.v_err[slot + c] * inv_len;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                if (row[r] >= lq) continue;
                const float value = m[r] == -INFINITY ? 0.f : o[4 * ot + 2 * r + e] * inv_l[r] * v_scale + v_offset;
                out[ob_base + row[r] * p.out_token_stride + c] = ptx::store16<kBf16>(value);
            }
        }
    if (p.lse && t == 0)
        for (int r = 0; r < 2; ++r) {
            if (row[r] >= lq) continue;
            const bool empty = m[r] == -INFINITY;
            const float shift = p.q_shift[h * p.q_rows + s.pad_q + row[r]];
            const int64_t at = p.cu_seqlens_q
                                   ? h * p.lse_head_stride + (s.row_q + row[r]) * p.lse_token_stride
                                   : b * p.lse_batch_stride + h * p.lse_head_stride + row[r] * p.lse_token_stride;
            p.lse[at] = empty ? -INFINITY : (m[r] + log2f(l_exact[r]) - p_offset) * kLn2 + shift;
        }
}

template <int DP, bool kBf16>
void launch_attention_wgmma(const Params& p, cudaStream_t stream) {
    constexpr int kWarpgroups = 2;
    using Cfg = WgmmaConfig<DP, kWarpgroups>;
    auto kernel = attention_wgmma_kernel<DP, kBf16, kWarpgroups>;
    static std::atomic<bool> configured[64];
    int device = 0;
    cudaGetDevice(&device);
    if (device >= 64 || !configured[device].load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kBytes) == cudaSuccess &&
            device < 64)
            configured[device].store(true, std::memory_order_relaxed);
    }
    const int64_t tiles = (p.max_len_q + Cfg::kTileQ - 1) / Cfg::kTileQ;
    if (tiles == 0) return;
    kernel<<<dim3(static_cast<unsigned>(tiles), p.heads_q, p.batch), Cfg::kThreads, Cfg::kBytes, stream>>>(p);
}

}  // namespace sageattn::cuda
