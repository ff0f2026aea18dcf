/*
 * test_comm_cuda1.c — the single-GPU communicator (runtime/comm_cuda1_cuda.c), label gpu.
 *
 * 2 and 3 ranks on device 0, each a CUDA backend driven by its own thread, as tensor-parallel ranks are.
 * Every rank contributes distinct random data; after the all-reduce every rank must hold exactly (bit for bit)
 * the sum taken in rank order on the host, which is the order comm.h promises; the all-gather and broadcast
 * results must be exact copies. Several collectives of different sizes run back to back without any host
 * synchronization between them, so a missing event between the streams (a rank reading a row before it is
 * written, or overwriting the scratch while another still reads it) shows as a wrong value. Sizes include 1
 * and 100003 (odd, larger than a step's buffer would start at: the scratch grows).
 *
 * Skips visibly in a build without CUDA (the communicator is not even compiled there) or without a device.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "comm.h"
#include "testutil.h"

#ifdef SL_HAVE_CUDA
sl_status sl_comm_cuda1_create(int size, sl_backend *const *ranks, sl_comm *comms);
#endif

#define MAX_RANKS 3
#ifdef SL_HAVE_CUDA
static const size_t k_sizes[] = {1, 37, 4096, 100003, 5};
#define N_SIZES (sizeof k_sizes / sizeof k_sizes[0])
#define MAX_N 100003
#endif

typedef struct rank_job {
    int rank, size;
    sl_backend *be;
    sl_comm *comm;
    const float *in;      /* [N_SIZES][MAX_N] this rank's inputs */
    float *reduced;       /* OUT [N_SIZES][MAX_N] */
    float *gathered;      /* OUT [size * MAX_N] of the largest gather */
    float *bcast;         /* OUT [MAX_N] */
    sl_status st;
    char err[256];
} rank_job;

#ifdef SL_HAVE_CUDA
static void *rank_main(void *arg) {
    rank_job *j = arg;
    const size_t nmax = MAX_N;
    void *buf = NULL, *gath = NULL;
    j->st = sl_backend_alloc(j->be, nmax * N_SIZES * sizeof(float), &buf);
    if (j->st == SL_OK) j->st = sl_backend_alloc(j->be, nmax * (size_t)j->size * sizeof(float), &gath);
    if (j->st == SL_OK) j->st = sl_backend_upload(j->be, buf, j->in, nmax * N_SIZES * sizeof(float));
    /* all-reduces of every size, back to back, each on its own region of buf */
    for (size_t k = 0; k < N_SIZES && j->st == SL_OK; k++)
        j->st = j->comm->iface->all_reduce_sum(j->comm->ctx, (float *)buf + k * nmax, k_sizes[k]);
    if (j->st == SL_OK)
        j->st = sl_backend_download(j->be, j->reduced, buf, nmax * N_SIZES * sizeof(float));
    /* all-gather of the first input region (re-uploaded: buf now holds sums) */
    if (j->st == SL_OK) j->st = sl_backend_upload(j->be, buf, j->in, nmax * sizeof(float));
    if (j->st == SL_OK) j->st = j->comm->iface->all_gather(j->comm->ctx, buf, gath, nmax);
    if (j->st == SL_OK) j->st = sl_backend_download(j->be, j->gathered, gath, nmax * (size_t)j->size * sizeof(float));
    /* broadcast from the last rank, then a barrier */
    if (j->st == SL_OK) j->st = j->comm->iface->broadcast(j->comm->ctx, buf, nmax * sizeof(float), j->size - 1);
    if (j->st == SL_OK) j->st = j->comm->iface->barrier(j->comm->ctx);
    if (j->st == SL_OK) j->st = sl_backend_download(j->be, j->bcast, buf, nmax * sizeof(float));
    if (j->st != SL_OK) {
        snprintf(j->err, sizeof j->err, "%s", sl_last_error());
        sl_comm_abort(j->comm); /* the other ranks may be waiting for this one in a collective */
    }
    sl_backend_buf_free(j->be, buf, 0);
    sl_backend_buf_free(j->be, gath, 0);
    return NULL;
}
#endif

static void run_group(int size) {
#ifndef SL_HAVE_CUDA
    (void)size;
    cr_skip_test("this build has no CUDA: the single-GPU communicator is not compiled");
#else
    if (sl_backend_cuda_device_count() < 1) cr_skip_test("no CUDA device (no GPU or driver here): cuda1 comm not run");
    sl_backend be[MAX_RANKS];
    sl_backend *pbe[MAX_RANKS];
    sl_comm comms[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        sl_backend_cuda_params p = {.device = 0, .precision = SL_PRECISION_EXACT, .max_ctx = 16};
        cr_assert_eq(sl_backend_cuda_create(&p, &be[r]), SL_OK, "%s", sl_last_error());
        pbe[r] = &be[r];
    }
    cr_assert_eq(sl_comm_cuda1_create(size, pbe, comms), SL_OK, "%s", sl_last_error());
    uint64_t rng = 100 + (uint64_t)size;
    rank_job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    float *ins[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        ins[r] = malloc(sizeof(float) * MAX_N * N_SIZES);
        for (size_t i = 0; i < (size_t)MAX_N * N_SIZES; i++) ins[r][i] = sl_test_rand_f32(&rng, -10, 10);
        jobs[r] = (rank_job){.rank = r, .size = size, .be = &be[r], .comm = &comms[r], .in = ins[r],
                             .reduced = malloc(sizeof(float) * MAX_N * N_SIZES),
                             .gathered = malloc(sizeof(float) * MAX_N * size), .bcast = malloc(sizeof(float) * MAX_N)};
    }
    for (int r = 0; r < size; r++) pthread_create(&th[r], NULL, rank_main, &jobs[r]);
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < size; r++) cr_assert_eq(jobs[r].st, SL_OK, "rank %d: %s", r, jobs[r].err);
    for (int r = 0; r < size; r++) {
        for (size_t k = 0; k < N_SIZES; k++)
            for (size_t i = 0; i < k_sizes[k]; i++) {
                const size_t at = k * MAX_N + i;
                float want = ins[0][at];
                for (int q = 1; q < size; q++) want += ins[q][at]; /* rank order, as comm.h promises */
                if (jobs[r].reduced[at] != want)
                    cr_assert_fail("rank %d all-reduce of %zu: element %zu is %.9g, want %.9g", r, k_sizes[k], i,
                                   (double)jobs[r].reduced[at], (double)want);
            }
        for (int q = 0; q < size; q++)
            cr_assert(memcmp(jobs[r].gathered + (size_t)q * MAX_N, ins[q], sizeof(float) * MAX_N) == 0,
                      "rank %d all-gather: rank %d's row differs", r, q);
        cr_assert(memcmp(jobs[r].bcast, ins[size - 1], sizeof(float) * MAX_N) == 0, "rank %d broadcast differs", r);
    }
    for (int r = 0; r < size; r++) {
        comms[r].iface->free(comms[r].ctx); /* sl_comm_free lives in comm.c, not linked here yet */
        sl_backend_free(&be[r]);
        free(ins[r]), free(jobs[r].reduced), free(jobs[r].gathered), free(jobs[r].bcast);
    }
#endif
}

Test(comm_cuda1, two_ranks, .timeout = 60) { run_group(2); }

Test(comm_cuda1, three_ranks, .timeout = 60) { run_group(3); }
