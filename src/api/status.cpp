#include <cstdarg>
#include <cstdio>

#include "api/error.hpp"

namespace sageattn::api {
namespace {
thread_local char g_message[1024] = "";
}

sageattn_status fail(sageattn_status status, const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::vsnprintf(g_message, sizeof g_message, format, args);
    va_end(args);
    return status;
}

void clear_error() { g_message[0] = '\0'; }

}  // namespace sageattn::api

extern "C" {

const char* sageattn_last_error(void) { return sageattn::api::g_message; }

const char* sageattn_status_name(sageattn_status status) {
    switch (status) {
        case SAGEATTN_SUCCESS: return "SAGEATTN_SUCCESS";
        case SAGEATTN_ERROR_NULL_POINTER: return "SAGEATTN_ERROR_NULL_POINTER";
        case SAGEATTN_ERROR_ABI_MISMATCH: return "SAGEATTN_ERROR_ABI_MISMATCH";
        case SAGEATTN_ERROR_INVALID_DTYPE: return "SAGEATTN_ERROR_INVALID_DTYPE";
        case SAGEATTN_ERROR_INVALID_SHAPE: return "SAGEATTN_ERROR_INVALID_SHAPE";
        case SAGEATTN_ERROR_INVALID_HEAD_DIM: return "SAGEATTN_ERROR_INVALID_HEAD_DIM";
        case SAGEATTN_ERROR_INVALID_HEADS: return "SAGEATTN_ERROR_INVALID_HEADS";
        case SAGEATTN_ERROR_INVALID_STRIDE: return "SAGEATTN_ERROR_INVALID_STRIDE";
        case SAGEATTN_ERROR_OVERFLOW: return "SAGEATTN_ERROR_OVERFLOW";
        case SAGEATTN_ERROR_MISALIGNED: return "SAGEATTN_ERROR_MISALIGNED";
        case SAGEATTN_ERROR_INVALID_SEQLENS: return "SAGEATTN_ERROR_INVALID_SEQLENS";
        case SAGEATTN_ERROR_INVALID_MASK: return "SAGEATTN_ERROR_INVALID_MASK";
        case SAGEATTN_ERROR_INVALID_OPTION: return "SAGEATTN_ERROR_INVALID_OPTION";
        case SAGEATTN_ERROR_INVALID_SCALE: return "SAGEATTN_ERROR_INVALID_SCALE";
        case SAGEATTN_ERROR_WORKSPACE_TOO_SMALL: return "SAGEATTN_ERROR_WORKSPACE_TOO_SMALL";
        case SAGEATTN_ERROR_UNSUPPORTED: return "SAGEATTN_ERROR_UNSUPPORTED";
        case SAGEATTN_ERROR_DEVICE: return "SAGEATTN_ERROR_DEVICE";
        case SAGEATTN_ERROR_OUT_OF_MEMORY: return "SAGEATTN_ERROR_OUT_OF_MEMORY";
        case SAGEATTN_ERROR_INTERNAL: return "SAGEATTN_ERROR_INTERNAL";
    }
    return "SAGEATTN_ERROR_UNKNOWN";
}

const char* sageattn_status_string(sageattn_status status) {
    switch (status) {
        case SAGEATTN_SUCCESS: return "success";
        case SAGEATTN_ERROR_NULL_POINTER: return "a required pointer is NULL";
        case SAGEATTN_ERROR_ABI_MISMATCH: return "the struct size or ABI version is not one this library understands";
        case SAGEATTN_ERROR_INVALID_DTYPE: return "unsupported data type";
        case SAGEATTN_ERROR_INVALID_SHAPE: return "batch or sequence length out of range";
        case SAGEATTN_ERROR_INVALID_HEAD_DIM: return "head_dim must be in 1..256";
        case SAGEATTN_ERROR_INVALID_HEADS: return "head counts must be >= 1 and heads_q divisible by heads_kv";
        case SAGEATTN_ERROR_INVALID_STRIDE: return "a stride is negative or makes the output overlap itself";
        case SAGEATTN_ERROR_OVERFLOW: return "a tensor extent does not fit in 64-bit addressing";
        case SAGEATTN_ERROR_MISALIGNED: return "a pointer is not aligned to its element size";
        case SAGEATTN_ERROR_INVALID_SEQLENS: return "cu_seqlens or max_len is not valid";
        case SAGEATTN_ERROR_INVALID_MASK: return "the attention mask type, dtype or strides are not valid";
        case SAGEATTN_ERROR_INVALID_OPTION: return "an algorithm or quantization option is not valid";
        case SAGEATTN_ERROR_INVALID_SCALE: return "the softmax scale must be finite";
        case SAGEATTN_ERROR_WORKSPACE_TOO_SMALL: return "the workspace is smaller than sageattn_workspace_size()";
        case SAGEATTN_ERROR_UNSUPPORTED: return "valid, but this build or device cannot run it";
        case SAGEATTN_ERROR_DEVICE: return "the CUDA driver or runtime reported an error";
        case SAGEATTN_ERROR_OUT_OF_MEMORY: return "out of memory";
        case SAGEATTN_ERROR_INTERNAL: return "internal error (a bug: please report it)";
    }
    return "unknown status code";
}

}  // extern "C"
