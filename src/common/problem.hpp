// The validated problem every implementation reads: the caller's struct with
// defaults resolved, plus the per-sequence geometry that varlen and dense
// problems share. Built only by api::normalize (src/api/validate.cpp).
#pragma once

#include <cstdint>

#include "common/algorithm.hpp"
#include "sageattn/sageattn.h"

namespace sageattn {

struct Problem {
    sageattn_problem p;  // full-size copy; options resolved (no AUTO left)
    float scale;         // resolved softmax scale
    double scale64;      // the same in float64 (the reference's; 1/sqrt(d) is not a float)
    float sharp_threshold;
    bool varlen;
    int64_t group;  // heads_q / heads_kv
    // §6's softmax step for INT8 heads: kKvBlock, or kWideKvBlock where the sm_90a kernel runs
    // (§10). The CPU emulation follows it (tests set it to the kernel's); input-precision heads
    // always step kKvBlock.
    int64_t int8_softmax_block = alg::kKvBlock;

    int64_t len_q(int64_t b) const { return varlen ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.len_q; }
    int64_t len_kv(int64_t b) const { return varlen ? p.cu_seqlens_kv[b + 1] - p.cu_seqlens_kv[b] : p.len_kv; }
    // Row of token 0 of sequence b in the packed [tokens] numbering used by
    // every per-token buffer (dense problems number b·len + i).
    int64_t row0_q(int64_t b) const { return varlen ? p.cu_seqlens_q[b] : b * p.len_q; }
    int64_t row0_kv(int64_t b) const { return varlen ? p.cu_seqlens_kv[b] : b * p.len_kv; }
    int64_t total_q() const { return varlen ? p.cu_seqlens_q[p.batch] : p.batch * p.len_q; }
    int64_t total_kv() const { return varlen ? p.cu_seqlens_kv[p.batch] : p.batch * p.len_kv; }

    // Element offset of (b, h, i, 0) in a tensor described by t.
    int64_t offset(const sageattn_tensor& t, int64_t b, int64_t h, int64_t i, bool kv) const {
        if (varlen) return (kv ? p.cu_seqlens_kv[b] : p.cu_seqlens_q[b]) * t.token_stride + h * t.head_stride + i * t.token_stride;
        return b * t.batch_stride + h * t.head_stride + i * t.token_stride;
    }
    int64_t lse_offset(int64_t b, int64_t h, int64_t i) const {
        if (varlen) return h * p.lse_head_stride + (p.cu_seqlens_q[b] + i) * p.lse_token_stride;
        return b * p.lse_batch_stride + h * p.lse_head_stride + i * p.lse_token_stride;
    }

    // Causal, bottom-right aligned: query i sees keys j < causal_end(i).
    int64_t visible_end(int64_t i, int64_t lq, int64_t lkv) const {
        if (!p.causal) return lkv;
        const int64_t end = i + lkv - lq + 1;
        return end < 0 ? 0 : (end > lkv ? lkv : end);
    }
};

}  // namespace sageattn
