// Validation of a sageattn_problem: one place, one message per failure.
#include "api/validate.hpp"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "api/error.hpp"
#include "common/checked.hpp"

namespace sageattn::api {
namespace {

// The first published layout (ABI 1) ends with num_threads; later fields are appended
// (sageattn.h), and a caller whose struct ends before them gets their defaults.
constexpr uint32_t kMinProblemSize = offsetof(sageattn_problem, check_seqlens);
static_assert(sizeof(void*) != 8 || kMinProblemSize == 352, "the first published sageattn_problem is 352 bytes");

// Largest element offset + 1 of a view with these extents and strides, or -1 on overflow.
int64_t span(const int64_t* extents, const int64_t* strides, int n, int64_t inner) {
    int64_t total = inner;
    for (int i = 0; i < n; ++i) {
        if (extents[i] == 0) return 0;
        int64_t term;
        if (mul_overflows(extents[i] - 1, strides[i], &term) || add_overflows(total, term, &total)) return -1;
    }
    return total;
}

const char* dtype_name(int32_t d) {
    switch (d) {
        case SAGEATTN_DTYPE_FP16: return "fp16";
        case SAGEATTN_DTYPE_BF16: return "bf16";
        case SAGEATTN_DTYPE_FP32: return "fp32";
        default: return "unknown";
    }
}

int64_t dtype_size(int32_t d) { return d == SAGEATTN_DTYPE_FP32 ? 4 : 2; }

// Checks strides (>= 0), the 64-bit extent in bytes, and alignment of one tensor.
sageattn_status check_view(const char* name, const void* data, const int64_t* extents, const int64_t* strides,
                           const char* const* stride_names, int n, int64_t inner, int64_t elem_size,
                           bool is_output) {
    for (int i = 0; i < n; ++i)
        if (strides[i] < 0)
            return fail(SAGEATTN_ERROR_INVALID_STRIDE, "%s.%s = %" PRId64 " is negative; strides must be >= 0", name,
                        stride_names[i], strides[i]);
    if (is_output) {
        // Outputs must not overlap themselves: taken from the smallest stride up, each
        // stride must step past everything the smaller ones span.
        int order[4] = {0, 1, 2, 3};
        std::sort(order, order + n, [&](int a, int b) { return strides[a] < strides[b]; });
        int64_t spanned = inner;
        for (int k = 0; k < n; ++k) {
            const int i = order[k];
            if (extents[i] <= 1) continue;
            if (strides[i] < spanned)
                return fail(SAGEATTN_ERROR_INVALID_STRIDE,
                            "%s.%s = %" PRId64 " would make output elements overlap (it must be >= %" PRId64 ")",
                            name, stride_names[i], strides[i], spanned);
            int64_t extent_span;
            if (mul_overflows(strides[i], extents[i] - 1, &extent_span) || add_overflows(spanned, extent_span, &spanned))
                break;  // the overflow check below reports it
        }
    }
    const int64_t elements = span(extents, strides, n, inner);
    int64_t bytes = 0;
    if (elements < 0 || mul_overflows(elements, elem_size, &bytes) ||
        reinterpret_cast<uintptr_t>(data) > UINTPTR_MAX - static_cast<uint64_t>(bytes))
        return fail(SAGEATTN_ERROR_OVERFLOW, "%s: extents and strides address more than 2^63 bytes", name);
    if (elements == 0) return SAGEATTN_SUCCESS;
    if (data == nullptr) return fail(SAGEATTN_ERROR_NULL_POINTER, "%s.data is NULL", name);
    if (reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(elem_size) != 0)
        return fail(SAGEATTN_ERROR_MISALIGNED, "%s.data = %p is not aligned to its %" PRId64 "-byte elements", name,
                    data, elem_size);
    return SAGEATTN_SUCCESS;
}

sageattn_status check_tensor(const char* name, const sageattn_tensor& t, const Problem& pr, int64_t heads,
                             int64_t tokens, bool is_output) {
    static const char* const kNames[] = {"batch_stride", "head_stride", "token_stride"};
    const sageattn_problem& p = pr.p;
    // Varlen tensors are packed [tokens, heads, dim]: the batch extent is folded into tokens.
    const int64_t extents[3] = {pr.varlen ? 1 : p.batch, heads, tokens};
    const int64_t strides[3] = {t.batch_stride, t.head_stride, t.token_stride};
    return check_view(name, t.data, extents, strides, kNames, 3, p.head_dim, dtype_size(p.dtype), is_output);
}

}  // namespace

sageattn_status check_seqlens(const char* name, const int32_t* cu, int64_t batch, int64_t total, int64_t max_len) {
    if (reinterpret_cast<uintptr_t>(cu) % alignof(int32_t) != 0)
        return fail(SAGEATTN_ERROR_MISALIGNED, "%s = %p is not 4-byte aligned", name, static_cast<const void*>(cu));
    if (cu[0] != 0) return fail(SAGEATTN_ERROR_INVALID_SEQLENS, "%s[0] = %d; it must be 0", name, cu[0]);
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t len = static_cast<int64_t>(cu[b + 1]) - cu[b];
        if (len < 0)
            return fail(SAGEATTN_ERROR_INVALID_SEQLENS, "%s decreases at index %" PRId64 " (%d then %d)", name, b + 1,
                        cu[b], cu[b + 1]);
        if (len > max_len)
            return fail(SAGEATTN_ERROR_INVALID_SEQLENS,
                        "sequence %" PRId64 " of %s has length %" PRId64 " > its max_len %" PRId64, b, name, len,
                        max_len);
    }
    if (cu[batch] > total)
        return fail(SAGEATTN_ERROR_INVALID_SEQLENS,
                    "%s[%" PRId64 "] = %d exceeds the %" PRId64 " packed tokens of the tensor", name, batch,
                    cu[batch], total);
    return SAGEATTN_SUCCESS;
}

namespace {

sageattn_status check_options(sageattn_problem& p) {
    if (p.qk_granularity < 0 || p.qk_granularity > SAGEATTN_QK_PER_BLOCK)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "qk_granularity = %d; expected 0 (per-thread), 1 (per-warp) or 2 (per-block)",
                    p.qk_granularity);
    if (p.qk_precision < 0 || p.qk_precision > SAGEATTN_QK_INPUT)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "qk_precision = %d; expected 0 (auto), 1 (int8) or 2 (input)",
                    p.qk_precision);
    if (!(p.qk_sharp_threshold >= 0.0f) || std::isinf(p.qk_sharp_threshold))
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "qk_sharp_threshold = %g; expected a finite value >= 0 (0 = default)",
                    static_cast<double>(p.qk_sharp_threshold));
    if (p.pv_precision < 0 || p.pv_precision > SAGEATTN_PV_FP16)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "pv_precision = %d; expected 0 (auto), 1 (fp8) or 2 (fp16)",
                    p.pv_precision);
    if (p.pv_accum < 0 || p.pv_accum > SAGEATTN_ACCUM_FP16_FP32)
        return fail(SAGEATTN_ERROR_INVALID_OPTION,
                    "pv_accum = %d; expected 0 (auto), 1 (fp32), 2 (fp32+fp32), 3 (fp32+fp16) or 4 (fp16+fp32)",
                    p.pv_accum);
    // The CPU runs what the GPUs with native FP8 run; CUDA resolves AUTO per device.
    if (p.device_type == SAGEATTN_DEVICE_CPU) {
        if (p.pv_precision == SAGEATTN_PV_AUTO) p.pv_precision = SAGEATTN_PV_FP8;
        if (p.pv_accum == SAGEATTN_ACCUM_AUTO)
            p.pv_accum = p.pv_precision == SAGEATTN_PV_FP8 ? SAGEATTN_ACCUM_FP32_FP32 : SAGEATTN_ACCUM_FP32;
    }
    if (p.pv_precision == SAGEATTN_PV_AUTO && p.pv_accum != SAGEATTN_ACCUM_AUTO && p.pv_accum != SAGEATTN_ACCUM_FP32)
        return fail(SAGEATTN_ERROR_INVALID_OPTION,
                    "pv_accum = %d depends on the P·V precision: set pv_precision too (fp32 and auto fit both)",
                    p.pv_accum);
    const bool fp8 = p.pv_precision == SAGEATTN_PV_FP8;
    if (fp8 && p.pv_accum == SAGEATTN_ACCUM_FP16_FP32)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "pv_accum = 4 (fp16+fp32) needs pv_precision fp16; FP8 P·V takes fp32, fp32+fp32 or fp32+fp16");
    if (p.pv_precision == SAGEATTN_PV_FP16 &&
        (p.pv_accum == SAGEATTN_ACCUM_FP32_FP32 || p.pv_accum == SAGEATTN_ACCUM_FP32_FP16))
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "pv_accum = %d needs pv_precision fp8; FP16 P·V takes fp32 or fp16+fp32",
                    p.pv_accum);
    if ((p.smooth_k != 0 && p.smooth_k != 1) || (p.smooth_v != 0 && p.smooth_v != 1))
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "smooth_k = %d, smooth_v = %d; each must be 0 or 1", p.smooth_k,
                    p.smooth_v);
    if (p.check_seqlens != 0 && p.check_seqlens != 1)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "check_seqlens = %d; expected 0 (clamp on CUDA) or 1 (check)",
                    p.check_seqlens);
    if (p.num_threads < 0)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "num_threads = %d; expected >= 0 (0 = all hardware threads)",
                    p.num_threads);
    return SAGEATTN_SUCCESS;
}

sageattn_status check_mask(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    const sageattn_mask& m = p.mask;
    if (m.type == SAGEATTN_MASK_NONE) return SAGEATTN_SUCCESS;
    if (m.type != SAGEATTN_MASK_BOOL && m.type != SAGEATTN_MASK_ADDITIVE)
        return fail(SAGEATTN_ERROR_INVALID_MASK, "mask.type = %d; expected 0 (none), 1 (bool) or 2 (additive)", m.type);
    int64_t elem = 1;
    if (m.type == SAGEATTN_MASK_ADDITIVE) {
        if (m.dtype != SAGEATTN_DTYPE_FP16 && m.dtype != SAGEATTN_DTYPE_BF16 && m.dtype != SAGEATTN_DTYPE_FP32)
            return fail(SAGEATTN_ERROR_INVALID_MASK, "mask.dtype = %d; an additive mask is fp16 (1), bf16 (2) or fp32 (3)",
                        m.dtype);
        elem = dtype_size(m.dtype);
    }
    static const char* const kNames[] = {"batch_stride", "head_stride", "q_stride", "kv_stride"};
    const int64_t extents[4] = {p.batch, p.heads_q, pr.varlen ? p.max_len_q : p.len_q,
                                pr.varlen ? p.max_len_kv : p.len_kv};
    const int64_t strides[4] = {m.batch_stride, m.head_stride, m.q_stride, m.kv_stride};
    return check_view("mask", m.data, extents, strides, kNames, 4, 1, elem, false);
}

// The sizes every implementation derives from the extents (rows and heads, per-row and
// per-(sequence, head) workspace, loop counts) must fit in int64 with room to spare: strides of
// 0 let inputs describe far more tokens than memory holds, and nothing else bounds them. A
// generous bound in bytes: 4096 per (row, head) of the padded layouts, 24 per key and 9216
// per (sequence, KV head) for the cross-CTA sums (src/cuda/backend.cu, src/cpu/quantized.cpp).
sageattn_status check_sizes(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    constexpr int64_t kPad = 128, kRowBytes = 4096, kLimit = int64_t{1} << 62;
    int64_t total_q = p.len_q, total_kv = p.len_kv, pad = 0, rows_q = 0, rows_kv = 0, seq_heads_q = 0, seq_heads_kv = 0;
    int64_t bytes = 0, term = 0, per_head = 0;
    const int64_t max_kv = pr.varlen ? std::min(p.max_len_kv, p.len_kv) : p.len_kv;
    const bool fits =
        (pr.varlen || (!mul_overflows(p.batch, p.len_q, &total_q) && !mul_overflows(p.batch, p.len_kv, &total_kv))) &&
        !mul_overflows(p.batch + 1, kPad, &pad) && !add_overflows(total_q, pad, &rows_q) &&
        !add_overflows(total_kv, pad, &rows_kv) && !mul_overflows(p.batch, p.heads_q, &seq_heads_q) &&
        !mul_overflows(p.batch, p.heads_kv, &seq_heads_kv) && !mul_overflows(rows_q, p.heads_q, &term) &&
        !mul_overflows(term, kRowBytes, &bytes) && !mul_overflows(rows_kv, p.heads_kv, &term) &&
        !mul_overflows(term, kRowBytes, &term) && !add_overflows(bytes, term, &bytes) &&
        !mul_overflows(max_kv, 24, &per_head) && !add_overflows(per_head, 9216, &per_head) &&
        !mul_overflows(seq_heads_kv, per_head, &term) && !add_overflows(bytes, term, &bytes) &&
        !mul_overflows(seq_heads_q, 16, &term) && !add_overflows(bytes, term, &bytes) && bytes < kLimit;
    if (!fits)
        return fail(SAGEATTN_ERROR_OVERFLOW,
                    "batch = %" PRId64 ", heads_q = %" PRId64 ", heads_kv = %" PRId64 ", len_q = %" PRId64
                    ", len_kv = %" PRId64 ": the rows and workspace these sizes need are past what 64 bits address",
                    p.batch, p.heads_q, p.heads_kv, p.len_q, p.len_kv);
    return SAGEATTN_SUCCESS;
}

}  // namespace

void default_problem(sageattn_problem* p) {
    std::memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->abi_version = SAGEATTN_ABI_VERSION;
    p->device_type = SAGEATTN_DEVICE_CPU;
    p->algorithm = SAGEATTN_ALGORITHM_QUANTIZED;
    p->qk_granularity = SAGEATTN_QK_PER_THREAD;
    p->qk_precision = SAGEATTN_QK_AUTO;
    p->pv_precision = SAGEATTN_PV_AUTO;
    p->pv_accum = SAGEATTN_ACCUM_AUTO;
    p->smooth_k = 1;
}

sageattn_status check_data(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    sageattn_status s;
    // Device-side prefix sums cannot be read here without a synchronisation; kernels clamp instead.
    if (pr.varlen && p.device_type == SAGEATTN_DEVICE_CPU) {
        if ((s = check_seqlens("cu_seqlens_q", p.cu_seqlens_q, p.batch, p.len_q, p.max_len_q)) != SAGEATTN_SUCCESS) return s;
        if ((s = check_seqlens("cu_seqlens_kv", p.cu_seqlens_kv, p.batch, p.len_kv, p.max_len_kv)) != SAGEATTN_SUCCESS)
            return s;
    }
    if ((s = check_tensor("q", p.q, pr, p.heads_q, p.len_q, false)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_tensor("k", p.k, pr, p.heads_kv, p.len_kv, false)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_tensor("v", p.v, pr, p.heads_kv, p.len_kv, false)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_tensor("out", p.out, pr, p.heads_q, p.len_q, true)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_mask(pr)) != SAGEATTN_SUCCESS) return s;
    if (p.lse != nullptr) {
        static const char* const kNames[] = {"lse_batch_stride", "lse_head_stride", "lse_token_stride"};
        const int64_t extents[3] = {pr.varlen ? 1 : p.batch, p.heads_q, p.len_q};
        const int64_t strides[3] = {p.lse_batch_stride, p.lse_head_stride, p.lse_token_stride};
        if ((s = check_view("lse", p.lse, extents, strides, kNames, 3, 1, 4, true)) != SAGEATTN_SUCCESS) return s;
    }
    return SAGEATTN_SUCCESS;
}

sageattn_status normalize(const sageattn_problem* in, Problem* out) {
    if (in == nullptr) return fail(SAGEATTN_ERROR_NULL_POINTER, "problem is NULL");
    if (in->struct_size < kMinProblemSize)
        return fail(SAGEATTN_ERROR_ABI_MISMATCH,
                    "problem.struct_size = %u is smaller than any published sageattn_problem (%u); call sageattn_problem_init",
                    in->struct_size, kMinProblemSize);
    if (in->struct_size > sizeof(sageattn_problem)) {
        // A newer caller: fine as long as it uses none of the fields this library lacks.
        const auto* extra = reinterpret_cast<const unsigned char*>(in) + sizeof(sageattn_problem);
        for (size_t i = 0; i < in->struct_size - sizeof(sageattn_problem); ++i)
            if (extra[i] != 0)
                return fail(SAGEATTN_ERROR_ABI_MISMATCH,
                            "problem.struct_size = %u: the caller sets fields this library (struct size %zu) does not know",
                            in->struct_size, sizeof(sageattn_problem));
    }
    if (in->abi_version != SAGEATTN_ABI_VERSION)
        return fail(SAGEATTN_ERROR_ABI_MISMATCH, "problem.abi_version = %u; this library speaks ABI %d",
                    in->abi_version, SAGEATTN_ABI_VERSION);

    Problem& pr = *out;
    default_problem(&pr.p);
    std::memcpy(&pr.p, in, std::min<size_t>(in->struct_size, sizeof(sageattn_problem)));
    pr.p.struct_size = sizeof(sageattn_problem);
    sageattn_problem& p = pr.p;

    if (p.dtype != SAGEATTN_DTYPE_FP16 && p.dtype != SAGEATTN_DTYPE_BF16)
        return fail(SAGEATTN_ERROR_INVALID_DTYPE, "dtype = %d (%s); q, k, v and out must be fp16 (1) or bf16 (2)",
                    p.dtype, dtype_name(p.dtype));
    if (p.device_type != SAGEATTN_DEVICE_CPU && p.device_type != SAGEATTN_DEVICE_CUDA)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "device_type = %d; expected 0 (CPU) or 1 (CUDA)", p.device_type);
    if (p.device_type == SAGEATTN_DEVICE_CUDA && p.device_index < 0)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "device_index = %d; expected a CUDA ordinal >= 0", p.device_index);
    if (p.algorithm != SAGEATTN_ALGORITHM_QUANTIZED && p.algorithm != SAGEATTN_ALGORITHM_EXACT)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "algorithm = %d; expected 0 (quantized) or 1 (exact)", p.algorithm);
    if (p.batch < 0 || p.len_q < 0 || p.len_kv < 0)
        return fail(SAGEATTN_ERROR_INVALID_SHAPE,
                    "batch = %" PRId64 ", len_q = %" PRId64 ", len_kv = %" PRId64 "; none may be negative", p.batch,
                    p.len_q, p.len_kv);
    if (p.heads_q < 1 || p.heads_kv < 1)
        return fail(SAGEATTN_ERROR_INVALID_HEADS, "heads_q = %" PRId64 ", heads_kv = %" PRId64 "; both must be >= 1",
                    p.heads_q, p.heads_kv);
    if (p.heads_q % p.heads_kv != 0)
        return fail(SAGEATTN_ERROR_INVALID_HEADS,
                    "heads_q = %" PRId64 " is not a multiple of heads_kv = %" PRId64 " (GQA needs whole groups)",
                    p.heads_q, p.heads_kv);
    if (p.head_dim < 1 || p.head_dim > SAGEATTN_MAX_HEAD_DIM)
        return fail(SAGEATTN_ERROR_INVALID_HEAD_DIM, "head_dim = %" PRId64 "; supported: 1..%d", p.head_dim,
                    SAGEATTN_MAX_HEAD_DIM);
    if (!std::isfinite(p.scale))
        return fail(SAGEATTN_ERROR_INVALID_SCALE, "scale = %g; it must be finite (0 = 1/sqrt(head_dim))",
                    static_cast<double>(p.scale));
    pr.scale64 = p.scale != 0.0f ? static_cast<double>(p.scale) : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
    pr.scale = static_cast<float>(pr.scale64);
    pr.group = p.heads_q / p.heads_kv;

    if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_kv == nullptr))
        return fail(SAGEATTN_ERROR_INVALID_SEQLENS, "cu_seqlens_%s is NULL but cu_seqlens_%s is not: give both or neither",
                    p.cu_seqlens_q ? "kv" : "q", p.cu_seqlens_q ? "q" : "kv");
    pr.varlen = p.cu_seqlens_q != nullptr;
    if (pr.varlen) {
        if (p.max_len_q < 0 || p.max_len_kv < 0)
            return fail(SAGEATTN_ERROR_INVALID_SEQLENS, "max_len_q = %" PRId64 ", max_len_kv = %" PRId64 "; must be >= 0",
                        p.max_len_q, p.max_len_kv);
        if (p.batch > INT32_MAX)
            return fail(SAGEATTN_ERROR_INVALID_SHAPE, "batch = %" PRId64 " sequences; varlen supports up to 2^31-1",
                        p.batch);
    }

    sageattn_status s;
    if ((s = check_data(pr)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_options(p)) != SAGEATTN_SUCCESS) return s;
    if ((s = check_sizes(pr)) != SAGEATTN_SUCCESS) return s;
    pr.sharp_threshold = p.qk_sharp_threshold > 0.0f ? p.qk_sharp_threshold : alg::kDefaultSharpThreshold;
    return SAGEATTN_SUCCESS;
}

}  // namespace sageattn::api
