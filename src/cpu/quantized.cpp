// docs/ALGORITHM.md §2-§6 on the CPU: the quantized algorithm step by step,
// with the roundings the GPU kernels perform, so that a kernel can be held to
// it within float32 accumulation noise.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/access.hpp"
#include "common/algorithm.hpp"
#include "common/numeric.hpp"
#include "cpu/cpu.hpp"
#include "cpu/parallel.hpp"

namespace sageattn::cpu {
namespace {

size_t align64(size_t n) { return (n + 63) & ~size_t{63}; }

// Byte offsets of the K/V stage's outputs inside the workspace.
struct Layout {
    size_t k_mean, k_codes, k_scale, k_amax, v_values, v_scale, v_offset, key_nonfinite, total;
};

Layout layout_of(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    const size_t heads = static_cast<size_t>(p.batch * p.heads_kv), d = static_cast<size_t>(p.head_dim);
    const size_t tokens = static_cast<size_t>(p.heads_kv * pr.total_kv());
    Layout l{};
    size_t at = 0;
    auto take = [&](size_t bytes) { const size_t here = at; at += align64(bytes); return here; };
    l.k_mean = take(heads * d * sizeof(float));
    l.k_codes = take(tokens * d * sizeof(int8_t));
    l.k_scale = take(tokens * sizeof(float));
    l.k_amax = take(heads * sizeof(float));
    l.v_values = take(tokens * d * sizeof(float));  // V after FP8/FP16 rounding, kept decoded
    l.v_scale = take(heads * d * sizeof(float));
    l.v_offset = take(heads * d * sizeof(float));
    l.key_nonfinite = take(tokens);  // 1 where the key's k or v holds a NaN or an infinity
    l.total = at;
    return l;
}

template <class T>
T* at(void* ws, size_t offset) { return reinterpret_cast<T*>(static_cast<char*>(ws) + offset); }

// Quantizes rows [n][d] into groups given by group_of(row) with symmetric INT8
// (§3): a = max(group amax, floor), codes = rint(x · 127/a) clamped to ±127;
// scale_out[row] gets its group's a/127.
template <class GroupOf>
void quantize_rows(const float* rows, int64_t n, int64_t d, int64_t groups, const GroupOf& group_of, int8_t* codes,
                   float* scale_out) {
    std::vector<float> amax(static_cast<size_t>(groups), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
        float& a = amax[group_of(i)];
        for (int64_t c = 0; c < d; ++c) a = std::max(a, std::fabs(rows[i * d + c]));
    }
    for (int64_t i = 0; i < n; ++i) {
        const float a = std::max(amax[group_of(i)], alg::kAmaxFloor), inv = alg::kInt8Max / a;
        for (int64_t c = 0; c < d; ++c) {
            const float r = std::nearbyint(rows[i * d + c] * inv);
            codes[i * d + c] = static_cast<int8_t>(std::min(alg::kInt8Max, std::max(-alg::kInt8Max, r)));
        }
        scale_out[i] = a / alg::kInt8Max;
    }
}

// §6's non-finite rule: rows are read with their NaNs and infinities as 0, so that they
// reach no statistic, group or code, and each row that held one is marked in `nonfinite`
// (when given) instead.
void load_rows(const Problem& pr, const sageattn_tensor& t, int64_t b, int64_t h, int64_t n, bool kv, float* dst,
               uint8_t* nonfinite = nullptr) {
    const int64_t d = pr.p.head_dim;
    for (int64_t i = 0; i < n; ++i) {
        float* row = dst + i * d;
        load_row(t.data, pr.p.dtype, pr.offset(t, b, h, i, kv), d, row);
        bool bad = false;
        for (int64_t c = 0; c < d; ++c)
            if (!std::isfinite(row[c])) bad = true, row[c] = 0.0f;
        if (nonfinite) nonfinite[i] = static_cast<uint8_t>(nonfinite[i] | (bad ? 1 : 0));
    }
}

// Per-channel mean over n rows, summed in double (§2: any order within fp32 noise).
void channel_mean(const float* rows, int64_t n, int64_t d, float* mean) {
    for (int64_t c = 0; c < d; ++c) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) sum += rows[i * d + c];
        mean[c] = n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
    }
}

// §3 (K) and §4 (V) for one (sequence, KV head).
void quantize_kv(const Problem& pr, void* ws, const Layout& lay, int64_t b, int64_t hk) {
    const sageattn_problem& p = pr.p;
    const int64_t d = p.head_dim, n = pr.len_kv(b), head = b * p.heads_kv + hk;
    const int64_t first = hk * pr.total_kv() + pr.row0_kv(b);  // this sequence's first token row
    std::vector<float> rows(static_cast<size_t>(n * d));

    uint8_t* key_nonfinite = at<uint8_t>(ws, lay.key_nonfinite) + first;
    std::fill(key_nonfinite, key_nonfinite + n, uint8_t{0});
    float* k_mean = at<float>(ws, lay.k_mean) + head * d;
    load_rows(pr, p.k, b, hk, n, true, rows.data(), key_nonfinite);
    if (p.smooth_k) {  // over §3's spread sample of keys
        std::vector<float> sample;
        sample.reserve(static_cast<size_t>(alg::k_mean_keys(n) * d));
        for (int64_t j = 0; j < n; ++j)
            if (alg::in_k_mean(j, n)) sample.insert(sample.end(), rows.begin() + j * d, rows.begin() + (j + 1) * d);
        channel_mean(sample.data(), alg::k_mean_keys(n), d, k_mean);
    } else {
        std::fill(k_mean, k_mean + d, 0.0f);
    }
    float kmax = 0.0f;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < d; ++c) {
            rows[i * d + c] -= k_mean[c];
            kmax = std::max(kmax, std::fabs(rows[i * d + c]));
        }
    at<float>(ws, lay.k_amax)[head] = kmax;
    const int gran = p.qk_granularity;
    quantize_rows(rows.data(), n, d, alg::k_groups(n, gran), [gran](int64_t j) { return alg::k_group(j, gran); },
                  at<int8_t>(ws, lay.k_codes) + first * d, at<float>(ws, lay.k_scale) + first);

    float* v_offset = at<float>(ws, lay.v_offset) + head * d;
    float* v_scale = at<float>(ws, lay.v_scale) + head * d;
    float* values = at<float>(ws, lay.v_values) + first * d;
    load_rows(pr, p.v, b, hk, n, true, rows.data(), key_nonfinite);
    if (p.smooth_v) channel_mean(rows.data(), n, d, v_offset);
    else std::fill(v_offset, v_offset + d, 0.0f);
    for (int64_t c = 0; c < d; ++c) {
        float amax = 0.0f;
        for (int64_t i = 0; i < n; ++i) {
            rows[i * d + c] -= v_offset[c];
            amax = std::max(amax, std::fabs(rows[i * d + c]));
        }
        if (p.pv_precision == SAGEATTN_PV_FP8) {
            const float range = alg::fp8_v_range(p.pv_accum);
            const float a = std::max(amax, alg::kAmaxFloor), inv = range / a;
            v_scale[c] = a / range;
            // §4: the channel's mean rounding error goes back in with the mean, so
            // that a row attending evenly sees V's channel mean exactly.
            double error = 0.0;
            for (int64_t i = 0; i < n; ++i) {
                values[i * d + c] = num::round_to_e4m3(rows[i * d + c] * inv);
                error += rows[i * d + c] - values[i * d + c] * v_scale[c];
            }
            if (n > 0) v_offset[c] += static_cast<float>(error / static_cast<double>(n));
        } else {
            int e = 0;
            if (amax > 0.0f) {
                std::frexp(amax, &e);  // amax <= 2^e
                e = alg::fp16_v_exponent(e);
            }
            v_scale[c] = std::ldexp(1.0f, e);
            for (int64_t i = 0; i < n; ++i) values[i * d + c] = num::round_to_fp16(std::ldexp(rows[i * d + c], -e));
        }
    }
}

// §6's inner accumulator of one KV block: fp32, or fp16 rounded after every MMA k-step.
struct PvAccumulator {
    int64_t d;
    int64_t k_step;  // keys per MMA instruction; 0 = plain fp32
    std::vector<float> inner, partial;
    int64_t in_step = 0;

    PvAccumulator(int64_t head_dim, int32_t accum)
        : d(head_dim), k_step(0), inner(static_cast<size_t>(head_dim)), partial(static_cast<size_t>(head_dim)) {
        if (accum == SAGEATTN_ACCUM_FP32_FP16) k_step = 32;  // m16n8k32 e4m3 with f16 accumulator
        if (accum == SAGEATTN_ACCUM_FP16_FP32) k_step = 16;  // m16n8k16 f16 with f16 accumulator
    }
    void begin() {
        std::fill(inner.begin(), inner.end(), 0.0f);
        std::fill(partial.begin(), partial.end(), 0.0f);
        in_step = 0;
    }
    // key_in_block: position of the key inside its block (steps are aligned to the block).
    void add(int64_t key_in_block, float p, const float* v) {
        if (k_step == 0) {
            for (int64_t c = 0; c < d; ++c) inner[c] += p * v[c];
            return;
        }
        const int64_t step = key_in_block / k_step;
        if (step != in_step) flush(step);
        for (int64_t c = 0; c < d; ++c) partial[c] += p * v[c];
    }
    void flush(int64_t next_step) {
        for (int64_t c = 0; c < d; ++c) {
            inner[c] = num::round_to_fp16(inner[c] + partial[c]);
            partial[c] = 0.0f;
        }
        in_step = next_step;
    }
    const float* end() {
        if (k_step != 0) flush(0);
        return inner.data();
    }
};

// §5-§6 for one (sequence, query head).
void attend_head(const Problem& pr, void* ws, const Layout& lay, int64_t b, int64_t h, QuantizedReport* report) {
    const sageattn_problem& p = pr.p;
    const int64_t d = p.head_dim, lq = pr.len_q(b), lkv = pr.len_kv(b), hk = h / pr.group;
    const int64_t kv_head = b * p.heads_kv + hk, first_kv = hk * pr.total_kv() + pr.row0_kv(b);
    const float scale_log2 = pr.scale * alg::kLog2e;
    const bool fp8 = p.pv_precision == SAGEATTN_PV_FP8;

    std::vector<float> q(static_cast<size_t>(lq * d));
    std::vector<uint8_t> q_nonfinite(static_cast<size_t>(lq), 0);
    load_rows(pr, p.q, b, h, lq, false, q.data(), q_nonfinite.data());
    float qmax = 0.0f;
    for (float x : q) qmax = std::max(qmax, std::fabs(x));
    const float kmax = at<float>(ws, lay.k_amax)[kv_head];
    // §5: an upper estimate of the standard deviation of INT8's logit error.
    const float sharpness = alg::sharpness(std::fabs(pr.scale), std::sqrt(static_cast<float>(d)), qmax, kmax);
    const bool input_precision = p.qk_precision == SAGEATTN_QK_INPUT ||
                                 (p.qk_precision == SAGEATTN_QK_AUTO && sharpness > pr.sharp_threshold);
    if (report) {
        report->sharp_heads[b * p.heads_q + h] = input_precision;
        report->sharpness[b * p.heads_q + h] = sharpness;
    }

    std::vector<int8_t> q_codes;
    std::vector<float> q_scale, lse_shift(static_cast<size_t>(lq), 0.0f), k_rows;
    if (input_precision) {
        k_rows.resize(static_cast<size_t>(lkv * d));
        load_rows(pr, p.k, b, hk, lkv, true, k_rows.data());
    } else {
        q_codes.resize(static_cast<size_t>(lq * d));
        q_scale.resize(static_cast<size_t>(lq));
        const int gran = p.qk_granularity;
        quantize_rows(q.data(), lq, d, alg::q_groups(lq, gran), [gran](int64_t i) { return alg::q_group(i, gran); },
                      q_codes.data(), q_scale.data());
        if (report) std::copy(q_scale.begin(), q_scale.end(), report->q_scale.begin() + h * pr.total_q() + pr.row0_q(b));
        for (float& s : q_scale) s *= scale_log2;  // §3: scale·log2(e) rides on Q's scale
        if (p.smooth_k) {
            const float* k_mean = at<float>(ws, lay.k_mean) + kv_head * d;
            for (int64_t i = 0; i < lq; ++i) {
                float dot = 0.0f;
                for (int64_t c = 0; c < d; ++c) dot += q[i * d + c] * k_mean[c];
                lse_shift[i] = pr.scale * dot;
            }
        }
    }
    const int8_t* k_codes = at<int8_t>(ws, lay.k_codes) + first_kv * d;
    const float* k_scale = at<float>(ws, lay.k_scale) + first_kv;
    const float* v_values = at<float>(ws, lay.v_values) + first_kv * d;
    const float* v_scale = at<float>(ws, lay.v_scale) + kv_head * d;
    const float* v_offset = at<float>(ws, lay.v_offset) + kv_head * d;
    const uint8_t* key_nonfinite = at<uint8_t>(ws, lay.key_nonfinite) + first_kv;

    // §6's softmax step: 64 keys, or the INT8 step of the kernel being emulated (§10).
    const int64_t step = input_precision ? alg::kKvBlock : pr.int8_softmax_block;
    std::vector<float> s(static_cast<size_t>(step)), acc(static_cast<size_t>(d));
    std::vector<char> visible(static_cast<size_t>(step));
    PvAccumulator block_acc(d, p.pv_accum);
    const float p_offset = fp8 ? alg::kFp8POffset : 0.0f;

    for (int64_t i = 0; i < lq; ++i) {
        const int64_t end = pr.visible_end(i, lq, lkv);
        float m = -INFINITY, l = 0.0f, l_exact = 0.0f;
        // §6: a NaN or infinity in q_i, in k or v of a key the row sees, or a NaN score makes the row NaN.
        bool nonfinite = q_nonfinite[i] != 0;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j0 = 0; j0 < end; j0 += step) {
            const int64_t n = std::min(step, end - j0);
            float block_max = -INFINITY;
            for (int64_t t = 0; t < n; ++t) {
                const int64_t j = j0 + t;
                const MaskValue mv = mask_at(p.mask, b, h, i, j);
                visible[t] = mv.visible;
                if (!mv.visible) continue;
                if (key_nonfinite[j]) nonfinite = true;
                float logit;
                if (input_precision) {
                    float dot = 0.0f;
                    for (int64_t c = 0; c < d; ++c) dot += q[i * d + c] * k_rows[j * d + c];
                    logit = dot * scale_log2;
                } else {
                    int32_t dot = 0;
                    const int8_t* qi = &q_codes[i * d];
                    const int8_t* kj = k_codes + j * d;
                    for (int64_t c = 0; c < d; ++c) dot += static_cast<int32_t>(qi[c]) * static_cast<int32_t>(kj[c]);
                    logit = static_cast<float>(dot) * (q_scale[i] * k_scale[j]);
                }
                s[t] = logit + alg::bias_log2(mv.bias);
                if (std::isnan(s[t])) nonfinite = true;
                block_max = std::max(block_max, s[t]);
            }
            if (block_max == -INFINITY) continue;  // nothing visible in this block
            const float m_new = std::max(m, block_max);
            const float alpha = std::exp2(m - m_new);  // 0 on the first visible block
            m = m_new;
            block_acc.begin();
            float block_sum = 0.0f, block_sum_exact = 0.0f;
            for (int64_t t = 0; t < n; ++t) {
                if (!visible[t]) continue;
                const float pt = std::exp2(s[t] - m + p_offset);
                const float pq = fp8 ? num::round_to_e4m3(pt) : num::round_to_fp16(pt);
                block_sum += pq;  // §6: normalise by exactly the P that meets V ...
                block_sum_exact += pt;  // ... and take the LSE from P before its rounding
                block_acc.add(t, pq, v_values + (j0 + t) * d);
            }
            l = l * alpha + block_sum;
            l_exact = l_exact * alpha + block_sum_exact;
            // "fp32" and "fp32+fp32" differ only on GPUs whose FP8 MMA truncates
            // its fp32 accumulator (§6); in exact fp32 both are this line.
            const float* inner = block_acc.end();
            for (int64_t c = 0; c < d; ++c) acc[c] = acc[c] * alpha + inner[c];
        }
        const int64_t oo = pr.offset(p.out, b, h, i, false);
        const bool empty = m == -INFINITY;  // no visible key; a non-finite row is not empty, whatever m says
        const float inv_l = empty ? 0.0f : 1.0f / l;
        for (int64_t c = 0; c < d; ++c) {
            const float o = nonfinite ? NAN : empty ? 0.0f : acc[c] * inv_l * v_scale[c] + v_offset[c];
            store_element(p.out.data, p.dtype, oo + c, o);
        }
        if (p.lse)
            p.lse[pr.lse_offset(b, h, i)] = nonfinite ? NAN
                                            : empty   ? -INFINITY
                                                      : (m + std::log2(l_exact) - p_offset) * alg::kLn2 + lse_shift[i];
    }
}

// The mutation check (scripts/mutation_check.sh) compiles this file with one
// SAGEATTN_MUTATE_<NAME> at a time. Each makes the emulation drop one option of
// docs/ALGORITHM.md, as a kernel that ignored it would, and the check asserts that some
// test then fails. A normal build defines none, and this returns the problem unchanged.
Problem mutated(Problem pr) {
    sageattn_problem& p = pr.p;
    (void)p;
#if defined(SAGEATTN_MUTATE_GRANULARITY_ALL_PER_THREAD)
    p.qk_granularity = SAGEATTN_QK_PER_THREAD;
#elif defined(SAGEATTN_MUTATE_GRANULARITY_THREAD_AS_WARP)
    if (p.qk_granularity == SAGEATTN_QK_PER_THREAD) p.qk_granularity = SAGEATTN_QK_PER_WARP;
#elif defined(SAGEATTN_MUTATE_GRANULARITY_WARP_AS_BLOCK)
    if (p.qk_granularity == SAGEATTN_QK_PER_WARP) p.qk_granularity = SAGEATTN_QK_PER_BLOCK;
#elif defined(SAGEATTN_MUTATE_GRANULARITY_BLOCK_AS_WARP)
    if (p.qk_granularity == SAGEATTN_QK_PER_BLOCK) p.qk_granularity = SAGEATTN_QK_PER_WARP;
#elif defined(SAGEATTN_MUTATE_QK_INT8_AS_AUTO)
    if (p.qk_precision == SAGEATTN_QK_INT8) p.qk_precision = SAGEATTN_QK_AUTO;
#elif defined(SAGEATTN_MUTATE_QK_INPUT_AS_AUTO)
    if (p.qk_precision == SAGEATTN_QK_INPUT) p.qk_precision = SAGEATTN_QK_AUTO;
#elif defined(SAGEATTN_MUTATE_SHARP_RULE_OFF)
    if (p.qk_precision == SAGEATTN_QK_AUTO) p.qk_precision = SAGEATTN_QK_INT8;
#elif defined(SAGEATTN_MUTATE_SHARP_THRESHOLD_IGNORED)
    pr.sharp_threshold = alg::kDefaultSharpThreshold;
#elif defined(SAGEATTN_MUTATE_SMOOTH_K_IGNORED)
    p.smooth_k = 1;
#elif defined(SAGEATTN_MUTATE_SMOOTH_V_IGNORED)
    p.smooth_v = 0;
#elif defined(SAGEATTN_MUTATE_PV_FP16_AS_FP8)
    if (p.pv_precision == SAGEATTN_PV_FP16) p.pv_precision = SAGEATTN_PV_FP8, p.pv_accum = SAGEATTN_ACCUM_FP32_FP32;
#elif defined(SAGEATTN_MUTATE_ACCUM_ALL_AS_FP32)
    p.pv_accum = SAGEATTN_ACCUM_FP32;
#elif defined(SAGEATTN_MUTATE_ACCUM_FP32_AS_FP16_INNER)
    if (p.pv_accum == SAGEATTN_ACCUM_FP32)
        p.pv_accum = p.pv_precision == SAGEATTN_PV_FP8 ? SAGEATTN_ACCUM_FP32_FP16 : SAGEATTN_ACCUM_FP16_FP32;
#elif defined(SAGEATTN_MUTATE_ACCUM_FP32_FP32_AS_FP32_FP16)
    if (p.pv_accum == SAGEATTN_ACCUM_FP32_FP32) p.pv_accum = SAGEATTN_ACCUM_FP32_FP16;
#elif defined(SAGEATTN_MUTATE_ACCUM_FP32_FP16_AS_FP32)
    if (p.pv_accum == SAGEATTN_ACCUM_FP32_FP16) p.pv_accum = SAGEATTN_ACCUM_FP32;
#elif defined(SAGEATTN_MUTATE_ACCUM_FP16_FP32_AS_FP32)
    if (p.pv_accum == SAGEATTN_ACCUM_FP16_FP32) p.pv_accum = SAGEATTN_ACCUM_FP32;
#elif defined(SAGEATTN_MUTATE_SOFTMAX_STEP_IGNORED)
    pr.int8_softmax_block = alg::kKvBlock;
#endif
    return pr;
}

}  // namespace

size_t quantized_workspace_size(const Problem& pr) { return layout_of(pr).total; }

void quantized_forward(const Problem& problem, void* workspace, QuantizedReport* report) {
    const Problem pr = mutated(problem);
    const sageattn_problem& p = pr.p;
    const Layout lay = layout_of(pr);
    if (report) {
        report->sharp_heads.assign(static_cast<size_t>(p.batch * p.heads_q), 0);
        report->sharpness.assign(static_cast<size_t>(p.batch * p.heads_q), 0.0f);
        report->q_scale.assign(static_cast<size_t>(p.heads_q * pr.total_q()), 0.0f);
    }
    parallel_for(p.batch * p.heads_kv, p.num_threads,
                 [&](int64_t item) { quantize_kv(pr, workspace, lay, item / p.heads_kv, item % p.heads_kv); });
    if (report) {
        const float* k_scale = at<float>(workspace, lay.k_scale);
        report->k_scale.assign(k_scale, k_scale + p.heads_kv * pr.total_kv());
    }
    parallel_for(p.batch * p.heads_q, p.num_threads,
                 [&](int64_t item) { attend_head(pr, workspace, lay, item / p.heads_q, item % p.heads_q, report); });
}

}  // namespace sageattn::cpu
