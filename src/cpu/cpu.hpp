// The CPU implementations: the float64 reference (§7 of docs/ALGORITHM.md)
// and the quantized algorithm emulated exactly as the GPU runs it (§2-§6).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/problem.hpp"

namespace sageattn::cpu {

// Exact attention in float64. `out` is [total_q][heads_q][head_dim] and `lse`
// [total_q][heads_q] (natural log, -inf for rows that see no key), rows
// numbered by Problem::row0_q. Either may be null.
void reference(const Problem& pr, double* out, double* lse);

// The reference written through the problem's out/lse pointers (rounded to the output dtype).
void reference_forward(const Problem& pr);

// Workspace the quantized algorithm needs, in bytes.
size_t quantized_workspace_size(const Problem& pr);

// What the quantized run decided, for tests and diagnostics.
struct QuantizedReport {
    std::vector<uint8_t> sharp_heads;  // [batch][heads_q]: 1 where Q·Kᵀ ran in the input precision
    std::vector<float> sharpness;      // [batch][heads_q]: §5's estimated logit noise
    std::vector<float> q_scale;        // [heads_q][total_q]: §3's scale of each row's group (0: input precision)
    std::vector<float> k_scale;        // [heads_kv][total_kv]: §3's scale of each key's group
};

// Runs the quantized algorithm; `workspace` holds quantized_workspace_size()
// bytes, 64-byte aligned. Writes out (and lse when requested).
void quantized_forward(const Problem& pr, void* workspace, QuantizedReport* report = nullptr);

}  // namespace sageattn::cpu
