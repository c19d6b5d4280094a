// docs/ALGORITHM.md §7: exact softmax attention in float64, the judge.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/access.hpp"
#include "cpu/cpu.hpp"
#include "cpu/parallel.hpp"

namespace sageattn::cpu {
namespace {

// One (sequence, query head): out is [len_q][head_dim], lse [len_q].
void reference_head(const Problem& pr, int64_t b, int64_t h, double* out, double* lse) {
    const sageattn_problem& p = pr.p;
    const int64_t d = p.head_dim, lq = pr.len_q(b), lkv = pr.len_kv(b), hk = h / pr.group;
    std::vector<double> k(static_cast<size_t>(lkv * d)), v(static_cast<size_t>(lkv * d));
    std::vector<char> key_nonfinite(static_cast<size_t>(lkv), 0);
    for (int64_t j = 0; j < lkv; ++j) {
        const int64_t ko = pr.offset(p.k, b, hk, j, true), vo = pr.offset(p.v, b, hk, j, true);
        for (int64_t c = 0; c < d; ++c) {
            k[j * d + c] = load_element(p.k.data, p.dtype, ko + c);
            v[j * d + c] = load_element(p.v.data, p.dtype, vo + c);
            if (!std::isfinite(k[j * d + c]) || !std::isfinite(v[j * d + c])) key_nonfinite[j] = 1;
        }
    }
    std::vector<double> q(static_cast<size_t>(d)), s(static_cast<size_t>(lkv)), o(static_cast<size_t>(d));
    std::vector<char> seen(static_cast<size_t>(lkv));
    const double scale = pr.scale64;
    for (int64_t i = 0; i < lq; ++i) {
        const int64_t qo = pr.offset(p.q, b, h, i, false);
        // §6's non-finite rule, stated rather than left to IEEE arithmetic (which can turn an
        // infinity into a score of -inf, a key that silently drops out): a NaN or infinity in
        // q_i, in k or v of a key the row sees, or a NaN score gives a NaN row and LSE.
        bool nonfinite = false;
        for (int64_t c = 0; c < d; ++c) {
            q[c] = load_element(p.q.data, p.dtype, qo + c);
            if (!std::isfinite(q[c])) nonfinite = true;
        }
        double m = -INFINITY;
        const int64_t end = pr.visible_end(i, lq, lkv);
        for (int64_t j = 0; j < lkv; ++j) {
            const MaskValue mv = mask_at(p.mask, b, h, i, j);
            seen[j] = j < end && mv.visible;
            if (!seen[j]) continue;
            double dot = 0.0;
            for (int64_t c = 0; c < d; ++c) dot += q[c] * k[j * d + c];
            s[j] = scale * dot + static_cast<double>(mv.bias);
            if (key_nonfinite[j] || std::isnan(s[j])) nonfinite = true;
            if (s[j] > m) m = s[j];
        }
        std::fill(o.begin(), o.end(), 0.0);
        double l = 0.0;
        if (nonfinite) {
            std::fill(o.begin(), o.end(), NAN);
            l = NAN;
            m = 0.0;
        } else if (m != -INFINITY) {
            for (int64_t j = 0; j < lkv; ++j) {
                if (!seen[j]) continue;
                const double w = std::exp(s[j] - m);
                l += w;
                for (int64_t c = 0; c < d; ++c) o[c] += w * v[j * d + c];
            }
            for (int64_t c = 0; c < d; ++c) o[c] /= l;
        }
        for (int64_t c = 0; c < d; ++c) out[i * d + c] = o[c];
        lse[i] = m == -INFINITY ? -INFINITY : m + std::log(l);  // NaN for a non-finite row (l)
    }
}

// Runs every (sequence, head) and hands its rows to sink(b, h, out, lse).
template <class Sink>
void for_each_head(const Problem& pr, const Sink& sink) {
    const sageattn_problem& p = pr.p;
    parallel_for(p.batch * p.heads_q, p.num_threads, [&](int64_t item) {
        const int64_t b = item / p.heads_q, h = item % p.heads_q, lq = pr.len_q(b);
        std::vector<double> out(static_cast<size_t>(lq * p.head_dim)), lse(static_cast<size_t>(lq));
        reference_head(pr, b, h, out.data(), lse.data());
        sink(b, h, out.data(), lse.data());
    });
}

}  // namespace

void reference(const Problem& pr, double* out, double* lse) {
    const sageattn_problem& p = pr.p;
    const int64_t d = p.head_dim, hq = p.heads_q;
    for_each_head(pr, [&](int64_t b, int64_t h, const double* o, const double* l) {
        for (int64_t i = 0; i < pr.len_q(b); ++i) {
            const int64_t row = pr.row0_q(b) + i;
            if (out) std::copy(o + i * d, o + (i + 1) * d, out + (row * hq + h) * d);
            if (lse) lse[row * hq + h] = l[i];
        }
    });
}

void reference_forward(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    const int64_t d = p.head_dim;
    for_each_head(pr, [&](int64_t b, int64_t h, const double* o, const double* l) {
        for (int64_t i = 0; i < pr.len_q(b); ++i) {
            const int64_t oo = pr.offset(p.out, b, h, i, false);
            for (int64_t c = 0; c < d; ++c) store_element(p.out.data, p.dtype, oo + c, o[i * d + c]);
            if (p.lse) p.lse[pr.lse_offset(b, h, i)] = static_cast<float>(l[i]);
        }
    });
}

}  // namespace sageattn::cpu
