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
 * [n_out][n_in] in its storage type (GGUF's ne0 = n_in is the row length), as sl_weight describes; its rows
 * are row_bytes apart, which may exceed what n_in needs (a tensor-parallel rank's slice of a row-parallel
 * weight points into the full rows).
 *
 * Index arrays (token ids, positions, KV slots, and attention's row_seq / row_n_ctx / block tables) are HOST
 * memory: the host builds them every step, and they are small. The model passes them to begin_step() once per
 * forward before any operation; every later call of that forward passes those same host pointers, so a device
 * backend copies them over once per step and maps each pointer to its device copy.
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
    size_t row_bytes;  /* of the rows as the file stores them */
    int packed;        /* the backend repacked it for its products (CPU: sl_k_pack_q's layout; rows are then
                        * not row_bytes apart, get_rows unpacks) */
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

/* The index arrays of one forward (host memory), given to begin_step. */
typedef struct sl_step_index {
    int n_rows;
    const int32_t *tokens;              /* [n_rows] */
    const int32_t *pos;                 /* [n_rows] */
    const int64_t *slots;               /* [n_rows] */
    const int32_t *row_seq;             /* [n_rows] */
    const int32_t *row_n_ctx;           /* [n_rows] */
    int n_seqs;
    const int32_t *const *block_tables; /* [n_seqs], each long enough for its rows' row_n_ctx */
    int block_size;
} sl_step_index;

typedef struct sl_backend_iface {
    const char *name;
    void (*free)(void *ctx);
    /* Memory. alloc may hand out lazily-touched memory (the CPU backend maps large blocks). */
    sl_status (*alloc)(void *ctx, size_t bytes, void **out);
    void (*buf_free)(void *ctx, void *ptr, size_t bytes);
    sl_status (*upload)(void *ctx, void *dst, const void *src, size_t bytes);   /* host → device */
    sl_status (*download)(void *ctx, void *dst, const void *src, size_t bytes); /* device → host */
    sl_status (*synchronize)(void *ctx);
    /* 1: the backend's memory is host memory (the CPU): the model may read and write the backend's buffers
     * directly (no upload, download or copy needed), and weights can stay where the loader mapped them. */
    int weights_in_host_memory;
    /* dst = src, both device memory */
    sl_status (*copy)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Optional (NULL: a host-memory backend uses the file's weights as they are). Places a weight read from
     * the file (host memory) on the device, or repacks it: *dev describes the backend's copy, whose type may
     * differ (a backend may convert, e.g. dequantize to f16 for its GEMMs). Released with weight_free (which
     * leaves a weight that is the file's own alone). */
    sl_status (*upload_weight)(void *ctx, const sl_weight *host, sl_weight *dev);
    void (*weight_free)(void *ctx, sl_weight *dev);
    /* Optional: the step's index arrays, before any operation of a forward (see the top of this file). */
    sl_status (*begin_step)(void *ctx, const sl_step_index *ix);
    /* Optional: runs fn(arg, ith, nth) for ith < nth on the backend's host compute threads (the CPU backend's
     * pool), for host work between steps (sampling). NULL: the caller runs it alone (nth = 1). */
    void (*parallel_for)(void *ctx, void (*fn)(void *arg, int ith, int nth), void *arg);
    int (*host_threads)(void *ctx);
    /* Optional: the device's free and total memory now, bytes (NULL for host memory: no device budget). */
    sl_status (*mem_info)(void *ctx, size_t *free_bytes, size_t *total_bytes);

    /* y[n_rows][w->n_out] = x[n_rows][w->n_in] · Wᵀ */
    sl_status (*matmul)(void *ctx, const sl_weight *w, const float *x, int n_rows, float *y);
    /* Optional: ys[i] = x · ws[i]ᵀ for i < n, the weights sharing n_in (Q, K and V; gate and up). One pass
     * over x (the fast mode quantizes it once) and one dispatch. NULL: n matmul calls. */
    sl_status (*matmul_multi)(void *ctx, int n, const sl_weight *const *ws, const float *x, int n_rows,
                              float *const *ys);
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

typedef struct sl_backend_cuda_params {
    int device;            /* CUDA ordinal */
    sl_precision precision;
    int max_ctx;           /* longest attention context (tokens) */
} sl_backend_cuda_params;

/* A backend on one CUDA device (runtime/backend_cuda.c); SL_UNSUPPORTED in a build without CUDA, SL_DEVICE
 * when the device cannot be used. */
sl_status sl_backend_cuda_create(const sl_backend_cuda_params *p, sl_backend *out);
/* A CUDA backend's stream (a cudaStream_t) and device ordinal, for the communicators and benchmarks that work on
 * its stream; NULL / -1 for any other backend. Defined in CUDA builds only. */
void *sl__backend_cuda_stream(const sl_backend *b);
int sl__backend_cuda_device(const sl_backend *b);
/* Tags the calling thread for fault injection: SLUICE_FAULT_INJECT=<op>:<n>@<tag> counts only calls made from
 * threads tagged <tag> (the engine tags each replica's thread with the replica index). -1: untagged. */
void sl_backend_fault_tag_set(int tag);
/* The calling thread's tag (-1 if none): threads working for a replica (tensor-parallel ranks) take it over. */
int sl_backend_fault_tag_get(void);

void sl_backend_free(sl_backend *b);

/* Dispatchers: check, count, inject faults, then call the backend. */
sl_status sl_backend_alloc(sl_backend *b, size_t bytes, void **out);
void sl_backend_buf_free(sl_backend *b, void *ptr, size_t bytes);
sl_status sl_backend_copy(sl_backend *b, void *dst, const void *src, size_t bytes);
sl_status sl_backend_upload(sl_backend *b, void *dst, const void *src, size_t bytes);
sl_status sl_backend_download(sl_backend *b, void *dst, const void *src, size_t bytes);
/* A file's weight (host memory) made usable by the backend: the file's rows unchanged (a host-memory backend
 * without upload_weight), a repacked copy (the CPU in the fast precision), or a device copy; release with
 * sl_backend_weight_free (which leaves the file's own rows alone). */
sl_status sl_backend_upload_weight(sl_backend *b, const sl_weight *host, sl_weight *dev);
void sl_backend_weight_free(sl_backend *b, sl_weight *dev);
sl_status sl_backend_begin_step(sl_backend *b, const sl_step_index *ix);
/* The backend's host threads for host work (1 without parallel_for), and running fn on them. */
int sl_backend_host_threads(const sl_backend *b);
void sl_backend_parallel_for(sl_backend *b, void (*fn)(void *arg, int ith, int nth), void *arg);
/* Free and total device memory; SL_UNSUPPORTED for a backend on host memory. */
sl_status sl_backend_mem_info(sl_backend *b, size_t *free_bytes, size_t *total_bytes);
sl_status sl_backend_matmul(sl_backend *b, const sl_weight *w, const float *x, int n_rows, float *y);
sl_status sl_backend_matmul_multi(sl_backend *b, int n, const sl_weight *const *ws, const float *x, int n_rows,
                                  float *const *ys);
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
