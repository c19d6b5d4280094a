// docs/ALGORITHM.md §3-§4 on the GPU: K/V sums, K codes and scales, V's
// per-channel range and transposed FP8/FP16 codes, Q codes and scales. Tails
// of every length are handled in the kernels; inputs are read in place through
// their strides.
#include <cuda_runtime.h>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"

namespace sageattn::cuda {
namespace {

constexpr float kInt8Max = 127.0f;

__device__ __forceinline__ int8_t int8_code(float x, float inv) {
    const float r = rintf(x * inv);
    return static_cast<int8_t>(fminf(kInt8Max, fmaxf(-kInt8Max, r)));
}

// §3 K groups inside a 64-key block: per-thread = (token mod 8) / 2, else one.
__device__ __forceinline__ int k_group(int j, int granularity) { return granularity == 0 ? (j % 8) / 2 : 0; }

// FP8 B-operand order inside 32 keys: position 4t+e holds key 2t + (e&1) + 8(e>>1)
// (and the same 16 keys later), so that P's m16n8 accumulator pairs feed the
// m16n8k32 A operand without shuffles.
__device__ __forceinline__ int fp8_position(int j) {
    const int half = j & ~15, r = j & 15;
    const int t = (r & 7) >> 1, e = (r & 1) | ((r >> 3) << 1);
    return half + 4 * t + e;
}

template <bool kBf16>
__global__ void kv_sums_kernel(Params p) {
    const int b = blockIdx.z, hk = blockIdx.y;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int64_t kb = s.in_kv + hk * p.k.head_stride + j0 * p.k.token_stride;
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * p.head_dim_pad;
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x) {
        if (p.smooth_k) {
            float sum = 0.f;
            for (int j = 0; j < n; ++j) sum += load_input<kBf16>(p.k.data, kb + j * p.k.token_stride + c);
            atomicAdd(p.k_sum + slot + c, sum);
        }
        if (p.smooth_v) {
            float sum = 0.f;
            for (int j = 0; j < n; ++j) sum += load_input<kBf16>(p.v.data, vb + j * p.v.token_stride + c);
            atomicAdd(p.v_sum + slot + c, sum);
        }
    }
}

// One 64-key block of one (sequence, KV head): K codes and scales, and V's channel amax.
template <bool kBf16>
__global__ void __launch_bounds__(128) k_quant_kernel(Params p) {
    __shared__ float mean[256];
    __shared__ float token_amax[kBlockKv];
    __shared__ float group_inv[4];
    const int b = blockIdx.z, hk = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * p.head_dim_pad;
    const int64_t kb = s.in_kv + hk * p.k.head_stride + j0 * p.k.token_stride;
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x)
        mean[c] = p.smooth_k ? p.k_sum[slot + c] / static_cast<float>(s.len_kv) : 0.f;
    __syncthreads();

    for (int j = warp * 16; j < warp * 16 + 16; ++j) {
        float a = 0.f;
        if (j < n)
            for (int c = lane; c < p.head_dim; c += 32)
                a = fmaxf(a, fabsf(load_input<kBf16>(p.k.data, kb + j * p.k.token_stride + c) - mean[c]));
        a = warp_max(a);
        if (lane == 0) token_amax[j] = a;
    }
    __syncthreads();
    if (threadIdx.x < 4) {
        float a = 0.f;
        for (int j = 0; j < kBlockKv; ++j)
            if (p.granularity != 0 || k_group(j, 0) == static_cast<int>(threadIdx.x)) a = fmaxf(a, token_amax[j]);
        const float floored = fmaxf(a, kAmaxFloor);
        group_inv[threadIdx.x] = kInt8Max / floored;
        p.k_scale[(hk * p.kv_rows + s.pad_kv + j0) / kBlockKv * 4 + threadIdx.x] = floored / kInt8Max;
        if (threadIdx.x == 0) {
            float block = 0.f;
            for (int j = 0; j < kBlockKv; ++j) block = fmaxf(block, token_amax[j]);
            atomic_max_nonneg(p.k_amax + b * p.heads_kv + hk, block);
        }
    }
    __syncthreads();
    for (int j = warp * 16; j < warp * 16 + 16; ++j) {
        const float inv = group_inv[k_group(j, p.granularity)];
        int8_t* row = p.k_codes + (hk * p.kv_rows + s.pad_kv + j0 + j) * p.head_dim_pad;
        for (int c = lane; c < p.head_dim_pad; c += 32) {
            const float x =
                (j < n && c < p.head_dim) ? load_input<kBf16>(p.k.data, kb + j * p.k.token_stride + c) - mean[c] : 0.f;
            row[c] = int8_code(x, inv);
        }
    }

    // V: the channel's amax over this block, after its mean (§4).
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x) {
        const float vmean = p.smooth_v ? p.v_sum[slot + c] / static_cast<float>(s.len_kv) : 0.f;
        float a = 0.f;
        for (int j = 0; j < n; ++j) a = fmaxf(a, fabsf(load_input<kBf16>(p.v.data, vb + j * p.v.token_stride + c) - vmean));
        atomic_max_nonneg(p.v_amax + slot + c, a);
    }
}

// V codes of one 64-key block, transposed to [channel][key] for the P·V B operand.
template <bool kBf16, bool kFp8>
__global__ void __launch_bounds__(256) v_quant_kernel(Params p) {
    constexpr int kBytes = kFp8 ? 1 : 2;
    __shared__ __align__(16) uint8_t tile[256 * kBlockKv * kBytes];
    const int b = blockIdx.z, hk = blockIdx.y;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * p.head_dim_pad;
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    for (int c = threadIdx.x; c < p.head_dim_pad; c += blockDim.x) {
        const bool real = c < p.head_dim;
        const float vmean = (real && p.smooth_v) ? p.v_sum[slot + c] / static_cast<float>(s.len_kv) : 0.f;
        const float amax = real ? as_float(p.v_amax[slot + c]) : 0.f;
        if constexpr (kFp8) {
            const float range = p.pv_accum == 3 ? 2.25f : 448.0f;
            const float a = fmaxf(amax, kAmaxFloor), inv = range / a, vscale = a / range;
            float err = 0.f;
            for (int j = 0; j < kBlockKv; ++j) {
                const float x = (real && j < n) ? load_input<kBf16>(p.v.data, vb + j * p.v.token_stride + c) - vmean : 0.f;
                const uint16_t code = ptx::e4m3x2(x * inv, 0.f);
                tile[c * kBlockKv + fp8_position(j)] = static_cast<uint8_t>(code & 0xff);
                err += x - ptx::e4m3x2_to_float2(code).x * vscale;
            }
            if (real) atomicAdd(p.v_err + slot + c, err);
        } else {
            int e = 0;
            if (amax > 0.f) {
                frexpf(amax, &e);
                e = max(e - 9, -100);
            }
            uint16_t* row = reinterpret_cast<uint16_t*>(tile) + c * kBlockKv;
            for (int j = 0; j < kBlockKv; ++j) {
                const float x = (real && j < n) ? load_input<kBf16>(p.v.data, vb + j * p.v.token_stride + c) - vmean : 0.f;
                row[j] = __half_as_ushort(__float2half_rn(ldexpf(x, -e)));
            }
        }
    }
    __syncthreads();
    // Rows of 64 keys are contiguous in the workspace: write them as 32-bit words.
    constexpr int kWordsPerRow = kBlockKv * kBytes / 4;
    const uint32_t* src = reinterpret_cast<const uint32_t*>(tile);
    for (int w = threadIdx.x; w < p.head_dim_pad * kWordsPerRow; w += blockDim.x) {
        const int c = w / kWordsPerRow, word = w % kWordsPerRow;
        uint8_t* dst = p.v_codes + ((hk * p.head_dim_pad + c) * p.kv_rows + s.pad_kv + j0) * kBytes;
        reinterpret_cast<uint32_t*>(dst)[word] = src[w];
    }
}

// One chunk of 128 query rows of one (sequence, head): codes, scales with
// scale·log2(e) folded in, the LSE shift, and the head's amax (§3, §5, §6).
template <bool kBf16>
__global__ void __launch_bounds__(128) q_quant_kernel(Params p) {
    __shared__ float kmean[256];
    __shared__ float row_amax[kQuantRows];
    __shared__ float row_inv[kQuantRows];
    const int b = blockIdx.z, h = blockIdx.y, hk = h / p.group, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const Seq s = sequence(p, b);
    const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kQuantRows;
    if (i0 >= s.len_q) return;
    const int64_t qb = s.in_q + h * p.q.head_stride;
    const int64_t kslot = (static_cast<int64_t>(b) * p.heads_kv + hk) * p.head_dim_pad;
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x)
        kmean[c] = (p.smooth_k && s.len_kv > 0) ? p.k_sum[kslot + c] / static_cast<float>(s.len_kv) : 0.f;
    __syncthreads();
    float my_shift = 0.f;
    for (int r = 0; r < 32; ++r) {
        const int local = warp * 32 + r;
        const int64_t i = i0 + local;
        float a = 0.f, dot = 0.f;
        if (i < s.len_q)
            for (int c = lane; c < p.head_dim; c += 32) {
                const float x = load_input<kBf16>(p.q.data, qb + i * p.q.token_stride + c);
                a = fmaxf(a, fabsf(x));
                dot += x * kmean[c];
            }
        a = warp_max(a);
        dot = warp_sum(dot);
        if (lane == r) my_shift = dot;
        if (lane == 0) row_amax[local] = a;
    }
    __syncthreads();
    const int local = threadIdx.x;
    const int64_t i = i0 + local;
    float group = 0.f;
    for (int r = 0; r < kQuantRows; ++r) {
        const bool same = p.granularity == 2 ||                                  // per-block: 128 rows
                          (r / 32 == local / 32 && (p.granularity == 1 || r % 8 == local % 8));  // warp / thread
        if (same) group = fmaxf(group, row_amax[r]);
    }
    const float floored = fmaxf(group, kAmaxFloor);
    row_inv[local] = kInt8Max / floored;
    const int64_t row = h * p.q_rows + s.pad_q + i0 + local;
    // my_shift lives in lane r of warp w for row 32w + r: here local = 32·warp + lane.
    p.q_scale[row] = i < s.len_q ? (floored / kInt8Max) * p.scale_log2 : 0.f;
    p.q_shift[row] = (i < s.len_q && p.smooth_k) ? p.scale * my_shift : 0.f;
    if (threadIdx.x == 0) {
        float m = 0.f;
        for (int r = 0; r < kQuantRows; ++r) m = fmaxf(m, row_amax[r]);
        atomic_max_nonneg(p.q_amax + b * p.heads_q + h, m);
    }
    __syncthreads();
    for (int r = 0; r < 32; ++r) {
        const int lr = warp * 32 + r;
        const int64_t ir = i0 + lr;
        int8_t* dst = p.q_codes + (h * p.q_rows + s.pad_q + i0 + lr) * p.head_dim_pad;
        for (int c = lane; c < p.head_dim_pad; c += 32) {
            const float x = (ir < s.len_q && c < p.head_dim) ? load_input<kBf16>(p.q.data, qb + ir * p.q.token_stride + c) : 0.f;
            dst[c] = int8_code(x, row_inv[lr]);
        }
    }
}

template <bool kBf16>
void quantize_typed(const Params& p, bool fp8, cudaStream_t stream) {
    const int64_t kv_blocks = (p.max_len_kv + kBlockKv - 1) / kBlockKv;
    const dim3 kv_grid(static_cast<unsigned>(kv_blocks), p.heads_kv, p.batch);
    if (kv_blocks > 0) {
        if (p.smooth_k || p.smooth_v) kv_sums_kernel<kBf16><<<kv_grid, 256, 0, stream>>>(p);
        k_quant_kernel<kBf16><<<kv_grid, 128, 0, stream>>>(p);
        if (fp8) v_quant_kernel<kBf16, true><<<kv_grid, 256, 0, stream>>>(p);
        else v_quant_kernel<kBf16, false><<<kv_grid, 256, 0, stream>>>(p);
    }
    const int64_t q_blocks = (p.max_len_q + kQuantRows - 1) / kQuantRows;
    if (q_blocks > 0) q_quant_kernel<kBf16><<<dim3(static_cast<unsigned>(q_blocks), p.heads_q, p.batch), 128, 0, stream>>>(p);
}

}  // namespace

void launch_quantize(const Params& p, cudaStream_t stream) {
    if (p.bf16) quantize_typed<true>(p, p.pv_fp8, stream);
    else quantize_typed<false>(p, p.pv_fp8, stream);
}

}  // namespace sageattn::cuda
