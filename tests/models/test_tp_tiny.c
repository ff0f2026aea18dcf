/*
 * test_tp_tiny.c — tensor parallelism on the tiny real model (stories260K: 5 layers, 8 heads, 4 KV heads,
 * n_ff 172, f32 weights), through the in-process communicator.
 *
 * TP 2 and TP 4 (the sizes that divide 8 heads, 4 KV heads and 172 MLP rows) give the TP 1 logits over 40
 * teacher-forced tokens (a 24-token prefill, then 16 decode steps) within max|Δ|/max|ref| < 1e-4: the
 * weights and every activation are f32, and only the order of the attn_output and ffn_down sums differs
 * (split over ranks, then added), a few ulps per layer. The same TP size run twice gives identical bits
 * (the reduction order is fixed). Each rank holds exactly 1/TP of the layers' weight bytes and performs
 * exactly 2 * n_layer all-reduces per forward; TP 3 is refused at load with a message naming the sizes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "testutil.h"
#include "tp_testutil.h"

#define N_TOK 40
#define N_PREFILL 24

static void tokens_make(int32_t *t, int n, int n_vocab) {
    uint64_t s = 1234;
    for (int i = 0; i < n; i++) t[i] = 3 + (int32_t)(sl_test_rand_u64(&s) % (uint64_t)(n_vocab - 3));
}

static float *run_tp(const char *path, int tp, sl_precision prec, sl_model **keep) {
    sl_model *m = tp_load(path, tp, prec, 2);
    int V = sl_model_get_hparams(m)->n_vocab;
    cr_assert_eq(sl_model_tp_size(m), tp > 1 ? tp : 1);
    int32_t tok[N_TOK];
    tokens_make(tok, N_TOK, V);
    float *logits = malloc((size_t)N_TOK * V * sizeof(float));
    cr_assert_eq(tp_run(m, tok, N_TOK, N_PREFILL, logits), SL_OK, "TP %d: %s", tp, sl_last_error());
    if (keep)
        *keep = m;
    else
        sl_model_free(m);
    return logits;
}

Test(tp_tiny, tp2_and_tp4_match_tp1_logits, .timeout = 120) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_model *m1;
    float *ref = run_tp(path, 1, SL_PRECISION_EXACT, &m1);
    int V = sl_model_get_hparams(m1)->n_vocab;
    sl_model_free(m1);
    int sizes[] = {2, 4};
    for (int i = 0; i < 2; i++) {
        float *got = run_tp(path, sizes[i], SL_PRECISION_EXACT, NULL);
        double err = tp_rel_max_err(got, ref, (size_t)N_TOK * V);
        cr_log_info("TP %d: max|d|/max|ref| = %.3g\n", sizes[i], err);
        cr_expect(err < 1e-4, "TP %d: max|d|/max|ref| = %.3g over 1e-4", sizes[i], err);
        for (int t = 0; t < N_TOK; t++) {
            float margin;
            int want = tp_argmax(ref + (size_t)t * V, V, &margin);
            if (margin > 1e-3f)
                cr_expect_eq(tp_argmax(got + (size_t)t * V, V, NULL), want, "TP %d token %d: top-1 differs",
                             sizes[i], t);
        }
        float *again = run_tp(path, sizes[i], SL_PRECISION_EXACT, NULL);
        cr_expect(memcmp(got, again, (size_t)N_TOK * V * sizeof(float)) == 0,
                  "TP %d: two runs differ (the reduction order must be fixed)", sizes[i]);
        free(again);
        free(got);
    }
    free(ref);
    free(path);
}

Test(tp_tiny, fast_mode_matches_too, .timeout = 120) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_model *m1;
    float *ref = run_tp(path, 1, SL_PRECISION_FAST, &m1);
    int V = sl_model_get_hparams(m1)->n_vocab;
    sl_model_free(m1);
    float *got = run_tp(path, 2, SL_PRECISION_FAST, NULL);
    double err = tp_rel_max_err(got, ref, (size_t)N_TOK * V);
    cr_expect(err < 1e-4, "fast mode TP 2: max|d|/max|ref| = %.3g", err);
    free(got);
    free(ref);
    free(path);
}

Test(tp_tiny, ranks_hold_a_share_and_all_reduce_twice_per_layer, .timeout = 60) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_model *m1 = tp_load(path, 1, SL_PRECISION_EXACT, 2);
    uint64_t all = sl_model_rank_weight_bytes(m1, 0);
    cr_assert(all > 0);
    sl_comm_stats st1;
    cr_assert_eq(sl_model_comm_stats(m1, 0, &st1), SL_OK);
    cr_assert_eq(st1.all_reduces, 0);
    cr_assert_eq(sl_model_comm_stats(m1, 1, &st1), SL_INVALID_ARGUMENT);
    sl_model_free(m1);

    sl_model *m = tp_load(path, 4, SL_PRECISION_EXACT, 2);
    const sl_model_hparams *hp = sl_model_get_hparams(m);
    for (int r = 0; r < 4; r++)
        cr_expect_eq(sl_model_rank_weight_bytes(m, r) * 4, all, "rank %d holds %llu of %llu layer bytes", r,
                     (unsigned long long)sl_model_rank_weight_bytes(m, r), (unsigned long long)all);
    cr_expect_eq(sl_model_rank_weight_bytes(m, 4), 0);
    int32_t tok[N_TOK];
    tokens_make(tok, N_TOK, hp->n_vocab);
    float *logits = malloc((size_t)N_TOK * hp->n_vocab * sizeof(float));
    cr_assert_eq(tp_run(m, tok, N_TOK, N_PREFILL, logits), SL_OK, "%s", sl_last_error());
    int n_forwards = 1 + (N_TOK - N_PREFILL);
    for (int r = 0; r < 4; r++) {
        sl_comm_stats st;
        cr_assert_eq(sl_model_comm_stats(m, r, &st), SL_OK);
        cr_expect_eq(st.all_reduces, (uint64_t)(2 * hp->n_layer * n_forwards), "rank %d: %llu all-reduces", r,
                     (unsigned long long)st.all_reduces);
        /* each moves the step's [T][n_embd] f32 block: N_TOK rows in all over the forwards */
        cr_expect_eq(st.bytes_reduced, (uint64_t)2 * hp->n_layer * N_TOK * hp->n_embd * sizeof(float));
        cr_expect_eq(st.all_gathers + st.broadcasts + st.barriers, 0);
    }
    free(logits);
    sl_model_free(m);
    free(path);
}

Test(tp_tiny, sizes_that_do_not_divide_are_refused, .timeout = 30) {
    char *path = sl_test_data_path("stories260K.gguf");
    int bad[] = {3, 8, 16};
    for (int i = 0; i < 3; i++) {
        sl_model_params mp = {.path = path, .n_threads = 1, .max_model_len = 64, .tp_size = bad[i]};
        sl_model *m = (sl_model *)1;
        cr_assert_eq(sl_model_load(&mp, &m), SL_INVALID_ARGUMENT, "TP %d loaded", bad[i]);
        cr_assert_null(m);
        char want[128];
        snprintf(want, sizeof want, "tensor parallel size %d does not divide the model's 8 attention heads, 4 KV "
                 "heads and 172 feed-forward rows", bad[i]);
        cr_assert(strstr(sl_last_error(), want) != NULL, "message: %s", sl_last_error());
    }
    sl_model_params neg = {.path = path, .n_threads = 1, .max_model_len = 64, .tp_size = -2};
    sl_model *m;
    cr_assert_eq(sl_model_load(&neg, &m), SL_INVALID_ARGUMENT);
    free(path);
}

Test(tp_tiny, a_cuda_rank_fails_with_the_backend_status, .timeout = 30) {
    char *path = sl_test_data_path("stories260K.gguf");
    int devices[2] = {SL_DEVICE_CPU, 0};
    sl_model_params mp = {.path = path, .n_threads = 1, .max_model_len = 64, .tp_size = 2, .devices = devices};
    sl_model *m;
    /* without CUDA in the build (SL_UNSUPPORTED) or without a GPU (SL_DEVICE) the CUDA backend's own status
     * for rank 1; with one, mixed groups are refused (SL_UNSUPPORTED) */
    sl_status st = sl_model_load(&mp, &m);
    cr_assert(st == SL_UNSUPPORTED || st == SL_DEVICE, "status %d: %s", (int)st, sl_last_error());
    cr_assert(strstr(sl_last_error(), "rank 1") != NULL || strstr(sl_last_error(), "mixes CPU and GPU") != NULL,
              "%s", sl_last_error());
    free(path);
}
