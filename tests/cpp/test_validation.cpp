// Every invalid input gets its own status and a message naming the argument;
// nothing aborts and nothing is touched. Also run under ASan and UBSan.
#include <cstddef>
#include <cstring>
#include <functional>

#include "support.hpp"

namespace sageattn::test {
namespace {

struct Bad {
    const char* what;
    std::function<void(sageattn_problem&)> edit;
    sageattn_status expected;
    const char* message_has;  // the argument the message must name
};

// A problem's data pointers as a plan takes them, and back.
sageattn_data data_of(const sageattn_problem& p) {
    return sageattn_data{p.q.data, p.k.data, p.v.data, p.out.data, p.mask.data, p.lse, p.cu_seqlens_q, p.cu_seqlens_kv};
}
void set_data(sageattn_problem& p, const sageattn_data& d) {
    p.q.data = const_cast<void*>(d.q), p.k.data = const_cast<void*>(d.k), p.v.data = const_cast<void*>(d.v);
    p.out.data = d.out, p.mask.data = d.mask, p.lse = d.lse;
    p.cu_seqlens_q = d.cu_seqlens_q, p.cu_seqlens_kv = d.cu_seqlens_kv;
}

class Validation : public ::testing::Test {
protected:
    int data_cases = 0;  // bad inputs that were data alone (expect() runs them through a plan)
    std::mt19937_64 r{seed() + 7};
    Attention a{Shape{2, 4, 2, 33, 45, 64}, Inputs{}, r};
    std::vector<int32_t> cu{0, 10, 33};
    std::vector<int32_t> cu_kv{0, 20, 45};
    std::vector<uint8_t> mask = std::vector<uint8_t>(33 * 45, 1);

    void expect(const Bad& bad) {
        sageattn_problem p = a.problem;
        bad.edit(p);
        const sageattn_status got = sageattn_check(&p);
        EXPECT_EQ(got, bad.expected) << bad.what << ": got " << sageattn_status_name(got) << " (" << sageattn_last_error() << ")";
        const std::string msg = sageattn_last_error();
        EXPECT_NE(msg.find(bad.message_has), std::string::npos) << bad.what << ": message \"" << msg << "\"";
        // forward and workspace_size report the same, and write nothing.
        a.poison();
        size_t bytes = 12345;
        EXPECT_EQ(sageattn_workspace_size(&p, &bytes), bad.expected) << bad.what;
        EXPECT_EQ(bytes, 0u);
        EXPECT_EQ(sageattn_forward(&p, nullptr, 0, nullptr), bad.expected) << bad.what;
        // A plan of it is refused the same way; where only data pointers differ from the valid
        // problem (NULL in the same places), a plan of that one refuses them as data, with the
        // same status and argument.
        sageattn_plan* plan = reinterpret_cast<sageattn_plan*>(&bytes);
        EXPECT_EQ(sageattn_plan_create(&p, &plan), bad.expected) << bad.what;
        EXPECT_EQ(plan, nullptr) << bad.what;
        const sageattn_data data = data_of(p);
        sageattn_problem same = p;
        set_data(same, data_of(a.problem));
        const sageattn_data valid = data_of(a.problem);
        const bool same_presence = (data.mask == nullptr) == (valid.mask == nullptr) && (data.lse == nullptr) == (valid.lse == nullptr) &&
                                   (data.cu_seqlens_q == nullptr) == (valid.cu_seqlens_q == nullptr) &&
                                   (data.cu_seqlens_kv == nullptr) == (valid.cu_seqlens_kv == nullptr);
        if (same_presence && std::memcmp(&same, &a.problem, sizeof same) == 0) {
            ASSERT_EQ(sageattn_plan_create(&a.problem, &plan), SAGEATTN_SUCCESS) << sageattn_last_error();
            EXPECT_EQ(sageattn_plan_forward(plan, &data, nullptr, 0, nullptr), bad.expected) << bad.what;
            EXPECT_NE(std::string(sageattn_last_error()).find(bad.message_has), std::string::npos) << bad.what;
            EXPECT_EQ(sageattn_plan_workspace_size(plan, &data, &bytes), bad.expected) << bad.what;
            sageattn_plan_destroy(plan);
            ++data_cases;
        }
        for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(a.out.storage[a.out.index(0, h, 0, 0)], 0x7fc1) << bad.what;
        std::printf("[ rejected ] %-44s %-36s %s\n", bad.what, sageattn_status_name(got), msg.c_str());
    }
};

TEST_F(Validation, ValidProblemPasses) {
    EXPECT_EQ(sageattn_check(&a.problem), SAGEATTN_SUCCESS) << sageattn_last_error();
    EXPECT_STREQ(sageattn_last_error(), "");
}

TEST_F(Validation, NullArguments) {
    EXPECT_EQ(sageattn_check(nullptr), SAGEATTN_ERROR_NULL_POINTER);
    EXPECT_NE(std::string(sageattn_last_error()).find("problem"), std::string::npos);
    EXPECT_EQ(sageattn_workspace_size(&a.problem, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    EXPECT_EQ(sageattn_get_build_info(nullptr), SAGEATTN_ERROR_NULL_POINTER);
    size_t bytes = 0;
    ASSERT_EQ(sageattn_workspace_size(&a.problem, &bytes), SAGEATTN_SUCCESS);
    ASSERT_GT(bytes, 0u);
    EXPECT_EQ(sageattn_forward(&a.problem, nullptr, bytes, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    EXPECT_EQ(sageattn_forward(&a.problem, nullptr, 0, nullptr), SAGEATTN_ERROR_WORKSPACE_TOO_SMALL);
    alignas(64) static unsigned char ws[1 << 20];
    ASSERT_LE(bytes + 1, sizeof ws);
    EXPECT_EQ(sageattn_forward(&a.problem, ws + 1, bytes, nullptr), SAGEATTN_ERROR_MISALIGNED);
}

// size_t arguments (%zu) print as numbers with every C library the library is
// built against: glibc, MSVC's UCRT, and MinGW's (whose msvcrt printf lacks %zu).
TEST_F(Validation, MessagesPrintSizes) {
    size_t bytes = 0;
    ASSERT_EQ(sageattn_workspace_size(&a.problem, &bytes), SAGEATTN_SUCCESS);
    ASSERT_EQ(sageattn_forward(&a.problem, nullptr, 3, nullptr), SAGEATTN_ERROR_WORKSPACE_TOO_SMALL);
    EXPECT_EQ(std::string(sageattn_last_error()), "workspace_bytes = 3; this problem needs " + std::to_string(bytes));
    sageattn_build_info old{};
    old.struct_size = 8;
    ASSERT_EQ(sageattn_get_build_info(&old), SAGEATTN_ERROR_ABI_MISMATCH);
    EXPECT_EQ(std::string(sageattn_last_error()),
              "info->struct_size = 8; expected >= " + std::to_string(sizeof(sageattn_build_info)) +
                  " (call sageattn_build_info_init)");
}

TEST_F(Validation, EachBadInputHasItsOwnStatus) {
    const Bad cases[] = {
        {"q.data NULL", [](auto& p) { p.q.data = nullptr; }, SAGEATTN_ERROR_NULL_POINTER, "q.data"},
        {"k.data NULL", [](auto& p) { p.k.data = nullptr; }, SAGEATTN_ERROR_NULL_POINTER, "k.data"},
        {"v.data NULL", [](auto& p) { p.v.data = nullptr; }, SAGEATTN_ERROR_NULL_POINTER, "v.data"},
        {"out.data NULL", [](auto& p) { p.out.data = nullptr; }, SAGEATTN_ERROR_NULL_POINTER, "out.data"},
        {"struct_size 0", [](auto& p) { p.struct_size = 0; }, SAGEATTN_ERROR_ABI_MISMATCH, "struct_size"},
        {"abi_version 2", [](auto& p) { p.abi_version = 2; }, SAGEATTN_ERROR_ABI_MISMATCH, "abi_version"},
        {"dtype unset", [](auto& p) { p.dtype = SAGEATTN_DTYPE_UNSET; }, SAGEATTN_ERROR_INVALID_DTYPE, "dtype"},
        {"dtype fp32", [](auto& p) { p.dtype = SAGEATTN_DTYPE_FP32; }, SAGEATTN_ERROR_INVALID_DTYPE, "dtype"},
        {"dtype 99", [](auto& p) { p.dtype = 99; }, SAGEATTN_ERROR_INVALID_DTYPE, "dtype = 99"},
        {"batch -1", [](auto& p) { p.batch = -1; }, SAGEATTN_ERROR_INVALID_SHAPE, "batch = -1"},
        {"len_q -3", [](auto& p) { p.len_q = -3; }, SAGEATTN_ERROR_INVALID_SHAPE, "len_q = -3"},
        {"head_dim 0", [](auto& p) { p.head_dim = 0; }, SAGEATTN_ERROR_INVALID_HEAD_DIM, "head_dim = 0"},
        {"head_dim 257", [](auto& p) { p.head_dim = 257; }, SAGEATTN_ERROR_INVALID_HEAD_DIM, "head_dim = 257"},
        {"heads_q 0", [](auto& p) { p.heads_q = 0; }, SAGEATTN_ERROR_INVALID_HEADS, "heads_q = 0"},
        {"heads not divisible", [](auto& p) { p.heads_kv = 3; }, SAGEATTN_ERROR_INVALID_HEADS, "heads_kv = 3"},
        {"negative q stride", [](auto& p) { p.q.token_stride = -64; }, SAGEATTN_ERROR_INVALID_STRIDE, "q.token_stride"},
        {"negative v batch stride", [](auto& p) { p.v.batch_stride = -1; }, SAGEATTN_ERROR_INVALID_STRIDE, "v.batch_stride"},
        {"overlapping out rows", [](auto& p) { p.out.token_stride = 0; }, SAGEATTN_ERROR_INVALID_STRIDE, "out.token_stride"},
        {"out rows aliasing heads", [](auto& p) { p.out.head_stride = 64; p.out.token_stride = 64; }, SAGEATTN_ERROR_INVALID_STRIDE, "out."},
        {"lse rows aliasing heads", [this](auto& p) { a.with_lse(); p.lse = a.lse.data(); p.lse_batch_stride = 200; p.lse_head_stride = 1; p.lse_token_stride = 1; }, SAGEATTN_ERROR_INVALID_STRIDE, "lse_"},
        {"overflowing k stride", [](auto& p) { p.k.batch_stride = INT64_MAX / 2; }, SAGEATTN_ERROR_OVERFLOW, "k:"},
        {"overflowing stride product", [](auto& p) { p.q.head_stride = INT64_MAX / 3; }, SAGEATTN_ERROR_OVERFLOW, "q:"},
        {"bytes past the address space", [](auto& p) { p.v.token_stride = INT64_MAX / 64; }, SAGEATTN_ERROR_OVERFLOW, "v:"},
        // Broadcast inputs (stride 0) can describe more keys than memory holds; the workspace
        // and loop counts derived from them must not overflow (found by the fuzzer).
        {"keys past 64-bit sizes", [](auto& p) { p.batch = int64_t{1} << 40; p.len_q = 0; p.len_kv = INT32_MAX; p.k = p.v = sageattn_tensor{p.k.data, 0, 0, 0}; }, SAGEATTN_ERROR_OVERFLOW, "len_kv = 2147483647"},
        {"heads past 64-bit sizes", [](auto& p) { p.batch = 1; p.heads_q = p.heads_kv = int64_t{1} << 40; p.len_q = 1; p.len_kv = 1 << 20; p.q = p.k = p.v = sageattn_tensor{p.k.data, 0, 0, 0}; p.out = sageattn_tensor{p.out.data, 0, 64, 64}; }, SAGEATTN_ERROR_OVERFLOW, "heads_kv = 1099511627776"},
        {"misaligned q", [](auto& p) { p.q.data = static_cast<char*>(p.q.data) + 1; }, SAGEATTN_ERROR_MISALIGNED, "q.data"},
        {"scale NaN", [](auto& p) { p.scale = NAN; }, SAGEATTN_ERROR_INVALID_SCALE, "scale"},
        {"scale inf", [](auto& p) { p.scale = INFINITY; }, SAGEATTN_ERROR_INVALID_SCALE, "scale"},
        {"granularity 3", [](auto& p) { p.qk_granularity = 3; }, SAGEATTN_ERROR_INVALID_OPTION, "qk_granularity"},
        {"qk_precision 7", [](auto& p) { p.qk_precision = 7; }, SAGEATTN_ERROR_INVALID_OPTION, "qk_precision"},
        {"negative threshold", [](auto& p) { p.qk_sharp_threshold = -1; }, SAGEATTN_ERROR_INVALID_OPTION, "qk_sharp_threshold"},
        {"pv_precision 3", [](auto& p) { p.pv_precision = 3; }, SAGEATTN_ERROR_INVALID_OPTION, "pv_precision"},
        {"pv_accum 9", [](auto& p) { p.pv_accum = 9; }, SAGEATTN_ERROR_INVALID_OPTION, "pv_accum"},
        {"fp16+fp32 with fp8", [](auto& p) { p.pv_precision = 1; p.pv_accum = 4; }, SAGEATTN_ERROR_INVALID_OPTION, "pv_accum"},
        {"fp32+fp16 with fp16", [](auto& p) { p.pv_precision = 2; p.pv_accum = 3; }, SAGEATTN_ERROR_INVALID_OPTION, "pv_accum"},
        {"smooth_k 2", [](auto& p) { p.smooth_k = 2; }, SAGEATTN_ERROR_INVALID_OPTION, "smooth_k"},
        {"num_threads -1", [](auto& p) { p.num_threads = -1; }, SAGEATTN_ERROR_INVALID_OPTION, "num_threads"},
        {"check_seqlens 2", [](auto& p) { p.check_seqlens = 2; }, SAGEATTN_ERROR_INVALID_OPTION, "check_seqlens = 2"},
        {"algorithm 5", [](auto& p) { p.algorithm = 5; }, SAGEATTN_ERROR_INVALID_OPTION, "algorithm"},
        {"device_type 4", [](auto& p) { p.device_type = 4; }, SAGEATTN_ERROR_INVALID_OPTION, "device_type"},
        {"mask type 3", [](auto& p) { p.mask.type = 3; }, SAGEATTN_ERROR_INVALID_MASK, "mask.type"},
        {"additive mask dtype", [this](auto& p) { p.mask = sageattn_mask{2, 0, mask.data(), 0, 0, 45, 1}; }, SAGEATTN_ERROR_INVALID_MASK, "mask.dtype"},
        {"mask data NULL", [](auto& p) { p.mask = sageattn_mask{1, 0, nullptr, 0, 0, 45, 1}; }, SAGEATTN_ERROR_NULL_POINTER, "mask.data"},
        {"negative mask stride", [this](auto& p) { p.mask = sageattn_mask{1, 0, mask.data(), 0, 0, -45, 1}; }, SAGEATTN_ERROR_INVALID_STRIDE, "mask.q_stride"},
        {"misaligned fp32 mask", [this](auto& p) { p.mask = sageattn_mask{2, 3, mask.data() + 1, 0, 0, 45, 1}; }, SAGEATTN_ERROR_MISALIGNED, "mask.data"},
        {"lse overlapping", [this](auto& p) { a.with_lse(); p.lse = a.lse.data(); p.lse_token_stride = 0; p.lse_head_stride = 33; p.lse_batch_stride = 132; }, SAGEATTN_ERROR_INVALID_STRIDE, "lse_token_stride"},
        {"only cu_seqlens_q", [this](auto& p) { p.cu_seqlens_q = cu.data(); }, SAGEATTN_ERROR_INVALID_SEQLENS, "cu_seqlens"},
        {"cu_seqlens not from 0", [this](auto& p) { cu[0] = 1; p.cu_seqlens_q = cu.data(); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = 64; p.max_len_kv = 64; }, SAGEATTN_ERROR_INVALID_SEQLENS, "cu_seqlens_q[0]"},
        {"cu_seqlens decreasing", [this](auto& p) { cu[1] = 40; p.cu_seqlens_q = cu.data(); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = 64; p.max_len_kv = 64; }, SAGEATTN_ERROR_INVALID_SEQLENS, "decreases"},
        {"cu_seqlens past the tensor", [this](auto& p) { cu_kv[2] = 46; p.cu_seqlens_q = cu.data(); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = 64; p.max_len_kv = 64; }, SAGEATTN_ERROR_INVALID_SEQLENS, "cu_seqlens_kv[2]"},
        {"sequence longer than max_len", [this](auto& p) { p.cu_seqlens_q = cu.data(); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = 10; p.max_len_kv = 64; }, SAGEATTN_ERROR_INVALID_SEQLENS, "max_len"},
        {"negative max_len", [this](auto& p) { p.cu_seqlens_q = cu.data(); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = -1; }, SAGEATTN_ERROR_INVALID_SEQLENS, "max_len_q"},
        {"misaligned cu_seqlens", [this](auto& p) { p.cu_seqlens_q = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(cu.data()) + 2); p.cu_seqlens_kv = cu_kv.data(); p.max_len_q = 64; p.max_len_kv = 64; }, SAGEATTN_ERROR_MISALIGNED, "cu_seqlens_q"},
    };
    for (const Bad& bad : cases) {
        cu = {0, 10, 33};
        cu_kv = {0, 20, 45};
        expect(bad);
    }
    EXPECT_GE(data_cases, 5);  // the NULL and misaligned tensors
}

// A plan runs its problem on new data as sageattn_forward runs the problem with those
// pointers, bit for bit: dense and varlen, mask and LSE, quantized and exact. It checks the
// data it is given (presence, alignment, on the CPU the prefix sums) and nothing else.
TEST_F(Validation, PlanRunsAsForward) {
    auto aligned = [](std::vector<unsigned char>& ws) { return ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64; };
    struct Case {
        const char* what;
        std::function<void(Attention&)> edit;
    };
    const Case cases[] = {
        {"dense", [](Attention&) {}},
        {"causal, bool mask, LSE", [this](Attention& x) { x.problem.causal = 1; x.problem.mask = sageattn_mask{1, 0, mask.data(), 0, 0, 45, 1}; x.with_lse(); }},
        {"exact", [](Attention& x) { x.problem.algorithm = SAGEATTN_ALGORITHM_EXACT; }},
        {"varlen", [this](Attention& x) { x.problem.batch = 2; x.problem.cu_seqlens_q = cu.data(); x.problem.cu_seqlens_kv = cu_kv.data(); x.problem.max_len_q = x.problem.max_len_kv = 64; }},
    };
    for (const Case& c : cases) {
        Shape s = a.shape;
        s.batch = 1;
        s.len_q = 33 * 2, s.len_kv = 45 * 2;  // room for the varlen case's packed tokens
        std::mt19937_64 gen{seed() + 31};
        Attention first{s, Inputs{}, gen}, second{s, Inputs{1.5f, 2.0f}, gen};
        for (Attention* x : {&first, &second}) {
            x->problem.len_q = 33, x->problem.len_kv = 45;
            c.edit(*x);
        }
        sageattn_plan* plan = nullptr;
        ASSERT_EQ(sageattn_plan_create(&first.problem, &plan), SAGEATTN_SUCCESS) << c.what << ": " << sageattn_last_error();
        for (Attention* x : {&first, &second}) {
            x->run();
            const std::vector<uint16_t> expected = x->out.storage;
            const std::vector<float> expected_lse = x->lse;
            size_t bytes = 0, plan_bytes = 0;
            ASSERT_EQ(sageattn_workspace_size(&x->problem, &bytes), SAGEATTN_SUCCESS);
            const sageattn_data data = data_of(x->problem);
            ASSERT_EQ(sageattn_plan_workspace_size(plan, &data, &plan_bytes), SAGEATTN_SUCCESS) << sageattn_last_error();
            EXPECT_EQ(plan_bytes, bytes) << c.what;
            std::vector<unsigned char> ws(bytes + 64);
            x->poison();
            if (bytes > 0) EXPECT_EQ(sageattn_plan_forward(plan, &data, aligned(ws), bytes - 1, nullptr), SAGEATTN_ERROR_WORKSPACE_TOO_SMALL);
            ASSERT_EQ(sageattn_plan_forward(plan, &data, aligned(ws), bytes, nullptr), SAGEATTN_SUCCESS) << c.what << ": " << sageattn_last_error();
            EXPECT_TRUE(x->out.storage == expected) << c.what << ": the plan's output differs from sageattn_forward's";
            EXPECT_TRUE(expected_lse.empty() ||
                        std::memcmp(x->lse.data(), expected_lse.data(), expected_lse.size() * sizeof(float)) == 0)
                << c.what;
        }
        // Data present where the plan's problem had none, or missing where it had some.
        sageattn_data data = data_of(second.problem);
        float somewhere = 0.f;
        data.lse = data.lse ? nullptr : &somewhere;
        EXPECT_EQ(sageattn_plan_forward(plan, &data, nullptr, 0, nullptr), SAGEATTN_ERROR_NULL_POINTER) << c.what;
        EXPECT_NE(std::string(sageattn_last_error()).find("data->lse"), std::string::npos) << sageattn_last_error();
        if (first.problem.cu_seqlens_q) {
            // The CPU checks each run's prefix sums, and sizes the workspace by them.
            std::vector<int32_t> shorter{0, 10, 30}, decreasing{0, 20, 10};
            data = data_of(second.problem);
            data.cu_seqlens_kv = shorter.data();
            size_t bytes = 0, fewer = 0;
            ASSERT_EQ(sageattn_plan_workspace_size(plan, &data, &fewer), SAGEATTN_SUCCESS) << sageattn_last_error();
            data.cu_seqlens_kv = cu_kv.data();
            ASSERT_EQ(sageattn_plan_workspace_size(plan, &data, &bytes), SAGEATTN_SUCCESS);
            EXPECT_LT(fewer, bytes);
            data.cu_seqlens_q = decreasing.data();
            EXPECT_EQ(sageattn_plan_forward(plan, &data, nullptr, 0, nullptr), SAGEATTN_ERROR_INVALID_SEQLENS);
        }
        sageattn_plan_destroy(plan);
    }
    EXPECT_EQ(sageattn_plan_forward(nullptr, nullptr, nullptr, 0, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    sageattn_plan* plan = nullptr;
    ASSERT_EQ(sageattn_plan_create(&a.problem, &plan), SAGEATTN_SUCCESS);
    EXPECT_EQ(sageattn_plan_forward(plan, nullptr, nullptr, 0, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    EXPECT_EQ(sageattn_plan_create(&a.problem, nullptr), SAGEATTN_ERROR_NULL_POINTER);
    sageattn_plan_destroy(plan);
    sageattn_plan_destroy(nullptr);
}

TEST_F(Validation, CudaProblemsWhereNoneCanRun) {
    // With no CUDA backend, or no usable device, a CUDA problem is refused with a
    // sentence; where one can run, the same problem passes the checks.
    sageattn_problem p = a.problem;
    p.device_type = SAGEATTN_DEVICE_CUDA;
    const sageattn_status s = sageattn_check(&p);
    if (s == SAGEATTN_SUCCESS) {
        std::printf("[ rejected ] (a CUDA device is usable here: the CUDA problem passes its checks)\n");
        return;
    }
    EXPECT_EQ(s, SAGEATTN_ERROR_UNSUPPORTED) << sageattn_last_error();
    EXPECT_NE(std::string(sageattn_last_error()).find("CUDA"), std::string::npos) << sageattn_last_error();
    std::printf("[ rejected ] %-44s %-36s %s\n", "CUDA problem on this machine", sageattn_status_name(s), sageattn_last_error());
}

TEST_F(Validation, EveryStatusHasANameAndSentence) {
    for (int s = SAGEATTN_SUCCESS; s <= SAGEATTN_ERROR_INTERNAL; ++s) {
        const std::string name = sageattn_status_name(static_cast<sageattn_status>(s));
        EXPECT_EQ(name.rfind("SAGEATTN_", 0), 0u) << s;
        EXPECT_EQ(name.find("UNKNOWN"), std::string::npos) << s;
        EXPECT_GT(std::strlen(sageattn_status_string(static_cast<sageattn_status>(s))), 5u) << s;
    }
    EXPECT_STREQ(sageattn_status_name(static_cast<sageattn_status>(1000)), "SAGEATTN_ERROR_UNKNOWN");
}

TEST_F(Validation, EmptyProblemsAreFine) {
    for (auto edit : {+[](sageattn_problem& p) { p.batch = 0; }, +[](sageattn_problem& p) { p.len_q = 0; },
                      +[](sageattn_problem& p) { p.len_kv = 0; }}) {
        sageattn_problem p = a.problem;
        edit(p);
        EXPECT_EQ(sageattn_check(&p), SAGEATTN_SUCCESS) << sageattn_last_error();
    }
    // len_kv = 0: every row sees no key, so zeros.
    a.problem.len_kv = 0;
    a.run();
    for (int64_t h = 0; h < 4; ++h) EXPECT_EQ(a.out.storage[a.out.index(1, h, 32, 63)], 0);
}

TEST_F(Validation, StructSizeCompatibility) {
    // A newer caller whose extra fields are all zero is accepted; one that uses them is not.
    struct Bigger {
        sageattn_problem p;
        uint64_t future[4];
    } big{};
    big.p = a.problem;
    big.p.struct_size = sizeof big;
    EXPECT_EQ(sageattn_check(&big.p), SAGEATTN_SUCCESS) << sageattn_last_error();
    big.future[2] = 1;
    EXPECT_EQ(sageattn_check(&big.p), SAGEATTN_ERROR_ABI_MISMATCH);

    // An older caller (ABI 1's first layout, 352 bytes, up to num_threads) gets the appended
    // fields' defaults: the library reads nothing past its struct_size.
    constexpr uint32_t kFirstLayout = 352;
    ASSERT_EQ(offsetof(sageattn_problem, check_seqlens), kFirstLayout);
    alignas(sageattn_problem) unsigned char old[sizeof(sageattn_problem)];
    std::memcpy(old, &a.problem, kFirstLayout);
    std::memset(old + kFirstLayout, 0xff, sizeof old - kFirstLayout);  // check_seqlens would read -1
    sageattn_problem* p = reinterpret_cast<sageattn_problem*>(old);
    p->struct_size = kFirstLayout;
    EXPECT_EQ(sageattn_check(p), SAGEATTN_SUCCESS) << sageattn_last_error();
    a.run();
    const std::vector<uint16_t> expected = a.out.storage;
    size_t bytes = 0;
    ASSERT_EQ(sageattn_workspace_size(p, &bytes), SAGEATTN_SUCCESS);
    std::vector<unsigned char> ws(bytes + 64);
    a.poison();
    ASSERT_EQ(sageattn_forward(p, ws.data() + (64 - reinterpret_cast<uintptr_t>(ws.data()) % 64) % 64, bytes, nullptr),
              SAGEATTN_SUCCESS);
    EXPECT_TRUE(expected == a.out.storage);
    p->struct_size = sizeof(sageattn_problem);  // now the field is the caller's, and invalid
    EXPECT_EQ(sageattn_check(p), SAGEATTN_ERROR_INVALID_OPTION);
    p->struct_size = kFirstLayout - 8;
    EXPECT_EQ(sageattn_check(p), SAGEATTN_ERROR_ABI_MISMATCH);
}

TEST_F(Validation, WorkspaceSizeIgnoresPointersAndStrides) {
    // sageattn.h promises this so that callers (the Python package) may keep the
    // size per shape and make one call, sageattn_forward, per attention.
    auto size_of = [](const sageattn_problem& p) {
        size_t bytes = 0;
        EXPECT_EQ(sageattn_workspace_size(&p, &bytes), SAGEATTN_SUCCESS) << sageattn_last_error();
        return bytes;
    };
    const size_t bytes = size_of(a.problem);
    ASSERT_GT(bytes, 0u);
    for (Layout layout : {Layout::NHD, Layout::Strided}) {
        Shape s = a.shape;
        s.layout = layout;
        Attention other{s, Inputs{}, r};  // other buffers, other strides
        EXPECT_EQ(size_of(other.problem), bytes);
    }
    sageattn_problem p = a.problem;
    a.with_lse();
    p.lse = a.problem.lse;
    p.lse_batch_stride = a.problem.lse_batch_stride;
    p.lse_head_stride = a.problem.lse_head_stride;
    p.lse_token_stride = a.problem.lse_token_stride;
    p.mask = sageattn_mask{SAGEATTN_MASK_BOOL, 0, mask.data(), 0, 0, 45, 1};
    p.causal = 1;
    p.scale = 0.5f;
    p.num_threads = 3;
    EXPECT_EQ(size_of(p), bytes);
    // The CPU's one exception: a varlen problem's size follows its packed key count.
    p = a.problem;
    p.batch = 2;
    p.cu_seqlens_q = cu.data();
    p.cu_seqlens_kv = cu_kv.data();
    p.max_len_q = p.max_len_kv = 64;
    const size_t all_keys = size_of(p);
    cu_kv[2] = 30;
    EXPECT_LT(size_of(p), all_keys);
}

TEST(BuildInfo, DescribesThisBuild) {
    sageattn_build_info info;
    sageattn_build_info_init(&info);
    ASSERT_EQ(sageattn_get_build_info(&info), SAGEATTN_SUCCESS);
    EXPECT_EQ(info.abi_version, static_cast<uint32_t>(SAGEATTN_ABI_VERSION));
    EXPECT_EQ(sageattn_abi_version(), SAGEATTN_ABI_VERSION);
    EXPECT_TRUE(info.backends & SAGEATTN_BACKEND_CPU);
    EXPECT_EQ(info.max_head_dim, 256);
    EXPECT_STREQ(info.version, sageattn_version());
    sageattn_build_info old{};
    old.struct_size = 8;
    EXPECT_EQ(sageattn_get_build_info(&old), SAGEATTN_ERROR_ABI_MISMATCH);
}

}  // namespace
}  // namespace sageattn::test
