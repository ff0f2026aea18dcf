/*
 * backend_cpu.c — the CPU backend: the model's operations on host memory, split over the compute pool.
 *
 * Each operation splits its work into disjoint ranges (output columns of a product, (row, head) pairs of
 * attention, rows of a norm) and calls a kernel from kernels/cpu on each range. The split never changes a
 * value: every kernel computes each output with a fixed reduction order, so the result of a row is the same
 * whatever the number of threads or rows (batch invariance, see kcpu.h).
 *
 * Precision: in the fast mode the activations of a product with quantized weights are quantized once per row
 * (Q8_0/Q8_1) and the product runs on integers; the exact mode keeps them f32.
 *
 * OpenBLAS runs single-threaded: its own spinning workers would fight ours for the same cores.
 */
#include <cblas.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend.h"
#include "kcpu.h"
#include "sl_util.h"
#include "threadpool.h"

/* Allocations at least this large are mapped, so untouched pages (most of a fresh KV pool) cost nothing. */
#define SL_CPU_MMAP_THRESHOLD (1u << 20)
/* Below this many elements a row operation runs on the calling thread: waking workers would cost more. */
#define SL_CPU_PARALLEL_MIN_ELEMS 16384

typedef struct sl_cpu_ctx {
    sl_threadpool *pool;
    sl_precision precision;
    int max_ctx;
    float *attn_scratch;   /* [n_threads][max_ctx] attention scores, one row per thread */
    uint8_t *xq;           /* quantized activations, [n_rows][row bytes]; grows to the largest batch seen */
    size_t xq_cap;
    /* RoPE angles of the last positions seen, [rope_n][rope_rot] (cos, sin pairs): every layer's Q and K of a
     * step rotate by the same positions, so the pow and sincos run once per step, not 2 x n_layer times. */
    float *rope_cs;
    int32_t *rope_pos;     /* [rope_n] the positions they belong to */
    int rope_n, rope_rot;  /* rows and dimensions of the cached angles */
    size_t rope_cap;       /* floats rope_cs holds; rows rope_pos holds: rope_cap_rows */
    int rope_cap_rows;
    float rope_base, rope_scale;
    uint8_t *unpack_row;   /* [unpack_cap] a packed weight's row back in the file's layout (get_rows); sized when
                            * a weight is packed (load), so a step's embedding lookup never allocates */
    size_t unpack_cap;
    /* Packed weights live in arenas: 2 MiB-aligned huge-page mappings of SL_CPU_ARENA bytes (or one weight's
     * size when larger) that weights are carved from in load order and that are unmapped with the backend. */
    struct sl_cpu_arena {
        uint8_t *base;
        size_t used, cap;
    } *arenas;
    int n_arenas;
} sl_cpu_ctx;

/* ---- memory ------------------------------------------------------------------------------------------------ */
/* Large buffers (the KV pools, big activations, the packed weights' arenas) are anonymous mappings aligned to
 * 2 MiB, faulted in lazily. The weights' arenas are also marked for transparent huge pages (granted under THP
 * "madvise" or "always"): a step streams every weight, and with 4 KiB pages each page of them costs a TLB
 * miss and a page walk per step. The KV pools are not: their pages are first touched during serving, and a
 * huge-page fault there (zeroing 2 MiB, compaction) stalled a step for milliseconds (measured 2026-11-25:
 * a 16-stream step's KV stores 10x slower on a fresh pool, attention no faster). */
#define SL_CPU_HUGE (2u << 20)
static void *sl_cpu_map(size_t bytes, int huge) {
    const size_t span = bytes + SL_CPU_HUGE;
    uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + SL_CPU_HUGE - 1) & ~(uintptr_t)(SL_CPU_HUGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw)); /* the slack before the aligned start */
    /* and after the end, from the first page boundary past it (munmap wants page-aligned addresses) */
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *tail = (uint8_t *)(((uintptr_t)(p + bytes) + page - 1) & ~(uintptr_t)(page - 1));
    if (raw + span > tail) munmap(tail, (size_t)(raw + span - tail));
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint: refused (THP off) it changes nothing */
#endif
    return p;
}
static sl_status cpu_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    void *p = bytes >= SL_CPU_MMAP_THRESHOLD ? sl_cpu_map(bytes, 0) : sl__malloc(bytes);
    if (!p) return sl__errorf(SL_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
    *out = p;
    return SL_OK;
}

/* Bytes of a packed weight carved from the arenas, and the carving (64-byte aligned). */
#define SL_CPU_ARENA (32u << 20)
static sl_status cpu_arena_take(sl_cpu_ctx *c, size_t bytes, void **out) {
    bytes = (bytes + 63) & ~(size_t)63;
    struct sl_cpu_arena *a = c->n_arenas ? &c->arenas[c->n_arenas - 1] : NULL;
    if (!a || a->cap - a->used < bytes) {
        struct sl_cpu_arena *t = sl__realloc(c->arenas, (size_t)(c->n_arenas + 1) * sizeof *t);
        if (!t) return sl__errorf(SL_OUT_OF_MEMORY, "weight arena table");
        c->arenas = t;
        const size_t cap = bytes > SL_CPU_ARENA ? bytes : SL_CPU_ARENA;
        void *base = sl_cpu_map(cap, 1);
        if (!base) return sl__errorf(SL_OUT_OF_MEMORY, "cannot map %zu bytes for weights", cap);
        /* a weight larger than an arena gets one of its own, slid under the current arena so that arena's room
         * still serves the weights after it */
        const int keep_last = bytes > SL_CPU_ARENA && c->n_arenas > 0;
        if (keep_last) c->arenas[c->n_arenas] = c->arenas[c->n_arenas - 1];
        a = &c->arenas[keep_last ? c->n_arenas - 1 : c->n_arenas];
        c->n_arenas++;
        a->base = base;
        a->used = 0;
        a->cap = cap;
    }
    *out = a->base + a->used;
    a->used += bytes;
    return SL_OK;
}

static void cpu_buf_free(void *ctx, void *ptr, size_t bytes) {
    (void)ctx;
    if (bytes >= SL_CPU_MMAP_THRESHOLD)
        munmap(ptr, bytes);
    else
        free(ptr);
}

static sl_status cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    memcpy(dst, src, bytes);
    return SL_OK;
}

/* ---- matmul ------------------------------------------------------------------------------------------------ */
/* Products sharing one input: Q, K and V, or gate and up, run in one dispatch (matmul is the n = 1 case). */
#define SL_CPU_MAX_MULTI 4

typedef struct sl_mm_task {
    int n;                                /* products */
    const sl_weight *const *ws;           /* [n] */
    float *const *ys;                     /* [n] */
    const float *x;                       /* [n_rows][n_in] f32 input */
    const uint8_t *xq;                    /* [n_rows][xq_row_bytes] the input quantized, or NULL (exact mode) */
    size_t xq_row_bytes;
    int qtype;                            /* the weight type whose activation rows xq holds (sl_k_quantize_act_row) */
    int n_rows;
} sl_mm_task;

static void mm_quantize_task(void *arg, int ith, int nth) {
    sl_mm_task *t = arg;
    int n_in = t->ws[0]->n_in, r0, r1;
    sl_split_range(t->n_rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++)
        sl_k_quantize_act_row(t->qtype, t->x + (size_t)r * n_in, (uint8_t *)t->xq + (size_t)r * t->xq_row_bytes, n_in);
}

static void mm_task(void *arg, int ith, int nth) {
    sl_mm_task *t = arg;
    for (int i = 0; i < t->n; i++) {
        const sl_weight *w = t->ws[i];
        int o0, o1;
        /* 16-column units keep each thread's share a whole number of the kernels' register tiles. */
        sl_split_range(w->n_out, SL_QP_GROUP, ith, nth, &o0, &o1);
        if (o0 >= o1) continue;
        if (t->xq && w->packed)
            sl_k_matmul_qp(w->type, w->data, o0, o1, w->n_in, t->xq, t->xq_row_bytes, t->n_rows, t->ys[i], w->n_out);
        else if (t->xq)
            sl_k_matmul_q(w->type, w->data, w->row_bytes, o0, o1, w->n_in, t->xq, t->xq_row_bytes, t->n_rows,
                          t->ys[i], w->n_out);
        else
            sl_k_matmul_f32(w->type, w->data, w->row_bytes, o0, o1, w->n_in, t->x, w->n_in, t->n_rows, t->ys[i],
                            w->n_out);
    }
}

static sl_status cpu_matmul_multi(void *ctx, int n, const sl_weight *const *ws, const float *x, int n_rows,
                                  float *const *ys) {
    sl_cpu_ctx *c = ctx;
    const int fast = c->precision == SL_PRECISION_FAST;
    int act = fast ? sl_k_act_type(ws[0]->type) : -1;
    int same = n <= SL_CPU_MAX_MULTI; /* the exact mode reads f32 inputs whatever the types */
    for (int i = 1; i < n; i++) same = same && (!fast || sl_k_act_type(ws[i]->type) == act);
    if (!same) { /* the inputs would need different quantizations (a K-quant mix): one product at a time */
        for (int i = 0; i < n; i++) {
            sl_status st = cpu_matmul_multi(ctx, 1, ws + i, x, n_rows, ys + i);
            if (st != SL_OK) return st;
        }
        return SL_OK;
    }
    sl_mm_task t = {.n = n, .ws = ws, .ys = ys, .x = x, .n_rows = n_rows, .qtype = ws[0]->type};
    if (act >= 0) {
        /* A packed weight's product needs the f32 scales after the blocks; the others read the blocks alone. */
        for (int i = 0; i < n; i++)
            if (ws[i]->packed) t.qtype = ws[i]->type;
        t.xq_row_bytes = sl_k_act_row_bytes(t.qtype, ws[0]->n_in);
        size_t need = t.xq_row_bytes * (size_t)n_rows;
        if (need > c->xq_cap) {
            /* Grows to the largest step seen (bounded by max_num_batched_tokens), then never again. */
            uint8_t *p = sl__realloc(c->xq, need);
            if (!p) return sl__errorf(SL_OUT_OF_MEMORY, "activation buffer of %zu bytes", need);
            c->xq = p;
            c->xq_cap = need;
        }
        t.xq = c->xq;
        if ((size_t)n_rows * (size_t)ws[0]->n_in >= SL_CPU_PARALLEL_MIN_ELEMS)
            sl_threadpool_run(c->pool, mm_quantize_task, &t);
        else
            mm_quantize_task(&t, 0, 1);
    }
    sl_threadpool_run(c->pool, mm_task, &t);
    return SL_OK;
}

static sl_status cpu_matmul(void *ctx, const sl_weight *w, const float *x, int n_rows, float *y) {
    return cpu_matmul_multi(ctx, 1, &w, x, n_rows, &y);
}

static sl_status cpu_get_rows(void *ctx, const sl_weight *w, const int32_t *ids, int n, float *out) {
    sl_cpu_ctx *c = ctx;
    SL_ASSERT(!w->packed || c->unpack_cap >= w->row_bytes); /* cpu_upload_weight sized it */
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->n_out)
            return sl__errorf(SL_INVALID_ARGUMENT, "token id %d outside the vocabulary [0, %d)", ids[i], w->n_out);
        const uint8_t *src = (const uint8_t *)w->data + (size_t)ids[i] * w->row_bytes;
        if (w->packed) {
            sl_k_unpack_q_row(w->type, w->data, w->n_in, ids[i], c->unpack_row);
            src = c->unpack_row;
        }
        sl_k_dequantize_row(w->type, src, out + (size_t)i * w->n_in, w->n_in);
    }
    return SL_OK;
}

/* ---- weights ------------------------------------------------------------------------------------------------ */
/* In the fast mode, Q4_0/Q4_1/Q8_0 weights are repacked once for the integer products (kcpu.h: the same bytes,
 * 16 rows interleaved); the file's mapping is then never read again for them, so its pages stay cold. Other
 * weights (and all in the exact mode, whose f32 products read the file's rows) are used in place. */
static sl_status cpu_upload_weight(void *ctx, const sl_weight *host, sl_weight *dev) {
    sl_cpu_ctx *c = ctx;
    *dev = *host;
    dev->packed = 0;
    if (c->precision != SL_PRECISION_FAST || !sl_k_pack_supported(host->type)) return SL_OK;
    if (host->row_bytes > c->unpack_cap) { /* any packed weight may be looked up by row (the embedding) */
        uint8_t *row = sl__realloc(c->unpack_row, host->row_bytes);
        if (!row) return sl__errorf(SL_OUT_OF_MEMORY, "row of %zu bytes", host->row_bytes);
        c->unpack_row = row;
        c->unpack_cap = host->row_bytes;
    }
    size_t bytes = sl_k_packed_bytes(host->type, host->n_out, host->n_in);
    void *p = NULL;
    sl_status st = cpu_arena_take(c, bytes, &p);
    if (st != SL_OK) return st;
    sl_k_pack_q(host->type, host->data, host->row_bytes, host->n_out, host->n_in, p);
    dev->data = p;
    dev->packed = 1;
    return SL_OK;
}

static void cpu_weight_free(void *ctx, sl_weight *dev) {
    (void)ctx; /* a packed weight's bytes belong to an arena, unmapped with the backend (cpu_free) */
    dev->data = NULL;
}

/* ---- row operations ------------------------------------------------------------------------------------------ */
typedef struct {
    const float *x, *weight, *up;
    float *y;
    const int32_t *pos;
    int n_rows, dim, n_heads, head_dim, n_rot;
    float eps;
    const float *cs; /* RoPE: [n_rows][n_rot] angles */
} sl_row_task;

static void rms_norm_task(void *arg, int ith, int nth) {
    sl_row_task *t = arg;
    int r0, r1;
    sl_split_range(t->n_rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++)
        sl_k_rms_norm(t->x + (size_t)r * t->dim, t->weight, t->y + (size_t)r * t->dim, t->dim, t->eps);
}

static void rope_task(void *arg, int ith, int nth) {
    sl_row_task *t = arg;
    int r0, r1;
    sl_split_range(t->n_rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++)
        sl_k_rope_apply(t->y + (size_t)r * t->n_heads * t->head_dim, t->n_heads, t->head_dim, t->n_rot,
                        t->cs + (size_t)r * t->n_rot);
}

static void swiglu_task(void *arg, int ith, int nth) {
    sl_row_task *t = arg;
    int r0, r1;
    sl_split_range(t->n_rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++)
        sl_k_swiglu(t->x + (size_t)r * t->dim, t->up + (size_t)r * t->dim, t->y + (size_t)r * t->dim, t->dim);
}

static void run_rows(sl_cpu_ctx *c, sl_task_fn fn, sl_row_task *t, size_t n_elems) {
    if (n_elems >= SL_CPU_PARALLEL_MIN_ELEMS && t->n_rows > 1)
        sl_threadpool_run(c->pool, fn, t);
    else
        fn(t, 0, 1);
}

static sl_status cpu_rms_norm(void *ctx, const float *x, const float *weight, float *y, int n_rows, int dim,
                              float eps) {
    sl_row_task t = {.x = x, .weight = weight, .y = y, .n_rows = n_rows, .dim = dim, .eps = eps};
    run_rows(ctx, rms_norm_task, &t, (size_t)n_rows * (size_t)dim);
    return SL_OK;
}

static sl_status cpu_rope(void *ctx, float *x, const int32_t *pos, int n_rows, int n_heads, int head_dim, int n_rot,
                          float freq_base, float freq_scale) {
    sl_cpu_ctx *c = ctx;
    if (n_rows <= 0) return SL_OK;
    if (n_rot > head_dim) n_rot = head_dim;
    if (n_rot > SL_K_ROPE_MAX_ROT) return sl__errorf(SL_INVALID_ARGUMENT, "rope over %d dimensions", n_rot);
    int same = c->rope_n == n_rows && c->rope_rot == n_rot && c->rope_base == freq_base &&
               c->rope_scale == freq_scale && !memcmp(c->rope_pos, pos, (size_t)n_rows * sizeof *pos);
    if (!same) {
        c->rope_n = 0; /* the cache is invalid until refilled */
        const size_t need = (size_t)n_rows * (size_t)n_rot;
        if (need > c->rope_cap) {
            float *cs = sl__realloc(c->rope_cs, need * sizeof(float));
            if (!cs) return sl__errorf(SL_OUT_OF_MEMORY, "rope angles for %d rows", n_rows);
            c->rope_cs = cs;
            c->rope_cap = need;
        }
        if (n_rows > c->rope_cap_rows) {
            int32_t *ps = sl__realloc(c->rope_pos, (size_t)n_rows * sizeof(int32_t));
            if (!ps) return sl__errorf(SL_OUT_OF_MEMORY, "rope positions for %d rows", n_rows);
            c->rope_pos = ps;
            c->rope_cap_rows = n_rows;
        }
        for (int r = 0; r < n_rows; r++)
            sl_k_rope_angles(pos[r], n_rot, freq_base, freq_scale, c->rope_cs + (size_t)r * n_rot);
        memcpy(c->rope_pos, pos, (size_t)n_rows * sizeof *pos);
        c->rope_n = n_rows;
        c->rope_rot = n_rot;
        c->rope_base = freq_base;
        c->rope_scale = freq_scale;
    }
    sl_row_task t = {.y = x, .pos = pos, .n_rows = n_rows, .n_heads = n_heads, .head_dim = head_dim,
                     .n_rot = n_rot, .cs = c->rope_cs};
    run_rows(ctx, rope_task, &t, (size_t)n_rows * (size_t)n_heads * (size_t)head_dim * 8);
    return SL_OK;
}

static sl_status cpu_swiglu(void *ctx, const float *gate, const float *up, float *out, int n_rows, int n) {
    sl_row_task t = {.x = gate, .up = up, .y = out, .n_rows = n_rows, .dim = n};
    run_rows(ctx, swiglu_task, &t, (size_t)n_rows * (size_t)n);
    return SL_OK;
}

static sl_status cpu_add(void *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
    sl_k_add(y, x, (int64_t)n);
    return SL_OK;
}

/* ---- KV cache and attention ------------------------------------------------------------------------------------ */
typedef struct {
    void *k_pool, *v_pool;
    const float *k, *v;
    const int64_t *slots;
    int kv_type, n_rows, n_head_kv, head_dim;
} sl_kv_task;

static void kv_store_task(void *arg, int ith, int nth) {
    const sl_kv_task *t = arg;
    const size_t row = (size_t)t->n_head_kv * (size_t)t->head_dim;
    int r0, r1;
    sl_split_range(t->n_rows, 1, ith, nth, &r0, &r1);
    for (int r = r0; r < r1; r++) {
        sl_k_kv_store(t->k_pool, t->kv_type, t->slots[r], t->k + r * row, t->n_head_kv, t->head_dim);
        sl_k_kv_store(t->v_pool, t->kv_type, t->slots[r], t->v + r * row, t->n_head_kv, t->head_dim);
    }
}

/* Parallel from a few rows up: a store is cheap, but the first store into a fresh part of the lazily
 * mapped pool takes page faults (a new server's first ~pool-size of tokens), and those then split. */
static sl_status cpu_kv_store(void *ctx, void *k_pool, void *v_pool, int kv_type, const float *k, const float *v,
                              const int64_t *slots, int n_rows, int n_head_kv, int head_dim) {
    sl_cpu_ctx *c = ctx;
    sl_kv_task t = {k_pool, v_pool, k, v, slots, kv_type, n_rows, n_head_kv, head_dim};
    if (n_rows >= 4)
        sl_threadpool_run(c->pool, kv_store_task, &t);
    else
        kv_store_task(&t, 0, 1);
    return SL_OK;
}

typedef struct {
    sl_cpu_ctx *c;
    const float *q;
    float *out;
    int n_rows;
    const sl_attn_args *a;
} sl_attn_task;

static void attn_task(void *arg, int ith, int nth) {
    sl_attn_task *t = arg;
    const sl_attn_args *a = t->a;
    /* Units are (row, KV-head group) when there are enough of them: the query heads sharing one KV head stay
     * together (its K and V rows are read once, then hit L1). With few rows (decode: one row, n_head_kv
     * units, 3 here for 2 threads) units are (row, query head) instead, so the threads' shares stay even; a
     * head's result is the same whichever thread computes it. */
    const int by_head = t->n_rows * a->n_head_kv < 4 * nth;
    const int group = by_head ? 1 : a->n_head / a->n_head_kv, per_row = by_head ? a->n_head : a->n_head_kv;
    int n_units = t->n_rows * per_row;
    int u0, u1;
    sl_split_range(n_units, 1, ith, nth, &u0, &u1);
    float *scratch = t->c->attn_scratch + (size_t)ith * (size_t)t->c->max_ctx;
    size_t row = (size_t)a->n_head * (size_t)a->head_dim;
    for (int u = u0; u < u1; u++) {
        int r = u / per_row, g = u % per_row;
        sl_k_attention(t->q + r * row, t->out + r * row, g * group, (g + 1) * group, a->n_head, a->n_head_kv,
                       a->head_dim, a->k_pool, a->v_pool, a->kv_type, a->block_tables[a->row_seq[r]], a->block_size,
                       a->row_n_ctx[r], a->scale, scratch);
    }
}

static sl_status cpu_attention(void *ctx, const float *q, float *out, int n_rows, const sl_attn_args *a) {
    sl_cpu_ctx *c = ctx;
    for (int r = 0; r < n_rows; r++)
        if (a->row_n_ctx[r] < 1 || a->row_n_ctx[r] > c->max_ctx)
            return sl__errorf(SL_INVALID_ARGUMENT, "attention context %d outside [1, %d]", a->row_n_ctx[r],
                              c->max_ctx);
    sl_attn_task t = {.c = c, .q = q, .out = out, .n_rows = n_rows, .a = a};
    sl_threadpool_run(c->pool, attn_task, &t);
    return SL_OK;
}

/* ---- host work between steps ------------------------------------------------------------------------------- */
static void cpu_parallel_for(void *ctx, void (*fn)(void *arg, int ith, int nth), void *arg) {
    sl_cpu_ctx *c = ctx;
    sl_threadpool_run(c->pool, fn, arg);
}

static int cpu_host_threads(void *ctx) {
    sl_cpu_ctx *c = ctx;
    return sl_threadpool_size(c->pool);
}

static void cpu_free(void *ctx) {
    sl_cpu_ctx *c = ctx;
    if (!c) return;
    sl_threadpool_free(c->pool);
    free(c->attn_scratch);
    free(c->xq);
    free(c->rope_cs);
    free(c->rope_pos);
    free(c->unpack_row);
    for (int i = 0; i < c->n_arenas; i++) munmap(c->arenas[i].base, c->arenas[i].cap);
    free(c->arenas);
    free(c);
}

static const sl_backend_iface sl_cpu_iface = {
    .name = "cpu",
    .free = cpu_free,
    .alloc = cpu_alloc,
    .buf_free = cpu_buf_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = NULL,
    .weights_in_host_memory = 1,
    .copy = cpu_copy,
    .upload_weight = cpu_upload_weight,
    .weight_free = cpu_weight_free,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .get_rows = cpu_get_rows,
    .rms_norm = cpu_rms_norm,
    .rope = cpu_rope,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .parallel_for = cpu_parallel_for,
    .host_threads = cpu_host_threads,
};

sl_status sl_backend_cpu_create(const sl_backend_cpu_params *p, sl_backend *out) {
    out->iface = NULL;
    out->ctx = NULL;
    if (p->max_ctx < 1) return sl__errorf(SL_INVALID_ARGUMENT, "cpu backend: max_ctx %d < 1", p->max_ctx);
    sl_kcpu_init();
    openblas_set_num_threads(1);
    sl_cpu_ctx *c = sl__calloc(1, sizeof *c);
    if (!c) return sl__errorf(SL_OUT_OF_MEMORY, "cpu backend");
    c->precision = p->precision;
    c->max_ctx = p->max_ctx;
    sl_status st = sl_threadpool_create(p->n_threads, &c->pool);
    if (st != SL_OK) goto fail;
    c->attn_scratch = sl__malloc((size_t)sl_threadpool_size(c->pool) * (size_t)c->max_ctx * sizeof(float));
    if (!c->attn_scratch) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "attention scratch");
        goto fail;
    }
    out->iface = &sl_cpu_iface;
    out->ctx = c;
    return SL_OK;
fail:
    cpu_free(c);
    return st;
}
