/*
 * test_engine_preempt.c — running short of KV blocks, end to end on stories260K through the public API.
 *
 * A pool of 1.5 maximum-length sequences and 8 concurrent long requests: every request completes with the
 * tokens of an unpreempted run (with and without the prefix cache), and preemptions are counted. Priority
 * aging: a low-priority request under a constant stream of better-priority work still runs, within the bound
 * engine.c states. A leak check: hundreds of random requests with random cancellations and preemptions, then
 * every block is free and no sequence is left.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/sluice.h"
#include "testutil.h"

#define BLOCK 16
#define MAX_LEN 128 /* 8 blocks per sequence */

/* kv_blocks = 0: the default pool (ample). */
static sl_engine_t *open_engine(int kv_blocks, int caching, int max_num_seqs) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = path;
    ep.n_threads = 1; /* stories260K is too small for a second thread to pay; the suite runs on 2 shared cores */
    ep.max_num_seqs = max_num_seqs;
    ep.max_num_batched_tokens = 64;
    ep.max_model_len = MAX_LEN;
    ep.block_size = BLOCK;
    ep.enable_prefix_caching = caching;
    ep.max_waiting_requests = 4096;
    sl_engine_t *e = NULL;
    if (kv_blocks) {
        /* the block's bytes as models/ sizes them: K and V, every layer, f32 */
        cr_assert_eq(sl_engine_create(&ep, &e), SL_OK, "%s", sl_last_error());
        sl_model_info mi;
        sl_model_info_init(&mi);
        cr_assert_eq(sl_engine_model_info(e, &mi), SL_OK);
        sl_engine_free(e);
        uint64_t block_bytes = 2ull * (uint64_t)mi.n_layer * BLOCK * (uint64_t)mi.n_head_kv *
                               (uint64_t)(mi.n_embd / mi.n_head) * sizeof(float);
        ep.kv_cache_bytes = block_bytes * (uint64_t)kv_blocks;
    }
    cr_assert_eq(sl_engine_create(&ep, &e), SL_OK, "engine: %s", sl_last_error());
    free(path);
    return e;
}

static sl_engine_stats stats(sl_engine_t *e) {
    sl_engine_stats s;
    sl_engine_stats_init(&s);
    cr_assert_eq(sl_engine_get_stats(e, &s), SL_OK);
    return s;
}

/* The engine's view once it went idle: a request's DONE comes before the engine drops it from its running
 * set, and requests whose handle was freed early finish on the engine thread, so give it a moment (2 s). */
static sl_engine_stats wait_idle(sl_engine_t *e) {
    sl_engine_stats s = stats(e);
    for (int tries = 0; tries < 2000 && !(s.num_running == 0 && s.num_waiting == 0 && s.kv_cache_usage == 0.0);
         tries++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        s = stats(e);
    }
    return s;
}

static void make_prompt(int32_t *p, int n, uint64_t seed) {
    uint64_t st = seed;
    p[0] = 1; /* BOS; ids from 3 on are ordinary tokens of the 512-token vocabulary */
    for (int i = 1; i < n; i++) p[i] = 3 + (int32_t)(sl_test_rand_u64(&st) % 500);
}

static sl_request_t *submit(sl_engine_t *e, const int32_t *prompt, int n_prompt, int max_tokens, int n, int priority,
                            sl_event_cb cb, void *ud) {
    sl_request_params rp;
    sl_request_params_init(&rp);
    rp.prompt_tokens = prompt;
    rp.n_prompt_tokens = (size_t)n_prompt;
    rp.max_tokens = max_tokens;
    rp.ignore_eos = 1;
    rp.n = n;
    rp.priority = priority;
    rp.sampling.temperature = 0.8f;
    rp.sampling.seed = 99;
    rp.sampling.has_seed = 1;
    rp.callback = cb;
    rp.user_data = ud;
    sl_request_t *r = NULL;
    cr_assert_eq(sl_request_submit(e, &rp, &r), SL_OK, "%s", sl_last_error());
    return r;
}

typedef struct result {
    int32_t tokens[MAX_LEN];
    int n_tokens;
    sl_finish_reason finish;
} result;

static void collect(sl_request_t *r, result *out) {
    memset(out, 0, sizeof *out);
    for (;;) {
        sl_event *ev;
        cr_assert_eq(sl_request_next_event(r, 60000, &ev), SL_OK, "no event within 60 s");
        if (ev->type == SL_EVENT_TOKENS)
            for (size_t i = 0; i < ev->n_tokens; i++) out->tokens[out->n_tokens++] = ev->tokens[i];
        if (ev->type == SL_EVENT_FINISH) out->finish = ev->finish_reason;
        int done = ev->type == SL_EVENT_DONE;
        sl_event_free(ev);
        if (done) break;
    }
    sl_request_free(r);
}

enum { N_REQ = 8, PROMPT = 24, GEN = MAX_LEN - PROMPT - 4 };

Test(engine_preempt, small_pool_many_long_requests_all_complete_unchanged, .timeout = 120) {
    int32_t prompts[N_REQ][PROMPT];
    for (int i = 0; i < N_REQ; i++) make_prompt(prompts[i], PROMPT, 1000 + (uint64_t)i);
    /* reference: each request alone, with room to spare */
    sl_engine_t *ref = open_engine(0, 0, N_REQ);
    result want[N_REQ];
    for (int i = 0; i < N_REQ; i++) collect(submit(ref, prompts[i], PROMPT, GEN, 1, 0, NULL, NULL), &want[i]);
    cr_assert_eq(stats(ref).num_preemptions_total, 0);
    sl_engine_free(ref);

    for (int caching = 0; caching < 2; caching++) {
        /* 12 blocks = 1.5 sequences of MAX_LEN */
        sl_engine_t *e = open_engine(12, caching, N_REQ);
        sl_request_t *rs[N_REQ];
        for (int i = 0; i < N_REQ; i++) rs[i] = submit(e, prompts[i], PROMPT, GEN, 1, 0, NULL, NULL);
        for (int i = 0; i < N_REQ; i++) {
            result got;
            collect(rs[i], &got);
            cr_assert_eq(got.finish, SL_FINISH_LENGTH, "request %d", i);
            cr_assert_eq(got.n_tokens, GEN, "request %d", i);
            for (int k = 0; k < GEN; k++)
                cr_assert_eq(got.tokens[k], want[i].tokens[k], "caching %d, request %d, token %d: %d, unpreempted %d",
                             caching, i, k, got.tokens[k], want[i].tokens[k]);
        }
        sl_engine_stats s = wait_idle(e);
        cr_assert_gt(s.num_preemptions_total, 0, "a pool of 1.5 sequences must preempt");
        /* the prompts share nothing, so every hit is a preempted sequence finding its own blocks again */
        if (caching) cr_assert_gt(s.prefix_cache_hits_total, 0, "recomputation should hit the cache");
        cr_assert_eq(s.kv_cache_usage, 0.0);
        cr_assert_eq(s.num_running, 0);
        sl_engine_free(e);
    }
}

/* ---- aging ---------------------------------------------------------------------------------------------- */
typedef struct aging_state {
    _Atomic int h_done;       /* high-priority requests finished */
    _Atomic int h_outstanding;
    _Atomic int l_started;    /* h_done when the low-priority request's first token came, + 1 */
    _Atomic int l_done;
    _Atomic int h_waiting_at_start; /* high-priority requests still outstanding when it started */
} aging_state;

static aging_state g_aging;

static void on_high(const sl_event *ev, void *ud) {
    (void)ud;
    if (ev->type == SL_EVENT_DONE) {
        atomic_fetch_add(&g_aging.h_done, 1);
        atomic_fetch_sub(&g_aging.h_outstanding, 1);
    }
}

static void on_low(const sl_event *ev, void *ud) {
    (void)ud;
    if (ev->type == SL_EVENT_TOKENS && atomic_load(&g_aging.l_started) == 0) {
        atomic_store(&g_aging.h_waiting_at_start, atomic_load(&g_aging.h_outstanding));
        atomic_store(&g_aging.l_started, atomic_load(&g_aging.h_done) + 1);
    }
    if (ev->type == SL_EVENT_DONE) atomic_store(&g_aging.l_done, 1);
}

Test(engine_preempt, aging_lets_low_priority_work_through_a_constant_stream, .timeout = 120) {
    /* one sequence at a time, and always several better-priority requests waiting */
    sl_engine_t *e = open_engine(0, 1, 1);
    memset(&g_aging, 0, sizeof g_aging);
    int32_t p[8];
    make_prompt(p, 8, 5);
    /* KEEP: a deep queue, so that a slow test thread cannot let it run dry */
    enum { KEEP = 32, MAX_H = 400, H_TOKENS = 4, LOW_PRIORITY = 3 };
    int submitted = 0;
    sl_request_t *low = NULL, *high[MAX_H]; /* kept: freeing a handle cancels its request */
    while (!atomic_load(&g_aging.l_done) && submitted < MAX_H) {
        while (atomic_load(&g_aging.h_outstanding) < KEEP && submitted < MAX_H) {
            atomic_fetch_add(&g_aging.h_outstanding, 1);
            high[submitted++] = submit(e, p, 8, H_TOKENS, 1, 0, on_high, NULL);
        }
        if (!low && submitted >= KEEP) low = submit(e, p, 8, 4, 1, LOW_PRIORITY, on_low, NULL);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    while (atomic_load(&g_aging.h_outstanding) > 0 || !atomic_load(&g_aging.l_done)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int started_after = atomic_load(&g_aging.l_started) - 1;
    /* Bound (engine.c): after LOW_PRIORITY x 64 steps nothing new overtakes it. Each high-priority request
     * takes H_TOKENS steps, so about 3 x 64 / 4 = 48 of them, plus the KEEP already waiting, may go first;
     * without aging all MAX_H would. */
    cr_assert_geq(started_after, 0, "the low-priority request never produced a token");
    cr_assert_lt(started_after, LOW_PRIORITY * 64 / H_TOKENS + KEEP + 16, "low priority started after %d", started_after);
    cr_assert_geq(atomic_load(&g_aging.h_waiting_at_start), 2, "it ran only once the stream dried up");
    cr_assert_geq(started_after, KEEP, "priority still counts: it waited for the better work first");
    for (int i = 0; i < submitted; i++) sl_request_free(high[i]);
    sl_request_free(low);
    sl_engine_free(e);
}

/* ---- leak check ------------------------------------------------------------------------------------------ */
Test(engine_preempt, random_requests_and_cancellations_leave_every_block_free, .timeout = 120) {
    sl_engine_t *e = open_engine(12, 1, 6);
    uint64_t rng = 77;
    /* three shared prefixes so the cache is hit, shared and evicted while requests come and go */
    int32_t base[3][MAX_LEN];
    for (int i = 0; i < 3; i++) make_prompt(base[i], MAX_LEN, 500 + (uint64_t)i);
    enum { WAVES = 15, PER_WAVE = 20 };
    int n_done = 0;
    for (int w = 0; w < WAVES; w++) {
        sl_request_t *rs[PER_WAVE];
        int32_t prompts[PER_WAVE][MAX_LEN];
        for (int i = 0; i < PER_WAVE; i++) {
            int n_prompt = 1 + (int)(sl_test_rand_u64(&rng) % 60);
            memcpy(prompts[i], base[sl_test_rand_u64(&rng) % 3], (size_t)n_prompt * sizeof(int32_t));
            if (sl_test_rand_u64(&rng) % 2) prompts[i][n_prompt - 1] = 3 + (int32_t)(sl_test_rand_u64(&rng) % 500);
            int max_tokens = (int)(sl_test_rand_u64(&rng) % 48); /* up to 108 tokens: 7 of the 12 blocks */
            int n = 1 + (int)(sl_test_rand_u64(&rng) % 2);
            int prio = (int)(sl_test_rand_u64(&rng) % 3);
            rs[i] = submit(e, prompts[i], n_prompt, max_tokens, n, prio, NULL, NULL);
            if (sl_test_rand_u64(&rng) % 5 == 0) sl_request_cancel(rs[i]); /* before it runs, mostly */
        }
        for (int i = 0; i < PER_WAVE; i++) {
            int kind = (int)(sl_test_rand_u64(&rng) % 4);
            if (kind == 0) {
                sl_request_free(rs[i]); /* client gone: cancels; the engine finishes it on its own */
                n_done++;
                continue;
            }
            int cancel_after = kind == 1 ? 1 + (int)(sl_test_rand_u64(&rng) % 10) : -1;
            int n_events = 0;
            for (;;) {
                sl_event *ev;
                cr_assert_eq(sl_request_next_event(rs[i], 60000, &ev), SL_OK, "no event within 60 s");
                int done = ev->type == SL_EVENT_DONE;
                sl_event_free(ev);
                if (done) break;
                if (++n_events == cancel_after) sl_request_cancel(rs[i]);
            }
            sl_request_free(rs[i]);
            n_done++;
        }
    }
    cr_assert_eq(n_done, WAVES * PER_WAVE);
    sl_engine_stats s = wait_idle(e);
    cr_assert_eq(s.num_running, 0);
    cr_assert_eq(s.num_waiting, 0);
    cr_assert_eq(s.kv_cache_usage, 0.0, "blocks leaked: usage %g", s.kv_cache_usage);
    cr_assert_gt(s.num_preemptions_total, 0, "the small pool should have preempted");
    cr_assert_gt(s.prefix_cache_hits_total, 0, "shared prefixes should have hit");
    /* and the engine still works */
    int32_t p[10];
    make_prompt(p, 10, 3);
    result r;
    collect(submit(e, p, 10, 5, 1, 0, NULL, NULL), &r);
    cr_assert_eq(r.n_tokens, 5);
    sl_engine_free(e);
}
