// What the host passes to the CUDA kernels: the validated problem flattened
// into plain fields, plus the workspace regions (docs/ALGORITHM.md §3-§4 data).
// Included by host code and kernels alike; no CUDA headers here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/algorithm.hpp"

namespace sageattn::cuda {

constexpr int kBlockKv = static_cast<int>(alg::kKvBlock);  // keys per block: §3 K groups, the mma.sync kernel's §6 steps
// Keys per block of the sm_90a kernel (its §6 softmax step, §10). Every sequence's K and V
// rows start on such a block in the workspace, and the quantization kernels give the rows
// of a sequence's last such block that lie past its last 64-key block zero codes.
constexpr int kWideBlockKv = static_cast<int>(alg::kWideKvBlock);
constexpr int kTileQ = 64;     // query rows per attention CTA (4 warps x 16 rows)
constexpr int kQuantRows = static_cast<int>(alg::kQBlockRows);  // query rows per quantization CTA: one per-block Q group
constexpr int kSumRows = 512;    // keys per CTA of the K/V sums

struct TensorView {
    const void* data;
    int64_t batch_stride, head_stride, token_stride;
};

struct Params {
    // Problem.
    TensorView q, k, v;
    void* out;
    int64_t out_batch_stride, out_head_stride, out_token_stride;
    float* lse;
    int64_t lse_batch_stride, lse_head_stride, lse_token_stride;
    const int32_t* cu_seqlens_q;  // null for dense problems
    const int32_t* cu_seqlens_kv;
    int32_t batch, heads_q, heads_kv, group;
    int64_t len_q, len_kv;      // dense: the lengths; varlen: the tensors' packed rows (sequences from cu_seqlens)
    int64_t max_len_q, max_len_kv;  // the longest sequence: dense the lengths, varlen max_len cut to the packed rows
    int32_t head_dim, head_dim_pad;
    int32_t bf16, causal;
    int32_t vec_q, vec_k, vec_v;  // 16-byte loads allowed (aligned base, strides multiples of 8)
    float scale, scale_log2;    // scale and scale·log2(e), rounded as on the CPU
    // Mask: sageattn_mask_type and sageattn_dtype values, compared by their sageattn.h names.
    int32_t mask_type, mask_dtype;
    const void* mask;
    int64_t mask_batch_stride, mask_head_stride, mask_q_stride, mask_kv_stride;
    // Options: granularity, qk_precision and pv_accum hold sageattn.h's sageattn_qk_granularity,
    // sageattn_qk_precision and sageattn_pv_accum values (pv_accum resolved, never AUTO), compared by name.
    int32_t granularity, qk_precision, pv_fp8, pv_accum, smooth_k, smooth_v;
    float sharp_threshold;
    int32_t sharp_only;  // 1: the mma.sync launch runs only the heads §5 flags, listed in sharp_heads by the Hopper kernel
    int32_t sms;         // the device's SMs (backend.cu's devices()): the sizes of grids that walk work lists
    // Workspace (docs/ALGORITHM.md §3-§5 state).
    float* k_sum;        // [batch][heads_kv][dpad]   zeroed
    float* v_sum;        // [batch][heads_kv][dpad]   zeroed
    uint32_t* k_amax;    // [batch][heads_kv]          zeroed, float bits
    uint32_t* q_amax;    // [batch][heads_q]           zeroed, float bits
    uint32_t* v_amax;    // [batch][heads_kv][dpad]   zeroed, float bits: V's range after its mean (kv_sums)
    float* v_err;        // [batch][heads_kv][dpad]   zeroed: Σ rounding error per channel
    int8_t* k_codes;     // [heads_kv][kv_rows][dpad]
    float* k_scale;      // [heads_kv][kv_rows / 64 * 4]
    uint8_t* v_codes;    // [heads_kv][dpad][kv_rows], 1 (fp8) or 2 (fp16) bytes an element
    int8_t* q_codes;     // [heads_q][q_rows][dpad]
    float* q_scale;      // [heads_q][q_rows]
    float* q_shift;      // [heads_q][q_rows]: §6's LSE shift; NaN marks a q row with a NaN or infinity (§6)
    uint32_t* q_nonfinite;    // [batch][heads_q]    zeroed: 1 once a q row holds a NaN or infinity (§6)
    // §5's sharp heads as the sm_90a kernel finds them, for the mma.sync kernel's launch after it:
    // the count, then b·heads_q + h of each (sharp_heads_kernel in attention_mma.cuh).
    uint32_t* sharp_heads;    // [1 + batch·heads_q] zeroed
    uint32_t* kv_nonfinite;   // [batch][heads_kv]   zeroed: 1 once a key's k or v holds a NaN or infinity (§6)
    uint64_t* key_nonfinite;  // [2][heads_kv][kv_rows / 64]: those keys, bit j of a 64-key block; K's, then V's
    int64_t kv_rows, q_rows;  // padded row counts of the packed layouts
    // Cross-CTA sums in a fixed order (run-to-run identical results): each CTA writes its part,
    // the last one of a (sequence, KV head) to finish adds them up in order.
    float* sum_parts;    // [batch][heads_kv][sum_chunks][4][dpad]: K and V sums, V max and min per 512-key chunk
    float* err_parts;    // [batch][heads_kv][err_chunks][dpad]: V rounding error per 64-key block
    uint32_t* tickets;   // [2][batch][heads_kv]   zeroed: CTAs done, for the sums and the errors
    uint32_t* ready;     // [batch][heads_kv]      zeroed: 1 once the head's sums are out
    uint32_t* next_item; // [1]                    zeroed: the prep kernel's next item index
    int32_t sum_chunks, err_chunks;
};

// One varlen sequence's packed rows [start, start + len) as the kernels use them (§1).
// On CUDA nothing has checked cu_seqlens (they stay on the device), so whatever they hold
// is clamped: the rows [cu[b], cu[b+1]) are cut to the tensor's `total` rows, then to
// max_len. Hence 0 <= start <= start + len <= total and len <= max_len: no access through
// them leaves the tensors, the mask's max_len extents or (padded_start below) the
// workspace. Consistent offsets pass unchanged.
struct SeqRows {
    int64_t start, len;
};
SAGEATTN_HOST_DEVICE inline SeqRows clamp_sequence(int64_t first, int64_t next, int64_t total, int64_t max_len) {
    const int64_t start = first < 0 ? 0 : (first > total ? total : first);
    const int64_t end = next < start ? start : (next > total ? total : next);
    const int64_t len = end - start;
    return SeqRows{start, len < max_len ? len : (max_len < 0 ? 0 : max_len)};
}

// Padded packed rows: sequence b's rows start at pad·(ceil(first/pad) + b), where
// `first` is its first packed token (dense: b·len). Every sequence then owns
// whole, aligned blocks and none overlaps the next; all fit in padded_rows().
// That holds for any clamped sequence too (clamp_sequence: first + len <= total, b < batch):
// ceil(first/pad) + ceil(len/pad) <= ceil(total/pad) + 1, so its last padded row is below
// pad·(ceil(total/pad) + b + 1) <= padded_rows(total, batch, pad). Sequences of inconsistent
// offsets may overlap one another there (a race on values, never on bounds).
SAGEATTN_HOST_DEVICE inline int64_t padded_start(int64_t first, int64_t b, int64_t pad) {
    return pad * ((first + pad - 1) / pad + b);
}
inline int64_t padded_rows(int64_t total, int64_t batch, int64_t pad) { return pad * ((total + pad - 1) / pad + batch); }

}  // namespace sageattn::cuda
