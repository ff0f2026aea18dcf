/*
 * backend.c — the dispatchers in front of every backend entry (see backend.h): argument checks, fault
 * injection for tests of the failure path, then the call.
 *
 * SLUICE_FAULT_INJECT="<op>:<n>" (op = matmul, attention, alloc, ...) makes the n-th call of that op
 * (1-based, counted per process) return SL_DEVICE, as a real device error would. "<op>:<n>@<tag>" counts
 * only the calls made from threads whose fault tag is <tag> (sl_backend_fault_tag_set; the engine tags each
 * replica's thread with the replica's index), so one chosen replica fails while the others go on.
 *
 * SLUICE_PROFILE_OPS=1 times every dispatched call (wall clock around the backend's entry) and prints, at
 * exit, a table to stderr: per operation the calls, total milliseconds and share; matmul_multi is listed as
 * "matmul_multi/<n>" (3: Q, K and V; 2: gate and up). On the CPU that is where a step's time goes; a device
 * backend returns as soon as work is queued, so there the times are the host's, and the device's time shows in
 * the calls that wait for the stream (download, synchronize). Off (the default), one predictable branch per call.
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

/* ---- SLUICE_PROFILE_OPS ---------------------------------------------------------------------------------- */
#define SL__PROF_MAX 32
static const char *sl__prof_name[SL__PROF_MAX]; /* string literals, compared by address */
static _Atomic uint64_t sl__prof_ns[SL__PROF_MAX], sl__prof_calls[SL__PROF_MAX];
static int sl__prof_n;
static int sl__prof_on;
static pthread_mutex_t sl__prof_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t sl__prof_once = PTHREAD_ONCE_INIT;

static void sl__prof_report(void) {
    uint64_t total = 0;
    for (int i = 0; i < sl__prof_n; i++) total += atomic_load(&sl__prof_ns[i]);
    fprintf(stderr, "sluice: backend operations (SLUICE_PROFILE_OPS), wall time per call on the calling thread\n"
                    "  %-16s %10s %12s %10s %7s\n", "operation", "calls", "total ms", "mean us", "share");
    for (int i = 0; i < sl__prof_n; i++) {
        const uint64_t ns = atomic_load(&sl__prof_ns[i]), calls = atomic_load(&sl__prof_calls[i]);
        fprintf(stderr, "  %-16s %10llu %12.3f %10.2f %6.1f%%\n", sl__prof_name[i], (unsigned long long)calls,
                (double)ns * 1e-6, calls ? (double)ns * 1e-3 / (double)calls : 0.0,
                total ? 100.0 * (double)ns / (double)total : 0.0);
    }
}

static void sl__prof_init(void) {
    const char *s = getenv("SLUICE_PROFILE_OPS");
    sl__prof_on = s && *s && strcmp(s, "0") != 0;
    if (sl__prof_on) atexit(sl__prof_report);
}

static inline int sl__prof_enabled(void) {
    pthread_once(&sl__prof_once, sl__prof_init);
    return sl__prof_on;
}

/* Adds one call of `name` (a string literal: its address is its identity) taking ns. */
static void sl__prof_add(const char *name, uint64_t ns) {
    int i = 0;
    const int n = __atomic_load_n(&sl__prof_n, __ATOMIC_ACQUIRE);
    while (i < n && sl__prof_name[i] != name) i++;
    if (i == n) {
        pthread_mutex_lock(&sl__prof_mu);
        for (i = 0; i < sl__prof_n && sl__prof_name[i] != name; i++) {}
        if (i == sl__prof_n && sl__prof_n < SL__PROF_MAX) {
            sl__prof_name[i] = name;
            __atomic_store_n(&sl__prof_n, sl__prof_n + 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&sl__prof_mu);
        if (i >= SL__PROF_MAX) return;
    }
    atomic_fetch_add_explicit(&sl__prof_ns[i], ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&sl__prof_calls[i], 1, memory_order_relaxed);
}

#define SL__DISPATCH(op, ...)                                                                               \
    do {                                                                                                    \
        sl_status st_ = sl__fault(#op);                                                                     \
        if (st_ != SL_OK) return st_;                                                                       \
        SL_ASSERT(b->iface->op != NULL);                                                                    \
        if (!sl__prof_enabled()) return b->iface->op(b->ctx, __VA_ARGS__);                                  \
        const int64_t t0_ = sl__now_ns();                                                                   \
        st_ = b->iface->op(b->ctx, __VA_ARGS__);                                                            \
        sl__prof_add(#op, (uint64_t)(sl__now_ns() - t0_));                                                  \
        return st_;                                                                                         \
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
    if (!sl__prof_enabled()) return b->iface->matmul_multi(b->ctx, n, ws, x, n_rows, ys);
    static const char *const names[] = {"matmul_multi/0", "matmul_multi/1", "matmul_multi/2", "matmul_multi/3",
                                        "matmul_multi/4", "matmul_multi/n"};
    const int64_t t0 = sl__now_ns();
    const sl_status st = b->iface->matmul_multi(b->ctx, n, ws, x, n_rows, ys);
    sl__prof_add(names[n >= 0 && n < 5 ? n : 5], (uint64_t)(sl__now_ns() - t0));
    return st;
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
    if (!sl__prof_enabled()) return b->iface->synchronize(b->ctx);
    const int64_t t0 = sl__now_ns();
    const sl_status st = b->iface->synchronize(b->ctx);
    sl__prof_add("synchronize", (uint64_t)(sl__now_ns() - t0));
    return st;
}
