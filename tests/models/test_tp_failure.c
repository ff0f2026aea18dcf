/*
 * test_tp_failure.c — a rank that fails mid-forward fails the whole forward, without deadlocking the ranks
 * that wait for it in an all-reduce, and the model works again at the next forward.
 *
 * Faults come from the backend's injection hook (SLUICE_FAULT_INJECT=matmul:<n>[@tag], backend.c): tagged,
 * only calls from threads with that tag count, and every rank's thread takes over the caller's tag (they all
 * work for its replica), so the 3rd product of the replica's ranks fails (in layer 0, before the first
 * all-reduce: whichever rank it was, the others go on to wait for it in the all-reduce); a call from a thread
 * with another tag never counts; untagged, the n-th product of any rank fails. Criterion runs each test in its
 * own process, so each reads its own setting.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"
#include "tp_testutil.h"

#define N_TOK 20
#define N_PREFILL 12

static void check_fails_then_recovers(const char *fault, int tag, const char *want_rank) {
    setenv("SLUICE_FAULT_INJECT", fault, 1);
    sl_backend_fault_tag_set(tag);
    char *path = sl_test_data_path("stories260K.gguf");
    sl_model *m = tp_load(path, 4, SL_PRECISION_EXACT, 2);
    int V = sl_model_get_hparams(m)->n_vocab;
    int32_t tok[N_TOK];
    for (int i = 0; i < N_TOK; i++) tok[i] = 10 + 7 * i;
    float *a = malloc((size_t)N_TOK * V * sizeof(float));
    float *b = malloc((size_t)N_TOK * V * sizeof(float));
    sl_status st = tp_run(m, tok, N_TOK, N_PREFILL, a);
    cr_assert_eq(st, SL_DEVICE, "the injected fault did not fail the forward: %s", sl_status_name(st));
    cr_assert(strstr(sl_last_error(), "injected device fault") != NULL, "message: %s", sl_last_error());
    if (want_rank) cr_assert(strstr(sl_last_error(), want_rank) != NULL, "message: %s", sl_last_error());
    /* the fault is spent: the same steps now run, and equal a fresh model's bit for bit */
    cr_assert_eq(tp_run(m, tok, N_TOK, N_PREFILL, a), SL_OK, "after a failure: %s", sl_last_error());
    sl_model *fresh = tp_load(path, 4, SL_PRECISION_EXACT, 2);
    cr_assert_eq(tp_run(fresh, tok, N_TOK, N_PREFILL, b), SL_OK, "%s", sl_last_error());
    cr_assert(memcmp(a, b, (size_t)N_TOK * V * sizeof(float)) == 0, "logits after recovery differ");
    sl_model_free(fresh);
    sl_model_free(m);
    free(a);
    free(b);
    free(path);
}

Test(tp_failure, a_rank_fails_while_the_others_wait_in_an_all_reduce, .timeout = 60) {
    /* the failing rank is reported, not one released by its abort */
    check_fails_then_recovers("matmul:3@7", 7, "of 4: matmul: injected device fault");
}

Test(tp_failure, another_replicas_tag_does_not_count, .timeout = 60) {
    setenv("SLUICE_FAULT_INJECT", "matmul:1@3", 1);
    sl_backend_fault_tag_set(2); /* this replica is 2: a fault meant for replica 3 never fires here */
    char *path = sl_test_data_path("stories260K.gguf");
    sl_model *m = tp_load(path, 4, SL_PRECISION_EXACT, 2);
    int V = sl_model_get_hparams(m)->n_vocab;
    int32_t tok[N_TOK];
    for (int i = 0; i < N_TOK; i++) tok[i] = 10 + 7 * i;
    float *a = malloc((size_t)N_TOK * V * sizeof(float));
    cr_assert_eq(tp_run(m, tok, N_TOK, N_PREFILL, a), SL_OK, "%s", sl_last_error());
    sl_model_free(m);
    free(a);
    free(path);
}

Test(tp_failure, any_rank_failing_mid_forward_fails_the_forward, .timeout = 60) {
    check_fails_then_recovers("matmul:17", -1, NULL);
}
