/*
 * llama_tp.c — a tensor-parallel llama: tp ranks, each a llama.c context holding its slice of every layer on
 * its own backend with its own KV pool (its KV heads only), joined by one communicator (DESIGN.md §4).
 *
 * The ranks run concurrently, one thread each: a pool of tp persistent threads made at load (the caller's
 * thread is rank 0, so a forward costs no thread hop for it), woken once per forward; every rank runs the
 * same forward on its slice, and the forward returns when all are done. Why threads and not one thread
 * issuing every rank's work: a collective blocks until every rank has reached it, so the ranks must progress
 * independently (as NCCL ranks do).
 *
 * Failure: a rank whose forward fails aborts the communicator, so ranks waiting in (or later reaching) a
 * collective return SL_CANCELLED instead of waiting forever; every rank returns, and the forward reports the
 * first rank that failed for a reason of its own. The in-process group is then reset, so the next forward
 * starts clean (a device communicator stays aborted: its replica leaves service).
 */
#include <stdio.h>
#include <string.h>

#include "llama.h"
#include "sl_util.h"
#include "threadpool.h"

typedef struct llama_tp {
    int tp;
    sl_backend *backends;  /* [tp] each rank's backend */
    sl_comm *comms;        /* [tp] */
    int comms_made;
    void **ranks;          /* [tp] llama.c contexts */
    sl_threadpool *crew;   /* tp threads: thread r runs rank r (0 = the caller) */
    /* one forward's arguments and results */
    const sl_batch *batch;
    sl_status *status;     /* [tp] */
    char (*error)[256];    /* [tp] the message of a rank that failed (sl_last_error is per thread) */
    int fault_tag;         /* the caller's fault-injection tag (its replica), taken over by every rank */
} llama_tp;

static void tp_free(void *ctx) {
    llama_tp *t = ctx;
    if (!t) return;
    sl_threadpool_free(t->crew);
    if (t->ranks)
        for (int r = 0; r < t->tp; r++)
            if (t->ranks[r]) sl_llama_iface.free(t->ranks[r]);
    if (t->comms && t->comms_made)
        for (int r = 0; r < t->tp; r++) sl_comm_free(&t->comms[r]);
    if (t->backends)
        for (int r = 0; r < t->tp; r++) sl_backend_free(&t->backends[r]);
    free(t->ranks);
    free(t->comms);
    free(t->backends);
    free(t->status);
    free(t->error);
    free(t);
}

/* The communicator that fits the ranks' devices: in-process for CPU ranks (it reads host memory directly),
 * cuda1 for ranks sharing one GPU. Ranks on several GPUs need NCCL (comm_nccl_cuda.c), which needs each CUDA
 * backend's stream and a concurrent ncclCommInitRank per rank: not wired yet, refused with a message. */
static sl_status make_comms(llama_tp *t, const int *devices) {
    int n_cpu = 0, one_gpu = 1;
    for (int r = 0; r < t->tp; r++) {
        int dev = devices ? devices[r] : SL_DEVICE_CPU;
        n_cpu += dev == SL_DEVICE_CPU;
        one_gpu = one_gpu && dev != SL_DEVICE_CPU && dev == devices[0];
    }
    if (n_cpu == t->tp) return sl_comm_local_create(t->tp, t->comms);
    if (one_gpu) {
        sl_backend *ranks[64];
        if (t->tp > (int)SL_ARRAY_LEN(ranks))
            return sl__errorf(SL_UNSUPPORTED, "%d tensor-parallel ranks on one GPU", t->tp);
        for (int r = 0; r < t->tp; r++) ranks[r] = &t->backends[r];
        return sl_comm_cuda1_create(t->tp, ranks, t->comms);
    }
    if (n_cpu > 0)
        return sl__errorf(SL_UNSUPPORTED, "a tensor-parallel group mixes CPU and GPU ranks; put all its ranks on "
                                          "the CPU or all on GPUs");
    return sl__errorf(SL_UNSUPPORTED, "tensor-parallel ranks on several GPUs need NCCL, which is not wired to "
                                      "the CUDA backend yet; put the group's ranks on one GPU");
}

sl_status sl_llama_tp_load(const sl_gguf *g, const sl_model_hparams *hp, const sl_llama_tp_params *p,
                           void **ctx_out) {
    *ctx_out = NULL;
    SL_ASSERT(p->tp >= 2);
    llama_tp *t = sl__calloc(1, sizeof *t);
    if (!t) return sl__errorf(SL_OUT_OF_MEMORY, "tensor-parallel group");
    t->tp = p->tp;
    sl_status st = SL_OK;
    t->backends = sl__calloc((size_t)t->tp, sizeof *t->backends);
    t->comms = sl__calloc((size_t)t->tp, sizeof *t->comms);
    t->ranks = sl__calloc((size_t)t->tp, sizeof *t->ranks);
    t->status = sl__calloc((size_t)t->tp, sizeof *t->status);
    t->error = sl__calloc((size_t)t->tp, sizeof *t->error);
    if (!t->backends || !t->comms || !t->ranks || !t->status || !t->error) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "tensor-parallel group of %d", t->tp);
        goto fail;
    }
    int n_threads = p->n_threads > 0 ? p->n_threads : sl_cpu_count();
    for (int r = 0; r < t->tp; r++) {
        int dev = p->devices ? p->devices[r] : SL_DEVICE_CPU;
        if (dev == SL_DEVICE_CPU) {
            sl_backend_cpu_params bp = {.n_threads = SL_MAX(1, n_threads / t->tp), .precision = p->precision,
                                        .max_ctx = p->max_ctx};
            st = sl_backend_cpu_create(&bp, &t->backends[r]);
        } else {
            sl_backend_cuda_params cp = {.device = dev, .precision = p->precision, .max_ctx = p->max_ctx};
            st = sl_backend_cuda_create(&cp, &t->backends[r]);
        }
        if (st != SL_OK) {
            sl__error_prefix(st, "tensor-parallel rank %d", r);
            goto fail;
        }
    }
    if ((st = make_comms(t, p->devices)) != SL_OK) goto fail;
    t->comms_made = 1;
    for (int r = 0; r < t->tp; r++) {
        st = sl_llama_load_rank(g, hp, &t->backends[r], r, t->tp, &t->comms[r], &t->ranks[r]);
        if (st != SL_OK) {
            sl__error_prefix(st, "tensor-parallel rank %d of %d", r, t->tp);
            goto fail;
        }
    }
    if ((st = sl_threadpool_create(t->tp, &t->crew)) != SL_OK) goto fail;
    *ctx_out = t;
    return SL_OK;
fail:
    tp_free(t);
    return st;
}

sl_status sl_llama_tp_kv_alloc(void *ctx, int n_blocks, int block_size, int kv_type) {
    llama_tp *t = ctx;
    for (int r = 0; r < t->tp; r++) {
        sl_status st = sl_llama_kv_alloc(t->ranks[r], n_blocks, block_size, kv_type);
        if (st != SL_OK) return sl__error_prefix(st, "tensor-parallel rank %d", r);
    }
    return SL_OK;
}

static void tp_rank_task(void *arg, int r, int n) {
    llama_tp *t = arg;
    sl_backend_fault_tag_set(t->fault_tag); /* the ranks work for the caller's replica */
    sl_status st = sl_llama_iface.forward(t->ranks[r], t->batch);
    t->status[r] = st;
    if (st != SL_OK) {
        snprintf(t->error[r], sizeof t->error[r], "%s", sl_last_error());
        sl_comm_abort(&t->comms[r]); /* release the ranks waiting for this one in a collective */
    }
}

static sl_status tp_forward(void *ctx, const sl_batch *b) {
    llama_tp *t = ctx;
    t->batch = b;
    t->fault_tag = sl_backend_fault_tag_get();
    sl_threadpool_run(t->crew, tp_rank_task, t);
    t->batch = NULL;
    int failed = -1;
    for (int r = 0; r < t->tp; r++) {
        if (t->status[r] == SL_OK) continue;
        /* the first rank that failed on its own; ranks released by its abort report SL_CANCELLED */
        if (failed < 0 || (t->status[failed] == SL_CANCELLED && t->status[r] != SL_CANCELLED)) failed = r;
    }
    if (failed < 0) return SL_OK;
    /* Every rank has returned, so nobody is inside a collective: the in-process group is reset and the replica
     * goes on. A GPU communicator cannot be reset (it stays aborted): whatever the rank's error, the replica
     * must leave service, so it is reported as a device error. */
    const sl_status st = sl_comm_local_reset(&t->comms[0]) ? t->status[failed] : SL_DEVICE;
    return sl__errorf(st, "tensor-parallel rank %d of %d: %s", failed, t->tp, t->error[failed]);
}

uint64_t sl_llama_tp_rank_weight_bytes(const void *ctx, int rank) {
    const llama_tp *t = ctx;
    return sl_llama_layer_weight_bytes(t->ranks[rank]);
}

sl_backend *sl_llama_tp_rank0_backend(void *ctx) { return sl_llama_tp_rank_backend(ctx, 0); }

sl_backend *sl_llama_tp_rank_backend(void *ctx, int rank) {
    llama_tp *t = ctx;
    return &t->backends[rank];
}

const sl_comm_stats *sl_llama_tp_comm_stats(const void *ctx, int rank) {
    const llama_tp *t = ctx;
    return &t->comms[rank].stats;
}

const sl_model_iface sl_llama_tp_iface = {
    /* .name = */ "llama-tp",
    /* .forward = */ tp_forward,
    /* .free = */ tp_free,
};
