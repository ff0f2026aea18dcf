/*
 * backend.c — the dispatchers in front of every backend entry (see backend.h): argument checks, fault
 * injection for tests of the failure path, then the call.
 *
 * SLUICE_FAULT_INJECT="<op>:<n>" (op = matmul, attention, alloc, ...) makes the n-th call of that op
 * (1-based, counted per process) return SL_DEVICE, as a real device error would. "<op>:<n>@<tag>" counts
 * only the calls made from threads whose fault tag is <tag> (sl_backend_fault_tag_set; the engine tags each
 * replica's thread with the replica's index), so one chosen replica fails while the others go on.
 */
#include "backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "sl_util.h"

static char sl__fault_op[32];
static long sl__fault_at = -1;
static int sl__fault_want_tag = -1; /* -1: calls from every thread count */
static _Atomic long sl__fault_count;
static pthread_once_t sl__fault_once = PTHREAD_ONCE_INIT;
/* The calling thread's fault tag (a replica index), -1 until sl_backend_fault_tag_set. Per thread rather than
 * per backend: the backend is made inside models/, the replica's thread is what the engine owns. */
static _Thread_local int sl__fault_tag = -1;

void sl_backend_fault_tag_set(int tag) { sl__fault_tag = tag; }

int sl_backend_fault_tag_get(void) { return sl__fault_tag; }

static void sl__fault_init(void) {
    const char *s = getenv("SLUICE_FAULT_INJECT");
    if (!s) return;
    const char *colon = strchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof sl__fault_op) return;
    memcpy(sl__fault_op, s, (size_t)(colon - s));
    sl__fault_op[colon - s] = 0;
    char *end = NULL;
    sl__fault_at = strtol(colon + 1, &end, 10);
    if (end && *end == '@') sl__fault_want_tag = (int)strtol(end + 1, NULL, 10);
}

static sl_status sl__fault(const char *op) {
    pthread_once(&sl__fault_once, sl__fault_init);
    if (sl__fault_at < 0 || strcmp(op, sl__fault_op) != 0) return SL_OK;
    if (sl__fault_want_tag >= 0 && sl__fault_tag != sl__fault_want_tag) return SL_OK;
    if (atomic_fetch_add(&sl__fault_count, 1) + 1 == sl__fault_at)
        return sl__errorf(SL_DEVICE, "%s: injected device fault (SLUICE_FAULT_INJECT)", op);
    return SL_OK;
}

#define SL__DISPATCH(op, ...)                                                                               \
    do {                                                                                                    \
        sl_status st_ = sl__fault(#op);                                                                     \
        if (st_ != SL_OK) return st_;                                                                       \
        SL_ASSERT(b->iface->op != NULL);                                                                    \
        return b->iface->op(b->ctx, __VA_ARGS__);                                                           \
    } while (0)

void sl_backend_free(sl_backend *b) {
    if (b && b->iface && b->iface->free) b->iface->free(b->ctx);
    if (b) {
        b->iface = NULL;
        b->ctx = NULL;
    }
}

sl_status sl_backend_alloc(sl_backend *b, size_t bytes, void **out) { SL__DISPATCH(alloc, bytes, out); }

void sl_backend_buf_free(sl_backend *b, void *ptr, size_t bytes) {
    if (ptr) b->iface->buf_free(b->ctx, ptr, bytes);
}

sl_status sl_backend_copy(sl_backend *b, void *dst, const void *src, size_t bytes) {
    SL__DISPATCH(copy, dst, src, bytes);
}

sl_status sl_backend_upload(sl_backend *b, void *dst, const void *src, size_t bytes) {
    SL__DISPATCH(upload, dst, src, bytes);
}

sl_status sl_backend_download(sl_backend *b, void *dst, const void *src, size_t bytes) {
    SL__DISPATCH(download, dst, src, bytes);
}

sl_status sl_backend_upload_weight(sl_backend *b, const sl_weight *host, sl_weight *dev) {
    if (!b->iface->upload_weight) {
        if (!b->iface->weights_in_host_memory)
            return sl__errorf(SL_UNSUPPORTED, "backend %s cannot place weights", b->iface->name);
        *dev = *host;
        return SL_OK;
    }
    SL__DISPATCH(upload_weight, host, dev);
}

void sl_backend_weight_free(sl_backend *b, sl_weight *dev) {
    if (b->iface->weight_free && dev->data) b->iface->weight_free(b->ctx, dev);
    dev->data = NULL;
}

sl_status sl_backend_begin_step(sl_backend *b, const sl_step_index *ix) {
    if (!b->iface->begin_step) return SL_OK;
    SL__DISPATCH(begin_step, ix);
}

sl_status sl_backend_mem_info(sl_backend *b, size_t *free_bytes, size_t *total_bytes) {
    if (!b->iface || !b->iface->mem_info) return sl__errorf(SL_UNSUPPORTED, "backend has no device memory");
    return b->iface->mem_info(b->ctx, free_bytes, total_bytes);
}

int sl_backend_host_threads(const sl_backend *b) {
    return b->iface && b->iface->parallel_for && b->iface->host_threads ? b->iface->host_threads(b->ctx) : 1;
}

void sl_backend_parallel_for(sl_backend *b, void (*fn)(void *arg, int ith, int nth), void *arg) {
    if (b->iface && b->iface->parallel_for && b->iface->host_threads)
        b->iface->parallel_for(b->ctx, fn, arg);
    else
        fn(arg, 0, 1);
}

sl_status sl_backend_matmul(sl_backend *b, const sl_weight *w, const float *x, int n_rows, float *y) {
    SL__DISPATCH(matmul, w, x, n_rows, y);
}

sl_status sl_backend_matmul_multi(sl_backend *b, int n, const sl_weight *const *ws, const float *x, int n_rows,
                                  float *const *ys) {
    if (!b->iface->matmul_multi) {
        for (int i = 0; i < n; i++) {
            sl_status st = sl_backend_matmul(b, ws[i], x, n_rows, ys[i]);
            if (st != SL_OK) return st;
        }
        return SL_OK;
    }
    for (int i = 1; i < n; i++) SL_ASSERT(ws[i]->n_in == ws[0]->n_in);
    /* counted as matmul for fault injection: one failure point per product, as with separate calls */
    for (int i = 0; i < n; i++) {
        sl_status st = sl__fault("matmul");
        if (st != SL_OK) return st;
    }
    return b->iface->matmul_multi(b->ctx, n, ws, x, n_rows, ys);
}

sl_status sl_backend_get_rows(sl_backend *b, const sl_weight *w, const int32_t *ids, int n, float *out) {
    SL__DISPATCH(get_rows, w, ids, n, out);
}

sl_status sl_backend_rms_norm(sl_backend *b, const float *x, const float *weight, float *y, int n_rows, int dim,
                              float eps) {
    SL__DISPATCH(rms_norm, x, weight, y, n_rows, dim, eps);
}

sl_status sl_backend_rope(sl_backend *b, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim,
                          int n_rot, float freq_base, float freq_scale) {
    SL__DISPATCH(rope, x, pos, n_rows, n_heads, head_dim, n_rot, freq_base, freq_scale);
}

sl_status sl_backend_swiglu(sl_backend *b, const float *gate, const float *up, float *out, int n_rows, int n) {
    SL__DISPATCH(swiglu, gate, up, out, n_rows, n);
}

sl_status sl_backend_add(sl_backend *b, float *y, const float *x, size_t n) { SL__DISPATCH(add, y, x, n); }

sl_status sl_backend_kv_store(sl_backend *b, void *k_pool, void *v_pool, int kv_type, const float *k,
                              const float *v, const int64_t *slots, int n_rows, int n_head_kv, int head_dim) {
    SL__DISPATCH(kv_store, k_pool, v_pool, kv_type, k, v, slots, n_rows, n_head_kv, head_dim);
}

sl_status sl_backend_attention(sl_backend *b, const float *q, float *out, int n_rows, const sl_attn_args *a) {
    SL__DISPATCH(attention, q, out, n_rows, a);
}

sl_status sl_backend_synchronize(sl_backend *b) {
    if (!b->iface->synchronize) return SL_OK;
    return b->iface->synchronize(b->ctx);
}
