/*
 * kv_blocks.c — the KV block manager and prefix cache (see kv_blocks.h for the model).
 *
 * Every block is in exactly one of three places:
 *   - held: ref > 0, in one or more sequences' tables (cached or not);
 *   - free: ref == 0 and not cached, on a stack (handed out first: they cost nothing to reuse);
 *   - evictable: ref == 0 and cached, on an LRU list (least recently released at the head, evicted first).
 * The cache index is an open-addressing hash table of block ids keyed by chain key (linear probing with
 * backward-shift deletion, so no tombstones pile up however often blocks are evicted); at most one block per
 * key, which is why a second, identical block computed at the same time stays private.
 *
 * All of it is owned by the engine thread; nothing here locks.
 */
#include "kv_blocks.h"

#include <string.h>

#include "sl_util.h"

struct sl_kv_blocks {
    int n_blocks;
    int block_size;
    int caching;
    /* per block */
    int32_t *refs;        /* [n_blocks] references held by tables */
    uint8_t *cached;      /* [n_blocks] 1 while registered in the index */
    uint64_t *key;        /* [n_blocks] chain key, valid while cached */
    uint64_t *parent;     /* [n_blocks] parent's chain key (collision check), valid while cached */
    uint64_t *ns;         /* [n_blocks] namespace (collision check), valid while cached */
    int32_t *tokens;      /* [n_blocks][block_size] the block's tokens (collision check), valid while cached */
    int32_t *lru_prev;    /* [n_blocks] evictable list links, -1 at the ends */
    int32_t *lru_next;    /* [n_blocks] */
    int32_t lru_head, lru_tail;
    int n_lru;
    int32_t *free_stack;  /* [n_blocks] uncached free block ids */
    int n_free_stack;
    /* index */
    int32_t *slots;       /* [index_mask + 1] block id or -1; capacity a power of two >= 2 x n_blocks so the
                             load stays at most 1/2 and probe runs short */
    uint64_t index_mask;
    int n_cached;
};

/* A 64-bit mixer (the splitmix64 / murmur3 finalizer): every input bit reaches every output bit. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The root of every chain: an arbitrary odd constant, so an empty parent is not the key 0. */
#define KV_CHAIN_ROOT 0x9e3779b97f4a7c15ull

static uint64_t chain_key(uint64_t parent, uint64_t ns, const int32_t *tokens, int n) {
    uint64_t h = mix64(parent ^ mix64(ns + KV_CHAIN_ROOT));
    for (int i = 0; i < n; i++) h = mix64(h ^ (uint64_t)(uint32_t)tokens[i]);
    return h;
}

uint64_t sl_kv_namespace(const char *tenant) {
    if (!tenant || !*tenant) return 0;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis */
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return h | 1; /* never 0: that is the default tenant's */
}

sl_status sl_kv_blocks_create(int n_blocks, int block_size, int enable_caching, sl_kv_blocks **out) {
    *out = NULL;
    if (n_blocks < 1 || block_size < 1 || n_blocks > (1 << 30) || block_size > (1 << 20))
        return sl__errorf(SL_INVALID_ARGUMENT, "KV block manager: %d blocks of %d tokens", n_blocks, block_size);
    sl_kv_blocks *m = sl__calloc(1, sizeof *m);
    if (!m) return sl__errorf(SL_OUT_OF_MEMORY, "KV block manager");
    size_t nb = (size_t)n_blocks;
    m->n_blocks = n_blocks;
    m->block_size = block_size;
    m->caching = enable_caching != 0;
    uint64_t cap = 2;
    while (cap < 2 * (uint64_t)n_blocks) cap <<= 1;
    m->index_mask = cap - 1;
    m->refs = sl__calloc(nb, sizeof *m->refs);
    m->cached = sl__calloc(nb, 1);
    m->key = sl__calloc(nb, sizeof *m->key);
    m->parent = sl__calloc(nb, sizeof *m->parent);
    m->ns = sl__calloc(nb, sizeof *m->ns);
    m->lru_prev = sl__malloc(nb * sizeof(int32_t));
    m->lru_next = sl__malloc(nb * sizeof(int32_t));
    m->free_stack = sl__malloc(nb * sizeof(int32_t));
    size_t tok_bytes = 0;
    /* Token copies and the index exist only when caching is on; an element count that overflows is refused. */
    if (m->caching && sl__mul_size(nb * sizeof(int32_t), (size_t)block_size, &tok_bytes)) {
        m->tokens = sl__malloc(tok_bytes);
        m->slots = sl__malloc((size_t)cap * sizeof(int32_t));
    }
    if (!m->refs || !m->cached || !m->key || !m->parent || !m->ns || !m->lru_prev || !m->lru_next ||
        !m->free_stack || (m->caching && (!m->tokens || !m->slots))) {
        sl_kv_blocks_free(m);
        return sl__errorf(SL_OUT_OF_MEMORY, "KV block manager (%d blocks)", n_blocks);
    }
    if (m->slots) memset(m->slots, 0xff, (size_t)cap * sizeof(int32_t)); /* all -1 */
    /* Lowest ids on top of the stack: a short run touches the start of the lazily faulted pool only. */
    for (int i = 0; i < n_blocks; i++) m->free_stack[i] = n_blocks - 1 - i;
    m->n_free_stack = n_blocks;
    m->lru_head = m->lru_tail = -1;
    *out = m;
    return SL_OK;
}

void sl_kv_blocks_free(sl_kv_blocks *m) {
    if (!m) return;
    free(m->refs);
    free(m->cached);
    free(m->key);
    free(m->parent);
    free(m->ns);
    free(m->tokens);
    free(m->lru_prev);
    free(m->lru_next);
    free(m->free_stack);
    free(m->slots);
    free(m);
}

int sl_kv_blocks_n_total(const sl_kv_blocks *m) { return m->n_blocks; }
int sl_kv_blocks_n_free(const sl_kv_blocks *m) { return m->n_free_stack + m->n_lru; }
int sl_kv_blocks_n_cached(const sl_kv_blocks *m) { return m->n_cached; }
int sl_kv_blocks_refs(const sl_kv_blocks *m, int32_t id) {
    return id >= 0 && id < m->n_blocks ? m->refs[id] : -1;
}

/* ---- evictable list ----------------------------------------------------------------------------------------------- */
static void lru_unlink(sl_kv_blocks *m, int32_t b) {
    int32_t p = m->lru_prev[b], n = m->lru_next[b];
    if (p >= 0) m->lru_next[p] = n; else m->lru_head = n;
    if (n >= 0) m->lru_prev[n] = p; else m->lru_tail = p;
    m->n_lru--;
}

static void lru_append(sl_kv_blocks *m, int32_t b) {
    m->lru_prev[b] = m->lru_tail;
    m->lru_next[b] = -1;
    if (m->lru_tail >= 0) m->lru_next[m->lru_tail] = b; else m->lru_head = b;
    m->lru_tail = b;
    m->n_lru++;
}

/* ---- index --------------------------------------------------------------------------------------------------------- */
/* The cached block with this key whose parent, namespace and tokens match, or -1. */
static int32_t index_find(const sl_kv_blocks *m, uint64_t key, uint64_t parent, uint64_t ns, const int32_t *tokens) {
    for (uint64_t i = key & m->index_mask;; i = (i + 1) & m->index_mask) {
        int32_t b = m->slots[i];
        if (b < 0) return -1;
        if (m->key[b] != key) continue;
        /* one block per key: a mismatch here is a 64-bit collision, which must not reuse the block */
        if (m->parent[b] != parent || m->ns[b] != ns ||
            memcmp(m->tokens + (size_t)b * m->block_size, tokens, (size_t)m->block_size * sizeof(int32_t)) != 0)
            return -1;
        return b;
    }
}

/* Registers block b under key; 0 if the key is taken (b stays uncached). */
static int index_insert(sl_kv_blocks *m, int32_t b, uint64_t key, uint64_t parent, uint64_t ns, const int32_t *tokens) {
    uint64_t i = key & m->index_mask;
    for (; m->slots[i] >= 0; i = (i + 1) & m->index_mask)
        if (m->key[m->slots[i]] == key) return 0;
    m->slots[i] = b;
    m->key[b] = key;
    m->parent[b] = parent;
    m->ns[b] = ns;
    memcpy(m->tokens + (size_t)b * m->block_size, tokens, (size_t)m->block_size * sizeof(int32_t));
    m->cached[b] = 1;
    m->n_cached++;
    return 1;
}

/* Forgets cached block b (backward-shift deletion keeps every remaining key reachable from its home slot). */
static void index_remove(sl_kv_blocks *m, int32_t b) {
    uint64_t i = m->key[b] & m->index_mask;
    while (m->slots[i] != b) {
        SL_ASSERT(m->slots[i] >= 0);
        i = (i + 1) & m->index_mask;
    }
    for (uint64_t j = (i + 1) & m->index_mask; m->slots[j] >= 0; j = (j + 1) & m->index_mask) {
        uint64_t home = m->key[m->slots[j]] & m->index_mask;
        /* the entry at j may move to the hole at i unless its home lies cyclically in (i, j] */
        int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i] = -1;
    m->cached[b] = 0;
    m->n_cached--;
}

/* ---- sequences ------------------------------------------------------------------------------------------------------ */
int sl_kv_blocks_match(sl_kv_blocks *m, sl_kv_table *t, uint64_t ns, const int32_t *tokens, int n_tokens) {
    SL_ASSERT(t->n == 0);
    t->n_hashed = 0;
    t->tail_key = KV_CHAIN_ROOT;
    if (!m->caching || n_tokens < 1) return 0;
    /* Every full block may match, the last token's too: the engine recomputes that token for its logits and
     * sends its K/V (identical to what the block holds) to a sink slot instead of the shared block. */
    int max_blocks = n_tokens / m->block_size;
    for (int i = 0; i < max_blocks; i++) {
        const int32_t *bt = tokens + (size_t)i * m->block_size;
        uint64_t key = chain_key(t->tail_key, ns, bt, m->block_size);
        int32_t b = index_find(m, key, t->tail_key, ns, bt);
        if (b < 0) break;
        if (m->refs[b]++ == 0) lru_unlink(m, b);
        t->ids[t->n++] = b;
        t->n_hashed++;
        t->tail_key = key;
    }
    return t->n * m->block_size;
}

int sl_kv_blocks_grow(sl_kv_blocks *m, sl_kv_table *t, int n_tokens) {
    int need = (n_tokens + m->block_size - 1) / m->block_size - t->n;
    if (need <= 0) return 1;
    if (need > sl_kv_blocks_n_free(m)) return 0;
    if (t->n == 0) {
        t->n_hashed = 0;
        t->tail_key = KV_CHAIN_ROOT;
    }
    for (int i = 0; i < need; i++) {
        int32_t b;
        if (m->n_free_stack > 0) {
            b = m->free_stack[--m->n_free_stack];
        } else {
            b = m->lru_head; /* evict the least recently used cached block */
            lru_unlink(m, b);
            index_remove(m, b);
        }
        SL_ASSERT(m->refs[b] == 0 && !m->cached[b]);
        m->refs[b] = 1;
        t->ids[t->n++] = b;
    }
    return 1;
}

void sl_kv_blocks_commit(sl_kv_blocks *m, sl_kv_table *t, uint64_t ns, const int32_t *tokens, int n_computed) {
    if (!m->caching) return;
    int full = SL_MIN(n_computed / m->block_size, t->n);
    for (int i = t->n_hashed; i < full; i++) {
        const int32_t *bt = tokens + (size_t)i * m->block_size;
        uint64_t key = chain_key(t->tail_key, ns, bt, m->block_size);
        int32_t b = t->ids[i];
        /* Blocks past n_hashed were allocated for this table alone, so they are never cached yet. */
        SL_ASSERT(!m->cached[b]);
        index_insert(m, b, key, t->tail_key, ns, bt);
        t->tail_key = key; /* the chain goes on by content even when an identical block kept the key */
        t->n_hashed = i + 1;
    }
}

void sl_kv_blocks_release(sl_kv_blocks *m, sl_kv_table *t) {
    for (int i = t->n - 1; i >= 0; i--) {
        int32_t b = t->ids[i];
        SL_ASSERT(m->refs[b] > 0);
        if (--m->refs[b] > 0) continue;
        if (m->cached[b])
            lru_append(m, b);
        else
            m->free_stack[m->n_free_stack++] = b;
    }
    t->n = 0;
    t->n_hashed = 0;
    t->tail_key = KV_CHAIN_ROOT;
}
