// Device helpers shared by the quantization and attention kernels.
#pragma once

#include <cstdint>

#include "cuda/params.hpp"
#include "cuda/ptx/cvt.cuh"

namespace sageattn::cuda {

// §6's P offset (common/algorithm.hpp) by the name the attention kernels use.
using alg::kFp8POffset;

// Shared memory of one SM on the architecture being compiled (the CUDA programming guide's
// table): 100 KB on sm_86, sm_89 and sm_12x, 164 KB on sm_80 and sm_87, 228 KB on sm_90 and
// sm_100 (and taken for any other).
constexpr int sm_shared_bytes() {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 860 || __CUDA_ARCH__ == 890 || (__CUDA_ARCH__ >= 1200 && __CUDA_ARCH__ < 1300))
    return 100 * 1024;
#elif defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 800 || __CUDA_ARCH__ == 870)
    return 164 * 1024;
#else
    return 228 * 1024;
#endif
}

// The CTAs per SM a kernel's launch bounds cut registers for: `wanted`, or as many CTAs of
// `cta_bytes` of shared memory as the SM holds if that is fewer (each also reserves 1 KB).
// Cutting registers for CTAs that cannot be resident buys nothing and can spill.
constexpr int min_ctas(int wanted, int cta_bytes) {
    const int fit = sm_shared_bytes() / (cta_bytes + 1024);
    return fit < 1 ? 1 : (fit < wanted ? fit : wanted);
}

// Geometry of sequence b (§1): lengths and the first row in the input tensors
// and in the padded workspace layouts.
struct Seq {
    int64_t len_q, len_kv;
    int64_t in_q, in_kv;    // element offset of (b, head 0, token 0) in q / k,v (and out for in_q via out strides)
    int64_t row_q, row_kv;  // token index of token 0 in the packed numbering (varlen: cu[b])
    int64_t pad_q, pad_kv;  // first padded workspace row
};

__device__ __forceinline__ Seq sequence(const Params& p, int b) {
    Seq s;
    if (p.cu_seqlens_q) {
        // The one place every kernel reads cu_seqlens: clamped to the tensors (params.hpp),
        // whatever they hold.
        const SeqRows q = clamp_sequence(p.cu_seqlens_q[b], p.cu_seqlens_q[b + 1], p.len_q, p.max_len_q);
        const SeqRows k = clamp_sequence(p.cu_seqlens_kv[b], p.cu_seqlens_kv[b + 1], p.len_kv, p.max_len_kv);
        s.len_q = q.len;
        s.len_kv = k.len;
        s.row_q = q.start;
        s.row_kv = k.start;
        s.in_q = q.start * p.q.token_stride;
        s.in_kv = k.start * p.k.token_stride;
    } else {
        s.len_q = p.len_q;
        s.len_kv = p.len_kv;
        s.row_q = b * p.len_q;
        s.row_kv = b * p.len_kv;
        s.in_q = b * p.q.batch_stride;
        s.in_kv = b * p.k.batch_stride;
    }
    s.pad_q = padded_start(s.row_q, b, kQuantRows);
    s.pad_kv = padded_start(s.row_kv, b, kWideBlockKv);
    return s;
}

// The query tile along the sequence of the CTA at x along the grid (this CTA's by default).
// Causal tiles further down see more keys: they are issued first, so that the grid ends on
// short tiles.
__device__ __forceinline__ int64_t query_tile(const Params& p, int64_t x) {
    return p.causal ? static_cast<int64_t>(gridDim.x) - 1 - x : x;
}
__device__ __forceinline__ int64_t query_tile(const Params& p) { return query_tile(p, blockIdx.x); }

// Offset of token 0 of sequence b in v (its strides may differ from k's).
__device__ __forceinline__ int64_t v_base(const Params& p, int b, const Seq& s) {
    return p.cu_seqlens_kv ? s.row_kv * p.v.token_stride : b * p.v.batch_stride;
}
__device__ __forceinline__ int64_t out_base(const Params& p, int b, const Seq& s) {
    return p.cu_seqlens_q ? s.row_q * p.out_token_stride : b * p.out_batch_stride;
}

// §5: whether the heads's scores are too sharp for INT8 Q·Kᵀ (σ estimate over the threshold).
__device__ __forceinline__ bool sharp_scores(const Params& p, int b, int h) {
    const float qmax = __uint_as_float(p.q_amax[static_cast<int64_t>(b) * p.heads_q + h]);
    const float kmax = __uint_as_float(p.k_amax[static_cast<int64_t>(b) * p.heads_kv + h / p.group]);
    return alg::sharpness(fabsf(p.scale), sqrtf(static_cast<float>(p.head_dim)), qmax, kmax) > p.sharp_threshold;
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// Non-negative floats order like their bit patterns.
__device__ __forceinline__ void atomic_max_nonneg(uint32_t* slot, float value) {
    atomicMax(slot, __float_as_uint(value));
}
__device__ __forceinline__ float as_float(uint32_t bits) { return __uint_as_float(bits); }

template <bool kBf16>
__device__ __forceinline__ float load_input(const void* base, int64_t index) {
    return ptx::load16<kBf16>(static_cast<const uint16_t*>(base) + index);
}

// Channels c0..c0+7 of one row (zeros past head_dim), as the inputs' 16-bit patterns
// (load_chunk_bits), as floats (chunk_values) or both at once (load_chunk): one 16-byte
// load when the view allows it (`vec`: 16-byte aligned base, strides multiples of 8),
// else 2-byte loads.
__device__ __forceinline__ uint4 load_chunk_bits(const void* base, int64_t row, int c0, int head_dim, bool vec) {
    const uint16_t* ptr = static_cast<const uint16_t*>(base) + row + c0;
    if (vec && c0 + 8 <= head_dim) return *reinterpret_cast<const uint4*>(ptr);
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t lo = c0 + 2 * i < head_dim ? ptr[2 * i] : 0u, hi = c0 + 2 * i + 1 < head_dim ? ptr[2 * i + 1] : 0u;
        w[i] = lo | (hi << 16);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}
// Element e of a chunk's bits (e a constant after unrolling).
template <bool kBf16>
__device__ __forceinline__ float chunk_value(const uint4& u, int e) {
    const uint32_t w = e < 2 ? u.x : (e < 4 ? u.y : (e < 6 ? u.z : u.w));
    const uint16_t h = static_cast<uint16_t>((e & 1) ? w >> 16 : w & 0xffffu);
    return ptx::load16<kBf16>(&h);
}
template <bool kBf16>
__device__ __forceinline__ void chunk_values(uint4 u, float (&x)[8]) {
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] = chunk_value<kBf16>(u, e);
}
template <bool kBf16>
__device__ __forceinline__ void load_chunk(const void* base, int64_t row, int c0, int head_dim, bool vec, float (&x)[8]) {
    chunk_values<kBf16>(load_chunk_bits(base, row, c0, head_dim, vec), x);
}

// §6's non-finite rule as the quantizers apply it, on a chunk's 16-bit patterns: NaNs and
// infinities (exponent all ones) read as +0, so that they reach no statistic or code, and
// `nonfinite` is set when there was one. Almost no chunk holds one, so one test of the whole
// chunk comes first (three integer operations a word) and the lane masks only after it.
template <bool kBf16>
__device__ __forceinline__ uint4 finite_chunk(uint4 u, bool& nonfinite) {
    constexpr uint32_t kExp = kBf16 ? 0x7f807f80u : 0x7c007c00u;
    // ~w & kExp is 0 in a lane exactly when its exponent is all ones; its top bit is always
    // clear, so x − 1 sets a lane's top bit only where the lane is 0 (a borrow from a zero lane
    // below can set the next one's too, but only when there is a zero lane anyway).
    const auto zero_lanes = [](uint32_t w) {
        const uint32_t x = ~w & kExp;
        return (x - 0x00010001u) & ~x & 0x80008000u;
    };
    if ((zero_lanes(u.x) | zero_lanes(u.y) | zero_lanes(u.z) | zero_lanes(u.w)) == 0u) return u;
    const uint32_t m0 = __vcmpeq2(u.x & kExp, kExp), m1 = __vcmpeq2(u.y & kExp, kExp);
    const uint32_t m2 = __vcmpeq2(u.z & kExp, kExp), m3 = __vcmpeq2(u.w & kExp, kExp);
    nonfinite = nonfinite || (m0 | m1 | m2 | m3) != 0u;
    return make_uint4(u.x & ~m0, u.y & ~m1, u.z & ~m2, u.w & ~m3);
}
template <bool kBf16>
__device__ __forceinline__ uint4 finite_chunk(uint4 u) {
    bool ignored = false;
    return finite_chunk<kBf16>(u, ignored);
}


// The quantizers' cheap test for §6's non-finite rule: a statistic they compute anyway (a
// maximum of |x| taken with max_keep_nan, a sum, a rounding error) turns NaN or infinite
// when an input was, so one test of it per thread, and a CTA-wide vote, tell whether to
// redo the block with finite_chunk (the rare path). A finite input can overflow a sum or a
// difference too; the redo then finds nothing to clear and gives the same result.
__device__ __forceinline__ float max_keep_nan(float a, float b) {  // PTX max.NaN: NaN wins (sm_80+)
    float d;
    asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
    return d;
}
__device__ __forceinline__ bool is_finite(float x) { return fabsf(x) <= 3.402823466e38f; }  // false for NaN

// Reductions over the `width` lanes (a power of two) that share one row.
__device__ __forceinline__ float group_max(float x, int width) {
    for (int o = width / 2; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float group_sum(float x, int width) {
    for (int o = width / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ bool group_any(bool x, int width) {
    int v = x ? 1 : 0;
    for (int o = width / 2; o > 0; o >>= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
    return v != 0;
}

// §6's running maximum of the two rows a thread holds (g and g + 8 of an m16 tile): the
// block's maximum over the row's four threads, the new m, and alpha = exp2(m_old − m_new),
// which rescales what was summed under m_old (1 while no key has been visible).
__device__ __forceinline__ void advance_row_max(float (&block_max)[2], float (&m)[2], float (&alpha)[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 1));
        block_max[r] = fmaxf(block_max[r], __shfl_xor_sync(0xffffffffu, block_max[r], 2));
        const float m_new = fmaxf(m[r], block_max[r]);
        alpha[r] = m_new == -INFINITY ? 1.f : ptx::exp2_approx(m[r] - m_new);
        m[r] = m_new;
    }
}

// §6: the mask entry of (i, j) as visibility plus a saturated log2-unit bias.
__device__ __forceinline__ bool mask_entry(const Params& p, int b, int h, int64_t i, int64_t j, float* bias) {
    *bias = 0.0f;
    if (p.mask_type == SAGEATTN_MASK_NONE) return true;
    const int64_t idx = b * p.mask_batch_stride + h * p.mask_head_stride + i * p.mask_q_stride + j * p.mask_kv_stride;
    if (p.mask_type == SAGEATTN_MASK_BOOL) return static_cast<const uint8_t*>(p.mask)[idx] != 0;
    float x;
    if (p.mask_dtype == SAGEATTN_DTYPE_FP32) x = static_cast<const float*>(p.mask)[idx];
    else if (p.mask_dtype == SAGEATTN_DTYPE_BF16) x = ptx::load16<true>(static_cast<const uint16_t*>(p.mask) + idx);
    else x = ptx::load16<false>(static_cast<const uint16_t*>(p.mask) + idx);
    if (x == -INFINITY) return false;
    *bias = alg::bias_log2(x);  // saturated as on the CPU, a NaN kept
    return true;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// §1, §6: score s of query i and key j after visibility (sequence ends, causal
// bottom-right, the mask) and the additive bias; −inf where the key is hidden.
__device__ __forceinline__ float visible_score(const Params& p, int b, int h, int64_t i, int64_t j, int64_t lq,
                                               int64_t lkv, float s) {
    bool visible = j < lkv && i < lq && (!p.causal || j <= i + lkv - lq);
    float bias = 0.f;
    if (visible && p.mask_type != SAGEATTN_MASK_NONE) visible = mask_entry(p, b, h, i, j, &bias);
    return visible ? s + bias : -INFINITY;
}

// The epilogue's per-channel V factors (§4, §6): out = acc/l · scale[c] + offset[c], from one
// channel's V statistics as the quantization kernels left them. A statistic the problem does
// not have (a padding channel's, the sum without smooth V, the error with FP16 V) reads as 0.
struct VColumnInputs {
    float amax = 0.f, sum = 0.f, err = 0.f;
};
// Where they are in the workspace, and which of them the problem has. Every pointer is a
// readable address even where its statistic is absent (a zero-length cp.async reads nothing).
struct VColumnSource {
    const uint32_t* amax;  // float bits
    const float *sum, *err;
    bool real, has_sum, has_err;
};
template <int DP, bool kFp8>
__device__ __forceinline__ VColumnSource v_column_source(const Params& p, int b, int hk, int c) {
    const int64_t slot = (static_cast<int64_t>(b) * p.heads_kv + hk) * DP + c;
    const bool real = c < p.head_dim;
    return {p.v_amax + slot, p.v_sum + slot, kFp8 ? p.v_err + slot : p.v_sum + slot, real, real && p.smooth_v,
            real && kFp8};
}
template <int DP, bool kFp8>
__device__ __forceinline__ VColumnInputs load_v_column(const Params& p, int b, int hk, int c) {
    const VColumnSource src = v_column_source<DP, kFp8>(p, b, hk, c);
    VColumnInputs in;
    if (src.real) in.amax = as_float(*src.amax);
    if (src.has_sum) in.sum = *src.sum;
    if (src.has_err) in.err = *src.err;
    return in;
}
template <bool kFp8>
__device__ __forceinline__ void v_column_factors(const Params& p, const VColumnInputs& in, int64_t len_kv,
                                                 float& scale, float& offset) {
    const float inv_len = len_kv > 0 ? 1.f / static_cast<float>(len_kv) : 0.f;
    offset = in.sum * inv_len;
    if constexpr (kFp8) {
        scale = fmaxf(in.amax, alg::kAmaxFloor) / alg::fp8_v_range(p.pv_accum);
        offset = offset + in.err * inv_len;
    } else {
        int ex = 0;
        if (in.amax > 0.f) {
            frexpf(in.amax, &ex);
            ex = alg::fp16_v_exponent(ex);
        }
        scale = ldexpf(1.f, ex);
    }
}
// All of a CTA's channels by its threads (the caller synchronises).
template <int DP, bool kFp8>
__device__ __forceinline__ void stage_v_columns(const Params& p, int b, int hk, int64_t len_kv, float* scale,
                                                float* offset) {
    for (int c = threadIdx.x; c < DP; c += blockDim.x)
        v_column_factors<kFp8>(p, load_v_column<DP, kFp8>(p, b, hk, c), len_kv, scale[c], offset[c]);
}

// Whether output channels (2t, 2t + 1) can be stored as one 32-bit word.
__device__ __forceinline__ bool out_pairs(const Params& p) {
    return (reinterpret_cast<uintptr_t>(p.out) & 3) == 0 && p.out_token_stride % 2 == 0 && p.out_head_stride % 2 == 0 &&
           p.out_batch_stride % 2 == 0;
}

// Two output values as one 32-bit word of 16-bit ones, `lo` in the low half.
template <bool kBf16>
__device__ __forceinline__ uint32_t pack_output_pair(float lo, float hi) {
    return static_cast<uint32_t>(ptx::store16<kBf16>(lo)) | (static_cast<uint32_t>(ptx::store16<kBf16>(hi)) << 16);
}

// Channels c and c + 1 of an output row (c even; c + 1 dropped past head_dim).
template <bool kBf16>
__device__ __forceinline__ void store_channel_pair(uint16_t* row, int c, int head_dim, bool pairs, float v0, float v1) {
    const uint32_t pair = pack_output_pair<kBf16>(v0, v1);
    if (pairs && c + 1 < head_dim) {
        *reinterpret_cast<uint32_t*>(row + c) = pair;
    } else {
        row[c] = static_cast<uint16_t>(pair);
        if (c + 1 < head_dim) row[c + 1] = static_cast<uint16_t>(pair >> 16);
    }
}

// §6's output of one row from its accumulators: out = acc / l · v_scale + v_offset, zeros for
// a row that saw no key. A row with m = −inf is empty only if l = 0: a NaN score leaves m
// alone but l NaN, and the row comes out NaN.
struct RowOutput {
    bool empty;
    float inv_l;
    __device__ __forceinline__ RowOutput(float m, float l) : empty(m == -INFINITY && l == 0.f), inv_l(empty ? 0.f : 1.f / l) {}
    // Channel c of the row from its accumulator.
    __device__ __forceinline__ float operator()(float acc, const float* v_scale, const float* v_offset, int c) const {
        return empty ? 0.f : acc * inv_l * v_scale[c] + v_offset[c];
    }
};

// One output row's channels of a thread, (2t, 2t + 1) of each n8 tile (§6).
// acc(ot, e) is the accumulator of tile ot, channel 2t + e.
template <bool kBf16, int kOT, class Acc>
__device__ __forceinline__ void store_output_row(uint16_t* row, const Params& p, int t, bool pairs, RowOutput out,
                                                 const float* v_scale, const float* v_offset, Acc acc) {
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) {
        const int c = ot * 8 + 2 * t;
        if (c >= p.head_dim) continue;
        store_channel_pair<kBf16>(row, c, p.head_dim, pairs, out(acc(ot, 0), v_scale, v_offset, c),
                                  out(acc(ot, 1), v_scale, v_offset, c + 1));
    }
}

// Where row `row` of sequence b, head h keeps its LSE.
__device__ __forceinline__ int64_t lse_index(const Params& p, int b, int h, const Seq& s, int64_t row) {
    return p.cu_seqlens_q ? h * p.lse_head_stride + (s.row_q + row) * p.lse_token_stride
                          : b * p.lse_batch_stride + h * p.lse_head_stride + row * p.lse_token_stride;
}

// §6's non-finite rule, its rare part. The quantizers mark a q row that held a NaN or an
// infinity (a NaN LSE shift) and a key whose k or v did (one bit a key), and raise a flag per
// (sequence, head) and per (sequence, KV head). Only where one is raised do the thread's rows
// that hold a mark, or see a marked key (below the causal end, the mask read for the marked
// keys alone), get NaN in place of what store_rows wrote. It runs after the stores, with the
// accumulators dead, so the key loop and its registers are untouched.
__device__ __forceinline__ bool row_sees_marked_key(const Params& p, int b, int h, const Seq& s, int64_t row) {
    const int64_t end = p.causal ? max64(0, min64(s.len_kv, row + s.len_kv - s.len_q + 1)) : s.len_kv;
    const int64_t blocks = static_cast<int64_t>(p.heads_kv) * p.kv_rows / kBlockKv;
    const uint64_t* k_marks = p.key_nonfinite + (static_cast<int64_t>(h / p.group) * p.kv_rows + s.pad_kv) / kBlockKv;
    const uint64_t* v_marks = k_marks + blocks;
    for (int64_t w = 0; w * kBlockKv < end; ++w) {
        uint64_t marks = k_marks[w] | v_marks[w];
        if (end - w * kBlockKv < kBlockKv) marks &= (uint64_t{1} << (end - w * kBlockKv)) - 1;
        for (; marks != 0; marks &= marks - 1) {
            float bias;
            const int64_t j = w * kBlockKv + __ffsll(static_cast<long long>(marks)) - 1;
            if (p.mask_type == SAGEATTN_MASK_NONE || mask_entry(p, b, h, row, j, &bias)) return true;
        }
    }
    return false;
}
// The flags of (sequence b, head h) the quantizers raised, one bit each (q: 1, k: 2): a kernel
// may read them early, where their latency hides (the sm_90a kernel, before its key loop; read
// at the end, each CTA's last instruction waited on them).
constexpr uint32_t kQMarked = 1u, kKMarked = 2u;
__device__ __forceinline__ uint32_t nonfinite_flags(const Params& p, int b, int h) {
    return (p.q_nonfinite[static_cast<int64_t>(b) * p.heads_q + h] != 0u ? kQMarked : 0u) |
           (p.kv_nonfinite[static_cast<int64_t>(b) * p.heads_kv + h / p.group] != 0u ? kKMarked : 0u);
}
__device__ __forceinline__ void overwrite_nonfinite_rows(const Params& p, int b, int h, const int64_t (&row)[2], int t,
                                                         bool lse, uint32_t flags) {
    const bool q_marked = (flags & kQMarked) != 0u, k_marked = (flags & kKMarked) != 0u;
    if (!q_marked && !k_marked) return;
    const Seq s = sequence(p, b);
    const bool pairs = out_pairs(p);
    for (int r = 0; r < 2; ++r) {
        if (row[r] >= s.len_q) continue;
        const bool own = q_marked && isnan(p.q_shift[h * p.q_rows + s.pad_q + row[r]]);
        if (!own && !(k_marked && row_sees_marked_key(p, b, h, s, row[r]))) continue;
        uint16_t* out = static_cast<uint16_t*>(p.out) + out_base(p, b, s) + h * p.out_head_stride + row[r] * p.out_token_stride;
        for (int c = 2 * t; c < p.head_dim; c += 8)
            store_channel_pair<false>(out, c, p.head_dim, pairs, NAN, NAN);  // a NaN in fp16 and in bf16 alike
        if (lse && t == 0) p.lse[lse_index(p, b, h, s, row[r])] = NAN;
    }
}

// The rest of store_rows' epilogue, after the output rows: with `lse`, the natural-log LSE
// (m + log2 l_exact − offset)·ln 2 (−inf for an empty row, RowOutput), plus the row's smooth-K
// shift where `shifted`; then the non-finite rows (`flags`: nonfinite_flags).
__device__ __forceinline__ void store_lse_and_nonfinite(const Params& p, int b, int h, const Seq& s,
                                                        const int64_t (&row)[2], int t, const float (&m)[2],
                                                        const float (&l)[2], const float (&l_exact)[2], float p_offset,
                                                        bool lse, bool shifted, uint32_t flags) {
    if (lse && t == 0)
        for (int r = 0; r < 2; ++r) {
            if (row[r] >= s.len_q) continue;
            const bool empty = RowOutput(m[r], l[r]).empty;
            const float shift = shifted ? p.q_shift[h * p.q_rows + s.pad_q + row[r]] : 0.f;
            p.lse[lse_index(p, b, h, s, row[r])] = empty ? -INFINITY : (m[r] + log2f(l_exact[r]) - p_offset) * alg::kLn2 + shift;
        }
    overwrite_nonfinite_rows(p, b, h, row, t, lse, flags);
}

// Both kernels' epilogue (§6) for a thread's two rows, m, l and l_exact already summed
// over the quad: the output rows (RowOutput), then store_lse_and_nonfinite (`flags`: nonfinite_flags).
// acc(r, ot, e) is row r's accumulator of tile ot, channel 2t + e.
template <bool kBf16, int kOT, class Acc>
__device__ __forceinline__ void store_rows(const Params& p, int b, int h, const Seq& s, const int64_t (&row)[2], int t,
                                           const float (&m)[2], const float (&l)[2], const float (&l_exact)[2],
                                           float p_offset, bool lse, bool shifted, const float* v_scale,
                                           const float* v_offset, uint32_t flags, Acc acc) {
    uint16_t* out = static_cast<uint16_t*>(p.out);
    const int64_t base = out_base(p, b, s) + h * p.out_head_stride;
    const bool pairs = out_pairs(p);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (row[r] >= s.len_q) continue;
        store_output_row<kBf16, kOT>(out + base + row[r] * p.out_token_stride, p, t, pairs, RowOutput(m[r], l[r]),
                                     v_scale, v_offset, [&](int ot, int e) { return acc(r, ot, e); });
    }
    store_lse_and_nonfinite(p, b, h, s, row, t, m, l, l_exact, p_offset, lse, shifted, flags);
}

}  // namespace sageattn::cuda
