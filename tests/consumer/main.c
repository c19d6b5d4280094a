/* Plain C against the installed sageattn: V constant along the sequence makes
 * every output row equal that constant, whatever the softmax weights are. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sageattn/sageattn.h>

static uint16_t bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16); /* exact for the values used here */
}
static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

int main(void) {
    enum { H = 2, N = 100, D = 64 };
    static uint16_t q[H * N * D], k[H * N * D], v[H * N * D], out[H * N * D];
    for (int i = 0; i < H * N * D; ++i) {
        q[i] = bf16((float)((i * 7) % 13) / 8.0f - 0.75f);
        k[i] = bf16((float)((i * 5) % 11) / 8.0f - 0.625f);
        v[i] = bf16((float)(i % D) / 8.0f);
        out[i] = 0x7fc1; /* NaN poison */
    }
    sageattn_build_info info;
    sageattn_build_info_init(&info);
    if (sageattn_get_build_info(&info) != SAGEATTN_SUCCESS) return 1;
    printf("sageattn %s, ABI %d, kernels: %s\n", info.version, sageattn_abi_version(), info.kernel_families);

    sageattn_problem p;
    sageattn_problem_init(&p);
    p.dtype = SAGEATTN_DTYPE_BF16;
    p.batch = 1, p.heads_q = H, p.heads_kv = H, p.len_q = N, p.len_kv = N, p.head_dim = D;
    sageattn_tensor t = {NULL, H * N * D, N * D, D};
    t.data = q, p.q = t;
    t.data = k, p.k = t;
    t.data = v, p.v = t;
    t.data = out, p.out = t;
    p.causal = 1;
    size_t bytes = 0;
    if (sageattn_workspace_size(&p, &bytes) != SAGEATTN_SUCCESS) {
        fprintf(stderr, "%s\n", sageattn_last_error());
        return 1;
    }
    /* A 256-byte aligned workspace from plain malloc (posix_memalign is not on
     * Windows, C11 aligned_alloc not in MSVC's C library). */
    void* block = NULL;
    void* ws = NULL;
    if (bytes) {
        if (!(block = malloc(bytes + 255))) return 1;
        ws = (void*)(((uintptr_t)block + 255) & ~(uintptr_t)255);
    }
    if (sageattn_forward(&p, ws, bytes, NULL) != SAGEATTN_SUCCESS) {
        fprintf(stderr, "sageattn_forward: %s\n", sageattn_last_error());
        return 1;
    }
    /* The same problem as a plan (checked and prepared once), run on the same inputs into
     * another output: the same bytes. */
    static uint16_t again[H * N * D];
    sageattn_plan* plan = NULL;
    const sageattn_data data = {q, k, v, again, NULL, NULL, NULL, NULL};
    if (sageattn_plan_create(&p, &plan) != SAGEATTN_SUCCESS ||
        sageattn_plan_forward(plan, &data, ws, bytes, NULL) != SAGEATTN_SUCCESS) {
        fprintf(stderr, "sageattn_plan: %s\n", sageattn_last_error());
        return 1;
    }
    sageattn_plan_destroy(plan);
    if (memcmp(out, again, sizeof out) != 0) {
        fprintf(stderr, "consumer: the plan's output differs from sageattn_forward's\n");
        return 1;
    }
    free(block);
    double worst = 0;
    for (int i = 0; i < H * N * D; ++i) {
        const double err = fabs(from_bf16(out[i]) - (double)(i % D) / 8.0);
        if (!(err <= worst)) worst = err; /* NaN propagates into worst */
    }
    printf("consumer: max |out - v| = %g\n", worst);
    /* Bad input: a message, not an abort. */
    p.head_dim = 0;
    if (sageattn_check(&p) != SAGEATTN_ERROR_INVALID_HEAD_DIM) return 1;
    printf("consumer: head_dim 0 -> %s: %s\n", sageattn_status_name(SAGEATTN_ERROR_INVALID_HEAD_DIM), sageattn_last_error());
    return worst <= 0.1 ? 0 : 1;
}
