/*
 * test_engine_default.c — on the default model (SmolLM2-135M, Q4_1, 30 layers): a sequence's tokens are the
 * same alone and in a mixed continuous batch (other prompts of other lengths joining and leaving), in the fast
 * precision mode whose integer products and per-row activation quantization keep rows independent.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sluice.h"
#include "testutil.h"

#define N_PROMPTS 6
#define N_GEN 24

static const char *k_prompts[N_PROMPTS] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the river, there lived",
    "1, 2, 3, 4,",
    "Water boils at",
    "The three primary colors are red, yellow and",
};

static void run(sl_engine_t *e, int together, int32_t out[N_PROMPTS][N_GEN]) {
    sl_request_t *r[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        sl_request_params rp;
        sl_request_params_init(&rp);
        rp.prompt_text = k_prompts[i];
        rp.max_tokens = N_GEN;
        rp.ignore_eos = 1;
        rp.sampling.temperature = 0;
        cr_assert_eq(sl_request_submit(e, &rp, &r[i]), SL_OK, "%s", sl_last_error());
        if (together) continue;
        for (int n = 0;;) { /* alone: wait for it before the next one */
            sl_event *ev;
            cr_assert_eq(sl_request_next_event(r[i], 60000, &ev), SL_OK);
            if (ev->type == SL_EVENT_TOKENS) out[i][n++] = ev->tokens[0];
            int done = ev->type == SL_EVENT_DONE;
            sl_event_free(ev);
            if (done) break;
        }
        sl_request_free(r[i]);
    }
    if (!together) return;
    for (int i = 0; i < N_PROMPTS; i++) {
        for (int n = 0;;) {
            sl_event *ev;
            cr_assert_eq(sl_request_next_event(r[i], 60000, &ev), SL_OK);
            if (ev->type == SL_EVENT_TOKENS) out[i][n++] = ev->tokens[0];
            int done = ev->type == SL_EVENT_DONE;
            sl_event_free(ev);
            if (done) break;
        }
        sl_request_free(r[i]);
    }
}

Test(engine_default, batched_equals_alone_on_the_default_model, .timeout = 300) {
    char *path = sl_test_default_model_path();
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = path;
    ep.n_threads = 2;
    ep.max_model_len = 256;
    ep.max_num_batched_tokens = 32; /* prompts get chunked while others decode */
    ep.enable_prefix_caching = 0;
    sl_engine_t *e = NULL;
    cr_assert_eq(sl_engine_create(&ep, &e), SL_OK, "%s (run ./setup.sh to fetch the default model)", sl_last_error());
    free(path);
    int32_t alone[N_PROMPTS][N_GEN], together[N_PROMPTS][N_GEN];
    run(e, 0, alone);
    run(e, 1, together);
    for (int i = 0; i < N_PROMPTS; i++)
        cr_assert(memcmp(alone[i], together[i], sizeof alone[i]) == 0, "prompt %d: tokens differ alone and batched", i);
    sl_engine_free(e);
}
