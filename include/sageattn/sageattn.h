/*
 * sageattn.h — the C ABI of the sageattention library.
 *
 * One call computes   out = softmax(scale · Q Kᵀ + mask) · V
 * with Q and K quantized to INT8 and P·V in FP8 or FP16, as written down in
 * docs/ALGORITHM.md. A NaN or an infinity in q, or in k or v of a key a row
 * sees, makes that output row (and its LSE) NaN (§6). The same call can also run the exact float64 algorithm on
 * the CPU (SAGEATTN_ALGORITHM_EXACT), the judge every other path answers to.
 *
 * Usage:
 *   sageattn_problem p;
 *   sageattn_problem_init(&p);          // sets struct_size, abi_version, defaults
 *   p.dtype = SAGEATTN_DTYPE_BF16; p.batch = ...; p.q.data = ...; ...
 *   size_t bytes;
 *   if (sageattn_workspace_size(&p, &bytes) != SAGEATTN_SUCCESS) puts(sageattn_last_error());
 *   ... allocate `bytes` on the problem's device ...
 *   sageattn_forward(&p, workspace, bytes, stream);
 *
 * ABI rules: every struct starts with its own size, set by the caller (the init
 * functions do it). A newer library accepts the smaller structs of older
 * callers and gives the missing fields their defaults; fields are only ever
 * appended. Enumerations travel as int32_t. Nothing here aborts: every failure
 * is a status, and sageattn_last_error() names the argument and the value.
 */
#ifndef SAGEATTN_SAGEATTN_H
#define SAGEATTN_SAGEATTN_H

#include <stddef.h>
#include <stdint.h>

/* Exported from the shared library (sageattn.dll / libsageattn.so), imported by
 * its users. SAGEATTN_BUILDING_LIBRARY is the library's own compile definition;
 * SAGEATTN_STATIC is for code linked to the library's objects statically. */
#if defined(_WIN32)
#  if defined(SAGEATTN_BUILDING_LIBRARY)
#    define SAGEATTN_API __declspec(dllexport)
#  elif defined(SAGEATTN_STATIC)
#    define SAGEATTN_API
#  else
#    define SAGEATTN_API __declspec(dllimport)
#  endif
#else
#  define SAGEATTN_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only when an existing field or function changes meaning (never so far). */
#define SAGEATTN_ABI_VERSION 1
#define SAGEATTN_MAX_HEAD_DIM 256

typedef enum sageattn_status {
    SAGEATTN_SUCCESS = 0,
    SAGEATTN_ERROR_NULL_POINTER = 1,      /* a required pointer is NULL */
    SAGEATTN_ERROR_ABI_MISMATCH = 2,      /* struct_size / abi_version not understood */
    SAGEATTN_ERROR_INVALID_DTYPE = 3,     /* dtype not fp16/bf16 (mask: fp16/bf16/fp32) */
    SAGEATTN_ERROR_INVALID_SHAPE = 4,     /* batch or a length out of range */
    SAGEATTN_ERROR_INVALID_HEAD_DIM = 5,  /* head_dim not in 1..256 */
    SAGEATTN_ERROR_INVALID_HEADS = 6,     /* heads < 1 or heads_q % heads_kv != 0 */
    SAGEATTN_ERROR_INVALID_STRIDE = 7,    /* a negative stride */
    SAGEATTN_ERROR_OVERFLOW = 8,          /* an extent or offset past what 64 bits address */
    SAGEATTN_ERROR_MISALIGNED = 9,        /* a pointer not aligned to its element (or kernel) */
    SAGEATTN_ERROR_INVALID_SEQLENS = 10,  /* cu_seqlens not a valid prefix sum / max_len */
    SAGEATTN_ERROR_INVALID_MASK = 11,     /* mask type, dtype or layout */
    SAGEATTN_ERROR_INVALID_OPTION = 12,   /* a quantization or algorithm option */
    SAGEATTN_ERROR_INVALID_SCALE = 13,    /* scale not finite */
    SAGEATTN_ERROR_WORKSPACE_TOO_SMALL = 14,
    SAGEATTN_ERROR_UNSUPPORTED = 15,      /* valid, but this build or device cannot run it */
    SAGEATTN_ERROR_DEVICE = 16,           /* CUDA driver/runtime failure */
    SAGEATTN_ERROR_OUT_OF_MEMORY = 17,
    SAGEATTN_ERROR_INTERNAL = 18
} sageattn_status;

typedef enum sageattn_dtype {
    SAGEATTN_DTYPE_UNSET = 0, /* so that a forgotten dtype is an error, not fp16 */
    SAGEATTN_DTYPE_FP16 = 1,
    SAGEATTN_DTYPE_BF16 = 2,
    SAGEATTN_DTYPE_FP32 = 3   /* additive masks only */
} sageattn_dtype;

typedef enum sageattn_device_type {
    SAGEATTN_DEVICE_CPU = 0,  /* host pointers, CPU implementation */
    SAGEATTN_DEVICE_CUDA = 1  /* device pointers of CUDA device `device_index` */
} sageattn_device_type;

typedef enum sageattn_algorithm {
    SAGEATTN_ALGORITHM_QUANTIZED = 0, /* docs/ALGORITHM.md: INT8 Q·Kᵀ, FP8/FP16 P·V */
    SAGEATTN_ALGORITHM_EXACT = 1      /* float64 throughout (CPU only): the reference */
} sageattn_algorithm;

/* Q/K quantization groups (docs/ALGORITHM.md §3). */
typedef enum sageattn_qk_granularity {
    SAGEATTN_QK_PER_THREAD = 0, /* default: 8 Q scales per 32 rows, 4 K scales per 64 keys */
    SAGEATTN_QK_PER_WARP = 1,   /* 1 Q scale per 32 rows, 1 K scale per 64 keys */
    SAGEATTN_QK_PER_BLOCK = 2   /* 1 Q scale per 128 rows, 1 K scale per 64 keys */
} sageattn_qk_granularity;

/* Precision of Q·Kᵀ (docs/ALGORITHM.md §5). */
typedef enum sageattn_qk_precision {
    SAGEATTN_QK_AUTO = 0, /* default: INT8, except heads the sharpness rule flags: 16-bit */
    SAGEATTN_QK_INT8 = 1, /* INT8 for every head (the reference SageAttention behaviour) */
    SAGEATTN_QK_INPUT = 2 /* the input dtype (fp16/bf16) with fp32 accumulation */
} sageattn_qk_precision;

typedef enum sageattn_pv_precision {
    SAGEATTN_PV_AUTO = 0, /* the fastest accurate choice for the device (CPU: FP8) */
    SAGEATTN_PV_FP8 = 1,  /* P and V in FP8 E4M3, V scaled per channel */
    SAGEATTN_PV_FP16 = 2  /* P and V in FP16 */
} sageattn_pv_precision;

/* Accumulation of P·V: "inner" is the tensor-core accumulator over one KV block,
 * "outer" the running output. Names follow the reference `pv_accum_dtype`. */
typedef enum sageattn_pv_accum {
    SAGEATTN_ACCUM_AUTO = 0,      /* FP8: fp32+fp32; FP16: fp32 */
    SAGEATTN_ACCUM_FP32 = 1,      /* "fp32":      one fp32 accumulator */
    SAGEATTN_ACCUM_FP32_FP32 = 2, /* "fp32+fp32": fp32 per block, added into fp32 (FP8 only) */
    SAGEATTN_ACCUM_FP32_FP16 = 3, /* "fp32+fp16": fp16 per block, added into fp32 (FP8 only) */
    SAGEATTN_ACCUM_FP16_FP32 = 4  /* "fp16+fp32": fp16 per block, added into fp32 (FP16 only) */
    /* No whole-sequence fp16 accumulator: it overflows once a row's softmax
     * sum passes ~128 keys of large V. The reference's "fp16" maps to FP16_FP32. */
} sageattn_pv_accum;

typedef enum sageattn_mask_type {
    SAGEATTN_MASK_NONE = 0,
    SAGEATTN_MASK_BOOL = 1,    /* uint8/bool elements, nonzero = attend */
    SAGEATTN_MASK_ADDITIVE = 2 /* added to scale·q·k; -inf excludes a key */
} sageattn_mask_type;

/* A [batch, heads, tokens, head_dim] view with a contiguous last dimension.
 * Strides are in elements and must be >= 0. For varlen problems tokens are
 * packed: token t of sequence b is row cu_seqlens[b] + t, batch_stride unused. */
typedef struct sageattn_tensor {
    void* data;
    int64_t batch_stride;
    int64_t head_stride;
    int64_t token_stride;
} sageattn_tensor;

/* An attention mask broadcast to [batch, heads_q, len_q, len_kv] through its
 * strides (in elements; 0 broadcasts). For varlen problems indices are the
 * positions inside each sequence and batch indexes the sequence. */
typedef struct sageattn_mask {
    int32_t type;  /* sageattn_mask_type */
    int32_t dtype; /* ADDITIVE: FP16, BF16 or FP32; BOOL: ignored */
    const void* data;
    int64_t batch_stride;
    int64_t head_stride;
    int64_t q_stride;
    int64_t kv_stride;
} sageattn_mask;

typedef struct sageattn_problem {
    uint32_t struct_size; /* sizeof(sageattn_problem) of the caller */
    uint32_t abi_version; /* SAGEATTN_ABI_VERSION of the caller */

    int32_t device_type;  /* sageattn_device_type */
    int32_t device_index; /* CUDA ordinal; ignored for the CPU */
    int32_t dtype;        /* sageattn_dtype of q, k, v and out */
    int32_t algorithm;    /* sageattn_algorithm */

    int64_t batch;
    int64_t heads_q;
    int64_t heads_kv; /* heads_q % heads_kv == 0: MHA, GQA, MQA */
    int64_t len_q;    /* varlen: total packed query tokens */
    int64_t len_kv;   /* varlen: total packed key tokens */
    int64_t head_dim; /* 1..SAGEATTN_MAX_HEAD_DIM */

    sageattn_tensor q, k, v, out;

    /* Variable length: both or neither. batch+1 int32 prefix sums on the
     * problem's device, starting at 0, non-decreasing, ending <= len_q/len_kv.
     * The CPU checks them. On CUDA they stay on the device: the kernels clamp
     * sequence b to rows [s, s + len), s = clamp(cu[b], 0, len_q/len_kv),
     * len <= max_len, inside the tensor, so that no offset reads or writes out
     * of bounds (inconsistent offsets then give the clamped sequences' answer);
     * check_seqlens (below) turns them into an error instead. */
    const int32_t* cu_seqlens_q;
    const int32_t* cu_seqlens_kv;
    int64_t max_len_q; /* >= every sequence's length */
    int64_t max_len_kv;

    int32_t causal; /* bottom-right aligned: query i sees keys j <= i + len_kv - len_q */
    float scale;    /* 0 = 1/sqrt(head_dim); otherwise any finite value */

    sageattn_mask mask;

    /* Optional log-sum-exp of each row in natural log (float32), -inf for a row
     * that sees no key. Indexed like q (batch, head, token) by these strides. */
    float* lse;
    int64_t lse_batch_stride;
    int64_t lse_head_stride;
    int64_t lse_token_stride;

    /* Quantization (docs/ALGORITHM.md). Ignored by SAGEATTN_ALGORITHM_EXACT. */
    int32_t qk_granularity;   /* sageattn_qk_granularity */
    int32_t qk_precision;     /* sageattn_qk_precision */
    float qk_sharp_threshold; /* §5's threshold; 0 = the default */
    int32_t pv_precision;     /* sageattn_pv_precision */
    int32_t pv_accum;         /* sageattn_pv_accum */
    int32_t smooth_k;         /* subtract K's per-channel mean (default 1) */
    int32_t smooth_v;         /* subtract V's per-channel mean, add it back (default 0) */

    int32_t num_threads; /* CPU device: worker threads, 0 = all hardware threads */

    /* Fields appended after the first published layout (ABI 1): a caller whose
     * struct_size ends before one gets its default. */

    /* CUDA varlen problems: 1 = sageattn_forward checks cu_seqlens on the device
     * first (one small kernel, then it waits for the stream to read the result
     * back: a synchronisation) and fails with SAGEATTN_ERROR_INVALID_SEQLENS as
     * the CPU does; refused (SAGEATTN_ERROR_UNSUPPORTED) while the stream is
     * being captured into a CUDA graph. 0 (default): clamped, as above. The CPU
     * always checks. */
    int32_t check_seqlens;
} sageattn_problem;

/* Which backends and kernels this build has. */
enum {
    SAGEATTN_BACKEND_CPU = 1u << 0,
    SAGEATTN_BACKEND_CUDA = 1u << 1
};

typedef struct sageattn_build_info {
    uint32_t struct_size;
    uint32_t abi_version;          /* filled by the library */
    const char* version;           /* "X.Y.Z" */
    uint32_t backends;             /* SAGEATTN_BACKEND_* bits */
    int32_t cuda_runtime_version;  /* e.g. 13000; 0 without CUDA */
    int32_t num_cuda_archs;
    int32_t cuda_archs[32];        /* compiled SM targets, e.g. 80, 89, 90 */
    int32_t max_head_dim;
    uint32_t pv_precisions;        /* bit (1 << sageattn_pv_precision) for each supported */
    uint32_t qk_granularities;     /* bit (1 << sageattn_qk_granularity) for each supported */
    const char* kernel_families;   /* comma separated, e.g. "cpu" */
} sageattn_build_info;

/* Fills defaults: sizes and versions, device CPU, algorithm QUANTIZED, scale 0
 * (1/sqrt(head_dim)), per-thread QK, AUTO precisions, smooth_k on. */
SAGEATTN_API void sageattn_problem_init(sageattn_problem* problem);
SAGEATTN_API void sageattn_build_info_init(sageattn_build_info* info);

SAGEATTN_API int32_t sageattn_abi_version(void);
SAGEATTN_API const char* sageattn_version(void);
SAGEATTN_API sageattn_status sageattn_get_build_info(sageattn_build_info* info);

/* Validates the problem and whether this build can run it; touches no data
 * except, on the CPU, cu_seqlens. */
SAGEATTN_API sageattn_status sageattn_check(const sageattn_problem* problem);
/* Validates the problem as sageattn_check does and writes the workspace bytes
 * it needs (0 on failure). The size depends on the device, dtype, sizes,
 * algorithm and options only, never on data pointers, strides, the mask, lse,
 * causal, scale or num_threads, so a caller may keep it per shape and make one
 * call, sageattn_forward, per attention (which checks the size it is given).
 * One exception: on the CPU a varlen problem's size follows its packed key
 * count, cu_seqlens_kv[batch]. */
SAGEATTN_API sageattn_status sageattn_workspace_size(const sageattn_problem* problem, size_t* bytes);
/* Runs the problem. `workspace` lives on the problem's device, is at least
 * sageattn_workspace_size() bytes and aligned to 256 bytes on CUDA, 64 on the
 * CPU (NULL when 0 bytes).
 * `stream` is a cudaStream_t for CUDA problems (NULL = the legacy default
 * stream) and ignored on the CPU, where the call returns when done. */
SAGEATTN_API sageattn_status sageattn_forward(const sageattn_problem* problem, void* workspace,
                                              size_t workspace_bytes, void* stream);

/* A plan: a problem checked and prepared once (defaults and AUTO options resolved,
 * kernels chosen, workspace laid out), then run on the data of many calls that share
 * everything but their data pointers. Each run checks only what depends on the data:
 * the pointers' alignment and the views' extents (and, on the CPU, cu_seqlens). */
typedef struct sageattn_plan sageattn_plan;

/* A run's data: the problem's pointers, each NULL exactly where the plan's problem had
 * NULL (mask.data, lse, cu_seqlens_*); the problem's other fields come from the plan. */
typedef struct sageattn_data {
    const void* q;
    const void* k;
    const void* v;
    void* out;
    const void* mask;
    float* lse;
    const int32_t* cu_seqlens_q;
    const int32_t* cu_seqlens_kv;
} sageattn_data;

/* Validates the problem as sageattn_check does (its data pointers included) and
 * writes a new plan to *plan (NULL on failure); sageattn_plan_destroy frees it. A plan
 * may run on several threads at once. */
SAGEATTN_API sageattn_status sageattn_plan_create(const sageattn_problem* problem, sageattn_plan** plan);
/* The workspace bytes a run on `data` needs: the plan's, except on the CPU for a
 * varlen problem, where it follows cu_seqlens_kv[batch] (see sageattn_workspace_size). */
SAGEATTN_API sageattn_status sageattn_plan_workspace_size(const sageattn_plan* plan, const sageattn_data* data,
                                                          size_t* bytes);
/* Runs the plan's problem on `data`, as sageattn_forward runs the problem with those
 * pointers; the workspace and stream are as there. */
SAGEATTN_API sageattn_status sageattn_plan_forward(const sageattn_plan* plan, const sageattn_data* data,
                                                   void* workspace, size_t workspace_bytes, void* stream);
SAGEATTN_API void sageattn_plan_destroy(sageattn_plan* plan);

/* "SAGEATTN_ERROR_INVALID_HEAD_DIM", and a sentence saying what it means. */
SAGEATTN_API const char* sageattn_status_name(sageattn_status status);
SAGEATTN_API const char* sageattn_status_string(sageattn_status status);
/* The message of the last failing call on this thread, naming the argument
 * and its value; "" after a success. Valid until the next call on the thread. */
SAGEATTN_API const char* sageattn_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SAGEATTN_SAGEATTN_H */
