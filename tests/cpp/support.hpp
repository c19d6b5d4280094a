// Shared test fixtures: random fp16/bf16 tensors in any layout, a problem
// builder over them, the float64 judge, and the accuracy metrics.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "api/validate.hpp"
#include "common/access.hpp"
#include "common/numeric.hpp"
#include "cpu/cpu.hpp"
#include "sageattn/sageattn.h"

namespace sageattn::test {

// A fresh seed every run (printed, so a failure can be replayed with SAGEATTN_TEST_SEED).
inline uint64_t seed() {
    static const uint64_t s = [] {
        const char* env = std::getenv("SAGEATTN_TEST_SEED");
        const uint64_t v = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
        std::printf("[ seed     ] SAGEATTN_TEST_SEED=%llu\n", static_cast<unsigned long long>(v));
        return v;
    }();
    return s;
}

enum class Layout { HND, NHD, Strided };

struct Shape {
    int64_t batch = 1, heads_q = 2, heads_kv = 2, len_q = 128, len_kv = 128, head_dim = 64;
    int32_t dtype = SAGEATTN_DTYPE_BF16;
    Layout layout = Layout::HND;
};

// One [batch, heads, len, dim] tensor of 16-bit values stored in a chosen layout.
struct Tensor {
    int64_t batch = 0, heads = 0, len = 0, dim = 0;
    int64_t sb = 0, sh = 0, st = 0;
    std::vector<uint16_t> storage;

    Tensor() = default;
    Tensor(int64_t b, int64_t h, int64_t n, int64_t d, Layout layout) : batch(b), heads(h), len(n), dim(d) {
        // Strided: NHD inside a wider buffer (padding on every dim but the last), like a slice of a fused qkv.
        const int64_t pad = layout == Layout::Strided ? 3 : 0, row = d + pad;
        if (layout == Layout::HND) { st = d; sh = n * d; sb = h * n * d; }
        else { sh = row; st = h * row + pad; sb = n * st + pad; }
        storage.assign(static_cast<size_t>(std::max<int64_t>(b * sb, 1)), 0x7fc1);  // NaN poison in the gaps
    }
    int64_t index(int64_t b, int64_t h, int64_t i, int64_t c) const { return b * sb + h * sh + i * st + c; }
    sageattn_tensor view() { return sageattn_tensor{storage.data(), sb, sh, st}; }
};

inline float decode(uint16_t x, int32_t dtype) {
    return dtype == SAGEATTN_DTYPE_FP16 ? num::fp16_to_float(x) : num::bf16_to_float(x);
}
inline uint16_t encode(float x, int32_t dtype) {
    return dtype == SAGEATTN_DTYPE_FP16 ? num::float_to_fp16(x) : num::float_to_bf16(x);
}

struct Inputs {
    float qk_mult = 1.0f;   // q and k scaled (sharp softmax)
    float k_bias = 0.0f;    // std of a per-channel bias added to k
    float v_mean = 0.0f;    // per-channel V offset
    float v_outlier = 0.0f; // one V channel multiplied by this (0: none)
    bool zero_v_channel = false;
};

// Owns q, k, v, out (+ lse, mask) and builds the problem over them.
struct Attention {
    Shape shape;
    Tensor q, k, v, out;
    std::vector<float> lse;
    std::vector<uint8_t> bool_mask;
    std::vector<float> add_mask;
    sageattn_problem problem{};

    Attention(const Shape& s, const Inputs& in, std::mt19937_64& rng) : shape(s) {
        q = Tensor(s.batch, s.heads_q, s.len_q, s.head_dim, s.layout);
        k = Tensor(s.batch, s.heads_kv, s.len_kv, s.head_dim, s.layout);
        v = Tensor(s.batch, s.heads_kv, s.len_kv, s.head_dim, s.layout);
        out = Tensor(s.batch, s.heads_q, s.len_q, s.head_dim, s.layout);
        std::normal_distribution<float> n01(0.0f, 1.0f);
        std::vector<float> bias(static_cast<size_t>(s.head_dim));
        for (auto& b : bias) b = in.k_bias * n01(rng);
        auto fill = [&](Tensor& t, auto&& value) {
            for (int64_t b = 0; b < t.batch; ++b)
                for (int64_t h = 0; h < t.heads; ++h)
                    for (int64_t i = 0; i < t.len; ++i)
                        for (int64_t c = 0; c < t.dim; ++c) t.storage[t.index(b, h, i, c)] = encode(value(c), s.dtype);
        };
        fill(q, [&](int64_t) { return in.qk_mult * n01(rng); });
        fill(k, [&](int64_t c) { return in.qk_mult * n01(rng) + bias[c]; });
        fill(v, [&](int64_t c) {
            float x = n01(rng) + in.v_mean;
            if (in.v_outlier != 0.0f && c == s.head_dim / 2) x *= in.v_outlier;
            if (in.zero_v_channel && c == 0) x = 0.0f;
            return x;
        });
        sageattn_problem_init(&problem);
        problem.dtype = s.dtype;
        problem.batch = s.batch;
        problem.heads_q = s.heads_q;
        problem.heads_kv = s.heads_kv;
        problem.len_q = s.len_q;
        problem.len_kv = s.len_kv;
        problem.head_dim = s.head_dim;
        problem.q = q.view();
        problem.k = k.view();
        problem.v = v.view();
        problem.out = out.view();
    }

    void with_lse() {
        lse.assign(static_cast<size_t>(shape.batch * shape.heads_q * shape.len_q), NAN);
        problem.lse = lse.data();
        problem.lse_batch_stride = shape.heads_q * shape.len_q;
        problem.lse_head_stride = shape.len_q;
        problem.lse_token_stride = 1;
    }

    // A random bool mask per sequence, [b, 1, lq, lkv] (broadcast over heads), true with
    // probability `keep`, in bool_mask. Returns its bytes.
    size_t with_bool_mask(std::mt19937_64& rng, double keep) {
        bool_mask.resize(static_cast<size_t>(shape.batch * shape.len_q * shape.len_kv));
        std::bernoulli_distribution coin(keep);
        for (auto& x : bool_mask) x = coin(rng);
        problem.mask = sageattn_mask{SAGEATTN_MASK_BOOL, 0, bool_mask.data(), shape.len_q * shape.len_kv, 0, shape.len_kv, 1};
        return bool_mask.size();
    }

    // An fp32 additive bias over the keys (broadcast over sequences, heads and rows), uniform
    // in [-4, 2), with -inf at key `inf_at` and finfo.min at key `min_at`, in add_mask.
    // Returns its bytes.
    size_t with_key_bias(std::mt19937_64& rng, int64_t inf_at, int64_t min_at) {
        add_mask.resize(static_cast<size_t>(shape.len_kv));
        std::uniform_real_distribution<float> u(-4.0f, 2.0f);
        for (auto& x : add_mask) x = u(rng);
        add_mask[static_cast<size_t>(inf_at)] = -INFINITY;
        add_mask[static_cast<size_t>(min_at)] = -3.4028235e38f;
        problem.mask = sageattn_mask{SAGEATTN_MASK_ADDITIVE, SAGEATTN_DTYPE_FP32, add_mask.data(), 0, 0, 0, 1};
        return add_mask.size() * sizeof(float);
    }

    // Packed varlen sequences over this batch-1 NHD problem (cu_q and cu_kv outlive it); after
    // with_lse(), the LSE is then [heads][packed tokens].
    void packed_varlen(const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_kv, int64_t max_len_q,
                       int64_t max_len_kv) {
        problem.batch = static_cast<int64_t>(cu_q.size()) - 1;
        problem.cu_seqlens_q = cu_q.data();
        problem.cu_seqlens_kv = cu_kv.data();
        problem.max_len_q = max_len_q;
        problem.max_len_kv = max_len_kv;
        if (problem.lse != nullptr) problem.lse_batch_stride = 0, problem.lse_head_stride = shape.len_q;
    }

    void poison() {
        for (int64_t b = 0; b < out.batch; ++b)
            for (int64_t h = 0; h < out.heads; ++h)
                for (int64_t i = 0; i < out.len; ++i)
                    for (int64_t c = 0; c < out.dim; ++c) out.storage[out.index(b, h, i, c)] = 0x7fc1;
        for (auto& x : lse) x = NAN;
    }

    Problem normalized() const {
        Problem pr;
        const sageattn_status st = api::normalize(&problem, &pr);
        EXPECT_EQ(st, SAGEATTN_SUCCESS) << sageattn_last_error();
        return pr;
    }

    // Runs the quantized algorithm through the C ABI (outputs poisoned first).
    void run() {
        poison();
        size_t bytes = 0;
        ASSERT_EQ(sageattn_workspace_size(&problem, &bytes), SAGEATTN_SUCCESS) << sageattn_last_error();
        std::vector<unsigned char> ws(bytes + 64);
        void* aligned = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
        ASSERT_EQ(sageattn_forward(&problem, aligned, bytes, nullptr), SAGEATTN_SUCCESS) << sageattn_last_error();
    }

    // The same run with its decisions reported (internal entry point).
    cpu::QuantizedReport run_reported() {
        poison();
        const Problem pr = normalized();
        std::vector<unsigned char> ws(cpu::quantized_workspace_size(pr) + 64);
        void* aligned = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
        cpu::QuantizedReport report;
        cpu::quantized_forward(pr, aligned, &report);
        return report;
    }

    // The CPU emulation with INT8 heads in softmax steps of `int8_step` keys (§6, §10): what
    // a GPU kernel with that step is held to. Writes out and lse like run().
    void emulate(int64_t int8_step) {
        poison();
        Problem pr = normalized();
        pr.int8_softmax_block = int8_step;
        std::vector<unsigned char> ws(cpu::quantized_workspace_size(pr) + 64);
        void* aligned = ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64;
        cpu::quantized_forward(pr, aligned);
    }

    // out as [row][head][dim] doubles in the packed row numbering of the reference.
    std::vector<double> output() const {
        const Problem pr = normalized();
        const int64_t hq = shape.heads_q, d = shape.head_dim;
        std::vector<double> o(static_cast<size_t>(pr.total_q() * hq * d));
        for (int64_t b = 0; b < pr.p.batch; ++b)  // varlen problems have more sequences than the tensor's batch
            for (int64_t h = 0; h < hq; ++h)
                for (int64_t i = 0; i < pr.len_q(b); ++i) {
                    const int64_t off = pr.offset(problem.out, b, h, i, false), row = pr.row0_q(b) + i;
                    for (int64_t c = 0; c < d; ++c)
                        o[(row * hq + h) * d + c] = decode(out.storage[off + c], shape.dtype);
                }
        return o;
    }

    std::vector<double> reference(std::vector<double>* lse_out = nullptr) const {
        const Problem pr = normalized();
        std::vector<double> o(static_cast<size_t>(pr.total_q() * shape.heads_q * shape.head_dim));
        if (lse_out) lse_out->assign(static_cast<size_t>(pr.total_q() * shape.heads_q), 0.0);
        cpu::reference(pr, o.data(), lse_out ? lse_out->data() : nullptr);
        return o;
    }
};

// (row, head) pairs, rows in the packed numbering of Attention::output(), whose output holds a
// NaN or an infinity.
inline std::vector<char> nonfinite_rows(const std::vector<double>& out, int64_t heads, int64_t d) {
    std::vector<char> bad(out.size() / static_cast<size_t>(d), 0);
    for (size_t i = 0; i < out.size(); ++i)
        if (!std::isfinite(out[i])) bad[i / static_cast<size_t>(d)] = 1;
    (void)heads;
    return bad;
}

// §6's non-finite rule read off the inputs, independently of every implementation: (row, head)
// is non-finite when its q row holds a NaN or an infinity, when a key it sees (§1) holds one in
// k or v, or when the additive bias of a key it sees is NaN.
inline std::vector<char> expected_nonfinite_rows(const Attention& a) {
    const Problem pr = a.normalized();
    const sageattn_problem& p = pr.p;
    const int64_t hq = p.heads_q, d = p.head_dim;
    std::vector<char> bad(static_cast<size_t>(pr.total_q() * hq), 0);
    auto row_bad = [&](const Tensor& t, const sageattn_tensor& view, int64_t b, int64_t h, int64_t i, bool kv) {
        const int64_t o = pr.offset(view, b, h, i, kv);
        for (int64_t c = 0; c < d; ++c)
            if (!std::isfinite(decode(t.storage[static_cast<size_t>(o + c)], a.shape.dtype))) return true;
        return false;
    };
    for (int64_t b = 0; b < p.batch; ++b)
        for (int64_t h = 0; h < hq; ++h) {
            const int64_t lq = pr.len_q(b), lkv = pr.len_kv(b), hk = h / pr.group;
            for (int64_t i = 0; i < lq; ++i) {
                bool any = row_bad(a.q, p.q, b, h, i, false);
                for (int64_t j = 0; j < pr.visible_end(i, lq, lkv) && !any; ++j) {
                    const MaskValue mv = mask_at(p.mask, b, h, i, j);
                    if (!mv.visible) continue;
                    any = std::isnan(mv.bias) || row_bad(a.k, p.k, b, hk, j, true) || row_bad(a.v, p.v, b, hk, j, true);
                }
                bad[static_cast<size_t>((pr.row0_q(b) + i) * hq + h)] = any;
            }
        }
    return bad;
}

// An additive fp32 mask [heads_q][len_q][len_kv] (broadcast over the batch): 0, but −inf for
// `keys` in rows [row0, row1) of every head. Attached to a.problem; `bias` holds the values.
inline void hide_keys(Attention& a, int64_t row0, int64_t row1, std::initializer_list<int64_t> keys,
                      std::vector<float>& bias) {
    const int64_t heads = a.shape.heads_q, lq = a.shape.len_q, lkv = a.shape.len_kv;
    bias.assign(static_cast<size_t>(heads * lq * lkv), 0.0f);
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = row0; i < row1; ++i)
            for (int64_t j : keys) bias[static_cast<size_t>((h * lq + i) * lkv + j)] = -INFINITY;
    a.problem.mask = sageattn_mask{SAGEATTN_MASK_ADDITIVE, SAGEATTN_DTYPE_FP32, bias.data(), 0, lq * lkv, lkv, 1};
}

// One non-finite value put into an input for §6's non-finite rule: tensor 'q', 'k', 'v' or
// 'm' (the additive mask), at head h, token t, channel c.
struct Poke {
    const char* what;
    char tensor;
    int64_t h, t, c;
    float value;
};

struct Accuracy {
    double cosine, rel_l1, max_abs;
    bool finite;
};

inline Accuracy compare(const std::vector<double>& x, const std::vector<double>& ref) {
    double dot = 0, nx = 0, ny = 0, l1 = 0, l1r = 0, worst = 0;
    bool finite = true;
    for (size_t i = 0; i < x.size(); ++i) {
        finite = finite && std::isfinite(x[i]);
        dot += x[i] * ref[i], nx += x[i] * x[i], ny += ref[i] * ref[i];
        l1 += std::fabs(x[i] - ref[i]), l1r += std::fabs(ref[i]);
        worst = std::fmax(worst, std::fabs(x[i] - ref[i]));
    }
    const double cos = (nx == 0 && ny == 0) ? 1.0 : dot / std::sqrt(nx * ny);
    return {cos, l1r == 0 ? l1 : l1 / l1r, worst, finite};
}

// ---- How close a GPU kernel must be to the CPU emulation (docs/ALGORITHM.md §7, §10) ------

// Relative L1 between a GPU run and the emulation of the same problem: FP8 P·V measured up to
// 4.1e-4 (H100, 2026-12-06; per-warp groups, an additive mask), FP16 P·V about 1e-6.
constexpr double kGpuRelL1Fp8 = 1e-3;
constexpr double kGpuRelL1Fp16 = 1e-4;
constexpr double kGpuCosine = 0.99999;
inline double gpu_rel_l1_bound(int32_t pv_precision) {
    return pv_precision == SAGEATTN_PV_FP16 ? kGpuRelL1Fp16 : kGpuRelL1Fp8;
}

// Options of one run, and the same run with one option changed: the bound must tell them apart,
// or a kernel that ignored the option would pass it. (Every option of §3-§6 appears.)
struct Options {
    const char* name;
    int32_t granularity, qk, pv, accum, smooth_k, smooth_v;
    void apply(sageattn_problem& p) const {
        p.qk_granularity = granularity, p.qk_precision = qk, p.pv_precision = pv, p.pv_accum = accum;
        p.smooth_k = smooth_k, p.smooth_v = smooth_v;
    }
};
struct OptionPair {
    Options run, other;
};
inline const std::vector<OptionPair>& option_pairs() {
    constexpr int32_t T = SAGEATTN_QK_PER_THREAD, W = SAGEATTN_QK_PER_WARP, B = SAGEATTN_QK_PER_BLOCK;
    constexpr int32_t A = SAGEATTN_QK_AUTO, I = SAGEATTN_QK_INPUT, F8 = SAGEATTN_PV_FP8, F16 = SAGEATTN_PV_FP16;
    constexpr int32_t f32 = SAGEATTN_ACCUM_FP32, f32f32 = SAGEATTN_ACCUM_FP32_FP32, f32f16 = SAGEATTN_ACCUM_FP32_FP16,
                      f16f32 = SAGEATTN_ACCUM_FP16_FP32;
    static const Options def8{"per-thread fp8 fp32+fp32", T, A, F8, f32f32, 1, 0};
    static const Options def16{"per-thread fp16 fp32", T, A, F16, f32, 1, 0};
    static const std::vector<OptionPair> pairs = {
        {def8, {"per-warp", W, A, F8, f32f32, 1, 0}},
        {def8, {"per-block", B, A, F8, f32f32, 1, 0}},
        {{"per-warp fp8", W, A, F8, f32f32, 1, 0}, {"per-block", B, A, F8, f32f32, 1, 0}},
        {{"per-block fp8", B, A, F8, f32f32, 1, 0}, {"per-warp", W, A, F8, f32f32, 1, 0}},
        {def8, {"input-precision QK", T, I, F8, f32f32, 1, 0}},
        {def8, {"no smooth K", T, A, F8, f32f32, 0, 0}},
        {def8, {"smooth V", T, A, F8, f32f32, 1, 1}},
        {{"fp8 smooth V", T, A, F8, f32f32, 1, 1}, {"no smooth V", T, A, F8, f32f32, 1, 0}},
        {def8, {"fp32+fp16", T, A, F8, f32f16, 1, 0}},
        {{"fp8 fp32+fp16", T, A, F8, f32f16, 1, 0}, {"fp32+fp32", T, A, F8, f32f32, 1, 0}},
        {{"fp8 fp32", T, A, F8, f32, 1, 0}, {"fp32+fp16", T, A, F8, f32f16, 1, 0}},
        {def8, {"fp16 P·V", T, A, F16, f32, 1, 0}},
        {def16, {"fp8 P·V", T, A, F8, f32f32, 1, 0}},
        {def16, {"fp16+fp32", T, A, F16, f16f32, 1, 0}},
        {{"fp16 fp16+fp32", T, A, F16, f16f32, 1, 0}, {"fp32", T, A, F16, f32, 1, 0}},
        {def16, {"smooth V", T, A, F16, f32, 1, 1}},
        {def16, {"per-warp", W, A, F16, f32, 1, 0}},
        {def16, {"input-precision QK", T, I, F16, f32, 1, 0}},
    };
    return pairs;
}
// The problem these pairs are measured on: V centred (a mean would dwarf the differences).
inline Shape option_shape() { return Shape{1, 2, 2, 200, 333, 128}; }
inline Inputs option_inputs() { return Inputs{1.0f, 3.0f}; }

inline void print(const std::string& what, const Accuracy& a) {
    std::printf("[ accuracy ] %-58s cosine %.6f  rel.L1 %.5f  max|err| %.5f\n", what.c_str(), a.cosine, a.rel_l1,
                a.max_abs);
}

}  // namespace sageattn::test
