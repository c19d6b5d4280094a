// A seeded random-descriptor fuzzer for the C ABI (sageattn.h), run by CTest under
// AddressSanitizer + UBSan (scripts/test.sh). Every call must return a status and a message,
// nothing may crash or trip a sanitizer, and nothing may be written outside the output: each
// buffer is allocated at exactly the size its descriptor spans (ASan's redzones catch an access
// past it), the inputs must come back unchanged, and the bytes of out and lse that are no
// output element (gaps between strided rows, rows of no varlen sequence) must keep their canary.
// About half the descriptors are valid small problems, which then run on the CPU; the others
// are such problems with one to three fields broken, or fields drawn at random.
//
// Usage: sageattn_fuzz [--count N] [--seed S] [--from I]   (SAGEATTN_TEST_SEED also sets the seed;
// a failure names its seed and descriptor index: --seed S --from I --count 1 replays it)
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sageattn/sageattn.h"

namespace {

constexpr int64_t kMaxElements = int64_t{1} << 18;  // buffers larger than this are not allocated
constexpr int64_t kMaxWork = int64_t{1} << 21;      // batch·heads·len_q·len_kv·d of a run
constexpr uint16_t kCanary = 0x5aa5;

std::mt19937_64 rng;

int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
bool chance(double p) { return std::bernoulli_distribution(p)(rng); }

// A value from the places where descriptors go wrong.
int64_t wild() {
    static const int64_t edges[] = {0, 1, -1, 2, 7, 64, 255, 256, 257, 65535, 65536, INT32_MAX, int64_t{INT32_MAX} + 1,
                                    INT32_MIN, int64_t{1} << 40, INT64_MAX, INT64_MIN, INT64_MAX / 2, -(int64_t{1} << 33)};
    if (chance(0.6)) return edges[pick(0, sizeof edges / sizeof edges[0] - 1)];
    return pick(-100000, 100000);
}

// Largest element offset + 1 of a view (extents, strides, inner run), or -1 when it overflows
// or a stride is negative (the library refuses those; nothing is allocated for them).
int64_t span(std::initializer_list<std::pair<int64_t, int64_t>> dims, int64_t inner) {
    long double total = static_cast<long double>(inner);
    for (const auto& [extent, stride] : dims) {
        if (extent <= 0) return 0;
        if (stride < 0) return -1;
        total += static_cast<long double>(extent - 1) * static_cast<long double>(stride);
    }
    return total > static_cast<long double>(INT64_MAX / 4) ? -1 : static_cast<int64_t>(total);
}

// An exactly sized buffer of 16-bit (or 8- or 32-bit) elements; never empty, so data pointers
// stay valid, but with `bytes` exactly what the descriptor spans when that is known.
struct Buffer {
    std::vector<unsigned char> keep;  // a copy to compare against (inputs) or the canary image (outputs)
    unsigned char* data = nullptr;
    size_t bytes = 0;
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer() { std::free(data); }
    void allocate(size_t n) {
        bytes = n;
        data = static_cast<unsigned char*>(std::malloc(n == 0 ? 1 : n));  // malloc: 16-byte aligned
    }
};

uint16_t random_half(bool bf16, std::mt19937_64& r) {
    float x = std::normal_distribution<float>(0.0f, std::bernoulli_distribution(0.05)(r) ? 100.0f : 1.0f)(r);
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (bf16) return static_cast<uint16_t>(u >> 16);
    // fp16 by truncation: values of N(0, 100) fit.
    const uint32_t sign = (u >> 16) & 0x8000u;
    const int exp = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return static_cast<uint16_t>(sign);
    if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
    return static_cast<uint16_t>(sign | (exp << 10) | ((u >> 13) & 0x3ffu));
}

struct Case {
    sageattn_problem p{};
    bool runnable = true;  // every buffer real and exactly sized: forward may run
    bool varlen = false;
    std::vector<int32_t> cu_q, cu_kv;
    Buffer q, k, v, out, mask, lse;
    std::vector<uint8_t> out_used, lse_used;  // element offsets that are output elements
};

int32_t random_dtype() { return chance(0.95) ? static_cast<int32_t>(pick(1, 2)) : static_cast<int32_t>(wild() % 5); }

// Strides of a [batch, heads, tokens, dim] view: the three outer dims nested in a random order
// with random padding (so rows have gaps), the last dimension contiguous. Inputs may also
// broadcast a dim (stride 0); an output may not (its elements must not overlap).
void strides_for(int64_t batch, int64_t heads, int64_t tokens, int64_t d, bool input, sageattn_tensor* t) {
    int order[3] = {0, 1, 2};
    std::shuffle(order, order + 3, rng);
    const int64_t ext[3] = {batch, heads, tokens};
    int64_t s[3], stride = d + (chance(0.3) ? pick(1, 5) : 0);
    for (int k = 2; k >= 0; --k) {
        s[order[k]] = stride;
        stride = stride * std::max<int64_t>(ext[order[k]], 1) + (chance(0.2) ? pick(1, 3) : 0);
    }
    if (input && chance(0.05)) s[pick(0, 2)] = 0;
    t->batch_stride = s[0], t->head_stride = s[1], t->token_stride = s[2];
}

// Inputs come from a fixed pool of random values (drawing each element afresh cost most of the
// run), read from a random place with a random odd step, with a few values of any bit pattern.
void fill_input(Buffer& b, int64_t elements, bool bf16) {
    static std::vector<uint16_t> pools[2];
    std::vector<uint16_t>& pool = pools[bf16];
    if (pool.empty()) {
        std::mt19937_64 fixed(bf16 ? 2 : 1);  // the same pool whichever descriptor comes first
        for (int i = 0; i < 4096; ++i) pool.push_back(random_half(bf16, fixed));
    }
    b.allocate(static_cast<size_t>(elements) * 2);
    auto* h = reinterpret_cast<uint16_t*>(b.data);
    const size_t start = static_cast<size_t>(pick(0, 4095)), step = static_cast<size_t>(2 * pick(0, 500) + 1);
    for (int64_t i = 0; i < elements; ++i) h[i] = pool[(start + static_cast<size_t>(i) * step) % 4096];
    for (int k = 0; k < 2 && elements > 0; ++k)
        if (chance(0.01)) h[pick(0, elements - 1)] = static_cast<uint16_t>(pick(0, 0xffff));  // NaN, inf, subnormal
    b.keep.assign(b.data, b.data + b.bytes);
}

// The problem: a valid small one, then broken in a few places, or fields at random.
void generate(Case& c) {
    sageattn_problem& p = c.p;
    sageattn_problem_init(&p);
    p.dtype = random_dtype();
    // Small: a run must cost well under a millisecond under the sanitizers. Lengths past 64 and
    // 128 now and then, so that more than one K group and softmax step are crossed.
    p.batch = pick(0, 2);
    p.heads_kv = pick(1, 2);
    p.heads_q = p.heads_kv * pick(1, 2);
    p.len_q = chance(0.95) ? pick(0, 12) : pick(13, 70);
    p.len_kv = chance(0.95) ? pick(0, 12) : pick(13, 140);
    p.head_dim = chance(0.9) ? pick(1, 20) : pick(21, 260);
    p.causal = chance(0.4);
    p.scale = chance(0.6) ? 0.0f : std::uniform_real_distribution<float>(-2.0f, 2.0f)(rng);
    p.qk_granularity = static_cast<int32_t>(pick(0, 2));
    p.qk_precision = static_cast<int32_t>(pick(0, 2));
    p.qk_sharp_threshold = chance(0.8) ? 0.0f : std::uniform_real_distribution<float>(0.0f, 2.0f)(rng);
    p.pv_precision = static_cast<int32_t>(pick(0, 2));
    static const int32_t fp8_accum[] = {0, 1, 2, 3}, fp16_accum[] = {0, 1, 4};
    p.pv_accum = p.pv_precision == SAGEATTN_PV_FP16 ? fp16_accum[pick(0, 2)]
                 : p.pv_precision == SAGEATTN_PV_FP8 ? fp8_accum[pick(0, 3)]
                                                      : static_cast<int32_t>(pick(0, 1));
    p.smooth_k = chance(0.8);
    p.smooth_v = chance(0.3);
    p.num_threads = chance(0.9) ? 1 : static_cast<int32_t>(pick(0, 3));
    p.algorithm = chance(0.1) ? SAGEATTN_ALGORITHM_EXACT : SAGEATTN_ALGORITHM_QUANTIZED;
    p.check_seqlens = chance(0.1);

    // Varlen: packed tensors; offsets consistent, or not.
    c.varlen = chance(0.25);
    if (c.varlen) {
        const int64_t batch = pick(0, 4);
        p.batch = batch;
        c.cu_q.assign(static_cast<size_t>(batch + 1), 0);
        c.cu_kv.assign(static_cast<size_t>(batch + 1), 0);
        int64_t max_q = 0, max_kv = 0;
        for (int64_t b = 1; b <= batch; ++b) {
            c.cu_q[b] = c.cu_q[b - 1] + static_cast<int32_t>(pick(0, 8));
            c.cu_kv[b] = c.cu_kv[b - 1] + static_cast<int32_t>(pick(0, 8));
            max_q = std::max<int64_t>(max_q, c.cu_q[b] - c.cu_q[b - 1]);
            max_kv = std::max<int64_t>(max_kv, c.cu_kv[b] - c.cu_kv[b - 1]);
        }
        p.len_q = c.cu_q[batch] + (chance(0.2) ? pick(1, 5) : 0);  // rows past the last sequence
        p.len_kv = c.cu_kv[batch] + (chance(0.2) ? pick(1, 5) : 0);
        p.max_len_q = max_q + (chance(0.3) ? pick(0, 4) : 0);
        p.max_len_kv = max_kv + (chance(0.3) ? pick(0, 4) : 0);
        if (chance(0.3)) {  // inconsistent offsets
            auto& cu = chance(0.5) ? c.cu_q : c.cu_kv;
            cu[static_cast<size_t>(pick(0, batch))] = static_cast<int32_t>(chance(0.5) ? pick(-30, 60) : wild());
        }
        if (chance(0.1)) (chance(0.5) ? p.max_len_q : p.max_len_kv) = pick(-2, 3);
        p.cu_seqlens_q = c.cu_q.data();
        p.cu_seqlens_kv = c.cu_kv.data();
    }
    const int64_t views = c.varlen ? 1 : p.batch;  // varlen tensors are packed: one "batch"
    strides_for(views, p.heads_q, p.len_q, p.head_dim, true, &p.q);
    strides_for(views, p.heads_kv, p.len_kv, p.head_dim, true, &p.k);
    strides_for(views, p.heads_kv, p.len_kv, p.head_dim, true, &p.v);
    strides_for(views, p.heads_q, p.len_q, p.head_dim, false, &p.out);

    const int64_t mq = c.varlen ? p.max_len_q : p.len_q, mkv = c.varlen ? p.max_len_kv : p.len_kv;
    const int mask_kind = static_cast<int>(pick(0, 3));  // none, bool, additive (more often)
    if (mask_kind > 0) {
        p.mask.type = mask_kind == 1 ? SAGEATTN_MASK_BOOL : SAGEATTN_MASK_ADDITIVE;
        p.mask.dtype = mask_kind == 1 ? 0 : static_cast<int32_t>(pick(1, 3));
        // A dense [b, h, q, kv] layout, and any of b, h, q broadcast (stride 0).
        p.mask.kv_stride = 1;
        p.mask.q_stride = std::max<int64_t>(mkv, 1);
        p.mask.head_stride = p.mask.q_stride * std::max<int64_t>(mq, 1);
        p.mask.batch_stride = p.mask.head_stride * p.heads_q;
        for (int64_t* s : {&p.mask.batch_stride, &p.mask.head_stride, &p.mask.q_stride})
            if (chance(0.3)) *s = 0;
    }
    if (chance(0.4)) {
        const int64_t tokens = p.len_q;
        p.lse_token_stride = chance(0.5) ? 1 : p.heads_q;
        p.lse_head_stride = p.lse_token_stride == 1 ? tokens + (chance(0.3) ? 2 : 0) : 1;
        p.lse_batch_stride = c.varlen ? 0 : p.heads_q * (tokens + 2) + 3;
        p.lse = reinterpret_cast<float*>(uintptr_t{4});  // a placeholder until allocate()
    }

    // Break a few things, or draw fields at random.
    const int broken = chance(0.5) ? 0 : static_cast<int>(pick(1, 3));
    for (int i = 0; i < broken; ++i) {
        switch (pick(0, 27)) {
            case 0: p.dtype = static_cast<int32_t>(wild()); break;
            case 1: p.batch = wild(); break;
            case 2: p.heads_q = wild(); break;
            case 3: p.heads_kv = wild(); break;
            case 4: p.len_q = wild(); break;
            case 5: p.len_kv = wild(); break;
            case 6: p.head_dim = wild(); break;
            case 7: p.q.token_stride = wild(); break;
            case 8: p.k.head_stride = wild(); break;
            case 9: p.v.batch_stride = wild(); break;
            case 10: p.out.token_stride = wild(); break;
            case 11: p.out.head_stride = chance(0.5) ? 0 : wild(); break;
            case 12: p.scale = chance(0.5) ? NAN : (chance(0.5) ? INFINITY : -1e30f); break;
            case 13: p.qk_granularity = static_cast<int32_t>(wild()); break;
            case 14: p.qk_precision = static_cast<int32_t>(wild()); break;
            case 15: p.pv_precision = static_cast<int32_t>(wild()); break;
            case 16: p.pv_accum = static_cast<int32_t>(pick(-1, 6)); break;
            case 17: p.smooth_k = static_cast<int32_t>(wild()); break;
            case 18: p.mask.type = static_cast<int32_t>(pick(-1, 4)); break;
            case 19: p.mask.q_stride = wild(); break;
            case 20: p.mask.dtype = static_cast<int32_t>(wild()); break;
            case 21: p.lse_token_stride = wild(); break;
            case 22: p.device_type = static_cast<int32_t>(pick(-1, 3)); p.device_index = static_cast<int32_t>(pick(-1, 2)); break;
            case 23: p.algorithm = static_cast<int32_t>(wild()); break;
            case 24: p.qk_sharp_threshold = chance(0.5) ? -1.0f : NAN; break;
            case 25: p.num_threads = static_cast<int32_t>(pick(-2, 0)); break;
            case 26: p.check_seqlens = static_cast<int32_t>(wild()); break;
            default: p.max_len_q = wild(); break;
        }
    }
    // The caller's side of the contract, which no descriptor can break: a CPU varlen problem's
    // prefix sums are read up to cu[batch], so they have batch + 1 entries (up to 2^31 − 1,
    // past which the library refuses the batch before reading them).
    if (c.varlen) {
        if (p.batch > 100000 && p.batch <= INT32_MAX) p.batch = pick(0, 100000);
        if (p.batch >= 0 && p.batch <= 100000) {
            const size_t n = static_cast<size_t>(p.batch + 1);
            c.cu_q.resize(n, c.cu_q.back());
            c.cu_kv.resize(n, c.cu_kv.back());
        }
        p.cu_seqlens_q = c.cu_q.data();
        p.cu_seqlens_kv = c.cu_kv.data();
    }
}

// Real, exactly sized buffers for every view the descriptor names, or none (and no forward)
// when a span is unknown, negative or large. The library then sees the descriptor's pointers.
void allocate(Case& c) {
    sageattn_problem& p = c.p;
    const bool varlen = c.varlen;
    const bool bf16 = p.dtype == SAGEATTN_DTYPE_BF16;
    const int64_t b = varlen ? 1 : p.batch;
    const int64_t sq = span({{b, p.q.batch_stride}, {p.heads_q, p.q.head_stride}, {p.len_q, p.q.token_stride}}, p.head_dim);
    const int64_t sk = span({{b, p.k.batch_stride}, {p.heads_kv, p.k.head_stride}, {p.len_kv, p.k.token_stride}}, p.head_dim);
    const int64_t sv = span({{b, p.v.batch_stride}, {p.heads_kv, p.v.head_stride}, {p.len_kv, p.v.token_stride}}, p.head_dim);
    const int64_t so = span({{b, p.out.batch_stride}, {p.heads_q, p.out.head_stride}, {p.len_q, p.out.token_stride}}, p.head_dim);
    const int64_t mq = varlen ? p.max_len_q : p.len_q, mkv = varlen ? p.max_len_kv : p.len_kv;
    const int64_t sm = p.mask.type == SAGEATTN_MASK_NONE ? 0
                       : span({{p.batch, p.mask.batch_stride}, {p.heads_q, p.mask.head_stride}, {mq, p.mask.q_stride},
                               {mkv, p.mask.kv_stride}}, 1);
    const int64_t sl = p.lse == nullptr ? 0
                       : span({{b, p.lse_batch_stride}, {p.heads_q, p.lse_head_stride}, {p.len_q, p.lse_token_stride}}, 1);
    for (int64_t s : {sq, sk, sv, so, sm, sl})
        if (s < 0 || s > kMaxElements) c.runnable = false;
    // Extents the checks below walk (stride-0 views can span little and still be huge).
    long double elements = 1;
    for (int64_t x : {p.batch, p.heads_q, p.len_q, p.head_dim}) elements *= static_cast<long double>(std::max<int64_t>(x, 0));
    if (p.head_dim < 1 || p.head_dim > 1024 || p.heads_q < 1 || p.heads_kv < 1 || p.heads_q > 4096 || p.batch > 64 ||
        elements > static_cast<long double>(kMaxElements))
        c.runnable = false;
    static unsigned char placeholder[64];  // what a descriptor that cannot run points to
    if (!c.runnable) {
        for (sageattn_tensor* t : {&p.q, &p.k, &p.v, &p.out}) t->data = placeholder;
        if (p.mask.type != SAGEATTN_MASK_NONE) p.mask.data = placeholder;
        if (p.lse) p.lse = reinterpret_cast<float*>(placeholder);
        return;
    }
    fill_input(c.q, sq, bf16);
    fill_input(c.k, sk, bf16);
    fill_input(c.v, sv, bf16);
    p.q.data = c.q.data, p.k.data = c.k.data, p.v.data = c.v.data;
    if (sq == 0 && chance(0.5)) p.q.data = nullptr;  // an empty view may be NULL
    c.out.allocate(static_cast<size_t>(so) * 2);
    for (int64_t i = 0; i < so; ++i) reinterpret_cast<uint16_t*>(c.out.data)[i] = kCanary;
    c.out.keep.assign(c.out.data, c.out.data + c.out.bytes);
    p.out.data = c.out.data;
    if (p.mask.type != SAGEATTN_MASK_NONE) {
        const int64_t elem = p.mask.type == SAGEATTN_MASK_BOOL ? 1 : (p.mask.dtype == SAGEATTN_DTYPE_FP32 ? 4 : 2);
        c.mask.allocate(static_cast<size_t>(sm * elem));
        const uint64_t bits = rng();
        for (size_t i = 0; i < c.mask.bytes; ++i) {
            const unsigned char r = static_cast<unsigned char>((bits >> (i % 57)) ^ (i * 0x9d));
            c.mask.data[i] = p.mask.type == SAGEATTN_MASK_BOOL ? (r % 10 < 7) : r;  // additive: any bit patterns
        }
        if (p.mask.type == SAGEATTN_MASK_ADDITIVE && p.mask.dtype == SAGEATTN_DTYPE_FP32)
            for (int64_t i = 0; i < sm; ++i) {
                const unsigned r = static_cast<unsigned>(c.mask.data[4 * i]);
                const float x = r < 26 ? -INFINITY : (static_cast<float>(r) - 128.0f) / 25.0f;  // -inf, or -5 .. 5
                std::memcpy(c.mask.data + 4 * i, &x, 4);
            }
        c.mask.keep.assign(c.mask.data, c.mask.data + c.mask.bytes);
        p.mask.data = c.mask.data;
        if (sm == 0 && chance(0.5)) p.mask.data = nullptr;
    }
    if (p.lse) {
        c.lse.allocate(static_cast<size_t>(sl) * 4);
        std::memset(c.lse.data, 0x5a, c.lse.bytes);
        c.lse.keep.assign(c.lse.data, c.lse.data + c.lse.bytes);
        p.lse = reinterpret_cast<float*>(c.lse.data);
    }
    // Which elements of out and lse are outputs: rows of every sequence (varlen: of the sequences
    // the offsets describe, when they are consistent; the check below is skipped otherwise).
    c.out_used.assign(static_cast<size_t>(so), 0);
    c.lse_used.assign(static_cast<size_t>(sl), 0);
    for (int64_t bb = 0; bb < p.batch; ++bb)
        for (int64_t h = 0; h < p.heads_q; ++h) {
            const int64_t first = varlen ? c.cu_q[bb] : 0;
            const int64_t len = varlen ? int64_t{c.cu_q[bb + 1]} - c.cu_q[bb] : p.len_q;
            for (int64_t t = first; t < first + len && t >= 0 && t < p.len_q; ++t) {
                const int64_t o = (varlen ? 0 : bb * p.out.batch_stride) + h * p.out.head_stride + t * p.out.token_stride;
                for (int64_t ch = 0; ch < p.head_dim; ++ch) c.out_used[o + ch] = 1;
                if (p.lse) c.lse_used[(varlen ? 0 : bb * p.lse_batch_stride) + h * p.lse_head_stride + t * p.lse_token_stride] = 1;
            }
        }
}

void perturb_struct_size(sageattn_problem& p, std::vector<unsigned char>& bigger) {
    if (!chance(0.03)) return;
    const uint32_t sizes[] = {0, 8, 351, 352, static_cast<uint32_t>(sizeof(sageattn_problem)) + 16};
    p.struct_size = sizes[pick(0, 4)];
    if (chance(0.3)) p.abi_version = static_cast<uint32_t>(pick(0, 3));
    if (p.struct_size > sizeof(sageattn_problem)) {  // a newer caller: tail bytes follow the struct
        bigger.assign(p.struct_size, 0);
        if (chance(0.5)) bigger[sizeof(sageattn_problem) + static_cast<size_t>(pick(0, 15))] = 1;
    }
}

struct Stats {
    int64_t runs = 0, ran_ok = 0, by_status[SAGEATTN_ERROR_INTERNAL + 2] = {};
};

[[noreturn]] void die(int64_t index, uint64_t seed, const char* what) {
    std::fprintf(stderr, "fuzz_abi: descriptor %" PRId64 " (seed %" PRIu64 "): %s\n", index, seed, what);
    std::abort();
}

bool valid_status(int s) { return s >= SAGEATTN_SUCCESS && s <= SAGEATTN_ERROR_INTERNAL; }

void one(int64_t index, uint64_t seed, bool cuda_build, Stats& stats) {
    Case c;
    generate(c);
    // A build with a CUDA backend would run CUDA problems on the device through host pointers:
    // there such problems are checked and sized but never run.
    bool may_run = !(cuda_build && c.p.device_type == SAGEATTN_DEVICE_CUDA);
    allocate(c);
    std::vector<unsigned char> bigger;
    perturb_struct_size(c.p, bigger);
    const sageattn_problem* problem = &c.p;
    if (!bigger.empty()) {
        std::memcpy(bigger.data(), &c.p, sizeof c.p);
        problem = reinterpret_cast<const sageattn_problem*>(bigger.data());
    }

    const int checked = sageattn_check(problem);
    if (!valid_status(checked)) die(index, seed, "sageattn_check returned no status");
    if ((checked == SAGEATTN_SUCCESS) != (sageattn_last_error()[0] == '\0')) die(index, seed, "message and status disagree");
    size_t bytes = 12345;
    const int sized = sageattn_workspace_size(problem, &bytes);
    if (sized != checked) die(index, seed, "sageattn_workspace_size and sageattn_check disagree");
    if (sized != SAGEATTN_SUCCESS && bytes != 0) die(index, seed, "a refused problem got a workspace size");
    // A plan of it: refused as sageattn_check refuses it, or sized the same.
    sageattn_plan* plan = reinterpret_cast<sageattn_plan*>(&bytes);
    const int planned = sageattn_plan_create(problem, &plan);
    if (planned != checked) die(index, seed, "sageattn_plan_create and sageattn_check disagree");
    if ((planned == SAGEATTN_SUCCESS) != (plan != nullptr)) die(index, seed, "sageattn_plan_create's plan and status disagree");
    const sageattn_data data{c.p.q.data, c.p.k.data, c.p.v.data, c.p.out.data, c.p.mask.data, c.p.lse, c.p.cu_seqlens_q,
                             c.p.cu_seqlens_kv};
    struct PlanGuard {
        sageattn_plan* plan;
        ~PlanGuard() { sageattn_plan_destroy(plan); }
    } guard{plan};
    if (plan) {
        size_t plan_bytes = 0;
        if (sageattn_plan_workspace_size(plan, &data, &plan_bytes) != SAGEATTN_SUCCESS || plan_bytes != bytes)
            die(index, seed, "sageattn_plan_workspace_size and sageattn_workspace_size disagree");
    }
    if (!c.runnable || !may_run) {
        ++stats.by_status[checked];
        return;
    }
    long double work = 1;
    for (int64_t x : {c.p.batch, c.p.heads_q, c.p.len_q, c.p.len_kv, c.p.head_dim})
        work *= static_cast<long double>(std::max<int64_t>(x, 1));
    if (checked == SAGEATTN_SUCCESS && (work > static_cast<long double>(kMaxWork) || bytes > (size_t{64} << 20))) {
        ++stats.by_status[checked];
        return;
    }
    // The workspace: exactly the size asked for, 64-byte aligned; now and then too small,
    // misaligned or NULL.
    void* block = nullptr;
    size_t given = bytes;
    const int ws_case = static_cast<int>(pick(0, 19));
    if (ws_case == 0 && given > 0) given -= 1;
    if (given > 0 && posix_memalign(&block, 64, given) != 0) die(index, seed, "out of memory");
    void* ws = block;
    if (ws_case == 1 && block) ws = static_cast<char*>(block) + 1;  // misaligned: refused before any use
    if (ws_case == 2) ws = nullptr;
    // Half the runs through the plan: the same checks hold.
    const int status = plan && pick(0, 1) == 1 ? sageattn_plan_forward(plan, &data, ws, given, nullptr)
                                               : sageattn_forward(problem, ws, given, nullptr);
    std::free(block);
    if (!valid_status(status)) die(index, seed, "sageattn_forward returned no status");
    if ((status == SAGEATTN_SUCCESS) != (sageattn_last_error()[0] == '\0')) die(index, seed, "message and status disagree");
    if (checked == SAGEATTN_SUCCESS && status != SAGEATTN_SUCCESS && ws_case > 2)
        die(index, seed, "a valid problem failed with a good workspace");
    ++stats.runs;
    ++stats.by_status[status];
    if (status == SAGEATTN_SUCCESS) ++stats.ran_ok;

    // Inputs untouched; outputs untouched where no output element is (or everywhere, on failure).
    for (const Buffer* b : {&c.q, &c.k, &c.v, &c.mask})
        if (b->bytes && std::memcmp(b->data, b->keep.data(), b->bytes) != 0) die(index, seed, "an input was written");
    const bool offsets_consistent = [&] {
        if (!c.varlen) return true;
        for (size_t b = 1; b < c.cu_q.size(); ++b)
            if (c.cu_q[b] < c.cu_q[b - 1] || c.cu_kv[b] < c.cu_kv[b - 1]) return false;
        return c.cu_q[0] == 0 && c.cu_kv[0] == 0;
    }();
    const auto* out = reinterpret_cast<const uint16_t*>(c.out.data);
    const auto* out_keep = reinterpret_cast<const uint16_t*>(c.out.keep.data());
    for (size_t i = 0; i < c.out_used.size(); ++i)
        if ((status != SAGEATTN_SUCCESS || (offsets_consistent && !c.out_used[i])) && out[i] != out_keep[i])
            die(index, seed, status == SAGEATTN_SUCCESS ? "out was written between its elements" : "a failed call wrote out");
    for (size_t i = 0; i < c.lse_used.size(); ++i)
        if ((status != SAGEATTN_SUCCESS || (offsets_consistent && !c.lse_used[i])) &&
            std::memcmp(c.lse.data + 4 * i, c.lse.keep.data() + 4 * i, 4) != 0)
            die(index, seed, status == SAGEATTN_SUCCESS ? "lse was written between its elements" : "a failed call wrote lse");
}

}  // namespace

int main(int argc, char** argv) {
    int64_t count = 100000, from = 0;
    uint64_t seed = 0;
    bool seeded = false;
    if (const char* env = std::getenv("SAGEATTN_TEST_SEED")) seed = std::strtoull(env, nullptr, 10), seeded = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string arg = argv[i];
        if (arg == "--count") count = std::strtoll(argv[i + 1], nullptr, 10);
        else if (arg == "--from") from = std::strtoll(argv[i + 1], nullptr, 10);  // replay from a descriptor
        else if (arg == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10), seeded = true;
        else {
            std::fprintf(stderr, "usage: %s [--count N] [--seed S] [--from I]\n", argv[0]);
            return 2;
        }
    }
    if (!seeded) seed = std::random_device{}();
    std::printf("[ seed     ] SAGEATTN_TEST_SEED=%" PRIu64 "\n", seed);
    sageattn_build_info info;
    sageattn_build_info_init(&info);
    const bool cuda_build = sageattn_get_build_info(&info) == SAGEATTN_SUCCESS && (info.backends & SAGEATTN_BACKEND_CUDA);
    Stats stats;
    for (int64_t i = from; i < from + count; ++i) {
        rng.seed(seed * 1000003u + static_cast<uint64_t>(i));  // each descriptor replayable alone
        one(i, seed, cuda_build, stats);
    }
    std::printf("[ fuzz     ] %" PRId64 " descriptors; %" PRId64 " reached sageattn_forward with real buffers, %" PRId64
                " of them ran (CPU)\n",
                count, stats.runs, stats.ran_ok);
    for (int s = 0; s <= SAGEATTN_ERROR_INTERNAL; ++s)
        if (stats.by_status[s]) std::printf("[ fuzz     ]   %-36s %" PRId64 "\n", sageattn_status_name(static_cast<sageattn_status>(s)), stats.by_status[s]);
    if (stats.by_status[SAGEATTN_ERROR_INTERNAL] != 0) {
        std::fprintf(stderr, "fuzz_abi: SAGEATTN_ERROR_INTERNAL is a bug\n");
        return 1;
    }
    if (stats.ran_ok * 5 < count) {  // the generator must keep producing problems that run
        std::fprintf(stderr, "fuzz_abi: only %" PRId64 " of %" PRId64 " descriptors ran\n", stats.ran_ok, count);
        return 1;
    }
    return 0;
}
