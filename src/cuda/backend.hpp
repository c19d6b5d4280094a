// The CUDA backend as the API layer sees it: no CUDA headers, statuses only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/problem.hpp"
#include "cuda/mma_config.hpp"

namespace sageattn::cuda {

// Resolves device-dependent defaults (P·V precision and accumulation) and
// checks that this build and the device can run the problem.
sageattn_status prepare(Problem& pr);

// Byte offsets of every workspace region; the zeroed ones come first. `total` is what
// sageattn_workspace_size reports.
struct WorkspaceLayout {
    size_t k_sum, v_sum, k_amax, q_amax, v_amax, v_err, tickets, ready, next_item, seqlens_faults, q_nonfinite, sharp_heads, kv_nonfinite, zeroed_end;
    size_t k_codes, k_scale, v_codes, q_codes, q_scale, q_shift, key_nonfinite, sum_parts, err_parts, total;
    int32_t sum_chunks, err_chunks;
    int64_t kv_rows, q_rows;
    int dp;
};
// The workspace layout of a prepared problem.
WorkspaceLayout workspace_layout(const Problem& pr);
// Runs a prepared problem. `layout` is workspace_layout(pr), computed once by the caller,
// which has also checked that `workspace` is not NULL and holds layout.total bytes.
sageattn_status forward(const Problem& pr, const WorkspaceLayout& layout, void* workspace, void* stream);

// Whether small problems run as one mma.sync launch on sm_90 (see forward); on by
// default. Tests turn it off to reach the sm_90a kernel with small shapes too.
void set_small_problem_path(bool on);

// The §6 softmax step forward() runs this problem's INT8 heads with (64 keys, or 128 on the
// sm_90a kernel), for holding it to the CPU emulation (Problem::int8_softmax_block).
int64_t int8_softmax_block(const Problem& pr);

// Shared memory one CTA of the mma.sync attention kernel needs (dynamic and static), in
// bytes, in the configuration forward() launches where a CTA may have `cta_limit` bytes (0:
// not known); prepare() refuses a problem that still outgrows the device's per-CTA limit.
size_t attention_shared_bytes(int head_dim_pad, bool pv_fp8, int cta_limit);

// For tests: caps the shared memory per CTA the dispatch takes the device to allow, in bytes
// (0, the default: the device's own limit). 99 KB on an sm_90 GPU runs the configuration that
// sm_86, sm_89 and sm_12x get (head_dim 256 on split K/Vᵀ buffers), so it can be checked there.
void set_cta_shared_memory_cap(int bytes);
// The mma.sync kernel's configuration forward() launches for `pr` (prepared) now.
MmaPipeline attention_pipeline(const Problem& pr);

int runtime_version();
// Compiled SM targets (e.g. 80, 89, 90); returns how many were written.
int compiled_archs(int* archs, int capacity);

}  // namespace sageattn::cuda
