// sageattn-demo: runs attention through the C ABI on the CPU and prints how far
// the quantized algorithm lands from the exact one, for a few typical options.
//
//   sageattn-demo [--len N] [--heads H] [--dim D] [--batch B] [--fp16] [--causal]
//                 [--k-bias SIGMA] [--qk-mult X] [--threads T]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sageattn/sageattn.hpp"

namespace {

struct Args {
    int64_t len = 1024, heads = 4, dim = 128, batch = 1;
    bool fp16 = false, causal = false;
    double k_bias = 4.0, qk_mult = 1.0;
    int threads = 0;
    bool help = false;
};

void usage(std::FILE* to) {
    std::fputs("usage: sageattn-demo [--len N] [--heads H] [--dim D] [--batch B] [--fp16] [--causal]\n"
               "                     [--k-bias SIGMA] [--qk-mult X] [--threads T]\n", to);
}

void help() {
    usage(stdout);
    std::puts("\nRuns attention through the C ABI on the CPU for each quantization mode and prints its\n"
              "accuracy against exact float64 attention (cosine, relative L1, max |err|) and its time.\n"
              "Inputs are N(0,1) (times --qk-mult for Q and K) with a K channel bias of N(0, SIGMA^2).\n"
              "Defaults: 1 x 4 heads x 1024 tokens x 128, bf16, --k-bias 4, all CPU threads.");
}

bool parse(int argc, char** argv, Args& a) {
    for (int i = 1; i < argc; ++i) {
        const std::string f = argv[i];
        auto value = [&](double& out) {
            if (i + 1 >= argc) return false;
            char* end = nullptr;
            out = std::strtod(argv[++i], &end);
            return end && *end == '\0';
        };
        double v = 0;
        if (f == "-h" || f == "--help") a.help = true;
        else if (f == "--fp16") a.fp16 = true;
        else if (f == "--causal") a.causal = true;
        else if (f == "--len" && value(v) && v >= 1) a.len = static_cast<int64_t>(v);
        else if (f == "--heads" && value(v) && v >= 1) a.heads = static_cast<int64_t>(v);
        else if (f == "--dim" && value(v) && v >= 1) a.dim = static_cast<int64_t>(v);
        else if (f == "--batch" && value(v) && v >= 1) a.batch = static_cast<int64_t>(v);
        else if (f == "--k-bias" && value(v)) a.k_bias = v;
        else if (f == "--qk-mult" && value(v)) a.qk_mult = v;
        else if (f == "--threads" && value(v) && v >= 0) a.threads = static_cast<int>(v);
        else return false;
    }
    return true;
}

// Bits of a float rounded to fp16/bf16, and back: enough for a demo.
uint16_t to_bits(float x, bool fp16) {
    if (!fp16) {
        uint32_t u;
        std::memcpy(&u, &x, 4);
        u += 0x7fffu + ((u >> 16) & 1u);
        return static_cast<uint16_t>(u >> 16);
    }
    // Normal-range fp16 only (the demo's inputs stay within it).
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a < 0x38800000u) return static_cast<uint16_t>(sign);
    return static_cast<uint16_t>(sign | ((a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u) >> 13));
}
float from_bits(uint16_t h, bool fp16) {
    uint32_t u;
    if (!fp16) u = static_cast<uint32_t>(h) << 16;
    else {
        const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
        u = e == 0 ? 0u : ((h & 0x8000u) << 16) | ((e + 112u) << 23) | (m << 13);
    }
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

struct Row {
    const char* name;
    sageattn_pv_precision pv;
    sageattn_qk_granularity gran;
    sageattn_qk_precision qk;
    bool smooth_k;
};

}  // namespace

int main(int argc, char** argv) {
    Args a;
    if (!parse(argc, argv, a)) {
        usage(stderr);
        return 2;
    }
    if (a.help) {
        help();
        return 0;
    }
    const int64_t n = a.batch * a.heads * a.len * a.dim;
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> bias(static_cast<size_t>(a.dim));
    for (auto& b : bias) b = static_cast<float>(a.k_bias) * normal(rng);
    std::vector<uint16_t> q(n), k(n), v(n), out(n), exact(n);
    for (int64_t i = 0; i < n; ++i) {
        q[i] = to_bits(static_cast<float>(a.qk_mult) * normal(rng), a.fp16);
        k[i] = to_bits(static_cast<float>(a.qk_mult) * normal(rng) + bias[i % a.dim], a.fp16);
        v[i] = to_bits(normal(rng), a.fp16);
    }

    auto problem = [&](void* dst) {
        sageattn::Problem p;
        p.dtype(a.fp16 ? sageattn::DType::FP16 : sageattn::DType::BF16)
            .on_cpu(a.threads)
            .shape(a.batch, a.heads, a.heads, a.len, a.len, a.dim)
            .q(sageattn::hnd(q.data(), a.heads, a.len, a.dim))
            .k(sageattn::hnd(k.data(), a.heads, a.len, a.dim))
            .v(sageattn::hnd(v.data(), a.heads, a.len, a.dim))
            .out(sageattn::hnd(dst, a.heads, a.len, a.dim))
            .causal(a.causal);
        return p;
    };
    auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };

    try {
        auto t0 = std::chrono::steady_clock::now();
        problem(exact.data()).exact().run(nullptr, 0);
        const double exact_s = seconds_since(t0);
        std::printf("sageattn %s (ABI %d) on the CPU: batch %lld, heads %lld, len %lld, head_dim %lld, %s%s\n",
                    sageattn_version(), sageattn_abi_version(), static_cast<long long>(a.batch),
                    static_cast<long long>(a.heads), static_cast<long long>(a.len), static_cast<long long>(a.dim),
                    a.fp16 ? "fp16" : "bf16", a.causal ? ", causal" : "");
        std::printf("inputs: q, k ~ N(0, %g^2), K channel bias ~ N(0, %g^2), v ~ N(0, 1)\n", a.qk_mult, a.k_bias);
        std::printf("accuracy against exact float64 attention (%.2f s), rounded to the output dtype:\n\n", exact_s);
        std::printf("%-34s %10s %10s %10s %8s\n", "algorithm", "cosine", "rel. L1", "max |err|", "time s");

        const Row rows[] = {
            {"int8 QK (per-thread) + fp8 PV", SAGEATTN_PV_FP8, SAGEATTN_QK_PER_THREAD, SAGEATTN_QK_AUTO, true},
            {"int8 QK (per-thread) + fp16 PV", SAGEATTN_PV_FP16, SAGEATTN_QK_PER_THREAD, SAGEATTN_QK_AUTO, true},
            {"int8 QK (per-warp) + fp8 PV", SAGEATTN_PV_FP8, SAGEATTN_QK_PER_WARP, SAGEATTN_QK_AUTO, true},
            {"int8 QK (per-block) + fp8 PV", SAGEATTN_PV_FP8, SAGEATTN_QK_PER_BLOCK, SAGEATTN_QK_AUTO, true},
            {"... without smooth K, int8 only", SAGEATTN_PV_FP8, SAGEATTN_QK_PER_THREAD, SAGEATTN_QK_INT8, false},
        };
        for (const Row& r : rows) {
            sageattn::Problem p = problem(out.data());
            p.qk(r.gran, r.qk).pv(r.pv).smooth(r.smooth_k, false);
            // A plan: the problem checked and prepared once; an engine would keep it per shape
            // and run it on each call's pointers (here the same ones).
            const sageattn::Plan plan(p);
            const size_t bytes = plan.workspace_size(p.data());
            std::vector<unsigned char> storage(bytes + 64);
            void* ws = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
            t0 = std::chrono::steady_clock::now();
            plan.run(p.data(), ws, bytes);
            const double s = seconds_since(t0);
            double dot = 0, nx = 0, ny = 0, l1 = 0, l1r = 0, worst = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double x = from_bits(out[i], a.fp16), y = from_bits(exact[i], a.fp16);
                dot += x * y, nx += x * x, ny += y * y, l1 += std::fabs(x - y), l1r += std::fabs(y);
                worst = std::fmax(worst, std::fabs(x - y));
            }
            std::printf("%-34s %10.6f %10.5f %10.5f %8.2f\n", r.name, dot / std::sqrt(nx * ny), l1 / l1r, worst, s);
        }
    } catch (const sageattn::Error& e) {
        std::fprintf(stderr, "sageattn-demo: %s\n", e.what());
        return 1;
    }
    return 0;
}
