/*
 * comm_cuda1_cuda.c — the single-GPU communicator: several tensor-parallel ranks on ONE device (comm.h).
 *
 * NCCL refuses two ranks on one device, yet the tensor-parallel CUDA path must run (and be tested) on a
 * machine with one GPU. Here each rank is a CUDA backend of its own on the same device, hence its own stream,
 * driven by its own host thread; the ranks meet in a shared device scratch buffer [size][n]:
 *   1. every rank waits (on its stream) until all ranks finished reading the scratch of the previous
 *      collective (events `done`), copies its buffer into its row of the scratch and records `ready`;
 *   2. a host barrier: every rank's `ready` is now recorded;
 *   3. every rank's stream waits for all `ready` events, then reads what it needs: the all-reduce adds the rows
 *      in rank order (row 0, + row 1, + row 2 ...: every rank gets bit-identical sums, run after run), the
 *      all-gather copies all rows, the broadcast copies the root's row; then it records `done`;
 *   4. a host barrier: every `done` is recorded before any rank starts the next collective.
 * The host threads never wait for the GPU: ordering is by events between the streams. The barriers cost a few
 * microseconds per collective, nothing next to a layer's work.
 *
 * A rank whose CUDA call fails still takes part in the barriers (so the others never hang), marks the group
 * failed, and from then on every call of every rank returns SL_DEVICE (comm.h: a failed collective leaves the
 * communicator unusable). abort() (a rank failed elsewhere) releases every barrier: SL_CANCELLED for all.
 *
 * The scratch grows to the largest collective seen (a layer's activations), before the first barrier of a
 * call and under the group's lock; cudaFree waits for the device, so no rank still reads the old buffer.
 */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "comm.h"
#include "kcuda.h"
#include "sl_util.h"

/* Provided by backend_cuda.c (no shared header of the runtime names CUDA types yet). */

/* Largest group: the ranks share one GPU, and more than 8 streams on one device only adds contention. */
#define SL_CUDA1_MAX_RANKS 8

typedef struct sl_cuda1_group {
    int size, device;
    cudaStream_t streams[SL_CUDA1_MAX_RANKS]; /* the ranks' backends' streams (not owned) */
    cudaEvent_t ready[SL_CUDA1_MAX_RANKS];    /* rank r's row of the scratch is written */
    cudaEvent_t done[SL_CUDA1_MAX_RANKS];     /* rank r finished reading the scratch */
    void *scratch;                            /* [size][n] rows of the current collective (f32, or bytes) */
    size_t scratch_bytes;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;
    unsigned long generation;
    int failed;
    int aborted;              /* abort(): every pending and later collective returns SL_CANCELLED */
    char failed_msg[200];
    int refs;
} sl_cuda1_group;

typedef struct sl_cuda1 {
    sl_cuda1_group *g;
    int rank;
} sl_cuda1;

static void group_barrier(sl_cuda1_group *g) {
    pthread_mutex_lock(&g->mu);
    unsigned long gen = g->generation;
    if (++g->arrived == g->size) {
        g->arrived = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cv);
    } else {
        while (gen == g->generation && !g->aborted) pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Records the first failure; returns 1 if e failed. */
static int group_check(sl_cuda1_group *g, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();
    pthread_mutex_lock(&g->mu);
    if (!g->failed) {
        g->failed = 1;
        snprintf(g->failed_msg, sizeof g->failed_msg, "%s: %s", what, cudaGetErrorString(e));
    }
    pthread_mutex_unlock(&g->mu);
    return 1;
}

static sl_status group_status(sl_cuda1_group *g, const char *op) {
    pthread_mutex_lock(&g->mu);
    int failed = g->failed, aborted = g->aborted;
    char msg[200];
    memcpy(msg, g->failed_msg, sizeof msg);
    pthread_mutex_unlock(&g->mu);
    if (aborted) return sl__errorf(SL_CANCELLED, "single-GPU communicator, %s: the group was aborted", op);
    if (!failed) return SL_OK;
    return sl__errorf(SL_DEVICE, "single-GPU communicator on CUDA device %d, %s: %s", g->device, op, msg);
}

/* Steps 1-2 of the top comment: grow the scratch if needed, write this rank's row (`row_bytes` at `src`,
 * none if src is NULL), record ready, meet the others. */
static void phase_write(sl_cuda1 *c, const void *src, size_t row_bytes) {
    sl_cuda1_group *g = c->g;
    cudaStream_t s = g->streams[c->rank];
    int bad = group_check(g, cudaSetDevice(g->device), "selecting the device");
    size_t need = row_bytes * (size_t)g->size;
    pthread_mutex_lock(&g->mu);
    if (!bad && !g->failed && need > g->scratch_bytes) {
        if (g->scratch) (void)cudaFree(g->scratch); /* waits for the device: nobody reads it any more */
        g->scratch = NULL;
        g->scratch_bytes = 0;
        cudaError_t e = cudaMalloc(&g->scratch, need);
        if (e == cudaSuccess) {
            g->scratch_bytes = need;
        } else {
            (void)cudaGetLastError();
            g->failed = 1;
            snprintf(g->failed_msg, sizeof g->failed_msg, "allocating %zu bytes of scratch: %s", need,
                     cudaGetErrorString(e));
        }
    }
    int failed = g->failed || g->aborted;
    pthread_mutex_unlock(&g->mu);
    if (!bad && !failed) {
        for (int j = 0; j < g->size && !bad; j++)
            bad = group_check(g, cudaStreamWaitEvent(s, g->done[j], 0), "waiting for the previous collective");
        if (!bad && src && row_bytes)
            bad = group_check(g, cudaMemcpyAsync((uint8_t *)g->scratch + (size_t)c->rank * row_bytes, src, row_bytes,
                                                 cudaMemcpyDeviceToDevice, s),
                              "copying into the scratch");
        if (!bad) (void)group_check(g, cudaEventRecord(g->ready[c->rank], s), "recording an event");
    }
    group_barrier(g);
}

/* Step 3's start: this rank's stream waits for every row. Returns 1 when the group can go on. */
static int phase_wait_rows(sl_cuda1 *c) {
    sl_cuda1_group *g = c->g;
    if (group_status(g, "") != SL_OK) return 0;
    for (int j = 0; j < g->size; j++)
        if (group_check(g, cudaStreamWaitEvent(g->streams[c->rank], g->ready[j], 0), "waiting for the ranks' rows"))
            return 0;
    return 1;
}

/* Step 3's end and step 4. */
static sl_status phase_done(sl_cuda1 *c, const char *op) {
    sl_cuda1_group *g = c->g;
    if (group_status(g, op) == SL_OK)
        (void)group_check(g, cudaEventRecord(g->done[c->rank], g->streams[c->rank]), "recording an event");
    group_barrier(g);
    return group_status(g, op);
}

static sl_status cuda1_all_reduce_sum(void *ctx, float *buf, size_t n) {
    sl_cuda1 *c = ctx;
    sl_cuda1_group *g = c->g;
    const size_t row = n * sizeof(float);
    phase_write(c, buf, row);
    if (phase_wait_rows(c) && n) {
        cudaStream_t s = g->streams[c->rank];
        const float *rows = g->scratch;
        int bad = group_check(g, cudaMemcpyAsync(buf, rows, row, cudaMemcpyDeviceToDevice, s), "copying row 0");
        for (int j = 1; j < g->size && !bad; j++) bad = group_check(g, sl_kc_add(s, buf, rows + (size_t)j * n, n), "adding a row");
    }
    return phase_done(c, "all-reduce");
}

static sl_status cuda1_all_gather(void *ctx, const float *in, float *out, size_t n) {
    sl_cuda1 *c = ctx;
    sl_cuda1_group *g = c->g;
    const size_t row = n * sizeof(float);
    phase_write(c, in, row);
    if (phase_wait_rows(c) && n)
        (void)group_check(g, cudaMemcpyAsync(out, g->scratch, row * (size_t)g->size, cudaMemcpyDeviceToDevice,
                                             g->streams[c->rank]),
                          "copying the gathered rows");
    return phase_done(c, "all-gather");
}

static sl_status cuda1_broadcast(void *ctx, void *buf, size_t bytes, int root) {
    sl_cuda1 *c = ctx;
    sl_cuda1_group *g = c->g;
    if (root < 0 || root >= g->size) return sl__errorf(SL_INVALID_ARGUMENT, "broadcast root %d of %d", root, g->size);
    /* every rank's row is `bytes` wide so that all ranks agree on the scratch size; only the root writes */
    phase_write(c, c->rank == root ? buf : NULL, bytes);
    if (phase_wait_rows(c) && bytes && c->rank != root)
        (void)group_check(g, cudaMemcpyAsync(buf, (uint8_t *)g->scratch + (size_t)root * bytes, bytes,
                                             cudaMemcpyDeviceToDevice, g->streams[c->rank]),
                          "copying the root's buffer");
    return phase_done(c, "broadcast");
}

static sl_status cuda1_barrier(void *ctx) {
    sl_cuda1 *c = ctx;
    phase_write(c, NULL, 0);
    (void)phase_wait_rows(c); /* every stream now waits for every rank's work before it */
    return phase_done(c, "barrier");
}

/* A rank that failed outside a collective: wake and cancel everyone (comm.h). */
static void cuda1_abort(void *ctx) {
    sl_cuda1_group *g = ((sl_cuda1 *)ctx)->g;
    pthread_mutex_lock(&g->mu);
    g->aborted = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void group_unref(sl_cuda1_group *g) {
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (!last) return;
    if (cudaSetDevice(g->device) == cudaSuccess) {
        if (g->scratch) (void)cudaFree(g->scratch);
        for (int r = 0; r < g->size; r++) {
            if (g->ready[r]) (void)cudaEventDestroy(g->ready[r]);
            if (g->done[r]) (void)cudaEventDestroy(g->done[r]);
        }
    }
    (void)cudaGetLastError();
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

static void cuda1_free(void *ctx) {
    sl_cuda1 *c = ctx;
    if (!c) return;
    group_unref(c->g);
    free(c);
}

static const sl_comm_iface sl_cuda1_iface = {
    .name = "cuda1",
    .free = cuda1_free,
    .all_reduce_sum = cuda1_all_reduce_sum,
    .all_gather = cuda1_all_gather,
    .broadcast = cuda1_broadcast,
    .barrier = cuda1_barrier,
    .abort = cuda1_abort,
};

sl_status sl_comm_cuda1_create(int size, sl_backend *const *ranks, sl_comm *comms) {
    if (size < 1 || size > SL_CUDA1_MAX_RANKS)
        return sl__errorf(SL_INVALID_ARGUMENT, "single-GPU communicator of %d ranks (1..%d)", size, SL_CUDA1_MAX_RANKS);
    const int device = sl__backend_cuda_device(ranks[0]);
    for (int r = 0; r < size; r++) {
        comms[r] = (sl_comm){0};
        if (!sl__backend_cuda_stream(ranks[r]) || sl__backend_cuda_device(ranks[r]) != device)
            return sl__errorf(SL_INVALID_ARGUMENT, "single-GPU communicator: rank %d is not a CUDA backend on device %d",
                              r, device);
    }
    sl_cuda1_group *g = sl__calloc(1, sizeof *g);
    if (!g) return sl__errorf(SL_OUT_OF_MEMORY, "single-GPU communicator");
    g->size = size;
    g->device = device;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    sl_status st = SL_OK;
    cudaError_t e = cudaSetDevice(device);
    for (int r = 0; r < size && e == cudaSuccess; r++) {
        g->streams[r] = (cudaStream_t)sl__backend_cuda_stream(ranks[r]);
        e = cudaEventCreateWithFlags(&g->ready[r], cudaEventDisableTiming);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&g->done[r], cudaEventDisableTiming);
        /* `done` starts recorded, so the first collective's wait on it passes at once */
        if (e == cudaSuccess) e = cudaEventRecord(g->done[r], g->streams[r]);
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        st = sl__errorf(SL_DEVICE, "CUDA device %d: creating the single-GPU communicator: %s", device,
                        cudaGetErrorString(e));
        g->refs = 1;
        group_unref(g);
        return st;
    }
    g->refs = size;
    for (int r = 0; r < size; r++) {
        sl_cuda1 *c = sl__calloc(1, sizeof *c);
        if (!c) {
            for (int k = 0; k < r; k++) cuda1_free(comms[k].ctx), comms[k] = (sl_comm){0};
            pthread_mutex_lock(&g->mu);
            g->refs -= size - r - 1; /* the ranks never made hold no reference; the last unref frees */
            pthread_mutex_unlock(&g->mu);
            group_unref(g);
            return sl__errorf(SL_OUT_OF_MEMORY, "single-GPU communicator");
        }
        c->g = g;
        c->rank = r;
        comms[r].iface = &sl_cuda1_iface;
        comms[r].ctx = c;
        comms[r].rank = r;
        comms[r].size = size;
    }
    return SL_OK;
}
