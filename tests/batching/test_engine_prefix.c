/*
 * test_engine_prefix.c — automatic prefix caching end to end on stories260K through the public API.
 *
 * What a user notices: the same tokens with and without the cache (greedy and seeded sampling, n > 1,
 * concurrent requests sharing a prefix); a repeated prompt reports its reused tokens as cached_prompt_tokens
 * and in the engine's hit counters; a prompt that is an exact multiple of the block size still gets its next
 * token right; tenants do not share; turning the cache off turns the counters off.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sluice.h"
#include "testutil.h"

#define BLOCK 16

static sl_engine_t *open_engine(int caching) {
    char *path = sl_test_data_path("stories260K.gguf");
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    ep.model_path = path;
    ep.n_threads = 1; /* stories260K is too small for a second thread to pay; the suite runs on 2 shared cores */
    ep.max_num_seqs = 8;
    ep.max_num_batched_tokens = 64; /* small, so long prompts run in several chunks */
    ep.block_size = BLOCK;
    ep.enable_prefix_caching = caching;
    sl_engine_t *e = NULL;
    cr_assert_eq(sl_engine_create(&ep, &e), SL_OK, "engine: %s", sl_last_error());
    free(path);
    return e;
}

typedef struct result {
    int32_t tokens[2][256]; /* per choice */
    int n_tokens[2];
    sl_usage usage;
} result;

static sl_request_t *submit(sl_engine_t *e, const int32_t *prompt, int n_prompt, int max_tokens, float temp, int n,
                            const char *tenant) {
    sl_request_params rp;
    sl_request_params_init(&rp);
    rp.prompt_tokens = prompt;
    rp.n_prompt_tokens = (size_t)n_prompt;
    rp.max_tokens = max_tokens;
    rp.ignore_eos = 1;
    rp.n = n;
    rp.tenant = tenant;
    rp.sampling.temperature = temp;
    rp.sampling.seed = 7;
    rp.sampling.has_seed = 1;
    sl_request_t *r = NULL;
    cr_assert_eq(sl_request_submit(e, &rp, &r), SL_OK, "%s", sl_last_error());
    return r;
}

static void collect(sl_request_t *r, result *out) {
    memset(out, 0, sizeof *out);
    for (;;) {
        sl_event *ev;
        cr_assert_eq(sl_request_next_event(r, 30000, &ev), SL_OK, "no event within 30 s");
        if (ev->type == SL_EVENT_TOKENS) {
            cr_assert(ev->choice >= 0 && ev->choice < 2);
            for (size_t i = 0; i < ev->n_tokens; i++) out->tokens[ev->choice][out->n_tokens[ev->choice]++] = ev->tokens[i];
        }
        if (ev->type == SL_EVENT_FINISH) cr_assert_eq(ev->finish_reason, SL_FINISH_LENGTH);
        int done = ev->type == SL_EVENT_DONE;
        if (done) out->usage = ev->usage;
        sl_event_free(ev);
        if (done) break;
    }
    sl_request_free(r);
}

static void run_one(sl_engine_t *e, const int32_t *prompt, int n_prompt, int max_tokens, float temp, int n,
                    const char *tenant, result *out) {
    collect(submit(e, prompt, n_prompt, max_tokens, temp, n, tenant), out);
}

static void assert_same(const result *a, const result *b, int n, const char *what) {
    for (int c = 0; c < n; c++) {
        cr_assert_eq(a->n_tokens[c], b->n_tokens[c], "%s: choice %d length", what, c);
        for (int i = 0; i < a->n_tokens[c]; i++)
            cr_assert_eq(a->tokens[c][i], b->tokens[c][i], "%s: choice %d token %d: %d vs %d", what, c, i,
                         a->tokens[c][i], b->tokens[c][i]);
    }
}

static sl_engine_stats stats(sl_engine_t *e) {
    sl_engine_stats s;
    sl_engine_stats_init(&s);
    cr_assert_eq(sl_engine_get_stats(e, &s), SL_OK);
    return s;
}

/* prompt[0] = BOS, then ids from the ordinary part of the 512-token vocabulary (3.. are not control tokens) */
static void make_prompt(int32_t *p, int n, uint64_t seed) {
    uint64_t st = seed;
    p[0] = 1;
    for (int i = 1; i < n; i++) p[i] = 3 + (int32_t)(sl_test_rand_u64(&st) % 500);
}

Test(engine_prefix, same_outputs_with_and_without_the_cache, .timeout = 120) {
    sl_engine_t *on = open_engine(1), *off = open_engine(0);
    /* four prompts sharing a 50-token prefix (3 full blocks), each with its own tail */
    int32_t prompts[4][70];
    make_prompt(prompts[0], 70, 1);
    for (int k = 1; k < 4; k++) {
        memcpy(prompts[k], prompts[0], 50 * sizeof(int32_t));
        int32_t tail[70];
        make_prompt(tail, 70, 100 + (uint64_t)k);
        memcpy(prompts[k] + 50, tail + 50, 20 * sizeof(int32_t));
    }
    for (int pass = 0; pass < 2; pass++) {
        float temp = pass ? 0.8f : 0.0f;
        for (int k = 0; k < 4; k++) {
            result a, b, c;
            run_one(off, prompts[k], 70, 24, temp, 2, NULL, &a);
            run_one(on, prompts[k], 70, 24, temp, 2, NULL, &b);
            run_one(on, prompts[k], 70, 24, temp, 2, NULL, &c); /* now a hit */
            assert_same(&a, &b, 2, "cache on, first run");
            assert_same(&a, &c, 2, "cache on, repeated");
            cr_assert_eq(c.usage.cached_prompt_tokens, 64, "69 tokens before the last: 4 full blocks reused");
        }
    }
    /* concurrently: all four at once on a warm cache, tokens still those of the uncached engine */
    result want[4], got[4];
    for (int k = 0; k < 4; k++) run_one(off, prompts[k], 70, 24, 0.8f, 2, NULL, &want[k]);
    sl_request_t *rs[4];
    for (int k = 0; k < 4; k++) rs[k] = submit(on, prompts[k], 70, 24, 0.8f, 2, NULL);
    for (int k = 0; k < 4; k++) collect(rs[k], &got[k]);
    for (int k = 0; k < 4; k++) assert_same(&want[k], &got[k], 2, "concurrent with cache");
    cr_assert_gt(stats(on).prefix_cache_hits_total, 0);
    sl_engine_free(on);
    sl_engine_free(off);
}

Test(engine_prefix, repeated_prompt_counts_hits_and_reports_cached_tokens, .timeout = 60) {
    sl_engine_t *e = open_engine(1);
    int32_t p[40];
    make_prompt(p, 40, 5);
    result a, b;
    run_one(e, p, 40, 8, 0.0f, 1, NULL, &a);
    cr_assert_eq(a.usage.cached_prompt_tokens, 0, "cold cache");
    cr_assert_eq(a.usage.prompt_tokens, 40);
    sl_engine_stats s1 = stats(e);
    cr_assert_eq(s1.prefix_cache_queries_total, 40);
    cr_assert_eq(s1.prefix_cache_hits_total, 0);
    run_one(e, p, 40, 8, 0.0f, 1, NULL, &b);
    cr_assert_eq(b.usage.cached_prompt_tokens, 32, "two full blocks of the 40-token prompt come from the cache");
    sl_engine_stats s2 = stats(e);
    cr_assert_eq(s2.prefix_cache_queries_total, 80);
    cr_assert_eq(s2.prefix_cache_hits_total, 32);
    assert_same(&a, &b, 1, "repeat");
    /* a longer prompt with the same start reuses the blocks too, including those its predecessor generated */
    int32_t longer[60];
    memcpy(longer, p, sizeof p);
    memcpy(longer + 40, a.tokens[0], 8 * sizeof(int32_t));
    make_prompt(longer + 48, 12, 9);
    result c;
    run_one(e, longer, 60, 4, 0.0f, 1, NULL, &c);
    cr_assert_eq(c.usage.cached_prompt_tokens, 32, "blocks 0-1 (block 2 was still filling when the first run ended)");
    cr_assert_eq(stats(e).kv_cache_usage, 0.0, "cached blocks nobody holds count as free");
    sl_engine_free(e);
}

Test(engine_prefix, exact_multiple_of_block_size, .timeout = 60) {
    sl_engine_t *on = open_engine(1), *off = open_engine(0);
    int32_t p[2 * BLOCK];
    make_prompt(p, 2 * BLOCK, 11);
    result want, a, b;
    run_one(off, p, 2 * BLOCK, 10, 0.0f, 1, NULL, &want);
    run_one(on, p, 2 * BLOCK, 10, 0.0f, 1, NULL, &a);
    run_one(on, p, 2 * BLOCK, 10, 0.0f, 1, NULL, &b);
    /* both blocks are cached; only the last prompt token runs again, for its logits */
    cr_assert_eq(b.usage.cached_prompt_tokens, 2 * BLOCK - 1);
    assert_same(&want, &a, 1, "first");
    assert_same(&want, &b, 1, "with the cache");
    /* a one-block prompt (a prefix of the first, so cached already) reuses all but its last token */
    result c, d, c_off;
    run_one(off, p, BLOCK, 5, 0.0f, 1, NULL, &c_off);
    run_one(on, p, BLOCK, 5, 0.0f, 1, NULL, &c);
    run_one(on, p, BLOCK, 5, 0.0f, 1, NULL, &d);
    cr_assert_eq(d.usage.cached_prompt_tokens, BLOCK - 1);
    assert_same(&c_off, &c, 1, "one block");
    assert_same(&c_off, &d, 1, "one block, again");
    /* and the shared blocks were not disturbed: the two-block prompt still decodes the same */
    result e2;
    run_one(on, p, 2 * BLOCK, 10, 0.0f, 1, NULL, &e2);
    assert_same(&want, &e2, 1, "after the one-block prompts");
    sl_engine_free(on);
    sl_engine_free(off);
}

Test(engine_prefix, tenants_do_not_share_the_cache, .timeout = 60) {
    sl_engine_t *e = open_engine(1);
    int32_t p[40];
    make_prompt(p, 40, 21);
    result a, b, c, d;
    run_one(e, p, 40, 4, 0.0f, 1, "alice", &a);
    run_one(e, p, 40, 4, 0.0f, 1, "bob", &b);
    cr_assert_eq(b.usage.cached_prompt_tokens, 0, "bob must not reuse alice's blocks");
    run_one(e, p, 40, 4, 0.0f, 1, NULL, &c);
    cr_assert_eq(c.usage.cached_prompt_tokens, 0, "nor the default tenant");
    run_one(e, p, 40, 4, 0.0f, 1, "alice", &d);
    cr_assert_eq(d.usage.cached_prompt_tokens, 32, "alice reuses her own");
    assert_same(&a, &b, 1, "tenants");
    assert_same(&a, &d, 1, "tenants");
    sl_engine_free(e);
}

Test(engine_prefix, disabled_cache_reuses_nothing, .timeout = 60) {
    sl_engine_t *e = open_engine(0);
    int32_t p[40];
    make_prompt(p, 40, 31);
    result a, b;
    run_one(e, p, 40, 4, 0.0f, 1, NULL, &a);
    run_one(e, p, 40, 4, 0.0f, 1, NULL, &b);
    cr_assert_eq(b.usage.cached_prompt_tokens, 0);
    sl_engine_stats s = stats(e);
    cr_assert_eq(s.prefix_cache_queries_total, 0);
    cr_assert_eq(s.prefix_cache_hits_total, 0);
    cr_assert_eq(s.kv_cache_usage, 0.0);
    sl_engine_free(e);
}

Test(engine_prefix, choices_share_the_prompt_blocks, .timeout = 60) {
    /* n = 2 on a cold cache: the second choice waits for the first to compute the prompt, then reuses it */
    sl_engine_t *on = open_engine(1), *off = open_engine(0);
    int32_t p[70];
    make_prompt(p, 70, 41);
    result want, got;
    run_one(off, p, 70, 12, 0.8f, 2, NULL, &want);
    run_one(on, p, 70, 12, 0.8f, 2, NULL, &got);
    assert_same(&want, &got, 2, "n = 2");
    cr_assert_eq(got.usage.cached_prompt_tokens, 0, "the request's first choice found nothing cached");
    sl_engine_stats s = stats(on);
    cr_assert_eq(s.prefix_cache_queries_total, 140);
    cr_assert_eq(s.prefix_cache_hits_total, 64, "the second choice reuses the first one's 4 full prompt blocks");
    sl_engine_free(on);
    sl_engine_free(off);
}
