/*
 * comm_nccl_cuda.c — the GPU communicator: NCCL, loaded at run time.
 *
 * DESIGN.md §4: a CUDA-enabled binary must start on a machine without NCCL, so libnccl.so.2 is opened with
 * dlopen the first time a group is made and its few entry points taken with dlsym; nothing links against it
 * and its header is not needed (the declarations below are NCCL's stable ABI: ncclUniqueId is 128 bytes, the
 * enum values are those of nccl.h since NCCL 2.0). Every NCCL call is checked and its failure becomes a status
 * carrying ncclGetErrorString's text and what was being done; collectives run on the stream the rank was
 * created with, so they order with the rank's backend work without a host synchronization.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>

#include "comm.h"
#include "sl_util.h"

typedef struct nccl_comm_s *nccl_comm_t;             /* ncclComm_t */
typedef struct { char internal[SL_COMM_ID_BYTES]; } nccl_unique_id; /* ncclUniqueId */
typedef int nccl_result;                               /* ncclResult_t: 0 = ncclSuccess */
enum { NCCL_SUCCESS = 0, NCCL_INT8 = 0, NCCL_FLOAT32 = 7, NCCL_SUM = 0 };

typedef struct nccl_api {
    void *lib;
    const char *(*get_error_string)(nccl_result);
    nccl_result (*get_unique_id)(nccl_unique_id *);
    nccl_result (*comm_init_rank)(nccl_comm_t *, int, nccl_unique_id, int);
    nccl_result (*comm_destroy)(nccl_comm_t);
    nccl_result (*comm_abort)(nccl_comm_t);
    nccl_result (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm_t, cudaStream_t);
    nccl_result (*all_gather)(const void *, void *, size_t, int, nccl_comm_t, cudaStream_t);
    nccl_result (*broadcast)(const void *, void *, size_t, int, int, nccl_comm_t, cudaStream_t);
} nccl_api;

static nccl_api sl__nccl;
static sl_status sl__nccl_load_status = SL_OK;
static char sl__nccl_load_error[256];
static pthread_once_t sl__nccl_once = PTHREAD_ONCE_INIT;

static void nccl_load_once(void) {
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(sl__nccl_load_error, sizeof sl__nccl_load_error, "NCCL is not available: %s", e ? e : "dlopen failed");
        sl__nccl_load_status = SL_UNSUPPORTED;
        return;
    }
    struct { void **slot; const char *name; } syms[] = {
        {(void **)&sl__nccl.get_error_string, "ncclGetErrorString"},
        {(void **)&sl__nccl.get_unique_id, "ncclGetUniqueId"},
        {(void **)&sl__nccl.comm_init_rank, "ncclCommInitRank"},
        {(void **)&sl__nccl.comm_destroy, "ncclCommDestroy"},
        {(void **)&sl__nccl.comm_abort, "ncclCommAbort"},
        {(void **)&sl__nccl.all_reduce, "ncclAllReduce"},
        {(void **)&sl__nccl.all_gather, "ncclAllGather"},
        {(void **)&sl__nccl.broadcast, "ncclBroadcast"},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(syms); i++) {
        *syms[i].slot = dlsym(lib, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(sl__nccl_load_error, sizeof sl__nccl_load_error, "libnccl.so.2 lacks %s (NCCL too old?)",
                     syms[i].name);
            sl__nccl_load_status = SL_UNSUPPORTED;
            dlclose(lib);
            memset(&sl__nccl, 0, sizeof sl__nccl);
            return;
        }
    }
    sl__nccl.lib = lib;
}

static sl_status nccl_load(void) {
    pthread_once(&sl__nccl_once, nccl_load_once);
    if (sl__nccl_load_status != SL_OK) return sl__errorf(sl__nccl_load_status, "%s", sl__nccl_load_error);
    return SL_OK;
}

#define NCCL_CHECK(call, what)                                                                                   \
    do {                                                                                                         \
        nccl_result r_ = (call);                                                                                 \
        if (r_ != NCCL_SUCCESS) return sl__errorf(SL_DEVICE, "NCCL %s: %s", what, sl__nccl.get_error_string(r_)); \
    } while (0)

typedef struct nccl_rank {
    nccl_comm_t comm;
    cudaStream_t stream;
    int device;
    float *one;         /* the barrier's all-reduce operand, allocated with the rank */
    _Atomic int aborted; /* set by abort (any thread); every collective checks it first */
} nccl_rank;

/* A collective on an aborted rank: refused, as comm.h says, without touching the aborted communicator. */
#define NCCL_LIVE(r)                                                                                             \
    do {                                                                                                         \
        if (atomic_load(&(r)->aborted))                                                                          \
            return sl__errorf(SL_CANCELLED, "NCCL collective abandoned: the tensor-parallel group was aborted"); \
    } while (0)

static sl_status nccl_all_reduce_sum(void *ctx, float *buf, size_t n) {
    nccl_rank *r = ctx;
    NCCL_LIVE(r);
    NCCL_CHECK(sl__nccl.all_reduce(buf, buf, n, NCCL_FLOAT32, NCCL_SUM, r->comm, r->stream), "all-reduce");
    return SL_OK;
}

static sl_status nccl_all_gather(void *ctx, const float *in, float *out, size_t n) {
    nccl_rank *r = ctx;
    NCCL_LIVE(r);
    NCCL_CHECK(sl__nccl.all_gather(in, out, n, NCCL_FLOAT32, r->comm, r->stream), "all-gather");
    return SL_OK;
}

static sl_status nccl_broadcast(void *ctx, void *buf, size_t bytes, int root) {
    nccl_rank *r = ctx;
    NCCL_LIVE(r);
    NCCL_CHECK(sl__nccl.broadcast(buf, buf, bytes, NCCL_INT8, root, r->comm, r->stream), "broadcast");
    return SL_OK;
}

/* NCCL has no barrier: an all-reduce of one float on the rank's stream, then waiting for that stream. */
static sl_status nccl_barrier(void *ctx) {
    nccl_rank *r = ctx;
    NCCL_LIVE(r);
    cudaError_t ce = cudaSetDevice(r->device);
    if (ce != cudaSuccess)
        return sl__errorf(SL_DEVICE, "NCCL barrier: CUDA device %d: %s", r->device, cudaGetErrorString(ce));
    nccl_result nr = sl__nccl.all_reduce(r->one, r->one, 1, NCCL_FLOAT32, NCCL_SUM, r->comm, r->stream);
    ce = nr == NCCL_SUCCESS ? cudaStreamSynchronize(r->stream) : cudaSuccess;
    if (nr != NCCL_SUCCESS) return sl__errorf(SL_DEVICE, "NCCL barrier: %s", sl__nccl.get_error_string(nr));
    if (ce != cudaSuccess) return sl__errorf(SL_DEVICE, "NCCL barrier: %s", cudaGetErrorString(ce));
    return SL_OK;
}

/* Marks the rank aborted (its later collectives are refused with SL_CANCELLED) and aborts its communicator,
 * once. Only this rank's: NCCL peers blocked inside a collective return only when their own ranks abort. */
static void nccl_abort(void *ctx) {
    nccl_rank *r = ctx;
    if (atomic_exchange(&r->aborted, 1)) return;
    sl__nccl.comm_abort(r->comm);
}

static void nccl_free(void *ctx) {
    nccl_rank *r = ctx;
    if (!r) return;
    if (!atomic_load(&r->aborted)) sl__nccl.comm_destroy(r->comm); /* an aborted communicator is already gone */
    if (r->one) {
        (void)cudaSetDevice(r->device);
        (void)cudaFree(r->one);
    }
    free(r);
}

static const sl_comm_iface sl_comm_nccl_iface = {
    .name = "nccl",
    .free = nccl_free,
    .all_reduce_sum = nccl_all_reduce_sum,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .abort = nccl_abort,
};

sl_status sl_comm_nccl_unique_id(uint8_t id[SL_COMM_ID_BYTES]) {
    sl_status st = nccl_load();
    if (st != SL_OK) return st;
    nccl_unique_id u;
    NCCL_CHECK(sl__nccl.get_unique_id(&u), "making the group's unique id");
    memcpy(id, u.internal, SL_COMM_ID_BYTES);
    return SL_OK;
}

sl_status sl_comm_nccl_create(const uint8_t id[SL_COMM_ID_BYTES], int rank, int size, int device, void *stream,
                              sl_comm *out) {
    memset(out, 0, sizeof *out);
    if (size < 1 || rank < 0 || rank >= size)
        return sl__errorf(SL_INVALID_ARGUMENT, "NCCL rank %d of a group of %d", rank, size);
    sl_status st = nccl_load();
    if (st != SL_OK) return st;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess) return sl__errorf(SL_DEVICE, "NCCL rank %d: CUDA device %d: %s", rank, device,
                                             cudaGetErrorString(ce));
    nccl_rank *r = sl__calloc(1, sizeof *r);
    if (!r) return sl__errorf(SL_OUT_OF_MEMORY, "NCCL rank");
    r->stream = (cudaStream_t)stream;
    r->device = device;
    if ((ce = cudaMalloc((void **)&r->one, sizeof(float))) != cudaSuccess) {
        free(r);
        return sl__errorf(ce == cudaErrorMemoryAllocation ? SL_OUT_OF_MEMORY : SL_DEVICE,
                          "NCCL rank %d: the barrier's operand: %s", rank, cudaGetErrorString(ce));
    }
    nccl_unique_id u;
    memcpy(u.internal, id, SL_COMM_ID_BYTES);
    nccl_result nr = sl__nccl.comm_init_rank(&r->comm, size, u, rank);
    if (nr != NCCL_SUCCESS) {
        (void)cudaFree(r->one);
        free(r);
        return sl__errorf(SL_DEVICE, "NCCL rank %d of %d on device %d: ncclCommInitRank: %s", rank, size, device,
                          sl__nccl.get_error_string(nr));
    }
    *out = (sl_comm){.iface = &sl_comm_nccl_iface, .ctx = r, .rank = rank, .size = size};
    return SL_OK;
}
