// Host side of the CUDA backend: device checks, workspace layout, launches.
#include "cuda/backend.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iterator>
#include <utility>
#include <vector>

#include "api/error.hpp"
#include "api/validate.hpp"
#include "common/algorithm.hpp"
#include "cuda/launch.hpp"
#include "cuda/params.hpp"

#include "sageattn_build_config.h"

namespace sageattn::cuda {
namespace {

using api::fail;

// The longest sequence the kernels can meet: dense, the length; varlen, max_len cut to the
// tensor's packed rows (no clamped sequence is longer, common.cuh), which bounds the grids
// and the workspace whatever max_len says.
int64_t longest_q(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    return pr.varlen ? std::min(p.max_len_q, p.len_q) : p.len_q;
}
int64_t longest_kv(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    return pr.varlen ? std::min(p.max_len_kv, p.len_kv) : p.len_kv;
}

}  // namespace

WorkspaceLayout workspace_layout(const Problem& pr) {
    const sageattn_problem& p = pr.p;
    WorkspaceLayout l{};
    l.dp = padded_head_dim(p.head_dim);
    const int64_t total_q = pr.varlen ? p.len_q : p.batch * p.len_q;
    const int64_t total_kv = pr.varlen ? p.len_kv : p.batch * p.len_kv;
    l.kv_rows = padded_rows(total_kv, p.batch, kWideBlockKv);
    l.q_rows = padded_rows(total_q, p.batch, kQuantRows);
    const size_t heads_kv = static_cast<size_t>(p.batch * p.heads_kv), dp = static_cast<size_t>(l.dp);
    size_t at = 0;
    auto take = [&](size_t bytes) {
        const size_t here = at;
        at += (bytes + 255) & ~size_t{255};
        return here;
    };
    l.k_sum = take(heads_kv * dp * 4);
    l.v_sum = take(heads_kv * dp * 4);
    l.k_amax = take(heads_kv * 4);
    l.q_amax = take(static_cast<size_t>(p.batch * p.heads_q) * 4);
    l.v_amax = take(heads_kv * dp * 4);
    l.v_err = take(heads_kv * dp * 4);
    l.tickets = take(heads_kv * 2 * 4);
    l.ready = take(heads_kv * 4);
    l.next_item = take(4);
    l.seqlens_faults = take(4);
    l.q_nonfinite = take(static_cast<size_t>(p.batch * p.heads_q) * 4);
    l.sharp_heads = take(static_cast<size_t>(1 + p.batch * p.heads_q) * 4);
    l.kv_nonfinite = take(heads_kv * 4);
    l.zeroed_end = at;
    const size_t kv_cells = static_cast<size_t>(p.heads_kv * l.kv_rows);
    l.k_codes = take(kv_cells * dp);
    l.k_scale = take((kv_cells / kBlockKv + 1) * alg::kKThreadGroups * sizeof(float));
    l.v_codes = take(kv_cells * dp * (p.pv_precision == SAGEATTN_PV_FP8 ? 1 : 2));
    const size_t q_cells = static_cast<size_t>(p.heads_q * l.q_rows);
    l.q_codes = take(q_cells * dp);
    l.q_scale = take(q_cells * 4);
    l.q_shift = take(q_cells * 4);
    l.key_nonfinite = take(2 * kv_cells / kBlockKv * 8);  // one bit a key, K's and V's
    const int64_t max_kv = longest_kv(pr);
    l.sum_chunks = static_cast<int32_t>((max_kv + kSumRows - 1) / kSumRows);
    l.err_chunks = static_cast<int32_t>((max_kv + kBlockKv - 1) / kBlockKv);
    // Parts of the cross-CTA results: K/V sums and V's range (always), V's rounding errors (FP8 V).
    const bool errors = p.pv_precision == SAGEATTN_PV_FP8;
    l.sum_parts = take(heads_kv * static_cast<size_t>(l.sum_chunks) * 4 * dp * 4);
    l.err_parts = take(errors ? heads_kv * static_cast<size_t>(l.err_chunks) * dp * 4 : 0);
    l.total = at;
    return l;
}

namespace {

template <class T>
T* region(void* ws, size_t offset) { return reinterpret_cast<T*>(static_cast<char*>(ws) + offset); }

Params params_of(const Problem& pr, const WorkspaceLayout& l, void* ws) {
    const sageattn_problem& p = pr.p;
    Params k{};
    k.q = TensorView{p.q.data, p.q.batch_stride, p.q.head_stride, p.q.token_stride};
    k.k = TensorView{p.k.data, p.k.batch_stride, p.k.head_stride, p.k.token_stride};
    k.v = TensorView{p.v.data, p.v.batch_stride, p.v.head_stride, p.v.token_stride};
    k.out = p.out.data;
    k.out_batch_stride = p.out.batch_stride, k.out_head_stride = p.out.head_stride, k.out_token_stride = p.out.token_stride;
    k.lse = p.lse;
    k.lse_batch_stride = p.lse_batch_stride, k.lse_head_stride = p.lse_head_stride, k.lse_token_stride = p.lse_token_stride;
    k.cu_seqlens_q = p.cu_seqlens_q, k.cu_seqlens_kv = p.cu_seqlens_kv;
    k.batch = static_cast<int32_t>(p.batch), k.heads_q = static_cast<int32_t>(p.heads_q);
    k.heads_kv = static_cast<int32_t>(p.heads_kv), k.group = static_cast<int32_t>(pr.group);
    k.len_q = p.len_q, k.len_kv = p.len_kv;
    k.max_len_q = longest_q(pr);
    k.max_len_kv = longest_kv(pr);
    k.head_dim = static_cast<int32_t>(p.head_dim), k.head_dim_pad = l.dp;
    k.bf16 = p.dtype == SAGEATTN_DTYPE_BF16, k.causal = p.causal;
    auto vectorizable = [](const sageattn_tensor& t) {
        return reinterpret_cast<uintptr_t>(t.data) % 16 == 0 && t.batch_stride % 8 == 0 && t.head_stride % 8 == 0 &&
               t.token_stride % 8 == 0;
    };
    k.vec_q = vectorizable(p.q), k.vec_k = vectorizable(p.k), k.vec_v = vectorizable(p.v);
    k.scale = pr.scale;
    k.scale_log2 = pr.scale * alg::kLog2e;  // the CPU's rounding of the same product
    k.mask_type = p.mask.type, k.mask_dtype = p.mask.dtype, k.mask = p.mask.data;
    k.mask_batch_stride = p.mask.batch_stride, k.mask_head_stride = p.mask.head_stride;
    k.mask_q_stride = p.mask.q_stride, k.mask_kv_stride = p.mask.kv_stride;
    k.granularity = p.qk_granularity, k.qk_precision = p.qk_precision;
    k.pv_fp8 = p.pv_precision == SAGEATTN_PV_FP8, k.pv_accum = p.pv_accum;
    k.smooth_k = p.smooth_k, k.smooth_v = p.smooth_v;
    k.sharp_threshold = pr.sharp_threshold;
    k.k_sum = region<float>(ws, l.k_sum);
    k.v_sum = region<float>(ws, l.v_sum);
    k.k_amax = region<uint32_t>(ws, l.k_amax);
    k.q_amax = region<uint32_t>(ws, l.q_amax);
    k.v_amax = region<uint32_t>(ws, l.v_amax);
    k.v_err = region<float>(ws, l.v_err);
    k.k_codes = region<int8_t>(ws, l.k_codes);
    k.k_scale = region<float>(ws, l.k_scale);
    k.v_codes = region<uint8_t>(ws, l.v_codes);
    k.q_codes = region<int8_t>(ws, l.q_codes);
    k.q_scale = region<float>(ws, l.q_scale);
    k.q_shift = region<float>(ws, l.q_shift);
    k.q_nonfinite = region<uint32_t>(ws, l.q_nonfinite);
    k.sharp_heads = region<uint32_t>(ws, l.sharp_heads);
    k.kv_nonfinite = region<uint32_t>(ws, l.kv_nonfinite);
    k.key_nonfinite = region<uint64_t>(ws, l.key_nonfinite);
    k.kv_rows = l.kv_rows, k.q_rows = l.q_rows;
    k.sum_parts = region<float>(ws, l.sum_parts);
    k.err_parts = region<float>(ws, l.err_parts);
    k.tickets = region<uint32_t>(ws, l.tickets);
    k.ready = region<uint32_t>(ws, l.ready);
    k.next_item = region<uint32_t>(ws, l.next_item);
    k.sum_chunks = l.sum_chunks, k.err_chunks = l.err_chunks;
    return k;
}

using Launch = void (*)(const Params&, cudaStream_t);
using TryLaunch = bool (*)(const Params&, cudaStream_t);

// The launchers of the registry's instances (kernels.hpp), by padded head dim: of the instances
// of kMmaHeadDims[I] (kWgmmaHeadDims[I]), the one whose head dim is dp; the split-buffer
// configuration where `pipe` asks for it and it is built (mma_pipeline gives it only there).
template <int DP, MmaPipeline kPipe>
Launch pick(bool bf16, bool fp8) {
    if (bf16) return fp8 ? launch_attention<DP, true, true, kPipe> : launch_attention<DP, true, false, kPipe>;
    return fp8 ? launch_attention<DP, false, true, kPipe> : launch_attention<DP, false, false, kPipe>;
}
template <int DP>
Launch pick_configuration(bool bf16, bool fp8, MmaPipeline pipe) {
    if constexpr (mma_pipeline_built(DP, MmaPipeline::kSplitKv))
        if (pipe == MmaPipeline::kSplitKv) return pick<DP, MmaPipeline::kSplitKv>(bf16, fp8);
    return pick<DP, MmaPipeline::kDoubleBuffered>(bf16, fp8);
}
template <size_t... I>
Launch attention_launcher(int dp, bool bf16, bool fp8, MmaPipeline pipe, std::index_sequence<I...>) {
    Launch found = nullptr;
    ((dp == kMmaHeadDims[I] ? (found = pick_configuration<kMmaHeadDims[I]>(bf16, fp8, pipe), true) : false) || ...);
    return found;
}
Launch attention_launcher(int dp, bool bf16, bool fp8, MmaPipeline pipe) {
    return attention_launcher(dp, bf16, fp8, pipe, std::make_index_sequence<std::size(kMmaHeadDims)>{});
}

#if defined(SAGEATTN_WITH_WGMMA)
constexpr bool kHaveWgmma = true;
template <size_t... I>
TryLaunch wgmma_launcher(int dp, bool bf16, std::index_sequence<I...>) {
    TryLaunch found = nullptr;
    ((dp == kWgmmaHeadDims[I]
          ? (found = bf16 ? launch_attention_wgmma<kWgmmaHeadDims[I], true> : launch_attention_wgmma<kWgmmaHeadDims[I], false>,
             true)
          : false) ||
     ...);
    return found;
}
// A channel cut of dp that holds head_dim (the registry lists the cuts of a head dim ascending),
// else dp's instance.
template <size_t... I>
TryLaunch wgmma_cut_launcher(int dp, int64_t head_dim, bool bf16, std::index_sequence<I...>) {
    TryLaunch found = nullptr;
    ((dp == kWgmmaChannelCuts[I][0] && head_dim <= kWgmmaChannelCuts[I][1]
          ? (found = bf16 ? launch_attention_wgmma_cut<kWgmmaChannelCuts[I][0], kWgmmaChannelCuts[I][1], true>
                          : launch_attention_wgmma_cut<kWgmmaChannelCuts[I][0], kWgmmaChannelCuts[I][1], false>,
             true)
          : false) ||
     ...);
    return found;
}
TryLaunch wgmma_launcher(int dp, int64_t head_dim, bool bf16) {
    if (TryLaunch cut = wgmma_cut_launcher(dp, head_dim, bf16, std::make_index_sequence<kWgmmaChannelCuts.size()>{}))
        return cut;
    return wgmma_launcher(dp, bf16, std::make_index_sequence<std::size(kWgmmaHeadDims)>{});
}
#else
constexpr bool kHaveWgmma = false;
TryLaunch wgmma_launcher(int, int64_t, bool) { return nullptr; }
#endif

// Makes `device` current for the scope and restores the caller's device after.
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        cudaGetDevice(&previous_);
        if (previous_ != device) cudaSetDevice(device);
    }
    ~DeviceGuard() {
        int now = -1;
        cudaGetDevice(&now);
        if (now != previous_) cudaSetDevice(previous_);
    }

private:
    int previous_ = 0;
};

sageattn_status cuda_error(cudaError_t e, const char* what) {
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction)
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "%s: this build has no kernels for the device (%s)", what,
                    cudaGetErrorString(e));
    if (e == cudaErrorInsufficientDriver)
        return fail(SAGEATTN_ERROR_DEVICE, "%s: the NVIDIA driver is older than this library's CUDA %d (%s)", what,
                    CUDART_VERSION / 1000, cudaGetErrorString(e));
    return fail(SAGEATTN_ERROR_DEVICE, "%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

// The devices' count and compute capabilities, read once per process: they do
// not change, and every call needs them (host time per call matters at small sizes).
struct Devices {
    cudaError_t error = cudaSuccess;
    int count = 0;
    int cc[64] = {};
    int sms[64] = {};
    int smem_optin[64] = {};  // shared memory one CTA may have, bytes
};

const Devices& devices() {
    static const Devices d = [] {
        Devices r;
        r.error = cudaGetDeviceCount(&r.count);
        if (r.error != cudaSuccess) {
            cudaGetLastError();  // not sticky: clear it
            r.count = 0;
        }
        for (int i = 0; i < r.count && i < 64; ++i) {
            int major = 0, minor = 0;
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, i);
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, i);
            r.cc[i] = major * 10 + minor;
            cudaDeviceGetAttribute(&r.sms[i], cudaDevAttrMultiProcessorCount, i);
            cudaDeviceGetAttribute(&r.smem_optin[i], cudaDevAttrMaxSharedMemoryPerBlockOptin, i);
        }
        return r;
    }();
    return d;
}

std::atomic<bool> small_problem_path{true};
std::atomic<int> cta_smem_cap{0};  // set_cta_shared_memory_cap; 0: none

// Shared memory one CTA of the mma.sync kernel may have on `device`, bytes (0: not known).
int cta_smem_limit(int device) {
    const int optin = devices().smem_optin[device], cap = cta_smem_cap.load(std::memory_order_relaxed);
    if (cap <= 0) return optin;
    return optin > 0 ? std::min(optin, cap) : cap;
}

// The mma.sync kernel's configuration for this problem (mma_config.hpp). `pr` is prepared.
MmaPipeline pipeline_of(const Problem& pr, int dp) {
    return mma_pipeline(dp, pr.p.pv_precision == SAGEATTN_PV_FP8, cta_smem_limit(pr.p.device_index));
}

// Small problems are bound by launch latency, host and device, not by bandwidth or the
// tensor cores. Up to about two waves of quantization items run as one launch (quantize.cu);
// at most one wave of mma.sync CTAs, none longer than 1024 keys, runs as one mma.sync
// launch on sm_90 too, which takes §5's sharp heads itself, instead of the wgmma kernel
// plus the sharp heads' own launch.
int64_t one_launch_items(int sms) { return small_problem_path.load(std::memory_order_relaxed) ? 8 * int64_t{sms} : 0; }
bool small_attention(const sageattn_problem& p, int64_t max_q, int64_t max_kv, int sms) {
    const int64_t ctas = (max_q + kTileQ - 1) / kTileQ * p.batch * p.heads_q;
    return small_problem_path.load(std::memory_order_relaxed) && max_kv <= 1024 && ctas <= 2 * int64_t{sms};
}

// Whether the sm_90a kernel takes head dim dp with this P·V precision: the one predicate that
// the dispatch (takes_wgmma, hence the quantizers' step W and the CPU emulation's through
// int8_softmax_block) and the P·V precision AUTO resolves to follow. Every sm_90a head dim
// with FP8 P·V (64, 128, 256), FP16 P·V only where the registry has it (64, 128): FP16 P·V at
// 256 runs on the mma.sync kernel.
bool sm90_takes(int dp, bool pv_fp8) { return has_wgmma_instance(dp) && (pv_fp8 || has_wgmma_fp16_pv(dp)); }

// sm90: the wgmma kernel takes every head it can (INT8 Q·Kᵀ; FP8 P·V with "fp32+fp32" or FP16
// P·V with "fp32", each block summed apart in fp32), and the mma.sync kernel the heads §5 flags
// for 16-bit Q·Kᵀ. `pr` is prepared (no AUTO left).
bool takes_wgmma(const Problem& pr, int dp) {
    const sageattn_problem& p = pr.p;
    const bool fp8 = p.pv_precision == SAGEATTN_PV_FP8;
    const bool accum = fp8 ? p.pv_accum == SAGEATTN_ACCUM_FP32_FP32 : p.pv_accum == SAGEATTN_ACCUM_FP32;
    const int64_t max_q = longest_q(pr), max_kv = longest_kv(pr);
    const int device = p.device_index;
    return kHaveWgmma && devices().cc[device] == 90 && accum && sm90_takes(dp, fp8) && p.qk_precision != SAGEATTN_QK_INPUT &&
           !small_attention(p, max_q, max_kv, devices().sms[device]);
}

}  // namespace

void set_small_problem_path(bool on) { small_problem_path.store(on, std::memory_order_relaxed); }
void set_cta_shared_memory_cap(int bytes) { cta_smem_cap.store(bytes > 0 ? bytes : 0, std::memory_order_relaxed); }
MmaPipeline attention_pipeline(const Problem& pr) { return pipeline_of(pr, padded_head_dim(pr.p.head_dim)); }

int64_t int8_softmax_block(const Problem& pr) {
    return takes_wgmma(pr, padded_head_dim(pr.p.head_dim)) ? alg::kWideKvBlock : alg::kKvBlock;
}

sageattn_status prepare(Problem& pr) {
    sageattn_problem& p = pr.p;
    const Devices& dev = devices();
    const cudaError_t e = dev.error;
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || (e == cudaSuccess && dev.count == 0))
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "device_type = CUDA, but no usable CUDA device is visible (%s)",
                    e == cudaSuccess ? "0 devices" : cudaGetErrorString(e));
    if (e != cudaSuccess) return cuda_error(e, "cudaGetDeviceCount");
    if (p.device_index >= dev.count || p.device_index >= 64)
        return fail(SAGEATTN_ERROR_INVALID_OPTION, "device_index = %d, but %d CUDA device(s) are visible", p.device_index,
                    dev.count);
    const int cc = dev.cc[p.device_index];
    if (cc < 80)
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "device %d is sm_%d; sageattn's kernels need sm_80 or newer",
                    p.device_index, cc);
    if (p.algorithm == SAGEATTN_ALGORITHM_EXACT)
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "algorithm = exact runs on the CPU only");
    // Sequences and heads are grid dimensions z and y; 64-row query tiles and 64-key blocks
    // along the sequence are grid dimension x (at most 2^31 - 1).
    if (p.batch > 65535 || p.heads_q > 65535)
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "batch = %lld, heads_q = %lld: the CUDA kernels take at most 65535 of each",
                    static_cast<long long>(p.batch), static_cast<long long>(p.heads_q));
    const int64_t max_q = longest_q(pr), max_kv = longest_kv(pr);
    if ((max_kv + kBlockKv - 1) / kBlockKv >= (int64_t{1} << 31) || (max_q + kTileQ - 1) / kTileQ >= (int64_t{1} << 31))
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "len_q = %lld, len_kv = %lld: too long for the CUDA kernels' grids",
                    static_cast<long long>(max_q), static_cast<long long>(max_kv));
    // FP8 mma.sync exists from sm89; on sm90 it is emulated through FP16, so FP16 P·V is faster there,
    // unless the sm_90a kernel (FP8 wgmma) takes the problem.
    const bool fp8_native =
        (cc >= 89 && cc != 90) || (cc == 90 && kHaveWgmma && sm90_takes(padded_head_dim(p.head_dim), true));
    if (p.pv_precision == SAGEATTN_PV_AUTO) p.pv_precision = fp8_native ? SAGEATTN_PV_FP8 : SAGEATTN_PV_FP16;
    if (p.pv_precision == SAGEATTN_PV_FP8 && cc < 89)
        return fail(SAGEATTN_ERROR_UNSUPPORTED, "pv_precision = fp8 needs sm_89 or newer; device %d is sm_%d",
                    p.device_index, cc);
    if (p.pv_accum == SAGEATTN_ACCUM_AUTO)
        p.pv_accum = p.pv_precision == SAGEATTN_PV_FP8 ? SAGEATTN_ACCUM_FP32_FP32 : SAGEATTN_ACCUM_FP32;
    // Every problem may need the mma.sync kernel (§5's sharp heads run on it everywhere). At
    // head_dim 256 its two stages outgrow the 99 KB a CTA may have on sm_86, sm_89 and sm_12x,
    // which get the split buffers instead (mma_config.hpp); a device with less still fails here.
    const int dp = padded_head_dim(p.head_dim);
    const bool pv_fp8 = p.pv_precision == SAGEATTN_PV_FP8;
    const int allowed = cta_smem_limit(p.device_index);  // 0: the driver did not say
    const size_t need = attention_shared_bytes(dp, pv_fp8, allowed);
    if (allowed > 0 && need > static_cast<size_t>(allowed))
        return fail(SAGEATTN_ERROR_UNSUPPORTED,
                    "head_dim = %lld with %s P·V needs %zu bytes of shared memory per CTA; device %d (sm_%d) allows %d",
                    static_cast<long long>(p.head_dim), pv_fp8 ? "FP8" : "FP16", need, p.device_index, cc, allowed);
    return SAGEATTN_SUCCESS;
}

size_t attention_shared_bytes(int head_dim_pad, bool pv_fp8, int cta_limit) {
    return static_cast<size_t>(mma_shared_bytes(head_dim_pad, pv_fp8, mma_pipeline(head_dim_pad, pv_fp8, cta_limit)));
}

namespace {

// check_seqlens: §1's rules tested on the device, read back (the stream is waited for), and
// on a failure the arrays copied here to name the first fault as the CPU does. `faults` is a
// zeroed word of the workspace.
sageattn_status check_device_seqlens(const Problem& pr, uint32_t* faults, cudaStream_t stream) {
    const sageattn_problem& p = pr.p;
    launch_check_seqlens(p.cu_seqlens_q, p.cu_seqlens_kv, p.batch, p.len_q, p.len_kv, p.max_len_q, p.max_len_kv, faults,
                         stream);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_error(e, "cu_seqlens check kernel");
    uint32_t found = 0;
    e = cudaMemcpyAsync(&found, faults, sizeof found, cudaMemcpyDeviceToHost, stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) return cuda_error(e, "check_seqlens: reading the check back");
    const char* names[2] = {"cu_seqlens_q", "cu_seqlens_kv"};
    const int32_t* arrays[2] = {p.cu_seqlens_q, p.cu_seqlens_kv};
    const int64_t totals[2] = {p.len_q, p.len_kv}, maxima[2] = {p.max_len_q, p.max_len_kv};
    for (int i = 0; i < 2; ++i) {
        if (!(found & (1u << i))) continue;
        std::vector<int32_t> host(static_cast<size_t>(p.batch + 1));
        e = cudaMemcpy(host.data(), arrays[i], host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost);
        if (e != cudaSuccess) return cuda_error(e, "check_seqlens: copying cu_seqlens back");
        const sageattn_status s = api::check_seqlens(names[i], host.data(), p.batch, totals[i], maxima[i]);
        if (s != SAGEATTN_SUCCESS) return s;
        return fail(SAGEATTN_ERROR_INVALID_SEQLENS, "%s failed the device check but not on the host: it changed meanwhile",
                    names[i]);
    }
    return SAGEATTN_SUCCESS;
}

}  // namespace

sageattn_status forward(const Problem& pr, const WorkspaceLayout& l, void* workspace, void* stream_ptr) {
    if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
        return fail(SAGEATTN_ERROR_MISALIGNED, "workspace = %p is not 256-byte aligned", workspace);
    const sageattn_problem& p = pr.p;
    const bool check = pr.varlen && p.check_seqlens && p.batch > 0;
    if (!check && (p.batch == 0 || p.len_q == 0)) return SAGEATTN_SUCCESS;
    Params params = params_of(pr, l, workspace);
    params.sms = devices().sms[p.device_index];
    DeviceGuard guard(p.device_index);
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    cudaError_t e;
    if (check) {
        // The check waits for the stream; a stream being captured into a graph cannot be waited for.
        cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
        if ((e = cudaStreamIsCapturing(stream, &capture)) != cudaSuccess) return cuda_error(e, "cudaStreamIsCapturing");
        if (capture != cudaStreamCaptureStatusNone)
            return fail(SAGEATTN_ERROR_UNSUPPORTED,
                        "check_seqlens = 1 waits for the stream to read its result back, which cannot happen while "
                        "the stream is captured into a CUDA graph: check before the capture, or capture with "
                        "check_seqlens = 0 (cu_seqlens are then clamped to the tensors)");
    }
    e = cudaMemsetAsync(workspace, 0, l.zeroed_end, stream);
    if (e != cudaSuccess) return cuda_error(e, "cudaMemsetAsync(workspace)");
    if (check) {
        const sageattn_status s = check_device_seqlens(pr, region<uint32_t>(workspace, l.seqlens_faults), stream);
        if (s != SAGEATTN_SUCCESS) return s;
        if (p.len_q == 0) return SAGEATTN_SUCCESS;
    }
    launch_quantize(params, one_launch_items(devices().sms[p.device_index]), stream);
    if ((e = cudaGetLastError()) != cudaSuccess) return cuda_error(e, "quantization kernels");
    if (takes_wgmma(pr, l.dp) && wgmma_launcher(l.dp, params.head_dim, params.bf16)(params, stream)) {
        if ((e = cudaGetLastError()) != cudaSuccess) return cuda_error(e, "attention kernel (sm_90a)");
        if (p.qk_precision == SAGEATTN_QK_AUTO) {
            Params sharp = params;
            sharp.sharp_only = 1;
            attention_launcher(l.dp, params.bf16, params.pv_fp8, pipeline_of(pr, l.dp))(sharp, stream);
        }
    } else {
        attention_launcher(l.dp, params.bf16, params.pv_fp8, pipeline_of(pr, l.dp))(params, stream);
    }
    if ((e = cudaGetLastError()) != cudaSuccess) return cuda_error(e, "attention kernel");
    return SAGEATTN_SUCCESS;
}

int runtime_version() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
}

int compiled_archs(int* archs, int capacity) {
    static const int kList[] = {SAGEATTN_CUDA_ARCH_LIST};
    int n = 0;
    for (int a : kList)
        if (a != 0 && n < capacity) archs[n++] = a;
    return n;
}

}  // namespace sageattn::cuda
