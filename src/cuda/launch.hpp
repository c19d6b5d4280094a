// Host entry points of the CUDA kernels (defined in .cu files, called by backend.cu).
#pragma once

#include <cuda_runtime.h>

#include "cuda/params.hpp"

namespace sageattn::cuda {

void launch_quantize(const Params& p, cudaStream_t stream);

template <int DP, bool kBf16, bool kFp8>
void launch_attention(const Params& p, cudaStream_t stream);

}  // namespace sageattn::cuda
