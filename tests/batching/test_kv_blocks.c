/*
 * test_kv_blocks.c — the KV block manager alone (no model, microseconds): allocation and reference counts,
 * prefix-cache hits along a hash chain, the last token always left to compute, tenants kept apart, LRU
 * eviction only under pressure, identical blocks cached once, allocation failures, and a random soak that ends
 * with every block free.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "kv_blocks.h"
#include "sl_util.h"
#include "testutil.h"

#define BS 4 /* small blocks so a handful of tokens spans several */

static sl_kv_blocks *mk(int n_blocks, int caching) {
    sl_kv_blocks *m = NULL;
    cr_assert_eq(sl_kv_blocks_create(n_blocks, BS, caching, &m), SL_OK);
    return m;
}

static void table_init(sl_kv_table *t, int32_t *ids) { *t = (sl_kv_table){.ids = ids}; }

/* Admits a sequence the way the engine does: cache lookup, blocks for the rest, then everything computed. */
static int admit(sl_kv_blocks *m, sl_kv_table *t, uint64_t ns, const int32_t *tok, int n) {
    int hit = sl_kv_blocks_match(m, t, ns, tok, n);
    cr_assert(sl_kv_blocks_grow(m, t, n));
    sl_kv_blocks_commit(m, t, ns, tok, n);
    return hit;
}

Test(kv_blocks, allocate_and_release_counts_every_block) {
    sl_kv_blocks *m = mk(8, 0);
    int32_t a_ids[8], b_ids[8];
    sl_kv_table a, b;
    table_init(&a, a_ids);
    table_init(&b, b_ids);
    cr_assert(sl_kv_blocks_grow(m, &a, 9)); /* 9 tokens -> 3 blocks */
    cr_assert_eq(a.n, 3);
    cr_assert_eq(sl_kv_blocks_n_free(m), 5);
    cr_assert(sl_kv_blocks_grow(m, &a, 12)); /* still 3 blocks */
    cr_assert_eq(a.n, 3);
    cr_assert_not(sl_kv_blocks_grow(m, &b, 24)); /* 6 blocks > 5 free: nothing taken */
    cr_assert_eq(b.n, 0);
    cr_assert_eq(sl_kv_blocks_n_free(m), 5);
    cr_assert(sl_kv_blocks_grow(m, &b, 20));
    cr_assert_eq(sl_kv_blocks_n_free(m), 0);
    for (int i = 0; i < a.n; i++)
        for (int j = 0; j < b.n; j++) cr_assert_neq(a.ids[i], b.ids[j], "a block is in two tables");
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_release(m, &b);
    cr_assert_eq(sl_kv_blocks_n_free(m), 8);
    cr_assert_eq(sl_kv_blocks_n_cached(m), 0, "caching off caches nothing");
    sl_kv_blocks_free(m);
}

Test(kv_blocks, repeated_prompt_hits_full_blocks_and_shares_them) {
    sl_kv_blocks *m = mk(16, 1);
    int32_t tok[10] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14}; /* 2 full blocks + 2 tokens */
    int32_t a_ids[4], b_ids[4];
    sl_kv_table a, b;
    table_init(&a, a_ids);
    table_init(&b, b_ids);
    cr_assert_eq(admit(m, &a, 0, tok, 10), 0, "a cold cache hits nothing");
    cr_assert_eq(sl_kv_blocks_n_cached(m), 2, "the two full blocks are cached once computed");
    cr_assert_eq(admit(m, &b, 0, tok, 10), 8);
    cr_assert_eq(b.ids[0], a.ids[0]);
    cr_assert_eq(b.ids[1], a.ids[1]);
    cr_assert_neq(b.ids[2], a.ids[2], "the partial block holding the last token is private");
    cr_assert_eq(sl_kv_blocks_refs(m, a.ids[0]), 2);
    cr_assert_eq(sl_kv_blocks_n_free(m), 16 - 4);
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_release(m, &b);
    cr_assert_eq(sl_kv_blocks_n_free(m), 16, "cached blocks without references count as free");
    cr_assert_eq(sl_kv_blocks_n_cached(m), 2, "and stay cached");
    /* A prompt that diverges in its second block reuses only the first. */
    int32_t tok2[10] = {5, 6, 7, 8, 9, 10, 99, 12, 13, 14};
    cr_assert_eq(admit(m, &a, 0, tok2, 10), 4);
    sl_kv_blocks_release(m, &a);
    /* Same tokens at a different place in the chain are a different block. */
    int32_t tok3[10] = {1, 2, 3, 4, 9, 10, 11, 12, 0, 0};
    cr_assert_eq(admit(m, &a, 0, tok3, 10), 0);
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, exact_multiple_of_block_size_reuses_every_block) {
    sl_kv_blocks *m = mk(8, 1);
    int32_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t a_ids[2], b_ids[2];
    sl_kv_table a, b;
    table_init(&a, a_ids);
    table_init(&b, b_ids);
    admit(m, &a, 0, tok, 8);
    cr_assert_eq(sl_kv_blocks_n_cached(m), 2);
    /* Both blocks are reused, the last token's too (the engine recomputes that token for its logits and sends
     * its K/V to a sink slot): no block is allocated, and both are known to the cache chain. */
    cr_assert_eq(admit(m, &b, 0, tok, 8), 8);
    cr_assert_eq(b.ids[0], a.ids[0]);
    cr_assert_eq(b.ids[1], a.ids[1]);
    cr_assert_eq(b.n_hashed, 2);
    cr_assert_eq(sl_kv_blocks_n_free(m), 6);
    /* A longer prompt with the same 8 tokens in front reuses both. */
    int32_t longer[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int32_t c_ids[3];
    sl_kv_table c;
    table_init(&c, c_ids);
    cr_assert_eq(admit(m, &c, 0, longer, 9), 8);
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_release(m, &b);
    sl_kv_blocks_release(m, &c);
    cr_assert_eq(sl_kv_blocks_n_free(m), 8);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, tenants_never_share) {
    sl_kv_blocks *m = mk(12, 1);
    int32_t tok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    uint64_t alice = sl_kv_namespace("alice"), bob = sl_kv_namespace("bob");
    cr_assert_eq(sl_kv_namespace(NULL), sl_kv_namespace(""));
    cr_assert_neq(alice, bob);
    cr_assert_neq(alice, sl_kv_namespace(NULL));
    int32_t ids[3][3];
    sl_kv_table t[3];
    for (int i = 0; i < 3; i++) table_init(&t[i], ids[i]);
    cr_assert_eq(admit(m, &t[0], alice, tok, 9), 0);
    cr_assert_eq(admit(m, &t[1], bob, tok, 9), 0, "bob must not hit alice's blocks");
    cr_assert_eq(admit(m, &t[2], sl_kv_namespace(NULL), tok, 9), 0, "nor the default tenant");
    for (int i = 0; i < 3; i++) sl_kv_blocks_release(m, &t[i]);
    cr_assert_eq(admit(m, &t[0], bob, tok, 9), 8, "bob hits his own");
    sl_kv_blocks_release(m, &t[0]);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, cached_blocks_are_evicted_least_recently_used_and_only_under_pressure) {
    sl_kv_blocks *m = mk(6, 1);
    int32_t p1[5] = {1, 1, 1, 1, 0}, p2[5] = {2, 2, 2, 2, 0}, p3[5] = {3, 3, 3, 3, 0};
    int32_t ids[8];
    sl_kv_table t;
    table_init(&t, ids);
    /* three prompts, each leaving one cached block (and one uncached free block) behind */
    admit(m, &t, 0, p1, 5);
    sl_kv_blocks_release(m, &t);
    admit(m, &t, 0, p2, 5);
    sl_kv_blocks_release(m, &t);
    admit(m, &t, 0, p3, 5);
    sl_kv_blocks_release(m, &t);
    cr_assert_eq(sl_kv_blocks_n_cached(m), 3);
    /* use p1 again: it becomes the most recently used */
    cr_assert_eq(admit(m, &t, 0, p1, 5), 4);
    sl_kv_blocks_release(m, &t);
    /* 3 uncached free blocks go first: nothing evicted */
    cr_assert(sl_kv_blocks_grow(m, &t, 12));
    cr_assert_eq(sl_kv_blocks_n_cached(m), 3, "no eviction while uncached blocks are free");
    /* one more block must evict the least recently used: p2 */
    cr_assert(sl_kv_blocks_grow(m, &t, 16));
    cr_assert_eq(sl_kv_blocks_n_cached(m), 2);
    sl_kv_blocks_release(m, &t);
    int32_t ids2[2];
    sl_kv_table u;
    table_init(&u, ids2);
    cr_assert_eq(sl_kv_blocks_match(m, &u, 0, p2, 5), 0, "p2 was evicted");
    cr_assert_eq(sl_kv_blocks_match(m, &u, 0, p1, 5), 4, "p1 survived");
    sl_kv_blocks_release(m, &u);
    cr_assert_eq(sl_kv_blocks_match(m, &u, 0, p3, 5), 4, "p3 survived");
    sl_kv_blocks_release(m, &u);
    cr_assert_eq(sl_kv_blocks_n_free(m), 6);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, identical_blocks_computed_twice_keep_one_cached_copy) {
    sl_kv_blocks *m = mk(8, 1);
    int32_t tok[5] = {4, 3, 2, 1, 0};
    int32_t a_ids[2], b_ids[2];
    sl_kv_table a, b;
    table_init(&a, a_ids);
    table_init(&b, b_ids);
    /* both admitted before either is computed (n > 1 choices in one step): both miss */
    cr_assert_eq(sl_kv_blocks_match(m, &a, 0, tok, 5), 0);
    cr_assert(sl_kv_blocks_grow(m, &a, 5));
    cr_assert_eq(sl_kv_blocks_match(m, &b, 0, tok, 5), 0);
    cr_assert(sl_kv_blocks_grow(m, &b, 5));
    sl_kv_blocks_commit(m, &a, 0, tok, 5);
    sl_kv_blocks_commit(m, &b, 0, tok, 5);
    cr_assert_eq(sl_kv_blocks_n_cached(m), 1);
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_release(m, &b);
    cr_assert_eq(sl_kv_blocks_n_free(m), 8);
    cr_assert_eq(admit(m, &a, 0, tok, 5), 4);
    sl_kv_blocks_release(m, &a);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, chain_continues_through_generated_tokens) {
    /* Blocks filled by decoding are cached too, so a preempted sequence recomputes almost nothing. */
    sl_kv_blocks *m = mk(8, 1);
    int32_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t ids[3];
    sl_kv_table t;
    table_init(&t, ids);
    cr_assert(sl_kv_blocks_grow(m, &t, 5));
    sl_kv_blocks_commit(m, &t, 0, tok, 5); /* prompt of 5 */
    for (int n = 6; n <= 11; n++) {        /* decode one token at a time */
        cr_assert(sl_kv_blocks_grow(m, &t, n));
        sl_kv_blocks_commit(m, &t, 0, tok, n);
    }
    cr_assert_eq(sl_kv_blocks_n_cached(m), 2);
    sl_kv_blocks_release(m, &t);
    cr_assert_eq(sl_kv_blocks_match(m, &t, 0, tok, 12), 8);
    sl_kv_blocks_release(m, &t);
    sl_kv_blocks_free(m);
}

Test(kv_blocks, bad_sizes_are_refused) {
    sl_kv_blocks *m = NULL;
    cr_assert_eq(sl_kv_blocks_create(0, 16, 1, &m), SL_INVALID_ARGUMENT);
    cr_assert_null(m);
    cr_assert_eq(sl_kv_blocks_create(16, 0, 1, &m), SL_INVALID_ARGUMENT);
}

/* Random admissions over a tiny vocabulary (so prefixes repeat and the index churns), releases in random
 * order, pool pressure: reference counts always equal the table entries, and at the end every block is free. */
Test(kv_blocks, random_soak_leaves_every_block_free) {
    enum { N_BLOCKS = 64, N_SEQ = 12, MAX_TOK = 40 };
    sl_kv_blocks *m = mk(N_BLOCKS, 1);
    uint64_t rng = 1234;
    int32_t ids[N_SEQ][MAX_TOK / BS + 1], tok[N_SEQ][MAX_TOK];
    int n_tok[N_SEQ];
    sl_kv_table t[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) table_init(&t[i], ids[i]);
    long hits = 0;
    for (int it = 0; it < 20000; it++) {
        int i = (int)((uint32_t)sl_test_rand_u64(&rng) % N_SEQ);
        if (t[i].n > 0) {
            sl_kv_blocks_release(m, &t[i]);
        } else {
            n_tok[i] = 1 + (int)((uint32_t)sl_test_rand_u64(&rng) % MAX_TOK);
            for (int k = 0; k < n_tok[i]; k++) tok[i][k] = (int32_t)((uint32_t)sl_test_rand_u64(&rng) % 2); /* vocab of 2 */
            uint64_t ns = (uint32_t)sl_test_rand_u64(&rng) % 2;
            int hit = sl_kv_blocks_match(m, &t[i], ns, tok[i], n_tok[i]);
            cr_assert(hit % BS == 0 && hit <= n_tok[i]);
            hits += hit;
            if (!sl_kv_blocks_grow(m, &t[i], n_tok[i])) {
                sl_kv_blocks_release(m, &t[i]);
                continue;
            }
            sl_kv_blocks_commit(m, &t[i], ns, tok[i], n_tok[i]);
        }
        int refs[N_BLOCKS] = {0}, held = 0;
        for (int s = 0; s < N_SEQ; s++)
            for (int k = 0; k < t[s].n; k++) refs[t[s].ids[k]]++;
        for (int b = 0; b < N_BLOCKS; b++) {
            cr_assert_eq(sl_kv_blocks_refs(m, b), refs[b], "block %d", b);
            held += refs[b] > 0;
        }
        cr_assert_eq(sl_kv_blocks_n_free(m), N_BLOCKS - held);
    }
    cr_assert_gt(hits, 0, "a 2-token vocabulary repeats prefixes");
    for (int i = 0; i < N_SEQ; i++) sl_kv_blocks_release(m, &t[i]);
    cr_assert_eq(sl_kv_blocks_n_free(m), N_BLOCKS);
    sl_kv_blocks_free(m);
}

/* Every allocation of create may fail: a status, nothing leaked (the sanitizer build checks), then success. */
Test(kv_blocks, allocation_failures_are_statuses) {
    int failures = 0;
    for (long n = 0;; n++) {
        sl_kv_blocks *m = NULL;
        sl__alloc_fail_after(n);
        sl_status st = sl_kv_blocks_create(32, BS, 1, &m);
        sl__alloc_fail_after(-1);
        if (st == SL_OK) {
            cr_assert_not_null(m);
            sl_kv_blocks_free(m);
            break;
        }
        cr_assert_eq(st, SL_OUT_OF_MEMORY);
        cr_assert_null(m);
        failures++;
        cr_assert_lt(n, 100, "create never succeeded");
    }
    cr_assert_gt(failures, 5, "every allocation was tried");
}
