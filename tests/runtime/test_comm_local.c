/*
 * test_comm_local.c — the in-process communicator: ranks are threads, results must be what a serial loop
 * gives, bit for bit, on every rank.
 *
 * All-reduce over 2..8 ranks and sizes 0, 1, odd and large: every rank's buffer equals the left fold
 * b0 + b1 + ... in rank order computed here serially (the order comm_local.c promises), compared with
 * memcmp. The inputs span several orders of magnitude, so a different order would change low bits.
 * All-gather (also in place), broadcast from several roots, barriers that really hold everyone, thousands of
 * rounds (a lost wakeup hangs and the test times out), abort releasing waiting ranks, and the counters.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"
#include "testutil.h"

#define MAX_RANKS 8

typedef struct job job;
typedef void (*rank_fn)(job *j, int rank);
struct job {
    sl_comm comms[MAX_RANKS];
    int size;
    rank_fn fn;
    size_t n;
    float *bufs[MAX_RANKS];
    float *outs[MAX_RANKS];
    int root;
    int rounds;
    _Atomic int counter;
    _Atomic int failures;
    sl_status status[MAX_RANKS];
};

typedef struct {
    job *j;
    int rank;
} rank_arg;

static void *rank_main(void *p) {
    rank_arg *a = p;
    a->j->fn(a->j, a->rank);
    return NULL;
}

/* Runs fn on `size` threads, one per rank, and joins them. */
static void run_ranks(job *j, int size, rank_fn fn) {
    j->size = size;
    j->fn = fn;
    pthread_t th[MAX_RANKS];
    rank_arg args[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        args[r] = (rank_arg){j, r};
        cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &args[r]), 0);
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
}

static job *job_new(int size) {
    job *j = calloc(1, sizeof *j);
    cr_assert_eq(sl_comm_local_create(size, j->comms), SL_OK, "%s", sl_last_error());
    for (int r = 0; r < size; r++) {
        cr_assert_eq(j->comms[r].rank, r);
        cr_assert_eq(j->comms[r].size, size);
    }
    j->size = size;
    return j;
}

static void job_free(job *j) {
    for (int r = 0; r < j->size; r++) {
        sl_comm_free(&j->comms[r]);
        free(j->bufs[r]);
        free(j->outs[r]);
    }
    free(j);
}

/* Values from 1e-4 to 1e4 in magnitude, both signs: sums of these depend on their order. */
static void fill(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        float mag = sl_test_rand_f32(&s, -4.0f, 4.0f);
        float m = 1.0f;
        for (int e = 0; e < (int)(mag < 0 ? -mag : mag); e++) m *= 10.0f;
        x[i] = sl_test_rand_f32(&s, -1.0f, 1.0f) * (mag < 0 ? 1.0f / m : m);
    }
}

static void do_all_reduce(job *j, int r) { j->status[r] = sl_comm_all_reduce_sum(&j->comms[r], j->bufs[r], j->n); }

static void check_all_reduce(int size, size_t n) {
    job *j = job_new(size);
    j->n = n;
    float *expect = malloc((n ? n : 1) * sizeof(float));
    for (int r = 0; r < size; r++) {
        j->bufs[r] = malloc((n ? n : 1) * sizeof(float));
        fill(j->bufs[r], n, 1000u * (uint64_t)size + (uint64_t)r);
    }
    for (size_t i = 0; i < n; i++) {
        float s = j->bufs[0][i];
        for (int r = 1; r < size; r++) s += j->bufs[r][i];
        expect[i] = s;
    }
    run_ranks(j, size, do_all_reduce);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(j->status[r], SL_OK, "rank %d: %s", r, sl_status_name(j->status[r]));
        cr_assert(memcmp(j->bufs[r], expect, n * sizeof(float)) == 0,
                  "%d ranks, %zu floats: rank %d differs from the serial sum in rank order", size, n, r);
        cr_assert_eq(j->comms[r].stats.all_reduces, 1);
        cr_assert_eq(j->comms[r].stats.bytes_reduced, n * sizeof(float));
    }
    free(expect);
    job_free(j);
}

Test(comm_local, all_reduce_equals_serial_sum_in_rank_order, .timeout = 60) {
    size_t sizes[] = {0, 1, 2, 15, 16, 17, 1001, (1u << 18) + 3};
    for (int size = 2; size <= MAX_RANKS; size++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) check_all_reduce(size, sizes[i]);
}

Test(comm_local, one_rank_is_identity, .timeout = 10) {
    check_all_reduce(1, 33);
}

static void do_all_gather(job *j, int r) {
    j->status[r] = sl_comm_all_gather(&j->comms[r], j->bufs[r], j->outs[r], j->n);
}

static void do_all_gather_in_place(job *j, int r) {
    /* each rank's own part already sits at out + r * n */
    j->status[r] = sl_comm_all_gather(&j->comms[r], j->outs[r] + (size_t)r * j->n, j->outs[r], j->n);
}

Test(comm_local, all_gather_concatenates_in_rank_order, .timeout = 30) {
    size_t sizes[] = {0, 1, 7, 4099};
    for (int size = 2; size <= MAX_RANKS; size++) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            for (int in_place = 0; in_place < 2; in_place++) {
                job *j = job_new(size);
                size_t n = sizes[k];
                j->n = n;
                for (int r = 0; r < size; r++) {
                    j->bufs[r] = malloc((n ? n : 1) * sizeof(float));
                    fill(j->bufs[r], n, 77u + (uint64_t)r);
                    j->outs[r] = calloc((size_t)size * n + 1, sizeof(float));
                    if (in_place) memcpy(j->outs[r] + (size_t)r * n, j->bufs[r], n * sizeof(float));
                }
                run_ranks(j, size, in_place ? do_all_gather_in_place : do_all_gather);
                for (int r = 0; r < size; r++) {
                    cr_assert_eq(j->status[r], SL_OK);
                    for (int q = 0; q < size; q++)
                        cr_assert(memcmp(j->outs[r] + (size_t)q * n, j->bufs[q], n * sizeof(float)) == 0,
                                  "%d ranks, n %zu, in place %d: rank %d's copy of rank %d's part differs", size, n,
                                  in_place, r, q);
                    cr_assert_eq(j->comms[r].stats.all_gathers, 1);
                }
                job_free(j);
            }
        }
    }
}

static void do_broadcast(job *j, int r) {
    j->status[r] = sl_comm_broadcast(&j->comms[r], j->bufs[r], j->n, j->root);
}

Test(comm_local, broadcast_copies_the_roots_bytes, .timeout = 30) {
    for (int size = 2; size <= MAX_RANKS; size++) {
        int roots[] = {0, size - 1, size / 2};
        for (int k = 0; k < 3; k++) {
            job *j = job_new(size);
            j->n = 13; /* bytes: not a multiple of anything */
            j->root = roots[k];
            for (int r = 0; r < size; r++) {
                j->bufs[r] = malloc(16);
                memset(j->bufs[r], r + 1, 16);
            }
            run_ranks(j, size, do_broadcast);
            for (int r = 0; r < size; r++) {
                cr_assert_eq(j->status[r], SL_OK);
                const unsigned char *b = (const unsigned char *)j->bufs[r];
                for (int i = 0; i < 13; i++) cr_assert_eq(b[i], roots[k] + 1, "rank %d byte %d", r, i);
                for (int i = 13; i < 16; i++) cr_assert_eq(b[i], r + 1, "rank %d: byte %d past the end written", r, i);
            }
            job_free(j);
        }
    }
}

/* Each round every rank counts itself in, then waits; after the barrier every rank of the round must have
 * counted (a barrier that let a rank through early shows as a short count). */
static void do_barrier_rounds(job *j, int r) {
    for (int k = 0; k < j->rounds; k++) {
        atomic_fetch_add(&j->counter, 1);
        if (sl_comm_barrier(&j->comms[r]) != SL_OK) {
            atomic_fetch_add(&j->failures, 1);
            return;
        }
        if (atomic_load(&j->counter) < j->size * (k + 1)) atomic_fetch_add(&j->failures, 1);
    }
}

Test(comm_local, barrier_holds_every_rank_over_many_rounds, .timeout = 120) {
    int sizes[] = {2, 3, 8};
    for (int i = 0; i < 3; i++) {
        job *j = job_new(sizes[i]);
        j->rounds = 3000;
        run_ranks(j, sizes[i], do_barrier_rounds);
        cr_assert_eq(atomic_load(&j->failures), 0, "%d ranks: a rank passed a barrier early", sizes[i]);
        cr_assert_eq(atomic_load(&j->counter), sizes[i] * 3000);
        for (int r = 0; r < sizes[i]; r++) cr_assert_eq(j->comms[r].stats.barriers, 3000);
        job_free(j);
    }
}

/* Many small all-reduces back to back, where a lost wakeup would hang a rank (the test's timeout catches it),
 * with a rank that sleeps now and then so the others reach the sleeping path of the barrier. */
static void do_reduce_rounds(job *j, int r) {
    float v[3];
    for (int k = 0; k < j->rounds; k++) {
        for (int i = 0; i < 3; i++) v[i] = (float)(r + k + i);
        if (r == 0 && k % 500 == 0) {
            struct timespec ts = {0, 2000000}; /* 2 ms: far past the spin phase */
            nanosleep(&ts, NULL);
        }
        if (sl_comm_all_reduce_sum(&j->comms[r], v, 3) != SL_OK) {
            atomic_fetch_add(&j->failures, 1);
            return;
        }
        int S = j->size;
        for (int i = 0; i < 3; i++)
            if (v[i] != (float)(S * (S - 1) / 2 + S * (k + i))) atomic_fetch_add(&j->failures, 1);
    }
}

Test(comm_local, thousands_of_all_reduces_without_lost_wakeups, .timeout = 120) {
    int sizes[] = {2, 4, 8};
    for (int i = 0; i < 3; i++) {
        job *j = job_new(sizes[i]);
        j->rounds = 3000;
        run_ranks(j, sizes[i], do_reduce_rounds);
        cr_assert_eq(atomic_load(&j->failures), 0, "%d ranks: wrong sums", sizes[i]);
        for (int r = 0; r < sizes[i]; r++) cr_assert_eq(j->comms[r].stats.all_reduces, 3000);
        job_free(j);
    }
}

/* Rank 0 fails before the collective and aborts; the others, already waiting (or arriving later), return
 * SL_CANCELLED instead of hanging. After a reset the group works again. */
static void do_abort(job *j, int r) {
    if (r == 0) {
        struct timespec ts = {0, 20000000}; /* 20 ms: the others are asleep in the barrier by now */
        nanosleep(&ts, NULL);
        sl_comm_abort(&j->comms[0]);
        j->status[0] = SL_INTERNAL;
        return;
    }
    j->status[r] = sl_comm_all_reduce_sum(&j->comms[r], j->bufs[r], j->n);
}

Test(comm_local, abort_releases_waiting_ranks_and_reset_recovers, .timeout = 30) {
    int size = 4;
    job *j = job_new(size);
    j->n = 5;
    for (int r = 0; r < size; r++) {
        j->bufs[r] = malloc(5 * sizeof(float));
        for (int i = 0; i < 5; i++) j->bufs[r][i] = 1.0f;
    }
    run_ranks(j, size, do_abort);
    for (int r = 1; r < size; r++)
        cr_assert_eq(j->status[r], SL_CANCELLED, "rank %d: %s", r, sl_status_name(j->status[r]));
    sl_comm_local_reset(&j->comms[0]);
    for (int r = 0; r < size; r++)
        for (int i = 0; i < 5; i++) j->bufs[r][i] = 1.0f;
    run_ranks(j, size, do_all_reduce);
    for (int r = 0; r < size; r++) {
        cr_assert_eq(j->status[r], SL_OK);
        for (int i = 0; i < 5; i++) cr_assert_eq(j->bufs[r][i], 4.0f);
    }
    job_free(j);
}

Test(comm_local, bad_arguments_are_statuses, .timeout = 10) {
    sl_comm c[2];
    cr_assert_eq(sl_comm_local_create(0, c), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_comm_local_create(-3, c), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_comm_local_create(2, c), SL_OK);
    char b[4];
    cr_assert_eq(sl_comm_broadcast(&c[0], b, 4, 2), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "root 2") != NULL, "%s", sl_last_error());
    cr_assert_eq(sl_comm_broadcast(&c[0], b, 4, -1), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_comm_all_reduce_sum(&c[0], NULL, 4), SL_INVALID_ARGUMENT);
    cr_assert_eq(c[0].stats.broadcasts, 0);
    sl_comm_free(&c[0]);
    sl_comm_free(&c[1]);
    sl_comm none = {0};
    cr_assert_eq(sl_comm_barrier(&none), SL_INVALID_ARGUMENT);
    sl_comm_free(&none); /* harmless */
}
