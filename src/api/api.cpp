// The exported C entry points: validate, choose the implementation, run.
#include <cstring>
#include <exception>
#include <new>

#include "api/error.hpp"
#include "api/validate.hpp"
#include "cpu/cpu.hpp"
#include "sageattn/sageattn.h"
#ifdef SAGEATTN_WITH_CUDA
#include "cuda/backend.hpp"
#endif

#ifndef SAGEATTN_VERSION_STRING
#define SAGEATTN_VERSION_STRING "0.0.0"
#endif

namespace sageattn::api {
namespace {

// Everything a valid problem still needs before it can run on this build.
sageattn_status check_runnable(Problem& pr) {
    if (pr.p.device_type != SAGEATTN_DEVICE_CUDA) return SAGEATTN_SUCCESS;
#ifdef SAGEATTN_WITH_CUDA
    return cuda::prepare(pr);
#else
    return fail(SAGEATTN_ERROR_UNSUPPORTED,
                "device_type = CUDA: this build of libsageattn has no CUDA backend (it was compiled without CUDA)");
#endif
}

sageattn_status prepare(const sageattn_problem* problem, Problem* pr) {
    clear_error();
    sageattn_status s = normalize(problem, pr);
    if (s != SAGEATTN_SUCCESS) return s;
    return check_runnable(*pr);
}

size_t workspace_bytes(const Problem& pr) {
#ifdef SAGEATTN_WITH_CUDA
    if (pr.p.device_type == SAGEATTN_DEVICE_CUDA) return cuda::workspace_layout(pr).total;
#endif
    if (pr.p.algorithm == SAGEATTN_ALGORITHM_EXACT) return 0;
    return cpu::quantized_workspace_size(pr);
}

// What the caller's workspace must be before anything runs on it, whichever the device:
// `need` bytes at least, and not NULL when that is more than none. Alignment is the backend's.
sageattn_status check_workspace(const void* workspace, size_t bytes, size_t need) {
    if (bytes < need)
        return fail(SAGEATTN_ERROR_WORKSPACE_TOO_SMALL, "workspace_bytes = %zu; this problem needs %zu", bytes, need);
    if (need > 0 && workspace == nullptr) return fail(SAGEATTN_ERROR_NULL_POINTER, "workspace is NULL");
    return SAGEATTN_SUCCESS;
}

// The workspace of a prepared problem: CUDA's regions, or the CPU's size, worked out once.
struct Workspace {
#ifdef SAGEATTN_WITH_CUDA
    cuda::WorkspaceLayout cuda;
#endif
    size_t cpu = 0;

    static Workspace of(const Problem& pr) {
        Workspace w{};
#ifdef SAGEATTN_WITH_CUDA
        if (pr.p.device_type == SAGEATTN_DEVICE_CUDA) {
            w.cuda = cuda::workspace_layout(pr);
            return w;
        }
#endif
        if (!pr.varlen) w.cpu = workspace_bytes(pr);  // a varlen problem's is worked out per run (bytes)
        return w;
    }
    // The bytes a run of `pr` needs: these, except on the CPU for a varlen problem, whose size
    // follows its prefix sums (a plan's run may bring new ones).
    size_t bytes(const Problem& pr) const {
#ifdef SAGEATTN_WITH_CUDA
        if (pr.p.device_type == SAGEATTN_DEVICE_CUDA) return cuda.total;
#endif
        return pr.varlen ? workspace_bytes(pr) : cpu;
    }
};

// Runs a prepared problem on the workspace it was laid out for (`layout`, worked out once by the caller).
sageattn_status run(const Problem& pr, const Workspace& layout, void* workspace, size_t bytes, void* stream) {
    sageattn_status s;
    if ((s = check_workspace(workspace, bytes, layout.bytes(pr))) != SAGEATTN_SUCCESS) return s;
#ifdef SAGEATTN_WITH_CUDA
    if (pr.p.device_type == SAGEATTN_DEVICE_CUDA) return cuda::forward(pr, layout.cuda, workspace, stream);
#else
    (void)stream;
#endif
    if (reinterpret_cast<uintptr_t>(workspace) % 64 != 0)
        return fail(SAGEATTN_ERROR_MISALIGNED, "workspace = %p is not 64-byte aligned", workspace);
    if (pr.p.algorithm == SAGEATTN_ALGORITHM_EXACT)
        cpu::reference_forward(pr);
    else
        cpu::quantized_forward(pr, workspace);
    return SAGEATTN_SUCCESS;
}

// C++ exceptions never cross the C boundary.
template <class F>
sageattn_status guarded(F&& f) {
    try {
        return f();
    } catch (const std::bad_alloc&) {
        return fail(SAGEATTN_ERROR_OUT_OF_MEMORY, "out of host memory");
    } catch (const std::exception& e) {
        return fail(SAGEATTN_ERROR_INTERNAL, "internal error: %s", e.what());
    } catch (...) {
        return fail(SAGEATTN_ERROR_INTERNAL, "internal error: unknown exception");
    }
}

}  // namespace
}  // namespace sageattn::api

using sageattn::Problem;
using namespace sageattn::api;

// A prepared problem and what it needs to run, worked out once.
struct sageattn_plan {
    Problem pr;  // validated and prepared, with the data pointers it was created with
    Workspace layout;
};

namespace {

// The plan's problem with `data`'s pointers, which must be present exactly where the plan's
// were; checks what depends on them (check_data).
sageattn_status with_data(const sageattn_plan* plan, const sageattn_data* data, Problem* out) {
    clear_error();
    if (!plan) return fail(SAGEATTN_ERROR_NULL_POINTER, "plan is NULL");
    if (!data) return fail(SAGEATTN_ERROR_NULL_POINTER, "data is NULL");
    Problem& pr = *out;
    pr = plan->pr;
    sageattn_problem& p = pr.p;
    struct Present {
        const char* name;
        bool plan, here;
    };
    const Present present[] = {{"mask", p.mask.data != nullptr, data->mask != nullptr},
                               {"lse", p.lse != nullptr, data->lse != nullptr},
                               {"cu_seqlens_q", p.cu_seqlens_q != nullptr, data->cu_seqlens_q != nullptr},
                               {"cu_seqlens_kv", p.cu_seqlens_kv != nullptr, data->cu_seqlens_kv != nullptr}};
    for (const Present& x : present)
        if (x.plan != x.here)
            return fail(SAGEATTN_ERROR_NULL_POINTER, "data->%s is %s, but the plan's problem had %s", x.name,
                        x.here ? "set" : "NULL", x.plan ? "one" : "none");
    p.q.data = const_cast<void*>(data->q);
    p.k.data = const_cast<void*>(data->k);
    p.v.data = const_cast<void*>(data->v);
    p.out.data = data->out;
    p.mask.data = data->mask;
    p.lse = data->lse;
    p.cu_seqlens_q = data->cu_seqlens_q;
    p.cu_seqlens_kv = data->cu_seqlens_kv;
    return check_data(pr);
}

}  // namespace

extern "C" {

void sageattn_problem_init(sageattn_problem* problem) {
    if (problem) default_problem(problem);
}

void sageattn_build_info_init(sageattn_build_info* info) {
    if (!info) return;
    std::memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
}

int32_t sageattn_abi_version(void) { return SAGEATTN_ABI_VERSION; }

const char* sageattn_version(void) { return SAGEATTN_VERSION_STRING; }

sageattn_status sageattn_get_build_info(sageattn_build_info* info) {
    clear_error();
    if (!info) return fail(SAGEATTN_ERROR_NULL_POINTER, "info is NULL");
    if (info->struct_size < sizeof(sageattn_build_info))
        return fail(SAGEATTN_ERROR_ABI_MISMATCH, "info->struct_size = %u; expected >= %zu (call sageattn_build_info_init)",
                    info->struct_size, sizeof(sageattn_build_info));
    info->abi_version = SAGEATTN_ABI_VERSION;
    info->version = SAGEATTN_VERSION_STRING;
    info->backends = SAGEATTN_BACKEND_CPU;
    info->cuda_runtime_version = 0;
    info->num_cuda_archs = 0;
    info->kernel_families = "cpu";
#ifdef SAGEATTN_WITH_CUDA
    info->backends |= SAGEATTN_BACKEND_CUDA;
    info->cuda_runtime_version = sageattn::cuda::runtime_version();
    info->num_cuda_archs = sageattn::cuda::compiled_archs(info->cuda_archs, 32);
#ifdef SAGEATTN_WITH_WGMMA
    info->kernel_families = "cpu,cuda-mma,cuda-wgmma-sm90a";
#else
    info->kernel_families = "cpu,cuda-mma";
#endif
#endif
    info->max_head_dim = SAGEATTN_MAX_HEAD_DIM;
    info->pv_precisions = (1u << SAGEATTN_PV_FP8) | (1u << SAGEATTN_PV_FP16);
    info->qk_granularities = (1u << SAGEATTN_QK_PER_THREAD) | (1u << SAGEATTN_QK_PER_WARP) | (1u << SAGEATTN_QK_PER_BLOCK);
    return SAGEATTN_SUCCESS;
}

sageattn_status sageattn_check(const sageattn_problem* problem) {
    return guarded([&] {
        Problem pr;
        return prepare(problem, &pr);
    });
}

sageattn_status sageattn_workspace_size(const sageattn_problem* problem, size_t* bytes) {
    return guarded([&] {
        if (!bytes) return fail(SAGEATTN_ERROR_NULL_POINTER, "bytes is NULL");
        *bytes = 0;
        Problem pr;
        const sageattn_status s = prepare(problem, &pr);
        if (s != SAGEATTN_SUCCESS) return s;
        *bytes = workspace_bytes(pr);
        return SAGEATTN_SUCCESS;
    });
}

sageattn_status sageattn_forward(const sageattn_problem* problem, void* workspace, size_t bytes, void* stream) {
    return guarded([&] {
        Problem pr;
        const sageattn_status s = prepare(problem, &pr);
        if (s != SAGEATTN_SUCCESS) return s;
        // One layout for the size check and the run.
        return run(pr, Workspace::of(pr), workspace, bytes, stream);
    });
}

sageattn_status sageattn_plan_create(const sageattn_problem* problem, sageattn_plan** plan) {
    return guarded([&] {
        if (!plan) return fail(SAGEATTN_ERROR_NULL_POINTER, "plan is NULL");
        *plan = nullptr;
        Problem pr;
        const sageattn_status s = prepare(problem, &pr);
        if (s != SAGEATTN_SUCCESS) return s;
        *plan = new sageattn_plan{pr, Workspace::of(pr)};
        return SAGEATTN_SUCCESS;
    });
}

sageattn_status sageattn_plan_workspace_size(const sageattn_plan* plan, const sageattn_data* data, size_t* bytes) {
    return guarded([&] {
        if (!bytes) return fail(SAGEATTN_ERROR_NULL_POINTER, "bytes is NULL");
        *bytes = 0;
        Problem pr;
        const sageattn_status s = with_data(plan, data, &pr);
        if (s != SAGEATTN_SUCCESS) return s;
        *bytes = plan->layout.bytes(pr);
        return SAGEATTN_SUCCESS;
    });
}

sageattn_status sageattn_plan_forward(const sageattn_plan* plan, const sageattn_data* data, void* workspace,
                                      size_t bytes, void* stream) {
    return guarded([&] {
        Problem pr;
        const sageattn_status s = with_data(plan, data, &pr);
        if (s != SAGEATTN_SUCCESS) return s;
        return run(pr, plan->layout, workspace, bytes, stream);
    });
}

void sageattn_plan_destroy(sageattn_plan* plan) { delete plan; }

}  // extern "C"
