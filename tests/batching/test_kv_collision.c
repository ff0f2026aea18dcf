/*
 * test_kv_collision.c — a 64-bit chain-key collision must never hand out another prefix's K/V.
 *
 * Real collisions cannot be produced on demand, so this test includes kv_blocks.c to reach its statics (the
 * archive's copy is then never linked in) and asks the index for a cached block's key with different parent,
 * namespace or tokens, which is what a collision looks like from the inside.
 */
#include <criterion/criterion.h>

#include "../../batching/kv_blocks.c"

Test(kv_collision, same_key_different_content_is_a_miss) {
    enum { BS = 4 };
    sl_kv_blocks *m = NULL;
    cr_assert_eq(sl_kv_blocks_create(8, BS, 1, &m), SL_OK);
    int32_t tok[5] = {10, 20, 30, 40, 50}, other[4] = {10, 20, 30, 41};
    int32_t ids[2];
    sl_kv_table t = {.ids = ids};
    cr_assert(sl_kv_blocks_grow(m, &t, 5));
    sl_kv_blocks_commit(m, &t, 7, tok, 5);
    cr_assert_eq(sl_kv_blocks_n_cached(m), 1);
    int32_t b = t.ids[0];
    uint64_t key = chain_key(KV_CHAIN_ROOT, 7, tok, BS);
    cr_assert_eq(m->key[b], key);
    cr_assert_eq(index_find(m, key, KV_CHAIN_ROOT, 7, tok), b, "the genuine lookup finds the block");
    cr_assert_eq(index_find(m, key, KV_CHAIN_ROOT, 7, other), -1, "same key, other tokens");
    cr_assert_eq(index_find(m, key, KV_CHAIN_ROOT, 8, tok), -1, "same key, other namespace");
    cr_assert_eq(index_find(m, key, KV_CHAIN_ROOT + 1, 7, tok), -1, "same key, other parent");
    /* and a colliding block is not registered over the genuine one */
    int32_t ids2[2];
    sl_kv_table u = {.ids = ids2};
    cr_assert(sl_kv_blocks_grow(m, &u, 4));
    cr_assert_eq(index_insert(m, u.ids[0], key, KV_CHAIN_ROOT, 7, other), 0);
    cr_assert_eq(index_find(m, key, KV_CHAIN_ROOT, 7, tok), b);
    sl_kv_blocks_release(m, &t);
    sl_kv_blocks_release(m, &u);
    cr_assert_eq(sl_kv_blocks_n_free(m), 8);
    sl_kv_blocks_free(m);
}

/* Many keys landing in one probe run, then the front half of the run evicted: backward-shift deletion must
 * move the rest up so that every remaining key stays reachable (a plain hole would cut the run). */
Test(kv_collision, eviction_keeps_probe_runs_intact) {
    enum { BS = 1, N = 16 };
    sl_kv_blocks *m = NULL;
    cr_assert_eq(sl_kv_blocks_create(N, BS, 1, &m), SL_OK);
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = i;
    /* register N one-token blocks with keys forced into the same home slot */
    for (int i = 0; i < N; i++) {
        int32_t id;
        sl_kv_table t = {.ids = &id};
        cr_assert(sl_kv_blocks_grow(m, &t, 1));
        uint64_t key = ((uint64_t)i << 40) | 3; /* same low bits: the same home slot */
        cr_assert(index_insert(m, id, key, KV_CHAIN_ROOT, 0, &tok[i]));
        sl_kv_blocks_release(m, &t); /* cached, evictable */
    }
    cr_assert_eq(sl_kv_blocks_n_cached(m), N);
    /* evict the least recently released half (the first registered) through the public path */
    int32_t held[N];
    sl_kv_table h = {.ids = held};
    cr_assert(sl_kv_blocks_grow(m, &h, N / 2));
    cr_assert_eq(sl_kv_blocks_n_cached(m), N / 2);
    int found = 0;
    for (int i = 0; i < N; i++) {
        uint64_t key = ((uint64_t)i << 40) | 3;
        int32_t b = index_find(m, key, KV_CHAIN_ROOT, 0, &tok[i]);
        if (b >= 0) {
            cr_assert_eq(m->key[b], key);
            found++;
        }
    }
    cr_assert_eq(found, N / 2, "a key left in the index became unreachable");
    sl_kv_blocks_release(m, &h);
    sl_kv_blocks_free(m);
}
