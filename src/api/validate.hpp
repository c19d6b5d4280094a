#pragma once

#include "common/problem.hpp"

namespace sageattn::api {

// Checks every field of `in` (docs/ALGORITHM.md §1) and fills `out` with the
// problem and its defaults resolved. On failure records the message.
sageattn_status normalize(const sageattn_problem* in, Problem* out);

// The checks of normalize that read the problem's data pointers (and, on the CPU, the varlen
// prefix sums they point to): every view's alignment and extent, the mask's, the LSE's. A plan
// (api.cpp) runs only these on each call's data. On failure records the message.
sageattn_status check_data(const Problem& pr);

// §1's rules for one array of varlen prefix sums (host memory): cu[0] = 0, non-decreasing,
// every length <= max_len, cu[batch] <= total. On failure records the message.
sageattn_status check_seqlens(const char* name, const int32_t* cu, int64_t batch, int64_t total, int64_t max_len);

// The defaults sageattn_problem_init writes.
void default_problem(sageattn_problem* p);

}  // namespace sageattn::api
