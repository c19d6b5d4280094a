// The float64 reference against an independent, naive formula: materialise
// the whole score matrix, mask it, softmax it, multiply by V.
#include "support.hpp"

namespace sageattn::test {
namespace {

// softmax(scale·QKᵀ + mask)·V for one (b, h), written as plainly as possible.
std::vector<double> naive_head(const Attention& a, int64_t b, int64_t h, const std::vector<uint8_t>* keep) {
    const Shape& s = a.shape;
    const int64_t lq = s.len_q, lkv = s.len_kv, d = s.head_dim, hk = h / (s.heads_q / s.heads_kv);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    std::vector<double> scores(static_cast<size_t>(lq * lkv)), o(static_cast<size_t>(lq * d), 0.0);
    for (int64_t i = 0; i < lq; ++i) {
        for (int64_t j = 0; j < lkv; ++j) {
            double dot = 0;
            for (int64_t c = 0; c < d; ++c)
                dot += static_cast<double>(decode(a.q.storage[a.q.index(b, h, i, c)], s.dtype)) *
                       decode(a.k.storage[a.k.index(b, hk, j, c)], s.dtype);
            const bool causal_ok = !a.problem.causal || j - i <= lkv - lq;
            const bool mask_ok = !keep || (*keep)[(i * lkv) + j];
            scores[i * lkv + j] = causal_ok && mask_ok ? dot * scale : -INFINITY;
        }
        double top = -INFINITY, total = 0;
        for (int64_t j = 0; j < lkv; ++j) top = std::max(top, scores[i * lkv + j]);
        if (top == -INFINITY) continue;
        for (int64_t j = 0; j < lkv; ++j) total += std::exp(scores[i * lkv + j] - top);
        for (int64_t j = 0; j < lkv; ++j) {
            const double w = std::exp(scores[i * lkv + j] - top) / total;
            for (int64_t c = 0; c < d; ++c) o[i * d + c] += w * decode(a.v.storage[a.v.index(b, hk, j, c)], s.dtype);
        }
    }
    return o;
}

double max_error_vs_naive(Attention& a, const std::vector<uint8_t>* keep) {
    const std::vector<double> ref = a.reference();
    double worst = 0;
    for (int64_t b = 0; b < a.shape.batch; ++b)
        for (int64_t h = 0; h < a.shape.heads_q; ++h) {
            const std::vector<double> o = naive_head(a, b, h, keep);
            for (int64_t i = 0; i < a.shape.len_q; ++i)
                for (int64_t c = 0; c < a.shape.head_dim; ++c) {
                    const double r = ref[((b * a.shape.len_q + i) * a.shape.heads_q + h) * a.shape.head_dim + c];
                    worst = std::max(worst, std::fabs(r - o[i * a.shape.head_dim + c]));
                }
        }
    return worst;
}

struct Case {
    const char* name;
    Shape shape;
    bool causal;
};

TEST(Reference, MatchesNaiveFormula) {
    std::mt19937_64 rng(seed());
    const Case cases[] = {
        {"MHA d64 HND", {2, 3, 3, 77, 77, 64, SAGEATTN_DTYPE_BF16, Layout::HND}, false},
        {"GQA d128 NHD causal", {1, 4, 2, 65, 65, 128, SAGEATTN_DTYPE_FP16, Layout::NHD}, true},
        {"MQA d40 strided, len_q < len_kv causal", {2, 4, 1, 19, 100, 40, SAGEATTN_DTYPE_BF16, Layout::Strided}, true},
        {"len_q > len_kv causal (empty rows)", {1, 2, 2, 50, 20, 32, SAGEATTN_DTYPE_BF16, Layout::HND}, true},
        {"length 1, d 256", {1, 1, 1, 1, 1, 256, SAGEATTN_DTYPE_FP16, Layout::HND}, false},
        {"d 1", {1, 2, 1, 33, 31, 1, SAGEATTN_DTYPE_BF16, Layout::NHD}, false},
    };
    double worst = 0;
    for (const Case& c : cases) {
        Attention a(c.shape, Inputs{1.0f, 2.0f}, rng);
        a.problem.causal = c.causal;
        const double err = max_error_vs_naive(a, nullptr);
        std::printf("[ accuracy ] reference vs naive formula, %-40s max |err| %.3g\n", c.name, err);
        EXPECT_LT(err, 1e-12) << c.name;
        worst = std::max(worst, err);
    }
    std::printf("[ accuracy ] reference vs naive formula, worst case: max |err| %.3g (bound 1e-12)\n", worst);
}

TEST(Reference, BoolMaskMatchesNaive) {
    std::mt19937_64 rng(seed() + 1);
    Shape s{1, 2, 2, 40, 56, 64};
    Attention a(s, Inputs{}, rng);
    std::vector<uint8_t> keep(static_cast<size_t>(s.len_q * s.len_kv));
    std::bernoulli_distribution coin(0.7);
    for (auto& x : keep) x = coin(rng);
    for (int64_t j = 0; j < s.len_kv; ++j) keep[5 * s.len_kv + j] = 0;  // row 5 sees nothing
    a.problem.mask = sageattn_mask{SAGEATTN_MASK_BOOL, 0, keep.data(), 0, 0, s.len_kv, 1};  // broadcast over b, h
    a.problem.causal = 1;
    const double err = max_error_vs_naive(a, &keep);
    std::printf("[ accuracy ] reference vs naive formula, bool mask + causal: max |err| %.3g\n", err);
    EXPECT_LT(err, 1e-12);
}

}  // namespace
}  // namespace sageattn::test
