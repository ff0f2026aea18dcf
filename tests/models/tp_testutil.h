/*
 * tp_testutil.h — shared by the tensor-parallel tests (tests/models/test_tp_*.c, test_model_logits_tp.c):
 * loading a model at a TP size, and a teacher-forced run through sl_model_forward (a prefill batch, then
 * one-token decode steps) whose every row returns logits.
 */
#ifndef SL_TP_TESTUTIL_H
#define SL_TP_TESTUTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "model.h"

static inline sl_model *tp_load(const char *path, int tp, sl_precision prec, int n_threads) {
    sl_model_params mp = {.path = path, .n_threads = n_threads, .precision = prec, .max_model_len = 128,
                          .tp_size = tp};
    sl_model *m = NULL;
    sl_status st = sl_model_load(&mp, &m);
    cr_assert_eq(st, SL_OK, "loading %s at TP %d: %s", path, tp, sl_last_error());
    cr_assert_eq(sl_model_kv_alloc(m, 8, 16, SL_KV_F32), SL_OK, "%s", sl_last_error());
    return m;
}

/* Tokens [0, n_prefill) in one batch, then the rest one per step. logits: [n][n_vocab]. Returns the status
 * of the first forward that failed (SL_OK when all ran). */
static inline sl_status tp_run(sl_model *m, const int32_t *tokens, int n, int n_prefill, float *logits) {
    int n_vocab = sl_model_get_hparams(m)->n_vocab;
    int32_t pos[128], seq[128] = {0};
    int64_t slot[128];
    uint8_t out[128];
    int32_t table[8] = {0, 1, 2, 3, 4, 5, 6, 7}; /* 8 blocks of 16: 128 tokens */
    const int32_t *tables[1] = {table};
    cr_assert(n <= 128);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        slot[i] = i;
        out[i] = SL_OUT_LOGITS;
    }
    for (int s = 0; s < n;) {
        int k = s == 0 ? n_prefill : 1;
        sl_batch b = {.n_tokens = k, .tokens = tokens + s, .pos = pos + s, .seq = seq, .slot = slot + s,
                      .output = out + s, .n_seqs = 1, .block_tables = tables,
                      .logits = logits + (size_t)s * n_vocab};
        sl_status st = sl_model_forward(m, &b);
        if (st != SL_OK) return st;
        s += k;
    }
    return SL_OK;
}

/* max |a - ref| / max |ref| over n values */
static inline double tp_rel_max_err(const float *a, const float *ref, size_t n) {
    double dmax = 0, rmax = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]), r = fabs((double)ref[i]);
        if (d > dmax) dmax = d;
        if (r > rmax) rmax = r;
    }
    return rmax > 0 ? dmax / rmax : dmax;
}

static inline int tp_argmax(const float *x, int n, float *margin) {
    int best = 0, second = -1;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            second = best;
            best = i;
        } else if (second < 0 || x[i] > x[second]) {
            second = i;
        }
    }
    if (margin) *margin = second >= 0 ? x[best] - x[second] : INFINITY;
    return best;
}

#endif
