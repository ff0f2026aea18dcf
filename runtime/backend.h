/*
 * backend.h — the device abstraction: `{const sl_backend_iface *iface; void *ctx}`.
 *
 * A backend owns memory on its device and runs the model's operations there. The model (models/) builds a
 * forward pass out of these calls and never knows which device runs them; the CPU backend is always built,
 * the CUDA backend when the toolkit is found (runtime/backend_cuda.c). Optional entries may be NULL.
 *
 * Calls are thin dispatchers (sl_backend_*() below): the one place to check arguments, count, and inject
 * faults (SLUICE_FAULT_INJECT=<op>:<n> makes the n-th call of <op> fail with SL_DEVICE, so the failure path of
 * a replica is tested on machines without a GPU).
 *
 * Shapes: activations are row-major f32 matrices [n_rows][dim] in device memory. A weight is 2-D,
 * [n_out][n_in] in its storage type (GGUF's ne0 = n_in is the row length), as sl_weight describes.
 */
#ifndef SL_BACKEND_H
#define SL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "kdtype.h"
#include "sluice/sluice.h"

typedef struct sl_weight {
    const void *data; /* device pointer: [n_out] rows of row_bytes, in `type` */
    int type;         /* sl_dtype */
    int n_in;         /* row length */
    int n_out;        /* rows */
    size_t row_bytes;
} sl_weight;

/* Attention over the paged KV cache for a batch of query rows (one token each). */
typedef struct sl_attn_args {
    const void *k_pool;                 /* [n_slots][n_head_kv][head_dim] in kv_type */
    const void *v_pool;                 /* same */
    int kv_type;                        /* SL_DTYPE_F32 or SL_DTYPE_F16 */
    int n_head, n_head_kv, head_dim;
    int block_size;
    float scale;                        /* 1 / sqrt(head_dim) */
    const int32_t *const *block_tables; /* [n_seqs] → block ids of each sequence */
    const int32_t *row_seq;             /* [n_rows] sequence of each query row */
    const int32_t *row_n_ctx;           /* [n_rows] tokens the row attends to (its position + 1) */
} sl_attn_args;

typedef struct sl_backend_iface {
    const char *name;
    void (*free)(void *ctx);
    /* Memory. alloc may hand out lazily-touched memory (the CPU backend maps large blocks). */
    sl_status (*alloc)(void *ctx, size_t bytes, void **out);
    void (*buf_free)(void *ctx, void *ptr, size_t bytes);
    sl_status (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host → device */
    sl_status (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* device → host */
    sl_status (*synchronize)(void *ctx);
    /* Whether weights can stay where the loader mapped them (host memory), so no upload is needed. */
    int weights_in_host_memory;

    /* y[n_rows][w->n_out] = x[n_rows][w->n_in] · Wᵀ */
    sl_status (*matmul)(void *ctx, const sl_weight *w, const float *x, int n_rows, float *y);
    /* out[i] = row ids[i] of w, as f32 (the embedding lookup) */
    sl_status (*get_rows)(void *ctx, const sl_weight *w, const int32_t *ids, int n, float *out);
    /* y[r] = rmsnorm(x[r]) * weight, for r < n_rows (y may alias x) */
    sl_status (*rms_norm)(void *ctx, const float *x, const float *weight, float *y, int n_rows, int dim, float eps);
    /* In place on x[n_rows][n_heads][head_dim], row r at position pos[r]. */
    sl_status (*rope)(void *ctx, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim, int n_rot,
                      float freq_base, float freq_scale);
    /* out[r] = silu(gate[r]) * up[r]: gate and up are [n_rows][n], out [n_rows][n] (may alias gate) */
    sl_status (*swiglu)(void *ctx, const float *gate, const float *up, float *out, int n_rows, int n);
    /* y += x over n elements */
    sl_status (*add)(void *ctx, float *y, const float *x, size_t n);
    /* Writes k[r], v[r] ([n_head_kv][head_dim] f32 each) into slot slots[r] of the pools. */
    sl_status (*kv_store)(void *ctx, void *k_pool, void *v_pool, int kv_type, const float *k, const float *v,
                          const int64_t *slots, int n_rows, int n_head_kv, int head_dim);
    /* out[r] = attention of q[r] ([n_head][head_dim]) over its sequence's first row_n_ctx[r] tokens */
    sl_status (*attention)(void *ctx, const float *q, float *out, int n_rows, const sl_attn_args *a);
} sl_backend_iface;

typedef struct sl_backend {
    const sl_backend_iface *iface;
    void *ctx;
} sl_backend;

typedef struct sl_backend_cpu_params {
    int n_threads;         /* 0 = all cores */
    sl_precision precision;
    int max_ctx;           /* longest attention context (tokens), sizes per-thread scratch */
} sl_backend_cpu_params;

sl_status sl_backend_cpu_create(const sl_backend_cpu_params *p, sl_backend *out);
/* Number of CUDA devices usable now (0 without a GPU, a driver, or CUDA support in this build). */
int sl_backend_cuda_device_count(void);

void sl_backend_free(sl_backend *b);

/* Dispatchers: check, count, inject faults, then call the backend. */
sl_status sl_backend_alloc(sl_backend *b, size_t bytes, void **out);
void sl_backend_buf_free(sl_backend *b, void *ptr, size_t bytes);
sl_status sl_backend_matmul(sl_backend *b, const sl_weight *w, const float *x, int n_rows, float *y);
sl_status sl_backend_get_rows(sl_backend *b, const sl_weight *w, const int32_t *ids, int n, float *out);
sl_status sl_backend_rms_norm(sl_backend *b, const float *x, const float *weight, float *y, int n_rows, int dim,
                              float eps);
sl_status sl_backend_rope(sl_backend *b, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim,
                          int n_rot, float freq_base, float freq_scale);
sl_status sl_backend_swiglu(sl_backend *b, const float *gate, const float *up, float *out, int n_rows, int n);
sl_status sl_backend_add(sl_backend *b, float *y, const float *x, size_t n);
sl_status sl_backend_kv_store(sl_backend *b, void *k_pool, void *v_pool, int kv_type, const float *k,
                              const float *v, const int64_t *slots, int n_rows, int n_head_kv, int head_dim);
sl_status sl_backend_attention(sl_backend *b, const float *q, float *out, int n_rows, const sl_attn_args *a);
sl_status sl_backend_synchronize(sl_backend *b);

#endif /* SL_BACKEND_H */
