// The sm_90a kernel's output rows (§6: out = acc/l · v_scale + v_offset) through shared
// memory. A thread holds channels 2t, 2t + 1 of each n8 tile of two rows (the wgmma
// accumulator layout), so stored straight from the accumulators a warp's store covers 8
// rows × 16 bytes; those stores took a third of the kernel's time at 1k tokens (ncu). Here
// each consumer warp writes its 16 rows to shared memory as it holds them, then stores them
// back 16 bytes a lane, whole rows at a time. The stages are free by then: every consumer
// has passed the epilogue's barrier, so every block was copied in and read.
#pragma once

#include <cstdint>

#include "cuda/common.cuh"

namespace sageattn::cuda::sm90 {

// Rows of 16-byte aligned chunks: the output and its strides allow 16-byte stores.
__device__ __forceinline__ bool staged_output(const Params& p) {
    return (reinterpret_cast<uintptr_t>(p.out) & 15) == 0 && p.out_token_stride % 8 == 0 && p.out_head_stride % 8 == 0 &&
           p.out_batch_stride % 8 == 0 && p.head_dim % 8 == 0;
}

template <class T>
struct Staging {
    // A row padded by 16 bytes: the quad's 4-byte stores of a warp's 8 rows then hit 32 banks.
    static constexpr int kRowBytes = T::kChannels * 2 + 16;
    static constexpr int kWarpBytes = 16 * kRowBytes;  // a consumer warp's 16 rows
    static_assert(T::kConsumers / 32 * kWarpBytes <= T::kStages * T::kStageBytes, "the stages hold every warp's rows");
};

// The warp's 16 rows (row[0] − g is its first); `staging` is its part of the stages.
// acc(r, ot, e) is row r's accumulator of tile ot, channel 2t + e.
template <class T, bool kBf16, class Acc>
__device__ __forceinline__ void store_output_staged(const Params& p, int b, int h, const Seq& s, const int64_t (&row)[2],
                                                    int lane, const float (&m)[2], const float (&l)[2],
                                                    const float* v_scale, const float* v_offset, uint8_t* staging,
                                                    Acc acc) {
    using S = Staging<T>;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (row[r] >= s.len_q) continue;
        const RowOutput out(m[r], l[r]);
        uint8_t* at = staging + (g + 8 * r) * S::kRowBytes;
#pragma unroll
        for (int ot = 0; ot < T::kOTiles; ++ot) {
            const int c = ot * 8 + 2 * t;
            *reinterpret_cast<uint32_t*>(at + 2 * c) = pack_output_pair<kBf16>(out(acc(r, ot, 0), v_scale, v_offset, c),
                                                                               out(acc(r, ot, 1), v_scale, v_offset, c + 1));
        }
    }
    __syncwarp();
    const int64_t row0 = row[0] - g;
    uint16_t* out = static_cast<uint16_t*>(p.out) + out_base(p, b, s) + h * p.out_head_stride;
    constexpr int kChunks = T::kChannels / 8;  // 16-byte chunks of a row
#pragma unroll
    for (int k = lane; k < 16 * kChunks; k += 32) {
        const int lr = k / kChunks, ch = k % kChunks;
        if (row0 + lr < s.len_q && ch * 8 < p.head_dim)
            *reinterpret_cast<uint4*>(out + (row0 + lr) * p.out_token_stride + ch * 8) =
                *reinterpret_cast<const uint4*>(staging + lr * S::kRowBytes + ch * 16);
    }
    __syncwarp();  // the warp's later stores (non-finite rows) after these
}

}  // namespace sageattn::cuda::sm90
