// docs/ALGORITHM.md §3-§4 on the GPU: K/V sums, K codes and scales, V's
// per-channel range and transposed FP8/FP16 codes, Q codes and scales. Tails
// of every length are handled in the kernels; inputs are read in place through
// their strides.
#include <cuda_runtime.h>

#include <iterator>
#include <type_traits>
#include <utility>

#include "cuda/common.cuh"
#include "cuda/launch.hpp"
#include "cuda/ptx/cp_async.cuh"

namespace sageattn::cuda {
namespace {

__device__ __forceinline__ int8_t int8_code(float x, float inv) {
    const float r = rintf(x * inv);
    return static_cast<int8_t>(fminf(alg::kInt8Max, fmaxf(-alg::kInt8Max, r)));
}

// The sm_90a kernel reads keys in blocks of kWideBlockKv (§10). When a sequence's last
// 64-key block starts such a block, the 64 rows after it belong to that block too: they
// get zero codes (and, for K, zero scales), so that no stale bytes of the workspace (an
// FP8 or FP16 NaN pattern) meet the zero weights of keys past the sequence.
__device__ __forceinline__ bool ends_wide_block_early(int64_t j0, int64_t len) {
    return j0 % kWideBlockKv == 0 && j0 + kBlockKv >= len;
}
// `rows` rows of `row_bytes` (a multiple of 16), `stride` bytes apart, set to zero by the CTA.
__device__ __forceinline__ void zero_rows(uint8_t* first, int rows, int row_bytes, int64_t stride) {
    const int chunks = row_bytes / 16;
    for (int i = threadIdx.x; i < rows * chunks; i += blockDim.x)
        *reinterpret_cast<uint4*>(first + (i / chunks) * stride + (i % chunks) * 16) = make_uint4(0u, 0u, 0u, 0u);
}

// §6: the 64 keys of block j0 whose k (kind 0) or v (kind 1) held a NaN or an infinity, one bit
// each (`marks`: the block's flags in shared memory), and the (sequence, KV head)'s flag when
// there is one. Called by one full warp.
__device__ __forceinline__ void publish_nonfinite_keys(const Params& p, int kind, int b, int hk, const Seq& s, int64_t j0,
                                                       const int* marks) {
    const int lane = static_cast<int>(threadIdx.x % 32);
    const uint32_t lo = __ballot_sync(0xffffffffu, marks[lane] != 0), hi = __ballot_sync(0xffffffffu, marks[lane + 32] != 0);
    if (lane != 0) return;
    const uint64_t word = lo | (static_cast<uint64_t>(hi) << 32);
    const int64_t blocks = static_cast<int64_t>(p.heads_kv) * p.kv_rows / kBlockKv;
    p.key_nonfinite[kind * blocks + (static_cast<int64_t>(hk) * p.kv_rows + s.pad_kv + j0) / kBlockKv] = word;
    if (word != 0) atomicOr(p.kv_nonfinite + static_cast<int64_t>(b) * p.heads_kv + hk, 1u);
}

// Work split used by every kernel here: a row's head_dim_pad channels are
// chunks of 8, one chunk per thread; the threads of a CTA cover `groups` rows
// at a time. A row's lanes_per_row must be a power of two of at most 32: the
// shuffles of group_max, group_sum and group_any (and the FP8 V error sums)
// stay inside one aligned group of a warp, and the CTA's threads (a multiple of
// 32) hold whole rows. Every padded head dim of the registry is checked here.
constexpr bool splits_evenly(int dpad) {
    const int lanes = dpad / 8;
    return dpad % 8 == 0 && lanes >= 1 && lanes <= 32 && (lanes & (lanes - 1)) == 0;
}
constexpr bool every_head_dim_splits_evenly() {
    for (int dp : kMmaHeadDims)
        if (!splits_evenly(dp)) return false;
    return true;
}
static_assert(every_head_dim_splits_evenly(),
              "kernels.py lists a padded head dim whose rows Split cannot share out: dp / 8 lanes must be a "
              "power of two up to 32 (generalise Split and the shuffles first)");
struct Split {
    int lanes_per_row, chunk, group, groups;
    __device__ Split(int dpad, int threads) {
        lanes_per_row = dpad / 8;
        chunk = threadIdx.x % lanes_per_row;
        group = threadIdx.x / lanes_per_row;
        groups = threads / lanes_per_row;
    }
};

// The padded head dim and the CTA's threads: compile-time constants in the standalone kernels'
// instances (one per padded head dim of the registry), read at run time where they are 0 (the
// one-launch kernel, which serves every head dim). As constants, Split's divisions and
// remainders, the V units' and the channel factors' index arithmetic and the loops' trip
// counts fold away: the kernels here issue more instructions than their bytes need.
template <int kDp>
__device__ __forceinline__ int dp_of(const Params& p) { return kDp ? kDp : p.head_dim_pad; }
template <int kThreads>
__device__ __forceinline__ int threads_of() { return kThreads ? kThreads : static_cast<int>(blockDim.x); }

// Copies a CTA's tile of 16-bit inputs into shared memory as [row][chunk] (row
// `local` = r·groups + group for r < rounds); rows from `valid` on are zeros. `first` is
// the element offset of row 0. Whole 16-byte chunks go by cp.async, every copy of the
// thread in flight at once and no registers held for them; the rest by loads, four in
// flight. A thread reads back only its own chunks, after stage_ready().
__device__ __forceinline__ void stage_tile(uint4* stage, const void* data, int64_t first, int64_t token_stride, int64_t valid,
                                           int rounds, const Split& w, int head_dim, bool vec) {
    const int c0 = w.chunk * 8;
    if (vec && c0 + 8 <= head_dim) {
        for (int r = 0; r < rounds; ++r) {
            const int local = r * w.groups + w.group;
            const bool real = local < valid;
            const uint16_t* src = static_cast<const uint16_t*>(data) + first + (real ? local * token_stride : 0) + c0;
            ptx::cp_async_16(stage + local * w.lanes_per_row + w.chunk, src, real);
        }
        ptx::cp_async_commit();
        return;
    }
    for (int r0 = 0; r0 < rounds; r0 += 4) {
        uint4 u[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int local = (r0 + r) * w.groups + w.group;
            u[r] = (r0 + r < rounds && local < valid) ? load_chunk_bits(data, first + local * token_stride, c0, head_dim, vec)
                                                      : make_uint4(0u, 0u, 0u, 0u);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
            if (r0 + r < rounds) stage[((r0 + r) * w.groups + w.group) * w.lanes_per_row + w.chunk] = u[r];
    }
}
__device__ __forceinline__ void stage_ready() { ptx::cp_async_wait<0>(); }

// Cross-CTA sums in a fixed order. Each CTA of a (sequence, KV head) stores its
// `count` partial sums (`mine`, shared memory) as part `part` of `parts_n`; the
// last CTA of the slot to finish (a ticket counts them) adds all parts in part
// order into `total` (shared memory) and returns true; the others return false.
// Float sums then come out the same on every run, whatever order the CTAs ran in.
// `stride` is the distance between parts; other CTAs' parts are read through L2.
// `extrema` (optional, `extrema_count` values laid out as maxima then minima, halves of
// extrema_count) travel in the same parts after the sums and are combined with max and min.
// A slot of one part (short sequences: the small problems' one-launch path, where this
// CTA's latency is the call's) skips the round trip through L2, the fences and the ticket:
// its CTA adds and combines its own values the same way, so the totals are the same bits.
__device__ bool ordered_total(float* parts, int64_t stride, int part, int parts_n, const float* mine, int count,
                              uint32_t* ticket, float* total, const float* extrema = nullptr, int extrema_count = 0) {
    __shared__ bool last;
    const int half = extrema_count / 2;
    if (parts_n == 1) {
        for (int c = threadIdx.x; c < count; c += blockDim.x) total[c] = 0.f + mine[c];
        for (int c = threadIdx.x; c < extrema_count; c += blockDim.x)
            total[count + c] = c < half ? fmaxf(-INFINITY, extrema[c]) : fminf(INFINITY, extrema[c]);
        __syncthreads();
        return true;
    }
    for (int c = threadIdx.x; c < count; c += blockDim.x) parts[part * stride + c] = mine[c];
    for (int c = threadIdx.x; c < extrema_count; c += blockDim.x) parts[part * stride + count + c] = extrema[c];
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(ticket, 1u) == static_cast<uint32_t>(parts_n - 1);
    __syncthreads();
    if (!last) return false;
    __threadfence();
    for (int c = threadIdx.x; c < count; c += blockDim.x) {
        float sum = 0.f;
        for (int k = 0; k < parts_n; ++k) sum += __ldcg(parts + k * stride + c);
        total[c] = sum;
    }
    for (int c = threadIdx.x; c < extrema_count; c += blockDim.x) {
        float e = c < half ? -INFINITY : INFINITY;
        for (int k = 0; k < parts_n; ++k) {
            const float x = __ldcg(parts + k * stride + count + c);
            e = c < half ? fmaxf(e, x) : fminf(e, x);
        }
        total[count + c] = e;
    }
    __syncthreads();
    return true;
}

// Shared memory of each kind of item; the prep kernel's is their union.
struct SumsSmem {
    float group_part[4][2048];  // [part][groups][dpad]: each thread group's partial results
    uint32_t k_rows[kSumRows / 32];  // the chunk's rows in §3's K sample, a bit each
    float sums[4 * kMaxHeadDimPad];
    float totals[4 * kMaxHeadDimPad];
};
struct KSmem {
    float k_mean[kMaxHeadDimPad];
    float group_amax[kBlockKv][2];  // [thread group][round parity]: max |k − mean| over its rows
    int token_nonfinite[kBlockKv];
    float group_inv[alg::kKThreadGroups];
};
struct VHalfSmem {
    uint32_t tile[kMaxHeadDimPad * kBlockKv / 2];  // [channel][key pair], swizzled
    float v_mean[kMaxHeadDimPad];
    float v_mul[kMaxHeadDimPad];
    int key_nonfinite[kBlockKv];
};
struct VFp8Smem {
    uint32_t tile[kMaxHeadDimPad * kBlockKv / 4];
    float v_mean[kMaxHeadDimPad], v_inv[kMaxHeadDimPad], v_step[kMaxHeadDimPad];
    float warp_err[8][kMaxHeadDimPad];  // per warp: Σ rounding error per channel
    float block_err[kMaxHeadDimPad], totals[kMaxHeadDimPad];
    int key_nonfinite[kBlockKv];
};
struct QSmem {
    float k_mean[kMaxHeadDimPad];
    float row_amax[kQuantRows], row_dot[kQuantRows], row_inv[kQuantRows];
    int row_nonfinite[kQuantRows];
    float warp_amax[kQuantRows / 32];
};
union __align__(16) PrepSmem {
    SumsSmem sums;
    KSmem k;
    VHalfSmem v_half;
    VFp8Smem v_fp8;
    QSmem q;
};

// One 512-key chunk of one (sequence, KV head): K's and V's channel sums and V's channel
// maximum and minimum. The chunk's last CTA to finish turns them into the K and V means and
// V's range after its mean (§4): max |v − mean| = max(max v − mean, mean − min v), exactly,
// as rounding the difference is monotonic. One read of V serves the sums and the range.
template <bool kBf16, int kDp = 0, int kThreads = 0>
__device__ __forceinline__ void kv_sums_block(const Params& p, int bx, int hk, int b, SumsSmem& sm) {
    constexpr int kParts = 4;  // K sums, V sums, V maxima, V minima
    auto& group_part = sm.group_part;
    auto& sums = sm.sums;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(bx) * kSumRows;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kSumRows, s.len_kv - j0));
    const int dp = dp_of<kDp>(p);
    const Split w(dp, threads_of<kThreads>());
    const int c0 = w.chunk * 8;
    const int64_t kb = s.in_kv + hk * p.k.head_stride + j0 * p.k.token_stride;
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    float ks[8], vs[8], x[8];
    uint32_t vmax[4], vmin[4];  // V's channel extrema as 16-bit pairs, exact in the input's format
    // K's rows only where §3's mean takes them (alg::in_k_mean): most of K is not read here. The
    // chunk's sampled rows are marked first, a key of the sample a thread (alg::k_mean_key): a test
    // a row by in_k_mean's division took more instructions than the row's sums.
    const int nthreads = threads_of<kThreads>();
    for (int i = threadIdx.x; i < kSumRows / 32; i += nthreads) sm.k_rows[i] = 0u;
    __syncthreads();
    if (p.smooth_k)
        for (int64_t i = threadIdx.x; i < alg::k_mean_keys(s.len_kv); i += nthreads) {
            const int64_t j = alg::k_mean_key(i, s.len_kv) - j0;
            if (j >= 0 && j < n) atomicOr(&sm.k_rows[j / 32], 1u << (j % 32));
        }
    __syncthreads();
    const auto sampled = [&](int j) { return ((sm.k_rows[j / 32] >> (j % 32)) & 1u) != 0u; };
    // NaNs and infinities count as 0 in every statistic (§6): with `clean` through finite_chunk,
    // which only the rare second pass needs (max_keep_nan's note).
    const auto add = [&](bool clean, bool k_row, uint4 k_bits, uint4 v_bits) {
        if (clean) k_bits = finite_chunk<kBf16>(k_bits), v_bits = finite_chunk<kBf16>(v_bits);
        if (k_row) {
            chunk_values<kBf16>(k_bits, x);
            for (int e = 0; e < 8; ++e) ks[e] += x[e];
        }
        chunk_values<kBf16>(v_bits, x);
        for (int e = 0; e < 8; ++e) vs[e] += x[e];
        const uint32_t words[4] = {v_bits.x, v_bits.y, v_bits.z, v_bits.w};
        for (int i = 0; i < 4; ++i) vmax[i] = ptx::max_pair<kBf16>(vmax[i], words[i]), vmin[i] = ptx::min_pair<kBf16>(vmin[i], words[i]);
    };
    // Two rows a step, all four loads issued before either row is added (same order of sums).
    const uint4 none = make_uint4(0u, 0u, 0u, 0u);
    const auto pass = [&](bool clean) {
        for (int e = 0; e < 8; ++e) ks[e] = vs[e] = 0.f;
        for (int i = 0; i < 4; ++i) vmax[i] = ptx::pair_of<kBf16>(-INFINITY), vmin[i] = ptx::pair_of<kBf16>(INFINITY);
        for (int j = w.group; j < n; j += 2 * w.groups) {
            const int j2 = j + w.groups;
            const bool second = j2 < n;
            const bool k_row1 = sampled(j), k_row2 = second && sampled(j2);
            const uint4 k1 = k_row1 ? load_chunk_bits(p.k.data, kb + j * p.k.token_stride, c0, p.head_dim, p.vec_k) : none;
            const uint4 v1 = load_chunk_bits(p.v.data, vb + j * p.v.token_stride, c0, p.head_dim, p.vec_v);
            const uint4 k2 = k_row2 ? load_chunk_bits(p.k.data, kb + j2 * p.k.token_stride, c0, p.head_dim, p.vec_k) : none;
            const uint4 v2 = second ? load_chunk_bits(p.v.data, vb + j2 * p.v.token_stride, c0, p.head_dim, p.vec_v) : none;
            add(clean, k_row1, k1, v1);
            if (second) add(clean, k_row2, k2, v2);
        }
    };
    pass(false);
    // Every input the thread read is in ks or vs: their total is finite unless one was not.
    float total = 0.f;
    for (int e = 0; e < 8; ++e) total += ks[e] + vs[e];
    if (__syncthreads_or(!is_finite(total))) pass(true);
    for (int e = 0; e < 8; ++e) {
        const int at = w.group * dp + c0 + e;
        group_part[0][at] = ks[e], group_part[1][at] = vs[e];
        group_part[2][at] = chunk_value<kBf16>(make_uint4(vmax[0], vmax[1], vmax[2], vmax[3]), e);
        group_part[3][at] = chunk_value<kBf16>(make_uint4(vmin[0], vmin[1], vmin[2], vmin[3]), e);
    }
    __syncthreads();
    for (int c = threadIdx.x; c < dp; c += nthreads) {  // the groups in order
        float k = 0.f, v = 0.f, hi = -INFINITY, lo = INFINITY;
        for (int g = 0; g < w.groups; ++g) {
            k += group_part[0][g * dp + c], v += group_part[1][g * dp + c];
            hi = fmaxf(hi, group_part[2][g * dp + c]), lo = fminf(lo, group_part[3][g * dp + c]);
        }
        sums[c] = k, sums[dp + c] = v, sums[2 * dp + c] = hi, sums[3 * dp + c] = lo;
    }
    __syncthreads();
    const int64_t slot = static_cast<int64_t>(b) * p.heads_kv + hk;
    const int parts_n = static_cast<int>((s.len_kv + kSumRows - 1) / kSumRows);
    float* totals = sm.totals;
    // The maxima and minima go through the ordered sum's parts too; the last CTA combines them
    // with max and min instead (sums of ±inf would not do).
    float* parts = p.sum_parts + slot * p.sum_chunks * kParts * dp;
    if (!ordered_total(parts, kParts * dp, bx, parts_n, sums, 2 * dp, p.tickets + slot, totals,
                       sums + 2 * dp, 2 * dp))
        return;
    const float inv_len = 1.f / static_cast<float>(s.len_kv);
    for (int c = threadIdx.x; c < p.head_dim; c += blockDim.x) {
        if (p.smooth_k) p.k_sum[slot * dp + c] = totals[c];
        if (p.smooth_v) p.v_sum[slot * dp + c] = totals[dp + c];
        const float mean = p.smooth_v ? totals[dp + c] * inv_len : 0.f;
        const float range = fmaxf(totals[2 * dp + c] - mean, mean - totals[3 * dp + c]);
        p.v_amax[slot * dp + c] = __float_as_uint(fmaxf(range, 0.f));
    }
    // The codes of this (sequence, KV head) may start (wait_ready).
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) atomicExch(p.ready + slot, 1u);
}

// Waits until the sums of (sequence b, KV head hk) are out. Only items that took their
// index after every sums item wait, and sums items wait for nothing, so this ends.
__device__ __forceinline__ void wait_ready(const Params& p, int b, int hk) {
    if (threadIdx.x == 0) {
        const uint32_t* flag = p.ready + static_cast<int64_t>(b) * p.heads_kv + hk;
        while (atomicAdd(const_cast<uint32_t*>(flag), 0u) == 0u) __nanosleep(64);
        __threadfence();
    }
    __syncthreads();
}

// §3's K smoothing mean, channel c of the (sequence, KV head) whose sums start at `slot`: the
// sums pass's total over the sampled keys (alg::in_k_mean), divided by their count.
__device__ __forceinline__ float k_mean_at(const Params& p, int64_t slot, int c, int64_t len_kv) {
    return __ldcg(p.k_sum + slot + c) / static_cast<float>(alg::k_mean_keys(len_kv));
}

// §3's code of d = x − mean, rint(fl(d · inv)), as the low byte of fl(fl(d · inv) + 1.5·2²³): the
// addition rounds to an integer (ties to even, as rint) and leaves it, two's complement, in the
// low mantissa bits. |d| <= a gives |fl(d · inv)| <= 127·(1 + 2⁻²⁴), so int8_code's clamp never
// binds while inv is finite and non-zero. Two instructions and three byte permutes a word of four
// codes, where int8_code takes a rounding, a conversion, two clamps and the shifts (issue-bound).
__device__ __forceinline__ uint32_t code_bits(float d, float inv) {
    return __float_as_uint(__fadd_rn(__fmul_rn(d, inv), 12582912.f));  // _rn: no FMA contraction
}
__device__ __forceinline__ uint2 pack_codes(const float (&x)[8], const float (&mean)[8], float inv) {
    if (inv == 0.f) {
        // a = inf (an overflowed x − mean): d · 0 is NaN where d is infinite, which int8_code's
        // clamp turns into −127 as the CPU emulation does; not worth a second rule.
        uint32_t lo = 0, hi = 0;
        for (int e = 0; e < 4; ++e) {
            lo |= static_cast<uint32_t>(static_cast<uint8_t>(int8_code(x[e] - mean[e], inv))) << (8 * e);
            hi |= static_cast<uint32_t>(static_cast<uint8_t>(int8_code(x[e + 4] - mean[e + 4], inv))) << (8 * e);
        }
        return make_uint2(lo, hi);
    }
    uint32_t w[8];
    for (int e = 0; e < 8; ++e) w[e] = code_bits(x[e] - mean[e], inv);
    const auto word = [](uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
        return __byte_perm(__byte_perm(a, b, 0x0040), __byte_perm(c, d, 0x0040), 0x5410);  // the four low bytes
    };
    return make_uint2(word(w[0], w[1], w[2], w[3]), word(w[4], w[5], w[6], w[7]));
}

// One 64-key block of one (sequence, KV head): K codes and scales.
template <bool kBf16, int kDp = 0, int kThreads = 0>
__device__ __forceinline__ void k_quant_block(const Params& p, int bx, int hk, int b, KSmem& sm, uint4* stage = nullptr) {
    auto& k_mean = sm.k_mean;
    auto& group_inv = sm.group_inv;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(bx) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int dp = dp_of<kDp>(p);
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * dp;
    const Split w(dp, threads_of<kThreads>());
    const int c0 = w.chunk * 8;
    const int64_t kb = s.in_kv + hk * p.k.head_stride + j0 * p.k.token_stride;
    // Every thread group walks the same rows in the same order, so the shuffles
    // below see whole groups (rows past n still join them, with zeros).
    const int rounds = kBlockKv / w.groups;
    // With `stage` (64 x dpad inputs) the block is read once (as in q_quant_block); its loads
    // go out before K's mean is read, so that both latencies overlap.
    if (stage) stage_tile(stage, p.k.data, kb, p.k.token_stride, n, rounds, w, p.head_dim, p.vec_k);
    for (int c = threadIdx.x; c < kMaxHeadDimPad; c += blockDim.x)
        k_mean[c] = (c < p.head_dim && p.smooth_k) ? k_mean_at(p, slot, c, s.len_kv) : 0.f;
    __syncthreads();
    if (stage) stage_ready();
    float km[8], x[8];
    // The block's inputs; with `clean`, NaNs and infinities read as 0 (§6), which only the rare
    // second pass needs (max_keep_nan's note).
    const auto chunk = [&](int j, bool clean, bool& nonfinite) {
        const uint4 u = stage ? stage[j * w.lanes_per_row + w.chunk]
                              : load_chunk_bits(p.k.data, kb + j * p.k.token_stride, c0, p.head_dim, p.vec_k);
        return clean ? finite_chunk<kBf16>(u, nonfinite) : u;
    };
    for (int e = 0; e < 8; ++e) km[e] = k_mean[c0 + e];
    // §3's per-thread groups are rows (j mod 8) / 2. A thread's rows j = r·groups + group have
    // one j mod 8 for even r and one for odd r (the same one when groups is a multiple of 8),
    // so it keeps two maxima and the rows' lanes combine them once, not once a row.
    float a_even, a_odd;
    const auto maxima = [&](bool clean) {
        a_even = a_odd = 0.f;
        bool ignored = false;
        for (int r = 0; r < rounds; ++r) {
            const int j = r * w.groups + w.group;
            if (j < n) {
                float a = 0.f;
                chunk_values<kBf16>(chunk(j, clean, ignored), x);
                for (int e = 0; e < 8; ++e) a = max_keep_nan(a, fabsf(x[e] - km[e]));
                if (r & 1) a_odd = max_keep_nan(a_odd, a);
                else a_even = max_keep_nan(a_even, a);
            }
        }
    };
    maxima(false);
    const bool dirty = __syncthreads_or(!is_finite(max_keep_nan(a_even, a_odd)));
    if (dirty) {
        // Which keys held a NaN or an infinity (§6), and the maxima without them.
        maxima(true);
        for (int r = 0; r < rounds; ++r) {
            const int j = r * w.groups + w.group;
            bool nonfinite = false;
            if (j < n) chunk(j, true, nonfinite);
            nonfinite = group_any(nonfinite, w.lanes_per_row);
            if (w.chunk == 0) sm.token_nonfinite[j] = nonfinite;
        }
    } else if (threadIdx.x < kBlockKv) {
        sm.token_nonfinite[threadIdx.x] = 0;
    }
    a_even = group_max(a_even, w.lanes_per_row);
    a_odd = group_max(a_odd, w.lanes_per_row);
    if (w.chunk == 0) sm.group_amax[w.group][0] = a_even, sm.group_amax[w.group][1] = a_odd;
    __syncthreads();
    static_assert(alg::kKThreadGroups == 4, "per-thread groups are (token mod 8) / 2");
    if (threadIdx.x < 32) {
        const int lane = static_cast<int>(threadIdx.x);
        // Lane g < 4: group g's maximum over the thread groups' parts that hold its rows (a
        // part's rows all share the group of its first, row parity·groups + group).
        float a = 0.f;
        if (lane < alg::kKThreadGroups)
            for (int g = 0; g < w.groups; ++g)
                for (int parity = 0; parity < 2; ++parity)
                    if (alg::k_group_in_block(parity * w.groups + g, SAGEATTN_QK_PER_THREAD) == lane)
                        a = fmaxf(a, sm.group_amax[g][parity]);
        float block = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
        block = fmaxf(block, __shfl_xor_sync(0xffffffffu, block, 2));
        if (lane < alg::kKThreadGroups) {
            const float floored = fmaxf(p.granularity != SAGEATTN_QK_PER_THREAD ? block : a, alg::kAmaxFloor);
            group_inv[lane] = alg::kInt8Max / floored;
            p.k_scale[(hk * p.kv_rows + s.pad_kv + j0) / kBlockKv * alg::kKThreadGroups + lane] = floored / alg::kInt8Max;
        }
        if (lane == 0) atomic_max_nonneg(p.k_amax + static_cast<int64_t>(b) * p.heads_kv + hk, block);
        publish_nonfinite_keys(p, 0, b, hk, s, j0, sm.token_nonfinite);
    }
    __syncthreads();
    // A thread's rows take turns between two K groups (the maxima's note above): both inverses,
    // and where its first row's codes go, worked out once.
    const float inv_even = group_inv[alg::k_group_in_block(w.group, p.granularity)];
    const float inv_odd = group_inv[alg::k_group_in_block(w.groups + w.group, p.granularity)];
    int8_t* codes = p.k_codes + (hk * p.kv_rows + s.pad_kv + j0 + w.group) * dp + c0;
    const int64_t codes_step = static_cast<int64_t>(w.groups) * dp;
    for (int r = 0; r < rounds; ++r, codes += codes_step) {
        const int j = r * w.groups + w.group;
        uint2 word = make_uint2(0u, 0u);  // codes 0 past the sequence
        if (j < n) {
            bool ignored = false;
            chunk_values<kBf16>(chunk(j, dirty, ignored), x);
            word = pack_codes(x, km, (r & 1) ? inv_odd : inv_even);
        }
        *reinterpret_cast<uint2*>(codes) = word;
    }
    if (ends_wide_block_early(j0, s.len_kv)) {
        const int64_t tail = hk * p.kv_rows + s.pad_kv + j0 + kBlockKv;
        zero_rows(reinterpret_cast<uint8_t*>(p.k_codes + tail * p.head_dim_pad), kBlockKv, p.head_dim_pad, p.head_dim_pad);
        if (threadIdx.x < alg::kKThreadGroups) p.k_scale[tail / kBlockKv * alg::kKThreadGroups + threadIdx.x] = 0.f;
    }
}

// FP16 V codes of one 64-key block, transposed to [channel][key] for the P·V B
// operand, each channel scaled by a power of two so that |v| <= 2^9 (§4).
template <bool kBf16>
__device__ __forceinline__ void v_quant_fp16_block(const Params& p, int bx, int hk, int b, VHalfSmem& sm) {
    uint32_t* tile = sm.tile;
    auto& v_mean = sm.v_mean;
    auto& v_mul = sm.v_mul;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(bx) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * p.head_dim_pad;
    for (int c = threadIdx.x; c < kMaxHeadDimPad; c += blockDim.x) {
        const bool real = c < p.head_dim;
        v_mean[c] = (real && p.smooth_v) ? __ldcg(p.v_sum + slot + c) * (1.f / static_cast<float>(s.len_kv)) : 0.f;
        const float amax = real ? as_float(__ldcg(p.v_amax + slot + c)) : 0.f;
        int e = 0;
        if (amax > 0.f) {
            frexpf(amax, &e);
            e = alg::fp16_v_exponent(e);
        }
        v_mul[c] = ldexpf(1.f, -e);  // a power of two: exact scaling
    }
    if (threadIdx.x < kBlockKv) sm.key_nonfinite[threadIdx.x] = 0;
    __syncthreads();
    const Split w(p.head_dim_pad, blockDim.x);
    const int c0 = w.chunk * 8;
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    // A thread takes keys 2·jp and 2·jp + 1 over its 8 channels: one 32-bit word per channel,
    // at word jp ^ chunk of the channel's row, so that a warp's stores spread over the banks.
    constexpr int kWordsPerRow = kBlockKv / 2;
    const uint4 none = make_uint4(0u, 0u, 0u, 0u);
    float mean[8], mul[8];  // the thread's channels' factors, read once
#pragma unroll
    for (int e = 0; e < 8; ++e) mean[e] = v_mean[c0 + e], mul[e] = v_mul[c0 + e];
    // `seen`: max |v − mean| with NaN kept, non-finite when an input was. With `clean`, NaNs and
    // infinities read as 0 and their keys are marked (§6): only the rare second pass (max_keep_nan).
    float seen = 0.f;
    const auto pass = [&](bool clean) {
        for (int jp = w.group; jp < kWordsPerRow; jp += w.groups) {
            const int j = 2 * jp;
            uint4 r0 = j < n ? load_chunk_bits(p.v.data, vb + j * p.v.token_stride, c0, p.head_dim, p.vec_v) : none;
            uint4 r1 = j + 1 < n ? load_chunk_bits(p.v.data, vb + (j + 1) * p.v.token_stride, c0, p.head_dim, p.vec_v) : none;
            if (clean) {
                bool bad0 = false, bad1 = false;
                r0 = finite_chunk<kBf16>(r0, bad0), r1 = finite_chunk<kBf16>(r1, bad1);
                if (bad0) sm.key_nonfinite[j] = 1;
                if (bad1) sm.key_nonfinite[j + 1] = 1;
            }
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int c = c0 + e;
                const bool real = c < p.head_dim;
                const float v0 = (real && j < n) ? chunk_value<kBf16>(r0, e) - mean[e] : 0.f;
                const float v1 = (real && j + 1 < n) ? chunk_value<kBf16>(r1, e) - mean[e] : 0.f;
                seen = max_keep_nan(seen, max_keep_nan(fabsf(v0), fabsf(v1)));
                const uint32_t lo = __half_as_ushort(__float2half_rn(v0 * mul[e]));
                const uint32_t hi = __half_as_ushort(__float2half_rn(v1 * mul[e]));
                tile[c * kWordsPerRow + (jp ^ (w.chunk & 31))] = lo | (hi << 16);
            }
        }
    };
    pass(false);
    if (__syncthreads_or(!is_finite(seen))) pass(true);  // each thread rewrites only its own words
    __syncthreads();
    if (threadIdx.x < 32) publish_nonfinite_keys(p, 1, b, hk, s, j0, sm.key_nonfinite);
    // Rows of 64 keys are contiguous in the workspace: write them as 32-bit words.
    for (int i = threadIdx.x; i < p.head_dim_pad * kWordsPerRow; i += blockDim.x) {
        const int c = i / kWordsPerRow, word = i % kWordsPerRow;
        uint8_t* dst = p.v_codes + ((static_cast<int64_t>(hk) * p.head_dim_pad + c) * p.kv_rows + s.pad_kv + j0) * 2;
        reinterpret_cast<uint32_t*>(dst)[word] = tile[c * kWordsPerRow + (word ^ ((c / 8) & 31))];
    }
    if (ends_wide_block_early(j0, s.len_kv))
        zero_rows(p.v_codes + (static_cast<int64_t>(hk) * p.head_dim_pad * p.kv_rows + s.pad_kv + j0 + kBlockKv) * 2, p.head_dim_pad,
                  kBlockKv * 2, p.kv_rows * 2);
}

// FP8 V codes of one 64-key block, transposed to [channel][key] in the FP8
// B-operand order: inside each 16 keys, position 4t+e holds key 2t + (e&1) + 8(e>>1),
// so that P's m16n8 accumulator pairs feed the k32 A operand without shuffles. A thread takes the four keys that share one 32-bit word of the
// output ({2t, 2t+1, 2t+8, 2t+9} of a 16-key group) over 8 channels, so every
// shared-memory store is a whole word; words are placed at word ^ (channel / 8)
// so that a warp's stores spread over the banks.
template <bool kBf16, int kDp = 0, int kThreads = 0>
__device__ __forceinline__ void v_quant_fp8_block(const Params& p, int bx, int hk, int b, VFp8Smem& sm) {
    auto& tile = sm.tile;
    auto& v_mean = sm.v_mean;
    auto& v_inv = sm.v_inv;
    auto& v_step = sm.v_step;
    auto& warp_err = sm.warp_err;
    const Seq s = sequence(p, b);
    const int64_t j0 = static_cast<int64_t>(bx) * kBlockKv;
    if (j0 >= s.len_kv) return;
    const int n = static_cast<int>(min64(kBlockKv, s.len_kv - j0));
    const int dp = dp_of<kDp>(p), chunks = dp / 8, nthreads = threads_of<kThreads>();
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * dp;
    const float range = alg::fp8_v_range(p.pv_accum);
    // Channel c's factors sit at (c % 8)·chunks + c / 8: the lanes of a warp read element e of
    // their chunks at consecutive words (with [c], 16 lanes 8 words apart hit 4 banks, and those
    // reads kept the L1 95 % busy).
    const auto at = [&](int c) { return (c % 8) * chunks + c / 8; };
    for (int c = threadIdx.x; c < dp; c += nthreads) {
        const bool real = c < p.head_dim;
        v_mean[at(c)] = (real && p.smooth_v) ? __ldcg(p.v_sum + slot + c) * (1.f / static_cast<float>(s.len_kv)) : 0.f;
        const float a = fmaxf(real ? as_float(__ldcg(p.v_amax + slot + c)) : 0.f, alg::kAmaxFloor);
        v_inv[at(c)] = range / a;   // code = e4m3(v · range / a)
        v_step[at(c)] = a / range;  // and back
    }
    if (threadIdx.x < kBlockKv) sm.key_nonfinite[threadIdx.x] = 0;
    __syncthreads();
    const int64_t vb = v_base(p, b, s) + hk * p.v.head_stride + j0 * p.v.token_stride;
    // A thread's units all have the same chunk (blockDim is a multiple of chunks).
    // With `clean`, NaNs and infinities read as 0 and their keys are marked (§6): only the rare
    // second pass, taken when a rounding-error sum came out non-finite (max_keep_nan's note:
    // a NaN input gives a NaN error, ±inf a code of ±448 and an infinite error).
    float err_sum[8];
    const auto pass = [&](bool clean) {
        for (int e = 0; e < 8; ++e) err_sum[e] = 0.f;
        for (int unit = threadIdx.x; unit < 2 * dp; unit += nthreads) {
            const int chunk = unit % chunks, word = unit / chunks, c0 = chunk * 8;
            const int first = 16 * (word / 4) + 2 * (word % 4);
            const int keys[4] = {first, first + 1, first + 8, first + 9};
            uint4 raw[4];  // the inputs' bits: half the registers of their values (occupancy)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                raw[r] = keys[r] < n ? load_chunk_bits(p.v.data, vb + keys[r] * p.v.token_stride, c0, p.head_dim, p.vec_v)
                                     : make_uint4(0u, 0u, 0u, 0u);
            if (clean)
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    bool nonfinite = false;
                    raw[r] = finite_chunk<kBf16>(raw[r], nonfinite);
                    if (nonfinite) sm.key_nonfinite[keys[r]] = 1;
                }
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int c = c0 + e;
                const bool real = c < p.head_dim;
                float v[4];
                const float mean = v_mean[at(c)], inv = v_inv[at(c)], step = v_step[at(c)];
#pragma unroll
                for (int r = 0; r < 4; ++r) v[r] = (real && keys[r] < n) ? chunk_value<kBf16>(raw[r], e) - mean : 0.f;
                const uint16_t lo = ptx::e4m3x2(v[0] * inv, v[1] * inv), hi = ptx::e4m3x2(v[2] * inv, v[3] * inv);
                const float2 blo = ptx::e4m3x2_to_float2(lo), bhi = ptx::e4m3x2_to_float2(hi);
                const float err = (v[0] - blo.x * step) + (v[1] - blo.y * step) + (v[2] - bhi.x * step) + (v[3] - bhi.y * step);
                err_sum[e] += err;
                tile[c * (kBlockKv / 4) + (word ^ (chunk & 15))] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
            }
        }
    };
    pass(false);
    float total = 0.f;
    for (int e = 0; e < 8; ++e) total += err_sum[e];
    if (__syncthreads_or(!is_finite(total))) pass(true);  // each thread rewrites only its own words
    // Lanes with the same chunk are `chunks` apart in a warp: sum them, then the warps.
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int e = 0; e < 8; ++e)
        for (int o = chunks; o < 32; o <<= 1) err_sum[e] += __shfl_xor_sync(0xffffffffu, err_sum[e], o);
    for (int c = threadIdx.x; c < kMaxHeadDimPad; c += nthreads)
        for (int w = 0; w < 8; ++w) warp_err[w][c] = 0.f;
    __syncthreads();
    if (lane < chunks)
#pragma unroll
        for (int e = 0; e < 8; ++e) warp_err[warp][lane * 8 + e] = err_sum[e];
    if (warp == 0) publish_nonfinite_keys(p, 1, b, hk, s, j0, sm.key_nonfinite);
    __syncthreads();
    auto& block_err = sm.block_err;
    auto& totals = sm.totals;
    for (int c = threadIdx.x; c < dp; c += nthreads) {
        float sum = 0.f;
        for (int w = 0; w < 8; ++w) sum += warp_err[w][c];
        block_err[c] = sum;
    }
    __syncthreads();
    const int64_t pair = static_cast<int64_t>(b) * p.heads_kv + hk;
    const int parts_n = static_cast<int>((s.len_kv + kBlockKv - 1) / kBlockKv);
    if (ordered_total(p.err_parts + pair * p.err_chunks * dp, dp, bx, parts_n, block_err, dp,
                      p.tickets + static_cast<int64_t>(p.batch) * p.heads_kv + pair, totals))
        for (int c = threadIdx.x; c < p.head_dim; c += nthreads) p.v_err[slot + c] = totals[c];
    // Rows of 64 keys are contiguous in the workspace: 16-byte stores.
    for (int i = threadIdx.x; i < dp * 4; i += nthreads) {
        const int c = i / 4, part = i % 4, key = (c / 8) & 15;
        const uint32_t* row = tile + c * (kBlockKv / 4);
        const uint4 w = make_uint4(row[(4 * part) ^ key], row[(4 * part + 1) ^ key], row[(4 * part + 2) ^ key],
                                   row[(4 * part + 3) ^ key]);
        *reinterpret_cast<uint4*>(p.v_codes + (static_cast<int64_t>(hk) * dp + c) * p.kv_rows + s.pad_kv + j0 + 16 * part) = w;
    }
    if (ends_wide_block_early(j0, s.len_kv))
        zero_rows(p.v_codes + static_cast<int64_t>(hk) * dp * p.kv_rows + s.pad_kv + j0 + kBlockKv, dp, kBlockKv, p.kv_rows);
}

// One tile of `tile_rows` query rows (kQuantRows, or half of it: q_tile_rows) of one
// (sequence, head): codes, scales with scale·log2(e) folded in, the LSE shift, and the head's
// amax (§3, §5, §6).
template <bool kBf16, int kDp = 0, int kThreads = 0>
__device__ __forceinline__ void q_quant_block(const Params& p, int bx, int h, int b, QSmem& sm, uint4* stage = nullptr,
                                              int tile_rows = kQuantRows) {
    auto& k_mean = sm.k_mean;
    auto& row_amax = sm.row_amax;
    auto& row_dot = sm.row_dot;
    auto& row_inv = sm.row_inv;
    const int hk = h / p.group;
    const Seq s = sequence(p, b);
    const int64_t i0 = static_cast<int64_t>(bx) * tile_rows;
    if (i0 >= s.len_q) return;
    const int64_t qb = s.in_q + h * p.q.head_stride;
    const int dp = dp_of<kDp>(p);
    const int64_t kslot = (static_cast<int64_t>(b) * p.heads_kv + hk) * dp;
    const Split w(dp, threads_of<kThreads>());
    const int c0 = w.chunk * 8;
    const int rounds = tile_rows / w.groups;
    // With `stage` (tile_rows x dpad 16-bit inputs), the tile is read once, its copies in
    // flight while K's mean is read, and kept for the codes; else the codes read it again.
    const auto at = [&](int local) { return local * w.lanes_per_row + w.chunk; };
    if (stage) stage_tile(stage, p.q.data, qb + i0 * p.q.token_stride, p.q.token_stride, s.len_q - i0, rounds, w, p.head_dim, p.vec_q);
    for (int c = threadIdx.x; c < kMaxHeadDimPad; c += blockDim.x)
        k_mean[c] = (c < p.head_dim && p.smooth_k && s.len_kv > 0) ? k_mean_at(p, kslot, c, s.len_kv) : 0.f;
    __syncthreads();
    if (stage) stage_ready();
    float km[8], x[8], zero[8] = {};
    for (int e = 0; e < 8; ++e) km[e] = k_mean[c0 + e];
    // The tile's inputs; with `clean`, NaNs and infinities read as 0 (§6), which only the rare
    // second pass needs (max_keep_nan's note).
    const auto chunk = [&](int local, int64_t i, bool clean, bool& nonfinite) {
        const uint4 u = stage ? stage[at(local)] : load_chunk_bits(p.q.data, qb + i * p.q.token_stride, c0, p.head_dim, p.vec_q);
        return clean ? finite_chunk<kBf16>(u, nonfinite) : u;
    };
    float seen = 0.f;  // the thread's rows' max |q| with NaN kept: non-finite when an input was
    const auto rows = [&](bool clean) {
        for (int r = 0; r < rounds; ++r) {
            const int local = r * w.groups + w.group;
            const int64_t i = i0 + local;
            float a = 0.f, dot = 0.f;
            bool nonfinite = false;
            if (i < s.len_q) {
                chunk_values<kBf16>(chunk(local, i, clean, nonfinite), x);
                for (int e = 0; e < 8; ++e) a = max_keep_nan(a, fabsf(x[e])), dot += x[e] * km[e];
            }
            seen = max_keep_nan(seen, a);
            a = group_max(a, w.lanes_per_row);
            dot = group_sum(dot, w.lanes_per_row);
            if (clean) nonfinite = group_any(nonfinite, w.lanes_per_row);
            if (w.chunk == 0) row_amax[local] = a, row_dot[local] = dot, sm.row_nonfinite[local] = nonfinite;
        }
    };
    rows(false);
    const bool dirty = __syncthreads_or(!is_finite(seen));
    if (dirty) {
        rows(true);
        __syncthreads();
    }
    // A thread a row; a warp's 32 rows are a per-warp group, and within it the rows
    // with the same index mod 8 a per-thread group (§3): maxima by shuffles.
    static_assert(alg::kQWarpRows == 32 && alg::kQThreadGroups == 8, "the shuffles follow §3's Q groups");
    float group = 0.f;
    if (threadIdx.x < tile_rows) {
        float a = row_amax[threadIdx.x];
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 8));
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 16));
        float warp_max = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, 1));
        warp_max = fmaxf(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, 2));
        warp_max = fmaxf(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, 4));
        group = p.granularity == SAGEATTN_QK_PER_THREAD ? a : warp_max;
        if (threadIdx.x % 32 == 0) sm.warp_amax[threadIdx.x / 32] = warp_max;
    }
    __syncthreads();
    if (threadIdx.x < tile_rows) {
        const int local = threadIdx.x;
        const int64_t i = i0 + local;
        float block = 0.f;
        for (int w4 = 0; w4 < tile_rows / 32; ++w4) block = fmaxf(block, sm.warp_amax[w4]);
        if (p.granularity == SAGEATTN_QK_PER_BLOCK) group = block;
        const float floored = fmaxf(group, alg::kAmaxFloor);
        row_inv[local] = alg::kInt8Max / floored;
        const int64_t row = h * p.q_rows + s.pad_q + i;
        p.q_scale[row] = i < s.len_q ? (floored / alg::kInt8Max) * p.scale_log2 : 0.f;
        // A row that held a NaN or an infinity is marked by a NaN shift (§6; the epilogue reads it).
        p.q_shift[row] = i < s.len_q && sm.row_nonfinite[local] ? NAN : (i < s.len_q && p.smooth_k) ? p.scale * row_dot[local] : 0.f;
        if (local == 0) atomic_max_nonneg(p.q_amax + static_cast<int64_t>(b) * p.heads_q + h, block);
        if (i < s.len_q && sm.row_nonfinite[local]) atomicOr(p.q_nonfinite + static_cast<int64_t>(b) * p.heads_q + h, 1u);
    }
    __syncthreads();
    int8_t* codes = p.q_codes + (h * p.q_rows + s.pad_q + i0 + w.group) * dp + c0;  // the thread's first row
    const int64_t codes_step = static_cast<int64_t>(w.groups) * dp;
    for (int r = 0; r < rounds; ++r, codes += codes_step) {
        const int local = r * w.groups + w.group;
        const int64_t i = i0 + local;
        bool ignored = false;
        if (stage || i < s.len_q) chunk_values<kBf16>(chunk(local, i, dirty, ignored), x);  // staged: zeros past the sequence
        else for (int e = 0; e < 8; ++e) x[e] = 0.f;
        *reinterpret_cast<uint2*>(codes) = pack_codes(x, zero, row_inv[local]);
    }
}

// How many items of each kind one launch of the prep kernel runs, in the order of
// their indices: sums, V codes, K codes, Q codes.
struct Items {
    uint32_t sum_blocks, kv_blocks, q_blocks;  // per (sequence, head), along the sequence
    uint32_t sums, v, k, q;                    // in all
};

// Every quantization step in one launch (§3, §4): each CTA takes the next item index
// (a ticket, so indices follow the order CTAs start in); codes items wait for their
// head's sums. 256 threads: the K and Q items were written for any multiple of 32.
template <bool kBf16, bool kFp8>
__global__ void __launch_bounds__(256) prep_kernel(Params p, Items n) {
    __shared__ PrepSmem sm;
    __shared__ uint32_t taken;
    if (threadIdx.x == 0) taken = atomicAdd(p.next_item, 1u);
    __syncthreads();
    uint32_t i = taken;
    auto split = [](uint32_t i, uint32_t along, uint32_t heads, int& x, int& h, int& b) {
        x = static_cast<int>(i % along);
        i /= along;
        h = static_cast<int>(i % heads);
        b = static_cast<int>(i / heads);
    };
    const uint32_t hkv = static_cast<uint32_t>(p.heads_kv);
    int x, h, b;
    if (i < n.sums) {
        split(i, n.sum_blocks, hkv, x, h, b);
        kv_sums_block<kBf16>(p, x, h, b, sm.sums);
        return;
    }
    i -= n.sums;
    if (i < n.v + n.k) {
        const bool v = i < n.v;
        split(v ? i : i - n.v, n.kv_blocks, hkv, x, h, b);
        const Seq s = sequence(p, b);
        if (static_cast<int64_t>(x) * kBlockKv >= s.len_kv) return;
        wait_ready(p, b, h);
        if (!v) k_quant_block<kBf16>(p, x, h, b, sm.k);
        else if constexpr (kFp8) v_quant_fp8_block<kBf16>(p, x, h, b, sm.v_fp8);
        else v_quant_fp16_block<kBf16>(p, x, h, b, sm.v_half);
        return;
    }
    split(i - n.v - n.k, n.q_blocks, static_cast<uint32_t>(p.heads_q), x, h, b);
    const Seq s = sequence(p, b);
    if (static_cast<int64_t>(x) * kQuantRows >= s.len_q) return;
    if (p.smooth_k && s.len_kv > 0) wait_ready(p, b, h / p.group);  // K's mean: the LSE shift
    q_quant_block<kBf16>(p, x, h, b, sm.q);
}

// The same items as one kernel each, with grids of (block along the sequence, head,
// sequence) and stream order between them: for problems large enough that launch
// costs vanish. K and Q items run 128 threads a CTA here, for occupancy.
__device__ __forceinline__ int grid_x() { return static_cast<int>(blockIdx.x); }
__device__ __forceinline__ int grid_y() { return static_cast<int>(blockIdx.y); }
__device__ __forceinline__ int grid_z() { return static_cast<int>(blockIdx.z); }

// Each kernel below is instantiated per padded head dim DP (dp_of), its CTA size a constant.
// Four CTAs an SM (64 registers, a few bytes spilled): at three (72 registers) the pass ran
// 15 % slower with fewer loads in flight (docs/PERF.md).
template <bool kBf16, int DP>
__global__ void __launch_bounds__(256, 4) kv_sums_kernel(Params p) {
    __shared__ SumsSmem sm;
    kv_sums_block<kBf16, DP, 256>(p, grid_x(), grid_y(), grid_z(), sm);
}
template <bool kBf16, int DP>
__global__ void __launch_bounds__(128) k_quant_kernel(Params p) {
    __shared__ KSmem sm;
    extern __shared__ uint4 stage[];  // kBlockKv x dpad inputs
    k_quant_block<kBf16, DP, 128>(p, grid_x(), grid_y(), grid_z(), sm, stage);
}
template <bool kFp8>
using VSmem = std::conditional_t<kFp8, VFp8Smem, VHalfSmem>;
// Five CTAs an SM: the registers for no spills (at six, 40 registers, the spills and the
// channel factors' reads kept the L1 95 % busy; docs/PERF.md).
template <bool kBf16, bool kFp8, int DP>
__global__ void __launch_bounds__(256, min_ctas(5, sizeof(VSmem<kFp8>))) v_quant_kernel(Params p) {
    __shared__ VSmem<kFp8> sm;
    if constexpr (kFp8) v_quant_fp8_block<kBf16, DP, 256>(p, grid_x(), grid_y(), grid_z(), sm);
    else v_quant_fp16_block<kBf16>(p, grid_x(), grid_y(), grid_z(), sm);
}
// 64-row tiles where §3's Q groups allow (per-thread and per-warp groups lie in 32-row slabs;
// a per-block group is 128 rows) and the 128-row staged tile would pass 16 KB (d128 and up):
// half the shared memory, so twice the CTAs fit an SM (at d128, 128 rows held the kernel to
// 6 CTAs an SM, 36 % occupancy). At d64 the 128-row tile is 16 KB and stays: 64 rows there
// ran 85.7 against 80.3 µs (docs/PERF.md).
inline int q_tile_rows(const Params& p) {
    const bool small_stage = kQuantRows * p.head_dim_pad * 2 <= 16 * 1024;
    return p.granularity == SAGEATTN_QK_PER_BLOCK || small_stage ? kQuantRows : kQuantRows / 2;
}
template <bool kBf16, int DP>
__global__ void __launch_bounds__(128) q_quant_kernel(Params p, int tile_rows) {
    __shared__ QSmem sm;
    extern __shared__ uint4 stage[];  // tile_rows x dpad inputs
    q_quant_block<kBf16, DP, 128>(p, grid_x(), grid_y(), grid_z(), sm, stage, tile_rows);
}

// The standalone kernels of padded head dim DP, in stream order.
template <bool kBf16, bool kFp8, int DP>
void launch_passes(const Params& p, int64_t sum_blocks, int64_t kv_blocks, int64_t q_blocks, cudaStream_t stream) {
    const auto grid = [&](int64_t along, int heads) { return dim3(static_cast<unsigned>(along), heads, p.batch); };
    if (kv_blocks > 0) {
        kv_sums_kernel<kBf16, DP><<<grid(sum_blocks, p.heads_kv), 256, 0, stream>>>(p);  // also V's range
        k_quant_kernel<kBf16, DP><<<grid(kv_blocks, p.heads_kv), 128, kBlockKv * DP * 2, stream>>>(p);
        v_quant_kernel<kBf16, kFp8, DP><<<grid(kv_blocks, p.heads_kv), 256, 0, stream>>>(p);
    }
    if (q_blocks > 0) {
        const int rows = q_tile_rows(p);
        const int stage = rows * DP * 2;  // up to 64 KiB: past the default 48
        cudaFuncSetAttribute(q_quant_kernel<kBf16, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, stage);
        q_quant_kernel<kBf16, DP><<<grid((p.max_len_q + rows - 1) / rows, p.heads_q), 128, stage, stream>>>(p, rows);
    }
}
// The instance of padded head dim dp, picked as backend.cu picks the attention launchers
// (every dp padded_head_dim gives is one of the registry's).
using LaunchPasses = void (*)(const Params&, int64_t, int64_t, int64_t, cudaStream_t);
template <bool kBf16, bool kFp8, size_t... I>
LaunchPasses passes_launcher(int dp, std::index_sequence<I...>) {
    LaunchPasses found = nullptr;
    ((dp == kMmaHeadDims[I] ? (found = launch_passes<kBf16, kFp8, kMmaHeadDims[I]>, true) : false) || ...);
    return found;
}

template <bool kBf16, bool kFp8>
void quantize_typed(const Params& p, int64_t one_launch_items, cudaStream_t stream) {
    const auto blocks = [](int64_t len, int rows) { return (len + rows - 1) / rows; };
    const int64_t sum_blocks = blocks(p.max_len_kv, kSumRows), kv_blocks = blocks(p.max_len_kv, kBlockKv);
    const int64_t q_blocks = blocks(p.max_len_q, kQuantRows);
    const int64_t kv_heads = int64_t{p.batch} * p.heads_kv, q_heads = int64_t{p.batch} * p.heads_q;
    const int64_t total = (sum_blocks + 2 * kv_blocks) * kv_heads + q_blocks * q_heads;
    if (total == 0) return;
    if (total <= one_launch_items) {
        const auto u = [](int64_t x) { return static_cast<uint32_t>(x); };
        const Items n{u(sum_blocks), u(kv_blocks), u(q_blocks),
                      u(sum_blocks * kv_heads), u(kv_blocks * kv_heads), u(kv_blocks * kv_heads), u(q_blocks * q_heads)};
        prep_kernel<kBf16, kFp8><<<u(total), 256, 0, stream>>>(p, n);
        return;
    }
    passes_launcher<kBf16, kFp8>(p.head_dim_pad, std::make_index_sequence<std::size(kMmaHeadDims)>())(
        p, sum_blocks, kv_blocks, q_blocks, stream);
}

}  // namespace

void launch_quantize(const Params& p, int64_t one_launch_items, cudaStream_t stream) {
    const auto run = p.bf16 ? (p.pv_fp8 ? quantize_typed<true, true> : quantize_typed<true, false>)
                            : (p.pv_fp8 ? quantize_typed<false, true> : quantize_typed<false, false>);
    run(p, one_launch_items, stream);
}

}  // namespace sageattn::cuda
