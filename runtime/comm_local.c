/*
 * comm_local.c — the in-process communicator: the ranks are threads of this process sharing host memory
 * (DESIGN.md §4: it exists so tensor parallelism is tested on any machine, and it runs CPU TP replicas).
 *
 * Every collective is "publish a pointer, barrier, work on the others' buffers, barrier": the first barrier
 * makes every rank's pointer (and the data behind it) visible, the second keeps each buffer alive and
 * unchanged until every rank is done reading or writing it. The all-reduce is a reduce-scatter and an
 * all-gather in one pass: rank r owns a contiguous chunk of the elements, sums that chunk over all ranks as a
 * left fold in rank order ((b0 + b1) + b2 ...), and writes the sum into every rank's buffer. Each element's
 * sum therefore has one fixed order, whatever the chunking, and every rank receives the same bits.
 *
 * The barrier counts arrivals and bumps a generation counter when the last rank arrives. Waiters poll the
 * generation for a short while (the ranks of one forward arrive within microseconds of each other), then
 * sleep on a condition variable; the last arriver broadcasts only when someone sleeps. An abort sets a flag
 * that every wait checks, so a failed rank never leaves the others blocked.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "comm.h"
#include "sl_util.h"
#include "threadpool.h"

/* About 20-40 µs of polling before a waiter sleeps: longer than the gap between ranks of one balanced
 * forward when each rank has its own core, short enough that an oversubscribed machine (more ranks than
 * cores) quickly gives the core to the rank everyone waits for. */
#define SL_COMM_SPIN_POLLS 4096
/* Every this many polls a waiter yields the core, so a descheduled rank runs again soon even while spinning. */
#define SL_COMM_YIELD_EVERY 64
/* Each rank's chunk of an all-reduce is a whole number of 64-byte cache lines (16 floats), so two ranks
 * never write the same line. */
#define SL_COMM_CHUNK_ALIGN 16

typedef struct local_group {
    int size;
    _Atomic int refs;             /* communicators still holding the group */
    _Atomic unsigned generation;  /* barriers completed */
    _Atomic int arrived;          /* ranks inside the current barrier */
    _Atomic int n_sleeping;
    _Atomic int aborted;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    void **bufs;                  /* [size] the buffer each rank published for the collective in progress */
} local_group;

typedef struct local_rank {
    local_group *g;
    int rank;
} local_rank;

static sl_status local_aborted(void) {
    return sl__errorf(SL_CANCELLED, "collective abandoned: another rank of the tensor-parallel group failed");
}

static sl_status local_barrier_wait(local_group *g) {
    if (atomic_load(&g->aborted)) return local_aborted();
    /* Read before arriving: the generation cannot move until this rank has arrived too. */
    unsigned gen = atomic_load(&g->generation);
    if (atomic_fetch_add(&g->arrived, 1) + 1 == g->size) {
        atomic_store(&g->arrived, 0); /* before the bump: the next barrier starts only after it */
        atomic_fetch_add(&g->generation, 1); /* seq_cst: pairs with the sleeper's n_sleeping increment */
        if (atomic_load(&g->n_sleeping) > 0) {
            pthread_mutex_lock(&g->mutex);
            pthread_cond_broadcast(&g->cond);
            pthread_mutex_unlock(&g->mutex);
        }
        return SL_OK;
    }
    for (int polls = 1; polls <= SL_COMM_SPIN_POLLS; polls++) {
        if (atomic_load_explicit(&g->generation, memory_order_acquire) != gen) return SL_OK;
        if (atomic_load_explicit(&g->aborted, memory_order_relaxed)) return local_aborted();
        if (polls % SL_COMM_YIELD_EVERY == 0)
            sched_yield();
        else
            sl__cpu_relax();
    }
    pthread_mutex_lock(&g->mutex);
    atomic_fetch_add(&g->n_sleeping, 1);
    while (atomic_load(&g->generation) == gen && !atomic_load(&g->aborted)) pthread_cond_wait(&g->cond, &g->mutex);
    atomic_fetch_sub(&g->n_sleeping, 1);
    pthread_mutex_unlock(&g->mutex);
    /* A barrier that completed wins over an abort that came after it. */
    if (atomic_load(&g->generation) != gen) return SL_OK;
    return local_aborted();
}

static sl_status local_all_reduce_sum(void *ctx, float *buf, size_t n) {
    local_rank *r = ctx;
    local_group *g = r->g;
    g->bufs[r->rank] = buf;
    sl_status st = local_barrier_wait(g);
    if (st != SL_OK) return st;
    /* sl_split_range works on int; larger reductions are split in int-sized pieces by the same rule. */
    for (size_t base = 0; base < n; base += (size_t)1 << 30) {
        int len = (int)SL_MIN(n - base, (size_t)1 << 30), lo, hi;
        sl_split_range(len, SL_COMM_CHUNK_ALIGN, r->rank, g->size, &lo, &hi);
        if (lo >= hi) continue;
        float *acc = (float *)g->bufs[0] + base;
        for (int k = 1; k < g->size; k++) {
            const float *src = (const float *)g->bufs[k] + base;
            for (int i = lo; i < hi; i++) acc[i] += src[i];
        }
        for (int k = 1; k < g->size; k++)
            memcpy((float *)g->bufs[k] + base + lo, acc + lo, (size_t)(hi - lo) * sizeof(float));
    }
    return local_barrier_wait(g);
}

static sl_status local_all_gather(void *ctx, const float *in, float *out, size_t n) {
    local_rank *r = ctx;
    local_group *g = r->g;
    g->bufs[r->rank] = (void *)in;
    sl_status st = local_barrier_wait(g);
    if (st != SL_OK) return st;
    for (int k = 0; k < g->size; k++) {
        float *dst = out + (size_t)k * n;
        if (dst != g->bufs[k] && n > 0) memcpy(dst, g->bufs[k], n * sizeof(float));
    }
    return local_barrier_wait(g);
}

static sl_status local_broadcast(void *ctx, void *buf, size_t bytes, int root) {
    local_rank *r = ctx;
    local_group *g = r->g;
    g->bufs[r->rank] = buf;
    sl_status st = local_barrier_wait(g);
    if (st != SL_OK) return st;
    if (r->rank != root && bytes > 0 && buf != g->bufs[root]) memcpy(buf, g->bufs[root], bytes);
    return local_barrier_wait(g);
}

static sl_status local_barrier(void *ctx) {
    local_rank *r = ctx;
    return local_barrier_wait(r->g);
}

static void local_abort(void *ctx) {
    local_rank *r = ctx;
    local_group *g = r->g;
    pthread_mutex_lock(&g->mutex);
    atomic_store(&g->aborted, 1);
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mutex);
}

static void local_group_unref(local_group *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    pthread_mutex_destroy(&g->mutex);
    pthread_cond_destroy(&g->cond);
    free(g->bufs);
    free(g);
}

static void local_free(void *ctx) {
    local_rank *r = ctx;
    if (!r) return;
    local_group_unref(r->g);
    free(r);
}

static const sl_comm_iface sl_comm_local_iface = {
    .name = "local",
    .free = local_free,
    .all_reduce_sum = local_all_reduce_sum,
    .all_gather = local_all_gather,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .abort = local_abort,
};

int sl_comm_local_reset(sl_comm *c) {
    if (!c || c->iface != &sl_comm_local_iface) return 0;
    local_group *g = ((local_rank *)c->ctx)->g;
    atomic_store(&g->arrived, 0);
    atomic_store(&g->aborted, 0);
    return 1;
}

sl_status sl_comm_local_create(int size, sl_comm *comms) {
    /* 4096 ranks is far beyond any thread count this process could usefully run; the bound keeps a bad
     * argument from asking for absurd memory. */
    if (size < 1 || size > 4096) return sl__errorf(SL_INVALID_ARGUMENT, "communicator of %d ranks", size);
    memset(comms, 0, (size_t)size * sizeof *comms);
    local_group *g = sl__calloc(1, sizeof *g);
    if (!g) return sl__errorf(SL_OUT_OF_MEMORY, "communicator group");
    g->bufs = sl__calloc((size_t)size, sizeof *g->bufs);
    if (!g->bufs) {
        free(g);
        return sl__errorf(SL_OUT_OF_MEMORY, "communicator group");
    }
    g->size = size;
    pthread_mutex_init(&g->mutex, NULL);
    pthread_cond_init(&g->cond, NULL);
    atomic_store(&g->refs, 1); /* the creator's reference, dropped below once the ranks hold theirs */
    sl_status st = SL_OK;
    for (int i = 0; i < size; i++) {
        local_rank *r = sl__calloc(1, sizeof *r);
        if (!r) {
            st = sl__errorf(SL_OUT_OF_MEMORY, "communicator rank %d", i);
            break;
        }
        r->g = g;
        r->rank = i;
        atomic_fetch_add(&g->refs, 1);
        comms[i] = (sl_comm){.iface = &sl_comm_local_iface, .ctx = r, .rank = i, .size = size};
    }
    if (st != SL_OK)
        for (int i = 0; i < size; i++) sl_comm_free(&comms[i]);
    local_group_unref(g);
    return st;
}
