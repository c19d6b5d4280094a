// sageattn.hpp — a thin C++ face over sageattn.h: the same problem struct with
// named setters, a status type, and (unless SAGEATTN_NO_EXCEPTIONS is defined)
// an exception carrying the library's message. No state beyond the C struct.
#ifndef SAGEATTN_SAGEATTN_HPP
#define SAGEATTN_SAGEATTN_HPP

#include <cstddef>
#include <cstdint>
#include <string>

#include "sageattn.h"

#ifndef SAGEATTN_NO_EXCEPTIONS
#include <stdexcept>
#endif

namespace sageattn {

enum class DType : int32_t { FP16 = SAGEATTN_DTYPE_FP16, BF16 = SAGEATTN_DTYPE_BF16, FP32 = SAGEATTN_DTYPE_FP32 };

// A (data, batch, head, token) strided view; strides in elements.
struct View {
    const void* data;
    int64_t batch_stride, head_stride, token_stride;
};

// Strides of the two common layouts of a contiguous [b, h, n, d] (HND) or
// [b, n, h, d] (NHD) tensor.
inline View hnd(const void* data, int64_t heads, int64_t len, int64_t head_dim) {
    return View{data, heads * len * head_dim, len * head_dim, head_dim};
}
inline View nhd(const void* data, int64_t heads, int64_t len, int64_t head_dim) {
    return View{data, len * heads * head_dim, head_dim, heads * head_dim};
}

struct Status {
    sageattn_status code = SAGEATTN_SUCCESS;
    std::string message;
    bool ok() const { return code == SAGEATTN_SUCCESS; }
    const char* name() const { return sageattn_status_name(code); }
};

inline Status status_of(sageattn_status code) {
    return Status{code, code == SAGEATTN_SUCCESS ? std::string() : std::string(sageattn_last_error())};
}

#ifndef SAGEATTN_NO_EXCEPTIONS
class Error : public std::runtime_error {
public:
    explicit Error(const Status& s) : std::runtime_error(std::string(s.name()) + ": " + s.message), code_(s.code) {}
    sageattn_status code() const { return code_; }

private:
    sageattn_status code_;
};

inline void throw_if_error(sageattn_status code) {
    if (code != SAGEATTN_SUCCESS) throw Error(status_of(code));
}
#endif

class Problem {
public:
    Problem() { sageattn_problem_init(&p_); }

    Problem& dtype(DType t) { p_.dtype = static_cast<int32_t>(t); return *this; }
    Problem& on_cpu(int num_threads = 0) {
        p_.device_type = SAGEATTN_DEVICE_CPU;
        p_.num_threads = num_threads;
        return *this;
    }
    Problem& on_cuda(int device_index) {
        p_.device_type = SAGEATTN_DEVICE_CUDA;
        p_.device_index = device_index;
        return *this;
    }
    Problem& shape(int64_t batch, int64_t heads_q, int64_t heads_kv, int64_t len_q, int64_t len_kv,
                   int64_t head_dim) {
        p_.batch = batch; p_.heads_q = heads_q; p_.heads_kv = heads_kv;
        p_.len_q = len_q; p_.len_kv = len_kv; p_.head_dim = head_dim;
        return *this;
    }
    Problem& q(const View& v) { p_.q = tensor(v); return *this; }
    Problem& k(const View& v) { p_.k = tensor(v); return *this; }
    Problem& v(const View& v) { p_.v = tensor(v); return *this; }
    Problem& out(void* data, int64_t batch_stride, int64_t head_stride, int64_t token_stride) {
        p_.out = sageattn_tensor{data, batch_stride, head_stride, token_stride};
        return *this;
    }
    Problem& out(const View& v) { p_.out = tensor(v); return *this; }
    Problem& varlen(const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_kv, int64_t max_len_q,
                    int64_t max_len_kv) {
        p_.cu_seqlens_q = cu_seqlens_q; p_.cu_seqlens_kv = cu_seqlens_kv;
        p_.max_len_q = max_len_q; p_.max_len_kv = max_len_kv;
        return *this;
    }
    // CUDA: cu_seqlens checked on the device before the run (synchronises; sageattn.h).
    Problem& check_seqlens(bool on = true) { p_.check_seqlens = on ? 1 : 0; return *this; }
    Problem& causal(bool on = true) { p_.causal = on ? 1 : 0; return *this; }
    Problem& scale(float s) { p_.scale = s; return *this; }
    Problem& bool_mask(const void* data, int64_t sb, int64_t sh, int64_t sq, int64_t skv) {
        p_.mask = sageattn_mask{SAGEATTN_MASK_BOOL, 0, data, sb, sh, sq, skv};
        return *this;
    }
    Problem& additive_mask(DType t, const void* data, int64_t sb, int64_t sh, int64_t sq, int64_t skv) {
        p_.mask = sageattn_mask{SAGEATTN_MASK_ADDITIVE, static_cast<int32_t>(t), data, sb, sh, sq, skv};
        return *this;
    }
    Problem& lse(float* data, int64_t batch_stride, int64_t head_stride, int64_t token_stride) {
        p_.lse = data; p_.lse_batch_stride = batch_stride;
        p_.lse_head_stride = head_stride; p_.lse_token_stride = token_stride;
        return *this;
    }
    Problem& exact(bool on = true) {
        p_.algorithm = on ? SAGEATTN_ALGORITHM_EXACT : SAGEATTN_ALGORITHM_QUANTIZED;
        return *this;
    }
    Problem& qk(sageattn_qk_granularity g, sageattn_qk_precision p = SAGEATTN_QK_AUTO) {
        p_.qk_granularity = g; p_.qk_precision = p;
        return *this;
    }
    Problem& pv(sageattn_pv_precision p, sageattn_pv_accum a = SAGEATTN_ACCUM_AUTO) {
        p_.pv_precision = p; p_.pv_accum = a;
        return *this;
    }
    Problem& smooth(bool k, bool v) { p_.smooth_k = k; p_.smooth_v = v; return *this; }

    sageattn_problem& raw() { return p_; }
    const sageattn_problem& raw() const { return p_; }

    Status check() const { return status_of(sageattn_check(&p_)); }
    Status workspace_size(size_t* bytes) const { return status_of(sageattn_workspace_size(&p_, bytes)); }
    Status forward(void* workspace, size_t bytes, void* stream = nullptr) const {
        return status_of(sageattn_forward(&p_, workspace, bytes, stream));
    }

#ifndef SAGEATTN_NO_EXCEPTIONS
    size_t workspace_size() const {
        size_t bytes = 0;
        throw_if_error(sageattn_workspace_size(&p_, &bytes));
        return bytes;
    }
    void run(void* workspace, size_t bytes, void* stream = nullptr) const {
        throw_if_error(sageattn_forward(&p_, workspace, bytes, stream));
    }
#endif

    // The data pointers of this problem, as a Plan's run takes them.
    sageattn_data data() const {
        return sageattn_data{p_.q.data, p_.k.data,  p_.v.data,          p_.out.data,
                             p_.mask.data, p_.lse, p_.cu_seqlens_q, p_.cu_seqlens_kv};
    }

private:
    static sageattn_tensor tensor(const View& v) {
        // The C struct uses one tensor type for inputs and outputs; inputs are never written.
        return sageattn_tensor{const_cast<void*>(v.data), v.batch_stride, v.head_stride, v.token_stride};
    }
    sageattn_problem p_;
};

// A problem checked and prepared once (sageattn_plan_create), run on each call's data: the
// problem's fields but its data pointers are the plan's. Owns the plan; moves, never copies.
class Plan {
public:
    Plan() = default;
    static Status create(const Problem& problem, Plan* out) {
        sageattn_plan* raw = nullptr;
        const Status s = status_of(sageattn_plan_create(&problem.raw(), &raw));
        if (s.ok()) *out = Plan(raw);
        return s;
    }
#ifndef SAGEATTN_NO_EXCEPTIONS
    explicit Plan(const Problem& problem) { throw_if_error(sageattn_plan_create(&problem.raw(), &plan_)); }
#endif
    Plan(Plan&& other) noexcept : plan_(other.plan_) { other.plan_ = nullptr; }
    Plan& operator=(Plan&& other) noexcept {
        if (this != &other) {
            sageattn_plan_destroy(plan_);
            plan_ = other.plan_;
            other.plan_ = nullptr;
        }
        return *this;
    }
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    ~Plan() { sageattn_plan_destroy(plan_); }

    Status workspace_size(const sageattn_data& data, size_t* bytes) const {
        return status_of(sageattn_plan_workspace_size(plan_, &data, bytes));
    }
    Status forward(const sageattn_data& data, void* workspace, size_t bytes, void* stream = nullptr) const {
        return status_of(sageattn_plan_forward(plan_, &data, workspace, bytes, stream));
    }
#ifndef SAGEATTN_NO_EXCEPTIONS
    size_t workspace_size(const sageattn_data& data) const {
        size_t bytes = 0;
        throw_if_error(sageattn_plan_workspace_size(plan_, &data, &bytes));
        return bytes;
    }
    void run(const sageattn_data& data, void* workspace, size_t bytes, void* stream = nullptr) const {
        throw_if_error(sageattn_plan_forward(plan_, &data, workspace, bytes, stream));
    }
#endif
    const sageattn_plan* raw() const { return plan_; }

private:
    explicit Plan(sageattn_plan* plan) : plan_(plan) {}
    sageattn_plan* plan_ = nullptr;
};

}  // namespace sageattn

#endif  // SAGEATTN_SAGEATTN_HPP
