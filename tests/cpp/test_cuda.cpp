// GPU tests: every CUDA kernel against the CPU emulation of the same algorithm
// (docs/ALGORITHM.md §7: agreement far inside the quantization error) and
// against the float64 reference, with outputs poisoned before each launch.
// Without a CUDA device every test here is skipped, and says so.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda/backend.hpp"
#include "cuda/kernels.hpp"
#include "cuda/params.hpp"
#include "support.hpp"

namespace sageattn::test {
namespace {

bool have_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU()                                                         \
    do {                                                                      \
        if (!have_gpu()) GTEST_SKIP() << "GPU test skipped: no CUDA device"; \
    } while (0)

std::mt19937_64& rng() {
    static std::mt19937_64 r(seed() + 900);
    return r;
}

struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, bytes ? bytes : 1), cudaSuccess); }
    ~DeviceBuffer() { cudaFree(ptr); }
};

void* upload(std::vector<std::unique_ptr<DeviceBuffer>>& keep, const void* host, size_t bytes) {
    keep.push_back(std::make_unique<DeviceBuffer>(bytes));
    cudaMemcpy(keep.back()->ptr, host, bytes, cudaMemcpyHostToDevice);
    return keep.back()->ptr;
}

// Runs a.problem on the GPU over device copies of its tensors (same strides);
// copies out and lse back into a. mask_bytes/cu_seqlens are uploaded when set.
sageattn_status run_gpu(Attention& a, size_t mask_bytes = 0) {
    std::vector<std::unique_ptr<DeviceBuffer>> keep;
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    p.device_index = 0;
    auto bytes = [](const Tensor& t) { return t.storage.size() * sizeof(uint16_t); };
    p.q.data = upload(keep, a.q.storage.data(), bytes(a.q));
    p.k.data = upload(keep, a.k.storage.data(), bytes(a.k));
    p.v.data = upload(keep, a.v.storage.data(), bytes(a.v));
    a.poison();
    p.out.data = upload(keep, a.out.storage.data(), bytes(a.out));  // poisoned
    if (a.problem.lse) p.lse = static_cast<float*>(upload(keep, a.lse.data(), a.lse.size() * 4));
    if (a.problem.mask.type != SAGEATTN_MASK_NONE) p.mask.data = upload(keep, a.problem.mask.data, mask_bytes);
    if (a.problem.cu_seqlens_q) {
        const size_t n = static_cast<size_t>(a.problem.batch + 1) * 4;
        p.cu_seqlens_q = static_cast<const int32_t*>(upload(keep, a.problem.cu_seqlens_q, n));
        p.cu_seqlens_kv = static_cast<const int32_t*>(upload(keep, a.problem.cu_seqlens_kv, n));
    }
    size_t ws_bytes = 0;
    sageattn_status s = sageattn_workspace_size(&p, &ws_bytes);
    if (s != SAGEATTN_SUCCESS) return s;
    DeviceBuffer ws(ws_bytes);
    cudaMemset(ws.ptr, 0xff, ws_bytes);  // poison the workspace too: nothing may read what it did not write
    s = sageattn_forward(&p, ws.ptr, ws_bytes, nullptr);
    if (s != SAGEATTN_SUCCESS) return s;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(a.out.storage.data(), p.out.data, bytes(a.out), cudaMemcpyDeviceToHost);
    if (a.problem.lse) cudaMemcpy(a.lse.data(), p.lse, a.lse.size() * 4, cudaMemcpyDeviceToHost);
    return SAGEATTN_SUCCESS;
}

struct Result {
    Accuracy vs_cpu, vs_ref;
};

int device_cc() {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    return major * 10 + minor;
}

// What P·V precision the library picks by default: FP8 from sm89 on, at every head dim. On
// sm_90, where FP8 mma.sync is emulated, that is the sm_90a kernel's FP8 P·V, which it has at
// every padded head dim (64, 128 and 256); Gpu.Sm90TakesEveryHeadDimWithFp8Pv checks it there.
int32_t gpu_default_pv() { return device_cc() >= 89 ? SAGEATTN_PV_FP8 : SAGEATTN_PV_FP16; }

// The problem of `a` on GPU 0, normalized and prepared as forward() would.
Problem prepared_on_gpu(const Attention& a) {
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    p.device_index = 0;
    Problem pr;
    EXPECT_EQ(api::normalize(&p, &pr), SAGEATTN_SUCCESS) << sageattn_last_error();
    EXPECT_EQ(cuda::prepare(pr), SAGEATTN_SUCCESS) << sageattn_last_error();
    return pr;
}

// The §6 softmax step the GPU runs this problem's INT8 heads with (the emulation follows it).
int64_t gpu_int8_softmax_block(const Attention& a) { return cuda::int8_softmax_block(prepared_on_gpu(a)); }

// The same problem on the CPU emulation and on the GPU; both judged. On sm_90 small
// problems run as one mma.sync launch: each is run that way and, with that path off,
// on the sm_90a kernel too (elsewhere both runs take the same kernels). The emulation
// takes the softmax step of the kernel that runs.
Result check(Attention& a, const std::string& name, size_t mask_bytes = 0, double ref_cos = 0.999) {
    if (a.problem.pv_precision == SAGEATTN_PV_AUTO) a.problem.pv_precision = gpu_default_pv();
    Result r{};
    for (const bool small : {true, false}) {
        cuda::set_small_problem_path(small);
        const int64_t step = gpu_int8_softmax_block(a);
        a.emulate(step);
        const std::vector<double> cpu = a.output();
        const std::vector<float> cpu_lse = a.lse;
        const sageattn_status s = run_gpu(a, mask_bytes);
        cuda::set_small_problem_path(true);
        const std::string label = name + (small ? "" : " [no small path]") + (step == 64 ? "" : " [128-key steps]");
        EXPECT_EQ(s, SAGEATTN_SUCCESS) << label << ": " << sageattn_last_error();
        const std::vector<double> gpu = a.output();
        const Result here{compare(gpu, cpu), compare(gpu, a.reference())};
        std::printf("[ gpu      ] %-66s vs CPU: cos %.7f rel.L1 %.6f | vs float64: cos %.6f rel.L1 %.5f\n",
                    label.c_str(), here.vs_cpu.cosine, here.vs_cpu.rel_l1, here.vs_ref.cosine, here.vs_ref.rel_l1);
        EXPECT_TRUE(here.vs_cpu.finite) << label;
        EXPECT_GE(here.vs_cpu.cosine, kGpuCosine) << label;
        EXPECT_LE(here.vs_cpu.rel_l1, gpu_rel_l1_bound(a.problem.pv_precision)) << label;
        EXPECT_GE(here.vs_ref.cosine, ref_cos) << label;
        for (size_t i = 0; i < cpu_lse.size(); ++i) {
            if (std::isinf(cpu_lse[i])) EXPECT_EQ(cpu_lse[i], a.lse[i]) << label << " lse row " << i;
            else EXPECT_NEAR(cpu_lse[i], a.lse[i], 0.01) << label << " lse row " << i;
        }
        if (small) r = here;
    }
    return r;
}

struct Case {
    Shape shape;
    bool causal;
    int32_t pv;
};

TEST(Gpu, ShapesLayoutsAndPrecisions) {
    REQUIRE_GPU();
    const Case cases[] = {
        {{1, 2, 2, 1, 1, 64}, false, SAGEATTN_PV_FP16},
        {{2, 4, 2, 100, 100, 64, SAGEATTN_DTYPE_BF16, Layout::NHD}, false, SAGEATTN_PV_FP8},
        {{1, 4, 1, 130, 257, 128, SAGEATTN_DTYPE_FP16, Layout::HND}, true, SAGEATTN_PV_FP16},
        {{1, 2, 2, 300, 77, 128, SAGEATTN_DTYPE_BF16, Layout::Strided}, true, SAGEATTN_PV_FP8},
        {{2, 2, 1, 64, 200, 40, SAGEATTN_DTYPE_BF16, Layout::NHD}, false, SAGEATTN_PV_FP16},
        {{1, 3, 3, 190, 190, 96, SAGEATTN_DTYPE_FP16, Layout::HND}, true, SAGEATTN_PV_FP8},
        {{1, 2, 2, 129, 129, 200, SAGEATTN_DTYPE_BF16, Layout::NHD}, false, SAGEATTN_PV_FP8},
        {{1, 2, 1, 70, 140, 256, SAGEATTN_DTYPE_BF16, Layout::HND}, true, SAGEATTN_PV_FP16},
        {{1, 2, 2, 513, 1024, 128, SAGEATTN_DTYPE_BF16, Layout::HND}, false, SAGEATTN_PV_FP8},
        // head_dim 129..256 with FP8 P·V: on sm_90 the sm_90a kernel's d256 instance (two
        // 128-byte halves of Q and K, P·V in two channel halves); a sequence end inside a
        // 128-key block, a causal edge, GQA.
        {{1, 2, 1, 300, 700, 256, SAGEATTN_DTYPE_BF16, Layout::NHD}, true, SAGEATTN_PV_FP8},
        {{2, 4, 2, 400, 333, 240, SAGEATTN_DTYPE_FP16, Layout::HND}, false, SAGEATTN_PV_FP8},
        // d64 from 2048 query rows on: the sm_90a kernel's three-warpgroup (192-row) tiles.
        {{1, 2, 1, 2100, 2300, 64, SAGEATTN_DTYPE_BF16, Layout::NHD}, true, SAGEATTN_PV_FP8},
        {{1, 1, 1, 33, 1, 1, SAGEATTN_DTYPE_FP16, Layout::HND}, false, SAGEATTN_PV_FP16},
    };
    for (const Case& c : cases) {
        Attention a(c.shape, Inputs{1.0f, 3.0f}, rng());
        a.problem.causal = c.causal;
        a.problem.pv_precision = c.pv;
        a.with_lse();
        const Shape& s = c.shape;
        check(a, "b" + std::to_string(s.batch) + " h" + std::to_string(s.heads_q) + "/" + std::to_string(s.heads_kv) +
                     " " + std::to_string(s.len_q) + "x" + std::to_string(s.len_kv) + " d" + std::to_string(s.head_dim) +
                     (c.causal ? " causal" : "") + (c.pv == SAGEATTN_PV_FP8 ? " fp8" : " fp16"),
              0, s.head_dim < 8 ? 0.98 : 0.999);
    }
}

TEST(Gpu, GranularitiesAndAccumulation) {
    REQUIRE_GPU();
    struct M { const char* name; int32_t gran, pv, accum, smooth_v; };
    for (const M& m : {M{"per-warp fp8", SAGEATTN_QK_PER_WARP, SAGEATTN_PV_FP8, 0, 0},
                       M{"per-block fp16", SAGEATTN_QK_PER_BLOCK, SAGEATTN_PV_FP16, 0, 0},
                       M{"fp8 fp32", 0, SAGEATTN_PV_FP8, SAGEATTN_ACCUM_FP32, 0},
                       M{"fp8 fp32+fp16", 0, SAGEATTN_PV_FP8, SAGEATTN_ACCUM_FP32_FP16, 0},
                       M{"fp16 fp16+fp32 smooth V", 0, SAGEATTN_PV_FP16, SAGEATTN_ACCUM_FP16_FP32, 1},
                       M{"fp8 smooth V", 0, SAGEATTN_PV_FP8, 0, 1}}) {
        Inputs in{1.0f, 3.0f};
        in.v_mean = 2.0f;
        Attention a(Shape{1, 2, 2, 200, 333, 128}, in, rng());
        a.problem.qk_granularity = m.gran;
        a.problem.pv_precision = m.pv;
        a.problem.pv_accum = m.accum;
        a.problem.smooth_v = m.smooth_v;
        check(a, m.name);
    }
}

TEST(Gpu, SharpHostileAndEmpty) {
    REQUIRE_GPU();
    {
        Attention a(Shape{1, 2, 2, 256, 256, 128}, Inputs{30.0f, 4.0f}, rng());
        a.with_lse();
        check(a, "q, k x30 (sharp heads: 16-bit QK)", 0, 0.995);
    }
    {
        // §5 head by head: two of eight (sequence, head) pairs sharp. On sm_90 the sm_90a kernel
        // takes the others and lists these two for the mma.sync launch after it.
        Attention a(Shape{2, 4, 4, 300, 500, 128}, Inputs{1.0f, 2.0f}, rng());
        for (const auto [b, h] : {std::pair<int64_t, int64_t>{0, 1}, {1, 2}})
            for (Tensor* t : {&a.q, &a.k})
                for (int64_t i = 0; i < (t == &a.q ? 300 : 500); ++i)
                    for (int64_t c = 0; c < 128; ++c) {
                        uint16_t& x = t->storage[t->index(b, h, i, c)];
                        x = encode(30.0f * decode(x, a.shape.dtype), a.shape.dtype);
                    }
        a.problem.causal = 1;
        a.with_lse();
        check(a, "two sharp heads of eight, causal", 0, 0.995);
    }
    for (int32_t dtype : {SAGEATTN_DTYPE_BF16, SAGEATTN_DTYPE_FP16}) {
        Attention a(Shape{1, 2, 2, 128, 128, 64, dtype}, Inputs{100.0f, 0.0f}, rng());
        a.problem.qk_precision = SAGEATTN_QK_INT8;
        check(a, "q, k x100, INT8 forced: finite", 0, 0.9);
    }
    Inputs zero;
    zero.zero_v_channel = true;
    Attention z(Shape{1, 2, 2, 100, 150, 64}, zero, rng());
    const Result r = check(z, "all-zero V channel");
    (void)r;
    for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(z.out.storage[z.out.index(0, 0, i, 0)], 0);
    Attention e(Shape{1, 2, 2, 90, 30, 64}, Inputs{}, rng());
    e.problem.causal = 1;  // the first 60 rows see no key
    e.with_lse();
    check(e, "causal len_q > len_kv (empty rows)");
    for (int64_t i = 0; i < 60; ++i) EXPECT_EQ(e.lse[i], -INFINITY);
}

TEST(Gpu, MasksAndVarlen) {
    REQUIRE_GPU();
    Shape s{2, 2, 2, 80, 100, 64};
    {
        Attention a(s, Inputs{1.0f, 2.0f}, rng());
        const size_t bytes = a.with_bool_mask(rng(), 0.6);
        a.problem.causal = 1;
        a.with_lse();
        check(a, "bool mask [b,1,lq,lkv] + causal", bytes);
    }
    {
        Attention a(s, Inputs{1.0f, 2.0f}, rng());
        check(a, "additive fp32 mask with -inf and finfo.min", a.with_key_bias(rng(), 5, 7));
    }
    {
        const std::vector<int32_t> cu_q{0, 1, 71, 71, 201}, cu_kv{0, 5, 69, 72, 272};
        Attention a(Shape{1, 4, 2, 201, 272, 64, SAGEATTN_DTYPE_BF16, Layout::NHD}, Inputs{1.0f, 2.0f}, rng());
        a.problem.causal = 1;
        a.with_lse();
        a.packed_varlen(cu_q, cu_kv, 130, 200);
        check(a, "varlen, 4 sequences, causal");
    }
}


// The GPU bound tells options apart: for each pair of option_pairs() (support.hpp), the GPU run
// is within the bound of the emulation of its own options and farther than the bound from the
// emulation with one option changed (Accuracy.OptionsAreFartherApartThanTheGpuBound checks on
// the CPU that the two emulations are 2.5x the bound apart), on every kernel path.
TEST(Gpu, BoundSeparatesOptions) {
    REQUIRE_GPU();
    for (const bool small : {true, false})
        for (const OptionPair& pair : option_pairs()) {
            cuda::set_small_problem_path(small);
            Attention a(option_shape(), option_inputs(), rng());
            pair.run.apply(a.problem);
            const int64_t step = gpu_int8_softmax_block(a);
            a.emulate(step);
            const std::vector<double> own = a.output();
            pair.other.apply(a.problem);
            a.emulate(gpu_int8_softmax_block(a));
            const std::vector<double> other = a.output();
            pair.run.apply(a.problem);
            const sageattn_status s = run_gpu(a);
            cuda::set_small_problem_path(true);
            const std::string label = std::string(pair.run.name) + " vs " + pair.other.name + (small ? "" : " [no small path]");
            ASSERT_EQ(s, SAGEATTN_SUCCESS) << label << ": " << sageattn_last_error();
            const std::vector<double> gpu = a.output();
            const double bound = gpu_rel_l1_bound(pair.run.pv);
            const Accuracy near = compare(gpu, own), far = compare(gpu, other);
            std::printf("[ gpu      ] %-60s rel.L1 to its emulation %.6f, to the other's %.5f (bound %.0e)\n",
                        label.c_str(), near.rel_l1, far.rel_l1, bound);
            EXPECT_LE(near.rel_l1, bound) << label;
            EXPECT_GT(far.rel_l1, bound) << label << ": the bound cannot tell the options apart";
        }
}

// ---- Hostile varlen offsets (§1): clamped without the check, refused with it -------------

// A device buffer of `bytes` with `guard` bytes of a known pattern on each side.
struct Guarded {
    static constexpr size_t kGuard = 4096;
    DeviceBuffer buf;
    size_t bytes;
    explicit Guarded(size_t n) : buf(n + 2 * kGuard), bytes(n) { cudaMemset(buf.ptr, 0x5a, n + 2 * kGuard); }
    void* data() const { return static_cast<char*>(buf.ptr) + kGuard; }
    bool guards_intact() const {
        std::vector<unsigned char> host(bytes + 2 * kGuard);
        cudaMemcpy(host.data(), buf.ptr, host.size(), cudaMemcpyDeviceToHost);
        for (size_t i = 0; i < kGuard; ++i)
            if (host[i] != 0x5a || host[kGuard + bytes + i] != 0x5a) return false;
        return true;
    }
};

// Runs a varlen problem over a's packed tensors with these offsets (which no host code
// checks on CUDA); out and lse between guards. Returns the status; out and lse come back.
sageattn_status run_gpu_varlen(Attention& a, const std::vector<int32_t>& cu_q, const std::vector<int32_t>& cu_kv,
                               int64_t max_q, int64_t max_kv, bool checked, bool* guards_ok) {
    std::vector<std::unique_ptr<DeviceBuffer>> keep;
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    p.device_index = 0;
    p.batch = static_cast<int64_t>(cu_q.size()) - 1;
    p.max_len_q = max_q;
    p.max_len_kv = max_kv;
    p.check_seqlens = checked;
    auto bytes = [](const Tensor& t) { return t.storage.size() * sizeof(uint16_t); };
    p.q.data = upload(keep, a.q.storage.data(), bytes(a.q));
    p.k.data = upload(keep, a.k.storage.data(), bytes(a.k));
    p.v.data = upload(keep, a.v.storage.data(), bytes(a.v));
    p.cu_seqlens_q = static_cast<const int32_t*>(upload(keep, cu_q.data(), cu_q.size() * 4));
    p.cu_seqlens_kv = static_cast<const int32_t*>(upload(keep, cu_kv.data(), cu_kv.size() * 4));
    a.poison();
    Guarded out(bytes(a.out)), lse(a.lse.size() * 4);
    cudaMemcpy(out.data(), a.out.storage.data(), bytes(a.out), cudaMemcpyHostToDevice);
    cudaMemcpy(lse.data(), a.lse.data(), a.lse.size() * 4, cudaMemcpyHostToDevice);
    p.out.data = out.data();
    p.lse = static_cast<float*>(lse.data());
    size_t ws_bytes = 0;
    sageattn_status s = sageattn_workspace_size(&p, &ws_bytes);
    if (s != SAGEATTN_SUCCESS) return s;
    Guarded ws(ws_bytes + 256);  // 256-byte aligned inside its guards
    cudaMemset(ws.data(), 0xff, ws_bytes);
    s = sageattn_forward(&p, ws.data(), ws_bytes, nullptr);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(a.out.storage.data(), out.data(), bytes(a.out), cudaMemcpyDeviceToHost);
    cudaMemcpy(a.lse.data(), lse.data(), a.lse.size() * 4, cudaMemcpyDeviceToHost);
    *guards_ok = out.guards_intact() && lse.guards_intact() && ws.guards_intact();
    return s;
}

// The CPU emulation of packed rows [q0, q0 + lq) against keys [k0, k0 + lk) of a's tensors, as one
// dense sequence (what a varlen sequence gives, §1): out as [lq][heads_q][d] doubles, and lse.
std::vector<double> emulate_rows(const Attention& a, int64_t q0, int64_t lq, int64_t k0, int64_t lk, int64_t step,
                                 std::vector<float>* lse) {
    sageattn_problem p = a.problem;
    p.batch = 1;
    p.len_q = lq;
    p.len_kv = lk;
    auto shift = [](sageattn_tensor t, int64_t rows) {
        t.data = static_cast<uint16_t*>(t.data) + rows * t.token_stride;
        return t;
    };
    p.q = shift(p.q, q0);
    p.k = shift(p.k, k0);
    p.v = shift(p.v, k0);
    const int64_t hq = a.shape.heads_q, d = a.shape.head_dim;
    std::vector<uint16_t> out(static_cast<size_t>(std::max<int64_t>(lq * hq * d, 1)));
    p.out = sageattn_tensor{out.data(), 0, d, hq * d};
    lse->assign(static_cast<size_t>(hq * lq), 0.f);
    p.lse = lse->data();
    p.lse_batch_stride = 0, p.lse_head_stride = lq, p.lse_token_stride = 1;
    Problem pr;
    EXPECT_EQ(api::normalize(&p, &pr), SAGEATTN_SUCCESS) << sageattn_last_error();
    pr.int8_softmax_block = step;
    std::vector<unsigned char> ws(cpu::quantized_workspace_size(pr) + 64);
    cpu::quantized_forward(pr, ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64);
    std::vector<double> o(static_cast<size_t>(lq * hq * d));
    for (size_t i = 0; i < o.size(); ++i) o[i] = decode(out[i], a.shape.dtype);
    return o;
}

// The inputs: offsets past the tensor ([0, 256, 512] on 256 rows), decreasing ones, a
// max_seqlen shorter than a sequence, negative and huge ones. Without the check each call
// succeeds, writes nothing outside out and lse (guards), leaves rows no sequence covers
// untouched, and gives every clamped sequence that overlaps no other the emulation's answer;
// with it each is refused, naming the array, and writes nothing. compute-sanitizer memcheck
// runs this test too (gpu_check.sh).
TEST(Gpu, HostileVarlen) {
    REQUIRE_GPU();
    struct Hostile {
        const char* what;
        std::vector<int32_t> cu_q, cu_kv;
        int64_t max_q, max_kv;
        const char* names;  // the array the checked run must name
    };
    const Hostile cases[] = {
        {"offsets past the tensor", {0, 256, 512}, {0, 256, 512}, 256, 256, "cu_seqlens_q"},
        {"decreasing offsets", {0, 200, 100, 256}, {0, 50, 250, 256}, 256, 256, "cu_seqlens_q"},
        {"max_seqlen shorter than a sequence", {0, 128, 256}, {0, 100, 256}, 64, 256, "cu_seqlens_q"},
        {"short max_seqlen_k", {0, 128, 256}, {0, 100, 256}, 256, 64, "cu_seqlens_kv"},
        {"negative and huge offsets", {0, 90, -7, 256}, {0, INT32_MAX, INT32_MIN, 256}, 256, 300, "cu_seqlens_q"},
        {"not starting at 0", {40, 100, 256}, {0, 100, 256}, 256, 256, "cu_seqlens_q[0]"},
    };
    for (const bool small : {true, false}) {
        cuda::set_small_problem_path(small);
        for (const Hostile& c : cases) {
            const std::string label = std::string(c.what) + (small ? "" : " [no small path]");
            Attention a(Shape{1, 2, 1, 256, 256, 64, SAGEATTN_DTYPE_BF16, Layout::NHD}, Inputs{1.0f, 2.0f}, rng());
            a.problem.pv_precision = gpu_default_pv();  // the emulation runs what the GPU picks
            a.with_lse();
            a.problem.lse_batch_stride = 0;
            a.problem.lse_head_stride = 256;
            a.problem.causal = 1;
            bool guards = false;
            // Checked: refused, nothing written.
            EXPECT_EQ(run_gpu_varlen(a, c.cu_q, c.cu_kv, c.max_q, c.max_kv, true, &guards), SAGEATTN_ERROR_INVALID_SEQLENS)
                << label;
            const std::string msg = sageattn_last_error();
            EXPECT_NE(msg.find(c.names), std::string::npos) << label << ": " << msg;
            EXPECT_TRUE(guards) << label;
            EXPECT_TRUE(std::all_of(a.out.storage.begin(), a.out.storage.end(), [](uint16_t x) { return x == 0x7fc1; }))
                << label << ": the refused call wrote out";
            std::printf("[ rejected ] %-44s %s\n", c.what, msg.c_str());
            // Unchecked: clamped.
            ASSERT_EQ(run_gpu_varlen(a, c.cu_q, c.cu_kv, c.max_q, c.max_kv, false, &guards), SAGEATTN_SUCCESS)
                << label << ": " << sageattn_last_error();
            EXPECT_TRUE(guards) << label << ": a write outside out, lse or the workspace";
            const int64_t batch = static_cast<int64_t>(c.cu_q.size()) - 1;
            std::vector<cuda::SeqRows> rq, rk;
            for (int64_t b = 0; b < batch; ++b) {
                rq.push_back(cuda::clamp_sequence(c.cu_q[b], c.cu_q[b + 1], 256, c.max_q));
                rk.push_back(cuda::clamp_sequence(c.cu_kv[b], c.cu_kv[b + 1], 256, c.max_kv));
            }
            sageattn_problem vp = a.problem;
            vp.batch = batch, vp.max_len_q = c.max_q, vp.max_len_kv = c.max_kv;
            vp.cu_seqlens_q = c.cu_q.data(), vp.cu_seqlens_kv = c.cu_kv.data();
            vp.device_type = SAGEATTN_DEVICE_CUDA;
            Problem pr;
            std::vector<int32_t> sane(c.cu_q.size(), 0);  // normalize() must not read the hostile offsets
            vp.cu_seqlens_q = vp.cu_seqlens_kv = sane.data();
            ASSERT_EQ(api::normalize(&vp, &pr), SAGEATTN_SUCCESS) << sageattn_last_error();
            ASSERT_EQ(cuda::prepare(pr), SAGEATTN_SUCCESS) << sageattn_last_error();
            pr.p.max_len_q = c.max_q, pr.p.max_len_kv = c.max_kv;
            const int64_t step = cuda::int8_softmax_block(pr);
            std::vector<int> covered(256, 0);
            for (int64_t b = 0; b < batch; ++b)
                for (int64_t i = rq[b].start; i < rq[b].start + rq[b].len; ++i) ++covered[i];
            int checked_rows = 0;
            for (int64_t b = 0; b < batch; ++b) {
                bool alone = true;
                for (int64_t i = rq[b].start; i < rq[b].start + rq[b].len; ++i) alone = alone && covered[i] == 1;
                if (!alone || rq[b].len == 0) continue;
                std::vector<float> lse;
                const std::vector<double> want = emulate_rows(a, rq[b].start, rq[b].len, rk[b].start, rk[b].len, step, &lse);
                std::vector<double> got(want.size());
                for (int64_t i = 0; i < rq[b].len; ++i)
                    for (int64_t h = 0; h < 2; ++h)
                        for (int64_t ch = 0; ch < 64; ++ch)
                            got[(i * 2 + h) * 64 + ch] =
                                decode(a.out.storage[a.out.index(0, h, rq[b].start + i, ch)], SAGEATTN_DTYPE_BF16);
                const Accuracy acc = compare(got, want);
                EXPECT_TRUE(acc.finite) << label << " sequence " << b;
                EXPECT_GE(acc.cosine, kGpuCosine) << label << " sequence " << b;
                EXPECT_LE(acc.rel_l1, gpu_rel_l1_bound(a.problem.pv_precision)) << label << " sequence " << b;
                for (int64_t h = 0; h < 2; ++h)
                    for (int64_t i = 0; i < rq[b].len; ++i) {
                        const float g = a.lse[h * 256 + rq[b].start + i], w = lse[h * rq[b].len + i];
                        if (std::isinf(w)) EXPECT_EQ(g, w) << label;
                        else EXPECT_NEAR(g, w, 0.01) << label;
                    }
                checked_rows += static_cast<int>(rq[b].len);
            }
            for (int64_t i = 0; i < 256; ++i)
                if (covered[i] == 0)
                    for (int64_t h = 0; h < 2; ++h)
                        EXPECT_EQ(a.out.storage[a.out.index(0, h, i, 0)], 0x7fc1) << label << ": row " << i << " is in no sequence";
            std::printf("[ gpu      ] %-44s clamped: %d rows checked against the emulation\n", label.c_str(), checked_rows);
        }
    }
    cuda::set_small_problem_path(true);
}

// check_seqlens on consistent offsets: the same bits as without it. Inside CUDA-graph capture it
// is refused (it waits for the stream), and the capture survives.
TEST(Gpu, CheckedVarlen) {
    REQUIRE_GPU();
    Attention a(Shape{1, 2, 1, 256, 256, 64, SAGEATTN_DTYPE_BF16, Layout::NHD}, Inputs{1.0f, 2.0f}, rng());
    a.with_lse();
    a.problem.lse_batch_stride = 0;
    a.problem.lse_head_stride = 256;
    const std::vector<int32_t> cu_q{0, 17, 17, 256}, cu_kv{0, 100, 130, 256};
    bool guards = false;
    ASSERT_EQ(run_gpu_varlen(a, cu_q, cu_kv, 239, 126, true, &guards), SAGEATTN_SUCCESS) << sageattn_last_error();
    EXPECT_TRUE(guards);
    const std::vector<uint16_t> checked = a.out.storage;
    ASSERT_EQ(run_gpu_varlen(a, cu_q, cu_kv, 239, 126, false, &guards), SAGEATTN_SUCCESS) << sageattn_last_error();
    EXPECT_TRUE(checked == a.out.storage);

    std::vector<std::unique_ptr<DeviceBuffer>> keep;
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    p.batch = 3, p.max_len_q = 239, p.max_len_kv = 126, p.check_seqlens = 1;
    auto bytes = [](const Tensor& t) { return t.storage.size() * sizeof(uint16_t); };
    p.q.data = upload(keep, a.q.storage.data(), bytes(a.q));
    p.k.data = upload(keep, a.k.storage.data(), bytes(a.k));
    p.v.data = upload(keep, a.v.storage.data(), bytes(a.v));
    p.out.data = upload(keep, a.out.storage.data(), bytes(a.out));
    p.lse = static_cast<float*>(upload(keep, a.lse.data(), a.lse.size() * 4));
    p.cu_seqlens_q = static_cast<const int32_t*>(upload(keep, cu_q.data(), cu_q.size() * 4));
    p.cu_seqlens_kv = static_cast<const int32_t*>(upload(keep, cu_kv.data(), cu_kv.size() * 4));
    size_t ws_bytes = 0;
    ASSERT_EQ(sageattn_workspace_size(&p, &ws_bytes), SAGEATTN_SUCCESS);
    DeviceBuffer ws(ws_bytes);
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    EXPECT_EQ(sageattn_forward(&p, ws.ptr, ws_bytes, stream), SAGEATTN_ERROR_UNSUPPORTED);
    const std::string msg = sageattn_last_error();
    EXPECT_NE(msg.find("check_seqlens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("CUDA graph"), std::string::npos) << msg;
    p.check_seqlens = 0;  // unchecked, the same problem captures
    EXPECT_EQ(sageattn_forward(&p, ws.ptr, ws_bytes, stream), SAGEATTN_SUCCESS) << sageattn_last_error();
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    if (graph) cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
}

// A workspace too small, NULL or not 256-byte aligned is refused with the CPU's statuses and
// messages before anything is launched: out keeps its poison.
TEST(Gpu, WorkspaceRefusedBeforeAnyLaunch) {
    REQUIRE_GPU();
    Attention a(Shape{1, 2, 2, 128, 128, 64, SAGEATTN_DTYPE_FP16, Layout::NHD}, Inputs{1.0f, 1.0f}, rng());
    std::vector<std::unique_ptr<DeviceBuffer>> keep;
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    auto bytes = [](const Tensor& t) { return t.storage.size() * sizeof(uint16_t); };
    p.q.data = upload(keep, a.q.storage.data(), bytes(a.q));
    p.k.data = upload(keep, a.k.storage.data(), bytes(a.k));
    p.v.data = upload(keep, a.v.storage.data(), bytes(a.v));
    a.poison();
    const std::vector<uint16_t> poisoned = a.out.storage;
    p.out.data = upload(keep, a.out.storage.data(), bytes(a.out));
    size_t need = 0;
    ASSERT_EQ(sageattn_workspace_size(&p, &need), SAGEATTN_SUCCESS) << sageattn_last_error();
    ASSERT_GT(need, 0u);
    DeviceBuffer ws(need + 256);
    EXPECT_EQ(sageattn_forward(&p, ws.ptr, need - 1, nullptr), SAGEATTN_ERROR_WORKSPACE_TOO_SMALL);
    EXPECT_EQ(std::string(sageattn_last_error()),
              "workspace_bytes = " + std::to_string(need - 1) + "; this problem needs " + std::to_string(need));
    EXPECT_EQ(sageattn_forward(&p, nullptr, 0, nullptr), SAGEATTN_ERROR_WORKSPACE_TOO_SMALL);
    EXPECT_EQ(sageattn_forward(&p, nullptr, need, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    EXPECT_EQ(std::string(sageattn_last_error()), "workspace is NULL");
    EXPECT_EQ(sageattn_forward(&p, static_cast<char*>(ws.ptr) + 64, need, nullptr), SAGEATTN_ERROR_MISALIGNED);
    EXPECT_NE(std::string(sageattn_last_error()).find("is not 256-byte aligned"), std::string::npos)
        << sageattn_last_error();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudaMemcpy(a.out.storage.data(), p.out.data, bytes(a.out), cudaMemcpyDeviceToHost);
    EXPECT_TRUE(a.out.storage == poisoned);
    EXPECT_EQ(sageattn_forward(&p, ws.ptr, need, nullptr), SAGEATTN_SUCCESS) << sageattn_last_error();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

// ---- Non-finite inputs (§6): NaN rows where the rule puts them, on every kernel path --------

// One NaN or infinity at a time in q, k, v or an additive bias, causal and masked, on the
// mma.sync kernel (small path), the sm_90a kernel (small path off, INT8 heads), the mma.sync
// kernel's 16-bit Q·Kᵀ (qk_precision input; and sharp heads beside the sm_90a kernel), FP8 and
// FP16 P·V: the rows that come out non-finite are exactly those the rule names (from the inputs,
// and as the emulation gives them), NaN in every channel and the LSE; every other row agrees
// with the emulation within the GPU bound. compute-sanitizer memcheck runs this test too.
TEST(Gpu, NonFiniteInputs) {
    REQUIRE_GPU();
    const Poke pokes[] = {
        {"NaN in q", 'q', 1, 137, 5, NAN},
        {"NaN in q, a row that sees no key", 'q', 0, 3, 60, NAN},
        {"+inf in q", 'q', 1, 140, 9, INFINITY},
        {"+inf in k", 'k', 0, 150, 7, INFINITY},
        {"NaN in k, a key K's mean does not sample", 'k', 0, 139, 30, NAN},
        {"NaN in v", 'v', 0, 200, 2, NAN},
        {"-inf in v, the last key", 'v', 0, 279, 63, -INFINITY},
        {"NaN bias", 'm', 0, 70, 0, NAN},
    };
    struct Path { const char* name; bool small; int32_t qk, pv; float mult; };
    const Path paths[] = {
        {"mma.sync fp8", true, SAGEATTN_QK_AUTO, SAGEATTN_PV_FP8, 1.0f},
        {"sm_90a (elsewhere mma.sync) fp8", false, SAGEATTN_QK_AUTO, SAGEATTN_PV_FP8, 1.0f},
        {"sm_90a (elsewhere mma.sync) fp16", false, SAGEATTN_QK_AUTO, SAGEATTN_PV_FP16, 1.0f},
        {"16-bit QK (qk input) fp16", true, SAGEATTN_QK_INPUT, SAGEATTN_PV_FP16, 1.0f},
        {"sharp heads beside the sm_90a kernel", false, SAGEATTN_QK_AUTO, SAGEATTN_PV_FP8, 30.0f},
    };
    const int64_t lq = 300, lkv = 280, d = 64;  // causal, len_q > len_kv: rows 0..19 see no key
    // The quantizers find a non-finite input by a statistic it spoils (common.cuh, max_keep_nan);
    // the sums pass reads only the keys K's mean samples, so one poke is in a key it skips.
    ASSERT_TRUE(alg::in_k_mean(150, lkv) && !alg::in_k_mean(139, lkv));
    for (const Path& path : paths)
        for (const Poke& poke : pokes) {
            const std::string label = std::string(path.name) + ": " + poke.what;
            Attention a(Shape{1, 2, 1, lq, lkv, d, SAGEATTN_DTYPE_BF16, Layout::NHD}, Inputs{path.mult, 2.0f}, rng());
            a.problem.causal = 1;
            a.problem.qk_precision = path.qk;
            a.problem.pv_precision = path.pv;
            a.with_lse();
            std::vector<float> bias;
            hide_keys(a, 230, 250, {70, 150, 200, 279}, bias);
            switch (poke.tensor) {
                case 'q': a.q.storage[a.q.index(0, poke.h, poke.t, poke.c)] = encode(poke.value, a.shape.dtype); break;
                case 'k': a.k.storage[a.k.index(0, poke.h, poke.t, poke.c)] = encode(poke.value, a.shape.dtype); break;
                case 'v': a.v.storage[a.v.index(0, poke.h, poke.t, poke.c)] = encode(poke.value, a.shape.dtype); break;
                default:
                    for (int64_t h = 0; h < 2; ++h)
                        for (int64_t i = 0; i < lq; ++i) {
                            float& e = bias[static_cast<size_t>((h * lq + i) * lkv + poke.t)];
                            if (e != -INFINITY) e = poke.value;
                        }
            }
            cuda::set_small_problem_path(path.small);
            const int64_t step = gpu_int8_softmax_block(a);
            a.emulate(step);
            const std::vector<double> cpu = a.output();
            const std::vector<float> cpu_lse = a.lse;
            const sageattn_status st = run_gpu(a, bias.size() * 4);
            cuda::set_small_problem_path(true);
            ASSERT_EQ(st, SAGEATTN_SUCCESS) << label << ": " << sageattn_last_error();
            const std::vector<double> gpu = a.output();
            const std::vector<char> want = expected_nonfinite_rows(a);
            EXPECT_EQ(nonfinite_rows(cpu, 2, d), want) << label << ": the emulation";
            ASSERT_EQ(nonfinite_rows(gpu, 2, d), want) << label;
            std::vector<double> gpu_ok, cpu_ok;
            int n_bad = 0;
            for (size_t row = 0; row < want.size(); ++row) {
                const size_t i = row / 2, h = row % 2;
                const float lse = a.lse[h * lq + i];
                if (want[row]) {
                    ++n_bad;
                    for (int64_t c = 0; c < d; ++c) EXPECT_TRUE(std::isnan(gpu[row * d + c])) << label << " row " << row;
                    EXPECT_TRUE(std::isnan(lse)) << label << " row " << row;
                    continue;
                }
                gpu_ok.insert(gpu_ok.end(), gpu.begin() + row * d, gpu.begin() + (row + 1) * d);
                cpu_ok.insert(cpu_ok.end(), cpu.begin() + row * d, cpu.begin() + (row + 1) * d);
                const float want_lse = cpu_lse[h * lq + i];
                if (std::isinf(want_lse)) EXPECT_EQ(lse, want_lse) << label << " row " << row;
                else EXPECT_NEAR(lse, want_lse, 0.01) << label << " row " << row;
            }
            const Accuracy acc = compare(gpu_ok, cpu_ok);
            std::printf("[ gpu      ] %-66s %3d NaN rows; the other rows vs CPU: cos %.7f rel.L1 %.6f\n", label.c_str(),
                        n_bad, acc.cosine, acc.rel_l1);
            EXPECT_GT(n_bad, 0) << label;
            EXPECT_TRUE(acc.finite) << label;
            EXPECT_GE(acc.cosine, kGpuCosine) << label;
            EXPECT_LE(acc.rel_l1, gpu_rel_l1_bound(path.pv)) << label;
        }
}

// Cross-CTA sums (K and V means, V's rounding error) are added in a fixed order:
// two runs give the same bits, on every kernel family.
TEST(Gpu, RunToRunIdentical) {
    REQUIRE_GPU();
    for (int32_t pv : {SAGEATTN_PV_FP8, SAGEATTN_PV_FP16}) {
        Inputs in{1.0f, 3.0f};
        in.v_mean = 1.0f;
        Attention a(Shape{2, 4, 2, 1500, 2100, 128}, in, rng());
        a.problem.pv_precision = pv;
        a.problem.smooth_v = 1;
        a.with_lse();
        ASSERT_EQ(run_gpu(a), SAGEATTN_SUCCESS) << sageattn_last_error();
        const std::vector<uint16_t> first = a.out.storage;
        const std::vector<float> first_lse = a.lse;
        ASSERT_EQ(run_gpu(a), SAGEATTN_SUCCESS) << sageattn_last_error();
        EXPECT_TRUE(first == a.out.storage) << (pv == SAGEATTN_PV_FP8 ? "fp8" : "fp16") << ": outputs differ between runs";
        EXPECT_TRUE(first_lse == a.lse) << "LSE differs between runs";
    }
}

// Caps, for its scope, the shared memory per CTA the dispatch takes the device to allow.
struct CtaSmemCap {
    explicit CtaSmemCap(int bytes) { cuda::set_cta_shared_memory_cap(bytes); }
    ~CtaSmemCap() { cuda::set_cta_shared_memory_cap(0); }
};

// The mma.sync configuration forward() launches for the problem of `a` now.
cuda::MmaPipeline gpu_pipeline(const Attention& a) { return cuda::attention_pipeline(prepared_on_gpu(a)); }

// On sm_90 with the sm_90a kernel built (an SM list that names 90), the dispatch's rule
// (backend.cu's sm90_takes), with nothing in the environment to change it: P·V precision auto
// is FP8 ("fp32+fp32") at every head dim, and with the small-problem path off the sm_90a
// kernel takes the INT8 heads of every padded head dim with it (64, 128 and 256), as the
// softmax step handed to the emulation shows (128 keys there, 64 on the mma.sync kernel).
// FP16 P·V ("fp32") it takes up to head_dim 128 only, FP8 P·V with "fp32" accumulation not
// at all. Elsewhere skipped.
TEST(Gpu, Sm90TakesEveryHeadDimWithFp8Pv) {
    REQUIRE_GPU();
    sageattn_build_info info;
    sageattn_build_info_init(&info);
    ASSERT_EQ(sageattn_get_build_info(&info), SAGEATTN_SUCCESS);
    if (device_cc() != 90 || std::strstr(info.kernel_families, "cuda-wgmma-sm90a") == nullptr)
        GTEST_SKIP() << "needs an sm_90 device and a build with the sm_90a kernel";
    cuda::set_small_problem_path(false);
    for (const int64_t d : {1, 64, 65, 128, 129, 192, 200, 256}) {
        const std::string label = "d" + std::to_string(d);
        Attention a(Shape{1, 2, 2, 300, 300, d}, Inputs{1.0f, 3.0f}, rng());
        const Problem pr = prepared_on_gpu(a);
        EXPECT_EQ(pr.p.pv_precision, SAGEATTN_PV_FP8) << label << ": auto";
        EXPECT_EQ(pr.p.pv_accum, SAGEATTN_ACCUM_FP32_FP32) << label << ": auto";
        EXPECT_EQ(cuda::int8_softmax_block(pr), alg::kWideKvBlock) << label << ": auto (FP8 P·V) on the sm_90a kernel";
        a.problem.pv_precision = SAGEATTN_PV_FP16;
        EXPECT_EQ(gpu_int8_softmax_block(a), d <= 128 ? alg::kWideKvBlock : alg::kKvBlock)
            << label << ": FP16 P·V on the sm_90a kernel up to 128, above on the mma.sync kernel";
        a.problem.pv_precision = SAGEATTN_PV_FP8;
        a.problem.pv_accum = SAGEATTN_ACCUM_FP32;
        EXPECT_EQ(gpu_int8_softmax_block(a), alg::kKvBlock) << label << ": FP8 P·V with \"fp32\" on the mma.sync kernel";
    }
    cuda::set_small_problem_path(true);
}

// Heads of 129-256 channels with FP8 P·V through every feature: on sm_90 the sm_90a kernel's
// d256 instance (two 128-byte halves of Q and K, P·V in two channel halves, two stages), or up
// to 192 channels its cut to 192, elsewhere the mma.sync kernels. Masks, varlen, sharp heads,
// length 1, sequences of many blocks (the stages wrap), padded head dims.
TEST(Gpu, WideHeadsEveryFeature) {
    REQUIRE_GPU();
    const auto wide = [](Shape s) {
        Attention a(s, Inputs{1.0f, 2.0f}, rng());
        a.problem.pv_precision = SAGEATTN_PV_FP8;
        return a;
    };
    // Four sequences (one of a single query, one of none), causal, with the LSE.
    const auto varlen_causal = [&](int64_t d, const char* label) {
        const std::vector<int32_t> cu_q{0, 1, 71, 71, 301}, cu_kv{0, 5, 69, 72, 572};
        Attention a = wide(Shape{1, 4, 2, 301, 572, d, SAGEATTN_DTYPE_BF16, Layout::NHD});
        a.problem.causal = 1;
        a.with_lse();
        a.packed_varlen(cu_q, cu_kv, 230, 500);
        check(a, label);
    };
    {
        Shape s{2, 2, 2, 80, 100, 256};
        Attention a = wide(s);
        const size_t bytes = a.with_bool_mask(rng(), 0.6);
        a.problem.causal = 1;
        a.with_lse();
        check(a, "d256 bool mask + causal", bytes);
    }
    {
        Attention a = wide(Shape{1, 2, 1, 150, 260, 256, SAGEATTN_DTYPE_FP16});
        check(a, "d256 additive fp32 mask with -inf and finfo.min", a.with_key_bias(rng(), 3, 200));
    }
    varlen_causal(256, "d256 varlen, 4 sequences, causal");
    {
        Attention a(Shape{1, 2, 2, 256, 256, 256}, Inputs{30.0f, 4.0f}, rng());
        a.problem.pv_precision = SAGEATTN_PV_FP8;
        a.with_lse();
        check(a, "d256 q, k x30 (sharp heads: 16-bit QK)", 0, 0.995);
    }
    {
        Attention a = wide(Shape{1, 1, 1, 1, 1, 256});
        a.with_lse();
        check(a, "d256 one query, one key");
    }
    {
        Attention a = wide(Shape{1, 8, 2, 300, 1100, 256, SAGEATTN_DTYPE_BF16, Layout::Strided});
        a.with_lse();
        check(a, "d256 GQA 8/2, 1100 keys (the stages wrap), strided");
    }
    {
        Attention a = wide(Shape{2, 3, 3, 129, 383, 192, SAGEATTN_DTYPE_BF16, Layout::HND});
        a.problem.causal = 1;
        a.with_lse();
        check(a, "d192 (the cut to 192 on sm_90) causal, lengths off every block");
    }
    // Up to 192 channels the sm_90a kernel runs the d256 layout's channel cut (kernels.py's
    // WGMMA_CHANNEL_CUTS): Q·Kᵀ over 6 K steps of 8, P·V in one pass, its own stage count.
    {
        Attention a = wide(Shape{1, 8, 2, 300, 1100, 160, SAGEATTN_DTYPE_FP16, Layout::Strided});
        const size_t bytes = a.with_key_bias(rng(), 7, 900);
        a.with_lse();
        check(a, "d160 (the cut to 192) GQA 8/2, 1100 keys, additive mask, strided", bytes);
    }
    varlen_causal(192, "d192 (the cut to 192) varlen, 4 sequences, causal");
}

// head_dim 129..256 in the configuration of the 99 KB parts (sm_86, sm_89, sm_12x): one K and
// one Vᵀ buffer instead of two stages (mma_config.hpp), on any GPU, the shared memory per CTA
// capped at 99 KB. Held to the CPU emulation with the bounds of every GPU test; and where the
// device runs the double-buffered configuration too (sm_80, sm_90), to its bits, since only
// the schedule of the copies differs. On sm_80 the FP8 cases are skipped (no FP8 MMA). On
// sm_90 `check`'s run with the small-problem path off takes the FP8 "fp32+fp32" cases with
// INT8 Q·Kᵀ to the sm_90a kernel (which the cap does not concern); its run with the path on,
// and the bit comparison, run the mma.sync configurations.
TEST(Gpu, HeadDim256In99KB) {
    REQUIRE_GPU();
    const int cc = device_cc();
    int optin = 0;
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    struct C {
        const char* what;
        Shape shape;
        Inputs in;
        bool causal;
        int32_t pv, accum, qk_precision;
        double ref_cos;
    };
    const C cases[] = {
        {"causal fp16", {1, 2, 1, 70, 140, 256, SAGEATTN_DTYPE_BF16, Layout::HND}, {1.0f, 3.0f}, true, SAGEATTN_PV_FP16, 0, 0, 0.999},
        {"fp16+fp32 accum, GQA", {2, 4, 2, 200, 333, 256, SAGEATTN_DTYPE_FP16, Layout::NHD}, {1.0f, 3.0f}, false,
         SAGEATTN_PV_FP16, SAGEATTN_ACCUM_FP16_FP32, 0, 0.999},
        {"d200 strided, fp8", {1, 2, 2, 129, 257, 200, SAGEATTN_DTYPE_BF16, Layout::Strided}, {1.0f, 3.0f}, true,
         SAGEATTN_PV_FP8, 0, 0, 0.999},
        {"fp8 fp32+fp16 accum", {1, 2, 2, 190, 450, 256, SAGEATTN_DTYPE_FP16, Layout::HND}, {1.0f, 3.0f}, false,
         SAGEATTN_PV_FP8, SAGEATTN_ACCUM_FP32_FP16, 0, 0.999},
        {"one key, fp8", {1, 2, 2, 33, 1, 256, SAGEATTN_DTYPE_BF16, Layout::NHD}, {1.0f, 3.0f}, false, SAGEATTN_PV_FP8, 0, 0, 0.999},
        {"sharp heads (16-bit QK), fp16", {1, 2, 2, 256, 256, 256, SAGEATTN_DTYPE_BF16, Layout::HND}, {30.0f, 4.0f}, false,
         SAGEATTN_PV_FP16, 0, 0, 0.995},
        {"16-bit QK everywhere, fp8, causal", {1, 2, 1, 150, 300, 256, SAGEATTN_DTYPE_FP16, Layout::NHD}, {1.0f, 3.0f}, true,
         SAGEATTN_PV_FP8, 0, SAGEATTN_QK_INPUT, 0.999},
    };
    for (const C& c : cases) {
        if (c.pv == SAGEATTN_PV_FP8 && cc < 89) continue;
        Attention a(c.shape, c.in, rng());
        a.problem.causal = c.causal;
        a.problem.pv_precision = c.pv;
        a.problem.pv_accum = c.accum;
        a.problem.qk_precision = c.qk_precision;
        a.with_lse();
        const std::string label = std::string("d") + std::to_string(c.shape.head_dim) + " in 99 KB: " + c.what;
        std::vector<uint16_t> split_out;
        std::vector<float> split_lse;
        {
            CtaSmemCap cap(cuda::kCtaSmem99K);
            EXPECT_EQ(gpu_pipeline(a), cuda::MmaPipeline::kSplitKv) << label;
            check(a, label, 0, c.ref_cos);
            ASSERT_EQ(run_gpu(a), SAGEATTN_SUCCESS) << label << ": " << sageattn_last_error();
            split_out = a.out.storage;
            split_lse = a.lse;
        }
        const bool fp8 = c.pv == SAGEATTN_PV_FP8;
        if (optin < cuda::mma_shared_bytes(256, fp8, cuda::MmaPipeline::kDoubleBuffered)) continue;
        EXPECT_EQ(gpu_pipeline(a), cuda::MmaPipeline::kDoubleBuffered) << label;
        ASSERT_EQ(run_gpu(a), SAGEATTN_SUCCESS) << label << ": " << sageattn_last_error();
        EXPECT_TRUE(split_out == a.out.storage) << label << ": the split and double-buffered outputs differ";
        EXPECT_TRUE(split_lse == a.lse) << label << ": the split and double-buffered LSE differ";
        std::printf("[ gpu      ] %-66s split == double-buffered, bit for bit\n", label.c_str());
    }
}

// §1 on CUDA: whatever cu_seqlens hold (past the tensor, negative, decreasing, longer than
// max_len), every kernel's rows of a sequence (clamp_sequence, read by sequence() in
// common.cuh) stay inside the tensor and the mask's max_len extents, and its padded rows
// inside the workspace; consistent offsets pass unchanged. No GPU needed.
TEST(CudaBackend, VarlenClampStaysInBounds) {
    std::mt19937_64 r(seed() + 901);
    std::uniform_int_distribution<int64_t> small(0, 700), wild(-3000, 3000);
    std::bernoulli_distribution coin(0.5);
    const int64_t huge = INT32_MAX, tiny = INT32_MIN;
    int hostile = 0;
    for (int trial = 0; trial < 20000; ++trial) {
        const int64_t batch = 1 + static_cast<int64_t>(r() % 6), total = small(r), max_len = small(r) - 5;
        std::vector<int64_t> cu(static_cast<size_t>(batch + 1), 0);
        const bool valid = coin(r);
        for (int64_t b = 1; b <= batch; ++b) {
            if (valid) cu[b] = std::min(total, cu[b - 1] + small(r) / 4);
            else cu[b] = r() % 10 == 0 ? (coin(r) ? huge : tiny) : wild(r);
        }
        if (!valid) cu[0] = r() % 4 == 0 ? wild(r) : 0;
        for (int64_t b = 0; b < batch; ++b) {
            const cuda::SeqRows s = cuda::clamp_sequence(cu[b], cu[b + 1], total, max_len);
            ASSERT_GE(s.start, 0);
            ASSERT_GE(s.len, 0);
            ASSERT_LE(s.start + s.len, total) << "cu " << cu[b] << ", " << cu[b + 1] << " total " << total;
            ASSERT_LE(s.len, std::max<int64_t>(max_len, 0));
            for (int64_t pad : {int64_t{cuda::kQuantRows}, int64_t{cuda::kWideBlockKv}}) {
                const int64_t first = cuda::padded_start(s.start, b, pad);
                const int64_t end = first + (s.len + pad - 1) / pad * pad;  // whole blocks are read and written
                ASSERT_GE(first, 0);
                ASSERT_LE(end, cuda::padded_rows(total, batch, pad));
            }
            const bool consistent = cu[b] >= 0 && cu[b + 1] >= cu[b] && cu[b + 1] <= total && cu[b + 1] - cu[b] <= max_len;
            if (consistent) {
                EXPECT_EQ(s.start, cu[b]);
                EXPECT_EQ(s.len, cu[b + 1] - cu[b]);
            } else {
                ++hostile;
            }
        }
    }
    EXPECT_GT(hostile, 10000);
}

// The mma.sync kernel's shared memory per CTA (mma_config.hpp), which prepare() holds against
// the device's limit: each architecture's configuration of each instance fits its per-CTA
// limit. Two stages of K and Vᵀ everywhere but head_dim 256 on sm_86, sm_89 and sm_12x (99 KB),
// which gets one K and one Vᵀ buffer. Every padded head dim of the kernel registry
// (kernels.py). No GPU needed.
TEST(CudaBackend, SharedMemoryPerCta) {
    using cuda::MmaPipeline;
    struct Arch {
        int cc;
        int limit;  // cudaDevAttrMaxSharedMemoryPerBlockOptin, bytes (the programming guide's table)
    };
    const Arch archs[] = {{80, 166912}, {86, 101376}, {87, 166912}, {89, 101376}, {90, 232448},
                          {100, 232448}, {103, 232448}, {110, 232448}, {120, 101376}, {121, 101376}};
    for (const Arch& a : archs) EXPECT_EQ(cuda::cta_smem_optin(a.cc), a.limit) << "sm_" << a.cc;
    for (int dp : cuda::kMmaHeadDims)
        for (bool fp8 : {false, true}) {
            const std::string what = "d" + std::to_string(dp) + (fp8 ? " fp8" : " fp16");
            // K (16-bit rows) and Vᵀ of a 64-key block, rows padded by 16 bytes; 16 static bytes a channel.
            const size_t stage = 64 * (2 * dp + 16) + dp * (64 * (fp8 ? 1 : 2) + 16);
            EXPECT_EQ(cuda::mma_shared_bytes(dp, fp8, MmaPipeline::kDoubleBuffered), 2 * stage + 16 * dp) << what;
            EXPECT_EQ(cuda::mma_shared_bytes(dp, fp8, MmaPipeline::kSplitKv), stage + 16 * dp) << what;
            EXPECT_EQ(cuda::mma_pipeline_built(dp, MmaPipeline::kSplitKv), dp == 256) << what;
            // A driver that does not say: the double-buffered kernel, as always.
            EXPECT_EQ(cuda::mma_pipeline(dp, fp8, 0), MmaPipeline::kDoubleBuffered) << what;
            for (const Arch& a : archs) {
                const bool small = a.limit == 99 * 1024;
                const MmaPipeline want = dp == 256 && small ? MmaPipeline::kSplitKv : MmaPipeline::kDoubleBuffered;
                EXPECT_EQ(cuda::mma_pipeline(dp, fp8, a.limit), want) << what << " sm_" << a.cc;
                const size_t bytes = cuda::attention_shared_bytes(dp, fp8, a.limit);  // prepare()'s number
                EXPECT_EQ(bytes, static_cast<size_t>(cuda::mma_shared_bytes(dp, fp8, want))) << what << " sm_" << a.cc;
                EXPECT_LE(bytes, static_cast<size_t>(a.limit)) << what << " sm_" << a.cc;
            }
        }
    // docs/PERF.md's numbers: head_dim 256, FP16 / FP8 P·V, two stages and split buffers.
    EXPECT_EQ(cuda::attention_shared_bytes(256, false, 166912), 145408u);
    EXPECT_EQ(cuda::attention_shared_bytes(256, true, 232448), 112640u);
    EXPECT_EQ(cuda::attention_shared_bytes(256, false, 101376), 74752u);
    EXPECT_EQ(cuda::attention_shared_bytes(256, true, 101376), 58368u);
}

// The test switch Gpu.HeadDim256In99KB uses: a 99 KB cap gives head_dim 256 the split buffers
// whatever the device (none here: its limit is unknown), and lifting it restores the device's
// choice; other head sizes keep two stages. No GPU needed.
TEST(CudaBackend, SharedMemoryCapPicksSplitKv) {
    Problem pr{};
    pr.p.device_index = 0;
    for (int32_t pv : {SAGEATTN_PV_FP16, SAGEATTN_PV_FP8}) {
        pr.p.pv_precision = pv;
        pr.p.head_dim = 256;
        cuda::set_cta_shared_memory_cap(99 * 1024);
        EXPECT_EQ(cuda::attention_pipeline(pr), cuda::MmaPipeline::kSplitKv);
        pr.p.head_dim = 130;  // padded to 256
        EXPECT_EQ(cuda::attention_pipeline(pr), cuda::MmaPipeline::kSplitKv);
        pr.p.head_dim = 128;
        EXPECT_EQ(cuda::attention_pipeline(pr), cuda::MmaPipeline::kDoubleBuffered);
        cuda::set_cta_shared_memory_cap(0);
        int count = 0, optin = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
            cudaGetLastError();
        } else {
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
        }
        pr.p.head_dim = 256;
        EXPECT_EQ(cuda::attention_pipeline(pr), cuda::mma_pipeline(256, pv == SAGEATTN_PV_FP8, optin));
    }
}

}  // namespace
}  // namespace sageattn::test
